// Fuzz target: the bytes of a whole segment. The input becomes a real
// shared-memory object of exactly its size; detail::Segment::validate runs
// on the raw bytes, then Limiter::open (read-only and read-write), stats(),
// dump(), policies(), check(false), acquire/peek on the keys found in the
// table and on a new key, check(true), add_policy. A valid segment image
// made by the library seeds the corpus (fuzz/make_seeds.cpp), so the fuzzer
// starts past the magic, version, fingerprint and geometry checks.
//
//   fuzz/corpus/segment/        seed corpus (library-made images, ~1 MB each: a layout-5
//                               segment of 16 slots is mostly its process, lease and
//                               counter regions; fuzz.sh gives this target -max_len 1 MiB)
//   fuzz/regressions/segment/   inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh segment 60   (doc/fuzzing.md)
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "segment_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  shmlimit::fuzz::validate_raw(data, size);
  if (size < 8) return 0;
  // Decision time and cost come from the header's padding (after its last
  // field), so they are part of the input and deterministic without
  // making the header invalid (fuzz/segment_common.hpp, kTimeAt).
  std::uint64_t t_ns = 1'000'000'000, cost = 1;
  if (size >= shmlimit::fuzz::kCostAt + 8) {
    std::memcpy(&t_ns, data + shmlimit::fuzz::kTimeAt, 8);
    std::memcpy(&cost, data + shmlimit::fuzz::kCostAt, 8);
    cost %= 8;
  }
  shmlimit::fuzz::write_object(data, size);
  shmlimit::fuzz::open_and_exercise(t_ns, cost);
  return 0;
}
