/* shmlimit C API: a stable C ABI over the shmlimit rate limiter.
 *
 * One rate limiter shared by every worker process on a host (see
 * shmlimit.hpp for the C++ API and doc/c-api.md for this one). This header
 * is C99 and C++ clean; the library is libshmlimit_c.so (SONAME
 * libshmlimit_c.so.1), found with `pkg-config --cflags --libs shmlimit`.
 *
 * Conventions
 *   * Every function that can fail returns a shmlimit_status: SHMLIMIT_OK (0)
 *     or an error code. Codes 1..11 are the values of the C++
 *     shmlimit::ErrorCode; codes >= 100 exist only here.
 *   * The message of the last failure is thread-local: shmlimit_last_error()
 *     returns it for the calling thread. It is set by every call that returns
 *     an error and left unchanged by calls that succeed, so read it right
 *     after the failing call. The pointer stays valid until the next failing
 *     call on the same thread.
 *   * No C++ exception ever crosses this API; a NULL pointer where one is
 *     required gives SHMLIMIT_E_INVALID_ARGUMENT, never a crash.
 *   * Handles are opaque. A handle may be used by several threads at once;
 *     shmlimit_close() must not race with other calls on the same handle.
 *   * Keys are byte strings: a pointer and a length (NUL bytes allowed).
 *   * Durations are signed 64-bit nanoseconds.
 *
 * Thread and process safety: the same as the C++ Limiter. Decisions
 * (acquire, peek, acquire_many, refund) are lock-free and process-safe; a
 * process killed at any instruction never blocks the others.
 *
 * Versioning: SHMLIMIT_C_API_VERSION grows when functions are added (never
 * changed or removed within SONAME 1); shmlimit_version() returns the
 * version of the library actually loaded. Structs that callers fill carry a
 * struct_size set by their *_init function, so that later versions can grow
 * them without breaking old callers.
 */
#ifndef SHMLIMIT_SHMLIMIT_H
#define SHMLIMIT_SHMLIMIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The version of this header's API. */
#define SHMLIMIT_C_API_VERSION 4

#if defined(__GNUC__)
#define SHMLIMIT_C_EXPORT __attribute__((visibility("default")))
#else
#define SHMLIMIT_C_EXPORT
#endif

/* ------------------------------------------------------------------------ */
/* Status codes and messages                                                */
/* ------------------------------------------------------------------------ */

typedef int shmlimit_status;

#define SHMLIMIT_OK 0
#define SHMLIMIT_E_INVALID_ARGUMENT 1 /**< bad name, rate, option, spec, NULL pointer */
#define SHMLIMIT_E_NOT_FOUND 2        /**< the segment (or config file, or policy) does not exist */
#define SHMLIMIT_E_EXISTS 3           /**< create on a name that already exists */
#define SHMLIMIT_E_PERMISSION 4   /**< the segment's mode refuses us, or its owner is untrusted */
#define SHMLIMIT_E_INCOMPATIBLE 5 /**< magic, version, fingerprint, size or capacity differ */
#define SHMLIMIT_E_CORRUPT 6      /**< the segment's header contradicts itself */
#define SHMLIMIT_E_TIMEOUT 7      /**< waited too long for another process */
#define SHMLIMIT_E_POLICY_CONFLICT 8 /**< same policy name, other parameters, no replace */
#define SHMLIMIT_E_TABLE_FULL 9      /**< no room in the policy table */
#define SHMLIMIT_E_SYSTEM 10         /**< any other operating-system error */
#define SHMLIMIT_E_READ_ONLY 11      /**< a write through a read-only handle */
#define SHMLIMIT_E_NO_SPACE 12       /**< create: /dev/shm cannot hold every byte of the segment */
#define SHMLIMIT_E_NO_MEMORY 100     /**< allocation failed */
#define SHMLIMIT_E_BUFFER_TOO_SMALL \
  101                           /**< a caller buffer is too small (the size needed is reported) */
#define SHMLIMIT_E_INTERNAL 102 /**< an unexpected failure inside the library */

/** The version of the library loaded at run time (SHMLIMIT_C_API_VERSION it was built with). */
SHMLIMIT_C_EXPORT int shmlimit_version(void);
/** The library's release, "MAJOR.MINOR.PATCH". Static storage. */
SHMLIMIT_C_EXPORT const char* shmlimit_version_string(void);
/** Message of the calling thread's last failed call ("" if none yet). */
SHMLIMIT_C_EXPORT const char* shmlimit_last_error(void);
/** Name of a status ("ok", "invalid_argument", ...; "unknown" otherwise). Static storage. */
SHMLIMIT_C_EXPORT const char* shmlimit_status_string(shmlimit_status status);

/* ------------------------------------------------------------------------ */
/* Decisions                                                                */
/* ------------------------------------------------------------------------ */

/* Values of shmlimit_decision.reason (the C++ shmlimit::Reason). */
#define SHMLIMIT_REASON_OK 0         /**< decided by the policy's algorithm */
#define SHMLIMIT_REASON_TABLE_FULL 1 /**< no slot for a new key: on_full applied */
#define SHMLIMIT_REASON_KEY_TOO_LONG \
  2 /**< key longer than shmlimit_max_key_bytes(): on_full applied */
#define SHMLIMIT_REASON_UNKNOWN_POLICY 3 /**< no such policy: denied */
#define SHMLIMIT_REASON_COST_TOO_HIGH 4  /**< cost > burst: can never be admitted, denied */
#define SHMLIMIT_REASON_CONTENDED 5      /**< another process stalled mid-claim: on_full applied */
#define SHMLIMIT_REASON_CLOCK_HORIZON \
  6                               /**< segment older than its clock horizon: on_full applied */
#define SHMLIMIT_REASON_CORRUPT 7 /**< the policy entry or slot is corrupt: on_full applied */
#define SHMLIMIT_REASON_NEEDS_LEASE \
  8 /**< acquire on a concurrency policy: use shmlimit_lease_acquire(); denied */

/** The outcome of one decision: the five values HTTP headers need. 40 bytes. */
typedef struct shmlimit_decision {
  uint8_t allowed;        /**< 1 admitted, 0 refused */
  uint8_t reason;         /**< SHMLIMIT_REASON_* */
  uint8_t reserved[6];    /**< zero */
  uint64_t limit;         /**< the bucket's capacity (burst), in cost units */
  uint64_t remaining;     /**< cost units that would be admitted now, after this decision */
  int64_t retry_after_ns; /**< when refused: wait this long before the same cost fits; 0 when
                             admitted */
  int64_t reset_after_ns; /**< time until the bucket is full again */
} shmlimit_decision;

/** Name of a reason ("ok", "table_full", ...; "unknown" otherwise). Static storage. */
SHMLIMIT_C_EXPORT const char* shmlimit_reason_string(int reason);

/* ------------------------------------------------------------------------ */
/* Opening a segment                                                        */
/* ------------------------------------------------------------------------ */

typedef struct shmlimit_limiter shmlimit_limiter;

/** How to open a segment. shmlimit_options_init() sets the defaults shown. */
typedef struct shmlimit_options {
  uint32_t struct_size;       /**< sizeof(shmlimit_options); set by shmlimit_options_init */
  const char* name;           /**< required: "/" then 1..200 of [A-Za-z0-9_.-] */
  uint32_t capacity;          /**< bucket slots, rounded up to a power of two; 65536. An open
                                   checks it unless 0 (set 0 to open a segment of any size) */
  uint32_t mode;              /**< permission bits of a created segment; 0600 */
  uint32_t slot_bytes;        /**< 64, 128 or 256 (keys up to slot_bytes - 40 bytes); 128 */
  uint32_t max_probe;         /**< longest probe sequence in slots; 32 */
  uint32_t open_timeout_ms;   /**< wait for a concurrent creator; 2000 */
  uint32_t claim_timeout_ms;  /**< wait for a stalled claimer of the same key; 100 */
  uint32_t read_only;         /**< non-zero: map read-only (decisions only peek); 0 */
  uint32_t log_entries;       /**< sliding-log entries per slot, 0..4096 (SLIDING_LOG policies need
                                   >= their count); 0 */
  uint32_t allow_other_users; /**< non-zero: accept a segment owned by another user or writable
                                   by 'other' (Options::allow_other_users); 0 */
} shmlimit_options;

/** Fills *options with the defaults (name NULL). Does nothing if options is NULL. */
SHMLIMIT_C_EXPORT void shmlimit_options_init(shmlimit_options* options);

/* Values of the `how` argument of shmlimit_open(). */
#define SHMLIMIT_OPEN 0           /**< open an existing segment (SHMLIMIT_E_NOT_FOUND if absent) */
#define SHMLIMIT_CREATE 1         /**< create a new one (SHMLIMIT_E_EXISTS if taken) */
#define SHMLIMIT_OPEN_OR_CREATE 2 /**< either; any number of processes may race here */

/** Opens or creates the segment described by options; *out receives the
 *  handle (NULL on failure). */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_open(const shmlimit_options* options, int how,
                                                shmlimit_limiter** out);

/** Reads a TOML configuration file (doc/config.md), opens or creates its
 *  segment and registers its policies, all or nothing (the C++
 *  shmlimit::open_config). replace non-zero: policies whose parameters
 *  differ get the file's. A missing file is SHMLIMIT_E_NOT_FOUND, a bad
 *  one SHMLIMIT_E_INVALID_ARGUMENT with "FILE:LINE:COLUMN: ..." as message. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_open_config(const char* path, int replace,
                                                       shmlimit_limiter** out);

/** The same from TOML text in memory; source names it in messages (NULL: "<config>"). */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_open_config_text(const char* toml, size_t toml_len,
                                                            const char* source, int replace,
                                                            shmlimit_limiter** out);

/** Unmaps the segment and frees the handle. NULL is allowed. */
SHMLIMIT_C_EXPORT void shmlimit_close(shmlimit_limiter* limiter);

/** Removes a segment's name (open mappings stay valid). *existed (if not
 *  NULL) receives 1 if it existed, 0 otherwise; absence is not an error. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_remove(const char* name, int* existed);

/** Longest key the segment stores, in bytes (0 if limiter is NULL). */
SHMLIMIT_C_EXPORT uint32_t shmlimit_max_key_bytes(const shmlimit_limiter* limiter);

/** Current time in ns since the segment's epoch (0 if limiter is NULL). */
SHMLIMIT_C_EXPORT int64_t shmlimit_now(const shmlimit_limiter* limiter);

/* ------------------------------------------------------------------------ */
/* Policies                                                                 */
/* ------------------------------------------------------------------------ */

/* Values of shmlimit_policy_spec.algorithm (the C++ shmlimit::Algorithm). */
#define SHMLIMIT_ALGORITHM_GCRA 1
#define SHMLIMIT_ALGORITHM_TOKEN_BUCKET 2
#define SHMLIMIT_ALGORITHM_FIXED_WINDOW 3
#define SHMLIMIT_ALGORITHM_SLIDING_WINDOW 4
#define SHMLIMIT_ALGORITHM_QUIET_PERIOD 5
#define SHMLIMIT_ALGORITHM_LEAKY_BUCKET 6
#define SHMLIMIT_ALGORITHM_CONCURRENCY \
  7 /**< at most the rate's count in flight: shmlimit_lease_acquire() */
#define SHMLIMIT_ALGORITHM_SLIDING_LOG 8 /**< exact sliding window (needs options.log_entries) */

/* Values of shmlimit_policy_spec.wait (SLIDING_LOG only). */
#define SHMLIMIT_LOG_WAIT_EXACT 0 /**< retry_after: the exact wait until the cost fits */
#define SHMLIMIT_LOG_WAIT_DRF 1   /**< retry_after: DRF SimpleRateThrottle.wait() */

/* Values of shmlimit_policy_spec.on_full. */
#define SHMLIMIT_ON_FULL_ALLOW 0 /**< fail open (the default) */
#define SHMLIMIT_ON_FULL_DENY 1  /**< fail closed */

/** A policy to register. shmlimit_policy_spec_init() sets the defaults. */
typedef struct shmlimit_policy_spec {
  uint32_t struct_size; /**< sizeof(shmlimit_policy_spec); set by shmlimit_policy_spec_init */
  const char* name;     /**< 1..31 bytes of [A-Za-z0-9_.:-] */
  const char* rate;     /**< "100/m", "10/5m", "10 per minute" (shmlimit::parse_rate) */
  uint32_t algorithm;   /**< SHMLIMIT_ALGORITHM_*; GCRA */
  uint32_t on_full;     /**< SHMLIMIT_ON_FULL_*; ALLOW */
  uint64_t burst;       /**< bucket capacity; 0 = the rate's count */
  uint32_t wait;        /**< SHMLIMIT_LOG_WAIT_*; EXACT */
  uint32_t reserved;    /**< zero */
} shmlimit_policy_spec;

SHMLIMIT_C_EXPORT void shmlimit_policy_spec_init(shmlimit_policy_spec* spec);

/** Registers a policy (process-safe). The same name and spec again gives
 *  the same id; another spec is SHMLIMIT_E_POLICY_CONFLICT unless replace. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_add_policy(shmlimit_limiter* limiter,
                                                      const shmlimit_policy_spec* spec, int replace,
                                                      uint32_t* id);

/** Looks a policy up by name: SHMLIMIT_E_NOT_FOUND if it is not registered.
 *  Keep the id for the hot path. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_find_policy(const shmlimit_limiter* limiter,
                                                       const char* name, uint32_t* id);

/** The exact totals of policy `id`'s decisions since the segment was
 *  created (C++ Limiter::counters(): every acquire and lease with cost > 0,
 *  and each limit that refused a multi-limit request; they never decrease).
 *  Reads only the segment's counter blocks; never writes. SHMLIMIT_E_NOT_FOUND
 *  if no policy has that id. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_policy_counters(const shmlimit_limiter* limiter,
                                                           uint32_t id, uint64_t* admitted,
                                                           uint64_t* denied);

/** A registered policy as the segment holds it (shmlimit_policy_describe). */
typedef struct shmlimit_policy_info {
  uint32_t struct_size; /**< sizeof(shmlimit_policy_info); set by the caller */
  uint32_t algorithm;   /**< SHMLIMIT_ALGORITHM_* */
  uint32_t on_full;     /**< SHMLIMIT_ON_FULL_* */
  uint32_t wait;        /**< SHMLIMIT_LOG_WAIT_* (SLIDING_LOG only; EXACT otherwise) */
  uint64_t count;       /**< the rate's count (CONCURRENCY: the limit in flight) */
  int64_t period_ns;    /**< the rate's period (CONCURRENCY: 0) */
  uint64_t burst;       /**< the capacity, resolved (never 0) */
  char name[32];        /**< NUL-terminated */
} shmlimit_policy_info;

/** Describes policy `id` (C API version 4): its algorithm, rate, burst and
 *  name as registered, e.g. to check that a policy read from a
 *  configuration file is of the algorithm a caller needs. info->struct_size
 *  must be set to sizeof *info. SHMLIMIT_E_NOT_FOUND if no policy has that
 *  id. Reads the segment only. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_policy_describe(const shmlimit_limiter* limiter,
                                                           uint32_t id, shmlimit_policy_info* info);

/** Whether shmlimit_reserve() queues turns on `algorithm` (a
 *  SHMLIMIT_ALGORITHM_*), first come first served: 1 for GCRA, LEAKY_BUCKET
 *  and TOKEN_BUCKET; 0 for the others, which admit now or refuse (C API
 *  version 4). */
SHMLIMIT_C_EXPORT int shmlimit_algorithm_queues_turns(uint32_t algorithm);

/** The ids of a policy group: name, then name.2, name.3, ... (a config
 *  policy with a list of rates). Writes up to capacity ids; *count receives
 *  the group's size (0 if name is not registered). If the group has more
 *  than capacity members, returns SHMLIMIT_E_BUFFER_TOO_SMALL. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_policy_group(const shmlimit_limiter* limiter,
                                                        const char* name, uint32_t* ids,
                                                        size_t capacity, size_t* count);

/* ------------------------------------------------------------------------ */
/* Decisions (hot path: lock-free, process-safe)                            */
/* ------------------------------------------------------------------------ */

/** Charges cost to the bucket of (policy, key) now; cost 0 only reports.
 *  An unknown policy id is not an error: the decision is refused with
 *  SHMLIMIT_REASON_UNKNOWN_POLICY. key may be NULL only when key_len is 0. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_acquire(shmlimit_limiter* limiter, uint32_t policy,
                                                   const char* key, size_t key_len, uint64_t cost,
                                                   shmlimit_decision* out);

/** The same, looking the policy up by its NUL-terminated name first. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_acquire_by_name(shmlimit_limiter* limiter,
                                                           const char* policy, const char* key,
                                                           size_t key_len, uint64_t cost,
                                                           shmlimit_decision* out);

/** The same at an explicit time, ns since the segment's epoch (tests, replays). */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_acquire_at(shmlimit_limiter* limiter, uint32_t policy,
                                                      const char* key, size_t key_len,
                                                      uint64_t cost, int64_t now_ns,
                                                      shmlimit_decision* out);

/** What shmlimit_acquire() would say for cost, charging nothing. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_peek(shmlimit_limiter* limiter, uint32_t policy,
                                                const char* key, size_t key_len, uint64_t cost,
                                                shmlimit_decision* out);

/** One limit of a multi-limit decision. */
typedef struct shmlimit_request {
  uint32_t policy;
  uint32_t reserved; /**< zero */
  const char* key;
  size_t key_len;
  uint64_t cost;
} shmlimit_request;

/** All or nothing: admitted only if every limit admits, then charged to
 *  every one; when any refuses, none is charged. *combined gets the
 *  combined decision (largest retry_after of the refusals, remaining and
 *  limit of the tightest limit); each (NULL or count entries) gets every
 *  limit's own. count 1..64. A refused request writes nothing; one
 *  request is decided exactly as shmlimit_acquire_at(); a limit named twice
 *  is charged for each mention (doc/algorithms.md, "Several limits"). */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_acquire_many(shmlimit_limiter* limiter,
                                                        const shmlimit_request* requests,
                                                        size_t count, shmlimit_decision* combined,
                                                        shmlimit_decision* each);

/** Gives back cost already taken, never beyond the capacity. *out (may be
 *  NULL) receives the bucket after the refund. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_refund(shmlimit_limiter* limiter, uint32_t policy,
                                                  const char* key, size_t key_len, uint64_t cost,
                                                  shmlimit_decision* out);

/** Policy value of shmlimit_reset() meaning every policy. */
#define SHMLIMIT_ALL_POLICIES 0xFFFFFFFFu

/** Forgets buckets: one key of a policy, every key of a policy (key NULL),
 *  or everything (policy SHMLIMIT_ALL_POLICIES, key NULL). *forgotten (may
 *  be NULL) receives how many. A key with SHMLIMIT_ALL_POLICIES is
 *  SHMLIMIT_E_INVALID_ARGUMENT. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_reset(shmlimit_limiter* limiter, uint32_t policy,
                                                 const char* key, size_t key_len,
                                                 uint64_t* forgotten);

/* ------------------------------------------------------------------------ */
/* Concurrency leases                                                       */
/* ------------------------------------------------------------------------ */

typedef struct shmlimit_lease shmlimit_lease;

/** Takes cost units of a concurrency policy's limit for (policy, key) until
 *  shmlimit_lease_release(). *out receives the lease when granted, NULL
 *  when refused (the decision says why); *decision (may be NULL) has
 *  limit = N, remaining = N - in flight. A lease belongs to the process
 *  that took it; one that dies holding it has it reclaimed by the others.
 *  The lease must be released before its limiter is closed. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_lease_acquire(shmlimit_limiter* limiter, uint32_t policy,
                                                         const char* key, size_t key_len,
                                                         uint64_t cost, shmlimit_lease** out,
                                                         shmlimit_decision* decision);

/** Gives the units back and frees the lease. NULL is allowed. */
SHMLIMIT_C_EXPORT void shmlimit_lease_release(shmlimit_lease* lease);

/* ------------------------------------------------------------------------ */
/* Reservations: waiting for a turn (doc/outbound.md)                       */
/* ------------------------------------------------------------------------ */

/** max_wait_ns value meaning "however long the turn is". */
#define SHMLIMIT_WAIT_FOREVER INT64_MAX

typedef struct shmlimit_reservation shmlimit_reservation;

/** Reserves cost units of (policy, key) for the caller's turn, at most
 *  max_wait_ns away (negative counts as 0; SHMLIMIT_WAIT_FOREVER: no
 *  limit). GCRA and the leaky bucket queue callers first come, first
 *  served; the other algorithms admit now or refuse with the next opening
 *  as retry_after; concurrency is refused (reason needs_lease).
 *  *decision: allowed when granted; when refused (nothing charged)
 *  retry_after_ns is the wait the turn would have needed. *delay_ns (may be
 *  NULL): granted, how long to wait before acting; refused, as
 *  retry_after_ns. reservation (may be NULL) receives, for a granted turn
 *  that can still be given back, a handle for shmlimit_reservation_cancel()
 *  to be freed with shmlimit_reservation_free(); NULL otherwise. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_reserve(shmlimit_limiter* limiter, uint32_t policy,
                                                   const char* key, size_t key_len, uint64_t cost,
                                                   int64_t max_wait_ns, shmlimit_decision* decision,
                                                   int64_t* delay_ns,
                                                   shmlimit_reservation** reservation);

/** Gives the reserved units back if nothing has charged the bucket since
 *  and the turn has not come (doc/outbound.md, "Cancel"). Returns 1 if
 *  units were given back, 0 otherwise (also for NULL, or a second call). */
SHMLIMIT_C_EXPORT int shmlimit_reservation_cancel(shmlimit_reservation* reservation);

/** Frees a reservation handle without cancelling it. NULL is allowed. */
SHMLIMIT_C_EXPORT void shmlimit_reservation_free(shmlimit_reservation* reservation);

/** Reserves and sleeps (this thread) until the turn: *out is allowed when
 *  the turn came within max_wait_ns; refused at once, without sleeping
 *  and charging nothing, when it would come later. Signals do not cut the
 *  sleep short. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_wait(shmlimit_limiter* limiter, uint32_t policy,
                                                const char* key, size_t key_len, uint64_t cost,
                                                int64_t max_wait_ns, shmlimit_decision* out);

/* ------------------------------------------------------------------------ */
/* Client identity (shmlimit/identity.hpp; doc/identity.md)                 */
/* ------------------------------------------------------------------------ */

/** How to identify clients and which addresses to allow or deny.
 *  shmlimit_identity_options_init() sets the defaults (DRF's: the whole
 *  X-Forwarded-For if present, else the peer address). */
typedef struct shmlimit_identity_options {
  uint32_t struct_size;     /**< set by shmlimit_identity_options_init */
  int32_t num_proxies;      /**< DRF's NUM_PROXIES; -1 = unset (None); -1 */
  uint32_t normalize;       /**< num_proxies mode: parse, mask and canonicalise the address; 0 */
  uint32_t trust_unix_peer; /**< trusted-proxy mode: a non-IP peer (Unix socket) is trusted; 0 */
  uint32_t use_forwarded; /**< read RFC 7239 Forwarded instead of X-Forwarded-For when present; 0 */
  uint32_t ipv4_prefix;   /**< normalised keys keep this many bits of an IPv4 client; 32 */
  uint32_t ipv6_prefix;   /**< ... and of an IPv6 client; 64 */
  uint32_t max_hops;      /**< forwarding hops examined from the right; 32 */
  uint64_t max_header_bytes;   /**< last bytes of a forwarding header read; 8192 */
  uint64_t max_key_bytes;      /**< longest key (longer ones are hashed); 88 */
  const char* trusted_proxies; /**< CIDR list "10.0.0.0/8, ::1"; non-empty selects trusted-proxy
                                  mode; NULL */
  const char* allow;           /**< CIDR list never limited; NULL */
  const char* deny;            /**< CIDR list always refused (wins over allow); NULL */
} shmlimit_identity_options;

SHMLIMIT_C_EXPORT void shmlimit_identity_options_init(shmlimit_identity_options* options);

/** Parsed identity options and access lists (immutable; any number of threads). */
typedef struct shmlimit_identity shmlimit_identity;

/** Parses options once. A bad CIDR list is SHMLIMIT_E_INVALID_ARGUMENT naming the item. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_identity_new(const shmlimit_identity_options* options,
                                                        shmlimit_identity** out);
SHMLIMIT_C_EXPORT void shmlimit_identity_free(shmlimit_identity* identity);

/* Values of shmlimit_client.access. */
#define SHMLIMIT_ACCESS_LIMIT 0 /**< in neither list: apply the rate limit */
#define SHMLIMIT_ACCESS_ALLOW 1 /**< in the allow list: never limited */
#define SHMLIMIT_ACCESS_DENY 2  /**< in the deny list: always refused */

/* Values of shmlimit_client.source. */
#define SHMLIMIT_SOURCE_REMOTE_ADDR 0
#define SHMLIMIT_SOURCE_X_FORWARDED_FOR 1
#define SHMLIMIT_SOURCE_FORWARDED 2
#define SHMLIMIT_SOURCE_FALLBACK 3

/** The parts of a request that identify the client. A header that is
 *  absent has a NULL pointer; present but empty is a non-NULL pointer
 *  with length 0. Repeated headers are joined with ", ". */
typedef struct shmlimit_request_info {
  const char* remote_addr; /**< the peer address as text (NULL or empty for a Unix socket) */
  size_t remote_addr_len;
  const char* x_forwarded_for;
  size_t x_forwarded_for_len;
  const char* forwarded;
  size_t forwarded_len;
} shmlimit_request_info;

/** Who a request comes from. */
typedef struct shmlimit_client {
  uint32_t key_len;    /**< bytes written to the key buffer (without the NUL) */
  uint8_t access;      /**< SHMLIMIT_ACCESS_* of the client's address (LIMIT when it has none) */
  uint8_t source;      /**< SHMLIMIT_SOURCE_* */
  uint8_t hashed;      /**< 1: the key is a digest of a longer one */
  uint8_t has_address; /**< 1: the key names an address (the one classified) */
} shmlimit_client;

/** The limiter key of a request, into key[0..key_capacity) with a NUL
 *  (key_capacity = max_key_bytes + 1 always suffices), and its access
 *  class. If the key does not fit: SHMLIMIT_E_BUFFER_TOO_SMALL, and
 *  client->key_len says how many bytes it needs (without the NUL). */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_client_identity(const shmlimit_identity* identity,
                                                           const shmlimit_request_info* request,
                                                           char* key, size_t key_capacity,
                                                           shmlimit_client* client);

/** The access class of an address given as text ("10.1.2.3", "[::1]:80"):
 *  SHMLIMIT_ACCESS_* into *access. Text that is not an address is
 *  SHMLIMIT_ACCESS_LIMIT (neither list can vouch for it). */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_classify(const shmlimit_identity* identity,
                                                    const char* address, size_t address_len,
                                                    int* access);

/** DRF's scoped key "throttle_<scope>_<ident>" (hashed beyond
 *  max_key_bytes), with the buffer convention of shmlimit_client_identity:
 *  *len receives the key's length. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_throttle_key(const char* scope, size_t scope_len,
                                                        const char* ident, size_t ident_len,
                                                        size_t max_key_bytes, char* key,
                                                        size_t key_capacity, size_t* len);

/** The key itself if it is at most max_key_bytes long, else its fixed-length
 *  stand-in ('~' and XXH3-128 hex digits; C++ shmlimit::fit_key), so that
 *  an over-long key is still limited on its own. Buffer convention as
 *  shmlimit_client_identity: *len receives the result's length. Since API
 *  version 2. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_fit_key(const char* key, size_t key_len,
                                                   size_t max_key_bytes, char* out,
                                                   size_t out_capacity, size_t* len);

/* ------------------------------------------------------------------------ */
/* HTTP responses (shmlimit/http.hpp; doc/headers.md)                       */
/* ------------------------------------------------------------------------ */

/* Bits of shmlimit_http_options.headers. */
#define SHMLIMIT_HEADERS_RETRY_AFTER 1u /**< Retry-After */
#define SHMLIMIT_HEADERS_X_RATELIMIT 2u /**< X-RateLimit-Limit / -Remaining / -Reset */
#define SHMLIMIT_HEADERS_RATELIMIT 4u   /**< RateLimit-Policy + RateLimit (IETF draft) */
#define SHMLIMIT_HEADERS_ALL 7u

typedef struct shmlimit_http_options {
  uint32_t struct_size;  /**< set by shmlimit_http_options_init */
  int32_t refuse_status; /**< status of a refused request, 400..599; 429 */
  uint32_t dry_run;      /**< decide and report, never refuse; 0 */
  uint32_t headers;      /**< SHMLIMIT_HEADERS_* bits; ALL */
} shmlimit_http_options;

SHMLIMIT_C_EXPORT void shmlimit_http_options_init(shmlimit_http_options* options);

/** What to do with the request. */
typedef struct shmlimit_verdict {
  uint8_t refuse;       /**< 1: answer with status instead of serving (never in dry run) */
  uint8_t would_refuse; /**< 1: the decision refused (equal to refuse unless dry run) */
  uint8_t reserved[2];
  int32_t status;         /**< refuse_status when refuse, else 0 */
  uint64_t retry_after_s; /**< Retry-After in whole seconds, rounded up; 0 when admitted */
} shmlimit_verdict;

SHMLIMIT_C_EXPORT shmlimit_status shmlimit_http_verdict(const shmlimit_decision* decision,
                                                        const shmlimit_http_options* options,
                                                        shmlimit_verdict* verdict);

/** One policy's part in the RateLimit-Policy / RateLimit fields. */
typedef struct shmlimit_policy_report {
  const char* name;           /**< the policy's name (NUL-terminated; NULL: "default") */
  shmlimit_decision decision; /**< this policy's own decision (acquire_many's each[i]) */
  int64_t window_ns;          /**< the policy's window (shmlimit_policy_window); 0 omits w */
} shmlimit_policy_report;

/** The window to report for a registered policy: the time it takes to make
 *  its whole capacity available again. SHMLIMIT_E_NOT_FOUND for an unknown id. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_policy_window(const shmlimit_limiter* limiter,
                                                         uint32_t policy, int64_t* window_ns);

/** The rate-limit response headers as "Name: value\r\n" lines into
 *  out[0..capacity) with a NUL. *len receives the block's length (without
 *  the NUL); if it does not fit, SHMLIMIT_E_BUFFER_TOO_SMALL and *len is
 *  the length needed. reports may be NULL when count is 0 (no RateLimit
 *  fields); options NULL means the defaults. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_http_headers(const shmlimit_decision* combined,
                                                        const shmlimit_policy_report* reports,
                                                        size_t count,
                                                        const shmlimit_http_options* options,
                                                        char* out, size_t capacity, size_t* len);

/** DRF's Throttled detail ("Request was throttled. Expected available in N
 *  seconds."); wait_ns < 0 means no wait known. Buffer convention as
 *  shmlimit_http_headers. */
SHMLIMIT_C_EXPORT shmlimit_status shmlimit_throttled_detail(int64_t wait_ns, char* out,
                                                            size_t capacity, size_t* len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMLIMIT_SHMLIMIT_H */
