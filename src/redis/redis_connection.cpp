// The Redis tier's connection: one hiredis connection with capped
// exponential backoff, the script loaded once, and EVALSHA calls pipelined
// across keys with their replies parsed into decisions.
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
#include "shmlimit/redis.hpp"
#include "tier.hpp"

namespace shmlimit::detail {
namespace {

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
    throw Error(ErrorCode::kInvalidArgument,
                "Redis backoff: need 0 < backoff_initial <= backoff_max");
  }
  script = detail::kRedisLimiterLua;
  if (options.test_clock) {
    const std::string off = "local TEST_CLOCK = false";
    const auto at = script.find(off);
    if (at == std::string::npos)
      throw Error(ErrorCode::kInvalidArgument, "the embedded script has no TEST_CLOCK line");
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
  backoff_ns = std::min<std::int64_t>(
      backoff_ns * 2, std::chrono::duration_cast<Nanos>(options.backoff_max).count());
}

Nanos RedisLimiter::Impl::retry_in() const noexcept {
  return std::max(Nanos(next_attempt_ns - detail::mono_ns()), Nanos(std::chrono::milliseconds(1)));
}

bool RedisLimiter::Impl::connect() noexcept {
  if (ctx != nullptr && ctx_pid != ::getpid()) drop();  // inherited across fork()
  if (ctx != nullptr) return true;
  if (detail::mono_ns() < next_attempt_ns) return false;  // backing off; error() says why
  const timeval ct = to_timeval(options.connect_timeout);
  ctx = options.unix_socket.empty()
            ? redisConnectWithTimeout(options.host.c_str(), options.port, ct)
            : redisConnectUnixWithTimeout(options.unix_socket.c_str(), ct);
  if (ctx == nullptr || ctx->err != 0) {
    fail(
        std::string("cannot connect to Redis: ") + (ctx != nullptr ? ctx->errstr : "out of memory"),
        true);
    return false;
  }
  ctx_pid = ::getpid();
  if (redisSetTimeout(ctx, to_timeval(options.command_timeout)) != REDIS_OK) {
    fail("cannot set the Redis command timeout", true);
    return false;
  }
  if (!options.password.empty()) {
    ++round_trips;
    ReplyPtr r(static_cast<redisReply*>(
        redisCommand(ctx, "AUTH %b", options.password.data(), options.password.size())));
    if (!r || r->type == REDIS_REPLY_ERROR) {
      fail(r ? std::string("Redis AUTH refused: ") + std::string(r->str, r->len)
             : std::string("Redis AUTH failed"),
           true);
      return false;
    }
  }
  return true;
}

bool RedisLimiter::Impl::load_script() noexcept {
  ++round_trips;
  ReplyPtr r(
      static_cast<redisReply*>(redisCommand(ctx, "SCRIPT LOAD %b", script.data(), script.size())));
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

bool RedisLimiter::Impl::run(std::vector<ScriptCall>& calls,
                             std::vector<std::vector<BucketReply>>* out) noexcept {
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

}  // namespace shmlimit
