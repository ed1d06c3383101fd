// acquire_many: several limits, all or nothing (limiter_impl.hpp). Peek at
// every limit, then charge one by one and give back what was taken if a
// limit filled meanwhile. A single request is decided as acquire_at
// decides it (acquire_one): one request whichever call makes it.
//
// A limit named more than once (the same policy and key) is asked, at its
// k-th mention, for the costs of its first k mentions together: the peek
// then foresees exactly what charging them one after the other does, so a
// request whose mentions fit one by one but not together is refused by
// the peek (cost_too_high when together they exceed the capacity), and its
// retry-after is that of the costs together.
//
// Counting (the exact totals, counters.hpp, and the per-key counts): an
// admitted request is one admitted decision of each limit; a refused one is
// one denied decision of each limit that refused it (every limit whose peek
// refused, or the one limit that refused its charge), and nothing for the
// limits that would have admitted it. A refusal recorded in the recent
// denials carries the cost its limit was asked for (the costs together, for
// a limit named again).
#include <iterator>
#include <vector>

#include "algorithms/decision_fold.hpp"
#include "limiter/limiter_impl.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::u64;

using detail::PolicySnapshot;

// Gives `cost` back to the bucket an acquire charged, if that bucket
// still holds the same generation (otherwise it refilled and was
// reclaimed: nothing is owed).
void Limiter::Impl::undo(const PolicySnapshot& p, const Charge& c, u64 cost,
                         std::int64_t now) noexcept {
  if (p.algo.algorithm == Algorithm::kSlidingLog) return log_undo(p, c, cost, now);
  detail::SlotHead& h = table.head(c.slot);
  u64 w = h.word.load(std::memory_order_relaxed);
  // Relaxed (Table::update's default): as in apply(); the version guards
  // against another key.
  const detail::UpdateResult r = table.update(c.slot, c.version, &w, [&](u64 payload) noexcept {
    const detail::AlgoOutcome out = detail::algo_refund(p.algo, payload, now, cost);
    return out.store ? detail::SlotStep::store(out.new_state) : detail::SlotStep::leave();
  });
  if (r == detail::UpdateResult::kStored)
    detail::approx_add(h.admitted, ~u64{0});  // -1, per key, approximate
}

// What each limit is asked for: its own cost, plus the costs of the
// earlier mentions of the same limit (same policy index and key),
// saturating.
static void asked_costs(std::span<const Request> requests, std::span<u64> asked) noexcept {
  for (std::size_t i = 0; i < requests.size(); ++i) {
    u64 cost = requests[i].cost;
    for (std::size_t j = 0; j < i; ++j) {
      if (requests[j].policy.index == requests[i].policy.index &&
          requests[j].key == requests[i].key) {
        cost = requests[j].cost > ~u64{0} - cost ? ~u64{0} : cost + requests[j].cost;
      }
    }
    asked[i] = cost;
  }
}

Decision Limiter::Impl::acquire_many(std::span<const Request> requests, std::span<Decision> each,
                                     std::int64_t now) noexcept {
  now = std::max<std::int64_t>(now, 0);
  detail::DecisionFold fold;  // decision_fold.hpp
  if (requests.empty()) {
    fold.combined.remaining = 0;
    return fold.combined;
  }
  if (requests.size() == 1) {
    const Decision d =
        acquire_one(requests[0].policy.index, requests[0].key, requests[0].cost, now);
    if (!each.empty()) each[0] = d;
    fold.add(d);
    return fold.combined;
  }
  // Per limit: what its peek asks for, and where it was charged, for a
  // rollback; on the stack for the usual handful of limits.
  u64 small_asked[8];
  Charge small[8];
  std::vector<u64> large_asked;
  std::vector<Charge> large;
  if (requests.size() > std::size(small)) {
    large_asked.resize(requests.size());
    large.resize(requests.size());
  }
  const std::span<u64> asked = large_asked.empty() ? std::span<u64>(small_asked, requests.size())
                                                   : std::span<u64>(large_asked);
  asked_costs(requests, asked);
  // Phase 1: peek at every limit; if any denies, charge none and report
  // every denial (the largest retry-after wins).
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const Decision d = apply(requests[i].policy.index, requests[i].key, asked[i], now, Op::kPeek);
    if (!d.allowed && d.reason != Reason::kUnknownPolicy) {
      counted(requests[i].policy.index, requests[i].key, asked[i], now, d);
      slot_denied(requests[i].policy.index,
                  requests[i].key);  // a peek counts nothing on the slot itself
    }
    if (i < each.size()) each[i] = d;
    fold.add(d);
  }
  if (!fold.combined.allowed) return uncharged(requests, asked, each, now, fold.combined);
  // Phase 2: charge one by one. A limit that another process filled in
  // the meantime denies, writing nothing (the Charge): give back what this
  // request already took, so none is charged. Each charge is checked
  // against its own limit, so no limit is ever exceeded; a rollback only
  // makes others wait briefly.
  fold = detail::DecisionFold();
  Charge* charges = large.empty() ? small : large.data();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const Decision d = apply(requests[i].policy.index, requests[i].key, requests[i].cost, now,
                             Op::kAcquire, &charges[i]);
    if (!d.allowed) counted(requests[i].policy.index, requests[i].key, asked[i], now, d);
    if (i < each.size()) each[i] = d;
    fold.add(d);
    if (!d.allowed) {
      for (std::size_t j = 0; j < i; ++j) {
        PolicySnapshot p;
        if (charges[j].charged && load_policy(resolved(requests[j].policy.index), &p) && p.valid) {
          undo(p, charges[j], requests[j].cost, now);
        }
      }
      return uncharged(requests, asked, each, now, fold.combined);
    }
  }
  for (const Request& r : requests) counters.add(r.policy.index, true);
  return fold.combined;
}

// The per-key count of a refusal found by a peek (approximate, table.hpp).
void Limiter::Impl::slot_denied(std::uint32_t policy, std::string_view key) noexcept {
  if (seg->read_only() || key.size() > table.key_capacity()) return;
  detail::SlotRef ref;
  if (table.find(detail::PackedKey(seed, policy, key), &ref))
    detail::approx_add(table.head(ref.index).denied);
}

// A refused multi-limit request charged nothing: each limit that admitted
// (or would have) reports its bucket as it is (a cost-0 peek: remaining
// and reset-after uncharged), not as after a charge that did not happen
// or was given back. The combined answer stays denied.
Decision Limiter::Impl::uncharged(std::span<const Request> requests, std::span<const u64> asked,
                                  std::span<Decision> each, std::int64_t now,
                                  Decision combined) noexcept {
  detail::DecisionFold fold;
  fold.combined.allowed = false;
  fold.combined.retry_after = combined.retry_after;
  fold.combined.reason = combined.reason;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    Decision d;
    if (i < each.size()) {
      d = each[i];
    } else {
      d = apply(requests[i].policy.index, requests[i].key, asked[i], now, Op::kPeek);
    }
    if (d.allowed) {
      const Decision as_is = apply(requests[i].policy.index, requests[i].key, 0, now, Op::kPeek);
      d.remaining = as_is.remaining;
      d.reset_after = as_is.reset_after;
      if (i < each.size()) each[i] = d;
    }
    fold.add(d);
  }
  return fold.combined;
}

Decision Limiter::acquire_many(std::span<const Request> requests,
                               std::span<Decision> each) noexcept {
  return impl_->acquire_many(requests, each, impl_->now());
}

Decision Limiter::acquire_many_at(std::span<const Request> requests, Nanos now,
                                  std::span<Decision> each) noexcept {
  return impl_->acquire_many(requests, each, now.count());
}

}  // namespace shmlimit
