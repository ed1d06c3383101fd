// The three tiers of one decision, in one process and one run: the local
// segment (Limiter), Redis (RedisLimiter: one EVALSHA round trip per
// decision) and the hybrid (HybridLimiter: leased batches served from shared
// memory). One hot key, GCRA "1000000000/s" burst 1e6: always admitted.
//
// Cases, in the order they run:
//   BM_Tier_Local    Limiter::acquire
//   BM_Tier_Redis    RedisLimiter::acquire against a redis-server on loopback
//   BM_Tier_Hybrid/B HybridLimiter::acquire (max_batch B = 64 (the default), 1024;
//                    lease_ttl 1 s)
//   BM_Tier_Cluster  RedisLimiter::acquire against a Redis Cluster of 3 masters
//                    on loopback (RedisOptions::cluster): the hot key's master
//   BM_Tier_Cluster_Keys  the same over 256 keys spread over the 3 masters
//   BM_Tier_HybridCluster/B  HybridLimiter over the cluster (max_batch B = 64)
// Counters: ops_per_s (per process, wall clock), round_trips_per_1k (Redis round trips per
// 1,000 decisions) and x_local (time per decision / the local case's, from
// the same run; the local case must run first, as it does by default).
//
//   ./build/bench/bench/shmlimit_bench_tiers --benchmark_min_time=1   (scripts/bench.sh runs it
//   too)
//
// The redis-server (Debian's) is started on a free loopback port by the first
// case that needs it and stopped at exit (tests/redis/redis_server.hpp); the
// cluster likewise, by redis-cli --cluster create (tests/redis/redis_cluster.hpp).
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "redis_cluster.hpp"
#include "redis_server.hpp"
#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

using shmlimit::test::RedisServer;

const shmlimit::PolicySpec kSpec{"bench",
                                 shmlimit::Algorithm::kGcra,
                                 {1'000'000'000, std::chrono::seconds(1)},
                                 1'000'000,
                                 shmlimit::OnFull::kAllow};

double g_local_ns = 0;  // time per decision of BM_Tier_Local in this run

RedisServer& server() {
  static RedisServer s;  // stopped by its destructor at exit
  return s;
}

shmlimit::RedisOptions redis_options() {
  shmlimit::RedisOptions o;
  o.port = server().port();
  return o;
}

shmlimit::RedisOptions cluster_options() {
  static shmlimit::test::RedisCluster c(3, 0);  // stopped by its destructor at exit
  shmlimit::RedisOptions o;
  o.cluster = c.seeds();
  return o;
}

std::string segment_name(const char* tag) {
  return std::string("/shmlimit-bench-tiers-") + tag + "-" + std::to_string(::getpid());
}

// Runs `decide` in the timed loop; sets the counters.
template <class Decide, class Calls>
void run(benchmark::State& state, Decide decide, Calls calls, bool is_local) {
  const std::uint64_t calls_before = calls();
  std::uint64_t denied = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const bool allowed = decide();
    denied += allowed ? 0 : 1;
    benchmark::DoNotOptimize(allowed);
  }
  const double ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                            std::chrono::steady_clock::now() - start)
                                            .count()) /
                    static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  if (denied != 0) state.SkipWithError((std::to_string(denied) + " decisions were denied").c_str());
  if (is_local) g_local_ns = ns;
  // Wall-clock rate: a Redis round trip mostly waits, which CPU time hides.
  state.counters["ops_per_s"] = ns > 0 ? 1e9 / ns : 0;
  state.counters["round_trips_per_1k"] =
      1000.0 * static_cast<double>(calls() - calls_before) /
      static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  if (g_local_ns > 0) state.counters["x_local"] = ns / g_local_ns;
}

void BM_Tier_Local(benchmark::State& state) {
  const std::string name = segment_name("local");
  shmlimit::Limiter::remove(name);
  shmlimit::Options o;
  o.name = name;
  o.capacity = 1024;
  auto l = shmlimit::Limiter::create(o);
  const auto id = l.add_policy(kSpec);
  run(
      state, [&] { return l.acquire(id, "hot-key").allowed; }, [] { return std::uint64_t{0}; },
      true);
  shmlimit::Limiter::remove(name);
}
BENCHMARK(BM_Tier_Local);

void BM_Tier_Redis(benchmark::State& state) {
  try {
    shmlimit::RedisLimiter r(redis_options());
    const auto id = r.add_policy(shmlimit::TierPolicy{kSpec});
    run(
        state, [&] { return r.acquire(id, "hot-key").decision.allowed; },
        [&] { return r.round_trips(); }, false);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_Tier_Redis);

void BM_Tier_Hybrid(benchmark::State& state) {
  try {
    const std::string name = segment_name("hybrid");
    shmlimit::HybridLimiter::remove(name);
    shmlimit::HybridOptions o;
    o.redis = redis_options();
    o.name = name;
    o.lease_slots = 1024;
    o.max_batch = static_cast<std::uint32_t>(state.range(0));
    auto h = shmlimit::HybridLimiter::open_or_create(o);
    const auto id = h.add_policy(shmlimit::TierPolicy{kSpec});
    run(
        state, [&] { return h.acquire(id, "hot-key").decision.allowed; },
        [&] { return h.round_trips(); }, false);
    shmlimit::HybridLimiter::remove(name);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_Tier_Hybrid)->Arg(64)->Arg(1024);  // max_batch

void BM_Tier_Cluster(benchmark::State& state) {
  try {
    shmlimit::RedisLimiter r(cluster_options());
    const auto id = r.add_policy(shmlimit::TierPolicy{kSpec});
    run(
        state, [&] { return r.acquire(id, "hot-key").decision.allowed; },
        [&] { return r.round_trips(); }, false);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_Tier_Cluster);

void BM_Tier_Cluster_Keys(benchmark::State& state) {
  try {
    shmlimit::RedisLimiter r(cluster_options());
    const auto id = r.add_policy(shmlimit::TierPolicy{kSpec});
    std::vector<std::string> keys;
    for (int i = 0; i < 256; ++i) keys.push_back("key-" + std::to_string(i));
    std::size_t next = 0;
    run(
        state, [&] { return r.acquire(id, keys[next++ & 255]).decision.allowed; },
        [&] { return r.round_trips(); }, false);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_Tier_Cluster_Keys);

void BM_Tier_HybridCluster(benchmark::State& state) {
  try {
    const std::string name = segment_name("hybrid-cluster");
    shmlimit::HybridLimiter::remove(name);
    shmlimit::HybridOptions o;
    o.redis = cluster_options();
    o.name = name;
    o.lease_slots = 1024;
    o.max_batch = static_cast<std::uint32_t>(state.range(0));
    auto h = shmlimit::HybridLimiter::open_or_create(o);
    const auto id = h.add_policy(shmlimit::TierPolicy{kSpec});
    run(
        state, [&] { return h.acquire(id, "hot-key").decision.allowed; },
        [&] { return h.round_trips(); }, false);
    shmlimit::HybridLimiter::remove(name);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}
BENCHMARK(BM_Tier_HybridCluster)->Arg(64);  // max_batch

}  // namespace

BENCHMARK_MAIN();
