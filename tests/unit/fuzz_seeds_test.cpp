// The library-made seeds of the segment fuzz targets (fuzz/corpus/segment/,
// fuzz/corpus/segment_tail/, made by fuzz/make_seeds.cpp) must be images of
// the current segment layout: a seed of an older layout version stops at
// the version check, and the fuzzer never reaches the policy entries and
// slots behind it. The fuzz targets cannot tell (a refused segment is a
// valid outcome for them), so this test does.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "segment/segment.hpp"

namespace shmlimit::detail {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCure = "regenerate the seeds with `bash scripts/fuzz.sh --make-seeds`";

const fs::path kCorpus = SHMLIMIT_FUZZ_CORPUS_DIR;

std::vector<std::uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
}

std::vector<fs::path> seeds_of(const std::string& target) {
  std::vector<fs::path> out;
  for (const fs::directory_entry& e : fs::directory_iterator(kCorpus / target))
    if (e.is_regular_file() && e.path().extension() == ".bin") out.push_back(e.path());
  return out;
}

// A field of an image's header (read as bytes: a file's need not be aligned).
template <class T>
T field(const std::vector<std::uint8_t>& image, std::size_t offset) {
  T v{};
  std::memcpy(&v, image.data() + offset, sizeof v);
  return v;
}
u64 magic_of(const std::vector<std::uint8_t>& image) { return field<u64>(image, 0); }
u32 version_of(const std::vector<std::uint8_t>& image) {
  return field<u32>(image, offsetof(Header, layout_version));
}

std::string validate_bytes(const std::vector<std::uint8_t>& image) {
  auto* copy = static_cast<std::byte*>(::operator new (image.size(), std::align_val_t{64}));
  std::memcpy(copy, image.data(), image.size());
  std::string why = Segment::validate(copy, image.size(), 0, nullptr);
  ::operator delete (copy, std::align_val_t{64});
  return why;
}

TEST(FuzzSeeds, SegmentSeedsAreTheCurrentLayoutVersion) {
  const std::vector<fs::path> seeds = seeds_of("segment");
  ASSERT_FALSE(seeds.empty()) << "no seeds in " << (kCorpus / "segment") << ": " << kCure;
  for (const fs::path& path : seeds) {
    const std::vector<std::uint8_t> image = read_bytes(path);
    ASSERT_GE(image.size(), sizeof(Header)) << path << " is shorter than a header: " << kCure;
    EXPECT_EQ(magic_of(image), kMagic) << path << " is not a segment image: " << kCure;
    EXPECT_EQ(version_of(image), kLayoutVersion)
        << path << " has segment layout version " << version_of(image) << ", the library's is "
        << kLayoutVersion << ": the fuzzer would stop at the version check; " << kCure;
    // Past the version: the fingerprint and geometry checks too.
    EXPECT_EQ(validate_bytes(image), "") << path << " would be refused at open: " << kCure;
  }
}

// A segment_tail seed is the policy entries and slots of the segment seed
// of the same name (the harness builds a current header around them), so
// it is current exactly when it was cut from a current segment seed.
TEST(FuzzSeeds, SegmentTailSeedsAreCutFromTheCurrentSegmentSeeds) {
  const std::vector<fs::path> seeds = seeds_of("segment_tail");
  ASSERT_FALSE(seeds.empty()) << "no seeds in " << (kCorpus / "segment_tail") << ": " << kCure;
  constexpr std::size_t kPolicies = 19, kPolicyBytes = 4 * sizeof(PolicyEntry);
  for (const fs::path& path : seeds) {
    const fs::path twin = kCorpus / "segment" / path.filename();
    const std::vector<std::uint8_t> tail = read_bytes(path);
    const std::vector<std::uint8_t> image = read_bytes(twin);
    ASSERT_GE(image.size(), sizeof(Header))
        << path << " has no segment seed " << twin << ": " << kCure;
    ASSERT_EQ(version_of(image), kLayoutVersion)
        << path << " was cut from " << twin << " of layout version " << version_of(image)
        << ", the library's is " << kLayoutVersion << ": " << kCure;
    ASSERT_GE(tail.size(), kPolicies + kPolicyBytes) << path << " is too short: " << kCure;
    const u64 policy_offset = field<u64>(image, offsetof(Header, policy_offset));
    ASSERT_GE(image.size(), policy_offset + kPolicyBytes) << twin << ": " << kCure;
    EXPECT_EQ(std::memcmp(tail.data(), image.data() + offsetof(Header, hash_seed), 8), 0)
        << path << " does not carry the hash seed of " << twin
        << " (its keys would not be found): " << kCure;
    EXPECT_EQ(std::memcmp(tail.data() + kPolicies, image.data() + policy_offset, kPolicyBytes), 0)
        << path << " does not carry the policy entries of " << twin << ": " << kCure;
  }
}

}  // namespace
}  // namespace shmlimit::detail
