// A real redis-server (the Debian package) for tests and benchmarks: on a
// free loopback port (the kernel picks it: bind port 0, read it back) or a
// unix socket in a fresh temporary directory, with no persistence
// (--save '' --appendonly no). Started by the constructor, stopped (SIGTERM,
// then SIGKILL after 10 s) by the destructor; it also gets SIGTERM if the
// test process dies (PR_SET_PDEATHSIG). stop()/start() restart it on the
// same port or socket; kill() is a crash (SIGKILL).
//
// ServerProcess, the launcher under it, starts any such server (the
// benchmarks' memcached too).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace shmlimit::test {

/// A server process of our own: fork + exec of argv (stdio to /dev/null,
/// SIGTERM if we die), then polled until ready() (30 s at most). end()
/// signals it and reaps it (SIGKILL after 10 s). Not copyable.
class ServerProcess {
 public:
  ServerProcess() = default;
  ~ServerProcess() { end(SIGTERM); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }

  /// Does nothing while one is running; throws std::runtime_error when it
  /// exits at start or is not ready within 30 s.
  void start(std::vector<std::string> argv, const std::function<bool()>& ready) {
    if (pid_ > 0) return;
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
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!ready()) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        throw std::runtime_error(argv[0] + " exited at start");
      }
      if (std::chrono::steady_clock::now() > deadline) {
        end(SIGTERM);
        throw std::runtime_error(argv[0] + " did not accept connections within 30 s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  /// Sends sig and waits for the process (SIGKILL after 10 s).
  void end(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pid_ = 0;
  }

  /// True when prog is an executable in a directory of $PATH.
  static bool on_path(const std::string& prog) {
    const char* path = std::getenv("PATH");
    std::string p = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= p.size()) {
      const std::size_t end = p.find(':', start);
      const std::string dir =
          p.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
      if (end == std::string::npos) break;
      start = end + 1;
    }
    return false;
  }

  /// A free TCP port on 127.0.0.1 (the kernel picks it; another process may
  /// bind it before the server does, which is unlikely).
  static int free_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) throw std::runtime_error("socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(s);
      throw std::runtime_error("bind to a free port failed");
    }
    ::close(s);
    return ntohs(a.sin_port);
  }

  /// True when something accepts a connection on 127.0.0.1:port.
  static bool can_connect_tcp(int port) {
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

 private:
  pid_t pid_ = 0;
};

class RedisServer {
 public:
  enum class Transport { kTcp, kUnix };

  /// `extra` is appended to redis-server's arguments (e.g. {"--requirepass", "pw"}).
  explicit RedisServer(Transport transport = Transport::kTcp, std::vector<std::string> extra = {})
      : transport_(transport), extra_(std::move(extra)) {
    if (transport_ == Transport::kTcp) {
      port_ = ServerProcess::free_port();
    } else {
      char tmpl[] = "/tmp/shmlimit-redis-XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
      dir_ = tmpl;
      socket_ = dir_ + "/redis.sock";
    }
    start();
  }
  ~RedisServer() {
    stop();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  /// True when redis-server is installed (tests skip otherwise).
  static bool available() {
    return ::access("/usr/bin/redis-server", X_OK) == 0 || ServerProcess::on_path("redis-server");
  }

  int port() const { return port_; }
  const std::string& socket() const { return socket_; }
  pid_t pid() const { return process_.pid(); }

  void start() {
    std::vector<std::string> argv{
        "redis-server", "--save",           "",  "--appendonly", "no", "--daemonize",
        "no",           "--protected-mode", "no"};
    if (transport_ == Transport::kTcp) {
      argv.insert(argv.end(), {"--port", std::to_string(port_), "--bind", "127.0.0.1"});
    } else {
      argv.insert(argv.end(), {"--port", "0", "--unixsocket", socket_, "--unixsocketperm", "700"});
    }
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    process_.start(std::move(argv), [this] { return can_connect(); });
  }

  /// SIGTERM and wait (SIGKILL after 10 s).
  void stop() { process_.end(SIGTERM); }
  /// A crash: SIGKILL and wait.
  void kill() { process_.end(SIGKILL); }

 private:
  bool can_connect() const {
    if (transport_ == Transport::kTcp) return ServerProcess::can_connect_tcp(port_);
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0) return false;
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, socket_.c_str(), sizeof a.sun_path - 1);
    const bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(s);
    return ok;
  }

  Transport transport_;
  std::vector<std::string> extra_;
  int port_ = 0;
  std::string dir_;
  std::string socket_;
  ServerProcess process_;
};

}  // namespace shmlimit::test
