// shmlimit-server: a prefork HTTP/1.1 server that rate-limits every request
// through one shmlimit segment shared by all its workers (doc/server.md).
//
//   shmlimit-server --config server.toml [--listen 127.0.0.1:0] [--workers N]
//
// The master opens (or creates) the segment and registers the policies of
// the `limiter` file, binds one listening socket and forks N workers that
// all accept() on it. It prints "listening on HOST:PORT" and one line per
// worker start and exit on stdout, reaps and respawns workers that die,
// and on SIGTERM or SIGINT stops them (each finishes the request in hand)
// and exits 0.
//
//
// This file: the master (listening socket, workers, signals) and main();
// the worker is in worker.cpp.
// Each worker serves one request per connection and closes it
// (`Connection: close`): a blocking prefork worker held by an idle
// keep-alive client could serve nobody else. Requests are parsed by
// Boost.Beast's HTTP parser with hard limits (header bytes, body bytes, a
// read timeout). Per request: client identity (shmlimit/identity.hpp) ->
// allow/deny lists -> the route's policies, all or nothing
// (Limiter::acquire_many) -> 200, or the refuse status with Retry-After,
// X-RateLimit-* and RateLimit-Policy/RateLimit headers (shmlimit/http.hpp).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server_config.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/http.hpp"
#include "shmlimit/identity.hpp"
#include "shmlimit/shmlimit.hpp"
#include "worker.hpp"

namespace http = boost::beast::http;
namespace net = boost::asio;
using boost::system::error_code;
using shmlimit::server::Route;
using shmlimit::server::ServerConfig;

namespace {

using prefork::worker_main;

// ---------------------------------------------------------------------------
// The master
// ---------------------------------------------------------------------------
int open_listener(const ServerConfig& c, std::string* bound) {
  const bool v6 = c.host.find(':') != std::string::npos;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(ss);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(c.port);
    ::inet_pton(AF_INET6, c.host.c_str(), &a.sin6_addr);
    len = sizeof a;
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    a.sin_family = AF_INET;
    a.sin_port = htons(c.port);
    ::inet_pton(AF_INET, c.host.c_str(), &a.sin_addr);
    len = sizeof a;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, c.backlog) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("cannot listen on " + c.host + ":" + std::to_string(c.port) + ": " +
                             why);
  }
  len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const unsigned port = ntohs(v6 ? reinterpret_cast<sockaddr_in6&>(ss).sin6_port
                                 : reinterpret_cast<sockaddr_in&>(ss).sin_port);
  *bound = (v6 ? "[" + c.host + "]" : c.host) + ":" + std::to_string(port);
  return fd;
}

struct Child {
  pid_t pid = 0;
  std::chrono::steady_clock::time_point started;
};

pid_t spawn(const ServerConfig& config, int listen_fd) {
  const pid_t master = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) worker_main(config, listen_fd, master);
  if (pid > 0) {
    std::printf("worker %d started\n", static_cast<int>(pid));
    std::fflush(stdout);
  } else {
    std::fprintf(stderr, "shmlimit-server: fork: %s\n", std::strerror(errno));
  }
  return pid;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

int run_master(const ServerConfig& config) {
  // The socket first (a port in use creates no segment), then the segment
  // and its policies, once, before any worker.
  std::string bound;
  const int listen_fd = open_listener(config, &bound);
  shmlimit::Limiter limiter = shmlimit::open_config(config.limiter);

  sigset_t handled;
  ::sigemptyset(&handled);
  for (const int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) ::sigaddset(&handled, s);
  ::sigprocmask(SIG_BLOCK, &handled, nullptr);  // workers inherit the mask, see worker_main
  ::signal(SIGPIPE, SIG_IGN);

  std::printf("shmlimit-server: listening on %s with %u workers, segment %s (pid %d)\n",
              bound.c_str(), config.workers, config.limiter.segment.name.c_str(),
              static_cast<int>(::getpid()));
  std::fflush(stdout);

  std::vector<Child> children(config.workers);
  for (Child& c : children) {
    c.pid = spawn(config, listen_fd);
    c.started = std::chrono::steady_clock::now();
  }

  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  for (;;) {
    // Reap whatever died; respawn unless stopping (a worker that dies within
    // a second of its start is respawned only after that second).
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (Child& c : children) {
        if (c.pid != pid) continue;
        c.pid = 0;
        std::printf("worker %d exited (%s)\n", static_cast<int>(pid), describe(status).c_str());
        std::fflush(stdout);
      }
    }
    const auto now = std::chrono::steady_clock::now();
    bool any_alive = false;
    for (Child& c : children) {
      if (c.pid == 0 && !stopping && now - c.started >= std::chrono::seconds(1)) {
        c.pid = spawn(config, listen_fd);
        c.started = now;
      }
      any_alive = any_alive || c.pid > 0;
    }
    if (stopping && !any_alive) break;
    if (stopping && now >= stop_deadline) {
      for (const Child& c : children) {
        if (c.pid > 0) ::kill(c.pid, SIGKILL);
      }
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }

    const timespec tick{0, 200'000'000};  // also paces the respawn of crash loops
    siginfo_t info;
    const int sig = ::sigtimedwait(&handled, &info, &tick);
    if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      std::printf("shmlimit-server: %s, stopping %zu workers\n",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT", children.size());
      std::fflush(stdout);
      for (const Child& c : children) {
        if (c.pid > 0) ::kill(c.pid, SIGTERM);
      }
    }
  }
  ::close(listen_fd);
  std::printf("shmlimit-server: stopped\n");
  std::fflush(stdout);
  return 0;
}

void usage(std::FILE* out) {
  std::fputs(
      "usage: shmlimit-server --config FILE [--listen HOST:PORT] [--workers N] [--check]\n"
      "  --config FILE       the server's TOML file (doc/server.md)\n"
      "  --listen HOST:PORT  overrides [server] listen; port 0 picks a free port\n"
      "  --workers N         overrides [server] workers (1..256)\n"
      "  --check             validate the configuration (and its limiter file), then exit\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, listen, workers;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "shmlimit-server: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      *out = argv[++i];
    };
    if (arg == "--config") {
      value(&config_path);
    } else if (arg == "--listen") {
      value(&listen);
    } else if (arg == "--check") {
      check_only = true;
    } else if (arg == "--workers") {
      value(&workers);
    } else if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "shmlimit-server: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (config_path.empty()) {
    usage(stderr);
    return 2;
  }
  try {
    ServerConfig config = shmlimit::server::load_server_config(config_path);
    shmlimit::server::apply_overrides(config, listen, workers);
    if (check_only) {
      const std::string metrics =
          config.metrics.path.empty() ? "" : ", metrics at " + config.metrics.path;
      std::printf("%s: ok: %zu routes%s, %zu policies in %s, %u workers on %s:%u\n",
                  config_path.c_str(), config.routes.size(), metrics.c_str(),
                  config.limiter.policies.size(), config.limiter_path.c_str(), config.workers,
                  config.host.c_str(), static_cast<unsigned>(config.port));
      return 0;
    }
    return run_master(config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmlimit-server: %s\n", e.what());
    return 2;
  }
}
