// shmlimit_throughput: multi-process throughput and per-operation latency of
// shmlimit against the mutex-map alternative (bench/mutex_map.hpp).
//
// For each implementation (shmlimit, mutexmap, floor), workload (hot: one key;
// many: 100k keys visited in a random order per process; flood: one key
// that every decision refuses, a client far over its limit) and number of
// processes P (default 1, 2, 4; P above the CPU count oversubscribes), P
// forked processes, pinned round-robin to the allowed CPUs, start together
// and make decisions for a fixed duration. Printed as a markdown table:
// total ops/s, ops/s per process, and the p50 / p99 / p99.9 latency of one
// decision, sampled every Nth operation (two clock_gettime reads around that
// one decision: the figure includes one clock read, ~20-30 ns on a KVM guest).
// Latency is wall time: it includes time slices lost to preemption, which is
// what a caller sees (visible at p99.9, especially at P > CPUs).
//
//   shmlimit_throughput [--duration=SECONDS] [--procs=1,2,4] [--keys=100000]
//                       [--sample-every=16] [--impl=shmlimit,mutexmap,floor]
//                       [--workload=hot,many,flood] [--csv=FILE]
//
// Both implementations use the same GCRA parameters: hot key T = 1 ns, burst
// 1e9 (always admitted); many keys 1/s burst 1e6 (always admitted during a
// run); flood 1/h burst 1 (its one admission made before timing). Every
// decision is checked: "denied" must be 0, or in a flood every decision. `floor` (FloorTable)
// is no limiter: clock_gettime and one CAS on the key's own line, the part
// of a decision no implementation can skip. After the table, one line per
// cell compares the p99s: shmlimit's against the mutex map's and the
// floor's.

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "mutex_map.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

using shmlimit_bench::alt_mono_ns;
using shmlimit_bench::MutexMap;
using shmlimit_bench::ShmRegion;

struct Config {
  double duration = 2.0;
  std::vector<int> procs{1, 2, 4};
  std::size_t keys = 100'000;
  std::uint64_t sample_every = 16;
  std::vector<std::string> impls{"shmlimit", "mutexmap", "floor"};
  std::vector<std::string> workloads{"hot", "many", "flood"};
  std::string csv;
};

std::vector<std::string> split(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char c : s) {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// Per-process results in shared memory, written by the child before _exit.
constexpr std::size_t kMaxSamples = 1u << 22;  // per process (16 MiB)
struct alignas(64) ChildResult {
  std::uint64_t ops;
  std::uint64_t denied;
  std::uint64_t ns;
  std::uint64_t nsamples;
};
struct alignas(64) Control {
  std::atomic<int> ready;
  alignas(64) std::atomic<int> go;
  alignas(64) std::atomic<int> stop;
};

// Anonymous shared memory for the control block, results and samples.
class SharedArea {
 public:
  explicit SharedArea(int procs) : procs_(procs) {
    bytes_ = sizeof(Control) + static_cast<std::size_t>(procs) * sizeof(ChildResult) +
             static_cast<std::size_t>(procs) * kMaxSamples * sizeof(std::uint32_t);
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<std::byte*>(p);
    ctl = new (base_) Control{};
    results = reinterpret_cast<ChildResult*>(base_ + sizeof(Control));
    samples = reinterpret_cast<std::uint32_t*>(
        base_ + sizeof(Control) + static_cast<std::size_t>(procs) * sizeof(ChildResult));
  }
  ~SharedArea() { ::munmap(base_, bytes_); }
  SharedArea(const SharedArea&) = delete;
  SharedArea& operator=(const SharedArea&) = delete;
  std::uint32_t* samples_of(int i) { return samples + static_cast<std::size_t>(i) * kMaxSamples; }

  Control* ctl = nullptr;
  ChildResult* results = nullptr;
  std::uint32_t* samples = nullptr;

 private:
  int procs_;
  std::size_t bytes_ = 0;
  std::byte* base_ = nullptr;
};

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

void pin(int cpu) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  ::sched_setaffinity(0, sizeof one, &one);
}

// The workloads: one hot key always admitted; 100k keys always admitted;
// one key always refused (a flood: every process over its limit).
enum class Load { kHot, kMany, kFlood };

// One implementation behind one interface: a decision on `key`; true when
// it was admitted.
struct Impl {
  virtual ~Impl() = default;
  virtual bool decide(const std::string& key, Load load) = 0;
};

struct ShmlimitImpl final : Impl {
  ShmlimitImpl(const std::string& name, std::uint32_t capacity) : name_(name) {
    shmlimit::Limiter::remove(name_);
    shmlimit::Options o;
    o.name = name_;
    o.capacity = capacity;
    o.slot_bytes = 64;  // the mutex map's entry size: the same memory per key
    limiter.emplace(shmlimit::Limiter::open_or_create(o));
    shmlimit::PolicySpec hot;
    hot.name = "hot";
    hot.rate = shmlimit::Rate{1'000'000'000, std::chrono::seconds(1)};
    hot.burst = 1'000'000'000;
    hot_id = limiter->add_policy(hot);
    shmlimit::PolicySpec many;
    many.name = "many";
    many.rate = shmlimit::Rate{1, std::chrono::seconds(1)};
    many.burst = 1'000'000;
    many_id = limiter->add_policy(many);
    shmlimit::PolicySpec flood;
    flood.name = "flood";
    flood.rate = shmlimit::Rate{1, std::chrono::hours(1)};
    flood.burst = 1;
    flood_id = limiter->add_policy(flood);
  }
  ~ShmlimitImpl() override {
    limiter.reset();
    try {
      shmlimit::Limiter::remove(name_);
    } catch (const std::exception&) {
    }
  }
  bool decide(const std::string& key, Load load) override {
    const shmlimit::PolicyId id = load == Load::kHot    ? hot_id
                                  : load == Load::kMany ? many_id
                                                        : flood_id;
    const shmlimit::Decision d = limiter->acquire(id, key);
    return d.allowed && d.reason == shmlimit::Reason::kOk;
  }
  std::string name_;
  std::optional<shmlimit::Limiter> limiter;
  shmlimit::PolicyId hot_id, many_id, flood_id;
};

struct MutexImpl final : Impl {
  MutexImpl(const std::string& name, std::size_t capacity) : map(name, capacity) {}
  bool decide(const std::string& key, Load load) override {
    switch (load) {
      case Load::kHot:
        return map.acquire(key, 1, 1'000'000'000);
      case Load::kMany:
        return map.acquire(key, 1'000'000'000, 1'000'000);
      case Load::kFlood:
        break;
    }
    return map.acquire(key, 3'600'000'000'000, 1);
  }
  MutexMap map;
};

// The floor: what any implementation pays for a decision on a key, with
// nothing of a decision's own work. clock_gettime, then one CAS on the word
// of the key's own 64-byte line in a POSIX shm table of the same size as the
// others' (FNV-1a hash, as the mutex map's): the clock, the line's miss and
// its transfer between cores. Its p99 is the memory system's and the
// contended line's tail, which no decision can go below.
class FloorTable final : public Impl {
 public:
  FloorTable(const std::string& name, std::size_t capacity)
      : cap_(std::bit_ceil(std::max<std::size_t>(capacity, 1))), shm_(name, cap_ * sizeof(Line)) {
    lines_ = new (shm_.base()) Line[cap_];
  }
  FloorTable(const FloorTable&) = delete;
  FloorTable& operator=(const FloorTable&) = delete;

  bool decide(const std::string& key, Load load) override {
    const std::uint64_t h = shmlimit_bench::fnv1a(key);
    std::atomic<std::uint64_t>& w = lines_[h & (cap_ - 1)].word;
    const auto now = static_cast<std::uint64_t>(alt_mono_ns());
    // Relaxed: a benchmark's counter, nothing published through it.
    std::uint64_t cur = w.load(std::memory_order_relaxed);
    // A refusal reads the word and writes nothing. The first call of a
    // flood admits, as a limiter's first request does.
    if (load == Load::kFlood && cur != 0) return now >= cur;
    const std::uint64_t step = load == Load::kFlood ? 3'600'000'000'000 : 1;
    while (!w.compare_exchange_weak(cur, std::max(cur, now) + step, std::memory_order_relaxed)) {
    }
    return true;
  }

 private:
  struct alignas(64) Line {
    std::atomic<std::uint64_t> word{0};
  };
  static_assert(sizeof(Line) == 64);
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared across processes");
  std::size_t cap_;
  ShmRegion shm_;
  Line* lines_ = nullptr;
};

struct Row {
  std::string impl, workload;
  int procs = 0;
  double ops_per_s = 0;
  double ops_per_s_per_proc = 0;
  double p50 = 0, p99 = 0, p999 = 0;
  std::uint64_t denied = 0;
  std::uint64_t ops = 0;
  std::uint64_t samples = 0;
};

Row run_one(const Config& cfg, const std::string& impl_name, const std::string& workload, int procs,
            const std::vector<std::string>& keys) {
  const std::string seg = "/shmlimit-bench-" + std::to_string(::getpid()) + "-tp-" + impl_name;
  // The key table: 2^18 entries of 64 bytes for 100k keys (38% full) in each.
  std::uint32_t capacity = 1024;
  while (capacity < keys.size() * 2) capacity <<= 1;
  std::unique_ptr<Impl> impl;
  if (impl_name == "shmlimit")
    impl = std::make_unique<ShmlimitImpl>(seg, capacity);
  else if (impl_name == "floor")
    impl = std::make_unique<FloorTable>(seg, capacity);
  else
    impl = std::make_unique<MutexImpl>(seg, capacity);
  const Load load = workload == "hot"    ? Load::kHot
                    : workload == "many" ? Load::kMany
                                         : Load::kFlood;
  const bool hot = load != Load::kMany;  // one key
  const std::string hot_key = "hot-key";
  // Claim every key before timing, so the timed part is lookups, not claims
  // (and a flood's one key has had its one admission).
  if (hot) {
    impl->decide(hot_key, load);
  } else {
    for (const auto& k : keys) impl->decide(k, load);
  }

  SharedArea area(procs);
  const std::vector<int> cpus = allowed_cpus();
  std::vector<pid_t> pids;
  std::cout.flush();
  std::cerr.flush();
  for (int i = 0; i < procs; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::perror("fork");
      break;
    }
    if (pid == 0) {
      pin(cpus[static_cast<std::size_t>(i) % cpus.size()]);
      // Each process visits the keys in its own random order.
      std::vector<std::uint32_t> order;
      if (!hot) {
        order.resize(keys.size());
        for (std::size_t k = 0; k < keys.size(); ++k) order[k] = static_cast<std::uint32_t>(k);
        std::mt19937_64 rng(1234 + static_cast<std::uint64_t>(i));
        std::shuffle(order.begin(), order.end(), rng);
      }
      std::uint32_t* samples = area.samples_of(i);
      area.ctl->ready.fetch_add(1, std::memory_order_acq_rel);
      while (area.ctl->go.load(std::memory_order_acquire) == 0) {
      }
      std::uint64_t ops = 0, denied = 0, ns_samples = 0;
      std::size_t cursor = 0;
      const std::int64_t start = alt_mono_ns();
      while (area.ctl->stop.load(std::memory_order_relaxed) == 0) {
        for (std::uint64_t j = 0; j < cfg.sample_every; ++j) {
          const std::string& key = hot ? hot_key : keys[order[cursor]];
          if (!hot && ++cursor == order.size()) cursor = 0;
          if (j == 0 && ns_samples < kMaxSamples) {
            const std::int64_t t0 = alt_mono_ns();
            denied += !impl->decide(key, load);
            const std::int64_t t1 = alt_mono_ns();
            const std::int64_t d = t1 - t0;
            samples[ns_samples++] =
                static_cast<std::uint32_t>(std::min<std::int64_t>(d, 0xffffffff));
          } else {
            denied += !impl->decide(key, load);
          }
        }
        ops += cfg.sample_every;
      }
      ChildResult& r = area.results[i];
      r.ns = static_cast<std::uint64_t>(alt_mono_ns() - start);
      r.ops = ops;
      r.denied = denied;
      r.nsamples = ns_samples;
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  const std::int64_t deadline = alt_mono_ns() + 10'000'000'000;
  while (area.ctl->ready.load(std::memory_order_acquire) < static_cast<int>(pids.size()) &&
         alt_mono_ns() < deadline) {
    ::usleep(1000);
  }
  area.ctl->go.store(1, std::memory_order_release);
  ::usleep(static_cast<useconds_t>(cfg.duration * 1e6));
  area.ctl->stop.store(1, std::memory_order_relaxed);
  for (const pid_t pid : pids) {
    int status = 0;
    const std::int64_t kill_at = alt_mono_ns() + 5'000'000'000;
    for (;;) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid || (r < 0 && errno != EINTR)) break;
      if (alt_mono_ns() > kill_at) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      ::usleep(1000);
    }
  }

  Row row;
  row.impl = impl_name;
  row.workload = workload;
  row.procs = procs;
  std::vector<std::uint32_t> all;
  for (int i = 0; i < static_cast<int>(pids.size()); ++i) {
    const ChildResult& r = area.results[i];
    if (r.ns > 0) row.ops_per_s += static_cast<double>(r.ops) * 1e9 / static_cast<double>(r.ns);
    row.denied += r.denied;
    row.ops += r.ops;
    const std::uint32_t* s = area.samples_of(i);
    all.insert(all.end(), s, s + r.nsamples);
  }
  row.ops_per_s_per_proc = row.ops_per_s / procs;
  row.samples = all.size();
  if (!all.empty()) {
    std::sort(all.begin(), all.end());
    const auto pct = [&](double q) {
      const auto idx = static_cast<std::size_t>(q * static_cast<double>(all.size() - 1));
      return static_cast<double>(all[idx]);
    };
    row.p50 = pct(0.50);
    row.p99 = pct(0.99);
    row.p999 = pct(0.999);
  }
  return row;
}

std::string fmt(double v, int prec = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

std::string fmt_ops(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto val = [&](std::string_view flag) -> std::optional<std::string_view> {
      if (a.starts_with(flag) && a.size() > flag.size() && a[flag.size()] == '=')
        return a.substr(flag.size() + 1);
      return std::nullopt;
    };
    if (auto v = val("--duration")) {
      cfg.duration = std::atof(std::string(*v).c_str());
    } else if (auto v2 = val("--procs")) {
      cfg.procs.clear();
      for (const auto& p : split(*v2)) cfg.procs.push_back(std::atoi(p.c_str()));
    } else if (auto v3 = val("--keys")) {
      cfg.keys = static_cast<std::size_t>(std::atol(std::string(*v3).c_str()));
    } else if (auto v4 = val("--sample-every")) {
      cfg.sample_every = static_cast<std::uint64_t>(std::atol(std::string(*v4).c_str()));
    } else if (auto v5 = val("--impl")) {
      cfg.impls = split(*v5);
    } else if (auto v6 = val("--workload")) {
      cfg.workloads = split(*v6);
    } else if (auto v7 = val("--csv")) {
      cfg.csv = std::string(*v7);
    } else {
      std::cerr << "usage: shmlimit_throughput [--duration=S] [--procs=1,2,4] [--keys=N]\n"
                   "       [--sample-every=N] [--impl=shmlimit,mutexmap,floor]\n"
                   "       [--workload=hot,many,flood] [--csv=FILE]\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (cfg.duration <= 0 || cfg.sample_every == 0 || cfg.keys == 0 || cfg.procs.empty()) {
    std::cerr << "shmlimit_throughput: bad arguments\n";
    return 2;
  }
  for (const int p : cfg.procs) {
    if (p < 1 || p > 64) {
      std::cerr << "shmlimit_throughput: --procs values must be 1..64\n";
      return 2;
    }
  }
  for (const auto& w : cfg.workloads) {
    if (w != "hot" && w != "many" && w != "flood") {
      std::cerr << "shmlimit_throughput: unknown --workload " << w << "\n";
      return 2;
    }
  }
  for (const auto& im : cfg.impls) {
    if (im != "shmlimit" && im != "mutexmap" && im != "floor") {
      std::cerr << "shmlimit_throughput: unknown --impl " << im << "\n";
      return 2;
    }
  }

  std::vector<std::string> keys;
  keys.reserve(cfg.keys);
  char buf[32];
  for (std::size_t i = 0; i < cfg.keys; ++i) {
    std::snprintf(buf, sizeof buf, "user:%07zu", i);
    keys.emplace_back(buf);
  }

  std::vector<Row> rows;
  try {
    for (const auto& w : cfg.workloads) {
      for (const int p : cfg.procs) {
        for (const auto& im : cfg.impls) {
          std::cerr << "running " << im << " " << w << " P=" << p << " for " << cfg.duration
                    << " s\n";
          rows.push_back(run_one(cfg, im, w, p, keys));
        }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "shmlimit_throughput: " << e.what() << "\n";
    return 1;
  }

  const auto ops_of = [&](const std::string& im, const std::string& w, int p) -> double {
    for (const Row& r : rows)
      if (r.impl == im && r.workload == w && r.procs == p) return r.ops_per_s;
    return 0;
  };
  std::cout << "## Multi-process throughput (" << fmt(cfg.duration, 1) << " s per cell, "
            << allowed_cpus().size() << " CPUs allowed; many = " << cfg.keys
            << " keys; latency sampled every " << cfg.sample_every << "th op)\n\n"
            << "| workload | P | implementation | ops/s total | ops/s per process | "
               "shmlimit / mutexmap | p50 ns | p99 ns | p99.9 ns | samples | denied |\n"
            << "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows) {
    const double m = ops_of("mutexmap", r.workload, r.procs);
    const std::string vs =
        r.impl == "shmlimit" && m > 0 ? fmt(r.ops_per_s / m, 2) + "x" : std::string("");
    std::cout << "| " << r.workload << " | " << r.procs << " | " << r.impl << " | "
              << fmt_ops(r.ops_per_s) << " | " << fmt_ops(r.ops_per_s_per_proc) << " | " << vs
              << " | " << fmt(r.p50) << " | " << fmt(r.p99) << " | " << fmt(r.p999) << " | "
              << r.samples << " | " << r.denied << " |\n";
  }
  const auto row_of = [&](const std::string& im, const std::string& w, int p) -> const Row* {
    for (const Row& r : rows)
      if (r.impl == im && r.workload == w && r.procs == p) return &r;
    return nullptr;
  };
  bool first = true;
  for (const Row& r : rows) {
    if (r.impl != "shmlimit") continue;
    const Row* m = row_of("mutexmap", r.workload, r.procs);
    const Row* f = row_of("floor", r.workload, r.procs);
    if ((m == nullptr || m->p99 <= 0) && f == nullptr) continue;
    if (first) std::cout << "\n";
    first = false;
    std::cout << "p99, " << r.workload << " P=" << r.procs << ": shmlimit " << fmt(r.p99) << " ns";
    if (m != nullptr && m->p99 > 0 && r.p99 > 0)
      std::cout << ", the mutex map's " << fmt(m->p99) << " ns (mutex map / shmlimit "
                << fmt(m->p99 / r.p99, 1) << "x)";
    if (f != nullptr) std::cout << "; the floor's " << fmt(f->p99) << " ns";
    std::cout << "\n";
  }
  bool bad = false;
  for (const Row& r : rows) bad = bad || r.denied != (r.workload == "flood" ? r.ops : 0);
  if (bad)
    std::cout << "\nERROR: some decisions were denied (or, in a flood, admitted); the figures are "
                 "not comparable.\n";

  if (!cfg.csv.empty()) {
    std::ofstream out(cfg.csv);
    out << "workload,procs,impl,ops_per_s,p50_ns,p99_ns,p999_ns,denied\n";
    for (const Row& r : rows) {
      out << r.workload << "," << r.procs << "," << r.impl << "," << fmt(r.ops_per_s) << ","
          << fmt(r.p50) << "," << fmt(r.p99) << "," << fmt(r.p999) << "," << r.denied << "\n";
    }
  }
  return bad ? 1 : 0;
}
