// The C API (include/shmlimit/shmlimit.h) over the C++ Limiter.
//
// Every entry point catches everything: no exception crosses the C ABI.
// Failures set a thread-local message and return a shmlimit_status whose
// values 1..11 are those of shmlimit::ErrorCode (checked below).
#include <array>
#include <cstddef>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmlimit/config.hpp"
#include "shmlimit/http.hpp"
#include "shmlimit/identity.hpp"
#include "shmlimit/shmlimit.h"
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.hpp"

struct shmlimit_limiter {
  explicit shmlimit_limiter(shmlimit::Limiter l) : limiter(std::move(l)) {}
  shmlimit::Limiter limiter;
};

struct shmlimit_lease {
  shmlimit::Lease lease;
};

struct shmlimit_identity {
  shmlimit::IdentityOptions options;
  shmlimit::AccessList access;
};

namespace {

using shmlimit::ErrorCode;

// The C status codes are the C++ ErrorCode values: a change on either side
// must fail to compile rather than silently renumber.
static_assert(SHMLIMIT_E_INVALID_ARGUMENT == static_cast<int>(ErrorCode::kInvalidArgument));
static_assert(SHMLIMIT_E_NOT_FOUND == static_cast<int>(ErrorCode::kNotFound));
static_assert(SHMLIMIT_E_EXISTS == static_cast<int>(ErrorCode::kExists));
static_assert(SHMLIMIT_E_PERMISSION == static_cast<int>(ErrorCode::kPermission));
static_assert(SHMLIMIT_E_INCOMPATIBLE == static_cast<int>(ErrorCode::kIncompatible));
static_assert(SHMLIMIT_E_CORRUPT == static_cast<int>(ErrorCode::kCorrupt));
static_assert(SHMLIMIT_E_TIMEOUT == static_cast<int>(ErrorCode::kTimeout));
static_assert(SHMLIMIT_E_POLICY_CONFLICT == static_cast<int>(ErrorCode::kPolicyConflict));
static_assert(SHMLIMIT_E_TABLE_FULL == static_cast<int>(ErrorCode::kTableFull));
static_assert(SHMLIMIT_E_SYSTEM == static_cast<int>(ErrorCode::kSystem));
static_assert(SHMLIMIT_E_READ_ONLY == static_cast<int>(ErrorCode::kReadOnly));
static_assert(SHMLIMIT_E_NO_SPACE == static_cast<int>(ErrorCode::kNoSpace));
static_assert(SHMLIMIT_REASON_OK == static_cast<int>(shmlimit::Reason::kOk));
static_assert(SHMLIMIT_REASON_CORRUPT == static_cast<int>(shmlimit::Reason::kCorrupt));
static_assert(SHMLIMIT_REASON_NEEDS_LEASE == static_cast<int>(shmlimit::Reason::kNeedsLease));
constexpr int kLastReason = SHMLIMIT_REASON_NEEDS_LEASE;
static_assert(SHMLIMIT_ALGORITHM_GCRA == static_cast<int>(shmlimit::Algorithm::kGcra));
static_assert(SHMLIMIT_ALGORITHM_LEAKY_BUCKET ==
              static_cast<int>(shmlimit::Algorithm::kLeakyBucket));
static_assert(SHMLIMIT_ALGORITHM_CONCURRENCY ==
              static_cast<int>(shmlimit::Algorithm::kConcurrency));
static_assert(SHMLIMIT_ALGORITHM_SLIDING_LOG == static_cast<int>(shmlimit::Algorithm::kSlidingLog));
constexpr unsigned kLastAlgorithm = SHMLIMIT_ALGORITHM_SLIDING_LOG;
static_assert(SHMLIMIT_LOG_WAIT_DRF == static_cast<int>(shmlimit::LogWait::kDrf));
static_assert(SHMLIMIT_ACCESS_DENY == static_cast<int>(shmlimit::Access::kDeny));
static_assert(SHMLIMIT_ACCESS_ALLOW == static_cast<int>(shmlimit::Access::kAllow));
static_assert(SHMLIMIT_SOURCE_FALLBACK == static_cast<int>(shmlimit::IdentitySource::kFallback));
static_assert(SHMLIMIT_HEADERS_RETRY_AFTER == shmlimit::kHeadersRetryAfter);
static_assert(SHMLIMIT_HEADERS_X_RATELIMIT == shmlimit::kHeadersXRateLimit);
static_assert(SHMLIMIT_HEADERS_RATELIMIT == shmlimit::kHeadersRateLimit);
static_assert(SHMLIMIT_HEADERS_ALL == shmlimit::kHeadersAll);
static_assert(SHMLIMIT_ON_FULL_DENY == static_cast<int>(shmlimit::OnFull::kDeny));
static_assert(sizeof(shmlimit_decision) == 40, "the decision's layout is part of the ABI");

// Most limits one shmlimit_acquire_many call takes: the requests are
// converted on the stack, so the hot path never allocates.
constexpr std::size_t kMaxManyRequests = 64;

thread_local std::string t_last_error;  // shmlimit_last_error()

shmlimit_status fail(shmlimit_status status, const char* what) noexcept {
  try {
    t_last_error = what;
  } catch (...) {
    t_last_error.clear();  // no memory for the message: the status still says why
  }
  return status;
}

shmlimit_status fail(shmlimit_status status, const std::string& what) noexcept {
  return fail(status, what.c_str());
}

// Runs body() and turns any exception into a status and a message.
template <typename Body>
shmlimit_status guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const shmlimit::Error& e) {
    return fail(static_cast<shmlimit_status>(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(SHMLIMIT_E_NO_MEMORY, std::string(function) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(SHMLIMIT_E_INTERNAL, std::string(function) + ": " + e.what());
  } catch (...) {
    return fail(SHMLIMIT_E_INTERNAL, std::string(function) + ": unknown exception");
  }
}

shmlimit_status null_argument(const char* function, const char* argument) noexcept {
  try {
    return fail(SHMLIMIT_E_INVALID_ARGUMENT, std::string(function) + ": " + argument + " is NULL");
  } catch (...) {
    return SHMLIMIT_E_INVALID_ARGUMENT;
  }
}

void to_c(const shmlimit::Decision& d, shmlimit_decision* out) noexcept {
  std::memset(out, 0, sizeof *out);
  out->allowed = d.allowed ? 1 : 0;
  out->reason = static_cast<std::uint8_t>(d.reason);
  out->limit = d.limit;
  out->remaining = d.remaining;
  out->retry_after_ns = d.retry_after.count();
  out->reset_after_ns = d.reset_after.count();
}

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

// Copies `text` and a NUL into out[0..capacity); *len = text's length.
shmlimit_status copy_out(const char* function, std::string_view text, char* out,
                         std::size_t capacity, std::size_t* len) {
  *len = text.size();
  if (text.size() >= capacity) {
    if (out != nullptr && capacity > 0) out[0] = '\0';
    return fail(SHMLIMIT_E_BUFFER_TOO_SMALL,
                std::string(function) + ": " + std::to_string(text.size() + 1) +
                    " bytes needed, buffer has " + std::to_string(capacity));
  }
  std::memcpy(out, text.data(), text.size());
  out[text.size()] = '\0';
  return SHMLIMIT_OK;
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

// A key argument: NULL only with length 0.
bool key_ok(const char* key, std::size_t key_len) noexcept {
  return key != nullptr || key_len == 0;
}
std::string_view key_view(const char* key, std::size_t key_len) noexcept {
  return key_len == 0 ? std::string_view() : std::string_view(key, key_len);
}

// The decision entry points taking (limiter, key, out): the argument checks
// every one makes, then *out = decide(limiter, key). decide is a noexcept
// C++ call; no std::string is built unless a check fails.
template <class Decide>
shmlimit_status keyed_decision(const char* function, shmlimit_limiter* limiter, const char* key,
                               std::size_t key_len, shmlimit_decision* out,
                               Decide&& decide) noexcept {
  if (limiter == nullptr) return null_argument(function, "limiter");
  if (out == nullptr) return null_argument(function, "out");
  if (!key_ok(key, key_len)) return null_argument(function, "key");
  to_c(decide(limiter->limiter, key_view(key, key_len)), out);
  return SHMLIMIT_OK;
}

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

int shmlimit_version(void) { return SHMLIMIT_C_API_VERSION; }

const char* shmlimit_version_string(void) { return SHMLIMIT_VERSION_STRING; }

const char* shmlimit_last_error(void) { return t_last_error.c_str(); }

const char* shmlimit_status_string(shmlimit_status status) {
  switch (status) {
    case SHMLIMIT_OK:
      return "ok";
    case SHMLIMIT_E_INVALID_ARGUMENT:
      return "invalid_argument";
    case SHMLIMIT_E_NOT_FOUND:
      return "not_found";
    case SHMLIMIT_E_EXISTS:
      return "exists";
    case SHMLIMIT_E_PERMISSION:
      return "permission";
    case SHMLIMIT_E_INCOMPATIBLE:
      return "incompatible";
    case SHMLIMIT_E_CORRUPT:
      return "corrupt";
    case SHMLIMIT_E_TIMEOUT:
      return "timeout";
    case SHMLIMIT_E_POLICY_CONFLICT:
      return "policy_conflict";
    case SHMLIMIT_E_TABLE_FULL:
      return "table_full";
    case SHMLIMIT_E_SYSTEM:
      return "system";
    case SHMLIMIT_E_READ_ONLY:
      return "read_only";
    case SHMLIMIT_E_NO_SPACE:
      return "no_space";
    case SHMLIMIT_E_NO_MEMORY:
      return "no_memory";
    case SHMLIMIT_E_BUFFER_TOO_SMALL:
      return "buffer_too_small";
    case SHMLIMIT_E_INTERNAL:
      return "internal";
    default:
      return "unknown";
  }
}

const char* shmlimit_reason_string(int reason) {
  if (reason < 0 || reason > kLastReason) return "unknown";
  // to_string(Reason) returns views of string literals: NUL-terminated.
  return shmlimit::to_string(static_cast<shmlimit::Reason>(reason)).data();
}

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
    return fail(SHMLIMIT_E_NOT_FOUND, "shmlimit_policy_counters: no policy with id " + std::to_string(id) +
                                          " in " + limiter->limiter.name());
  });
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

// The decision entry points call noexcept C++ functions; only argument
// checks can fail, and they build no std::string unless they do.
shmlimit_status shmlimit_acquire(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                                 size_t key_len, uint64_t cost, shmlimit_decision* out) {
  return keyed_decision("shmlimit_acquire", limiter, key, key_len, out,
                        [&](shmlimit::Limiter& l, std::string_view k) noexcept {
                          return l.acquire(shmlimit::PolicyId{policy}, k, cost);
                        });
}

shmlimit_status shmlimit_acquire_by_name(shmlimit_limiter* limiter, const char* policy,
                                         const char* key, size_t key_len, uint64_t cost,
                                         shmlimit_decision* out) {
  if (limiter == nullptr) return null_argument("shmlimit_acquire_by_name", "limiter");
  if (policy == nullptr) return null_argument("shmlimit_acquire_by_name", "policy");
  if (out == nullptr) return null_argument("shmlimit_acquire_by_name", "out");
  if (!key_ok(key, key_len)) return null_argument("shmlimit_acquire_by_name", "key");
  to_c(limiter->limiter.acquire(std::string_view(policy), key_view(key, key_len), cost), out);
  return SHMLIMIT_OK;
}

shmlimit_status shmlimit_acquire_at(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                                    size_t key_len, uint64_t cost, int64_t now_ns,
                                    shmlimit_decision* out) {
  return keyed_decision("shmlimit_acquire_at", limiter, key, key_len, out,
                        [&](shmlimit::Limiter& l, std::string_view k) noexcept {
                          return l.acquire_at(shmlimit::PolicyId{policy}, k, cost,
                                              shmlimit::Nanos(now_ns));
                        });
}

shmlimit_status shmlimit_peek(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                              size_t key_len, uint64_t cost, shmlimit_decision* out) {
  return keyed_decision("shmlimit_peek", limiter, key, key_len, out,
                        [&](shmlimit::Limiter& l, std::string_view k) noexcept {
                          return l.peek(shmlimit::PolicyId{policy}, k, cost);
                        });
}

shmlimit_status shmlimit_acquire_many(shmlimit_limiter* limiter, const shmlimit_request* requests,
                                      size_t count, shmlimit_decision* combined,
                                      shmlimit_decision* each) {
  if (limiter == nullptr) return null_argument("shmlimit_acquire_many", "limiter");
  if (requests == nullptr) return null_argument("shmlimit_acquire_many", "requests");
  if (combined == nullptr) return null_argument("shmlimit_acquire_many", "combined");
  if (count == 0 || count > kMaxManyRequests) {
    return guarded("shmlimit_acquire_many", [&] {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT, "shmlimit_acquire_many: count is " +
                                                   std::to_string(count) + " (expected 1.." +
                                                   std::to_string(kMaxManyRequests) + ")");
    });
  }
  std::array<shmlimit::Request, kMaxManyRequests> reqs;
  for (std::size_t i = 0; i < count; ++i) {
    if (!key_ok(requests[i].key, requests[i].key_len)) {
      return guarded("shmlimit_acquire_many", [&] {
        return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                    "shmlimit_acquire_many: requests[" + std::to_string(i) + "].key is NULL");
      });
    }
    reqs[i] = shmlimit::Request{shmlimit::PolicyId{requests[i].policy},
                                key_view(requests[i].key, requests[i].key_len), requests[i].cost};
  }
  std::array<shmlimit::Decision, kMaxManyRequests> decisions;
  const std::span<shmlimit::Decision> each_span =
      each != nullptr ? std::span<shmlimit::Decision>(decisions.data(), count)
                      : std::span<shmlimit::Decision>();
  to_c(limiter->limiter.acquire_many(std::span<const shmlimit::Request>(reqs.data(), count),
                                     each_span),
       combined);
  if (each != nullptr) {
    for (std::size_t i = 0; i < count; ++i) to_c(decisions[i], &each[i]);
  }
  return SHMLIMIT_OK;
}

shmlimit_status shmlimit_refund(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                                size_t key_len, uint64_t cost, shmlimit_decision* out) {
  if (limiter == nullptr) return null_argument("shmlimit_refund", "limiter");
  if (!key_ok(key, key_len)) return null_argument("shmlimit_refund", "key");
  const shmlimit::Decision d =
      limiter->limiter.refund(shmlimit::PolicyId{policy}, key_view(key, key_len), cost);
  if (out != nullptr) to_c(d, out);
  return SHMLIMIT_OK;
}

shmlimit_status shmlimit_reset(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                               size_t key_len, uint64_t* forgotten) {
  if (forgotten != nullptr) *forgotten = 0;
  if (limiter == nullptr) return null_argument("shmlimit_reset", "limiter");
  return guarded("shmlimit_reset", [&] {
    if (policy == SHMLIMIT_ALL_POLICIES && key != nullptr) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                  "shmlimit_reset: a key needs its policy (not SHMLIMIT_ALL_POLICIES)");
    }
    std::optional<shmlimit::PolicyId> p;
    if (policy != SHMLIMIT_ALL_POLICIES) p = shmlimit::PolicyId{policy};
    std::optional<std::string_view> k;
    if (key != nullptr) k = std::string_view(key, key_len);
    const std::uint64_t n = limiter->limiter.reset(p, k);
    if (forgotten != nullptr) *forgotten = n;
    return SHMLIMIT_OK;
  });
}

shmlimit_status shmlimit_lease_acquire(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                                       size_t key_len, uint64_t cost, shmlimit_lease** out,
                                       shmlimit_decision* decision) {
  if (out == nullptr) return null_argument("shmlimit_lease_acquire", "out");
  *out = nullptr;
  if (limiter == nullptr) return null_argument("shmlimit_lease_acquire", "limiter");
  if (!key_ok(key, key_len)) return null_argument("shmlimit_lease_acquire", "key");
  return guarded("shmlimit_lease_acquire", [&] {
    shmlimit::Lease lease =
        limiter->limiter.lease(shmlimit::PolicyId{policy}, key_view(key, key_len), cost);
    if (decision != nullptr) to_c(lease.decision(), decision);
    // Allocated only once granted; if this throws, the Lease's destructor
    // gives the units back.
    if (lease.held()) *out = new shmlimit_lease{std::move(lease)};
    return SHMLIMIT_OK;
  });
}

void shmlimit_lease_release(shmlimit_lease* lease) { delete lease; }  // ~Lease releases

void shmlimit_identity_options_init(shmlimit_identity_options* options) {
  if (options == nullptr) return;
  const shmlimit::IdentityOptions d;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->num_proxies = -1;
  options->normalize = d.normalize ? 1 : 0;
  options->trust_unix_peer = d.trust_unix_peer ? 1 : 0;
  options->use_forwarded = d.use_forwarded ? 1 : 0;
  options->ipv4_prefix = d.ipv4_prefix;
  options->ipv6_prefix = d.ipv6_prefix;
  options->max_hops = d.max_hops;
  options->max_header_bytes = d.max_header_bytes;
  options->max_key_bytes = d.max_key_bytes;
}

shmlimit_status shmlimit_identity_new(const shmlimit_identity_options* options,
                                      shmlimit_identity** out) {
  if (out == nullptr) return null_argument("shmlimit_identity_new", "out");
  *out = nullptr;
  if (options == nullptr) return null_argument("shmlimit_identity_new", "options");
  return guarded("shmlimit_identity_new", [&] {
    if (options->struct_size < sizeof(shmlimit_identity_options)) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                  "shmlimit_identity_new: struct_size is too small (call "
                  "shmlimit_identity_options_init first)");
    }
    if (options->num_proxies < -1) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT, "shmlimit_identity_new: num_proxies is " +
                                                   std::to_string(options->num_proxies) +
                                                   " (expected -1 or more)");
    }
    auto id = std::make_unique<shmlimit_identity>();
    shmlimit::IdentityOptions& o = id->options;
    if (options->num_proxies >= 0) o.num_proxies = static_cast<unsigned>(options->num_proxies);
    o.normalize = options->normalize != 0;
    o.trust_unix_peer = options->trust_unix_peer != 0;
    o.use_forwarded = options->use_forwarded != 0;
    o.ipv4_prefix = options->ipv4_prefix;
    o.ipv6_prefix = options->ipv6_prefix;
    o.max_hops = options->max_hops;
    o.max_header_bytes = static_cast<std::size_t>(options->max_header_bytes);
    o.max_key_bytes = static_cast<std::size_t>(options->max_key_bytes);
    const auto list = [](const char* text, const char* what) {
      try {
        return text == nullptr ? std::vector<shmlimit::Cidr>() : shmlimit::parse_cidrs(text);
      } catch (const shmlimit::Error& e) {
        throw shmlimit::Error(e.code(),
                              std::string("shmlimit_identity_new: ") + what + ": " + e.what());
      }
    };
    o.trusted_proxies = list(options->trusted_proxies, "trusted_proxies");
    id->access = shmlimit::AccessList(list(options->allow, "allow"), list(options->deny, "deny"));
    *out = id.release();
    return SHMLIMIT_OK;
  });
}

void shmlimit_identity_free(shmlimit_identity* identity) { delete identity; }

shmlimit_status shmlimit_client_identity(const shmlimit_identity* identity,
                                         const shmlimit_request_info* request, char* key,
                                         size_t key_capacity, shmlimit_client* client) {
  if (identity == nullptr) return null_argument("shmlimit_client_identity", "identity");
  if (request == nullptr) return null_argument("shmlimit_client_identity", "request");
  if (client == nullptr) return null_argument("shmlimit_client_identity", "client");
  if (key == nullptr && key_capacity != 0) return null_argument("shmlimit_client_identity", "key");
  std::memset(client, 0, sizeof *client);
  if (!key_ok(request->remote_addr, request->remote_addr_len)) {
    return null_argument("shmlimit_client_identity", "request.remote_addr");
  }
  return guarded("shmlimit_client_identity", [&] {
    shmlimit::RequestInfo info;
    info.remote_addr = key_view(request->remote_addr, request->remote_addr_len);
    if (request->x_forwarded_for != nullptr) {
      info.x_forwarded_for =
          std::string_view(request->x_forwarded_for, request->x_forwarded_for_len);
    }
    if (request->forwarded != nullptr)
      info.forwarded = std::string_view(request->forwarded, request->forwarded_len);
    const shmlimit::Identity who = shmlimit::client_identity(info, identity->options);
    client->access = static_cast<std::uint8_t>(identity->access.classify(who.address));
    client->source = static_cast<std::uint8_t>(who.source);
    client->hashed = who.hashed ? 1 : 0;
    client->has_address = who.address.has_value() ? 1 : 0;
    std::size_t len = 0;
    const shmlimit_status st =
        copy_out("shmlimit_client_identity", who.key, key, key_capacity, &len);
    client->key_len = static_cast<std::uint32_t>(len);
    return st;
  });
}

shmlimit_status shmlimit_classify(const shmlimit_identity* identity, const char* address,
                                  size_t address_len, int* access) {
  if (identity == nullptr) return null_argument("shmlimit_classify", "identity");
  if (access == nullptr) return null_argument("shmlimit_classify", "access");
  if (!key_ok(address, address_len)) return null_argument("shmlimit_classify", "address");
  *access = static_cast<int>(identity->access.classify(
      shmlimit::IpAddress::try_parse_host(key_view(address, address_len))));
  return SHMLIMIT_OK;
}

shmlimit_status shmlimit_throttle_key(const char* scope, size_t scope_len, const char* ident,
                                      size_t ident_len, size_t max_key_bytes, char* key,
                                      size_t key_capacity, size_t* len) {
  if (len == nullptr) return null_argument("shmlimit_throttle_key", "len");
  *len = 0;
  if (!key_ok(scope, scope_len)) return null_argument("shmlimit_throttle_key", "scope");
  if (!key_ok(ident, ident_len)) return null_argument("shmlimit_throttle_key", "ident");
  if (key == nullptr && key_capacity != 0) return null_argument("shmlimit_throttle_key", "key");
  return guarded("shmlimit_throttle_key", [&] {
    const std::string k = shmlimit::throttle_key(key_view(scope, scope_len),
                                                 key_view(ident, ident_len), max_key_bytes);
    return copy_out("shmlimit_throttle_key", k, key, key_capacity, len);
  });
}

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
