// The hybrid tier: the host leases tokens from Redis in batches and serves
// its workers from a lease pool in shared memory (lease_pool.hpp: a core
// segment of kind kLeasePool, its slots the core table).
//
// Thread and process safety / invariants (lease_pool.hpp numbers the pool's)
//   (1) Tokens enter a slot's pool word only from a Redis admission, by the
//       one process holding the slot's leaser word, and never above
//       max_batch - 1; workers take them by a version-checked CAS. So every
//       admission on the host spends a token Redis admitted, and a host holds
//       at most max_batch - 1 tokens of a key at any time (doc/redis.md
//       derives the fleet's over-admission bound from this).
//   (2) Nothing here can wedge: a dead or stalled leaser is replaced (its
//       ProcessToken, not its bare pid, says whether it died); a busy claim
//       or a full pool only sends the decision to Redis directly.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/decision_fold.hpp"
#include "lease_pool.hpp"
#include "segment/process.hpp"
#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"
#include "tier.hpp"

namespace shmlimit {
namespace {

using u64 = std::uint64_t;
using detail::BucketReply;
using detail::LeasePool;
using detail::ScriptCall;
using detail::SlotRef;
using detail::TierPolicyData;
using detail::Word;

constexpr std::uint32_t kMaxBatch = 1u << 20;
static_assert(kMaxBatch - 1 <= detail::kPoolTokenMask, "a pool holds at most max_batch - 1 tokens");
// A claim waits at most this long for another process claiming the same
// key; past it the decision goes to Redis directly.
constexpr std::int64_t kClaimTimeoutNs = 10'000'000;

u64 ms_count(Nanos d) {
  return static_cast<u64>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

}  // namespace

struct HybridLimiter::Impl {
  HybridOptions options;
  RedisLimiter redis;
  Limiter local;
  LeasePool pool;
  std::vector<std::optional<PolicyId>> local_ids;  // kLocalShare policies in `local`

  Impl(HybridOptions o, Limiter l)
      : options(std::move(o)),
        redis(options.redis),
        local(std::move(l)),
        pool(LeasePool::name_of(options.name), options.lease_slots, options.mode) {}

  RedisLimiter::Impl& r() { return *redis.impl_; }

  // ---- the lease pool -------------------------------------------------------
  // The slot of (policy, key): claimed (or reclaimed from a spent key) when
  // `claim`, else only found. False: Redis decides directly.
  bool slot(const TierPolicyData& p, std::string_view key, bool claim, SlotRef* out) {
    if (claim) return pool.claim(p.policy.spec.name, key, pool.now_ms(), kClaimTimeoutNs, out);
    return pool.find(p.policy.spec.name, key, out);
  }
  static u64 version(const SlotRef& s) { return detail::Meta::version(s.meta); }

  // The leaser word: one process at a time asks Redis for a batch (1).
  bool become_leaser(const SlotRef& s, u64 now_ms) {
    const detail::ProcessToken me = detail::self_token();
    std::atomic<u64>& leaser = pool.side(s.index, detail::kSideLeaser);
    // Acquire: pairs with the previous leaser's release in end_lease, so
    // its since = 0 (and its deposit) is seen before we judge the word.
    u64 cur = leaser.load(std::memory_order_acquire);
    if (cur != 0) {
      if (cur == me) return false;  // another thread of this process is leasing
      // Relaxed: a hint; see end_lease for why a stale value cannot make a
      // fresh leaser look stalled.
      const u64 since =
          pool.side(s.index, detail::kSideLeaserSince).load(std::memory_order_relaxed);
      const u64 limit_ms =
          ms_count(4 * (r().options.connect_timeout + r().options.command_timeout)) + 1000;
      const bool stalled = since != 0 && now_ms > since && now_ms - since > limit_ms;
      // The token, not the pid, decides: a pid reused by another process
      // is a dead leaser (process.hpp).
      if (!stalled && !detail::token_is_dead(cur)) return false;
    }
    // Acquire: pairs with the previous leaser's release (its deposit is done).
    if (!leaser.compare_exchange_strong(cur, me, std::memory_order_acquire,
                                        std::memory_order_relaxed))
      return false;
    // Relaxed: read only as a stall hint (become_leaser above).
    pool.side(s.index, detail::kSideLeaserSince)
        .store(now_ms, std::memory_order_relaxed);  // never 0
    return true;
  }
  void end_lease(const SlotRef& s) {
    std::atomic<u64>& leaser = pool.side(s.index, detail::kSideLeaser);
    u64 me = detail::self_token();
    if (leaser.load(std::memory_order_relaxed) != me)
      return;  // replaced as stalled: not ours to end
    // since = 0 before the word is free: a process that reads the next
    // leaser's token (acquire, through this release sequence) then reads
    // since = 0 or that leaser's own time, never this old one.
    pool.side(s.index, detail::kSideLeaserSince).store(0, std::memory_order_relaxed);
    // Release: our deposit and since = 0 happen before the next leaser's acquire.
    leaser.compare_exchange_strong(me, 0, std::memory_order_release, std::memory_order_relaxed);
  }

  // ---- decisions ------------------------------------------------------------
  TierDecision when_down(PolicyId id, const TierPolicyData& p, std::string_view key, u64 cost) {
    if (p.policy.when_down == WhenDown::kLocalShare && id.index < local_ids.size() &&
        local_ids[id.index]) {
      return TierDecision{local.acquire(*local_ids[id.index], key, cost), Source::kLocalShare};
    }
    return r().down(p);
  }

  TierDecision direct(PolicyId id, const TierPolicyData& p, std::string_view key, u64 cost) {
    std::vector<ScriptCall> calls(1);
    calls[0].op = "acquire";
    calls[0].keys.push_back(r().key_of(p, key));
    calls[0].policies.push_back(&p);
    calls[0].costs.push_back(cost);
    std::vector<std::vector<BucketReply>> out;
    if (!r().run(calls, &out)) return when_down(id, p, key, cost);
    return TierDecision{out[0][0].decision, Source::kRedis};
  }

  static Decision from_pool(const TierPolicyData& p, u64 left, u64 full_at_ms, u64 now_ms) {
    Decision d;
    d.allowed = true;
    d.limit = p.algo.burst;
    d.remaining = left;  // tokens this host holds; Redis may hold more
    d.reset_after = full_at_ms > now_ms ? std::chrono::milliseconds(full_at_ms - now_ms) : Nanos(0);
    return d;
  }

  TierDecision acquire(PolicyId id, std::string_view key, u64 cost) {
    const TierPolicyData* p = r().policy(id);
    if (p == nullptr) {
      Decision d;
      d.reason = Reason::kUnknownPolicy;
      return TierDecision{d, Source::kRedis};
    }
    // Leasing would change a quiet period (a denial restarts it) or a
    // sliding log (an admission is logged at the time it is made, and must
    // stay exact), and has nothing to offer a peek or an impossible cost.
    if (p->algo.algorithm == Algorithm::kQuietPeriod ||
        p->algo.algorithm == Algorithm::kSlidingLog || cost == 0 || cost > p->algo.burst ||
        cost > detail::kPoolTokenMask) {
      return direct(id, *p, key, cost);
    }
    const u64 now_ms = pool.now_ms();
    if (now_ms + ms_count(options.lease_ttl) >= detail::kPoolHorizonMs)
      return direct(id, *p, key, cost);
    SlotRef s;
    if (!slot(*p, key, true, &s)) return direct(id, *p, key, cost);
    const u64 v = version(s);

    // Redis said no to this cost until `until`: nothing can have refilled
    // it sooner (only a refund could), so deny without asking again.
    // Relaxed: a self-contained hint, tagged with the slot version it was
    // written for (lease_pool.hpp invariant 4); a stale read only asks Redis.
    const u64 deny = detail::side_value(
        pool.side(s.index, detail::kSideDeny).load(std::memory_order_relaxed), v);
    const u64 deny_until = deny >> detail::kPoolTokenBits;
    if (deny != 0 && cost >= (deny & detail::kPoolTokenMask) && now_ms < deny_until) {
      Decision d;
      d.limit = p->algo.burst;
      d.retry_after = std::chrono::milliseconds(deny_until - now_ms);
      d.reset_after = d.retry_after;
      return TierDecision{d, Source::kLease};
    }

    // Take leased tokens by a version-checked CAS on the slot's word: a
    // word of another version belongs to the slot's next key (lease_pool.hpp
    // invariant 2). Relaxed: the word is self-contained (its tokens are a
    // count; no other memory is published with them).
    u64 w = pool.pool(s.index).load(std::memory_order_relaxed);
    u64 taken_from = 0;
    const detail::UpdateResult took = pool.update(s.index, v, &w, [&](u64 payload) noexcept {
      if (detail::pool_live_tokens(payload, now_ms) < cost) return detail::SlotStep::leave();
      taken_from = payload;
      return detail::SlotStep::store(payload - cost);  // the token count is the payload's low bits
    });
    if (took == detail::UpdateResult::kStored) {
      const u64 full_at = detail::side_value(
          pool.side(s.index, detail::kSideFullAt).load(std::memory_order_relaxed), v);
      return TierDecision{from_pool(*p, detail::pool_tokens(taken_from) - cost, full_at, now_ms),
                          Source::kLease};
    }
    if (took == detail::UpdateResult::kReclaimed)
      return direct(id, *p, key, cost);  // the key is elsewhere now

    if (!become_leaser(s, now_ms)) return direct(id, *p, key, cost);
    TierDecision t = lease(id, *p, s, key, cost, now_ms);
    end_lease(s);
    return t;
  }

  TierDecision many(std::span<const Request> requests, std::span<Decision> each) {
    // Redis's tier answers an empty request and an unknown policy itself
    // (source kRedis); past this line every policy is registered.
    const TierDecision t = redis.acquire_many(requests, each);
    if (t.source == Source::kRedis) return t;
    // Redis is down: every limit answers with its WhenDown. A fail-closed
    // one refuses the request before any local share is charged.
    detail::DecisionFold fold;
    std::vector<Request> shared;
    std::vector<std::size_t> shared_at;
    Source source = Source::kFailOpen;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Request& q = requests[i];
      const TierPolicyData& p = *r().policy(q.policy);
      if (p.policy.when_down == WhenDown::kLocalShare && q.policy.index < local_ids.size() &&
          local_ids[q.policy.index]) {
        shared.push_back(Request{*local_ids[q.policy.index], q.key, q.cost});
        shared_at.push_back(i);
        continue;
      }
      const TierDecision d = r().down(p);
      if (i < each.size()) each[i] = d.decision;
      fold.add(d.decision);
      if (!d.decision.allowed) source = Source::kFailClosed;
    }
    if (!shared.empty() && fold.combined.allowed) {
      std::vector<Decision> local_each(shared.size());
      local.acquire_many(shared, local_each);
      for (std::size_t j = 0; j < shared.size(); ++j) {
        if (shared_at[j] < each.size()) each[shared_at[j]] = local_each[j];
        fold.add(local_each[j]);
      }
      source = Source::kLocalShare;
    } else {
      // Refused without charging the shares: report them as they are.
      for (std::size_t j = 0; j < shared.size(); ++j) {
        if (shared_at[j] < each.size())
          each[shared_at[j]] = local.peek(shared[j].policy, shared[j].key, 0);
      }
    }
    return TierDecision{fold.combined, source};
  }

  // Asks Redis for a batch: this request's cost plus what the host keeps.
  TierDecision lease(PolicyId id, const TierPolicyData& p, const SlotRef& s, std::string_view key,
                     u64 cost, u64 now_ms) {
    const u64 v = version(s);
    const u64 max_batch = options.max_batch;
    // Relaxed, here and below: the side words are hints tagged with the
    // slot version (lease_pool.hpp invariant 4); the leaser word orders them.
    std::atomic<u64>& batch_word = pool.side(s.index, detail::kSideBatch);
    const u64 batch = std::clamp<u64>(
        detail::side_value(batch_word.load(std::memory_order_relaxed), v), 1, max_batch);
    const u64 want = std::max(batch, cost);
    std::vector<ScriptCall> calls(1);
    calls[0].op = "lease";
    calls[0].keys.push_back(r().key_of(p, key));
    calls[0].policies.push_back(&p);
    calls[0].costs.push_back(want);
    calls[0].need = cost;
    std::vector<std::vector<BucketReply>> out;
    if (!r().run(calls, &out)) return when_down(id, p, key, cost);
    const BucketReply& rep = out[0][0];
    const Decision& d = rep.decision;
    std::atomic<u64>& deny = pool.side(s.index, detail::kSideDeny);
    if (!d.allowed || rep.granted < cost) {
      if (d.retry_after != Nanos::max() && d.retry_after >= std::chrono::milliseconds(1)) {
        const u64 until = std::min<u64>(now_ms + ms_count(d.retry_after), detail::kPoolHorizonMs);
        deny.store(detail::side_tag(v, (until << detail::kPoolTokenBits) |
                                           std::min<u64>(cost, detail::kPoolTokenMask)),
                   std::memory_order_relaxed);
      }
      batch_word.store(detail::side_tag(v, 1), std::memory_order_relaxed);
      return TierDecision{d, Source::kRedis};
    }
    deny.store(0, std::memory_order_relaxed);
    pool.side(s.index, detail::kSideFullAt)
        .store(detail::side_tag(
                   v, std::min<u64>(now_ms + ms_count(d.reset_after), detail::kPoolHorizonMs)),
               std::memory_order_relaxed);
    // Deposit what this request does not use, never above max_batch - 1 (1),
    // and only into the slot version the lease was taken for: a reclaimed
    // slot belongs to another key now (a token dropped is under-admission).
    const u64 extra = rep.granted - cost;
    const u64 expiry =
        now_ms + ms_count(options.lease_ttl);  // below the horizon (checked in acquire)
    u64 w = pool.pool(s.index).load(std::memory_order_relaxed);
    u64 left = 0;
    pool.update(s.index, v, &w, [&](u64 payload) noexcept {
      left = std::min<u64>(detail::pool_live_tokens(payload, now_ms) + extra, max_batch - 1);
      return detail::SlotStep::store(detail::pool_payload(expiry, left));
    });
    // Adapt the batch: double while the host drains batches within half a
    // lease lifetime, halve otherwise, and never above what Redis has left
    // per host over two batches (toward 1 as the fleet's bucket empties).
    const u64 last =
        detail::side_value(pool.side(s.index, detail::kSideLastLease)
                               .exchange(detail::side_tag(v, now_ms), std::memory_order_relaxed),
                           v);
    const bool fast = last != 0 && now_ms - last < ms_count(options.lease_ttl) / 2;
    u64 next = fast ? batch * 2 : std::max<u64>(batch / 2, 1);
    next =
        std::min<u64>(next, std::max<u64>(d.remaining / (2 * std::max<u64>(options.hosts, 1)), 1));
    batch_word.store(detail::side_tag(v, std::clamp<u64>(next, 1, max_batch)),
                     std::memory_order_relaxed);
    Decision out_d = d;
    out_d.remaining = left;
    return TierDecision{out_d, Source::kRedis};
  }
};

HybridLimiter::HybridLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HybridLimiter::HybridLimiter(HybridLimiter&&) noexcept = default;
HybridLimiter& HybridLimiter::operator=(HybridLimiter&&) noexcept = default;
HybridLimiter::~HybridLimiter() = default;

HybridLimiter HybridLimiter::open_or_create(HybridOptions options) {
  if (options.max_batch < 1 || options.max_batch > kMaxBatch) {
    throw Error(ErrorCode::kInvalidArgument, "max_batch must be in 1..1048576");
  }
  if (options.lease_slots < 1 || options.lease_slots > (1u << 24)) {
    throw Error(ErrorCode::kInvalidArgument, "lease_slots must be in 1..16777216");
  }
  if (options.lease_ttl.count() <= 0)
    throw Error(ErrorCode::kInvalidArgument, "lease_ttl must be positive");
  if (options.hosts < 1) throw Error(ErrorCode::kInvalidArgument, "hosts must be at least 1");
  Options lo;
  lo.name = options.name;
  lo.capacity = std::max<std::uint32_t>(options.lease_slots, 64);
  lo.mode = options.mode;
  Limiter local = Limiter::open_or_create(lo);
  return HybridLimiter(std::make_unique<Impl>(std::move(options), std::move(local)));
}

bool HybridLimiter::remove(std::string_view name) {
  const bool a = Limiter::remove(name);
  const bool b = detail::Segment::remove(LeasePool::name_of(name));
  return a || b;
}

PolicyId HybridLimiter::add_policy(const TierPolicy& policy) {
  TierPolicyData data = detail::make_tier_policy(policy, true);
  std::optional<PolicyId> local_id;
  if (policy.when_down == WhenDown::kLocalShare) {
    // The host's share: rate.count and burst scaled, at least 1 each.
    PolicySpec share = data.policy.spec;
    share.rate.count = std::max<u64>(
        static_cast<u64>(static_cast<double>(share.rate.count) * policy.local_share), 1);
    share.burst =
        std::max<u64>(static_cast<u64>(static_cast<double>(share.burst) * policy.local_share), 1);
    share.on_full = OnFull::kDeny;
    local_id = impl_->local.add_policy(share, /*replace=*/true);
  }
  RedisLimiter::Impl& r = impl_->r();
  for (std::uint32_t i = 0; i < r.policies.size(); ++i) {
    if (r.policies[i].policy.spec.name != data.policy.spec.name) continue;
    if (r.policies[i].policy.spec == data.policy.spec &&
        r.policies[i].policy.when_down == data.policy.when_down) {
      return PolicyId{i};
    }
    throw Error(ErrorCode::kPolicyConflict, "policy \"" + data.policy.spec.name +
                                                "\" is already registered with other parameters");
  }
  r.policies.push_back(std::move(data));
  impl_->local_ids.resize(r.policies.size());
  impl_->local_ids.back() = local_id;
  return PolicyId{static_cast<std::uint32_t>(r.policies.size() - 1)};
}

TierDecision HybridLimiter::acquire(PolicyId policy, std::string_view key,
                                    std::uint64_t cost) noexcept {
  try {
    return impl_->acquire(policy, key, cost);
  } catch (...) {  // std::bad_alloc only: the policy's WhenDown answer
    const TierPolicyData* p = impl_->r().policy(policy);
    if (p == nullptr) return TierDecision{};
    return impl_->r().down(*p);
  }
}

TierDecision HybridLimiter::acquire_many(std::span<const Request> requests,
                                         std::span<Decision> each) noexcept {
  try {
    return impl_->many(requests, each);
  } catch (...) {  // std::bad_alloc only: a refusal that charged nothing
    TierDecision t;
    t.source = Source::kFailClosed;
    return t;
  }
}

TierDecision HybridLimiter::refund(PolicyId policy, std::string_view key,
                                   std::uint64_t cost) noexcept {
  const TierDecision t = impl_->redis.refund(policy, key, cost);
  const TierPolicyData* p = impl_->r().policy(policy);
  if (p != nullptr && t.source == Source::kRedis && cost > 0) {
    // The tokens are back in Redis: a cached "no" for this key may be
    // wrong now. Relaxed: a hint (see Impl::acquire).
    if (SlotRef s; impl_->slot(*p, key, false, &s)) {
      impl_->pool.side(s.index, detail::kSideDeny).store(0, std::memory_order_relaxed);
    }
  }
  return t;
}

bool HybridLimiter::reset(PolicyId policy, std::string_view key) noexcept {
  const TierPolicyData* p = impl_->r().policy(policy);
  if (p == nullptr) return false;
  const bool forgotten = impl_->redis.reset(policy, key);
  if (SlotRef s; impl_->slot(*p, key, false, &s)) {
    // The host's tokens go by a version-checked CAS (a worker's CAS on the
    // old word then fails and sees none); the hints are reset for this
    // version. Relaxed: each word is self-contained.
    const u64 v = Impl::version(s);
    detail::LeasePool& pool = impl_->pool;
    u64 w = pool.pool(s.index).load(std::memory_order_relaxed);
    pool.update(s.index, v, &w, [](u64) noexcept { return detail::SlotStep::store(0); });
    pool.side(s.index, detail::kSideDeny).store(0, std::memory_order_relaxed);
    pool.side(s.index, detail::kSideBatch).store(detail::side_tag(v, 1), std::memory_order_relaxed);
    pool.side(s.index, detail::kSideFullAt).store(0, std::memory_order_relaxed);
  }
  if (policy.index < impl_->local_ids.size() && impl_->local_ids[policy.index]) {
    try {
      impl_->local.reset(*impl_->local_ids[policy.index], key);
    } catch (...) {  // the local share is a fallback: its bucket refills by itself
    }
  }
  return forgotten;
}

std::uint64_t HybridLimiter::round_trips() const noexcept { return impl_->redis.round_trips(); }

std::uint32_t HybridLimiter::batch(PolicyId policy, std::string_view key) const noexcept {
  const TierPolicyData* p = impl_->r().policy(policy);
  if (p == nullptr) return 0;
  SlotRef s;
  if (!impl_->slot(*p, key, false, &s)) return 0;
  const u64 batch = detail::side_value(
      impl_->pool.side(s.index, detail::kSideBatch).load(std::memory_order_relaxed),
      Impl::version(s));
  return static_cast<std::uint32_t>(std::max<u64>(batch, 1));
}

RedisLimiter& HybridLimiter::redis() noexcept { return impl_->redis; }

}  // namespace shmlimit
