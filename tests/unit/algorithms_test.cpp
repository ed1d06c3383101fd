// Every algorithm of src/algorithms/algorithms.hpp as a pure function of
// (params, state, now, cost) -> (decision, store, new state).
//
// Three kinds of test:
//   * AlgorithmContract: one parameterised suite run over every algorithm
//     (several parameter sets each). It checks the conventions of
//     algorithms.hpp and each algorithm's documented admission bound on
//     seeded random walks.
//   * Tables: (state, now, cost) -> expected values, written by hand from
//     the semantics in doc/algorithms.md, not from runs of the code. States
//     are spelled with the documented bit layouts (tb(), fw(), sw(), qp()).
//   * Scenarios and equivalences: the examples of doc/algorithms.md, the
//     leaky bucket against GCRA, the quiet period against the Redis recipe.
#include "algorithms/algorithms.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "algorithms/gcra.hpp"
#include "algorithms/state_codec.hpp"
#include "segment/layout.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit::detail {
namespace {

using i64 = std::int64_t;

constexpr i64 kMs = 1'000'000;
constexpr i64 kSec = 1'000'000'000;
constexpr i64 kMinute = 60 * kSec;
constexpr u64 kPayloadMax = Word::kPayloadMask;  // 2^56 - 1
constexpr u64 kU64Max = std::numeric_limits<u64>::max();
constexpr i64 kI64Max = std::numeric_limits<i64>::max();
constexpr i64 kMaxRetry = -1;  // stands for Nanos::max() in tables

// Parameters as the limiter builds them: windows have burst = count.
AlgoParams make(Algorithm a, u64 count, i64 period_ns, u64 burst = 0) {
  AlgoParams p;
  p.algorithm = a;
  p.count = count;
  p.period_ns = static_cast<u64>(period_ns);
  p.burst = burst != 0 ? burst : count;
  p.emission_ns = gcra_emission(count, static_cast<u64>(period_ns));
  return p;
}

// What a fresh key admits at once.
u64 capacity(const AlgoParams& p) {
  switch (p.algorithm) {
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
    case Algorithm::kQuietPeriod:
      return p.count;
    default:
      return p.burst;
  }
}

// The documented state layouts (doc/algorithms.md).
constexpr u64 tb(u64 refill_index, u64 missing) { return (refill_index << 20) | missing; }
constexpr u64 fw(u64 window, u64 used) { return (window << 24) | used; }
constexpr u64 sw(u64 window, u64 prev, u64 cur) {
  return ((window & 0xFFFFFF) << 32) | (prev << 16) | cur;
}
constexpr u64 kBlocked = (1u << 19) - 1;
constexpr u64 qp(u64 expires_ms, u64 used) { return (expires_ms << 19) | used; }

bool same(const Decision& a, const Decision& b) {
  return a.allowed == b.allowed && a.limit == b.limit && a.remaining == b.remaining &&
         a.retry_after == b.retry_after && a.reset_after == b.reset_after && a.reason == b.reason;
}

std::string show(const AlgoOutcome& o) {
  return describe(o.decision) + (o.store ? " store " + std::to_string(o.new_state) : " no store");
}

Decision peek(const AlgoParams& p, u64 state, i64 now) {
  return algo_decide(p, state, now, 0).decision;
}

// ===========================================================================
// AlgorithmContract: the same suite over every algorithm.
struct Variant {
  std::string name;
  AlgoParams p;
  friend void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }
};

std::vector<Variant> all_variants() {
  using A = Algorithm;
  return {
      {"Gcra10PerSecond", make(A::kGcra, 10, kSec)},
      {"Gcra3Per7msBurst5", make(A::kGcra, 3, 7 * kMs, 5)},
      {"Gcra1PerMs", make(A::kGcra, 1, kMs)},
      {"Leaky10PerSecond", make(A::kLeakyBucket, 10, kSec)},
      {"Leaky3Per7msBurst5", make(A::kLeakyBucket, 3, 7 * kMs, 5)},
      {"Leaky1PerMs", make(A::kLeakyBucket, 1, kMs)},
      {"TokenMax10Plus5PerSecond", make(A::kTokenBucket, 5, kSec, 10)},
      {"TokenMax4Plus3Per7ms", make(A::kTokenBucket, 3, 7 * kMs, 4)},
      {"TokenMax2Plus5Per2ms", make(A::kTokenBucket, 5, 2 * kMs, 2)},
      {"TokenMax1Plus1Per3ms", make(A::kTokenBucket, 1, 3 * kMs, 1)},
      {"Fixed10PerSecond", make(A::kFixedWindow, 10, kSec)},
      {"Fixed3Per20ms", make(A::kFixedWindow, 3, 20 * kMs)},
      {"Fixed1Per25ms", make(A::kFixedWindow, 1, 25 * kMs)},
      {"Sliding10PerSecond", make(A::kSlidingWindow, 10, kSec)},
      {"Sliding5Per3ms", make(A::kSlidingWindow, 5, 3 * kMs)},
      {"Sliding1PerMs", make(A::kSlidingWindow, 1, kMs)},
      {"Sliding7Per10sNoWrap", make(A::kSlidingWindow, 7, 10 * kSec)},
      {"Quiet3PerSecond", make(A::kQuietPeriod, 3, kSec)},
      {"Quiet1PerMs", make(A::kQuietPeriod, 1, kMs)},
      {"Quiet5Per7ms", make(A::kQuietPeriod, 5, 7 * kMs + 300)},
  };
}

// A random walk of (now, cost): mostly small forward steps (several
// requests at one instant, bursts), sometimes idle for periods, costs
// mostly 1, sometimes 0 (peek), weighted, or above the capacity.
class Walk {
 public:
  Walk(const AlgoParams& p, std::uint64_t seed, i64 start) : p_(p), rng_(seed), now_(start) {}

  i64 next_now() {
    const auto period = static_cast<u64>(p_.period_ns);
    const u64 cap = capacity(p_);
    const u64 r = rng_() % 100;
    u64 step = 0;
    if (r < 30) {
      step = 0;
    } else if (r < 85) {
      step = 1 + rng_() % (2 * period / cap + 1);
    } else if (r < 97) {
      step = rng_() % (2 * period);
    } else {
      step = rng_() % (5 * period);
    }
    now_ += static_cast<i64>(step);
    return now_;
  }
  u64 next_cost() {
    const u64 cap = capacity(p_);
    const u64 r = rng_() % 100;
    if (r < 10) return 0;
    if (r < 75) return 1;
    if (r < 95) return 1 + rng_() % cap;
    return cap + 1 + rng_() % 3;
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  AlgoParams p_;
  std::mt19937_64 rng_;
  i64 now_;
};

class AlgorithmContract : public ::testing::TestWithParam<Variant> {
 protected:
  const AlgoParams& p() const { return GetParam().p; }
  u64 cap() const { return capacity(p()); }
  i64 period() const { return static_cast<i64>(p().period_ns); }

  // One decision, with the checks every decision must pass; applies it.
  AlgoOutcome step(u64& state, i64 now, u64 cost) {
    const AlgoOutcome out = algo_decide(p(), state, now, cost);
    const Decision& d = out.decision;
    EXPECT_EQ(d.limit, cap());
    EXPECT_LE(d.remaining, cap());
    EXPECT_TRUE(d.reason == Reason::kOk || d.reason == Reason::kCostTooHigh) << describe(d);
    if (d.allowed) {
      EXPECT_EQ(d.retry_after, Nanos(0));
    } else {
      EXPECT_GT(d.retry_after, Nanos(0)) << describe(d);
    }
    EXPECT_GE(d.reset_after, Nanos(0));
    if (cost == 0) {
      EXPECT_FALSE(out.store) << "a peek stored";
    }
    if (out.store) {
      EXPECT_LE(out.new_state, kPayloadMax) << "state leaves the 56-bit payload";
      // Only the quiet period writes on a denial.
      EXPECT_TRUE(d.allowed || p().algorithm == Algorithm::kQuietPeriod) << describe(d);
      state = out.new_state;
    }
    return out;
  }
};

TEST_P(AlgorithmContract, StateZeroIsAFullBucket) {
  for (const i64 now : {i64{0}, i64{1}, period() - 1, period(), 12'345'678'901, i64{1} << 50}) {
    EXPECT_TRUE(algo_is_full(p(), 0, now)) << "now " << now;
    const AlgoOutcome out = algo_decide(p(), 0, now, 0);
    EXPECT_TRUE(out.decision.allowed);
    EXPECT_EQ(out.decision.remaining, cap());
    EXPECT_EQ(out.decision.reset_after, Nanos(0));
    EXPECT_EQ(out.decision.reason, Reason::kOk);
    EXPECT_FALSE(out.store);
  }
}

TEST_P(AlgorithmContract, FullStateDecidesExactlyLikeAnAbsentKey) {
  // Invariant (2) of the public header: a reclaimed slot changes no decision.
  Walk walk(p(), 11, 3 * kSec + 17);
  u64 state = 0;
  int full_seen = 0;
  for (int i = 0; i < 3000; ++i) {
    const i64 now = walk.next_now();
    for (const i64 t : {now, now + period() / 3, now + period(), now + 2 * period() + 1}) {
      if (!algo_is_full(p(), state, t)) continue;
      ++full_seen;
      for (const u64 c : {u64{0}, u64{1}, cap(), cap() + 1}) {
        const AlgoOutcome a = algo_decide(p(), state, t, c);
        const AlgoOutcome b = algo_decide(p(), 0, t, c);
        ASSERT_TRUE(same(a.decision, b.decision) && a.store == b.store &&
                    a.new_state == b.new_state)
            << "state " << state << " at " << t << " cost " << c << ": " << show(a) << " vs absent "
            << show(b);
      }
    }
    step(state, now, walk.next_cost());
  }
  EXPECT_GT(full_seen, 100);
}

TEST_P(AlgorithmContract, CostZeroReportsWithoutStoring) {
  Walk walk(p(), 12, kSec);
  u64 state = 0;
  for (int i = 0; i < 3000; ++i) {
    const i64 now = walk.next_now();
    const AlgoOutcome out = algo_decide(p(), state, now, 0);
    ASSERT_FALSE(out.store) << show(out);
    step(state, now, walk.next_cost());
  }
}

TEST_P(AlgorithmContract, CostAboveCapacityIsCostTooHighWithoutStoring) {
  Walk walk(p(), 13, kSec);
  u64 state = 0;
  for (int i = 0; i < 2000; ++i) {
    const i64 now = walk.next_now();
    const Decision view = peek(p(), state, now);
    for (const u64 c : {cap() + 1, cap() + 1000, kU64Max}) {
      const AlgoOutcome out = algo_decide(p(), state, now, c);
      ASSERT_FALSE(out.decision.allowed);
      ASSERT_EQ(out.decision.reason, Reason::kCostTooHigh);
      ASSERT_EQ(out.decision.retry_after, Nanos::max());
      ASSERT_FALSE(out.store);
      ASSERT_EQ(out.decision.remaining, view.remaining);
      ASSERT_EQ(out.decision.reset_after, view.reset_after);
    }
    step(state, now, walk.next_cost());
  }
}

TEST_P(AlgorithmContract, FreshKeyAdmitsItsCapacityAtOnceThenDenies) {
  for (const i64 t0 : {i64{0}, 5 * period(), 5 * period() + period() / 2 + 3, 987'654'321'123}) {
    u64 state = 0;
    for (u64 i = 1; i <= cap(); ++i) {
      const Decision d = step(state, t0, 1).decision;
      ASSERT_TRUE(d.allowed) << "request " << i << " at " << t0;
      EXPECT_EQ(d.remaining, cap() - i);
    }
    const Decision denied = step(state, t0, 1).decision;
    EXPECT_FALSE(denied.allowed) << "at " << t0;
    EXPECT_EQ(denied.reason, Reason::kOk);
    EXPECT_EQ(denied.remaining, 0u);
    // The whole capacity in one request, too.
    u64 whole = 0;
    EXPECT_TRUE(step(whole, t0, cap()).decision.allowed);
    EXPECT_FALSE(step(whole, t0, 1).decision.allowed);
  }
}

TEST_P(AlgorithmContract, RetryAfterIsExactlyTheWaitUntilTheSameCostFits) {
  Walk walk(p(), 14, 7 * kSec + 5);
  u64 state = 0;
  int denied = 0;
  for (int i = 0; i < 4000; ++i) {
    const i64 now = walk.next_now();
    const u64 cost = walk.next_cost();
    const AlgoOutcome out = step(state, now, cost);  // `state` is now the state after
    const Decision& d = out.decision;
    if (d.allowed || d.reason != Reason::kOk) continue;
    ++denied;
    const i64 at = now + d.retry_after.count();
    ASSERT_TRUE(algo_decide(p(), state, at, cost).decision.allowed)
        << "cost " << cost << " at " << now << ": " << describe(d);
    ASSERT_FALSE(algo_decide(p(), state, at - 1, cost).decision.allowed)
        << "cost " << cost << " at " << now << ": " << describe(d);
  }
  EXPECT_GT(denied, 200);
}

TEST_P(AlgorithmContract, ResetAfterIsExactlyTheWaitUntilFull) {
  Walk walk(p(), 15, 2 * kSec);
  u64 state = 0;
  for (int i = 0; i < 4000; ++i) {
    const i64 now = walk.next_now();
    const Decision d = step(state, now, walk.next_cost()).decision;
    const i64 reset = d.reset_after.count();
    ASSERT_TRUE(algo_is_full(p(), state, now + reset)) << "at " << now << ": " << describe(d);
    if (reset > 0) {
      ASSERT_FALSE(algo_is_full(p(), state, now + reset - 1))
          << "at " << now << ": " << describe(d);
    }
    ASSERT_EQ(reset == 0, algo_is_full(p(), state, now));
  }
}

TEST_P(AlgorithmContract, RemainingIsExactlyWhatTheNextRequestCanTake) {
  Walk walk(p(), 16, kSec);
  u64 state = 0;
  for (int i = 0; i < 4000; ++i) {
    const i64 now = walk.next_now();
    const u64 r = step(state, now, walk.next_cost()).decision.remaining;
    if (r > 0) {
      ASSERT_TRUE(algo_decide(p(), state, now, r).decision.allowed) << "remaining " << r;
    }
    if (r < cap()) {
      ASSERT_FALSE(algo_decide(p(), state, now, r + 1).decision.allowed) << "remaining " << r;
    }
  }
}

TEST_P(AlgorithmContract, OlderReadingsNeverAdmitMoreAndNeverRefund) {
  // Readings from several processes arrive slightly out of order: each
  // step's `now` is up to two periods behind the latest reading so far.
  Walk walk(p(), 17, 50 * kSec);
  u64 state = 0;
  i64 latest = 0;
  int older = 0;
  for (int i = 0; i < 3000; ++i) {
    latest = std::max(latest, walk.next_now());
    const u64 r = walk.rng()() % 4;
    const i64 lag =
        r == 0 ? 0
               : static_cast<i64>(walk.rng()() % static_cast<u64>(r == 1 ? 2 * period() : 1000));
    const i64 now = latest - lag;
    const u64 cost = walk.next_cost();
    // Never more permissive than the same state at the latest reading.
    const AlgoOutcome late = algo_decide(p(), state, now, cost);
    const AlgoOutcome current = algo_decide(p(), state, latest, cost);
    if (late.decision.allowed) {
      ASSERT_TRUE(current.decision.allowed) << "admitted at " << now << ", not at " << latest;
    }
    ASSERT_LE(peek(p(), state, now).remaining, peek(p(), state, latest).remaining);
    if (algo_is_full(p(), state, now)) {
      ASSERT_TRUE(algo_is_full(p(), state, latest));
    }
    // Never a refund: from the latest reading on, the state after the
    // decision is nowhere more permissive than the state before it.
    const u64 before = state;
    step(state, now, cost);
    if (lag > 0) ++older;
    for (const i64 t : {latest, latest + 1, latest + period() / 2, latest + period(),
                        latest + 2 * period() + 1, latest + 3 * period()}) {
      ASSERT_LE(peek(p(), state, t).remaining, peek(p(), before, t).remaining)
          << "step " << i << " at " << now << " (latest " << latest << ") probe " << t;
      if (algo_is_full(p(), state, t)) {
        ASSERT_TRUE(algo_is_full(p(), before, t)) << "step " << i << " probe " << t;
      }
    }
  }
  EXPECT_GT(older, 1000);
}

TEST_P(AlgorithmContract, RefundNeverExceedsTheCapacityNorTakesAnything) {
  Walk walk(p(), 18, kSec);
  u64 state = 0;
  for (int i = 0; i < 3000; ++i) {
    const i64 now = walk.next_now();
    step(state, now, walk.next_cost());
    const u64 k = walk.rng()() % 3 == 0 ? kU64Max : walk.rng()() % (cap() + 2);
    const Decision before = peek(p(), state, now);
    const AlgoOutcome out = algo_refund(p(), state, now, k);
    const u64 after_state = out.store ? out.new_state : state;
    ASSERT_LE(after_state, kPayloadMax);
    const Decision after = peek(p(), after_state, now);
    ASSERT_TRUE(same(out.decision, after))
        << "refund reports " << describe(out.decision) << ", peek " << describe(after);
    ASSERT_LE(after.remaining, cap());
    ASSERT_GE(after.remaining, before.remaining);
    if (k != kU64Max) {
      ASSERT_LE(after.remaining, before.remaining + k);
    }
    ASSERT_LE(after.reset_after, before.reset_after);
    if (k == 0) {
      ASSERT_FALSE(out.store);
    }
    // A second refund of everything finds nothing more to give back once
    // the first gave back everything.
    if (k == kU64Max) {
      ASSERT_FALSE(algo_refund(p(), after_state, now, kU64Max).store);
    }
    if (walk.rng()() % 2 == 0) state = after_state;
  }
}

// ---------------------------------------------------------------------------
// The documented admission bound of each algorithm, checked on the log of
// a random walk's admissions. Every check here is written from
// doc/algorithms.md, not from the code.
struct Admission {
  i64 t;
  u64 cost;
};

// Every attempt of a walk (cost >= 1, decided by the algorithm).
struct Attempt {
  i64 t;
  u64 cost;
  bool allowed;
};

// The quiet period's bound: (a) once an attempt is denied at d, nothing is
// admitted before d + period; (b) an admission after more than
// period + 1 ms without any attempt starts a new period (the last expiry
// has passed), and that period admits at most `count`, for at least `period`.
void check_quiet_bound(const AlgoParams& p, const std::vector<Attempt>& attempts) {
  const auto P = static_cast<i64>(p.period_ns);
  i64 last_denial = std::numeric_limits<i64>::min() / 2;
  for (std::size_t i = 0; i < attempts.size(); ++i) {
    const Attempt& a = attempts[i];
    if (!a.allowed) {
      last_denial = a.t;
      continue;
    }
    ASSERT_GE(a.t, last_denial + P) << "admitted " << a.t - last_denial << " ns after a denial";
    const bool idle_before = i == 0 || a.t - attempts[i - 1].t > P + kMs;
    if (!idle_before) continue;
    u64 sum = 0;
    for (std::size_t j = i; j < attempts.size() && attempts[j].t < a.t + P; ++j) {
      if (attempts[j].allowed) sum += attempts[j].cost;
    }
    ASSERT_LE(sum, p.count) << "period starting at " << a.t;
  }
}

void check_bound(const AlgoParams& p, const std::vector<Admission>& log) {
  const auto P = static_cast<i64>(p.period_ns);
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket: {
      // Over [a, b]: at most B + floor((b - a) / T).
      const auto T = static_cast<i64>(p.emission_ns);
      for (std::size_t i = 0; i < log.size(); ++i) {
        u64 sum = 0;
        for (std::size_t j = i; j < log.size(); ++j) {
          sum += log[j].cost;
          const auto bound = p.burst + static_cast<u64>((log[j].t - log[i].t) / T);
          ASSERT_LE(sum, bound) << "admissions " << i << ".." << j;
        }
      }
      return;
    }
    case Algorithm::kTokenBucket: {
      // Over [a, b]: at most burst + count * (refill boundaries in (a, b]).
      for (std::size_t i = 0; i < log.size(); ++i) {
        u64 sum = 0;
        for (std::size_t j = i; j < log.size(); ++j) {
          sum += log[j].cost;
          const auto boundaries = static_cast<u64>(log[j].t / P - log[i].t / P);
          ASSERT_LE(sum, p.burst + p.count * boundaries) << "admissions " << i << ".." << j;
        }
      }
      return;
    }
    case Algorithm::kFixedWindow: {
      std::map<i64, u64> per_window;
      for (const Admission& a : log) per_window[a.t / P] += a.cost;
      for (const auto& [window, sum] : per_window) ASSERT_LE(sum, p.count) << "window " << window;
      return;
    }
    case Algorithm::kSlidingWindow: {
      // At every admission: prev * (W - e) / W + cur <= count, with prev and
      // cur counted from the log, cur including the admission itself.
      std::map<i64, u64> per_window;
      for (const Admission& a : log) {
        per_window[a.t / P] += a.cost;
        const i64 k = a.t / P;
        const i64 e = a.t - k * P;
        const __uint128_t prev = per_window.count(k - 1) != 0 ? per_window[k - 1] : 0;
        const __uint128_t weighted =
            prev * static_cast<u64>(P - e) + __uint128_t{per_window[k]} * static_cast<u64>(P);
        ASSERT_TRUE(weighted <= __uint128_t{p.count} * static_cast<u64>(P))
            << "admission at " << a.t;
      }
      return;
    }
    case Algorithm::kQuietPeriod:
      return;  // check_quiet_bound, which needs the denials too
    case Algorithm::kConcurrency:
    case Algorithm::kSlidingLog:
      return;  // not decided from the word alone: lease_test.cpp, sliding_log_test.cpp
  }
}

TEST_P(AlgorithmContract, RandomWalksStayWithinTheDocumentedBound) {
  for (const std::uint64_t seed : {21u, 22u, 23u}) {
    Walk walk(p(), seed, 3 * kSec + 1);
    u64 state = 0;
    std::vector<Admission> log;
    std::vector<Attempt> attempts;
    u64 admitted = 0;
    for (int i = 0; i < 2500; ++i) {
      const i64 now = walk.next_now();
      const u64 cost = walk.next_cost();
      const Decision d = step(state, now, cost).decision;
      if (cost > 0 && d.reason == Reason::kOk) attempts.push_back({now, cost, d.allowed});
      if (d.allowed && cost > 0) {
        log.push_back({now, cost});
        admitted += cost;
      }
    }
    check_bound(p(), log);
    if (p().algorithm == Algorithm::kQuietPeriod) check_quiet_bound(p(), attempts);
    EXPECT_GT(admitted, 250u) << "seed " << seed;  // the bound was exercised
  }
}

TEST_P(AlgorithmContract, StatesStayInThePayloadUpToAndPastTheHorizon) {
  const i64 edge = kClockHorizonNs - algo_horizon_margin(p());
  ASSERT_GT(edge, 0);
  Walk walk(p(), 24, edge - 20 * period());
  u64 state = 0;
  for (int i = 0; i < 3000; ++i) {
    const i64 now = walk.next_now();
    step(state, now, walk.next_cost());
    ASSERT_LE(state, kPayloadMax);
    const AlgoOutcome r = algo_refund(p(), state, now, 1);
    ASSERT_LE(r.new_state, kPayloadMax);
  }
  // Readings past the horizon (the limiter refuses them first) and absurd
  // ones are clamped, never overflow.
  for (const i64 now : {edge, edge + 1, kClockHorizonNs, kClockHorizonNs + 1, kI64Max}) {
    for (const u64 s : {u64{0}, state, kPayloadMax, kU64Max}) {
      const AlgoOutcome out = algo_decide(p(), s, now, 1);
      if (out.store) {
        ASSERT_LE(out.new_state, kPayloadMax) << "now " << now;
      }
      ASSERT_LE(algo_refund(p(), s, now, 1).new_state, kPayloadMax);
      (void)algo_is_full(p(), s, now);
    }
  }
}

TEST_P(AlgorithmContract, NegativeNowCountsAsZero) {
  Walk walk(p(), 25, 0);
  u64 state = 0;
  for (int i = 0; i < 200; ++i) {
    const u64 cost = walk.next_cost();
    for (const i64 neg : {i64{-1}, i64{-kSec}, std::numeric_limits<i64>::min()}) {
      const AlgoOutcome a = algo_decide(p(), state, neg, cost);
      const AlgoOutcome b = algo_decide(p(), state, 0, cost);
      ASSERT_TRUE(same(a.decision, b.decision) && a.store == b.store && a.new_state == b.new_state);
    }
    step(state, 0, cost);
  }
}

TEST_P(AlgorithmContract, HorizonMarginCoversEveryStoredState) {
  // algo_horizon_margin: the longest span a stored state points past now.
  const i64 margin = algo_horizon_margin(p());
  ASSERT_GE(margin, 0);
  Walk walk(p(), 26, kSec);
  u64 state = 0;
  for (int i = 0; i < 2000; ++i) {
    const i64 now = walk.next_now();
    step(state, now, walk.next_cost());
    // The state's own clock (TAT, expiry) never lies beyond now + margin.
    switch (p().algorithm) {
      case Algorithm::kGcra:
      case Algorithm::kLeakyBucket:
        ASSERT_LE(static_cast<i64>(state), now + margin);
        break;
      case Algorithm::kQuietPeriod:
        ASSERT_LE(static_cast<i64>((state >> 19) * kMs), now + margin);
        break;
      default:  // window indices: floor(now / period), never past now
        ASSERT_EQ(margin, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryAlgorithm, AlgorithmContract, ::testing::ValuesIn(all_variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return info.param.name;
                         });

// ===========================================================================
// Tables: one row = (params, state, now, cost) -> every output.
struct Row {
  const char* name;
  AlgoParams p;
  u64 state;
  i64 now;
  u64 cost;
  // expected
  bool allowed;
  u64 remaining;
  i64 retry_after;  // kMaxRetry = Nanos::max()
  i64 reset_after;
  Reason reason;
  bool store;
  u64 new_state;  // checked only when store
  friend void PrintTo(const Row& r, std::ostream* os) { *os << r.name; }
};

void expect_row(const Row& r, const AlgoOutcome& out) {
  const Decision& d = out.decision;
  SCOPED_TRACE(show(out));
  EXPECT_EQ(d.allowed, r.allowed);
  EXPECT_EQ(d.limit, r.reason == Reason::kCorrupt ? 0 : capacity(r.p));
  EXPECT_EQ(d.remaining, r.remaining);
  EXPECT_EQ(d.retry_after, r.retry_after == kMaxRetry ? Nanos::max() : Nanos(r.retry_after));
  EXPECT_EQ(d.reset_after, Nanos(r.reset_after));
  EXPECT_EQ(d.reason, r.reason);
  EXPECT_EQ(out.store, r.store);
  if (r.store) {
    EXPECT_EQ(out.new_state, r.new_state);
  }
}

auto row_name = [](const ::testing::TestParamInfo<Row>& info) {
  return std::string(info.param.name);
};

class DecideTable : public ::testing::TestWithParam<Row> {};
TEST_P(DecideTable, MatchesTheDocumentedSemantics) {
  expect_row(GetParam(),
             algo_decide(GetParam().p, GetParam().state, GetParam().now, GetParam().cost));
}

class RefundTable : public ::testing::TestWithParam<Row> {};
TEST_P(RefundTable, GivesBackWithoutPassingTheCapacity) {
  expect_row(GetParam(),
             algo_refund(GetParam().p, GetParam().state, GetParam().now, GetParam().cost));
}

constexpr Reason kOk = Reason::kOk;
constexpr Reason kHigh = Reason::kCostTooHigh;

// --- token bucket: burst 10, +5 at every whole second (q2_sdk: max_tokens 10,
// refill_amount 5, refill_period 1 s).
const AlgoParams kTb = make(Algorithm::kTokenBucket, 5, kSec, 10);
const AlgoParams kTbBig = make(Algorithm::kTokenBucket, 5, 2 * kMs, 2);  // refill > burst
INSTANTIATE_TEST_SUITE_P(
    TokenBucket, DecideTable,
    ::testing::Values(
        // name, p, state, now, cost -> allowed, remaining, retry, reset, reason, store, new
        Row{"FreshTakesOne", kTb, 0, 0, 1, true, 9, 0, kSec, kOk, true, tb(0, 1)},
        Row{"FreshTakesAllTen", kTb, 0, 300 * kMs, 10, true, 0, 0, 1700 * kMs, kOk, true,
            tb(0, 10)},
        Row{"EmptyDeniesUntilNextBoundary", kTb, tb(0, 10), 300 * kMs, 1, false, 0, 700 * kMs,
            1700 * kMs, kOk, false, 0},
        Row{"OneNsBeforeTheBoundary", kTb, tb(0, 10), kSec - 1, 1, false, 0, 1, kSec + 1, kOk,
            false, 0},
        Row{"AtTheBoundaryExactlyFiveMore", kTb, tb(0, 10), kSec, 5, true, 0, 0, 2 * kSec, kOk,
            true, tb(1, 10)},
        Row{"AtTheBoundaryNotSix", kTb, tb(0, 10), kSec, 6, false, 5, kSec, kSec, kOk, false, 0},
        Row{"NeedMoreThanOneRefill", kTb, tb(0, 10), 0, 7, false, 0, 2 * kSec, 2 * kSec, kOk, false,
            0},
        Row{"LongIdleRefillsToBurstOnly", kTb, tb(0, 10), 5 * kSec, 10, true, 0, 0, 2 * kSec, kOk,
            true, tb(5, 10)},
        Row{"PeekPartial", kTb, tb(0, 4), 500 * kMs, 0, true, 6, 0, 500 * kMs, kOk, false, 0},
        Row{"CostAboveBurst", kTb, 0, 0, 11, false, 10, kMaxRetry, 0, kHigh, false, 0},
        Row{"CostAboveBurstPartial", kTb, tb(3, 6), 3500 * kMs, 11, false, 4, kMaxRetry, 1500 * kMs,
            kHigh, false, 0},
        // An older reading (index 5 < stored 7) counts at index 7: no refill.
        Row{"OlderReadingGetsNoRefill", kTb, tb(7, 3), 5 * kSec, 8, false, 7, 3 * kSec, 3 * kSec,
            kOk, false, 0},
        Row{"OlderReadingChargesTheStoredIndex", kTb, tb(7, 3), 5 * kSec, 7, true, 0, 0, 4 * kSec,
            kOk, true, tb(7, 10)},
        // A full state is an absent key: its index does not matter.
        Row{"FullStateWithLaterIndexIsAbsent", kTb, tb(7, 0), 5 * kSec, 1, true, 9, 0, kSec, kOk,
            true, tb(5, 1)},
        // The burst shrank below what the state misses: even a peek waits
        // for the refill that brings it back within the burst.
        Row{"MissingAboveBurst", kTb, tb(0, 15), 0, 0, false, 0, kSec, 3 * kSec, kOk, false, 0},
        Row{"RefillAboveBurstSaturates", kTbBig, tb(0, 2), 2 * kMs, 2, true, 0, 0, 2 * kMs, kOk,
            true, tb(1, 2)}),
    row_name);

// --- fixed window: 10 per second, windows [k s, (k+1) s).
const AlgoParams kFw = make(Algorithm::kFixedWindow, 10, kSec);
INSTANTIATE_TEST_SUITE_P(
    FixedWindow, DecideTable,
    ::testing::Values(
        Row{"FreshTakesOne", kFw, 0, 2500 * kMs, 1, true, 9, 0, 500 * kMs, kOk, true, fw(2, 1)},
        Row{"FullWindowDeniesUntilItsEnd", kFw, fw(2, 10), 2500 * kMs, 1, false, 0, 500 * kMs,
            500 * kMs, kOk, false, 0},
        Row{"NextWindowTakesAllAgain", kFw, fw(2, 10), 3 * kSec, 10, true, 0, 0, kSec, kOk, true,
            fw(3, 10)},
        Row{"WeightedDoesNotFit", kFw, fw(2, 7), 2900 * kMs, 4, false, 3, 100 * kMs, 100 * kMs, kOk,
            false, 0},
        Row{"WeightedFitsExactly", kFw, fw(2, 7), 2900 * kMs, 3, true, 0, 0, 100 * kMs, kOk, true,
            fw(2, 10)},
        Row{"PeekPartial", kFw, fw(2, 7), 2900 * kMs, 0, true, 3, 0, 100 * kMs, kOk, false, 0},
        Row{"OldWindowIsForgotten", kFw, fw(1, 10), 2 * kSec, 1, true, 9, 0, kSec, kOk, true,
            fw(2, 1)},
        // An older reading counts in the stored (later) window: no refund.
        Row{"OlderReadingCountsInStoredWindow", kFw, fw(3, 5), 2900 * kMs, 5, true, 0, 0,
            1100 * kMs, kOk, true, fw(3, 10)},
        Row{"OlderReadingDeniedUntilStoredWindowEnds", kFw, fw(3, 5), 2900 * kMs, 6, false, 5,
            1100 * kMs, 1100 * kMs, kOk, false, 0},
        Row{"EmptyStateWithLaterIndexIsAbsent", kFw, fw(3, 0), 2900 * kMs, 1, true, 9, 0, 100 * kMs,
            kOk, true, fw(2, 1)},
        Row{"CostAboveCount", kFw, fw(2, 4), 2500 * kMs, 11, false, 6, kMaxRetry, 500 * kMs, kHigh,
            false, 0},
        // The count shrank below what the window used: even a peek waits.
        Row{"UsedAboveCountAfterShrink", kFw, fw(2, 12), 2500 * kMs, 0, false, 0, 500 * kMs,
            500 * kMs, kOk, false, 0}),
    row_name);

// --- sliding window counter: 10 per 1 s window. estimate = prev*(W-e)/W + cur.
const AlgoParams kSw = make(Algorithm::kSlidingWindow, 10, kSec);
const AlgoParams kSwLong =
    make(Algorithm::kSlidingWindow, 7, 10 * kSec);  // 2^24 windows outlast the horizon
constexpr i64 kWrap = i64{1} << 24;                 // windows before the index wraps
INSTANTIATE_TEST_SUITE_P(
    SlidingWindow, DecideTable,
    ::testing::Values(
        // prev 10 of 10, 25% into window 4: 10 * 0.75 = 7.5, so 2 more fit.
        Row{"QuarterIntoWindowFirstOfTwo", kSw, sw(4, 10, 0), 4250 * kMs, 1, true, 1, 0, 1750 * kMs,
            kOk, true, sw(4, 10, 1)},
        Row{"QuarterIntoWindowSecondOfTwo", kSw, sw(4, 10, 1), 4250 * kMs, 1, true, 0, 0,
            1750 * kMs, kOk, true, sw(4, 10, 2)},
        // 7.5 + 3 > 10. Fits when 10 * (W - e') <= 7 W: e' = 0.3 W, 50 ms on.
        Row{"QuarterIntoWindowThirdDenied", kSw, sw(4, 10, 2), 4250 * kMs, 1, false, 0, 50 * kMs,
            1750 * kMs, kOk, false, 0},
        Row{"PeekWithPrevOnly", kSw, sw(4, 10, 0), 4250 * kMs, 0, true, 2, 0, 750 * kMs, kOk, false,
            0},
        Row{"HalfIntoWindow", kSw, sw(4, 6, 0), 4500 * kMs, 7, true, 0, 0, 1500 * kMs, kOk, true,
            sw(4, 6, 7)},
        // The stored window is the previous one: its cur becomes prev.
        Row{"PreviousWindowShifts", kSw, sw(3, 0, 10), 4250 * kMs, 1, true, 1, 0, 1750 * kMs, kOk,
            true, sw(4, 10, 1)},
        Row{"TwoWindowsAgoIsForgotten", kSw, sw(2, 10, 10), 4250 * kMs, 1, true, 9, 0, 1750 * kMs,
            kOk, true, sw(4, 0, 1)},
        // cur + cost > count: wait into window 5, where prev = 9:
        // 9 * (W - e') <= 8 W  ->  e' = W - floor(8 W / 9) = 111111112 ns.
        Row{"RetryIntoTheNextWindow", kSw, sw(4, 3, 9), 4500 * kMs, 2, false, 0,
            500 * kMs + 111'111'112, 1500 * kMs, kOk, false, 0},
        Row{"CostAboveCount", kSw, 0, 4500 * kMs, 11, false, 10, kMaxRetry, 0, kHigh, false, 0},
        // An older reading (window 4) meets a state of window 5: taken at the
        // start of window 5, its most conservative instant.
        Row{"OlderReadingTakenAtStoredWindowStart", kSw, sw(5, 4, 3), 4900 * kMs, 3, true, 0, 0,
            2100 * kMs, kOk, true, sw(5, 4, 6)},
        Row{"OlderReadingDenied", kSw, sw(5, 4, 3), 4900 * kMs, 4, false, 3, 350 * kMs, 2100 * kMs,
            kOk, false, 0},
        Row{"EmptyCountersAreAbsent", kSw, sw(9, 0, 0), 4900 * kMs, 1, true, 9, 0, 1100 * kMs, kOk,
            true, sw(4, 0, 1)},
        // The index is stored mod 2^24: window 2^24 + 4 reads window 4's state.
        Row{"IndexModulo2To24SameWindow", kSw, sw(4, 10, 0), (kWrap + 4) * kSec + 250 * kMs, 1,
            true, 1, 0, 1750 * kMs, kOk, true, sw(kWrap + 4, 10, 1)},
        Row{"IndexModulo2To24Shift", kSw, sw(kWrap + 3, 0, 10), (kWrap + 4) * kSec + 250 * kMs, 1,
            true, 1, 0, 1750 * kMs, kOk, true, sw(4, 10, 1)},
        // Documented limitation: a key idle for 2^24 - 3 windows reads as 3
        // windows ahead (within the 10 s lag tolerance): conservative.
        Row{"IdleJustUnderTheWrapReadsConservatively", kSw, sw(7, 10, 0), 4250 * kMs, 1, false, 0,
            2850 * kMs, 3750 * kMs, kOk, false, 0},
        // With 10 s windows the index never wraps: the stored window is exact.
        Row{"LongWindowOlderReadingFarBehind", kSwLong, sw(5, 0, 7), 15 * kSec, 1, false, 0,
            46'428'571'429, 55 * kSec, kOk, false, 0},
        Row{"LongWindowStaleStateForgotten", kSwLong, sw(1, 7, 7), 55 * kSec, 7, true, 0, 0,
            15 * kSec, kOk, true, sw(5, 0, 7)}),
    row_name);

// --- quiet period: 1 per minute (Redis strict limiter).
const AlgoParams kQp = make(Algorithm::kQuietPeriod, 1, kMinute);
const AlgoParams kQp3 = make(Algorithm::kQuietPeriod, 3, kSec);
INSTANTIATE_TEST_SUITE_P(
    QuietPeriod, DecideTable,
    ::testing::Values(
        Row{"FreshStartsThePeriod", kQp, 0, 0, 1, true, 0, 0, kMinute, kOk, true, qp(60'000, 1)},
        // Denied at 30 s: the period restarts (expires 90 s), the key blocks.
        Row{"DenialRestartsThePeriod", kQp, qp(60'000, 1), 30 * kSec, 1, false, 0, kMinute, kMinute,
            kOk, true, qp(90'000, kBlocked)},
        Row{"BlockedDenialRestartsAgain", kQp, qp(90'000, kBlocked), 89 * kSec, 1, false, 0,
            kMinute, kMinute, kOk, true, qp(149'000, kBlocked)},
        Row{"OneNsBeforeTheQuietPeriodEnds", kQp, qp(149'000, kBlocked), 149 * kSec - 1, 1, false,
            0, kMinute + 1, kMinute + 1, kOk, true, qp(209'000, kBlocked)},
        Row{"QuietForAWholePeriodAdmits", kQp, qp(149'000, kBlocked), 149 * kSec, 1, true, 0, 0,
            kMinute, kOk, true, qp(209'000, 1)},
        Row{"PeekOnBlockedChangesNothing", kQp, qp(149'000, kBlocked), 100 * kSec, 0, false, 0,
            49 * kSec, 49 * kSec, kOk, false, 0},
        // Expiries are whole ms, rounded up: never shorter than asked.
        Row{"ExpiryRoundsUpToAMillisecond", kQp, 0, 1'500'000, 1, true, 0, 0, kMinute + 500'000,
            kOk, true, qp(60'002, 1)},
        Row{"WithinTheLimit", kQp3, qp(1'000, 2), 500 * kMs, 1, true, 0, 0, 500 * kMs, kOk, true,
            qp(1'000, 3)},
        // 2 + 2 > 3: over the limit, even though 1 more would fit (Redis INCRBY).
        Row{"WeightedOverTheLimitBlocks", kQp3, qp(1'000, 2), 500 * kMs, 2, false, 0, kSec, kSec,
            kOk, true, qp(1'500, kBlocked)},
        // An older reading never shortens a restart.
        Row{"OlderReadingKeepsTheLaterExpiry", kQp3, qp(1'500, kBlocked), 200 * kMs, 1, false, 0,
            1300 * kMs, 1300 * kMs, kOk, false, 0},
        Row{"CostAboveCountDoesNotRestart", kQp3, qp(1'000, 2), 500 * kMs, 4, false, 1, kMaxRetry,
            500 * kMs, kHigh, false, 0},
        Row{"NothingUsedIsAbsent", kQp3, qp(1'000, 0), 500 * kMs, 1, true, 2, 0, kSec, kOk, true,
            qp(1'500, 1)}),
    row_name);

// --- leaky bucket: drains 1 unit per 10 ns, holds 5 (50 ns of water).
// State = when the bucket will be empty. level = max(empty_at - now, 0).
const AlgoParams kLb = [] {
  AlgoParams p = make(Algorithm::kLeakyBucket, 1, 10, 5);
  return p;
}();
INSTANTIATE_TEST_SUITE_P(
    LeakyBucket, DecideTable,
    ::testing::Values(
        Row{"EmptyBucketTakesOne", kLb, 0, 1000, 1, true, 4, 0, 10, kOk, true, 1010},
        Row{"EmptyBucketTakesFive", kLb, 0, 1000, 5, true, 0, 0, 50, kOk, true, 1050},
        Row{"FullBucketOverflows", kLb, 1050, 1000, 1, false, 0, 10, 50, kOk, false, 0},
        Row{"OneDrainLater", kLb, 1050, 1010, 1, true, 0, 0, 50, kOk, true, 1060},
        Row{"LevelRoundsDownToWholeUnits", kLb, 1015, 1000, 1, true, 2, 0, 25, kOk, true, 1025},
        Row{"OverfilledByALaterReading", kLb, 2010, 1000, 1, false, 0, 970, 1010, kOk, false, 0},
        Row{"CostAboveCapacity", kLb, 1030, 1000, 6, false, 2, kMaxRetry, 30, kHigh, false, 0}),
    row_name);

const AlgoParams kGc = make(Algorithm::kGcra, 1, 10, 5);
INSTANTIATE_TEST_SUITE_P(Gcra, DecideTable,
                         ::testing::Values(Row{"DelegatesToGcraDecide", kGc, 1030, 1000, 2, true, 0,
                                               0, 50, kOk, true, 1050},
                                           Row{"DelegatedDenial", kGc, 1030, 1000, 3, false, 2, 10,
                                               30, kOk, false, 0}),
                         row_name);

// Invalid parameters never divide: a kCorrupt denial, nothing stored.
INSTANTIATE_TEST_SUITE_P(
    Unusable, DecideTable,
    ::testing::Values(Row{"ZeroPeriodWindow", make(Algorithm::kFixedWindow, 10, 0), 5, 1000, 1,
                          false, 0, 0, 0, Reason::kCorrupt, false, 0},
                      Row{"ZeroCountSliding", AlgoParams{Algorithm::kSlidingWindow, 0, 1, 0, 0}, 5,
                          1000, 1, false, 0, 0, 0, Reason::kCorrupt, false, 0},
                      Row{"ZeroEmissionGcra", AlgoParams{Algorithm::kGcra, 1, 1, 1, 0}, 5, 1000, 1,
                          false, 0, 0, 0, Reason::kCorrupt, false, 0},
                      Row{"UnknownAlgorithm",
                          AlgoParams{static_cast<Algorithm>(99), 1, kSec, 1, kSec}, 5, 1000, 1,
                          false, 0, 0, 0, Reason::kCorrupt, false, 0}),
    [](const ::testing::TestParamInfo<Row>& info) { return std::string(info.param.name); });

// --- refunds: the decision is a peek at the state after the refund.
INSTANTIATE_TEST_SUITE_P(
    Every, RefundTable,
    ::testing::Values(
        Row{"GcraGivesBackIntervals", kGc, 1050, 1000, 2, true, 2, 0, 30, kOk, true, 1030},
        Row{"GcraNeverPastFull", kGc, 1050, 1000, 10, true, 5, 0, 0, kOk, true, 1000},
        Row{"GcraFullIsNoOp", kGc, 900, 1000, 1, true, 5, 0, 0, kOk, false, 0},
        Row{"LeakyTakesWaterOut", kLb, 1050, 1000, 2, true, 2, 0, 30, kOk, true, 1030},
        Row{"LeakyNeverBelowEmpty", kLb, 1050, 1000, kU64Max, true, 5, 0, 0, kOk, true, 1000},
        Row{"TokenGivesBackTokens", kTb, tb(0, 10), 500 * kMs, 3, true, 3, 0, 1500 * kMs, kOk, true,
            tb(0, 7)},
        Row{"TokenNeverPastBurst", kTb, tb(0, 10), 500 * kMs, 20, true, 10, 0, 0, kOk, true,
            tb(0, 0)},
        Row{"TokenAfterARefill", kTb, tb(0, 10), 1500 * kMs, 3, true, 8, 0, 500 * kMs, kOk, true,
            tb(1, 2)},
        Row{"TokenFullIsNoOp", kTb, tb(0, 0), 500 * kMs, 1, true, 10, 0, 0, kOk, false, 0},
        Row{"FixedGivesBackInTheWindow", kFw, fw(2, 7), 2500 * kMs, 3, true, 6, 0, 500 * kMs, kOk,
            true, fw(2, 4)},
        Row{"FixedWindowOverIsNoOp", kFw, fw(2, 7), 3500 * kMs, 3, true, 10, 0, 0, kOk, false, 0},
        Row{"SlidingGivesBackCur", kSw, sw(4, 10, 2), 4250 * kMs, 1, true, 1, 0, 1750 * kMs, kOk,
            true, sw(4, 10, 1)},
        Row{"SlidingKeepsPrev", kSw, sw(4, 10, 2), 4250 * kMs, 5, true, 2, 0, 750 * kMs, kOk, true,
            sw(4, 10, 0)},
        Row{"QuietGivesBackUsed", kQp3, qp(1'000, 3), 500 * kMs, 1, true, 1, 0, 500 * kMs, kOk,
            true, qp(1'000, 2)},
        Row{"QuietToNothingIsFull", kQp3, qp(1'000, 3), 500 * kMs, 3, true, 3, 0, 0, kOk, true,
            qp(1'000, 0)},
        Row{"QuietBlockedStaysBlocked", kQp3, qp(1'500, kBlocked), 500 * kMs, 3, false, 0, kSec,
            kSec, kOk, false, 0},
        Row{"RefundOfZeroIsNoOp", kFw, fw(2, 7), 2500 * kMs, 0, true, 3, 0, 500 * kMs, kOk, false,
            0}),
    row_name);

// --- the tally (Limiter::tally; Python `limits`' fixed window): a counter in a
// quiet_period bucket, 3 per second: counts every call, the window starts at
// the first count, saturates at the count without blocking.
class TallyTable : public ::testing::TestWithParam<Row> {};
TEST_P(TallyTable, CountsLikeIncrbyWithExpireOnTheFirstHit) {
  expect_row(GetParam(), algo_tally(GetParam().p, GetParam().state, GetParam().now, GetParam().cost,
                                    /*restart=*/false));
}
class TallyRestartTable : public ::testing::TestWithParam<Row> {};
TEST_P(TallyRestartTable, MovesTheExpiryAtEveryCount) {
  expect_row(GetParam(), algo_tally(GetParam().p, GetParam().state, GetParam().now, GetParam().cost,
                                    /*restart=*/true));
}
INSTANTIATE_TEST_SUITE_P(
    QuietPeriod, TallyTable,
    ::testing::Values(Row{"FreshStartsTheWindow", kQp3, 0, 250 * kMs, 1, true, 2, 0, kSec, kOk,
                          true, qp(1'250, 1)},
                      Row{"CountsInTheWindowKeepingItsEnd", kQp3, qp(1'250, 1), 900 * kMs, 2, true,
                          0, 0, 350 * kMs, kOk, true, qp(1'250, 3)},
                      Row{"PastTheCountSaturatesWithoutBlocking", kQp3, qp(1'250, 3), 900 * kMs, 1,
                          false, 0, 350 * kMs, 350 * kMs, kOk, false, 0},
                      Row{"PartlyPastTheCountSaturates", kQp3, qp(1'250, 2), 900 * kMs, 2, false, 0,
                          350 * kMs, 350 * kMs, kOk, true, qp(1'250, 3)},
                      Row{"AmountAboveTheCountOnAFreshKey", kQp3, 0, 0, 5, false, 0, kSec, kSec,
                          kOk, true, qp(1'000, 3)},
                      Row{"ExpiredStartsANewWindow", kQp3, qp(1'250, 3), 1'250 * kMs, 1, true, 2, 0,
                          kSec, kOk, true, qp(2'250, 1)},
                      Row{"ExpiryRoundsUpToAMillisecond", kQp3, 0, 1'500'000, 1, true, 2, 0,
                          kSec + 500'000, kOk, true, qp(1'002, 1)},
                      Row{"BlockedKeyStaysBlocked", kQp3, qp(1'250, kBlocked), 900 * kMs, 1, false,
                          0, 350 * kMs, 350 * kMs, kOk, false, 0},
                      Row{"ZeroAmountReports", kQp3, qp(1'250, 2), 900 * kMs, 0, true, 1, 0,
                          350 * kMs, kOk, false, 0},
                      Row{"OtherAlgorithmIsRefused", kFw, 0, 0, 1, false, 0, 0, 0, Reason::kCorrupt,
                          false, 0}),
    row_name);
INSTANTIATE_TEST_SUITE_P(
    QuietPeriod, TallyRestartTable,
    ::testing::Values(Row{"FreshStartsTheWindow", kQp3, 0, 250 * kMs, 1, true, 2, 0, kSec, kOk,
                          true, qp(1'250, 1)},
                      Row{"EveryCountMovesTheEnd", kQp3, qp(1'250, 1), 900 * kMs, 1, true, 1, 0,
                          kSec, kOk, true, qp(1'900, 2)},
                      Row{"PastTheCountStillMovesTheEnd", kQp3, qp(1'250, 3), 900 * kMs, 1, false,
                          0, kSec, kSec, kOk, true, qp(1'900, 3)},
                      // A reading older than the one that set the end never brings it forward.
                      Row{"LateReadingNeverShortens", kQp3, qp(2'000, 1), 900 * kMs, 1, true, 1, 0,
                          1'100 * kMs, kOk, true, qp(2'000, 2)}),
    row_name);

// --- is_full rows.
struct FullRow {
  const char* name;
  AlgoParams p;
  u64 state;
  i64 now;
  bool full;
  friend void PrintTo(const FullRow& r, std::ostream* os) { *os << r.name; }
};
class IsFullTable : public ::testing::TestWithParam<FullRow> {};
TEST_P(IsFullTable, SaysWhenTheStateEqualsAnAbsentKey) {
  EXPECT_EQ(algo_is_full(GetParam().p, GetParam().state, GetParam().now), GetParam().full);
}
INSTANTIATE_TEST_SUITE_P(
    Every, IsFullTable,
    ::testing::Values(FullRow{"GcraTatPast", kGc, 10, 10, true},
                      FullRow{"GcraTatAhead", kGc, 11, 10, false},
                      FullRow{"LeakyEmpty", kLb, 10, 10, true},
                      FullRow{"LeakyNotEmpty", kLb, 11, 10, false},
                      FullRow{"TokenMissing", kTb, tb(3, 6), 4 * kSec, false},
                      FullRow{"TokenRefilled", kTb, tb(3, 6), 5 * kSec, true},
                      FullRow{"TokenLongIdle", kTb, tb(3, 6), 9 * kSec, true},
                      FullRow{"TokenOlderThanIndex", kTb, tb(3, 1), 2 * kSec, false},
                      FullRow{"FixedSameWindow", kFw, fw(2, 1), 2999 * kMs, false},
                      FullRow{"FixedNextWindow", kFw, fw(2, 1), 3 * kSec, true},
                      FullRow{"FixedNothingUsed", kFw, fw(2, 0), 2 * kSec, true},
                      FullRow{"SlidingPrevWeighs", kSw, sw(4, 0, 1), 5999 * kMs, false},
                      FullRow{"SlidingBothGone", kSw, sw(4, 0, 1), 6 * kSec, true},
                      FullRow{"QuietRunning", kQp3, qp(1'000, 1), 999'999'999, false},
                      FullRow{"QuietExpired", kQp3, qp(1'000, 1), kSec, true},
                      FullRow{"QuietBlocked", kQp3, qp(1'000, kBlocked), 500 * kMs, false},
                      FullRow{"QuietNothingUsed", kQp3, qp(1'000, 0), 500 * kMs, true}),
    [](const ::testing::TestParamInfo<FullRow>& info) { return std::string(info.param.name); });

// ===========================================================================
// Validity: each limit rejected with a sentence.
struct ValidRow {
  const char* name;
  AlgoParams p;
  const char* why;  // nullptr = valid; else a fragment of the sentence
  friend void PrintTo(const ValidRow& r, std::ostream* os) { *os << r.name; }
};
class ParamsValid : public ::testing::TestWithParam<ValidRow> {};
TEST_P(ParamsValid, AcceptsWhatFitsAndExplainsTheRest) {
  const ValidRow& r = GetParam();
  const char* why = nullptr;
  const bool valid = algo_params_valid(r.p, &why);
  EXPECT_EQ(valid, r.why == nullptr) << (why ? why : "(no reason)");
  if (r.why != nullptr) {
    ASSERT_NE(why, nullptr);
    EXPECT_NE(std::string(why).find(r.why), std::string::npos) << why;
  }
  EXPECT_EQ(algo_params_valid(r.p), valid);  // `why` is optional
}

using A = Algorithm;
constexpr i64 k55 = i64{1} << 55;
INSTANTIATE_TEST_SUITE_P(
    Limits, ParamsValid,
    ::testing::Values(
        ValidRow{"GcraOk", make(A::kGcra, 10, kSec), nullptr},
        ValidRow{"GcraZeroEmission", AlgoParams{A::kGcra, 10, kSec, 10, 0}, "emission interval"},
        ValidRow{"GcraZeroBurst", AlgoParams{A::kGcra, 10, kSec, 0, kSec / 10},
                 "burst must be at least 1"},
        ValidRow{"GcraTauTooLong", make(A::kGcra, 1, k55, 2), "2^55"},
        ValidRow{"LeakyTauTooLong", make(A::kLeakyBucket, 1, k55, 2), "2^55"},
        ValidRow{"LeakyOk", make(A::kLeakyBucket, 1, k55, 1), nullptr},
        ValidRow{"TokenOk", make(A::kTokenBucket, 5, 2 * kMs, (1 << 20) - 1), nullptr},
        ValidRow{"TokenBurst2To20", make(A::kTokenBucket, 5, kSec, 1 << 20), "1048575 tokens"},
        ValidRow{"TokenZeroBurst", AlgoParams{A::kTokenBucket, 5, kSec, 0, 0}, "burst"},
        ValidRow{"TokenZeroCount", AlgoParams{A::kTokenBucket, 0, kSec, 5, 0},
                 "count must be at least 1"},
        ValidRow{"TokenPeriodUnder2ms", make(A::kTokenBucket, 5, 2 * kMs - 1, 10), "at least 2 ms"},
        ValidRow{"TokenRefillAboveBurstOk", make(A::kTokenBucket, 1000, kSec, 3), nullptr},
        ValidRow{"TokenPeriodTooLong", make(A::kTokenBucket, 1, k55 + 1, 1), "2^55"},
        ValidRow{"FixedOk", make(A::kFixedWindow, (1 << 24) - 1, 20 * kMs), nullptr},
        ValidRow{"FixedCount2To24", make(A::kFixedWindow, 1 << 24, kSec), "16777215"},
        ValidRow{"FixedPeriodUnder20ms", make(A::kFixedWindow, 10, 20 * kMs - 1), "at least 20 ms"},
        ValidRow{"FixedZeroCount", AlgoParams{A::kFixedWindow, 0, kSec, 0, 0}, "at least 1"},
        ValidRow{"FixedLongestPeriodOk", make(A::kFixedWindow, 1, k55), nullptr},
        ValidRow{"SlidingOk", make(A::kSlidingWindow, 65535, kMs), nullptr},
        ValidRow{"SlidingCount2To16", make(A::kSlidingWindow, 65536, kSec), "65535"},
        ValidRow{"SlidingPeriodUnder1ms", make(A::kSlidingWindow, 10, kMs - 1), "at least 1 ms"},
        ValidRow{"QuietOk", make(A::kQuietPeriod, (1 << 19) - 2, kMs), nullptr},
        ValidRow{"QuietCountAtBlockedMarker", make(A::kQuietPeriod, (1 << 19) - 1, kSec), "524286"},
        ValidRow{"QuietPeriodUnder1ms", make(A::kQuietPeriod, 1, kMs - 1), "at least 1 ms"},
        ValidRow{"QuietPeriodTooLong", make(A::kQuietPeriod, 1, k55 + 1), "2^55"},
        ValidRow{"UnknownAlgorithm", AlgoParams{static_cast<A>(0), 1, kSec, 1, kSec},
                 "unknown algorithm"},
        ValidRow{"UnknownAlgorithm9", AlgoParams{static_cast<A>(9), 1, kSec, 1, kSec},
                 "unknown algorithm"}),
    [](const ::testing::TestParamInfo<ValidRow>& info) { return std::string(info.param.name); });

// Every index a valid window policy can meet within the horizon fits its field.
TEST(AlgorithmLimits, WindowIndicesOfTheWholeHorizonFitTheirFields) {
  EXPECT_LT(static_cast<u64>(kClockHorizonNs) / (2 * kMs), u64{1} << 36);   // token bucket
  EXPECT_LT(static_cast<u64>(kClockHorizonNs) / (20 * kMs), u64{1} << 32);  // fixed window
  EXPECT_LT(static_cast<u64>(kClockHorizonNs) / kMs + 1, u64{1} << 37);  // quiet period expiry (ms)
  // A fixed window of 20 ms at the very horizon stores index < 2^32.
  const AlgoParams p = make(A::kFixedWindow, 3, 20 * kMs);
  const AlgoOutcome out = algo_decide(p, 0, kClockHorizonNs, 1);
  ASSERT_TRUE(out.store);
  EXPECT_EQ(out.new_state >> 24, static_cast<u64>(kClockHorizonNs / (20 * kMs)));
}

struct MarginRow {
  const char* name;
  AlgoParams p;
  i64 margin;
  friend void PrintTo(const MarginRow& r, std::ostream* os) { *os << r.name; }
};
class HorizonMargin : public ::testing::TestWithParam<MarginRow> {};
TEST_P(HorizonMargin, IsTheLongestSpanAStatePointsPastNow) {
  EXPECT_EQ(algo_horizon_margin(GetParam().p), GetParam().margin);
}
INSTANTIATE_TEST_SUITE_P(
    Every, HorizonMargin,
    ::testing::Values(
        MarginRow{"GcraBurstTimesEmission", make(A::kGcra, 10, kSec, 20), 2 * kSec},
        MarginRow{"LeakySame", make(A::kLeakyBucket, 3, kSec, 7), i64{7} * 333'333'334},
        MarginRow{"TokenIndexNeverAhead", make(A::kTokenBucket, 5, kSec, 10), 0},
        MarginRow{"FixedIndexNeverAhead", make(A::kFixedWindow, 5, kSec), 0},
        MarginRow{"SlidingIndexNeverAhead", make(A::kSlidingWindow, 5, kSec), 0},
        MarginRow{"QuietPeriodPlusAMillisecond", make(A::kQuietPeriod, 5, kMinute), kMinute + kMs},
        MarginRow{"UnknownRefusesEverything", AlgoParams{static_cast<A>(9), 1, 1, 1, 1},
                  kClockHorizonNs},
        MarginRow{"AbsurdGcraSaturates", AlgoParams{A::kGcra, 1, 1, kU64Max, kU64Max},
                  kClockHorizonNs}),
    [](const ::testing::TestParamInfo<MarginRow>& info) { return std::string(info.param.name); });

// ===========================================================================
// Names.
struct NameRow {
  const char* text;
  Algorithm algorithm;
};
class AlgorithmNames : public ::testing::TestWithParam<NameRow> {};
TEST_P(AlgorithmNames, ParseAcceptsTheNameAndItsDashedSpelling) {
  EXPECT_EQ(parse_algorithm(GetParam().text), GetParam().algorithm);
}
TEST_P(AlgorithmNames, ToStringRoundTrips) {
  const Algorithm a = GetParam().algorithm;
  EXPECT_EQ(parse_algorithm(to_string(a)), a);
}
INSTANTIATE_TEST_SUITE_P(Every, AlgorithmNames,
                         ::testing::Values(NameRow{"gcra", A::kGcra},
                                           NameRow{"token_bucket", A::kTokenBucket},
                                           NameRow{"token-bucket", A::kTokenBucket},
                                           NameRow{"fixed_window", A::kFixedWindow},
                                           NameRow{"fixed-window", A::kFixedWindow},
                                           NameRow{"sliding_window", A::kSlidingWindow},
                                           NameRow{"sliding-window", A::kSlidingWindow},
                                           NameRow{"quiet_period", A::kQuietPeriod},
                                           NameRow{"quiet-period", A::kQuietPeriod},
                                           NameRow{"leaky_bucket", A::kLeakyBucket},
                                           NameRow{"leaky-bucket", A::kLeakyBucket}));

TEST(AlgorithmNames, ToStringSpellsEveryAlgorithm) {
  EXPECT_EQ(to_string(A::kGcra), "gcra");
  EXPECT_EQ(to_string(A::kTokenBucket), "token_bucket");
  EXPECT_EQ(to_string(A::kFixedWindow), "fixed_window");
  EXPECT_EQ(to_string(A::kSlidingWindow), "sliding_window");
  EXPECT_EQ(to_string(A::kQuietPeriod), "quiet_period");
  EXPECT_EQ(to_string(A::kLeakyBucket), "leaky_bucket");
  EXPECT_EQ(to_string(static_cast<A>(0)), "unknown");
  EXPECT_EQ(to_string(static_cast<A>(200)), "unknown");
}

TEST(AlgorithmNames, UnknownNameThrowsListingTheKnownOnes) {
  try {
    parse_algorithm("x");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_STREQ(
        e.what(),
        "unknown algorithm \"x\" (expected gcra, token_bucket, fixed_window, sliding_window, "
        "quiet_period, leaky_bucket, concurrency, sliding_log)");
  }
  for (const char* bad : {"", "GCRA", "token bucket", "gcra_", "_gcra", "tokenbucket",
                          "leaky_bucket\n", "fixed_windows", "-"}) {
    EXPECT_THROW(parse_algorithm(bad), Error) << "\"" << bad << "\"";
  }
  const std::string with_nul("gcra\0", 5);
  EXPECT_THROW(parse_algorithm(with_nul), Error);
}

// ===========================================================================
// Scenarios of doc/algorithms.md, step by step.
struct Step {
  i64 now;
  u64 cost;
  bool allowed;
  i64 retry_after;  // checked when denied
};

void run_scenario(const AlgoParams& p, const std::vector<Step>& steps) {
  u64 state = 0;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    const AlgoOutcome out = algo_decide(p, state, s.now, s.cost);
    EXPECT_EQ(out.decision.allowed, s.allowed)
        << "step " << i << " at " << s.now << ": " << show(out);
    if (!s.allowed) {
      EXPECT_EQ(out.decision.retry_after, Nanos(s.retry_after)) << "step " << i;
    }
    if (out.store) state = out.new_state;
  }
}

TEST(TokenBucketScenario, TenAtOnceThenFiveAtEachSecond) {
  // q2_sdk RateLimiter(max_tokens=10, refill_amount=5, refill_period=1 s).
  std::vector<Step> steps;
  steps.insert(steps.end(), 10, Step{100 * kMs, 1, true, 0});
  steps.push_back({100 * kMs, 1, false, 900 * kMs});
  steps.push_back({999 * kMs, 1, false, kMs});
  steps.insert(steps.end(), 5, Step{kSec, 1, true, 0});
  steps.push_back({kSec, 1, false, kSec});
  steps.push_back({1500 * kMs, 1, false, 500 * kMs});
  steps.push_back({3 * kSec, 10, true, 0});  // two refills: 10, capped at the burst
  steps.push_back({3 * kSec, 1, false, kSec});
  run_scenario(kTb, steps);
}

TEST(FixedWindowScenario, TenPerAlignedSecond) {
  std::vector<Step> steps;
  steps.insert(steps.end(), 10, Step{999 * kMs, 1, true, 0});
  steps.push_back({999 * kMs, 1, false, kMs});
  // The known edge of fixed windows: 10 more at the next window's start,
  // 20 within 2 ms.
  steps.insert(steps.end(), 10, Step{kSec, 1, true, 0});
  steps.push_back({kSec, 1, false, kSec});
  run_scenario(kFw, steps);
}

TEST(SlidingWindowScenario, WeightsThePreviousWindow) {
  std::vector<Step> steps;
  steps.insert(steps.end(), 10, Step{4 * kSec - 1, 1, true, 0});  // window 3: 10
  // 25% into window 4: 10 * 0.75 = 7.5 in use: 2 more, then wait until
  // 10 * (1 - e) + 3 <= 10, e = 0.3 s.
  steps.push_back({4250 * kMs, 1, true, 0});
  steps.push_back({4250 * kMs, 1, true, 0});
  steps.push_back({4250 * kMs, 1, false, 50 * kMs});
  steps.push_back({4300 * kMs, 1, true, 0});
  steps.push_back({4300 * kMs, 1, false, 100 * kMs});
  run_scenario(kSw, steps);
}

TEST(QuietPeriodScenario, OnePerMinuteNeedsAMinuteOfSilence) {
  run_scenario(kQp, {
                        {0, 1, true, 0},
                        {30 * kSec, 1, false, kMinute},   // restarts: quiet until 90 s
                        {89 * kSec, 1, false, kMinute},   // restarts: quiet until 149 s
                        {148 * kSec, 1, false, kMinute},  // restarts: quiet until 208 s
                        {208 * kSec, 1, true, 0},         // 60 s of silence
                        {209 * kSec, 1, false, kMinute},
                        {269 * kSec, 1, true, 0},
                    });
}

// ===========================================================================
// Equivalences.

TEST(LeakyBucketEquivalence, AgreesWithGcraDecisionForDecision) {
  // The same meter, two descriptions: on 10,000 random steps (out-of-order
  // readings, weighted costs, peeks, refunds) both give the same decision
  // and the same next state.
  std::mt19937_64 rng(31);
  static constexpr i64 kPeriods[] = {10, 999, kMs, 7 * kMs, kSec, kMinute};
  int steps = 0;
  for (int run = 0; run < 20; ++run) {
    const i64 period = kPeriods[rng() % std::size(kPeriods)];
    const u64 count = 1 + rng() % 50;
    const u64 burst = 1 + rng() % 30;
    const AlgoParams leaky = make(A::kLeakyBucket, count, period, burst);
    AlgoParams gcra = leaky;
    gcra.algorithm = A::kGcra;
    const GcraParams g{leaky.emission_ns, leaky.burst};
    u64 s_leaky = 0;
    u64 s_gcra = 0;
    i64 now = 1'000'000'000'000 + static_cast<i64>(rng() % (1ULL << 40));
    for (int i = 0; i < 500; ++i, ++steps) {
      now += static_cast<i64>(rng() % (2 * leaky.emission_ns + 1));
      const i64 at = now - static_cast<i64>(rng() % 4 == 0 ? rng() % (3 * leaky.emission_ns) : 0);
      const u64 cost = rng() % (burst + 2);
      ASSERT_EQ(s_leaky, s_gcra) << "run " << run << " step " << i;
      AlgoOutcome a;
      GcraOutcome b;
      if (rng() % 10 == 0) {
        a = algo_refund(leaky, s_leaky, at, cost);
        const AlgoOutcome r = algo_refund(gcra, s_gcra, at, cost);
        b = GcraOutcome{r.decision, r.store, r.new_state};
      } else {
        a = algo_decide(leaky, s_leaky, at, cost);
        b = gcra_decide(s_gcra, at, cost, g);
      }
      ASSERT_TRUE(same(a.decision, b.decision) && a.store == b.store &&
                  (!a.store || a.new_state == b.new_state))
          << "run " << run << " step " << i << ": leaky " << show(a) << " gcra "
          << describe(b.decision);
      ASSERT_EQ(algo_is_full(leaky, s_leaky, at), gcra_is_full(s_gcra, at));
      if (a.store) s_leaky = a.new_state;
      if (b.store) s_gcra = b.new_state;
    }
  }
  EXPECT_EQ(steps, 10'000);
}

// The Redis recipe the quiet period reproduces ("strict" rate limiting):
//   v = INCRBY key cost
//   if v == cost:  PEXPIRE key period     (first hit of a period)
//   elif v > count: PEXPIRE key period    (strict: every attempt over the limit re-arms)
//   allowed = v <= count
// with expiries rounded up to a whole ms, as doc/algorithms.md states.
struct RedisStrict {
  i64 count;
  i64 period;
  i64 value = 0;
  i64 expire_at = 0;  // ns; the key is absent from then on
  static i64 round_up_ms(i64 t) { return (t + kMs - 1) / kMs * kMs; }
  bool attempt(i64 now, i64 cost) {
    if (now >= expire_at) value = 0;
    value += cost;
    if (value == cost || value > count) expire_at = round_up_ms(now + period);
    return value <= count;
  }
};

TEST(QuietPeriodEquivalence, MatchesTheRedisStrictRecipe) {
  std::mt19937_64 rng(32);
  int steps = 0;
  int denied = 0;
  for (const AlgoParams& p :
       {kQp, kQp3, make(A::kQuietPeriod, 5, 7 * kMs + 300), make(A::kQuietPeriod, 1, kMs)}) {
    RedisStrict redis{static_cast<i64>(p.count), static_cast<i64>(p.period_ns)};
    u64 state = 0;
    i64 now = 12'345;
    for (int i = 0; i < 5000; ++i, ++steps) {
      const u64 r = rng() % 100;
      const auto period = static_cast<i64>(p.period_ns);
      now += r < 50 ? static_cast<i64>(rng() % static_cast<u64>(period / 4 + 1))
                    : static_cast<i64>(rng() % static_cast<u64>(period + period / 2));
      const u64 cost = 1 + rng() % p.count;
      const AlgoOutcome out = algo_decide(p, state, now, cost);
      const bool expected = redis.attempt(now, static_cast<i64>(cost));
      ASSERT_EQ(out.decision.allowed, expected)
          << "step " << i << " at " << now << " cost " << cost;
      if (!expected) {
        ++denied;
        ASSERT_EQ(out.decision.retry_after, Nanos(redis.expire_at - now));
      }
      if (out.store) state = out.new_state;
    }
  }
  EXPECT_GT(denied, 1000);
  EXPECT_EQ(steps, 20'000);
}

}  // namespace
}  // namespace shmlimit::detail

namespace shmlimit::detail {
namespace {

// The one codec of each packed state (state_codec.hpp): every payload
// unpacks to fields that pack back to it, and a field set packs to the
// layout the header documents.
template <class Codec>
class StateCodecRoundTrip : public ::testing::Test {};
using StateCodecs = ::testing::Types<state_codec::TokenBucket, state_codec::FixedWindow,
                                     state_codec::SlidingWindow, state_codec::QuietPeriod>;
TYPED_TEST_SUITE(StateCodecRoundTrip, StateCodecs);

TYPED_TEST(StateCodecRoundTrip, PackOfUnpackIsTheSamePayload) {
  std::mt19937_64 rng(7);
  const std::uint64_t fixed[] = {
      0,       1,        kStatePayloadMask, kStatePayloadMask - 1, std::uint64_t{1} << 55, 0xFFFF,
      0x10000, 0xFFFFFF, 0x1000000};
  for (const std::uint64_t x : fixed) EXPECT_EQ(TypeParam::unpack(x).pack(), x) << x;
  for (int i = 0; i < 10000; ++i) {
    const std::uint64_t x = rng() & kStatePayloadMask;
    ASSERT_EQ(TypeParam::unpack(x).pack(), x) << x;
  }
}

TEST(StateCodec, FieldsLandWhereTheLayoutSays) {
  EXPECT_EQ((state_codec::TokenBucket{3, 5}.pack()), (std::uint64_t{3} << 20) | 5);
  EXPECT_EQ((state_codec::FixedWindow{3, 5}.pack()), (std::uint64_t{3} << 24) | 5);
  EXPECT_EQ((state_codec::SlidingWindow{(1u << 24) + 3, 7, 5}.pack()),
            (std::uint64_t{3} << 32) | (7u << 16) | 5);
  EXPECT_EQ((state_codec::QuietPeriod{3, state_codec::QuietPeriod::kBlocked}.pack()),
            (std::uint64_t{3} << 19) | 0x7FFFF);
}

}  // namespace
}  // namespace shmlimit::detail
