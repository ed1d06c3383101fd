// The bucket table: fixed-capacity, power-of-two open addressing with
// bounded linear probing, inside the segment. Finds, claims and reclaims
// slots; knows nothing of rates (a Reclaim callback says whether a live
// bucket is full).
//
// Thread and process safety: every operation is safe from any number of
// processes at once. find() is wait-free (bounded by max_probe, retried
// only when another process changed the slot under it). claim() is
// lock-free except in one case: it waits, at most Options::claim_timeout,
// for another process that is claiming a slot for a key with the same
// fingerprint; if that process died the waiter repairs the slot at once.
//
// Protocol and invariants (doc/design.md has the long version)
//   (1) A slot's key bytes are written only by the holder of its claim token
//       (`owner`, taken by CAS 0 -> ProcessToken) while meta says CLAIMING,
//       and published by a release store of meta = LIVE. Readers take meta
//       with acquire, read the key, then re-read meta after an acquire
//       fence (a seqlock read): equal meta means an untorn key.
//   (2) A LIVE slot of generation g has word.version == g mod 256. Taking
//       a LIVE slot for another key (reclaim) commits by one CAS of the word
//       from (g, payload) to (g+1, payload), allowed only while the bucket
//       is full. ABA: an updater prepares its CAS from the exact word
//       (g, payload) it read while meta showed generation g; after a reclaim
//       that word no longer exists (version g+1), so the stale CAS fails and
//       never lands on the new key. It could only succeed again after 256
//       further reclaims of this same slot during one updater's
//       read-to-CAS window AND with the payload back at the exact value the
//       updater read (for GCRA a nanosecond time that only grows).
//   (3) EMPTY ends a probe sequence; DEAD does not. A slot never returns
//       to EMPTY, so a key can never hide behind a hole.
//   (4) No duplicates: a claimer publishes only after re-scanning the probe
//       window (after a seq_cst fence, so two concurrent claimers of one key
//       cannot both miss each other). A claim that sees a rival claim for
//       the same fingerprint nearer the home slot withdraws; one that sees a
//       rival farther away waits for it to resolve. Waits only ever point
//       away from the home slot, so they cannot form a cycle.
//   (5) A process killed at any instruction leaves at most one slot with a
//       dead owner token; the next process that needs that slot (or
//       `shmlimit check`) sees the owner is dead and repairs it: a
//       half-written claim becomes DEAD, a committed reclaim becomes DEAD,
//       a published slot keeps its key.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "segment/layout.hpp"
#include "segment/process.hpp"
#include "table/hash.hpp"

namespace shmlimit::detail {

/// Adds `n` (may be negative) to a per-slot statistic (SlotHead::admitted,
/// SlotHead::denied) with a relaxed load and a relaxed store: no locked
/// instruction on the hot path. Approximate by design: two processes
/// counting on one key at the same instant may lose one increment. The
/// exact totals are the counter blocks (limiter/counters.hpp).
inline void approx_add(AtomicU64& counter, std::uint64_t n = 1) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

/// The longest key any slot size holds, in words.
inline constexpr std::uint32_t kMaxKeyWords = (256 - kSlotHeadBytes) / 8;

/// A key prepared for the table: hashed and packed into words once.
/// `Words` bounds its length: PackedKey holds any key a slot can hold;
/// ShortKey (two words, 16 bytes: IPs, user ids) is the hot path's, small
/// enough to live in registers and a few stack words.
template <std::uint32_t Words>
struct BasicPackedKey {
  static constexpr std::uint32_t kMaxWords = Words;
  std::uint64_t words[kMaxWords];
  std::uint32_t len = 0;
  std::uint32_t nwords = 0;
  std::uint32_t policy = 0;
  std::uint64_t hash = 0;
  std::uint64_t fp = 0;
  /// `key` must be at most kMaxWords * 8 bytes (the caller checks against
  /// the segment's key capacity, or ShortKey's 16 bytes, first).
  BasicPackedKey(std::uint64_t seed, std::uint32_t policy, std::string_view key) noexcept;
};
using PackedKey = BasicPackedKey<kMaxKeyWords>;
using ShortKey = BasicPackedKey<2>;

template <class Key>
bool key_equal_at(const AtomicU64* key_words, const Key& key) noexcept;

/// A located slot: its index and the meta and word read consistently.
struct SlotRef {
  std::uint32_t index = 0;
  std::uint64_t meta = 0;
  std::uint64_t word = 0;
};

/// Says whether a live bucket may be reclaimed (it is full).
class ReclaimPolicy {
 public:
  virtual bool is_full(std::uint32_t policy, std::uint64_t payload,
                       std::int64_t now) const noexcept = 0;

 protected:
  ~ReclaimPolicy() = default;
};

struct ClaimEvents {
  std::uint32_t repairs = 0;
};

/// What an update step wants done with the payload it was shown.
struct SlotStep {
  enum Kind : std::uint8_t {
    kStore,   // CAS the word to `payload` (same version)
    kLeave,   // leave the word as it is: nothing to store
    kReload,  // the step changed the word itself (it helped a pending
              // operation): read the word again and step again
  };
  Kind kind = kLeave;
  std::uint64_t payload = 0;
  static constexpr SlotStep store(std::uint64_t p) noexcept { return {kStore, p}; }
  static constexpr SlotStep leave() noexcept { return {kLeave, 0}; }
  static constexpr SlotStep reload() noexcept { return {kReload, 0}; }
};

/// How Table::update ended.
enum class UpdateResult {
  kStored,     // the step's payload is the word's, under the same version
  kUnchanged,  // the step asked to leave the word as it was
  kReclaimed,  // the word's version moved: the slot now holds another key
               // (or none); the caller's view of it is stale
};

/// The per-key count of one acquire (SlotHead::admitted / denied,
/// approximate) after its Table::update ended in `r` (not kReclaimed): a
/// stored decision counts as what it decided, an unchanged one only when
/// it refused.
inline void count_per_key(SlotHead& h, UpdateResult r, bool allowed) noexcept {
  if (r == UpdateResult::kStored) {
    approx_add(allowed ? h.admitted : h.denied);
  } else if (!allowed) {
    approx_add(h.denied);
  }
}

class Table {
 public:
  Table(std::byte* slots, const Geometry& geometry) noexcept;

  SlotHead& head(std::uint32_t index) const noexcept {
    return *reinterpret_cast<SlotHead*>(slots_ +
                                        (static_cast<std::size_t>(index & mask_) << slot_shift_));
  }
  AtomicU64* key_words(std::uint32_t index) const noexcept {
    return reinterpret_cast<AtomicU64*>(
        slots_ + (static_cast<std::size_t>(index & mask_) << slot_shift_) + kSlotHeadBytes);
  }
  std::uint32_t capacity() const noexcept { return capacity_; }
  std::uint32_t key_capacity() const noexcept { return key_capacity_; }
  std::uint32_t home(std::uint64_t hash) const noexcept {
    return static_cast<std::uint32_t>(hash) & mask_;
  }

  /// The one way a live bucket's state changes after its claim: a CAS loop
  /// on the word of slot `index`, applying `step(payload) -> SlotStep` for
  /// as long as the word keeps `version`. `*word` is the caller's last
  /// reading of the word; on return it is the last value seen (the stored
  /// one when kStored). Every writer of a bucket (a decision, a rollback, a
  /// sliding log's admission, a lease, an import) goes through here, so the
  /// ABA guard is written once: the CAS is prepared from the exact word
  /// read, whose version is the low 8 bits of the slot's generation, so it
  /// fails on a slot reclaimed for another key since (see "ABA" above).
  ///
  /// `Order` is the CAS's order on success. Relaxed (the default) suffices
  /// when the bucket's whole state is the word and no other memory is
  /// published or read through it; the lease protocol passes acq_rel, as
  /// its word also publishes lease records (limiter/lease.hpp). A failed
  /// CAS reads with acquire whenever `Order` is stronger than relaxed.
  /// Lock-free: a CAS fails only because another writer's succeeded.
  template <std::memory_order Order = std::memory_order_relaxed, class Step>
  UpdateResult update(std::uint32_t index, std::uint64_t version, std::uint64_t* word,
                      Step&& step) const noexcept {
    constexpr std::memory_order kOnFailure =
        Order == std::memory_order_relaxed ? std::memory_order_relaxed : std::memory_order_acquire;
    AtomicU64& w = head(index).word;
    std::uint64_t cur = *word;
    while (Word::version(cur) == version) {
      const SlotStep next = step(Word::payload(cur));
      if (next.kind == SlotStep::kLeave) {
        *word = cur;
        return UpdateResult::kUnchanged;
      }
      if (next.kind == SlotStep::kReload) {
        cur = w.load(std::memory_order_acquire);  // Acquire: whatever the step completed is visible
        continue;
      }
      const std::uint64_t desired = Word::make(version, next.payload);
      if (w.compare_exchange_weak(cur, desired, Order, kOnFailure)) {
        *word = desired;
        return UpdateResult::kStored;
      }
    }
    *word = cur;
    return UpdateResult::kReclaimed;
  }

  /// Finds the live slot of `key` (a PackedKey or a ShortKey). Wait-free
  /// in the absence of writers.
  template <class Key>
  bool find(const Key& key, SlotRef* out) const noexcept;

  /// Starts bringing the home slot of `key` into this core's cache, for
  /// writing when `ForWrite` (PREFETCHW on x86-64, so a CAS finds the line
  /// already exclusive) or for reading. Issued before the clock read, the
  /// miss of a cold slot, or the transfer of a slot another core just
  /// wrote, overlaps the clock instead of following it. A hint only: no
  /// memory is read or written, and it never faults.
  template <bool ForWrite, class Key>
  void prefetch_home(const Key& key) const noexcept {
    const std::byte* slot = slots_ + (static_cast<std::size_t>(home(key.hash)) << slot_shift_);
#if defined(__x86_64__) && defined(__GNUC__)
    // PREFETCHW directly: GCC emits a read prefetch for a write hint unless
    // built with -mprfchw; a CPU without it executes the opcode as a NOP.
    if constexpr (ForWrite) {
      asm volatile("prefetchw %0" : : "m"(*slot));
      return;
    }
#endif
    __builtin_prefetch(slot, ForWrite ? 1 : 0, 3);
  }

  enum class ClaimResult {
    kFound,      // the key was already there (another process inserted it)
    kClaimed,    // a slot was claimed and published for the key
    kFull,       // no EMPTY, DEAD or reclaimable slot in the probe window
    kContended,  // a live process stalled mid-claim for longer than the timeout
  };
  /// Finds or inserts `key`. `now` decides which buckets are full; a new
  /// key's bucket starts at `fresh_payload` (a full bucket of its policy).
  ClaimResult claim(const PackedKey& key, std::int64_t now, std::uint64_t fresh_payload,
                    const ReclaimPolicy& reclaim, std::int64_t timeout_ns, SlotRef* out,
                    ClaimEvents* events) noexcept;

  /// Frees the slot of a live key (its bucket is forgotten: `reset`) if it
  /// still shows `meta`. Commits like a reclaim, so stale updates fail.
  /// Returns false if the slot changed or its token was busy.
  bool release(std::uint32_t index, std::uint64_t meta, ClaimEvents* events) noexcept;

  /// Repairs `index` if its owner token names a dead process. Returns true
  /// if a repair was made. Used by claim() and by `shmlimit check`.
  bool repair_if_dead(std::uint32_t index, ClaimEvents* events) noexcept;

  /// Reads slot `index` consistently (seqlock). Returns false if it kept
  /// changing. `key_out` receives Meta::key_len bytes (bounded by capacity).
  bool read_consistent(std::uint32_t index, std::uint64_t* meta, std::uint64_t* word, char* key_out,
                       std::uint64_t* admitted, std::uint64_t* denied) const noexcept;

 private:
  enum class Match { kNo, kYes, kChanged };
  template <class Key>
  bool key_equal(std::uint32_t index, const Key& key) const noexcept;
  // Is LIVE slot `index`, read as `meta`, the slot of `key`? kChanged: the
  // slot changed while being read; read it again.
  template <class Key>
  Match match(std::uint32_t index, std::uint64_t meta, const Key& key, SlotRef* out) const noexcept;
  template <class Key>
  static Match match_at(SlotHead& h, std::uint32_t index, std::uint64_t meta, const Key& key,
                        SlotRef* out) noexcept;
  void withdraw(std::uint32_t index, std::uint64_t gen) noexcept;
  // Waits until slot `index` no longer shows `meta`. false on timeout.
  bool wait_change(std::uint32_t index, std::uint64_t meta, std::int64_t deadline,
                   ClaimEvents* events) noexcept;
  bool take_token(std::uint32_t index, ProcessToken me, ClaimEvents* events) noexcept;
  void write_key(std::uint32_t index, const PackedKey& key) noexcept;

  std::byte* slots_;
  std::uint32_t capacity_;
  std::uint32_t mask_;
  // log2 of the slot size: 64, 128 or 256 (Segment refuses any other), so
  // a slot's address is a shift, not a multiply, on the probe's chain.
  std::uint32_t slot_shift_;
  std::uint32_t max_probe_;
  std::uint32_t key_capacity_;
};

// ---------------------------------------------------------------------------
// The lookup, inline: every decision packs its key and probes, and the
// common case (the key at or near its home slot) is a few loads.

template <class Key>
constexpr std::uint64_t identity_of(const Key& key) {
  return Meta::identity(Meta::make(0, key.len, key.policy, key.fp, 0));
}

template <std::uint32_t Words>
inline BasicPackedKey<Words>::BasicPackedKey(std::uint64_t seed, std::uint32_t policy_index,
                                             std::string_view key) noexcept
    : len(static_cast<std::uint32_t>(std::min<std::size_t>(key.size(), kMaxWords * 8))),
      nwords((len + 7) / 8),
      policy(policy_index) {
  static_assert(std::endian::native == std::endian::little,
                "keys are packed into words by memcpy; the table stores them little-endian");
  // Whole words by 8-byte loads, the tail by load_word_upto8: the words are
  // then hashed at once, without re-reading a partly written one. Keys of
  // up to 16 bytes (IPs, user ids: the common case) take no loop at all.
  const char* p = key.data();
  if (Words <= 2 || len <= 16) [[likely]] {
    load_words_upto16(p, len, &words[0], &words[1]);
  } else if constexpr (Words > 2) {
    const std::uint32_t full = len / 8;
    for (std::uint32_t i = 0; i < full; ++i) std::memcpy(&words[i], p + 8 * i, 8);
    if (const std::uint32_t rest = len % 8; rest != 0)
      words[full] = load_word_upto8(p + 8 * full, rest);
  }
  hash = hash_words(seed, policy_index, words, nwords, len);
  fp = (hash >> 48) & 0xFFFF;
}

template <class Key>
[[gnu::always_inline]] inline bool Table::key_equal(std::uint32_t index,
                                                    const Key& key) const noexcept {
  return key_equal_at(reinterpret_cast<const AtomicU64*>(key_words(index)), key);
}

template <class Key>
[[gnu::always_inline]] inline bool key_equal_at(const AtomicU64* kw, const Key& key) noexcept {
  // Relaxed: the caller validates the whole read by re-reading meta after
  // an acquire fence (seqlock read, invariant 1).
  for (std::uint32_t i = 0; i < key.nwords; ++i) {
    if (kw[i].load(std::memory_order_relaxed) != key.words[i]) return false;
  }
  return true;
}

template <class Key>
[[gnu::always_inline]] inline Table::Match Table::match(std::uint32_t index, std::uint64_t meta,
                                                        const Key& key,
                                                        SlotRef* out) const noexcept {
  return match_at(head(index), index & mask_, meta, key, out);
}

// match() on a slot whose address the caller has already computed.
template <class Key>
[[gnu::always_inline]] inline Table::Match Table::match_at(SlotHead& h, std::uint32_t index,
                                                           std::uint64_t meta, const Key& key,
                                                           SlotRef* out) noexcept {
  if (Meta::state(meta) != kLive || Meta::identity(meta) != identity_of(key)) return Match::kNo;
  const bool equal = key_equal_at(
      reinterpret_cast<const AtomicU64*>(reinterpret_cast<const std::byte*>(&h) + kSlotHeadBytes),
      key);
  // Acquire: the meta re-read below may not move before the word read.
  const std::uint64_t word = h.word.load(std::memory_order_acquire);
  // Acquire fence: the relaxed key loads above complete before meta is read
  // again, so an unchanged meta proves they saw one key (seqlock read).
  std::atomic_thread_fence(std::memory_order_acquire);
  const std::uint64_t again = h.meta.load(std::memory_order_relaxed);
  if (again != meta) return Match::kChanged;
  if (!equal) return Match::kNo;
  // A committed reclaim (invariant 2): the key is leaving; it is absent.
  if (Word::version(word) != Meta::version(meta)) return Match::kNo;
  *out = SlotRef{index, meta, word};
  return Match::kYes;
}

template <class Key>
[[gnu::always_inline]] inline bool Table::find(const Key& key, SlotRef* out) const noexcept {
  // The geometry in locals: the acquire loads below would otherwise make
  // the compiler reload it from *this for every slot address.
  std::byte* const slots = slots_;
  const std::uint32_t mask = mask_;
  const std::uint32_t slot_shift = slot_shift_;
  const std::uint32_t max_probe = max_probe_;
  const std::uint32_t home_index = home(key.hash);
  for (std::uint32_t d = 0; d < max_probe; ++d) {
    const std::uint32_t i = (home_index + d) & mask;
    SlotHead& h = *reinterpret_cast<SlotHead*>(slots + (static_cast<std::size_t>(i) << slot_shift));
    for (;;) {
      // Acquire: pairs with the claimer's release store of LIVE, so the key
      // bytes it wrote are visible.
      const std::uint64_t m = h.meta.load(std::memory_order_acquire);
      if (Meta::state(m) == kEmpty) return false;  // invariant 3: end of the sequence
      const Match r = match_at(h, i, m, key, out);
      if (r == Match::kYes) return true;
      if (r == Match::kNo) break;
      // kChanged: another process changed this slot; look at it again.
    }
  }
  return false;
}

}  // namespace shmlimit::detail
