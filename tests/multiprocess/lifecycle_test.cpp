// Segment life across processes: the initialisation race, and workers
// killed with SIGKILL at random moments (in the middle of claims and of
// decisions) while others go on.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

TEST(Lifecycle, ProcessesRacingToOpenOrCreateAgreeOnOneSegment) {
  constexpr int kProcs = 8;
  for (int round = 0; round < 10; ++round) {
    ScopedName name("race");
    Shared<std::atomic<std::uint64_t>> start;
    // Each process reports the creation time and hash-independent facts it saw.
    Shared<std::atomic<std::int64_t>> created(kProcs);
    Shared<std::atomic<std::uint64_t>> policy_index(kProcs);
    Shared<std::atomic<std::uint64_t>> admitted;
    const auto pids = fork_workers(kProcs, [&](int i) {
      Options o;
      o.name = name.str();
      o.capacity = 256;
      o.claim_timeout = std::chrono::seconds(30);
      wait_for(*start, 1);
      Limiter l = Limiter::open_or_create(o);
      created[i].store(l.stats().created_unix_ns);
      const PolicyId id =
          l.add_policy({"api", Algorithm::kGcra, parse_rate("5/m"), 0, OnFull::kAllow});
      policy_index[i].store(id.index);
      if (l.acquire_at(id, "k", 1, std::chrono::seconds(1)).allowed) admitted->fetch_add(1);
      return 0;
    });
    start->store(1, std::memory_order_release);
    ASSERT_EQ(wait_all(pids), 0) << "round " << round;
    EXPECT_EQ(admitted->load(), 5u) << "eight processes share one burst of five";
    for (int i = 1; i < kProcs; ++i) {
      EXPECT_EQ(created[i].load(), created[0].load()) << "process " << i << " saw another segment";
      EXPECT_EQ(policy_index[i].load(), policy_index[0].load());
    }
    Options o;
    o.name = name.str();
    o.capacity = 0;
    Limiter l = Limiter::open(o);
    EXPECT_EQ(l.policies().size(), 1u);
    const Decision d = l.peek(*l.find_policy("api"), "k");
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_TRUE(l.check(false).clean());
  }
}

TEST(Lifecycle, WorkersKilledMidClaimLeaveNoSlotLeakedOrDuplicated) {
  // Keys churn through a small table, so most decisions claim or reclaim a
  // slot: kills land in the middle of claims.
  ScopedName name("kill-claim");
  Options o;
  o.name = name.str();
  o.capacity = 256;
  o.max_probe = 32;
  Limiter parent = Limiter::create(o);
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("100/s"), 2, OnFull::kDeny});
  const int failed = kill_storm(2, 300, [&](int i) {
    Limiter l = Limiter::open(o);
    std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 7919 +
                        static_cast<std::uint64_t>(i));
    for (;;) {
      // Real time: buckets refill in 20 ms, so slots keep being reclaimed.
      l.acquire(api, "user-" + std::to_string(rng() % 5000));
    }
    return 0;
  });
  EXPECT_EQ(failed, 0);
  const CheckReport report = parent.check(true);
  EXPECT_TRUE(report.clean()) << report.problems.size() << " problems, first: "
                              << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(report.in_progress, 0u) << "a claim of a dead process survived the repair";
  const Stats s = parent.stats();
  EXPECT_EQ(s.claiming, 0u);
  EXPECT_EQ(s.used + s.dead + s.empty, s.capacity);
  // Nothing leaked: once every bucket is full again, every slot can be
  // taken by a new key.
  std::uint64_t admitted = 0;
  for (int k = 0; k < 4000 && admitted < s.capacity; ++k) {
    admitted +=
        parent
            .acquire_at(api, "fresh-" + std::to_string(k), 1, parent.now() + std::chrono::hours(1))
            .allowed;
  }
  EXPECT_GE(admitted, s.capacity * 9 / 10) << "slots stayed unusable after the kill storm";
  EXPECT_TRUE(parent.check(false).clean());
}

TEST(Lifecycle, WorkersKilledMidDecisionNeverOverAdmit) {
  // One fixed time and a day-long refill: every key's allowance is exactly
  // its burst, whatever dies when.
  constexpr int kKeys = 64;
  constexpr std::uint64_t kBurst = 50;
  ScopedName name("kill-decide");
  Options o;
  o.name = name.str();
  o.capacity = 1024;
  o.claim_timeout = std::chrono::seconds(30);
  Limiter parent = Limiter::create(o);
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("50/day"), kBurst, OnFull::kDeny});
  Shared<std::atomic<std::uint64_t>> recorded(kKeys);
  const Nanos t(std::chrono::seconds(30));
  const int failed = kill_storm(2, 200, [&](int i) {
    Limiter l = Limiter::open(o);
    std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 31 +
                        static_cast<std::uint64_t>(i));
    for (;;) {
      const auto k = rng() % kKeys;
      if (l.acquire_at(api, "k" + std::to_string(k), 1, t).allowed) recorded[k].fetch_add(1);
    }
    return 0;
  });
  EXPECT_EQ(failed, 0);
  EXPECT_TRUE(parent.check(true).clean());
  // The bucket's own state says how much was taken: (TAT - t) / T.
  const std::uint64_t T = 86'400'000'000'000ULL / 50;
  std::uint64_t lost = 0;
  for (const BucketView& b : parent.dump()) {
    const std::uint64_t taken = (b.state - static_cast<std::uint64_t>(t.count())) / T;
    const auto k = static_cast<std::size_t>(std::stoul(b.key.substr(1)));
    EXPECT_LE(taken, kBurst) << b.key;
    EXPECT_LE(recorded[k].load(), taken)
        << b.key << ": a process was told yes more often than the bucket was charged";
    lost += taken - recorded[k].load();
  }
  // A worker killed between its CAS and its own bookkeeping loses at most
  // one admission per kill.
  EXPECT_LE(lost, 200u);
}

// Tallies killed anywhere: the table checks clean and every key's count
// is at least what the processes recorded, and above it by at most one
// count per kill (a worker killed between its CAS and its bookkeeping).
TEST(Lifecycle, WorkersKilledMidTallyLoseNoCount) {
  constexpr int kKeys = 64;
  constexpr int kKills = 200;
  ScopedName name("kill-tally");
  Options o;
  o.name = name.str();
  o.capacity = 128;  // 64 keys claimed while workers die
  o.claim_timeout = std::chrono::seconds(30);
  Limiter parent = Limiter::create(o);
  const PolicyId fw =
      parent.add_policy({"limits.fw", Algorithm::kQuietPeriod, parse_rate("524286/day")});
  Shared<std::atomic<std::uint64_t>> recorded(kKeys);
  const int failed = kill_storm(2, kKills, [&](int i) {
    Limiter l = Limiter::open(o);
    std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 31 +
                        static_cast<std::uint64_t>(i));
    for (;;) {
      const auto k = rng() % kKeys;
      if (l.tally(fw, "k" + std::to_string(k), 1, (rng() & 1) != 0).allowed)
        recorded[k].fetch_add(1);
    }
    return 0;
  });
  EXPECT_EQ(failed, 0);
  EXPECT_TRUE(parent.check(true).clean());
  std::uint64_t extra = 0;
  for (int k = 0; k < kKeys; ++k) {
    const Decision d = parent.tally(fw, "k" + std::to_string(k), 0);
    const std::uint64_t count = d.limit - d.remaining;
    EXPECT_GE(count, recorded[k].load()) << k << ": a recorded count was lost";
    extra += count - recorded[k].load();
  }
  EXPECT_LE(extra, std::uint64_t{kKills});
}

}  // namespace
}  // namespace shmlimit::test
