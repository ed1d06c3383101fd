// The named segment: create / open / validate with Boost.Interprocess.
//
// Initialisation race: the creator is whoever wins shm_open(O_CREAT|O_EXCL)
// (create_only). It sizes the object (zero-filled), writes the header and
// only then publishes init_state = kInitReady with a release store. Openers
// wait (bounded by Options::open_timeout) until they observe kInitReady with
// an acquire load, so none ever reads a half-written header, and a waiter
// that gives up gets Error(kTimeout) naming the segment.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "segment/clock.hpp"
#include "segment/layout.hpp"
#include "shmlimit/shmlimit.hpp"

namespace shmlimit::detail {

class Segment {
 public:
  enum class Mode { kCreate, kOpen, kOpenOrCreate };

  /// Throws shmlimit::Error with a sentence naming the segment and what differs.
  static std::unique_ptr<Segment> open(const Options& options, Mode mode);
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
  std::int64_t epoch_mono_ns() const { return epoch_mono_ns_; }
  std::int64_t created_unix_ns() const { return created_unix_ns_; }
  std::uint64_t hash_seed() const { return hash_seed_; }

  /// Validates the bytes of a mapped segment of `size` bytes. Returns an
  /// empty string when valid, else the reason. Reads, never writes; safe on
  /// any bytes (the fuzz target and `shmlimit check` use it directly).
  static std::string validate(const std::byte* base, std::size_t size, std::uint32_t expected_capacity,
                              Geometry* out);

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
  std::int64_t epoch_mono_ns_ = 0;
  std::int64_t created_unix_ns_ = 0;
  std::uint64_t hash_seed_ = 0;
};

}  // namespace shmlimit::detail
