// HTTP status and headers from a Decision (include/shmlimit/http.hpp,
// doc/headers.md): rounding of Retry-After and resets (never earlier than
// the real wait), the verdict (429 / 503 / dry run), the X-RateLimit trio,
// the IETF draft's RateLimit-Policy / RateLimit fields (its own examples),
// the allocation-free writer's buffer contract, DRF's Throttled detail
// (outputs of DRF 3.14 itself), and headers from real Limiter decisions.
#include "shmlimit/http.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

Decision decision(bool allowed, std::uint64_t limit, std::uint64_t remaining, Nanos retry_after,
                  Nanos reset_after) {
  Decision d;
  d.allowed = allowed;
  d.limit = limit;
  d.remaining = remaining;
  d.retry_after = retry_after;
  d.reset_after = reset_after;
  return d;
}

// A verdict's fields (refuse, would_refuse, status, retry_after_s), compared
// and printed as one tuple.
using Verdict = std::tuple<bool, bool, int, std::uint64_t>;
Verdict fields(const HttpVerdict& v) {
  return {v.refuse, v.would_refuse, v.status, v.retry_after_s};
}

std::string block(const std::vector<Header>& headers) {
  std::string out;
  for (const Header& h : headers) out += h.name + ": " + h.value + "\r\n";
  return out;
}

std::string write_block(const Decision& d, std::span<const PolicyReport> policies,
                        const HttpOptions& o) {
  std::vector<char> buf(4096);
  const std::size_t n = write_rate_limit_headers(d, policies, o, buf);
  EXPECT_LT(n, buf.size());
  EXPECT_EQ(buf[n], '\0');
  return std::string(buf.data(), n);
}

// ---------------------------------------------------------------------------
// Rounding

TEST(CeilSeconds, RoundsUpNeverDown) {
  struct Case {
    Nanos in;
    std::uint64_t out;
  };
  const Case cases[] = {
      {Nanos{0}, 0},
      {Nanos{-1}, 0},
      {Nanos{-5'000'000'000}, 0},
      {Nanos{1}, 1},  // a 1 ns wait is 1 s (redis-cell once said 0)
      {Nanos{999'999'999}, 1},
      {seconds(1), 1},
      {seconds(1) + Nanos{1}, 2},
      {Nanos{1'500'000'000}, 2},
      {seconds(2), 2},
      {Nanos{59'200'000'000}, 60},
      {hours(24), 86400},
      {Nanos::max(), 9'223'372'037},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.in.count());
    EXPECT_EQ(ceil_seconds(c.in), c.out);
    // Never earlier than the real duration; less than a second later.
    if (c.in > Nanos{0}) {
      EXPECT_GE(static_cast<__int128_t>(c.out) * 1'000'000'000,
                static_cast<__int128_t>(c.in.count()));
      EXPECT_LT(static_cast<__int128_t>(c.out - 1) * 1'000'000'000,
                static_cast<__int128_t>(c.in.count()));
    }
  }
}

// ---------------------------------------------------------------------------
// Verdict

TEST(HttpVerdict, AllowedDeniedDryRunAndStatus) {
  const Decision ok = decision(true, 10, 9, Nanos{0}, seconds(1));
  const Decision no = decision(false, 10, 0, Nanos{1}, seconds(10));
  HttpOptions o;
  EXPECT_EQ(fields(http_verdict(ok, o)), Verdict(false, false, 0, 0));
  EXPECT_EQ(fields(http_verdict(no, o)), Verdict(true, true, 429, 1));

  o.refuse_status = 503;  // nginx limit_req_status default
  EXPECT_EQ(http_verdict(no, o).status, 503);
  for (int bad : {0, 200, 399, 600, -429}) {
    o.refuse_status = bad;
    EXPECT_EQ(http_verdict(no, o).status, 429) << bad;
  }

  o = HttpOptions{};
  o.dry_run = true;  // nginx limit_req_dry_run
  EXPECT_EQ(fields(http_verdict(no, o)), Verdict(false, true, 0, 1));
  EXPECT_EQ(fields(http_verdict(ok, o)), Verdict(false, false, 0, 0));
}

TEST(HttpVerdict, DenialWithoutAWaitHasNoRetryAfter) {
  Decision never = decision(false, 5, 5, Nanos{0}, Nanos{0});
  never.reason = Reason::kCostTooHigh;
  EXPECT_TRUE(http_verdict(never, {}).refuse);
  EXPECT_EQ(http_verdict(never, {}).retry_after_s, 0U);
  const auto headers = rate_limit_headers(never, {}, {});
  for (const Header& h : headers) EXPECT_NE(h.name, "Retry-After");
}

// ---------------------------------------------------------------------------
// Header block

TEST(RateLimitHeaders, AllowedRequestHasNoRetryAfter) {
  const Decision d = decision(true, 100, 99, Nanos{0}, Nanos{600'000'000});
  const PolicyReport p[] = {{"default", d, minutes(1)}};
  EXPECT_EQ(block(rate_limit_headers(d, p, {})),
            "X-RateLimit-Limit: 100\r\n"
            "X-RateLimit-Remaining: 99\r\n"
            "X-RateLimit-Reset: 1\r\n"
            "RateLimit-Policy: \"default\";q=100;w=60\r\n"
            "RateLimit: \"default\";r=99;t=1\r\n");
}

TEST(RateLimitHeaders, RefusedRequestCarriesRetryAfterRoundedUp) {
  const Decision d = decision(false, 20, 0, seconds(3) + Nanos{1}, seconds(12));
  const PolicyReport p[] = {{"burst", d, seconds(12)}};
  EXPECT_EQ(block(rate_limit_headers(d, p, {})),
            "Retry-After: 4\r\n"
            "X-RateLimit-Limit: 20\r\n"
            "X-RateLimit-Remaining: 0\r\n"
            "X-RateLimit-Reset: 12\r\n"
            "RateLimit-Policy: \"burst\";q=20;w=12\r\n"
            "RateLimit: \"burst\";r=0;t=12\r\n");
}

TEST(RateLimitHeaders, DryRunReportsButSendsNoRetryAfter) {
  const Decision d = decision(false, 20, 0, seconds(3), seconds(12));
  HttpOptions o;
  o.dry_run = true;
  const auto headers = rate_limit_headers(d, {}, o);
  EXPECT_EQ(block(headers),
            "X-RateLimit-Limit: 20\r\n"
            "X-RateLimit-Remaining: 0\r\n"
            "X-RateLimit-Reset: 12\r\n");
}

TEST(RateLimitHeaders, FamiliesAreSelectable) {
  const Decision d = decision(false, 20, 0, seconds(3), seconds(12));
  const PolicyReport p[] = {{"burst", d, seconds(12)}};
  HttpOptions o;
  o.headers = kHeadersRetryAfter;
  EXPECT_EQ(block(rate_limit_headers(d, p, o)), "Retry-After: 3\r\n");
  o.headers = kHeadersXRateLimit;
  EXPECT_EQ(rate_limit_headers(d, p, o).size(), 3U);
  o.headers = kHeadersRateLimit;
  EXPECT_EQ(block(rate_limit_headers(d, p, o)),
            "RateLimit-Policy: \"burst\";q=20;w=12\r\nRateLimit: \"burst\";r=0;t=12\r\n");
  o.headers = 0;
  EXPECT_TRUE(rate_limit_headers(d, p, o).empty());
  // The draft fields need the policies: none given, none sent.
  o.headers = kHeadersRateLimit;
  EXPECT_TRUE(rate_limit_headers(d, {}, o).empty());
}

// draft-ietf-httpapi-ratelimit-headers sections 3.2, 4.2 and B.3.1.
TEST(RateLimitHeaders, DraftExamples) {
  HttpOptions o;
  o.headers = kHeadersRateLimit;
  {
    const PolicyReport p[] = {
        {"default", decision(true, 100, 50, Nanos{0}, seconds(30)), seconds(10)}};
    EXPECT_EQ(block(rate_limit_headers(p[0].decision, p, o)),
              "RateLimit-Policy: \"default\";q=100;w=10\r\n"
              "RateLimit: \"default\";r=50;t=30\r\n");
  }
  {
    const PolicyReport p[] = {
        {"permin", decision(true, 50, 10, Nanos{0}, seconds(5)), seconds(60)},
        {"perhr", decision(true, 1000, 900, Nanos{0}, seconds(300)), hours(1)}};
    EXPECT_EQ(block(rate_limit_headers(p[0].decision, p, o)),
              "RateLimit-Policy: \"permin\";q=50;w=60, \"perhr\";q=1000;w=3600\r\n"
              "RateLimit: \"permin\";r=10;t=5, \"perhr\";r=900;t=300\r\n");
  }
  {
    // B.3.1: "hour";q=1000;w=3600, "day";q=5000;w=86400, 100 left for 10 h.
    const PolicyReport p[] = {{"hour", decision(true, 1000, 1000, Nanos{0}, Nanos{0}), hours(1)},
                              {"day", decision(true, 5000, 100, Nanos{0}, hours(10)), hours(24)}};
    EXPECT_EQ(block(rate_limit_headers(p[1].decision, p, o)),
              "RateLimit-Policy: \"hour\";q=1000;w=3600, \"day\";q=5000;w=86400\r\n"
              "RateLimit: \"hour\";r=1000;t=0, \"day\";r=100;t=36000\r\n");
  }
}

TEST(RateLimitHeaders, PolicyNamesAreValidSfStrings) {
  HttpOptions o;
  o.headers = kHeadersRateLimit;
  const Decision d = decision(true, 1, 1, Nanos{0}, Nanos{0});
  const PolicyReport p[] = {
      {"", d, Nanos{0}}, {"a\"b\\c", d, Nanos{0}}, {"x\r\ny\x7f\xff", d, Nanos{0}}};
  EXPECT_EQ(block(rate_limit_headers(d, p, o)),
            "RateLimit-Policy: \"default\";q=1, \"a\\\"b\\\\c\";q=1, \"x??y??\";q=1\r\n"
            "RateLimit: \"default\";r=1;t=0, \"a\\\"b\\\\c\";r=1;t=0, \"x??y??\";r=1;t=0\r\n");
}

TEST(RateLimitHeaders, IntegersAreClampedToSfIntegerRange) {
  HttpOptions o;
  const Decision d = decision(true, UINT64_MAX, UINT64_MAX, Nanos{0}, Nanos::max());
  const PolicyReport p[] = {{"big", d, Nanos::max()}};
  const std::string b = block(rate_limit_headers(d, p, o));
  EXPECT_NE(b.find("X-RateLimit-Limit: 18446744073709551615\r\n"), std::string::npos);
  EXPECT_NE(b.find("RateLimit-Policy: \"big\";q=999999999999999;w=9223372037\r\n"),
            std::string::npos);
  EXPECT_NE(b.find("RateLimit: \"big\";r=999999999999999;t=9223372037\r\n"), std::string::npos);
}

TEST(WriteRateLimitHeaders, SameBytesAsTheVectorForm) {
  const Decision burst = decision(false, 20, 0, seconds(2), seconds(12));
  const Decision day = decision(true, 1000, 990, Nanos{0}, seconds(865));
  const PolicyReport p[] = {{"burst", burst, seconds(12)}, {"sustained", day, hours(24)}};
  for (bool dry : {false, true}) {
    HttpOptions o;
    o.dry_run = dry;
    EXPECT_EQ(write_block(burst, p, o), block(rate_limit_headers(burst, p, o)));
  }
}

TEST(WriteRateLimitHeaders, TooSmallBufferReturnsTheNeededSizeAndAnEmptyString) {
  const Decision d = decision(false, 20, 0, seconds(2), seconds(12));
  const PolicyReport p[] = {{"burst", d, seconds(12)}};
  const std::string want = block(rate_limit_headers(d, p, {}));
  for (std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{10}, want.size() - 1, want.size()}) {
    std::vector<char> buf(size + 1, 'Z');  // one guard byte past the span
    const std::size_t n = write_rate_limit_headers(d, p, {}, std::span<char>(buf.data(), size));
    EXPECT_EQ(n, want.size()) << size;
    if (size > 0) {
      EXPECT_EQ(buf[0], '\0') << size;
    }
    EXPECT_EQ(buf[size], 'Z') << "wrote past the buffer, size " << size;
  }
  std::vector<char> exact(want.size() + 1);
  EXPECT_EQ(write_rate_limit_headers(d, p, {}, exact), want.size());
  EXPECT_EQ(std::string(exact.data()), want);
}

// ---------------------------------------------------------------------------
// Policy windows

TEST(PolicyWindow, TimeToRefillTheWholeCapacity) {
  using unit::spec;
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 100, minutes(1), 20)), seconds(12));
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 100, minutes(1), 0)), minutes(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 3, seconds(1), 0)), seconds(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 3, seconds(1), 1)), Nanos{333'333'334});
  EXPECT_EQ(policy_window(spec(Algorithm::kLeakyBucket, 10, seconds(1), 5)), Nanos{500'000'000});
  EXPECT_EQ(policy_window(spec(Algorithm::kTokenBucket, 10, seconds(1), 25)), seconds(3));
  EXPECT_EQ(policy_window(spec(Algorithm::kTokenBucket, 10, seconds(1), 10)), seconds(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kFixedWindow, 5, hours(1), 0)), hours(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kSlidingWindow, 5, minutes(1), 0)), minutes(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kQuietPeriod, 1, minutes(1), 0)), minutes(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kSlidingLog, 3, minutes(1), 0)), minutes(1));
  EXPECT_EQ(policy_window(spec(Algorithm::kConcurrency, 4, seconds(1), 0)), Nanos{0});
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 0, minutes(1), 0)), Nanos{0});
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 1, Nanos{0}, 0)), Nanos{0});
  EXPECT_EQ(policy_window(spec(Algorithm::kGcra, 1, Nanos::max(), UINT64_MAX)), Nanos::max());
  EXPECT_EQ(policy_window(spec(static_cast<Algorithm>(99), 1, seconds(1), 0)), Nanos{0});
}

// ---------------------------------------------------------------------------
// DRF's Throttled detail: outputs of rest_framework.exceptions.Throttled
// (DRF 3.14) for the same waits.

TEST(DrfThrottledDetail, MatchesDrfsMessageAndRounding) {
  struct Case {
    std::optional<Nanos> wait;
    const char* detail;
  };
  const Case cases[] = {
      {std::nullopt, "Request was throttled."},
      {Nanos{0}, "Request was throttled. Expected available in 0 seconds."},
      {Nanos{1}, "Request was throttled. Expected available in 1 second."},
      {seconds(1), "Request was throttled. Expected available in 1 second."},
      {seconds(1) + Nanos{1}, "Request was throttled. Expected available in 2 seconds."},
      {Nanos{1'500'000'000}, "Request was throttled. Expected available in 2 seconds."},
      {seconds(2), "Request was throttled. Expected available in 2 seconds."},
      {Nanos{59'200'000'000}, "Request was throttled. Expected available in 60 seconds."},
      {Nanos{-500'000'000}, "Request was throttled. Expected available in 0 seconds."},
      {Nanos{-1'500'000'000}, "Request was throttled. Expected available in -1 seconds."},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.detail);
    EXPECT_EQ(drf_throttled_detail(c.wait), c.detail);
    char buf[128];
    const std::size_t n = write_drf_throttled_detail(c.wait, buf);
    EXPECT_EQ(std::string(buf, n), c.detail);
    EXPECT_EQ(buf[n], '\0');
  }
  char small[8];
  EXPECT_EQ(write_drf_throttled_detail(seconds(5), small),
            std::strlen("Request was throttled. Expected available in 5 seconds."));
  EXPECT_EQ(small[0], '\0');
}

// ---------------------------------------------------------------------------
// From a real Limiter decision.

TEST(RateLimitHeaders, RetryAfterIsNeverEarlierThanTheLimitersRealWait) {
  unit::ScopedSegmentName name("http");
  Limiter limiter = Limiter::create(unit::small_options(name.str()));
  PolicySpec s;
  s.name = "api";
  s.rate = parse_rate("2/7s");  // one unit every 3.5 s
  s.burst = 2;
  const PolicyId id = limiter.add_policy(s);
  const Nanos t0 = seconds(5);
  ASSERT_TRUE(limiter.acquire_at(id, "k", 1, t0).allowed);
  ASSERT_TRUE(limiter.acquire_at(id, "k", 1, t0).allowed);
  const Decision denied = limiter.acquire_at(id, "k", 1, t0);
  ASSERT_FALSE(denied.allowed);
  EXPECT_EQ(denied.retry_after, Nanos{3'500'000'000});
  const HttpVerdict v = http_verdict(denied, {});
  ASSERT_TRUE(v.refuse);
  EXPECT_EQ(v.retry_after_s, 4U);
  // A client that comes back one second before Retry-After is refused; one
  // that waits exactly Retry-After is admitted.
  const auto after = [&](std::uint64_t s) { return t0 + seconds(static_cast<std::int64_t>(s)); };
  EXPECT_FALSE(limiter.acquire_at(id, "k", 1, after(v.retry_after_s - 1)).allowed);
  EXPECT_TRUE(limiter.acquire_at(id, "k", 1, after(v.retry_after_s)).allowed);
  const PolicyReport p[] = {{"api", denied, policy_window(s)}};
  EXPECT_EQ(block(rate_limit_headers(denied, p, {})),
            "Retry-After: 4\r\n"
            "X-RateLimit-Limit: 2\r\n"
            "X-RateLimit-Remaining: 0\r\n"
            "X-RateLimit-Reset: 7\r\n"
            "RateLimit-Policy: \"api\";q=2;w=7\r\n"
            "RateLimit: \"api\";r=0;t=7\r\n");
}

}  // namespace
}  // namespace shmlimit
