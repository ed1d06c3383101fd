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

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

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

TEST(ReserveMaths, OnlyGcraAndTheLeakyBucketQueue) {
  using detail::ReserveMode;
  EXPECT_EQ(detail::reserve_mode(Algorithm::kGcra), ReserveMode::kQueue);
  EXPECT_EQ(detail::reserve_mode(Algorithm::kLeakyBucket), ReserveMode::kQueue);
  EXPECT_EQ(detail::reserve_mode(Algorithm::kConcurrency), ReserveMode::kNever);
  for (Algorithm a : {Algorithm::kTokenBucket, Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                      Algorithm::kQuietPeriod, Algorithm::kSlidingLog}) {
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

TEST_F(ReserveOnSegment, NeverQueuedAlgorithmsAcquireNowOrReportTheNextOpening) {
  const PolicyId tb = lim().add_policy(vendor(Algorithm::kTokenBucket));
  const Nanos t0(1000 * kMs);
  EXPECT_TRUE(lim().reserve_at(tb, "k", 2, Nanos::max(), t0).ok());
  Reservation r = lim().reserve_at(tb, "k", 1, Nanos::max(), t0);
  EXPECT_FALSE(r.ok());  // never queued, however long max_wait is
  EXPECT_EQ(r.decision().reason, Reason::kOk);
  EXPECT_EQ(r.delay(), r.decision().retry_after);
  EXPECT_GT(r.delay(), Nanos(0));
  EXPECT_FALSE(r.cancel());

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
