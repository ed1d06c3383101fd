// Limiter::acquire_many against Limiter::acquire (label unit).
//
// AcquireManyOfOne: a request is one request whichever call makes it. The
// same request on two identical segments, by acquire_at on one and by
// acquire_many_at of that one request on the other, at the same injected
// instants, must give the same Decision (every field, combined and each),
// leave the same bucket (state word, per-key counts, and the decisions
// that follow), the same exact per-policy totals and the same
// recent-denials ring.
//
// AcquireManyRules: the all-or-nothing rule with a limit named twice in one
// call, and cost 0 across several limits.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using namespace std::chrono_literals;
using unit::ScopedSegmentName;

constexpr std::uint64_t kBurst = 4;
// Slow refills (per hour) so that the 200 ms between a state's set-up and
// the request under test refill nothing, and whole-hour windows.
constexpr Nanos kT0 = Nanos(10h) + Nanos(1s);
// Apart by more than the denial fold's 100 ms (denials.hpp): every denial
// of a case is its own record in the ring, on both segments alike.
constexpr Nanos kT1 = kT0 + Nanos(200ms);

struct Algo {
  Algorithm algorithm;
  std::uint64_t count;  // per hour; capacity kBurst
};

// Every algorithm whose decisions are acquires (leases are lease_test.cpp's).
constexpr std::array<Algo, 7> kAlgos = {{
    {Algorithm::kGcra, 2},
    {Algorithm::kTokenBucket, 2},
    {Algorithm::kFixedWindow, kBurst},
    {Algorithm::kSlidingWindow, kBurst},
    {Algorithm::kQuietPeriod, kBurst},
    {Algorithm::kLeakyBucket, 2},
    {Algorithm::kSlidingLog, kBurst},
}};

enum class State { kFresh, kPartly, kExhausted, kQuiet };
const char* name(State s) {
  switch (s) {
    case State::kFresh:
      return "fresh";
    case State::kPartly:
      return "partly used";
    case State::kExhausted:
      return "exhausted";
    case State::kQuiet:
      return "in its quiet time";
  }
  return "?";
}

constexpr std::array<std::uint64_t, 7> kCosts = {
    0, 1, kBurst - 1, kBurst, kBurst + 1, std::uint64_t{1} << 40, ~std::uint64_t{0}};

PolicySpec spec_of(const Algo& a) {
  PolicySpec s;
  s.name = std::string(to_string(a.algorithm));
  s.algorithm = a.algorithm;
  s.rate = Rate{a.count, Nanos(1h)};
  s.burst = algorithm_has_burst(a.algorithm) ? kBurst : 0;
  s.on_full = OnFull::kDeny;
  return s;
}

Options options(const std::string& name) {
  Options o = unit::small_options(name, 4096);
  o.log_entries = 8;
  return o;
}

struct Side {
  ScopedSegmentName seg;
  Limiter limiter;
  std::vector<PolicyId> ids;
  explicit Side(const char* tag) : seg(tag), limiter(Limiter::create(options(seg.str()))) {
    for (const Algo& a : kAlgos) ids.push_back(limiter.add_policy(spec_of(a)));
  }
  // The set-up of `s`, by plain acquires (the same on both sides).
  void prepare(PolicyId p, const std::string& key, State s) {
    switch (s) {
      case State::kFresh:
        break;
      case State::kPartly:
        ASSERT_TRUE(limiter.acquire_at(p, key, 1, kT0).allowed);
        break;
      case State::kExhausted:
        ASSERT_TRUE(limiter.acquire_at(p, key, kBurst, kT0).allowed);
        break;
      case State::kQuiet:  // over the limit once: blocked, the period restarted
        ASSERT_TRUE(limiter.acquire_at(p, key, kBurst, kT0).allowed);
        ASSERT_FALSE(limiter.acquire_at(p, key, 1, kT0 + 100ms).allowed);
        break;
    }
  }
  std::vector<PolicyCounters> totals;  // before the case
  std::optional<BucketView> bucket(const std::string& key) const {
    for (const BucketView& b : limiter.dump())
      if (b.key == key) return b;
    return std::nullopt;
  }
};

std::string describe(const DenialView& d) {
  return "{at=" + std::to_string(d.at.count()) + " policy=" + d.policy + " key=" + d.key +
         " cost=" + std::to_string(d.cost) +
         " retry_after=" + std::to_string(d.retry_after.count()) +
         " reason=" + std::string(to_string(d.reason)) + " repeats=" + std::to_string(d.repeats) +
         "}";
}

// Everything a caller can observe after the request: the bucket, the
// totals, the ring, and the decisions that follow.
void expect_same_afterwards(Side& one, Side& many, PolicyId p, const std::string& key,
                            std::uint64_t* cursor_one, std::uint64_t* cursor_many) {
  const std::optional<BucketView> b1 = one.bucket(key);
  const std::optional<BucketView> bm = many.bucket(key);
  ASSERT_EQ(b1.has_value(), bm.has_value()) << "a bucket stored by one call only";
  if (b1) {
    EXPECT_EQ(b1->state, bm->state) << "stored state";
    EXPECT_EQ(b1->admitted, bm->admitted) << "per-key admitted count";
    EXPECT_EQ(b1->denied, bm->denied) << "per-key denied count";
  }
  // The totals this case added (so that one difference does not repeat in
  // every later case).
  const std::vector<PolicyCounters> c1 = one.limiter.counters();
  const std::vector<PolicyCounters> cm = many.limiter.counters();
  ASSERT_EQ(c1.size(), cm.size());
  for (std::size_t i = 0; i < c1.size(); ++i) {
    EXPECT_EQ(c1[i].admitted - one.totals[i].admitted, cm[i].admitted - many.totals[i].admitted)
        << "admitted total of " << c1[i].policy;
    EXPECT_EQ(c1[i].denied - one.totals[i].denied, cm[i].denied - many.totals[i].denied)
        << "denied total of " << c1[i].policy;
  }
  // What the bucket holds beyond its word (the sliding log's entries)
  // shows in the decisions that follow: the same on both.
  for (const auto& [cost, at] : {std::pair{std::uint64_t{0}, kT1}, std::pair{std::uint64_t{1}, kT1},
                                 std::pair{kBurst, kT1 + Nanos(1s)}}) {
    EXPECT_TRUE(same_decision(many.limiter.acquire_at(p, key, cost, at),
                              one.limiter.acquire_at(p, key, cost, at)))
        << "a later acquire of cost " << cost;
  }
  // The ring: the request's denials, and the later acquires'.
  const RecentDenials r1 = one.limiter.recent_denials(*cursor_one);
  const RecentDenials rm = many.limiter.recent_denials(*cursor_many);
  *cursor_one = r1.next_cursor;
  *cursor_many = rm.next_cursor;
  EXPECT_EQ(r1.lost, 0u);
  EXPECT_EQ(rm.lost, 0u);
  ASSERT_EQ(r1.denials.size(), rm.denials.size()) << "recent denials recorded";
  for (std::size_t i = 0; i < r1.denials.size(); ++i)
    EXPECT_EQ(describe(r1.denials[i]), describe(rm.denials[i])) << "recent denial " << i;
}

TEST(AcquireManyOfOne, DecidesExactlyAsAcquire) {
  Side one("one");
  Side many("many");
  std::uint64_t cursor_one = 0, cursor_many = 0;
  int cases = 0;
  for (std::size_t a = 0; a < kAlgos.size(); ++a) {
    const PolicyId p1 = one.ids[a];
    const PolicyId pm = many.ids[a];
    ASSERT_EQ(p1.index, pm.index);
    for (State s : {State::kFresh, State::kPartly, State::kExhausted, State::kQuiet}) {
      if (s == State::kQuiet && kAlgos[a].algorithm != Algorithm::kQuietPeriod) continue;
      for (std::size_t c = 0; c < kCosts.size(); ++c) {
        // A short key (acquire's fast path) and one longer than 16 bytes
        // (its general path, and never folded in the ring).
        for (const bool long_key : {false, true}) {
          const std::uint64_t cost = kCosts[c];
          std::string key = "k" + std::to_string(a) + "-" + std::to_string(static_cast<int>(s)) +
                            "-" + std::to_string(c);
          if (long_key) key += "-a-longer-key-than-16";
          SCOPED_TRACE(std::string(to_string(kAlgos[a].algorithm)) + ", " + name(s) + ", cost " +
                       std::to_string(cost) + ", key " + key);
          one.totals = one.limiter.counters();
          many.totals = many.limiter.counters();
          // One side at a time, as two processes would: set-up, request.
          one.prepare(p1, key, s);
          const Decision want = one.limiter.acquire_at(p1, key, cost, kT1);
          many.prepare(pm, key, s);
          const Request req{pm, key, cost};
          std::array<Decision, 1> each;
          each[0].reason = Reason::kCorrupt;  // must be overwritten
          const Decision got = many.limiter.acquire_many_at({&req, 1}, kT1, each);
          EXPECT_TRUE(same_decision(got, want)) << "combined";
          EXPECT_TRUE(same_decision(each[0], want)) << "each[0]";
          expect_same_afterwards(one, many, p1, key, &cursor_one, &cursor_many);
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, (7 * 3 + 1) * 7 * 2);
  // A negative instant counts as 0, in the decision and in the ring.
  for (std::size_t a = 0; a < kAlgos.size(); ++a) {
    SCOPED_TRACE(std::string(to_string(kAlgos[a].algorithm)) + ", before the epoch");
    const Decision want = one.limiter.acquire_at(one.ids[a], "neg", kBurst + 1, Nanos(-5));
    const Request req{many.ids[a], "neg", kBurst + 1};
    EXPECT_TRUE(same_decision(many.limiter.acquire_many_at({&req, 1}, Nanos(-5)), want));
    const RecentDenials r1 = one.limiter.recent_denials(cursor_one);
    const RecentDenials rm = many.limiter.recent_denials(cursor_many);
    cursor_one = r1.next_cursor;
    cursor_many = rm.next_cursor;
    ASSERT_EQ(r1.denials.size(), 1u);
    ASSERT_EQ(rm.denials.size(), 1u);
    EXPECT_EQ(r1.denials[0].at, Nanos(0));
    EXPECT_EQ(describe(r1.denials[0]), describe(rm.denials[0]));
  }
  // And so the totals since the segments were created.
  const std::vector<PolicyCounters> c1 = one.limiter.counters();
  const std::vector<PolicyCounters> cm = many.limiter.counters();
  ASSERT_EQ(c1.size(), cm.size());
  for (std::size_t i = 0; i < c1.size(); ++i) {
    EXPECT_EQ(c1[i].admitted, cm[i].admitted) << c1[i].policy;
    EXPECT_EQ(c1[i].denied, cm[i].denied) << c1[i].policy;
  }
}

// ---------------------------------------------------------------------------

class AcquireManyRules : public ::testing::Test {
 protected:
  ScopedSegmentName seg_{"rules"};
  Limiter limiter_ = Limiter::create(options(seg_.str()));
  std::vector<PolicyId> ids_ = [this] {
    std::vector<PolicyId> out;
    for (const Algo& a : kAlgos) out.push_back(limiter_.add_policy(spec_of(a)));
    return out;
  }();

  std::uint64_t remaining(PolicyId p, const std::string& key, Nanos at) {
    return limiter_.acquire_at(p, key, 0, at).remaining;
  }
};

// A limit named twice in one call is charged twice: admitted only when both
// charges fit together, and then both are taken; otherwise nothing is taken,
// and the bucket is as before (the quiet period neither blocked nor
// restarted). The same for every algorithm.
TEST_F(AcquireManyRules, ALimitNamedTwiceIsChargedTwiceOrNotAtAll) {
  for (std::size_t a = 0; a < kAlgos.size(); ++a) {
    const PolicyId p = ids_[a];
    SCOPED_TRACE(std::string(to_string(kAlgos[a].algorithm)));
    const std::string key = "dup" + std::to_string(a);
    // 2 + 2 fit a fresh bucket of 4: both charged.
    const std::array<Request, 2> fits = {Request{p, key, 2}, Request{p, key, 2}};
    std::array<Decision, 2> each;
    EXPECT_TRUE(limiter_.acquire_many_at(fits, kT0, each).allowed);
    EXPECT_EQ(remaining(p, key, kT0), 0u);

    const std::string key2 = "dup2-" + std::to_string(a);
    // 3 + 3 do not: neither charged, nothing stored.
    const std::array<Request, 2> over = {Request{p, key2, 3}, Request{p, key2, 3}};
    const std::vector<PolicyCounters> before = limiter_.counters();
    const Decision d = limiter_.acquire_many_at(over, kT0, each);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(remaining(p, key2, kT0), kBurst) << "a refused request charged the bucket";
    const std::vector<PolicyCounters> after = limiter_.counters();
    // Counted as one denial of the limit that refused (its second mention).
    EXPECT_EQ(after[a].denied, before[a].denied + 1);
    EXPECT_EQ(after[a].admitted, before[a].admitted + 1);  // the cost-0 look above
    // Refused as one request of 6 is (the capacity is 4): never fits.
    EXPECT_TRUE(same_decision(d, limiter_.acquire_at(p, "dup6-" + std::to_string(a), 6, kT0)));
    EXPECT_TRUE(same_decision(each[1], d));
    EXPECT_TRUE(each[0].allowed);
    EXPECT_EQ(each[0].remaining, kBurst) << "reported as charged";
    // And a cost that fits once is still admitted at once afterwards.
    EXPECT_TRUE(limiter_.acquire_at(p, key2, kBurst, kT0).allowed);

    // 1 + 2 on a bucket with 2 left: refused as a cost of 3 is, with its
    // retry-after (the quiet period aside: a refused acquire restarts it,
    // a refused multi-limit request writes nothing).
    const std::string key3 = "dup3-" + std::to_string(a), twin = "dup3t-" + std::to_string(a);
    ASSERT_TRUE(limiter_.acquire_at(p, key3, 2, kT0).allowed);
    ASSERT_TRUE(limiter_.acquire_at(p, twin, 2, kT0).allowed);
    const std::array<Request, 2> wait = {Request{p, key3, 1}, Request{p, key3, 2}};
    const Decision w = limiter_.acquire_many_at(wait, kT1, each);
    EXPECT_FALSE(w.allowed);
    EXPECT_EQ(remaining(p, key3, kT1), 2u);
    if (kAlgos[a].algorithm != Algorithm::kQuietPeriod) {
      EXPECT_TRUE(same_decision(w, limiter_.acquire_at(p, twin, 3, kT1)));
    }

    // Costs whose sum passes 2^64 saturate: never fits, nothing taken.
    const std::array<Request, 3> huge = {Request{p, key3, ~std::uint64_t{0}}, Request{p, key3, 2},
                                         Request{p, key3, ~std::uint64_t{0}}};
    std::array<Decision, 3> each3;
    const Decision h = limiter_.acquire_many_at(huge, kT1, each3);
    EXPECT_FALSE(h.allowed);
    EXPECT_EQ(h.reason, Reason::kCostTooHigh);
    EXPECT_EQ(h.retry_after, Nanos::max());
    EXPECT_EQ(remaining(p, key3, kT1), 2u);
  }
}

// More limits than acquire_many keeps on its stack (8), one named many
// times: the same rule.
TEST_F(AcquireManyRules, ALimitNamedTenTimes) {
  const PolicyId p = ids_[0];  // GCRA, capacity 4
  std::vector<Request> ten(10, Request{p, "ten", 0});
  ten[2].cost = 1;
  ten[7].cost = 3;
  std::vector<Decision> each(ten.size());
  EXPECT_TRUE(limiter_.acquire_many_at(ten, kT0, each).allowed);
  EXPECT_EQ(each[9].remaining, 0u);
  EXPECT_EQ(remaining(p, "ten", kT0), 0u);
  ten[9].cost = 1;
  const Decision d = limiter_.acquire_many_at(ten, kT1, each);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(remaining(p, "ten", kT1), 0u);
  // A cost of 5 never fits a capacity of 4.
  std::vector<Request> again(10, Request{p, "ten-b", 0});
  again[0].cost = 4;
  again[9].cost = 1;
  const Decision never = limiter_.acquire_many_at(again, kT0, each);
  EXPECT_EQ(never.reason, Reason::kCostTooHigh);
  EXPECT_EQ(remaining(p, "ten-b", kT0), kBurst);
}

// Cost 0 on several limits charges nothing and stores nothing; it is
// admitted when every limit would admit cost 0 (a blocked quiet period
// refuses even cost 0), and then counted as one admitted decision of each.
TEST_F(AcquireManyRules, CostZeroOnSeveralLimitsLooksAndChargesNothing) {
  std::vector<Request> all;
  for (const PolicyId& p : ids_) all.push_back(Request{p, "zero", 0});
  std::vector<Decision> each(all.size());
  const std::vector<PolicyCounters> before = limiter_.counters();
  const Decision d = limiter_.acquire_many_at(all, kT0, each);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, kBurst);
  EXPECT_EQ(d.reason, Reason::kOk);
  for (const Decision& e : each) EXPECT_TRUE(same_decision(e, d));
  const std::vector<PolicyCounters> after = limiter_.counters();
  for (std::size_t i = 0; i < ids_.size(); ++i) {
    EXPECT_EQ(after[i].admitted, before[i].admitted + 1);
    EXPECT_EQ(after[i].denied, before[i].denied);
  }
  for (const BucketView& b : limiter_.dump()) ADD_FAILURE() << "stored a bucket for " << b.key;

  // The quiet period blocked: cost 0 there is refused, and nothing else is
  // charged or stored by the refused request.
  const PolicyId qp = ids_[4];
  ASSERT_EQ(kAlgos[4].algorithm, Algorithm::kQuietPeriod);
  ASSERT_TRUE(limiter_.acquire_at(qp, "zero", kBurst, kT0).allowed);
  ASSERT_FALSE(limiter_.acquire_at(qp, "zero", 1, kT0).allowed);
  const std::uint64_t blocked_state = [&] {
    for (const BucketView& b : limiter_.dump())
      if (b.key == "zero") return b.state;
    return std::uint64_t{0};
  }();
  const Decision refused = limiter_.acquire_many_at(all, kT0 + 1ms, each);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.reason, Reason::kOk);
  EXPECT_EQ(refused.retry_after, Nanos(1h) - Nanos(1ms));  // restarted at kT0, not since
  for (std::size_t i = 0; i < ids_.size(); ++i) EXPECT_EQ(each[i].allowed, i != 4) << i;
  const std::vector<BucketView> buckets = limiter_.dump();
  ASSERT_EQ(buckets.size(), 1u);
  EXPECT_EQ(buckets[0].state, blocked_state);
}

}  // namespace
}  // namespace shmlimit
