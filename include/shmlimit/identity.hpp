// shmlimit client identity: which key an HTTP request is limited under.
//
// An HTTP server sees the peer's address (REMOTE_ADDR) and, behind proxies,
// the X-Forwarded-For or Forwarded (RFC 7239) headers those proxies add.
// client_identity() turns them into a limiter key in one of three modes
// (doc/identity.md gives the full rules, the fallbacks and their reasons):
//
//   DRF mode (default)      exactly Django REST framework's
//                           BaseThrottle.get_ident() with NUM_PROXIES =
//                           IdentityOptions::num_proxies: the same string,
//                           address or not, so keys match DRF's.
//   normalising num_proxies the hop DRF would pick, parsed as an address,
//                           masked to ipv4_prefix / ipv6_prefix and written
//                           canonically (RFC 5952); not an address ->
//                           fallback.
//   trusted proxies         X-Forwarded-For (or Forwarded) walked from the
//                           right, believed only while the hop that
//                           appended it is in trusted_proxies; the first
//                           untrusted hop is the client.
//
//   shmlimit::IdentityOptions opts;
//   opts.trusted_proxies = {shmlimit::Cidr::parse("10.0.0.0/8")};
//   shmlimit::RequestInfo req{.remote_addr = peer, .x_forwarded_for = xff};
//   shmlimit::Identity who = shmlimit::client_identity(req, opts);
//   limiter.acquire(api, who.key);
//
// Thread and process safety
//   * Every function here is a pure function of its arguments: safe from
//     any number of threads at once. Objects are plain values.
//   * Functions on request data are noexcept and never crash on any bytes
//     (fuzzed: fuzz/identity_fuzz.cpp); they allocate only for the result
//     (std::bad_alloc ends the process, as from any noexcept function).
//   * Parse functions meant for configuration (IpAddress::parse,
//     Cidr::parse) throw shmlimit::Error(ErrorCode::kInvalidArgument) with
//     the text quoted; the try_parse variants return std::nullopt instead.
//
// Keys are at most IdentityOptions::max_key_bytes long (default 88, the
// default Limiter::max_key_bytes()): a longer key (a long X-Forwarded-For
// chain in DRF mode) is replaced by hashed_key(), a fixed-length digest.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

/// An IPv4 or IPv6 address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d)
/// are folded to IPv4 when constructed or parsed, so one client has one
/// address whichever way its stack reports it. No zone ("%eth0"): text with
/// a zone is rejected.
class IpAddress {
 public:
  enum class Family : std::uint8_t { kV4 = 4, kV6 = 6 };

  /// Longest canonical text: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
  /// cannot occur (mapped addresses are folded), so 39 bytes
  /// ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").
  static constexpr std::size_t kMaxTextBytes = 39;

  /// 0.0.0.0
  IpAddress() noexcept = default;
  /// An IPv4 address from its four octets in network order.
  static IpAddress v4(std::array<std::uint8_t, 4> octets) noexcept;
  /// An IPv6 address from its 16 octets in network order; an IPv4-mapped
  /// one (::ffff:0:0/96) becomes the IPv4 address.
  static IpAddress v6(std::array<std::uint8_t, 16> octets) noexcept;

  /// Parses exactly an address: dotted quad (four decimal octets 0..255,
  /// no leading zeros, as inet_pton) or RFC 4291 IPv6 text (with "::" and
  /// an embedded dotted quad), case-insensitive. Nothing else: no port, no
  /// brackets, no white space. Throws Error(kInvalidArgument):
  ///   invalid IP address "10.0.0.256": octet out of range
  static IpAddress parse(std::string_view text);
  /// The same, std::nullopt instead of throwing.
  static std::optional<IpAddress> try_parse(std::string_view text) noexcept;
  /// Parses an address as it appears in request data: an address, or
  /// "a.b.c.d:port", "[v6]" or "[v6]:port" (port 0..65535, decimal, the
  /// port is dropped); the surrounding optional white space (space, tab)
  /// is ignored. Anything else (including an unbracketed v6 with a port,
  /// which is ambiguous) is std::nullopt.
  static std::optional<IpAddress> try_parse_host(std::string_view text) noexcept;

  Family family() const noexcept { return family_; }
  bool is_v4() const noexcept { return family_ == Family::kV4; }
  bool is_v6() const noexcept { return family_ == Family::kV6; }
  /// 32 or 128.
  unsigned max_prefix() const noexcept { return is_v4() ? 32U : 128U; }
  /// The address's octets in network order: 4 (IPv4) or 16 (IPv6).
  std::span<const std::uint8_t> octets() const noexcept;

  /// The address with all but the first `prefix` bits cleared; a prefix
  /// larger than max_prefix() is clamped to it (the address unchanged).
  IpAddress masked(unsigned prefix) const noexcept;

  /// Canonical text: dotted quad, or RFC 5952 for IPv6 (lower case, no
  /// leading zeros, the longest run of two or more zero groups - the
  /// first if tied - compressed to "::").
  std::string to_string() const;
  /// The same text into `out` (at least kMaxTextBytes bytes; no NUL
  /// written); returns its length. For callers that must not allocate.
  std::size_t to_chars(std::span<char, kMaxTextBytes> out) const noexcept;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  /// IPv4 before IPv6, then by octets.
  friend std::strong_ordering operator<=>(const IpAddress&, const IpAddress&) = default;

 private:
  Family family_ = Family::kV4;
  /// IPv4 in the first 4 octets (the rest zero); IPv6 in all 16.
  std::array<std::uint8_t, 16> bytes_{};
};

/// A network: an address and a prefix length. The address has no bits set
/// beyond the prefix.
class Cidr {
 public:
  /// 0.0.0.0/0
  Cidr() noexcept = default;
  /// Throws Error(kInvalidArgument) if prefix > address.max_prefix() or if
  /// the address has bits set beyond the prefix (a likely typo: 10.0.0.1/8).
  Cidr(const IpAddress& network, unsigned prefix);

  /// Parses "10.0.0.0/8", "2001:db8::/32", or a bare address (= /32 or
  /// /128). An IPv4-mapped IPv6 network with prefix >= 96
  /// ("::ffff:10.0.0.0/104") is the IPv4 network (10.0.0.0/8). The prefix is
  /// decimal without leading zeros. Throws Error(kInvalidArgument), naming
  /// what is wrong:
  ///   invalid CIDR "10.0.0.1/8": host bits set beyond /8 (did you mean 10.0.0.0/8?)
  static Cidr parse(std::string_view text);
  /// The same, std::nullopt instead of throwing.
  static std::optional<Cidr> try_parse(std::string_view text) noexcept;

  const IpAddress& network() const noexcept { return network_; }
  unsigned prefix() const noexcept { return prefix_; }
  /// True iff `address` is of the same family and its first prefix() bits
  /// equal the network's. An IPv6 network never contains an IPv4 address
  /// (mapped addresses are folded to IPv4 on both sides).
  bool contains(const IpAddress& address) const noexcept;
  /// "10.0.0.0/8", "2001:db8::/32".
  std::string to_string() const;

  friend bool operator==(const Cidr&, const Cidr&) = default;

 private:
  IpAddress network_;
  unsigned prefix_ = 0;
};

/// Parses a list of CIDRs separated by commas and/or white space
/// ("10.0.0.0/8, 192.168.0.0/16 ::1"). Throws Error(kInvalidArgument)
/// naming the bad item and its position in the list.
std::vector<Cidr> parse_cidrs(std::string_view text);

/// Where an identity's key came from.
enum class IdentitySource : std::uint8_t {
  kRemoteAddr = 0,     ///< the peer address (REMOTE_ADDR)
  kXForwardedFor = 1,  ///< a hop of X-Forwarded-For (or, in DRF mode, the whole header)
  kForwarded = 2,      ///< a for= parameter of the Forwarded header (RFC 7239)
  kFallback = 3,       ///< the request data named no usable client: see doc/identity.md
};

/// "remote_addr", "x_forwarded_for", "forwarded", "fallback".
std::string_view to_string(IdentitySource source) noexcept;

/// The parts of a request that identify the client. Views: the caller keeps
/// the bytes alive for the call. A header that appears several times is
/// passed as its values joined with ", " (RFC 9110 section 5.3, and what
/// WSGI servers do for HTTP_X_FORWARDED_FOR).
struct RequestInfo {
  /// REMOTE_ADDR: the peer's address as text. Empty (or not an address)
  /// for a Unix-domain socket.
  std::string_view remote_addr;
  /// X-Forwarded-For, std::nullopt when the request has none. Present but
  /// empty is not absent (DRF treats them differently).
  std::optional<std::string_view> x_forwarded_for;
  /// Forwarded (RFC 7239), std::nullopt when absent. Read only when
  /// IdentityOptions::use_forwarded.
  std::optional<std::string_view> forwarded;
};

/// How to identify clients. Defaults are in the comments; the default
/// options are DRF's defaults (NUM_PROXIES = None).
struct IdentityOptions {
  /// DRF's NUM_PROXIES, used when trusted_proxies is empty. Default unset:
  ///   unset -> the whole X-Forwarded-For with all white space removed if
  ///            the header is present and non-empty, else REMOTE_ADDR;
  ///   0     -> REMOTE_ADDR;
  ///   n     -> REMOTE_ADDR if X-Forwarded-For is absent, else its
  ///            comma-separated item [-min(n, count)], white space stripped.
  /// Exactly BaseThrottle.get_ident() (the header taken as Latin-1, as
  /// WSGI does, so white space is Python's str.isspace() on Latin-1).
  std::optional<unsigned> num_proxies;
  /// In num_proxies mode: parse DRF's pick as an address (try_parse_host),
  /// mask it and return the canonical text; when it is not one address,
  /// fall back (doc/identity.md). Default false: DRF's exact string.
  bool normalize = false;
  /// The proxies whose forwarding headers are believed. Non-empty selects
  /// trusted-proxy mode (num_proxies and normalize are then ignored, keys
  /// are always normalised): REMOTE_ADDR must be in this list for any
  /// header to be read; the header is walked from its right end, each hop
  /// in the list passing the walk on to the hop on its left; the first hop
  /// not in the list is the client. Default empty.
  std::vector<Cidr> trusted_proxies;
  /// In trusted-proxy mode: a REMOTE_ADDR that is empty or not an address
  /// (a Unix-domain socket from a local proxy) counts as trusted. Default
  /// false.
  bool trust_unix_peer = false;
  /// Read `Forwarded` (RFC 7239 for= parameters) instead of
  /// X-Forwarded-For when the request has it, in trusted-proxy and
  /// normalising modes. Default false (DRF reads only X-Forwarded-For).
  bool use_forwarded = false;
  /// Normalised keys keep the first ipv4_prefix bits of an IPv4 client
  /// (0..32, default 32: one key per address) ...
  unsigned ipv4_prefix = 32;
  /// ... and the first ipv6_prefix bits of an IPv6 client (0..128, default
  /// 64: one key per /64, the usual assignment to one subscriber, who could
  /// otherwise rotate through 2^64 addresses). Values above the maximum are
  /// clamped.
  unsigned ipv6_prefix = 64;
  /// Normalising modes read at most the last max_header_bytes bytes of a
  /// forwarding header (the hops nearest to us); a hop cut by this limit is
  /// not an address. Default 8192 (a common server header limit). DRF mode
  /// reads the whole header, as DRF does.
  std::size_t max_header_bytes = 8192;
  /// Normalising modes examine at most max_hops hops from the right;
  /// trusted hops beyond them are not followed (the walk stops at the last
  /// trusted hop it reached: doc/identity.md). Default 32.
  unsigned max_hops = 32;
  /// Longest key returned; longer keys become hashed_key(). Default 88 (the
  /// default Limiter::max_key_bytes()). Values below kMinKeyBytes are
  /// raised to it.
  std::size_t max_key_bytes = 88;

  static constexpr std::size_t kMinKeyBytes = 17;
};

/// Who a request comes from.
struct Identity {
  /// The limiter key: never longer than IdentityOptions::max_key_bytes.
  /// Empty only in DRF mode, exactly when DRF's get_ident() returns an
  /// empty string (a blank X-Forwarded-For item, an empty REMOTE_ADDR).
  std::string key;
  /// The client's address, unmasked, when the key names one (normalising
  /// modes always, DRF mode when its string parses with try_parse_host).
  /// Use it for AccessList::classify.
  std::optional<IpAddress> address;
  IdentitySource source = IdentitySource::kRemoteAddr;
  /// The key is hashed_key() of a string longer than max_key_bytes (in
  /// DRF mode a long header; in normalising modes only an IPv6 text when
  /// max_key_bytes is below 39).
  bool hashed = false;
};

/// The key a request is limited under (the rules: doc/identity.md). Pure,
/// noexcept, never throws or crashes on any input; work is linear in the
/// header bytes read.
Identity client_identity(const RequestInfo& request, const IdentityOptions& options) noexcept;

/// The key that stands for the fallback when no address is known at all
/// (normalising modes with an unusable REMOTE_ADDR and no believable
/// header): one shared bucket, so that such requests cannot rotate keys.
inline constexpr std::string_view kUnknownClientKey = "unknown";

/// A fixed-length stand-in for a key longer than max_key_bytes: '~'
/// followed by the first min(32, max_key_bytes - 1) lower-case hex digits
/// of the XXH3 128-bit hash of the key in xxHash's canonical (big-endian)
/// form. Stable across processes, builds and
/// machines. Not a secret and not collision-proof against a determined
/// attacker, who can only make two long keys of their own share a bucket.
std::string hashed_key(std::string_view key, std::size_t max_key_bytes = 88);
/// `key` itself if it is at most max_key_bytes long, else hashed_key(key).
std::string fit_key(std::string_view key, std::size_t max_key_bytes = 88);

/// DRF's SimpleRateThrottle.cache_format: "throttle_<scope>_<ident>",
/// passed through fit_key(max_key_bytes).
std::string throttle_key(std::string_view scope, std::string_view ident,
                         std::size_t max_key_bytes = 88);

/// DRF's UserRateThrottle / ScopedRateThrottle key: the user's id
/// (request.user.pk) when authenticated, else the client identity:
/// throttle_key(scope, user_id ? *user_id : identity.key, max_key_bytes).
/// As in DRF, a user id and an address share one namespace.
std::string user_or_ident_key(std::string_view scope, std::optional<std::string_view> user_id,
                              const Identity& identity, std::size_t max_key_bytes = 88);

/// An allow/deny decision on an address before any limit applies.
enum class Access : std::uint8_t {
  kLimit = 0,  ///< in neither list: apply the rate limit
  kAllow = 1,  ///< in the allow list (and not denied): never limited
  kDeny = 2,   ///< in the deny list: always refused
};

/// "limit", "allow", "deny".
std::string_view to_string(Access access) noexcept;

/// Allow and deny lists by CIDR (q2_sdk's whitelist / blacklist). Deny
/// wins over allow: an address in both lists is denied, so that a narrow
/// deny entry can carve a bad host out of a broad allowed network.
/// classify() is a linear scan (lists are meant to be short); const
/// methods are safe from any number of threads.
class AccessList {
 public:
  AccessList() = default;
  AccessList(std::vector<Cidr> allow, std::vector<Cidr> deny)
      : allow_(std::move(allow)), deny_(std::move(deny)) {}

  void allow(const Cidr& network) { allow_.push_back(network); }
  void deny(const Cidr& network) { deny_.push_back(network); }
  const std::vector<Cidr>& allowed() const noexcept { return allow_; }
  const std::vector<Cidr>& denied() const noexcept { return deny_; }

  /// kDeny if any deny entry contains the address, else kAllow if any
  /// allow entry does, else kLimit.
  Access classify(const IpAddress& address) const noexcept;
  /// No address (a DRF key that is not one): kLimit, so the rate limit
  /// still applies (neither list can vouch for it).
  Access classify(const std::optional<IpAddress>& address) const noexcept;

 private:
  std::vector<Cidr> allow_;
  std::vector<Cidr> deny_;
};

}  // namespace shmlimit
