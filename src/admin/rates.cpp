// Rate lists ("10/s; 100/m") and durations ("500ms", "1m") as written in
// configuration files and on command lines (doc/config.md).
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config_impl.hpp"
#include "shmlimit/config.hpp"

namespace shmlimit {
namespace {

using namespace config_detail;

constexpr std::int64_t kMillisecond = 1'000'000;
constexpr std::int64_t kSecond = 1'000'000'000;
// The longest period a rate may name (rate.cpp): 10 years.
constexpr std::int64_t kMaxPeriodNs = 10LL * 366 * 86400 * kSecond;

// ---------------------------------------------------------------------------
// Rate lists and durations

// parse_rate's message is `invalid rate "<item>": <what> at column <N>`.
// Returns <what> and N, or nothing if the message has another shape.
std::optional<std::pair<std::string, std::size_t>> split_rate_error(std::string_view message,
                                                                    std::string_view item) {
  const std::string prefix = "invalid rate \"" + std::string(item) + "\": ";
  constexpr std::string_view kColumn = " at column ";
  if (!message.starts_with(prefix)) return std::nullopt;
  const std::size_t at = message.rfind(kColumn);
  if (at == std::string_view::npos || at < prefix.size()) return std::nullopt;
  std::size_t column = 0;
  const std::string_view digits = message.substr(at + kColumn.size());
  if (digits.empty() || digits.size() > 9) return std::nullopt;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    column = column * 10 + static_cast<std::size_t>(c - '0');
  }
  return std::pair{std::string(message.substr(prefix.size(), at - prefix.size())), column};
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; });
}

}  // namespace

// ---------------------------------------------------------------------------

std::vector<Rate> parse_rates(std::string_view text) {
  if (text.find(';') == std::string_view::npos) return {parse_rate(text)};
  std::vector<Rate> out;
  std::size_t start = 0;
  for (std::size_t index = 1;; ++index) {
    const std::size_t end = std::min(text.find(';', start), text.size());
    const std::string_view item = text.substr(start, end - start);
    const auto fail = [&](const std::string& what, std::size_t column) {
      invalid("invalid rate \"" + std::string(text) + "\": item " + std::to_string(index) + ": " +
              what + " at column " + std::to_string(column));
    };
    if (is_blank(item)) {
      fail(end == text.size() ? "the list ends with ';' (remove it)" : "empty rate before ';'",
           start + 1);
    }
    try {
      out.push_back(parse_rate(item));
    } catch (const Error& e) {
      if (const auto parts = split_rate_error(e.what(), item))
        fail(parts->first, start + parts->second);
      invalid("invalid rate \"" + std::string(text) + "\": item " + std::to_string(index) + ": " +
              e.what());
    }
    if (end == text.size()) return out;
    start = end + 1;
  }
}

Nanos parse_duration(std::string_view text) {
  const auto fail = [&](std::size_t pos, const std::string& what) {
    invalid("invalid duration \"" + std::string(text) + "\": " + what + " at column " +
            std::to_string(pos + 1));
  };
  if (text.empty()) fail(0, "the duration is empty (expected e.g. \"500ms\" or \"1m\")");
  std::size_t pos = 0;
  u64 value = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
    const auto digit = static_cast<u64>(text[pos] - '0');
    if (value > (static_cast<u64>(kMaxPeriodNs) - digit) / 10) fail(0, "the number is too large");
    value = value * 10 + digit;
    ++pos;
  }
  if (pos == 0) {
    fail(0, "expected a number, found '" + std::string(1, text[0]) + "'");
  }
  if (value == 0) fail(0, "the duration must be at least 1 (a period of 0 means nothing)");
  const std::string_view unit = text.substr(pos);
  std::int64_t unit_ns = 0;
  if (unit == "ms") {
    unit_ns = kMillisecond;
  } else if (unit == "s") {
    unit_ns = kSecond;
  } else if (unit == "m") {
    unit_ns = 60 * kSecond;
  } else if (unit == "h") {
    unit_ns = 3600 * kSecond;
  } else if (unit == "d") {
    unit_ns = 86400 * kSecond;
  } else if (unit.empty()) {
    fail(pos, "expected a unit (ms, s, m, h or d) after the number, found the end");
  } else {
    fail(pos, "unknown unit '" + std::string(unit) + "' (expected ms, s, m, h or d)");
  }
  if (value > static_cast<u64>(kMaxPeriodNs / unit_ns))
    fail(0, "the duration is longer than 10 years");
  return Nanos(static_cast<std::int64_t>(value) * unit_ns);
}

}  // namespace shmlimit
