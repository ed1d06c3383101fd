// Export of live bucket state as JSON (doc/state-format.md):
// Limiter::export_state(). Times in the document are wall-clock instants
// (ISO 8601 UTC with ns): export adds the offset (CLOCK_REALTIME - segment
// time) read once at export (state_codecs.cpp, Clock). Export reads like
// dump() (never writes). Import: state_import.cpp.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admin/state_io.hpp"
#include "algorithms/algorithms.hpp"
#include "limiter/limiter_impl.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

using namespace detail::state_io;

namespace {

Json spec_json(const PolicySpec& s) {
  Json j;
  j["name"] = s.name;
  j["algorithm"] = std::string(to_string(s.algorithm));
  j["count"] = s.rate.count;
  j["period_ns"] = s.rate.period.count();
  j["burst"] = s.burst;
  j["on_full"] = s.on_full == OnFull::kDeny ? "deny" : "allow";
  if (s.algorithm == Algorithm::kSlidingLog) j["wait"] = wait_name(s.wait);
  return j;
}

}  // namespace

std::string Limiter::export_state(std::optional<PolicyId> policy,
                                  std::optional<std::string_view> key) const {
  const std::vector<PolicyView> policies = this->policies();
  if (policy) policy = PolicyId{impl_->resolved(policy->index)};  // an id from before a replacement
  const auto chosen = std::find_if(policies.begin(), policies.end(), [&](const PolicyView& v) {
    return policy && v.id.index == policy->index;
  });
  if (policy && chosen == policies.end()) {
    throw Error(ErrorCode::kInvalidArgument,
                "export: no policy with index " + std::to_string(policy->index));
  }
  std::vector<BucketView> buckets = dump();
  const Clock clock = clock_of(*this);
  Json doc;
  doc["format"] = kFormat;
  doc["version"] = kFormatVersion;
  doc["exported_at"] = iso8601(clock.wall(clock.now));
  doc["segment"] = name();
  Json specs = Json::array();
  for (const PolicyView& p : policies) {
    if (!policy || p.id.index == policy->index) specs.push_back(spec_json(p.spec));
  }
  doc["policies"] = std::move(specs);
  std::sort(buckets.begin(), buckets.end(), [](const BucketView& a, const BucketView& b) {
    return a.policy != b.policy ? a.policy < b.policy : a.key < b.key;
  });
  Json out = Json::array();
  std::map<std::string, u64> not_exported;
  for (const BucketView& b : buckets) {
    if (policy && b.policy != chosen->spec.name) continue;
    if (key && b.key != *key) continue;
    const auto spec = std::find_if(policies.begin(), policies.end(),
                                   [&](const PolicyView& p) { return p.spec.name == b.policy; });
    if (spec == policies.end() || b.now.reason == Reason::kCorrupt) {
      ++not_exported[b.policy];
      continue;
    }
    const AlgoParams params = algo_of(spec->spec);
    const Codec* codec = codec_of(params.algorithm);
    const bool is_log = params.algorithm == Algorithm::kSlidingLog;
    if (codec == nullptr && !is_log) {
      ++not_exported[b.policy];
      continue;
    }
    const std::vector<i64> admissions = is_log ? impl_->log_admissions(b.slot) : std::vector<i64>{};
    if (is_log ? admissions.empty() : detail::algo_is_full(params, b.state, clock.now))
      continue;  // same as absent
    Json j;
    j["policy"] = b.policy;
    if (valid_utf8(b.key)) {
      j["key"] = b.key;
    } else {
      j["key_base64"] = base64(b.key);
    }
    Json state = Json::object();
    if (is_log) {
      encode_log(admissions, clock, state);
    } else {
      codec->encode(params, b.state, clock, state);
    }
    j["state"] = std::move(state);
    j["admitted"] = b.admitted;
    j["denied"] = b.denied;
    out.push_back(std::move(j));
  }
  doc["buckets"] = std::move(out);
  if (!not_exported.empty()) doc["not_exported"] = not_exported;
  // replace: a policy name in a hostile segment may be any bytes.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace shmlimit
