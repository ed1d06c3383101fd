// Export / import of live state (src/admin/state_export.cpp, state_import.cpp,
// doc/state-format.md): every algorithm round-trips through JSON onto a segment with another epoch
// and then decides as the original does at the same wall-clock instants; the document's shape; keys
// that are not UTF-8; and a table of malformed documents, each refused with a sentence naming the
// item and nothing written.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using Json = nlohmann::json;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

using unit::spec;

// "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" (std::regex trips -Wmaybe-uninitialized under ASan).
bool is_iso_ns(const std::string& s) {
  const std::string shape = "dddd-dd-ddTdd:dd:dd.dddddddddZ";
  if (s.size() != shape.size()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i]) return false;
  }
  return true;
}

struct RoundTrip {
  PolicySpec spec;
  Nanos step;    // between compared instants
  Nanos offset;  // of the first instant after the export: away from every boundary
  int steps;
};

std::string label(const ::testing::TestParamInfo<RoundTrip>& info) {
  return std::string(to_string(info.param.spec.algorithm));
}

class StateRoundTrip : public ::testing::TestWithParam<RoundTrip> {};

// Source S is created first and target T after it, as after a reboot: T's
// epoch is later, so its clock reads less than S's at the same instant.
TEST_P(StateRoundTrip, ImportedBucketsDecideLikeTheOriginalsAtTheSameWallClockInstants) {
  const RoundTrip c = GetParam();
  unit::ScopedSegmentName sname("export"), tname("import");
  Limiter s = Limiter::create(unit::small_options(sname.str()));
  const PolicyId ps = s.add_policy(c.spec);
  Limiter t = Limiter::create(unit::small_options(tname.str()));
  const PolicyId pt = t.add_policy(c.spec);

  const Nanos t0 = s.now();
  const std::uint64_t cap = c.spec.burst != 0 ? c.spec.burst : c.spec.rate.count;
  ASSERT_TRUE(s.acquire_at(ps, "partial", cap - 1, t0).allowed);
  ASSERT_TRUE(s.acquire_at(ps, "drained", cap, t0).allowed);
  ASSERT_FALSE(s.acquire_at(ps, "drained", 1, t0).allowed);  // quiet period: now blocked
  const std::string doc = s.export_state();
  ASSERT_TRUE(Limiter::remove(sname.str()));  // S stays mapped; its name is gone

  const ImportReport r = t.import_state(doc);
  EXPECT_EQ(r.imported, 2u) << doc;
  EXPECT_EQ(r.skipped_full + r.skipped_existing + r.no_room, 0u);

  // T's clock minus S's: the same instant on both.
  const Nanos delta = t.now() - s.now();
  ASSERT_LT(delta.count(), 0);
  const Nanos tolerance = milliseconds(1000);
  for (int i = 0; i < c.steps; ++i) {
    const Nanos at = t0 + c.offset + i * c.step;
    for (const char* key : {"partial", "drained"}) {
      const Decision ds = s.acquire_at(ps, key, 1, at);
      const Decision dt = t.acquire_at(pt, key, 1, at + delta);
      SCOPED_TRACE(std::string(key) + " at step " + std::to_string(i) + ": source " + describe(ds) +
                   ", target " + describe(dt));
      EXPECT_EQ(ds.allowed, dt.allowed);
      EXPECT_EQ(ds.remaining, dt.remaining);
      EXPECT_EQ(ds.limit, dt.limit);
      EXPECT_LE(std::chrono::abs(ds.retry_after - dt.retry_after), tolerance);
      EXPECT_LE(std::chrono::abs(ds.reset_after - dt.reset_after), tolerance);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryAlgorithm, StateRoundTrip,
    ::testing::Values(
        RoundTrip{spec(Algorithm::kGcra, 1, seconds(1), 5), milliseconds(300), milliseconds(150),
                  24},
        RoundTrip{spec(Algorithm::kLeakyBucket, 1, seconds(1), 5), milliseconds(300),
                  milliseconds(150), 24},
        RoundTrip{spec(Algorithm::kTokenBucket, 5, hours(1), 5), minutes(10), minutes(7), 15},
        RoundTrip{spec(Algorithm::kFixedWindow, 5, hours(1)), minutes(10), minutes(7), 15},
        RoundTrip{spec(Algorithm::kSlidingWindow, 5, hours(1)), minutes(10), minutes(7), 15},
        RoundTrip{spec(Algorithm::kQuietPeriod, 3, hours(1)), minutes(10), minutes(7), 15}),
    label);

class StateIo : public ::testing::Test {
 protected:
  StateIo() : limiter_(Limiter::create(unit::small_options(name_.str()))) {
    api_ = limiter_.add_policy(spec(Algorithm::kGcra, 1, seconds(1), 5));
  }
  unit::ScopedSegmentName name_{"stateio"};
  Limiter limiter_;
  PolicyId api_;
};

TEST_F(StateIo, DocumentHasFormatVersionSpecsAndWallClockTimes) {
  limiter_.acquire(api_, "alice", 4);
  limiter_.acquire(api_, "bob", 1);
  const Json doc = Json::parse(limiter_.export_state());
  EXPECT_EQ(doc["format"], "shmlimit-state");
  EXPECT_EQ(doc["version"], 1);
  ASSERT_EQ(doc["policies"].size(), 1u);
  EXPECT_EQ(doc["policies"][0]["name"], "p");
  EXPECT_EQ(doc["policies"][0]["algorithm"], "gcra");
  EXPECT_EQ(doc["policies"][0]["count"], 1);
  EXPECT_EQ(doc["policies"][0]["period_ns"], 1'000'000'000);
  EXPECT_EQ(doc["policies"][0]["burst"], 5);
  ASSERT_EQ(doc["buckets"].size(), 2u);
  EXPECT_EQ(doc["buckets"][0]["key"], "alice");
  EXPECT_EQ(doc["buckets"][0]["admitted"], 1);
  EXPECT_TRUE(is_iso_ns(doc["buckets"][0]["state"]["tat"].get<std::string>())) << doc.dump();
  EXPECT_TRUE(is_iso_ns(doc["exported_at"].get<std::string>()));
  // TAT 4 s after the export instant: the strings compare as times.
  EXPECT_GT(doc["buckets"][0]["state"]["tat"].get<std::string>(),
            doc["exported_at"].get<std::string>());

  // Filters: one key; another policy.
  EXPECT_EQ(Json::parse(limiter_.export_state(api_, std::string_view("bob")))["buckets"].size(),
            1u);
  const PolicyId other = limiter_.add_policy([] {
    PolicySpec s = spec(Algorithm::kFixedWindow, 3, hours(1));
    s.name = "other";
    return s;
  }());
  const Json only_other = Json::parse(limiter_.export_state(other));
  EXPECT_EQ(only_other["buckets"].size(), 0u);
  EXPECT_EQ(only_other["policies"].size(), 1u);
}

TEST_F(StateIo, FullBucketsAreLeftOutAndKeysThatAreNotUtf8TravelAsBase64) {
  PolicySpec fast = spec(Algorithm::kGcra, 1'000'000, seconds(1), 1);  // refills in 1 µs
  fast.name = "fast";
  const PolicyId f = limiter_.add_policy(fast);
  limiter_.acquire_at(f, "refilled", 1, Nanos(0));  // full again since 1 µs after the epoch
  const std::string raw("\xff\xfe\x00k", 4);
  limiter_.acquire(api_, raw, 3);
  const Json doc = Json::parse(limiter_.export_state());
  ASSERT_EQ(doc["buckets"].size(), 1u);
  EXPECT_EQ(doc["buckets"][0]["key_base64"], "//4Aaw==");
  EXPECT_FALSE(doc["buckets"][0].contains("key"));

  unit::ScopedSegmentName tname("import");
  Limiter t = Limiter::create(unit::small_options(tname.str()));
  const PolicyId pt = t.add_policy(spec(Algorithm::kGcra, 1, seconds(1), 5));
  t.add_policy(fast);
  EXPECT_EQ(t.import_state(doc.dump()).imported, 1u);
  ASSERT_EQ(t.dump().size(), 1u);
  EXPECT_EQ(t.dump()[0].key, raw);
  EXPECT_EQ(t.peek(pt, raw).remaining, limiter_.peek(api_, raw).remaining);
}

TEST_F(StateIo, KeepExistingLeavesBucketsThatAreThereAndReplaceOverwritesThem) {
  limiter_.acquire(api_, "k", 4);
  const std::string doc = limiter_.export_state();
  limiter_.reset(api_, std::string_view("k"));
  limiter_.acquire(api_, "k", 1);
  const ImportReport kept = limiter_.import_state(doc, ImportMode::kKeepExisting);
  EXPECT_EQ(kept.skipped_existing, 1u);
  EXPECT_EQ(limiter_.peek(api_, "k", 0).remaining, 4u);
  const ImportReport replaced = limiter_.import_state(doc, ImportMode::kReplace);
  EXPECT_EQ(replaced.imported, 1u);
  EXPECT_LE(limiter_.peek(api_, "k", 0).remaining, 1u);
}

TEST_F(StateIo, TimesInThePastAreSkippedAsRefilled) {
  Json doc = Json::parse(limiter_.export_state());
  doc["buckets"] = Json::array(
      {{{"policy", "p"}, {"key", "old"}, {"state", {{"tat", "2001-01-01T00:00:00Z"}}}}});
  const ImportReport r = limiter_.import_state(doc.dump());
  EXPECT_EQ(r.skipped_full, 1u);
  EXPECT_EQ(r.imported, 0u);
  EXPECT_TRUE(limiter_.dump().empty());
}

struct BadDocument {
  const char* name;
  std::string text;  // empty: a document of two good buckets, edited by `edit`
  void (*edit)(Json&);
  const char* error;
  ErrorCode code = ErrorCode::kInvalidArgument;
};

class StateIoMalformed : public StateIo, public ::testing::WithParamInterface<BadDocument> {};

TEST_P(StateIoMalformed, IsRefusedNamingTheItemAndWritesNothing) {
  const BadDocument& c = GetParam();
  std::string text = c.text;
  if (text.empty()) {
    // Two buckets that would import (TATs a few seconds ahead), then the
    // edit: nothing may be written, all or nothing.
    limiter_.acquire(api_, "first", 4);
    Json doc = Json::parse(limiter_.export_state());
    limiter_.reset();
    doc["buckets"].push_back(doc["buckets"][0]);
    doc["buckets"][1]["key"] = "second";
    c.edit(doc);
    text = doc.dump();
  }
  const auto e = unit::catch_error([&] { limiter_.import_state(text); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), c.code);
  EXPECT_NE(std::string(e->what()).find(c.error), std::string::npos) << e->what();
  EXPECT_TRUE(limiter_.dump().empty());
}

void no_edit(Json&) {}

INSTANTIATE_TEST_SUITE_P(
    Table, StateIoMalformed,
    ::testing::Values(
        BadDocument{"NotJson", "{\"format\": ", no_edit, "not valid JSON"},
        // nlohmann throws out_of_range, not parse_error, for a number no
        // double holds (found by fuzz_state_import).
        BadDocument{"NumberTooLargeForADouble",
                    "{\"format\": \"shmlimit-state\", \"version\": 1e400}", no_edit,
                    "not valid JSON: [json.exception.out_of_range.406] number overflow"},
        BadDocument{"NotAnObject", "[1, 2]", no_edit, "must be a JSON object"},
        BadDocument{"OtherFormat", "", [](Json& d) { d["format"] = "csv"; },
                    "\"format\" must be \"shmlimit-state\""},
        BadDocument{"NewerVersion", "", [](Json& d) { d["version"] = 2; },
                    "format version 2 is not supported"},
        BadDocument{"NoPolicies", "", [](Json& d) { d.erase("policies"); },
                    "\"policies\" must be an array"},
        BadDocument{"UnknownPolicy", "",
                    [](Json& d) {
                      d["policies"][0]["name"] = "nope";
                      d["buckets"][0]["policy"] = "nope";
                      d["buckets"][1]["policy"] = "nope";
                    },
                    "buckets[0]: policy \"nope\" (policies[0]) is not registered in"},
        BadDocument{"ChangedSpec", "", [](Json& d) { d["policies"][0]["count"] = 2; },
                    "policy \"p\" is gcra 2/s burst 5 in the document but gcra 1/s burst 5",
                    ErrorCode::kPolicyConflict},
        BadDocument{"UnknownAlgorithm", "",
                    [](Json& d) { d["policies"][0]["algorithm"] = "magic"; },
                    "unknown algorithm \"magic\""},
        BadDocument{"BucketOfUnlistedPolicy", "", [](Json& d) { d["buckets"][1]["policy"] = "q"; },
                    "buckets[1]: policy \"q\" is not listed under \"policies\""},
        BadDocument{"NoKey", "", [](Json& d) { d["buckets"][1].erase("key"); },
                    "buckets[1]: \"key\" (a string) or \"key_base64\" is required"},
        BadDocument{"BadBase64", "",
                    [](Json& d) {
                      d["buckets"][1].erase("key");
                      d["buckets"][1]["key_base64"] = "a*==";
                    },
                    "buckets[1]: key_base64 is not valid base64"},
        BadDocument{"KeyTooLong", "",
                    [](Json& d) { d["buckets"][1]["key"] = std::string(300, 'k'); },
                    "key of 300 bytes is longer than this segment's 88"},
        BadDocument{"NoState", "", [](Json& d) { d["buckets"][1].erase("state"); },
                    "\"state\" is missing"},
        BadDocument{"MissingField", "", [](Json& d) { d["buckets"][1]["state"].erase("tat"); },
                    "state.tat is missing"},
        BadDocument{"NotATime", "", [](Json& d) { d["buckets"][1]["state"]["tat"] = "yesterday"; },
                    "state.tat \"yesterday\" is not an ISO 8601 UTC time"},
        BadDocument{"BadDate", "",
                    [](Json& d) { d["buckets"][1]["state"]["tat"] = "2026-02-30T00:00:00Z"; },
                    "is not an ISO 8601 UTC time"},
        BadDocument{"BeyondClockHorizon", "",
                    [](Json& d) { d["buckets"][1]["state"]["tat"] = "2200-01-01T00:00:00Z"; },
                    "beyond this segment's clock horizon"},
        BadDocument{"FurtherAheadThanThePolicyAllows", "",
                    [](Json& d) {
                      // A year later: within the clock horizon, far beyond burst * interval (5 s).
                      std::string t = d["buckets"][1]["state"]["tat"];
                      t.replace(0, 4, std::to_string(std::stoi(t.substr(0, 4)) + 1));
                      d["buckets"][1]["state"]["tat"] = t;
                    },
                    "further in the future than the policy allows"},
        BadDocument{"NegativeCounter", "", [](Json& d) { d["buckets"][1]["admitted"] = -1; },
                    "\"admitted\" must be a non-negative integer"}),
    [](const ::testing::TestParamInfo<BadDocument>& info) { return std::string(info.param.name); });

TEST(StateIoFixedWindow, UsedAbovetheCountIsRefused) {
  unit::ScopedSegmentName name("fw");
  Limiter l = Limiter::create(unit::small_options(name.str()));
  const PolicyId fw = l.add_policy(spec(Algorithm::kFixedWindow, 3, hours(1)));
  l.acquire(fw, "k", 2);
  Json doc = Json::parse(l.export_state());
  ASSERT_EQ(doc["buckets"].size(), 1u);
  EXPECT_EQ(doc["buckets"][0]["state"]["used"], 2);
  doc["buckets"][0]["state"]["used"] = 4;
  const auto e = unit::catch_error([&] { l.import_state(doc.dump()); });
  ASSERT_TRUE(e);
  EXPECT_NE(std::string(e->what()).find("state.used 4 is above the policy's 3"), std::string::npos)
      << e->what();
}

// The sliding log's state is its admissions (outside the state word): they
// travel as wall-clock times and are re-encoded for the target's epoch and
// for the target slot's version (here advanced by a reset of the same key).
TEST(StateIoSlidingLog, AdmissionsRoundTripAndDecideAlikeAtTheSameWallClockInstants) {
  unit::ScopedSegmentName sname("log-export"), tname("log-import");
  Options so = unit::small_options(sname.str());
  so.log_entries = 8;
  PolicySpec log = spec(Algorithm::kSlidingLog, 4, hours(1));
  log.wait = LogWait::kDrf;
  // The target is created first: admissions before a segment's epoch
  // cannot be represented there (they would count from its time 0).
  Options to = unit::small_options(tname.str());
  to.log_entries = 8;
  Limiter t = Limiter::create(to);
  const PolicyId pt = t.add_policy(log);
  ASSERT_TRUE(t.acquire(pt, "k").allowed);
  ASSERT_EQ(t.reset(pt, "k"), 1u);  // the next bucket of "k" has another version
  Limiter s = Limiter::create(so);
  const PolicyId ps = s.add_policy(log);
  std::this_thread::sleep_for(milliseconds(40));
  const Nanos t0 = s.now();
  const Nanos tick = milliseconds(10);
  for (int k = 3; k >= 1; --k) ASSERT_TRUE(s.acquire_at(ps, "k", 1, t0 - k * tick).allowed);
  ASSERT_TRUE(s.acquire_at(ps, "full", 2, t0 - 3 * tick).allowed);
  ASSERT_TRUE(s.acquire_at(ps, "full", 2, t0).allowed);
  ASSERT_FALSE(s.acquire_at(ps, "full", 1, t0).allowed);

  const std::string text = s.export_state();
  const Json doc = Json::parse(text);
  EXPECT_FALSE(doc.contains("not_exported")) << text;
  ASSERT_EQ(doc["policies"].size(), 1u);
  EXPECT_EQ(doc["policies"][0]["wait"], "drf");
  ASSERT_EQ(doc["buckets"].size(), 2u) << text;
  EXPECT_EQ(doc["buckets"][0]["key"], "full");
  EXPECT_EQ(doc["buckets"][0]["state"]["admissions"].size(), 4u);
  const Json& k = doc["buckets"][1]["state"]["admissions"];
  ASSERT_EQ(k.size(), 3u) << text;
  for (const Json& at : k) EXPECT_TRUE(is_iso_ns(at.get<std::string>())) << at;
  EXPECT_LT(k[0].get<std::string>(), k[2].get<std::string>());  // oldest first

  const ImportReport r = t.import_state(text);
  EXPECT_EQ(r.imported, 2u);
  const Nanos delta = t.now() - s.now();
  // Before any admission expires, then 5 ms to either side of each expiry.
  std::vector<Nanos> instants{t0 + minutes(1)};
  for (int i = 0; i < 6; ++i) instants.push_back(t0 + hours(1) - 35 * milliseconds(1) + i * tick);
  for (const Nanos at : instants) {
    for (const char* key : {"k", "full"}) {
      const Decision ds = s.acquire_at(ps, key, 1, at);
      const Decision dt = t.acquire_at(pt, key, 1, at + delta);
      SCOPED_TRACE(std::string(key) + " at " + std::to_string((at - t0).count()) +
                   " ns after t0: source " + describe(ds) + ", target " + describe(dt));
      EXPECT_EQ(ds.allowed, dt.allowed);
      EXPECT_EQ(ds.remaining, dt.remaining);
      EXPECT_LE(std::chrono::abs(ds.retry_after - dt.retry_after), milliseconds(2));
      EXPECT_LE(std::chrono::abs(ds.reset_after - dt.reset_after), milliseconds(2));
    }
  }
}

TEST(StateIoSlidingLog, MoreAdmissionsThanTheCountOrAnotherWaitIsRefused) {
  unit::ScopedSegmentName name("log-bad");
  Options o = unit::small_options(name.str());
  o.log_entries = 4;
  Limiter l = Limiter::create(o);
  const PolicyId p = l.add_policy(spec(Algorithm::kSlidingLog, 2, hours(1)));
  ASSERT_TRUE(l.acquire(p, "k").allowed);
  Json doc = Json::parse(l.export_state());
  ASSERT_EQ(doc["buckets"].size(), 1u);
  Json more = doc;
  auto& a = more["buckets"][0]["state"]["admissions"];
  a.push_back(a[0]);
  a.push_back(a[0]);
  auto e = unit::catch_error([&] { l.import_state(more.dump()); });
  ASSERT_TRUE(e);
  EXPECT_NE(std::string(e->what()).find("holds 3 times, above the policy's 2"), std::string::npos)
      << e->what();
  Json drf = doc;
  drf["policies"][0]["wait"] = "drf";
  e = unit::catch_error([&] { l.import_state(drf.dump()); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kPolicyConflict) << e->what();
}

}  // namespace
}  // namespace shmlimit
