// Every algorithm, across forked processes: in each phase of a shared
// virtual clock, P processes together admit exactly what one process
// admits alone at the same times (zero over-admission, zero
// under-admission), on a hot key and on keys claimed concurrently.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

struct Case {
  const char* label;
  Algorithm algorithm;
  const char* rate;
  std::uint64_t burst;
  std::int64_t step_ns;  // virtual time between phases
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.label; }

constexpr int kProcs = 3;
constexpr int kPhases = 10;
constexpr int kKeys = 8;
constexpr int kAttempts = 60;  // per process, key and phase: more than any phase admits

class AlgorithmExactness : public ::testing::TestWithParam<Case> {};

// Admissions per phase when one process tries `attempts` times per key at
// each phase time: the reference the forked run must match.
std::vector<std::uint64_t> sequential_reference(const Case& c,
                                                const std::vector<std::int64_t>& times) {
  ScopedName name("ref");
  Options o;
  o.name = name.str();
  o.capacity = 256;
  Limiter l = Limiter::create(o);
  const PolicyId id = l.add_policy({"p", c.algorithm, parse_rate(c.rate), c.burst, OnFull::kDeny});
  std::vector<std::uint64_t> admitted(times.size());
  for (std::size_t p = 0; p < times.size(); ++p) {
    for (int k = 0; k < kKeys; ++k) {
      for (int n = 0; n < kAttempts * kProcs; ++n) {
        admitted[p] += l.acquire_at(id, "key-" + std::to_string(k), 1, Nanos(times[p])).allowed;
      }
    }
  }
  return admitted;
}

TEST_P(AlgorithmExactness, ForkedProcessesAdmitExactlyWhatOneProcessWould) {
  const Case c = GetParam();
  std::vector<std::int64_t> times;
  for (int p = 0; p < kPhases; ++p) times.push_back(1'000'000'000 + p * c.step_ns);
  const std::vector<std::uint64_t> reference = sequential_reference(c, times);

  ScopedName name("alg");
  Options o;
  o.name = name.str();
  o.capacity = 256;
  o.claim_timeout = std::chrono::seconds(30);
  Limiter parent = Limiter::create(o);
  const PolicyId id =
      parent.add_policy({"p", c.algorithm, parse_rate(c.rate), c.burst, OnFull::kDeny});
  Shared<PhaseClock> clock;
  Shared<std::atomic<std::uint64_t>> admitted(kPhases);
  Shared<std::atomic<std::uint64_t>> not_ok;
  const auto pids = fork_workers(kProcs, [&](int i) {
    Limiter l = Limiter::open(o);
    for (int p = 0; p < kPhases; ++p) {
      const Nanos now = clock->enter(p);
      for (int n = 0; n < kAttempts * kKeys; ++n) {
        // Every process walks the keys from a different start, so new keys
        // are claimed by several processes at once.
        const int k = (n + i * 3) % kKeys;
        const Decision d = l.acquire_at(id, "key-" + std::to_string(k), 1, now);
        if (d.reason != Reason::kOk) not_ok->fetch_add(1);
        if (d.allowed) admitted[p].fetch_add(1);
      }
      clock->leave();
    }
    return 0;
  });
  for (int p = 0; p < kPhases; ++p) {
    clock->run(p, times[static_cast<std::size_t>(p)], kProcs);
  }
  ASSERT_EQ(wait_all(pids), 0);
  EXPECT_EQ(not_ok->load(), 0u);
  std::uint64_t total = 0;
  for (int p = 0; p < kPhases; ++p) {
    EXPECT_EQ(admitted[p].load(), reference[static_cast<std::size_t>(p)]) << "phase " << p;
    total += admitted[p].load();
  }
  EXPECT_GT(total, 0u);
  EXPECT_TRUE(parent.check(false).clean());
}

INSTANTIATE_TEST_SUITE_P(
    EveryAlgorithm, AlgorithmExactness,
    ::testing::Values(Case{"Gcra", Algorithm::kGcra, "10/s", 4, 250'000'000},
                      Case{"LeakyBucket", Algorithm::kLeakyBucket, "10/s", 4, 250'000'000},
                      Case{"TokenBucket", Algorithm::kTokenBucket, "3/s", 7, 700'000'000},
                      Case{"FixedWindow", Algorithm::kFixedWindow, "5/s", 0, 400'000'000},
                      Case{"SlidingWindow", Algorithm::kSlidingWindow, "6/s", 0, 300'000'000},
                      Case{"QuietPeriod", Algorithm::kQuietPeriod, "2/s", 0, 600'000'000}),
    [](const auto& info) { return std::string(info.param.label); });

}  // namespace
}  // namespace shmlimit::test
