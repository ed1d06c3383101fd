// The slot auditor (slot_audit.hpp).
#include "admin/slot_audit.hpp"

#include <algorithm>
#include <cstdio>
#include <string_view>
#include <tuple>

#include "segment/process.hpp"

namespace shmlimit::detail {

std::string hex(u64 v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

SlotAuditor::SlotAuditor(const Table& table, const Geometry& g, u64 seed, std::uint32_t registered,
                         Sink sink)
    : table_(table),
      capacity_(g.capacity),
      max_probe_(g.max_probe),
      key_capacity_(g.key_capacity()),
      seed_(seed),
      registered_(registered),
      readable_(g.capacity),
      sink_(std::move(sink)) {}

void SlotAuditor::audit(std::uint32_t i) {
  const SlotHead& h = table_.head(i);
  const std::string where = "slot " + std::to_string(i) + ": ";
  // Acquire: a repair or claim the owner released is visible below.
  const u64 owner = h.owner.load(std::memory_order_acquire);
  bool dead_owner_reported = false;
  if (owner != 0) {
    if (!token_is_dead(owner)) {  // a live claimer: its slot is half-written by design
      ++in_progress_;
      return;
    }
    // token_is_dead counts an impossible token as dead: it is repaired as
    // a dead one, but it is corruption, so it is reported even when repaired.
    const char* impossible = token_impossible(owner);
    const bool repaired = repair_ && repair_(i);
    if (repaired) ++repaired_;
    if (impossible != nullptr) {
      sink_(where + "impossible claim token " + hex(owner) + " (" + impossible +
            "): no process holds it" + (repaired ? "; repaired" : ""));
    } else if (!repaired) {
      sink_(where + "claim left by dead process " + std::to_string(token_pid(owner)));
    }
    dead_owner_reported = !repaired;
  }
  u64 meta = 0, word = 0, admitted = 0, denied = 0;
  char key[256];
  if (!table_.read_consistent(i, &meta, &word, key, &admitted, &denied)) {
    ++in_progress_;  // changed under every one of the seqlock's reads: a writer is at work
    return;
  }
  // Whether a token is held now (someone may have taken it since): a
  // half-written slot under a live token is a claim in progress.
  const auto claimed_now = [&] { return h.owner.load(std::memory_order_acquire) != 0; };
  const u64 state = Meta::state(meta);
  if (state == kEmpty) {
    if (meta != 0)
      sink_(where + "empty slot with non-zero fields (meta " + hex(meta) + ")");
    else if (word != 0)
      sink_(where + "empty slot whose state word was committed (" + hex(word) + ")");
    return;
  }
  if (state == kDead) return;
  if (state == kClaiming) {
    if (!claimed_now())
      sink_(where + "orphaned claim (CLAIMING with no owner)");
    else if (!dead_owner_reported)
      ++in_progress_;
    return;
  }
  // LIVE
  const auto len = static_cast<std::uint32_t>(Meta::key_len(meta));
  const auto policy = static_cast<std::uint32_t>(Meta::policy(meta));
  if (len > key_capacity_) {
    sink_(where + "key length " + std::to_string(len) + " exceeds the slot's " +
          std::to_string(key_capacity_) + " bytes");
    return;
  }
  if (policy >= registered_) {
    sink_(where + "names unregistered policy " + std::to_string(policy));
    return;
  }
  if (Word::version(word) != Meta::version(meta)) {
    if (!claimed_now()) {
      sink_(where + "state version " + std::to_string(Word::version(word)) +
            " does not match generation " + std::to_string(Meta::gen(meta)));
    } else if (!dead_owner_reported) {
      ++in_progress_;  // a reclaim between its commit and its CLAIMING store
    }
    return;
  }
  ++live_;
  if (check_live_) {
    if (const std::string problem = check_live_(i, meta, word); !problem.empty())
      sink_(where + problem);
  }
  const std::string_view k(key, len);
  const PackedKey pk(seed_, policy, k);
  if (pk.fp != Meta::fp(meta)) {
    sink_(where + "fingerprint does not match its key");
    return;
  }
  const std::uint32_t mask = capacity_ - 1;
  const std::uint32_t home = table_.home(pk.hash);
  const std::uint32_t dist = (i - home) & mask;
  if (dist >= max_probe_) {
    sink_(where + "key is " + std::to_string(dist) + " slots from home, beyond max_probe");
  } else {
    for (std::uint32_t d = 0; d < dist; ++d) {
      const std::uint32_t j = (home + d) & mask;
      // Acquire: as the reader of a probe sequence does (table.cpp, find).
      if (j < readable_ &&
          Meta::state(table_.head(j).meta.load(std::memory_order_acquire)) == kEmpty) {
        sink_(where + "key is unreachable: slot " + std::to_string(j) + " before it is empty");
        break;
      }
    }
  }
  seen_.push_back(Seen{policy, std::string(k), i});
}

void SlotAuditor::audit_all() {
  const std::uint32_t n = std::min(readable_, capacity_);
  for (std::uint32_t i = 0; i < n; ++i) audit(i);
  std::sort(seen_.begin(), seen_.end(), [](const Seen& a, const Seen& b) {
    return std::tie(a.policy, a.key, a.slot) < std::tie(b.policy, b.key, b.slot);
  });
  for (std::size_t i = 1; i < seen_.size(); ++i) {
    if (seen_[i].policy == seen_[i - 1].policy && seen_[i].key == seen_[i - 1].key) {
      sink_("slots " + std::to_string(seen_[i - 1].slot) + " and " + std::to_string(seen_[i].slot) +
            " hold the same key (policy " + std::to_string(seen_[i].policy) + ")");
    }
  }
}

}  // namespace shmlimit::detail
