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
#include "table/hash.hpp"

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
  std::uint64_t repeats = 0;         // more denials this record stands for (DenialFold)
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
  /// `repeats`: how many more denials of the key the record stands for
  /// (DenialFold).
  void record(std::int64_t time_ns, std::uint32_t policy, Reason reason, std::string_view key,
              std::uint64_t cost, Nanos retry_after, std::uint64_t repeats = 0) noexcept;

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

/// How long a thread folds one key's repeated denials into its last record
/// of that key (DenialFold).
inline constexpr std::int64_t kDenialFoldNs = 100'000'000;
/// How many of a thread's folded fast-path denials of one key wait before
/// they are added to the key's per-key count at once (DenialFold::unposted).
inline constexpr std::uint64_t kDenialPostBatch = 64;
/// The most repeats a reader reports for one entry (a hostile segment's
/// larger value is clamped): 1024 entries' sums stay far below 2^64.
inline constexpr std::uint64_t kDenialMaxRepeats = std::uint64_t{1} << 40;

/// Folds a flood of one key's denials into few ring records, per thread
/// (doc/cli.md, "Recent denials"). A denial of the same handle, policy and
/// key (up to 16 bytes; longer keys are always recorded) as the thread's
/// last record, less than kDenialFoldNs after that record, is not written
/// to the ring: it is counted here. The key's next record, once the time
/// has passed, carries the count in `repeats`; when the thread is next
/// denied on another key, the last folded denial is recorded first, with
/// the rest of the count. So a flood costs the ring about one record per
/// key per thread per kDenialFoldNs instead of evicting every other record,
/// and costs each denial no locked instruction; the exact totals are the
/// counter blocks (counters.hpp), which count every denial. What the ring
/// does not show: the folded denials of a thread's last key until that
/// thread is denied again.
///
/// A function of its state and the caller's clock: no I/O, no atomics (the
/// state is thread-local; the owner clears it in a fork()ed child).
struct DenialFold {
  /// The denial to record, as step() was told it.
  struct Denial {
    std::int64_t time_ns = 0;
    std::uint32_t policy = 0;
    Reason reason = Reason::kOk;
    std::uint64_t cost = 0;
    Nanos retry_after{0};
  };
  /// What the caller writes to the ring, in order: `flush` (the previous
  /// key's last folded denial, `flush_repeats` more behind it) when
  /// has_flush, then this denial with `repeats` unless folded.
  struct Step {
    bool folded = false;
    std::uint64_t repeats = 0;
    bool has_flush = false;
    Denial flush;
    std::uint64_t flush_repeats = 0;
    std::uint32_t flush_len = 0;
    std::uint64_t flush_words[2] = {0, 0};
  };

  std::uint64_t handle = 0;         // the Limiter handle's unique id (never 0); 0: no key
  std::uint32_t len = 0;            // the key's length, <= 16
  std::uint64_t words[2] = {0, 0};  // its bytes, zero-padded
  std::int64_t recorded_at = 0;     // when the key was last recorded
  std::uint64_t folded = 0;         // its denials since then, not recorded
  Denial last;                      // the last of them
  // Folded denials whose per-key count (the slot's `denied`) is not written
  // yet, and the slot and word version they were decided on: the hot path
  // adds them at once (Limiter::Impl::post_denials), so a flood's refusal
  // writes no line shared with other processes. At most one key's.
  std::uint64_t unposted = 0;
  std::uint32_t post_slot = 0;
  std::uint64_t post_version = 0;

  /// The common case of a flood, inline: `d` repeats the key last recorded
  /// on handle `handle_id`, within kDenialFoldNs of that record. Counts it
  /// and returns true; false when step() must decide.
  /// Scalars, not a Denial, and `last` stored field by field: a struct
  /// built on the stack and copied with wide loads would stall on store
  /// forwarding on every denial of a flood.
  [[gnu::always_inline]] bool absorb(std::uint64_t handle_id, std::string_view key,
                                     std::int64_t time_ns, std::uint32_t policy, Reason reason,
                                     std::uint64_t cost, Nanos retry_after) noexcept {
    if (!repeats_recent(handle_id, key.size(), time_ns, policy)) return false;
    std::uint64_t w0 = 0, w1 = 0;
    load_words_upto16(key.data(), len, &w0, &w1);  // len <= 16: step keeps no longer key
    return fold_if_same(w0, w1, time_ns, reason, cost, retry_after);
  }
  /// absorb() of a key its caller has already packed (`w0`, `w1`: its
  /// bytes as load_words_upto16 reads them, as a ShortKey holds them): the
  /// hot path's, which does not read the key again.
  [[gnu::always_inline]] bool absorb_words(std::uint64_t handle_id, std::size_t key_len,
                                           std::uint64_t w0, std::uint64_t w1, std::int64_t time_ns,
                                           std::uint32_t policy, Reason reason, std::uint64_t cost,
                                           Nanos retry_after) noexcept {
    return repeats_recent(handle_id, key_len, time_ns, policy) &&
           fold_if_same(w0, w1, time_ns, reason, cost, retry_after);
  }
  /// After absorb_words(): the folded denial's per-key count is left to the
  /// caller's post (slot `slot`, word version `version`). Returns how many
  /// wait; the caller posts them at kDenialPostBatch.
  [[gnu::always_inline]] std::uint64_t defer_per_key(std::uint32_t slot,
                                                     std::uint64_t version) noexcept {
    post_slot = slot;
    post_version = version;
    return ++unposted;
  }
  /// Decides what to record for `d` of `key` on handle `handle_id` (after
  /// absorb() said no, or instead of it), and updates the state.
  Step step(std::uint64_t handle_id, std::string_view key, const Denial& d) noexcept;

 private:
  // The checks of absorb() that need no key bytes.
  [[gnu::always_inline]] bool repeats_recent(std::uint64_t handle_id, std::size_t key_len,
                                             std::int64_t time_ns,
                                             std::uint32_t policy) const noexcept {
    return handle == handle_id && key_len == len && last.policy == policy &&
           time_ns >= recorded_at && time_ns - recorded_at < kDenialFoldNs;
  }
  [[gnu::always_inline]] bool fold_if_same(std::uint64_t w0, std::uint64_t w1, std::int64_t time_ns,
                                           Reason reason, std::uint64_t cost,
                                           Nanos retry_after) noexcept {
    if (w0 != words[0] || w1 != words[1]) return false;
    ++folded;
    last.time_ns = time_ns;
    last.reason = reason;
    last.cost = cost;
    last.retry_after = retry_after;
    return true;
  }
};

}  // namespace shmlimit::detail
