// The prefork server's configuration file (doc/server.md gives the schema):
// where to listen, how many workers, how clients are identified, which
// addresses are always allowed or refused, and the route table that maps
// a path prefix to the shmlimit policies it is limited by. The segment and
// its policies come from a shmlimit configuration file (doc/config.md)
// named by `limiter`.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/config.hpp"
#include "shmlimit/http.hpp"
#include "shmlimit/identity.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::server {

/// A path prefix and the policies that limit it.
struct Route {
  std::string prefix;                 ///< matched against the request target's path; longest wins
  std::vector<std::string> policies;  ///< policy (group) names; all or nothing; empty: unlimited
  std::string scope;  ///< non-empty: key = throttle_<scope>_<client> (DRF's scoped key)
  /// > 0: a request past the policy's burst waits for its turn
  /// (Limiter::reserve) when it is at most this far away, and is refused
  /// only beyond: nginx's two-stage `limit_req burst=N delay=M` with the
  /// policy's burst = M + 1 and max_wait = (N - M) / rate. Needs exactly one
  /// gcra, leaky_bucket or token_bucket policy. 0: refuse at once.
  std::chrono::nanoseconds max_wait{0};
};

/// `[metrics]`: the segment's Prometheus metrics, the text `shmlimit
/// metrics` prints, served at one path (GET and HEAD), before the route
/// table: never limited, never counted.
struct MetricsEndpoint {
  std::string path;         ///< exact path (the query is ignored); empty: no endpoint
  std::vector<Cidr> allow;  ///< non-empty: only client addresses in these networks; others 403
};

struct ServerConfig {
  std::string source;        ///< the file it came from
  shmlimit::Config limiter;  ///< the segment and its policies (from `limiter`)
  std::string limiter_path;  ///< `limiter`, resolved against the file's directory
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  ///< 0: any free port (printed at start)
  unsigned workers = 4;       ///< 1..256
  int backlog = 511;
  std::chrono::milliseconds read_timeout{5000};  ///< per request: SO_RCVTIMEO / SO_SNDTIMEO
  std::size_t max_header_bytes = 8192;           ///< request line + headers: more is 431
  std::size_t max_body_bytes = 65536;            ///< more is 413
  bool json = true;                              ///< response bodies in JSON (else text/plain)
  shmlimit::HttpOptions http;                    ///< refuse status, dry run, header families
  shmlimit::IdentityOptions identity;
  shmlimit::AccessList access;
  std::vector<Route> routes;  ///< sorted longest prefix first
  MetricsEndpoint metrics;
};

/// Reads and validates the file. Throws shmlimit::Error(kInvalidArgument,
/// or the code load_config gives for the limiter file) with a message that
/// starts with "FILE:" and names the key; unknown keys are errors.
ServerConfig load_server_config(const std::string& path);

/// Applies the command line's --listen and --workers (empty: unchanged).
/// Throws Error(kInvalidArgument) naming the option.
void apply_overrides(ServerConfig& config, const std::string& listen, const std::string& workers);

/// True when `target` (its query ignored) is the metrics endpoint's path.
bool is_metrics_path(const ServerConfig& config, std::string_view target) noexcept;

/// The route whose prefix is the longest one the path starts with, or
/// nullptr. `target` is the request target; its query is ignored.
const Route* match_route(const ServerConfig& config, std::string_view target) noexcept;

}  // namespace shmlimit::server
