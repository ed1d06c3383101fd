// Client identity behind proxies: X-Forwarded-For and Forwarded read hop by
// hop from the right, and the three modes (DRF, normalised num_proxies,
// trusted proxies) that turn a request into an Identity (doc/identity.md).
//
// Everything that reads request data is noexcept and bounds its work by the
// bytes it is given (DRF mode) or by IdentityOptions::max_header_bytes and
// max_hops (normalising modes): no recursion, no input-sized allocation
// other than the result key.
#include <algorithm>
#include <string>

#include "identity_impl.hpp"
#include "shmlimit/identity.hpp"

namespace shmlimit {
namespace {

using namespace identity_detail;

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

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

}  // namespace

namespace identity_detail {

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

}  // namespace identity_detail
}  // namespace shmlimit
