// shmlimit configuration: a TOML file that names the segment and its
// policies, so that every worker of a server opens the same segment with the
// same policies (doc/config.md gives the schema and a full example).
//
//   const shmlimit::Config config = shmlimit::load_config("/etc/myapp/shmlimit.toml");
//   shmlimit::Limiter limiter = shmlimit::open_config(config);
//   const auto ids = shmlimit::policy_group(limiter, "multi");  // multi, multi.2
//
// Thread and process safety
//   * parse_rates, parse_duration, parse_config and load_config are pure
//     functions of their input (and the file): safe from any thread.
//   * open_config may run in any number of processes at once; each policy is
//     registered under the segment's admin token (Limiter::add_policy). Its
//     all-or-nothing promise is about invalid and conflicting configs; see
//     open_config for the one race it does not close.
//   * Every function reports failure by throwing shmlimit::Error, and
//     nothing else; every message names the config's source (a file name)
//     and, for a problem in the text, its line and column.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

/// Parses a list of rates separated by ';', as the Python `limits` package
/// writes them: "10/hour;100/day", "10/hour ; 100 per day". Each item is a
/// rate in parse_rate()'s syntax; white space around ';' is allowed, ','
/// is not a separator, and an empty item (";;", a trailing ';') is an
/// error. A text without ';' gives exactly parse_rate(text).
/// Throws Error(kInvalidArgument) in parse_rate()'s style, quoting the
/// whole text and giving the column in the whole text:
///   invalid rate "10/h;5/fortnight": item 2: unknown unit 'fortnight' (expected s, m, h or d) at
///   column 8
std::vector<Rate> parse_rates(std::string_view text);

/// Parses a positive duration: a decimal integer and one unit, no space:
/// "500ms", "30s", "1m", "2h", "1d" (ms, s, m, h, d). At most 10 years, as
/// for rates. Throws Error(kInvalidArgument) naming the column, as
/// parse_rate() does: invalid duration "5x": unknown unit 'x' (expected ms, s, m, h or d) at column
/// 2
Nanos parse_duration(std::string_view text);

/// A parsed configuration: what to open and what to register in it.
struct Config {
  /// name (required), capacity, mode, slot_bytes, max_probe, open_timeout,
  /// claim_timeout, allow_other_users; Options' defaults where the file says nothing.
  Options segment;
  /// Every policy, validated, in the order of the file. A policy with N
  /// rates (rate = "10/hour;100/day") becomes N specs named name, name.2,
  /// ..., name.N, in the order of its list; policy_group() finds them.
  std::vector<PolicySpec> policies;
  /// Where the configuration came from (a file name), for messages.
  std::string source;
};

/// Parses and validates a configuration in TOML (schema: doc/config.md).
/// Unknown keys, wrong types and invalid values are errors, never silently
/// defaulted. Throws Error(kInvalidArgument) whose message starts with
/// "SOURCE:LINE:COLUMN: " (or "SOURCE: " when no line applies), e.g.
///   shmlimit.toml:7:8: policy "burst": invalid rate "60/fortnight": unknown unit ...
Config parse_config(std::string_view toml_text, std::string_view source = "<config>");

/// Reads the file at `path` (at most 1 MiB) and parses it with the path as
/// its source. A file that cannot be read throws Error naming the path and
/// the system's reason: kNotFound (ENOENT, ENOTDIR), kPermission (EACCES,
/// EPERM), kInvalidArgument (larger than 1 MiB) or kSystem (anything else).
Config load_config(const std::string& path);

/// Opens (or creates) config.segment and registers every policy, all or
/// nothing: every spec is validated, and checked against what the segment
/// already holds, before any is written. Throws, having registered nothing,
/// when
///   * a spec is invalid or two specs share a name (kInvalidArgument);
///   * the existing segment has another capacity or slot size than the
///     config asks for (kIncompatible);
///   * the segment holds a policy of the same name with other parameters
///     and `replace` is false (kPolicyConflict);
///   * the segment holds `name.K` beyond the K-1 members that the config
///     gives policy `name`, which policy_group() would wrongly include
///     (kPolicyConflict: policies cannot be removed; recreate the segment);
///   * the policy table has no room for the new names (kTableFull).
/// Policies of the segment that the config does not mention are kept.
/// Registering the same config again changes nothing. With `replace`,
/// policies whose parameters differ get the config's (buckets kept).
///
/// The one race left: the checks and the writes are separate steps (each
/// add_policy takes the admin token on its own), so another process that
/// registers a conflicting policy between them makes this call throw
/// kPolicyConflict after registering the policies before that one. Running
/// the same config again is always safe (registration is idempotent).
/// The segment may have been created even when this throws.
Limiter open_config(const Config& config, bool replace = false);

/// The ids of a policy group: `name`, then its list members `name.2`,
/// `name.3`, ... as long as they exist, in that order (empty when `name`
/// is not registered). Pass them to Limiter::acquire_many to apply every
/// limit of a list at once. Process-safe; reads the policy table.
std::vector<PolicyId> policy_group(const Limiter& limiter, std::string_view name);

}  // namespace shmlimit
