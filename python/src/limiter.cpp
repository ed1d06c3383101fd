// shmlimit._shmlimit, the segment's Limiter and its concurrency Lease: the
// Python-side handle (PyLimiter), its options and the dicts it returns.
//
// The GIL is released around every call that may wait or scan (see
// _shmlimit.cpp's opening comment); each call holds its own reference to
// the mapping while it is released.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <ctime>
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

namespace {

using shmlimit::Nanos;
using shmlimit_python::checked_cost;
using shmlimit_python::duration_from_seconds;
using shmlimit_python::kNoPolicy;
using shmlimit_python::PolicyArg;
using shmlimit_python::rate_from;
using shmlimit_python::seconds;
using shmlimit_python::text;
using shmlimit_python::texts;
using shmlimit_python::unknown_policy;

// ---- conversions ------------------------------------------------------------

std::string on_full_name(shmlimit::OnFull o) {
  return o == shmlimit::OnFull::kDeny ? "deny" : "allow";
}

// Options from keyword arguments; 0 / None keep the C++ defaults.
shmlimit::Options make_options(const std::string& name, std::uint32_t capacity, mode_t mode,
                               std::uint32_t slot_bytes, std::uint32_t max_probe,
                               double open_timeout, double claim_timeout, bool read_only,
                               std::uint32_t log_entries, bool allow_other_users) {
  shmlimit::Options o;
  o.name = name;
  o.capacity = capacity;
  o.mode = mode;
  o.slot_bytes = slot_bytes;
  o.max_probe = max_probe;
  o.open_timeout = duration_from_seconds<std::chrono::milliseconds>(open_timeout, "open_timeout");
  o.claim_timeout =
      duration_from_seconds<std::chrono::milliseconds>(claim_timeout, "claim_timeout");
  o.read_only = read_only;
  o.log_entries = log_entries;
  o.allow_other_users = allow_other_users;
  return o;
}

// ---- the Python-side Limiter ------------------------------------------------

// Holds the move-only C++ Limiter; close() unmaps it (once no Lease still
// needs it). Every method checks that it is still open (a clear ValueError
// rather than a crash).
class PyLimiter {
 public:
  explicit PyLimiter(shmlimit::Limiter l)
      : limiter_(std::make_shared<shmlimit::Limiter>(std::move(l))) {}

  shmlimit::Limiter& get() const {
    if (!limiter_) throw py::value_error("the Limiter is closed");
    return *limiter_;
  }
  // Leases share ownership: the mapping stays until the last one is gone.
  // A new reference (a copy, on purpose), for calls that release the GIL.
  std::shared_ptr<shmlimit::Limiter> shared() const {
    get();
    return limiter_;
  }
  void close() { limiter_.reset(); }
  bool closed() const { return !limiter_; }

  // A policy given as a PolicyId or a name; a name is looked up (and
  // cached per Limiter object: ids are valid for the life of the segment).
  shmlimit::PolicyId resolve(const std::variant<shmlimit::PolicyId, std::string>& policy,
                             bool* found = nullptr) const {
    if (found) *found = true;
    if (const auto* id = std::get_if<shmlimit::PolicyId>(&policy)) return *id;
    const auto& name = std::get<std::string>(policy);
    if (auto it = names_.find(name); it != names_.end()) return it->second;
    const auto id = get().find_policy(name);
    if (!id) {
      if (found) *found = false;
      return kNoPolicy;
    }
    names_.emplace(name, *id);
    return *id;
  }

 private:
  std::shared_ptr<shmlimit::Limiter> limiter_;
  mutable std::unordered_map<std::string, shmlimit::PolicyId> names_;
};

using PolicyArg = std::variant<shmlimit::PolicyId, std::string>;

// A concurrency lease and the Limiter it must not outlive. Members are
// destroyed in reverse order: the lease is released before the mapping can go.
struct PyLease {
  std::shared_ptr<shmlimit::Limiter> owner;
  shmlimit::Lease lease;
};

// Runs f(limiter) with the GIL released, holding a reference to the mapping
// so that a close() in another thread takes effect only when f returns. The
// GIL is taken again before that reference (maybe the last) is dropped.
template <class F>
auto without_gil(const PyLimiter& self, F&& f) {
  const auto keep = self.shared();
  py::gil_scoped_release release;
  return std::forward<F>(f)(*keep);
}

// A keyed decision (acquire, acquire_at, peek, refund): checks the cost,
// resolves the policy (a name not registered is denied with reason
// unknown_policy, as the library does for an unknown PolicyId), then calls
// f(limiter, id, cost) without the GIL.
template <class F>
shmlimit::Decision keyed(const PyLimiter& self, const PolicyArg& policy, std::int64_t cost, F&& f) {
  const std::uint64_t c = checked_cost(cost);
  bool found = true;
  const shmlimit::PolicyId id = self.resolve(policy, &found);
  if (!found) return unknown_policy();
  return without_gil(self, [&](shmlimit::Limiter& l) { return f(l, id, c); });
}

// The PolicyId of an optional policy argument (reset, export_state); a name
// not registered is an InvalidArgumentError naming the call.
std::optional<shmlimit::PolicyId> optional_policy(const PyLimiter& self,
                                                  const std::optional<PolicyArg>& policy,
                                                  const std::string& what) {
  if (!policy) return std::nullopt;
  bool found = true;
  const shmlimit::PolicyId id = self.resolve(*policy, &found);
  if (!found) {
    throw shmlimit::Error(
        shmlimit::ErrorCode::kInvalidArgument,
        what + ": no policy \"" + std::get<std::string>(*policy) + "\" in " + self.get().name());
  }
  return id;
}

// A reservation and the Limiter it must not outlive.
struct PyReservation {
  std::shared_ptr<shmlimit::Limiter> owner;
  shmlimit::Reservation reservation;
};

// What Limiter.wait returns: the Decision of its last reservation, with
// the turn it was granted (time_to_act_ns) and how far that turn lay from
// the reservation (delay). Python's WaitDecision, a Decision.
struct PyWaitDecision : shmlimit::Decision {
  Nanos delay{0};
  Nanos act_at{0};

  PyWaitDecision() = default;
  explicit PyWaitDecision(const shmlimit::Reservation& r)
      : shmlimit::Decision(r.decision()), delay(r.delay()), act_at(r.time_to_act()) {}
};

// max_wait in seconds (None: no limit) as Nanos.
Nanos max_wait_from(const std::optional<double>& max_wait) {
  return max_wait ? duration_from_seconds<Nanos>(*max_wait, "max_wait") : Nanos::max();
}

// Sleeps until `until` on the segment's clock with the GIL released, in
// slices, so that a signal (KeyboardInterrupt) is handled within a slice.
// Returns false when a signal handler raised (the Python error is set).
bool sleep_until(const shmlimit::Limiter& l, Nanos until) {
  for (;;) {
    const Nanos left = until - l.now();
    if (left <= Nanos(0)) return true;
    {
      py::gil_scoped_release release;
      const auto slice = std::min<Nanos>(left, std::chrono::milliseconds(100));
      timespec ts{static_cast<time_t>(slice.count() / 1'000'000'000),
                  static_cast<long>(slice.count() % 1'000'000'000)};
      ::nanosleep(&ts, nullptr);  // EINTR: the loop checks signals and sleeps the rest
    }
    if (PyErr_CheckSignals() != 0) return false;
  }
}

// Limiter.wait once its arguments are checked: reserves the turn of
// (id, key, cost) at most `wait` away and sleeps until it with the GIL
// released (in slices: a signal's handler runs, and raises through
// py::error_already_set after giving the turn back). A refused reservation
// of a never-queued algorithm is asked again at its next opening.
PyWaitDecision wait_turn(const PyLimiter& self, shmlimit::PolicyId id, std::string_view key,
                         std::uint64_t c, Nanos wait) {
  const auto keep = self.shared();
  const Nanos start = keep->now();
  const Nanos deadline = wait == Nanos::max() ? Nanos::max() : start + wait;
  for (;;) {
    const Nanos now = keep->now();
    const Nanos left = deadline == Nanos::max() ? Nanos::max() : deadline - now;
    shmlimit::Reservation r = [&] {
      py::gil_scoped_release release;
      return keep->reserve(id, key, c, std::max(left, Nanos(0)));
    }();
    if (r.ok()) {
      if (!sleep_until(*keep, r.time_to_act())) {
        r.cancel();  // interrupted before the turn: give it back if still last
        throw py::error_already_set();
      }
      return PyWaitDecision(r);
    }
    // Refused: a queued algorithm's turn lies past the deadline; a
    // never-queued one is asked again at its next opening.
    const shmlimit::Decision d = r.decision();
    if (d.reason != shmlimit::Reason::kOk || left <= Nanos(0) || d.retry_after > left) {
      return PyWaitDecision(r);
    }
    const Nanos pause = std::max<Nanos>(d.retry_after, std::chrono::microseconds(100));
    const Nanos until = deadline == Nanos::max() ? now + pause : std::min(now + pause, deadline);
    if (!sleep_until(*keep, until)) throw py::error_already_set();
  }
}

py::dict check_dict(const shmlimit::CheckReport& r) {
  return py::dict("clean"_a = r.clean(), "problems"_a = texts(r.problems),
                  "repaired"_a = r.repaired, "live"_a = r.live, "in_progress"_a = r.in_progress);
}

py::dict policy_dict(const shmlimit::PolicySpec& s) {
  return py::dict("name"_a = text(s.name),
                  "algorithm"_a = std::string(shmlimit::to_string(s.algorithm)),
                  "rate"_a = shmlimit::format_rate(s.rate), "rate_count"_a = s.rate.count,
                  "rate_period"_a = seconds(s.rate.period), "burst"_a = s.burst,
                  "on_full"_a = on_full_name(s.on_full),
                  "wait"_a = s.wait == shmlimit::LogWait::kDrf ? "drf" : "exact");
}
}  // namespace

namespace shmlimit_python {

// ---- the integrations' per-request calls, as plain CPython functions ---------
//
// _shmlimit._acquire(limiter, policy_id, key, cost=1) is
// limiter.acquire(policy_id, key, cost) (_peek: limiter.peek), _shmlimit._tally(limiter,
// policy_id, key, amount, restart) is limiter.tally(policy_id, key, amount,
// restart=restart), and _shmlimit._acquire_many_one(limiter, policy_id, key,
// cost) is limiter.acquire_many([(policy_id, key, cost)], each=True), and
// _shmlimit._wait(limiter, policy_id, key, cost, max_wait) is
// limiter.wait(policy_id, key, cost, max_wait=max_wait), as
// METH_FASTCALL functions without pybind11's dispatch
// (argument records, overload resolution, keyword matching: 40% of a call).
// They are the once-per-request call of the DRF throttle, the Django
// middleware and ratelimit API, @limit, @throttled and the limits storage.
//
// The arguments those pass are decided here: a Limiter, a PolicyId, a key
// of bytes or str (read in place, a str as its UTF-8: both are immutable, and
// the call's arguments keep them alive while the GIL is released), a cost of
// type int in [0, 2^63), restart True or False. The same decision and
// Decision as the method's, the GIL released as it releases it, a closed
// Limiter the same ValueError. Any other argument (a policy name, a
// bytearray, a str that UTF-8 cannot encode, a negative or huge cost, a bool
// or float cost, ...) is handed to the method itself, so that it gets exactly
// the method's answer or error. Not a Limiter: TypeError.

// A bytes or str key read in place; false for anything else (no error set).
bool key_view(PyObject* o, std::string_view* key) {
  if (PyBytes_Check(o)) {
    *key = {PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o))};
    return true;
  }
  if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == nullptr) {  // a lone surrogate: the method's error
      PyErr_Clear();
      return false;
    }
    *key = {s, static_cast<std::size_t>(n)};
    return true;
  }
  return false;
}

// A cost of type int in [0, 2^63); false for anything else (no error set).
bool cost_of(PyObject* o, std::uint64_t* cost) {
  if (!PyLong_CheckExact(o)) return false;
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow != 0 || v < 0) return false;  // an exact int raises nothing here
  *cost = static_cast<std::uint64_t>(v);
  return true;
}

// limiter.<method>(*args[1:nargs], **kwargs) where args[nargs:] are the
// values of the keyword names `kwnames` (nullptr: none).
PyObject* call_method(const char* method, PyObject* const* args, Py_ssize_t nargs,
                      PyObject* kwnames) {
  PyObject* name = PyUnicode_InternFromString(method);
  if (name == nullptr) return nullptr;
  PyObject* out = PyObject_VectorcallMethod(name, args, static_cast<std::size_t>(nargs), kwnames);
  Py_DECREF(name);
  return out;
}

// The common part of the plain calls: the Limiter and PolicyId of
// args[0:2] and the key of args[2] (false: hand the call to the method;
// a TypeError is set when args[0] is not a Limiter).
struct FastArgs {
  const PyLimiter* self = nullptr;
  shmlimit::PolicyId id{};
  std::string_view key;
};

bool fast_args(PyObject* const* args, const char* usage, FastArgs* out) {
  py::detail::make_caster<PyLimiter> limiter;
  if (!limiter.load(args[0], false)) {
    PyErr_SetString(PyExc_TypeError, usage);
    return false;
  }
  py::detail::make_caster<shmlimit::PolicyId> policy;
  if (!policy.load(args[1], false) || !key_view(args[2], &out->key)) return false;
  out->self = &py::detail::cast_op<const PyLimiter&>(limiter);
  out->id = py::detail::cast_op<const shmlimit::PolicyId&>(policy);
  return true;
}

// f()'s Python object as a new reference; a C++ exception as its Python
// error (nullptr).
template <class F>
PyObject* python_result(F&& f) {
  try {
    return std::forward<F>(f)().release().ptr();
  } catch (const shmlimit::Error& e) {  // tally of another algorithm
    shmlimit_python::set_error(e);
  } catch (py::error_already_set& e) {  // a signal's handler raised
    e.restore();
  } catch (const py::builtin_exception& e) {  // value_error: the Limiter is closed
    e.set_error();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// decide(l, id, key) without the GIL; its result as Python's by to_python.
template <class Decide, class ToPython>
PyObject* fast_result(const FastArgs& a, Decide&& decide, ToPython&& to_python) {
  return python_result([&] {
    const auto r =
        without_gil(*a.self, [&](shmlimit::Limiter& l) { return decide(l, a.id, a.key); });
    return to_python(r);
  });
}

template <class Decide>
PyObject* fast_decision(const FastArgs& a, Decide&& decide) {
  return fast_result(a, std::forward<Decide>(decide), [](const shmlimit::Decision& d) {
    return py::cast(d);  // a copy into a new Decision object
  });
}

// _acquire and _peek: limiter.<method>(policy_id, key[, cost]) by
// decide(l, id, key, cost).
template <class Decide>
PyObject* fast_cost_call(PyObject* const* args, Py_ssize_t nargs, const char* method,
                         const char* usage, Decide&& decide) {
  if (nargs != 3 && nargs != 4) {
    PyErr_SetString(PyExc_TypeError, usage);
    return nullptr;
  }
  FastArgs a;
  std::uint64_t cost = 1;
  if (!fast_args(args, usage, &a) || (nargs == 4 && !cost_of(args[3], &cost))) {
    if (PyErr_Occurred() != nullptr) return nullptr;
    return call_method(method, args, nargs, nullptr);
  }
  return fast_decision(a, [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::string_view key) {
    return decide(l, id, key, cost);
  });
}

PyObject* fast_acquire(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  return fast_cost_call(
      args, nargs, "acquire",
      "_acquire(limiter, policy_id, key, cost=1): a Limiter, then Limiter.acquire's arguments",
      [](shmlimit::Limiter& l, shmlimit::PolicyId id, std::string_view key,
         std::uint64_t cost) noexcept { return l.acquire(id, key, cost); });
}

PyObject* fast_peek(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  return fast_cost_call(
      args, nargs, "peek",
      "_peek(limiter, policy_id, key, cost=1): a Limiter, then Limiter.peek's arguments",
      [](shmlimit::Limiter& l, shmlimit::PolicyId id, std::string_view key,
         std::uint64_t cost) noexcept { return l.peek(id, key, cost); });
}

constexpr const char* kTallyUsage =
    "_tally(limiter, policy_id, key, amount, restart): a Limiter, then Limiter.tally's arguments";

PyObject* fast_tally(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, kTallyUsage);
    return nullptr;
  }
  FastArgs a;
  std::uint64_t amount = 0;
  if (!fast_args(args, kTallyUsage, &a) || !cost_of(args[3], &amount) ||
      (args[4] != Py_True && args[4] != Py_False)) {
    if (PyErr_Occurred() != nullptr) return nullptr;
    PyObject* kwnames = Py_BuildValue("(s)", "restart");
    if (kwnames == nullptr) return nullptr;
    PyObject* out = call_method("tally", args, 4, kwnames);
    Py_DECREF(kwnames);
    return out;
  }
  const bool restart = args[4] == Py_True;
  return fast_decision(a, [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::string_view key) {
    return l.tally(id, key, amount, restart);
  });
}

constexpr const char* kAcquireManyOneUsage =
    "_acquire_many_one(limiter, policy_id, key, cost): a Limiter, then one request of "
    "Limiter.acquire_many";

// _acquire_many_one(limiter, policy_id, key, cost) is
// limiter.acquire_many([(policy_id, key, cost)], each=True): (combined,
// [decision]), each the Decision acquire would give (one request of
// acquire_many is an acquire).
PyObject* fast_acquire_many_one(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, kAcquireManyOneUsage);
    return nullptr;
  }
  FastArgs a;
  std::uint64_t cost = 0;
  if (!fast_args(args, kAcquireManyOneUsage, &a) || !cost_of(args[3], &cost)) {
    if (PyErr_Occurred() != nullptr) return nullptr;
    PyObject* request = PyTuple_Pack(3, args[1], args[2], args[3]);
    if (request == nullptr) return nullptr;
    PyObject* requests = PyList_New(1);
    if (requests == nullptr) {
      Py_DECREF(request);
      return nullptr;
    }
    PyList_SET_ITEM(requests, 0, request);  // steals it
    PyObject* kwnames = Py_BuildValue("(s)", "each");
    if (kwnames == nullptr) {
      Py_DECREF(requests);
      return nullptr;
    }
    PyObject* const call[] = {args[0], requests, Py_True};  // NOLINT(modernize-avoid-c-arrays)
    PyObject* out = call_method("acquire_many", call, 2, kwnames);
    Py_DECREF(kwnames);
    Py_DECREF(requests);
    return out;
  }
  using Both = std::pair<shmlimit::Decision, shmlimit::Decision>;
  return fast_result(
      a,
      [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::string_view key) noexcept {
        const shmlimit::Request request{id, key, cost};
        Both both;
        both.first = l.acquire_many({&request, 1}, {&both.second, 1});
        return both;
      },
      [](const Both& both) {
        py::list each;
        each.append(py::cast(both.second));
        return py::make_tuple(py::cast(both.first), each);
      });
}

constexpr const char* kWaitUsage =
    "_wait(limiter, policy_id, key, cost, max_wait): a Limiter, then Limiter.wait's arguments";

// max_wait of None or an int or float of seconds, as Limiter.wait reads it;
// false for anything else (no error set).
bool max_wait_of(PyObject* o, std::optional<double>* out) {
  if (o == Py_None) {
    *out = std::nullopt;
    return true;
  }
  if (!PyFloat_CheckExact(o) && !PyLong_CheckExact(o)) return false;
  const double v = PyFloat_AsDouble(o);
  if (v == -1.0 && PyErr_Occurred() != nullptr) {  // an int too large for a double
    PyErr_Clear();
    return false;
  }
  *out = v;
  return true;
}

// _wait(limiter, policy_id, key, cost, max_wait) is limiter.wait(policy_id,
// key, cost, max_wait=max_wait): @throttled's call.
PyObject* fast_wait(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, kWaitUsage);
    return nullptr;
  }
  FastArgs a;
  std::uint64_t cost = 0;
  std::optional<double> max_wait;
  if (!fast_args(args, kWaitUsage, &a) || !cost_of(args[3], &cost) ||
      !max_wait_of(args[4], &max_wait)) {
    if (PyErr_Occurred() != nullptr) return nullptr;
    PyObject* kwnames = Py_BuildValue("(s)", "max_wait");
    if (kwnames == nullptr) return nullptr;
    PyObject* out = call_method("wait", args, 4, kwnames);
    Py_DECREF(kwnames);
    return out;
  }
  return python_result(
      [&] { return py::cast(wait_turn(*a.self, a.id, a.key, cost, max_wait_from(max_wait))); });
}

// NOLINTBEGIN(cppcoreguidelines-avoid-non-const-global-variables, cppcoreguidelines-avoid-c-arrays,
// modernize-avoid-c-arrays): CPython keeps pointers
PyMethodDef fast_defs[] = {
    {"_acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_acquire)),
     METH_FASTCALL, nullptr},
    {"_peek", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_peek)), METH_FASTCALL,
     nullptr},
    {"_tally", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_tally)),
     METH_FASTCALL, nullptr},
    {"_wait", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_wait)), METH_FASTCALL,
     nullptr},
    {"_acquire_many_one",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fast_acquire_many_one)),
     METH_FASTCALL, nullptr},
};
// NOLINTEND(cppcoreguidelines-avoid-non-const-global-variables, cppcoreguidelines-avoid-c-arrays,
// modernize-avoid-c-arrays)

void bind_limiter(py::module_& m) {
  for (PyMethodDef& def : fast_defs) {
    PyObject* f = PyCFunction_NewEx(&def, nullptr, m.attr("__name__").ptr());
    if (f == nullptr) throw py::error_already_set();
    m.add_object(def.ml_name, py::reinterpret_steal<py::object>(f));
  }
  py::class_<PyLease>(
      m, "Lease",
      "A held share of a concurrency limit (Limiter.lease). True while held; released by\n"
      "release(), at the end of a with block, or when garbage-collected. Belongs to the process\n"
      "that took it: in a forked child, release() does nothing.")
      .def_property_readonly("held", [](const PyLease& l) { return l.lease.held(); })
      .def_property_readonly(
          "decision", [](const PyLease& l) { return l.lease.decision(); },
          "The decision that granted or refused it.")
      .def(
          "release", [](PyLease& l) { return l.lease.release(); },
          "Gives the units back now; True if this call released them.")
      .def("__bool__", [](const PyLease& l) { return l.lease.held(); })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyLease& l, const py::args&) { l.lease.release(); })
      .def("__repr__", [](const PyLease& l) {
        return std::string("<shmlimit.Lease ") + (l.lease.held() ? "held" : "not held") + ">";
      });

  py::class_<PyReservation>(
      m, "Reservation",
      "A turn reserved by Limiter.reserve. True when granted: act after .delay seconds.\n"
      "Dropping it keeps the turn taken; cancel() gives it back while nothing queued behind it "
      "and its\n"
      "turn has not come.")
      .def_property_readonly(
          "ok", [](const PyReservation& r) { return r.reservation.ok(); }, "Granted.")
      .def_property_readonly(
          "delay", [](const PyReservation& r) { return seconds(r.reservation.delay()); },
          "Granted: seconds to wait before acting (0: now). Refused: the wait it would have "
          "needed\n"
          "(inf: the cost never fits).")
      .def_property_readonly(
          "time_to_act_ns",
          [](const PyReservation& r) { return r.reservation.time_to_act().count(); },
          "When the caller may act, in ns since the segment's epoch (Limiter.now_ns()).")
      .def_property_readonly(
          "decision", [](const PyReservation& r) { return r.reservation.decision(); },
          "The reservation's Decision (allowed = ok).")
      .def(
          "cancel", [](PyReservation& r) { return r.reservation.cancel(); },
          "Gives the turn back if nothing has charged the bucket since and the turn has not "
          "come;\n"
          "True if it did. A second call returns False.")
      .def("__bool__", [](const PyReservation& r) { return r.reservation.ok(); })
      .def("__repr__", [](const PyReservation& r) {
        return std::string("<shmlimit.Reservation ") +
               (r.reservation.ok() ? "granted, delay " : "refused, needs ") +
               std::to_string(seconds(r.reservation.delay())) + " s>";
      });

  py::class_<PyWaitDecision, shmlimit::Decision>(
      m, "WaitDecision",
      "What Limiter.wait and wait_async return: a Decision with the turn of its reservation.\n"
      "Allowed: the caller woke at or after time_to_act_ns, delay seconds after reserving it.\n"
      "Refused: delay is the wait it would have needed (inf: the cost never fits).")
      .def(py::init([](const PyReservation& r) { return PyWaitDecision(r.reservation); }),
           "reservation"_a, "The WaitDecision of a Reservation (its decision, delay and turn).")
      .def_property_readonly(
          "delay", [](const PyWaitDecision& w) { return seconds(w.delay); },
          "Allowed: the seconds from the reservation to its turn (0: admitted at once). "
          "Refused: the\n"
          "wait it would have needed (inf: the cost never fits).")
      .def_property_readonly(
          "time_to_act_ns", [](const PyWaitDecision& w) { return w.act_at.count(); },
          "The turn, in ns since the segment's epoch (Limiter.now_ns()): the reservation's time "
          "plus delay.")
      .def("__repr__", [](const PyWaitDecision& w) {
        return "WaitDecision(" + shmlimit_python::decision_fields(w) +
               ", delay=" + std::to_string(seconds(w.delay)) +
               ", time_to_act_ns=" + std::to_string(w.act_at.count()) + ")";
      });

  py::class_<PyLimiter>(m, "Limiter",
                        "A handle on a named shared-memory segment of buckets shared by every "
                        "process that opens it.\n"
                        "Process- and thread-safe; decisions are lock-free and never raise.")
      .def_static(
          "open",
          [](const std::string& name, std::uint32_t capacity, double open_timeout,
             double claim_timeout, bool read_only, bool allow_other_users) {
            auto o = make_options(name, capacity, 0600, 128, 32, open_timeout, claim_timeout,
                                  read_only, 0, allow_other_users);
            py::gil_scoped_release release;
            return PyLimiter(shmlimit::Limiter::open(o));
          },
          "name"_a, py::kw_only(), "capacity"_a = 0, "open_timeout"_a = 2.0,
          "claim_timeout"_a = 0.1, "read_only"_a = false, "allow_other_users"_a = false,
          "Opens an existing segment (\"/name\") and validates it; NotFoundError if it does not "
          "exist.\n"
          "capacity, when non-zero, must match the segment's. AccessError if another user owns "
          "it or\n"
          "'other' may write it, unless allow_other_users=True; IncompatibleError (at once) if "
          "it is\n"
          "not a regular file.")
      .def_static(
          "create",
          [](const std::string& name, std::uint32_t capacity, mode_t mode, std::uint32_t slot_bytes,
             std::uint32_t max_probe, std::uint32_t log_entries, double claim_timeout,
             bool allow_other_users) {
            auto o = make_options(name, capacity, mode, slot_bytes, max_probe, 2.0, claim_timeout,
                                  false, log_entries, allow_other_users);
            py::gil_scoped_release release;
            return PyLimiter(shmlimit::Limiter::create(o));
          },
          "name"_a, py::kw_only(), "capacity"_a = 65536, "mode"_a = 0600, "slot_bytes"_a = 128,
          "max_probe"_a = 32, "log_entries"_a = 0, "claim_timeout"_a = 0.1,
          "allow_other_users"_a = false,
          "Creates a new segment; ExistsError if the name is taken, NoSpaceError if /dev/shm "
          "cannot\n"
          "hold it. log_entries (per slot) makes room for\n"
          "sliding_log policies of up to that many requests per period.")
      .def_static(
          "open_or_create",
          [](const std::string& name, std::uint32_t capacity, mode_t mode, std::uint32_t slot_bytes,
             std::uint32_t max_probe, std::uint32_t log_entries, double open_timeout,
             double claim_timeout, bool allow_other_users) {
            auto o = make_options(name, capacity, mode, slot_bytes, max_probe, open_timeout,
                                  claim_timeout, false, log_entries, allow_other_users);
            py::gil_scoped_release release;
            return PyLimiter(shmlimit::Limiter::open_or_create(o));
          },
          "name"_a, py::kw_only(), "capacity"_a = 65536, "mode"_a = 0600, "slot_bytes"_a = 128,
          "max_probe"_a = 32, "log_entries"_a = 0, "open_timeout"_a = 2.0, "claim_timeout"_a = 0.1,
          "allow_other_users"_a = false,
          "Opens the segment or creates it; any number of processes may race here.")
      .def_static(
          "open_config",
          [](const std::string& path, bool replace) {
            py::gil_scoped_release release;
            return PyLimiter(shmlimit::open_config(shmlimit::load_config(path), replace));
          },
          "path"_a, py::kw_only(), "replace"_a = false,
          "Opens (or creates) the segment a TOML file describes and registers its policies "
          "(doc/config.md).")
      .def_static(
          "remove",
          [](const std::string& name) {
            py::gil_scoped_release release;
            return shmlimit::Limiter::remove(name);
          },
          "name"_a,
          "Removes the segment's name; False if it did not exist. Open handles stay valid.")
      .def(
          "close", [](PyLimiter& self) { self.close(); },
          "Unmaps the segment (the segment itself stays). Further calls raise ValueError.")
      .def_property_readonly("closed", &PyLimiter::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def(
          "__exit__", [](PyLimiter& self, const py::args&) { self.close(); }, "Closes the handle.")
      .def_property_readonly("name", [](const PyLimiter& self) { return self.get().name(); })
      .def_property_readonly("read_only",
                             [](const PyLimiter& self) { return self.get().read_only(); })
      .def_property_readonly(
          "max_key_bytes", [](const PyLimiter& self) { return self.get().max_key_bytes(); },
          "The longest key (in bytes) this segment stores.")
      .def(
          "add_policy",
          [](PyLimiter& self, const std::string& name, const std::string& algorithm,
             const py::object& rate, std::uint64_t burst, const std::string& on_full,
             const std::string& wait, bool replace) {
            const shmlimit::PolicySpec spec =
                shmlimit_python::policy_spec(name, algorithm, rate, burst, on_full, wait);
            return without_gil(self,
                               [&](shmlimit::Limiter& l) { return l.add_policy(spec, replace); });
          },
          "name"_a, "algorithm"_a = "gcra", "rate"_a, py::kw_only(), "burst"_a = 0,
          "on_full"_a = "allow", "wait"_a = "exact", "replace"_a = false,
          "Registers a policy and returns its PolicyId. The same spec again returns the same id; "
          "another spec\n"
          "under the same name raises PolicyConflictError unless replace=True (which keeps the "
          "buckets).\n"
          "burst=0 means rate.count; on_full is \"allow\" (fail open) or \"deny\" (fail closed); "
          "wait (sliding_log\n"
          "only) is \"exact\" (retry_after = the exact wait) or \"drf\" (DRF's "
          "SimpleRateThrottle.wait() formula).")
      .def(
          "find_policy",
          [](const PyLimiter& self, const std::string& name) -> std::optional<shmlimit::PolicyId> {
            return self.get().find_policy(name);
          },
          "name"_a, "The PolicyId of a registered policy, or None.")
      .def(
          "policies",
          [](const PyLimiter& self) {
            py::list out;
            for (const auto& p : self.get().policies()) {
              py::dict d = policy_dict(p.spec);
              d["id"] = p.id;
              out.append(d);
            }
            return out;
          },
          "Every registered policy as a dict (id, name, algorithm, rate, rate_count, rate_period, "
          "burst, on_full).")
      .def(
          "acquire",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost) {
            return keyed(self, policy, cost,
                         [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::uint64_t c) {
                           return l.acquire(id, key, c);
                         });
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "Charges cost to the bucket of (policy, key) now and returns the Decision. Never raises "
          "for a\n"
          "limiting outcome: an unknown policy name is denied with reason \"unknown_policy\".")
      .def(
          "acquire_at",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost, std::int64_t now_ns) {
            return keyed(self, policy, cost,
                         [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::uint64_t c) {
                           return l.acquire_at(id, key, c, Nanos(now_ns));
                         });
          },
          "policy"_a, "key"_a, "cost"_a, "now_ns"_a,
          "acquire() at an explicit time, in ns since the segment's epoch (see now_ns()): tests "
          "and replays.")
      .def(
          "peek",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost) {
            return keyed(self, policy, cost,
                         [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::uint64_t c) {
                           return l.peek(id, key, c);
                         });
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "What acquire() would say for cost, without charging anything.")
      .def(
          "lease",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost) {
            const std::uint64_t c = checked_cost(cost);
            bool found = true;
            const shmlimit::PolicyId id = self.resolve(policy, &found);
            auto out = std::make_unique<PyLease>();
            out->owner = self.shared();
            if (found) {
              py::gil_scoped_release release;
              out->lease = out->owner->lease(id, key, c);
            } else {
              out->lease = out->owner->lease(kNoPolicy, key, c);
            }
            return out;
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "Takes cost units of a concurrency policy's limit for (policy, key) until the Lease is "
          "released:\n"
          "`with lim.lease(\"uploads\", user) as l: if l: ...`. Never raises for a limiting "
          "outcome.")
      .def(
          "tally",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t amount, bool restart) {
            return keyed(self, policy, amount,
                         [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::uint64_t c) {
                           return l.tally(id, key, c, restart);
                         });
          },
          "policy"_a, "key"_a, "amount"_a = 1, py::kw_only(), "restart"_a = false,
          "Counts amount in a quiet_period policy's bucket whatever it holds (INCRBY, EXPIRE "
          "on the first\n"
          "count; restart=True: EXPIRE at every count). d.limit - d.remaining is the count; "
          "past the policy's\n"
          "count it saturates there and d.allowed is False. InvalidArgumentError for another "
          "algorithm.")
      .def(
          "reserve",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost, const std::optional<double>& max_wait) {
            const std::uint64_t c = checked_cost(cost);
            const Nanos wait = max_wait_from(max_wait);
            bool found = true;
            const shmlimit::PolicyId id = self.resolve(policy, &found);
            auto out = std::make_unique<PyReservation>();
            out->owner = self.shared();
            py::gil_scoped_release release;
            out->reservation = out->owner->reserve(found ? id : kNoPolicy, key, c, wait);
            return out;
          },
          "policy"_a, "key"_a, "cost"_a = 1, py::kw_only(), "max_wait"_a = py::none(),
          "Reserves cost units of (policy, key) for the caller's turn, at most max_wait seconds "
          "away\n"
          "(None: however far). Returns a Reservation: true when granted, with .delay the seconds "
          "to wait\n"
          "before acting; refused (nothing charged) when the turn lies further. GCRA, "
          "leaky_bucket and\n"
          "token_bucket queue callers first come, first served (a token bucket's turns are its "
          "refills); the\n"
          "windowed algorithms admit now or refuse with the next opening as "
          ".decision.retry_after\n"
          "(doc/outbound.md).")
      .def(
          "wait",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost, const std::optional<double>& max_wait) {
            const std::uint64_t c = checked_cost(cost);
            const Nanos wait = max_wait_from(max_wait);
            bool found = true;
            shmlimit::PolicyId id = self.resolve(policy, &found);
            if (!found) id = kNoPolicy;  // refused below, reason unknown_policy
            return wait_turn(self, id, key, c, wait);
          },
          "policy"_a, "key"_a, "cost"_a = 1, py::kw_only(), "max_wait"_a = py::none(),
          "Reserves and sleeps until the turn, with the GIL released, then returns the "
          "WaitDecision\n"
          "(allowed; .time_to_act_ns is the turn, .delay how far it lay).\n"
          "Refused at once, sleeping not at all and charging nothing, when the turn lies more "
          "than max_wait\n"
          "seconds away (None: no limit). A signal handler that raises (KeyboardInterrupt) "
          "interrupts the\n"
          "sleep; the turn is then cancelled (given back if nothing queued behind it).")
      .def(
          "refund",
          [](const PyLimiter& self, const PolicyArg& policy, const std::string& key,
             std::int64_t cost) {
            return keyed(self, policy, cost,
                         [&](shmlimit::Limiter& l, shmlimit::PolicyId id, std::uint64_t c) {
                           return l.refund(id, key, c);
                         });
          },
          "policy"_a, "key"_a, "cost"_a = 1,
          "Gives back cost already taken (never beyond the capacity); returns the bucket after the "
          "refund.")
      .def(
          "acquire_many",
          [](const PyLimiter& self, const py::iterable& requests, bool each) -> py::object {
            const shmlimit_python::Requests r = shmlimit_python::parse_requests(
                requests, [&](const PolicyArg& p, bool* found) { return self.resolve(p, found); });
            std::vector<shmlimit::Decision> decisions(r.reqs.size());
            shmlimit::Decision combined;
            if (r.unknown) {
              // Denied as a whole without charging anything, like the library
              // does for an unknown PolicyId.
              combined = unknown_policy();
              for (auto& d : decisions) d = unknown_policy();
            } else {
              combined = without_gil(
                  self, [&](shmlimit::Limiter& l) { return l.acquire_many(r.reqs, decisions); });
            }
            if (!each) return py::cast(combined);
            return py::make_tuple(combined, decisions);
          },
          "requests"_a, py::kw_only(), "each"_a = false,
          "All-or-nothing over several limits: requests is an iterable of (policy, key[, cost]). "
          "Admitted\n"
          "only if every limit admits, and then charged to every one; when any denies, none is "
          "charged.\n"
          "Returns the combined Decision, or (combined, [each limit's Decision]) with each=True.")
      .def(
          "reset",
          [](const PyLimiter& self, const std::optional<PolicyArg>& policy,
             const std::optional<std::string>& key) {
            if (key && !policy) throw py::value_error("reset(key=...) needs a policy");
            const auto id = optional_policy(self, policy, "reset");
            return without_gil(self, [&](shmlimit::Limiter& l) {
              return key ? l.reset(id, std::string_view(*key)) : l.reset(id);
            });
          },
          "policy"_a = py::none(), "key"_a = py::none(),
          "Forgets one key of a policy, every key of a policy, or (no arguments) everything; "
          "returns how many\n"
          "buckets were forgotten.")
      .def(
          "now_ns", [](const PyLimiter& self) { return self.get().now().count(); },
          "Current time in ns since the segment's epoch (CLOCK_MONOTONIC_RAW based), for "
          "acquire_at().")
      .def(
          "stats",
          [](const PyLimiter& self) {
            const shmlimit::Stats s =
                without_gil(self, [](const shmlimit::Limiter& l) { return l.stats(); });
            py::dict policy_counters;
            for (const shmlimit::PolicyCounters& c : s.policies) {
              policy_counters[py::str(c.policy)] =
                  py::dict("admitted"_a = c.admitted, "denied"_a = c.denied);
            }
            return py::dict(
                "layout_version"_a = s.layout_version,
                "layout_fingerprint"_a = s.layout_fingerprint, "capacity"_a = s.capacity,
                "slot_bytes"_a = s.slot_bytes, "max_key_bytes"_a = s.max_key_bytes,
                "max_probe"_a = s.max_probe, "segment_bytes"_a = s.segment_bytes,
                "created_unix_ns"_a = s.created_unix_ns, "age"_a = seconds(s.age),
                "clock_horizon_left"_a = seconds(s.clock_horizon_left), "used"_a = s.used,
                "reclaimable"_a = s.reclaimable, "dead"_a = s.dead, "empty"_a = s.empty,
                "claiming"_a = s.claiming, "max_probe_length"_a = s.max_probe_length,
                "mean_probe_length"_a = s.mean_probe_length, "full_events"_a = s.full_events,
                "contended_events"_a = s.contended_events, "repairs"_a = s.repairs,
                "admitted"_a = s.admitted, "denied"_a = s.denied, "processes"_a = s.processes,
                "policy_counters"_a = policy_counters,
                "decision_clock"_a = py::dict("clock"_a = s.decision_clock.clock,
                                              "reason"_a = s.decision_clock.reason));
          },
          "Segment-wide facts and counters as a dict (durations in seconds); reads every slot.\n"
          "admitted and denied are exact totals since creation (they never decrease);\n"
          "policy_counters maps each policy name to {'admitted': n, 'denied': n};\n"
          "decision_clock is this process's clock, {'clock': 'tsc' or 'exact', 'reason': why "
          "exact or ''}\n"
          "(SHMLIMIT_CLOCK, the host), not the segment's: each worker process may differ.")
      .def(
          "dump",
          [](const PyLimiter& self) {
            const std::vector<shmlimit::BucketView> rows =
                without_gil(self, [](const shmlimit::Limiter& l) { return l.dump(); });
            py::list out;
            for (const auto& b : rows) {
              out.append(py::dict("slot"_a = b.slot, "policy"_a = text(b.policy),
                                  "key"_a = py::bytes(b.key), "state"_a = b.state, "now"_a = b.now,
                                  "admitted"_a = b.admitted, "denied"_a = b.denied));
            }
            return out;
          },
          "Every live bucket as a dict: slot, policy, key (bytes), state, now (a Decision charging "
          "nothing),\n"
          "admitted, denied.")
      .def(
          "check",
          [](const PyLimiter& self, bool repair) {
            return check_dict(
                without_gil(self, [&](shmlimit::Limiter& l) { return l.check(repair); }));
          },
          py::kw_only(), "repair"_a = true,
          "Verifies every invariant of the segment; a dict with clean, problems, repaired, live, "
          "in_progress.")
      .def(
          "recent_denials",
          [](const PyLimiter& self, std::uint64_t since_cursor) {
            const shmlimit::RecentDenials r = without_gil(
                self, [&](const shmlimit::Limiter& l) { return l.recent_denials(since_cursor); });
            py::list rows;
            for (const auto& d : r.denials) {
              rows.append(py::dict("cursor"_a = d.cursor, "at"_a = seconds(d.at),
                                   "unix_ns"_a = d.unix_ns, "policy"_a = text(d.policy),
                                   "key"_a = py::bytes(d.key), "key_length"_a = d.key_length,
                                   "cost"_a = d.cost, "retry_after"_a = seconds(d.retry_after),
                                   "reason"_a = std::string(shmlimit::to_string(d.reason)),
                                   "pid"_a = d.pid, "repeats"_a = d.repeats));
            }
            return py::dict("denials"_a = rows, "next_cursor"_a = r.next_cursor, "lost"_a = r.lost);
          },
          "since_cursor"_a = 0,
          "The recent-denials ring from since_cursor on: {denials: [...oldest first], next_cursor, "
          "lost}.")
      .def(
          "export_state",
          [](const PyLimiter& self, const std::optional<PolicyArg>& policy,
             const std::optional<std::string>& key) {
            const auto id = optional_policy(self, policy, "export_state");
            return text(without_gil(self, [&](const shmlimit::Limiter& l) {
              return key ? l.export_state(id, std::string_view(*key)) : l.export_state(id);
            }));
          },
          "policy"_a = py::none(), "key"_a = py::none(),
          "The live buckets as a JSON document (doc/state-format.md), optionally of one policy "
          "and/or key.")
      .def(
          "import_state",
          [](const PyLimiter& self, const std::string& json, bool keep_existing) {
            const shmlimit::ImportReport r = without_gil(self, [&](shmlimit::Limiter& l) {
              return l.import_state(json, keep_existing ? shmlimit::ImportMode::kKeepExisting
                                                        : shmlimit::ImportMode::kReplace);
            });
            return py::dict("imported"_a = r.imported, "skipped_full"_a = r.skipped_full,
                            "skipped_existing"_a = r.skipped_existing, "no_room"_a = r.no_room);
          },
          "json"_a, py::kw_only(), "keep_existing"_a = false,
          "Writes the buckets of an export_state() document; validates it all first "
          "(InvalidArgumentError or\n"
          "PolicyConflictError naming the item, nothing written).")
      .def_static(
          "check_segment",
          [](const std::string& name, bool allow_other_users) {
            shmlimit::CheckReport r;
            {
              py::gil_scoped_release release;
              r = shmlimit::Limiter::check_segment(name, allow_other_users);
            }
            return check_dict(r);
          },
          "name"_a, py::kw_only(), "allow_other_users"_a = false,
          "Checks a segment without validating it first (read-only; never crashes on garbage).")
      .def("__repr__", [](const PyLimiter& self) {
        return self.closed() ? std::string("<shmlimit.Limiter closed>")
                             : "<shmlimit.Limiter " + self.get().name() + ">";
      });
}

}  // namespace shmlimit_python
