// The hybrid tier's lease pool: the host's leased tokens, one slot per
// (policy, key), in a segment of the core's own making. NAME.lease is a
// detail::Segment of kind kLeasePool (the core header, layout fingerprint,
// race-safe creation, space reserved at create, refusal of FIFOs and of
// strangers), its slots are the core detail::Table (claim, find, reclaim,
// repair of dead claimers by process token), and every process that holds
// a lease is named by its detail::ProcessToken (pid + start time).
//
// Thread and process safety / invariants
//   (1) A slot's key is "<policy name>\0<key>" (the policy's name, not its
//       index: processes may register policies in different orders), placed
//       by Table::claim under the table's protocol (table.hpp). Keys longer
//       than the slot's key capacity (216 bytes) get no slot.
//   (2) The pool word is the slot's table word: version(8) | payload(56),
//       changed only by CAS from the exact word read while the slot showed
//       that version. A reclaim moves the version on, so a take or a deposit
//       prepared for the slot's previous key fails and never moves the new
//       key's tokens (the table's ABA guard, table.hpp invariant 2).
//       payload: bits 20-55 expiry, ms since the pool's epoch (36 bits,
//                2.2 years); bits 0-19 leased tokens (< max_batch <= 2^20).
//   (3) A slot is reclaimable (the table's "full bucket") once it holds no
//       live token: 0 tokens, or expired. So the slots of gone keys are
//       reused, and a reclaim never discards a token a worker could spend.
//       A lease in flight on a reclaimed slot cannot deposit (2): its
//       tokens are stranded, which is under-admission only.
//   (4) Side words: kLeaseSideWords 64-bit atomics per slot, in the region
//       a limiter segment uses for its sliding log (Geometry::log_offset,
//       log_entries = kLeaseSideWords). Every side word but the leaser's is
//       tagged with the slot version it was written for (bits 56-63) and is
//       ignored under another version, so what was written for a slot's old
//       key (a cached denial above all) never applies to its new key.
//   (5) The leaser word holds the ProcessToken of the one process asking
//       Redis for a batch now (0: none). A holder is replaced when its token
//       is dead (token_is_dead: exited, zombie, or its pid reused) or when
//       it has held the word longer than a Redis call can take (leaser_since).
//   (6) Nothing here can wedge: a dead or stalled leaser is replaced, a dead
//       claimer is repaired by the table, a full table or a busy claim only
//       sends the decision to Redis directly.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "segment/clock.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "table/table.hpp"

namespace shmlimit::detail {

// ---- the pool word (invariant 2) -------------------------------------------
inline constexpr u64 kPoolTokenBits = 20;
inline constexpr u64 kPoolTokenMask = (u64{1} << kPoolTokenBits) - 1;
inline constexpr u64 kPoolExpiryBits = Word::kPayloadBits - kPoolTokenBits;
/// Times in the pool are ms since its epoch and stay below this: past it the
/// host leases nothing and every decision goes to Redis.
inline constexpr u64 kPoolHorizonMs = (u64{1} << kPoolExpiryBits) - 1;
static_assert(kPoolExpiryBits == 36, "doc/redis.md states the pool's 36-bit ms horizon");

inline constexpr u64 pool_payload(u64 expiry_ms, u64 tokens) {
  return (expiry_ms << kPoolTokenBits) | tokens;
}
inline constexpr u64 pool_tokens(u64 payload) { return payload & kPoolTokenMask; }
inline constexpr u64 pool_expiry(u64 payload) { return payload >> kPoolTokenBits; }
/// Tokens a worker may spend at `now_ms`.
inline constexpr u64 pool_live_tokens(u64 payload, u64 now_ms) {
  return pool_expiry(payload) > now_ms ? pool_tokens(payload) : 0;
}

// ---- side words (invariant 4) ----------------------------------------------
enum LeaseSide : u32 {
  kSideLeaser = 0,  // ProcessToken of the process leasing now, 0 if none (untagged, invariant 5)
  kSideLeaserSince =
      1,           // ms since the epoch when the leaser took the word; 0 until it has written it
  kSideBatch = 2,  // tagged: next lease size, 1..max_batch (0: not yet set)
  kSideLastLease = 3,  // tagged: ms of the last lease
  kSideDeny = 4,       // tagged: until ms << 20 | smallest denied cost: Redis said no until then
  kSideFullAt = 5,     // tagged: ms when Redis's bucket is full again (last lease), for reset_after
};
inline constexpr u32 kLeaseSideWords = 8;  // 6 used, 2 reserved: one 64-byte line per slot
inline constexpr u32 kLeaseSlotBytes = 256;

inline constexpr u64 side_tag(u64 version, u64 value) {
  return (version << 56) | (value & Word::kPayloadMask);
}
/// The value of a tagged side word, or 0 if it was written for another version.
inline constexpr u64 side_value(u64 word, u64 version) {
  return (word >> 56) == version ? (word & Word::kPayloadMask) : 0;
}

/// Reclaim rule (invariant 3): a slot holding no live token.
class SpentPool final : public ReclaimPolicy {
 public:
  bool is_full(std::uint32_t /*policy*/, std::uint64_t payload,
               std::int64_t now_ms) const noexcept override {
    return pool_live_tokens(payload, static_cast<u64>(now_ms)) == 0;
  }
};

class LeasePool {
 public:
  /// Opens `name` (the hybrid's NAME.lease), creating it with `slots` slots
  /// (rounded up to a power of two) if absent; any number of processes may
  /// race. Throws shmlimit::Error as Segment::open does, and
  /// Error(kIncompatible) for a pool of another slot layout.
  LeasePool(const std::string& name, std::uint32_t slots, mode_t mode)
      : seg_(Segment::open(options(name, slots, mode), Segment::Mode::kOpenOrCreate,
                           SegmentKind::kLeasePool)),
        table_(seg_->base() + seg_->geometry().slot_offset, seg_->geometry()) {
    const Geometry& g = seg_->geometry();
    if (g.slot_bytes != kLeaseSlotBytes || g.log_entries != kLeaseSideWords) {
      throw Error(ErrorCode::kIncompatible,
                  "cannot use the lease pool " + name + ": it has " + std::to_string(g.slot_bytes) +
                      "-byte slots and " + std::to_string(g.log_entries) +
                      " side words per slot, not " + std::to_string(kLeaseSlotBytes) + " and " +
                      std::to_string(kLeaseSideWords));
    }
  }

  static std::string name_of(std::string_view hybrid_name) {
    return std::string(hybrid_name) + ".lease";
  }

  /// ms since the pool's epoch (CLOCK_MONOTONIC), plus 1: a time is never
  /// 0, so 0 in a side word means "never". Wait-free.
  u64 now_ms() const noexcept {
    return static_cast<u64>((segment_clock_ns() - seg_->epoch_raw_ns()) / 1'000'000) + 1;
  }

  /// The live slot of (policy, key). Wait-free. False: none (or too long).
  bool find(std::string_view policy, std::string_view key, SlotRef* out) const noexcept {
    PackedKey k(0, 0, {});
    return pack(policy, key, &k) && table_.find(k, out);
  }
  /// Finds or claims the slot of (policy, key), reclaiming a spent slot if
  /// needed. False: no slot (table full on the probe path, a claimer stalled
  /// past `timeout_ns`, or the key is too long). Lock-free (table.hpp).
  bool claim(std::string_view policy, std::string_view key, u64 now_ms, std::int64_t timeout_ns,
             SlotRef* out) noexcept {
    PackedKey k(0, 0, {});
    if (!pack(policy, key, &k)) return false;
    ClaimEvents events;
    const Table::ClaimResult r =
        table_.claim(k, static_cast<std::int64_t>(now_ms), /*fresh_payload=*/0, spent_, timeout_ns,
                     out, &events);
    return r == Table::ClaimResult::kFound || r == Table::ClaimResult::kClaimed;
  }

  /// The pool word of slot `index` (invariant 2).
  AtomicU64& pool(std::uint32_t index) const noexcept { return table_.head(index).word; }
  /// Changes the pool word of slot `index` while it keeps `version`: the
  /// core's one version-checked CAS loop (Table::update, invariant 2).
  /// Relaxed: the word is self-contained (its tokens are a count; no other
  /// memory is published with them).
  template <class Step>
  UpdateResult update(std::uint32_t index, std::uint64_t version, std::uint64_t* word,
                      Step&& step) const noexcept {
    return table_.update(index, version, word, static_cast<Step&&>(step));
  }
  /// Side word `w` of slot `index` (invariant 4). `index` comes from a
  /// SlotRef, already masked to the capacity the geometry was validated for.
  AtomicU64& side(std::uint32_t index, LeaseSide w) const noexcept {
    const Geometry& g = seg_->geometry();
    const std::size_t at =
        static_cast<std::size_t>(g.log_offset) +
        (static_cast<std::size_t>(index & (g.capacity - 1)) * kLeaseSideWords + w) * 8;
    return *reinterpret_cast<AtomicU64*>(seg_->base() + at);
  }
  std::uint32_t capacity() const noexcept { return table_.capacity(); }
  const Segment& segment() const noexcept { return *seg_; }

 private:
  static Options options(const std::string& name, std::uint32_t slots, mode_t mode) {
    Options o;
    o.name = name;
    o.capacity = slots;
    o.slot_bytes = kLeaseSlotBytes;
    o.max_probe = 64;
    o.log_entries = kLeaseSideWords;
    o.mode = mode;
    return o;
  }
  // "<policy>\0<key>", packed and hashed with the pool's seed (invariant 1).
  bool pack(std::string_view policy, std::string_view key, PackedKey* out) const noexcept {
    const std::size_t len = policy.size() + 1 + key.size();
    if (len > table_.key_capacity()) return false;
    char full[kLeaseSlotBytes];
    std::memcpy(full, policy.data(), policy.size());
    full[policy.size()] = '\0';
    if (!key.empty()) std::memcpy(full + policy.size() + 1, key.data(), key.size());
    *out = PackedKey(seg_->hash_seed(), 0, std::string_view(full, len));
    return true;
  }

  std::unique_ptr<Segment> seg_;
  Table table_;
  SpentPool spent_;
};

}  // namespace shmlimit::detail
