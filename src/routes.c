/*
 * The route table (STYLE R12) and the answers every handler shares. One row
 * per route: path, whether it is a prefix (the rest is a key or name), the
 * methods it takes, the scope a client needs for it (for the coming auth),
 * and its handler, in a file per area of the API:
 *
 *   /cache/{key}   GET HEAD PUT DELETE   read / write   src/api_cache.c
 *   /locks/{name}  GET HEAD POST DELETE  locks          src/api_locks.c
 *   /health        GET HEAD              public         src/api_admin.c
 *   /stats         GET HEAD              admin
 *   /metrics       GET HEAD              admin
 *
 * Errors are answered through one table (TC_API_ERRORS in src/api.h): a
 * handler names an error, the table gives its status and code; a handler
 * that returns a status other than TC_OK is answered here with the error
 * tc_api_error_of() maps it to.
 */
#include "src/routes.h"
#include "src/api.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/text.h"

#include <event2/http.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

/** What a client must be allowed to do for a route (enforced once auth exists). */
enum route_scope {
    SCOPE_PUBLIC = 0, /* anyone */
    SCOPE_READ,       /* GET/HEAD of cache values */
    SCOPE_WRITE,      /* PUT/DELETE of cache values */
    SCOPE_LOCKS,      /* named locks */
    SCOPE_ADMIN,      /* statistics, metrics, and everything */
};

struct route {
    const char *path;
    const char *label; /* the route's "route" label in /metrics */
    int prefix;        /* path is a prefix: the rest is the key or name */
    unsigned methods;
    const char *allow;            /* the methods, for 405 and Allow */
    enum route_scope read_scope;  /* for GET and HEAD */
    enum route_scope write_scope; /* for the other methods */
    tc_api_handler_fn fn;
};

#define RW (TC_HTTP_GET | TC_HTTP_HEAD)

static const struct route routes[] = {
    {"/cache/", "/cache/{key}", 1, RW | TC_HTTP_PUT | TC_HTTP_DELETE, "GET, HEAD, PUT, DELETE",
     SCOPE_READ, SCOPE_WRITE, tc_api_cache},
    {"/locks/", "/locks/{name}", 1, RW | TC_HTTP_POST | TC_HTTP_DELETE, "GET, HEAD, POST, DELETE",
     SCOPE_LOCKS, SCOPE_LOCKS, tc_api_locks},
    {"/health", "/health", 0, RW, "GET, HEAD", SCOPE_PUBLIC, SCOPE_PUBLIC, tc_api_health},
    {"/stats", "/stats", 0, RW, "GET, HEAD", SCOPE_ADMIN, SCOPE_ADMIN, tc_api_stats},
    {"/metrics", "/metrics", 0, RW, "GET, HEAD", SCOPE_ADMIN, SCOPE_ADMIN, tc_api_metrics},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* A request's slot in the per-worker request histograms (r->tag): 0 when no
 * route matched, else 1 + the route's index. */
_Static_assert(NROUTES + 1 <= TC_ROUTE_SLOTS, "TC_ROUTE_SLOTS (src/worker.h) is too small");

const char *tc_routes_label(unsigned slot)
{
    if (slot == 0 || slot > NROUTES) {
        return "none";
    }
    return routes[slot - 1].label;
}

/* ---- the error table --------------------------------------------------------------- */

static const struct {
    int http;
    const char *code;
} api_errors[] = {
#define TC_X(name, http, code) [TC_API_##name] = {http, code},
    TC_API_ERRORS(TC_X)
#undef TC_X
};

enum tc_api_error tc_api_error_of(enum tc_status st)
{
    switch (st) {
    case TC_ENOTFOUND:
        return TC_API_NOT_FOUND;
    case TC_ETOOBIG:
        return TC_API_TOO_LARGE;
    case TC_EINVAL:
        return TC_API_BAD_REQUEST;
    case TC_ETIMEOUT:
        return TC_API_TIMEOUT;
    default:
        return TC_API_UNAVAILABLE;
    }
}

/* ---- answers ------------------------------------------------------------------------ */

void tc_api_respond(struct tc_worker *w, struct tc_http_req *r, int status, const char *ctype,
                    const void *body, size_t len, const char *headers)
{
    /* The answer's one clock read; start_ns is on the same clock (CLOCK_MONOTONIC). */
    tc_worker_count_response(w, r->tag, r->method, status, tc_clock_ns() - r->start_ns);
    tc_http_respond(r, status, ctype, body, len, headers);
}

void tc_api_respond_json(struct tc_worker *w, struct tc_http_req *r, int status, json_t *j,
                         const char *headers)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (s == NULL) {
        static const char oom[] = "{\"error\":\"unavailable\",\"message\":\"out of memory\"}";
        tc_api_respond(w, r, 503, "application/json", oom, sizeof(oom) - 1, NULL);
        return;
    }
    tc_api_respond(w, r, status, "application/json", s, strlen(s), headers);
    free(s);
}

void tc_api_respond_ok(struct tc_worker *w, struct tc_http_req *r, const char *headers)
{
    static const char ok[] = "{\"ok\":true}";
    tc_api_respond(w, r, 200, "application/json", ok, sizeof(ok) - 1, headers);
}

void tc_api_error(struct tc_worker *w, struct tc_http_req *r, enum tc_api_error e,
                  const char *headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(api_errors[e].code));
    /* The message may quote client bytes: keep it valid UTF-8 for JSON. */
    json_t *m = json_string(msg);
    json_object_set_new(j, "message", m ? m : json_string("(message not valid UTF-8)"));
    tc_log(TC_LOG_DEBUG, "%d %s: %s", api_errors[e].http, api_errors[e].code, msg);
    tc_api_respond_json(w, r, api_errors[e].http, j, headers);
}

void tc_api_status(struct tc_worker *w, struct tc_http_req *r, enum tc_status st)
{
    tc_api_error(w, r, tc_api_error_of(st), NULL, "%s", tc_strerror(st));
}

/* ---- shared request parsing --------------------------------------------------------- */

const char *tc_api_query(struct tc_http_req *r, const char *name, struct evkeyvalq *q)
{
    if (r->query == NULL) {
        return NULL;
    }
    if (TAILQ_EMPTY(q) && evhttp_parse_query_str(r->query, q) != 0) {
        return NULL;
    }
    return evhttp_find_header(q, name);
}

uint64_t tc_api_secs_to_ms(double secs)
{
    /* A TTL of 0.0004 s rounded to 0 would mean "never expires", the
     * opposite of what was asked. */
    uint64_t ms = (uint64_t)llround(secs * 1000.0);
    return ms == 0 && secs > 0 ? 1 : ms;
}

const char *tc_api_tier_label(int i)
{
    static const char *const labels[] = {"l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8"};
    return i >= 0 && i < 8 ? labels[i] : "l?";
}

int tc_api_decode_name(struct tc_worker *w, struct tc_http_req *r, const char *raw,
                       const char *what, const char *usage, char **to_free, const char **name,
                       size_t *len, enum tc_status *st)
{
    *to_free = NULL;
    *st = TC_OK;
    if (raw[0] == '\0') {
        tc_api_error(w, r, TC_API_BAD_KEY, NULL, "the %s is empty: use %s", what, usage);
        return -1;
    }
    if (strlen(raw) > TC_KEY_MAX * 3) {
        tc_api_error(w, r, TC_API_KEY_TOO_LONG, NULL, "the %s is longer than %u bytes", what,
                     TC_KEY_MAX);
        return -1;
    }
    /* Most names have no escapes: no decoding copy for them. */
    size_t n = 0;
    const char *k = raw;
    if (strchr(raw, '%') != NULL) {
        *to_free = evhttp_uridecode(raw, 0, &n);
        if (*to_free == NULL) {
            *st = TC_ENOMEM;
            return -1;
        }
        k = *to_free;
    } else {
        n = strlen(raw);
    }
    if (n == 0 || n > TC_KEY_MAX) {
        tc_api_error(w, r, n ? TC_API_KEY_TOO_LONG : TC_API_BAD_KEY, NULL,
                     "the %s must be 1 to %u bytes after percent-decoding (it is %zu)", what,
                     TC_KEY_MAX, n);
        free(*to_free);
        *to_free = NULL;
        return -1;
    }
    if (!tc_text_utf8_valid(k, n)) {
        free(*to_free);
        *to_free = NULL;
        tc_api_error(w, r, TC_API_BAD_KEY, NULL,
                     "the %s must be valid UTF-8 after percent-decoding", what);
        return -1;
    }
    *name = k;
    *len = n;
    return 0;
}

/* ---- routing ------------------------------------------------------------------------ */

void tc_routes_handle(struct tc_http_req *r, void *arg)
{
    struct tc_worker *w = arg;
    for (size_t i = 0; i < NROUTES; i++) {
        const struct route *rt = &routes[i];
        size_t n = strlen(rt->path);
        int match = rt->prefix ? strncmp(r->path, rt->path, n) == 0
                               : (r->path_len == n && memcmp(r->path, rt->path, n) == 0);
        if (!match) {
            continue;
        }
        r->tag = (unsigned)i + 1;
        if (!(r->method & rt->methods)) {
            char allow[96];
            snprintf(allow, sizeof(allow), "Allow: %s\r\n", rt->allow);
            tc_api_error(w, r, TC_API_METHOD_NOT_ALLOWED, allow,
                         "%s is not allowed on %s (allowed: %s)", r->method_name, rt->path,
                         rt->allow);
            return;
        }
        enum tc_status st = rt->fn(w, r);
        if (st != TC_OK) {
            tc_api_status(w, r, st);
        }
        return;
    }
    if (r->path_len == strlen("/cache") && memcmp(r->path, "/cache", r->path_len) == 0) {
        tc_api_error(w, r, TC_API_BAD_KEY, NULL, "the key is empty: use /cache/{key}");
        return;
    }
    tc_api_error(w, r, TC_API_NOT_FOUND, NULL,
                 "no such path (the API is /cache/{key}, /locks/{name}, /health, /stats, "
                 "/metrics)");
}
