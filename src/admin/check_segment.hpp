// `shmlimit check` on segments that do not open: a field-by-field audit of
// raw bytes. Limiter::check() verifies a segment that passed validation
// (and repairs it); this reads one that may be garbage and lists every
// problem it can name.
//
// Safety: reads only, and only inside [base, base + size): every offset is
// derived from header fields that are range-checked first, and a region
// that does not fit the bytes given is reported, not read. Thread-safe
// (no state); a concurrent writer can only make the report inconsistent.
#pragma once

#include <cstddef>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

/// Audits the `size` bytes at `base` (a read-only mapping of a segment, or
/// any buffer aligned to 64 bytes). Appends problems to `report` (at most
/// kMaxProblems lines, then one line saying how many more) and counts live
/// buckets and claims in progress.
void inspect_segment_bytes(const std::byte* base, std::size_t size, CheckReport* report);

inline constexpr std::size_t kMaxProblems = 200;

}  // namespace shmlimit::detail
