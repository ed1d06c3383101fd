// Limiter::check: audits every slot, policy and lease record of a mapped
// segment, and repairs what dead processes left half-done when asked.
#include <algorithm>
#include <cstdio>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "limiter/limiter_impl.hpp"
#include "limiter/policy_spec.hpp"

namespace shmlimit {

using detail::u64;
using detail::AtomicU64;
using detail::PolicySnapshot;

namespace {

std::string hex(u64 v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

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
    const std::string label = "policy " + std::to_string(i) + " (\"" + detail::escape_bytes(name) + "\"): ";
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
      r.problems.push_back("policy " + std::to_string(j) + " (\"" + m.policy_name(j) + "\"): duplicates policy " +
                           std::to_string(first) + ", left by a replacement that did not finish");
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
        // An impossible token (token_is_dead counts it as dead) is
        // corruption, not a crash: reported even when repaired.
        const char* impossible = detail::token_impossible(owner);
        detail::ClaimEvents ev;
        if (may_repair && m.table.repair_if_dead(i, &ev)) {
          r.repaired += ev.repairs;
          m.count(&detail::ProcessEntry::repairs, ev.repairs);
          if (impossible != nullptr) {
            r.problems.push_back(where + "impossible claim token " + hex(owner) + " (" + impossible +
                                 "): no process holds it; repaired");
          }
        } else if (!may_repair) {
          r.problems.push_back(impossible != nullptr ? where + "impossible claim token " + hex(owner) + " (" +
                                                           impossible + "): no process holds it"
                                                     : where + "claim left by dead process " +
                                                           std::to_string(detail::token_pid(owner)));
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
