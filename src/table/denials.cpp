// The recent-denials ring (denials.hpp states the protocol and invariants).
#include "table/denials.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>

#include "segment/process.hpp"
#include "table/hash.hpp"

namespace shmlimit::detail {
namespace {

constexpr u64 kKeyWords = kDenialKeyBytes / 8;

// True when `pid` names no live process (a zombie counts as dead: it can
// no longer store). Without a start time a reused pid reads as alive, which
// costs entries, never correctness.
bool writer_is_dead(u32 pid) noexcept { return pid_is_dead(pid); }

}  // namespace

DenialRing DenialRing::at(std::byte* base, const Geometry& geometry) noexcept {
  std::byte* p = base + geometry.denials_offset;
  return DenialRing(reinterpret_cast<DenialRingHead*>(p),
                    reinterpret_cast<DenialEntry*>(p + sizeof(DenialRingHead)));
}

std::uint64_t DenialRing::next_ticket() const noexcept {
  // Acquire: not needed for the entries (each seq publishes its own), but
  // a reader that saw a ticket handed out then sees at least that count.
  return head_->next.load(std::memory_order_acquire);
}

void DenialRing::record(std::int64_t time_ns, std::uint32_t policy, Reason reason,
                        std::string_view key, std::uint64_t cost, Nanos retry_after,
                        std::uint64_t repeats) noexcept {
  // Relaxed: the ticket only chooses the entry; the entry's seq publishes
  // its content. This is the ring's one shared counter, touched on denials only.
  const u64 t = head_->next.fetch_add(1, std::memory_order_relaxed);
  DenialEntry& e = entry(t);
  const u32 self = token_pid(self_token());
  const u64 writing = denial_seq_writing(t, self);
  u64 s = e.seq.load(std::memory_order_relaxed);
  for (;;) {
    if (!denial_seq_is_writing(s)) {
      if (s != 0 && denial_seq_ticket(s) >= t)
        return;  // a newer ticket completed here: we were lapped
    } else {
      // How far our ticket is past the unfinished one (mod 2^41).
      const u64 ahead = (t - denial_seq_ticket(s)) & kDenialSeqTicketMask;
      if (ahead == 0 || ahead > (kDenialSeqTicketMask >> 1)) return;  // it is newer: we were lapped
      // A live writer, however long preempted, will still store its
      // fields: drop ours rather than mix the two. A dead one's entry is
      // taken over.
      const u32 writer = denial_seq_writer(s);
      if (writer == self || !writer_is_dead(writer)) return;
    }
    // Relaxed: the release fence below orders this store before the fields.
    if (e.seq.compare_exchange_weak(s, writing, std::memory_order_relaxed,
                                    std::memory_order_relaxed))
      break;
  }
  // Release fence: a reader that sees any field below also sees seq odd
  // (or newer) when it re-reads seq after its acquire fence.
  std::atomic_thread_fence(std::memory_order_release);
  const auto len = static_cast<u64>(std::min<std::size_t>(key.size(), 0xFFFF));
  const u64 pid = self;
  e.time_ns.store(static_cast<u64>(std::max<std::int64_t>(time_ns, 0)), std::memory_order_relaxed);
  e.info.store(u64{policy & 0xFF} | (u64{static_cast<std::uint8_t>(reason)} << 8) | (len << 16) |
                   (pid << 32),
               std::memory_order_relaxed);
  e.cost.store(cost, std::memory_order_relaxed);
  e.retry_after_ns.store(static_cast<u64>(std::max<Nanos::rep>(retry_after.count(), 0)),
                         std::memory_order_relaxed);
  e.repeats.store(repeats, std::memory_order_relaxed);
  // Only the words that hold key bytes: the reader keeps min(key_len,
  // kDenialKeyBytes) bytes and zeroes the rest of its copy (read()). Each
  // word loaded straight from the key (load_word_upto8 for the tail): bytes
  // copied into a stack buffer and read back as words stalled the
  // store-forwarding of every short key.
  const std::size_t kept = std::min<std::size_t>(key.size(), kDenialKeyBytes);
  const std::size_t full = kept / 8;
  for (std::size_t i = 0; i < full; ++i) {
    u64 w;
    std::memcpy(&w, key.data() + 8 * i, 8);
    e.key[i].store(w, std::memory_order_relaxed);
  }
  if (const std::size_t tail = kept % 8; tail != 0) {
    e.key[full].store(load_word_upto8(key.data() + 8 * full, static_cast<std::uint32_t>(tail)),
                      std::memory_order_relaxed);
  }
  // Release: the fields are visible to whoever reads seq == 2t+2 with
  // acquire. A plain store, not a CAS: while this process lives no other
  // writer touches the entry (only one that judged this writer dead takes
  // it over, (2)), so nothing can have changed seq since our claim. Only
  // when the segment's users do not share one pid namespace can a live
  // writer be judged dead; then two writers' fields may mix in one entry,
  // which a final CAS would not prevent either (the taker's own CAS would
  // still complete it).
  e.seq.store(denial_seq_complete(t), std::memory_order_release);
  // The ring (128 KiB) does not stay in L1, and every ticket writes another
  // entry: without this the next denial's CAS of seq and its stores wait
  // for two lines from L2 or memory. Prefetch (for writing) the entry the
  // next ticket will most likely be, ours again when one process is being
  // refused in a loop. A hint only: no store, nothing to order.
  const DenialEntry& next = entry(t + 1);
  __builtin_prefetch(&next, 1);
  __builtin_prefetch(reinterpret_cast<const char*>(&next) + 64, 1);
}

DenialRead DenialRing::read(std::uint64_t since) const {
  DenialRead out;
  const u64 head = next_ticket();
  u64 c = std::min<u64>(since, head);
  if (head - c > kDenialRingEntries) {
    out.lost += head - kDenialRingEntries - c;  // overwritten for certain
    c = head - kDenialRingEntries;
  }
  out.records.reserve(static_cast<std::size_t>(head - c));
  for (u64 t = c; t < head; ++t) {
    const DenialEntry& e = entry(t);
    // Acquire: pairs with the writer's release of 2t+2; the fields read
    // below are at least that complete write's.
    const u64 s1 = e.seq.load(std::memory_order_acquire);
    if (s1 != denial_seq_complete(t)) {  // overwritten by a newer ticket, or not complete yet
      ++out.lost;
      continue;
    }
    DenialRecord r;
    r.ticket = t;
    const u64 time = e.time_ns.load(std::memory_order_relaxed);
    const u64 info = e.info.load(std::memory_order_relaxed);
    r.cost = e.cost.load(std::memory_order_relaxed);
    r.retry_after_ns = e.retry_after_ns.load(std::memory_order_relaxed);
    r.repeats = e.repeats.load(std::memory_order_relaxed);
    u64 words[kKeyWords];
    for (u64 i = 0; i < kKeyWords; ++i) words[i] = e.key[i].load(std::memory_order_relaxed);
    // Acquire fence: the loads above complete before seq is read again; an
    // unchanged seq proves no writer touched the entry in between.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (e.seq.load(std::memory_order_relaxed) != s1) {
      ++out.lost;  // torn: a newer ticket started writing while we copied
      continue;
    }
    r.time_ns = static_cast<std::int64_t>(std::min<u64>(time, static_cast<u64>(kClockHorizonNs)));
    r.policy = static_cast<std::uint32_t>(info & 0xFF);
    r.reason = static_cast<Reason>((info >> 8) & 0xFF);  // an unknown value prints as "unknown"
    r.key_len = static_cast<std::uint32_t>((info >> 16) & 0xFFFF);
    r.pid = static_cast<std::uint32_t>(info >> 32);
    r.retry_after_ns =
        std::min<u64>(r.retry_after_ns, static_cast<u64>(std::numeric_limits<std::int64_t>::max()));
    // A count no thread makes (2^40 folded denials), so sums over the
    // ring's entries cannot wrap.
    r.repeats = std::min<u64>(r.repeats, kDenialMaxRepeats);
    // The bytes past the key are another record's (the writer stores only
    // the words its key fills): zeroed in the copy.
    const std::size_t kept = std::min<std::size_t>(r.key_len, kDenialKeyBytes);
    std::memcpy(r.key, words, kept);
    out.records.push_back(r);
  }
  out.next = head;
  return out;
}

DenialFold::Step DenialFold::step(std::uint64_t handle_id, std::string_view key,
                                  const Denial& d) noexcept {
  Step out;
  const bool short_key = key.size() <= 16;
  std::uint64_t w[2] = {0, 0};
  if (short_key)
    load_words_upto16(key.data(), static_cast<std::uint32_t>(key.size()), &w[0], &w[1]);
  const bool same = handle == handle_id && handle != 0 && short_key && len == key.size() &&
                    words[0] == w[0] && words[1] == w[1] && last.policy == d.policy;
  if (same && d.time_ns >= recorded_at && d.time_ns - recorded_at < kDenialFoldNs) {
    ++folded;
    last = d;
    out.folded = true;
    return out;
  }
  if (same) {
    out.repeats = folded;  // the key's next record stands for the folded ones too
  } else if (folded > 0 && handle == handle_id) {
    // Another key: the previous one's last folded denial is recorded first.
    out.has_flush = true;
    out.flush = last;
    out.flush_repeats = folded - 1;
    out.flush_len = len;
    out.flush_words[0] = words[0];
    out.flush_words[1] = words[1];
  }
  folded = 0;
  if (!short_key) {
    handle = 0;  // nothing to fold into: the next denial starts afresh
    return out;
  }
  handle = handle_id;
  len = static_cast<std::uint32_t>(key.size());
  words[0] = w[0];
  words[1] = w[1];
  recorded_at = d.time_ns;
  last = d;
  return out;
}

}  // namespace shmlimit::detail
