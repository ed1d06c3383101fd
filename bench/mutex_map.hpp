// The alternative a user would write without shmlimit: one
// Boost.Interprocess interprocess_mutex guarding a fixed-size open-addressing
// table of GCRA states, all in one POSIX shared-memory segment. Same GCRA
// step as shmlimit, written inline:
//     tat' = max(tat, now) + T;  admitted iff tat' - now <= B * T  (then stored)
// Shared by shmlimit_bench (bench_acquire.cpp) and shmlimit_throughput
// (throughput.cpp). Processes share it by fork() (the mapping is MAP_SHARED)
// or by opening the same name.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

namespace shmlimit_bench {

inline std::int64_t alt_mono_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class MutexMap {
 public:
  static constexpr std::size_t kKeyBytes = 48;

  // Creates (or re-creates) the segment `name` with `capacity` entries
  // (rounded up to a power of two); removed again on destruction.
  MutexMap(std::string name, std::size_t capacity) : name_(std::move(name)) {
    cap_ = 1;
    while (cap_ < capacity) cap_ <<= 1;
    bytes_ = sizeof(Header) + cap_ * sizeof(Entry);
    ::shm_unlink(name_.c_str());
    const int fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw std::runtime_error("shm_open " + name_ + ": " + std::strerror(errno));
    void* p = MAP_FAILED;
    if (::ftruncate(fd, static_cast<off_t>(bytes_)) == 0) {
      p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    }
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
      ::shm_unlink(name_.c_str());
      throw std::runtime_error("ftruncate/mmap " + name_ + ": " + std::strerror(err));
    }
    hdr_ = new (p) Header;  // a PTHREAD_PROCESS_SHARED mutex on Linux
    hdr_->capacity = cap_;
    entries_ = reinterpret_cast<Entry*>(static_cast<std::byte*>(p) + sizeof(Header));
  }
  ~MutexMap() {
    hdr_->~Header();
    ::munmap(hdr_, bytes_);
    ::shm_unlink(name_.c_str());
  }
  MutexMap(const MutexMap&) = delete;
  MutexMap& operator=(const MutexMap&) = delete;

  // One GCRA decision for `key` at CLOCK_MONOTONIC now: emission interval
  // `t_ns`, burst `burst`. A key that finds no free entry is admitted
  // (fail-open, like shmlimit's default) and counted in full_events.
  // `clock`: a monotonic clock in ns, clock_gettime(CLOCK_MONOTONIC) unless
  // told otherwise.
  bool acquire(std::string_view key, std::uint64_t t_ns, std::uint64_t burst,
               std::int64_t (*clock)() noexcept = alt_mono_ns) noexcept {
    const auto now = static_cast<std::uint64_t>(clock());
    const std::uint64_t h = hash(key);
    boost::interprocess::scoped_lock<boost::interprocess::interprocess_mutex> lock(hdr_->mu);
    Entry* e = find_or_insert(key, h);
    if (e == nullptr) {
      ++hdr_->full_events;
      return true;
    }
    const std::uint64_t tat = std::max(e->tat, now) + t_ns;
    if (tat - now > burst * t_ns) return false;
    e->tat = tat;
    return true;
  }

  std::uint64_t full_events() const noexcept { return hdr_->full_events; }

 private:
  struct alignas(64) Header {
    boost::interprocess::interprocess_mutex mu;
    std::uint64_t capacity = 0;
    std::uint64_t full_events = 0;
  };
  struct alignas(64) Entry {
    std::uint64_t tat;  // GCRA theoretical arrival time, ns (CLOCK_MONOTONIC)
    std::uint32_t len;  // 0 = empty
    char key[kKeyBytes];
  };
  static_assert(sizeof(Entry) == 64);

  static std::uint64_t hash(std::string_view key) noexcept {  // FNV-1a
    std::uint64_t h = 1469598103934665603ull;
    for (const char c : key) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
    return h;
  }

  Entry* find_or_insert(std::string_view key, std::uint64_t h) noexcept {
    if (key.empty() || key.size() > kKeyBytes) return nullptr;
    const std::size_t mask = cap_ - 1;
    for (std::size_t i = 0, s = h & mask; i < cap_; ++i, s = (s + 1) & mask) {
      Entry& e = entries_[s];
      if (e.len == 0) {
        e.len = static_cast<std::uint32_t>(key.size());
        std::memcpy(e.key, key.data(), key.size());
        e.tat = 0;
        return &e;
      }
      if (e.len == key.size() && std::memcmp(e.key, key.data(), key.size()) == 0) return &e;
    }
    return nullptr;
  }

  std::string name_;
  std::size_t cap_ = 0;
  std::size_t bytes_ = 0;
  Header* hdr_ = nullptr;
  Entry* entries_ = nullptr;
};

}  // namespace shmlimit_bench
