// Output of the `shmlimit` command-line tool and of `shmlimit-demo`: every
// human and JSON rendering lives here, once, so that `shmlimit stat` and the
// demo's summary cannot drift apart. Header-only; uses only the public API.
//
// Conventions (doc/cli.md is the user-facing version)
//   * Durations: human text via format_duration() ("1.5s", "250ms", "12µs",
//     "0", "never"); JSON carries integer `*_ns` and float `*_s` fields.
//   * Keys and policy names are bytes. They are shown escaped: printable
//     ASCII as-is, every other byte and the backslash itself as "\xNN", so
//     "\xNN" always means one byte and nothing can inject terminal escapes.
//     JSON strings also keep valid printable UTF-8 (see escape_bytes()); the
//     exact bytes are in "key_hex".
//   * Colour only when stdout is a terminal and NO_COLOR is unset.
//
// Thread safety: every function only reads its arguments, except
// use_color() (environment, isatty) and the print_* functions (stdout).
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::tools {

/// Key order is part of the documented schemas: keep insertion order.
using Json = nlohmann::ordered_json;

inline constexpr std::int64_t kNsPerSecond = 1'000'000'000;

// ---------------------------------------------------------------------------
// Scalars

/// Keeps three significant digits and drops trailing zeros: 1.5, 12.3, 250.
inline std::string short_number(double v) {
  std::string s = v >= 100  ? fmt::format("{:.0f}", v)
                  : v >= 10 ? fmt::format("{:.1f}", v)
                            : fmt::format("{:.2f}", v);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

/// "0", "840ns", "12µs", "250ms", "1.5s", "12m30s", "17h16m", "833d23h";
/// Nanos::max() (a cost that can never fit) is "never".
inline std::string format_duration(Nanos d) {
  if (d == Nanos::max()) return "never";
  const std::int64_t ns = d.count();
  if (ns <= 0) return "0";
  if (ns < 1'000) return fmt::format("{}ns", ns);
  // Thresholds sit where rounding to 3 digits would print "1000".
  if (ns < 999'500) return short_number(static_cast<double>(ns) / 1e3) + "\xc2\xb5s";  // µs
  if (ns < 999'500'000) return short_number(static_cast<double>(ns) / 1e6) + "ms";
  if (ns < 60 * kNsPerSecond) return short_number(static_cast<double>(ns) / 1e9) + "s";
  const auto two_units = [](std::int64_t total, std::int64_t per, const char* big,
                            const char* small) {
    const std::int64_t hi = total / per, lo = total % per;
    return lo == 0 ? fmt::format("{}{}", hi, big) : fmt::format("{}{}{}{}", hi, big, lo, small);
  };
  if (ns < 3600 * kNsPerSecond) {
    return two_units((ns + kNsPerSecond / 2) / kNsPerSecond, 60, "m", "s");
  }
  const std::int64_t minute = 60 * kNsPerSecond;
  if (ns < 86400 * kNsPerSecond) return two_units((ns + minute / 2) / minute, 60, "h", "m");
  const std::int64_t hour = 60 * minute;
  return two_units((ns + hour / 2) / hour, 24, "d", "h");
}

/// "512 B", "136.1 KiB", "8.2 MiB".
inline std::string format_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", v, kUnits[unit]);
}

/// ISO 8601 in UTC with milliseconds: "2025-03-01T12:34:56.789Z".
inline std::string format_utc(std::int64_t unix_ns) {
  std::int64_t secs = unix_ns / kNsPerSecond;
  std::int64_t rem = unix_ns % kNsPerSecond;
  if (rem < 0) {  // floor division for times before 1970
    rem += kNsPerSecond;
    --secs;
  }
  const auto t = static_cast<time_t>(secs);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr) return fmt::format("@{}ns", unix_ns);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, rem / 1'000'000);
}

inline std::string percent(std::uint64_t part, std::uint64_t whole) {
  if (whole == 0) return "0%";
  return fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole));
}

/// Length of the valid UTF-8 sequence of a printable code point (>= U+00A0)
/// starting at s[i], or 0 (invalid, overlong, surrogate, C1 control).
inline std::size_t printable_utf8_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
  };
  const auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return byte(k) >= lo && byte(k) <= hi;
  };
  const unsigned c = byte(0);
  if (c == 0xC2) return cont(1, 0xA0) ? 2 : 0;  // U+0080..U+009F are C1 controls
  if (c >= 0xC3 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;  // no surrogates
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/// Escapes raw bytes for display: printable ASCII (0x20-0x7E) except the
/// backslash stays as-is; every other byte becomes "\xNN" (lowercase hex).
/// With keep_utf8 (JSON output), valid UTF-8 sequences of printable code
/// points are kept too. Decoding rule: "\xNN" is one byte, anything else is
/// itself.
inline std::string escape_bytes(std::string_view s, bool keep_utf8 = false) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
      continue;
    }
    if (keep_utf8 && c >= 0x80) {
      if (const std::size_t n = printable_utf8_length(s, i); n > 0) {
        out.append(s.substr(i, n));
        i += n - 1;
        continue;
      }
    }
    out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

/// Text that should already be printable ASCII (a library message): kept
/// as is, backslashes included, and any other byte as "\xNN", so that it
/// stays on one line of a terminal. Not reversible, unlike escape_bytes().
inline std::string printable_ascii(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7F) {
      out += ch;
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

inline std::string hex_bytes(std::string_view s) {
  std::string out;
  out.reserve(2 * s.size());
  for (const char c : s) out += fmt::format("{:02x}", static_cast<unsigned char>(c));
  return out;
}

/// Width on a terminal: code points (our text is ASCII plus "µ").
inline std::size_t display_width(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

inline std::string pad_right(std::string s, std::size_t width) {
  const std::size_t w = display_width(s);
  if (w < width) s.append(width - w, ' ');
  return s;
}

inline std::string pad_left(const std::string& s, std::size_t width) {
  const std::size_t w = display_width(s);
  return w < width ? std::string(width - w, ' ') + s : s;
}

/// One word everywhere (the CLI, state documents, config files, Python):
/// "allow" (fail open) or "deny" (fail closed).
inline const char* on_full_name(OnFull on_full) {
  return on_full == OnFull::kDeny ? "deny" : "allow";
}

inline std::string algorithm_name(Algorithm algorithm) {
  return std::string(shmlimit::to_string(algorithm));
}

/// GCRA's emission interval T = ceil(period / count): one unit refills every
/// T ns (the same rounding the library uses; never over-admits).
inline std::int64_t emission_interval_ns(const Rate& rate) {
  const std::int64_t period = rate.period.count();
  if (rate.count == 0 || period <= 0) return 0;
  const auto count = static_cast<std::uint64_t>(rate.count);
  const auto p = static_cast<std::uint64_t>(period);
  return static_cast<std::int64_t>(p / count + (p % count != 0 ? 1 : 0));
}

// ---------------------------------------------------------------------------
// Terminal

/// Colour only for a terminal, and never when NO_COLOR is set (any value)
/// or TERM is "dumb".
inline bool use_color() {
  if (std::getenv("NO_COLOR") != nullptr) return false;
  const char* term = std::getenv("TERM");
  if (term != nullptr && std::string_view(term) == "dumb") return false;
  return ::isatty(STDOUT_FILENO) == 1;
}

inline constexpr const char* kBold = "\x1b[1m";
inline constexpr const char* kDim = "\x1b[2m";
inline constexpr const char* kRed = "\x1b[31m";
inline constexpr const char* kReset = "\x1b[0m";

/// "label:  value" lines, values aligned in one column.
inline std::string render_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::size_t width = 0;
  for (const auto& f : fields) width = std::max(width, display_width(f.first) + 1);
  std::string out;
  for (const auto& [label, value] : fields) {
    out += pad_right(label + ":", width + 1);
    out += value;
    out += '\n';
  }
  return out;
}

struct Table {
  std::vector<std::string> headers;
  std::vector<bool> right;  // per column: right-aligned (numbers)
  std::vector<std::vector<std::string>> rows;
  std::vector<const char*> styles;  // per row: ANSI prefix or nullptr
};

/// Aligned columns separated by two spaces; the last column is not padded.
inline std::string render_table(const Table& t, bool color, std::string_view indent = "") {
  std::vector<std::size_t> width(t.headers.size(), 0);
  const auto measure = [&](const std::vector<std::string>& row) {
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], display_width(row[c]));
    }
  };
  measure(t.headers);
  for (const auto& row : t.rows) measure(row);
  const auto line = [&](const std::vector<std::string>& row, const char* style) {
    std::string out(indent);
    std::string body;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const bool last = c + 1 == row.size();
      const bool right = c < t.right.size() && t.right[c];
      if (c > 0) body += "  ";
      body += right ? pad_left(row[c], width[c]) : last ? row[c] : pad_right(row[c], width[c]);
    }
    // An empty last cell (a blank optional column) leaves no trailing blanks.
    body.erase(body.find_last_not_of(' ') + 1);
    if (color && style != nullptr) return out + style + body + kReset + "\n";
    return out + body + "\n";
  };
  std::string out = line(t.headers, kBold);
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    out += line(t.rows[r], r < t.styles.size() ? t.styles[r] : nullptr);
  }
  return out;
}

/// JSON text that never throws on odd bytes (a hostile segment may hold any
/// policy name; keys are escaped before they get here).
inline std::string to_text(const Json& j, int indent) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------
// Durations in JSON: {"<name>_ns": integer} and {"<name>_s": float}; a
// duration that never ends (Nanos::max()) is null in both.

inline Json duration_ns_json(Nanos d) {
  return d == Nanos::max() ? Json(nullptr) : Json(d.count());
}
inline Json duration_s_json(Nanos d) {
  return d == Nanos::max() ? Json(nullptr) : Json(static_cast<double>(d.count()) / 1e9);
}

// ---------------------------------------------------------------------------
// Policies

inline Json policy_json(const PolicyView& p) {
  Json j;
  j["id"] = p.id.index;
  j["name"] = escape_bytes(p.spec.name, true);
  j["algorithm"] = algorithm_name(p.spec.algorithm);
  j["rate"] = format_rate(p.spec.rate);
  j["count"] = p.spec.rate.count;
  j["period_ns"] = p.spec.rate.period.count();
  j["emission_interval_ns"] = emission_interval_ns(p.spec.rate);
  j["burst"] = p.spec.burst;
  j["on_full"] = on_full_name(p.spec.on_full);
  if (p.spec.algorithm == Algorithm::kSlidingLog)
    j["wait"] = p.spec.wait == LogWait::kDrf ? "drf" : "exact";
  return j;
}

inline Json policies_json(const std::vector<PolicyView>& policies) {
  Json j = Json::array();
  for (const auto& p : policies) j.push_back(policy_json(p));
  return j;
}

inline std::string render_policies(const std::vector<PolicyView>& policies, bool color,
                                   std::string_view indent = "") {
  Table t;
  t.headers = {"NAME", "ALGORITHM", "RATE", "BURST", "ON-FULL"};
  t.right = {false, false, false, true, false};
  for (const auto& p : policies) {
    std::string algorithm = algorithm_name(p.spec.algorithm);
    if (p.spec.algorithm == Algorithm::kSlidingLog && p.spec.wait == LogWait::kDrf)
      algorithm += " (wait drf)";
    t.rows.push_back({escape_bytes(p.spec.name), std::move(algorithm), format_rate(p.spec.rate),
                      std::to_string(p.spec.burst), on_full_name(p.spec.on_full)});
  }
  return render_table(t, color, indent);
}

// ---------------------------------------------------------------------------
// Decisions (`shmlimit acquire`)

inline Json decision_json(const Decision& d, std::string_view policy, std::string_view key,
                          std::uint64_t cost) {
  Json j;
  j["allowed"] = d.allowed;
  j["limit"] = d.limit;
  j["remaining"] = d.remaining;
  j["retry_after_ns"] = duration_ns_json(d.retry_after);
  j["reset_after_ns"] = duration_ns_json(d.reset_after);
  j["retry_after_s"] = duration_s_json(d.retry_after);
  j["reset_after_s"] = duration_s_json(d.reset_after);
  j["reason"] = std::string(to_string(d.reason));
  j["policy"] = escape_bytes(policy, true);
  j["key"] = escape_bytes(key, true);
  j["cost"] = cost;
  return j;
}

inline std::string render_decision(const Decision& d) {
  return render_fields({
      {"allowed", d.allowed ? "yes" : "no"},
      {"limit", std::to_string(d.limit)},
      {"remaining", std::to_string(d.remaining)},
      {"retry after", format_duration(d.retry_after)},
      {"reset after", format_duration(d.reset_after)},
      {"reason", std::string(to_string(d.reason))},
  });
}

// ---------------------------------------------------------------------------
// Stats (`shmlimit stat`)

inline Json stats_json(std::string_view name, const Stats& s,
                       const std::vector<PolicyView>& policies) {
  Json j;
  j["segment"] = std::string(name);
  j["layout_version"] = s.layout_version;
  // A string: an identity, not a quantity, and above 2^53 (JSON doubles).
  j["layout_fingerprint"] = fmt::format("0x{:016x}", s.layout_fingerprint);
  j["capacity"] = s.capacity;
  j["slot_bytes"] = s.slot_bytes;
  j["max_key_bytes"] = s.max_key_bytes;
  j["max_probe"] = s.max_probe;
  j["segment_bytes"] = s.segment_bytes;
  j["created_unix_ns"] = s.created_unix_ns;
  j["created"] = format_utc(s.created_unix_ns);
  j["age_ns"] = s.age.count();
  j["clock_horizon_left_ns"] = s.clock_horizon_left.count();
  j["used"] = s.used;
  j["free"] = s.empty + s.dead;
  j["reclaimable"] = s.reclaimable;
  j["dead"] = s.dead;
  j["empty"] = s.empty;
  j["claiming"] = s.claiming;
  j["max_probe_length"] = s.max_probe_length;
  j["mean_probe_length"] = s.mean_probe_length;
  j["full_events"] = s.full_events;
  j["contended_events"] = s.contended_events;
  j["repairs"] = s.repairs;
  j["admitted"] = s.admitted;
  j["denied"] = s.denied;
  j["processes"] = s.processes;
  // This process's (the CLI's), not the segment's: Stats::decision_clock.
  j["decision_clock"] = {{"clock", s.decision_clock.clock}, {"reason", s.decision_clock.reason}};
  // Exact per-policy totals (Limiter::counters()), by policy name.
  Json counters = Json::object();
  for (const PolicyCounters& c : s.policies)
    counters[c.policy] = {{"admitted", c.admitted}, {"denied", c.denied}};
  j["policy_counters"] = std::move(counters);
  j["policies"] = policies_json(policies);
  return j;
}

/// `tsc`, or `exact (<reason>)`: the clock the process that read the stats
/// decides on.
inline std::string format_decision_clock(const DecisionClockInfo& c) {
  if (c.reason.empty()) return printable_ascii(c.clock);
  return fmt::format("{} ({})", printable_ascii(c.clock), printable_ascii(c.reason));
}

inline std::string render_stats(std::string_view name, const Stats& s,
                                const std::vector<PolicyView>& policies, bool color) {
  const auto share = [&](std::uint64_t n) {
    return fmt::format("{} ({})", n, percent(n, s.capacity));
  };
  std::vector<std::pair<std::string, std::string>> fields = {
      {"segment", std::string(name)},
      {"layout version", std::to_string(s.layout_version)},
      {"fingerprint", fmt::format("0x{:016x}", s.layout_fingerprint)},
      {"capacity", fmt::format("{} slots", s.capacity)},
      {"slot bytes", std::to_string(s.slot_bytes)},
      {"max key bytes", std::to_string(s.max_key_bytes)},
      {"max probe", std::to_string(s.max_probe)},
      {"segment bytes",
       fmt::format("{} ({} bytes)", format_bytes(s.segment_bytes), s.segment_bytes)},
      {"created", format_utc(s.created_unix_ns)},
      {"age", format_duration(s.age)},
      {"clock horizon left", format_duration(s.clock_horizon_left)},
      {"used", share(s.used)},
      {"free", share(s.empty + s.dead)},
      {"reclaimable", share(s.reclaimable)},
      {"dead", share(s.dead)},
      {"claiming", share(s.claiming)},
      {"probe length", fmt::format("max {}, mean {:.2f}", s.max_probe_length, s.mean_probe_length)},
      {"full-table events", std::to_string(s.full_events)},
      {"contended events", std::to_string(s.contended_events)},
      {"repairs", std::to_string(s.repairs)},
      {"admitted", std::to_string(s.admitted)},
      {"denied", std::to_string(s.denied)},
      {"processes", std::to_string(s.processes)},
      {"decision clock", format_decision_clock(s.decision_clock)},
  };
  if (policies.empty()) {
    fields.emplace_back("policies", "none");
    return render_fields(fields);
  }
  std::string out = render_fields(fields) + "policies:\n" + render_policies(policies, color, "  ");
  // The exact totals per policy (Limiter::counters()).
  Table t;
  t.headers = {"POLICY", "ADMITTED", "DENIED"};
  t.right = {false, true, true};
  for (const PolicyCounters& c : s.policies) {
    t.rows.push_back(
        {escape_bytes(c.policy), std::to_string(c.admitted), std::to_string(c.denied)});
  }
  if (!t.rows.empty()) out += "decisions:\n" + render_table(t, color, "  ");
  return out;
}

// ---------------------------------------------------------------------------
// Buckets (`shmlimit dump`)

/// One live bucket as the dump shows it: the state *now* (BucketView::now
/// charges nothing).
struct BucketRow {
  std::uint32_t slot = 0;
  std::string policy;
  std::string key;  // raw bytes
  std::uint64_t limit = 0;
  std::uint64_t remaining = 0;  // units that would be admitted right now
  Nanos retry_after{0};         // until one unit fits; 0 when remaining > 0
  Nanos reset_after{0};         // until the bucket is full again
  std::uint64_t admitted = 0;
  std::uint64_t denied = 0;
  std::uint64_t raw_state = 0;     // the algorithm's 56-bit state word
  std::string algorithm;           // empty when the policy is unknown (no registered spec)
  std::vector<StateField> fields;  // raw_state's fields, named per algorithm
  std::string state;               // "limited", "refilling", "in-use", "full" or "corrupt"
};

inline BucketRow bucket_row(const BucketView& b, const std::vector<PolicyView>& policies) {
  BucketRow r;
  r.slot = b.slot;
  r.policy = b.policy;
  r.key = b.key;
  r.admitted = b.admitted;
  r.denied = b.denied;
  r.raw_state = b.state;
  const auto spec = std::find_if(policies.begin(), policies.end(),
                                 [&](const PolicyView& p) { return p.spec.name == b.policy; });
  if (spec != policies.end()) {
    r.algorithm = algorithm_name(spec->spec.algorithm);
    r.fields = state_fields(spec->spec.algorithm, b.state);
  }
  r.limit = b.now.limit;
  if (b.now.reason != Reason::kOk) {
    r.state = "corrupt";
    return r;
  }
  r.remaining = b.now.remaining;
  r.retry_after = b.now.retry_after;
  r.reset_after = b.now.reset_after;
  // A concurrency key has no time to reset: with some (not all) of its
  // leases held it is "in-use", neither full nor refilling.
  r.state = !b.now.allowed               ? "limited"
            : r.reset_after.count() != 0 ? "refilling"
            : r.remaining < r.limit      ? "in-use"
                                         : "full";
  return r;
}

/// Rows sorted by policy, then key (bytewise), then slot. `policies` (the
/// segment's) name each bucket's algorithm and state fields.
inline std::vector<BucketRow> bucket_rows(const std::vector<BucketView>& buckets,
                                          const std::vector<PolicyView>& policies = {}) {
  std::vector<BucketRow> rows;
  rows.reserve(buckets.size());
  for (const auto& b : buckets) rows.push_back(bucket_row(b, policies));
  std::sort(rows.begin(), rows.end(), [](const BucketRow& a, const BucketRow& b) {
    if (a.policy != b.policy) return a.policy < b.policy;
    if (a.key != b.key) return a.key < b.key;
    return a.slot < b.slot;
  });
  return rows;
}

inline Json dump_json(const std::vector<BucketRow>& rows) {
  Json j = Json::array();
  for (const auto& r : rows) {
    Json o;
    o["slot"] = r.slot;
    o["policy"] = escape_bytes(r.policy, true);
    o["key"] = escape_bytes(r.key, true);
    o["key_hex"] = hex_bytes(r.key);
    o["limit"] = r.limit;
    o["remaining"] = r.remaining;
    o["retry_after_ns"] = duration_ns_json(r.retry_after);
    o["reset_after_ns"] = duration_ns_json(r.reset_after);
    o["retry_after_s"] = duration_s_json(r.retry_after);
    o["reset_after_s"] = duration_s_json(r.reset_after);
    o["admitted"] = r.admitted;
    o["denied"] = r.denied;
    o["state"] = r.state;
    o["algorithm"] = r.algorithm.empty() ? Json(nullptr) : Json(r.algorithm);
    // The stored state, its fields named per algorithm (state_fields()).
    Json fields = Json::object();
    for (const StateField& f : r.fields) fields[f.name] = f.value;
    if (r.fields.empty()) fields["raw"] = r.raw_state;
    o["stored"] = std::move(fields);
    // Kept for GCRA, whose state it is; other algorithms store no TAT.
    if (r.algorithm == "gcra") o["tat_ns"] = r.raw_state;
    j.push_back(std::move(o));
  }
  return j;
}

inline std::string render_dump(const std::vector<BucketRow>& rows, bool color) {
  if (rows.empty()) return "no live buckets\n";
  Table t;
  t.headers = {"SLOT",        "POLICY",   "KEY",    "REMAINING", "RETRY-AFTER",
               "RESET-AFTER", "ADMITTED", "DENIED", "STATE"};
  t.right = {true, false, false, true, true, true, true, true, false};
  for (const auto& r : rows) {
    t.rows.push_back({std::to_string(r.slot), escape_bytes(r.policy), escape_bytes(r.key),
                      fmt::format("{}/{}", r.remaining, r.limit), format_duration(r.retry_after),
                      format_duration(r.reset_after), std::to_string(r.admitted),
                      std::to_string(r.denied), r.state});
    t.styles.push_back(r.state == "limited" || r.state == "corrupt" ? kRed
                       : r.state == "full"                          ? kDim
                                                                    : nullptr);
  }
  return render_table(t, color);
}

// ---------------------------------------------------------------------------
// The inspection commands, shared by `shmlimit` and `shmlimit-demo`.

/// Opens a segment for inspection: read-only, any capacity.
inline Limiter open_for_inspection(const std::string& name, bool allow_other_users = false) {
  Options o;
  o.name = name;
  o.capacity = 0;  // do not check: inspect whatever is there
  o.read_only = true;
  o.allow_other_users = allow_other_users;
  return Limiter::open(o);
}

inline void write_stdout(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
}

/// `shmlimit stat NAME [--json]`.
inline void print_stat(const Limiter& limiter, bool json) {
  const Stats s = limiter.stats();
  const std::vector<PolicyView> policies = limiter.policies();
  if (json) {
    write_stdout(to_text(stats_json(limiter.name(), s, policies), 2) + "\n");
  } else {
    write_stdout(render_stats(limiter.name(), s, policies, use_color()));
  }
}

/// `shmlimit dump NAME [--json]`.
inline void print_dump(const Limiter& limiter, bool json) {
  const std::vector<BucketRow> rows = bucket_rows(limiter.dump(), limiter.policies());
  if (json) {
    write_stdout(to_text(dump_json(rows), 2) + "\n");
  } else {
    write_stdout(render_dump(rows, use_color()));
  }
}

}  // namespace shmlimit::tools
