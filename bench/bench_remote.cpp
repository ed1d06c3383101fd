// Alternatives over the network (issue #7): Redis (EVALSHA of a GCRA Lua
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

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef SHMLIMIT_BENCH_HAVE_REDIS
#include <hiredis/hiredis.h>
#endif
#ifdef SHMLIMIT_BENCH_HAVE_MEMCACHED
#include <libmemcached/memcached.h>
#endif

namespace {

std::int64_t now_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A free TCP port on 127.0.0.1 (the kernel picks it; a race with another
// process binding it meanwhile is possible but unlikely).
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(s);
    throw std::runtime_error("bind to a free port failed");
  }
  ::close(s);
  return ntohs(a.sin_port);
}

bool can_connect(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(s);
  return ok;
}

bool on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::string p = path != nullptr ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t end = p.find(':', start);
    const std::string dir = p.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return false;
}

// A server process of our own: started on construction, SIGTERM + waitpid
// on destruction (SIGKILL after 5 s).
class Server {
 public:
  explicit Server(std::vector<std::string> argv, int port) : port_(port) {
    if (!on_path(argv[0])) throw std::runtime_error(argv[0] + " not found on PATH");
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      const int devnull = ::open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        ::dup2(devnull, 0);
        ::dup2(devnull, 1);
        ::dup2(devnull, 2);
      }
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    const std::int64_t deadline = now_ns() + 10'000'000'000;
    while (!can_connect(port_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        throw std::runtime_error(argv[0] + " exited at start");
      }
      if (now_ns() > deadline) {
        stop();
        throw std::runtime_error(argv[0] + " did not accept connections within 10 s");
      }
      ::usleep(10'000);
    }
  }
  ~Server() { stop(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  int port() const { return port_; }

 private:
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const std::int64_t deadline = now_ns() + 5'000'000'000;
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) break;
      if (now_ns() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      ::usleep(1000);
    }
    pid_ = 0;
  }
  pid_t pid_ = 0;
  int port_;
};

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
    const int port = free_port();
    server = std::make_unique<Server>(
        std::vector<std::string>{"redis-server", "--port", std::to_string(port), "--bind",
                                 "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--protected-mode", "no", "--daemonize", "no"},
        port);
    ctx = ::redisConnect("127.0.0.1", port);
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
  std::unique_ptr<Server> server;
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
    const int port = free_port();
    std::vector<std::string> argv{"memcached", "-p", std::to_string(port), "-l", "127.0.0.1",
                                  "-U", "0", "-m", "64"};
    if (::geteuid() == 0) {
      argv.emplace_back("-u");
      argv.emplace_back("root");
    }
    server = std::make_unique<Server>(argv, port);
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
    const memcached_return_t rc = ::memcached_increment_with_initial(
        memc, k, static_cast<std::size_t>(n), 1, 1, 2, &value);
    if (rc != MEMCACHED_SUCCESS) return -1;
    return value <= limit ? 1 : 0;
  }
  std::unique_ptr<Server> server;
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
    if (bad != 0) state.SkipWithError((std::to_string(bad) + " decisions were not admitted").c_str());
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
    if (bad != 0) state.SkipWithError((std::to_string(bad) + " decisions were not admitted").c_str());
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
