// Concurrency leases (Algorithm::kConcurrency): at most N units in flight
// per key, held by RAII Lease objects, reclaimed when their holder dies.
// doc/design.md ("Leases") has the long version; the bytes are in
// layout.hpp and doc/segment-format.md.
//
// State. The slot's word payload is
//   bits 0-23   in-flight count, cost units
//   bits 24-25  pending op: 0 none, 1 acquire, 2 release
//   bits 26-33  registry entry of the record the pending op belongs to
//   bits 34-39  record index in that entry's LeaseArea
//   bits 40-53  the record's seq (low 14 bits)
// and every held lease is one record {ctl, cost} in its process's LeaseArea
// (ctl: state FREE / INTENT / HELD / RELEASING, seq, slot generation, slot).
//
// Invariants
//   (1) The count changes only by a CAS that also installs a pending
//       descriptor naming the record that explains the change; nobody
//       changes a word that has a pending descriptor except to complete it
//       (help: move the named record INTENT -> HELD or RELEASING -> FREE,
//       then CAS the descriptor away). So "the count moved" and "the record
//       says so" commit together: a record is INTENT with its descriptor
//       still in the word exactly when its increment landed and nobody
//       has finished it yet.
//   (2) Recovery of a dead process's records is serialised by taking over
//       its registry entry (CAS owner: dead token -> our token | kRecovering)
//       and decides per record from the word (read first, acquire) and the
//       record (read second):
//         INTENT    + word pending == record  -> landed: help, then release
//         INTENT    + otherwise                -> never landed: drop
//         HELD                                 -> release
//         RELEASING + word pending == record  -> landed: help
//         RELEASING + otherwise                -> never landed: release
//       A helper marks the record before clearing the descriptor, so once
//       the word shows no descriptor the record shows the outcome.
//   (3) A record also names the slot generation: a count forgotten by
//       reset (the slot's version moved) is never decremented on the key
//       that has the slot next.
//   (4) The bucket is full (reclaimable) only when payload == 0: nothing
//       in flight, nothing pending.
//
// Thread and process safety: every function is safe from any number of
// processes and threads at once; acquire/release are lock-free (a pending
// descriptor left by a stalled or dead process is completed by whoever
// meets it).
#pragma once

#include <cstdint>

#include "segment/layout.hpp"
#include "shmlimit/shmlimit.hpp"
#include "table/table.hpp"

namespace shmlimit::detail {

// ---- the word's payload ----------------------------------------------------
enum class LeaseOp : std::uint64_t { kNone = 0, kAcquire = 1, kRelease = 2 };

struct LeasePending {
  LeaseOp op = LeaseOp::kNone;
  std::uint32_t entry = 0;   // registry entry, < kMaxProcesses
  std::uint32_t record = 0;  // < kLeaseRecords
  std::uint32_t seq = 0;     // 14 bits
  friend bool operator==(const LeasePending&, const LeasePending&) = default;
};

inline constexpr std::uint64_t kLeaseCountMask = (std::uint64_t{1} << 24) - 1;
inline constexpr std::uint32_t kLeaseSeqMask = (1u << 14) - 1;

inline constexpr std::uint64_t lease_count(std::uint64_t payload) {
  return payload & kLeaseCountMask;
}
inline constexpr LeasePending lease_pending(std::uint64_t payload) {
  return LeasePending{static_cast<LeaseOp>((payload >> 24) & 3),
                      static_cast<std::uint32_t>((payload >> 26) & 0xFF),
                      static_cast<std::uint32_t>((payload >> 34) & 0x3F),
                      static_cast<std::uint32_t>((payload >> 40) & kLeaseSeqMask)};
}
inline constexpr std::uint64_t lease_payload(std::uint64_t count, const LeasePending& p) {
  return (count & kLeaseCountMask) | (static_cast<std::uint64_t>(p.op) << 24) |
         (std::uint64_t{p.entry & 0xFF} << 26) | (std::uint64_t{p.record & 0x3F} << 34) |
         (std::uint64_t{p.seq & kLeaseSeqMask} << 40);
}
static_assert(kMaxProcesses <= 256 && kLeaseRecords <= 64,
              "the descriptor has 8 bits of entry, 6 of record");

// ---- a record's control word ----------------------------------------------
enum LeaseState : std::uint64_t {
  kLeaseFree = 0,
  kLeaseIntent = 2,
  kLeaseHeld = 3,
  kLeaseReleasing = 4
};
inline constexpr std::uint64_t kLeaseGenMask = (std::uint64_t{1} << 19) - 1;

struct LeaseCtl {
  static constexpr std::uint64_t make(std::uint64_t state, std::uint64_t seq, std::uint64_t gen,
                                      std::uint64_t slot) {
    return state | ((seq & kLeaseSeqMask) << 3) | ((gen & kLeaseGenMask) << 17) | (slot << 36);
  }
  static constexpr std::uint64_t state(std::uint64_t c) { return c & 7; }
  static constexpr std::uint32_t seq(std::uint64_t c) {
    return static_cast<std::uint32_t>((c >> 3) & kLeaseSeqMask);
  }
  static constexpr std::uint64_t gen(std::uint64_t c) { return (c >> 17) & kLeaseGenMask; }
  static constexpr std::uint32_t slot(std::uint64_t c) {
    return static_cast<std::uint32_t>(c >> 36);
  }
  static constexpr std::uint64_t with_state(std::uint64_t c, std::uint64_t s) {
    return (c & ~std::uint64_t{7}) | s;
  }
};

/// A registry owner value with this bit is a process recovering that
/// entry's lease records (the rest is its token); pids are below 2^22.
inline constexpr std::uint64_t kRecoveringBit = std::uint64_t{1} << 63;

// ---- pure transitions (tested as tables) -----------------------------------
struct LeaseStep {
  bool ok = false;  // the CAS to new_payload should be tried
  std::uint64_t new_payload = 0;
  Decision decision;  // what the caller reports if this CAS lands (or the denial)
};

/// Acquire `cost` of `limit` on a payload without a pending descriptor:
/// count + cost <= limit -> (count + cost, pending = me), else denied.
LeaseStep lease_acquire_step(std::uint64_t payload, std::uint64_t limit, std::uint64_t cost,
                             const LeasePending& me) noexcept;
/// Release `cost` (never below 0): (count - cost, pending = me).
LeaseStep lease_release_step(std::uint64_t payload, std::uint64_t cost,
                             const LeasePending& me) noexcept;
/// The payload with its pending descriptor completed (count kept).
inline constexpr std::uint64_t lease_cleared(std::uint64_t payload) { return lease_count(payload); }
/// The state as a decision (a peek): limit, remaining, allowed = one more fits.
Decision lease_report(std::uint64_t payload, std::uint64_t limit) noexcept;

enum class LeaseRecovery {
  kNothing,          // FREE
  kDrop,             // never landed, or the slot moved on: free the record
  kHelpThenRelease,  // the increment landed: complete it, then release
  kRelease,          // held (or a release that never landed): release
  kHelp,             // the decrement landed: complete it
};
/// What recovery does with a dead process's record in `state`, given
/// whether the slot's word (read first) still has the record's generation
/// and whether its pending descriptor names this record.
LeaseRecovery lease_recovery(std::uint64_t state, bool same_generation,
                             bool pending_is_record) noexcept;

// ---- the protocol on the segment --------------------------------------------
/// Test hook: called at each step of acquire and release (a test makes it
/// raise SIGKILL to die exactly there). Null in production.
enum class LeaseFault {
  kAfterIntent,
  kAfterWordCas,
  kAfterHeld,
  kAfterReleasing,
  kAfterReleaseCas
};
extern void (*g_lease_fault)(LeaseFault) noexcept;

class Leases {
 public:
  Leases(Table* table, LeaseArea* areas) noexcept : table_(table), areas_(areas) {}

  enum class Result { kGranted, kDenied, kRelookup, kNoRecord };
  /// Acquires `cost` of `limit` on the live slot `ref` for registry entry
  /// `entry` (ours). kRelookup: the slot moved to another generation.
  Result acquire(const SlotRef& ref, std::uint32_t entry, std::uint64_t limit, std::uint64_t cost,
                 std::uint32_t* record, std::uint64_t* ctl, Decision* decision) noexcept;
  /// Releases the record acquire() returned. False if it no longer holds `ctl`.
  bool release(std::uint32_t entry, std::uint32_t record, std::uint64_t ctl) noexcept;
  /// Completes whatever pending descriptor `word` (slot `index`) holds.
  void help(std::uint32_t index, std::uint64_t word) noexcept;
  /// Recovers every record of `entry`, whose owner word the caller holds
  /// (a dead process's entry). Returns the records released or dropped.
  std::uint32_t recover(std::uint32_t entry) noexcept;
  /// True if `entry` has an allocated record on slot `index`.
  bool holds_slot(std::uint32_t entry, std::uint32_t index) const noexcept;
  /// True if `entry` has any allocated record.
  bool holds_any(std::uint32_t entry) const noexcept;

 private:
  // Moves a RELEASING record's cost out of its slot and frees it.
  void finish_release(std::uint32_t entry, std::uint32_t record, std::uint64_t ctl) noexcept;
  void free_record(std::uint32_t entry, std::uint32_t record, std::uint64_t ctl) noexcept;
  void clear_pending(std::uint32_t index, std::uint64_t word) noexcept;
  bool same_generation(std::uint64_t ctl, std::uint64_t word) const noexcept;

  Table* table_;
  LeaseArea* areas_;
};

}  // namespace shmlimit::detail
