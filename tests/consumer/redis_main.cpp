// Links the Redis tier of an installed shmlimit (find_package(shmlimit
// COMPONENTS redis), target shmlimit::redis) and decides against a port
// where no server listens: the policy's WhenDown answer, no exception.
#include <chrono>
#include <cstdio>
#include <exception>
#include <shmlimit/redis.hpp>

int main() {
  try {
    shmlimit::RedisOptions o;
    o.port = 1;  // nothing listens on port 1: the connection is refused at once
    o.connect_timeout = std::chrono::milliseconds(1000);
    shmlimit::RedisLimiter redis(o);
    const shmlimit::PolicyId id =
        redis.add_policy({{"api", shmlimit::Algorithm::kGcra, shmlimit::parse_rate("3/m")},
                          shmlimit::WhenDown::kFailClosed});
    const shmlimit::TierDecision d = redis.acquire(id, "alice");
    if (d.decision.allowed || d.source != shmlimit::Source::kFailClosed || redis.available()) {
      std::fprintf(stderr, "Redis down: expected a fail-closed denial, got allowed=%d source=%s\n",
                   static_cast<int>(d.decision.allowed),
                   std::string(shmlimit::to_string(d.source)).c_str());
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "the Redis tier threw: %s\n", e.what());
    return 1;
  }
  std::puts("shmlimit consumer (redis): ok");
  return 0;
}
