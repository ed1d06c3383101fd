// The segment's clocks. Time in a segment is CLOCK_MONOTONIC, which Linux
// keeps system-wide, so readings of different processes are comparable;
// it is stored relative to the segment's epoch (Header::epoch_mono_ns).
// CLOCK_REALTIME is for display only (created_unix_ns, wall-clock times
// in dumps and exports).
#pragma once

#include <cstdint>

namespace shmlimit::detail {

/// CLOCK_MONOTONIC and CLOCK_REALTIME in ns. Thread- and process-safe,
/// wait-free (a vDSO read).
std::int64_t monotonic_ns() noexcept;
std::int64_t realtime_ns() noexcept;

}  // namespace shmlimit::detail
