// Fuzz target: a segment whose header is always valid, with fuzzed policy
// entries and slots — where the interesting parsing is (policy parameters
// read without dividing by garbage, key lengths clamped, generations and
// versions, claim tokens of dead or live processes, probe windows). The
// harness builds the header itself from a small prefix, so no input is
// wasted on the magic and fingerprint checks.
//
// Input layout (TailInput below; shorter inputs are zero-padded):
//   [0, 8)    hash_seed              (a library-made seed keeps its keys findable)
//   [8]       geometry: slot_bytes = {64, 128, 256}[b % 3], capacity = 16 << (b / 3 % 3)
//   [9]       max_probe = 1 + b % capacity
//   [10, 18)  decision time (ns since the epoch) for acquire_at
//   [18]      cost (mod 8)
//   [19, 531) policy entries 0..3 (4 x 128 bytes, at policy_offset)
//   [531, ..) the slots (capacity x slot_bytes bytes, at slot_offset)
//
//   fuzz/corpus/segment_tail/       seed corpus (library-made, fuzz/make_seeds.cpp)
//   fuzz/regressions/segment_tail/  inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh segment_tail 60   (doc/fuzzing.md)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "segment_common.hpp"

namespace shmlimit::fuzz {

struct TailInput {
  static constexpr std::size_t kSeed = 0, kGeometry = 8, kProbe = 9, kTime = 10, kCost = 18,
                               kPolicies = 19;
  static constexpr std::size_t kPolicyBytes = 4 * sizeof(detail::PolicyEntry);
  static constexpr std::size_t kSlots = kPolicies + kPolicyBytes;
};

/// The segment image a tail input stands for (exactly total_bytes long).
inline std::vector<std::uint8_t> build_image(const std::uint8_t* data, std::size_t size,
                                             std::uint64_t* t_ns, std::uint64_t* cost) {
  std::vector<std::uint8_t> in(data, data + size);
  if (in.size() < TailInput::kSlots) in.resize(TailInput::kSlots, 0);
  static constexpr std::uint32_t kSlotBytes[] = {64, 128, 256};
  const std::uint32_t slot_bytes = kSlotBytes[in[TailInput::kGeometry] % 3];
  const std::uint32_t capacity = 16u << (in[TailInput::kGeometry] / 3 % 3);
  const std::uint32_t max_probe = 1 + in[TailInput::kProbe] % capacity;
  const detail::Geometry g = detail::Geometry::compute(capacity, slot_bytes, max_probe);

  std::vector<std::uint8_t> image(g.total_bytes, 0);
  auto* h = new (image.data()) detail::Header{};
  h->layout_version = detail::kLayoutVersion;
  h->header_bytes = sizeof(detail::Header);
  h->fingerprint = detail::layout_fingerprint();
  h->capacity = capacity;
  h->slot_bytes = slot_bytes;
  h->max_probe = max_probe;
  h->max_policies = detail::kMaxPolicies;
  h->max_processes = detail::kMaxProcesses;
  h->creator_pid = 1;
  h->total_bytes = g.total_bytes;
  h->policy_offset = g.policy_offset;
  h->process_offset = g.process_offset;
  h->slot_offset = g.slot_offset;
  h->log_entries = g.log_entries;
  h->lease_offset = g.lease_offset;
  h->log_offset = g.log_offset;
  h->epoch_raw_ns = 0;  // segment time = time since boot: far from the clock horizon
  h->created_unix_ns = 0;
  std::memcpy(&h->hash_seed, in.data() + TailInput::kSeed, 8);
  h->magic.store(detail::kMagic, std::memory_order_relaxed);
  h->init_state.store(detail::kInitReady, std::memory_order_relaxed);

  std::memcpy(image.data() + g.policy_offset, in.data() + TailInput::kPolicies,
              TailInput::kPolicyBytes);
  const std::size_t slot_bytes_total = static_cast<std::size_t>(capacity) * slot_bytes;
  const std::size_t tail = std::min(slot_bytes_total, in.size() - TailInput::kSlots);
  std::memcpy(image.data() + g.slot_offset, in.data() + TailInput::kSlots, tail);
  std::memcpy(t_ns, in.data() + TailInput::kTime, 8);
  *cost = in[TailInput::kCost] % 8;
  return image;
}

}  // namespace shmlimit::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::uint64_t t_ns = 0, cost = 1;
  const std::vector<std::uint8_t> image = shmlimit::fuzz::build_image(data, size, &t_ns, &cost);
  shmlimit::fuzz::validate_raw(image.data(), image.size());
  // The header is the harness's own, valid by construction: a refusal means
  // build_image lags the layout and every input would stop at the header
  // (fuzz.replay.segment_tail fails on it in every test build).
  auto* copy = static_cast<std::byte*>(::operator new (image.size(), std::align_val_t{64}));
  std::memcpy(copy, image.data(), image.size());
  const std::string why = shmlimit::detail::Segment::validate(copy, image.size(), 0, nullptr);
  ::operator delete (copy, std::align_val_t{64});
  if (!why.empty()) {
    std::fprintf(stderr, "segment_tail harness: its own header is refused (%s)\n", why.c_str());
    std::abort();
  }
  shmlimit::fuzz::write_object(image.data(), image.size());
  shmlimit::fuzz::open_and_exercise(t_ns, cost);
  return 0;
}
