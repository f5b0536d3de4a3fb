/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The server and its workers: one struct tc_server built by main() and
 * handed down (STYLE R10), N workers each with its own thread, event_base,
 * HTTP server, stack ctx, key-lock home and origin connections.
 */
#ifndef TC_SRC_WORKER_H
#define TC_SRC_WORKER_H

#include "src/auth.h"
#include "src/conf.h"
#include "src/hist.h"
#include "src/http.h"
#include "src/keylock.h"
#include "src/origin.h"
#include "src/readthrough.h"
#include "src/stack.h"

#include <pthread.h>
#include <stdatomic.h>

/*
 * What each worker counts of the answers it gives, read by the metrics
 * registry (src/metrics.c) for /stats and /metrics.
 *
 * Request durations by route, method and status: a histogram per
 * combination, so that counting one answer is a bucket search and two
 * relaxed load/store pairs on this worker's own memory (no lock, no
 * allocation, no shared cache line). The slots are fixed: the routes of
 * src/routes.c then "none" (no route matched), the bits of enum
 * tc_http_method, and the statuses the API answers (every status of
 * TC_API_ERRORS in src/api.h, and 200); any other status counts as "other".
 */
#define TC_ROUTE_SLOTS  14 /* src/routes.c checks that its table fits */
#define TC_METHOD_SLOTS 9  /* GET HEAD PUT DELETE POST OTHER OPTIONS PURGE PATCH */
/* The statuses counted apart in the request histograms, in groups. */
#define TC_WORKER_CODES(X)    TC_WORKER_OK_CODES(X) TC_WORKER_ERR_CODES(X) TC_WORKER_AUTH_CODES(X)
#define TC_WORKER_OK_CODES(X) X(200) X(304)
#define TC_WORKER_ERR_CODES(X)                                                                     \
    X(400) X(404) X(405) X(409) X(412) X(413) X(414) X(415) X(429) X(502) X(503) X(504)
/* Issue 14: OPTIONS (204), access control (401, 403, 421). */
#define TC_WORKER_AUTH_CODES(X) X(204) X(401) X(403) X(421)

enum tc_worker_code {
    TC_CODE_OTHER = 0,
#define TC_X(c) TC_CODE_##c,
    TC_WORKER_CODES(TC_X)
#undef TC_X
        TC_CODE_SLOTS
};

/** What a cache read answered (X-Cache), counted by tc_worker_count_read(). */
enum tc_worker_read {
    TC_READ_HIT = 0, /* X-Cache: HIT, from the tier given */
    TC_READ_STALE,   /* X-Cache: STALE, from the tier given */
    TC_READ_MISS,    /* X-Cache: MISS (no tier) */
};

struct tc_api_cache_pool;

struct tc_worker {
    struct tc_server *srv;
    int id;
    pthread_t thread;
    int started; /* thread was created */
    int fd;      /* listening socket, handed to the HTTP server */
    struct event_base *base;
    struct tc_http_server *http;
    int tls_fd;                   /* listen-tls socket, handed to https; -1: none */
    struct tc_http_server *https; /* the TLS listener's server, NULL without listen-tls */
    struct tc_stack_ctx *sc;
    struct tc_keylock_home *home;         /* this worker's part of the lock table */
    struct tc_origin_ctx *origin;         /* its connections to the origin, or NULL */
    struct tc_rt_env rt;                  /* the above, for read-through */
    struct tc_api_cache_pool *cache_pool; /* /cache requests ended, kept for reuse */
    struct tc_tier_ctx *count_ctx;        /* counters and limits (issue 16): the count tier's */
    struct tc_tier_ctx *count_own_ctx;    /* ... when it is the server's own (count_own) */
    struct event *stop_ev, *drain_ev;
    uint64_t stop_deadline_ns;
    _Atomic int ready; /* 1 once serving, -1 if setup failed */
    /* Single writer: this worker; any thread reads them with relaxed loads. */
    struct tc_hist requests[TC_ROUTE_SLOTS][TC_METHOD_SLOTS][TC_CODE_SLOTS];
    _Atomic uint64_t read_hits[TC_STACK_MAX_TIERS];
    _Atomic uint64_t read_stale[TC_STACK_MAX_TIERS];
    _Atomic uint64_t read_misses;
    /* Access control (issue 14): this worker's view of the tokens, and the
     * requests it refused, by reason. */
    struct tc_auth_view *auth;
    _Atomic uint64_t auth_failures[TC_AUTH_FAIL_N];
};

struct tc_server {
    /* The running configuration: replaced whole by a reload (src/reload.h),
     * hence atomic; read it once per request. */
    const struct tc_conf *_Atomic conf;
    struct tc_stack *stack;
    struct tc_keylock *keylock;
    struct tc_origin *origin;    /* --origin, or NULL */
    struct tc_auth *auth;        /* tokens, hosts, origins (src/auth.h) */
    struct tc_rt_options rt_opt; /* read-through's settings, from conf */
    /* The read-through settings of the last reload (NULL before one): each
     * worker copies the pointer into its w->rt.opt on its own loop. */
    const struct tc_rt_options *_Atomic rt_live;
    int lock_tier; /* index of the tier holding the locks, -1: worker-pool scope */
    /* Counters and limits (issue 16): the widest tier with TC_TIER_CAP_COUNT
     * (count_tier, an index into the stack), else a private mem:// tier of
     * this process (count_own). count_scope: "cluster", "host", "process". */
    int count_tier;
    struct tc_tier *count_own;
    const char *count_scope;
    struct tc_worker *workers;
    size_t nworkers;
    uint64_t start_ms;
    unsigned port;
    struct tc_tls *tls; /* listen-tls: the TLS context (src/tls.h), NULL without it */
    unsigned tls_port;
    _Atomic uint64_t conn_count;
    _Atomic uint64_t body_pending; /* bytes held by request bodies being received */
    _Atomic uint64_t sweeps[TC_STACK_MAX_TIERS];
    _Atomic uint64_t swept[TC_STACK_MAX_TIERS];
    /* Workers tear down only after every worker has stopped serving, so that
     * a /stats request never reads another worker's freed state. */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond;
    size_t done;
};

/** Starts the workers' threads; returns once each is serving or failed. */
enum tc_status tc_worker_start_all(struct tc_server *srv);

/** Asks every worker to stop (thread-safe, async-signal-unsafe). */
void tc_worker_stop_all(struct tc_server *srv);

/** Joins the workers and frees them. */
void tc_worker_join_all(struct tc_server *srv);

/**
 * Counts an answer of the API on worker @p w (its thread only): @p route is
 * the route's slot (< TC_ROUTE_SLOTS), @p method the request's, @p status
 * the HTTP status, @p ns the time from the complete request to the answer.
 */
void tc_worker_count_response(struct tc_worker *w, unsigned route, enum tc_http_method method,
                              int status, uint64_t ns);

/** The slot of HTTP status @p status in the request histograms (TC_CODE_OTHER if none). */
enum tc_worker_code tc_worker_code_slot(int status);

/** The status of slot @p slot ("200"), or "other". */
const char *tc_worker_code_name(enum tc_worker_code slot);

/** The slot of @p method in the request histograms (< TC_METHOD_SLOTS). */
unsigned tc_worker_method_slot(enum tc_http_method method);

/** The method name of slot @p slot ("GET", ..., "OTHER"). */
const char *tc_worker_method_name(unsigned slot);

/**
 * Counts what a cache read answered on worker @p w (its thread only);
 * @p tier is the tier that answered a HIT or STALE read, ignored for a MISS.
 */
void tc_worker_count_read(struct tc_worker *w, enum tc_worker_read what, int tier);

/** Counts a request refused by access control on worker @p w (its thread only). */
void tc_worker_count_auth_failure(struct tc_worker *w, enum tc_auth_failure why);

#endif
