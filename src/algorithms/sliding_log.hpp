// The exact sliding window (Algorithm::kSlidingLog): never more than N
// admissions in any window of length D, with Django REST framework
// SimpleRateThrottle's history semantics (an admission at t leaves the
// window once now >= t + D). doc/algorithms.md has the formulas,
// doc/design.md the lock-free protocol.
//
// State. A key has N = rate.count log entries (the first N of its slot's
// log_entries words, layout.hpp) and its slot's word. An entry is
//   version(8) << 56 | (t + 1)          one admission at t, 0 = never used
// and is, for a process that read the slot's word at `version` v:
//   free     0, or t + D <= now (expired, whatever its version): writable
//   live     version v and t + D > now: one admission of this key
//   garbage  another version and t + D > now: neither (a write by a
//            process whose view of the slot was stale, or a key forgotten
//            by reset before its entries were cleared); writable once expired
// The word's payload is the time the log is empty: the largest t + D of an
// admission it reported (0 = empty); the slot may be reclaimed when
// payload <= now (every entry expired).
//
// Why at most N in any window. An admission writes `now` into an entry
// that was free *at its own `now`*: the admission it overwrites is at
// least D older. So two admissions less than D apart never share an entry,
// and a window of length D holds at most one admission per entry: N. This
// needs no head pointer, no ordering between entries, and no agreement
// between the clocks of processes (each admission's `now` is its own).
//
// Thread and process safety: the functions here are pure. The protocol on
// the shared words (src/limiter/log_apply.cpp) is lock-free.
#pragma once

#include <cstdint>
#include <span>

#include "algorithms/state_word.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

struct LogParams {
  std::uint64_t count = 0;      // N: entries of the key, and the limit
  std::uint64_t window_ns = 0;  // D
  LogWait wait = LogWait::kExact;
};

inline constexpr std::uint64_t log_entry(std::uint64_t version, std::int64_t t) {
  return (version << 56) | ((static_cast<std::uint64_t>(t) + 1) & kStatePayloadMask);
}
inline constexpr std::uint64_t log_entry_version(std::uint64_t e) { return e >> 56; }
/// The admission time of a non-zero entry.
inline constexpr std::int64_t log_entry_time(std::uint64_t e) {
  return static_cast<std::int64_t>((e & kStatePayloadMask) - 1);
}

enum class LogEntryKind { kFree, kLive, kGarbage };
inline LogEntryKind log_classify(std::uint64_t e, std::uint64_t version, std::int64_t now,
                                 std::uint64_t window_ns) noexcept {
  if (e == 0) return LogEntryKind::kFree;
  const std::int64_t t = log_entry_time(e);
  // t + D <= now, written without the sum overflowing (t, D < 2^56).
  if (now - t >= static_cast<std::int64_t>(window_ns)) return LogEntryKind::kFree;
  return log_entry_version(e) == version ? LogEntryKind::kLive : LogEntryKind::kGarbage;
}

struct LogOutcome {
  Decision decision;
  std::uint32_t chosen = 0;  // entries to claim (== cost when admitted), their indices in `pick`
};

/// One decision on a snapshot of the key's N entries, read while the
/// slot's word had `version`. When admitted, the first `cost` indices of
/// `pick` (at least N long) are free entries to claim with
/// log_entry(version, now). `scratch` (at least N long) is working memory.
/// `now` is clamped at 0. Pure; noexcept.
LogOutcome log_decide(const LogParams& p, std::span<const std::uint64_t> entries,
                      std::uint64_t version, std::int64_t now, std::uint64_t cost,
                      std::span<std::uint32_t> pick, std::span<std::int64_t> scratch) noexcept;

/// DRF's SimpleRateThrottle.wait() in ns: (D - (now - oldest)) / (N - L + 1)
/// with L live admissions (D / (N + 1) when L = 0), rounded up to a whole
/// ns. DRF divides floats of seconds; this divides integers of ns.
Nanos log_drf_wait(const LogParams& p, std::uint64_t live, std::int64_t oldest,
                   std::int64_t now) noexcept;

/// Word payload after an admission at `now`: max(payload, now + D).
inline std::uint64_t log_word_after(std::uint64_t payload, std::int64_t now,
                                    std::uint64_t window_ns) {
  const std::uint64_t empty_at = static_cast<std::uint64_t>(now) + window_ns;
  return payload > empty_at ? payload : empty_at;
}

}  // namespace shmlimit::detail
