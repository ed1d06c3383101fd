// Exact, monotonic per-policy totals of admitted and denied decisions,
// without a locked instruction on the hot path (layout.hpp, "Counter
// blocks", has the bytes).
//
// Design
//   A global counter shared by every process would serialise every core on
//   one cache line; per-slot counters lose what a reclaimed slot held (the
//   totals went down). Instead each writer owns a block of per-policy
//   {admitted, denied} words in the segment and adds to them with a relaxed
//   load and a relaxed store; readers sum every block.
//
// Thread safety / invariants
//   (1) One writer per block. A block is registered per (thread, Limiter
//       handle): the thread takes it by CAS of `owner` (0 or a dead
//       process's token -> our token) and caches it in a thread_local.
//       Two threads never share a block, so the load + store of a counter
//       never loses an increment.
//   (2) Never zeroed, never folded. A block is given back (owner = 0, a
//       release store after the owner's last count) when its thread exits
//       or its handle is destroyed, and a block whose process died is taken
//       over as it is: the next owner continues from the values it finds.
//       Each counter only grows, so every sum a reader takes is at least
//       the previous one, and no decision is counted twice.
//   (3) A process killed between a decision and its count loses that one
//       count (at most one per thread in flight); nothing else is lost.
//   (4) Fork: the child gets new blocks (its own token), never writes or
//       frees its parent's. A pthread_atfork child handler clears the
//       forking thread's cache; registrations remember their pid.
//   (5) A thread's exit never touches a segment that was unmapped: it frees
//       its blocks only for handles still in the process-wide registry of
//       live handles, under the registry's mutex, which a handle's
//       destructor also takes before it unmaps.
//   (6) When every block is taken the thread shares block 0 and adds with
//       fetch_add: still exact, a shared line only past kCounterBlocks - 1
//       concurrent registrants.
//
// Progress: add() is wait-free once a thread has its block; the first
// count of a (thread, handle) registers under a process-local mutex and
// scans the blocks (reading /proc only when no block is free).
#pragma once

#include <atomic>
#include <cstdint>

#include "segment/layout.hpp"

namespace shmlimit::detail {

/// The counter cache of one thread: the block of the handle it counted for
/// last. Trivially destructible and zero-initialised, so the hot path reads
/// it without a guard; a miss goes to CounterBlocks::block_slow().
struct CounterCache {
  std::uint64_t handle = 0;  // CounterBlocks::id() of the handle, 0 = none
  CounterBlock* block = nullptr;
  bool shared = false;  // block 0: add with fetch_add
};
inline thread_local CounterCache t_counter_cache;

struct PolicyTotals {
  std::uint64_t admitted = 0;
  std::uint64_t denied = 0;
};

/// The counter blocks of one Limiter handle.
class CounterBlocks {
 public:
  CounterBlocks(std::byte* base, const Geometry& g, bool read_only);
  ~CounterBlocks();
  CounterBlocks(const CounterBlocks&) = delete;
  CounterBlocks& operator=(const CounterBlocks&) = delete;

  /// Counts one decision of `policy` (< kMaxPolicies). Thread-safe,
  /// wait-free after the thread's first count; noexcept. Nothing on a
  /// read-only handle.
  [[gnu::always_inline]] void add(std::uint32_t policy, bool allowed) noexcept {
    CounterCache c = t_counter_cache;
    if (c.handle != id_) [[unlikely]] {
      c = block_slow();
      if (c.block == nullptr) return;
    }
    PolicyCounter& pc = c.block->counts[policy & (kMaxPolicies - 1)];
    AtomicU64& n = allowed ? pc.admitted : pc.denied;
    if (!c.shared) [[likely]] {
      // Relaxed load and store: this thread is the block's only writer
      // (invariant 1), so no increment can be lost between them; readers
      // need no order with any other memory (a statistic), and a later
      // owner sees the value through the owner CAS (invariant 2).
      n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    } else {
      n.fetch_add(1, std::memory_order_relaxed);  // Relaxed: the shared overflow block, a statistic
    }
  }

  /// The totals of `policy` over every block. O(kCounterBlocks); never writes.
  PolicyTotals totals(std::uint32_t policy) const noexcept;

  std::uint64_t id() const noexcept { return id_; }

 private:
  // Finds or registers this thread's block; fills t_counter_cache.
  [[gnu::noinline]] CounterCache block_slow() noexcept;
  std::uint32_t take_block() noexcept;

  CounterBlock* blocks_;
  std::uint64_t id_;  // unique in the process, never reused (invariant 5)
  bool read_only_;
  friend struct CounterRegistry;
};

}  // namespace shmlimit::detail
