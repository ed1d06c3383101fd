// The slot protocol of the table (src/table/table.hpp), driven step by step:
// the ABA guard of reclaim, and the repair of claims left by dead
// processes at each point where a process can die.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "algorithms/gcra.hpp"
#include "segment/layout.hpp"
#include "segment/process.hpp"
#include "table/table.hpp"

namespace shmlimit::detail {
namespace {

struct GcraFull final : ReclaimPolicy {
  bool is_full(std::uint32_t, std::uint64_t payload, std::int64_t now) const noexcept override {
    return gcra_is_full(payload, now);
  }
};

// A slot array in a MAP_SHARED mapping, so forked children write the
// parent's slots as another process would.
class SharedSlots {
 public:
  SharedSlots(std::uint32_t capacity, std::uint32_t max_probe)
      : geo_(Geometry::compute(capacity, 64, max_probe)),
        bytes_(static_cast<std::size_t>(capacity) * 64) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<std::byte*>(p);
  }
  ~SharedSlots() { ::munmap(base_, bytes_); }
  Table table() const { return Table(base_, geo_); }

 private:
  Geometry geo_;
  std::size_t bytes_;
  std::byte* base_;
};

constexpr std::uint64_t kSeed = 42;
constexpr std::int64_t kTimeout = 2'000'000'000;

// A key other than `key` whose home slot is the same.
PackedKey same_home_as(const Table& t, const PackedKey& key, const std::string& prefix) {
  for (int i = 0;; ++i) {
    PackedKey other(kSeed, key.policy, prefix + std::to_string(i));
    if (t.home(other.hash) == t.home(key.hash)) return other;
  }
}

// Charges the way every writer does: Table::update from the word read.
bool charge(const Table& t, const SlotRef& ref, std::uint64_t new_payload) {
  std::uint64_t w = ref.word;
  return t.update(ref.index, Word::version(ref.word), &w, [&](std::uint64_t) noexcept {
    return SlotStep::store(new_payload);
  }) == UpdateResult::kStored;
}

TEST(TableProtocol, StaleUpdateNeverLandsOnTheReclaimedSlotsNewKey) {
  SharedSlots slots(16, 1);  // max_probe 1: each key has exactly one slot
  Table t = slots.table();
  const GcraFull full;
  ClaimEvents ev;
  const PackedKey k1(kSeed, 0, "first");
  SlotRef ref1;
  ASSERT_EQ(t.claim(k1, 100, 100, full, kTimeout, &ref1, &ev), Table::ClaimResult::kClaimed);
  ASSERT_TRUE(charge(t, ref1, 200));
  SlotRef stale;
  ASSERT_TRUE(t.find(k1, &stale));  // a process reads the word (payload 200) ...
  ASSERT_EQ(Word::payload(stale.word), 200u);

  // ... and stalls while the bucket refills and the slot goes to another key.
  const PackedKey k2 = same_home_as(t, k1, "second-");
  SlotRef ref2;
  ASSERT_EQ(t.claim(k2, 300, 300, full, kTimeout, &ref2, &ev), Table::ClaimResult::kClaimed);
  ASSERT_EQ(ref2.index, stale.index);
  EXPECT_FALSE(charge(t, stale, 250)) << "a CAS prepared for the old key landed on the new one";
  SlotRef probe;
  EXPECT_FALSE(t.find(k1, &probe));
  EXPECT_TRUE(t.find(k2, &probe));

  // 300 more reclaims of the same slot (the 8-bit version wraps): the stale
  // CAS still fails, because the payload never comes back.
  std::int64_t now = 400;
  for (int i = 0; i < 300; ++i) {
    const PackedKey k = same_home_as(t, k1, "cycle-" + std::to_string(i) + "-");
    SlotRef r;
    ASSERT_EQ(t.claim(k, now, now, full, kTimeout, &r, &ev), Table::ClaimResult::kClaimed);
    ASSERT_TRUE(charge(t, r, static_cast<std::uint64_t>(now + 10)));
    now += 20;
  }
  EXPECT_FALSE(charge(t, stale, 250));
}

TEST(TableProtocol, UpdateStoresLeavesOrReportsTheReclaimAsItsStepAsks) {
  SharedSlots slots(16, 1);
  Table t = slots.table();
  const GcraFull full;
  ClaimEvents ev;
  const PackedKey k1(kSeed, 0, "updated");
  SlotRef ref;
  ASSERT_EQ(t.claim(k1, 100, 100, full, kTimeout, &ref, &ev), Table::ClaimResult::kClaimed);
  const std::uint64_t version = Word::version(ref.word);

  // kStored: the step sees the payload and its result is the new word.
  std::uint64_t w = ref.word;
  std::uint64_t seen = 0;
  EXPECT_EQ(t.update(ref.index, version, &w,
                     [&](std::uint64_t p) noexcept {
                       seen = p;
                       return SlotStep::store(p + 50);
                     }),
            UpdateResult::kStored);
  EXPECT_EQ(seen, 100u);
  EXPECT_EQ(w, Word::make(version, 150));
  EXPECT_EQ(t.head(ref.index).word.load(), w);

  // A stale reading: the CAS fails, the step runs again on the fresh payload.
  std::uint64_t stale = ref.word;
  int steps = 0;
  EXPECT_EQ(t.update(ref.index, version, &stale,
                     [&](std::uint64_t p) noexcept {
                       ++steps;
                       seen = p;
                       return SlotStep::store(p + 1);
                     }),
            UpdateResult::kStored);
  EXPECT_EQ(steps, 2);
  EXPECT_EQ(seen, 150u);
  EXPECT_EQ(Word::payload(t.head(ref.index).word.load()), 151u);

  // kUnchanged: the word stays, and *word is the value the step saw (a
  // step that leaves the word decides on the reading it was given, with no
  // CAS: a read of the bucket as of that reading).
  w = t.head(ref.index).word.load();
  EXPECT_EQ(
      t.update(ref.index, version, &w, [](std::uint64_t) noexcept { return SlotStep::leave(); }),
      UpdateResult::kUnchanged);
  EXPECT_EQ(w, Word::make(version, 151));
  EXPECT_EQ(t.head(ref.index).word.load(), w);

  // kReload: the step changed the word itself; it is read again.
  steps = 0;
  EXPECT_EQ(
      t.update(ref.index, version, &w,
               [&](std::uint64_t p) noexcept {
                 if (++steps == 1) {
                   t.head(ref.index).word.store(Word::make(version, 400));  // as a helper would
                   return SlotStep::reload();
                 }
                 seen = p;
                 return SlotStep::store(p + 1);
               }),
      UpdateResult::kStored);
  EXPECT_EQ(seen, 400u);
  EXPECT_EQ(Word::payload(w), 401u);

  // kReclaimed: the slot went to another key. The step may run once on the
  // stale reading, but what it asks for never lands on the new key.
  const PackedKey k2 = same_home_as(t, k1, "next-");
  SlotRef ref2;
  ASSERT_EQ(t.claim(k2, 1000, 1000, full, kTimeout, &ref2, &ev), Table::ClaimResult::kClaimed);
  ASSERT_EQ(ref2.index, ref.index);
  steps = 0;
  EXPECT_EQ(t.update(ref.index, version, &w,
                     [&](std::uint64_t) noexcept {
                       ++steps;
                       return SlotStep::store(7);
                     }),
            UpdateResult::kReclaimed);
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(w, ref2.word);
  EXPECT_EQ(t.head(ref.index).word.load(), ref2.word);
}

TEST(TableProtocol, PenalisedBucketIsNeverReclaimed) {
  SharedSlots slots(16, 1);
  Table t = slots.table();
  const GcraFull full;
  ClaimEvents ev;
  const PackedKey k1(kSeed, 0, "held");
  SlotRef ref;
  ASSERT_EQ(t.claim(k1, 100, 100, full, kTimeout, &ref, &ev), Table::ClaimResult::kClaimed);
  ASSERT_TRUE(charge(t, ref, 1000));  // not full until t = 1000
  const PackedKey k2 = same_home_as(t, k1, "intruder-");
  SlotRef other;
  EXPECT_EQ(t.claim(k2, 999, 999, full, kTimeout, &other, &ev), Table::ClaimResult::kFull);
  EXPECT_TRUE(t.find(k1, &other));
  EXPECT_EQ(t.claim(k2, 1000, 1000, full, kTimeout, &other, &ev), Table::ClaimResult::kClaimed);
}

// Runs `fn` in a child process that then exits at once, leaving whatever
// it half-did. With `reap`, the parent reaps it (pid gone); otherwise it
// stays a zombie while the test goes on.
pid_t die_after(const std::function<void()>& fn, bool reap) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    fn();
    ::_exit(0);
  }
  if (reap) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  } else {
    // Wait until it has exited (a zombie) without reaping it.
    siginfo_t info;
    ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT);
  }
  return pid;
}

class DeadClaimer : public ::testing::TestWithParam<bool> {};

TEST_P(DeadClaimer, ClaimLeftHalfWrittenIsRepairedByTheNextClaimer) {
  SharedSlots slots(16, 4);
  Table t = slots.table();
  const GcraFull full;
  const PackedKey key(kSeed, 0, "contested");
  const std::uint32_t home = t.home(key.hash);
  const pid_t child = die_after(
      [&] {
        SlotHead& h = t.head(home);
        std::uint64_t zero = 0;
        h.owner.compare_exchange_strong(zero, self_token());
        h.word.store(Word::make(1, 0));
        h.meta.store(Meta::make(kClaiming, key.len, key.policy, key.fp, 1));  // then dies
      },
      GetParam());
  ClaimEvents ev;
  SlotRef ref;
  ASSERT_EQ(t.claim(key, 10, 10, full, kTimeout, &ref, &ev), Table::ClaimResult::kClaimed);
  EXPECT_EQ(ev.repairs, 1u);
  EXPECT_EQ(t.head(home).owner.load(), 0u);
  SlotRef found;
  ASSERT_TRUE(t.find(key, &found));
  EXPECT_EQ(found.index, ref.index);
  if (!GetParam()) ::waitpid(child, nullptr, 0);
}

TEST_P(DeadClaimer, ReclaimCommittedByADeadProcessFreesTheSlot) {
  SharedSlots slots(16, 1);
  Table t = slots.table();
  const GcraFull full;
  ClaimEvents ev;
  const PackedKey old_key(kSeed, 0, "old");
  SlotRef ref;
  ASSERT_EQ(t.claim(old_key, 5, 5, full, kTimeout, &ref, &ev), Table::ClaimResult::kClaimed);
  const pid_t child = die_after(
      [&] {
        SlotHead& h = t.head(ref.index);
        std::uint64_t zero = 0;
        h.owner.compare_exchange_strong(zero, self_token());
        std::uint64_t w = h.word.load();
        h.word.compare_exchange_strong(
            w, Word::make(Word::version(w) + 1, Word::payload(w)));  // commit, then die
      },
      GetParam());
  SlotRef probe;
  EXPECT_FALSE(t.find(old_key, &probe)) << "a committed reclaim must hide the old key";
  const PackedKey new_key = same_home_as(t, old_key, "new-");
  ASSERT_EQ(t.claim(new_key, 50, 50, full, kTimeout, &ref, &ev), Table::ClaimResult::kClaimed);
  EXPECT_EQ(ev.repairs, 1u);
  EXPECT_TRUE(t.find(new_key, &probe));
  if (!GetParam()) ::waitpid(child, nullptr, 0);
}

TEST_P(DeadClaimer, TokenLeftOnAPublishedSlotKeepsTheKey) {
  SharedSlots slots(16, 1);
  Table t = slots.table();
  const GcraFull full;
  ClaimEvents ev;
  const PackedKey key(kSeed, 0, "published");
  SlotRef ref;
  ASSERT_EQ(t.claim(key, 5, 5, full, kTimeout, &ref, &ev), Table::ClaimResult::kClaimed);
  const pid_t child = die_after(
      [&] {
        std::uint64_t zero = 0;
        t.head(ref.index).owner.compare_exchange_strong(zero,
                                                        self_token());  // took the token, then died
      },
      GetParam());
  EXPECT_TRUE(t.repair_if_dead(ref.index, &ev));
  SlotRef probe;
  EXPECT_TRUE(t.find(key, &probe));
  EXPECT_EQ(t.head(ref.index).owner.load(), 0u);
  if (!GetParam()) ::waitpid(child, nullptr, 0);
}

INSTANTIATE_TEST_SUITE_P(ReapedOrZombie, DeadClaimer, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Reaped" : "Zombie"; });

TEST(TableProtocol, LiveClaimerIsWaitedForThenContended) {
  SharedSlots slots(16, 4);
  Table t = slots.table();
  const GcraFull full;
  const PackedKey key(kSeed, 0, "stalled");
  const std::uint32_t home = t.home(key.hash);
  // This process itself holds the claim: alive, never finishing.
  t.head(home).owner.store(self_token());
  t.head(home).meta.store(Meta::make(kClaiming, key.len, key.policy, key.fp, 0));
  ClaimEvents ev;
  SlotRef ref;
  EXPECT_EQ(t.claim(key, 10, 10, full, 20'000'000, &ref, &ev), Table::ClaimResult::kContended);
  EXPECT_EQ(ev.repairs, 0u);
}

TEST(ProcessToken, DeadAndReusedPidsAreDetected) {
  EXPECT_FALSE(token_is_dead(self_token()));
  const pid_t child = die_after([] {}, true);
  EXPECT_TRUE(token_is_dead(static_cast<ProcessToken>(child) << 32 | 1));
  // Our own pid with another start time: a reused pid.
  const ProcessToken me = self_token();
  EXPECT_TRUE(token_is_dead((me & ~0xFFFFFFFFULL) | ((me + 1) & 0xFFFFFFFFULL)));
}

}  // namespace
}  // namespace shmlimit::detail
