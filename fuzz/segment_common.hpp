// Shared by the segment fuzz targets (segment_fuzz.cpp, segment_tail_fuzz.cpp):
// put bytes into a real POSIX shared-memory object and drive every reader
// of the public API over it, read-only and read-write.
//
// Contract under test (include/shmlimit/shmlimit.hpp, invariant 3): a
// corrupt or hostile segment may make decisions wrong, or make open()
// throw shmlimit::Error, but never crash a reader, hang it, or make it
// read or write outside the mapping. Any other exception escapes and is a
// finding.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "segment/segment.hpp"  // detail::Segment::validate: the raw-bytes validator
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::fuzz {

/// Where the `segment` target reads its decision time and cost (8 bytes
/// each): the header's padding after its last field, which no check reads,
/// so the fuzzer can vary them in a segment that still opens.
/// fuzz/make_seeds.cpp writes the seeds' time there.
inline constexpr std::size_t kTimeAt = 176, kCostAt = 184;
static_assert(offsetof(detail::Header, admin_owner) + sizeof(detail::AtomicU64) <= kTimeAt &&
                  kCostAt + 8 <= sizeof(detail::Header),
              "the segment target's time and cost must lie in the header's padding");

/// The shm object this process uses for every input (remove_object()
/// unlinks it after each input: libFuzzer may end the process without
/// running atexit handlers).
inline const std::string& object_name() {
  static const std::string name = "/shmlimit-fuzz-" + std::to_string(::getpid());
  return name;
}

inline void remove_object() { ::shm_unlink(object_name().c_str()); }

/// Replaces the object's contents with exactly `bytes`.
inline bool write_object(const std::uint8_t* bytes, std::size_t size) {
  const int fd = ::shm_open(object_name().c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
  if (fd < 0) {
    std::perror("shm_open");
    std::abort();  // the harness cannot work: not a finding about the input
  }
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, bytes + done, size - done);
    if (n <= 0) {
      std::perror("write");
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return true;
}

/// Segment::validate on an exact-size, 64-byte aligned copy (so ASan sees
/// any read past the end; the header's atomics need the alignment).
inline void validate_raw(const std::uint8_t* bytes, std::size_t size) {
  if (size == 0) return;
  auto* copy = static_cast<std::byte*>(::operator new (size, std::align_val_t{64}));
  std::memcpy(copy, bytes, size);
  detail::Geometry g;
  (void)detail::Segment::validate(copy, size, 0, &g);
  (void)detail::Segment::validate(copy, size, 16, nullptr);
  ::operator delete (copy, std::align_val_t{64});
}

inline Options fuzz_options(bool read_only) {
  Options o;
  o.name = object_name();
  o.capacity = 0;  // any geometry
  o.read_only = read_only;
  o.open_timeout = std::chrono::milliseconds(0);  // an uninitialised header: fail at once
  o.claim_timeout =
      std::chrono::milliseconds(0);  // a stalled (or hostile, ownerless) claim: give up at once
  return o;
}

/// Every reader and writer of the public API, on whatever open() accepted.
inline void exercise(Limiter& l, std::uint64_t t_ns, std::uint64_t cost) {
  const Stats s = l.stats();
  (void)s;
  const std::vector<BucketView> buckets = l.dump();
  const std::vector<PolicyView> policies = l.policies();
  (void)l.check(false);
  const Nanos t(static_cast<std::int64_t>(t_ns & ((1ULL << 57) - 1)));
  // Keys that are in the table (the interesting path) and one that is not.
  std::size_t n = 0;
  for (const BucketView& b : buckets) {
    if (++n > 8) break;
    if (const auto id = l.find_policy(b.policy)) {
      (void)l.acquire_at(*id, b.key, cost, t);
      (void)l.peek(*id, b.key, cost);
    }
  }
  for (std::uint32_t p = 0; p < policies.size() + 1 && p < 4; ++p) {
    (void)l.acquire_at(PolicyId{p}, "fuzz-key", cost, t);
    (void)l.acquire(PolicyId{p}, "fuzz-key", 1);
  }
  (void)l.acquire(PolicyId{64}, "k", 1);  // out of range
  (void)l.check(true);
  (void)l.stats();
}

/// Opens the object read-only, then read-write, and exercises both; then
/// removes the object (open mappings stay valid until the handles close).
inline void open_and_exercise(std::uint64_t t_ns, std::uint64_t cost) {
  struct Remove {
    ~Remove() { remove_object(); }
  } remove;
  for (const bool read_only : {true, false}) {
    try {
      Limiter l = Limiter::open(fuzz_options(read_only));
      exercise(l, t_ns, cost);
      if (!read_only) {
        PolicySpec spec;
        spec.name = "fuzz";
        spec.rate = Rate{10, std::chrono::seconds(1)};
        spec.burst = 5;
        try {
          const PolicyId id = l.add_policy(spec, true);
          (void)l.acquire_at(id, "fuzz-key", cost,
                             Nanos(static_cast<std::int64_t>(t_ns & ((1ULL << 57) - 1))));
          (void)l.check(false);
        } catch (const Error&) {
          // a full or held policy table: a clear error is the contract
        }
      }
    } catch (const Error&) {
      // refused with a message: the contract
    }
  }
}

}  // namespace shmlimit::fuzz
