// The C API (include/shmlimit/shmlimit.h) over the C++ Limiter.
//
// This file: opening, closing and removing limiters, and their policies.
// Decisions are in decide.cpp, client identity and access lists in
// identity.cpp, HTTP headers in http.cpp, status codes and messages in
// errors.cpp.
//
// Every entry point catches everything: no exception crosses the C ABI.
// Failures set a thread-local message and return a shmlimit_status whose
// values 1..11 are those of shmlimit::ErrorCode (checked in errors.cpp).
#include <algorithm>

#include "capi_impl.hpp"

namespace {

using namespace capi_detail;

shmlimit::Options to_options(const shmlimit_options& o) {
  // A caller built before allow_other_users was added passes the shorter
  // struct: the field then reads as 0 (the default).
  constexpr std::size_t kSizeBeforeAllowOtherUsers = offsetof(shmlimit_options, allow_other_users);
  if (o.struct_size < kSizeBeforeAllowOtherUsers) {
    throw shmlimit::Error(ErrorCode::kInvalidArgument,
                          "shmlimit_open: options.struct_size is " + std::to_string(o.struct_size) +
                              ", expected " + std::to_string(sizeof(shmlimit_options)) +
                              " (call shmlimit_options_init first)");
  }
  if (o.name == nullptr)
    throw shmlimit::Error(ErrorCode::kInvalidArgument, "shmlimit_open: options.name is NULL");
  shmlimit::Options options;
  options.name = o.name;
  options.capacity = o.capacity;
  options.mode = static_cast<mode_t>(o.mode);
  options.slot_bytes = o.slot_bytes;
  options.max_probe = o.max_probe;
  options.open_timeout = std::chrono::milliseconds(o.open_timeout_ms);
  options.claim_timeout = std::chrono::milliseconds(o.claim_timeout_ms);
  options.read_only = o.read_only != 0;
  options.log_entries = o.log_entries;
  options.allow_other_users =
      o.struct_size >= offsetof(shmlimit_options, allow_other_users) + sizeof o.allow_other_users &&
      o.allow_other_users != 0;
  return options;
}

shmlimit_status hand_out(shmlimit::Limiter limiter, shmlimit_limiter** out) {
  *out = new shmlimit_limiter(std::move(limiter));
  return SHMLIMIT_OK;
}

}  // namespace

extern "C" {

void shmlimit_options_init(shmlimit_options* options) {
  if (options == nullptr) return;
  const shmlimit::Options d;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->name = nullptr;
  options->capacity = d.capacity;
  options->mode = static_cast<std::uint32_t>(d.mode);
  options->slot_bytes = d.slot_bytes;
  options->max_probe = d.max_probe;
  options->open_timeout_ms = static_cast<std::uint32_t>(d.open_timeout.count());
  options->claim_timeout_ms = static_cast<std::uint32_t>(d.claim_timeout.count());
  options->read_only = d.read_only ? 1 : 0;
  options->log_entries = d.log_entries;
  options->allow_other_users = d.allow_other_users ? 1 : 0;
}

shmlimit_status shmlimit_open(const shmlimit_options* options, int how, shmlimit_limiter** out) {
  if (out == nullptr) return null_argument("shmlimit_open", "out");
  *out = nullptr;
  if (options == nullptr) return null_argument("shmlimit_open", "options");
  return guarded("shmlimit_open", [&] {
    const shmlimit::Options o = to_options(*options);
    switch (how) {
      case SHMLIMIT_OPEN:
        return hand_out(shmlimit::Limiter::open(o), out);
      case SHMLIMIT_CREATE:
        return hand_out(shmlimit::Limiter::create(o), out);
      case SHMLIMIT_OPEN_OR_CREATE:
        return hand_out(shmlimit::Limiter::open_or_create(o), out);
      default:
        return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                    "shmlimit_open: how is " + std::to_string(how) +
                        " (expected SHMLIMIT_OPEN, SHMLIMIT_CREATE or SHMLIMIT_OPEN_OR_CREATE)");
    }
  });
}

shmlimit_status shmlimit_open_config(const char* path, int replace, shmlimit_limiter** out) {
  if (out == nullptr) return null_argument("shmlimit_open_config", "out");
  *out = nullptr;
  if (path == nullptr) return null_argument("shmlimit_open_config", "path");
  return guarded("shmlimit_open_config", [&] {
    return hand_out(shmlimit::open_config(shmlimit::load_config(path), replace != 0), out);
  });
}

shmlimit_status shmlimit_open_config_text(const char* toml, size_t toml_len, const char* source,
                                          int replace, shmlimit_limiter** out) {
  if (out == nullptr) return null_argument("shmlimit_open_config_text", "out");
  *out = nullptr;
  if (toml == nullptr) return null_argument("shmlimit_open_config_text", "toml");
  return guarded("shmlimit_open_config_text", [&] {
    const shmlimit::Config config = shmlimit::parse_config(std::string_view(toml, toml_len),
                                                           source != nullptr ? source : "<config>");
    return hand_out(shmlimit::open_config(config, replace != 0), out);
  });
}

void shmlimit_close(shmlimit_limiter* limiter) { delete limiter; }

shmlimit_status shmlimit_remove(const char* name, int* existed) {
  if (existed != nullptr) *existed = 0;
  if (name == nullptr) return null_argument("shmlimit_remove", "name");
  return guarded("shmlimit_remove", [&] {
    const bool was = shmlimit::Limiter::remove(name);
    if (existed != nullptr) *existed = was ? 1 : 0;
    return SHMLIMIT_OK;
  });
}

uint32_t shmlimit_max_key_bytes(const shmlimit_limiter* limiter) {
  return limiter == nullptr ? 0 : limiter->limiter.max_key_bytes();
}

int64_t shmlimit_now(const shmlimit_limiter* limiter) {
  return limiter == nullptr ? 0 : limiter->limiter.now().count();
}

void shmlimit_policy_spec_init(shmlimit_policy_spec* spec) {
  if (spec == nullptr) return;
  std::memset(spec, 0, sizeof *spec);
  spec->struct_size = sizeof *spec;
  spec->algorithm = SHMLIMIT_ALGORITHM_GCRA;
  spec->on_full = SHMLIMIT_ON_FULL_ALLOW;
}

shmlimit_status shmlimit_add_policy(shmlimit_limiter* limiter, const shmlimit_policy_spec* spec,
                                    int replace, uint32_t* id) {
  if (limiter == nullptr) return null_argument("shmlimit_add_policy", "limiter");
  if (spec == nullptr) return null_argument("shmlimit_add_policy", "spec");
  if (spec->struct_size < sizeof(shmlimit_policy_spec)) {
    return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                "shmlimit_add_policy: spec.struct_size is too small (call "
                "shmlimit_policy_spec_init first)");
  }
  if (spec->name == nullptr) return null_argument("shmlimit_add_policy", "spec.name");
  if (spec->rate == nullptr) return null_argument("shmlimit_add_policy", "spec.rate");
  return guarded("shmlimit_add_policy", [&] {
    if (spec->algorithm < SHMLIMIT_ALGORITHM_GCRA || spec->algorithm > kLastAlgorithm) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                  "shmlimit_add_policy: unknown algorithm " + std::to_string(spec->algorithm) +
                      " (expected 1.." + std::to_string(kLastAlgorithm) + ")");
    }
    if (spec->wait > SHMLIMIT_LOG_WAIT_DRF) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                  "shmlimit_add_policy: wait is " + std::to_string(spec->wait) +
                      " (expected SHMLIMIT_LOG_WAIT_EXACT or SHMLIMIT_LOG_WAIT_DRF)");
    }
    if (spec->on_full > SHMLIMIT_ON_FULL_DENY) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                  "shmlimit_add_policy: on_full is " + std::to_string(spec->on_full) +
                      " (expected SHMLIMIT_ON_FULL_ALLOW or SHMLIMIT_ON_FULL_DENY)");
    }
    shmlimit::PolicySpec s;
    s.name = spec->name;
    s.algorithm = static_cast<shmlimit::Algorithm>(spec->algorithm);
    s.rate = shmlimit::parse_rate(spec->rate);
    s.burst = spec->burst;
    s.on_full = static_cast<shmlimit::OnFull>(spec->on_full);
    s.wait = static_cast<shmlimit::LogWait>(spec->wait);
    const shmlimit::PolicyId got = limiter->limiter.add_policy(s, replace != 0);
    if (id != nullptr) *id = got.index;
    return SHMLIMIT_OK;
  });
}

shmlimit_status shmlimit_policy_counters(const shmlimit_limiter* limiter, uint32_t id,
                                         uint64_t* admitted, uint64_t* denied) {
  if (limiter == nullptr) return null_argument("shmlimit_policy_counters", "limiter");
  if (admitted == nullptr) return null_argument("shmlimit_policy_counters", "admitted");
  if (denied == nullptr) return null_argument("shmlimit_policy_counters", "denied");
  return guarded("shmlimit_policy_counters", [&] {
    for (const shmlimit::PolicyCounters& c : limiter->limiter.counters()) {
      if (c.id.index != id) continue;
      *admitted = c.admitted;
      *denied = c.denied;
      return SHMLIMIT_OK;
    }
    return fail(SHMLIMIT_E_NOT_FOUND, "shmlimit_policy_counters: no policy with id " +
                                          std::to_string(id) + " in " + limiter->limiter.name());
  });
}

shmlimit_status shmlimit_policy_describe(const shmlimit_limiter* limiter, uint32_t id,
                                         shmlimit_policy_info* info) {
  if (limiter == nullptr) return null_argument("shmlimit_policy_describe", "limiter");
  if (info == nullptr) return null_argument("shmlimit_policy_describe", "info");
  if (info->struct_size < sizeof(shmlimit_policy_info)) {
    return fail(SHMLIMIT_E_INVALID_ARGUMENT, "shmlimit_policy_describe: info.struct_size is " +
                                                 std::to_string(info->struct_size) +
                                                 ", less than sizeof(shmlimit_policy_info)");
  }
  return guarded("shmlimit_policy_describe", [&] {
    for (const shmlimit::PolicyView& v : limiter->limiter.policies()) {
      if (v.id.index != id) continue;
      const uint32_t size = info->struct_size;
      *info = shmlimit_policy_info{};
      info->struct_size = size;
      info->algorithm = static_cast<uint32_t>(v.spec.algorithm);
      info->on_full = static_cast<uint32_t>(v.spec.on_full);
      info->wait = static_cast<uint32_t>(v.spec.wait);
      info->count = v.spec.rate.count;
      info->period_ns = v.spec.rate.period.count();
      info->burst = v.spec.burst;
      const std::size_t n = std::min(v.spec.name.size(), sizeof info->name - 1);
      std::memcpy(info->name, v.spec.name.data(), n);
      return SHMLIMIT_OK;
    }
    return fail(SHMLIMIT_E_NOT_FOUND, "shmlimit_policy_describe: no policy with id " +
                                          std::to_string(id) + " in " + limiter->limiter.name());
  });
}

int shmlimit_algorithm_queues_turns(uint32_t algorithm) {
  if (algorithm < SHMLIMIT_ALGORITHM_GCRA || algorithm > kLastAlgorithm) return 0;
  return shmlimit::algorithm_queues_turns(static_cast<shmlimit::Algorithm>(algorithm)) ? 1 : 0;
}

shmlimit_status shmlimit_find_policy(const shmlimit_limiter* limiter, const char* name,
                                     uint32_t* id) {
  if (limiter == nullptr) return null_argument("shmlimit_find_policy", "limiter");
  if (name == nullptr) return null_argument("shmlimit_find_policy", "name");
  if (id == nullptr) return null_argument("shmlimit_find_policy", "id");
  return guarded("shmlimit_find_policy", [&] {
    const std::optional<shmlimit::PolicyId> found = limiter->limiter.find_policy(name);
    if (!found) {
      return fail(SHMLIMIT_E_NOT_FOUND, "shmlimit_find_policy: no policy named \"" +
                                            std::string(name) + "\" in " + limiter->limiter.name());
    }
    *id = found->index;
    return SHMLIMIT_OK;
  });
}

shmlimit_status shmlimit_policy_group(const shmlimit_limiter* limiter, const char* name,
                                      uint32_t* ids, size_t capacity, size_t* count) {
  if (limiter == nullptr) return null_argument("shmlimit_policy_group", "limiter");
  if (name == nullptr) return null_argument("shmlimit_policy_group", "name");
  if (count == nullptr) return null_argument("shmlimit_policy_group", "count");
  if (ids == nullptr && capacity != 0) return null_argument("shmlimit_policy_group", "ids");
  return guarded("shmlimit_policy_group", [&] {
    const std::vector<shmlimit::PolicyId> group = shmlimit::policy_group(limiter->limiter, name);
    *count = group.size();
    for (std::size_t i = 0; i < group.size() && i < capacity; ++i) ids[i] = group[i].index;
    if (group.size() > capacity) {
      return fail(SHMLIMIT_E_BUFFER_TOO_SMALL,
                  "shmlimit_policy_group: policy \"" + std::string(name) + "\" has " +
                      std::to_string(group.size()) + " members, room for " +
                      std::to_string(capacity));
    }
    return SHMLIMIT_OK;
  });
}

}  // extern "C"
