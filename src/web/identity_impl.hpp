// Private to src/web: what the files of client identity share (formerly
// identity.cpp's anonymous namespace): character classes, text helpers,
// address parsing results and the three identity modes.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "shmlimit/identity.hpp"

namespace shmlimit::identity_detail {

// ---------------------------------------------------------------------------
// Character classes
// ---------------------------------------------------------------------------

/// Python's str.isspace() on a Latin-1 character: what DRF's split() and
/// strip() remove from a WSGI header (PEP 3333 decodes headers as Latin-1).
constexpr bool drf_space(unsigned char c) noexcept {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0;
}

/// HTTP optional white space (RFC 9110 OWS).
constexpr bool ows(char c) noexcept { return c == ' ' || c == '\t'; }

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// RFC 9110 tchar.
constexpr bool is_tchar(char c) noexcept {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

std::string_view trim_ows(std::string_view s) noexcept;

std::string_view drf_strip(std::string_view s) noexcept;

bool iequals(std::string_view a, std::string_view b) noexcept;

/// Text for an error message: printable ASCII kept, other bytes as \xNN,
/// at most 80 bytes of input shown (config errors are one line).
std::string quote_for_message(std::string_view text);

char hex_digit(unsigned v) noexcept;

// ---------------------------------------------------------------------------
// Address parsing
// ---------------------------------------------------------------------------

/// Why a text is not an address (for parse()'s message); nullptr = it is.
struct ParseResult {
  std::array<std::uint8_t, 16> bytes{};
  bool v4 = false;
  const char* error = nullptr;
};

ParseResult parse_address(std::string_view s) noexcept;

IpAddress from_result(const ParseResult& r) noexcept;

// The three modes (forwarded.cpp).
Identity drf_identity(const RequestInfo& request, const IdentityOptions& options);

Identity normalised_num_proxies_identity(const RequestInfo& request,
                                         const IdentityOptions& options);

Identity trusted_identity(const RequestInfo& request, const IdentityOptions& options);

}  // namespace shmlimit::identity_detail
