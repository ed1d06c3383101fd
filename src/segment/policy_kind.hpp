// The codec of one packed field of the segment: a policy entry's `kind`
// word (PolicyParams::kind, layout.hpp; doc/segment-format.md). Every
// writer and reader of the word goes through it -- the policy writer
// (limiter/policies.cpp), the decision's reader (limiter/limiter_impl.hpp),
// Limiter::check and the raw segment checker (admin/), export and import --
// so that what one packs the others cannot read differently.
//
//   bits 0-7    Algorithm: 1 gcra .. 8 sliding_log
//   bits 8-15   OnFull: 0 allow, 1 deny
//   bits 16-23  LogWait: 0 exact, 1 drf -- sliding_log only, 0 for every
//               other algorithm
//   bits 24-63  0
#pragma once

#include <cstdint>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

struct PolicyKind {
  Algorithm algorithm = Algorithm::kGcra;
  OnFull on_full = OnFull::kAllow;
  LogWait wait = LogWait::kExact;

  static constexpr std::uint64_t pack(const PolicyKind& k) noexcept {
    return static_cast<std::uint64_t>(k.algorithm) | (static_cast<std::uint64_t>(k.on_full) << 8) |
           (static_cast<std::uint64_t>(k.wait) << 16);
  }
  /// The fields as stored, whatever they hold: problem() says whether a
  /// valid writer could have written them.
  static constexpr PolicyKind unpack(std::uint64_t word) noexcept {
    return PolicyKind{static_cast<Algorithm>(word & 0xFF), static_cast<OnFull>((word >> 8) & 0xFF),
                      static_cast<LogWait>((word >> 16) & 0xFF)};
  }
  /// nullptr when `word` is one that pack() produces for a valid policy;
  /// otherwise a sentence naming the first field that is not.
  static constexpr const char* problem(std::uint64_t word) noexcept {
    const std::uint64_t algorithm = word & 0xFF;
    if (algorithm < static_cast<std::uint64_t>(Algorithm::kGcra) ||
        algorithm > static_cast<std::uint64_t>(Algorithm::kSlidingLog)) {
      return "the algorithm (bits 0-7) is not 1 .. 8";
    }
    if (((word >> 8) & 0xFF) > static_cast<std::uint64_t>(OnFull::kDeny)) {
      return "on_full (bits 8-15) is not 0 (allow) or 1 (deny)";
    }
    const std::uint64_t wait = (word >> 16) & 0xFF;
    if (wait > static_cast<std::uint64_t>(LogWait::kDrf))
      return "the wait mode (bits 16-23) is not 0 (exact) or 1 (drf)";
    if (wait != 0 && algorithm != static_cast<std::uint64_t>(Algorithm::kSlidingLog)) {
      return "a wait mode (bits 16-23) is set on an algorithm other than sliding_log";
    }
    if ((word >> 24) != 0) return "bits 24-63 are not 0";
    return nullptr;
  }
  static constexpr bool valid(std::uint64_t word) noexcept { return problem(word) == nullptr; }
};

static_assert(PolicyKind::valid(PolicyKind::pack({Algorithm::kSlidingLog, OnFull::kDeny,
                                                  LogWait::kDrf})),
              "a sliding log with wait drf is a valid kind");
static_assert(!PolicyKind::valid(PolicyKind::pack({Algorithm::kGcra, OnFull::kAllow,
                                                   LogWait::kDrf})),
              "only the sliding log has a wait mode");
static_assert(PolicyKind::unpack(PolicyKind::pack({Algorithm::kTokenBucket, OnFull::kDeny,
                                                   LogWait::kExact}))
                      .algorithm == Algorithm::kTokenBucket,
              "unpack inverts pack");

}  // namespace shmlimit::detail
