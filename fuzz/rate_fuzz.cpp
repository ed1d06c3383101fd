// Fuzz target: rate strings. parse_rate() on any bytes either returns a
// rate or throws shmlimit::Error(kInvalidArgument) with a message; a rate
// it returns survives format_rate() -> parse_rate() unchanged, and the
// formatted text is a fixed point of that round trip.
//
//   fuzz/corpus/rate/          seed corpus (one rate string per file)
//   fuzz/regressions/rate/     inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh rate 60   (doc/fuzzing.md)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "shmlimit/shmlimit.hpp"

namespace {

[[noreturn]] void fail(const char* what, std::string_view input, const std::string& detail) {
  std::fprintf(stderr, "rate_fuzz: %s for input of %zu bytes: %s\n", what, input.size(),
               detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  shmlimit::Rate rate;
  try {
    rate = shmlimit::parse_rate(text);
  } catch (const shmlimit::Error& e) {
    if (e.code() != shmlimit::ErrorCode::kInvalidArgument) fail("wrong error code", text, e.what());
    if (std::string_view(e.what()).empty()) fail("empty error message", text, "");
    return 0;
  }
  if (rate.count == 0 || rate.period.count() <= 0)
    fail("unusable rate accepted", text, shmlimit::format_rate(rate));
  const std::string formatted = shmlimit::format_rate(rate);
  shmlimit::Rate again;
  try {
    again = shmlimit::parse_rate(formatted);
  } catch (const shmlimit::Error& e) {
    fail("format_rate output does not parse", text, formatted + ": " + e.what());
  }
  if (!(again == rate))
    fail("round trip changed the rate", text, formatted + " -> " + shmlimit::format_rate(again));
  if (shmlimit::format_rate(again) != formatted)
    fail("format_rate is not a fixed point", text, formatted);
  return 0;
}
