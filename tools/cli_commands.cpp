// The `shmlimit` subcommands that do more than one call into inspect.hpp:
// create, policy, acquire, export, import, check and rm (doc/cli.md).
#include <fmt/format.h>
#include <sys/types.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "format.hpp"
#include "inspect.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace cli {

/// `create --config FILE`: opens or creates the config's segment and
/// registers its policies, all or nothing (shmlimit::open_config).
int run_create_from_config(const CreateArgs& a) {
  shmlimit::Config config = shmlimit::load_config(a.config);
  if (g_allow_other_users) config.segment.allow_other_users = true;
  if (!a.name.empty() && a.name != config.segment.name) {
    throw Error(ErrorCode::kInvalidArgument, "segment " + a.name + " does not match the name \"" +
                                                 config.segment.name + "\" in [segment] of " +
                                                 a.config + " (give the config's name, or none)");
  }
  try {
    shmlimit::open_config(config, a.replace);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kPolicyConflict) throw;
    // The library's advice names its API; name the flag instead.
    std::string what = e.what();
    const std::string api_hint = " (ask for replacement explicitly to change it)";
    if (what.ends_with(api_hint)) {
      what.resize(what.size() - api_hint.size());
      what += " (pass --replace to change it)";
    }
    throw Error(e.code(), what);
  }
  return kExitOk;
}

int run_create(const CreateArgs& a) {
  if (!a.config.empty()) return run_create_from_config(a);
  if (a.name.empty()) {
    throw Error(ErrorCode::kInvalidArgument,
                "create needs a segment NAME, or --config FILE (see `shmlimit create --help`)");
  }
  shmlimit::Options o;
  o.name = a.name;
  o.capacity = a.capacity;
  o.mode = parse_mode(a.mode);
  o.slot_bytes = a.slot_bytes;
  o.max_probe = a.max_probe;
  o.log_entries = a.log_entries;
  o.allow_other_users = g_allow_other_users;
  shmlimit::Limiter::create(o);
  return kExitOk;
}

int run_policy_list(const PolicyArgs& a) {
  if (a.burst_given || a.on_full_given || a.algorithm_given || a.wait_given || a.replace) {
    throw Error(ErrorCode::kInvalidArgument,
                "--algorithm, --burst, --wait, --on-full and --replace apply when registering a "
                "policy, not to `policy " +
                    a.name + " list`");
  }
  const shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(a.name, true));
  const auto policies = limiter.policies();
  if (a.json) {
    tools::write_stdout(tools::to_text(tools::policies_json(policies), 2) + "\n");
  } else if (policies.empty()) {
    tools::write_stdout(fmt::format(
        "no policies in {} (add one with `shmlimit policy {} NAME RATE`)\n", a.name, a.name));
  } else {
    tools::write_stdout(tools::render_policies(policies, tools::use_color()));
  }
  return kExitOk;
}

int run_policy(const PolicyArgs& a) {
  if (a.rate.empty()) {
    if (a.policy == "list") return run_policy_list(a);
    throw Error(ErrorCode::kInvalidArgument,
                "policy \"" + a.policy + "\" needs a RATE, e.g. `shmlimit policy " + a.name + " " +
                    a.policy + " 100/m` (or `shmlimit policy " + a.name +
                    " list` to list the policies)");
  }
  if (a.json) {
    throw Error(ErrorCode::kInvalidArgument,
                "--json applies to `shmlimit policy " + a.name + " list` only");
  }
  shmlimit::PolicySpec spec;
  spec.name = a.policy;
  spec.algorithm = shmlimit::parse_algorithm(a.algorithm);
  if (a.wait_given && spec.algorithm != shmlimit::Algorithm::kSlidingLog) {
    throw Error(ErrorCode::kInvalidArgument, "--wait applies to --algorithm sliding_log only");
  }
  if (spec.algorithm == shmlimit::Algorithm::kConcurrency) {
    // A concurrency limit is a count of leases held at once: no period.
    const std::optional<std::uint64_t> limit = parse_whole(a.rate);
    if (!limit) {
      throw Error(ErrorCode::kInvalidArgument,
                  "a concurrency policy takes a limit (how many in flight, e.g. 8), not \"" +
                      tools::escape_bytes(a.rate) + "\"");
    }
    spec.rate = shmlimit::Rate{*limit, shmlimit::Nanos(0)};
  } else {
    spec.rate = shmlimit::parse_rate(a.rate);
  }
  spec.wait = a.wait == "drf" ? shmlimit::LogWait::kDrf : shmlimit::LogWait::kExact;
  if (a.burst_given && !shmlimit::algorithm_has_burst(spec.algorithm)) {
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("--burst does not apply to {}: its capacity is the rate's count (only gcra, "
                    "token_bucket and leaky_bucket have a burst)",
                    shmlimit::to_string(spec.algorithm)));
  }
  spec.burst = a.burst;  // given: at least 1 (whole); not given: 0, the rate's count
  // The library's one check, before the segment is opened.
  spec = shmlimit::normalize_policy_spec(spec);
  spec.on_full = a.on_full == "deny" || a.on_full == "closed" ? shmlimit::OnFull::kDeny
                                                              : shmlimit::OnFull::kAllow;
  shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(a.name, false));
  try {
    if (a.replace) {
      const shmlimit::PolicyReplacement r = limiter.replace_policy(spec);
      if (!r.changed) {
        tools::write_stdout(fmt::format("policy \"{}\" unchanged\n", spec.name));
      } else if (r.fresh) {
        tools::write_stdout(
            fmt::format("policy \"{}\" replaced; its buckets start full: {} bucket{} reset\n",
                        spec.name, r.buckets_reset, r.buckets_reset == 1 ? "" : "s"));
      } else {
        tools::write_stdout(
            fmt::format("policy \"{}\" replaced; its buckets are kept\n", spec.name));
      }
    } else {
      limiter.add_policy(spec, false);
    }
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kPolicyConflict) throw;
    // The library's advice names its API; name the flag instead.
    std::string what = e.what();
    const std::string api_hint = " (ask for replacement explicitly to change it)";
    if (what.size() > api_hint.size() && what.ends_with(api_hint))
      what.resize(what.size() - api_hint.size());
    throw Error(e.code(), what + " (pass --replace to change it)");
  }
  return kExitOk;
}

int run_acquire(const AcquireArgs& a) {
  shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(a.name, a.peek));
  const std::optional<shmlimit::PolicyId> id = limiter.find_policy(a.policy);
  if (!id) {
    throw Error(ErrorCode::kInvalidArgument, "unknown policy \"" + tools::escape_bytes(a.policy) +
                                                 "\" in " + a.name + " (see `shmlimit policy " +
                                                 a.name + " list`)");
  }
  const shmlimit::Decision d =
      a.peek ? limiter.peek(*id, a.key, a.cost) : limiter.acquire(*id, a.key, a.cost);
  if (a.json) {
    tools::write_stdout(tools::to_text(tools::decision_json(d, a.policy, a.key, a.cost), -1) +
                        "\n");
  } else {
    tools::write_stdout(tools::render_decision(d));
  }
  return d.allowed ? kExitOk : kExitLimited;
}

int run_export(const ExportArgs& a) {
  const shmlimit::Limiter limiter = open_for_inspection(a.name);
  std::optional<shmlimit::PolicyId> id;
  if (a.policy) id = tools::require_policy(limiter, *a.policy);
  std::optional<std::string_view> key;
  if (a.key) key = *a.key;
  tools::write_stdout(limiter.export_state(id, key));
  return kExitOk;
}

namespace {

/// The policies a state document carries ("policies": name, algorithm,
/// count, period_ns, burst, on_full, wait), each checked by the library's
/// one check (normalize_policy_spec). Bad entries are one error naming the
/// entry; the document's other problems are import_state's to report.
std::vector<shmlimit::PolicySpec> document_policies(const std::string& text) {
  using Json = nlohmann::json;
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::exception& e) {
    throw Error(ErrorCode::kInvalidArgument, std::string("import: not valid JSON: ") + e.what());
  }
  std::vector<shmlimit::PolicySpec> specs;
  if (!doc.is_object() || !doc.contains("policies") || !doc["policies"].is_array()) return specs;
  const Json& list = doc["policies"];
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Json& p = list[i];
    const std::string where = fmt::format("import: policies[{}]", i);
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string()) continue;  // import says
    const std::string pname = p["name"].get<std::string>();
    const auto count = [&](const char* f) { return p.contains(f) && p[f].is_number_unsigned(); };
    if (!p.contains("algorithm") || !p["algorithm"].is_string() || !count("count") ||
        !count("burst") || !count("period_ns")) {
      throw Error(
          ErrorCode::kInvalidArgument,
          where + " (\"" + tools::escape_bytes(pname) +
              "\"): algorithm (a name), count, period_ns and burst (integers) are required");
    }
    shmlimit::PolicySpec spec;
    spec.name = pname;
    try {
      spec.algorithm = shmlimit::parse_algorithm(p["algorithm"].get<std::string>());
      spec.rate.count = p["count"].get<std::uint64_t>();
      const std::uint64_t period = p["period_ns"].get<std::uint64_t>();
      if (period > static_cast<std::uint64_t>(INT64_MAX))
        throw Error(ErrorCode::kInvalidArgument, "period_ns is out of range");
      spec.rate.period = shmlimit::Nanos(static_cast<std::int64_t>(period));
      spec.burst = p["burst"].get<std::uint64_t>();
      if (p.contains("on_full")) {
        const Json& v = p["on_full"];
        if (v == "deny" || v == "closed") {
          spec.on_full = shmlimit::OnFull::kDeny;
        } else if (v == "allow" || v == "open") {
          spec.on_full = shmlimit::OnFull::kAllow;
        } else {
          throw Error(ErrorCode::kInvalidArgument, "on_full must be \"allow\" or \"deny\"");
        }
      }
      if (p.contains("wait")) {
        if (p["wait"] != "exact" && p["wait"] != "drf")
          throw Error(ErrorCode::kInvalidArgument, "wait must be \"exact\" or \"drf\"");
        spec.wait = p["wait"] == "drf" ? shmlimit::LogWait::kDrf : shmlimit::LogWait::kExact;
      }
      spec = shmlimit::normalize_policy_spec(spec);
    } catch (const Error& e) {
      throw Error(ErrorCode::kInvalidArgument,
                  where + " (\"" + tools::escape_bytes(pname) + "\"): " + e.what());
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

bool same_policy(const shmlimit::PolicySpec& a, const shmlimit::PolicySpec& b) {
  return a.algorithm == b.algorithm && a.rate == b.rate && a.burst == b.burst &&
         a.on_full == b.on_full &&
         (a.algorithm != shmlimit::Algorithm::kSlidingLog || a.wait == b.wait);
}

std::string describe_policy(const shmlimit::PolicySpec& s) {
  std::string out =
      fmt::format("{} {} burst {} on_full {}", shmlimit::to_string(s.algorithm),
                  shmlimit::format_rate(s.rate), s.burst, tools::on_full_name(s.on_full));
  if (s.algorithm == shmlimit::Algorithm::kSlidingLog)
    out += s.wait == shmlimit::LogWait::kDrf ? " wait drf" : " wait exact";
  return out;
}

}  // namespace

int run_import(const ImportArgs& a) {
  std::string text;
  if (a.file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(a.file, std::ios::binary);
    if (!in)
      throw Error(ErrorCode::kInvalidArgument,
                  "cannot read " + a.file + " (give a file written by `shmlimit export`)");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::vector<shmlimit::PolicySpec> specs = document_policies(text);
  shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(a.name, false));
  // Every conflict is refused before anything is registered.
  const std::vector<shmlimit::PolicyView> here = limiter.policies();
  std::vector<const shmlimit::PolicySpec*> to_add, to_replace;
  for (const shmlimit::PolicySpec& spec : specs) {
    const auto found = std::find_if(here.begin(), here.end(), [&](const shmlimit::PolicyView& v) {
      return v.spec.name == spec.name;
    });
    if (found == here.end()) {
      to_add.push_back(&spec);
    } else if (!same_policy(found->spec, spec)) {
      if (!a.replace) {
        throw Error(ErrorCode::kPolicyConflict,
                    fmt::format("import: policy \"{}\" is {} in {} but {} in the document; "
                                "nothing was imported (pass --replace to change it)",
                                tools::escape_bytes(spec.name), describe_policy(found->spec),
                                a.name, describe_policy(spec)));
      }
      to_replace.push_back(&spec);
    }
  }
  std::size_t registered = 0, replaced = 0;
  for (const shmlimit::PolicySpec* spec : to_add) {
    limiter.add_policy(*spec, false);
    ++registered;
  }
  for (const shmlimit::PolicySpec* spec : to_replace) {
    limiter.replace_policy(*spec);
    ++replaced;
  }
  const shmlimit::ImportReport r = limiter.import_state(
      text, a.keep_existing ? shmlimit::ImportMode::kKeepExisting : shmlimit::ImportMode::kReplace);
  if (registered + replaced > 0) {
    tools::write_stdout(fmt::format("registered {} polic{}, replaced {}\n", registered,
                                    registered == 1 ? "y" : "ies", replaced));
  }
  tools::write_stdout(fmt::format(
      "imported {} bucket{}; skipped {} already full, {} existing; {} without room\n", r.imported,
      r.imported == 1 ? "" : "s", r.skipped_full, r.skipped_existing, r.no_room));
  return r.no_room == 0 ? kExitOk : kExitLimited;
}

int run_metrics(const std::vector<std::string>& names) {
  require_segment_names(names);
  const std::vector<std::string> down = tools::print_metrics(names, g_allow_other_users);
  // The samples say shmlimit_up 0; stderr says why, exit 0 (a textfile
  // collector's file is rewritten, never left stale).
  for (const std::string& why : down) fail_line(why + " (shmlimit_up 0)");
  return kExitOk;
}

int run_check(const std::string& name, bool no_repair, bool json) {
  shmlimit::Options o = open_options(name, no_repair);
  o.open_timeout = std::chrono::milliseconds(500);  // a creator still initialising is unusual here
  std::optional<shmlimit::Limiter> limiter;
  try {
    limiter.emplace(shmlimit::Limiter::open(o));
  } catch (const Error& e) {
    // Missing, permission: exit 2 with one line. Anything that exists but
    // does not validate: the raw audit lists every problem, exit 1.
    if (e.code() != ErrorCode::kIncompatible && e.code() != ErrorCode::kCorrupt &&
        e.code() != ErrorCode::kTimeout) {
      throw;
    }
    return tools::print_raw_check(name, e.what(), json, g_allow_other_users);
  }
  return tools::print_check(*limiter, !no_repair, json);
}

int run_rm(const std::string& name) {
  if (!shmlimit::Limiter::remove(name)) {
    throw Error(ErrorCode::kNotFound, "shared-memory segment " + name + " does not exist");
  }
  return kExitOk;
}

}  // namespace cli
