// Limiter::check: audits every slot, policy and lease record of a mapped
// segment, and repairs what dead processes left half-done when asked.
#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

#include "admin/slot_audit.hpp"
#include "limiter/limiter_impl.hpp"
#include "limiter/policy_spec.hpp"
#include "shmlimit/inspect.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::PolicySnapshot;
using detail::u64;

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
    // Names are quoted escaped: a corrupt one may hold any bytes (\xff).
    const std::string name = m.policy_name(i);
    const std::string label =
        "policy " + std::to_string(i) + " (\"" + detail::escape_bytes(name) + "\"): ";
    if (const std::string bad = detail::policy_name_problem(name); !bad.empty()) {
      r.problems.push_back(label + "invalid name: " + bad);
    }
    if (!p.retired && !p.valid) r.problems.push_back(label + "corrupt parameters");
  }
  const bool may_repair = repair && !m.seg->read_only();
  // Two live entries with one name: a replacement killed between
  // publishing the new entry and retiring the old (policies.cpp).
  if (may_repair) {
    r.repaired += m.repair_orphans();
  } else {
    for (const auto& [j, first] : m.orphans()) {
      r.problems.push_back("policy " + std::to_string(j) + " (\"" + m.policy_name(j) +
                           "\"): duplicates policy " + std::to_string(first) +
                           ", left by a replacement that did not finish");
    }
  }
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
  // The slots: the one auditor the raw checker uses too (slot_audit.hpp),
  // repairing dead owners and checking each lease count on the way.
  detail::SlotAuditor audit(m.table, g, m.seed, registered,
                            [&](std::string line) { r.problems.push_back(std::move(line)); });
  if (may_repair) {
    audit.set_repair([&](std::uint32_t i) {
      detail::ClaimEvents ev;
      if (!m.table.repair_if_dead(i, &ev)) return false;
      m.count(&detail::ProcessEntry::repairs, ev.repairs);
      return true;
    });
  }
  audit.set_check_live([&](std::uint32_t i, u64 meta, u64 word) {
    return m.check_lease_count(i, meta, word, lease_costs);
  });
  audit.audit_all();
  r.live += audit.live();
  r.in_progress += audit.in_progress();
  r.repaired += audit.repaired();
  return r;
}

}  // namespace shmlimit
