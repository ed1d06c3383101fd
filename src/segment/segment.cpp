#include "segment/segment.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

namespace bip = boost::interprocess;

namespace shmlimit::detail {

struct Segment::Mapping {
  bip::shared_memory_object shm;  // the creator's handle (create_only)
  SegmentFile file;               // an opener's handle (SegmentFile::open)
  bip::mapped_region region;
  int fd() const { return file.fd() >= 0 ? file.fd() : shm.get_mapping_handle().handle; }
};

namespace {

std::string quoted(const std::string& name) { return "shared-memory segment " + name; }

std::string shm_path(const std::string& name) { return "/dev/shm" + name; }

/// "uid 1000 (alice)", or "uid 1000" when the user has no name.
std::string describe_user(uid_t uid) {
  std::string out = "uid " + std::to_string(uid);
  passwd pw{};
  passwd* found = nullptr;
  char buf[2048];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr &&
      found->pw_name != nullptr) {
    out += " (" + std::string(found->pw_name) + ")";
  }
  return out;
}

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0%03o", static_cast<unsigned>(mode & 07777));
  return buf;
}

/// "136 MiB" (binary units, one decimal below 10).
std::string human_bytes(std::uint64_t bytes) {
  static const char* const kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  std::size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, kUnits[u]);
  return buf;
}

const char* file_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

constexpr const char* kShareHint =
    "if it is meant to be shared across users, say so with allow_other_users "
    "(Options::allow_other_users, "
    "`--allow-other-users`, `allow_other_users = true` in [segment]; see doc/design.md)";

[[noreturn]] void throw_not_regular(const std::string& name, mode_t mode) {
  throw Error(ErrorCode::kIncompatible,
              quoted(name) + " is " + file_kind(mode) +
                  ", not a regular file, so not a shmlimit segment; refused without "
                  "opening or waiting on it (remove " +
                  shm_path(name) + " if it should not be there)");
}

/// The trust boundary: same effective uid, or root; never writable by 'other'.
void check_trust(const std::string& name, const struct stat& st, bool allow_other_users) {
  if (allow_other_users) return;
  const uid_t me = ::geteuid();
  // Root's own segments are trusted by every user (root can write any file
  // anyway); root itself trusts only root's: a segment owned by an
  // unprivileged user is one that user can truncate under root's workers.
  if (st.st_uid != me && st.st_uid != 0) {
    throw Error(ErrorCode::kPermission,
                quoted(name) + " is owned by " + describe_user(st.st_uid) + " (mode " +
                    octal_mode(st.st_mode) + "), not by us (" + describe_user(me) +
                    "): refusing to share limits with another user, who could reset "
                    "or truncate them; " +
                    kShareHint);
  }
  if ((st.st_mode & S_IWOTH) != 0) {
    throw Error(ErrorCode::kPermission,
                quoted(name) + " is writable by every user (mode " + octal_mode(st.st_mode) +
                    ", owner " + describe_user(st.st_uid) +
                    "): anyone could reset or truncate it; recreate it with a mode such "
                    "as 0600 or 0660, or " +
                    kShareHint);
  }
}

[[noreturn]] void throw_system(const std::string& name, const char* action, int err) {
  switch (err) {
    case ENOENT:
      throw Error(
          ErrorCode::kNotFound,
          quoted(name) + " does not exist (create it first, e.g. `shmlimit create " + name + "`)");
    case EEXIST:
      throw Error(
          ErrorCode::kExists,
          quoted(name) + " already exists (open it, or remove it with `shmlimit rm " + name + "`)");
    case EACCES:
    case EPERM:
      throw Error(ErrorCode::kPermission,
                  "permission denied to " + std::string(action) + " " + quoted(name) +
                      " (check its owner and mode in /dev/shm" + name + ")");
    default:
      throw Error(ErrorCode::kSystem,
                  "cannot " + std::string(action) + " " + quoted(name) + ": " + std::strerror(err));
  }
}

int native_error(const bip::interprocess_exception& e) {
  const int err = e.get_native_error();
  if (err != 0) return err;
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      return EEXIST;
    case bip::not_found_error:
      return ENOENT;
    case bip::security_error:
      return EACCES;
    default:
      return EIO;
  }
}

std::uint32_t round_up_pow2(std::uint64_t v) {
  std::uint64_t p = kMinCapacity;
  while (p < v) p <<= 1;
  return static_cast<std::uint32_t>(p);
}

std::uint64_t random_seed() {
  std::uint64_t seed = 0;
  if (::getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed)) {
    seed = static_cast<std::uint64_t>(monotonic_ns()) * 0x9E3779B97F4A7C15ULL ^
           static_cast<std::uint64_t>(::getpid());
  }
  return seed;
}

void check_options(const Options& o) {
  if (o.capacity > kMaxCapacity) {
    throw Error(ErrorCode::kInvalidArgument, "capacity " + std::to_string(o.capacity) +
                                                 " is larger than the maximum " +
                                                 std::to_string(kMaxCapacity));
  }
  if (o.slot_bytes != 64 && o.slot_bytes != 128 && o.slot_bytes != 256) {
    throw Error(ErrorCode::kInvalidArgument,
                "slot_bytes must be 64, 128 or 256, not " + std::to_string(o.slot_bytes));
  }
  if (o.log_entries > kMaxLogEntries) {
    throw Error(ErrorCode::kInvalidArgument, "log_entries must be at most " +
                                                 std::to_string(kMaxLogEntries) + ", not " +
                                                 std::to_string(o.log_entries));
  }
  if (o.max_probe < 1 || o.max_probe > 1024) {
    throw Error(ErrorCode::kInvalidArgument,
                "max_probe must be between 1 and 1024, not " + std::to_string(o.max_probe));
  }
}

/// The mode of a segment we may create. One writable by 'other' would be
/// refused by every later open (check_trust), so it is refused here first.
void check_create_mode(const Options& o) {
  if ((o.mode & S_IWOTH) != 0 && !o.allow_other_users) {
    throw Error(ErrorCode::kInvalidArgument,
                "mode " + octal_mode(o.mode) +
                    " makes the segment writable by every user, who could reset or "
                    "truncate it; use 0600 or 0660, or " +
                    kShareHint);
  }
}

/// The cure for a /dev/shm too small to hold `needed_total` bytes.
std::string more_room(std::uint64_t needed_total) {
  constexpr std::uint64_t kMiB = 1024 * 1024;
  const std::string mib = std::to_string((needed_total + kMiB - 1) / kMiB + 1);
  return "give /dev/shm more room (Docker: `--shm-size=" + mib +
         "m`; otherwise `mount -o remount,size=" + mib + "M /dev/shm`)";
}

/// Reserves every byte of the new segment's file (fd), so that no page
/// fault on it can ever fail for want of room (on tmpfs a page that
/// cannot be allocated is a SIGBUS in whoever touches it). Throws
/// Error(kNoSpace) naming the bytes needed and available and the cure. The
/// caller removes the file on any throw.
void reserve_every_byte(int fd, const std::string& name, std::uint64_t bytes) {
  const std::string needs = "cannot create " + quoted(name) + ": it needs " +
                            std::to_string(bytes) + " bytes (" + human_bytes(bytes) + ")";
  struct statvfs fs {};
  const bool have_fs = ::fstatvfs(fd, &fs) == 0;
  const std::uint64_t fs_total =
      have_fs ? static_cast<std::uint64_t>(fs.f_blocks) * fs.f_frsize : 0;
  const std::uint64_t fs_used =
      have_fs ? (static_cast<std::uint64_t>(fs.f_blocks) - fs.f_bfree) * fs.f_frsize : 0;
  struct sysinfo si {};
  const std::uint64_t memory =
      ::sysinfo(&si) == 0 ? (static_cast<std::uint64_t>(si.totalram) + si.totalswap) * si.mem_unit
                          : 0;
  // Refused up front: more than RAM + swap, which bound any tmpfs, or than
  // the file system's size (tmpfs "size="; 0 when unlimited).
  if (memory != 0 && bytes > memory) {
    throw Error(ErrorCode::kNoSpace,
                needs + " but this machine's RAM + swap is " + std::to_string(memory) + " bytes (" +
                    human_bytes(memory) +
                    "), so it can never hold it; ask for a smaller capacity (or fewer "
                    "log_entries)");
  }
  if (fs_total != 0 && bytes > fs_total) {
    throw Error(ErrorCode::kNoSpace,
                needs + " but the file system of /dev/shm holds at most " +
                    std::to_string(fs_total) + " bytes (" + human_bytes(fs_total) + "); " +
                    more_room(fs_used + bytes) + " or ask for a smaller capacity");
  }
  int err = 0;
  do {
    err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  } while (err == EINTR);
  if (err == 0) return;
  if (err != ENOSPC && err != EFBIG) throw_system(name, "reserve the space of", err);
  // posix_fallocate on tmpfs gives back what it allocated when it fails, so
  // the free space now is what was free before.
  const bool again = ::fstatvfs(fd, &fs) == 0;
  const std::uint64_t free_bytes =
      again ? static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize : 0;
  const std::uint64_t used =
      again ? (static_cast<std::uint64_t>(fs.f_blocks) - fs.f_bfree) * fs.f_frsize : 0;
  throw Error(ErrorCode::kNoSpace, needs + " but /dev/shm has " + std::to_string(free_bytes) +
                                       " bytes (" + human_bytes(free_bytes) + ") free; " +
                                       more_room(used + bytes) +
                                       ", remove unused segments, or ask for a smaller capacity");
}

}  // namespace

SegmentFile::~SegmentFile() {
  if (fd_ >= 0) ::close(fd_);
}

SegmentFile::SegmentFile(SegmentFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), name_(std::move(other.name_)) {}

SegmentFile& SegmentFile::operator=(SegmentFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    name_ = std::move(other.name_);
  }
  return *this;
}

struct stat SegmentFile::status() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw_system(name_, "stat", errno);
  return st;
}

SegmentFile SegmentFile::open(const std::string& name, bool read_only, bool allow_other_users) {
  // lstat first, so that a FIFO or a device is refused before it is even
  // opened (opening a device can have effects of its own). The fstat below
  // is the check that counts: it is of the file we actually opened.
  struct stat st {};
  if (::lstat(shm_path(name).c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw_not_regular(name, st.st_mode);
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
  // O_NOFOLLOW: a symlink planted at the name is ELOOP, not followed.
  const int flags = (read_only ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
  const int fd = ::shm_open(name.c_str(), flags, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) throw_not_regular(name, S_IFLNK);
    if (err == EISDIR) throw_not_regular(name, S_IFDIR);
    throw_system(name, read_only ? "open (read-only)" : "open", err);
  }
  SegmentFile file;
  file.fd_ = fd;
  file.name_ = name;
  const struct stat now = file.status();
  if (!S_ISREG(now.st_mode)) throw_not_regular(name, now.st_mode);
  check_trust(name, now, allow_other_users);
  return file;
}

Segment::Segment() = default;
Segment::~Segment() = default;

std::string Segment::size_problem() const {
  struct stat st {};
  if (mapping_ == nullptr || ::fstat(mapping_->fd(), &st) != 0) return {};
  const auto file_bytes = static_cast<std::uint64_t>(st.st_size);
  if (file_bytes == size_) return {};
  return "the file is " + std::to_string(file_bytes) + " bytes but the segment maps " +
         std::to_string(size_) +
         (file_bytes < size_
              ? " (truncated while in use: the pages past its end raise SIGBUS when touched)"
              : " (resized while in use)");
}

void Segment::check_name(const std::string& name) {
  const auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::kInvalidArgument, "invalid segment name \"" + name + "\": " + why);
  };
  if (name.size() < 2 || name[0] != '/')
    bad("it must start with '/' and have at least one more character, e.g. /myapp");
  if (name.size() > 201) bad("it is longer than 200 characters after the '/'");
  for (std::size_t i = 1; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) bad("character " + std::to_string(i + 1) + " is not one of A-Z a-z 0-9 _ . -");
  }
  if (name == "/." || name == "/..") bad("it is not a file name");
}

namespace {

/// Empty when `magic` is that of `kind`; else why the segment is refused:
/// the other kind by name, or "bad magic" for anything else.
std::string kind_problem(std::uint64_t magic, SegmentKind kind) {
  if (magic == magic_of(kind)) return {};
  for (const SegmentKind other : {SegmentKind::kLimiter, SegmentKind::kLeasePool}) {
    if (other != kind && magic == magic_of(other)) {
      return std::string("it is ") + describe(other) + ", not " + describe(kind);
    }
  }
  return kind == SegmentKind::kLimiter
             ? "it is not a shmlimit segment (bad magic)"
             : std::string("it is not ") + describe(kind) + " (bad magic)";
}

}  // namespace

std::string Segment::validate(const std::byte* base, std::size_t size,
                              std::uint32_t expected_capacity, Geometry* out, SegmentKind kind) {
  if (size < sizeof(Header)) {
    return "it is " + std::to_string(size) + " bytes, smaller than a header (" +
           std::to_string(sizeof(Header)) + ")";
  }
  const auto& h = *reinterpret_cast<const Header*>(base);
  const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
  if (std::string why = kind_problem(magic, kind); !why.empty()) return why;
  if (h.init_state.load(std::memory_order_acquire) != kInitReady) return "it is not initialised";
  if (h.layout_version != kLayoutVersion) {
    // An older segment is not migrated in place (its regions would move
    // under the workers that map it): it is refused, with the cure.
    return "its layout version is " + std::to_string(h.layout_version) +
           ", this library reads version " + std::to_string(kLayoutVersion) +
           (h.layout_version < kLayoutVersion
                ? " (it was created by an older shmlimit: stop its users, remove it with `shmlimit "
                  "rm` and let "
                  "them create it again, or `shmlimit export` its buckets first and `import` them)"
                : " (it was created by a newer shmlimit)");
  }
  if (h.fingerprint != layout_fingerprint() || h.header_bytes != sizeof(Header)) {
    return "its layout fingerprint differs from this build's (built with other struct sizes)";
  }
  if (h.capacity < kMinCapacity || h.capacity > kMaxCapacity ||
      (h.capacity & (h.capacity - 1)) != 0) {
    return "corrupt header: its capacity " + std::to_string(h.capacity) +
           " is not a power of two in range";
  }
  if (h.slot_bytes != 64 && h.slot_bytes != 128 && h.slot_bytes != 256) {
    return "corrupt header: its slot size " + std::to_string(h.slot_bytes) +
           " is not 64, 128 or 256";
  }
  if (h.max_probe < 1 || h.max_probe > 1024 || h.max_probe > h.capacity) {
    return "corrupt header: its max_probe " + std::to_string(h.max_probe) + " is out of range";
  }
  if (h.max_policies != kMaxPolicies || h.max_processes != kMaxProcesses)
    return "its table sizes differ from this build's";
  if (h.log_entries > kMaxLogEntries) {
    return "corrupt header: its log_entries " + std::to_string(h.log_entries) + " is out of range";
  }
  const Geometry g = Geometry::compute(h.capacity, h.slot_bytes, h.max_probe, h.log_entries);
  if (h.policy_offset != g.policy_offset || h.process_offset != g.process_offset ||
      h.slot_offset != g.slot_offset || h.total_bytes != g.total_bytes ||
      h.lease_offset != g.lease_offset || h.log_offset != g.log_offset) {
    return "its offsets contradict its capacity (corrupt header)";
  }
  if (std::string why = epoch_problem(h.epoch_raw_ns); !why.empty()) return why;
  if (size != g.total_bytes) {
    return "it is " + std::to_string(size) + " bytes but its header says " +
           std::to_string(g.total_bytes) + " (truncated or resized)";
  }
  if (expected_capacity != 0 && round_up_pow2(expected_capacity) != h.capacity) {
    return "its capacity is " + std::to_string(h.capacity) + " slots, not the " +
           std::to_string(round_up_pow2(expected_capacity)) + " asked for";
  }
  if (out != nullptr) *out = g;
  return {};
}

std::string Segment::epoch_problem(std::int64_t epoch_raw_ns) {
  const std::int64_t now = segment_clock_ns();
  if (epoch_raw_ns <= now) return {};
  // Whole ms, rounded up: "0 ms in the future" would read as no problem.
  const std::int64_t ahead_ms = (epoch_raw_ns - now) / 1'000'000 + 1;
  return "corrupt header: its epoch (CLOCK_MONOTONIC_RAW " + std::to_string(epoch_raw_ns) +
         " ns) is " + std::to_string(ahead_ms) +
         " ms in the future, so every bucket's clock would stand still at 0 (the header was "
         "overwritten, or "
         "this process runs in another time namespace); it cannot be repaired while processes use "
         "it: stop "
         "them, remove it with `shmlimit rm` and let them create it again";
}

std::unique_ptr<Segment> Segment::open(const Options& options, Mode mode, SegmentKind kind) {
  check_name(options.name);
  check_options(options);
  if (mode != Mode::kOpen) check_create_mode(options);  // open() never uses the mode
  // Capacity 0 means "any" to an open; a segment to create needs a size
  // (0 once silently became 65536). open_or_create(0) may still open.
  const auto no_capacity = [&] {
    return Error(ErrorCode::kInvalidArgument,
                 "cannot create " + quoted(options.name) +
                     " with capacity 0: a new segment needs at least 1 slot "
                     "(Options::capacity 0 means any capacity to an open only)");
  };
  if (mode == Mode::kCreate && options.capacity == 0) throw no_capacity();
  const std::string& name = options.name;
  auto seg = std::make_unique<Segment>();
  seg->name_ = name;
  seg->read_only_ = options.read_only;
  if (options.read_only && mode != Mode::kOpen) {
    throw Error(ErrorCode::kReadOnly,
                "cannot create " + quoted(name) + " through a read-only handle");
  }
  const auto deadline = std::chrono::steady_clock::now() + options.open_timeout;

  for (;;) {
    auto m = std::make_unique<Mapping>();
    bool we_create = false;
    if (mode != Mode::kOpen) {
      // Try to be the creator. O_CREAT|O_EXCL never opens what is already
      // at the name (FIFO, symlink, another user's file).
      try {
        bip::permissions perm;
        perm.set_permissions(static_cast<int>(options.mode & 07777));
        m->shm = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write, perm);
        we_create = true;
      } catch (const bip::interprocess_exception& e) {
        const int err = native_error(e);
        if (err != EEXIST || mode == Mode::kCreate) throw_system(name, "create", err);
        // It exists: fall through and open it.
      }
      if (we_create) {
        if (options.capacity == 0) {
          bip::shared_memory_object::remove(name.c_str());
          throw no_capacity();
        }
        const std::uint32_t capacity = round_up_pow2(options.capacity);
        const Geometry g =
            Geometry::compute(capacity, options.slot_bytes, std::min(options.max_probe, capacity),
                              options.log_entries);
        // Until kInitReady is published the file is ours alone: any failure
        // removes it, so a failed create leaves nothing behind.
        try {
          reserve_every_byte(m->fd(), name, g.total_bytes);
          m->region = bip::mapped_region(m->shm, bip::read_write, 0,
                                         static_cast<std::size_t>(g.total_bytes));
        } catch (const bip::interprocess_exception& e) {
          bip::shared_memory_object::remove(name.c_str());
          throw_system(name, "map", native_error(e));
        } catch (...) {
          bip::shared_memory_object::remove(name.c_str());
          throw;
        }
        auto* base = static_cast<std::byte*>(m->region.get_address());
        // The object is zero-filled by posix_fallocate: every atomic starts
        // at 0 (layout.hpp invariant 3). Construct the header's atomics in
        // place so that the creator's stores are to live objects.
        auto* h = new (base) Header{};
        h->layout_version = kLayoutVersion;
        h->header_bytes = sizeof(Header);
        h->fingerprint = layout_fingerprint();
        h->capacity = g.capacity;
        h->slot_bytes = g.slot_bytes;
        h->max_probe = g.max_probe;
        h->max_policies = kMaxPolicies;
        h->max_processes = kMaxProcesses;
        h->creator_pid = static_cast<std::uint32_t>(::getpid());
        h->total_bytes = g.total_bytes;
        h->policy_offset = g.policy_offset;
        h->process_offset = g.process_offset;
        h->slot_offset = g.slot_offset;
        h->log_entries = g.log_entries;
        h->lease_offset = g.lease_offset;
        h->log_offset = g.log_offset;
        h->epoch_raw_ns = segment_clock_ns();
        h->created_unix_ns = realtime_ns();
        h->hash_seed = random_seed();
        h->magic.store(magic_of(kind), std::memory_order_relaxed);
        // Release: every field above is visible to whoever observes
        // kInitReady with an acquire load (open path below).
        h->init_state.store(kInitReady, std::memory_order_release);
        const std::string why = validate(base, m->region.get_size(), 0, &seg->geo_, kind);
        if (!why.empty()) {
          bip::shared_memory_object::remove(name.c_str());
          throw Error(ErrorCode::kCorrupt, "created " + quoted(name) + " but " + why);
        }
        seg->created_ = true;
      }
    }
    if (!seg->created_) {
      try {
        m->file = SegmentFile::open(name, options.read_only, options.allow_other_users);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kNotFound && mode == Mode::kOpenOrCreate)
          continue;  // removed between tries
        throw;
      }
      // Wait for the creator: first for the size, then for kInitReady.
      bool removed = false;
      for (;;) {
        const struct stat st = m->file.status();
        if (st.st_nlink == 0) {  // unlinked: a create that failed, or `shmlimit rm`
          removed = true;
          break;
        }
        const auto size = static_cast<std::uint64_t>(st.st_size);
        // Map only what the file holds now, and only once it holds the
        // header: no page past its end is ever touched (that is a SIGBUS).
        if (size >= sizeof(Header)) {
          try {
            m->region =
                bip::mapped_region(m->file, options.read_only ? bip::read_only : bip::read_write, 0,
                                   static_cast<std::size_t>(size));
          } catch (const bip::interprocess_exception& e) {
            throw_system(name, "map", native_error(e));
          }
          const auto* base = static_cast<const std::byte*>(m->region.get_address());
          const auto& h = *reinterpret_cast<const Header*>(base);
          const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
          if (magic != 0 && magic != magic_of(kind)) {
            throw Error(ErrorCode::kIncompatible,
                        "cannot use " + quoted(name) + ": " + kind_problem(magic, kind));
          }
          // Acquire pairs with the creator's release store of kInitReady.
          if (magic == magic_of(kind) &&
              h.init_state.load(std::memory_order_acquire) == kInitReady) {
            // validate() compares the mapped size (the file's, above) with
            // the header's total_bytes before anything past the header is read.
            std::string why =
                validate(base, m->region.get_size(), options.capacity, &seg->geo_, kind);
            if (why.empty() &&
                static_cast<std::uint64_t>(m->file.status().st_size) < seg->geo_.total_bytes) {
              why =
                  "it was truncated while being opened (the file is shorter than its header says)";
            }
            if (!why.empty()) {
              const bool corrupt = why.find("corrupt") != std::string::npos;
              throw Error(corrupt ? ErrorCode::kCorrupt : ErrorCode::kIncompatible,
                          "cannot use " + quoted(name) + ": " + why);
            }
            break;
          }
          m->region = bip::mapped_region();
        }
        if (std::chrono::steady_clock::now() > deadline) {
          throw Error(ErrorCode::kTimeout,
                      quoted(name) + " was not initialised within " +
                          std::to_string(options.open_timeout.count()) +
                          " ms (its creator may have died; remove it with `shmlimit rm " + name +
                          "`)");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (removed) {
        if (mode == Mode::kOpenOrCreate) continue;
        throw Error(ErrorCode::kNotFound,
                    quoted(name) +
                        " was removed while waiting for its creator (its create may have failed)");
      }
    }
    seg->base_ = static_cast<std::byte*>(m->region.get_address());
    seg->size_ = m->region.get_size();
    const Header& h = seg->header();
    seg->epoch_raw_ns_ = h.epoch_raw_ns;
    seg->created_unix_ns_ = h.created_unix_ns;
    seg->hash_seed_ = h.hash_seed;
    seg->mapping_ = std::move(m);
    return seg;
  }
}

bool Segment::remove(const std::string& name) {
  check_name(name);
  if (bip::shared_memory_object::remove(name.c_str())) return true;
  const int err = errno;
  if (err == ENOENT) return false;
  throw_system(name, "remove", err);
}

}  // namespace shmlimit::detail
