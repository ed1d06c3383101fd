// Concurrency leases: the pure transitions and the protocol (lease.hpp).
#include "lease.hpp"

#include <bit>

namespace shmlimit::detail {

void (*g_lease_fault)(LeaseFault) noexcept = nullptr;

namespace {
inline void fault(LeaseFault at) noexcept {
  if (g_lease_fault != nullptr) g_lease_fault(at);
}
}  // namespace

// ---- pure transitions --------------------------------------------------------
Decision lease_report(std::uint64_t payload, std::uint64_t limit) noexcept {
  const std::uint64_t n = lease_count(payload);
  Decision d;
  d.limit = limit;
  d.remaining = n < limit ? limit - n : 0;
  d.allowed = d.remaining > 0;
  return d;  // retry_after = reset_after = 0: a lease has no time
}

LeaseStep lease_acquire_step(std::uint64_t payload, std::uint64_t limit, std::uint64_t cost,
                             const LeasePending& me) noexcept {
  LeaseStep s;
  const std::uint64_t n = lease_count(payload);
  s.decision = lease_report(payload, limit);
  if (cost > limit) {
    s.decision.allowed = false;
    s.decision.reason = Reason::kCostTooHigh;
    s.decision.retry_after = Nanos::max();
    return s;
  }
  if (n > limit || cost > limit - n) {  // limit < 2^24: no overflow
    s.decision.allowed = false;
    return s;
  }
  s.ok = true;
  s.new_payload = lease_payload(n + cost, me);
  s.decision.allowed = true;
  s.decision.remaining = limit - n - cost;
  return s;
}

LeaseStep lease_release_step(std::uint64_t payload, std::uint64_t cost,
                             const LeasePending& me) noexcept {
  LeaseStep s;
  const std::uint64_t n = lease_count(payload);
  s.ok = true;
  s.new_payload = lease_payload(cost >= n ? 0 : n - cost, me);
  return s;
}

LeaseRecovery lease_recovery(std::uint64_t state, bool same_generation,
                             bool pending_is_record) noexcept {
  switch (state) {
    case kLeaseFree:
      return LeaseRecovery::kNothing;
    case kLeaseIntent:
      if (!same_generation)
        return LeaseRecovery::kDrop;  // reset or reclaimed: nothing to give back
      return pending_is_record ? LeaseRecovery::kHelpThenRelease : LeaseRecovery::kDrop;
    case kLeaseHeld:
      return same_generation ? LeaseRecovery::kRelease : LeaseRecovery::kDrop;
    case kLeaseReleasing:
      if (!same_generation) return LeaseRecovery::kDrop;
      return pending_is_record ? LeaseRecovery::kHelp : LeaseRecovery::kRelease;
    default:
      return LeaseRecovery::kDrop;  // not a state we write: a corrupt record holds nothing
  }
}

// ---- the protocol ----------------------------------------------------------------
bool Leases::same_generation(std::uint64_t ctl, std::uint64_t word) const noexcept {
  const SlotHead& h = table_->head(LeaseCtl::slot(ctl));
  // Acquire: read after the word the caller loaded; a reset moves the word
  // first and meta after, so matching both means the record's generation.
  const std::uint64_t meta = h.meta.load(std::memory_order_acquire);
  return Word::version(word) == (LeaseCtl::gen(ctl) & 0xFF) &&
         (Meta::gen(meta) & kLeaseGenMask) == LeaseCtl::gen(ctl) && Meta::state(meta) == kLive;
}

void Leases::clear_pending(SlotHead& h, std::uint64_t word) noexcept {
  const LeasePending mine = lease_pending(Word::payload(word));
  std::uint64_t w = word;
  // acq_rel: the record update made before is visible to whoever reads the
  // cleared word with acquire (recovery reads the word, then the record).
  while (!h.word.compare_exchange_weak(
      w, Word::make(Word::version(w), lease_cleared(Word::payload(w))), std::memory_order_acq_rel,
      std::memory_order_acquire)) {
    // Nothing changes a word with a pending descriptor except completing
    // it: if it is no longer ours (or the slot moved on), it is done.
    if (Word::version(w) != Word::version(word) || lease_pending(Word::payload(w)) != mine) return;
  }
}

void Leases::help(std::uint32_t index, std::uint64_t word) noexcept {
  const LeasePending p = lease_pending(Word::payload(word));
  if (p.op == LeaseOp::kNone) return;
  LeaseRecord& rec = areas_[p.entry].records[p.record];
  // Acquire: pairs with the owner's release store of the record.
  std::uint64_t c = rec.ctl.load(std::memory_order_acquire);
  if (LeaseCtl::seq(c) == p.seq && LeaseCtl::slot(c) == index) {
    // Mark the record with the outcome the word already has (invariant 1);
    // a CAS from the exact value, so a record reused since is left alone.
    // acq_rel: ordered before the descriptor is cleared below.
    if (p.op == LeaseOp::kAcquire && LeaseCtl::state(c) == kLeaseIntent) {
      rec.ctl.compare_exchange_strong(c, LeaseCtl::with_state(c, kLeaseHeld),
                                      std::memory_order_acq_rel);
    } else if (p.op == LeaseOp::kRelease && LeaseCtl::state(c) == kLeaseReleasing) {
      rec.ctl.compare_exchange_strong(c, LeaseCtl::with_state(c, kLeaseFree),
                                      std::memory_order_acq_rel);
    }
  }
  clear_pending(table_->head(index), word);
}

void Leases::free_record(std::uint32_t entry, std::uint32_t record, std::uint64_t ctl) noexcept {
  LeaseArea& a = areas_[entry];
  // Release: the record is FREE before its bit is; the next allocator
  // (acquire on `used`) reads it FREE with its seq.
  a.records[record].ctl.store(LeaseCtl::make(kLeaseFree, LeaseCtl::seq(ctl), 0, 0),
                              std::memory_order_release);
  a.used.fetch_and(~(std::uint64_t{1} << record), std::memory_order_release);
}

Leases::Result Leases::acquire(const SlotRef& ref, std::uint32_t entry, std::uint64_t limit,
                               std::uint64_t cost, std::uint32_t* record, std::uint64_t* ctl_out,
                               Decision* decision) noexcept {
  LeaseArea& a = areas_[entry];
  // ---- 1. allocate a record (threads and handles of this process share the area).
  std::uint64_t used = a.used.load(std::memory_order_acquire);
  std::uint32_t r = 0;
  for (;;) {
    if (used == ~std::uint64_t{0}) return Result::kNoRecord;
    r = static_cast<std::uint32_t>(std::countr_one(used));
    // Acquire: the record's FREE state and seq, as its last user released them.
    if (a.used.compare_exchange_weak(used, used | (std::uint64_t{1} << r),
                                     std::memory_order_acquire, std::memory_order_acquire)) {
      break;
    }
  }
  LeaseRecord& rec = a.records[r];
  const std::uint32_t seq =
      (LeaseCtl::seq(rec.ctl.load(std::memory_order_relaxed)) + 1) & kLeaseSeqMask;
  const std::uint64_t intent = LeaseCtl::make(kLeaseIntent, seq, Meta::gen(ref.meta), ref.index);
  rec.cost.store(cost, std::memory_order_relaxed);
  // Release: the cost is visible to whoever reads INTENT with acquire.
  rec.ctl.store(intent, std::memory_order_release);
  fault(LeaseFault::kAfterIntent);

  // ---- 2. add to the count and name the record, in one CAS.
  SlotHead& h = table_->head(ref.index);
  const LeasePending me{LeaseOp::kAcquire, entry, r, seq};
  std::uint64_t w = h.word.load(std::memory_order_acquire);
  std::uint64_t installed = 0;
  for (;;) {
    if (Word::version(w) != Word::version(ref.word)) {
      free_record(entry, r, intent);
      return Result::kRelookup;
    }
    if (lease_pending(Word::payload(w)).op != LeaseOp::kNone) {
      help(ref.index, w);
      w = h.word.load(std::memory_order_acquire);
      continue;
    }
    const LeaseStep s = lease_acquire_step(Word::payload(w), limit, cost, me);
    if (!s.ok) {
      free_record(entry, r, intent);
      *decision = s.decision;
      return Result::kDenied;
    }
    installed = Word::make(Word::version(w), s.new_payload);
    // acq_rel: publishes the INTENT record (release) to helpers that read
    // the descriptor; acquires the previous holders' completed records.
    if (h.word.compare_exchange_weak(w, installed, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      *decision = s.decision;
      break;
    }
  }
  fault(LeaseFault::kAfterWordCas);

  // ---- 3. the record says HELD, then the descriptor goes (a helper may
  // have done either already).
  std::uint64_t c = intent;
  const std::uint64_t held = LeaseCtl::with_state(intent, kLeaseHeld);
  rec.ctl.compare_exchange_strong(c, held, std::memory_order_acq_rel);
  fault(LeaseFault::kAfterHeld);
  clear_pending(h, installed);
  *record = r;
  *ctl_out = held;
  return Result::kGranted;
}

void Leases::finish_release(std::uint32_t entry, std::uint32_t record, std::uint64_t ctl) noexcept {
  LeaseRecord& rec = areas_[entry].records[record];
  const std::uint32_t index = LeaseCtl::slot(ctl);
  SlotHead& h = table_->head(index);
  // Acquire on the record read by our caller made the cost visible.
  const std::uint64_t cost = rec.cost.load(std::memory_order_relaxed);
  const LeasePending me{LeaseOp::kRelease, entry, record, LeaseCtl::seq(ctl)};
  std::uint64_t w = h.word.load(std::memory_order_acquire);
  std::uint64_t installed = 0;
  for (;;) {
    if (!same_generation(ctl, w)) {
      free_record(entry, record, ctl);  // reset since: the count it held was forgotten
      return;
    }
    if (lease_pending(Word::payload(w)).op != LeaseOp::kNone) {
      help(index, w);
      w = h.word.load(std::memory_order_acquire);
      continue;
    }
    installed =
        Word::make(Word::version(w), lease_release_step(Word::payload(w), cost, me).new_payload);
    // acq_rel: as in acquire(); publishes the RELEASING record.
    if (h.word.compare_exchange_weak(w, installed, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
      break;
  }
  fault(LeaseFault::kAfterReleaseCas);
  std::uint64_t c = ctl;
  rec.ctl.compare_exchange_strong(c, LeaseCtl::with_state(ctl, kLeaseFree),
                                  std::memory_order_acq_rel);
  clear_pending(h, installed);
  areas_[entry].used.fetch_and(~(std::uint64_t{1} << record), std::memory_order_release);
}

bool Leases::release(std::uint32_t entry, std::uint32_t record, std::uint64_t ctl) noexcept {
  if (entry >= kMaxProcesses || record >= kLeaseRecords || LeaseCtl::state(ctl) != kLeaseHeld)
    return false;
  LeaseRecord& rec = areas_[entry].records[record];
  std::uint64_t c = ctl;
  const std::uint64_t releasing = LeaseCtl::with_state(ctl, kLeaseReleasing);
  // acq_rel: the RELEASING state is ordered before the word CAS; a record
  // that is no longer exactly ours (recovered, corrupted) is left alone.
  if (!rec.ctl.compare_exchange_strong(c, releasing, std::memory_order_acq_rel)) return false;
  fault(LeaseFault::kAfterReleasing);
  finish_release(entry, record, releasing);
  return true;
}

std::uint32_t Leases::recover(std::uint32_t entry) noexcept {
  if (entry >= kMaxProcesses) return 0;
  LeaseArea& a = areas_[entry];
  std::uint32_t done = 0;
  for (std::uint32_t r = 0; r < kLeaseRecords; ++r) {
    LeaseRecord& rec = a.records[r];
    std::uint64_t c = rec.ctl.load(std::memory_order_acquire);
    if (LeaseCtl::state(c) == kLeaseFree) {
      a.used.fetch_and(~(std::uint64_t{1} << r), std::memory_order_release);
      continue;
    }
    const std::uint32_t index = LeaseCtl::slot(c);
    if (index >= table_->capacity()) {  // corrupt: names no slot
      free_record(entry, r, c);
      ++done;
      continue;
    }
    SlotHead& h = table_->head(index);
    // The word first, then the record again (invariant 2): a helper marks
    // the record before it clears the descriptor, so a word without our
    // descriptor, read with acquire, comes with the record's outcome.
    const std::uint64_t w = h.word.load(std::memory_order_acquire);
    c = rec.ctl.load(std::memory_order_acquire);
    const LeasePending p = lease_pending(Word::payload(w));
    const bool pending_is_record =
        p.op != LeaseOp::kNone && p.entry == entry && p.record == r && p.seq == LeaseCtl::seq(c);
    switch (lease_recovery(LeaseCtl::state(c), same_generation(c, w), pending_is_record)) {
      case LeaseRecovery::kNothing:
        a.used.fetch_and(~(std::uint64_t{1} << r), std::memory_order_release);
        continue;
      case LeaseRecovery::kDrop:
        free_record(entry, r, c);
        break;
      case LeaseRecovery::kHelpThenRelease:
        help(index, w);  // INTENT -> HELD, descriptor cleared
        rec.ctl.store(LeaseCtl::with_state(c, kLeaseReleasing), std::memory_order_release);
        finish_release(entry, r, LeaseCtl::with_state(c, kLeaseReleasing));
        break;
      case LeaseRecovery::kRelease:
        rec.ctl.store(LeaseCtl::with_state(c, kLeaseReleasing), std::memory_order_release);
        finish_release(entry, r, LeaseCtl::with_state(c, kLeaseReleasing));
        break;
      case LeaseRecovery::kHelp:
        help(index, w);  // RELEASING -> FREE, descriptor cleared
        free_record(entry, r, c);
        break;
    }
    ++done;
  }
  return done;
}

bool Leases::holds_slot(std::uint32_t entry, std::uint32_t index) const noexcept {
  const LeaseArea& a = areas_[entry];
  // Relaxed: a hint for the reclaim scan; recovery re-reads with acquire.
  std::uint64_t used = a.used.load(std::memory_order_relaxed);
  while (used != 0) {
    const auto r = static_cast<std::uint32_t>(std::countr_zero(used));
    used &= used - 1;
    const std::uint64_t c = a.records[r].ctl.load(std::memory_order_relaxed);
    if (LeaseCtl::state(c) != kLeaseFree && LeaseCtl::slot(c) == index) return true;
  }
  return false;
}

bool Leases::holds_any(std::uint32_t entry) const noexcept {
  return areas_[entry].used.load(std::memory_order_relaxed) != 0;  // a hint, as above
}

}  // namespace shmlimit::detail
