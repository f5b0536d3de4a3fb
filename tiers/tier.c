/*
 * The tier layer between callers and backends: request validation, the
 * TTL-ratio rule on every set, the authoritative-expiry check on every hit,
 * per-thread counters, and completion of asynchronous requests.
 */
#include "tiers/tier.h"
#include "tiers/tier_impl.h"

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

const char *tc_tier_uri(const struct tc_tier *t)
{
    return t->uri;
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
    t->ops->ctx_dispose(c);
}

struct tc_tier *tc_tier_ctx_tier(const struct tc_tier_ctx *c)
{
    return c->tier;
}

/* Counts a finished request and applies the E check on hits. */
static enum tc_status finish(struct tc_tier_req *req, enum tc_status st)
{
    struct tc_tier_ctx *c = req->_ctx;

    switch (req->_op) {
    case OP_GET:
        BUMP(c, gets);
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

enum tc_status tc_tier_set(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct tc_tier *t = c->tier;
    enum tc_status st = start(c, req, OP_SET);
    if (st == TC_OK && req->value_len > 0 && req->value == NULL) {
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
    if (t->ops->stats != NULL) {
        t->ops->stats(t, emit, arg);
    }
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
    pthread_mutex_destroy(&t->_lock);
    t->ops->close(t);
    free(uri);
    free(scheme);
}
