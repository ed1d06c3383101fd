// The segment's clocks.
//
// Time in a segment is CLOCK_MONOTONIC_RAW, stored relative to the
// segment's epoch (Header::epoch_raw_ns). Linux keeps it system-wide, so
// readings of different processes are comparable, and unlike
// CLOCK_MONOTONIC it is never slewed: NTP daemons change CLOCK_MONOTONIC's
// rate (chronyd by up to 8.3% while it corrects an offset) but not RAW's,
// which counts the clocksource at a fixed scale. That fixed scale is what
// lets the decision clock below extrapolate it from the TSC exactly. A
// rate limit's "second" is then the hardware's second, off by its
// crystal's error (parts per million), never by a correction in progress.
//
// CLOCK_MONOTONIC stays the clock of deadlines and sleeps (steady_clock,
// clock_nanosleep); CLOCK_REALTIME is for display only (created_unix_ns,
// wall-clock times in dumps and exports).
//
// The decision clock (decision_clock_ns) is what acquire and peek read: the
// TSC, read without ordering, scaled from the thread's last exact reading
// (its anchor). clock_gettime is an ordered TSC read (RDTSCP) plus a
// seqlock, about 30 ns on the bench machine against 12 for a plain RDTSC,
// and a lock-free decision's CAS has to wait for it (bench/README.md).
//
// Guarantees (doc/design.md, "Time")
//   (1) Never ahead of segment_clock_ns(). The anchor's TSC is read after
//       its clock_gettime, and the scale is a lower bound of the rate: the
//       ns between two exact readings (less 1 for truncation) over the
//       widest TSC span that can hold them. RAW is linear in the TSC, so
//       a lower bound measured once holds for good.
//   (2) Behind by at most kTscLagNs plus the anchor's own span: the same
//       two readings also give an upper bound of the rate, and an anchor
//       serves only as many ticks as keep the difference of the bounds
//       under kTscLagNs (and kTscIntervalNs at most). The first
//       calibration spans 200 us, good for about 0.4 ms per anchor; every
//       later anchor re-measures from the process's first reading, so the
//       bounds close in (about a ppm after 67 ms) and the anchors lengthen
//       to kTscIntervalNs. An anchor whose clock_gettime took longer than
//       kTscAnchorSpanNs (the thread was preempted around it) is not kept.
//   (3) If the host breaks the premise (a TSC that is not invariant and
//       synchronised across CPUs, a clocksource changed under us), a
//       reading is still never more than kTscIntervalNs past its anchor;
//       every new anchor checks the old one's extrapolation against the
//       exact clock and, if it ran ahead, switches the process to
//       clock_gettime for good.
//   (4) Never decreasing within a thread: an extrapolation never passes
//       the exact clock, a new anchor is an exact reading, and every
//       reading of a thread extrapolates its latest anchor.
//   The algorithms tolerate a reading behind another process's (readings
//   may arrive out of order); the paths that must not start a bucket before
//   another process's reading (a claim after a failed lookup) read the
//   exact clock (decision_clock_exact_ns).
//
// The TSC is used only where it is invariant (CPUID 0x80000007 EDX bit 8),
// the kernel keeps time with it (clocksource tsc or kvm-clock) and
// SHMLIMIT_CLOCK is unset, empty, "auto" or "tsc" (any case); elsewhere,
// with "exact" or any value not understood, every reading is exact
// (tsc_clock_refusal). The variable is read once per process, when it
// calibrates (its first anchor): a child forked after that keeps its
// parent's choice, a new program image reads it again.
#pragma once

#include <cstdint>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace shmlimit::detail {

/// CLOCK_MONOTONIC_RAW in ns: the segment's time base. Thread- and
/// process-safe, wait-free (a vDSO read).
std::int64_t segment_clock_ns() noexcept;
/// CLOCK_MONOTONIC (deadlines and sleeps) and CLOCK_REALTIME (display), ns.
std::int64_t monotonic_ns() noexcept;
std::int64_t realtime_ns() noexcept;

// ---- the decision clock ------------------------------------------------------
inline constexpr unsigned kTscShift = 32;                   // ns = ticks * mult >> kTscShift
inline constexpr std::int64_t kTscIntervalNs = 1 << 26;     // 67 ms between exact readings
inline constexpr std::int64_t kTscAnchorSpanNs = 2'000;     // an anchor read within 2 us
inline constexpr std::int64_t kTscLagNs = 200;              // the scale's error per anchor
inline constexpr std::int64_t kTscCalibrationNs = 200'000;  // the first measurement

/// The scale of TSC ticks to ns. mult == 0: no TSC clock (every reading
/// is exact).
struct TscScale {
  std::uint64_t mult = 0;        // ns per tick, times 2^kTscShift (rounded down)
  std::uint64_t max_ticks = 0;   // ticks an anchor serves (tsc_scale_of)
  std::uint64_t span_ticks = 0;  // ticks of kTscAnchorSpanNs
};

/// An anchor as the self-check (guarantee (3)) needs it. Zero = none.
struct TscPoint {
  std::uint64_t tsc = 0;
  std::int64_t ns = 0;
  std::uint64_t mult = 0;
};

/// One thread's decision clock: its anchor, the exact reading `ns` taken
/// no later than TSC value `tsc` (zero: none, the next reading is exact),
/// and the process's scale (copied, so the hot path reads one
/// thread-local line and nothing shared); then, off the hot path, when it
/// last read the exact clock and its last anchor, kept for the self-check.
struct alignas(64) TscAnchor {
  std::uint64_t tsc = 0;
  std::int64_t ns = 0;
  TscScale scale;
  std::int64_t last_exact = 0;
  TscPoint checked;
};
inline thread_local TscAnchor t_tsc_anchor;

/// Two exact readings ns0 < ns1, each taken between two TSC reads:
/// ns0 in [lo0, hi0], ns1 in [lo1, hi1].
struct TscBrackets {
  std::int64_t ns0;
  std::uint64_t lo0, hi0;
  std::int64_t ns1;
  std::uint64_t lo1, hi1;
};

/// The bounds of the rate (ns per tick, times 2^kTscShift) that two
/// readings allow: low = (ns1 - ns0 - 1) / (hi1 - lo0) (each reading is
/// truncated to a whole ns), high = (ns1 - ns0 + 1) / (lo1 - hi0), or
/// UINT64_MAX when the brackets overlap. {0, 0} when they allow no rate:
/// a span under 1 us, a TSC that did not advance, or a low bound outside
/// 1 ps .. 100 ns per tick.
struct TscRate {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
};
TscRate tsc_rate_from(const TscBrackets& b) noexcept;

/// The scale of rate bounds `r`: the low bound, over as many ticks as keep
/// (high - low) * ticks under kTscLagNs, kTscIntervalNs at most.
/// mult == 0 when r.low == 0.
TscScale tsc_scale_of(const TscRate& r) noexcept;

/// A reading at TSC value `tsc` from anchor `a`: true and `*ns` when `tsc`
/// lies in the anchor's interval (not before it, at most max_ticks after),
/// false when an exact reading is due. Pure: the hot path's step.
inline bool tsc_extrapolate(const TscAnchor& a, std::uint64_t tsc, std::int64_t* ns) noexcept {
  const std::uint64_t d = tsc - a.tsc;  // wraps when tsc < a.tsc: > max_ticks
  if (d > a.scale.max_ticks) return false;
  *ns = a.ns + static_cast<std::int64_t>((d * a.scale.mult) >> kTscShift);
  return true;
}

/// Whether anchor `a`, extrapolated to TSC value `lo`, is at or behind
/// the exact reading `ns` taken at a TSC value >= `lo` (guarantee (3)).
/// An empty anchor, or `lo` before it or 2^40 ticks after it, is not
/// compared (true).
bool tsc_extrapolation_behind(const TscPoint& a, std::uint64_t lo, std::int64_t ns) noexcept;

/// Why the TSC is not used, from SHMLIMIT_CLOCK (nullptr: unset), CPUID's
/// invariant-TSC bit and the kernel's current clocksource; empty: it is.
/// SHMLIMIT_CLOCK, case aside: unset, empty, `auto` or `tsc` leave the
/// choice to the host (the TSC is never forced); `exact` refuses it; any
/// other value refuses it too, and the reason quotes the value
/// ("SHMLIMIT_CLOCK=\"x\" is not auto, tsc or exact"): the exact clock is
/// always right, a typo must not cost correctness.
std::string tsc_clock_refusal(const char* env, bool invariant_tsc, const std::string& clocksource);

/// The host's facts tsc_clock_refusal() weighs: CPUID 0x80000007 EDX bit 8
/// (false off x86), and the kernel's current clocksource ("" unknown).
bool tsc_invariant() noexcept;
std::string current_clocksource();

/// The out-of-line step of decision_clock_ns(): an exact reading, kept as
/// the thread's new anchor when the thread decides often enough to use
/// one (its previous exact reading was less than kTscIntervalNs ago) and
/// the reading was taken in one piece; calibrates the process at its
/// first anchor. `lo`: the TSC value read just before.
std::int64_t tsc_reanchor(std::uint64_t lo) noexcept;

/// segment_clock_ns() read for a decision: never ahead of it, a little
/// behind at most (guarantees above).
inline std::int64_t decision_clock_ns() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  const std::uint64_t tsc = __rdtsc();  // unordered: an early read is still a lower bound
  std::int64_t ns;
  if (tsc_extrapolate(t_tsc_anchor, tsc, &ns)) [[likely]]
    return ns;
  return tsc_reanchor(tsc);
#else
  return segment_clock_ns();
#endif
}

/// segment_clock_ns(), exact, with this thread's anchor moved to it (so
/// its next decision_clock_ns() readings are not earlier).
inline std::int64_t decision_clock_exact_ns() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return tsc_reanchor(__rdtsc());
#else
  return segment_clock_ns();
#endif
}

/// Why decision_clock_ns() reads clock_gettime in this process, or empty
/// when it reads the TSC: tsc_clock_refusal()'s reason, "TSC calibration
/// failed", "the TSC ran ahead of CLOCK_MONOTONIC_RAW" (guarantee (3)) or
/// "no TSC on this architecture". Printable ASCII only (a SHMLIMIT_CLOCK
/// value is quoted byte by byte). Calibrates if it has not yet; thread-safe.
std::string decision_clock_refusal();

/// What decision_clock_ns() reads in this process: "tsc" or
/// "clock_gettime (<why>)" (decision_clock_refusal()). Calibrates if it
/// has not yet.
std::string decision_clock_description();

/// Forget this thread's clock: its next decision_clock_ns() is exact and
/// takes no anchor, as a thread's first decision, or one long after its
/// last (benchmarks of that path, tests).
inline void tsc_forget_anchor() noexcept { t_tsc_anchor = TscAnchor{}; }

}  // namespace shmlimit::detail
