/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The origin: an asynchronous HTTP/1.1 client for the one server behind the
 * cache (--origin URL), used to fill a miss. A fetch of key K is
 * "GET <url-path>/<percent-encoded K>[?<url-query>]"; its answer comes back
 * with the caching decision of a shared cache (RFC 9111), so that the caller
 * can store the body for the TTL the origin allowed.
 *
 *   tc_origin (one, immutable, shared)     tc_origin_ctx (one per worker)
 *   ┌──────────────────────────┐           ┌────────────────────────────────┐
 *   │ address, Host, path,     │◀──────────│ up to N keep-alive evhttp      │
 *   │ timeout, max_body,       │           │ connections on the worker's    │
 *   │ stats of disposed ctxs   │           │ event_base; the fetches in     │
 *   └──────────────────────────┘           │ flight; per-ctx counters       │
 *                                          └────────────────────────────────┘
 *   fetch: pick an idle connection (else open one, else queue on the least
 *          busy) ─▶ evhttp GET ─▶ response / error / deadline ─▶ deferred
 *          callback on the ctx's base (exactly once)
 *
 * Bounds: connect + the whole response within timeout_ms (the deadline
 * counts from tc_origin_fetch, queueing included), body ≤ max_body, headers
 * ≤ 64 KiB. A GET that fails on a reused keep-alive connection before any
 * response byte (the origin closed it while idle) is re-sent once on another
 * connection if time is left: GET is idempotent, and that race is otherwise
 * the commonest spurious error of keep-alive clients.
 *
 * The host name is resolved once, by tc_origin_create (a worker never blocks
 * on DNS); IPv4 is preferred when the name has both. Caveat: a DNS change is
 * seen only after a restart.
 *
 * Threading: a tc_origin is immutable after create and may be shared by any
 * number of threads. A ctx and its fetches belong to the thread running its
 * event_base. tc_origin_stats() may be called from any thread.
 *
 * Only bytes from the origin are untrusted here: the status, lengths and
 * header values are bounded and validated before they reach the caller
 * (a Content-Type with control characters is dropped, not passed on).
 */
#ifndef TC_SRC_ORIGIN_H
#define TC_SRC_ORIGIN_H

#include "shm/status.h"
#include "tiers/buf.h"

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct tc_origin;     /* shared by all workers; made once from the URL */
struct tc_origin_ctx; /* one per worker thread / event_base */

/** Connections a ctx keeps open at most unless tc_origin_set_max_conns() says otherwise. */
#define TC_ORIGIN_DEFAULT_CONNS 16
#define TC_ORIGIN_MAX_CONNS     256

/** The answer to one fetch, valid during the callback only. */
struct tc_origin_result {
    /* TC_OK: the origin answered (any HTTP status, see http_status);
     * TC_ETIMEOUT: no full answer within timeout_ms (the connection is dropped);
     * TC_EUNAVAIL: connect refused, connection reset or closed early, or the
     *              ctx is being disposed;
     * TC_ETOOBIG: the body (or the headers) exceeded the limit;
     * TC_EIO: a malformed response; TC_ENOMEM: out of memory. */
    enum tc_status status;
    int http_status;        /* 0 unless status is TC_OK */
    struct tc_buf body;     /* owned by the result; take it with tc_origin_result_take_body() */
    char content_type[128]; /* "" if none, too long, or not printable ASCII */
    int cacheable;          /* see tc_origin_freshness() */
    int has_ttl;            /* the origin gave a lifetime */
    uint64_t ttl_ms;        /* remaining lifetime when has_ttl */
    char error[256];        /* human text when status != TC_OK or the origin answered 5xx */
};

/**
 * Completion of tc_origin_fetch(). Runs exactly once, on the ctx's thread,
 * never before tc_origin_fetch() returned. @p res is valid during the call
 * only. The callback may start new fetches; it must not dispose of the ctx.
 */
typedef void (*tc_origin_cb)(struct tc_origin_result *res, void *arg);

/** Moves the body out of @p res into @p out (whose old storage is released). */
void tc_origin_result_take_body(struct tc_origin_result *res, struct tc_buf *out);

/**
 * Creates the origin for @p url: "http://host[:port][/path-prefix][?query]"
 * (parsed with evhttp_uri_parse; a trailing '/' of the prefix is dropped).
 * Rejected: other schemes (https is not supported), user:password@, a
 * missing host, port 0, a fragment, a host that does not resolve.
 * @p timeout_ms (> 0): deadline of each fetch. @p max_body (> 0): largest
 * body accepted. Returns NULL with a message in @p err on failure.
 * Blocks on DNS resolution: call at startup, not on a worker.
 */
struct tc_origin *tc_origin_create(const char *url, uint64_t timeout_ms, size_t max_body, char *err,
                                   size_t errlen);

/**
 * Sets how many connections each ctx may keep open (1..TC_ORIGIN_MAX_CONNS,
 * clamped); fetches beyond that queue on the least busy connection. Call
 * before the first tc_origin_ctx_init().
 */
void tc_origin_set_max_conns(struct tc_origin *o, unsigned n);

/** The URL as given to tc_origin_create (for logs and /stats). */
const char *tc_origin_url(const struct tc_origin *o);

/** Frees @p o. Every ctx must have been disposed. NULL is a no-op. */
void tc_origin_destroy(struct tc_origin *o);

/**
 * Makes a ctx whose connections and callbacks live on @p base; call it on
 * the thread that runs @p base. TC_OK, or TC_ENOMEM.
 */
enum tc_status tc_origin_ctx_init(struct tc_origin *o, struct event_base *base,
                                  struct tc_origin_ctx **out);

/**
 * Closes every connection of @p c and frees it. Fetches in flight complete
 * first, inside this call, with TC_EUNAVAIL (those already answered but not
 * yet delivered get their answer). Fetches started from those callbacks fail
 * at once with TC_EUNAVAIL. Call on the ctx's thread, not from a callback.
 * NULL is a no-op.
 */
void tc_origin_ctx_dispose(struct tc_origin_ctx *c);

/**
 * Starts a GET of @p key (any bytes, 1..64 KiB; copied, percent-encoded
 * except the RFC 3986 unreserved characters). Returns TC_OK and @p cb runs
 * later exactly once; or an error (TC_EINVAL bad key, TC_ENOMEM, TC_EUNAVAIL
 * ctx being disposed, TC_EIO) and @p cb never runs.
 */
enum tc_status tc_origin_fetch(struct tc_origin_ctx *c, const void *key, size_t key_len,
                               tc_origin_cb cb, void *arg);

/*
 * Counters, declared once (STYLE R11): name, help. Each ctx keeps its own,
 * written by its thread only; tc_origin_stats() sums the live ctxs and those
 * already disposed.
 */
#define TC_ORIGIN_STATS(X)                                                                         \
    X(requests, "fetches started")                                                                 \
    X(responses, "fetches the origin answered, any HTTP status")                                   \
    X(errors, "fetches without a usable answer (status other than TC_OK)")                         \
    X(timeouts, "fetches that ran out of time (also counted in errors)")                           \
    X(too_big, "answers over the body or header limit (also counted in errors)")                   \
    X(status_5xx, "answers with a 5xx status (not counted in errors)")                             \
    X(retries, "GETs re-sent after a reused keep-alive connection failed")                         \
    X(connections, "connections opened")

struct tc_origin_stats {
#define TC_ORIGIN_X(name, help) uint64_t name;
    TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
    uint64_t inflight; /* gauge: fetches started and not yet completed */
};

/** Fills @p out with the sums over every ctx, live or disposed. Any thread. */
void tc_origin_stats(struct tc_origin *o, struct tc_origin_stats *out);

/*
 * Caching decision: pure functions, no network, no clock of their own.
 */

/** What a Cache-Control header says, for a shared cache. */
struct tc_cache_policy {
    int no_store;
    int no_cache; /* any form, also no-cache="field" (as nginx and Varnish do) */
    int private_; /* any form, also private="field" */
    int public_;
    int must_revalidate;
    int has_max_age;
    uint64_t max_age_s;
    int has_s_maxage;
    uint64_t s_maxage_s;
};

/** Delta-seconds above this are clamped to it (RFC 9111 §1.2.2). */
#define TC_CACHE_MAX_DELTA_S 2147483648ull

/**
 * Parses a Cache-Control value (several header lines joined with ','):
 * comma-separated directives, names case-insensitive, optional "=value"
 * as a token or a quoted string, spaces around items and '=' ignored.
 * The first max-age / s-maxage wins; a malformed number (empty, signed,
 * fractional, trailing garbage, unterminated quote) drops that directive
 * only; numbers above TC_CACHE_MAX_DELTA_S are clamped. Unknown directives
 * are ignored. @p value may be NULL (no header). Never fails.
 */
void tc_origin_cache_control_parse(const char *value, struct tc_cache_policy *out);

/**
 * Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime form) into Unix
 * seconds. Returns 0, or -1 when @p s is not a valid date.
 */
int tc_http_date_parse(const char *s, int64_t *out);

/** The response headers tc_origin_freshness() looks at; each NULL when absent. */
struct tc_origin_hdrs {
    const char *cache_control; /* all Cache-Control lines joined with ", " */
    const char *age;
    const char *expires;
    const char *date;
    const char *vary;
    int set_cookie; /* a Set-Cookie header is present */
};

/**
 * Decides whether a response may be stored by a shared cache and for how
 * long, and sets res->cacheable, res->has_ttl and res->ttl_ms.
 *
 * Lifetime: s-maxage, else max-age, else Expires − Date (an invalid Expires
 * means already expired; a missing Date means @p now_s), minus Age; never
 * below 0. Cacheable: status 200, and none of no-store, no-cache, private,
 * Set-Cookie, "Vary: *" (the defaults of nginx and Varnish), and a lifetime
 * > 0 when one is given. No lifetime at all: cacheable, has_ttl 0 (the
 * caller's default TTL applies).
 */
void tc_origin_freshness(int http_status, const struct tc_origin_hdrs *h, int64_t now_s,
                         struct tc_origin_result *res);

#endif
