// `shmlimit-stress`: the worker process. It makes decisions on the segment
// and records each in the shared bookkeeping region (stress.hpp).
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "shmlimit/shmlimit.hpp"
#include "stress.hpp"

namespace stress {
namespace {

void store_max_release(AtomicI64& a, i64 v) {
  // Release: whoever acquires this value also sees our decision's CAS.
  i64 cur = a.load(std::memory_order_relaxed);
  while (v > cur &&
         !a.compare_exchange_weak(cur, v, std::memory_order_release, std::memory_order_relaxed)) {
  }
}

// Single-writer add (a WorkerSlot's counters): no RMW needed.
void bump(AtomicU64& a, u64 n) {
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// KeyRecord updates. Relaxed: read by the parent after the workers are reaped.
void add(AtomicU64& a, u64 n) { a.fetch_add(n, std::memory_order_relaxed); }
void store_max(AtomicI64& a, i64 v) {
  i64 cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}
void store_min_nonzero(AtomicI64& a, i64 v) {
  i64 cur = a.load(std::memory_order_relaxed);
  while ((cur == 0 || v < cur) && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// ---------------------------------------------------------------------------
// Worker

[[noreturn]] void worker_main(const Plan& plan, unsigned lane, unsigned slot, u64 seed) {
  ::signal(SIGINT, SIG_IGN);  // a terminal's ^C stops the run through the parent
  ::signal(SIGTERM, SIG_DFL);
  // Workers yield to the parent: with more workers than cores, a parent at
  // the same priority wakes late and the kill rate falls behind --kill-rate.
  errno = 0;
  (void)::nice(5);
  int rc = 0;
  try {
    shmlimit::Limiter l = shmlimit::Limiter::open(plan.options);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    WorkerSlot& ws = plan.workers[slot];
    const Config& cfg = plan.cfg;
    const u64 total_weight = plan.policy_cdf.back();
    u64 denies_seen = 0, admits_seen = 0;
    while (plan.control->stop.load(std::memory_order_relaxed) == 0) {
      const u64 w = rng() % total_weight;
      const auto p = static_cast<std::size_t>(
          std::upper_bound(plan.policy_cdf.begin(), plan.policy_cdf.end(), w) -
          plan.policy_cdf.begin());
      u64 k = 0;
      switch (cfg.distribution) {
        case Distribution::kUniform:
          k = rng() % plan.keys_of(p);
          break;
        case Distribution::kHot:
          k = 0;
          break;
        case Distribution::kZipf: {
          const std::vector<double>& cdf = plan.zipf_cdf[p];
          k = static_cast<u64>(std::lower_bound(cdf.begin(), cdf.end(), unit(rng)) - cdf.begin());
          k = std::min(k, plan.keys_of(p) - 1);
          break;
        }
      }
      const PolicyPlan& pp = cfg.policies[p];
      const u64 cost = pp.cost_min + rng() % (pp.cost_max - pp.cost_min + 1);
      KeyRecord& r = plan.record(lane, p, k);
      KeyShared& s = plan.key_shared(p, k);

      // The decision in flight, visible before it can touch the waste sums or
      // charge the bucket: a seq_cst store and fence keep it ahead of the
      // library's CAS (the parent reads it only after reaping this process).
      ws.inflight.store(((plan.pair(p, k) + 1) << 16) | cost, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);

      const i64 pre = l.now().count();
      // Acquire: pairs with the release that published the floor, so the
      // decision that published it has charged the bucket before our CAS:
      // the state we meet is at least this floor (doc/stress.md, E).
      const i64 floor_before = s.state_floor.load(std::memory_order_acquire);
      if (r.first_pre.load(std::memory_order_relaxed) == 0) store_min_nonzero(r.first_pre, pre);
      const shmlimit::Decision d = cfg.inject == InjectBug::kPeek
                                       ? l.peek(plan.ids[p], plan.key_names[k], cost)
                                       : l.acquire(plan.ids[p], plan.key_names[k], cost);
      const i64 post = l.now().count();

      bool admitted = d.allowed && d.reason == shmlimit::Reason::kOk;
      const bool fallback = d.reason != shmlimit::Reason::kOk;
      if (!fallback) {
        // Refill possibly lost: the bucket may have been full since the floor.
        if (admitted && floor_before != 0 && post > floor_before) {
          s.waste.fetch_add(post - floor_before, std::memory_order_relaxed);
        }
        store_max_release(s.state_floor,
                          plan.models[p]->state_floor(plan.params[p], admitted, cost, pre));
      }
      // --inject-bug: the verifier must catch a broken build.
      if (cfg.inject == InjectBug::kLostUpdate && !d.allowed && !fallback &&
          ++denies_seen % 16 == 0) {
        admitted = true;  // as if an update had been lost and two processes got one token
      }
      bool record_it = true;
      if (cfg.inject == InjectBug::kUnrecorded && admitted && ++admits_seen % 8 == 0)
        record_it = false;

      // first_post bounds when the key's bucket was first created (X0 <=
      // first_post), so only a decision that met the bucket sets it: a
      // fallback (table full, contended) never touched one, and a key can
      // meet a full table long before it gets a slot.
      if (!fallback && r.first_post.load(std::memory_order_relaxed) == 0) {
        store_min_nonzero(r.first_post, post);
      }
      store_max(r.last_post, post);
      if (fallback) {
        add(r.fallback_ops, 1);
        bump(ws.fallbacks, 1);
      } else if (admitted) {
        if (record_it) {
          add(r.admitted_cost, cost);
          add(r.admitted_ops, 1);
        }
        bump(ws.admitted, 1);
      } else {
        add(r.denied_ops, 1);
        store_max(r.last_deny_pre, pre);
        bump(ws.denied, 1);
      }
      bump(ws.ops, 1);
      // Release: the records above are complete before the decision stops
      // counting as in flight.
      ws.inflight.store(0, std::memory_order_release);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmlimit-stress: worker on lane %u (pid %d): %s\n", lane,
                 static_cast<int>(::getpid()), e.what());
    rc = 3;
  }
  ::_exit(rc);
}

}  // namespace

pid_t spawn(const Plan& plan, unsigned lane, unsigned slot, u64 seed) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) worker_main(plan, lane, slot, seed);
  return pid;
}

}  // namespace stress
