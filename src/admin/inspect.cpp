// Inspection of a live segment: stats, the buckets as they are (dump), the
// recent-denials ring, a sliding log's admissions. Readers only: nothing
// here writes the segment.
#include "shmlimit/inspect.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/sliding_log.hpp"
#include "algorithms/state_codec.hpp"
#include "limiter/limiter_impl.hpp"
#include "segment/clock.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::PolicySnapshot;
using detail::u64;

DecisionClockInfo decision_clock_info() {
  DecisionClockInfo info;
  info.reason = detail::decision_clock_refusal();
  info.clock = info.reason.empty() ? "tsc" : "exact";
  return info;
}

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
      case detail::kEmpty:
        ++s.empty;
        break;
      case detail::kDead:
        ++s.dead;
        break;
      case detail::kClaiming:
        ++s.claiming;
        break;
      default: {
        if (detail::Word::version(word) != detail::Meta::version(meta)) {
          ++s.claiming;  // a reclaim in progress
          break;
        }
        ++s.used;
        const auto policy = static_cast<std::uint32_t>(detail::Meta::policy(meta));
        if (m.is_full(policy, detail::Word::payload(word), now)) ++s.reclaimable;
        const auto len = std::min<std::uint32_t>(
            static_cast<std::uint32_t>(detail::Meta::key_len(meta)), g.key_capacity());
        const std::uint32_t home =
            m.table.home(detail::PackedKey(m.seed, policy, std::string_view(key, len)).hash);
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
  s.policies = counters();
  s.decision_clock = decision_clock_info();
  for (const PolicyCounters& c : s.policies) {
    s.admitted += c.admitted;
    s.denied += c.denied;
  }
  return s;
}

std::vector<PolicyCounters> Limiter::counters() const {
  const Impl& m = *impl_;
  std::vector<PolicyCounters> out;
  // One row per name, summing every entry that ever held it: a replacement
  // that moves a policy to a fresh entry (policies.cpp) leaves its earlier
  // counts in the retired entry, and entries are never reused, so a name's
  // sum never decreases across replacements. The row's id is the entry the
  // name resolves to now.
  for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
    // Acquire: the name was written before the entry's state was published.
    if (m.policy_table[i].state.load(std::memory_order_acquire) == 0)
      break;  // entries are filled in order
    const detail::PolicyTotals t = m.counters.totals(i);
    std::string name = m.policy_name(i);
    const auto row = std::find_if(out.begin(), out.end(),
                                  [&](const PolicyCounters& c) { return c.policy == name; });
    if (row != out.end()) {
      row->admitted += t.admitted;
      row->denied += t.denied;
      continue;
    }
    const std::optional<std::uint32_t> live = m.find_policy(name);
    out.push_back(
        PolicyCounters{PolicyId{live.value_or(i)}, std::move(name), t.admitted, t.denied});
  }
  return out;
}

std::vector<BucketView> Limiter::dump() const {
  const Impl& m = *impl_;
  // This thread's own refusals are counted per key first (a flood's are
  // deferred: DenialFold::unposted), so a thread reads its own exactly.
  m.post_denials();
  const detail::Geometry& g = m.seg->geometry();
  std::vector<BucketView> out;
  const std::int64_t now = m.now();
  char key[256];
  for (std::uint32_t i = 0; i < g.capacity; ++i) {
    u64 meta = 0, word = 0, admitted = 0, denied = 0;
    if (!m.table.read_consistent(i, &meta, &word, key, &admitted, &denied)) continue;
    if (detail::Meta::state(meta) != detail::kLive ||
        detail::Word::version(word) != detail::Meta::version(meta))
      continue;
    const auto policy = static_cast<std::uint32_t>(detail::Meta::policy(meta));
    PolicySnapshot p;
    if (!m.load_policy(policy, &p) || p.retired)
      continue;  // a retired policy's buckets read as absent
    BucketView b;
    b.slot = i;
    b.policy = m.policy_name(policy);
    const auto len = std::min<std::uint32_t>(
        static_cast<std::uint32_t>(detail::Meta::key_len(meta)), g.key_capacity());
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
    v.repeats = r.repeats;
    out.denials.push_back(std::move(v));
  }
  return out;
}

std::vector<std::int64_t> Limiter::Impl::log_admissions(std::uint32_t slot) const {
  const Impl& m = *this;
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
    const u64 e = log[i].load(
        std::memory_order_relaxed);  // Relaxed: as log_view (a snapshot, entry by entry)
    if (detail::log_classify(e, v, now, p.algo.period_ns) == detail::LogEntryKind::kLive) {
      out.push_back(detail::log_entry_time(e));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<StateField> state_fields(Algorithm algorithm, std::uint64_t state) {
  namespace sc = detail::state_codec;
  switch (algorithm) {
    case Algorithm::kGcra:
      return {{"tat_ns", state}};
    case Algorithm::kLeakyBucket:
      return {{"empty_at_ns", state}};
    case Algorithm::kTokenBucket: {
      const sc::TokenBucket s = sc::TokenBucket::unpack(state);
      return {{"period_index", s.index}, {"missing", s.missing}};
    }
    case Algorithm::kFixedWindow: {
      const sc::FixedWindow s = sc::FixedWindow::unpack(state);
      return {{"window_index", s.index}, {"used", s.used}};
    }
    case Algorithm::kSlidingWindow: {
      const sc::SlidingWindow s = sc::SlidingWindow::unpack(state);
      return {{"window_index", s.index}, {"previous", s.prev}, {"current", s.cur}};
    }
    case Algorithm::kQuietPeriod: {
      const sc::QuietPeriod s = sc::QuietPeriod::unpack(state);
      const bool blocked = s.used == sc::QuietPeriod::kBlocked;
      return {{"expires_ms", s.expires_ms}, {"used", blocked ? 0 : s.used}, {"blocked", blocked}};
    }
    case Algorithm::kConcurrency:
      return {{"in_flight", state}};
    case Algorithm::kSlidingLog:
      return {{"empty_at_ns", state}};
  }
  return {{"state", state}};
}

}  // namespace shmlimit
