// `check` on segments corrupted on purpose: detail::inspect_segment_bytes
// on copies of a real segment with one kind of damage each (random header,
// wrong version, truncation, a policy kind out of range, slots with
// impossible fields, orphaned and dead claims), each reported by its own
// line; random garbage of every size never crashes it; and
// Limiter::check_segment on the named object.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "admin/check_segment.hpp"
#include "admin/slot_audit.hpp"
#include "segment/clock.hpp"
#include "segment/layout.hpp"
#include "segment/process.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "table/table.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using unit::AlignedBytes;

// A small real segment with one policy and a few live keys, as bytes.
class CheckCorrupt : public ::testing::Test {
 protected:
  CheckCorrupt() {
    Options o = unit::small_options(name_.str(), 64);
    Limiter l = Limiter::create(o);
    PolicySpec s;
    s.name = "api";
    s.rate = Rate{5, std::chrono::hours(1)};
    const PolicyId api = l.add_policy(s);
    for (int i = 0; i < 8; ++i) l.acquire(api, "key-" + std::to_string(i));
    for (const BucketView& b : l.dump()) live_slots_.push_back(b.slot);
    bytes_ = unit::read_file(name_.path());
  }

  // Audits `bytes_` (or its first `size` bytes) in an exact-size buffer.
  CheckReport audit(std::size_t size = SIZE_MAX) const {
    size = std::min(size, bytes_.size());
    AlignedBytes buf(size);
    std::memcpy(buf.data(), bytes_.data(), size);
    CheckReport r;
    detail::inspect_segment_bytes(buf.data(), size, &r);
    return r;
  }

  template <class T>
  void put(std::size_t offset, T value) {
    std::memcpy(bytes_.data() + offset, &value, sizeof value);
  }
  std::size_t slot_offset(std::uint32_t slot) const {
    std::uint64_t offset = 0;
    std::uint32_t slot_bytes = 0;
    std::memcpy(&offset, bytes_.data() + offsetof(detail::Header, slot_offset), 8);
    std::memcpy(&slot_bytes, bytes_.data() + offsetof(detail::Header, slot_bytes), 4);
    return offset + std::size_t{slot} * slot_bytes;
  }

  unit::ScopedSegmentName name_{"corrupt"};
  std::vector<std::byte> bytes_;
  std::vector<std::uint32_t> live_slots_;
};

::testing::AssertionResult has_line(const CheckReport& r, const std::string& text) {
  for (const auto& p : r.problems) {
    if (p.find(text) != std::string::npos) return ::testing::AssertionSuccess();
  }
  auto failure = ::testing::AssertionFailure()
                 << "no problem mentions \"" << text << "\"; problems:";
  for (const auto& p : r.problems) failure << "\n  " << p;
  return failure;
}

TEST_F(CheckCorrupt, AnIntactSegmentHasNoProblems) {
  const CheckReport r = audit();
  EXPECT_TRUE(r.clean()) << ::testing::PrintToString(r.problems);
  EXPECT_EQ(r.live, 8u);
}

TEST_F(CheckCorrupt, RandomBytesOverTheHeaderAreListedFieldByField) {
  std::mt19937_64 rng(7);
  for (std::size_t i = 0; i < sizeof(detail::Header); ++i)
    bytes_[i] = static_cast<std::byte>(rng());
  const CheckReport r = audit();
  EXPECT_TRUE(has_line(r, "bad magic"));
  EXPECT_TRUE(has_line(r, "layout version"));
  EXPECT_TRUE(has_line(r, "layout fingerprint"));
  EXPECT_TRUE(has_line(r, "capacity"));
  EXPECT_TRUE(has_line(r, "slot_bytes"));
  EXPECT_TRUE(has_line(r, "policies and slots not checked"));
  EXPECT_GE(r.problems.size(), 6u);
}

TEST_F(CheckCorrupt, WrongVersionIsNamedAndTheTableIsNotReadWithTheWrongLayout) {
  put<std::uint32_t>(offsetof(detail::Header, layout_version), 99);
  const CheckReport r = audit();
  EXPECT_TRUE(has_line(
      r, "layout version 99, this build reads version " + std::to_string(detail::kLayoutVersion)));
  EXPECT_TRUE(has_line(r, "policies and slots not checked"));
}

TEST_F(CheckCorrupt, TruncatedObjectIsReportedAndOnlyTheSlotsThatFitAreRead) {
  const std::size_t size = slot_offset(10);  // slots 0-9 remain
  const CheckReport r = audit(size);
  EXPECT_TRUE(has_line(r, "(truncated)"));
  EXPECT_TRUE(has_line(r, "slots 10 to 63 lie beyond the end"));
  EXPECT_TRUE(has_line(r, "denials ring: lies beyond the end"));
}

// Ring entries whose seq or fields cannot be right: each its own line; an
// unfinished entry of a live writer and a complete one are not problems.
TEST_F(CheckCorrupt, DenialRingEntriesWithImpossibleTicketsOrPoliciesAreListed) {
  std::uint64_t total = 0;
  std::memcpy(&total, bytes_.data() + offsetof(detail::Header, total_bytes), 8);
  const std::size_t ring = total - detail::kDenialRingBytes;
  const auto entry = [&](std::uint32_t i) {
    return ring + sizeof(detail::DenialRingHead) + i * sizeof(detail::DenialEntry);
  };
  constexpr std::uint64_t N = detail::kDenialRingEntries;
  const auto pid = static_cast<std::uint32_t>(::getpid());
  put<std::uint64_t>(ring, 3 * N);  // `next`: 3N tickets handed out
  put<std::uint64_t>(entry(1), detail::denial_seq_complete(N + 1));          // fine, policy 0
  put<std::uint64_t>(entry(2), detail::denial_seq_writing(2 * N + 2, pid));  // a live writer: fine
  put<std::uint64_t>(entry(3), detail::denial_seq_complete(5));              // ticket 5 in entry 3
  put<std::uint64_t>(entry(4), detail::denial_seq_writing(7 * N + 4, pid));  // beyond `next`
  put<std::uint64_t>(entry(6), detail::denial_seq_complete(N + 6));
  put<std::uint64_t>(entry(6) + offsetof(detail::DenialEntry, info), 200);  // policy 200
  const CheckReport r = audit();
  EXPECT_TRUE(has_line(r, "denials ring entry 3: holds ticket 5, which belongs to entry 5"));
  EXPECT_TRUE(has_line(r, "denials ring entry 4: holds ticket " + std::to_string(7 * N + 4) +
                              ", beyond the " + std::to_string(3 * N) + " handed out"));
  EXPECT_TRUE(has_line(r, "denials ring entry 6: names unregistered policy 200"));
  EXPECT_EQ(r.problems.size(), 3u) << ::testing::PrintToString(r.problems);
}

TEST_F(CheckCorrupt, ObjectSmallerThanAHeaderIsOneProblem) {
  const CheckReport r = audit(100);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(has_line(r, "100 bytes, smaller than a header"));
  CheckReport empty;
  detail::inspect_segment_bytes(nullptr, 0, &empty);
  EXPECT_TRUE(has_line(empty, "0 bytes"));
}

TEST_F(CheckCorrupt, PolicyKindOutOfRangeIsNamed) {
  // Entry 0's active set is params[0] (state 2: one change, set 0).
  const std::size_t kind = 4096 + offsetof(detail::PolicyEntry, params);
  put<std::uint64_t>(kind, 99 | (7u << 8));
  const CheckReport r = audit();
  // The kind word is judged by its codec (segment/policy_kind.hpp), which
  // names the first field no writer produces.
  EXPECT_TRUE(has_line(
      r,
      "policy entry 0 (\"api\"): kind 0x0000000000000763: the algorithm (bits 0-7) is not 1 .. 8"));
  put<std::uint64_t>(kind, 1 | (7u << 8));
  EXPECT_TRUE(has_line(
      audit(), "kind 0x0000000000000701: on_full (bits 8-15) is not 0 (allow) or 1 (deny)"));
}

TEST_F(CheckCorrupt, SlotsWithImpossibleFieldsAreEachNamed) {
  ASSERT_GE(live_slots_.size(), 4u);
  const auto meta_of = [&](std::uint32_t slot) {
    std::uint64_t m = 0;
    std::memcpy(&m, bytes_.data() + slot_offset(slot), 8);
    return m;
  };
  using detail::Meta;
  const std::uint32_t a = live_slots_[0], b = live_slots_[1], c = live_slots_[2],
                      d = live_slots_[3];
  const std::uint64_t ma = meta_of(a);
  put<std::uint64_t>(slot_offset(a),
                     Meta::make(detail::kLive, 200, Meta::policy(ma), Meta::fp(ma), Meta::gen(ma)));
  const std::uint64_t mb = meta_of(b);
  put<std::uint64_t>(slot_offset(b),
                     Meta::make(detail::kLive, Meta::key_len(mb), 40, Meta::fp(mb), Meta::gen(mb)));
  const std::uint64_t mc = meta_of(c);
  put<std::uint64_t>(slot_offset(c),
                     Meta::with_state(mc, detail::kClaiming));  // no owner: orphaned
  // A claim token naming a process that has exited.
  const pid_t child = unit::dead_pid();
  put<std::uint64_t>(slot_offset(d) + offsetof(detail::SlotHead, owner),
                     std::uint64_t{static_cast<std::uint32_t>(child)} << 32 | 1);
  const CheckReport r = audit();
  EXPECT_TRUE(has_line(r, "slot " + std::to_string(a) + ": key length 200 exceeds"));
  EXPECT_TRUE(has_line(r, "slot " + std::to_string(b) + ": names unregistered policy 40"));
  EXPECT_TRUE(has_line(r, "slot " + std::to_string(c) + ": orphaned claim"));
  EXPECT_TRUE(has_line(
      r, "slot " + std::to_string(d) + ": claim left by dead process " + std::to_string(child)));
}

TEST_F(CheckCorrupt, RandomBytesOverTheSlotsNeverCrashAndAreReported) {
  std::mt19937_64 rng(11);
  const std::size_t from = slot_offset(0), to = slot_offset(64);
  for (std::size_t i = from; i < to; ++i) bytes_[i] = static_cast<std::byte>(rng());
  const CheckReport r = audit();
  EXPECT_FALSE(r.clean());
  EXPECT_TRUE(has_line(r, "slot "));
  EXPECT_LE(r.problems.size(), detail::kMaxProblems + 1);
}

// A pid of a kernel thread (PF_KTHREAD in /proc/<pid>/stat field 9), or 0
// when none is visible (a container may show only its own processes).
pid_t kernel_thread_pid() {
  for (pid_t pid = 2; pid < 200; ++pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::size_t p = close + 2;
    for (int field = 3; field < 9 && p != std::string::npos; ++field) p = stat.find(' ', p) + 1;
    if (std::stoull(stat.substr(p)) & 0x00200000) return pid;
  }
  return 0;
}

std::uint64_t token_of(pid_t pid, std::uint32_t start) {
  return std::uint64_t{static_cast<std::uint32_t>(pid)} << 32 | start;
}

// Regression: an owner word naming a live pid with start time 0 was
// counted "in progress" forever, and `check` called the segment clean.
TEST_F(CheckCorrupt, ImpossibleClaimTokensAreProblemsNotClaimsInProgress) {
  ASSERT_GE(live_slots_.size(), 3u);
  const std::uint32_t a = live_slots_[0], b = live_slots_[1], c = live_slots_[2];
  const auto owner_at = [&](std::uint32_t slot) {
    return slot_offset(slot) + offsetof(detail::SlotHead, owner);
  };
  put<std::uint64_t>(owner_at(a), token_of(::getpid(), 0));  // a live pid, start time 0
  put<std::uint64_t>(owner_at(b), token_of(0, 77));          // pid 0
  const pid_t kthread = kernel_thread_pid();
  if (kthread != 0) put<std::uint64_t>(owner_at(c), token_of(kthread, 1));
  const CheckReport r = audit();
  EXPECT_EQ(r.in_progress, 0u);
  EXPECT_TRUE(has_line(r, "slot " + std::to_string(a) + ": impossible claim token"));
  EXPECT_TRUE(has_line(r, "(start time 0): no process holds it"));
  EXPECT_TRUE(has_line(
      r, "slot " + std::to_string(b) + ": impossible claim token 0x000000000000004d (pid 0)"));
  if (kthread != 0) {
    EXPECT_TRUE(has_line(r, "slot " + std::to_string(c) + ": impossible claim token"));
    EXPECT_TRUE(has_line(r, "(names a kernel thread)"));
  } else {
    std::printf("no kernel thread visible in this pid namespace: its case is not tried\n");
  }
}

// The one slot auditor (slot_audit.hpp) that Limiter::check and the raw
// checker share: each slot alone, its sink, the repair and live hooks.
TEST_F(CheckCorrupt, SlotAuditorReportsEachSlotToItsSinkAndCallsItsHooks) {
  ASSERT_GE(live_slots_.size(), 2u);
  const std::uint32_t a = live_slots_[0], b = live_slots_[1];
  put<std::uint64_t>(slot_offset(b) + offsetof(detail::SlotHead, owner),
                     token_of(unit::dead_pid(), 1));
  AlignedBytes buf(bytes_.size());
  std::memcpy(buf.data(), bytes_.data(), bytes_.size());
  detail::Geometry g;
  std::uint64_t seed = 0;
  {
    std::uint32_t capacity = 0, slot_bytes = 0, max_probe = 0, log_entries = 0;
    std::memcpy(&capacity, bytes_.data() + offsetof(detail::Header, capacity), 4);
    std::memcpy(&slot_bytes, bytes_.data() + offsetof(detail::Header, slot_bytes), 4);
    std::memcpy(&max_probe, bytes_.data() + offsetof(detail::Header, max_probe), 4);
    std::memcpy(&log_entries, bytes_.data() + offsetof(detail::Header, log_entries), 4);
    std::memcpy(&seed, bytes_.data() + offsetof(detail::Header, hash_seed), 8);
    g = detail::Geometry::compute(capacity, slot_bytes, max_probe, log_entries);
  }
  const detail::Table table(buf.data() + g.slot_offset, g);
  std::vector<std::string> lines;
  std::vector<std::uint32_t> checked;
  detail::SlotAuditor audit(table, g, seed, 1,
                            [&](std::string line) { lines.push_back(std::move(line)); });
  audit.set_check_live([&](std::uint32_t i, std::uint64_t, std::uint64_t) {
    checked.push_back(i);
    return std::string(i == a ? "looked at" : "");
  });
  audit.audit(a);  // one slot: live, and the live hook's problem lands in the sink
  EXPECT_EQ(audit.live(), 1u);
  EXPECT_EQ(lines, std::vector<std::string>{"slot " + std::to_string(a) + ": looked at"});
  audit.audit(b);  // a dead owner, without a repair hook: reported
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[1].find("slot " + std::to_string(b) + ": claim left by dead process"),
            std::string::npos)
      << lines[1];
  // With a repair hook that repairs, the dead owner is counted, not reported.
  lines.clear();
  std::vector<std::uint32_t> repaired;
  detail::SlotAuditor fixing(table, g, seed, 1,
                             [&](std::string line) { lines.push_back(std::move(line)); });
  fixing.set_repair([&](std::uint32_t i) {
    repaired.push_back(i);
    return true;
  });
  fixing.audit_all();
  EXPECT_EQ(repaired, std::vector<std::uint32_t>{b});
  EXPECT_EQ(fixing.repaired(), 1u);
  EXPECT_EQ(fixing.live(), live_slots_.size());
  EXPECT_TRUE(lines.empty()) << ::testing::PrintToString(lines);
  // Slots from `readable` on are never read.
  detail::SlotAuditor none(table, g, seed, 1,
                           [&](std::string line) { lines.push_back(std::move(line)); });
  none.set_readable(0);
  none.audit_all();
  EXPECT_EQ(none.live(), 0u);
}

TEST(ProcessTokens, TokensThisLibraryMakesAreNeverImpossible) {
  const detail::ProcessToken me = detail::self_token();
  EXPECT_NE(detail::token_pid(me), 0u);
  EXPECT_NE(detail::token_start(me), 0u);
  EXPECT_EQ(detail::token_impossible(me), nullptr);
  EXPECT_FALSE(detail::token_is_dead(me));
  EXPECT_FALSE(detail::pid_is_dead(static_cast<std::uint32_t>(::getpid())));
  // Corrupt ones read as dead, so every repair path takes them over.
  EXPECT_TRUE(detail::token_is_dead(token_of(::getpid(), 0)));
  EXPECT_STREQ(detail::token_impossible(token_of(::getpid(), 0)), "start time 0");
  EXPECT_TRUE(detail::token_is_dead(token_of(0, 5)));
  // A start time /proc does not tell is a marker, never 0: liveness by pid.
  EXPECT_FALSE(detail::token_is_dead(token_of(::getpid(), detail::kStartUnknown)));
}

class CheckRepair : public ::testing::Test {
 protected:
  CheckRepair() : limiter_(Limiter::create(unit::small_options(name_.str(), 64))) {
    api_ = limiter_.add_policy(
        {"api", Algorithm::kGcra, Rate{5, std::chrono::hours(1)}, 5, OnFull::kDeny});
    for (int i = 0; i < 4; ++i) limiter_.acquire(api_, "key-" + std::to_string(i));
    for (const BucketView& b : limiter_.dump()) slots_.push_back(b.slot);
    const std::vector<std::byte> bytes = unit::read_file(name_.path());
    std::memcpy(&slot_offset_, bytes.data() + offsetof(detail::Header, slot_offset), 8);
    std::memcpy(&slot_bytes_, bytes.data() + offsetof(detail::Header, slot_bytes), 4);
  }
  std::size_t owner_offset(std::uint32_t slot) const {
    return slot_offset_ + std::size_t{slot} * slot_bytes_ + offsetof(detail::SlotHead, owner);
  }

  unit::ScopedSegmentName name_{"repair"};
  Limiter limiter_;
  PolicyId api_{};
  std::vector<std::uint32_t> slots_;
  std::uint64_t slot_offset_ = 0;
  std::uint32_t slot_bytes_ = 0;
};

TEST_F(CheckRepair, CheckRepairsAnImpossibleOwnerAndReportsIt) {
  ASSERT_FALSE(slots_.empty());
  const std::uint32_t slot = slots_[0];
  const std::uint64_t token = token_of(::getpid(), 0);
  unit::write_at(name_.path(), owner_offset(slot), &token, sizeof token);
  const CheckReport before = limiter_.check(false);
  EXPECT_EQ(before.in_progress, 0u);
  EXPECT_TRUE(has_line(before, "slot " + std::to_string(slot) + ": impossible claim token"));
  const CheckReport repaired = limiter_.check(true);
  EXPECT_EQ(repaired.repaired, 1u);
  EXPECT_TRUE(has_line(repaired, "(start time 0): no process holds it; repaired"));
  const CheckReport after = limiter_.check(false);
  EXPECT_TRUE(after.clean()) << ::testing::PrintToString(after.problems);
  EXPECT_EQ(after.in_progress, 0u);
  EXPECT_EQ(after.live, 4u);  // the bucket was consistent: only the token is cleared
}

// Regression: a header epoch in the future stopped every bucket's clock
// at 0 (a retry that never elapses), and `check` said clean.
TEST_F(CheckRepair, FutureEpochIsRefusedAtOpenAndReportedByEveryCheck) {
  const std::int64_t future = detail::segment_clock_ns() + std::int64_t{3600} * 1'000'000'000;
  unit::write_at(name_.path(), offsetof(detail::Header, epoch_raw_ns), &future, sizeof future);
  const auto e = unit::catch_error([&] { Limiter::open(unit::small_options(name_.str(), 0)); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kCorrupt);
  EXPECT_NE(std::string(e->what()).find("ms in the future"), std::string::npos) << e->what();
  EXPECT_TRUE(has_line(Limiter::check_segment(name_.str()), "header: corrupt header: its epoch"));
  // A handle opened before keeps its own copy of the epoch and decides on;
  // its check reports the header, and repair leaves it (design.md).
  EXPECT_TRUE(has_line(limiter_.check(true), "ms in the future"));
  EXPECT_TRUE(has_line(limiter_.check(false), "ms in the future"));
}

TEST(CheckCorruptGarbage, BuffersOfRandomBytesAndSizesNeverCrash) {
  std::mt19937_64 rng(3);
  for (int round = 0; round < 300; ++round) {
    const std::size_t size = rng() % 70000;
    AlignedBytes buf(size);
    for (std::size_t i = 0; i < size; ++i) buf.data()[i] = static_cast<std::byte>(rng());
    // Half the rounds keep a valid magic so the audit goes further.
    if (size >= 8 && round % 2 == 0) std::memcpy(buf.data(), &detail::kMagic, 8);
    CheckReport r;
    detail::inspect_segment_bytes(buf.data(), size, &r);
    EXPECT_FALSE(r.clean());
  }
}

TEST(CheckSegment, MissingSegmentIsNotFound) {
  unit::ScopedSegmentName name("missing");
  const auto e = unit::catch_error([&] { Limiter::check_segment(name.str()); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::kNotFound);
}

TEST(CheckSegment, ForeignFileIsListedNotThrown) {
  unit::ScopedSegmentName name("foreign");
  unit::write_new_file(name.path(), std::vector<unsigned char>(4096, 0xAB));
  const CheckReport r = Limiter::check_segment(name.str());
  EXPECT_TRUE(has_line(r, "bad magic 0xabababababababab"));
}

}  // namespace
}  // namespace shmlimit
