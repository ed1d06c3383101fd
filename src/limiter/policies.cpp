// The policy table: add and replace policies, find them by name, and the
// admin token that serialises writers across processes (limiter_impl.hpp).
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "limiter/limiter_impl.hpp"
#include "limiter/policy_spec.hpp"

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
    if (policy_table[i].state.load(std::memory_order_acquire) == 0) return std::nullopt;  // entries fill in order
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

void Limiter::Impl::write_params(detail::PolicyParams& p, const PolicySpec& s, u64 burst, u64 emission) {
  // Relaxed: published by the release store of the entry's state.
  p.kind.store(static_cast<u64>(s.algorithm) | (static_cast<u64>(s.on_full) << 8) | (static_cast<u64>(s.wait) << 16),
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

PolicyId Limiter::Impl::add_policy(PolicySpec spec, bool replace) {
  spec = normalize_policy_spec(spec);  // the one check of a spec (policy_spec.cpp)
  if (seg->read_only()) throw Error(ErrorCode::kReadOnly, "cannot add a policy through a read-only handle");
  if (spec.algorithm == Algorithm::kSlidingLog && spec.rate.count > log_entries) {
    throw Error(ErrorCode::kInvalidArgument,
                "policy \"" + spec.name + "\" (sliding_log, " + format_rate(spec.rate) + ") keeps " +
                    std::to_string(spec.rate.count) + " admissions per key but " + seg->name() + " has log_entries = " +
                    std::to_string(log_entries) + ": create the segment with log_entries >= " +
                    std::to_string(spec.rate.count) + " (Options::log_entries, or [segment] log_entries in the config)");
  }
  const u64 emission = detail::gcra_emission(spec.rate.count, static_cast<u64>(spec.rate.period.count()));
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

}  // namespace shmlimit
