// Private to state export/import (doc/state-format.md): what
// state_export.cpp (Limiter::export_state) and state_import.cpp
// (Limiter::import_state) share. The document's constants, its text codecs
// (wall-clock instants, keys: state_text.cpp), the segment <-> wall clock
// conversion, the reader of a bucket's "state" fields, and the table of
// per-algorithm codecs with the sliding log's (state_codecs.cpp).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail::state_io {

using Json = nlohmann::ordered_json;
using detail::AlgoParams;
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

[[noreturn]] inline void bad(const std::string& what) {
  throw Error(ErrorCode::kInvalidArgument, "import: " + what);
}

// state_text.cpp: wall-clock instants ("2026-11-23T17:48:08.123456789Z",
// parsed as exactly YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z, years 1970..2262) and
// keys (a JSON string when the bytes are valid UTF-8, else base64).
std::string iso8601(i64 unix_ns);
std::optional<i64> parse_iso8601(std::string_view s);
bool valid_utf8(std::string_view s);
std::string base64(std::string_view in);
std::optional<std::string> unbase64(std::string_view in);

/// Converts between a segment's clock (ns since its epoch) and the wall clock.
struct Clock {
  i64 unix_offset = 0;  // CLOCK_REALTIME - segment time, read once
  i64 now = 0;          // segment time when the offset was read
  i64 wall(i64 t) const { return t + unix_offset; }
  i64 local(i64 wall_ns) const { return wall_ns - unix_offset; }
};

/// The limiter's clock (state_codecs.cpp).
Clock clock_of(const Limiter& limiter);

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
    if (n > max)
      bad(where_ + ": state." + name + " " + std::to_string(n) + " is above the policy's " +
          std::to_string(max));
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

struct Codec {
  Algorithm algorithm;
  /// Fills `out` with the named fields of a state that is not full at `c.now`.
  void (*encode)(const AlgoParams& p, u64 state, const Clock& c, Json& out);
  /// The state word for the target segment.
  u64 (*decode)(const AlgoParams& p, const Fields& f, const Clock& c);
};

// state_codecs.cpp: the codec of an algorithm (nullptr: none; the sliding
// log has encode_log / decode_log instead), the parameters of a spec.
const Codec* codec_of(Algorithm a);
AlgoParams algo_of(const PolicySpec& s);
const char* wait_name(LogWait w);
void encode_log(const std::vector<i64>& admissions, const Clock& c, Json& out);
std::vector<i64> decode_log(const AlgoParams& p, const Json& state, const std::string& where,
                            const Clock& c, u64* word);

}  // namespace shmlimit::detail::state_io
