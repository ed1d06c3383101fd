/* ngx_http_shmlimit_module: shmlimit's rate limits in nginx's preaccess
 * phase, in place of limit_req (doc/nginx.md).
 *
 *   shmlimit_segment /NAME [capacity=N] [mode=0660] [log_entries=N] [allow_other_users];
 *   shmlimit_segment config=PATH.toml;                                       (http)
 *   shmlimit_policy NAME RATE [burst=N] [algorithm=A] [on_full=open|closed];  (http)
 *   shmlimit POLICY key=$var [cost=N|$var] [max_wait=TIME] [dry_run];
 *                                                           (http, server, location)
 *   shmlimit_status CODE;  shmlimit_headers on|off|retry-after;
 *   shmlimit_dry_run on|off;  shmlimit_log_level info|notice|warn|error;
 *   $shmlimit_status  $shmlimit_remaining  $shmlimit_retry_after  $shmlimit_delay
 *
 * Process model and invariants
 *   (1) The segment is opened (or created) and every shmlimit_policy is
 *       registered while the master parses the configuration, so `nginx -t`
 *       refuses what the library refuses, with file:line. Workers inherit the
 *       mapping through fork() and never open anything themselves: a worker
 *       running as www-data needs no right on /dev/shm.
 *   (2) A reload parses into a new cycle, which opens the same named segment
 *       again: buckets live in the segment, not in the cycle, so they are
 *       kept. The old cycle's handle is closed by its pool's cleanup; a
 *       refused reload closes only the handle it opened.
 *   (3) The hot path is the library's lock-free acquire_many: a worker
 *       SIGKILLed at any instruction holds no lock; its replacement decides
 *       on the same buckets.
 *   (4) Every limit of a location is decided all or nothing: enforced limits
 *       in one acquire_many (none charged when one refuses), then, if the
 *       request is admitted, the dry-run limits in another (charged as usual,
 *       as limit_req_dry_run does, never refusing).
 *   (5) A request is decided once: the outcome is kept in the request's
 *       context and found again after an internal redirect (the context is
 *       also reachable from a cleanup of the main request's pool).
 *   (6) A line with max_wait is the only `shmlimit` line of its level (and
 *       so of every location that inherits it): its request takes a turn
 *       with shmlimit_reserve instead of acquire_many. A turn in the future
 *       parks the request on a timer of its connection's write event, as
 *       limit_req's delay does; the worker never sleeps. The reservation
 *       is owned by a cleanup of the request's pool, which gives the turn
 *       back (shmlimit_reservation_cancel) if the request ends before its
 *       turn (the client closed) and frees the handle in every path. The
 *       segment outlives it: it is closed with the cycle, after the
 *       worker's last request.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <shmlimit/shmlimit.h>

#define NGX_HTTP_SHMLIMIT_PASSED 1
#define NGX_HTTP_SHMLIMIT_REJECTED 2
#define NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN 3
#define NGX_HTTP_SHMLIMIT_DELAYED 4
#define NGX_HTTP_SHMLIMIT_DELAYED_DRY_RUN 5

#define NGX_HTTP_SHMLIMIT_HEADERS_OFF 0
#define NGX_HTTP_SHMLIMIT_HEADERS_RETRY_AFTER 1
#define NGX_HTTP_SHMLIMIT_HEADERS_ON 2

/* acquire_many decides at most this many limits at once (shmlimit.h). */
#define NGX_HTTP_SHMLIMIT_MAX_LIMITS 64

/* The longest max_wait, in ms: a parked request holds its connection, and
 * a worker that is shut down gracefully (reload) waits for its timer. */
#define NGX_HTTP_SHMLIMIT_MAX_WAIT_MS (60 * 60 * 1000)

/* Seconds between two log lines about degraded decisions (table full,
 * contended or corrupt slot: the policy's on_full decided), per worker. */
#define NGX_HTTP_SHMLIMIT_DEGRADED_LOG_INTERVAL 60

typedef struct {
  shmlimit_limiter* limiter; /* NULL until shmlimit_segment */
  ngx_str_t segment;         /* as written: "/NAME" or "config=PATH" */
  size_t max_key;            /* shmlimit_max_key_bytes() */
} ngx_http_shmlimit_main_conf_t;

/* One policy (one member of a policy group) charged by a `shmlimit` line. */
typedef struct {
  uint32_t policy;
  int64_t window_ns; /* RateLimit-Policy's w */
  char* name;        /* NUL-terminated, for RateLimit fields and logs */
  ngx_http_complex_value_t key;
  ngx_http_complex_value_t* cost; /* NULL: fixed_cost */
  uint64_t fixed_cost;
  ngx_msec_t max_wait; /* ms; 0: refuse at once (invariant 6) */
  ngx_flag_t dry_run;
} ngx_http_shmlimit_limit_t;

typedef struct {
  ngx_array_t* limits; /* of ngx_http_shmlimit_limit_t; NGX_CONF_UNSET_PTR: inherit */
  ngx_uint_t status_code;
  ngx_uint_t headers;
  ngx_flag_t dry_run;
  ngx_uint_t log_level;
  ngx_uint_t delay_log_level; /* one level below log_level, as limit_req's */
} ngx_http_shmlimit_loc_conf_t;

/* The outcome of a request's decision (invariant 5). */
typedef struct {
  ngx_uint_t status; /* NGX_HTTP_SHMLIMIT_* */
  ngx_uint_t headers;
  ngx_int_t refuse_status;
  shmlimit_decision combined;
  shmlimit_verdict verdict;
  shmlimit_policy_report* reports;
  size_t nreports;
  int64_t delay_ns;   /* a max_wait line: the wait until the turn; 0 otherwise */
  int64_t turn_at_ns; /* DELAYED: the turn, on the segment's clock (shmlimit_now) */
  /* A parked request's turn (invariant 6); NULL once the turn has come. */
  shmlimit_reservation* reservation;
} ngx_http_shmlimit_ctx_t;

static ngx_int_t ngx_http_shmlimit_handler(ngx_http_request_t* r);
static ngx_int_t ngx_http_shmlimit_header_filter(ngx_http_request_t* r);
static void* ngx_http_shmlimit_create_main_conf(ngx_conf_t* cf);
static void* ngx_http_shmlimit_create_loc_conf(ngx_conf_t* cf);
static char* ngx_http_shmlimit_merge_loc_conf(ngx_conf_t* cf, void* parent, void* child);
static char* ngx_http_shmlimit_segment(ngx_conf_t* cf, ngx_command_t* cmd, void* conf);
static char* ngx_http_shmlimit_policy(ngx_conf_t* cf, ngx_command_t* cmd, void* conf);
static char* ngx_http_shmlimit(ngx_conf_t* cf, ngx_command_t* cmd, void* conf);
static char* ngx_http_shmlimit_headers(ngx_conf_t* cf, ngx_command_t* cmd, void* conf);
static ngx_int_t ngx_http_shmlimit_add_variables(ngx_conf_t* cf);
static ngx_int_t ngx_http_shmlimit_init(ngx_conf_t* cf);

static ngx_http_output_header_filter_pt ngx_http_next_header_filter;

static ngx_conf_num_bounds_t ngx_http_shmlimit_status_bounds = {ngx_conf_check_num_bounds, 400,
                                                                599};

static ngx_conf_enum_t ngx_http_shmlimit_log_levels[] = {{ngx_string("info"), NGX_LOG_INFO},
                                                         {ngx_string("notice"), NGX_LOG_NOTICE},
                                                         {ngx_string("warn"), NGX_LOG_WARN},
                                                         {ngx_string("error"), NGX_LOG_ERR},
                                                         {ngx_null_string, 0}};

static ngx_command_t ngx_http_shmlimit_commands[] = {
    {ngx_string("shmlimit_segment"), NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE, ngx_http_shmlimit_segment,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("shmlimit_policy"), NGX_HTTP_MAIN_CONF | NGX_CONF_2MORE, ngx_http_shmlimit_policy,
     NGX_HTTP_MAIN_CONF_OFFSET, 0, NULL},
    {ngx_string("shmlimit"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_2MORE, ngx_http_shmlimit,
     NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("shmlimit_status"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_num_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_shmlimit_loc_conf_t, status_code), &ngx_http_shmlimit_status_bounds},
    {ngx_string("shmlimit_headers"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_http_shmlimit_headers, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("shmlimit_dry_run"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_shmlimit_loc_conf_t, dry_run), NULL},
    {ngx_string("shmlimit_log_level"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_enum_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_shmlimit_loc_conf_t, log_level), &ngx_http_shmlimit_log_levels},
    ngx_null_command};

static ngx_http_module_t ngx_http_shmlimit_module_ctx = {
    ngx_http_shmlimit_add_variables,    /* preconfiguration */
    ngx_http_shmlimit_init,             /* postconfiguration */
    ngx_http_shmlimit_create_main_conf, /* create main configuration */
    NULL,                               /* init main configuration */
    NULL,                               /* create server configuration */
    NULL,                               /* merge server configuration */
    ngx_http_shmlimit_create_loc_conf,  /* create location configuration */
    ngx_http_shmlimit_merge_loc_conf    /* merge location configuration */
};

ngx_module_t ngx_http_shmlimit_module = {NGX_MODULE_V1,
                                         &ngx_http_shmlimit_module_ctx, /* module context */
                                         ngx_http_shmlimit_commands,    /* module directives */
                                         NGX_HTTP_MODULE,               /* module type */
                                         NULL,                          /* init master */
                                         NULL,                          /* init module */
                                         NULL,                          /* init process */
                                         NULL,                          /* init thread */
                                         NULL,                          /* exit thread */
                                         NULL,                          /* exit process */
                                         NULL,                          /* exit master */
                                         NGX_MODULE_V1_PADDING};

static ngx_str_t ngx_http_shmlimit_status_names[] = {
    ngx_string("PASSED"), ngx_string("REJECTED"), ngx_string("REJECTED_DRY_RUN"),
    ngx_string("DELAYED"), ngx_string("DELAYED_DRY_RUN")};

/* ------------------------------------------------------------------------ */
/* Request context                                                          */
/* ------------------------------------------------------------------------ */

/* The marker cleanup's handler: never frees anything; its data is the ctx. */
static void ngx_http_shmlimit_ctx_marker(void* data) { (void)data; }

static ngx_http_shmlimit_ctx_t* ngx_http_shmlimit_get_ctx(ngx_http_request_t* r) {
  ngx_pool_cleanup_t* cln;
  ngx_http_shmlimit_ctx_t* ctx;

  ctx = ngx_http_get_module_ctx(r->main, ngx_http_shmlimit_module);
  if (ctx != NULL) return ctx;
  /* An internal redirect zeroes module contexts; the pool keeps the marker. */
  for (cln = r->main->pool->cleanup; cln; cln = cln->next) {
    if (cln->handler == ngx_http_shmlimit_ctx_marker) {
      ctx = cln->data;
      ngx_http_set_ctx(r->main, ctx, ngx_http_shmlimit_module);
      return ctx;
    }
  }
  return NULL;
}

static ngx_http_shmlimit_ctx_t* ngx_http_shmlimit_new_ctx(ngx_http_request_t* r) {
  ngx_pool_cleanup_t* cln;
  ngx_http_shmlimit_ctx_t* ctx;

  ctx = ngx_pcalloc(r->main->pool, sizeof(ngx_http_shmlimit_ctx_t));
  cln = ngx_pool_cleanup_add(r->main->pool, 0);
  if (ctx == NULL || cln == NULL) return NULL;
  cln->handler = ngx_http_shmlimit_ctx_marker;
  cln->data = ctx;
  ngx_http_set_ctx(r->main, ctx, ngx_http_shmlimit_module);
  return ctx;
}

/* ------------------------------------------------------------------------ */
/* The preaccess handler                                                    */
/* ------------------------------------------------------------------------ */

static void ngx_http_shmlimit_log_degraded(ngx_http_request_t* r, const char* policy,
                                           const shmlimit_decision* d) {
  static time_t last; /* per worker process: each logs at most once per interval */
  time_t now = ngx_time();

  if (now - last < NGX_HTTP_SHMLIMIT_DEGRADED_LOG_INTERVAL) return;
  last = now;
  ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                "shmlimit: policy \"%s\" decided by its on_full (%s): the request was %s "
                "(logged at most once per %d s per worker)",
                policy, shmlimit_reason_string(d->reason), d->allowed ? "admitted" : "refused",
                NGX_HTTP_SHMLIMIT_DEGRADED_LOG_INTERVAL);
}

/* Evaluates a limit's key and cost into *req. NGX_DECLINED: empty key, not limited. */
static ngx_int_t ngx_http_shmlimit_request(ngx_http_request_t* r,
                                           ngx_http_shmlimit_main_conf_t* mcf,
                                           ngx_http_shmlimit_limit_t* limit,
                                           shmlimit_request* req) {
  ngx_str_t key, cost;
  size_t len;
  u_char* fitted;
  ngx_int_t i;
  uint64_t n;

  if (ngx_http_complex_value(r, &limit->key, &key) != NGX_OK) return NGX_ERROR;
  if (key.len == 0) return NGX_DECLINED;

  if (key.len > mcf->max_key) {
    /* The library's stand-in for an over-long key: still limited on its own. */
    fitted = ngx_pnalloc(r->pool, mcf->max_key + 1);
    if (fitted == NULL) return NGX_ERROR;
    if (shmlimit_fit_key((const char*)key.data, key.len, mcf->max_key, (char*)fitted,
                         mcf->max_key + 1, &len) != SHMLIMIT_OK) {
      ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "shmlimit: %s", shmlimit_last_error());
      return NGX_ERROR;
    }
    key.data = fitted;
    key.len = len;
  }

  n = limit->fixed_cost;
  if (limit->cost != NULL) {
    if (ngx_http_complex_value(r, limit->cost, &cost) != NGX_OK) return NGX_ERROR;
    /* A cost is 0..2^63-1 in decimal digits; anything else is an error,
     * never a silently different charge. */
    n = 0;
    for (i = 0; i < (ngx_int_t)cost.len; i++) {
      if (cost.data[i] < '0' || cost.data[i] > '9' || n > (UINT64_MAX / 2 - 9) / 10) break;
      n = n * 10 + (uint64_t)(cost.data[i] - '0');
    }
    if (cost.len == 0 || i != (ngx_int_t)cost.len) {
      ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                    "shmlimit: policy \"%s\": cost \"%V\" is not a whole number of 0 or more",
                    limit->name, &cost);
      return NGX_ERROR;
    }
  }

  req->policy = limit->policy;
  req->reserved = 0;
  req->key = (const char*)key.data;
  req->key_len = key.len;
  req->cost = n;
  return NGX_OK;
}

/* ------------------------------------------------------------------------ */
/* Waiting for a turn (invariant 6)                                         */
/* ------------------------------------------------------------------------ */

/* ns to the timer's ms, rounded up: a request never acts before its turn. */
static ngx_msec_t ngx_http_shmlimit_ms(int64_t ns) {
  return ns <= 0 ? 0 : (ngx_msec_t)((ns + 999999) / 1000000);
}

/* A cleanup of the parked request's pool: the request ended before its
 * turn (the client closed, an error): give the turn back if it still can
 * be (doc/outbound.md, "Cancel"), and free the handle. */
static void ngx_http_shmlimit_turn_cleanup(void* data) {
  ngx_http_shmlimit_ctx_t* ctx = data;
  int given_back;

  if (ctx->reservation == NULL) return; /* the turn came: spent */
  given_back = shmlimit_reservation_cancel(ctx->reservation);
  shmlimit_reservation_free(ctx->reservation);
  ctx->reservation = NULL;
  ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                 "shmlimit: a delayed request ended before its turn (turn given back: %d)",
                 given_back);
}

/* Takes the turn of a max_wait line's request into ctx: PASSED (now),
 * DELAYED (ctx->delay_ns away, within max_wait; ctx->reservation holds it),
 * REJECTED (beyond max_wait: nothing charged, retry_after says when the
 * turn would be now), or their dry-run forms (charged, never delayed). A
 * subrequest is never parked: its turn must be now. */
static ngx_int_t ngx_http_shmlimit_take_turn(ngx_http_request_t* r,
                                             ngx_http_shmlimit_main_conf_t* mcf,
                                             ngx_http_shmlimit_limit_t* limit,
                                             shmlimit_request* req, ngx_flag_t dry,
                                             ngx_http_shmlimit_ctx_t* ctx) {
  ngx_pool_cleanup_t* cln;
  shmlimit_reservation* turn = NULL;
  int64_t max_wait_ns, delay_ns = 0;
  ngx_flag_t park;

  park = !dry && r == r->main;
  max_wait_ns = r == r->main ? (int64_t)limit->max_wait * 1000000 : 0;
  if (park) {
    /* Added before the turn is taken, so that no failure can strand it. */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) return NGX_HTTP_INTERNAL_SERVER_ERROR;
    cln->handler = ngx_http_shmlimit_turn_cleanup;
    cln->data = ctx;
  }
  if (shmlimit_reserve(mcf->limiter, req->policy, req->key, req->key_len, req->cost, max_wait_ns,
                       &ctx->combined, &delay_ns, park ? &turn : NULL) != SHMLIMIT_OK) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "shmlimit: %s", shmlimit_last_error());
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
  }
  ctx->nreports = 1;
  if (!ctx->combined.allowed) {
    ctx->status = dry ? NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN : NGX_HTTP_SHMLIMIT_REJECTED;
  } else if (delay_ns <= 0) {
    ctx->status = NGX_HTTP_SHMLIMIT_PASSED;
  } else {
    ctx->delay_ns = delay_ns;
    ctx->status = park ? NGX_HTTP_SHMLIMIT_DELAYED : NGX_HTTP_SHMLIMIT_DELAYED_DRY_RUN;
  }
  if (ctx->status == NGX_HTTP_SHMLIMIT_DELAYED) {
    /* The turn's time on the segment's clock: the timer is re-armed if it
     * fires before it (nginx's cached time may lag). */
    ctx->turn_at_ns = shmlimit_now(mcf->limiter) + delay_ns;
    ctx->reservation = turn;
  } else {
    shmlimit_reservation_free(turn); /* granted now or refused: nothing to give back */
  }
  return NGX_OK;
}

/* The write event handler of a parked request (limit_req's delay). */
static void ngx_http_shmlimit_delay(ngx_http_request_t* r) {
  ngx_http_shmlimit_main_conf_t* mcf;
  ngx_http_shmlimit_ctx_t* ctx;
  ngx_event_t* wev;
  int64_t now;

  wev = r->connection->write;
  if (wev->delayed) {
    /* Woken by the socket, not by the timer: keep waiting. */
    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
      ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    }
    return;
  }

  ctx = ngx_http_shmlimit_get_ctx(r);
  mcf = ngx_http_get_module_main_conf(r, ngx_http_shmlimit_module);
  if (ctx != NULL && ctx->reservation != NULL) {
    now = shmlimit_now(mcf->limiter);
    if (now < ctx->turn_at_ns) {
      wev->delayed = 1;
      ngx_add_timer(wev, ngx_http_shmlimit_ms(ctx->turn_at_ns - now));
      return;
    }
    shmlimit_reservation_free(ctx->reservation); /* the turn has come: spent */
    ctx->reservation = NULL;
  }

  if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
    ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
    return;
  }
  r->read_event_handler = ngx_http_block_reading;
  r->write_event_handler = ngx_http_core_run_phases;
  ngx_http_core_run_phases(r);
}

/* Parks the request until its turn, as limit_req does: a timer on the
 * connection's write event; a client that closes meanwhile is noticed by
 * ngx_http_test_reading, which ends the request (and so gives the turn
 * back through the cleanup). */
static ngx_int_t ngx_http_shmlimit_park(ngx_http_request_t* r, ngx_http_shmlimit_ctx_t* ctx) {
  if (r->connection->read->ready) {
    ngx_post_event(r->connection->read, &ngx_posted_events);
  } else if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
  }
  r->read_event_handler = ngx_http_test_reading;
  r->write_event_handler = ngx_http_shmlimit_delay;
  r->connection->write->delayed = 1;
  ngx_add_timer(r->connection->write, ngx_http_shmlimit_ms(ctx->delay_ns));
  return NGX_AGAIN; /* the phase handler runs again on the turn: decided once */
}

static ngx_int_t ngx_http_shmlimit_handler(ngx_http_request_t* r) {
  ngx_http_shmlimit_main_conf_t* mcf;
  ngx_http_shmlimit_loc_conf_t* lcf;
  ngx_http_shmlimit_limit_t* limits;
  ngx_http_shmlimit_ctx_t* ctx;
  shmlimit_request reqs[NGX_HTTP_SHMLIMIT_MAX_LIMITS];
  shmlimit_decision each[NGX_HTTP_SHMLIMIT_MAX_LIMITS], dry_combined;
  ngx_http_shmlimit_limit_t* which[NGX_HTTP_SHMLIMIT_MAX_LIMITS];
  shmlimit_http_options options;
  ngx_uint_t i, n, nenforced, ndry, pass;
  ngx_int_t rc;
  ngx_flag_t dry;
  size_t k;

  lcf = ngx_http_get_module_loc_conf(r, ngx_http_shmlimit_module);
  if (lcf->limits == NULL || lcf->limits->nelts == 0) return NGX_DECLINED;

  ctx = ngx_http_shmlimit_get_ctx(r);
  if (ctx != NULL && ctx->status != 0) return NGX_DECLINED; /* decided once (invariant 5) */

  mcf = ngx_http_get_module_main_conf(r, ngx_http_shmlimit_module);
  limits = lcf->limits->elts;

  /* Enforced limits first, dry-run ones after them (invariant 4). */
  n = 0;
  nenforced = 0;
  for (pass = 0; pass < 2; pass++) {
    for (i = 0; i < lcf->limits->nelts; i++) {
      dry = lcf->dry_run == 1 || limits[i].dry_run;
      if (dry != (ngx_flag_t)pass) continue;
      rc = ngx_http_shmlimit_request(r, mcf, &limits[i], &reqs[n]);
      if (rc == NGX_ERROR) return NGX_HTTP_INTERNAL_SERVER_ERROR;
      if (rc == NGX_DECLINED) continue;
      which[n++] = &limits[i];
    }
    if (pass == 0) nenforced = n;
  }
  ndry = n - nenforced;
  if (n == 0) return NGX_DECLINED; /* every key empty: not limited */

  if (ctx == NULL) {
    ctx = ngx_http_shmlimit_new_ctx(r);
    if (ctx == NULL) return NGX_HTTP_INTERNAL_SERVER_ERROR;
  }
  ctx->reports = ngx_palloc(r->main->pool, n * sizeof(shmlimit_policy_report));
  if (ctx->reports == NULL) return NGX_HTTP_INTERNAL_SERVER_ERROR;

  ngx_memzero(&ctx->combined, sizeof(shmlimit_decision));
  ctx->combined.allowed = 1;
  if (n == 1 && which[0]->max_wait > 0) {
    /* The location's only line, with max_wait (invariant 6). */
    rc = ngx_http_shmlimit_take_turn(r, mcf, which[0], &reqs[0], nenforced == 0, ctx);
    if (rc != NGX_OK) return rc;
    each[0] = ctx->combined;
  } else if (nenforced > 0) {
    if (shmlimit_acquire_many(mcf->limiter, reqs, nenforced, &ctx->combined, each) != SHMLIMIT_OK) {
      ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "shmlimit: %s", shmlimit_last_error());
      return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
  }
  if (ctx->status == 0) { /* not decided by take_turn */
    ctx->nreports = nenforced;
    ctx->status = ctx->combined.allowed ? NGX_HTTP_SHMLIMIT_PASSED : NGX_HTTP_SHMLIMIT_REJECTED;
  }
  if (ctx->status == NGX_HTTP_SHMLIMIT_PASSED && ctx->nreports < n) {
    if (shmlimit_acquire_many(mcf->limiter, reqs + nenforced, ndry, &dry_combined,
                              each + nenforced) != SHMLIMIT_OK) {
      ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "shmlimit: %s", shmlimit_last_error());
      return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->nreports = n;
    if (nenforced == 0 || dry_combined.remaining < ctx->combined.remaining) {
      ctx->combined.limit = dry_combined.limit;
      ctx->combined.remaining = dry_combined.remaining;
    }
    if (dry_combined.reset_after_ns > ctx->combined.reset_after_ns) {
      ctx->combined.reset_after_ns = dry_combined.reset_after_ns;
    }
    if (!dry_combined.allowed) {
      ctx->status = NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN;
      ctx->combined.allowed = 0;
      ctx->combined.retry_after_ns = dry_combined.retry_after_ns;
    }
  }

  for (k = 0; k < ctx->nreports; k++) {
    ctx->reports[k].name = which[k]->name;
    ctx->reports[k].decision = each[k];
    ctx->reports[k].window_ns = which[k]->window_ns;
    if (each[k].reason != SHMLIMIT_REASON_OK && each[k].reason != SHMLIMIT_REASON_COST_TOO_HIGH) {
      ngx_http_shmlimit_log_degraded(r, which[k]->name, &each[k]);
    }
  }

  shmlimit_http_options_init(&options);
  options.refuse_status = (int32_t)lcf->status_code;
  options.dry_run = ctx->status == NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN;
  if (shmlimit_http_verdict(&ctx->combined, &options, &ctx->verdict) != SHMLIMIT_OK) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "shmlimit: %s", shmlimit_last_error());
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
  }
  ctx->headers = lcf->headers;
  ctx->refuse_status = (ngx_int_t)lcf->status_code;

  if (ctx->status == NGX_HTTP_SHMLIMIT_PASSED) return NGX_DECLINED;

  if (ctx->status == NGX_HTTP_SHMLIMIT_DELAYED ||
      ctx->status == NGX_HTTP_SHMLIMIT_DELAYED_DRY_RUN) {
    ngx_log_error(lcf->delay_log_level, r->connection->log, 0,
                  "delaying request%s by %M ms by shmlimit policy \"%s\"",
                  ctx->status == NGX_HTTP_SHMLIMIT_DELAYED_DRY_RUN ? ", dry run" : "",
                  ngx_http_shmlimit_ms(ctx->delay_ns), ctx->reports[0].name);
    if (ctx->status == NGX_HTTP_SHMLIMIT_DELAYED_DRY_RUN) return NGX_DECLINED;
    return ngx_http_shmlimit_park(r, ctx);
  }

  for (k = 0; k < ctx->nreports; k++) {
    if (!each[k].allowed) break;
  }
  ngx_log_error(lcf->log_level, r->connection->log, 0,
                "limiting requests%s by shmlimit policy \"%s\", retry after %uL s",
                ctx->status == NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN ? ", dry run" : "",
                k < ctx->nreports ? ctx->reports[k].name : "?",
                (uint64_t)((ctx->combined.retry_after_ns + 999999999) / 1000000000));

  if (ctx->status == NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN) return NGX_DECLINED;
  return (ngx_int_t)lcf->status_code;
}

/* ------------------------------------------------------------------------ */
/* Response headers                                                         */
/* ------------------------------------------------------------------------ */

static ngx_int_t ngx_http_shmlimit_header_filter(ngx_http_request_t* r) {
  ngx_http_shmlimit_ctx_t* ctx;
  shmlimit_http_options options;
  ngx_table_elt_t* h;
  char buf[1024], *block, *line, *end, *colon;
  size_t len;
  shmlimit_status st;

  if (r != r->main) return ngx_http_next_header_filter(r);
  ctx = ngx_http_shmlimit_get_ctx(r);
  if (ctx == NULL || ctx->status == 0 || ctx->headers == NGX_HTTP_SHMLIMIT_HEADERS_OFF) {
    return ngx_http_next_header_filter(r);
  }

  shmlimit_http_options_init(&options);
  options.refuse_status = (int32_t)ctx->refuse_status;
  options.dry_run = ctx->status == NGX_HTTP_SHMLIMIT_REJECTED_DRY_RUN;
  options.headers = ctx->headers == NGX_HTTP_SHMLIMIT_HEADERS_ON ? SHMLIMIT_HEADERS_ALL
                                                                 : SHMLIMIT_HEADERS_RETRY_AFTER;
  block = buf;
  st = shmlimit_http_headers(&ctx->combined, ctx->reports, ctx->nreports, &options, buf, sizeof buf,
                             &len);
  if (st == SHMLIMIT_E_BUFFER_TOO_SMALL) {
    block = ngx_pnalloc(r->pool, len + 1);
    if (block == NULL) return NGX_ERROR;
    st = shmlimit_http_headers(&ctx->combined, ctx->reports, ctx->nreports, &options, block,
                               len + 1, &len);
  }
  if (st != SHMLIMIT_OK) {
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0, "shmlimit: %s", shmlimit_last_error());
    return ngx_http_next_header_filter(r);
  }

  /* "Name: value\r\n" lines; the values are copied into the request's pool. */
  for (line = block; line < block + len; line = end + 2) {
    end = ngx_strstr(line, "\r\n");
    colon = ngx_strchr(line, ':');
    if (end == NULL || colon == NULL || colon > end) break;
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) return NGX_ERROR;
    h->hash = 1;
    h->key.len = (size_t)(colon - line);
    h->key.data = ngx_pnalloc(r->pool, (size_t)(end - line));
    if (h->key.data == NULL) return NGX_ERROR;
    ngx_memcpy(h->key.data, line, (size_t)(end - line));
    h->value.data = h->key.data + h->key.len + 2;
    h->value.len = (size_t)(end - colon) - 2;
  }
  return ngx_http_next_header_filter(r);
}

/* ------------------------------------------------------------------------ */
/* Variables                                                                */
/* ------------------------------------------------------------------------ */

static ngx_int_t ngx_http_shmlimit_variable(ngx_http_request_t* r, ngx_http_variable_value_t* v,
                                            uintptr_t data) {
  ngx_http_shmlimit_ctx_t* ctx;
  u_char* p;
  uint64_t value;

  ctx = ngx_http_shmlimit_get_ctx(r);
  if (ctx == NULL || ctx->status == 0) {
    v->not_found = 1;
    return NGX_OK;
  }
  v->valid = 1;
  v->no_cacheable = 0;
  v->not_found = 0;
  if (data == 0) {
    v->len = ngx_http_shmlimit_status_names[ctx->status - 1].len;
    v->data = ngx_http_shmlimit_status_names[ctx->status - 1].data;
    return NGX_OK;
  }
  value = data == 1   ? ctx->combined.remaining
          : data == 2 ? ctx->verdict.retry_after_s
                      : ngx_http_shmlimit_ms(ctx->delay_ns);
  p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
  if (p == NULL) return NGX_ERROR;
  v->len = (unsigned)(ngx_sprintf(p, "%uL", value) - p);
  v->data = p;
  return NGX_OK;
}

static ngx_int_t ngx_http_shmlimit_add_variables(ngx_conf_t* cf) {
  static ngx_str_t names[] = {ngx_string("shmlimit_status"), ngx_string("shmlimit_remaining"),
                              ngx_string("shmlimit_retry_after"), ngx_string("shmlimit_delay")};
  ngx_http_variable_t* var;
  ngx_uint_t i;

  for (i = 0; i < sizeof names / sizeof names[0]; i++) {
    var = ngx_http_add_variable(cf, &names[i], NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) return NGX_ERROR;
    var->get_handler = ngx_http_shmlimit_variable;
    var->data = i;
  }
  return NGX_OK;
}

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

static void* ngx_http_shmlimit_create_main_conf(ngx_conf_t* cf) {
  return ngx_pcalloc(cf->pool, sizeof(ngx_http_shmlimit_main_conf_t));
}

static void* ngx_http_shmlimit_create_loc_conf(ngx_conf_t* cf) {
  ngx_http_shmlimit_loc_conf_t* conf;

  conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_shmlimit_loc_conf_t));
  if (conf == NULL) return NULL;
  conf->limits = NGX_CONF_UNSET_PTR;
  conf->status_code = NGX_CONF_UNSET_UINT;
  conf->headers = NGX_CONF_UNSET_UINT;
  conf->dry_run = NGX_CONF_UNSET;
  conf->log_level = NGX_CONF_UNSET_UINT;
  return conf;
}

static char* ngx_http_shmlimit_merge_loc_conf(ngx_conf_t* cf, void* parent, void* child) {
  ngx_http_shmlimit_loc_conf_t* prev = parent;
  ngx_http_shmlimit_loc_conf_t* conf = child;

  /* As limit_req: a level with its own `shmlimit` lines replaces the
   * inherited ones entirely. */
  ngx_conf_merge_ptr_value(conf->limits, prev->limits, NULL);
  ngx_conf_merge_uint_value(conf->status_code, prev->status_code, 429);
  ngx_conf_merge_uint_value(conf->headers, prev->headers, NGX_HTTP_SHMLIMIT_HEADERS_ON);
  ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
  ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
  conf->delay_log_level = conf->log_level == NGX_LOG_INFO ? NGX_LOG_INFO : conf->log_level + 1;
  return NGX_CONF_OK;
}

static void ngx_http_shmlimit_close(void* data) {
  ngx_http_shmlimit_main_conf_t* mcf = data;

  shmlimit_close(mcf->limiter);
  mcf->limiter = NULL;
}

/* "name=value": the value into *value if the argument starts with name=. */
static ngx_flag_t ngx_http_shmlimit_param(ngx_str_t* arg, const char* name, ngx_str_t* value) {
  size_t n = ngx_strlen(name);

  if (arg->len <= n || ngx_strncmp(arg->data, name, n) != 0 || arg->data[n] != '=') return 0;
  value->data = arg->data + n + 1;
  value->len = arg->len - n - 1;
  return 1;
}

/* A NUL-terminated copy (directive arguments are NUL-terminated already,
 * but the values after "name=" share their terminator, which suffices). */
static char* ngx_http_shmlimit_cstr(ngx_conf_t* cf, ngx_str_t* s) {
  char* p = ngx_pnalloc(cf->pool, s->len + 1);

  if (p == NULL) return NULL;
  ngx_memcpy(p, s->data, s->len);
  p[s->len] = '\0';
  return p;
}

static ngx_int_t ngx_http_shmlimit_number(ngx_str_t* s, uint64_t max, uint64_t* out) {
  uint64_t n = 0;
  size_t i;

  if (s->len == 0 || s->len > 19) return NGX_ERROR;
  for (i = 0; i < s->len; i++) {
    if (s->data[i] < '0' || s->data[i] > '9') return NGX_ERROR;
    n = n * 10 + (uint64_t)(s->data[i] - '0');
  }
  if (n > max) return NGX_ERROR;
  *out = n;
  return NGX_OK;
}

static char* ngx_http_shmlimit_segment(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) {
  ngx_http_shmlimit_main_conf_t* mcf = conf;
  ngx_str_t *value, v, name = ngx_null_string, config = ngx_null_string;
  shmlimit_options options, defaults;
  shmlimit_status st;
  ngx_pool_cleanup_t* cln;
  ngx_uint_t i;
  uint64_t n;

  if (mcf->limiter != NULL) return "is duplicate";
  value = cf->args->elts;
  shmlimit_options_init(&options);
  options.capacity = 0; /* open a segment of any size unless capacity= says */
  for (i = 1; i < cf->args->nelts; i++) {
    if (i == 1 && value[i].len > 0 && value[i].data[0] == '/') {
      name = value[i];
    } else if (ngx_http_shmlimit_param(&value[i], "config", &v)) {
      config = v;
    } else if (ngx_http_shmlimit_param(&value[i], "capacity", &v)) {
      if (ngx_http_shmlimit_number(&v, 1u << 30, &n) != NGX_OK || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid capacity \"%V\" (1..1073741824 slots)",
                           &v);
        return NGX_CONF_ERROR;
      }
      options.capacity = (uint32_t)n;
    } else if (ngx_http_shmlimit_param(&value[i], "mode", &v)) {
      n = 0;
      for (size_t j = 0; j < v.len; j++) {
        if (v.data[j] < '0' || v.data[j] > '7') {
          n = 010000;
          break;
        }
        n = n * 8 + (uint64_t)(v.data[j] - '0');
      }
      if (v.len == 0 || v.len > 4 || n > 0777) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid mode \"%V\" (octal, such as 0660)", &v);
        return NGX_CONF_ERROR;
      }
      options.mode = (uint32_t)n;
    } else if (ngx_http_shmlimit_param(&value[i], "log_entries", &v)) {
      if (ngx_http_shmlimit_number(&v, 4096, &n) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid log_entries \"%V\" (0..4096, for sliding_log policies)", &v);
        return NGX_CONF_ERROR;
      }
      options.log_entries = (uint32_t)n;
    } else if (value[i].len == 17 && ngx_strcmp(value[i].data, "allow_other_users") == 0) {
      options.allow_other_users = 1;
    } else {
      ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", &value[i]);
      return NGX_CONF_ERROR;
    }
  }
  if ((name.len == 0) == (config.len == 0)) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"shmlimit_segment\" takes a segment name (\"/NAME\") or "
                       "\"config=PATH\" (whose [segment] names it), not %s",
                       name.len == 0 ? "neither" : "both");
    return NGX_CONF_ERROR;
  }

  if (config.len > 0) {
    if (options.capacity != 0 || options.mode != 0600 || options.log_entries != 0 ||
        options.allow_other_users) {
      ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                         "with \"config=\", capacity, mode and the rest come from the file");
      return NGX_CONF_ERROR;
    }
    if (ngx_conf_full_name(cf->cycle, &config, 1) != NGX_OK) return NGX_CONF_ERROR;
    st = shmlimit_open_config(ngx_http_shmlimit_cstr(cf, &config), 1, &mcf->limiter);
  } else {
    options.name = ngx_http_shmlimit_cstr(cf, &name);
    if (options.name == NULL) return NGX_CONF_ERROR;
    if (options.capacity != 0) {
      st = shmlimit_open(&options, SHMLIMIT_OPEN_OR_CREATE, &mcf->limiter);
    } else {
      /* No capacity=: an existing segment of any size, or a new one of the
       * library's default size. */
      st = shmlimit_open(&options, SHMLIMIT_OPEN, &mcf->limiter);
      if (st == SHMLIMIT_E_NOT_FOUND) {
        shmlimit_options_init(&defaults);
        options.capacity = defaults.capacity;
        st = shmlimit_open(&options, SHMLIMIT_OPEN_OR_CREATE, &mcf->limiter);
      }
    }
  }
  if (st != SHMLIMIT_OK) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "cannot open shmlimit segment \"%V\": %s",
                       config.len > 0 ? &config : &name, shmlimit_last_error());
    return NGX_CONF_ERROR;
  }
  mcf->segment = config.len > 0 ? config : name;
  mcf->max_key = shmlimit_max_key_bytes(mcf->limiter);

  /* Closed with the cycle that opened it (invariant 2). */
  cln = ngx_pool_cleanup_add(cf->pool, 0);
  if (cln == NULL) {
    shmlimit_close(mcf->limiter);
    mcf->limiter = NULL;
    return NGX_CONF_ERROR;
  }
  cln->handler = ngx_http_shmlimit_close;
  cln->data = mcf;
  return NGX_CONF_OK;
}

static const struct {
  const char* name;
  uint32_t value;
} ngx_http_shmlimit_algorithms[] = {
    {"gcra", SHMLIMIT_ALGORITHM_GCRA},
    {"token_bucket", SHMLIMIT_ALGORITHM_TOKEN_BUCKET},
    {"fixed_window", SHMLIMIT_ALGORITHM_FIXED_WINDOW},
    {"sliding_window", SHMLIMIT_ALGORITHM_SLIDING_WINDOW},
    {"quiet_period", SHMLIMIT_ALGORITHM_QUIET_PERIOD},
    {"leaky_bucket", SHMLIMIT_ALGORITHM_LEAKY_BUCKET},
    {"sliding_log", SHMLIMIT_ALGORITHM_SLIDING_LOG},
};

static char* ngx_http_shmlimit_policy(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) {
  ngx_http_shmlimit_main_conf_t* mcf = conf;
  ngx_str_t *value, v, rate;
  shmlimit_policy_spec spec;
  shmlimit_status st;
  ngx_uint_t i, j;
  uint64_t n;
  uint32_t id;
  u_char *p, *dst;

  value = cf->args->elts;
  if (mcf->limiter == NULL) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"shmlimit_policy\" needs a \"shmlimit_segment\" before it");
    return NGX_CONF_ERROR;
  }
  shmlimit_policy_spec_init(&spec);
  spec.name = ngx_http_shmlimit_cstr(cf, &value[1]);

  /* nginx's "10r/s", "30r/m" are the library's "10/s", "30/m": drop the r
   * after the leading digits; every other form goes to the library as is. */
  rate = value[2];
  for (p = rate.data; p < rate.data + rate.len && *p >= '0' && *p <= '9'; p++) {
  }
  if (p > rate.data && p + 1 < rate.data + rate.len && p[0] == 'r' && p[1] == '/') {
    dst = ngx_pnalloc(cf->pool, rate.len);
    if (dst == NULL) return NGX_CONF_ERROR;
    ngx_memcpy(dst, rate.data, (size_t)(p - rate.data));
    ngx_memcpy(dst + (p - rate.data), p + 1, rate.len - (size_t)(p - rate.data));
    rate.data = dst;
    rate.len--;
  }
  spec.rate = ngx_http_shmlimit_cstr(cf, &rate);
  if (spec.name == NULL || spec.rate == NULL) return NGX_CONF_ERROR;

  for (i = 3; i < cf->args->nelts; i++) {
    if (ngx_http_shmlimit_param(&value[i], "burst", &v)) {
      if (ngx_http_shmlimit_number(&v, UINT64_MAX / 2, &n) != NGX_OK || n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid burst \"%V\" (a whole number, 1 or more)",
                           &v);
        return NGX_CONF_ERROR;
      }
      spec.burst = n;
    } else if (ngx_http_shmlimit_param(&value[i], "algorithm", &v)) {
      for (j = 0; j < sizeof ngx_http_shmlimit_algorithms / sizeof ngx_http_shmlimit_algorithms[0];
           j++) {
        if (ngx_strlen(ngx_http_shmlimit_algorithms[j].name) == v.len &&
            ngx_strncmp(ngx_http_shmlimit_algorithms[j].name, v.data, v.len) == 0) {
          break;
        }
      }
      if (j == sizeof ngx_http_shmlimit_algorithms / sizeof ngx_http_shmlimit_algorithms[0]) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown algorithm \"%V\" (gcra, token_bucket, fixed_window, "
                           "sliding_window, quiet_period, leaky_bucket or sliding_log; "
                           "concurrency is not a request rate)",
                           &v);
        return NGX_CONF_ERROR;
      }
      spec.algorithm = ngx_http_shmlimit_algorithms[j].value;
    } else if (ngx_http_shmlimit_param(&value[i], "on_full", &v)) {
      if (v.len == 4 && ngx_strncmp(v.data, "open", 4) == 0) {
        spec.on_full = SHMLIMIT_ON_FULL_ALLOW;
      } else if (v.len == 6 && ngx_strncmp(v.data, "closed", 6) == 0) {
        spec.on_full = SHMLIMIT_ON_FULL_DENY;
      } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid on_full \"%V\" (open or closed)", &v);
        return NGX_CONF_ERROR;
      }
    } else {
      ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", &value[i]);
      return NGX_CONF_ERROR;
    }
  }

  /* replace: nginx.conf is authoritative for the policies it declares; a
   * changed rate takes effect on reload and the buckets are kept. `nginx -t`
   * checks the spec but never changes a live policy: there a conflict only
   * says the reload will replace it. */
  st = shmlimit_add_policy(mcf->limiter, &spec, !ngx_test_config, &id);
  if (st == SHMLIMIT_E_POLICY_CONFLICT && ngx_test_config) st = SHMLIMIT_OK;
  if (st != SHMLIMIT_OK) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid shmlimit policy \"%V\": %s", &value[1],
                       shmlimit_last_error());
    return NGX_CONF_ERROR;
  }
  return NGX_CONF_OK;
}

static char* ngx_http_shmlimit(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) {
  ngx_http_shmlimit_loc_conf_t* lcf = conf;
  ngx_http_shmlimit_main_conf_t* mcf;
  ngx_http_shmlimit_limit_t *limit, proto;
  ngx_http_compile_complex_value_t ccv;
  ngx_str_t *value, v, key = ngx_null_string, cost = ngx_null_string;
  shmlimit_policy_info info;
  uint32_t ids[NGX_HTTP_SHMLIMIT_MAX_LIMITS];
  size_t count, k;
  ngx_uint_t i, total;
  ngx_int_t ms;
  ngx_flag_t waits;
  char* name;

  value = cf->args->elts;
  mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_shmlimit_module);
  if (mcf->limiter == NULL) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"shmlimit\" needs a \"shmlimit_segment\" before it");
    return NGX_CONF_ERROR;
  }
  ngx_memzero(&proto, sizeof proto);
  proto.fixed_cost = 1;
  for (i = 2; i < cf->args->nelts; i++) {
    if (ngx_http_shmlimit_param(&value[i], "key", &v)) {
      key = v;
    } else if (ngx_http_shmlimit_param(&value[i], "cost", &v)) {
      cost = v;
    } else if (ngx_http_shmlimit_param(&value[i], "max_wait", &v)) {
      ms = ngx_parse_time(&v, 0);
      if (ms == NGX_ERROR || ms == 0 || ms > NGX_HTTP_SHMLIMIT_MAX_WAIT_MS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid max_wait \"%V\" (a time such as 500ms or 2s, more than 0 "
                           "and at most 1h)",
                           &v);
        return NGX_CONF_ERROR;
      }
      proto.max_wait = (ngx_msec_t)ms;
    } else if (value[i].len == 7 && ngx_strcmp(value[i].data, "dry_run") == 0) {
      proto.dry_run = 1;
    } else {
      ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", &value[i]);
      return NGX_CONF_ERROR;
    }
  }
  if (key.len == 0) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"shmlimit %V\" needs \"key=\" (such as key=$binary_remote_addr)",
                       &value[1]);
    return NGX_CONF_ERROR;
  }
  ngx_memzero(&ccv, sizeof ccv);
  ccv.cf = cf;
  ccv.value = &key;
  ccv.complex_value = &proto.key;
  if (ngx_http_compile_complex_value(&ccv) != NGX_OK) return NGX_CONF_ERROR;

  if (cost.len > 0 && ngx_strlchr(cost.data, cost.data + cost.len, '$') != NULL) {
    proto.cost = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (proto.cost == NULL) return NGX_CONF_ERROR;
    ngx_memzero(&ccv, sizeof ccv);
    ccv.cf = cf;
    ccv.value = &cost;
    ccv.complex_value = proto.cost;
    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) return NGX_CONF_ERROR;
  } else if (cost.data != NULL &&
             ngx_http_shmlimit_number(&cost, UINT64_MAX / 2, &proto.fixed_cost) != NGX_OK) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid cost \"%V\" (a whole number of 0 or more, or a variable)", &cost);
    return NGX_CONF_ERROR;
  }

  /* The policy, or every member of a policy group ("NAME", "NAME.2", ...). */
  name = ngx_http_shmlimit_cstr(cf, &value[1]);
  if (name == NULL) return NGX_CONF_ERROR;
  if (shmlimit_policy_group(mcf->limiter, name, ids, NGX_HTTP_SHMLIMIT_MAX_LIMITS, &count) !=
          SHMLIMIT_OK ||
      count == 0) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown shmlimit policy \"%V\" in segment \"%V\" (declare it with "
                       "\"shmlimit_policy\" before this line, or in the segment's config file)",
                       &value[1], &mcf->segment);
    return NGX_CONF_ERROR;
  }

  if (lcf->limits == NGX_CONF_UNSET_PTR) {
    lcf->limits = ngx_array_create(cf->pool, 2, sizeof(ngx_http_shmlimit_limit_t));
    if (lcf->limits == NULL) return NGX_CONF_ERROR;
  }

  /* A max_wait line takes one turn of one policy (invariant 6): it must be
   * the only line of its level, which is exactly the set its locations
   * get (a level with lines of its own replaces the inherited ones). */
  limit = lcf->limits->elts;
  waits = proto.max_wait > 0;
  for (i = 0; i < lcf->limits->nelts; i++) {
    if (limit[i].max_wait > 0) waits = 1;
  }
  if (waits && lcf->limits->nelts > 0) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "a \"shmlimit\" line with \"max_wait\" must be the only \"shmlimit\" "
                       "line of its block (it takes one turn of one policy)");
    return NGX_CONF_ERROR;
  }
  if (proto.max_wait > 0 && count != 1) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"max_wait\" needs exactly one policy, and \"%V\" is a group of %uz",
                       &value[1], count);
    return NGX_CONF_ERROR;
  }
  if (proto.max_wait > 0) {
    /* The policy as the segment holds it, whether declared here or read
     * from the segment's config file. */
    info.struct_size = sizeof info;
    if (shmlimit_policy_describe(mcf->limiter, ids[0], &info) != SHMLIMIT_OK) {
      ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "shmlimit policy \"%V\": %s", &value[1],
                         shmlimit_last_error());
      return NGX_CONF_ERROR;
    }
    if (!shmlimit_algorithm_queues_turns(info.algorithm)) {
      ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                         "\"max_wait\" needs a policy of algorithm gcra, leaky_bucket or "
                         "token_bucket (the ones that queue a turn), and \"%V\" is not one",
                         &value[1]);
      return NGX_CONF_ERROR;
    }
  }

  total = lcf->limits->nelts + count;
  if (total > NGX_HTTP_SHMLIMIT_MAX_LIMITS) {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "more than %d shmlimit policies at one level",
                       NGX_HTTP_SHMLIMIT_MAX_LIMITS);
    return NGX_CONF_ERROR;
  }
  for (k = 0; k < count; k++) {
    limit = lcf->limits->elts;
    for (i = 0; i < lcf->limits->nelts; i++) {
      if (limit[i].policy == ids[k] && limit[i].dry_run == proto.dry_run &&
          limit[i].key.value.len == proto.key.value.len &&
          ngx_strncmp(limit[i].key.value.data, proto.key.value.data, proto.key.value.len) == 0) {
        return "is duplicate";
      }
    }
    limit = ngx_array_push(lcf->limits);
    if (limit == NULL) return NGX_CONF_ERROR;
    *limit = proto;
    limit->policy = ids[k];
    if (k == 0) {
      limit->name = name;
    } else {
      limit->name = ngx_pnalloc(cf->pool, value[1].len + 24);
      if (limit->name == NULL) return NGX_CONF_ERROR;
      ngx_sprintf((u_char*)limit->name, "%s.%uz%Z", name, k + 1);
    }
    if (shmlimit_policy_window(mcf->limiter, ids[k], &limit->window_ns) != SHMLIMIT_OK) {
      limit->window_ns = 0;
    }
  }
  return NGX_CONF_OK;
}

static char* ngx_http_shmlimit_headers(ngx_conf_t* cf, ngx_command_t* cmd, void* conf) {
  ngx_http_shmlimit_loc_conf_t* lcf = conf;
  ngx_str_t* value = cf->args->elts;

  if (lcf->headers != NGX_CONF_UNSET_UINT) return "is duplicate";
  if (ngx_strcmp(value[1].data, "on") == 0) {
    lcf->headers = NGX_HTTP_SHMLIMIT_HEADERS_ON;
  } else if (ngx_strcmp(value[1].data, "off") == 0) {
    lcf->headers = NGX_HTTP_SHMLIMIT_HEADERS_OFF;
  } else if (ngx_strcmp(value[1].data, "retry-after") == 0) {
    lcf->headers = NGX_HTTP_SHMLIMIT_HEADERS_RETRY_AFTER;
  } else {
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid value \"%V\" (on, off or retry-after)",
                       &value[1]);
    return NGX_CONF_ERROR;
  }
  return NGX_CONF_OK;
}

static ngx_int_t ngx_http_shmlimit_init(ngx_conf_t* cf) {
  ngx_http_handler_pt* h;
  ngx_http_core_main_conf_t* cmcf;

  cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
  h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
  if (h == NULL) return NGX_ERROR;
  *h = ngx_http_shmlimit_handler;

  ngx_http_next_header_filter = ngx_http_top_header_filter;
  ngx_http_top_header_filter = ngx_http_shmlimit_header_filter;
  return NGX_OK;
}
