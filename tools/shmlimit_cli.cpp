// `shmlimit`: create, configure, drive and inspect a shmlimit segment from
// the shell. doc/cli.md documents every subcommand, the exit codes and the
// JSON schemas.
//
//   shmlimit create  /NAME [--capacity N] [--mode 0600] [--slot-bytes 64|128|256] [--max-probe N]
//                          [--log-entries N]
//   shmlimit create  [/NAME] --config FILE [--replace]
//   shmlimit policy  /NAME POLICY RATE [--algorithm A] [--burst B] [--wait exact|drf]
//                          [--on-full allow|deny] [--replace]
//   shmlimit policy  /NAME list [--json]
//   shmlimit acquire /NAME POLICY KEY [--cost N] [--peek] [--json]
//   shmlimit stat    /NAME [--json]
//   shmlimit dump    /NAME [--json|--csv] [--policy P] [--key-prefix S] [--limited-only]
//                          [--top N [--by usage|denials]]
//   shmlimit check   /NAME [--json] [--no-repair]
//   shmlimit denials /NAME [--since CURSOR] [--json]
//   shmlimit export  /NAME [--policy P] [--key K]
//   shmlimit import  /NAME FILE [--keep-existing] [--replace]
//   shmlimit reset   /NAME [POLICY [KEY]]
//   shmlimit metrics /NAME...
//   shmlimit exporter [--listen HOST:PORT] /NAME...
//   shmlimit ls      [--json]
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
//   shmlimit --version
//
// Inspection (stat, dump, metrics, exporter, ls, watch, denials, export, policy list,
// acquire --peek, check --no-repair) maps the segment read-only; everything else maps it
// read-write. Neither checks the
// capacity (Options::capacity = 0): the tool works on any segment.
//
// This file: the command line (CLI11) and main(). The shared helpers are
// in cli_common.cpp, the subcommands in cli_commands.cpp (both cli.hpp).
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

#include "cli.hpp"
#include "format.hpp"
#include "inspect.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

using namespace cli;

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
  app.set_version_flag("--version", std::string("shmlimit ") + SHMLIMIT_VERSION,
                       "print the version and exit");
  app.footer(
      "Exit status: 0 ok (acquire: allowed), 1 acquire: limited or check: not clean, 2 error.\n"
      "Every command has --help. The manual: man shmlimit; doc/cli.md in the sources "
      "(/usr/share/doc/shmlimit-tools/cli.md when installed from the Debian package).");
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
      ->add_option(
          "--log-entries", create_args.log_entries,
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
  policy->add_option(
      "RATE", policy_args.rate,
      R"("5/day", "10/5m", "10 per minute" ...; for concurrency the limit, e.g. "8")");
  CLI::Option* algorithm =
      policy
          ->add_option(
              "--algorithm", policy_args.algorithm,
              "gcra, token_bucket, fixed_window, sliding_window, quiet_period, leaky_bucket, "
              "concurrency or sliding_log")
          ->capture_default_str();
  CLI::Option* wait =
      policy
          ->add_option("--wait", policy_args.wait,
                       "sliding_log: the retry-after reported, exact or drf (DRF's wait())")
          ->check(CLI::IsMember({"exact", "drf"}))
          ->capture_default_str();
  CLI::Option* burst = policy
                           ->add_option("--burst", policy_args.burst,
                                        "bucket capacity, gcra, token_bucket and leaky_bucket only "
                                        "(default: the rate's count)")
                           ->check(whole(1, UINT64_MAX, " (omit --burst for the rate's count)"));
  CLI::Option* on_full =
      policy
          ->add_option("--on-full", policy_args.on_full,
                       "when a key cannot be served: allow = admit (fail open), deny = refuse "
                       "(fail closed); open and closed are accepted for allow and deny")
          ->check(CLI::IsMember({"allow", "deny", "open", "closed"}))
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
  CLI::Option* dump_top = dump->add_option("--top", dump_filter.top,
                                           "keep the N buckets with the most --by, most first")
                              ->check(whole(0, UINT64_MAX));
  dump->add_option("--by", dump_filter.by, "--top's order: usage (admitted + denied) or denials")
      ->check(CLI::IsMember({"usage", "denials"}))
      ->capture_default_str()
      ->needs(dump_top);

  std::string check_name;
  bool check_json = false;
  bool check_no_repair = false;
  CLI::App* check = app.add_subcommand(
      "check",
      "Verify the segment's invariants, repairing dead claims first: exit 0 clean, 1 not.");
  check->add_option("NAME", check_name, name_help)->required();
  check->add_flag("--json", check_json, "print one JSON object");
  check->add_flag("--no-repair", check_no_repair, "only report (maps the segment read-only)");

  std::string denials_name;
  std::uint64_t denials_since = 0;
  bool denials_json = false;
  CLI::App* denials = app.add_subcommand(
      "denials", "List the most recent denied decisions (the segment's ring of the last 1024).");
  denials->add_option("NAME", denials_name, name_help)->required();
  denials
      ->add_option("--since", denials_since,
                   "only denials from this cursor on (a previous next_cursor)")
      ->check(whole(0, UINT64_MAX))
      ->capture_default_str();
  denials->add_flag("--json", denials_json, "print one JSON object");

  ExportArgs export_args;
  CLI::App* export_cmd = app.add_subcommand(
      "export", "Print the live buckets as a JSON state document (doc/state-format.md).");
  export_cmd->add_option("NAME", export_args.name, name_help)->required();
  export_cmd->add_option("--policy", export_args.policy, "only the buckets of this policy");
  export_cmd->add_option("--key", export_args.key, "only this key (raw bytes)");

  ImportArgs import_args;
  CLI::App* import_cmd = app.add_subcommand(
      "import",
      "Register the policies of a state document written by `shmlimit export`, then load its "
      "buckets (all or nothing): exit 0, 1 if some had no room.");
  import_cmd->add_option("NAME", import_args.name, name_help)->required();
  import_cmd->add_option("FILE", import_args.file, "the JSON document, or - for stdin")->required();
  import_cmd->add_flag("--keep-existing", import_args.keep_existing,
                       "leave keys that already have a bucket as they are");
  import_cmd->add_flag("--replace", import_args.replace,
                       "let the document change the parameters of a policy of the same name");

  std::string reset_name;
  std::optional<std::string> reset_policy;
  std::optional<std::string> reset_key;
  CLI::App* reset = app.add_subcommand(
      "reset", "Forget one key of a policy, every key of a policy, or (no POLICY) every bucket.");
  reset->add_option("NAME", reset_name, name_help)->required();
  reset->add_option("POLICY", reset_policy, "a registered policy (omit: every policy)");
  reset->add_option(
      "KEY", reset_key,
      "the key to forget (omit: every key; put `--` before a key that starts with -)");

  std::vector<std::string> metrics_names;
  CLI::App* metrics = app.add_subcommand(
      "metrics",
      "Print the segments' metrics in the Prometheus text exposition format (shmlimit_up 0 for a "
      "segment that is missing or refused).");
  metrics->add_option("NAME", metrics_names, "one or more segment names")->required();

  ExporterArgs exporter_args;
  CLI::App* exporter = app.add_subcommand(
      "exporter",
      "Serve the segments' metrics over HTTP (GET /metrics), for Prometheus to scrape; read-only.");
  exporter
      ->add_option("--listen", exporter_args.listen,
                   "address and port: 127.0.0.1:9464, [::1]:9464, 0.0.0.0:9464 (port 0: any free "
                   "port; the first line printed names it)")
      ->capture_default_str();
  exporter->add_option("NAME", exporter_args.names, "one or more segment names")->required();
  exporter->add_option("--max-scrapes", exporter_args.max_scrapes, "stop after N requests (tests)")
      ->check(whole(0, UINT64_MAX))
      ->group("");

  LsArgs ls_args;
  CLI::App* ls = app.add_subcommand(
      "ls", "List the shmlimit segments on this host (/dev/shm), others skipped.");
  ls->add_flag("--json", ls_args.json, "print a JSON array");

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
                "\" (expected create, policy, acquire, stat, dump, check, denials, export, import, "
                "reset, metrics, exporter, ls, watch or rm; see `shmlimit --help`)");
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
    tools::print_dump_filtered(open_for_inspection(dump_name), dump_filter, dump_json, dump_csv);
    return kExitOk;
  }
  if (*check) return run_check(check_name, check_no_repair, check_json);
  if (*denials) {
    tools::print_denials(open_for_inspection(denials_name), denials_since, denials_json);
    return kExitOk;
  }
  if (*export_cmd) return run_export(export_args);
  if (*import_cmd) return run_import(import_args);
  if (*reset) {
    shmlimit::Limiter limiter = shmlimit::Limiter::open(open_options(reset_name, false));
    tools::print_reset(limiter, reset_policy, reset_key);
    return kExitOk;
  }
  if (*metrics) return run_metrics(metrics_names);
  if (*exporter) return run_exporter(exporter_args);
  if (*ls) return run_ls(ls_args);
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
