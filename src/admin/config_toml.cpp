// Configuration files: parsing TOML (via toml++) into a Config.
//
// The parser is strict on purpose: an unknown key, a wrong type or a value
// out of range is an error that names the file, the line and the column,
// because a typo that silently fell back to a default would run a server
// with limits nobody chose. doc/config.md is the schema; the unit tests
// (tests/unit/config_test.cpp) hold a table of valid and invalid files.
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
#include "config_impl.hpp"
#include "limiter/policy_spec.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "shmlimit/config.hpp"

namespace shmlimit {
namespace {

using namespace config_detail;

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
        o.log_entries =
            static_cast<std::uint32_t>(integer_of(value, what, 0, detail::kMaxLogEntries));
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
      fail(key.source(), "invalid policy name \"" + detail::escape_bytes(name) +
                             "\" in [policies." + toml_key(name) + "]: " + why);
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
      fail(limit->source(),
           label + ": limit applies to algorithm = \"concurrency\" only (this policy is " +
               algo_name + "; use rate = \"10/1m\")");
    }
    if (concurrency) {
      if (rate != nullptr || refill_period != nullptr || refill_amount != nullptr) {
        const toml::node* given = rate != nullptr            ? rate
                                  : refill_period != nullptr ? refill_period
                                                             : refill_amount;
        fail(given->source(), label + ": a concurrency policy has a limit (in flight), not a rate");
      }
      if (limit == nullptr) {
        fail(t.source().begin.line != 0 ? t.source() : key.source(),
             label +
                 ": algorithm = \"concurrency\" needs a limit, e.g. limit = 10 (at most 10 in "
                 "flight)");
      }
    }
    // sliding_log: `wait = "exact" | "drf"`.
    if (wait != nullptr) {
      if (base.algorithm != Algorithm::kSlidingLog) {
        fail(wait->source(),
             label + ": wait applies to algorithm = \"sliding_log\" only (this policy is " +
                 algo_name + ")");
      }
      const std::string_view v = string_of(*wait, label + ": wait");
      if (v == "exact") {
        base.wait = LogWait::kExact;
      } else if (v == "drf") {
        base.wait = LogWait::kDrf;
      } else {
        fail(wait->source(),
             label + ": wait must be \"exact\" or \"drf\", found \"" + std::string(v) + "\"");
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
      rates.push_back(
          Rate{integer_of(*limit, label + ": limit", 1, detail::kMaxConcurrency), Nanos(0)});
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
        fail(rate_node->source(),
             label + ": sliding_log keeps " + std::to_string(s.rate.count) +
                 " admissions per key but [segment] log_entries is " +
                 std::to_string(log_entries_) +
                 "; set [segment] log_entries >= " + std::to_string(s.rate.count));
      }
      p.specs.push_back(std::move(s));
    }
    return p;
  }

  std::string source_;
  std::uint32_t log_entries_ = 0;  // [segment] log_entries, for sliding_log policies
};

}  // namespace

Config parse_config(std::string_view toml_text, std::string_view source) {
  return Parser(source).parse(toml_text);
}

}  // namespace shmlimit
