// Every input error is an error: options an
// algorithm does not use and capacity 0 are refused, names are checked as
// UTF-8 with the offending byte escaped, every message is one printable
// line, a segment holding any bytes in a policy name is flagged by check(),
// and a cost that can never fit gets no Retry-After.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "segment/layout.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/http.hpp"
#include "shmlimit/identity.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using namespace std::chrono_literals;
using unit::catch_error;

/// Printable ASCII only: what a message may hold, whatever it quotes.
bool printable_line(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) return false;
  }
  return true;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

PolicySpec spec_of(Algorithm a, std::uint64_t count, std::uint64_t burst) {
  PolicySpec s;
  s.name = "p";
  s.algorithm = a;
  s.rate = Rate{count, a == Algorithm::kConcurrency ? Nanos(0) : Nanos(std::chrono::hours(1))};
  s.burst = burst;
  return s;
}

constexpr Algorithm kWithoutBurst[] = {Algorithm::kFixedWindow, Algorithm::kSlidingWindow,
                                       Algorithm::kQuietPeriod, Algorithm::kSlidingLog,
                                       Algorithm::kConcurrency};
constexpr Algorithm kWithBurst[] = {Algorithm::kGcra, Algorithm::kTokenBucket,
                                    Algorithm::kLeakyBucket};

// Row 6: `policy /x w 10/s --algorithm fixed_window --burst 5` dropped the burst.
TEST(PolicySpecValidation, BurstOnAnAlgorithmWithoutOneIsRefusedNotDropped) {
  for (const Algorithm a : kWithoutBurst) {
    SCOPED_TRACE(std::string(to_string(a)));
    EXPECT_FALSE(algorithm_has_burst(a));
    const auto e = catch_error([&] { (void)normalize_policy_spec(spec_of(a, 10, 5)); });
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(contains(e->what(), "burst 5 does not apply to " + std::string(to_string(a))))
        << e->what();
    // 0 (not given) and the count (what policies() reports) are the capacity it has.
    EXPECT_EQ(normalize_policy_spec(spec_of(a, 10, 0)).burst, 10u);
    EXPECT_EQ(normalize_policy_spec(spec_of(a, 10, 10)).burst, 10u);
  }
  for (const Algorithm a : kWithBurst) {
    SCOPED_TRACE(std::string(to_string(a)));
    EXPECT_TRUE(algorithm_has_burst(a));
    EXPECT_EQ(normalize_policy_spec(spec_of(a, 10, 5)).burst, 5u);
    EXPECT_EQ(normalize_policy_spec(spec_of(a, 10, 0)).burst, 10u)
        << "burst 0 means the rate's count";
  }
}

TEST(PolicySpecValidation, DrfWaitOnAnAlgorithmOtherThanSlidingLogIsRefused) {
  PolicySpec s = spec_of(Algorithm::kGcra, 10, 0);
  s.wait = LogWait::kDrf;
  const auto e = catch_error([&] { (void)normalize_policy_spec(s); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(contains(e->what(), "applies to sliding_log only")) << e->what();
  s.algorithm = Algorithm::kSlidingLog;
  EXPECT_EQ(normalize_policy_spec(s).wait, LogWait::kDrf);
}

TEST(PolicySpecValidation, AddPolicyAndConfigFilesRefuseWhatTheValidatorRefuses) {
  unit::ScopedSegmentName name("specs");
  Limiter l = Limiter::create(unit::small_options(name.str()));
  const PolicySpec bad = spec_of(Algorithm::kFixedWindow, 10, 5);
  std::string validator;
  try {
    (void)normalize_policy_spec(bad);
  } catch (const Error& e) {
    validator = e.what();
  }
  ASSERT_FALSE(validator.empty());
  const auto api = catch_error([&] { l.add_policy(bad); });
  ASSERT_TRUE(api.has_value());
  EXPECT_EQ(std::string(api->what()), validator);
  EXPECT_TRUE(l.policies().empty());

  Config config;
  config.source = "app.toml";
  config.segment = unit::small_options(name.str());
  config.policies = {bad};
  const auto file = catch_error([&] { (void)open_config(config); });
  ASSERT_TRUE(file.has_value());
  EXPECT_EQ(file->code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(std::string(file->what()), "app.toml: " + validator);
  EXPECT_TRUE(l.policies().empty());
}

// Row 6: `create --capacity 0` silently became 65536.
TEST(CreateOptions, CapacityZeroIsRefusedAtCreateAndLeavesNothing) {
  unit::ScopedSegmentName name("cap0");
  Options o = unit::small_options(name.str());
  o.capacity = 0;
  for (const auto& create : {std::function<void()>([&] { (void)Limiter::create(o); }),
                             std::function<void()>([&] { (void)Limiter::open_or_create(o); })}) {
    const auto e = catch_error(create);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(contains(e->what(), "capacity 0")) << e->what();
    EXPECT_FALSE(Limiter::remove(name.str())) << "a refused create left a segment";
  }
  // To an open, 0 still means "any capacity" (open_or_create too).
  Options made = unit::small_options(name.str(), 64);
  (void)Limiter::create(made);
  EXPECT_NO_THROW((void)Limiter::open(o));
  EXPECT_NO_THROW((void)Limiter::open_or_create(o));
}

// Row 7: add_policy("pé") gave Python an empty message (half a UTF-8
// character is not decodable) and the CLI printed half a character.
TEST(PolicyNames, NamesAreCheckedAsUtf8WithTheOffendingByteEscaped) {
  const std::pair<std::string, std::vector<std::string>> cases[] = {
      {"p\xc3\xa9", {"\"p\\xc3\\xa9\"", "character '\\xc3\\xa9' at byte 1 is not one of"}},
      {"p\xff\xfe", {"\"p\\xff\\xfe\"", "byte \\xff at byte 1 is not UTF-8"}},
      {"p\xc3", {"byte \\xc3 at byte 1 is not UTF-8"}},
      {std::string("a\0b", 3), {"\"a\\x00b\"", "character '\\x00' at byte 1"}},
      {"two\nlines", {"\"two\\x0alines\""}},
      {"", {"it is empty"}},
      {std::string(32, 'a'), {"longer than 31"}},
  };
  for (const auto& [name, want] : cases) {
    PolicySpec s = spec_of(Algorithm::kGcra, 10, 0);
    s.name = name;
    const auto e = catch_error([&] { (void)normalize_policy_spec(s); });
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(printable_line(e->what())) << e->what();
    for (const std::string& w : want)
      EXPECT_TRUE(contains(e->what(), w)) << e->what() << "\nwants: " << w;
  }
}

// Every ErrorCode that common bad input raises comes with a message that is
// non-empty and printable, whatever bytes the input held.
TEST(ErrorMessages, EveryErrorFromCommonBadInputsIsNonEmptyAndPrintable) {
  unit::ScopedSegmentName name("msgs");
  Limiter l = Limiter::create(unit::small_options(name.str()));
  (void)l.add_policy(spec_of(Algorithm::kGcra, 5, 0));
  Options ro = unit::small_options(name.str());
  ro.read_only = true;
  Limiter reader = Limiter::open(ro);
  const std::string hostile = "\xc3\xff\x01\n\x7f";

  const std::vector<std::pair<std::string, std::function<void()>>> inputs = {
      {"parse_rate", [&] { (void)parse_rate("5/" + hostile); }},
      {"parse_rate empty", [&] { (void)parse_rate(""); }},
      {"parse_rates", [&] { (void)parse_rates("5/m;" + hostile); }},
      {"parse_duration", [&] { (void)parse_duration(hostile); }},
      {"parse_algorithm", [&] { (void)parse_algorithm(hostile); }},
      {"policy name",
       [&] {
         (void)l.add_policy({hostile, Algorithm::kGcra, parse_rate("5/m")});
       }},
      {"no rate",
       [&] {
         (void)l.add_policy({"q", Algorithm::kGcra, Rate{}});
       }},
      {"burst unused", [&] { (void)l.add_policy(spec_of(Algorithm::kQuietPeriod, 5, 2)); }},
      {"burst too large",
       [&] { (void)l.add_policy(spec_of(Algorithm::kTokenBucket, 5, std::uint64_t{1} << 40)); }},
      {"sliding log without entries",
       [&] { (void)l.add_policy(spec_of(Algorithm::kSlidingLog, 5, 0)); }},
      {"policy conflict", [&] { (void)l.add_policy(spec_of(Algorithm::kGcra, 6, 0)); }},
      {"read-only add", [&] { (void)reader.add_policy(spec_of(Algorithm::kGcra, 5, 0)); }},
      {"segment name", [&] { (void)Limiter::open(unit::small_options("/seg" + hostile)); }},
      {"segment missing",
       [&] { (void)Limiter::open(unit::small_options(name.str() + "-missing")); }},
      {"segment exists", [&] { (void)Limiter::create(unit::small_options(name.str())); }},
      {"capacity 0",
       [&] {
         Options o = unit::small_options(name.str() + "-zero");
         o.capacity = 0;
         (void)Limiter::create(o);
       }},
      {"slot bytes",
       [&] {
         Options o = unit::small_options(name.str() + "-slot");
         o.slot_bytes = 100;
         (void)Limiter::create(o);
       }},
      {"config",
       [&] {
         (void)parse_config("[segment]\nname = \"/x\"\n[policies.\"" + hostile + "\"]\n", "c.toml");
       }},
      {"config bytes", [&] { (void)parse_config(hostile, "c.toml"); }},
      {"import", [&] { (void)l.import_state(hostile); }},
      {"cidr", [&] { (void)Cidr::parse(hostile); }},
      {"ip", [&] { (void)IpAddress::parse(hostile); }},
  };
  for (const auto& [what, fn] : inputs) {
    SCOPED_TRACE(what);
    const auto e = catch_error(fn);
    ASSERT_TRUE(e.has_value());
    EXPECT_TRUE(printable_line(e->what())) << "[" << e->what() << "]";
  }
}

// Row 8: a policy name in the segment holding \xff\xfe; check() called the
// segment clean (and Python's dump() raised UnicodeDecodeError).
TEST(CheckFlags, PolicyNameThatIsNotUtf8InTheSegment) {
  unit::ScopedSegmentName name("badname");
  Limiter l = Limiter::create(unit::small_options(name.str()));
  const PolicyId id = l.add_policy(spec_of(Algorithm::kGcra, 5, 0));
  ASSERT_TRUE(l.acquire(id, "k").allowed);
  const unsigned char bytes[] = {'p', 0xff, 0xfe, 0};
  unit::write_at(name.path(), 4096 + offsetof(detail::PolicyEntry, name), bytes, sizeof bytes);
  const CheckReport r = l.check(false);
  EXPECT_FALSE(r.clean());
  bool flagged = false;
  for (const std::string& p : r.problems) {
    EXPECT_TRUE(printable_line(p)) << p;
    flagged = flagged || (contains(p, "\"p\\xff\\xfe\"") && contains(p, "invalid name"));
  }
  EXPECT_TRUE(flagged) << ::testing::PrintToString(r.problems);
}

// Row 10: a cost_too_high denial gave "Retry-After: 9223372037" and "Expected
// available in 9223372037 seconds.".
TEST(RateLimitHeaders, CostThatCanNeverFitCarriesNoRetryAfter) {
  unit::ScopedSegmentName name("never");
  Limiter l = Limiter::create(unit::small_options(name.str()));
  const PolicySpec s = spec_of(Algorithm::kGcra, 5, 0);
  const PolicyId id = l.add_policy(s);
  const Decision d = l.acquire(id, "k", 6);
  ASSERT_FALSE(d.allowed);
  ASSERT_EQ(d.reason, Reason::kCostTooHigh);
  ASSERT_EQ(d.retry_after, Nanos::max());

  const HttpVerdict v = http_verdict(d, {});
  EXPECT_TRUE(v.refuse);
  EXPECT_EQ(v.retry_after_s, 0u);
  const PolicyReport reports[] = {{"api", d, policy_window(s)}};
  for (const Header& h : rate_limit_headers(d, reports, {})) {
    EXPECT_NE(h.name, "Retry-After");
    EXPECT_FALSE(contains(h.value, "9223372037")) << h.name << ": " << h.value;
  }
  char block[512];
  const std::size_t n = write_rate_limit_headers(d, reports, {}, block);
  ASSERT_LT(n, sizeof block);
  EXPECT_FALSE(contains(std::string_view(block, n), "Retry-After")) << block;

  EXPECT_EQ(drf_throttled_detail(d.retry_after), "Request was throttled.");
  char detail[128];
  ASSERT_LT(write_drf_throttled_detail(d.retry_after, detail), sizeof detail);
  EXPECT_STREQ(detail, "Request was throttled.");

  // However it is combined: the all-or-nothing decision of two policies.
  const PolicyId other = l.add_policy({"other", Algorithm::kGcra, parse_rate("100/m")});
  const Request both[] = {{id, "k", 6}, {other, "k", 6}};
  const Decision combined = l.acquire_many(both);
  ASSERT_FALSE(combined.allowed);
  EXPECT_EQ(http_verdict(combined, {}).retry_after_s, 0u);
  EXPECT_EQ(drf_throttled_detail(combined.retry_after), "Request was throttled.");
}

}  // namespace
}  // namespace shmlimit
