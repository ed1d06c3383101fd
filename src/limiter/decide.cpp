// One decision: acquire, peek and refund on one bucket (limiter_impl.hpp).
// The hot path: a policy snapshot from the process-local cache, a probe of
// the table, the algorithm, and one CAS on the key's own slot.
#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "limiter/limiter_impl.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::u64;

using detail::PolicySnapshot;

std::string_view to_string(Reason reason) noexcept {
  switch (reason) {
    case Reason::kOk:
      return "ok";
    case Reason::kTableFull:
      return "table_full";
    case Reason::kKeyTooLong:
      return "key_too_long";
    case Reason::kUnknownPolicy:
      return "unknown_policy";
    case Reason::kCostTooHigh:
      return "cost_too_high";
    case Reason::kContended:
      return "contended";
    case Reason::kClockHorizon:
      return "clock_horizon";
    case Reason::kCorrupt:
      return "corrupt";
    case Reason::kNeedsLease:
      return "needs_lease";
  }
  return "unknown";
}

void Limiter::Impl::record_denial(std::string_view key,
                                  const detail::DenialFold::Denial& d) const noexcept {
  // The fold is this thread's; a fork()ed child's only thread starts afresh
  // (its parent's records are the parent's). Registered once per process.
  static const bool cleared_in_children =
      ::pthread_atfork(nullptr, nullptr, [] { detail::t_denial_fold = detail::DenialFold{}; }) == 0;
  (void)cleared_in_children;
  post_denials();
  const detail::DenialFold::Step s = detail::t_denial_fold.step(counters.id(), key, d);
  if (s.folded) return;
  if (s.has_flush) {
    char bytes[16];
    std::memcpy(bytes, s.flush_words, sizeof bytes);
    denial_ring().record(s.flush.time_ns, s.flush.policy, s.flush.reason,
                         std::string_view(bytes, s.flush_len), s.flush.cost, s.flush.retry_after,
                         s.flush_repeats);
  }
  denial_ring().record(d.time_ns, d.policy, d.reason, key, d.cost, d.retry_after, s.repeats);
}

void Limiter::Impl::post_denials() const noexcept {
  detail::DenialFold& f = detail::t_denial_fold;
  if (f.unposted == 0) return;
  if (f.handle == counters.id() && f.post_slot < table.capacity() && !read_only) {
    detail::SlotHead& h = table.head(f.post_slot);
    // Relaxed: a statistic; the version only tells whether the slot still
    // holds the key (a reclaim moves it), as Table::update's guard does.
    if (detail::Word::version(h.word.load(std::memory_order_relaxed)) == f.post_version)
      detail::approx_add(h.denied, f.unposted);
  }
  f.unposted = 0;
}

// ReclaimPolicy: a bucket may be reclaimed when its algorithm says it is
// indistinguishable from an absent key.
bool Limiter::Impl::is_full(std::uint32_t policy, u64 payload, std::int64_t now) const noexcept {
  PolicySnapshot p;
  if (!load_policy(policy, &p) || !p.valid) return true;  // unusable entry: nothing to keep
  return detail::algo_is_full(p.algo, payload, now);
}

std::optional<Decision> Limiter::Impl::precheck(std::uint32_t& policy, std::string_view key,
                                                std::int64_t now,
                                                PolicySnapshot* p) const noexcept {
  if (!resolve_policy(&policy, p)) return unknown_policy();
  if (!p->valid) {
    count(&detail::ProcessEntry::other_events);
    return fallback(*p, Reason::kCorrupt);
  }
  if (key.size() > table.key_capacity()) {
    count(&detail::ProcessEntry::other_events);
    return fallback(*p, Reason::kKeyTooLong);
  }
  if (now > detail::kClockHorizonNs - p->margin) {
    count(&detail::ProcessEntry::other_events);
    return fallback(*p, Reason::kClockHorizon);
  }
  return std::nullopt;
}

std::optional<Decision> Limiter::Impl::claim(const PolicySnapshot& p, const detail::PackedKey& pk,
                                             std::int64_t now, u64 state,
                                             detail::SlotRef* ref) noexcept {
  detail::ClaimEvents ev;
  const auto r = table.claim(pk, now, state, *this, claim_timeout_ns, ref, &ev);
  count(&detail::ProcessEntry::repairs, ev.repairs);
  if (r == detail::Table::ClaimResult::kFull) {
    count(&detail::ProcessEntry::full_events);
    return fallback(p, Reason::kTableFull);
  }
  if (r == detail::Table::ClaimResult::kContended) {
    count(&detail::ProcessEntry::contended_events);
    return fallback(p, Reason::kContended);
  }
  return std::nullopt;
}

inline Decision Limiter::Impl::decide(const PolicySnapshot& p, std::uint32_t policy,
                                      std::string_view key, u64 cost, std::int64_t now, Op op,
                                      Charge* charge, bool live_clock) noexcept {
  if (seg->read_only() && (op == Op::kAcquire || is_tally(op))) op = Op::kPeek;
  // A tally whose policy was replaced by another algorithm since tally()
  // checked it: algo_tally's corrupt answer, nothing stored (the sliding
  // log's path below would otherwise take it for an acquire).
  if (is_tally(op) && p.algo.algorithm != Algorithm::kQuietPeriod) [[unlikely]]
    return detail::algo_tally(p.algo, 0, now, cost, false).decision;
  const detail::PackedKey pk(seed, policy, key);
  if (p.algo.algorithm == Algorithm::kSlidingLog)
    return log_apply(p, pk, cost, now, op, charge, live_clock);
  if (p.algorithm_is_lease() && op == Op::kAcquire) return needs_lease(p);
  detail::SlotRef ref;
  for (;;) {
    if (!table.find(pk, &ref)) {
      // Absent = full bucket (invariant: indistinguishable). If the key
      // was reclaimed by a process whose clock reading is later than ours,
      // our older reading would start the new bucket in its past and give
      // time back: read the clock again, after the failed lookup.
      if (live_clock) now = std::max(now, this->now_exact());
      const u64 fresh_state = p.fresh_state(now);
      const detail::AlgoOutcome fresh =
          is_tally(op) ? detail::algo_tally(p.algo, fresh_state, now, cost, op == Op::kTallyRestart)
                       : decide_state(p, fresh_state, now, op == Op::kRefund ? 0 : cost);
      // A peek, a refund, cost 0 or a cost that can never fit never
      // takes a slot: there is nothing to store.
      if ((op != Op::kAcquire && !is_tally(op)) || !fresh.store) return fresh.decision;
      if (auto failed = claim(p, pk, now, fresh_state, &ref)) return *failed;
    }
    detail::SlotHead& h = table.head(ref.index);
    const u64 version = detail::Word::version(ref.word);
    u64 w = ref.word;
    detail::AlgoOutcome out;
    // The one write of a decision (Table::update: relaxed, guarded by the
    // word's version against a slot reclaimed for another key).
    const detail::UpdateResult r = table.update(ref.index, version, &w, [&](u64 state) noexcept {
      // Field by field (set_outcome): no wide copy of freshly stored bytes.
      if (op == Op::kRefund) {
        detail::set_outcome(out, detail::algo_refund(p.algo, state, now, cost));
      } else if (is_tally(op)) {
        detail::set_outcome(out,
                            detail::algo_tally(p.algo, state, now, cost, op == Op::kTallyRestart));
      } else {
        detail::set_outcome(out, decide_state(p, state, now, cost));
      }
      // A charge of acquire_many (charge given) stores only an admission.
      return op == Op::kPeek || !out.store || (charge != nullptr && !out.decision.allowed)
                 ? detail::SlotStep::leave()
                 : detail::SlotStep::store(out.new_state);
    });
    // The per-key count (approximate, table.hpp); the exact totals are
    // counted by the caller (counters.hpp).
    if (r != detail::UpdateResult::kReclaimed && op == Op::kAcquire)
      detail::count_per_key(h, r, out.decision.allowed);
    if (r == detail::UpdateResult::kUnchanged) return detail::copy_fields(out.decision);
    if (r == detail::UpdateResult::kStored) {
      if (op == Op::kAcquire) {
        if (charge != nullptr && out.decision.allowed) *charge = Charge{true, ref.index, version};
      }
      return detail::copy_fields(out.decision);
    }
    // Reclaimed since the lookup (our bucket had become full): look the
    // key up again.
  }
}

// The checks of precheck(), on the cached snapshot: a hit is a valid,
// unretired entry (cached_policy), so only the key length and the clock
// horizon remain; anything else takes apply_slow, which decides exactly as
// before.
Decision Limiter::Impl::apply(std::uint32_t policy, std::string_view key, u64 cost,
                              std::int64_t now, Op op, Charge* charge, bool live_clock) noexcept {
  now = std::max<std::int64_t>(now, 0);
  const PolicySnapshot* hot = cached_policy(policy);
  if (hot != nullptr && hot->valid && key.size() <= table.key_capacity() &&
      now <= detail::kClockHorizonNs - hot->margin) [[likely]] {
    return decide(*hot, policy, key, cost, now, op, charge, live_clock);
  }
  return apply_slow(policy, key, cost, now, op, charge, live_clock);
}

Decision Limiter::Impl::apply_slow(std::uint32_t policy, std::string_view key, u64 cost,
                                   std::int64_t now, Op op, Charge* charge,
                                   bool live_clock) noexcept {
  PolicySnapshot p;
  if (auto early = precheck(policy, key, now, &p)) return *early;
  return decide(p, policy, key, cost, now, op, charge, live_clock);
}

// The fast path of acquire (Acquire) and peek. Everything it checks, apply()
// checks again on a miss, and nothing is written before the one CAS (or,
// denied, the counts), so a miss costs only the reads it made. What it
// leaves to apply(): an acquire on a read-only map (it peeks there), the
// claim of a new key, the sliding log and leases (state beyond the word),
// keys longer than a ShortKey, the clock horizon. A hit decides exactly as
// decide() would: the same decision on the same word (gcra_decide_into
// inlined for GCRA, algo_decide for the other word algorithms), the same
// one CAS through Table::update, the same counts.
//
// The order is the speed: the key is packed and hashed and its home slot
// prefetched (for writing, on an acquire) before the clock is read. The
// vDSO's ordered TSC read (RDTSCP) waits for earlier instructions, so the
// hash now precedes it (about 2 ns on a hot key), but the slot's cache
// miss runs during the clock read instead of after it: an acquire on one
// of many cold keys costs a third less (bench/README.md). `live`: `now` is read here, between the
// two (and on an early miss, before returning), else it is the caller's instant.
template <bool Acquire>
[[gnu::always_inline]] inline bool Limiter::Impl::fast_decide(std::uint32_t policy,
                                                              std::string_view key, u64 cost,
                                                              std::int64_t& now, bool live,
                                                              Decision* out) noexcept {
  if (key.size() > 16 || (Acquire && read_only)) [[unlikely]] {
    if (live) now = this->now();
    return false;
  }
  const detail::ShortKey pk(seed, policy, key);
  table.prefetch_home<Acquire>(pk);
  if (live) now = this->now();
  const PolicySnapshot* p = cached_policy(policy);
  if (p == nullptr || p->algo.algorithm == Algorithm::kSlidingLog || p->algorithm_is_lease() ||
      !p->valid || now < 0 || now > detail::kClockHorizonNs - p->margin) [[unlikely]]
    return false;
  detail::SlotRef ref;
  if (!table.find(pk, &ref)) [[unlikely]]
    return false;  // a new key (or one reclaimed): the claim path
  const detail::GcraParams params{p->algo.emission_ns, p->algo.burst, p->reciprocal};
  const bool gcra = p->algo.algorithm == Algorithm::kGcra;
  // The one write (Table::update: relaxed, as in decide(); guarded by the
  // word's version against a slot reclaimed for another key). GCRA decides
  // only the word before the CAS (gcra_step) and writes the caller's
  // Decision of an admission after it, from the same state
  // (gcra_decide_into): the locked instruction waits on none of the
  // Decision's arithmetic or stores.
  Decision& d = *out;
  u64 w = ref.word;
  u64 seen = 0;          // the state the last step decided on
  bool allowed = false;  // its answer
  const detail::UpdateResult r =
      table.update(ref.index, detail::Word::version(ref.word), &w, [&](u64 state) noexcept {
        bool store = false;
        u64 next = 0;
        if (gcra) [[likely]] {
          seen = state;
          allowed = detail::gcra_step(state, now, cost, params, store, next);
          // A refusal stores nothing and no CAS follows: its Decision now.
          if (!allowed) detail::gcra_decide_into(state, now, cost, params, d, store, next);
        } else {
          // The other algorithms whose whole state is the word, as
          // decide_state (valid policy, `now` within its horizon: checked above).
          const detail::AlgoOutcome o = detail::algo_decide_valid(p->algo, state, now, cost);
          d = detail::copy_fields(o.decision);
          allowed = o.decision.allowed;
          store = o.store;
          next = o.new_state;
        }
        return Acquire && store ? detail::SlotStep::store(next) : detail::SlotStep::leave();
      });
  if (r == detail::UpdateResult::kReclaimed) [[unlikely]]
    return false;  // the key left its slot meanwhile: look it up again, in apply()
  // Per key, approximate (table.hpp): a stored decision at once, as the
  // slot's line is this core's just after the CAS (another process's
  // decision on the key may take it back at any moment after); a refusal
  // that stored nothing through the denial fold below, which writes no
  // shared line for the repeats of a flood.
  if constexpr (Acquire) {
    if (r == detail::UpdateResult::kStored)
      detail::count_per_key(table.head(ref.index), r, allowed);
  }
  if (gcra && allowed) [[likely]] {
    bool store = false;
    u64 next = 0;
    detail::gcra_decide_into(seen, now, cost, params, d, store, next);
  }
  if constexpr (!Acquire) return true;
  // The exact totals are the counter blocks.
  counters.add(policy, allowed);
  // A denial is folded or recorded as noted() does (no read-only map and
  // no unknown policy come this far), from the key's packed words: a flood's
  // denial does not read the key's bytes again.
  if (!allowed) [[unlikely]] {
    detail::DenialFold& fold = detail::t_denial_fold;
    const bool unchanged = r == detail::UpdateResult::kUnchanged;
    if (fold.absorb_words(counters.id(), pk.len, pk.words[0], pk.words[1], now, policy, d.reason,
                          cost, d.retry_after)) {
      if (unchanged && fold.defer_per_key(ref.index, detail::Word::version(ref.word)) >=
                           detail::kDenialPostBatch) [[unlikely]]
        post_denials();
    } else {
      record_denial(key, detail::DenialFold::Denial{now, policy, d.reason, cost, d.retry_after});
      if (unchanged) detail::approx_add(table.head(ref.index).denied);
    }
  }
  return true;
}

// The decision is built once, in the caller's return slot (`d` is the
// returned object), and only its byte-sized fields are read back: no copy of
// a Decision whose narrow fields were just stored (a store-forwarding stall
// on the way out).
Decision Limiter::acquire(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  Impl& m = *impl_;
  std::int64_t now = 0;
  Decision d;
  if (m.fast_decide<true>(policy.index, key, cost, now, true, &d)) [[likely]]
    return d;
  d = m.apply(policy.index, key, cost, now, Impl::Op::kAcquire, nullptr, true);
  m.counted(policy.index, key, cost, now, d);
  return d;
}

Decision Limiter::acquire(std::string_view policy, std::string_view key,
                          std::uint64_t cost) noexcept {
  Impl& m = *impl_;
  const auto i = m.find_policy(policy);
  if (!i) return Impl::unknown_policy();
  std::int64_t now = 0;
  Decision d;
  if (m.fast_decide<true>(*i, key, cost, now, true, &d)) [[likely]]
    return d;
  d = m.apply(*i, key, cost, now, Impl::Op::kAcquire, nullptr, true);
  m.counted(*i, key, cost, now, d);
  return d;
}

Decision Limiter::Impl::acquire_one(std::uint32_t policy, std::string_view key, u64 cost,
                                    std::int64_t now) noexcept {
  now = std::max<std::int64_t>(now, 0);  // as apply(), and so in the denial ring
  Decision d;
  std::int64_t at = now;
  if (fast_decide<true>(policy, key, cost, at, false, &d)) [[likely]]
    return d;
  d = apply(policy, key, cost, now, Op::kAcquire);
  counted(policy, key, cost, now, d);
  return d;
}

Decision Limiter::acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                             Nanos now) noexcept {
  return impl_->acquire_one(policy.index, key, cost, now.count());
}

Decision Limiter::peek(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  Impl& m = *impl_;
  std::int64_t now = 0;
  Decision d;
  if (m.fast_decide<false>(policy.index, key, cost, now, true, &d)) [[likely]]
    return d;
  d = m.apply(policy.index, key, cost, now, Impl::Op::kPeek, nullptr, true);
  return d;
}

Decision Limiter::tally(PolicyId policy, std::string_view key, std::uint64_t amount, bool restart) {
  Impl& m = *impl_;
  std::uint32_t index = policy.index;
  detail::PolicySnapshot p;
  if (m.resolve_policy(&index, &p) && p.valid && p.algo.algorithm != Algorithm::kQuietPeriod) {
    throw Error(ErrorCode::kInvalidArgument, "tally() counts in a quiet_period policy; policy " +
                                                 std::to_string(policy.index) + " is " +
                                                 std::string(to_string(p.algo.algorithm)));
  }
  return m.apply(policy.index, key, amount, m.now(),
                 restart ? Impl::Op::kTallyRestart : Impl::Op::kTally, nullptr, true);
}

Decision Limiter::refund(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->apply(policy.index, key, cost, impl_->now(), Impl::Op::kRefund);
}

}  // namespace shmlimit
