// Every limiting algorithm as a pure function of (params, state, now, cost).
// doc/algorithms.md gives each one's formula, state layout and limits; the
// comments here state the same facts where the code relies on them.
//
// Conventions (algorithms.hpp) and how each is kept:
//   * Integer arithmetic only. A product that could pass 2^64 is taken in
//     128 bits; a wait too long for int64 ns saturates to Nanos::max().
//   * No division by a value that was not checked: algo_decide, algo_refund
//     and algo_is_full first run algo_params_valid (division-free), and an
//     unusable parameter set gets a kCorrupt denial, never a trap.
//   * `now` is clamped to [0, kClockHorizonNs - algo_horizon_margin(p)]:
//     the limiter refuses later readings (Reason::kClockHorizon); clamping
//     here as well means every stored state is < 2^56 whatever the caller.
//   * A state that is full (is_full) decides exactly as state 0 does, so a
//     reclaimed slot changes no decision; a state that is not full is never
//     read as emptier than it is by an older `now` (no refund).
#include "algorithms/algorithms.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "algorithms/gcra.hpp"
#include "algorithms/state_codec.hpp"
#include "algorithms/state_word.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

std::string_view to_string(Algorithm algorithm) noexcept {
  switch (algorithm) {
    case Algorithm::kGcra:
      return "gcra";
    case Algorithm::kTokenBucket:
      return "token_bucket";
    case Algorithm::kFixedWindow:
      return "fixed_window";
    case Algorithm::kSlidingWindow:
      return "sliding_window";
    case Algorithm::kQuietPeriod:
      return "quiet_period";
    case Algorithm::kLeakyBucket:
      return "leaky_bucket";
    case Algorithm::kConcurrency:
      return "concurrency";
    case Algorithm::kSlidingLog:
      return "sliding_log";
  }
  return "unknown";
}

Algorithm parse_algorithm(std::string_view name) {
  static constexpr Algorithm kAll[] = {Algorithm::kGcra,        Algorithm::kTokenBucket,
                                       Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                       Algorithm::kQuietPeriod, Algorithm::kLeakyBucket,
                                       Algorithm::kConcurrency, Algorithm::kSlidingLog};
  for (Algorithm a : kAll) {
    const std::string_view known = to_string(a);
    if (known.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) {
      const char c = name[i] == '-' ? '_' : name[i];
      same = c == known[i];
    }
    if (same) return a;
  }
  std::string expected;
  for (Algorithm a : kAll) {
    if (!expected.empty()) expected += ", ";
    expected += to_string(a);
  }
  throw Error(ErrorCode::kInvalidArgument,
              "unknown algorithm \"" + std::string(name) + "\" (expected " + expected + ")");
}

}  // namespace shmlimit

namespace shmlimit::detail {
namespace {

using u128 = __uint128_t;  // the GCC/Clang builtin: accepted by -Wpedantic, unlike `__int128`
using i64 = std::int64_t;

constexpr u64 kMs = 1'000'000;
constexpr u64 kHorizon = static_cast<u64>(kClockHorizonNs);  // 2^56 - 1
constexpr i64 kI64Max = std::numeric_limits<i64>::max();

/// Longest span any policy may have (GCRA's B*T, a window, a quiet period):
/// half the clock horizon, about 417 days, the bound gcra.hpp already uses.
constexpr u64 kMaxSpanNs = kMaxTauNs;

constexpr u64 mask(unsigned bits) { return (u64{1} << bits) - 1; }

/// ns as a Nanos; a wait beyond int64 (only with absurd parameters) is "never".
Nanos sat_ns(u128 ns) {
  return ns > static_cast<u128>(kI64Max) ? Nanos::max() : Nanos(static_cast<i64>(ns));
}

/// floor((a + b - 1) / b), b != 0.
u128 ceil_div(u128 a, u128 b) { return a / b + (a % b != 0 ? 1 : 0); }

Decision make_decision(bool allowed, u64 limit, u64 remaining, Nanos retry, Nanos reset,
                       Reason reason = Reason::kOk) {
  Decision d;
  d.allowed = allowed;
  d.limit = limit;
  d.remaining = remaining;
  d.retry_after = retry;
  d.reset_after = reset;
  d.reason = reason;
  return d;
}

AlgoOutcome outcome(const Decision& d, bool store = false, u64 new_state = 0) {
  AlgoOutcome out;
  out.decision = d;
  out.store = store;
  out.new_state = new_state;
  return out;
}

/// The answer for parameters that cannot be used (a corrupt policy entry):
/// denied, nothing stored; the limiter applies on_full.
AlgoOutcome corrupt_outcome() {
  return outcome(make_decision(false, 0, 0, Nanos(0), Nanos(0), Reason::kCorrupt));
}

/// cost > capacity: can never fit, however long the caller waits.
AlgoOutcome too_high(u64 limit, u64 remaining, Nanos reset) {
  return outcome(make_decision(false, limit, remaining, Nanos::max(), reset, Reason::kCostTooHigh));
}

/// A refund's answer: a peek (cost 0) at the state after the refund, which
/// is stored only when the refund changed what is used.
template <class Decide>
AlgoOutcome refunded(Decide decide, const AlgoParams& p, u64 next, i64 now, bool changed) {
  AlgoOutcome out = decide(p, next, now, 0);
  out.store = changed;
  out.new_state = next;
  return out;
}

i64 clamp_now(i64 now, i64 margin) {
  const i64 hi = kClockHorizonNs - std::clamp<i64>(margin, 0, kClockHorizonNs);
  return std::clamp<i64>(now, 0, hi);
}

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
struct Meter {
  u64 drain;     // ns per unit, >= 1
  u64 capacity;  // ns of water the bucket holds, <= 2^55
  u64 units;     // burst
  // Whole units that still fit on top of `level`.
  u64 room(u64 level) const { return level >= capacity ? 0 : (capacity - level) / drain; }
};

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
constexpr unsigned kTbMissingBits = state_codec::TokenBucket::kMissingBits;
constexpr unsigned kTbIndexBits = state_codec::TokenBucket::kIndexBits;
static_assert(kTbMissingBits + kTbIndexBits == kStatePayloadBits,
              "token bucket state fills the payload");
constexpr u64 kTbMinPeriodNs = 2 * kMs;  // 2^36 periods of 2 ms outlast the clock horizon

struct TbState {
  u64 index = 0;    // refill index the state is valid at
  u64 missing = 0;  // tokens below burst (may exceed burst after a policy shrank it)
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

AlgoOutcome tb_decide(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  TbState s = tb_at(p, state, now);
  if (cost > p.burst) return too_high(p.burst, tb_tokens(p, s), tb_wait(p, s, s.missing, now));
  // Admitted iff missing + cost <= burst. (missing > burst only in a
  // state from a corrupt or foreign writer: a replacement that lowers the
  // burst starts the bucket fresh, algo_state_compatible.)
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
  return refunded(tb_decide, p, state_codec::TokenBucket{s.index, s.missing}.pack(), now, s.missing != before);
}

bool tb_is_full(const AlgoParams& p, u64 state, i64 now) {
  return tb_at(p, state, now).missing == 0;
}

// ===========================================================================
// Fixed window: at most `count` per window [k*period, (k+1)*period).
//   state bits 24-55  window index k (32 bits)
//   state bits 0-23   used in window k (24 bits)
constexpr unsigned kFwUsedBits = state_codec::FixedWindow::kUsedBits;
constexpr unsigned kFwIndexBits = state_codec::FixedWindow::kIndexBits;
static_assert(kFwUsedBits + kFwIndexBits == kStatePayloadBits,
              "fixed window state fills the payload");
constexpr u64 kFwMinPeriodNs = 20 * kMs;  // 2^32 windows of 20 ms outlast the clock horizon

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

AlgoOutcome fw_decide(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  FwState s = fw_at(p, state, now);
  if (cost > p.count) {
    const Decision d = fw_report(p, s, now, false, Nanos::max());
    return too_high(p.count, d.remaining, d.reset_after);
  }
  if (s.used + cost > p.count)
    return outcome(fw_report(p, s, now, false, fw_until_next(p, s, now)));
  s.used += cost;  // <= count < 2^24
  return outcome(fw_report(p, s, now, true, Nanos(0)), cost > 0, state_codec::FixedWindow{s.index, s.used}.pack());
}

AlgoOutcome fw_refund(const AlgoParams& p, u64 state, i64 now, u64 cost) {
  FwState s = fw_at(p, state, now);
  const u64 before = s.used;
  s.used = s.used > cost ? s.used - cost : 0;
  return refunded(fw_decide, p, state_codec::FixedWindow{s.index, s.used}.pack(), now, s.used != before);
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
constexpr unsigned kSwCountBits = state_codec::SlidingWindow::kCountBits;
constexpr unsigned kSwIndexBits = state_codec::SlidingWindow::kIndexBits;
static_assert(2 * kSwCountBits + kSwIndexBits == kStatePayloadBits,
              "sliding window state fills the payload");
constexpr u64 kSwIndexMask = mask(kSwIndexBits);
constexpr u64 kSwMinPeriodNs = kMs;

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
    const u64 tolerance = static_cast<u64>(ceil_div(kSwLagToleranceNs, W));  // <= 10^4 < 2^23
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

u64 sw_pack(const SwState& s) {
  return state_codec::SlidingWindow{s.index, s.prev, s.cur}.pack();
}

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
constexpr unsigned kQpUsedBits = state_codec::QuietPeriod::kUsedBits;
constexpr unsigned kQpExpiryBits = state_codec::QuietPeriod::kExpiryBits;
static_assert(kQpUsedBits + kQpExpiryBits == kStatePayloadBits,
              "quiet period state fills the payload");
static_assert((kHorizon / kMs) < (u64{1} << kQpExpiryBits), "ms expiries of the whole horizon fit");
constexpr u64 kQuietBlocked = mask(kQpUsedBits);  // denied since the period (re)started
constexpr u64 kQpMaxCount = kQuietBlocked - 1;
constexpr u64 kQpMinPeriodNs = kMs;

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

// ===========================================================================
// Concurrency (lease.hpp): the word's payload is the in-flight count (bits
// 0-23) and a pending-operation descriptor (bits 24-53). Only leases change
// it; here it is only reported. Full: nothing in flight and nothing pending.
AlgoOutcome conc_report(const AlgoParams& p, u64 state) {
  const u64 in_flight = state & kMaxConcurrency;
  return outcome(make_decision(in_flight < p.count, p.count, in_flight < p.count ? p.count - in_flight : 0,
                               Nanos(0), Nanos(0)));
}

// Sliding log (sliding_log.hpp): the word's payload is when the log is
// empty (the largest t + D of its admissions). From the word alone only
// "empty" is known: reported as a peek, never stored.
AlgoOutcome log_report(const AlgoParams& p, u64 empty_at, i64 now) {
  const bool empty = empty_at <= static_cast<u64>(now);
  return outcome(make_decision(true, p.count, empty ? p.count : 0, Nanos(0),
                               Nanos(empty ? 0 : static_cast<i64>(empty_at - static_cast<u64>(now)))));
}

// ===========================================================================
// Validity, without dividing by anything the segment supplied.

bool fail(const char** why, const char* sentence) {
  if (why != nullptr) *why = sentence;
  return false;
}

// kClockHorizonNs / period < 2^bits, as a product.
bool indices_fit(u64 period, unsigned bits) {
  return (static_cast<u128>(period) << bits) > static_cast<u128>(kHorizon);
}

bool gcra_like_valid(const AlgoParams& p, const char** why) {
  if (p.emission_ns == 0)
    return fail(why, "the emission interval (period / count) must be at least 1 ns");
  if (p.burst == 0) return fail(why, "the burst must be at least 1");
  if (static_cast<u128>(p.burst) * p.emission_ns > kMaxTauNs) {
    return fail(why, "burst * (period / count) must be at most 2^55 ns (about 417 days)");
  }
  return true;
}

bool window_valid(const AlgoParams& p, const char** why, u64 max_count, u64 min_period,
                  const char* count_sentence, const char* period_sentence) {
  if (p.count == 0) return fail(why, "the count must be at least 1");
  if (p.count > max_count) return fail(why, count_sentence);
  if (p.period_ns < min_period) return fail(why, period_sentence);
  if (p.period_ns > kMaxSpanNs)
    return fail(why, "the period must be at most 2^55 ns (about 417 days)");
  return true;
}

}  // namespace

bool algo_params_valid(const AlgoParams& p, const char** why) noexcept {
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      return gcra_like_valid(p, why);
    case Algorithm::kTokenBucket:
      if (p.burst == 0) return fail(why, "the burst (bucket size) must be at least 1");
      if (p.burst > mask(kTbMissingBits)) {
        return fail(why, "a token bucket holds at most 1048575 tokens (burst < 2^20)");
      }
      if (!window_valid(p, why, std::numeric_limits<u64>::max(), kTbMinPeriodNs, "",
                        "a token bucket's refill period must be at least 2 ms")) {
        return false;
      }
      if (!indices_fit(p.period_ns, kTbIndexBits)) {
        return fail(why, "the refill period is too short for the 36-bit refill index");
      }
      return true;
    case Algorithm::kFixedWindow:
      if (!window_valid(p, why, mask(kFwUsedBits), kFwMinPeriodNs,
                        "a fixed window counts at most 16777215 per window (count < 2^24)",
                        "a fixed window must be at least 20 ms long")) {
        return false;
      }
      if (!indices_fit(p.period_ns, kFwIndexBits)) {
        return fail(why, "the window is too short for the 32-bit window index");
      }
      return true;
    case Algorithm::kSlidingWindow:
      return window_valid(p, why, mask(kSwCountBits), kSwMinPeriodNs,
                          "a sliding window counts at most 65535 per window (count < 2^16)",
                          "a sliding window must be at least 1 ms long");
    case Algorithm::kQuietPeriod:
      return window_valid(p, why, kQpMaxCount, kQpMinPeriodNs,
                          "a quiet period allows at most 524286 per period (count < 2^19 - 1)",
                          "a quiet period must be at least 1 ms long");
    case Algorithm::kConcurrency:
      if (p.count == 0) return fail(why, "the concurrency limit must be at least 1");
      if (p.count > kMaxConcurrency) return fail(why, "the concurrency limit must be below 2^24 (16777216)");
      if (p.period_ns != 0) return fail(why, "a concurrency limit has no period (it must be 0)");
      return true;
    case Algorithm::kSlidingLog:
      if (p.wait != LogWait::kExact && p.wait != LogWait::kDrf) return fail(why, "unknown sliding-log wait mode");
      return window_valid(p, why, kMaxLogEntries, 1,
                          "a sliding log keeps at most 4096 admissions per window (count <= 4096)",
                          "a sliding log's window must be at least 1 ns long");
  }
  return fail(why, "unknown algorithm");
}

bool algo_state_compatible(const AlgoParams& from, const AlgoParams& to) noexcept {
  if (from.algorithm != to.algorithm) return false;
  switch (to.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      // A debt of at most the old B*T is within the new one.
      return static_cast<u128>(to.burst) * to.emission_ns >= static_cast<u128>(from.burst) * from.emission_ns;
    case Algorithm::kConcurrency:
      return true;
    case Algorithm::kTokenBucket:
      // Tokens missing: at most the old burst, within the new one.
      return from.period_ns == to.period_ns && to.burst >= from.burst;
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
    case Algorithm::kQuietPeriod:
      return from.period_ns == to.period_ns;
    case Algorithm::kSlidingLog:
      return from.period_ns == to.period_ns && to.count >= from.count;
  }
  return false;
}

Nanos algo_max_wait(const AlgoParams& p) noexcept {
  if (!algo_params_valid(p)) return Nanos(0);
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      return sat_ns(static_cast<u128>(p.burst) * p.emission_ns);
    case Algorithm::kTokenBucket:
      return sat_ns(ceil_div(p.burst, p.count) * p.period_ns);
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingLog:
      return sat_ns(p.period_ns);
    case Algorithm::kSlidingWindow:
      return sat_ns(static_cast<u128>(2) * p.period_ns);
    case Algorithm::kQuietPeriod:
      return sat_ns(static_cast<u128>(p.period_ns) + kMs);
    case Algorithm::kConcurrency:
      return Nanos(0);
  }
  return Nanos(0);
}

std::int64_t algo_horizon_margin(const AlgoParams& p) noexcept {
  switch (p.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket: {
      // A TAT / empty_at is at most B*T past now.
      const u128 tau = static_cast<u128>(p.burst) * p.emission_ns;
      return tau >= kHorizon ? kClockHorizonNs : static_cast<i64>(tau);
    }
    // Window indices are floor(now / period) and never point past now; the
    // validity checks make every index of the horizon fit its field.
    case Algorithm::kTokenBucket:
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
      return 0;
    case Algorithm::kConcurrency:
      return 0;  // no time in the state
    case Algorithm::kSlidingLog:
      // The word holds t + D, the entries t + 1.
      return static_cast<i64>(p.period_ns) + 1;
    case Algorithm::kQuietPeriod: {
      // expires_at = ceil_ms(now + period) < now + period + 1 ms.
      const u128 span = static_cast<u128>(p.period_ns) + kMs;
      return span >= kHorizon ? kClockHorizonNs : static_cast<i64>(span);
    }
  }
  return kClockHorizonNs;  // unknown: refuse every time
}

AlgoOutcome algo_decide(const AlgoParams& p, std::uint64_t state, std::int64_t now_in,
                        std::uint64_t cost) noexcept {
  if (!algo_params_valid(p)) return corrupt_outcome();
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  state &= kStatePayloadMask;
  switch (p.algorithm) {
    case Algorithm::kGcra: {
      const GcraOutcome g = gcra_decide(state, now, cost, GcraParams{p.emission_ns, p.burst});
      return outcome(g.decision, g.store, g.new_state);
    }
    case Algorithm::kLeakyBucket:
      return leaky_decide(p, state, now, cost);
    case Algorithm::kTokenBucket:
      return tb_decide(p, state, now, cost);
    case Algorithm::kFixedWindow:
      return fw_decide(p, state, now, cost);
    case Algorithm::kSlidingWindow:
      return sw_decide(p, state, now, cost);
    case Algorithm::kQuietPeriod:
      return qp_decide(p, state, now, cost);
    case Algorithm::kConcurrency:
      return conc_report(p, state);
    case Algorithm::kSlidingLog:
      return log_report(p, state, now);
  }
  return corrupt_outcome();
}

AlgoOutcome algo_refund(const AlgoParams& p, std::uint64_t state, std::int64_t now_in,
                        std::uint64_t cost) noexcept {
  if (!algo_params_valid(p)) return corrupt_outcome();
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  state &= kStatePayloadMask;
  switch (p.algorithm) {
    case Algorithm::kGcra:
      return gcra_refund(p, state, now, cost);
    case Algorithm::kLeakyBucket:
      return leaky_refund(p, state, now, cost);
    case Algorithm::kTokenBucket:
      return tb_refund(p, state, now, cost);
    case Algorithm::kFixedWindow:
      return fw_refund(p, state, now, cost);
    case Algorithm::kSlidingWindow:
      return sw_refund(p, state, now, cost);
    case Algorithm::kQuietPeriod:
      return qp_refund(p, state, now, cost);
    case Algorithm::kConcurrency:
      return conc_report(p, state);
    case Algorithm::kSlidingLog:
      return log_report(p, state, now);
  }
  return corrupt_outcome();
}

bool algo_is_full(const AlgoParams& p, std::uint64_t state, std::int64_t now_in) noexcept {
  if (!algo_params_valid(p)) return true;  // nothing worth keeping
  const i64 now = clamp_now(now_in, algo_horizon_margin(p));
  state &= kStatePayloadMask;
  switch (p.algorithm) {
    case Algorithm::kGcra:
      return gcra_is_full(state, now);
    case Algorithm::kLeakyBucket:
      return leaky_is_full(state, now);
    case Algorithm::kTokenBucket:
      return tb_is_full(p, state, now);
    case Algorithm::kFixedWindow:
      return fw_is_full(p, state, now);
    case Algorithm::kSlidingWindow:
      return sw_is_full(p, state, now);
    case Algorithm::kQuietPeriod:
      return qp_is_full(state, now);
    case Algorithm::kConcurrency:
      return state == 0;  // nothing in flight, no operation pending
    case Algorithm::kSlidingLog:
      return state <= static_cast<u64>(now);  // every admission has left the window
  }
  return true;
}

}  // namespace shmlimit::detail
