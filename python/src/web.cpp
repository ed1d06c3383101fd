// shmlimit._shmlimit, part two: client identity (include/shmlimit/identity.hpp)
// and rate-limit response headers (include/shmlimit/http.hpp).
//
// Every function bound here is a pure function of its arguments; none
// touches a segment, so none releases the GIL (they take microseconds).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "shmlimit/http.hpp"
#include "shmlimit/identity.hpp"
#include "shmlimit/shmlimit.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace shmlimit_python {

namespace {

using shmlimit::Nanos;

Nanos nanos_from_seconds(double s) {
  if (std::isnan(s)) throw py::value_error("a duration must not be NaN");
  if (s <= 0) return Nanos(0);
  if (s >= 9.2e9) return Nanos::max();  // beyond int64 ns: "never"
  return Nanos(static_cast<std::int64_t>(std::ceil(s * 1e9)));
}

std::vector<shmlimit::Cidr> cidrs_from(const std::vector<std::string>& items) {
  std::vector<shmlimit::Cidr> out;
  out.reserve(items.size());
  for (const auto& item : items) out.push_back(shmlimit::Cidr::parse(item));
  return out;
}

std::vector<std::string> cidr_texts(const std::vector<shmlimit::Cidr>& items) {
  std::vector<std::string> out;
  out.reserve(items.size());
  for (const auto& c : items) out.push_back(c.to_string());
  return out;
}

// (name, Decision, window_seconds) tuples -> PolicyReports. The names must
// outlive the reports (they are string_views): `names` owns them.
std::vector<shmlimit::PolicyReport> reports_from(const py::iterable& policies,
                                                 std::vector<std::string>& names) {
  std::vector<std::tuple<std::string, shmlimit::Decision, Nanos>> parts;
  for (const auto item : policies) {
    const auto t = item.cast<py::sequence>();
    if (py::len(t) != 3) throw py::value_error("each policy is (name, decision, window_seconds)");
    parts.emplace_back(t[0].cast<std::string>(), t[1].cast<shmlimit::Decision>(),
                       nanos_from_seconds(t[2].cast<double>()));
  }
  names.clear();
  names.reserve(parts.size());
  std::vector<shmlimit::PolicyReport> out;
  out.reserve(parts.size());
  for (auto& [name, decision, window] : parts) {
    names.push_back(std::move(name));
    out.push_back({names.back(), decision, window});
  }
  return out;
}

}  // namespace

void bind_web(py::module_& m) {
  // ---- identity -------------------------------------------------------------
  py::class_<shmlimit::IpAddress>(m, "IpAddress",
                                  "An IPv4 or IPv6 address (IPv4-mapped IPv6 folded to IPv4).")
      .def(py::init([](const std::string& text) { return shmlimit::IpAddress::parse(text); }),
           "text"_a, "Parses exactly an address; InvalidArgumentError otherwise.")
      .def_static(
          "try_parse", [](const std::string& text) { return shmlimit::IpAddress::try_parse(text); },
          "text"_a, "The address, or None.")
      .def_static(
          "try_parse_host",
          [](const std::string& text) { return shmlimit::IpAddress::try_parse_host(text); },
          "text"_a,
          R"(An address as it appears in headers ("a.b.c.d:port", "[v6]:port"), or None.)")
      .def_property_readonly("version",
                             [](const shmlimit::IpAddress& a) { return a.is_v4() ? 4 : 6; })
      .def("masked", &shmlimit::IpAddress::masked, "prefix"_a,
           "The address with all but the first prefix bits cleared.")
      .def("__str__", &shmlimit::IpAddress::to_string)
      .def("__repr__",
           [](const shmlimit::IpAddress& a) { return "IpAddress('" + a.to_string() + "')"; })
      .def("__eq__",
           [](const shmlimit::IpAddress& a, const shmlimit::IpAddress& b) { return a == b; })
      .def("__hash__",
           [](const shmlimit::IpAddress& a) { return py::hash(py::str(a.to_string())); });

  py::class_<shmlimit::Cidr>(m, "Cidr",
                             R"(A network: "10.0.0.0/8", "2001:db8::/32", or a bare address.)")
      .def(py::init([](const std::string& text) { return shmlimit::Cidr::parse(text); }), "text"_a)
      .def_property_readonly("network", &shmlimit::Cidr::network)
      .def_property_readonly("prefix", &shmlimit::Cidr::prefix)
      .def("__contains__", &shmlimit::Cidr::contains, "address"_a)
      .def("__str__", &shmlimit::Cidr::to_string)
      .def("__repr__", [](const shmlimit::Cidr& c) { return "Cidr('" + c.to_string() + "')"; })
      .def("__eq__", [](const shmlimit::Cidr& a, const shmlimit::Cidr& b) { return a == b; });

  m.def(
      "parse_cidrs", [](const std::string& text) { return shmlimit::parse_cidrs(text); }, "text"_a,
      "Parses \"10.0.0.0/8, 192.168.0.0/16 ::1\" into a list of Cidr.");

  py::class_<shmlimit::IdentityOptions>(
      m, "IdentityOptions",
      "How client_identity() picks the client (doc/identity.md). The defaults\n"
      "are Django REST framework's (NUM_PROXIES = None).")
      .def(py::init([](std::optional<unsigned> num_proxies, bool normalize,
                       const std::vector<std::string>& trusted_proxies, bool trust_unix_peer,
                       bool use_forwarded, unsigned ipv4_prefix, unsigned ipv6_prefix,
                       std::size_t max_header_bytes, unsigned max_hops, std::size_t max_key_bytes) {
             shmlimit::IdentityOptions o;
             o.num_proxies = num_proxies;
             o.normalize = normalize;
             o.trusted_proxies = cidrs_from(trusted_proxies);
             o.trust_unix_peer = trust_unix_peer;
             o.use_forwarded = use_forwarded;
             o.ipv4_prefix = ipv4_prefix;
             o.ipv6_prefix = ipv6_prefix;
             o.max_header_bytes = max_header_bytes;
             o.max_hops = max_hops;
             o.max_key_bytes = max_key_bytes;
             return o;
           }),
           py::kw_only(), "num_proxies"_a = py::none(), "normalize"_a = false,
           "trusted_proxies"_a = std::vector<std::string>{}, "trust_unix_peer"_a = false,
           "use_forwarded"_a = false, "ipv4_prefix"_a = 32, "ipv6_prefix"_a = 64,
           "max_header_bytes"_a = 8192, "max_hops"_a = 32, "max_key_bytes"_a = 88)
      .def_readonly("num_proxies", &shmlimit::IdentityOptions::num_proxies)
      .def_readonly("normalize", &shmlimit::IdentityOptions::normalize)
      .def_property_readonly(
          "trusted_proxies",
          [](const shmlimit::IdentityOptions& o) { return cidr_texts(o.trusted_proxies); })
      .def_readonly("trust_unix_peer", &shmlimit::IdentityOptions::trust_unix_peer)
      .def_readonly("use_forwarded", &shmlimit::IdentityOptions::use_forwarded)
      .def_readonly("ipv4_prefix", &shmlimit::IdentityOptions::ipv4_prefix)
      .def_readonly("ipv6_prefix", &shmlimit::IdentityOptions::ipv6_prefix)
      .def_readonly("max_header_bytes", &shmlimit::IdentityOptions::max_header_bytes)
      .def_readonly("max_hops", &shmlimit::IdentityOptions::max_hops)
      .def_readonly("max_key_bytes", &shmlimit::IdentityOptions::max_key_bytes);

  py::class_<shmlimit::Identity>(m, "Identity",
                                 "Who a request comes from: the limiter key and its origin.")
      .def_readonly("key", &shmlimit::Identity::key)
      .def_readonly("address", &shmlimit::Identity::address)
      .def_property_readonly(
          "source",
          [](const shmlimit::Identity& i) { return std::string(shmlimit::to_string(i.source)); })
      .def_readonly("hashed", &shmlimit::Identity::hashed)
      .def("__repr__", [](const shmlimit::Identity& i) {
        return "Identity(key=" + py::repr(py::str(i.key)).cast<std::string>() + ", source='" +
               std::string(shmlimit::to_string(i.source)) + "')";
      });

  m.def(
      "client_identity",
      [](const std::string& remote_addr, const std::optional<std::string>& x_forwarded_for,
         const std::optional<std::string>& forwarded, const shmlimit::IdentityOptions& options) {
        shmlimit::RequestInfo r;
        r.remote_addr = remote_addr;
        if (x_forwarded_for) r.x_forwarded_for = *x_forwarded_for;
        if (forwarded) r.forwarded = *forwarded;
        return shmlimit::client_identity(r, options);
      },
      "remote_addr"_a, "x_forwarded_for"_a = py::none(), "forwarded"_a = py::none(),
      "options"_a = shmlimit::IdentityOptions{},
      "The key a request is limited under: REMOTE_ADDR, X-Forwarded-For (None when absent) and "
      "Forwarded,\n"
      "as WSGI gives them, under the given IdentityOptions. Never raises on request data.");
  m.def(
      "fit_key",
      [](const std::string& key, std::size_t max_key_bytes) {
        return shmlimit::fit_key(key, max_key_bytes);
      },
      "key"_a, "max_key_bytes"_a = 88,
      "The key, or a fixed-length digest of it when longer than max_key_bytes.");
  m.def(
      "throttle_key",
      [](const std::string& scope, const std::string& ident, std::size_t max_key_bytes) {
        return shmlimit::throttle_key(scope, ident, max_key_bytes);
      },
      "scope"_a, "ident"_a, "max_key_bytes"_a = 88,
      "DRF's cache key \"throttle_<scope>_<ident>\", fitted.");

  py::class_<shmlimit::AccessList>(m, "AccessList",
                                   "Allow and deny lists by CIDR; deny wins over allow.")
      .def(
          py::init([](const std::vector<std::string>& allow, const std::vector<std::string>& deny) {
            return shmlimit::AccessList(cidrs_from(allow), cidrs_from(deny));
          }),
          py::kw_only(), "allow"_a = std::vector<std::string>{},
          "deny"_a = std::vector<std::string>{})
      .def(
          "classify",
          [](const shmlimit::AccessList& l, const std::optional<shmlimit::IpAddress>& address) {
            return std::string(shmlimit::to_string(l.classify(address)));
          },
          "address"_a, R"("deny", "allow" or "limit" (no address: "limit").)")
      .def(
          "classify_text",
          [](const shmlimit::AccessList& l, const std::string& text) {
            return std::string(
                shmlimit::to_string(l.classify(shmlimit::IpAddress::try_parse_host(text))));
          },
          "text"_a, "classify() of an address given as text (not an address: \"limit\").");

  // ---- headers --------------------------------------------------------------
  m.attr("HEADERS_RETRY_AFTER") = shmlimit::kHeadersRetryAfter;
  m.attr("HEADERS_X_RATELIMIT") = shmlimit::kHeadersXRateLimit;
  m.attr("HEADERS_RATELIMIT") = shmlimit::kHeadersRateLimit;
  m.attr("HEADERS_ALL") = shmlimit::kHeadersAll;

  py::class_<shmlimit::HttpOptions>(m, "HttpOptions",
                                    "How a Decision becomes a response (doc/headers.md).")
      .def(py::init([](int refuse_status, bool dry_run, unsigned headers) {
             shmlimit::HttpOptions o;
             o.refuse_status = refuse_status;
             o.dry_run = dry_run;
             o.headers = headers;
             return o;
           }),
           py::kw_only(), "refuse_status"_a = 429, "dry_run"_a = false,
           "headers"_a = shmlimit::kHeadersAll)
      .def_readonly("refuse_status", &shmlimit::HttpOptions::refuse_status)
      .def_readonly("dry_run", &shmlimit::HttpOptions::dry_run)
      .def_readonly("headers", &shmlimit::HttpOptions::headers);

  py::class_<shmlimit::HttpVerdict>(m, "HttpVerdict", "What to do with a request.")
      .def_readonly("refuse", &shmlimit::HttpVerdict::refuse)
      .def_readonly("would_refuse", &shmlimit::HttpVerdict::would_refuse)
      .def_readonly("status", &shmlimit::HttpVerdict::status)
      .def_readonly("retry_after_s", &shmlimit::HttpVerdict::retry_after_s);

  m.def("http_verdict", &shmlimit::http_verdict, "decision"_a,
        "options"_a = shmlimit::HttpOptions{},
        "Whether to refuse, with which status, and the Retry-After seconds.");
  m.def(
      "ceil_seconds", [](std::int64_t ns) { return shmlimit::ceil_seconds(Nanos(ns)); }, "ns"_a,
      "Whole seconds rounded up (0 for ns <= 0).");
  m.def(
      "policy_window",
      [](const std::string& algorithm, const std::string& rate, std::uint64_t burst) {
        shmlimit::PolicySpec spec;
        spec.algorithm = shmlimit::parse_algorithm(algorithm);
        spec.rate = shmlimit::parse_rate(rate);
        spec.burst = burst;
        const Nanos w = shmlimit::policy_window(spec);
        return w == Nanos::max() ? std::numeric_limits<double>::infinity()
                                 : static_cast<double>(w.count()) / 1e9;
      },
      "algorithm"_a, "rate"_a, "burst"_a = 0,
      "Seconds the policy takes to make its whole capacity available again: the RateLimit-Policy "
      "w.");
  m.def(
      "rate_limit_headers",
      [](const shmlimit::Decision& combined, const py::iterable& policies,
         const shmlimit::HttpOptions& options) {
        std::vector<std::string> names;
        const auto reports = reports_from(policies, names);
        py::list out;
        for (const auto& h : shmlimit::rate_limit_headers(combined, reports, options)) {
          out.append(py::make_tuple(h.name, h.value));
        }
        return out;
      },
      "combined"_a, "policies"_a = py::list(), "options"_a = shmlimit::HttpOptions{},
      "The response headers for a decision as a list of (name, value): Retry-After, X-RateLimit-*, "
      "and\n"
      "RateLimit-Policy / RateLimit with one item per (name, decision, window_seconds) in "
      "policies.");
  m.def(
      "drf_throttled_detail",
      [](std::optional<double> wait) {
        return shmlimit::drf_throttled_detail(wait ? std::optional<Nanos>(nanos_from_seconds(*wait))
                                                   : std::nullopt);
      },
      "wait"_a = py::none(),
      "DRF's Throttled message for a wait in seconds (or None), exactly as DRF words it.");
}

}  // namespace shmlimit_python
