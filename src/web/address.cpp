// IpAddress: parsing (dotted quad, RFC 4291 text, host[:port]), masking
// and canonical text (doc/identity.md).
#include <algorithm>
#include <cstring>
#include <string>

#include "identity_impl.hpp"
#include "shmlimit/identity.hpp"

namespace shmlimit {
namespace {

using namespace identity_detail;

/// Dotted quad: exactly four decimal octets, no leading zeros, <= 255.
const char* parse_v4(std::string_view s, std::uint8_t* out) noexcept {
  int part = 0;
  std::size_t i = 0;
  while (true) {
    if (i >= s.size() || !is_digit(s[i])) return "expected a decimal octet";
    const std::size_t start = i;
    unsigned value = 0;
    while (i < s.size() && is_digit(s[i])) {
      if (i - start >= 3) return "octet out of range";
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      ++i;
    }
    if (i - start > 1 && s[start] == '0') return "octet with a leading zero";
    if (value > 255) return "octet out of range";
    out[part++] = static_cast<std::uint8_t>(value);
    if (part == 4) return i == s.size() ? nullptr : "unexpected text after the fourth octet";
    if (i >= s.size() || s[i] != '.') return "expected four octets separated by '.'";
    ++i;
  }
}

/// RFC 4291 section 2.2 text: hex groups, at most one "::", an optional
/// trailing dotted quad.
const char* parse_v6(std::string_view s, std::uint8_t* out) noexcept {
  if (s.find('%') != std::string_view::npos) return "zone identifiers are not supported";
  std::uint16_t groups[8] = {};
  int count = 0;
  int gap = -1;  // index in groups where "::" stands
  std::size_t i = 0;
  if (s.size() >= 2 && s[0] == ':' && s[1] == ':') {
    gap = 0;
    i = 2;
    if (i == s.size()) {
      std::memset(out, 0, 16);
      return nullptr;
    }
  } else if (!s.empty() && s[0] == ':') {
    return "a single leading ':'";
  }
  while (i < s.size()) {
    if (count == 8) return "more than 8 groups";
    // A dotted quad may end the address, in place of the last two groups.
    const std::size_t next_colon = s.find(':', i);
    const std::string_view piece =
        s.substr(i, next_colon == std::string_view::npos ? s.npos : next_colon - i);
    if (next_colon == std::string_view::npos && piece.find('.') != std::string_view::npos) {
      if (count > 6) return "too many groups before the embedded IPv4 address";
      std::uint8_t quad[4];
      if (const char* e = parse_v4(piece, quad)) return e;
      groups[count++] = static_cast<std::uint16_t>(quad[0] << 8 | quad[1]);
      groups[count++] = static_cast<std::uint16_t>(quad[2] << 8 | quad[3]);
      i = s.size();
      break;
    }
    if (piece.empty()) return "empty group";
    if (piece.size() > 4) return "a group of more than 4 hex digits";
    unsigned value = 0;
    for (char c : piece) {
      const int h = hex_value(c);
      if (h < 0) return "invalid character";
      value = value << 4 | static_cast<unsigned>(h);
    }
    groups[count++] = static_cast<std::uint16_t>(value);
    i += piece.size();
    if (i == s.size()) break;
    // s[i] == ':'
    if (i + 1 < s.size() && s[i + 1] == ':') {
      if (gap >= 0) return "more than one \"::\"";
      gap = count;
      i += 2;
      if (i == s.size()) break;
    } else {
      ++i;
      if (i == s.size()) return "a trailing single ':'";
    }
  }
  if (gap >= 0) {
    if (count == 8) return "\"::\" stands for no group";
    const int missing = 8 - count;
    for (int k = count - 1; k >= gap; --k) groups[k + missing] = groups[k];
    for (int k = gap; k < gap + missing; ++k) groups[k] = 0;
  } else if (count != 8) {
    return "fewer than 8 groups and no \"::\"";
  }
  for (int k = 0; k < 8; ++k) {
    out[2 * k] = static_cast<std::uint8_t>(groups[k] >> 8);
    out[2 * k + 1] = static_cast<std::uint8_t>(groups[k] & 0xff);
  }
  return nullptr;
}

/// A decimal port 0..65535 (1..5 digits).
bool valid_port(std::string_view s) noexcept {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v <= 65535;
}

}  // namespace

namespace identity_detail {

ParseResult parse_address(std::string_view s) noexcept {
  ParseResult r;
  if (s.empty()) {
    r.error = "empty";
    return r;
  }
  if (s.find(':') == std::string_view::npos) {
    r.v4 = true;
    r.error = parse_v4(s, r.bytes.data());
  } else {
    r.error = parse_v6(s, r.bytes.data());
  }
  return r;
}

IpAddress from_result(const ParseResult& r) noexcept {
  if (r.v4) return IpAddress::v4({r.bytes[0], r.bytes[1], r.bytes[2], r.bytes[3]});
  return IpAddress::v6(r.bytes);
}
}  // namespace identity_detail

using namespace identity_detail;

// ---------------------------------------------------------------------------
// IpAddress
// ---------------------------------------------------------------------------

IpAddress IpAddress::v4(std::array<std::uint8_t, 4> octets) noexcept {
  IpAddress a;
  a.family_ = Family::kV4;
  std::copy(octets.begin(), octets.end(), a.bytes_.begin());
  return a;
}

IpAddress IpAddress::v6(std::array<std::uint8_t, 16> octets) noexcept {
  static constexpr std::uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(std::begin(kMappedPrefix), std::end(kMappedPrefix), octets.begin()))
    return v4({octets[12], octets[13], octets[14], octets[15]});
  IpAddress a;
  a.family_ = Family::kV6;
  a.bytes_ = octets;
  return a;
}

IpAddress IpAddress::parse(std::string_view text) {
  const ParseResult r = parse_address(text);
  if (r.error)
    throw Error(ErrorCode::kInvalidArgument,
                "invalid IP address " + quote_for_message(text) + ": " + r.error);
  return from_result(r);
}

std::optional<IpAddress> IpAddress::try_parse(std::string_view text) noexcept {
  const ParseResult r = parse_address(text);
  if (r.error) return std::nullopt;
  return from_result(r);
}

std::optional<IpAddress> IpAddress::try_parse_host(std::string_view text) noexcept {
  text = trim_ows(text);
  if (text.empty()) return std::nullopt;
  if (text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view inner = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !valid_port(rest.substr(1)))) return std::nullopt;
    if (inner.find(':') == std::string_view::npos) return std::nullopt;  // brackets hold IPv6 only
    return try_parse(inner);
  }
  const std::size_t colon = text.find(':');
  if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
    // "a.b.c.d:port" (one colon: an IPv6 address has at least two).
    if (!valid_port(text.substr(colon + 1))) return std::nullopt;
    const std::string_view host = text.substr(0, colon);
    if (host.find('.') == std::string_view::npos) return std::nullopt;
    return try_parse(host);
  }
  return try_parse(text);
}

std::span<const std::uint8_t> IpAddress::octets() const noexcept {
  return {bytes_.data(), is_v4() ? std::size_t{4} : std::size_t{16}};
}

IpAddress IpAddress::masked(unsigned prefix) const noexcept {
  IpAddress a = *this;
  const unsigned bits = std::min(prefix, max_prefix());
  const unsigned bytes = max_prefix() / 8;
  for (unsigned i = 0; i < bytes; ++i) {
    const unsigned first_bit = i * 8;
    if (first_bit >= bits) {
      a.bytes_[i] = 0;
    } else if (bits - first_bit < 8) {
      a.bytes_[i] = static_cast<std::uint8_t>(a.bytes_[i] & (0xff00U >> (bits - first_bit)));
    }
  }
  return a;
}

std::size_t IpAddress::to_chars(std::span<char, kMaxTextBytes> out) const noexcept {
  std::size_t n = 0;
  if (is_v4()) {
    for (int i = 0; i < 4; ++i) {
      if (i) out[n++] = '.';
      const unsigned v = bytes_[static_cast<std::size_t>(i)];
      if (v >= 100) out[n++] = static_cast<char>('0' + v / 100);
      if (v >= 10) out[n++] = static_cast<char>('0' + v / 10 % 10);
      out[n++] = static_cast<char>('0' + v % 10);
    }
    return n;
  }
  unsigned groups[8];
  for (int k = 0; k < 8; ++k)
    groups[k] = static_cast<unsigned>(bytes_[static_cast<std::size_t>(2 * k)]) << 8 |
                bytes_[static_cast<std::size_t>(2 * k + 1)];
  // RFC 5952 section 4.2: compress the longest run of >= 2 zero groups,
  // the first one if several are equally long.
  int best_start = -1, best_len = 0;
  for (int k = 0; k < 8;) {
    if (groups[k] != 0) {
      ++k;
      continue;
    }
    int len = 0;
    while (k + len < 8 && groups[k + len] == 0) ++len;
    if (len >= 2 && len > best_len) {
      best_start = k;
      best_len = len;
    }
    k += len;
  }
  for (int k = 0; k < 8; ++k) {
    if (k == best_start) {
      out[n++] = ':';
      out[n++] = ':';
      k += best_len - 1;
      continue;
    }
    if (k > 0 && k != best_start + best_len) out[n++] = ':';
    const unsigned g = groups[k];
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned digit = (g >> shift) & 15;
      if (digit == 0 && !started && shift > 0) continue;
      started = true;
      out[n++] = hex_digit(digit);
    }
  }
  return n;
}

std::string IpAddress::to_string() const {
  char buf[kMaxTextBytes];
  const std::size_t n = to_chars(std::span<char, kMaxTextBytes>(buf, kMaxTextBytes));
  return std::string(buf, n);
}

}  // namespace shmlimit
