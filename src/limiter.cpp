// Limiter: policies + table + clock -> Decision.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <tuple>

#include "algorithms.hpp"
#include "gcra.hpp"
#include "layout.hpp"
#include "process.hpp"
#include "segment.hpp"
#include "shmlimit/shmlimit.hpp"
#include "table.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::u64;

std::string_view to_string(Reason reason) noexcept {
  switch (reason) {
    case Reason::kOk: return "ok";
    case Reason::kTableFull: return "table_full";
    case Reason::kKeyTooLong: return "key_too_long";
    case Reason::kUnknownPolicy: return "unknown_policy";
    case Reason::kCostTooHigh: return "cost_too_high";
    case Reason::kContended: return "contended";
    case Reason::kClockHorizon: return "clock_horizon";
    case Reason::kCorrupt: return "corrupt";
  }
  return "unknown";
}

namespace {

// A consistent copy of one policy entry's active parameters.
struct PolicySnapshot {
  detail::AlgoParams algo;
  OnFull on_full = OnFull::kAllow;
  bool valid = false;  // false: the entry is corrupt (hostile or buggy writer)
  // Derived once per parameter change (valid entries only):
  u64 extra = 0;             // kind bits outside algorithm and on_full: must be 0
  u64 reciprocal = 0;        // gcra_reciprocal(emission): the hot path's division
  std::int64_t margin = 0;   // algo_horizon_margin(algo)

  void derive() noexcept {
    reciprocal = valid ? detail::gcra_reciprocal(algo.emission_ns) : 0;
    margin = valid ? detail::algo_horizon_margin(algo) : detail::kClockHorizonNs;
  }

  // The bucket's capacity in cost units: what a fresh key admits at once.
  u64 capacity() const noexcept {
    switch (algo.algorithm) {
      case Algorithm::kFixedWindow:
      case Algorithm::kSlidingWindow:
      case Algorithm::kQuietPeriod: return algo.count;
      default: return algo.burst;
    }
  }
  // The state of a key that is absent: a full bucket. GCRA and the leaky
  // bucket use "full as of now", so that a reader whose clock is behind
  // ours sees it slightly drained rather than fuller than it was.
  u64 fresh_state(std::int64_t now) const noexcept {
    const bool tat = algo.algorithm == Algorithm::kGcra || algo.algorithm == Algorithm::kLeakyBucket;
    return tat ? static_cast<u64>(std::max<std::int64_t>(now, 0)) : 0;
  }
};

// One decision on a state; GCRA, the hot default, is inlined.
[[gnu::always_inline]] inline detail::AlgoOutcome decide_state(const PolicySnapshot& s, u64 state, std::int64_t now,
                                                               u64 cost) noexcept {
  const detail::AlgoParams& p = s.algo;
  if (p.algorithm == Algorithm::kGcra) {
    return detail::gcra_decide(state, now, cost, detail::GcraParams{p.emission_ns, p.burst, s.reciprocal});
  }
  return detail::algo_decide(p, state, now, cost);
}

void check_policy_name(const std::string& name) {
  const auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::kInvalidArgument, "invalid policy name \"" + name + "\": " + why);
  };
  if (name.empty()) bad("it is empty");
  if (name.size() >= detail::kPolicyNameBytes) bad("it is longer than 31 characters");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == ':' || c == '-';
    if (!ok) bad(std::string("character '") + c + "' is not one of A-Z a-z 0-9 _ . : -");
  }
}

}  // namespace

struct Limiter::Impl final : detail::ReclaimPolicy {
  std::unique_ptr<detail::Segment> seg;
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

  explicit Impl(std::unique_ptr<detail::Segment> s, const Options& o)
      : seg(std::move(s)),
        table(seg->base() + seg->geometry().slot_offset, seg->geometry()),
        policy_table(reinterpret_cast<detail::PolicyEntry*>(seg->base() + seg->geometry().policy_offset)),
        process_table(reinterpret_cast<detail::ProcessEntry*>(seg->base() + seg->geometry().process_offset)),
        options(o),
        epoch(seg->epoch_mono_ns()),
        seed(seg->hash_seed()),
        claim_timeout_ns(std::chrono::duration_cast<Nanos>(o.claim_timeout).count()) {}

  // ---- policies -----------------------------------------------------------
  // Process-local cache of validated policy snapshots, keyed by the raw
  // parameter words, so the divisions of validation run once per
  // parameter change rather than once per decision. Filled under
  // cache_mutex; read without locking (a seqlock: seq is odd while a fill
  // is under way). Every field is an atomic so threads may read while
  // another fills.
  struct CacheEntry {
    std::atomic<u64> seq{0};
    std::atomic<u64> kind{0}, count{0}, period{0}, burst{0}, emission{0}, valid{0}, reciprocal{0}, margin{0};
  };
  mutable std::array<CacheEntry, detail::kMaxPolicies> cache{};
  mutable std::mutex cache_mutex;

  // Reads one policy entry's active parameter set from the segment,
  // consistently (a seqlock read); validates it when asked.
  bool read_policy(const detail::PolicyEntry& e, PolicySnapshot* out, u64* state, bool validate_now) const noexcept {
    for (int attempt = 0; attempt < 64; ++attempt) {
      // Acquire: pairs with the writer's release store of state, so the
      // parameter set it names is complete.
      const u64 s1 = e.state.load(std::memory_order_acquire);
      if (s1 == 0) return false;
      const detail::PolicyParams& p = e.params[s1 & 1];
      const u64 kind = p.kind.load(std::memory_order_relaxed);
      const u64 count = p.count.load(std::memory_order_relaxed);
      const u64 period = p.period_ns.load(std::memory_order_relaxed);
      const u64 burst = p.burst.load(std::memory_order_relaxed);
      const u64 emission = p.emission_ns.load(std::memory_order_relaxed);
      // Acquire fence: the relaxed loads complete before state is re-read;
      // an unchanged state proves they saw one parameter set.
      std::atomic_thread_fence(std::memory_order_acquire);
      if (e.state.load(std::memory_order_relaxed) != s1) continue;
      out->algo = detail::AlgoParams{static_cast<Algorithm>(kind & 0xFF), count, period, burst, emission};
      out->on_full = ((kind >> 8) & 0xFF) == 1 ? OnFull::kDeny : OnFull::kAllow;
      out->extra = kind & ~u64{0x1FF};  // bits no valid entry sets
      if (((kind >> 8) & 0xFF) > 1) out->extra |= u64{1} << 63;
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
    out->valid = out->extra == 0 && detail::algo_params_valid(out->algo) &&
                 out->algo.emission_ns == detail::gcra_emission(out->algo.count, out->algo.period_ns);
    out->derive();
  }

  bool load_policy(std::uint32_t index, PolicySnapshot* out) const noexcept {
    if (index >= detail::kMaxPolicies) return false;
    const detail::PolicyEntry& e = policy_table[index];
    u64 raw_state = 0;
    if (!read_policy(e, out, &raw_state, /*validate=*/false)) return false;
    // The raw words just read are compared with the cached ones: a hit
    // reuses the derived values; any change (a replacement, or bytes
    // written by a buggy or hostile process) is validated afresh.
    CacheEntry& c = cache[index];
    // Acquire: the fields below were stored before seq became even.
    const u64 q = c.seq.load(std::memory_order_acquire);
    const u64 kind = static_cast<u64>(out->algo.algorithm) | (u64{out->on_full == OnFull::kDeny} << 8) | out->extra;
    if ((q & 1) == 0 && c.kind.load(std::memory_order_relaxed) == kind &&
        c.count.load(std::memory_order_relaxed) == out->algo.count &&
        c.period.load(std::memory_order_relaxed) == out->algo.period_ns &&
        c.burst.load(std::memory_order_relaxed) == out->algo.burst &&
        c.emission.load(std::memory_order_relaxed) == out->algo.emission_ns) {
      out->valid = c.valid.load(std::memory_order_relaxed) != 0;
      out->reciprocal = c.reciprocal.load(std::memory_order_relaxed);
      out->margin = static_cast<std::int64_t>(c.margin.load(std::memory_order_relaxed));
      // Acquire fence: the field loads complete before seq is re-read.
      std::atomic_thread_fence(std::memory_order_acquire);
      if (c.seq.load(std::memory_order_relaxed) == q) return true;
    }
    validate(out);
    if (raw_state != 0) {
      std::lock_guard<std::mutex> lock(cache_mutex);
      // Relaxed stores inside the seqlock: seq is odd around them, and the
      // release increment publishes them to readers.
      c.seq.fetch_add(1, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_release);
      c.kind.store(kind, std::memory_order_relaxed);
      c.count.store(out->algo.count, std::memory_order_relaxed);
      c.period.store(out->algo.period_ns, std::memory_order_relaxed);
      c.burst.store(out->algo.burst, std::memory_order_relaxed);
      c.emission.store(out->algo.emission_ns, std::memory_order_relaxed);
      c.valid.store(out->valid ? 1 : 0, std::memory_order_relaxed);
      c.reciprocal.store(out->reciprocal, std::memory_order_relaxed);
      c.margin.store(static_cast<u64>(out->margin), std::memory_order_relaxed);
      c.seq.fetch_add(1, std::memory_order_release);
    }
    return true;
  }

  std::string policy_name(std::uint32_t index) const {
    char buf[detail::kPolicyNameBytes + 1] = {};
    for (std::uint32_t i = 0; i < detail::kPolicyNameBytes / 8; ++i) {
      const u64 w = policy_table[index].name[i].load(std::memory_order_relaxed);
      std::memcpy(buf + 8 * i, &w, 8);
    }
    buf[detail::kPolicyNameBytes - 1] = '\0';
    return std::string(buf);
  }

  std::optional<std::uint32_t> find_policy(std::string_view name) const noexcept {
    if (name.empty() || name.size() >= detail::kPolicyNameBytes) return std::nullopt;
    u64 want[detail::kPolicyNameBytes / 8] = {};
    std::memcpy(want, name.data(), name.size());
    for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
      // Acquire: the name was written before state was published.
      if (policy_table[i].state.load(std::memory_order_acquire) == 0) return std::nullopt;  // entries fill in order
      bool equal = true;
      for (std::uint32_t w = 0; w < detail::kPolicyNameBytes / 8 && equal; ++w) {
        equal = policy_table[i].name[w].load(std::memory_order_relaxed) == want[w];
      }
      if (equal) return i;
    }
    return std::nullopt;
  }

  // ReclaimPolicy: a bucket may be reclaimed when its algorithm says it is
  // indistinguishable from an absent key.
  bool is_full(std::uint32_t policy, u64 payload, std::int64_t now) const noexcept override {
    PolicySnapshot p;
    if (!load_policy(policy, &p) || !p.valid) return true;  // unusable entry: nothing to keep
    return detail::algo_is_full(p.algo, payload, now);
  }

  // ---- per-process event counters -----------------------------------------
  detail::ProcessEntry& process_entry() const noexcept {
    const auto pid = static_cast<std::uint32_t>(::getpid());
    const u64 cached = process_slot.load(std::memory_order_relaxed);
    if (cached != 0 && (cached >> 32) == pid) return process_table[cached & 0xFFFFFFFF];
    const detail::ProcessToken me = detail::self_token();
    std::uint32_t chosen = 0;  // entry 0: shared overflow when the registry is full
    for (std::uint32_t i = 1; i < detail::kMaxProcesses && chosen == 0; ++i) {
      u64 owner = process_table[i].owner.load(std::memory_order_relaxed);
      if (owner == me) { chosen = i; break; }
      if (owner == 0 || detail::token_is_dead(owner)) {
        // Relaxed: the entry holds only counters, each updated atomically.
        if (process_table[i].owner.compare_exchange_strong(owner, me, std::memory_order_relaxed)) chosen = i;
      }
    }
    process_slot.store((u64{pid} << 32) | chosen, std::memory_order_relaxed);
    return process_table[chosen];
  }

  void count(detail::AtomicU64 detail::ProcessEntry::*field, u64 n = 1) const noexcept {
    if (seg->read_only() || n == 0) return;
    // Relaxed: a statistic; no other memory depends on it.
    (process_entry().*field).fetch_add(n, std::memory_order_relaxed);
  }

  // ---- decisions ----------------------------------------------------------
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
    d.retry_after = d.allowed || !p.valid ? Nanos(0) : Nanos(static_cast<std::int64_t>(p.algo.emission_ns));
    d.reset_after = Nanos(0);
    d.reason = reason;
    return d;
  }

  enum class Op { kAcquire, kPeek, kRefund };

  // Where an acquire was charged: enough to give it back to the same
  // bucket (and to nobody else's) if a multi-limit decision rolls back.
  struct Charge {
    bool charged = false;
    std::uint32_t slot = 0;
    u64 version = 0;
  };

  // Checks shared by every operation; on failure returns the decision.
  std::optional<Decision> precheck(std::uint32_t policy, std::string_view key, std::int64_t now,
                                   PolicySnapshot* p) const noexcept {
    if (!load_policy(policy, p)) return unknown_policy();
    if (!p->valid) {
      count(&detail::ProcessEntry::other_events);
      return fallback(*p, Reason::kCorrupt);
    }
    if (key.size() > table.key_capacity()) {
      count(&detail::ProcessEntry::other_events);
      return fallback(*p, Reason::kKeyTooLong);
    }
    if (now > detail::kClockHorizonNs - p->margin) {
      count(&detail::ProcessEntry::other_events);
      return fallback(*p, Reason::kClockHorizon);
    }
    return std::nullopt;
  }

  // `live_clock`: `now` was just read from the clock (not given by the
  // caller), so it may be read again.
  Decision apply(std::uint32_t policy, std::string_view key, u64 cost, std::int64_t now, Op op,
                 Charge* charge = nullptr, bool live_clock = false) noexcept {
    now = std::max<std::int64_t>(now, 0);
    PolicySnapshot p;
    if (auto early = precheck(policy, key, now, &p)) return *early;
    if (seg->read_only() && op == Op::kAcquire) op = Op::kPeek;
    const detail::PackedKey pk(seed, policy, key);
    detail::SlotRef ref;
    for (;;) {
      if (!table.find(pk, &ref)) {
        // Absent = full bucket (invariant: indistinguishable). If the key
        // was reclaimed by a process whose clock reading is later than ours,
        // our older reading would start the new bucket in its past and give
        // time back: read the clock again, after the failed lookup.
        if (live_clock) now = std::max(now, this->now());
        const u64 fresh_state = p.fresh_state(now);
        const detail::AlgoOutcome fresh = decide_state(p, fresh_state, now, op == Op::kRefund ? 0 : cost);
        // A peek, a refund, cost 0 or a cost that can never fit never
        // takes a slot: there is nothing to store.
        if (op != Op::kAcquire || !fresh.store) return fresh.decision;
        detail::ClaimEvents ev;
        const auto r = table.claim(pk, now, fresh_state, *this, claim_timeout_ns, &ref, &ev);
        count(&detail::ProcessEntry::repairs, ev.repairs);
        if (r == detail::Table::ClaimResult::kFull) {
          count(&detail::ProcessEntry::full_events);
          return fallback(p, Reason::kTableFull);
        }
        if (r == detail::Table::ClaimResult::kContended) {
          count(&detail::ProcessEntry::contended_events);
          return fallback(p, Reason::kContended);
        }
      }
      detail::SlotHead& h = table.head(ref.index);
      u64 w = ref.word;
      for (;;) {
        const u64 state = detail::Word::payload(w);
        const detail::AlgoOutcome out = op == Op::kRefund ? detail::algo_refund(p.algo, state, now, cost)
                                                          : decide_state(p, state, now, cost);
        if (op == Op::kPeek || !out.store) {
          // Relaxed: a statistic.
          if (op == Op::kAcquire && !out.decision.allowed) h.denied.fetch_add(1, std::memory_order_relaxed);
          return out.decision;
        }
        // The one write of a decision. Relaxed suffices: the bucket's whole
        // state is this word, and no other memory is published or read
        // through it; the version in the word makes the CAS fail on a slot
        // that was reclaimed for another key since `w` was read (ABA).
        if (h.word.compare_exchange_weak(w, detail::Word::make(detail::Word::version(w), out.new_state),
                                         std::memory_order_relaxed, std::memory_order_relaxed)) {
          if (op == Op::kAcquire) {
            // Relaxed: statistics.
            (out.decision.allowed ? h.admitted : h.denied).fetch_add(1, std::memory_order_relaxed);
            if (charge != nullptr && out.decision.allowed) *charge = Charge{true, ref.index, detail::Word::version(w)};
          }
          return out.decision;
        }
        // Lost a race: `w` now holds the current word. Another generation
        // means the slot was reclaimed (our bucket had become full): look
        // the key up again.
        if (detail::Word::version(w) != detail::Word::version(ref.word)) break;
      }
    }
  }

  // Gives `cost` back to the bucket an acquire charged, if that bucket
  // still holds the same generation (otherwise it refilled and was
  // reclaimed: nothing is owed).
  void undo(const PolicySnapshot& p, const Charge& c, u64 cost, std::int64_t now) noexcept {
    detail::SlotHead& h = table.head(c.slot);
    u64 w = h.word.load(std::memory_order_relaxed);
    while (detail::Word::version(w) == c.version) {
      const detail::AlgoOutcome out = detail::algo_refund(p.algo, detail::Word::payload(w), now, cost);
      if (!out.store) return;
      // Relaxed: as in apply(); the version guards against another key.
      if (h.word.compare_exchange_weak(w, detail::Word::make(c.version, out.new_state), std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
        h.admitted.fetch_sub(1, std::memory_order_relaxed);  // a statistic
        return;
      }
    }
  }

  Decision acquire_many(std::span<const Request> requests, std::span<Decision> each, std::int64_t now) noexcept {
    now = std::max<std::int64_t>(now, 0);
    // The identity of fold(): allowed, with no limit yet binding.
    const auto neutral = [] {
      Decision d;
      d.allowed = true;
      d.remaining = ~u64{0};
      return d;
    };
    Decision combined = neutral();
    if (requests.empty()) {
      combined.remaining = 0;
      return combined;
    }
    // Fold one decision into the combined answer: denied if any denies,
    // retry-after the largest of the denials, remaining and limit from the
    // tightest limit, reset-after the longest.
    const auto fold = [&](const Decision& d) {
      if (!d.allowed) {
        if (combined.allowed || d.retry_after > combined.retry_after) {
          combined.retry_after = d.retry_after;
          combined.reason = d.reason;
        }
        combined.allowed = false;
      }
      if (d.remaining < combined.remaining) {
        combined.remaining = d.remaining;
        combined.limit = d.limit;
      }
      combined.reset_after = std::max(combined.reset_after, d.reset_after);
    };
    // Phase 1: peek at every limit; if any denies, charge none and report
    // every denial (the largest retry-after wins).
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Decision d = apply(requests[i].policy.index, requests[i].key, requests[i].cost, now, Op::kPeek);
      if (i < each.size()) each[i] = d;
      fold(d);
    }
    if (!combined.allowed) return combined;
    // Phase 2: charge one by one. A limit that another process filled in
    // the meantime denies: give back what this request already took, so
    // none is charged. Each charge is checked against its own limit, so no
    // limit is ever exceeded; a rollback only makes others wait briefly.
    combined = neutral();
    // Where each limit was charged, for a rollback: on the stack for the
    // usual handful of limits.
    Charge small[8];
    std::vector<Charge> large;
    if (requests.size() > std::size(small)) large.resize(requests.size());
    Charge* charges = large.empty() ? small : large.data();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Decision d =
          apply(requests[i].policy.index, requests[i].key, requests[i].cost, now, Op::kAcquire, &charges[i]);
      if (i < each.size()) each[i] = d;
      fold(d);
      if (!d.allowed) {
        for (std::size_t j = 0; j < i; ++j) {
          PolicySnapshot p;
          if (charges[j].charged && load_policy(requests[j].policy.index, &p) && p.valid) {
            undo(p, charges[j], requests[j].cost, now);
          }
        }
        return combined;
      }
    }
    return combined;
  }

  std::int64_t now() const noexcept { return detail::monotonic_ns() - epoch; }

  // ---- admin token --------------------------------------------------------
  class AdminGuard {
   public:
    explicit AdminGuard(const Impl& impl) : lock_(process_mutex()), owner_(impl.seg->header().admin_owner) {
      const detail::ProcessToken me = detail::self_token();
      const auto deadline = std::chrono::steady_clock::now() + impl.options.open_timeout;
      for (int spin = 0;; ++spin) {
        u64 expected = 0;
        // Acquire: we read the policy table as the previous holder left it.
        if (owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) return;
        if (expected == me) {
          throw Error(ErrorCode::kSystem, "the policy table's admin token is already held by this process");
        }
        if (detail::token_is_dead(expected) &&
            owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) {
          return;  // its holder died; every write it made is double-buffered
        }
        if (std::chrono::steady_clock::now() > deadline) {
          throw Error(ErrorCode::kTimeout, "process " + std::to_string(detail::token_pid(expected)) +
                                               " has held the policy table of " + impl.seg->name() + " for over " +
                                               std::to_string(impl.options.open_timeout.count()) + " ms");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
    ~AdminGuard() { owner_.store(0, std::memory_order_release); }  // Release: our policy writes are visible
    AdminGuard(const AdminGuard&) = delete;
    AdminGuard& operator=(const AdminGuard&) = delete;

   private:
    // The token tells processes apart, not threads: threads of this
    // process (on one handle or several) take turns here first.
    static std::mutex& process_mutex() {
      static std::mutex m;
      return m;
    }
    std::lock_guard<std::mutex> lock_;
    AtomicU64& owner_;
  };

  static void write_params(detail::PolicyParams& p, const PolicySpec& s, u64 burst, u64 emission) {
    // Relaxed: published by the release store of the entry's state.
    p.kind.store(static_cast<u64>(s.algorithm) | (static_cast<u64>(s.on_full) << 8), std::memory_order_relaxed);
    p.count.store(s.rate.count, std::memory_order_relaxed);
    p.period_ns.store(static_cast<u64>(s.rate.period.count()), std::memory_order_relaxed);
    p.burst.store(burst, std::memory_order_relaxed);
    p.emission_ns.store(emission, std::memory_order_relaxed);
  }

  PolicySpec spec_of(std::uint32_t index, const PolicySnapshot& p) const {
    PolicySpec s;
    s.name = policy_name(index);
    s.algorithm = p.algo.algorithm;
    s.rate = Rate{p.algo.count, Nanos(static_cast<std::int64_t>(p.algo.period_ns))};
    s.burst = p.algo.burst;
    s.on_full = p.on_full;
    return s;
  }

  PolicyId add_policy(PolicySpec spec, bool replace) {
    check_policy_name(spec.name);
    if (seg->read_only()) throw Error(ErrorCode::kReadOnly, "cannot add a policy through a read-only handle");
    if (spec.on_full != OnFull::kAllow && spec.on_full != OnFull::kDeny) {
      throw Error(ErrorCode::kInvalidArgument, "on_full must be allow or deny");
    }
    if (spec.rate.count == 0 || spec.rate.period.count() <= 0) {
      throw Error(ErrorCode::kInvalidArgument, "policy \"" + spec.name + "\": the rate needs a count >= 1 and a period > 0");
    }
    // Window algorithms have no separate burst: their capacity is the count.
    const bool windowed = spec.algorithm == Algorithm::kFixedWindow || spec.algorithm == Algorithm::kSlidingWindow ||
                          spec.algorithm == Algorithm::kQuietPeriod;
    if (spec.burst == 0 || windowed) spec.burst = spec.rate.count;
    const u64 emission = detail::gcra_emission(spec.rate.count, static_cast<u64>(spec.rate.period.count()));
    const char* why = "unknown algorithm";
    if (!detail::algo_params_valid(
            detail::AlgoParams{spec.algorithm, spec.rate.count, static_cast<u64>(spec.rate.period.count()), spec.burst,
                               emission},
            &why)) {
      throw Error(ErrorCode::kInvalidArgument, "policy \"" + spec.name + "\" (" + std::string(to_string(spec.algorithm)) +
                                                   ", " + format_rate(spec.rate) + ", burst " +
                                                   std::to_string(spec.burst) + "): " + why);
    }
    AdminGuard guard(*this);
    for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
      detail::PolicyEntry& e = policy_table[i];
      const u64 state = e.state.load(std::memory_order_acquire);
      if (state == 0) {
        u64 name[detail::kPolicyNameBytes / 8] = {};
        std::memcpy(name, spec.name.data(), spec.name.size());
        for (std::uint32_t w = 0; w < detail::kPolicyNameBytes / 8; ++w) e.name[w].store(name[w], std::memory_order_relaxed);
        write_params(e.params[0], spec, spec.burst, emission);
        // Release: name and parameters are visible with the state.
        e.state.store(u64{1} << 1, std::memory_order_release);
        return PolicyId{i};
      }
      if (policy_name(i) != spec.name) continue;
      PolicySnapshot cur;
      load_policy(i, &cur);
      const PolicySpec existing = spec_of(i, cur);
      if (cur.valid && existing == spec) return PolicyId{i};
      if (!replace) {
        throw Error(ErrorCode::kPolicyConflict,
                    "policy \"" + spec.name + "\" is already registered in " + seg->name() + " as " +
                        format_rate(existing.rate) + " burst " + std::to_string(existing.burst) + "; asked for " +
                        format_rate(spec.rate) + " burst " + std::to_string(spec.burst) +
                        " (ask for replacement explicitly to change it)");
      }
      // Write the inactive set, then flip: readers never see a mix.
      const u64 next = (state & 1) ^ 1;
      write_params(e.params[next], spec, spec.burst, emission);
      e.state.store((((state >> 1) + 1) << 1) | next, std::memory_order_release);
      return PolicyId{i};
    }
    throw Error(ErrorCode::kTableFull, "the policy table of " + seg->name() + " is full (" +
                                           std::to_string(detail::kMaxPolicies) + " policies)");
  }
};

// ---- Limiter --------------------------------------------------------------
Limiter::Limiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Limiter::Limiter(Limiter&&) noexcept = default;
Limiter& Limiter::operator=(Limiter&&) noexcept = default;
Limiter::~Limiter() = default;

Limiter Limiter::create(const Options& options) {
  return Limiter(std::make_unique<Impl>(detail::Segment::open(options, detail::Segment::Mode::kCreate), options));
}
Limiter Limiter::open(const Options& options) {
  return Limiter(std::make_unique<Impl>(detail::Segment::open(options, detail::Segment::Mode::kOpen), options));
}
Limiter Limiter::open_or_create(const Options& options) {
  return Limiter(std::make_unique<Impl>(detail::Segment::open(options, detail::Segment::Mode::kOpenOrCreate), options));
}
bool Limiter::remove(std::string_view name) { return detail::Segment::remove(std::string(name)); }

PolicyId Limiter::add_policy(const PolicySpec& spec, bool replace) { return impl_->add_policy(spec, replace); }

std::optional<PolicyId> Limiter::find_policy(std::string_view name) const {
  const auto i = impl_->find_policy(name);
  if (!i) return std::nullopt;
  return PolicyId{*i};
}

std::vector<PolicyView> Limiter::policies() const {
  std::vector<PolicyView> out;
  for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
    PolicySnapshot p;
    if (!impl_->load_policy(i, &p)) break;
    out.push_back(PolicyView{PolicyId{i}, impl_->spec_of(i, p)});
  }
  return out;
}

Decision Limiter::acquire(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->apply(policy.index, key, cost, impl_->now(), Impl::Op::kAcquire, nullptr, true);
}

Decision Limiter::acquire(std::string_view policy, std::string_view key, std::uint64_t cost) noexcept {
  const auto i = impl_->find_policy(policy);
  if (!i) return Impl::unknown_policy();
  return impl_->apply(*i, key, cost, impl_->now(), Impl::Op::kAcquire, nullptr, true);
}

Decision Limiter::acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost, Nanos now) noexcept {
  return impl_->apply(policy.index, key, cost, now.count(), Impl::Op::kAcquire);
}

Decision Limiter::peek(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->apply(policy.index, key, cost, impl_->now(), Impl::Op::kPeek, nullptr, true);
}

Decision Limiter::refund(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->apply(policy.index, key, cost, impl_->now(), Impl::Op::kRefund);
}

Decision Limiter::acquire_many(std::span<const Request> requests, std::span<Decision> each) noexcept {
  return impl_->acquire_many(requests, each, impl_->now());
}

Decision Limiter::acquire_many_at(std::span<const Request> requests, Nanos now, std::span<Decision> each) noexcept {
  return impl_->acquire_many(requests, each, now.count());
}

std::uint64_t Limiter::reset(std::optional<PolicyId> policy, std::optional<std::string_view> key) {
  Impl& m = *impl_;
  if (m.seg->read_only()) throw Error(ErrorCode::kReadOnly, "cannot reset buckets through a read-only handle");
  if (key && !policy) throw Error(ErrorCode::kInvalidArgument, "reset of a key needs its policy");
  std::uint64_t forgotten = 0;
  detail::ClaimEvents ev;
  if (policy && key) {
    PolicySnapshot p;
    if (!m.load_policy(policy->index, &p)) throw Error(ErrorCode::kInvalidArgument, "no such policy");
    if (key->size() > m.table.key_capacity()) return 0;
    const detail::PackedKey pk(m.seed, policy->index, *key);
    detail::SlotRef ref;
    // Retry while another process holds the slot's token for a moment.
    for (int attempt = 0; attempt < 1000 && m.table.find(pk, &ref); ++attempt) {
      if (m.table.release(ref.index, ref.meta, &ev)) {
        forgotten = 1;
        break;
      }
      std::this_thread::yield();
    }
  } else {
    const detail::Geometry& g = m.seg->geometry();
    for (std::uint32_t i = 0; i < g.capacity; ++i) {
      for (int attempt = 0; attempt < 1000; ++attempt) {
        const u64 meta = m.table.head(i).meta.load(std::memory_order_acquire);
        if (detail::Meta::state(meta) != detail::kLive) break;
        if (policy && detail::Meta::policy(meta) != policy->index) break;
        if (m.table.release(i, meta, &ev)) {
          ++forgotten;
          break;
        }
        std::this_thread::yield();
      }
    }
  }
  m.count(&detail::ProcessEntry::repairs, ev.repairs);
  return forgotten;
}

Nanos Limiter::now() const noexcept { return Nanos(impl_->now()); }
std::uint32_t Limiter::max_key_bytes() const noexcept { return impl_->table.key_capacity(); }
const std::string& Limiter::name() const noexcept { return impl_->seg->name(); }
bool Limiter::read_only() const noexcept { return impl_->seg->read_only(); }

Stats Limiter::stats() const {
  const Impl& m = *impl_;
  const detail::Geometry& g = m.seg->geometry();
  Stats s;
  s.layout_version = detail::kLayoutVersion;
  s.layout_fingerprint = detail::layout_fingerprint();
  s.capacity = g.capacity;
  s.slot_bytes = g.slot_bytes;
  s.max_key_bytes = g.key_capacity();
  s.max_probe = g.max_probe;
  s.segment_bytes = g.total_bytes;
  s.created_unix_ns = m.seg->created_unix_ns();
  const std::int64_t now = m.now();
  s.age = Nanos(now);
  s.clock_horizon_left = Nanos(std::max<std::int64_t>(detail::kClockHorizonNs - now, 0));
  double probe_sum = 0;
  char key[256];
  for (std::uint32_t i = 0; i < g.capacity; ++i) {
    u64 meta = 0, word = 0, admitted = 0, denied = 0;
    if (!m.table.read_consistent(i, &meta, &word, key, &admitted, &denied)) {
      ++s.claiming;  // kept changing: being claimed right now
      continue;
    }
    switch (detail::Meta::state(meta)) {
      case detail::kEmpty: ++s.empty; break;
      case detail::kDead: ++s.dead; break;
      case detail::kClaiming: ++s.claiming; break;
      default: {
        if (detail::Word::version(word) != detail::Meta::version(meta)) {
          ++s.claiming;  // a reclaim in progress
          break;
        }
        ++s.used;
        s.admitted += admitted;
        s.denied += denied;
        const auto policy = static_cast<std::uint32_t>(detail::Meta::policy(meta));
        if (m.is_full(policy, detail::Word::payload(word), now)) ++s.reclaimable;
        const auto len = std::min<std::uint32_t>(static_cast<std::uint32_t>(detail::Meta::key_len(meta)), g.key_capacity());
        const std::uint32_t home = m.table.home(detail::PackedKey(m.seed, policy, std::string_view(key, len)).hash);
        const std::uint32_t dist = (i - home) & (g.capacity - 1);
        s.max_probe_length = std::max(s.max_probe_length, dist);
        probe_sum += dist;
      }
    }
  }
  s.mean_probe_length = s.used > 0 ? probe_sum / static_cast<double>(s.used) : 0.0;
  for (std::uint32_t i = 0; i < detail::kMaxProcesses; ++i) {
    const detail::ProcessEntry& e = m.process_table[i];
    if (e.owner.load(std::memory_order_relaxed) != 0) ++s.processes;
    s.full_events += e.full_events.load(std::memory_order_relaxed);
    s.contended_events += e.contended_events.load(std::memory_order_relaxed);
    s.repairs += e.repairs.load(std::memory_order_relaxed);
  }
  return s;
}

std::vector<BucketView> Limiter::dump() const {
  const Impl& m = *impl_;
  const detail::Geometry& g = m.seg->geometry();
  std::vector<BucketView> out;
  const std::int64_t now = m.now();
  char key[256];
  for (std::uint32_t i = 0; i < g.capacity; ++i) {
    u64 meta = 0, word = 0, admitted = 0, denied = 0;
    if (!m.table.read_consistent(i, &meta, &word, key, &admitted, &denied)) continue;
    if (detail::Meta::state(meta) != detail::kLive || detail::Word::version(word) != detail::Meta::version(meta)) continue;
    const auto policy = static_cast<std::uint32_t>(detail::Meta::policy(meta));
    PolicySnapshot p;
    if (!m.load_policy(policy, &p)) continue;
    BucketView b;
    b.slot = i;
    b.policy = m.policy_name(policy);
    const auto len = std::min<std::uint32_t>(static_cast<std::uint32_t>(detail::Meta::key_len(meta)), g.key_capacity());
    b.key.assign(key, len);
    b.state = detail::Word::payload(word);
    if (p.valid) {
      // The state as it is: cost 0 charges nothing; cost 1 says when one
      // more unit would fit.
      const Decision as_is = decide_state(p, b.state, now, 0).decision;
      const Decision one = decide_state(p, b.state, now, 1).decision;
      b.now = as_is;
      b.now.allowed = one.allowed;
      b.now.retry_after = one.allowed ? Nanos(0) : one.retry_after;
    } else {
      b.now.reason = Reason::kCorrupt;
    }
    b.admitted = admitted;
    b.denied = denied;
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace shmlimit

namespace shmlimit {

CheckReport Limiter::check(bool repair) {
  Impl& m = *impl_;
  CheckReport r;
  const detail::Geometry& g = m.seg->geometry();
  const std::string why = detail::Segment::validate(m.seg->base(), m.seg->size(), 0, nullptr);
  if (!why.empty()) r.problems.push_back("header: " + why);
  std::uint32_t registered = 0;
  for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
    PolicySnapshot p;
    if (!m.load_policy(i, &p)) break;
    ++registered;
    if (!p.valid) r.problems.push_back("policy " + std::to_string(i) + " (\"" + m.policy_name(i) + "\"): corrupt parameters");
  }
  const bool may_repair = repair && !m.seg->read_only();
  const std::uint32_t mask = g.capacity - 1;
  struct Seen { std::uint32_t slot; std::uint32_t policy; std::string key; };
  std::vector<Seen> live;
  char key[256];
  for (std::uint32_t i = 0; i < g.capacity; ++i) {
    detail::SlotHead& h = m.table.head(i);
    const std::string where = "slot " + std::to_string(i) + ": ";
    const u64 owner = h.owner.load(std::memory_order_acquire);
    if (owner != 0) {
      if (detail::token_is_dead(owner)) {
        detail::ClaimEvents ev;
        if (may_repair && m.table.repair_if_dead(i, &ev)) {
          r.repaired += ev.repairs;
          m.count(&detail::ProcessEntry::repairs, ev.repairs);
        } else if (!may_repair) {
          r.problems.push_back(where + "claim left by dead process " + std::to_string(detail::token_pid(owner)));
        }
      } else {
        ++r.in_progress;
        continue;
      }
    }
    u64 meta = 0, word = 0, admitted = 0, denied = 0;
    if (!m.table.read_consistent(i, &meta, &word, key, &admitted, &denied)) {
      ++r.in_progress;
      continue;
    }
    const u64 state = detail::Meta::state(meta);
    if (state == detail::kEmpty) {
      if (meta != 0) r.problems.push_back(where + "empty slot with non-zero fields");
      else if (word != 0) r.problems.push_back(where + "empty slot whose state word was committed (no owner)");
      continue;
    }
    if (state == detail::kDead) continue;
    if (state == detail::kClaiming) {
      if (h.owner.load(std::memory_order_acquire) == 0) r.problems.push_back(where + "orphaned claim (no owner)");
      else ++r.in_progress;
      continue;
    }
    // LIVE
    const auto len = static_cast<std::uint32_t>(detail::Meta::key_len(meta));
    const auto policy = static_cast<std::uint32_t>(detail::Meta::policy(meta));
    if (len > g.key_capacity()) {
      r.problems.push_back(where + "key length " + std::to_string(len) + " exceeds the slot's " +
                           std::to_string(g.key_capacity()) + " bytes");
      continue;
    }
    if (policy >= registered) r.problems.push_back(where + "names unregistered policy " + std::to_string(policy));
    if (detail::Word::version(word) != detail::Meta::version(meta)) {
      if (h.owner.load(std::memory_order_acquire) != 0) {
        ++r.in_progress;
      } else {
        r.problems.push_back(where + "state version " + std::to_string(detail::Word::version(word)) +
                             " does not match generation " + std::to_string(detail::Meta::gen(meta)));
      }
      continue;
    }
    ++r.live;
    const std::string_view k(key, len);
    const u64 hash = detail::PackedKey(m.seed, policy, k).hash;
    if (((hash >> 48) & 0xFFFF) != detail::Meta::fp(meta)) r.problems.push_back(where + "fingerprint does not match its key");
    const std::uint32_t home = m.table.home(hash);
    const std::uint32_t dist = (i - home) & mask;
    if (dist >= g.max_probe) {
      r.problems.push_back(where + "key is " + std::to_string(dist) + " slots from home, beyond max_probe");
    } else {
      for (std::uint32_t d = 0; d < dist; ++d) {
        const u64 before = m.table.head((home + d) & mask).meta.load(std::memory_order_acquire);
        if (detail::Meta::state(before) == detail::kEmpty) {
          r.problems.push_back(where + "key is unreachable: slot " + std::to_string((home + d) & mask) +
                               " before it is empty");
          break;
        }
      }
    }
    live.push_back(Seen{i, policy, std::string(k)});
  }
  std::sort(live.begin(), live.end(), [](const Seen& a, const Seen& b) {
    return std::tie(a.policy, a.key, a.slot) < std::tie(b.policy, b.key, b.slot);
  });
  for (std::size_t i = 1; i < live.size(); ++i) {
    if (live[i].policy == live[i - 1].policy && live[i].key == live[i - 1].key) {
      r.problems.push_back("slots " + std::to_string(live[i - 1].slot) + " and " + std::to_string(live[i].slot) +
                           " hold the same key (policy " + std::to_string(live[i].policy) + ")");
    }
  }
  return r;
}

}  // namespace shmlimit
