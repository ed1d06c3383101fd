// Configuration (include/shmlimit/config.hpp): parse_rates and
// parse_duration; parse_config over a table of valid files (list
// expansion, defaults, aliases, token-bucket fields, durations, file order)
// and a table of invalid ones, each naming "file:line:column" and what is
// wrong; load_config's file errors; open_config's all-or-nothing checks
// against a real segment; policy_group.
#include "shmlimit/config.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {

inline void PrintTo(const PolicySpec& s, std::ostream* os) {
  *os << "{" << s.name << " " << to_string(s.algorithm) << " " << s.rate.count << "/"
      << s.rate.period.count() << "ns burst " << s.burst << " on_full "
      << (s.on_full == OnFull::kDeny ? "deny" : "allow") << "}";
}

namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using unit::catch_error;
using unit::ScopedSegmentName;
constexpr auto kDay = hours(24);

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

PolicySpec P(const std::string& name, Algorithm algorithm, std::uint64_t count, Nanos period,
             std::uint64_t burst = 0, OnFull on_full = OnFull::kAllow) {
  PolicySpec s;
  s.name = name;
  s.algorithm = algorithm;
  s.rate = Rate{count, period};
  s.burst = burst;
  s.on_full = on_full;
  return s;
}

constexpr Algorithm kGcra = Algorithm::kGcra;
constexpr Algorithm kTokenBucket = Algorithm::kTokenBucket;

// ---------------------------------------------------------------------------
// parse_rates

struct RatesCase {
  const char* text;
  std::vector<Rate> rates;
  friend void PrintTo(const RatesCase& c, std::ostream* os) { *os << '"' << c.text << '"'; }
};

class ParseRatesAccepts : public ::testing::TestWithParam<RatesCase> {};

TEST_P(ParseRatesAccepts, YieldsEveryItemInOrder) {
  std::vector<Rate> got;
  ASSERT_NO_THROW(got = parse_rates(GetParam().text));
  EXPECT_EQ(got, GetParam().rates);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRatesAccepts,
    ::testing::Values(RatesCase{"5/m", {Rate{5, minutes(1)}}},
                      RatesCase{"10 per 2 minutes", {Rate{10, minutes(2)}}},
                      RatesCase{"10/hour;100/day", {Rate{10, hours(1)}, Rate{100, kDay}}},
                      RatesCase{" 10/h ; 100 per day ", {Rate{10, hours(1)}, Rate{100, kDay}}},
                      RatesCase{"1/s;10/m;100/h",
                                {Rate{1, seconds(1)}, Rate{10, minutes(1)}, Rate{100, hours(1)}}},
                      // The same rate twice is two limits; nothing is merged.
                      RatesCase{"1/s;1/s", {Rate{1, seconds(1)}, Rate{1, seconds(1)}}}));

struct RatesError {
  const char* text;
  const char* what;    // substring of the message
  const char* column;  // "at column N" in the whole text
  friend void PrintTo(const RatesError& c, std::ostream* os) { *os << '"' << c.text << '"'; }
};

class ParseRatesRejects : public ::testing::TestWithParam<RatesError> {};

TEST_P(ParseRatesRejects, NamesWhatAndColumnInTheWholeText) {
  const RatesError& c = GetParam();
  const auto e = catch_error([&] { parse_rates(c.text); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
  const std::string m = e->what();
  EXPECT_TRUE(m.starts_with("invalid rate \"" + std::string(c.text) + "\": ")) << m;
  EXPECT_TRUE(contains(m, c.what)) << m;
  EXPECT_TRUE(m.ends_with(std::string("at column ") + c.column)) << m;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRatesRejects,
    ::testing::Values(
        // Without ';' the message is parse_rate's own.
        RatesError{"", "the rate is empty", "1"},
        RatesError{"5/fortnight", "unknown unit 'fortnight'", "3"},
        // ',' is not a separator: the first item does not end at the unit.
        RatesError{"10/h,5/d", "unexpected ','", "5"},
        RatesError{"10/h;5/fortnight", "item 2: unknown unit 'fortnight'", "8"},
        RatesError{"10/h; x", "item 2: expected a request count", "7"},
        RatesError{"x;10/h", "item 1: expected a request count", "1"},
        RatesError{"1/s;2/s;0/s", "item 3: a request count must be at least 1", "9"},
        RatesError{"10/h;;5/d", "item 2: empty rate before ';'", "6"},
        RatesError{"10/h; ;5/d", "item 2: empty rate before ';'", "6"},
        RatesError{";10/h", "item 1: empty rate before ';'", "1"},
        RatesError{"10/h;", "item 2: the list ends with ';'", "6"},
        RatesError{"10/h;5 per fortnight", "item 2: unknown unit 'fortnight'", "12"}));

// ---------------------------------------------------------------------------
// parse_duration

struct DurationCase {
  const char* text;
  Nanos value;
};

TEST(ParseDuration, AcceptsEveryUnit) {
  const DurationCase cases[] = {
      {"1ms", milliseconds(1)}, {"500ms", milliseconds(500)},
      {"1s", seconds(1)},       {"30s", seconds(30)},
      {"1m", minutes(1)},       {"90m", minutes(90)},
      {"2h", hours(2)},         {"1d", kDay},
      {"3660d", 3660 * kDay},
  };
  for (const DurationCase& c : cases) {
    Nanos got{0};
    ASSERT_NO_THROW(got = parse_duration(c.text)) << c.text;
    EXPECT_EQ(got, c.value) << c.text;
  }
}

TEST(ParseDuration, RejectsWithColumn) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "the duration is empty (expected e.g. \"500ms\" or \"1m\") at column 1"},
      {"m", "expected a number, found 'm' at column 1"},
      {"0s", "must be at least 1 (a period of 0 means nothing) at column 1"},
      {"5", "expected a unit (ms, s, m, h or d) after the number, found the end at column 2"},
      {"5x", "unknown unit 'x' (expected ms, s, m, h or d) at column 2"},
      {"5 s", "unknown unit ' s'"},
      {"5sec", "unknown unit 'sec'"},
      {"1h30m", "unknown unit 'h30m'"},
      {"-1s", "expected a number, found '-'"},
      {"3661d", "longer than 10 years"},
      {"99999999999999999999999s", "too large"},
  };
  for (const auto& [text, what] : cases) {
    const auto e = catch_error([&] { parse_duration(text); });
    ASSERT_TRUE(e) << text;
    EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(
        std::string(e->what()).starts_with("invalid duration \"" + std::string(text) + "\": "))
        << e->what();
    EXPECT_TRUE(contains(e->what(), what)) << text << ": " << e->what();
  }
}

// ---------------------------------------------------------------------------
// parse_config: valid files

const char* const kSegment = "[segment]\nname = \"/cfg\"\n";

struct ValidCase {
  const char* label;
  const char* policies;  // appended to kSegment (or the whole file if it has [segment])
  std::vector<PolicySpec> expected;
  friend void PrintTo(const ValidCase& c, std::ostream* os) { *os << c.label; }
};

class ParseConfigAccepts : public ::testing::TestWithParam<ValidCase> {};

TEST_P(ParseConfigAccepts, YieldsTheExpandedSpecs) {
  const ValidCase& c = GetParam();
  const std::string text =
      contains(c.policies, "[segment]") ? c.policies : kSegment + std::string(c.policies);
  Config config;
  try {
    config = parse_config(text, "t.toml");
  } catch (const Error& e) {
    FAIL() << e.what() << "\n" << text;
  }
  EXPECT_EQ(config.segment.name, "/cfg");
  EXPECT_EQ(config.source, "t.toml");
  EXPECT_EQ(config.policies, c.expected) << text;
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseConfigAccepts,
    ::testing::Values(
        ValidCase{"no_policies", "", {}}, ValidCase{"empty_policies_table", "[policies]\n", {}},
        ValidCase{
            "defaults", "[policies.anon]\nrate = \"100/day\"\n", {P("anon", kGcra, 100, kDay)}},
        ValidCase{"list_expands_to_name_dot_k",
                  "[policies.multi]\nrate = \"10/hour;100/day\"\n",
                  {P("multi", kGcra, 10, hours(1)), P("multi.2", kGcra, 100, kDay)}},
        ValidCase{"list_with_spaces_and_three_items",
                  "[policies.x]\nrate = \" 1/s ; 10 per minute;100/d \"\n",
                  {P("x", kGcra, 1, seconds(1)), P("x.2", kGcra, 10, minutes(1)),
                   P("x.3", kGcra, 100, kDay)}},
        ValidCase{"array_of_rates",
                  "[policies.x]\nrate = [\"10/hour\", \"100 per day\"]\n",
                  {P("x", kGcra, 10, hours(1)), P("x.2", kGcra, 100, kDay)}},
        ValidCase{"burst_and_on_full_apply_to_every_member",
                  "[policies.x]\nrate = \"60/min;1000/day\"\nburst = 10\non_full = \"deny\"\n",
                  {P("x", kGcra, 60, minutes(1), 10, OnFull::kDeny),
                   P("x.2", kGcra, 1000, kDay, 10, OnFull::kDeny)}},
        ValidCase{"on_full_spellings",
                  "[policies.a]\nrate = \"1/s\"\non_full = \"allow\"\n"
                  "[policies.b]\nrate = \"1/s\"\non_full = \"open\"\n"
                  "[policies.c]\nrate = \"1/s\"\non_full = \"closed\"\n",
                  {P("a", kGcra, 1, seconds(1)), P("b", kGcra, 1, seconds(1)),
                   P("c", kGcra, 1, seconds(1), 0, OnFull::kDeny)}},
        ValidCase{"every_algorithm",
                  "[policies.g]\nalgorithm = \"gcra\"\nrate = \"1/s\"\n"
                  "[policies.t]\nalgorithm = \"token_bucket\"\nrate = \"2/s\"\n"
                  "[policies.f]\nalgorithm = \"fixed_window\"\nrate = \"3/s\"\n"
                  "[policies.s]\nalgorithm = \"sliding_window\"\nrate = \"4/s\"\n"
                  "[policies.q]\nalgorithm = \"quiet_period\"\nrate = \"5/s\"\n"
                  "[policies.l]\nalgorithm = \"leaky-bucket\"\nrate = \"6/s\"\nburst = 2\n",
                  {P("g", kGcra, 1, seconds(1)), P("t", kTokenBucket, 2, seconds(1)),
                   P("f", Algorithm::kFixedWindow, 3, seconds(1)),
                   P("s", Algorithm::kSlidingWindow, 4, seconds(1)),
                   P("q", Algorithm::kQuietPeriod, 5, seconds(1)),
                   P("l", Algorithm::kLeakyBucket, 6, seconds(1), 2)}},
        ValidCase{"token_bucket_max_tokens_and_refill",
                  "[policies.refill]\nalgorithm = \"token_bucket\"\nmax_tokens = 100\n"
                  "refill_period = \"1m\"\nrefill_amount = 10\n",
                  {P("refill", kTokenBucket, 10, minutes(1), 100)}},
        ValidCase{"token_bucket_burst_and_rate",
                  "[policies.tb]\nalgorithm = \"token_bucket\"\nrate = \"10/m\"\nburst = 100\n",
                  {P("tb", kTokenBucket, 10, minutes(1), 100)}},
        ValidCase{"refill_durations",
                  "[policies.a]\nalgorithm = \"token_bucket\"\nrefill_period = "
                  "\"500ms\"\nrefill_amount = 1\n"
                  "[policies.b]\nalgorithm = \"token_bucket\"\nrefill_period = "
                  "\"30s\"\nrefill_amount = 2\n"
                  "[policies.c]\nalgorithm = \"token_bucket\"\nrefill_period = "
                  "\"2h\"\nrefill_amount = 3\n"
                  "[policies.d]\nalgorithm = \"token_bucket\"\nrefill_period = "
                  "\"1d\"\nrefill_amount = 4\n",
                  {P("a", kTokenBucket, 1, milliseconds(500)), P("b", kTokenBucket, 2, seconds(30)),
                   P("c", kTokenBucket, 3, hours(2)), P("d", kTokenBucket, 4, kDay)}},
        ValidCase{"file_order_not_key_order",
                  "[policies.zeta]\nrate = \"1/s\"\n[policies.alpha]\nrate = \"2/s;3/m\"\n"
                  "[policies.mu]\nrate = \"4/s\"\n",
                  {P("zeta", kGcra, 1, seconds(1)), P("alpha", kGcra, 2, seconds(1)),
                   P("alpha.2", kGcra, 3, minutes(1)), P("mu", kGcra, 4, seconds(1))}},
        ValidCase{"inline_tables",
                  "[policies]\nb = { rate = \"1/s\", burst = 3 }\na = { rate = \"2/s\" }\n",
                  {P("b", kGcra, 1, seconds(1), 3), P("a", kGcra, 2, seconds(1))}},
        ValidCase{"dotted_keys_before_segment",
                  "policies.x.rate = \"7/h\"\npolicies.x.burst = 2\n[segment]\nname = \"/cfg\"\n",
                  {P("x", kGcra, 7, hours(1), 2)}},
        ValidCase{"quoted_names_with_colon_and_dot",
                  "[policies.\"api:login\"]\nrate = \"5/m\"\n[policies.\"v1.2\"]\nrate = \"6/m\"\n",
                  {P("api:login", kGcra, 5, minutes(1)), P("v1.2", kGcra, 6, minutes(1))}},
        ValidCase{"name_of_31_characters",
                  "[policies.abcdefghijklmnopqrstuvwxyz01234]\nrate = \"1/s\"\n",
                  {P("abcdefghijklmnopqrstuvwxyz01234", kGcra, 1, seconds(1))}}));

TEST(ParseConfig, SegmentFieldsAndDefaults) {
  const Config defaults = parse_config("[segment]\nname = \"/d\"\n");
  const Options o;
  EXPECT_EQ(defaults.source, "<config>");
  EXPECT_EQ(defaults.segment.name, "/d");
  EXPECT_EQ(defaults.segment.capacity, o.capacity);
  EXPECT_EQ(defaults.segment.mode, o.mode);
  EXPECT_EQ(defaults.segment.slot_bytes, o.slot_bytes);
  EXPECT_EQ(defaults.segment.max_probe, o.max_probe);
  EXPECT_EQ(defaults.segment.open_timeout, o.open_timeout);
  EXPECT_EQ(defaults.segment.claim_timeout, o.claim_timeout);
  EXPECT_FALSE(defaults.segment.read_only);
  EXPECT_FALSE(defaults.segment.allow_other_users);

  const Config all = parse_config(
      "[segment]\nname = \"/all\"\ncapacity = 4096\nmode = \"0660\"\nslot_bytes = 64\n"
      "max_probe = 8\nopen_timeout = \"5s\"\nclaim_timeout = \"250ms\"\n");
  EXPECT_EQ(all.segment.name, "/all");
  EXPECT_EQ(all.segment.capacity, 4096u);
  EXPECT_EQ(all.segment.mode, static_cast<mode_t>(0660));
  EXPECT_EQ(all.segment.slot_bytes, 64u);
  EXPECT_EQ(all.segment.max_probe, 8u);
  EXPECT_EQ(all.segment.open_timeout, milliseconds(5000));
  EXPECT_EQ(all.segment.claim_timeout, milliseconds(250));
  EXPECT_TRUE(parse_config("[segment]\nname = \"/s\"\nallow_other_users = true\n")
                  .segment.allow_other_users);

  for (const auto& [text, mode] : {std::pair{"\"644\"", 0644}, std::pair{"\"0\"", 0},
                                   std::pair{"\"07777\"", 07777}, std::pair{"\"0600\"", 0600}}) {
    const Config c = parse_config(std::string("[segment]\nname = \"/m\"\nmode = ") + text + "\n");
    EXPECT_EQ(c.segment.mode, static_cast<mode_t>(mode)) << text;
  }
}

TEST(ParseConfig, ExampleFileParses) {
  // examples/shmlimit.toml, found from this file's path.
  const std::filesystem::path example =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "examples" /
      "shmlimit.toml";
  Config c;
  try {
    c = load_config(example.string());
  } catch (const Error& e) {
    FAIL() << e.what();
  }
  EXPECT_EQ(c.segment.name, "/myapp");
  EXPECT_EQ(c.segment.capacity, 65536u);
  EXPECT_EQ(c.segment.mode, static_cast<mode_t>(0600));
  const std::vector<PolicySpec> expected = {
      P("anon", kGcra, 100, kDay),       P("burst", kGcra, 60, minutes(1), 10, OnFull::kDeny),
      P("sustained", kGcra, 1000, kDay), P("multi", kGcra, 10, hours(1)),
      P("multi.2", kGcra, 100, kDay),    P("refill", kTokenBucket, 10, minutes(1), 100),
  };
  EXPECT_EQ(c.policies, expected);
}

// ---------------------------------------------------------------------------
// parse_config: invalid files. Each message starts with "t.toml:LINE:COL: "
// (or "t.toml: " when no line applies) and names what is wrong.

struct InvalidCase {
  const char* label;
  const char* text;  // the whole file
  const char* where;
  std::vector<const char*> what;
  friend void PrintTo(const InvalidCase& c, std::ostream* os) { *os << c.label; }
};

class ParseConfigRejects : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(ParseConfigRejects, NamesFileLineAndWhat) {
  const InvalidCase& c = GetParam();
  const auto e = catch_error([&] { parse_config(c.text, "t.toml"); });
  ASSERT_TRUE(e) << c.text;
  EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
  const std::string m = e->what();
  EXPECT_TRUE(m.starts_with(std::string(c.where) + ": ")) << "want " << c.where << ", got: " << m;
  for (const char* w : c.what) EXPECT_TRUE(contains(m, w)) << "want \"" << w << "\" in: " << m;
  EXPECT_FALSE(contains(m, "\n")) << "one line: " << m;
}

#define SEG "[segment]\nname = \"/cfg\"\n"  // lines 1-2

INSTANTIATE_TEST_SUITE_P(
    Segment, ParseConfigRejects,
    ::testing::Values(
        InvalidCase{
            "no_segment", "[policies.x]\nrate = \"1/s\"\n", "t.toml", {"no [segment] table"}},
        InvalidCase{"empty_file", "", "t.toml", {"no [segment] table"}},
        InvalidCase{
            "no_name", "[segment]\ncapacity = 16\n", "t.toml:1:1", {"[segment] needs a name"}},
        InvalidCase{"segment_not_a_table",
                    "segment = \"/x\"\n",
                    "t.toml:1:11",
                    {"[segment] must be a table, found a string"}},
        InvalidCase{"bad_name",
                    "[segment]\nname = \"myapp\"\n",
                    "t.toml:2:8",
                    {"[segment] name: invalid segment name \"myapp\""}},
        InvalidCase{"name_not_a_string",
                    "[segment]\nname = 5\n",
                    "t.toml:2:8",
                    {"[segment] name must be a string, found an integer"}},
        InvalidCase{"unknown_segment_key",
                    SEG "capcity = 16\n",
                    "t.toml:3:1",
                    {"unknown key 'capcity' in [segment]", "did you mean 'capacity'?",
                     "(known: name, capacity, mode, slot_bytes, max_probe, log_entries, "
                     "open_timeout, claim_timeout, "
                     "allow_other_users)"}},
        InvalidCase{"allow_other_users_not_boolean",
                    SEG "allow_other_users = \"yes\"\n",
                    "t.toml:3:21",
                    {"[segment] allow_other_users must be true or false, found a string"}},
        InvalidCase{"unknown_top_level_table",
                    SEG "[segmnt]\nname = \"/x\"\n",
                    "t.toml:3:2",
                    {"unknown key 'segmnt' in the top level", "did you mean 'segment'?"}},
        InvalidCase{"capacity_string",
                    SEG "capacity = \"big\"\n",
                    "t.toml:3:12",
                    {"[segment] capacity must be an integer, found a string"}},
        InvalidCase{"capacity_float", SEG "capacity = 1.5\n", "t.toml:3:12", {"found a float"}},
        InvalidCase{"capacity_zero",
                    SEG "capacity = 0\n",
                    "t.toml:3:12",
                    {"[segment] capacity must be between 1 and 268435456, found 0"}},
        InvalidCase{"capacity_negative", SEG "capacity = -5\n", "t.toml:3:12", {"found -5"}},
        InvalidCase{
            "capacity_huge", SEG "capacity = 4294967296\n", "t.toml:3:12", {"found 4294967296"}},
        InvalidCase{"mode_integer",
                    SEG "mode = 600\n",
                    "t.toml:3:8",
                    {"[segment] mode must be a string of octal digits", "decimal"}},
        InvalidCase{"mode_not_octal",
                    SEG "mode = \"0999\"\n",
                    "t.toml:3:8",
                    {"[segment] mode \"0999\" is not octal permission bits"}},
        InvalidCase{"mode_too_long", SEG "mode = \"017777\"\n", "t.toml:3:8", {"not octal"}},
        InvalidCase{"slot_bytes",
                    SEG "slot_bytes = 100\n",
                    "t.toml:3:14",
                    {"[segment] slot_bytes must be 64, 128 or 256, found 100"}},
        InvalidCase{"max_probe_zero",
                    SEG "max_probe = 0\n",
                    "t.toml:3:13",
                    {"[segment] max_probe must be between 1 and 1024"}},
        InvalidCase{"max_probe_big", SEG "max_probe = 2000\n", "t.toml:3:13", {"found 2000"}},
        InvalidCase{"open_timeout_long",
                    SEG "open_timeout = \"2h\"\n",
                    "t.toml:3:16",
                    {"[segment] open_timeout must be between 1ms and 1h"}},
        InvalidCase{"claim_timeout_bad",
                    SEG "claim_timeout = \"5x\"\n",
                    "t.toml:3:17",
                    {"[segment] claim_timeout: invalid duration \"5x\"", "unknown unit 'x'"}},
        InvalidCase{"claim_timeout_integer",
                    SEG "claim_timeout = 100\n",
                    "t.toml:3:17",
                    {"must be a string, found an integer"}},
        InvalidCase{"syntax_error",
                    "[segment]\nname = \"/unterminated\n",
                    "t.toml:2:22",
                    {"invalid TOML: ", "control characters"}},
        InvalidCase{"duplicate_key",
                    SEG "name = \"/again\"\n",
                    "t.toml:3:8",
                    {"invalid TOML: ", "cannot redefine existing string 'name'"}}));

INSTANTIATE_TEST_SUITE_P(
    Policies, ParseConfigRejects,
    ::testing::Values(
        InvalidCase{"unknown_key_typo",
                    SEG "[policies.x]\nrate = \"5/m\"\nburts = 3\n",
                    "t.toml:5:1",
                    {"unknown key 'burts' in [policies.x]", "did you mean 'burst'?",
                     "(known: algorithm, rate, burst, max_tokens, on_full, refill_period, "
                     "refill_amount, limit, wait)"}},
        InvalidCase{"unknown_key_far",
                    SEG "[policies.x]\nrate = \"5/m\"\ncolour = \"red\"\n",
                    "t.toml:5:1",
                    {"unknown key 'colour' in [policies.x] (known:"}},
        InvalidCase{"bad_unit",
                    SEG "[policies.burst]\nrate = \"60/fortnight\"\n",
                    "t.toml:4:8",
                    {"policy \"burst\": invalid rate \"60/fortnight\": unknown unit 'fortnight'",
                     "column 4"}},
        InvalidCase{
            "bad_list_item",
            SEG "[policies.m]\nrate = \"10/h;5/x\"\n",
            "t.toml:4:8",
            {"policy \"m\": invalid rate \"10/h;5/x\": item 2: unknown unit 'x'", "at column 8"}},
        InvalidCase{"trailing_semicolon",
                    SEG "[policies.m]\nrate = \"10/h;\"\n",
                    "t.toml:4:8",
                    {"the list ends with ';'"}},
        InvalidCase{"comma_is_not_a_separator",
                    SEG "[policies.m]\nrate = \"10/h,5/d\"\n",
                    "t.toml:4:8",
                    {"unexpected ','"}},
        InvalidCase{"rate_integer",
                    SEG "[policies.x]\nrate = 5\n",
                    "t.toml:4:8",
                    {"policy \"x\": rate must be a string, found an integer"}},
        InvalidCase{"rate_empty_array",
                    SEG "[policies.x]\nrate = []\n",
                    "t.toml:4:8",
                    {"policy \"x\": rate is an empty array"}},
        InvalidCase{"rate_array_item",
                    SEG "[policies.x]\nrate = [\"1/s\", 2]\n",
                    "t.toml:4:16",
                    {"each rate of the array must be a string, found an integer"}},
        InvalidCase{"rate_array_bad_item",
                    SEG "[policies.x]\nrate = [\"1/s\", \"2/q\"]\n",
                    "t.toml:4:16",
                    {"invalid rate \"2/q\": unknown unit 'q'"}},
        InvalidCase{"no_rate",
                    SEG "[policies.x]\nburst = 3\n",
                    "t.toml:3:1",
                    {"policy \"x\" needs a rate, e.g. rate = \"100/day\""}},
        InvalidCase{"no_rate_token_bucket",
                    SEG "[policies.x]\nalgorithm = \"token_bucket\"\n",
                    "t.toml:3:1",
                    {"needs a rate", "(or refill_period and refill_amount)"}},
        InvalidCase{"unknown_algorithm",
                    SEG "[policies.x]\nalgorithm = \"gcar\"\nrate = \"1/s\"\n",
                    "t.toml:4:13",
                    {"policy \"x\": unknown algorithm \"gcar\"", "gcra"}},
        InvalidCase{"algorithm_integer",
                    SEG "[policies.x]\nalgorithm = 1\nrate = \"1/s\"\n",
                    "t.toml:4:13",
                    {"algorithm must be a string, found an integer"}},
        InvalidCase{"burst_zero",
                    SEG "[policies.x]\nrate = \"1/s\"\nburst = 0\n",
                    "t.toml:5:9",
                    {"policy \"x\": burst must be between 1 and 1099511627776, found 0"}},
        InvalidCase{"burst_string",
                    SEG "[policies.x]\nrate = \"1/s\"\nburst = \"10\"\n",
                    "t.toml:5:9",
                    {"burst must be an integer, found a string"}},
        InvalidCase{"burst_with_window",
                    SEG "[policies.x]\nalgorithm = \"fixed_window\"\nrate = \"1/s\"\nburst = 5\n",
                    "t.toml:6:9",
                    {"burst does not apply to fixed_window (its capacity is the rate's count)"}},
        InvalidCase{"max_tokens_with_gcra",
                    SEG "[policies.x]\nrate = \"1/s\"\nmax_tokens = 5\n",
                    "t.toml:5:14",
                    {"max_tokens applies to algorithm = \"token_bucket\" only (use burst)"}},
        InvalidCase{"max_tokens_and_burst",
                    SEG "[policies.x]\nalgorithm = \"token_bucket\"\nrate = \"1/s\"\nburst = "
                        "5\nmax_tokens = 5\n",
                    "t.toml:7:14",
                    {"max_tokens is another name for burst; give one of them"}},
        InvalidCase{"refill_with_gcra",
                    SEG "[policies.x]\nrefill_period = \"1m\"\nrefill_amount = 1\n",
                    "t.toml:4:17",
                    {"refill_period and refill_amount apply to algorithm = \"token_bucket\" only"}},
        InvalidCase{"refill_period_alone",
                    SEG "[policies.x]\nalgorithm = \"token_bucket\"\nrefill_period = \"1m\"\n",
                    "t.toml:5:17",
                    {"refill_period and refill_amount go together"}},
        InvalidCase{
            "refill_and_rate",
            SEG
            "[policies.x]\nalgorithm = \"token_bucket\"\nrate = \"1/s\"\nrefill_period = \"1m\"\n"
            "refill_amount = 1\n",
            "t.toml:5:8",
            {"give either rate or refill_period + refill_amount, not both"}},
        InvalidCase{"refill_bad_duration",
                    SEG "[policies.x]\nalgorithm = \"token_bucket\"\nrefill_period = "
                        "\"1x\"\nrefill_amount = 1\n",
                    "t.toml:5:17",
                    {"policy \"x\": refill_period: invalid duration \"1x\": unknown unit 'x'"}},
        InvalidCase{
            "refill_period_integer",
            SEG
            "[policies.x]\nalgorithm = \"token_bucket\"\nrefill_period = 60\nrefill_amount = 1\n",
            "t.toml:5:17",
            {"refill_period (a duration such as \"500ms\" or \"1m\") must be a string"}},
        InvalidCase{"refill_amount_zero",
                    SEG "[policies.x]\nalgorithm = \"token_bucket\"\nrefill_period = "
                        "\"1m\"\nrefill_amount = 0\n",
                    "t.toml:6:17",
                    {"refill_amount must be between 1 and"}},
        InvalidCase{"on_full_unknown",
                    SEG "[policies.x]\nrate = \"1/s\"\non_full = \"maybe\"\n",
                    "t.toml:5:11",
                    {"on_full must be \"allow\" (or \"open\") or \"deny\" (or \"closed\"), found "
                     "\"maybe\""}},
        InvalidCase{"on_full_bool",
                    SEG "[policies.x]\nrate = \"1/s\"\non_full = true\n",
                    "t.toml:5:11",
                    {"on_full must be a string, found a boolean"}},
        InvalidCase{"policy_not_a_table",
                    SEG "[policies]\nx = \"5/m\"\n",
                    "t.toml:4:1",
                    {"policy \"x\" must be a table such as [policies.x], found a string"}},
        InvalidCase{"policies_not_a_table",
                    "policies = 5\n" SEG,
                    "t.toml:1:12",
                    {"[policies] must be a table, found an integer"}},
        InvalidCase{"bad_policy_name",
                    SEG "[policies.\"a b\"]\nrate = \"1/s\"\n",
                    "t.toml:3:11",
                    {"invalid policy name \"a b\" in [policies.\"a b\"]", "character ' '"}},
        InvalidCase{"long_policy_name",
                    SEG "[policies.abcdefghijklmnopqrstuvwxyz012345]\nrate = \"1/s\"\n",
                    "t.toml:3:11",
                    {"longer than 31 characters"}},
        InvalidCase{"expanded_name_too_long",
                    SEG "[policies.abcdefghijklmnopqrstuvwxyz0123]\nrate = \"1/s;2/s\"\n",
                    "t.toml:3:11",
                    {"has 2 rates, so its 2nd is named \"abcdefghijklmnopqrstuvwxyz0123.2\"",
                     "longer than 31 characters"}},
        InvalidCase{"member_name_clash",
                    SEG
                    "[policies.api]\nrate = \"1/s;2/m\"\n[policies.\"api.2\"]\nrate = \"3/h\"\n",
                    "t.toml:5:11",
                    {"policy name \"api.2\" is also the name of the 2nd rate of policy \"api\""}},
        InvalidCase{"member_name_reserved",
                    SEG "[policies.\"api.3\"]\nrate = \"3/h\"\n[policies.api]\nrate = \"1/s\"\n",
                    "t.toml:3:11",
                    {"policy name \"api.3\" is reserved for the list members of policy \"api\""}},
        InvalidCase{"unrepresentable_params",
                    SEG "[policies.x]\nrate = \"1/3660d\"\nburst = 1000000\n",
                    "t.toml:4:8",
                    {"policy \"x\" (gcra, 1/3660d, burst 1000000): "}}));

#undef SEG

TEST(ParseConfig, DefaultSourceNamesTheConfig) {
  const auto e = catch_error([] { parse_config("[segment]\nname = 5\n"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(std::string(e->what()).starts_with("<config>:2:8: ")) << e->what();
}

TEST(ParseConfig, HostileBytesGiveAnError) {
  // Not UTF-8, a NUL, deep nesting, a huge integer: an Error, never a crash.
  const std::string cases[] = {
      std::string("[segment]\nname = \"/\xff\xfe\"\n"),
      std::string("[segment]\nname = \"/a\0b\"\n", 22),
      "[segment]\nname = \"/a\"\n[policies.x]\nrate = " + std::string(2000, '[') + "\n",
      "[segment]\nname = \"/a\"\ncapacity = 99999999999999999999999999\n",
      "[segment]\nname = \"/a\"\n[policies.x]\nrate = \"" + std::string(5000, '9') + "/s\"\n",
  };
  for (const std::string& text : cases) {
    const auto e = catch_error([&] { parse_config(text, "h.toml"); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(std::string(e->what()).starts_with("h.toml:")) << e->what();
  }
}

// ---------------------------------------------------------------------------
// load_config

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/shmlimit-cfg-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LoadConfig, ReadsTheFileAndNamesItInErrors) {
  const TempDir dir;
  const std::string good =
      dir.write("good.toml", "[segment]\nname = \"/f\"\n[policies.a]\nrate = \"1/s\"\n");
  const Config c = load_config(good);
  EXPECT_EQ(c.source, good);
  EXPECT_EQ(c.policies, std::vector<PolicySpec>{P("a", kGcra, 1, seconds(1))});

  const std::string bad =
      dir.write("bad.toml", "[segment]\nname = \"/f\"\n[policies.a]\nrate = \"1/w\"\n");
  const auto e = catch_error([&] { load_config(bad); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(std::string(e->what()).starts_with(bad + ":4:8: policy \"a\": invalid rate"))
      << e->what();
}

TEST(LoadConfig, UnreadableFileNamesPathAndReason) {
  const TempDir dir;
  const std::string missing = dir.path() + "/missing.toml";
  auto e = catch_error([&] { load_config(missing); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kNotFound);
  EXPECT_EQ(std::string(e->what()),
            "cannot read config file " + missing + ": " + std::strerror(ENOENT));

  e = catch_error([&] { load_config(dir.path()); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kSystem);
  EXPECT_EQ(std::string(e->what()),
            "cannot read config file " + dir.path() + ": " + std::strerror(EISDIR));

  const std::string big = dir.write("big.toml", "#" + std::string(2 << 20, 'x') + "\n");
  e = catch_error([&] { load_config(big); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(contains(e->what(), "larger than 1 MiB")) << e->what();
}

// ---------------------------------------------------------------------------
// open_config and policy_group on a real segment

Config config_for(const std::string& name, const std::string& policies,
                  const std::string& segment_extra = "capacity = 1024\n") {
  return parse_config("[segment]\nname = \"" + name + "\"\n" + segment_extra + policies, "t.toml");
}

// Opens an existing segment whatever its capacity.
Limiter open_existing(const std::string& name) {
  Options o;
  o.name = name;
  o.capacity = 0;
  return Limiter::open(o);
}

std::vector<PolicySpec> specs_of(const Limiter& limiter) {
  std::vector<PolicySpec> out;
  for (const PolicyView& v : limiter.policies()) out.push_back(v.spec);
  return out;
}

TEST(OpenConfig, CreatesTheSegmentAndRegistersInFileOrder) {
  const ScopedSegmentName name("cfg");
  const Config c = config_for(name.str(),
                              "[policies.b]\nrate = \"10/m;100/d\"\n"
                              "[policies.a]\nalgorithm = \"fixed_window\"\nrate = \"5/s\"\n"
                              "[policies.t]\nalgorithm = \"token_bucket\"\nmax_tokens = 50\n"
                              "refill_period = \"1m\"\nrefill_amount = 10\non_full = \"deny\"\n");
  const Limiter limiter = open_config(c);
  EXPECT_EQ(limiter.name(), name.str());
  // Burst 0 reads back as the rate's count, as add_policy stores it.
  const std::vector<PolicySpec> expected = {
      P("b", kGcra, 10, minutes(1), 10), P("b.2", kGcra, 100, kDay, 100),
      P("a", Algorithm::kFixedWindow, 5, seconds(1), 5),
      P("t", kTokenBucket, 10, minutes(1), 50, OnFull::kDeny)};
  EXPECT_EQ(specs_of(limiter), expected);

  // Again, from another handle: nothing changes.
  const Limiter again = open_config(c);
  EXPECT_EQ(specs_of(again), expected);
}

TEST(OpenConfig, ConflictOnTheThirdPolicyRegistersNothing) {
  const ScopedSegmentName name("cfg");
  {
    Options o;
    o.name = name.str();
    o.capacity = 1024;
    Limiter seg = Limiter::create(o);
    seg.add_policy(P("c", kGcra, 1, seconds(1)));
  }
  const Config c = config_for(name.str(),
                              "[policies.a]\nrate = \"1/s\"\n[policies.b]\nrate = \"2/s\"\n"
                              "[policies.c]\nrate = \"3/s\"\n[policies.d]\nrate = \"4/s\"\n");
  const auto e = catch_error([&] { open_config(c); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kPolicyConflict);
  const std::string m = e->what();
  EXPECT_TRUE(m.starts_with("t.toml: policy \"c\" is already registered in " + name.str())) << m;
  EXPECT_TRUE(
      contains(m, "as gcra 1/s burst 1 on_full allow; the config asks for gcra 3/s burst 3"))
      << m;
  EXPECT_TRUE(contains(m, "nothing was registered")) << m;

  const Limiter seg = open_existing(name.str());
  EXPECT_EQ(specs_of(seg), std::vector<PolicySpec>{P("c", kGcra, 1, seconds(1), 1)});

  // With replace, c takes the config's parameters and the others are added.
  const Limiter replaced = open_config(c, true);
  EXPECT_EQ(
      specs_of(replaced),
      (std::vector<PolicySpec>{P("c", kGcra, 3, seconds(1), 3), P("a", kGcra, 1, seconds(1), 1),
                               P("b", kGcra, 2, seconds(1), 2), P("d", kGcra, 4, seconds(1), 4)}));
}

TEST(OpenConfig, AShorterListThanTheSegmentsIsRefused) {
  const ScopedSegmentName name("cfg");
  open_config(config_for(name.str(), "[policies.m]\nrate = \"1/s;2/m;3/h\"\n"));
  const Config shorter =
      config_for(name.str(), "[policies.z]\nrate = \"9/s\"\n[policies.m]\nrate = \"1/s;2/m\"\n");
  for (const bool replace : {false, true}) {
    const auto e = catch_error([&] { open_config(shorter, replace); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code(), ErrorCode::kPolicyConflict);
    EXPECT_TRUE(contains(e->what(),
                         "holds policy \"m.3\", which policy_group(\"m\") would include, but the "
                         "config gives \"m\" 2 rates"))
        << e->what();
    EXPECT_TRUE(contains(e->what(), "nothing was registered")) << e->what();
  }
  EXPECT_FALSE(open_existing(name.str()).find_policy("z"));
}

TEST(OpenConfig, GeometryOfAnExistingSegmentMustMatch) {
  const ScopedSegmentName name("cfg");
  open_config(config_for(name.str(), ""));  // capacity 1024, 128-byte slots

  auto e = catch_error([&] { open_config(config_for(name.str(), "", "capacity = 2048\n")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kIncompatible);
  EXPECT_TRUE(std::string(e->what()).starts_with("t.toml: ")) << e->what();
  EXPECT_TRUE(contains(e->what(), "capacity")) << e->what();

  e = catch_error(
      [&] { open_config(config_for(name.str(), "", "capacity = 1024\nslot_bytes = 64\n")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kIncompatible);
  EXPECT_TRUE(contains(e->what(), "has 128-byte slots, not the 64 that the config asks for"))
      << e->what();
}

TEST(OpenConfig, NoRoomInThePolicyTableRegistersNothing) {
  const ScopedSegmentName name("cfg");
  std::string many;
  for (int i = 0; i < 63; ++i) many += "[policies.p" + std::to_string(i) + "]\nrate = \"1/s\"\n";
  open_config(config_for(name.str(), many));
  const auto e = catch_error([&] {
    open_config(config_for(name.str(),
                           "[policies.p0]\nrate = \"1/s\"\n[policies.x]\nrate = \"1/s;2/s\"\n"));
  });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kTableFull);
  EXPECT_TRUE(contains(e->what(), "holds 63 policies and the config adds 2, more than its 64"))
      << e->what();
  EXPECT_EQ(open_existing(name.str()).policies().size(), 63u);
}

TEST(OpenConfig, AnInvalidHandBuiltConfigTouchesNoSegment) {
  const ScopedSegmentName name("cfg");
  Config c;
  c.segment.name = name.str();
  c.segment.capacity = 1024;
  c.source = "hand";
  c.policies = {P("ok", kGcra, 1, seconds(1)), P("bad name", kGcra, 1, seconds(1))};
  auto e = catch_error([&] { open_config(c); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(std::string(e->what()).starts_with("hand: invalid policy name \"bad name\""))
      << e->what();

  c.policies = {P("twice", kGcra, 1, seconds(1)), P("twice", kGcra, 2, seconds(1))};
  e = catch_error([&] { open_config(c); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->what(), "policy \"twice\" is given twice")) << e->what();

  c.policies = {P("zero", kGcra, 0, seconds(1))};
  e = catch_error([&] { open_config(c); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->what(), "count >= 1")) << e->what();

  e = catch_error([&] { open_existing(name.str()); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kNotFound);
}

TEST(PolicyGroup, ListsNameThenMembersInOrder) {
  const ScopedSegmentName name("cfg");
  Limiter limiter = open_config(config_for(name.str(),
                                           "[policies.anon]\nrate = \"5/m\"\n"
                                           "[policies.multi]\nrate = \"2/h;3/d;100/d\"\n"));
  const auto ids = [&](const std::vector<PolicyId>& v) {
    std::vector<std::uint32_t> out;
    for (const PolicyId id : v) out.push_back(id.index);
    return out;
  };
  const auto index = [&](const char* n) { return limiter.find_policy(n).value().index; };
  EXPECT_EQ(ids(policy_group(limiter, "multi")),
            (std::vector<std::uint32_t>{index("multi"), index("multi.2"), index("multi.3")}));
  EXPECT_EQ(ids(policy_group(limiter, "anon")), std::vector<std::uint32_t>{index("anon")});
  EXPECT_TRUE(policy_group(limiter, "nope").empty());
  EXPECT_TRUE(policy_group(limiter, "").empty());

  // The group is what acquire_many takes: the tightest member (2/h) limits.
  std::vector<Request> requests;
  for (const PolicyId id : policy_group(limiter, "multi")) requests.push_back(Request{id, "k", 1});
  const Nanos t = limiter.now();
  EXPECT_TRUE(limiter.acquire_many_at(requests, t).allowed);
  EXPECT_TRUE(limiter.acquire_many_at(requests, t).allowed);
  EXPECT_FALSE(limiter.acquire_many_at(requests, t).allowed);
}

}  // namespace
}  // namespace shmlimit
