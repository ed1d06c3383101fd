#include "table/table.hpp"

#include <sched.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "segment/segment.hpp"
#include "table/hash.hpp"

namespace shmlimit::detail {
namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

Table::Table(std::byte* slots, const Geometry& g) noexcept
    : slots_(slots),
      capacity_(g.capacity),
      mask_(g.capacity - 1),
      slot_shift_(static_cast<std::uint32_t>(std::countr_zero(g.slot_bytes))),
      max_probe_(std::min(g.max_probe, g.capacity)),
      key_capacity_(g.key_capacity()) {}

bool Table::wait_change(std::uint32_t index, std::uint64_t meta, std::int64_t deadline,
                        ClaimEvents* events) noexcept {
  SlotHead& h = head(index);
  for (std::uint32_t spin = 0;; ++spin) {
    // Acquire: once meta moves on, the caller reads the slot's new contents.
    if (h.meta.load(std::memory_order_acquire) != meta) return true;
    if (spin < 64) {
      cpu_relax();
      continue;
    }
    if ((spin & 63) == 0) {
      if (repair_if_dead(index, events)) return true;
      if (monotonic_ns() > deadline) return false;
    }
    ::sched_yield();
  }
}

bool Table::repair_if_dead(std::uint32_t index, ClaimEvents* events) noexcept {
  SlotHead& h = head(index);
  u64 owner = h.owner.load(std::memory_order_acquire);
  if (owner == 0 || !token_is_dead(owner)) return false;
  // Take the dead process's token so no two repairers act at once.
  // Acquire on success: we read meta and word as the dead owner left them.
  if (!h.owner.compare_exchange_strong(owner, self_token(), std::memory_order_acquire))
    return false;
  const u64 m = h.meta.load(std::memory_order_acquire);
  const u64 w = h.word.load(std::memory_order_acquire);
  if (Meta::state(m) == kClaiming) {
    // Died writing the key: the claim never became visible as a bucket.
    // The word's version already equals the claim's generation.
    h.meta.store(Meta::make(kDead, 0, 0, 0, Meta::gen(m)), std::memory_order_release);
  } else if (Word::version(w) == ((Meta::version(m) + 1) & 0xFF)) {
    // Died after committing (word moved to generation + 1) but before
    // writing CLAIMING: a reclaimed key is gone (its bucket was full); an
    // EMPTY or DEAD slot was never visible. Either way the slot is free.
    h.meta.store(Meta::make(kDead, 0, 0, 0, Meta::gen(m) + 1), std::memory_order_release);
  }
  // Otherwise it died before committing or after publishing: the slot is
  // already consistent; only the token was left behind.
  // Release: the repaired meta is visible to the next token holder.
  h.owner.store(0, std::memory_order_release);
  if (events != nullptr) ++events->repairs;
  return true;
}

bool Table::take_token(std::uint32_t index, ProcessToken me, ClaimEvents* events) noexcept {
  SlotHead& h = head(index);
  u64 expected = 0;
  // Acquire: we then read meta/word as the previous holder released them.
  if (h.owner.compare_exchange_strong(expected, me, std::memory_order_acquire,
                                      std::memory_order_relaxed))
    return true;
  repair_if_dead(index, events);
  return false;
}

void Table::write_key(std::uint32_t index, const PackedKey& key) noexcept {
  AtomicU64* kw = key_words(index);
  const std::uint32_t words = key_capacity_ / 8;
  // Relaxed: published by the release store of LIVE (invariant 1).
  for (std::uint32_t i = 0; i < words; ++i)
    kw[i].store(i < key.nwords ? key.words[i] : 0, std::memory_order_relaxed);
}

void Table::withdraw(std::uint32_t index, std::uint64_t gen) noexcept {
  SlotHead& h = head(index);
  // Release: DEAD becomes visible before the token is free again.
  h.meta.store(Meta::make(kDead, 0, 0, 0, gen), std::memory_order_release);
  h.owner.store(0, std::memory_order_release);
}

Table::ClaimResult Table::claim(const PackedKey& key, std::int64_t now, std::uint64_t fresh_payload,
                                const ReclaimPolicy& reclaim, std::int64_t timeout_ns, SlotRef* out,
                                ClaimEvents* events) noexcept {
  const ProcessToken me = self_token();
  const std::int64_t deadline = monotonic_ns() + timeout_ns;
  const std::uint32_t home_index = home(key.hash);
  const u64 ident = identity_of(key);

  for (std::uint32_t attempt = 0;; ++attempt) {
    if (attempt > 0 && (attempt & 15) == 0) {
      if (monotonic_ns() > deadline) return ClaimResult::kContended;
      ::sched_yield();
    }
    // ---- 1. scan the probe window: the key, or the first usable slot.
    std::uint32_t cand = 0, cand_d = 0;
    u64 cand_meta = 0;
    bool have_cand = false, restart = false, saw_stale_claim = false;
    for (std::uint32_t d = 0; d < max_probe_ && !restart; ++d) {
      const std::uint32_t i = (home_index + d) & mask_;
      SlotHead& h = head(i);
      const u64 m = h.meta.load(std::memory_order_acquire);
      const u64 st = Meta::state(m);
      if (st == kEmpty) {
        if (!have_cand) {
          cand = i;
          cand_d = d;
          cand_meta = m;
          have_cand = true;
        }
        break;
      }
      if (st == kDead) {
        if (!have_cand) {
          cand = i;
          cand_d = d;
          cand_meta = m;
          have_cand = true;
        }
        continue;
      }
      if (st == kClaiming) {
        if (Meta::identity(m) == ident) {
          // Someone is inserting a key that may be ours: wait for it.
          if (!wait_change(i, m, deadline, events)) return ClaimResult::kContended;
          restart = true;
        } else {
          saw_stale_claim = true;
        }
        continue;
      }
      // LIVE
      const Match r = match(i, m, key, out);
      if (r == Match::kYes) return ClaimResult::kFound;
      if (r == Match::kChanged) {
        restart = true;
        continue;
      }
      if (!have_cand) {
        // Acquire: pairs with the release/acq_rel writes of the word.
        const u64 w = h.word.load(std::memory_order_acquire);
        if (Word::version(w) == Meta::version(m) &&
            reclaim.is_full(static_cast<std::uint32_t>(Meta::policy(m)), Word::payload(w), now)) {
          cand = i;
          cand_d = d;
          cand_meta = m;
          have_cand = true;
        }
      }
    }
    if (restart) continue;
    if (!have_cand) {
      // Before calling the table full, free what dead processes left.
      bool repaired = false;
      for (std::uint32_t d = 0; d < max_probe_ && (saw_stale_claim || attempt == 0); ++d) {
        const std::uint32_t i = (home_index + d) & mask_;
        if (head(i).owner.load(std::memory_order_relaxed) != 0)
          repaired |= repair_if_dead(i, events);
      }
      if (repaired) continue;
      return ClaimResult::kFull;
    }

    // ---- 2. take the candidate's token and commit to it.
    SlotHead& h = head(cand);
    if (!take_token(cand, me, events)) continue;
    const u64 m = h.meta.load(std::memory_order_acquire);
    if (m != cand_meta) {
      h.owner.store(0, std::memory_order_release);
      continue;
    }
    u64 w = h.word.load(std::memory_order_acquire);
    if (Word::version(w) != Meta::version(m) ||
        (Meta::state(m) == kLive &&
         !reclaim.is_full(static_cast<std::uint32_t>(Meta::policy(m)), Word::payload(w), now))) {
      h.owner.store(0, std::memory_order_release);
      continue;
    }
    // Commit point (invariant 2): the word moves to generation + 1. Any CAS
    // prepared against the old generation now fails. The new key starts
    // from `fresh_payload`, a full bucket in its own algorithm (for GCRA:
    // full as of `now`, so a process whose clock reading is older than ours
    // sees it slightly drained, never fuller than it was).
    const u64 gen = Meta::gen(m) + 1;
    const u64 payload = fresh_payload & Word::kPayloadMask;
    // acq_rel: nothing this claim writes may move before the commit, and
    // the old key's last state is acquired.
    if (!h.word.compare_exchange_strong(w, Word::make(gen & 0xFF, payload),
                                        std::memory_order_acq_rel, std::memory_order_relaxed)) {
      h.owner.store(0, std::memory_order_release);
      continue;
    }
    h.meta.store(Meta::make(kClaiming, key.len, key.policy, key.fp, gen),
                 std::memory_order_relaxed);
    // Release fence: CLAIMING is visible before any key byte changes, so a
    // seqlock reader that sees new bytes also sees meta change.
    std::atomic_thread_fence(std::memory_order_release);
    write_key(cand, key);
    h.admitted.store(0, std::memory_order_relaxed);
    h.denied.store(0, std::memory_order_relaxed);
    // seq_cst fence between our CLAIMING store and the re-scan's loads:
    // of two processes claiming the same key, at least one sees the other
    // (invariant 4, the store-buffer pattern).
    std::atomic_thread_fence(std::memory_order_seq_cst);

    // ---- 3. re-scan for a rival claim or copy of the key.
    bool withdrawn = false;
    for (std::uint32_t d = 0; d < max_probe_ && !withdrawn; ++d) {
      if (d == cand_d) continue;
      const std::uint32_t j = (home_index + d) & mask_;
      bool next = false;
      while (!next && !withdrawn) {
        const u64 m2 = head(j).meta.load(std::memory_order_acquire);
        const u64 st2 = Meta::state(m2);
        if (st2 == kEmpty) {
          d = max_probe_;  // end of the sequence
          break;
        }
        if (Meta::identity(m2) != ident || st2 == kDead) break;
        if (st2 == kLive) {
          const Match r = match(j, m2, key, out);
          if (r == Match::kYes) {
            withdraw(cand, gen);  // the key exists: use that slot
            return ClaimResult::kFound;
          }
          if (r == Match::kNo) next = true;
          continue;
        }
        // A rival CLAIMING with our fingerprint.
        if (d < cand_d) {
          // Nearer the home slot: it wins; wait for it without holding ours.
          withdraw(cand, gen);
          withdrawn = true;
          if (!wait_change(j, m2, deadline, events)) return ClaimResult::kContended;
        } else if (!wait_change(j, m2, deadline, events)) {
          withdraw(cand, gen);
          return ClaimResult::kContended;
        }
        // Resolved: look at slot j again.
      }
    }
    if (withdrawn) continue;

    // ---- 4. publish. Release: the key bytes are visible with LIVE.
    const u64 live = Meta::make(kLive, key.len, key.policy, key.fp, gen);
    h.meta.store(live, std::memory_order_release);
    // Read the word while still holding the token: once it is free, the
    // fresh (full) bucket may be reclaimed for another key at once, and a
    // word read then could belong to that key's generation.
    *out = SlotRef{cand, live, h.word.load(std::memory_order_acquire)};
    h.owner.store(0, std::memory_order_release);
    return ClaimResult::kClaimed;
  }
}

bool Table::read_consistent(std::uint32_t index, std::uint64_t* meta, std::uint64_t* word,
                            char* key_out, std::uint64_t* admitted,
                            std::uint64_t* denied) const noexcept {
  SlotHead& h = head(index);
  const AtomicU64* kw = key_words(index);
  for (int attempt = 0; attempt < 64; ++attempt) {
    const u64 m = h.meta.load(std::memory_order_acquire);
    const u64 w = h.word.load(std::memory_order_relaxed);
    const u64 a = h.admitted.load(std::memory_order_relaxed);
    const u64 dn = h.denied.load(std::memory_order_relaxed);
    const std::uint32_t len =
        std::min<std::uint32_t>(static_cast<std::uint32_t>(Meta::key_len(m)), key_capacity_);
    u64 buf[PackedKey::kMaxWords] = {};
    for (std::uint32_t i = 0; i < (len + 7) / 8; ++i)
      buf[i] = kw[i].load(std::memory_order_relaxed);
    // Acquire fence: all loads above complete before meta is read again.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (h.meta.load(std::memory_order_relaxed) != m) continue;
    *meta = m;
    *word = w;
    *admitted = a;
    *denied = dn;
    if (key_out != nullptr) std::memcpy(key_out, buf, len);
    return true;
  }
  return false;
}

}  // namespace shmlimit::detail

namespace shmlimit::detail {

bool Table::release(std::uint32_t index, std::uint64_t meta, ClaimEvents* events) noexcept {
  SlotHead& h = head(index);
  if (!take_token(index, self_token(), events)) return false;
  bool done = false;
  // Acquire: meta and word as the last writer left them.
  if (h.meta.load(std::memory_order_acquire) == meta && Meta::state(meta) == kLive) {
    u64 w = h.word.load(std::memory_order_acquire);
    // Commit as a reclaim does: every CAS prepared for this generation fails.
    if (Word::version(w) == Meta::version(meta) &&
        h.word.compare_exchange_strong(w, Word::make((Meta::version(meta) + 1) & 0xFF, 0),
                                       std::memory_order_acq_rel, std::memory_order_relaxed)) {
      h.meta.store(Meta::make(kDead, 0, 0, 0, Meta::gen(meta) + 1), std::memory_order_release);
      done = true;
    }
  }
  h.owner.store(0, std::memory_order_release);  // Release: the DEAD state is visible first
  return done;
}

}  // namespace shmlimit::detail
