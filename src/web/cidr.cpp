// Networks: Cidr, CIDR lists and the allow/deny AccessList (doc/identity.md).
#include <algorithm>
#include <string>

#include "identity_impl.hpp"
#include "shmlimit/identity.hpp"

namespace shmlimit {

using namespace identity_detail;

// ---------------------------------------------------------------------------
// Cidr
// ---------------------------------------------------------------------------

Cidr::Cidr(const IpAddress& network, unsigned prefix) : network_(network), prefix_(prefix) {
  if (prefix > network.max_prefix())
    throw Error(ErrorCode::kInvalidArgument,
                "invalid CIDR \"" + network.to_string() + "/" + std::to_string(prefix) +
                    "\": prefix longer than /" + std::to_string(network.max_prefix()));
  if (network.masked(prefix) != network)
    throw Error(ErrorCode::kInvalidArgument,
                "invalid CIDR \"" + network.to_string() + "/" + std::to_string(prefix) +
                    "\": host bits set beyond /" + std::to_string(prefix) + " (did you mean " +
                    network.masked(prefix).to_string() + "/" + std::to_string(prefix) + "?)");
}

namespace {

/// Parses a CIDR; on failure returns the reason in `error` (a static
/// string) or, for host bits, sets `suggest`.
std::optional<Cidr> parse_cidr(std::string_view text, std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<Cidr> {
    if (error) *error = why;
    return std::nullopt;
  };
  const std::size_t slash = text.find('/');
  const std::string_view address_text = text.substr(0, slash);
  const ParseResult r = parse_address(address_text);
  if (r.error) return fail(std::string("bad address: ") + r.error);
  // Parsed without folding, so that "::ffff:10.0.0.0/104" keeps its
  // 128-bit prefix until folded below.
  const bool mapped = !r.v4 && IpAddress::v6(r.bytes).is_v4();
  const unsigned text_max = r.v4 ? 32U : 128U;
  unsigned prefix = text_max;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), is_digit) ||
        (p.size() > 1 && p[0] == '0'))
      return fail("prefix length is not a decimal number without leading zeros");
    prefix = 0;
    for (char c : p) prefix = prefix * 10 + static_cast<unsigned>(c - '0');
    if (prefix > text_max) return fail("prefix longer than /" + std::to_string(text_max));
  }
  IpAddress network = from_result(r);
  if (mapped) {
    if (prefix < 96) return fail("an IPv4-mapped network needs a prefix of at least /96");
    prefix -= 96;
  }
  if (network.masked(prefix) != network)
    return fail("host bits set beyond /" + std::to_string(prefix) + " (did you mean " +
                network.masked(prefix).to_string() + "/" + std::to_string(prefix) + "?)");
  return Cidr(network, prefix);
}

}  // namespace

Cidr Cidr::parse(std::string_view text) {
  std::string error;
  if (auto c = parse_cidr(text, &error)) return *c;
  throw Error(ErrorCode::kInvalidArgument,
              "invalid CIDR " + quote_for_message(text) + ": " + error);
}

std::optional<Cidr> Cidr::try_parse(std::string_view text) noexcept {
  try {
    return parse_cidr(text, nullptr);
  } catch (...) {  // std::bad_alloc from a message string: not an expected path
    return std::nullopt;
  }
}

bool Cidr::contains(const IpAddress& address) const noexcept {
  return address.family() == network_.family() && address.masked(prefix_) == network_;
}

std::string Cidr::to_string() const { return network_.to_string() + "/" + std::to_string(prefix_); }

std::vector<Cidr> parse_cidrs(std::string_view text) {
  std::vector<Cidr> out;
  std::size_t pos = 0;
  std::size_t index = 0;
  auto separator = [](char c) {
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
  };
  while (pos < text.size()) {
    while (pos < text.size() && separator(text[pos])) ++pos;
    if (pos == text.size()) break;
    std::size_t end = pos;
    while (end < text.size() && !separator(text[end])) ++end;
    ++index;
    const std::string_view item = text.substr(pos, end - pos);
    std::string error;
    auto c = parse_cidr(item, &error);
    if (!c)
      throw Error(ErrorCode::kInvalidArgument, "invalid CIDR list " + quote_for_message(text) +
                                                   ": item " + std::to_string(index) + " " +
                                                   quote_for_message(item) + ": " + error);
    out.push_back(*c);
    pos = end;
  }
  return out;
}

// ---------------------------------------------------------------------------
// AccessList
// ---------------------------------------------------------------------------

std::string_view to_string(Access access) noexcept {
  switch (access) {
    case Access::kLimit:
      return "limit";
    case Access::kAllow:
      return "allow";
    case Access::kDeny:
      return "deny";
  }
  return "invalid";
}

Access AccessList::classify(const IpAddress& address) const noexcept {
  auto in = [&](const std::vector<Cidr>& list) {
    return std::any_of(list.begin(), list.end(),
                       [&](const Cidr& c) { return c.contains(address); });
  };
  if (in(deny_)) return Access::kDeny;
  if (in(allow_)) return Access::kAllow;
  return Access::kLimit;
}

Access AccessList::classify(const std::optional<IpAddress>& address) const noexcept {
  return address ? classify(*address) : Access::kLimit;
}

}  // namespace shmlimit
