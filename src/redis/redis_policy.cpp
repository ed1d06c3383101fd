// The Redis tier's policies: validated for the script's number range
// (limiter.lua, "Numbers") and turned into what the script needs
// (make_tier_policy), and the names of a decision's Source.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "shmlimit/redis.hpp"
#include "tier.hpp"

namespace shmlimit {

std::string_view to_string(Source source) noexcept {
  switch (source) {
    case Source::kRedis:
      return "redis";
    case Source::kLease:
      return "lease";
    case Source::kLocalShare:
      return "local_share";
    case Source::kFailOpen:
      return "fail_open";
    case Source::kFailClosed:
      return "fail_closed";
  }
  return "unknown";
}

}  // namespace shmlimit

namespace shmlimit::detail {
namespace {

using u64 = std::uint64_t;
using u128 = __uint128_t;

/// The script keeps every value below 2^53 when every span of a policy is
/// at most 2^50 ns (limiter.lua, "Numbers").
constexpr u64 kMaxSpan = u64{1} << 50;

[[noreturn]] void invalid(const TierPolicy& p, const std::string& why) {
  throw Error(ErrorCode::kInvalidArgument, "policy \"" + p.spec.name + "\" (" +
                                               std::string(to_string(p.spec.algorithm)) + ", " +
                                               format_rate(p.spec.rate) + "): " + why);
}

}  // namespace

TierPolicyData make_tier_policy(const TierPolicy& policy, bool allow_local_share) {
  TierPolicyData out;
  out.policy = policy;
  PolicySpec& spec = out.policy.spec;
  // The core's one validator and normaliser (name, rate, burst, wait,
  // on_full, the algorithm's limits), so a spec means the same in every
  // tier; then the Redis tier's own limits below.
  spec = normalize_policy_spec(spec);
  const u64 period = static_cast<u64>(spec.rate.period.count());
  out.algo = AlgoParams{spec.algorithm, spec.rate.count, period, spec.burst,
                        gcra_emission(spec.rate.count, period)};
  const char* why = "unknown algorithm";
  if (!algo_params_valid(out.algo, &why)) invalid(policy, why);
  if (spec.rate.count > kMaxSpan || spec.burst > kMaxSpan || period > kMaxSpan) {
    invalid(policy,
            "Redis tier: count, burst and period must be at most 2^50 (period in ns: 13 days)");
  }
  u128 span = 0;
  const u64 lcm_us = std::lcm(period, u64{1000});  // period <= 2^50: no overflow
  switch (spec.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      span = static_cast<u128>(spec.burst) * out.algo.emission_ns;
      out.align_us = 1;
      break;
    case Algorithm::kTokenBucket:
      span = static_cast<u128>((spec.burst + spec.rate.count - 1) / spec.rate.count) * period;
      out.align_us = lcm_us / 1000;
      if (lcm_us > kMaxSpan) span = static_cast<u128>(kMaxSpan) + 1;
      break;
    case Algorithm::kFixedWindow:
      span = period;
      out.align_us = lcm_us / 1000;
      if (lcm_us > kMaxSpan) span = static_cast<u128>(kMaxSpan) + 1;
      break;
    case Algorithm::kSlidingWindow:
      span = static_cast<u128>(period) * 2;
      out.align_us = lcm_us / 1000;
      if (lcm_us > kMaxSpan) span = static_cast<u128>(kMaxSpan) + 1;
      break;
    case Algorithm::kQuietPeriod:
      span = static_cast<u128>(period) + 1'000'000;
      out.align_us = 1000;  // expiries are whole ms
      break;
    case Algorithm::kSlidingLog:
      // A sorted set of admissions (limiter.lua, "Sliding log"); the
      // core's validator caps count (4096), as in a segment.
      span = period;
      out.align_us = 1;
      break;
    case Algorithm::kConcurrency: {
      // RedisLimiter::lease: a sorted set of held units with their expiry.
      const auto ttl = std::chrono::duration_cast<Nanos>(policy.lease_ttl).count();
      if (policy.lease_ttl.count() < 1 || static_cast<u64>(ttl) > kMaxSpan) {
        invalid(policy, "Redis tier: lease_ttl must be 1 ms .. 2^50 ns (about 13 days)");
      }
      out.lease_ttl_ns = static_cast<u64>(ttl);
      out.align_us = 1;
      break;
    }
    default:
      invalid(
          policy,
          "this algorithm is not available in the Redis tier (gcra, token_bucket, fixed_window, "
          "sliding_window, quiet_period, leaky_bucket, sliding_log and concurrency are)");
  }
  if (span > kMaxSpan) {
    invalid(policy,
            "Redis tier: the bucket's longest span (burst * period / count, a window, two windows "
            "for the sliding "
            "window, or lcm(period, 1 us)) must be at most 2^50 ns (about 13 days)");
  }
  if (policy.when_down == WhenDown::kLocalShare) {
    if (!allow_local_share) {
      throw Error(ErrorCode::kInvalidArgument,
                  "policy \"" + spec.name +
                      "\": WhenDown::kLocalShare needs a host segment (HybridLimiter)");
    }
    if (!(policy.local_share > 0 && policy.local_share <= 1)) {
      throw Error(ErrorCode::kInvalidArgument,
                  "policy \"" + spec.name + "\": local_share must be in (0, 1]");
    }
  } else if (policy.when_down != WhenDown::kFailOpen && policy.when_down != WhenDown::kFailClosed) {
    throw Error(ErrorCode::kInvalidArgument,
                "policy \"" + spec.name + "\": unknown WhenDown value");
  }
  return out;
}

}  // namespace shmlimit::detail
