// Private to src/admin: what the configuration files' parts share
// (formerly config.cpp's anonymous namespace): one-line messages, the
// largest count a file may give and the policy-spec helpers used both when
// reading a file (config_toml.cpp) and when applying it (config.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "shmlimit/config.hpp"

namespace shmlimit::config_detail {

using u64 = std::uint64_t;

// The largest count or burst a file may give (rate.cpp's kMaxCount).
constexpr u64 kMaxCount = u64{1} << 40;

// A message is one line: control bytes that came from the file (through a
// quoted key, a value or the TOML parser's own description) are shown as
// \xNN.
std::string one_line(std::string_view text);

[[noreturn]] void invalid(const std::string& what);

// Why add_policy would refuse `spec` (empty when it would accept it).
std::string spec_problem(const PolicySpec& spec);

// "api.2" -> ("api", 2) when the name ends in '.' and a decimal K >= 2
// without a leading zero: the form of a list member's name.
std::optional<std::pair<std::string_view, u64>> split_member(std::string_view name);

std::string member_name(std::string_view base, std::size_t k);

}  // namespace shmlimit::config_detail
