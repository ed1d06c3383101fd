// shmlimit over Redis: one limit for a whole fleet of hosts.
//
// RedisLimiter decides in Redis: the same PolicySpec and the same five
// Decision values as the local segment, computed by one Lua script (every
// algorithm of src/algorithms/algorithms.cpp) on Redis's own clock (TIME), loaded once
// with SCRIPT LOAD and called with EVALSHA. HybridLimiter fronts it with
// the host's shared memory: the host leases tokens from Redis in batches
// and serves its workers from the segment, so most decisions make no
// network call. doc/redis.md gives the key layout, the number ranges, the
// over-admission bound of the hybrid mode and the failure modes.
//
// Thread and process safety
//   * A RedisLimiter / HybridLimiter object holds one Redis connection: use
//     one object per thread. After fork() a child reconnects by itself on
//     its first call (a connection is never shared across processes).
//   * HybridLimiter objects of any number of processes share one host's
//     lease table (a named segment); its updates are lock-free CAS.
//   * Decisions never throw: an unreachable Redis is answered by the
//     policy's WhenDown choice and reported in TierDecision::source.
//     Setup calls throw shmlimit::Error.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

/// How to reach Redis. Defaults are in the comments.
struct RedisOptions {
  std::string host = "127.0.0.1";                  ///< TCP host. Default 127.0.0.1
  int port = 6379;                                 ///< TCP port. Default 6379
  std::string unix_socket;                         ///< when non-empty, used instead of host/port
  std::string password;                            ///< AUTH after connecting when non-empty
  std::chrono::milliseconds connect_timeout{250};  ///< default 250 ms
  std::chrono::milliseconds command_timeout{250};  ///< per reply; default 250 ms
  /// After a failed connection or command, calls fail fast (no network)
  /// until the backoff has passed; it doubles after each failure up to
  /// backoff_max and returns to backoff_initial after a success.
  std::chrono::milliseconds backoff_initial{50};  ///< default 50 ms
  std::chrono::milliseconds backoff_max{2000};    ///< default 2 s
  /// Redis keys are `<prefix>{<key>}:<policy>`: the hash tag keeps every
  /// policy of one key on one Redis Cluster shard. Default "shmlimit:".
  std::string prefix = "shmlimit:";
  /// Redis Cluster: seed nodes as "host:port" (any few masters or
  /// replicas). When non-empty, host/port/unix_socket are not used: the
  /// client reads the slot map with CLUSTER SLOTS from the first seed or
  /// known node that answers, routes each call to the master of its key's
  /// slot (CRC16 of the hash tag), follows MOVED (and refreshes the map)
  /// and ASK (ASKING, then the call on the importing node), loads the
  /// script on each node it calls. doc/redis.md, "Redis Cluster".
  std::vector<std::string> cluster;
  /// Cluster: most redirects (MOVED, ASK, TRYAGAIN) one call follows
  /// before it fails as Redis being down. 1..100, default 5.
  int max_redirects = 5;
  /// Tests only: load the variant of the script that accepts an injected
  /// time (acquire_at); real calls use Redis's TIME. Default false.
  bool test_clock = false;
};

/// What a decision does when Redis cannot be reached.
enum class WhenDown : std::uint8_t {
  kFailClosed = 0,  ///< deny (retry_after: the backoff)
  kFailOpen = 1,    ///< admit
  kLocalShare = 2,  ///< limit on this host alone at local_share of the rate and burst (hybrid only)
};

/// Who made a decision.
enum class Source : std::uint8_t {
  kRedis = 0,       ///< Redis decided (one script call)
  kLease = 1,       ///< the host's leased tokens (hybrid), no network call
  kLocalShare = 2,  ///< Redis down: the host's share of the limit (hybrid)
  kFailOpen = 3,    ///< Redis down: admitted by WhenDown::kFailOpen
  kFailClosed = 4,  ///< Redis down: denied by WhenDown::kFailClosed
};

std::string_view to_string(Source source) noexcept;

struct TierDecision {
  Decision decision;
  Source source = Source::kRedis;
};

/// A policy of a tier: the spec (as for Limiter::add_policy) and what to do
/// when Redis is down.
struct TierPolicy {
  PolicySpec spec;
  WhenDown when_down = WhenDown::kFailClosed;
  /// kLocalShare: the fraction (0, 1] of rate.count and burst this host
  /// admits on its own while Redis is down (at least 1 of each).
  double local_share = 0;
  /// Algorithm::kConcurrency only: a lease neither renewed nor released
  /// within lease_ttl expires in Redis (its holder died, hung or lost
  /// Redis) and its units are free again. 1 ms .. 13 days; default 30 s.
  std::chrono::milliseconds lease_ttl{30000};
};

/// A share of a concurrency limit held in Redis (RedisLimiter::lease).
/// Plain data: nothing is released by its destructor (a lease outlives a
/// process only until its TTL). Copyable; release one copy.
struct RedisLease {
  /// The decision: limit = N, remaining = N - in flight after it,
  /// retry_after = reset_after = 0, as Limiter::lease.
  TierDecision decision;
  /// Granted (by Redis) and not released or found expired by this object.
  bool held = false;
  PolicyId policy{};
  std::string key;
  std::uint64_t cost = 0;
  std::string token;  ///< unique per lease (host, process, counter, random)
};

/// Decisions made in Redis. Move-only; one object per thread.
class RedisLimiter {
 public:
  /// Validates the options; connects on first use (never throws for an
  /// unreachable server: decisions then follow each policy's WhenDown).
  explicit RedisLimiter(RedisOptions options);
  RedisLimiter(RedisLimiter&&) noexcept;
  RedisLimiter& operator=(RedisLimiter&&) noexcept;
  RedisLimiter(const RedisLimiter&) = delete;
  RedisLimiter& operator=(const RedisLimiter&) = delete;
  ~RedisLimiter();

  /// Registers a policy in this object (policies live in the client: every
  /// client of one Redis must register the same specs). Throws
  /// Error(kInvalidArgument) for a spec the local segment refuses, for
  /// spans beyond 2^50 ns (13 days) or counts beyond 2^50 (the script's
  /// number range), and for kLocalShare (hybrid only). Same name twice:
  /// Error(kPolicyConflict) unless the spec is equal.
  PolicyId add_policy(const TierPolicy& policy);

  /// One decision in Redis at Redis's time. noexcept, one round trip.
  TierDecision acquire(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;
  /// All-or-nothing over several limits, as Limiter::acquire_many. Limits
  /// of one key (in a cluster: of one hash slot) are decided in one script
  /// call (atomic in Redis); limits of several keys (slots) are pipelined,
  /// one call per key (slot), and any that admitted is refunded
  /// (pipelined) when another denied.
  TierDecision acquire_many(std::span<const Request> requests,
                            std::span<Decision> each = {}) noexcept;
  /// What acquire() would say, without charging.
  TierDecision peek(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;
  /// Gives back `cost`, never beyond the capacity: the bucket after it.
  TierDecision refund(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;
  /// Tests only (RedisOptions::test_clock): decides at `unix_us`,
  /// microseconds since the Unix epoch, instead of Redis's TIME.
  TierDecision acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                          std::chrono::microseconds unix_us) noexcept;
  TierDecision acquire_many_at(std::span<const Request> requests, std::chrono::microseconds unix_us,
                               std::span<Decision> each = {}) noexcept;
  TierDecision refund_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                         std::chrono::microseconds unix_us) noexcept;

  /// Takes `cost` units of a concurrency policy's limit (Algorithm::
  /// kConcurrency) for (policy, key) in Redis until release() or the
  /// policy's lease_ttl, whichever comes first; renew() extends it. A
  /// lease whose holder dies is free again after lease_ttl. acquire() on
  /// such a policy is denied with Reason::kNeedsLease, as in the segment.
  /// While Redis is down: the policy's WhenDown (held = fail-open admits).
  RedisLease lease(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;
  /// Extends a held lease to now + lease_ttl. False (and held = false)
  /// when it had expired (its units may be another holder's now); false,
  /// still held, when Redis could not be reached.
  bool renew(RedisLease& lease) noexcept;
  /// Gives the units back. True if they were held in Redis; false if the
  /// lease had expired, was not held, or Redis could not be reached.
  bool release(RedisLease& lease) noexcept;

  /// Forgets one key of a policy (DEL). False when Redis is unreachable.
  bool reset(PolicyId policy, std::string_view key) noexcept;
  /// The Redis key of (policy, key): `<prefix>{<key>}:<policy name>`.
  std::string redis_key(PolicyId policy, std::string_view key) const;
  /// Round trips to Redis made by this object (a pipeline counts once; in
  /// a cluster, one per node a call reaches).
  std::uint64_t round_trips() const noexcept;
  /// Cluster: MOVED and ASK replies followed, and slot-map reads
  /// (CLUSTER SLOTS) made by this object. 0 for a single Redis.
  std::uint64_t redirects() const noexcept;
  std::uint64_t topology_refreshes() const noexcept;
  /// False after a failed call until the next successful one.
  bool available() const noexcept;
  /// The last connection or command error ("" if none yet).
  std::string last_error() const;

 private:
  struct Impl;  // src/redis/tier.hpp
  std::unique_ptr<Impl> impl_;
  friend class HybridLimiter;  // shares the connection and the policies
};

/// How the hybrid tier leases. Defaults are in the comments.
struct HybridOptions {
  RedisOptions redis;
  /// The host's segments: `name` (a shmlimit segment for WhenDown::kLocalShare)
  /// and `name` + ".lease" (the lease table). Required, as Options::name.
  std::string name;
  /// Lease table slots, one per (policy, key) ever leased; a key that
  /// finds no slot is decided by Redis directly. Default 4096.
  std::uint32_t lease_slots = 4096;
  /// Largest batch leased at once (1..2^20). 1 = no tokens are held ahead:
  /// every admission is a Redis admission, and the fleet admits exactly
  /// the limit. Default 64.
  std::uint32_t max_batch = 64;
  /// Leased tokens not used within lease_ttl are dropped (never returned
  /// to Redis). Default 1 s.
  std::chrono::milliseconds lease_ttl{1000};
  /// Hosts sharing the limit: the batch shrinks toward 1 as Redis's
  /// remaining tokens per host fall below two batches. Default 1.
  std::uint32_t hosts = 1;
  /// Permission bits of created segments. Default 0600.
  mode_t mode = 0600;
};

/// Redis fronted by the host's shared memory. Move-only; one per thread.
class HybridLimiter {
 public:
  /// Opens or creates the host's segments (any number of processes may
  /// race here). Throws shmlimit::Error.
  static HybridLimiter open_or_create(HybridOptions options);
  /// Removes both segments; false if neither existed.
  static bool remove(std::string_view name);

  HybridLimiter(HybridLimiter&&) noexcept;
  HybridLimiter& operator=(HybridLimiter&&) noexcept;
  HybridLimiter(const HybridLimiter&) = delete;
  HybridLimiter& operator=(const HybridLimiter&) = delete;
  ~HybridLimiter();

  /// As RedisLimiter::add_policy; kLocalShare also registers the host's
  /// share as a policy of the same name in the local segment.
  PolicyId add_policy(const TierPolicy& policy);

  /// One decision: from leased tokens in shared memory when the host holds
  /// enough (lock-free, no network), else one Redis call that leases a
  /// batch. The quiet period is always decided in Redis (a lease would
  /// change its semantics). noexcept.
  TierDecision acquire(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;

  /// All-or-nothing over several limits. Decided in Redis as
  /// RedisLimiter::acquire_many (leased tokens are not used: a lease serves
  /// one limit). While Redis is down: denied if any limit is kFailClosed;
  /// otherwise the kLocalShare limits decide together in the local segment
  /// (Limiter::acquire_many, all-or-nothing) and kFailOpen limits admit.
  /// noexcept.
  TierDecision acquire_many(std::span<const Request> requests,
                            std::span<Decision> each = {}) noexcept;

  /// Gives `cost` back to (policy, key) in Redis, never beyond the
  /// bucket's capacity (a request that failed before doing work). Every
  /// token a host spends was admitted by Redis, so Redis's refund is the
  /// exact inverse whether the admission came from a lease or not. The
  /// host's cached denial of the key is dropped. noexcept.
  TierDecision refund(PolicyId policy, std::string_view key, std::uint64_t cost = 1) noexcept;

  /// Forgets (policy, key): its Redis bucket, the tokens and cached denial
  /// this host holds for it, and its local-share bucket. Other hosts keep
  /// what they hold (at most max_batch - 1 tokens each, gone within
  /// lease_ttl), and a lease already in flight may still deposit. False if
  /// Redis could not be reached (the host's part is forgotten anyway). noexcept.
  bool reset(PolicyId policy, std::string_view key) noexcept;

  /// Round trips to Redis made by this object (a pipeline counts once), as
  /// RedisLimiter::round_trips: decisions served from leased tokens make none.
  std::uint64_t round_trips() const noexcept;
  /// The current batch size of (policy, key) on this host (0: no slot).
  std::uint32_t batch(PolicyId policy, std::string_view key) const noexcept;
  /// The underlying Redis tier (policies are shared with it).
  RedisLimiter& redis() noexcept;

 private:
  struct Impl;  // src/redis/hybrid.cpp
  explicit HybridLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmlimit
