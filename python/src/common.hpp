// Conversions shared by the parts of shmlimit._shmlimit: the segment's
// Limiter (limiter.cpp) and the Redis and hybrid tiers (tiers.cpp).
//
//   * Durations cross as float seconds and, where exactness matters, as
//     integer nanoseconds; Nanos::max() ("never") is float('inf').
//   * A policy spec is built from the same Python arguments everywhere
//     (policy_spec), and so is a list of requests (parse_requests).
//   * Text from a segment or a message is decoded with backslashreplace
//     (text()): reading never raises an encoding error.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit_python {

namespace py = pybind11;

/// A policy argument: a PolicyId or a registered name.
using PolicyArg = std::variant<shmlimit::PolicyId, std::string>;

/// The id given for a name that is not registered: no policy has it.
inline constexpr shmlimit::PolicyId kNoPolicy{std::numeric_limits<std::uint32_t>::max()};

/// Sets the Python error of `e`: the shmlimit.Error subclass of its code
/// (python/shmlimit/errors.py), its message decoded as text() decodes. The
/// exception translator's work, for calls that pybind11 does not dispatch.
void set_error(const shmlimit::Error& e);

/// Text read from a segment or from a library message (policy names,
/// problems that quote keys, error messages) as a str. Such text holds
/// whatever bytes the segment holds: bytes that are not UTF-8 become \xNN
/// (Python's "backslashreplace"), so reading never raises
/// UnicodeDecodeError. Keys themselves cross as bytes.
inline py::str text(std::string_view s) {
  PyObject* o =
      PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

/// A list of such texts.
inline py::list texts(const std::vector<std::string>& items) {
  py::list out;
  for (const auto& s : items) out.append(text(s));
  return out;
}

inline double seconds(shmlimit::Nanos ns) {
  if (ns == shmlimit::Nanos::max()) return std::numeric_limits<double>::infinity();
  return static_cast<double>(ns.count()) / 1e9;
}

/// float seconds (or an int of seconds) -> a duration, refusing what cannot be one.
template <class Duration>
Duration duration_from_seconds(double s, const char* what) {
  if (!std::isfinite(s) || s < 0 || s > 315'576'000.0) {  // 10 years
    throw py::value_error(std::string(what) +
                          " must be a finite number of seconds between 0 and 10 years");
  }
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

inline shmlimit::OnFull parse_on_full(const std::string& text) {
  if (text == "allow" || text == "open") return shmlimit::OnFull::kAllow;
  if (text == "deny" || text == "closed") return shmlimit::OnFull::kDeny;
  throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                        "invalid on_full \"" + text + R"(" (expected "allow" or "deny"))");
}

inline shmlimit::LogWait parse_wait(const std::string& text) {
  if (text == "exact") return shmlimit::LogWait::kExact;
  if (text == "drf") return shmlimit::LogWait::kDrf;
  throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                        "invalid wait \"" + text + R"(" (expected "exact" or "drf"))");
}

/// A rate from Python: a string in parse_rate()'s syntax, or (count, seconds).
inline shmlimit::Rate rate_from(const py::handle& h) {
  if (py::isinstance<py::str>(h)) return shmlimit::parse_rate(h.cast<std::string>());
  if (py::isinstance<py::tuple>(h) && py::len(h) == 2) {
    const auto t = h.cast<py::tuple>();
    const auto count = t[0].cast<std::int64_t>();
    const auto period = t[1].cast<double>();
    if (count <= 0) throw py::value_error("rate count must be positive");
    if (!(period > 0)) throw py::value_error("rate period must be a positive number of seconds");
    return shmlimit::Rate{static_cast<std::uint64_t>(count),
                          duration_from_seconds<shmlimit::Nanos>(period, "rate period")};
  }
  throw py::type_error("rate must be a string such as \"10/m\" or a tuple (count, period_seconds)");
}

/// The PolicySpec of add_policy's arguments (Limiter and the tiers alike).
inline shmlimit::PolicySpec policy_spec(const std::string& name, const std::string& algorithm,
                                        const py::object& rate, std::uint64_t burst,
                                        const std::string& on_full,
                                        const std::string& wait = "exact") {
  shmlimit::PolicySpec spec;
  spec.name = name;
  spec.algorithm = shmlimit::parse_algorithm(algorithm);
  spec.rate = rate_from(rate);
  spec.burst = burst;
  spec.on_full = parse_on_full(on_full);
  spec.wait = parse_wait(wait);
  return spec;
}

/// The fields of a Decision's repr: "allowed=True, limit=5, ..., reason='ok'".
inline std::string decision_fields(const shmlimit::Decision& d) {
  return "allowed=" + std::string(d.allowed ? "True" : "False") +
         ", limit=" + std::to_string(d.limit) + ", remaining=" + std::to_string(d.remaining) +
         ", retry_after=" + py::repr(py::float_(seconds(d.retry_after))).cast<std::string>() +
         ", reset_after=" + py::repr(py::float_(seconds(d.reset_after))).cast<std::string>() +
         ", reason='" + std::string(shmlimit::to_string(d.reason)) + "'";
}

/// The decision for a policy name that is not registered: what the library
/// itself returns for an unknown PolicyId (denied, reason unknown_policy).
inline shmlimit::Decision unknown_policy() {
  shmlimit::Decision d;
  d.allowed = false;
  d.reason = shmlimit::Reason::kUnknownPolicy;
  return d;
}

inline std::uint64_t checked_cost(std::int64_t cost) {
  if (cost < 0) throw py::value_error("cost must not be negative");
  return static_cast<std::uint64_t>(cost);
}

/// acquire_many's requests: (policy, key[, cost]) items from Python. `reqs`
/// holds string_views into `keys`, which owns them; `unknown` is set when
/// some policy name is not registered.
struct Requests {
  std::vector<std::string> keys;
  std::vector<shmlimit::Request> reqs;
  bool unknown = false;
};

/// Reads the items of `requests`; resolve(PolicyArg, bool* found) -> PolicyId.
template <class Resolve>
Requests parse_requests(const py::iterable& requests, Resolve&& resolve) {
  Requests out;
  std::vector<std::pair<shmlimit::PolicyId, std::uint64_t>> parts;
  for (const auto item : requests) {
    const auto t = item.cast<py::sequence>();
    if (py::len(t) != 2 && py::len(t) != 3) {
      throw py::value_error("each request is (policy, key) or (policy, key, cost)");
    }
    bool found = true;
    const shmlimit::PolicyId id = resolve(t[0].cast<PolicyArg>(), &found);
    out.unknown = out.unknown || !found;
    out.keys.push_back(t[1].cast<std::string>());
    parts.emplace_back(id, py::len(t) == 3 ? checked_cost(t[2].cast<std::int64_t>()) : 1);
  }
  // Only now that `keys` no longer grows may views into it be taken.
  out.reqs.reserve(parts.size());
  for (std::size_t i = 0; i < parts.size(); ++i) {
    out.reqs.push_back({parts[i].first, out.keys[i], parts[i].second});
  }
  return out;
}

}  // namespace shmlimit_python
