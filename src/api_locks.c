/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * /locks/{name}: named lease locks, at the widest scope the tiers offer
 * (the key-lock table of src/keylock.h: worker pool, host, or cluster).
 *
 *   POST    {"ttl": s, "wait": s}  200 {"name","token","ttl"} | 409 held
 *   DELETE  token as X-Lock-Token, ?token= or {"token": ...}  200 | 409 not_owner
 *   PATCH   token as for DELETE, {"ttl": s}: renews the holder's lease (issue 16)
 *           200 {"name","token","ttl"} | 409 not_owner | 404 not_held
 *   GET     200 {"name","held","ttl","scope"} (never the token)
 */
#include "src/api.h"
#include "src/clock.h"

#include <event2/http.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define LOCKS_PREFIX     "/locks/"
#define LOCKS_PREFIX_LEN (sizeof(LOCKS_PREFIX) - 1)
#define LOCK_DEFAULT_TTL 30000u
#define LOCK_MAX_WAIT    3600000u
#define LOCK_MAX_TTL     TC_LOCK_TTL_MAX

struct lock_call {
    struct tc_worker *w;
    struct tc_http_req *r;
    struct tc_keylock_waiter kw;
    int waited;
    size_t name_len; /* of the name without its "n:" */
    uint8_t lname[2 + TC_KEY_MAX];
};

static json_t *lock_name_json(const struct lock_call *lc)
{
    json_t *j = json_stringn((const char *)lc->lname + 2, lc->name_len);
    return j ? j : json_string("");
}

static void lock_acquire_cb(struct tc_keylock_waiter *kw)
{
    struct lock_call *lc = kw->arg;
    struct tc_worker *w = lc->w;
    tc_keylock_result_unref(kw->result);
    kw->result = NULL;
    if (kw->outcome == TC_KEYLOCK_WOKEN) {
        /* Released (or its lease ended): try again within our wait. */
        if (!lc->waited) {
            lc->waited = 1;
            tc_keylock_count(w->srv->keylock, TC_KEYLOCK_lock_waits);
        }
        tc_keylock_acquire(w->home, kw, lc->lname, lc->name_len + 2);
        return;
    }
    if (kw->outcome == TC_KEYLOCK_ACQUIRED) {
        json_t *j = json_object();
        json_object_set_new(j, "name", lock_name_json(lc));
        json_object_set_new(j, "token", json_string(kw->token));
        json_object_set_new(j, "ttl", json_real((double)kw->ttl_ms / 1000.0));
        tc_api_respond_json(w, lc->r, 200, j, NULL);
    } else if (kw->outcome == TC_KEYLOCK_TIMEOUT) {
        tc_api_error(w, lc->r, TC_API_LOCK_HELD, NULL,
                     "the lock is held by someone else (for %llu ms more)",
                     (unsigned long long)kw->remaining_ms);
    } else {
        tc_api_status(w, lc->r, kw->status == TC_OK ? TC_EUNAVAIL : kw->status);
    }
    free(lc);
}

static void lock_release_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct lock_call *lc = arg;
    (void)remaining;
    (void)token;
    if (st == TC_OK) {
        tc_api_respond_ok(lc->w, lc->r, NULL);
    } else if (st == TC_ENOTFOUND) {
        tc_api_error(lc->w, lc->r, TC_API_NOT_OWNER, NULL,
                     "this token does not hold the lock (it expired, was released, or belongs "
                     "to someone else)");
    } else {
        tc_api_status(lc->w, lc->r, st);
    }
    free(lc);
}

/* PATCH: sherlock's renew (issue 16). */
static void lock_renew_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct lock_call *lc = arg;
    (void)remaining;
    (void)token;
    if (st == TC_OK) {
        json_t *j = json_object();
        json_object_set_new(j, "name", lock_name_json(lc));
        json_object_set_new(j, "token", json_string(lc->kw.token));
        json_object_set_new(j, "ttl", json_real((double)lc->kw.ttl_ms / 1000.0));
        tc_api_respond_json(lc->w, lc->r, 200, j, NULL);
    } else if (st == TC_EEXIST) {
        tc_api_error(lc->w, lc->r, TC_API_NOT_OWNER, NULL,
                     "the lock is held under another token: only its holder may renew it");
    } else if (st == TC_ENOTFOUND) {
        tc_api_error(lc->w, lc->r, TC_API_NOT_HELD, NULL,
                     "the lock is not held (it was released, or its lease ran out): take it "
                     "again with POST");
    } else {
        tc_api_status(lc->w, lc->r, st);
    }
    free(lc);
}

static void lock_peek_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct lock_call *lc = arg;
    (void)token; /* the holder's: never shown */
    if (st != TC_OK && st != TC_ENOTFOUND) {
        tc_api_status(lc->w, lc->r, st);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "name", lock_name_json(lc));
        json_object_set_new(j, "held", json_boolean(st == TC_OK));
        if (st == TC_OK) {
            json_object_set_new(j, "ttl", json_real((double)remaining / 1000.0));
        }
        json_object_set_new(j, "scope", json_string(tc_keylock_scope(lc->w->srv->keylock)));
        tc_api_respond_json(lc->w, lc->r, 200, j, NULL);
    }
    free(lc);
}

int tc_api_json_seconds(struct tc_worker *w, struct tc_http_req *r, json_t *doc, const char *name,
                        uint64_t def, uint64_t max, uint64_t *out)
{
    json_t *v = doc ? json_object_get(doc, name) : NULL;
    *out = def;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    double secs = json_is_number(v) ? json_number_value(v) : -1;
    if (!isfinite(secs) || secs < 0 || secs * 1000.0 > (double)max) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "\"%s\" must be a number of seconds from 0 to %.0f", name,
                     (double)max / 1000.0);
        return -1;
    }
    *out = tc_api_secs_to_ms(secs);
    return 0;
}

/* A call for @p r on the key-lock "@p ns:" + the name of its path after
 * @p skip bytes; NULL when it answered (a bad name) or the caller must
 * answer *st. */
static struct lock_call *call_new(struct tc_worker *w, struct tc_http_req *r, char ns, size_t skip,
                                  const char *what, const char *usage, enum tc_status *st)
{
    char *decoded;
    const char *name;
    size_t len;
    if (tc_api_decode_name(w, r, r->path + skip, what, usage, &decoded, &name, &len, st) != 0) {
        return NULL;
    }
    struct lock_call *lc = calloc(1, sizeof(*lc));
    if (lc == NULL) {
        free(decoded);
        *st = TC_ENOMEM;
        return NULL;
    }
    lc->w = w;
    lc->r = r;
    lc->lname[0] = (uint8_t)ns;
    lc->lname[1] = ':';
    memcpy(lc->lname + 2, name, len);
    lc->name_len = len;
    free(decoded);
    return lc;
}

/* A cache lease is the key-lock "k:" + key that a lease GET took (see
 * src/readthrough.c); its holder renews it like a named lock. The lease is
 * given as {"ttl": s} or X-Cache-Lease: MS, as when it was asked for. */
enum tc_status tc_api_lease_renew(struct tc_worker *w, struct tc_http_req *r)
{
    enum tc_status st = TC_OK;
    struct lock_call *lc = call_new(w, r, 'k', strlen("/cache/"), "key", "/cache/{key}", &st);
    if (lc == NULL) {
        return st;
    }
    size_t len = lc->name_len;
    const char *token = tc_http_header(r, "x-lease-token");
    const char *ms = tc_http_header(r, "x-cache-lease");
    json_t *doc = NULL;
    uint64_t ttl = LOCK_DEFAULT_TTL;
    int bad = 0;
    static const char *const renew_fields[] = {"ttl", NULL};
    /* No body: the length is X-Cache-Lease's. */
    if (tc_api_body_parse(w, r, TC_API_BODY_EMPTY_OK, "{\"ttl\": 30}", &doc) != 0) {
        bad = 1;
    } else if (doc != NULL) {
        bad = tc_api_body_fields(w, r, doc, renew_fields, NULL) != 0 ||
              tc_api_json_seconds(w, r, doc, "ttl", LOCK_DEFAULT_TTL, LOCK_MAX_TTL, &ttl) != 0;
    } else if (ms != NULL) {
        char *end;
        unsigned long long v = strtoull(ms, &end, 10);
        ttl = *end == '\0' && v <= LOCK_MAX_TTL ? v : 0;
    }
    if (!bad && ttl == 0) {
        tc_api_error(w, r, TC_API_BAD_LEASE, NULL,
                     "a lease renewal needs {\"ttl\": s} or X-Cache-Lease: MS, above 0");
        bad = 1;
    } else if (!bad && (token == NULL || token[0] == '\0' || strlen(token) >= TC_LOCK_TOKEN_MAX)) {
        tc_api_error(w, r, TC_API_MISSING_TOKEN, NULL,
                     "give the lease's token as X-Lease-Token (a lease GET returned it)");
        bad = 1;
    }
    json_decref(doc);
    if (bad) {
        free(lc);
        return TC_OK;
    }
    lc->kw.ttl_ms = ttl;
    snprintf(lc->kw.token, sizeof(lc->kw.token), "%s", token);
    tc_keylock_renew(w->home, lc->lname, len + 2, token, ttl, lock_renew_done, lc);
    return TC_OK;
}

enum tc_status tc_api_locks(struct tc_worker *w, struct tc_http_req *r)
{
    enum tc_status st = TC_OK;
    struct lock_call *lc = call_new(w, r, 'n', LOCKS_PREFIX_LEN, "lock name", "/locks/{name}", &st);
    if (lc == NULL) {
        return st;
    }
    size_t len = lc->name_len;

    /* The members each method reads; an empty body takes the defaults. */
    static const char *const post_fields[] = {"ttl", "wait", NULL};
    static const char *const patch_fields[] = {"ttl", "token", NULL};
    static const char *const delete_fields[] = {"token", NULL};
    static const char *const none[] = {NULL};
    const char *const *fields = r->method == TC_HTTP_POST     ? post_fields
                                : r->method == TC_HTTP_PATCH  ? patch_fields
                                : r->method == TC_HTTP_DELETE ? delete_fields
                                                              : none;
    json_t *doc = NULL;
    if (tc_api_body_parse(w, r, TC_API_BODY_EMPTY_OK, "{\"ttl\": 30, \"wait\": 5}", &doc) != 0 ||
        (doc != NULL && tc_api_body_fields(w, r, doc, fields, NULL) != 0)) {
        json_decref(doc);
        free(lc);
        return TC_OK;
    }
    if (r->method == TC_HTTP_POST) {
        uint64_t ttl, wait;
        if (tc_api_json_seconds(w, r, doc, "ttl", LOCK_DEFAULT_TTL, LOCK_MAX_TTL, &ttl) != 0 ||
            tc_api_json_seconds(w, r, doc, "wait", 0, LOCK_MAX_WAIT, &wait) != 0) {
            json_decref(doc);
            free(lc);
            return TC_OK;
        }
        json_decref(doc);
        if (ttl == 0) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"ttl\" must be above 0");
            free(lc);
            return TC_OK;
        }
        lc->kw.ttl_ms = ttl;
        lc->kw.deadline_ms = wait ? tc_clock_ms() + wait : 0;
        lc->kw.cb = lock_acquire_cb;
        lc->kw.arg = lc;
        tc_keylock_acquire(w->home, &lc->kw, lc->lname, len + 2);
        return TC_OK;
    }
    if (r->method == TC_HTTP_DELETE || r->method == TC_HTTP_PATCH) {
        uint64_t ttl = 0;
        int bad = 0;
        if (r->method == TC_HTTP_PATCH) {
            bad = tc_api_json_seconds(w, r, doc, "ttl", LOCK_DEFAULT_TTL, LOCK_MAX_TTL, &ttl) != 0;
            if (!bad && ttl == 0) {
                tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"ttl\" must be above 0");
                bad = 1;
            }
        }
        if (bad) {
            json_decref(doc);
            free(lc);
            return TC_OK;
        }
        struct evkeyvalq q;
        TAILQ_INIT(&q);
        const char *token = tc_http_header(r, "x-lock-token");
        if (token == NULL) {
            token = tc_api_query(r, "token", &q);
        }
        if (token == NULL && doc != NULL && json_is_string(json_object_get(doc, "token"))) {
            token = json_string_value(json_object_get(doc, "token"));
        }
        if (token == NULL || token[0] == '\0' || strlen(token) >= TC_LOCK_TOKEN_MAX) {
            tc_api_error(w, r, TC_API_MISSING_TOKEN, NULL,
                         "give the token that POST returned: header X-Lock-Token, ?token=, or "
                         "{\"token\": ...}");
            free(lc);
        } else if (r->method == TC_HTTP_PATCH) {
            lc->kw.ttl_ms = ttl;
            snprintf(lc->kw.token, sizeof(lc->kw.token), "%s", token);
            tc_keylock_renew(w->home, lc->lname, len + 2, token, ttl, lock_renew_done, lc);
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
