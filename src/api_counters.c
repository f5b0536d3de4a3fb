/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * /counters/{key} and /limits/{key} (issue 16): freiner's counters and rate
 * limits, kept where the server's count tier keeps them (src/main.c picks
 * it: Redis for every host, the shm segment for every process on the host,
 * else this process's own table), one atomic step of that tier per request.
 *
 *   POST   /counters/{key} {"by":1,"ttl":60,"elastic":false}
 *          200 {"key","value","ttl"} | 409 overflow (signed 64 bits)
 *   GET    /counters/{key}   200 {"key","value","ttl"}   (absent: value 0)
 *   DELETE /counters/{key}   200 {"ok":true}
 *   POST   /limits/{key} {"limit":100,"window":"1m","strategy":"gcra","cost":1,"burst":..}
 *          200 {"key","allowed":true,"remaining","reset",...} | 429 + Retry-After
 *          both with RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers)
 *   GET    /limits/{key}?limit=&window=&strategy=&cost=&burst=   the state, no hit
 *   DELETE /limits/{key}[?strategy=]   forgets it (every strategy by default)
 */
#include "src/api.h"
#include "src/clock.h"
#include "src/text.h"
#include "tiers/parse.h"

#include <event2/http.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define COUNTERS_PREFIX "/counters/"
#define LIMITS_PREFIX   "/limits/"
#define COUNTERS_USAGE  "{\"by\": 1, \"ttl\": 60}"
#define LIMITS_USAGE    "{\"limit\": 100, \"window\": \"1m\", \"strategy\": \"gcra\"}"
/* The shm tier's moving-window log (TC_RING_MOVING_MAX, shm/ring.h). */
#define TC_SHM_MOVING_MAX 1024u

struct count_call {
    struct tc_worker *w;
    struct tc_http_req *r;
    struct tc_tier_count_req req;
    int limits; /* /limits, else /counters */
    size_t key_len;
    uint8_t key[TC_KEY_MAX];
};

static json_t *key_json(const struct count_call *cc)
{
    json_t *j = json_stringn((const char *)cc->key, cc->key_len);
    return j ? j : json_string("");
}

static uint64_t ceil_secs(uint64_t ms)
{
    return ms / 1000 + (ms % 1000 != 0);
}

/* RateLimit-Policy and RateLimit, as draft-ietf-httpapi-ratelimit-headers-10
 * writes them (Structured Field lists): the policy is named after the
 * strategy, q its quota, w its window in seconds; r what remains, t the
 * seconds until all of it is back. Plus Retry-After on a 429. */
static void limit_headers(const struct count_call *cc, char *buf, size_t n)
{
    const struct tc_tier_count_req *q = &cc->req;
    const char *name = tc_limit_strategy_name(q->strategy);
    uint64_t quota = q->strategy == TC_LIMIT_GCRA && q->burst ? q->burst : q->limit;
    int len =
        snprintf(buf, n,
                 "RateLimit-Policy: \"%s\";q=%" PRIu64 ";w=%" PRIu64 "\r\n"
                 "RateLimit: \"%s\";r=%" PRIu64 ";t=%" PRIu64 "\r\n",
                 name, quota, ceil_secs(q->window_ms), name, q->remaining, ceil_secs(q->reset_ms));
    if (!q->allowed && q->op == TC_LIMIT_HIT && len > 0 && (size_t)len < n) {
        uint64_t retry = ceil_secs(q->retry_ms);
        snprintf(buf + len, n - (size_t)len, "Retry-After: %" PRIu64 "\r\n", retry ? retry : 1);
    }
}

static void answer(struct count_call *cc)
{
    struct tc_worker *w = cc->w;
    struct tc_http_req *r = cc->r;
    struct tc_tier_count_req *q = &cc->req;
    enum tc_status st = q->status;
    if (st == TC_ENOMEM) {
        tc_api_error(w, r, TC_API_UNAVAILABLE, NULL,
                     "no room for a new %s: the %s-scope table is full of live state",
                     cc->limits ? "limit" : "counter", w->srv->count_scope);
    } else if (st == TC_ETOOBIG && q->strategy == TC_LIMIT_MOVING) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "at %s scope the moving window keeps at most %u hits: use a smaller "
                     "\"limit\", or \"gcra\" or \"sliding\" (docs/api.md)",
                     w->srv->count_scope, TC_SHM_MOVING_MAX);
    } else if (st != TC_OK) {
        tc_api_status(w, r, st);
    } else if (q->op == TC_COUNT_RESET || q->op == TC_LIMIT_CLEAR) {
        tc_api_respond_ok(w, r, NULL);
    } else if (!cc->limits) {
        if (q->overflow) {
            tc_api_error(w, r, TC_API_OVERFLOW, NULL,
                         "adding %" PRId64 " to %" PRId64 " leaves signed 64 bits; nothing changed",
                         q->by, q->value);
        } else {
            json_t *j = json_object();
            json_object_set_new(j, "key", key_json(cc));
            json_object_set_new(j, "value", json_integer(q->value));
            json_object_set_new(
                j, "ttl", q->ttl_ms_left ? json_real((double)q->ttl_ms_left / 1e3) : json_null());
            tc_api_respond_json(w, r, 200, j, NULL);
        }
    } else {
        char hdr[256];
        limit_headers(cc, hdr, sizeof(hdr));
        if (q->op == TC_LIMIT_HIT && !q->allowed) {
            tc_api_error(w, r, TC_API_RATE_LIMITED, hdr,
                         "over the limit of %" PRIu64 " per %" PRIu64 " ms (%s); retry in %" PRIu64
                         " ms",
                         q->limit, q->window_ms, tc_limit_strategy_name(q->strategy), q->retry_ms);
        } else if (tc_text_plain_ascii((const char *)cc->key, cc->key_len)) {
            /* The hot path of a rate limiter: formatted here, without
             * building a JSON tree (the key needs no escaping). */
            char body[TC_KEY_MAX + 320];
            int n =
                snprintf(body, sizeof(body),
                         "{\"key\":\"%.*s\",\"strategy\":\"%s\",\"allowed\":%s,\"limit\":%" PRIu64
                         ",\"remaining\":%" PRIu64 ",\"reset\":%.3f,\"count\":%" PRId64,
                         (int)cc->key_len, (const char *)cc->key,
                         tc_limit_strategy_name(q->strategy), q->allowed ? "true" : "false",
                         q->limit, q->remaining, (double)q->reset_ms / 1e3, q->value);
            n += q->start_ms ? snprintf(body + n, sizeof(body) - (size_t)n, ",\"start\":%.3f",
                                        (double)q->start_ms / 1e3)
                             : snprintf(body + n, sizeof(body) - (size_t)n, ",\"start\":null");
            if (!q->allowed) {
                n += snprintf(body + n, sizeof(body) - (size_t)n, ",\"retry_after\":%.3f",
                              (double)q->retry_ms / 1e3);
            }
            n += snprintf(body + n, sizeof(body) - (size_t)n, ",\"scope\":\"%s\"}",
                          w->srv->count_scope);
            tc_api_respond(w, r, 200, "application/json", body, (size_t)n, hdr);
        } else {
            json_t *j = json_object();
            json_object_set_new(j, "key", key_json(cc));
            json_object_set_new(j, "strategy", json_string(tc_limit_strategy_name(q->strategy)));
            json_object_set_new(j, "allowed", json_boolean(q->allowed));
            json_object_set_new(j, "limit", json_integer((json_int_t)q->limit));
            json_object_set_new(j, "remaining", json_integer((json_int_t)q->remaining));
            json_object_set_new(j, "reset", json_real((double)q->reset_ms / 1e3));
            json_object_set_new(j, "count", json_integer((json_int_t)q->value));
            json_object_set_new(j, "start",
                                q->start_ms ? json_real((double)q->start_ms / 1e3) : json_null());
            if (!q->allowed) {
                json_object_set_new(j, "retry_after", json_real((double)q->retry_ms / 1e3));
            }
            json_object_set_new(j, "scope", json_string(w->srv->count_scope));
            tc_api_respond_json(w, r, 200, j, hdr);
        }
    }
    free(cc);
}

static void count_done(struct tc_tier_count_req *req)
{
    answer(req->arg);
}

static void run(struct count_call *cc)
{
    cc->req.key = cc->key;
    cc->req.key_len = cc->key_len;
    cc->req.now_ms = tc_clock_ms();
    cc->req.done = count_done;
    cc->req.arg = cc;
    if (cc->w->count_ctx == NULL) {
        cc->req.status = TC_EUNAVAIL;
        answer(cc);
        return;
    }
    if (tc_tier_count(cc->w->count_ctx, &cc->req) != TC_EINPROGRESS) {
        answer(cc);
    }
}

/* ---- parsing ------------------------------------------------------------------------------ */

/* A call for @p r with the key of its path after @p prefix; NULL when it
 * answered (a bad key) or when the caller must answer *st. */
static struct count_call *call_new(struct tc_worker *w, struct tc_http_req *r, int limits,
                                   const char *prefix, const char *usage, enum tc_status *st)
{
    char *decoded;
    const char *name;
    size_t len;
    struct count_call *cc = calloc(1, sizeof(*cc));
    if (cc == NULL) {
        *st = TC_ENOMEM;
        return NULL;
    }
    if (tc_api_decode_name(w, r, r->path + strlen(prefix), "key", usage, &decoded, &name, &len,
                           st) != 0) {
        free(cc);
        return NULL;
    }
    cc->w = w;
    cc->r = r;
    cc->limits = limits;
    memcpy(cc->key, name, len);
    cc->key_len = len;
    free(decoded);
    return cc;
}

/* An integer member in [lo, hi] (absent: def). -1 once it answered 400. */
static int json_int(struct tc_worker *w, struct tc_http_req *r, json_t *doc, const char *name,
                    int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = doc ? json_object_get(doc, name) : NULL;
    *out = def;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "\"%s\" must be an integer from %" PRId64 " to %" PRId64, name, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int json_bool(struct tc_worker *w, struct tc_http_req *r, json_t *doc, const char *name,
                     int *out)
{
    json_t *v = doc ? json_object_get(doc, name) : NULL;
    *out = 0;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"%s\" must be true or false", name);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

enum tc_status tc_api_counters(struct tc_worker *w, struct tc_http_req *r)
{
    enum tc_status st = TC_OK;
    struct count_call *cc = call_new(w, r, 0, COUNTERS_PREFIX, "/counters/{key}", &st);
    if (cc == NULL) {
        return st;
    }
    json_t *doc = NULL;
    /* An empty body (curl -X POST) is an add of 1 with no expiry. */
    if (tc_api_body_parse(w, r, TC_API_BODY_EMPTY_OK, COUNTERS_USAGE, &doc) != 0) {
        free(cc);
        return TC_OK;
    }
    static const char *const known[] = {"by", "ttl", "elastic", NULL};
    static const char *const none[] = {NULL};
    /* Read before anything answers: an answer frees r. */
    enum tc_http_method method = r->method;
    int bad = doc != NULL &&
              tc_api_body_fields(w, r, doc, method == TC_HTTP_POST ? known : none, NULL) != 0;
    if (!bad && method == TC_HTTP_POST) {
        int64_t by;
        bad = json_int(w, r, doc, "by", 1, INT64_MIN, INT64_MAX, &by) != 0 ||
              tc_api_json_seconds(w, r, doc, "ttl", 0, TC_COUNT_TTL_MAX, &cc->req.ttl_ms) != 0 ||
              json_bool(w, r, doc, "elastic", &cc->req.elastic) != 0;
        cc->req.op = TC_COUNT_ADD;
        cc->req.by = by;
    } else {
        cc->req.op = method == TC_HTTP_DELETE ? TC_COUNT_RESET : TC_COUNT_GET;
    }
    json_decref(doc);
    if (bad) {
        free(cc);
        return TC_OK;
    }
    run(cc);
    return TC_OK;
}

static enum tc_limit_strategy strategy_of(const char *s)
{
    for (int i = TC_LIMIT_FIXED; i <= TC_LIMIT_GCRA; i++) {
        if (strcmp(s, tc_limit_strategy_name((enum tc_limit_strategy)i)) == 0) {
            return (enum tc_limit_strategy)i;
        }
    }
    return 0;
}

/* A limit's parameters, from the JSON body (POST) or the query (GET,
 * DELETE; given as text, each parsed as the JSON member would be). */
struct limit_in {
    const char *strategy; /* NULL: "fixed" */
    json_t *limit, *window, *cost, *burst, *elastic;
};

static int limit_params(struct tc_worker *w, struct tc_http_req *r, const struct limit_in *in,
                        int need_limit, struct tc_tier_count_req *q)
{
    q->strategy = TC_LIMIT_FIXED;
    if (in->strategy != NULL && (q->strategy = strategy_of(in->strategy)) == 0) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "unknown strategy \"%.40s\" (valid: fixed, sliding, moving, gcra)",
                     in->strategy);
        return -1;
    }
    if (!need_limit) {
        return 0;
    }
    int64_t max =
        q->strategy == TC_LIMIT_MOVING ? (int64_t)TC_LIMIT_MOVING_MAX : (int64_t)TC_LIMIT_MAX;
    if (in->limit == NULL) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "\"limit\" is required: hits allowed per window, 1 to %" PRId64, max);
        return -1;
    }
    int64_t limit, cost, burst;
    json_t *doc = json_object();
    json_object_set(doc, "limit", in->limit);
    if (in->cost) {
        json_object_set(doc, "cost", in->cost);
    }
    if (in->burst) {
        json_object_set(doc, "burst", in->burst);
    }
    int bad = json_int(w, r, doc, "limit", 0, 1, max, &limit) != 0;
    bad = bad || json_int(w, r, doc, "cost", 1, 0, limit, &cost) != 0;
    bad = bad || json_int(w, r, doc, "burst", 0, 1, (int64_t)TC_LIMIT_MAX, &burst) != 0;
    json_decref(doc);
    if (bad) {
        return -1;
    }
    if (in->burst != NULL && !json_is_null(in->burst) && q->strategy != TC_LIMIT_GCRA) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"burst\" applies to strategy gcra only");
        return -1;
    }
    uint64_t window = 0;
    int window_ok = 0;
    if (in->window != NULL && json_is_string(in->window)) {
        window_ok = tc_parse_duration(json_string_value(in->window), 1000, &window) == TC_OK;
    } else if (in->window != NULL && json_is_number(in->window)) {
        double s = json_number_value(in->window);
        window_ok = isfinite(s) && s > 0 && s * 1000.0 <= (double)TC_COUNT_TTL_MAX;
        window = window_ok ? tc_api_secs_to_ms(s) : 0;
    }
    if (!window_ok || window == 0 || window > TC_COUNT_TTL_MAX) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "\"window\" must be a duration from 1 ms to a year: seconds, or text like "
                     "\"500ms\", \"10s\", \"1m\", \"1h\", \"1d\"");
        return -1;
    }
    int elastic = 0;
    if (in->elastic != NULL && !json_is_null(in->elastic)) {
        if (!json_is_boolean(in->elastic)) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"elastic\" must be true or false");
            return -1;
        }
        elastic = json_is_true(in->elastic);
        if (elastic && q->strategy != TC_LIMIT_FIXED) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                         "\"elastic\" applies to strategy fixed only");
            return -1;
        }
    }
    q->limit = (uint64_t)limit;
    q->cost = (uint64_t)cost;
    q->burst = (uint64_t)burst;
    q->window_ms = window;
    q->elastic = elastic;
    return 0;
}

/* A query value as the JSON member it stands for: a number when it reads
 * as one, else a string (window "1m"), true/false; NULL when absent. */
static json_t *query_json(const char *v)
{
    if (v == NULL) {
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loads(v, JSON_DECODE_ANY, &err);
    return j != NULL ? j : json_string(v);
}

enum tc_status tc_api_limits(struct tc_worker *w, struct tc_http_req *r)
{
    enum tc_status st = TC_OK;
    struct count_call *cc = call_new(w, r, 1, LIMITS_PREFIX, "/limits/{key}", &st);
    if (cc == NULL) {
        return st;
    }
    json_t *doc = NULL;
    int bad = 0;
    struct limit_in in = {0};
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    json_t *owned[5] = {0};
    if (r->method == TC_HTTP_POST) {
        static const char *const known[] = {"limit", "window",  "strategy", "cost",
                                            "burst", "elastic", NULL};
        /* An empty body reads as {}: limit_params() names what it lacks. */
        bad = tc_api_body_parse(w, r, TC_API_BODY_EMPTY_OK, LIMITS_USAGE, &doc) != 0 ||
              (doc != NULL && tc_api_body_fields(w, r, doc, known, NULL) != 0);
        if (!bad && doc != NULL) {
            json_t *s = json_object_get(doc, "strategy");
            if (s != NULL && !json_is_string(s)) {
                tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"strategy\" must be a string");
                bad = 1;
            }
            in.strategy = s ? json_string_value(s) : NULL;
            in.limit = json_object_get(doc, "limit");
            in.window = json_object_get(doc, "window");
            in.cost = json_object_get(doc, "cost");
            in.burst = json_object_get(doc, "burst");
            in.elastic = json_object_get(doc, "elastic");
        }
        cc->req.op = TC_LIMIT_HIT;
    } else {
        in.strategy = tc_api_query(r, "strategy", &q);
        if (r->method != TC_HTTP_DELETE) {
            in.limit = owned[0] = query_json(tc_api_query(r, "limit", &q));
            in.window = owned[1] = query_json(tc_api_query(r, "window", &q));
            in.cost = owned[2] = query_json(tc_api_query(r, "cost", &q));
            in.burst = owned[3] = query_json(tc_api_query(r, "burst", &q));
            in.elastic = owned[4] = query_json(tc_api_query(r, "elastic", &q));
        }
        cc->req.op = r->method == TC_HTTP_DELETE ? TC_LIMIT_CLEAR : TC_LIMIT_PEEK;
    }
    if (!bad) {
        bad = limit_params(w, r, &in, cc->req.op != TC_LIMIT_CLEAR, &cc->req) != 0;
        if (cc->req.op == TC_LIMIT_CLEAR && in.strategy == NULL) {
            cc->req.strategy = 0; /* every strategy */
        }
    }
    for (size_t i = 0; i < 5; i++) {
        json_decref(owned[i]);
    }
    evhttp_clear_headers(&q);
    json_decref(doc);
    if (bad) {
        free(cc);
        return TC_OK;
    }
    run(cc);
    return TC_OK;
}
