// Fuzz target: configuration files. parse_config() on any bytes either
// returns a Config whose every policy add_policy() would accept (validated
// before anything is applied) or throws shmlimit::Error with a one-line
// message that names the source ("<fuzz>:LINE:COL: ..." or "<fuzz>: ...").
//
//   fuzz/corpus/config/        seed corpus (TOML files)
//   fuzz/regressions/config/   inputs that once failed (replayed by ctest)
// Run: bash scripts/fuzz.sh config 60   (doc/fuzzing.md)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "shmlimit/config.hpp"
#include "shmlimit/shmlimit.hpp"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const shmlimit::Config config = shmlimit::parse_config(text, "<fuzz>");
    if (config.segment.name.empty() || config.segment.name[0] != '/')
      fail("segment name accepted", config.segment.name);
    for (const shmlimit::PolicySpec& p : config.policies) {
      if (p.name.empty() || p.rate.count == 0 || p.rate.period.count() <= 0)
        fail("unusable policy accepted", p.name);
    }
  } catch (const shmlimit::Error& e) {
    const std::string_view what = e.what();
    if (what.empty()) fail("empty error message", "");
    if (what.rfind("<fuzz>", 0) != 0) fail("error does not name the source", std::string(what));
    if (what.find('\n') != std::string_view::npos)
      fail("error spans several lines", std::string(what));
  }
  return 0;
}
