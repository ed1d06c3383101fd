// The policy table: add and replace policies, find them by name, and the
// admin token that serialises writers across processes (limiter_impl.hpp).
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "limiter/limiter_impl.hpp"
#include "limiter/policy_spec.hpp"

// Replacing a policy (Limiter::replace_policy; doc/algorithms.md, "Replacing
// a policy"). A bucket's state is read under whatever parameters its slot's
// policy index names at that instant, and a slot records only the index: so
// parameters that encode state differently (algo_state_compatible) must never
// be installed at an index whose slots hold state. Instead, under the admin
// token:
//   (0) retire orphans of an earlier replacement that died between 1 and 2;
//   (1) publish a fresh entry j with the name and the new parameters
//       (relaxed stores, then a release store of j's state);
//   (2) retire the old entry i: release-store its state with the retired
//       bit and forward = j.
// Readers: find_policy skips retired entries; a decision with a PolicyId
// naming i follows forward (resolve_policy: an acquire load of i's state that
// sees (2) also sees (1)); is_full(i) is true, so i's slots are reclaimed
// lazily like full buckets, and no lookup under j ever matches them (the
// policy index is part of a slot's identity). A decision that loaded i's
// parameters before (2) may still update or claim a slot of i: that state is
// read by nobody under j, so it is exact, and it is reclaimable.
// Crash safety: killed before (1) publishes, nothing changed; between (1)
// and (2), two live entries share the name and find_policy returns i, the
// earlier: (0) retires j at the next policy change; after (2), done. The
// admin token of a dead holder is taken over (AdminGuard).
// ABA: entries are never reused, so a PolicyId never names another policy,
// and forwards point only to entries published before the retirement.
// Hot path: one more bit test on the state already loaded; a stale id costs
// one acquire load per hop, at most kMaxPolicies. Still lock-free.
// The price: each such replacement uses an entry of 64 for good.

namespace shmlimit {

using detail::AtomicU64;
using detail::u64;

using detail::PolicySnapshot;

std::string Limiter::Impl::policy_name(std::uint32_t index) const {
  char buf[detail::kPolicyNameBytes + 1] = {};
  for (std::uint32_t i = 0; i < detail::kPolicyNameBytes / 8; ++i) {
    const u64 w = policy_table[index].name[i].load(std::memory_order_relaxed);
    std::memcpy(buf + 8 * i, &w, 8);
  }
  buf[detail::kPolicyNameBytes - 1] = '\0';
  return std::string(buf);
}

std::optional<std::uint32_t> Limiter::Impl::find_policy(std::string_view name) const noexcept {
  if (name.empty() || name.size() >= detail::kPolicyNameBytes) return std::nullopt;
  u64 want[detail::kPolicyNameBytes / 8] = {};
  std::memcpy(want, name.data(), name.size());
  for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
    // Acquire: the name was written before state was published.
    const u64 state = policy_table[i].state.load(std::memory_order_acquire);
    if (state == 0) return std::nullopt;                // entries fill in order
    if (detail::PolicyState::retired(state)) continue;  // its name lives on in a later entry
    bool equal = true;
    for (std::uint32_t w = 0; w < detail::kPolicyNameBytes / 8 && equal; ++w) {
      equal = policy_table[i].name[w].load(std::memory_order_relaxed) == want[w];
    }
    if (equal) return i;
  }
  return std::nullopt;
}

// ---- admin token --------------------------------------------------------
class Limiter::Impl::AdminGuard {
 public:
  explicit AdminGuard(const Impl& impl)
      : lock_(process_mutex()), owner_(impl.seg->header().admin_owner) {
    const detail::ProcessToken me = detail::self_token();
    const auto deadline = std::chrono::steady_clock::now() + impl.options.open_timeout;
    for (int spin = 0;; ++spin) {
      u64 expected = 0;
      // Acquire: we read the policy table as the previous holder left it.
      if (owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) return;
      if (expected == me) {
        throw Error(ErrorCode::kSystem,
                    "the policy table's admin token is already held by this process");
      }
      if (detail::token_is_dead(expected) &&
          owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) {
        return;  // its holder died; every write it made is double-buffered
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw Error(ErrorCode::kTimeout,
                    "process " + std::to_string(detail::token_pid(expected)) +
                        " has held the policy table of " + impl.seg->name() + " for over " +
                        std::to_string(impl.options.open_timeout.count()) + " ms");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  ~AdminGuard() {
    owner_.store(0, std::memory_order_release);
  }  // Release: our policy writes are visible
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

void Limiter::Impl::write_params(detail::PolicyParams& p, const PolicySpec& s, u64 burst,
                                 u64 emission) {
  // Relaxed: published by the release store of the entry's state.
  p.kind.store(detail::PolicyKind::pack({s.algorithm, s.on_full, s.wait}),
               std::memory_order_relaxed);
  p.count.store(s.rate.count, std::memory_order_relaxed);
  p.period_ns.store(static_cast<u64>(s.rate.period.count()), std::memory_order_relaxed);
  p.burst.store(burst, std::memory_order_relaxed);
  p.emission_ns.store(emission, std::memory_order_relaxed);
}

PolicySpec Limiter::Impl::spec_of(std::uint32_t index, const PolicySnapshot& p) const {
  PolicySpec s;
  s.name = policy_name(index);
  s.algorithm = p.algo.algorithm;
  s.rate = Rate{p.algo.count, Nanos(static_cast<std::int64_t>(p.algo.period_ns))};
  s.burst = p.algo.burst;
  s.on_full = p.on_full;
  s.wait = p.algo.wait;
  return s;
}

PolicyReplacement Limiter::Impl::add_policy(PolicySpec spec, bool replace) {
  spec = normalize_policy_spec(spec);  // the one check of a spec (policy_spec.cpp)
  if (seg->read_only())
    throw Error(ErrorCode::kReadOnly, "cannot add a policy through a read-only handle");
  if (spec.algorithm == Algorithm::kSlidingLog && spec.rate.count > log_entries) {
    throw Error(ErrorCode::kInvalidArgument,
                "policy \"" + spec.name + "\" (sliding_log, " + format_rate(spec.rate) +
                    ") keeps " + std::to_string(spec.rate.count) + " admissions per key but " +
                    seg->name() + " has log_entries = " + std::to_string(log_entries) +
                    ": create the segment with log_entries >= " + std::to_string(spec.rate.count) +
                    " (Options::log_entries, or [segment] log_entries in the config)");
  }
  const u64 emission =
      detail::gcra_emission(spec.rate.count, static_cast<u64>(spec.rate.period.count()));
  AdminGuard guard(*this);
  retire_orphans();
  const auto publish = [&](std::uint32_t i) {
    detail::PolicyEntry& e = policy_table[i];
    u64 name[detail::kPolicyNameBytes / 8] = {};
    std::memcpy(name, spec.name.data(), spec.name.size());
    // Relaxed: published by the release store of the entry's state below.
    for (std::uint32_t w = 0; w < detail::kPolicyNameBytes / 8; ++w)
      e.name[w].store(name[w], std::memory_order_relaxed);
    write_params(e.params[0], spec, spec.burst, emission);
    // Release: name and parameters are visible with the state.
    e.state.store(detail::PolicyState::make(1, 0), std::memory_order_release);
  };
  const auto free_entry = [&]() -> std::optional<std::uint32_t> {
    for (std::uint32_t i = 0; i < detail::kMaxPolicies; ++i) {
      // Relaxed: we hold the admin token, the only writer of states.
      if (policy_table[i].state.load(std::memory_order_relaxed) == 0) return i;
    }
    return std::nullopt;
  };
  const std::optional<std::uint32_t> found = find_policy(spec.name);
  if (!found) {
    const auto i = free_entry();
    if (!i) {
      throw Error(ErrorCode::kTableFull, "the policy table of " + seg->name() + " is full (" +
                                             std::to_string(detail::kMaxPolicies) +
                                             " policies, retired entries included)");
    }
    publish(*i);
    return PolicyReplacement{PolicyId{*i}, true, false, 0};
  }
  const std::uint32_t i = *found;
  detail::PolicyEntry& e = policy_table[i];
  const u64 state = e.state.load(std::memory_order_relaxed);  // Relaxed: admin token held
  PolicySnapshot cur;
  load_policy(i, &cur);
  const PolicySpec existing = spec_of(i, cur);
  if (cur.valid && existing == spec) return PolicyReplacement{PolicyId{i}, false, false, 0};
  if (!replace) {
    throw Error(ErrorCode::kPolicyConflict,
                "policy \"" + spec.name + "\" is already registered in " + seg->name() + " as " +
                    format_rate(existing.rate) + " burst " + std::to_string(existing.burst) +
                    "; asked for " + format_rate(spec.rate) + " burst " +
                    std::to_string(spec.burst) + " (ask for replacement explicitly to change it)");
  }
  const auto [holding, leased] = buckets_of(i, cur);
  if (cur.valid && cur.algorithm_is_lease() && leased > 0) {
    throw Error(
        ErrorCode::kPolicyConflict,
        "policy \"" + spec.name + "\" (concurrency) has " + std::to_string(leased) +
            " lease units held; a replacement would misread or forget them: release them (or let "
            "their holders exit) and replace it then");
  }
  const detail::AlgoParams next_algo{
      spec.algorithm, spec.rate.count, static_cast<u64>(spec.rate.period.count()),
      spec.burst,     emission,        spec.wait};
  if (cur.valid && detail::algo_state_compatible(cur.algo, next_algo)) {
    // Same encoding: write the inactive set, then flip; readers never see
    // a mix (read_policy), and every bucket is read under the new set.
    const u64 next = detail::PolicyState::active(state) ^ 1;
    write_params(e.params[next], spec, spec.burst, emission);
    // Release: the parameter set is visible with the state that names it.
    e.state.store(detail::PolicyState::make(detail::PolicyState::changes(state) + 1, next),
                  std::memory_order_release);
    return PolicyReplacement{PolicyId{i}, true, false, 0};
  }
  // Another encoding: the name moves to a fresh entry (protocol above).
  const auto j = free_entry();
  if (!j) {
    throw Error(ErrorCode::kTableFull,
                "policy \"" + spec.name +
                    "\": changing how its buckets are stored needs a fresh policy entry, and all " +
                    std::to_string(detail::kMaxPolicies) + " entries of " + seg->name() +
                    " are used (retired ones included); recreate the segment");
  }
  publish(*j);  // (1)
  // (2) Release: pairs with the acquire load of this state in read_policy,
  // so a process that sees the retirement also sees entry j published (1).
  e.state.store(detail::PolicyState::retire(state, *j), std::memory_order_release);
  return PolicyReplacement{PolicyId{*j}, true, true, holding};
}

// An entry published by a replacement that died before retiring the old
// one (between steps 1 and 2) holds a name an earlier live entry holds too.
// Nobody was given its id (find_policy returns the earlier one) and no
// bucket is under it unless a caller guessed the index: retire it, forwarding
// to the earlier entry. The admin token is held.
std::vector<std::pair<std::uint32_t, std::uint32_t>> Limiter::Impl::orphans() const {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
  for (std::uint32_t j = 0; j < detail::kMaxPolicies; ++j) {
    // Acquire: the name was written before the state was published.
    const u64 sj = policy_table[j].state.load(std::memory_order_acquire);
    if (sj == 0) break;
    if (detail::PolicyState::retired(sj)) continue;
    const std::optional<std::uint32_t> first = find_policy(policy_name(j));
    if (first && *first < j) out.emplace_back(j, *first);
  }
  return out;
}

std::uint32_t Limiter::Impl::retire_orphans() {
  const auto found = orphans();
  for (const auto& [j, first] : found) {
    // Relaxed load: the admin token is held, so no other writer; the
    // acquire that took it ordered every earlier holder's stores first.
    const u64 sj = policy_table[j].state.load(std::memory_order_relaxed);
    // Release: as step 2 of a replacement.
    policy_table[j].state.store(detail::PolicyState::retire(sj, first), std::memory_order_release);
  }
  return static_cast<std::uint32_t>(found.size());
}

std::uint32_t Limiter::Impl::repair_orphans() {
  AdminGuard guard(*this);
  return retire_orphans();
}

// (buckets of the policy at `index` that hold state, lease units in flight),
// as counted slot by slot now: with traffic under way, a snapshot.
std::pair<u64, u64> Limiter::Impl::buckets_of(std::uint32_t index, const PolicySnapshot& p) const {
  u64 holding = 0, leased = 0;
  if (!p.valid) return {0, 0};
  const std::int64_t t = now();
  for (std::uint32_t s = 0; s < table.capacity(); ++s) {
    const detail::SlotHead& h = table.head(s);
    // Acquire: pairs with the claimer's release publication of LIVE, so
    // the word read next is the key's (its version is checked).
    const u64 meta = h.meta.load(std::memory_order_acquire);
    if (detail::Meta::state(meta) != detail::kLive || detail::Meta::policy(meta) != index) continue;
    const u64 word = h.word.load(std::memory_order_acquire);
    if (detail::Word::version(word) != detail::Meta::version(meta)) continue;  // being reclaimed
    const u64 payload = detail::Word::payload(word);
    if (p.algorithm_is_lease()) {
      leased += detail::lease_count(payload);
      if (payload != 0) ++holding;
    } else if (!detail::algo_is_full(p.algo, payload, t)) {
      ++holding;
    }
  }
  return {holding, leased};
}

PolicyId Limiter::add_policy(const PolicySpec& spec, bool replace) {
  return impl_->add_policy(spec, replace).id;
}
PolicyReplacement Limiter::replace_policy(const PolicySpec& spec) {
  return impl_->add_policy(spec, true);
}

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
    if (p.retired) continue;
    out.push_back(PolicyView{PolicyId{i}, impl_->spec_of(i, p)});
  }
  return out;
}

}  // namespace shmlimit
