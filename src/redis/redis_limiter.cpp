// The Redis tier: policies validated for the script's number range, one
// hiredis connection with capped exponential backoff, EVALSHA calls
// (pipelined across keys) and their replies as shmlimit::Decision.
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "algorithms/decision_fold.hpp"
#include "algorithms/gcra.hpp"
#include "shmlimit/redis.hpp"
#include "tier.hpp"

namespace shmlimit {

std::string_view to_string(Source source) noexcept {
  switch (source) {
    case Source::kRedis:
      return "redis";
    case Source::kLease:
      return "lease";
    case Source::kLocalShare:
      return "local_share";
    case Source::kFailOpen:
      return "fail_open";
    case Source::kFailClosed:
      return "fail_closed";
  }
  return "unknown";
}

}  // namespace shmlimit

namespace shmlimit::detail {
namespace {

using u64 = std::uint64_t;
using u128 = __uint128_t;

/// The script keeps every value below 2^53 when every span of a policy is
/// at most 2^50 ns (limiter.lua, "Numbers").
constexpr u64 kMaxSpan = u64{1} << 50;

[[noreturn]] void invalid(const TierPolicy& p, const std::string& why) {
  throw Error(ErrorCode::kInvalidArgument, "policy \"" + p.spec.name + "\" (" + std::string(to_string(p.spec.algorithm)) +
                                               ", " + format_rate(p.spec.rate) + "): " + why);
}

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept {
    if (r != nullptr) freeReplyObject(r);
  }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

// hiredis writes with write(2): a server that went away would raise SIGPIPE
// and kill the process. A library must not change the process's signal
// dispositions, so SIGPIPE is blocked in this thread for the duration of a
// call, and one it raised is consumed before the mask is restored.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    if (!was_pending_) {
      sigset_t pending;
      sigemptyset(&pending);
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{0, 0};
        while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
  bool blocked_ = false;
};

}  // namespace

std::int64_t mono_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

TierPolicyData make_tier_policy(const TierPolicy& policy, bool allow_local_share) {
  TierPolicyData out;
  out.policy = policy;
  PolicySpec& spec = out.policy.spec;
  // The core's one validator and normaliser (name, rate, burst, wait,
  // on_full, the algorithm's limits), so a spec means the same in every
  // tier; then the Redis tier's own limits below.
  spec = normalize_policy_spec(spec);
  const u64 period = static_cast<u64>(spec.rate.period.count());
  out.algo = AlgoParams{spec.algorithm, spec.rate.count, period, spec.burst, gcra_emission(spec.rate.count, period)};
  const char* why = "unknown algorithm";
  if (!algo_params_valid(out.algo, &why)) invalid(policy, why);
  if (spec.rate.count > kMaxSpan || spec.burst > kMaxSpan || period > kMaxSpan) {
    invalid(policy, "Redis tier: count, burst and period must be at most 2^50 (period in ns: 13 days)");
  }
  u128 span = 0;
  const u64 lcm_us = std::lcm(period, u64{1000});  // period <= 2^50: no overflow
  switch (spec.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket:
      span = static_cast<u128>(spec.burst) * out.algo.emission_ns;
      out.align_us = 1;
      break;
    case Algorithm::kTokenBucket:
      span = static_cast<u128>((spec.burst + spec.rate.count - 1) / spec.rate.count) * period;
      out.align_us = lcm_us / 1000;
      if (lcm_us > kMaxSpan) span = static_cast<u128>(kMaxSpan) + 1;
      break;
    case Algorithm::kFixedWindow:
      span = period;
      out.align_us = lcm_us / 1000;
      if (lcm_us > kMaxSpan) span = static_cast<u128>(kMaxSpan) + 1;
      break;
    case Algorithm::kSlidingWindow:
      span = static_cast<u128>(period) * 2;
      out.align_us = lcm_us / 1000;
      if (lcm_us > kMaxSpan) span = static_cast<u128>(kMaxSpan) + 1;
      break;
    case Algorithm::kQuietPeriod:
      span = static_cast<u128>(period) + 1'000'000;
      out.align_us = 1000;  // expiries are whole ms
      break;
    default:
      // Concurrency leases and the sliding log keep state the script does
      // not model (a lease list, a log of timestamps).
      invalid(policy, "this algorithm is not available in the Redis tier (gcra, token_bucket, fixed_window, "
                      "sliding_window, quiet_period and leaky_bucket are)");
  }
  if (span > kMaxSpan) {
    invalid(policy,
            "Redis tier: the bucket's longest span (burst * period / count, a window, two windows for the sliding "
            "window, or lcm(period, 1 us)) must be at most 2^50 ns (about 13 days)");
  }
  if (policy.when_down == WhenDown::kLocalShare) {
    if (!allow_local_share) {
      throw Error(ErrorCode::kInvalidArgument,
                  "policy \"" + spec.name + "\": WhenDown::kLocalShare needs a host segment (HybridLimiter)");
    }
    if (!(policy.local_share > 0 && policy.local_share <= 1)) {
      throw Error(ErrorCode::kInvalidArgument, "policy \"" + spec.name + "\": local_share must be in (0, 1]");
    }
  } else if (policy.when_down != WhenDown::kFailOpen && policy.when_down != WhenDown::kFailClosed) {
    throw Error(ErrorCode::kInvalidArgument, "policy \"" + spec.name + "\": unknown WhenDown value");
  }
  return out;
}

}  // namespace shmlimit::detail

namespace shmlimit {

using detail::BucketReply;
using detail::ReplyPtr;
using detail::ScriptCall;
using detail::TierPolicyData;
using detail::to_timeval;

// ---------------------------------------------------------------------------
// Connection

RedisLimiter::Impl::Impl(RedisOptions o) : options(std::move(o)) {
  if (options.unix_socket.empty() && (options.port <= 0 || options.port > 65535)) {
    throw Error(ErrorCode::kInvalidArgument, "Redis port must be in 1..65535");
  }
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    throw Error(ErrorCode::kInvalidArgument, "Redis connect and command timeouts must be positive");
  }
  if (options.backoff_initial.count() <= 0 || options.backoff_max < options.backoff_initial) {
    throw Error(ErrorCode::kInvalidArgument, "Redis backoff: need 0 < backoff_initial <= backoff_max");
  }
  script = detail::kRedisLimiterLua;
  if (options.test_clock) {
    const std::string off = "local TEST_CLOCK = false";
    const auto at = script.find(off);
    if (at == std::string::npos) throw Error(ErrorCode::kInvalidArgument, "the embedded script has no TEST_CLOCK line");
    script.replace(at, off.size(), "local TEST_CLOCK = true");
  }
  backoff_ns = std::chrono::duration_cast<Nanos>(options.backoff_initial).count();
}

RedisLimiter::Impl::~Impl() { drop(); }

void RedisLimiter::Impl::drop() noexcept {
  if (ctx == nullptr) return;
  // A child of the process that connected only closes its copy of the
  // descriptor (redisFree writes nothing), so the parent's stays usable.
  redisFree(ctx);
  ctx = nullptr;
  script_loaded = false;
}

void RedisLimiter::Impl::fail(const std::string& why, bool connection) noexcept {
  try {
    error = why;
  } catch (...) {
  }
  up = false;
  if (connection) drop();
  // Capped exponential backoff: no call reaches the network before it.
  next_attempt_ns = detail::mono_ns() + backoff_ns;
  backoff_ns = std::min<std::int64_t>(backoff_ns * 2,
                                      std::chrono::duration_cast<Nanos>(options.backoff_max).count());
}

Nanos RedisLimiter::Impl::retry_in() const noexcept {
  return std::max(Nanos(next_attempt_ns - detail::mono_ns()), Nanos(std::chrono::milliseconds(1)));
}

bool RedisLimiter::Impl::connect() noexcept {
  if (ctx != nullptr && ctx_pid != ::getpid()) drop();  // inherited across fork()
  if (ctx != nullptr) return true;
  if (detail::mono_ns() < next_attempt_ns) return false;  // backing off; error() says why
  const timeval ct = to_timeval(options.connect_timeout);
  ctx = options.unix_socket.empty() ? redisConnectWithTimeout(options.host.c_str(), options.port, ct)
                                    : redisConnectUnixWithTimeout(options.unix_socket.c_str(), ct);
  if (ctx == nullptr || ctx->err != 0) {
    fail(std::string("cannot connect to Redis: ") + (ctx != nullptr ? ctx->errstr : "out of memory"), true);
    return false;
  }
  ctx_pid = ::getpid();
  if (redisSetTimeout(ctx, to_timeval(options.command_timeout)) != REDIS_OK) {
    fail("cannot set the Redis command timeout", true);
    return false;
  }
  if (!options.password.empty()) {
    ++round_trips;
    ReplyPtr r(static_cast<redisReply*>(redisCommand(ctx, "AUTH %b", options.password.data(), options.password.size())));
    if (!r || r->type == REDIS_REPLY_ERROR) {
      fail(r ? std::string("Redis AUTH refused: ") + std::string(r->str, r->len) : std::string("Redis AUTH failed"),
           true);
      return false;
    }
  }
  return true;
}

bool RedisLimiter::Impl::load_script() noexcept {
  ++round_trips;
  ReplyPtr r(static_cast<redisReply*>(redisCommand(ctx, "SCRIPT LOAD %b", script.data(), script.size())));
  if (!r) {
    fail(std::string("Redis SCRIPT LOAD: ") + ctx->errstr, true);
    return false;
  }
  if (r->type != REDIS_REPLY_STRING) {
    fail(r->type == REDIS_REPLY_ERROR ? "Redis SCRIPT LOAD refused: " + std::string(r->str, r->len)
                                      : std::string("Redis SCRIPT LOAD: unexpected reply"),
         false);
    return false;
  }
  sha.assign(r->str, r->len);
  script_loaded = true;
  return true;
}

namespace {

std::string num(std::uint64_t v) { return std::to_string(v); }

// EVALSHA sha numkeys key... op now need (alg count period burst emission align cost)...
std::vector<std::string> evalsha_argv(const std::string& sha, const ScriptCall& c) {
  std::vector<std::string> a;
  a.reserve(3 + c.keys.size() * 8 + 3);
  a.emplace_back("EVALSHA");
  a.push_back(sha);
  a.push_back(num(c.keys.size()));
  for (const auto& k : c.keys) a.push_back(k);
  a.push_back(c.op);
  a.push_back(c.now_us >= 0 ? std::to_string(c.now_us) : std::string());
  a.push_back(num(c.need));
  for (std::size_t i = 0; i < c.keys.size(); ++i) {
    const detail::AlgoParams& p = c.policies[i]->algo;
    a.push_back(num(static_cast<std::uint64_t>(p.algorithm)));
    a.push_back(num(p.count));
    a.push_back(num(p.period_ns));
    a.push_back(num(p.burst));
    a.push_back(num(p.emission_ns));
    a.push_back(num(c.policies[i]->align_us));
    a.push_back(num(c.costs[i]));
  }
  return a;
}

int append(redisContext* ctx, const std::vector<std::string>& argv) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  for (const auto& s : argv) {
    ptrs.push_back(s.data());
    lens.push_back(s.size());
  }
  return redisAppendCommandArgv(ctx, static_cast<int>(argv.size()), ptrs.data(), lens.data());
}

// Parses one script reply: 7 integers per bucket.
bool parse(const redisReply* r, std::size_t n, std::vector<BucketReply>* out) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != n * 7) return false;
  out->assign(n, BucketReply{});
  for (std::size_t i = 0; i < n; ++i) {
    long long v[7];
    for (std::size_t j = 0; j < 7; ++j) {
      const redisReply* e = r->element[i * 7 + j];
      if (e->type != REDIS_REPLY_INTEGER) return false;
      v[j] = e->integer;
    }
    Decision& d = (*out)[i].decision;
    d.allowed = v[0] == 1;
    d.limit = static_cast<std::uint64_t>(std::max<long long>(v[1], 0));
    d.remaining = static_cast<std::uint64_t>(std::max<long long>(v[2], 0));
    d.retry_after = v[3] < 0 ? Nanos::max() : Nanos(v[3]);
    d.reset_after = Nanos(std::max<long long>(v[4], 0));
    d.reason = static_cast<Reason>(v[5]);
    (*out)[i].granted = static_cast<std::uint64_t>(std::max<long long>(v[6], 0));
  }
  return true;
}

}  // namespace

bool RedisLimiter::Impl::run(std::vector<ScriptCall>& calls, std::vector<std::vector<BucketReply>>* out) noexcept {
  try {
    const detail::SigpipeGuard no_sigpipe;
    if (!connect()) return false;
    if (!script_loaded && !load_script()) return false;
    out->assign(calls.size(), {});
    std::vector<std::size_t> again;  // calls answered NOSCRIPT (a restarted or flushed server)
    for (int round = 0; round < 2; ++round) {
      std::vector<std::size_t> todo;
      if (round == 0) {
        todo.resize(calls.size());
        std::iota(todo.begin(), todo.end(), std::size_t{0});
      } else {
        if (again.empty()) break;
        if (!load_script()) return false;
        todo.swap(again);
      }
      for (std::size_t i : todo) {
        if (append(ctx, evalsha_argv(sha, calls[i])) != REDIS_OK) {
          fail("Redis: out of memory", true);
          return false;
        }
      }
      ++round_trips;  // one pipeline: every reply is read after every command is written
      bool bad = false;
      std::string why;
      for (std::size_t i : todo) {
        void* raw = nullptr;
        if (redisGetReply(ctx, &raw) != REDIS_OK) {
          fail(std::string("Redis: ") + ctx->errstr, true);
          return false;
        }
        ReplyPtr r(static_cast<redisReply*>(raw));
        if (r->type == REDIS_REPLY_ERROR) {
          const std::string msg(r->str, r->len);
          if (round == 0 && msg.rfind("NOSCRIPT", 0) == 0) {
            again.push_back(i);
          } else {
            bad = true;
            why = "Redis script error: " + msg;
          }
          continue;
        }
        if (!parse(r.get(), calls[i].keys.size(), &(*out)[i])) {
          bad = true;
          why = "Redis: unexpected script reply";
        }
      }
      if (bad) {
        fail(why, false);
        return false;
      }
    }
    up = true;
    backoff_ns = std::chrono::duration_cast<Nanos>(options.backoff_initial).count();
    return true;
  } catch (...) {  // std::bad_alloc: no decision from Redis
    fail("out of memory", true);
    return false;
  }
}

bool RedisLimiter::Impl::del(const std::string& key) noexcept {
  const detail::SigpipeGuard no_sigpipe;
  if (!connect()) return false;
  ++round_trips;
  ReplyPtr r(static_cast<redisReply*>(redisCommand(ctx, "DEL %b", key.data(), key.size())));
  if (!r) {
    fail(std::string("Redis: ") + ctx->errstr, true);
    return false;
  }
  return r->type == REDIS_REPLY_INTEGER;
}

std::string RedisLimiter::Impl::key_of(const TierPolicyData& p, std::string_view key) const {
  std::string k;
  k.reserve(options.prefix.size() + key.size() + p.policy.spec.name.size() + 3);
  k += options.prefix;
  k += '{';
  k.append(key.data(), key.size());
  k += "}:";
  k += p.policy.spec.name;
  return k;
}

TierDecision RedisLimiter::Impl::down(const TierPolicyData& p) const noexcept {
  TierDecision t;
  t.decision.limit = p.algo.burst;
  t.decision.remaining = 0;
  t.decision.reset_after = Nanos(0);
  if (p.policy.when_down == WhenDown::kFailOpen) {
    t.decision.allowed = true;
    t.source = Source::kFailOpen;
  } else {
    t.decision.allowed = false;
    t.decision.retry_after = retry_in();
    t.source = Source::kFailClosed;
  }
  return t;
}

namespace {

Decision unknown_policy() {
  Decision d;
  d.reason = Reason::kUnknownPolicy;
  return d;
}

// As Limiter::acquire_many (decision_fold.hpp).
using Fold = detail::DecisionFold;

}  // namespace

TierDecision RedisLimiter::Impl::one(const char* op, PolicyId id, std::string_view key, std::uint64_t cost,
                                     std::int64_t now_us) noexcept {
  const TierPolicyData* p = policy(id);
  if (p == nullptr) return TierDecision{unknown_policy(), Source::kRedis};
  try {
    std::vector<ScriptCall> calls(1);
    calls[0].op = op;
    calls[0].keys.push_back(key_of(*p, key));
    calls[0].policies.push_back(p);
    calls[0].costs.push_back(cost);
    calls[0].now_us = now_us;
    std::vector<std::vector<BucketReply>> out;
    if (!run(calls, &out)) return down(*p);
    return TierDecision{out[0][0].decision, Source::kRedis};
  } catch (...) {
    return down(*p);
  }
}

TierDecision RedisLimiter::Impl::many(std::span<const Request> requests, std::span<Decision> each,
                                      std::int64_t now_us) noexcept {
  Fold fold;
  if (requests.empty()) {
    fold.combined.remaining = 0;
    return TierDecision{fold.combined, Source::kRedis};
  }
  const TierPolicyData* first = nullptr;
  for (const Request& r : requests) {
    const TierPolicyData* p = policy(r.policy);
    if (p == nullptr) return TierDecision{unknown_policy(), Source::kRedis};
    if (first == nullptr) first = p;
  }
  try {
    // One script call per distinct key: a key's limits are one hash slot
    // (the hash tag), so one call decides them atomically.
    std::map<std::string_view, std::size_t> group_of;
    std::vector<ScriptCall> calls;
    std::vector<std::vector<std::size_t>> members;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      auto [it, fresh] = group_of.emplace(requests[i].key, calls.size());
      if (fresh) {
        calls.emplace_back();
        calls.back().op = "acquire";
        calls.back().now_us = now_us;
        members.emplace_back();
      }
      ScriptCall& c = calls[it->second];
      const TierPolicyData* p = policy(requests[i].policy);
      c.keys.push_back(key_of(*p, requests[i].key));
      c.policies.push_back(p);
      c.costs.push_back(requests[i].cost);
      members[it->second].push_back(i);
    }
    std::vector<std::vector<BucketReply>> out;
    if (!run(calls, &out)) {
      // Every limit follows its own WhenDown; the strictest answer wins.
      TierDecision t = down(*first);
      for (const Request& r : requests) {
        const TierDecision d = down(*policy(r.policy));
        if (!d.decision.allowed) t = d;
      }
      return t;
    }
    bool all = true;
    std::vector<bool> group_allowed(calls.size(), true);
    std::vector<Decision> decided(requests.size());
    for (std::size_t g = 0; g < calls.size(); ++g) {
      for (std::size_t j = 0; j < members[g].size(); ++j) {
        const Decision& d = out[g][j].decision;
        decided[members[g][j]] = d;
        if (!d.allowed) group_allowed[g] = false;
      }
      all = all && group_allowed[g];
    }
    if (!all && calls.size() > 1) {
      // Keys that admitted were charged (each call is all-or-nothing for its
      // key): give it back, pipelined, and report those limits as the
      // refund left them (uncharged, as Limiter::acquire_many does). A
      // failure here leaves them charged, never over-admitting.
      std::vector<ScriptCall> undo;
      std::vector<std::size_t> undone;
      for (std::size_t g = 0; g < calls.size(); ++g) {
        if (!group_allowed[g]) continue;
        undo.push_back(calls[g]);
        undo.back().op = "refund";
        undone.push_back(g);
      }
      std::vector<std::vector<BucketReply>> refunded;
      if (!undo.empty() && run(undo, &refunded)) {
        for (std::size_t k = 0; k < undone.size(); ++k) {
          for (std::size_t j = 0; j < members[undone[k]].size(); ++j) {
            Decision& d = decided[members[undone[k]][j]];
            d.remaining = refunded[k][j].decision.remaining;
            d.reset_after = refunded[k][j].decision.reset_after;
          }
        }
      }
    }
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (i < each.size()) each[i] = decided[i];
      fold.add(decided[i]);
    }
    return TierDecision{fold.combined, Source::kRedis};
  } catch (...) {
    return down(*first);
  }
}

// ---------------------------------------------------------------------------
// RedisLimiter

RedisLimiter::RedisLimiter(RedisOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
RedisLimiter::RedisLimiter(RedisLimiter&&) noexcept = default;
RedisLimiter& RedisLimiter::operator=(RedisLimiter&&) noexcept = default;
RedisLimiter::~RedisLimiter() = default;

PolicyId RedisLimiter::add_policy(const TierPolicy& policy) {
  TierPolicyData data = detail::make_tier_policy(policy, false);
  for (std::uint32_t i = 0; i < impl_->policies.size(); ++i) {
    const TierPolicyData& e = impl_->policies[i];
    if (e.policy.spec.name != data.policy.spec.name) continue;
    if (e.policy.spec == data.policy.spec && e.policy.when_down == data.policy.when_down) return PolicyId{i};
    throw Error(ErrorCode::kPolicyConflict, "policy \"" + data.policy.spec.name + "\" is already registered with other parameters");
  }
  impl_->policies.push_back(std::move(data));
  return PolicyId{static_cast<std::uint32_t>(impl_->policies.size() - 1)};
}

TierDecision RedisLimiter::acquire(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->one("acquire", policy, key, cost, -1);
}

TierDecision RedisLimiter::peek(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->one("peek", policy, key, cost, -1);
}

TierDecision RedisLimiter::refund(PolicyId policy, std::string_view key, std::uint64_t cost) noexcept {
  return impl_->one("refund", policy, key, cost, -1);
}

TierDecision RedisLimiter::acquire_many(std::span<const Request> requests, std::span<Decision> each) noexcept {
  return impl_->many(requests, each, -1);
}

namespace {
// An injected time only reaches a script loaded with the test clock; the
// production script ignores it. Without test_clock the call uses TIME.
std::int64_t injected(const RedisOptions& o, std::chrono::microseconds us) {
  return o.test_clock ? std::max<std::int64_t>(us.count(), 0) : -1;
}
}  // namespace

TierDecision RedisLimiter::acquire_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                                      std::chrono::microseconds unix_us) noexcept {
  return impl_->one("acquire", policy, key, cost, injected(impl_->options, unix_us));
}

TierDecision RedisLimiter::acquire_many_at(std::span<const Request> requests, std::chrono::microseconds unix_us,
                                           std::span<Decision> each) noexcept {
  return impl_->many(requests, each, injected(impl_->options, unix_us));
}

TierDecision RedisLimiter::refund_at(PolicyId policy, std::string_view key, std::uint64_t cost,
                                     std::chrono::microseconds unix_us) noexcept {
  return impl_->one("refund", policy, key, cost, injected(impl_->options, unix_us));
}

bool RedisLimiter::reset(PolicyId policy, std::string_view key) noexcept {
  const TierPolicyData* p = impl_->policy(policy);
  if (p == nullptr) return false;
  try {
    return impl_->del(impl_->key_of(*p, key));
  } catch (...) {
    return false;
  }
}

std::string RedisLimiter::redis_key(PolicyId policy, std::string_view key) const {
  const TierPolicyData* p = impl_->policy(policy);
  if (p == nullptr) throw Error(ErrorCode::kInvalidArgument, "no such policy");
  return impl_->key_of(*p, key);
}

std::uint64_t RedisLimiter::round_trips() const noexcept { return impl_->round_trips; }
bool RedisLimiter::available() const noexcept { return impl_->up; }
std::string RedisLimiter::last_error() const { return impl_->error; }

}  // namespace shmlimit
