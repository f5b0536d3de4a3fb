/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/stack.h"
#include "src/clock.h"
#include "src/log.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cross-host invalidation: when another tiercache process writes or deletes
 * a key through shared remote tier `remote`, the key is removed from every
 * faster tier here. The callback runs on the remote tier's own subscriber
 * thread, which gets its own synchronous (NULL event_base) tier ctxs. */
struct stack_inval {
    struct tc_stack *s;
    size_t remote;
    struct tc_tier_ctx *ctx[TC_STACK_MAX_TIERS]; /* made on first use, on that thread */
    _Atomic uint64_t applied, lost;
};

struct tc_stack {
    struct tc_tier *tiers[TC_STACK_MAX_TIERS];
    size_t n;
    _Atomic int down[TC_STACK_MAX_TIERS]; /* written by the sweeper, read by workers */
    struct stack_inval *inval[TC_STACK_MAX_TIERS];
};

/* Deletes @p key (or, with @p prefix, clears every key starting with it)
 * from every tier faster than iv->remote, on the subscriber's thread. */
static void inval_apply(struct stack_inval *iv, const void *key, size_t key_len, int prefix)
{
    struct tc_stack *s = iv->s;
    for (size_t i = 0; i < iv->remote; i++) {
        if (iv->ctx[i] == NULL && tc_tier_ctx_init(s->tiers[i], NULL, &iv->ctx[i]) != TC_OK) {
            iv->ctx[i] = NULL;
            continue;
        }
        struct tc_tier_req r = {.key = key, .key_len = key_len, .now_ms = tc_clock_ms()};
        enum tc_status st = prefix ? tc_tier_clear(iv->ctx[i], &r) : tc_tier_del(iv->ctx[i], &r);
        if (st != TC_OK) {
            tc_log(TC_LOG_WARN, "invalidation of a %s in l%zu failed: %s", prefix ? "purge" : "key",
                   i + 1, tc_strerror(st));
        }
    }
    atomic_fetch_add_explicit(&iv->applied, 1, memory_order_relaxed);
}

static void on_invalidate(void *arg, const void *key, size_t key_len)
{
    struct stack_inval *iv = arg;
    if (key == NULL) {
        /* The subscription was lost for a while: messages may be missed.
         * Staleness stays bounded by the faster tiers' own TTLs (ttl_ratio,
         * max_ttl); clearing whole tiers here would cost more than it saves. */
        atomic_fetch_add_explicit(&iv->lost, 1, memory_order_relaxed);
        tc_log(TC_LOG_WARN, "invalidations from l%zu may have been missed (subscription lost)",
               iv->remote + 1);
        return;
    }
    inval_apply(iv, key, key_len, 0);
}

/* A clear by prefix that another process made through shared remote tier
 * iv->remote (a purge, issue 15): the same prefix goes from every faster
 * tier here. Same thread and ctxs as on_invalidate. */
static void on_invalidate_prefix(void *arg, const void *prefix, size_t prefix_len)
{
    inval_apply(arg, prefix, prefix_len, 1);
}

uint64_t tc_stack_invalidations(const struct tc_stack *s, uint64_t *lost)
{
    uint64_t n = 0, l = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->inval[i] != NULL) {
            n += atomic_load_explicit(&s->inval[i]->applied, memory_order_relaxed);
            l += atomic_load_explicit(&s->inval[i]->lost, memory_order_relaxed);
        }
    }
    if (lost != NULL) {
        *lost = l;
    }
    return n;
}

struct tc_stack_ctx {
    struct tc_stack *stack;
    struct tc_tier_ctx *ctx[TC_STACK_MAX_TIERS];
    struct tc_hist hist[TC_STACK_MAX_TIERS][3];
    int closing;                  /* set while disposing: completions start no new requests */
    struct tc_stack_op *free_ops; /* recycled ops: a request allocates nothing */
    unsigned nfree;
};

#define MAX_FREE_OPS 256

/* What a tier request of an op is doing (op->_phase[i]). */
enum { PH_NONE = 0, PH_LOOKUP, PH_FILL, PH_WRITE, PH_CLEANUP, PH_DELETE, PH_SCRUB };

struct tc_stack *tc_stack_create(struct tc_tier **tiers, size_t n)
{
    if (n > TC_STACK_MAX_TIERS) {
        return NULL;
    }
    struct tc_stack *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        s->tiers[i] = tiers[i];
        atomic_init(&s->down[i], 0);
    }
    s->n = n;
    for (size_t i = 1; i < n; i++) {
        /* Only a tier shared with other hosts can tell us about their writes,
         * and only faster tiers below it need cleaning. */
        if (!(tc_tier_caps(tiers[i]) & TC_TIER_CAP_REMOTE)) {
            continue;
        }
        struct stack_inval *iv = calloc(1, sizeof(*iv));
        if (iv == NULL) {
            continue;
        }
        iv->s = s;
        iv->remote = i;
        if (tc_tier_on_invalidate(tiers[i], on_invalidate, iv) == TC_OK) {
            s->inval[i] = iv;
            /* Optional: a tier without it publishes no clears either. */
            (void)tc_tier_on_invalidate_prefix(tiers[i], on_invalidate_prefix, iv);
            tc_log(TC_LOG_INFO, "l%zu: writes by other hosts invalidate l1..l%zu here", i + 1, i);
        } else {
            free(iv);
        }
    }
    return s;
}

void tc_stack_destroy(struct tc_stack *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        struct stack_inval *iv = s->inval[i];
        if (iv == NULL) {
            continue;
        }
        /* After this returns the callback neither runs nor will run. */
        tc_tier_on_invalidate(s->tiers[i], NULL, NULL);
        (void)tc_tier_on_invalidate_prefix(s->tiers[i], NULL, NULL);
        for (size_t k = 0; k < iv->remote; k++) {
            tc_tier_ctx_dispose(iv->ctx[k]);
        }
        free(iv);
    }
    for (size_t i = s->n; i-- > 0;) {
        tc_tier_close(s->tiers[i]);
    }
    free(s);
}

size_t tc_stack_ntiers(const struct tc_stack *s)
{
    return s->n;
}

struct tc_tier *tc_stack_tier(const struct tc_stack *s, size_t i)
{
    return s->tiers[i];
}

int tc_stack_tier_down(const struct tc_stack *s, size_t i)
{
    /* Relaxed: a stale answer only means one more or one fewer skipped try. */
    return atomic_load_explicit(&((struct tc_stack *)s)->down[i], memory_order_relaxed);
}

enum tc_tier_health tc_stack_check_health(struct tc_stack *s, char *detail, size_t len)
{
    size_t used = 0, down = 0;
    enum tc_tier_health worst = TC_HEALTH_OK;
    if (len > 0) {
        detail[0] = '\0';
    }
    for (size_t i = 0; i < s->n; i++) {
        char why[256];
        enum tc_tier_health h = tc_tier_health(s->tiers[i], why, sizeof(why));
        int was = atomic_load_explicit(&s->down[i], memory_order_relaxed);
        atomic_store_explicit(&s->down[i], h == TC_HEALTH_DOWN, memory_order_relaxed);
        if (was != (h == TC_HEALTH_DOWN)) {
            tc_log(h == TC_HEALTH_DOWN ? TC_LOG_WARN : TC_LOG_INFO, "tier l%zu (%s) is %s%s%s",
                   i + 1, tc_tier_uri(s->tiers[i]), tc_tier_health_name(h), why[0] ? ": " : "",
                   why);
        }
        if (h != TC_HEALTH_OK) {
            if (h > worst) {
                worst = h;
            }
            down += h == TC_HEALTH_DOWN;
            if (used < len) {
                int w = snprintf(detail + used, len - used, "%sl%zu %s%s%s", used ? "; " : "",
                                 i + 1, tc_tier_health_name(h), why[0] ? ": " : "", why);
                used += w > 0 ? (size_t)w : 0;
            }
        }
    }
    if (worst == TC_HEALTH_DOWN && down < s->n) {
        worst = TC_HEALTH_DEGRADED; /* some tier still serves */
    }
    return worst;
}

enum tc_status tc_stack_ctx_init(struct tc_stack *s, struct event_base *base,
                                 struct tc_stack_ctx **out)
{
    struct tc_stack_ctx *sc = calloc(1, sizeof(*sc));
    if (sc == NULL) {
        return TC_ENOMEM;
    }
    sc->stack = s;
    for (size_t i = 0; i < s->n; i++) {
        enum tc_status st = tc_tier_ctx_init(s->tiers[i], base, &sc->ctx[i]);
        if (st != TC_OK) {
            tc_log(TC_LOG_CRIT, "tier l%zu (%s): cannot make a worker context: %s", i + 1,
                   tc_tier_uri(s->tiers[i]), tc_strerror(st));
            tc_stack_ctx_dispose(sc);
            return st;
        }
    }
    *out = sc;
    return TC_OK;
}

void tc_stack_ctx_dispose(struct tc_stack_ctx *sc)
{
    if (sc == NULL) {
        return;
    }
    sc->closing = 1;
    for (size_t i = sc->stack->n; i-- > 0;) {
        tc_tier_ctx_dispose(sc->ctx[i]);
        sc->ctx[i] = NULL;
    }
    while (sc->free_ops != NULL) {
        struct tc_stack_op *op = sc->free_ops;
        sc->free_ops = op->_next_free;
        tc_buf_deinit(&op->value);
        tc_buf_deinit(&op->tags);
        free(op);
    }
    free(sc);
}

struct tc_tier_ctx *tc_stack_ctx_tier(const struct tc_stack_ctx *sc, size_t i)
{
    return sc->ctx[i];
}

const struct tc_hist *tc_stack_ctx_hist(const struct tc_stack_ctx *sc, size_t i, int kind)
{
    return &sc->hist[i][kind];
}

struct tc_stack_op *tc_stack_op_create(struct tc_stack_ctx *sc, const void *key, size_t key_len,
                                       uint64_t now_ms)
{
    struct tc_stack_op *op = sc->free_ops;
    struct tc_buf keep = TC_BUF_INIT, keep_tags = TC_BUF_INIT;
    if (op != NULL) {
        sc->free_ops = op->_next_free;
        sc->nfree--;
        keep = op->value; /* reuse its storage */
        keep.len = 0;
        keep_tags = op->tags;
        keep_tags.len = 0;
        /* The tier requests are reset by prep() before each use. */
        memset(op, 0, offsetof(struct tc_stack_op, _req));
    } else {
        op = calloc(1, sizeof(*op));
        if (op == NULL) {
            return NULL;
        }
    }
    op->value = keep;
    op->tags = keep_tags;
    if (key_len <= sizeof(op->_keybuf)) {
        op->key = op->_keybuf;
    } else if ((op->key = malloc(key_len)) == NULL) {
        tc_buf_deinit(&op->value);
        tc_buf_deinit(&op->tags);
        free(op);
        return NULL;
    }
    memcpy(op->key, key, key_len);
    op->key_len = key_len;
    op->now_ms = now_ms;
    op->hit_tier = -1;
    op->_sc = sc;
    op->_refs = 1;
    return op;
}

static void op_unref(struct tc_stack_op *op)
{
    if (--op->_refs != 0) {
        return;
    }
    struct tc_stack_ctx *sc = op->_sc;
    if (op->key != op->_keybuf) {
        free(op->key);
    }
    if (!sc->closing && sc->nfree < MAX_FREE_OPS) {
        if (op->value.cap > 16384 || op->value.block != NULL) {
            tc_buf_deinit(&op->value); /* keep recycled ops small; a view goes back */
        }
        if (op->tags.cap > 4096) {
            tc_buf_deinit(&op->tags);
        }
        op->_next_free = sc->free_ops;
        sc->free_ops = op;
        sc->nfree++;
        return;
    }
    tc_buf_deinit(&op->value);
    tc_buf_deinit(&op->tags);
    free(op);
}

void tc_stack_op_release(struct tc_stack_op *op)
{
    op_unref(op);
}

static void req_done(struct tc_tier_req *r);

static void prep(struct tc_stack_op *op, size_t i, int phase)
{
    struct tc_tier_req *r = &op->_req[i];
    memset(r, 0, sizeof(*r));
    r->key = op->key;
    r->key_len = op->key_len;
    r->now_ms = op->now_ms;
    r->done = req_done;
    r->arg = op;
    op->_phase[i] = (uint8_t)phase;
    op->_t0[i] = tc_clock_ns();
}

static void observe(struct tc_stack_op *op, size_t i, int kind)
{
    tc_hist_add(&op->_sc->hist[i][kind], tc_clock_ns() - op->_t0[i]);
}

static void answer(struct tc_stack_op *op)
{
    op->_answered = 1;
    op->cb(op);
}

/* ---- get ---------------------------------------------------------------------- */

/* Deletes the copy of tier i that failed verification (or that the caller
 * rejected), so that the next get does not meet it again. Nothing waits for
 * it; a failure leaves the bad copy to its expiry and the next scrub. */
static void scrub(struct tc_stack_op *op, size_t i)
{
    struct tc_stack_ctx *sc = op->_sc;
    if (sc->closing || tc_stack_tier_down(sc->stack, i)) {
        return;
    }
    prep(op, i, PH_SCRUB);
    op->_refs++;
    if (tc_tier_del(sc->ctx[i], &op->_req[i]) != TC_EINPROGRESS) {
        observe(op, i, TC_STACK_DEL);
        op->_refs--;
    }
}

static void backfill(struct tc_stack_op *op, size_t hit)
{
    struct tc_stack_ctx *sc = op->_sc;
    for (size_t j = 0; j < hit && !sc->closing; j++) {
        if (tc_stack_tier_down(sc->stack, j) ||
            op->value.len > tc_tier_max_value(sc->stack->tiers[j])) {
            if (op->_corrupt_mask & (1u << j)) {
                scrub(op, j); /* no good copy goes there: remove the bad one */
            }
            continue;
        }
        prep(op, j, PH_FILL);
        struct tc_tier_req *r = &op->_req[j];
        r->value = op->value.data;
        r->value_len = op->value.len;
        r->hdr = op->hdr; /* E travels up unchanged; the tier layer applies its ratio */
        op->_refs++;
        if (tc_tier_set(sc->ctx[j], r) != TC_EINPROGRESS) {
            observe(op, j, TC_STACK_SET);
            op->_refs--;
        }
    }
}

/* Continues a lookup after tier op->_tier answered with st. */
static void get_step(struct tc_stack_op *op, enum tc_status st)
{
    struct tc_stack_ctx *sc = op->_sc;
    struct tc_stack *s = sc->stack;
    for (;;) {
        size_t i = (size_t)op->_tier;
        observe(op, i, TC_STACK_GET);
        if (st == TC_OK) {
            op->hit_tier = (int)i;
            op->hdr = op->_req[i].hdr;
            op->etag = op->_req[i].etag;
            op->local_expire_ms = op->_req[i].local_expire_ms;
            op->status = TC_OK;
            op->_refs++; /* keep op alive through the callback for the back-fill */
            answer(op);
            if (!op->_rejected) {
                if (!op->_widest) {
                    backfill(op, i);
                }
                op_unref(op);
                return;
            }
            /* The caller could not use the value (tc_stack_get_reject): a
             * corrupt copy like any other, and the lookup goes on. */
            op_unref(op);
            op->_rejected = 0;
            op->_answered = 0;
            op->hit_tier = -1;
            op->etag = 0;
            tc_tier_note_corrupt(sc->ctx[i]);
            st = TC_ECORRUPT;
        }
        if (st == TC_ECORRUPT) {
            op->_corrupt_mask |= 1u << i;
        } else if (st != TC_ENOTFOUND) {
            tc_log(TC_LOG_DEBUG, "tier l%zu get failed: %s (treated as a miss)", i + 1,
                   tc_strerror(st));
        }
        /* Next tier that is up: the slower one, or for a widest read the
         * faster one (s->n when there is none). */
        size_t next = i + 1;
        if (op->_widest) {
            next = i;
            while (next-- > 0 && tc_stack_tier_down(s, next)) {
            }
            next = next < i ? next : s->n;
        } else {
            while (next < s->n && tc_stack_tier_down(s, next)) {
                next++;
            }
        }
        if (next >= s->n || sc->closing) {
            op->status = TC_ENOTFOUND;
            op->value.len = 0;
            /* Before answering, so that a write the caller makes next (an
             * origin fill) reaches each tier after the delete, not before. */
            for (size_t j = 0; j < s->n; j++) {
                if (op->_corrupt_mask & (1u << j)) {
                    scrub(op, j);
                }
            }
            answer(op);
            return;
        }
        op->_tier = (int)next;
        prep(op, next, PH_LOOKUP);
        op->_req[next].out = &op->value;
        st = tc_tier_get(sc->ctx[next], &op->_req[next]);
        if (st == TC_EINPROGRESS) {
            op->_refs++;
            return;
        }
    }
}

void tc_stack_get_reject(struct tc_stack_op *op)
{
    op->_rejected = 1;
}

static void get_start(struct tc_stack_op *op, tc_stack_cb cb, void *arg)
{
    struct tc_stack *s = op->_sc->stack;
    op->cb = cb;
    op->arg = arg;
    op->_kind = TC_STACK_GET;
    size_t first = 0;
    if (op->_widest) {
        first = s->n;
        while (first-- > 0 && tc_stack_tier_down(s, first)) {
        }
        first = first < s->n ? first : s->n;
    } else {
        while (first < s->n && tc_stack_tier_down(s, first)) {
            first++;
        }
    }
    if (first == s->n) {
        op->status = TC_ENOTFOUND;
        answer(op);
        return;
    }
    op->_tier = (int)first;
    prep(op, first, PH_LOOKUP);
    op->_req[first].out = &op->value;
    enum tc_status st = tc_tier_get(op->_sc->ctx[first], &op->_req[first]);
    if (st == TC_EINPROGRESS) {
        op->_refs++;
        return;
    }
    get_step(op, st);
}

void tc_stack_get(struct tc_stack_op *op, tc_stack_cb cb, void *arg)
{
    get_start(op, cb, arg);
}

void tc_stack_get_widest(struct tc_stack_op *op, tc_stack_cb cb, void *arg)
{
    op->_widest = 1;
    get_start(op, cb, arg);
}

/* ---- set and delete ---------------------------------------------------------------- */

static void finish_write(struct tc_stack_op *op)
{
    if (--op->_pending > 0) {
        return;
    }
    if (op->_kind == TC_STACK_SET) {
        if (op->stored_mask != 0) {
            op->status = TC_OK;
        } else if (op->status != TC_ETOOBIG) {
            op->status = TC_EUNAVAIL;
        }
    } else {
        op->status = op->failed_mask ? TC_EUNAVAIL : TC_OK;
    }
    answer(op);
}

/* Tier i finished its part of a set or delete with st. */
static void write_step(struct tc_stack_op *op, size_t i, enum tc_status st)
{
    struct tc_stack_ctx *sc = op->_sc;
    int phase = op->_phase[i];
    observe(op, i, phase == PH_WRITE ? TC_STACK_SET : TC_STACK_DEL);
    if (phase == PH_WRITE) {
        if (st == TC_OK) {
            op->stored_mask |= 1u << i;
        } else if (st == TC_ETOOBIG) {
            if (op->stored_mask == 0 && op->failed_mask == 0) {
                op->status = TC_ETOOBIG; /* reported if no tier takes it */
            }
            if (!sc->closing) {
                /* The tier kept its older value: remove it. */
                prep(op, i, PH_CLEANUP);
                op->_refs++;
                st = tc_tier_del(sc->ctx[i], &op->_req[i]);
                if (st == TC_EINPROGRESS) {
                    return; /* still pending */
                }
                op->_refs--;
                observe(op, i, TC_STACK_DEL);
            }
        } else {
            op->failed_mask |= 1u << i;
            tc_log(TC_LOG_WARN, "tier l%zu set failed: %s", i + 1, tc_strerror(st));
        }
    } else if (st != TC_OK) {
        op->failed_mask |= 1u << i;
        tc_log(TC_LOG_WARN, "tier l%zu delete failed: %s", i + 1, tc_strerror(st));
    }
    finish_write(op);
}

static void start_writes(struct tc_stack_op *op, int kind)
{
    struct tc_stack_ctx *sc = op->_sc;
    struct tc_stack *s = sc->stack;
    op->_kind = kind;
    op->status = TC_OK;
    op->_pending = 1; /* guard: answer only after every tier was started */
    op->_refs++;      /* and keep op alive while starting them */
    for (size_t i = 0; i < s->n; i++) {
        if (tc_stack_tier_down(s, i) || sc->closing) {
            op->failed_mask |= 1u << i;
            continue;
        }
        prep(op, i, kind == TC_STACK_SET ? PH_WRITE : PH_DELETE);
        struct tc_tier_req *r = &op->_req[i];
        enum tc_status st;
        op->_pending++;
        if (kind == TC_STACK_SET) {
            r->value = op->value.data;
            r->value_len = op->value.len;
            r->hdr = op->hdr;
            r->tags = op->tags.data;
            r->tags_len = op->tags.len;
            st = tc_tier_set(sc->ctx[i], r);
        } else {
            st = tc_tier_del(sc->ctx[i], r);
        }
        if (st == TC_EINPROGRESS) {
            op->_refs++;
        } else {
            write_step(op, i, st);
        }
    }
    finish_write(op);
    op_unref(op);
}

void tc_stack_set(struct tc_stack_op *op, tc_stack_cb cb, void *arg)
{
    op->cb = cb;
    op->arg = arg;
    start_writes(op, TC_STACK_SET);
}

void tc_stack_del(struct tc_stack_op *op, tc_stack_cb cb, void *arg)
{
    op->cb = cb;
    op->arg = arg;
    start_writes(op, TC_STACK_DEL);
}

/* Completion of any asynchronous tier request. */
static void req_done(struct tc_tier_req *r)
{
    struct tc_stack_op *op = r->arg;
    size_t i = (size_t)(r - op->_req);
    switch (op->_phase[i]) {
    case PH_LOOKUP:
        get_step(op, r->status);
        break;
    case PH_FILL:
        observe(op, i, TC_STACK_SET);
        break;
    case PH_SCRUB:
        observe(op, i, TC_STACK_DEL);
        break;
    case PH_CLEANUP:
        observe(op, i, TC_STACK_DEL);
        finish_write(op);
        break;
    case PH_WRITE:
    case PH_DELETE:
        write_step(op, i, r->status);
        break;
    }
    op_unref(op); /* the reference this request held */
}
