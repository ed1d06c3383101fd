// Internals shared by the Redis tier (redis_*.cpp) and the hybrid
// tier (hybrid.cpp): one Redis connection with backoff, the script call and
// the policies as the script sees them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"

struct redisContext;

namespace shmlimit::detail {

/// The script's text (limiter.lua, embedded at build time).
extern const char* const kRedisLimiterLua;

/// A policy as the script needs it.
struct TierPolicyData {
  TierPolicy policy;  ///< burst filled in as the local segment does
  AlgoParams algo;
  std::uint64_t align_us = 1;  ///< time origin alignment (limiter.lua)
};

/// Validates `policy` for the Redis tier and fills the script's view of it.
/// Throws Error(kInvalidArgument) with a sentence naming what is wrong.
TierPolicyData make_tier_policy(const TierPolicy& policy, bool allow_local_share);

/// One bucket's answer.
struct BucketReply {
  Decision decision;
  std::uint64_t granted = 0;  ///< lease: units granted
};

/// One script call: op, keys and per-key (policy, cost).
struct ScriptCall {
  std::string op;  ///< acquire, peek, refund, lease
  std::vector<std::string> keys;
  std::vector<const TierPolicyData*> policies;
  std::vector<std::uint64_t> costs;
  std::uint64_t need = 0;    ///< lease only
  std::int64_t now_us = -1;  ///< injected time (test clock), -1: TIME
};

/// Milliseconds / nanoseconds of CLOCK_MONOTONIC.
std::int64_t mono_ns() noexcept;

}  // namespace shmlimit::detail

namespace shmlimit {

struct RedisLimiter::Impl {
  explicit Impl(RedisOptions o);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  RedisOptions options;
  std::string script;  // limiter.lua, with TEST_CLOCK set when options.test_clock
  std::string sha;
  redisContext* ctx = nullptr;
  pid_t ctx_pid = 0;           // the process that opened ctx (a child reconnects)
  bool script_loaded = false;  // on this connection
  std::int64_t next_attempt_ns = 0;
  std::int64_t backoff_ns = 0;
  bool up = true;
  std::string error;
  std::uint64_t round_trips = 0;
  std::vector<detail::TierPolicyData> policies;

  /// Runs the calls in one pipeline (a NOSCRIPT reply reloads the script
  /// and repeats that call). False on any failure (error() says which);
  /// a connection failure starts the backoff.
  bool run(std::vector<detail::ScriptCall>& calls,
           std::vector<std::vector<detail::BucketReply>>* out) noexcept;
  /// DEL of one Redis key.
  bool del(const std::string& key) noexcept;

  const detail::TierPolicyData* policy(PolicyId id) const noexcept {
    return id.index < policies.size() ? &policies[id.index] : nullptr;
  }
  std::string key_of(const detail::TierPolicyData& p, std::string_view key) const;
  /// The decision of an unreachable Redis under the policy's WhenDown
  /// (kFailOpen / kFailClosed; kLocalShare is the hybrid's).
  TierDecision down(const detail::TierPolicyData& p) const noexcept;
  /// Time until the next connection attempt (at least 1 ms).
  Nanos retry_in() const noexcept;

  TierDecision one(const char* op, PolicyId policy, std::string_view key, std::uint64_t cost,
                   std::int64_t now_us) noexcept;
  TierDecision many(std::span<const Request> requests, std::span<Decision> each,
                    std::int64_t now_us) noexcept;

 private:
  bool connect() noexcept;
  void drop() noexcept;
  void fail(const std::string& why, bool connection) noexcept;
  bool load_script() noexcept;
};

}  // namespace shmlimit
