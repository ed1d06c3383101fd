// The C API's decisions: acquire, peek, acquire_many, refund, reset and
// concurrency leases.
#include "capi_impl.hpp"

namespace capi_detail {

void to_c(const shmlimit::Decision& d, shmlimit_decision* out) noexcept {
  std::memset(out, 0, sizeof *out);
  out->allowed = d.allowed ? 1 : 0;
  out->reason = static_cast<std::uint8_t>(d.reason);
  out->limit = d.limit;
  out->remaining = d.remaining;
  out->retry_after_ns = d.retry_after.count();
  out->reset_after_ns = d.reset_after.count();
}

}  // namespace capi_detail

using namespace capi_detail;

extern "C" {

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

shmlimit_status shmlimit_reserve(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                                 size_t key_len, uint64_t cost, int64_t max_wait_ns,
                                 shmlimit_decision* decision, int64_t* delay_ns,
                                 shmlimit_reservation** reservation) {
  if (reservation != nullptr) *reservation = nullptr;
  if (limiter == nullptr) return null_argument("shmlimit_reserve", "limiter");
  if (decision == nullptr) return null_argument("shmlimit_reserve", "decision");
  if (!key_ok(key, key_len)) return null_argument("shmlimit_reserve", "key");
  return guarded("shmlimit_reserve", [&] {
    shmlimit::Reservation r = limiter->limiter.reserve(
        shmlimit::PolicyId{policy}, key_view(key, key_len), cost, shmlimit::Nanos(max_wait_ns));
    to_c(r.decision(), decision);
    if (delay_ns != nullptr) *delay_ns = r.delay().count();
    // Allocated only for a granted turn: if this throws, the turn stays
    // taken (as when a reservation is dropped).
    if (reservation != nullptr && r.ok()) *reservation = new shmlimit_reservation{std::move(r)};
    return SHMLIMIT_OK;
  });
}

int shmlimit_reservation_cancel(shmlimit_reservation* reservation) {
  return reservation != nullptr && reservation->reservation.cancel() ? 1 : 0;
}

void shmlimit_reservation_free(shmlimit_reservation* reservation) { delete reservation; }

shmlimit_status shmlimit_wait(shmlimit_limiter* limiter, uint32_t policy, const char* key,
                              size_t key_len, uint64_t cost, int64_t max_wait_ns,
                              shmlimit_decision* out) {
  return keyed_decision("shmlimit_wait", limiter, key, key_len, out,
                        [&](shmlimit::Limiter& l, std::string_view k) noexcept {
                          return l.wait_for(shmlimit::PolicyId{policy}, k, cost,
                                            shmlimit::Nanos(max_wait_ns));
                        });
}

}  // extern "C"
