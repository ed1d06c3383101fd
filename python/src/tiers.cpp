// shmlimit._shmlimit, part three: the Redis tier and the hybrid tier
// (include/shmlimit/redis.hpp, doc/redis.md). Compiled only when the build
// has shmlimit_redis (SHMLIMIT_PYTHON_REDIS; the module's HAS_REDIS).
//
//   * A decision is a TierDecision: a Decision (every attribute of it, and
//     falsy when refused) plus `source`, shmlimit::to_string(Source):
//     "redis", "lease", "local_share", "fail_open" or "fail_closed".
//   * RedisOptions and HybridOptions are keyword arguments; durations are
//     float seconds (whole milliseconds in C++).
//   * A C++ RedisLimiter / HybridLimiter is one Redis connection, for one
//     thread at a time. The Python object serialises its calls with a
//     mutex, taken after the GIL is released: every call may wait on the
//     network (up to connect_timeout + command_timeout), and other Python
//     threads run meanwhile.
//   * A policy is a PolicyId returned by this object's add_policy, or the
//     name given to it. A name not registered on the object is denied with
//     reason "unknown_policy" and source "redis", as the library answers an
//     unknown PolicyId.
//   * After fork() a child opens its own connection on its first call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "common.hpp"
#include "shmlimit/redis.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit_python {

namespace {

using namespace pybind11::literals;
using std::chrono::milliseconds;

// A TierDecision as Python sees it: a Decision with its source.
struct TierResult : shmlimit::Decision {
  shmlimit::Source source = shmlimit::Source::kRedis;

  TierResult() = default;
  explicit TierResult(const shmlimit::TierDecision& t)
      : shmlimit::Decision(t.decision), source(t.source) {}
};

TierResult unknown_policy_result() {
  return TierResult(shmlimit::TierDecision{unknown_policy(), shmlimit::Source::kRedis});
}

shmlimit::WhenDown parse_when_down(const std::string& text) {
  if (text == "fail_closed") return shmlimit::WhenDown::kFailClosed;
  if (text == "fail_open") return shmlimit::WhenDown::kFailOpen;
  if (text == "local_share") return shmlimit::WhenDown::kLocalShare;
  throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                        "invalid when_down \"" + text +
                            R"(" (expected "fail_closed", "fail_open" or "local_share"))");
}

// RedisOptions from the keyword arguments both tiers take.
shmlimit::RedisOptions redis_options(const std::string& host, int port,
                                     const std::optional<std::string>& unix_socket,
                                     const std::optional<std::string>& password,
                                     double connect_timeout, double command_timeout,
                                     double backoff_initial, double backoff_max,
                                     const std::string& prefix,
                                     const std::vector<std::string>& cluster) {
  shmlimit::RedisOptions o;
  o.cluster = cluster;
  o.host = host;
  o.port = port;
  o.unix_socket = unix_socket.value_or("");
  o.password = password.value_or("");
  o.connect_timeout = duration_from_seconds<milliseconds>(connect_timeout, "connect_timeout");
  o.command_timeout = duration_from_seconds<milliseconds>(command_timeout, "command_timeout");
  o.backoff_initial = duration_from_seconds<milliseconds>(backoff_initial, "backoff_initial");
  o.backoff_max = duration_from_seconds<milliseconds>(backoff_max, "backoff_max");
  o.prefix = prefix;
  return o;
}

// Where the options point, for __repr__.
std::string redis_where(const shmlimit::RedisOptions& o) {
  if (!o.cluster.empty()) return "cluster:" + o.cluster.front();
  return o.unix_socket.empty() ? o.host + ":" + std::to_string(o.port) : "unix:" + o.unix_socket;
}

// A C++ tier object, the lock that keeps it to one thread at a time, and
// the names of the policies registered through this object.
template <class Tier>
class PyTier {
 public:
  PyTier(Tier tier, std::string description)
      : tier_(std::move(tier)), description_(std::move(description)) {}
  PyTier(const PyTier&) = delete;
  PyTier& operator=(const PyTier&) = delete;

  // Runs f(tier) without the GIL, alone on this object. The mutex is taken
  // only once the GIL is released (a thread waiting for it never holds the
  // GIL) and given back before the GIL is taken again.
  template <class F>
  auto call(F&& f) {
    py::gil_scoped_release release;
    const std::lock_guard<std::mutex> lock(mu_);
    return std::forward<F>(f)(tier_);
  }

  shmlimit::PolicyId resolve(const PolicyArg& policy, bool* found) const {
    *found = true;
    if (const auto* id = std::get_if<shmlimit::PolicyId>(&policy)) return *id;
    const auto it = names_.find(std::get<std::string>(policy));
    if (it == names_.end()) {
      *found = false;
      return kNoPolicy;
    }
    return it->second;
  }

  // Called with the GIL held (as every access to names_ is).
  void remember(const std::string& name, shmlimit::PolicyId id) { names_[name] = id; }

  const std::string& description() const { return description_; }

 private:
  Tier tier_;
  std::mutex mu_;
  std::unordered_map<std::string, shmlimit::PolicyId> names_;
  std::string description_;
};

using PyRedis = PyTier<shmlimit::RedisLimiter>;
using PyHybrid = PyTier<shmlimit::HybridLimiter>;

// A concurrency lease held in Redis (RedisLimiter.lease): the C++ lease's
// data and the RedisLimiter that renews and releases it (kept alive).
struct PyRedisLease {
  py::object owner;
  PyRedis* tier = nullptr;
  shmlimit::RedisLease lease;
};

// A keyed decision: checks the cost, resolves the policy, then calls
// f(tier, id, cost) without the GIL.
template <class Tier, class F>
TierResult keyed(PyTier<Tier>& self, const PolicyArg& policy, std::int64_t cost, F&& f) {
  const std::uint64_t c = checked_cost(cost);
  bool found = true;
  const shmlimit::PolicyId id = self.resolve(policy, &found);
  if (!found) return unknown_policy_result();
  return TierResult(self.call([&](Tier& t) { return std::forward<F>(f)(t, id, c); }));
}

// What both tiers offer alike: add_policy, acquire, refund and reset.
template <class Tier>
void bind_common(py::class_<PyTier<Tier>>& cls, const char* add_policy_doc) {
  using Self = PyTier<Tier>;
  cls.def(
         "add_policy",
         [](Self& self, const std::string& name, const std::string& algorithm,
            const py::object& rate, std::uint64_t burst, const std::string& on_full,
            const std::string& when_down, double local_share, double lease_ttl) {
           shmlimit::TierPolicy p;
           p.spec = policy_spec(name, algorithm, rate, burst, on_full);
           p.when_down = parse_when_down(when_down);
           p.local_share = local_share;
           p.lease_ttl = duration_from_seconds<milliseconds>(lease_ttl, "lease_ttl");
           const shmlimit::PolicyId id = self.call([&](Tier& t) { return t.add_policy(p); });
           self.remember(name, id);
           return id;
         },
         "name"_a, "algorithm"_a = "gcra", "rate"_a, py::kw_only(), "burst"_a = 0,
         "on_full"_a = "allow", "when_down"_a = "fail_closed", "local_share"_a = 0.0,
         "lease_ttl"_a = 30.0, add_policy_doc)
      .def(
          "acquire",
          [](Self& self, const PolicyArg& policy, const std::string& key, std::int64_t cost) {
            return keyed(self, policy, cost, [&](Tier& t, shmlimit::PolicyId id, std::uint64_t c) {
              return t.acquire(id, key, c);
            });
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "Charges cost to (policy, key) and returns the TierDecision. Never raises for a "
          "limiting outcome\n"
          "or an unreachable Redis (the policy's when_down answers; see source).")
      .def(
          "acquire_many",
          [](Self& self, const py::iterable& requests, bool each) -> py::object {
            const Requests r = parse_requests(
                requests, [&](const PolicyArg& p, bool* found) { return self.resolve(p, found); });
            std::vector<shmlimit::Decision> decisions(r.reqs.size());
            TierResult combined;
            if (r.unknown) {
              combined = unknown_policy_result();
              for (auto& d : decisions) d = unknown_policy();
            } else {
              combined =
                  TierResult(self.call([&](Tier& t) { return t.acquire_many(r.reqs, decisions); }));
            }
            if (!each) return py::cast(combined);
            return py::make_tuple(combined, decisions);
          },
          "requests"_a, py::kw_only(), "each"_a = false,
          "All-or-nothing over (policy, key[, cost]) requests, as Limiter.acquire_many: the "
          "limits of one key\n"
          "in one atomic script call, several keys pipelined (those that admitted are refunded "
          "when another\n"
          "denies). The hybrid tier decides them in Redis too (no leased tokens); while Redis is "
          "down a\n"
          "fail_closed limit refuses, local_share limits decide together on this host. Returns "
          "the combined\n"
          "TierDecision, or (combined, [each limit's Decision]) with each=True.")
      .def(
          "refund",
          [](Self& self, const PolicyArg& policy, const std::string& key, std::int64_t cost) {
            return keyed(self, policy, cost, [&](Tier& t, shmlimit::PolicyId id, std::uint64_t c) {
              return t.refund(id, key, c);
            });
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "Gives back cost in Redis (never beyond the capacity); returns the bucket after it.")
      .def(
          "reset",
          [](Self& self, const PolicyArg& policy, const std::string& key) {
            bool found = true;
            const shmlimit::PolicyId id = self.resolve(policy, &found);
            if (!found) {
              throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                                    "reset: no policy \"" + std::get<std::string>(policy) +
                                        "\" registered on this object");
            }
            return self.call([&](Tier& t) { return t.reset(id, key); });
          },
          "policy"_a, "key"_a,
          "Forgets (policy, key) in Redis (the hybrid tier: on this host too); False if Redis "
          "could not be\n"
          "reached.");
}

}  // namespace

void bind_tiers(py::module_& m) {
  py::class_<TierResult, shmlimit::Decision>(
      m, "TierDecision",
      "A Decision of the Redis or hybrid tier, with who made it: source is \"redis\", "
      "\"lease\",\n"
      "\"local_share\", \"fail_open\" or \"fail_closed\".")
      .def_property_readonly(
          "source", [](const TierResult& t) { return std::string(shmlimit::to_string(t.source)); },
          "Who decided: \"redis\" (one script call), \"lease\" (tokens this host leased; hybrid),\n"
          "\"local_share\" (Redis down: the host's share; hybrid), \"fail_open\" or "
          "\"fail_closed\" (Redis down).")
      .def("__repr__", [](const TierResult& t) {
        return "TierDecision(" + decision_fields(t) + ", source='" +
               std::string(shmlimit::to_string(t.source)) + "')";
      });

  py::class_<PyRedisLease>(
      m, "RedisLease",
      "A share of a concurrency limit held in Redis (RedisLimiter.lease): held until release(),\n"
      "or until the policy's lease_ttl passes without a renew(). Use it as a context manager.")
      .def_property_readonly(
          "held", [](const PyRedisLease& l) { return l.lease.held; },
          "Granted and not released or found expired by this object.")
      .def_property_readonly(
          "decision", [](const PyRedisLease& l) { return TierResult(l.lease.decision); },
          "The TierDecision: limit N, remaining N - in flight after it.")
      .def(
          "renew",
          [](PyRedisLease& l) {
            return l.tier->call([&](shmlimit::RedisLimiter& t) { return t.renew(l.lease); });
          },
          "Extends the lease to now + lease_ttl; False when it had expired (or Redis is down).")
      .def(
          "release",
          [](PyRedisLease& l) {
            return l.tier->call([&](shmlimit::RedisLimiter& t) { return t.release(l.lease); });
          },
          "Gives the units back; True if they were still held in Redis.")
      .def("__bool__", [](const PyRedisLease& l) { return l.lease.held; })
      .def(
          "__enter__", [](PyRedisLease& l) -> PyRedisLease& { return l; },
          py::return_value_policy::reference)
      .def("__exit__",
           [](PyRedisLease& l, const py::args&) {
             l.tier->call([&](shmlimit::RedisLimiter& t) { return t.release(l.lease); });
           })
      .def("__repr__", [](const PyRedisLease& l) {
        return std::string("<shmlimit.RedisLease ") + (l.lease.held ? "held" : "not held") + ">";
      });

  py::class_<PyRedis> redis(
      m, "RedisLimiter",
      "Decisions made in Redis (doc/redis.md): one script call per decision, one connection "
      "per object.\n"
      "Connects on first use; an unreachable server never raises, each policy's when_down "
      "answers.");
  redis
      .def(py::init([](const std::string& host, int port,
                       const std::optional<std::string>& unix_socket,
                       const std::optional<std::string>& password, double connect_timeout,
                       double command_timeout, double backoff_initial, double backoff_max,
                       const std::string& prefix, const std::vector<std::string>& cluster) {
             const shmlimit::RedisOptions ro =
                 redis_options(host, port, unix_socket, password, connect_timeout, command_timeout,
                               backoff_initial, backoff_max, prefix, cluster);
             return std::make_unique<PyRedis>(shmlimit::RedisLimiter(ro), redis_where(ro));
           }),
           py::kw_only(), "host"_a = "127.0.0.1", "port"_a = 6379, "unix_socket"_a = py::none(),
           "password"_a = py::none(), "connect_timeout"_a = 0.25, "command_timeout"_a = 0.25,
           "backoff_initial"_a = 0.05, "backoff_max"_a = 2.0,
           "prefix"_a = "shmlimit:", "cluster"_a = std::vector<std::string>{},
           "RedisOptions: host/port or unix_socket, password (AUTH), timeouts and backoff in "
           "seconds, the\n"
           "key prefix; cluster: Redis Cluster seed nodes as \"host:port\" (then host/port are "
           "not used).\n"
           "InvalidArgumentError for a bad option; nothing is connected yet.")
      .def(
          "lease",
          [](const py::object& owner, const PolicyArg& policy, const std::string& key,
             std::int64_t cost) {
            PyRedis& self = owner.cast<PyRedis&>();
            const std::uint64_t c = checked_cost(cost);
            auto out = std::make_unique<PyRedisLease>();
            out->owner = owner;
            out->tier = &self;
            bool found = true;
            const shmlimit::PolicyId id = self.resolve(policy, &found);
            if (!found) {
              out->lease.decision =
                  shmlimit::TierDecision{unknown_policy(), shmlimit::Source::kRedis};
              return out;
            }
            out->lease = self.call([&](shmlimit::RedisLimiter& t) { return t.lease(id, key, c); });
            return out;
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "Takes cost units of a concurrency policy's limit for (policy, key) in Redis: a "
          "RedisLease,\n"
          "held until release() or lease_ttl without renew() (a dead holder's units come back).")
      .def(
          "peek",
          [](PyRedis& self, const PolicyArg& policy, const std::string& key, std::int64_t cost) {
            return keyed(self, policy, cost,
                         [&](shmlimit::RedisLimiter& t, shmlimit::PolicyId id, std::uint64_t c) {
                           return t.peek(id, key, c);
                         });
          },
          "policy"_a, "key"_a, "cost"_a = 1, "What acquire() would say, without charging.")
      .def_property_readonly(
          "round_trips",
          [](PyRedis& self) {
            return self.call([](shmlimit::RedisLimiter& t) { return t.round_trips(); });
          },
          "Round trips to Redis made by this object (a pipeline counts once).")
      .def_property_readonly(
          "available",
          [](PyRedis& self) {
            return self.call([](shmlimit::RedisLimiter& t) { return t.available(); });
          },
          "False after a failed call until the next successful one.")
      .def_property_readonly(
          "last_error",
          [](PyRedis& self) {
            return self.call([](shmlimit::RedisLimiter& t) { return t.last_error(); });
          },
          "The last connection or command error (\"\" if none yet).")
      .def("__repr__", [](const PyRedis& self) {
        return "<shmlimit.RedisLimiter " + self.description() + ">";
      });
  bind_common<shmlimit::RedisLimiter>(
      redis,
      "Registers a policy on this object (every client of one Redis registers the same specs) "
      "and returns\n"
      "its PolicyId. when_down is \"fail_closed\" (default) or \"fail_open\". gcra, "
      "token_bucket, fixed_window,\n"
      "sliding_window, quiet_period and leaky_bucket only; InvalidArgumentError otherwise, "
      "PolicyConflictError\n"
      "for another spec under the same name.");

  py::class_<PyHybrid> hybrid(
      m, "HybridLimiter",
      "Redis fronted by the host's shared memory (doc/redis.md): tokens leased from Redis in "
      "batches serve\n"
      "every process of the host. One Redis connection per object.");
  hybrid
      .def_static(
          "open_or_create",
          [](const std::string& name, std::uint32_t lease_slots, std::uint32_t max_batch,
             double lease_ttl, std::uint32_t hosts, mode_t mode, const std::string& host, int port,
             const std::optional<std::string>& unix_socket,
             const std::optional<std::string>& password, double connect_timeout,
             double command_timeout, double backoff_initial, double backoff_max,
             const std::string& prefix, const std::vector<std::string>& cluster) {
            const shmlimit::RedisOptions ro =
                redis_options(host, port, unix_socket, password, connect_timeout, command_timeout,
                              backoff_initial, backoff_max, prefix, cluster);
            shmlimit::HybridOptions o;
            o.redis = ro;
            o.name = name;
            o.lease_slots = lease_slots;
            o.max_batch = max_batch;
            o.lease_ttl = duration_from_seconds<milliseconds>(lease_ttl, "lease_ttl");
            o.hosts = hosts;
            o.mode = mode;
            std::optional<shmlimit::HybridLimiter> opened;
            {
              py::gil_scoped_release release;
              opened.emplace(shmlimit::HybridLimiter::open_or_create(std::move(o)));
            }
            return std::make_unique<PyHybrid>(std::move(*opened), name + " via " + redis_where(ro));
          },
          "name"_a, py::kw_only(), "lease_slots"_a = 4096, "max_batch"_a = 64, "lease_ttl"_a = 1.0,
          "hosts"_a = 1, "mode"_a = 0600, "host"_a = "127.0.0.1", "port"_a = 6379,
          "unix_socket"_a = py::none(), "password"_a = py::none(), "connect_timeout"_a = 0.25,
          "command_timeout"_a = 0.25, "backoff_initial"_a = 0.05, "backoff_max"_a = 2.0,
          "prefix"_a = "shmlimit:", "cluster"_a = std::vector<std::string>{},
          "Opens or creates the host's segments `name` and `name.lease` (any number of processes "
          "may race\n"
          "here). HybridOptions: lease_slots, max_batch (1..2**20; 1 holds nothing ahead), "
          "lease_ttl (s),\n"
          "hosts, mode; and RedisLimiter's options. InvalidArgumentError for a bad option.")
      .def_static(
          "remove",
          [](const std::string& name) {
            py::gil_scoped_release release;
            return shmlimit::HybridLimiter::remove(name);
          },
          "name"_a, "Removes both segments of `name`; False if neither existed.")
      .def_property_readonly(
          "round_trips",
          [](PyHybrid& self) {
            return self.call([](shmlimit::HybridLimiter& t) { return t.round_trips(); });
          },
          "Round trips to Redis made by this object (a pipeline counts once; leased tokens make "
          "none).")
      .def(
          "batch",
          [](PyHybrid& self, const PolicyArg& policy, const std::string& key) -> std::uint32_t {
            bool found = true;
            const shmlimit::PolicyId id = self.resolve(policy, &found);
            if (!found) return 0;
            return self.call([&](shmlimit::HybridLimiter& t) { return t.batch(id, key); });
          },
          "policy"_a, "key"_a,
          "The next lease size of (policy, key) on this host (0: the key has no lease slot).")
      .def("__repr__", [](const PyHybrid& self) {
        return "<shmlimit.HybridLimiter " + self.description() + ">";
      });
  bind_common<shmlimit::HybridLimiter>(
      hybrid,
      "Registers a policy on this object and returns its PolicyId. when_down is "
      "\"fail_closed\" (default),\n"
      "\"fail_open\" or \"local_share\": the host alone admits local_share (0, 1] of the rate "
      "and burst while\n"
      "Redis is down. Errors as RedisLimiter.add_policy.");
}

}  // namespace shmlimit_python
