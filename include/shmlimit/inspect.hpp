// shmlimit — inspecting a live segment and moving its state.
//
// The results of Limiter's read-side and state I/O methods, declared in
// <shmlimit/shmlimit.hpp>: stats() and counters() (exact totals), dump()
// (every bucket as it is), check() and check_segment() (every broken
// invariant), recent_denials() (the ring of the last denials), and
// export_state() / import_state() (doc/state-format.md). A worker that only
// decides never needs this header.
//
// Thread and process safety: every one of these calls may run while other
// processes decide on the same segment; the readers never write the segment
// and never block the writers (doc/design.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

/// Exact totals of one policy's decisions since the segment was created.
/// Counted: every acquire (admitted or denied, whatever the reason but
/// kUnknownPolicy; on_full answers too), every lease with cost > 0, and an
/// acquire_many as one decision of each of its limits when admitted, and as
/// one denial of each limit that refused it when refused. Not counted:
/// peek, refund, cost-0 leases. They never decrease (not even across
/// reset(), reclaimed buckets or dead processes); a process killed
/// mid-decision may leave that one decision uncounted.
struct PolicyCounters {
  PolicyId id;
  std::string policy;          ///< the policy's name
  std::uint64_t admitted = 0;  ///< admitted decisions
  std::uint64_t denied = 0;    ///< denied decisions
};

/// The clock this process's decisions read (doc/design.md, "Time"): a
/// fact of the calling process, not of the segment. Each process chooses
/// once, when its decision clock calibrates (its first decision, or this
/// call), from the host and its own SHMLIMIT_CLOCK, so the workers of one
/// segment may differ (one started with SHMLIMIT_CLOCK=exact reads
/// clock_gettime while the others read the TSC); a child forked after the
/// choice keeps its parent's.
struct DecisionClockInfo {
  /// "tsc": the TSC, scaled from the thread's last exact reading;
  /// "exact": clock_gettime(CLOCK_MONOTONIC_RAW) for every decision.
  std::string clock;
  /// Why "exact", for a person to read (printable ASCII, a SHMLIMIT_CLOCK
  /// value quoted byte by byte): "SHMLIMIT_CLOCK=exact", "clocksource hpet",
  /// "no invariant TSC", "SHMLIMIT_CLOCK="x" is not auto, tsc or exact",
  /// "the TSC ran ahead of CLOCK_MONOTONIC_RAW", ... Empty for "tsc".
  std::string reason;
};

/// This process's decision clock. Thread-safe; the first call in a process
/// that has not decided yet calibrates the clock (about 0.2 ms where the
/// TSC is usable), later calls are cheap. Never touches a segment.
DecisionClockInfo decision_clock_info();

/// Segment-wide facts and counters for `shmlimit stat`, and the calling
/// process's decision clock.
struct Stats {
  std::uint32_t layout_version = 0;
  std::uint64_t layout_fingerprint = 0;
  std::uint32_t capacity = 0;
  std::uint32_t slot_bytes = 0;
  std::uint32_t max_key_bytes = 0;
  std::uint32_t max_probe = 0;
  std::uint64_t segment_bytes = 0;
  std::int64_t created_unix_ns = 0;    ///< wall clock at creation
  Nanos age{0};                        ///< monotonic time since creation
  Nanos clock_horizon_left{0};         ///< how long until the clock horizon
  std::uint64_t used = 0;              ///< live slots
  std::uint64_t reclaimable = 0;       ///< live slots whose bucket is full
  std::uint64_t dead = 0;              ///< freed slots (reusable)
  std::uint64_t empty = 0;             ///< never used slots
  std::uint64_t claiming = 0;          ///< slots being claimed right now
  std::uint32_t max_probe_length = 0;  ///< longest distance of a live key from its home slot
  double mean_probe_length = 0;
  std::uint64_t full_events = 0;  ///< decisions that found no slot (all processes)
  std::uint64_t contended_events = 0;
  std::uint64_t repairs = 0;    ///< half-done claims of dead processes repaired
  std::uint64_t admitted = 0;   ///< exact: the sum of every policy's PolicyCounters::admitted
  std::uint64_t denied = 0;     ///< exact: the sum of every policy's PolicyCounters::denied
  std::uint32_t processes = 0;  ///< process registry entries in use
  std::vector<PolicyCounters> policies;  ///< every registered policy's totals (Limiter::counters())
  /// The clock the process calling stats() decides on (decision_clock_info()):
  /// a fact of this process, not of the segment; other processes may differ.
  DecisionClockInfo decision_clock;
};

/// One live bucket, as the dump shows it.
struct BucketView {
  std::uint32_t slot = 0;
  std::string policy;
  std::string key;          ///< raw bytes
  std::uint64_t state = 0;  ///< the algorithm's 56-bit state (GCRA: TAT ns since epoch)
  /// The bucket as it is at the time of the dump, charging nothing:
  /// allowed = a cost-1 request would be admitted now; remaining = units
  /// available now; retry_after = until one unit fits (0 if one fits now);
  /// reset_after = until the bucket is full; reason kCorrupt if the
  /// policy entry is unusable.
  Decision now;
  /// Decisions on this key since its bucket was claimed. Approximate: each
  /// is counted with a plain load and store (no locked instruction), so two
  /// processes deciding on one key at the same instant may lose one count,
  /// and a bucket reclaimed or reset starts again from 0. The exact totals
  /// are per policy: Limiter::counters().
  std::uint64_t admitted = 0;
  std::uint64_t denied = 0;
};

/// One named field of a bucket's stored state (BucketView::state).
struct StateField {
  std::string name;         ///< e.g. "tat_ns", "window_index", "used"
  std::uint64_t value = 0;  ///< times are ns ("_ns") or ms ("_ms") since the segment's epoch
};

/// The fields an algorithm packs into its 56-bit state word, named per
/// algorithm (doc/cli.md, "Bucket object"): gcra tat_ns; leaky_bucket
/// empty_at_ns; token_bucket period_index, missing; fixed_window
/// window_index, used; sliding_window window_index (mod 2^24), previous,
/// current; quiet_period expires_ms, used, blocked; concurrency in_flight;
/// sliding_log empty_at_ns. The fields as stored: a window or refill
/// period that has passed since the last decision is not applied (the
/// bucket's `now` decision says what the state means now).
std::vector<StateField> state_fields(Algorithm algorithm, std::uint64_t state);

/// The result of Limiter::check(): every broken invariant, as sentences.
struct CheckReport {
  std::vector<std::string> problems;  ///< empty when the segment is clean
  std::uint64_t repaired = 0;         ///< half-done claims of dead processes repaired
  std::uint64_t live = 0;             ///< live buckets seen
  std::uint64_t in_progress = 0;      ///< slots being claimed by live processes right now
  bool clean() const noexcept { return problems.empty(); }
};

/// One denied decision, read from the segment's recent-denials ring (the
/// last 1024 denials of every process; doc/design.md).
struct DenialView {
  std::uint64_t cursor = 0;  ///< its position in the ring's sequence of denials
  Nanos at{0};               ///< when: ns since the segment's epoch (the decision's clock)
  std::int64_t unix_ns = 0;  ///< the same instant on CLOCK_REALTIME, converted when read
  std::uint32_t policy_index = 0;
  std::string policy;            ///< the policy's name; empty if the index names none
  std::string key;               ///< the key's first bytes (at most 80)
  std::uint32_t key_length = 0;  ///< the key's real length (more than key.size() when cut)
  std::uint64_t cost = 0;        ///< cost units asked for
  Nanos retry_after{0};          ///< the decision's retry_after (Nanos::max(): never fits)
  Reason reason = Reason::kOk;
  std::int32_t pid = 0;  ///< the process that was denied
  /// More denials of the same key by the same thread that this record
  /// stands for: a thread records a flood of one key about once per 100 ms
  /// and counts the rest here (doc/cli.md, "Recent denials").
  std::uint64_t repeats = 0;
};

/// The result of Limiter::recent_denials().
struct RecentDenials {
  std::vector<DenialView> denials;  ///< oldest first
  std::uint64_t next_cursor = 0;    ///< pass as since_cursor to read only newer denials
  /// Denials at or after since_cursor that are not returned: overwritten
  /// before this read (the ring overflowed), or still being written.
  std::uint64_t lost = 0;
};

/// What import_state() does with a key that already has a bucket.
enum class ImportMode : std::uint8_t {
  kReplace = 0,       ///< the imported state and counters replace the bucket's
  kKeepExisting = 1,  ///< the bucket that is there stays; the imported one is skipped
};

/// The result of Limiter::import_state().
struct ImportReport {
  std::uint64_t imported = 0;          ///< buckets written
  std::uint64_t skipped_full = 0;      ///< states that had refilled by now (nothing to store)
  std::uint64_t skipped_existing = 0;  ///< keys kept under ImportMode::kKeepExisting
  std::uint64_t no_room = 0;           ///< keys the table had no slot for
};

}  // namespace shmlimit
