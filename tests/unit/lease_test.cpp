// Concurrency leases (Algorithm::kConcurrency): the pure transitions and
// the recovery decision as tables (lease.hpp), and the RAII Lease through a
// real segment. Dead holders: tests/multiprocess/lease_test.cpp.
#include "limiter/lease.hpp"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit::unit {
namespace {

using detail::LeaseCtl;
using detail::LeaseOp;
using detail::LeasePending;
using detail::LeaseRecovery;

TEST(LeaseWord, PacksCountAndPendingDescriptor) {
  const LeasePending p{LeaseOp::kRelease, 255, 63, detail::kLeaseSeqMask};
  const std::uint64_t w = detail::lease_payload(detail::kLeaseCountMask, p);
  EXPECT_LT(w, std::uint64_t{1} << 56);  // fits the word's payload
  EXPECT_EQ(detail::lease_count(w), detail::kLeaseCountMask);
  EXPECT_EQ(detail::lease_pending(w), p);
  EXPECT_EQ(detail::lease_cleared(w), detail::kLeaseCountMask);
  EXPECT_EQ(detail::lease_pending(detail::lease_cleared(w)).op, LeaseOp::kNone);
  const std::uint64_t c = LeaseCtl::make(detail::kLeaseReleasing, 12345, 0x7FFFF, (1u << 28) - 1);
  EXPECT_EQ(LeaseCtl::state(c), detail::kLeaseReleasing);
  EXPECT_EQ(LeaseCtl::seq(c), 12345u);
  EXPECT_EQ(LeaseCtl::gen(c), 0x7FFFFu);
  EXPECT_EQ(LeaseCtl::slot(c), (1u << 28) - 1);
  EXPECT_EQ(LeaseCtl::state(LeaseCtl::with_state(c, detail::kLeaseHeld)), detail::kLeaseHeld);
  EXPECT_EQ(LeaseCtl::slot(LeaseCtl::with_state(c, detail::kLeaseHeld)), (1u << 28) - 1);
}

TEST(LeaseTransitions, AcquireTable) {
  const LeasePending me{LeaseOp::kAcquire, 3, 7, 99};
  struct Row {
    std::uint64_t count, limit, cost;
    bool ok;
    std::uint64_t new_count, remaining;
    Reason reason;
  };
  const std::vector<Row> rows = {
      {0, 3, 1, true, 1, 2, Reason::kOk},  {2, 3, 1, true, 3, 0, Reason::kOk},
      {3, 3, 1, false, 3, 0, Reason::kOk}, {1, 3, 2, true, 3, 0, Reason::kOk},
      {2, 3, 2, false, 2, 1, Reason::kOk}, {0, 3, 4, false, 0, 3, Reason::kCostTooHigh},
      {5, 3, 1, false, 5, 0, Reason::kOk},  // a count above the limit (the limit was lowered):
                                            // denied
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(testing::Message() << r.count << "/" << r.limit << " cost " << r.cost);
    const detail::LeaseStep s =
        detail::lease_acquire_step(detail::lease_payload(r.count, {}), r.limit, r.cost, me);
    EXPECT_EQ(s.ok, r.ok);
    EXPECT_EQ(s.decision.allowed, r.ok);
    EXPECT_EQ(s.decision.limit, r.limit);
    EXPECT_EQ(s.decision.remaining, r.remaining);
    EXPECT_EQ(s.decision.retry_after, r.reason == Reason::kCostTooHigh ? Nanos::max() : Nanos(0));
    EXPECT_EQ(s.decision.reset_after, Nanos(0));
    EXPECT_EQ(s.decision.reason, r.reason);
    if (r.ok) {
      EXPECT_EQ(detail::lease_count(s.new_payload), r.new_count);
      EXPECT_EQ(detail::lease_pending(s.new_payload), me);
    }
  }
}

TEST(LeaseTransitions, ReleaseNeverGoesBelowZero) {
  const LeasePending me{LeaseOp::kRelease, 1, 0, 5};
  EXPECT_EQ(detail::lease_count(detail::lease_release_step(4, 1, me).new_payload), 3u);
  EXPECT_EQ(detail::lease_count(detail::lease_release_step(4, 4, me).new_payload), 0u);
  EXPECT_EQ(detail::lease_count(detail::lease_release_step(1, 3, me).new_payload), 0u);
  EXPECT_EQ(detail::lease_pending(detail::lease_release_step(1, 3, me).new_payload), me);
}

TEST(LeaseTransitions, RecoveryTable) {
  struct Row {
    std::uint64_t state;
    bool same_generation, pending_is_record;
    LeaseRecovery action;
  };
  const std::vector<Row> rows = {
      {detail::kLeaseFree, true, false, LeaseRecovery::kNothing},
      {detail::kLeaseFree, false, false, LeaseRecovery::kNothing},
      // died between the word CAS and marking the record HELD: it landed
      {detail::kLeaseIntent, true, true, LeaseRecovery::kHelpThenRelease},
      // died before the word CAS: never landed
      {detail::kLeaseIntent, true, false, LeaseRecovery::kDrop},
      {detail::kLeaseIntent, false, false, LeaseRecovery::kDrop},
      {detail::kLeaseIntent, false, true, LeaseRecovery::kDrop},
      {detail::kLeaseHeld, true, false, LeaseRecovery::kRelease},
      {detail::kLeaseHeld, false, false,
       LeaseRecovery::kDrop},  // reset since: nothing to give back
      // died after the release CAS: the decrement landed
      {detail::kLeaseReleasing, true, true, LeaseRecovery::kHelp},
      // died before it: release now
      {detail::kLeaseReleasing, true, false, LeaseRecovery::kRelease},
      {detail::kLeaseReleasing, false, false, LeaseRecovery::kDrop},
      {1, true, false, LeaseRecovery::kDrop},  // not a state anyone writes
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(testing::Message() << "state " << r.state << " same " << r.same_generation
                                    << " pending " << r.pending_is_record);
    EXPECT_EQ(detail::lease_recovery(r.state, r.same_generation, r.pending_is_record), r.action);
  }
}

// ---- through a segment ------------------------------------------------------
class Leases : public ::testing::Test {
 protected:
  void SetUp() override { limiter_.emplace(Limiter::create(small_options(name_.str(), 256))); }
  PolicyId add(std::uint64_t n, OnFull on_full = OnFull::kAllow) {
    PolicySpec s{"conns", Algorithm::kConcurrency, Rate{n, Nanos(0)}};
    s.on_full = on_full;
    return limiter_->add_policy(s);
  }
  std::uint64_t available(PolicyId id, const char* key = "k") {
    return limiter_->peek(id, key, 0).remaining;
  }
  ScopedSegmentName name_{"lease"};
  std::optional<Limiter> limiter_;
};

TEST_F(Leases, RaiiReleasesAtScopeEnd) {
  const PolicyId id = add(2);
  {
    Lease a = limiter_->lease(id, "k");
    ASSERT_TRUE(a.held());
    EXPECT_EQ(a.decision().limit, 2u);
    EXPECT_EQ(a.decision().remaining, 1u);
    EXPECT_EQ(available(id), 1u);
  }
  EXPECT_EQ(available(id), 2u);
}

TEST_F(Leases, LimitExceededIsDeniedWithoutATime) {
  const PolicyId id = add(2);
  Lease a = limiter_->lease(id, "k");
  Lease b = limiter_->lease(id, "k");
  Lease c = limiter_->lease(id, "k");
  EXPECT_TRUE(a.held());
  EXPECT_TRUE(b.held());
  EXPECT_FALSE(c.held());
  EXPECT_FALSE(c);
  EXPECT_FALSE(c.decision().allowed);
  EXPECT_EQ(c.decision().reason, Reason::kOk);
  EXPECT_EQ(c.decision().limit, 2u);
  EXPECT_EQ(c.decision().remaining, 0u);
  EXPECT_EQ(c.decision().retry_after, Nanos(0));
  EXPECT_FALSE(c.release());
  EXPECT_TRUE(limiter_->lease(id, "other").held());  // keys are independent
  b.release();
  EXPECT_TRUE(limiter_->lease(id, "k").held());
}

TEST_F(Leases, ReleaseTwiceReleasesOnce) {
  const PolicyId id = add(3);
  Lease a = limiter_->lease(id, "k");
  Lease b = limiter_->lease(id, "k");
  EXPECT_EQ(available(id), 1u);
  EXPECT_TRUE(a.release());
  EXPECT_FALSE(a.release());
  EXPECT_FALSE(a.held());
  EXPECT_EQ(available(id), 2u);  // b still counted
  b.release();
  EXPECT_EQ(available(id), 3u);
}

TEST_F(Leases, MoveTransfersTheHold) {
  const PolicyId id = add(2);
  Lease a = limiter_->lease(id, "k");
  Lease b(std::move(a));
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_FALSE(a.release());
  EXPECT_TRUE(b.held());
  EXPECT_EQ(available(id), 1u);
  Lease c = limiter_->lease(id, "k");
  EXPECT_EQ(available(id), 0u);
  c = std::move(b);  // c's own lease is released first
  EXPECT_EQ(available(id), 1u);
  EXPECT_TRUE(c.held());
  c = Lease();
  EXPECT_EQ(available(id), 2u);
}

TEST_F(Leases, CostAboveOneTakesSeveralUnits) {
  const PolicyId id = add(5);
  Lease a = limiter_->lease(id, "k", 3);
  ASSERT_TRUE(a.held());
  EXPECT_EQ(a.decision().remaining, 2u);
  EXPECT_FALSE(limiter_->lease(id, "k", 3).held());
  Lease b = limiter_->lease(id, "k", 2);
  EXPECT_TRUE(b.held());
  a.release();
  EXPECT_EQ(available(id), 3u);
  const Lease never = limiter_->lease(id, "k", 6);
  EXPECT_FALSE(never.held());
  EXPECT_EQ(never.decision().reason, Reason::kCostTooHigh);
  EXPECT_EQ(never.decision().retry_after, Nanos::max());
  const Lease zero = limiter_->lease(id, "k", 0);  // cost 0: a report, never held
  EXPECT_FALSE(zero.held());
  EXPECT_EQ(zero.decision().remaining, 3u);
}

TEST_F(Leases, ResetForgetsTheCountAndLaterReleasesDoNotTouchTheNewOne) {
  const PolicyId id = add(2);
  Lease old1 = limiter_->lease(id, "k");
  Lease old2 = limiter_->lease(id, "k");
  EXPECT_EQ(limiter_->reset(id, std::string_view("k")), 1u);
  EXPECT_EQ(available(id), 2u);
  Lease n1 = limiter_->lease(id, "k");
  Lease n2 = limiter_->lease(id, "k");
  ASSERT_TRUE(n1.held());
  ASSERT_TRUE(n2.held());
  EXPECT_TRUE(old1.release());  // its count was forgotten: nothing is taken from the new one
  old2.release();
  EXPECT_EQ(available(id), 0u);
  EXPECT_FALSE(limiter_->lease(id, "k").held());
  n1.release();
  n2.release();
  EXPECT_EQ(available(id), 2u);
  EXPECT_TRUE(limiter_->check().clean());
}

TEST_F(Leases, AcquireOnAConcurrencyPolicyNeedsALease) {
  const PolicyId id = add(2);
  const Decision d = limiter_->acquire(id, "k");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, Reason::kNeedsLease);
  EXPECT_EQ(to_string(d.reason), "needs_lease");
  const PolicyId g =
      limiter_->add_policy({"g", Algorithm::kGcra, Rate{10, std::chrono::seconds(1)}});
  const Lease l = limiter_->lease(g, "k");
  EXPECT_FALSE(l.held());
  EXPECT_EQ(l.decision().reason, Reason::kUnknownPolicy);
}

TEST_F(Leases, AProcessHoldsAtMost64) {
  const PolicyId id = add(1000, OnFull::kDeny);
  std::vector<Lease> held;
  for (int i = 0; i < 64; ++i) {
    held.push_back(limiter_->lease(id, "k"));
    ASSERT_TRUE(held.back().held()) << i;
  }
  const Lease extra = limiter_->lease(id, "k");
  EXPECT_FALSE(extra.held());
  EXPECT_EQ(extra.decision().reason, Reason::kTableFull);
  held.pop_back();
  EXPECT_TRUE(limiter_->lease(id, "k").held());  // a record is free again
  held.clear();
  EXPECT_EQ(available(id), 1000u);
}

TEST_F(Leases, PolicySpecIsNormalised) {
  const PolicyId id = limiter_->add_policy({"c", Algorithm::kConcurrency, parse_rate("7/s")});
  const PolicySpec spec = limiter_->policies()[id.index].spec;
  EXPECT_EQ(spec.rate, (Rate{7, Nanos(0)}));
  EXPECT_EQ(spec.burst, 7u);
  // The same limit again is the same policy, whatever period was written.
  EXPECT_EQ(limiter_->add_policy({"c", Algorithm::kConcurrency, Rate{7, Nanos(0)}}).index,
            id.index);
  const auto e = catch_error([&] {
    limiter_->add_policy({"z", Algorithm::kConcurrency, Rate{1u << 24, Nanos(0)}});
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(std::string(e->what()).find("below 2^24"), std::string::npos) << e->what();
}

TEST_F(Leases, CheckIsCleanWhileLeasesAreHeld) {
  const PolicyId id = add(4);
  Lease a = limiter_->lease(id, "k", 2);
  Lease b = limiter_->lease(id, "j");
  const CheckReport r = limiter_->check();
  EXPECT_TRUE(r.clean()) << (r.problems.empty() ? "" : r.problems[0]);
  EXPECT_EQ(r.live, 2u);
}

// What `shmlimit dump` shows as "in-use" (partly held), "limited" (all held)
// and "full": a concurrency key has no time to refill, so reset_after is 0.
TEST_F(Leases, DumpShowsHeldUnitsAsRemainingWithoutAResetTime) {
  const PolicyId id = add(3);
  Lease a = limiter_->lease(id, "part");
  Lease b = limiter_->lease(id, "all", 3);
  Lease c = limiter_->lease(id, "gone");
  c.release();
  std::map<std::string, Decision> seen;
  for (const BucketView& v : limiter_->dump()) seen[v.key] = v.now;
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(seen["part"].allowed);
  EXPECT_EQ(seen["part"].remaining, 2u);
  EXPECT_EQ(seen["part"].limit, 3u);
  EXPECT_EQ(seen["part"].reset_after, Nanos(0));
  EXPECT_FALSE(seen["all"].allowed);
  EXPECT_EQ(seen["all"].remaining, 0u);
  EXPECT_EQ(seen["all"].retry_after, Nanos(0));
  EXPECT_TRUE(seen["gone"].allowed);
  EXPECT_EQ(seen["gone"].remaining, 3u);
  EXPECT_EQ(seen["gone"].reset_after, Nanos(0));
}

TEST(LeaseConfig, ParsesLimitAndNamesErrors) {
  const Config c = parse_config(
      "[segment]\nname = \"/x\"\n[policies.conn]\nalgorithm = \"concurrency\"\nlimit = 8\n",
      "t.toml");
  ASSERT_EQ(c.policies.size(), 1u);
  EXPECT_EQ(c.policies[0].algorithm, Algorithm::kConcurrency);
  EXPECT_EQ(c.policies[0].rate.count, 8u);
  const auto msg = [](const char* text) {
    const auto e = catch_error([&] { parse_config(text, "t.toml"); });
    return e ? std::string(e->what()) : std::string("no error");
  };
  EXPECT_NE(
      msg("[segment]\nname = \"/x\"\n[policies.c]\nalgorithm = \"concurrency\"\nrate = \"1/s\"\n")
          .find(
              "t.toml:5:8: policy \"c\": a concurrency policy has a limit (in flight), not a rate"),
      std::string::npos);
  EXPECT_NE(msg("[segment]\nname = \"/x\"\n[policies.c]\nalgorithm = \"concurrency\"\n")
                .find("policy \"c\": algorithm = \"concurrency\" needs a limit"),
            std::string::npos);
  EXPECT_NE(
      msg("[segment]\nname = \"/x\"\n[policies.c]\nrate = \"1/s\"\nlimit = 3\n")
          .find("t.toml:5:9: policy \"c\": limit applies to algorithm = \"concurrency\" only"),
      std::string::npos);
  EXPECT_NE(msg("[segment]\nname = \"/x\"\n[policies.c]\nalgorithm = \"concurrency\"\nlimit = 0\n")
                .find("t.toml:5:9"),
            std::string::npos);
}

}  // namespace
}  // namespace shmlimit::unit
