// The exact sliding log's shared-memory protocol (limiter_impl.hpp): the
// entries of a key's log are claimed by CAS, then the admission is
// recorded in the slot's word. The pure decision is
// algorithms/sliding_log.hpp; doc/design.md argues the bound.
#include <algorithm>
#include <span>
#include <vector>

#include "algorithms/sliding_log.hpp"
#include "limiter/limiter_impl.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::u64;

using detail::PolicySnapshot;

Decision Limiter::Impl::log_apply(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost,
                                  std::int64_t now, Op op, Charge* charge,
                                  bool live_clock) noexcept {
  // A policy whose count exceeds the segment's log (a hostile or buggy
  // writer; add_policy refuses it) would index past the slot's entries.
  if (p.algo.count > log_entries) {
    count(&detail::ProcessEntry::other_events);
    return fallback(p, Reason::kCorrupt);
  }
  if (p.algo.count <= 64) {
    LogBuffers<64> b;
    return log_run(p, pk, cost, now, op, charge, live_clock, b.snap, b.pick, b.scratch);
  }
  return log_apply_large(p, pk, cost, now, op, charge, live_clock);
}

// Counts above 64: 80 KiB of stack, in a frame of its own so that the
// common small logs do not reserve it.
[[gnu::noinline]] Decision Limiter::Impl::log_apply_large(const PolicySnapshot& p,
                                                          const detail::PackedKey& pk, u64 cost,
                                                          std::int64_t now, Op op, Charge* charge,
                                                          bool live_clock) noexcept {
  LogBuffers<detail::kMaxLogEntries> b;
  return log_run(p, pk, cost, now, op, charge, live_clock, b.snap, b.pick, b.scratch);
}

Decision Limiter::Impl::log_run(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost,
                                std::int64_t now, Op op, Charge* charge, bool live_clock, u64* snap,
                                std::uint32_t* pick, std::int64_t* scratch) noexcept {
  const detail::LogParams lp{p.algo.count, p.algo.period_ns, p.algo.wait};
  const auto n = static_cast<std::uint32_t>(lp.count);
  const std::span<u64> entries(snap, n);
  const std::span<std::uint32_t> picks(pick, n);
  const std::span<std::int64_t> work(scratch, n);
  detail::SlotRef ref;
  for (;;) {
    if (!table.find(pk, &ref)) {
      if (live_clock)
        now = std::max(now, this->now_exact());  // as in apply(): never start in the past
      std::fill(entries.begin(), entries.end(), u64{0});
      const detail::LogOutcome fresh =
          detail::log_decide(lp, entries, 0, now, op == Op::kRefund ? 0 : cost, picks, work);
      if (op != Op::kAcquire || fresh.chosen == 0) return fresh.decision;
      if (auto failed = claim(p, pk, now, 0, &ref)) return *failed;
    }
    const u64 v = detail::Word::version(ref.word);
    AtomicU64* log = log_of(ref.index);
    detail::SlotHead& h = table.head(ref.index);
    // Relaxed loads and CASes on the entries: the bound "at most N in
    // any window" is argued entry by entry (sliding_log.hpp), from each
    // entry's own modification order; the word's CAS below (an RMW, so
    // it reads the latest word) is what tells a stale view of the slot.
    for (std::uint32_t i = 0; i < n; ++i) entries[i] = log[i].load(std::memory_order_relaxed);
    if (op == Op::kRefund) return log_refund(lp, log, entries, v, now, cost, picks, work);
    const detail::LogOutcome out = detail::log_decide(lp, entries, v, now, cost, picks, work);
    if (op == Op::kPeek || out.chosen == 0) {
      if (op == Op::kAcquire && !out.decision.allowed)
        detail::approx_add(h.denied);  // per key, approximate
      return out.decision;
    }
    // Claim the chosen entries; a lost CAS (another admission took the
    // entry) gives back what this one took and decides again.
    const u64 mine = detail::log_entry(v, now);
    std::uint32_t taken = 0;
    for (; taken < out.chosen; ++taken) {
      u64 expected = entries[picks[taken]];
      if (!log[picks[taken]].compare_exchange_strong(expected, mine, std::memory_order_relaxed))
        break;
    }
    if (taken < out.chosen) {
      log_give_back(log, picks, taken, mine);
      continue;
    }
    // Record the admission in the word: the log is empty no sooner than
    // now + D. A reclaim or reset (version moved) since our lookup makes
    // this fail: the entries were written for a key that is gone.
    // Relaxed (Table::update's default): as the entries; the word's
    // version is the guard (ABA).
    u64 w = h.word.load(std::memory_order_relaxed);
    const bool landed = table.update(ref.index, v, &w, [&](u64 payload) noexcept {
      return detail::SlotStep::store(detail::log_word_after(payload, now, lp.window_ns));
    }) == detail::UpdateResult::kStored;
    if (!landed) {
      log_give_back(log, picks, out.chosen, mine);
      continue;  // look the key up again
    }
    if (op == Op::kAcquire) {
      detail::approx_add(h.admitted);  // per key, approximate
      if (charge != nullptr) *charge = Charge{true, ref.index, v};
    }
    return out.decision;
  }
}

// Frees the first `n` entries of `picks` that still hold `mine`.
void Limiter::Impl::log_give_back(AtomicU64* log, const std::span<std::uint32_t> picks,
                                  std::uint32_t n, u64 mine) noexcept {
  for (std::uint32_t k = 0; k < n; ++k) {
    u64 expected = mine;
    log[picks[k]].compare_exchange_strong(expected, 0,
                                          std::memory_order_relaxed);  // Relaxed: as in log_run
  }
}

// refund(): forgets the `cost` newest live admissions (DRF has no refund;
// this gives back the most recent ones).
Decision Limiter::Impl::log_refund(const detail::LogParams& lp, AtomicU64* log,
                                   std::span<u64> entries, u64 v, std::int64_t now, u64 cost,
                                   std::span<std::uint32_t> picks,
                                   std::span<std::int64_t> work) noexcept {
  std::uint32_t live = 0;
  for (std::uint32_t i = 0; i < entries.size(); ++i) {
    if (detail::log_classify(entries[i], v, now, lp.window_ns) == detail::LogEntryKind::kLive)
      picks[live++] = i;
  }
  std::sort(picks.begin(), picks.begin() + live,
            [&](std::uint32_t a, std::uint32_t b) { return entries[a] > entries[b]; });
  for (std::uint32_t k = 0; k < live && k < cost; ++k) {
    u64 expected = entries[picks[k]];
    if (log[picks[k]].compare_exchange_strong(expected, 0, std::memory_order_relaxed))
      entries[picks[k]] = 0;
  }
  return detail::log_decide(lp, entries, v, now, 0, picks, work).decision;
}

// acquire_many's rollback: the admission wrote `cost` entries equal to
// log_entry(version, now); any `cost` of them are equivalent.
void Limiter::Impl::log_undo(const PolicySnapshot& p, const Charge& c, u64 cost,
                             std::int64_t now) noexcept {
  if (p.algo.count > log_entries) return;
  AtomicU64* log = log_of(c.slot);
  const u64 mine = detail::log_entry(c.version, now);
  u64 left = cost;
  for (std::uint32_t i = 0; i < p.algo.count && left > 0; ++i) {
    u64 expected = mine;
    if (log[i].compare_exchange_strong(expected, 0, std::memory_order_relaxed))
      --left;  // Relaxed: as in log_run
  }
  if (left < cost)
    detail::approx_add(table.head(c.slot).admitted, ~u64{0});  // -1, per key, approximate
}

// reset(): the slot's key (generation of `meta`) is gone; clear its
// entries so that they are not left as garbage until they expire.
void Limiter::Impl::log_forget(std::uint32_t index, u64 meta) noexcept {
  if (log_entries == 0) return;
  AtomicU64* log = log_of(index);
  const u64 v = detail::Meta::version(meta);
  for (std::uint32_t i = 0; i < log_entries; ++i) {
    u64 e = log[i].load(std::memory_order_relaxed);
    if (e != 0 && detail::log_entry_version(e) == v)
      log[i].compare_exchange_strong(e, 0, std::memory_order_relaxed);
  }
}

// import_state(): the key in slot `index` (version `v`) of a sliding-log
// policy gets exactly the admissions `times` (its other entries are
// freed). Relaxed stores, as log_run's entries: the word (already
// stored) says when the log is empty; a decision racing with the import
// of its own key sees either entry value, each a valid admission or none.
void Limiter::Impl::log_store(std::uint32_t policy, std::uint32_t index, u64 v,
                              std::span<const std::int64_t> times) noexcept {
  PolicySnapshot p;
  if (!load_policy(policy, &p) || !p.valid || p.algo.algorithm != Algorithm::kSlidingLog ||
      p.algo.count > log_entries) {
    return;
  }
  AtomicU64* log = log_of(index);
  for (std::uint32_t i = 0; i < p.algo.count; ++i) {
    log[i].store(i < times.size() ? detail::log_entry(v, std::max<std::int64_t>(times[i], 0)) : 0,
                 std::memory_order_relaxed);
  }
}

// The bucket of a live sliding-log slot as it is (dump): cost 0 and 1.
std::pair<Decision, Decision> Limiter::Impl::log_view(const PolicySnapshot& p, std::uint32_t index,
                                                      u64 word, std::int64_t now) const {
  const detail::LogParams lp{p.algo.count, p.algo.period_ns, p.algo.wait};
  std::vector<u64> entries(lp.count <= log_entries ? lp.count : 0);
  std::vector<std::uint32_t> picks(entries.size());
  std::vector<std::int64_t> work(entries.size());
  const AtomicU64* log = log_of(index);
  for (std::size_t i = 0; i < entries.size(); ++i)
    entries[i] = log[i].load(std::memory_order_relaxed);
  const u64 v = detail::Word::version(word);
  return {detail::log_decide(lp, entries, v, now, 0, picks, work).decision,
          detail::log_decide(lp, entries, v, now, 1, picks, work).decision};
}

}  // namespace shmlimit
