/*
 * The route table (STYLE R12) and the dispatch of each request. One row
 * per route: path, whether it is a prefix (the rest is a key or name), the
 * methods it takes, the scope a client needs for it (for the coming auth),
 * and its handler, in a file per area of the API:
 *
 *   /cache/{key}   GET HEAD PUT DELETE PATCH  read / write  src/api_cache.c (PATCH: api_locks.c)
 *   /locks/{name}  GET HEAD POST PATCH DELETE  locks    src/api_locks.c
 *   /counters/{key} GET HEAD POST DELETE read / write  src/api_counters.c
 *   /limits/{key}  GET HEAD POST DELETE  read / write   src/api_counters.c
 *   /health        GET HEAD              public         src/api_admin.c
 *   /stats         GET HEAD              admin
 *   /metrics       GET HEAD              admin
 *
 * Errors are answered through one table (TC_API_ERRORS in src/api.h, kept
 * by src/api.c): a handler names an error, the table gives its status and
 * code; a handler that returns a status other than TC_OK is answered here
 * with the error tc_api_error_of() maps it to.
 */
#include "src/routes.h"
#include "src/api.h"

#include <stdio.h>
#include <string.h>

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
    /* PATCH (issue 16): a cache lease's renewal, by its holder. */
    {"/cache/", "/cache/{key}", 1, RW | TC_HTTP_PUT | TC_HTTP_DELETE | TC_HTTP_PATCH,
     "GET, HEAD, PUT, DELETE, PATCH", SCOPE_READ, SCOPE_WRITE, tc_api_cache},
    {"/locks/", "/locks/{name}", 1, RW | TC_HTTP_POST | TC_HTTP_PATCH | TC_HTTP_DELETE,
     "GET, HEAD, POST, PATCH, DELETE", SCOPE_LOCKS, SCOPE_LOCKS, tc_api_locks},
    /* Issue 16: counters and limits change state on POST/DELETE (write);
     * reading one is read. */
    {"/counters/", "/counters/{key}", 1, RW | TC_HTTP_POST | TC_HTTP_DELETE,
     "GET, HEAD, POST, DELETE", SCOPE_READ, SCOPE_WRITE, tc_api_counters},
    {"/limits/", "/limits/{key}", 1, RW | TC_HTTP_POST | TC_HTTP_DELETE, "GET, HEAD, POST, DELETE",
     SCOPE_READ, SCOPE_WRITE, tc_api_limits},
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
                 "no such path (the API is /cache/{key}, /locks/{name}, /counters/{key}, "
                 "/limits/{key}, /health, /stats, /metrics)");
}
