// GCRA, the generic cell rate algorithm: a token bucket with continuous
// refill whose whole state is one number, the theoretical arrival time
// (TAT) of the next request, in integer nanoseconds since the segment epoch.
//
// With emission interval T = ceil(period / count) and capacity B (burst):
//   base     = max(TAT, now)                 (time never refunds: TAT only grows)
//   new_TAT  = base + cost * T
//   admitted iff new_TAT - now <= B * T
// A fresh bucket (TAT <= now) therefore takes B at once, then one more
// every T. Rounding T up (by less than 1 ns) never over-admits; over a run
// of length D it admits D/T instead of D*count/period, short by less than
// D*count^2/period^2 requests: a relative shortfall below count/period_ns
// (1e-6 at 1000/s, 1e-3 at 1,000,000/s).
//
// Pure: a function of (state, now, cost, params). No clock, no memory.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>

#include "algorithms/state_word.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

struct GcraParams {
  std::uint64_t emission_ns = 0;  // T >= 1
  std::uint64_t burst = 0;        // B >= 1, B * T <= kMaxTauNs
  std::uint64_t reciprocal = 0;   // gcra_reciprocal(T), or 0 to divide plainly
};

/// floor(2^64 / T) for T >= 2, 2^64 - 1 for T = 1 (2^64 does not fit; see
/// gcra_div), 0 for T = 0: lets the hot path replace its one 64-bit
/// division by a multiplication.
inline std::uint64_t gcra_reciprocal(std::uint64_t t) {
  if (t == 0) return 0;
  return t == 1 ? ~std::uint64_t{0}
                : static_cast<std::uint64_t>((static_cast<__uint128_t>(1) << 64) / t);
}

/// n / T for n <= kMaxTauNs (every caller's n is at most tau). With
/// m = floor(2^64 / T) (2^64 - 1 for T = 1), q = floor(n * m / 2^64)
/// is n / T or one less (m is below 2^64 / T by at most 1, so the error is
/// below n / 2^64 < 1): one correction makes it exact.
inline std::uint64_t gcra_div(std::uint64_t n, const GcraParams& p) {
  if (p.reciprocal == 0) return n / p.emission_ns;
  std::uint64_t q = static_cast<std::uint64_t>((static_cast<__uint128_t>(n) * p.reciprocal) >> 64);
  if ((q + 1) * p.emission_ns <= n) ++q;
  return q;
}

/// Largest B * T a policy may have: keeps every TAT (< now + B*T) inside
/// the 56-bit payload for half of the clock horizon.
inline constexpr std::uint64_t kMaxTauNs = 1ULL << 55;

/// T = ceil(period / count); 0 when the rate is unusable.
inline std::uint64_t gcra_emission(std::uint64_t count, std::uint64_t period_ns) {
  if (count == 0 || period_ns == 0) return 0;
  return period_ns / count + (period_ns % count != 0 ? 1 : 0);
}

inline bool gcra_params_valid(const GcraParams& p) {
  return p.emission_ns >= 1 && p.burst >= 1 && p.burst <= kMaxTauNs / p.emission_ns;
}

struct GcraOutcome {
  Decision decision;
  bool store = false;  // true: CAS the state to new_state
  std::uint64_t new_state = 0;
};

/// One decision. `tat` and the result are payloads (< 2^56); `now` is ns
/// since the epoch (a negative reading is treated as 0). Readings that
/// arrive out of order are tolerated: an older `now` than the one that set
/// TAT only makes the answer more conservative, never refunds time.
/// Always inlined: out of line, its Decision comes back through memory and
/// the caller's wide copy of it stalls on the narrow stores just made
/// (store forwarding); inlined, the fields stay in registers.
// Writes the decision into `d` and says what to store: field by field into
// the caller's object, so a hot caller can pass its return slot and never
// copy a Decision whose narrow fields were just stored (a store-forwarding
// stall when read back with wide loads).
[[gnu::always_inline]] inline void gcra_decide_into(std::uint64_t tat, std::int64_t now_in,
                                                    std::uint64_t cost, const GcraParams& p,
                                                    Decision& d, bool& store,
                                                    std::uint64_t& new_state) noexcept {
  const auto T = static_cast<std::int64_t>(p.emission_ns);
  const auto B = static_cast<std::int64_t>(p.burst);
  const std::int64_t tau = B * T;  // <= 2^55 (gcra_params_valid)
  const std::int64_t now = std::max<std::int64_t>(now_in, 0);
  const std::int64_t base = std::max<std::int64_t>(static_cast<std::int64_t>(tat), now);
  // Debt: how far the bucket is below full, in ns. May exceed tau only
  // when another process's later clock reading set TAT.
  const std::int64_t debt = base - now;
  const auto remaining_with = [&](std::int64_t debt_ns) -> std::uint64_t {
    return debt_ns >= tau ? 0 : gcra_div(static_cast<std::uint64_t>(tau - debt_ns), p);
  };
  d.limit = p.burst;
  store = false;
  new_state = 0;
  if (cost > p.burst) {
    // Can never fit, however long the caller waits.
    d.allowed = false;
    d.reason = Reason::kCostTooHigh;
    d.remaining = remaining_with(debt);
    d.retry_after = Nanos::max();
    d.reset_after = Nanos(debt);
    return;
  }
  d.reason = Reason::kOk;
  const std::int64_t new_tat = base + static_cast<std::int64_t>(cost) * T;  // cost*T <= tau
  const std::int64_t new_debt = new_tat - now;
  if (new_debt <= tau) {
    d.allowed = true;
    d.remaining = remaining_with(new_debt);
    d.retry_after = Nanos(0);
    d.reset_after = Nanos(new_debt);
    store = cost > 0;
    new_state = static_cast<std::uint64_t>(new_tat);
  } else {
    d.allowed = false;
    d.remaining = remaining_with(debt);
    d.retry_after = Nanos(new_debt - tau);
    d.reset_after = Nanos(debt);
  }
}

/// Only what the bucket's word needs from gcra_decide_into: whether the
/// request is admitted (the return value, = Decision::allowed) and whether
/// and what to store (`store`, `new_state`), the same for every input. The
/// hot path runs this before its CAS and fills the Decision after it, so
/// the locked instruction waits on none of the Decision's arithmetic
/// (remaining's division through the reciprocal) or stores.
[[gnu::always_inline]] inline bool gcra_step(std::uint64_t tat, std::int64_t now_in,
                                             std::uint64_t cost, const GcraParams& p, bool& store,
                                             std::uint64_t& new_state) noexcept {
  store = false;
  // cost > burst never fits (and never stores); otherwise cost*T <= tau.
  if (cost > p.burst) [[unlikely]]
    return false;
  const auto T = static_cast<std::int64_t>(p.emission_ns);
  const std::int64_t now = std::max<std::int64_t>(now_in, 0);
  const std::int64_t base = std::max<std::int64_t>(static_cast<std::int64_t>(tat), now);
  const std::int64_t new_tat = base + static_cast<std::int64_t>(cost) * T;
  new_state = static_cast<std::uint64_t>(new_tat);
  const bool allowed = new_tat - now <= static_cast<std::int64_t>(p.burst) * T;
  store = allowed && cost > 0;
  return allowed;
}

[[gnu::always_inline]] inline GcraOutcome gcra_decide(std::uint64_t tat, std::int64_t now,
                                                      std::uint64_t cost,
                                                      const GcraParams& p) noexcept {
  GcraOutcome out;
  gcra_decide_into(tat, now, cost, p, out.decision, out.store, out.new_state);
  return out;
}

inline bool gcra_is_full(std::uint64_t tat, std::int64_t now) noexcept {
  return static_cast<std::int64_t>(tat) <= now;
}

}  // namespace shmlimit::detail
