// Configuration files: loading one (load_config; config_toml.cpp parses the
// TOML), applying a Config (open_config, policy_group), and the messages and
// policy-spec checks shared with parsing one. Rate lists and durations are in rates.cpp.
//
// A config is applied all or nothing: every spec is checked by the one
// validator Limiter::add_policy uses before anything is written.
#include "shmlimit/config.hpp"

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config_impl.hpp"
#include "limiter/policy_spec.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"

namespace shmlimit {
namespace config_detail {

std::string one_line(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  return out;
}

[[noreturn]] void invalid(const std::string& what) {
  throw Error(ErrorCode::kInvalidArgument, one_line(what));
}

// ---------------------------------------------------------------------------
// Policy specs: checked by the one validator Limiter::add_policy uses
// (normalize_policy_spec, src/limiter/policy_spec.cpp), before anything is
// written so that a config is applied all or nothing.

// Why add_policy would refuse `spec` (empty when it would accept it).
std::string spec_problem(const PolicySpec& spec) {
  try {
    (void)normalize_policy_spec(spec);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

// "api.2" -> ("api", 2) when the name ends in '.' and a decimal K >= 2
// without a leading zero: the form of a list member's name.
std::optional<std::pair<std::string_view, u64>> split_member(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return std::nullopt;
  const std::string_view digits = name.substr(dot + 1);
  if (digits[0] == '0' || digits.size() > 6) return std::nullopt;
  u64 k = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    k = k * 10 + static_cast<u64>(c - '0');
  }
  if (k < 2) return std::nullopt;
  return std::pair{name.substr(0, dot), k};
}

std::string member_name(std::string_view base, std::size_t k) {
  return k <= 1 ? std::string(base) : std::string(base) + "." + std::to_string(k);
}
}  // namespace config_detail

namespace {

using namespace config_detail;

// Config files are small; a larger one is a mistake (or /dev/zero).
constexpr std::size_t kMaxConfigBytes = 1 << 20;

std::string describe(const PolicySpec& s) {
  return std::string(to_string(s.algorithm)) + " " + format_rate(s.rate) + " burst " +
         std::to_string(s.burst) + " on_full " + (s.on_full == OnFull::kDeny ? "deny" : "allow");
}

// An Error from the library, prefixed with the config's source.
[[noreturn]] void rethrow_with(const std::string& source, const Error& e) {
  throw Error(e.code(), one_line(source + ": " + e.what()));
}

}  // namespace

Config load_config(const std::string& path) {
  const auto fail = [&](int err) {
    const ErrorCode code = err == ENOENT || err == ENOTDIR ? ErrorCode::kNotFound
                           : err == EACCES || err == EPERM ? ErrorCode::kPermission
                                                           : ErrorCode::kSystem;
    throw Error(code, "cannot read config file " + path + ": " + std::strerror(err));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(errno);
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      fail(err);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      ::close(fd);
      invalid("cannot read config file " + path +
              ": it is larger than 1 MiB (is it a config file?)");
    }
  }
  ::close(fd);
  return parse_config(text, path);
}

Limiter open_config(const Config& config, bool replace) {
  const std::string source = config.source.empty() ? "<config>" : config.source;

  // 1. Every spec on its own, and the names among themselves.
  std::vector<PolicySpec> specs;
  std::set<std::string, std::less<>> names;
  for (const PolicySpec& s : config.policies) {
    if (const std::string why = spec_problem(s); !why.empty()) invalid(source + ": " + why);
    if (!names.insert(s.name).second)
      invalid(source + ": policy \"" + s.name + "\" is given twice");
    specs.push_back(normalize_policy_spec(s));
  }

  // 2. The segment.
  Options options = config.segment;
  options.read_only = false;
  std::optional<Limiter> opened;
  try {
    opened.emplace(Limiter::open_or_create(options));
  } catch (const Error& e) {
    rethrow_with(source, e);
  }
  Limiter& limiter = *opened;
  // Only the capacity is checked by open(); a smaller slot than the config
  // asks for would refuse keys that the config's users expect to fit.
  if (limiter.max_key_bytes() + detail::kSlotHeadBytes != options.slot_bytes) {
    throw Error(ErrorCode::kIncompatible,
                source + ": " + limiter.name() + " has " +
                    std::to_string(limiter.max_key_bytes() + detail::kSlotHeadBytes) +
                    "-byte slots, not the " + std::to_string(options.slot_bytes) +
                    " that the config asks for (recreate it, or set slot_bytes to match)");
  }

  // 3. Against what the segment holds, before anything is written.
  std::map<std::string, PolicySpec, std::less<>> existing;
  for (const PolicyView& v : limiter.policies()) existing.emplace(v.spec.name, v.spec);
  std::size_t added = 0;
  for (const PolicySpec& s : specs) {
    const auto it = existing.find(s.name);
    if (it == existing.end()) {
      ++added;
      continue;
    }
    if (!replace && it->second != s) {
      throw Error(ErrorCode::kPolicyConflict,
                  source + ": policy \"" + s.name + "\" is already registered in " +
                      limiter.name() + " as " + describe(it->second) + "; the config asks for " +
                      describe(s) +
                      "; nothing was registered (ask for replacement explicitly to change it)");
    }
  }
  // A list that is shorter than in the segment would leave a stale member
  // in policy_group(); policies cannot be removed.
  for (const PolicySpec& s : specs) {
    if (const auto member = split_member(s.name); member && names.count(member->first) != 0)
      continue;
    std::size_t n = 1;
    while (names.count(member_name(s.name, n + 1)) != 0) ++n;
    const std::string stale = member_name(s.name, n + 1);
    if (existing.count(stale) != 0) {
      throw Error(ErrorCode::kPolicyConflict,
                  source + ": " + limiter.name() + " holds policy \"" + stale +
                      "\", which policy_group(\"" + s.name +
                      "\") would include, but the config gives \"" + s.name + "\" " +
                      std::to_string(n) + " rate" + (n == 1 ? "" : "s") +
                      "; policies cannot be removed from a segment: recreate it (shmlimit rm " +
                      limiter.name() + "); nothing was registered");
    }
  }
  if (existing.size() + added > detail::kMaxPolicies) {
    throw Error(ErrorCode::kTableFull,
                source + ": " + limiter.name() + " holds " + std::to_string(existing.size()) +
                    " policies and the config adds " + std::to_string(added) + ", more than its " +
                    std::to_string(detail::kMaxPolicies) + "; nothing was registered");
  }

  // 4. Write. Only a concurrent writer can make this fail (see config.hpp).
  for (const PolicySpec& s : specs) {
    try {
      limiter.add_policy(s, replace);
    } catch (const Error& e) {
      rethrow_with(source, e);
    }
  }
  return std::move(limiter);
}

std::vector<PolicyId> policy_group(const Limiter& limiter, std::string_view name) {
  std::vector<PolicyId> out;
  for (std::size_t k = 1; k <= detail::kMaxPolicies; ++k) {
    const std::optional<PolicyId> id = limiter.find_policy(member_name(name, k));
    if (!id) break;
    out.push_back(*id);
  }
  return out;
}

}  // namespace shmlimit
