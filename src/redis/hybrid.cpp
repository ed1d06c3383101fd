// The hybrid tier: the host leases tokens from Redis in batches and serves
// its workers from a lease table in shared memory.
//
// Thread and process safety / invariants of the lease table
//   (1) A slot's key (policy name, NUL, key bytes) and hash are written once,
//       by the process that claimed the slot (state 0 -> kClaiming|pid, by
//       CAS), before the release store of kLive publishes them. Readers
//       compare keys only after an acquire load of kLive. A slot is never
//       freed, so there is no ABA: its key never changes once live.
//   (2) A key is claimed only in the first empty slot of its probe sequence;
//       a reader that meets a slot being claimed stops there and asks Redis
//       directly, so no key is ever claimed twice. A claim left by a dead
//       process (kill(pid, 0) == ESRCH) is reset to empty by the next reader.
//   (3) The pool word holds (expiry ms << 24 | tokens). Tokens enter it only
//       from a Redis admission, by the one process holding the slot's leaser
//       word, and never above max_batch - 1; workers take them by CAS. So
//       every admission on the host spends a token Redis admitted, and a
//       host holds at most max_batch - 1 tokens at any time (doc/redis.md
//       derives the fleet's over-admission bound from this).
//   (4) Nothing here can wedge: a dead leaser's word is taken over; a busy
//       slot or a full table only sends the decision to Redis directly.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"
#include "algorithms/decision_fold.hpp"
#include "tier.hpp"

namespace shmlimit {
namespace {

using u64 = std::uint64_t;
using detail::BucketReply;
using detail::ScriptCall;
using detail::TierPolicyData;

constexpr u64 kLeaseMagic = 0x31455341454C4853ULL;  // "SHLEASE1"
constexpr u64 kTokenBits = 24;
constexpr u64 kTokenMask = (u64{1} << kTokenBits) - 1;
constexpr u64 kClaiming = u64{1} << 62;
constexpr u64 kLive = u64{1} << 63;
constexpr std::uint32_t kKeyBytes = 184;
constexpr std::uint32_t kMaxProbe = 64;
constexpr std::uint32_t kMaxBatch = 1u << 20;

static_assert(std::atomic<u64>::is_always_lock_free,
              "lease slots are shared between processes: a lock-based atomic would not be");

struct LeaseHeader {
  std::atomic<u64> magic;  // kLeaseMagic once the header is written (release)
  u64 capacity;            // slots
  u64 slot_bytes;          // sizeof(LeaseSlot): a build with another layout refuses the segment
  u64 reserved[5];
};

struct alignas(64) LeaseSlot {
  std::atomic<u64> state;     // 0 empty; kClaiming | pid; kLive
  std::atomic<u64> pool;      // expiry ms (CLOCK_MONOTONIC) << 24 | leased tokens
  std::atomic<u64> leaser;    // 0, or pid | start ms << 32 of the process leasing now
  std::atomic<u64> batch;     // next lease size, 1..max_batch (0: not yet set)
  std::atomic<u64> last_lease_ms;
  std::atomic<u64> deny;      // until ms << 24 | smallest denied cost: Redis said no until then
  std::atomic<u64> full_at_ms;  // when Redis's bucket is full again (last lease), for reset_after
  u64 hash;                   // written before kLive (invariant 1)
  std::uint32_t key_len;
  char key[kKeyBytes];
};
static_assert(sizeof(LeaseSlot) == 256, "lease slots are 256 bytes");
static_assert(std::is_trivially_destructible_v<LeaseSlot>, "slots live in a shared mapping");

u64 mono_ms() { return static_cast<u64>(detail::mono_ns() / 1'000'000); }

u64 fnv1a(std::string_view s) {
  u64 h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h | 1;  // never 0
}

bool pid_dead(u64 pid) { return pid != 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH; }

std::string lease_name(std::string_view name) { return std::string(name) + ".lease"; }

// Maps the lease table `name`.lease, creating it if absent. Any number of
// processes may race: one creates (O_EXCL) and publishes the magic last; the
// others wait for it.
void* map_lease_table(const HybridOptions& o, std::size_t* bytes) {
  const std::string name = lease_name(o.name);
  const std::size_t want = sizeof(LeaseHeader) + 64 + static_cast<std::size_t>(o.lease_slots) * sizeof(LeaseSlot);
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, o.mode);
  bool creator = fd >= 0;
  if (fd >= 0) {
    ::fchmod(fd, o.mode);  // despite the umask
    if (::ftruncate(fd, static_cast<off_t>(want)) != 0) {
      ::close(fd);
      ::shm_unlink(name.c_str());
      throw Error(ErrorCode::kSystem, "cannot size the lease table " + name + ": " + std::strerror(errno));
    }
  } else if (errno == EEXIST) {
    fd = ::shm_open(name.c_str(), O_RDWR, 0);
  }
  if (fd < 0) {
    throw Error(errno == EACCES ? ErrorCode::kPermission : ErrorCode::kSystem,
                "cannot open the lease table " + name + ": " + std::strerror(errno));
  }
  // A creator that has not yet sized it: wait (2 s) for the size.
  struct stat st{};
  for (int i = 0; i < 2000; ++i) {
    if (::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= sizeof(LeaseHeader)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (static_cast<std::size_t>(st.st_size) < sizeof(LeaseHeader)) {
    ::close(fd);
    throw Error(ErrorCode::kTimeout, "the lease table " + name + " was never sized by its creator");
  }
  const std::size_t size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error(ErrorCode::kSystem, "cannot map the lease table " + name + ": " + std::strerror(errno));
  auto* h = static_cast<LeaseHeader*>(p);
  if (creator) {
    h->capacity = o.lease_slots;
    h->slot_bytes = sizeof(LeaseSlot);
    // Release: capacity and slot size are visible before the magic.
    h->magic.store(kLeaseMagic, std::memory_order_release);
  } else {
    // Acquire: pairs with the creator's release of the magic.
    for (int i = 0; i < 2000 && h->magic.load(std::memory_order_acquire) != kLeaseMagic; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const bool ok = h->magic.load(std::memory_order_acquire) == kLeaseMagic && h->slot_bytes == sizeof(LeaseSlot) &&
                    h->capacity >= 1 &&
                    sizeof(LeaseHeader) + 64 + h->capacity * sizeof(LeaseSlot) <= size;
    if (!ok) {
      ::munmap(p, size);
      throw Error(ErrorCode::kIncompatible, "the lease table " + name + " has another layout or was never initialised");
    }
  }
  *bytes = size;
  return p;
}

}  // namespace

struct HybridLimiter::Impl {
  HybridOptions options;
  RedisLimiter redis;
  Limiter local;
  void* map = nullptr;
  std::size_t map_bytes = 0;
  LeaseHeader* header = nullptr;
  LeaseSlot* slots = nullptr;
  std::uint32_t capacity = 0;
  std::vector<std::optional<PolicyId>> local_ids;  // kLocalShare policies in `local`

  Impl(HybridOptions o, Limiter l)
      : options(std::move(o)), redis(options.redis), local(std::move(l)) {
    map = map_lease_table(options, &map_bytes);
    header = static_cast<LeaseHeader*>(map);
    slots = reinterpret_cast<LeaseSlot*>(static_cast<char*>(map) + sizeof(LeaseHeader) + 64);
    capacity = static_cast<std::uint32_t>(header->capacity);
  }
  ~Impl() {
    if (map != nullptr) ::munmap(map, map_bytes);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  RedisLimiter::Impl& r() { return *redis.impl_; }

  // ---- the lease table ------------------------------------------------------
  LeaseSlot* find(const TierPolicyData& p, std::string_view key, bool claim) {
    if (p.policy.spec.name.size() + 1 + key.size() > kKeyBytes) return nullptr;
    char full[kKeyBytes];
    std::memcpy(full, p.policy.spec.name.data(), p.policy.spec.name.size());
    full[p.policy.spec.name.size()] = '\0';
    std::memcpy(full + p.policy.spec.name.size() + 1, key.data(), key.size());
    const std::string_view k(full, p.policy.spec.name.size() + 1 + key.size());
    const u64 h = fnv1a(k);
    for (std::uint32_t i = 0; i < std::min(kMaxProbe, capacity); ++i) {
      LeaseSlot& s = slots[(h + i) % capacity];
      for (;;) {
        // Acquire: a kLive state makes the claimer's key and hash visible (1).
        const u64 st = s.state.load(std::memory_order_acquire);
        if (st == kLive) {
          if (s.hash == h && s.key_len == k.size() && std::memcmp(s.key, k.data(), k.size()) == 0) return &s;
          break;  // another key: probe on
        }
        if (st != 0) {  // being claimed
          u64 expected = st;
          if (pid_dead(st & ~kClaiming) &&
              s.state.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
            continue;  // a dead claimer's slot is empty again: look once more
          }
          return nullptr;  // a live claimer: this decision goes to Redis (2)
        }
        if (!claim) return nullptr;
        u64 expected = 0;
        // Acq_rel: the claim orders before our key writes below.
        if (!s.state.compare_exchange_strong(expected, kClaiming | static_cast<u64>(::getpid()),
                                             std::memory_order_acq_rel)) {
          continue;  // someone else got there first: see what it became
        }
        s.hash = h;
        s.key_len = static_cast<std::uint32_t>(k.size());
        std::memcpy(s.key, k.data(), k.size());
        // Relaxed: the counters start at 0 and are published with the slot.
        s.pool.store(0, std::memory_order_relaxed);
        s.leaser.store(0, std::memory_order_relaxed);
        s.batch.store(1, std::memory_order_relaxed);
        s.deny.store(0, std::memory_order_relaxed);
        // Release: publishes the key and counters with kLive (1).
        s.state.store(kLive, std::memory_order_release);
        return &s;
      }
    }
    return nullptr;  // no room on the probe path: Redis decides directly
  }

  // The leaser word: one process at a time asks Redis for a batch (3).
  bool become_leaser(LeaseSlot& s, u64 now_ms) {
    const u64 me = static_cast<u64>(::getpid()) | (now_ms << 32);
    u64 cur = s.leaser.load(std::memory_order_relaxed);
    if (cur != 0) {
      const u64 since = cur >> 32;
      const u64 limit_ms = static_cast<u64>(4 * (r().options.connect_timeout + r().options.command_timeout).count()) + 1000;
      // Start times are kept mod 2^32 ms: the difference is taken in 32 bits.
      const auto held = static_cast<std::uint32_t>(static_cast<std::uint32_t>(now_ms) - static_cast<std::uint32_t>(since));
      const bool stale = pid_dead(cur & 0xFFFFFFFFu) || held > limit_ms;
      if (!stale) return false;
    }
    // Acquire: pairs with the previous leaser's release (its deposit is done).
    return s.leaser.compare_exchange_strong(cur, me, std::memory_order_acquire);
  }
  static void end_lease(LeaseSlot& s) {
    // Release: our deposit happens before the next leaser's acquire.
    s.leaser.store(0, std::memory_order_release);
  }

  // ---- decisions ------------------------------------------------------------
  TierDecision when_down(PolicyId id, const TierPolicyData& p, std::string_view key, u64 cost) {
    if (p.policy.when_down == WhenDown::kLocalShare && id.index < local_ids.size() && local_ids[id.index]) {
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
    // Leasing would change a quiet period (a denial restarts it) and has
    // nothing to offer a peek or an impossible cost.
    if (p->algo.algorithm == Algorithm::kQuietPeriod || cost == 0 || cost > p->algo.burst || cost > kTokenMask) {
      return direct(id, *p, key, cost);
    }
    LeaseSlot* s = find(*p, key, true);
    if (s == nullptr) return direct(id, *p, key, cost);
    const u64 now_ms = mono_ms();

    // Redis said no to this cost until `until`: nothing can have refilled
    // it sooner (only a refund could), so deny without asking again.
    // Relaxed: a self-contained hint; a stale read only asks Redis.
    const u64 deny = s->deny.load(std::memory_order_relaxed);
    if (deny != 0 && cost >= (deny & kTokenMask) && now_ms < (deny >> kTokenBits)) {
      Decision d;
      d.limit = p->algo.burst;
      d.retry_after = std::chrono::milliseconds((deny >> kTokenBits) - now_ms);
      d.reset_after = d.retry_after;
      return TierDecision{d, Source::kLease};
    }

    // Take leased tokens. Relaxed: the pool word is self-contained (its
    // tokens are a count, no other memory is published with them).
    u64 w = s->pool.load(std::memory_order_relaxed);
    while ((w >> kTokenBits) > now_ms && (w & kTokenMask) >= cost) {
      if (s->pool.compare_exchange_weak(w, w - cost, std::memory_order_relaxed)) {
        return TierDecision{from_pool(*p, (w & kTokenMask) - cost, s->full_at_ms.load(std::memory_order_relaxed), now_ms),
                            Source::kLease};
      }
    }

    if (!become_leaser(*s, now_ms)) return direct(id, *p, key, cost);
    TierDecision t = lease(id, *p, *s, key, cost, now_ms);
    end_lease(*s);
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
      if (p.policy.when_down == WhenDown::kLocalShare && q.policy.index < local_ids.size() && local_ids[q.policy.index]) {
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
        if (shared_at[j] < each.size()) each[shared_at[j]] = local.peek(shared[j].policy, shared[j].key, 0);
      }
    }
    return TierDecision{fold.combined, source};
  }

  // Asks Redis for a batch: this request's cost plus what the host keeps.
  TierDecision lease(PolicyId id, const TierPolicyData& p, LeaseSlot& s, std::string_view key, u64 cost, u64 now_ms) {
    const u64 max_batch = options.max_batch;
    const u64 batch = std::clamp<u64>(s.batch.load(std::memory_order_relaxed), 1, max_batch);
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
    if (!d.allowed || rep.granted < cost) {
      // Relaxed: hints (see acquire).
      if (d.retry_after != Nanos::max() && d.retry_after >= std::chrono::milliseconds(1)) {
        const u64 until = now_ms + static_cast<u64>(std::chrono::duration_cast<std::chrono::milliseconds>(d.retry_after).count());
        s.deny.store((until << kTokenBits) | std::min<u64>(cost, kTokenMask), std::memory_order_relaxed);
      }
      s.batch.store(1, std::memory_order_relaxed);
      return TierDecision{d, Source::kRedis};
    }
    s.deny.store(0, std::memory_order_relaxed);
    s.full_at_ms.store(now_ms + static_cast<u64>(std::chrono::duration_cast<std::chrono::milliseconds>(d.reset_after).count()),
                       std::memory_order_relaxed);
    // Deposit what this request does not use, never above max_batch - 1 (3):
    // a token dropped here is only under-admission.
    const u64 extra = rep.granted - cost;
    const u64 expiry = now_ms + static_cast<u64>(options.lease_ttl.count());
    u64 w = s.pool.load(std::memory_order_relaxed);
    u64 left = 0;
    for (;;) {
      const u64 valid = (w >> kTokenBits) > now_ms ? (w & kTokenMask) : 0;
      left = std::min<u64>(valid + extra, max_batch - 1);
      if (s.pool.compare_exchange_weak(w, (expiry << kTokenBits) | left, std::memory_order_relaxed)) break;
    }
    // Adapt the batch: double while the host drains batches within half a
    // lease lifetime, halve otherwise, and never above what Redis has left
    // per host over two batches (toward 1 as the fleet's bucket empties).
    const u64 last = s.last_lease_ms.exchange(now_ms, std::memory_order_relaxed);
    const bool fast = last != 0 && now_ms - last < static_cast<u64>(options.lease_ttl.count()) / 2;
    u64 next = fast ? batch * 2 : std::max<u64>(batch / 2, 1);
    next = std::min<u64>(next, std::max<u64>(d.remaining / (2 * std::max<u64>(options.hosts, 1)), 1));
    s.batch.store(std::clamp<u64>(next, 1, max_batch), std::memory_order_relaxed);
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
  if (options.lease_ttl.count() <= 0) throw Error(ErrorCode::kInvalidArgument, "lease_ttl must be positive");
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
  const bool b = ::shm_unlink(lease_name(name).c_str()) == 0;
  return a || b;
}

PolicyId HybridLimiter::add_policy(const TierPolicy& policy) {
  TierPolicyData data = detail::make_tier_policy(policy, true);
  std::optional<PolicyId> local_id;
  if (policy.when_down == WhenDown::kLocalShare) {
    // The host's share: rate.count and burst scaled, at least 1 each.
    PolicySpec share = data.policy.spec;
    share.rate.count = std::max<u64>(static_cast<u64>(static_cast<double>(share.rate.count) * policy.local_share), 1);
    share.burst = std::max<u64>(static_cast<u64>(static_cast<double>(share.burst) * policy.local_share), 1);
    share.on_full = OnFull::kDeny;
    local_id = impl_->local.add_policy(share, /*replace=*/true);
  }
  RedisLimiter::Impl& r = impl_->r();
  for (std::uint32_t i = 0; i < r.policies.size(); ++i) {
    if (r.policies[i].policy.spec.name != data.policy.spec.name) continue;
    if (r.policies[i].policy.spec == data.policy.spec && r.policies[i].policy.when_down == data.policy.when_down) {
      return PolicyId{i};
    }
    throw Error(ErrorCode::kPolicyConflict, "policy \"" + data.policy.spec.name + "\" is already registered with other parameters");
  }
  r.policies.push_back(std::move(data));
  impl_->local_ids.resize(r.policies.size());
  impl_->local_ids.back() = local_id;
  return PolicyId{static_cast<std::uint32_t>(r.policies.size() - 1)};
}

TierDecision HybridLimiter::acquire(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  try {
    return impl_->acquire(policy, key, cost);
  } catch (...) {  // std::bad_alloc only: the policy's WhenDown answer
    const TierPolicyData* p = impl_->r().policy(policy);
    if (p == nullptr) return TierDecision{};
    return impl_->r().down(*p);
  }
}

TierDecision HybridLimiter::acquire_many(std::span<const Request> requests, std::span<Decision> each) noexcept {
  try {
    return impl_->many(requests, each);
  } catch (...) {  // std::bad_alloc only: a refusal that charged nothing
    TierDecision t;
    t.source = Source::kFailClosed;
    return t;
  }
}

TierDecision HybridLimiter::refund(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  const TierDecision t = impl_->redis.refund(policy, key, cost);
  const TierPolicyData* p = impl_->r().policy(policy);
  if (p != nullptr && t.source == Source::kRedis && cost > 0) {
    // The tokens are back in Redis: a cached "no" for this key may be
    // wrong now. Relaxed: a hint (see Impl::acquire).
    if (LeaseSlot* s = impl_->find(*p, key, false)) s->deny.store(0, std::memory_order_relaxed);
  }
  return t;
}

bool HybridLimiter::reset(PolicyId policy, std::string_view key) noexcept {
  const TierPolicyData* p = impl_->r().policy(policy);
  if (p == nullptr) return false;
  const bool forgotten = impl_->redis.reset(policy, key);
  if (LeaseSlot* s = impl_->find(*p, key, false)) {
    // Relaxed: each word is self-contained; a worker's CAS on the old pool
    // fails and sees no tokens.
    s->pool.store(0, std::memory_order_relaxed);
    s->deny.store(0, std::memory_order_relaxed);
    s->batch.store(1, std::memory_order_relaxed);
    s->full_at_ms.store(0, std::memory_order_relaxed);
  }
  if (policy.index < impl_->local_ids.size() && impl_->local_ids[policy.index]) {
    try {
      impl_->local.reset(*impl_->local_ids[policy.index], key);
    } catch (...) {  // the local share is a fallback: its bucket refills by itself
    }
  }
  return forgotten;
}

std::uint64_t HybridLimiter::redis_calls() const noexcept { return impl_->redis.round_trips(); }

std::uint32_t HybridLimiter::batch(PolicyId policy, std::string_view key) const noexcept {
  const TierPolicyData* p = impl_->r().policy(policy);
  if (p == nullptr) return 0;
  LeaseSlot* s = impl_->find(*p, key, false);
  return s == nullptr ? 0 : static_cast<std::uint32_t>(s->batch.load(std::memory_order_relaxed));
}

RedisLimiter& HybridLimiter::redis() noexcept { return impl_->redis; }

}  // namespace shmlimit
