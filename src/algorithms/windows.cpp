// The window algorithms as pure functions of (params, state, now, cost):
// the fixed window, the sliding window counter and the quiet period.
// Dispatched to by algorithms.cpp; conventions there and in algorithms.hpp,
// formulas in doc/algorithms.md.
#include "algorithms/algorithms_impl.hpp"

namespace shmlimit::detail::algo {

// ===========================================================================
// Fixed window: at most `count` per window [k*period, (k+1)*period).
//   state bits 24-55  window index k (32 bits)
//   state bits 0-23   used in window k (24 bits)
namespace {

struct FwState {
  u64 index = 0;
  u64 used = 0;
};

// An older `now` than the stored window counts in the stored window (no
// refund); a window with nothing used is an absent key.
FwState fw_at(const AlgoParams& p, u64 state, i64 now) {
  const u64 cur = static_cast<u64>(now) / p.period_ns;  // < 2^32 (valid, now clamped)
  const state_codec::FixedWindow stored = state_codec::FixedWindow::unpack(state);
  FwState s{stored.index, stored.used};
  if (s.used == 0 || cur > s.index) s = FwState{cur, 0};
  return s;
}

Nanos fw_until_next(const AlgoParams& p, const FwState& s, i64 now) {
  return sat_ns(static_cast<u128>(s.index + 1) * p.period_ns - static_cast<u128>(now));
}

Decision fw_report(const AlgoParams& p, const FwState& s, i64 now, bool allowed, Nanos retry) {
  return make_decision(allowed, p.count, p.count > s.used ? p.count - s.used : 0, retry,
                       s.used > 0 ? fw_until_next(p, s, now) : Nanos(0));
}

}  // namespace

AlgoOutcome fw_decide(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  FwState s = fw_at(p, state, now);
  if (cost > p.count) {
    const Decision d = fw_report(p, s, now, false, Nanos::max());
    return too_high(p.count, d.remaining, d.reset_after);
  }
  if (s.used + cost > p.count)
    return outcome(fw_report(p, s, now, false, fw_until_next(p, s, now)));
  s.used += cost;  // <= count < 2^24
  return outcome(fw_report(p, s, now, true, Nanos(0)), cost > 0,
                 state_codec::FixedWindow{s.index, s.used}.pack());
}

AlgoOutcome fw_refund(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  FwState s = fw_at(p, state, now);
  const u64 before = s.used;
  s.used = s.used > cost ? s.used - cost : 0;
  return refunded(fw_decide, p, state_codec::FixedWindow{s.index, s.used}.pack(), now,
                  s.used != before);
}

bool fw_is_full(const AlgoParams& p, u64 state, i64 now) { return fw_at(p, state, now).used == 0; }

// ===========================================================================
// Sliding window counter (Python `limits`, Cloudflare): the count of the
// previous fixed window, weighted by the share of it still inside the
// sliding window, plus the count of the current one:
//   estimate = prev * (W - e) / W + cur,  e = now - k*W,  k = floor(now / W)
// admitted iff the estimate after the request is <= count; in integers:
//   prev * (W - e) + (cur + cost) * W <= count * W
//   state bits 32-55  k mod 2^24 (24 bits)
//   state bits 16-31  prev: used in window k - 1 (16 bits)
//   state bits 0-15   cur: used in window k (16 bits)
namespace {

/// How late a reading may be and still be recognised as older than the
/// state it meets (rather than the state being read as 2^24 windows stale)
/// when the 24-bit window index can wrap within the clock horizon.
constexpr u64 kSwLagToleranceNs = 10'000'000'000;  // 10 s

struct SwState {
  u64 index = 0;  // full window index k (not reduced mod 2^24)
  u64 e = 0;      // ns into window k the estimate is taken at
  u64 prev = 0;
  u64 cur = 0;
};

// The window index wraps (2^24 windows) within the clock horizon only for
// windows shorter than 2^56 / 2^24 ns, about 4.29 s.
bool sw_index_wraps(const AlgoParams& p) {
  return (static_cast<u128>(p.period_ns) << kSwIndexBits) <= static_cast<u128>(kHorizon);
}

// The counters at `now`. The stored index is k mod 2^24, compared with now's:
//   same window            -> (prev, cur)
//   stored = k - 1         -> (cur, 0): the current window became the previous
//   stored ahead of k      -> an older reading: the state is taken at the start
//                             of its own window (its most conservative instant)
//   anything else          -> (0, 0): both windows are over
// "Ahead" is exact when the index cannot wrap; otherwise it means at most
// ceil(10 s / W) windows ahead (kSwLagToleranceNs), and a key idle for just
// under a multiple of 2^24 windows is read conservatively (doc/algorithms.md).
// Zero counters are an absent key, whatever their index.
SwState sw_at(const AlgoParams& p, u64 state, i64 now_in) {
  const auto now = static_cast<u64>(now_in);
  const u64 W = p.period_ns;
  const u64 k = now / W;  // W >= 1 ms (valid)
  const state_codec::SlidingWindow packed = state_codec::SlidingWindow::unpack(state);
  SwState s{k, now - k * W, packed.prev, packed.cur};
  if (s.prev == 0 && s.cur == 0) return s;
  const u64 stored = packed.index;
  const u64 ahead = (stored - k) & kSwIndexMask;  // windows from k forward to the stored index
  bool is_ahead = false;
  if (!sw_index_wraps(p)) {
    // Every index of the horizon is below 2^24: the stored one is exact.
    is_ahead = stored > k;
  } else {
    // In 64 bits (ceil_div is 128-bit): <= 10^4 < 2^23.
    const u64 tolerance = kSwLagToleranceNs / W + (kSwLagToleranceNs % W != 0 ? 1 : 0);
    is_ahead = ahead != 0 && ahead <= tolerance;
  }
  if (ahead == 0) return s;
  if (is_ahead) {
    s.index = k + ahead;
    s.e = 0;
    return s;
  }
  if (ahead == kSwIndexMask) {  // stored = k - 1
    s.prev = s.cur;
    s.cur = 0;
    return s;
  }
  s.prev = 0;
  s.cur = 0;
  return s;
}

// Time from now to (start of window index + windows) + e.
Nanos sw_until(const AlgoParams& p, const SwState& s, u64 windows, u128 e, i64 now) {
  return sat_ns(static_cast<u128>(s.index + windows) * p.period_ns + e - static_cast<u128>(now));
}

// Whole units that still fit: floor((count*W - prev*(W - e)) / W) - cur.
u64 sw_remaining(const AlgoParams& p, const SwState& s) {
  const u64 W = p.period_ns;
  const u128 budget = static_cast<u128>(p.count) * W;
  const u128 weighted_prev = static_cast<u128>(s.prev) * (W - s.e);
  if (weighted_prev >= budget) return 0;
  const auto whole = static_cast<u64>((budget - weighted_prev) / W);  // <= count
  return whole > s.cur ? whole - s.cur : 0;
}

Nanos sw_reset(const AlgoParams& p, const SwState& s, i64 now) {
  if (s.cur > 0) return sw_until(p, s, 2, 0, now);   // cur leaves at the end of the next window
  if (s.prev > 0) return sw_until(p, s, 1, 0, now);  // prev's weight reaches 0 at the window's end
  return Nanos(0);
}

bool sw_fits(const AlgoParams& p, const SwState& s, u64 cost) {
  const u64 W = p.period_ns;
  return static_cast<u128>(s.prev) * (W - s.e) + static_cast<u128>(s.cur + cost) * W <=
         static_cast<u128>(p.count) * W;
}

// The earliest instant `cost` fits if nothing else happens, for a denied
// cost <= count. The estimate only falls with time, so solve for e':
//   in this window, if cur + cost <= count (then prev > 0, else it fit):
//     prev * (W - e') <= (count - cur - cost) * W
//     e' = W - floor((count - cur - cost) * W / prev)   (e' = W: next window start)
//   else in the next window, where prev' = cur (> 0) and cur' = 0:
//     e' = W - floor((count - cost) * W / cur)          (e' = W: the one after)
Nanos sw_retry(const AlgoParams& p, const SwState& s, u64 cost, i64 now) {
  const u128 W = p.period_ns;
  if (s.cur + cost <= p.count) {
    const u128 slack = (p.count - s.cur - cost) * W;
    const u128 fit =
        s.prev == 0 ? 0 : std::min<u128>(slack / s.prev, W);  // prev > 0 here: see above
    return sw_until(p, s, 0, W - fit, now);
  }
  const u128 slack = (p.count - cost) * W;
  const u128 fit = s.cur == 0 ? 0 : std::min<u128>(slack / s.cur, W);  // cur > count - cost >= 0
  return sw_until(p, s, 1, W - fit, now);
}

u64 sw_pack(const SwState& s) { return state_codec::SlidingWindow{s.index, s.prev, s.cur}.pack(); }

}  // namespace

AlgoOutcome sw_decide(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  SwState s = sw_at(p, state, now);
  if (cost > p.count) return too_high(p.count, sw_remaining(p, s), sw_reset(p, s, now));
  if (!sw_fits(p, s, cost)) {
    return outcome(make_decision(false, p.count, sw_remaining(p, s), sw_retry(p, s, cost, now),
                                 sw_reset(p, s, now)));
  }
  s.cur += cost;  // <= count < 2^16 (it fit)
  return outcome(make_decision(true, p.count, sw_remaining(p, s), Nanos(0), sw_reset(p, s, now)),
                 cost > 0, sw_pack(s));
}

AlgoOutcome sw_refund(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  SwState s = sw_at(p, state, now);
  const u64 before = s.cur;
  s.cur = s.cur > cost ? s.cur - cost : 0;  // the previous window is history: only cur gives back
  return refunded(sw_decide, p, sw_pack(s), now, s.cur != before);
}

bool sw_is_full(const AlgoParams& p, u64 state, i64 now) {
  const SwState s = sw_at(p, state, now);
  return s.prev == 0 && s.cur == 0;
}

// ===========================================================================
// Quiet period (Redis "strict" limiter: INCR; the first hit sets EXPIRE
// period; an attempt over the limit sets EXPIRE period again). Once a
// request is denied, the key stays blocked until a whole period passes
// without an attempt.
//   state bits 19-55  expires_at: ms since the epoch, rounded up (37 bits)
//   state bits 0-18   used in the current period (19 bits), or kQuietBlocked
// State 0: expired. Expiries are rounded up to a whole ms, so the quiet
// period is never shorter than asked (at most 1 ms longer).
namespace {

struct QpState {
  u64 expires_ms = 0;
  u64 used = 0;       // or kQuietBlocked
  bool open = false;  // a period is running (not expired, something used)
  u64 expires_ns() const { return expires_ms * kMs; }  // < 2^37 * 10^6 < 2^63
};

u64 ceil_ms(u64 ns) { return ns / kMs + (ns % kMs != 0 ? 1 : 0); }

// A period that has expired, or in which nothing is used, is an absent key.
// An older `now` sees the period still running: never a refund.
QpState qp_at(u64 state, i64 now) {
  const state_codec::QuietPeriod stored = state_codec::QuietPeriod::unpack(state);
  QpState s{stored.expires_ms, stored.used, false};
  s.open = s.used != 0 && static_cast<u64>(now) < s.expires_ns();
  if (!s.open) s = QpState{};
  return s;
}

u64 qp_remaining(const AlgoParams& p, const QpState& s) {
  return s.used == kQuietBlocked || s.used >= p.count ? 0 : p.count - s.used;
}

Nanos qp_reset(const QpState& s, i64 now) {
  return s.open ? Nanos(static_cast<i64>(s.expires_ns() - static_cast<u64>(now))) : Nanos(0);
}

u64 qp_pack(const QpState& s) { return state_codec::QuietPeriod{s.expires_ms, s.used}.pack(); }

}  // namespace

AlgoOutcome qp_decide(const AlgoParams& p, u64 state, i64 now_in, u64 cost) {
  QpState s = qp_at(state, now_in);
  const auto now = static_cast<u64>(now_in);
  if (cost > p.count) return too_high(p.count, qp_remaining(p, s), qp_reset(s, now_in));
  if (s.used != kQuietBlocked && s.used + cost <= p.count) {
    if (cost == 0)
      return outcome(
          make_decision(true, p.count, qp_remaining(p, s), Nanos(0), qp_reset(s, now_in)));
    if (!s.open)
      s.expires_ms = ceil_ms(now + p.period_ns);  // < 2^37: now + period <= horizon - 1 ms
    s.used += cost;
    s.open = true;
    return outcome(make_decision(true, p.count, qp_remaining(p, s), Nanos(0), qp_reset(s, now_in)),
                   true, qp_pack(s));
  }
  // Denied (s.open: cost <= count always fits a fresh period). A real
  // attempt restarts the period and blocks the key; a peek changes nothing.
  if (cost > 0) {
    s.expires_ms = std::max(s.expires_ms, ceil_ms(now + p.period_ns));  // never shortened
    s.used = kQuietBlocked;
  }
  const Nanos wait = qp_reset(s, now_in);
  // A denial writes (unlike every other algorithm's), unless it changes
  // nothing: an older reading on a key already blocked for longer.
  return outcome(make_decision(false, p.count, 0, wait, wait), qp_pack(s) != state, qp_pack(s));
}

AlgoOutcome qp_refund(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  QpState s = qp_at(state, now);
  const u64 before = s.used;
  // A blocked key stays blocked: a refund gives back units, not the penalty.
  if (s.used != kQuietBlocked) s.used = s.used > cost ? s.used - cost : 0;
  return refunded(qp_decide, p, qp_pack(s), now, s.used != before);
}

bool qp_is_full(u64 state, i64 now) { return !qp_at(state, now).open; }

// The tally (Limiter::tally): a counter that counts every call, the
// `INCRBY` + `EXPIRE`-on-first-hit of a Redis fixed window, kept in the
// quiet period's state so that every other reader (decide, refund,
// is_full, check, state export) reads it as an ordinary quiet-period
// bucket. It never blocks: past the count it saturates at `count` and
// reports allowed = false. `restart` (an elastic window) moves the expiry
// to now + period at every call, never earlier than it was.
AlgoOutcome qp_tally(const AlgoParams& p, u64 state, i64 now_in, u64 amount, bool restart) {
  QpState s = qp_at(state, now_in);
  const auto now = static_cast<u64>(now_in);
  const u64 used = s.used == kQuietBlocked ? p.count : s.used;  // blocked: nothing left
  const bool fits = amount <= p.count - std::min(used, p.count);
  if (amount == 0)
    return outcome(make_decision(true, p.count, qp_remaining(p, s), Nanos(0), qp_reset(s, now_in)));
  const u64 expires = ceil_ms(now + p.period_ns);  // < 2^37: now + period <= horizon - 1 ms
  if (!s.open) {
    s.expires_ms = expires;
  } else if (restart) {
    s.expires_ms = std::max(s.expires_ms, expires);  // a late reading never shortens it
  }
  if (s.used != kQuietBlocked) s.used = fits ? used + amount : p.count;  // saturates, no block
  s.open = true;
  const Nanos reset = qp_reset(s, now_in);
  return outcome(make_decision(fits, p.count, qp_remaining(p, s), fits ? Nanos(0) : reset, reset),
                 qp_pack(s) != state, qp_pack(s));
}

}  // namespace shmlimit::detail::algo
