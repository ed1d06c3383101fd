// shmlimit HTTP responses: the status and headers that report a Decision.
//
//   Retry-After            whole seconds, rounded UP (never earlier than the
//                          real wait; a 1 ns wait is 1 s), only when refusing
//   X-RateLimit-Limit      Decision::limit (the de-facto GitHub/Twitter trio,
//   X-RateLimit-Remaining  Decision::remaining  of the combined decision)
//   X-RateLimit-Reset      seconds until the bucket is full, rounded up
//   RateLimit-Policy       IETF draft-ietf-httpapi-ratelimit-headers
//   RateLimit              (the version and syntax are in doc/headers.md):
//                          one list item per policy, e.g.
//                          RateLimit-Policy: "burst";q=20;w=12, "sustained";q=1000;w=86400
//                          RateLimit: "burst";r=0;t=1, "sustained";r=990;t=865
//
//   const shmlimit::Decision d = limiter.acquire_many(requests, each);
//   const shmlimit::PolicyReport reports[] = {{"burst", each[0], burst_window},
//                                             {"sustained", each[1], day}};
//   const shmlimit::HttpVerdict v = shmlimit::http_verdict(d, options);
//   char block[1024];
//   std::size_t n = shmlimit::write_rate_limit_headers(d, reports, options, block);
//   if (n >= sizeof block) { /* too small: n bytes are needed (plus a NUL) */ }
//
// Thread and process safety: every function is a pure function of its
// arguments, safe from any number of threads. Functions that write into a
// caller's buffer are noexcept and never allocate (usable from a C API and
// from a signal-free hot path); the std::string / std::vector variants
// allocate and may throw std::bad_alloc only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmlimit/shmlimit.hpp"

namespace shmlimit {

/// Header families, a bit mask for HttpOptions::headers.
inline constexpr unsigned kHeadersRetryAfter = 1U << 0;  ///< Retry-After
inline constexpr unsigned kHeadersXRateLimit = 1U << 1;  ///< X-RateLimit-Limit/-Remaining/-Reset
inline constexpr unsigned kHeadersRateLimit = 1U
                                              << 2;  ///< RateLimit-Policy + RateLimit (IETF draft)
inline constexpr unsigned kHeadersAll = kHeadersRetryAfter | kHeadersXRateLimit | kHeadersRateLimit;

/// How a Decision becomes a response. Defaults are in the comments.
struct HttpOptions {
  /// Status of a refused request. Default 429 (Too Many Requests, RFC
  /// 6585); nginx limit_req uses 503. Values outside 400..599 are replaced
  /// by 429.
  int refuse_status = 429;
  /// nginx limit_req_dry_run: decide and count as usual, report in the
  /// headers and in HttpVerdict::would_refuse, never refuse. Default false.
  bool dry_run = false;
  /// Which header families to emit (kHeaders* bits). Default kHeadersAll.
  unsigned headers = kHeadersAll;
};

/// What to do with the request.
struct HttpVerdict {
  /// Respond with `status` instead of serving the request. Never in dry run.
  bool refuse = false;
  /// The decision denied: the request would have been refused. Equal to
  /// `refuse` unless dry_run (then: log it, count it, serve anyway).
  bool would_refuse = false;
  /// HttpOptions::refuse_status when refuse, else 0 (serve as usual).
  int status = 0;
  /// The Retry-After value: ceil(retry_after) in seconds when would_refuse
  /// (0 if the decision gives no wait: Reason::kCostTooHigh or a
  /// retry_after of Nanos::max(), which no wait ends), 0 when allowed.
  std::uint64_t retry_after_s = 0;
};

/// The verdict on a (combined) decision. noexcept, no allocation.
HttpVerdict http_verdict(const Decision& decision, const HttpOptions& options) noexcept;

/// Whole seconds, rounded up: 0 for d <= 0, 1 for 1 ns .. 1 s, 2 for
/// 1 s + 1 ns. Never less than the real duration (redis-cell once rounded
/// down and told clients to come back too early).
std::uint64_t ceil_seconds(Nanos d) noexcept;

/// One policy's part in the RateLimit-Policy / RateLimit fields.
struct PolicyReport {
  /// The policy's name in the fields (an sf-string; '"' and '\' are
  /// escaped, bytes outside 0x20..0x7e become '?'). Empty: "default".
  std::string_view name;
  /// This policy's own decision (Limiter::acquire_many's `each`).
  Decision decision;
  /// The policy's window, the draft's w: the time in which decision.limit
  /// units become available again from empty (policy_window()). Emitted
  /// rounded up to whole seconds; 0 = w omitted.
  Nanos window{0};
};

/// The window to report for a policy: the time its algorithm takes to make
/// its whole capacity available again from empty. GCRA and leaky bucket:
/// burst * period / count (rounded up to a ns; "100/m" burst 20 -> 12 s);
/// token bucket: ceil(burst / count) periods; fixed window, sliding window,
/// sliding log and quiet period: rate.period. 0 for concurrency (no time
/// window) and for a spec without a rate.
Nanos policy_window(const PolicySpec& spec) noexcept;

/// One response header.
struct Header {
  std::string name;
  std::string value;
  friend bool operator==(const Header&, const Header&) = default;
};

/// The headers for a response, in this order: Retry-After (only when the
/// verdict refuses and the wait is > 0), X-RateLimit-Limit,
/// X-RateLimit-Remaining, X-RateLimit-Reset (from `combined`),
/// RateLimit-Policy and RateLimit (one item per entry of `policies`,
/// omitted when it is empty), each family only if selected in
/// options.headers. In dry run no Retry-After is sent; the other fields
/// report the decisions as they are. RateLimit's t is the time until the
/// policy's bucket is full again (Decision::reset_after, rounded up);
/// integers above 999,999,999,999,999 (RFC 9651's largest) are clamped.
std::vector<Header> rate_limit_headers(const Decision& combined,
                                       std::span<const PolicyReport> policies,
                                       const HttpOptions& options);

/// The same headers as "Name: value\r\n" lines into `out`. Returns the
/// length of the whole block (without a NUL). If that is less than
/// out.size(), the block and a terminating NUL were written; otherwise
/// nothing usable was written (out[0] = NUL when out is not empty) and the
/// caller should retry with a buffer of at least the returned length + 1.
/// noexcept, no allocation.
std::size_t write_rate_limit_headers(const Decision& combined,
                                     std::span<const PolicyReport> policies,
                                     const HttpOptions& options, std::span<char> out) noexcept;

/// Django REST framework's Throttled detail, exactly as
/// rest_framework.exceptions.Throttled builds it (English):
///   no wait:  "Request was throttled."
///   wait:     "Request was throttled. Expected available in N seconds."
///             with N = ceil(wait seconds) (DRF's math.ceil), and
///             "... in 1 second." when N == 1 (ngettext: 0 is plural).
/// DRF's Retry-After, when it sends one (N > 0), is also N. A wait of
/// Nanos::max() (Reason::kCostTooHigh: a cost that can never fit) is no
/// wait: "Request was throttled.", never a number of seconds.
std::string drf_throttled_detail(std::optional<Nanos> wait);
/// The same into `out`, with write_rate_limit_headers' return convention.
std::size_t write_drf_throttled_detail(std::optional<Nanos> wait, std::span<char> out) noexcept;

}  // namespace shmlimit
