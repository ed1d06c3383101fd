// The segment's trust boundary (doc/design.md, "What can go wrong with the
// segment and what we do"): a full tmpfs, another user's segment, a segment
// writable by 'other', a FIFO / directory / symlink / device at the name,
// and truncation. Each test is named after what it guards.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "segment/segment.hpp"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"
#include "unit_segment.hpp"

namespace shmlimit {
namespace {

using unit::catch_error;
using unit::ScopedSegmentName;
using unit::small_options;

constexpr uid_t kNobody = 65534;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

PolicySpec gcra(const std::string& name, std::uint64_t count) {
  PolicySpec s;
  s.name = name;
  s.rate = Rate{count, std::chrono::hours(1)};
  return s;
}

/// What a forked child reported: `skip` (it could not set up, and why), or
/// the empty string for success, or what failed.
struct ChildResult {
  bool skipped = false;
  std::string message;
};

constexpr int kChildSkip = 77;

/// Runs `body` in a forked child. body returns "" on success or what went
/// wrong; it may throw Skip to say the test cannot run here.
struct Skip {
  std::string why;
};
ChildResult run_in_child(const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe(fds) != 0) return {false, "pipe failed"};
  const pid_t pid = ::fork();
  if (pid < 0) return {false, "fork failed"};
  if (pid == 0) {
    ::close(fds[0]);
    int code = 0;
    std::string out;
    try {
      out = body();
      code = out.empty() ? 0 : 1;
    } catch (const Skip& s) {
      out = s.why;
      code = kChildSkip;
    } catch (const std::exception& e) {
      out = std::string("threw: ") + e.what();
      code = 1;
    }
    const char* p = out.data();
    std::size_t left = out.size();
    while (left > 0) {
      const ssize_t w = ::write(fds[1], p, left);
      if (w <= 0) break;
      p += w;
      left -= static_cast<std::size_t>(w);
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  std::string text;
  char buf[512];
  for (;;) {
    const ssize_t r = ::read(fds[0], buf, sizeof buf);
    if (r > 0) {
      text.append(buf, static_cast<std::size_t>(r));
    } else if (r == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status))
    return {false, "child died of signal " + std::to_string(WTERMSIG(status)) + ": " + text};
  if (WEXITSTATUS(status) == kChildSkip) return {true, text};
  if (WEXITSTATUS(status) != 0 && text.empty())
    return {false, "child exited " + std::to_string(WEXITSTATUS(status))};
  return {false, text};
}

/// "" if `fn` throws Error with `code` and every one of `words` in its
/// message, else what happened instead.
std::string expect_error(const std::function<void()>& fn, ErrorCode code,
                         std::initializer_list<const char*> words) {
  try {
    fn();
  } catch (const Error& e) {
    if (e.code() != code) {
      return "error code " + std::to_string(static_cast<int>(e.code())) + " instead of " +
             std::to_string(static_cast<int>(code)) + ": " + e.what();
    }
    for (const char* w : words) {
      if (!contains(e.what(), w)) return std::string("message lacks \"") + w + "\": " + e.what();
    }
    return {};
  }
  return "did not throw";
}

void become_nobody() {
  if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) {
    throw std::runtime_error(std::string("cannot become uid 65534: ") + std::strerror(errno));
  }
}

// ---------------------------------------------------------------------------
// Row 1: a small tmpfs. Every byte is reserved at create.

TEST(Segment, CreateOnAFullTmpfsFailsCleanlyAndLeavesNoFile) {
  const ChildResult r = run_in_child([]() -> std::string {
    // A private mount namespace with a 16 MiB tmpfs on /dev/shm (Docker's
    // default is 64 MiB): nothing outside this child sees it.
    if (::unshare(CLONE_NEWNS) != 0)
      throw Skip{std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno)};
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      throw Skip{std::string("mount --make-rprivate /: ") + std::strerror(errno)};
    }
    if (::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=16m") != 0) {
      throw Skip{std::string("mount -t tmpfs -o size=16m tmpfs /dev/shm: ") + std::strerror(errno)};
    }
    // 1. Larger than the file system: refused up front, nothing left behind.
    Options big = small_options("/big", 1048576);  // 128 MiB
    if (auto e = expect_error(
            [&] { Limiter::create(big); }, ErrorCode::kNoSpace,
            {"/big", "135245888 bytes", "16777216 bytes", "--shm-size", "remount,size="});
        !e.empty()) {
      return "capacity 1048576: " + e;
    }
    if (exists("/dev/shm/big")) return "a failed create left /dev/shm/big behind";
    // open_or_create fails the same way.
    if (auto e = expect_error([&] { Limiter::open_or_create(big); }, ErrorCode::kNoSpace, {"/big"});
        !e.empty()) {
      return "open_or_create: " + e;
    }
    if (exists("/dev/shm/big")) return "a failed open_or_create left /dev/shm/big behind";
    // 2. Beyond what any machine here holds (8 TiB): refused up front.
    Options huge = small_options("/huge", 268435456);
    huge.log_entries = 4096;
    if (auto e = expect_error([&] { Limiter::create(huge); }, ErrorCode::kNoSpace,
                              {"/huge", "8830453788736 bytes"});
        !e.empty()) {
      return "8 TiB: " + e;
    }
    if (exists("/dev/shm/huge")) return "a refused 8 TiB create left /dev/shm/huge behind";
    // 3. One that fits, then one that fits the file system but not what is
    // left of it: posix_fallocate fails, the message names what is free.
    Limiter first = Limiter::create(small_options("/first", 65536));  // 8.4 MiB
    const PolicyId api = first.add_policy(gcra("api", 1000));
    if (auto e =
            expect_error([&] { Limiter::create(small_options("/second", 65536)); },
                         ErrorCode::kNoSpace, {"/second", "9416768 bytes", "free", "--shm-size"});
        !e.empty()) {
      return "second segment: " + e;
    }
    if (exists("/dev/shm/second")) return "a failed create left /dev/shm/second behind";
    // 4. The segment that exists still works: every one of its pages is
    // backed, so 5000 new keys never meet a SIGBUS.
    for (int i = 0; i < 5000; ++i) {
      if (!first.acquire(api, "key-" + std::to_string(i)).allowed)
        return "key " + std::to_string(i) + " refused";
    }
    Options again = small_options("/first", 0);
    Limiter reopened = Limiter::open_or_create(again);  // opens; never needs room
    const CheckReport report = reopened.check(false);
    if (!report.problems.empty()) return "check: " + report.problems.front();
    return {};
  });
  if (r.skipped) GTEST_SKIP() << "needs a private mount namespace: " << r.message;
  EXPECT_EQ(r.message, "");
}

TEST(Segment, CreateRefusesASizeNoMachineCanHoldWithoutCreatingAFile) {
  ScopedSegmentName name;
  Options o = small_options(name.str(), 268435456);
  o.log_entries = 4096;  // 8 TiB
  const auto err = catch_error([&] { Limiter::create(o); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kNoSpace) << err->what();
  EXPECT_TRUE(contains(err->what(), "8830453788736 bytes (8.0 TiB)")) << err->what();
  EXPECT_FALSE(exists(name.path()));
}

// ---------------------------------------------------------------------------
// Row 3: something else than a regular file at the name.

TEST(Segment, OpenRefusesAFifoWithoutBlocking) {
  ScopedSegmentName name;
  ASSERT_EQ(::mkfifo(name.path().c_str(), 0666), 0) << std::strerror(errno);
  ASSERT_EQ(::chmod(name.path().c_str(), 0666), 0);
  Options o = small_options(name.str(), 0);
  o.open_timeout = std::chrono::seconds(10);
  Options ro = o;
  ro.read_only = true;
  Options trusting = o;
  trusting.allow_other_users = true;  // no flag makes a FIFO acceptable
  const std::function<void()> opens[] = {
      [&] { Limiter::open(o); },
      [&] { Limiter::open(ro); },
      [&] { Limiter::open_or_create(o); },
      [&] { Limiter::open(trusting); },
      [&] { Limiter::check_segment(name.str()); },
  };
  for (const auto& open : opens) {
    const auto start = std::chrono::steady_clock::now();
    const auto err = catch_error(open);
    const auto waited = std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code(), ErrorCode::kIncompatible) << err->what();
    EXPECT_TRUE(contains(err->what(), "FIFO")) << err->what();
    EXPECT_TRUE(contains(err->what(), name.str())) << err->what();
    EXPECT_LT(waited, std::chrono::seconds(1));
  }
}

TEST(Segment, OpenRefusesADirectoryASymlinkAndADeviceAtOnce) {
  ScopedSegmentName dir("dir");
  ASSERT_EQ(::mkdir(dir.path().c_str(), 0700), 0);
  ScopedSegmentName target("target");
  ScopedSegmentName link("link");
  { Limiter l = Limiter::create(small_options(target.str())); }
  ASSERT_EQ(::symlink(target.path().c_str(), link.path().c_str()), 0);
  struct Case {
    std::string name;
    const char* kind;
  };
  std::vector<Case> cases = {{dir.str(), "directory"}, {link.str(), "symbolic link"}};
  ScopedSegmentName dev("dev");
  const bool have_device =
      ::mknod(dev.path().c_str(), S_IFCHR | 0666, ::makedev(1, 3)) == 0;  // /dev/null, as root
  if (have_device) cases.push_back({dev.str(), "character device"});
  for (const Case& c : cases) {
    for (const bool read_only : {false, true}) {
      Options o = small_options(c.name, 0);
      o.read_only = read_only;
      const auto err = catch_error([&] { Limiter::open(o); });
      ASSERT_TRUE(err);
      EXPECT_EQ(err->code(), ErrorCode::kIncompatible) << err->what();
      EXPECT_TRUE(contains(err->what(), c.kind)) << err->what();
    }
    const auto err = catch_error([&] { Limiter::check_segment(c.name); });
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code(), ErrorCode::kIncompatible) << err->what();
  }
  ::rmdir(dir.path().c_str());
}

// ---------------------------------------------------------------------------
// Row 2: another user's segment.

TEST(Segment, OpenRefusesASegmentOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to create a segment as uid 65534 (nobody)";
  ScopedSegmentName name;
  const ChildResult made = run_in_child([&]() -> std::string {
    become_nobody();
    Options o = small_options(name.str());
    o.mode = 0660;
    Limiter l = Limiter::create(o);
    l.add_policy(gcra("api", 5));
    return {};
  });
  ASSERT_EQ(made.message, "");
  struct stat st {};
  ASSERT_EQ(::stat(name.path().c_str(), &st), 0);
  ASSERT_EQ(st.st_uid, kNobody);
  Options rw = small_options(name.str(), 0);
  Options ro = rw;
  ro.read_only = true;
  for (const std::function<void()>& open : std::initializer_list<std::function<void()>>{
           [&] { Limiter::open(rw); }, [&] { Limiter::open(ro); },
           [&] { Limiter::open_or_create(rw); }, [&] { Limiter::check_segment(name.str()); }}) {
    const auto err = catch_error(open);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code(), ErrorCode::kPermission) << err->what();
    EXPECT_TRUE(contains(err->what(), "uid 65534")) << err->what();
    EXPECT_TRUE(contains(err->what(), "0660")) << err->what();
    EXPECT_TRUE(contains(err->what(), "allow_other_users")) << err->what();
  }
  // Said explicitly, it is shared.
  rw.allow_other_users = true;
  Limiter l = Limiter::open(rw);
  EXPECT_TRUE(l.find_policy("api").has_value());
  EXPECT_TRUE(Limiter::check_segment(name.str(), true).problems.empty());
}

TEST(Segment, OpenAcceptsASegmentOfRootFromAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to open root's segment as uid 65534 (nobody)";
  ScopedSegmentName name;
  Options o = small_options(name.str());
  o.mode = 0644;
  Limiter root = Limiter::create(o);
  root.add_policy(gcra("api", 5));
  const ChildResult r = run_in_child([&]() -> std::string {
    become_nobody();
    Options ro = small_options(name.str(), 0);
    ro.read_only = true;
    Limiter l = Limiter::open(ro);
    return l.find_policy("api") ? "" : "policy api not found";
  });
  EXPECT_EQ(r.message, "");
}

TEST(Segment, OpenRefusesASegmentWritableByOther) {
  ScopedSegmentName name;
  Options o = small_options(name.str());
  o.mode = 0666;
  // Create refuses such a mode unless sharing is meant...
  const auto refused = catch_error([&] { Limiter::create(o); });
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code(), ErrorCode::kInvalidArgument) << refused->what();
  EXPECT_TRUE(contains(refused->what(), "0666")) << refused->what();
  EXPECT_FALSE(exists(name.path()));
  o.allow_other_users = true;
  { Limiter l = Limiter::create(o); }
  // ...and so does every open of one, by its own owner too.
  Options plain = small_options(name.str(), 0);
  Options ro = plain;
  ro.read_only = true;
  for (const Options& each : {plain, ro}) {
    const auto err = catch_error([&] { Limiter::open(each); });
    ASSERT_TRUE(err);
    EXPECT_EQ(err->code(), ErrorCode::kPermission) << err->what();
    EXPECT_TRUE(contains(err->what(), "writable by every user")) << err->what();
    EXPECT_TRUE(contains(err->what(), "0666")) << err->what();
  }
  plain.allow_other_users = true;
  EXPECT_NO_THROW(Limiter::open(plain));
}

TEST(Segment, OpenIgnoresTheModeItNeverUses) {
  ScopedSegmentName name;
  { Limiter l = Limiter::create(small_options(name.str())); }
  Options o = small_options(name.str(), 0);
  o.mode = 0666;  // only a create applies it
  EXPECT_NO_THROW(Limiter::open(o));
  EXPECT_EQ(catch_error([&] { Limiter::open_or_create(o); })->code(), ErrorCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Truncation.

TEST(Segment, OpenRefusesATruncatedSegmentInsteadOfSIGBUS) {
  ScopedSegmentName name;
  {
    Limiter l = Limiter::create(small_options(name.str()));
    const PolicyId api = l.add_policy(gcra("api", 5));
    for (int i = 0; i < 100; ++i) l.acquire(api, "k" + std::to_string(i));
  }
  for (const std::size_t size : {std::size_t{4096}, std::size_t{8192}, std::size_t{65536}}) {
    unit::truncate_file(name.path(), size);
    for (const bool read_only : {false, true}) {
      Options o = small_options(name.str(), 0);
      o.read_only = read_only;
      const auto err = catch_error([&] { Limiter::open(o); });
      ASSERT_TRUE(err);
      EXPECT_EQ(err->code(), ErrorCode::kIncompatible) << err->what();
      EXPECT_TRUE(contains(err->what(), "truncated")) << err->what();
    }
    // The raw audit reads only what the file holds.
    const CheckReport r = Limiter::check_segment(name.str());
    ASSERT_FALSE(r.problems.empty());
    EXPECT_TRUE(contains(r.problems.front(), "truncated")) << r.problems.front();
  }
}

TEST(Segment, CheckReportsASegmentTruncatedUnderItsMapping) {
  ScopedSegmentName name;
  Limiter l = Limiter::create(small_options(name.str()));
  const PolicyId api = l.add_policy(gcra("api", 5));
  l.acquire(api, "k");
  const std::uint64_t bytes = l.stats().segment_bytes;
  unit::truncate_file(name.path(), 4096);
  // check reads no slot past the file's end (that would be a SIGBUS).
  const CheckReport r = l.check(true);
  const std::string first = r.problems.empty() ? "" : r.problems.front();
  EXPECT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(contains(first, "4096")) << first;
  EXPECT_TRUE(contains(first, std::to_string(bytes))) << first;
  EXPECT_TRUE(contains(first, "truncated")) << first;
  // Back to its size (its pages now read as zero) before the handle's own
  // deregistration touches them.
  unit::truncate_file(name.path(), bytes);
}

TEST(Segment, OpenStopsWaitingWhenTheFileIsRemoved) {
  ScopedSegmentName name;
  unit::write_new_file(name.path(), {});  // a creator that has not sized it yet
  Options o = small_options(name.str(), 0);
  o.open_timeout = std::chrono::seconds(10);
  std::thread remover([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::unlink(name.path().c_str());
  });
  const auto start = std::chrono::steady_clock::now();
  const auto err = catch_error([&] { Limiter::open(o); });
  const auto waited = std::chrono::steady_clock::now() - start;
  remover.join();
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::kNotFound) << err->what();
  EXPECT_LT(waited, std::chrono::seconds(5));
}

}  // namespace
}  // namespace shmlimit
