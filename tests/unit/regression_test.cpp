// Regression tests: each is named after the bug it guards and fails if the
// bug comes back. Part of the unit test executable (label unit).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "segment/process.hpp"
#include "shmlimit/config.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit {
namespace {

using namespace std::chrono_literals;

struct Segment {
  std::string name;
  explicit Segment(const std::string& tag)
      : name("/shmlimit-regress-" + tag + "-" + std::to_string(::getpid())) {
    Limiter::remove(name);
  }
  ~Segment() { Limiter::remove(name); }
};

// Found by the model (doc/model.md, check as-is-empty-repair): a claimer killed
// between its commit CAS and its CLAIMING store on an EMPTY slot leaves
// meta EMPTY with word version 1. repair_if_dead skips EMPTY slots, so the
// token is cleared but the slot stays EMPTY with a mismatched word: every
// later claim of it fails its version check and spins until claim_timeout
// (Reason::kContended), check() calls the segment clean, and the slot is
// lost for good (and as EMPTY it still ends probe sequences).
TEST(Regression, ClaimerKilledAfterCommittingAnEmptySlotLeavesItUsable) {
  Segment seg("empty");
  Options o;
  o.name = seg.name;
  o.capacity = 16;
  o.max_probe = 16;
  o.claim_timeout = 20ms;
  Limiter l = Limiter::create(o);
  const PolicyId p = l.add_policy({"p", Algorithm::kGcra, parse_rate("10/s"), 5, OnFull::kDeny});

  // A dead process's token: a child reports its own and exits.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    const detail::ProcessToken t = detail::self_token();
    (void)!::write(fds[1], &t, sizeof t);
    ::_exit(0);
  }
  detail::ProcessToken dead = 0;
  ASSERT_EQ(::read(fds[0], &dead, sizeof dead), static_cast<ssize_t>(sizeof dead));
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(detail::token_is_dead(dead));

  // The state such a kill leaves (table.cpp, claim(): the word CAS to
  // (generation 1, payload) done, meta.store(CLAIMING) not done), in every
  // slot, so whichever is the key's home is one.
  {
    std::fstream f("/dev/shm" + seg.name, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f);
    detail::Header h;
    f.read(reinterpret_cast<char*>(&h), sizeof h);
    const std::uint64_t word = detail::Word::make(1, 1'000'000'000);
    for (std::uint32_t i = 0; i < h.capacity; ++i) {
      f.seekp(static_cast<std::streamoff>(h.slot_offset + std::uint64_t{i} * h.slot_bytes + 8));
      f.write(reinterpret_cast<const char*>(&word), 8);  // word
      f.write(reinterpret_cast<const char*>(&dead), 8);  // owner
    }
  }
  const CheckReport r = l.check(true);  // what `shmlimit check` does
  EXPECT_TRUE(r.clean());
  const Decision d = l.acquire_at(p, "victim", 1, 2s);
  EXPECT_EQ(d.reason, Reason::kOk)
      << "the slot of the killed claimer is still unusable: " << to_string(d.reason);
  EXPECT_TRUE(d.allowed);
}

// Found by the config fuzzer (fuzz/regressions/config/crash-085d...): the
// TOML parser's description quoted the input, newline included, so the
// error spanned two lines. Every config error is one line.
TEST(Regression, ConfigErrorStaysOneLineWhenTheParserEchoesANewline) {
  const std::string text = "[segment]\nname = \"/x\"\n[policies.a]\nrate = \"5/m\"\non_full = t\n";
  try {
    (void)parse_config(text, "t.toml");
    FAIL() << "a broken boolean was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_EQ(what.rfind("t.toml:", 0), 0u) << what;
  }
}

// A refused multi-limit request charges nothing, so a limit in it that
// would have admitted must report its bucket as it is: a 5/hour limit with
// 3 used reports 2 left, not the 1 a charge that never happened would leave.
TEST(Regression, RefusedMultiLimitReportsUnchargedRemainingOfTheLimitsThatAdmit) {
  Segment seg("many-remaining");
  Options o;
  o.name = seg.name;
  o.capacity = 64;
  Limiter limiter = Limiter::create(o);
  PolicySpec burst;
  burst.name = "burst";
  burst.algorithm = Algorithm::kFixedWindow;
  burst.rate = Rate{3, std::chrono::hours(1)};
  PolicySpec sustained = burst;
  sustained.name = "sustained";
  sustained.rate = Rate{5, std::chrono::hours(1)};
  const PolicyId b = limiter.add_policy(burst);
  const PolicyId s = limiter.add_policy(sustained);
  const Request both[] = {{s, "k", 1}, {b, "k", 1}};
  const Nanos t{1'000'000'000};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter.acquire_many_at(both, t).allowed);
  for (int i = 0; i < 2; ++i) {  // the same answer every time: nothing is charged
    Decision each[2];
    const Decision combined = limiter.acquire_many_at(both, t, each);
    EXPECT_FALSE(combined.allowed);
    EXPECT_TRUE(each[0].allowed);
    EXPECT_EQ(each[0].remaining, 2u);
    EXPECT_EQ(each[0].limit, 5u);
    EXPECT_FALSE(each[1].allowed);
    EXPECT_EQ(each[1].remaining, 0u);
    EXPECT_EQ(combined.remaining, 0u);
  }
  EXPECT_EQ(limiter.peek(s, "k", 0).remaining, 2u);
}

}  // namespace
}  // namespace shmlimit

namespace shmlimit {
namespace {

// Regression: the raw segment checker decoded the policy kind word on
// its own and reported a valid `sliding_log --wait drf` policy as "kind ...
// has bits set beyond algorithm and on_full" (the wait bits 16-23 were
// added to the writer only). Every reader now uses detail::PolicyKind.
TEST(Regression, Row9SlidingLogDrfPolicyIsNotReportedCorruptByTheSegmentChecker) {
  Segment seg("row9");
  Options o;
  o.name = seg.name;
  o.capacity = 64;
  o.log_entries = 8;
  {
    Limiter l = Limiter::create(o);
    PolicySpec s{"drf", Algorithm::kSlidingLog, parse_rate("5/m"), 0, OnFull::kDeny};
    s.wait = LogWait::kDrf;
    l.add_policy(s);
    EXPECT_TRUE(l.check(false).problems.empty());
  }
  EXPECT_TRUE(Limiter::check_segment(seg.name).problems.empty());
  // A damaged header field that leaves the policy table readable.
  const std::uint32_t bad_header_bytes = 191;
  const std::string path = "/dev/shm" + seg.name;
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offsetof(detail::Header, header_bytes));
  f.write(reinterpret_cast<const char*>(&bad_header_bytes), sizeof bad_header_bytes);
  f.close();
  const CheckReport r = Limiter::check_segment(seg.name);
  ASSERT_FALSE(r.problems.empty());
  for (const std::string& p : r.problems) {
    EXPECT_EQ(p.find("policy entry"), std::string::npos) << p;
    EXPECT_EQ(p.find("kind"), std::string::npos) << p;
  }
}

}  // namespace
}  // namespace shmlimit
