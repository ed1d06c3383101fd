// Alternatives over the network: Redis (EVALSHA of a GCRA Lua
// script through hiredis) and memcached (a fixed-window counter with
// increment-with-initial through libmemcached), one hot key, as a user would
// write them. Compiled in only when bench/CMakeLists.txt finds the client
// libraries (SHMLIMIT_BENCH_HAVE_REDIS / SHMLIMIT_BENCH_HAVE_MEMCACHED) and
// run only when the server binary is found (redis-server, memcached on PATH):
// each case starts its own server on a free loopback port the first time it
// runs and stops it at the end of the run (and the server gets SIGTERM if
// the benchmark dies: PR_SET_PDEATHSIG).

#include <benchmark/benchmark.h>

#if defined(SHMLIMIT_BENCH_HAVE_REDIS) || defined(SHMLIMIT_BENCH_HAVE_MEMCACHED)

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "redis_server.hpp"  // tests/redis: the server launcher

#ifdef SHMLIMIT_BENCH_HAVE_REDIS
#include <hiredis/hiredis.h>
#endif
#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
#include <libmemcached/memcached.h>
#endif

namespace {

using shmlimit::test::RedisServer;
using shmlimit::test::ServerProcess;

#ifdef SHMLIMIT_BENCH_HAVE_REDIS
// GCRA in Lua, on the server's clock (TIME, microseconds): the usual
// "redis-gcra" script. ARGV[1] = emission interval T (us), ARGV[2] = burst.
constexpr const char* kGcraLua = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + T
if tat - now > burst * T then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return 1
)lua";

struct RedisEnv {
  RedisEnv() {
    if (!ServerProcess::on_path("redis-server")) {
      throw std::runtime_error("redis-server not found on PATH");
    }
    server = std::make_unique<RedisServer>();
    ctx = ::redisConnect("127.0.0.1", server->port());
    if (ctx == nullptr || ctx->err != 0) throw std::runtime_error("redisConnect failed");
    auto* r = static_cast<redisReply*>(::redisCommand(ctx, "SCRIPT LOAD %s", kGcraLua));
    if (r == nullptr || r->type != REDIS_REPLY_STRING) {
      if (r != nullptr) ::freeReplyObject(r);
      throw std::runtime_error("SCRIPT LOAD failed");
    }
    sha.assign(r->str, r->len);
    ::freeReplyObject(r);
  }
  ~RedisEnv() {
    if (ctx != nullptr) ::redisFree(ctx);
  }
  RedisEnv(const RedisEnv&) = delete;
  RedisEnv& operator=(const RedisEnv&) = delete;
  // 1 admitted, 0 denied, -1 error.
  int acquire(const char* key) {
    auto* r = static_cast<redisReply*>(
        ::redisCommand(ctx, "EVALSHA %s 1 %s %s %s", sha.c_str(), key, "1", "1000000000"));
    if (r == nullptr) return -1;
    const int v = r->type == REDIS_REPLY_INTEGER ? static_cast<int>(r->integer) : -1;
    ::freeReplyObject(r);
    return v;
  }
  std::unique_ptr<RedisServer> server;
  redisContext* ctx = nullptr;
  std::string sha;
};
std::unique_ptr<RedisEnv> g_redis;
#endif

#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
// Fixed window of 1 s: key "<key>:<window>", increment with initial value 1
// and a 2 s expiry (binary protocol); admitted while the count <= limit.
struct MemcachedEnv {
  MemcachedEnv() {
    if (!ServerProcess::on_path("memcached")) {
      throw std::runtime_error("memcached not found on PATH");
    }
    const int port = ServerProcess::free_port();
    std::vector<std::string> argv{
        "memcached", "-p", std::to_string(port), "-l", "127.0.0.1", "-U", "0", "-m", "64"};
    if (::geteuid() == 0) {
      argv.emplace_back("-u");
      argv.emplace_back("root");
    }
    server.start(std::move(argv), [port] { return ServerProcess::can_connect_tcp(port); });
    memc = ::memcached_create(nullptr);
    if (memc == nullptr) throw std::runtime_error("memcached_create failed");
    ::memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    ::memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    if (::memcached_server_add(memc, "127.0.0.1", static_cast<in_port_t>(port)) !=
        MEMCACHED_SUCCESS)
      throw std::runtime_error("memcached_server_add failed");
  }
  ~MemcachedEnv() {
    if (memc != nullptr) ::memcached_free(memc);
  }
  MemcachedEnv(const MemcachedEnv&) = delete;
  MemcachedEnv& operator=(const MemcachedEnv&) = delete;
  int acquire(const char* key, std::uint64_t limit) {
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    char k[96];
    const int n = std::snprintf(k, sizeof k, "%s:%lld", key, static_cast<long long>(ts.tv_sec));
    std::uint64_t value = 0;
    const memcached_return_t rc =
        ::memcached_increment_with_initial(memc, k, static_cast<std::size_t>(n), 1, 1, 2, &value);
    if (rc != MEMCACHED_SUCCESS) return -1;
    return value <= limit ? 1 : 0;
  }
  ServerProcess server;
  memcached_st* memc = nullptr;
};
std::unique_ptr<MemcachedEnv> g_memcached;
#endif

}  // namespace

#ifdef SHMLIMIT_BENCH_HAVE_REDIS
void BM_Alt_Redis_HotKey(benchmark::State& state) {
  try {
    if (!g_redis) g_redis = std::make_unique<RedisEnv>();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += g_redis->acquire("hot-key") != 1;
    if (bad != 0)
      state.SkipWithError((std::to_string(bad) + " decisions were not admitted").c_str());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
#endif

#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
void BM_Alt_Memcached_HotKey(benchmark::State& state) {
  try {
    if (!g_memcached) g_memcached = std::make_unique<MemcachedEnv>();
    std::uint64_t bad = 0;
    for (auto _ : state) bad += g_memcached->acquire("hot-key", 1'000'000'000) != 1;
    if (bad != 0)
      state.SkipWithError((std::to_string(bad) + " decisions were not admitted").c_str());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
#endif

// Stops the servers started by the cases above (called at the end of main).
void release_remote_servers() {
#ifdef SHMLIMIT_BENCH_HAVE_REDIS
  g_redis.reset();
#endif
#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
  g_memcached.reset();
#endif
}

#else

void release_remote_servers() {}

#endif
