// The exact sliding window (Algorithm::kSlidingLog): the pure core as
// tables (sliding_log.hpp), DRF's wait() formula against values computed by
// DRF's own code, and the algorithm through a real segment.
#include "algorithms/sliding_log.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit::unit {
namespace {

using detail::log_decide;
using detail::log_entry;
using detail::LogParams;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::int64_t kMs = 1'000'000;

// One decision of the pure core on entries given as (version, time).
struct Entry {
  std::uint64_t version;
  std::int64_t t;  // -1: never written (0 in the log)
};

struct Row {
  const char* what;
  std::uint64_t count;
  std::int64_t window;
  std::vector<Entry> entries;  // count of them
  std::uint64_t version;
  std::int64_t now;
  std::uint64_t cost;
  // expected
  bool allowed;
  std::uint64_t remaining;
  std::int64_t retry_after;  // -1: Nanos::max()
  std::int64_t reset_after;
  Reason reason = Reason::kOk;
};

detail::LogOutcome run(const Row& r, LogWait wait = LogWait::kExact) {
  std::vector<std::uint64_t> e;
  for (const Entry& x : r.entries) e.push_back(x.t < 0 ? 0 : log_entry(x.version, x.t));
  std::vector<std::uint32_t> pick(r.count);
  std::vector<std::int64_t> scratch(r.count);
  return log_decide(LogParams{r.count, static_cast<std::uint64_t>(r.window), wait}, e, r.version,
                    r.now, r.cost, pick, scratch);
}

TEST(SlidingLogCore, DecisionTable) {
  const std::vector<Row> rows = {
      {"empty log admits", 3, 100, {{0, -1}, {0, -1}, {0, -1}}, 1, 50, 1, true, 2, 0, 100},
      {"cost 0 reports without charging",
       3,
       100,
       {{1, 10}, {0, -1}, {0, -1}},
       1,
       50,
       0,
       true,
       2,
       0,
       60},
      {"full log denies until the oldest leaves",
       3,
       100,
       {{1, 10}, {1, 20}, {1, 30}},
       1,
       50,
       1,
       false,
       0,
       60,
       80},
      {"cost 2 waits for the 2nd oldest",
       3,
       100,
       {{1, 30}, {1, 10}, {1, 20}},
       1,
       50,
       2,
       false,
       0,
       70,
       80},
      {"cost 3 waits for the 3rd oldest",
       3,
       100,
       {{1, 30}, {1, 10}, {1, 20}},
       1,
       50,
       3,
       false,
       0,
       80,
       80},
      {"cost above the count never fits",
       3,
       100,
       {{1, 10}, {0, -1}, {0, -1}},
       1,
       50,
       4,
       false,
       2,
       -1,
       60,
       Reason::kCostTooHigh},
      {"an entry leaves exactly at t + D",
       3,
       100,
       {{1, 10}, {1, 20}, {1, 30}},
       1,
       110,
       1,
       true,
       0,
       0,
       100},
      {"one ns before t + D it still counts",
       3,
       100,
       {{1, 10}, {1, 20}, {1, 30}},
       1,
       109,
       1,
       false,
       0,
       1,
       21},
      {"weighted cost takes several entries",
       5,
       100,
       {{1, 10}, {1, 20}, {0, -1}, {0, -1}, {0, -1}},
       1,
       50,
       3,
       true,
       0,
       0,
       100},
      {"weighted cost that does not fit waits for enough",
       5,
       100,
       {{1, 10}, {1, 20}, {0, -1}, {0, -1}, {0, -1}},
       1,
       50,
       4,
       false,
       3,
       60,
       70},
      {"another version's live entry is not this key's, nor free",
       3,
       100,
       {{2, 10}, {1, 20}, {1, 30}},
       1,
       50,
       1,
       false,
       0,
       60,
       80},
      {"another version's expired entry is free",
       3,
       100,
       {{2, 10}, {1, 20}, {1, 30}},
       1,
       115,
       1,
       true,
       0,
       0,
       100},
      // Reverse time: a reading earlier than the entries (another process's
      // clock was ahead) sees them all live and admits nothing extra.
      {"earlier now than every entry admits nothing extra",
       3,
       100,
       {{1, 10}, {1, 20}, {1, 30}},
       1,
       5,
       1,
       false,
       0,
       105,
       125},
      {"earlier now than a lone entry", 1, 100, {{1, 200}}, 1, 150, 1, false, 0, 150, 150},
      {"negative now counts as 0", 2, 100, {{1, 0}, {0, -1}}, 1, -50, 1, true, 0, 0, 100},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    const detail::LogOutcome out = run(r);
    EXPECT_EQ(out.decision.allowed, r.allowed);
    EXPECT_EQ(out.decision.limit, r.count);
    EXPECT_EQ(out.decision.remaining, r.remaining);
    EXPECT_EQ(out.decision.retry_after, r.retry_after < 0 ? Nanos::max() : Nanos(r.retry_after));
    EXPECT_EQ(out.decision.reset_after, Nanos(r.reset_after));
    EXPECT_EQ(out.decision.reason, r.reason);
    EXPECT_EQ(out.chosen, r.allowed ? r.cost : 0);
  }
}

TEST(SlidingLogCore, ChosenEntriesAreFreeAndDistinct) {
  const Row r{"", 5, 100, {{1, 10}, {0, -1}, {2, 20}, {1, 0}, {1, 30}}, 1, 105, 3, true, 0, 0, 100};
  // free: index 1 (never used), index 3 (t = 0 expired at 105); index 0
  // (t = 10) is live until 110; index 2 is another version's live entry.
  const detail::LogOutcome out = run(r);
  EXPECT_FALSE(out.decision.allowed);  // only 2 free: cost 3 does not fit
  EXPECT_EQ(out.decision.remaining, 2u);
  Row two = r;
  two.cost = 2;
  std::vector<std::uint64_t> e;
  for (const Entry& x : two.entries) e.push_back(x.t < 0 ? 0 : log_entry(x.version, x.t));
  std::vector<std::uint32_t> pick(5);
  std::vector<std::int64_t> scratch(5);
  const detail::LogOutcome ok =
      log_decide(LogParams{5, 100, LogWait::kExact}, e, 1, 105, 2, pick, scratch);
  ASSERT_TRUE(ok.decision.allowed);
  ASSERT_EQ(ok.chosen, 2u);
  std::vector<std::uint32_t> chosen(pick.begin(), pick.begin() + 2);
  std::sort(chosen.begin(), chosen.end());
  EXPECT_EQ(chosen, (std::vector<std::uint32_t>{1, 3}));
}

// DRF SimpleRateThrottle.wait(), values printed by
// tests/unit/drf_wait_reference.py, which runs DRF's own code (see there).
// Times in the script are seconds; here integer ns.
TEST(DrfWait, MatchesDjangoRestFrameworkAfterADenial) {
  struct Case {
    std::uint64_t count;
    std::int64_t window;
    std::vector<std::int64_t> history;  // ns, newest first (DRF's order)
    std::int64_t now;
    std::int64_t drf_wait;  // DRF's wait(), ns
  };
  constexpr std::int64_t s = 1'000'000'000;
  const std::vector<Case> cases = {
      {3, 60 * s, {30 * s, 20 * s, 10 * s}, 50 * s, 20 * s},         // 3/m ... 20.0
      {3, 60 * s, {30 * s, 20 * s, 10 * s}, 69 * s + s / 2, s / 2},  // 3/m ... 0.5
      {3, 60 * s, {59 * s, 58 * s, 1 * s}, 60 * s + s / 2, s / 2},   // 3/m ... 0.5
      {5, 1 * s, {900 * kMs, 800 * kMs, 700 * kMs, 600 * kMs, 500 * kMs}, s, s / 2},  // 5/s ... 0.5
      {1, 3600 * s, {100 * s}, 3000 * s, 700 * s},  // 1/h ... 700.0
      {4,
       60 * s,
       {50 * s, 40 * s, 30 * s, 20 * s},
       75 * s + s / 4,
       4 * s + 3 * s / 4},  // 4/m ... 4.75
  };
  for (const Case& c : cases) {
    Row r{"", c.count, c.window, {}, 1, c.now, 1, false, 0, 0, 0};
    for (std::int64_t t : c.history) r.entries.push_back({1, t});
    const detail::LogOutcome drf = run(r, LogWait::kDrf);
    EXPECT_FALSE(drf.decision.allowed);
    EXPECT_EQ(drf.decision.retry_after, Nanos(c.drf_wait)) << "now " << c.now;
    // With a full log DRF's formula and the exact wait agree (one slot needed).
    EXPECT_EQ(run(r, LogWait::kExact).decision.retry_after, Nanos(c.drf_wait));
  }
}

TEST(DrfWait, MatchesDjangoRestFrameworkOnShortHistories) {
  // The "direct" lines of drf_wait_reference.py: DRF's wait() on a
  // history shorter than the limit, which a denied cost > 1 meets here.
  struct Case {
    std::uint64_t count;
    std::int64_t window;
    std::vector<std::int64_t> history;
    std::int64_t now;
    std::int64_t drf_wait;
  };
  constexpr std::int64_t s = 1'000'000'000;
  const std::vector<Case> cases = {
      {5, 60 * s, {40 * s, 20 * s}, 50 * s, 7 * s + s / 2},            // 7.5
      {5, 60 * s, {}, 50 * s, 10 * s},                                 // 10.0
      {10, s, {250 * kMs, 125 * kMs, 62'500'000}, s / 2, 70'312'500},  // 0.0703125
      {3, 3600 * s, {1800 * s}, 3600 * s, 600 * s},                    // 600.0
  };
  for (const Case& c : cases) {
    Row r{"", c.count, c.window, {}, 1, c.now, 0, false, 0, 0, 0};
    for (std::int64_t t : c.history) r.entries.push_back({1, t});
    while (r.entries.size() < c.count) r.entries.push_back({0, -1});
    r.cost = c.count - c.history.size() + 1;  // one more than fits
    if (r.cost <= c.count) {                  // (an empty history admits every cost that can fit)
      const detail::LogOutcome drf = run(r, LogWait::kDrf);
      EXPECT_FALSE(drf.decision.allowed);
      EXPECT_EQ(drf.decision.retry_after, Nanos(c.drf_wait));
    }
    const std::int64_t oldest = c.history.empty() ? 0 : c.history.back();
    EXPECT_EQ(detail::log_drf_wait(
                  LogParams{c.count, static_cast<std::uint64_t>(c.window), LogWait::kDrf},
                  c.history.size(), oldest, c.now),
              Nanos(c.drf_wait));
  }
}

// ---- through a segment ------------------------------------------------------
class SlidingLog : public ::testing::Test {
 protected:
  void SetUp() override {
    Options o = small_options(name_.str(), 256);
    o.log_entries = 16;
    limiter_.emplace(Limiter::create(o));
  }
  PolicyId add(std::uint64_t count, Nanos window, LogWait wait = LogWait::kExact,
               const char* name = "log") {
    PolicySpec s{name, Algorithm::kSlidingLog, Rate{count, window}};
    s.wait = wait;
    return limiter_->add_policy(s);
  }
  ScopedSegmentName name_{"slog"};
  std::optional<Limiter> limiter_;
};

Nanos ms(std::int64_t v) { return milliseconds(v); }

TEST_F(SlidingLog, AdmitsNPerWindowAndReportsTheExactWait) {
  const PolicyId id = add(3, ms(100));
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, ms(0)).allowed);
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, ms(10)).allowed);
  const Decision third = limiter_->acquire_at(id, "k", 1, ms(20));
  EXPECT_TRUE(third.allowed);
  EXPECT_EQ(third.remaining, 0u);
  EXPECT_EQ(third.reset_after, ms(100));
  const Decision d = limiter_->acquire_at(id, "k", 1, ms(50));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, 3u);
  EXPECT_EQ(d.retry_after, ms(50));  // the admission at 0 leaves at 100
  EXPECT_EQ(d.reset_after, ms(70));  // the one at 20 leaves at 120
  EXPECT_FALSE(limiter_->acquire_at(id, "k", 1, ms(100) - Nanos(1)).allowed);
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, ms(100)).allowed);
  EXPECT_FALSE(limiter_->acquire_at(id, "k", 1, ms(105)).allowed);
  // Unlike a fixed window, the boundary gives no second burst.
  EXPECT_TRUE(limiter_->acquire_at(id, "other", 3, ms(10)).allowed);
  EXPECT_FALSE(limiter_->acquire_at(id, "other", 1, ms(109)).allowed);
}

TEST_F(SlidingLog, DrfWaitModeReportsDrfsFormula) {
  const PolicyId id = add(5, seconds(60), LogWait::kDrf);
  constexpr std::int64_t s = 1'000'000'000;
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, Nanos(20 * s)).allowed);
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, Nanos(40 * s)).allowed);
  // 2 in the window, cost 4 > 3 free: DRF's (60 - (50 - 20)) / (5 - 2 + 1) = 7.5 s
  const Decision d = limiter_->acquire_at(id, "k", 4, Nanos(50 * s));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, Nanos(7 * s + s / 2));
  EXPECT_EQ(limiter_->policies()[0].spec.wait, LogWait::kDrf);
}

TEST_F(SlidingLog, WeightedCostAndCostTooHigh) {
  const PolicyId id = add(4, ms(100));
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 3, ms(0)).allowed);
  const Decision two = limiter_->acquire_at(id, "k", 2, ms(1));
  EXPECT_FALSE(two.allowed);
  EXPECT_EQ(two.remaining, 1u);
  EXPECT_EQ(two.retry_after, ms(99));
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, ms(1)).allowed);
  const Decision big = limiter_->acquire_at(id, "k", 5, ms(2));
  EXPECT_EQ(big.reason, Reason::kCostTooHigh);
  EXPECT_EQ(big.retry_after, Nanos::max());
}

TEST_F(SlidingLog, AnEarlierReadingNeverAdmitsExtra) {
  const PolicyId id = add(1, ms(100));
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, ms(100)).allowed);
  EXPECT_FALSE(limiter_->acquire_at(id, "k", 1, ms(50)).allowed);  // another process's clock behind
  EXPECT_FALSE(limiter_->acquire_at(id, "k", 1, ms(199)).allowed);
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 1, ms(200)).allowed);
}

TEST_F(SlidingLog, ResetForgetsTheKeysAdmissions) {
  const PolicyId id = add(2, ms(1000));
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 2, ms(0)).allowed);
  EXPECT_FALSE(limiter_->acquire_at(id, "k", 1, ms(1)).allowed);
  EXPECT_EQ(limiter_->reset(id, std::string_view("k")), 1u);
  EXPECT_TRUE(limiter_->acquire_at(id, "k", 2, ms(2)).allowed);  // a full log again, not garbage
  EXPECT_FALSE(limiter_->acquire_at(id, "k", 1, ms(3)).allowed);
  EXPECT_TRUE(limiter_->check().clean());
}

TEST_F(SlidingLog, RefundGivesBackTheNewest) {
  const PolicyId id = add(3, seconds(10));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter_->acquire(id, "k").allowed);
  EXPECT_FALSE(limiter_->peek(id, "k").allowed);
  const Decision r = limiter_->refund(id, "k", 2);
  EXPECT_EQ(r.remaining, 2u);
  EXPECT_TRUE(limiter_->acquire(id, "k", 2).allowed);
  EXPECT_FALSE(limiter_->acquire(id, "k").allowed);
}

TEST_F(SlidingLog, MultiLimitDenialChargesNoEntry) {
  const PolicyId log = add(5, seconds(10));
  const PolicyId gcra = limiter_->add_policy({"g", Algorithm::kGcra, Rate{1, seconds(10)}, 1});
  const Request both[] = {{log, "k", 2}, {gcra, "k", 1}};
  EXPECT_TRUE(limiter_->acquire_many_at(both, ms(0)).allowed);
  // The GCRA limit is spent: the next all-or-nothing pair charges neither.
  EXPECT_FALSE(limiter_->acquire_many_at(both, ms(1)).allowed);
  EXPECT_EQ(limiter_->peek(log, "k", 0).remaining, 3u);  // at the live clock, inside the window
}

TEST_F(SlidingLog, PoliciesNeedEnoughLogEntries) {
  const auto e = catch_error([&] { add(17, seconds(1)); });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(e->what()).find("log_entries >= 17"), std::string::npos) << e->what();

  ScopedSegmentName other("slog-none");
  Limiter none = Limiter::create(small_options(other.str(), 64));
  const auto e2 = catch_error([&] {
    none.add_policy({"x", Algorithm::kSlidingLog, Rate{1, seconds(1)}});
  });
  ASSERT_TRUE(e2.has_value());
  EXPECT_NE(std::string(e2->what()).find("log_entries = 0"), std::string::npos) << e2->what();
}

TEST_F(SlidingLog, DumpShowsTheLogAsItIs) {
  const PolicyId id = add(4, seconds(100));
  ASSERT_TRUE(limiter_->acquire(id, "k", 3).allowed);
  const auto rows = limiter_->dump();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].now.remaining, 1u);
  EXPECT_TRUE(rows[0].now.allowed);
  EXPECT_GT(rows[0].now.reset_after, Nanos(0));
}

// Against a model that keeps every admission time (DRF's history with
// cost k as k entries): a long random schedule on one key decides alike.
TEST_F(SlidingLog, AgreesWithAHistoryModelOnARandomSchedule) {
  const std::uint64_t n = 7;
  const std::int64_t window = 50 * kMs;
  const PolicyId id = add(n, Nanos(window));
  std::mt19937_64 rng(7);
  std::deque<std::int64_t> history;
  std::int64_t now = 0;
  int admitted = 0;
  for (int i = 0; i < 5000; ++i) {
    now += static_cast<std::int64_t>(rng() % (4 * kMs));
    const std::uint64_t cost = 1 + rng() % 3;
    while (!history.empty() && history.front() + window <= now) history.pop_front();
    const bool model = history.size() + cost <= n;
    if (model) {
      for (std::uint64_t k = 0; k < cost; ++k) history.push_back(now);
      ++admitted;
    }
    const Decision d = limiter_->acquire_at(id, "k", cost, Nanos(now));
    ASSERT_EQ(d.allowed, model) << "step " << i << " now " << now;
    if (!d.allowed) {
      // The exact wait: the cost-th... here the (history + cost - n)-th oldest leaves.
      const std::size_t need = history.size() + cost - n;
      EXPECT_EQ(d.retry_after, Nanos(history[need - 1] + window - now));
    }
  }
  EXPECT_GT(admitted, 500);  // the schedule exercises both answers
}

TEST(SlidingLogLarge, CountsAbove64UseTheWholeLog) {
  ScopedSegmentName name("slog-large");
  Options o = small_options(name.str(), 64);
  o.log_entries = 300;
  Limiter l = Limiter::create(o);
  const PolicyId id = l.add_policy({"big", Algorithm::kSlidingLog, Rate{300, seconds(1)}});
  EXPECT_TRUE(l.acquire_at(id, "k", 200, ms(0)).allowed);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(l.acquire_at(id, "k", 1, ms(1 + i)).allowed) << i;
  const Decision d = l.acquire_at(id, "k", 2, ms(500));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, ms(500));  // the 200 at 0 leave at 1 s
  EXPECT_TRUE(l.acquire_at(id, "k", 200, ms(1000)).allowed);
  EXPECT_FALSE(l.acquire_at(id, "k", 1, ms(1000)).allowed);
}

TEST(SlidingLogConfig, ParsesLogEntriesAndWait) {
  const Config c = parse_config(R"(
[segment]
name = "/x"
log_entries = 100

[policies.drf]
algorithm = "sliding_log"
rate = "100/hour"
wait = "drf"
)",
                                "t.toml");
  EXPECT_EQ(c.segment.log_entries, 100u);
  ASSERT_EQ(c.policies.size(), 1u);
  EXPECT_EQ(c.policies[0].algorithm, Algorithm::kSlidingLog);
  EXPECT_EQ(c.policies[0].wait, LogWait::kDrf);
  EXPECT_EQ(c.policies[0].rate.count, 100u);
}

TEST(SlidingLogConfig, ErrorsNameTheLineAndWhatToSet) {
  const auto msg = [](const char* text) {
    const auto e = catch_error([&] { parse_config(text, "t.toml"); });
    return e ? std::string(e->what()) : std::string("no error");
  };
  EXPECT_EQ(msg("[segment]\nname = \"/x\"\nlog_entries = 10\n[policies.a]\nalgorithm = "
                "\"sliding_log\"\nrate = "
                "\"20/m\"\n")
                .rfind("t.toml:6:8: policy \"a\": sliding_log keeps 20 admissions per key but "
                       "[segment] log_entries "
                       "is 10; set [segment] log_entries >= 20",
                       0),
            0u);
  EXPECT_NE(msg("[segment]\nname = \"/x\"\n[policies.a]\nrate = \"1/s\"\nwait = \"drf\"\n")
                .find("t.toml:5:8: policy \"a\": wait applies to algorithm = \"sliding_log\" only"),
            std::string::npos);
  EXPECT_NE(
      msg("[segment]\nname = \"/x\"\nlog_entries = 10\n[policies.a]\nalgorithm = "
          "\"sliding_log\"\nrate = "
          "\"1/s\"\nwait = \"soon\"\n")
          .find("t.toml:7:8: policy \"a\": wait must be \"exact\" or \"drf\", found \"soon\""),
      std::string::npos);
  EXPECT_NE(msg("[segment]\nname = \"/x\"\nlog_entries = 5000\n").find("t.toml:3:15"),
            std::string::npos);
}

}  // namespace
}  // namespace shmlimit::unit
