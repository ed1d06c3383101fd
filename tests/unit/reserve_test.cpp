// Reservations: the maths as pure functions (algorithms/reserve.hpp) in
// tables, then Limiter::reserve / cancel / wait on a real segment with the
// injected clock.
//
// Expected values follow the documented formulas, not runs of the code:
//   base = max(TAT, now), new_TAT = base + cost*T, delay = max(0, new_TAT - now - tau)
//   granted iff delay <= max_wait; then TAT' = new_TAT
//   cancel: back by cost*T (never below now) iff the state is still the
//   reservation's TAT and its turn has not come.
#include "algorithms/reserve.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "algorithms/state_codec.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using detail::cancel_tat;
using detail::GcraParams;
using detail::reserve_tat;

constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();

// T = 100 ns, B = 3: tau = 300 ns.
const GcraParams kP{100, 3, detail::gcra_reciprocal(100)};

struct ReserveRow {
  const char* what;
  std::uint64_t tat;
  std::int64_t now;
  std::uint64_t cost;
  std::int64_t max_wait;
  bool granted;
  std::int64_t delay;  // kNever: cost too high
  bool store;
  std::uint64_t new_state;  // when store
  std::uint64_t remaining;
  std::int64_t retry_after;  // kNever: Nanos::max()
  std::int64_t reset_after;
};

class ReserveMaths : public ::testing::TestWithParam<ReserveRow> {};

TEST_P(ReserveMaths, MatchesTheFormula) {
  const ReserveRow& r = GetParam();
  const detail::ReserveOutcome o = reserve_tat(r.tat, r.now, r.cost, r.max_wait, kP);
  EXPECT_EQ(o.decision.allowed, r.granted);
  EXPECT_EQ(o.delay_ns, r.delay);
  EXPECT_EQ(o.store, r.store);
  if (r.store) {
    EXPECT_EQ(o.new_state, r.new_state);
  }
  EXPECT_EQ(o.decision.limit, 3u);
  EXPECT_EQ(o.decision.remaining, r.remaining);
  EXPECT_EQ(o.decision.retry_after, r.retry_after == kNever ? Nanos::max() : Nanos(r.retry_after));
  EXPECT_EQ(o.decision.reset_after, Nanos(r.reset_after));
  EXPECT_EQ(o.decision.reason, r.delay == kNever ? Reason::kCostTooHigh : Reason::kOk);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ReserveMaths,
    ::testing::Values(
        // what, tat, now, cost, max_wait, granted, delay, store, new_state, remaining, retry, reset
        ReserveRow{"fresh bucket: now", 1000, 1000, 1, 0, true, 0, true, 1100, 2, 0, 100},
        ReserveRow{"stale TAT counts as now", 500, 1000, 3, 0, true, 0, true, 1300, 0, 0, 300},
        ReserveRow{"empty, no wait allowed", 1300, 1000, 1, 0, false, 100, false, 0, 0, 100, 300},
        ReserveRow{"empty, waits one T", 1300, 1000, 1, 100, true, 100, true, 1400, 0, 0, 400},
        ReserveRow{"queue of 6 T, cost 2", 1900, 1000, 2, 1000, true, 800, true, 2100, 0, 0, 1100},
        ReserveRow{"queue past max_wait", 1900, 1000, 2, 799, false, 800, false, 0, 0, 800, 900},
        ReserveRow{"cost 0 reports the queue", 1900, 1000, 0, 1000, true, 600, false, 0, 0, 0, 900},
        ReserveRow{"cost 0 past max_wait", 1900, 1000, 0, 0, false, 600, false, 0, 0, 600, 900},
        ReserveRow{"cost above burst", 1000, 1000, 4, kNever, false, kNever, false, 0, 3, kNever,
                   0},
        ReserveRow{"negative now is 0", 0, -5, 1, 0, true, 0, true, 100, 2, 0, 100},
        ReserveRow{"negative max_wait is 0", 1300, 1000, 1, -7, false, 100, false, 0, 0, 100, 300},
        ReserveRow{"max_wait beyond the cap", 1300, 1000, 1, kNever, true, 100, true, 1400, 0, 0,
                   400}),
    [](const ::testing::TestParamInfo<ReserveRow>& info) {
      std::string s;
      for (const char* c = info.param.what; *c != '\0'; ++c) {
        s += (std::isalnum(static_cast<unsigned char>(*c)) != 0) ? *c : '_';
      }
      return s;
    });

// With max_wait 0 a reservation is exactly an acquire: the same verdict,
// state and report as gcra_decide, over random states.
TEST(ReserveMaths, WithNoWaitItIsAnAcquire) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const GcraParams p{1 + rng() % 1000, 1 + rng() % 50, 0};
    const std::int64_t now = static_cast<std::int64_t>(rng() % 1'000'000);
    const std::int64_t tau = static_cast<std::int64_t>(p.burst * p.emission_ns);
    const std::uint64_t tat = static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, now - 5000 + static_cast<std::int64_t>(rng() % (tau + 10000))));
    const std::uint64_t cost = rng() % (p.burst + 2);
    const detail::ReserveOutcome r = reserve_tat(tat, now, cost, 0, p);
    const detail::GcraOutcome a = detail::gcra_decide(tat, now, cost, p);
    ASSERT_TRUE(same_decision(r.decision, a.decision)) << "tat " << tat << " now " << now;
    ASSERT_EQ(r.store, a.store);
    if (r.store) {
      ASSERT_EQ(r.new_state, a.new_state);
    }
  }
}

// Turns handed out one after another are spaced by exactly cost * T once
// the burst is spent, whatever max_wait allows.
TEST(ReserveMaths, ConsecutiveTurnsAreSpacedByTheEmissionInterval) {
  std::uint64_t tat = 0;
  std::vector<std::int64_t> delays;
  for (int i = 0; i < 10; ++i) {
    const auto o = reserve_tat(tat, 0, 1, kNever, kP);
    ASSERT_TRUE(o.decision.allowed);
    tat = o.new_state;
    delays.push_back(o.delay_ns);
  }
  EXPECT_EQ(delays, (std::vector<std::int64_t>{0, 0, 0, 100, 200, 300, 400, 500, 600, 700}));
}

struct CancelRow {
  const char* what;
  std::uint64_t state;
  std::int64_t now;
  std::uint64_t reserved;
  std::uint64_t span;
  std::int64_t act_at;
  std::optional<std::uint64_t> next;
};

class CancelMaths : public ::testing::TestWithParam<CancelRow> {};

TEST_P(CancelMaths, MatchesTheRule) {
  const CancelRow& r = GetParam();
  EXPECT_EQ(cancel_tat(r.state, r.now, r.reserved, r.span, r.act_at), r.next);
}

INSTANTIATE_TEST_SUITE_P(
    Table, CancelMaths,
    ::testing::Values(CancelRow{"last turn gives all back", 2100, 1000, 2100, 200, 1800, 1900},
                      CancelRow{"a later turn depends on it", 2200, 1000, 2100, 200, 1800,
                                std::nullopt},
                      CancelRow{"its turn has come", 2100, 1800, 2100, 200, 1800, std::nullopt},
                      CancelRow{"never back past now", 1150, 1000, 1150, 300, 1001, 1000},
                      CancelRow{"refilled already", 900, 1000, 900, 100, 2000, std::nullopt}),
    [](const ::testing::TestParamInfo<CancelRow>& info) {
      std::string s;
      for (const char* c = info.param.what; *c != '\0'; ++c) {
        s += (std::isalnum(static_cast<unsigned char>(*c)) != 0) ? *c : '_';
      }
      return s;
    });

// ---- the token bucket's queue ------------------------------------------------
//
// Expected values follow the formula of reserve.hpp: at the refill index of
// now (after the refills since the stored one), missing' = missing + cost;
// the turn is now when missing' <= burst, else the boundary
// (index + ceil((missing' - burst) / count)) * period; granted iff its
// delay <= max_wait (and missing' < 2^20), then the state stores missing'.

constexpr std::int64_t kMsNs = 1'000'000;

// 2 tokens every 10 ms, burst 3.
const detail::AlgoParams kTb{Algorithm::kTokenBucket, 2, 10 * kMsNs, 3, 5 * kMsNs};

std::uint64_t tb_state(std::uint64_t index, std::uint64_t missing) {
  return detail::state_codec::TokenBucket{index, missing}.pack();
}

struct TbRow {
  const char* what;
  std::uint64_t index, missing;  // the stored state
  std::int64_t now_ms;
  std::uint64_t cost;
  std::int64_t max_wait_ms;  // kNever: no limit
  bool granted;
  std::int64_t delay_ms;  // kNever: cost too high
  bool store;
  std::uint64_t new_index, new_missing;  // when store
  std::uint64_t remaining;
  std::int64_t retry_ms;  // kNever: Nanos::max()
  std::int64_t reset_ms;
};

class TokenBucketReserveMaths : public ::testing::TestWithParam<TbRow> {};

TEST_P(TokenBucketReserveMaths, MatchesTheFormula) {
  const TbRow& r = GetParam();
  const auto ns = [](std::int64_t ms) { return ms == kNever ? kNever : ms * kMsNs; };
  const detail::ReserveOutcome o = detail::reserve_tb(kTb, tb_state(r.index, r.missing),
                                                      ns(r.now_ms), r.cost, ns(r.max_wait_ms));
  EXPECT_EQ(o.decision.allowed, r.granted);
  EXPECT_EQ(o.delay_ns, ns(r.delay_ms));
  EXPECT_EQ(o.store, r.store);
  if (r.store) {
    EXPECT_EQ(o.new_state, tb_state(r.new_index, r.new_missing));
  }
  EXPECT_EQ(o.decision.limit, 3u);
  EXPECT_EQ(o.decision.remaining, r.remaining);
  EXPECT_EQ(o.decision.retry_after, r.retry_ms == kNever ? Nanos::max() : Nanos(ns(r.retry_ms)));
  EXPECT_EQ(o.decision.reset_after, Nanos(ns(r.reset_ms)));
  EXPECT_EQ(o.decision.reason, r.delay_ms == kNever ? Reason::kCostTooHigh : Reason::kOk);
}

constexpr std::uint64_t kFieldMax = (std::uint64_t{1} << 20) - 1;

INSTANTIATE_TEST_SUITE_P(
    Table, TokenBucketReserveMaths,
    ::testing::Values(
        // what, index, missing, now, cost, max_wait, granted, delay, store, new index, new
        // missing, remaining, retry, reset (ms)
        TbRow{"fresh bucket: now", 0, 0, 1000, 1, 0, true, 0, true, 100, 1, 2, 0, 10},
        TbRow{"empty, no wait allowed", 100, 3, 1005, 1, 0, false, 5, false, 0, 0, 0, 5, 15},
        TbRow{"empty, waits for the next refill", 100, 3, 1005, 1, 5, true, 5, true, 100, 4, 0, 0,
              15},
        TbRow{"debt of 5, cost 2", 100, 8, 1005, 2, 100, true, 35, true, 100, 10, 0, 0, 45},
        TbRow{"debt past max_wait", 100, 8, 1005, 2, 34, false, 35, false, 0, 0, 0, 35, 35},
        TbRow{"refills since pay the debt down", 98, 8, 1005, 1, 5, true, 5, true, 100, 5, 0, 0,
              25},
        TbRow{"cost 0 reports the queue", 100, 8, 1005, 0, 100, true, 25, false, 0, 0, 0, 0, 35},
        TbRow{"cost 0 past max_wait", 100, 8, 1005, 0, 0, false, 25, false, 0, 0, 0, 25, 35},
        TbRow{"cost above burst", 0, 0, 1000, 4, kNever, false, kNever, false, 0, 0, 3, kNever, 0},
        TbRow{"queue fills the 20-bit field", 100, kFieldMax - 1, 1000, 2, kNever, false, 10, false,
              0, 0, 0, 10, 5'242'870},
        TbRow{"full field past max_wait", 100, kFieldMax - 1, 1000, 2, 1000, false, 5'242'870,
              false, 0, 0, 0, 5'242'870, 5'242'870},
        TbRow{"last unit the field holds", 100, kFieldMax - 2, 1000, 2, kNever, true, 5'242'860,
              true, 100, kFieldMax, 0, 0, 5'242'880},
        TbRow{"a refill the bucket cannot hold is lost", 100, 3, 1005, 3, kNever, true, 15, true,
              100, 7, 0, 0, 35},
        TbRow{"negative now is 0", 0, 0, -5, 1, 0, true, 0, true, 0, 1, 2, 0, 10},
        TbRow{"max_wait beyond the cap", 100, 3, 1005, 1, kNever, true, 5, true, 100, 4, 0, 0, 15}),
    [](const ::testing::TestParamInfo<TbRow>& info) {
      std::string s;
      for (const char* c = info.param.what; *c != '\0'; ++c) {
        s += (std::isalnum(static_cast<unsigned char>(*c)) != 0) ? *c : '_';
      }
      return s;
    });

TEST(TokenBucketReserveMaths, InvalidParametersAreACorruptRefusal) {
  detail::AlgoParams bad = kTb;
  bad.count = 0;
  const detail::ReserveOutcome o = detail::reserve_tb(bad, 0, 1000, 1, kNever);
  EXPECT_FALSE(o.decision.allowed);
  EXPECT_EQ(o.decision.reason, Reason::kCorrupt);
  EXPECT_FALSE(o.store);
  EXPECT_EQ(detail::cancel_tb(bad, tb_state(0, 5), 0, tb_state(0, 5), 1, 1000), std::nullopt);
  // Another algorithm's parameters are not a token bucket's.
  detail::AlgoParams gcra = kTb;
  gcra.algorithm = Algorithm::kGcra;
  EXPECT_EQ(detail::reserve_tb(gcra, 0, 1000, 1, kNever).decision.reason, Reason::kCorrupt);
}

TEST(TokenBucketReserveMaths, QueuesTheStateCannotCountAreRefusedUntilARefillMakesRoom) {
  // A refill far above the burst would lose more tokens than the 20-bit
  // debt can count: no queue; refused until the next refill (5 ms), when
  // the bucket is full again and an acquire fits.
  detail::AlgoParams huge = kTb;
  huge.count = std::uint64_t{1} << 30;
  const detail::ReserveOutcome o =
      detail::reserve_tb(huge, tb_state(100, 3), 1005 * kMsNs, 1, kNever);
  EXPECT_FALSE(o.decision.allowed);
  EXPECT_EQ(o.decision.reason, Reason::kOk);
  EXPECT_EQ(o.delay_ns, 5 * kMsNs);
  EXPECT_EQ(o.decision.retry_after, Nanos(5 * kMsNs));
  EXPECT_FALSE(o.store);
  EXPECT_TRUE(detail::algo_decide(huge, tb_state(100, 3), 1010 * kMsNs, 3).decision.allowed);
  // A turn past the clock horizon is refused, whatever max_wait allows.
  const std::int64_t late = detail::kClockHorizonNs - 1;
  const std::uint64_t index = static_cast<std::uint64_t>(late) / kTb.period_ns;
  const detail::ReserveOutcome h = detail::reserve_tb(kTb, tb_state(index, 3), late, 1, kNever);
  EXPECT_FALSE(h.decision.allowed);
  EXPECT_FALSE(h.store);
  EXPECT_GT(h.delay_ns, 0);
}

// With max_wait 0 a reservation is exactly an acquire: the same verdict,
// state and report as tb_decide, over random states (debts included).
TEST(TokenBucketReserveMaths, WithNoWaitItIsAnAcquire) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 20000; ++i) {
    const detail::AlgoParams p{Algorithm::kTokenBucket, 1 + rng() % 5,
                               (2 + rng() % 50) * static_cast<std::uint64_t>(kMsNs), 1 + rng() % 20,
                               1};
    const auto now = static_cast<std::int64_t>(rng() % 10'000'000'000ULL);
    const std::uint64_t cur = static_cast<std::uint64_t>(now) / p.period_ns;
    const std::uint64_t index = cur - std::min<std::uint64_t>(cur, rng() % 4);
    const std::uint64_t state = tb_state(index, rng() % (3 * p.burst + 1));
    const std::uint64_t cost = rng() % (p.burst + 2);
    const detail::ReserveOutcome r = detail::reserve_tb(p, state, now, cost, 0);
    const detail::AlgoOutcome a = detail::algo_decide(p, state, now, cost);
    ASSERT_TRUE(same_decision(r.decision, a.decision)) << "state " << state << " now " << now;
    ASSERT_EQ(r.store, a.store);
    if (r.store) {
      ASSERT_EQ(r.new_state, a.new_state);
    }
  }
}

// A brute-force model of the discrete token bucket's promise: a schedule of
// (act time, cost), starting from a full bucket, conforms when over any span
// [a, b] the units acting in it are at most burst + count * (refill
// boundaries in (a, b]). The model's turn for a reservation is the earliest
// time, no earlier than now nor than the last turn handed out (first come,
// first served), at which the schedule still conforms; reserve_tb must give
// exactly that turn (never earlier: the bound; never later: no refill is
// wasted), grant it iff it is within max_wait, and its cancel must give the
// last turn back. An acquire is granted iff the model's turn is now, and the
// bucket is full (reclaimable) iff nothing is queued and a whole burst fits now.
struct Act {
  std::int64_t t;
  std::uint64_t cost;
};

// Whether `acts` (sorted by time, all at or before next.t) plus `next` conform.
bool conforms(const std::vector<Act>& acts, Act next, const detail::AlgoParams& p) {
  const auto P = static_cast<std::int64_t>(p.period_ns);
  std::uint64_t sum = next.cost;
  if (sum > p.burst) return false;
  for (std::size_t i = acts.size(); i-- > 0;) {  // the spans [acts[i].t, next.t]
    sum += acts[i].cost;
    const auto boundaries = static_cast<std::uint64_t>(next.t / P - acts[i].t / P);
    if (sum > p.burst + p.count * boundaries) return false;
  }
  return true;
}

std::int64_t model_turn(const std::vector<Act>& acts, std::int64_t now, std::uint64_t cost,
                        const detail::AlgoParams& p) {
  const auto P = static_cast<std::int64_t>(p.period_ns);
  std::int64_t t = acts.empty() ? now : std::max(now, acts.back().t);
  while (!conforms(acts, Act{t, cost}, p)) t = (t / P + 1) * P;
  return t;
}

TEST(TokenBucketReserveMaths, TurnsAreTheBruteForceModelsSchedule) {
  std::mt19937_64 rng(2026);
  int granted = 0, queued = 0, refused = 0, cancelled = 0, acquires = 0;
  for (int c = 0; c < 5000; ++c) {
    // count above burst too: a refill the bucket cannot hold is lost.
    const detail::AlgoParams p{Algorithm::kTokenBucket, 1 + rng() % 6, 10 * kMsNs, 1 + rng() % 8,
                               1};
    const auto P = static_cast<std::int64_t>(p.period_ns);
    std::vector<Act> acts;
    std::uint64_t state = 0;
    std::int64_t now =
        static_cast<std::int64_t>(rng() % 5) * P + static_cast<std::int64_t>(rng() % 7);
    // The last granted reservation, while it is the last thing stored.
    bool has_last = false;
    std::uint64_t last_reserved = 0;
    std::int64_t last_act = 0;
    std::uint64_t last_added = 0;  // its span: the tokens it added
    for (int op = 0; op < 40; ++op) {
      std::string where =
          "case " + std::to_string(c) + " op " + std::to_string(op) + " burst " +
          std::to_string(p.burst) + " count " + std::to_string(p.count) + " now " +
          std::to_string(now) + " state missing " +
          std::to_string(detail::state_codec::TokenBucket::unpack(state).missing) + " index " +
          std::to_string(detail::state_codec::TokenBucket::unpack(state).index) + " acts";
      for (const Act& a : acts) where += " " + std::to_string(a.t) + "x" + std::to_string(a.cost);
      const std::uint64_t cost = 1 + rng() % p.burst;
      const int kind = static_cast<int>(rng() % 8);
      if (kind == 0) {  // an acquire
        ++acquires;
        const detail::AlgoOutcome a = detail::algo_decide(p, state, now, cost);
        const bool fits = model_turn(acts, now, cost, p) == now;
        ASSERT_EQ(a.decision.allowed, fits) << where;
        if (a.store) {
          state = a.new_state;
          acts.push_back(Act{now, cost});
          has_last = false;
        }
      } else if (kind == 1 && has_last) {  // cancel the last reservation
        const std::optional<std::uint64_t> back =
            detail::cancel_tb(p, state, now, last_reserved, last_added, last_act);
        ASSERT_EQ(back.has_value(), now < last_act) << where;
        if (back) {
          ++cancelled;
          ASSERT_EQ(acts.back().t, last_act) << where;
          acts.pop_back();
          state = *back;
        }
        has_last = false;
      } else {  // a reservation
        const std::int64_t max_wait = kind == 2   ? kNever
                                      : kind == 3 ? 0
                                                  : static_cast<std::int64_t>(rng() % (6 * P));
        const std::int64_t turn = model_turn(acts, now, cost, p);
        const detail::ReserveOutcome o = detail::reserve_tb(p, state, now, cost, max_wait);
        const bool want =
            turn - now <= std::clamp<std::int64_t>(max_wait, 0, detail::kMaxReserveWaitNs);
        ASSERT_EQ(o.decision.allowed, want) << where << " model turn " << turn << " now " << now;
        ASSERT_EQ(o.delay_ns, turn - now) << where;  // granted or not: the turn it needs
        if (o.decision.allowed) {
          ++granted;
          if (o.delay_ns > 0) ++queued;
          ASSERT_TRUE(o.store);
          state = o.new_state;
          acts.push_back(Act{turn, cost});
          has_last = true;
          last_reserved = o.new_state;
          last_act = turn;
          last_added = o.span;
        } else {
          ++refused;
          ASSERT_FALSE(o.store);
        }
      }
      // Full (reclaimable) iff nothing queued and a whole burst fits now.
      const bool full =
          (acts.empty() || acts.back().t <= now) && conforms(acts, Act{now, p.burst}, p);
      ASSERT_EQ(detail::algo_is_full(p, state, now), full) << where;
      now += static_cast<std::int64_t>(rng() % 3 == 0 ? 0 : rng() % (2 * P));
    }
  }
  // Every branch was taken many times.
  EXPECT_GT(queued, 10000);
  EXPECT_GT(refused, 10000);
  EXPECT_GT(cancelled, 1000);
  EXPECT_GT(acquires, 10000);
  EXPECT_GT(granted, queued);
}

struct TbCancelRow {
  const char* what;
  std::uint64_t state;
  std::int64_t now_ms;
  std::uint64_t reserved;
  std::uint64_t cost;
  std::int64_t act_at_ms;
  std::optional<std::uint64_t> next;
};

class TokenBucketCancelMaths : public ::testing::TestWithParam<TbCancelRow> {};

TEST_P(TokenBucketCancelMaths, MatchesTheRule) {
  const TbCancelRow& r = GetParam();
  EXPECT_EQ(
      detail::cancel_tb(kTb, r.state, r.now_ms * kMsNs, r.reserved, r.cost, r.act_at_ms * kMsNs),
      r.next);
}

INSTANTIATE_TEST_SUITE_P(
    Table, TokenBucketCancelMaths,
    ::testing::Values(TbCancelRow{"last turn gives its cost back", tb_state(100, 8), 1005,
                                  tb_state(100, 8), 2, 1030, tb_state(100, 6)},
                      TbCancelRow{"after refills, at the index of now", tb_state(100, 8), 1015,
                                  tb_state(100, 8), 2, 1030, tb_state(101, 4)},
                      TbCancelRow{"a later turn depends on it", tb_state(100, 9), 1005,
                                  tb_state(100, 8), 2, 1030, std::nullopt},
                      TbCancelRow{"its turn has come", tb_state(100, 8), 1030, tb_state(100, 8), 2,
                                  1030, std::nullopt},
                      TbCancelRow{"a turn that was now", tb_state(100, 2), 1005, tb_state(100, 2),
                                  2, 1005, std::nullopt}),
    [](const ::testing::TestParamInfo<TbCancelRow>& info) {
      std::string s;
      for (const char* c = info.param.what; *c != '\0'; ++c) {
        s += (std::isalnum(static_cast<unsigned char>(*c)) != 0) ? *c : '_';
      }
      return s;
    });

TEST(ReserveMaths, GcraTheLeakyBucketAndTheTokenBucketQueue) {
  using detail::ReserveMode;
  EXPECT_EQ(detail::reserve_mode(Algorithm::kGcra), ReserveMode::kQueue);
  EXPECT_EQ(detail::reserve_mode(Algorithm::kLeakyBucket), ReserveMode::kQueue);
  EXPECT_EQ(detail::reserve_mode(Algorithm::kTokenBucket), ReserveMode::kQueue);
  EXPECT_EQ(detail::reserve_mode(Algorithm::kConcurrency), ReserveMode::kNever);
  for (Algorithm a : {Algorithm::kFixedWindow, Algorithm::kSlidingWindow, Algorithm::kQuietPeriod,
                      Algorithm::kSlidingLog}) {
    EXPECT_EQ(detail::reserve_mode(a), ReserveMode::kRetry) << to_string(a);
  }
}

// ---- the Limiter ------------------------------------------------------------

constexpr std::int64_t kMs = 1'000'000;

class ReserveOnSegment : public ::testing::Test {
 protected:
  void SetUp() override {
    Options o = unit::small_options(name_.str());
    o.log_entries = 8;
    lim_.emplace(Limiter::create(o));
  }
  Limiter& lim() { return *lim_; }
  unit::ScopedSegmentName name_{"reserve"};
  std::optional<Limiter> lim_;
};

// 10 per second, burst 2: T = 100 ms, tau = 200 ms.
PolicySpec vendor(Algorithm a = Algorithm::kGcra) {
  PolicySpec s = unit::spec(a, 10, std::chrono::seconds(1), 2);
  s.name = std::string("vendor-") + std::string(to_string(a));
  return s;
}

TEST_F(ReserveOnSegment, TurnsQueueInOrderAndAnAcquireWaitsBehindThem) {
  const PolicyId id = lim().add_policy(vendor());
  const Nanos t0(1000 * kMs);
  std::vector<std::int64_t> delays;
  for (int i = 0; i < 5; ++i) {
    const Reservation r = lim().reserve_at(id, "acct", 1, Nanos::max(), t0);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.time_to_act(), t0 + r.delay());
    delays.push_back(r.delay().count() / kMs);
  }
  EXPECT_EQ(delays, (std::vector<std::int64_t>{0, 0, 100, 200, 300}));
  // The queue reaches 300 ms: an acquire now waits 400 ms (one more T).
  const Decision d = lim().acquire_at(id, "acct", 1, t0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, Nanos(400 * kMs));
  // Beyond max_wait: refused, nothing charged.
  const Reservation no = lim().reserve_at(id, "acct", 1, Nanos(399 * kMs), t0);
  EXPECT_FALSE(no.ok());
  EXPECT_EQ(no.delay(), Nanos(400 * kMs));
  EXPECT_EQ(no.decision().retry_after, Nanos(400 * kMs));
  EXPECT_FALSE(no.decision().allowed);
  const Reservation yes = lim().reserve_at(id, "acct", 1, Nanos(400 * kMs), t0);
  EXPECT_TRUE(yes.ok());
  EXPECT_EQ(yes.delay(), Nanos(400 * kMs));
  // Counted in the exact totals as acquires: 6 granted, 2 refused.
  for (const PolicyCounters& c : lim().counters()) {
    if (c.id.index != id.index) continue;
    EXPECT_EQ(c.admitted, 6u);
    EXPECT_EQ(c.denied, 2u);
  }
}

TEST_F(ReserveOnSegment, LeakyBucketQueuesLikeGcra) {
  const PolicyId g = lim().add_policy(vendor(Algorithm::kGcra));
  const PolicyId l = lim().add_policy(vendor(Algorithm::kLeakyBucket));
  const Nanos t0(50 * kMs);
  for (int i = 0; i < 6; ++i) {
    const Reservation a = lim().reserve_at(g, "k", 1 + i % 2, Nanos(10'000 * kMs), t0);
    const Reservation b = lim().reserve_at(l, "k", 1 + i % 2, Nanos(10'000 * kMs), t0);
    EXPECT_EQ(a.ok(), b.ok());
    EXPECT_EQ(a.delay(), b.delay()) << i;
    EXPECT_TRUE(same_decision(a.decision(), b.decision()));
  }
}

TEST_F(ReserveOnSegment, CancelGivesBackOnlyTheLastTurnBeforeItComes) {
  const PolicyId id = lim().add_policy(vendor());
  const Nanos t0(1000 * kMs);
  Reservation a = lim().reserve_at(id, "k", 2, Nanos::max(), t0);  // the burst: now
  Reservation b = lim().reserve_at(id, "k", 1, Nanos::max(), t0);  // +100 ms
  Reservation c = lim().reserve_at(id, "k", 1, Nanos::max(), t0);  // +200 ms
  ASSERT_EQ(b.delay(), Nanos(100 * kMs));
  ASSERT_EQ(c.delay(), Nanos(200 * kMs));
  // b has c behind it: nothing back (c keeps its turn, and so must the
  // next caller's stay behind c).
  EXPECT_FALSE(b.cancel());
  EXPECT_FALSE(b.cancel());  // spent
  // c is the last: its turn is given back; the next caller gets it.
  EXPECT_TRUE(c.cancel());
  EXPECT_FALSE(c.cancel());
  Reservation d = lim().reserve_at(id, "k", 1, Nanos::max(), t0);
  EXPECT_EQ(d.delay(), Nanos(200 * kMs));
  // a's turn (now) has come: used, nothing back.
  EXPECT_FALSE(a.cancel());
  // A moved-from reservation holds nothing.
  Reservation e = std::move(d);
  EXPECT_FALSE(d.cancel());  // NOLINT(bugprone-use-after-move): the documented moved-from state
  EXPECT_TRUE(e.ok());
  // A refused reservation has nothing to give back.
  Reservation f = lim().reserve_at(id, "k", 1, Nanos(0), t0);
  EXPECT_FALSE(f.ok());
  EXPECT_FALSE(f.cancel());
  // A default one neither.
  Reservation g;
  EXPECT_FALSE(g.ok());
  EXPECT_FALSE(g.cancel());
}

TEST_F(ReserveOnSegment, CancelInAForkedChildDoesNothing) {
  const PolicyId id = lim().add_policy(vendor());
  const Nanos far(lim().now() + std::chrono::hours(1));
  (void)lim().reserve_at(id, "k", 2, Nanos::max(), far);
  Reservation r = lim().reserve_at(id, "k", 1, Nanos::max(), far);
  ASSERT_GT(r.delay(), Nanos(0));
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(r.cancel() ? 1 : 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // Still the parent's to give back.
  EXPECT_TRUE(r.cancel());
}

std::string tb_fields(std::uint64_t state) {
  std::string out;
  for (const StateField& f : state_fields(Algorithm::kTokenBucket, state)) {
    out += (out.empty() ? "" : " ") + f.name + " " + std::to_string(f.value);
  }
  return out;
}

// A token bucket of 2 tokens every 100 ms, burst 3: turns are its refill
// boundaries, 2 per boundary once the burst is spent.
PolicySpec tb_vendor() {
  PolicySpec s = unit::spec(Algorithm::kTokenBucket, 2, std::chrono::milliseconds(100), 3);
  s.name = "vendor-tb";
  return s;
}

TEST_F(ReserveOnSegment, TokenBucketTurnsQueueByItsRefillsAndAnAcquireWaitsBehindThem) {
  const PolicyId id = lim().add_policy(tb_vendor());
  const Nanos t0(1000 * kMs);  // refill index 10
  std::vector<std::int64_t> delays;
  for (int i = 0; i < 7; ++i) {
    const Reservation r = lim().reserve_at(id, "acct", 1, Nanos::max(), t0);
    ASSERT_TRUE(r.ok()) << i;
    EXPECT_EQ(r.time_to_act(), t0 + r.delay());
    delays.push_back(r.delay().count() / kMs);
  }
  EXPECT_EQ(delays, (std::vector<std::int64_t>{0, 0, 0, 100, 100, 200, 200}));
  // 4 tokens owed: an acquire now waits for the third boundary (300 ms).
  const Decision d = lim().acquire_at(id, "acct", 1, t0 + Nanos(50 * kMs));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, Nanos(250 * kMs));
  EXPECT_EQ(d.remaining, 0u);
  // The debt is the state: dump shows missing above burst.
  bool seen = false;
  for (const BucketView& b : lim().dump()) {
    if (b.key != "acct") continue;
    seen = true;
    EXPECT_EQ(tb_fields(b.state), "period_index 10 missing 7");
  }
  EXPECT_TRUE(seen);
  // Beyond max_wait: refused, nothing charged.
  const Reservation no = lim().reserve_at(id, "acct", 1, Nanos(299 * kMs), t0);
  EXPECT_FALSE(no.ok());
  EXPECT_EQ(no.delay(), Nanos(300 * kMs));
  EXPECT_EQ(no.decision().retry_after, Nanos(300 * kMs));
  const Reservation yes = lim().reserve_at(id, "acct", 1, Nanos(300 * kMs), t0);
  EXPECT_TRUE(yes.ok());
  EXPECT_EQ(yes.delay(), Nanos(300 * kMs));
  // 8 missing: the refills pay the debt down, 2 per boundary; at the
  // third (missing 2) one unit fits again, not before.
  EXPECT_FALSE(lim().acquire_at(id, "acct", 1, t0 + Nanos(299 * kMs)).allowed);
  EXPECT_TRUE(lim().acquire_at(id, "acct", 1, t0 + Nanos(300 * kMs)).allowed);
  // A debt is a legitimate state: check and the raw audit (shmlimit check)
  // are clean.
  const CheckReport c = lim().check(false);
  EXPECT_TRUE(c.clean());
  const CheckReport raw = Limiter::check_segment(name_.str());
  EXPECT_TRUE(raw.clean());
  EXPECT_EQ(raw.live, 1u);
  // Counted in the exact totals as acquires: 8 + 1 granted, 1 + 2 refused.
  for (const PolicyCounters& pc : lim().counters()) {
    if (pc.id.index != id.index) continue;
    EXPECT_EQ(pc.admitted, 9u);
    EXPECT_EQ(pc.denied, 3u);
  }
}

TEST_F(ReserveOnSegment, TokenBucketCancelGivesBackOnlyTheLastTurnBeforeItComes) {
  const PolicyId id = lim().add_policy(tb_vendor());
  const Nanos t0 = lim().now() + std::chrono::hours(1);  // turns well after the real clock
  Reservation a = lim().reserve_at(id, "k", 3, Nanos::max(), t0);  // the burst: now
  Reservation b = lim().reserve_at(id, "k", 2, Nanos::max(), t0);  // the next boundary
  Reservation c = lim().reserve_at(id, "k", 1, Nanos::max(), t0);  // the one after
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_GT(b.delay(), Nanos(0));
  ASSERT_EQ(c.time_to_act() - b.time_to_act(), Nanos(100 * kMs));
  EXPECT_FALSE(b.cancel());  // c queued behind it
  EXPECT_TRUE(c.cancel());   // the last turn: given back
  EXPECT_FALSE(c.cancel());  // spent
  // The next caller gets c's turn again.
  Reservation d = lim().reserve_at(id, "k", 1, Nanos::max(), t0);
  EXPECT_EQ(d.time_to_act(), c.time_to_act());
  // A denied acquire stores nothing: d is still the last turn.
  EXPECT_FALSE(lim().acquire_at(id, "k", 1, t0).allowed);
  EXPECT_TRUE(d.cancel());
  // A turn that was now (real clock) has come by the time of any cancel.
  Reservation now_turn = lim().reserve(id, "fresh", 1);
  ASSERT_TRUE(now_turn.ok());
  ASSERT_EQ(now_turn.delay(), Nanos(0));
  EXPECT_FALSE(now_turn.cancel());
  // A queued turn whose boundary has passed: TokenBucketCancelMaths (cancel
  // reads the real clock).
}

TEST_F(ReserveOnSegment, TokenBucketDebtRoundTripsThroughExportAndImport) {
  // 2 tokens per hour, burst 3: no refill during the test.
  PolicySpec s = unit::spec(Algorithm::kTokenBucket, 2, std::chrono::hours(1), 3);
  s.name = "hourly";
  unit::ScopedSegmentName tname("reserve-import");
  Limiter target = Limiter::create(unit::small_options(tname.str()));  // created first: its
  const PolicyId pt = target.add_policy(s);  // periods start no later than the source's
  const PolicyId id = lim().add_policy(s);
  ASSERT_TRUE(lim().reserve(id, "k", 3).ok());
  const Reservation q = lim().reserve(id, "k", 2, Nanos::max());
  ASSERT_TRUE(q.ok());
  ASSERT_GT(q.delay(), Nanos(0));
  const std::string doc = lim().export_state();
  EXPECT_NE(doc.find("\"missing\": 5"), std::string::npos) << doc;
  const ImportReport r = target.import_state(doc);
  EXPECT_EQ(r.imported, 1u) << doc;
  ASSERT_EQ(target.dump().size(), 1u);
  EXPECT_NE(tb_fields(target.dump()[0].state).find("missing 5"), std::string::npos);
  EXPECT_TRUE(target.check(false).clean());
  // The target queues behind the imported debt, as the source does.
  const Reservation next_src = lim().reserve(id, "k", 1, Nanos::max());
  const Reservation next_dst = target.reserve(pt, "k", 1, Nanos::max());
  ASSERT_TRUE(next_src.ok() && next_dst.ok());
  EXPECT_GT(next_dst.delay(), std::chrono::hours(1));  // the second boundary: 3 owed past burst
  EXPECT_GT(next_src.delay(), std::chrono::hours(1));
  // A count the state cannot hold is refused, naming the field.
  std::string bad = doc;
  bad.replace(bad.find("\"missing\": 5"), 12, "\"missing\": 1048576");
  const auto e = unit::catch_error([&] { target.import_state(bad); });
  ASSERT_TRUE(e);
  EXPECT_NE(std::string(e->what()).find("state.missing 1048576 is above 1048575, the most a token "
                                        "bucket's state counts"),
            std::string::npos)
      << e->what();
}

TEST_F(ReserveOnSegment, TokenBucketReplacementKeepsTheQueueOnlyWhenTheBurstDoesNotShrink) {
  PolicySpec s = unit::spec(Algorithm::kTokenBucket, 2, std::chrono::hours(1), 3);
  s.name = "hourly";
  const PolicyId id = lim().add_policy(s);
  ASSERT_TRUE(lim().reserve(id, "k", 3).ok());
  ASSERT_TRUE(lim().reserve(id, "k", 3, Nanos::max()).ok());  // missing 6: 3 owed
  // A larger burst keeps the bucket: 6 missing of 5 is 1 owed, still queued.
  s.burst = 5;
  const PolicyReplacement wider = lim().replace_policy(s);
  EXPECT_FALSE(wider.fresh);
  const Decision d = lim().peek(wider.id, "k", 1);
  EXPECT_FALSE(d.allowed);
  EXPECT_GT(d.retry_after, Nanos(0));
  // A smaller burst starts every bucket full (a new generation).
  s.burst = 2;
  const PolicyReplacement narrower = lim().replace_policy(s);
  EXPECT_TRUE(narrower.fresh);
  EXPECT_TRUE(lim().peek(narrower.id, "k", 2).allowed);
}

TEST_F(ReserveOnSegment, NeverQueuedAlgorithmsAcquireNowOrReportTheNextOpening) {
  const Nanos t0(1000 * kMs);
  PolicySpec fw = unit::spec(Algorithm::kFixedWindow, 2, std::chrono::seconds(1));
  fw.name = "fw";
  const PolicyId f = lim().add_policy(fw);
  EXPECT_TRUE(lim().reserve_at(f, "k", 2, Nanos::max(), t0).ok());
  const Reservation w = lim().reserve_at(f, "k", 1, Nanos::max(), t0 + Nanos(250 * kMs));
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(w.delay(), Nanos(750 * kMs));  // the next window opens at 2 s

  PolicySpec log = unit::spec(Algorithm::kSlidingLog, 2, std::chrono::seconds(1));
  log.name = "log";
  const PolicyId sl = lim().add_policy(log);
  EXPECT_TRUE(lim().reserve_at(sl, "k", 1, Nanos::max(), t0).ok());
  EXPECT_TRUE(lim().reserve_at(sl, "k", 1, Nanos::max(), t0 + Nanos(100 * kMs)).ok());
  const Reservation s = lim().reserve_at(sl, "k", 1, Nanos::max(), t0 + Nanos(100 * kMs));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.delay(), Nanos(900 * kMs));
}

TEST_F(ReserveOnSegment, ConcurrencyIsRefusedWithNeedsLease) {
  PolicySpec s = unit::spec(Algorithm::kConcurrency, 4, Nanos(0));
  s.name = "conn";
  const PolicyId id = lim().add_policy(s);
  const Reservation r = lim().reserve(id, "k");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.decision().reason, Reason::kNeedsLease);
  const Decision d = lim().wait_for(id, "k", 1, std::chrono::seconds(5));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, Reason::kNeedsLease);
}

TEST_F(ReserveOnSegment, HostileArgumentsGetAClearAnswer) {
  const PolicyId id = lim().add_policy(vendor());
  // Unknown policy id.
  EXPECT_EQ(lim().reserve(PolicyId{63}, "k").decision().reason, Reason::kUnknownPolicy);
  EXPECT_EQ(lim().reserve(PolicyId{100000}, "k").decision().reason, Reason::kUnknownPolicy);
  EXPECT_EQ(lim().wait_for(PolicyId{100000}, "k").reason, Reason::kUnknownPolicy);
  // A cost that can never fit: refused at once, never slept on.
  const Reservation big = lim().reserve(id, "k", std::numeric_limits<std::uint64_t>::max());
  EXPECT_FALSE(big.ok());
  EXPECT_EQ(big.decision().reason, Reason::kCostTooHigh);
  EXPECT_EQ(big.delay(), Nanos::max());
  EXPECT_EQ(lim().wait_for(id, "k", 3).reason, Reason::kCostTooHigh);
  // A key longer than the segment stores: on_full (allow by default), delay 0.
  const std::string long_key(lim().max_key_bytes() + 1, 'x');
  const Reservation lk = lim().reserve(id, long_key);
  EXPECT_EQ(lk.decision().reason, Reason::kKeyTooLong);
  EXPECT_EQ(lk.delay(), Nanos(0));
  // Negative or absurd waits.
  EXPECT_TRUE(lim().reserve(id, "neg", 1, Nanos(-5)).ok());  // a fresh bucket: no wait needed
  EXPECT_TRUE(lim().wait_for(id, "neg2", 1, Nanos(-5)).allowed);
  EXPECT_TRUE(lim().reserve(id, "max", 1, Nanos::max()).ok());
  // Deadlines at the ends of the clock's range: no overflow; the earliest
  // admits only a turn that is now.
  EXPECT_TRUE(lim().wait(id, "min", 1, std::chrono::steady_clock::time_point::min()).allowed);
  (void)lim().reserve(id, "min", 1);  // the burst of 2 is spent: the next turn is 100 ms on
  EXPECT_FALSE(lim().wait(id, "min", 1, std::chrono::steady_clock::time_point::min()).allowed);
  EXPECT_TRUE(lim().wait(id, "tmax", 1, std::chrono::steady_clock::time_point::max()).allowed);
}

// Real clock: wait() sleeps until each turn. Asserted from below only
// (a loaded machine sleeps longer, never shorter).
TEST_F(ReserveOnSegment, WaitSleepsUntilTheTurn) {
  PolicySpec s = unit::spec(Algorithm::kGcra, 100, std::chrono::seconds(1), 1);  // T = 10 ms
  s.name = "fast";
  const PolicyId id = lim().add_policy(s);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    const Decision d = lim().wait_for(id, "k", 1, std::chrono::seconds(30));
    ASSERT_TRUE(d.allowed) << i;
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(40));
  // The queue now reaches about 10 ms ahead: a wait allowed none is refused
  // at once; a deadline in the past likewise.
  (void)lim().reserve(id, "k", 1, Nanos::max());
  (void)lim().reserve(id, "k", 1, Nanos::max());
  EXPECT_FALSE(lim().wait_for(id, "k", 1, Nanos(0)).allowed);
  EXPECT_FALSE(
      lim().wait(id, "k", 1, std::chrono::steady_clock::now() - std::chrono::hours(1)).allowed);
}

TEST_F(ReserveOnSegment, WaitOnAWindowAsksAgainAtTheNextOpening) {
  PolicySpec s = unit::spec(Algorithm::kFixedWindow, 2, std::chrono::milliseconds(50));
  s.name = "fw50";
  const PolicyId id = lim().add_policy(s);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(lim().wait_for(id, "k", 1, std::chrono::seconds(30)).allowed) << i;
  }
  // 5 admissions at 2 per window span at least 3 windows: the last one is
  // at least 2 window boundaries after the first.
  const std::int64_t now = lim().now().count();
  EXPECT_GE(now, 100 * kMs);
}

}  // namespace
}  // namespace shmlimit
