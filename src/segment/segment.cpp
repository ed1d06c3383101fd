#include "segment/segment.hpp"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>

namespace bip = boost::interprocess;

namespace shmlimit::detail {

struct Segment::Mapping {
  bip::shared_memory_object shm;
  bip::mapped_region region;
};

namespace {

std::string quoted(const std::string& name) { return "shared-memory segment " + name; }

[[noreturn]] void throw_system(const std::string& name, const char* action, int err) {
  switch (err) {
    case ENOENT:
      throw Error(ErrorCode::kNotFound, quoted(name) + " does not exist (create it first, e.g. `shmlimit create " + name + "`)");
    case EEXIST:
      throw Error(ErrorCode::kExists, quoted(name) + " already exists (open it, or remove it with `shmlimit rm " + name + "`)");
    case EACCES:
    case EPERM:
      throw Error(ErrorCode::kPermission, "permission denied to " + std::string(action) + " " + quoted(name) +
                                              " (check its owner and mode in /dev/shm" + name + ")");
    default:
      throw Error(ErrorCode::kSystem, "cannot " + std::string(action) + " " + quoted(name) + ": " + std::strerror(err));
  }
}

int native_error(const bip::interprocess_exception& e) {
  const int err = e.get_native_error();
  if (err != 0) return err;
  switch (e.get_error_code()) {
    case bip::already_exists_error: return EEXIST;
    case bip::not_found_error: return ENOENT;
    case bip::security_error: return EACCES;
    default: return EIO;
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
    seed = static_cast<std::uint64_t>(monotonic_ns()) * 0x9E3779B97F4A7C15ULL ^ static_cast<std::uint64_t>(::getpid());
  }
  return seed;
}

void check_options(const Options& o) {
  if (o.capacity > kMaxCapacity) {
    throw Error(ErrorCode::kInvalidArgument, "capacity " + std::to_string(o.capacity) + " is larger than the maximum " +
                                                 std::to_string(kMaxCapacity));
  }
  if (o.slot_bytes != 64 && o.slot_bytes != 128 && o.slot_bytes != 256) {
    throw Error(ErrorCode::kInvalidArgument, "slot_bytes must be 64, 128 or 256, not " + std::to_string(o.slot_bytes));
  }
  if (o.log_entries > kMaxLogEntries) {
    throw Error(ErrorCode::kInvalidArgument, "log_entries must be at most " + std::to_string(kMaxLogEntries) + ", not " +
                                                 std::to_string(o.log_entries));
  }
  if (o.max_probe < 1 || o.max_probe > 1024) {
    throw Error(ErrorCode::kInvalidArgument, "max_probe must be between 1 and 1024, not " + std::to_string(o.max_probe));
  }
}

}  // namespace

Segment::Segment() = default;
Segment::~Segment() = default;

void Segment::check_name(const std::string& name) {
  const auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::kInvalidArgument, "invalid segment name \"" + name + "\": " + why);
  };
  if (name.size() < 2 || name[0] != '/') bad("it must start with '/' and have at least one more character, e.g. /myapp");
  if (name.size() > 201) bad("it is longer than 200 characters after the '/'");
  for (std::size_t i = 1; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == '-';
    if (!ok) bad("character " + std::to_string(i + 1) + " is not one of A-Z a-z 0-9 _ . -");
  }
  if (name == "/." || name == "/..") bad("it is not a file name");
}

std::string Segment::validate(const std::byte* base, std::size_t size, std::uint32_t expected_capacity,
                              Geometry* out) {
  if (size < sizeof(Header)) {
    return "it is " + std::to_string(size) + " bytes, smaller than a header (" + std::to_string(sizeof(Header)) + ")";
  }
  const auto& h = *reinterpret_cast<const Header*>(base);
  const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
  if (magic != kMagic) return "it is not a shmlimit segment (bad magic)";
  if (h.init_state.load(std::memory_order_acquire) != kInitReady) return "it is not initialised";
  if (h.layout_version != kLayoutVersion) {
    return "its layout version is " + std::to_string(h.layout_version) + ", this library reads version " +
           std::to_string(kLayoutVersion);
  }
  if (h.fingerprint != layout_fingerprint() || h.header_bytes != sizeof(Header)) {
    return "its layout fingerprint differs from this build's (built with other struct sizes)";
  }
  if (h.capacity < kMinCapacity || h.capacity > kMaxCapacity || (h.capacity & (h.capacity - 1)) != 0) {
    return "corrupt header: its capacity " + std::to_string(h.capacity) + " is not a power of two in range";
  }
  if (h.slot_bytes != 64 && h.slot_bytes != 128 && h.slot_bytes != 256) {
    return "corrupt header: its slot size " + std::to_string(h.slot_bytes) + " is not 64, 128 or 256";
  }
  if (h.max_probe < 1 || h.max_probe > 1024 || h.max_probe > h.capacity) {
    return "corrupt header: its max_probe " + std::to_string(h.max_probe) + " is out of range";
  }
  if (h.max_policies != kMaxPolicies || h.max_processes != kMaxProcesses) return "its table sizes differ from this build's";
  if (h.log_entries > kMaxLogEntries) {
    return "corrupt header: its log_entries " + std::to_string(h.log_entries) + " is out of range";
  }
  const Geometry g = Geometry::compute(h.capacity, h.slot_bytes, h.max_probe, h.log_entries);
  if (h.policy_offset != g.policy_offset || h.process_offset != g.process_offset || h.slot_offset != g.slot_offset ||
      h.total_bytes != g.total_bytes || h.lease_offset != g.lease_offset || h.log_offset != g.log_offset) {
    return "its offsets contradict its capacity (corrupt header)";
  }
  if (size != g.total_bytes) {
    return "it is " + std::to_string(size) + " bytes but its header says " + std::to_string(g.total_bytes) +
           " (truncated or resized)";
  }
  if (expected_capacity != 0 && round_up_pow2(expected_capacity) != h.capacity) {
    return "its capacity is " + std::to_string(h.capacity) + " slots, not the " +
           std::to_string(round_up_pow2(expected_capacity)) + " asked for";
  }
  if (out != nullptr) *out = g;
  return {};
}

std::unique_ptr<Segment> Segment::open(const Options& options, Mode mode) {
  check_name(options.name);
  check_options(options);
  const std::string& name = options.name;
  auto seg = std::make_unique<Segment>();
  seg->name_ = name;
  seg->read_only_ = options.read_only;
  if (options.read_only && mode != Mode::kOpen) {
    throw Error(ErrorCode::kReadOnly, "cannot create " + quoted(name) + " through a read-only handle");
  }
  const auto deadline = std::chrono::steady_clock::now() + options.open_timeout;

  for (;;) {
    auto m = std::make_unique<Mapping>();
    bool we_create = false;
    if (mode != Mode::kOpen) {
      // Try to be the creator.
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
        const std::uint32_t capacity = round_up_pow2(options.capacity == 0 ? 65536 : options.capacity);
        const Geometry g =
            Geometry::compute(capacity, options.slot_bytes, std::min(options.max_probe, capacity), options.log_entries);
        try {
          m->shm.truncate(static_cast<bip::offset_t>(g.total_bytes));
          m->region = bip::mapped_region(m->shm, bip::read_write);
        } catch (const bip::interprocess_exception& e) {
          const int err = native_error(e);
          bip::shared_memory_object::remove(name.c_str());
          throw_system(name, "size and map", err);
        }
        auto* base = static_cast<std::byte*>(m->region.get_address());
        // The object is zero-filled by ftruncate: every atomic starts at 0
        // (layout.hpp invariant 3). Construct the header's atomics in place
        // so that the creator's stores are to live objects.
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
        h->epoch_mono_ns = monotonic_ns();
        h->created_unix_ns = realtime_ns();
        h->hash_seed = random_seed();
        h->magic.store(kMagic, std::memory_order_relaxed);
        // Release: every field above is visible to whoever observes
        // kInitReady with an acquire load (open path below).
        h->init_state.store(kInitReady, std::memory_order_release);
        seg->created_ = true;
      }
    }
    if (!seg->created_) {
      try {
        m->shm = bip::shared_memory_object(bip::open_only, name.c_str(),
                                           options.read_only ? bip::read_only : bip::read_write);
      } catch (const bip::interprocess_exception& e) {
        const int err = native_error(e);
        if (err == ENOENT && mode == Mode::kOpenOrCreate) continue;  // removed between tries
        throw_system(name, options.read_only ? "open (read-only)" : "open", err);
      }
      // Wait for the creator: first for the size, then for kInitReady.
      for (;;) {
        bip::offset_t size = 0;
        if (!m->shm.get_size(size)) size = 0;
        std::string why;
        if (static_cast<std::size_t>(size) >= sizeof(Header)) {
          try {
            m->region = bip::mapped_region(m->shm, options.read_only ? bip::read_only : bip::read_write);
          } catch (const bip::interprocess_exception& e) {
            throw_system(name, "map", native_error(e));
          }
          const auto* base = static_cast<const std::byte*>(m->region.get_address());
          const auto& h = *reinterpret_cast<const Header*>(base);
          const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
          if (magic != 0 && magic != kMagic) {
            throw Error(ErrorCode::kIncompatible, quoted(name) + " is not a shmlimit segment (bad magic)");
          }
          // Acquire pairs with the creator's release store of kInitReady.
          if (magic == kMagic && h.init_state.load(std::memory_order_acquire) == kInitReady) {
            why = validate(base, m->region.get_size(), options.capacity, &seg->geo_);
            if (!why.empty()) {
              const bool corrupt = why.find("corrupt") != std::string::npos;
              throw Error(corrupt ? ErrorCode::kCorrupt : ErrorCode::kIncompatible, "cannot use " + quoted(name) + ": " + why);
            }
            break;
          }
          m->region = bip::mapped_region();
        }
        if (std::chrono::steady_clock::now() > deadline) {
          throw Error(ErrorCode::kTimeout, quoted(name) + " was not initialised within " +
                                               std::to_string(options.open_timeout.count()) +
                                               " ms (its creator may have died; remove it with `shmlimit rm " + name + "`)");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    } else {
      const std::string why = validate(static_cast<const std::byte*>(m->region.get_address()), m->region.get_size(), 0,
                                       &seg->geo_);
      if (!why.empty()) throw Error(ErrorCode::kCorrupt, "created " + quoted(name) + " but " + why);
    }
    seg->base_ = static_cast<std::byte*>(m->region.get_address());
    seg->size_ = m->region.get_size();
    const Header& h = seg->header();
    seg->epoch_mono_ns_ = h.epoch_mono_ns;
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
