/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The route table (STYLE R12) and the dispatch of each request. One row
 * per route: path, whether it is a prefix (the rest is a key or name), the
 * methods it takes, the scope a client needs for it (src/scope.h; issue 14,
 * docs/security.md), and its handler, in a file per area of the API:
 *
 *   /cache/{key}   GET HEAD PUT DELETE PATCH  read / write  src/api_cache.c (PATCH: api_locks.c)
 *   /locks/{name}  GET HEAD POST PATCH DELETE  locks    src/api_locks.c
 *   /counters/{key} GET HEAD POST DELETE read / write  src/api_counters.c
 *   /limits/{key}  GET HEAD POST DELETE  read / write   src/api_counters.c
 *   /health        GET HEAD              public         src/api_admin.c
 *   /stats         GET HEAD              admin
 *   /metrics       GET HEAD              admin
 *   /batch/get     POST                  read           src/api_batch.c
 *   /batch/set     POST                  write
 *   /batch/delete  POST                  write
 *   /purge         POST                  admin          src/api_purge.c
 *   /keys          GET HEAD              admin          src/api_keys.c
 *
 * PURGE /cache/{key} is a DELETE (Varnish habits).
 *
 * Before a handler runs, every request passes, in this order:
 *
 *   Host in allowed-hosts? ─no─▶ 421 (a DNS-rebinding page names a host we are not)
 *   state-changing, with an Origin not in allowed-origins? ─yes─▶ 403
 *   no such route ─▶ 404;  OPTIONS ─▶ 204 (CORS preflight, no credentials needed)
 *   method not allowed ─▶ 405
 *   scope needed (a tokens file or client certificates configured):
 *     no token ─▶ 401; unknown token ─▶ 401 invalid_token; scope missing ─▶ 403
 *
 * Errors are answered through one table (TC_API_ERRORS in src/api.h, kept
 * by src/api.c): a handler names an error, the table gives its status and
 * code; a handler that returns a status other than TC_OK is answered here
 * with the error tc_api_error_of() maps it to.
 */
#include "src/routes.h"
#include "src/api.h"
#include "src/auth.h"
#include "src/scope.h"

#include <stdio.h>
#include <string.h>

struct route {
    const char *path;
    const char *label; /* the route's "route" label in /metrics */
    int prefix;        /* path is a prefix: the rest is the key or name */
    unsigned methods;
    const char *allow; /* the methods, for 405 and Allow */
    /* What a client needs: one TC_SCOPE_* bit, or TC_ROUTE_PUBLIC. 0 (a row
     * that names none) is treated as admin, and tests/http/issue_14_auth.c
     * fails on it. */
    unsigned read_scope;  /* for GET and HEAD */
    unsigned write_scope; /* for the other methods */
    tc_api_handler_fn fn;
};

#define RW (TC_HTTP_GET | TC_HTTP_HEAD)

static const struct route routes[] = {
    {"/cache/", "/cache/{key}", 1,
     RW | TC_HTTP_PUT | TC_HTTP_DELETE | TC_HTTP_PURGE | TC_HTTP_PATCH,
     "GET, HEAD, PUT, DELETE, PURGE, PATCH", TC_SCOPE_READ, TC_SCOPE_WRITE, tc_api_cache},
    {"/locks/", "/locks/{name}", 1, RW | TC_HTTP_POST | TC_HTTP_PATCH | TC_HTTP_DELETE,
     "GET, HEAD, POST, PATCH, DELETE", TC_SCOPE_LOCKS, TC_SCOPE_LOCKS, tc_api_locks},
    /* Issue 16: counters and limits change state on POST/DELETE (write);
     * reading one is read. */
    {"/counters/", "/counters/{key}", 1, RW | TC_HTTP_POST | TC_HTTP_DELETE,
     "GET, HEAD, POST, DELETE", TC_SCOPE_READ, TC_SCOPE_WRITE, tc_api_counters},
    {"/limits/", "/limits/{key}", 1, RW | TC_HTTP_POST | TC_HTTP_DELETE, "GET, HEAD, POST, DELETE",
     TC_SCOPE_READ, TC_SCOPE_WRITE, tc_api_limits},
    {"/health", "/health", 0, RW, "GET, HEAD", TC_ROUTE_PUBLIC, TC_ROUTE_PUBLIC, tc_api_health},
    {"/stats", "/stats", 0, RW, "GET, HEAD", TC_SCOPE_ADMIN, TC_SCOPE_ADMIN, tc_api_stats},
    {"/metrics", "/metrics", 0, RW, "GET, HEAD", TC_SCOPE_ADMIN, TC_SCOPE_ADMIN, tc_api_metrics},
    /* issue 15: bulk, purge, keys. A batch get is a POST that only reads. */
    {"/batch/get", "/batch/get", 0, TC_HTTP_POST, "POST", TC_SCOPE_READ, TC_SCOPE_READ,
     tc_api_batch_get},
    {"/batch/set", "/batch/set", 0, TC_HTTP_POST, "POST", TC_SCOPE_WRITE, TC_SCOPE_WRITE,
     tc_api_batch_set},
    {"/batch/delete", "/batch/delete", 0, TC_HTTP_POST, "POST", TC_SCOPE_WRITE, TC_SCOPE_WRITE,
     tc_api_batch_delete},
    {"/purge", "/purge", 0, TC_HTTP_POST, "POST", TC_SCOPE_ADMIN, TC_SCOPE_ADMIN, tc_api_purge},
    {"/keys", "/keys", 0, RW, "GET, HEAD", TC_SCOPE_ADMIN, TC_SCOPE_ADMIN, tc_api_keys},
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

int tc_routes_info(size_t i, struct tc_route_info *out)
{
    if (i >= NROUTES) {
        return -1;
    }
    const struct route *rt = &routes[i];
    *out = (struct tc_route_info){rt->path,    rt->label,      rt->prefix,
                                  rt->methods, rt->read_scope, rt->write_scope};
    return 0;
}

/* ---- access control ----------------------------------------------------------------- */

static void refuse(struct tc_worker *w, struct tc_http_req *r, enum tc_auth_failure why,
                   enum tc_api_error e, const char *headers, const char *msg)
{
    tc_worker_count_auth_failure(w, why);
    tc_api_error(w, r, e, headers, "%s", msg);
}

/* 1 when @p r may go on to @p rt's handler; otherwise answered 401 or 403. */
static int authorized(struct tc_worker *w, struct tc_http_req *r, const struct route *rt)
{
    const struct tc_server *srv = w->srv;
    int reads = (r->method & RW) != 0;
    unsigned need = reads ? rt->read_scope : rt->write_scope;
    if (need == 0) {
        need = TC_SCOPE_ADMIN; /* a row that names no scope: closed, not open */
    }
    if (!tc_auth_required(srv->auth) || (need == TC_ROUTE_PUBLIC && srv->conf->public_health)) {
        return 1;
    }
    unsigned grant = 0;
    enum tc_auth_result res = tc_auth_check(w->auth, tc_http_header(r, "authorization"), &grant);
    if (res == TC_AUTH_INVALID) {
        refuse(w, r, TC_AUTH_FAIL_invalid, TC_API_UNAUTHORIZED,
               "WWW-Authenticate: Bearer realm=\"tiercache\", error=\"invalid_token\"\r\n",
               "the Bearer token is not valid (unknown, or removed from the tokens file)");
        return 0;
    }
    grant |= r->peer_scopes;
    if (grant == 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s %s needs a Bearer token (Authorization: Bearer TOKEN)",
                 r->method_name, rt->label);
        refuse(w, r, TC_AUTH_FAIL_missing, TC_API_UNAUTHORIZED,
               "WWW-Authenticate: Bearer realm=\"tiercache\"\r\n", msg);
        return 0;
    }
    if (need == TC_ROUTE_PUBLIC || (tc_scope_effective(grant) & need) != 0) {
        return 1;
    }
    char have[64], msg[256], hdr[160];
    tc_scope_format(grant, have, sizeof(have));
    snprintf(msg, sizeof(msg), "%s %s needs the scope %s; this client has %s", r->method_name,
             rt->label, tc_scope_name(need), have);
    snprintf(hdr, sizeof(hdr),
             "WWW-Authenticate: Bearer realm=\"tiercache\", error=\"insufficient_scope\", "
             "scope=\"%s\"\r\n",
             tc_scope_name(need));
    refuse(w, r, TC_AUTH_FAIL_scope, TC_API_FORBIDDEN, hdr, msg);
    return 0;
}

/* OPTIONS: a CORS preflight from an allowed origin gets what it may send;
 * any other OPTIONS the route's methods (RFC 9110 9.3.7). No credentials:
 * browsers send none with a preflight. */
static void answer_options(struct tc_worker *w, struct tc_http_req *r, const struct route *rt)
{
    char hdr[512];
    if (r->cors_origin != NULL && tc_http_header(r, "access-control-request-method") != NULL) {
        snprintf(hdr, sizeof(hdr),
                 "Access-Control-Allow-Methods: %s\r\n"
                 "Access-Control-Allow-Headers: Authorization, Content-Type, Accept, If-Match, "
                 "If-None-Match, X-Cache-Lease, X-Lease-Token, X-Lock-Token\r\n"
                 "Access-Control-Max-Age: 600\r\n",
                 rt->allow);
    } else {
        snprintf(hdr, sizeof(hdr), "Allow: %s, OPTIONS\r\n", rt->allow);
    }
    tc_api_respond(w, r, 204, "text/plain", NULL, 0, hdr);
}

/* ---- routing ------------------------------------------------------------------------ */

void tc_routes_handle(struct tc_http_req *r, void *arg)
{
    struct tc_worker *w = arg;
    const struct tc_auth *auth = w->srv->auth;
    const struct route *rt = NULL;
    for (size_t i = 0; i < NROUTES; i++) {
        size_t n = strlen(routes[i].path);
        if (routes[i].prefix ? strncmp(r->path, routes[i].path, n) == 0
                             : (r->path_len == n && memcmp(r->path, routes[i].path, n) == 0)) {
            rt = &routes[i];
            r->tag = (unsigned)i + 1;
            break;
        }
    }
    /* A keep-alive connection sends the same Host each time: checked once,
     * then remembered on the connection. Keyed on the tc_auth, whose host
     * list is fixed for its life (src/auth.h). */
    if (!tc_http_host_known(r, auth)) {
        if (!tc_auth_host_allowed(auth, tc_http_host(r))) {
            /* 421, not 403: the server is not authoritative for that name
             * (RFC 9110 15.5.20); nothing is wrong with the client's
             * credentials. */
            refuse(w, r, TC_AUTH_FAIL_host, TC_API_MISDIRECTED, NULL,
                   "this server does not answer for that Host (see allowed-hosts)");
            return;
        }
        tc_http_host_remember(r, auth);
    }
    const char *origin = tc_http_header(r, "origin");
    if (origin != NULL) {
        if (tc_auth_origin_allowed(auth, origin)) {
            r->cors_origin = origin;
        } else if (!(r->method & (RW | TC_HTTP_OPTIONS))) {
            /* A page on another site can send a POST with text/plain and no
             * preflight; it must not take a lock or write a key. */
            refuse(w, r, TC_AUTH_FAIL_origin, TC_API_FORBIDDEN, NULL,
                   "requests from that Origin may not change anything (see allowed-origins)");
            return;
        }
    }
    if (rt == NULL) {
        if (r->path_len == strlen("/cache") && memcmp(r->path, "/cache", r->path_len) == 0) {
            tc_api_error(w, r, TC_API_BAD_KEY, NULL, "the key is empty: use /cache/{key}");
            return;
        }
        tc_api_error(w, r, TC_API_NOT_FOUND, NULL,
                     "no such path (the API is /cache/{key}, /locks/{name}, /counters/{key}, "
                     "/limits/{key}, /batch/get, /batch/set, /batch/delete, /purge, /keys, "
                     "/health, /stats, /metrics)");
        return;
    }
    if (r->method == TC_HTTP_OPTIONS) {
        answer_options(w, r, rt);
        return;
    }
    if (!(r->method & rt->methods)) {
        char allow[96];
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", rt->allow);
        tc_api_error(w, r, TC_API_METHOD_NOT_ALLOWED, allow,
                     "%s is not allowed on %s (allowed: %s)", r->method_name, rt->path, rt->allow);
        return;
    }
    if (!authorized(w, r, rt)) {
        return;
    }
    enum tc_status st = rt->fn(w, r);
    if (st != TC_OK) {
        tc_api_status(w, r, st);
    }
}
