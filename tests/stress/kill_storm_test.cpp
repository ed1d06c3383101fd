// A longer storm than the multiprocess suite: workers on a mix of claims,
// reclaims and decisions, thousands of SIGKILLs, then every invariant
// checked and every key's admissions bounded by its bucket.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <string>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

TEST(Stress, ThousandsOfKillsLeaveAConsistentTableAndNoOverAdmission) {
  constexpr int kKeys = 400;
  constexpr int kKills = 2000;
  ScopedName name("storm");
  Options o;
  o.name = name.str();
  o.capacity = 512;  // fits the day-limited keys; the churn keys must reclaim
  Limiter parent = Limiter::create(o);
  const PolicyId exact =
      parent.add_policy({"exact", Algorithm::kGcra, parse_rate("20/day"), 20, OnFull::kDeny});
  const PolicyId churn =
      parent.add_policy({"churn", Algorithm::kGcra, parse_rate("1000/s"), 1, OnFull::kDeny});
  Shared<std::atomic<std::uint64_t>> recorded(kKeys);
  const Nanos t(std::chrono::seconds(60));
  const int bad = kill_storm(2, kKills, [&](int i) {
    Limiter l = Limiter::open(o);
    std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 1315423911ULL +
                        static_cast<std::uint64_t>(i));
    for (;;) {
      if (rng() % 2 == 0) {
        const auto k = rng() % kKeys;
        if (l.acquire_at(exact, "e" + std::to_string(k), 1, t).allowed) recorded[k].fetch_add(1);
      } else {
        // Real clock, 1 ms refill: these buckets are full again almost at
        // once, so their slots are reclaimed continuously.
        l.acquire(churn, "c" + std::to_string(rng() % 100000));
      }
    }
    return 0;
  });
  EXPECT_EQ(bad, 0);
  const CheckReport report = parent.check(true);
  EXPECT_TRUE(report.clean()) << report.problems.size() << " problems, first: "
                              << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(report.in_progress, 0u);
  const std::uint64_t T = 86'400'000'000'000ULL / 20;
  std::uint64_t lost = 0;
  for (const BucketView& b : parent.dump()) {
    if (b.policy != "exact") continue;
    const std::uint64_t taken = (b.state - static_cast<std::uint64_t>(t.count())) / T;
    const auto k = static_cast<std::size_t>(std::stoul(b.key.substr(1)));
    EXPECT_LE(taken, 20u) << b.key;
    EXPECT_LE(recorded[k].load(), taken) << b.key;
    lost += taken - recorded[k].load();
  }
  EXPECT_LE(lost, static_cast<std::uint64_t>(kKills));
}

}  // namespace
}  // namespace shmlimit::test
