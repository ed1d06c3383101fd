// The `shmlimit` tool's shared helpers: one-line errors, the checks of
// numbers and durations on the command line, and how segments are opened.
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
#include <string_view>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "format.hpp"
#include "inspect.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace cli {

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
  if (text.empty() || text.size() > 20 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
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
CLI::Validator whole(std::uint64_t min, std::uint64_t max, std::string hint) {
  const std::string range = max == UINT64_MAX
                                ? fmt::format("a whole number >= {}", min)
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
        return fmt::format("\"{}\" is not a number of seconds from {} to {}",
                           tools::escape_bytes(text), min, max);
      },
      "", "seconds");
}

// --allow-other-users: Options::allow_other_users for every open and create.
bool g_allow_other_users = false;

void require_segment_names(const std::vector<std::string>& names) {
  static constexpr std::string_view kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
  for (const std::string& name : names) {
    if (name.size() < 2 || name.size() > 201 || name[0] != '/' ||
        name.find_first_not_of(kChars, 1) != std::string::npos) {
      throw Error(ErrorCode::kInvalidArgument, "invalid segment name \"" +
                                                   tools::escape_bytes(name) +
                                                   "\": '/' then 1..200 of A-Z a-z 0-9 _ . -");
    }
  }
}

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

}  // namespace cli
