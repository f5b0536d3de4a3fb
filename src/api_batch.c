/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * /batch/get, /batch/set, /batch/delete: many keys in one request (issue 15).
 *
 *   POST /batch/get    {"keys":[K...]}
 *        200 {"items":[{"key","value","ttl","tier"[,"encoding"][,"stale"]}
 *                      | {"key","error":"not_found"} ...]}   in the order asked
 *   POST /batch/set    {"items":[{"key","value","ttl"[,"tags"]}...]}
 *   POST /batch/delete {"keys":[K...]}
 *        200 {"items":[{"key","ok":true} | {"key","error":CODE} ...]}
 *
 * A batch get first looks every key up in L1 at once when L1 answers
 * synchronously (tc_tier_get_many: the shm tier overlaps the cache misses
 * of the batch, LMDB shares one read transaction); a fresh hit there is
 * answered as read-through would answer it. Every other key (a miss, a
 * stale or damaged copy) goes through read-through (src/readthrough.h)
 * exactly as a single /cache/{key} request does, all of them at once: each
 * lookup walks the tiers, back-fills the faster ones and takes part in
 * dogpile protection like a single GET; the Redis requests of the batch go
 * out on the worker's one connection without waiting for each other
 * (pipelined).
 * An item is written by the same function as a single GET's body
 * (tc_api_cache_render), plus its "tier".
 *
 * A request is checked whole before anything starts: a malformed item, a
 * bad key or TTL, or more than max-batch keys answers 400 or 413 and
 * nothing is read or stored.
 */
#include "src/api.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/text.h"

#include <stdlib.h>
#include <string.h>

/* ---- the request body ----------------------------------------------------------------- */

/*
 * The array @p name of @p doc, checked against max-batch; NULL when it
 * answered (missing, not an array, too long).
 */
static json_t *batch_array(struct tc_worker *w, struct tc_http_req *r, json_t *doc,
                           const char *name, const char *usage)
{
    json_t *a = json_object_get(doc, name);
    if (a == NULL) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "the body has no \"%s\": send %s", name,
                     usage);
        return NULL;
    }
    if (!json_is_array(a)) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "\"%s\" must be an array: send %s", name,
                     usage);
        return NULL;
    }
    uint64_t max = w->srv->conf->max_batch;
    if (json_array_size(a) > max) {
        tc_api_error(w, r, TC_API_TOO_LARGE, NULL,
                     "%zu %s in one request; at most %llu (max-batch)", json_array_size(a), name,
                     (unsigned long long)max);
        return NULL;
    }
    return a;
}

/* Checks that @p v (element @p i of @p what) is a key; -1 when it answered. */
static int check_key(struct tc_worker *w, struct tc_http_req *r, json_t *v, const char *what,
                     size_t i)
{
    if (!json_is_string(v)) {
        tc_api_error(w, r, TC_API_BAD_KEY, NULL, "%s[%zu] must be a string (a key)", what, i);
        return -1;
    }
    size_t n = json_string_length(v);
    if (n == 0 || n > TC_KEY_MAX) {
        tc_api_error(w, r, n ? TC_API_KEY_TOO_LONG : TC_API_BAD_KEY, NULL,
                     "%s[%zu]: a key is 1 to %u bytes (it is %zu)", what, i, TC_KEY_MAX, n);
        return -1;
    }
    return 0;
}

/* ---- one batch in flight ---------------------------------------------------------------- */

struct batch;

struct batch_item {
    struct batch *b;
    const char *key; /* in b->doc */
    size_t key_len;
    struct tc_buf json;           /* the item's answer, {...} */
    const struct tc_buf *json_of; /* get: the value json was rendered from */
    struct tc_stack_op *op;       /* set: the write, until started */
};

struct batch {
    struct tc_worker *w;
    struct tc_http_req *r;
    json_t *doc; /* keeps the keys */
    size_t n;
    size_t pending; /* items not answered, + 1 while they are being started */
    struct batch_item items[];
};

static struct batch *batch_create(struct tc_worker *w, struct tc_http_req *r, json_t *doc, size_t n)
{
    struct batch *b = calloc(1, sizeof(*b) + n * sizeof(b->items[0]));
    if (b == NULL) {
        return NULL;
    }
    b->w = w;
    b->r = r;
    b->doc = doc;
    b->n = n;
    b->pending = n + 1;
    for (size_t i = 0; i < n; i++) {
        b->items[i].b = b;
    }
    return b;
}

static void batch_destroy(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        tc_buf_deinit(&b->items[i].json);
        if (b->items[i].op != NULL) {
            tc_stack_op_release(b->items[i].op);
        }
    }
    json_decref(b->doc);
    free(b);
}

/* Writes {"key":K,"error":CODE} (or "ok":true when @p code is NULL) as the item's answer. */
static void item_outcome(struct batch_item *it, const char *code)
{
    struct tc_buf *o = &it->json;
    o->len = 0;
    enum tc_status st = tc_buf_append(o, "{\"key\":", 7);
    if (st == TC_OK) {
        st = tc_api_json_string(o, it->key, it->key_len);
    }
    if (st == TC_OK && code == NULL) {
        st = tc_buf_append(o, ",\"ok\":true}", 11);
    } else if (st == TC_OK) {
        st = tc_buf_append(o, ",\"error\":\"", 10);
        if (st == TC_OK) {
            st = tc_buf_append(o, code, strlen(code));
        }
        if (st == TC_OK) {
            st = tc_buf_append(o, "\"}", 2);
        }
    }
    if (st != TC_OK) {
        o->len = 0; /* answered as a whole 503 by batch_item_done */
    }
}

/* One item answered: the last one answers the request. */
static void batch_item_done(struct batch *b)
{
    if (--b->pending > 0) {
        return;
    }
    struct tc_buf body = TC_BUF_INIT;
    size_t total = 16;
    int ok = 1;
    for (size_t i = 0; i < b->n; i++) {
        total += b->items[i].json.len + 1;
        ok &= b->items[i].json.len > 0;
    }
    enum tc_status st = ok ? tc_buf_reserve(&body, total) : TC_ENOMEM;
    if (st == TC_OK) {
        tc_buf_append(&body, "{\"items\":[", 10);
        for (size_t i = 0; i < b->n; i++) {
            if (i > 0) {
                tc_buf_append(&body, ",", 1);
            }
            tc_buf_append(&body, b->items[i].json.data, b->items[i].json.len);
        }
        tc_buf_append(&body, "]}", 2);
        tc_api_respond(b->w, b->r, 200, "application/json", body.data, body.len, NULL);
    } else {
        tc_api_status(b->w, b->r, TC_ENOMEM);
    }
    tc_buf_deinit(&body);
    batch_destroy(b);
}

/* ---- /batch/get --------------------------------------------------------------------------- */

static enum tc_status add_tier(struct tc_buf *j, const char *tier);

/*
 * Answers from L1 the items it holds fresh, all looked up in one
 * tc_tier_get_many; marks them done in @p done. Only for an L1 that
 * answers at once (not ASYNC) and is up: anything else, and every item
 * not answered here, is read through the stack.
 */
static void l1_pass(struct batch *b, uint8_t *done)
{
    struct tc_worker *w = b->w;
    struct tc_stack *s = w->srv->stack;
    if (tc_stack_ntiers(s) == 0 || tc_stack_tier_down(s, 0) ||
        (tc_tier_caps(tc_stack_tier(s, 0)) & TC_TIER_CAP_ASYNC)) {
        return;
    }
    struct tc_tier_ctx *c = tc_stack_ctx_tier(w->sc, 0);
    uint64_t now = tc_clock_ms();
    struct tc_tier_req reqs[TC_TIER_GET_MANY_MAX], *rp[TC_TIER_GET_MANY_MAX];
    struct tc_buf vals[TC_TIER_GET_MANY_MAX];
    for (size_t at = 0; at < b->n; at += TC_TIER_GET_MANY_MAX) {
        size_t m = b->n - at < TC_TIER_GET_MANY_MAX ? b->n - at : TC_TIER_GET_MANY_MAX;
        for (size_t i = 0; i < m; i++) {
            struct batch_item *it = &b->items[at + i];
            tc_buf_init(&vals[i]);
            memset(&reqs[i], 0, sizeof(reqs[i]));
            reqs[i].key = it->key;
            reqs[i].key_len = it->key_len;
            reqs[i].now_ms = now;
            reqs[i].out = &vals[i];
            rp[i] = &reqs[i];
        }
        tc_tier_get_many(c, rp, m);
        for (size_t i = 0; i < m; i++) {
            struct batch_item *it = &b->items[at + i];
            uint64_t fresh = tc_item_fresh_until(&reqs[i].hdr);
            /* Fresh and rendered as a single GET would render it; a stale,
             * damaged or unrenderable copy is left to read-through, which
             * serves stale values and scrubs bad copies. */
            if (reqs[i].status == TC_OK && (fresh == 0 || fresh > now)) {
                it->json.len = 0;
                if (tc_api_cache_render(it->key, it->key_len, &vals[i], &reqs[i].hdr, now,
                                        &it->json) == TC_OK &&
                    add_tier(&it->json, tc_api_tier_label(0)) == TC_OK) {
                    tc_worker_count_read(w, TC_READ_HIT, 0);
                    done[at + i] = 1;
                }
            }
            tc_buf_deinit(&vals[i]);
        }
    }
}

/* Read-through's accept hook, as for a single GET: a value that does not
 * render is rejected and the lookup goes on to the next tier. */
static int get_accept(void *arg, const void *key, size_t key_len, const struct tc_buf *value,
                      const struct tc_item_hdr *hdr, uint64_t now_ms)
{
    struct batch_item *it = arg;
    it->json.len = 0;
    it->json_of = NULL;
    enum tc_status st = tc_api_cache_render(key, key_len, value, hdr, now_ms, &it->json);
    if (st == TC_OK) {
        it->json_of = value;
    }
    return st != TC_ECORRUPT;
}

/* Ends the rendered {...} of a value with its "tier" (NULL: fetched from the origin). */
static enum tc_status add_tier(struct tc_buf *j, const char *tier)
{
    if (j->len == 0 || j->data[j->len - 1] != '}') {
        return TC_EINVAL;
    }
    j->len--;
    char tail[40];
    int n = tier ? snprintf(tail, sizeof(tail), ",\"tier\":\"%s\"}", tier)
                 : snprintf(tail, sizeof(tail), ",\"tier\":null,\"origin\":true}");
    return tc_buf_append(j, tail, (size_t)n);
}

static void get_done(void *arg, const struct tc_rt_result *res)
{
    struct batch_item *it = arg;
    struct tc_worker *w = it->b->w;
    switch (res->outcome) {
    case TC_RT_HIT:
    case TC_RT_STALE:
    case TC_RT_FILLED: {
        int tier = res->outcome == TC_RT_FILLED ? -1 : res->tier;
        tc_worker_count_read(w,
                             res->outcome == TC_RT_HIT     ? TC_READ_HIT
                             : res->outcome == TC_RT_STALE ? TC_READ_STALE
                                                           : TC_READ_MISS,
                             tier);
        enum tc_status st = TC_OK;
        if (it->json_of != res->value) {
            it->json.len = 0;
            st = tc_api_cache_render(res->key, res->key_len, res->value, res->hdr, res->now_ms,
                                     &it->json);
        }
        it->json_of = NULL;
        if (st == TC_OK) {
            st = add_tier(&it->json, tier >= 0 ? tc_api_tier_label(tier) : NULL);
        }
        if (st != TC_OK) {
            tc_log(TC_LOG_WARN, "cannot render a value of a batch: %s", tc_strerror(st));
            item_outcome(it, "unavailable");
        }
        break;
    }
    case TC_RT_MISS:
    case TC_RT_LEASE_GRANTED: /* not asked for: plain and origin modes grant none */
    case TC_RT_LEASE_TIMEOUT:
        tc_worker_count_read(w, TC_READ_MISS, -1);
        item_outcome(it, "not_found");
        break;
    case TC_RT_WAIT_TIMEOUT:
        item_outcome(it, "origin_timeout");
        break;
    case TC_RT_ORIGIN_FAILED:
        tc_worker_count_read(w, TC_READ_MISS, -1);
        item_outcome(it, res->status == TC_ETIMEOUT ? "origin_timeout" : "origin_error");
        break;
    case TC_RT_FAILED:
    default:
        item_outcome(it, "unavailable");
        break;
    }
    batch_item_done(it->b);
}

static const char *const keys_fields[] = {"keys", NULL};
#define KEYS_USAGE "{\"keys\": [\"k1\", \"k2\"]}"

/* A /batch/get or /batch/delete: {"keys":[...]} checked whole, as a batch
 * whose items have their keys; NULL when it answered (or *st to answer). */
static struct batch *keys_batch(struct tc_worker *w, struct tc_http_req *r, enum tc_status *st)
{
    *st = TC_OK;
    json_t *doc = tc_api_body_object(w, r, keys_fields, KEYS_USAGE);
    json_t *keys = doc ? batch_array(w, r, doc, "keys", KEYS_USAGE) : NULL;
    size_t n = keys ? json_array_size(keys) : 0;
    for (size_t i = 0; keys != NULL && i < n; i++) {
        if (check_key(w, r, json_array_get(keys, i), "keys", i) != 0) {
            keys = NULL;
        }
    }
    struct batch *b = keys ? batch_create(w, r, doc, n) : NULL;
    if (b == NULL) {
        json_decref(doc);
        *st = keys ? TC_ENOMEM : TC_OK;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_array_get(keys, i);
        b->items[i].key = json_string_value(k);
        b->items[i].key_len = json_string_length(k);
    }
    return b;
}

enum tc_status tc_api_batch_get(struct tc_worker *w, struct tc_http_req *r)
{
    enum tc_status st;
    struct batch *b = keys_batch(w, r, &st);
    if (b == NULL) {
        return st;
    }
    size_t n = b->n;
    /* The mode and lease of a single GET without X-Cache-Lease (src/api_cache.c). */
    const struct tc_conf *conf = w->srv->conf;
    enum tc_rt_mode mode = conf->origin[0] != '\0' ? TC_RT_ORIGIN : TC_RT_PLAIN;
    uint64_t lease_ms = mode == TC_RT_ORIGIN ? conf->origin_timeout_ms + 1000 : conf->lease_ms;
    uint8_t *done = calloc(n ? n : 1, 1);
    if (done == NULL) {
        batch_destroy(b);
        return TC_ENOMEM;
    }
    l1_pass(b, done);
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &b->items[i];
        if (done[i]) {
            batch_item_done(b);
            continue;
        }
        if (tc_rt_get(&w->rt, it->key, it->key_len, mode, lease_ms, r->now_ms, get_accept, get_done,
                      it) != TC_OK) {
            item_outcome(it, "unavailable");
            batch_item_done(b);
        }
    }
    free(done);
    batch_item_done(b);
    return TC_OK;
}

/* ---- /batch/set and /batch/delete ----------------------------------------------------------- */

static void write_done(void *arg, const struct tc_rt_write_result *res)
{
    struct batch_item *it = arg;
    switch (res->outcome) {
    case TC_RT_STORED:
        item_outcome(it, NULL);
        break;
    case TC_RT_REFUSED:
    default:
        item_outcome(it, res->status == TC_ETOOBIG ? "payload_too_large" : "unavailable");
        break;
    }
    batch_item_done(it->b);
}

/* Starts the write of every item (their ops made), then answers when all are done. */
static void start_writes(struct batch *b, int is_set)
{
    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        struct tc_stack_op *op = it->op;
        it->op = NULL; /* taken over by tc_rt_set/del, even on failure */
        enum tc_status st = is_set ? tc_rt_set(&b->w->rt, op, NULL, write_done, it)
                                   : tc_rt_del(&b->w->rt, op, write_done, it);
        if (st != TC_OK) {
            item_outcome(it, "unavailable");
            batch_item_done(b);
        }
    }
    batch_item_done(b);
}

static const char *const set_fields[] = {"items", NULL};
static const char *const set_item_fields[] = {"key", "value", "ttl", "tags", NULL};
#define SET_USAGE "{\"items\": [{\"key\": \"k1\", \"value\": ..., \"ttl\": 60}]}"

/* Reads item @p i of a /batch/set into it->op; -1 when it answered. */
static int read_set_item(struct batch *b, size_t i, json_t *o, uint64_t now_ms)
{
    struct tc_worker *w = b->w;
    struct tc_http_req *r = b->r;
    const struct tc_conf *conf = w->srv->conf;
    struct batch_item *it = &b->items[i];
    if (!json_is_object(o)) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "items[%zu] must be an object like {\"key\": \"k1\", \"value\": ...}", i);
        return -1;
    }
    char where[40];
    snprintf(where, sizeof(where), "items[%zu]", i);
    if (tc_api_body_fields(w, r, o, set_item_fields, where) != 0) {
        return -1;
    }
    json_t *k = json_object_get(o, "key");
    if (k == NULL) {
        tc_api_error(w, r, TC_API_BAD_KEY, NULL, "items[%zu] has no \"key\"", i);
        return -1;
    }
    if (check_key(w, r, k, "items[].key", i) != 0) {
        return -1;
    }
    json_t *value = json_object_get(o, "value");
    if (value == NULL) {
        tc_api_error(w, r, TC_API_MISSING_VALUE, NULL, "items[%zu] has no \"value\"", i);
        return -1;
    }
    uint64_t ttl_ms = conf->default_ttl_ms;
    json_t *ttl = json_object_get(o, "ttl");
    char what[40];
    snprintf(what, sizeof(what), "items[%zu].ttl", i);
    if (ttl != NULL && !json_is_null(ttl) && tc_api_parse_ttl(w, r, ttl, what, &ttl_ms) != 0) {
        return -1;
    }
    it->key = json_string_value(k);
    it->key_len = json_string_length(k);
    if ((it->op = tc_stack_op_create(w->sc, it->key, it->key_len, now_ms)) == NULL ||
        tc_api_value_from_json(value, it->op) != TC_OK) {
        tc_api_status(w, r, TC_ENOMEM);
        return -1;
    }
    if (tc_api_tags_json(w, r, json_object_get(o, "tags"), &it->op->tags) != 0) {
        return -1;
    }
    if (it->op->value.len > conf->max_value) {
        tc_api_error(w, r, TC_API_TOO_LARGE, NULL,
                     "items[%zu]: the value is %zu bytes; the largest accepted is %llu", i,
                     it->op->value.len, (unsigned long long)conf->max_value);
        return -1;
    }
    tc_rt_set_expiry(w->rt.opt, &it->op->hdr, now_ms, ttl_ms);
    return 0;
}

enum tc_status tc_api_batch_set(struct tc_worker *w, struct tc_http_req *r)
{
    json_t *doc = tc_api_body_object(w, r, set_fields, SET_USAGE);
    if (doc == NULL) {
        return TC_OK;
    }
    json_t *items = batch_array(w, r, doc, "items", SET_USAGE);
    if (items == NULL) {
        json_decref(doc);
        return TC_OK;
    }
    struct batch *b = batch_create(w, r, doc, json_array_size(items));
    if (b == NULL) {
        json_decref(doc);
        return TC_ENOMEM;
    }
    uint64_t now = tc_clock_ms();
    for (size_t i = 0; i < b->n; i++) {
        if (read_set_item(b, i, json_array_get(items, i), now) != 0) {
            batch_destroy(b); /* nothing stored */
            return TC_OK;
        }
    }
    start_writes(b, 1);
    return TC_OK;
}

enum tc_status tc_api_batch_delete(struct tc_worker *w, struct tc_http_req *r)
{
    enum tc_status st;
    struct batch *b = keys_batch(w, r, &st);
    if (b == NULL) {
        return st;
    }
    size_t n = b->n;
    uint64_t now = tc_clock_ms();
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &b->items[i];
        if ((it->op = tc_stack_op_create(w->sc, it->key, it->key_len, now)) == NULL) {
            batch_destroy(b);
            return TC_ENOMEM;
        }
    }
    start_writes(b, 0);
    return TC_OK;
}
