// Exactness across real forked processes on one real segment: P processes
// admit exactly what the policy allows, on one hot key, on many keys being
// claimed at the same moment, and across refills.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

constexpr int kProcs = 4;

Options options_for(const ScopedName& name, std::uint32_t capacity) {
  Options o;
  o.name = name.str();
  o.capacity = capacity;
  // Exact counts are asserted: never let a descheduled claimer turn a
  // decision into the on-full answer on a loaded machine (or under TSan).
  o.claim_timeout = std::chrono::seconds(30);
  return o;
}

TEST(Exactness, HotKeyAdmitsExactlyTheBurstAcrossProcesses) {
  ScopedName name("hot");
  Limiter parent = Limiter::create(options_for(name, 1024));
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("1000/day"), 300, OnFull::kDeny});
  Shared<std::atomic<std::uint64_t>> start;
  Shared<std::atomic<std::uint64_t>> admitted(kProcs);
  const auto pids = fork_workers(kProcs, [&](int i) {
    Limiter l = Limiter::open(options_for(name, 1024));
    wait_for(*start, 1);
    // One fixed time: no refill, so the allowance is exactly the burst.
    for (int n = 0; n < 5000; ++n) {
      if (l.acquire_at(api, "hot-key", 1, std::chrono::seconds(10)).allowed)
        admitted[i].fetch_add(1);
    }
    return 0;
  });
  start->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  std::uint64_t total = 0;
  for (int i = 0; i < kProcs; ++i) total += admitted[i].load();
  EXPECT_EQ(total, 300u);
  // The exact totals count every decision; the dump's per-key counts are
  // statistics that a race may leave short, never over.
  const PolicyCounters c = parent.counters().at(0);
  EXPECT_EQ(c.admitted, 300u);
  EXPECT_EQ(c.denied, kProcs * 5000u - 300u);
  const auto rows = parent.dump();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_LE(rows[0].admitted, 300u);
  EXPECT_LE(rows[0].denied, kProcs * 5000u - 300u);
  EXPECT_TRUE(parent.check(false).clean());
}

// Limiter::tally (the fixed window of Python `limits`): every count of
// every process lands, on one hot key and on keys being claimed at once,
// whether or not the window restarts at each count.
TEST(Exactness, TallyCountsEveryHitOfEveryProcess) {
  constexpr int kKeys = 16;
  constexpr int kHits = 3200;  // a multiple of kKeys
  ScopedName name("tally");
  Limiter parent = Limiter::create(options_for(name, 1024));
  const PolicyId fw =
      parent.add_policy({"limits.fw", Algorithm::kQuietPeriod, parse_rate("524286/day")});
  Shared<std::atomic<std::uint64_t>> start;
  const auto pids = fork_workers(kProcs, [&](int i) {
    Limiter l = Limiter::open(options_for(name, 1024));
    wait_for(*start, 1);
    for (int n = 0; n < kHits; ++n) {
      const bool restart = (n + i) % 2 == 0;
      if (!l.tally(fw, "hot", 1, restart).allowed) return 1;
      if (!l.tally(fw, "k" + std::to_string(n % kKeys), 2, restart).allowed) return 2;
    }
    return 0;
  });
  start->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  const Decision hot = parent.tally(fw, "hot", 0);
  EXPECT_EQ(hot.limit - hot.remaining, std::uint64_t{kProcs} * kHits);
  for (int k = 0; k < kKeys; ++k) {
    const Decision d = parent.tally(fw, "k" + std::to_string(k), 0);
    EXPECT_EQ(d.limit - d.remaining, std::uint64_t{kProcs} * (kHits / kKeys) * 2) << k;
  }
  EXPECT_TRUE(parent.check(false).clean());
}

TEST(Exactness, HotKeyOnTheRealClockStaysWithinTheAllowance) {
  ScopedName name("clock");
  Limiter parent = Limiter::create(options_for(name, 1024));
  // 1000/hour: T = 3.6 s, so a run of a few seconds refills at most a few.
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("1000/hour"), 0, OnFull::kDeny});
  Shared<std::atomic<std::uint64_t>> start;
  Shared<std::atomic<std::uint64_t>> admitted(kProcs);
  const Nanos t0 = parent.now();
  const auto pids = fork_workers(kProcs, [&](int i) {
    Limiter l = Limiter::open(options_for(name, 1024));
    wait_for(*start, 1);
    for (int n = 0; n < 20000; ++n) {
      if (l.acquire(api, "user-1").allowed) admitted[i].fetch_add(1);
    }
    return 0;
  });
  start->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  const Nanos elapsed = parent.now() - t0;
  std::uint64_t total = 0;
  for (int i = 0; i < kProcs; ++i) total += admitted[i].load();
  const std::uint64_t T = 3'600'000'000;  // ceil(3600 s / 1000)
  const std::uint64_t allowance = 1000 + static_cast<std::uint64_t>(elapsed.count()) / T;
  EXPECT_GE(total, 1000u);
  EXPECT_LE(total, allowance);
}

TEST(Exactness, ManyKeysClaimedAtOnceAdmitTheBurstEach) {
  // Every process walks the same new keys in the same order, so the same
  // key is claimed by several processes at the same moment: a duplicate
  // slot would admit twice the burst.
  constexpr int kKeys = 3000;
  ScopedName name("claims");
  Limiter parent = Limiter::create(options_for(name, 8192));
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("2/day"), 0, OnFull::kDeny});
  Shared<std::atomic<std::uint64_t>> start;
  Shared<std::atomic<std::uint64_t>> per_key(kKeys);
  Shared<std::atomic<std::uint64_t>> failures;
  const auto pids = fork_workers(kProcs, [&](int) {
    Limiter l = Limiter::open(options_for(name, 8192));
    wait_for(*start, 1);
    for (int k = 0; k < kKeys; ++k) {
      const std::string key = "key-" + std::to_string(k);
      for (int n = 0; n < 3; ++n) {
        const Decision d = l.acquire_at(api, key, 1, std::chrono::seconds(5));
        if (d.reason != Reason::kOk) failures->fetch_add(1);
        if (d.allowed) per_key[k].fetch_add(1);
      }
    }
    return 0;
  });
  start->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  EXPECT_EQ(failures->load(), 0u);
  int wrong = 0;
  for (int k = 0; k < kKeys; ++k) wrong += per_key[k].load() != 2;
  EXPECT_EQ(wrong, 0) << "keys that did not admit exactly their burst of 2";
  const CheckReport report = parent.check(false);
  EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(report.live, static_cast<std::uint64_t>(kKeys));
  EXPECT_EQ(parent.stats().used, static_cast<std::uint64_t>(kKeys));
}

TEST(Exactness, RefillsAdmitExactlyWhatRefilledInEveryPhase) {
  constexpr int kPhases = 12;
  ScopedName name("refill");
  Limiter parent = Limiter::create(options_for(name, 1024));
  // 10/s: T = 100 ms; burst 5.
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("10/s"), 5, OnFull::kDeny});
  Shared<PhaseClock> clock;
  Shared<std::atomic<std::uint64_t>> admitted(kPhases);
  const auto pids = fork_workers(kProcs, [&](int) {
    Limiter l = Limiter::open(options_for(name, 1024));
    for (int p = 0; p < kPhases; ++p) {
      const Nanos now = clock->enter(p);
      for (int n = 0; n < 40; ++n) {
        if (l.acquire_at(api, "k", 1, now).allowed) admitted[p].fetch_add(1);
      }
      clock->leave();
    }
    return 0;
  });
  // Phase 0 at t = 1 s: the burst. Phase p: 3 emission intervals later.
  for (int p = 0; p < kPhases; ++p) {
    clock->run(p, 1'000'000'000 + p * 300'000'000LL, kProcs);
  }
  ASSERT_EQ(wait_all(pids), 0);
  EXPECT_EQ(admitted[0].load(), 5u);
  for (int p = 1; p < kPhases; ++p) EXPECT_EQ(admitted[p].load(), 3u) << "phase " << p;
}

TEST(Exactness, ReclaimChurnOnASmallTableKeepsEveryKeyExact) {
  // Each phase uses a new set of keys, more than fit beside the last
  // phase's: slots of full buckets are reclaimed while other processes are
  // still deciding on the same keys. Every key admits exactly its burst.
  constexpr int kPhases = 6;
  constexpr int kKeysPerPhase = 40;
  ScopedName name("churn");
  Options o = options_for(name, 64);
  o.max_probe = 64;
  Limiter parent = Limiter::create(o);
  const PolicyId api =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("1/s"), 3, OnFull::kDeny});
  Shared<PhaseClock> clock;
  Shared<std::atomic<std::uint64_t>> per_key(kPhases * kKeysPerPhase);
  Shared<std::atomic<std::uint64_t>> not_ok;
  const auto pids = fork_workers(kProcs, [&](int i) {
    Limiter l = Limiter::open(o);
    for (int p = 0; p < kPhases; ++p) {
      const Nanos now = clock->enter(p);
      for (int n = 0; n < kKeysPerPhase * 5; ++n) {
        const int k = p * kKeysPerPhase + (n * 7 + i * 13) % kKeysPerPhase;
        const Decision d = l.acquire_at(api, "churn-" + std::to_string(k), 1, now);
        if (d.reason != Reason::kOk) not_ok->fetch_add(1);
        if (d.allowed) per_key[k].fetch_add(1);
      }
      clock->leave();
    }
    return 0;
  });
  for (int p = 0; p < kPhases; ++p) {
    // 10 s apart: every bucket of the previous phase is full again.
    clock->run(p, 1'000'000'000 + p * 10'000'000'000LL, kProcs);
  }
  ASSERT_EQ(wait_all(pids), 0);
  EXPECT_EQ(not_ok->load(), 0u);
  for (int k = 0; k < kPhases * kKeysPerPhase; ++k) EXPECT_EQ(per_key[k].load(), 3u) << "key " << k;
  const CheckReport report = parent.check(false);
  EXPECT_TRUE(report.clean()) << (report.problems.empty() ? "" : report.problems.front());
}

TEST(Exactness, FullTableDecisionsAreCountedAndNeverEvictPenalisedBuckets) {
  ScopedName name("full");
  Options o = options_for(name, 16);
  o.max_probe = 16;
  Limiter parent = Limiter::create(o);
  const PolicyId closed =
      parent.add_policy({"closed", Algorithm::kGcra, parse_rate("1/day"), 1, OnFull::kDeny});
  Shared<std::atomic<std::uint64_t>> full_denied;
  Shared<std::atomic<std::uint64_t>> admitted;
  const auto pids = fork_workers(kProcs, [&](int i) {
    Limiter l = Limiter::open(o);
    for (int k = 0; k < 32; ++k) {
      const Decision d = l.acquire_at(closed, "p" + std::to_string(i) + "-" + std::to_string(k), 1,
                                      std::chrono::seconds(1));
      if (d.reason == Reason::kTableFull) {
        if (d.allowed) return 3;  // fail-closed must deny
        full_denied->fetch_add(1);
      } else if (d.allowed) {
        admitted->fetch_add(1);
      }
    }
    return 0;
  });
  ASSERT_EQ(wait_all(pids), 0);
  // 16 slots hold 16 penalised keys; every other key was refused and counted.
  EXPECT_EQ(admitted->load(), 16u);
  EXPECT_EQ(full_denied->load(), kProcs * 32u - 16u);
  EXPECT_EQ(parent.stats().full_events, kProcs * 32u - 16u);
  // The penalised buckets are all still there and still penalised.
  const auto rows = parent.dump();
  ASSERT_EQ(rows.size(), 16u);
  for (const auto& row : rows) EXPECT_EQ(row.admitted, 1u);
}

}  // namespace
}  // namespace shmlimit::test
