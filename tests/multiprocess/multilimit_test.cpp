// Several limits at once, across forked processes: all-or-nothing charging
// (a request charges every limit it names or none), no limit ever exceeded,
// refunds and resets.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <string>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

constexpr std::uint64_t kDay = 86'400'000'000'000ULL;

// Cost units a GCRA bucket holds at `t`: (TAT - t) / T.
std::uint64_t charged(const Limiter& l, const std::string& policy, const std::string& key, Nanos t,
                      std::uint64_t count) {
  for (const BucketView& b : l.dump()) {
    if (b.policy == policy && b.key == key) {
      const std::uint64_t T = kDay / count;
      return b.state > static_cast<std::uint64_t>(t.count())
                 ? (b.state - static_cast<std::uint64_t>(t.count())) / T
                 : 0;
    }
  }
  return 0;
}

TEST(MultiLimit, OverlappingPolicySetsChargeAllOrNothingAcrossProcesses) {
  ScopedName name("multi");
  Options o;
  o.name = name.str();
  o.capacity = 256;
  o.claim_timeout = std::chrono::seconds(30);
  Limiter parent = Limiter::create(o);
  // Day-long refills and one fixed time: each limit's allowance is its burst.
  const std::array<std::uint64_t, 3> bursts = {50, 80, 30};
  const std::array<PolicyId, 3> ids = {
      parent.add_policy({"a", Algorithm::kGcra, parse_rate("50/day"), bursts[0], OnFull::kDeny}),
      parent.add_policy({"b", Algorithm::kGcra, parse_rate("80/day"), bursts[1], OnFull::kDeny}),
      parent.add_policy({"c", Algorithm::kGcra, parse_rate("30/day"), bursts[2], OnFull::kDeny}),
  };
  // Process i uses the policy set sets[i % 4] on the same key.
  const std::vector<std::vector<int>> sets = {{0, 1}, {1, 2}, {0, 2}, {0, 1, 2}};
  Shared<std::atomic<std::uint64_t>> admitted(sets.size());
  Shared<std::atomic<std::uint64_t>> start;
  const Nanos t(std::chrono::seconds(10));
  const auto pids = fork_workers(4, [&](int i) {
    Limiter l = Limiter::open(o);
    std::vector<Request> req;
    for (int p : sets[static_cast<std::size_t>(i)])
      req.push_back(Request{ids[static_cast<std::size_t>(p)], "user-7", 1});
    std::vector<Decision> each(req.size());
    wait_for(*start, 1);
    for (int n = 0; n < 3000; ++n) {
      const Decision d = l.acquire_many_at(req, t, each);
      if (d.reason != Reason::kOk) return 3;
      if (d.allowed) {
        admitted[static_cast<std::size_t>(i)].fetch_add(1);
        for (const Decision& e : each) {
          if (!e.allowed) return 4;  // admitted while one of its limits denied
        }
      } else {
        bool some_denied = false;
        for (const Decision& e : each) some_denied |= !e.allowed;
        if (!some_denied) return 5;  // denied with no denying limit
      }
    }
    return 0;
  });
  start->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  // Net charge of each limit == the admissions of the sets that name it.
  for (int p = 0; p < 3; ++p) {
    std::uint64_t expected = 0;
    for (std::size_t s = 0; s < sets.size(); ++s) {
      for (int q : sets[s]) expected += q == p ? admitted[s].load() : 0;
    }
    const std::string policy(1, static_cast<char>('a' + p));
    const std::uint64_t got =
        charged(parent, policy, "user-7", t, bursts[static_cast<std::size_t>(p)]);
    EXPECT_EQ(got, expected) << "policy " << policy
                             << ": charged units differ from admissions (a rollback leaked)";
    EXPECT_LE(got, bursts[static_cast<std::size_t>(p)])
        << "policy " << policy << " exceeded its allowance";
  }
  // After 12,000 attempts every set is exhausted: one of its limits is full.
  for (const auto& set : sets) {
    std::vector<Request> req;
    for (int p : set) req.push_back(Request{ids[static_cast<std::size_t>(p)], "user-7", 1});
    EXPECT_FALSE(parent.acquire_many_at(req, t).allowed);
  }
}

TEST(MultiLimit, DenialReportsTheLargestRetryAfterAndChargesNothing) {
  ScopedName name("multi-retry");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter l = Limiter::create(o);
  const PolicyId burst =
      l.add_policy({"burst", Algorithm::kGcra, parse_rate("60/m"), 2, OnFull::kDeny});
  const PolicyId sustained =
      l.add_policy({"sustained", Algorithm::kGcra, parse_rate("3/h"), 3, OnFull::kDeny});
  const std::array<Request, 2> req = {Request{burst, "u", 1}, Request{sustained, "u", 1}};
  const Nanos t(std::chrono::seconds(1));
  EXPECT_TRUE(l.acquire_many_at(req, t).allowed);
  EXPECT_TRUE(l.acquire_many_at(req, t).allowed);
  // The burst limit is empty (1 s to refill); the sustained one has 1 left.
  std::array<Decision, 2> each;
  Decision d = l.acquire_many_at(req, t, each);
  EXPECT_FALSE(d.allowed);
  EXPECT_FALSE(each[0].allowed);
  EXPECT_TRUE(each[1].allowed);
  EXPECT_EQ(d.retry_after, std::chrono::seconds(1));
  EXPECT_EQ(l.peek(sustained, "u").remaining, 0u)
      << "a denied multi-limit request charged the sustained limit";
  // One second later the burst limit fits, then the sustained one is empty.
  EXPECT_TRUE(l.acquire_many_at(req, t + std::chrono::seconds(1)).allowed);
  d = l.acquire_many_at(req, t + std::chrono::seconds(2), each);
  EXPECT_FALSE(d.allowed);
  EXPECT_TRUE(each[0].allowed);
  EXPECT_FALSE(each[1].allowed);
  EXPECT_EQ(d.retry_after,
            std::chrono::minutes(20) - std::chrono::seconds(2));  // T = 20 min from t = 1 s
}

TEST(MultiLimit, RefundGivesBackButNeverBeyondCapacity) {
  ScopedName name("refund");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter l = Limiter::create(o);
  const PolicyId api =
      l.add_policy({"api", Algorithm::kGcra, parse_rate("5/day"), 5, OnFull::kDeny});
  // Taken at the epoch; refund() runs at the real clock, a few ms later:
  // far less than T = 4.8 h, so no unit has refilled in between.
  const Nanos t(0);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(l.acquire_at(api, "k", 1, t).allowed);
  EXPECT_FALSE(l.acquire_at(api, "k", 1, t).allowed);
  EXPECT_EQ(l.refund(api, "k", 2).remaining, 2u);
  EXPECT_EQ(l.refund(api, "k", 100).remaining, 5u) << "a refund overfilled the bucket";
  EXPECT_EQ(l.refund(api, "absent", 3).remaining, 5u);
}

TEST(MultiLimit, ResetForgivesOneKeyOnePolicyOrEverything) {
  ScopedName name("reset");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter l = Limiter::create(o);
  const PolicyId a = l.add_policy({"a", Algorithm::kGcra, parse_rate("1/day"), 1, OnFull::kDeny});
  const PolicyId b = l.add_policy({"b", Algorithm::kGcra, parse_rate("1/day"), 1, OnFull::kDeny});
  for (const char* k : {"x", "y"}) {
    ASSERT_TRUE(l.acquire(a, k).allowed);
    ASSERT_TRUE(l.acquire(b, k).allowed);
  }
  EXPECT_EQ(l.reset(a, std::string_view("x")), 1u);
  EXPECT_TRUE(l.acquire(a, "x").allowed);
  EXPECT_FALSE(l.acquire(a, "y").allowed);
  EXPECT_EQ(l.reset(b), 2u);
  EXPECT_TRUE(l.acquire(b, "x").allowed);
  EXPECT_TRUE(l.acquire(b, "y").allowed);
  EXPECT_EQ(l.reset(), 4u);
  EXPECT_EQ(l.stats().used, 0u);
  EXPECT_TRUE(l.check(false).clean());
}

}  // namespace
}  // namespace shmlimit::test
