// The recent-denials ring (src/table/denials.hpp): wrap-around, the count of
// entries lost to overflow, torn and abandoned entries crafted by hand, a
// writer that must not mix its fields with an older writer's, key
// truncation and hostile fields; the fold of a flood (DenialFold) as a
// table; then through the Limiter: only denials write, with what they were
// denied for, a flood folded with its count.
#include "table/denials.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "table/table.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using detail::DenialRing;
using detail::kDenialKeyBytes;
using detail::kDenialRingEntries;

// A ring in ordinary memory, zero-filled like a fresh segment.
struct RingMemory {
  detail::DenialRingHead head{};
  std::array<detail::DenialEntry, kDenialRingEntries> entries{};
  DenialRing ring() { return DenialRing(&head, entries.data()); }
};

std::unique_ptr<RingMemory> fresh_ring() { return std::make_unique<RingMemory>(); }

std::string key_of(std::uint64_t i) { return "key-" + std::to_string(i); }

void record_n(DenialRing ring, std::uint64_t from, std::uint64_t n) {
  for (std::uint64_t i = from; i < from + n; ++i) {
    ring.record(static_cast<std::int64_t>(1000 + i), static_cast<std::uint32_t>(i % 7), Reason::kOk,
                key_of(i), i + 1, Nanos(static_cast<std::int64_t>(10 * i)));
  }
}

// The writer stores only the words its key fills: a short key written over
// a long one must not read back with the long key's bytes after it.
TEST(DenialRing, AShortKeyOverALongOneReadsBackWithoutTheOldBytes) {
  auto mem = fresh_ring();
  DenialRing ring = mem->ring();
  const std::string long_key(kDenialKeyBytes + 20, 'x');
  ring.record(1, 0, Reason::kOk, long_key, 1, Nanos(0));
  record_n(ring, 1, kDenialRingEntries - 1);  // the next ticket lands on the first entry again
  ring.record(2, 0, Reason::kOk, "abc", 1, Nanos(0));
  const detail::DenialRead r = ring.read(kDenialRingEntries);
  ASSERT_EQ(r.records.size(), 1u);
  const detail::DenialRecord& d = r.records[0];
  EXPECT_EQ(d.key_len, 3u);
  EXPECT_EQ(std::string(d.key, 3), "abc");
  for (std::uint32_t i = 3; i < kDenialKeyBytes; ++i) EXPECT_EQ(d.key[i], '\0') << "byte " << i;
}

TEST(DenialRing, ReadsBackEveryFieldOfEachDenialInOrder) {
  auto mem = fresh_ring();
  record_n(mem->ring(), 0, 10);
  const detail::DenialRead r = mem->ring().read(0);
  EXPECT_EQ(r.lost, 0u);
  EXPECT_EQ(r.next, 10u);
  ASSERT_EQ(r.records.size(), 10u);
  for (std::uint64_t i = 0; i < 10; ++i) {
    const detail::DenialRecord& d = r.records[i];
    EXPECT_EQ(d.ticket, i);
    EXPECT_EQ(d.time_ns, static_cast<std::int64_t>(1000 + i));
    EXPECT_EQ(d.policy, i % 7);
    EXPECT_EQ(d.cost, i + 1);
    EXPECT_EQ(d.retry_after_ns, 10 * i);
    EXPECT_EQ(d.pid, static_cast<std::uint32_t>(::getpid()));
    EXPECT_EQ(std::string(d.key, d.key_len), key_of(i));
  }
}

TEST(DenialRing, CursorReadsOnlyWhatCameAfterIt) {
  auto mem = fresh_ring();
  record_n(mem->ring(), 0, 10);
  const auto first = mem->ring().read(0);
  record_n(mem->ring(), 10, 5);
  const auto second = mem->ring().read(first.next);
  EXPECT_EQ(second.lost, 0u);
  ASSERT_EQ(second.records.size(), 5u);
  EXPECT_EQ(second.records.front().ticket, 10u);
  EXPECT_EQ(second.next, 15u);
  // A cursor beyond the newest ticket reads nothing and returns the current one.
  const auto none = mem->ring().read(UINT64_MAX);
  EXPECT_TRUE(none.records.empty());
  EXPECT_EQ(none.lost, 0u);
  EXPECT_EQ(none.next, 15u);
}

// Table: (denials written, reader's cursor) -> (returned, lost, oldest ticket returned).
struct WrapCase {
  std::uint64_t written;
  std::uint64_t cursor;
  std::uint64_t returned;
  std::uint64_t lost;
  std::uint64_t oldest;
};

class DenialRingWrap : public ::testing::TestWithParam<WrapCase> {};

TEST_P(DenialRingWrap, KeepsTheNewestAndCountsTheOverwrittenSinceTheCursor) {
  const WrapCase c = GetParam();
  auto mem = fresh_ring();
  record_n(mem->ring(), 0, c.written);
  const auto r = mem->ring().read(c.cursor);
  EXPECT_EQ(r.records.size(), c.returned);
  EXPECT_EQ(r.lost, c.lost);
  EXPECT_EQ(r.next, c.written);
  ASSERT_FALSE(r.records.empty());
  EXPECT_EQ(r.records.front().ticket, c.oldest);
  EXPECT_EQ(r.records.back().ticket, c.written - 1);
  for (const auto& d : r.records) EXPECT_EQ(std::string(d.key, d.key_len), key_of(d.ticket));
}

constexpr std::uint64_t N = kDenialRingEntries;
INSTANTIATE_TEST_SUITE_P(
    Table, DenialRingWrap,
    ::testing::Values(WrapCase{N, 0, N, 0, 0},                   // exactly full
                      WrapCase{N + 1, 0, N, 1, 1},               // the oldest dropped
                      WrapCase{1500, 0, N, 1500 - N, 1500 - N},  // wrapped once
                      WrapCase{3 * N + 5, 0, N, 2 * N + 5, 2 * N + 5},
                      WrapCase{2000, 100, N, 2000 - N - 100, 2000 - N},  // cursor behind
                      WrapCase{2000, 1500, 500, 0, 1500}));              // cursor within reach

TEST(DenialRing, AnEntryStillBeingWrittenOrOverwrittenIsLostNotReturned) {
  auto mem = fresh_ring();
  record_n(mem->ring(), 0, 4);
  // Ticket 1 "in progress" (its writer died after marking it), ticket 2
  // already showing a later ticket: neither is returned, both are lost.
  mem->entries[1].seq.store(detail::denial_seq_writing(1, 1));
  mem->entries[2].seq.store(detail::denial_seq_complete(2 + N));
  const auto r = mem->ring().read(0);
  EXPECT_EQ(r.lost, 2u);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_EQ(r.records[0].ticket, 0u);
  EXPECT_EQ(r.records[1].ticket, 3u);
}

std::uint32_t dead_pid() { return static_cast<std::uint32_t>(unit::dead_pid()); }

// A writer preempted for any number of laps is still alive and will store
// its fields: a later ticket must not take its entry, or the two records'
// fields mix under a complete seq (seen as a torn entry under ThreadSanitizer).
TEST(DenialRing, WriterNeverTakesOverTheUnfinishedEntryOfALiveWriterHoweverOld) {
  for (const std::uint32_t live :
       {static_cast<std::uint32_t>(::getpid()), static_cast<std::uint32_t>(::getppid())}) {
    for (const std::uint64_t laps : {1, 2, 1000}) {
      auto mem = fresh_ring();
      const std::uint64_t late = 5 + laps * N;
      mem->entries[5].seq.store(detail::denial_seq_writing(5, live));
      mem->head.next.store(late);
      mem->ring().record(1, 0, Reason::kOk, "late", 1, Nanos(1));  // ticket `late`, same entry
      EXPECT_EQ(mem->entries[5].seq.load(), detail::denial_seq_writing(5, live))
          << "must not touch an entry a live writer holds (pid " << live << ", " << laps
          << " laps)";
      const auto r = mem->ring().read(late);
      EXPECT_TRUE(r.records.empty());
      EXPECT_EQ(r.lost, 1u);
    }
  }
}

TEST(DenialRing, WriterTakesOverAnEntryWhoseWriterDied) {
  auto mem = fresh_ring();
  mem->entries[5].seq.store(detail::denial_seq_writing(5, dead_pid()));  // died mid-entry
  mem->head.next.store(5 + N);
  mem->ring().record(7, 3, Reason::kOk, "after", 2, Nanos(9));
  const auto r = mem->ring().read(5 + N);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(std::string(r.records[0].key, r.records[0].key_len), "after");
  EXPECT_EQ(r.records[0].pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(r.lost, 0u);
}

TEST(DenialRing, LappedWriterNeverTakesOverANewerUnfinishedTicket) {
  auto mem = fresh_ring();
  mem->entries[3].seq.store(
      detail::denial_seq_writing(3 + N, dead_pid()));  // ticket 3 + N, writer dead
  record_n(mem->ring(), 0, 4);  // tickets 0..3: ticket 3 is older than the one in its entry
  EXPECT_EQ(detail::denial_seq_ticket(mem->entries[3].seq.load()), 3 + N);
}

TEST(DenialRing, LappedWriterNeverOverwritesANewerTicket) {
  auto mem = fresh_ring();
  mem->entries[3].seq.store(2 * (3 + N) + 2);  // ticket 3 + N is already complete there
  mem->ring().record(1, 0, Reason::kOk, "old", 1, Nanos(1));  // tickets 0..3 in turn
  mem->ring().record(1, 0, Reason::kOk, "old", 1, Nanos(1));
  mem->ring().record(1, 0, Reason::kOk, "old", 1, Nanos(1));
  mem->ring().record(1, 0, Reason::kOk, "old", 1, Nanos(1));
  EXPECT_EQ(mem->entries[3].seq.load(), 2u * (3 + N) + 2);
}

TEST(DenialRing, LongKeysKeepTheirFirstBytesAndRealLength) {
  auto mem = fresh_ring();
  const std::string key(200, 'k');
  mem->ring().record(1, 0, Reason::kOk, key, 1, Nanos(1));
  const auto r = mem->ring().read(0);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].key_len, 200u);
  EXPECT_EQ(std::string(r.records[0].key, kDenialKeyBytes), key.substr(0, kDenialKeyBytes));
}

TEST(DenialRing, HostileFieldsAreClampedByTheReader) {
  auto mem = fresh_ring();
  record_n(mem->ring(), 0, 1);
  // A complete-looking entry with an absurd time, retry-after and key length.
  mem->entries[0].time_ns.store(~0ULL);
  mem->entries[0].retry_after_ns.store(~0ULL);
  mem->entries[0].info.store(0xFFFFFFFFFFFFFFFFULL);
  mem->entries[0].repeats.store(~0ULL);
  const auto r = mem->ring().read(0);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_LE(r.records[0].time_ns, static_cast<std::int64_t>(detail::kClockHorizonNs));
  EXPECT_EQ(r.records[0].retry_after_ns, static_cast<std::uint64_t>(INT64_MAX));
  EXPECT_EQ(r.records[0].key_len, 0xFFFFu);  // reported as stored; copies stop at kDenialKeyBytes
  EXPECT_EQ(r.records[0].repeats, detail::kDenialMaxRepeats);  // sums of 1024 entries cannot wrap
}

TEST(DenialRing, ConcurrentWritersNeverShowAReaderATornEntryAndEveryTicketIsAccounted) {
  auto mem = fresh_ring();
  constexpr std::uint64_t kThreads = 4, kEach = 20000;
  std::atomic<int> done{0};
  std::vector<std::thread> writers;
  for (std::uint64_t w = 0; w < kThreads; ++w) {
    writers.emplace_back([&, w] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        const std::uint64_t v = w * 1'000'000 + i;  // every field of one record carries v
        mem->ring().record(static_cast<std::int64_t>(v), 0, Reason::kOk, key_of(v), v,
                           Nanos(static_cast<std::int64_t>(v)));
      }
      done.fetch_add(1);
    });
  }
  std::uint64_t cursor = 0, returned = 0, lost = 0;
  const auto drain = [&] {
    const auto r = mem->ring().read(cursor);
    for (const auto& d : r.records) {
      ASSERT_EQ(d.cost, static_cast<std::uint64_t>(d.time_ns)) << "torn entry " << d.ticket;
      ASSERT_EQ(d.retry_after_ns, d.cost) << "torn entry " << d.ticket;
      ASSERT_EQ(std::string(d.key, d.key_len), key_of(d.cost)) << "torn entry " << d.ticket;
    }
    returned += r.records.size();
    lost += r.lost;
    cursor = r.next;
  };
  while (done.load() < static_cast<int>(kThreads)) drain();
  for (auto& t : writers) t.join();
  drain();
  EXPECT_EQ(cursor, kThreads * kEach);
  EXPECT_EQ(returned + lost, kThreads * kEach)
      << "each ticket is returned once or counted lost once";
}

// ---- the fold of a flood (DenialFold): a function of its state and time ------

struct FoldCase {
  const char* what;
  std::uint64_t handle;
  std::uint32_t policy;
  const char* key;
  std::int64_t t_ms;
  // expected
  bool folded;
  std::uint64_t repeats;
  bool flush;
  const char* flush_key;
  std::uint64_t flush_repeats;
};

TEST(DenialFold, FoldsRepeatsWithinTheWindowAndCarriesTheirCount) {
  // One thread's denials in order; each row is what step() (after absorb())
  // tells the caller to write.
  const FoldCase rows[] = {
      {"first denial of a: recorded", 1, 0, "a", 0, false, 0, false, "", 0},
      {"a again at once: folded", 1, 0, "a", 1, true, 0, false, "", 0},
      {"a again within 100 ms: folded", 1, 0, "a", 99, true, 0, false, "", 0},
      {"a after the window: recorded, standing for the 2 folded", 1, 0, "a", 100, false, 2, false,
       "", 0},
      {"a folded again", 1, 0, "a", 150, true, 0, false, "", 0},
      {"a folded again", 1, 0, "a", 160, true, 0, false, "", 0},
      {"another key: a's last folded one first (1 more behind it), then b", 1, 0, "b", 170, false,
       0, true, "a", 1},
      {"b on another policy is another key", 1, 1, "b", 171, false, 0, false, "", 0},
      {"the same key on another handle is another key", 2, 1, "b", 172, false, 0, false, "", 0},
      {"b on handle 2 again: folded", 2, 1, "b", 173, true, 0, false, "", 0},
      {"an earlier clock reading than the record: recorded, with the count", 2, 1, "b", 10, false,
       1, false, "", 0},
      {"a key longer than 16 bytes: always recorded", 2, 1, "seventeen-bytes-k", 11, false, 0,
       false, "", 0},
      {"and again: still recorded", 2, 1, "seventeen-bytes-k", 12, false, 0, false, "", 0},
      {"16 bytes: folded like any short key (recorded first)", 2, 1, "sixteen-bytes-ky", 13, false,
       0, false, "", 0},
      {"16 bytes again: folded", 2, 1, "sixteen-bytes-ky", 14, true, 0, false, "", 0},
      {"a prefix of it is another key", 2, 1, "sixteen-bytes-k", 15, false, 0, true,
       "sixteen-bytes-ky", 0},
  };
  detail::DenialFold f;
  // The hot path's fold of the same denials: absorb_words() of the key as
  // a ShortKey packs it, for keys the hot path takes (up to 16 bytes).
  detail::DenialFold packed;
  for (const FoldCase& c : rows) {
    SCOPED_TRACE(c.what);
    const detail::DenialFold::Denial d{c.t_ms * 1'000'000, c.policy, Reason::kOk, 1, Nanos(7)};
    const bool absorbed =
        f.absorb(c.handle, c.key, d.time_ns, d.policy, d.reason, d.cost, d.retry_after);
    EXPECT_EQ(absorbed, c.folded);
    const std::string_view key = c.key;
    if (key.size() <= 16) {
      const detail::ShortKey pk(0x5eed, c.policy, key);
      const bool absorbed_packed =
          packed.absorb_words(c.handle, pk.len, pk.words[0], pk.words[1], d.time_ns, d.policy,
                              d.reason, d.cost, d.retry_after);
      EXPECT_EQ(absorbed_packed, c.folded) << "absorb_words() folds exactly as absorb()";
      if (!absorbed_packed) (void)packed.step(c.handle, c.key, d);
    } else {
      (void)packed.step(c.handle, c.key, d);
    }
    if (absorbed) continue;
    const detail::DenialFold::Step s = f.step(c.handle, c.key, d);
    EXPECT_FALSE(s.folded) << "absorb() decides every fold step() would";
    EXPECT_EQ(s.repeats, c.repeats);
    EXPECT_EQ(s.has_flush, c.flush);
    if (s.has_flush) {
      char bytes[16];
      std::memcpy(bytes, s.flush_words, sizeof bytes);
      EXPECT_EQ(std::string(bytes, s.flush_len), c.flush_key);
      EXPECT_EQ(s.flush_repeats, c.flush_repeats);
    }
  }
}

TEST(DenialFold, AShortKeysPackedWordsAreZeroPaddedWhateverTheyHeldBefore) {
  // absorb_words() compares a ShortKey's two words with the fold's: both
  // words must be defined for every length, the second 0 up to 8 bytes.
  const std::string bytes = "0123456789abcdef";
  for (std::uint32_t n = 0; n <= 16; ++n) {
    SCOPED_TRACE(n);
    std::uint64_t w0 = ~std::uint64_t{0}, w1 = ~std::uint64_t{0};
    detail::load_words_upto16(bytes.data(), n, &w0, &w1);
    std::uint64_t expect[2] = {0, 0};
    std::memcpy(expect, bytes.data(), n);
    EXPECT_EQ(w0, expect[0]);
    EXPECT_EQ(w1, expect[1]);
  }
}

TEST(DenialFold, AFlushedRecordKeepsTheLastFoldedDenialsFields) {
  detail::DenialFold f;
  EXPECT_FALSE(f.step(1, "k", {0, 3, Reason::kOk, 1, Nanos(10)}).folded);
  EXPECT_TRUE(f.absorb(1, "k", 5, 3, Reason::kCostTooHigh, 9, Nanos::max()));
  const detail::DenialFold::Step s = f.step(1, "other", {6, 3, Reason::kOk, 1, Nanos(10)});
  ASSERT_TRUE(s.has_flush);
  EXPECT_EQ(s.flush.time_ns, 5);
  EXPECT_EQ(s.flush.policy, 3u);
  EXPECT_EQ(s.flush.reason, Reason::kCostTooHigh);
  EXPECT_EQ(s.flush.cost, 9u);
  EXPECT_EQ(s.flush.retry_after, Nanos::max());
  EXPECT_EQ(s.flush_repeats, 0u);
}

// ---- through the Limiter -----------------------------------------------------

class DenialsLimiterTest : public ::testing::Test {
 protected:
  DenialsLimiterTest() : limiter_(Limiter::create(unit::small_options(name_.str()))) {
    PolicySpec s;
    s.name = "api";
    s.rate = Rate{2, std::chrono::hours(1)};
    api_ = limiter_.add_policy(s);
  }
  unit::ScopedSegmentName name_{"denials"};
  Limiter limiter_;
  PolicyId api_;
};

TEST_F(DenialsLimiterTest, RecordsEachDeniedAcquireWithPolicyKeyCostAndRetryAfter) {
  const Nanos t{5'000'000'000};
  EXPECT_TRUE(limiter_.acquire_at(api_, "alice", 2, t).allowed);
  const Decision d = limiter_.acquire_at(api_, "alice", 1, t);
  ASSERT_FALSE(d.allowed);
  const RecentDenials r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 1u);
  const DenialView& v = r.denials[0];
  EXPECT_EQ(v.policy, "api");
  EXPECT_EQ(v.key, "alice");
  EXPECT_EQ(v.key_length, 5u);
  EXPECT_EQ(v.cost, 1u);
  EXPECT_EQ(v.at, t);
  EXPECT_EQ(v.retry_after, d.retry_after);
  EXPECT_EQ(v.reason, Reason::kOk);
  EXPECT_EQ(v.pid, ::getpid());
  EXPECT_EQ(r.next_cursor, 1u);
  EXPECT_EQ(r.lost, 0u);
}

TEST_F(DenialsLimiterTest, AdmitsPeeksAndReadOnlyHandlesNeverWriteTheRing) {
  for (int i = 0; i < 50; ++i) limiter_.acquire(api_, "key-" + std::to_string(i));  // 50 admits
  limiter_.acquire(api_, "k");
  limiter_.acquire(api_, "k");
  EXPECT_FALSE(limiter_.peek(api_, "k").allowed);  // denied peek: not recorded
  Options ro = unit::small_options(name_.str());
  ro.read_only = true;
  Limiter reader = Limiter::open(ro);
  EXPECT_FALSE(reader.acquire(api_, "k").allowed);  // read-only: a peek
  EXPECT_EQ(limiter_.recent_denials().next_cursor, 0u);
  EXPECT_FALSE(limiter_.acquire(api_, "k").allowed);
  EXPECT_EQ(reader.recent_denials().next_cursor, 1u);
}

TEST_F(DenialsLimiterTest, MultiLimitDenialRecordsTheLimitThatDenied) {
  PolicySpec s;
  s.name = "tight";
  s.rate = Rate{1, std::chrono::hours(1)};
  const PolicyId tight = limiter_.add_policy(s);
  const Request both[] = {{api_, "u", 1}, {tight, "u", 1}};
  const Nanos t{1'000'000'000};
  EXPECT_TRUE(limiter_.acquire_many_at(both, t).allowed);
  EXPECT_FALSE(limiter_.acquire_many_at(both, t).allowed);
  const RecentDenials r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 1u);
  EXPECT_EQ(r.denials[0].policy, "tight");
  EXPECT_EQ(r.denials[0].key, "u");
}

TEST_F(DenialsLimiterTest, DeniedLeaseIsRecordedLikeADeniedAcquire) {
  PolicySpec s;
  s.name = "inflight";
  s.algorithm = Algorithm::kConcurrency;
  s.rate = Rate{2, Nanos(0)};
  const PolicyId inflight = limiter_.add_policy(s);
  Lease held = limiter_.lease(inflight, "worker", 2);
  ASSERT_TRUE(held.held());
  EXPECT_EQ(limiter_.recent_denials().next_cursor, 0u);  // a granted lease is not recorded
  const Lease refused = limiter_.lease(inflight, "worker", 1);
  ASSERT_FALSE(refused.decision().allowed);
  const RecentDenials r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 1u);
  EXPECT_EQ(r.denials[0].policy, "inflight");
  EXPECT_EQ(r.denials[0].key, "worker");
  EXPECT_EQ(r.denials[0].cost, 1u);
  EXPECT_EQ(r.denials[0].pid, ::getpid());
  EXPECT_FALSE(limiter_.lease(api_, "worker", 1)
                   .decision()
                   .allowed);  // not a lease policy: unknown, not recorded
  EXPECT_EQ(limiter_.recent_denials().next_cursor, 1u);
}

// Every denial made is in the ring once, as an entry or in an entry's
// repeats, however the flood was folded (the last key's pending count aside).
std::uint64_t denials_shown(const RecentDenials& r) {
  std::uint64_t n = 0;
  for (const DenialView& d : r.denials) n += 1 + d.repeats;
  return n;
}

TEST_F(DenialsLimiterTest, AFloodOfOneKeyIsFoldedIntoAnEntryPerWindowThatCountsIt) {
  const Nanos t0{5'000'000'000};
  ASSERT_TRUE(limiter_.acquire_at(api_, "flood", 2, t0).allowed);
  for (int i = 0; i < 50; ++i) {  // 50 denials within 50 us
    ASSERT_FALSE(limiter_.acquire_at(api_, "flood", 1, t0 + Nanos(i * 1000)).allowed);
  }
  RecentDenials r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 1u) << "one entry for the flood so far";
  EXPECT_EQ(r.denials[0].repeats, 0u);
  const Nanos later = t0 + std::chrono::milliseconds(100);
  ASSERT_FALSE(limiter_.acquire_at(api_, "flood", 1, later).allowed);
  r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 2u);
  EXPECT_EQ(r.denials[1].key, "flood");
  EXPECT_EQ(r.denials[1].at, later);
  EXPECT_EQ(r.denials[1].repeats, 49u) << "the entry stands for the 49 folded before it";
  EXPECT_EQ(denials_shown(r), 51u);
  // The exact totals count every one.
  const std::vector<PolicyCounters> totals = limiter_.counters();
  ASSERT_FALSE(totals.empty());
  EXPECT_EQ(totals[api_.index].denied, 51u);
}

TEST_F(DenialsLimiterTest, AnotherKeyFirstRecordsTheLastFoldedDenialOfThePreviousOne) {
  const Nanos t0{5'000'000'000};
  ASSERT_TRUE(limiter_.acquire_at(api_, "a", 2, t0).allowed);
  ASSERT_TRUE(limiter_.acquire_at(api_, "b", 2, t0).allowed);
  for (int i = 0; i < 5; ++i)
    ASSERT_FALSE(limiter_.acquire_at(api_, "a", 1, t0 + Nanos(i)).allowed);
  ASSERT_FALSE(limiter_.acquire_at(api_, "b", 3, t0 + Nanos(10)).allowed);
  const RecentDenials r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 3u);
  EXPECT_EQ(r.denials[0].key, "a");
  EXPECT_EQ(r.denials[0].repeats, 0u);
  EXPECT_EQ(r.denials[1].key, "a") << "the flushed entry of a";
  EXPECT_EQ(r.denials[1].at, t0 + Nanos(4)) << "as the last folded denial of a";
  EXPECT_EQ(r.denials[1].repeats, 3u);
  EXPECT_EQ(r.denials[2].key, "b");
  EXPECT_EQ(r.denials[2].cost, 3u);
  EXPECT_EQ(denials_shown(r), 6u);
}

TEST_F(DenialsLimiterTest, AForkedChildRecordsItsOwnFirstDenialOfItsParentsKey) {
  const Nanos t0{5'000'000'000};
  ASSERT_TRUE(limiter_.acquire_at(api_, "shared", 2, t0).allowed);
  ASSERT_FALSE(limiter_.acquire_at(api_, "shared", 1, t0).allowed);  // the parent's entry
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Within the parent's window: the child's fold starts afresh.
    const bool denied = !limiter_.acquire_at(api_, "shared", 1, t0 + Nanos(1)).allowed;
    ::_exit(denied ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const RecentDenials r = limiter_.recent_denials();
  ASSERT_EQ(r.denials.size(), 2u);
  EXPECT_EQ(r.denials[0].pid, ::getpid());
  EXPECT_EQ(r.denials[1].pid, child);
}

TEST_F(DenialsLimiterTest, AFloodsPerKeyDenialsReachOtherProcessesWithinOneBatchAndTotalsAtOnce) {
  // A flood's repeated refusals write no shared line: their per-key count
  // (dump's DENIED) is added in batches of kDenialPostBatch, so another
  // process sees it at most a batch behind, while the exact totals (the
  // counter blocks) have every one at once, and the flooding thread's own
  // dump has every one too.
  const Nanos t0{5'000'000'000};  // an injected clock: all within one fold window
  ASSERT_TRUE(limiter_.acquire_at(api_, "flood", 2, t0).allowed);
  constexpr std::uint64_t kDenials = 150;
  for (std::uint64_t i = 0; i < kDenials; ++i) {
    ASSERT_FALSE(
        limiter_.acquire_at(api_, "flood", 1, t0 + Nanos(static_cast<std::int64_t>(i))).allowed);
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    std::uint64_t seen[2] = {0, 0};
    for (const BucketView& b : limiter_.dump())
      if (b.key == "flood") seen[0] = b.denied;
    seen[1] = limiter_.counters()[api_.index].denied;
    const bool ok = ::write(fds[1], seen, sizeof seen) == static_cast<ssize_t>(sizeof seen);
    ::_exit(ok ? 0 : 1);
  }
  ::close(fds[1]);
  std::uint64_t seen[2] = {0, 0};
  const ssize_t n = ::read(fds[0], seen, sizeof seen);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(n, static_cast<ssize_t>(sizeof seen));
  EXPECT_GE(seen[0] + detail::kDenialPostBatch, kDenials + 1) << "at most a batch behind";
  EXPECT_LT(seen[0], kDenials) << "the last batch is still this thread's";
  EXPECT_EQ(seen[1], kDenials) << "the exact totals have every refusal";
  const std::vector<BucketView> mine = limiter_.dump();
  const auto it =
      std::find_if(mine.begin(), mine.end(), [](const BucketView& b) { return b.key == "flood"; });
  ASSERT_NE(it, mine.end());
  EXPECT_EQ(it->denied, kDenials) << "a thread reads its own refusals exactly";
}
}  // namespace
}  // namespace shmlimit
