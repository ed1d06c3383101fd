// Private to src/capi: what the C API's files share (formerly capi.cpp's
// anonymous namespace): the handle types behind the opaque C pointers, the
// thread-local message, guarded() and the argument and output helpers.
#pragma once

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
#include "shmlimit/inspect.hpp"
#include "shmlimit/shmlimit.h"
#include "shmlimit/shmlimit.hpp"

struct shmlimit_limiter {
  explicit shmlimit_limiter(shmlimit::Limiter l) : limiter(std::move(l)) {}
  shmlimit::Limiter limiter;
};

struct shmlimit_lease {
  shmlimit::Lease lease;
};

struct shmlimit_reservation {
  shmlimit::Reservation reservation;
};

struct shmlimit_identity {
  shmlimit::IdentityOptions options;
  shmlimit::AccessList access;
};

namespace capi_detail {

using shmlimit::ErrorCode;

constexpr int kLastReason = SHMLIMIT_REASON_NEEDS_LEASE;
constexpr unsigned kLastAlgorithm = SHMLIMIT_ALGORITHM_SLIDING_LOG;

// Most limits one shmlimit_acquire_many call takes: the requests are
// converted on the stack, so the hot path never allocates.
constexpr std::size_t kMaxManyRequests = 64;

extern thread_local std::string t_last_error;  // shmlimit_last_error()

shmlimit_status fail(shmlimit_status status, const char* what) noexcept;

shmlimit_status fail(shmlimit_status status, const std::string& what) noexcept;

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

shmlimit_status null_argument(const char* function, const char* argument) noexcept;

void to_c(const shmlimit::Decision& d, shmlimit_decision* out) noexcept;

// Copies `text` and a NUL into out[0..capacity); *len = text's length.
shmlimit_status copy_out(const char* function, std::string_view text, char* out,
                         std::size_t capacity, std::size_t* len);

// A key argument: NULL only with length 0.
bool key_ok(const char* key, std::size_t key_len) noexcept;
std::string_view key_view(const char* key, std::size_t key_len) noexcept;

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

}  // namespace capi_detail
