// shmlimit._shmlimit: the pybind11 binding of include/shmlimit/*.hpp.
//
// The Python package (python/shmlimit/__init__.py) re-exports these names;
// python/shmlimit/_shmlimit.pyi types them and doc/python.md describes them.
// limiter.cpp binds Limiter and Lease, web.cpp identity and headers,
// tiers.cpp the Redis and hybrid tiers (when built with shmlimit_redis),
// common.hpp holds what they share.
//
// Conventions
//   * Durations cross as float seconds (retry_after, open_timeout) and, where
//     exactness matters, as integer nanoseconds too (retry_after_ns). A wait
//     the library reports as Nanos::max() ("never": cost above the capacity)
//     is float('inf') in seconds and 2**63-1 in ns.
//   * Keys are str (encoded as UTF-8) or bytes; they are copied before the
//     GIL is released (but by _acquire and _tally, which read a bytes or str
//     key in place: both are immutable, and the call's arguments keep them
//     alive). Keys read back are bytes; policy
//     names, check problems and error messages read back are str decoded with backslashreplace
//     (common.hpp's text()): a segment holding any bytes never makes a read raise
//     UnicodeDecodeError.
//   * shmlimit::Error becomes the shmlimit.Error subclass of its ErrorCode
//     (python/shmlimit/errors.py), with .code set; std::invalid_argument and
//     friends keep pybind11's usual mapping.
//
// The GIL is released around every call that may wait or scan: open /
// create (up to open_timeout for a concurrent creator), add_policy (the admin
// token), acquire and friends (up to claim_timeout for a stalled claimer),
// reset, stats, dump and check (O(capacity)). A Limiter object may then be
// used by several Python threads at once, as the C++ API allows: each call
// holds its own reference to the mapping while the GIL is released, so a
// close() in another thread takes effect when the calls in flight return.
//
// Fork: the mapping is MAP_SHARED and the library re-derives its process
// token after fork(), so a Limiter opened before os.fork() (gunicorn's
// --preload, multiprocessing's fork start method) keeps working in the child.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "common.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace shmlimit_python {
void bind_web(py::module_& m);      // web.cpp: identity and headers
void bind_limiter(py::module_& m);  // limiter.cpp: Limiter and Lease
#ifdef SHMLIMIT_PYTHON_REDIS
void bind_tiers(py::module_& m);  // tiers.cpp: the Redis and hybrid tiers
#endif
}  // namespace shmlimit_python

namespace shmlimit_python {
void set_error(const shmlimit::Error& e) {
  try {
    py::object cls =
        py::module_::import("shmlimit.errors").attr("error_class")(static_cast<int>(e.code()));
    // Messages quote input and segment bytes: never let decoding them fail
    // (an undecodable message used to arrive as an empty one).
    PyErr_SetObject(cls.ptr(), text(e.what()).ptr());
  } catch (py::error_already_set& failed) {  // shmlimit.errors cannot be imported
    failed.restore();
  }
}
}  // namespace shmlimit_python

namespace {

using shmlimit_python::rate_from;
using shmlimit_python::seconds;
using shmlimit_python::text;

// Translates shmlimit::Error into the Python class of its code.
// NOLINTNEXTLINE(performance-unnecessary-value-param): pybind11::ExceptionTranslator's signature
void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const shmlimit::Error& e) {
    shmlimit_python::set_error(e);
  }
}

// ---- Decision's fields, read without pybind11's dispatcher --------------------
//
// Reading a field of a Decision is what every caller does after every
// decision. A def_readonly property goes through pybind11's function
// dispatcher (about 140 ns a read); these getset descriptors are plain
// C getters (a type check and the read, about a third of that). Their
// descriptor only accepts Decisions (and subclasses: WaitDecision,
// TierDecision), and the cast checks again.

template <class F>
PyObject* decision_field(PyObject* self, F&& f) noexcept {
  try {
    return std::forward<F>(f)(py::handle(self).cast<const shmlimit::Decision&>()).release().ptr();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
    return nullptr;
  }
}

PyObject* get_allowed(PyObject* self, void* /*closure*/) {
  return decision_field(self, [](const shmlimit::Decision& d) { return py::bool_(d.allowed); });
}
PyObject* get_limit(PyObject* self, void* /*closure*/) {
  return decision_field(self, [](const shmlimit::Decision& d) { return py::int_(d.limit); });
}
PyObject* get_remaining(PyObject* self, void* /*closure*/) {
  return decision_field(self, [](const shmlimit::Decision& d) { return py::int_(d.remaining); });
}
PyObject* get_retry_after(PyObject* self, void* /*closure*/) {
  return decision_field(
      self, [](const shmlimit::Decision& d) { return py::float_(seconds(d.retry_after)); });
}
PyObject* get_retry_after_ns(PyObject* self, void* /*closure*/) {
  return decision_field(
      self, [](const shmlimit::Decision& d) { return py::int_(d.retry_after.count()); });
}
PyObject* get_reset_after(PyObject* self, void* /*closure*/) {
  return decision_field(
      self, [](const shmlimit::Decision& d) { return py::float_(seconds(d.reset_after)); });
}
PyObject* get_reset_after_ns(PyObject* self, void* /*closure*/) {
  return decision_field(
      self, [](const shmlimit::Decision& d) { return py::int_(d.reset_after.count()); });
}

// NOLINTBEGIN(cppcoreguidelines-avoid-c-arrays, modernize-avoid-c-arrays): CPython's table
PyGetSetDef decision_getset[] = {
    {"allowed", get_allowed, nullptr, "True when the request was admitted (and charged).", nullptr},
    {"limit", get_limit, nullptr, "The bucket's capacity (burst), in cost units.", nullptr},
    {"remaining", get_remaining, nullptr,
     "Cost units that would be admitted now, after this decision.", nullptr},
    {"retry_after", get_retry_after, nullptr,
     "Seconds to wait before the same cost fits (0.0 when allowed; inf when it never can).",
     nullptr},
    {"retry_after_ns", get_retry_after_ns, nullptr,
     "retry_after in integer nanoseconds (2**63-1 when it never can).", nullptr},
    {"reset_after", get_reset_after, nullptr, "Seconds until the bucket is full again.", nullptr},
    {"reset_after_ns", get_reset_after_ns, nullptr, "reset_after in integer nanoseconds.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};
// NOLINTEND(cppcoreguidelines-avoid-c-arrays, modernize-avoid-c-arrays)

}  // namespace

PYBIND11_MODULE(_shmlimit, m) {
  m.doc() = "Binding of the shmlimit C++ library (use the `shmlimit` package, not this module).";
  py::register_exception_translator(&translate);

  py::class_<shmlimit::PolicyId>(m, "PolicyId",
                                 "Index of a registered policy; valid for the life of the segment.")
      .def(py::init([](std::uint32_t index) { return shmlimit::PolicyId{index}; }), "index"_a)
      .def_readonly("index", &shmlimit::PolicyId::index)
      .def("__int__", [](const shmlimit::PolicyId& p) { return p.index; })
      .def("__index__", [](const shmlimit::PolicyId& p) { return p.index; })
      .def("__eq__", [](const shmlimit::PolicyId& a,
                        const shmlimit::PolicyId& b) { return a.index == b.index; })
      .def("__hash__",
           [](const shmlimit::PolicyId& p) { return std::hash<std::uint32_t>{}(p.index); })
      .def("__repr__",
           [](const shmlimit::PolicyId& p) { return "PolicyId(" + std::to_string(p.index) + ")"; });

  py::class_<shmlimit::Decision> decision(
      m, "Decision",
      "The outcome of one decision: allowed, limit, remaining, retry_after, reset_after "
      "and why.\nTrue in a boolean context when allowed.");
  for (PyGetSetDef* g = decision_getset; g->name != nullptr; ++g) {
    PyObject* descr = PyDescr_NewGetSet(reinterpret_cast<PyTypeObject*>(decision.ptr()), g);
    if (descr == nullptr) throw py::error_already_set();
    decision.attr(g->name) = py::reinterpret_steal<py::object>(descr);
  }
  decision
      .def_property_readonly(
          "reason",
          [](const shmlimit::Decision& d) { return std::string(shmlimit::to_string(d.reason)); },
          "Why: \"ok\" (decided by the policy), \"table_full\", \"key_too_long\", "
          "\"unknown_policy\", "
          "\"cost_too_high\", \"contended\", \"clock_horizon\" or \"corrupt\".")
      .def("__bool__", [](const shmlimit::Decision& d) { return d.allowed; })
      .def("__repr__", [](const shmlimit::Decision& d) {
        return "Decision(" + shmlimit_python::decision_fields(d) + ")";
      });

  m.def(
      "parse_rate",
      [](const std::string& text) {
        const auto r = shmlimit::parse_rate(text);
        return py::make_tuple(r.count, seconds(r.period));
      },
      "text"_a,
      "Parses a rate (\"10/m\", \"1000/hour\", \"10/5m\", \"10 per minute\") into (count, "
      "period_seconds).\n"
      "Raises InvalidArgumentError naming what is wrong.");
  m.def(
      "parse_rates",
      [](const std::string& text) {
        py::list out;
        for (const auto& r : shmlimit::parse_rates(text))
          out.append(py::make_tuple(r.count, seconds(r.period)));
        return out;
      },
      "text"_a,
      "Parses a ';'-separated list of rates (\"10/h;100/d\") into a list of (count, "
      "period_seconds).");
  m.def(
      "format_rate", [](const py::handle& rate) { return shmlimit::format_rate(rate_from(rate)); },
      "rate"_a, "The canonical short form of a rate (\"10/5m\").");
  m.def(
      "parse_algorithm",
      [](const std::string& name) {
        return std::string(shmlimit::to_string(shmlimit::parse_algorithm(name)));
      },
      "name"_a,
      "The canonical name of an algorithm (accepts '-' for '_'); InvalidArgumentError if unknown.");

  shmlimit_python::bind_limiter(m);

  shmlimit_python::bind_web(m);

  // The Redis and hybrid tiers exist only in a build with shmlimit_redis
  // (hiredis found); HAS_REDIS tells Python code which build it has.
#ifdef SHMLIMIT_PYTHON_REDIS
  m.attr("HAS_REDIS") = true;
  shmlimit_python::bind_tiers(m);
#else
  m.attr("HAS_REDIS") = false;
#endif
}
