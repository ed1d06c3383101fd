// The hybrid tier with real processes: several "hosts" (each its own pair of
// segments, each with forked workers) lease from one real redis-server. The
// fleet never admits more than Redis admitted (the limit over the run), at
// most H * (max_batch - 1) less (tokens stranded on hosts), and exactly the
// limit with max_batch = 1. Redis killed and restarted mid-run: each
// WhenDown mode answers as documented and the tier recovers by itself.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mp.hpp"
#include "redis/lease_pool.hpp"
#include "redis_server.hpp"
#include "segment/process.hpp"
#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

using std::chrono::milliseconds;
using u64 = std::uint64_t;

// A host's two segments, removed at the end.
class HostName {
 public:
  explicit HostName(const std::string& tag) : name_(tag) { HybridLimiter::remove(name_.str()); }
  ~HostName() {
    try {
      HybridLimiter::remove(name_.str());
    } catch (...) {
    }
  }
  HostName(const HostName&) = delete;
  HostName& operator=(const HostName&) = delete;
  const std::string& str() const { return name_.str(); }

 private:
  ScopedName name_;
};

RedisOptions redis_options(const RedisServer& s) {
  RedisOptions o;
  if (s.socket().empty()) {
    o.port = s.port();
  } else {
    o.unix_socket = s.socket();
  }
  o.connect_timeout = milliseconds(30000);
  o.command_timeout = milliseconds(30000);
  o.backoff_initial = milliseconds(10);
  o.backoff_max = milliseconds(100);
  return o;
}

struct FleetResult {
  u64 admitted = 0;
  u64 attempts = 0;
  u64 round_trips = 0;
  u64 redis_admitted = 0;
};

// H hosts x W workers, each worker `attempts` acquires of cost 1 on one key
// whose Redis bucket holds `limit` (GCRA, limit per day, burst limit: no
// refill to speak of during the run).
FleetResult run_fleet(const RedisServer& server, const std::string& tag, int hosts, int workers,
                      int attempts, u64 limit, std::uint32_t max_batch) {
  std::vector<std::unique_ptr<HostName>> names;
  for (int h = 0; h < hosts; ++h)
    names.push_back(std::make_unique<HostName>(tag + "-h" + std::to_string(h)));
  const TierPolicy policy{
      {"fleet", Algorithm::kGcra, {limit, std::chrono::hours(24)}, limit, OnFull::kDeny}};
  {
    RedisLimiter admin(redis_options(server));
    const PolicyId id = admin.add_policy(policy);
    admin.reset(id, tag);
  }
  Shared<std::atomic<u64>> admitted;
  Shared<std::atomic<u64>> calls;
  Shared<std::atomic<u64>> start;
  std::vector<pid_t> pids;
  for (int h = 0; h < hosts; ++h) {
    HybridOptions o;
    o.redis = redis_options(server);
    o.name = names[static_cast<std::size_t>(h)]->str();
    o.lease_slots = 64;
    o.max_batch = max_batch;
    o.lease_ttl = std::chrono::seconds(600);  // nothing expires during the run
    o.hosts = static_cast<std::uint32_t>(hosts);
    // The host's segments exist before its workers fork, as in a prefork server.
    HybridLimiter host = HybridLimiter::open_or_create(o);
    const PolicyId id = host.add_policy(policy);
    // The parent's connection is open when the workers fork: each must open
    // its own rather than share the socket.
    const TierDecision warm = host.acquire(id, tag + "-warm");
    EXPECT_EQ(warm.source, Source::kRedis) << host.redis().last_error();
    const auto more = fork_workers(workers, [&, id](int) {
      // The inherited Redis connection is dropped and a new one opened.
      wait_for(*start, 1);
      u64 mine = 0;
      for (int i = 0; i < attempts; ++i) {
        const TierDecision d = host.acquire(id, tag);
        if (d.source != Source::kRedis && d.source != Source::kLease)
          return 3;  // Redis is up throughout
        if (d.decision.reason != Reason::kOk) return 4;
        if (d.decision.allowed) ++mine;
      }
      admitted->fetch_add(mine);
      calls->fetch_add(host.round_trips());
      return 0;
    });
    pids.insert(pids.end(), more.begin(), more.end());
  }
  start->store(1, std::memory_order_release);
  EXPECT_EQ(wait_all(pids), 0) << "a worker saw a decision not from Redis or its lease";
  FleetResult r;
  r.admitted = admitted->load();
  r.attempts = static_cast<u64>(hosts) * static_cast<u64>(workers) * static_cast<u64>(attempts);
  r.round_trips = calls->load();
  RedisLimiter check(redis_options(server));
  const PolicyId id = check.add_policy(policy);
  const TierDecision peek = check.peek(id, tag, 1);
  EXPECT_EQ(peek.source, Source::kRedis) << check.last_error();
  r.redis_admitted = limit - peek.decision.remaining;  // day-long refill: at most 1 back per 86 s
  return r;
}

class Hybrid : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed";
    server_ = std::make_unique<RedisServer>();
  }
  std::unique_ptr<RedisServer> server_;
};

// Bound: admitted <= limit + H * 2 * (max_batch - 1) over any interval
// (doc/redis.md); over a whole run from a full bucket no more than Redis
// admitted, and at most H * (max_batch - 1) tokens stay stranded on hosts.
TEST_F(Hybrid, FleetOfHostsAdmitsAtMostTheLimitPlusTheBoundAndBatchesCutRedisCalls) {
  const int hosts = 3, workers = 3, attempts = 400;
  const u64 limit = 300;
  const std::uint32_t max_batch = 16;
  const FleetResult r =
      run_fleet(*server_, "fleet-batched", hosts, workers, attempts, limit, max_batch);
  const u64 bound = static_cast<u64>(hosts) * 2 * (max_batch - 1);
  EXPECT_LE(r.admitted, limit + bound);
  EXPECT_LE(r.admitted, r.redis_admitted);  // every admission spent a token Redis admitted
  EXPECT_LE(r.redis_admitted, limit);
  EXPECT_GE(r.admitted + static_cast<u64>(hosts) * (max_batch - 1),
            r.redis_admitted);           // stranded <= H*(b-1)
  EXPECT_LT(r.round_trips, r.attempts);  // leases and cached denials answer without Redis
  RecordProperty("admitted", static_cast<int>(r.admitted));
  RecordProperty("round_trips", static_cast<int>(r.round_trips));
  std::printf(
      "hybrid fleet: %d hosts x %d workers, max_batch %u: admitted %llu of limit %llu, %llu Redis "
      "calls for %llu decisions\n",
      hosts, workers, max_batch, static_cast<unsigned long long>(r.admitted),
      static_cast<unsigned long long>(limit), static_cast<unsigned long long>(r.round_trips),
      static_cast<unsigned long long>(r.attempts));
}

TEST_F(Hybrid, FleetAdmitsExactlyTheLimitWhenTheBatchIsOne) {
  const FleetResult r = run_fleet(*server_, "fleet-exact", 3, 3, 150, 200, 1);
  EXPECT_EQ(r.admitted, 200u);
  EXPECT_EQ(r.redis_admitted, 200u);
}

// One host, one process, a day-scale rate (nothing refills during the
// test). Reset must forget the tokens the host holds, not only Redis's
// bucket; a refund must reach Redis and clear the host's cached denial.
TEST_F(Hybrid, ResetForgetsTheHostsTokensAndRefundReachesPastACachedDenial) {
  HostName name("reset");
  HybridOptions o;
  o.redis = redis_options(*server_);
  o.name = name.str();
  o.lease_slots = 64;
  o.max_batch = 8;
  o.lease_ttl = milliseconds(600'000);  // held tokens stay valid for the whole test
  HybridLimiter host = HybridLimiter::open_or_create(o);
  const u64 limit = 10;
  const PolicyId id = host.add_policy(
      {{"r", Algorithm::kGcra, parse_rate("10/d"), limit, OnFull::kDeny}, WhenDown::kFailClosed});
  const auto redis_admitted = [&] {
    const TierDecision d = host.redis().peek(id, "k", 0);
    EXPECT_EQ(d.source, Source::kRedis) << host.redis().last_error();
    return limit - d.decision.remaining;
  };
  const auto admit_all = [&] {
    u64 n = 0;
    for (u64 i = 0; i < 3 * limit; ++i) n += host.acquire(id, "k").decision.allowed ? 1 : 0;
    return n;
  };

  for (int i = 0; i < 5; ++i) ASSERT_TRUE(host.acquire(id, "k").decision.allowed);
  ASSERT_GT(redis_admitted(), 5u) << "the host holds leased tokens ahead of use";
  EXPECT_TRUE(host.reset(id, "k"));
  EXPECT_EQ(redis_admitted(), 0u);
  EXPECT_EQ(host.batch(id, "k"), 1u);
  EXPECT_EQ(admit_all(), limit) << "tokens leased before the reset must not be spent after it";
  EXPECT_EQ(redis_admitted(), limit);

  // Denied now, and the denial is cached on the host (no Redis call).
  const u64 calls = host.round_trips();
  const TierDecision cached = host.acquire(id, "k");
  EXPECT_FALSE(cached.decision.allowed);
  EXPECT_EQ(cached.source, Source::kLease);
  EXPECT_EQ(host.round_trips(), calls);

  const TierDecision back = host.refund(id, "k", 3);
  EXPECT_EQ(back.source, Source::kRedis);
  EXPECT_EQ(back.decision.remaining, 3u);
  EXPECT_EQ(admit_all(), 3u);
  EXPECT_EQ(redis_admitted(), limit);
}

// A small pool serves many distinct keys: a slot whose tokens are all spent
// is reclaimed for the next key, while a slot that still holds live tokens
// is never taken from its key.
TEST_F(Hybrid, LeaseSlotsOfGoneKeysAreReused) {
  HostName name("reuse");
  HybridOptions o;
  o.redis = redis_options(*server_);
  o.name = name.str();
  o.lease_slots = 16;
  o.max_batch = 8;
  o.lease_ttl = milliseconds(600'000);  // nothing expires: only spending frees a slot
  HybridLimiter host = HybridLimiter::open_or_create(o);
  const PolicyId id =
      host.add_policy({{"reuse", Algorithm::kGcra, parse_rate("1000/d"), 1000, OnFull::kDeny}});
  // Per key: leases of 1, 1, then 2 (one token deposited), then that token
  // spent from the pool. The slot then holds none and may go to the next key.
  const Source expected[] = {Source::kRedis, Source::kRedis, Source::kRedis, Source::kLease};
  for (int k = 0; k < 200; ++k) {
    const std::string key = "gone-" + std::to_string(k);
    for (int i = 0; i < 4; ++i) {
      const TierDecision d = host.acquire(id, key);
      ASSERT_TRUE(d.decision.allowed) << key << " #" << i << " " << host.redis().last_error();
      ASSERT_EQ(d.source, expected[i])
          << key << " #" << i << ": 200 keys through 16 slots need reuse";
    }
  }
  // 16 keys that keep a token each fill the pool; a 17th key finds no slot
  // (Redis decides it directly) and none of the 16 loses its token.
  for (int k = 0; k < 16; ++k) {
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(host.acquire(id, "held-" + std::to_string(k)).decision.allowed);
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(host.acquire(id, "one-too-many").source, Source::kRedis);
  EXPECT_EQ(host.batch(id, "one-too-many"), 0u) << "no slot was taken from a key holding tokens";
  for (int k = 0; k < 16; ++k)
    EXPECT_EQ(host.acquire(id, "held-" + std::to_string(k)).source, Source::kLease) << k;
}

// The leaser word names its holder by ProcessToken (pid + start time): a
// live holder keeps it, a SIGKILLed one loses it, and so does a token whose
// pid is alive but belongs to another process now (pid reuse), which
// kill(pid, 0) would have called alive.
TEST_F(Hybrid, DeadLeaserIsDetectedByItsTokenNotItsPid) {
  HostName name("leaser");
  HybridOptions o;
  o.redis = redis_options(*server_);
  o.name = name.str();
  o.lease_slots = 16;
  o.max_batch = 8;
  HybridLimiter host = HybridLimiter::open_or_create(o);
  const PolicyId id =
      host.add_policy({{"leaser", Algorithm::kGcra, parse_rate("1000/d"), 1000, OnFull::kDeny}});
  ASSERT_EQ(host.acquire(id, "k").source, Source::kRedis) << host.redis().last_error();
  detail::LeasePool pool(detail::LeasePool::name_of(name.str()), o.lease_slots, o.mode);
  detail::SlotRef ref;
  ASSERT_TRUE(pool.find("leaser", "k", &ref));
  std::atomic<u64>& leaser = pool.side(ref.index, detail::kSideLeaser);
  const auto hold = [&](u64 token) {
    leaser.store(token);
    pool.side(ref.index, detail::kSideLeaserSince).store(pool.now_ms());  // not stalled
  };

  // A live holder (a child that waits to be killed) keeps the word.
  Shared<std::atomic<u64>> child_token;
  const pid_t child = fork_workers(1, [&](int) {
    child_token->store(detail::self_token());
    for (;;) ::pause();
    return 0;
  })[0];
  wait_for(*child_token, 1);
  hold(child_token->load());
  EXPECT_EQ(host.acquire(id, "k").source, Source::kRedis);
  EXPECT_EQ(leaser.load(), child_token->load()) << "a live leaser is not replaced";

  // SIGKILLed (and reaped: its pid may be reused at once): replaced.
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_all({child}, /*killed_ok=*/true), 0);
  EXPECT_TRUE(host.acquire(id, "k").decision.allowed);
  EXPECT_EQ(leaser.load(), 0u)
      << "the dead leaser's word was taken over, the lease made and the word freed";

  // Our own pid with another start time: a process that reused a dead
  // leaser's pid. kill(pid, 0) succeeds; the token says dead.
  const detail::ProcessToken me = detail::self_token();
  const detail::ProcessToken reused = (me & ~u64{0xFFFFFFFF}) | ((me + 1) & 0xFFFFFFFF);
  ASSERT_EQ(::kill(static_cast<pid_t>(detail::token_pid(reused)), 0), 0);
  ASSERT_TRUE(detail::token_is_dead(reused));
  hold(reused);
  EXPECT_TRUE(host.acquire(id, "k").decision.allowed);
  EXPECT_EQ(leaser.load(), 0u) << "a reused pid is not the leaser that died";
}

// The lease pool is a core segment of its own kind: a limiter segment at
// NAME.lease and a lease pool opened as a limiter refuse each other by
// name, and a FIFO planted at NAME.lease is refused at once (never opened
// for reading, which would block).
TEST(HybridLeasePool, RefusesAFifoAndASegmentOfTheOtherKindWithoutBlocking) {
  HostName name("kinds");
  const std::string pool_name = detail::LeasePool::name_of(name.str());
  HybridOptions o;
  o.name = name.str();
  o.lease_slots = 16;

  const std::string fifo = "/dev/shm" + pool_name;
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)HybridLimiter::open_or_create(o);
    ADD_FAILURE() << "a FIFO was accepted as the lease pool";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIncompatible) << e.what();
    EXPECT_NE(std::string(e.what()).find("FIFO"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  ::unlink(fifo.c_str());

  {
    Options lo;
    lo.name = pool_name;
    lo.capacity = 16;
    Limiter limiter = Limiter::open_or_create(lo);
    try {
      (void)HybridLimiter::open_or_create(o);
      ADD_FAILURE() << "a limiter segment was accepted as the lease pool";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kIncompatible) << e.what();
      EXPECT_NE(std::string(e.what()).find("it is a limiter segment, not a hybrid lease pool"),
                std::string::npos)
          << e.what();
    }
  }
  HybridLimiter::remove(name.str());

  HybridLimiter host = HybridLimiter::open_or_create(o);
  Options lo;
  lo.name = pool_name;
  try {
    (void)Limiter::open(lo);
    ADD_FAILURE() << "a lease pool was opened as a limiter segment";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIncompatible) << e.what();
    EXPECT_NE(std::string(e.what()).find("it is a hybrid lease pool"), std::string::npos)
        << e.what();
  }
}

// Several limits decide in Redis, all or nothing: the refused request
// charges none of them, across keys.
TEST_F(Hybrid, AcquireManyIsAllOrNothingInRedis) {
  HostName name("many");
  HybridOptions o;
  o.redis = redis_options(*server_);
  o.name = name.str();
  o.lease_slots = 64;
  HybridLimiter host = HybridLimiter::open_or_create(o);
  const PolicyId a = host.add_policy(
      {{"a", Algorithm::kGcra, parse_rate("3/d"), 3, OnFull::kDeny}, WhenDown::kFailClosed});
  const PolicyId b = host.add_policy(
      {{"b", Algorithm::kGcra, parse_rate("5/d"), 5, OnFull::kDeny}, WhenDown::kFailClosed});
  const Request both[] = {{a, "user", 1}, {b, "site", 1}};
  for (int i = 0; i < 3; ++i) {
    const TierDecision d = host.acquire_many(both);
    EXPECT_TRUE(d.decision.allowed) << i;
    EXPECT_EQ(d.source, Source::kRedis) << host.redis().last_error();
  }
  Decision each[2];
  const TierDecision refused = host.acquire_many(both, each);
  EXPECT_FALSE(refused.decision.allowed);
  EXPECT_EQ(refused.source, Source::kRedis);
  EXPECT_FALSE(each[0].allowed);
  EXPECT_TRUE(each[1].allowed);
  EXPECT_EQ(each[1].remaining, 2u);
  EXPECT_EQ(host.redis().peek(b, "site", 0).decision.remaining, 2u) << "b was given back";
  const Request unknown[] = {{a, "user", 1}, {PolicyId{99}, "x", 1}};
  EXPECT_EQ(host.acquire_many(unknown).decision.reason, Reason::kUnknownPolicy);
}

// Redis killed mid-run and restarted on the same unix socket: fail-open
// admits, fail-closed denies, local share admits exactly the host's share
// from the local segment; once Redis is back every policy decides in Redis
// again, with no call other than acquire().
TEST(HybridRedisDown, EachModeAnswersWhileRedisIsDownAndRecoversWhenItReturns) {
  if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed";
  RedisServer server(RedisServer::Transport::kUnix);
  HostName name("down");
  HybridOptions o;
  o.redis = redis_options(server);
  o.name = name.str();
  o.lease_slots = 64;
  o.max_batch = 4;
  o.lease_ttl = milliseconds(1);  // leased tokens are dropped almost at once
  HybridLimiter host = HybridLimiter::open_or_create(o);
  const Rate rate = parse_rate("10/h");
  const PolicyId open =
      host.add_policy({{"open", Algorithm::kGcra, rate, 10, OnFull::kDeny}, WhenDown::kFailOpen});
  const PolicyId closed = host.add_policy(
      {{"closed", Algorithm::kGcra, rate, 10, OnFull::kDeny}, WhenDown::kFailClosed});
  const PolicyId share = host.add_policy(
      {{"share", Algorithm::kGcra, rate, 10, OnFull::kDeny}, WhenDown::kLocalShare, 0.5});
  for (const PolicyId id : {open, closed, share}) {
    const TierDecision d = host.acquire(id, "k");
    EXPECT_EQ(d.source, Source::kRedis) << host.redis().last_error();
    EXPECT_TRUE(d.decision.allowed);
  }

  server.kill();
  std::this_thread::sleep_for(milliseconds(5));  // past lease_ttl: no leased token is left
  for (int i = 0; i < 3; ++i) {
    const TierDecision d = host.acquire(open, "k");
    EXPECT_EQ(d.source, Source::kFailOpen);
    EXPECT_TRUE(d.decision.allowed);
  }
  for (int i = 0; i < 3; ++i) {
    const TierDecision d = host.acquire(closed, "k");
    EXPECT_EQ(d.source, Source::kFailClosed);
    EXPECT_FALSE(d.decision.allowed);
    EXPECT_GT(d.decision.retry_after.count(), 0);
  }
  // Half of burst 10 on this host alone: exactly 5, from the local segment.
  int share_admitted = 0;
  for (int i = 0; i < 12; ++i) {
    const TierDecision d = host.acquire(share, "k");
    EXPECT_EQ(d.source, Source::kLocalShare);
    share_admitted += d.decision.allowed ? 1 : 0;
  }
  EXPECT_EQ(share_admitted, 5);
  EXPECT_FALSE(host.redis().available());

  // Several limits while Redis is down: a fail-closed one refuses the whole
  // request without charging the local share; otherwise the share decides
  // in the local segment and fail-open limits admit.
  const Request open_and_share[] = {{open, "m", 1}, {share, "m", 1}};
  const TierDecision both = host.acquire_many(open_and_share);
  EXPECT_TRUE(both.decision.allowed);
  EXPECT_EQ(both.source, Source::kLocalShare);
  const Request closed_and_share[] = {{closed, "m", 1}, {share, "m", 1}};
  Decision each[2];
  const TierDecision refused = host.acquire_many(closed_and_share, each);
  EXPECT_FALSE(refused.decision.allowed);
  EXPECT_EQ(refused.source, Source::kFailClosed);
  EXPECT_FALSE(each[0].allowed);
  EXPECT_EQ(each[1].remaining, 4u) << "the share was not charged";
  int share_m = 0;
  for (int i = 0; i < 6; ++i) share_m += host.acquire(share, "m").decision.allowed ? 1 : 0;
  EXPECT_EQ(share_m, 4) << "5 for the key: one taken by the admitted multi-limit request only";

  server.start();
  // Recovery needs nothing but time: the backoff (capped at 100 ms) ends and
  // the next call reconnects. A generous deadline for a loaded machine.
  for (const PolicyId id : {open, closed, share}) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    TierDecision d;
    do {
      d = host.acquire(id, "k");
      if (d.source == Source::kRedis || d.source == Source::kLease) break;
      std::this_thread::sleep_for(milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
    EXPECT_TRUE(d.source == Source::kRedis || d.source == Source::kLease) << to_string(d.source);
    EXPECT_TRUE(d.decision.allowed);  // the restarted server has no state: a full bucket
  }
  EXPECT_TRUE(host.redis().available());
}

}  // namespace
}  // namespace shmlimit::test
