// Benchmarks of one decision (Limiter::acquire / peek) against the floor it
// is promised to stay near: one CLOCK_MONOTONIC read plus one CAS of a
// 64-bit word in shared memory, measured in the same process and run.
//
// Cases, in the order they run:
//   BM_Floor_ClockGettime           clock_gettime(CLOCK_MONOTONIC) alone (vDSO)
//   BM_Floor_CasSharedWord          load + compare_exchange of a std::atomic<uint64_t>
//                                   in a MAP_SHARED mapping of a POSIX shm segment
//   BM_Floor_ClockPlusCas           clock read, then CAS max(word, now) + 1 into that
//                                   word: THE floor (a decision should cost <= 1.5x it)
//   BM_Floor_DecisionClock          the decision clock alone (segment/clock.hpp: the
//                                   TSC scaled from the thread's last exact reading
//                                   of CLOCK_MONOTONIC_RAW)
//   BM_Acquire_HotKey               acquire(PolicyId, "hot-key"), always admitted
//                                   ("1000000000/s" burst 1e9): lookup + GCRA + CAS
//   BM_Acquire_HotKey_Denied        acquire on a bucket that is always denied ("1/h"
//                                   burst 1): no state CAS; the counts are plain stores
//                                   (the thread's counter block, the slot's denied) and
//                                   the denial is recorded in the recent-denials ring
//   BM_Acquire_HotKey_ExactClock    BM_Acquire_HotKey with the thread's decision clock
//                                   forgotten before each call: it reads clock_gettime
//                                   and takes no anchor, as for a thread whose
//                                   decisions are further apart than an anchor
//                                   serves (67 ms once calibrated)
//   BM_Peek_HotKey                  peek(PolicyId, "hot-key"): lookup + GCRA, no write
//   BM_Acquire_<Algorithm>          acquire on one hot key under each algorithm (always admitted)
//   BM_Acquire_SlidingLog[_Denied]  the exact sliding log (64 entries): admitted, and denied
//                                   with a full log (a flood's path: the whole log scanned)
//   BM_Lease_AcquireRelease         a concurrency lease taken and released (RAII)
//   BM_AcquireMany_BurstSustained   acquire_many over two GCRA limits (peek both, charge both)
//   BM_Reserve_HotKey               reserve(PolicyId, "hot-key", 1, max_wait 1 s) on the
//                                   same always-admitting bucket: a turn of delay 0 (lookup
//                                   + the reservation maths + CAS); printed as a ratio to
//                                   BM_Acquire_HotKey of the same run
//   BM_Reserve_Queued               reserve on a "1000000/s" bucket that is never allowed to
//                                   drain (injected clock fixed): every turn queues behind
//                                   the last, the path of a worker told to wait
//   BM_Acquire_ByName               acquire("hot", "hot-key"): the name is the 8th of
//                                   8 registered policies
//   BM_Floor_ClockPlusCas_ColdSlot  the floor on a cold line: clock + CAS of the word of
//                                   one of 1M random 128-byte slots of a 256 MiB shm
//                                   region (the ManyKeys geometry): cache and TLB miss
//   BM_Floor_PrefetchClockCas_ColdSlot  the same, with the slot prefetched for writing
//                                   before the clock read (as acquire does): the
//                                   miss overlaps the clock; the cold keys' floor
//   BM_Acquire_ManyKeys             1M keys "user:%07d" in a 2M-slot table (50% full),
//                                   visited in a random permutation (cache- and
//                                   TLB-cold); every key claimed before timing
//   BM_Acquire_NewKeys              a never-seen key each time: the claim path, in a
//                                   2M-slot table re-created (untimed) at 50% full
//   BM_Floor_CasSharedWord_2Proc    the floor cases again while a forked child, pinned
//   BM_Floor_ClockPlusCas_2Proc     to the other core, runs the same operation on the
//   BM_Acquire_HotKey_2Proc         same word / key: the cost of contention
//   BM_Alt_MutexMap_HotKey[_2Proc]  the mutex map (mutex_map.hpp) on the same hot key
//   BM_Alt_MutexMap_HotKey_DecisionClock  the mutex map reading shmlimit's decision
//                                   clock instead of clock_gettime: what the clock is
//                                   worth to it
//
// After the run markdown tables give every case as a ratio to the floor
// cases of the same run, of the fastest repetition's CPU time (a "min"
// statistic is registered for every case): on a shared machine real time
// also counts the slices in which the process did not run, and the fastest
// repetition is the least disturbed. Median CPU and real times are shown too.
// With --benchmark_format=json or csv the output of Google Benchmark is
// passed through untouched and the ratio table goes to stderr.
//
// Run:
//   bash scripts/bench.sh                  build (preset bench), 5 repetitions, write
//   bench/results.md build/bench/bench/shmlimit_bench       one run, console + ratio table
//   build/bench/bench/shmlimit_bench --benchmark_filter='Floor|HotKey$'
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//                                          (one command line)
//
// Segments are named "/shmlimit-bench-<pid>-<case>", built once and removed
// at the end of the run; scripts/bench.sh removes any left by a killed run.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fixtures.hpp"
#include "mutex_map.hpp"
#include "segment/clock.hpp"
#include "shmlimit/shmlimit.hpp"

// bench_remote.cpp: Redis and memcached alternatives, compiled in only when
// their client libraries were found (bench/CMakeLists.txt).
#ifdef SHMLIMIT_BENCH_HAVE_REDIS
void BM_Alt_Redis_HotKey(benchmark::State& state);
#endif
#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
void BM_Alt_Memcached_HotKey(benchmark::State& state);
#endif
void release_remote_servers();

namespace {

// ---------------------------------------------------------------------------
// Floor

void BM_Floor_ClockGettime(benchmark::State& state) {
  for (auto _ : state) {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    benchmark::DoNotOptimize(ts);
  }
}

void BM_Floor_DecisionClock(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(shmlimit::detail::decision_clock_ns());
}

void BM_Floor_CasSharedWord(benchmark::State& state) {
  guarded(state, [&] {
    std::atomic<std::uint64_t>& w = floor_word();
    for (auto _ : state) cas_increment(w);
  });
}

void BM_Floor_ClockPlusCas(benchmark::State& state) {
  guarded(state, [&] {
    std::atomic<std::uint64_t>& w = floor_word();
    for (auto _ : state) clock_then_cas(w);
  });
}

void BM_Floor_ClockPlusCas_ColdSlot(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<ColdEnv>("cold");
    std::size_t i = e.cursor, dep = 0;
    for (auto _ : state) {
      dep = zero_depending_on(clock_then_cas(e.word(e.offsets[i] + dep)));
      if (++i == e.offsets.size()) i = 0;
    }
    e.cursor = i;
  });
}

void BM_Floor_PrefetchClockCas_ColdSlot(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<ColdEnv>("cold");
    std::size_t i = e.cursor, dep = 0;
    for (auto _ : state) {
      std::atomic<std::uint64_t>& w = e.word(e.offsets[i] + dep);
      prefetch_for_write(&w);
      dep = zero_depending_on(clock_then_cas(w));
      if (++i == e.offsets.size()) i = 0;
    }
    e.cursor = i;
  });
}

// ---------------------------------------------------------------------------
// One key

// ExactClock: the thread's decision clock forgotten before each call.
template <bool ExactClock>
void BM_Acquire_HotKey(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) {
      if constexpr (ExactClock) shmlimit::detail::tsc_forget_anchor();
      bad += !admitted_ok(l.acquire(e.hot, "hot-key"));
    }
    check(state, bad, "admitted");
  });
}

void BM_Acquire_HotKey_Denied(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    l.acquire(e.deny, "hot-key");  // takes the only token (or it is already gone)
    std::uint64_t bad = 0;
    for (auto _ : state) {
      const Decision d = l.acquire(e.deny, "hot-key");
      bad += d.allowed || d.reason != Reason::kOk;
    }
    check(state, bad, "denied");
  });
}

void BM_Peek_HotKey(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    l.acquire(e.hot, "hot-key");  // the slot exists
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !admitted_ok(l.peek(e.hot, "hot-key"));
    check(state, bad, "admitted");
  });
}

void BM_Reserve_HotKey(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) {
      const shmlimit::Reservation r = l.reserve(e.hot, "hot-key", 1, std::chrono::seconds(1));
      bad += !r.ok() || r.delay() != shmlimit::Nanos(0);
    }
    check(state, bad, "granted now");
  });
}

void BM_Reserve_Queued(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    const PolicyId q = l.add_policy(PolicySpec{"queue", shmlimit::Algorithm::kGcra,
                                               Rate{1'000'000, std::chrono::seconds(1)}, 1});
    // A fixed instant, and a fresh key per run: every turn 1 us after the last.
    static int run = 0;
    const std::string key = "queue-" + std::to_string(run++);
    const shmlimit::Nanos at = l.now();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !l.reserve_at(q, key, 1, shmlimit::Nanos::max(), at).ok();
    check(state, bad, "granted");
  });
}

void BM_Acquire_ByName(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !admitted_ok(l.acquire(std::string_view("hot"), "hot-key"));
    check(state, bad, "admitted");
  });
}

// Every algorithm on one hot key (AlgoEnv::ids order).
template <int I>
void BM_Acquire_Algorithm(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<AlgoEnv>("algo");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !admitted_ok(l.acquire(e.ids[I], "hot-key"));
    check(state, bad, "admitted");
  });
}

// The exact sliding log, admitted (an expired entry found and replaced)
// and denied (a full log scanned: what a flood costs).
void BM_Acquire_SlidingLog(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<AlgoEnv>("algo");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !admitted_ok(l.acquire(e.sliding_log, "hot-key"));
    check(state, bad, "admitted");
  });
}
void BM_Acquire_SlidingLog_Denied(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<AlgoEnv>("algo");
    Limiter& l = e.limiter();
    while (l.acquire(e.sliding_log_full, "hot-key").allowed) {
    }
    std::uint64_t bad = 0;
    for (auto _ : state) {
      const Decision d = l.acquire(e.sliding_log_full, "hot-key");
      bad += d.allowed || d.reason != Reason::kOk;
    }
    check(state, bad, "denied");
  });
}

// A concurrency lease taken and released (nginx limit_conn): two word
// updates and the process's lease record.
void BM_Lease_AcquireRelease(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<AlgoEnv>("algo");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) {
      shmlimit::Lease lease = l.lease(e.concurrency, "hot-key");
      bad += !lease.held();
    }
    check(state, bad, "held");
  });
}

// DRF's burst + sustained: two limits, all or nothing (peek both, charge both).
void BM_AcquireMany_BurstSustained(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<AlgoEnv>("algo");
    Limiter& l = e.limiter();
    const shmlimit::Request req[2] = {{e.burst, "hot-key", 1}, {e.sustained, "hot-key", 1}};
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !admitted_ok(l.acquire_many(req));
    check(state, bad, "admitted");
  });
}

// ---------------------------------------------------------------------------
// Many keys

void BM_Acquire_ManyKeys(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<ManyEnv>("many");
    Limiter& l = e.limiter();
    const std::vector<std::string>& keys = e.keys;
    std::size_t i = e.cursor;
    std::uint64_t bad = 0;
    for (auto _ : state) {
      bad += !admitted_ok(l.acquire(e.pol, keys[i]));
      if (++i == keys.size()) i = 0;
    }
    e.cursor = i;
    state.counters["keys"] = static_cast<double>(keys.size());
    state.counters["unplaced"] = static_cast<double>(e.unplaced);
    check(state, bad, "admitted");
  });
}

void BM_Acquire_NewKeys(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<NewEnv>("new");
    std::uint64_t bad = 0, full = 0;
    for (auto _ : state) {
      if (e.claimed == NewEnv::kClaimsPerSegment) {
        state.PauseTiming();
        e.reset();
        state.ResumeTiming();
      }
      const Decision d = e.limiter().acquire(e.pol, e.next_key());
      // Near 50% occupancy a few keys in a million find all max_probe (32)
      // slots of their window taken: table_full, admitted (fail-open). A
      // real outcome of the claim path, counted, not an error.
      full += d.reason == Reason::kTableFull;
      bad += !admitted_ok(d) && d.reason != Reason::kTableFull;
      ++e.claimed;
    }
    state.counters["table_full"] = static_cast<double>(full);
    check(state, bad, "admitted after a claim");
  });
}

// ---------------------------------------------------------------------------
// Two processes on one word / key

template <class Child, class Parent>
void contended(benchmark::State& state, Child child_body, Parent parent_body) {
  Contender child(child_body);
  if (!child.error().empty()) {
    state.SkipWithError(child.error().c_str());
    return;
  }
  parent_body();
  state.counters["child_ns_per_op"] = child.stop();
}

void BM_Floor_CasSharedWord_2Proc(benchmark::State& state) {
  guarded(state, [&] {
    std::atomic<std::uint64_t>& w = floor_word();
    contended(
        state, [&w] { cas_increment(w); },
        [&] {
          for (auto _ : state) cas_increment(w);
        });
  });
}

void BM_Floor_ClockPlusCas_2Proc(benchmark::State& state) {
  guarded(state, [&] {
    std::atomic<std::uint64_t>& w = floor_word();
    contended(
        state, [&w] { clock_then_cas(w); },
        [&] {
          for (auto _ : state) clock_then_cas(w);
        });
  });
}

void BM_Acquire_HotKey_2Proc(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    l.acquire(e.hot, "hot-key");  // the slot exists before the child starts
    std::uint64_t bad = 0;
    // The child uses its copy of the parent's Limiter: the mapping is
    // MAP_SHARED, so it is the same segment.
    contended(
        state, [&] { benchmark::DoNotOptimize(l.acquire(e.hot, "hot-key")); },
        [&] {
          for (auto _ : state) bad += !admitted_ok(l.acquire(e.hot, "hot-key"));
        });
    check(state, bad, "admitted");
  });
}

// ---------------------------------------------------------------------------
// Alternatives: what a user would write instead of shmlimit.
//
// MutexMap (mutex_map.hpp): one Boost.Interprocess interprocess_mutex over a
// fixed open-addressing table of GCRA states in a POSIX shm segment, same
// GCRA step inline, same parameters as the hot policy (T = 1 ns, burst 1e9:
// always admitted). Compare with BM_Acquire_HotKey / _2Proc.

class MutexEnv final : public Env {
 public:
  MutexEnv() : map(segment_name("mutexmap"), 1024) {}
  shmlimit_bench::MutexMap map;
};

constexpr std::uint64_t kAltT = 1;  // ns: 1e9/s
constexpr std::uint64_t kAltBurst = 1'000'000'000;

void BM_Alt_MutexMap_HotKey(benchmark::State& state) {
  guarded(state, [&] {
    auto& m = env<MutexEnv>("mutexmap").map;
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !m.acquire("hot-key", kAltT, kAltBurst);
    check(state, bad, "admitted");
  });
}

void BM_Alt_MutexMap_HotKey_DecisionClock(benchmark::State& state) {
  guarded(state, [&] {
    auto& m = env<MutexEnv>("mutexmap").map;
    std::uint64_t bad = 0;
    for (auto _ : state)
      bad += !m.acquire("hot-key", kAltT, kAltBurst, shmlimit::detail::decision_clock_ns);
    check(state, bad, "admitted");
  });
}

void BM_Alt_MutexMap_HotKey_2Proc(benchmark::State& state) {
  guarded(state, [&] {
    auto& m = env<MutexEnv>("mutexmap").map;
    m.acquire("hot-key", kAltT, kAltBurst);  // the entry exists before the child starts
    std::uint64_t bad = 0;
    contended(
        state, [&] { benchmark::DoNotOptimize(m.acquire("hot-key", kAltT, kAltBurst)); },
        [&] {
          for (auto _ : state) bad += !m.acquire("hot-key", kAltT, kAltBurst);
        });
    check(state, bad, "admitted");
  });
}

// The fastest repetition, reported next to mean / median / stddev: on a
// shared machine it is the one least disturbed by other processes.
double min_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

// Every case, in run order (without --benchmark_enable_random_interleaving)
// and in the order of the ratio tables: the floor first, the hot key cases
// together (they share one segment), then the big tables, then contention.
struct Case {
  const char* name;
  void (*fn)(benchmark::State&);
};
constexpr Case kCases[] = {
    {"BM_Floor_ClockGettime", BM_Floor_ClockGettime},
    {"BM_Floor_DecisionClock", BM_Floor_DecisionClock},
    {"BM_Floor_CasSharedWord", BM_Floor_CasSharedWord},
    {"BM_Floor_ClockPlusCas", BM_Floor_ClockPlusCas},
    {"BM_Acquire_HotKey", BM_Acquire_HotKey<false>},
    {"BM_Acquire_HotKey_ExactClock", BM_Acquire_HotKey<true>},
    {"BM_Acquire_HotKey_Denied", BM_Acquire_HotKey_Denied},
    {"BM_Peek_HotKey", BM_Peek_HotKey},
    {"BM_Reserve_HotKey", BM_Reserve_HotKey},
    {"BM_Reserve_Queued", BM_Reserve_Queued},
    {"BM_Acquire_ByName", BM_Acquire_ByName},
    {"BM_Acquire_Gcra", BM_Acquire_Algorithm<0>},
    {"BM_Acquire_TokenBucket", BM_Acquire_Algorithm<1>},
    {"BM_Acquire_FixedWindow", BM_Acquire_Algorithm<2>},
    {"BM_Acquire_SlidingWindow", BM_Acquire_Algorithm<3>},
    {"BM_Acquire_QuietPeriod", BM_Acquire_Algorithm<4>},
    {"BM_Acquire_LeakyBucket", BM_Acquire_Algorithm<5>},
    {"BM_Acquire_SlidingLog", BM_Acquire_SlidingLog},
    {"BM_Acquire_SlidingLog_Denied", BM_Acquire_SlidingLog_Denied},
    {"BM_Lease_AcquireRelease", BM_Lease_AcquireRelease},
    {"BM_AcquireMany_BurstSustained", BM_AcquireMany_BurstSustained},
    {"BM_Floor_ClockPlusCas_ColdSlot", BM_Floor_ClockPlusCas_ColdSlot},
    {"BM_Floor_PrefetchClockCas_ColdSlot", BM_Floor_PrefetchClockCas_ColdSlot},
    {"BM_Acquire_ManyKeys", BM_Acquire_ManyKeys},
    {"BM_Acquire_NewKeys", BM_Acquire_NewKeys},
    {"BM_Floor_CasSharedWord_2Proc", BM_Floor_CasSharedWord_2Proc},
    {"BM_Floor_ClockPlusCas_2Proc", BM_Floor_ClockPlusCas_2Proc},
    {"BM_Acquire_HotKey_2Proc", BM_Acquire_HotKey_2Proc},
    {"BM_Alt_MutexMap_HotKey", BM_Alt_MutexMap_HotKey},
    {"BM_Alt_MutexMap_HotKey_DecisionClock", BM_Alt_MutexMap_HotKey_DecisionClock},
    {"BM_Alt_MutexMap_HotKey_2Proc", BM_Alt_MutexMap_HotKey_2Proc},
#ifdef SHMLIMIT_BENCH_HAVE_REDIS
    {"BM_Alt_Redis_HotKey", BM_Alt_Redis_HotKey},
#endif
#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
    {"BM_Alt_Memcached_HotKey", BM_Alt_Memcached_HotKey},
#endif
};

void register_cases() {
  for (const Case& c : kCases)
    benchmark::RegisterBenchmark(c.name, c.fn)->ComputeStatistics("min", min_of);
}

}  // namespace

// The ratio tables read kCases above.
#include "ratio_reporter.hpp"  // NOLINT(build/include_order)

int main(int argc, char** argv) {
  // Read before Initialize() consumes the flags: any format but console
  // keeps stdout exactly as Google Benchmark writes it.
  bool console = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.starts_with("--benchmark_format=") && a != "--benchmark_format=console") console = false;
  }
  register_cases();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // Owned by the library (a function-local static), not deleted here.
  benchmark::BenchmarkReporter* display = benchmark::CreateDefaultDisplayReporter();
  RatioReporter reporter(display);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  release_envs();
  release_remote_servers();
  reporter.print(console ? std::cout : std::cerr);
  benchmark::Shutdown();
  return 0;
}
