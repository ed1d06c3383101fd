// Run by the ClockEnvironment tests (tests/unit/clock_test.cpp) as a fresh
// program image, so that the decision clock calibrates from this process's
// own SHMLIMIT_CLOCK (a forked child would keep its parent's calibration).
//
//   shmlimit_clock_probe exact|tsc
//
// Prints `clock: <decision_clock_description()>` and `stats: <clock>
// [(<reason>)]` (Limiter::stats().decision_clock), and checks, from inside:
// the description is the expected kind (exact: "clock_gettime (...)",
// tsc: "tsc"); Stats::decision_clock and decision_clock_info() say the
// same (exact: "exact" and the description's reason); a thread deciding
// often anchors on the TSC exactly when it is used; readings never
// decrease and are never ahead of CLOCK_MONOTONIC_RAW; real decisions
// through Limiter::acquire (which read the decision clock) admit a burst
// and then deny. Exit 0 when every check held, else 1 with `FAIL: ...`
// lines; 2 on a usage error.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "segment/clock.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace shmlimit;
  using namespace shmlimit::detail;
  const std::string want = argc == 2 ? argv[1] : "";
  if (want != "exact" && want != "tsc") {
    std::fprintf(stderr, "usage: shmlimit_clock_probe exact|tsc\n");
    return 2;
  }
  // Readings close together, as a busy thread's: it anchors where the TSC
  // is used, never where it is not.
  bool anchored = false;
  std::int64_t last = decision_clock_ns();
  for (int i = 0; i < 200'000; ++i) {
    const std::int64_t r = i % 1'000 == 0 ? decision_clock_exact_ns() : decision_clock_ns();
    const std::int64_t after = segment_clock_ns();
    if (r < last) {
      check(false, "reading " + std::to_string(i) + " decreased: " + std::to_string(r) + " < " +
                       std::to_string(last));
      break;
    }
    if (r > after) {
      check(false, "reading " + std::to_string(i) + " ahead of CLOCK_MONOTONIC_RAW");
      break;
    }
    last = r;
    anchored = anchored || t_tsc_anchor.tsc != 0;
  }
  const std::string clock = decision_clock_description();
  std::printf("clock: %s\n", clock.c_str());
  if (want == "exact") {
    check(clock.rfind("clock_gettime (", 0) == 0, "expected the exact clock, got " + clock);
    check(!anchored, "a thread anchored on the TSC with the exact clock");
  } else {
    check(clock == "tsc", "expected the TSC, got " + clock);
    check(anchored, "a busy thread never anchored on the TSC");
  }

  // Decisions on the decision clock: a burst of 3, then a denial with a wait.
  Options o;
  o.name = "/shmlimit-clock-probe-" + std::to_string(::getpid());
  o.capacity = 64;
  try {
    Limiter::remove(o.name);
    Limiter l = Limiter::create(o);
    PolicySpec spec;
    spec.name = "probe";
    spec.rate = parse_rate("1/m");
    spec.burst = 3;
    const PolicyId id = l.add_policy(spec);
    for (int i = 0; i < 3; ++i)
      check(l.acquire(id, "key").allowed, "acquire " + std::to_string(i) + " of the burst denied");
    const Decision d = l.acquire(id, "key");
    check(!d.allowed, "the 4th acquire of a burst of 3 allowed");
    check(d.retry_after.count() > 0, "a denial without a wait");

    // The clock as an operator reads it: the same in stats() as here.
    const DecisionClockInfo info = l.stats().decision_clock;
    std::printf("stats: %s%s\n", info.clock.c_str(),
                info.reason.empty() ? "" : (" (" + info.reason + ")").c_str());
    const DecisionClockInfo direct = decision_clock_info();
    check(info.clock == direct.clock && info.reason == direct.reason,
          "stats().decision_clock differs from decision_clock_info()");
    if (want == "exact") {
      check(info.clock == "exact", "stats: expected exact, got " + info.clock);
      check("clock_gettime (" + info.reason + ")" == clock,
            "stats' reason \"" + info.reason + "\" is not the description's");
    } else {
      check(info.clock == "tsc" && info.reason.empty(),
            "stats: expected tsc, got " + info.clock + " (" + info.reason + ")");
    }
    Limiter::remove(o.name);
  } catch (const Error& e) {
    check(false, std::string("limiter: ") + e.what());
    Limiter::remove(o.name);
  }
  std::fflush(stdout);
  return failures == 0 ? 0 : 1;
}
