// The Redis tier against the local algorithms: the same tables of (time,
// cost) give identical five values in Redis (limiter.lua, injected time) and
// in the pure functions of src/algorithms/ (buckets.cpp, windows.cpp); multi-limit calls agree with
// Limiter::acquire_many_at; keys expire when full; the script is reloaded
// after SCRIPT FLUSH; AUTH; policies the script cannot represent are refused.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <csignal>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "mp.hpp"
#include "redis/tier.hpp"
#include "redis_server.hpp"
#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using u64 = std::uint64_t;

constexpr u64 kUsPerDay = 86'400'000'000ULL;

// A raw connection for inspecting keys.
class Raw {
 public:
  explicit Raw(const RedisServer& s) : ctx_(redisConnect("127.0.0.1", s.port())) {
    if (ctx_ == nullptr || ctx_->err != 0) throw std::runtime_error("redisConnect failed");
  }
  ~Raw() { redisFree(ctx_); }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;
  long long integer(const std::string& cmd, const std::string& key) {
    auto* r =
        static_cast<redisReply*>(redisCommand(ctx_, (cmd + " %b").c_str(), key.data(), key.size()));
    if (r == nullptr) throw std::runtime_error("redisCommand failed");
    const long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1000;
    freeReplyObject(r);
    return v;
  }
  std::string status(const char* cmd) {
    auto* r = static_cast<redisReply*>(redisCommand(ctx_, cmd));
    if (r == nullptr) throw std::runtime_error("redisCommand failed");
    std::string v(r->str != nullptr ? r->str : "", r->str != nullptr ? r->len : 0);
    freeReplyObject(r);
    return v;
  }

 private:
  redisContext* ctx_;
};

RedisOptions options_for(const RedisServer& s, bool test_clock) {
  RedisOptions o;
  o.port = s.port();
  o.test_clock = test_clock;
  o.command_timeout = milliseconds(30000);  // a loaded machine: never a spurious timeout
  o.connect_timeout = milliseconds(30000);
  return o;
}

detail::AlgoParams params_of(const PolicySpec& spec) {
  PolicySpec s = spec;
  const bool windowed = s.algorithm == Algorithm::kFixedWindow ||
                        s.algorithm == Algorithm::kSlidingWindow ||
                        s.algorithm == Algorithm::kQuietPeriod;
  if (s.burst == 0 || windowed) s.burst = s.rate.count;
  const auto period = static_cast<u64>(s.rate.period.count());
  return detail::AlgoParams{s.algorithm, s.rate.count, period, s.burst,
                            detail::gcra_emission(s.rate.count, period)};
}

void expect_same(const Decision& local, const Decision& redis, const std::string& where) {
  EXPECT_EQ(local.allowed, redis.allowed) << where;
  EXPECT_EQ(local.limit, redis.limit) << where;
  EXPECT_EQ(local.remaining, redis.remaining) << where;
  EXPECT_EQ(local.retry_after.count(), redis.retry_after.count()) << where;
  EXPECT_EQ(local.reset_after.count(), redis.reset_after.count()) << where;
  EXPECT_EQ(static_cast<int>(local.reason), static_cast<int>(redis.reason)) << where;
}

struct Case {
  const char* name;
  Algorithm algorithm;
  u64 count;
  Nanos period;
  u64 burst;
  u64 step_us;  // typical gap between calls
};

using std::chrono::days;
using std::chrono::minutes;
using std::chrono::seconds;

// Every algorithm, short and long periods (the long ones run for most of a
// year, within the local clock horizon, so the script moves each key's time
// origin several times).
const Case kCases[] = {
    {"gcra_5s", Algorithm::kGcra, 5, seconds(1), 5, 150'000},
    {"gcra_3_7ms", Algorithm::kGcra, 3, milliseconds(7), 4, 2'000},
    {"gcra_100m", Algorithm::kGcra, 100, minutes(1), 20, 500'000},
    {"gcra_1_5d", Algorithm::kGcra, 1, days(5), 2, kUsPerDay},
    {"leaky_5s", Algorithm::kLeakyBucket, 5, seconds(1), 8, 120'000},
    {"leaky_1_5d", Algorithm::kLeakyBucket, 1, days(5), 2, kUsPerDay},
    {"tb_3_250ms", Algorithm::kTokenBucket, 3, milliseconds(250), 10, 60'000},
    {"tb_1d", Algorithm::kTokenBucket, 1, days(1), 5, kUsPerDay / 2},
    {"fw_10s", Algorithm::kFixedWindow, 10, seconds(1), 0, 80'000},
    {"fw_5_250ms", Algorithm::kFixedWindow, 5, milliseconds(250), 0, 40'000},
    {"fw_3_5d", Algorithm::kFixedWindow, 3, days(5), 0, kUsPerDay / 2},
    {"sw_10s", Algorithm::kSlidingWindow, 10, seconds(1), 0, 70'000},
    {"sw_7_100ms", Algorithm::kSlidingWindow, 7, milliseconds(100), 0, 11'000},
    {"sw_4_6d", Algorithm::kSlidingWindow, 4, days(6), 0, kUsPerDay / 2},
    // prev * (W - e) passes 2^53 here: the script's exact muldiv path.
    {"sw_50k_6d", Algorithm::kSlidingWindow, 50'000, days(6), 0, kUsPerDay / 2},
    {"fw_50k_5d", Algorithm::kFixedWindow, 50'000, days(5), 0, kUsPerDay / 2},
    {"gcra_50k_d", Algorithm::kGcra, 50'000, days(1), 40'000, kUsPerDay / 20},
    {"qp_3s", Algorithm::kQuietPeriod, 3, seconds(1), 0, 250'000},
    {"qp_5_200ms", Algorithm::kQuietPeriod, 5, milliseconds(200), 0, 60'000},
    {"qp_2_12d", Algorithm::kQuietPeriod, 2, days(12), 0, 3 * kUsPerDay},
};

// Unix time (us) the tables start at: now-ish, a multiple of every period,
// so the epoch-aligned windows of Redis and of the local functions (aligned
// to their own epoch, 0) are the same windows.
u64 table_origin_us() {
  u64 l = 1;
  for (const Case& c : kCases) l = std::lcm(l, static_cast<u64>(c.period.count()) / 1000);
  const u64 now = 1'750'000'000'000'000ULL;
  return now / l * l;
}

class RedisTier : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (RedisServer::available()) server_ = new RedisServer();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr) GTEST_SKIP() << "redis-server is not installed";
  }
  static RedisServer* server_;
};
RedisServer* RedisTier::server_ = nullptr;

// The same random table of (time, cost, acquire or refund) through Redis and
// through algo_decide / algo_refund: identical decisions, call by call.
TEST_F(RedisTier, EveryAlgorithmDecidesAsTheLocalFunctionsOnTheSameTables) {
  RedisLimiter redis(options_for(*server_, /*test_clock=*/true));
  const u64 base = table_origin_us();
  for (const Case& c : kCases) {
    const PolicySpec spec{c.name, c.algorithm, Rate{c.count, c.period}, c.burst, OnFull::kDeny};
    const PolicyId id = redis.add_policy(TierPolicy{spec});
    const detail::AlgoParams p = params_of(spec);
    std::mt19937_64 rng(std::hash<std::string>{}(c.name));
    u64 state = 0;
    u64 t_us = base + rng() % 1000;  // not on a window boundary
    const std::string key = std::string("table-") + c.name;
    redis.reset(id, key);
    int compared = 0, allowed = 0, denied = 0;
    for (int step = 0; step < 250; ++step) {
      // Gaps: none, short, typical, long (a bucket that refills).
      const unsigned kind = rng() % 8;
      const u64 gap = kind == 0   ? 0
                      : kind <= 2 ? rng() % (c.step_us / 4 + 1)
                      : kind <= 6 ? rng() % (2 * c.step_us + 1)
                                  : 6 * c.step_us;
      t_us += gap;
      if (t_us - base > 500 * kUsPerDay) break;  // well inside the local clock horizon (834 days)
      const u64 costs[] = {0, 1, 1, 1, 1, 2, 3, p.burst / 3, p.burst / 2, p.burst, p.burst + 1};
      const u64 cost = costs[rng() % std::size(costs)];
      const bool refund = rng() % 10 == 0;
      const auto now_ns = static_cast<std::int64_t>((t_us - base) * 1000);
      const std::string where = std::string(c.name) + " step " + std::to_string(step) + " t+" +
                                std::to_string(t_us - base) + "us cost " + std::to_string(cost) +
                                (refund ? " refund" : "");
      detail::AlgoOutcome local;
      TierDecision remote;
      if (refund) {
        local = detail::algo_refund(p, state, now_ns, cost);
        remote = redis.refund_at(id, key, cost, microseconds(t_us));
      } else {
        local = detail::algo_decide(p, state, now_ns, cost);
        remote = redis.acquire_at(id, key, cost, microseconds(t_us));
      }
      if (local.store) state = local.new_state;
      ASSERT_EQ(remote.source, Source::kRedis) << where << ": " << redis.last_error();
      expect_same(local.decision, remote.decision, where);
      ++compared;
      (remote.decision.allowed ? allowed : denied) += refund || cost == 0 ? 0 : 1;
      if (::testing::Test::HasFailure()) return;
    }
    EXPECT_GE(compared, 100) << c.name;
    // The table reaches both answers, so it tests the limit, not a free pass.
    EXPECT_GT(allowed, 15) << c.name;
    EXPECT_GT(denied, 15) << c.name;
    std::printf("%-12s %3d calls: %3d admitted, %3d denied\n", c.name, compared, allowed, denied);
  }
}

// A key idle for a long time: the script rebases or restarts its origin and
// still agrees (a quiet period that stays blocked for ten months).
TEST_F(RedisTier, KeysLivingForMonthsKeepExactDecisionsAcrossOriginRebases) {
  RedisLimiter redis(options_for(*server_, true));
  const PolicySpec spec{"blocked", Algorithm::kQuietPeriod, parse_rate("2/12d"), 0, OnFull::kDeny};
  const PolicyId id = redis.add_policy(TierPolicy{spec});
  const detail::AlgoParams p = params_of(spec);
  const u64 base = table_origin_us();
  redis.reset(id, "k");
  u64 state = 0;
  for (int step = 0; step < 60; ++step) {
    const u64 t_us =
        base + static_cast<u64>(step) * 5 * kUsPerDay + 17;  // every 5 days: never quiet for 12
    const auto now_ns = static_cast<std::int64_t>((t_us - base) * 1000);
    const detail::AlgoOutcome local = detail::algo_decide(p, state, now_ns, 1);
    if (local.store) state = local.new_state;
    const TierDecision remote = redis.acquire_at(id, "k", 1, microseconds(t_us));
    ASSERT_EQ(remote.source, Source::kRedis) << redis.last_error();
    expect_same(local.decision, remote.decision, "day " + std::to_string(step * 5));
    if (step >= 2) {
      EXPECT_FALSE(remote.decision.allowed) << "day " << step * 5;
    }
  }
}

// Several limits of one key (one script call) and of several keys (one call
// per key, pipelined, refunded on a denial) against Limiter::acquire_many_at.
TEST_F(RedisTier, AcquireManyIsAllOrNothingAsTheLocalLimiter) {
  RedisLimiter redis(options_for(*server_, true));
  ScopedName name("redis-many");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter local = Limiter::create(o);
  const std::vector<PolicySpec> specs = {
      {"m-burst", Algorithm::kGcra, parse_rate("10/s"), 4, OnFull::kDeny},
      {"m-sustained", Algorithm::kSlidingWindow, parse_rate("6/2s"), 0, OnFull::kDeny},
      {"m-window", Algorithm::kFixedWindow, parse_rate("5/s"), 0, OnFull::kDeny},
  };
  std::vector<PolicyId> rid, lid;
  for (const auto& s : specs) {
    rid.push_back(redis.add_policy(TierPolicy{s}));
    lid.push_back(local.add_policy(s));
  }
  const u64 base = table_origin_us();
  for (const auto& k : {"user", "org", "ip"}) {
    for (const PolicyId id : rid) {
      redis.reset(id, k);
    }
  }
  std::mt19937_64 rng(7);
  u64 t_us = base + 333;
  for (int step = 0; step < 200; ++step) {
    t_us += rng() % 4 == 0 ? 300'000 : rng() % 40'000;
    // One key with every limit, or the limits spread over several keys.
    const bool spread = step % 2 == 1;
    std::vector<Request> rr, lr;
    const char* keys[] = {"user", "org", "ip"};
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const std::string_view key = spread ? keys[i] : keys[0];
      const u64 cost = 1 + rng() % 2;
      rr.push_back(Request{rid[i], key, cost});
      lr.push_back(Request{lid[i], key, cost});
    }
    std::vector<Decision> re(rr.size()), le(lr.size());
    const Decision l = local.acquire_many_at(lr, Nanos((t_us - base) * 1000), le);
    const TierDecision r = redis.acquire_many_at(rr, microseconds(t_us), re);
    ASSERT_EQ(r.source, Source::kRedis) << redis.last_error();
    const std::string where =
        "step " + std::to_string(step) + (spread ? " (several keys)" : " (one key)");
    expect_same(l, r.decision, where + " combined");
    for (std::size_t i = 0; i < le.size(); ++i)
      expect_same(le[i], re[i], where + " limit " + std::to_string(i));
    if (::testing::Test::HasFailure()) return;
  }
}

// A limit named twice or more in one acquire_many (the same policy and key,
// so the same Redis key in one script call) against Limiter::acquire_many_at,
// for every algorithm the tier decides: each mention is decided for the
// costs of the mentions so far together (all or nothing), so 2 + 2 on a
// capacity of 4 charges 4 and 3 + 3 charges nothing.
class RedisTierNamedTwice : public RedisTier {
 protected:
  void SetUp() override {
    RedisTier::SetUp();
    if (IsSkipped()) return;
    redis_ = std::make_unique<RedisLimiter>(options_for(*server_, true));
    name_ = std::make_unique<ScopedName>("redis-dup");
    Options o;
    o.name = name_->str();
    o.capacity = 256;
    o.log_entries = 16;
    local_ = std::make_unique<Limiter>(Limiter::create(o));
    // Capacity 4 each; periods dividing table_origin_us().
    PolicySpec drf{"d-log-drf", Algorithm::kSlidingLog, parse_rate("4/s"), 0, OnFull::kDeny};
    drf.wait = LogWait::kDrf;
    specs_ = {
        {"d-gcra", Algorithm::kGcra, parse_rate("4/s"), 4, OnFull::kDeny},
        {"d-leaky", Algorithm::kLeakyBucket, parse_rate("2/s"), 4, OnFull::kDeny},
        {"d-tb", Algorithm::kTokenBucket, Rate{2, milliseconds(500)}, 4, OnFull::kDeny},
        {"d-fw", Algorithm::kFixedWindow, parse_rate("4/s"), 0, OnFull::kDeny},
        {"d-sw", Algorithm::kSlidingWindow, parse_rate("4/2s"), 0, OnFull::kDeny},
        {"d-qp", Algorithm::kQuietPeriod, parse_rate("4/s"), 0, OnFull::kDeny},
        {"d-log", Algorithm::kSlidingLog, parse_rate("4/s"), 0, OnFull::kDeny},
        drf,
    };
    for (const PolicySpec& s : specs_) {
      rid_.push_back(redis_->add_policy(TierPolicy{s}));
      lid_.push_back(local_->add_policy(s));
    }
  }

  // Both tiers decide `req` (policy indices into specs_) at t_us; every
  // decision must agree. Returns Redis's combined decision.
  Decision both(const std::vector<std::tuple<std::size_t, std::string, u64>>& req, u64 t_us,
                const std::string& where) {
    std::vector<Request> rr, lr;
    for (const auto& [p, key, cost] : req) {
      rr.push_back(Request{rid_[p], key, cost});
      lr.push_back(Request{lid_[p], key, cost});
    }
    std::vector<Decision> re(rr.size()), le(lr.size());
    const Decision l = local_->acquire_many_at(lr, now_of(t_us), le);
    const TierDecision r = redis_->acquire_many_at(rr, microseconds(t_us), re);
    EXPECT_EQ(r.source, Source::kRedis) << where << ": " << redis_->last_error();
    expect_same(l, r.decision, where + " combined");
    for (std::size_t i = 0; i < le.size(); ++i)
      expect_same(le[i], re[i], where + " mention " + std::to_string(i));
    return r.decision;
  }
  // The stored state of (p, key) in both tiers, compared through a cost-0
  // acquire (which stores nothing in either).
  Decision look(std::size_t p, const std::string& key, u64 t_us, const std::string& where) {
    const Decision l = local_->acquire_at(lid_[p], key, 0, now_of(t_us));
    const TierDecision r = redis_->acquire_at(rid_[p], key, 0, microseconds(t_us));
    EXPECT_EQ(r.source, Source::kRedis) << where << ": " << redis_->last_error();
    expect_same(l, r.decision, where + " stored state of " + key);
    return r.decision;
  }
  void reset(std::size_t p, const std::string& key) { redis_->reset(rid_[p], key); }
  Nanos now_of(u64 t_us) const { return Nanos((t_us - base_) * 1000); }

  const u64 base_ = table_origin_us();
  std::unique_ptr<RedisLimiter> redis_;
  std::unique_ptr<ScopedName> name_;
  std::unique_ptr<Limiter> local_;
  std::vector<PolicySpec> specs_;
  std::vector<PolicyId> rid_, lid_;
};

TEST_F(RedisTierNamedTwice, ALimitNamedTwiceIsChargedTwiceOrNotAtAll) {
  Raw raw(*server_);
  const u64 t0 = base_ + 1'000, t1 = base_ + 101'000;
  const u64 kNever = ~u64{0};
  for (std::size_t p = 0; p < specs_.size(); ++p) {
    const std::string name = specs_[p].name;
    SCOPED_TRACE(name);
    // Keys of their own per algorithm: another algorithm's limits below
    // share them, and the local limiter keeps its buckets.
    const std::string n = std::to_string(p);
    const std::string fits = "fits" + n, over = "over" + n, wait = "wait" + n, huge = "huge" + n;
    const std::string mix = "mix" + n, full = "full" + n, undo = "undo" + n;
    const std::size_t other = (p + 1) % specs_.size();
    for (const std::string& k : {fits, over, wait, huge, mix, full, undo}) {
      reset(p, k);
      reset(other, k);
    }
    // 2 + 2 fit a fresh bucket of 4: both charged, nothing left.
    EXPECT_TRUE(both({{p, fits, 2}, {p, fits, 2}}, t0, "2+2").allowed);
    EXPECT_EQ(look(p, fits, t0, "after 2+2").remaining, 0u) << "2 + 2 charged only 2";
    EXPECT_FALSE(both({{p, fits, 1}}, t0, "1 after 2+2").allowed);

    // 3 + 3 do not: refused as a cost of 6 is, nothing stored, in one
    // round trip (the script is loaded by now).
    const std::uint64_t trips = redis_->round_trips();
    const Decision no = both({{p, over, 3}, {p, over, 3}}, t0, "3+3");
    EXPECT_EQ(redis_->round_trips(), trips + 1);
    EXPECT_FALSE(no.allowed) << "3 + 3 admitted on a capacity of 4";
    EXPECT_EQ(no.reason, Reason::kCostTooHigh);
    EXPECT_EQ(no.retry_after, Nanos::max());
    EXPECT_EQ(raw.integer("EXISTS", redis_->redis_key(rid_[p], over)), 0);
    EXPECT_EQ(look(p, over, t0, "after 3+3").remaining, 4u);

    // 1 + 2 on a bucket with 2 left: refused with the retry-after of 3.
    EXPECT_TRUE(both({{p, wait, 2}}, t0, "2 first").allowed);
    const Decision w = both({{p, wait, 1}, {p, wait, 2}}, t1, "1+2");
    EXPECT_FALSE(w.allowed);
    EXPECT_GT(w.retry_after, Nanos(0));
    EXPECT_LT(w.retry_after, Nanos::max());
    look(p, wait, t1, "after 1+2");

    // Costs whose sum passes 2^64 saturate: never fits, nothing taken.
    const Decision h = both({{p, huge, kNever}, {p, huge, 2}, {p, huge, kNever}}, t1, "huge");
    EXPECT_EQ(h.reason, Reason::kCostTooHigh);
    EXPECT_EQ(raw.integer("EXISTS", redis_->redis_key(rid_[p], huge)), 0);

    // With another limit of the same key (one script call) ...
    EXPECT_TRUE(both({{p, mix, 1}, {other, mix, 1}, {p, mix, 2}}, t0, "mixed").allowed);
    EXPECT_EQ(look(p, mix, t0, "after mixed").remaining, 1u);
    // ... and of another key (another call): its refusal gives back both
    // mentions' charges.
    EXPECT_TRUE(both({{other, full, 4}}, t0, "fill other").allowed);
    EXPECT_FALSE(both({{p, undo, 2}, {other, full, 1}, {p, undo, 2}}, t0, "undo").allowed);
    EXPECT_EQ(look(p, undo, t0, "after undo").remaining, 4u) << "a refused request charged";
  }
}

// One limit named 1000 times (mostly cost 0) in one script call, and a
// log named with it: the same rule, the same decisions.
TEST_F(RedisTierNamedTwice, ALimitNamedAThousandTimes) {
  const u64 t0 = base_ + 2'000;
  for (const std::size_t p : {std::size_t{0}, std::size_t{6}}) {
    SCOPED_TRACE(specs_[p].name);
    const std::string key = "thousand" + std::to_string(p);
    reset(p, key);
    std::vector<std::tuple<std::size_t, std::string, u64>> req(1000, {p, key, 0});
    std::get<2>(req[2]) = 1;
    std::get<2>(req[700]) = 3;
    EXPECT_TRUE(both(req, t0, "1 + 3 of 1000").allowed);
    EXPECT_EQ(look(p, key, t0, "after 1000").remaining, 0u);
    std::get<2>(req[999]) = 1;
    EXPECT_FALSE(both(req, t0, "1 + 3 + 1 of 1000").allowed);
    const std::string fresh = key + "f";
    reset(p, fresh);
    std::get<2>(req[2]) = 0;
    for (auto& r : req) std::get<1>(r) = fresh;
    std::get<2>(req[0]) = 4;
    EXPECT_EQ(both(req, t0, "4 + 1 of 1000").reason, Reason::kCostTooHigh);
    EXPECT_EQ(look(p, fresh, t0, "after 4 + 1").remaining, 4u);
  }
}

// A request of several keys is one script call per key: a quiet period
// alone in its call that refuses is neither blocked nor restarted (no call
// of a multi-limit request writes on a refusal), as in the local tier.
TEST_F(RedisTierNamedTwice, AQuietPeriodAloneInItsCallIsNotBlockedByARefusal) {
  const std::size_t qp = 5, gcra = 0;
  ASSERT_EQ(specs_[qp].algorithm, Algorithm::kQuietPeriod);
  const u64 t0 = base_ + 3'000, t1 = base_ + 203'000;
  for (const char* k : {"qa", "qb"}) {
    reset(qp, k);
    reset(gcra, k);
  }
  EXPECT_TRUE(both({{qp, "qa", 2}}, t0, "2 first").allowed);
  EXPECT_FALSE(both({{qp, "qa", 3}, {gcra, "qb", 1}}, t1, "3 of 2 left").allowed);
  EXPECT_EQ(look(qp, "qa", t1, "after the refusal").remaining, 2u) << "blocked";
  EXPECT_TRUE(both({{qp, "qa", 2}, {gcra, "qb", 1}}, t1, "2 of 2 left").allowed);
}

// Random requests over a few limits and keys, mentions repeated, on an
// injected clock: every decision and the stored states agree with the
// local limiter, call by call.
TEST_F(RedisTierNamedTwice, RandomRequestsWithRepeatedLimitsDecideAsTheLocalLimiter) {
  const char* keys[] = {"ra", "rb"};
  for (std::size_t p = 0; p < specs_.size(); ++p) {
    for (const char* k : keys) reset(p, k);
  }
  std::mt19937_64 rng(23);
  u64 t_us = base_ + 555;
  int admitted = 0, refused = 0;
  for (int step = 0; step < 300; ++step) {
    t_us += rng() % 5 == 0 ? 700'000 : rng() % 120'000;
    // One algorithm, sometimes with a second one: a key and its twin.
    const std::size_t p = rng() % specs_.size(), q = rng() % specs_.size();
    std::vector<std::tuple<std::size_t, std::string, u64>> req;
    const std::size_t n = 2 + rng() % 3;
    for (std::size_t i = 0; i < n; ++i) {
      const u64 costs[] = {0, 1, 1, 2, 2, 3, 4, 5};
      const std::size_t pol = rng() % 4 == 0 ? q : p;
      req.emplace_back(pol, keys[rng() % 4 == 0 ? 1 : 0], costs[rng() % std::size(costs)]);
    }
    std::string where = "step " + std::to_string(step) + ":";
    for (const auto& [pol, key, cost] : req)
      where += " " + specs_[pol].name + "/" + key + "/" + std::to_string(cost);
    (both(req, t_us, where).allowed ? admitted : refused) += 1;
    for (const auto& [pol, key, cost] : req) look(pol, key, t_us, where);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(admitted, 40);
  EXPECT_GT(refused, 40);
}

// The sliding log (a sorted set per key in Redis) against the segment's
// log: the same table of (time, cost, one limit or several)
// gives the same five values, with the exact and the DRF retry_after.
TEST_F(RedisTier, SlidingLogDecidesAsTheLocalLogOnTheSameTables) {
  RedisLimiter redis(options_for(*server_, true));
  ScopedName name("redis-log");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  o.log_entries = 16;
  Limiter local = Limiter::create(o);
  PolicySpec exact{"log-exact", Algorithm::kSlidingLog, parse_rate("10/2s"), 0, OnFull::kDeny};
  PolicySpec drf{"log-drf", Algorithm::kSlidingLog, Rate{5, milliseconds(300)}, 0, OnFull::kDeny};
  drf.wait = LogWait::kDrf;
  const PolicySpec window{"log-gcra", Algorithm::kGcra, parse_rate("8/s"), 8, OnFull::kDeny};
  std::vector<PolicyId> rid, lid;
  for (const PolicySpec& s : {exact, drf, window}) {
    rid.push_back(redis.add_policy(TierPolicy{s}));
    lid.push_back(local.add_policy(s));
  }
  const u64 base = table_origin_us();
  for (const PolicyId id : rid) {
    for (const char* k : {"a", "b"}) redis.reset(id, k);
  }
  std::mt19937_64 rng(11);
  u64 t_us = base + 777;
  int allowed = 0, denied = 0;
  for (int step = 0; step < 600; ++step) {
    t_us += rng() % 6 == 0 ? 400'000 : rng() % 50'000;
    const Nanos now((t_us - base) * 1000);
    const std::size_t p = rng() % 2;
    const char* key = rng() % 3 == 0 ? "b" : "a";
    const u64 costs[] = {0, 1, 1, 1, 2, 3, 5, 11};
    const u64 cost = costs[rng() % std::size(costs)];
    const unsigned what = rng() % 10;
    const std::string where = "step " + std::to_string(step) + " t+" + std::to_string(t_us - base) +
                              "us cost " + std::to_string(cost);
    if (what == 1) {
      // Both logs and a GCRA limit of the same key, all or nothing.
      const Request rr[] = {{rid[0], key, cost}, {rid[1], key, 1}, {rid[2], key, 1}};
      const Request lr[] = {{lid[0], key, cost}, {lid[1], key, 1}, {lid[2], key, 1}};
      Decision re[3], le[3];
      const Decision l = local.acquire_many_at(lr, now, le);
      const TierDecision r = redis.acquire_many_at(rr, microseconds(t_us), re);
      ASSERT_EQ(r.source, Source::kRedis) << redis.last_error();
      expect_same(l, r.decision, where + " many");
      for (int i = 0; i < 3; ++i) expect_same(le[i], re[i], where + " many " + std::to_string(i));
    } else {
      const Decision l = local.acquire_at(lid[p], key, cost, now);
      const TierDecision r = redis.acquire_at(rid[p], key, cost, microseconds(t_us));
      ASSERT_EQ(r.source, Source::kRedis) << redis.last_error();
      expect_same(l, r.decision, where + (p == 0 ? " exact" : " drf"));
      if (cost > 0) (l.allowed ? allowed : denied) += 1;
    }
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(allowed, 50);
  EXPECT_GT(denied, 50);
  // A log's key holds one member per live admission and expires with it.
  Raw raw(*server_);
  EXPECT_GE(raw.integer("ZCARD", redis.redis_key(rid[0], "a")), 0);
  // The core's cap on a log's count holds here too.
  try {
    redis.add_policy(TierPolicy{
        PolicySpec{"log-huge", Algorithm::kSlidingLog, parse_rate("200000/s"), 0, OnFull::kDeny}});
    ADD_FAILURE() << "a sliding log of 200000 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at most 4096"), std::string::npos) << e.what();
  }
}

// The sliding log on Redis's own clock: exactly `count` in a window from
// forked processes, a refund gives back the newest admission, and the key
// expires when its last admission leaves the window.
TEST_F(RedisTier, SlidingLogAdmitsExactlyTheCountFromForkedProcesses) {
  RedisLimiter redis(options_for(*server_, false));
  const PolicyId id = redis.add_policy(TierPolicy{
      PolicySpec{"log-real", Algorithm::kSlidingLog, parse_rate("50/1h"), 0, OnFull::kDeny}});
  redis.reset(id, "k");
  Shared<std::atomic<u64>> admitted(1);
  const auto pids = fork_workers(4, [&](int) {
    for (int i = 0; i < 30; ++i) {
      const TierDecision d = redis.acquire(id, "k");
      if (d.source != Source::kRedis) return 3;
      if (d.decision.allowed) admitted->fetch_add(1);
    }
    return 0;
  });
  EXPECT_EQ(wait_all(pids), 0);
  EXPECT_EQ(admitted->load(), 50u);
  Raw raw(*server_);
  EXPECT_EQ(raw.integer("ZCARD", redis.redis_key(id, "k")), 50);
  const long long ttl = raw.integer("PTTL", redis.redis_key(id, "k"));
  EXPECT_GT(ttl, 3'000'000);
  EXPECT_LE(ttl, 3'600'000);
  const TierDecision back = redis.refund(id, "k", 2);
  EXPECT_EQ(back.decision.remaining, 2u);
  EXPECT_EQ(raw.integer("ZCARD", redis.redis_key(id, "k")), 48);
  EXPECT_TRUE(redis.acquire(id, "k", 2).decision.allowed);
  EXPECT_FALSE(redis.acquire(id, "k").decision.allowed);
}

// Concurrency leases in Redis against the segment's: the same sequence of
// takes (random costs) and releases gives the same decisions; acquire() on
// the policy needs a lease, as in the segment.
TEST_F(RedisTier, ConcurrencyLeasesDecideAsTheSegmentsLeases) {
  RedisLimiter redis(options_for(*server_, false));
  ScopedName name("redis-conc");
  Options o;
  o.name = name.str();
  o.capacity = 64;
  Limiter local = Limiter::create(o);
  const PolicySpec spec{"conc", Algorithm::kConcurrency, Rate{5, Nanos(0)}, 0, OnFull::kDeny};
  TierPolicy tp{spec};
  tp.lease_ttl = std::chrono::seconds(600);
  const PolicyId rid = redis.add_policy(tp);
  const PolicyId lid = local.add_policy(spec);
  redis.reset(rid, "k");
  std::vector<RedisLease> rheld;
  std::vector<Lease> lheld;
  std::mt19937_64 rng(5);
  int granted = 0, refused = 0;
  for (int step = 0; step < 300; ++step) {
    const std::string where = "step " + std::to_string(step);
    if (!rheld.empty() && rng() % 3 == 0) {
      const std::size_t i = rng() % rheld.size();
      EXPECT_TRUE(redis.release(rheld[i])) << where;
      EXPECT_FALSE(redis.release(rheld[i])) << where << ": released twice";
      EXPECT_TRUE(lheld[i].release());
      rheld.erase(rheld.begin() + static_cast<std::ptrdiff_t>(i));
      lheld.erase(lheld.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    const u64 costs[] = {0, 1, 1, 1, 2, 3, 6};
    const u64 cost = costs[rng() % std::size(costs)];
    RedisLease r = redis.lease(rid, "k", cost);
    Lease l = local.lease(lid, "k", cost);
    ASSERT_EQ(r.decision.source, Source::kRedis) << redis.last_error();
    expect_same(l.decision(), r.decision.decision, where + " cost " + std::to_string(cost));
    EXPECT_EQ(r.held, l.held()) << where;
    (r.held ? granted : refused) += 1;
    if (r.held) {
      EXPECT_TRUE(redis.renew(r)) << where;
      rheld.push_back(std::move(r));
      lheld.push_back(std::move(l));
    }
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(granted, 40);
  EXPECT_GT(refused, 40);
  const TierDecision a = redis.acquire(rid, "k");
  EXPECT_FALSE(a.decision.allowed);
  EXPECT_EQ(a.decision.reason, Reason::kNeedsLease);
  for (RedisLease& r : rheld) EXPECT_TRUE(redis.release(r));
  TierPolicy bad{spec};
  bad.lease_ttl = milliseconds(0);
  EXPECT_THROW(redis.add_policy(bad), Error);
}

// A lease held by a process that dies (SIGKILL, no release) is free again
// once its TTL has passed in Redis; a renewed lease outlives its first
// TTL; an expired one cannot be renewed.
TEST_F(RedisTier, LeasesOfADeadHolderExpireAfterTheirTtlAndLiveOnesCanBeRenewed) {
  RedisLimiter redis(options_for(*server_, false));
  TierPolicy tp{
      PolicySpec{"conc-ttl", Algorithm::kConcurrency, Rate{2, Nanos(0)}, 0, OnFull::kDeny}};
  tp.lease_ttl = milliseconds(1500);
  const PolicyId id = redis.add_policy(tp);
  redis.reset(id, "k");
  Shared<std::atomic<u64>> taken(1);
  const auto pids = fork_workers(1, [&](int) {
    RedisLease l = redis.lease(id, "k", 2);
    if (!l.held) return 3;
    taken->store(1);
    for (;;) ::pause();  // killed holding it
  });
  wait_for(*taken, 1);
  const auto since = std::chrono::steady_clock::now();
  ::kill(pids[0], SIGKILL);
  wait_all(pids, /*killed_ok=*/true);
  RedisLease mine = redis.lease(id, "k");
  if (std::chrono::steady_clock::now() - since < milliseconds(1000)) {
    EXPECT_FALSE(mine.held) << "the dead holder's units were free before its TTL";
  }
  // Free again once the TTL passes (polled; 30 s at most on a loaded machine).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!mine.held && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(50));
    mine = redis.lease(id, "k");
  }
  ASSERT_TRUE(mine.held) << redis.last_error();
  EXPECT_EQ(mine.decision.decision.remaining, 1u);
  // Renewed every 300 ms for more than two TTLs: still held, still counted.
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < milliseconds(3200)) {
    ASSERT_TRUE(redis.renew(mine));
    std::this_thread::sleep_for(milliseconds(300));
  }
  EXPECT_EQ(redis.lease(id, "k", 2).decision.decision.remaining, 1u);  // refused: 1 in flight
  // Left to expire (the key is gone from Redis), it cannot be renewed.
  Raw raw(*server_);
  while (raw.integer("EXISTS", redis.redis_key(id, "k")) == 1 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(60))
    std::this_thread::sleep_for(milliseconds(50));
  EXPECT_FALSE(redis.renew(mine));
  EXPECT_FALSE(mine.held);
  EXPECT_FALSE(redis.release(mine));
}

// Real time (Redis TIME): a charged key expires when its bucket is full
// again; a refund to full deletes it; keys are hash-tagged per key.
TEST_F(RedisTier, KeysExpireWhenTheBucketIsFullAgain) {
  RedisLimiter redis(options_for(*server_, false));
  Raw raw(*server_);
  const PolicyId id = redis.add_policy(
      TierPolicy{{"per-min", Algorithm::kGcra, parse_rate("1/m"), 2, OnFull::kDeny}});
  const std::string key = redis.redis_key(id, "exp");
  EXPECT_EQ(key, "shmlimit:{exp}:per-min");
  redis.reset(id, "exp");
  const TierDecision d = redis.acquire(id, "exp", 2);
  ASSERT_EQ(d.source, Source::kRedis) << redis.last_error();
  ASSERT_TRUE(d.decision.allowed);
  EXPECT_EQ(d.decision.reset_after, std::chrono::minutes(2));  // two emission intervals
  const long long ttl = raw.integer("PTTL", key);
  EXPECT_GT(ttl, 60'000);   // not before the bucket is full
  EXPECT_LE(ttl, 120'000);  // and not after (ms, rounded up)
  const TierDecision back = redis.refund(id, "exp", 2);
  ASSERT_EQ(back.source, Source::kRedis);
  EXPECT_EQ(back.decision.remaining, 2u);
  EXPECT_EQ(raw.integer("EXISTS", key), 0);  // full: nothing stored
  // A peek stores nothing either.
  EXPECT_TRUE(redis.peek(id, "exp", 1).decision.allowed);
  EXPECT_EQ(raw.integer("EXISTS", key), 0);
}

// SCRIPT FLUSH (or a restarted server): the next EVALSHA gets NOSCRIPT, the
// client loads the script again and the decision still comes from Redis.
TEST_F(RedisTier, ScriptIsReloadedAfterNoscript) {
  RedisLimiter redis(options_for(*server_, false));
  Raw raw(*server_);
  const PolicyId id = redis.add_policy(
      TierPolicy{{"reload", Algorithm::kFixedWindow, parse_rate("3/m"), 0, OnFull::kDeny}});
  redis.reset(id, "r");
  ASSERT_TRUE(redis.acquire(id, "r").decision.allowed) << redis.last_error();
  EXPECT_EQ(raw.status("SCRIPT FLUSH"), "OK");
  const TierDecision d = redis.acquire(id, "r");
  EXPECT_EQ(d.source, Source::kRedis) << redis.last_error();
  EXPECT_TRUE(d.decision.allowed);
  EXPECT_EQ(d.decision.remaining, 1u);  // the first charge survived the flush
}

TEST_F(RedisTier, PoliciesTheScriptCannotRepresentAreRefusedClearly) {
  RedisLimiter redis(options_for(*server_, false));
  const auto refused = [&](const TierPolicy& p, const std::string& words) {
    try {
      redis.add_policy(p);
      ADD_FAILURE() << "accepted " << p.spec.name;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused(TierPolicy{{"long", Algorithm::kGcra, parse_rate("1/20d"), 1, OnFull::kDeny}}, "2^50");
  refused(TierPolicy{{"win", Algorithm::kSlidingWindow, parse_rate("5/7d"), 0, OnFull::kDeny}},
          "2^50");
  refused(TierPolicy{{"share", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny},
                     WhenDown::kLocalShare,
                     0.5},
          "HybridLimiter");
  refused(TierPolicy{{"bad name!", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}},
          "policy name");
  const PolicyId id =
      redis.add_policy(TierPolicy{{"same", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}});
  EXPECT_EQ(
      redis.add_policy(TierPolicy{{"same", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}})
          .index,
      id.index);
  EXPECT_THROW(
      redis.add_policy(TierPolicy{{"same", Algorithm::kGcra, parse_rate("6/s"), 5, OnFull::kDeny}}),
      Error);
}

// The Redis tier validates a spec with the core's normalize_policy_spec:
// what Limiter::add_policy refuses, it refuses with the same message.
TEST_F(RedisTier, SpecsAreValidatedByTheCoresOneValidator) {
  RedisLimiter redis(options_for(*server_, false));
  const PolicySpec specs[] = {
      {"win", Algorithm::kFixedWindow, parse_rate("5/s"), 3,
       OnFull::kDeny},                                                   // burst dropped before
      {"p\xc3", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny},  // half a UTF-8 character
      {"drf", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny, LogWait::kDrf},
      {"zero", Algorithm::kGcra, Rate{0, std::chrono::seconds(1)}, 5, OnFull::kDeny},
  };
  for (const PolicySpec& spec : specs) {
    std::string core;
    try {
      (void)normalize_policy_spec(spec);
      ADD_FAILURE() << "the core accepts " << spec.name;
    } catch (const Error& e) {
      core = e.what();
    }
    try {
      redis.add_policy(TierPolicy{spec});
      ADD_FAILURE() << "the Redis tier accepts " << spec.name;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(std::string(e.what()), core);
    }
  }
  // A window's burst equal to its count is the count, as in the core.
  (void)redis.add_policy(
      TierPolicy{{"win", Algorithm::kFixedWindow, parse_rate("5/s"), 5, OnFull::kDeny}});
}

// The production script has no path for an injected time: an ARGV "now"
// sent straight to it (bypassing the client) is ignored and TIME is used.
TEST_F(RedisTier, ProductionScriptIgnoresAnInjectedTime) {
  Raw raw(*server_);
  const std::string script = detail::kRedisLimiterLua;
  ASSERT_NE(script.find("local TEST_CLOCK = false"), std::string::npos);
  const std::string key = "shmlimit:{injected}:p";
  raw.integer("DEL", key);
  // EVAL script 1 key acquire now=1000000us need=0 gcra count=1 period=60s burst=1 T=60s align=1
  // cost=1
  redisContext* ctx = redisConnect("127.0.0.1", server_->port());
  ASSERT_TRUE(ctx != nullptr && ctx->err == 0);
  const char* argv[] = {"EVAL", script.c_str(), "1", key.c_str(),   "acquire", "1000000", "0", "1",
                        "1",    "60000000000",  "1", "60000000000", "1",       "1"};
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(ctx, static_cast<int>(std::size(argv)), argv, nullptr));
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->type, REDIS_REPLY_ARRAY);
  EXPECT_EQ(r->element[0]->integer, 1);  // admitted
  freeReplyObject(r);
  r = static_cast<redisReply*>(redisCommand(ctx, "HGET %s o", key.c_str()));
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->type, REDIS_REPLY_STRING);
  const long long origin_us = std::stoll(std::string(r->str, r->len));
  freeReplyObject(r);
  redisFree(ctx);
  EXPECT_GT(origin_us, 1'600'000'000'000'000LL);  // Redis's TIME (after 2020), not the injected 1 s
}

// Nothing listens: each policy's WhenDown answer, the reason in last_error,
// and no network attempt until the backoff has passed (a server started
// meanwhile is not seen before then).
TEST(RedisTierDown, UnreachableServerGetsTheChosenAnswerAndCallsFailFastDuringTheBackoff) {
  if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed";
  RedisServer server;
  RedisOptions o = options_for(server, false);
  o.backoff_initial = std::chrono::minutes(10);
  o.backoff_max = std::chrono::minutes(10);
  server.stop();
  RedisLimiter redis(o);
  const PolicyId closed =
      redis.add_policy(TierPolicy{{"c", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}});
  const PolicyId open = redis.add_policy(TierPolicy{
      {"o", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}, WhenDown::kFailOpen});
  const TierDecision c = redis.acquire(closed, "k");
  EXPECT_EQ(c.source, Source::kFailClosed);
  EXPECT_FALSE(c.decision.allowed);
  EXPECT_GT(c.decision.retry_after, std::chrono::minutes(5));  // until the next attempt
  EXPECT_NE(redis.last_error().find("connect"), std::string::npos) << redis.last_error();
  server.start();
  const TierDecision d = redis.acquire(open, "k");
  EXPECT_EQ(d.source, Source::kFailOpen);  // still backing off: the server was not asked
  EXPECT_TRUE(d.decision.allowed);
  EXPECT_EQ(redis.round_trips(), 0u);
  EXPECT_FALSE(redis.available());
  // A fresh client (no backoff) reaches the same server at once.
  RedisLimiter fresh(options_for(server, false));
  const PolicyId f =
      fresh.add_policy(TierPolicy{{"c", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}});
  EXPECT_EQ(fresh.acquire(f, "k").source, Source::kRedis) << fresh.last_error();
}

// AUTH: the right password decides in Redis; a wrong one is a clear error
// and the policy's fail-closed answer.
TEST(RedisTierAuth, PasswordIsSentAndAWrongOneFailsClosedWithTheReason) {
  if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed";
  RedisServer server(RedisServer::Transport::kTcp, {"--requirepass", "s3cret"});
  RedisOptions o = options_for(server, false);
  o.password = "s3cret";
  RedisLimiter good(o);
  const PolicyId g =
      good.add_policy(TierPolicy{{"auth", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}});
  const TierDecision ok = good.acquire(g, "a");
  EXPECT_EQ(ok.source, Source::kRedis) << good.last_error();
  EXPECT_TRUE(ok.decision.allowed);
  o.password = "wrong";
  RedisLimiter bad(o);
  const PolicyId b =
      bad.add_policy(TierPolicy{{"auth", Algorithm::kGcra, parse_rate("5/s"), 5, OnFull::kDeny}});
  const TierDecision no = bad.acquire(b, "a");
  EXPECT_EQ(no.source, Source::kFailClosed);
  EXPECT_FALSE(no.decision.allowed);
  EXPECT_GT(no.decision.retry_after.count(), 0);
  EXPECT_FALSE(bad.available());
  EXPECT_NE(bad.last_error().find("AUTH"), std::string::npos) << bad.last_error();
}

}  // namespace
}  // namespace shmlimit::test
