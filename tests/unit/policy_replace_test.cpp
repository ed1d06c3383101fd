// Replacing a policy (Limiter::replace_policy; doc/algorithms.md,
// "Replacing a policy"; the protocol in src/limiter/policies.cpp): every
// ordered pair of the 8 algorithms, random rate/burst changes over random
// states, the concurrency refusal, the crash between publishing the new
// entry and retiring the old one, and the regression of old state read under a new algorithm.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "segment/layout.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;
using unit::catch_error;
using unit::ScopedSegmentName;

constexpr Nanos kT0{1'000'000'000};

constexpr Algorithm kAll[] = {Algorithm::kGcra,        Algorithm::kTokenBucket,
                              Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                              Algorithm::kQuietPeriod, Algorithm::kLeakyBucket,
                              Algorithm::kConcurrency, Algorithm::kSlidingLog};

PolicySpec spec_of(Algorithm a, std::uint64_t count, std::string name = "api") {
  PolicySpec s;
  s.name = std::move(name);
  s.algorithm = a;
  s.rate = Rate{count, a == Algorithm::kConcurrency ? Nanos(0) : Nanos(minutes(1))};
  return s;
}

// The parameters add_policy stores for `s` (burst 0 and the windowed
// algorithms' burst are the count).
detail::AlgoParams params_of(const PolicySpec& s) {
  const auto period = static_cast<std::uint64_t>(s.rate.period.count());
  const bool windowed = s.algorithm != Algorithm::kGcra && s.algorithm != Algorithm::kLeakyBucket &&
                        s.algorithm != Algorithm::kTokenBucket;
  return detail::AlgoParams{s.algorithm,
                            s.rate.count,
                            period,
                            s.burst == 0 || windowed ? s.rate.count : s.burst,
                            detail::gcra_emission(s.rate.count, period),
                            s.wait};
}

Limiter make(const ScopedSegmentName& name) {
  Options o = unit::small_options(name.str());
  o.log_entries = 16;
  return Limiter::create(o);
}

// Leaves key "k" of `id` holding state (every algorithm but concurrency,
// whose lease is taken and given back, so that it may be replaced).
void use(Limiter& l, PolicyId id, Algorithm a) {
  if (a == Algorithm::kConcurrency) {
    Lease lease = l.lease(id, "k");
    ASSERT_TRUE(lease.held());
    lease.release();
    return;
  }
  for (int i = 0; i < 6; ++i) l.acquire_at(id, "k", 1, kT0);
}

Decision first(Limiter& l, PolicyId id, Algorithm a, const std::string& key) {
  if (a == Algorithm::kConcurrency) {
    Lease lease = l.lease(id, key);
    return lease.decision();
  }
  return l.acquire_at(id, key, 1, kT0);
}

class ReplaceEveryPair : public ::testing::TestWithParam<std::tuple<Algorithm, Algorithm>> {};

TEST_P(ReplaceEveryPair, AnotherEncodingStartsFreshTheSameKeepsBucketsWithinTheNewPolicysWaits) {
  const auto [from, to] = GetParam();
  const ScopedSegmentName name("replace");
  Limiter l = make(name);
  const PolicySpec before = spec_of(from, 5);
  const PolicySpec after = spec_of(to, from == to ? 3 : 4);
  const PolicyId old_id = l.add_policy(before);
  use(l, old_id, from);
  const bool keeps = detail::algo_state_compatible(params_of(before), params_of(after));
  const PolicyReplacement r = l.replace_policy(after);
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.fresh, !keeps);
  EXPECT_EQ(l.policies().size(), 1u);
  EXPECT_EQ(l.policies()[0].id.index, r.id.index);
  ASSERT_TRUE(l.find_policy("api"));
  EXPECT_EQ(l.find_policy("api")->index, r.id.index);
  if (r.fresh) {
    EXPECT_NE(r.id.index, old_id.index);
    EXPECT_EQ(r.buckets_reset, from == Algorithm::kConcurrency ? 0u : 1u);
    // The first decision on the used key is a fresh bucket's.
    EXPECT_TRUE(same_decision(first(l, r.id, to, "k"), first(l, r.id, to, "never-seen")));
  } else {
    EXPECT_EQ(r.id.index, old_id.index);
    EXPECT_EQ(r.buckets_reset, 0u);
    const Decision d = first(l, r.id, to, "k");
    EXPECT_LE(d.remaining, d.limit);
    EXPECT_LE(d.retry_after, detail::algo_max_wait(params_of(after))) << describe(d);
  }
  // An id from before the replacement decides as the new one does.
  if (to != Algorithm::kConcurrency) {
    EXPECT_TRUE(same_decision(l.acquire_at(old_id, "stale-id", 1, kT0),
                              l.acquire_at(r.id, "new-id", 1, kT0)));
    EXPECT_EQ(l.peek(old_id, "stale-id", 0).remaining, l.peek(r.id, "stale-id", 0).remaining);
  }
  const CheckReport report = l.check(false);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
  EXPECT_TRUE(Limiter::check_segment(name.str()).problems.empty());
}

INSTANTIATE_TEST_SUITE_P(AllOrderedPairs, ReplaceEveryPair,
                         ::testing::Combine(::testing::ValuesIn(kAll), ::testing::ValuesIn(kAll)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_to_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

// Random rate and burst changes over random states, for every algorithm
// decided from the word: whenever the state is kept, remaining <= limit and
// a wait never exceeds the new policy's own longest.
TEST(ReplacePolicyProperty, KeptStateNeverWaitsLongerThanTheNewPolicyAllows) {
  std::mt19937_64 rng(14);
  const auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  const std::uint64_t periods[] = {20'000'000, 1'000'000'000, 60'000'000'000};
  const Algorithm word_algorithms[] = {Algorithm::kGcra,        Algorithm::kTokenBucket,
                                       Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                       Algorithm::kQuietPeriod, Algorithm::kLeakyBucket};
  const auto random_params = [&](Algorithm a, std::uint64_t period) {
    detail::AlgoParams p;
    p.algorithm = a;
    p.count = pick(1, 60);
    p.period_ns = period;
    const bool bursty =
        a == Algorithm::kGcra || a == Algorithm::kLeakyBucket || a == Algorithm::kTokenBucket;
    p.burst = bursty ? pick(1, 80) : p.count;
    p.emission_ns = detail::gcra_emission(p.count, p.period_ns);
    return p;
  };
  int kept = 0;
  for (int round = 0; round < 6000; ++round) {
    const Algorithm a = word_algorithms[round % 6];
    const std::uint64_t period = periods[pick(0, 2)];
    const detail::AlgoParams before = random_params(a, period);
    ASSERT_TRUE(detail::algo_params_valid(before));
    std::uint64_t state = 0;
    std::int64_t now = static_cast<std::int64_t>(pick(0, 1'000'000'000'000));
    for (std::uint64_t op = pick(0, 3 * before.burst); op > 0; --op) {
      now += static_cast<std::int64_t>(pick(0, period / 8));
      const detail::AlgoOutcome o = detail::algo_decide(before, state, now, pick(0, before.burst));
      if (o.store) state = o.new_state;
    }
    // The same period (the windowed encodings need it); GCRA and the leaky
    // bucket take any.
    const bool any_period = a == Algorithm::kGcra || a == Algorithm::kLeakyBucket;
    const detail::AlgoParams after = random_params(a, any_period ? periods[pick(0, 2)] : period);
    if (!detail::algo_state_compatible(before, after)) continue;  // starts fresh: ReplaceEveryPair
    ++kept;
    now += static_cast<std::int64_t>(pick(0, 1'000));
    const std::uint64_t capacity = after.burst;
    for (const std::uint64_t cost :
         {std::uint64_t{0}, std::uint64_t{1}, pick(1, capacity), capacity}) {
      const Decision d = detail::algo_decide(after, state, now, cost).decision;
      ASSERT_LE(d.remaining, d.limit) << to_string(a) << " " << describe(d);
      ASSERT_LE(d.retry_after, detail::algo_max_wait(after))
          << to_string(a) << " count " << before.count << "->" << after.count << " burst "
          << before.burst << "->" << after.burst << " cost " << cost << " " << describe(d);
    }
  }
  EXPECT_GT(kept, 3000);
}

TEST(ReplacePolicy, ConcurrencyWithLeasesHeldIsRefusedNamingTheCount) {
  const ScopedSegmentName name("replace-lease");
  Limiter l = make(name);
  const PolicyId id = l.add_policy(spec_of(Algorithm::kConcurrency, 5));
  Lease a = l.lease(id, "k", 2);
  Lease b = l.lease(id, "other", 1);
  ASSERT_TRUE(a.held() && b.held());
  for (const PolicySpec& next :
       {spec_of(Algorithm::kGcra, 5), spec_of(Algorithm::kConcurrency, 9)}) {
    const auto e = catch_error([&] { l.replace_policy(next); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code(), ErrorCode::kPolicyConflict);
    EXPECT_NE(std::string(e->what()).find("3 lease units held"), std::string::npos) << e->what();
  }
  a.release();
  b.release();
  const PolicyReplacement r = l.replace_policy(spec_of(Algorithm::kConcurrency, 9));
  EXPECT_FALSE(r.fresh);
  EXPECT_EQ(l.lease(id, "k").decision().limit, 9u);
}

// Regression, as reported: old state read under the new algorithm.
TEST(ReplacePolicy, Row4GcraToTokenBucketDoesNotMakeTheKeyWait162Days) {
  const ScopedSegmentName name("row4-tb");
  Limiter l = make(name);
  const PolicyId id = l.add_policy(spec_of(Algorithm::kGcra, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(l.acquire(id, "k").allowed);
  const PolicyReplacement r = l.replace_policy(spec_of(Algorithm::kTokenBucket, 5));
  EXPECT_TRUE(r.fresh);
  EXPECT_EQ(r.buckets_reset, 1u);
  const Decision d = l.acquire(id, "k");
  EXPECT_TRUE(d.allowed) << describe(d);
  EXPECT_EQ(d.remaining, 4u);
}

TEST(ReplacePolicy, Row4GcraToFixedWindowDoesNotLockTheKey) {
  const ScopedSegmentName name("row4-fw");
  Limiter l = make(name);
  const PolicyId id = l.add_policy(spec_of(Algorithm::kGcra, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(l.acquire(id, "k").allowed);
  l.replace_policy(spec_of(Algorithm::kFixedWindow, 5));
  const Decision d = l.acquire(id, "k");
  EXPECT_TRUE(d.allowed) << describe(d);
}

TEST(ReplacePolicy, Row4FixedWindowToGcraStartsFreshAndSaysSo) {
  const ScopedSegmentName name("row4-fg");
  Limiter l = make(name);
  const PolicyId id = l.add_policy(spec_of(Algorithm::kFixedWindow, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(l.acquire(id, "k").allowed);
  const PolicyReplacement r = l.replace_policy(spec_of(Algorithm::kGcra, 5));
  EXPECT_TRUE(r.fresh);
  EXPECT_EQ(r.buckets_reset, 1u);  // the forgiveness is reported, not silent
}

TEST(ReplacePolicy, Row4ConcurrencyToGcraToConcurrencyLeavesNoPhantomInFlightCount) {
  const ScopedSegmentName name("row4-cc");
  Limiter l = make(name);
  const PolicyId id = l.add_policy(spec_of(Algorithm::kConcurrency, 5));
  {
    Lease held = l.lease(id, "k");
    ASSERT_TRUE(held.held());
    EXPECT_EQ(catch_error([&] { l.replace_policy(spec_of(Algorithm::kGcra, 5)); })->code(),
              ErrorCode::kPolicyConflict);
  }
  l.replace_policy(spec_of(Algorithm::kGcra, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(l.acquire(id, "k").allowed);
  l.replace_policy(spec_of(Algorithm::kConcurrency, 5));
  std::vector<Lease> leases;
  for (int i = 0; i < 5; ++i) {
    leases.push_back(l.lease(id, "k"));
    ASSERT_TRUE(leases.back().held()) << describe(leases.back().decision());
  }
  EXPECT_FALSE(l.lease(id, "k").held());
  const CheckReport report = l.check(false);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
}

TEST(ReplacePolicy, EachFreshStartUsesAnEntryAndTheLastOneIsRefusedClearly) {
  const ScopedSegmentName name("replace-full");
  Limiter l = make(name);
  l.add_policy(spec_of(Algorithm::kGcra, 5));
  for (std::uint32_t i = 1; i < detail::kMaxPolicies; ++i) {
    l.replace_policy(spec_of(i % 2 == 1 ? Algorithm::kFixedWindow : Algorithm::kGcra, 5));
  }
  const auto e = catch_error([&] { l.replace_policy(spec_of(Algorithm::kSlidingWindow, 5)); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kTableFull);
  EXPECT_NE(std::string(e->what()).find("recreate the segment"), std::string::npos) << e->what();
  // A kept replacement needs no entry.
  EXPECT_FALSE(l.replace_policy(spec_of(Algorithm::kFixedWindow, 7)).fresh);
}

// A replacement killed between publishing the new entry and retiring the
// old one leaves two live entries with one name: the earlier one is used,
// and the next policy change retires the orphan.
TEST(ReplacePolicy, ReplacementInterruptedBeforeRetiringTheOldEntryIsRepairedByTheNextChange) {
  const ScopedSegmentName name("replace-orphan");
  Limiter l = make(name);
  const PolicyId id = l.add_policy(spec_of(Algorithm::kGcra, 5));
  ASSERT_TRUE(l.acquire(id, "k").allowed);
  // Entry 1: a copy of entry 0 under another algorithm, published but
  // entry 0 never retired (step 1 without step 2).
  std::vector<std::byte> bytes = unit::read_file(name.path());
  const std::size_t entry0 = 4096, entry1 = 4096 + sizeof(detail::PolicyEntry);
  std::vector<std::byte> copy(bytes.begin() + entry0, bytes.begin() + entry1);
  const std::uint64_t fw_kind = static_cast<std::uint64_t>(Algorithm::kFixedWindow);
  std::memcpy(copy.data() + offsetof(detail::PolicyEntry, params), &fw_kind, 8);
  unit::write_at(name.path(), entry1, copy.data(), copy.size());
  ASSERT_EQ(l.find_policy("api")->index, id.index);
  EXPECT_FALSE(l.acquire(id, "k", 5).allowed);  // still the GCRA bucket
  const CheckReport found = l.check(false);
  ASSERT_EQ(found.problems.size(), 1u);
  EXPECT_NE(found.problems[0].find("duplicates policy 0"), std::string::npos) << found.problems[0];
  const PolicyId other = l.add_policy(spec_of(Algorithm::kGcra, 5, "other"));
  EXPECT_EQ(other.index, 2u);
  ASSERT_EQ(l.policies().size(), 2u);
  EXPECT_EQ(l.find_policy("api")->index, id.index);
  const CheckReport report = l.check(false);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
}

// A segment of layout version 2 (before retired entries) is refused by
// name, not misread.
TEST(ReplacePolicy, SegmentOfTheOlderLayoutIsRefusedClearly) {
  const ScopedSegmentName name("replace-v2");
  { make(name); }
  const std::uint32_t v2 = 2;
  unit::write_at(name.path(), offsetof(detail::Header, layout_version), &v2, sizeof v2);
  Options o = unit::small_options(name.str());
  const auto e = catch_error([&] { Limiter::open(o); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kIncompatible);
  EXPECT_NE(std::string(e->what()).find("layout version is 2"), std::string::npos) << e->what();
}

}  // namespace
}  // namespace shmlimit
