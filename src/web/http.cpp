// HTTP status and headers from a Decision (doc/headers.md).
//
// One generator writes every header; two sinks consume it: a fixed buffer
// (noexcept, no allocation, for the C API) and a std::vector<Header>.
#include "shmlimit/http.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

namespace shmlimit {
namespace {

/// RFC 9651 section 3.3.1: an sf-integer has at most 15 decimal digits.
constexpr std::uint64_t kMaxSfInteger = 999'999'999'999'999ULL;

constexpr std::uint64_t sf_integer(std::uint64_t v) noexcept { return std::min(v, kMaxSfInteger); }

constexpr std::int64_t kNanosPerSecond = 1'000'000'000;

/// A wait that no amount of time ends: a cost above the capacity
/// (Reason::kCostTooHigh reports retry_after = Nanos::max()). It is never
/// sent as a number of seconds (that would be "Retry-After: 9223372037").
constexpr bool never(Nanos wait) noexcept { return wait == Nanos::max(); }

/// Writes a header block into a span, counting the bytes it needs even
/// when they do not fit.
class BufferSink {
 public:
  explicit BufferSink(std::span<char> out) noexcept : out_(out) {}
  void begin(std::string_view name) noexcept {
    append(name);
    append(": ");
  }
  void append(std::string_view text) noexcept {
    if (size_ < out_.size() && text.size() <= out_.size() - size_)
      std::memcpy(out_.data() + size_, text.data(), text.size());
    size_ += text.size();
  }
  void end() noexcept { append("\r\n"); }
  std::size_t finish() noexcept {
    if (size_ < out_.size()) {
      out_[size_] = '\0';
    } else if (!out_.empty()) {
      out_[0] = '\0';
    }
    return size_;
  }

 private:
  std::span<char> out_;
  std::size_t size_ = 0;
};

class VectorSink {
 public:
  void begin(std::string_view name) { headers_.push_back(Header{std::string(name), {}}); }
  void append(std::string_view text) { headers_.back().value += text; }
  void end() noexcept {}
  std::vector<Header> take() { return std::move(headers_); }

 private:
  std::vector<Header> headers_;
};

template <class Sink>
void append_uint(Sink& sink, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  sink.append(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
}

/// An sf-string: '"', printable ASCII with '"' and '\' escaped, '"'.
/// Bytes outside 0x20..0x7e become '?' (they cannot be represented).
template <class Sink>
void append_sf_string(Sink& sink, std::string_view text) {
  if (text.empty()) text = "default";
  sink.append("\"");
  std::size_t run = 0;  // start of the pending run of plain characters
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool plain = c >= 0x20 && c <= 0x7e && c != '"' && c != '\\';
    if (plain) continue;
    sink.append(text.substr(run, i - run));
    if (c == '"') {
      sink.append("\\\"");
    } else if (c == '\\') {
      sink.append("\\\\");
    } else {
      sink.append("?");
    }
    run = i + 1;
  }
  sink.append(text.substr(run));
  sink.append("\"");
}

template <class Sink>
void generate(Sink& sink, const Decision& combined, std::span<const PolicyReport> policies,
              const HttpOptions& options) {
  const HttpVerdict verdict = http_verdict(combined, options);
  if ((options.headers & kHeadersRetryAfter) && verdict.refuse && verdict.retry_after_s > 0) {
    sink.begin("Retry-After");
    append_uint(sink, verdict.retry_after_s);
    sink.end();
  }
  if (options.headers & kHeadersXRateLimit) {
    sink.begin("X-RateLimit-Limit");
    append_uint(sink, combined.limit);
    sink.end();
    sink.begin("X-RateLimit-Remaining");
    append_uint(sink, combined.remaining);
    sink.end();
    sink.begin("X-RateLimit-Reset");
    append_uint(sink, ceil_seconds(combined.reset_after));
    sink.end();
  }
  if ((options.headers & kHeadersRateLimit) && !policies.empty()) {
    sink.begin("RateLimit-Policy");
    for (std::size_t i = 0; i < policies.size(); ++i) {
      const PolicyReport& p = policies[i];
      if (i) sink.append(", ");
      append_sf_string(sink, p.name);
      sink.append(";q=");
      append_uint(sink, sf_integer(p.decision.limit));
      const std::uint64_t w = sf_integer(ceil_seconds(p.window));
      if (w > 0) {
        sink.append(";w=");
        append_uint(sink, w);
      }
    }
    sink.end();
    sink.begin("RateLimit");
    for (std::size_t i = 0; i < policies.size(); ++i) {
      const PolicyReport& p = policies[i];
      if (i) sink.append(", ");
      append_sf_string(sink, p.name);
      sink.append(";r=");
      append_uint(sink, sf_integer(p.decision.remaining));
      sink.append(";t=");
      append_uint(sink, sf_integer(ceil_seconds(p.decision.reset_after)));
    }
    sink.end();
  }
}

/// DRF: wait = math.ceil(wait), a signed whole number of seconds.
std::int64_t drf_ceil(Nanos wait) noexcept {
  const std::int64_t ns = wait.count();
  std::int64_t q = ns / kNanosPerSecond;
  if (ns % kNanosPerSecond > 0) ++q;  // C++ division truncates toward zero
  return q;
}

template <class Sink>
void generate_drf_detail(Sink& sink, std::optional<Nanos> wait) {
  sink.append("Request was throttled.");
  if (!wait || never(*wait)) return;
  const std::int64_t n = drf_ceil(*wait);
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, n);
  sink.append(" Expected available in ");
  sink.append(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)));
  // ngettext(singular, plural, n) in English: singular exactly when n == 1.
  sink.append(n == 1 ? " second." : " seconds.");
}

class StringSink {
 public:
  void append(std::string_view text) { text_ += text; }
  std::string take() { return std::move(text_); }

 private:
  std::string text_;
};

}  // namespace

std::uint64_t ceil_seconds(Nanos d) noexcept {
  const std::int64_t ns = d.count();
  if (ns <= 0) return 0;
  return static_cast<std::uint64_t>((ns - 1) / kNanosPerSecond) + 1;
}

HttpVerdict http_verdict(const Decision& decision, const HttpOptions& options) noexcept {
  HttpVerdict v;
  v.would_refuse = !decision.allowed;
  v.refuse = v.would_refuse && !options.dry_run;
  if (v.refuse) {
    v.status =
        options.refuse_status >= 400 && options.refuse_status <= 599 ? options.refuse_status : 429;
  }
  if (v.would_refuse && decision.reason != Reason::kCostTooHigh && !never(decision.retry_after)) {
    v.retry_after_s = ceil_seconds(decision.retry_after);
  }
  return v;
}

Nanos policy_window(const PolicySpec& spec) noexcept {
  const std::uint64_t count = spec.rate.count;
  const std::int64_t period = spec.rate.period.count();
  if (count == 0 || period <= 0) return Nanos{0};
  const std::uint64_t burst = spec.burst ? spec.burst : count;
  constexpr auto kMax = static_cast<__uint128_t>(std::numeric_limits<std::int64_t>::max());
  __uint128_t ns = 0;
  switch (spec.algorithm) {
    case Algorithm::kGcra:
    case Algorithm::kLeakyBucket: {
      // burst units at count per period: ceil(burst * period / count), the
      // nominal rate ("3/s" refills 3 in 1 s, not in 3 * ceil(1 s / 3)).
      const __uint128_t num = static_cast<__uint128_t>(burst) * static_cast<std::uint64_t>(period);
      ns = (num + count - 1) / count;
      break;
    }
    case Algorithm::kTokenBucket:
      // count tokens at each period boundary: ceil(burst / count) periods.
      ns = static_cast<__uint128_t>((burst + count - 1) / count) *
           static_cast<std::uint64_t>(period);
      break;
    case Algorithm::kFixedWindow:
    case Algorithm::kSlidingWindow:
    case Algorithm::kQuietPeriod:
    case Algorithm::kSlidingLog:
      ns = static_cast<__uint128_t>(period);
      break;
    case Algorithm::kConcurrency:  // a count in flight: no time window
    default:
      return Nanos{0};
  }
  return Nanos{static_cast<std::int64_t>(std::min(ns, kMax))};
}

std::vector<Header> rate_limit_headers(const Decision& combined,
                                       std::span<const PolicyReport> policies,
                                       const HttpOptions& options) {
  VectorSink sink;
  generate(sink, combined, policies, options);
  return sink.take();
}

std::size_t write_rate_limit_headers(const Decision& combined,
                                     std::span<const PolicyReport> policies,
                                     const HttpOptions& options, std::span<char> out) noexcept {
  BufferSink sink(out);
  generate(sink, combined, policies, options);
  return sink.finish();
}

std::string drf_throttled_detail(std::optional<Nanos> wait) {
  StringSink sink;
  generate_drf_detail(sink, wait);
  return sink.take();
}

std::size_t write_drf_throttled_detail(std::optional<Nanos> wait, std::span<char> out) noexcept {
  BufferSink sink(out);
  generate_drf_detail(sink, wait);
  return sink.finish();
}

}  // namespace shmlimit
