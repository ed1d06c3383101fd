// Limiter::Impl: the one private class behind shmlimit::Limiter, declared
// once here and implemented by part, one idea per file (as leveldb's
// db_impl.h):
//   limiter.cpp      lifecycle, the process registry, reset, accessors
//   policies.cpp     the policy table: add/replace, names, the admin token
//   decide.cpp       one decision: acquire, peek, refund (the hot path)
//   log_apply.cpp    the exact sliding log's shared-memory protocol
//   lease.cpp        concurrency leases (with the Leases protocol, lease.hpp)
//   multi_limit.cpp  acquire_many: all or nothing, with rollback
//   counters.cpp     exact per-policy totals: per-thread counter blocks
//   src/admin/       stats, dump, check, recent denials, import
// The policy cache, the fallback decision and the denial hook are defined
// here, inline: every decision runs them.
//
// Thread safety: every method may be called by any thread of any process
// that maps the segment; the hot path (apply) is lock-free and never
// throws. Policy-table writers are serialised by the admin token.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/reserve.hpp"
#include "algorithms/sliding_log.hpp"
#include "limiter/counters.hpp"
#include "limiter/lease.hpp"
#include "segment/layout.hpp"
#include "segment/policy_kind.hpp"
#include "segment/process.hpp"
#include "segment/segment.hpp"
#include "shmlimit/shmlimit.hpp"
#include "table/denials.hpp"
#include "table/hash.hpp"
#include "table/table.hpp"

namespace shmlimit {

namespace detail {

// This thread's fold of repeated denials (denials.hpp): plain thread-local
// state, never shared; cleared in a fork()ed child (record_denial).
inline thread_local DenialFold t_denial_fold;

// A consistent copy of one policy entry's active parameters.
struct PolicySnapshot {
  detail::AlgoParams algo;
  OnFull on_full = OnFull::kAllow;
  bool valid = false;  // false: the entry is corrupt (hostile or buggy writer)
  u64 kind_word = 0;   // the entry's raw kind word (segment/policy_kind.hpp)
  // A retired entry (a replacement moved its name to `forward`, layout.hpp
  // PolicyState): its buckets read as absent, and decisions follow forward.
  bool retired = false;
  std::uint32_t forward = 0;
  // Derived once per parameter change (valid entries only):
  u64 reciprocal = 0;       // gcra_reciprocal(emission): the hot path's division
  std::int64_t margin = 0;  // algo_horizon_margin(algo)

  void derive() noexcept {
    reciprocal = valid ? detail::gcra_reciprocal(algo.emission_ns) : 0;
    margin = valid ? detail::algo_horizon_margin(algo) : detail::kClockHorizonNs;
  }

  bool algorithm_is_lease() const noexcept { return algo.algorithm == Algorithm::kConcurrency; }

  // The bucket's capacity in cost units: what a fresh key admits at once.
  u64 capacity() const noexcept {
    switch (algo.algorithm) {
      case Algorithm::kFixedWindow:
      case Algorithm::kSlidingWindow:
      case Algorithm::kQuietPeriod:
        return algo.count;
      default:
        return algo.burst;
    }
  }
  // The state of a key that is absent: a full bucket. GCRA and the leaky
  // bucket use "full as of now", so that a reader whose clock is behind
  // ours sees it slightly drained rather than fuller than it was.
  u64 fresh_state(std::int64_t now) const noexcept {
    const bool tat =
        algo.algorithm == Algorithm::kGcra || algo.algorithm == Algorithm::kLeakyBucket;
    return tat ? static_cast<u64>(std::max<std::int64_t>(now, 0)) : 0;
  }
};

// Copies a Decision field by field. A whole-struct copy of a Decision whose
// one-byte fields (allowed, reason) were just stored reads them back with
// 16-byte loads, which cannot be forwarded from the narrow stores: a
// store-forwarding stall of about 10 ns per copy on the hot path (seen in
// perf annotate of apply). Field by field, each load matches its store.
[[gnu::always_inline]] inline Decision copy_fields(const Decision& from) noexcept {
  Decision to;
  to.allowed = from.allowed;
  to.limit = from.limit;
  to.remaining = from.remaining;
  to.retry_after = from.retry_after;
  to.reset_after = from.reset_after;
  to.reason = from.reason;
  return to;
}
[[gnu::always_inline]] inline void set_outcome(detail::AlgoOutcome& to,
                                               const detail::AlgoOutcome& from) noexcept {
  to.decision = copy_fields(from.decision);
  to.store = from.store;
  to.new_state = from.new_state;
}

// One decision on a state; GCRA, the hot default, is inlined.
[[gnu::always_inline]] inline detail::AlgoOutcome decide_state(const PolicySnapshot& s, u64 state,
                                                               std::int64_t now,
                                                               u64 cost) noexcept {
  const detail::AlgoParams& p = s.algo;
  if (p.algorithm == Algorithm::kGcra) {
    return detail::gcra_decide(state, now, cost,
                               detail::GcraParams{p.emission_ns, p.burst, s.reciprocal});
  }
  // A valid snapshot's parameters were checked when it was loaded
  // (validate); the clock is kept within its horizon here, as algo_decide
  // would clamp it.
  if (!s.valid) return detail::algo_decide(p, state, now, cost);
  const std::int64_t hi = detail::kClockHorizonNs - s.margin;  // margin < horizon (valid)
  return detail::algo_decide_valid(p, state, std::max<std::int64_t>(std::min(now, hi), 0), cost);
}

}  // namespace detail

struct Limiter::Impl final : detail::ReclaimPolicy {
  using AtomicU64 = detail::AtomicU64;
  using u64 = detail::u64;
  using PolicySnapshot = detail::PolicySnapshot;

  std::unique_ptr<detail::Segment> seg;
  // seg->read_only(), here: the fast path tests it without a second load.
  bool read_only;
  // Exact per-policy totals (counters.hpp). Declared after `seg`, so it is
  // destroyed (its blocks freed) before the segment is unmapped.
  detail::CounterBlocks counters;
  detail::Table table;
  detail::PolicyEntry* policy_table;
  detail::ProcessEntry* process_table;
  Options options;
  std::int64_t epoch;
  u64 seed;
  std::int64_t claim_timeout_ns;
  // pid (high 32) | registry index (low 32) of this process's entry;
  // refreshed after fork. Relaxed: process-local cache.
  mutable std::atomic<u64> process_slot{0};
  // Concurrency leases (lease.hpp) and the sliding-log region (sliding_log.hpp).
  mutable detail::Leases
      leases;  // mutable: process_entry() (const) recovers a dead owner's records
  AtomicU64* log_base;
  std::uint32_t log_entries;
  // When this handle last scanned the registry for dead lease holders
  // (ns since the epoch); at most one scan per kLeaseScanNs. Relaxed: a
  // process-local throttle.
  mutable std::atomic<std::int64_t> last_lease_scan{-kLeaseScanNs};
  static constexpr std::int64_t kLeaseScanNs = 1'000'000;
  // The recent-denials ring (denials.hpp), located once: a denial records
  // into it without recomputing its address.
  detail::DenialRing denials;

  explicit Impl(std::unique_ptr<detail::Segment> s, const Options& o)
      : seg(std::move(s)),
        read_only(seg->read_only()),
        counters(seg->base(), seg->geometry(), seg->read_only()),
        table(seg->base() + seg->geometry().slot_offset, seg->geometry()),
        policy_table(
            reinterpret_cast<detail::PolicyEntry*>(seg->base() + seg->geometry().policy_offset)),
        process_table(
            reinterpret_cast<detail::ProcessEntry*>(seg->base() + seg->geometry().process_offset)),
        options(o),
        epoch(seg->epoch_raw_ns()),
        seed(seg->hash_seed()),
        claim_timeout_ns(std::chrono::duration_cast<Nanos>(o.claim_timeout).count()),
        leases(&table,
               reinterpret_cast<detail::LeaseArea*>(seg->base() + seg->geometry().lease_offset)),
        log_base(reinterpret_cast<AtomicU64*>(seg->base() + seg->geometry().log_offset)),
        log_entries(seg->geometry().log_entries),
        denials(detail::DenialRing::at(seg->base(), seg->geometry())) {}
  // The closing thread's deferred per-key denials are posted while the
  // segment is still mapped (another thread's are dropped: approximate).
  ~Impl() { post_denials(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  // ---- policies -----------------------------------------------------------
  // Process-local cache of validated policy snapshots. Per entry, a pointer
  // to an immutable CachedPolicy: the raw words it was derived from (the
  // entry's state word and its active parameter set) and the snapshot, so
  // the divisions of validation run once per parameter change rather than
  // once per decision. A CachedPolicy is written completely, then published
  // by a release store of the pointer under cache_mutex; readers take the
  // pointer with acquire and never lock. It is never freed while the handle
  // lives (a reader may still be using it); at most kMaxCachedPolicies are
  // made per handle, after which a change is validated on every decision
  // (only a segment whose policy words keep changing, i.e. a buggy or
  // hostile writer, gets there).
  struct CachedPolicy {
    u64 state = 0;             // PolicyEntry::state it was read under; never 0, never retired
    std::array<u64, 5> raw{};  // kind, count, period_ns, burst, emission_ns as read
    PolicySnapshot snap;
  };
  static constexpr std::size_t kMaxCachedPolicies = 4096;
  mutable std::array<std::atomic<const CachedPolicy*>, detail::kMaxPolicies> cache{};
  mutable std::mutex cache_mutex;
  mutable std::vector<std::unique_ptr<const CachedPolicy>> cache_store;  // guarded by cache_mutex

  // The hot path's policy read: the cached snapshot of entry `index` if the
  // entry's state word and active parameter words are still exactly those
  // it was derived from; nullptr otherwise (no cache yet, a replacement, a
  // retired entry, bytes changed in place by a buggy or hostile writer:
  // load_policy reads and validates afresh). One acquire load of the
  // process-local pointer, one of the entry's state, five relaxed loads,
  // no store. Lock-free (wait-free).
  [[gnu::always_inline]] const PolicySnapshot* cached_policy(std::uint32_t index) const noexcept {
    if (index >= detail::kMaxPolicies) [[unlikely]]
      return nullptr;
    // Acquire: pairs with the release store in remember_policy, so the
    // CachedPolicy's fields written before it was published are visible.
    const CachedPolicy* c = cache[index].load(std::memory_order_acquire);
    if (c == nullptr) [[unlikely]]
      return nullptr;
    const detail::PolicyEntry& e = policy_table[index];
    // Acquire: pairs with the policy writer's release store of state, so
    // the parameter set it names is complete (as in read_policy).
    const u64 s = e.state.load(std::memory_order_acquire);
    const detail::PolicyParams& p = e.params[detail::PolicyState::active(s)];
    // Relaxed, and no second read of state (read_policy's seqlock check is
    // not needed here): a hit requires every word to equal the set the
    // snapshot was validated from, read consistently under this same state
    // word. Even if a writer has moved on and is rewriting this set, words
    // that all equal the cached ones are exactly the parameters state `s`
    // named when it was loaded, so the decision is the one it would have
    // been at that instant. A word changed in place is a miss as soon as it
    // is visible.
    const u64 diff = (s ^ c->state) | (p.kind.load(std::memory_order_relaxed) ^ c->raw[0]) |
                     (p.count.load(std::memory_order_relaxed) ^ c->raw[1]) |
                     (p.period_ns.load(std::memory_order_relaxed) ^ c->raw[2]) |
                     (p.burst.load(std::memory_order_relaxed) ^ c->raw[3]) |
                     (p.emission_ns.load(std::memory_order_relaxed) ^ c->raw[4]);
    return diff == 0 ? &c->snap : nullptr;
  }

  // Publishes a snapshot read (consistently, read_policy) under `state`.
  void remember_policy(std::uint32_t index, u64 state, const PolicySnapshot& s) const noexcept {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache_store.size() >= kMaxCachedPolicies) return;
    try {
      auto c = std::make_unique<CachedPolicy>();
      c->state = state;
      c->raw = {s.kind_word, s.algo.count, s.algo.period_ns, s.algo.burst, s.algo.emission_ns};
      c->snap = s;
      cache_store.reserve(cache_store.size() + 1);
      // Release: publishes the fields above to cached_policy's acquire load.
      cache[index].store(c.get(), std::memory_order_release);
      cache_store.push_back(std::move(c));  // cannot throw: reserved
    } catch (...) {
      // Out of memory: stay uncached; every decision validates afresh.
    }
  }

  // Reads one policy entry's active parameter set from the segment,
  // consistently (a seqlock read); validates it when asked.
  bool read_policy(const detail::PolicyEntry& e, PolicySnapshot* out, u64* state,
                   bool validate_now) const noexcept {
    for (int attempt = 0; attempt < 64; ++attempt) {
      // Acquire: pairs with the writer's release store of state, so the
      // parameter set it names is complete.
      const u64 s1 = e.state.load(std::memory_order_acquire);
      if (s1 == 0) return false;
      if (detail::PolicyState::retired(s1)) {
        // Never cached (raw state 0): a retired entry has no parameters
        // to derive, only where its name went.
        *out = PolicySnapshot{};
        out->retired = true;
        out->forward = detail::PolicyState::forward(s1);
        out->derive();
        *state = 0;
        return true;
      }
      const detail::PolicyParams& p = e.params[detail::PolicyState::active(s1)];
      const u64 kind = p.kind.load(std::memory_order_relaxed);
      const u64 count = p.count.load(std::memory_order_relaxed);
      const u64 period = p.period_ns.load(std::memory_order_relaxed);
      const u64 burst = p.burst.load(std::memory_order_relaxed);
      const u64 emission = p.emission_ns.load(std::memory_order_relaxed);
      // Acquire fence: the relaxed loads complete before state is re-read;
      // an unchanged state proves they saw one parameter set.
      std::atomic_thread_fence(std::memory_order_acquire);
      if (e.state.load(std::memory_order_relaxed) != s1) continue;
      const detail::PolicyKind k = detail::PolicyKind::unpack(kind);
      out->algo = detail::AlgoParams{k.algorithm, count, period, burst, emission, k.wait};
      out->on_full = k.on_full == OnFull::kDeny ? OnFull::kDeny : OnFull::kAllow;
      out->kind_word = kind;
      out->retired = false;
      if (validate_now) validate(out);
      *state = s1;
      return true;
    }
    out->valid = false;
    out->derive();
    *state = 0;  // kept changing: do not cache
    return true;
  }

  // A hostile segment may hold anything: never divide by it unchecked.
  // algo_params_valid rejects unknown algorithms and unrepresentable values.
  static void validate(PolicySnapshot* out) noexcept {
    out->valid =
        !out->retired && detail::PolicyKind::valid(out->kind_word) &&
        detail::algo_params_valid(out->algo) &&
        out->algo.emission_ns == detail::gcra_emission(out->algo.count, out->algo.period_ns);
    out->derive();
  }

  bool load_policy(std::uint32_t index, PolicySnapshot* out) const noexcept {
    if (const PolicySnapshot* hit = cached_policy(index)) {
      *out = *hit;
      return true;
    }
    if (index >= detail::kMaxPolicies) return false;
    const detail::PolicyEntry& e = policy_table[index];
    u64 raw_state = 0;
    if (!read_policy(e, out, &raw_state, /*validate=*/false)) return false;
    if (out->retired) return true;
    // Not the cached words (a replacement, or bytes written by a buggy or
    // hostile process): validated afresh, and cached unless the entry kept
    // changing while it was read (raw_state 0).
    validate(out);
    if (raw_state != 0) remember_policy(index, raw_state, *out);
    return true;
  }

  // Follows retired entries (layout.hpp PolicyState) from `*index` to the
  // entry that holds the policy's name now, and loads it. False when the
  // entry is unused. Forwards only ever point at entries published before
  // the retirement (policies.cpp, "Replacing a policy"); a chain longer
  // than the table (only a corrupt segment) yields an invalid snapshot.
  // Lock-free: one acquire load per hop, at most kMaxPolicies hops.
  bool resolve_policy(std::uint32_t* index, PolicySnapshot* out) const noexcept {
    for (std::uint32_t hop = 0; hop <= detail::kMaxPolicies; ++hop) {
      if (!load_policy(*index, out)) return false;
      if (!out->retired) return true;
      *index = out->forward;
    }
    out->retired = false;
    out->valid = false;
    out->derive();
    return true;
  }
  std::uint32_t resolved(std::uint32_t index) const noexcept {
    PolicySnapshot p;
    resolve_policy(&index, &p);
    return index;
  }

  std::string policy_name(std::uint32_t index) const;
  std::optional<std::uint32_t> find_policy(std::string_view name) const noexcept;

  // ReclaimPolicy: a bucket may be reclaimed when its algorithm says it is
  // indistinguishable from an absent key.
  bool is_full(std::uint32_t policy, u64 payload, std::int64_t now) const noexcept override;

  // ---- per-process event counters -----------------------------------------
  detail::ProcessEntry& process_entry() const noexcept;

  void count(detail::AtomicU64 detail::ProcessEntry::*field, u64 n = 1) const noexcept {
    if (seg->read_only() || n == 0) return;
    // Relaxed: a statistic; no other memory depends on it.
    (process_entry().*field).fetch_add(n, std::memory_order_relaxed);
  }

  // ---- recent denials ------------------------------------------------------
  detail::DenialRing denial_ring() const noexcept { return denials; }

  // Records a denied acquire in the ring (denials.hpp), a flood of one key
  // folded per thread (DenialFold); the admit path never gets here.
  // Returns `d`.
  Decision noted(std::uint32_t policy, std::string_view key, u64 cost, std::int64_t now,
                 const Decision& d) const noexcept {
    if (!d.allowed && !read_only && d.reason != Reason::kUnknownPolicy) {
      if (!detail::t_denial_fold.absorb(counters.id(), key, now, policy, d.reason, cost,
                                        d.retry_after))
        record_denial(key, detail::DenialFold::Denial{now, policy, d.reason, cost, d.retry_after});
    }
    return d;
  }
  // What noted() does when the fold does not absorb the denial. Posts the
  // thread's deferred per-key counts first (post_denials).
  [[gnu::noinline]] void record_denial(std::string_view key,
                                       const detail::DenialFold::Denial& d) const noexcept;
  // Adds this thread's folded fast-path denials (DenialFold::unposted) to
  // their key's per-key count, if the fold is this handle's and the slot
  // still holds the key they were decided on; else they are dropped (the
  // per-key counts are approximate; the exact totals have them all).
  [[gnu::noinline]] void post_denials() const noexcept;

  // Counts one decision of an acquire or a lease in the exact per-policy
  // totals (counters.hpp) and records a denial in the ring. An admitted
  // decision pays a load and a store in this thread's own counter block.
  [[gnu::always_inline]] void counted(std::uint32_t policy, std::string_view key, u64 cost,
                                      std::int64_t now, const Decision& d) noexcept {
    if (d.reason == Reason::kUnknownPolicy) [[unlikely]]
      return;  // no policy to count it for
    counters.add(policy, d.allowed);
    if (!d.allowed) [[unlikely]]
      noted(policy, key, cost, now, d);
  }

  // ---- decisions ----------------------------------------------------------
  // The common acquire (Acquire, counted) or peek, decided in one inlined
  // piece (decide.cpp): a policy in the process's cache whose whole state
  // is the slot's word (every algorithm but the sliding log and leases;
  // GCRA inlined), a key of up to 16 bytes that is already in the table.
  // Returns false, having written
  // nothing, when any of that does not hold: apply() then decides as always.
  template <bool Acquire>
  bool fast_decide(std::uint32_t policy, std::string_view key, u64 cost, std::int64_t& now,
                   bool live, Decision* out) noexcept;

  static Decision unknown_policy() noexcept {
    Decision d;
    d.allowed = false;
    d.reason = Reason::kUnknownPolicy;
    return d;
  }

  // The documented fail-open / fail-closed decision.
  Decision fallback(const PolicySnapshot& p, Reason reason) const noexcept {
    Decision d;
    d.allowed = p.on_full == OnFull::kAllow;
    d.limit = p.valid ? p.capacity() : 0;
    d.remaining = 0;
    // Fail-closed: suggest one emission interval, the soonest one unit
    // would refill.
    d.retry_after =
        d.allowed || !p.valid ? Nanos(0) : Nanos(static_cast<std::int64_t>(p.algo.emission_ns));
    d.reset_after = Nanos(0);
    d.reason = reason;
    return d;
  }

  // kTally / kTallyRestart: Limiter::tally (algo_tally), restart = false / true.
  enum class Op { kAcquire, kPeek, kRefund, kTally, kTallyRestart };
  static constexpr bool is_tally(Op op) noexcept {
    return op == Op::kTally || op == Op::kTallyRestart;
  }

  // Where an acquire was charged: enough to give it back to the same
  // bucket (and to nobody else's) if a multi-limit decision rolls back.
  // An acquire given a Charge (acquire_many's charges) is all or nothing
  // on its bucket too: refused, it writes nothing (not even the quiet
  // period's restart, which a refused acquire() stores).
  struct Charge {
    bool charged = false;
    std::uint32_t slot = 0;
    u64 version = 0;
  };

  // Checks shared by every operation; on failure returns the decision.
  // `policy` is resolved in place: a PolicyId held from before a
  // replacement that retired its entry names the entry holding it now.
  std::optional<Decision> precheck(std::uint32_t& policy, std::string_view key, std::int64_t now,
                                   PolicySnapshot* p) const noexcept;
  // Claims a slot for an absent key, starting at `state`; `ref` then names
  // it (claimed here, or by another process meanwhile). A table that is
  // full or contended gives the documented fallback, counted.
  std::optional<Decision> claim(const PolicySnapshot& p, const detail::PackedKey& pk,
                                std::int64_t now, u64 state, detail::SlotRef* ref) noexcept;
  // `live_clock`: `now` was just read from the clock (not given by the
  // caller), so it may be read again.
  Decision apply(std::uint32_t policy, std::string_view key, u64 cost, std::int64_t now, Op op,
                 Charge* charge = nullptr, bool live_clock = false) noexcept;
  // apply() when the cached snapshot does not do: precheck, then decide.
  [[gnu::noinline]] Decision apply_slow(std::uint32_t policy, std::string_view key, u64 cost,
                                        std::int64_t now, Op op, Charge* charge,
                                        bool live_clock) noexcept;
  // The decision on a checked policy snapshot and key (apply's body).
  [[gnu::always_inline]] inline Decision decide(const PolicySnapshot& p, std::uint32_t policy,
                                                std::string_view key, u64 cost, std::int64_t now,
                                                Op op, Charge* charge, bool live_clock) noexcept;

  // ---- sliding log (log_apply.cpp, algorithms/sliding_log.hpp) ----------------
  AtomicU64* log_of(std::uint32_t index) const noexcept {
    return log_base + static_cast<std::size_t>(index & (table.capacity() - 1)) * log_entries;
  }

  // Working memory of one decision: on the stack, sized for the policy.
  template <std::size_t N>
  struct LogBuffers {
    u64 snap[N];
    std::uint32_t pick[N];
    std::int64_t scratch[N];
  };
  Decision log_apply(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost,
                     std::int64_t now, Op op, Charge* charge, bool live_clock) noexcept;
  [[gnu::noinline]] Decision log_apply_large(const PolicySnapshot& p, const detail::PackedKey& pk,
                                             u64 cost, std::int64_t now, Op op, Charge* charge,
                                             bool live_clock) noexcept;
  Decision log_run(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost, std::int64_t now,
                   Op op, Charge* charge, bool live_clock, u64* snap, std::uint32_t* pick,
                   std::int64_t* scratch) noexcept;
  static void log_give_back(AtomicU64* log, const std::span<std::uint32_t> picks, std::uint32_t n,
                            u64 mine) noexcept;
  Decision log_refund(const detail::LogParams& lp, AtomicU64* log, std::span<u64> entries, u64 v,
                      std::int64_t now, u64 cost, std::span<std::uint32_t> picks,
                      std::span<std::int64_t> work) noexcept;
  void log_undo(const PolicySnapshot& p, const Charge& c, u64 cost, std::int64_t now) noexcept;
  void log_forget(std::uint32_t index, u64 meta) noexcept;
  void log_store(std::uint32_t policy, std::uint32_t index, u64 v,
                 std::span<const std::int64_t> times) noexcept;
  std::pair<Decision, Decision> log_view(const PolicySnapshot& p, std::uint32_t index, u64 word,
                                         std::int64_t now) const;

  // ---- concurrency leases (lease.cpp) ---------------------------------------
  Decision needs_lease(const PolicySnapshot& p) const noexcept {
    Decision d;
    d.limit = p.capacity();
    d.reason = Reason::kNeedsLease;
    return d;
  }

  static constexpr std::uint32_t kNoRecord = ~std::uint32_t{0};

  std::uint32_t reclaim_dead_leases(std::uint32_t slot,
                                    std::vector<std::string>* dead = nullptr) noexcept;
  u64 lease_records_cost(std::uint32_t index, u64 meta) const noexcept;
  std::unordered_map<u64, u64> lease_costs() const;
  std::string check_lease_count(std::uint32_t index, u64 meta, u64 word,
                                const std::unordered_map<u64, u64>& costs) const;
  std::uint32_t own_entry_index() const noexcept {
    return static_cast<std::uint32_t>(&process_entry() - process_table);
  }
  Lease lease(std::uint32_t policy, std::string_view key, u64 cost) noexcept;
  Decision lease_decide(const PolicySnapshot& p, std::uint32_t policy, std::string_view key,
                        u64 cost, Lease* out) noexcept;

  // ---- reservations (reserve.cpp; the maths: algorithms/reserve.hpp) --------
  // One reservation: a queued turn on GCRA / leaky bucket / token bucket,
  // an acquire on the never-queued algorithms. Counted in the exact totals
  // as an acquire.
  Reservation reserve(std::uint32_t policy, std::string_view key, u64 cost,
                      std::int64_t max_wait_ns, std::int64_t now, bool live_clock) noexcept;
  // Reservation::cancel's write (Table::update on the reserved slot).
  bool reserve_cancel(const Reservation& r) noexcept;

  // One request at the instant `now` (< 0 counts as 0), decided and
  // counted: Limiter::acquire_at, and acquire_many of a single request, so
  // that both decide it exactly alike (decide.cpp).
  Decision acquire_one(std::uint32_t policy, std::string_view key, u64 cost,
                       std::int64_t now) noexcept;

  // ---- multi-limit requests (multi_limit.cpp) ------------------------------
  void undo(const PolicySnapshot& p, const Charge& c, u64 cost, std::int64_t now) noexcept;
  Decision acquire_many(std::span<const Request> requests, std::span<Decision> each,
                        std::int64_t now) noexcept;
  Decision uncharged(std::span<const Request> requests, std::span<const u64> asked,
                     std::span<Decision> each, std::int64_t now, Decision combined) noexcept;
  void slot_denied(std::uint32_t policy, std::string_view key) noexcept;

  // Segment time (ns since the epoch) as every decision reads it: the
  // decision clock (segment/clock.hpp), never ahead of CLOCK_MONOTONIC_RAW,
  // a little behind at most, and never decreasing within a thread.
  std::int64_t now() const noexcept { return detail::decision_clock_ns() - epoch; }
  // The same, read exactly (and the thread's clock anchored on it): for a
  // claim after a failed lookup, which must not start a bucket before
  // another process's reading.
  std::int64_t now_exact() const noexcept { return detail::decision_clock_exact_ns() - epoch; }

  // ---- the policy table (policies.cpp) ---------------------------------------
  class AdminGuard;  // serialises policy-table writers across processes
  static void write_params(detail::PolicyParams& p, const PolicySpec& s, u64 burst, u64 emission);
  PolicySpec spec_of(std::uint32_t index, const PolicySnapshot& p) const;
  PolicyReplacement add_policy(PolicySpec spec, bool replace);
  std::uint32_t retire_orphans();  // admin token held
  std::uint32_t repair_orphans();  // takes the admin token
  std::vector<std::pair<std::uint32_t, std::uint32_t>> orphans()
      const;  // (orphan, the entry it duplicates)
  std::pair<u64, u64> buckets_of(std::uint32_t index,
                                 const PolicySnapshot& p) const;  // (holding state, lease units)

  // ---- state I/O (src/admin/bucket_io.cpp, inspect.cpp) ----------------------
  // import_state()'s one write: claims (policy, key) and stores `state` and
  // the per-key statistics. A sliding-log key's admissions (`log`, segment
  // times) are written into its slot's entries, tagged with the slot's version.
  enum class StoreResult {
    kStored,  // the bucket now holds `state`
    kKept,    // the key had a bucket and `replace` was false: left as it was
    kNoRoom,  // no slot (table full, a claimer stalled, a key too long)
  };
  StoreResult store_bucket(std::uint32_t policy, std::string_view key, u64 state, u64 admitted,
                           u64 denied, bool replace, std::span<const std::int64_t> log = {});
  // export_state(): the admission times (segment clock) of the live entries
  // of sliding-log slot `slot` as of now, oldest first; empty if the slot
  // holds no live sliding-log key.
  std::vector<std::int64_t> log_admissions(std::uint32_t slot) const;
};

}  // namespace shmlimit
