// shmlimit-server's worker process (doc/server.md): accepts on the shared
// listening socket and serves one request per connection.
//
// Each worker serves one request per connection and closes it
// (`Connection: close`): a blocking prefork worker held by an idle
// keep-alive client could serve nobody else. Requests are parsed by
// Boost.Beast's HTTP parser with hard limits (header bytes, body bytes, a
// read timeout). Per request: client identity (shmlimit/identity.hpp) ->
// allow/deny lists -> the route's policies, all or nothing
// (Limiter::acquire_many) -> 200, or the refuse status with Retry-After,
// X-RateLimit-* and RateLimit-Policy/RateLimit headers (shmlimit/http.hpp).
// The optional metrics path answers, before the routes, with the segment's
// Prometheus text from the same functions as `shmlimit metrics` and
// `shmlimit exporter` (tools/inspect.hpp).
#include "worker.hpp"

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

#include <algorithm>
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
#include <thread>
#include <vector>

#include "inspect.hpp"  // tools/: the CLI's Prometheus renderer
#include "server_config.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/http.hpp"
#include "shmlimit/identity.hpp"
#include "shmlimit/shmlimit.hpp"

namespace http = boost::beast::http;
namespace net = boost::asio;
using boost::system::error_code;
using shmlimit::server::Route;
using shmlimit::server::ServerConfig;

namespace {

// ---------------------------------------------------------------------------
// A blocking socket as a Beast SyncReadStream
// ---------------------------------------------------------------------------
class FdStream {
 public:
  explicit FdStream(int fd) : fd_(fd) {}

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, error_code& ec) {
    for (auto it = net::buffer_sequence_begin(buffers); it != net::buffer_sequence_end(buffers);
         ++it) {
      const net::mutable_buffer b = *it;
      if (b.size() == 0) continue;
      for (;;) {
        const ssize_t n = ::read(fd_, b.data(), b.size());
        if (n > 0) {
          ec = {};
          return static_cast<std::size_t>(n);
        }
        if (n == 0) {
          ec = net::error::eof;
          return 0;
        }
        if (errno == EINTR) continue;
        ec = error_code(errno, boost::system::system_category());  // EAGAIN: SO_RCVTIMEO expired
        return 0;
      }
    }
    ec = {};
    return 0;
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  int fd_;
};

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

const char* status_text(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return status >= 500 ? "Server Error" : "Client Error";
  }
}

std::string json_dump(const nlohmann::json& j) {
  // Keys come from request headers: any bytes. Invalid UTF-8 is replaced.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

struct Response {
  int status = 200;
  std::string headers;  // extra "Name: value\r\n" lines
  std::string body;
  const char* content_type = nullptr;  // nullptr: JSON or text, as configured
};

void send_response(int fd, const Response& r, bool json, bool head) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + status_text(r.status) + "\r\n";
  out += "Content-Type: ";
  out += r.content_type != nullptr ? r.content_type
         : json                    ? "application/json"
                                   : "text/plain; charset=utf-8";
  out += "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  out += "Connection: close\r\n";
  out += r.headers;
  out += "\r\n";
  if (!head) out += r.body;
  write_all(fd, out);
}

Response error_response(int status, std::string_view detail, bool json) {
  Response r;
  r.status = status;
  r.body = json ? json_dump({{"detail", detail}}) : std::string(detail) + "\n";
  return r;
}

// ---------------------------------------------------------------------------
// The worker: one request per connection
// ---------------------------------------------------------------------------
struct ResolvedRoute {
  const Route* route = nullptr;
  std::vector<shmlimit::PolicyId> ids;
  std::vector<shmlimit::PolicySpec> specs;  // same order as ids
  std::vector<shmlimit::Nanos> windows;
};

class Worker {
 public:
  Worker(const ServerConfig& config, shmlimit::Limiter limiter)
      : config_(config), limiter_(std::move(limiter)) {
    std::map<std::uint32_t, shmlimit::PolicySpec> specs;
    for (const shmlimit::PolicyView& v : limiter_.policies()) specs[v.id.index] = v.spec;
    for (const Route& route : config_.routes) {
      ResolvedRoute rr;
      rr.route = &route;
      for (const std::string& name : route.policies) {
        const std::vector<shmlimit::PolicyId> group = shmlimit::policy_group(limiter_, name);
        if (group.empty()) {
          throw shmlimit::Error(shmlimit::ErrorCode::kNotFound,
                                "route \"" + route.prefix + "\": policy \"" + name +
                                    "\" is not in " + limiter_.name());
        }
        for (const shmlimit::PolicyId id : group) {
          rr.ids.push_back(id);
          rr.specs.push_back(specs[id.index]);
          rr.windows.push_back(shmlimit::policy_window(specs[id.index]));
        }
      }
      if (route.max_wait.count() > 0 && rr.ids.size() != 1) {
        throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                              "route \"" + route.prefix +
                                  "\": max_wait needs exactly one policy, "
                                  "and \"" +
                                  route.policies.at(0) + "\" names " +
                                  std::to_string(rr.ids.size()));
      }
      routes_.push_back(std::move(rr));
    }
  }

  // Answers one request. Returns true when the request was not read to its
  // end (a refused header block or body), so the caller drains the rest
  // before closing: closing with unread input sends a TCP reset, which can
  // destroy the response before the client reads it.
  bool serve(int fd, const std::string& peer) {
    FdStream stream(fd);
    boost::beast::flat_buffer buffer(config_.max_header_bytes + 4096);
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(config_.max_header_bytes));
    parser.body_limit(config_.max_body_bytes);
    error_code ec;
    http::read(stream, buffer, parser, ec);
    if (ec == http::error::end_of_stream || ec == net::error::eof)
      return false;  // closed before a request
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      send_response(fd, error_response(431, "Request header fields too large.", config_.json),
                    config_.json, false);
      return true;
    }
    if (ec == http::error::body_limit) {
      send_response(fd, error_response(413, "Request body too large.", config_.json), config_.json,
                    false);
      return true;
    }
    if (ec && ec.category() == boost::system::system_category())
      return false;  // timeout, reset: nobody to answer
    if (ec) {
      send_response(fd,
                    error_response(400, "Malformed request: " + ec.message() + ".", config_.json),
                    config_.json, false);
      return true;
    }
    const auto& req = parser.get();
    const bool head = req.method() == http::verb::head;
    send_response(fd, handle(req, peer), config_.json, head);
    return false;
  }

 private:
  // All values of a header, joined with ", " (RFC 9110 5.3); nullopt if absent.
  static std::optional<std::string> joined(const http::request<http::string_body>& req,
                                           std::string_view name) {
    std::optional<std::string> out;
    for (auto [it, end] = req.equal_range(boost::beast::string_view(name.data(), name.size()));
         it != end; ++it) {
      if (!out) {
        out.emplace();
      } else {
        *out += ", ";
      }
      out->append(it->value().data(), it->value().size());
    }
    return out;
  }

  Response handle(const http::request<http::string_body>& req, const std::string& peer) {
    const std::optional<std::string> xff = joined(req, "X-Forwarded-For");
    const std::optional<std::string> fwd = joined(req, "Forwarded");
    shmlimit::RequestInfo info;
    info.remote_addr = peer;
    if (xff) info.x_forwarded_for = *xff;
    if (fwd) info.forwarded = *fwd;
    const shmlimit::Identity who = shmlimit::client_identity(info, config_.identity);
    const std::string_view target(req.target().data(), req.target().size());
    const bool json = config_.json;

    const shmlimit::Access access = config_.access.classify(who.address);
    if (access == shmlimit::Access::kDeny) {
      return error_response(403, "Forbidden.", json);
    }
    if (shmlimit::server::is_metrics_path(config_, target)) return metrics(req, who);
    const ResolvedRoute* rr = nullptr;
    if (const Route* route = shmlimit::server::match_route(config_, target)) {
      for (const ResolvedRoute& candidate : routes_) {
        if (candidate.route == route) rr = &candidate;
      }
    }
    if (rr == nullptr) return error_response(404, "Not found.", json);

    Response r;
    std::int64_t delayed_ms = -1;  // a route with max_wait: how long the request waited its turn
    const auto ok_body = [&](std::optional<std::uint64_t> remaining) {
      if (json) {
        nlohmann::json j = {{"client", who.key},
                            {"route", rr->route->prefix},
                            {"access", shmlimit::to_string(access)}};
        if (remaining) j["remaining"] = *remaining;
        if (delayed_ms >= 0) j["delayed_ms"] = delayed_ms;
        return json_dump(j);
      }
      return "ok: client " + who.key + ", route " + rr->route->prefix + "\n";
    };
    if (access == shmlimit::Access::kAllow || rr->ids.empty()) {
      r.body = ok_body(std::nullopt);  // never limited: no rate-limit headers
      return r;
    }

    const std::string key =
        rr->route->scope.empty()
            ? who.key
            : shmlimit::throttle_key(rr->route->scope, who.key, limiter_.max_key_bytes());
    shmlimit::Request requests[16];
    shmlimit::Decision each[16];
    const std::size_t n = rr->ids.size();
    for (std::size_t i = 0; i < n; ++i) requests[i] = shmlimit::Request{rr->ids[i], key, 1};
    // A route with max_wait queues a request past the burst for its turn
    // (one policy, checked at start) instead of refusing it.
    shmlimit::Decision d;
    if (rr->route->max_wait.count() > 0) {
      shmlimit::Reservation turn = limiter_.reserve(rr->ids[0], key, 1, rr->route->max_wait);
      d = turn.decision();
      each[0] = d;
      if (turn.ok()) {
        delayed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(turn.delay()).count();
        if (turn.delay().count() > 0) std::this_thread::sleep_for(turn.delay());
      }
    } else {
      d = limiter_.acquire_many({requests, n}, {each, n});
    }

    shmlimit::PolicyReport reports[16];
    for (std::size_t i = 0; i < n; ++i) {
      reports[i] = shmlimit::PolicyReport{rr->specs[i].name, each[i], rr->windows[i]};
    }
    const shmlimit::HttpVerdict v = shmlimit::http_verdict(d, config_.http);
    char block[2048];
    const std::size_t len =
        shmlimit::write_rate_limit_headers(d, {reports, n}, config_.http, block);
    if (len < sizeof block) {
      r.headers.assign(block, len);
    } else {
      for (const shmlimit::Header& h :
           shmlimit::rate_limit_headers(d, {reports, n}, config_.http)) {
        r.headers += h.name + ": " + h.value + "\r\n";
      }
    }
    if (v.refuse) {
      r.status = v.status;
      const std::optional<shmlimit::Nanos> wait =
          v.retry_after_s > 0 ? std::optional<shmlimit::Nanos>(d.retry_after) : std::nullopt;
      const std::string detail = shmlimit::drf_throttled_detail(wait);
      if (json) {
        nlohmann::json j = {{"detail", detail}};
        if (v.retry_after_s > 0) j["retry_after"] = v.retry_after_s;
        r.body = json_dump(j);
      } else {
        r.body = detail + "\n";
      }
      return r;
    }
    r.body = ok_body(d.remaining);
    return r;
  }

  // The metrics path: the segment as `shmlimit metrics NAME` prints it
  // (opened read-only for the scrape; shmlimit_up 0 if it is gone).
  // Never limited and never counted.
  Response metrics(const http::request<http::string_body>& req, const shmlimit::Identity& who) {
    const auto& allow = config_.metrics.allow;
    if (!allow.empty() &&
        (!who.address || std::none_of(allow.begin(), allow.end(), [&](const shmlimit::Cidr& c) {
          return c.contains(*who.address);
        }))) {
      return error_response(403, "Forbidden.", config_.json);
    }
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      Response r = error_response(405, "Only GET and HEAD.", config_.json);
      r.headers = "Allow: GET, HEAD\r\n";
      return r;
    }
    Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = shmlimit::tools::render_metrics({shmlimit::tools::read_segment_metrics(
        config_.limiter.segment.name, config_.limiter.segment.allow_other_users)});
    return r;
  }

  const ServerConfig& config_;
  shmlimit::Limiter limiter_;
  std::vector<ResolvedRoute> routes_;
};

volatile sig_atomic_t g_stop = 0;
extern "C" void on_stop(int) { g_stop = 1; }

std::string peer_text(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, buf, sizeof buf);
  }
  return buf;
}

// Lingering close (nginx's lingering_close): after shutdown(SHUT_WR), reads
// and discards what the client still sends, until it closes, 1 MiB or 2 s,
// so that close() does not reset a connection whose response is in flight.
void drain_input(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  char sink[16384];
  std::size_t total = 0;
  while (total < (1U << 20)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) break;
    const ssize_t n = ::read(fd, sink, sizeof sink);
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
  }
}

}  // namespace

namespace prefork {

// Runs in the forked child; never returns.
[[noreturn]] void worker_main(const ServerConfig& config, int listen_fd, pid_t master) {
  // Die with the master; SIGTERM is delivered only inside ppoll() below,
  // so a request in hand is always finished.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != master) ::_exit(0);
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGCHLD, SIG_DFL);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t during_poll;
  ::sigprocmask(SIG_SETMASK, nullptr, &during_poll);
  ::sigdelset(&during_poll, SIGTERM);
  ::sigdelset(&during_poll, SIGINT);

  std::optional<Worker> worker;
  try {
    worker.emplace(config, shmlimit::Limiter::open(config.limiter.segment));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmlimit-server: worker %d: %s\n", static_cast<int>(::getpid()),
                 e.what());
    ::_exit(3);
  }
  const timeval tv{static_cast<time_t>(config.read_timeout.count() / 1000),
                   static_cast<suseconds_t>(config.read_timeout.count() % 1000 * 1000)};
  while (g_stop == 0) {
    pollfd pfd{listen_fd, POLLIN, 0};
    const int ready = ::ppoll(&pfd, 1, nullptr, &during_poll);
    if (ready < 0) continue;  // EINTR: SIGTERM sets g_stop
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN: another worker took it
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bool drain = false;
    try {
      drain = worker->serve(fd, peer_text(ss));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "shmlimit-server: worker %d: request failed: %s\n",
                   static_cast<int>(::getpid()), e.what());
    }
    ::shutdown(fd, SHUT_WR);
    if (drain) drain_input(fd);
    ::close(fd);
  }
  std::fflush(nullptr);
  ::_exit(0);
}

}  // namespace prefork
