// Every limiting algorithm as a pure function of (params, state, now, cost).
//
// A bucket's whole state is the 56-bit payload of its slot's word (see
// state_word.hpp), so every algorithm packs its state into 56 bits and is
// updated by one CAS. Conventions shared by all of them:
//   * `now` is ns since the segment epoch; a negative reading counts as 0.
//   * state 0 is a full bucket (an absent key) for every algorithm, and
//     is_full(state, now) says when a stored state is again equivalent to
//     an absent key, so its slot may be reclaimed.
//   * Readings that arrive out of order never underflow and never refund:
//     an older `now` than the one that wrote the state is treated as that
//     state's own time (the answer is only more conservative).
//   * cost 0 reports without charging (store = false).
//   * cost > capacity is denied with Reason::kCostTooHigh and
//     retry_after = Nanos::max(), without a store.
//   * Decision.limit is the capacity; remaining is what could be taken
//     right after this decision; retry_after (when denied) is the exact
//     wait until the same cost would be admitted if nothing else happens;
//     reset_after is the wait until the bucket is full again.
#pragma once

#include <cstdint>

#include "algorithms/gcra.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

/// A policy's parameters as the algorithms see them (validated copies of
/// the segment's policy entry). For each algorithm:
///   kGcra          count per period, capacity = burst; emission = ceil(period / count)
///   kLeakyBucket   drains `count` per `period`, capacity = burst (GCRA by another name)
///   kTokenBucket   `count` tokens added at every multiple of `period`, capacity = burst
///   kFixedWindow   at most `count` per window of `period` aligned to the epoch (burst = count)
///   kSlidingWindow at most `count` per sliding `period`, estimated from two fixed windows
///   kQuietPeriod   at most `count` per `period`; once exceeded, every attempt restarts the
///                  period, so the key stays denied until quiet for a whole period
///   kConcurrency   at most `count` in flight (lease.hpp); period 0; state = count | pending
///   kSlidingLog    at most `count` in any window of `period` (sliding_log.hpp); the state
///                  word holds when the log is empty, the admissions are in the log region
struct AlgoParams {
  Algorithm algorithm = Algorithm::kGcra;
  std::uint64_t count = 0;
  std::uint64_t period_ns = 0;
  std::uint64_t burst = 0;
  std::uint64_t emission_ns = 0;   // GCRA / leaky bucket: ceil(period / count)
  LogWait wait = LogWait::kExact;  // kSlidingLog: which retry_after (policy kind bits 16-23)
};

/// Largest concurrency limit: the in-flight count has 24 bits (lease.hpp).
inline constexpr std::uint64_t kMaxConcurrency = (std::uint64_t{1} << 24) - 1;

/// decision; store: CAS the state to new_state (also on some denials);
/// new_state < 2^56. The same type as GCRA's, so the hot path returns
/// GCRA's outcome without copying it.
using AlgoOutcome = GcraOutcome;

/// Whether the parameters can be represented (state fits in 56 bits).
/// Fills `why` with a sentence when not.
bool algo_params_valid(const AlgoParams& p, const char** why = nullptr) noexcept;

/// One decision. Concurrency and sliding-log states are not decided from
/// the word alone (lease.hpp, sliding_log.hpp): for them this reports the
/// word (concurrency: in flight; sliding log: empty or not) without a store.
AlgoOutcome algo_decide(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                        std::uint64_t cost) noexcept;

/// algo_decide for parameters that algo_params_valid accepted and a `now`
/// within [0, kClockHorizonNs - algo_horizon_margin(p)] (a valid, cached
/// policy snapshot on the hot path): the same answer without checking them
/// again on every decision.
AlgoOutcome algo_decide_valid(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                              std::uint64_t cost) noexcept;

/// Gives back `cost` already taken, never beyond the capacity: the state
/// after the refund (store = false when nothing changes). decision reports
/// the bucket after the refund.
AlgoOutcome algo_refund(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                        std::uint64_t cost) noexcept;

/// Adds `amount` to a quiet_period bucket unconditionally: a counter whose
/// period starts at its first count and expires `period` later (with
/// `restart`: `period` after the latest count). Saturates at the count and
/// then reports allowed = false; never blocks the key. `limit - remaining`
/// is the count. Any other algorithm: a corrupt outcome (nothing stored).
AlgoOutcome algo_tally(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                       std::uint64_t amount, bool restart) noexcept;

/// True when `state` at `now` is indistinguishable from an absent key.
bool algo_is_full(const AlgoParams& p, std::uint64_t state, std::int64_t now) noexcept;

/// Whether a state written under `from` keeps its meaning under `to`, so a
/// replacement of `from` by `to` may keep every bucket (doc/algorithms.md,
/// "Replacing a policy"), and no kept state is beyond what `to` can reach
/// (so no wait exceeds algo_max_wait(to), and retry_after stays exact).
/// Never across algorithms; the windowed encodings pack an index of
/// `period` (token bucket, fixed and sliding window) or a time tied to it
/// (quiet period), so they need the same period; a sliding log keeps its
/// `count` entries, so it needs the same period and no fewer entries.
/// GCRA and the leaky bucket (a debt in ns) need a B*T no smaller, the
/// token bucket (tokens missing) a burst no smaller; concurrency (a count
/// in flight) keeps any change.
bool algo_state_compatible(const AlgoParams& from, const AlgoParams& to) noexcept;

/// The longest retry_after a decision under `p` reports for a cost that
/// fits the capacity, whatever the state (readings in order) short of a
/// queue of reservations (reserve.hpp: GCRA's TAT past now + B*T, a token
/// bucket's missing past burst, each as long as max_wait allowed): GCRA and the
/// leaky bucket B*T; token bucket ceil(burst / count) periods; fixed window
/// and sliding log one period; sliding window two; quiet period one period
/// and 1 ms (expiries are whole ms); concurrency 0 (a lease never waits).
/// States kept by a replacement (algo_state_compatible) are within it too.
Nanos algo_max_wait(const AlgoParams& p) noexcept;

/// The largest `now` + span the state may need: decisions past
/// kClockHorizonNs - algo_horizon_margin(p) are refused (clock horizon).
std::int64_t algo_horizon_margin(const AlgoParams& p) noexcept;

}  // namespace shmlimit::detail
