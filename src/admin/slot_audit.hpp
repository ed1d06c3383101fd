// The slot auditor: one audit of the bucket table's slots, used by
// Limiter::check (an open segment, with repair) and by the raw checker of
// segments that do not open (check_segment.cpp), so both name a problem
// with the same sentence.
//
// Safety: reads only (a repair is the caller's hook), and only slots below
// `readable` (a truncated file holds fewer than capacity). Every field read
// is range-checked before it is used: key lengths against the slot's key
// capacity, policies against the registered count. Not thread-safe itself
// (one auditor per audit); safe against concurrent writers to the segment,
// which can only make the report inconsistent (a torn read is retried as
// a seqlock read, then counted as a claim in progress).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "table/table.hpp"

namespace shmlimit::detail {

/// "0x" and 16 hex digits.
std::string hex(u64 v);

class SlotAuditor {
 public:
  /// Receives each problem, one sentence starting "slot N: " (or "slots N
  /// and M: ...").
  using Sink = std::function<void(std::string)>;
  /// Repairs slot `index` whose owner token is dead (or impossible);
  /// true when it did, and the audit goes on with the repaired slot.
  using RepairDeadOwner = std::function<bool(std::uint32_t index)>;
  /// A further check of a consistent LIVE slot; a non-empty result is a
  /// problem (after "slot N: ").
  using CheckLive = std::function<std::string(std::uint32_t index, u64 meta, u64 word)>;

  /// `table` views the slot array of a segment of geometry `g` whose hash
  /// seed is `seed` and whose first `registered` policy entries are in use.
  SlotAuditor(const Table& table, const Geometry& g, u64 seed, std::uint32_t registered, Sink sink);

  /// Slots from `readable` on are not read (default: capacity).
  void set_readable(std::uint32_t readable) { readable_ = readable; }
  /// Without a repair hook, dead owners are reported.
  void set_repair(RepairDeadOwner repair) { repair_ = std::move(repair); }
  void set_check_live(CheckLive check) { check_live_ = std::move(check); }

  /// Audits one slot (index < readable).
  void audit(std::uint32_t index);
  /// Audits every readable slot, then reports keys held twice.
  void audit_all();

  std::uint64_t live() const { return live_; }
  std::uint64_t in_progress() const { return in_progress_; }
  std::uint64_t repaired() const { return repaired_; }

 private:
  struct Seen {
    std::uint32_t policy;
    std::string key;
    std::uint32_t slot;
  };

  const Table& table_;
  std::uint32_t capacity_;
  std::uint32_t max_probe_;
  std::uint32_t key_capacity_;
  u64 seed_;
  std::uint32_t registered_;
  std::uint32_t readable_;
  Sink sink_;
  RepairDeadOwner repair_;
  CheckLive check_live_;
  std::vector<Seen> seen_;
  std::uint64_t live_ = 0;
  std::uint64_t in_progress_ = 0;
  std::uint64_t repaired_ = 0;
};

}  // namespace shmlimit::detail
