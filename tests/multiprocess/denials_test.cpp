// The recent-denials ring across forked processes: four workers make
// known denials on one segment; the ring then holds exactly what they
// recorded (pid, key, cost), and when they make more than the ring holds it
// keeps the newest and reports exactly how many were lost.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit {
namespace {

using test::fork_workers;
using test::ScopedName;
using test::Shared;
using test::wait_all;

constexpr int kWorkers = 4;
constexpr int kMaxKeys = 512;

// What one worker did: its pid, and for each key index whether it was denied.
struct WorkerLog {
  std::atomic<std::int64_t> pid{0};
  std::atomic<std::uint64_t> denied[kMaxKeys];
};

using Denial = std::tuple<std::int32_t, std::string, std::uint64_t>;  // pid, key, cost

std::string key_of(int worker, int k) {
  return "w" + std::to_string(worker) + "-k" + std::to_string(k);
}
std::uint64_t cost_of(int k) { return 1 + static_cast<std::uint64_t>(k % 3); }

// Each worker takes each of its keys' whole burst (3), then asks once more
// for cost 1..3: a denial it logs.
void run_workers(const std::string& name, int keys, const Shared<WorkerLog>& logs) {
  const auto pids = fork_workers(kWorkers, [&](int w) {
    Options o;
    o.name = name;
    o.capacity = 0;  // whatever the segment has
    Limiter l = Limiter::open(o);
    const PolicyId p = *l.find_policy("api");
    logs[static_cast<std::size_t>(w)].pid.store(::getpid());
    for (int k = 0; k < keys; ++k) {
      if (!l.acquire(p, key_of(w, k), 3).allowed) return 1;
      const bool denied = !l.acquire(p, key_of(w, k), cost_of(k)).allowed;
      logs[static_cast<std::size_t>(w)].denied[k].store(denied ? 1 : 0);
    }
    return 0;
  });
  ASSERT_EQ(wait_all(pids), 0);
}

std::multiset<Denial> logged(const Shared<WorkerLog>& logs, int keys) {
  std::multiset<Denial> out;
  for (int w = 0; w < kWorkers; ++w) {
    const WorkerLog& log = logs[static_cast<std::size_t>(w)];
    for (int k = 0; k < keys; ++k) {
      if (log.denied[k].load() != 0)
        out.emplace(static_cast<std::int32_t>(log.pid.load()), key_of(w, k), cost_of(k));
    }
  }
  return out;
}

Limiter make_segment(const ScopedName& name) {
  Options o;
  o.name = name.str();
  o.capacity = 4096;
  Limiter l = Limiter::create(o);
  PolicySpec s;
  s.name = "api";
  s.rate = Rate{3, std::chrono::hours(1)};
  l.add_policy(s);
  return l;
}

TEST(Denials, RingHoldsExactlyTheDenialsEveryProcessMade) {
  ScopedName name("denials");
  Limiter l = make_segment(name);
  constexpr int kKeys = 100;  // 400 denials: fits the ring
  Shared<WorkerLog> logs(kWorkers);
  run_workers(name.str(), kKeys, logs);
  const std::multiset<Denial> want = logged(logs, kKeys);
  ASSERT_EQ(want.size(), std::size_t{kWorkers * kKeys});

  const RecentDenials r = l.recent_denials();
  EXPECT_EQ(r.lost, 0u);
  EXPECT_EQ(r.next_cursor, want.size());
  std::multiset<Denial> got;
  for (const DenialView& d : r.denials) {
    EXPECT_EQ(d.policy, "api");
    EXPECT_GT(d.retry_after.count(), 0);
    got.emplace(d.pid, d.key, d.cost);
  }
  EXPECT_EQ(got, want);
  // Cursors are consecutive: one ticket per denial.
  for (std::size_t i = 0; i < r.denials.size(); ++i) EXPECT_EQ(r.denials[i].cursor, i);
}

TEST(Denials, OverflowKeepsTheNewestAndReportsExactlyHowManyWereLost) {
  ScopedName name("denials-overflow");
  Limiter l = make_segment(name);
  constexpr int kKeys = 400;  // 1600 denials into a ring of 1024
  Shared<WorkerLog> logs(kWorkers);
  run_workers(name.str(), kKeys, logs);
  const std::multiset<Denial> want = logged(logs, kKeys);
  ASSERT_EQ(want.size(), std::size_t{kWorkers * kKeys});

  // Exactly accounted: every ticket is either returned or counted lost.
  // The newest 1024 tickets are kept, less any a writer dropped because the
  // entry's previous writer (a lap behind) was preempted mid-record
  // (denials.hpp, invariant 2): at most one such drop per other worker
  // whose record was in flight.
  const RecentDenials r = l.recent_denials();
  EXPECT_EQ(r.denials.size() + r.lost, want.size());
  EXPECT_GE(r.lost, want.size() - 1024);
  EXPECT_LE(r.lost, want.size() - 1024 + kWorkers);
  EXPECT_GE(r.denials.front().cursor, want.size() - 1024);
  for (const DenialView& d : r.denials) {
    EXPECT_EQ(want.count(Denial{d.pid, d.key, d.cost}), 1u) << d.key << " was never denied";
  }
  // A reader that kept up (its cursor at the 1000th denial) loses only what
  // it missed and those drops.
  const RecentDenials tail = l.recent_denials(1000);
  EXPECT_EQ(tail.denials.size() + tail.lost, want.size() - 1000);
  EXPECT_LE(tail.lost, static_cast<std::uint64_t>(kWorkers));
}

}  // namespace
}  // namespace shmlimit
