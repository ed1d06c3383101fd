// The key hash: seeded, fixed for the life of the layout version (every
// process sharing a segment must compute the same value, so std::hash,
// which may differ between builds, is not usable). Not cryptographic; the
// per-segment random seed keeps an outsider from choosing keys that collide.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shmlimit::detail {

inline std::uint64_t mum(std::uint64_t a, std::uint64_t b) {
  const __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

/// Hash of a key already packed into little-endian 64-bit words (the last
/// one zero-padded), as the table stores it: one multiply-mix per word.
/// PackedKey (table.hpp) is the one place keys are packed and hashed.
inline std::uint64_t hash_words(std::uint64_t seed, std::uint32_t policy, const std::uint64_t* words,
                                std::size_t nwords, std::size_t len) {
  constexpr std::uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL,
                          k2 = 0x8ebc6af09c88c6e3ULL, k3 = 0x589965cc75374cc3ULL;
  std::uint64_t h = mum(seed ^ k0, (static_cast<std::uint64_t>(policy) << 32 | len) ^ k1);
  for (std::size_t i = 0; i < nwords; ++i) h = mum(h ^ words[i] ^ k2, k3 ^ (h >> 29));
  return mum(h ^ k3, k0 ^ (h >> 31));
}

}  // namespace shmlimit::detail
