/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The origin client (see origin.h for the contract). evhttp does the HTTP;
 * this file adds the pool, the whole-fetch deadline, the deferred
 * completion, the caching decision and the counters.
 *
 * A fetch goes through:
 *
 *   ACTIVE ──evhttp cb / error cb──▶ DONE (queued) ──done_ev──▶ delivered, freed
 *     │                                  │
 *     └── deadline timer: cancel ────────┘   (a retry puts a DONE fetch back to ACTIVE)
 *
 * Every completion is queued and delivered from ctx->done_ev, never from
 * inside evhttp: evhttp may call back synchronously from inside
 * evhttp_make_request() (a connect refused at once), and a user callback
 * that starts a fetch must not re-enter evhttp in the middle of its own
 * bookkeeping.
 */
#include "src/origin.h"
#include "src/clock.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#ifndef TC_VERSION
#define TC_VERSION "0"
#endif

#define ORIGIN_MAX_KEY          65536
#define ORIGIN_MAX_HEADERS_SIZE 65536
/* evhttp's own read/write timeout: a backstop only (our deadline fires
 * first), and what closes a keep-alive connection left idle this long. */
#define ORIGIN_IDLE_MS 30000

struct tc_origin {
    char *url;
    char *addr; /* numeric address to connect to */
    uint16_t port;
    char *host_hdr; /* Host: as in the URL, with ":port" unless 80 */
    char *prefix;   /* URL path without a trailing '/', maybe "" */
    char *query;    /* URL query or NULL */
    uint64_t timeout_ms;
    size_t max_body;
    unsigned max_conns;

    pthread_mutex_t lock; /* ctxs and retired; never taken on the request path */
    struct tc_origin_ctx *ctxs;
    struct tc_origin_stats retired;
};

struct origin_conn {
    struct evhttp_connection *evcon;
    unsigned inflight; /* fetches queued or in progress on it */
    uint64_t served;   /* answers since the last failure: > 0 means a warm keep-alive */
};

enum fetch_state { FETCH_ACTIVE = 0, FETCH_DONE = 1 };

struct fetch {
    struct tc_origin_ctx *ctx;
    struct fetch *prev, *next;  /* in ctx->active, or next in ctx->done */
    struct origin_conn *conn;   /* while queued on a connection */
    struct evhttp_request *req; /* NULL once evhttp no longer holds it */
    struct event *timer;
    tc_origin_cb cb;
    void *arg;
    uint64_t deadline_ns;
    enum fetch_state state;
    int error_set; /* the error cb recorded res.status */
    int headers_seen;
    int reused; /* sent on a connection that had answered before */
    int retried;
    struct tc_origin_result res;
    char uri[]; /* request target */
};

struct tc_origin_ctx {
    struct tc_origin *o;
    struct event_base *base;
    struct origin_conn *conns;
    unsigned nconns;
    struct fetch *active;                /* doubly linked */
    struct fetch *done_head, *done_tail; /* singly linked, FIFO */
    struct event *done_ev;
    const struct timeval *deadline_tv; /* common timeout: O(1) timer adds */
    int closing;
    struct tc_origin_ctx *reg_prev, *reg_next; /* in o->ctxs */
#define TC_ORIGIN_X(name, help) _Atomic uint64_t name;
    TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
    _Atomic uint64_t inflight;
};

/* Single writer (the ctx's thread): a relaxed load + store is enough and
 * cheaper than a locked add; readers sum with relaxed loads. */
#define CTR_ADD(c, field, n)                                                                       \
    atomic_store_explicit(&(c)->field,                                                             \
                          atomic_load_explicit(&(c)->field, memory_order_relaxed) + (n),           \
                          memory_order_relaxed)

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
}

/* ---------------------------------------------------------------------- */
/* Caching decision (pure).                                               */

static int is_tchar(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int is_ows(int ch)
{
    return ch == ' ' || ch == '\t';
}

/* Digits only, at least one; clamped. -1 when malformed. */
static int parse_delta(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        if (v < TC_CACHE_MAX_DELTA_S) {
            v = v * 10 + (uint64_t)(p[i] - '0');
        }
    }
    *out = v > TC_CACHE_MAX_DELTA_S ? TC_CACHE_MAX_DELTA_S : v;
    return 0;
}

static int name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

void tc_origin_cache_control_parse(const char *v, struct tc_cache_policy *out)
{
    memset(out, 0, sizeof(*out));
    if (v == NULL) {
        return;
    }
    const char *p = v;
    while (*p != '\0') {
        while (is_ows(*p) || *p == ',') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        const char *name = p;
        while (is_tchar(*p)) {
            p++;
        }
        size_t nlen = (size_t)(p - name);
        const char *val = NULL;
        size_t vlen = 0;
        int bad = 0;
        while (is_ows(*p)) {
            p++;
        }
        if (*p == '=') {
            p++;
            while (is_ows(*p)) {
                p++;
            }
            if (*p == '"') {
                val = ++p;
                while (*p != '"' && *p != '\0') {
                    if (*p == '\\' && p[1] != '\0') {
                        bad = 1; /* an escape inside a number is not a number */
                        p++;
                    }
                    p++;
                }
                vlen = (size_t)(p - val);
                if (*p == '"') {
                    p++;
                } else {
                    bad = 1; /* unterminated */
                }
            } else {
                val = p;
                while (is_tchar(*p)) {
                    p++;
                }
                vlen = (size_t)(p - val);
            }
            while (is_ows(*p)) {
                p++;
            }
        }
        if (*p != '\0' && *p != ',') {
            /* Garbage after the item: skip to the next comma outside quotes. */
            bad = 1;
            int inq = 0;
            while (*p != '\0' && (inq || *p != ',')) {
                if (*p == '"') {
                    inq = !inq;
                } else if (*p == '\\' && inq && p[1] != '\0') {
                    p++;
                }
                p++;
            }
        }
        if (nlen == 0) {
            if (p == name) {
                p++; /* a stray character that is neither token nor comma */
            }
            continue;
        }
        /* The restrictive directives count in any form, even malformed: when
         * in doubt, a shared cache does not store (RFC 9111 §4.2.1). */
        if (name_is(name, nlen, "no-store")) {
            out->no_store = 1;
        } else if (name_is(name, nlen, "no-cache")) {
            out->no_cache = 1;
        } else if (name_is(name, nlen, "private")) {
            out->private_ = 1;
        } else if (name_is(name, nlen, "public")) {
            out->public_ = 1;
        } else if (name_is(name, nlen, "must-revalidate")) {
            out->must_revalidate = 1;
        } else if (name_is(name, nlen, "max-age")) {
            uint64_t s;
            if (!bad && val != NULL && !out->has_max_age && parse_delta(val, vlen, &s) == 0) {
                out->has_max_age = 1;
                out->max_age_s = s;
            }
        } else if (name_is(name, nlen, "s-maxage")) {
            uint64_t s;
            if (!bad && val != NULL && !out->has_s_maxage && parse_delta(val, vlen, &s) == 0) {
                out->has_s_maxage = 1;
                out->s_maxage_s = s;
            }
        }
    }
}

static int month_index(const char *p)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++) {
        if (strncasecmp(p, months + 3 * i, 3) == 0) {
            return i;
        }
    }
    return -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Reads exactly n digits at *p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9') {
            return -1;
        }
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0) {
        return -1;
    }
    *p += n;
    return 0;
}

static int hms(const char **p, int *h, int *m, int *s)
{
    if (digits(p, 2, h) || expect(p, ":") || digits(p, 2, m) || expect(p, ":") || digits(p, 2, s)) {
        return -1;
    }
    return 0;
}

int tc_http_date_parse(const char *s, int64_t *out)
{
    int day, mon, year, h, m, sec;
    const char *p = s;
    if (s == NULL) {
        return -1;
    }
    while (is_ows(*p)) {
        p++;
    }
    const char *wd = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
        p++;
    }
    if (p - wd < 3) {
        return -1;
    }
    if (*p == ',') {
        p++;
        if (expect(&p, " ") || digits(&p, 2, &day)) {
            return -1;
        }
        if (*p == ' ') { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
            p++;
            if ((mon = month_index(p)) < 0) {
                return -1;
            }
            p += 3;
            if (expect(&p, " ") || digits(&p, 4, &year)) {
                return -1;
            }
        } else if (*p == '-') { /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
            p++;
            if ((mon = month_index(p)) < 0) {
                return -1;
            }
            p += 3;
            if (expect(&p, "-") || digits(&p, 2, &year)) {
                return -1;
            }
            year += year < 70 ? 2000 : 1900;
        } else {
            return -1;
        }
        if (expect(&p, " ") || hms(&p, &h, &m, &sec) || expect(&p, " GMT")) {
            return -1;
        }
    } else if (*p == ' ') { /* asctime: Sun Nov  6 08:49:37 1994 */
        p++;
        if ((mon = month_index(p)) < 0) {
            return -1;
        }
        p += 3;
        if (expect(&p, " ")) {
            return -1;
        }
        if (*p == ' ') {
            p++;
            if (digits(&p, 1, &day)) {
                return -1;
            }
        } else if (digits(&p, 2, &day)) {
            return -1;
        }
        if (expect(&p, " ") || hms(&p, &h, &m, &sec) || expect(&p, " ") || digits(&p, 4, &year)) {
            return -1;
        }
    } else {
        return -1;
    }
    while (is_ows(*p)) {
        p++;
    }
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (*p != '\0' || day < 1 || day > mdays[mon] || h > 23 || m > 59 || sec > 60) {
        return -1;
    }
    *out =
        days_from_civil(year, (unsigned)mon + 1, (unsigned)day) * 86400 + h * 3600 + m * 60 + sec;
    return 0;
}

static int vary_star(const char *v)
{
    while (v != NULL && *v != '\0') {
        while (is_ows(*v) || *v == ',') {
            v++;
        }
        const char *e = v;
        while (*e != '\0' && *e != ',') {
            e++;
        }
        const char *t = e;
        while (t > v && is_ows(t[-1])) {
            t--;
        }
        if (t - v == 1 && *v == '*') {
            return 1;
        }
        v = e;
    }
    return 0;
}

void tc_origin_freshness(int http_status, const struct tc_origin_hdrs *h, int64_t now_s,
                         struct tc_origin_result *res)
{
    struct tc_cache_policy cc;
    tc_origin_cache_control_parse(h->cache_control, &cc);
    uint64_t life = 0;
    int has = 1;
    if (cc.has_s_maxage) {
        life = cc.s_maxage_s;
    } else if (cc.has_max_age) {
        life = cc.max_age_s;
    } else if (h->expires != NULL) {
        int64_t exp, date = now_s;
        int64_t d;
        if (h->date != NULL && tc_http_date_parse(h->date, &d) == 0) {
            date = d;
        }
        /* An invalid Expires ("0", "-1") means already expired. */
        if (tc_http_date_parse(h->expires, &exp) == 0 && exp > date) {
            uint64_t delta = (uint64_t)(exp - date);
            life = delta > TC_CACHE_MAX_DELTA_S ? TC_CACHE_MAX_DELTA_S : delta;
        }
    } else {
        has = 0;
    }
    if (has && h->age != NULL) {
        const char *a = h->age;
        while (is_ows(*a)) {
            a++;
        }
        size_t n = strlen(a);
        while (n > 0 && is_ows(a[n - 1])) {
            n--;
        }
        uint64_t age;
        if (parse_delta(a, n, &age) == 0) { /* an invalid Age is ignored */
            life = life > age ? life - age : 0;
        }
    }
    res->has_ttl = has;
    res->ttl_ms = has ? life * 1000u : 0;
    res->cacheable = http_status == 200 && !cc.no_store && !cc.no_cache && !cc.private_ &&
                     !h->set_cookie && !vary_star(h->vary) && (!has || life > 0);
}

void tc_origin_result_take_body(struct tc_origin_result *res, struct tc_buf *out)
{
    tc_buf_deinit(out);
    *out = res->body;
    tc_buf_init(&res->body);
}

/* ---------------------------------------------------------------------- */
/* The origin.                                                            */

void tc_origin_destroy(struct tc_origin *o)
{
    if (o == NULL) {
        return;
    }
    pthread_mutex_destroy(&o->lock);
    free(o->url);
    free(o->addr);
    free(o->host_hdr);
    free(o->prefix);
    free(o->query);
    free(o);
}

/* Resolves @p host once; IPv4 first when the name has both, since an origin
 * that listens on one family only listens on IPv4 far more often. */
static char *resolve(const char *host, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL) {
        if (err != NULL && errlen > 0) {
            snprintf(err, errlen, "origin host '%s' does not resolve: %s", host, gai_strerror(rc));
        }
        return NULL;
    }
    const struct addrinfo *pick = res;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    }
    char buf[INET6_ADDRSTRLEN];
    const void *a = pick->ai_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
    char *out = NULL;
    if (inet_ntop(pick->ai_family, a, buf, sizeof(buf)) != NULL) {
        out = strdup(buf);
    }
    freeaddrinfo(res);
    if (out == NULL) {
        errf(err, errlen, "origin host '%s': cannot use its address", host);
    }
    return out;
}

struct tc_origin *tc_origin_create(const char *url, uint64_t timeout_ms, size_t max_body, char *err,
                                   size_t errlen)
{
    struct tc_origin *o = NULL;
    struct evhttp_uri *u = NULL;
    char hostbuf[256];
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (url == NULL || url[0] == '\0') {
        errf(err, errlen, "origin URL is empty");
        return NULL;
    }
    if (timeout_ms == 0 || max_body == 0) {
        errf(err, errlen, "origin %s: timeout and max body must be > 0", url);
        return NULL;
    }
    u = evhttp_uri_parse(url);
    if (u == NULL) {
        errf(err, errlen, "origin URL '%s' is not a valid URL (want http://host[:port][/path])",
             url);
        return NULL;
    }
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    const char *path = evhttp_uri_get_path(u);
    int port = evhttp_uri_get_port(u);
    if (scheme == NULL || strcasecmp(scheme, "http") != 0) {
        if (scheme != NULL && strcasecmp(scheme, "https") == 0) {
            errf(err, errlen, "origin URL '%s': https is not supported; use http://", url);
        } else {
            errf(err, errlen, "origin URL '%s': the scheme must be http://", url);
        }
        goto fail;
    }
    if (evhttp_uri_get_userinfo(u) != NULL) {
        errf(err, errlen, "origin URL '%s': user:password@ is not supported", url);
        goto fail;
    }
    if (host == NULL || host[0] == '\0') {
        errf(err, errlen, "origin URL '%s' has no host", url);
        goto fail;
    }
    if (port == 0) {
        errf(err, errlen, "origin URL '%s': port 0 is not a port", url);
        goto fail;
    }
    if (evhttp_uri_get_fragment(u) != NULL) {
        errf(err, errlen, "origin URL '%s': a #fragment makes no sense here", url);
        goto fail;
    }
    /* evhttp keeps the brackets of an IPv6 literal: the Host header wants
     * them, the resolver does not. */
    size_t hl = strlen(host);
    if (hl + 1 > sizeof(hostbuf)) {
        errf(err, errlen, "origin URL '%s': host name too long", url);
        goto fail;
    }
    if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
        memcpy(hostbuf, host + 1, hl - 2);
        hostbuf[hl - 2] = '\0';
    } else {
        memcpy(hostbuf, host, hl + 1);
    }

    o = calloc(1, sizeof(*o));
    if (o == NULL) {
        goto nomem;
    }
    pthread_mutex_init(&o->lock, NULL);
    o->timeout_ms = timeout_ms;
    o->max_body = max_body;
    o->max_conns = TC_ORIGIN_DEFAULT_CONNS;
    o->port = (uint16_t)(port < 0 ? 80 : port);
    o->url = strdup(url);
    o->host_hdr = malloc(hl + 8);
    size_t pl = path != NULL ? strlen(path) : 0;
    while (pl > 0 && path[pl - 1] == '/') {
        pl--;
    }
    o->prefix = malloc(pl + 1);
    if (evhttp_uri_get_query(u) != NULL) {
        o->query = strdup(evhttp_uri_get_query(u));
        if (o->query == NULL) {
            goto nomem;
        }
    }
    if (o->url == NULL || o->host_hdr == NULL || o->prefix == NULL) {
        goto nomem;
    }
    if (port < 0 || port == 80) {
        memcpy(o->host_hdr, host, hl + 1);
    } else {
        snprintf(o->host_hdr, hl + 8, "%s:%d", host, port);
    }
    if (pl > 0) {
        memcpy(o->prefix, path, pl);
    }
    o->prefix[pl] = '\0';
    o->addr = resolve(hostbuf, err, errlen);
    if (o->addr == NULL) {
        goto fail;
    }
    evhttp_uri_free(u);
    return o;
nomem:
    errf(err, errlen, "origin %s: out of memory", url);
fail:
    evhttp_uri_free(u);
    tc_origin_destroy(o);
    return NULL;
}

void tc_origin_set_max_conns(struct tc_origin *o, unsigned n)
{
    o->max_conns = n < 1 ? 1 : n > TC_ORIGIN_MAX_CONNS ? TC_ORIGIN_MAX_CONNS : n;
}

const char *tc_origin_url(const struct tc_origin *o)
{
    return o->url;
}

static void stats_add_ctx(struct tc_origin_stats *s, const struct tc_origin_ctx *c)
{
#define TC_ORIGIN_X(name, help) s->name += atomic_load_explicit(&c->name, memory_order_relaxed);
    TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
    s->inflight += atomic_load_explicit(&c->inflight, memory_order_relaxed);
}

void tc_origin_stats(struct tc_origin *o, struct tc_origin_stats *out)
{
    pthread_mutex_lock(&o->lock);
    *out = o->retired;
    for (const struct tc_origin_ctx *c = o->ctxs; c != NULL; c = c->reg_next) {
        stats_add_ctx(out, c);
    }
    pthread_mutex_unlock(&o->lock);
}

/* ---------------------------------------------------------------------- */
/* Fetches.                                                               */

static void done_cb(evutil_socket_t fd, short what, void *arg);

static void unlink_active(struct fetch *f)
{
    struct tc_origin_ctx *c = f->ctx;
    if (f->prev != NULL) {
        f->prev->next = f->next;
    } else {
        c->active = f->next;
    }
    if (f->next != NULL) {
        f->next->prev = f->prev;
    }
    f->prev = f->next = NULL;
}

static void link_active(struct fetch *f)
{
    struct tc_origin_ctx *c = f->ctx;
    f->prev = NULL;
    f->next = c->active;
    if (c->active != NULL) {
        c->active->prev = f;
    }
    c->active = f;
}

/* Leaves the connection's bookkeeping: @p ok says whether the connection
 * answered (it stays warm) or failed (evhttp reset it). */
static void leave_conn(struct fetch *f, int ok)
{
    if (f->conn != NULL) {
        f->conn->inflight--;
        f->conn->served = ok ? f->conn->served + 1 : 0;
        f->conn = NULL;
    }
}

/* ACTIVE → DONE: stop the deadline and queue the delivery. */
static void finish(struct fetch *f)
{
    struct tc_origin_ctx *c = f->ctx;
    f->state = FETCH_DONE;
    event_del(f->timer);
    unlink_active(f);
    if (c->done_tail != NULL) {
        c->done_tail->next = f;
    } else {
        c->done_head = f;
    }
    c->done_tail = f;
    event_active(c->done_ev, EV_WRITE, 0);
}

static void set_error(struct fetch *f, enum tc_status st, const char *fmt, const char *a)
{
    f->res.status = st;
    f->res.http_status = 0;
    snprintf(f->res.error, sizeof(f->res.error), fmt, a);
}

static void on_error(enum evhttp_request_error e, void *arg)
{
    struct fetch *f = arg;
    if (f->state != FETCH_ACTIVE) {
        return; /* our own cancel (deadline, dispose) */
    }
    const char *url = f->ctx->o->url;
    switch (e) {
    case EVREQ_HTTP_TIMEOUT:
        set_error(f, TC_ETIMEOUT, "origin %s: timed out", url);
        break;
    case EVREQ_HTTP_EOF:
        set_error(f, TC_EUNAVAIL, "origin %s: connection closed before a complete answer", url);
        break;
    case EVREQ_HTTP_BUFFER_ERROR:
        set_error(f, TC_EUNAVAIL, "origin %s: connection failed or was reset", url);
        break;
    case EVREQ_HTTP_DATA_TOO_LONG:
        if (f->headers_seen) {
            set_error(f, TC_ETOOBIG, "origin %s: body larger than the limit", url);
        } else {
            set_error(f, TC_ETOOBIG, "origin %s: response headers larger than the limit", url);
        }
        break;
    case EVREQ_HTTP_INVALID_HEADER:
    default:
        set_error(f, TC_EIO, "origin %s: malformed response", url);
        break;
    }
    f->error_set = 1;
}

static int on_headers(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    (void)req;
    f->headers_seen = 1;
    return 0;
}

static int printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* Every Cache-Control line joined with ", " into *out (malloc'd), or NULL. */
static int join_cache_control(struct evkeyvalq *hdrs, char **out)
{
    size_t total = 0;
    struct evkeyval *kv;
    *out = NULL;
    for (kv = hdrs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "Cache-Control") == 0) {
            total += strlen(kv->value) + 2;
        }
    }
    if (total == 0) {
        return 0;
    }
    char *s = malloc(total + 1);
    if (s == NULL) {
        return -1;
    }
    size_t n = 0;
    for (kv = hdrs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "Cache-Control") == 0) {
            size_t l = strlen(kv->value);
            if (n > 0) {
                memcpy(s + n, ", ", 2);
                n += 2;
            }
            memcpy(s + n, kv->value, l);
            n += l;
        }
    }
    s[n] = '\0';
    *out = s;
    return 0;
}

static void read_response(struct fetch *f, struct evhttp_request *req)
{
    struct tc_origin_result *res = &f->res;
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    int code = evhttp_request_get_response_code(req);
    size_t len = evbuffer_get_length(in);

    if (code < 100 || code > 999) {
        set_error(f, TC_EIO, "origin %s: malformed status line", f->ctx->o->url);
        return;
    }
    /* evhttp enforces max_body while reading; this is the last word. */
    if (len > f->ctx->o->max_body) {
        set_error(f, TC_ETOOBIG, "origin %s: body larger than the limit", f->ctx->o->url);
        return;
    }
    if (tc_buf_reserve(&res->body, len + 1) != TC_OK ||
        evbuffer_remove(in, res->body.data, len) != (int)len) {
        set_error(f, TC_ENOMEM, "origin %s: out of memory for the body", f->ctx->o->url);
        return;
    }
    res->body.len = len;
    res->status = TC_OK;
    res->http_status = code;

    const char *ct = evhttp_find_header(hdrs, "Content-Type");
    if (ct != NULL && strlen(ct) < sizeof(res->content_type) && printable(ct)) {
        memcpy(res->content_type, ct, strlen(ct) + 1);
    }
    char *cc = NULL;
    if (join_cache_control(hdrs, &cc) != 0) {
        set_error(f, TC_ENOMEM, "origin %s: out of memory", f->ctx->o->url);
        tc_buf_deinit(&res->body);
        return;
    }
    struct tc_origin_hdrs h = {
        .cache_control = cc,
        .age = evhttp_find_header(hdrs, "Age"),
        .expires = evhttp_find_header(hdrs, "Expires"),
        .date = evhttp_find_header(hdrs, "Date"),
        .vary = evhttp_find_header(hdrs, "Vary"),
        .set_cookie = evhttp_find_header(hdrs, "Set-Cookie") != NULL,
    };
    tc_origin_freshness(code, &h, (int64_t)time(NULL), res);
    free(cc);
    if (code >= 500) {
        snprintf(res->error, sizeof(res->error), "origin %s answered %d", f->ctx->o->url, code);
    }
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    if (f->state != FETCH_ACTIVE) {
        return;
    }
    /* evhttp frees req when we return; it is no longer ours to cancel. */
    f->req = NULL;
    if (req == NULL || evhttp_request_get_response_code(req) == 0) {
        /* A failed connect reaches here with code 0 and no error cb. */
        if (!f->error_set) {
            set_error(f, TC_EUNAVAIL, "origin %s: cannot connect", f->ctx->o->url);
        }
        leave_conn(f, 0);
    } else {
        read_response(f, req);
        leave_conn(f, f->res.status == TC_OK);
    }
    finish(f);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct fetch *f = arg;
    (void)fd;
    (void)what;
    if (f->state != FETCH_ACTIVE) {
        return;
    }
    /* DONE before the cancel, so that the error cb it runs is ignored. */
    struct evhttp_request *req = f->req;
    f->req = NULL;
    set_error(f, TC_ETIMEOUT, "origin %s: no complete answer in time", f->ctx->o->url);
    leave_conn(f, 0);
    finish(f);
    if (req != NULL) {
        /* In progress: evhttp drops the connection; queued: just removed. */
        evhttp_cancel_request(req);
    }
}

static struct origin_conn *pick_conn(struct tc_origin_ctx *c)
{
    struct origin_conn *best = NULL;
    /* An idle warm connection, then any idle one, then a new one, then the
     * least busy: evhttp sends one request at a time per connection. */
    for (unsigned i = 0; i < c->nconns; i++) {
        struct origin_conn *k = &c->conns[i];
        if (k->inflight == 0 && (best == NULL || k->served > best->served)) {
            best = k;
        }
    }
    if (best != NULL) {
        return best;
    }
    if (c->nconns < c->o->max_conns) {
        struct origin_conn *k = &c->conns[c->nconns];
        k->evcon = evhttp_connection_base_new(c->base, NULL, c->o->addr, c->o->port);
        if (k->evcon == NULL) {
            return NULL;
        }
        uint64_t idle =
            c->o->timeout_ms + 1000 > ORIGIN_IDLE_MS ? c->o->timeout_ms + 1000 : ORIGIN_IDLE_MS;
        struct timeval tv = {(time_t)(idle / 1000), (suseconds_t)(idle % 1000) * 1000};
        evhttp_connection_set_timeout_tv(k->evcon, &tv);
        evhttp_connection_set_retries(k->evcon, 0);
        evhttp_connection_set_max_body_size(k->evcon, (ev_ssize_t)c->o->max_body);
        evhttp_connection_set_max_headers_size(k->evcon, ORIGIN_MAX_HEADERS_SIZE);
        k->inflight = 0;
        k->served = 0;
        c->nconns++;
        CTR_ADD(c, connections, 1);
        return k;
    }
    best = &c->conns[0];
    for (unsigned i = 1; i < c->nconns; i++) {
        if (c->conns[i].inflight < best->inflight) {
            best = &c->conns[i];
        }
    }
    return best;
}

/* Sends f on a connection. TC_OK: evhttp holds it (it may even have
 * completed already, queued for delivery). Otherwise nothing was sent. */
static enum tc_status send_fetch(struct fetch *f)
{
    struct tc_origin_ctx *c = f->ctx;
    struct origin_conn *k = pick_conn(c);
    if (k == NULL) {
        return TC_ENOMEM;
    }
    struct evhttp_request *req = evhttp_request_new(on_response, f);
    if (req == NULL) {
        return TC_ENOMEM;
    }
    evhttp_request_set_error_cb(req, on_error);
    evhttp_request_set_header_cb(req, on_headers);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    if (evhttp_add_header(out, "Host", c->o->host_hdr) != 0 ||
        evhttp_add_header(out, "User-Agent", "tiercache/" TC_VERSION) != 0 ||
        evhttp_add_header(out, "Accept", "*/*") != 0) {
        evhttp_request_free(req);
        return TC_ENOMEM;
    }
    f->error_set = 0;
    f->headers_seen = 0;
    f->reused = k->served > 0;
    f->conn = k;
    f->req = req;
    k->inflight++;
    if (evhttp_make_request(k->evcon, req, EVHTTP_REQ_GET, f->uri) != 0) {
        /* evhttp either freed req or dropped it from its queue, and ran no
         * callback for it; which of the two is not knowable from here, so
         * it is not freed again (a leak in an out-of-memory path at worst). */
        if (f->state == FETCH_ACTIVE && f->req != NULL) {
            f->req = NULL;
            leave_conn(f, 0);
            return TC_EIO;
        }
    }
    return TC_OK;
}

static void set_deadline(struct fetch *f, const struct timeval *tv)
{
    event_add(f->timer, tv);
}

static void deliver(struct fetch *f)
{
    struct tc_origin_ctx *c = f->ctx;
    struct tc_origin_result *res = &f->res;
    if (res->status == TC_OK) {
        CTR_ADD(c, responses, 1);
        if (res->http_status >= 500) {
            CTR_ADD(c, status_5xx, 1);
        }
    } else {
        CTR_ADD(c, errors, 1);
        if (res->status == TC_ETIMEOUT) {
            CTR_ADD(c, timeouts, 1);
        } else if (res->status == TC_ETOOBIG) {
            CTR_ADD(c, too_big, 1);
        }
    }
    CTR_ADD(c, inflight, (uint64_t)-1);
    f->cb(res, f->arg);
    tc_buf_deinit(&res->body);
    event_free(f->timer);
    free(f);
}

/* A GET that died on a warm keep-alive connection before any answer byte
 * most likely met the origin's idle close: send it once more. */
static int should_retry(const struct fetch *f)
{
    return f->res.status == TC_EUNAVAIL && f->reused && !f->headers_seen && !f->retried &&
           !f->ctx->closing && tc_clock_ns() + 1000000u < f->deadline_ns;
}

static void process_done(struct tc_origin_ctx *c)
{
    /* Only what is queued now: fetches completed by the callbacks below
     * re-arm done_ev and go in the next round. */
    struct fetch *f = c->done_head;
    c->done_head = c->done_tail = NULL;
    while (f != NULL) {
        struct fetch *next = f->next;
        f->next = NULL;
        if (should_retry(f)) {
            f->retried = 1;
            CTR_ADD(c, retries, 1);
            memset(&f->res, 0, sizeof(f->res));
            f->state = FETCH_ACTIVE;
            link_active(f);
            uint64_t left = f->deadline_ns - tc_clock_ns();
            struct timeval tv = {(time_t)(left / 1000000000u),
                                 (suseconds_t)(left % 1000000000u) / 1000};
            set_deadline(f, &tv);
            enum tc_status st = send_fetch(f);
            if (st != TC_OK) {
                set_error(f, st, "origin %s: cannot send the request", c->o->url);
                finish(f);
            }
        } else {
            deliver(f);
        }
        f = next;
    }
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    process_done(arg);
}

enum tc_status tc_origin_fetch(struct tc_origin_ctx *c, const void *key, size_t key_len,
                               tc_origin_cb cb, void *arg)
{
    if (c->closing) {
        return TC_EUNAVAIL;
    }
    if (key == NULL || key_len == 0 || key_len > ORIGIN_MAX_KEY || cb == NULL) {
        return TC_EINVAL;
    }
    const struct tc_origin *o = c->o;
    char *enc = evhttp_uriencode(key, (ev_ssize_t)key_len, 0);
    if (enc == NULL) {
        return TC_ENOMEM;
    }
    size_t ulen = strlen(o->prefix) + 1 + strlen(enc) + (o->query ? 1 + strlen(o->query) : 0) + 1;
    struct fetch *f = calloc(1, sizeof(*f) + ulen);
    if (f == NULL) {
        free(enc);
        return TC_ENOMEM;
    }
    snprintf(f->uri, ulen, "%s/%s%s%s", o->prefix, enc, o->query ? "?" : "",
             o->query ? o->query : "");
    free(enc);
    f->ctx = c;
    f->cb = cb;
    f->arg = arg;
    f->timer = evtimer_new(c->base, on_deadline, f);
    if (f->timer == NULL) {
        free(f);
        return TC_ENOMEM;
    }
    f->deadline_ns = tc_clock_ns() + o->timeout_ms * 1000000u;
    link_active(f);
    set_deadline(f, c->deadline_tv);
    enum tc_status st = send_fetch(f);
    if (st != TC_OK) {
        unlink_active(f);
        event_free(f->timer); /* also deletes it */
        free(f);
        return st;
    }
    CTR_ADD(c, requests, 1);
    CTR_ADD(c, inflight, 1);
    return TC_OK;
}

enum tc_status tc_origin_ctx_init(struct tc_origin *o, struct event_base *base,
                                  struct tc_origin_ctx **out)
{
    struct tc_origin_ctx *c = calloc(1, sizeof(*c));
    *out = NULL;
    if (c == NULL) {
        return TC_ENOMEM;
    }
    c->o = o;
    c->base = base;
    c->conns = calloc(o->max_conns, sizeof(*c->conns));
    c->done_ev = event_new(base, -1, 0, done_cb, c);
    struct timeval tv = {(time_t)(o->timeout_ms / 1000),
                         (suseconds_t)(o->timeout_ms % 1000) * 1000};
    c->deadline_tv = event_base_init_common_timeout(base, &tv);
    if (c->conns == NULL || c->done_ev == NULL || c->deadline_tv == NULL) {
        if (c->done_ev != NULL) {
            event_free(c->done_ev);
        }
        free(c->conns);
        free(c);
        return TC_ENOMEM;
    }
    pthread_mutex_lock(&o->lock);
    c->reg_next = o->ctxs;
    if (o->ctxs != NULL) {
        o->ctxs->reg_prev = c;
    }
    o->ctxs = c;
    pthread_mutex_unlock(&o->lock);
    *out = c;
    return TC_OK;
}

void tc_origin_ctx_dispose(struct tc_origin_ctx *c)
{
    if (c == NULL) {
        return;
    }
    struct tc_origin *o = c->o;
    c->closing = 1;
    /* Fail what is in flight. evhttp_connection_free() below frees the
     * requests it still holds without calling back. */
    while (c->active != NULL) {
        struct fetch *f = c->active;
        f->req = NULL;
        set_error(f, TC_EUNAVAIL, "origin %s: shutting down", o->url);
        leave_conn(f, 0);
        finish(f);
    }
    for (unsigned i = 0; i < c->nconns; i++) {
        evhttp_connection_free(c->conns[i].evcon);
    }
    c->nconns = 0;
    /* Deliver everything, including what callbacks queue meanwhile (their
     * fetches fail at once: closing). */
    while (c->done_head != NULL) {
        process_done(c);
    }
    event_free(c->done_ev);
    pthread_mutex_lock(&o->lock);
    if (c->reg_prev != NULL) {
        c->reg_prev->reg_next = c->reg_next;
    } else {
        o->ctxs = c->reg_next;
    }
    if (c->reg_next != NULL) {
        c->reg_next->reg_prev = c->reg_prev;
    }
    stats_add_ctx(&o->retired, c);
    pthread_mutex_unlock(&o->lock);
    free(c->conns);
    free(c);
}
