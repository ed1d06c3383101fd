// The combined decision of a multi-limit request (Limiter::acquire_many,
// RedisLimiter::acquire_many): one rule for both tiers.
#pragma once

#include <algorithm>
#include <cstdint>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

// Denied if any limit denies, with the largest retry-after of the denials
// (and its reason); remaining and limit of the tightest limit; the longest
// reset-after. Admitted, the reason is kOk unless a limit was admitted by
// its on_full fallback (table_full, key_too_long, contended, corrupt,
// clock_horizon): then the first such limit's reason, so a request that
// passed only because a limit could not be enforced says so, as that
// limit's own decision does. Starts as the identity: allowed, no limit
// binding yet.
struct DecisionFold {
  Decision combined;

  DecisionFold() noexcept {
    combined.allowed = true;
    combined.remaining = ~std::uint64_t{0};
  }

  void add(const Decision& d) noexcept {
    if (!d.allowed) {
      if (combined.allowed || d.retry_after > combined.retry_after) {
        combined.retry_after = d.retry_after;
        combined.reason = d.reason;
      }
      combined.allowed = false;
    } else if (combined.allowed && combined.reason == Reason::kOk) {
      combined.reason = d.reason;  // kOk, or the first fallback that admitted
    }
    if (d.remaining < combined.remaining) {
      combined.remaining = d.remaining;
      combined.limit = d.limit;
    }
    combined.reset_after = std::max(combined.reset_after, d.reset_after);
  }
};

}  // namespace shmlimit::detail
