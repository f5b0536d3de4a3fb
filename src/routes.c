/*
 * HTTP API v1: the route table and its handlers (STYLE R12).
 *
 *   GET|HEAD /cache/{key}   200 {"key","value","ttl"} + X-Cache, X-Cache-Tier | 404
 *   PUT      /cache/{key}   {"value": JSON, "ttl"|"timeout": s} or octet-stream + ?ttl=
 *   DELETE   /cache/{key}   200, idempotent
 *   GET      /health        200 ok | 200 degraded | 503
 *   GET      /stats         JSON
 *   GET      /metrics       Prometheus text
 *
 * Handlers return TC_OK once they have answered or will answer; any other
 * status is answered here through status_to_http(), the one place that maps
 * tiercache statuses to HTTP codes.
 */
#include "src/log.h"
#include "src/origin.h"
#include "src/server.h"
#include "tiers/tier_impl.h"

#include <errno.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define CACHE_PREFIX     "/cache/"
#define CACHE_PREFIX_LEN (sizeof(CACHE_PREFIX) - 1)

typedef enum tc_status (*route_fn)(struct tc_worker *w, struct tc_http_req *r);

struct route {
    const char *path;
    int prefix; /* path is a prefix (the rest is the key) */
    unsigned methods;
    const char *allow; /* for 405 */
    route_fn fn;
};

static enum tc_status api_cache(struct tc_worker *w, struct tc_http_req *r);
static enum tc_status api_health(struct tc_worker *w, struct tc_http_req *r);
static enum tc_status api_locks(struct tc_worker *w, struct tc_http_req *r);
static enum tc_status api_stats(struct tc_worker *w, struct tc_http_req *r);
static enum tc_status api_metrics(struct tc_worker *w, struct tc_http_req *r);

static const struct route routes[] = {
    {CACHE_PREFIX, 1, TC_HTTP_GET | TC_HTTP_HEAD | TC_HTTP_PUT | TC_HTTP_DELETE,
     "GET, HEAD, PUT, DELETE", api_cache},
    {"/locks/", 1, TC_HTTP_GET | TC_HTTP_HEAD | TC_HTTP_POST | TC_HTTP_DELETE,
     "GET, HEAD, POST, DELETE", api_locks},
    {"/health", 0, TC_HTTP_GET | TC_HTTP_HEAD, "GET, HEAD", api_health},
    {"/stats", 0, TC_HTTP_GET | TC_HTTP_HEAD, "GET, HEAD", api_stats},
    {"/metrics", 0, TC_HTTP_GET | TC_HTTP_HEAD, "GET, HEAD", api_metrics},
};

/* ---- responses ------------------------------------------------------------------- */

static void respond(struct tc_worker *w, struct tc_http_req *r, int status, const char *ctype,
                    const void *body, size_t len, const char *headers)
{
    tc_worker_count_status(w, status);
    tc_http_respond(r, status, ctype, body, len, headers);
}

static void respond_json(struct tc_worker *w, struct tc_http_req *r, int status, json_t *j,
                         const char *headers)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (s == NULL) {
        static const char oom[] = "{\"error\":\"unavailable\",\"message\":\"out of memory\"}";
        respond(w, r, 503, "application/json", oom, sizeof(oom) - 1, NULL);
        return;
    }
    respond(w, r, status, "application/json", s, strlen(s), headers);
    free(s);
}

/* {"error": code, "message": printf(...)} */
static void respond_error(struct tc_worker *w, struct tc_http_req *r, int status, const char *code,
                          const char *headers, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void respond_error(struct tc_worker *w, struct tc_http_req *r, int status, const char *code,
                          const char *headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(code));
    /* The message may quote client bytes: keep it valid UTF-8 for JSON. */
    json_t *m = json_string(msg);
    json_object_set_new(j, "message", m ? m : json_string("(message not valid UTF-8)"));
    tc_log(TC_LOG_DEBUG, "%d %s: %s", status, code, msg);
    respond_json(w, r, status, j, headers);
}

static int status_to_http(enum tc_status st, const char **code)
{
    switch (st) {
    case TC_ENOTFOUND:
        *code = "not_found";
        return 404;
    case TC_ETOOBIG:
        *code = "payload_too_large";
        return 413;
    case TC_EINVAL:
        *code = "bad_request";
        return 400;
    case TC_ETIMEOUT:
        *code = "timeout";
        return 504;
    default:
        *code = "unavailable";
        return 503;
    }
}

static void respond_status(struct tc_worker *w, struct tc_http_req *r, enum tc_status st)
{
    const char *code;
    int http = status_to_http(st, &code);
    respond_error(w, r, http, code, NULL, "%s", tc_strerror(st));
}

/* ---- routing ------------------------------------------------------------------------ */

void tc_routes_handle(struct tc_http_req *r, void *arg)
{
    struct tc_worker *w = arg;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *rt = &routes[i];
        size_t n = strlen(rt->path);
        int match = rt->prefix ? strncmp(r->path, rt->path, n) == 0
                               : (r->path_len == n && memcmp(r->path, rt->path, n) == 0);
        if (!match) {
            continue;
        }
        if (!(r->method & rt->methods)) {
            char allow[96];
            snprintf(allow, sizeof(allow), "Allow: %s\r\n", rt->allow);
            respond_error(w, r, 405, "method_not_allowed", allow,
                          "%s is not allowed on %s (allowed: %s)", r->method_name, rt->path,
                          rt->allow);
            return;
        }
        enum tc_status st = rt->fn(w, r);
        if (st != TC_OK) {
            respond_status(w, r, st);
        }
        return;
    }
    if (r->path_len + 1 == CACHE_PREFIX_LEN && memcmp(r->path, CACHE_PREFIX, r->path_len) == 0) {
        respond_error(w, r, 400, "bad_key", NULL, "the key is empty: use /cache/{key}");
        return;
    }
    respond_error(
        w, r, 404, "not_found", NULL,
        "no such path (the API is /cache/{key}, /locks/{name}, /health, /stats, /metrics)");
}

/* ---- /cache/{key} ---------------------------------------------------------------------- */

/* How a GET treats a miss (see README "Dogpile protection"). */
enum {
    MODE_PLAIN = 0,  /* 404 */
    MODE_LEASE = 1,  /* X-Cache-Lease: the first caller gets a lease, the others wait */
    MODE_ORIGIN = 2, /* --origin: one caller fetches, the others wait for its answer */
};

struct cache_call {
    struct tc_worker *w;
    struct tc_http_req *r;
    struct tc_stack_op *op; /* the current operation; a stale value stays in it */
    int mode;
    int parked;                    /* was woken at least once */
    int last_try;                  /* lease mode: the try at the end of the wait was made */
    uint64_t lock_ms;              /* the lease a leader takes */
    uint64_t deadline_ms;          /* waiting ends */
    char token[TC_LOCK_TOKEN_MAX]; /* PUT: the lease it presents; leader: the lease it holds */
    size_t lname_len;
    uint8_t *lname;               /* "k:" + key: the lock of the key (lname_buf, or allocated) */
    struct tc_buf json;           /* a hit's body, rendered when the stack answered */
    const struct tc_buf *json_of; /* the value json was rendered from (op->value) */
    /* Not cleared for each request: set before use. */
    struct tc_kl_waiter kw;
    uint8_t lname_buf[66];
};

/* Printable ASCII other than '"' and '\\' is its own JSON string body: the
 * common case of keys and values needs no trip through jansson. */
static int plain_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
            return 0;
        }
    }
    return 1;
}

/* Appends s as a JSON string; TC_EINVAL if it is not valid UTF-8. */
static enum tc_status append_json_string(struct tc_buf *out, const char *s, size_t n)
{
    if (plain_ascii(s, n)) {
        enum tc_status st = tc_buf_append(out, "\"", 1);
        if (st == TC_OK) {
            st = tc_buf_append(out, s, n);
        }
        return st == TC_OK ? tc_buf_append(out, "\"", 1) : st;
    }
    json_t *j = json_stringn(n ? s : "", n);
    if (j == NULL) {
        return TC_EINVAL;
    }
    char *text = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    if (text == NULL) {
        return TC_ENOMEM;
    }
    enum tc_status st = tc_buf_append(out, text, strlen(text));
    free(text);
    return st;
}

static int valid_utf8(const char *s, size_t n)
{
    if (plain_ascii(s, n)) {
        return 1;
    }
    json_t *j = json_stringn(n ? s : "", n);
    json_decref(j);
    return j != NULL;
}

static const char *query_param(struct tc_http_req *r, const char *name, struct evkeyvalq *q)
{
    if (r->query == NULL) {
        return NULL;
    }
    if (TAILQ_EMPTY(q) && evhttp_parse_query_str(r->query, q) != 0) {
        return NULL;
    }
    return evhttp_find_header(q, name);
}

/* Seconds (finite, >= 0) to whole ms. A positive time is at least 1 ms: a
 * TTL of 0.0004 s rounded to 0 would mean "never expires", the opposite of
 * what was asked (README "TTLs"). */
static uint64_t secs_to_ms(double secs)
{
    uint64_t ms = (uint64_t)llround(secs * 1000.0);
    return ms == 0 && secs > 0 ? 1 : ms;
}

/* Parses a TTL in seconds (integer or fraction) into ms within the limits. */
static int parse_ttl(struct tc_worker *w, struct tc_http_req *r, json_t *v, const char *text,
                     const char *what, uint64_t *ttl_ms)
{
    double secs;
    if (v != NULL) {
        if (!json_is_number(v)) {
            respond_error(w, r, 400, "bad_ttl", NULL, "%s must be a number of seconds", what);
            return -1;
        }
        secs = json_number_value(v);
    } else {
        char *end;
        errno = 0;
        secs = strtod(text, &end);
        if (text[0] == '\0' || *end != '\0') {
            respond_error(w, r, 400, "bad_ttl", NULL, "%s must be a number of seconds, not '%s'",
                          what, text);
            return -1;
        }
        if (errno == ERANGE && secs >= 0 && secs < 1) {
            /* Underflow (1e-400): positive, smaller than a double holds. */
            secs = DBL_MIN;
        }
    }
    if (!isfinite(secs) || secs < 0) {
        respond_error(w, r, 400, "bad_ttl", NULL, "%s must be 0 (never expires) or positive", what);
        return -1;
    }
    double max = (double)w->srv->conf->max_ttl_ms / 1000.0;
    if (secs > max) {
        respond_error(w, r, 400, "bad_ttl", NULL, "%s %.17g is above the largest allowed, %.0f s",
                      what, secs, max);
        return -1;
    }
    *ttl_ms = secs_to_ms(secs);
    return 0;
}

static void call_free(struct cache_call *cc)
{
    if (cc->op != NULL) {
        tc_stack_op_release(cc->op);
    }
    tc_buf_deinit(&cc->json);
    if (cc->lname != cc->lname_buf) {
        free(cc->lname);
    }
    free(cc);
}

static struct tc_keylock *kl_of(const struct cache_call *cc)
{
    return cc->w->srv->keylock;
}

static const char *tier_label(int i)
{
    static const char *const labels[] = {"l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8"};
    return i >= 0 && i < 8 ? labels[i] : "l?";
}

/* Builds the JSON body of a hit into out: {"key":..,"value":..,["encoding":"base64",]"ttl":..} */
static enum tc_status render_value(const uint8_t *key, size_t key_len, const struct tc_buf *value,
                                   const struct tc_item_hdr *hdr, uint64_t now_ms,
                                   struct tc_buf *out)
{
    enum tc_status st = tc_buf_append(out, "{\"key\":", 7);
    if (st == TC_OK) {
        st = append_json_string(out, (const char *)key, key_len);
    }
    if (st == TC_OK) {
        st = tc_buf_append(out, ",\"value\":", 9);
    }
    if (st != TC_OK) {
        return st;
    }
    switch (hdr->encoding) {
    case TC_ENC_JSON:
        /* Stored as serialized JSON: spliced back as the same value. */
        st = tc_buf_append(out, value->data, value->len);
        break;
    case TC_ENC_STRING:
        st = append_json_string(out, (const char *)value->data, value->len);
        if (st == TC_EINVAL) {
            return TC_ECORRUPT; /* not UTF-8: not what a PUT stores */
        }
        break;
    default: {
        size_t n = 4 * ((value->len + 2) / 3);
        size_t at = out->len;
        st = tc_buf_reserve(out, at + n + 32);
        if (st == TC_OK) {
            out->data[at] = '"';
            EVP_EncodeBlock(out->data + at + 1, value->data, (int)value->len);
            out->len = at + 1 + n;
            st = tc_buf_append(out, "\",\"encoding\":\"base64\"", 21);
        }
        break;
    }
    }
    if (st != TC_OK) {
        return st;
    }
    char ttl[48];
    int n;
    uint64_t fresh = tc_item_fresh_until(hdr);
    if (fresh == 0) {
        n = snprintf(ttl, sizeof(ttl), ",\"ttl\":null}");
    } else if (fresh <= now_ms) {
        n = snprintf(ttl, sizeof(ttl), ",\"ttl\":0,\"stale\":true}");
    } else {
        uint64_t left = fresh - now_ms;
        n = snprintf(ttl, sizeof(ttl), ",\"ttl\":%llu}", (unsigned long long)((left + 999) / 1000));
    }
    return tc_buf_append(out, ttl, (size_t)n);
}

/* Whether the client takes values as octets only (Accept), not as JSON. */
static int wants_raw(const struct tc_http_req *r)
{
    const char *accept = tc_http_header(r, "accept");
    return accept != NULL && strstr(accept, "application/octet-stream") != NULL &&
           strstr(accept, "application/json") == NULL;
}

/*
 * Renders a hit's body into cc->json while the stack's callback runs, so
 * that a value that does not render as its encoding says (a string that is
 * not UTF-8) is rejected there (tc_stack_get_reject) and the lookup goes on
 * to the next tier: a corrupt record is a miss, never a 5xx. Rendering once,
 * here, costs what rendering at answer time did.
 * @return 1 when the value can be answered, 0 when it was rejected.
 */
static int prerender(struct cache_call *cc, struct tc_stack_op *op)
{
    cc->json.len = 0;
    cc->json_of = NULL;
    if (wants_raw(cc->r)) {
        return 1; /* octets need no rendering */
    }
    enum tc_status st =
        render_value(cc->lname + 2, cc->lname_len - 2, &op->value, &op->hdr, op->now_ms, &cc->json);
    if (st == TC_OK) {
        cc->json_of = &op->value;
    }
    if (st == TC_ECORRUPT) {
        tc_log(TC_LOG_NOTICE, "tier l%d returned a value that does not render as %s: a miss",
               op->hit_tier + 1, tc_item_encoding_name(op->hdr.encoding));
        tc_stack_get_reject(op);
        return 0;
    }
    return 1; /* TC_ENOMEM leaves json empty: respond_value renders again and says 503 */
}

/* Answers 200 with a value: raw if the client accepts only octets, else JSON. */
static void respond_value(struct cache_call *cc, const struct tc_buf *value,
                          const struct tc_item_hdr *hdr, uint64_t now_ms, const char *headers)
{
    struct tc_worker *w = cc->w;
    struct tc_http_req *r = cc->r;
    if (cc->parked) {
        tc_keylock_count(kl_of(cc), TC_KL_waiters_served);
    }
    if (wants_raw(r)) {
        respond(w, r, 200, "application/octet-stream", value->data, value->len, headers);
        return;
    }
    struct tc_buf body = TC_BUF_INIT;
    enum tc_status st = TC_OK;
    if (cc->json_of == value) {
        body = cc->json; /* rendered by prerender() */
        cc->json = (struct tc_buf)TC_BUF_INIT;
        cc->json_of = NULL;
    } else {
        st = render_value(cc->lname + 2, cc->lname_len - 2, value, hdr, now_ms, &body);
    }
    if (st == TC_OK) {
        respond(w, r, 200, "application/json", body.data, body.len, headers);
    } else {
        tc_log(TC_LOG_WARN, "cannot render a value: %s", tc_strerror(st));
        respond_status(w, r, st == TC_ECORRUPT ? TC_EIO : st);
    }
    tc_buf_deinit(&body);
}

/* Answers with the value in op: fresh (HIT) or within grace (STALE). */
static void answer_hit(struct cache_call *cc, struct tc_stack_op *op, int stale)
{
    char headers[128];
    if (stale) {
        uint64_t age = op->now_ms > op->hdr.created_ms ? op->now_ms - op->hdr.created_ms : 0;
        snprintf(headers, sizeof(headers), "X-Cache: STALE\r\nX-Cache-Tier: %s\r\nAge: %llu\r\n",
                 tier_label(op->hit_tier), (unsigned long long)(age / 1000));
        tc_keylock_count(kl_of(cc), TC_KL_stale_served);
    } else {
        snprintf(headers, sizeof(headers), "X-Cache: HIT\r\nX-Cache-Tier: %s\r\n",
                 tier_label(op->hit_tier));
    }
    respond_value(cc, &op->value, &op->hdr, op->now_ms, headers);
}

struct fill;
static void answer_fill(struct cache_call *cc, const struct fill *f, int leader);
static void set_expiry(const struct tc_conf *conf, struct tc_item_hdr *hdr, uint64_t now_ms,
                       uint64_t ttl_ms);
static void get_done(struct tc_stack_op *op);
static void recheck_done(struct tc_stack_op *op);
static void miss_lock_cb(struct tc_kl_waiter *kw);
static void stale_lock_cb(struct tc_kl_waiter *kw);
static void lead(struct cache_call *cc);

static void start_lock(struct cache_call *cc, uint64_t deadline_ms,
                       void (*cb)(struct tc_kl_waiter *kw))
{
    cc->kw.ttl_ms = cc->lock_ms;
    cc->kw.deadline_ms = deadline_ms;
    cc->kw.cb = cb;
    cc->kw.arg = cc;
    tc_keylock_acquire(cc->w->home, &cc->kw, cc->lname, cc->lname_len);
}

/* Reads the key again through the stack (after a wait, or as a new leader). */
static void reread(struct cache_call *cc, tc_stack_cb cb)
{
    struct tc_stack_op *op =
        tc_stack_op_create(cc->w->sc, cc->op->key, cc->op->key_len, tc_now_ms());
    if (op == NULL) {
        respond_status(cc->w, cc->r, TC_ENOMEM);
        call_free(cc);
        return;
    }
    tc_stack_op_release(cc->op);
    cc->op = op;
    cc->json_of = NULL; /* rendered from the op just released */
    tc_stack_get(op, cb, cc);
}

static void grant_lease(struct cache_call *cc)
{
    char headers[128];
    snprintf(headers, sizeof(headers), "X-Cache: MISS\r\nX-Lease-Token: %s\r\n", cc->token);
    tc_keylock_count(kl_of(cc), TC_KL_leases_granted);
    respond_error(cc->w, cc->r, 404, "not_found", headers,
                  "no value for this key: you hold its lease for %llu ms; PUT the value with "
                  "header X-Lease-Token",
                  (unsigned long long)cc->lock_ms);
}

static void get_done(struct tc_stack_op *op)
{
    struct cache_call *cc = op->arg;
    struct tc_worker *w = cc->w;
    struct tc_http_req *r = cc->r;
    if (op->status == TC_OK) {
        if (!prerender(cc, op)) {
            return; /* the stack goes on and calls back */
        }
        uint64_t fresh = tc_item_fresh_until(&op->hdr);
        if (fresh == 0 || op->now_ms < fresh) {
            answer_hit(cc, op, 0);
            call_free(cc);
            return;
        }
        /* Within grace: one caller refreshes it, everyone else gets it stale. */
        start_lock(cc, 0, stale_lock_cb);
        return;
    }
    if (op->status != TC_ENOTFOUND) {
        respond_status(w, r, op->status);
        call_free(cc);
        return;
    }
    if (cc->mode == MODE_PLAIN) {
        respond_error(w, r, 404, "not_found", "X-Cache: MISS\r\n", "no value for this key");
        call_free(cc);
        return;
    }
    start_lock(cc, cc->deadline_ms, miss_lock_cb);
}

static void stale_lock_cb(struct tc_kl_waiter *kw)
{
    struct cache_call *cc = kw->arg;
    if (kw->outcome == TC_KL_ACQUIRED) {
        snprintf(cc->token, sizeof(cc->token), "%s", kw->token);
        lead(cc);
        return;
    }
    tc_kl_result_unref(kw->result);
    answer_hit(cc, cc->op, 1);
    call_free(cc);
}

static void miss_lock_cb(struct tc_kl_waiter *kw)
{
    struct cache_call *cc = kw->arg;
    struct tc_worker *w = cc->w;
    switch (kw->outcome) {
    case TC_KL_ACQUIRED:
        /* Someone may have stored the value between our miss and now. */
        snprintf(cc->token, sizeof(cc->token), "%s", kw->token);
        reread(cc, recheck_done);
        return;
    case TC_KL_WOKEN:
        cc->parked = 1;
        if (kw->result != NULL) {
            /* The leader's answer, whatever it was (even one not cached). */
            struct tc_kl_result *res = kw->result;
            kw->result = NULL;
            answer_fill(cc, (const struct fill *)res, 0);
            tc_kl_result_unref(res);
            break;
        }
        reread(cc, get_done);
        return;
    case TC_KL_TIMEOUT:
        if (cc->mode == MODE_LEASE && !cc->last_try) {
            /* The end of our wait is about when the lease we waited on ends:
             * one more try, so that one waiter takes over an abandoned lease. */
            cc->last_try = 1;
            start_lock(cc, 0, miss_lock_cb);
            return;
        }
        if (cc->mode == MODE_LEASE) {
            respond_error(w, cc->r, 404, "lease_timeout", "X-Cache: MISS\r\n",
                          "no value arrived within %llu ms and another client holds the lease "
                          "(for %llu ms more)",
                          (unsigned long long)cc->lock_ms, (unsigned long long)kw->remaining_ms);
        } else {
            respond_error(w, cc->r, 504, "origin_timeout", NULL,
                          "waited %llu ms for another request's origin fetch of this key",
                          (unsigned long long)cc->lock_ms);
        }
        break;
    default:
        respond_status(w, cc->r, kw->status == TC_OK ? TC_EUNAVAIL : kw->status);
        break;
    }
    call_free(cc);
}

/* A new leader: is the value there after all? */
static void recheck_done(struct tc_stack_op *op)
{
    struct cache_call *cc = op->arg;
    if (op->status == TC_OK) {
        if (!prerender(cc, op)) {
            return; /* the stack goes on and calls back */
        }
        uint64_t fresh = tc_item_fresh_until(&op->hdr);
        if (fresh == 0 || op->now_ms < fresh) {
            tc_keylock_release(cc->w->home, cc->lname, cc->lname_len, cc->token, NULL, NULL, NULL);
            answer_hit(cc, op, 0);
            call_free(cc);
            return;
        }
    }
    lead(cc);
}

static int ctype_is(const char *ct, const char *want);

/* ---- read-through: one request fetches from the origin, every waiter gets its answer ---- */

/* The leader's answer, shared with the waiters it releases. */
struct fill {
    struct tc_kl_result base; /* first: the keylock hands this to waiters */
    struct tc_worker *w;
    struct cache_call *cc; /* the leader's request; NULL: refreshing in the background */
    int http_status;       /* 200 with value, else an error answer */
    const char *code;      /* error code */
    char message[320];
    struct tc_item_hdr hdr;
    struct tc_buf value;
    struct tc_stack_op *op; /* storing it */
    char token[TC_LOCK_TOKEN_MAX];
    size_t lname_len;
    uint8_t lname[2 + TC_KEY_MAX];
};

static void fill_free(struct tc_kl_result *b)
{
    struct fill *f = (struct fill *)b;
    tc_buf_deinit(&f->value);
    free(f);
}

/* Answers a request with a leader's result (the leader's own, or a waiter's). */
static void answer_fill(struct cache_call *cc, const struct fill *f, int leader)
{
    if (f->http_status == 200) {
        respond_value(cc, &f->value, &f->hdr, tc_now_ms(),
                      leader ? "X-Cache: MISS\r\nX-Cache-Origin: fetched\r\n"
                             : "X-Cache: MISS\r\nX-Cache-Origin: coalesced\r\n");
    } else {
        respond_error(cc->w, cc->r, f->http_status, f->code, "X-Cache: MISS\r\n", "%s", f->message);
    }
}

static void fill_finish(struct fill *f)
{
    struct tc_worker *w = f->w;
    if (f->cc != NULL) {
        answer_fill(f->cc, f, 1);
        call_free(f->cc);
        f->cc = NULL;
    }
    /* The waiters here get f itself; other processes read the stored value
     * (or, if it could not be stored, fetch again, one at a time). */
    tc_keylock_release(w->home, f->lname, f->lname_len, f->token, &f->base, NULL, NULL);
}

static void fill_stored(struct tc_stack_op *op)
{
    struct fill *f = op->arg;
    if (op->status != TC_OK) {
        tc_log(TC_LOG_WARN, "storing an origin answer failed: %s", tc_strerror(op->status));
    }
    tc_stack_op_release(op);
    f->op = NULL;
    fill_finish(f);
}

/* The encoding a value from the origin is stored with. */
static uint8_t origin_encoding(const char *ctype, const struct tc_buf *body)
{
    if (ctype_is(ctype, "application/json")) {
        json_t *j = json_loadb((const char *)body->data, body->len, JSON_DECODE_ANY, NULL);
        if (j != NULL) {
            json_decref(j);
            return TC_ENC_JSON; /* valid JSON text: spliced back as the same value */
        }
    }
    if ((ctype[0] == '\0' || strncasecmp(ctype, "text/", 5) == 0) &&
        valid_utf8((const char *)body->data, body->len)) {
        return TC_ENC_STRING;
    }
    return TC_ENC_BINARY;
}

static void origin_done(struct tc_origin_result *res, void *arg)
{
    struct fill *f = arg;
    struct tc_worker *w = f->w;
    const struct tc_conf *conf = w->srv->conf;
    uint64_t now = tc_now_ms();
    if (res->status == TC_OK && res->http_status == 200) {
        tc_origin_result_take_body(res, &f->value);
        f->http_status = 200;
        f->hdr.encoding = origin_encoding(res->content_type, &f->value);
        uint64_t ttl = res->has_ttl ? res->ttl_ms : conf->default_ttl_ms;
        if (ttl > conf->max_ttl_ms) {
            ttl = conf->max_ttl_ms;
        }
        set_expiry(conf, &f->hdr, now, ttl);
        if (res->cacheable && f->value.len <= conf->max_value &&
            (f->op = tc_stack_op_create(w->sc, f->lname + 2, f->lname_len - 2, now)) != NULL) {
            f->op->hdr = f->hdr;
            tc_buf_set(&f->op->value, f->value.data, f->value.len);
            tc_stack_set(f->op, fill_stored, f);
            return;
        }
        fill_finish(f);
        return;
    }
    if (res->status == TC_OK && (res->http_status == 404 || res->http_status == 410)) {
        f->http_status = 404;
        f->code = "not_found";
        snprintf(f->message, sizeof(f->message), "no value for this key (the origin answered %d)",
                 res->http_status);
    } else {
        tc_keylock_count(w->srv->keylock, TC_KL_origin_errors);
        if (res->status == TC_ETIMEOUT) {
            f->http_status = 504;
            f->code = "origin_timeout";
            snprintf(f->message, sizeof(f->message), "the origin did not answer within %llu ms",
                     (unsigned long long)conf->origin_timeout_ms);
        } else if (res->status == TC_OK) {
            f->http_status = 502;
            f->code = "origin_error";
            snprintf(f->message, sizeof(f->message), "the origin answered %d%s%s", res->http_status,
                     res->error[0] ? ": " : "", res->error);
        } else {
            f->http_status = 502;
            f->code = res->status == TC_ETOOBIG ? "origin_too_big" : "origin_unreachable";
            snprintf(f->message, sizeof(f->message), "origin fetch failed: %s",
                     res->error[0] ? res->error : tc_strerror(res->status));
        }
    }
    fill_finish(f);
}

/* Fetches cc's key from the origin as its leader (holding cc->token). With
 * a stale value in hand, the client gets that now and the fetch goes on
 * without it. */
static void fetch_origin(struct cache_call *cc, int stale)
{
    struct tc_worker *w = cc->w;
    struct fill *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        tc_keylock_release(w->home, cc->lname, cc->lname_len, cc->token, NULL, NULL, NULL);
        respond_status(w, cc->r, TC_ENOMEM);
        call_free(cc);
        return;
    }
    atomic_init(&f->base.refs, 1);
    f->base.free = fill_free;
    f->w = w;
    memcpy(f->token, cc->token, sizeof(f->token));
    memcpy(f->lname, cc->lname, cc->lname_len);
    f->lname_len = cc->lname_len;
    if (stale) {
        answer_hit(cc, cc->op, 1);
        call_free(cc);
    } else {
        f->cc = cc;
    }
    tc_keylock_count(w->srv->keylock, TC_KL_origin_fetches);
    enum tc_status st = tc_origin_fetch(w->origin, f->lname + 2, f->lname_len - 2, origin_done, f);
    if (st != TC_OK) {
        struct tc_origin_result res;
        memset(&res, 0, sizeof(res));
        res.status = st;
        snprintf(res.error, sizeof(res.error), "%s", tc_strerror(st));
        origin_done(&res, f);
    }
}

/* This request holds the key's lock (cc->token) and the value is missing or
 * stale: fetch it from the origin, or hand the lease to the client. */
static void lead(struct cache_call *cc)
{
    int stale = cc->op->status == TC_OK;
    if (cc->mode == MODE_ORIGIN) {
        fetch_origin(cc, stale);
        return;
    }
    grant_lease(cc);
    call_free(cc);
}

static void put_release_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct cache_call *cc = arg;
    (void)remaining;
    (void)token;
    if (st == TC_OK) {
        tc_keylock_count(kl_of(cc), TC_KL_leases_fulfilled);
    }
    static const char ok[] = "{\"ok\":true}";
    respond(cc->w, cc->r, 200, "application/json", ok, sizeof(ok) - 1,
            st == TC_OK ? "X-Lease: released\r\n" : "X-Lease: expired\r\n");
    call_free(cc);
}

static void write_done(struct tc_stack_op *op)
{
    struct cache_call *cc = op->arg;
    struct tc_worker *w = cc->w;
    struct tc_http_req *r = cc->r;
    if (op->_kind == TC_STACK_SET && cc->token[0] != '\0') {
        /* A leaseholder's PUT: release the lease so that waiters read the
         * value (or, if storing failed, one of them takes the lease over). */
        if (op->status == TC_OK) {
            tc_keylock_release(w->home, cc->lname, cc->lname_len, cc->token, NULL, put_release_done,
                               cc);
            return;
        }
        tc_keylock_release(w->home, cc->lname, cc->lname_len, cc->token, NULL, NULL, NULL);
    } else if (op->_kind == TC_STACK_SET && op->status == TC_OK) {
        tc_keylock_poke(w->home, cc->lname, cc->lname_len); /* waiters may have it now */
    }
    if (op->status == TC_OK) {
        static const char ok[] = "{\"ok\":true}";
        respond(w, r, 200, "application/json", ok, sizeof(ok) - 1, NULL);
    } else if (op->status == TC_ETOOBIG) {
        respond_error(w, r, 413, "payload_too_large", NULL,
                      "the value (%zu bytes) is larger than any tier accepts", op->value.len);
    } else {
        char failed[128];
        size_t used = 0;
        failed[0] = '\0';
        for (size_t i = 0; i < TC_STACK_MAX_TIERS && used < sizeof(failed); i++) {
            if (op->failed_mask & (1u << i)) {
                int n = snprintf(failed + used, sizeof(failed) - used, "%s%s", used ? ", " : "",
                                 tier_label((int)i));
                used += n > 0 ? (size_t)n : 0;
            }
        }
        respond_error(w, r, 503, "unavailable", NULL, "%s failed on tiers: %s",
                      op->_kind == TC_STACK_SET ? "storing" : "deleting", failed);
    }
    call_free(cc);
}

static void put_check_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct cache_call *cc = arg;
    (void)remaining;
    if (st == TC_OK && strcmp(token, cc->token) == 0) {
        tc_stack_set(cc->op, write_done, cc);
        return;
    }
    if (st == TC_OK || st == TC_ENOTFOUND) {
        respond_error(cc->w, cc->r, 409, "not_owner", NULL,
                      "X-Lease-Token does not hold the lease of this key (it expired, was "
                      "released, or was never granted): nothing stored");
    } else {
        respond_status(cc->w, cc->r, st);
    }
    call_free(cc);
}

/* Content-Type without parameters, lower case compare. */
static int ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0) {
        return 0;
    }
    ct += n;
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    return *ct == '\0' || *ct == ';';
}

/* created and E for a write of ttl_ms (0 = never expires) at now_ms. */
static void set_expiry(const struct tc_conf *conf, struct tc_item_hdr *hdr, uint64_t now_ms,
                       uint64_t ttl_ms)
{
    hdr->created_ms = now_ms;
    hdr->expire_ms = ttl_ms == 0 ? 0 : now_ms + ttl_ms;
    if (ttl_ms != 0 && conf->grace_ms > 0) {
        /* Every tier keeps it through the grace; readers see it fresh until
         * the TTL and stale after. */
        hdr->flags |= TC_ITEM_F_GRACE;
        hdr->grace_s = (uint16_t)((conf->grace_ms + 999) / 1000);
        hdr->expire_ms += (uint64_t)hdr->grace_s * 1000;
    }
}

static enum tc_status cache_put(struct cache_call *cc, struct tc_stack_op *op, struct evkeyvalq *q)
{
    struct tc_worker *w = cc->w;
    struct tc_http_req *r = cc->r;
    const struct tc_conf *conf = w->srv->conf;
    const char *ct = tc_http_header(r, "content-type");
    uint64_t ttl_ms = conf->default_ttl_ms;
    const char *qttl = query_param(r, "ttl", q);

    if (qttl != NULL && parse_ttl(w, r, NULL, qttl, "ttl", &ttl_ms) != 0) {
        return TC_EEXIST; /* answered */
    }
    if (ct != NULL && ctype_is(ct, "application/octet-stream")) {
        if (r->body.len > conf->max_value) {
            respond_error(w, r, 413, "payload_too_large", NULL,
                          "the value is %zu bytes; the largest accepted is %llu", r->body.len,
                          (unsigned long long)conf->max_value);
            return TC_EEXIST;
        }
        /* The body buffer moves into the op: no copy of large values. */
        tc_buf_deinit(&op->value);
        op->value = r->body;
        tc_buf_init(&r->body);
        op->hdr.encoding = TC_ENC_BINARY;
    } else if (ct == NULL || ctype_is(ct, "application/json")) {
        json_error_t err;
        json_t *doc = json_loadb((const char *)r->body.data, r->body.len,
                                 JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
        if (doc == NULL) {
            respond_error(w, r, 400, "bad_json", NULL,
                          "malformed JSON body: %s (line %d, column %d)", err.text, err.line,
                          err.column);
            return TC_EEXIST;
        }
        json_t *value = json_is_object(doc) ? json_object_get(doc, "value") : NULL;
        if (!json_is_object(doc)) {
            json_decref(doc);
            respond_error(w, r, 400, "bad_json", NULL,
                          "the body must be a JSON object like {\"value\": ..., \"ttl\": 60}");
            return TC_EEXIST;
        }
        if (value == NULL) {
            json_decref(doc);
            respond_error(w, r, 400, "missing_value", NULL,
                          "the JSON body has no \"value\" member");
            return TC_EEXIST;
        }
        json_t *ttl = json_object_get(doc, "ttl");
        json_t *timeout = json_object_get(doc, "timeout");
        if (ttl != NULL && timeout != NULL) {
            json_decref(doc);
            respond_error(w, r, 400, "bad_ttl", NULL,
                          "give \"ttl\" or its alias \"timeout\", not both");
            return TC_EEXIST;
        }
        json_t *t = ttl ? ttl : timeout;
        if (t != NULL && !json_is_null(t) &&
            parse_ttl(w, r, t, NULL, ttl ? "ttl" : "timeout", &ttl_ms) != 0) {
            json_decref(doc);
            return TC_EEXIST;
        }
        enum tc_status st;
        if (json_is_string(value)) {
            op->hdr.encoding = TC_ENC_STRING;
            st = tc_buf_set(&op->value, json_string_value(value), json_string_length(value));
        } else {
            op->hdr.encoding = TC_ENC_JSON;
            char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
            st = text ? tc_buf_set(&op->value, text, strlen(text)) : TC_ENOMEM;
            free(text);
        }
        json_decref(doc);
        if (st != TC_OK) {
            return st;
        }
        if (op->value.len > conf->max_value) {
            respond_error(w, r, 413, "payload_too_large", NULL,
                          "the value is %zu bytes; the largest accepted is %llu", op->value.len,
                          (unsigned long long)conf->max_value);
            return TC_EEXIST;
        }
    } else {
        respond_error(w, r, 415, "unsupported_media_type", NULL,
                      "Content-Type '%s' is not accepted (use application/json or "
                      "application/octet-stream)",
                      ct);
        return TC_EEXIST;
    }
    set_expiry(conf, &op->hdr, op->now_ms, ttl_ms);
    const char *token = tc_http_header(r, "x-lease-token");
    if (token != NULL) {
        size_t n = strlen(token);
        if (n == 0 || n >= TC_LOCK_TOKEN_MAX) {
            respond_error(w, r, 400, "bad_token", NULL,
                          "X-Lease-Token must be the 1 to %u characters a lease GET returned",
                          TC_LOCK_TOKEN_MAX - 1);
            return TC_EEXIST;
        }
        memcpy(cc->token, token, n + 1);
        tc_keylock_peek(w->home, cc->lname, cc->lname_len, put_check_done, cc);
        return TC_OK;
    }
    tc_stack_set(op, write_done, cc);
    return TC_OK;
}

/*
 * Percent-decodes the key or lock name at raw (@p what: "key", "lock name")
 * into *name / *len, with *to_free the copy to free (NULL when raw had no
 * escapes). Returns 0, or -1 when it answered the request (bad name) or
 * *st holds an error to answer.
 */
static int decode_name(struct tc_worker *w, struct tc_http_req *r, const char *raw,
                       const char *what, const char *usage, char **to_free, const char **name,
                       size_t *len, enum tc_status *st)
{
    *to_free = NULL;
    *st = TC_OK;
    if (raw[0] == '\0') {
        respond_error(w, r, 400, "bad_key", NULL, "the %s is empty: use %s", what, usage);
        return -1;
    }
    if (strlen(raw) > TC_KEY_MAX * 3) {
        respond_error(w, r, 414, "key_too_long", NULL, "the %s is longer than %u bytes", what,
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
        respond_error(w, r, n ? 414 : 400, n ? "key_too_long" : "bad_key", NULL,
                      "the %s must be 1 to %u bytes after percent-decoding (it is %zu)", what,
                      TC_KEY_MAX, n);
        free(*to_free);
        *to_free = NULL;
        return -1;
    }
    if (!valid_utf8(k, n)) {
        free(*to_free);
        *to_free = NULL;
        respond_error(w, r, 400, "bad_key", NULL,
                      "the %s must be valid UTF-8 after percent-decoding", what);
        return -1;
    }
    *name = k;
    *len = n;
    return 0;
}

/* A positive whole number of ms from a header or query value; 0 if bad. */
static uint64_t parse_ms(const char *s, uint64_t max)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return 0;
    }
    unsigned long long v = strtoull(s, &end, 10);
    return *end == '\0' && v >= 1 && v <= max ? (uint64_t)v : 0;
}

#define LEASE_MAX_MS 3600000u

static enum tc_status api_cache(struct tc_worker *w, struct tc_http_req *r)
{
    const struct tc_conf *conf = w->srv->conf;
    char *decoded;
    const char *key;
    size_t klen;
    enum tc_status st;
    if (decode_name(w, r, r->path + CACHE_PREFIX_LEN, "key", "/cache/{key}", &decoded, &key, &klen,
                    &st) != 0) {
        return st;
    }
    struct cache_call *cc = malloc(sizeof(*cc));
    uint64_t now = tc_now_ms();
    struct tc_stack_op *op = cc ? tc_stack_op_create(w->sc, key, klen, now) : NULL;
    if (op == NULL) {
        free(decoded);
        free(cc);
        return TC_ENOMEM;
    }
    memset(cc, 0, offsetof(struct cache_call, kw));
    cc->w = w;
    cc->r = r;
    cc->op = op;
    cc->lname = klen + 2 <= sizeof(cc->lname_buf) ? cc->lname_buf : malloc(klen + 2);
    free(decoded);
    if (cc->lname == NULL) {
        cc->lname = cc->lname_buf;
        call_free(cc);
        return TC_ENOMEM;
    }
    cc->lname[0] = 'k';
    cc->lname[1] = ':';
    memcpy(cc->lname + 2, op->key, klen);
    cc->lname_len = klen + 2;
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    st = TC_OK;
    switch (r->method) {
    case TC_HTTP_GET:
    case TC_HTTP_HEAD: {
        const char *lease = tc_http_header(r, "x-cache-lease");
        if (lease == NULL) {
            lease = query_param(r, "lease", &q);
        }
        if (lease != NULL) {
            cc->mode = MODE_LEASE;
            cc->lock_ms = parse_ms(lease, LEASE_MAX_MS);
            if (cc->lock_ms == 0) {
                respond_error(w, r, 400, "bad_lease", NULL,
                              "a lease is a whole number of ms from 1 to %u, not '%s'",
                              LEASE_MAX_MS, lease);
                call_free(cc);
                break;
            }
        } else if (conf->origin[0] != '\0') {
            cc->mode = MODE_ORIGIN;
            cc->lock_ms = conf->origin_timeout_ms + 1000;
        } else {
            cc->mode = MODE_PLAIN;
            cc->lock_ms = conf->lease_ms; /* for a stale value's refresh */
        }
        cc->deadline_ms = now + cc->lock_ms;
        tc_stack_get(op, get_done, cc);
        break;
    }
    case TC_HTTP_DELETE:
        tc_stack_del(op, write_done, cc);
        break;
    case TC_HTTP_PUT:
        st = cache_put(cc, op, &q);
        if (st != TC_OK) {
            call_free(cc);
            st = st == TC_EEXIST ? TC_OK : st; /* TC_EEXIST: already answered */
        }
        break;
    default:
        st = TC_EINVAL;
        call_free(cc);
        break;
    }
    evhttp_clear_headers(&q);
    return st;
}

/* ---- /locks/{name} ---------------------------------------------------------------------- */

#define LOCKS_PREFIX     "/locks/"
#define LOCKS_PREFIX_LEN (sizeof(LOCKS_PREFIX) - 1)
#define LOCK_DEFAULT_TTL 30000u
#define LOCK_MAX_WAIT    3600000u
#define LOCK_MAX_TTL     TC_LOCK_TTL_MAX

struct lock_call {
    struct tc_worker *w;
    struct tc_http_req *r;
    struct tc_kl_waiter kw;
    int waited;
    size_t name_len; /* of the name without its "n:" */
    uint8_t lname[2 + TC_KEY_MAX];
};

static json_t *lock_name_json(const struct lock_call *lc)
{
    json_t *j = json_stringn((const char *)lc->lname + 2, lc->name_len);
    return j ? j : json_string("");
}

static void lock_acquire_cb(struct tc_kl_waiter *kw)
{
    struct lock_call *lc = kw->arg;
    struct tc_worker *w = lc->w;
    tc_kl_result_unref(kw->result);
    kw->result = NULL;
    if (kw->outcome == TC_KL_WOKEN) {
        /* Released (or its lease ended): try again within our wait. */
        if (!lc->waited) {
            lc->waited = 1;
            tc_keylock_count(w->srv->keylock, TC_KL_lock_waits);
        }
        tc_keylock_acquire(w->home, kw, lc->lname, lc->name_len + 2);
        return;
    }
    if (kw->outcome == TC_KL_ACQUIRED) {
        json_t *j = json_object();
        json_object_set_new(j, "name", lock_name_json(lc));
        json_object_set_new(j, "token", json_string(kw->token));
        json_object_set_new(j, "ttl", json_real((double)kw->ttl_ms / 1000.0));
        respond_json(w, lc->r, 200, j, NULL);
    } else if (kw->outcome == TC_KL_TIMEOUT) {
        respond_error(w, lc->r, 409, "timeout", NULL,
                      "the lock is held by someone else (for %llu ms more)",
                      (unsigned long long)kw->remaining_ms);
    } else {
        respond_status(w, lc->r, kw->status == TC_OK ? TC_EUNAVAIL : kw->status);
    }
    free(lc);
}

static void lock_release_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct lock_call *lc = arg;
    (void)remaining;
    (void)token;
    if (st == TC_OK) {
        static const char ok[] = "{\"ok\":true}";
        respond(lc->w, lc->r, 200, "application/json", ok, sizeof(ok) - 1, NULL);
    } else if (st == TC_ENOTFOUND) {
        respond_error(lc->w, lc->r, 409, "not_owner", NULL,
                      "this token does not hold the lock (it expired, was released, or belongs "
                      "to someone else)");
    } else {
        respond_status(lc->w, lc->r, st);
    }
    free(lc);
}

static void lock_peek_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct lock_call *lc = arg;
    (void)token; /* the holder's: never shown */
    if (st != TC_OK && st != TC_ENOTFOUND) {
        respond_status(lc->w, lc->r, st);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "name", lock_name_json(lc));
        json_object_set_new(j, "held", json_boolean(st == TC_OK));
        if (st == TC_OK) {
            json_object_set_new(j, "ttl", json_real((double)remaining / 1000.0));
        }
        json_object_set_new(j, "scope", json_string(tc_keylock_scope(lc->w->srv->keylock)));
        respond_json(lc->w, lc->r, 200, j, NULL);
    }
    free(lc);
}

/* Seconds in a JSON member → ms in [0, max]; -1 (answered) if bad. */
static int json_seconds(struct tc_worker *w, struct tc_http_req *r, json_t *doc, const char *name,
                        uint64_t def, uint64_t max, uint64_t *out)
{
    json_t *v = doc ? json_object_get(doc, name) : NULL;
    *out = def;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    double secs = json_is_number(v) ? json_number_value(v) : -1;
    if (!isfinite(secs) || secs < 0 || secs * 1000.0 > (double)max) {
        respond_error(w, r, 400, "bad_request", NULL,
                      "\"%s\" must be a number of seconds from 0 to %.0f", name,
                      (double)max / 1000.0);
        return -1;
    }
    *out = secs_to_ms(secs);
    return 0;
}

static enum tc_status api_locks(struct tc_worker *w, struct tc_http_req *r)
{
    char *decoded;
    const char *name;
    size_t len;
    enum tc_status st;
    if (decode_name(w, r, r->path + LOCKS_PREFIX_LEN, "lock name", "/locks/{name}", &decoded, &name,
                    &len, &st) != 0) {
        return st;
    }
    struct lock_call *lc = calloc(1, sizeof(*lc));
    if (lc == NULL) {
        free(decoded);
        return TC_ENOMEM;
    }
    lc->w = w;
    lc->r = r;
    lc->lname[0] = 'n';
    lc->lname[1] = ':';
    memcpy(lc->lname + 2, name, len);
    lc->name_len = len;
    free(decoded);

    json_t *doc = NULL;
    if (r->body.len > 0) {
        json_error_t err;
        doc = json_loadb((const char *)r->body.data, r->body.len, 0, &err);
        if (!json_is_object(doc)) {
            json_decref(doc);
            respond_error(w, r, 400, "bad_json", NULL,
                          "the body must be a JSON object like {\"ttl\": 30, \"wait\": 5}");
            free(lc);
            return TC_OK;
        }
    }
    if (r->method == TC_HTTP_POST) {
        uint64_t ttl, wait;
        if (json_seconds(w, r, doc, "ttl", LOCK_DEFAULT_TTL, LOCK_MAX_TTL, &ttl) != 0 ||
            json_seconds(w, r, doc, "wait", 0, LOCK_MAX_WAIT, &wait) != 0) {
            json_decref(doc);
            free(lc);
            return TC_OK;
        }
        json_decref(doc);
        if (ttl == 0) {
            respond_error(w, r, 400, "bad_request", NULL, "\"ttl\" must be above 0");
            free(lc);
            return TC_OK;
        }
        lc->kw.ttl_ms = ttl;
        lc->kw.deadline_ms = wait ? tc_now_ms() + wait : 0;
        lc->kw.cb = lock_acquire_cb;
        lc->kw.arg = lc;
        tc_keylock_acquire(w->home, &lc->kw, lc->lname, len + 2);
        return TC_OK;
    }
    if (r->method == TC_HTTP_DELETE) {
        struct evkeyvalq q;
        TAILQ_INIT(&q);
        const char *token = tc_http_header(r, "x-lock-token");
        if (token == NULL) {
            token = query_param(r, "token", &q);
        }
        if (token == NULL && doc != NULL && json_is_string(json_object_get(doc, "token"))) {
            token = json_string_value(json_object_get(doc, "token"));
        }
        if (token == NULL || token[0] == '\0' || strlen(token) >= TC_LOCK_TOKEN_MAX) {
            respond_error(w, r, 400, "missing_token", NULL,
                          "give the token that POST returned: header X-Lock-Token, ?token=, or "
                          "{\"token\": ...}");
            free(lc);
        } else {
            tc_keylock_release(w->home, lc->lname, len + 2, token, NULL, lock_release_done, lc);
        }
        evhttp_clear_headers(&q);
        json_decref(doc);
        return TC_OK;
    }
    json_decref(doc);
    tc_keylock_peek(w->home, lc->lname, len + 2, lock_peek_done, lc);
    return TC_OK;
}

/* ---- /health ------------------------------------------------------------------------------ */

static enum tc_status api_health(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_stack *s = w->srv->stack;
    json_t *j = json_object();
    json_t *tiers = json_array();
    json_t *failing = json_array();
    size_t down = 0, bad = 0, n = tc_stack_ntiers(s);
    for (size_t i = 0; i < n; i++) {
        char why[256];
        struct tc_tier *t = tc_stack_tier(s, i);
        enum tc_tier_health h = tc_tier_health(t, why, sizeof(why));
        json_t *o = json_object();
        json_object_set_new(o, "tier", json_string(tier_label((int)i)));
        json_object_set_new(o, "uri", json_string(tc_tier_uri(t)));
        json_object_set_new(o, "status", json_string(tc_tier_health_name(h)));
        if (why[0]) {
            json_object_set_new(o, "detail", json_string(why));
        }
        json_array_append_new(tiers, o);
        if (h != TC_HEALTH_OK) {
            bad++;
            down += h == TC_HEALTH_DOWN;
            json_array_append_new(failing, json_string(tier_label((int)i)));
        }
    }
    int status = 200;
    const char *word = "ok";
    if (n == 0 || down == n) {
        status = 503;
        word = "down";
    } else if (bad > 0) {
        word = "degraded";
    }
    json_object_set_new(j, "status", json_string(word));
    if (bad > 0) {
        json_object_set_new(j, "failing", failing);
    } else {
        json_decref(failing);
    }
    json_object_set_new(j, "tiers", tiers);
    respond_json(w, r, status, j, NULL);
    return TC_OK;
}

/* ---- /stats and /metrics ---------------------------------------------------------------- */

struct stat_row {
    char name[64];
    uint64_t value;
    enum tc_stat_kind kind;
};

struct stat_list {
    struct stat_row rows[96];
    size_t n;
};

static void collect_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    struct stat_list *l = arg;
    if (l->n < sizeof(l->rows) / sizeof(l->rows[0])) {
        snprintf(l->rows[l->n].name, sizeof(l->rows[l->n].name), "%s", name);
        l->rows[l->n].value = v;
        l->rows[l->n].kind = kind;
        l->n++;
    }
}

static const char *const op_names[] = {"get", "set", "del"};

static void tier_hist(const struct tc_server *srv, size_t i, int kind, struct tc_hist_snap *snap)
{
    memset(snap, 0, sizeof(*snap));
    for (size_t k = 0; k < srv->nworkers; k++) {
        const struct tc_worker *w = &srv->workers[k];
        if (w->sc != NULL) {
            tc_hist_snap_add(snap, tc_stack_ctx_hist(w->sc, i, kind));
        }
    }
}

static uint64_t conn_counter(const struct tc_server *srv, size_t off)
{
    uint64_t sum = 0;
    for (size_t k = 0; k < srv->nworkers; k++) {
        const struct tc_worker *w = &srv->workers[k];
        if (w->http != NULL) {
            const _Atomic uint64_t *p =
                (const _Atomic uint64_t *)((const char *)tc_http_server_counters(w->http) + off);
            sum += atomic_load_explicit(p, memory_order_relaxed);
        }
    }
    return sum;
}

static uint64_t status_count(const struct tc_server *srv, int code)
{
    uint64_t sum = 0;
    for (size_t k = 0; k < srv->nworkers; k++) {
        sum += atomic_load_explicit(&srv->workers[k].by_status[code], memory_order_relaxed);
    }
    return sum;
}

static enum tc_status api_stats(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_server *srv = w->srv;
    json_t *j = json_object();
    uint64_t now = tc_now_ms();
    json_object_set_new(j, "uptime_s", json_real((double)(now - srv->start_ms) / 1000.0));
    json_object_set_new(j, "workers", json_integer((json_int_t)srv->nworkers));

    json_t *conns = json_object();
    json_object_set_new(
        conns, "active",
        json_integer((json_int_t)atomic_load_explicit(&srv->conn_count, memory_order_relaxed)));
    json_object_set_new(
        conns, "accepted",
        json_integer((json_int_t)conn_counter(srv, offsetof(struct tc_http_counters, accepted))));
    json_object_set_new(
        conns, "refused",
        json_integer((json_int_t)conn_counter(srv, offsetof(struct tc_http_counters, refused))));
    json_object_set_new(j, "connections", conns);

    json_t *hj = json_object();
#define TC_HTTP_X(field, help)                                                                     \
    json_object_set_new(                                                                           \
        hj, #field,                                                                                \
        json_integer((json_int_t)conn_counter(srv, offsetof(struct tc_http_counters, field))));
    TC_HTTP_REFUSALS(TC_HTTP_X)
#undef TC_HTTP_X
    json_object_set_new(
        hj, "pending_body_bytes",
        json_integer((json_int_t)atomic_load_explicit(&srv->body_pending, memory_order_relaxed)));
    json_object_set_new(j, "http", hj);

    json_t *req = json_object();
    json_t *by = json_object();
    uint64_t total = 0;
    for (int code = 0; code < TC_STATUS_CODES; code++) {
        uint64_t n = status_count(srv, code);
        if (n > 0) {
            char k[8];
            snprintf(k, sizeof(k), "%d", code);
            json_object_set_new(by, k, json_integer((json_int_t)n));
            total += n;
        }
    }
    json_object_set_new(req, "total", json_integer((json_int_t)total));
    json_object_set_new(req, "by_status", by);
    json_object_set_new(j, "requests", req);
    uint64_t lost;
    uint64_t inval = tc_stack_invalidations(srv->stack, &lost);
    json_t *iv = json_object();
    json_object_set_new(iv, "applied", json_integer((json_int_t)inval));
    json_object_set_new(iv, "subscription_lost", json_integer((json_int_t)lost));
    json_object_set_new(j, "invalidations", iv);

    json_t *locks = json_object();
    json_object_set_new(locks, "scope", json_string(tc_keylock_scope(srv->keylock)));
    json_object_set_new(locks, "active",
                        json_integer((json_int_t)tc_keylock_entries(srv->keylock)));
    for (int k = 0; k < TC_KL_NSTATS; k++) {
        json_object_set_new(
            locks, tc_keylock_stat_name((enum tc_kl_stat)k),
            json_integer((json_int_t)tc_keylock_stat(srv->keylock, (enum tc_kl_stat)k)));
    }
    json_object_set_new(j, "dogpile", locks);
    if (srv->origin != NULL) {
        struct tc_origin_stats os;
        tc_origin_stats(srv->origin, &os);
        json_t *o = json_object();
        json_object_set_new(o, "url", json_string(tc_origin_url(srv->origin)));
#define TC_ORIGIN_X(name, help) json_object_set_new(o, #name, json_integer((json_int_t)os.name));
        TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
        json_object_set_new(o, "inflight", json_integer((json_int_t)os.inflight));
        json_object_set_new(j, "origin", o);
    }

    json_t *tiers = json_array();
    for (size_t i = 0; i < tc_stack_ntiers(srv->stack); i++) {
        struct tc_tier *t = tc_stack_tier(srv->stack, i);
        json_t *o = json_object();
        json_object_set_new(o, "tier", json_string(tier_label((int)i)));
        json_object_set_new(o, "uri", json_string(tc_tier_uri(t)));
        json_object_set_new(o, "ttl_ratio", json_real(tc_tier_ttl_ratio(t)));
        json_object_set_new(o, "health",
                            json_string(tc_tier_health_name(tc_tier_health(t, NULL, 0))));
        struct stat_list l;
        l.n = 0;
        tc_tier_stats(t, collect_stat, &l);
        for (size_t k = 0; k < l.n; k++) {
            json_object_set_new(o, l.rows[k].name, json_integer((json_int_t)l.rows[k].value));
        }
        json_object_set_new(o, "sweeps", json_integer((json_int_t)atomic_load(&srv->sweeps[i])));
        json_object_set_new(o, "swept", json_integer((json_int_t)atomic_load(&srv->swept[i])));
        json_t *lat = json_object();
        for (int kind = 0; kind < 3; kind++) {
            struct tc_hist_snap snap;
            tier_hist(srv, i, kind, &snap);
            json_t *q = json_object();
            json_object_set_new(q, "count", json_integer((json_int_t)snap.count));
            json_object_set_new(q, "p50_ns",
                                json_integer((json_int_t)tc_hist_snap_quantile(&snap, 0.50)));
            json_object_set_new(q, "p99_ns",
                                json_integer((json_int_t)tc_hist_snap_quantile(&snap, 0.99)));
            json_object_set_new(lat, op_names[kind], q);
        }
        json_object_set_new(o, "latency", lat);
        json_array_append_new(tiers, o);
    }
    json_object_set_new(j, "tiers", tiers);
    respond_json(w, r, 200, j, NULL);
    return TC_OK;
}

static void prom_family(struct tc_buf *b, const char *name, const char *type, const char *help)
{
    char line[256];
    int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    tc_buf_append(b, line, (size_t)n);
}

static void prom_line(struct tc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void prom_line(struct tc_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0) {
        tc_buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
}

static enum tc_status api_metrics(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_server *srv = w->srv;
    struct tc_buf b = TC_BUF_INIT;
    size_t nt = tc_stack_ntiers(srv->stack);

    prom_family(&b, "tiercache_uptime_seconds", "gauge", "Seconds since the server started.");
    prom_line(&b, "tiercache_uptime_seconds %.3f\n", (double)(tc_now_ms() - srv->start_ms) / 1e3);
    prom_family(&b, "tiercache_connections", "gauge", "Open client connections.");
    prom_line(&b, "tiercache_connections %llu\n",
              (unsigned long long)atomic_load_explicit(&srv->conn_count, memory_order_relaxed));
    prom_family(&b, "tiercache_connections_accepted_total", "counter", "Connections accepted.");
    prom_line(&b, "tiercache_connections_accepted_total %llu\n",
              (unsigned long long)conn_counter(srv, offsetof(struct tc_http_counters, accepted)));
    prom_family(&b, "tiercache_connections_refused_total", "counter",
                "Connections refused over max-connections.");
    prom_line(&b, "tiercache_connections_refused_total %llu\n",
              (unsigned long long)conn_counter(srv, offsetof(struct tc_http_counters, refused)));
#define TC_HTTP_X(field, help)                                                                     \
    prom_family(&b, "tiercache_http_" #field "_total", "counter", help ".");                       \
    prom_line(&b, "tiercache_http_" #field "_total %llu\n",                                        \
              (unsigned long long)conn_counter(srv, offsetof(struct tc_http_counters, field)));
    TC_HTTP_REFUSALS(TC_HTTP_X)
#undef TC_HTTP_X
    prom_family(&b, "tiercache_http_pending_body_bytes", "gauge",
                "Bytes held by request bodies being received (bounded by max-pending-body).");
    prom_line(&b, "tiercache_http_pending_body_bytes %llu\n",
              (unsigned long long)atomic_load_explicit(&srv->body_pending, memory_order_relaxed));
    prom_family(&b, "tiercache_requests_total", "counter", "HTTP responses by status code.");
    for (int code = 0; code < TC_STATUS_CODES; code++) {
        uint64_t n = status_count(srv, code);
        if (n > 0) {
            prom_line(&b, "tiercache_requests_total{code=\"%d\"} %llu\n", code,
                      (unsigned long long)n);
        }
    }

    /* Tier stats: grouped by name across tiers, as the format requires. */
    struct stat_list *lists = calloc(nt ? nt : 1, sizeof(*lists));
    if (lists == NULL) {
        tc_buf_deinit(&b);
        return TC_ENOMEM;
    }
    for (size_t i = 0; i < nt; i++) {
        tc_tier_stats(tc_stack_tier(srv->stack, i), collect_stat, &lists[i]);
    }
    for (size_t i = 0; i < nt; i++) {
        for (size_t k = 0; k < lists[i].n; k++) {
            const struct stat_row *row = &lists[i].rows[k];
            int seen = 0;
            for (size_t pi = 0; pi <= i && !seen; pi++) {
                for (size_t pk = 0; pk < (pi == i ? k : lists[pi].n); pk++) {
                    if (strcmp(lists[pi].rows[pk].name, row->name) == 0) {
                        seen = 1;
                        break;
                    }
                }
            }
            if (seen) {
                continue; /* already written with its family */
            }
            char fam[128], help[160];
            int counter = row->kind == TC_STAT_COUNTER;
            snprintf(fam, sizeof(fam), "tiercache_tier_%s%s", row->name, counter ? "_total" : "");
            snprintf(help, sizeof(help), "Tier stat '%s'.", row->name);
            prom_family(&b, fam, counter ? "counter" : "gauge", help);
            for (size_t ti = i; ti < nt; ti++) {
                for (size_t tk = 0; tk < lists[ti].n; tk++) {
                    if (strcmp(lists[ti].rows[tk].name, row->name) == 0) {
                        prom_line(&b, "%s{tier=\"%s\",scheme=\"%s\"} %llu\n", fam,
                                  tier_label((int)ti),
                                  tc_tier_scheme(tc_stack_tier(srv->stack, ti)),
                                  (unsigned long long)lists[ti].rows[tk].value);
                    }
                }
            }
        }
    }
    free(lists);

    uint64_t lost;
    uint64_t inval = tc_stack_invalidations(srv->stack, &lost);
    prom_family(&b, "tiercache_invalidations_total", "counter",
                "Keys removed here because another host wrote or deleted them.");
    prom_line(&b, "tiercache_invalidations_total %llu\n", (unsigned long long)inval);
    prom_family(&b, "tiercache_invalidation_subscription_lost_total", "counter",
                "Times the invalidation subscription was lost (messages may be missed).");
    prom_line(&b, "tiercache_invalidation_subscription_lost_total %llu\n",
              (unsigned long long)lost);
    prom_family(&b, "tiercache_dogpile_active", "gauge",
                "Keys and lock names with waiters or a holder in this process.");
    prom_line(&b, "tiercache_dogpile_active{scope=\"%s\"} %llu\n", tc_keylock_scope(srv->keylock),
              (unsigned long long)tc_keylock_entries(srv->keylock));
    for (int k = 0; k < TC_KL_NSTATS; k++) {
        char fam[96], help[160];
        snprintf(fam, sizeof(fam), "tiercache_dogpile_%s_total",
                 tc_keylock_stat_name((enum tc_kl_stat)k));
        snprintf(help, sizeof(help), "Dogpile protection: %s.",
                 tc_keylock_stat_help((enum tc_kl_stat)k));
        prom_family(&b, fam, "counter", help);
        prom_line(&b, "%s %llu\n", fam,
                  (unsigned long long)tc_keylock_stat(srv->keylock, (enum tc_kl_stat)k));
    }
    if (srv->origin != NULL) {
        struct tc_origin_stats os;
        tc_origin_stats(srv->origin, &os);
#define TC_ORIGIN_X(name, help)                                                                    \
    prom_family(&b, "tiercache_origin_" #name "_total", "counter", "Origin: " help ".");           \
    prom_line(&b, "tiercache_origin_" #name "_total %llu\n", (unsigned long long)os.name);
        TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
    }
    prom_family(&b, "tiercache_tier_up", "gauge", "1 if the tier is serving (ok or degraded).");
    for (size_t i = 0; i < nt; i++) {
        struct tc_tier *t = tc_stack_tier(srv->stack, i);
        prom_line(&b, "tiercache_tier_up{tier=\"%s\",scheme=\"%s\"} %d\n", tier_label((int)i),
                  tc_tier_scheme(t), tc_tier_health(t, NULL, 0) != TC_HEALTH_DOWN);
    }
    prom_family(&b, "tiercache_sweeps_total", "counter", "Sweeper visits per tier.");
    for (size_t i = 0; i < nt; i++) {
        prom_line(&b, "tiercache_sweeps_total{tier=\"%s\"} %llu\n", tier_label((int)i),
                  (unsigned long long)atomic_load(&srv->sweeps[i]));
    }
    prom_family(&b, "tiercache_swept_total", "counter", "Expired entries removed by the sweeper.");
    for (size_t i = 0; i < nt; i++) {
        prom_line(&b, "tiercache_swept_total{tier=\"%s\"} %llu\n", tier_label((int)i),
                  (unsigned long long)atomic_load(&srv->swept[i]));
    }
    prom_family(&b, "tiercache_tier_op_duration_seconds", "histogram",
                "Latency of tier operations as the stack sees them.");
    for (size_t i = 0; i < nt; i++) {
        for (int kind = 0; kind < 3; kind++) {
            struct tc_hist_snap snap;
            tier_hist(srv, i, kind, &snap);
            uint64_t cum = 0;
            for (int bk = 0; bk < TC_HIST_NB; bk++) {
                cum += snap.b[bk];
                if (bk == TC_HIST_NB - 1) {
                    prom_line(&b,
                              "tiercache_tier_op_duration_seconds_bucket{tier=\"%s\",op=\"%s\","
                              "le=\"+Inf\"} %llu\n",
                              tier_label((int)i), op_names[kind], (unsigned long long)cum);
                } else {
                    prom_line(&b,
                              "tiercache_tier_op_duration_seconds_bucket{tier=\"%s\",op=\"%s\","
                              "le=\"%g\"} %llu\n",
                              tier_label((int)i), op_names[kind], (double)tc_hist_le_ns[bk] / 1e9,
                              (unsigned long long)cum);
                }
            }
            prom_line(&b, "tiercache_tier_op_duration_seconds_sum{tier=\"%s\",op=\"%s\"} %.9f\n",
                      tier_label((int)i), op_names[kind], (double)snap.sum_ns / 1e9);
            prom_line(&b, "tiercache_tier_op_duration_seconds_count{tier=\"%s\",op=\"%s\"} %llu\n",
                      tier_label((int)i), op_names[kind], (unsigned long long)snap.count);
        }
    }
    respond(w, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    tc_buf_deinit(&b);
    return TC_OK;
}
