// parse_rate / format_rate: the DRF and `limits` syntaxes documented in
// include/shmlimit/shmlimit.hpp, their errors (kInvalidArgument, with the
// column of the offending character), and the canonical short form.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
constexpr auto kDay = hours(24);

// ---------------------------------------------------------------------------
// Accepted forms.
struct ParseCase {
  const char* text;
  std::uint64_t count;
  Nanos period;
  friend void PrintTo(const ParseCase& c, std::ostream* os) { *os << '"' << c.text << '"'; }
};

class ParseRateAccepts : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseRateAccepts, YieldsCountAndPeriod) {
  const ParseCase& c = GetParam();
  Rate r;
  ASSERT_NO_THROW(r = parse_rate(c.text)) << '"' << c.text << '"';
  EXPECT_EQ(r.count, c.count) << '"' << c.text << '"';
  EXPECT_EQ(r.period, c.period) << '"' << c.text << '"';
}

INSTANTIATE_TEST_SUITE_P(
    DrfUnits, ParseRateAccepts,
    ::testing::Values(ParseCase{"3/s", 3, seconds(1)}, ParseCase{"100/m", 100, minutes(1)},
                      ParseCase{"1000/h", 1000, hours(1)}, ParseCase{"1000/hour", 1000, hours(1)},
                      ParseCase{"5/d", 5, kDay}, ParseCase{"5/day", 5, kDay},
                      // DRF reads only the first letter of the unit.
                      ParseCase{"5/minute", 5, minutes(1)}, ParseCase{"5/min", 5, minutes(1)},
                      ParseCase{"5/sec", 5, seconds(1)}, ParseCase{"5/second", 5, seconds(1)},
                      ParseCase{"5/hxyz", 5, hours(1)}, ParseCase{"5/dogs", 5, kDay}));

INSTANTIATE_TEST_SUITE_P(
    DrfMultiples, ParseRateAccepts,
    ::testing::Values(ParseCase{"10/5m", 10, minutes(5)}, ParseCase{"50/30s", 50, seconds(30)},
                      ParseCase{"1/2h", 1, hours(2)}, ParseCase{"7/3d", 7, 3 * kDay},
                      ParseCase{"10/5minutes", 10, minutes(5)}, ParseCase{"1/1s", 1, seconds(1)},
                      // 10 years of 366 days is the longest period accepted.
                      ParseCase{"1/3660d", 1, 3660 * kDay}));

INSTANTIATE_TEST_SUITE_P(
    LimitsWords, ParseRateAccepts,
    ::testing::Values(
        ParseCase{"10 per minute", 10, minutes(1)}, ParseCase{"10 per 2 minutes", 10, minutes(2)},
        ParseCase{"1 per second", 1, seconds(1)}, ParseCase{"5 per seconds", 5, seconds(1)},
        ParseCase{"3 per hour", 3, hours(1)}, ParseCase{"2 per 3 hours", 2, hours(3)},
        ParseCase{"4 per day", 4, kDay}, ParseCase{"4 per 7 days", 4, 7 * kDay},
        // `limits` counts a month as 30 days and a year as 12 of them.
        ParseCase{"1 per month", 1, 30 * kDay}, ParseCase{"1 per year", 1, 360 * kDay},
        ParseCase{"1 per 10 years", 1, 3600 * kDay}));

INSTANTIATE_TEST_SUITE_P(Whitespace, ParseRateAccepts,
                         ::testing::Values(ParseCase{"  3/s", 3, seconds(1)},
                                           ParseCase{"3/s  ", 3, seconds(1)},
                                           ParseCase{" 3 / s ", 3, seconds(1)},
                                           ParseCase{"10 / 5 m", 10, minutes(5)},
                                           ParseCase{"\t10/5m\n", 10, minutes(5)},
                                           ParseCase{"10  per   minute", 10, minutes(1)},
                                           ParseCase{"\t10 per\t2 minutes\n", 10, minutes(2)},
                                           ParseCase{" 1 per second ", 1, seconds(1)}));

// ---------------------------------------------------------------------------
// Rejected forms: Error(kInvalidArgument) whose message ends with the
// 1-based column of the offending character.
struct RejectCase {
  const char* name;  // test name suffix
  std::string text;
  int column;  // 0: any column (only "column" is required)
  friend void PrintTo(const RejectCase& c, std::ostream* os) { *os << c.name; }
};

class ParseRateRejects : public ::testing::TestWithParam<RejectCase> {};

TEST_P(ParseRateRejects, ThrowsInvalidArgumentNamingTheColumn) {
  const RejectCase& c = GetParam();
  const auto err = unit::catch_error([&] { parse_rate(c.text); });
  ASSERT_TRUE(err.has_value()) << '"' << c.text << '"';
  EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument) << err->what();
  const std::string what = err->what();
  EXPECT_NE(what.find("column"), std::string::npos) << what;
  if (c.column > 0) {
    const std::string suffix = "column " + std::to_string(c.column);
    EXPECT_TRUE(what.size() >= suffix.size() &&
                what.compare(what.size() - suffix.size(), suffix.size(), suffix) == 0)
        << "expected the message to end with \"" << suffix << "\": " << what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ParseRateRejects,
    ::testing::Values(
        RejectCase{"Empty", "", 1}, RejectCase{"OnlySpaces", "   ", 0},
        RejectCase{"NotANumber", "abc", 1}, RejectCase{"ZeroCount", "0/s", 1},
        RejectCase{"MissingUnit", "5/", 3}, RejectCase{"UnknownDrfUnit", "5/x", 3},
        RejectCase{"FortnightFirstLetterUnknown", "5/fortnight", 3},
        RejectCase{"FortnightWord", "5 per fortnight", 7}, RejectCase{"NegativeCount", "-1/s", 1},
        RejectCase{"TrailingGarbage", "5/s extra", 5}, RejectCase{"TrailingSlash", "5/s/s", 4},
        RejectCase{"CountOverflowsU64", "99999999999999999999/s", 1},
        RejectCase{"ZeroMultiple", "5/0m", 3},
        RejectCase{"ZeroMultipleWords", "5 per 0 minutes", 7}, RejectCase{"NoSeparator", "5 s", 3},
        RejectCase{"CountOnly", "5", 0}, RejectCase{"PerWithoutUnit", "5 per", 0},
        RejectCase{"PerAbbreviatedUnit", "5 per s", 7},
        RejectCase{"PeriodOverTenYears", "1/3661d", 0},
        RejectCase{"PeriodOverTenYearsWords", "1 per 11 years", 0},
        RejectCase{"MultipleOverflowsU64", "1/99999999999999999999s", 0},
        RejectCase{"DecimalCount", "1.5/s", 2}, RejectCase{"TrailingControlByte", "5/s\x01", 4},
        // Units DRF's first-letter rule would silently read as minutes.
        RejectCase{"MillisecondsAreNotMinutes", "10/ms", 4},
        RejectCase{"MillisecondMultipleIsNotMinutes", "10/200ms", 7},
        RejectCase{"MillisecondWordIsNotMinutes", "5/milliseconds", 3},
        RejectCase{"MonthIsNotAMinute", "5/month", 3}, RejectCase{"MoIsNotAMinute", "5/2mo", 4}),
    [](const ::testing::TestParamInfo<RejectCase>& info) { return std::string(info.param.name); });

// Rate strings come from configuration files and users: a NUL byte in one
// must still produce a message that names the column (what() is a C string,
// so a raw NUL copied into the message cuts it short).
TEST(ParseRate, ErrorMessageForEmbeddedNulStillNamesTheColumn) {
  const std::string text("5/s\0", 4);
  const auto err = unit::catch_error([&] { parse_rate(text); });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument);
  const std::string what = err->what();
  EXPECT_NE(what.find("column 4"), std::string::npos) << "what() = \"" << what << '"';
}

// Hostile input: seeded random strings over an alphabet biased towards the
// grammar's tokens either parse to a usable rate that formats back to
// itself, or throw Error(kInvalidArgument) naming a column; nothing else.
TEST(ParseRate, RandomStringsParseToAUsableRateOrThrowInvalidArgument) {
  std::mt19937_64 rng(42);
  static const std::string kTokens[] = {
      "0", "1",      "5",       "9",    "99999999999", "/",     " ", "\t", "per", "s",    "m", "h",
      "d", "second", "minutes", "hour", "day",         "years", "x", "-",  ".",   "\xff", "\n"};
  int accepted = 0;
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    if (rng() % 2 == 0) {
      // Grammar-shaped: count, separator, optional multiple, unit.
      static const char* const kSeps[] = {"/", " / ", " per ", "per", " "};
      static const char* const kUnits[] = {"s",       "m",     "hour",      "d", "second",
                                           "minutes", "years", "fortnight", ""};
      text = std::to_string(rng() % 1000) + kSeps[rng() % std::size(kSeps)] +
             (rng() % 2 == 0 ? std::to_string(rng() % 5000) : "") +
             kUnits[rng() % std::size(kUnits)];
      if (rng() % 3 == 0)
        text.insert(rng() % (text.size() + 1), kTokens[rng() % std::size(kTokens)]);
    } else {
      const int n = static_cast<int>(rng() % 8);
      for (int k = 0; k < n; ++k) text += kTokens[rng() % std::size(kTokens)];
    }
    try {
      const Rate r = parse_rate(text);
      ++accepted;
      ASSERT_GE(r.count, 1u) << '"' << text << '"';
      ASSERT_GT(r.period, Nanos(0)) << '"' << text << '"';
      ASSERT_LE(r.period, 3660 * kDay) << '"' << text << '"';
      ASSERT_EQ(parse_rate(format_rate(r)), r) << '"' << text << '"';
    } catch (const Error& e) {
      ++rejected;
      ASSERT_EQ(e.code(), ErrorCode::kInvalidArgument) << '"' << text << '"';
      ASSERT_NE(std::string(e.what()).find("column"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(accepted, 100);
  EXPECT_GT(rejected, 100);
}

// ---------------------------------------------------------------------------
// format_rate: the canonical short form, and parse(format(r)) == r.
struct FormatCase {
  Rate rate;
  const char* text;
  friend void PrintTo(const FormatCase& c, std::ostream* os) { *os << '"' << c.text << '"'; }
};

class FormatRate : public ::testing::TestWithParam<FormatCase> {};

TEST_P(FormatRate, IsCanonicalShortForm) {
  EXPECT_EQ(format_rate(GetParam().rate), GetParam().text);
}

TEST_P(FormatRate, RoundTripsThroughParse) {
  const Rate& r = GetParam().rate;
  EXPECT_EQ(parse_rate(format_rate(r)), r) << format_rate(r);
}

INSTANTIATE_TEST_SUITE_P(
    Table, FormatRate,
    ::testing::Values(FormatCase{{3, seconds(1)}, "3/s"}, FormatCase{{100, minutes(1)}, "100/m"},
                      FormatCase{{1000, hours(1)}, "1000/h"}, FormatCase{{5, kDay}, "5/d"},
                      FormatCase{{10, minutes(5)}, "10/5m"},
                      FormatCase{{50, seconds(30)}, "50/30s"},
                      FormatCase{{60, seconds(60)}, "60/m"}, FormatCase{{1, seconds(90)}, "1/90s"},
                      FormatCase{{1, hours(48)}, "1/2d"}, FormatCase{{7, minutes(120)}, "7/2h"},
                      FormatCase{{1, 3660 * kDay}, "1/3660d"},
                      FormatCase{{1000000, seconds(1)}, "1000000/s"}));

// Every rate the parser can produce formats back to itself.
TEST(FormatRate, RoundTripsForSeededRandomParsedRates) {
  std::mt19937_64 rng(20240611);
  const char* const units[] = {"s", "m", "h", "d"};
  for (int i = 0; i < 2000; ++i) {
    const std::uint64_t count = 1 + rng() % 1000000;
    const std::uint64_t multiple = 1 + rng() % 300;
    const std::string text =
        std::to_string(count) + "/" + std::to_string(multiple) + units[rng() % 4];
    const Rate r = parse_rate(text);
    ASSERT_EQ(parse_rate(format_rate(r)), r) << text << " -> " << format_rate(r);
  }
}

// Every spelling of one rate names the same Rate, and formats the same.
TEST(FormatRate, SpellingsOfOneRateFormatAlike) {
  const std::vector<std::string> spellings = {"10/2m", "10/120s", "10 per 2 minutes", "10/2min",
                                              " 10 / 2 m "};
  for (const std::string& s : spellings) {
    EXPECT_EQ(parse_rate(s), (Rate{10, minutes(2)})) << s;
    EXPECT_EQ(format_rate(parse_rate(s)), "10/2m") << s;
  }
}

}  // namespace
}  // namespace shmlimit
