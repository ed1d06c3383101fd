// Reservations (Limiter::reserve, doc/outbound.md) as pure functions of
// (state, now, cost, max_wait, params): the maths of "wait your turn".
//
// Which algorithms can queue a caller (ReserveMode):
//   kQueue  GCRA, the leaky bucket and the token bucket.
//           GCRA and the leaky bucket (reserve_tat): their state is one time
//           (GCRA's TAT, the meter's empty_at: the same number, buckets.cpp),
//           so a turn in the future is that time pushed further:
//             base    = max(TAT, now)
//             new_TAT = base + cost * T
//             delay   = max(0, new_TAT - now - tau)        tau = B * T
//           granted iff delay <= max_wait, and then TAT := new_TAT (one CAS);
//           refused otherwise, nothing stored, retry_after = delay. The
//           caller acts at now + delay, when new_TAT - tau has come, which
//           is exactly when an acquire of `cost` would have been admitted:
//           reservations are GCRA decisions taken early, in the order of
//           their CAS, so every schedule they make conforms to the policy
//           (never more than B + (window / T) units in any window).
//           A TAT may now lie past now + tau (a queue); gcra_decide and
//           leaky_decide already read such a state right (a later clock
//           reading's TAT): an acquire meanwhile is denied with the wait
//           behind the queue.
//           The token bucket (reserve_tb, discrete refill: `count` tokens
//           at every multiple of `period`, up to `burst`) queues the same
//           way by letting its tokens go negative, as Go's x/time/rate
//           does: at the refill index of now (after the refills since the
//           stored one),
//             missing' = missing + cost
//             delay    = 0                                  missing' <= burst
//                      = (index + k) * period - now         otherwise,
//                        k = ceil((missing' - burst) / count)
//             stored   = missing' + max(0, k * count - missing)
//           granted iff delay <= max_wait (and `stored` fits the state's
//           20-bit field), and then the state stores it (above burst: a
//           debt, paid down by the refills) in one CAS. The turn is the
//           refill boundary at which an acquire of `cost` would have been
//           admitted, first come first served; the last term counts the
//           tokens the turn's refill brings beyond what the bucket holds
//           (a real bucket caps at burst), so that from the turn on the
//           state is the capped bucket's. So the schedule never hands out
//           more than burst + count * (refill boundaries in (a, b]) over
//           any [a, b], and wastes no refill while the queue lasts.
//           tb_decide reads a debt right: an acquire meanwhile is denied
//           with the wait behind the queue.
//   kRetry  fixed and sliding window, quiet period, sliding log: their
//           states count units per window or hold admission times, so a
//           unit charged to a future window would be admitted now against
//           that window's count. They are never queued: a reservation is an
//           acquire now (delay 0) or a refusal whose retry_after is the next
//           opening, and Limiter::wait sleeps until then and asks again
//           (not first come, first served).
//   kNever  concurrency: a lease ends when its holder releases it; there is
//           no time to wait for (Reason::kNeedsLease).
//
// Cancel (cancel_tat, cancel_tb): a reservation that is still the last one
// (the state is still the word it stored: no acquire or reservation has
// charged the bucket since) and whose turn has not come gives back what it
// added (cost * T of the TAT; the tokens it added to the debt), as if it
// had never been made. Once anything has queued behind it, it gives back
// nothing: the later turns were computed from it, and moving the state back
// would schedule new callers into the time they hold (Go's x/time/rate gives back
// part of it in that case; here the policy's bound is never exceeded).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/state_word.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

enum class ReserveMode : std::uint8_t { kQueue, kRetry, kNever };

inline ReserveMode reserve_mode(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
    case Algorithm::kTokenBucket:
      return ReserveMode::kQueue;
    case Algorithm::kConcurrency:
      return ReserveMode::kNever;
    default:
      return ReserveMode::kRetry;
  }
}

/// Longest max_wait a reservation honours; longer ones are capped to it.
/// With B * T <= kMaxTauNs as well, a stored TAT stays below now + 2^56 ns,
/// and reserve_tat refuses anything past the clock horizon.
inline constexpr std::int64_t kMaxReserveWaitNs = static_cast<std::int64_t>(kMaxTauNs);

struct ReserveOutcome {
  /// allowed = granted. Granted: remaining after it (0 once it queues),
  /// retry_after 0, reset_after until the bucket is full again. Refused:
  /// retry_after = the delay it would have needed (Nanos::max() for a cost
  /// above the capacity, Reason::kCostTooHigh).
  Decision decision;
  /// Granted: how long the caller waits before acting (0 = now).
  std::int64_t delay_ns = 0;
  bool store = false;  // true: CAS the state to new_state
  std::uint64_t new_state = 0;
  /// Stored: what a cancel gives back (GCRA / leaky bucket: cost * T ns;
  /// token bucket: the tokens added to `missing`).
  std::uint64_t span = 0;
};

/// One reservation on a GCRA / leaky-bucket state `tat` (a payload < 2^56).
/// `max_wait_ns` < 0 counts as 0, above kMaxReserveWaitNs as that. cost 0
/// reports the wait of the queue and stores nothing.
inline ReserveOutcome reserve_tat(std::uint64_t tat, std::int64_t now_in, std::uint64_t cost,
                                  std::int64_t max_wait_ns, const GcraParams& p) noexcept {
  ReserveOutcome out;
  Decision& d = out.decision;
  const auto T = static_cast<std::int64_t>(p.emission_ns);
  const auto B = static_cast<std::int64_t>(p.burst);
  const std::int64_t tau = B * T;  // <= 2^55 (gcra_params_valid)
  const std::int64_t now = std::max<std::int64_t>(now_in, 0);
  const std::int64_t max_wait = std::clamp<std::int64_t>(max_wait_ns, 0, kMaxReserveWaitNs);
  const std::int64_t base =
      std::max<std::int64_t>(static_cast<std::int64_t>(tat & kStatePayloadMask), now);
  const std::int64_t debt = base - now;
  const auto remaining_with = [&](std::int64_t debt_ns) -> std::uint64_t {
    return debt_ns >= tau ? 0 : gcra_div(static_cast<std::uint64_t>(tau - debt_ns), p);
  };
  d.limit = p.burst;
  if (cost > p.burst) {
    d.allowed = false;
    d.reason = Reason::kCostTooHigh;
    d.remaining = remaining_with(debt);
    d.retry_after = Nanos::max();
    d.reset_after = Nanos(debt);
    out.delay_ns = std::numeric_limits<std::int64_t>::max();
    return out;
  }
  // base < 2^56 and cost * T <= tau <= 2^55: no overflow.
  const std::int64_t new_tat = base + static_cast<std::int64_t>(cost) * T;
  const std::int64_t delay = std::max<std::int64_t>(new_tat - now - tau, 0);
  out.delay_ns = delay;
  if (delay > max_wait || new_tat > kClockHorizonNs) {
    d.allowed = false;
    d.remaining = remaining_with(debt);
    d.retry_after = Nanos(delay);
    d.reset_after = Nanos(debt);
    return out;
  }
  d.allowed = true;
  d.remaining = remaining_with(new_tat - now);
  d.retry_after = Nanos(0);
  d.reset_after = Nanos(new_tat - now);
  out.store = cost > 0;
  out.new_state = static_cast<std::uint64_t>(new_tat);
  out.span = cost * p.emission_ns;  // <= B * T <= 2^55 (cost <= B)
  return out;
}

/// The state after cancelling a granted reservation that stored `reserved`
/// for `span` = cost * T ns and acts at `act_at`; nullopt when it gives
/// nothing back: the state is no longer `reserved` (something charged the
/// bucket after it), or its turn has come (now >= act_at: it counts as
/// used), or it has refilled already (reserved <= now).
inline std::optional<std::uint64_t> cancel_tat(std::uint64_t state, std::int64_t now_in,
                                               std::uint64_t reserved, std::uint64_t span,
                                               std::int64_t act_at) noexcept {
  const std::int64_t now = std::max<std::int64_t>(now_in, 0);
  if (state != reserved || now >= act_at || static_cast<std::int64_t>(reserved) <= now) {
    return std::nullopt;
  }
  // reserved > now >= 0; never back past now (the bucket holds at most B).
  const std::uint64_t back =
      std::min<std::uint64_t>(span, reserved - static_cast<std::uint64_t>(now));
  return reserved - back;
}

/// One reservation on a token bucket's state (state_codec.hpp TokenBucket:
/// refill index, tokens missing), as the formula above; `p` a token bucket's
/// parameters (invalid ones: a kCorrupt refusal, nothing stored). `now` is
/// clamped as algo_decide clamps it; `max_wait_ns` as in reserve_tat.
/// Refused, nothing stored, when the turn is further than max_wait (or past
/// the clock horizon): retry_after = delay = the wait it would have needed;
/// or when `stored` would not fit the 20-bit field (a queue of about
/// 2^20 - 1 - burst tokens behind the burst): retry_after = delay = the
/// refill that makes room in it (Limiter::wait asks again then).
/// cost 0 reports the wait of the queue and stores nothing. Implemented in
/// buckets.cpp beside tb_decide.
ReserveOutcome reserve_tb(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                          std::uint64_t cost, std::int64_t max_wait_ns) noexcept;

/// The state after cancelling a granted token-bucket reservation that
/// stored `reserved`, adding `added` tokens to the debt (its
/// ReserveOutcome::span), and acts at `act_at`: the debt less `added` at
/// the refill index of now (never below full); nullopt when it gives
/// nothing back: the state is no longer `reserved`, or its turn has come
/// (now >= act_at, which also covers a turn that was now: delay 0).
std::optional<std::uint64_t> cancel_tb(const AlgoParams& p, std::uint64_t state, std::int64_t now,
                                       std::uint64_t reserved, std::uint64_t added,
                                       std::int64_t act_at) noexcept;

}  // namespace shmlimit::detail
