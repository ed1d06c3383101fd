// Concurrency leases: the pure transitions and the protocol (lease.hpp),
// then the limiter's lease driver (Limiter::Impl, limiter_impl.hpp) and the
// RAII Lease handle.
#include "limiter/lease.hpp"

#include <bit>
#include <chrono>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "limiter/limiter_impl.hpp"

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

void Leases::clear_pending(std::uint32_t index, std::uint64_t word) noexcept {
  const LeasePending mine = lease_pending(Word::payload(word));
  std::uint64_t w = word;
  // acq_rel: the record update made before is visible to whoever reads the
  // cleared word with acquire (recovery reads the word, then the record).
  // Nothing changes a word with a pending descriptor except completing it:
  // if it is no longer ours (or the slot moved on), it is done.
  table_->update<std::memory_order_acq_rel>(
      index, Word::version(word), &w, [&](std::uint64_t payload) noexcept {
        return lease_pending(payload) != mine ? SlotStep::leave()
                                              : SlotStep::store(lease_cleared(payload));
      });
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
  clear_pending(index, word);
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
  const LeasePending me{LeaseOp::kAcquire, entry, r, seq};
  const std::uint64_t version = Word::version(ref.word);
  std::uint64_t w = table_->head(ref.index).word.load(std::memory_order_acquire);
  LeaseStep s;
  // acq_rel: publishes the INTENT record (release) to helpers that read
  // the descriptor; acquires the previous holders' completed records.
  const UpdateResult done = table_->update<std::memory_order_acq_rel>(
      ref.index, version, &w, [&](std::uint64_t payload) noexcept {
        if (lease_pending(payload).op != LeaseOp::kNone) {
          help(ref.index, Word::make(version, payload));
          return SlotStep::reload();
        }
        s = lease_acquire_step(payload, limit, cost, me);
        return s.ok ? SlotStep::store(s.new_payload) : SlotStep::leave();
      });
  if (done != UpdateResult::kStored) {
    free_record(entry, r, intent);
    if (done == UpdateResult::kReclaimed) return Result::kRelookup;
    *decision = s.decision;
    return Result::kDenied;
  }
  *decision = s.decision;
  const std::uint64_t installed = w;
  fault(LeaseFault::kAfterWordCas);

  // ---- 3. the record says HELD, then the descriptor goes (a helper may
  // have done either already).
  std::uint64_t c = intent;
  const std::uint64_t held = LeaseCtl::with_state(intent, kLeaseHeld);
  rec.ctl.compare_exchange_strong(c, held, std::memory_order_acq_rel);
  fault(LeaseFault::kAfterHeld);
  clear_pending(ref.index, installed);
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
  const std::uint64_t version = LeaseCtl::gen(ctl) & 0xFF;
  std::uint64_t w = h.word.load(std::memory_order_acquire);
  // acq_rel: as in acquire(); publishes the RELEASING record.
  const UpdateResult done = table_->update<std::memory_order_acq_rel>(
      index, version, &w, [&](std::uint64_t payload) noexcept {
        const std::uint64_t word = Word::make(version, payload);
        if (!same_generation(ctl, word)) return SlotStep::leave();
        if (lease_pending(payload).op != LeaseOp::kNone) {
          help(index, word);
          return SlotStep::reload();
        }
        return SlotStep::store(lease_release_step(payload, cost, me).new_payload);
      });
  if (done != UpdateResult::kStored) {
    free_record(entry, record, ctl);  // reset since: the count it held was forgotten
    return;
  }
  const std::uint64_t installed = w;
  fault(LeaseFault::kAfterReleaseCas);
  std::uint64_t c = ctl;
  rec.ctl.compare_exchange_strong(c, LeaseCtl::with_state(ctl, kLeaseFree),
                                  std::memory_order_acq_rel);
  clear_pending(index, installed);
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

namespace shmlimit {

using detail::PolicySnapshot;
using detail::u64;

// ---- the limiter's lease driver ---------------------------------------------
// Recovers the lease records of registry entries whose owner died
// (serialised by taking the entry: owner -> our token | kRecoveringBit,
// then 0). `slot` limits the scan to holders of that slot (a denied
// lease); kNoRecord scans every holder (check). Returns records recovered.
std::uint32_t Limiter::Impl::reclaim_dead_leases(std::uint32_t slot,
                                                 std::vector<std::string>* dead) noexcept {
  std::uint32_t n = 0;
  const detail::ProcessToken me = detail::self_token();
  for (std::uint32_t i = 1; i < detail::kMaxProcesses; ++i) {
    detail::ProcessEntry& e = process_table[i];
    u64 owner = e.owner.load(std::memory_order_relaxed);
    if (owner == 0 || owner == me) continue;
    if (slot == kNoRecord ? !leases.holds_any(i) : !leases.holds_slot(i, slot)) continue;
    if (!detail::token_is_dead(owner & ~detail::kRecoveringBit)) continue;
    if (dead != nullptr) {
      dead->push_back("process " +
                      std::to_string(detail::token_pid(owner & ~detail::kRecoveringBit)) +
                      " died holding leases (registry entry " + std::to_string(i) + ")");
      continue;
    }
    // Acquire: the records as the dead owner left them.
    if (!e.owner.compare_exchange_strong(owner, me | detail::kRecoveringBit,
                                         std::memory_order_acquire))
      continue;
    n += leases.recover(i);
    e.owner.store(0,
                  std::memory_order_release);  // Release: the recovered records are visible first
  }
  return n;
}

// Cost units the lease records hold on slot `index` of generation `meta`
// (HELD, or RELEASING whose decrement has not landed).
u64 Limiter::Impl::lease_records_cost(std::uint32_t index, u64 meta) const noexcept {
  u64 sum = 0;
  const auto* areas =
      reinterpret_cast<const detail::LeaseArea*>(seg->base() + seg->geometry().lease_offset);
  for (std::uint32_t e = 0; e < detail::kMaxProcesses; ++e) {
    for (std::uint32_t r = 0; r < detail::kLeaseRecords; ++r) {
      // Acquire: the cost was written before the state.
      const u64 c = areas[e].records[r].ctl.load(std::memory_order_acquire);
      const u64 st = detail::LeaseCtl::state(c);
      if ((st == detail::kLeaseHeld || st == detail::kLeaseReleasing) &&
          detail::LeaseCtl::slot(c) == index &&
          detail::LeaseCtl::gen(c) == (detail::Meta::gen(meta) & detail::kLeaseGenMask)) {
        sum += areas[e].records[r].cost.load(std::memory_order_relaxed);
      }
    }
  }
  return sum;
}

// Cost units held per (slot, generation) by every lease record: one pass
// over the lease areas for check(). Key: slot << 19 | generation bits.
std::unordered_map<u64, u64> Limiter::Impl::lease_costs() const {
  std::unordered_map<u64, u64> out;
  const auto* areas =
      reinterpret_cast<const detail::LeaseArea*>(seg->base() + seg->geometry().lease_offset);
  for (std::uint32_t e = 0; e < detail::kMaxProcesses; ++e) {
    // Relaxed: a hint; a slot whose sum disagrees is re-read on its own.
    if (areas[e].used.load(std::memory_order_relaxed) == 0) continue;
    for (std::uint32_t r = 0; r < detail::kLeaseRecords; ++r) {
      // Acquire: the cost was written before the state.
      const u64 c = areas[e].records[r].ctl.load(std::memory_order_acquire);
      const u64 st = detail::LeaseCtl::state(c);
      if (st == detail::kLeaseHeld || st == detail::kLeaseReleasing) {
        out[(u64{detail::LeaseCtl::slot(c)} << 19) | detail::LeaseCtl::gen(c)] +=
            areas[e].records[r].cost.load(std::memory_order_relaxed);
      }
    }
  }
  return out;
}

// check(): a concurrency slot's in-flight count equals what its lease
// records hold (when no operation is pending; read twice, as leases may
// be taken and released meanwhile). Empty when consistent.
std::string Limiter::Impl::check_lease_count(std::uint32_t index, u64 meta, u64 word,
                                             const std::unordered_map<u64, u64>& costs) const {
  PolicySnapshot p;
  if (!load_policy(static_cast<std::uint32_t>(detail::Meta::policy(meta)), &p) || !p.valid ||
      !p.algorithm_is_lease()) {
    return {};
  }
  for (int attempt = 0;; ++attempt) {
    const u64 payload = detail::Word::payload(word);
    u64 held = 0;
    if (attempt == 0) {
      const auto it =
          costs.find((u64{index} << 19) | (detail::Meta::gen(meta) & detail::kLeaseGenMask));
      held = it == costs.end() ? 0 : it->second;
    } else {
      held = lease_records_cost(index, meta);
    }
    if (detail::lease_pending(payload).op != detail::LeaseOp::kNone ||
        held == detail::lease_count(payload))
      return {};
    if (attempt == 1) {
      return "in-flight count " + std::to_string(detail::lease_count(payload)) +
             " but lease records hold " + std::to_string(held);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    word = table.head(index).word.load(std::memory_order_acquire);
    if (detail::Word::version(word) != detail::Meta::version(meta)) return {};
  }
}

Lease Limiter::Impl::lease(std::uint32_t policy, std::string_view key, u64 cost) noexcept {
  Lease out;
  const std::int64_t now = this->now();
  PolicySnapshot p;
  if (auto early = precheck(policy, key, now, &p)) {
    out.decision_ = *early;
  } else if (!p.algorithm_is_lease()) {
    out.decision_ = unknown_policy();
  } else {
    out.decision_ = lease_decide(p, policy, key, cost, &out);
    if (out.held()) {
      if (cost > 0) counters.add(policy, true);  // a granted lease is an admitted decision
      return out;
    }
  }
  // Counted in the totals (a cost-0 lease is a peek: not counted), and a
  // denied lease goes to the recent-denials ring, as a denied acquire.
  if (cost > 0 && out.decision_.reason != Reason::kUnknownPolicy)
    counters.add(policy, out.decision_.allowed);
  noted(policy, key, cost, now, out.decision_);
  // Fail open (on_full = allow): granted without a record; releasing it gives nothing back.
  if (out.decision_.allowed && out.decision_.reason != Reason::kOk && cost > 0) {
    out.impl_ = this;
    out.entry_ = kNoRecord;
    out.pid_ = static_cast<std::int32_t>(detail::token_pid(detail::self_token()));
  }
  return out;
}

Decision Limiter::Impl::lease_decide(const PolicySnapshot& p, std::uint32_t policy,
                                     std::string_view key, u64 cost, Lease* out) noexcept {
  const u64 limit = p.algo.count;
  const detail::PackedKey pk(seed, policy, key);
  detail::SlotRef ref;
  const bool peek = seg->read_only() || cost == 0;
  if (!peek && cost > limit)
    return detail::lease_acquire_step(0, limit, cost, {}).decision;  // never fits
  const std::uint32_t entry = peek ? 0 : own_entry_index();
  if (!peek && entry == 0) {  // the registry is full: no records of our own
    count(&detail::ProcessEntry::full_events);
    return fallback(p, Reason::kTableFull);
  }
  for (int reclaims = 0;;) {
    if (!table.find(pk, &ref)) {
      if (peek) return detail::lease_report(0, limit);
      if (auto failed = claim(p, pk, now(), 0, &ref)) return *failed;
    }
    if (peek) return detail::lease_report(detail::Word::payload(ref.word), limit);
    detail::SlotHead& h = table.head(ref.index);
    Decision d;
    std::uint32_t record = 0;
    u64 ctl = 0;
    switch (leases.acquire(ref, entry, limit, cost, &record, &ctl, &d)) {
      case detail::Leases::Result::kGranted:
        detail::approx_add(h.admitted);  // per key, approximate
        out->impl_ = this;
        out->entry_ = entry;
        out->record_ = record;
        out->ctl_ = ctl;
        out->pid_ = static_cast<std::int32_t>(detail::token_pid(detail::self_token()));
        return d;
      case detail::Leases::Result::kRelookup:
        continue;
      case detail::Leases::Result::kNoRecord:
        count(&detail::ProcessEntry::full_events);
        return fallback(p, Reason::kTableFull);
      case detail::Leases::Result::kDenied:
        break;
    }
    // Denied: leases held by dead processes on this key are reclaimed
    // first (at most one registry scan per kLeaseScanNs per handle).
    const std::int64_t t = now();
    if (reclaims < 2 && t - last_lease_scan.load(std::memory_order_relaxed) >= kLeaseScanNs) {
      last_lease_scan.store(t, std::memory_order_relaxed);
      ++reclaims;
      if (reclaim_dead_leases(ref.index) > 0) continue;
    }
    detail::approx_add(h.denied);  // per key, approximate
    return d;
  }
}

Lease Limiter::lease(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->lease(policy.index, key, cost);
}

Lease::Lease(Lease&& other) noexcept
    : impl_(std::exchange(other.impl_, nullptr)),
      entry_(other.entry_),
      record_(other.record_),
      ctl_(other.ctl_),
      pid_(other.pid_),
      decision_(other.decision_) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    impl_ = std::exchange(other.impl_, nullptr);
    entry_ = other.entry_;
    record_ = other.record_;
    ctl_ = other.ctl_;
    pid_ = other.pid_;
    decision_ = other.decision_;
  }
  return *this;
}

Lease::~Lease() { release(); }

bool Lease::release() noexcept {
  Limiter::Impl* impl = std::exchange(impl_, nullptr);
  if (impl == nullptr) return false;
  // A fork()ed child's copy: the record belongs to the parent.
  if (static_cast<std::int32_t>(detail::token_pid(detail::self_token())) != pid_) return false;
  if (entry_ == Limiter::Impl::kNoRecord) return true;  // granted by on_full = allow: nothing taken
  return impl->leases.release(entry_, record_, ctl_);
}

}  // namespace shmlimit
