// Client identity's text helpers: OWS and DRF whitespace trimming,
// case-insensitive comparison, quoting for error messages, hex digits.
#include <algorithm>
#include <string>

#include "identity_impl.hpp"

namespace shmlimit::identity_detail {

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && ows(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view drf_strip(std::string_view s) noexcept {
  while (!s.empty() && drf_space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && drf_space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

/// Text for an error message: printable ASCII kept, other bytes as \xNN,
/// at most 80 bytes of input shown (config errors are one line).
std::string quote_for_message(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  const std::size_t shown = std::min<std::size_t>(text.size(), 80);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (shown < text.size()) out += "...";
  out += '"';
  return out;
}

char hex_digit(unsigned v) noexcept { return "0123456789abcdef"[v & 15]; }

}  // namespace shmlimit::identity_detail
