// The Redis tier: policies validated for the script's number range, one
// hiredis connection with capped exponential backoff, EVALSHA calls
// (pipelined across keys) and their replies as shmlimit::Decision.
//
// This file: RedisLimiter's calls (one key, many keys, reset). Policies are
// in redis_policy.cpp, the connection and the script calls in
// redis_connection.cpp.
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/decision_fold.hpp"
#include "shmlimit/redis.hpp"
#include "tier.hpp"

namespace shmlimit {

using detail::BucketReply;
using detail::ScriptCall;
using detail::TierPolicyData;

namespace {

Decision unknown_policy() {
  Decision d;
  d.reason = Reason::kUnknownPolicy;
  return d;
}

// acquire() / peek() / refund() on a concurrency policy: as the segment,
// denied with kNeedsLease (RedisLimiter::lease takes its units).
Decision needs_lease(const TierPolicyData& p) {
  Decision d;
  d.limit = p.algo.count;
  d.reason = Reason::kNeedsLease;
  return d;
}

// As Limiter::acquire_many (decision_fold.hpp).
using Fold = detail::DecisionFold;

}  // namespace

TierDecision RedisLimiter::Impl::one(const char* op, PolicyId id, std::string_view key,
                                     std::uint64_t cost, std::int64_t now_us) noexcept {
  const TierPolicyData* p = policy(id);
  if (p == nullptr) return TierDecision{unknown_policy(), Source::kRedis};
  if (p->algo.algorithm == Algorithm::kConcurrency)
    return TierDecision{needs_lease(*p), Source::kRedis};
  try {
    std::vector<ScriptCall> calls(1);
    calls[0].op = op;
    calls[0].keys.push_back(key_of(*p, key));
    calls[0].policies.push_back(p);
    calls[0].costs.push_back(cost);
    calls[0].now_us = now_us;
    std::vector<std::vector<BucketReply>> out;
    if (!run(calls, &out)) return down(*p);
    return TierDecision{out[0][0].decision, Source::kRedis};
  } catch (...) {
    return down(*p);
  }
}

TierDecision RedisLimiter::Impl::many(std::span<const Request> requests, std::span<Decision> each,
                                      std::int64_t now_us) noexcept {
  Fold fold;
  if (requests.empty()) {
    fold.combined.remaining = 0;
    return TierDecision{fold.combined, Source::kRedis};
  }
  const TierPolicyData* first = nullptr;
  for (const Request& r : requests) {
    const TierPolicyData* p = policy(r.policy);
    if (p == nullptr) return TierDecision{unknown_policy(), Source::kRedis};
    if (p->algo.algorithm == Algorithm::kConcurrency)
      return TierDecision{needs_lease(*p), Source::kRedis};
    if (first == nullptr) first = p;
  }
  try {
    // One script call per distinct key: a key's limits are one hash slot
    // (the hash tag), so one call decides them atomically.
    // In a cluster, calls are grouped by hash slot instead (limits of one
    // slot are one atomic call even for different keys; a key's limits
    // always share its slot, except the empty key's, whose tag is empty).
    std::map<std::string, std::size_t> group_of;
    std::vector<ScriptCall> calls;
    std::vector<std::vector<std::size_t>> members;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const TierPolicyData* p = policy(requests[i].policy);
      std::string rkey = key_of(*p, requests[i].key);
      std::string group =
          cluster ? std::to_string(detail::cluster_slot(rkey)) : std::string(requests[i].key);
      auto [it, fresh] = group_of.emplace(std::move(group), calls.size());
      if (fresh) {
        calls.emplace_back();
        // One limit: an acquire. Several: no call writes on a refusal,
        // even one of a single key (a refused quiet period stays as is).
        calls.back().op = requests.size() == 1 ? "acquire" : "many";
        calls.back().now_us = now_us;
        members.emplace_back();
      }
      ScriptCall& c = calls[it->second];
      c.keys.push_back(std::move(rkey));
      c.policies.push_back(p);
      c.costs.push_back(requests[i].cost);
      members[it->second].push_back(i);
    }
    std::vector<std::vector<BucketReply>> out;
    if (!run(calls, &out)) {
      // Every limit follows its own WhenDown; the strictest answer wins.
      TierDecision t = down(*first);
      for (const Request& r : requests) {
        const TierDecision d = down(*policy(r.policy));
        if (!d.decision.allowed) t = d;
      }
      return t;
    }
    bool all = true;
    std::vector<bool> group_allowed(calls.size(), true);
    std::vector<Decision> decided(requests.size());
    for (std::size_t g = 0; g < calls.size(); ++g) {
      for (std::size_t j = 0; j < members[g].size(); ++j) {
        const Decision& d = out[g][j].decision;
        decided[members[g][j]] = d;
        if (!d.allowed) group_allowed[g] = false;
      }
      all = all && group_allowed[g];
    }
    if (!all && calls.size() > 1) {
      // Keys that admitted were charged (each call is all-or-nothing for its
      // key): give it back, pipelined, and report those limits as the
      // refund left them (uncharged, as Limiter::acquire_many does). A
      // failure here leaves them charged, never over-admitting.
      std::vector<ScriptCall> undo;
      std::vector<std::size_t> undone;
      for (std::size_t g = 0; g < calls.size(); ++g) {
        if (!group_allowed[g]) continue;
        undo.push_back(calls[g]);
        undo.back().op = "refund";
        undone.push_back(g);
      }
      std::vector<std::vector<BucketReply>> refunded;
      if (!undo.empty() && run(undo, &refunded)) {
        for (std::size_t k = 0; k < undone.size(); ++k) {
          for (std::size_t j = 0; j < members[undone[k]].size(); ++j) {
            Decision& d = decided[members[undone[k]][j]];
            d.remaining = refunded[k][j].decision.remaining;
            d.reset_after = refunded[k][j].decision.reset_after;
          }
        }
      }
    }
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (i < each.size()) each[i] = decided[i];
      fold.add(decided[i]);
    }
    return TierDecision{fold.combined, Source::kRedis};
  } catch (...) {
    return down(*first);
  }
}

TierDecision RedisLimiter::Impl::conc(const char* op, PolicyId id, std::string_view key,
                                      std::uint64_t cost, const std::string& token,
                                      bool* granted) noexcept {
  *granted = false;
  const TierPolicyData* p = policy(id);
  if (p == nullptr) return TierDecision{unknown_policy(), Source::kRedis};
  if (p->algo.algorithm != Algorithm::kConcurrency) {
    Decision d;
    d.reason = Reason::kUnknownPolicy;  // not a concurrency policy
    return TierDecision{d, Source::kRedis};
  }
  try {
    std::vector<ScriptCall> calls(1);
    calls[0].op = op;
    calls[0].keys.push_back(key_of(*p, key));
    calls[0].policies.push_back(p);
    calls[0].costs.push_back(cost);
    calls[0].token = token;
    std::vector<std::vector<BucketReply>> out;
    if (!run(calls, &out)) return down(*p);
    *granted = out[0][0].granted == 1;
    return TierDecision{out[0][0].decision, Source::kRedis};
  } catch (...) {
    return down(*p);
  }
}

namespace {
// A token no other lease has: host name, pid, a per-process counter and 64
// random bits (the pid and counter repeat across hosts and restarts).
std::string new_token() {
  static std::atomic<std::uint64_t> counter{0};
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  std::uint64_t rnd = 0;
  if (::getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof rnd))
    rnd = static_cast<std::uint64_t>(detail::mono_ns()) * 0x9E3779B97F4A7C15ULL;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%d.%llu.%016llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(counter.fetch_add(1)),
                static_cast<unsigned long long>(rnd));
  return std::string("t") + host + "." + buf;
}
}  // namespace

// ---------------------------------------------------------------------------
// RedisLimiter

RedisLimiter::RedisLimiter(RedisOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
RedisLimiter::RedisLimiter(RedisLimiter&&) noexcept = default;
RedisLimiter& RedisLimiter::operator=(RedisLimiter&&) noexcept = default;
RedisLimiter::~RedisLimiter() = default;

PolicyId RedisLimiter::add_policy(const TierPolicy& policy) {
  TierPolicyData data = detail::make_tier_policy(policy, false);
  for (std::uint32_t i = 0; i < impl_->policies.size(); ++i) {
    const TierPolicyData& e = impl_->policies[i];
    if (e.policy.spec.name != data.policy.spec.name) continue;
    if (e.policy.spec == data.policy.spec && e.policy.when_down == data.policy.when_down &&
        e.lease_ttl_ns == data.lease_ttl_ns)
      return PolicyId{i};
    throw Error(ErrorCode::kPolicyConflict, "policy \"" + data.policy.spec.name +
                                                "\" is already registered with other parameters");
  }
  impl_->policies.push_back(std::move(data));
  return PolicyId{static_cast<std::uint32_t>(impl_->policies.size() - 1)};
}

TierDecision RedisLimiter::acquire(PolicyId policy, std::string_view key,
                                   std::uint64_t cost) noexcept {
  return impl_->one("acquire", policy, key, cost, -1);
}

TierDecision RedisLimiter::peek(PolicyId policy, std::string_view key,
                                std::uint64_t cost) noexcept {
  return impl_->one("peek", policy, key, cost, -1);
}

TierDecision RedisLimiter::refund(PolicyId policy, std::string_view key,
                                  std::uint64_t cost) noexcept {
  return impl_->one("refund", policy, key, cost, -1);
}

TierDecision RedisLimiter::acquire_many(std::span<const Request> requests,
                                        std::span<Decision> each) noexcept {
  return impl_->many(requests, each, -1);
}

namespace {
// An injected time only reaches a script loaded with the test clock; the
// production script ignores it. Without test_clock the call uses TIME.
std::int64_t injected(const RedisOptions& o, std::chrono::microseconds us) {
  return o.test_clock ? std::max<std::int64_t>(us.count(), 0) : -1;
}
}  // namespace

TierDecision RedisLimiter::acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                                      std::chrono::microseconds unix_us) noexcept {
  return impl_->one("acquire", policy, key, cost, injected(impl_->options, unix_us));
}

TierDecision RedisLimiter::acquire_many_at(std::span<const Request> requests,
                                           std::chrono::microseconds unix_us,
                                           std::span<Decision> each) noexcept {
  return impl_->many(requests, each, injected(impl_->options, unix_us));
}

TierDecision RedisLimiter::refund_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                                     std::chrono::microseconds unix_us) noexcept {
  return impl_->one("refund", policy, key, cost, injected(impl_->options, unix_us));
}

RedisLease RedisLimiter::lease(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  RedisLease l;
  try {
    l.policy = policy;
    l.key.assign(key.data(), key.size());
    l.cost = cost;
    l.token = new_token();
  } catch (...) {
    l.decision.decision.reason = Reason::kContended;  // out of memory: nothing taken
    return l;
  }
  bool granted = false;
  l.decision = impl_->conc("take", policy, key, cost, l.token, &granted);
  // Held when Redis granted it, or when Redis is down and the policy fails
  // open (nothing to renew or release then: renew() keeps trying).
  l.held = granted || (l.decision.source == Source::kFailOpen && l.decision.decision.allowed);
  if (cost == 0 && l.decision.source == Source::kRedis) l.held = false;
  return l;
}

bool RedisLimiter::renew(RedisLease& lease) noexcept {
  if (!lease.held) return false;
  bool granted = false;
  const TierDecision t =
      impl_->conc("renew", lease.policy, lease.key, lease.cost, lease.token, &granted);
  if (t.source == Source::kRedis && !granted) lease.held = false;  // expired
  return granted;
}

bool RedisLimiter::release(RedisLease& lease) noexcept {
  if (!lease.held) return false;
  bool granted = false;
  const TierDecision t =
      impl_->conc("release", lease.policy, lease.key, lease.cost, lease.token, &granted);
  if (t.source == Source::kRedis) lease.held = false;
  return granted;
}

bool RedisLimiter::reset(PolicyId policy, std::string_view key) noexcept {
  const TierPolicyData* p = impl_->policy(policy);
  if (p == nullptr) return false;
  try {
    return impl_->del(impl_->key_of(*p, key));
  } catch (...) {
    return false;
  }
}

std::string RedisLimiter::redis_key(PolicyId policy, std::string_view key) const {
  const TierPolicyData* p = impl_->policy(policy);
  if (p == nullptr) throw Error(ErrorCode::kInvalidArgument, "no such policy");
  return impl_->key_of(*p, key);
}

std::uint64_t RedisLimiter::round_trips() const noexcept { return impl_->round_trips; }
std::uint64_t RedisLimiter::redirects() const noexcept { return impl_->redirects; }
std::uint64_t RedisLimiter::topology_refreshes() const noexcept { return impl_->refreshes; }
bool RedisLimiter::available() const noexcept { return impl_->up; }
std::string RedisLimiter::last_error() const { return impl_->error; }

}  // namespace shmlimit
