// `shmlimit`: create, configure, drive and inspect a shmlimit segment from
// the shell. doc/cli.md documents every subcommand, the exit codes and the
// JSON schemas.
//
//   shmlimit create  /NAME [--capacity N] [--mode 0600] [--slot-bytes 64|128|256] [--max-probe N]
//                          [--log-entries N]
//   shmlimit create  [/NAME] --config FILE [--replace]
//   shmlimit policy  /NAME POLICY RATE [--algorithm A] [--burst B] [--wait exact|drf]
//                          [--on-full open|closed] [--replace]
//   shmlimit policy  /NAME list [--json]
//   shmlimit acquire /NAME POLICY KEY [--cost N] [--peek] [--json]
//   shmlimit stat    /NAME [--json]
//   shmlimit dump    /NAME [--json|--csv] [--policy P] [--key-prefix S] [--limited-only]
//                          [--top N [--by usage|denials]]
//   shmlimit check   /NAME [--json] [--no-repair]
//   shmlimit denials /NAME [--since CURSOR] [--json]
//   shmlimit export  /NAME [--policy P] [--key K]
//   shmlimit import  /NAME FILE [--keep-existing]
//   shmlimit reset   /NAME [POLICY [KEY]]
//   shmlimit metrics /NAME
//   shmlimit watch   /NAME [--interval SECONDS] [--count N]
//   shmlimit rm      /NAME
//
//   --allow-other-users (any subcommand): share the segment with other users' processes (a
//                          segment owned by another uid or writable by 'other'; doc/design.md)
//
// Exit status: 0 success (acquire: allowed), 1 acquire: limited or check: not
// clean, 2 any error (bad arguments included), with one line "shmlimit: ..."
// on stderr.
//
// Inspection (stat, dump, metrics, watch, denials, export, policy list,
// acquire --peek, check --no-repair) maps the segment read-only; everything else maps it
// read-write. Neither checks the
// capacity (Options::capacity = 0): the tool works on any segment.
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
#include <optional>
#include <string>
#include <utility>

#include "format.hpp"
#include "inspect.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

namespace tools = shmlimit::tools;
using shmlimit::Error;
using shmlimit::ErrorCode;

constexpr int kExitOk = 0;
constexpr int kExitLimited = 1;
constexpr int kExitError = 2;

// A command-line process can afford to wait for a rival process that is
// inserting the same new key (the library's default is 10 ms, tuned for
// servers). With the default, a claimer descheduled on a loaded machine
// makes concurrent `acquire`s fall back to on_full (Reason::kContended),
// which for a fail-open policy admits beyond the limit.
constexpr std::chrono::milliseconds kClaimTimeout{2000};

/// One printable line on stderr, whatever bytes the message quotes (library
/// errors quote user input): control characters and bytes that are not
/// part of printable UTF-8 (half a character) become \xNN.
void fail_line(const std::string& message) {
  std::string line;
  for (std::size_t i = 0; i < message.size(); ++i) {
    const auto u = static_cast<unsigned char>(message[i]);
    if (u >= 0x80) {
      if (const std::size_t n = tools::printable_utf8_length(message, i); n > 0) {
        line.append(message, i, n);
        i += n - 1;
        continue;
      }
    }
    line += u < 0x20 || u >= 0x7F ? fmt::format("\\x{:02x}", u) : std::string(1, message[i]);
  }
  std::fprintf(stderr, "shmlimit: %s\n", line.c_str());
}

/// A whole number in decimal digits, or nothing (not digits, or above
/// 2^64-1). The one parse of every number on the command line: CLI11 alone
/// reads "-1" into an unsigned option as 2^64-1.
std::optional<std::uint64_t> parse_whole(const std::string& text) {
  if (text.empty() || text.size() > 20 || text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (const char c : text) {
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return v;
}

/// CLI11 check of a numeric option: a whole number from min to max. A
/// failure is a usage error (exit 2) naming the option and the range.
CLI::Validator whole(std::uint64_t min, std::uint64_t max, std::string hint = {}) {
  const std::string range = max == UINT64_MAX ? fmt::format("a whole number >= {}", min)
                                              : fmt::format("a whole number from {} to {}", min, max);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const std::optional<std::uint64_t> v = parse_whole(text);
        if (v && *v >= min && *v <= max) return {};
        return fmt::format("\"{}\" is not {}{}", tools::escape_bytes(text), range, hint);
      },
      "", "whole");
}

/// CLI11 check of a duration in seconds: plain decimal digits with at most
/// one '.', from min to max (CLI::Range lets "nan" through).
CLI::Validator decimal_seconds(double min, double max) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const bool decimal = !text.empty() && text.size() <= 32 && text != "." &&
                             text.find_first_not_of("0123456789.") == std::string::npos &&
                             std::count(text.begin(), text.end(), '.') <= 1;
        if (decimal) {
          const double v = std::strtod(text.c_str(), nullptr);
          if (v >= min && v <= max) return {};
        }
        return fmt::format("\"{}\" is not a number of seconds from {} to {}", tools::escape_bytes(text), min, max);
      },
      "", "seconds");
}

// --allow-other-users: Options::allow_other_users for every open and create.
bool g_allow_other_users = false;

shmlimit::Limiter open_for_inspection(const std::string& name) {
  return tools::open_for_inspection(name, g_allow_other_users);
}

shmlimit::Options open_options(const std::string& name, bool read_only) {
  shmlimit::Options o;
  o.name = name;
  o.capacity = 0;  // accept any capacity
  o.read_only = read_only;
  o.allow_other_users = g_allow_other_users;
  o.claim_timeout = kClaimTimeout;
  return o;
}

/// Octal permission bits ("0600", "600", "0660"): an optional leading 0,
/// then 1-4 octal digits.
mode_t parse_mode(const std::string& text) {
  std::string digits = text;
  if (digits.size() > 1 && digits[0] == '0') digits.erase(0, 1);
  if (digits.empty() || digits.size() > 4 ||
      digits.find_first_not_of("01234567") != std::string::npos) {
    throw Error(
        ErrorCode::kInvalidArgument,
        "invalid --mode \"" + text + "\": expected octal permission bits such as 0600 or 0660");
  }
  return static_cast<mode_t>(std::stoul(digits, nullptr, 8));
}

// ---------------------------------------------------------------------------
// Subcommands

struct CreateArgs {
  std::string name;  // empty: from --config
  std::uint32_t capacity = 65536;
  std::string mode = "0600";
  std::uint32_t slot_bytes = 128;
  std::uint32_t max_probe = 32;
  std::uint32_t log_entries = 0;  // sliding-log entries per slot (0: no sliding_log policies)
  std::string config;  // --config FILE
  bool replace = false;
};

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

struct PolicyArgs {
  std::string name;
  std::string policy;
  std::string rate;  // empty: `list`
  std::string algorithm = "gcra";
  std::uint64_t burst = 0;
  std::string wait = "exact";  // sliding_log only
  std::string on_full = "open";
  bool replace = false;
  bool json = false;
  // Set from CLI11 after parsing: which options were given.
  bool burst_given = false;
  bool on_full_given = false;
  bool algorithm_given = false;
  bool wait_given = false;
};

int run_policy_list(const PolicyArgs& a) {
  if (a.burst_given || a.on_full_given || a.algorithm_given || a.wait_given || a.replace) {
    throw Error(
        ErrorCode::kInvalidArgument,
        "--algorithm, --burst, --wait, --on-full and --replace apply when registering a policy, not to `policy " +
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
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("--burst does not apply to {}: its capacity is the rate's count (only gcra, "
                            "token_bucket and leaky_bucket have a burst)",
                            shmlimit::to_string(spec.algorithm)));
  }
  spec.burst = a.burst;  // given: at least 1 (whole); not given: 0, the rate's count
  // The library's one check, before the segment is opened.
  spec = shmlimit::normalize_policy_spec(spec);
  spec.on_full = a.on_full == "closed" ? shmlimit::OnFull::kDeny : shmlimit::OnFull::kAllow;
  shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(a.name, false));
  try {
    if (a.replace) {
      const shmlimit::PolicyReplacement r = limiter.replace_policy(spec);
      if (!r.changed) {
        tools::write_stdout(fmt::format("policy \"{}\" unchanged\n", spec.name));
      } else if (r.fresh) {
        tools::write_stdout(fmt::format(
            "policy \"{}\" replaced; its buckets start full: {} bucket{} reset\n", spec.name,
            r.buckets_reset, r.buckets_reset == 1 ? "" : "s"));
      } else {
        tools::write_stdout(fmt::format("policy \"{}\" replaced; its buckets are kept\n", spec.name));
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

struct AcquireArgs {
  std::string name;
  std::string policy;
  std::string key;
  std::uint64_t cost = 1;
  bool peek = false;
  bool json = false;
};

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

struct ExportArgs {
  std::string name;
  std::optional<std::string> policy;
  std::optional<std::string> key;
};

int run_export(const ExportArgs& a) {
  const shmlimit::Limiter limiter = open_for_inspection(a.name);
  std::optional<shmlimit::PolicyId> id;
  if (a.policy) id = tools::require_policy(limiter, *a.policy);
  std::optional<std::string_view> key;
  if (a.key) key = *a.key;
  tools::write_stdout(limiter.export_state(id, key));
  return kExitOk;
}

int run_import(const std::string& name, const std::string& file, bool keep_existing) {
  std::string text;
  if (file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorCode::kInvalidArgument, "cannot read " + file + " (give a file written by `shmlimit export`)");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(name, false));
  const shmlimit::ImportReport r = limiter.import_state(
      text, keep_existing ? shmlimit::ImportMode::kKeepExisting : shmlimit::ImportMode::kReplace);
  tools::write_stdout(fmt::format("imported {} bucket{}; skipped {} already full, {} existing; {} without room\n",
                                  r.imported, r.imported == 1 ? "" : "s", r.skipped_full, r.skipped_existing,
                                  r.no_room));
  return r.no_room == 0 ? kExitOk : kExitLimited;
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
    if (e.code() != ErrorCode::kIncompatible && e.code() != ErrorCode::kCorrupt && e.code() != ErrorCode::kTimeout) {
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

// ---------------------------------------------------------------------------

/// The subcommand the user named, for "see `shmlimit SUB --help`".
std::string help_hint(const CLI::App& app) {
  const auto subs = app.get_subcommands();
  return subs.empty() ? "shmlimit --help" : "shmlimit " + subs.front()->get_name() + " --help";
}

int run(int argc, char** argv) {
  CLI::App app{
      "shmlimit: create, configure, drive and inspect a rate limiter shared by processes "
      "through a named POSIX shared-memory segment.",
      "shmlimit"};
  app.require_subcommand(1);
  // Given before or after the subcommand (fallthrough).
  app.fallthrough();
  app.add_flag("--allow-other-users", g_allow_other_users,
               "share the segment with other users: accept one owned by another uid or writable by "
               "'other', and create one with such a mode (doc/design.md)");
  app.footer(
      "Exit status: 0 ok (acquire: allowed), 1 acquire: limited or check: not clean, 2 error.\n"
      "See doc/cli.md.");
  const char* name_help = "segment name: '/' then 1..200 of A-Z a-z 0-9 _ . -";

  CreateArgs create_args;
  CLI::App* create = app.add_subcommand(
      "create",
      "Create a new segment (fails if the name exists), or with --config open or create the "
      "config's segment and register its policies.");
  create->add_option(
      "NAME", create_args.name,
      std::string(name_help) + " (with --config: optional, must match the config's)");
  CLI::Option* config_file =
      create
          ->add_option("--config", create_args.config,
                       "TOML file with [segment] and [policies.NAME] tables (doc/config.md)")
          ->type_name("FILE");
  create
      ->add_flag("--replace", create_args.replace,
                 "with --config: change the parameters of policies that exist")
      ->needs(config_file);
  create
      ->add_option("--capacity", create_args.capacity, "bucket slots, rounded up to a power of two")
      ->check(whole(1, UINT32_MAX))
      ->capture_default_str()
      ->excludes(config_file);
  create->add_option("--mode", create_args.mode, "octal permission bits, applied despite the umask")
      ->capture_default_str()
      ->excludes(config_file);
  create
      ->add_option("--slot-bytes", create_args.slot_bytes,
                   "bytes per slot: 64, 128 or 256 (keys up to N-40)")
      ->check(whole(64, 256))
      ->capture_default_str()
      ->excludes(config_file);
  create
      ->add_option("--max-probe", create_args.max_probe,
                   "longest probe sequence, in slots (1..1024)")
      ->check(whole(1, 1024))
      ->capture_default_str()
      ->excludes(config_file);
  create
      ->add_option("--log-entries", create_args.log_entries,
                   "admissions kept per key for sliding_log policies (their count at most; 0: none)")
      ->check(whole(0, UINT32_MAX))
      ->capture_default_str()
      ->excludes(config_file);

  PolicyArgs policy_args;
  CLI::App* policy = app.add_subcommand(
      "policy", "Register a policy (NAME POLICY RATE) or list the policies (NAME list).");
  policy->add_option("NAME", policy_args.name, name_help)->required();
  policy
      ->add_option("POLICY", policy_args.policy,
                   "policy name (1..31 of A-Z a-z 0-9 _ . : -), or `list`")
      ->required();
  policy->add_option("RATE", policy_args.rate,
                     R"("5/day", "10/5m", "10 per minute" ...; for concurrency the limit, e.g. "8")");
  CLI::Option* algorithm =
      policy
          ->add_option("--algorithm", policy_args.algorithm,
                       "gcra, token_bucket, fixed_window, sliding_window, quiet_period, leaky_bucket, "
                       "concurrency or sliding_log")
          ->capture_default_str();
  CLI::Option* wait = policy
                          ->add_option("--wait", policy_args.wait,
                                       "sliding_log: the retry-after reported, exact or drf (DRF's wait())")
                          ->check(CLI::IsMember({"exact", "drf"}))
                          ->capture_default_str();
  CLI::Option* burst =
      policy
          ->add_option("--burst", policy_args.burst,
                       "bucket capacity, gcra, token_bucket and leaky_bucket only (default: the rate's count)")
          ->check(whole(1, UINT64_MAX, " (omit --burst for the rate's count)"));
  CLI::Option* on_full =
      policy
          ->add_option("--on-full", policy_args.on_full,
                       "when a key cannot be served: open = admit, closed = deny")
          ->check(CLI::IsMember({"open", "closed"}))
          ->capture_default_str();
  policy->add_flag("--replace", policy_args.replace, "change the parameters of an existing policy");
  policy->add_flag("--json", policy_args.json, "with `list`: print a JSON array");

  AcquireArgs acquire_args;
  CLI::App* acquire = app.add_subcommand(
      "acquire", "Charge a request to (POLICY, KEY): exit 0 if allowed, 1 if limited.");
  acquire->add_option("NAME", acquire_args.name, name_help)->required();
  acquire->add_option("POLICY", acquire_args.policy, "a registered policy")->required();
  acquire
      ->add_option("KEY", acquire_args.key,
                   "the client's key (put `--` before a key that starts with -)")
      ->required();
  acquire->add_option("--cost", acquire_args.cost, "cost units to charge (0 = peek)")
      ->check(whole(0, UINT64_MAX))
      ->capture_default_str();
  acquire->add_flag("--peek", acquire_args.peek, "say what acquire would decide, without charging");
  acquire->add_flag("--json", acquire_args.json, "print the decision as one JSON object");

  std::string stat_name;
  bool stat_json = false;
  CLI::App* stat =
      app.add_subcommand("stat", "Show the segment's geometry, occupancy, counters and policies.");
  stat->add_option("NAME", stat_name, name_help)->required();
  stat->add_flag("--json", stat_json, "print one JSON object");

  std::string dump_name;
  bool dump_json = false;
  bool dump_csv = false;
  tools::DumpFilter dump_filter;
  CLI::App* dump = app.add_subcommand("dump", "List every live bucket, sorted by policy and key.");
  dump->add_option("NAME", dump_name, name_help)->required();
  CLI::Option* dump_json_flag = dump->add_flag("--json", dump_json, "print a JSON array");
  dump->add_flag("--csv", dump_csv, "print CSV with a header row")->excludes(dump_json_flag);
  dump->add_option("--policy", dump_filter.policy, "only the buckets of this policy");
  dump->add_option("--key-prefix", dump_filter.key_prefix, "only keys that start with these bytes");
  dump->add_flag("--limited-only", dump_filter.limited_only, "only buckets whose state is limited");
  CLI::Option* dump_top =
      dump->add_option("--top", dump_filter.top, "keep the N buckets with the most --by, most first")
          ->check(whole(0, UINT64_MAX));
  dump->add_option("--by", dump_filter.by, "--top's order: usage (admitted + denied) or denials")
      ->check(CLI::IsMember({"usage", "denials"}))
      ->capture_default_str()
      ->needs(dump_top);

  std::string check_name;
  bool check_json = false;
  bool check_no_repair = false;
  CLI::App* check = app.add_subcommand(
      "check", "Verify the segment's invariants, repairing dead claims first: exit 0 clean, 1 not.");
  check->add_option("NAME", check_name, name_help)->required();
  check->add_flag("--json", check_json, "print one JSON object");
  check->add_flag("--no-repair", check_no_repair, "only report (maps the segment read-only)");

  std::string denials_name;
  std::uint64_t denials_since = 0;
  bool denials_json = false;
  CLI::App* denials = app.add_subcommand(
      "denials", "List the most recent denied decisions (the segment's ring of the last 1024).");
  denials->add_option("NAME", denials_name, name_help)->required();
  denials->add_option("--since", denials_since, "only denials from this cursor on (a previous next_cursor)")
      ->check(whole(0, UINT64_MAX))
      ->capture_default_str();
  denials->add_flag("--json", denials_json, "print one JSON object");

  ExportArgs export_args;
  CLI::App* export_cmd = app.add_subcommand(
      "export", "Print the live buckets as a JSON state document (doc/state-format.md).");
  export_cmd->add_option("NAME", export_args.name, name_help)->required();
  export_cmd->add_option("--policy", export_args.policy, "only the buckets of this policy");
  export_cmd->add_option("--key", export_args.key, "only this key (raw bytes)");

  std::string import_name;
  std::string import_file;
  bool import_keep = false;
  CLI::App* import_cmd = app.add_subcommand(
      "import", "Load a state document written by `shmlimit export` (all or nothing): exit 0, 1 if some had no room.");
  import_cmd->add_option("NAME", import_name, name_help)->required();
  import_cmd->add_option("FILE", import_file, "the JSON document, or - for stdin")->required();
  import_cmd->add_flag("--keep-existing", import_keep, "leave keys that already have a bucket as they are");

  std::string reset_name;
  std::optional<std::string> reset_policy;
  std::optional<std::string> reset_key;
  CLI::App* reset = app.add_subcommand(
      "reset", "Forget one key of a policy, every key of a policy, or (no POLICY) every bucket.");
  reset->add_option("NAME", reset_name, name_help)->required();
  reset->add_option("POLICY", reset_policy, "a registered policy (omit: every policy)");
  reset->add_option("KEY", reset_key,
                    "the key to forget (omit: every key; put `--` before a key that starts with -)");

  std::string metrics_name;
  CLI::App* metrics = app.add_subcommand(
      "metrics", "Print the segment's metrics in the Prometheus text exposition format.");
  metrics->add_option("NAME", metrics_name, name_help)->required();

  std::string watch_name;
  double watch_interval = 1.0;
  std::uint64_t watch_count = 0;
  CLI::App* watch = app.add_subcommand(
      "watch", "Live view: decisions/s and denials/s per policy, and the most denied keys.");
  watch->add_option("NAME", watch_name, name_help)->required();
  watch->add_option("--interval", watch_interval, "seconds between refreshes")
      ->check(decimal_seconds(0.01, 86400.0))
      ->capture_default_str();
  watch->add_option("--count", watch_count, "stop after N refreshes (0 = until interrupted)")
      ->check(whole(0, UINT64_MAX))
      ->capture_default_str();

  std::string rm_name;
  CLI::App* rm = app.add_subcommand(
      "rm", "Remove the segment's name (processes that have it mapped keep it).");
  rm->add_option("NAME", rm_name, name_help)->required();

  // CLI11 reports an unknown subcommand as "A subcommand is required".
  if (argc > 1 && argv[1][0] != '-') {
    const std::string first = argv[1];
    const auto subs = std::as_const(app).get_subcommands([](const CLI::App*) { return true; });
    const bool known = std::any_of(subs.begin(), subs.end(),
                                   [&](const CLI::App* s) { return s->check_name(first); });
    if (!known) {
      fail_line("unknown subcommand \"" + tools::escape_bytes(first) +
                "\" (expected create, policy, acquire, stat, dump, check, denials, export, import, reset, metrics, watch or rm; see `shmlimit --help`)");
      return kExitError;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0 (CLI11's own code); every other parse error is a usage
    // error, exit 2 (CLI11 would use its own error numbers).
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    fail_line(fmt::format("{} (see `{}`)", e.what(), help_hint(app)));
    return kExitError;
  }

  if (*create) return run_create(create_args);
  if (*policy) {
    policy_args.burst_given = burst->count() > 0;
    policy_args.on_full_given = on_full->count() > 0;
    policy_args.algorithm_given = algorithm->count() > 0;
    policy_args.wait_given = wait->count() > 0;
    return run_policy(policy_args);
  }
  if (*acquire) return run_acquire(acquire_args);
  if (*stat) {
    tools::print_stat(open_for_inspection(stat_name), stat_json);
    return kExitOk;
  }
  if (*dump) {
    tools::print_dump_filtered(open_for_inspection(dump_name), dump_filter, dump_json,
                               dump_csv);
    return kExitOk;
  }
  if (*check) return run_check(check_name, check_no_repair, check_json);
  if (*denials) {
    tools::print_denials(open_for_inspection(denials_name), denials_since, denials_json);
    return kExitOk;
  }
  if (*export_cmd) return run_export(export_args);
  if (*import_cmd) return run_import(import_name, import_file, import_keep);
  if (*reset) {
    shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(reset_name, false));
    tools::print_reset(limiter, reset_policy, reset_key);
    return kExitOk;
  }
  if (*metrics) {
    tools::print_metrics(open_for_inspection(metrics_name));
    return kExitOk;
  }
  if (*watch) {
    tools::run_watch(open_for_inspection(watch_name), watch_interval, watch_count);
    return kExitOk;
  }
  if (*rm) return run_rm(rm_name);
  fail_line("no subcommand (see `shmlimit --help`)");
  return kExitError;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int rc = run(argc, argv);
    if (std::fflush(stdout) != 0 && rc != kExitError) {
      fail_line("cannot write the output");
      return kExitError;
    }
    return rc;
  } catch (const shmlimit::Error& e) {
    fail_line(e.what());
  } catch (const std::exception& e) {
    fail_line(e.what());
  }
  return kExitError;
}
