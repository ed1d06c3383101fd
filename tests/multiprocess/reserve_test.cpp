// Reservations across fork()ed processes on one GCRA bucket: the turns
// handed out conform to the policy exactly, the realised calls (after
// wait()'s sleep) never run ahead of them, and a waiter SIGKILLed in its
// sleep costs the others its own turn and nothing more. The same on one
// token bucket: turns at its refill boundaries, at most `count` new units
// per boundary plus the initial burst, none wasted while the queue lasts.
//
// No timed assertions: turns are checked against the bound GCRA promises,
// computed from the first reading of the clock; realised times are checked
// from below only (a loaded machine wakes late, never early).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

Options options(const ScopedName& name) {
  Options o;
  o.name = name.str();
  o.capacity = 256;
  return o;
}

PolicyId add_vendor(Limiter& l, std::uint64_t per_second, std::uint64_t burst) {
  return l.add_policy(
      PolicySpec{"vendor", Algorithm::kGcra, Rate{per_second, std::chrono::seconds(1)}, burst});
}

// GCRA's bound on sorted act times t_0 <= t_1 <= ...: for i < j,
// t_j - t_i >= (j - i + 1 - B) * T (never more than B + window / T in any
// window). Returns the first violation, or an empty string.
std::string conformance(const std::vector<std::int64_t>& sorted, std::int64_t t_ns,
                        std::int64_t burst) {
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    for (std::size_t j = i + 1; j < sorted.size(); ++j) {
      const std::int64_t need = (static_cast<std::int64_t>(j - i) + 1 - burst) * t_ns;
      if (sorted[j] - sorted[i] < need) {
        return "acts " + std::to_string(i) + " and " + std::to_string(j) + " are " +
               std::to_string(sorted[j] - sorted[i]) + " ns apart, GCRA needs " +
               std::to_string(need);
      }
    }
  }
  return {};
}

// `workers` forked processes reserve `each` turns one after another on
// (id, "acct"), as fast as they can, released together. The turns sorted,
// with the segment clock just before the release and after the last exit.
struct ReservedTurns {
  std::vector<std::int64_t> sorted;
  std::int64_t start = 0;
  std::int64_t end = 0;
};

void reserve_in_workers(const ScopedName& name, Limiter& lim, PolicyId id, int workers, int each,
                        ReservedTurns* out) {
  Shared<std::atomic<std::int64_t>> turns(static_cast<std::size_t>(workers * each));
  Shared<std::atomic<std::uint64_t>> go;
  const auto pids = fork_workers(workers, [&](int w) {
    Limiter l = Limiter::open(options(name));
    wait_for(*go, 1);
    for (int i = 0; i < each; ++i) {
      const Reservation r = l.reserve(id, "acct", 1, Nanos::max());
      if (!r.ok()) return 1;
      turns[static_cast<std::size_t>(w * each + i)].store(r.time_to_act().count(),
                                                          std::memory_order_relaxed);
    }
    return 0;
  });
  out->start = lim.now().count();
  go->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  out->end = lim.now().count();
  out->sorted.clear();
  for (int i = 0; i < workers * each; ++i) {
    out->sorted.push_back(turns[static_cast<std::size_t>(i)].load());
  }
  std::sort(out->sorted.begin(), out->sorted.end());
}

// `workers` forked processes call wait_for() `each` times on (id, "acct")
// with a generous deadline, released together; every call must be granted.
// The realised times (the segment clock read after each wait returned),
// sorted.
void wait_in_workers(const ScopedName& name, PolicyId id, int workers, int each,
                     std::vector<std::int64_t>* sorted) {
  Shared<std::atomic<std::int64_t>> acts(static_cast<std::size_t>(workers * each));
  Shared<std::atomic<std::uint64_t>> go;
  const auto pids = fork_workers(workers, [&](int w) {
    Limiter l = Limiter::open(options(name));
    wait_for(*go, 1);
    for (int i = 0; i < each; ++i) {
      const Decision d = l.wait_for(id, "acct", 1, std::chrono::seconds(120));
      if (!d.allowed) return 1;
      acts[static_cast<std::size_t>(w * each + i)].store(l.now().count(),
                                                         std::memory_order_relaxed);
    }
    return 0;
  });
  go->store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(pids), 0);
  sorted->clear();
  for (int i = 0; i < workers * each; ++i) {
    sorted->push_back(acts[static_cast<std::size_t>(i)].load());
  }
  std::sort(sorted->begin(), sorted->end());
}

// Forks one worker that waits (wait_for, up to `child_wait`) for a turn on
// (id, "acct"), polls until `landed()` says its reservation is in the
// bucket (at most 60 s), then SIGKILLs it in its sleep and reaps it.
template <class Landed>
void kill_a_waiter_in_its_sleep(const ScopedName& name, PolicyId id,
                                std::chrono::seconds child_wait, Landed landed) {
  const auto pids = fork_workers(1, [&](int) {
    Limiter l = Limiter::open(options(name));
    (void)l.wait_for(id, "acct", 1, child_wait);
    return 0;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool in = false;
  while (!(in = landed()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(in) << "the child never reserved";
  ::kill(pids[0], SIGKILL);
  ASSERT_EQ(wait_all(pids, /*killed_ok=*/true), 0);
}

// 8 workers reserve 60 turns each as fast as they can: 480 turns, each
// distinct past the burst and all of them conforming to the policy.
TEST(ReserveAcrossProcesses, TurnsAreDistinctAndConform) {
  ScopedName name("reserve-turns");
  Limiter lim = Limiter::create(options(name));
  constexpr int kWorkers = 8;
  constexpr int kEach = 60;
  constexpr std::int64_t kT = 1'000'000;  // 1000/s
  constexpr std::int64_t kBurst = 4;
  const PolicyId id = add_vendor(lim, 1000, kBurst);
  ReservedTurns run;
  ASSERT_NO_FATAL_FAILURE(reserve_in_workers(name, lim, id, kWorkers, kEach, &run));
  const std::vector<std::int64_t>& t = run.sorted;
  const std::int64_t start = run.start;
  const std::int64_t end = run.end;
  EXPECT_EQ(conformance(t, kT, kBurst), "");
  // Past the burst every turn is its own: no two equal.
  EXPECT_EQ(std::adjacent_find(t.begin() + kBurst, t.end()), t.end());
  // And the schedule wastes nothing: a gap between turns opens only while
  // the queue is empty, i.e. while the workers were still reserving, so
  // the turns span at most (N - B) * T plus the time the reserving took.
  EXPECT_GE(t.front(), start);
  EXPECT_LE(t.back() - t.front(),
            (static_cast<std::int64_t>(t.size()) - kBurst) * kT + (end - start));
}

// 6 workers call wait() 12 times each under 200/s, burst 3: each call's
// realised time (read after wait returns) is at or after its turn, so the
// k-th realised call is no earlier than the k-th turn can be:
// start + (k + 1 - B) * T. Every call is granted (the deadline is generous).
TEST(ReserveAcrossProcesses, RealisedCallsNeverRunAheadOfThePolicy) {
  ScopedName name("reserve-wait");
  Limiter lim = Limiter::create(options(name));
  constexpr int kWorkers = 6;
  constexpr int kEach = 12;
  constexpr std::int64_t kT = 5'000'000;  // 200/s
  constexpr std::int64_t kBurst = 3;
  const PolicyId id = add_vendor(lim, 200, kBurst);
  const std::int64_t start = lim.now().count();  // the bucket is full (fresh) from here on
  std::vector<std::int64_t> t;
  ASSERT_NO_FATAL_FAILURE(wait_in_workers(name, id, kWorkers, kEach, &t));
  for (std::size_t k = 0; k < t.size(); ++k) {
    const std::int64_t earliest = start + (static_cast<std::int64_t>(k) + 1 - kBurst) * kT;
    ASSERT_GE(t[k], earliest) << "call " << k << " ran ahead of the policy";
  }
  // Throughput: 72 calls need (72 - 3) * 5 ms = 345 ms; allow a loaded
  // machine 60 s.
  EXPECT_LE(t.back() - start, 60'000'000'000);
}

// A worker SIGKILLed while wait() sleeps for its turn: the others lose that
// one turn and nothing more, nothing is left to repair, and the bucket
// refills as if the dead worker had acted at its turn.
TEST(ReserveAcrossProcesses, AKilledWaiterCostsOnlyItsTurn) {
  ScopedName name("reserve-kill");
  Limiter lim = Limiter::create(options(name));
  // 1 per second, burst 1: T = 1 s.
  constexpr std::int64_t kT = 1'000'000'000;
  const PolicyId id = add_vendor(lim, 1, 1);
  // Queue 3 turns (now, +T, +2T) so the child's turn is about 3T away.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(lim.reserve(id, "acct", 1, Nanos::max()).ok());
  const Nanos before = lim.peek(id, "acct", 1).retry_after;
  ASSERT_GT(before, Nanos(2 * kT));  // 3 T, less the time since
  // Killed once its reservation has landed (the queue grew by T).
  ASSERT_NO_FATAL_FAILURE(kill_a_waiter_in_its_sleep(name, id, std::chrono::seconds(60), [&] {
    return lim.peek(id, "acct", 1).retry_after > before + Nanos(kT / 2);
  }));
  // The next caller queues behind the dead one's turn: one T more than
  // before the child, never more (a small allowance for the time the
  // peeks took).
  const Reservation r = lim.reserve(id, "acct", 1, Nanos::max());
  ASSERT_TRUE(r.ok());
  EXPECT_LE(r.delay(), before + Nanos(kT) + Nanos(kT));
  EXPECT_GE(r.delay(), Nanos(2 * kT));
  // Nothing held, nothing to repair.
  const CheckReport c = lim.check(false);
  EXPECT_TRUE(c.clean());
  EXPECT_EQ(c.repaired, 0u);
  // Past every turn the bucket is full again: injected clock, 10 s later.
  const Decision d = lim.acquire_at(id, "acct", 1, lim.now() + std::chrono::seconds(10));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);  // burst 1, just taken
}

// ---- the token bucket ---------------------------------------------------------

PolicyId add_tb(Limiter& l, std::uint64_t count, Nanos period, std::uint64_t burst) {
  return l.add_policy(PolicySpec{"vendor-tb", Algorithm::kTokenBucket, Rate{count, period}, burst});
}

// The discrete token bucket's bound on sorted act times (a schedule of
// single units): over any span [t_i, t_j], j - i + 1 <= burst + count *
// (refill boundaries in (t_i, t_j]). Returns the first violation, or "".
std::string tb_conformance(const std::vector<std::int64_t>& sorted, std::int64_t period,
                           std::int64_t count, std::int64_t burst) {
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    for (std::size_t j = i + 1; j < sorted.size(); ++j) {
      const std::int64_t units = static_cast<std::int64_t>(j - i) + 1;
      const std::int64_t allowed = burst + count * (sorted[j] / period - sorted[i] / period);
      if (units > allowed) {
        return "acts " + std::to_string(i) + " to " + std::to_string(j) + " hand out " +
               std::to_string(units) + " units over " +
               std::to_string(sorted[j] / period - sorted[i] / period) + " refills, at most " +
               std::to_string(allowed) + " allowed";
      }
    }
  }
  return {};
}

// 6 workers reserve 40 units each as fast as they can on one token bucket
// (2 tokens every 50 ms, burst 4): the 240 turns conform to the bucket's
// bound, every queued turn is a refill boundary, and no refill is wasted
// while the queue lasts: every boundary after the last reservation was
// made, up to the last turn, hands out exactly `count` units.
TEST(ReserveAcrossProcesses, TokenBucketTurnsConformAndUseEveryRefill) {
  ScopedName name("reserve-tb-turns");
  Limiter lim = Limiter::create(options(name));
  constexpr int kWorkers = 6;
  constexpr int kEach = 40;
  constexpr std::int64_t kP = 50'000'000;  // 50 ms
  constexpr std::int64_t kCount = 2;
  constexpr std::int64_t kBurst = 4;
  const PolicyId id = add_tb(lim, kCount, Nanos(kP), kBurst);
  ReservedTurns run;
  ASSERT_NO_FATAL_FAILURE(reserve_in_workers(name, lim, id, kWorkers, kEach, &run));
  const std::vector<std::int64_t>& t = run.sorted;
  const std::int64_t start = run.start;
  const std::int64_t end = run.end;
  EXPECT_EQ(tb_conformance(t, kP, kCount, kBurst), "");
  EXPECT_GE(t.front(), start);
  for (const std::int64_t x : t) {
    if (x > end) {
      ASSERT_EQ(x % kP, 0) << "a queued turn off the refill boundaries";
    }
  }
  // No refill wasted while the queue lasts: each boundary after `end` and
  // before the last turn's hands out exactly kCount units.
  const std::int64_t last = t.back() / kP;
  for (std::int64_t k = end / kP + 1; k < last; ++k) {
    const auto n = std::count(t.begin(), t.end(), k * kP);
    ASSERT_EQ(n, kCount) << "boundary " << k << " (the last turn is at " << last << ")";
  }
  // And overall: the turns span no more boundaries than the 240 - burst
  // units need, plus those that passed while the workers were reserving.
  EXPECT_LE(last - start / kP,
            (kWorkers * kEach - kBurst + kCount - 1) / kCount + (end / kP - start / kP) + 1);
  EXPECT_TRUE(lim.check(false).clean());
}

// 4 workers call wait() 8 times each on a token bucket (2 tokens every
// 10 ms, burst 2): the k-th realised call (read after wait returns) is no
// earlier than the bucket allows from the first instant, the boundary that
// brings its (k + 1 - burst) tokens; every call is granted.
TEST(ReserveAcrossProcesses, TokenBucketRealisedCallsNeverRunAheadOfTheRefills) {
  ScopedName name("reserve-tb-wait");
  Limiter lim = Limiter::create(options(name));
  constexpr int kWorkers = 4;
  constexpr int kEach = 8;
  constexpr std::int64_t kP = 10'000'000;
  constexpr std::int64_t kCount = 2;
  constexpr std::int64_t kBurst = 2;
  const PolicyId id = add_tb(lim, kCount, Nanos(kP), kBurst);
  const std::int64_t start = lim.now().count();
  std::vector<std::int64_t> t;
  ASSERT_NO_FATAL_FAILURE(wait_in_workers(name, id, kWorkers, kEach, &t));
  for (std::size_t k = 0; k < t.size(); ++k) {
    const std::int64_t need = std::max<std::int64_t>(static_cast<std::int64_t>(k) + 1 - kBurst, 0);
    const std::int64_t earliest =
        need == 0 ? start : (start / kP + (need + kCount - 1) / kCount) * kP;
    ASSERT_GE(t[k], earliest) << "call " << k << " ran ahead of the refills";
  }
  // Throughput: 32 calls need 15 refills (150 ms); allow a loaded machine 60 s.
  EXPECT_LE(t.back() - start, 60'000'000'000);
}

// A worker SIGKILLed while wait() sleeps for its turn on a token bucket
// (1 token every 10 s, burst 1): the others lose that one token and nothing
// more; the next caller's turn is the refill after the dead one's.
TEST(ReserveAcrossProcesses, TokenBucketAKilledWaiterCostsOnlyItsToken) {
  ScopedName name("reserve-tb-kill");
  Limiter lim = Limiter::create(options(name));
  constexpr std::int64_t kP = 10'000'000'000;
  const PolicyId id = add_tb(lim, 1, Nanos(kP), 1);
  std::int64_t last = 0;
  for (int i = 0; i < 3; ++i) {
    const Reservation r = lim.reserve(id, "acct", 1, Nanos::max());
    ASSERT_TRUE(r.ok());
    last = r.time_to_act().count();
  }
  // Killed once its reservation has landed: an acquire's turn is then the
  // refill after the child's (last + 2 periods).
  ASSERT_NO_FATAL_FAILURE(kill_a_waiter_in_its_sleep(name, id, std::chrono::seconds(120), [&] {
    const Nanos retry = lim.peek(id, "acct", 1).retry_after;
    return lim.now().count() + retry.count() >= last + 2 * kP;
  }));
  const Reservation r = lim.reserve(id, "acct", 1, Nanos::max());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.time_to_act().count(), last + 2 * kP);
  const CheckReport c = lim.check(false);
  EXPECT_TRUE(c.clean());
  EXPECT_EQ(c.repaired, 0u);
  // Past every turn the bucket is full again (injected clock).
  const Decision d = lim.acquire_at(id, "acct", 1, Nanos(last + 3 * kP));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
}

}  // namespace
}  // namespace shmlimit::test
