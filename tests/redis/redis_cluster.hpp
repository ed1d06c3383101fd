// A real Redis Cluster for tests and benchmarks: `nodes` redis-server
// processes (the Debian package) on free loopback ports, with cluster mode
// and no persistence, joined by `redis-cli --cluster create
// --cluster-replicas <r> --cluster-yes`, then polled until every node
// reports cluster_state:ok and agrees on all 16384 slots (60 s at most).
// Each process is a ServerProcess (SIGTERM if the test dies); kill(port) is
// a crash (SIGKILL). The cluster's files live in a fresh temporary
// directory, removed by the destructor.
#pragma once

#include <hiredis/hiredis.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.hpp"

namespace shmlimit::test {

/// A raw hiredis connection to one node, for inspecting and steering it.
class NodeConn {
 public:
  explicit NodeConn(int port) {
    const timeval tv{30, 0};
    ctx_ = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (ctx_ == nullptr || ctx_->err != 0) {
      if (ctx_ != nullptr) redisFree(ctx_);
      throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    }
    redisSetTimeout(ctx_, tv);
  }
  ~NodeConn() { redisFree(ctx_); }
  NodeConn(const NodeConn&) = delete;
  NodeConn& operator=(const NodeConn&) = delete;

  /// One command (argv); the reply (caller frees with freeReplyObject via the deleter).
  struct Free {
    void operator()(redisReply* r) const { freeReplyObject(r); }
  };
  using Reply = std::unique_ptr<redisReply, Free>;
  Reply cmd(const std::vector<std::string>& argv) {
    std::vector<const char*> p;
    std::vector<std::size_t> l;
    for (const auto& a : argv) {
      p.push_back(a.data());
      l.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), p.data(), l.data()));
    if (r == nullptr) throw std::runtime_error("Redis command failed: " + argv[0]);
    return Reply(r);
  }
  std::string text(const std::vector<std::string>& argv) {
    Reply r = cmd(argv);
    return r->str != nullptr ? std::string(r->str, r->len) : std::string();
  }
  long long integer(const std::vector<std::string>& argv) {
    Reply r = cmd(argv);
    return r->type == REDIS_REPLY_INTEGER ? r->integer : -1000;
  }

 private:
  redisContext* ctx_ = nullptr;
};

class RedisCluster {
 public:
  /// True when redis-server and redis-cli are installed (tests skip otherwise).
  static bool available() {
    return RedisServer::available() && ServerProcess::on_path("redis-cli");
  }

  explicit RedisCluster(int masters = 3, int replicas_per_master = 1,
                        std::vector<std::string> extra = {})
      : extra_(std::move(extra)) {
    char tmpl[] = "/tmp/shmlimit-cluster-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    try {
      start_all(masters, replicas_per_master);
    } catch (...) {
      procs_.clear();
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      throw;
    }
  }

 private:
  void start_all(int masters, int replicas_per_master) {
    const int n = masters * (1 + replicas_per_master);
    for (int i = 0; i < n; ++i) {
      const int port = ServerProcess::free_port();
      ports_.push_back(port);
      // The cluster bus on a free port of its own (the default, port +
      // 10000, may be taken or beyond 65535).
      bus_ports_[port] = ServerProcess::free_port();
      procs_[port] = std::make_unique<ServerProcess>();
      start_node(port);
    }
    std::vector<std::string> argv{"redis-cli", "--cluster", "create"};
    for (const int p : ports_) argv.push_back("127.0.0.1:" + std::to_string(p));
    argv.insert(argv.end(),
                {"--cluster-replicas", std::to_string(replicas_per_master), "--cluster-yes"});
    if (run_tool(argv) != 0) throw std::runtime_error("redis-cli --cluster create failed");
    wait_ok();
  }

 public:
  ~RedisCluster() {
    procs_.clear();  // SIGTERM each
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  const std::vector<int>& ports() const { return ports_; }
  /// "127.0.0.1:port" of every node (seeds for RedisOptions::cluster).
  std::vector<std::string> seeds() const {
    std::vector<std::string> s;
    for (const int p : ports_) s.push_back("127.0.0.1:" + std::to_string(p));
    return s;
  }

  /// The port of the master serving `slot`, as node `via` sees it (-1: none).
  int master_of(int slot, int via = 0) {
    for (const int port : ports_) {
      if (via-- > 0 || !alive(port)) continue;
      try {
        NodeConn c(port);
        NodeConn::Reply r = c.cmd({"CLUSTER", "SLOTS"});
        if (r->type != REDIS_REPLY_ARRAY) continue;
        for (std::size_t i = 0; i < r->elements; ++i) {
          const redisReply* e = r->element[i];
          if (slot >= e->element[0]->integer && slot <= e->element[1]->integer)
            return static_cast<int>(e->element[2]->element[1]->integer);
        }
        return -1;
      } catch (const std::exception&) {
      }
    }
    return -1;
  }
  /// The master port of every slot, as the first live node sees it (-1: none).
  std::vector<int> slot_map() {
    std::vector<int> map(16384, -1);
    for (const int port : ports_) {
      if (!alive(port)) continue;
      NodeConn c(port);
      NodeConn::Reply r = c.cmd({"CLUSTER", "SLOTS"});
      if (r->type != REDIS_REPLY_ARRAY) continue;
      for (std::size_t i = 0; i < r->elements; ++i) {
        const redisReply* e = r->element[i];
        for (long long s = e->element[0]->integer; s <= e->element[1]->integer; ++s)
          map[static_cast<std::size_t>(s)] = static_cast<int>(e->element[2]->element[1]->integer);
      }
      return map;
    }
    return map;
  }
  /// The node id of the node on `port`.
  std::string node_id(int port) {
    NodeConn c(port);
    return c.text({"CLUSTER", "MYID"});
  }
  std::vector<int> masters() {
    std::vector<int> out;
    for (const int port : ports_) {
      if (!alive(port)) continue;
      NodeConn c(port);
      const std::string info = c.text({"INFO", "replication"});
      if (info.find("role:master") != std::string::npos) out.push_back(port);
    }
    return out;
  }

  bool alive(int port) const { return procs_.at(port)->pid() > 0; }
  /// A crash: SIGKILL the node and reap it.
  void kill(int port) { procs_.at(port)->end(SIGKILL); }

  /// Polls every live node until each reports cluster_state:ok, agrees on
  /// who serves all 16384 slots (with `masters` masters; default: any)
  /// and, for a replica, has its link to its master up. 60 s at most.
  void wait_ok(int want_masters = -1) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      if (all_ok(want_masters)) return;
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("the Redis Cluster did not reach cluster_state:ok within 60 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  /// Runs a redis-cli (or other) command to completion (120 s at most);
  /// its exit status.
  int run_tool(std::vector<std::string> argv) {
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
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
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  void start_node(int port) {
    const std::string conf = dir_ + "/nodes-" + std::to_string(port) + ".conf";
    std::vector<std::string> argv{"redis-server",
                                  "--port",
                                  std::to_string(port),
                                  "--bind",
                                  "127.0.0.1",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--daemonize",
                                  "no",
                                  "--protected-mode",
                                  "no",
                                  "--dir",
                                  dir_,
                                  "--dbfilename",
                                  "dump-" + std::to_string(port) + ".rdb",
                                  "--cluster-enabled",
                                  "yes",
                                  "--cluster-port",
                                  std::to_string(bus_ports_.at(port)),
                                  "--cluster-config-file",
                                  conf,
                                  "--cluster-node-timeout",
                                  "1500",
                                  "--cluster-replica-validity-factor",
                                  "0",
                                  "--repl-diskless-sync-delay",
                                  "0",
                                  "--cluster-require-full-coverage",
                                  "no"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    procs_.at(port)->start(std::move(argv),
                           [port] { return ServerProcess::can_connect_tcp(port); });
  }

  bool all_ok(int want_masters) {
    std::string first;
    for (const int port : ports_) {
      if (!alive(port)) continue;
      try {
        NodeConn c(port);
        const std::string info = c.text({"CLUSTER", "INFO"});
        if (info.find("cluster_state:ok") == std::string::npos) return false;
        // A replica has finished its first sync (it could not take over
        // its master's writes before).
        const std::string repl = c.text({"INFO", "replication"});
        if (repl.find("role:slave") != std::string::npos &&
            repl.find("master_link_status:up") == std::string::npos)
          return false;
        if (info.find("cluster_slots_assigned:16384") == std::string::npos) return false;
        // Every node must see the same masters for the slots.
        NodeConn::Reply r = c.cmd({"CLUSTER", "SLOTS"});
        if (r->type != REDIS_REPLY_ARRAY) return false;
        std::map<long long, long long> starts;
        for (std::size_t i = 0; i < r->elements; ++i) {
          const redisReply* e = r->element[i];
          starts[e->element[0]->integer] = e->element[2]->element[1]->integer;
        }
        if (want_masters >= 0) {
          std::map<long long, int> distinct;
          for (const auto& [s, p] : starts) distinct[p] = 1;
          if (static_cast<int>(distinct.size()) != want_masters) return false;
        }
        std::string view;
        for (const auto& [s, p] : starts) view += std::to_string(s) + "@" + std::to_string(p) + ",";
        if (first.empty()) {
          first = view;
        } else if (view != first) {
          return false;
        }
      } catch (const std::exception&) {
        return false;
      }
    }
    return true;
  }

  std::vector<std::string> extra_;
  std::string dir_;
  std::vector<int> ports_;
  std::map<int, int> bus_ports_;
  std::map<int, std::unique_ptr<ServerProcess>> procs_;
};

}  // namespace shmlimit::test
