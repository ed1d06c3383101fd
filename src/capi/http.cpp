// The C API's HTTP side: verdicts, rate-limit headers and throttled
// details (doc/headers.md).
#include "capi_impl.hpp"

namespace {

using namespace capi_detail;

shmlimit::Decision from_c(const shmlimit_decision& c) noexcept {
  shmlimit::Decision d;
  d.allowed = c.allowed != 0;
  d.reason = static_cast<shmlimit::Reason>(c.reason);
  d.limit = c.limit;
  d.remaining = c.remaining;
  d.retry_after = shmlimit::Nanos(c.retry_after_ns);
  d.reset_after = shmlimit::Nanos(c.reset_after_ns);
  return d;
}

shmlimit::HttpOptions to_http_options(const shmlimit_http_options* o) {
  shmlimit::HttpOptions h;
  if (o == nullptr) return h;
  if (o->struct_size < sizeof(shmlimit_http_options)) {
    throw shmlimit::Error(
        ErrorCode::kInvalidArgument,
        "http options: struct_size is too small (call shmlimit_http_options_init first)");
  }
  if ((o->headers & ~static_cast<std::uint32_t>(SHMLIMIT_HEADERS_ALL)) != 0) {
    throw shmlimit::Error(ErrorCode::kInvalidArgument,
                          "http options: unknown bits in headers " + std::to_string(o->headers));
  }
  if (o->refuse_status < 400 || o->refuse_status > 599) {
    throw shmlimit::Error(ErrorCode::kInvalidArgument, "http options: refuse_status is " +
                                                           std::to_string(o->refuse_status) +
                                                           ", expected 400..599");
  }
  h.refuse_status = o->refuse_status;
  h.dry_run = o->dry_run != 0;
  h.headers = o->headers;
  return h;
}

}  // namespace

extern "C" {

void shmlimit_http_options_init(shmlimit_http_options* options) {
  if (options == nullptr) return;
  const shmlimit::HttpOptions d;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->refuse_status = d.refuse_status;
  options->dry_run = d.dry_run ? 1 : 0;
  options->headers = d.headers;
}

shmlimit_status shmlimit_http_verdict(const shmlimit_decision* decision,
                                      const shmlimit_http_options* options,
                                      shmlimit_verdict* verdict) {
  if (decision == nullptr) return null_argument("shmlimit_http_verdict", "decision");
  if (verdict == nullptr) return null_argument("shmlimit_http_verdict", "verdict");
  std::memset(verdict, 0, sizeof *verdict);
  return guarded("shmlimit_http_verdict", [&] {
    const shmlimit::HttpVerdict v =
        shmlimit::http_verdict(from_c(*decision), to_http_options(options));
    verdict->refuse = v.refuse ? 1 : 0;
    verdict->would_refuse = v.would_refuse ? 1 : 0;
    verdict->status = v.status;
    verdict->retry_after_s = v.retry_after_s;
    return SHMLIMIT_OK;
  });
}

shmlimit_status shmlimit_policy_window(const shmlimit_limiter* limiter, uint32_t policy,
                                       int64_t* window_ns) {
  if (limiter == nullptr) return null_argument("shmlimit_policy_window", "limiter");
  if (window_ns == nullptr) return null_argument("shmlimit_policy_window", "window_ns");
  *window_ns = 0;
  return guarded("shmlimit_policy_window", [&] {
    for (const shmlimit::PolicyView& v : limiter->limiter.policies()) {
      if (v.id.index == policy) {
        *window_ns = shmlimit::policy_window(v.spec).count();
        return SHMLIMIT_OK;
      }
    }
    return fail(SHMLIMIT_E_NOT_FOUND, "shmlimit_policy_window: no policy with id " +
                                          std::to_string(policy) + " in " +
                                          limiter->limiter.name());
  });
}

shmlimit_status shmlimit_http_headers(const shmlimit_decision* combined,
                                      const shmlimit_policy_report* reports, size_t count,
                                      const shmlimit_http_options* options, char* out,
                                      size_t capacity, size_t* len) {
  if (len == nullptr) return null_argument("shmlimit_http_headers", "len");
  *len = 0;
  if (combined == nullptr) return null_argument("shmlimit_http_headers", "combined");
  if (reports == nullptr && count != 0) return null_argument("shmlimit_http_headers", "reports");
  if (out == nullptr && capacity != 0) return null_argument("shmlimit_http_headers", "out");
  return guarded("shmlimit_http_headers", [&] {
    if (count > kMaxManyRequests) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT, "shmlimit_http_headers: count is " +
                                                   std::to_string(count) + " (at most " +
                                                   std::to_string(kMaxManyRequests) + ")");
    }
    const shmlimit::HttpOptions h = to_http_options(options);
    std::array<shmlimit::PolicyReport, kMaxManyRequests> r;
    for (std::size_t i = 0; i < count; ++i) {
      r[i] = shmlimit::PolicyReport{
          reports[i].name != nullptr ? std::string_view(reports[i].name) : std::string_view(),
          from_c(reports[i].decision), shmlimit::Nanos(reports[i].window_ns)};
    }
    char empty[1];
    const std::span<char> buffer =
        capacity != 0 ? std::span<char>(out, capacity) : std::span<char>(empty, 0);
    const std::size_t n =
        shmlimit::write_rate_limit_headers(from_c(*combined), {r.data(), count}, h, buffer);
    *len = n;
    if (n >= capacity) {
      return fail(SHMLIMIT_E_BUFFER_TOO_SMALL, "shmlimit_http_headers: " + std::to_string(n + 1) +
                                                   " bytes needed, buffer has " +
                                                   std::to_string(capacity));
    }
    return SHMLIMIT_OK;
  });
}

shmlimit_status shmlimit_throttled_detail(int64_t wait_ns, char* out, size_t capacity,
                                          size_t* len) {
  if (len == nullptr) return null_argument("shmlimit_throttled_detail", "len");
  *len = 0;
  if (out == nullptr && capacity != 0) return null_argument("shmlimit_throttled_detail", "out");
  return guarded("shmlimit_throttled_detail", [&] {
    const std::optional<shmlimit::Nanos> wait =
        wait_ns < 0 ? std::nullopt : std::optional<shmlimit::Nanos>(shmlimit::Nanos(wait_ns));
    return copy_out("shmlimit_throttled_detail", shmlimit::drf_throttled_detail(wait), out,
                    capacity, len);
  });
}

}  // extern "C"
