// Limiter: policies + table + clock -> Decision. This file holds the
// lifecycle (create, open, remove), the per-process registry entry, reset
// and the accessors; limiter_impl.hpp lists where the other parts live.
#include <algorithm>
#include <string>
#include <thread>

#include "limiter/limiter_impl.hpp"

namespace shmlimit {

using detail::PolicySnapshot;
using detail::u64;

// ---- per-process event counters -----------------------------------------
detail::ProcessEntry& Limiter::Impl::process_entry() const noexcept {
  // The pid from the cached token (recomputed after fork): getpid() is a
  // system call, and every lease looks its process entry up.
  const auto pid = detail::token_pid(detail::self_token());
  const u64 cached = process_slot.load(std::memory_order_relaxed);
  if (cached != 0 && (cached >> 32) == pid) return process_table[cached & 0xFFFFFFFF];
  const detail::ProcessToken me = detail::self_token();
  std::uint32_t chosen = 0;  // entry 0: shared overflow when the registry is full
  for (std::uint32_t i = 1; i < detail::kMaxProcesses && chosen == 0; ++i) {
    u64 owner = process_table[i].owner.load(std::memory_order_relaxed);
    if (owner == me) {
      chosen = i;
      break;
    }
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
          process_table[i].owner.store(
              me, std::memory_order_release);  // Release: the records are recovered
        }
        chosen = i;
      }
    }
  }
  process_slot.store((u64{pid} << 32) | chosen, std::memory_order_relaxed);
  return process_table[chosen];
}

// ---- Limiter --------------------------------------------------------------
Limiter::Limiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Limiter::Limiter(Limiter&&) noexcept = default;
Limiter& Limiter::operator=(Limiter&&) noexcept = default;
Limiter::~Limiter() = default;

Limiter Limiter::create(const Options& options) {
  return Limiter(std::make_unique<Impl>(
      detail::Segment::open(options, detail::Segment::Mode::kCreate), options));
}
Limiter Limiter::open(const Options& options) {
  return Limiter(std::make_unique<Impl>(
      detail::Segment::open(options, detail::Segment::Mode::kOpen), options));
}
Limiter Limiter::open_or_create(const Options& options) {
  return Limiter(std::make_unique<Impl>(
      detail::Segment::open(options, detail::Segment::Mode::kOpenOrCreate), options));
}
bool Limiter::remove(std::string_view name) { return detail::Segment::remove(std::string(name)); }

std::uint64_t Limiter::reset(std::optional<PolicyId> policy, std::optional<std::string_view> key) {
  Impl& m = *impl_;
  if (m.seg->read_only())
    throw Error(ErrorCode::kReadOnly, "cannot reset buckets through a read-only handle");
  if (key && !policy) throw Error(ErrorCode::kInvalidArgument, "reset of a key needs its policy");
  std::uint64_t forgotten = 0;
  detail::ClaimEvents ev;
  // An id from before a replacement names the entry holding the policy now.
  if (policy) policy = PolicyId{m.resolved(policy->index)};
  if (policy && key) {
    PolicySnapshot p;
    if (!m.load_policy(policy->index, &p))
      throw Error(ErrorCode::kInvalidArgument, "no such policy");
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

}  // namespace shmlimit
