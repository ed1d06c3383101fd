// Client identity (doc/identity.md): client_identity(), which picks one of
// the three modes (forwarded.cpp), and the throttle keys, fitted to the
// table's key size here. Addresses are in address.cpp,
// networks and access lists in cidr.cpp, the text helpers in text.cpp.
#include "shmlimit/identity.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "identity_impl.hpp"

// xxHash (Debian libxxhash-dev) inlined into this file only: the hash of an
// over-long key must be the same in every process, build and machine, which
// XXH3's specification guarantees (std::hash does not).
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace shmlimit {
namespace {

std::size_t key_limit(std::size_t max_key_bytes) noexcept {
  return std::max(max_key_bytes, IdentityOptions::kMinKeyBytes);
}

}  // namespace

using namespace identity_detail;

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

}  // namespace shmlimit
