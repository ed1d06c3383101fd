// The exact sliding window across fork()ed processes on one hot key:
// replaying every admission's time, no window of length D ever holds more
// than N; and on a shared virtual clock, every phase admits exactly what
// one process admits alone at the same times.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

Options options(const ScopedName& name) {
  Options o;
  o.name = name.str();
  o.capacity = 256;
  o.log_entries = 32;
  return o;
}

PolicyId add_log(Limiter& l, std::uint64_t n, Nanos window) {
  return l.add_policy(PolicySpec{"log", Algorithm::kSlidingLog, Rate{n, window}});
}

TEST(SlidingLogAcrossProcesses, NoWindowEverHoldsMoreThanN) {
  ScopedName name("slog-replay");
  Limiter parent = Limiter::create(options(name));
  constexpr std::uint64_t kN = 10;
  constexpr std::int64_t kWindow = 20'000'000;  // 20 ms
  const PolicyId id = add_log(parent, kN, Nanos(kWindow));
  constexpr std::size_t kMaxAdmissions = 1 << 16;
  Shared<std::atomic<std::int64_t>> times(kMaxAdmissions);
  Shared<std::atomic<std::uint64_t>> count;
  const auto pids = fork_workers(4, [&](int) {
    Limiter l = Limiter::open(options(name));
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
    while (std::chrono::steady_clock::now() < end) {
      const Nanos t = l.now();  // the admission's own time, as acquire() would read it
      if (l.acquire_at(id, "hot", 1, t).allowed) {
        const std::uint64_t i = count->fetch_add(1);
        if (i >= kMaxAdmissions) return 1;
        times[i].store(t.count());
      }
    }
    return 0;
  });
  ASSERT_EQ(wait_all(pids), 0);
  const std::uint64_t n = count->load();
  ASSERT_GE(n, kN);  // the first window alone admits N
  std::vector<std::int64_t> sorted(n);
  for (std::uint64_t i = 0; i < n; ++i) sorted[i] = times[i].load();
  std::sort(sorted.begin(), sorted.end());
  // N + 1 admissions in a window of length D would put sorted[i + N] less
  // than D after sorted[i].
  for (std::size_t i = 0; i + kN < sorted.size(); ++i) {
    ASSERT_GE(sorted[i + kN] - sorted[i], kWindow) << "admissions " << i << ".." << i + kN;
  }
  EXPECT_TRUE(parent.check().clean());
}

struct PhaseCase {
  const char* label;
  std::uint64_t cost;
};

class SlidingLogPhases : public ::testing::TestWithParam<PhaseCase> {};

constexpr int kProcs = 3;
constexpr int kAttempts = 12;  // per process and phase: more than a phase admits
constexpr std::uint64_t kN = 8;
constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kWindow = 50 * kMs;
const std::vector<std::int64_t> kTimes = {0,         5 * kMs,   10 * kMs,  20 * kMs,
                                          49 * kMs,  50 * kMs,  55 * kMs,  70 * kMs,
                                          100 * kMs, 101 * kMs, 160 * kMs, 161 * kMs};

TEST_P(SlidingLogPhases, EveryPhaseAdmitsWhatOneProcessAdmits) {
  const std::uint64_t cost = GetParam().cost;
  // One process alone: the reference.
  std::vector<std::uint64_t> reference;
  {
    ScopedName name("slog-ref");
    Limiter l = Limiter::create(options(name));
    const PolicyId id = add_log(l, kN, Nanos(kWindow));
    for (std::int64_t t : kTimes) {
      std::uint64_t admitted = 0;
      for (int a = 0; a < kProcs * kAttempts; ++a)
        admitted += l.acquire_at(id, "hot", cost, Nanos(t)).allowed ? cost : 0;
      reference.push_back(admitted);
    }
  }
  ScopedName name("slog-phases");
  Limiter parent = Limiter::create(options(name));
  const PolicyId id = add_log(parent, kN, Nanos(kWindow));
  Shared<PhaseClock> clock;
  Shared<std::atomic<std::uint64_t>> admitted(kTimes.size());
  const auto pids = fork_workers(kProcs, [&](int) {
    Limiter l = Limiter::open(options(name));
    for (std::size_t p = 0; p < kTimes.size(); ++p) {
      const Nanos t = clock->enter(static_cast<int>(p));
      for (int a = 0; a < kAttempts; ++a) {
        if (l.acquire_at(id, "hot", cost, t).allowed) admitted[p].fetch_add(cost);
      }
      clock->leave();
    }
    return 0;
  });
  for (std::size_t p = 0; p < kTimes.size(); ++p)
    clock->run(static_cast<int>(p), kTimes[p], kProcs);
  ASSERT_EQ(wait_all(pids), 0);
  std::uint64_t total = 0;
  for (std::size_t p = 0; p < kTimes.size(); ++p) {
    EXPECT_EQ(admitted[p].load(), reference[p]) << "phase " << p << " at " << kTimes[p] << " ns";
    total += reference[p];
  }
  EXPECT_GE(total, 2 * kN);  // several windows' worth: the comparison is not vacuous
}

INSTANTIATE_TEST_SUITE_P(Costs, SlidingLogPhases,
                         ::testing::Values(PhaseCase{"Cost1", 1}, PhaseCase{"Cost3", 3}),
                         [](const ::testing::TestParamInfo<PhaseCase>& info) {
                           return std::string(info.param.label);
                         });

}  // namespace
}  // namespace shmlimit::test
