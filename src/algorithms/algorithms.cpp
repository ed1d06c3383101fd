// Every limiting algorithm as a pure function of (params, state, now, cost):
// here the algorithms' names, the validation of their parameters and the
// dispatch to each one (buckets.cpp, windows.cpp, reports.cpp; shared
// helpers in algorithms_impl.hpp). doc/algorithms.md gives each one's
// formula, state layout and limits; the comments in these files state the
// same facts where the code relies on them.
//
// Conventions (algorithms.hpp) and how each is kept:
//   * Integer arithmetic only. A product that could pass 2^64 is taken in
//     128 bits; a wait too long for int64 ns saturates to Nanos::max().
//   * No division by a value that was not checked: algo_decide, algo_refund
//     and algo_is_full first run algo_params_valid (division-free), and an
//     unusable parameter set gets a kCorrupt denial, never a trap.
//   * `now` is clamped to [0, kClockHorizonNs - algo_horizon_margin(p)]:
//     the limiter refuses later readings (Reason::kClockHorizon); clamping
//     here as well means every stored state is < 2^56 whatever the caller.
//   * A state that is full (is_full) decides exactly as state 0 does, so a
//     reclaimed slot changes no decision; a state that is not full is never
//     read as emptier than it is by an older `now` (no refund).
#include "algorithms/algorithms.hpp"

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "algorithms/algorithms_impl.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/state_word.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

std::string_view to_string(Algorithm algorithm) noexcept {
  switch (algorithm) {
    case Algorithm::kGcra:
      return "gcra";
    case Algorithm::kTokenBucket:
      return "token_bucket";
    case Algorithm::kFixedWindow:
      return "fixed_window";
    case Algorithm::kSlidingWindow:
      return "sliding_window";
    case Algorithm::kQuietPeriod:
      return "quiet_period";
    case Algorithm::kLeakyBucket:
      return "leaky_bucket";
    case Algorithm::kConcurrency:
      return "concurrency";
    case Algorithm::kSlidingLog:
      return "sliding_log";
  }
  return "unknown";
}

Algorithm parse_algorithm(std::string_view name) {
  static constexpr Algorithm kAll[] = {Algorithm::kGcra,        Algorithm::kTokenBucket,
                                       Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                       Algorithm::kQuietPeriod, Algorithm::kLeakyBucket,
                                       Algorithm::kConcurrency, Algorithm::kSlidingLog};
  for (Algorithm a : kAll) {
    const std::string_view known = to_string(a);
    if (known.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      const char c = name[i] == '-' ? '_' : name[i];
      same = c == known[i];
    }
    if (same) return a;
  }
  std::string expected;
  for (Algorithm a : kAll) {
    if (!expected.empty()) expected += ", ";
    expected += to_string(a);
  }
  throw Error(ErrorCode::kInvalidArgument,
              "unknown algorithm \"" + std::string(name) + "\" (expected " + expected + ")");
}

}  // namespace shmlimit

namespace shmlimit::detail {
// The shared helpers and the per-algorithm functions (algorithms_impl.hpp).
using namespace algo;

namespace {

// ===========================================================================
// Validity, without dividing by anything the segment supplied.

bool fail(const char** why, const char* sentence) {
  if (why != nullptr) *why = sentence;
  return false;
}

// kClockHorizonNs / period < 2^bits, as a product.
bool indices_fit(u64 period, unsigned bits) {
  return (static_cast<u128>(period) << bits) > static_cast<u128>(kHorizon);
}

bool gcra_like_valid(const AlgoParams& p, const char** why) {
  if (p.emission_ns == 0)
    return fail(why, "the emission interval (period / count) must be at least 1 ns");
  if (p.burst == 0) return fail(why, "the burst must be at least 1");
  if (static_cast<u128>(p.burst) * p.emission_ns > kMaxTauNs) {
    return fail(why, "burst * (period / count) must be at most 2^55 ns (about 417 days)");
  }
  return true;
}

bool window_valid(const AlgoParams& p, const char** why, u64 max_count, u64 min_period,
                  const char* count_sentence, const char* period_sentence) {
  if (p.count == 0) return fail(why, "the count must be at least 1");
  if (p.count > max_count) return fail(why, count_sentence);
  if (p.period_ns < min_period) return fail(why, period_sentence);
  if (p.period_ns > kMaxSpanNs)
    return fail(why, "the period must be at most 2^55 ns (about 417 days)");
  return true;
}

}  // namespace

bool algo_params_valid(const AlgoParams& p, const char** why) noexcept {
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      return gcra_like_valid(p, why);
    case Algorithm::kTokenBucket:
      if (p.burst == 0) return fail(why, "the burst (bucket size) must be at least 1");
      if (p.burst > mask(kTbMissingBits)) {
        return fail(why, "a token bucket holds at most 1048575 tokens (burst < 2^20)");
      }
      if (!window_valid(p, why, std::numeric_limits<u64>::max(), kTbMinPeriodNs, "",
                        "a token bucket's refill period must be at least 2 ms")) {
        return false;
      }
      if (!indices_fit(p.period_ns, kTbIndexBits)) {
        return fail(why, "the refill period is too short for the 36-bit refill index");
      }
      return true;
    case Algorithm::kFixedWindow:
      if (!window_valid(p, why, mask(kFwUsedBits), kFwMinPeriodNs,
                        "a fixed window counts at most 16777215 per window (count < 2^24)",
                        "a fixed window must be at least 20 ms long")) {
        return false;
      }
      if (!indices_fit(p.period_ns, kFwIndexBits)) {
        return fail(why, "the window is too short for the 32-bit window index");
      }
      return true;
    case Algorithm::kSlidingWindow:
      return window_valid(p, why, mask(kSwCountBits), kSwMinPeriodNs,
                          "a sliding window counts at most 65535 per window (count < 2^16)",
                          "a sliding window must be at least 1 ms long");
    case Algorithm::kQuietPeriod:
      return window_valid(p, why, kQpMaxCount, kQpMinPeriodNs,
                          "a quiet period allows at most 524286 per period (count < 2^19 - 1)",
                          "a quiet period must be at least 1 ms long");
    case Algorithm::kConcurrency:
      if (p.count == 0) return fail(why, "the concurrency limit must be at least 1");
      if (p.count > kMaxConcurrency)
        return fail(why, "the concurrency limit must be below 2^24 (16777216)");
      if (p.period_ns != 0) return fail(why, "a concurrency limit has no period (it must be 0)");
      return true;
    case Algorithm::kSlidingLog:
      if (p.wait != LogWait::kExact && p.wait != LogWait::kDrf)
        return fail(why, "unknown sliding-log wait mode");
      return window_valid(p, why, kMaxLogEntries, 1,
                          "a sliding log keeps at most 4096 admissions per window (count <= 4096)",
                          "a sliding log's window must be at least 1 ns long");
  }
  return fail(why, "unknown algorithm");
}

bool algo_state_compatible(const AlgoParams& from, const AlgoParams& to) noexcept {
  if (from.algorithm != to.algorithm) return false;
  switch (to.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      // A debt of at most the old B*T is within the new one.
      return static_cast<u128>(to.burst) * to.emission_ns >=
             static_cast<u128>(from.burst) * from.emission_ns;
    case Algorithm::kConcurrency:
      return true;
    case Algorithm::kTokenBucket:
      // Tokens missing: up to the old burst, within the new one; above it
      // a queue of reservations (reserve.hpp), kept as GCRA keeps its
      // TAT, and owing less under a larger burst.
      return from.period_ns == to.period_ns && to.burst >= from.burst;
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
    case Algorithm::kQuietPeriod:
      return from.period_ns == to.period_ns;
    case Algorithm::kSlidingLog:
      return from.period_ns == to.period_ns && to.count >= from.count;
  }
  return false;
}

Nanos algo_max_wait(const AlgoParams& p) noexcept {
  if (!algo_params_valid(p)) return Nanos(0);
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      return sat_ns(static_cast<u128>(p.burst) * p.emission_ns);
    case Algorithm::kTokenBucket:
      return sat_ns(ceil_div(p.burst, p.count) * p.period_ns);
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingLog:
      return sat_ns(p.period_ns);
    case Algorithm::kSlidingWindow:
      return sat_ns(static_cast<u128>(2) * p.period_ns);
    case Algorithm::kQuietPeriod:
      return sat_ns(static_cast<u128>(p.period_ns) + kMs);
    case Algorithm::kConcurrency:
      return Nanos(0);
  }
  return Nanos(0);
}

std::int64_t algo_horizon_margin(const AlgoParams& p) noexcept {
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket: {
      // A TAT / empty_at is at most B*T past now.
      const u128 tau = static_cast<u128>(p.burst) * p.emission_ns;
      return tau >= kHorizon ? kClockHorizonNs : static_cast<i64>(tau);
    }
    // Window indices are floor(now / period) and never point past now; the
    // validity checks make every index of the horizon fit its field.
    case Algorithm::kTokenBucket:
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
      return 0;
    case Algorithm::kConcurrency:
      return 0;  // no time in the state
    case Algorithm::kSlidingLog:
      // The word holds t + D, the entries t + 1.
      return static_cast<i64>(p.period_ns) + 1;
    case Algorithm::kQuietPeriod: {
      // expires_at = ceil_ms(now + period) < now + period + 1 ms.
      const u128 span = static_cast<u128>(p.period_ns) + kMs;
      return span >= kHorizon ? kClockHorizonNs : static_cast<i64>(span);
    }
  }
  return kClockHorizonNs;  // unknown: refuse every time
}

AlgoOutcome algo_decide(const AlgoParams& p, std::uint64_t state, std::int64_t now_in,
                        std::uint64_t cost) noexcept {
  if (!algo_params_valid(p)) return corrupt_outcome();
  return algo_decide_valid(p, state, clamp_now(now_in, algo_horizon_margin(p)), cost);
}

AlgoOutcome algo_decide_valid(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                              std::uint64_t cost) noexcept {
  state &= kStatePayloadMask;
  switch (p.algorithm) {
    case Algorithm::kGcra: {
      const GcraOutcome g = gcra_decide(state, now, cost, GcraParams{p.emission_ns, p.burst});
      return outcome(g.decision, g.store, g.new_state);
    }
    case Algorithm::kLeakyBucket:
      return leaky_decide(p, state, now, cost);
    case Algorithm::kTokenBucket:
      return tb_decide(p, state, now, cost);
    case Algorithm::kFixedWindow:
      return fw_decide(p, state, now, cost);
    case Algorithm::kSlidingWindow:
      return sw_decide(p, state, now, cost);
    case Algorithm::kQuietPeriod:
      return qp_decide(p, state, now, cost);
    case Algorithm::kConcurrency:
      return conc_report(p, state);
    case Algorithm::kSlidingLog:
      return log_report(p, state, now);
  }
  return corrupt_outcome();
}

AlgoOutcome algo_refund(const AlgoParams& p, std::uint64_t state, std::int64_t now_in,
                        std::uint64_t cost) noexcept {
  if (!algo_params_valid(p)) return corrupt_outcome();
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  state &= kStatePayloadMask;
  switch (p.algorithm) {
    case Algorithm::kGcra:
      return gcra_refund(p, state, now, cost);
    case Algorithm::kLeakyBucket:
      return leaky_refund(p, state, now, cost);
    case Algorithm::kTokenBucket:
      return tb_refund(p, state, now, cost);
    case Algorithm::kFixedWindow:
      return fw_refund(p, state, now, cost);
    case Algorithm::kSlidingWindow:
      return sw_refund(p, state, now, cost);
    case Algorithm::kQuietPeriod:
      return qp_refund(p, state, now, cost);
    case Algorithm::kConcurrency:
      return conc_report(p, state);
    case Algorithm::kSlidingLog:
      return log_report(p, state, now);
  }
  return corrupt_outcome();
}

AlgoOutcome algo_tally(const AlgoParams& p, std::uint64_t state, std::int64_t now_in,
                       std::uint64_t amount, bool restart) noexcept {
  if (!algo_params_valid(p) || p.algorithm != Algorithm::kQuietPeriod) return corrupt_outcome();
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  return qp_tally(p, state & kStatePayloadMask, now, amount, restart);
}

bool algo_is_full(const AlgoParams& p, std::uint64_t state, std::int64_t now_in) noexcept {
  if (!algo_params_valid(p)) return true;  // nothing worth keeping
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  state &= kStatePayloadMask;
  switch (p.algorithm) {
    case Algorithm::kGcra:
      return gcra_is_full(state, now);
    case Algorithm::kLeakyBucket:
      return leaky_is_full(state, now);
    case Algorithm::kTokenBucket:
      return tb_is_full(p, state, now);
    case Algorithm::kFixedWindow:
      return fw_is_full(p, state, now);
    case Algorithm::kSlidingWindow:
      return sw_is_full(p, state, now);
    case Algorithm::kQuietPeriod:
      return qp_is_full(state, now);
    case Algorithm::kConcurrency:
      return state == 0;  // nothing in flight, no operation pending
    case Algorithm::kSlidingLog:
      return state <= static_cast<u64>(now);  // every admission has left the window
  }
  return true;
}

}  // namespace shmlimit::detail
