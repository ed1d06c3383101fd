// Fuzz target: client identity. Arbitrary REMOTE_ADDR, X-Forwarded-For,
// Forwarded and trusted-proxy bytes, under fuzzed IdentityOptions, through
// client_identity(); plus the address and CIDR parsers on the same bytes.
//
// Input layout (shorter inputs are zero-padded):
//   byte 0      flags: bits 0-1 mode (0 DRF, 1 normalising, 2-3 trusted
//               proxies), 2 use_forwarded, 3 trust_unix_peer,
//               4 X-Forwarded-For present, 5 Forwarded present
//   byte 1      num_proxies (255 = unset)
//   byte 2, 3   ipv4_prefix, ipv6_prefix (values above 32 / 128 allowed)
//   byte 4      max_hops
//   byte 5, 6   max_header_bytes (little-endian)
//   byte 7      max_key_bytes (below the minimum allowed)
//   then        REMOTE_ADDR 0xff X-Forwarded-For 0xff Forwarded 0xff
//               trusted proxies (CIDRs separated by ','; invalid ones skipped)
//
// Checked on every input (doc/identity.md states each rule):
//   * never a crash; the key is at most max(max_key_bytes, 17) bytes;
//   * DRF mode: the key equals a straightforward re-implementation of DRF's
//     get_ident() (Python split/strip on Latin-1), or its hashed_key();
//   * normalising modes: the key is never empty; it is "unknown" exactly
//     when no address is known, else the canonical text of the address
//     masked to the option's prefix (hashed when longer than the key
//     limit); a trusted-proxy key named by a header
//     hop is not itself a trusted proxy unless every hop was;
//   * IpAddress: try_parse and parse agree; canonical text round-trips;
//     Cidr: try_parse and parse agree; to_string round-trips.
//
//   fuzz/corpus/identity/        seed corpus
//   fuzz/regressions/identity/   inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh identity 60   (doc/fuzzing.md)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/identity.hpp"

namespace {

using shmlimit::Cidr;
using shmlimit::Identity;
using shmlimit::IdentityOptions;
using shmlimit::IdentitySource;
using shmlimit::IpAddress;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "identity_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

bool py_space(unsigned char c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0;
}

std::string py_strip(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && py_space(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && py_space(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

/// rest_framework.throttling.BaseThrottle.get_ident, written as DRF writes it.
std::string drf_reference(std::string_view remote, const std::optional<std::string_view>& xff,
                          std::optional<unsigned> num_proxies) {
  if (num_proxies) {
    if (*num_proxies == 0 || !xff) return std::string(remote);
    std::vector<std::string_view> addrs;  // xff.split(',')
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = xff->find(',', start);
      addrs.push_back(xff->substr(
          start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    const std::size_t k = std::min<std::size_t>(*num_proxies, addrs.size());
    return py_strip(addrs[addrs.size() - k]);
  }
  if (xff && !xff->empty()) {
    std::string joined;  // ''.join(xff.split())
    for (char c : *xff)
      if (!py_space(static_cast<unsigned char>(c))) joined += c;
    return joined;
  }
  return std::string(remote);
}

void check_address_text(std::string_view text) {
  const std::optional<IpAddress> a = IpAddress::try_parse(text);
  bool threw = false;
  try {
    const IpAddress b = IpAddress::parse(text);
    if (!a || !(b == *a)) fail("parse accepted what try_parse refused", std::string(text));
  } catch (const shmlimit::Error& e) {
    threw = true;
    if (e.code() != shmlimit::ErrorCode::kInvalidArgument) fail("wrong error code", e.what());
  }
  if (threw && a) fail("parse refused what try_parse accepted", std::string(text));
  const std::optional<IpAddress> host = IpAddress::try_parse_host(text);
  for (const auto& addr : {a, host}) {
    if (!addr) continue;
    const std::string canonical = addr->to_string();
    if (canonical.size() > IpAddress::kMaxTextBytes) fail("canonical text too long", canonical);
    const auto again = IpAddress::try_parse(canonical);
    if (!again || !(*again == *addr)) fail("canonical text does not round-trip", canonical);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::uint8_t head[8] = {};
  std::copy_n(data, std::min<std::size_t>(size, 8), head);
  const std::string_view rest =
      size > 8 ? std::string_view(reinterpret_cast<const char*>(data) + 8, size - 8)
               : std::string_view();
  std::string_view fields[4];
  {
    std::size_t start = 0;
    for (int i = 0; i < 4; ++i) {
      const std::size_t sep = i < 3 ? rest.find('\xff', start) : std::string_view::npos;
      if (start > rest.size()) break;
      fields[i] =
          rest.substr(start, sep == std::string_view::npos ? std::string_view::npos : sep - start);
      if (sep == std::string_view::npos) break;
      start = sep + 1;
    }
  }

  IdentityOptions options;
  const unsigned mode = head[0] & 3U;
  options.use_forwarded = (head[0] & 4U) != 0;
  options.trust_unix_peer = (head[0] & 8U) != 0;
  if (head[1] != 255) options.num_proxies = head[1];
  options.ipv4_prefix = head[2];
  options.ipv6_prefix = head[3];
  options.max_hops = head[4];
  options.max_header_bytes = static_cast<std::size_t>(head[5] | head[6] << 8);
  options.max_key_bytes = head[7];
  options.normalize = mode == 1;
  if (mode >= 2) {
    std::string_view list = fields[3];
    std::size_t start = 0;
    while (start <= list.size()) {
      const std::size_t comma = list.find(',', start);
      const std::string_view item =
          list.substr(start, comma == std::string_view::npos ? list.npos : comma - start);
      const std::optional<Cidr> c = Cidr::try_parse(item);
      bool threw = false;
      try {
        const Cidr d = Cidr::parse(item);
        if (!c || !(d == *c))
          fail("Cidr::parse accepted what try_parse refused", std::string(item));
      } catch (const shmlimit::Error&) {
        threw = true;
      }
      if (threw == c.has_value()) fail("Cidr::parse and try_parse disagree", std::string(item));
      if (c) {
        if (!(Cidr::parse(c->to_string()) == *c))
          fail("Cidr text does not round-trip", c->to_string());
        if (!c->contains(c->network())) fail("a network does not contain itself", c->to_string());
        options.trusted_proxies.push_back(*c);
      }
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    // Mode 2 or 3 with no valid CIDR is DRF mode: make sure trusted mode runs.
    if (options.trusted_proxies.empty())
      options.trusted_proxies.push_back(Cidr::parse("10.0.0.0/8"));
  }

  shmlimit::RequestInfo request;
  request.remote_addr = fields[0];
  if (head[0] & 16U) request.x_forwarded_for = fields[1];
  if (head[0] & 32U) request.forwarded = fields[2];

  check_address_text(fields[0]);
  check_address_text(fields[1]);

  const Identity id = shmlimit::client_identity(request, options);
  const std::size_t limit = std::max(options.max_key_bytes, IdentityOptions::kMinKeyBytes);
  if (id.key.size() > limit) fail("key longer than max_key_bytes", std::to_string(id.key.size()));
  if (id.hashed &&
      (id.key.empty() || id.key[0] != '~' || id.key.size() != std::min<std::size_t>(33, limit)))
    fail("malformed hashed key", id.key);

  if (mode == 0) {
    const std::string want =
        drf_reference(request.remote_addr, request.x_forwarded_for, options.num_proxies);
    const std::string want_key = shmlimit::fit_key(want, limit);
    if (id.key != want_key) fail("DRF mode differs from get_ident()", want + " vs " + id.key);
    if (id.hashed != (want.size() > limit)) fail("hashed flag wrong", id.key);
    if (id.address != IpAddress::try_parse_host(want))
      fail("DRF address is not the parsed key", want);
    return 0;
  }

  // Normalising modes.
  if (id.key.empty()) fail("empty key in a normalising mode", "");
  if (!id.address) {
    if (id.key != shmlimit::kUnknownClientKey) fail("no address but key is not 'unknown'", id.key);
    if (id.source != IdentitySource::kFallback) fail("'unknown' key not from the fallback", id.key);
    return 0;
  }
  const unsigned prefix = id.address->is_v4() ? options.ipv4_prefix : options.ipv6_prefix;
  // The canonical text, or its hashed_key() when max_key_bytes is below it
  // (a 64-byte slot keeps 24-byte keys; IPv6 text takes up to 39).
  const std::string canonical = id.address->masked(prefix).to_string();
  if (id.key != shmlimit::fit_key(canonical, limit)) fail("key is not the masked address", id.key);
  if (id.hashed != (canonical.size() > limit)) fail("hashed flag wrong", id.key);
  if (mode >= 2 &&
      (id.source == IdentitySource::kXForwardedFor || id.source == IdentitySource::kForwarded)) {
    const auto trusted = [&](const IpAddress& a) {
      return std::any_of(options.trusted_proxies.begin(), options.trusted_proxies.end(),
                         [&](const Cidr& c) { return c.contains(a); });
    };
    // A trusted client hop is only possible when every hop was trusted,
    // and then REMOTE_ADDR was trusted too (or a trusted Unix peer).
    if (trusted(*id.address)) {
      const auto remote = IpAddress::try_parse_host(request.remote_addr);
      if (remote ? !trusted(*remote) : !options.trust_unix_peer)
        fail("header believed from an untrusted peer", id.key);
    }
  }
  if (mode >= 2 && id.source == IdentitySource::kRemoteAddr) {
    const auto remote = IpAddress::try_parse_host(request.remote_addr);
    if (!remote || !(*remote == *id.address))
      fail("remote_addr source but not REMOTE_ADDR", id.key);
  }
  return 0;
}
