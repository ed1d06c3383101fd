// What a policy spec may be: the one validator and normaliser
// (shmlimit::normalize_policy_spec, declared in shmlimit.hpp and defined in
// policy_spec.cpp) behind Limiter::add_policy, configuration files
// (src/admin/config.cpp), the C API and the CLI, and the helpers it shares.
//
//   * A name is 1..31 bytes of [A-Za-z0-9_.:-]. A name that is not UTF-8,
//     or holds any other character, is refused naming the offending byte
//     escaped (\xc3), so a message never carries half a character.
//   * burst: gcra, token_bucket and leaky_bucket have a capacity of their
//     own (0 = the rate's count). The other algorithms' capacity is the
//     rate's count: their burst must be 0 or that count (what policies()
//     reports), anything else is refused rather than dropped.
//   * wait = drf applies to sliding_log only; a concurrency limit has no
//     period (stored as 0); on_full is allow or deny.
//   * The algorithm's own limits (algo_params_valid) last.
//
// Every message is one printable line (escape_bytes) that names the policy.
// Thread safety: pure functions of their arguments.
#pragma once

#include <string>
#include <string_view>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

/// Printable ASCII (0x20..0x7e) except the backslash is kept; every other
/// byte becomes "\xNN" (lowercase hex). For quoting input in messages.
std::string escape_bytes(std::string_view bytes);

/// Why `name` is not a valid policy name (empty when it is), one printable
/// line without the name itself.
std::string policy_name_problem(std::string_view name);

}  // namespace shmlimit::detail
