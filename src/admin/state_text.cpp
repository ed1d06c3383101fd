// The text codecs of the state document (doc/state-format.md): wall-clock
// instants as ISO 8601 UTC with ns, and keys as JSON strings or base64.
// Shared by export and import (state_io.hpp).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "admin/state_io.hpp"

namespace shmlimit::detail::state_io {

// ---------------------------------------------------------------------------
// Wall-clock instants: "2026-11-23T17:48:08.123456789Z".

std::string iso8601(i64 unix_ns) {
  using namespace std::chrono;
  const sys_time<nanoseconds> tp{nanoseconds(unix_ns)};
  const sys_days day = floor<days>(tp);
  const year_month_day ymd{day};
  const i64 in_day = (tp - day).count();
  const i64 secs = in_day / kNs;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02lld:%02lld:%02lld.%09lldZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<long long>(secs / 3600),
                static_cast<long long>(secs / 60 % 60), static_cast<long long>(secs % 60),
                static_cast<long long>(in_day % kNs));
  return buf;
}

/// Parses exactly YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z (years 1970..2262).
std::optional<i64> parse_iso8601(std::string_view s) {
  using namespace std::chrono;
  const auto digits = [&](std::size_t pos, std::size_t n, int* out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (s.size() < 20 || !digits(0, 4, &y) || s[4] != '-' || !digits(5, 2, &mo) || s[7] != '-' ||
      !digits(8, 2, &d) || s[10] != 'T' || !digits(11, 2, &h) || s[13] != ':' ||
      !digits(14, 2, &mi) || s[16] != ':' || !digits(17, 2, &se)) {
    return std::nullopt;
  }
  std::size_t pos = 19;
  i64 frac = 0;
  if (s[pos] == '.') {
    std::size_t n = 0;
    ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && n < 9) {
      frac = frac * 10 + (s[pos] - '0');
      ++pos;
      ++n;
    }
    if (n == 0) return std::nullopt;
    for (; n < 9; ++n) frac *= 10;
  }
  if (pos + 1 != s.size() || s[pos] != 'Z') return std::nullopt;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || y < 1970 || y > 2262 || h > 23 || mi > 59 || se > 59) return std::nullopt;
  const i64 days_since = sys_days{ymd}.time_since_epoch().count();
  // 2262-04-11 is where int64 ns ends.
  i64 ns = 0;
  if (__builtin_mul_overflow(days_since, 86400 * kNs, &ns) ||
      __builtin_add_overflow(ns, (static_cast<i64>(h) * 3600 + mi * 60 + se) * kNs + frac, &ns)) {
    return std::nullopt;
  }
  return ns;
}

// ---------------------------------------------------------------------------
// Keys: a JSON string when the bytes are valid UTF-8, else base64.

bool valid_utf8(std::string_view s) {
  try {
    (void)Json(std::string(s)).dump();  // nlohmann validates UTF-8 when serialising
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  const auto byte = [&](std::size_t k) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(in[k]));
  };
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    const std::uint32_t v = byte(i) << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> unbase64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::uint32_t v = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      const char* at = c == '\0' ? nullptr : std::strchr(kB64, c);
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      if (at == nullptr || pad > 0) return std::nullopt;
      v = v << 6 | static_cast<std::uint32_t>(at - kB64);
    }
    out += static_cast<char>((v >> 16) & 0xFF);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(v & 0xFF);
  }
  return out;
}

}  // namespace shmlimit::detail::state_io
