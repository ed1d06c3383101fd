// Internals shared by the Redis tier (redis_*.cpp) and the hybrid
// tier (hybrid.cpp): one Redis connection with backoff, the script call and
// the policies as the script sees them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
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
  std::uint64_t align_us = 1;      ///< time origin alignment (limiter.lua)
  std::uint64_t lease_ttl_ns = 0;  ///< concurrency: a lease's TTL
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
  std::string token;         ///< take / renew / release (concurrency) only
  std::int64_t now_us = -1;  ///< injected time (test clock), -1: TIME
};

/// Milliseconds / nanoseconds of CLOCK_MONOTONIC.
std::int64_t mono_ns() noexcept;

/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag (the
/// text between the first '{' and the next '}' when not empty, else the
/// whole key) modulo 16384.
std::uint16_t cluster_slot(std::string_view key) noexcept;
inline constexpr int kClusterSlots = 16384;

/// One Redis server the client talks to (the only one, or a cluster node).
struct RedisNode {
  std::string host;
  int port = 0;
  std::string unix_socket;  // single Redis only
  redisContext* ctx = nullptr;
  pid_t ctx_pid = 0;           // the process that opened ctx (a child reconnects)
  bool script_loaded = false;  // on this connection
  // This node's backoff: no connection to it is attempted before
  // next_attempt_ns after a failure (other nodes are not affected).
  std::int64_t next_attempt_ns = 0;
  std::int64_t backoff_ns = 0;
};

struct ReplyFree {
  void operator()(void* r) const noexcept;
};

/// One command for the router: its arguments, the slot of its keys (-1
/// for a single Redis), whether it is an EVALSHA of the script (NOSCRIPT
/// loads the script on that node and repeats it) and, once run, its reply.
struct RoutedCommand {
  std::vector<std::string> argv;
  int slot = -1;
  bool script = false;
  // Router state: the node an ASK named (-1: the slot's master), ASKING
  // needed, redirects followed so far.
  int ask_node = -1;
  int hops = 0;
  std::unique_ptr<void, ReplyFree> reply;  // a redisReply*
};

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
  // nodes[0] is the single Redis; in a cluster, every node met so far.
  std::vector<detail::RedisNode> nodes;
  bool cluster = false;
  std::vector<std::int32_t> slot_node;  // cluster: slot -> index in nodes (-1 unknown)
  bool map_fresh = false;               // cluster: slot_node read since the last MOVED
  bool map_loaded = false;              // cluster: slot_node read at least once
  std::int64_t next_refresh_ns = 0;     // cluster: no CLUSTER SLOTS before this
  std::int64_t refresh_backoff_ns = 0;
  std::uint64_t redirects = 0;
  std::uint64_t refreshes = 0;
  std::int64_t next_attempt_ns = 0;  // the last failure's backoff end (retry_after)
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
  /// Runs the commands, each on the node that serves its slot, one
  /// pipeline per node; follows MOVED / ASK / TRYAGAIN (at most
  /// max_redirects each) and NOSCRIPT. False on a connection failure (the
  /// backoff starts) or too many redirects; other error replies are left in
  /// the commands' replies.
  bool route(std::vector<detail::RoutedCommand>& cmds) noexcept;
  /// The slot of a Redis key in a cluster, -1 for a single Redis.
  int slot_of(std::string_view redis_key) const noexcept {
    return cluster ? detail::cluster_slot(redis_key) : -1;
  }

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
  /// take / renew / release of a concurrency lease; *granted from the script.
  TierDecision conc(const char* op, PolicyId policy, std::string_view key, std::uint64_t cost,
                    const std::string& token, bool* granted) noexcept;

 private:
  bool connect(detail::RedisNode& n, bool gated) noexcept;
  void drop(detail::RedisNode& n) noexcept;
  void fail(const std::string& why, detail::RedisNode* connection) noexcept;
  bool load_script(detail::RedisNode& n) noexcept;
  bool refresh_map() noexcept;
  int node_index(const std::string& host, int port);
};

}  // namespace shmlimit
