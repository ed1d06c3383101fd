// The byte layout of a shmlimit segment. doc/segment-format.md describes the
// same layout for readers that are not this code; change both together and
// bump kLayoutVersion on any change.
//
// Invariants
//   (1) Nothing in the segment is a pointer: only offsets and indices, and a
//       process derives every offset from its own validated copy of the
//       header (Geometry), never from the live header after open.
//   (2) Every atomic placed in the segment is lock-free by construction
//       (static_asserts below): a lock-based std::atomic would keep its lock
//       in process-local memory and not be atomic across processes.
//   (3) All-zero bytes are a valid initial value for every field: a freshly
//       truncated segment is a table of EMPTY slots (generation 0).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "algorithms/state_word.hpp"

namespace shmlimit::detail {

using AtomicU64 = std::atomic<std::uint64_t>;
using AtomicU32 = std::atomic<std::uint32_t>;
static_assert(AtomicU64::is_always_lock_free,
              "64-bit atomics must be lock-free to be shared across processes");
static_assert(AtomicU32::is_always_lock_free,
              "32-bit atomics must be lock-free to be shared across processes");
static_assert(sizeof(AtomicU64) == 8 && alignof(AtomicU64) == 8,
              "a shared atomic is exactly its value");
static_assert(sizeof(AtomicU32) == 4, "a shared atomic is exactly its value");

inline constexpr u64 kMagic = 0x54494d494c4d4853ULL;  // "SHMLIMIT" read as little-endian bytes
// A segment's kind is its magic: the same header, geometry and table serve
// a limiter segment and the hybrid tier's lease pool (src/redis/lease_pool.hpp),
// and each refuses the other by name rather than as "bad magic".
inline constexpr u64 kLeasePoolMagic =
    0x455341454c4d4853ULL;  // "SHMLEASE" read as little-endian bytes
enum class SegmentKind : u32 {
  kLimiter = 0,    // a Limiter's segment (kMagic)
  kLeasePool = 1,  // a HybridLimiter's NAME.lease (kLeasePoolMagic)
};
inline constexpr u64 magic_of(SegmentKind kind) {
  return kind == SegmentKind::kLeasePool ? kLeasePoolMagic : kMagic;
}
inline constexpr const char* describe(SegmentKind kind) {
  return kind == SegmentKind::kLeasePool ? "a hybrid lease pool (HybridLimiter's NAME.lease)"
                                         : "a limiter segment";
}
// 2: lease records, sliding-log region; 3: retired policy entries, counter blocks;
// 4: the short-key hash; 5: segment time is CLOCK_MONOTONIC_RAW (doc/segment-format.md)
inline constexpr u32 kLayoutVersion = 5;
inline constexpr u32 kMaxPolicies = 64;      // policy index: 6 bits of the slot meta word
inline constexpr u32 kMaxProcesses = 256;    // process registry entries (entry 0 = shared overflow)
inline constexpr u32 kPolicyNameBytes = 32;  // 31 characters and a NUL
inline constexpr u32 kSlotHeadBytes = 40;    // meta, word, owner, admitted, denied
inline constexpr u32 kMinCapacity = 16;
inline constexpr u32 kMaxCapacity = 1u << 28;
inline constexpr u32 kLeaseRecords =
    64;  // lease records per process registry entry (bits of LeaseArea::used)
inline constexpr u32 kCounterBlocks = 512;  // per-policy counter blocks (block 0 = shared overflow)

/// Init states of Header::init_state.
inline constexpr u32 kInitZero = 0;   // freshly truncated, creator still writing
inline constexpr u32 kInitReady = 2;  // every field valid (release-published)

// ---------------------------------------------------------------------------
// Header: one page at offset 0.
struct alignas(64) Header {
  // Identity, written once by the creator before init_state is published.
  AtomicU64 magic;     // kMagic
  u32 layout_version;  // kLayoutVersion
  u32 header_bytes;    // sizeof(Header)
  u64 fingerprint;     // layout_fingerprint()
  u32 capacity;        // slots, a power of two
  u32 slot_bytes;      // 64, 128 or 256
  u32 max_probe;       // longest probe sequence, in slots
  u32 max_policies;    // kMaxPolicies
  u32 max_processes;   // kMaxProcesses
  u32 creator_pid;
  u64 total_bytes;               // size of the whole segment
  u64 policy_offset;             // byte offset of PolicyEntry[max_policies]
  u64 process_offset;            // byte offset of ProcessEntry[max_processes]
  u64 slot_offset;               // byte offset of the slot array
  std::int64_t epoch_raw_ns;     // CLOCK_MONOTONIC_RAW at creation: time 0 of every bucket
  std::int64_t created_unix_ns;  // CLOCK_REALTIME at creation (display only)
  u64 hash_seed;                 // random, per segment: keys hash differently per segment
  AtomicU32 init_state;          // kInitZero -> kInitReady (release)
  u32 log_entries;   // sliding-log entries per slot, 0 .. kMaxLogEntries (0: no log region)
  u64 lease_offset;  // byte offset of LeaseArea[max_processes]
  u64 log_offset;    // byte offset of the sliding-log region (capacity * log_entries words)
  // Serialises policy-table writers. 0 = free, else a ProcessToken; a dead
  // holder is detected and replaced (no lock a dead process can keep).
  alignas(64) AtomicU64 admin_owner;
};
static_assert(std::is_standard_layout_v<Header>, "the header is read as bytes by other processes");
static_assert(sizeof(Header) == 192, "header layout is part of the segment format");
static_assert(offsetof(Header, total_bytes) == 48 && offsetof(Header, epoch_raw_ns) == 80 &&
                  offsetof(Header, init_state) == 104 && offsetof(Header, admin_owner) == 128 &&
                  offsetof(Header, log_entries) == 108 && offsetof(Header, lease_offset) == 112 &&
                  offsetof(Header, log_offset) == 120,
              "offsets documented in doc/segment-format.md");

// ---------------------------------------------------------------------------
// Policy entry: double-buffered parameters so that a replacement never
// shows a reader a half-written set and a writer that dies mid-write
// leaves the active set intact.
struct PolicyParams {
  AtomicU64 kind;         // bits 0-7 Algorithm, bits 8-15 OnFull
  AtomicU64 count;        // rate count
  AtomicU64 period_ns;    // rate period, ns
  AtomicU64 burst;        // bucket capacity, cost units
  AtomicU64 emission_ns;  // GCRA emission interval T = ceil(period / count), ns
};
struct alignas(64) PolicyEntry {
  // 0 = unused. Otherwise a PolicyState word (below): which parameter set
  // is active, how often it changed, and whether the entry was retired by
  // a replacement that changed the state encoding. Published with release.
  AtomicU64 state;
  AtomicU64 name[kPolicyNameBytes / 8];  // NUL-padded
  PolicyParams params[2];
};
static_assert(sizeof(PolicyEntry) == 128, "policy entries are two cache lines");

// PolicyEntry::state:
//   bits 0      active parameter set (params[active])
//   bits 1-55   changes: >= 1 once the entry is in use, +1 per in-place replacement
//   bits 56-61  forward: when retired, the index of the entry that holds the name now
//   bit  62     0
//   bit  63     retired: a replacement that changed how buckets are encoded moved the
//               name to `forward` (a fresh entry, so a fresh policy index in every
//               slot's meta). A retired entry is never used again: its slots read as
//               full (reclaimable), and a PolicyId naming it follows `forward`.
// Only the holder of Header::admin_owner writes it; see limiter/policies.cpp,
// "Replacing a policy", for the protocol and its memory orders.
struct PolicyState {
  static constexpr u64 kRetired = u64{1} << 63;
  static constexpr u64 kForwardShift = 56;
  static constexpr u64 kChangesMask = (u64{1} << 55) - 1;
  static constexpr u64 make(u64 changes, u64 active) {
    return ((changes & kChangesMask) << 1) | (active & 1);
  }
  static constexpr u64 active(u64 s) { return s & 1; }
  static constexpr u64 changes(u64 s) { return (s >> 1) & kChangesMask; }
  static constexpr bool retired(u64 s) { return (s & kRetired) != 0; }
  static constexpr std::uint32_t forward(u64 s) {
    return static_cast<std::uint32_t>((s >> kForwardShift) & 0x3F);
  }
  static constexpr u64 retire(u64 s, std::uint32_t to) {
    return (s & ((u64{1} << kForwardShift) - 1)) | (u64{to & 0x3F} << kForwardShift) | kRetired;
  }
  // Bits no writer sets: bit 62, and forward on an entry that is not retired.
  static constexpr bool well_formed(u64 s) {
    return s == 0 || (changes(s) >= 1 && (s & (u64{1} << 62)) == 0 &&
                      (retired(s) || (s >> kForwardShift) == 0));
  }
};
static_assert(kMaxPolicies <= 64, "a forward index has 6 bits");
static_assert(PolicyState::forward(PolicyState::retire(PolicyState::make(5, 1), 63)) == 63 &&
                  PolicyState::changes(PolicyState::retire(PolicyState::make(5, 1), 63)) == 5 &&
                  PolicyState::well_formed(PolicyState::retire(PolicyState::make(5, 1), 63)),
              "retiring keeps the change count and names the forward entry");
static_assert(offsetof(PolicyEntry, params) == 40 && sizeof(PolicyParams) == 40,
              "offsets documented in doc/segment-format.md");

// ---------------------------------------------------------------------------
// Process registry entry: per-process event counters (never a global hot
// counter). Counters accumulate across the processes that own the entry in
// turn, so totals survive a process's death.
struct alignas(64) ProcessEntry {
  AtomicU64 owner;             // 0 = free, else the owner's ProcessToken
  AtomicU64 full_events;       // decisions that found no slot
  AtomicU64 contended_events;  // decisions that timed out behind a stalled claimer
  AtomicU64 repairs;           // half-done claims of dead processes repaired
  AtomicU64 other_events;      // key too long, clock horizon, corrupt policy
  AtomicU64 reserved[3];
};
static_assert(sizeof(ProcessEntry) == 64, "one cache line per process");

// ---------------------------------------------------------------------------
// Slot: slot_bytes bytes, 64-byte aligned, at slot_offset + index * slot_bytes.
//   +0  meta      state | key length | policy | fingerprint | generation
//   +8  word      version(8) | payload(56): the bucket's whole limiting state
//   +16 owner     claim token: 0 = free, else the ProcessToken of the claimer
//   +24 admitted  decisions admitted since the key was claimed: APPROXIMATE
//   +32 denied    decisions denied since the key was claimed: APPROXIMATE
//                 (a relaxed load and a relaxed store, no locked instruction:
//                 two processes counting on one key at once may lose one of
//                 the two increments; the exact totals are the counter
//                 blocks below)
//   +40 key       key bytes, NUL-padded, slot_bytes - 40 of them
struct SlotHead {
  AtomicU64 meta;
  AtomicU64 word;
  AtomicU64 owner;
  AtomicU64 admitted;
  AtomicU64 denied;
};
static_assert(sizeof(SlotHead) == kSlotHeadBytes, "slot head layout is part of the segment format");

// Slot states (meta bits 0-1).
enum SlotState : u64 {
  kEmpty = 0,     // never used: ends every probe sequence
  kClaiming = 1,  // an owner is writing the key; not yet visible as a bucket
  kLive = 2,      // a published key and its bucket
  kDead = 3,      // freed: reusable, does not end a probe sequence
};

// meta word:
//   bits 0-1   state
//   bits 2-9   key length in bytes (0..255)
//   bits 10-15 policy index (0..63)
//   bits 16-31 fingerprint: 16 bits of the key's hash, a cheap pre-filter
//   bits 32-63 generation: +1 each time the slot changes keys; its low 8
//              bits equal the word's version whenever the slot is quiet
struct Meta {
  static constexpr u64 make(u64 state, u64 key_len, u64 policy, u64 fp, u64 gen) {
    return state | (key_len << 2) | (policy << 10) | ((fp & 0xFFFF) << 16) | (gen << 32);
  }
  static constexpr u64 state(u64 m) { return m & 3; }
  static constexpr u64 key_len(u64 m) { return (m >> 2) & 0xFF; }
  static constexpr u64 policy(u64 m) { return (m >> 10) & 0x3F; }
  static constexpr u64 fp(u64 m) { return (m >> 16) & 0xFFFF; }
  static constexpr u64 gen(u64 m) { return m >> 32; }
  static constexpr u64 version(u64 m) { return gen(m) & 0xFF; }
  // The fields that identify which key a slot holds (all but state and gen).
  static constexpr u64 identity(u64 m) { return m & 0xFFFFFFFCULL; }
  static constexpr u64 with_state(u64 m, u64 state) { return (m & ~3ULL) | state; }
};

// word: bits 56-63 version (= low 8 bits of the slot generation that owns
// the state), bits 0-55 payload (GCRA: theoretical arrival time, ns since
// the segment epoch). The version makes a CAS prepared against one key fail
// on the slot's next key: see table.hpp, "ABA".
struct Word {
  static constexpr u64 kPayloadBits = kStatePayloadBits;  // algorithms/state_word.hpp
  static constexpr u64 kPayloadMask = kStatePayloadMask;
  static constexpr u64 make(u64 version, u64 payload) {
    return (version << 56) | (payload & kPayloadMask);
  }
  static constexpr u64 version(u64 w) { return w >> 56; }
  static constexpr u64 payload(u64 w) { return w & kPayloadMask; }
};

// kClockHorizonNs, the last time a payload can hold, and kMaxLogEntries
// (sliding-log entries per slot, Options::log_entries) come from
// algorithms/state_word.hpp.

// ---------------------------------------------------------------------------
// Concurrency leases (src/limiter/lease.hpp has the protocol). Registry entry p owns
// LeaseArea p: `used` has bit r set while record r is allocated (taken by
// CAS, only by the entry's owner or by the process recovering a dead
// owner's entry). A record names the slot whose count it holds:
//   ctl  bits 0-2   state: 0 FREE, 2 INTENT (acquire under way), 3 HELD,
//                   4 RELEASING (release under way)
//        bits 3-16  seq: +1 at every allocation; the word's pending
//                   descriptor names (entry, record, seq), so a helper
//                   never applies an old descriptor to a reused record
//        bits 17-35 low 19 bits of the slot generation the count was added to
//        bits 36-63 slot index
//   cost the cost units held (written before ctl leaves FREE)
struct LeaseRecord {
  AtomicU64 ctl;
  AtomicU64 cost;
};
struct alignas(64) LeaseArea {
  AtomicU64 used;  // bit r: record r allocated
  AtomicU64 reserved[7];
  LeaseRecord records[kLeaseRecords];
};
static_assert(sizeof(LeaseRecord) == 16 && sizeof(LeaseArea) == 64 + 16 * kLeaseRecords,
              "lease layout is part of the segment format");
static_assert(kLeaseRecords == 64, "LeaseArea::used is one 64-bit mask");

// ---------------------------------------------------------------------------
// Counter blocks: exact, monotonic per-policy totals of admitted and denied
// decisions (src/limiter/counters.hpp has the protocol), kCounterBlocks of
// them at Geometry::counters_offset.
//   (1) Block b > 0 has exactly one writer at a time: the thread that took it
//       by CAS of `owner` from 0 (or from a dead process's token) to its
//       process's token. The writer adds with a relaxed load and a relaxed
//       store of its own counter: no locked instruction, and no cache line
//       shared with another writer (a block is 128-byte aligned, and
//       adjacent-line prefetch pairs 128-byte lines).
//   (2) Blocks are never zeroed or folded: a block freed by its owner (owner
//       = 0) or left by a dead process is taken over by a later registrant,
//       who keeps adding to the values it finds. Every counter therefore
//       only grows, and a reader's sum over all blocks never decreases.
//   (3) Block 0 is shared by the threads that find no free block: they add
//       with fetch_add (exact, but a shared line).
struct PolicyCounter {
  AtomicU64 admitted;  // decisions admitted by this policy, counted by the block's owners
  AtomicU64 denied;    // decisions denied by this policy (each refusing limit of an acquire_many)
};
struct alignas(128) CounterBlock {
  AtomicU64 owner;  // 0 = free, else the ProcessToken of the process whose thread writes the block
  AtomicU64 reserved[15];
  PolicyCounter counts[kMaxPolicies];  // indexed by policy index
};
static_assert(sizeof(PolicyCounter) == 16 && sizeof(CounterBlock) == 128 + 16 * kMaxPolicies &&
                  offsetof(CounterBlock, counts) == 128,
              "counter block layout is part of the segment format");
static_assert(sizeof(CounterBlock) % 128 == 0,
              "no two blocks share a cache line or an adjacent-line pair");

// Sliding log: slot i owns log_entries words at log_offset + i * log_entries
// * 8. An entry is version(8) << 56 | (t + 1): one admission at t ns since
// the epoch, made while the slot's word had `version`; 0 = never written.
// An entry whose version differs from the slot's is not this key's.

// ---------------------------------------------------------------------------
// Recent-denials ring: kDenialRingEntries entries after everything else, at
// Geometry::denials_offset. Written only on denied decisions (never on the
// admit path); readers copy entries without blocking writers. src/table/denials.hpp
// holds the protocol; doc/segment-format.md the bytes.
inline constexpr u32 kDenialRingEntries = 1024;  // a power of two
inline constexpr u32 kDenialKeyBytes = 80;       // key bytes kept per entry (the rest is cut)
static_assert((kDenialRingEntries & (kDenialRingEntries - 1)) == 0,
              "ring index is ticket & (entries - 1)");
struct alignas(64) DenialRingHead {
  AtomicU64 next;  // tickets handed out so far; entry of ticket t: t & (entries - 1)
  AtomicU64 reserved[7];
};
// An entry's seq: 0 never written; 2t+2 (even) once ticket t is complete;
// while ticket t is written, odd and naming its writer:
//   pid << 42 | (t mod 2^41) << 1 | 1
// so a writer that meets an unfinished entry can tell a live writer (whose
// fields it must not mix with its own, however long it was preempted) from
// a dead one (whose entry it takes over). Linux pids are below 2^22.
inline constexpr u64 kDenialSeqTicketBits = 41;
inline constexpr u64 kDenialSeqTicketMask = (u64{1} << kDenialSeqTicketBits) - 1;
inline constexpr u64 kDenialSeqPidShift = kDenialSeqTicketBits + 1;
inline constexpr u64 denial_seq_complete(u64 ticket) { return 2 * ticket + 2; }
inline constexpr u64 denial_seq_writing(u64 ticket, u32 pid) {
  return (u64{pid} << kDenialSeqPidShift) | ((ticket & kDenialSeqTicketMask) << 1) | 1;
}
inline constexpr bool denial_seq_is_writing(u64 seq) { return (seq & 1) != 0; }
inline constexpr u64 denial_seq_ticket(u64 seq) {  // a writing seq keeps t mod 2^41 only
  return denial_seq_is_writing(seq) ? (seq >> 1) & kDenialSeqTicketMask : seq / 2 - 1;
}
inline constexpr u32 denial_seq_writer(u64 seq) {
  return static_cast<u32>(seq >> kDenialSeqPidShift);
}
static_assert(denial_seq_writer(denial_seq_writing(123, (1u << 22) - 1)) == (1u << 22) - 1 &&
                  denial_seq_ticket(denial_seq_writing(123, 77)) == 123 &&
                  denial_seq_ticket(denial_seq_complete(123)) == 123,
              "the largest Linux pid and the ticket survive the packing");
struct alignas(64) DenialEntry {
  AtomicU64 seq;             // see denial_seq_* above
  AtomicU64 time_ns;         // ns since the segment epoch (the decision's `now`)
  AtomicU64 info;            // bits 0-7 policy index, 8-15 Reason, 16-31 key length, 32-63 pid
  AtomicU64 cost;            // cost units asked for
  AtomicU64 retry_after_ns;  // the decision's retry_after, ns (saturated)
  AtomicU64 repeats;  // more denials of the key this record stands for (DenialFold, denials.hpp)
  AtomicU64 key[kDenialKeyBytes / 8];  // the first kDenialKeyBytes key bytes, NUL-padded
};
static_assert(sizeof(DenialRingHead) == 64 && sizeof(DenialEntry) == 128,
              "ring layout is part of the segment format");
inline constexpr u64 kDenialRingBytes =
    sizeof(DenialRingHead) + u64{kDenialRingEntries} * sizeof(DenialEntry);

/// A fingerprint of every size, alignment and offset above. Two builds that
/// disagree on any of them refuse each other's segments.
constexpr u64 layout_fingerprint() {
  const u64 facts[] = {
      kLayoutVersion,
      sizeof(Header),
      alignof(Header),
      offsetof(Header, init_state),
      offsetof(Header, admin_owner),
      offsetof(Header, hash_seed),
      sizeof(PolicyEntry),
      alignof(PolicyEntry),
      offsetof(PolicyEntry, params),
      sizeof(PolicyParams),
      sizeof(ProcessEntry),
      sizeof(SlotHead),
      offsetof(SlotHead, word),
      offsetof(SlotHead, owner),
      kMaxPolicies,
      kMaxProcesses,
      kPolicyNameBytes,
      Word::kPayloadBits,
      offsetof(Header, log_entries),
      offsetof(Header, log_offset),
      sizeof(LeaseRecord),
      sizeof(LeaseArea),
      kLeaseRecords,
      kMaxLogEntries,
      kDenialRingEntries,
      kDenialKeyBytes,
      sizeof(DenialRingHead),
      sizeof(DenialEntry),
      offsetof(DenialEntry, key),
      PolicyState::kRetired,
      PolicyState::kForwardShift,
      kCounterBlocks,
      sizeof(CounterBlock),
      alignof(CounterBlock),
      offsetof(CounterBlock, counts),
      sizeof(PolicyCounter),
  };
  u64 h = 0xcbf29ce484222325ULL;  // FNV-1a over the facts
  for (u64 f : facts) {
    for (int i = 0; i < 8; ++i) {
      h ^= (f >> (8 * i)) & 0xFF;
      h *= 0x100000001b3ULL;
    }
  }
  return h;
}

/// Where everything is, computed from (capacity, slot_bytes): the one
/// place offsets are derived, used both to create and to validate.
struct Geometry {
  u32 capacity = 0;
  u32 slot_bytes = 0;
  u32 max_probe = 0;
  u64 policy_offset = 0;
  u64 process_offset = 0;
  u64 slot_offset = 0;
  u64 total_bytes = 0;
  u64 denials_offset = 0;   // DenialRingHead, then DenialEntry[kDenialRingEntries]
  u32 log_entries = 0;      // sliding-log entries per slot
  u64 lease_offset = 0;     // LeaseArea[kMaxProcesses]
  u64 log_offset = 0;       // u64[capacity * log_entries]
  u64 counters_offset = 0;  // CounterBlock[kCounterBlocks]

  static Geometry compute(u32 capacity, u32 slot_bytes, u32 max_probe, u32 log_entries = 0) {
    Geometry g;
    g.capacity = capacity;
    g.slot_bytes = slot_bytes;
    g.max_probe = max_probe;
    g.policy_offset = 4096;  // the header owns the first page
    g.process_offset = g.policy_offset + u64{kMaxPolicies} * sizeof(PolicyEntry);
    g.slot_offset = g.process_offset + u64{kMaxProcesses} * sizeof(ProcessEntry);
    g.total_bytes = g.slot_offset + u64{capacity} * slot_bytes;
    // Lease records, then the sliding-log region, after the slots.
    g.log_entries = log_entries;
    g.lease_offset = g.total_bytes;
    g.log_offset = g.lease_offset + u64{kMaxProcesses} * sizeof(LeaseArea);
    g.total_bytes = g.log_offset + u64{capacity} * log_entries * 8;
    // Counter blocks, 128-byte aligned (every region before ends on a
    // multiple of 128: capacity >= 16 words of 8 bytes), then the ring.
    g.counters_offset = (g.total_bytes + 127) & ~u64{127};
    g.total_bytes = g.counters_offset + u64{kCounterBlocks} * sizeof(CounterBlock);
    // The denials ring goes last, after every other region.
    g.denials_offset = g.total_bytes;
    g.total_bytes += kDenialRingBytes;
    return g;
  }
  u32 key_capacity() const { return slot_bytes - kSlotHeadBytes; }
};

}  // namespace shmlimit::detail
