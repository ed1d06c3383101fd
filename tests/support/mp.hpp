// Helpers for tests that fork real processes sharing a real segment.
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {

/// A unique segment name for this process and call, removed on destruction.
class ScopedName {
 public:
  explicit ScopedName(const std::string& tag) {
    static std::atomic<int> counter{0};
    name_ =
        "/shmlimit-mp-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    Limiter::remove(name_);
  }
  ~ScopedName() {
    try {
      Limiter::remove(name_);
    } catch (...) {
    }
  }
  ScopedName(const ScopedName&) = delete;
  ScopedName& operator=(const ScopedName&) = delete;
  const std::string& str() const { return name_; }

 private:
  std::string name_;
};

/// An anonymous MAP_SHARED block that survives fork(): the parent and its
/// children see the same T (which must be made of lock-free atomics).
template <typename T>
class Shared {
 public:
  explicit Shared(std::size_t n = 1) : n_(n) {
    void* p =
        ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    ptr_ = static_cast<T*>(p);
    for (std::size_t i = 0; i < n; ++i) new (ptr_ + i) T{};
  }
  ~Shared() { ::munmap(ptr_, sizeof(T) * n_); }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  T& operator[](std::size_t i) const { return ptr_[i]; }
  T* operator->() const { return ptr_; }
  T& operator*() const { return *ptr_; }

 private:
  T* ptr_;
  std::size_t n_;
};

/// Spins (yielding) until `flag` reaches `value`.
inline void wait_for(const std::atomic<std::uint64_t>& flag, std::uint64_t value) {
  while (flag.load(std::memory_order_acquire) < value) ::sched_yield();
}

/// A virtual clock shared by a parent and its workers (place it in a
/// Shared<PhaseClock>): the parent moves time forward only while every
/// worker waits, so no reading is stale and each phase's allowance is exact.
struct PhaseClock {
  std::atomic<std::uint64_t> phase{0};
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::int64_t> now_ns{0};

  /// Worker: waits for phase `p` (0-based) and returns its time.
  std::chrono::nanoseconds enter(int p) {
    wait_for(phase, static_cast<std::uint64_t>(p) + 1);
    return std::chrono::nanoseconds(now_ns.load(std::memory_order_acquire));
  }
  /// Worker: reports phase done.
  void leave() { done.fetch_add(1, std::memory_order_acq_rel); }
  /// Parent: runs phase `p` at `t_ns` and waits for all `workers`.
  void run(int p, std::int64_t t_ns, int workers) {
    now_ns.store(t_ns, std::memory_order_release);
    phase.store(static_cast<std::uint64_t>(p) + 1, std::memory_order_release);
    wait_for(done, static_cast<std::uint64_t>(workers) * (static_cast<std::uint64_t>(p) + 1));
  }
};

/// Forks `n` children running fn(i); each child exits with fn's return
/// value (an exception exits 100). Returns the pids.
inline std::vector<pid_t> fork_workers(int n, const std::function<int(int)>& fn) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      int rc = 100;
      try {
        rc = fn(i);
      } catch (...) {
        rc = 100;
      }
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  return pids;
}

/// Waits for every pid; returns the number that did not exit with status 0
/// (killed ones count as failures unless `killed_ok`).
inline int wait_all(const std::vector<pid_t>& pids, bool killed_ok = false) {
  int bad = 0;
  for (pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    if (killed_ok && WIFSIGNALED(status)) continue;
    ++bad;
  }
  return bad;
}

/// Parent side of a kill storm: keeps `workers` children running `body`
/// (which never returns), SIGKILLs a random one every 100-1000 µs and forks
/// a replacement, until `kills` kills were made. Returns the number of
/// children that ended other than by the parent's SIGKILL.
inline int kill_storm(int workers, int kills, const std::function<int(int)>& body,
                      std::uint64_t seed = 12345) {
  std::mt19937_64 rng(seed);
  std::vector<pid_t> pids;
  for (int i = 0; i < workers; ++i) pids.push_back(fork_workers(1, body)[0]);
  int bad = 0;
  for (int k = 0; k < kills; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(100 + rng() % 900));
    const std::size_t victim = rng() % pids.size();
    ::kill(pids[victim], SIGKILL);
    bad += wait_all({pids[victim]}, true);
    pids[victim] = fork_workers(1, body)[0];
  }
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  return bad + wait_all(pids, true);
}

}  // namespace shmlimit::test
