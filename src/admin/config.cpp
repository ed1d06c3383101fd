// Configuration files (TOML, via toml++), rate lists and durations.
//
// The parser is strict on purpose: an unknown key, a wrong type or a value
// out of range is an error that names the file, the line and the column,
// because a typo that silently fell back to a default would run a server
// with limits nobody chose. doc/config.md is the schema; the unit tests
// (tests/unit/config_test.cpp) hold a table of valid and invalid files.
#include "shmlimit/config.hpp"

#include <fcntl.h>
#include <sys/types.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "algorithms/algorithms.hpp"
#include "limiter/policy_spec.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"

namespace shmlimit {
namespace {

using u64 = std::uint64_t;

constexpr std::int64_t kMillisecond = 1'000'000;
constexpr std::int64_t kSecond = 1'000'000'000;
// The longest period a rate may name (rate.cpp): 10 years.
constexpr std::int64_t kMaxPeriodNs = 10LL * 366 * 86400 * kSecond;
// The largest count or burst a file may give (rate.cpp's kMaxCount).
constexpr u64 kMaxCount = u64{1} << 40;
// Config files are small; a larger one is a mistake (or /dev/zero).
constexpr std::size_t kMaxConfigBytes = 1 << 20;

// A message is one line: control bytes that came from the file (through a
// quoted key, a value or the TOML parser's own description) are shown as
// \xNN.
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
// Rate lists and durations

// parse_rate's message is `invalid rate "<item>": <what> at column <N>`.
// Returns <what> and N, or nothing if the message has another shape.
std::optional<std::pair<std::string, std::size_t>> split_rate_error(std::string_view message,
                                                                    std::string_view item) {
  const std::string prefix = "invalid rate \"" + std::string(item) + "\": ";
  constexpr std::string_view kColumn = " at column ";
  if (!message.starts_with(prefix)) return std::nullopt;
  const std::size_t at = message.rfind(kColumn);
  if (at == std::string_view::npos || at < prefix.size()) return std::nullopt;
  std::size_t column = 0;
  const std::string_view digits = message.substr(at + kColumn.size());
  if (digits.empty() || digits.size() > 9) return std::nullopt;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    column = column * 10 + static_cast<std::size_t>(c - '0');
  }
  return std::pair{std::string(message.substr(prefix.size(), at - prefix.size())), column};
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; });
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

std::string describe(const PolicySpec& s) {
  return std::string(to_string(s.algorithm)) + " " + format_rate(s.rate) + " burst " +
         std::to_string(s.burst) + " on_full " + (s.on_full == OnFull::kDeny ? "deny" : "allow");
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

const char* ordinal_suffix(std::size_t k) {
  if (k % 100 >= 11 && k % 100 <= 13) return "th";
  switch (k % 10) {
    case 1:
      return "st";
    case 2:
      return "nd";
    case 3:
      return "rd";
    default:
      return "th";
  }
}

// ---------------------------------------------------------------------------
// TOML

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// TOML keys may hold any character; quote them as they would be written.
std::string toml_key(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
  if (bare) return std::string(key);
  std::string out = "\"";
  for (const char c : key) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Edit distance, for "did you mean": keys are short.
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  Config parse(std::string_view text) {
    toml::table root;
    try {
      root = toml::parse(text, source_);
    } catch (const toml::parse_error& e) {
      fail(e.source(), "invalid TOML: " + std::string(e.description()));
    }

    Config config;
    config.source = source_;
    const toml::node* segment = nullptr;
    const toml::node* policies = nullptr;
    toml::source_region policies_key;
    for (auto&& [key, value] : root) {
      if (key.str() == "segment") {
        segment = &value;
      } else if (key.str() == "policies") {
        policies = &value;
        policies_key = key.source();
      } else {
        unknown_key(key, "the top level", {"segment", "policies"});
      }
    }
    if (segment == nullptr) {
      fail(
          {},
          "no [segment] table: the config must name the segment, e.g. [segment] name = \"/myapp\"");
    }
    config.segment = parse_segment(*segment);
    log_entries_ = config.segment.log_entries;
    if (policies != nullptr) config.policies = parse_policies(*policies, policies_key);
    return config;
  }

 private:
  // ---- messages -----------------------------------------------------------
  std::string where(const toml::source_region& r) const {
    std::string out(source_);
    if (r.begin.line != 0) {
      out += ":" + std::to_string(r.begin.line);
      if (r.begin.column != 0) out += ":" + std::to_string(r.begin.column);
    }
    return out;
  }

  [[noreturn]] void fail(const toml::source_region& r, const std::string& what) const {
    invalid(where(r) + ": " + what);
  }

  [[noreturn]] void unknown_key(const toml::key& key, const std::string& table,
                                std::initializer_list<std::string_view> known) const {
    std::string list;
    std::string_view closest;
    std::size_t best = 3;  // suggest only near misses: at most 2 edits
    for (const std::string_view k : known) {
      list += (list.empty() ? "" : ", ") + std::string(k);
      const std::size_t d = distance(key.str(), k);
      if (d < best) {
        best = d;
        closest = k;
      }
    }
    std::string what = "unknown key '" + std::string(key.str()) + "' in " + table;
    if (!closest.empty()) what += "; did you mean '" + std::string(closest) + "'?";
    fail(key.source(), what + " (known: " + list + ")");
  }

  // ---- typed values ---------------------------------------------------------
  const toml::table& table_of(const toml::node& node, const toml::source_region& key_region,
                              const std::string& what) const {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
      fail(node.source().begin.line != 0 ? node.source() : key_region,
           what + " must be a table, found " + type_name(node.type()));
    }
    return *t;
  }

  std::string_view string_of(const toml::node& node, const std::string& what) const {
    const auto* s = node.as_string();
    if (s == nullptr)
      fail(node.source(), what + " must be a string, found " + type_name(node.type()));
    return s->get();
  }

  bool boolean_of(const toml::node& node, const std::string& what) const {
    const auto* b = node.as_boolean();
    if (b == nullptr)
      fail(node.source(), what + " must be true or false, found " + type_name(node.type()));
    return b->get();
  }

  u64 integer_of(const toml::node& node, const std::string& what, u64 min, u64 max) const {
    const auto* i = node.as_integer();
    if (i == nullptr)
      fail(node.source(), what + " must be an integer, found " + type_name(node.type()));
    const std::int64_t v = i->get();
    if (v < 0 || static_cast<u64>(v) < min || static_cast<u64>(v) > max) {
      fail(node.source(), what + " must be between " + std::to_string(min) + " and " +
                              std::to_string(max) + ", found " + std::to_string(v));
    }
    return static_cast<u64>(v);
  }

  Nanos duration_of(const toml::node& node, const std::string& what) const {
    const std::string_view text =
        string_of(node, what + " (a duration such as \"500ms\" or \"1m\")");
    try {
      return parse_duration(text);
    } catch (const Error& e) {
      fail(node.source(), what + ": " + e.what());
    }
  }

  // ---- [segment] ------------------------------------------------------------
  Options parse_segment(const toml::node& node) const {
    const toml::table& t = table_of(node, node.source(), "[segment]");
    Options o;
    bool named = false;
    for (auto&& [key, value] : t) {
      const std::string_view k = key.str();
      const std::string what = "[segment] " + std::string(k);
      if (k == "name") {
        o.name = std::string(string_of(value, what));
        try {
          detail::Segment::check_name(o.name);
        } catch (const Error& e) {
          fail(value.source(), what + ": " + e.what());
        }
        named = true;
      } else if (k == "capacity") {
        o.capacity = static_cast<std::uint32_t>(integer_of(value, what, 1, detail::kMaxCapacity));
      } else if (k == "mode") {
        o.mode = parse_mode(value, what);
      } else if (k == "slot_bytes") {
        const u64 v = integer_of(value, what, 64, 256);
        if (v != 64 && v != 128 && v != 256)
          fail(value.source(), what + " must be 64, 128 or 256, found " + std::to_string(v));
        o.slot_bytes = static_cast<std::uint32_t>(v);
      } else if (k == "max_probe") {
        o.max_probe = static_cast<std::uint32_t>(integer_of(value, what, 1, 1024));
      } else if (k == "log_entries") {
        o.log_entries = static_cast<std::uint32_t>(integer_of(value, what, 0, detail::kMaxLogEntries));
      } else if (k == "open_timeout" || k == "claim_timeout") {
        const Nanos d = duration_of(value, what);
        if (d < std::chrono::milliseconds(1) || d > std::chrono::hours(1)) {
          fail(value.source(), what + " must be between 1ms and 1h");
        }
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d);
        (k == "open_timeout" ? o.open_timeout : o.claim_timeout) = ms;
      } else if (k == "allow_other_users") {
        o.allow_other_users = boolean_of(value, what);
      } else {
        unknown_key(key, "[segment]",
                    {"name", "capacity", "mode", "slot_bytes", "max_probe", "log_entries",
                     "open_timeout", "claim_timeout", "allow_other_users"});
      }
    }
    if (!named) fail(t.source(), "[segment] needs a name, e.g. name = \"/myapp\"");
    return o;
  }

  // Octal permission bits as a string ("0600", "660"): an optional leading
  // 0, then 1-4 octal digits. A TOML integer is refused: `mode = 600`
  // would be decimal 600, not 0600.
  mode_t parse_mode(const toml::node& node, const std::string& what) const {
    if (node.is_integer()) {
      fail(node.source(), what +
                              " must be a string of octal digits such as \"0600\" (a TOML integer "
                              "would be decimal)");
    }
    const std::string_view text = string_of(node, what);
    std::string_view digits = text;
    if (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
    if (digits.empty() || digits.size() > 4 ||
        digits.find_first_not_of("01234567") != std::string_view::npos) {
      fail(node.source(), what + " \"" + std::string(text) +
                              "\" is not octal permission bits such as \"0600\" or \"0660\"");
    }
    mode_t mode = 0;
    for (const char c : digits) mode = static_cast<mode_t>(mode * 8 + static_cast<mode_t>(c - '0'));
    return mode;
  }

  // ---- [policies.NAME] ----------------------------------------------------
  struct Parsed {
    toml::source_position at;  // the policy's key: sorts policies into file order
    std::string name;
    std::vector<PolicySpec> specs;
  };

  std::vector<PolicySpec> parse_policies(const toml::node& node,
                                         const toml::source_region& key_region) const {
    const toml::table& t = table_of(node, key_region, "[policies]");
    std::vector<Parsed> parsed;
    for (auto&& [key, value] : t) parsed.push_back(parse_policy(key, value));
    // toml::table is ordered by key; register in the order of the file.
    std::stable_sort(parsed.begin(), parsed.end(), [](const Parsed& a, const Parsed& b) {
      return std::tie(a.at.line, a.at.column) < std::tie(b.at.line, b.at.column);
    });

    // Names must be unique after expansion, and a list member's name
    // (base.K) belongs to its base only: policy_group(base) would take it.
    std::map<std::string, const Parsed*, std::less<>> owner;
    for (const Parsed& p : parsed) owner.emplace(p.name, &p);
    for (const Parsed& p : parsed) {
      const auto member = split_member(p.name);
      if (!member) continue;
      const auto base = owner.find(member->first);
      if (base == owner.end()) continue;
      const Parsed& b = *base->second;
      const std::string why =
          member->second <= b.specs.size()
              ? "is also the name of the " + std::to_string(member->second) +
                    ordinal_suffix(member->second) + " rate of policy \"" + b.name + "\""
              : "is reserved for the list members of policy \"" + b.name + "\" (policy_group(\"" +
                    b.name + "\") would include it); choose another name";
      fail(toml::source_region{p.at, p.at, nullptr}, "policy name \"" + p.name + "\" " + why);
    }

    std::vector<PolicySpec> out;
    for (Parsed& p : parsed) {
      for (PolicySpec& s : p.specs) out.push_back(std::move(s));
    }
    return out;
  }

  Parsed parse_policy(const toml::key& key, const toml::node& node) const {
    const std::string name(key.str());
    const std::string label = "policy \"" + name + "\"";
    const toml::table* tp = node.as_table();
    if (tp == nullptr) {
      fail(key.source(), label + " must be a table such as [policies." + toml_key(name) +
                             "], found " + type_name(node.type()));
    }
    const toml::table& t = *tp;
    if (const std::string why = detail::policy_name_problem(name); !why.empty()) {
      fail(key.source(), "invalid policy name \"" + detail::escape_bytes(name) + "\" in [policies." +
                             toml_key(name) + "]: " + why);
    }

    const toml::node* algorithm = nullptr;
    const toml::node* rate = nullptr;
    const toml::node* burst = nullptr;
    const toml::node* max_tokens = nullptr;
    const toml::node* on_full = nullptr;
    const toml::node* refill_period = nullptr;
    const toml::node* refill_amount = nullptr;
    const toml::node* limit = nullptr;
    const toml::node* wait = nullptr;
    for (auto&& [k, value] : t) {
      const std::string_view s = k.str();
      const toml::node** slot = s == "algorithm"       ? &algorithm
                                : s == "rate"          ? &rate
                                : s == "burst"         ? &burst
                                : s == "max_tokens"    ? &max_tokens
                                : s == "on_full"       ? &on_full
                                : s == "refill_period" ? &refill_period
                                : s == "refill_amount" ? &refill_amount
                                : s == "limit"         ? &limit
                                : s == "wait"          ? &wait
                                                       : nullptr;
      if (slot == nullptr) {
        unknown_key(k, "[policies." + toml_key(name) + "]",
                    {"algorithm", "rate", "burst", "max_tokens", "on_full", "refill_period",
                     "refill_amount", "limit", "wait"});
      }
      *slot = &value;
    }

    PolicySpec base;
    base.name = name;
    if (algorithm != nullptr) {
      const std::string_view text = string_of(*algorithm, label + ": algorithm");
      try {
        base.algorithm = parse_algorithm(text);
      } catch (const Error& e) {
        fail(algorithm->source(), label + ": " + e.what());
      }
    }
    const std::string algo_name(to_string(base.algorithm));
    const bool token_bucket = base.algorithm == Algorithm::kTokenBucket;
    const bool concurrency = base.algorithm == Algorithm::kConcurrency;

    // concurrency: `limit = N` in flight, and no rate.
    if (limit != nullptr && !concurrency) {
      fail(limit->source(), label + ": limit applies to algorithm = \"concurrency\" only (this policy is " +
                                algo_name + "; use rate = \"10/1m\")");
    }
    if (concurrency) {
      if (rate != nullptr || refill_period != nullptr || refill_amount != nullptr) {
        const toml::node* given = rate != nullptr ? rate : refill_period != nullptr ? refill_period : refill_amount;
        fail(given->source(), label + ": a concurrency policy has a limit (in flight), not a rate");
      }
      if (limit == nullptr) {
        fail(t.source().begin.line != 0 ? t.source() : key.source(),
             label + ": algorithm = \"concurrency\" needs a limit, e.g. limit = 10 (at most 10 in flight)");
      }
    }
    // sliding_log: `wait = "exact" | "drf"`.
    if (wait != nullptr) {
      if (base.algorithm != Algorithm::kSlidingLog) {
        fail(wait->source(), label + ": wait applies to algorithm = \"sliding_log\" only (this policy is " +
                                 algo_name + ")");
      }
      const std::string_view v = string_of(*wait, label + ": wait");
      if (v == "exact") {
        base.wait = LogWait::kExact;
      } else if (v == "drf") {
        base.wait = LogWait::kDrf;
      } else {
        fail(wait->source(), label + ": wait must be \"exact\" or \"drf\", found \"" + std::string(v) + "\"");
      }
    }

    // The rates: `rate` (one, a ';' list or an array), or for a token
    // bucket refill_amount per refill_period.
    std::vector<Rate> rates;
    const toml::node* rate_node = rate;  // where to point for rate problems
    if (refill_period != nullptr || refill_amount != nullptr) {
      const toml::node* given = refill_period != nullptr ? refill_period : refill_amount;
      if (!token_bucket) {
        fail(given->source(), label +
                                  ": refill_period and refill_amount apply to algorithm = "
                                  "\"token_bucket\" only (this policy is " +
                                  algo_name + "; use rate = \"10/1m\")");
      }
      if (rate != nullptr) {
        fail(rate->source(),
             label + ": give either rate or refill_period + refill_amount, not both");
      }
      if (refill_period == nullptr || refill_amount == nullptr) {
        fail(given->source(), label +
                                  ": refill_period and refill_amount go together (rate = "
                                  "refill_amount per refill_period)");
      }
      const u64 amount = integer_of(*refill_amount, label + ": refill_amount", 1, kMaxCount);
      rates.push_back(Rate{amount, duration_of(*refill_period, label + ": refill_period")});
      rate_node = refill_amount;
    } else if (concurrency) {
      rates.push_back(Rate{integer_of(*limit, label + ": limit", 1, detail::kMaxConcurrency), Nanos(0)});
      rate_node = limit;
    } else if (rate == nullptr) {
      fail(t.source().begin.line != 0 ? t.source() : key.source(),
           label + " needs a rate, e.g. rate = \"100/day\"" +
               (token_bucket ? std::string(" (or refill_period and refill_amount)")
                             : std::string()));
    } else if (const toml::array* list = rate->as_array()) {
      if (list->empty()) fail(rate->source(), label + ": rate is an empty array");
      for (const toml::node& item : *list) {
        const std::string_view text = string_of(item, label + ": each rate of the array");
        try {
          rates.push_back(parse_rate(text));
        } catch (const Error& e) {
          fail(item.source(), label + ": " + e.what());
        }
      }
    } else {
      const std::string_view text = string_of(*rate, label + ": rate");
      try {
        rates = parse_rates(text);
      } catch (const Error& e) {
        fail(rate->source(), label + ": " + e.what());
      }
    }

    if (burst != nullptr && max_tokens != nullptr) {
      fail(max_tokens->source(),
           label + ": max_tokens is another name for burst; give one of them");
    }
    if (max_tokens != nullptr && !token_bucket) {
      fail(max_tokens->source(),
           label + ": max_tokens applies to algorithm = \"token_bucket\" only (use burst)");
    }
    if (const toml::node* b = burst != nullptr ? burst : max_tokens) {
      const std::string key_name = burst != nullptr ? "burst" : "max_tokens";
      if (!algorithm_has_burst(base.algorithm)) {
        fail(b->source(), label + ": " + key_name + " does not apply to " + algo_name +
                              " (its capacity is the rate's count)");
      }
      base.burst = integer_of(*b, label + ": " + key_name, 1, kMaxCount);
    }

    if (on_full != nullptr) {
      const std::string_view v = string_of(*on_full, label + ": on_full");
      if (v == "allow" || v == "open") {
        base.on_full = OnFull::kAllow;
      } else if (v == "deny" || v == "closed") {
        base.on_full = OnFull::kDeny;
      } else {
        fail(on_full->source(),
             label +
                 ": on_full must be \"allow\" (or \"open\") or \"deny\" (or \"closed\"), found \"" +
                 std::string(v) + "\"");
      }
    }

    Parsed p{key.source().begin, name, {}};
    for (std::size_t i = 0; i < rates.size(); ++i) {
      PolicySpec s = base;
      s.name = member_name(name, i + 1);
      s.rate = rates[i];
      if (const std::string why = detail::policy_name_problem(s.name); !why.empty()) {
        fail(key.source(), label + " has " + std::to_string(rates.size()) + " rates, so its " +
                               std::to_string(i + 1) + ordinal_suffix(i + 1) + " is named \"" +
                               s.name + "\": " + why);
      }
      if (const std::string why = spec_problem(s); !why.empty()) fail(rate_node->source(), why);
      if (s.algorithm == Algorithm::kSlidingLog && s.rate.count > log_entries_) {
        fail(rate_node->source(), label + ": sliding_log keeps " + std::to_string(s.rate.count) +
                                      " admissions per key but [segment] log_entries is " +
                                      std::to_string(log_entries_) + "; set [segment] log_entries >= " +
                                      std::to_string(s.rate.count));
      }
      p.specs.push_back(std::move(s));
    }
    return p;
  }

  std::string source_;
  std::uint32_t log_entries_ = 0;  // [segment] log_entries, for sliding_log policies
};

// An Error from the library, prefixed with the config's source.
[[noreturn]] void rethrow_with(const std::string& source, const Error& e) {
  throw Error(e.code(), one_line(source + ": " + e.what()));
}

}  // namespace

// ---------------------------------------------------------------------------

std::vector<Rate> parse_rates(std::string_view text) {
  if (text.find(';') == std::string_view::npos) return {parse_rate(text)};
  std::vector<Rate> out;
  std::size_t start = 0;
  for (std::size_t index = 1;; ++index) {
    const std::size_t end = std::min(text.find(';', start), text.size());
    const std::string_view item = text.substr(start, end - start);
    const auto fail = [&](const std::string& what, std::size_t column) {
      invalid("invalid rate \"" + std::string(text) + "\": item " + std::to_string(index) + ": " +
              what + " at column " + std::to_string(column));
    };
    if (is_blank(item)) {
      fail(end == text.size() ? "the list ends with ';' (remove it)" : "empty rate before ';'",
           start + 1);
    }
    try {
      out.push_back(parse_rate(item));
    } catch (const Error& e) {
      if (const auto parts = split_rate_error(e.what(), item))
        fail(parts->first, start + parts->second);
      invalid("invalid rate \"" + std::string(text) + "\": item " + std::to_string(index) + ": " +
              e.what());
    }
    if (end == text.size()) return out;
    start = end + 1;
  }
}

Nanos parse_duration(std::string_view text) {
  const auto fail = [&](std::size_t pos, const std::string& what) {
    invalid("invalid duration \"" + std::string(text) + "\": " + what + " at column " +
            std::to_string(pos + 1));
  };
  if (text.empty()) fail(0, "the duration is empty (expected e.g. \"500ms\" or \"1m\")");
  std::size_t pos = 0;
  u64 value = 0;
  while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
    const auto digit = static_cast<u64>(text[pos] - '0');
    if (value > (static_cast<u64>(kMaxPeriodNs) - digit) / 10) fail(0, "the number is too large");
    value = value * 10 + digit;
    ++pos;
  }
  if (pos == 0) {
    fail(0, "expected a number, found '" + std::string(1, text[0]) + "'");
  }
  if (value == 0) fail(0, "the duration must be at least 1 (a period of 0 means nothing)");
  const std::string_view unit = text.substr(pos);
  std::int64_t unit_ns = 0;
  if (unit == "ms") {
    unit_ns = kMillisecond;
  } else if (unit == "s") {
    unit_ns = kSecond;
  } else if (unit == "m") {
    unit_ns = 60 * kSecond;
  } else if (unit == "h") {
    unit_ns = 3600 * kSecond;
  } else if (unit == "d") {
    unit_ns = 86400 * kSecond;
  } else if (unit.empty()) {
    fail(pos, "expected a unit (ms, s, m, h or d) after the number, found the end");
  } else {
    fail(pos, "unknown unit '" + std::string(unit) + "' (expected ms, s, m, h or d)");
  }
  if (value > static_cast<u64>(kMaxPeriodNs / unit_ns))
    fail(0, "the duration is longer than 10 years");
  return Nanos(static_cast<std::int64_t>(value) * unit_ns);
}

Config parse_config(std::string_view toml_text, std::string_view source) {
  return Parser(source).parse(toml_text);
}

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
