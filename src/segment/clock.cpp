// The clocks of segment/clock.hpp.
#include "segment/clock.hpp"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace shmlimit::detail {

namespace {

std::int64_t read_ns(clockid_t id) noexcept {
  timespec ts;
  ::clock_gettime(id, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

std::int64_t segment_clock_ns() noexcept { return read_ns(CLOCK_MONOTONIC_RAW); }
std::int64_t monotonic_ns() noexcept { return read_ns(CLOCK_MONOTONIC); }
std::int64_t realtime_ns() noexcept { return read_ns(CLOCK_REALTIME); }

TscRate tsc_rate_from(const TscBrackets& b) noexcept {
  const std::int64_t span = b.ns1 - b.ns0;
  if (span < 1'000 || b.hi1 <= b.lo0) return {};
  const __uint128_t low = (static_cast<__uint128_t>(span - 1) << kTscShift) / (b.hi1 - b.lo0);
  // 1 ps .. 100 ns per tick (a 10 MHz .. 1 THz counter); else not a TSC.
  if (low < (std::uint64_t{1} << kTscShift) / 1000 || low > (std::uint64_t{100} << kTscShift))
    return {};
  TscRate r;
  r.low = static_cast<std::uint64_t>(low);
  r.high = UINT64_MAX;
  if (b.lo1 > b.hi0) {
    const __uint128_t high =
        (static_cast<__uint128_t>(span + 1) << kTscShift) / (b.lo1 - b.hi0) + 1;
    if (high < UINT64_MAX) r.high = static_cast<std::uint64_t>(high);
  }
  return r;
}

TscScale tsc_scale_of(const TscRate& r) noexcept {
  if (r.low == 0) return {};
  // 64-bit divisions: the dividends are below 2^59.
  TscScale s;
  s.mult = r.low;
  s.max_ticks = (static_cast<std::uint64_t>(kTscIntervalNs) << kTscShift) / r.low;
  if (r.high > r.low)
    s.max_ticks = std::min(s.max_ticks,
                           (static_cast<std::uint64_t>(kTscLagNs) << kTscShift) / (r.high - r.low));
  s.span_ticks = (static_cast<std::uint64_t>(kTscAnchorSpanNs) << kTscShift) / r.low;
  return s;
}

bool tsc_extrapolation_behind(const TscPoint& a, std::uint64_t lo, std::int64_t ns) noexcept {
  if (a.mult == 0 || a.ns == 0 || lo < a.tsc) return true;
  const std::uint64_t d = lo - a.tsc;
  if (d > (std::uint64_t{1} << 40)) return true;
  const __uint128_t gained = (static_cast<__uint128_t>(d) * a.mult) >> kTscShift;
  return a.ns + static_cast<std::int64_t>(gained) <= ns;
}

namespace {

bool equals_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// `value` quoted for a message: printable ASCII as is, any other byte as
// \xNN, cut after 32 bytes.
std::string quoted(std::string_view value) {
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size() && i < 32; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  out += value.size() > 32 ? "\"..." : "\"";
  return out;
}

}  // namespace

std::string tsc_clock_refusal(const char* env, bool invariant_tsc, const std::string& clocksource) {
  if (env != nullptr && *env != '\0') {
    const std::string_view v(env);
    if (equals_ignoring_case(v, "exact")) return "SHMLIMIT_CLOCK=" + std::string(v);
    // Not a word this library knows: the exact clock, always right, and the
    // description says why.
    if (!equals_ignoring_case(v, "auto") && !equals_ignoring_case(v, "tsc"))
      return "SHMLIMIT_CLOCK=" + quoted(v) + " is not auto, tsc or exact";
  }
  if (!invariant_tsc) return "no invariant TSC";
  if (clocksource.empty()) return "clocksource unknown";
  if (clocksource != "tsc" && clocksource != "kvm-clock") return "clocksource " + clocksource;
  return {};
}

bool tsc_invariant() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) == 0 || a < 0x80000007) return false;
  __get_cpuid(0x80000007, &a, &b, &c, &d);
  return (d & (1U << 8)) != 0;
#else
  return false;
#endif
}

std::string current_clocksource() {
  std::ifstream f("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  std::string source;
  if (!(f >> source)) source.clear();
  return source;
}

#if defined(__x86_64__) || defined(__i386__)
namespace {

// The ordered TSC read: RDTSCP waits for every earlier instruction (the
// clock_gettime before it) to execute.
std::uint64_t tsc_ordered() noexcept {
  unsigned aux;
  return __rdtscp(&aux);
}

// The process's decision clock. Calibrated once (calibrate(), under
// `once`, at the first anchor); the rate's bounds only move inward.
struct DecisionClock {
  std::once_flag once;
  std::atomic<bool> ready{false};     // calibrate() has run (release)
  std::string why_not;                // empty: the TSC is used (written under `once`)
  TscBrackets first{};                // the calibration's readings (written under `once`)
  std::atomic<std::uint64_t> low{0};  // the rate's bounds (TscRate)
  std::atomic<std::uint64_t> high{0};
  std::atomic<std::int64_t> next_refine{0};  // when to re-measure the bounds
  std::atomic<bool> failed{false};           // guarantee (3) tripped
};

// Never destroyed: a thread may still decide while the process exits.
DecisionClock& decision_clock() noexcept {
  static DecisionClock* const c = new DecisionClock;
  return *c;
}

std::string unusable_reason() {
  return tsc_clock_refusal(std::getenv("SHMLIMIT_CLOCK"), tsc_invariant(), current_clocksource());
}

void calibrate(DecisionClock& c) {
  c.why_not = unusable_reason();
  if (c.why_not.empty()) {
    // Two exact readings kTscCalibrationNs apart, each between two TSC reads.
    TscBrackets b{};
    b.lo0 = tsc_ordered();
    b.ns0 = segment_clock_ns();
    b.hi0 = tsc_ordered();
    b.ns1 = b.ns0;
    for (int i = 0; i < 1'000'000 && b.ns1 - b.ns0 < kTscCalibrationNs; ++i) {
      b.lo1 = tsc_ordered();
      b.ns1 = segment_clock_ns();
      b.hi1 = tsc_ordered();
    }
    const TscRate r = tsc_rate_from(b);
    if (r.low == 0) {
      c.why_not = "TSC calibration failed";
    } else {
      c.first = b;
      c.low.store(r.low, std::memory_order_relaxed);
      c.high.store(r.high, std::memory_order_relaxed);
      c.next_refine.store(b.ns1 + 2 * (b.ns1 - b.ns0), std::memory_order_relaxed);
    }
  }
  c.ready.store(true, std::memory_order_release);
}

// The process's scale. At spans doubling from the first reading (so
// rarely), the rate is re-measured from the first reading to `ns` (taken
// between TSC reads lo and hi) and each bound moves inward. Relaxed: any
// value ever stored is a valid bound, and a scale paired with an older
// bound's interval only ends its anchor sooner.
TscScale process_scale(DecisionClock& c, std::uint64_t lo, std::int64_t ns,
                       std::uint64_t hi) noexcept {
  TscRate r{c.low.load(std::memory_order_relaxed), c.high.load(std::memory_order_relaxed)};
  if (ns >= c.next_refine.load(std::memory_order_relaxed)) {
    c.next_refine.store(ns + (ns - c.first.ns0), std::memory_order_relaxed);
    TscBrackets b = c.first;
    b.ns1 = ns;
    b.lo1 = lo;
    b.hi1 = hi;
    const TscRate now = tsc_rate_from(b);
    if (now.low != 0) {
      while (now.low > r.low &&
             !c.low.compare_exchange_weak(r.low, now.low, std::memory_order_relaxed)) {
      }
      while (now.high < r.high &&
             !c.high.compare_exchange_weak(r.high, now.high, std::memory_order_relaxed)) {
      }
      r.low = std::max(r.low, now.low);
      r.high = std::min(r.high, now.high);
    }
  }
  return tsc_scale_of(r);
}

}  // namespace

std::int64_t tsc_reanchor(std::uint64_t lo) noexcept {
  const std::int64_t ns = segment_clock_ns();
  TscAnchor& a = t_tsc_anchor;
  // Decisions further apart than an anchor could serve: exact, no anchor
  // (an extrapolation would never be used), and the thread's next
  // decision, if it comes sooner, anchors.
  const bool busy = a.last_exact != 0 && ns - a.last_exact < kTscIntervalNs;
  a.last_exact = ns;
  a.tsc = 0;  // no anchor unless one is taken below: the next reading is exact
  a.ns = 0;
  if (!busy) return ns;
  DecisionClock& c = decision_clock();
  if (!c.ready.load(std::memory_order_acquire)) {
    try {
      std::call_once(c.once, calibrate, c);
    } catch (...) {
      return ns;  // (allocation, std::system_error) exact, and tried again next time
    }
  }
  if (!c.why_not.empty()) return ns;
  if (!tsc_extrapolation_behind(a.checked, lo, ns)) c.failed.store(true, std::memory_order_relaxed);
  if (c.failed.load(std::memory_order_relaxed)) return ns;
  const std::uint64_t hi = tsc_ordered();
  const TscScale s = process_scale(c, lo, ns, hi);
  a.scale = s;
  // An anchor taken in one piece only (the thread was not stopped between
  // its two TSC reads): else the next reading is exact.
  if (hi < lo || hi - lo > s.span_ticks) return ns;
  a.tsc = hi;
  a.ns = ns;
  a.checked = TscPoint{hi, ns, s.mult};
  return ns;
}

std::string decision_clock_refusal() {
  DecisionClock& c = decision_clock();
  std::call_once(c.once, calibrate, c);  // (not noexcept)
  if (!c.why_not.empty()) return c.why_not;
  if (c.failed.load(std::memory_order_relaxed)) return "the TSC ran ahead of CLOCK_MONOTONIC_RAW";
  return {};
}

#else

std::int64_t tsc_reanchor(std::uint64_t) noexcept { return segment_clock_ns(); }
std::string decision_clock_refusal() { return "no TSC on this architecture"; }

#endif

std::string decision_clock_description() {
  const std::string why = decision_clock_refusal();
  return why.empty() ? "tsc" : "clock_gettime (" + why + ")";
}

}  // namespace shmlimit::detail
