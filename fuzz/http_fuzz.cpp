// Fuzz target: rate-limit headers. Fuzzed decisions, options, policy names
// and windows through http_verdict(), rate_limit_headers(),
// write_rate_limit_headers() (into a buffer of fuzzed size) and the DRF
// detail.
//
// Input layout (shorter inputs are zero-padded):
//   bytes 0-33   the combined decision: allowed (bit 0 of byte 0), limit,
//                remaining, retry_after ns, reset_after ns (8 bytes each, LE),
//                one unused byte
//   bytes 34-35  refuse_status (int16 LE)
//   byte 36      bit 0 dry_run, bits 1-3 header families, bit 4 DRF detail
//                without a wait
//   bytes 37-38  output buffer size (LE, 0..65535)
//   byte 39      number of policies (mod 5)
//   then, per policy: a name length byte (mod 32), the name, allowed byte,
//                limit, remaining, reset_after, window (8 bytes each)
//
// Checked on every input (doc/headers.md states each rule):
//   * Retry-After is sent exactly when the verdict refuses and the wait is
//     > 0, and its value v satisfies (v - 1) s < retry_after <= v s;
//   * every header value is printable ASCII (no CR, LF or NUL from a policy
//     name can split the block); names are the documented ones;
//   * the buffer writer returns the block's full length, writes it and a
//     NUL when it fits, else only out[0] = NUL, and never past the buffer;
//   * the verdict refuses only a denial, never in dry run, with a 4xx/5xx;
//   * DRF's detail names ceil(wait) seconds.
//
//   fuzz/corpus/http/        seed corpus
//   fuzz/regressions/http/   inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh http 60   (doc/fuzzing.md)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/http.hpp"

namespace {

using shmlimit::Decision;
using shmlimit::Header;
using shmlimit::Nanos;
using shmlimit::PolicyReport;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "http_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(byte()) << (8 * i);
    return v;
  }
  Nanos nanos() { return Nanos{static_cast<std::int64_t>(u64())}; }
  std::string_view bytes(std::size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    const std::string_view s(reinterpret_cast<const char*>(data_) + pos_, n);
    pos_ += n;
    return s;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader in(data, size);
  Decision combined;
  combined.allowed = (in.byte() & 1) != 0;
  combined.limit = in.u64();
  combined.remaining = in.u64();
  combined.retry_after = in.nanos();
  combined.reset_after = in.nanos();
  (void)in.byte();  // byte 33: unused
  shmlimit::HttpOptions options;
  options.refuse_status = static_cast<std::int16_t>(in.byte() | in.byte() << 8);
  const std::uint8_t flags = in.byte();
  options.dry_run = (flags & 1) != 0;
  options.headers = (flags >> 1) & 7U;
  const std::size_t buffer_size = static_cast<std::size_t>(in.byte() | in.byte() << 8);
  const int npolicies = in.byte() % 5;
  std::vector<std::string> names;
  std::vector<PolicyReport> policies;
  names.reserve(4);
  for (int i = 0; i < npolicies; ++i) {
    names.emplace_back(in.bytes(in.byte() % 32));
    PolicyReport p;
    p.name = names.back();
    p.decision.allowed = (in.byte() & 1) != 0;
    p.decision.limit = in.u64();
    p.decision.remaining = in.u64();
    p.decision.reset_after = in.nanos();
    p.window = in.nanos();
    policies.push_back(p);
  }

  const shmlimit::HttpVerdict v = shmlimit::http_verdict(combined, options);
  if (v.refuse && (combined.allowed || options.dry_run))
    fail("refused an allowed request or in dry run", "");
  if (v.would_refuse == combined.allowed) fail("would_refuse is not !allowed", "");
  if (v.refuse != (v.status != 0)) fail("status without refusal", std::to_string(v.status));
  if (v.refuse && (v.status < 400 || v.status > 599))
    fail("status not 4xx/5xx", std::to_string(v.status));

  const std::vector<Header> headers = shmlimit::rate_limit_headers(combined, policies, options);
  std::string block;
  bool saw_retry_after = false;
  for (const Header& h : headers) {
    if (!printable(h.value)) fail("non-printable header value", h.name);
    if (h.name != "Retry-After" && h.name != "X-RateLimit-Limit" &&
        h.name != "X-RateLimit-Remaining" && h.name != "X-RateLimit-Reset" &&
        h.name != "RateLimit-Policy" && h.name != "RateLimit")
      fail("unexpected header name", h.name);
    if (h.name == "Retry-After") {
      saw_retry_after = true;
      const std::uint64_t secs = std::strtoull(h.value.c_str(), nullptr, 10);
      const __int128_t ns = combined.retry_after.count();
      if (static_cast<__int128_t>(secs) * 1'000'000'000 < ns)
        fail("Retry-After earlier than the wait", h.value);
      if (static_cast<__int128_t>(secs - 1) * 1'000'000'000 >= ns)
        fail("Retry-After a second too late", h.value);
    }
    block += h.name + ": " + h.value + "\r\n";
  }
  // A wait no time ends (a cost above the capacity: retry_after is
  // Nanos::max()) is never sent as a number of seconds (doc/headers.md).
  const bool never_fits =
      combined.reason == shmlimit::Reason::kCostTooHigh || combined.retry_after == Nanos::max();
  const bool want_retry_after = (options.headers & shmlimit::kHeadersRetryAfter) && v.refuse &&
                                combined.retry_after > Nanos{0} && !never_fits;
  if (saw_retry_after != want_retry_after)
    fail("Retry-After present when it should not be, or absent", block);

  constexpr std::size_t kGuard = 16;
  std::vector<char> buf(buffer_size + kGuard, '\x5a');
  const std::size_t n = shmlimit::write_rate_limit_headers(
      combined, policies, options, std::span<char>(buf.data(), buffer_size));
  if (n != block.size()) fail("writer length differs from the block", std::to_string(n));
  if (n < buffer_size) {
    if (std::memcmp(buf.data(), block.data(), n) != 0 || buf[n] != '\0')
      fail("writer bytes differ", block);
  } else if (buffer_size > 0 && buf[0] != '\0') {
    fail("a block that does not fit left out[0] set", std::to_string(buffer_size));
  }
  for (std::size_t i = buffer_size; i < buf.size(); ++i)
    if (buf[i] != '\x5a') fail("wrote past the buffer", std::to_string(buffer_size));

  const std::optional<Nanos> wait =
      (flags & 0x10) ? std::optional<Nanos>() : std::optional<Nanos>(combined.retry_after);
  const std::string detail = shmlimit::drf_throttled_detail(wait);
  if (detail.rfind("Request was throttled.", 0) != 0) fail("DRF detail prefix", detail);
  if (wait && *wait == Nanos::max()) {
    if (detail != "Request was throttled.") fail("DRF detail names a wait that never ends", detail);
  } else if (wait) {
    const std::int64_t ns = wait->count();
    std::int64_t want = ns / 1'000'000'000;
    if (ns % 1'000'000'000 > 0) ++want;
    const std::string tail =
        " Expected available in " + std::to_string(want) + (want == 1 ? " second." : " seconds.");
    if (detail != "Request was throttled." + tail) fail("DRF detail differs", detail);
  }
  char small[64];
  const std::size_t dn = shmlimit::write_drf_throttled_detail(wait, small);
  if (dn != detail.size()) fail("DRF detail writer length", detail);
  if (dn < sizeof small && std::string_view(small, dn) != detail)
    fail("DRF detail writer bytes", detail);
  return 0;
}
