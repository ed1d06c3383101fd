// Private to the `shmlimit` tool (shmlimit_cli.cpp): what its files share
// (formerly shmlimit_cli.cpp's anonymous namespace): exit codes, the
// command-line checks, how segments are opened, and the subcommands that
// are more than a call into inspect.hpp (cli_commands.cpp).
#pragma once

#include <sys/types.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace cli {

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
void fail_line(const std::string& message);

/// A whole number in decimal digits, or nothing (not digits, or above
/// 2^64-1). The one parse of every number on the command line: CLI11 alone
/// reads "-1" into an unsigned option as 2^64-1.
std::optional<std::uint64_t> parse_whole(const std::string& text);

/// CLI11 check of a numeric option: a whole number from min to max. A
/// failure is a usage error (exit 2) naming the option and the range.
CLI::Validator whole(std::uint64_t min, std::uint64_t max, std::string hint = {});

/// CLI11 check of a duration in seconds: plain decimal digits with at most
/// one '.', from min to max (CLI::Range lets "nan" through).
CLI::Validator decimal_seconds(double min, double max);

// --allow-other-users: Options::allow_other_users for every open and create.
extern bool g_allow_other_users;

/// A usage error (exit 2) unless every name is a valid segment name: for
/// commands that report a segment that does not open instead of failing.
void require_segment_names(const std::vector<std::string>& names);

shmlimit::Limiter open_for_inspection(const std::string& name);

shmlimit::Options open_options(const std::string& name, bool read_only);

/// Octal permission bits ("0600", "600", "0660"): an optional leading 0,
/// then 1-4 octal digits.
mode_t parse_mode(const std::string& text);

// ---------------------------------------------------------------------------
// Subcommands (cli_commands.cpp)

struct CreateArgs {
  std::string name;  // empty: from --config
  std::uint32_t capacity = 65536;
  std::string mode = "0600";
  std::uint32_t slot_bytes = 128;
  std::uint32_t max_probe = 32;
  std::uint32_t log_entries = 0;  // sliding-log entries per slot (0: no sliding_log policies)
  std::string config;             // --config FILE
  bool replace = false;
};

int run_create_from_config(const CreateArgs& a);

int run_create(const CreateArgs& a);

struct PolicyArgs {
  std::string name;
  std::string policy;
  std::string rate;  // empty: `list`
  std::string algorithm = "gcra";
  std::uint64_t burst = 0;
  std::string wait = "exact";     // sliding_log only
  std::string on_full = "allow";  // allow|deny (open|closed accepted)
  bool replace = false;
  bool json = false;
  // Set from CLI11 after parsing: which options were given.
  bool burst_given = false;
  bool on_full_given = false;
  bool algorithm_given = false;
  bool wait_given = false;
};

int run_policy_list(const PolicyArgs& a);

int run_policy(const PolicyArgs& a);

struct AcquireArgs {
  std::string name;
  std::string policy;
  std::string key;
  std::uint64_t cost = 1;
  bool peek = false;
  bool json = false;
};

int run_acquire(const AcquireArgs& a);

struct ExportArgs {
  std::string name;
  std::optional<std::string> policy;
  std::optional<std::string> key;
};

int run_export(const ExportArgs& a);

struct ImportArgs {
  std::string name;
  std::string file;  // "-": stdin
  bool keep_existing = false;
  bool replace = false;  // --replace: a policy of the document may change one of the segment
};

/// Registers the policies the document carries (a conflict with a policy of
/// the same name is refused unless --replace), then imports its buckets.
int run_import(const ImportArgs& a);

/// `shmlimit metrics NAME...`.
int run_metrics(const std::vector<std::string>& names);

// ---------------------------------------------------------------------------
// `shmlimit ls` (cli_ls.cpp)

struct LsArgs {
  bool json = false;
};

int run_ls(const LsArgs& a);

// ---------------------------------------------------------------------------
// `shmlimit exporter` (cli_exporter.cpp)

struct ExporterArgs {
  std::string listen = "127.0.0.1:9464";
  std::vector<std::string> names;
  std::uint64_t max_scrapes = 0;  // hidden --max-scrapes (tests): stop after N; 0 = never
};

int run_exporter(const ExporterArgs& a);

int run_check(const std::string& name, bool no_repair, bool json);

int run_rm(const std::string& name);

}  // namespace cli
