// The exact sliding window's pure core (sliding_log.hpp).
#include "algorithms/sliding_log.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace shmlimit::detail {

Nanos log_drf_wait(const LogParams& p, std::uint64_t live, std::int64_t oldest,
                   std::int64_t now) noexcept {
  // DRF: remaining_duration = duration - (now - history[-1]) if history else duration
  //      available_requests = num_requests - len(history) + 1
  const auto D = static_cast<std::int64_t>(p.window_ns);
  const std::int64_t remaining = live > 0 ? D - (now - oldest) : D;  // > 0: the oldest is live
  const std::uint64_t available = p.count + 1 - std::min<std::uint64_t>(live, p.count);  // >= 1
  const auto r = static_cast<std::uint64_t>(std::max<std::int64_t>(remaining, 0));
  return Nanos(static_cast<std::int64_t>(r / available + (r % available != 0 ? 1 : 0)));
}

LogOutcome log_decide(const LogParams& p, std::span<const std::uint64_t> entries,
                      std::uint64_t version, std::int64_t now_in, std::uint64_t cost,
                      std::span<std::uint32_t> pick, std::span<std::int64_t> scratch) noexcept {
  LogOutcome out;
  Decision& d = out.decision;
  const std::int64_t now = std::max<std::int64_t>(now_in, 0);
  const auto D = static_cast<std::int64_t>(p.window_ns);
  const auto n = static_cast<std::uint32_t>(
      std::min<std::size_t>({p.count, entries.size(), pick.size(), scratch.size()}));
  std::uint32_t nfree = 0, nbusy = 0;
  std::uint64_t live = 0;
  std::int64_t oldest = std::numeric_limits<std::int64_t>::max();
  std::int64_t empty_at = now;  // when every live admission has left the window
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint64_t e = entries[i];
    switch (log_classify(e, version, now, p.window_ns)) {
      case LogEntryKind::kFree:
        pick[nfree++] = i;
        break;
      case LogEntryKind::kLive: {
        const std::int64_t t = log_entry_time(e);
        ++live;
        oldest = std::min(oldest, t);
        empty_at = std::max(empty_at, t + D);
        scratch[nbusy++] = t + D;
        break;
      }
      case LogEntryKind::kGarbage:
        scratch[nbusy++] = log_entry_time(e) + D;
        break;
    }
  }
  d.limit = p.count;
  d.remaining = nfree;
  d.reset_after = Nanos(empty_at - now);
  if (cost > p.count) {
    d.allowed = false;
    d.reason = Reason::kCostTooHigh;
    d.retry_after = Nanos::max();
    return out;
  }
  if (cost <= nfree) {
    d.allowed = true;
    d.remaining = nfree - cost;
    d.retry_after = Nanos(0);
    if (cost > 0) d.reset_after = Nanos(std::max(empty_at, now + D) - now);
    out.chosen = static_cast<std::uint32_t>(cost);
    return out;
  }
  d.allowed = false;
  if (p.wait == LogWait::kDrf) {
    d.retry_after = log_drf_wait(p, live, oldest, now);
  } else {
    // The (cost - nfree)-th entry to expire frees the last unit needed.
    const std::uint32_t need = static_cast<std::uint32_t>(cost) - nfree;  // 1 .. nbusy (cost <= N)
    std::nth_element(scratch.begin(), scratch.begin() + (need - 1), scratch.begin() + nbusy);
    d.retry_after = Nanos(scratch[need - 1] - now);
  }
  return out;
}

}  // namespace shmlimit::detail
