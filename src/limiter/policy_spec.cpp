// The one check of a policy spec (policy_spec.hpp): add_policy, config
// files, the C API and the CLI all come here, so what a spec may be is
// written once. Also the escaping that keeps every Error message one
// printable line.
#include "limiter/policy_spec.hpp"

#include <cstdint>
#include <string>
#include <string_view>

#include "algorithms/algorithms.hpp"
#include "algorithms/gcra.hpp"
#include "algorithms/reserve.hpp"
#include "segment/layout.hpp"

namespace shmlimit {
namespace detail {
namespace {

using u64 = std::uint64_t;

constexpr char kHex[] = "0123456789abcdef";

void append_escaped(std::string& out, unsigned char c) {
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 15];
}

/// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no
/// overlong forms, no surrogates, at most U+10FFFF), or 0.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
  };
  const auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
    return byte(k) >= lo && byte(k) <= hi;
  };
  const unsigned c = byte(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

[[noreturn]] void refuse(const std::string& what) {
  throw Error(ErrorCode::kInvalidArgument, what);
}

}  // namespace

std::string escape_bytes(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (const char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F && u != '\\') {
      out += c;
    } else {
      append_escaped(out, u);
    }
  }
  return out;
}

std::string policy_name_problem(std::string_view name) {
  if (name.empty()) return "it is empty";
  if (name.size() >= kPolicyNameBytes) return "it is longer than 31 characters";
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name_char(name[i])) continue;
    const std::string at = " at byte " + std::to_string(i);
    const std::size_t n = utf8_length(name, i);
    if (n == 0) return "byte " + escape_bytes(name.substr(i, 1)) + at + " is not UTF-8";
    return "character '" + escape_bytes(name.substr(i, n)) + "'" + at +
           " is not one of A-Z a-z 0-9 _ . : -";
  }
  return {};
}

}  // namespace detail

// Error::what() is one printable line (shmlimit.hpp). A backslash is kept,
// so text escaped already (escape_bytes) reads the same.
std::string Error::printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F) {
      out += c;
    } else {
      detail::append_escaped(out, u);
    }
  }
  return out;
}

bool algorithm_has_burst(Algorithm algorithm) noexcept {
  return algorithm == Algorithm::kGcra || algorithm == Algorithm::kTokenBucket ||
         algorithm == Algorithm::kLeakyBucket;
}

bool algorithm_queues_turns(Algorithm algorithm) noexcept {
  return detail::reserve_mode(algorithm) == detail::ReserveMode::kQueue;
}

PolicySpec normalize_policy_spec(const PolicySpec& given) {
  PolicySpec spec = given;
  if (const std::string why = detail::policy_name_problem(spec.name); !why.empty()) {
    detail::refuse("invalid policy name \"" + detail::escape_bytes(spec.name) + "\": " + why);
  }
  const std::string label = "policy \"" + spec.name + "\"";
  const std::string algo(to_string(spec.algorithm));
  if (spec.on_full != OnFull::kAllow && spec.on_full != OnFull::kDeny) {
    detail::refuse(label + ": on_full must be allow or deny");
  }
  if (spec.wait != LogWait::kExact && spec.wait != LogWait::kDrf) {
    detail::refuse(label + ": wait must be exact or drf");
  }
  if (spec.wait != LogWait::kExact && spec.algorithm != Algorithm::kSlidingLog) {
    detail::refuse(label + ": wait = drf applies to sliding_log only (this policy is " + algo +
                   ")");
  }
  // A concurrency limit has no period: only rate.count (the limit) counts.
  if (spec.algorithm == Algorithm::kConcurrency) spec.rate.period = Nanos(0);
  if (spec.rate.count == 0 ||
      (spec.rate.period.count() <= 0 && spec.algorithm != Algorithm::kConcurrency)) {
    detail::refuse(label + ": the rate needs a count >= 1 and a period > 0");
  }
  if (!algorithm_has_burst(spec.algorithm)) {
    if (spec.burst != 0 && spec.burst != spec.rate.count) {
      detail::refuse(label + ": burst " + std::to_string(spec.burst) + " does not apply to " +
                     algo + ", whose capacity is the rate's count (" +
                     std::to_string(spec.rate.count) + "); leave burst at 0");
    }
  }
  if (spec.burst == 0 || !algorithm_has_burst(spec.algorithm)) spec.burst = spec.rate.count;
  const auto period = static_cast<std::uint64_t>(spec.rate.period.count());
  const char* why = "unknown algorithm";
  if (!detail::algo_params_valid(
          detail::AlgoParams{spec.algorithm, spec.rate.count, period, spec.burst,
                             detail::gcra_emission(spec.rate.count, period), spec.wait},
          &why)) {
    detail::refuse(label + " (" + algo + ", " + format_rate(spec.rate) + ", burst " +
                   std::to_string(spec.burst) + "): " + why);
  }
  return spec;
}

}  // namespace shmlimit
