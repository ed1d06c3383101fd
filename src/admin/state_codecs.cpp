// The per-algorithm codecs of state export/import (doc/state-format.md):
// one table (kCodecs) turns a state word into named fields and back; an
// algorithm without an entry is not exported (counted under
// "not_exported"). The bit layouts are those of state_codec.hpp, used by
// the algorithms (src/algorithms/buckets.cpp, windows.cpp) and
// doc/algorithms.md; the round-trip tests (tests/unit/state_io_test.cpp)
// fail if they drift apart. Also the sliding log's codec (its admissions)
// and the conversion between a segment's clock and the wall clock.
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "admin/state_io.hpp"
#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/sliding_log.hpp"
#include "algorithms/state_codec.hpp"
#include "segment/clock.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail::state_io {

using detail::state_codec::FixedWindow;
using detail::state_codec::QuietPeriod;
using detail::state_codec::SlidingWindow;
using detail::state_codec::TokenBucket;

Clock clock_of(const Limiter& limiter) {
  Clock c;
  c.now = limiter.now().count();
  c.unix_offset = detail::realtime_ns() - c.now;
  return c;
}

namespace {

/// Index of the target window/refill period whose end is at or after the
/// source window's end: windows re-align to the target's epoch, and a count
/// never ends sooner than on the source (at most one period later).
u64 realigned_index(i64 start, u64 period) {
  const i64 last = start + static_cast<i64>(period) - 1;
  return last <= 0 ? 0 : static_cast<u64>(last) / period;
}

// GCRA and the leaky bucket: one absolute time.
template <const char* kField>
void encode_time(const AlgoParams&, u64 state, const Clock& c, Json& out) {
  out[kField] = iso8601(c.wall(static_cast<i64>(state)));
}
template <const char* kField>
u64 decode_time(const AlgoParams& p, const Fields& f, const Clock& c) {
  const i64 t = f.time(kField, c);
  f.not_after(t, c.now + static_cast<i64>(p.burst * p.emission_ns) + kFutureSlackNs, kField);
  return static_cast<u64>(std::max<i64>(t, 0));
}
constexpr char kTat[] = "tat";
constexpr char kEmptyAt[] = "empty_at";

// A period's start (at most one period ahead) as its period's index, and a
// count up to max: the token bucket's and the fixed window's fields.
std::pair<u64, u64> decode_period_count(const AlgoParams& p, const Fields& f, const Clock& c,
                                        const char* start_field, const char* count_field, u64 max) {
  const i64 start = f.time(start_field, c);
  f.not_after(start, c.now + static_cast<i64>(p.period_ns) + kFutureSlackNs, start_field);
  const u64 count = f.count(count_field, max);
  return {realigned_index(start, p.period_ns), count};
}

// Token bucket (state_codec.hpp: refill index, tokens missing).
void encode_tb(const AlgoParams& p, u64 state, const Clock& c, Json& out) {
  const TokenBucket stored = TokenBucket::unpack(state);
  u64 index = stored.index, missing = stored.missing;
  const u64 cur = static_cast<u64>(std::max<i64>(c.now, 0)) / p.period_ns;
  if (cur > index) {  // refills since the last update, as the algorithm counts them
    const __uint128_t refill = static_cast<__uint128_t>(cur - index) * p.count;
    missing = refill >= missing ? 0 : missing - static_cast<u64>(refill);
    index = cur;
  }
  out["period_start"] = iso8601(c.wall(static_cast<i64>(index * p.period_ns)));
  out["missing"] = missing;
}
// `missing` above burst is a debt of queued reservations (reserve.hpp), so
// the bound is the field's, 2^20 - 1, not the burst.
u64 decode_tb(const AlgoParams& p, const Fields& f, const Clock& c) {
  constexpr u64 kMaxMissing = (u64{1} << TokenBucket::kMissingBits) - 1;
  if (const u64 n = f.count("missing", std::numeric_limits<u64>::max()); n > kMaxMissing) {
    bad(f.where() + ": state.missing " + std::to_string(n) +
        " is above 1048575, the most a token bucket's state counts (its burst and a queue of "
        "reservations)");
  }
  const auto [index, missing] =
      decode_period_count(p, f, c, "period_start", "missing", kMaxMissing);
  return TokenBucket{index, missing}.pack();
}

// Fixed window (state_codec.hpp: window index, used).
void encode_fw(const AlgoParams& p, u64 state, const Clock& c, Json& out) {
  const FixedWindow s = FixedWindow::unpack(state);
  out["window_start"] = iso8601(c.wall(static_cast<i64>(s.index * p.period_ns)));
  out["used"] = s.used;
}
u64 decode_fw(const AlgoParams& p, const Fields& f, const Clock& c) {
  const auto [index, used] = decode_period_count(p, f, c, "window_start", "used", p.count);
  return FixedWindow{index, used}.pack();
}

// Sliding window (state_codec.hpp: window index mod 2^24, previous, current).
// The full index is recovered as the algorithm does (src/algorithms/windows.cpp sw_at).
void encode_sw(const AlgoParams& p, u64 state, const Clock& c, Json& out) {
  const u64 W = p.period_ns;
  const u64 k = static_cast<u64>(std::max<i64>(c.now, 0)) / W;
  const SlidingWindow s = SlidingWindow::unpack(state);
  const u64 stored = s.index;
  u64 prev = s.prev, cur = s.cur;
  const u64 ahead = (stored - k) & SlidingWindow::kIndexMask;
  const bool wraps = (static_cast<__uint128_t>(W) << SlidingWindow::kIndexBits) <=
                     static_cast<__uint128_t>(detail::kClockHorizonNs);
  const u64 tolerance = (10'000'000'000ULL + W - 1) / W;
  u64 index = k;
  if (ahead ==
      SlidingWindow::kIndexMask) {  // stored = k - 1: its current window is now the previous one
    prev = cur;
    cur = 0;
  } else if (ahead != 0) {
    index = k + ahead;  // an older reading met a newer state (not full: see the caller)
    if (!wraps ? stored <= k : ahead > tolerance) prev = cur = 0;
  }
  out["window_start"] = iso8601(c.wall(static_cast<i64>(index * W)));
  out["previous"] = prev;
  out["current"] = cur;
}
u64 decode_sw(const AlgoParams& p, const Fields& f, const Clock& c) {
  const i64 start = f.time("window_start", c);
  f.not_after(start, c.now + static_cast<i64>(p.period_ns) + kFutureSlackNs, "window_start");
  const u64 prev = f.count("previous", p.count);
  const u64 cur = f.count("current", p.count);
  return SlidingWindow{realigned_index(start, p.period_ns), prev, cur}.pack();
}

// Quiet period (state_codec.hpp: expiry in ms since the epoch, rounded up;
// used, or kBlocked until the expiry).
void encode_qp(const AlgoParams&, u64 state, const Clock& c, Json& out) {
  const QuietPeriod s = QuietPeriod::unpack(state);
  out["expires_at"] = iso8601(c.wall(static_cast<i64>(s.expires_ms * kMs)));
  out["blocked"] = s.used == QuietPeriod::kBlocked;
  out["used"] = s.used == QuietPeriod::kBlocked ? 0 : s.used;
}
u64 decode_qp(const AlgoParams& p, const Fields& f, const Clock& c) {
  const i64 t = f.time("expires_at", c);
  f.not_after(t, c.now + static_cast<i64>(p.period_ns) + kMs + kFutureSlackNs, "expires_at");
  const bool blocked = f.flag("blocked");
  const u64 used = f.count("used", p.count);
  const u64 ms =
      t <= 0 ? 0 : static_cast<u64>((t + kMs - 1) / kMs);  // rounded up, as the algorithm does
  return QuietPeriod{ms, blocked ? QuietPeriod::kBlocked : used}.pack();
}

constexpr std::array kCodecs{
    Codec{Algorithm::kGcra, encode_time<kTat>, decode_time<kTat>},
    Codec{Algorithm::kLeakyBucket, encode_time<kEmptyAt>, decode_time<kEmptyAt>},
    Codec{Algorithm::kTokenBucket, encode_tb, decode_tb},
    Codec{Algorithm::kFixedWindow, encode_fw, decode_fw},
    Codec{Algorithm::kSlidingWindow, encode_sw, decode_sw},
    Codec{Algorithm::kQuietPeriod, encode_qp, decode_qp},
};

}  // namespace

// Sliding log: its state is the key's admissions, kept in the slot's log
// entries rather than in the word, so it has no entry in kCodecs. Export
// lists the live admission times (oldest first); import re-encodes them
// against the target's clock and the target slot's version
// (Limiter::Impl::store_bucket), and the word becomes the time the log is empty.
void encode_log(const std::vector<i64>& admissions, const Clock& c, Json& out) {
  Json times = Json::array();
  for (const i64 t : admissions) times.push_back(iso8601(c.wall(t)));
  out["admissions"] = std::move(times);
}
/// The admissions still live at the target's now (an expired one is the
/// same as none), oldest first; the word is max(t) + D, 0 when none is.
std::vector<i64> decode_log(const AlgoParams& p, const Json& state, const std::string& where,
                            const Clock& c, u64* word) {
  if (!state.is_object()) bad(where + ": \"state\" must be an object");
  if (!state.contains("admissions") || !state["admissions"].is_array()) {
    bad(where + ": state.admissions must be an array of ISO 8601 UTC times");
  }
  const Json& a = state["admissions"];
  if (a.size() > p.count) {
    bad(where + ": state.admissions holds " + std::to_string(a.size()) +
        " times, above the policy's " + std::to_string(p.count));
  }
  std::vector<i64> live;
  for (std::size_t i = 0; i < a.size(); ++i) {
    Json one;
    one["t"] = a[i];
    const Fields f(one, where + ": state.admissions[" + std::to_string(i) + "]");
    const i64 t = f.time("t", c);
    f.not_after(t, c.now + kFutureSlackNs, "t");
    if (c.now - t < static_cast<i64>(p.period_ns)) live.push_back(std::max<i64>(t, 0));
  }
  std::sort(live.begin(), live.end());
  *word = live.empty() ? 0 : detail::log_word_after(0, live.back(), p.period_ns);
  return live;
}

const char* wait_name(LogWait w) { return w == LogWait::kDrf ? "drf" : "exact"; }

const Codec* codec_of(Algorithm a) {
  for (const Codec& c : kCodecs) {
    if (c.algorithm == a) return &c;
  }
  return nullptr;
}

AlgoParams algo_of(const PolicySpec& s) {
  const u64 period = static_cast<u64>(s.rate.period.count());
  return AlgoParams{
      s.algorithm, s.rate.count, period, s.burst, detail::gcra_emission(s.rate.count, period),
      s.wait};
}

}  // namespace shmlimit::detail::state_io
