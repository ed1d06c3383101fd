// Import of bucket state from JSON (doc/state-format.md):
// Limiter::import_state(). A segment's times are ns since its own
// CLOCK_MONOTONIC epoch; import subtracts the target segment's offset
// (CLOCK_REALTIME - segment time) read once at import, so the target may
// have another epoch (another host, or after a reboot). Import validates
// the whole document before its first write, then writes each bucket like
// a decision does (claim, then CAS of the state word; bucket_io.cpp).
// Export: state_export.cpp.
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admin/state_io.hpp"
#include "algorithms/algorithms.hpp"
#include "limiter/limiter_impl.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

using namespace detail::state_io;

ImportReport Limiter::import_state(std::string_view text) {
  return import_state(text, ImportMode::kReplace);
}

ImportReport Limiter::import_state(std::string_view text, ImportMode mode) {
  if (read_only())
    throw Error(ErrorCode::kReadOnly, "cannot import buckets through a read-only handle");
  Json doc;
  try {
    doc = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    // parse_error, and out_of_range for a number no double holds (1e400).
    bad(std::string("not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) bad("the document must be a JSON object");
  if (!doc.contains("format") || doc["format"] != std::string(kFormat)) {
    bad("\"format\" must be \"" + std::string(kFormat) + "\" (is this a `shmlimit export` file?)");
  }
  if (!doc.contains("version") || !doc["version"].is_number_integer())
    bad("\"version\" is missing");
  if (doc["version"].get<i64>() != kFormatVersion) {
    bad("format version " + doc["version"].dump() + " is not supported (this build reads version " +
        std::to_string(kFormatVersion) + ")");
  }
  if (!doc.contains("policies") || !doc["policies"].is_array())
    bad("\"policies\" must be an array");
  if (!doc.contains("buckets") || !doc["buckets"].is_array()) bad("\"buckets\" must be an array");

  // Every policy the document names must exist here with the same spec.
  struct Target {
    std::uint32_t index;
    PolicySpec spec;
  };
  std::map<std::string, Target> targets;
  std::map<std::string, std::string> unregistered;  // name -> where it is listed
  const std::vector<PolicyView> here = policies();
  for (std::size_t i = 0; i < doc["policies"].size(); ++i) {
    const Json& p = doc["policies"][i];
    const std::string where = "policies[" + std::to_string(i) + "]";
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string())
      bad(where + ": \"name\" is missing");
    const std::string pname = p["name"].get<std::string>();
    const auto found = std::find_if(here.begin(), here.end(),
                                    [&](const PolicyView& v) { return v.spec.name == pname; });
    if (found == here.end()) {
      unregistered[pname] = where;  // an error only if a bucket uses it
      continue;
    }
    // Integers only: a float is refused, never converted.
    const auto is_count = [&](const char* f) { return p.contains(f) && p[f].is_number_unsigned(); };
    if (!p.contains("algorithm") || !p["algorithm"].is_string() || !is_count("count") ||
        !is_count("burst") || !is_count("period_ns")) {
      bad(where + " (\"" + pname +
          "\"): algorithm (a name), count, period_ns and burst (integers) are required");
    }
    PolicySpec want;
    want.name = pname;
    try {
      want.algorithm = parse_algorithm(p["algorithm"].get<std::string>());
    } catch (const Error& e) {
      bad(where + " (\"" + pname + "\"): " + e.what());
    }
    want.rate.count = p["count"].get<u64>();
    want.rate.period = Nanos(static_cast<i64>(std::min<u64>(p["period_ns"].get<u64>(), INT64_MAX)));
    want.burst = p["burst"].get<u64>();
    if (want.algorithm == Algorithm::kSlidingLog && p.contains("wait")) {
      if (p["wait"] != "exact" && p["wait"] != "drf")
        bad(where + " (\"" + pname + "\"): \"wait\" must be \"exact\" or \"drf\"");
      want.wait = p["wait"] == "drf" ? LogWait::kDrf : LogWait::kExact;
    }
    const PolicySpec& have = found->spec;
    if (want.algorithm == Algorithm::kSlidingLog && want.wait != have.wait) {
      throw Error(ErrorCode::kPolicyConflict, "import: policy \"" + pname + "\" has wait " +
                                                  wait_name(want.wait) + " in the document but " +
                                                  wait_name(have.wait) + " in " + name());
    }
    if (want.algorithm != have.algorithm || want.rate != have.rate || want.burst != have.burst) {
      throw Error(ErrorCode::kPolicyConflict,
                  "import: policy \"" + pname + "\" is " + std::string(to_string(want.algorithm)) +
                      " " + format_rate(want.rate) + " burst " + std::to_string(want.burst) +
                      " in the document but " + std::string(to_string(have.algorithm)) + " " +
                      format_rate(have.rate) + " burst " + std::to_string(have.burst) + " in " +
                      name() + " (its states would mean something else)");
    }
    targets[pname] = Target{found->id.index, have};
  }

  // Decode every bucket before writing any.
  struct Planned {
    std::uint32_t policy;
    std::string key;
    u64 state;
    u64 admitted;
    u64 denied;
    std::vector<i64> log;  // sliding log: the admissions (target clock)
  };
  std::vector<Planned> plan;
  ImportReport report;
  const Clock clock = clock_of(*this);
  for (std::size_t i = 0; i < doc["buckets"].size(); ++i) {
    const Json& b = doc["buckets"][i];
    std::string where = "buckets[" + std::to_string(i) + "]";
    if (!b.is_object()) bad(where + " must be an object");
    if (!b.contains("policy") || !b["policy"].is_string()) bad(where + ": \"policy\" is missing");
    const std::string pname = b["policy"].get<std::string>();
    const auto t = targets.find(pname);
    if (unregistered.count(pname) != 0) {
      bad(where + ": policy \"" + pname + "\" (" + unregistered[pname] + ") is not registered in " +
          name() + " (register it with the same parameters first)");
    }
    if (t == targets.end())
      bad(where + ": policy \"" + pname + "\" is not listed under \"policies\"");
    std::string key;
    if (b.contains("key") && b["key"].is_string()) {
      key = b["key"].get<std::string>();
    } else if (b.contains("key_base64") && b["key_base64"].is_string()) {
      const auto k = unbase64(b["key_base64"].get<std::string>());
      if (!k) bad(where + ": key_base64 is not valid base64");
      key = *k;
    } else {
      bad(where + ": \"key\" (a string) or \"key_base64\" is required");
    }
    if (key.size() > max_key_bytes()) {
      bad(where + ": key of " + std::to_string(key.size()) +
          " bytes is longer than this segment's " + std::to_string(max_key_bytes()));
    }
    where += " (policy \"" + pname + "\")";
    const AlgoParams params = algo_of(t->second.spec);
    const Codec* codec = codec_of(params.algorithm);
    const bool is_log = params.algorithm == Algorithm::kSlidingLog;
    if (codec == nullptr && !is_log) {
      bad(where + ": algorithm " + std::string(to_string(params.algorithm)) +
          " cannot be imported");
    }
    if (!b.contains("state")) bad(where + ": \"state\" is missing");
    u64 state = 0;
    std::vector<i64> log;
    if (is_log) {
      log = decode_log(params, b["state"], where, clock, &state);
    } else {
      state = codec->decode(params, Fields(b["state"], where), clock);
    }
    const auto counter = [&](const char* field) -> u64 {
      if (!b.contains(field)) return 0;
      if (!b[field].is_number_unsigned())
        bad(where + ": \"" + field + "\" must be a non-negative integer");
      return b[field].get<u64>();
    };
    const u64 admitted = counter("admitted");
    const u64 denied = counter("denied");
    if (state > detail::Word::kPayloadMask) bad(where + ": the state does not fit this segment");
    if (is_log ? log.empty() : detail::algo_is_full(params, state, clock.now)) {
      ++report.skipped_full;  // refilled meanwhile: the same as an absent key
      continue;
    }
    plan.push_back(
        Planned{t->second.index, std::move(key), state, admitted, denied, std::move(log)});
  }
  for (const Planned& p : plan) {
    switch (impl_->store_bucket(p.policy, p.key, p.state, p.admitted, p.denied,
                                mode == ImportMode::kReplace, p.log)) {
      case Impl::StoreResult::kStored:
        ++report.imported;
        break;
      case Impl::StoreResult::kKept:
        ++report.skipped_existing;
        break;
      case Impl::StoreResult::kNoRoom:
        ++report.no_room;
        break;
    }
  }
  return report;
}

}  // namespace shmlimit
