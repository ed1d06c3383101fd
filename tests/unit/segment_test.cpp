// The named segment: lifecycle through the public Limiter API, options and
// names, permissions, and refusal of foreign, half-initialised, mismatched,
// truncated and corrupt segments (bytes written straight into /dev/shm);
// detail::Segment::validate on arbitrary bytes.
#include "segment/segment.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "segment/layout.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using unit::catch_error;
using unit::ScopedSegmentName;
using unit::small_options;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

PolicySpec spec(const std::string& name, std::uint64_t count, Nanos period,
                std::uint64_t burst = 0) {
  PolicySpec s;
  s.name = name;
  s.rate = Rate{count, period};
  s.burst = burst;
  return s;
}

// ---------------------------------------------------------------------------
// Lifecycle.
TEST(SegmentLifecycle, CreateThenOpenSeeOnePolicyTableAndOneBucket) {
  ScopedSegmentName name;
  Limiter a = Limiter::create(small_options(name.str()));
  const PolicyId id = a.add_policy(spec("api", 2, std::chrono::hours(1)));
  Limiter b = Limiter::open(small_options(name.str()));
  const auto found = b.find_policy("api");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->index, id.index);
  EXPECT_EQ(a.name(), name.str());
  EXPECT_EQ(b.name(), name.str());

  const Nanos t(1'000'000'000);
  EXPECT_TRUE(a.acquire_at(id, "k", 1, t).allowed);
  EXPECT_TRUE(b.acquire_at(*found, "k", 1, t).allowed);
  // Both handles charged one bucket of 2.
  EXPECT_FALSE(a.acquire_at(id, "k", 1, t).allowed);
  EXPECT_FALSE(b.acquire_at(*found, "k", 1, t).allowed);
}

TEST(SegmentLifecycle, OpenOrCreateCreatesWhenMissingAndOpensWhenPresent) {
  ScopedSegmentName name;
  Limiter first = Limiter::open_or_create(small_options(name.str()));
  EXPECT_EQ(first.stats().used, 0u);
  EXPECT_TRUE(first.policies().empty());
  const PolicyId id = first.add_policy(spec("api", 1, std::chrono::hours(1)));
  ASSERT_TRUE(first.acquire_at(id, "k", 1, Nanos(1000)).allowed);

  Limiter second = Limiter::open_or_create(small_options(name.str()));
  ASSERT_EQ(second.policies().size(), 1u);
  EXPECT_EQ(second.policies()[0].spec.name, "api");
  EXPECT_EQ(second.stats().used, 1u);
  EXPECT_FALSE(second.acquire_at(id, "k", 1, Nanos(1000)).allowed);
}

TEST(SegmentLifecycle, RemoveReturnsTrueThenFalseAndOpenMappingsStayValid) {
  ScopedSegmentName name;
  Limiter l = Limiter::create(small_options(name.str()));
  const PolicyId id = l.add_policy(spec("api", 1, std::chrono::hours(1)));
  EXPECT_TRUE(Limiter::remove(name.str()));
  EXPECT_FALSE(Limiter::remove(name.str()));
  const auto err = catch_error([&] { Limiter::open(small_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kNotFound);
  // The handle keeps its mapping after the name is gone.
  EXPECT_TRUE(l.acquire_at(id, "k", 1, Nanos(1000)).allowed);
  EXPECT_FALSE(l.acquire_at(id, "k", 1, Nanos(1000)).allowed);
  EXPECT_EQ(l.stats().used, 1u);
  // The name can be created afresh, as a new, empty segment.
  Limiter fresh = Limiter::create(small_options(name.str()));
  EXPECT_TRUE(fresh.policies().empty());
}

TEST(SegmentLifecycle, CreateTwiceIsExistsNamingTheSegment) {
  ScopedSegmentName name;
  Limiter l = Limiter::create(small_options(name.str()));
  const auto err = catch_error([&] { Limiter::create(small_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kExists);
  EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
}

TEST(SegmentLifecycle, OpenMissingIsNotFoundNamingTheSegment) {
  ScopedSegmentName name;
  const auto err = catch_error([&] { Limiter::open(small_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kNotFound);
  EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
}

TEST(SegmentLifecycle, LimiterIsAMoveOnlyHandle) {
  static_assert(!std::is_copy_constructible_v<Limiter>);
  static_assert(!std::is_copy_assignable_v<Limiter>);
  static_assert(std::is_nothrow_move_constructible_v<Limiter>);
  static_assert(std::is_nothrow_move_assignable_v<Limiter>);
  ScopedSegmentName name;
  Limiter a = Limiter::create(small_options(name.str()));
  const PolicyId id = a.add_policy(spec("api", 1, std::chrono::hours(1)));
  Limiter b = std::move(a);
  EXPECT_EQ(b.name(), name.str());
  EXPECT_TRUE(b.acquire_at(id, "k", 1, Nanos(1000)).allowed);
  EXPECT_FALSE(b.acquire_at(id, "k", 1, Nanos(1000)).allowed);
}

// ---------------------------------------------------------------------------
// Options.
TEST(SegmentOptions, DefaultsAreTheDocumentedOnes) {
  const Options o;
  EXPECT_TRUE(o.name.empty());
  EXPECT_EQ(o.capacity, 65536u);
  EXPECT_EQ(o.mode, static_cast<mode_t>(0600));
  EXPECT_EQ(o.slot_bytes, 128u);
  EXPECT_EQ(o.max_probe, 32u);
  EXPECT_EQ(o.open_timeout, std::chrono::milliseconds(2000));
  EXPECT_EQ(o.claim_timeout, std::chrono::milliseconds(100));
  EXPECT_FALSE(o.read_only);
}

TEST(SegmentOptions, DefaultOptionsCreateTheDocumentedGeometry) {
  ScopedSegmentName name;
  Options o;
  o.name = name.str();
  Limiter l = Limiter::create(o);
  const Stats s = l.stats();
  EXPECT_EQ(s.capacity, 65536u);
  EXPECT_EQ(s.slot_bytes, 128u);
  EXPECT_EQ(s.max_key_bytes, 88u);  // slot_bytes - 40
  EXPECT_EQ(l.max_key_bytes(), 88u);
  EXPECT_EQ(s.max_probe, 32u);
  EXPECT_EQ(s.layout_version, detail::kLayoutVersion);
  EXPECT_EQ(s.used, 0u);
  EXPECT_EQ(s.empty, 65536u);
  EXPECT_FALSE(l.read_only());
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), s.segment_bytes);
}

struct CapacityCase {
  std::uint32_t asked;
  std::uint32_t expected;
};
class SegmentCapacity : public ::testing::TestWithParam<CapacityCase> {};

TEST_P(SegmentCapacity, IsRoundedUpToAPowerOfTwo) {
  ScopedSegmentName name;
  Limiter l = Limiter::create(small_options(name.str(), GetParam().asked));
  EXPECT_EQ(l.stats().capacity, GetParam().expected);
  // Opening with the same request (or 0: do not check) agrees.
  EXPECT_NO_THROW(Limiter::open(small_options(name.str(), GetParam().asked)));
  EXPECT_NO_THROW(Limiter::open(small_options(name.str(), 0)));
  EXPECT_NO_THROW(Limiter::open(small_options(name.str(), GetParam().expected)));
}

INSTANTIATE_TEST_SUITE_P(Table, SegmentCapacity,
                         ::testing::Values(CapacityCase{16, 16}, CapacityCase{17, 32},
                                           CapacityCase{100, 128}, CapacityCase{1000, 1024},
                                           CapacityCase{1024, 1024}, CapacityCase{1025, 2048}));

struct SlotCase {
  std::uint32_t slot_bytes;
  std::uint32_t max_key_bytes;
};
class SegmentSlotBytes : public ::testing::TestWithParam<SlotCase> {};

TEST_P(SegmentSlotBytes, SetTheLongestKeyToSlotBytesMinus40) {
  ScopedSegmentName name;
  Options o = small_options(name.str(), 64);
  o.slot_bytes = GetParam().slot_bytes;
  Limiter l = Limiter::create(o);
  EXPECT_EQ(l.max_key_bytes(), GetParam().max_key_bytes);
  EXPECT_EQ(l.stats().slot_bytes, GetParam().slot_bytes);
}

INSTANTIATE_TEST_SUITE_P(Table, SegmentSlotBytes,
                         ::testing::Values(SlotCase{64, 24}, SlotCase{128, 88},
                                           SlotCase{256, 216}));

TEST(SegmentOptions, InvalidSlotBytesOrMaxProbeAreInvalidArgument) {
  for (const std::uint32_t slot_bytes : {0u, 32u, 100u, 192u, 512u}) {
    ScopedSegmentName name;
    Options o = small_options(name.str());
    o.slot_bytes = slot_bytes;
    const auto err = catch_error([&] { Limiter::create(o); });
    ASSERT_TRUE(err) << slot_bytes;
    EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument) << slot_bytes;
    struct stat st {};
    EXPECT_NE(::stat(name.path().c_str(), &st), 0) << "a refused create left " << name.path();
  }
  ScopedSegmentName name;
  Options o = small_options(name.str());
  o.max_probe = 0;
  const auto err = catch_error([&] { Limiter::create(o); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Names: "/" then 1..200 bytes of [A-Za-z0-9_.-].
class SegmentBadName : public ::testing::TestWithParam<std::string> {};

TEST_P(SegmentBadName, IsInvalidArgumentForEveryEntryPoint) {
  const std::string& bad = GetParam();
  Options o;
  o.name = bad;
  for (const auto& [what, fn] : std::vector<std::pair<const char*, std::function<void()>>>{
           {"create", [&] { Limiter::create(o); }},
           {"open", [&] { Limiter::open(o); }},
           {"open_or_create", [&] { Limiter::open_or_create(o); }},
           {"remove", [&] { Limiter::remove(bad); }}}) {
    const auto err = catch_error(fn);
    ASSERT_TRUE(err) << what << " \"" << bad << '"';
    EXPECT_EQ(err->code(), ErrorCode::kInvalidArgument) << what << ": " << err->what();
  }
}

INSTANTIATE_TEST_SUITE_P(Table, SegmentBadName,
                         ::testing::Values(std::string(""), std::string("x"), std::string("/"),
                                           std::string("/a/b"), std::string("/bad name"),
                                           std::string("noslash"), std::string("/tab\there"),
                                           std::string("/nul\0byte", 9),
                                           std::string("/" + std::string(201, 'a')),
                                           std::string("/" + std::string(249, 'a'))));

TEST(SegmentName, TwoHundredCharactersAfterTheSlashAreAccepted) {
  ScopedSegmentName name("long", 201);
  ASSERT_EQ(name.str().size(), 201u);
  Limiter l = Limiter::create(small_options(name.str()));
  EXPECT_EQ(l.name(), name.str());
  EXPECT_NO_THROW(Limiter::open(small_options(name.str())));
}

// ---------------------------------------------------------------------------
// Permissions: Options::mode is applied despite the umask.
struct ModeCase {
  mode_t umask;
  mode_t mode;
};
class SegmentMode : public ::testing::TestWithParam<ModeCase> {};

TEST_P(SegmentMode, IsAppliedDespiteTheUmask) {
  ScopedSegmentName name;
  Options o = small_options(name.str());
  o.mode = GetParam().mode;
  o.allow_other_users = (o.mode & S_IWOTH) != 0;  // such a mode is refused otherwise
  {
    unit::ScopedUmask mask(GetParam().umask);
    Limiter l = Limiter::create(o);
  }
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, GetParam().mode)
      << std::oct << "umask 0" << GetParam().umask << " mode 0" << GetParam().mode << " got 0"
      << (st.st_mode & 07777);
}

INSTANTIATE_TEST_SUITE_P(Table, SegmentMode,
                         ::testing::Values(ModeCase{0077, 0600}, ModeCase{0, 0600},
                                           ModeCase{0077, 0640}, ModeCase{0022, 0666},
                                           ModeCase{0777, 0660}, ModeCase{0027, 0644}));

TEST(SegmentMode, DefaultIsOwnerReadWriteOnlyEvenWithAPermissiveUmask) {
  ScopedSegmentName name;
  {
    unit::ScopedUmask mask(0);
    Limiter l = Limiter::create(small_options(name.str()));
  }
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, static_cast<mode_t>(0600));
}

// ---------------------------------------------------------------------------
// Mismatch and read-only.
TEST(SegmentOpen, OtherCapacityIsIncompatibleNamingBothCapacities) {
  ScopedSegmentName name;
  Limiter l = Limiter::create(small_options(name.str(), 1024));
  const auto err = catch_error([&] { Limiter::open(small_options(name.str(), 2048)); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
  EXPECT_TRUE(contains(err->what(), "1024")) << err->what();
  EXPECT_TRUE(contains(err->what(), "2048")) << err->what();
  EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
  // open_or_create refuses it the same way rather than replacing it.
  const auto err2 = catch_error([&] { Limiter::open_or_create(small_options(name.str(), 4096)); });
  ASSERT_TRUE(err2);
  EXPECT_EQ(err2->code(), ErrorCode::kIncompatible);
  EXPECT_EQ(l.stats().capacity, 1024u);
}

TEST(SegmentOpen, ReadOnlyHandleRefusesAddPolicyAndOnlyPeeks) {
  ScopedSegmentName name;
  Limiter rw = Limiter::create(small_options(name.str()));
  const PolicyId id = rw.add_policy(spec("api", 2, std::chrono::hours(1)));
  Options o = small_options(name.str());
  o.read_only = true;
  Limiter ro = Limiter::open(o);
  EXPECT_TRUE(ro.read_only());
  const auto err = catch_error([&] { ro.add_policy(spec("other", 1, std::chrono::seconds(1))); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kReadOnly);
  // Re-adding an existing policy is a write too.
  const auto err2 = catch_error([&] { ro.add_policy(spec("api", 2, std::chrono::hours(1))); });
  ASSERT_TRUE(err2);
  EXPECT_EQ(err2->code(), ErrorCode::kReadOnly);

  // acquire through the read-only handle says what would happen and charges nothing.
  const Nanos t(1'000'000'000);
  for (int i = 0; i < 5; ++i) {
    const Decision d = ro.acquire_at(id, "k", 1, t);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 1u);
  }
  EXPECT_EQ(rw.stats().used, 0u);
  EXPECT_TRUE(rw.acquire_at(id, "k", 2, t).allowed);  // the whole burst is still there
  // And it sees what the writer did.
  EXPECT_FALSE(ro.acquire_at(id, "k", 1, t).allowed);
  EXPECT_EQ(ro.stats().used, 1u);
  ASSERT_EQ(ro.dump().size(), 1u);
  EXPECT_EQ(ro.dump()[0].admitted, 1u);
}

// ---------------------------------------------------------------------------
// Foreign, half-initialised and corrupt segments.
Options quick_options(const std::string& name) {
  Options o = small_options(name, 0);  // 0: do not check the capacity
  o.open_timeout = std::chrono::milliseconds(100);
  return o;
}

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> out(n);
  for (auto& b : out) b = static_cast<unsigned char>(rng());
  return out;
}

TEST(SegmentForeign, RandomBytesAreIncompatibleBadMagic) {
  ScopedSegmentName name;
  const std::vector<unsigned char> bytes = random_bytes(8192, 11);
  std::uint64_t magic = 0;
  std::memcpy(&magic, bytes.data(), 8);
  ASSERT_NE(magic, 0u);
  ASSERT_NE(magic, detail::kMagic);
  unit::write_new_file(name.path(), bytes);
  for (const bool read_only : {false, true}) {
    Options o = quick_options(name.str());
    o.read_only = read_only;
    const auto err = catch_error([&] { Limiter::open(o); });
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
    EXPECT_TRUE(contains(err->what(), "bad magic")) << err->what();
    EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
  }
  // open_or_create does not overwrite someone else's file.
  const auto err = catch_error([&] { Limiter::open_or_create(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
  EXPECT_EQ(
      unit::read_file(name.path()),
      std::vector<std::byte>(reinterpret_cast<const std::byte*>(bytes.data()),
                             reinterpret_cast<const std::byte*>(bytes.data()) + bytes.size()));
}

class SegmentNeverInitialised : public ::testing::TestWithParam<std::size_t> {};

// A creator that died before sizing or publishing the header: openers wait
// for open_timeout, then report kTimeout naming the segment.
TEST_P(SegmentNeverInitialised, OpenTimesOutAfterOpenTimeout) {
  ScopedSegmentName name;
  unit::write_new_file(name.path(), std::vector<unsigned char>(GetParam(), 0));
  const Options o = quick_options(name.str());
  const auto start = std::chrono::steady_clock::now();
  const auto err = catch_error([&] { Limiter::open(o); });
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kTimeout) << err->what();
  EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
  EXPECT_GE(waited, o.open_timeout);
  // open_or_create waits the same way; it never takes the file over.
  const auto err2 = catch_error([&] { Limiter::open_or_create(o); });
  ASSERT_TRUE(err2);
  EXPECT_EQ(err2->code(), ErrorCode::kTimeout) << err2->what();
}

INSTANTIATE_TEST_SUITE_P(Sizes, SegmentNeverInitialised,
                         ::testing::Values(std::size_t{0}, std::size_t{100},
                                           sizeof(detail::Header) - 1, sizeof(detail::Header),
                                           std::size_t{8192}));

TEST(SegmentNeverInitialised, MagicWrittenButNotPublishedTimesOut) {
  ScopedSegmentName name;
  { Limiter l = Limiter::create(small_options(name.str())); }
  const std::uint32_t zero = 0;
  unit::write_at(name.path(), offsetof(detail::Header, init_state), &zero, sizeof zero);
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kTimeout) << err->what();
}

// Creates a valid segment, closes it, then overwrites one header field.
template <typename T>
void create_and_poke(const std::string& name, const std::string& path, std::size_t offset, T value,
                     std::uint32_t capacity = 1024) {
  { Limiter l = Limiter::create(small_options(name, capacity)); }
  unit::write_at(path, offset, &value, sizeof value);
}

TEST(SegmentCorrupt, OtherLayoutVersionNamesBothVersions) {
  ScopedSegmentName name;
  create_and_poke<std::uint32_t>(name.str(), name.path(), offsetof(detail::Header, layout_version),
                                 99);
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
  EXPECT_TRUE(contains(err->what(), "99")) << err->what();
  EXPECT_TRUE(contains(err->what(), "version " + std::to_string(detail::kLayoutVersion)))
      << err->what();
  EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
}

TEST(SegmentCorrupt, OtherFingerprintIsIncompatible) {
  ScopedSegmentName name;
  create_and_poke<std::uint64_t>(name.str(), name.path(), offsetof(detail::Header, fingerprint),
                                 detail::layout_fingerprint() ^ 1);
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
  EXPECT_TRUE(contains(err->what(), "fingerprint")) << err->what();
}

TEST(SegmentCorrupt, OtherHeaderSizeIsIncompatible) {
  ScopedSegmentName name;
  create_and_poke<std::uint32_t>(name.str(), name.path(), offsetof(detail::Header, header_bytes),
                                 sizeof(detail::Header) + 64);
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
}

TEST(SegmentCorrupt, OtherTableSizesAreIncompatible) {
  ScopedSegmentName name;
  create_and_poke<std::uint32_t>(name.str(), name.path(), offsetof(detail::Header, max_policies),
                                 detail::kMaxPolicies * 2);
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible);
}

class SegmentResized : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(SegmentResized, IsRefusedSayingTruncatedOrResized) {
  ScopedSegmentName name;
  std::uint64_t bytes = 0;
  {
    Limiter l = Limiter::create(small_options(name.str()));
    bytes = l.stats().segment_bytes;
  }
  unit::truncate_file(name.path(),
                      static_cast<std::size_t>(static_cast<std::int64_t>(bytes) + GetParam()));
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kIncompatible) << err->what();
  EXPECT_TRUE(contains(err->what(), "truncated")) << err->what();
}

INSTANTIATE_TEST_SUITE_P(Deltas, SegmentResized, ::testing::Values(-1, -4096, -65536, 1, 4096));

// A header field outside what any build writes: the header contradicts
// itself, ErrorCode::kCorrupt ("the header contradicts itself").
struct FieldCase {
  const char* name;
  std::size_t offset;
  std::size_t size;  // 4 or 8
  std::uint64_t value;
  friend void PrintTo(const FieldCase& c, std::ostream* os) { *os << c.name << " = " << c.value; }
};
class SegmentCorruptField : public ::testing::TestWithParam<FieldCase> {};

TEST_P(SegmentCorruptField, IsReportedAsCorrupt) {
  const FieldCase& c = GetParam();
  ScopedSegmentName name;
  if (c.size == 4) {
    create_and_poke<std::uint32_t>(name.str(), name.path(), c.offset,
                                   static_cast<std::uint32_t>(c.value));
  } else {
    create_and_poke<std::uint64_t>(name.str(), name.path(), c.offset, c.value);
  }
  const auto err = catch_error([&] { Limiter::open(quick_options(name.str())); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kCorrupt) << err->what();
  EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
}

INSTANTIATE_TEST_SUITE_P(
    Table, SegmentCorruptField,
    ::testing::Values(
        FieldCase{"CapacityNotPowerOfTwo", offsetof(detail::Header, capacity), 4, 1000},
        FieldCase{"CapacityZero", offsetof(detail::Header, capacity), 4, 0},
        FieldCase{"CapacityAboveMaximum", offsetof(detail::Header, capacity), 4,
                  std::uint64_t{1} << 31},
        FieldCase{"CapacityOtherPowerOfTwo", offsetof(detail::Header, capacity), 4, 2048},
        FieldCase{"SlotBytesInvalid", offsetof(detail::Header, slot_bytes), 4, 100},
        FieldCase{"MaxProbeZero", offsetof(detail::Header, max_probe), 4, 0},
        FieldCase{"MaxProbeAboveCapacity", offsetof(detail::Header, max_probe), 4, 2048},
        FieldCase{"TotalBytes", offsetof(detail::Header, total_bytes), 8, 4096},
        FieldCase{"PolicyOffset", offsetof(detail::Header, policy_offset), 8, 64},
        FieldCase{"SlotOffsetPastTheEnd", offsetof(detail::Header, slot_offset), 8,
                  std::uint64_t{1} << 40}),
    [](const ::testing::TestParamInfo<FieldCase>& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------
// Segment::validate on bytes.

// The bytes of a freshly created segment of `capacity` slots.
std::vector<std::byte> real_segment_bytes(std::uint32_t capacity, Stats* stats = nullptr) {
  ScopedSegmentName name;
  Limiter l = Limiter::create(small_options(name.str(), capacity));
  if (stats != nullptr) *stats = l.stats();
  return unit::read_file(name.path());
}

TEST(SegmentValidate, AcceptsARealSegmentAndComputesItsGeometry) {
  Stats stats;
  const std::vector<std::byte> bytes = real_segment_bytes(1024, &stats);
  unit::AlignedBytes buf(bytes.size());
  std::memcpy(buf.data(), bytes.data(), bytes.size());
  detail::Geometry g;
  EXPECT_EQ(detail::Segment::validate(buf.data(), buf.size(), 0, &g), "");
  EXPECT_EQ(g.capacity, 1024u);
  EXPECT_EQ(g.slot_bytes, stats.slot_bytes);
  EXPECT_EQ(g.max_probe, stats.max_probe);
  EXPECT_EQ(g.total_bytes, bytes.size());
  EXPECT_EQ(g.key_capacity(), stats.max_key_bytes);
  EXPECT_EQ(detail::Segment::validate(buf.data(), buf.size(), 1024, nullptr), "");
  const std::string other = detail::Segment::validate(buf.data(), buf.size(), 4096, nullptr);
  EXPECT_TRUE(contains(other, "1024") && contains(other, "4096")) << other;
  // One byte short: refused, without reading past the end (ASan).
  EXPECT_NE(detail::Segment::validate(buf.data(), buf.size() - 1, 0, nullptr), "");
}

TEST(SegmentValidate, EveryBitFlipInACheckedHeaderFieldIsRefused) {
  const std::vector<std::byte> bytes = real_segment_bytes(1024);
  unit::AlignedBytes buf(bytes.size());
  struct Field {
    std::size_t offset, size;
  };
  // Every field validate() checks whose every bit matters. (max_probe is
  // not here: another value in range is as valid as the original.)
  const Field fields[] = {
      {offsetof(detail::Header, magic), 8},          {offsetof(detail::Header, layout_version), 4},
      {offsetof(detail::Header, header_bytes), 4},   {offsetof(detail::Header, fingerprint), 8},
      {offsetof(detail::Header, capacity), 4},       {offsetof(detail::Header, slot_bytes), 4},
      {offsetof(detail::Header, max_policies), 4},   {offsetof(detail::Header, max_processes), 4},
      {offsetof(detail::Header, total_bytes), 8},    {offsetof(detail::Header, policy_offset), 8},
      {offsetof(detail::Header, process_offset), 8}, {offsetof(detail::Header, slot_offset), 8},
      {offsetof(detail::Header, init_state), 4},
  };
  int flips = 0;
  for (const Field& f : fields) {
    for (std::size_t bit = 0; bit < 8 * f.size; ++bit) {
      std::memcpy(buf.data(), bytes.data(), bytes.size());
      buf.data()[f.offset + bit / 8] ^= std::byte{static_cast<unsigned char>(1u << (bit % 8))};
      EXPECT_NE(detail::Segment::validate(buf.data(), buf.size(), 0, nullptr), "")
          << "bit " << bit << " of the field at offset " << f.offset;
      ++flips;
    }
  }
  EXPECT_EQ(flips, 8 * (8 * 6 + 4 * 7));
}

TEST(SegmentValidate, NeverCrashesOnRandomBytesOfEverySizeUpTo8192) {
  std::mt19937_64 rng(8192);
  const std::vector<std::byte> real = real_segment_bytes(16);
  ASSERT_GE(real.size(), sizeof(detail::Header));
  for (std::size_t size = 0; size <= 8192; ++size) {
    unit::AlignedBytes buf(size);
    for (int variant = 0; variant < 3; ++variant) {
      for (std::size_t i = 0; i < size; ++i) buf.data()[i] = static_cast<std::byte>(rng());
      if (variant >= 1 && size >= sizeof(detail::Header)) {
        // A plausible header: real identity fields, so validation goes deep.
        std::memcpy(buf.data(), real.data(), sizeof(detail::Header));
        if (variant == 2) {
          // ... with a few random bytes of it changed.
          for (int k = 0; k < 3; ++k) {
            buf.data()[rng() % sizeof(detail::Header)] = static_cast<std::byte>(rng());
          }
        }
      }
      const auto expected_capacity = static_cast<std::uint32_t>(rng() % 3 == 0 ? 0 : rng());
      detail::Geometry g;
      const std::string why = detail::Segment::validate(buf.data(), size, expected_capacity, &g);
      // The smallest valid segment is larger than 8192 bytes.
      ASSERT_FALSE(why.empty()) << "size " << size << " variant " << variant;
    }
  }
}

}  // namespace
}  // namespace shmlimit
