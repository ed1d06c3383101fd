// Counter blocks: registration, release and sums (counters.hpp has the
// protocol and its invariants).
#include "limiter/counters.hpp"

#include <pthread.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include "segment/process.hpp"

namespace shmlimit::detail {

namespace {

std::atomic<std::uint64_t> g_next_handle{1};  // Relaxed: only uniqueness matters

struct Registration {
  std::uint64_t handle = 0;
  std::uint32_t block = 0;
  std::uint32_t pid = 0;  // the process that took it (a fork()ed child's copy is not its own)
};

}  // namespace

// The live handles of this process and the blocks each handed out, under
// one mutex (invariant 5). Never destroyed: a thread may exit, or a static
// Limiter be destroyed, after static destructors began.
struct CounterRegistry {
  struct Handle {
    CounterBlocks* blocks = nullptr;
    std::vector<Registration> owned;
  };
  std::mutex mu;
  std::unordered_map<std::uint64_t, Handle> live;

  static CounterRegistry& get() {
    static CounterRegistry* const r = [] {
      auto* reg = new CounterRegistry;
      // fork() while another thread holds `mu` would leave it locked forever
      // in the child: hold it across fork(). The child's forking thread
      // forgets its cached block (invariant 4).
      ::pthread_atfork([] { get().mu.lock(); }, [] { get().mu.unlock(); },
                       [] {
                         t_counter_cache = CounterCache{};
                         get().mu.unlock();
                       });
      return reg;
    }();
    return *r;
  }

  // Frees block `r.block` of a live handle; `mu` held.
  void release(const Registration& r) {
    const auto it = live.find(r.handle);
    if (it == live.end()) return;  // the handle is gone, and its segment may be unmapped
    auto& owned = it->second.owned;
    for (auto o = owned.begin(); o != owned.end(); ++o) {
      if (o->block == r.block && o->pid == r.pid) {
        // Release: the owner's last counts are visible to whoever takes the
        // block next (its CAS acquires).
        it->second.blocks->blocks_[r.block].owner.store(0, std::memory_order_release);
        owned.erase(o);
        return;
      }
    }
  }
};

namespace {

// This thread's registrations; touched only off the hot path.
struct ThreadRegistrations {
  std::vector<Registration> regs;
  ~ThreadRegistrations();
};
thread_local ThreadRegistrations t_regs;
thread_local bool t_exiting = false;  // t_regs is destroyed (or being destroyed)

ThreadRegistrations::~ThreadRegistrations() {
  t_exiting = true;
  t_counter_cache = CounterCache{};
  if (regs.empty()) return;
  const std::uint32_t pid = token_pid(self_token());
  CounterRegistry& reg = CounterRegistry::get();
  std::lock_guard<std::mutex> lock(reg.mu);
  for (const Registration& r : regs) {
    if (r.pid == pid) reg.release(r);
  }
}

}  // namespace

CounterBlocks::CounterBlocks(std::byte* base, const Geometry& g, bool read_only)
    : blocks_(reinterpret_cast<CounterBlock*>(base + g.counters_offset)),
      id_(g_next_handle.fetch_add(1, std::memory_order_relaxed)),
      read_only_(read_only) {
  CounterRegistry& reg = CounterRegistry::get();
  std::lock_guard<std::mutex> lock(reg.mu);
  reg.live[id_].blocks = this;
}

CounterBlocks::~CounterBlocks() {
  if (t_counter_cache.handle == id_) t_counter_cache = CounterCache{};
  const std::uint32_t pid = token_pid(self_token());
  CounterRegistry& reg = CounterRegistry::get();
  std::lock_guard<std::mutex> lock(reg.mu);
  const auto it = reg.live.find(id_);
  if (it == reg.live.end()) return;
  for (const Registration& r : it->second.owned) {
    // Release: as CounterRegistry::release. A fork()ed child's copy of the
    // handle frees only the blocks its own process took.
    if (r.pid == pid) blocks_[r.block].owner.store(0, std::memory_order_release);
  }
  reg.live.erase(it);
}

std::uint32_t CounterBlocks::take_block() noexcept {
  const ProcessToken me = self_token();
  // A free block first. Acquire on success: the counts its last owner
  // stored (before its release store of 0) are the ones we continue from.
  for (std::uint32_t i = 1; i < kCounterBlocks; ++i) {
    std::uint64_t owner = blocks_[i].owner.load(std::memory_order_relaxed);
    if (owner == 0 && blocks_[i].owner.compare_exchange_strong(owner, me, std::memory_order_acquire,
                                                               std::memory_order_relaxed)) {
      return i;
    }
  }
  // Then a block whose process died (one /proc read per distinct owner
  // checked). The dead owner made no release store; its last counter store
  // left its CPU's store buffer when the kernel switched away from it, before
  // /proc could report it dead, so the acquire CAS after our /proc read
  // continues from its last value. Our own process's blocks belong to our
  // other threads: never taken here.
  for (std::uint32_t i = 1; i < kCounterBlocks; ++i) {
    std::uint64_t owner = blocks_[i].owner.load(std::memory_order_relaxed);
    if (owner != 0 && owner != me && token_is_dead(owner) &&
        blocks_[i].owner.compare_exchange_strong(owner, me, std::memory_order_acquire,
                                                 std::memory_order_relaxed)) {
      return i;
    }
  }
  return 0;  // every block taken: share the overflow block (invariant 6)
}

CounterCache CounterBlocks::block_slow() noexcept {
  if (read_only_) return CounterCache{};
  if (t_exiting)
    return CounterCache{id_, &blocks_[0], true};  // counted after this thread's exit began
  const std::uint32_t pid = token_pid(self_token());
  CounterCache c{id_, &blocks_[0], true};
  bool found = false;
  for (const Registration& r : t_regs.regs) {
    if (r.handle == id_ && r.pid == pid) {
      c = CounterCache{id_, &blocks_[r.block], r.block == 0};
      found = true;
      break;
    }
  }
  if (!found) {
    CounterRegistry& reg = CounterRegistry::get();
    std::lock_guard<std::mutex> lock(reg.mu);
    try {
      // Forget registrations of handles that are gone, or of the parent
      // process (fork), so the list stays as short as the live handles.
      std::erase_if(t_regs.regs, [&](const Registration& r) {
        return r.pid != pid || !reg.live.contains(r.handle);
      });
      auto& owned = reg.live.at(id_).owned;
      t_regs.regs.reserve(t_regs.regs.size() + 1);
      owned.reserve(owned.size() + 1);
      // Allocations done: nothing below throws, so a block taken is recorded.
      const std::uint32_t b = take_block();
      t_regs.regs.push_back(Registration{id_, b, pid});
      if (b != 0) owned.push_back(Registration{id_, b, pid});
      c = CounterCache{id_, &blocks_[b], b == 0};
    } catch (...) {
      // No memory for the bookkeeping: count through the shared block.
      return CounterCache{id_, &blocks_[0], true};
    }
  }
  t_counter_cache = c;
  return c;
}

PolicyTotals CounterBlocks::totals(std::uint32_t policy) const noexcept {
  PolicyTotals t;
  const std::uint32_t p = policy & (kMaxPolicies - 1);
  for (std::uint32_t i = 0; i < kCounterBlocks; ++i) {
    // Relaxed: each counter only grows (invariant 2); a sum of them read
    // while decisions go on is a value each passed through or a later one.
    t.admitted += blocks_[i].counts[p].admitted.load(std::memory_order_relaxed);
    t.denied += blocks_[i].counts[p].denied.load(std::memory_order_relaxed);
  }
  return t;
}

}  // namespace shmlimit::detail
