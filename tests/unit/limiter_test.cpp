// The public Limiter on a real segment, driven with acquire_at (explicit
// times, ns since the segment epoch) so that nothing depends on the wall
// clock: policy registration, end-to-end GCRA decisions (checked against
// the pure function detail::gcra_decide), peeks, byte-string keys, dump and
// stats, the full table (fail open / fail closed, no eviction of penalised
// buckets, lossless reclaim of full ones), the clock horizon and a corrupt
// policy entry.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "algorithms/gcra.hpp"
#include "segment/layout.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using unit::catch_error;
using unit::ScopedSegmentName;
using unit::small_options;

constexpr Nanos kT0{1'000'000'000};  // an arbitrary time after the epoch

PolicySpec spec(const std::string& name, std::uint64_t count, Nanos period, std::uint64_t burst = 0,
                OnFull on_full = OnFull::kAllow) {
  PolicySpec s;
  s.name = name;
  s.rate = Rate{count, period};
  s.burst = burst;
  s.on_full = on_full;
  return s;
}

detail::GcraParams params_of(const PolicySpec& s) {
  return detail::GcraParams{
      detail::gcra_emission(s.rate.count, static_cast<std::uint64_t>(s.rate.period.count())),
      s.burst == 0 ? s.rate.count : s.burst};
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A segment of its own per test; the name is removed after the handle.
class LimiterTest : public ::testing::Test {
 protected:
  explicit LimiterTest(Options o = {}) : limiter_(make(name_, std::move(o))) {}

  static Limiter make(const ScopedSegmentName& name, Options o) {
    if (o.name.empty()) o = small_options(name.str());
    o.name = name.str();
    return Limiter::create(o);
  }

  // Drives two identical policies, one with keys the fast path takes and
  // one with keys it leaves to the general path (FastPathDecides...).
  void expect_fast_path_agrees(const PolicySpec& fast_spec, const PolicySpec& slow_spec);

  const BucketView* find_bucket(const std::vector<BucketView>& dump, const std::string& policy,
                                const std::string& key) {
    for (const BucketView& b : dump) {
      if (b.policy == policy && b.key == key) return &b;
    }
    return nullptr;
  }

  ScopedSegmentName name_{"lim"};  // first: outlives the handle
  Limiter limiter_;
};

// ---------------------------------------------------------------------------
// Policy registration.
TEST_F(LimiterTest, SameSpecReturnsTheSameId) {
  const PolicyId a = limiter_.add_policy(spec("api", 10, seconds(1)));
  const PolicyId b = limiter_.add_policy(spec("login", 5, minutes(1)));
  EXPECT_NE(a.index, b.index);
  EXPECT_EQ(limiter_.add_policy(spec("api", 10, seconds(1))).index, a.index);
  // burst 0 means rate.count: the explicit spelling is the same spec.
  EXPECT_EQ(limiter_.add_policy(spec("api", 10, seconds(1), 10)).index, a.index);
  EXPECT_EQ(limiter_.add_policy(spec("api", 10, seconds(1)), /*replace=*/true).index, a.index);
  ASSERT_TRUE(limiter_.find_policy("api").has_value());
  EXPECT_EQ(limiter_.find_policy("api")->index, a.index);
  EXPECT_EQ(limiter_.find_policy("login")->index, b.index);
  EXPECT_FALSE(limiter_.find_policy("nope").has_value());
  EXPECT_FALSE(limiter_.find_policy("").has_value());

  const std::vector<PolicyView> all = limiter_.policies();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id.index, a.index);
  EXPECT_EQ(all[0].spec, spec("api", 10, seconds(1), 10));
  EXPECT_EQ(all[1].spec, spec("login", 5, minutes(1), 5));
}

TEST_F(LimiterTest, OtherSpecUnderTheSameNameIsAConflictNamingTheExistingRate) {
  limiter_.add_policy(spec("api", 10, minutes(1)));
  const std::vector<PolicySpec> others = {
      spec("api", 20, minutes(1)),                    // other count
      spec("api", 10, minutes(2)),                    // other period
      spec("api", 10, minutes(1), 3),                 // other burst
      spec("api", 10, minutes(1), 0, OnFull::kDeny),  // other on_full
  };
  for (const PolicySpec& other : others) {
    const auto err = catch_error([&] { limiter_.add_policy(other); });
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code(), ErrorCode::kPolicyConflict);
    EXPECT_TRUE(contains(err->what(), "10/m")) << err->what();
    EXPECT_TRUE(contains(err->what(), "api")) << err->what();
  }
  // Nothing changed.
  ASSERT_EQ(limiter_.policies().size(), 1u);
  EXPECT_EQ(limiter_.policies()[0].spec, spec("api", 10, minutes(1), 10));
}

TEST_F(LimiterTest, ReplaceChangesParametersAndKeepsBucketState) {
  const PolicySpec before = spec("api", 5, seconds(1));  // T = 200 ms, B = 5
  const PolicyId id = limiter_.add_policy(before);
  ASSERT_TRUE(limiter_.acquire_at(id, "k", 5, kT0).allowed);  // drained
  const auto tat = static_cast<std::uint64_t>(kT0.count()) + 5 * params_of(before).emission_ns;

  const PolicySpec after = spec("api", 10, seconds(1), 0, OnFull::kDeny);  // T = 100 ms, B = 10
  EXPECT_EQ(limiter_.add_policy(after, /*replace=*/true).index, id.index);
  EXPECT_EQ(limiter_.policies()[0].spec, spec("api", 10, seconds(1), 10, OnFull::kDeny));

  // The drained bucket (TAT one second ahead) is drained under the new
  // parameters too; a reset bucket would admit 10 here.
  const Decision d = limiter_.acquire_at(id, "k", 1, kT0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.limit, 10u);
  EXPECT_TRUE(
      same_decision(d, detail::gcra_decide(tat, kT0.count(), 1, params_of(after)).decision));
  // One new interval (100 ms) later, one more.
  const Nanos later = kT0 + Nanos(100'000'000);
  EXPECT_TRUE(same_decision(limiter_.acquire_at(id, "k", 1, later),
                            detail::gcra_decide(tat, later.count(), 1, params_of(after)).decision));
  EXPECT_TRUE(limiter_.find_policy("api").has_value());
}

class LimiterBadPolicyName : public LimiterTest,
                             public ::testing::WithParamInterface<std::string> {};

TEST_P(LimiterBadPolicyName, IsInvalidArgument) {
  const auto err = catch_error([&] { limiter_.add_policy(spec(GetParam(), 1, seconds(1))); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument) << err->what();
  EXPECT_TRUE(limiter_.policies().empty());
}

INSTANTIATE_TEST_SUITE_P(Table, LimiterBadPolicyName,
                         ::testing::Values(std::string(""), std::string(32, 'a'),
                                           std::string("bad name"), std::string("a/b"),
                                           std::string("tab\t"), std::string("caf\xc3\xa9"),
                                           std::string("nul\0", 4), std::string("semi;colon")));

TEST_F(LimiterTest, PolicyNamesOfUpTo31AllowedCharactersAreAccepted) {
  for (const std::string& name :
       {std::string(31, 'a'), std::string("A-z_0.9:x"), std::string("x")}) {
    const PolicyId id = limiter_.add_policy(spec(name, 1, seconds(1)));
    ASSERT_TRUE(limiter_.find_policy(name).has_value()) << name;
    EXPECT_EQ(limiter_.find_policy(name)->index, id.index);
  }
}

TEST_F(LimiterTest, SixtyFifthPolicyIsTableFull) {
  for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
    EXPECT_EQ(limiter_.add_policy(spec("p" + std::to_string(i), 1, seconds(1))).index, i);
  }
  const auto err = catch_error([&] { limiter_.add_policy(spec("one-too-many", 1, seconds(1))); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kTableFull);
  // Existing ones still resolve.
  EXPECT_EQ(limiter_.add_policy(spec("p63", 1, seconds(1))).index, 63u);
  EXPECT_EQ(limiter_.policies().size(), 64u);
}

TEST_F(LimiterTest, BurstTimesIntervalBeyond2To55IsInvalidArgument) {
  // T = 1 s: the largest burst is floor(2^55 / 1e9).
  const std::uint64_t max_burst = detail::kMaxTauNs / 1'000'000'000;
  EXPECT_NO_THROW(limiter_.add_policy(spec("edge", 1, seconds(1), max_burst)));
  const std::vector<PolicySpec> bad = {
      spec("over", 1, seconds(1), max_burst + 1),
      spec("long", 1, hours(24 * 3660)),  // T alone is beyond 2^55 ns
      spec("zero-count", 0, seconds(1)),
      spec("zero-period", 1, Nanos(0)),
      spec("negative-period", 1, Nanos(-5)),
  };
  for (const PolicySpec& s : bad) {
    const auto err = catch_error([&] { limiter_.add_policy(s); });
    ASSERT_TRUE(err) << s.name;
    EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument) << s.name << ": " << err->what();
    EXPECT_FALSE(limiter_.find_policy(s.name).has_value()) << s.name;
  }
  PolicySpec algo = spec("algo", 1, seconds(1));
  algo.algorithm = static_cast<Algorithm>(77);
  PolicySpec full = spec("full", 1, seconds(1));
  full.on_full = static_cast<OnFull>(9);
  for (const PolicySpec& s : {algo, full}) {
    const auto err = catch_error([&] { limiter_.add_policy(s); });
    ASSERT_TRUE(err) << s.name;
    EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument) << s.name;
  }
}

// ---------------------------------------------------------------------------
// Decisions end to end.
TEST_F(LimiterTest, FreshKeyAdmitsBurstAtOnceThenOnePerInterval) {
  const PolicyId id = limiter_.add_policy(spec("api", 10, seconds(1), 5));  // T = 100 ms, B = 5
  const Nanos T(100'000'000);
  for (std::uint64_t i = 1; i <= 5; ++i) {
    const Decision d = limiter_.acquire_at(id, "k", 1, kT0);
    ASSERT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.limit, 5u);
    EXPECT_EQ(d.remaining, 5 - i);
    EXPECT_EQ(d.retry_after, Nanos(0));
    EXPECT_EQ(d.reset_after, static_cast<std::int64_t>(i) * T);
    EXPECT_EQ(d.reason, Reason::kOk);
  }
  const Decision denied = limiter_.acquire_at(id, "k", 1, kT0);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.reason, Reason::kOk);
  EXPECT_EQ(denied.retry_after, T);
  EXPECT_EQ(denied.reset_after, 5 * T);
  EXPECT_FALSE(limiter_.acquire_at(id, "k", 1, kT0 + T - Nanos(1)).allowed);
  EXPECT_EQ(limiter_.acquire_at(id, "k", 1, kT0 + T - Nanos(1)).retry_after, Nanos(1));
  EXPECT_TRUE(limiter_.acquire_at(id, "k", 1, kT0 + T).allowed);
  EXPECT_FALSE(limiter_.acquire_at(id, "k", 1, kT0 + T).allowed);
  EXPECT_TRUE(limiter_.acquire_at(id, "k", 1, kT0 + 2 * T).allowed);
  // Idle for long: the whole burst again, not more.
  EXPECT_TRUE(limiter_.acquire_at(id, "k", 5, kT0 + 100 * T).allowed);
  EXPECT_FALSE(limiter_.acquire_at(id, "k", 1, kT0 + 100 * T).allowed);
}

TEST_F(LimiterTest, NegativeTimeIsTreatedAsTheEpoch) {
  const PolicyId id = limiter_.add_policy(spec("api", 1, seconds(1)));  // T = 1 s, B = 1
  const Decision d = limiter_.acquire_at(id, "k", 1, Nanos(-5));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.reset_after, seconds(1));
  const std::vector<BucketView> dump = limiter_.dump();
  ASSERT_EQ(dump.size(), 1u);
  EXPECT_EQ(dump[0].state, 1'000'000'000u);
  EXPECT_FALSE(limiter_.acquire_at(id, "k", 1, Nanos(0)).allowed);
}

// Random sequences with out-of-order clock readings, zero and oversized
// costs, on two keys: every decision equals the pure function applied to a
// model of each bucket's state.
struct DiffCase {
  std::uint64_t count;
  Nanos period;
  std::uint64_t burst;
};

class LimiterMatchesPureFunction
    : public LimiterTest,
      public ::testing::WithParamInterface<std::tuple<DiffCase, std::uint64_t>> {};

TEST_P(LimiterMatchesPureFunction, OnRandomSequences) {
  const auto& [c, seed] = GetParam();
  const PolicySpec s = spec("p", c.count, c.period, c.burst);
  const detail::GcraParams p = params_of(s);
  const PolicyId id = limiter_.add_policy(s);
  std::mt19937_64 rng(seed);
  const auto T = static_cast<std::int64_t>(p.emission_ns);
  std::map<std::string, std::uint64_t> model = {{"alpha", 0}, {std::string("b\0", 2), 0}};
  std::map<std::string, std::uint64_t> admitted,
      denied;  // per-slot counters, once the key has a slot
  std::int64_t clock = static_cast<std::int64_t>(rng() % 1000) - 500;
  // Both keys claim their slots first: no later decision claims a slot, so
  // none can reclaim the other key's bucket once it has refilled (which
  // restarts its approximate per-key counts, depending on where the
  // segment's random hash seed puts the two keys).
  for (const auto& [key, tat] : model) {
    const detail::GcraOutcome want = detail::gcra_decide(tat, clock, 1, p);
    ASSERT_TRUE(want.store) << key;
    ASSERT_TRUE(same_decision(limiter_.acquire_at(id, key, 1, Nanos(clock)), want.decision)) << key;
    model[key] = want.new_state;
    ++admitted[key];
  }
  for (int i = 0; i < 1500; ++i) {
    clock += static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(T + T / 2 + 1));
    std::int64_t now = clock;
    if (rng() % 8 == 0) now -= static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(T + 1));
    const std::uint64_t r = rng() % 16;
    const std::uint64_t cost = r < 10 ? 1 : r < 12 ? 0 : r < 15 ? 1 + rng() % p.burst : p.burst + 1;
    const std::string key = rng() % 2 == 0 ? "alpha" : std::string("b\0", 2);

    const detail::GcraOutcome want = detail::gcra_decide(model[key], now, cost, p);
    const Decision got = limiter_.acquire_at(id, key, cost, Nanos(now));
    ASSERT_TRUE(same_decision(got, want.decision))
        << "step " << i << " now " << now << " cost " << cost;
    const bool had_slot = model[key] != 0;
    if (want.store) {
      model[key] = want.new_state;
      ++admitted[key];
    }
    if (had_slot && !want.decision.allowed) ++denied[key];
  }
  // The dump shows the same states and counts.
  const std::vector<BucketView> dump = limiter_.dump();
  for (const auto& [key, tat] : model) {
    if (tat == 0) continue;  // never charged: no slot
    const BucketView* b = find_bucket(dump, "p", key);
    ASSERT_NE(b, nullptr) << key;
    EXPECT_EQ(b->state, tat) << key;
    EXPECT_EQ(b->admitted, admitted[key]) << key;
    EXPECT_EQ(b->denied, denied[key]) << key;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Seeds, LimiterMatchesPureFunction,
    ::testing::Combine(::testing::Values(DiffCase{7, seconds(1), 7}, DiffCase{3, seconds(1), 10},
                                         DiffCase{100, minutes(1), 5}, DiffCase{1, hours(1), 1},
                                         DiffCase{1'000'000'000, seconds(1), 3}),
                       ::testing::Range<std::uint64_t>(1, 7)));

TEST_F(LimiterTest, PeekNeverClaimsASlotAndNeverCharges) {
  const PolicyId id = limiter_.add_policy(spec("api", 3, hours(1)));  // B = 3, T = 20 min
  for (int i = 0; i < 10; ++i) {
    const Decision d = limiter_.peek(id, "new");
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 2u);  // what acquire would say
    EXPECT_EQ(d.reason, Reason::kOk);
  }
  EXPECT_EQ(limiter_.stats().used, 0u);
  EXPECT_TRUE(limiter_.dump().empty());
  // The whole burst is still there.
  EXPECT_TRUE(limiter_.acquire_at(id, "new", 3, limiter_.now()).allowed);

  // On an existing bucket: the state and the counters do not move.
  ASSERT_TRUE(limiter_.acquire_at(id, "old", 1, limiter_.now()).allowed);
  const std::vector<BucketView> before = limiter_.dump();
  for (int i = 0; i < 10; ++i) {
    const Decision d = limiter_.peek(id, "old", 2);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_FALSE(limiter_.peek(id, "old", 3).allowed);
  }
  const std::vector<BucketView> after = limiter_.dump();
  const BucketView* b0 = find_bucket(before, "api", "old");
  const BucketView* b1 = find_bucket(after, "api", "old");
  ASSERT_TRUE(b0 && b1);
  EXPECT_EQ(b0->state, b1->state);
  EXPECT_EQ(b1->admitted, 1u);
  EXPECT_EQ(b1->denied, 0u);
  EXPECT_EQ(limiter_.stats().used, 2u);
  EXPECT_TRUE(limiter_.acquire_at(id, "old", 2, limiter_.now()).allowed);
}

TEST_F(LimiterTest, CostZeroReportsWithoutChargingOrClaiming) {
  const PolicyId id = limiter_.add_policy(spec("api", 10, seconds(1), 5));  // T = 100 ms
  const Decision fresh = limiter_.acquire_at(id, "k", 0, kT0);
  EXPECT_TRUE(fresh.allowed);
  EXPECT_EQ(fresh.remaining, 5u);
  EXPECT_EQ(fresh.reset_after, Nanos(0));
  EXPECT_EQ(limiter_.stats().used, 0u);

  ASSERT_TRUE(limiter_.acquire_at(id, "k", 2, kT0).allowed);
  for (int i = 0; i < 5; ++i) {
    const Decision d = limiter_.acquire_at(id, "k", 0, kT0);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 3u);
    EXPECT_EQ(d.reset_after, Nanos(200'000'000));
  }
  const std::vector<BucketView> dump = limiter_.dump();
  ASSERT_EQ(dump.size(), 1u);
  EXPECT_EQ(dump[0].admitted, 1u);
  EXPECT_EQ(dump[0].state, static_cast<std::uint64_t>(kT0.count()) + 200'000'000u);
  EXPECT_TRUE(limiter_.acquire_at(id, "k", 3, kT0).allowed);
}

TEST_F(LimiterTest, CostAboveBurstIsDeniedWithoutTakingASlot) {
  const PolicyId id = limiter_.add_policy(spec("api", 10, seconds(1), 5));
  for (const std::uint64_t cost :
       {std::uint64_t{6}, std::uint64_t{1000}, std::numeric_limits<std::uint64_t>::max()}) {
    const Decision d = limiter_.acquire_at(id, "k", cost, kT0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.reason, Reason::kCostTooHigh);
    EXPECT_EQ(d.retry_after, Nanos::max());
    EXPECT_EQ(d.remaining, 5u);
  }
  EXPECT_EQ(limiter_.stats().used, 0u);
}

TEST_F(LimiterTest, UnknownPolicyIsDeniedWithoutTakingASlot) {
  const auto check = [&](const Decision& d, const char* what) {
    EXPECT_FALSE(d.allowed) << what;
    EXPECT_EQ(d.reason, Reason::kUnknownPolicy) << what;
  };
  check(limiter_.acquire_at(PolicyId{0}, "k", 1, kT0), "no policies yet");
  check(limiter_.acquire(PolicyId{0}, "k"), "acquire, no policies yet");
  check(limiter_.peek(PolicyId{0}, "k"), "peek, no policies yet");
  limiter_.add_policy(spec("api", 1, seconds(1)));
  for (const std::uint32_t index :
       {1u, 63u, 64u, 65u, 1000u, std::numeric_limits<std::uint32_t>::max()}) {
    check(limiter_.acquire_at(PolicyId{index}, "k", 1, kT0), "index");
    check(limiter_.acquire(PolicyId{index}, "k", 0), "index, cost 0");
  }
  check(limiter_.acquire("nope", "k"), "by name");
  check(limiter_.acquire("", "k"), "empty name");
  check(limiter_.acquire(std::string(100, 'a'), "k"), "long name");
  EXPECT_EQ(limiter_.stats().used, 0u);
}

TEST_F(LimiterTest, AcquireByNameChargesTheSameBucketAsById) {
  const PolicyId id = limiter_.add_policy(spec("api", 1, hours(1), 3));  // T = 1 h
  for (int i = 0; i < 3; ++i) {
    const Decision d = limiter_.acquire("api", "k");
    EXPECT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.reason, Reason::kOk);
    EXPECT_EQ(d.remaining, static_cast<std::uint64_t>(2 - i));
  }
  EXPECT_FALSE(limiter_.acquire_at(id, "k", 1, limiter_.now()).allowed);
  EXPECT_FALSE(limiter_.acquire(id, "k").allowed);
  const Decision d = limiter_.acquire("api", "k");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, Reason::kOk);
  EXPECT_GT(d.retry_after, Nanos(0));
  EXPECT_LE(d.retry_after, hours(1));
}

// ---------------------------------------------------------------------------
// Keys.
class LimiterKeyTooLong : public ::testing::TestWithParam<std::tuple<std::uint32_t, OnFull>> {};

TEST_P(LimiterKeyTooLong, AppliesOnFullWithoutTakingASlot) {
  const auto [slot_bytes, on_full] = GetParam();
  ScopedSegmentName name("key");
  Options o = small_options(name.str(), 64);
  o.slot_bytes = slot_bytes;
  Limiter l = Limiter::create(o);
  ASSERT_EQ(l.max_key_bytes(), slot_bytes - 40);
  const PolicyId id = l.add_policy(spec("api", 1, hours(1), 1, on_full));

  const std::string longest(l.max_key_bytes(), 'k');
  EXPECT_TRUE(l.acquire_at(id, longest, 1, kT0).allowed);
  EXPECT_FALSE(l.acquire_at(id, longest, 1, kT0).allowed);  // a real bucket
  EXPECT_EQ(l.stats().used, 1u);

  for (const std::size_t len :
       {std::size_t{l.max_key_bytes()} + 1, std::size_t{300}, std::size_t{70000}}) {
    const std::string key(len, 'k');
    for (int i = 0; i < 3; ++i) {  // the same answer every time: no bucket
      const Decision d = l.acquire_at(id, key, 1, kT0);
      EXPECT_EQ(d.reason, Reason::kKeyTooLong) << len;
      EXPECT_EQ(d.allowed, on_full == OnFull::kAllow) << len;
    }
    EXPECT_EQ(l.peek(id, key).reason, Reason::kKeyTooLong);
  }
  EXPECT_EQ(l.stats().used, 1u);
  ASSERT_EQ(l.dump().size(), 1u);
  EXPECT_EQ(l.dump()[0].key, longest);
}

// A multi-limit request admitted only because one of its limits could not
// be enforced (here a key too long for the slots, on_full allow) says so in
// its combined decision, as that limit's own decision does; a denial's
// reason still wins over it.
TEST(LimiterAcquireMany, CombinedReasonNamesAFallbackThatAdmitted) {
  ScopedSegmentName name("many-reason");
  Limiter l = Limiter::create(small_options(name.str(), 64));
  const PolicyId open = l.add_policy(spec("open", 100, hours(1), 100, OnFull::kAllow));
  const PolicyId tight = l.add_policy(spec("tight", 1, hours(1), 1, OnFull::kAllow));
  const std::string too_long(l.max_key_bytes() + 1, 'k');

  Decision each[2];
  const Request fits[] = {{open, "u", 1}, {tight, "u", 1}};
  const Decision ok = l.acquire_many_at(fits, kT0, each);
  EXPECT_TRUE(ok.allowed);
  EXPECT_EQ(ok.reason, Reason::kOk);

  const Request partly[] = {{open, "v", 1}, {open, too_long, 1}};
  const Decision fell_back = l.acquire_many_at(partly, kT0, each);
  EXPECT_TRUE(fell_back.allowed);
  EXPECT_EQ(each[0].reason, Reason::kOk);
  EXPECT_EQ(each[1].reason, Reason::kKeyTooLong);
  EXPECT_EQ(fell_back.reason, Reason::kKeyTooLong);

  const Request refused[] = {{open, too_long, 1}, {tight, "u", 1}};  // tight/u is spent
  const Decision denied = l.acquire_many_at(refused, kT0, each);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.reason, Reason::kOk);  // the denial's own reason: a plain refusal
  EXPECT_GT(denied.retry_after, Nanos(0));
}

INSTANTIATE_TEST_SUITE_P(Table, LimiterKeyTooLong,
                         ::testing::Combine(::testing::Values(64u, 128u, 256u),
                                            ::testing::Values(OnFull::kAllow, OnFull::kDeny)));

TEST_F(LimiterTest, KeysAreByteStringsDistinctFromTheirPrefixes) {
  const PolicyId id = limiter_.add_policy(spec("api", 1, hours(1)));  // B = 1
  std::string all_bytes;
  for (int b = 0; b < 88; ++b) all_bytes.push_back(static_cast<char>(255 - b));
  const std::vector<std::string> keys = {
      "",
      "a",
      std::string("a\0", 2),
      std::string("a\0\0", 3),
      std::string("\0", 1),
      std::string("\0a", 2),
      std::string("a\0b", 3),
      "abcdefgh",
      std::string("abcdefgh\0", 9),
      "abcdefghi",
      "A",
      std::string("\xff\xfe", 2),
      all_bytes,
      all_bytes.substr(0, 87),
  };
  ASSERT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  for (const std::string& k : keys) {
    EXPECT_TRUE(limiter_.acquire_at(id, k, 1, kT0).allowed) << "key of " << k.size() << " bytes";
  }
  for (const std::string& k : keys) {
    EXPECT_FALSE(limiter_.acquire_at(id, k, 1, kT0).allowed) << "key of " << k.size() << " bytes";
  }
  const std::vector<BucketView> dump = limiter_.dump();
  EXPECT_EQ(dump.size(), keys.size());
  std::set<std::string> dumped;
  for (const BucketView& b : dump) dumped.insert(b.key);
  EXPECT_EQ(dumped, std::set<std::string>(keys.begin(), keys.end()));
}

TEST_F(LimiterTest, SameKeyUnderTwoPoliciesHasTwoBuckets) {
  const PolicyId a = limiter_.add_policy(spec("a", 1, hours(1)));
  const PolicyId b = limiter_.add_policy(spec("b", 1, hours(1)));
  EXPECT_TRUE(limiter_.acquire_at(a, "k", 1, kT0).allowed);
  EXPECT_TRUE(limiter_.acquire_at(b, "k", 1, kT0).allowed);
  EXPECT_FALSE(limiter_.acquire_at(a, "k", 1, kT0).allowed);
  EXPECT_FALSE(limiter_.acquire_at(b, "k", 1, kT0).allowed);
  const std::vector<BucketView> dump = limiter_.dump();
  ASSERT_EQ(dump.size(), 2u);
  EXPECT_NE(find_bucket(dump, "a", "k"), nullptr);
  EXPECT_NE(find_bucket(dump, "b", "k"), nullptr);
}

// ---------------------------------------------------------------------------
// dump() and stats().
TEST_F(LimiterTest, DumpShowsKeysCountsAndStates) {
  const PolicySpec s = spec("api", 1, hours(1), 2);  // T = 1 h, B = 2
  const PolicyId id = limiter_.add_policy(s);
  const std::uint64_t T = params_of(s).emission_ns;
  const Nanos t = limiter_.now();
  for (int i = 0; i < 5; ++i) limiter_.acquire_at(id, "x", 1, t);  // 2 admitted, 3 denied
  limiter_.acquire_at(id, std::string("y\0z", 3), 1, t);           // 1 admitted

  const std::vector<BucketView> dump = limiter_.dump();
  ASSERT_EQ(dump.size(), 2u);
  const BucketView* x = find_bucket(dump, "api", "x");
  const BucketView* y = find_bucket(dump, "api", std::string("y\0z", 3));
  ASSERT_TRUE(x && y);
  EXPECT_EQ(x->admitted, 2u);
  EXPECT_EQ(x->denied, 3u);
  EXPECT_EQ(x->state, static_cast<std::uint64_t>(t.count()) + 2 * T);
  EXPECT_EQ(y->admitted, 1u);
  EXPECT_EQ(y->denied, 0u);
  EXPECT_EQ(y->state, static_cast<std::uint64_t>(t.count()) + T);
  EXPECT_NE(x->slot, y->slot);
  EXPECT_LT(x->slot, limiter_.stats().capacity);
  // `now`: the bucket as it is at the time of the dump, charging nothing.
  // The dump runs well within the hour after t, so (with d = dump time - t,
  // 0 < d < T): x has 0 units and one fits in T - d; y has 1 unit now.
  const Nanos Tn(static_cast<std::int64_t>(T));
  EXPECT_EQ(x->now.limit, 2u);
  EXPECT_FALSE(x->now.allowed);
  EXPECT_EQ(x->now.remaining, 0u);
  EXPECT_GT(x->now.retry_after, Nanos(0));
  EXPECT_LE(x->now.retry_after, Tn);
  EXPECT_GT(x->now.reset_after, Tn);
  EXPECT_LE(x->now.reset_after, 2 * Tn);
  EXPECT_EQ(x->now.reset_after - x->now.retry_after, Tn);
  EXPECT_EQ(x->now.reason, Reason::kOk);
  EXPECT_EQ(y->now.limit, 2u);
  EXPECT_TRUE(y->now.allowed);
  EXPECT_EQ(y->now.remaining, 1u);
  EXPECT_EQ(y->now.retry_after, Nanos(0));
  EXPECT_GT(y->now.reset_after, Nanos(0));
  EXPECT_LE(y->now.reset_after, Tn);
  // Taking the dump charged nothing.
  const std::vector<BucketView> again = limiter_.dump();
  const BucketView* x2 = find_bucket(again, "api", "x");
  ASSERT_NE(x2, nullptr);
  EXPECT_EQ(x2->state, x->state);
  EXPECT_EQ(x2->admitted, 2u);
  EXPECT_EQ(x2->denied, 3u);
}

TEST_F(LimiterTest, StatsCountUsedReclaimableAndDecisions) {
  const PolicyId fast =
      limiter_.add_policy(spec("fast", 1'000'000'000, seconds(1), 1));  // T = 1 ns
  const PolicyId slow = limiter_.add_policy(spec("slow", 1, hours(1), 1));
  // Buckets full again 1 ns after the epoch: reclaimable at any later time.
  for (const char* k : {"f1", "f2", "f3"})
    ASSERT_TRUE(limiter_.acquire_at(fast, k, 1, Nanos(0)).allowed);
  // Buckets drained for an hour from now: not reclaimable.
  const Nanos t = limiter_.now();
  for (const char* k : {"s1", "s2"}) ASSERT_TRUE(limiter_.acquire_at(slow, k, 1, t).allowed);
  ASSERT_FALSE(limiter_.acquire_at(slow, "s1", 1, t).allowed);
  while (limiter_.now() <= Nanos(1)) {
  }
  const Stats s = limiter_.stats();
  EXPECT_EQ(s.capacity, 1024u);
  EXPECT_EQ(s.used, 5u);
  EXPECT_EQ(s.reclaimable, 3u);
  EXPECT_EQ(s.admitted, 5u);
  EXPECT_EQ(s.denied, 1u);
  EXPECT_EQ(s.dead, 0u);
  EXPECT_EQ(s.claiming, 0u);
  EXPECT_EQ(s.empty, 1024u - 5u);
  EXPECT_EQ(s.full_events, 0u);
  EXPECT_LE(s.max_probe_length, s.max_probe);
  EXPECT_GE(s.age, Nanos(1));
  EXPECT_GT(s.clock_horizon_left, Nanos(0));
  EXPECT_GT(s.created_unix_ns, 0);
}

// ---------------------------------------------------------------------------
// The full table: capacity 16, every probe window covers the whole table.
class LimiterTableFull : public ::testing::TestWithParam<OnFull> {};

TEST_P(LimiterTableFull, PenalisedBucketsAreKeptAndFullOnesReclaimed) {
  const OnFull on_full = GetParam();
  ScopedSegmentName name("full");
  Options o = small_options(name.str(), 16);
  o.max_probe = 16;
  Limiter l = Limiter::create(o);
  ASSERT_EQ(l.stats().capacity, 16u);
  const PolicySpec s = spec("p", 2, hours(1), 2, on_full);  // T = 30 min, B = 2
  const PolicyId id = l.add_policy(s);
  const auto T = static_cast<std::int64_t>(params_of(s).emission_ns);
  const Nanos t = kT0;

  std::vector<std::string> keys;
  for (int i = 0; i < 16; ++i) keys.push_back("k" + std::to_string(i));
  for (const std::string& k : keys) {
    const Decision d = l.acquire_at(id, k, 2, t);  // each takes its whole burst
    ASSERT_TRUE(d.allowed) << k;
    ASSERT_EQ(d.reason, Reason::kOk) << k;
  }
  ASSERT_EQ(l.stats().used, 16u);
  ASSERT_EQ(l.stats().empty, 0u);

  // A 17th key: no slot. on_full decides; the event is counted.
  const Decision full = l.acquire_at(id, "newcomer", 1, t);
  EXPECT_EQ(full.reason, Reason::kTableFull);
  EXPECT_EQ(full.allowed, on_full == OnFull::kAllow);
  EXPECT_EQ(full.limit, 2u);
  if (on_full == OnFull::kDeny) {
    EXPECT_EQ(full.retry_after, Nanos(T));  // one emission interval (doc/design.md)
  }
  EXPECT_EQ(l.stats().full_events, 1u);
  EXPECT_EQ(l.acquire_at(id, "newcomer", 1, t).reason, Reason::kTableFull);
  EXPECT_EQ(l.stats().full_events, 2u);
  // A peek needs no slot.
  const Decision peek = l.acquire_at(id, "newcomer", 0, t);
  EXPECT_EQ(peek.reason, Reason::kOk);
  EXPECT_EQ(peek.remaining, 2u);
  EXPECT_EQ(l.stats().full_events, 2u);

  // Half refilled is still penalised: not evicted.
  EXPECT_EQ(l.acquire_at(id, "newcomer", 1, t + Nanos(T)).reason, Reason::kTableFull);
  EXPECT_EQ(l.stats().full_events, 3u);

  // Every penalised bucket is still there, deciding as before.
  for (const std::string& k : keys) {
    const Decision d = l.acquire_at(id, k, 1, t);
    EXPECT_FALSE(d.allowed) << k;
    EXPECT_EQ(d.reason, Reason::kOk) << k;
    EXPECT_EQ(d.retry_after, Nanos(T)) << k;
    const Decision half = l.acquire_at(id, k, 0, t + Nanos(T));
    EXPECT_EQ(half.remaining, 1u) << k;
  }
  std::vector<BucketView> dump = l.dump();
  ASSERT_EQ(dump.size(), 16u);
  for (const BucketView& b : dump) {
    EXPECT_EQ(b.state, static_cast<std::uint64_t>(t.count() + 2 * T)) << b.key;
    EXPECT_EQ(b.admitted, 1u) << b.key;
  }

  // Once the buckets are full again, a new key reclaims one slot.
  const Nanos t2 = t + Nanos(2 * T);
  const Decision admitted = l.acquire_at(id, "newcomer", 2, t2);
  EXPECT_TRUE(admitted.allowed);
  EXPECT_EQ(admitted.reason, Reason::kOk);
  EXPECT_EQ(admitted.remaining, 0u);
  EXPECT_EQ(l.stats().full_events, 3u);
  EXPECT_EQ(l.stats().used, 16u);
  dump = l.dump();
  ASSERT_EQ(dump.size(), 16u);
  int old_left = 0;
  for (const BucketView& b : dump) old_left += b.key != "newcomer" ? 1 : 0;
  EXPECT_EQ(old_left, 15);
  EXPECT_FALSE(l.acquire_at(id, "newcomer", 1, t2).allowed);  // it has a real bucket now

  // Every old key, kept or reclaimed, behaves as a fresh (full) bucket.
  for (const std::string& k : keys) {
    const Decision d = l.acquire_at(id, k, 0, t2);
    EXPECT_TRUE(d.allowed) << k;
    EXPECT_EQ(d.reason, Reason::kOk) << k;
    EXPECT_EQ(d.remaining, 2u) << k;
    EXPECT_EQ(d.reset_after, Nanos(0)) << k;
  }
}

INSTANTIATE_TEST_SUITE_P(OnFull, LimiterTableFull,
                         ::testing::Values(OnFull::kAllow, OnFull::kDeny));

// ---------------------------------------------------------------------------
// The clock horizon: payloads stay below 2^56 ns.
class LimiterClockHorizon : public LimiterTest, public ::testing::WithParamInterface<OnFull> {};

TEST_P(LimiterClockHorizon, DecisionsPastTheHorizonApplyOnFull) {
  const PolicySpec s = spec("api", 1, seconds(1), 1, GetParam());  // tau = T = 1 s
  const PolicyId id = limiter_.add_policy(s);
  const std::int64_t tau = 1'000'000'000;
  const std::int64_t horizon = (std::int64_t{1} << 56) - 1;  // largest payload

  // The last time whose TAT still fits.
  const Decision edge = limiter_.acquire_at(id, "edge", 1, Nanos(horizon - tau));
  EXPECT_TRUE(edge.allowed);
  EXPECT_EQ(edge.reason, Reason::kOk);
  const std::vector<BucketView> dump = limiter_.dump();
  ASSERT_EQ(dump.size(), 1u);
  EXPECT_EQ(dump[0].state, static_cast<std::uint64_t>(horizon));

  for (const std::int64_t now : {horizon - tau + 1, horizon, horizon + 1, std::int64_t{1} << 60,
                                 std::numeric_limits<std::int64_t>::max()}) {
    const Decision d = limiter_.acquire_at(id, "k", 1, Nanos(now));
    EXPECT_EQ(d.reason, Reason::kClockHorizon) << now;
    EXPECT_EQ(d.allowed, GetParam() == OnFull::kAllow) << now;
  }
  EXPECT_EQ(limiter_.stats().used, 1u);
}

INSTANTIATE_TEST_SUITE_P(OnFull, LimiterClockHorizon,
                         ::testing::Values(OnFull::kAllow, OnFull::kDeny));

// ---------------------------------------------------------------------------
// A policy entry made invalid by another writer: decisions apply on_full
// with reason corrupt, never divide by a zero interval.
class LimiterCorruptPolicy : public LimiterTest, public ::testing::WithParamInterface<OnFull> {};

TEST_P(LimiterCorruptPolicy, AppliesOnFullWithReasonCorrupt) {
  const PolicyId id = limiter_.add_policy(spec("api", 10, seconds(1), 5, GetParam()));
  ASSERT_TRUE(limiter_.acquire_at(id, "k", 1, kT0).allowed);
  // First registration: the active parameter set is params[0].
  const std::size_t emission_at = detail::Geometry::compute(1024, 128, 32).policy_offset +
                                  id.index * sizeof(detail::PolicyEntry) +
                                  offsetof(detail::PolicyEntry, params) +
                                  offsetof(detail::PolicyParams, emission_ns);
  const std::uint64_t zero = 0;
  unit::write_at(name_.path(), emission_at, &zero, sizeof zero);
  for (const char* key : {"k", "other"}) {
    const Decision d = limiter_.acquire_at(id, key, 1, kT0);
    EXPECT_EQ(d.reason, Reason::kCorrupt) << key;
    EXPECT_EQ(d.allowed, GetParam() == OnFull::kAllow) << key;
  }
  EXPECT_EQ(limiter_.peek(id, "k").reason, Reason::kCorrupt);
  EXPECT_NO_THROW(limiter_.stats());
  EXPECT_NO_THROW(limiter_.dump());
}

INSTANTIATE_TEST_SUITE_P(OnFull, LimiterCorruptPolicy,
                         ::testing::Values(OnFull::kAllow, OnFull::kDeny));

// ---------------------------------------------------------------------------
// Threads of one process ("a single Limiter object may be used by several
// threads at once"). All decisions use one explicit time, so the outcome
// does not depend on the interleaving: with no refill, exactly the burst is
// admitted however the CASes race.
TEST_F(LimiterTest, ThreadsSharingOneHandleAdmitExactlyTheBurstOfOneKey) {
  // Fail closed, so that only the algorithm admits (a claim stalled past
  // claim_timeout on a loaded machine is denied, not waved through).
  const PolicyId id = limiter_.add_policy(spec("hot", 1, hours(1), 1000, OnFull::kDeny));
  constexpr int kThreads = 8;
  constexpr int kTries = 400;  // 3200 tries for 1000 units
  std::vector<std::uint64_t> admitted(kThreads, 0);
  std::vector<std::uint64_t> odd(kThreads, 0);  // allowed with a reason other than kOk
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      for (int k = 0; k < kTries; ++k) {
        const Decision d = limiter_.acquire_at(id, "k", 1, kT0);
        admitted[i] += d.allowed ? 1 : 0;
        odd[i] += d.allowed && d.reason != Reason::kOk ? 1 : 0;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::uint64_t total = 0;
  for (int i = 0; i < kThreads; ++i) {
    total += admitted[i];
    EXPECT_EQ(odd[i], 0u) << "thread " << i;
  }
  EXPECT_EQ(total, 1000u);
  const std::vector<BucketView> dump = limiter_.dump();
  ASSERT_EQ(dump.size(), 1u);
  EXPECT_LE(dump[0].admitted, 1000u);  // a statistic (plain stores); the exact total is counters()
  EXPECT_EQ(limiter_.counters().at(0).admitted, 1000u);
  EXPECT_EQ(dump[0].state, static_cast<std::uint64_t>(kT0.count()) + 1000u * 3'600'000'000'000u);
}

TEST_F(LimiterTest, ThreadsWithTheirOwnHandlesClaimingTheSameNewKeysAdmitTheBurstOfEach) {
  const PolicyId id = limiter_.add_policy(spec("api", 1, hours(1), 2, OnFull::kDeny));
  constexpr int kThreads = 4;
  constexpr int kKeys = 300;
  std::vector<std::vector<int>> admitted(kThreads, std::vector<int>(kKeys, 0));
  std::vector<std::vector<Reason>> odd(kThreads);  // reasons other than kOk
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Limiter own = Limiter::open(small_options(name_.str()));
      start.arrive_and_wait();
      for (int k = 0; k < kKeys; ++k) {
        for (int n = 0; n < 2; ++n) {
          const Decision d = own.acquire_at(id, "key-" + std::to_string(k), 1, kT0);
          admitted[i][k] += d.allowed ? 1 : 0;
          if (d.reason != Reason::kOk) odd[i].push_back(d.reason);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const Stats s = limiter_.stats();
  for (int i = 0; i < kThreads; ++i) {
    // Only a claimer stalled past claim_timeout (a loaded machine) may
    // give another answer than the algorithm's.
    for (const Reason r : odd[i]) EXPECT_EQ(r, Reason::kContended) << "thread " << i;
  }
  std::uint64_t sum = 0;
  for (int k = 0; k < kKeys; ++k) {
    int total = 0;
    for (int i = 0; i < kThreads; ++i) total += admitted[i][k];
    sum += static_cast<std::uint64_t>(total);
    // More would mean two slots for one key.
    if (s.contended_events == 0) {
      EXPECT_EQ(total, 2) << "key-" << k;
    } else {
      EXPECT_LE(total, 2) << "key-" << k;
    }
  }
  EXPECT_EQ(s.used, static_cast<std::uint64_t>(kKeys));
  EXPECT_EQ(s.admitted, sum);
  EXPECT_EQ(s.full_events, 0u);
}

// add_policy is "process-safe, serialised by a recoverable admin token";
// threads of one process registering at once must each get the id, not an
// error about their own process holding the token.
TEST_F(LimiterTest, ThreadsOfOneProcessRegisteringPoliciesAtOnceAllSucceed) {
  constexpr int kThreads = 8;
  constexpr int kPolicies = 32;
  std::vector<std::vector<std::uint32_t>> ids(kThreads, std::vector<std::uint32_t>(kPolicies, 999));
  std::vector<std::string> errors(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      try {
        for (int round = 0; round < 200; ++round) {
          for (int k = 0; k < kPolicies; ++k) {
            ids[i][k] = limiter_.add_policy(spec("p" + std::to_string(k), 1, seconds(1))).index;
          }
        }
      } catch (const Error& e) {
        errors[i] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  bool all_ok = true;
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(errors[i], "") << "thread " << i;
    all_ok = all_ok && errors[i].empty();
  }
  if (!all_ok) return;  // the ids of a thread that failed are incomplete
  ASSERT_EQ(limiter_.policies().size(), static_cast<std::size_t>(kPolicies));
  for (int k = 0; k < kPolicies; ++k) {
    const auto id = limiter_.find_policy("p" + std::to_string(k));
    ASSERT_TRUE(id.has_value());
    for (int i = 0; i < kThreads; ++i)
      EXPECT_EQ(ids[i][k], id->index) << "thread " << i << " policy " << k;
  }
}

// ---------------------------------------------------------------------------
TEST(ReasonNames, AreTheDocumentedSnakeCaseNames) {
  const std::vector<std::pair<Reason, std::string_view>> names = {
      {Reason::kOk, "ok"},
      {Reason::kTableFull, "table_full"},
      {Reason::kKeyTooLong, "key_too_long"},
      {Reason::kUnknownPolicy, "unknown_policy"},
      {Reason::kCostTooHigh, "cost_too_high"},
      {Reason::kContended, "contended"},
      {Reason::kClockHorizon, "clock_horizon"},
      {Reason::kCorrupt, "corrupt"},
  };
  for (const auto& [reason, name] : names) EXPECT_EQ(to_string(reason), name);
}

// acquire() decides a cached GCRA policy's short key already in the table on
// an inlined fast path (decide.cpp, fast_decide); every other key takes the
// general path. Two identical policies driven by the same random sequence,
// one with 16-byte keys (fast once claimed) and one with 17-byte keys
// (always general), must agree on every field of every decision and on the
// exact and per-key counts.
TEST_F(LimiterTest, FastPathDecidesExactlyAsTheGeneralPath) {
  // Every algorithm whose whole state is the slot's word takes the fast path.
  const Algorithm algorithms[] = {Algorithm::kGcra,        Algorithm::kTokenBucket,
                                  Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                  Algorithm::kQuietPeriod, Algorithm::kLeakyBucket};
  for (const Algorithm algorithm : algorithms) {
    SCOPED_TRACE(std::string(to_string(algorithm)));
    const std::string tag(to_string(algorithm));
    const bool has_burst = algorithm_has_burst(algorithm);
    PolicySpec fast_spec = spec("fast-" + tag, 5, seconds(1), has_burst ? 3 : 0);
    PolicySpec slow_spec = spec("slow-" + tag, 5, seconds(1), has_burst ? 3 : 0);
    fast_spec.algorithm = slow_spec.algorithm = algorithm;
    expect_fast_path_agrees(fast_spec, slow_spec);
  }
}

void LimiterTest::expect_fast_path_agrees(const PolicySpec& fast_spec,
                                          const PolicySpec& slow_spec) {
  const PolicyId fast = limiter_.add_policy(fast_spec);
  const PolicyId slow = limiter_.add_policy(slow_spec);
  const std::vector<std::string> short_keys = {"k", "user:0000000042", std::string(16, 'x')};
  std::mt19937_64 rng(20261207);
  Nanos t = kT0;
  std::uint64_t admitted = 0, denied = 0;
  // Every key claims its slot first, each bucket left not full: no later
  // decision claims a slot, so none can reclaim another key's bucket that
  // has refilled (which restarts its approximate per-key counts, on one
  // path and not the other, depending on where the segment's random hash
  // seed puts the keys).
  for (const std::string& k : short_keys) {
    const std::string long_k = k + std::string(17 - k.size(), '#');
    ASSERT_TRUE(limiter_.acquire_at(fast, k, 1, t).allowed) << k;
    ASSERT_TRUE(limiter_.acquire_at(slow, long_k, 1, t).allowed) << k;
    admitted += 1;
  }
  for (int i = 0; i < 4000; ++i) {
    t += Nanos(static_cast<std::int64_t>(rng() % 400'000'000));  // 0..0.4 s: refills and floods
    const std::string& k = short_keys[rng() % short_keys.size()];
    const std::string long_k = k + std::string(17 - std::min<std::size_t>(k.size(), 16), '#');
    ASSERT_LE(k.size(), 16u);
    ASSERT_GT(long_k.size(), 16u);
    const std::uint64_t costs[] = {0, 1, 1, 1, 2, 9};  // 9 > capacity: never fits
    const std::uint64_t cost = costs[rng() % 6];
    const Decision a = limiter_.acquire_at(fast, k, cost, t);
    const Decision b = limiter_.acquire_at(slow, long_k, cost, t);
    ASSERT_EQ(a.allowed, b.allowed) << "decision " << i;
    ASSERT_EQ(a.reason, b.reason) << "decision " << i;
    ASSERT_EQ(a.limit, b.limit) << "decision " << i;
    ASSERT_EQ(a.remaining, b.remaining) << "decision " << i;
    ASSERT_EQ(a.retry_after, b.retry_after) << "decision " << i;
    ASSERT_EQ(a.reset_after, b.reset_after) << "decision " << i;
    (a.allowed ? admitted : denied) += 1;
  }
  ASSERT_GT(admitted, 20u);
  ASSERT_GT(denied, 20u);
  for (const PolicyCounters& c : limiter_.counters()) {
    if (c.policy != fast_spec.name && c.policy != slow_spec.name) continue;
    EXPECT_EQ(c.admitted, admitted) << c.policy;
    EXPECT_EQ(c.denied, denied) << c.policy;
  }
  // The per-key counts agree too (a refusal before the key has a slot is
  // counted in the totals only, on either path).
  const std::vector<BucketView> dump = limiter_.dump();
  for (const std::string& k : short_keys) {
    const BucketView* f = find_bucket(dump, fast_spec.name, k);
    const BucketView* g = find_bucket(dump, slow_spec.name, k + std::string(17 - k.size(), '#'));
    ASSERT_NE(f, nullptr) << k;
    ASSERT_NE(g, nullptr) << k;
    EXPECT_EQ(f->admitted, g->admitted) << k;
    EXPECT_EQ(f->denied, g->denied) << k;
    EXPECT_GT(f->admitted, 0u) << k;
    EXPECT_GT(f->denied, 0u) << k;
  }
}

// peek() takes the same fast path: it reports what acquire would decide and
// changes nothing, on a short key and on a long one alike.
TEST_F(LimiterTest, FastPeekChangesNothingAndAgreesWithAcquire) {
  const PolicyId id = limiter_.add_policy(spec("api", 2, hours(1)));
  for (const std::string& key : {std::string("ip:10.0.0.1"), std::string(40, 'q')}) {
    EXPECT_TRUE(limiter_.acquire(id, key).allowed) << key;  // claims the slot
    for (int i = 0; i < 3; ++i) {
      const Decision p = limiter_.peek(id, key);
      EXPECT_TRUE(p.allowed) << key;
      EXPECT_EQ(p.remaining, 0u) << key;  // 1 left now, 0 after a cost-1 acquire
    }
    EXPECT_TRUE(limiter_.acquire(id, key).allowed) << key;
    const Decision p = limiter_.peek(id, key);
    EXPECT_FALSE(p.allowed) << key;
    EXPECT_GT(p.retry_after, Nanos(0)) << key;
    EXPECT_FALSE(limiter_.acquire(id, key).allowed) << key;
  }
}

}  // namespace
}  // namespace shmlimit
