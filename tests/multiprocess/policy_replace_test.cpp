// Replacing a policy while forked workers hammer its key, and killing the
// replacing process at random points (doc/algorithms.md, "Replacing a
// policy"; the protocol in src/limiter/policies.cpp).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "mp.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::test {
namespace {

struct Counts {
  std::atomic<std::uint64_t> stop{0};
  std::atomic<std::uint64_t> under_new{
      0};  // admissions whose decision names the new policy's limit
  std::atomic<std::uint64_t> under_old{0};
  std::atomic<std::uint64_t> other{0};  // any other limit: a misread
};

Options options_for(const std::string& name) {
  Options o;
  o.name = name;
  o.capacity = 1024;
  o.claim_timeout = std::chrono::seconds(30);
  return o;
}

// Workers hammer one key through an id taken before the replacement; the
// old policy's limit is 1000, the new one's 50 per hour. Every admission
// decided under the new policy comes from a fresh bucket: exactly 50.
TEST(PolicyReplacementAcrossProcesses,
     HammeredKeyGetsExactlyTheNewPolicysAllowanceAfterAChangeOfAlgorithm) {
  ScopedName name("replace");
  Limiter parent = Limiter::create(options_for(name.str()));
  const PolicyId old_id =
      parent.add_policy({"api", Algorithm::kGcra, parse_rate("1000/h"), 1000, OnFull::kDeny});
  for (int i = 0; i < 400; ++i)
    ASSERT_TRUE(parent.acquire(old_id, "hot").allowed);  // state to misread
  Shared<Counts> counts;
  const auto workers = fork_workers(3, [&](int) {
    Limiter l = Limiter::open(options_for(name.str()));
    while (counts->stop.load(std::memory_order_acquire) == 0) {
      const Decision d = l.acquire(old_id, "hot");
      if (!d.allowed) continue;
      (d.limit == 50     ? counts->under_new
       : d.limit == 1000 ? counts->under_old
                         : counts->other)
          .fetch_add(1, std::memory_order_relaxed);
    }
    return 0;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const PolicyReplacement r =
      parent.replace_policy({"api", Algorithm::kFixedWindow, parse_rate("50/h"), 0, OnFull::kDeny});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  counts->stop.store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(workers), 0);
  EXPECT_TRUE(r.fresh);
  EXPECT_EQ(r.buckets_reset, 1u);
  EXPECT_EQ(counts->under_new.load(), 50u);
  EXPECT_LE(counts->under_old.load(), 600u);
  EXPECT_EQ(counts->other.load(), 0u);
  const CheckReport report = parent.check(false);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
}

// A process replacing the policy over and over is SIGKILLed at random
// points (holding the admin token, between publishing and retiring, ...)
// while workers hammer the key: afterwards one live policy holds the name,
// check repairs what the kills left and then finds nothing, and the key is
// decided under the last policy registered.
TEST(PolicyReplacementAcrossProcesses, ReplacerKilledAnywhereLeavesAUsableTable) {
  ScopedName name("replace-kill");
  Limiter parent = Limiter::create(options_for(name.str()));
  const PolicySpec specs[] = {
      {"api", Algorithm::kGcra, parse_rate("100/h"), 0, OnFull::kDeny},
      {"api", Algorithm::kFixedWindow, parse_rate("100/h"), 0, OnFull::kDeny},
      {"api", Algorithm::kGcra, parse_rate("200/h"), 0, OnFull::kDeny}};
  const PolicyId first = parent.add_policy(specs[0]);
  Shared<Counts> counts;
  const auto workers = fork_workers(2, [&](int) {
    Limiter l = Limiter::open(options_for(name.str()));
    while (counts->stop.load(std::memory_order_acquire) == 0) {
      const Decision d = l.acquire(first, "hot");
      if (d.reason == Reason::kCorrupt || d.reason == Reason::kUnknownPolicy)
        counts->other.fetch_add(1);
      l.acquire("api", "by-name");
    }
    return 0;
  });
  std::mt19937_64 rng(15);
  int rounds = 0;
  int killed = 0;
  for (; rounds < 200; ++rounds) {
    // One replacement per child (each fresh start uses a policy entry for
    // good), killed after a random delay: before, during or after it.
    const auto child = fork_workers(1, [&](int) {
      Limiter l = Limiter::open(options_for(name.str()));
      try {
        l.replace_policy(specs[static_cast<unsigned>(rounds) % 3]);
      } catch (const Error& e) {
        return e.code() == ErrorCode::kTableFull ? 7 : 1;
      }
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 4000));
    ::kill(child[0], SIGKILL);
    int status = 0;
    ::waitpid(child[0], &status, 0);
    if (WIFSIGNALED(status)) ++killed;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 7) break;  // the policy table filled up
    ASSERT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) != 0)
        << "replacement failed in round " << rounds;
  }
  RecordProperty("killed", killed);
  counts->stop.store(1, std::memory_order_release);
  ASSERT_EQ(wait_all(workers), 0);
  EXPECT_EQ(counts->other.load(), 0u);
  parent.check(true);
  const CheckReport report = parent.check(false);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front();
  std::size_t named = 0;
  for (const PolicyView& v : parent.policies()) named += v.spec.name == "api" ? 1 : 0;
  EXPECT_EQ(named, 1u);
  // The first id follows the name to whatever entry holds it now.
  const PolicyId now_id = *parent.find_policy("api");
  EXPECT_EQ(parent.peek(first, "fresh", 0).limit, parent.peek(now_id, "fresh", 0).limit);
  RecordProperty("rounds", rounds);
}

}  // namespace
}  // namespace shmlimit::test
