// The one codec of each algorithm's packed state word (the 56-bit payload
// of state_word.hpp): the stored fields, as the algorithm writes them.
// buckets.cpp and windows.cpp decide with these, and state I/O
// (src/admin/state_codecs.cpp) exports and imports through them, so a
// layout is written in one place.
// GCRA's state is the bare TAT and the concurrency count the bare count:
// neither packs fields. Pure, constexpr, no shared memory.
#pragma once

#include <cstdint>

#include "algorithms/state_word.hpp"

namespace shmlimit::detail::state_codec {

inline constexpr std::uint64_t low_bits(unsigned bits) { return (std::uint64_t{1} << bits) - 1; }

/// Token bucket with discrete refill:
///   bits 20-55 refill index (periods since the epoch), 0-19 tokens missing.
struct TokenBucket {
  static constexpr unsigned kMissingBits = 20;
  static constexpr unsigned kIndexBits = 36;
  std::uint64_t index = 0;
  std::uint64_t missing = 0;
  static constexpr TokenBucket unpack(std::uint64_t s) {
    return {s >> kMissingBits, s & low_bits(kMissingBits)};
  }
  constexpr std::uint64_t pack() const { return (index << kMissingBits) | missing; }
};

/// Fixed window: bits 24-55 window index, 0-23 used.
struct FixedWindow {
  static constexpr unsigned kUsedBits = 24;
  static constexpr unsigned kIndexBits = 32;
  std::uint64_t index = 0;
  std::uint64_t used = 0;
  static constexpr FixedWindow unpack(std::uint64_t s) {
    return {s >> kUsedBits, s & low_bits(kUsedBits)};
  }
  constexpr std::uint64_t pack() const { return (index << kUsedBits) | used; }
};

/// Sliding window: bits 32-55 window index mod 2^24, 16-31 previous
/// window's count, 0-15 current window's count.
struct SlidingWindow {
  static constexpr unsigned kCountBits = 16;
  static constexpr unsigned kIndexBits = 24;
  static constexpr std::uint64_t kIndexMask = (std::uint64_t{1} << kIndexBits) - 1;
  std::uint64_t index = 0;  // mod 2^24 (pack reduces it)
  std::uint64_t prev = 0;
  std::uint64_t cur = 0;
  static constexpr SlidingWindow unpack(std::uint64_t s) {
    return {s >> (2 * kCountBits), (s >> kCountBits) & low_bits(kCountBits),
            s & low_bits(kCountBits)};
  }
  constexpr std::uint64_t pack() const {
    return ((index & kIndexMask) << (2 * kCountBits)) | (prev << kCountBits) | cur;
  }
};

/// Quiet period: bits 19-55 expiry in ms since the epoch (rounded up),
/// 0-18 used in the current period, or kBlocked (all ones).
struct QuietPeriod {
  static constexpr unsigned kUsedBits = 19;
  static constexpr unsigned kExpiryBits = 37;
  static constexpr std::uint64_t kBlocked = (std::uint64_t{1} << kUsedBits) - 1;
  std::uint64_t expires_ms = 0;
  std::uint64_t used = 0;  // or kBlocked
  static constexpr QuietPeriod unpack(std::uint64_t s) {
    return {s >> kUsedBits, s & low_bits(kUsedBits)};
  }
  constexpr std::uint64_t pack() const { return (expires_ms << kUsedBits) | used; }
};

static_assert(TokenBucket::kMissingBits + TokenBucket::kIndexBits == kStatePayloadBits,
              "fills the payload");
static_assert(FixedWindow::kUsedBits + FixedWindow::kIndexBits == kStatePayloadBits,
              "fills the payload");
static_assert(2 * SlidingWindow::kCountBits + SlidingWindow::kIndexBits == kStatePayloadBits,
              "fills the payload");
static_assert(QuietPeriod::kUsedBits + QuietPeriod::kExpiryBits == kStatePayloadBits,
              "fills the payload");

}  // namespace shmlimit::detail::state_codec
