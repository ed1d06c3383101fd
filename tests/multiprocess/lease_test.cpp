// Concurrency leases across fork()ed processes on a real segment: never
// more than the limit in flight, and leases of processes SIGKILLed at any
// step of acquire or release (a fault-injection hook kills at each one)
// are reclaimed by the survivors, once, with the count back at 0.
#include "limiter/lease.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

using detail::LeaseFault;

Options options(const ScopedName& name) {
  Options o;
  o.name = name.str();
  o.capacity = 256;
  return o;
}

PolicyId add_limit(Limiter& l, std::uint64_t n) {
  return l.add_policy(PolicySpec{"conn", Algorithm::kConcurrency, Rate{n, Nanos(0)}});
}

std::string problems(const CheckReport& r) {
  std::string out;
  for (const std::string& p : r.problems) out += p + "; ";
  return out;
}

// Takes `n` leases of (id, key), retrying while dead holders are being
// reclaimed (a denied lease scans for them at most once a millisecond).
// Generous deadline: a loaded machine is slow, never wrong.
std::vector<Lease> take(Limiter& l, PolicyId id, const char* key, std::uint64_t n) {
  std::vector<Lease> out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    Lease lease = l.lease(id, key);
    if (lease.held()) {
      out.push_back(std::move(lease));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  return out;
}

TEST(LeasesAcrossProcesses, NeverMoreThanTheLimitInFlight) {
  ScopedName name("lease-inflight");
  Limiter parent = Limiter::create(options(name));
  constexpr std::int64_t kLimit = 3;
  const PolicyId id = add_limit(parent, kLimit);
  struct Counters {
    std::atomic<std::int64_t> in_flight{0};
    std::atomic<std::int64_t> violations{0};
    std::atomic<std::int64_t> granted{0};
    std::atomic<std::int64_t> denied{0};
  };
  Shared<Counters> c;
  const auto pids = fork_workers(4, [&](int) {
    Limiter l = Limiter::open(options(name));
    for (int i = 0; i < 3000; ++i) {
      const std::int64_t cost = i % 7 == 0 ? 2 : 1;
      Lease lease = l.lease(id, "hot", static_cast<std::uint64_t>(cost));
      if (!lease.held()) {
        c->denied.fetch_add(1);
        continue;
      }
      // Counted after the grant, uncounted before the release.
      if (c->in_flight.fetch_add(cost) + cost > kLimit) c->violations.fetch_add(1);
      c->granted.fetch_add(1);
      if (i % 3 == 0) ::sched_yield();
      c->in_flight.fetch_sub(cost);
      lease.release();
    }
    return 0;
  });
  EXPECT_EQ(wait_all(pids), 0);
  EXPECT_EQ(c->violations.load(), 0);
  EXPECT_GT(c->granted.load(), 0);
  EXPECT_EQ(c->in_flight.load(), 0);
  EXPECT_EQ(parent.peek(id, "hot", 0).remaining, static_cast<std::uint64_t>(kLimit));
  const CheckReport r = parent.check();
  EXPECT_TRUE(r.clean()) << problems(r);
}

TEST(LeasesAcrossProcesses, HoldersKilledWhileHoldingAreReclaimedOnce) {
  ScopedName name("lease-killed");
  Limiter parent = Limiter::create(options(name));
  constexpr std::uint64_t kLimit = 4;
  const PolicyId id = add_limit(parent, kLimit);
  Shared<std::atomic<std::uint64_t>> holding;
  const auto pids = fork_workers(static_cast<int>(kLimit), [&](int) {
    Limiter l = Limiter::open(options(name));
    Lease lease = l.lease(id, "k");
    if (!lease.held()) return 1;
    holding->fetch_add(1);
    for (;;) ::pause();  // killed while holding
  });
  wait_for(*holding, kLimit);
  EXPECT_FALSE(parent.lease(id, "k").held());  // all held by live processes
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_all(pids, /*killed_ok=*/true), 0);

  // The survivor's denied leases reclaim the dead holders' units.
  std::vector<Lease> mine = take(parent, id, "k", kLimit);
  ASSERT_EQ(mine.size(), kLimit);
  // Reclaimed once each: the count is exactly ours, not lower.
  EXPECT_FALSE(parent.lease(id, "k").held());
  mine.clear();
  EXPECT_EQ(parent.peek(id, "k", 0).remaining, kLimit);
  const CheckReport r = parent.check();
  EXPECT_TRUE(r.clean()) << problems(r);
  EXPECT_EQ(r.repaired, 0u);  // nothing left to repair
}

// ---- death at every step, by fault injection --------------------------------
LeaseFault g_die_at = LeaseFault::kAfterIntent;

void die_here(LeaseFault at) noexcept {
  if (at == g_die_at) ::raise(SIGKILL);
}

struct Step {
  LeaseFault at;
  bool in_release;
  const char* label;
};
struct StepCase {
  Step step;
  bool via_check;  // recovered by check(repair) rather than by denied leases
};
std::ostream& operator<<(std::ostream& os, const StepCase& c) {
  return os << c.step.label << (c.via_check ? "_check" : "_denial");
}

class DeathAtLeaseStep : public ::testing::TestWithParam<StepCase> {};

TEST_P(DeathAtLeaseStep, SurvivorsRecoverTheLeaseAndTheCountReturnsToZero) {
  const StepCase c = GetParam();
  ScopedName name("lease-step");
  Limiter parent = Limiter::create(options(name));
  constexpr std::uint64_t kLimit = 3;
  const PolicyId id = add_limit(parent, kLimit);
  g_die_at = c.step.at;
  const auto pids = fork_workers(1, [&](int) {
    Limiter l = Limiter::open(options(name));
    Lease other = l.lease(id, "k");  // one more lease of the same process, released by recovery too
    if (!other.held()) return 1;
    detail::g_lease_fault = &die_here;
    Lease lease = l.lease(id, "k");  // dies here for an acquire step
    if (!lease.held()) return 2;
    lease.release();  // or here for a release step
    return 3;         // the hook did not fire
  });
  int status = 0;
  ASSERT_EQ(::waitpid(pids[0], &status, 0), pids[0]);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;

  if (c.via_check) {
    const CheckReport before = parent.check(/*repair=*/false);
    EXPECT_FALSE(before.clean());  // the dead holder is reported
    const CheckReport repaired = parent.check();
    EXPECT_TRUE(repaired.clean()) << problems(repaired);
    // Recovered by check's scan, or on taking the dead process's registry
    // entry (the first registration of this process): counted either way.
    EXPECT_GE(repaired.repaired + parent.stats().repairs, 1u);
    EXPECT_EQ(parent.peek(id, "k", 0).remaining, kLimit);
  }
  std::vector<Lease> mine = take(parent, id, "k", kLimit);
  ASSERT_EQ(mine.size(), kLimit);
  EXPECT_FALSE(parent.lease(id, "k").held());  // exactly the limit: nothing released twice
  mine.clear();
  EXPECT_EQ(parent.peek(id, "k", 0).remaining, kLimit);
  const CheckReport r = parent.check();
  EXPECT_TRUE(r.clean()) << problems(r);
  EXPECT_EQ(parent.peek(id, "k", 0).remaining, kLimit);
}

const Step kSteps[] = {
    {LeaseFault::kAfterIntent, false, "AcquireBeforeTheWordCas"},
    {LeaseFault::kAfterWordCas, false, "AcquireBetweenTheWordCasAndTheRecord"},
    {LeaseFault::kAfterHeld, false, "AcquireBeforeClearingPending"},
    {LeaseFault::kAfterReleasing, true, "ReleaseBeforeTheWordCas"},
    {LeaseFault::kAfterReleaseCas, true, "ReleaseBetweenTheWordCasAndTheRecord"},
};

std::vector<StepCase> all_cases() {
  std::vector<StepCase> out;
  for (const Step& s : kSteps) {
    out.push_back({s, false});
    out.push_back({s, true});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(EveryStep, DeathAtLeaseStep, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<StepCase>& info) {
                           return std::string(info.param.step.label) +
                                  (info.param.via_check ? "_ByCheck" : "_ByDenial");
                         });

TEST(LeasesAcrossProcesses, KillStormLeavesNoLeakedLease) {
  ScopedName name("lease-storm");
  Limiter parent = Limiter::create(options(name));
  constexpr std::uint64_t kLimit = 3;
  const PolicyId id = add_limit(parent, kLimit);
  const int bad = kill_storm(3, 80, [&](int) {
    Limiter l = Limiter::open(options(name));
    for (std::uint64_t i = 0;; ++i) {
      Lease lease = l.lease(id, "hot", 1 + i % 2);
      if (lease.held() && i % 5 == 0) ::sched_yield();
    }
    return 0;
  });
  EXPECT_EQ(bad, 0);
  const CheckReport repaired = parent.check();
  EXPECT_TRUE(repaired.clean()) << problems(repaired);
  EXPECT_EQ(parent.peek(id, "hot", 0).remaining, kLimit);  // every unit came back
  std::vector<Lease> mine = take(parent, id, "hot", kLimit);
  EXPECT_EQ(mine.size(), kLimit);
  EXPECT_FALSE(parent.lease(id, "hot").held());
  mine.clear();
  const CheckReport r = parent.check();
  EXPECT_TRUE(r.clean()) << problems(r);
  EXPECT_EQ(r.repaired, 0u);
}

}  // namespace
}  // namespace shmlimit::test
