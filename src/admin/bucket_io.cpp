// Limiter::Impl::store_bucket: writes one bucket's state as import_state
// (state_import.cpp) asks, through the same version-checked CAS as a decision.
#include <string>

#include "limiter/limiter_impl.hpp"

namespace shmlimit {

using detail::AtomicU64;
using detail::PolicySnapshot;
using detail::u64;

Limiter::Impl::StoreResult Limiter::Impl::store_bucket(std::uint32_t policy, std::string_view key,
                                                       u64 state, u64 admitted, u64 denied,
                                                       bool replace,
                                                       std::span<const std::int64_t> log) {
  Impl& m = *this;
  if (m.seg->read_only())
    throw Error(ErrorCode::kReadOnly, "cannot import buckets through a read-only handle");
  if (key.size() > m.table.key_capacity() || policy >= detail::kMaxPolicies)
    return StoreResult::kNoRoom;
  const detail::PackedKey pk(m.seed, policy, key);
  detail::ClaimEvents ev;
  StoreResult result = StoreResult::kNoRoom;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    detail::SlotRef ref;
    if (!m.table.find(pk, &ref)) {
      const auto r = m.table.claim(pk, m.now(), state, m, m.claim_timeout_ns, &ref, &ev);
      if (r == detail::Table::ClaimResult::kFull || r == detail::Table::ClaimResult::kContended)
        break;
      if (r == detail::Table::ClaimResult::kClaimed) {
        detail::SlotHead& h = m.table.head(ref.index);
        // Relaxed: statistics.
        h.admitted.store(admitted, std::memory_order_relaxed);
        h.denied.store(denied, std::memory_order_relaxed);
        m.log_store(policy, ref.index, detail::Word::version(ref.word), log);
        result = StoreResult::kStored;
        break;
      }
    }
    if (!replace) {
      result = StoreResult::kKept;
      break;
    }
    detail::SlotHead& h = m.table.head(ref.index);
    const u64 version = detail::Word::version(ref.word);
    u64 w = ref.word;
    // Relaxed (Table::update's default), as every decision's CAS: the word
    // is the bucket's whole state, and its version makes the CAS fail on a
    // reclaimed slot.
    if (m.table.update(ref.index, version, &w, [&](u64) noexcept {
          return detail::SlotStep::store(state);
        }) == detail::UpdateResult::kStored) {
      // Relaxed: statistics.
      h.admitted.store(admitted, std::memory_order_relaxed);
      h.denied.store(denied, std::memory_order_relaxed);
      m.log_store(policy, ref.index, version, log);
      result = StoreResult::kStored;
      break;
    }
    // The slot was reclaimed for another key meanwhile: look again.
  }
  m.count(&detail::ProcessEntry::repairs, ev.repairs);
  return result;
}

}  // namespace shmlimit
