// Links against an installed shmlimit found with find_package(shmlimit).
#include <chrono>
#include <cstdio>
#include <exception>
#include <shmlimit/shmlimit.hpp>

int main() {
  try {
    const shmlimit::Rate rate = shmlimit::parse_rate("3/m");
    if (rate.count != 3 || rate.period != std::chrono::seconds(60)) {
      std::fprintf(stderr, "parse_rate(\"3/m\") gave count=%llu period=%lldns\n",
                   static_cast<unsigned long long>(rate.count),
                   static_cast<long long>(rate.period.count()));
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parse_rate(\"3/m\") threw: %s\n", e.what());
    return 1;
  }
  std::puts("shmlimit consumer: ok");
  return 0;
}
