// `shmlimit-stress`: the policies (data: PolicyPlan) and what the verifier
// knows of each algorithm (AlgorithmModel).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "stress.hpp"

namespace stress {

std::vector<PolicyPlan> default_policies(u64 keys) {
  return {
      {"fast", "gcra", "1000/s", 20, 0, 1, 1, 4},
      {"api", "gcra", "100/s", 10, 0, 1, 1, 3},
      {"upload", "gcra", "200/s", 50, 0, 1, 5, 2},
      {"churn", "gcra", "2000/s", 1, 20 * keys, 1, 1, 1},
  };
}

PolicyPlan parse_policy_plan(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    throw shmlimit::Error(shmlimit::ErrorCode::kInvalidArgument,
                          "invalid --policy \"" + text + "\": " + why);
  };
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    bad("expected NAME=RATE[,burst=B][,cost=LO-HI][,weight=W]");
  PolicyPlan p;
  p.name = text.substr(0, eq);
  std::vector<std::string> parts;
  std::string rest = text.substr(eq + 1);
  for (std::size_t start = 0;;) {
    const auto comma = rest.find(',', start);
    parts.push_back(
        rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  p.rate = parts[0];
  const auto number = [&](const std::string& field, const std::string& v) -> u64 {
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 18) {
      bad(field + " must be a non-negative integer, not \"" + v + "\"");
    }
    return std::stoull(v);
  };
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const auto e = parts[i].find('=');
    if (e == std::string::npos) bad("\"" + parts[i] + "\" is not FIELD=VALUE");
    const std::string field = parts[i].substr(0, e), value = parts[i].substr(e + 1);
    if (field == "burst") {
      p.burst = number(field, value);
    } else if (field == "cost") {
      const auto dash = value.find('-');
      p.cost_min = number(field, value.substr(0, dash));
      p.cost_max = dash == std::string::npos ? p.cost_min : number(field, value.substr(dash + 1));
    } else if (field == "weight") {
      p.weight = static_cast<unsigned>(std::min<u64>(number(field, value), 1'000'000));
    } else if (field == "keys") {
      p.keys = number(field, value);
      if (p.keys == 0) bad("keys must be at least 1");
    } else if (field == "algorithm") {
      p.algorithm = value;
    } else {
      bad("unknown field \"" + field + "\" (burst, cost, weight, keys, algorithm)");
    }
  }
  if (p.cost_min == 0 || p.cost_max < p.cost_min || p.cost_max > 65535)
    bad("cost must be 1 <= LO <= HI <= 65535");
  if (p.weight == 0) bad("weight must be at least 1");
  return p;
}

namespace {

i64 floor_div(i64 num, u64 den) {
  const auto d = static_cast<i64>(den);
  return num >= 0 ? num / d : -((-num + d - 1) / d);
}

// GCRA (doc/design.md). TAT only grows: each admission of cost c raises it
// to max(TAT, n) + c*T; an admission at time n leaves TAT - n <= B*T; a
// denial of cost c at time n means TAT > n + (B - c)*T. With X0 the key's
// first TAT (its claimer's reading) and W the refill lost while the bucket
// sat full (sum over admissions of max(0, n - TAT before it), and the jump
// from a reclaimed bucket's TAT to the reading that re-inserted the key):
//   TAT_end = X0 + C*T + W.
// a <= X0 <= a', with a the reading before the key's first decision of any
// kind and a' the end of the first decision that met the bucket.
// Upper: X0 >= a and TAT_end <= b + B*T give C <= B + floor((b - a) / T).
// Lower: X0 <= a', W <= E and TAT_end > d + (B - cost_max)*T give
//   C >= B - cost_max + floor((d - a' - E) / T).
const AlgorithmModel kGcraModel{
    "gcra",
    [](const Params& p, i64 a, i64 b) -> u64 {
      return p.burst + static_cast<u64>(std::max<i64>(0, floor_div(b - a, p.emission_ns)));
    },
    [](const Params& p, u64 state, i64 a) -> i64 {
      return floor_div(static_cast<i64>(state) - a, p.emission_ns);
    },
    [](const Params& p, u64 state, i64 a, i64 waste) -> i64 {
      return floor_div(static_cast<i64>(state) - a - waste, p.emission_ns);
    },
    [](const Params& p, u64 cost_max, i64 a, i64 d, i64 waste) -> i64 {
      return static_cast<i64>(p.burst) - static_cast<i64>(cost_max) +
             floor_div(d - a - waste, p.emission_ns);
    },
    [](const Params& p, bool allowed, u64 cost, i64 t) -> i64 {
      // After an admission TAT >= n + c*T; after a denial TAT > n + (B - c)*T; n >= t.
      return t + static_cast<i64>((allowed ? cost : p.burst - cost) * p.emission_ns);
    },
};

}  // namespace

const AlgorithmModel* model_for(const std::string& algorithm) {
  if (algorithm == "gcra") return &kGcraModel;
  return nullptr;
}

}  // namespace stress
