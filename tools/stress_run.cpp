// `shmlimit-stress`: the parent. It creates the segment and the shared
// bookkeeping region, forks the workers, SIGKILLs and replaces some of them
// while they run, and reaps them all at the end.
#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shmlimit/shmlimit.hpp"
#include "stress.hpp"

namespace stress {
namespace {

// Workers wait this long for a live rival that is mid-claim on the same new
// key before the library falls back to on_full (Reason::kContended). With
// more processes than cores a claimer may be descheduled for a few time
// slices; a dead one is detected and repaired within microseconds anyway.
constexpr std::chrono::milliseconds kClaimTimeout{1000};

template <typename T>
T* map_shared(std::size_t n) {
  void* p = ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error(std::string("cannot map the bookkeeping region: ") +
                             std::strerror(errno));
  auto* t = static_cast<T*>(p);
  for (std::size_t i = 0; i < n; ++i) new (t + i) T{};
  return t;
}

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

}  // namespace

void Runner::setup() {
  Config& c = cfg();
  if (c.processes == 0) c.processes = std::max(1u, std::thread::hardware_concurrency());
  if (c.keys == 0) throw std::invalid_argument("--keys must be at least 1");
  if (c.policies.empty()) c.policies = default_policies(c.keys);
  if (c.policies.size() > 64) throw std::invalid_argument("at most 64 policies");
  u64 max_keys = 0;
  for (PolicyPlan& pp : c.policies) {
    if (pp.keys == 0) pp.keys = c.keys;
    plan_.key_base.push_back(plan_.total_keys);
    plan_.total_keys += pp.keys;
    max_keys = std::max(max_keys, pp.keys);
  }
  if (c.duration_s <= 0 && c.ops == 0) c.duration_s = 10;
  if (c.capacity == 0) {
    // Half the (policy, key) pairs: long-lived keys fit, full buckets get reclaimed.
    std::uint32_t cap = 1024;
    while (cap < plan_.total_keys / 2 && cap < (1u << 28)) cap <<= 1;
    c.capacity = cap;
  }
  const double bytes =
      static_cast<double>(c.processes) * static_cast<double>(plan_.total_keys) * sizeof(KeyRecord);
  if (bytes > 2.0 * (1ull << 30)) {
    throw std::invalid_argument(fmt::format(
        "{} processes x {} (policy, key) pairs need {:.1f} GiB of records; use fewer keys",
        c.processes, plan_.total_keys, bytes / (1ull << 30)));
  }
  for (const PolicyPlan& p : c.policies) {
    const AlgorithmModel* m = model_for(p.algorithm);
    if (m == nullptr)
      throw std::invalid_argument(
          "policy " + p.name + ": the verifier has no model of algorithm \"" + p.algorithm + "\"");
    plan_.models.push_back(m);
  }

  name_ = c.segment.empty() ? fmt::format("/shmlimit-stress-{}", ::getpid()) : c.segment;
  shmlimit::Options o;
  o.name = name_;
  o.capacity = c.capacity;
  o.claim_timeout = kClaimTimeout;
  limiter_.emplace(shmlimit::Limiter::create(o));
  created_ = true;
  u64 total = 0;
  for (const PolicyPlan& pp : c.policies) {
    shmlimit::PolicySpec spec;
    spec.name = pp.name;
    spec.algorithm = shmlimit::parse_algorithm(pp.algorithm);
    spec.rate = shmlimit::parse_rate(pp.rate);
    spec.burst = pp.burst;
    spec.on_full = shmlimit::OnFull::kDeny;  // a fallback may deny, never admit: exactness holds
    plan_.ids.push_back(limiter_->add_policy(spec));
    const u64 burst = pp.burst == 0 ? spec.rate.count : pp.burst;
    const auto period = static_cast<u64>(spec.rate.period.count());
    plan_.params.push_back(
        Params{period / spec.rate.count + (period % spec.rate.count != 0 ? 1 : 0), burst});
    if (pp.cost_max > burst) {
      throw std::invalid_argument(fmt::format(
          "policy {}: cost {} exceeds the burst {} (never admitted)", pp.name, pp.cost_max, burst));
    }
    total += pp.weight;
    plan_.policy_cdf.push_back(total);
  }
  if (c.distribution == Distribution::kZipf) {
    for (const PolicyPlan& pp : c.policies) {
      std::vector<double> cdf(pp.keys);
      double sum = 0;
      for (u64 k = 0; k < pp.keys; ++k)
        cdf[k] = (sum += 1.0 / std::pow(static_cast<double>(k + 1), c.zipf_s));
      for (double& v : cdf) v /= sum;
      plan_.zipf_cdf.push_back(std::move(cdf));
    }
  }
  plan_.key_names.reserve(max_keys);
  for (u64 k = 0; k < max_keys; ++k) plan_.key_names.push_back("k" + std::to_string(k));

  plan_.options = o;
  plan_.options.capacity = 0;
  plan_.control = map_shared<Control>(1);
  // Spare WorkerSlots for replacements while killed workers die: on a
  // loaded machine a SIGKILLed process can wait tens of ms for a CPU to
  // exit on. (64 bytes each; the records are per lane.)
  const unsigned spares =
      c.kill_rate <= 0 ? 0u
                       : std::max(4 * c.processes,
                                  static_cast<unsigned>(std::min(4096.0, std::ceil(c.kill_rate))));
  plan_.lanes = c.processes;
  plan_.nslots = c.processes + spares;
  plan_.workers = map_shared<WorkerSlot>(plan_.nslots);
  plan_.records = map_shared<KeyRecord>(static_cast<std::size_t>(plan_.lanes) * plan_.total_keys);
  plan_.shared = map_shared<KeyShared>(plan_.total_keys);
  lost_.assign(plan_.total_keys, 0);
}

void Runner::execute() {
  const Config& c = plan_.cfg;
  std::mt19937_64 rng(c.seed ^ 0x5EED5EED5EED5EEDULL);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  facts_.t0 = limiter_->now().count();
  const auto start = std::chrono::steady_clock::now();
  pids_.assign(plan_.nslots, 0);
  state_.assign(plan_.nslots, SlotState::kFree);
  lane_of_.assign(plan_.nslots, 0);
  for (unsigned s = 0; s < c.processes; ++s) start_worker(s, s);

  std::exponential_distribution<double> next_kill(c.kill_rate > 0 ? c.kill_rate : 1.0);
  const auto after = [](double seconds) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(seconds));
  };
  auto kill_at = start + after(next_kill(rng));
  const auto status_every = tty ? std::chrono::milliseconds(200) : std::chrono::milliseconds(2000);
  auto status_at = start + status_every;
  const auto end = start + after(c.duration_s > 0 ? c.duration_s : 1e9);
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const u64 ops = sum_ops();
    if (g_interrupted != 0 || now >= end || (c.ops > 0 && ops >= c.ops)) break;
    reap(false);
    if (c.kill_rate > 0 && now >= kill_at) {
      kill_one(rng);
      kill_at += after(next_kill(rng));
      if (kill_at < now - std::chrono::milliseconds(100))
        kill_at = now;  // far behind: do not burst
      continue;
    }
    if (now >= status_at) {
      print_status(tty, std::chrono::duration<double>(now - start).count(), ops);
      status_at += status_every;
    }
    auto wake =
        std::min({end, status_at, now + std::chrono::milliseconds(c.kill_rate > 0 ? 1 : 50)});
    if (c.kill_rate > 0) wake = std::min(wake, kill_at);
    std::this_thread::sleep_until(wake);
  }
  plan_.control->stop.store(1, std::memory_order_relaxed);
  reap(true);
  facts_.t1 = limiter_->now().count();
  facts_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (tty) std::fprintf(stderr, "\r\x1b[K");
  for (unsigned s = 0; s < plan_.nslots; ++s) {
    const WorkerSlot& w = plan_.workers[s];
    facts_.ops += w.ops.load();
    facts_.admitted += w.admitted.load();
    facts_.denied += w.denied.load();
    facts_.fallbacks += w.fallbacks.load();
  }
}

void Runner::start_worker(unsigned lane, unsigned slot) {
  const u64 seed = plan_.cfg.seed * 0x9E3779B97F4A7C15ULL + lane * 1000003ULL + spawned_++;
  lane_of_[slot] = lane;
  pids_[slot] = spawn(plan_, lane, slot, seed);
  state_[slot] = SlotState::kRunning;
}

u64 Runner::sum_ops() const {
  u64 n = 0;
  for (unsigned s = 0; s < plan_.nslots; ++s)
    n += plan_.workers[s].ops.load(std::memory_order_relaxed);
  return n;
}

void Runner::kill_one(std::mt19937_64& rng) {
  std::vector<unsigned> running, free;
  for (unsigned s = 0; s < plan_.nslots; ++s) {
    if (state_[s] == SlotState::kRunning) running.push_back(s);
    if (state_[s] == SlotState::kFree) free.push_back(s);
  }
  if (running.empty()) return;
  if (free.empty()) {
    // Every spare WorkerSlot is still dying: wait for one (rare).
    reap_one_dying();
    for (unsigned s = 0; s < plan_.nslots; ++s) {
      if (state_[s] == SlotState::kFree) free.push_back(s);
    }
    if (free.empty()) return;
  }
  const unsigned victim = running[rng() % running.size()];
  ::kill(pids_[victim], SIGKILL);
  state_[victim] = SlotState::kDying;
  ++facts_.kills;
  start_worker(lane_of_[victim], free.front());
}

// Reaps what has ended: dying workers (expected: SIGKILL), and running
// ones that ended on their own (a crash, unless `all`: then they were
// told to stop and must exit 0). With `all`, waits for every worker.
void Runner::reap(bool all) {
  for (unsigned s = 0; s < plan_.nslots; ++s) {
    if (state_[s] == SlotState::kFree) continue;
    int status = 0;
    pid_t r = 0;
    do {
      r = ::waitpid(pids_[s], &status, all ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r != pids_[s]) continue;
    finish(s, status);
  }
}

void Runner::reap_one_dying() {
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(-1, &status, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    for (unsigned s = 0; s < plan_.nslots; ++s) {
      if (pids_[s] == r && state_[s] != SlotState::kFree) {
        finish(s, status);
        if (state_[s] == SlotState::kFree) return;
      }
    }
  }
}

void Runner::finish(unsigned s, int status) {
  const bool expected =
      state_[s] == SlotState::kDying
          ? WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL
          : WIFEXITED(status) && WEXITSTATUS(status) == 0 && plan_.control->stop.load() != 0;
  if (!expected) note_crash(s, status);
  account_inflight(s);
  pids_[s] = 0;
  state_[s] = SlotState::kFree;  // a crashed worker is not replaced: the run has failed
}

// A decision in flight when its process died may have charged the bucket
// without being recorded: count it as possibly admitted.
void Runner::account_inflight(unsigned slot) {
  const u64 f = plan_.workers[slot].inflight.exchange(0);
  if (f == 0) return;
  ++facts_.kills_in_flight;
  const u64 index = (f >> 16) - 1;
  if (index < lost_.size()) lost_[index] += f & 0xFFFF;
}

void Runner::note_crash(unsigned slot, int status) {
  ++facts_.crashes;
  std::string how = WIFSIGNALED(status) ? fmt::format("killed by signal {} ({})", WTERMSIG(status),
                                                      strsignal(WTERMSIG(status)))
                                        : fmt::format("exited with status {}", WEXITSTATUS(status));
  violations_.push_back(
      {"worker_crash", "", "", fmt::format("worker on lane {} {}", lane_of_[slot], how)});
}

void Runner::print_status(bool tty, double elapsed, u64 ops) {
  u64 admitted = 0, denied = 0;
  for (unsigned s = 0; s < plan_.nslots; ++s) {
    admitted += plan_.workers[s].admitted.load(std::memory_order_relaxed);
    denied += plan_.workers[s].denied.load(std::memory_order_relaxed);
  }
  const double rate = elapsed > 0 ? static_cast<double>(ops) / elapsed : 0;
  const std::string total =
      plan_.cfg.duration_s > 0 ? fmt::format("/{:.0f}s", plan_.cfg.duration_s) : "";
  const std::string line = fmt::format(
      "[{:6.1f}s{}] {} decisions ({} ops/s), admitted {}, denied {}, kills {}", elapsed, total,
      group(ops), rate_text(rate), group(admitted), group(denied), group(facts_.kills));
  if (tty) {
    std::fprintf(stderr, "\r\x1b[K%s", line.c_str());
  } else if (elapsed > 0) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void Runner::teardown() {
  if (plan_.control != nullptr && pids_.size() > 0) {
    plan_.control->stop.store(1);
    for (pid_t& pid : pids_) {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        pid = 0;
      }
    }
  }
  if (created_ && !plan_.cfg.keep) {
    try {
      shmlimit::Limiter::remove(name_);
    } catch (...) {
    }
    created_ = false;
  }
}

}  // namespace stress
