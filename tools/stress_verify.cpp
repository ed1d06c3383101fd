// `shmlimit-stress`: the verifier and its report. After the run it checks
// the table, proves every key's bounds (doc/stress.md) from what the
// workers recorded and from the buckets' state words, checks that no slot
// leaked, and prints the summary (a table, or one JSON object).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "format.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "stress.hpp"

namespace stress {

namespace tools = shmlimit::tools;

namespace {

const char* distribution_name(Distribution d) {
  switch (d) {
    case Distribution::kUniform:
      return "uniform";
    case Distribution::kZipf:
      return "zipf";
    case Distribution::kHot:
      return "hot";
  }
  return "?";
}

const char* inject_name(InjectBug b) {
  switch (b) {
    case InjectBug::kNone:
      return "none";
    case InjectBug::kLostUpdate:
      return "lost-update";
    case InjectBug::kPeek:
      return "peek";
    case InjectBug::kUnrecorded:
      return "unrecorded";
  }
  return "?";
}

}  // namespace

std::string group(u64 v) {
  const std::string digits = std::to_string(v);
  std::string s;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

std::string rate_text(double per_s) {
  if (per_s >= 1e6) return fmt::format("{:.2f}M", per_s / 1e6);
  if (per_s >= 1e3) return fmt::format("{:.1f}k", per_s / 1e3);
  return fmt::format("{:.0f}", per_s);
}

// ---- verification -------------------------------------------------------
int Runner::verify_and_report() {
  const Config& c = plan_.cfg;
  const std::size_t npol = c.policies.size();
  summaries_.assign(npol, PolicySummary{});

  // 1. The table: repair what dead workers left, then every invariant.
  check_ = limiter_->check(true);
  for (const std::string& p : check_.problems) violations_.push_back({"table", "", "", p});
  if (check_.in_progress != 0) {
    violations_.push_back({"table", "", "",
                           fmt::format("{} slots still being claimed after every worker stopped",
                                       check_.in_progress)});
  }
  stats_ = limiter_->stats();
  if (stats_.claiming != 0 || stats_.used + stats_.dead + stats_.empty != stats_.capacity) {
    violations_.push_back(
        {"table", "", "",
         fmt::format("slot states do not add up: {} used + {} dead + {} empty + {} claiming != {}",
                     stats_.used, stats_.dead, stats_.empty, stats_.claiming, stats_.capacity)});
  }

  // 2. Every key's bounds. The buckets as they are now: (policy, key) -> state.
  std::map<std::pair<std::string, std::string>, u64> states;
  for (const shmlimit::BucketView& b : limiter_->dump()) states[{b.policy, b.key}] = b.state;

  for (std::size_t p = 0; p < npol; ++p) {
    const PolicyPlan& pp = c.policies[p];
    const Params& prm = plan_.params[p];
    const AlgorithmModel& m = *plan_.models[p];
    PolicySummary& sum = summaries_[p];
    sum.deficit_allowed = c.processes;
    for (u64 k = 0; k < pp.keys; ++k) {
      Merged r = merge(p, k);
      if (r.first_pre == 0) continue;  // never attempted
      ++sum.keys_touched;
      sum.ops += r.admitted_ops + r.denied_ops + r.fallback_ops;
      sum.admitted_ops += r.admitted_ops;
      sum.admitted_cost += r.admitted_cost;
      sum.denied += r.denied_ops;
      sum.fallbacks += r.fallback_ops;
      const std::string& key = plan_.key_names[k];
      const auto fail = [&](const char* kind, std::string detail) {
        ++sum.violations;
        violations_.push_back({kind, pp.name, key, std::move(detail)});
      };

      // (U) exact upper bound over the key's whole window. Without kills
      // every decision ended before the latest post-decision reading;
      // with kills a decision may have been cut short, so the window
      // ends when the parent had reaped every worker.
      const i64 b = facts_.kills > 0 || facts_.crashes > 0 ? facts_.t1 : r.last_post;
      const u64 upper = m.upper(prm, r.first_pre, b);
      sum.allowance += upper;
      if (r.admitted_cost > upper) {
        fail("over_admission",
             fmt::format("recorded {} admitted, the most {} can admit in {} is {}", r.admitted_cost,
                         pp.rate, tools::format_duration(Nanos(b - r.first_pre)), upper));
      } else {
        sum.min_headroom = std::min(sum.min_headroom, upper - r.admitted_cost);
      }

      // (S) the state word: what the bucket says it was charged since the
      // key's first decision bounds what the workers were told.
      const auto st = states.find({pp.name, key});
      if (st != states.end()) {
        const i64 at_most = m.charged_at_most(prm, st->second, r.first_pre);
        ++sum.state_checked;
        if (static_cast<i64>(r.admitted_cost) > at_most) {
          fail("lost_update",
               fmt::format("recorded {} admitted but the bucket's state was charged at most {} "
                           "(an admission did not reach the state word)",
                           r.admitted_cost, at_most));
        }
      }

      // (L) lower bound: the key must have admitted what the policy
      // allows between its first decision and its last denial, less the
      // refill that may have gone to waste while the bucket sat full (E).
      const KeyShared& ks = plan_.key_shared(p, k);
      const i64 waste = ks.waste.load();
      const u64 lost = lost_[plan_.pair(p, k)];
      const u64 allowed_short = c.processes;
      if (r.last_deny_pre != 0) {
        ++sum.lower_checked;
        if (waste == 0) ++sum.no_waste_keys;
        const i64 ideal = m.lower(prm, pp.cost_max, r.first_post, r.last_deny_pre, waste);
        const i64 deficit = ideal - static_cast<i64>(r.admitted_cost + lost);
        sum.max_deficit = std::max(sum.max_deficit, deficit);
        if (deficit > static_cast<i64>(allowed_short)) {
          fail("under_admission",
               fmt::format("admitted {} (+{} possibly lost to kills) but must get at least {} - "
                           "{}: {} until its "
                           "last denial {} later, less {} of possibly wasted refill",
                           r.admitted_cost, lost, ideal, allowed_short, pp.rate,
                           tools::format_duration(Nanos(r.last_deny_pre - r.first_post)),
                           tools::format_duration(Nanos(waste))));
        }
        // (S') every charge in the state word was reported to someone.
        if (st != states.end()) {
          const i64 at_least = m.charged_at_least(prm, st->second, r.first_post, waste);
          if (at_least > static_cast<i64>(r.admitted_cost + lost + allowed_short)) {
            fail("unreported_charge", fmt::format("the bucket's state was charged at least {} "
                                                  "but only {} (+{} possibly lost) were "
                                                  "reported as admitted",
                                                  at_least, r.admitted_cost, lost));
          }
        }
      }
    }
    if (sum.min_headroom == std::numeric_limits<u64>::max()) sum.min_headroom = 0;
  }

  // 3. No slot leaked: once every bucket is full again (far in the
  // future), every slot can be taken by a new key.
  fill_check();

  report();
  return violations_.empty() ? kExitPass : kExitViolation;
}

Runner::Merged Runner::merge(std::size_t p, u64 k) const {
  Merged m;
  const auto min_set = [](i64& into, i64 v) {
    if (v != 0 && (into == 0 || v < into)) into = v;
  };
  for (unsigned lane = 0; lane < plan_.lanes; ++lane) {
    const KeyRecord& r = plan_.record(lane, p, k);
    m.admitted_cost += r.admitted_cost.load();
    m.admitted_ops += r.admitted_ops.load();
    m.denied_ops += r.denied_ops.load();
    m.fallback_ops += r.fallback_ops.load();
    min_set(m.first_pre, r.first_pre.load());
    min_set(m.first_post, r.first_post.load());
    m.last_post = std::max(m.last_post, r.last_post.load());
    m.last_deny_pre = std::max(m.last_deny_pre, r.last_deny_pre.load());
  }
  return m;
}

// No slot leaked: once every bucket is full again (far in the future),
// new keys must be able to take every slot. A handle with a 1 ms
// claim_timeout: no worker is alive, so a claim that waits at all is
// stuck on a slot nobody will ever release (Reason::kContended).
void Runner::fill_check() {
  const Config& c = plan_.cfg;
  i64 horizon = 0;
  for (const Params& prm : plan_.params)
    horizon = std::max<i64>(horizon, static_cast<i64>(prm.burst * prm.emission_ns));
  const Nanos later(facts_.t1 + horizon + 1'000'000'000);
  shmlimit::Options o = plan_.options;
  o.claim_timeout = std::chrono::milliseconds(1);
  shmlimit::Limiter fill = shmlimit::Limiter::open(o);
  u64 taken = 0, stuck = 0;
  const u64 cap = stats_.capacity;
  for (u64 i = 0; i < 16 * cap && taken < cap; ++i) {
    const auto d = fill.acquire_at(plan_.ids[0], fmt::format("fill-{}", i), 1, later);
    taken += d.allowed ? 1 : 0;
    stuck += d.reason == shmlimit::Reason::kContended ? 1 : 0;
  }
  reusable_ = taken;
  if (taken < cap || stuck > 0) {
    violations_.push_back(
        {"table", c.policies[0].name, "",
         fmt::format("only {} of {} slots could take a new key once every bucket was full, "
                     "{} claims stuck (slots leaked)",
                     taken, cap, stuck)});
  }
  const shmlimit::CheckReport again = limiter_->check(false);
  for (const std::string& p : again.problems)
    violations_.push_back({"table", "", "", "after refilling: " + p});
}

void Runner::report() {
  const Config& c = plan_.cfg;
  const double secs = std::max(facts_.seconds, 1e-9);
  if (c.json) {
    tools::Json j;
    j["config"] = {{"processes", c.processes},
                   {"duration_s", c.duration_s},
                   {"ops", c.ops},
                   {"keys", c.keys},
                   {"distribution", distribution_name(c.distribution)},
                   {"kill_rate", c.kill_rate},
                   {"capacity", c.capacity},
                   {"segment", name_},
                   {"seed", c.seed},
                   {"inject_bug", inject_name(c.inject)}};
    j["run"] = {{"seconds", facts_.seconds},
                {"decisions", facts_.ops},
                {"ops_per_s", static_cast<double>(facts_.ops) / secs},
                {"admitted", facts_.admitted},
                {"denied", facts_.denied},
                {"fallbacks", facts_.fallbacks},
                {"kills", facts_.kills},
                {"kills_mid_decision", facts_.kills_in_flight},
                {"crashes", facts_.crashes}};
    tools::Json pols = tools::Json::array();
    for (std::size_t p = 0; p < c.policies.size(); ++p) {
      const PolicyPlan& pp = c.policies[p];
      const PolicySummary& s = summaries_[p];
      pols.push_back({{"name", pp.name},
                      {"algorithm", pp.algorithm},
                      {"rate", pp.rate},
                      {"burst", plan_.params[p].burst},
                      {"cost_min", pp.cost_min},
                      {"cost_max", pp.cost_max},
                      {"weight", pp.weight},
                      {"keys_configured", pp.keys},
                      {"keys", s.keys_touched},
                      {"decisions", s.ops},
                      {"ops_per_s", static_cast<double>(s.ops) / secs},
                      {"admitted_ops", s.admitted_ops},
                      {"admitted_cost", s.admitted_cost},
                      {"denied", s.denied},
                      {"fallbacks", s.fallbacks},
                      {"allowance", s.allowance},
                      {"min_headroom", s.min_headroom},
                      {"state_checked", s.state_checked},
                      {"lower_checked", s.lower_checked},
                      {"no_waste_keys", s.no_waste_keys},
                      {"max_deficit", s.max_deficit},
                      {"deficit_allowed", s.deficit_allowed},
                      {"violations", s.violations},
                      {"verdict", s.violations == 0 ? "pass" : "fail"}});
    }
    j["policies"] = pols;
    j["table"] = {{"check_clean", check_.clean()},
                  {"problems", check_.problems},
                  {"repaired", check_.repaired},
                  {"repairs_total", stats_.repairs},
                  {"used", stats_.used},
                  {"dead", stats_.dead},
                  {"empty", stats_.empty},
                  {"claiming", stats_.claiming},
                  {"full_events", stats_.full_events},
                  {"contended_events", stats_.contended_events},
                  {"reusable_slots", reusable_},
                  {"capacity", stats_.capacity}};
    tools::Json v = tools::Json::array();
    for (const Violation& x : violations_) {
      v.push_back({{"kind", x.kind}, {"policy", x.policy}, {"key", x.key}, {"detail", x.detail}});
    }
    j["violations"] = v;
    j["verdict"] = violations_.empty() ? "pass" : "fail";
    tools::write_stdout(tools::to_text(j, 2) + "\n");
    return;
  }

  std::string out;
  out += fmt::format(
      "shmlimit-stress: {} processes, {} keys ({}), {} policies, capacity {}, kill-rate {}/s, "
      "seed {}{}\n",
      c.processes, c.keys, distribution_name(c.distribution), c.policies.size(), c.capacity,
      c.kill_rate, c.seed,
      c.inject == InjectBug::kNone ? "" : fmt::format(", INJECTED BUG: {}", inject_name(c.inject)));
  out += fmt::format(
      "run: {} decisions in {:.2f} s = {} ops/s; {} kills ({} mid-decision), {} crashes\n\n",
      group(facts_.ops), facts_.seconds, rate_text(static_cast<double>(facts_.ops) / secs),
      group(facts_.kills), group(facts_.kills_in_flight), facts_.crashes);
  tools::Table t;
  t.headers = {"POLICY", "RATE",     "BURST",     "COST",  "KEYS",    "OPS/S",  "ADMITTED",
               "DENIED", "FALLBACK", "ALLOWANCE", "LOWER", "DEFICIT", "VERDICT"};
  t.right = {false, false, true, false, true, true, true, true, true, true, true, true, false};
  for (std::size_t p = 0; p < c.policies.size(); ++p) {
    const PolicyPlan& pp = c.policies[p];
    const PolicySummary& s = summaries_[p];
    t.rows.push_back(
        {pp.name, pp.rate, std::to_string(plan_.params[p].burst),
         pp.cost_min == pp.cost_max ? std::to_string(pp.cost_min)
                                    : fmt::format("{}-{}", pp.cost_min, pp.cost_max),
         group(s.keys_touched), rate_text(static_cast<double>(s.ops) / secs),
         group(s.admitted_cost), group(s.denied), group(s.fallbacks), group(s.allowance),
         fmt::format("{}/{}", group(s.lower_checked), group(s.no_waste_keys)),
         s.lower_checked == 0 ? "-" : fmt::format("{}/{}", s.max_deficit, s.deficit_allowed),
         s.violations == 0 ? "ok" : fmt::format("FAIL ({})", s.violations)});
    t.styles.push_back(s.violations == 0 ? nullptr : tools::kRed);
  }
  out += tools::render_table(t, tools::use_color());
  out +=
      "\nADMITTED and ALLOWANCE are cost units; ALLOWANCE sums each key's exact upper bound "
      "(U).\n"
      "LOWER: keys whose lower bound (L) was checked / of those, keys never found full after "
      "their first\n"
      "decision (E = 0). DEFICIT: the worst key's shortfall from (L) / the shortfall allowed "
      "(processes).\n\n";
  out += fmt::format(
      "table: check {} ({} problems), {} claims of killed workers repaired by check, {} repairs "
      "in all; "
      "{} live, {} dead, {} empty, {} claiming; {} table-full, {} contended fallbacks\n",
      check_.clean() ? "clean" : "NOT CLEAN", check_.problems.size(), check_.repaired,
      stats_.repairs, stats_.used, stats_.dead, stats_.empty, stats_.claiming, stats_.full_events,
      stats_.contended_events);
  out += fmt::format("slots reusable after the run: {} of {}\n", reusable_, stats_.capacity);
  if (!violations_.empty()) {
    out += fmt::format("\n{} violations:\n", violations_.size());
    std::size_t shown = 0;
    for (const Violation& v : violations_) {
      if (++shown > 20) {
        out += fmt::format("  ... and {} more\n", violations_.size() - 20);
        break;
      }
      out +=
          fmt::format("  {}: {}{}{}\n", v.kind, v.policy.empty() ? "" : "policy " + v.policy + " ",
                      v.key.empty() ? "" : "key " + v.key + ": ", v.detail);
    }
  }
  out += fmt::format("\nverdict: {}\n",
                     violations_.empty() ? "PASS (0 violations)"
                                         : fmt::format("FAIL ({} violations)", violations_.size()));
  tools::write_stdout(out);
}

}  // namespace stress
