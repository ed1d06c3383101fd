// The bucket algorithms as pure functions of (params, state, now, cost):
// GCRA's refund (its decision is gcra.hpp), the leaky bucket (a meter, GCRA
// by another name) and the token bucket with discrete refill. Dispatched to
// by algorithms.cpp; conventions there and in algorithms.hpp, formulas in
// doc/algorithms.md.
#include <optional>

#include "algorithms/algorithms_impl.hpp"
#include "algorithms/reserve.hpp"

namespace shmlimit::detail::algo {

// ===========================================================================
// GCRA (gcra.hpp). Refund: a TAT in the future moves back by cost * T, never
// before now (the bucket never holds more than B).
AlgoOutcome gcra_refund(const AlgoParams& p, u64 tat, i64 now, u64 cost) {
  const GcraParams g{p.emission_ns, p.burst};
  u64 next = tat;
  if (tat > static_cast<u64>(now)) {
    const u128 back = static_cast<u128>(cost) * p.emission_ns;
    const u64 debt = tat - static_cast<u64>(now);
    next = back >= debt ? static_cast<u64>(now) : tat - static_cast<u64>(back);
  }
  const GcraOutcome peek = gcra_decide(next, now, 0, g);
  return outcome(peek.decision, next != tat, next);
}

// ===========================================================================
// Leaky bucket as a meter. State: the time the bucket will be empty, ns
// since the epoch. Water is measured as the time it takes to drain:
//   drain    = emission_ns, the time one unit takes to leak out
//   capacity = burst * drain
//   level    = max(empty_at - now, 0)
// A request pours cost * drain in; it is admitted iff the bucket does not
// overflow, and then empty_at = now + level + cost * drain.
// This is GCRA with empty_at = TAT (the tests check it decision by decision).
namespace {

struct Meter {
  u64 drain;     // ns per unit, >= 1
  u64 capacity;  // ns of water the bucket holds, <= 2^55
  u64 units;     // burst
  // Whole units that still fit on top of `level`.
  u64 room(u64 level) const { return level >= capacity ? 0 : (capacity - level) / drain; }
};

}  // namespace

AlgoOutcome leaky_decide(const AlgoParams& p, u64 empty_at, i64 now_in, u64 cost) {
  const Meter m{p.emission_ns, p.burst * p.emission_ns, p.burst};  // product <= 2^55 (valid)
  const auto now = static_cast<u64>(now_in);
  // Above `capacity` only when another process's later reading filled it.
  const u64 level = empty_at > now ? empty_at - now : 0;
  if (cost > m.units) return too_high(m.units, m.room(level), Nanos(static_cast<i64>(level)));
  const u64 poured = level + cost * m.drain;  // each term < 2^57 here
  if (poured <= m.capacity) {
    return outcome(
        make_decision(true, m.units, m.room(poured), Nanos(0), Nanos(static_cast<i64>(poured))),
        cost > 0, now + poured);
  }
  return outcome(make_decision(false, m.units, m.room(level),
                               Nanos(static_cast<i64>(poured - m.capacity)),
                               Nanos(static_cast<i64>(level))));
}

AlgoOutcome leaky_refund(const AlgoParams& p, u64 empty_at, i64 now_in, u64 cost) {
  const auto now = static_cast<u64>(now_in);
  u64 next = empty_at;
  if (empty_at > now) {
    // Take cost units of water back out, never below empty.
    const u128 taken = static_cast<u128>(cost) * p.emission_ns;
    const u64 level = empty_at - now;
    next = taken >= level ? now : empty_at - static_cast<u64>(taken);
  }
  return refunded(leaky_decide, p, next, now_in, next != empty_at);
}

bool leaky_is_full(u64 empty_at, i64 now) { return empty_at <= static_cast<u64>(now); }

// ===========================================================================
// Token bucket with discrete refill (q2_sdk RateLimiter): `count` tokens are
// added at every multiple of `period`, up to `burst`.
//   state bits 20-55  refill index: floor(t / period) of the last update (36 bits)
//   state bits 0-19   missing: burst - tokens at that index (20 bits)
// State 0: index 0, nothing missing: full.
// missing > burst is a legitimate state: a queue of reservations (reserve_tb
// below, algorithms/reserve.hpp) lets the tokens go negative, and the
// refills pay the debt down. Every reader takes it as "no token, the next
// one after the debt": tb_decide denies with the wait behind the queue,
// tb_is_full is false until missing is 0 after the refills (a debt is never
// reclaimed as a full bucket), tb_tokens is 0.
namespace {

struct TbState {
  u64 index = 0;    // refill index the state is valid at
  u64 missing = 0;  // tokens below burst; above it: a debt of queued reservations
};

// The bucket at `now`. An older `now` than the stored index counts as that
// index (no refund). A bucket missing nothing is an absent key: the index it
// was written at does not matter.
TbState tb_at(const AlgoParams& p, u64 state, i64 now) {
  const u64 cur = static_cast<u64>(now) / p.period_ns;  // < 2^36 (valid, now clamped)
  const state_codec::TokenBucket stored = state_codec::TokenBucket::unpack(state);
  TbState s{stored.index, stored.missing};
  if (s.missing == 0 || cur > s.index) {
    if (s.missing != 0) {
      const u128 refill = static_cast<u128>(cur - s.index) * p.count;
      s.missing = refill >= s.missing ? 0 : s.missing - static_cast<u64>(refill);
    }
    s.index = cur;
  }
  return s;
}

u64 tb_tokens(const AlgoParams& p, const TbState& s) {
  return p.burst > s.missing ? p.burst - s.missing : 0;
}

// Time from now to the refill boundary that brings `need` more tokens.
Nanos tb_wait(const AlgoParams& p, const TbState& s, u64 need, i64 now) {
  if (need == 0) return Nanos(0);
  const u128 k = ceil_div(need, p.count);  // count >= 1 (valid)
  return sat_ns((s.index + k) * p.period_ns - static_cast<u128>(now));
}

Decision tb_report(const AlgoParams& p, const TbState& s, i64 now, bool allowed, Nanos retry) {
  return make_decision(allowed, p.burst, tb_tokens(p, s), retry, tb_wait(p, s, s.missing, now));
}

}  // namespace

AlgoOutcome tb_decide(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  TbState s = tb_at(p, state, now);
  if (cost > p.burst) return too_high(p.burst, tb_tokens(p, s), tb_wait(p, s, s.missing, now));
  // Admitted iff missing + cost <= burst. missing > burst is a queue of
  // reservations (reserve_tb): denied, with retry_after the refill boundary
  // behind the queue, where missing + cost - burst tokens have arrived.
  const u64 after = s.missing + cost;  // both < 2^20 here
  if (after > p.burst)
    return outcome(tb_report(p, s, now, false, tb_wait(p, s, after - p.burst, now)));
  s.missing = after;
  return outcome(tb_report(p, s, now, true, Nanos(0)), cost > 0,
                 state_codec::TokenBucket{s.index, s.missing}.pack());
}

AlgoOutcome tb_refund(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  TbState s = tb_at(p, state, now);
  const u64 before = s.missing;
  s.missing = s.missing > cost ? s.missing - cost : 0;
  return refunded(tb_decide, p, state_codec::TokenBucket{s.index, s.missing}.pack(), now,
                  s.missing != before);
}

bool tb_is_full(const AlgoParams& p, u64 state, i64 now) {
  return tb_at(p, state, now).missing == 0;
}

}  // namespace shmlimit::detail::algo

namespace shmlimit::detail {

// The token bucket's reservations (reserve.hpp has the formula). Parameters
// are validated and `now` clamped as algo_decide does, so every division
// here is by a checked count or period.
ReserveOutcome reserve_tb(const AlgoParams& p, u64 state, std::int64_t now_in, u64 cost,
                          std::int64_t max_wait_ns) noexcept {
  using namespace algo;
  ReserveOutcome out;
  Decision& d = out.decision;
  if (p.algorithm != Algorithm::kTokenBucket || !algo_params_valid(p)) {
    d = corrupt_outcome().decision;
    return out;
  }
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  const i64 max_wait = std::clamp<i64>(max_wait_ns, 0, kMaxReserveWaitNs);
  const TbState s = tb_at(p, state & kStatePayloadMask, now);
  const Nanos reset = tb_wait(p, s, s.missing, now);
  if (cost > p.burst) {
    d = too_high(p.burst, tb_tokens(p, s), reset).decision;
    out.delay_ns = std::numeric_limits<i64>::max();
    return out;
  }
  constexpr u64 kMaxMissing = mask(kTbMissingBits);
  const u64 after = s.missing + cost;  // both < 2^20 here
  Nanos turn(0);
  u64 stored = after;
  if (after > p.burst) {
    // The turn: k refills after the index, the first to bring the tokens
    // owed before this reservation (missing - burst, if any) and its cost.
    const u128 k = ceil_div(after - p.burst, p.count);
    turn = tb_wait(p, s, after - p.burst, now);
    // Tokens the bucket could not have held: a real bucket caps at burst
    // at every refill. Before its turn the reservation's share stays below
    // `cost` (else the turn would be earlier), so only the turn's own
    // refill can overflow: by k * count - missing (the refills' tokens
    // past what was owed, above burst). The debt counts them too, so that
    // from the turn on the state is the capped bucket's (burst - cost
    // tokens left), and no more than burst units act at one refill.
    const u128 brought = k * p.count;
    if (brought > s.missing) {
      const u128 lost = brought - s.missing;
      stored = lost > kMaxMissing ? kMaxMissing + 1 : after + static_cast<u64>(lost);
    }
  }
  out.delay_ns = turn.count();
  if (turn.count() > max_wait || turn.count() > kClockHorizonNs - now) {
    d = make_decision(false, p.burst, tb_tokens(p, s), turn, reset);
    return out;
  }
  // The 20-bit field bounds the queue: past it, refused until the refill
  // that makes room (no later than the turn itself, so within max_wait:
  // Limiter::wait asks again then).
  if (stored > kMaxMissing) {
    const Nanos room = tb_wait(p, s, stored - kMaxMissing, now);
    out.delay_ns = room.count();
    d = make_decision(false, p.burst, tb_tokens(p, s), room, reset);
    return out;
  }
  const TbState next{s.index, stored};
  d = make_decision(true, p.burst, tb_tokens(p, next), Nanos(0),
                    tb_wait(p, next, next.missing, now));
  out.store = cost > 0;
  out.new_state = state_codec::TokenBucket{next.index, next.missing}.pack();
  out.span = stored - s.missing;
  return out;
}

std::optional<u64> cancel_tb(const AlgoParams& p, u64 state, std::int64_t now_in, u64 reserved,
                             u64 added, std::int64_t act_at) noexcept {
  using namespace algo;
  if (p.algorithm != Algorithm::kTokenBucket || !algo_params_valid(p)) return std::nullopt;
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  if ((state & kStatePayloadMask) != reserved || now >= act_at) return std::nullopt;
  // Still the last turn, not yet come: the state as if it had never been
  // made, at the index of now. The refills since have paid the bucket down
  // as they would have without it, never below full (max(0, ...), as tb_at).
  const TbState s = tb_at(p, reserved, now);
  const u64 back = std::min(added, s.missing);
  if (back == 0) return std::nullopt;
  return state_codec::TokenBucket{s.index, s.missing - back}.pack();
}

}  // namespace shmlimit::detail
