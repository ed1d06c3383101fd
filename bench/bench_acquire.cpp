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
//   BM_Acquire_HotKey               acquire(PolicyId, "hot-key"), always admitted
//                                   ("1000000000/s" burst 1e9): lookup + GCRA + CAS
//   BM_Acquire_HotKey_Denied        acquire on a bucket that is always denied ("1/h"
//                                   burst 1): no state CAS; the counts are plain stores
//                                   (the thread's counter block, the slot's denied) and
//                                   the denial is recorded in the recent-denials ring
//   BM_Peek_HotKey                  peek(PolicyId, "hot-key"): lookup + GCRA, no write
//   BM_Acquire_<Algorithm>          acquire on one hot key under each algorithm (always admitted)
//   BM_Acquire_SlidingLog[_Denied]  the exact sliding log (64 entries): admitted, and denied
//                                   with a full log (a flood's path: the whole log scanned)
//   BM_Lease_AcquireRelease         a concurrency lease taken and released (RAII)
//   BM_AcquireMany_BurstSustained   acquire_many over two GCRA limits (peek both, charge both)
//   BM_Acquire_ByName               acquire("hot", "hot-key"): the name is the 8th of
//                                   8 registered policies
//   BM_Floor_ClockPlusCas_ColdSlot  the floor on a cold line: clock + CAS of the word of
//                                   one of 1M random 128-byte slots of a 256 MiB shm
//                                   region (the ManyKeys geometry): cache and TLB miss
//   BM_Acquire_ManyKeys             1M keys "user:%07d" in a 2M-slot table (50% full),
//                                   visited in a random permutation (cache- and
//                                   TLB-cold); every key claimed before timing
//   BM_Acquire_NewKeys              a never-seen key each time: the claim path, in a
//                                   2M-slot table re-created (untimed) at 50% full
//   BM_Floor_CasSharedWord_2Proc    the floor cases again while a forked child, pinned
//   BM_Floor_ClockPlusCas_2Proc     to the other core, runs the same operation on the
//   BM_Acquire_HotKey_2Proc         same word / key: the cost of contention
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

#include "mutex_map.hpp"
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

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace {

using shmlimit::Decision;
using shmlimit::Limiter;
using shmlimit::PolicyId;
using shmlimit::PolicySpec;
using shmlimit::Rate;
using shmlimit::Reason;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// Helpers

std::int64_t mono_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string segment_name(std::string_view tag) {
  return "/shmlimit-bench-" + std::to_string(::getpid()) + "-" + std::string(tag);
}

// The floor operations, shared by the single-process loops and the
// contending children so that both sides of a 2-process case do the same.
//
// A lock-free update of a shared word is at least: load it, compute the new
// value, CAS. Relaxed, like the limiter's own state CAS.
inline void cas_increment(std::atomic<std::uint64_t>& word) noexcept {
  std::uint64_t cur = word.load(std::memory_order_relaxed);
  while (!word.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed,
                                     std::memory_order_relaxed)) {
  }
}

// Clock, then CAS a value computed from the clock and the word, as GCRA
// does (TAT = max(TAT, now) + T). Returns the value written.
inline std::uint64_t clock_then_cas(std::atomic<std::uint64_t>& word) noexcept {
  const auto now = static_cast<std::uint64_t>(mono_ns());
  std::uint64_t cur = word.load(std::memory_order_relaxed);
  while (!word.compare_exchange_weak(cur, std::max(cur, now) + 1, std::memory_order_relaxed,
                                     std::memory_order_relaxed)) {
  }
  return std::max(cur, now) + 1;
}

// Zero, computed from `v` in a way neither the compiler nor the CPU can see
// through: adding it to the next address makes that load wait for `v`.
inline std::size_t zero_depending_on(std::uint64_t v) noexcept {
#if defined(__x86_64__)
  asm volatile("and $0, %0" : "+r"(v));  // not a dependency-breaking idiom, unlike xor
#elif defined(__aarch64__)
  asm volatile("and %0, %0, xzr" : "+r"(v));
#else
  static volatile std::uint64_t zero = 0;
  v &= zero;
#endif
  return static_cast<std::size_t>(v);
}

// A real POSIX shm segment (shm_open + ftruncate + mmap MAP_SHARED), as the
// limiter's is, removed on destruction.
class ShmRegion {
 public:
  ShmRegion(std::string_view tag, std::size_t bytes) : name_(segment_name(tag)), bytes_(bytes) {
    ::shm_unlink(name_.c_str());  // a leftover of a previous process with our pid
    const int fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw std::runtime_error("shm_open " + name_ + ": " + std::strerror(errno));
    void* p = MAP_FAILED;
    if (::ftruncate(fd, static_cast<off_t>(bytes)) == 0) {
      // MAP_POPULATE: no first-touch page faults inside a timed loop.
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    }
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
      ::shm_unlink(name_.c_str());
      throw std::runtime_error("ftruncate/mmap " + name_ + ": " + std::strerror(err));
    }
    base_ = static_cast<std::byte*>(p);
  }
  ~ShmRegion() {
    ::munmap(base_, bytes_);
    ::shm_unlink(name_.c_str());
  }
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;

  // The 64-bit atomic at byte `offset` (8-aligned). The mapping is zero-filled,
  // and zero bytes are a valid std::atomic<uint64_t> holding 0.
  std::atomic<std::uint64_t>& word(std::size_t offset) {
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared across processes");
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + offset);
  }

 private:
  std::string name_;
  std::size_t bytes_;
  std::byte* base_ = nullptr;
};

// A limiter segment owned by this process: any leftover of the name is
// removed first, and the name is removed again on destruction.
class OwnedSegment {
 public:
  OwnedSegment(std::string_view tag, std::uint32_t capacity, std::uint32_t log_entries = 0)
      : name_(segment_name(tag)) {
    Limiter::remove(name_);
    shmlimit::Options o;
    o.name = name_;
    o.capacity = capacity;
    o.log_entries = log_entries;
    limiter_.emplace(Limiter::open_or_create(o));
  }
  ~OwnedSegment() {
    limiter_.reset();
    try {
      Limiter::remove(name_);
    } catch (const std::exception& e) {
      std::cerr << "shmlimit_bench: could not remove " << name_ << ": " << e.what() << "\n";
    }
  }
  OwnedSegment(const OwnedSegment&) = delete;
  OwnedSegment& operator=(const OwnedSegment&) = delete;

  Limiter& limiter() { return *limiter_; }
  const std::string& name() const { return name_; }

  // Faults every page of the mapping in now (MADV_POPULATE_WRITE), so that a
  // timed loop does not pay first-touch page faults. Found by its path in
  // /proc/self/maps: the public API does not expose the mapping.
  void populate() const {
    std::ifstream maps("/proc/self/maps");
    const std::string suffix = "/dev/shm" + name_;
    std::string line;
    while (std::getline(maps, line)) {
      if (line.size() < suffix.size() ||
          line.compare(line.size() - suffix.size(), suffix.size(), suffix) != 0) {
        continue;
      }
      std::uintptr_t begin = 0, end = 0;
      if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) continue;
      // An address read from /proc/self/maps: an integer by nature.
      ::madvise(reinterpret_cast<void*>(begin),  // NOLINT(performance-no-int-to-ptr)
                end - begin, MADV_POPULATE_WRITE);
    }
  }

 private:
  std::string name_;
  std::optional<Limiter> limiter_;
};

PolicySpec policy(std::string name, std::uint64_t count, shmlimit::Nanos period,
                  std::uint64_t burst) {
  PolicySpec s;
  s.name = std::move(name);
  s.rate = Rate{count, period};
  s.burst = burst;
  return s;
}

// ---------------------------------------------------------------------------
// Per-case environments, built the first time a case asks for its tag and
// kept until the end of the run (release_envs() in main removes their
// segments): each is built once however often Google Benchmark calls the
// case (iteration estimation, repetitions, random interleaving), and a
// case never measures memory the host has just handed over. The big ones
// together take about 1 GiB.

class Env {
 public:
  virtual ~Env() = default;
};

std::map<std::string, std::unique_ptr<Env>, std::less<>> g_envs;

template <class E>
E& env(const char* tag) {
  std::unique_ptr<Env>& e = g_envs[tag];
  if (!e) e = std::make_unique<E>();
  return static_cast<E&>(*e);
}

void release_envs() { g_envs.clear(); }

// The floor word lives for the whole run: the first word of a one-page segment.
std::atomic<std::uint64_t>& floor_word() {
  static ShmRegion region("floor", 4096);
  return region.word(0);
}

// The cold floor: the same clock + CAS, on the state word of one of 1M
// distinct random 128-byte slots of a 2^21-slot region (the geometry of
// BM_Acquire_ManyKeys), so that every operation misses the caches and TLB
// the same way a decision on a cold key does. Each address depends on the
// previous CAS's result, so misses do not overlap: a server makes one
// decision per request with other work in between, and a tight loop of
// independent misses would otherwise measure memory bandwidth, not latency.
class ColdEnv final : public Env {
 public:
  static constexpr std::size_t kSlots = std::size_t{1} << 21;
  static constexpr std::size_t kSlotBytes = 128;
  static constexpr std::size_t kVisited = 1'000'000;

  ColdEnv() : region_("cold", kSlots * kSlotBytes) {
    std::vector<std::uint32_t> all(kSlots);
    for (std::size_t i = 0; i < kSlots; ++i) all[i] = static_cast<std::uint32_t>(i);
    std::mt19937_64 rng(42);
    std::shuffle(all.begin(), all.end(), rng);
    offsets.reserve(kVisited);
    for (std::size_t i = 0; i < kVisited; ++i)
      offsets.push_back(std::size_t{all[i]} * kSlotBytes + 8);
  }
  std::atomic<std::uint64_t>& word(std::size_t offset) { return region_.word(offset); }
  std::vector<std::size_t> offsets;  // byte offsets of the visited state words, random order
  std::size_t cursor = 0;

 private:
  ShmRegion region_;
};

// One hot key: 8 policies, the measured ones last (a linear name lookup
// then has 7 other names to pass).
class HotEnv final : public Env {
 public:
  HotEnv() : seg_("hot", 1024) {
    Limiter& l = seg_.limiter();
    for (const char* filler : {"anon", "user", "login", "api.read", "api.write", "upload"}) {
      l.add_policy(policy(filler, 100, 1s, 0));
    }
    deny = l.add_policy(policy("deny", 1, 1h, 1));  // admits once, then always denies
    hot = l.add_policy(policy("hot", 1'000'000'000, 1s, 1'000'000'000));  // T = 1 ns
  }
  Limiter& limiter() { return seg_.limiter(); }
  PolicyId hot, deny;

 private:
  OwnedSegment seg_;
};

// One policy per algorithm, each with room for every decision of a run,
// so each case measures lookup + that algorithm's decision + the CAS; and
// a burst + sustained pair for the multi-limit case.
class AlgoEnv final : public Env {
 public:
  AlgoEnv() : seg_("algo", 1024, kLogEntries) {
    Limiter& l = seg_.limiter();
    const auto add = [&](const char* name, shmlimit::Algorithm a, std::uint64_t count,
                         shmlimit::Nanos period, std::uint64_t burst) {
      PolicySpec spec = policy(name, count, period, burst);
      spec.algorithm = a;
      return l.add_policy(spec);
    };
    // Largest counts each state layout holds (doc/algorithms.md), per the
    // shortest period it allows: far above what one core can ask for.
    ids[0] = add("gcra", shmlimit::Algorithm::kGcra, 1'000'000'000, 1s, 1'000'000'000);
    ids[1] = add("token_bucket", shmlimit::Algorithm::kTokenBucket, 1'000'000, 2ms, 1'000'000);
    ids[2] = add("fixed_window", shmlimit::Algorithm::kFixedWindow, 16'000'000, 20ms, 0);
    ids[3] = add("sliding_window", shmlimit::Algorithm::kSlidingWindow, 65'000, 1ms, 0);
    ids[4] = add("quiet_period", shmlimit::Algorithm::kQuietPeriod, 500'000, 1ms, 0);
    ids[5] =
        add("leaky_bucket", shmlimit::Algorithm::kLeakyBucket, 1'000'000'000, 1s, 1'000'000'000);
    // sliding_log: 64 entries per 2 us always admits at one decision per
    // 30+ ns (each admission finds an expired entry: the admitted path);
    // 16 per hour admits 16 times and then always denies (the scan of a
    // full log: the path a flood takes).
    sliding_log = add("sliding_log", shmlimit::Algorithm::kSlidingLog, kLogEntries, 2us, 0);
    sliding_log_full = add("sliding_log_full", shmlimit::Algorithm::kSlidingLog, 16, 1h, 0);
    concurrency = add("concurrency", shmlimit::Algorithm::kConcurrency, 1, 0s, 0);
    burst = add("burst", shmlimit::Algorithm::kGcra, 1'000'000'000, 1s, 1'000'000'000);
    sustained = add("sustained", shmlimit::Algorithm::kGcra, 1'000'000'000, 1s, 1'000'000'000);
  }
  Limiter& limiter() { return seg_.limiter(); }
  static constexpr std::uint32_t kLogEntries = 64;
  PolicyId ids[6];
  PolicyId sliding_log, sliding_log_full, concurrency;
  PolicyId burst, sustained;

 private:
  OwnedSegment seg_;
};

// 1M keys in a 2M-slot table.
class ManyEnv final : public Env {
 public:
  static constexpr std::uint32_t kKeys = 1'000'000;
  static constexpr std::uint32_t kCapacity = 2'000'000;  // rounded up to 2^21

  ManyEnv() : seg_("many", kCapacity) {
    Limiter& l = seg_.limiter();
    // T = 1 s, burst 1e6: always admits (so every decision CASes) and every
    // bucket stays below full for the run, so no claim ever reclaims another
    // key's slot: all 1M keys stay resident.
    pol = l.add_policy(policy("many", 1, 1s, 1'000'000));
    keys.reserve(kKeys);
    char buf[32];
    for (std::uint32_t i = 0; i < kKeys; ++i) {
      std::snprintf(buf, sizeof buf, "user:%07u", i);
      keys.emplace_back(buf);
    }
    std::mt19937_64 rng(42);
    std::shuffle(keys.begin(), keys.end(), rng);
    // Claim every key once; a key that found no slot would take the claim
    // path every time, so it is left out of the timed set (and counted).
    std::vector<std::string> resident;
    resident.reserve(kKeys);
    for (auto& k : keys) {
      const Decision d = l.acquire(pol, k);
      if (d.reason == Reason::kOk) resident.push_back(std::move(k));
    }
    unplaced = keys.size() - resident.size();
    keys = std::move(resident);
  }
  Limiter& limiter() { return seg_.limiter(); }
  PolicyId pol;
  std::vector<std::string> keys;  // claimed keys, in a random order
  std::size_t cursor = 0;
  std::size_t unplaced = 0;

 private:
  OwnedSegment seg_;
};

// Fresh keys into a big table.
class NewEnv final : public Env {
 public:
  static constexpr std::uint32_t kCapacity = 1u << 21;
  static constexpr std::uint32_t kClaimsPerSegment = kCapacity / 2;

  NewEnv() { reset(); }
  // Re-creates the segment (empty) and faults it in.
  void reset() {
    seg_.reset();
    seg_.emplace("new", kCapacity);
    // "1/d" burst 1: a claimed bucket stays penalised for a day, so a claim
    // never reclaims an earlier key: every claim takes an EMPTY slot.
    pol = seg_->limiter().add_policy(policy("new", 1, 24h, 1));
    seg_->populate();
    claimed = 0;
  }
  Limiter& limiter() { return seg_->limiter(); }
  // "new:0000000000" counting up: a never-seen key, without formatting cost.
  std::string_view next_key() {
    for (std::size_t i = key_.size(); i-- > 4;) {
      if (key_[i] != '9') {
        ++key_[i];
        break;
      }
      key_[i] = '0';
    }
    return key_;
  }
  PolicyId pol;
  std::uint32_t claimed = 0;

 private:
  std::optional<OwnedSegment> seg_;
  std::string key_ = "new:0000000000";
};

// ---------------------------------------------------------------------------
// A forked child that runs `body` in a loop, pinned to another CPU than the
// (pinned) parent, until destroyed. Clean shutdown: a stop flag, waitpid,
// SIGKILL only if it does not exit within 5 s.
class Contender {
 public:
  template <class Body>
  explicit Contender(Body body) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2) {
      error_ = "needs 2 CPUs";
      return;
    }
    saved_ = allowed;
    int cpus[2] = {-1, -1};
    for (int c = 0, n = 0; c < CPU_SETSIZE && n < 2; ++c) {
      if (CPU_ISSET(c, &allowed)) cpus[n++] = c;
    }
    void* p =
        ::mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      error_ = "mmap failed";
      return;
    }
    ctl_ = new (p) Control;
    pin(cpus[0]);
    pinned_ = true;
    std::cout.flush();
    std::cerr.flush();
    pid_ = ::fork();
    if (pid_ < 0) {
      error_ = "fork failed";
      return;
    }
    if (pid_ == 0) {
      pin(cpus[1]);
      ctl_->ready.store(1, std::memory_order_release);
      const std::int64_t start = mono_ns();
      std::uint64_t n = 0;
      while (ctl_->stop.load(std::memory_order_relaxed) == 0) {
        for (int i = 0; i < 16; ++i) body();
        n += 16;
      }
      ctl_->ops = n;
      ctl_->ns = static_cast<std::uint64_t>(mono_ns() - start);
      ::_exit(0);  // no atexit handlers, no destructors of the parent's objects
    }
    const std::int64_t deadline = mono_ns() + 5'000'000'000;
    while (ctl_->ready.load(std::memory_order_acquire) == 0) {
      if (mono_ns() > deadline) {
        error_ = "the child did not start";
        return;
      }
      ::sched_yield();
    }
  }
  ~Contender() { stop(); }
  Contender(const Contender&) = delete;
  Contender& operator=(const Contender&) = delete;

  const std::string& error() const { return error_; }

  // Stops and reaps the child; returns its ns/op (0 if unknown).
  double stop() {
    double child_ns_per_op = 0;
    if (pid_ > 0) {
      ctl_->stop.store(1, std::memory_order_relaxed);
      const std::int64_t deadline = mono_ns() + 5'000'000'000;
      int status = 0;
      for (;;) {
        const pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno != EINTR)) break;
        if (mono_ns() > deadline) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &status, 0);
          break;
        }
        ::usleep(1000);
      }
      pid_ = 0;
      if (ctl_->ops > 0)
        child_ns_per_op = static_cast<double>(ctl_->ns) / static_cast<double>(ctl_->ops);
    }
    if (pinned_) {
      ::sched_setaffinity(0, sizeof saved_, &saved_);
      pinned_ = false;
    }
    if (ctl_ != nullptr) {
      ::munmap(ctl_, sizeof(Control));
      ctl_ = nullptr;
    }
    return child_ns_per_op;
  }

 private:
  struct Control {
    alignas(64) std::atomic<int> ready{0};
    alignas(64) std::atomic<int> stop{0};
    alignas(64) std::uint64_t ops = 0;  // written by the child before _exit
    std::uint64_t ns = 0;
  };
  static void pin(int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    ::sched_setaffinity(0, sizeof one, &one);
  }

  Control* ctl_ = nullptr;
  pid_t pid_ = 0;
  cpu_set_t saved_{};
  bool pinned_ = false;
  std::string error_;
};

// Runs `body` and turns a setup exception into a skipped case.
template <class Body>
void guarded(benchmark::State& state, Body body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void check(benchmark::State& state, std::uint64_t unexpected, const char* what) {
  if (unexpected != 0) {
    const std::string msg = std::to_string(unexpected) + " decisions were not " + what;
    state.SkipWithError(msg.c_str());
  }
}

inline bool admitted_ok(const Decision& d) { return d.allowed && d.reason == Reason::kOk; }

// ---------------------------------------------------------------------------
// Floor

void BM_Floor_ClockGettime(benchmark::State& state) {
  for (auto _ : state) {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    benchmark::DoNotOptimize(ts);
  }
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

// ---------------------------------------------------------------------------
// One key

void BM_Acquire_HotKey(benchmark::State& state) {
  guarded(state, [&] {
    auto& e = env<HotEnv>("hot");
    Limiter& l = e.limiter();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += !admitted_ok(l.acquire(e.hot, "hot-key"));
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
// Alternatives (issue #7): what a user would write instead of shmlimit.
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
    {"BM_Floor_CasSharedWord", BM_Floor_CasSharedWord},
    {"BM_Floor_ClockPlusCas", BM_Floor_ClockPlusCas},
    {"BM_Acquire_HotKey", BM_Acquire_HotKey},
    {"BM_Acquire_HotKey_Denied", BM_Acquire_HotKey_Denied},
    {"BM_Peek_HotKey", BM_Peek_HotKey},
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
    {"BM_Acquire_ManyKeys", BM_Acquire_ManyKeys},
    {"BM_Acquire_NewKeys", BM_Acquire_NewKeys},
    {"BM_Floor_CasSharedWord_2Proc", BM_Floor_CasSharedWord_2Proc},
    {"BM_Floor_ClockPlusCas_2Proc", BM_Floor_ClockPlusCas_2Proc},
    {"BM_Acquire_HotKey_2Proc", BM_Acquire_HotKey_2Proc},
    {"BM_Alt_MutexMap_HotKey", BM_Alt_MutexMap_HotKey},
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

// ---------------------------------------------------------------------------
// Ratio table

// Forwards everything to the reporter chosen by --benchmark_format and keeps
// each case's real and CPU time per operation.
//
// Ratios use CPU time: on a shared machine (other processes on the same 2
// cores) real time also counts the slices in which the benchmark was not
// running at all, and that noise does not cancel out between two cases.
// On an idle machine the two agree (the real time column shows it).
class RatioReporter final : public benchmark::BenchmarkReporter {
 public:
  explicit RatioReporter(benchmark::BenchmarkReporter* inner) : inner_(inner) {}

  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) collect(r);
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }

  void print(std::ostream& os) const {
    if (times_.empty()) return;  // nothing ran (--benchmark_list_tests, an empty filter)
    // The order of kCases, whatever order the runs were reported in.
    std::vector<std::string> order;
    for (const Case& c : kCases) {
      if (times_.count(c.name)) order.emplace_back(c.name);
    }
    const auto clock = cpu_of("BM_Floor_ClockGettime");
    const auto floor1 = cpu_of("BM_Floor_ClockPlusCas");
    const auto floor2 = cpu_of("BM_Floor_ClockPlusCas_2Proc");
    const auto ratio = [](std::optional<double> a, std::optional<double> b) {
      if (!a || !b || *b <= 0) return std::string("n/a");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fx", *a / *b);
      return std::string(buf);
    };
    const auto ns = [](std::optional<double> v) {
      if (!v) return std::string("n/a");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f", *v);
      return std::string(buf);
    };
    const auto row = [&](const std::string& name, std::optional<double> a,
                         std::optional<double> b) {
      os << "| " << name << " | " << ns(cpu_of(name)) << " | " << ns(median_cpu_of(name)) << " | "
         << ns(real_of(name)) << " | " << ratio(cpu_of(name), a) << " | " << ratio(cpu_of(name), b)
         << " |\n";
    };
    const std::string head =
        "| case | CPU ns/op (min) | CPU ns/op (median) | real ns/op (median) | ";
    const std::string rule = "|---|---:|---:|---:|---:|---:|\n";
    os << "\n## Ratios to the floor measured in the same process\n\n"
       << repetitions_ << " repetition(s) per case. Ratios are of the fastest repetition's "
       << "CPU time (min), the one least disturbed by other processes.\n\n"
       << head << "/ clock+CAS | / clock alone |\n"
       << rule;
    bool any2 = false;
    for (const std::string& name : order) {
      if (name.starts_with("BM_Alt_")) continue;  // their own table below
      if (name.ends_with("_2Proc")) {
        any2 = true;
        continue;
      }
      row(name, floor1, clock);
    }
    if (any2) {
      os << "\n## Under contention: a child process pinned to the other core runs the same "
            "operation on the same word / key\n\n"
         << head << "/ clock+CAS (2 proc) | / clock+CAS (1 proc) |\n"
         << rule;
      for (const std::string& name : order) {
        if (name.ends_with("_2Proc") && !name.starts_with("BM_Alt_")) row(name, floor2, floor1);
      }
    }
    const auto cold = cpu_of("BM_Floor_ClockPlusCas_ColdSlot");
    if (cold) {
      os << "\n## Cold keys: ratio to the same floor on a cache- and TLB-cold slot\n\n"
         << head << "/ cold clock+CAS | / clock+CAS |\n"
         << rule;
      for (const char* name :
           {"BM_Floor_ClockPlusCas_ColdSlot", "BM_Acquire_ManyKeys", "BM_Acquire_NewKeys"}) {
        if (times_.count(name)) row(name, cold, floor1);
      }
    }
    print_alternatives(os, ratio, ns);
    const auto hot = cpu_of("BM_Acquire_HotKey");
    if (hot && floor1 && *floor1 > 0) {
      const double r = *hot / *floor1;
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "\nHot-key acquire: %.1f ns = %.2fx clock+CAS (%.1f ns); target <= 1.50x: %s\n",
                    *hot, r, *floor1, r <= 1.5 ? "MET" : "NOT MET");
      os << buf;
    }
    // Issue 16: denied and peek no slower than admitted (same key, same run).
    for (const char* name : {"BM_Acquire_HotKey_Denied", "BM_Peek_HotKey"}) {
      const auto t = cpu_of(name);
      if (!t || !hot || *hot <= 0) continue;
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "%s / BM_Acquire_HotKey: %.2fx (CPU, min); target <= 1.00x: %s\n", name,
                    *t / *hot, *t <= *hot ? "MET" : "NOT MET");
      os << buf;
    }
    const auto busy = [&](const std::string& name) {
      const auto c = median_cpu_of(name), w = real_of(name);
      return c && w && *c > 0 && *w / *c > 1.2;
    };
    if (busy("BM_Floor_ClockGettime") || busy("BM_Floor_ClockPlusCas") ||
        busy("BM_Acquire_HotKey")) {
      os << "\nWARNING: real time exceeds CPU time by more than 20% on single-process cases: "
            "other processes were using the CPUs during this run; treat the numbers with care.\n";
    }
  }

  // Issue #7: each alternative against shmlimit on the same workload and
  // number of processes. A mutex that is contended blocks in the kernel
  // (futex) without using CPU, so under contention CPU time flatters it:
  // the real-time ratio is given as well and is the one to read for _2Proc.
  // Redis and memcached spend their time in another process (the server)
  // and in the network stack: only the real-time ratio means anything there.
  template <class Ratio, class Ns>
  void print_alternatives(std::ostream& os, const Ratio& ratio, const Ns& ns) const {
    struct Pair {
      const char* alt;
      const char* ours;
    };
    constexpr Pair kPairs[] = {
        {"BM_Alt_MutexMap_HotKey", "BM_Acquire_HotKey"},
        {"BM_Alt_MutexMap_HotKey_2Proc", "BM_Acquire_HotKey_2Proc"},
        {"BM_Alt_Redis_HotKey", "BM_Acquire_HotKey"},
        {"BM_Alt_Memcached_HotKey", "BM_Acquire_HotKey"},
    };
    bool any = false;
    for (const Pair& p : kPairs) any = any || times_.count(p.alt) != 0;
    if (!any) return;
    os << "\n## Alternatives (issue #7): the same decision implemented as a user would\n\n"
       << "| case | CPU ns/op (min) | real ns/op (median) | shmlimit case | alt / shmlimit (CPU, "
          "min) | alt / shmlimit (real, median) |\n"
       << "|---|---:|---:|---|---:|---:|\n";
    for (const Pair& p : kPairs) {
      if (!times_.count(p.alt)) continue;
      os << "| " << p.alt << " | " << ns(cpu_of(p.alt)) << " | " << ns(real_of(p.alt)) << " | "
         << p.ours << " | " << ratio(cpu_of(p.alt), cpu_of(p.ours)) << " | "
         << ratio(real_of(p.alt), real_of(p.ours)) << " |\n";
    }
    // Issue 16: faster than the mutex map in one process (CPU, fastest
    // repetition, as the other single-process ratios).
    const auto m1 = cpu_of("BM_Alt_MutexMap_HotKey");
    const auto s1 = cpu_of("BM_Acquire_HotKey");
    if (m1 && s1 && *m1 > 0) {
      char buf[200];
      std::snprintf(
          buf, sizeof buf,
          "\nHot key, 1 process: shmlimit / mutex map = %.2fx (CPU, min); target < 1.00x: %s\n",
          *s1 / *m1, *s1 < *m1 ? "MET" : "NOT MET");
      os << buf;
    }
    const auto a = real_of("BM_Alt_MutexMap_HotKey_2Proc");
    const auto b = real_of("BM_Acquire_HotKey_2Proc");
    if (a && b && *b > 0) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "\nHot key, 2 processes: mutex map / shmlimit = %.2fx (real time, median); "
                    "target >= 5x: %s\n",
                    *a / *b, *a / *b >= 5.0 ? "MET" : "NOT MET");
      os << buf;
    }
  }

 private:
  struct Times {
    std::optional<double> median_real, median_cpu;  // the "median" aggregate, when reported
    std::optional<double> min_cpu;                  // the "min" aggregate, when reported
    std::vector<double> real, cpu;                  // per-repetition values otherwise
    bool error = false;
  };

  static double to_ns(double v, benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond:
        return v;
      case benchmark::kMicrosecond:
        return v * 1e3;
      case benchmark::kMillisecond:
        return v * 1e6;
      case benchmark::kSecond:
        return v * 1e9;
    }
    return v;
  }

  static std::optional<double> median(std::vector<double> v) {
    if (v.empty()) return std::nullopt;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  void collect(const Run& r) {
    Times& t = times_[r.run_name.function_name];
    if (r.error_occurred) {
      t.error = true;
      return;
    }
    const double real = to_ns(r.GetAdjustedRealTime(), r.time_unit);
    const double cpu = to_ns(r.GetAdjustedCPUTime(), r.time_unit);
    if (r.run_type == Run::RT_Aggregate) {
      if (r.aggregate_name == "median") {
        t.median_real = real;
        t.median_cpu = cpu;
        repetitions_ = r.repetitions;
      } else if (r.aggregate_name == "min") {
        t.min_cpu = cpu;
      }
    } else {
      t.real.push_back(real);
      t.cpu.push_back(cpu);
    }
  }

  const Times* find(const std::string& name) const {
    const auto it = times_.find(name);
    return it == times_.end() || it->second.error ? nullptr : &it->second;
  }
  // The figure ratios are taken of: the fastest repetition's CPU time.
  std::optional<double> cpu_of(const std::string& name) const {
    const Times* t = find(name);
    if (t == nullptr) return std::nullopt;
    if (t->min_cpu) return t->min_cpu;
    if (t->cpu.empty()) return std::nullopt;
    return *std::min_element(t->cpu.begin(), t->cpu.end());
  }
  std::optional<double> median_cpu_of(const std::string& name) const {
    const Times* t = find(name);
    if (t == nullptr) return std::nullopt;
    return t->median_cpu ? t->median_cpu : median(t->cpu);
  }
  std::optional<double> real_of(const std::string& name) const {
    const Times* t = find(name);
    if (t == nullptr) return std::nullopt;
    return t->median_real ? t->median_real : median(t->real);
  }

  benchmark::BenchmarkReporter* inner_;
  std::map<std::string, Times, std::less<>> times_;
  std::int64_t repetitions_ = 1;
};

}  // namespace

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
