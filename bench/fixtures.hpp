// The fixtures of bench_acquire.cpp: segment names, shared regions (shm_region.hpp), the
// per-case environments (segments built once per run and kept until its
// end), the forked contender of the 2-process cases, and the checks every
// case makes of its decisions. Included by bench_acquire.cpp alone: its
// anonymous namespace is that file's.
#pragma once

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
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "mutex_map.hpp"
#include "shm_region.hpp"
#include "shmlimit/shmlimit.hpp"

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
using shmlimit_bench::ShmRegion;
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

// PREFETCHW of the line at `p` (a read prefetch elsewhere), as
// Table::prefetch_home issues it before an acquire's clock read.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
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
  static ShmRegion region(segment_name("floor"), 4096);
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

  ColdEnv() : region_(segment_name("cold"), kSlots * kSlotBytes) {
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

}  // namespace
