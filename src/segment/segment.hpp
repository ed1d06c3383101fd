// The named segment: create / open / validate with Boost.Interprocess.
//
// Initialisation race: the creator is whoever wins shm_open(O_CREAT|O_EXCL)
// (create_only). It sizes the object (zero-filled), writes the header and
// only then publishes init_state = kInitReady with a release store. Openers
// wait (bounded by Options::open_timeout) until they observe kInitReady with
// an acquire load, so none ever reads a half-written header, and a waiter
// that gives up gets Error(kTimeout) naming the segment.
//
// Trust boundary (doc/design.md, "What can go wrong with the segment"):
//   * Every byte is reserved when the segment is created (posix_fallocate,
//     before the header is published), so a full tmpfs is Error(kNoSpace) at
//     create, never a SIGBUS in a worker later. A failed create leaves no
//     file behind.
//   * Opening never blocks and never follows a symlink (O_NONBLOCK |
//     O_NOFOLLOW | O_CLOEXEC), and anything but a regular file (FIFO,
//     directory, device, socket) is refused at once.
//   * By default a segment is shared only with processes of the same
//     effective uid, and with root: an open refuses a file owned by any other
//     uid (for root that means any uid but 0) or writable by 'other';
//     Options::allow_other_users lifts both checks. A writer we trust can
//     still truncate the file under a live mapping (its pages then raise
//     SIGBUS): that is outside what a mapping can defend against, and why the
//     segment is shared only with processes that trust each other.
//   * The file's size is compared with the header's total_bytes (fstat)
//     before any page past the header is touched.
#pragma once

#include <sys/stat.h>

#include <boost/interprocess/detail/os_file_functions.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "segment/clock.hpp"
#include "segment/layout.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

/// The file of an existing segment, opened read-only or read-write with
/// O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC and checked at once: a regular file
/// (else Error(kIncompatible)), owned by our effective uid or by root and not
/// writable by 'other' unless allow_other_users (else Error(kPermission)
/// naming the owner and mode). Absent: Error(kNotFound). Never blocks.
/// Usable as the source of a boost::interprocess::mapped_region.
class SegmentFile {
 public:
  static SegmentFile open(const std::string& name, bool read_only, bool allow_other_users);

  SegmentFile() = default;
  ~SegmentFile();
  SegmentFile(SegmentFile&& other) noexcept;
  SegmentFile& operator=(SegmentFile&& other) noexcept;
  SegmentFile(const SegmentFile&) = delete;
  SegmentFile& operator=(const SegmentFile&) = delete;

  int fd() const { return fd_; }
  /// fstat of the open descriptor now; throws Error(kSystem) if it fails.
  struct stat status() const;
  boost::interprocess::mapping_handle_t get_mapping_handle() const {
    boost::interprocess::mapping_handle_t h;
    h.handle = fd_;
    h.is_xsi = false;
    return h;
  }

 private:
  int fd_ = -1;
  std::string name_;
};

class Segment {
 public:
  enum class Mode { kCreate, kOpen, kOpenOrCreate };

  /// Throws shmlimit::Error with a sentence naming the segment and what differs.
  /// `kind` is written as the magic by a creator and required of an existing
  /// segment: a segment of the other kind is Error(kIncompatible) naming both.
  static std::unique_ptr<Segment> open(const Options& options, Mode mode,
                                       SegmentKind kind = SegmentKind::kLimiter);
  static bool remove(const std::string& name);
  /// Validates a shm name: "/" then 1..200 of [A-Za-z0-9_.-].
  static void check_name(const std::string& name);

  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  std::byte* base() const { return base_; }
  std::size_t size() const { return size_; }
  const Geometry& geometry() const { return geo_; }
  const std::string& name() const { return name_; }
  bool read_only() const { return read_only_; }
  bool created() const { return created_; }
  Header& header() const { return *reinterpret_cast<Header*>(base_); }
  std::int64_t epoch_raw_ns() const { return epoch_raw_ns_; }
  std::int64_t created_unix_ns() const { return created_unix_ns_; }
  std::uint64_t hash_seed() const { return hash_seed_; }

  /// Empty if the file still holds every byte of the mapping, else the
  /// reason (truncated under the mapping: touching the pages past its end
  /// would raise SIGBUS). `check` reports it before reading any slot.
  std::string size_problem() const;

  /// Validates the bytes of a mapped segment of `size` bytes. Returns an
  /// empty string when valid, else the reason. Reads, never writes; safe on
  /// any bytes (the fuzz target and `shmlimit check` use it directly).
  /// A segment of another kind than `kind` is invalid, and the reason names it.
  static std::string validate(const std::byte* base, std::size_t size,
                              std::uint32_t expected_capacity, Geometry* out,
                              SegmentKind kind = SegmentKind::kLimiter);

  /// Why `epoch_raw_ns` (Header::epoch_raw_ns) cannot be this segment's
  /// epoch, or an empty string: the creator read CLOCK_MONOTONIC_RAW, which
  /// is system-wide, so an epoch later than now is corrupt (or this process
  /// runs in another time namespace). Such a segment is refused at open
  /// and reported by `check`, never repaired in place: every attached
  /// process copied the epoch at open, so a rewritten one would have
  /// processes measure bucket times from two origins (doc/design.md).
  static std::string epoch_problem(std::int64_t epoch_raw_ns);

  Segment();  // use open()

 private:
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  Geometry geo_;
  std::string name_;
  bool read_only_ = false;
  bool created_ = false;
  std::int64_t epoch_raw_ns_ = 0;
  std::int64_t created_unix_ns_ = 0;
  std::uint64_t hash_seed_ = 0;
};

}  // namespace shmlimit::detail
