// Client identity: addresses, networks, forwarding headers (doc/identity.md).
//
// Everything that reads request data is noexcept and bounds its work by the
// bytes it is given (DRF mode) or by IdentityOptions::max_header_bytes and
// max_hops (normalising modes): no recursion, no input-sized allocation
// other than the result key.
#include "shmlimit/identity.hpp"

#include <algorithm>
#include <cstring>
#include <string>

// xxHash (Debian libxxhash-dev) inlined into this file only: the hash of an
// over-long key must be the same in every process, build and machine, which
// XXH3's specification guarantees (std::hash does not).
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace shmlimit {
namespace {

// ---------------------------------------------------------------------------
// Character classes
// ---------------------------------------------------------------------------

/// Python's str.isspace() on a Latin-1 character: what DRF's split() and
/// strip() remove from a WSGI header (PEP 3333 decodes headers as Latin-1).
constexpr bool drf_space(unsigned char c) noexcept {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0;
}

/// HTTP optional white space (RFC 9110 OWS).
constexpr bool ows(char c) noexcept { return c == ' ' || c == '\t'; }

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// RFC 9110 tchar.
constexpr bool is_tchar(char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && ows(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view drf_strip(std::string_view s) noexcept {
  while (!s.empty() && drf_space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && drf_space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

/// Text for an error message: printable ASCII kept, other bytes as \xNN,
/// at most 80 bytes of input shown (config errors are one line).
std::string quote_for_message(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  const std::size_t shown = std::min<std::size_t>(text.size(), 80);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (shown < text.size()) out += "...";
  out += '"';
  return out;
}

// ---------------------------------------------------------------------------
// Address parsing
// ---------------------------------------------------------------------------

/// Why a text is not an address (for parse()'s message); nullptr = it is.
struct ParseResult {
  std::array<std::uint8_t, 16> bytes{};
  bool v4 = false;
  const char* error = nullptr;
};

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

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

std::size_t key_limit(std::size_t max_key_bytes) noexcept {
  return std::max(max_key_bytes, IdentityOptions::kMinKeyBytes);
}

/// Canonical text of the address masked to the family's prefix.
std::string masked_key(const IpAddress& address, const IdentityOptions& options) {
  const unsigned prefix = address.is_v4() ? options.ipv4_prefix : options.ipv6_prefix;
  return address.masked(prefix).to_string();
}

Identity from_address(const IpAddress& address, IdentitySource source,
                      const IdentityOptions& options) {
  Identity id;
  id.key = masked_key(address, options);
  id.address = address;
  id.source = source;
  return id;
}

Identity unknown_identity() {
  Identity id;
  id.key = std::string(kUnknownClientKey);
  id.source = IdentitySource::kFallback;
  return id;
}

/// The fallback of the normalising modes: the nearest address we believe
/// (REMOTE_ADDR, or the last trusted proxy reached), else kUnknownClientKey.
Identity fallback_identity(const std::optional<IpAddress>& believed,
                           const IdentityOptions& options) {
  if (!believed) return unknown_identity();
  return from_address(*believed, IdentitySource::kFallback, options);
}

// ---------------------------------------------------------------------------
// Forwarding headers, read from the right
// ---------------------------------------------------------------------------

/// One hop of a forwarding header.
struct Hop {
  enum Kind { kAddress, kUnknown, kInvalid } kind = kInvalid;
  IpAddress address;
};

/// Reads a forwarding header hop by hop from its right end, examining only
/// its last `max_bytes` bytes. A hop that starts before that window is
/// invalid (it was cut).
class HopReader {
 public:
  HopReader(std::string_view header, bool forwarded, std::size_t max_bytes) noexcept
      : forwarded_(forwarded) {
    truncated_ = header.size() > max_bytes;
    text_ = truncated_ ? header.substr(header.size() - max_bytes) : header;
    end_ = text_.size();
  }

  /// The next hop to the left; false when there is none.
  bool next(Hop& hop) noexcept {
    if (done_) return false;
    // Find the start of the element ending at end_: the previous ',' that is
    // outside a quoted string (RFC 7239 values may be quoted strings that
    // contain ','; X-Forwarded-For has no quoting).
    std::size_t i = end_;
    bool cut = false;
    while (i > 0) {
      const char c = text_[i - 1];
      if (c == ',') break;
      if (forwarded_ && c == '"') {
        // The closing quote of a quoted string: the opening one is the
        // nearest '"' to the left preceded by an even number of '\'.
        std::size_t j = i - 1;
        bool found = false;
        while (j > 0) {
          --j;
          if (text_[j] != '"') continue;
          std::size_t backslashes = 0;
          while (j >= backslashes + 1 && text_[j - backslashes - 1] == '\\') ++backslashes;
          if (backslashes % 2 == 0) {
            found = true;
            break;
          }
        }
        if (!found) {
          cut = true;
          i = 0;
          break;
        }
        i = j;
        continue;
      }
      --i;
    }
    const std::string_view element = text_.substr(i, end_ - i);
    if (i == 0) {
      done_ = true;
      if (truncated_) cut = true;
    } else {
      end_ = i - 1;
    }
    hop = cut ? Hop{} : (forwarded_ ? forwarded_hop(element) : xff_hop(element));
    return true;
  }

 private:
  static Hop xff_hop(std::string_view item) noexcept {
    Hop hop;
    item = trim_ows(item);
    if (iequals(item, "unknown")) {
      hop.kind = Hop::kUnknown;
    } else if (auto a = IpAddress::try_parse_host(item)) {
      hop.kind = Hop::kAddress;
      hop.address = *a;
    }
    return hop;
  }

  /// One forwarded-element: pairs separated by ';'; only for= is read.
  static Hop forwarded_hop(std::string_view element) noexcept {
    element = trim_ows(element);
    char for_buf[64];  // a node is short: a longer for= value is invalid
    std::size_t for_len = 0;
    bool have_for = false;
    bool for_too_long = false;
    std::size_t pos = 0;
    while (pos < element.size()) {
      // One pair: token "=" (token / quoted-string), then ';' or the end.
      while (pos < element.size() && ows(element[pos])) ++pos;
      if (pos < element.size() && element[pos] == ';') {  // an empty pair: allowed by the grammar
        ++pos;
        continue;
      }
      if (pos == element.size()) break;
      const std::size_t name_start = pos;
      while (pos < element.size() && is_tchar(element[pos])) ++pos;
      const std::string_view name = element.substr(name_start, pos - name_start);
      if (name.empty() || pos >= element.size() || element[pos] != '=') return {};
      ++pos;
      const bool is_for = iequals(name, "for");
      if (is_for) {
        if (have_for) return {};  // RFC 7239 section 4: at most once per element
        have_for = true;
      }
      std::size_t len = 0;
      auto keep = [&](char c) {
        if (!is_for) return;
        if (len < sizeof for_buf)
          for_buf[len] = c;
        else
          for_too_long = true;
        ++len;
      };
      if (pos < element.size() && element[pos] == '"') {
        ++pos;
        bool closed = false;
        while (pos < element.size()) {
          char c = element[pos++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (pos >= element.size()) return {};
            c = element[pos++];
          }
          keep(c);
        }
        if (!closed) return {};
      } else {
        const std::size_t value_start = pos;
        while (pos < element.size() && is_tchar(element[pos])) keep(element[pos++]);
        if (pos == value_start) return {};
      }
      if (is_for) for_len = len;
      while (pos < element.size() && ows(element[pos])) ++pos;
      if (pos < element.size()) {
        if (element[pos] != ';') return {};
        ++pos;
      }
    }
    Hop hop;
    if (!have_for) {
      hop.kind = Hop::kUnknown;  // no for=: the element names no client
      return hop;
    }
    if (for_too_long) return hop;
    return node_hop(std::string_view(for_buf, for_len));
  }

  /// RFC 7239 section 6: node = nodename [ ":" node-port ]; a nodename of
  /// "unknown" or an obfuscated identifier ("_...") names no address.
  static Hop node_hop(std::string_view node) noexcept {
    Hop hop;
    if (node.empty()) return hop;
    if (iequals(node, "unknown") || node.front() == '_') {
      hop.kind = Hop::kUnknown;
      return hop;
    }
    // Drop an obfuscated port (":_abc") before the address parser sees it.
    std::string_view address = node;
    const std::size_t colon = address.rfind(':');
    if (colon != std::string_view::npos && colon + 1 < address.size() &&
        address[colon + 1] == '_' &&
        (address.front() != '[' || (colon > 0 && address[colon - 1] == ']'))) {
      for (char c : address.substr(colon + 2)) {
        const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                        (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-';
        if (!ok) return hop;
      }
      address = address.substr(0, colon);
    }
    if (address.empty()) return hop;
    // RFC 7239 section 6: an IPv6 address is always bracketed.
    if (address.front() != '[' && address.find(':') != address.rfind(':')) return hop;
    if (auto a = IpAddress::try_parse_host(address)) {
      hop.kind = Hop::kAddress;
      hop.address = *a;
    }
    return hop;
  }

  std::string_view text_;
  std::size_t end_ = 0;
  bool forwarded_ = false;
  bool truncated_ = false;
  bool done_ = false;
};

/// The header a normalising mode reads, and whether it is Forwarded.
struct HeaderChoice {
  std::optional<std::string_view> text;
  bool forwarded = false;
};

HeaderChoice choose_header(const RequestInfo& request, const IdentityOptions& options) noexcept {
  if (options.use_forwarded && request.forwarded) return {request.forwarded, true};
  return {request.x_forwarded_for, false};
}

IdentitySource header_source(bool forwarded) noexcept {
  return forwarded ? IdentitySource::kForwarded : IdentitySource::kXForwardedFor;
}

bool blank(std::string_view s) noexcept {
  return std::all_of(s.begin(), s.end(), [](char c) { return ows(c); });
}

bool trusted(const IpAddress& address, const IdentityOptions& options) noexcept {
  return std::any_of(options.trusted_proxies.begin(), options.trusted_proxies.end(),
                     [&](const Cidr& c) { return c.contains(address); });
}

// ---------------------------------------------------------------------------
// The three modes
// ---------------------------------------------------------------------------

Identity drf_identity(const RequestInfo& request, const IdentityOptions& options) {
  Identity id;
  const auto& xff = request.x_forwarded_for;
  if (options.num_proxies) {
    if (*options.num_proxies == 0 || !xff) {
      id.key = std::string(request.remote_addr);
      id.source = IdentitySource::kRemoteAddr;
    } else {
      // addrs = xff.split(','); addrs[-min(n, len(addrs))].strip()
      const std::size_t n = *options.num_proxies;
      std::size_t end = xff->size();
      std::size_t begin = 0;
      for (std::size_t k = 1;; ++k) {
        const std::size_t comma = end == 0 ? std::string_view::npos : xff->rfind(',', end - 1);
        begin = comma == std::string_view::npos ? 0 : comma + 1;
        if (k == n || comma == std::string_view::npos) break;
        end = comma;
      }
      id.key = std::string(drf_strip(xff->substr(begin, end - begin)));
      id.source = IdentitySource::kXForwardedFor;
    }
  } else if (xff && !xff->empty()) {
    // ''.join(xff.split())
    for (char c : *xff)
      if (!drf_space(static_cast<unsigned char>(c))) id.key += c;
    id.source = IdentitySource::kXForwardedFor;
  } else {
    id.key = std::string(request.remote_addr);
    id.source = IdentitySource::kRemoteAddr;
  }
  id.address = IpAddress::try_parse_host(id.key);
  return id;
}

Identity normalised_num_proxies_identity(const RequestInfo& request,
                                         const IdentityOptions& options) {
  const std::optional<IpAddress> remote = IpAddress::try_parse_host(request.remote_addr);
  const HeaderChoice header = choose_header(request, options);
  auto from_remote = [&]() {
    return remote ? from_address(*remote, IdentitySource::kRemoteAddr, options)
                  : unknown_identity();
  };
  if ((options.num_proxies && *options.num_proxies == 0) || !header.text) return from_remote();
  if (!options.num_proxies) {
    // DRF reads the whole header as the client when NUM_PROXIES is unset:
    // usable here only when it names exactly one hop.
    if (header.text->empty()) return from_remote();
    if (header.text->size() > options.max_header_bytes) return fallback_identity(remote, options);
    HopReader reader(*header.text, header.forwarded, options.max_header_bytes);
    Hop hop, extra;
    if (!reader.next(hop) || reader.next(extra) || hop.kind != Hop::kAddress)
      return fallback_identity(remote, options);
    return from_address(hop.address, header_source(header.forwarded), options);
  }
  // The hop [-min(n, count)], examining at most max_hops hops.
  HopReader reader(*header.text, header.forwarded, options.max_header_bytes);
  Hop hop;
  bool have = false;
  for (unsigned k = 0; k < *options.num_proxies; ++k) {
    if (k >= options.max_hops) return fallback_identity(remote, options);
    Hop next;
    if (!reader.next(next)) break;
    hop = next;
    have = true;
  }
  if (!have || hop.kind != Hop::kAddress) return fallback_identity(remote, options);
  return from_address(hop.address, header_source(header.forwarded), options);
}

Identity trusted_identity(const RequestInfo& request, const IdentityOptions& options) {
  const std::optional<IpAddress> remote = IpAddress::try_parse_host(request.remote_addr);
  const bool remote_trusted = remote ? trusted(*remote, options) : options.trust_unix_peer;
  if (!remote_trusted) {
    if (!remote) return unknown_identity();
    return from_address(*remote, IdentitySource::kRemoteAddr, options);
  }
  const HeaderChoice header = choose_header(request, options);
  if (!header.text || blank(*header.text)) {
    // A trusted proxy that forwards nothing is itself the client.
    if (!remote) return unknown_identity();
    return from_address(*remote, IdentitySource::kRemoteAddr, options);
  }
  std::optional<IpAddress> believed = remote;  // the nearest hop we trust
  HopReader reader(*header.text, header.forwarded, options.max_header_bytes);
  Hop hop;
  unsigned examined = 0;
  while (reader.next(hop)) {
    if (examined++ >= options.max_hops) return fallback_identity(believed, options);
    if (hop.kind != Hop::kAddress) return fallback_identity(believed, options);
    if (!trusted(hop.address, options))
      return from_address(hop.address, header_source(header.forwarded), options);
    believed = hop.address;
  }
  // Every hop is a trusted proxy: the leftmost one is the client (nginx's
  // real_ip_recursive does the same).
  return from_address(*believed, header_source(header.forwarded), options);
}

char hex_digit(unsigned v) noexcept { return "0123456789abcdef"[v & 15]; }

}  // namespace

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
// Identity
// ---------------------------------------------------------------------------

std::string_view to_string(IdentitySource source) noexcept {
  switch (source) {
    case IdentitySource::kRemoteAddr:
      return "remote_addr";
    case IdentitySource::kXForwardedFor:
      return "x_forwarded_for";
    case IdentitySource::kForwarded:
      return "forwarded";
    case IdentitySource::kFallback:
      return "fallback";
  }
  return "invalid";
}

Identity client_identity(const RequestInfo& request, const IdentityOptions& options) noexcept {
  Identity id;
  if (!options.trusted_proxies.empty()) {
    id = trusted_identity(request, options);
  } else if (options.normalize) {
    id = normalised_num_proxies_identity(request, options);
  } else {
    id = drf_identity(request, options);
  }
  const std::size_t limit = key_limit(options.max_key_bytes);
  if (id.key.size() > limit) {
    id.key = hashed_key(id.key, limit);
    id.hashed = true;
  }
  return id;
}

std::string hashed_key(std::string_view key, std::size_t max_key_bytes) {
  const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
  const std::size_t digits = std::min<std::size_t>(32, key_limit(max_key_bytes) - 1);
  std::string out;
  out.reserve(1 + digits);
  out += '~';
  for (std::size_t i = 0; i < digits; ++i) {
    const std::uint64_t word = i < 16 ? h.high64 : h.low64;
    const unsigned shift = static_cast<unsigned>(60 - 4 * (i % 16));
    out += hex_digit(static_cast<unsigned>(word >> shift));
  }
  return out;
}

std::string fit_key(std::string_view key, std::size_t max_key_bytes) {
  if (key.size() <= key_limit(max_key_bytes)) return std::string(key);
  return hashed_key(key, max_key_bytes);
}

std::string throttle_key(std::string_view scope, std::string_view ident,
                         std::size_t max_key_bytes) {
  std::string key;
  key.reserve(10 + scope.size() + ident.size());
  key += "throttle_";
  key += scope;
  key += '_';
  key += ident;
  return fit_key(key, max_key_bytes);
}

std::string user_or_ident_key(std::string_view scope, std::optional<std::string_view> user_id,
                              const Identity& identity, std::size_t max_key_bytes) {
  return throttle_key(scope, user_id ? *user_id : std::string_view(identity.key), max_key_bytes);
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
