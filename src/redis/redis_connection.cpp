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
#include <array>
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

namespace {
std::string node_name(const detail::RedisNode& n) {
  if (!n.unix_socket.empty()) return n.unix_socket;
  return n.host + ":" + std::to_string(n.port);
}
}  // namespace

// ---------------------------------------------------------------------------
// Cluster slots

namespace detail {

void ReplyFree::operator()(void* r) const noexcept {
  if (r != nullptr) freeReplyObject(r);
}

namespace {
// CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster's
// key hash (cluster spec, "Keys distribution model").
constexpr std::array<std::uint16_t, 256> make_crc16_table() {
  std::array<std::uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    auto c = static_cast<std::uint16_t>(i << 8);
    for (int k = 0; k < 8; ++k) {
      c = static_cast<std::uint16_t>((c & 0x8000U) != 0 ? (c << 1) ^ 0x1021U : c << 1);
    }
    t[i] = c;
  }
  return t;
}
constexpr std::array<std::uint16_t, 256> kCrc16 = make_crc16_table();

std::uint16_t crc16(std::string_view s) noexcept {
  std::uint16_t crc = 0;
  for (const char ch : s) {
    crc = static_cast<std::uint16_t>((crc << 8) ^
                                     kCrc16[((crc >> 8) ^ static_cast<unsigned char>(ch)) & 0xFFU]);
  }
  return crc;
}
}  // namespace

std::uint16_t cluster_slot(std::string_view key) noexcept {
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return static_cast<std::uint16_t>(crc16(key) & (kClusterSlots - 1));
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Connection

namespace {

// Nodes a client keeps at most (a cluster has at most about 1000 masters;
// redirects to ever new addresses from a misbehaving server stop here).
constexpr std::size_t kMaxNodes = 4096;

// "host:port" -> (host, port); false when it is not one.
bool split_host_port(std::string_view s, std::string* host, int* port) {
  const std::size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == s.size()) return false;
  int p = 0;
  for (std::size_t i = colon + 1; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9' || p > 65535) return false;
    p = p * 10 + (s[i] - '0');
  }
  if (p <= 0 || p > 65535) return false;
  std::string_view h = s.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return false;
  host->assign(h.data(), h.size());
  *port = p;
  return true;
}

}  // namespace

RedisLimiter::Impl::Impl(RedisOptions o) : options(std::move(o)) {
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    throw Error(ErrorCode::kInvalidArgument, "Redis connect and command timeouts must be positive");
  }
  if (options.backoff_initial.count() <= 0 || options.backoff_max < options.backoff_initial) {
    throw Error(ErrorCode::kInvalidArgument,
                "Redis backoff: need 0 < backoff_initial <= backoff_max");
  }
  if (options.max_redirects < 1 || options.max_redirects > 100) {
    throw Error(ErrorCode::kInvalidArgument, "Redis Cluster max_redirects must be in 1..100");
  }
  cluster = !options.cluster.empty();
  if (cluster) {
    if (!options.unix_socket.empty()) {
      throw Error(ErrorCode::kInvalidArgument,
                  "Redis: give either cluster seed nodes or a unix socket, not both");
    }
    for (const std::string& seed : options.cluster) {
      detail::RedisNode n;
      if (!split_host_port(seed, &n.host, &n.port)) {
        throw Error(ErrorCode::kInvalidArgument,
                    "Redis Cluster seed \"" + seed + "\" is not host:port (port 1..65535)");
      }
      if (node_index(n.host, n.port) < 0) nodes.push_back(std::move(n));
    }
    slot_node.assign(detail::kClusterSlots, -1);
  } else {
    if (options.unix_socket.empty() && (options.port <= 0 || options.port > 65535)) {
      throw Error(ErrorCode::kInvalidArgument, "Redis port must be in 1..65535");
    }
    detail::RedisNode n;
    n.host = options.host;
    n.port = options.port;
    n.unix_socket = options.unix_socket;
    nodes.push_back(std::move(n));
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

RedisLimiter::Impl::~Impl() {
  for (detail::RedisNode& n : nodes) drop(n);
}

int RedisLimiter::Impl::node_index(const std::string& host, int port) {
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].port == port && nodes[i].host == host) return static_cast<int>(i);
  }
  return -1;
}

void RedisLimiter::Impl::drop(detail::RedisNode& n) noexcept {
  if (n.ctx == nullptr) return;
  // A child of the process that connected only closes its copy of the
  // descriptor (redisFree writes nothing), so the parent's stays usable.
  redisFree(n.ctx);
  n.ctx = nullptr;
  n.script_loaded = false;
}

void RedisLimiter::Impl::fail(const std::string& why, detail::RedisNode* connection) noexcept {
  try {
    error = why;
  } catch (...) {
  }
  up = false;
  const std::int64_t cap = std::chrono::duration_cast<Nanos>(options.backoff_max).count();
  const std::int64_t initial = std::chrono::duration_cast<Nanos>(options.backoff_initial).count();
  if (connection != nullptr) {
    drop(*connection);
    map_fresh = false;  // a cluster node went away: its slots may have moved
    // Capped exponential backoff of that node: no connection to it is
    // attempted before it ends.
    detail::RedisNode& n = *connection;
    if (n.backoff_ns == 0) n.backoff_ns = initial;
    n.next_attempt_ns = detail::mono_ns() + n.backoff_ns;
    next_attempt_ns = n.next_attempt_ns;
    n.backoff_ns = std::min<std::int64_t>(n.backoff_ns * 2, cap);
    return;
  }
  next_attempt_ns = detail::mono_ns() + backoff_ns;
  backoff_ns = std::min<std::int64_t>(backoff_ns * 2, cap);
}

Nanos RedisLimiter::Impl::retry_in() const noexcept {
  return std::max(Nanos(next_attempt_ns - detail::mono_ns()), Nanos(std::chrono::milliseconds(1)));
}

bool RedisLimiter::Impl::connect(detail::RedisNode& n, bool gated) noexcept {
  if (n.ctx != nullptr && n.ctx_pid != ::getpid()) drop(n);  // inherited across fork()
  if (n.ctx != nullptr) return true;
  if (gated && detail::mono_ns() < n.next_attempt_ns) {  // backing off; error() says why
    next_attempt_ns = n.next_attempt_ns;
    up = false;
    return false;
  }
  const timeval ct = to_timeval(options.connect_timeout);
  n.ctx = n.unix_socket.empty() ? redisConnectWithTimeout(n.host.c_str(), n.port, ct)
                                : redisConnectUnixWithTimeout(n.unix_socket.c_str(), ct);
  if (n.ctx == nullptr || n.ctx->err != 0) {
    fail(std::string("cannot connect to Redis") + (cluster ? " node " + node_name(n) : "") + ": " +
             (n.ctx != nullptr ? n.ctx->errstr : "out of memory"),
         &n);
    return false;
  }
  n.ctx_pid = ::getpid();
  if (redisSetTimeout(n.ctx, to_timeval(options.command_timeout)) != REDIS_OK) {
    fail("cannot set the Redis command timeout", &n);
    return false;
  }
  if (!options.password.empty()) {
    ++round_trips;
    ReplyPtr r(static_cast<redisReply*>(
        redisCommand(n.ctx, "AUTH %b", options.password.data(), options.password.size())));
    if (!r || r->type == REDIS_REPLY_ERROR) {
      fail(r ? std::string("Redis AUTH refused: ") + std::string(r->str, r->len)
             : std::string("Redis AUTH failed"),
           &n);
      return false;
    }
  }
  return true;
}

bool RedisLimiter::Impl::load_script(detail::RedisNode& n) noexcept {
  ++round_trips;
  ReplyPtr r(static_cast<redisReply*>(
      redisCommand(n.ctx, "SCRIPT LOAD %b", script.data(), script.size())));
  if (!r) {
    fail(std::string("Redis SCRIPT LOAD: ") + n.ctx->errstr, &n);
    return false;
  }
  if (r->type != REDIS_REPLY_STRING) {
    fail(r->type == REDIS_REPLY_ERROR ? "Redis SCRIPT LOAD refused: " + std::string(r->str, r->len)
                                      : std::string("Redis SCRIPT LOAD: unexpected reply"),
         nullptr);
    return false;
  }
  sha.assign(r->str, r->len);
  n.script_loaded = true;
  return true;
}

// CLUSTER SLOTS from the first node that answers (known nodes in order, the
// seeds first). Each entry: start, end, master [host, port, id, ...], replicas.
bool RedisLimiter::Impl::refresh_map() noexcept {
  const std::int64_t initial = std::chrono::duration_cast<Nanos>(options.backoff_initial).count();
  if (refresh_backoff_ns == 0) refresh_backoff_ns = initial;
  // At most one read per backoff_initial (more after failed reads): between
  // reads the map known so far, corrected by MOVED replies, is used.
  next_refresh_ns = detail::mono_ns() + refresh_backoff_ns;
  std::string why = "Redis Cluster: no node answered CLUSTER SLOTS";
  const std::size_t known = nodes.size();
  for (std::size_t i = 0; i < known; ++i) {
    detail::RedisNode& n = nodes[i];
    if (!connect(n, /*gated=*/true)) {  // a node backing off is skipped
      why = error;
      continue;
    }
    ++round_trips;
    ++refreshes;
    ReplyPtr r(static_cast<redisReply*>(redisCommand(n.ctx, "CLUSTER SLOTS")));
    if (!r) {
      why = std::string("Redis: ") + n.ctx->errstr;
      drop(n);
      continue;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      why = "Redis node " + node_name(n) +
            " is not a Redis Cluster node (CLUSTER SLOTS: " + std::string(r->str, r->len) + ")";
      continue;
    }
    if (r->type != REDIS_REPLY_ARRAY) {
      why = "Redis Cluster: unexpected CLUSTER SLOTS reply";
      continue;
    }
    std::vector<std::int32_t> map(detail::kClusterSlots, -1);
    bool ok = true;
    const std::string here = n.host;  // nodes may grow below: no reference into it
    for (std::size_t e = 0; e < r->elements && ok; ++e) {
      const redisReply* range = r->element[e];
      if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
          range->element[0]->type != REDIS_REPLY_INTEGER ||
          range->element[1]->type != REDIS_REPLY_INTEGER ||
          range->element[2]->type != REDIS_REPLY_ARRAY || range->element[2]->elements < 2 ||
          range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
          range->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
        ok = false;
        break;
      }
      const long long lo = range->element[0]->integer;
      const long long hi = range->element[1]->integer;
      const redisReply* master = range->element[2];
      std::string host(master->element[0]->str, master->element[0]->len);
      if (host.empty() || host == "?") host = here;  // a node that does not know its address
      const long long port = master->element[1]->integer;
      if (lo < 0 || hi < lo || hi >= detail::kClusterSlots || port <= 0 || port > 65535) {
        ok = false;
        break;
      }
      int idx = node_index(host, static_cast<int>(port));
      if (idx < 0 && nodes.size() >= kMaxNodes) {
        ok = false;
        break;
      }
      if (idx < 0) {
        detail::RedisNode fresh;
        fresh.host = host;
        fresh.port = static_cast<int>(port);
        nodes.push_back(std::move(fresh));
        idx = static_cast<int>(nodes.size() - 1);
      }
      for (long long s = lo; s <= hi; ++s) map[static_cast<std::size_t>(s)] = idx;
    }
    if (!ok) {
      why = "Redis Cluster: malformed CLUSTER SLOTS reply";
      continue;
    }
    slot_node.swap(map);
    map_fresh = true;
    map_loaded = true;
    refresh_backoff_ns = initial;
    return true;
  }
  refresh_backoff_ns = std::min<std::int64_t>(
      refresh_backoff_ns * 2, std::chrono::duration_cast<Nanos>(options.backoff_max).count());
  fail(why, nullptr);
  return false;
}

namespace {

int append_argv(redisContext* ctx, const std::vector<std::string>& argv) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  for (const auto& s : argv) {
    ptrs.push_back(s.data());
    lens.push_back(s.size());
  }
  return redisAppendCommandArgv(ctx, static_cast<int>(argv.size()), ptrs.data(), lens.data());
}

bool starts_with(const redisReply* r, std::string_view prefix) {
  return r->type == REDIS_REPLY_ERROR && r->len >= prefix.size() &&
         std::string_view(r->str, prefix.size()) == prefix;
}

// "MOVED 3999 127.0.0.1:6381" / "ASK ...": the target, or false.
bool redirect_target(const redisReply* r, std::string* host, int* port) {
  const std::string_view msg(r->str, r->len);
  const std::size_t sp = msg.rfind(' ');
  if (sp == std::string_view::npos) return false;
  std::string_view addr = msg.substr(sp + 1);
  if (!addr.empty() && addr.front() == ':') {  // "MOVED 3999 :6381": the node's own host
    host->clear();
    int p = 0;
    for (const char c : addr.substr(1)) {
      if (c < '0' || c > '9' || p > 65535) return false;
      p = p * 10 + (c - '0');
    }
    *port = p;
    return p > 0 && p <= 65535;
  }
  return split_host_port(addr, host, port);
}

}  // namespace

bool RedisLimiter::Impl::route(std::vector<detail::RoutedCommand>& cmds) noexcept {
  try {
    const detail::SigpipeGuard no_sigpipe;
    std::vector<std::size_t> todo(cmds.size());
    std::iota(todo.begin(), todo.end(), std::size_t{0});
    while (!todo.empty()) {
      if (cluster && !map_fresh && (!map_loaded || detail::mono_ns() >= next_refresh_ns)) {
        // A failed read keeps the map known so far (a node that is down
        // fails only the calls for its own slots).
        if (!refresh_map() && !map_loaded) return false;
      }
      // Group by node: the slot's master, or the node an ASK named.
      std::map<int, std::vector<std::size_t>> by_node;
      for (const std::size_t i : todo) {
        int node = 0;
        if (cluster) {
          node = cmds[i].ask_node >= 0 ? cmds[i].ask_node
                                       : slot_node[static_cast<std::size_t>(cmds[i].slot)];
          if (node < 0) {
            map_fresh = false;
            fail("Redis Cluster: slot " + std::to_string(cmds[i].slot) +
                     " is not served by any node (CLUSTERDOWN)",
                 nullptr);
            return false;
          }
        }
        by_node[node].push_back(i);
      }
      std::vector<std::size_t> again;
      bool pause = false;
      for (auto& [node, members] : by_node) {
        {
          detail::RedisNode& n = nodes[static_cast<std::size_t>(node)];
          if (!connect(n, /*gated=*/true)) return false;
          bool needs_script = false;
          for (const std::size_t i : members) needs_script = needs_script || cmds[i].script;
          if (needs_script && !n.script_loaded && !load_script(n)) return false;
        }
        detail::RedisNode& n = nodes[static_cast<std::size_t>(node)];
        for (const std::size_t i : members) {
          if (cmds[i].ask_node >= 0 && redisAppendCommand(n.ctx, "ASKING") != REDIS_OK) {
            fail("Redis: out of memory", &n);
            return false;
          }
          if (cmds[i].script) cmds[i].argv[1] = sha;  // EVALSHA <sha>: known once loaded
          if (append_argv(n.ctx, cmds[i].argv) != REDIS_OK) {
            fail("Redis: out of memory", &n);
            return false;
          }
        }
        ++round_trips;  // one pipeline: every reply is read after every command is written
        for (const std::size_t i : members) {
          // nodes may grow below (a redirect to a node not met yet): no
          // reference into it is kept across replies.
          redisContext* ctx = nodes[static_cast<std::size_t>(node)].ctx;
          detail::RoutedCommand& c = cmds[i];
          void* raw = nullptr;
          if (c.ask_node >= 0) {  // ASKING's +OK
            if (redisGetReply(ctx, &raw) != REDIS_OK) {
              fail(std::string("Redis: ") + ctx->errstr, &nodes[static_cast<std::size_t>(node)]);
              return false;
            }
            freeReplyObject(raw);
            raw = nullptr;
          }
          if (redisGetReply(ctx, &raw) != REDIS_OK) {
            detail::RedisNode& gone = nodes[static_cast<std::size_t>(node)];
            fail(std::string("Redis") + (cluster ? " node " + node_name(gone) : "") + ": " +
                     ctx->errstr,
                 &gone);
            return false;
          }
          c.reply.reset(raw);
          c.ask_node = -1;
          const auto* r = static_cast<const redisReply*>(raw);
          const bool moved = starts_with(r, "MOVED ");
          const bool ask = starts_with(r, "ASK ");
          const bool tryagain = starts_with(r, "TRYAGAIN");
          const bool noscript = c.script && starts_with(r, "NOSCRIPT");
          if (starts_with(r, "CLUSTERDOWN")) map_fresh = false;  // read the map again
          if (!moved && !ask && !tryagain && !noscript) continue;
          if ((moved || ask) && !cluster) {
            fail("Redis replied " + std::string(r->str, r->len) +
                     ": the server is a Redis Cluster node; list its nodes in "
                     "RedisOptions::cluster",
                 nullptr);
            return false;
          }
          if (++c.hops > options.max_redirects) {
            fail(std::string("Redis") + (cluster ? " Cluster" : "") + ": more than " +
                     std::to_string(options.max_redirects) + " redirects or reloads for one call" +
                     (cluster ? " (slot " + std::to_string(c.slot) + ")" : "") +
                     ", last: " + std::string(r->str, r->len),
                 nullptr);
            return false;
          }
          if (noscript) nodes[static_cast<std::size_t>(node)].script_loaded = false;
          if (tryagain) pause = true;
          if (moved || ask) {
            std::string host;
            int port = 0;
            if (!redirect_target(r, &host, &port)) {
              fail("Redis Cluster: unreadable redirect " + std::string(r->str, r->len), nullptr);
              return false;
            }
            if (host.empty()) host = nodes[static_cast<std::size_t>(node)].host;
            int to = node_index(host, port);
            if (to < 0 && nodes.size() >= kMaxNodes) {
              fail("Redis Cluster: more than " + std::to_string(kMaxNodes) +
                       " nodes named by redirects (last: " + std::string(r->str, r->len) + ")",
                   nullptr);
              return false;
            }
            if (to < 0) {
              detail::RedisNode fresh;
              fresh.host = host;
              fresh.port = port;
              nodes.push_back(std::move(fresh));
              to = static_cast<int>(nodes.size() - 1);
            }
            ++redirects;
            if (moved) {
              slot_node[static_cast<std::size_t>(c.slot)] = to;
              map_fresh = false;  // read the whole map again before the next round
            } else {
              c.ask_node = to;
            }
          }
          c.reply.reset();
          again.push_back(i);
        }
      }
      // A multi-key call on a slot being migrated, with part of its keys
      // moved (TRYAGAIN), waits for the migration: a short pause.
      if (pause) ::usleep(1000);
      todo.swap(again);
    }
    up = true;
    backoff_ns = std::chrono::duration_cast<Nanos>(options.backoff_initial).count();
    // The nodes connected now start afresh after their next failure (a
    // node that failed has no connection and keeps its backoff).
    for (detail::RedisNode& n : nodes)
      if (n.ctx != nullptr) n.backoff_ns = 0;
    return true;
  } catch (...) {  // std::bad_alloc
    fail("out of memory", nullptr);
    return false;
  }
}

namespace {

std::string num(std::uint64_t v) { return std::to_string(v); }

// EVALSHA sha numkeys key... op now need (alg count period burst emission align cost)...
std::vector<std::string> evalsha_argv(const ScriptCall& c) {
  std::vector<std::string> a;
  a.reserve(3 + c.keys.size() * 8 + 3);
  a.emplace_back("EVALSHA");
  a.emplace_back();  // the script's sha, set when the call is sent
  a.push_back(num(c.keys.size()));
  for (const auto& k : c.keys) a.push_back(k);
  a.push_back(c.op);
  a.push_back(c.now_us >= 0 ? std::to_string(c.now_us) : std::string());
  a.push_back(c.token.empty() ? num(c.need) : c.token);
  for (std::size_t i = 0; i < c.keys.size(); ++i) {
    const detail::AlgoParams& p = c.policies[i]->algo;
    a.push_back(num(static_cast<std::uint64_t>(p.algorithm)));
    a.push_back(num(p.count));
    // A concurrency lease has no period: this place carries its TTL.
    a.push_back(
        num(p.algorithm == Algorithm::kConcurrency ? c.policies[i]->lease_ttl_ns : p.period_ns));
    a.push_back(num(p.burst));
    a.push_back(num(p.emission_ns));
    // The sliding log has no time origin: this place carries its LogWait.
    a.push_back(p.algorithm == Algorithm::kSlidingLog
                    ? num(static_cast<std::uint64_t>(c.policies[i]->policy.spec.wait))
                    : num(c.policies[i]->align_us));
    a.push_back(num(c.costs[i]));
  }
  return a;
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
    std::vector<detail::RoutedCommand> cmds(calls.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      cmds[i].argv = evalsha_argv(calls[i]);
      cmds[i].script = true;
      // A call's keys share one slot (the caller groups them so).
      cmds[i].slot = calls[i].keys.empty() ? 0 : slot_of(calls[i].keys[0]);
    }
    if (!route(cmds)) return false;
    out->assign(calls.size(), {});
    for (std::size_t i = 0; i < calls.size(); ++i) {
      const auto* r = static_cast<const redisReply*>(cmds[i].reply.get());
      if (r->type == REDIS_REPLY_ERROR) {
        fail("Redis script error: " + std::string(r->str, r->len), nullptr);
        return false;
      }
      if (!parse(r, calls[i].keys.size(), &(*out)[i])) {
        fail("Redis: unexpected script reply", nullptr);
        return false;
      }
    }
    return true;
  } catch (...) {  // std::bad_alloc: no decision from Redis
    fail("out of memory", nullptr);
    return false;
  }
}

bool RedisLimiter::Impl::del(const std::string& key) noexcept {
  try {
    std::vector<detail::RoutedCommand> cmds(1);
    cmds[0].argv = {"DEL", key};
    cmds[0].slot = slot_of(key);
    if (!route(cmds)) return false;
    return static_cast<const redisReply*>(cmds[0].reply.get())->type == REDIS_REPLY_INTEGER;
  } catch (...) {
    return false;
  }
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
