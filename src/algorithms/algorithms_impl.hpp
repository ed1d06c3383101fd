// Shared by the algorithms' translation units (algorithms.cpp and the
// per-algorithm files buckets.cpp, windows.cpp, reports.cpp), private to
// src/algorithms/: the integer helpers every algorithm uses, each
// algorithm's state fields and limits (also read by algo_params_valid), and
// the per-algorithm functions that algo_decide, algo_refund and algo_is_full
// dispatch to after validating the parameters and clamping `now`.
// Conventions: algorithms.hpp and the opening comment of algorithms.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/state_codec.hpp"
#include "algorithms/state_word.hpp"
#include "shmlimit/shmlimit.hpp"

// Hidden: the dispatch in algorithms.cpp calls these directly, also in a
// shared library (no PLT); nothing outside libshmlimit uses them.
namespace shmlimit::detail {
namespace algo {

using u128 = __uint128_t;  // the GCC/Clang builtin: accepted by -Wpedantic, unlike `__int128`
using i64 = std::int64_t;

constexpr u64 kMs = 1'000'000;
constexpr u64 kHorizon = static_cast<u64>(kClockHorizonNs);  // 2^56 - 1
constexpr i64 kI64Max = std::numeric_limits<i64>::max();

/// Longest span any policy may have (GCRA's B*T, a window, a quiet period):
/// half the clock horizon, about 417 days, the bound gcra.hpp already uses.
constexpr u64 kMaxSpanNs = kMaxTauNs;

constexpr u64 mask(unsigned bits) { return (u64{1} << bits) - 1; }

/// ns as a Nanos; a wait beyond int64 (only with absurd parameters) is "never".
inline Nanos sat_ns(u128 ns) {
  return ns > static_cast<u128>(kI64Max) ? Nanos::max() : Nanos(static_cast<i64>(ns));
}

/// floor((a + b - 1) / b), b != 0.
inline u128 ceil_div(u128 a, u128 b) { return a / b + (a % b != 0 ? 1 : 0); }

inline Decision make_decision(bool allowed, u64 limit, u64 remaining, Nanos retry, Nanos reset,
                              Reason reason = Reason::kOk) {
  Decision d;
  d.allowed = allowed;
  d.limit = limit;
  d.remaining = remaining;
  d.retry_after = retry;
  d.reset_after = reset;
  d.reason = reason;
  return d;
}

inline AlgoOutcome outcome(const Decision& d, bool store = false, u64 new_state = 0) {
  AlgoOutcome out;
  out.decision = d;
  out.store = store;
  out.new_state = new_state;
  return out;
}

/// The answer for parameters that cannot be used (a corrupt policy entry):
/// denied, nothing stored; the limiter applies on_full.
inline AlgoOutcome corrupt_outcome() {
  return outcome(make_decision(false, 0, 0, Nanos(0), Nanos(0), Reason::kCorrupt));
}

/// cost > capacity: can never fit, however long the caller waits.
inline AlgoOutcome too_high(u64 limit, u64 remaining, Nanos reset) {
  return outcome(make_decision(false, limit, remaining, Nanos::max(), reset, Reason::kCostTooHigh));
}

/// A refund's answer: a peek (cost 0) at the state after the refund, which
/// is stored only when the refund changed what is used.
template <class Decide>
AlgoOutcome refunded(Decide decide, const AlgoParams& p, u64 next, i64 now, bool changed) {
  AlgoOutcome out = decide(p, next, now, 0);
  out.store = changed;
  out.new_state = next;
  return out;
}

inline i64 clamp_now(i64 now, i64 margin) {
  const i64 hi = kClockHorizonNs - std::clamp<i64>(margin, 0, kClockHorizonNs);
  return std::clamp<i64>(now, 0, hi);
}

// ===========================================================================
// Each algorithm's state fields and limits (layouts: next to its functions).

// Token bucket (buckets.cpp).
constexpr unsigned kTbMissingBits = state_codec::TokenBucket::kMissingBits;
constexpr unsigned kTbIndexBits = state_codec::TokenBucket::kIndexBits;
static_assert(kTbMissingBits + kTbIndexBits == kStatePayloadBits,
              "token bucket state fills the payload");
constexpr u64 kTbMinPeriodNs = 2 * kMs;  // 2^36 periods of 2 ms outlast the clock horizon

// Fixed window (windows.cpp).
constexpr unsigned kFwUsedBits = state_codec::FixedWindow::kUsedBits;
constexpr unsigned kFwIndexBits = state_codec::FixedWindow::kIndexBits;
static_assert(kFwUsedBits + kFwIndexBits == kStatePayloadBits,
              "fixed window state fills the payload");
constexpr u64 kFwMinPeriodNs = 20 * kMs;  // 2^32 windows of 20 ms outlast the clock horizon

// Sliding window (windows.cpp).
constexpr unsigned kSwCountBits = state_codec::SlidingWindow::kCountBits;
constexpr unsigned kSwIndexBits = state_codec::SlidingWindow::kIndexBits;
static_assert(2 * kSwCountBits + kSwIndexBits == kStatePayloadBits,
              "sliding window state fills the payload");
constexpr u64 kSwIndexMask = mask(kSwIndexBits);
constexpr u64 kSwMinPeriodNs = kMs;

// Quiet period (windows.cpp).
constexpr unsigned kQpUsedBits = state_codec::QuietPeriod::kUsedBits;
constexpr unsigned kQpExpiryBits = state_codec::QuietPeriod::kExpiryBits;
static_assert(kQpUsedBits + kQpExpiryBits == kStatePayloadBits,
              "quiet period state fills the payload");
static_assert((kHorizon / kMs) < (u64{1} << kQpExpiryBits), "ms expiries of the whole horizon fit");
constexpr u64 kQuietBlocked = mask(kQpUsedBits);  // denied since the period (re)started
constexpr u64 kQpMaxCount = kQuietBlocked - 1;
constexpr u64 kQpMinPeriodNs = kMs;

// ===========================================================================
// The per-algorithm functions (`now` already clamped, `state` masked to the
// payload, `p` valid).

// buckets.cpp: GCRA's refund, the leaky bucket, the token bucket.
AlgoOutcome gcra_refund(const AlgoParams& p, u64 tat, i64 now, u64 cost);
AlgoOutcome leaky_decide(const AlgoParams& p, u64 empty_at, i64 now_in, u64 cost);
AlgoOutcome leaky_refund(const AlgoParams& p, u64 empty_at, i64 now_in, u64 cost);
bool leaky_is_full(u64 empty_at, i64 now);
AlgoOutcome tb_decide(const AlgoParams& p, u64 state, i64 now, u64 cost);
AlgoOutcome tb_refund(const AlgoParams& p, u64 state, i64 now, u64 cost);
bool tb_is_full(const AlgoParams& p, u64 state, i64 now);

// windows.cpp: the fixed window, the sliding window, the quiet period.
AlgoOutcome fw_decide(const AlgoParams& p, u64 state, i64 now, u64 cost);
AlgoOutcome fw_refund(const AlgoParams& p, u64 state, i64 now, u64 cost);
bool fw_is_full(const AlgoParams& p, u64 state, i64 now);
AlgoOutcome sw_decide(const AlgoParams& p, u64 state, i64 now, u64 cost);
AlgoOutcome sw_refund(const AlgoParams& p, u64 state, i64 now, u64 cost);
bool sw_is_full(const AlgoParams& p, u64 state, i64 now);
AlgoOutcome qp_decide(const AlgoParams& p, u64 state, i64 now_in, u64 cost);
AlgoOutcome qp_refund(const AlgoParams& p, u64 state, i64 now, u64 cost);
bool qp_is_full(u64 state, i64 now);
AlgoOutcome qp_tally(const AlgoParams& p, u64 state, i64 now_in, u64 amount, bool restart);

// reports.cpp: states not decided from the word alone (concurrency, sliding log).
AlgoOutcome conc_report(const AlgoParams& p, u64 state);
AlgoOutcome log_report(const AlgoParams& p, u64 empty_at, i64 now);

}  // namespace algo
}  // namespace shmlimit::detail
