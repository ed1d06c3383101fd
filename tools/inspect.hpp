// The maintenance and monitoring subcommands of `shmlimit`:
// check, reset, dump's filters, metrics and watch. doc/cli.md documents
// their output; this header holds the work, tools/shmlimit_cli.cpp only
// parses arguments, opens the segment and calls in here.
//
// Every function takes an opened Limiter, so the caller decides how the
// segment is mapped: read-only for dump, metrics and watch (and check
// --no-repair), read-write for check with repair and reset.
//
// Thread safety: the functions only read their arguments and write stdout;
// watch() also sleeps. All of them are safe against concurrent writers in
// other processes (they use Limiter::dump()/stats()/check(), which are).
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "format.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::tools {

// ---------------------------------------------------------------------------
// `shmlimit check`

/// Prints a report; returns 0 when clean, 1 when there are problems.
inline int print_check_report(const CheckReport& report, bool json) {
  if (json) {
    Json j;
    j["clean"] = report.clean();
    j["problems"] = Json::array();
    for (const auto& p : report.problems) j["problems"].push_back(escape_bytes(p, true));
    j["repaired"] = report.repaired;
    j["live"] = report.live;
    j["in_progress"] = report.in_progress;
    write_stdout(to_text(j, 2) + "\n");
  } else {
    // One problem per line; escaping keeps each one on its line whatever
    // bytes a hostile segment made the library quote.
    for (const auto& p : report.problems) write_stdout(escape_bytes(p, true) + "\n");
    write_stdout(fmt::format("{}: {} problem{}, {} live bucket{}, {} repaired, {} in progress\n",
                             report.clean() ? "clean" : "NOT CLEAN", report.problems.size(),
                             report.problems.size() == 1 ? "" : "s", report.live,
                             report.live == 1 ? "" : "s", report.repaired, report.in_progress));
  }
  return report.clean() ? 0 : 1;
}

/// Checks an opened segment (repairing dead claims first when asked).
inline int print_check(Limiter& limiter, bool repair, bool json) {
  return print_check_report(limiter.check(repair), json);
}

/// Checks a segment that does not open (`open_error` says why): a
/// field-by-field audit of its raw bytes, never a crash on garbage.
inline int print_raw_check(const std::string& name, const std::string& open_error, bool json,
                           bool allow_other_users = false) {
  CheckReport report = Limiter::check_segment(name, allow_other_users);
  if (report.problems.empty()) report.problems.push_back(open_error);  // it changed since the open
  return print_check_report(report, json);
}

// ---------------------------------------------------------------------------
// `shmlimit denials`

/// A denial's reason: "limited" when the algorithm refused (Reason::kOk:
/// the decision itself was made normally), else the on_full cause or
/// cost_too_high, as a decision's reason.
inline std::string denial_reason(Reason reason) {
  return reason == Reason::kOk ? "limited" : std::string(to_string(reason));
}

inline Json denial_json(const DenialView& d) {
  Json o;
  o["cursor"] = d.cursor;
  o["time"] = format_utc(d.unix_ns);
  o["unix_ns"] = d.unix_ns;
  o["at_ns"] = d.at.count();
  o["policy"] = escape_bytes(d.policy, true);
  o["policy_index"] = d.policy_index;
  o["key"] = escape_bytes(d.key, true);
  o["key_hex"] = hex_bytes(d.key);
  o["key_length"] = d.key_length;
  o["truncated"] = d.key_length > d.key.size();
  o["cost"] = d.cost;
  o["retry_after_ns"] = duration_ns_json(d.retry_after);
  o["reason"] = denial_reason(d.reason);
  o["pid"] = d.pid;
  o["repeats"] = d.repeats;
  return o;
}

inline Json denials_json(const RecentDenials& r) {
  Json j;
  j["next_cursor"] = r.next_cursor;
  j["lost"] = r.lost;
  j["denials"] = Json::array();
  for (const auto& d : r.denials) j["denials"].push_back(denial_json(d));
  return j;
}

/// "N denials not shown (ring overflowed)", or nothing.
inline std::string lost_line(std::uint64_t lost) {
  if (lost == 0) return {};
  return fmt::format("{} denial{} not shown (ring overflowed)\n", lost, lost == 1 ? "" : "s");
}

inline std::string render_denials(const RecentDenials& r, bool color) {
  std::string out = lost_line(r.lost);
  if (r.denials.empty()) return out + "no recent denials\n";
  Table t;
  t.headers = {"TIME", "POLICY", "KEY", "COST", "RETRY-AFTER", "REASON", "PID", "REPEATS"};
  t.right = {false, false, false, true, true, false, true, true};
  for (const auto& d : r.denials) {
    std::string key = escape_bytes(d.key);
    if (d.key_length > d.key.size()) key += fmt::format("... ({} bytes)", d.key_length);
    t.rows.push_back({format_utc(d.unix_ns), escape_bytes(d.policy), key, std::to_string(d.cost),
                      format_duration(d.retry_after), denial_reason(d.reason),
                      std::to_string(d.pid), d.repeats == 0 ? "" : std::to_string(d.repeats)});
  }
  return out + render_table(t, color);
}

/// `shmlimit denials NAME [--since CURSOR] [--json]`.
inline void print_denials(const Limiter& limiter, std::uint64_t since, bool json) {
  const RecentDenials r = limiter.recent_denials(since);
  write_stdout(json ? to_text(denials_json(r), 2) + "\n" : render_denials(r, use_color()));
}

// ---------------------------------------------------------------------------
// `shmlimit reset`

/// The id of a registered policy, or Error(kInvalidArgument) naming it.
inline PolicyId require_policy(const Limiter& limiter, const std::string& policy) {
  const std::optional<PolicyId> id = limiter.find_policy(policy);
  if (!id) {
    throw Error(ErrorCode::kInvalidArgument, "unknown policy \"" + escape_bytes(policy) + "\" in " +
                                                 limiter.name() + " (see `shmlimit policy " +
                                                 limiter.name() + " list`)");
  }
  return *id;
}

inline void print_reset(Limiter& limiter, const std::optional<std::string>& policy,
                        const std::optional<std::string>& key) {
  std::optional<PolicyId> id;
  if (policy) id = require_policy(limiter, *policy);
  std::optional<std::string_view> k;
  if (key) k = *key;
  const std::uint64_t n = limiter.reset(id, k);
  write_stdout(fmt::format("forgot {} bucket{}\n", n, n == 1 ? "" : "s"));
}

// ---------------------------------------------------------------------------
// `shmlimit dump` filters

struct DumpFilter {
  std::optional<std::string> policy;  // --policy: only this policy
  std::string key_prefix;             // --key-prefix: raw bytes
  bool limited_only = false;          // --limited-only: state "limited"
  std::size_t top = 0;                // --top N (0 = every row)
  std::string by = "usage";           // --by denials|usage
};

inline std::vector<BucketRow> filter_rows(std::vector<BucketRow> rows, const DumpFilter& f) {
  std::erase_if(rows, [&](const BucketRow& r) {
    return (f.policy && r.policy != *f.policy) || !r.key.starts_with(f.key_prefix) ||
           (f.limited_only && r.state != "limited");
  });
  if (f.top > 0) {
    const auto metric = [&](const BucketRow& r) {
      return f.by == "denials" ? r.denied : r.admitted + r.denied;
    };
    // Stable: ties keep the policy/key order of bucket_rows().
    std::stable_sort(rows.begin(), rows.end(),
                     [&](const BucketRow& a, const BucketRow& b) { return metric(a) > metric(b); });
    if (rows.size() > f.top) rows.resize(f.top);
  }
  return rows;
}

/// RFC 4180 field: quoted when it holds a comma, a quote or a line break.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

inline std::string dump_csv(const std::vector<BucketRow>& rows) {
  // A duration that never ends (Nanos::max()) is an empty field.
  const auto ns = [](Nanos d) {
    return d == Nanos::max() ? std::string() : std::to_string(d.count());
  };
  std::string out =
      "slot,policy,key,key_hex,remaining,limit,retry_after_ns,reset_after_ns,admitted,denied,"
      "state\n";
  for (const auto& r : rows) {
    out +=
        fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", r.slot, csv_field(escape_bytes(r.policy)),
                    csv_field(escape_bytes(r.key)), hex_bytes(r.key), r.remaining, r.limit,
                    ns(r.retry_after), ns(r.reset_after), r.admitted, r.denied, r.state);
  }
  return out;
}

/// `shmlimit dump NAME [filters] [--json|--csv]`.
inline void print_dump_filtered(const Limiter& limiter, const DumpFilter& filter, bool json,
                                bool csv) {
  if (filter.policy) require_policy(limiter, *filter.policy);
  const std::vector<BucketRow> rows =
      filter_rows(bucket_rows(limiter.dump(), limiter.policies()), filter);
  if (json) {
    write_stdout(to_text(dump_json(rows), 2) + "\n");
  } else if (csv) {
    write_stdout(dump_csv(rows));
  } else {
    write_stdout(render_dump(rows, use_color()));
  }
}

// ---------------------------------------------------------------------------
// `shmlimit metrics`: Prometheus text exposition format 0.0.4

/// A label value: printable (escape_bytes keeps valid UTF-8), then the
/// format's own escapes for backslash, double quote and line feed.
inline std::string prom_label(std::string_view raw) {
  std::string out;
  for (const char c : escape_bytes(raw, true)) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

/// A label value of library text that should be printable ASCII (the
/// decision clock's reason): printable_ascii(), then the exposition's
/// escapes, so a parser reads back the text itself.
inline std::string prom_text_label(std::string_view text) {
  std::string out;
  for (const char c : printable_ascii(text)) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out;
}

inline std::string prom_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

struct PolicyTotals {
  std::uint64_t buckets = 0;
  std::uint64_t admitted = 0;
  std::uint64_t denied = 0;
  std::uint64_t limited = 0;
};

/// Per policy name: buckets and limited buckets from one dump, admitted and
/// denied from the exact totals (Limiter::counters(), which never decrease:
/// a reclaimed or reset bucket takes nothing away from them). Every
/// registered policy appears, even with no buckets, so its series exist
/// from the first scrape.
inline std::map<std::string, PolicyTotals> policy_totals(
    const std::vector<PolicyCounters>& counters, const std::vector<BucketRow>& rows) {
  std::map<std::string, PolicyTotals> totals;
  for (const auto& c : counters) {
    PolicyTotals& t = totals[c.policy];
    t.admitted = c.admitted;
    t.denied = c.denied;
  }
  for (const auto& r : rows) {
    PolicyTotals& t = totals[r.policy];
    ++t.buckets;
    if (r.state == "limited") ++t.limited;
  }
  return totals;
}

/// One segment as a scrape sees it: up (opened read-only, read) with its
/// stats and buckets, or down with the reason (missing, refused, not a
/// shmlimit segment of this layout).
struct SegmentMetrics {
  std::string segment;
  bool up = false;
  std::string error;  // when down
  Stats stats;
  std::vector<BucketRow> rows;
};

/// Reads one segment for the metrics; never throws (a segment that does
/// not open, or fails while read, is down).
inline SegmentMetrics read_segment_metrics(const std::string& name, bool allow_other_users) {
  SegmentMetrics m;
  m.segment = name;
  try {
    const Limiter limiter = open_for_inspection(name, allow_other_users);
    m.stats = limiter.stats();
    m.rows = bucket_rows(limiter.dump());
    m.up = true;
  } catch (const std::exception& e) {
    m.error = e.what();
  }
  return m;
}

/// The exposition of many segments: every family once (one # HELP and one
/// # TYPE), its samples for every segment that is up; shmlimit_up says
/// which are (1) and which are not (0), and only it has samples for a
/// segment that is down. Last, shmlimit_decision_clock_info: `clock`, the
/// decision clock of the process that renders (no segment label: a fact
/// of this process, not of a segment).
inline std::string render_metrics(const std::vector<SegmentMetrics>& segments,
                                  const DecisionClockInfo& clock = decision_clock_info()) {
  struct Family {
    std::string name, type, help, samples;
  };
  std::vector<Family> families;
  const auto family = [&](std::string_view name, std::string_view type,
                          std::string_view help) -> Family& {
    for (Family& f : families) {
      if (f.name == name) return f;
    }
    families.push_back(Family{std::string(name), std::string(type), std::string(help), {}});
    return families.back();
  };
  const auto d = [](auto v) { return static_cast<double>(v); };
  const auto secs = [](Nanos n) { return static_cast<double>(n.count()) / 1e9; };
  family("up", "gauge",
         "1 if the segment was read, 0 if it is missing or was refused (not a shmlimit segment of "
         "this layout, another user's, unreadable).");
  for (const SegmentMetrics& m : segments) {
    const std::string seg = fmt::format("segment=\"{}\"", prom_label(m.segment));
    family("up", "", "").samples += fmt::format("shmlimit_up{{{}}} {}\n", seg, m.up ? 1 : 0);
    if (!m.up) continue;
    const Stats& s = m.stats;
    const auto one = [&](std::string_view name, std::string_view type, std::string_view help,
                         double value) {
      family(name, type, help).samples +=
          fmt::format("shmlimit_{}{{{}}} {}\n", name, seg, prom_number(value));
    };
    one("capacity_slots", "gauge", "Bucket slots in the segment.", d(s.capacity));
    one("used_slots", "gauge", "Live buckets.", d(s.used));
    one("free_slots", "gauge", "Empty and dead slots.", d(s.empty + s.dead));
    one("reclaimable_slots", "gauge", "Live buckets that have refilled completely.",
        d(s.reclaimable));
    one("dead_slots", "gauge", "Freed slots, reusable.", d(s.dead));
    one("claiming_slots", "gauge", "Slots being claimed at the time of the scrape.", d(s.claiming));
    one("max_probe_length", "gauge", "Longest distance of a live key from its home slot, in slots.",
        d(s.max_probe_length));
    one("mean_probe_length", "gauge", "Mean distance of live keys from their home slot, in slots.",
        s.mean_probe_length);
    one("segment_age_seconds", "gauge", "Time since the segment was created.", secs(s.age));
    one("clock_horizon_left_seconds", "gauge",
        "Time until the segment's clock horizon; re-create the segment before it.",
        secs(s.clock_horizon_left));
    one("full_table_events_total", "counter", "Decisions that found no slot and applied on_full.",
        d(s.full_events));
    one("contended_events_total", "counter",
        "Decisions that waited too long for a claimer and applied on_full.", d(s.contended_events));
    one("repairs_total", "counter", "Half-done claims of dead processes repaired.", d(s.repairs));

    const auto totals = policy_totals(s.policies, m.rows);
    const auto per_policy = [&](std::string_view name, std::string_view type, std::string_view help,
                                auto field) {
      Family& f = family(name, type, help);
      for (const auto& [policy, t] : totals) {
        f.samples += fmt::format("shmlimit_{}{{{},policy=\"{}\"}} {}\n", name, seg,
                                 prom_label(policy), field(t));
      }
    };
    per_policy("policy_buckets", "gauge", "Live buckets of the policy.",
               [](const PolicyTotals& t) { return t.buckets; });
    per_policy(
        "policy_admitted_total", "counter",
        "Admitted decisions of the policy since the segment was created (exact; never decreases).",
        [](const PolicyTotals& t) { return t.admitted; });
    per_policy("policy_denied_total", "counter",
               "Denied decisions of the policy since the segment was created, each refusing limit "
               "of a multi-limit request included (exact; never decreases).",
               [](const PolicyTotals& t) { return t.denied; });
    per_policy("policy_limited_buckets", "gauge",
               "Live buckets of the policy that are limited now.",
               [](const PolicyTotals& t) { return t.limited; });
  }
  // An info metric (the value is always 1, the facts are the labels);
  // `reason` only when there is one.
  std::string clock_labels = fmt::format("clock=\"{}\"", prom_text_label(clock.clock));
  if (!clock.reason.empty())
    clock_labels += fmt::format(",reason=\"{}\"", prom_text_label(clock.reason));
  family("decision_clock_info", "gauge",
         "The clock the process that wrote these metrics decides on: clock is tsc or exact "
         "(clock_gettime), reason says why exact. A fact of that process, not of the segments: "
         "each worker process chooses its own.")
      .samples += fmt::format("shmlimit_decision_clock_info{{{}}} 1\n", clock_labels);
  std::string out;
  for (const Family& f : families) {
    out += fmt::format("# HELP shmlimit_{} {}\n# TYPE shmlimit_{} {}\n", f.name, f.help, f.name,
                       f.type);
    out += f.samples;
  }
  return out;
}

/// One segment that is up (the tests' and the library's own view).
inline std::string render_metrics(std::string_view segment, const Stats& s,
                                  const std::vector<BucketRow>& rows) {
  SegmentMetrics m;
  m.segment = std::string(segment);
  m.up = true;
  m.stats = s;
  m.rows = rows;
  return render_metrics(std::vector<SegmentMetrics>{std::move(m)}, s.decision_clock);
}

/// `shmlimit metrics NAME...`: every segment, each up or down; returns
/// the names of those that are down with why.
inline std::vector<std::string> print_metrics(const std::vector<std::string>& names,
                                              bool allow_other_users) {
  std::vector<SegmentMetrics> segments;
  std::vector<std::string> down;
  for (const std::string& name : names) {
    segments.push_back(read_segment_metrics(name, allow_other_users));
    if (!segments.back().up) down.push_back(segments.back().error);
  }
  write_stdout(render_metrics(segments));
  return down;
}

// ---------------------------------------------------------------------------
// `shmlimit watch`

/// Per-policy buckets and exact totals, and the denials recorded in the ring
/// since the previous snapshot.
struct WatchSnapshot {
  std::map<std::string, PolicyTotals> policies;
  std::chrono::steady_clock::time_point taken;
  RecentDenials denials;  // since the previous snapshot's cursor
};

/// `cursor`: the previous snapshot's denials.next_cursor (the first
/// snapshot passes UINT64_MAX: only what comes after it).
inline WatchSnapshot watch_snapshot(const Limiter& limiter, std::uint64_t cursor) {
  WatchSnapshot s;
  s.denials = limiter.recent_denials(cursor);
  const std::vector<PolicyCounters> counters = limiter.counters();
  s.taken = std::chrono::steady_clock::now();
  s.policies = policy_totals(counters, bucket_rows(limiter.dump()));
  return s;
}

/// Growth of a total between snapshots: totals never decrease, so the
/// guard only matters for a segment that was removed and created again
/// under the same name while watched.
inline std::uint64_t counter_growth(std::uint64_t before, std::uint64_t now) {
  return now >= before ? now - before : now;
}

inline std::string render_watch(std::string_view segment, const WatchSnapshot& prev,
                                const WatchSnapshot& cur, bool color) {
  const double secs = std::max(1e-9, std::chrono::duration<double>(cur.taken - prev.taken).count());
  struct Delta {
    std::uint64_t decisions = 0;
    std::uint64_t denials = 0;
  };
  std::map<std::string, Delta> per_policy;
  for (const auto& [policy, c] : cur.policies) {
    PolicyTotals before;
    if (const auto it = prev.policies.find(policy); it != prev.policies.end()) before = it->second;
    const std::uint64_t a = counter_growth(before.admitted, c.admitted);
    const std::uint64_t dn = counter_growth(before.denied, c.denied);
    Delta& d = per_policy[policy];
    d.decisions += a + dn;
    d.denials += dn;
  }

  std::string out = fmt::format("{}  interval {}\n", segment,
                                format_duration(Nanos(static_cast<std::int64_t>(secs * 1e9))));
  Table t;
  t.headers = {"POLICY", "BUCKETS", "LIMITED", "DECISIONS/S", "DENIALS/S"};
  t.right = {false, true, true, true, true};
  for (const auto& [policy, totals] : cur.policies) {
    const Delta d = per_policy[policy];
    t.rows.push_back({escape_bytes(policy), std::to_string(totals.buckets),
                      std::to_string(totals.limited),
                      fmt::format("{:.1f}", static_cast<double>(d.decisions) / secs),
                      fmt::format("{:.1f}", static_cast<double>(d.denials) / secs)});
  }
  out += t.rows.empty() ? std::string("no policies\n") : render_table(t, color);

  // The most denied keys of the interval, from the recent-denials ring.
  struct Denied {
    std::string policy;
    std::string key;
    std::uint64_t grew = 0;
  };
  std::map<std::pair<std::string, std::string>, std::uint64_t> by_key;
  for (const auto& d : cur.denials.denials) by_key[{d.policy, d.key}] += 1 + d.repeats;
  std::vector<Denied> denied;
  for (const auto& [id, n] : by_key) denied.push_back({id.first, id.second, n});
  std::stable_sort(denied.begin(), denied.end(),
                   [](const Denied& a, const Denied& b) { return a.grew > b.grew; });
  if (denied.size() > 10) denied.resize(10);
  if (denied.empty()) {
    out += "recent denied keys: none\n";
    out += lost_line(cur.denials.lost);
  } else {
    out += "recent denied keys:\n";
    Table k;
    k.headers = {"POLICY", "KEY", "DENIED"};
    k.right = {false, false, true};
    for (const auto& d : denied) {
      k.rows.push_back({escape_bytes(d.policy), escape_bytes(d.key), std::to_string(d.grew)});
    }
    out += render_table(k, color, "  ");
    out += lost_line(cur.denials.lost);
  }
  return out;
}

/// `shmlimit watch NAME [--interval S] [--count N]`: count 0 = until killed.
inline void run_watch(const Limiter& limiter, double interval_s, std::uint64_t count) {
  const bool tty = isatty(STDOUT_FILENO) != 0;
  const bool color = use_color();
  const auto interval = std::chrono::duration<double>(interval_s);
  WatchSnapshot prev = watch_snapshot(limiter, UINT64_MAX);
  for (std::uint64_t n = 0; count == 0 || n < count; ++n) {
    std::this_thread::sleep_for(interval);
    WatchSnapshot cur = watch_snapshot(limiter, prev.denials.next_cursor);
    std::string block = render_watch(limiter.name(), prev, cur, color);
    // On a terminal, redraw in place: cursor home, clear the screen.
    write_stdout(tty ? "\x1b[H\x1b[2J" + block : (n > 0 ? "\n" : "") + block);
    std::fflush(stdout);
    prev = std::move(cur);
  }
}

}  // namespace shmlimit::tools
