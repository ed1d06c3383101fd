// The decision clock (src/segment/clock.hpp): the TSC scaled from an exact
// CLOCK_MONOTONIC_RAW anchor. The pure steps are tested as tables with
// made-up TSC values; the live clock against clock_gettime read around it.
#include "segment/clock.hpp"

#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shmlimit/inspect.hpp"

extern char** environ;

namespace shmlimit::detail {
namespace {

constexpr std::uint64_t kOne = std::uint64_t{1} << kTscShift;  // 1 ns per tick

// ---- tsc_rate_from, tsc_scale_of --------------------------------------------

// Readings of a counter of exactly 3 ticks per ns, each bracketed by TSC
// reads `slack` ticks either side, `span` ns apart.
TscBrackets brackets(std::int64_t span, std::uint64_t slack) {
  TscBrackets b{};
  b.ns0 = 1'000;
  b.lo0 = 1'000'000 - slack;
  b.hi0 = 1'000'000 + slack;
  b.ns1 = 1'000 + span;
  b.lo1 = 1'000'000 + static_cast<std::uint64_t>(span) * 3 - slack;
  b.hi1 = 1'000'000 + static_cast<std::uint64_t>(span) * 3 + slack;
  return b;
}

TEST(TscRate, BoundsTheRateFromBothSides) {
  // 200 us, 60-tick brackets: low = 199,999 ns / 600,120 ticks,
  // high = 200,001 ns / 599,880 ticks (+1 for the rounding down).
  const TscRate r = tsc_rate_from(brackets(200'000, 60));
  EXPECT_EQ(r.low, (std::uint64_t{199'999} << kTscShift) / 600'120);
  EXPECT_EQ(r.high, (std::uint64_t{200'001} << kTscShift) / 599'880 + 1);
  // Overlapping brackets bound the rate from below only.
  TscBrackets b = brackets(200'000, 60);
  b.hi0 = b.lo1;
  EXPECT_EQ(tsc_rate_from(b).high, UINT64_MAX);
}

TEST(TscRate, ALongerSpanNarrowsTheBoundsAroundTheTrueRate) {
  const std::uint64_t exact = kOne / 3;
  std::uint64_t low = 0, high = UINT64_MAX;
  for (std::int64_t span : {200'000LL, 2'000'000LL, 67'000'000LL, 1'000'000'000LL}) {
    const TscRate r = tsc_rate_from(brackets(span, 60));
    EXPECT_GT(r.low, low) << span;
    EXPECT_LT(r.high, high) << span;
    EXPECT_LE(r.low, exact) << span;
    EXPECT_GE(r.high, exact) << span;
    low = r.low;
    high = r.high;
  }
  EXPECT_LT(high - low, exact / 10'000'000) << "within 0.1 ppm after 1 s";
}

TEST(TscRate, RefusesReadingsThatAllowNoRate) {
  struct Row {
    TscBrackets b;
    const char* why;
  };
  const Row rows[] = {
      {{1'000, 100, 110, 1'500, 890, 900}, "span shorter than 1 us"},
      {{1'000, 100, 100, 1'000'000, 100, 100}, "TSC did not advance"},
      {{1'000, 900, 900, 1'000'000, 100, 100}, "TSC went back"},
      {{0, 0, 0, 200'000, 20, 20}, "10 us per tick: not a TSC"},
      {{0, 0, 0, 200'000, 1'000'000'000'000ULL, 1'000'000'000'000ULL}, "0.2 fs per tick"},
  };
  for (const Row& r : rows) EXPECT_EQ(tsc_rate_from(r.b).low, 0U) << r.why;
}

TEST(TscScale, AnAnchorServesAsManyTicksAsKeepTheErrorUnderTheLag) {
  // Bounds 100 ppm apart: 1 us of error after 10 ms.
  const std::uint64_t low = kOne / 3;
  const TscScale wide = tsc_scale_of({low, low + low / 10'000});
  EXPECT_EQ(wide.mult, low);
  const std::uint64_t lag_ns = (wide.max_ticks * (low / 10'000)) >> kTscShift;
  EXPECT_LE(lag_ns, static_cast<std::uint64_t>(kTscLagNs));
  EXPECT_GE(lag_ns, static_cast<std::uint64_t>(kTscLagNs) - 1);
  // Bounds 1 ppm apart: the whole interval.
  const TscScale tight = tsc_scale_of({low, low + low / 1'000'000});
  EXPECT_LE((tight.max_ticks * tight.mult) >> kTscShift,
            static_cast<std::uint64_t>(kTscIntervalNs));
  EXPECT_GE((tight.max_ticks * tight.mult) >> kTscShift,
            static_cast<std::uint64_t>(kTscIntervalNs) - 2);
  // No upper bound (overlapping brackets): no tick past the anchor itself.
  EXPECT_EQ(tsc_scale_of({low, UINT64_MAX}).max_ticks, 0U);
  EXPECT_EQ(tsc_scale_of({}).mult, 0U);
}

// ---- tsc_extrapolate ---------------------------------------------------------

TscAnchor anchor_at(std::uint64_t tsc, std::int64_t ns, std::uint64_t mult) {
  TscAnchor a;
  a.tsc = tsc;
  a.ns = ns;
  a.scale.mult = mult;
  a.scale.max_ticks = (static_cast<std::uint64_t>(kTscIntervalNs) << kTscShift) / mult;
  return a;
}

TEST(TscExtrapolate, ScalesTicksSinceTheAnchorAndRefusesOutsideItsInterval) {
  const TscAnchor a = anchor_at(10'000, 5'000'000, kOne / 2);  // 0.5 ns per tick
  struct Row {
    std::uint64_t tsc;
    bool ok;
    std::int64_t ns;
  };
  const Row rows[] = {
      {10'000, true, 5'000'000},  // the anchor itself
      {10'001, true, 5'000'000},  // half a ns: rounded down
      {10'002, true, 5'000'001},
      {10'000 + 2 * kTscIntervalNs, true, 5'000'000 + kTscIntervalNs},  // the last tick
      {10'000 + 2 * kTscIntervalNs + 1, false, 0},                      // an exact reading is due
      {9'999, false, 0},  // before the anchor (another CPU)
      {0, false, 0},
  };
  for (const Row& r : rows) {
    std::int64_t ns = -1;
    EXPECT_EQ(tsc_extrapolate(a, r.tsc, &ns), r.ok) << r.tsc;
    if (r.ok) {
      EXPECT_EQ(ns, r.ns) << r.tsc;
    }
  }
}

TEST(TscExtrapolate, AnEmptyAnchorAlwaysAsksForAnExactReading) {
  std::int64_t ns = 0;
  EXPECT_FALSE(tsc_extrapolate(TscAnchor{}, 123'456'789, &ns));
}

// ---- guarantee (3): the self-check at each new anchor ------------------------

TEST(TscExtrapolationBehind, FlagsAnAnchorThatWouldHaveRunAheadOfTheExactClock) {
  const TscPoint a{1'000, 1'000'000, kOne};                               // 1 ns per tick
  EXPECT_TRUE(tsc_extrapolation_behind(a, 1'000 + 500'000, 1'500'000));   // on time
  EXPECT_TRUE(tsc_extrapolation_behind(a, 1'000 + 500'000, 1'600'000));   // behind
  EXPECT_FALSE(tsc_extrapolation_behind(a, 1'000 + 500'000, 1'499'999));  // 1 ns ahead
  // A TSC that ran 10% fast for a second, long past the anchor's interval.
  EXPECT_FALSE(tsc_extrapolation_behind(a, 1'000 + 1'100'000'000, 1'001'000'000));
  // Not comparable: an empty anchor, a TSC before the anchor, 2^40 ticks on.
  EXPECT_TRUE(tsc_extrapolation_behind(TscPoint{}, 5, 0));
  EXPECT_TRUE(tsc_extrapolation_behind(a, 999, 0));
  EXPECT_TRUE(tsc_extrapolation_behind(a, 1'000 + (std::uint64_t{1} << 40) + 1, 0));
}

// ---- when the TSC is used ------------------------------------------------------

TEST(TscClockRefusal, NamesWhatRulesTheTscOut) {
  struct Row {
    const char* env;
    bool invariant;
    const char* source;
    const char* why;  // "" = used
  };
  const Row rows[] = {
      {nullptr, true, "tsc", ""},
      {nullptr, true, "kvm-clock", ""},
      // Unset, empty, auto and tsc (any case): the host decides; never forced.
      {"", true, "tsc", ""},
      {"tsc", true, "tsc", ""},
      {"TSC", true, "tsc", ""},
      {"auto", true, "kvm-clock", ""},
      {"Auto", true, "tsc", ""},
      {"tsc", false, "tsc", "no invariant TSC"},
      {"auto", true, "hpet", "clocksource hpet"},
      {"", true, "acpi_pm", "clocksource acpi_pm"},
      // exact (any case): the exact clock, named as given.
      {"exact", true, "tsc", "SHMLIMIT_CLOCK=exact"},
      {"exact", false, "hpet", "SHMLIMIT_CLOCK=exact"},
      {"EXACT", true, "tsc", "SHMLIMIT_CLOCK=EXACT"},
      {"Exact", true, "tsc", "SHMLIMIT_CLOCK=Exact"},
      // Anything else: the exact clock too (always right), the value quoted.
      {"garbage", true, "tsc", "SHMLIMIT_CLOCK=\"garbage\" is not auto, tsc or exact"},
      {"exact ", true, "tsc", "SHMLIMIT_CLOCK=\"exact \" is not auto, tsc or exact"},
      {"0", true, "tsc", "SHMLIMIT_CLOCK=\"0\" is not auto, tsc or exact"},
      {"e\x01\n\"\\\xff", true, "tsc",
       "SHMLIMIT_CLOCK=\"e\\x01\\x0a\\x22\\x5c\\xff\" is not auto, tsc or exact"},
      {"0123456789abcdef0123456789abcdefTAIL", true, "tsc",
       "SHMLIMIT_CLOCK=\"0123456789abcdef0123456789abcdef\"... is not auto, tsc or exact"},
      {nullptr, false, "tsc", "no invariant TSC"},
      {nullptr, true, "hpet", "clocksource hpet"},
      {nullptr, true, "acpi_pm", "clocksource acpi_pm"},
      {nullptr, true, "", "clocksource unknown"},
  };
  for (const Row& r : rows)
    EXPECT_EQ(tsc_clock_refusal(r.env, r.invariant, r.source), r.why)
        << (r.env ? r.env : "(unset)") << " " << r.invariant << " " << r.source;
}

// ---- the live clock ----------------------------------------------------------

// Guarantee (1), strictly: never ahead of CLOCK_MONOTONIC_RAW read after
// it. Guarantee (2), loosely (a loaded machine may stop the thread between
// any two reads, which only makes `before` older): never more than 1 ms
// behind CLOCK_MONOTONIC_RAW read before it. From several threads, each
// with its own anchor.
TEST(DecisionClock, NeverAheadOfTheSegmentClockAndNeverFarBehind) {
  const auto run = [](std::int64_t* most_behind) {
    for (int i = 0; i < 300'000; ++i) {
      const std::int64_t before = segment_clock_ns();
      const std::int64_t reading = decision_clock_ns();
      const std::int64_t after = segment_clock_ns();
      ASSERT_LE(reading, after) << "ahead of CLOCK_MONOTONIC_RAW at iteration " << i;
      ASSERT_GE(reading, before - 1'000'000) << "at iteration " << i;
      *most_behind = std::max(*most_behind, before - reading);
    }
  };
  std::vector<std::int64_t> behind(3, 0);
  std::vector<std::thread> threads;
  for (std::int64_t& b : behind) threads.emplace_back(run, &b);
  for (std::thread& t : threads) t.join();
  RecordProperty("decision_clock", decision_clock_description());
  RecordProperty("most_behind_ns", std::to_string(*std::max_element(behind.begin(), behind.end())));
}

// What an operator reads (Stats::decision_clock, shmlimit stat, metrics):
// "tsc" with no reason, or "exact" with the description's reason, in
// printable ASCII.
TEST(DecisionClock, InfoIsTscOrExactWithTheDescriptionsReason) {
  const DecisionClockInfo info = decision_clock_info();
  const std::string description = decision_clock_description();
  if (info.clock == "tsc") {
    EXPECT_EQ(info.reason, "");
    EXPECT_EQ(description, "tsc");
  } else {
    EXPECT_EQ(info.clock, "exact");
    EXPECT_NE(info.reason, "");
    EXPECT_EQ(description, "clock_gettime (" + info.reason + ")");
  }
  for (const char c : info.reason) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << info.reason;
}

// Guarantee (4): a thread's readings never decrease, whether extrapolated,
// exact (decision_clock_exact_ns, the claim path's) or re-anchored.
TEST(DecisionClock, AThreadsReadingsNeverDecrease) {
  std::int64_t last = decision_clock_ns();
  for (int i = 0; i < 300'000; ++i) {
    const std::int64_t r = i % 1'000 == 0 ? decision_clock_exact_ns() : decision_clock_ns();
    ASSERT_GE(r, last) << "at iteration " << i;
    last = r;
  }
}

// A thread anchors from its second reading within kTscIntervalNs of the
// first (where the TSC is used); a thread whose readings are further apart
// only ever reads the exact clock.
TEST(DecisionClock, AThreadAnchorsOnlyOnceItDecidesOften) {
  const bool tsc = decision_clock_description() == "tsc";
  tsc_forget_anchor();
  (void)decision_clock_ns();
  EXPECT_EQ(t_tsc_anchor.tsc, 0U) << "one reading: no anchor";
  EXPECT_NE(t_tsc_anchor.last_exact, 0);
  for (int i = 0; i < 100 && t_tsc_anchor.tsc == 0; ++i) (void)decision_clock_ns();
  if (tsc) {
    EXPECT_NE(t_tsc_anchor.tsc, 0U) << "readings close together: anchored";
    EXPECT_NE(t_tsc_anchor.scale.mult, 0U);
  } else {
    EXPECT_EQ(t_tsc_anchor.tsc, 0U) << decision_clock_description();
  }
  // Pretend the last exact reading was long ago: the next is exact, unanchored.
  t_tsc_anchor.tsc = 0;
  t_tsc_anchor.last_exact = segment_clock_ns() - 2 * kTscIntervalNs;
  const std::int64_t before = segment_clock_ns();
  EXPECT_GE(decision_clock_ns(), before);
  EXPECT_EQ(t_tsc_anchor.tsc, 0U);
}

TEST(DecisionClock, AForgottenAnchorMakesTheNextReadingExact) {
  (void)decision_clock_ns();
  tsc_forget_anchor();
  const std::int64_t before = segment_clock_ns();
  const std::int64_t reading = decision_clock_ns();
  EXPECT_GE(reading, before);  // exact: read after `before`
  EXPECT_LE(reading, segment_clock_ns());
}

// ---- SHMLIMIT_CLOCK in a fresh process -----------------------------------------
// The variable is read once per process, when the decision clock
// calibrates, and a forked child keeps its parent's calibration: each case
// runs tests/support/clock_probe.cpp as a new program image with exactly
// the chosen value, and the probe checks from inside that its clock is the
// expected kind, that a busy thread anchors on the TSC exactly when it is
// used, that readings never decrease, and that decisions admit and deny.

struct Probe {
  int status = -1;     // exit status, or -1 if it did not exit
  std::string output;  // its stdout
};

// Runs the probe with SHMLIMIT_CLOCK = `value` (nullptr: unset), expecting
// the clock `want` ("exact" or "tsc").
Probe run_probe(const char* value, const char* want) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "SHMLIMIT_CLOCK=", 15) != 0) env.emplace_back(*e);
  if (value != nullptr) env.push_back(std::string("SHMLIMIT_CLOCK=") + value);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string path = SHMLIMIT_CLOCK_PROBE, arg = want;
  char* argv[] = {path.data(), arg.data(), nullptr};

  int out[2];
  if (::pipe(out) != 0) return {};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  Probe p;
  if (rc != 0) {
    ::close(out[0]);
    p.output = "posix_spawn " + path + ": " + std::strerror(rc);
    return p;
  }
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    p.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) p.status = WEXITSTATUS(status);
  return p;
}

// Why this host refuses the TSC whatever the variable says ("": it does not).
std::string host_refusal() {
  return tsc_clock_refusal(nullptr, tsc_invariant(), current_clocksource());
}

TEST(ClockEnvironment, ExactInAFreshProcessReadsClockGettimeForEveryDecision) {
  const Probe p = run_probe("exact", "exact");
  EXPECT_EQ(p.status, 0) << p.output;
  EXPECT_NE(p.output.find("clock: clock_gettime (SHMLIMIT_CLOCK=exact)\n"), std::string::npos)
      << p.output;
  EXPECT_NE(p.output.find("stats: exact (SHMLIMIT_CLOCK=exact)\n"), std::string::npos) << p.output;
}

TEST(ClockEnvironment, UnsetInAFreshProcessReadsTheTscWhereTheHostAllowsIt) {
  if (const std::string why = host_refusal(); !why.empty())
    GTEST_SKIP() << "this host refuses the TSC (" << why << ")";
  const Probe p = run_probe(nullptr, "tsc");
  EXPECT_EQ(p.status, 0) << p.output;
  EXPECT_NE(p.output.find("clock: tsc\n"), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("stats: tsc\n"), std::string::npos) << p.output;
}

// README "Limits" and doc/design.md "Time": empty, auto and tsc (any case)
// leave the choice to the host; exact (any case) and anything else read
// the exact clock, and the description says why.
TEST(ClockEnvironment, EveryValueInAFreshProcessHasItsDocumentedMeaning) {
  const std::string host = host_refusal();
  const std::string host_clock = host.empty() ? "tsc" : "clock_gettime (" + host + ")";
  const char* host_kind = host.empty() ? "tsc" : "exact";
  struct Row {
    const char* value;
    const char* kind;  // nullptr: as the host allows
    std::string clock;
  };
  const Row rows[] = {
      {"", nullptr, host_clock},
      {"tsc", nullptr, host_clock},
      {"AUTO", nullptr, host_clock},
      {"EXACT", "exact", "clock_gettime (SHMLIMIT_CLOCK=EXACT)"},
      {"garbage", "exact", "clock_gettime (SHMLIMIT_CLOCK=\"garbage\" is not auto, tsc or exact)"},
      {"exact\t", "exact",
       "clock_gettime (SHMLIMIT_CLOCK=\"exact\\x09\" is not auto, tsc or exact)"},
  };
  for (const Row& r : rows) {
    const Probe p = run_probe(r.value, r.kind != nullptr ? r.kind : host_kind);
    EXPECT_EQ(p.status, 0) << "SHMLIMIT_CLOCK=\"" << r.value << "\": " << p.output;
    EXPECT_NE(p.output.find("clock: " + r.clock + "\n"), std::string::npos)
        << "SHMLIMIT_CLOCK=\"" << r.value << "\": " << p.output;
    // Limiter::stats().decision_clock: "tsc", or "exact" and the same reason.
    const std::string stats =
        r.clock == "tsc" ? "tsc" : "exact " + r.clock.substr(std::strlen("clock_gettime "));
    EXPECT_NE(p.output.find("stats: " + stats + "\n"), std::string::npos)
        << "SHMLIMIT_CLOCK=\"" << r.value << "\": " << p.output;
  }
}

}  // namespace
}  // namespace shmlimit::detail
