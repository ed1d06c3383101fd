// Fuzz target: state documents. Limiter::import_state() on any bytes
// either imports or throws shmlimit::Error (kInvalidArgument, or
// kPolicyConflict for a spec that differs) with a message, and never
// writes a bucket when it throws (all or nothing). One segment per process
// with a policy of every algorithm that has a codec, under the names the
// seeds use; it is emptied after every input.
//
//   fuzz/corpus/state_import/       seed corpus (documents from export_state)
//   fuzz/regressions/state_import/  inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh state_import 60   (doc/fuzzing.md)
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "state_import_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

shmlimit::Limiter& target() {
  static shmlimit::Limiter* limiter = [] {
    shmlimit::Options o;
    o.name = "/shmlimit-fuzz-state-" + std::to_string(::getpid());
    o.capacity = 64;
    shmlimit::Limiter::remove(o.name);
    auto* l = new shmlimit::Limiter(shmlimit::Limiter::create(o));
    shmlimit::Limiter::remove(o.name);  // the mapping stays; nothing is left in /dev/shm
    using shmlimit::Algorithm;
    const struct {
      const char* name;
      Algorithm algorithm;
      std::uint64_t count;
      std::chrono::nanoseconds period;
      std::uint64_t burst;
    } policies[] = {
        {"gcra", Algorithm::kGcra, 1, std::chrono::seconds(1), 5},
        {"leaky", Algorithm::kLeakyBucket, 1, std::chrono::seconds(1), 5},
        {"tb", Algorithm::kTokenBucket, 5, std::chrono::hours(1), 5},
        {"fw", Algorithm::kFixedWindow, 5, std::chrono::hours(1), 5},
        {"sw", Algorithm::kSlidingWindow, 5, std::chrono::hours(1), 5},
        {"qp", Algorithm::kQuietPeriod, 3, std::chrono::hours(1), 3},
    };
    for (const auto& p : policies) {
      shmlimit::PolicySpec s;
      s.name = p.name;
      s.algorithm = p.algorithm;
      s.rate = shmlimit::Rate{p.count, p.period};
      s.burst = p.burst;
      l->add_policy(s);
    }
    return l;
  }();
  return *limiter;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  shmlimit::Limiter& l = target();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    l.import_state(text);
  } catch (const shmlimit::Error& e) {
    if (e.code() != shmlimit::ErrorCode::kInvalidArgument &&
        e.code() != shmlimit::ErrorCode::kPolicyConflict) {
      fail("wrong error code", e.what());
    }
    if (std::string_view(e.what()).empty()) fail("empty error message", "");
    if (!l.dump().empty()) fail("a refused document wrote buckets", e.what());
  } catch (const std::exception& e) {
    fail("an exception other than shmlimit::Error", e.what());
  }
  // Whatever was imported must export again as a valid document.
  const std::string again = l.export_state();
  try {
    l.import_state(again);
  } catch (const shmlimit::Error& e) {
    fail("its own export was refused", e.what() + std::string("\n") + again);
  }
  l.reset();
  return 0;
}
