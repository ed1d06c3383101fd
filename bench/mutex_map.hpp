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
#include <bit>
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

#include "shm_region.hpp"

namespace shmlimit_bench {

inline std::int64_t alt_mono_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// FNV-1a: the mutex map's hash (and the throughput floor's, which hashes as
// the map does).
inline std::uint64_t fnv1a(std::string_view key) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (const char c : key) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

class MutexMap {
 public:
  static constexpr std::size_t kKeyBytes = 48;

  // Creates (or re-creates) the segment `name` with `capacity` entries
  // (rounded up to a power of two); removed again on destruction.
  MutexMap(std::string name, std::size_t capacity)
      : cap_(std::bit_ceil(std::max<std::size_t>(capacity, 1))),
        shm_(std::move(name), sizeof(Header) + cap_ * sizeof(Entry)) {
    hdr_ = new (shm_.base()) Header;  // a PTHREAD_PROCESS_SHARED mutex on Linux
    hdr_->capacity = cap_;
    entries_ = reinterpret_cast<Entry*>(shm_.base() + sizeof(Header));
  }
  ~MutexMap() { hdr_->~Header(); }  // then shm_ unmaps and removes the segment
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
    const std::uint64_t h = fnv1a(key);
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

  std::size_t cap_;
  ShmRegion shm_;
  Header* hdr_ = nullptr;
  Entry* entries_ = nullptr;
};

}  // namespace shmlimit_bench
