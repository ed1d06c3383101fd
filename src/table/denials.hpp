// The recent-denials ring: a fixed-capacity, multi-producer, many-reader
// ring of denied decisions inside the segment (layout.hpp: DenialRingHead,
// DenialEntry), read by `shmlimit watch` and `shmlimit denials`.
//
// Why not Boost.Lockfree (doc/design.md has the long version): its
// spsc_queue / queue with a compile-time capacity do keep their storage
// inline and their indices in lock-free atomics, but reading *consumes* an
// element (two watchers would steal each other's entries), a full queue
// refuses the newest element instead of dropping the oldest, and spsc_queue
// allows one producer where every worker process writes.
//
// Thread and process safety / invariants
//   (1) Only denied decisions write here; the admit path never touches the
//       ring. A denial costs one fetch_add on the ring's ticket counter (a
//       line shared by every denying process), one CAS claiming the entry,
//       relaxed stores of its fields and of the key's words (one cache line
//       for a key of up to 16 bytes) and a final release store. Writers
//       never wait: lock-free.
//   (2) Ticket t owns entry t & (entries - 1). Its seq word goes from
//       "t being written by pid P" (odd, layout.hpp) to 2t+2 (complete);
//       tickets only grow, so a writer whose entry already shows a newer
//       ticket (it was lapped) drops its own record, and one that finds an
//       unfinished entry of a live writer drops its own rather than mix
//       fields with it, however long that writer was preempted. An
//       unfinished entry whose writer died is taken over by the next ticket.
//   (3) Readers never write: a seqlock read (acquire seq, relaxed fields,
//       acquire fence, seq again) gives an untorn copy or a miss. Every
//       field is bounds-checked (policy index, key length), so a hostile
//       segment can make entries wrong, never make a reader misbehave.
//   (4) A reader's cursor is a ticket. Entries after the cursor that were
//       overwritten, torn or not yet complete when read are counted as lost.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "segment/layout.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

/// One denial as stored (the reader's copy).
struct DenialRecord {
  std::uint64_t ticket = 0;
  std::int64_t time_ns = 0;  // ns since the segment epoch
  std::uint32_t policy = 0;  // < kMaxPolicies
  Reason reason = Reason::kOk;
  std::uint32_t key_len = 0;  // the real key length (may exceed kDenialKeyBytes)
  std::uint32_t pid = 0;
  std::uint64_t cost = 0;
  std::uint64_t retry_after_ns = 0;  // saturated at 2^63 - 1 ("never")
  char key[kDenialKeyBytes] = {};    // min(key_len, kDenialKeyBytes) bytes
};

struct DenialRead {
  std::vector<DenialRecord> records;  // oldest first
  std::uint64_t next = 0;             // the cursor for the next read
  std::uint64_t lost = 0;             // tickets in [cursor, next) not returned
};

/// A ring inside a mapped segment (or any suitably aligned memory in tests).
class DenialRing {
 public:
  DenialRing(DenialRingHead* head, DenialEntry* entries) noexcept
      : head_(head), entries_(entries) {}
  /// The ring at `geometry.denials_offset` of a segment mapped at `base`.
  static DenialRing at(std::byte* base, const Geometry& geometry) noexcept;

  /// Records one denial. Lock-free; never blocks, never fails (a record that
  /// cannot be placed is dropped and shows up as lost to readers).
  void record(std::int64_t time_ns, std::uint32_t policy, Reason reason, std::string_view key,
              std::uint64_t cost, Nanos retry_after) noexcept;

  /// Copies the complete entries with tickets in [since, next). `since`
  /// beyond the newest ticket reads nothing and returns the current cursor.
  DenialRead read(std::uint64_t since) const;

  /// Tickets handed out so far.
  std::uint64_t next_ticket() const noexcept;

  DenialEntry& entry(std::uint64_t ticket) const noexcept {
    return entries_[ticket & (kDenialRingEntries - 1)];
  }

 private:
  DenialRingHead* head_;
  DenialEntry* entries_;
};

}  // namespace shmlimit::detail
