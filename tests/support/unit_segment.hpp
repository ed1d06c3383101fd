// Helpers for the unit tests (tests/unit): unique segment names removed at
// scope exit, raw access to a segment's bytes in /dev/shm, exact-size
// aligned buffers (so ASan sees every out-of-bounds read), a policy spec of
// one algorithm, and a printer and a comparison for Decision so that
// failed expectations show all five values.
//
// Not for the multiprocess tests (tests/support/mp.hpp has their helpers);
// everything here is in namespace shmlimit::unit.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

// gtest finds these by ADL: failed expectations print every field.
inline std::string describe(const Decision& d) {
  std::ostringstream os;
  os << "{allowed=" << d.allowed << " limit=" << d.limit << " remaining=" << d.remaining
     << " retry_after=";
  if (d.retry_after == Nanos::max()) {
    os << "max";
  } else {
    os << d.retry_after.count() << "ns";
  }
  os << " reset_after=" << d.reset_after.count() << "ns reason=" << to_string(d.reason) << "}";
  return os.str();
}
inline void PrintTo(const Decision& d, std::ostream* os) { *os << describe(d); }
// Equal in all five values and the reason; a failure prints both.
inline ::testing::AssertionResult same_decision(const Decision& got, const Decision& want) {
  if (got.allowed == want.allowed && got.limit == want.limit && got.remaining == want.remaining &&
      got.retry_after == want.retry_after && got.reset_after == want.reset_after &&
      got.reason == want.reason) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "got " << describe(got) << ", want " << describe(want);
}
inline void PrintTo(Reason r, std::ostream* os) { *os << to_string(r); }
inline void PrintTo(ErrorCode c, std::ostream* os) {
  static const char* const kNames[] = {"?",          "kInvalidArgument", "kNotFound",
                                       "kExists",    "kPermission",      "kIncompatible",
                                       "kCorrupt",   "kTimeout",         "kPolicyConflict",
                                       "kTableFull", "kSystem",          "kReadOnly",
                                       "kNoSpace"};
  const int i = static_cast<int>(c);
  *os << (i >= 1 && i <= 12 ? kNames[i] : "?") << " (" << i << ")";
}
inline void PrintTo(const Rate& r, std::ostream* os) {
  *os << "Rate{" << r.count << ", " << r.period.count() << "ns}";
}

namespace unit {

/// A segment name unique to this process and call: "/shmlimit-ut-<tag>-<pid>-<n>".
/// Removed (if it exists) on construction and on destruction, so a test
/// never sees a leftover and never leaves one behind.
class ScopedSegmentName {
 public:
  /// `length` > 0 pads the name with 'x' to exactly that many bytes
  /// (including the leading '/').
  explicit ScopedSegmentName(std::string_view tag = "seg", std::size_t length = 0) {
    static std::atomic<unsigned> counter{0};
    name_ = "/shmlimit-ut-" + std::string(tag) + "-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter.fetch_add(1)) + "-";
    if (name_.size() < length) name_.append(length - name_.size(), 'x');
    remove_quietly();
  }
  ~ScopedSegmentName() { remove_quietly(); }
  ScopedSegmentName(const ScopedSegmentName&) = delete;
  ScopedSegmentName& operator=(const ScopedSegmentName&) = delete;

  const std::string& str() const { return name_; }
  /// Where Linux keeps the object: a plain file in tmpfs.
  std::string path() const { return "/dev/shm" + name_; }

 private:
  void remove_quietly() const {
    // unlink() rather than Limiter::remove(): also removes files that tests
    // wrote by hand, whatever their content.
    ::unlink(path().c_str());
  }
  std::string name_;
};

/// Options for a small segment, so tests create quickly and stats() is cheap.
inline Options small_options(const std::string& name, std::uint32_t capacity = 1024) {
  Options o;
  o.name = name;
  o.capacity = capacity;
  return o;
}

/// A policy "p" of algorithm `a`: count per period, burst (0 = count).
inline PolicySpec spec(Algorithm a, std::uint64_t count, Nanos period, std::uint64_t burst = 0) {
  PolicySpec s;
  s.name = "p";
  s.algorithm = a;
  s.rate = Rate{count, period};
  s.burst = burst;
  return s;
}

/// Runs `fn`, which must throw shmlimit::Error; returns it (nullopt and a
/// gtest failure otherwise).
inline std::optional<Error> catch_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-shmlimit exception: " << e.what();
    return std::nullopt;
  }
  ADD_FAILURE() << "did not throw";
  return std::nullopt;
}

/// Exactly `size` bytes, 64-byte aligned (the alignment of the header), in
/// their own heap block: ASan reports any read past the end.
class AlignedBytes {
 public:
  explicit AlignedBytes(std::size_t size)
      : size_(size), data_(static_cast<std::byte*>(::operator new (size, std::align_val_t{64}))) {}
  ~AlignedBytes() { ::operator delete (data_, std::align_val_t{64}); }
  AlignedBytes(const AlignedBytes&) = delete;
  AlignedBytes& operator=(const AlignedBytes&) = delete;
  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  std::size_t size_;
  std::byte* data_;
};

/// The pid of a process that has exited and been reaped: a writer, holder
/// or claimer that "died".
inline pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  return child;
}

/// Reads a whole file (a segment in /dev/shm) into an aligned buffer.
inline std::vector<std::byte> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  struct stat st {};
  ::fstat(fd, &st);
  std::vector<std::byte> out(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (done != out.size()) throw std::runtime_error("short read of " + path);
  return out;
}

/// Writes `bytes` at `offset` of an existing file (corrupts a segment).
inline void write_at(const std::string& path, std::size_t offset, const void* bytes,
                     std::size_t n) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  const ssize_t w = ::pwrite(fd, bytes, n, static_cast<off_t>(offset));
  ::close(fd);
  if (w != static_cast<ssize_t>(n)) throw std::runtime_error("short write to " + path);
}

/// Creates a new file with exactly `bytes` as content, mode 0600.
inline void write_new_file(const std::string& path, const std::vector<unsigned char>& bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  const ssize_t w = bytes.empty() ? 0 : ::write(fd, bytes.data(), bytes.size());
  ::close(fd);
  if (w != static_cast<ssize_t>(bytes.size())) throw std::runtime_error("short write to " + path);
}

inline void truncate_file(const std::string& path, std::size_t size) {
  if (::truncate(path.c_str(), static_cast<off_t>(size)) != 0) {
    throw std::runtime_error("cannot truncate " + path);
  }
}

/// Restores the process umask on scope exit.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

}  // namespace unit
}  // namespace shmlimit
