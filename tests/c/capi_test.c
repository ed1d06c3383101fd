/* The C API from C99: every entry point, its error paths (missing segment,
 * bad rate, bad config, NULL pointers), and forked workers sharing one
 * limit through libshmlimit_c.
 *
 *   capi_test [TMPDIR]     exit 0 when every check passed
 *
 * Built twice: in the tree (ctest c_api.in_tree) and against an install
 * found with pkg-config (ctest c_api.pkg_config). */
#define _POSIX_C_SOURCE 200809L

#include <shmlimit/shmlimit.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    ++g_checks;                                                                \
    if (!(cond)) {                                                             \
      ++g_failures;                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define CHECK_STATUS(expr, want)                                                                 \
  do {                                                                                           \
    shmlimit_status got_ = (expr);                                                               \
    ++g_checks;                                                                                  \
    if (got_ != (want)) {                                                                        \
      ++g_failures;                                                                              \
      fprintf(stderr, "%s:%d: %s returned %s (%d), expected %s; last error: %s\n", __FILE__,     \
              __LINE__, #expr, shmlimit_status_string(got_), got_, shmlimit_status_string(want), \
              shmlimit_last_error());                                                            \
    }                                                                                            \
  } while (0)

/* The last error message contains `part`. */
#define CHECK_ERROR_MENTIONS(part)                                                              \
  do {                                                                                          \
    ++g_checks;                                                                                 \
    if (strstr(shmlimit_last_error(), (part)) == NULL) {                                        \
      ++g_failures;                                                                             \
      fprintf(stderr, "%s:%d: last error \"%s\" does not mention \"%s\"\n", __FILE__, __LINE__, \
              shmlimit_last_error(), (part));                                                   \
    }                                                                                           \
  } while (0)

static const int64_t kSecond = 1000000000;

static char g_name[64];

static void test_version_and_names(void) {
  const char* v = shmlimit_version_string();
  CHECK(shmlimit_version() == SHMLIMIT_C_API_VERSION);
  CHECK(v != NULL && strchr(v, '.') != NULL);
  CHECK(strcmp(shmlimit_status_string(SHMLIMIT_OK), "ok") == 0);
  CHECK(strcmp(shmlimit_status_string(SHMLIMIT_E_NOT_FOUND), "not_found") == 0);
  CHECK(strcmp(shmlimit_status_string(SHMLIMIT_E_BUFFER_TOO_SMALL), "buffer_too_small") == 0);
  CHECK(strcmp(shmlimit_status_string(SHMLIMIT_E_NO_SPACE), "no_space") == 0);
  CHECK(strcmp(shmlimit_status_string(-5), "unknown") == 0);
  CHECK(strcmp(shmlimit_reason_string(SHMLIMIT_REASON_TABLE_FULL), "table_full") == 0);
  CHECK(strcmp(shmlimit_reason_string(99), "unknown") == 0);
  CHECK(strcmp(shmlimit_reason_string(-1), "unknown") == 0);
}

static void test_null_pointers_are_errors(void) {
  shmlimit_options o;
  shmlimit_limiter* l = (shmlimit_limiter*)&o; /* must be reset to NULL on failure */
  shmlimit_decision d;
  shmlimit_policy_spec spec;
  uint32_t id = 0;
  size_t count = 0;
  shmlimit_request r;

  shmlimit_options_init(NULL);
  shmlimit_policy_spec_init(NULL);
  shmlimit_close(NULL);
  shmlimit_options_init(&o);

  CHECK_STATUS(shmlimit_open(NULL, SHMLIMIT_OPEN, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK(l == NULL);
  CHECK_ERROR_MENTIONS("options");
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, &l), SHMLIMIT_E_INVALID_ARGUMENT); /* name NULL */
  CHECK_ERROR_MENTIONS("name");
  CHECK_STATUS(shmlimit_open_config(NULL, 0, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_open_config("x.toml", 0, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_open_config_text(NULL, 0, NULL, 0, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_remove(NULL, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK(shmlimit_max_key_bytes(NULL) == 0);
  CHECK(shmlimit_now(NULL) == 0);

  shmlimit_policy_spec_init(&spec);
  spec.name = "p";
  spec.rate = "1/s";
  CHECK_STATUS(shmlimit_add_policy(NULL, &spec, 0, &id), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_find_policy(NULL, "p", &id), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_policy_group(NULL, "p", &id, 1, &count), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_acquire(NULL, 0, "k", 1, 1, &d), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("limiter");
  CHECK_STATUS(shmlimit_acquire_by_name(NULL, "p", "k", 1, 1, &d), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_acquire_at(NULL, 0, "k", 1, 1, 0, &d), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_peek(NULL, 0, "k", 1, 1, &d), SHMLIMIT_E_INVALID_ARGUMENT);
  memset(&r, 0, sizeof r);
  CHECK_STATUS(shmlimit_acquire_many(NULL, &r, 1, &d, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_refund(NULL, 0, "k", 1, 1, &d), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_reset(NULL, 0, NULL, 0, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
}

static void test_missing_segment(void) {
  shmlimit_options o;
  shmlimit_limiter* l = NULL;
  shmlimit_options_init(&o);
  CHECK(o.struct_size == sizeof o);
  CHECK(o.capacity == 65536);
  CHECK(o.mode == 0600);
  CHECK(o.slot_bytes == 128);
  CHECK(o.max_probe == 32);
  CHECK(o.read_only == 0);
  CHECK(o.allow_other_users == 0);
  o.name = g_name;
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, &l), SHMLIMIT_E_NOT_FOUND);
  CHECK(l == NULL);
  CHECK_ERROR_MENTIONS(g_name);

  o.name = "no-slash";
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN_OR_CREATE, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  o.name = g_name;
  CHECK_STATUS(shmlimit_open(&o, 42, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("how");
  /* A caller built before allow_other_users existed: accepted, field unread. */
  o.struct_size = (uint32_t)offsetof(shmlimit_options, allow_other_users);
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, &l), SHMLIMIT_E_NOT_FOUND);
  o.struct_size = 4; /* a caller that skipped shmlimit_options_init */
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("struct_size");
}

/* Creates the segment with policy "api" = 10/min, burst 10; returns it. */
static shmlimit_limiter* create_segment(uint32_t* api) {
  shmlimit_options o;
  shmlimit_limiter* l = NULL;
  shmlimit_limiter* again = NULL;
  shmlimit_policy_spec spec;
  uint32_t same = 99;

  shmlimit_options_init(&o);
  o.name = g_name;
  o.capacity = 1024;
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_CREATE, &l), SHMLIMIT_OK);
  CHECK(l != NULL);
  if (l == NULL) return NULL;
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_CREATE, &again), SHMLIMIT_E_EXISTS);
  CHECK(again == NULL);
  CHECK(shmlimit_max_key_bytes(l) == 88);

  shmlimit_policy_spec_init(&spec);
  CHECK(spec.struct_size == sizeof spec);
  CHECK(spec.algorithm == SHMLIMIT_ALGORITHM_GCRA);
  spec.name = "api";
  spec.rate = "10/fortnight";
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, api), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("fortnight");
  spec.rate = NULL;
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, api), SHMLIMIT_E_INVALID_ARGUMENT);
  spec.rate = "10/min";
  spec.algorithm = 99;
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, api), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("algorithm");
  spec.algorithm = SHMLIMIT_ALGORITHM_GCRA;
  spec.on_full = 7;
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, api), SHMLIMIT_E_INVALID_ARGUMENT);
  spec.on_full = SHMLIMIT_ON_FULL_DENY;
  spec.name = "bad name!";
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, api), SHMLIMIT_E_INVALID_ARGUMENT);
  spec.name = "api";
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, api), SHMLIMIT_OK);
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, &same), SHMLIMIT_OK);
  CHECK(same == *api);
  spec.rate = "20/min";
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, &same), SHMLIMIT_E_POLICY_CONFLICT);
  CHECK_ERROR_MENTIONS("api");

  CHECK_STATUS(shmlimit_find_policy(l, "api", &same), SHMLIMIT_OK);
  CHECK(same == *api);
  CHECK_STATUS(shmlimit_find_policy(l, "nope", &same), SHMLIMIT_E_NOT_FOUND);
  CHECK_ERROR_MENTIONS("nope");
  CHECK_STATUS(shmlimit_find_policy(l, "api", NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  return l;
}

static void test_decisions(shmlimit_limiter* l, uint32_t api) {
  const int64_t t = 5 * kSecond; /* injected clock: ns since the segment's epoch */
  const int64_t T = 6 * kSecond; /* 10/min: one every 6 s */
  shmlimit_decision d;
  shmlimit_decision each[2];
  shmlimit_request reqs[2];
  uint32_t other = 0;
  uint64_t n = 0;
  int i;
  char long_key[200];
  shmlimit_policy_spec spec;

  for (i = 0; i < 10; ++i) {
    CHECK_STATUS(shmlimit_acquire_at(l, api, "alice", 5, 1, t, &d), SHMLIMIT_OK);
    CHECK(d.allowed == 1);
    CHECK(d.reason == SHMLIMIT_REASON_OK);
    CHECK(d.limit == 10);
    CHECK(d.remaining == (uint64_t)(9 - i));
    CHECK(d.retry_after_ns == 0);
    CHECK(d.reset_after_ns == (int64_t)(i + 1) * T);
  }
  CHECK_STATUS(shmlimit_acquire_at(l, api, "alice", 5, 1, t, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0);
  CHECK(d.remaining == 0);
  CHECK(d.retry_after_ns == T);
  CHECK(d.reset_after_ns == 10 * T);
  /* One emission interval later exactly one more fits. */
  CHECK_STATUS(shmlimit_acquire_at(l, api, "alice", 5, 1, t + T, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 0);

  /* peek charges nothing; cost 0 neither. */
  CHECK_STATUS(shmlimit_peek(l, api, "bob", 3, 4, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 6);
  CHECK_STATUS(shmlimit_acquire(l, api, "bob", 3, 0, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 10);
  CHECK_STATUS(shmlimit_acquire_by_name(l, "api", "bob", 3, 4, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 6);
  CHECK_STATUS(shmlimit_acquire(l, api, "bob", 3, 11, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_COST_TOO_HIGH);

  /* refund gives back what was taken, never beyond the capacity. */
  CHECK_STATUS(shmlimit_refund(l, api, "bob", 3, 3, &d), SHMLIMIT_OK);
  CHECK(d.remaining == 9);
  CHECK_STATUS(shmlimit_refund(l, api, "bob", 3, 100, NULL), SHMLIMIT_OK);
  CHECK_STATUS(shmlimit_peek(l, api, "bob", 3, 1, &d), SHMLIMIT_OK);
  CHECK(d.remaining == 9);

  /* Not errors, but refused decisions with a reason. */
  CHECK_STATUS(shmlimit_acquire(l, 63, "bob", 3, 1, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_UNKNOWN_POLICY);
  CHECK_STATUS(shmlimit_acquire_by_name(l, "nope", "bob", 3, 1, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_UNKNOWN_POLICY);
  memset(long_key, 'x', sizeof long_key);
  CHECK_STATUS(shmlimit_acquire(l, api, long_key, sizeof long_key, 1, &d), SHMLIMIT_OK);
  CHECK(d.reason == SHMLIMIT_REASON_KEY_TOO_LONG);
  CHECK(d.allowed == 0); /* api is on_full = deny */
  /* Keys are bytes: an embedded NUL makes another key. */
  CHECK_STATUS(shmlimit_acquire_at(l, api, "alice\0x", 7, 1, t, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 9);
  /* The empty key is a key; NULL is allowed with length 0 only. */
  CHECK_STATUS(shmlimit_acquire(l, api, NULL, 0, 1, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 9);
  CHECK_STATUS(shmlimit_acquire(l, api, NULL, 3, 1, &d), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_acquire(l, api, "k", 1, 1, NULL), SHMLIMIT_E_INVALID_ARGUMENT);

  /* acquire_many: all or nothing. */
  shmlimit_policy_spec_init(&spec);
  spec.name = "tight";
  spec.rate = "2/day";
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, &other), SHMLIMIT_OK);
  CHECK(other != api);
  memset(reqs, 0, sizeof reqs);
  reqs[0].policy = api;
  reqs[0].key = "carol";
  reqs[0].key_len = 5;
  reqs[0].cost = 1;
  reqs[1].policy = other;
  reqs[1].key = "carol";
  reqs[1].key_len = 5;
  reqs[1].cost = 1;
  for (i = 0; i < 2; ++i) {
    CHECK_STATUS(shmlimit_acquire_many(l, reqs, 2, &d, each), SHMLIMIT_OK);
    CHECK(d.allowed == 1);
    CHECK(d.limit == 2 && d.remaining == (uint64_t)(1 - i)); /* the tightest limit */
    CHECK(each[0].allowed == 1 && each[0].remaining == (uint64_t)(9 - i));
  }
  CHECK_STATUS(shmlimit_acquire_many(l, reqs, 2, &d, NULL), SHMLIMIT_OK);
  CHECK(d.allowed == 0);
  CHECK(d.retry_after_ns > 0);
  CHECK_STATUS(shmlimit_peek(l, api, "carol", 5, 0, &d), SHMLIMIT_OK);
  CHECK(d.remaining == 8); /* the refused call charged nothing */
  {
    /* Exact totals: the refused request is one denial of "tight" only. */
    uint64_t admitted = 0, denied = 0;
    CHECK_STATUS(shmlimit_policy_counters(l, other, &admitted, &denied), SHMLIMIT_OK);
    CHECK(admitted == 2 && denied == 1);
    CHECK_STATUS(shmlimit_policy_counters(l, api, &admitted, &denied), SHMLIMIT_OK);
    CHECK(admitted >= 2);
    CHECK_STATUS(shmlimit_policy_counters(l, 63, &admitted, &denied), SHMLIMIT_E_NOT_FOUND);
    CHECK_STATUS(shmlimit_policy_counters(l, api, NULL, &denied), SHMLIMIT_E_INVALID_ARGUMENT);
  }
  {
    /* A policy described as registered: algorithm, rate, resolved burst, name. */
    shmlimit_policy_info info;
    memset(&info, 0xAB, sizeof info);
    info.struct_size = sizeof info;
    CHECK_STATUS(shmlimit_policy_describe(l, other, &info), SHMLIMIT_OK);
    CHECK(info.algorithm == SHMLIMIT_ALGORITHM_GCRA);
    CHECK(info.on_full == SHMLIMIT_ON_FULL_ALLOW && info.wait == SHMLIMIT_LOG_WAIT_EXACT);
    CHECK(info.count == 2 && info.burst == 2 && info.period_ns == 86400LL * 1000000000LL);
    CHECK(strcmp(info.name, "tight") == 0);
    CHECK_STATUS(shmlimit_policy_describe(l, 63, &info), SHMLIMIT_E_NOT_FOUND);
    CHECK(shmlimit_algorithm_queues_turns(info.algorithm) == 1);
    CHECK(shmlimit_algorithm_queues_turns(SHMLIMIT_ALGORITHM_TOKEN_BUCKET) == 1);
    CHECK(shmlimit_algorithm_queues_turns(SHMLIMIT_ALGORITHM_LEAKY_BUCKET) == 1);
    CHECK(shmlimit_algorithm_queues_turns(SHMLIMIT_ALGORITHM_SLIDING_WINDOW) == 0);
    CHECK(shmlimit_algorithm_queues_turns(SHMLIMIT_ALGORITHM_CONCURRENCY) == 0);
    CHECK(shmlimit_algorithm_queues_turns(0) == 0 && shmlimit_algorithm_queues_turns(99) == 0);
    CHECK_STATUS(shmlimit_policy_describe(l, other, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
    info.struct_size = 4;
    CHECK_STATUS(shmlimit_policy_describe(l, other, &info), SHMLIMIT_E_INVALID_ARGUMENT);
    CHECK_ERROR_MENTIONS("struct_size");
  }
  CHECK_STATUS(shmlimit_acquire_many(l, reqs, 0, &d, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_acquire_many(l, reqs, 65, &d, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("count");
  CHECK_STATUS(shmlimit_acquire_many(l, reqs, 2, NULL, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  reqs[1].key = NULL;
  CHECK_STATUS(shmlimit_acquire_many(l, reqs, 2, &d, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("requests[1]");

  /* reset: one key, one policy, everything. */
  CHECK_STATUS(shmlimit_reset(l, api, "carol", 5, &n), SHMLIMIT_OK);
  CHECK(n == 1);
  CHECK_STATUS(shmlimit_peek(l, api, "carol", 5, 1, &d), SHMLIMIT_OK);
  CHECK(d.remaining == 9);
  CHECK_STATUS(shmlimit_reset(l, other, NULL, 0, &n), SHMLIMIT_OK);
  CHECK(n == 1);
  CHECK_STATUS(shmlimit_reset(l, SHMLIMIT_ALL_POLICIES, "carol", 5, &n),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_reset(l, 63, "carol", 5, &n), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_reset(l, SHMLIMIT_ALL_POLICIES, NULL, 0, &n), SHMLIMIT_OK);
  CHECK(n >= 3); /* alice, alice\0x, bob, "" */
  CHECK_STATUS(shmlimit_peek(l, api, "alice", 5, 1, &d), SHMLIMIT_OK);
  CHECK(d.remaining == 9);
}

static void test_leases(shmlimit_limiter* l) {
  shmlimit_policy_spec spec;
  uint32_t conc = 0;
  shmlimit_lease* a = NULL;
  shmlimit_lease* b = NULL;
  shmlimit_lease* c = (shmlimit_lease*)&spec; /* must be reset to NULL when refused */
  shmlimit_decision d;

  shmlimit_policy_spec_init(&spec);
  spec.name = "inflight";
  spec.algorithm = SHMLIMIT_ALGORITHM_CONCURRENCY;
  spec.rate = "2/s"; /* at most 2 in flight; the period is unused */
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, &conc), SHMLIMIT_OK);
  CHECK_STATUS(shmlimit_lease_acquire(l, conc, "dave", 4, 1, &a, &d), SHMLIMIT_OK);
  CHECK(a != NULL && d.allowed == 1 && d.limit == 2 && d.remaining == 1);
  CHECK_STATUS(shmlimit_lease_acquire(l, conc, "dave", 4, 1, &b, NULL), SHMLIMIT_OK);
  CHECK(b != NULL);
  CHECK_STATUS(shmlimit_lease_acquire(l, conc, "dave", 4, 1, &c, &d), SHMLIMIT_OK);
  CHECK(c == NULL && d.allowed == 0 && d.remaining == 0);
  /* acquire() on a concurrency policy is refused with a reason. */
  CHECK_STATUS(shmlimit_acquire(l, conc, "dave", 4, 1, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_NEEDS_LEASE);
  CHECK(strcmp(shmlimit_reason_string(SHMLIMIT_REASON_NEEDS_LEASE), "needs_lease") == 0);
  shmlimit_lease_release(a);
  CHECK_STATUS(shmlimit_lease_acquire(l, conc, "dave", 4, 1, &c, &d), SHMLIMIT_OK);
  CHECK(c != NULL && d.allowed == 1 && d.remaining == 0);
  shmlimit_lease_release(b);
  shmlimit_lease_release(c);
  shmlimit_lease_release(NULL);
  CHECK_STATUS(shmlimit_lease_acquire(l, conc, "dave", 4, 2, &a, &d), SHMLIMIT_OK);
  CHECK(a != NULL && d.remaining == 0); /* everything was given back */
  shmlimit_lease_release(a);
  CHECK_STATUS(shmlimit_lease_acquire(l, conc, "dave", 4, 1, NULL, &d),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_lease_acquire(NULL, conc, "dave", 4, 1, &a, &d),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK(a == NULL);
}

static void test_identity(void) {
  shmlimit_identity_options o;
  shmlimit_identity* id = NULL;
  shmlimit_request_info req;
  shmlimit_client who;
  char key[128], tiny[4];
  size_t len = 0;
  int access = -1;
  const char* xff = "198.51.100.1, 203.0.113.9";

  shmlimit_identity_options_init(&o);
  CHECK(o.num_proxies == -1 && o.ipv6_prefix == 64 && o.max_key_bytes == 88);
  o.num_proxies = 1;
  o.allow = "203.0.113.0/24";
  o.deny = "203.0.113.66, 2001:db8::/32";
  CHECK_STATUS(shmlimit_identity_new(&o, &id), SHMLIMIT_OK);
  if (id == NULL) return;

  memset(&req, 0, sizeof req);
  req.remote_addr = "127.0.0.1";
  req.remote_addr_len = 9;
  req.x_forwarded_for = xff;
  req.x_forwarded_for_len = strlen(xff);
  CHECK_STATUS(shmlimit_client_identity(id, &req, key, sizeof key, &who), SHMLIMIT_OK);
  CHECK(strcmp(key, "203.0.113.9") == 0 &&
        who.key_len == 11); /* DRF: NUM_PROXIES = 1, the last hop */
  CHECK(who.source == SHMLIMIT_SOURCE_X_FORWARDED_FOR && who.has_address == 1);
  CHECK(who.access == SHMLIMIT_ACCESS_ALLOW);
  CHECK_STATUS(shmlimit_client_identity(id, &req, tiny, sizeof tiny, &who),
               SHMLIMIT_E_BUFFER_TOO_SMALL);
  CHECK(who.key_len == 11 && tiny[0] == '\0');
  req.x_forwarded_for = NULL; /* absent: the peer */
  CHECK_STATUS(shmlimit_client_identity(id, &req, key, sizeof key, &who), SHMLIMIT_OK);
  CHECK(strcmp(key, "127.0.0.1") == 0 && who.source == SHMLIMIT_SOURCE_REMOTE_ADDR);
  CHECK(who.access == SHMLIMIT_ACCESS_LIMIT);
  CHECK_STATUS(shmlimit_client_identity(id, NULL, key, sizeof key, &who),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_client_identity(id, &req, NULL, 8, &who), SHMLIMIT_E_INVALID_ARGUMENT);

  CHECK_STATUS(shmlimit_classify(id, "203.0.113.66", 12, &access), SHMLIMIT_OK);
  CHECK(access == SHMLIMIT_ACCESS_DENY); /* deny wins over allow */
  CHECK_STATUS(shmlimit_classify(id, "[2001:db8::1]:443", 17, &access), SHMLIMIT_OK);
  CHECK(access == SHMLIMIT_ACCESS_DENY);
  CHECK_STATUS(shmlimit_classify(id, "10.0.0.1", 8, &access), SHMLIMIT_OK);
  CHECK(access == SHMLIMIT_ACCESS_LIMIT);
  CHECK_STATUS(shmlimit_classify(id, "not an address", 14, &access), SHMLIMIT_OK);
  CHECK(access == SHMLIMIT_ACCESS_LIMIT);
  shmlimit_identity_free(id);
  shmlimit_identity_free(NULL);

  o.deny = "10.0.0.1/8"; /* host bits set: a likely typo */
  id = (shmlimit_identity*)&o;
  CHECK_STATUS(shmlimit_identity_new(&o, &id), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK(id == NULL);
  CHECK_ERROR_MENTIONS("deny");
  CHECK_ERROR_MENTIONS("10.0.0.1/8");
  o.deny = NULL;
  o.num_proxies = -7;
  CHECK_STATUS(shmlimit_identity_new(&o, &id), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_identity_new(NULL, &id), SHMLIMIT_E_INVALID_ARGUMENT);

  CHECK_STATUS(shmlimit_throttle_key("anon", 4, "1.2.3.4", 7, 88, key, sizeof key, &len),
               SHMLIMIT_OK);
  CHECK(strcmp(key, "throttle_anon_1.2.3.4") == 0 && len == 21);
  CHECK_STATUS(shmlimit_throttle_key("anon", 4, "1.2.3.4", 7, 88, tiny, sizeof tiny, &len),
               SHMLIMIT_E_BUFFER_TOO_SMALL);
  CHECK(len == 21);

  /* fit_key: a short key is itself; a long one its '~' + hex digest stand-in. */
  {
    char long_key[300], fitted[128];
    memset(long_key, 'k', sizeof long_key);
    CHECK_STATUS(shmlimit_fit_key("user-1", 6, 88, fitted, sizeof fitted, &len), SHMLIMIT_OK);
    CHECK(strcmp(fitted, "user-1") == 0 && len == 6);
    CHECK_STATUS(shmlimit_fit_key(long_key, sizeof long_key, 88, fitted, sizeof fitted, &len),
                 SHMLIMIT_OK);
    CHECK(len == 33 && fitted[0] == '~');
    CHECK_STATUS(shmlimit_fit_key(long_key, sizeof long_key, 88, tiny, sizeof tiny, &len),
                 SHMLIMIT_E_BUFFER_TOO_SMALL);
    CHECK(len == 33);
    CHECK_STATUS(shmlimit_fit_key("x", 1, 0, fitted, sizeof fitted, &len),
                 SHMLIMIT_E_INVALID_ARGUMENT);
    CHECK_STATUS(shmlimit_fit_key(NULL, 3, 88, fitted, sizeof fitted, &len),
                 SHMLIMIT_E_INVALID_ARGUMENT);
  }
}

static void test_http(shmlimit_limiter* l, uint32_t api) {
  shmlimit_http_options h;
  shmlimit_verdict v;
  shmlimit_decision d;
  shmlimit_policy_report report;
  char block[512], tiny[8], detail[128];
  size_t len = 0, needed = 0;
  int64_t window = 0, len_window = 1;
  const int64_t T = 6 * kSecond;

  shmlimit_http_options_init(&h);
  CHECK(h.refuse_status == 429 && h.dry_run == 0 && h.headers == SHMLIMIT_HEADERS_ALL);
  CHECK_STATUS(shmlimit_policy_window(l, api, &window), SHMLIMIT_OK);
  CHECK(window == 10 * T); /* 10 refilled at one per 6 s */
  CHECK_STATUS(shmlimit_policy_window(l, 63, &len_window), SHMLIMIT_E_NOT_FOUND);
  CHECK(len_window == 0);

  /* Exhaust "erin" at an injected time, then read the refusal's headers. */
  do {
    CHECK_STATUS(shmlimit_acquire_at(l, api, "erin", 4, 1, kSecond, &d), SHMLIMIT_OK);
  } while (d.allowed && d.remaining < 10);
  CHECK(d.allowed == 0 && d.retry_after_ns == T);
  CHECK_STATUS(shmlimit_http_verdict(&d, &h, &v), SHMLIMIT_OK);
  CHECK(v.refuse == 1 && v.would_refuse == 1 && v.status == 429 && v.retry_after_s == 6);
  memset(&report, 0, sizeof report);
  report.name = "api";
  report.decision = d;
  report.window_ns = window;
  CHECK_STATUS(shmlimit_http_headers(&d, &report, 1, &h, block, sizeof block, &len), SHMLIMIT_OK);
  CHECK(len == strlen(block));
  CHECK(strcmp(block,
               "Retry-After: 6\r\n"
               "X-RateLimit-Limit: 10\r\n"
               "X-RateLimit-Remaining: 0\r\n"
               "X-RateLimit-Reset: 60\r\n"
               "RateLimit-Policy: \"api\";q=10;w=60\r\n"
               "RateLimit: \"api\";r=0;t=60\r\n") == 0);
  if (strstr(block, "w=60") == NULL) fprintf(stderr, "headers were:\n%s", block);
  CHECK_STATUS(shmlimit_http_headers(&d, &report, 1, &h, tiny, sizeof tiny, &needed),
               SHMLIMIT_E_BUFFER_TOO_SMALL);
  CHECK(needed == len && tiny[0] == '\0');
  CHECK_STATUS(shmlimit_http_headers(&d, NULL, 0, NULL, NULL, 0, &needed),
               SHMLIMIT_E_BUFFER_TOO_SMALL);
  CHECK(needed == strlen("Retry-After: 6\r\nX-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 0\r\n"
                         "X-RateLimit-Reset: 60\r\n"));

  /* Dry run: never refuse, no Retry-After. */
  h.dry_run = 1;
  h.headers = SHMLIMIT_HEADERS_RETRY_AFTER | SHMLIMIT_HEADERS_X_RATELIMIT;
  CHECK_STATUS(shmlimit_http_verdict(&d, &h, &v), SHMLIMIT_OK);
  CHECK(v.refuse == 0 && v.would_refuse == 1 && v.status == 0);
  CHECK_STATUS(shmlimit_http_headers(&d, &report, 1, &h, block, sizeof block, &len), SHMLIMIT_OK);
  CHECK(strstr(block, "Retry-After") == NULL && strstr(block, "RateLimit-Policy") == NULL);
  CHECK(strstr(block, "X-RateLimit-Remaining: 0\r\n") != NULL);
  h.headers = 64;
  CHECK_STATUS(shmlimit_http_verdict(&d, &h, &v), SHMLIMIT_E_INVALID_ARGUMENT);
  h.headers = SHMLIMIT_HEADERS_ALL;
  h.refuse_status = 200;
  CHECK_STATUS(shmlimit_http_headers(&d, &report, 1, &h, block, sizeof block, &len),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_http_verdict(NULL, &h, &v), SHMLIMIT_E_INVALID_ARGUMENT);

  CHECK_STATUS(shmlimit_throttled_detail(T, detail, sizeof detail, &len), SHMLIMIT_OK);
  CHECK(strcmp(detail, "Request was throttled. Expected available in 6 seconds.") == 0);
  CHECK_STATUS(shmlimit_throttled_detail(kSecond / 2, detail, sizeof detail, &len), SHMLIMIT_OK);
  CHECK(strcmp(detail, "Request was throttled. Expected available in 1 second.") == 0);
  CHECK_STATUS(shmlimit_throttled_detail(-1, detail, sizeof detail, &len), SHMLIMIT_OK);
  CHECK(strcmp(detail, "Request was throttled.") == 0);
  CHECK_STATUS(shmlimit_throttled_detail(-1, tiny, sizeof tiny, &len), SHMLIMIT_E_BUFFER_TOO_SMALL);
  CHECK(len == strlen("Request was throttled."));

  /* A cost that can never fit: refused, but with no Retry-After and no
     number of seconds (it was "Retry-After: 9223372037"). */
  CHECK_STATUS(shmlimit_acquire(l, api, "erin", 4, 11, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_COST_TOO_HIGH &&
        d.retry_after_ns == INT64_MAX);
  shmlimit_http_options_init(&h);
  CHECK_STATUS(shmlimit_http_verdict(&d, &h, &v), SHMLIMIT_OK);
  CHECK(v.refuse == 1 && v.retry_after_s == 0);
  report.decision = d;
  CHECK_STATUS(shmlimit_http_headers(&d, &report, 1, &h, block, sizeof block, &len), SHMLIMIT_OK);
  CHECK(strstr(block, "Retry-After") == NULL && strstr(block, "9223372037") == NULL);
  CHECK_STATUS(shmlimit_throttled_detail(d.retry_after_ns, detail, sizeof detail, &len),
               SHMLIMIT_OK);
  CHECK(strcmp(detail, "Request was throttled.") == 0);
}

static void test_read_only_handle(void) {
  shmlimit_options o;
  shmlimit_limiter* ro = NULL;
  shmlimit_decision d;
  uint64_t n = 7;
  shmlimit_options_init(&o);
  o.name = g_name;
  o.capacity = 0; /* open: any capacity */
  o.read_only = 1;
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, &ro), SHMLIMIT_OK);
  if (ro == NULL) return;
  CHECK_STATUS(shmlimit_reset(ro, SHMLIMIT_ALL_POLICIES, NULL, 0, &n), SHMLIMIT_E_READ_ONLY);
  CHECK(n == 0);
  CHECK_STATUS(shmlimit_acquire_by_name(ro, "api", "ro", 2, 1, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && d.remaining == 9); /* only peeks */
  CHECK_STATUS(shmlimit_acquire_by_name(ro, "api", "ro", 2, 1, &d), SHMLIMIT_OK);
  CHECK(d.remaining == 9);
  shmlimit_close(ro);
}

/* Workers forked after opening nothing: each opens the segment itself and
 * tries `attempts` times; the exit status carries what it admitted. */
static void test_forked_workers_share_one_limit(void) {
  enum { kWorkers = 6, kAttempts = 40, kBurst = 50 };
  shmlimit_options o;
  shmlimit_limiter* l = NULL;
  shmlimit_policy_spec spec;
  uint32_t shared = 0;
  pid_t pids[kWorkers];
  int w, total = 0, all_exited = 1;

  shmlimit_options_init(&o);
  o.name = g_name;
  o.capacity = 0; /* open: any capacity */
  CHECK_STATUS(shmlimit_open(&o, SHMLIMIT_OPEN, &l), SHMLIMIT_OK);
  if (l == NULL) return;
  shmlimit_policy_spec_init(&spec);
  spec.name = "shared";
  spec.rate = "50/day"; /* one more every 28.8 min: no refill during the test */
  spec.on_full = SHMLIMIT_ON_FULL_DENY;
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, &shared), SHMLIMIT_OK);
  shmlimit_close(l);

  fflush(NULL);
  for (w = 0; w < kWorkers; ++w) {
    pids[w] = fork();
    if (pids[w] == 0) {
      shmlimit_limiter* mine = NULL;
      shmlimit_decision d;
      int a, admitted = 0;
      if (shmlimit_open(&o, SHMLIMIT_OPEN, &mine) != SHMLIMIT_OK) _exit(255);
      for (a = 0; a < kAttempts; ++a) {
        if (shmlimit_acquire(mine, shared, "hot", 3, 1, &d) != SHMLIMIT_OK) _exit(254);
        if (d.reason != SHMLIMIT_REASON_OK) _exit(253);
        admitted += d.allowed;
      }
      shmlimit_close(mine);
      _exit(admitted);
    }
    CHECK(pids[w] > 0);
  }
  for (w = 0; w < kWorkers; ++w) {
    int status = 0;
    if (pids[w] <= 0) continue;
    if (waitpid(pids[w], &status, 0) != pids[w] || !WIFEXITED(status) ||
        WEXITSTATUS(status) > kAttempts) {
      all_exited = 0;
      fprintf(stderr, "worker %d: status 0x%x\n", w, status);
      continue;
    }
    total += WEXITSTATUS(status);
  }
  CHECK(all_exited);
  CHECK(total == kBurst); /* 240 attempts, exactly the burst admitted */
  if (total != kBurst) fprintf(stderr, "forked workers admitted %d, expected %d\n", total, kBurst);
}

static int write_file(const char* path, const char* text) {
  FILE* f = fopen(path, "w");
  if (f == NULL) return 0;
  fputs(text, f);
  return fclose(f) == 0;
}

static void test_config(const char* tmpdir) {
  char path[512], cfg_name[80], text[1024];
  shmlimit_limiter* l = NULL;
  uint32_t ids[4];
  size_t count = 9;
  shmlimit_decision d;
  int existed = 0;

  snprintf(cfg_name, sizeof cfg_name, "%s-config", g_name);
  snprintf(path, sizeof path, "%s/shmlimit-capi-%ld.toml", tmpdir, (long)getpid());
  snprintf(text, sizeof text,
           "[segment]\nname = \"%s\"\ncapacity = 256\n\n"
           "[policies.anon]\nrate = \"3/day\"\n\n"
           "[policies.multi]\nrate = \"10/hour;100/day\"\n",
           cfg_name);
  CHECK(write_file(path, text));
  CHECK_STATUS(shmlimit_open_config(path, 0, &l), SHMLIMIT_OK);
  if (l != NULL) {
    CHECK_STATUS(shmlimit_acquire_by_name(l, "anon", "1.2.3.4", 7, 3, &d), SHMLIMIT_OK);
    CHECK(d.allowed == 1 && d.limit == 3 && d.remaining == 0);
    CHECK_STATUS(shmlimit_policy_group(l, "multi", ids, 4, &count), SHMLIMIT_OK);
    CHECK(count == 2);
    CHECK_STATUS(shmlimit_policy_group(l, "multi", ids, 1, &count), SHMLIMIT_E_BUFFER_TOO_SMALL);
    CHECK(count == 2);
    CHECK_STATUS(shmlimit_policy_group(l, "absent", ids, 4, &count), SHMLIMIT_OK);
    CHECK(count == 0);
    CHECK_STATUS(shmlimit_policy_group(l, "multi", NULL, 4, &count), SHMLIMIT_E_INVALID_ARGUMENT);
    shmlimit_close(l);
  }
  /* The same file again: the segment and its buckets are reused. */
  l = NULL;
  CHECK_STATUS(shmlimit_open_config(path, 0, &l), SHMLIMIT_OK);
  if (l != NULL) {
    CHECK_STATUS(shmlimit_acquire_by_name(l, "anon", "1.2.3.4", 7, 1, &d), SHMLIMIT_OK);
    CHECK(d.allowed == 0);
    shmlimit_close(l);
  }

  /* A bad file: the message names the file, line and column. */
  CHECK(write_file(path, "[segment]\nname = \"/x\"\n\n[policies.a]\nrate = \"3/fortnight\"\n"));
  l = NULL;
  CHECK_STATUS(shmlimit_open_config(path, 0, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK(l == NULL);
  CHECK_ERROR_MENTIONS(path);
  CHECK_ERROR_MENTIONS(":5:");
  CHECK_ERROR_MENTIONS("fortnight");
  CHECK(write_file(path, "this is not toml ["));
  CHECK_STATUS(shmlimit_open_config(path, 0, &l), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK(unlink(path) == 0);
  CHECK_STATUS(shmlimit_open_config(path, 0, &l), SHMLIMIT_E_NOT_FOUND);
  CHECK_ERROR_MENTIONS(path);

  /* From text. */
  CHECK_STATUS(shmlimit_open_config_text("[segment]\n", 10, "inline.toml", 0, &l),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_ERROR_MENTIONS("inline.toml");
  snprintf(text, sizeof text,
           "[segment]\nname = \"%s\"\ncapacity = 256\n[policies.anon]\nrate = \"5/day\"\n",
           cfg_name);
  CHECK_STATUS(shmlimit_open_config_text(text, strlen(text), NULL, 0, &l),
               SHMLIMIT_E_POLICY_CONFLICT);
  CHECK_ERROR_MENTIONS("anon");
  CHECK_STATUS(shmlimit_open_config_text(text, strlen(text), NULL, 1, &l), SHMLIMIT_OK);
  shmlimit_close(l);

  CHECK_STATUS(shmlimit_remove(cfg_name, &existed), SHMLIMIT_OK);
  CHECK(existed == 1);
}

static void test_reservations(shmlimit_limiter* l) {
  shmlimit_policy_spec spec;
  shmlimit_decision d;
  shmlimit_reservation* r = NULL;
  shmlimit_reservation* last = NULL;
  uint32_t vendor = 0;
  int64_t delay = -1;

  shmlimit_policy_spec_init(&spec);
  spec.name = "vendor";
  spec.rate = "1/h"; /* T = 1 h: turns far apart, no sleeping below */
  spec.burst = 1;
  CHECK_STATUS(shmlimit_add_policy(l, &spec, 0, &vendor), SHMLIMIT_OK);

  /* The burst: now, no handle asked for. */
  CHECK_STATUS(shmlimit_reserve(l, vendor, "acct", 4, 1, 0, &d, &delay, NULL), SHMLIMIT_OK);
  CHECK(d.allowed == 1 && delay == 0);
  /* Next turn 1 h away: refused within 1 s, nothing charged. */
  CHECK_STATUS(shmlimit_reserve(l, vendor, "acct", 4, 1, kSecond, &d, &delay, &r), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && r == NULL && delay > 3500 * kSecond && d.retry_after_ns == delay);
  /* Accepted within 2 h; a second turn queues behind it. */
  CHECK_STATUS(shmlimit_reserve(l, vendor, "acct", 4, 1, SHMLIMIT_WAIT_FOREVER, &d, &delay, &r),
               SHMLIMIT_OK);
  CHECK(d.allowed == 1 && r != NULL && delay > 3500 * kSecond);
  CHECK_STATUS(shmlimit_reserve(l, vendor, "acct", 4, 1, SHMLIMIT_WAIT_FOREVER, &d, &delay, &last),
               SHMLIMIT_OK);
  CHECK(d.allowed == 1 && last != NULL && delay > 7100 * kSecond);
  /* r has a turn behind it: nothing back; last gives its turn back once. */
  CHECK(shmlimit_reservation_cancel(r) == 0);
  CHECK(shmlimit_reservation_cancel(last) == 1);
  CHECK(shmlimit_reservation_cancel(last) == 0);
  CHECK(shmlimit_reservation_cancel(NULL) == 0);
  shmlimit_reservation_free(r);
  shmlimit_reservation_free(last);
  shmlimit_reservation_free(NULL);
  /* wait: refused at once when the turn is past max_wait. */
  CHECK_STATUS(shmlimit_wait(l, vendor, "acct", 4, 1, kSecond, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.retry_after_ns > 3500 * kSecond);
  CHECK_STATUS(shmlimit_wait(l, vendor, "fresh", 5, 1, 0, &d), SHMLIMIT_OK);
  CHECK(d.allowed == 1);
  /* Bad arguments. */
  CHECK_STATUS(shmlimit_reserve(NULL, vendor, "k", 1, 1, 0, &d, NULL, NULL),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_reserve(l, vendor, "k", 1, 1, 0, NULL, NULL, NULL),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_reserve(l, vendor, NULL, 1, 1, 0, &d, NULL, NULL),
               SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_wait(l, vendor, "k", 1, 1, 0, NULL), SHMLIMIT_E_INVALID_ARGUMENT);
  CHECK_STATUS(shmlimit_reserve(l, 9999, "k", 1, 1, 0, &d, NULL, NULL), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_UNKNOWN_POLICY);
  CHECK_STATUS(shmlimit_reserve(l, vendor, "k", 1, UINT64_MAX, -5, &d, &delay, NULL), SHMLIMIT_OK);
  CHECK(d.allowed == 0 && d.reason == SHMLIMIT_REASON_COST_TOO_HIGH && delay == INT64_MAX);
}

int main(int argc, char** argv) {
  const char* tmpdir = argc > 1 ? argv[1] : "/tmp";
  shmlimit_limiter* l;
  uint32_t api = 0;
  int existed = 7;

  snprintf(g_name, sizeof g_name, "/shmlimit-capi-%ld", (long)getpid());
  CHECK_STATUS(shmlimit_remove(g_name, &existed), SHMLIMIT_OK);
  CHECK(existed == 0);

  test_version_and_names();
  test_null_pointers_are_errors();
  test_missing_segment();
  l = create_segment(&api);
  if (l != NULL) {
    test_decisions(l, api);
    test_leases(l);
    test_reservations(l);
    test_http(l, api);
    test_read_only_handle();
    test_forked_workers_share_one_limit();
    shmlimit_close(l);
  }
  test_identity();
  test_config(tmpdir);

  CHECK_STATUS(shmlimit_remove(g_name, &existed), SHMLIMIT_OK);
  CHECK(existed == 1);

  if (g_failures != 0) {
    fprintf(stderr, "capi_test: %d of %d checks failed\n", g_failures, g_checks);
    return 1;
  }
  printf("capi_test: all %d checks passed (C API version %d, library %s)\n", g_checks,
         shmlimit_version(), shmlimit_version_string());
  return 0;
}
