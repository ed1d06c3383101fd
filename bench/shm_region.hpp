// A real POSIX shm segment (shm_open + ftruncate + mmap MAP_SHARED), as the
// limiter's is, created afresh (a leftover of the name is removed first)
// and removed on destruction. Shared by shmlimit_bench's fixtures, the
// mutex map and shmlimit_throughput's floor table.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace shmlimit_bench {

class ShmRegion {
 public:
  ShmRegion(std::string name, std::size_t bytes) : name_(std::move(name)), bytes_(bytes) {
    ::shm_unlink(name_.c_str());  // a leftover of a previous process with our pid
    const int fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) throw std::runtime_error("shm_open " + name_ + ": " + std::strerror(errno));
    void* p = MAP_FAILED;
    if (::ftruncate(fd, static_cast<off_t>(bytes)) == 0) {
      // MAP_POPULATE: no first-touch page faults inside a timed loop.
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    }
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
      ::shm_unlink(name_.c_str());
      throw std::runtime_error("ftruncate/mmap " + name_ + ": " + std::strerror(err));
    }
    base_ = static_cast<std::byte*>(p);
  }
  ~ShmRegion() {
    ::munmap(base_, bytes_);
    ::shm_unlink(name_.c_str());
  }
  ShmRegion(const ShmRegion&) = delete;
  ShmRegion& operator=(const ShmRegion&) = delete;

  std::byte* base() const noexcept { return base_; }

  // The 64-bit atomic at byte `offset` (8-aligned). The mapping is zero-filled,
  // and zero bytes are a valid std::atomic<uint64_t> holding 0.
  std::atomic<std::uint64_t>& word(std::size_t offset) {
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared across processes");
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + offset);
  }

 private:
  std::string name_;
  std::size_t bytes_;
  std::byte* base_ = nullptr;
};

}  // namespace shmlimit_bench
