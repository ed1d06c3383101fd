// The key hash: seeded, fixed for the life of the layout version (every
// process sharing a segment must compute the same value, so std::hash,
// which may differ between builds, is not usable). Not cryptographic; the
// per-segment random seed keeps an outsider from choosing keys that collide.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace shmlimit::detail {

inline std::uint64_t mum(std::uint64_t a, std::uint64_t b) {
  const __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

/// Hash of (policy index, key bytes) under `seed`.
inline std::uint64_t hash_key(std::uint64_t seed, std::uint32_t policy, std::string_view key) {
  constexpr std::uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL,
                          k2 = 0x8ebc6af09c88c6e3ULL, k3 = 0x589965cc75374cc3ULL;
  std::uint64_t h = mum(seed ^ k0, (static_cast<std::uint64_t>(policy) << 32 | key.size()) ^ k1);
  const char* p = key.data();
  std::size_t n = key.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = mum(h ^ w ^ k2, k3 ^ (h >> 29));
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = mum(h ^ w ^ k1, k2 ^ n);
  }
  return mum(h ^ k3, k0 ^ (h >> 31));
}

}  // namespace shmlimit::detail
