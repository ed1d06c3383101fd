// Parses the prefork server's TOML file (schema: doc/server.md). Strict, as
// shmlimit's own configuration: an unknown key or a wrong type is an error
// naming the file, line and column, never a silent default.
#include "server_config.hpp"

#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <sstream>

namespace shmlimit::server {
namespace {

class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const toml::node* node, const std::string& what) const {
    std::string where = source_ + ":";
    if (node != nullptr && node->source().begin) {
      where += std::to_string(node->source().begin.line) + ":" +
               std::to_string(node->source().begin.column) + ":";
    }
    throw Error(ErrorCode::kInvalidArgument, where + " " + what);
  }

  void only_keys(const toml::table& table, const std::string& name,
                 std::initializer_list<std::string_view> keys) const {
    for (const auto& [key, value] : table) {
      if (std::find(keys.begin(), keys.end(), key.str()) == keys.end()) {
        std::string known;
        for (const std::string_view k : keys) known += (known.empty() ? "" : ", ") + std::string(k);
        fail(&value,
             "unknown key '" + std::string(key.str()) + "' in " + name + " (known: " + known + ")");
      }
    }
  }

  const toml::table* table(const toml::table& parent, std::string_view key) const {
    const toml::node* node = parent.get(key);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) fail(node, "'" + std::string(key) + "' must be a table");
    return node->as_table();
  }

  std::optional<std::string> string(const toml::table& t, std::string_view key) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_string()) fail(node, "'" + std::string(key) + "' must be a string");
    return node->value<std::string>();
  }

  std::optional<bool> boolean(const toml::table& t, std::string_view key) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_boolean()) fail(node, "'" + std::string(key) + "' must be true or false");
    return node->value<bool>();
  }

  std::optional<std::int64_t> integer(const toml::table& t, std::string_view key, std::int64_t lo,
                                      std::int64_t hi) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return std::nullopt;
    if (!node->is_integer()) fail(node, "'" + std::string(key) + "' must be an integer");
    const std::int64_t v = *node->value<std::int64_t>();
    if (v < lo || v > hi) {
      fail(node, "'" + std::string(key) + "' is " + std::to_string(v) + ", expected " +
                     std::to_string(lo) + ".." + std::to_string(hi));
    }
    return v;
  }

  std::vector<std::string> strings(const toml::table& t, std::string_view key) const {
    std::vector<std::string> out;
    const toml::node* node = t.get(key);
    if (node == nullptr) return out;
    if (!node->is_array()) fail(node, "'" + std::string(key) + "' must be an array of strings");
    for (const toml::node& item : *node->as_array()) {
      if (!item.is_string()) fail(&item, "'" + std::string(key) + "' must be an array of strings");
      out.push_back(*item.value<std::string>());
    }
    return out;
  }

  std::vector<Cidr> cidrs(const toml::table& t, std::string_view key) const {
    std::vector<Cidr> out;
    const toml::node* node = t.get(key);
    for (const std::string& text : strings(t, key)) {
      try {
        out.push_back(Cidr::parse(text));
      } catch (const Error& e) {
        fail(node, "'" + std::string(key) + "': " + e.what());
      }
    }
    return out;
  }

  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

// "127.0.0.1:8080", "[::1]:8080": a numeric address and a port.
bool parse_host_port(const std::string& text, std::string* host_out, std::uint16_t* port_out) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) host = host.substr(1, host.size() - 2);
  unsigned char buf[16];
  const bool v4 = !bracketed && ::inet_pton(AF_INET, host.c_str(), buf) == 1;
  const bool v6 = bracketed && ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
  if ((!v4 && !v6) || port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
      std::stoul(port) > 65535) {
    return false;
  }
  *host_out = host;
  *port_out = static_cast<std::uint16_t>(std::stoul(port));
  return true;
}

std::string listen_error(const std::string& text) {
  return "listen address \"" + text +
         "\" is not a numeric address and a port: \"127.0.0.1:8080\", \"[::1]:8080\" (port 0: any "
         "free port)";
}

}  // namespace

ServerConfig load_server_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kSystem,
                path + ": cannot read the server configuration: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  Parser p(path);
  toml::table root;
  try {
    root = toml::parse(text.str(), path);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw Error(ErrorCode::kInvalidArgument, path + ":" + std::to_string(b.line) + ":" +
                                                 std::to_string(b.column) + ": " +
                                                 std::string(e.description()));
  }
  ServerConfig c;
  c.source = path;
  p.only_keys(root, "the top level",
              {"limiter", "server", "response", "identity", "metrics", "routes"});

  const std::optional<std::string> limiter = p.string(root, "limiter");
  if (!limiter)
    p.fail(nullptr, "'limiter' is required: the shmlimit configuration file (doc/config.md)");
  std::filesystem::path lp(*limiter);
  if (lp.is_relative()) lp = std::filesystem::path(path).parent_path() / lp;
  c.limiter_path = lp.string();
  c.limiter = load_config(c.limiter_path);

  if (const toml::table* s = p.table(root, "server")) {
    p.only_keys(
        *s, "[server]",
        {"listen", "workers", "backlog", "read_timeout", "max_header_bytes", "max_body_bytes"});
    if (auto v = p.string(*s, "listen")) {
      if (!parse_host_port(*v, &c.host, &c.port)) p.fail(s->get("listen"), listen_error(*v));
    }
    if (auto v = p.integer(*s, "workers", 1, 256)) c.workers = static_cast<unsigned>(*v);
    if (auto v = p.integer(*s, "backlog", 1, 65535)) c.backlog = static_cast<int>(*v);
    if (auto v = p.string(*s, "read_timeout")) {
      try {
        c.read_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(parse_duration(*v));
      } catch (const Error& e) {
        p.fail(s->get("read_timeout"), e.what());
      }
      if (c.read_timeout.count() == 0)
        p.fail(s->get("read_timeout"), "'read_timeout' must be at least 1ms");
    }
    if (auto v = p.integer(*s, "max_header_bytes", 256, 1 << 20))
      c.max_header_bytes = static_cast<std::size_t>(*v);
    if (auto v = p.integer(*s, "max_body_bytes", 0, 64 << 20))
      c.max_body_bytes = static_cast<std::size_t>(*v);
  }

  if (const toml::table* r = p.table(root, "response")) {
    p.only_keys(*r, "[response]", {"status", "body", "dry_run", "headers"});
    if (auto v = p.integer(*r, "status", 400, 599)) c.http.refuse_status = static_cast<int>(*v);
    if (auto v = p.string(*r, "body")) {
      if (*v != "json" && *v != "text")
        p.fail(r->get("body"), "'body' is \"" + *v + "\", expected \"json\" or \"text\"");
      c.json = *v == "json";
    }
    if (auto v = p.boolean(*r, "dry_run")) c.http.dry_run = *v;
    if (r->get("headers") != nullptr) {
      c.http.headers = 0;
      for (const std::string& h : p.strings(*r, "headers")) {
        if (h == "retry_after") {
          c.http.headers |= kHeadersRetryAfter;
        } else if (h == "x_ratelimit") {
          c.http.headers |= kHeadersXRateLimit;
        } else if (h == "ratelimit") {
          c.http.headers |= kHeadersRateLimit;
        } else {
          p.fail(r->get("headers"),
                 "'headers' has \"" + h +
                     "\", expected \"retry_after\", \"x_ratelimit\" or \"ratelimit\"");
        }
      }
    }
  }

  if (const toml::table* i = p.table(root, "identity")) {
    p.only_keys(*i, "[identity]",
                {"num_proxies", "normalize", "trusted_proxies", "use_forwarded", "ipv4_prefix",
                 "ipv6_prefix", "allow", "deny"});
    if (auto v = p.integer(*i, "num_proxies", 0, 64))
      c.identity.num_proxies = static_cast<unsigned>(*v);
    if (auto v = p.boolean(*i, "normalize")) c.identity.normalize = *v;
    c.identity.trusted_proxies = p.cidrs(*i, "trusted_proxies");
    if (auto v = p.boolean(*i, "use_forwarded")) c.identity.use_forwarded = *v;
    if (auto v = p.integer(*i, "ipv4_prefix", 0, 32))
      c.identity.ipv4_prefix = static_cast<unsigned>(*v);
    if (auto v = p.integer(*i, "ipv6_prefix", 0, 128))
      c.identity.ipv6_prefix = static_cast<unsigned>(*v);
    c.access = AccessList(p.cidrs(*i, "allow"), p.cidrs(*i, "deny"));
  }
  c.identity.max_key_bytes =
      std::min<std::size_t>(c.identity.max_key_bytes, c.limiter.segment.slot_bytes - 40);

  if (const toml::node* routes = root.get("routes")) {
    if (!routes->is_array_of_tables())
      p.fail(routes, "'routes' must be an array of tables: [[routes]]");
    for (const toml::node& node : *routes->as_array()) {
      const toml::table& t = *node.as_table();
      p.only_keys(t, "[[routes]]", {"prefix", "policies", "scope", "max_wait"});
      Route route;
      const std::optional<std::string> prefix = p.string(t, "prefix");
      if (!prefix || prefix->empty() || prefix->front() != '/') {
        p.fail(&node, "[[routes]] needs a 'prefix' that starts with '/'");
      }
      route.prefix = *prefix;
      route.policies = p.strings(t, "policies");
      if (route.policies.size() > 16) p.fail(t.get("policies"), "a route has at most 16 policies");
      route.scope = p.string(t, "scope").value_or("");
      for (const Route& other : c.routes) {
        if (other.prefix == route.prefix)
          p.fail(&node, "route prefix \"" + route.prefix + "\" appears twice");
      }
      for (const std::string& name : route.policies) {
        const bool known = std::any_of(c.limiter.policies.begin(), c.limiter.policies.end(),
                                       [&](const PolicySpec& s) { return s.name == name; });
        if (!known) {
          p.fail(t.get("policies"),
                 "route \"" + route.prefix + "\": no policy \"" + name + "\" in " + c.limiter_path);
        }
      }
      if (auto v = p.string(t, "max_wait")) {
        try {
          route.max_wait = parse_duration(*v);
        } catch (const Error& e) {
          p.fail(t.get("max_wait"), e.what());
        }
        if (route.max_wait > std::chrono::hours(1))
          p.fail(t.get("max_wait"), "'max_wait' is at most 1h (a worker sleeps that long)");
        const PolicySpec* spec = nullptr;
        for (const PolicySpec& s : c.limiter.policies) {
          if (route.policies.size() == 1 && s.name == route.policies[0]) spec = &s;
        }
        if (route.max_wait.count() > 0 &&
            (spec == nullptr || !shmlimit::algorithm_queues_turns(spec->algorithm))) {
          p.fail(t.get("max_wait"), "route \"" + route.prefix +
                                        "\": 'max_wait' needs exactly one policy, of algorithm "
                                        "gcra, leaky_bucket or token_bucket (the ones that queue a "
                                        "turn)");
        }
      }
      c.routes.push_back(std::move(route));
    }
  }
  if (const toml::table* m = p.table(root, "metrics")) {
    p.only_keys(*m, "[metrics]", {"path", "allow"});
    const std::optional<std::string> path = p.string(*m, "path");
    const bool plain =
        path && std::none_of(path->begin(), path->end(), [](char ch) {
          return ch == '?' || ch == '#' || static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f;
        });
    if (!path || path->size() < 2 || path->front() != '/' || !plain) {
      p.fail(path ? m->get("path") : static_cast<const toml::node*>(m),
             "[metrics] needs a 'path' such as \"/metrics\": '/' then at least one character, no "
             "query, fragment, space or control character");
    }
    for (const Route& route : c.routes) {
      if (route.prefix == *path) {
        p.fail(m->get("path"),
               "[metrics] path \"" + *path + "\" is also a route prefix: one of them must go");
      }
    }
    c.metrics.path = *path;
    c.metrics.allow = p.cidrs(*m, "allow");
  }

  std::stable_sort(c.routes.begin(), c.routes.end(), [](const Route& a, const Route& b) {
    return a.prefix.size() > b.prefix.size();
  });
  return c;
}

void apply_overrides(ServerConfig& config, const std::string& listen, const std::string& workers) {
  if (!listen.empty() && !parse_host_port(listen, &config.host, &config.port)) {
    throw Error(ErrorCode::kInvalidArgument, "--listen: " + listen_error(listen));
  }
  if (!workers.empty()) {
    const bool digits =
        workers.size() <= 3 &&
        std::all_of(workers.begin(), workers.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    const unsigned long n = digits ? std::stoul(workers) : 0;
    if (n < 1 || n > 256) {
      throw Error(ErrorCode::kInvalidArgument, "--workers is \"" + workers + "\", expected 1..256");
    }
    config.workers = static_cast<unsigned>(n);
  }
}

bool is_metrics_path(const ServerConfig& config, std::string_view target) noexcept {
  return !config.metrics.path.empty() &&
         target.substr(0, target.find_first_of("?#")) == config.metrics.path;
}

const Route* match_route(const ServerConfig& config, std::string_view target) noexcept {
  const std::size_t query = target.find_first_of("?#");
  const std::string_view path = target.substr(0, query);
  for (const Route& r : config.routes) {
    if (path.substr(0, r.prefix.size()) == r.prefix) return &r;
  }
  return nullptr;
}

}  // namespace shmlimit::server
