// What the algorithms layer promises the layers above it: every algorithm's
// whole limiting state fits in a 56-bit payload, and every time in a payload
// is an integer number of ns since the segment epoch, below 2^56 (about 834
// days: the clock horizon). segment/layout.hpp packs this payload with an
// 8-bit version into a slot's 64-bit word.
#pragma once

#include <cstdint>

namespace shmlimit::detail {

using u64 = std::uint64_t;
using u32 = std::uint32_t;

/// Bits of state an algorithm may use (the rest of the word is the version).
inline constexpr u64 kStatePayloadBits = 56;
inline constexpr u64 kStatePayloadMask = (u64{1} << kStatePayloadBits) - 1;

/// Times in a payload are below 2^56 ns (about 834 days) since the epoch:
/// the segment's clock horizon.
inline constexpr std::int64_t kClockHorizonNs = static_cast<std::int64_t>(kStatePayloadMask);

/// Admissions an exact sliding log may keep per key (its window's count).
inline constexpr u32 kMaxLogEntries = 4096;

}  // namespace shmlimit::detail
