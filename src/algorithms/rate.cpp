// Rate strings: Django REST framework's "N/unit" and Python limits' "N per unit".
#include <cctype>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {
namespace {

constexpr std::int64_t kSecond = 1'000'000'000;
// Longest period a rate may name: 10 years. Longer periods cannot be
// represented in a bucket (see doc/segment-format.md, clock horizon).
constexpr std::int64_t kMaxPeriodNs = 10LL * 366 * 86400 * kSecond;
// Largest count: keeps count * cost arithmetic far from overflow.
constexpr std::uint64_t kMaxCount = 1ULL << 40;

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  [[noreturn]] void fail(std::size_t pos, const std::string& what) const {
    throw Error(ErrorCode::kInvalidArgument, "invalid rate \"" + printable(text_) + "\": " + what +
                                                 " at column " + std::to_string(pos + 1));
  }

  // The input as it may be shown in a message: other bytes as \xNN.
  static std::string printable(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (const char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (u >= 0x20 && u < 0x7f && c != '\\') {
        out += c;
      } else {
        out += "\\x";
        out += kHex[u >> 4];
        out += kHex[u & 15];
      }
    }
    return out;
  }

  // Skips white space; tells whether there was any.
  bool skip_space() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    return pos_ != start;
  }
  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  // The next character as a message may show it.
  std::string shown() const { return printable(text_.substr(pos_, 1)); }
  std::size_t pos() const { return pos_; }

  // Reads a decimal integer >= 1 and <= max; `what` names it in errors.
  std::uint64_t number(const char* what, std::uint64_t max) {
    const std::size_t start = pos_;
    if (!std::isdigit(static_cast<unsigned char>(peek()))) {
      fail(pos_, std::string("expected ") + what +
                     (at_end() ? ", found the end" : ", found '" + shown() + "'"));
    }
    std::uint64_t value = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
      const auto digit = static_cast<std::uint64_t>(text_[pos_] - '0');
      if (value > (max - digit) / 10)
        fail(start, std::string(what) + " is too large (at most " + std::to_string(max) + ")");
      value = value * 10 + digit;
      ++pos_;
    }
    if (value == 0) fail(start, std::string(what) + " must be at least 1");
    return value;
  }

  std::string_view word() {
    const std::size_t start = pos_;
    while (std::isalpha(static_cast<unsigned char>(peek()))) ++pos_;
    return text_.substr(start, pos_ - start);
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// DRF reads only the first letter of the unit: s, m, h, d.
std::int64_t drf_unit_ns(Parser& p, std::size_t at, std::string_view unit) {
  if (unit.empty()) p.fail(at, "expected a unit (s, m, h or d)");
  switch (std::tolower(static_cast<unsigned char>(unit[0]))) {
    case 's':
      return kSecond;
    case 'm': {
      // DRF would read these as minutes too, which is surely not what was
      // meant: a limit 60,000 times too loose ("ms") or 43,200 times too
      // tight ("month"). Refuse rather than guess.
      const std::string u = lower(unit);
      if (u.rfind("ms", 0) == 0 || u.rfind("mil", 0) == 0) {
        p.fail(at, "unit '" + std::string(unit) +
                       "' would be read as minutes (DRF reads only the first letter); sub-second "
                       "periods are not "
                       "rate strings: use s, m, h or d");
      }
      if (u.rfind("mo", 0) == 0) {
        p.fail(at, "unit '" + std::string(unit) +
                       "' would be read as minutes (DRF reads only the first letter); write \"N "
                       "per month\" for 30 days");
      }
      return 60 * kSecond;
    }
    case 'h':
      return 3600 * kSecond;
    case 'd':
      return 86400 * kSecond;
    default:
      p.fail(at, "unknown unit '" + std::string(unit) + "' (expected s, m, h or d)");
  }
}

// The `limits` package spells units out: second(s) ... year(s).
std::int64_t word_unit_ns(Parser& p, std::size_t at, std::string_view unit) {
  const std::string u = lower(unit);
  struct Unit {
    const char* singular;
    std::int64_t ns;
  };
  static constexpr Unit kUnits[] = {
      {"second", kSecond},
      {"minute", 60 * kSecond},
      {"hour", 3600 * kSecond},
      {"day", 86400 * kSecond},
      {"month", 30 * 86400 * kSecond},
      {"year", 12 * 30 * 86400 * kSecond},
  };
  for (const Unit& candidate : kUnits) {
    const std::string s = candidate.singular;
    if (u == s || u == s + "s") return candidate.ns;
  }
  p.fail(at, "unknown unit '" + std::string(unit) +
                 "' (expected second, minute, hour, day, month or year)");
}

}  // namespace

Rate parse_rate(std::string_view text) {
  Parser p(text);
  p.skip_space();
  if (p.at_end()) p.fail(0, "the rate is empty (expected e.g. \"100/m\")");
  const std::uint64_t count = p.number("a request count", kMaxCount);
  p.skip_space();

  const std::size_t sep_at = p.pos();
  const bool drf_form = p.consume('/');
  if (!drf_form) {
    const std::string_view w = p.word();
    if (lower(w) != "per") {
      if (!w.empty())
        p.fail(sep_at, "expected '/' or \"per\" after the count, found \"" + std::string(w) + "\"");
      if (p.at_end()) p.fail(sep_at, "expected '/' or \"per\" after the count, found the end");
      p.fail(sep_at, "expected '/' or \"per\" after the count, found '" + p.shown() + "'");
    }
    if (!p.skip_space()) p.fail(p.pos(), "expected a space after \"per\"");
  } else {
    p.skip_space();
  }

  // An optional multiple of the unit: "10/5m", "10 per 2 minutes".
  std::uint64_t multiple = 1;
  if (std::isdigit(static_cast<unsigned char>(p.peek()))) {
    multiple = p.number("a period multiple", static_cast<std::uint64_t>(kMaxPeriodNs / kSecond));
    p.skip_space();
  }
  const std::size_t unit_at = p.pos();
  const std::string_view unit = p.word();
  if (unit.empty()) {
    p.fail(unit_at, p.at_end() ? std::string("expected a unit, found the end")
                               : "expected a unit, found '" + p.shown() + "'");
  }
  const std::int64_t unit_ns =
      drf_form ? drf_unit_ns(p, unit_at, unit) : word_unit_ns(p, unit_at, unit);
  p.skip_space();
  if (!p.at_end()) p.fail(p.pos(), "unexpected '" + p.shown() + "' after the unit");
  if (multiple > static_cast<std::uint64_t>(kMaxPeriodNs / unit_ns)) {
    p.fail(unit_at, "the period is longer than 10 years");
  }
  return Rate{count, Nanos(static_cast<std::int64_t>(multiple) * unit_ns)};
}

std::string format_rate(const Rate& rate) {
  struct Unit {
    char letter;
    std::int64_t ns;
  };
  static constexpr Unit kUnits[] = {
      {'d', 86400 * kSecond}, {'h', 3600 * kSecond}, {'m', 60 * kSecond}, {'s', kSecond}};
  const std::int64_t ns = rate.period.count();
  // A concurrency limit (Rate{limit, 0}): how many at once, no period.
  if (ns == 0) return std::to_string(rate.count);
  std::string out = std::to_string(rate.count) + "/";
  for (const Unit& u : kUnits) {
    if (ns > 0 && ns % u.ns == 0) {
      const std::int64_t n = ns / u.ns;
      if (n != 1) out += std::to_string(n);
      out += u.letter;
      return out;
    }
  }
  return out + std::to_string(ns) + "ns";
}

}  // namespace shmlimit
