/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The tier layer between callers and backends: request validation, the
 * TTL-ratio rule on every set, the authoritative-expiry check on every hit,
 * per-thread counters, completion of asynchronous requests, and sealing of
 * values at rest (encrypt=on, tiers/seal.h):
 *
 *   set:  value ──seal (newest key; AAD = header fields + key)──▶ backend stores
 *         header{ENCRYPTED, kid} + nonce|ciphertext|tag; the caller's value is
 *         put back when the set completes (finish)
 *   get:  backend returns header + sealed bytes (its XXH3 check passed) ──open──▶
 *         plaintext and a plaintext header; fails to open ──▶ TC_ECORRUPT
 *
 * Sealing sits here rather than in each backend so that every backend, and
 * every way a value leaves one (get, get_many, async completions), goes
 * through the same few lines, and backends never hold a key.
 */
#include "tiers/tier.h"
#include "tiers/tier_impl.h"
#include "tiers/seal.h"

#include <stdlib.h>
#include <string.h>

enum {
    OP_GET = 1,
    OP_SET,
    OP_DEL,
    OP_CLEAR,
    OP_LOCK_ACQUIRE,
    OP_LOCK_RELEASE,
    OP_LOCK_PEEK,
    OP_LOCK_RENEW,
    OP_COUNT,
};

/* One writer per ctx (its thread), so a relaxed load + store is enough and
 * avoids a locked read-modify-write on the hot path; stats readers use
 * relaxed loads (pairs with nothing: counters order nothing else). */
#define BUMP(c, field)                                                                             \
    atomic_store_explicit(&(c)->counters.field,                                                    \
                          atomic_load_explicit(&(c)->counters.field, memory_order_relaxed) + 1,    \
                          memory_order_relaxed)

/* A table of records per key id. */
struct census {
    struct tc_tier_key_count row[TC_TIER_CENSUS_KEYS];
    size_t n;
};

/* The rekey walk's state: used by the stepping thread and, during
 * ops->rewrite, by the backend's thread that calls rekey_one() while the
 * stepping thread waits; the census is read by any thread under t->_lock. */
struct tc_tier_rekey {
    struct tc_seal_ctx *sc;
    uint32_t newest;          /* the key records are moved to during this step */
    struct census step, pass; /* this step's count (redone on a retry); the pass's */
    uint64_t step_rekeyed;    /* this step's re-sealed records */
    struct census census;     /* the last complete pass: under t->_lock */
    uint64_t passes, rekeyed; /* under t->_lock */
};

const char *tc_tier_uri(const struct tc_tier *t)
{
    return t->uri;
}

struct tc_seal *tc_tier_seal(const struct tc_tier *t)
{
    return t->seal;
}

const char *tc_tier_scheme(const struct tc_tier *t)
{
    return t->scheme;
}

unsigned tc_tier_caps(const struct tc_tier *t)
{
    return t->ops->caps;
}

double tc_tier_ttl_ratio(const struct tc_tier *t)
{
    return t->ttl_ratio;
}

uint64_t tc_tier_max_ttl_ms(const struct tc_tier *t)
{
    return t->max_ttl_ms;
}

size_t tc_tier_max_key(const struct tc_tier *t)
{
    return t->max_key;
}

size_t tc_tier_max_value(const struct tc_tier *t)
{
    return t->max_value;
}

const char *tc_tier_health_name(enum tc_tier_health h)
{
    switch (h) {
    case TC_HEALTH_OK:
        return "ok";
    case TC_HEALTH_DEGRADED:
        return "degraded";
    case TC_HEALTH_DOWN:
        return "down";
    }
    return "unknown";
}

void tc_tier_ctx_base_init(struct tc_tier_ctx *c, struct tc_tier *t, struct event_base *base)
{
    c->tier = t;
    c->base = base;
    c->_seal = NULL;
    c->_next = NULL;
    c->_prev = NULL;
#define TC_X(name) atomic_init(&c->counters.name, 0);
    TC_TIER_COUNTERS(TC_X)
    TC_TIER_LOCK_COUNTERS(TC_X)
    TC_TIER_COUNT_COUNTERS(TC_X)
#undef TC_X
}

enum tc_status tc_tier_ctx_init(struct tc_tier *t, struct event_base *base,
                                struct tc_tier_ctx **out)
{
    struct tc_tier_ctx *c = NULL;
    enum tc_status st = t->ops->ctx_init(t, base, &c);
    if (st != TC_OK) {
        return st;
    }
    if (t->seal != NULL && (st = tc_seal_ctx_create(t->seal, &c->_seal)) != TC_OK) {
        t->ops->ctx_dispose(c);
        return st;
    }
    pthread_mutex_lock(&t->_lock);
    c->_next = t->_ctxs;
    c->_prev = NULL;
    if (t->_ctxs != NULL) {
        t->_ctxs->_prev = c;
    }
    t->_ctxs = c;
    pthread_mutex_unlock(&t->_lock);
    *out = c;
    return TC_OK;
}

void tc_tier_ctx_dispose(struct tc_tier_ctx *c)
{
    if (c == NULL) {
        return;
    }
    struct tc_tier *t = c->tier;
    pthread_mutex_lock(&t->_lock);
    if (c->_prev != NULL) {
        c->_prev->_next = c->_next;
    } else {
        t->_ctxs = c->_next;
    }
    if (c->_next != NULL) {
        c->_next->_prev = c->_prev;
    }
#define TC_X(name)                                                                                 \
    atomic_fetch_add_explicit(&t->_retired.name,                                                   \
                              atomic_load_explicit(&c->counters.name, memory_order_relaxed),       \
                              memory_order_relaxed);
    TC_TIER_COUNTERS(TC_X)
    TC_TIER_LOCK_COUNTERS(TC_X)
    TC_TIER_COUNT_COUNTERS(TC_X)
#undef TC_X
    pthread_mutex_unlock(&t->_lock);
    /* Unlinked first: completions of in-flight requests that run inside
     * ctx_dispose still count into c, which no stats reader sees any more;
     * they are shutdown noise. */
    struct tc_seal_ctx *sc = c->_seal;
    t->ops->ctx_dispose(c);
    tc_seal_ctx_destroy(sc);
}

struct tc_tier *tc_tier_ctx_tier(const struct tc_tier_ctx *c)
{
    return c->tier;
}

/*
 * Seals req's value for a sealing tier: the backend stores the sealed copy
 * under a header that says so. finish() puts the caller's value back.
 */
static enum tc_status seal_value(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    uint8_t fields[TC_ITEM_FIELDS_SIZE];
    if (req->value_len > (size_t)TC_ITEM_VALUE_MAX - TC_SEAL_OVERHEAD) {
        return TC_ETOOBIG;
    }
    size_t n = req->value_len + TC_SEAL_OVERHEAD;
    struct tc_item_hdr h = req->hdr;
    h.flags |= TC_ITEM_F_ENCRYPTED;
    h.key_id = tc_seal_current(c->_seal);
    h.value_len = (uint32_t)n;
    if (tc_item_encode_fields(&h, fields) != TC_OK) {
        return TC_EINVAL;
    }
    uint8_t *buf = malloc(n);
    if (buf == NULL) {
        return TC_ENOMEM;
    }
    enum tc_status st = tc_seal_encrypt(c->_seal, h.key_id, fields, sizeof(fields), req->key,
                                        req->key_len, req->value, req->value_len, buf);
    if (st != TC_OK) {
        free(buf);
        return TC_EIO;
    }
    req->_plain = req->value;
    req->_plain_len = req->value_len;
    req->_sealed = buf;
    req->value = buf;
    req->value_len = n;
    req->hdr = h;
    return TC_OK;
}

/* Puts back what seal_value() replaced. */
static void unseal_req(struct tc_tier_req *req)
{
    free(req->_sealed);
    req->_sealed = NULL;
    req->value = req->_plain;
    req->value_len = req->_plain_len;
    req->hdr.flags &= (uint8_t)~TC_ITEM_F_ENCRYPTED;
    req->hdr.key_id = 0;
    req->hdr.value_len = (uint32_t)req->_plain_len;
}

/*
 * Opens a hit in place. On a sealing tier only sealed records are values: a
 * plain one was written before encryption was turned on, or by someone
 * without the key, and is not trusted. A tier that does not seal has no key
 * to open a sealed record with. Either is a corrupt miss.
 */
static enum tc_status open_value(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    uint8_t fields[TC_ITEM_FIELDS_SIZE];
    size_t n = 0;
    int sealed = (req->hdr.flags & TC_ITEM_F_ENCRYPTED) != 0;
    if (!sealed) {
        return c->_seal == NULL ? TC_OK : TC_ECORRUPT;
    }
    /* Opened in place: a view (a block the tier lends) gets its own copy
     * first, since no writer may touch a block (tiers/buf.h). */
    if (c->_seal == NULL || tc_item_encode_fields(&req->hdr, fields) != TC_OK ||
        tc_buf_reserve(req->out, req->out->len) != TC_OK ||
        tc_seal_decrypt(c->_seal, req->hdr.key_id, fields, sizeof(fields), req->key, req->key_len,
                        req->out->data, req->out->len, &n) != TC_OK) {
        return TC_ECORRUPT;
    }
    req->out->len = n;
    req->etag = 0; /* the backend's was over the sealed bytes */
    req->hdr.flags &= (uint8_t)~TC_ITEM_F_ENCRYPTED;
    req->hdr.key_id = 0;
    req->hdr.value_len = (uint32_t)n;
    return TC_OK;
}

/* Counts a finished request and applies the E check on hits. */
static enum tc_status finish(struct tc_tier_req *req, enum tc_status st)
{
    struct tc_tier_ctx *c = req->_ctx;

    switch (req->_op) {
    case OP_GET:
        BUMP(c, gets);
        if (st == TC_OK && (st = open_value(c, req)) != TC_OK) {
            req->out->len = 0; /* never hand out bytes that did not open */
        }
        if (st == TC_OK && tc_item_expired(req->hdr.expire_ms, req->now_ms)) {
            /* A tier's local expiry is never past E, but a tier may be
             * shared with a process whose clock runs behind ours. */
            req->out->len = 0;
            st = TC_ENOTFOUND;
        }
        if (st == TC_OK) {
            BUMP(c, hits);
        } else if (st == TC_ENOTFOUND) {
            BUMP(c, misses);
        } else if (st == TC_ECORRUPT) {
            BUMP(c, corrupt); /* a record that failed verification: a miss */
        } else {
            BUMP(c, errors);
        }
        break;
    case OP_SET:
        if (req->_sealed != NULL) {
            unseal_req(req);
        }
        if (st == TC_OK) {
            BUMP(c, sets);
        } else if (st == TC_ETOOBIG) {
            BUMP(c, too_big);
        } else {
            BUMP(c, errors);
        }
        break;
    case OP_DEL:
        if (st == TC_ENOTFOUND) {
            st = TC_OK; /* idempotent */
        }
        if (st == TC_OK) {
            BUMP(c, deletes);
        } else {
            BUMP(c, errors);
        }
        break;
    case OP_CLEAR:
        if (st == TC_OK) {
            BUMP(c, clears);
        } else {
            BUMP(c, errors);
        }
        break;
    }
    req->status = st;
    return st;
}

void tc_tier_complete(struct tc_tier_req *req, enum tc_status st)
{
    finish(req, st);
    req->done(req);
}

static enum tc_status start(struct tc_tier_ctx *c, struct tc_tier_req *req, int op)
{
    req->_ctx = c;
    req->_op = op;
    req->_sealed = NULL;
    req->status = TC_EINPROGRESS;
    if (c->base != NULL && req->done == NULL && (c->tier->ops->caps & TC_TIER_CAP_ASYNC)) {
        return TC_EINVAL;
    }
    if (op != OP_CLEAR) {
        if (req->key == NULL || req->key_len == 0) {
            return TC_EINVAL;
        }
        if (req->key_len > c->tier->max_key) {
            return TC_ETOOBIG;
        }
    } else if (req->key_len > 0 && req->key == NULL) {
        return TC_EINVAL;
    } else if (req->key_len == 0) {
        req->key = ""; /* backends may memcmp the prefix; never with NULL */
    }
    return TC_OK;
}

/* Runs a backend operation and finishes it unless it went asynchronous. */
static enum tc_status run(struct tc_tier_req *req,
                          enum tc_status (*fn)(struct tc_tier_ctx *, struct tc_tier_req *))
{
    enum tc_status st = fn(req->_ctx, req);
    if (st == TC_EINPROGRESS) {
        return st;
    }
    return finish(req, st);
}

enum tc_status tc_tier_get(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    enum tc_status st = start(c, req, OP_GET);
    if (st == TC_OK && req->out == NULL) {
        st = TC_EINVAL;
    }
    if (st != TC_OK) {
        return finish(req, st);
    }
    req->out->len = 0;
    req->local_expire_ms = 0;
    req->etag = 0;
    return run(req, c->tier->ops->get);
}

void tc_tier_note_corrupt(struct tc_tier_ctx *c)
{
    BUMP(c, corrupt);
}

void tc_tier_get_many(struct tc_tier_ctx *c, struct tc_tier_req **reqs, size_t n)
{
    void (*fn)(struct tc_tier_ctx *, struct tc_tier_req **, size_t) = c->tier->ops->get_many;
    if (fn == NULL) {
        for (size_t i = 0; i < n; i++) {
            tc_tier_get(c, reqs[i]);
        }
        return;
    }
    while (n > 0) {
        struct tc_tier_req *ok[TC_TIER_GET_MANY_MAX];
        size_t m = 0, take = n < TC_TIER_GET_MANY_MAX ? n : TC_TIER_GET_MANY_MAX;
        for (size_t i = 0; i < take; i++) {
            struct tc_tier_req *req = reqs[i];
            enum tc_status st = start(c, req, OP_GET);
            if (st == TC_OK && req->out == NULL) {
                st = TC_EINVAL;
            }
            if (st != TC_OK) {
                finish(req, st);
                continue;
            }
            req->out->len = 0;
            req->local_expire_ms = 0;
            req->etag = 0;
            ok[m++] = req;
        }
        if (m > 0) {
            fn(c, ok, m);
        }
        for (size_t i = 0; i < m; i++) {
            finish(ok[i], ok[i]->status);
        }
        reqs += take;
        n -= take;
    }
}

/* Whether @p tags (@p len bytes) is 0..TC_TAGS_MAX tags of 1..TC_TAG_MAX bytes, each NUL-ended. */
static int tags_ok(const char *tags, size_t len)
{
    size_t n = 0, at = 0;
    while (at < len) {
        const char *end = memchr(tags + at, '\0', len - at);
        if (end == NULL || end == tags + at || (size_t)(end - tags - at) > TC_TAG_MAX ||
            ++n > TC_TAGS_MAX) {
            return 0;
        }
        at = (size_t)(end - tags) + 1;
    }
    return 1;
}

enum tc_status tc_tier_set(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct tc_tier *t = c->tier;
    enum tc_status st = start(c, req, OP_SET);
    if (st == TC_OK && req->value_len > 0 && req->value == NULL) {
        st = TC_EINVAL;
    }
    if (st == TC_OK && req->tags_len > 0 &&
        (req->tags == NULL || !tags_ok(req->tags, req->tags_len))) {
        st = TC_EINVAL;
    }
    if (st == TC_OK && (req->value_len > t->max_value || req->value_len > TC_ITEM_VALUE_MAX)) {
        st = TC_ETOOBIG;
    }
    if (st != TC_OK) {
        return finish(req, st);
    }
    req->hdr.value_len = (uint32_t)req->value_len;
    req->local_expire_ms =
        tc_item_local_expiry(req->now_ms, req->hdr.expire_ms, t->ttl_ratio, t->max_ttl_ms);
    if (req->local_expire_ms != 0 && req->local_expire_ms <= req->now_ms) {
        /* Written already expired: the newest write says "no value". */
        return run(req, t->ops->del);
    }
    /* Ours and the store's to set (tier.h, item.h). */
    req->hdr.flags &= (uint8_t) ~(TC_ITEM_F_ENCRYPTED | TC_ITEM_F_ETAG);
    req->hdr.key_id = 0;
    if (c->_seal != NULL && (st = seal_value(c, req)) != TC_OK) {
        return finish(req, st);
    }
    return run(req, t->ops->set);
}

enum tc_status tc_tier_del(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    enum tc_status st = start(c, req, OP_DEL);
    if (st != TC_OK) {
        return finish(req, st);
    }
    return run(req, c->tier->ops->del);
}

enum tc_status tc_tier_clear(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    enum tc_status st = start(c, req, OP_CLEAR);
    if (st == TC_OK && c->tier->ops->clear == NULL) {
        st = TC_ENOTSUP;
    }
    if (st == TC_OK && req->tags_len > 0) {
        /* A tag index to drop: one tag, NUL-ended, in a tier that keeps them. */
        if (!(c->tier->ops->caps & TC_TIER_CAP_TAGS)) {
            st = TC_ENOTSUP;
        } else if (req->tags == NULL || req->tags_len < 2 || req->tags_len > TC_TAG_MAX + 1 ||
                   ((const char *)req->tags)[req->tags_len - 1] != '\0' ||
                   memchr(req->tags, '\0', req->tags_len - 1) != NULL) {
            st = TC_EINVAL;
        }
    }
    if (st != TC_OK) {
        return finish(req, st);
    }
    req->count = 0;
    return run(req, c->tier->ops->clear);
}

enum tc_status tc_tier_sweep(struct tc_tier *t, uint64_t now_ms, size_t budget, uint64_t *removed)
{
    if (t->ops->sweep == NULL) {
        return TC_ENOTSUP;
    }
    return t->ops->sweep(t, now_ms, budget, removed);
}

void tc_tier_stats(struct tc_tier *t, tc_tier_stat_fn emit, void *arg)
{
    struct {
#define TC_X(name) uint64_t name;
        TC_TIER_COUNTERS(TC_X)
        TC_TIER_LOCK_COUNTERS(TC_X)
        TC_TIER_COUNT_COUNTERS(TC_X)
#undef TC_X
    } sum;

    pthread_mutex_lock(&t->_lock);
#define TC_X(name) sum.name = atomic_load_explicit(&t->_retired.name, memory_order_relaxed);
    TC_TIER_COUNTERS(TC_X)
    TC_TIER_LOCK_COUNTERS(TC_X)
    TC_TIER_COUNT_COUNTERS(TC_X)
#undef TC_X
    for (struct tc_tier_ctx *c = t->_ctxs; c != NULL; c = c->_next) {
#define TC_X(name) sum.name += atomic_load_explicit(&c->counters.name, memory_order_relaxed);
        TC_TIER_COUNTERS(TC_X)
        TC_TIER_LOCK_COUNTERS(TC_X)
        TC_TIER_COUNT_COUNTERS(TC_X)
#undef TC_X
    }
    pthread_mutex_unlock(&t->_lock);
#define TC_X(name) emit(arg, #name, sum.name, TC_STAT_COUNTER);
    TC_TIER_COUNTERS(TC_X)
    if (t->ops->caps & (TC_TIER_CAP_LOCK_HOST | TC_TIER_CAP_LOCK_CLUSTER)) {
        TC_TIER_LOCK_COUNTERS(TC_X)
    }
    if (t->ops->caps & TC_TIER_CAP_COUNT) {
        TC_TIER_COUNT_COUNTERS(TC_X)
    }
#undef TC_X
    if (t->seal != NULL && t->ops->rewrite != NULL) {
        uint64_t rekeyed = 0, passes = 0;
        pthread_mutex_lock(&t->_lock);
        if (t->_rekey != NULL) {
            rekeyed = t->_rekey->rekeyed;
            passes = t->_rekey->passes;
        }
        pthread_mutex_unlock(&t->_lock);
        emit(arg, "rekeyed", rekeyed, TC_STAT_COUNTER);
        emit(arg, "rekey_passes", passes, TC_STAT_COUNTER);
    }
    if (t->ops->stats != NULL) {
        t->ops->stats(t, emit, arg);
    }
}

/* ---- rekey and key census -------------------------------------------------------- */

static void census_add(struct census *c, uint32_t kid, uint64_t n)
{
    size_t i = 0;
    while (i < c->n && c->row[i].key_id != kid) {
        i++;
    }
    if (i == c->n) {
        if (c->n == TC_TIER_CENSUS_KEYS) {
            i = c->n - 1; /* full: the last row takes the rest (tier.h) */
        } else {
            c->row[c->n++] = (struct tc_tier_key_count){kid, 0};
        }
    }
    c->row[i].records += n;
}

static int by_key_id(const void *a, const void *b)
{
    uint32_t x = ((const struct tc_tier_key_count *)a)->key_id;
    uint32_t y = ((const struct tc_tier_key_count *)b)->key_id;
    return x < y ? -1 : x > y;
}

/* tc_tier_rewrite_fn: counts the record and moves it to the newest key. A
 * record that does not open (forged, or its key left the ring) is left as
 * it is: a read treats it as a corrupt miss, and it expires. */
static int rekey_one(void *arg, const void *key, size_t key_len, struct tc_item_hdr *h,
                     uint8_t *value)
{
    struct tc_tier_rekey *rk = arg;
    uint8_t fields[TC_ITEM_FIELDS_SIZE];
    if (key == NULL) {
        rk->step.n = 0;
        rk->step_rekeyed = 0;
        return 0;
    }
    uint32_t kid = (h->flags & TC_ITEM_F_ENCRYPTED) ? h->key_id : 0;
    if (kid == 0 || kid == rk->newest || tc_item_encode_fields(h, fields) != TC_OK) {
        census_add(&rk->step, kid, 1);
        return 0;
    }
    size_t n = 0, len = h->value_len;
    uint8_t *plain = malloc(len > 0 ? len : 1);
    if (plain == NULL) {
        census_add(&rk->step, kid, 1);
        return 0;
    }
    memcpy(plain, value, len);
    struct tc_item_hdr h2 = *h;
    h2.key_id = rk->newest;
    int moved = tc_seal_decrypt(rk->sc, kid, fields, sizeof(fields), key, key_len, plain, len,
                                &n) == TC_OK &&
                tc_item_encode_fields(&h2, fields) == TC_OK &&
                tc_seal_encrypt(rk->sc, rk->newest, fields, sizeof(fields), key, key_len, plain, n,
                                value) == TC_OK;
    tc_seal_wipe(plain, len);
    free(plain);
    if (!moved) {
        census_add(&rk->step, kid, 1);
        return 0; /* value may hold a partial write: the backend stores nothing */
    }
    *h = h2;
    census_add(&rk->step, rk->newest, 1);
    rk->step_rekeyed++;
    return 1;
}

enum tc_status tc_tier_rekey_step(struct tc_tier *t, size_t budget, uint64_t *rekeyed)
{
    if (t->seal == NULL || t->ops->rewrite == NULL) {
        return TC_ENOTSUP;
    }
    struct tc_tier_rekey *rk = t->_rekey;
    if (rk == NULL) {
        if ((rk = calloc(1, sizeof(*rk))) == NULL) {
            return TC_ENOMEM;
        }
        if (tc_seal_ctx_create(t->seal, &rk->sc) != TC_OK) {
            free(rk);
            return TC_ENOMEM;
        }
        pthread_mutex_lock(&t->_lock);
        t->_rekey = rk;
        pthread_mutex_unlock(&t->_lock);
    }
    rk->newest = tc_seal_current(rk->sc);
    rk->step.n = 0;
    rk->step_rekeyed = 0;
    enum tc_status st = t->ops->rewrite(t, rekey_one, rk, budget > 0 ? budget : 1);
    if (st != TC_OK && st != TC_EAGAIN) {
        return st;
    }
    for (size_t i = 0; i < rk->step.n; i++) {
        census_add(&rk->pass, rk->step.row[i].key_id, rk->step.row[i].records);
    }
    if (rekeyed != NULL) {
        *rekeyed += rk->step_rekeyed;
    }
    pthread_mutex_lock(&t->_lock);
    rk->rekeyed += rk->step_rekeyed;
    if (st == TC_OK) {
        rk->census = rk->pass;
        rk->passes++;
    }
    pthread_mutex_unlock(&t->_lock);
    if (st == TC_OK) {
        rk->pass.n = 0;
    }
    return st;
}

size_t tc_tier_key_census(struct tc_tier *t, struct tc_tier_key_count *out, size_t max,
                          uint64_t *passes)
{
    struct census c = {.n = 0};
    uint64_t p = 0;
    pthread_mutex_lock(&t->_lock);
    if (t->_rekey != NULL) {
        c = t->_rekey->census;
        p = t->_rekey->passes;
    }
    pthread_mutex_unlock(&t->_lock);
    qsort(c.row, c.n, sizeof(c.row[0]), by_key_id);
    for (size_t i = 0; i < c.n && i < max; i++) {
        out[i] = c.row[i];
    }
    if (passes != NULL) {
        *passes = p;
    }
    return c.n;
}

enum tc_tier_health tc_tier_health(struct tc_tier *t, char *detail, size_t len)
{
    if (detail != NULL && len > 0) {
        detail[0] = '\0';
    }
    if (t->ops->health == NULL) {
        return TC_HEALTH_OK;
    }
    return t->ops->health(t, detail, len);
}

enum tc_status tc_tier_on_invalidate(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg)
{
    if (t->ops->on_invalidate == NULL) {
        return TC_ENOTSUP;
    }
    return t->ops->on_invalidate(t, fn, arg);
}

/* ---- lease locks ------------------------------------------------------------ */

static enum tc_status lock_finish(struct tc_tier_lock_req *req, enum tc_status st)
{
    struct tc_tier_ctx *c = req->_ctx;
    if (st == TC_OK) {
        if (req->_op == OP_LOCK_ACQUIRE) {
            BUMP(c, locks_taken);
        } else if (req->_op == OP_LOCK_RELEASE) {
            BUMP(c, locks_released);
        } else if (req->_op == OP_LOCK_RENEW) {
            BUMP(c, locks_renewed);
        }
    } else if (st == TC_EEXIST && req->_op == OP_LOCK_ACQUIRE) {
        BUMP(c, locks_busy);
    } else if (st == TC_ENOTFOUND && req->_op == OP_LOCK_RELEASE) {
        BUMP(c, lock_release_refused);
    } else if ((st == TC_ENOTFOUND || st == TC_EEXIST) && req->_op == OP_LOCK_RENEW) {
        BUMP(c, lock_renew_refused);
    } else if (!(st == TC_ENOTFOUND && req->_op == OP_LOCK_PEEK)) {
        BUMP(c, lock_errors);
    }
    req->status = st;
    return st;
}

void tc_tier_lock_complete(struct tc_tier_lock_req *req, enum tc_status st)
{
    lock_finish(req, st);
    req->done(req);
}

static enum tc_status lock_run(struct tc_tier_ctx *c, struct tc_tier_lock_req *req, int op)
{
    const struct tc_tier_ops *ops = c->tier->ops;
    enum tc_status (*fn)(struct tc_tier_ctx *, struct tc_tier_lock_req *) =
        op == OP_LOCK_ACQUIRE   ? ops->lock_acquire
        : op == OP_LOCK_RELEASE ? ops->lock_release
        : op == OP_LOCK_RENEW   ? ops->lock_renew
                                : ops->lock_peek;
    req->_ctx = c;
    req->_op = op;
    req->status = TC_EINPROGRESS;
    req->remaining_ms = 0;
    if (fn == NULL) {
        req->status = TC_ENOTSUP;
        return TC_ENOTSUP; /* not counted: the tier has no locks at all */
    }
    enum tc_status st = TC_OK;
    if (c->base != NULL && req->done == NULL && (ops->caps & TC_TIER_CAP_ASYNC)) {
        st = TC_EINVAL;
    } else if (req->name == NULL || req->name_len == 0 || req->name_len > TC_LOCK_NAME_MAX) {
        st = TC_EINVAL;
    } else if ((op == OP_LOCK_ACQUIRE || op == OP_LOCK_RENEW) &&
               (req->ttl_ms == 0 || req->ttl_ms > TC_LOCK_TTL_MAX)) {
        st = TC_EINVAL;
    } else if ((op == OP_LOCK_RELEASE || op == OP_LOCK_RENEW) &&
               (req->token[0] == '\0' || memchr(req->token, '\0', TC_LOCK_TOKEN_MAX) == NULL)) {
        st = TC_EINVAL;
    }
    if (op != OP_LOCK_RELEASE && op != OP_LOCK_RENEW) {
        req->token[0] = '\0';
    }
    if (st != TC_OK) {
        return lock_finish(req, st);
    }
    st = fn(c, req);
    if (st == TC_EINPROGRESS) {
        return st;
    }
    return lock_finish(req, st);
}

enum tc_status tc_tier_lock_acquire(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    return lock_run(c, req, OP_LOCK_ACQUIRE);
}

enum tc_status tc_tier_lock_release(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    return lock_run(c, req, OP_LOCK_RELEASE);
}

enum tc_status tc_tier_lock_peek(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    return lock_run(c, req, OP_LOCK_PEEK);
}

enum tc_status tc_tier_lock_renew(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    return lock_run(c, req, OP_LOCK_RENEW);
}

/* ---- counters and rate limits ----------------------------------------------- */

const char *tc_limit_strategy_name(enum tc_limit_strategy s)
{
    switch (s) {
    case TC_LIMIT_FIXED:
        return "fixed";
    case TC_LIMIT_SLIDING:
        return "sliding";
    case TC_LIMIT_MOVING:
        return "moving";
    case TC_LIMIT_GCRA:
        return "gcra";
    }
    return NULL;
}

static enum tc_status count_finish(struct tc_tier_count_req *req, enum tc_status st)
{
    struct tc_tier_ctx *c = req->_ctx;
    if (st != TC_OK) {
        BUMP(c, count_errors);
    } else if (req->op == TC_LIMIT_HIT) {
        if (req->allowed) {
            BUMP(c, limit_allowed);
        } else {
            BUMP(c, limit_denied);
        }
    } else if (req->op == TC_COUNT_ADD) {
        BUMP(c, count_adds);
    }
    req->status = st;
    return st;
}

void tc_tier_count_complete(struct tc_tier_count_req *req, enum tc_status st)
{
    count_finish(req, st);
    req->done(req);
}

/* Whether the parameters of @p req make sense for its operation. */
static int count_valid(const struct tc_tier_count_req *req)
{
    if (req->key == NULL || req->key_len == 0 || req->key_len > TC_LOCK_NAME_MAX) {
        return 0;
    }
    switch (req->op) {
    case TC_COUNT_ADD:
        return req->ttl_ms <= TC_COUNT_TTL_MAX;
    case TC_COUNT_GET:
    case TC_COUNT_RESET:
        return 1;
    case TC_LIMIT_CLEAR:
        return req->strategy == 0 || tc_limit_strategy_name(req->strategy) != NULL;
    case TC_LIMIT_HIT:
    case TC_LIMIT_PEEK:
        if (tc_limit_strategy_name(req->strategy) == NULL || req->limit == 0 ||
            req->limit > TC_LIMIT_MAX || req->window_ms == 0 || req->window_ms > TC_COUNT_TTL_MAX ||
            req->cost > req->limit || req->burst > TC_LIMIT_MAX) {
            return 0;
        }
        return req->strategy != TC_LIMIT_MOVING || req->limit <= TC_LIMIT_MOVING_MAX;
    }
    return 0;
}

enum tc_status tc_tier_count(struct tc_tier_ctx *c, struct tc_tier_count_req *req)
{
    const struct tc_tier_ops *ops = c->tier->ops;
    req->_ctx = c;
    req->_op = OP_COUNT;
    req->status = TC_EINPROGRESS;
    req->value = 0;
    req->ttl_ms_left = 0;
    req->overflow = 0;
    req->allowed = 0;
    req->remaining = req->reset_ms = req->retry_ms = req->start_ms = 0;
    if (ops->count == NULL || !(ops->caps & TC_TIER_CAP_COUNT)) {
        req->status = TC_ENOTSUP;
        return TC_ENOTSUP;
    }
    if ((c->base != NULL && req->done == NULL && (ops->caps & TC_TIER_CAP_ASYNC)) ||
        !count_valid(req)) {
        return count_finish(req, TC_EINVAL);
    }
    enum tc_status st = ops->count(c, req);
    if (st == TC_EINPROGRESS) {
        return st;
    }
    return count_finish(req, st);
}

enum tc_status tc_tier_on_lock_release(struct tc_tier *t, tc_tier_lock_release_fn fn, void *arg)
{
    if (t->ops->on_lock_release == NULL) {
        return TC_ENOTSUP;
    }
    return t->ops->on_lock_release(t, fn, arg);
}

void tc_tier_close(struct tc_tier *t)
{
    if (t == NULL) {
        return;
    }
    char *uri = t->uri;
    char *scheme = t->scheme;
    if (t->_rekey != NULL) {
        tc_seal_ctx_destroy(t->_rekey->sc);
        free(t->_rekey);
    }
    pthread_mutex_destroy(&t->_lock);
    t->ops->close(t);
    free(uri);
    free(scheme);
}

/* ---- key listing and published clears (issue 15) ------------------------------ */

enum tc_status tc_tier_on_invalidate_prefix(struct tc_tier *t, tc_tier_invalidate_prefix_fn fn,
                                            void *arg)
{
    if (t->ops->on_invalidate_prefix == NULL) {
        return TC_ENOTSUP;
    }
    return t->ops->on_invalidate_prefix(t, fn, arg);
}

static enum tc_status list_finish(struct tc_tier_list_req *req, enum tc_status st)
{
    if (st != TC_OK && st != TC_EINVAL && st != TC_ENOTSUP) {
        BUMP(req->_ctx, errors);
    }
    req->status = st;
    return st;
}

enum tc_status tc_tier_list(struct tc_tier_ctx *c, struct tc_tier_list_req *req)
{
    req->_ctx = c;
    req->count = 0;
    req->status = TC_EINPROGRESS;
    enum tc_status st = TC_OK;
    if (c->tier->ops->list == NULL || !(c->tier->ops->caps & TC_TIER_CAP_LIST)) {
        st = TC_ENOTSUP;
    } else if (req->limit == 0 || req->out == NULL || req->next == NULL ||
               req->cursor_len > TC_TIER_CURSOR_MAX || (req->cursor_len && !req->cursor) ||
               (req->prefix_len && !req->prefix) || req->prefix_len > c->tier->max_key ||
               req->tag_len > TC_TAG_MAX || (req->tag_len && !req->tag) ||
               (req->tag_len && !(c->tier->ops->caps & TC_TIER_CAP_TAGS)) ||
               (c->base != NULL && req->done == NULL && (c->tier->ops->caps & TC_TIER_CAP_ASYNC))) {
        st = TC_EINVAL;
    }
    if (st != TC_OK) {
        return list_finish(req, st);
    }
    if (req->prefix_len == 0) {
        req->prefix = ""; /* backends may memcmp the prefix; never with NULL */
    }
    req->next->len = 0;
    st = c->tier->ops->list(c, req);
    return st == TC_EINPROGRESS ? st : list_finish(req, st);
}

void tc_tier_list_complete(struct tc_tier_list_req *req, enum tc_status st)
{
    list_finish(req, st);
    req->done(req);
}
