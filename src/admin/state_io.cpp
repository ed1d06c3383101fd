// Export and import of live bucket state as JSON (doc/state-format.md):
// Limiter::export_state() and Limiter::import_state().
//
// Times in the document are wall-clock instants (ISO 8601 UTC with ns). A
// segment's times are ns since its own CLOCK_MONOTONIC epoch; export adds
// the offset (CLOCK_REALTIME - segment time) read once at export, import
// subtracts the target segment's offset read once at import. The target may
// have another epoch (another host, or after a reboot).
//
// One table of per-algorithm codecs (kCodecs) turns a state word into named
// fields and back; an algorithm without an entry is not exported (counted
// under "not_exported"). The bit layouts decoded here are those of
// src/algorithms/state_codec.hpp and doc/algorithms.md; the round-trip tests
// (tests/unit/state_io_test.cpp) fail if they drift apart.
//
// Thread and process safety: export reads like dump() (never writes);
// import validates the whole document before its first write, then writes
// each bucket like a decision does (claim, then CAS of the state word).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <string_view>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/state_codec.hpp"
#include "limiter/limiter_impl.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "algorithms/sliding_log.hpp"

namespace shmlimit {
namespace {

using Json = nlohmann::ordered_json;
using detail::AlgoParams;
using detail::state_codec::FixedWindow;
using detail::state_codec::QuietPeriod;
using detail::state_codec::SlidingWindow;
using detail::state_codec::TokenBucket;
using detail::u64;
using i64 = std::int64_t;

constexpr std::string_view kFormat = "shmlimit-state";
constexpr int kFormatVersion = 1;
constexpr i64 kMs = 1'000'000;
constexpr i64 kNs = 1'000'000'000;
/// How far past the policy's own span an imported time may lie (clock
/// differences between the exporting and importing hosts): 1 s. A window's
/// or refill period's start may lie one period ahead (a re-export of a
/// count that import moved to the next target period).
constexpr i64 kFutureSlackNs = kNs;

[[noreturn]] void bad(const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "import: " + what); }

// ---------------------------------------------------------------------------
// Wall-clock instants: "2026-11-23T17:48:08.123456789Z".

std::string iso8601(i64 unix_ns) {
  using namespace std::chrono;
  const sys_time<nanoseconds> tp{nanoseconds(unix_ns)};
  const sys_days day = floor<days>(tp);
  const year_month_day ymd{day};
  const i64 in_day = (tp - day).count();
  const i64 secs = in_day / kNs;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02lld:%02lld:%02lld.%09lldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long long>(secs / 3600), static_cast<long long>(secs / 60 % 60),
                static_cast<long long>(secs % 60), static_cast<long long>(in_day % kNs));
  return buf;
}

/// Parses exactly YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z (years 1970..2262).
std::optional<i64> parse_iso8601(std::string_view s) {
  using namespace std::chrono;
  const auto digits = [&](std::size_t pos, std::size_t n, int* out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (s.size() < 20 || !digits(0, 4, &y) || s[4] != '-' || !digits(5, 2, &mo) || s[7] != '-' || !digits(8, 2, &d) ||
      s[10] != 'T' || !digits(11, 2, &h) || s[13] != ':' || !digits(14, 2, &mi) || s[16] != ':' ||
      !digits(17, 2, &se)) {
    return std::nullopt;
  }
  std::size_t pos = 19;
  i64 frac = 0;
  if (s[pos] == '.') {
    std::size_t n = 0;
    ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && n < 9) {
      frac = frac * 10 + (s[pos] - '0');
      ++pos;
      ++n;
    }
    if (n == 0) return std::nullopt;
    for (; n < 9; ++n) frac *= 10;
  }
  if (pos + 1 != s.size() || s[pos] != 'Z') return std::nullopt;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || y < 1970 || y > 2262 || h > 23 || mi > 59 || se > 59) return std::nullopt;
  const i64 days_since = sys_days{ymd}.time_since_epoch().count();
  // 2262-04-11 is where int64 ns ends.
  i64 ns = 0;
  if (__builtin_mul_overflow(days_since, 86400 * kNs, &ns) ||
      __builtin_add_overflow(ns, (static_cast<i64>(h) * 3600 + mi * 60 + se) * kNs + frac, &ns)) {
    return std::nullopt;
  }
  return ns;
}

// ---------------------------------------------------------------------------
// Keys: a JSON string when the bytes are valid UTF-8, else base64.

bool valid_utf8(std::string_view s) {
  try {
    (void)Json(std::string(s)).dump();  // nlohmann validates UTF-8 when serialising
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    const std::uint32_t v = byte(i) << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> unbase64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::uint32_t v = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      const char* at = c == '\0' ? nullptr : std::strchr(kB64, c);
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      if (at == nullptr || pad > 0) return std::nullopt;
      v = v << 6 | static_cast<std::uint32_t>(at - kB64);
    }
    out += static_cast<char>((v >> 16) & 0xFF);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(v & 0xFF);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Per-algorithm codecs.

/// Converts between a segment's clock (ns since its epoch) and the wall clock.
struct Clock {
  i64 unix_offset = 0;  // CLOCK_REALTIME - segment time, read once
  i64 now = 0;          // segment time when the offset was read
  i64 wall(i64 t) const { return t + unix_offset; }
  i64 local(i64 wall_ns) const { return wall_ns - unix_offset; }
};

Clock clock_of(const Limiter& limiter) {
  Clock c;
  c.now = limiter.now().count();
  c.unix_offset = detail::realtime_ns() - c.now;
  return c;
}


/// Reads the fields of one bucket's "state" object (import side), naming
/// the bucket in every error.
class Fields {
 public:
  Fields(const Json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) bad(where_ + ": \"state\" must be an object");
  }
  i64 time(const char* name, const Clock& target) const {
    const Json& v = at(name);
    if (!v.is_string()) bad(where_ + ": state." + name + " must be an ISO 8601 UTC time string");
    const auto wall = parse_iso8601(v.get<std::string>());
    if (!wall) {
      bad(where_ + ": state." + name + " \"" + v.get<std::string>() +
          "\" is not an ISO 8601 UTC time like 2026-01-31T12:00:00.000000000Z");
    }
    const i64 t = target.local(*wall);
    if (t > detail::kClockHorizonNs) {
      bad(where_ + ": state." + name + " " + v.get<std::string>() +
          " lies beyond this segment's clock horizon (recreate the segment, or drop the bucket)");
    }
    return t;
  }
  u64 count(const char* name, u64 max) const {
    const Json& v = at(name);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<i64>() >= 0)) {
      bad(where_ + ": state." + name + " must be a non-negative integer");
    }
    const u64 n = v.get<u64>();
    if (n > max) bad(where_ + ": state." + name + " " + std::to_string(n) + " is above the policy's " + std::to_string(max));
    return n;
  }
  bool flag(const char* name) const {
    if (!j_.contains(name)) return false;
    if (!j_[name].is_boolean()) bad(where_ + ": state." + name + " must be true or false");
    return j_[name].get<bool>();
  }
  void not_after(i64 t, i64 limit, const char* name) const {
    if (t > limit) {
      bad(where_ + ": state." + name + " lies " + std::to_string((t - limit) / kMs) +
          " ms further in the future than the policy allows");
    }
  }
  const std::string& where() const { return where_; }

 private:
  const Json& at(const char* name) const {
    if (!j_.contains(name)) bad(where_ + ": state." + name + " is missing");
    return j_[name];
  }
  const Json& j_;
  std::string where_;
};

/// Index of the target window/refill period whose end is at or after the
/// source window's end: windows re-align to the target's epoch, and a count
/// never ends sooner than on the source (at most one period later).
u64 realigned_index(i64 start, u64 period) {
  const i64 last = start + static_cast<i64>(period) - 1;
  return last <= 0 ? 0 : static_cast<u64>(last) / period;
}

struct Codec {
  Algorithm algorithm;
  /// Fills `out` with the named fields of a state that is not full at `c.now`.
  void (*encode)(const AlgoParams& p, u64 state, const Clock& c, Json& out);
  /// The state word for the target segment.
  u64 (*decode)(const AlgoParams& p, const Fields& f, const Clock& c);
};

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
u64 decode_tb(const AlgoParams& p, const Fields& f, const Clock& c) {
  const auto [index, missing] = decode_period_count(p, f, c, "period_start", "missing", p.burst);
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
  if (ahead == SlidingWindow::kIndexMask) {  // stored = k - 1: its current window is now the previous one
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
  const u64 ms = t <= 0 ? 0 : static_cast<u64>((t + kMs - 1) / kMs);  // rounded up, as the algorithm does
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
std::vector<i64> decode_log(const AlgoParams& p, const Json& state, const std::string& where, const Clock& c,
                            u64* word) {
  if (!state.is_object()) bad(where + ": \"state\" must be an object");
  if (!state.contains("admissions") || !state["admissions"].is_array()) {
    bad(where + ": state.admissions must be an array of ISO 8601 UTC times");
  }
  const Json& a = state["admissions"];
  if (a.size() > p.count) {
    bad(where + ": state.admissions holds " + std::to_string(a.size()) + " times, above the policy's " +
        std::to_string(p.count));
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
  return AlgoParams{s.algorithm, s.rate.count, period, s.burst, detail::gcra_emission(s.rate.count, period), s.wait};
}

Json spec_json(const PolicySpec& s) {
  Json j;
  j["name"] = s.name;
  j["algorithm"] = std::string(to_string(s.algorithm));
  j["count"] = s.rate.count;
  j["period_ns"] = s.rate.period.count();
  j["burst"] = s.burst;
  j["on_full"] = s.on_full == OnFull::kDeny ? "deny" : "allow";
  if (s.algorithm == Algorithm::kSlidingLog) j["wait"] = wait_name(s.wait);
  return j;
}

}  // namespace

std::string Limiter::export_state(std::optional<PolicyId> policy, std::optional<std::string_view> key) const {
  const std::vector<PolicyView> policies = this->policies();
  if (policy) policy = PolicyId{impl_->resolved(policy->index)};  // an id from before a replacement
  const auto chosen = std::find_if(policies.begin(), policies.end(),
                                   [&](const PolicyView& v) { return policy && v.id.index == policy->index; });
  if (policy && chosen == policies.end()) {
    throw Error(ErrorCode::kInvalidArgument, "export: no policy with index " + std::to_string(policy->index));
  }
  std::vector<BucketView> buckets = dump();
  const Clock clock = clock_of(*this);
  Json doc;
  doc["format"] = kFormat;
  doc["version"] = kFormatVersion;
  doc["exported_at"] = iso8601(clock.wall(clock.now));
  doc["segment"] = name();
  Json specs = Json::array();
  for (const PolicyView& p : policies) {
    if (!policy || p.id.index == policy->index) specs.push_back(spec_json(p.spec));
  }
  doc["policies"] = std::move(specs);
  std::sort(buckets.begin(), buckets.end(), [](const BucketView& a, const BucketView& b) {
    return a.policy != b.policy ? a.policy < b.policy : a.key < b.key;
  });
  Json out = Json::array();
  std::map<std::string, u64> not_exported;
  for (const BucketView& b : buckets) {
    if (policy && b.policy != chosen->spec.name) continue;
    if (key && b.key != *key) continue;
    const auto spec = std::find_if(policies.begin(), policies.end(),
                                   [&](const PolicyView& p) { return p.spec.name == b.policy; });
    if (spec == policies.end() || b.now.reason == Reason::kCorrupt) {
      ++not_exported[b.policy];
      continue;
    }
    const AlgoParams params = algo_of(spec->spec);
    const Codec* codec = codec_of(params.algorithm);
    const bool is_log = params.algorithm == Algorithm::kSlidingLog;
    if (codec == nullptr && !is_log) {
      ++not_exported[b.policy];
      continue;
    }
    const std::vector<i64> admissions = is_log ? impl_->log_admissions(b.slot) : std::vector<i64>{};
    if (is_log ? admissions.empty() : detail::algo_is_full(params, b.state, clock.now)) continue;  // same as absent
    Json j;
    j["policy"] = b.policy;
    if (valid_utf8(b.key)) {
      j["key"] = b.key;
    } else {
      j["key_base64"] = base64(b.key);
    }
    Json state = Json::object();
    if (is_log) {
      encode_log(admissions, clock, state);
    } else {
      codec->encode(params, b.state, clock, state);
    }
    j["state"] = std::move(state);
    j["admitted"] = b.admitted;
    j["denied"] = b.denied;
    out.push_back(std::move(j));
  }
  doc["buckets"] = std::move(out);
  if (!not_exported.empty()) doc["not_exported"] = not_exported;
  // replace: a policy name in a hostile segment may be any bytes.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

ImportReport Limiter::import_state(std::string_view text) { return import_state(text, ImportMode::kReplace); }

ImportReport Limiter::import_state(std::string_view text, ImportMode mode) {
  if (read_only()) throw Error(ErrorCode::kReadOnly, "cannot import buckets through a read-only handle");
  Json doc;
  try {
    doc = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    // parse_error, and out_of_range for a number no double holds (1e400).
    bad(std::string("not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) bad("the document must be a JSON object");
  if (!doc.contains("format") || doc["format"] != std::string(kFormat)) {
    bad("\"format\" must be \"" + std::string(kFormat) + "\" (is this a `shmlimit export` file?)");
  }
  if (!doc.contains("version") || !doc["version"].is_number_integer()) bad("\"version\" is missing");
  if (doc["version"].get<i64>() != kFormatVersion) {
    bad("format version " + doc["version"].dump() + " is not supported (this build reads version " +
        std::to_string(kFormatVersion) + ")");
  }
  if (!doc.contains("policies") || !doc["policies"].is_array()) bad("\"policies\" must be an array");
  if (!doc.contains("buckets") || !doc["buckets"].is_array()) bad("\"buckets\" must be an array");

  // Every policy the document names must exist here with the same spec.
  struct Target {
    std::uint32_t index;
    PolicySpec spec;
  };
  std::map<std::string, Target> targets;
  std::map<std::string, std::string> unregistered;  // name -> where it is listed
  const std::vector<PolicyView> here = policies();
  for (std::size_t i = 0; i < doc["policies"].size(); ++i) {
    const Json& p = doc["policies"][i];
    const std::string where = "policies[" + std::to_string(i) + "]";
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) bad(where + ": \"name\" is missing");
    const std::string pname = p["name"].get<std::string>();
    const auto found = std::find_if(here.begin(), here.end(), [&](const PolicyView& v) { return v.spec.name == pname; });
    if (found == here.end()) {
      unregistered[pname] = where;  // an error only if a bucket uses it
      continue;
    }
    // Integers only: a float is refused, never converted.
    const auto is_count = [&](const char* f) { return p.contains(f) && p[f].is_number_unsigned(); };
    if (!p.contains("algorithm") || !p["algorithm"].is_string() || !is_count("count") || !is_count("burst") ||
        !is_count("period_ns")) {
      bad(where + " (\"" + pname + "\"): algorithm (a name), count, period_ns and burst (integers) are required");
    }
    PolicySpec want;
    want.name = pname;
    try {
      want.algorithm = parse_algorithm(p["algorithm"].get<std::string>());
    } catch (const Error& e) {
      bad(where + " (\"" + pname + "\"): " + e.what());
    }
    want.rate.count = p["count"].get<u64>();
    want.rate.period = Nanos(static_cast<i64>(std::min<u64>(p["period_ns"].get<u64>(), INT64_MAX)));
    want.burst = p["burst"].get<u64>();
    if (want.algorithm == Algorithm::kSlidingLog && p.contains("wait")) {
      if (p["wait"] != "exact" && p["wait"] != "drf") bad(where + " (\"" + pname + "\"): \"wait\" must be \"exact\" or \"drf\"");
      want.wait = p["wait"] == "drf" ? LogWait::kDrf : LogWait::kExact;
    }
    const PolicySpec& have = found->spec;
    if (want.algorithm == Algorithm::kSlidingLog && want.wait != have.wait) {
      throw Error(ErrorCode::kPolicyConflict, "import: policy \"" + pname + "\" has wait " + wait_name(want.wait) +
                                                  " in the document but " + wait_name(have.wait) + " in " + name());
    }
    if (want.algorithm != have.algorithm || want.rate != have.rate || want.burst != have.burst) {
      throw Error(ErrorCode::kPolicyConflict,
                  "import: policy \"" + pname + "\" is " + std::string(to_string(want.algorithm)) + " " +
                      format_rate(want.rate) + " burst " + std::to_string(want.burst) + " in the document but " +
                      std::string(to_string(have.algorithm)) + " " + format_rate(have.rate) + " burst " +
                      std::to_string(have.burst) + " in " + name() + " (its states would mean something else)");
    }
    targets[pname] = Target{found->id.index, have};
  }

  // Decode every bucket before writing any.
  struct Planned {
    std::uint32_t policy;
    std::string key;
    u64 state;
    u64 admitted;
    u64 denied;
    std::vector<i64> log;  // sliding log: the admissions (target clock)
  };
  std::vector<Planned> plan;
  ImportReport report;
  const Clock clock = clock_of(*this);
  for (std::size_t i = 0; i < doc["buckets"].size(); ++i) {
    const Json& b = doc["buckets"][i];
    std::string where = "buckets[" + std::to_string(i) + "]";
    if (!b.is_object()) bad(where + " must be an object");
    if (!b.contains("policy") || !b["policy"].is_string()) bad(where + ": \"policy\" is missing");
    const std::string pname = b["policy"].get<std::string>();
    const auto t = targets.find(pname);
    if (unregistered.count(pname) != 0) {
      bad(where + ": policy \"" + pname + "\" (" + unregistered[pname] + ") is not registered in " + name() +
          " (register it with the same parameters first)");
    }
    if (t == targets.end()) bad(where + ": policy \"" + pname + "\" is not listed under \"policies\"");
    std::string key;
    if (b.contains("key") && b["key"].is_string()) {
      key = b["key"].get<std::string>();
    } else if (b.contains("key_base64") && b["key_base64"].is_string()) {
      const auto k = unbase64(b["key_base64"].get<std::string>());
      if (!k) bad(where + ": key_base64 is not valid base64");
      key = *k;
    } else {
      bad(where + ": \"key\" (a string) or \"key_base64\" is required");
    }
    if (key.size() > max_key_bytes()) {
      bad(where + ": key of " + std::to_string(key.size()) + " bytes is longer than this segment's " +
          std::to_string(max_key_bytes()));
    }
    where += " (policy \"" + pname + "\")";
    const AlgoParams params = algo_of(t->second.spec);
    const Codec* codec = codec_of(params.algorithm);
    const bool is_log = params.algorithm == Algorithm::kSlidingLog;
    if (codec == nullptr && !is_log) {
      bad(where + ": algorithm " + std::string(to_string(params.algorithm)) + " cannot be imported");
    }
    if (!b.contains("state")) bad(where + ": \"state\" is missing");
    u64 state = 0;
    std::vector<i64> log;
    if (is_log) {
      log = decode_log(params, b["state"], where, clock, &state);
    } else {
      state = codec->decode(params, Fields(b["state"], where), clock);
    }
    const auto counter = [&](const char* field) -> u64 {
      if (!b.contains(field)) return 0;
      if (!b[field].is_number_unsigned()) bad(where + ": \"" + field + "\" must be a non-negative integer");
      return b[field].get<u64>();
    };
    const u64 admitted = counter("admitted");
    const u64 denied = counter("denied");
    if (state > detail::Word::kPayloadMask) bad(where + ": the state does not fit this segment");
    if (is_log ? log.empty() : detail::algo_is_full(params, state, clock.now)) {
      ++report.skipped_full;  // refilled meanwhile: the same as an absent key
      continue;
    }
    plan.push_back(Planned{t->second.index, std::move(key), state, admitted, denied, std::move(log)});
  }
  for (const Planned& p : plan) {
    switch (impl_->store_bucket(p.policy, p.key, p.state, p.admitted, p.denied, mode == ImportMode::kReplace, p.log)) {
      case Impl::StoreResult::kStored: ++report.imported; break;
      case Impl::StoreResult::kKept: ++report.skipped_existing; break;
      case Impl::StoreResult::kNoRoom: ++report.no_room; break;
    }
  }
  return report;
}

}  // namespace shmlimit
