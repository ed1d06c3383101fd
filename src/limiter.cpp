// Limiter: policies + table + clock -> Decision.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "algorithms.hpp"
#include "decision_fold.hpp"
#include "denials.hpp"
#include "gcra.hpp"
#include "layout.hpp"
#include "lease.hpp"
#include "process.hpp"
#include "segment.hpp"
#include "shmlimit/shmlimit.hpp"
#include "sliding_log.hpp"
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
    case Reason::kNeedsLease: return "needs_lease";
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

  bool algorithm_is_lease() const noexcept { return algo.algorithm == Algorithm::kConcurrency; }

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
  // Concurrency leases (lease.hpp) and the sliding-log region (sliding_log.hpp).
  mutable detail::Leases leases;  // mutable: process_entry() (const) recovers a dead owner's records
  AtomicU64* log_base;
  std::uint32_t log_entries;
  // When this handle last scanned the registry for dead lease holders
  // (ns since the epoch); at most one scan per kLeaseScanNs. Relaxed: a
  // process-local throttle.
  mutable std::atomic<std::int64_t> last_lease_scan{-kLeaseScanNs};
  static constexpr std::int64_t kLeaseScanNs = 1'000'000;

  explicit Impl(std::unique_ptr<detail::Segment> s, const Options& o)
      : seg(std::move(s)),
        table(seg->base() + seg->geometry().slot_offset, seg->geometry()),
        policy_table(reinterpret_cast<detail::PolicyEntry*>(seg->base() + seg->geometry().policy_offset)),
        process_table(reinterpret_cast<detail::ProcessEntry*>(seg->base() + seg->geometry().process_offset)),
        options(o),
        epoch(seg->epoch_mono_ns()),
        seed(seg->hash_seed()),
        claim_timeout_ns(std::chrono::duration_cast<Nanos>(o.claim_timeout).count()),
        leases(&table, reinterpret_cast<detail::LeaseArea*>(seg->base() + seg->geometry().lease_offset)),
        log_base(reinterpret_cast<AtomicU64*>(seg->base() + seg->geometry().log_offset)),
        log_entries(seg->geometry().log_entries) {}

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
      out->algo = detail::AlgoParams{static_cast<Algorithm>(kind & 0xFF), count, period, burst, emission,
                                     static_cast<LogWait>((kind >> 16) & 0xFF)};
      out->on_full = ((kind >> 8) & 0xFF) == 1 ? OnFull::kDeny : OnFull::kAllow;
      out->extra = kind & ~u64{0xFF01FF};  // bits no valid entry sets
      if (((kind >> 8) & 0xFF) > 1) out->extra |= u64{1} << 63;
      // bits 16-23: the sliding log's wait mode, 0 for every other algorithm
      if (((kind >> 16) & 0xFF) != 0 && out->algo.algorithm != Algorithm::kSlidingLog) out->extra |= u64{1} << 62;
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
    const u64 kind = static_cast<u64>(out->algo.algorithm) | (u64{out->on_full == OnFull::kDeny} << 8) |
                     (static_cast<u64>(out->algo.wait) << 16) | out->extra;
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
    // The pid from the cached token (recomputed after fork): getpid() is a
    // system call, and every lease looks its process entry up.
    const auto pid = detail::token_pid(detail::self_token());
    const u64 cached = process_slot.load(std::memory_order_relaxed);
    if (cached != 0 && (cached >> 32) == pid) return process_table[cached & 0xFFFFFFFF];
    const detail::ProcessToken me = detail::self_token();
    std::uint32_t chosen = 0;  // entry 0: shared overflow when the registry is full
    for (std::uint32_t i = 1; i < detail::kMaxProcesses && chosen == 0; ++i) {
      u64 owner = process_table[i].owner.load(std::memory_order_relaxed);
      if (owner == me) { chosen = i; break; }
      if (owner == 0 || detail::token_is_dead(owner & ~detail::kRecoveringBit)) {
        // A dead owner's lease records are recovered before the entry is
        // used (marked as recovering meanwhile, so that other handles of
        // this process do not take it as theirs yet). Acquire: the records
        // are read as their last owner left them.
        const u64 mark = owner == 0 ? me : (me | detail::kRecoveringBit);
        if (process_table[i].owner.compare_exchange_strong(owner, mark, std::memory_order_acquire)) {
          if (mark != me) {
            // Relaxed: a statistic (stat's repairs).
            process_table[i].repairs.fetch_add(leases.recover(i), std::memory_order_relaxed);
            process_table[i].owner.store(me, std::memory_order_release);  // Release: the records are recovered
          }
          chosen = i;
        }
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

  // ---- recent denials ------------------------------------------------------
  detail::DenialRing denial_ring() const noexcept { return detail::DenialRing::at(seg->base(), seg->geometry()); }

  // Records a denied acquire in the ring (denials.hpp); the admit path
  // never gets here. Returns `d`.
  Decision noted(std::uint32_t policy, std::string_view key, u64 cost, std::int64_t now, const Decision& d) const noexcept {
    if (!d.allowed && !seg->read_only() && d.reason != Reason::kUnknownPolicy) {
      denial_ring().record(now, policy, d.reason, key, cost, d.retry_after);
    }
    return d;
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

  // Claims a slot for an absent key, starting at `state`; `ref` then names
  // it (claimed here, or by another process meanwhile). A table that is
  // full or contended gives the documented fallback, counted.
  std::optional<Decision> claim(const PolicySnapshot& p, const detail::PackedKey& pk, std::int64_t now, u64 state,
                                detail::SlotRef* ref) noexcept {
    detail::ClaimEvents ev;
    const auto r = table.claim(pk, now, state, *this, claim_timeout_ns, ref, &ev);
    count(&detail::ProcessEntry::repairs, ev.repairs);
    if (r == detail::Table::ClaimResult::kFull) {
      count(&detail::ProcessEntry::full_events);
      return fallback(p, Reason::kTableFull);
    }
    if (r == detail::Table::ClaimResult::kContended) {
      count(&detail::ProcessEntry::contended_events);
      return fallback(p, Reason::kContended);
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
    if (p.algo.algorithm == Algorithm::kSlidingLog) return log_apply(p, pk, cost, now, op, charge, live_clock);
    if (p.algorithm_is_lease() && op == Op::kAcquire) return needs_lease(p);
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
        if (auto failed = claim(p, pk, now, fresh_state, &ref)) return *failed;
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

  // ---- sliding log (sliding_log.hpp) ----------------------------------------
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

  Decision log_apply(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost, std::int64_t now, Op op,
                     Charge* charge, bool live_clock) noexcept {
    // A policy whose count exceeds the segment's log (a hostile or buggy
    // writer; add_policy refuses it) would index past the slot's entries.
    if (p.algo.count > log_entries) {
      count(&detail::ProcessEntry::other_events);
      return fallback(p, Reason::kCorrupt);
    }
    if (p.algo.count <= 64) {
      LogBuffers<64> b;
      return log_run(p, pk, cost, now, op, charge, live_clock, b.snap, b.pick, b.scratch);
    }
    return log_apply_large(p, pk, cost, now, op, charge, live_clock);
  }

  // Counts above 64: 80 KiB of stack, in a frame of its own so that the
  // common small logs do not reserve it.
  [[gnu::noinline]] Decision log_apply_large(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost,
                                             std::int64_t now, Op op, Charge* charge, bool live_clock) noexcept {
    LogBuffers<detail::kMaxLogEntries> b;
    return log_run(p, pk, cost, now, op, charge, live_clock, b.snap, b.pick, b.scratch);
  }

  Decision log_run(const PolicySnapshot& p, const detail::PackedKey& pk, u64 cost, std::int64_t now, Op op,
                   Charge* charge, bool live_clock, u64* snap, std::uint32_t* pick, std::int64_t* scratch) noexcept {
    const detail::LogParams lp{p.algo.count, p.algo.period_ns, p.algo.wait};
    const auto n = static_cast<std::uint32_t>(lp.count);
    const std::span<u64> entries(snap, n);
    const std::span<std::uint32_t> picks(pick, n);
    const std::span<std::int64_t> work(scratch, n);
    detail::SlotRef ref;
    for (;;) {
      if (!table.find(pk, &ref)) {
        if (live_clock) now = std::max(now, this->now());  // as in apply(): never start in the past
        std::fill(entries.begin(), entries.end(), u64{0});
        const detail::LogOutcome fresh = detail::log_decide(lp, entries, 0, now, op == Op::kRefund ? 0 : cost, picks, work);
        if (op != Op::kAcquire || fresh.chosen == 0) return fresh.decision;
        if (auto failed = claim(p, pk, now, 0, &ref)) return *failed;
      }
      const u64 v = detail::Word::version(ref.word);
      AtomicU64* log = log_of(ref.index);
      detail::SlotHead& h = table.head(ref.index);
      // Relaxed loads and CASes on the entries: the bound "at most N in
      // any window" is argued entry by entry (sliding_log.hpp), from each
      // entry's own modification order; the word's CAS below (an RMW, so
      // it reads the latest word) is what tells a stale view of the slot.
      for (std::uint32_t i = 0; i < n; ++i) entries[i] = log[i].load(std::memory_order_relaxed);
      if (op == Op::kRefund) return log_refund(lp, log, entries, v, now, cost, picks, work);
      const detail::LogOutcome out = detail::log_decide(lp, entries, v, now, cost, picks, work);
      if (op == Op::kPeek || out.chosen == 0) {
        if (op == Op::kAcquire && !out.decision.allowed) h.denied.fetch_add(1, std::memory_order_relaxed);  // a statistic
        return out.decision;
      }
      // Claim the chosen entries; a lost CAS (another admission took the
      // entry) gives back what this one took and decides again.
      const u64 mine = detail::log_entry(v, now);
      std::uint32_t taken = 0;
      for (; taken < out.chosen; ++taken) {
        u64 expected = entries[picks[taken]];
        if (!log[picks[taken]].compare_exchange_strong(expected, mine, std::memory_order_relaxed)) break;
      }
      if (taken < out.chosen) {
        log_give_back(log, picks, taken, mine);
        continue;
      }
      // Record the admission in the word: the log is empty no sooner than
      // now + D. A reclaim or reset (version moved) since our lookup makes
      // this fail: the entries were written for a key that is gone.
      u64 w = h.word.load(std::memory_order_relaxed);
      bool landed = false;
      while (detail::Word::version(w) == v) {
        const u64 next = detail::Word::make(v, detail::log_word_after(detail::Word::payload(w), now, lp.window_ns));
        // Relaxed: as the entries; the word's version is the guard (ABA).
        if (h.word.compare_exchange_weak(w, next, std::memory_order_relaxed, std::memory_order_relaxed)) {
          landed = true;
          break;
        }
      }
      if (!landed) {
        log_give_back(log, picks, out.chosen, mine);
        continue;  // look the key up again
      }
      if (op == Op::kAcquire) {
        h.admitted.fetch_add(1, std::memory_order_relaxed);  // a statistic
        if (charge != nullptr) *charge = Charge{true, ref.index, v};
      }
      return out.decision;
    }
  }

  // Frees the first `n` entries of `picks` that still hold `mine`.
  static void log_give_back(AtomicU64* log, const std::span<std::uint32_t> picks, std::uint32_t n, u64 mine) noexcept {
    for (std::uint32_t k = 0; k < n; ++k) {
      u64 expected = mine;
      log[picks[k]].compare_exchange_strong(expected, 0, std::memory_order_relaxed);  // Relaxed: as in log_run
    }
  }

  // refund(): forgets the `cost` newest live admissions (DRF has no refund;
  // this gives back the most recent ones).
  Decision log_refund(const detail::LogParams& lp, AtomicU64* log, std::span<u64> entries, u64 v, std::int64_t now,
                      u64 cost, std::span<std::uint32_t> picks, std::span<std::int64_t> work) noexcept {
    std::uint32_t live = 0;
    for (std::uint32_t i = 0; i < entries.size(); ++i) {
      if (detail::log_classify(entries[i], v, now, lp.window_ns) == detail::LogEntryKind::kLive) picks[live++] = i;
    }
    std::sort(picks.begin(), picks.begin() + live,
              [&](std::uint32_t a, std::uint32_t b) { return entries[a] > entries[b]; });
    for (std::uint32_t k = 0; k < live && k < cost; ++k) {
      u64 expected = entries[picks[k]];
      if (log[picks[k]].compare_exchange_strong(expected, 0, std::memory_order_relaxed)) entries[picks[k]] = 0;
    }
    return detail::log_decide(lp, entries, v, now, 0, picks, work).decision;
  }

  // acquire_many's rollback: the admission wrote `cost` entries equal to
  // log_entry(version, now); any `cost` of them are equivalent.
  void log_undo(const PolicySnapshot& p, const Charge& c, u64 cost, std::int64_t now) noexcept {
    if (p.algo.count > log_entries) return;
    AtomicU64* log = log_of(c.slot);
    const u64 mine = detail::log_entry(c.version, now);
    u64 left = cost;
    for (std::uint32_t i = 0; i < p.algo.count && left > 0; ++i) {
      u64 expected = mine;
      if (log[i].compare_exchange_strong(expected, 0, std::memory_order_relaxed)) --left;  // Relaxed: as in log_run
    }
    if (left < cost) table.head(c.slot).admitted.fetch_sub(1, std::memory_order_relaxed);  // a statistic
  }

  // reset(): the slot's key (generation of `meta`) is gone; clear its
  // entries so that they are not left as garbage until they expire.
  void log_forget(std::uint32_t index, u64 meta) noexcept {
    if (log_entries == 0) return;
    AtomicU64* log = log_of(index);
    const u64 v = detail::Meta::version(meta);
    for (std::uint32_t i = 0; i < log_entries; ++i) {
      u64 e = log[i].load(std::memory_order_relaxed);
      if (e != 0 && detail::log_entry_version(e) == v) log[i].compare_exchange_strong(e, 0, std::memory_order_relaxed);
    }
  }

  // import_state(): the key in slot `index` (version `v`) of a sliding-log
  // policy gets exactly the admissions `times` (its other entries are
  // freed). Relaxed stores, as log_run's entries: the word (already
  // stored) says when the log is empty; a decision racing with the import
  // of its own key sees either entry value, each a valid admission or none.
  void log_store(std::uint32_t policy, std::uint32_t index, u64 v, std::span<const std::int64_t> times) noexcept {
    PolicySnapshot p;
    if (!load_policy(policy, &p) || !p.valid || p.algo.algorithm != Algorithm::kSlidingLog ||
        p.algo.count > log_entries) {
      return;
    }
    AtomicU64* log = log_of(index);
    for (std::uint32_t i = 0; i < p.algo.count; ++i) {
      log[i].store(i < times.size() ? detail::log_entry(v, std::max<std::int64_t>(times[i], 0)) : 0,
                   std::memory_order_relaxed);
    }
  }

  // The bucket of a live sliding-log slot as it is (dump): cost 0 and 1.
  std::pair<Decision, Decision> log_view(const PolicySnapshot& p, std::uint32_t index, u64 word, std::int64_t now) const {
    const detail::LogParams lp{p.algo.count, p.algo.period_ns, p.algo.wait};
    std::vector<u64> entries(lp.count <= log_entries ? lp.count : 0);
    std::vector<std::uint32_t> picks(entries.size());
    std::vector<std::int64_t> work(entries.size());
    const AtomicU64* log = log_of(index);
    for (std::size_t i = 0; i < entries.size(); ++i) entries[i] = log[i].load(std::memory_order_relaxed);
    const u64 v = detail::Word::version(word);
    return {detail::log_decide(lp, entries, v, now, 0, picks, work).decision,
            detail::log_decide(lp, entries, v, now, 1, picks, work).decision};
  }

  // ---- concurrency leases (lease.hpp) ---------------------------------------
  Decision needs_lease(const PolicySnapshot& p) const noexcept {
    Decision d;
    d.limit = p.capacity();
    d.reason = Reason::kNeedsLease;
    return d;
  }

  static constexpr std::uint32_t kNoRecord = ~std::uint32_t{0};

  // Recovers the lease records of registry entries whose owner died
  // (serialised by taking the entry: owner -> our token | kRecoveringBit,
  // then 0). `slot` limits the scan to holders of that slot (a denied
  // lease); kNoRecord scans every holder (check). Returns records recovered.
  std::uint32_t reclaim_dead_leases(std::uint32_t slot, std::vector<std::string>* dead = nullptr) noexcept {
    std::uint32_t n = 0;
    const detail::ProcessToken me = detail::self_token();
    for (std::uint32_t i = 1; i < detail::kMaxProcesses; ++i) {
      detail::ProcessEntry& e = process_table[i];
      u64 owner = e.owner.load(std::memory_order_relaxed);
      if (owner == 0 || owner == me) continue;
      if (slot == kNoRecord ? !leases.holds_any(i) : !leases.holds_slot(i, slot)) continue;
      if (!detail::token_is_dead(owner & ~detail::kRecoveringBit)) continue;
      if (dead != nullptr) {
        dead->push_back("process " + std::to_string(detail::token_pid(owner & ~detail::kRecoveringBit)) +
                        " died holding leases (registry entry " + std::to_string(i) + ")");
        continue;
      }
      // Acquire: the records as the dead owner left them.
      if (!e.owner.compare_exchange_strong(owner, me | detail::kRecoveringBit, std::memory_order_acquire)) continue;
      n += leases.recover(i);
      e.owner.store(0, std::memory_order_release);  // Release: the recovered records are visible first
    }
    return n;
  }

  // Cost units the lease records hold on slot `index` of generation `meta`
  // (HELD, or RELEASING whose decrement has not landed).
  u64 lease_records_cost(std::uint32_t index, u64 meta) const noexcept {
    u64 sum = 0;
    const auto* areas = reinterpret_cast<const detail::LeaseArea*>(seg->base() + seg->geometry().lease_offset);
    for (std::uint32_t e = 0; e < detail::kMaxProcesses; ++e) {
      for (std::uint32_t r = 0; r < detail::kLeaseRecords; ++r) {
        // Acquire: the cost was written before the state.
        const u64 c = areas[e].records[r].ctl.load(std::memory_order_acquire);
        const u64 st = detail::LeaseCtl::state(c);
        if ((st == detail::kLeaseHeld || st == detail::kLeaseReleasing) && detail::LeaseCtl::slot(c) == index &&
            detail::LeaseCtl::gen(c) == (detail::Meta::gen(meta) & detail::kLeaseGenMask)) {
          sum += areas[e].records[r].cost.load(std::memory_order_relaxed);
        }
      }
    }
    return sum;
  }

  // Cost units held per (slot, generation) by every lease record: one pass
  // over the lease areas for check(). Key: slot << 19 | generation bits.
  std::unordered_map<u64, u64> lease_costs() const {
    std::unordered_map<u64, u64> out;
    const auto* areas = reinterpret_cast<const detail::LeaseArea*>(seg->base() + seg->geometry().lease_offset);
    for (std::uint32_t e = 0; e < detail::kMaxProcesses; ++e) {
      // Relaxed: a hint; a slot whose sum disagrees is re-read on its own.
      if (areas[e].used.load(std::memory_order_relaxed) == 0) continue;
      for (std::uint32_t r = 0; r < detail::kLeaseRecords; ++r) {
        // Acquire: the cost was written before the state.
        const u64 c = areas[e].records[r].ctl.load(std::memory_order_acquire);
        const u64 st = detail::LeaseCtl::state(c);
        if (st == detail::kLeaseHeld || st == detail::kLeaseReleasing) {
          out[(u64{detail::LeaseCtl::slot(c)} << 19) | detail::LeaseCtl::gen(c)] +=
              areas[e].records[r].cost.load(std::memory_order_relaxed);
        }
      }
    }
    return out;
  }

  // check(): a concurrency slot's in-flight count equals what its lease
  // records hold (when no operation is pending; read twice, as leases may
  // be taken and released meanwhile). Empty when consistent.
  std::string check_lease_count(std::uint32_t index, u64 meta, u64 word, const std::unordered_map<u64, u64>& costs) const {
    PolicySnapshot p;
    if (!load_policy(static_cast<std::uint32_t>(detail::Meta::policy(meta)), &p) || !p.valid || !p.algorithm_is_lease()) {
      return {};
    }
    for (int attempt = 0;; ++attempt) {
      const u64 payload = detail::Word::payload(word);
      u64 held = 0;
      if (attempt == 0) {
        const auto it = costs.find((u64{index} << 19) | (detail::Meta::gen(meta) & detail::kLeaseGenMask));
        held = it == costs.end() ? 0 : it->second;
      } else {
        held = lease_records_cost(index, meta);
      }
      if (detail::lease_pending(payload).op != detail::LeaseOp::kNone || held == detail::lease_count(payload)) return {};
      if (attempt == 1) {
        return "in-flight count " + std::to_string(detail::lease_count(payload)) + " but lease records hold " +
               std::to_string(held);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      word = table.head(index).word.load(std::memory_order_acquire);
      if (detail::Word::version(word) != detail::Meta::version(meta)) return {};
    }
  }

  std::uint32_t own_entry_index() const noexcept {
    return static_cast<std::uint32_t>(&process_entry() - process_table);
  }

  Lease lease(std::uint32_t policy, std::string_view key, u64 cost) noexcept {
    Lease out;
    const std::int64_t now = this->now();
    PolicySnapshot p;
    if (auto early = precheck(policy, key, now, &p)) {
      out.decision_ = *early;
    } else if (!p.algorithm_is_lease()) {
      out.decision_ = unknown_policy();
    } else {
      out.decision_ = lease_decide(p, policy, key, cost, &out);
      if (out.held()) return out;
    }
    // A denied lease goes to the recent-denials ring, as a denied acquire.
    noted(policy, key, cost, now, out.decision_);
    // Fail open (on_full = allow): granted without a record; releasing it gives nothing back.
    if (out.decision_.allowed && out.decision_.reason != Reason::kOk && cost > 0) {
      out.impl_ = this;
      out.entry_ = kNoRecord;
      out.pid_ = static_cast<std::int32_t>(detail::token_pid(detail::self_token()));
    }
    return out;
  }

  Decision lease_decide(const PolicySnapshot& p, std::uint32_t policy, std::string_view key, u64 cost,
                        Lease* out) noexcept {
    const u64 limit = p.algo.count;
    const detail::PackedKey pk(seed, policy, key);
    detail::SlotRef ref;
    const bool peek = seg->read_only() || cost == 0;
    if (!peek && cost > limit) return detail::lease_acquire_step(0, limit, cost, {}).decision;  // never fits
    const std::uint32_t entry = peek ? 0 : own_entry_index();
    if (!peek && entry == 0) {  // the registry is full: no records of our own
      count(&detail::ProcessEntry::full_events);
      return fallback(p, Reason::kTableFull);
    }
    for (int reclaims = 0;;) {
      if (!table.find(pk, &ref)) {
        if (peek) return detail::lease_report(0, limit);
        if (auto failed = claim(p, pk, now(), 0, &ref)) return *failed;
      }
      if (peek) return detail::lease_report(detail::Word::payload(ref.word), limit);
      detail::SlotHead& h = table.head(ref.index);
      Decision d;
      std::uint32_t record = 0;
      u64 ctl = 0;
      switch (leases.acquire(ref, entry, limit, cost, &record, &ctl, &d)) {
        case detail::Leases::Result::kGranted:
          h.admitted.fetch_add(1, std::memory_order_relaxed);  // a statistic
          out->impl_ = this;
          out->entry_ = entry;
          out->record_ = record;
          out->ctl_ = ctl;
          out->pid_ = static_cast<std::int32_t>(detail::token_pid(detail::self_token()));
          return d;
        case detail::Leases::Result::kRelookup:
          continue;
        case detail::Leases::Result::kNoRecord:
          count(&detail::ProcessEntry::full_events);
          return fallback(p, Reason::kTableFull);
        case detail::Leases::Result::kDenied:
          break;
      }
      // Denied: leases held by dead processes on this key are reclaimed
      // first (at most one registry scan per kLeaseScanNs per handle).
      const std::int64_t t = now();
      if (reclaims < 2 && t - last_lease_scan.load(std::memory_order_relaxed) >= kLeaseScanNs) {
        last_lease_scan.store(t, std::memory_order_relaxed);
        ++reclaims;
        if (reclaim_dead_leases(ref.index) > 0) continue;
      }
      h.denied.fetch_add(1, std::memory_order_relaxed);  // a statistic
      return d;
    }
  }

  // Gives `cost` back to the bucket an acquire charged, if that bucket
  // still holds the same generation (otherwise it refilled and was
  // reclaimed: nothing is owed).
  void undo(const PolicySnapshot& p, const Charge& c, u64 cost, std::int64_t now) noexcept {
    if (p.algo.algorithm == Algorithm::kSlidingLog) return log_undo(p, c, cost, now);
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
    detail::DecisionFold fold;  // decision_fold.hpp
    if (requests.empty()) {
      fold.combined.remaining = 0;
      return fold.combined;
    }
    // Phase 1: peek at every limit; if any denies, charge none and report
    // every denial (the largest retry-after wins).
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Decision d = apply(requests[i].policy.index, requests[i].key, requests[i].cost, now, Op::kPeek);
      if (!d.allowed) noted(requests[i].policy.index, requests[i].key, requests[i].cost, now, d);
      if (i < each.size()) each[i] = d;
      fold.add(d);
    }
    if (!fold.combined.allowed) return uncharged(requests, each, now, fold.combined);
    // Phase 2: charge one by one. A limit that another process filled in
    // the meantime denies: give back what this request already took, so
    // none is charged. Each charge is checked against its own limit, so no
    // limit is ever exceeded; a rollback only makes others wait briefly.
    fold = detail::DecisionFold();
    // Where each limit was charged, for a rollback: on the stack for the
    // usual handful of limits.
    Charge small[8];
    std::vector<Charge> large;
    if (requests.size() > std::size(small)) large.resize(requests.size());
    Charge* charges = large.empty() ? small : large.data();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const Decision d =
          apply(requests[i].policy.index, requests[i].key, requests[i].cost, now, Op::kAcquire, &charges[i]);
      if (!d.allowed) noted(requests[i].policy.index, requests[i].key, requests[i].cost, now, d);
      if (i < each.size()) each[i] = d;
      fold.add(d);
      if (!d.allowed) {
        for (std::size_t j = 0; j < i; ++j) {
          PolicySnapshot p;
          if (charges[j].charged && load_policy(requests[j].policy.index, &p) && p.valid) {
            undo(p, charges[j], requests[j].cost, now);
          }
        }
        return uncharged(requests, each, now, fold.combined);
      }
    }
    return fold.combined;
  }

  // A refused multi-limit request charged nothing: each limit that admitted
  // (or would have) reports its bucket as it is (a cost-0 peek: remaining
  // and reset-after uncharged), not as after a charge that did not happen
  // or was given back. The combined answer stays denied.
  Decision uncharged(std::span<const Request> requests, std::span<Decision> each, std::int64_t now,
                     Decision combined) noexcept {
    detail::DecisionFold fold;
    fold.combined.allowed = false;
    fold.combined.retry_after = combined.retry_after;
    fold.combined.reason = combined.reason;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      Decision d;
      if (i < each.size()) {
        d = each[i];
      } else {
        d = apply(requests[i].policy.index, requests[i].key, requests[i].cost, now, Op::kPeek);
      }
      if (d.allowed) {
        const Decision as_is = apply(requests[i].policy.index, requests[i].key, 0, now, Op::kPeek);
        d.remaining = as_is.remaining;
        d.reset_after = as_is.reset_after;
        if (i < each.size()) each[i] = d;
      }
      fold.add(d);
    }
    return fold.combined;
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
    p.kind.store(static_cast<u64>(s.algorithm) | (static_cast<u64>(s.on_full) << 8) | (static_cast<u64>(s.wait) << 16),
                 std::memory_order_relaxed);
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
    s.wait = p.algo.wait;
    return s;
  }

  PolicyId add_policy(PolicySpec spec, bool replace) {
    check_policy_name(spec.name);
    if (seg->read_only()) throw Error(ErrorCode::kReadOnly, "cannot add a policy through a read-only handle");
    if (spec.on_full != OnFull::kAllow && spec.on_full != OnFull::kDeny) {
      throw Error(ErrorCode::kInvalidArgument, "on_full must be allow or deny");
    }
    // A concurrency limit has no period: only rate.count (the limit) counts.
    if (spec.algorithm == Algorithm::kConcurrency) spec.rate.period = Nanos(0);
    if (spec.algorithm != Algorithm::kSlidingLog) spec.wait = LogWait::kExact;
    if (spec.rate.count == 0 || (spec.rate.period.count() <= 0 && spec.algorithm != Algorithm::kConcurrency)) {
      throw Error(ErrorCode::kInvalidArgument, "policy \"" + spec.name + "\": the rate needs a count >= 1 and a period > 0");
    }
    if (spec.algorithm == Algorithm::kSlidingLog && spec.rate.count > log_entries) {
      throw Error(ErrorCode::kInvalidArgument,
                  "policy \"" + spec.name + "\" (sliding_log, " + format_rate(spec.rate) + ") keeps " +
                      std::to_string(spec.rate.count) + " admissions per key but " + seg->name() + " has log_entries = " +
                      std::to_string(log_entries) + ": create the segment with log_entries >= " +
                      std::to_string(spec.rate.count) + " (Options::log_entries, or [segment] log_entries in the config)");
    }
    // Window algorithms have no separate burst: their capacity is the count.
    const bool windowed = spec.algorithm == Algorithm::kFixedWindow || spec.algorithm == Algorithm::kSlidingWindow ||
                          spec.algorithm == Algorithm::kQuietPeriod || spec.algorithm == Algorithm::kSlidingLog ||
                          spec.algorithm == Algorithm::kConcurrency;
    if (spec.burst == 0 || windowed) spec.burst = spec.rate.count;
    const u64 emission = detail::gcra_emission(spec.rate.count, static_cast<u64>(spec.rate.period.count()));
    const char* why = "unknown algorithm";
    if (!detail::algo_params_valid(
            detail::AlgoParams{spec.algorithm, spec.rate.count, static_cast<u64>(spec.rate.period.count()), spec.burst,
                               emission, spec.wait},
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
  const std::int64_t now = impl_->now();
  return impl_->noted(policy.index, key, cost, now,
                      impl_->apply(policy.index, key, cost, now, Impl::Op::kAcquire, nullptr, true));
}

Decision Limiter::acquire(std::string_view policy, std::string_view key, std::uint64_t cost) noexcept {
  const auto i = impl_->find_policy(policy);
  if (!i) return Impl::unknown_policy();
  const std::int64_t now = impl_->now();
  return impl_->noted(*i, key, cost, now, impl_->apply(*i, key, cost, now, Impl::Op::kAcquire, nullptr, true));
}

Decision Limiter::acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost, Nanos now) noexcept {
  return impl_->noted(policy.index, key, cost, now.count(),
                      impl_->apply(policy.index, key, cost, now.count(), Impl::Op::kAcquire));
}

Lease Limiter::lease(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->lease(policy.index, key, cost);
}

Lease::Lease(Lease&& other) noexcept
    : impl_(std::exchange(other.impl_, nullptr)),
      entry_(other.entry_),
      record_(other.record_),
      ctl_(other.ctl_),
      pid_(other.pid_),
      decision_(other.decision_) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    impl_ = std::exchange(other.impl_, nullptr);
    entry_ = other.entry_;
    record_ = other.record_;
    ctl_ = other.ctl_;
    pid_ = other.pid_;
    decision_ = other.decision_;
  }
  return *this;
}

Lease::~Lease() { release(); }

bool Lease::release() noexcept {
  Limiter::Impl* impl = std::exchange(impl_, nullptr);
  if (impl == nullptr) return false;
  // A fork()ed child's copy: the record belongs to the parent.
  if (static_cast<std::int32_t>(detail::token_pid(detail::self_token())) != pid_) return false;
  if (entry_ == Limiter::Impl::kNoRecord) return true;  // granted by on_full = allow: nothing taken
  return impl->leases.release(entry_, record_, ctl_);
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
        m.log_forget(ref.index, ref.meta);
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
          m.log_forget(i, meta);
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
      // A sliding log's state is its entries, not the word alone.
      const auto [as_is, one] = p.algo.algorithm == Algorithm::kSlidingLog
                                    ? m.log_view(p, i, word, now)
                                    : std::pair{decide_state(p, b.state, now, 0).decision,
                                                decide_state(p, b.state, now, 1).decision};
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
  if (std::string short_file = m.seg->size_problem(); !short_file.empty()) {
    r.problems.push_back("file: " + short_file);
    return r;  // reading a slot past the file's end would raise SIGBUS
  }
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
  // Leases held by dead processes: recovered (repair) or reported.
  if (may_repair) {
    (void)m.own_entry_index();  // our own entry first: recovery never takes it as ours
    const std::uint32_t n = m.reclaim_dead_leases(Impl::kNoRecord);
    r.repaired += n;
    m.count(&detail::ProcessEntry::repairs, n);
  } else {
    m.reclaim_dead_leases(Impl::kNoRecord, &r.problems);
  }
  const std::unordered_map<u64, u64> lease_costs = m.lease_costs();
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
    if (const std::string lease_problem = m.check_lease_count(i, meta, word, lease_costs); !lease_problem.empty()) {
      r.problems.push_back(where + lease_problem);
    }
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

namespace shmlimit {

RecentDenials Limiter::recent_denials(std::uint64_t since_cursor) const {
  const Impl& m = *impl_;
  const detail::DenialRead raw = m.denial_ring().read(since_cursor);
  // Wall clock of the segment's time 0, as of this read.
  const std::int64_t now = m.now();
  const std::int64_t unix_offset = detail::realtime_ns() - now;
  std::vector<std::string> names;
  for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
    // Acquire: the name was written before the entry's state was published.
    if (m.policy_table[i].state.load(std::memory_order_acquire) == 0) break;
    names.push_back(m.policy_name(i));
  }
  RecentDenials out;
  out.next_cursor = raw.next;
  out.lost = raw.lost;
  out.denials.reserve(raw.records.size());
  for (const detail::DenialRecord& r : raw.records) {
    DenialView v;
    v.cursor = r.ticket;
    v.at = Nanos(r.time_ns);
    v.unix_ns = unix_offset + r.time_ns;
    v.policy_index = r.policy;
    if (r.policy < names.size()) v.policy = names[r.policy];
    v.key.assign(r.key, std::min<std::size_t>(r.key_len, detail::kDenialKeyBytes));
    v.key_length = r.key_len;
    v.cost = r.cost;
    v.retry_after = Nanos(static_cast<Nanos::rep>(r.retry_after_ns));
    v.reason = r.reason;
    v.pid = static_cast<std::int32_t>(r.pid);
    out.denials.push_back(std::move(v));
  }
  return out;
}

std::vector<std::int64_t> Limiter::log_admissions(std::uint32_t slot) const {
  const Impl& m = *impl_;
  std::vector<std::int64_t> out;
  if (slot >= m.table.capacity()) return out;
  // Acquire: as read_consistent; the version names the key's entries.
  const u64 meta = m.table.head(slot).meta.load(std::memory_order_acquire);
  if (detail::Meta::state(meta) != detail::kLive) return out;
  PolicySnapshot p;
  if (!m.load_policy(static_cast<std::uint32_t>(detail::Meta::policy(meta)), &p) || !p.valid ||
      p.algo.algorithm != Algorithm::kSlidingLog || p.algo.count > m.log_entries) {
    return out;
  }
  const u64 v = detail::Meta::version(meta);
  const std::int64_t now = m.now();
  const AtomicU64* log = m.log_of(slot);
  for (std::uint32_t i = 0; i < p.algo.count; ++i) {
    const u64 e = log[i].load(std::memory_order_relaxed);  // Relaxed: as log_view (a snapshot, entry by entry)
    if (detail::log_classify(e, v, now, p.algo.period_ns) == detail::LogEntryKind::kLive) {
      out.push_back(detail::log_entry_time(e));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int Limiter::store_bucket(std::uint32_t policy, std::string_view key, std::uint64_t state, std::uint64_t admitted,
                          std::uint64_t denied, bool replace, std::span<const std::int64_t> log) {
  Impl& m = *impl_;
  if (m.seg->read_only()) throw Error(ErrorCode::kReadOnly, "cannot import buckets through a read-only handle");
  if (key.size() > m.table.key_capacity() || policy >= detail::kMaxPolicies) return 2;
  const detail::PackedKey pk(m.seed, policy, key);
  detail::ClaimEvents ev;
  int result = 2;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    detail::SlotRef ref;
    if (!m.table.find(pk, &ref)) {
      const auto r = m.table.claim(pk, m.now(), state, m, m.claim_timeout_ns, &ref, &ev);
      if (r == detail::Table::ClaimResult::kFull || r == detail::Table::ClaimResult::kContended) break;
      if (r == detail::Table::ClaimResult::kClaimed) {
        detail::SlotHead& h = m.table.head(ref.index);
        // Relaxed: statistics.
        h.admitted.store(admitted, std::memory_order_relaxed);
        h.denied.store(denied, std::memory_order_relaxed);
        m.log_store(policy, ref.index, detail::Word::version(ref.word), log);
        result = 0;
        break;
      }
    }
    if (!replace) {
      result = 1;
      break;
    }
    detail::SlotHead& h = m.table.head(ref.index);
    u64 w = ref.word;
    // Relaxed, as every decision's CAS: the word is the bucket's whole
    // state, and its version makes the CAS fail on a reclaimed slot.
    while (detail::Word::version(w) == detail::Word::version(ref.word)) {
      if (h.word.compare_exchange_weak(w, detail::Word::make(detail::Word::version(w), state), std::memory_order_relaxed,
                                       std::memory_order_relaxed)) {
        h.admitted.store(admitted, std::memory_order_relaxed);
        h.denied.store(denied, std::memory_order_relaxed);
        m.log_store(policy, ref.index, detail::Word::version(w), log);
        result = 0;
        break;
      }
    }
    if (result == 0) break;
    // The slot was reclaimed for another key meanwhile: look again.
  }
  m.count(&detail::ProcessEntry::repairs, ev.repairs);
  return result;
}

}  // namespace shmlimit
