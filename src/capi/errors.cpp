// The C API's status codes and messages: the thread-local message behind
// shmlimit_last_error(), the status and reason strings, the versions, and
// the argument and output helpers every entry point uses.
//
// Every entry point catches everything: no exception crosses the C ABI.
// Failures set a thread-local message and return a shmlimit_status whose
// values 1..11 are those of shmlimit::ErrorCode (checked below).
#include "capi_impl.hpp"

namespace capi_detail {

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
static_assert(SHMLIMIT_ALGORITHM_GCRA == static_cast<int>(shmlimit::Algorithm::kGcra));
static_assert(SHMLIMIT_ALGORITHM_LEAKY_BUCKET ==
              static_cast<int>(shmlimit::Algorithm::kLeakyBucket));
static_assert(SHMLIMIT_ALGORITHM_CONCURRENCY ==
              static_cast<int>(shmlimit::Algorithm::kConcurrency));
static_assert(SHMLIMIT_ALGORITHM_SLIDING_LOG == static_cast<int>(shmlimit::Algorithm::kSlidingLog));
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

shmlimit_status null_argument(const char* function, const char* argument) noexcept {
  try {
    return fail(SHMLIMIT_E_INVALID_ARGUMENT, std::string(function) + ": " + argument + " is NULL");
  } catch (...) {
    return SHMLIMIT_E_INVALID_ARGUMENT;
  }
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

// A key argument: NULL only with length 0.
bool key_ok(const char* key, std::size_t key_len) noexcept {
  return key != nullptr || key_len == 0;
}
std::string_view key_view(const char* key, std::size_t key_len) noexcept {
  return key_len == 0 ? std::string_view() : std::string_view(key, key_len);
}

}  // namespace capi_detail

using namespace capi_detail;

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

}  // extern "C"
