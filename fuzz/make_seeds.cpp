// Writes the smart seeds of the segment fuzz targets: real segment images
// made by the library, so that fuzzing starts past the header checks with
// policies registered (one replaced: the second parameter set active), keys
// live in their slots (some exhausted, some full again), a slot left by a
// killed claimer, and keys of every slot size.
//
//   fuzz_make_seeds OUT_DIR          writes OUT_DIR/segment/*.bin and OUT_DIR/segment_tail/*.bin
//                                    where they are missing or stale
//   fuzz_make_seeds --force OUT_DIR  rewrites them all (after a change to this file)
//
// Built in the `fuzz` preset; scripts/fuzz.sh --make-seeds runs it into
// fuzz/corpus/. An image is not deterministic (the library draws the hash
// seed and epoch, pids go into the process registry and claim tokens, and
// the killed claimer stops at a random moment), so a seed this library
// still opens (Segment::validate: magic, layout version, fingerprint,
// geometry) is kept, with its segment_tail twin, and the files change only
// when the layout does. tests/unit/fuzz_seeds_test.cpp fails when they are
// stale.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "segment_common.hpp"  // kTimeAt, kCostAt
#include "shmlimit/shmlimit.hpp"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::vector<std::uint8_t> read_object(const std::string& name) {
  std::ifstream in("/dev/shm" + name, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

// The segment_tail encoding of an image (see segment_tail_fuzz.cpp).
std::vector<std::uint8_t> tail_of(const std::vector<std::uint8_t>& image,
                                  std::uint8_t geometry_byte, std::uint32_t max_probe,
                                  std::uint64_t t_ns) {
  using shmlimit::detail::Header;
  const auto& h = *reinterpret_cast<const Header*>(image.data());
  std::vector<std::uint8_t> out(19);
  std::memcpy(out.data(), &h.hash_seed, 8);
  out[8] = geometry_byte;
  out[9] = static_cast<std::uint8_t>(max_probe - 1);
  // The harness's epoch is 0 (segment time = time since boot); shift the
  // decision time so the seeds' buckets are met at a time they care about.
  const std::uint64_t t = t_ns + static_cast<std::uint64_t>(h.epoch_raw_ns);
  std::memcpy(out.data() + 10, &t, 8);
  out[18] = 1;
  out.insert(out.end(), image.begin() + static_cast<std::ptrdiff_t>(h.policy_offset),
             image.begin() + static_cast<std::ptrdiff_t>(
                                 h.policy_offset + 4 * sizeof(shmlimit::detail::PolicyEntry)));
  // The slot array only: the regions after it (leases, sliding logs,
  // counter blocks) are not part of a tail input.
  const std::size_t slot_end = h.slot_offset + std::size_t{h.capacity} * h.slot_bytes;
  std::vector<std::uint8_t> slots(image.begin() + static_cast<std::ptrdiff_t>(h.slot_offset),
                                  image.begin() + static_cast<std::ptrdiff_t>(slot_end));
  while (!slots.empty() && slots.back() == 0) slots.pop_back();  // the harness zero-pads
  out.insert(out.end(), slots.begin(), slots.end());
  return out;
}

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
}

// Why the seed `image` would stop at the header checks ("": it would not).
std::string header_problem(const std::vector<std::uint8_t>& image) {
  if (image.empty()) return "missing or empty";
  auto* copy = static_cast<std::byte*>(::operator new (image.size(), std::align_val_t{64}));
  std::memcpy(copy, image.data(), image.size());
  std::string why = shmlimit::detail::Segment::validate(copy, image.size(), 0, nullptr);
  ::operator delete (copy, std::align_val_t{64});
  return why;
}

// Whether `tail` is the segment_tail encoding of `image` (its hash seed
// and policy entries; tests/unit/fuzz_seeds_test.cpp checks the same).
bool cut_from(const std::vector<std::uint8_t>& tail, const std::vector<std::uint8_t>& image) {
  using shmlimit::detail::Header;
  constexpr std::size_t kPolicies = 19, kPolicyBytes = 4 * sizeof(shmlimit::detail::PolicyEntry);
  if (tail.size() < kPolicies + kPolicyBytes || image.size() < sizeof(Header)) return false;
  std::uint64_t policy_offset = 0;
  std::memcpy(&policy_offset, image.data() + offsetof(Header, policy_offset), 8);
  return image.size() >= policy_offset + kPolicyBytes &&
         std::memcmp(tail.data(), image.data() + offsetof(Header, hash_seed), 8) == 0 &&
         std::memcmp(tail.data() + kPolicies, image.data() + policy_offset, kPolicyBytes) == 0;
}

struct Shape {
  const char* name;
  std::uint32_t capacity;
  std::uint32_t slot_bytes;
  std::uint32_t max_probe;
  std::uint8_t geometry_byte;  // segment_tail: slot index + 3 * log2(capacity / 16)
};

}  // namespace

int main(int argc, char** argv) {
  const bool force = argc == 3 && std::string(argv[1]) == "--force";
  if (argc != 2 + (force ? 1 : 0) || argv[argc - 1][0] == '-') {
    std::fprintf(stderr, "usage: fuzz_make_seeds [--force] OUT_DIR\n");
    return 2;
  }
  const fs::path out_dir(argv[argc - 1]);
  fs::create_directories(out_dir / "segment");
  fs::create_directories(out_dir / "segment_tail");
  const Shape shapes[] = {
      {"c16-s64", 16, 64, 16, 0},
      {"c32-s128", 32, 128, 8, 1 + 3},
      {"c16-s256", 16, 256, 4, 2},
  };
  for (const Shape& shape : shapes) {
    const fs::path seed = out_dir / "segment" / (std::string(shape.name) + ".bin");
    const fs::path tail = out_dir / "segment_tail" / (std::string(shape.name) + ".bin");
    const std::vector<std::uint8_t> old_image = read_file(seed);
    std::string why = header_problem(old_image);
    if (why.empty() && !cut_from(read_file(tail), old_image))
      why = tail.string() + " is not cut from it";
    if (!force && why.empty()) {
      std::printf("%s: current, kept\n", seed.c_str());
      continue;
    }
    std::printf("%s: %s, rewritten\n", seed.c_str(), force ? "--force" : why.c_str());
    shmlimit::Options o;
    o.name = "/shmlimit-fuzz-seed-" + std::to_string(::getpid());
    o.capacity = shape.capacity;
    o.slot_bytes = shape.slot_bytes;
    o.max_probe = shape.max_probe;
    shmlimit::Limiter::remove(o.name);
    shmlimit::Limiter l = shmlimit::Limiter::create(o);
    shmlimit::PolicySpec api;
    api.name = "api";
    api.rate = shmlimit::parse_rate("10/s");
    api.burst = 5;
    const shmlimit::PolicyId a = l.add_policy(api);
    shmlimit::PolicySpec day;
    day.name = "per-day";
    day.rate = shmlimit::parse_rate("100/d");
    day.on_full = shmlimit::OnFull::kDeny;
    const shmlimit::PolicyId d = l.add_policy(day);
    api.burst = 8;
    (void)l.add_policy(api, true);  // replaced: the entry's second parameter set is active
    const auto t = std::chrono::nanoseconds(10s);
    for (int k = 0; k < 6; ++k) {
      for (int i = 0; i <= k; ++i) (void)l.acquire_at(a, "user-" + std::to_string(k), 1, t);
    }
    for (int i = 0; i < 120; ++i) (void)l.acquire_at(d, "203.0.113.7", 1, t);  // exhausted
    (void)l.acquire_at(d, std::string(l.max_key_bytes(), 'x'), 3, t);          // longest key
    (void)l.acquire_at(a, "refilled", 1, std::chrono::nanoseconds(1s));        // full again at t
    // A claimer killed at a random moment of a claim storm: may leave a
    // CLAIMING slot or a committed reclaim with a dead owner token.
    const pid_t child = ::fork();
    if (child == 0) {
      shmlimit::Limiter c = shmlimit::Limiter::open(o);
      for (std::uint64_t i = 0;; ++i)
        (void)c.acquire_at(a, "churn-" + std::to_string(i), 1, t + 1h);
    }
    ::usleep(20000);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    std::vector<std::uint8_t> image = read_object(o.name);
    // The segment target's decision time and cost (the header's padding):
    // the time the seed's buckets were met at.
    const auto t_ns = static_cast<std::uint64_t>(t.count());
    const std::uint64_t cost = 1;
    std::memcpy(image.data() + shmlimit::fuzz::kTimeAt, &t_ns, 8);
    std::memcpy(image.data() + shmlimit::fuzz::kCostAt, &cost, 8);
    write_file(seed, image);
    write_file(tail, tail_of(image, shape.geometry_byte, shape.max_probe, t_ns));
    shmlimit::Limiter::remove(o.name);
  }
  return 0;
}
