// The key hash: seeded, fixed for the life of the layout version (every
// process sharing a segment must compute the same value, so std::hash,
// which may differ between builds, is not usable). Not cryptographic; the
// per-segment random seed keeps an outsider from choosing keys that collide.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace shmlimit::detail {

// Bytes [0, n) of `p` (n <= 8) as a little-endian word, zero-padded: at
// most three loads and no loop, never reading outside [p, p + n). For n >= 4
// two 4-byte loads overlap; the bytes they share are ORed with themselves.
[[gnu::always_inline]] inline std::uint64_t load_word_upto8(const char* p,
                                                            std::uint32_t n) noexcept {
  if (n >= 4) {
    std::uint32_t lo = 0, hi = 0;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    return std::uint64_t{lo} | (std::uint64_t{hi} << (8 * (n - 4)));
  }
  if (n == 0) return 0;
  const auto byte = [p](std::uint32_t i) {
    return std::uint64_t{static_cast<unsigned char>(p[i])};
  };
  return byte(0) | (byte(n / 2) << (8 * (n / 2))) | (byte(n - 1) << (8 * (n - 1)));
}

// The 128-bit product's halves, XORed. On x86-64 one `mul` in registers:
// inside the large inlined hot path GCC 12 otherwise passes the __int128
// product through the stack (a store and a reload on the hash's dependency
// chain, once per word). Both forms compute the same value.
/// The bytes of a key of up to 16 bytes as little-endian words, the last
/// zero-padded: *w0, and *w1 (0 for up to 8 bytes). How the table packs a
/// short key, and how the denial fold (denials.hpp) compares one: a packed
/// key's two words are the fold's without reading the key again.
[[gnu::always_inline]] inline void load_words_upto16(const char* p, std::uint32_t n,
                                                     std::uint64_t* w0,
                                                     std::uint64_t* w1) noexcept {
  if (n > 8) {
    std::memcpy(w0, p, 8);
    *w1 = load_word_upto8(p + 8, n - 8);
  } else {
    *w0 = load_word_upto8(p, n);
    *w1 = 0;
  }
}

[[gnu::always_inline]] inline std::uint64_t mum(std::uint64_t a, std::uint64_t b) {
#if defined(__x86_64__) && defined(__GNUC__)
  std::uint64_t lo, hi;
  asm("mulq %3" : "=a"(lo), "=d"(hi) : "a"(a), "rm"(b) : "cc");
  return lo ^ hi;
#else
  const __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
#endif
}

/// Hash of a key already packed into little-endian 64-bit words (the last
/// one zero-padded), as the table stores it. PackedKey (table.hpp) is the
/// one place keys are packed and hashed.
///   up to 16 bytes (IPs, user ids: every hot-path key): two multiply-mixes,
///     wyhash's shape for short input: mix(tag, mix(w0 ^ seed, w1 ^ seed)).
///     The chain from the key to its slot address is two multiplies long.
///   longer keys: one multiply-mix per word, then a final one.
/// Part of the segment format (doc/segment-format.md): every process
/// sharing a segment must place a key in the same slot.
inline std::uint64_t hash_words(std::uint64_t seed, std::uint32_t policy,
                                const std::uint64_t* words, std::size_t nwords, std::size_t len) {
  constexpr std::uint64_t k0 = 0xa0761d6478bd642fULL, k1 = 0xe7037ed1a0b428dbULL,
                          k2 = 0x8ebc6af09c88c6e3ULL, k3 = 0x589965cc75374cc3ULL;
  const std::uint64_t tag = static_cast<std::uint64_t>(policy) << 32 | len;
  if (nwords <= 2) [[likely]] {
    const std::uint64_t a = nwords > 0 ? words[0] : 0, b = nwords > 1 ? words[1] : 0;
    return mum(tag ^ k1, mum(a ^ seed ^ k0, b ^ seed ^ k2));
  }
  std::uint64_t h = mum(seed ^ k0, tag ^ k1);
  for (std::size_t i = 0; i < nwords; ++i) h = mum(h ^ words[i] ^ k2, k3 ^ (h >> 29));
  return mum(h ^ k3, k0 ^ (h >> 31));
}

}  // namespace shmlimit::detail
