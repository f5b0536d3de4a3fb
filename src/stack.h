/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The stack: tiers composed fastest first, with read-through, back-fill by
 * the TTL-ratio rule, write-through and delete-everywhere.
 *
 *   get:  L1 ─miss─▶ L2 ─miss─▶ L3 ─miss─▶ not found
 *          │hit       │hit       │hit
 *          ▼          ▼          ▼
 *        answer     answer,    answer,
 *                   back-fill  back-fill L1 and L2 (after answering; each
 *                   L1         tier applies its ratio to the *remaining* time)
 *
 *   set:  every tier at once; answered when all have stored, failed, or
 *         timed out (remote tiers have their own deadline). OK if any tier
 *         stored it; a tier that refuses the size (TC_ETOOBIG) has the key
 *         deleted so that an older value there cannot outlive this write.
 *   del:  every tier at once; OK only if every tier succeeded.
 *
 * A tier that fails is skipped (a failed get is a miss, counted), and a tier
 * whose health is DOWN is not asked at all until the sweeper sees it back.
 * A copy that fails verification (TC_ECORRUPT: damaged, another key's, an
 * older format) or that the caller rejects is a miss too: the lookup goes
 * on, and the bad copy is overwritten by the back-fill of a hit below it or
 * else deleted, so that it is met once, not on every get.
 *
 * A struct tc_stack is shared by all workers; each worker makes its own
 * struct tc_stack_ctx (and through it its own tier ctxs) on its own thread.
 */
#ifndef TC_SRC_STACK_H
#define TC_SRC_STACK_H

#include "src/hist.h"
#include "tiers/tier.h"

#define TC_STACK_MAX_TIERS 8

struct tc_stack;
struct tc_stack_ctx;
struct tc_stack_op;

enum tc_stack_opkind { TC_STACK_GET = 0, TC_STACK_SET = 1, TC_STACK_DEL = 2 };

typedef void (*tc_stack_cb)(struct tc_stack_op *op);

/** One operation. Create with tc_stack_op_create(); release after the callback. */
struct tc_stack_op {
    /* In (copied at create). */
    uint8_t *key;
    size_t key_len;
    uint64_t now_ms;

    /* get: out; set: in (owned by the op: fill it before tc_stack_set). */
    struct tc_buf value;
    struct tc_item_hdr hdr;
    /* set: in, owned by the op: the key's tags as tc_tier_req.tags (issue 15). */
    struct tc_buf tags;

    /* Out. */
    enum tc_status status; /* TC_OK, TC_ENOTFOUND, TC_ETOOBIG, TC_EUNAVAIL, ... */
    int hit_tier;          /* get: index of the tier that answered, -1 on a miss */
    uint64_t etag;         /* get: the value's ETag when that tier kept it (tier.h), else 0 */
    uint64_t local_expire_ms;
    unsigned failed_mask; /* set/del: tiers that failed */
    unsigned stored_mask; /* set: tiers that stored */

    tc_stack_cb cb;
    void *arg;

    /* Private. */
    struct tc_stack_ctx *_sc;
    int _kind;
    int _refs;    /* the caller's reference + tier requests in flight */
    int _pending; /* set/del: tier requests not yet answered */
    int _tier;
    int _answered;
    int _rejected;          /* get: the callback called tc_stack_get_reject() */
    int _widest;            /* get: tc_stack_get_widest(), slowest tier first */
    unsigned _corrupt_mask; /* get: tiers whose copy failed verification */
    struct tc_tier_req _req[TC_STACK_MAX_TIERS];
    uint64_t _t0[TC_STACK_MAX_TIERS];
    uint8_t _phase[TC_STACK_MAX_TIERS];
    struct tc_stack_op *_next_free;
    uint8_t _keybuf[64]; /* short keys live here: no allocation */
};

/**
 * Creates a stack over @p tiers (taken over: closed by tc_stack_destroy).
 * Returns NULL when out of memory.
 */
struct tc_stack *tc_stack_create(struct tc_tier **tiers, size_t n);

/** Closes the tiers and frees the stack. All ctxs must be disposed first. */
void tc_stack_destroy(struct tc_stack *s);

size_t tc_stack_ntiers(const struct tc_stack *s);
struct tc_tier *tc_stack_tier(const struct tc_stack *s, size_t i);

/** Whether tier @p i is currently skipped (health DOWN). */
int tc_stack_tier_down(const struct tc_stack *s, size_t i);

/**
 * Re-reads every tier's health (called by the sweeper, off the request path).
 * Returns the worst health seen; fills @p detail with the failing tiers.
 */
enum tc_tier_health tc_stack_check_health(struct tc_stack *s, char *detail, size_t len);

/**
 * Invalidations applied on behalf of other hosts (writes they made through a
 * shared remote tier), and in *lost the times the subscription was lost.
 */
uint64_t tc_stack_invalidations(const struct tc_stack *s, uint64_t *lost);

/** Makes the calling worker's context; @p base receives async completions. */
enum tc_status tc_stack_ctx_init(struct tc_stack *s, struct event_base *base,
                                 struct tc_stack_ctx **out);

/** Disposes of @p sc; in-flight operations complete (TC_EUNAVAIL) first. */
void tc_stack_ctx_dispose(struct tc_stack_ctx *sc);

/** This ctx's ctx of tier @p i (for operations beside get/set/del: locks). */
struct tc_tier_ctx *tc_stack_ctx_tier(const struct tc_stack_ctx *sc, size_t i);

/** Latency histogram of tier @p i for operation kind @p kind in this ctx. */
const struct tc_hist *tc_stack_ctx_hist(const struct tc_stack_ctx *sc, size_t i, int kind);

/** Allocates an operation on @p key (copied). NULL when out of memory. */
struct tc_stack_op *tc_stack_op_create(struct tc_stack_ctx *sc, const void *key, size_t key_len,
                                       uint64_t now_ms);

/** Drops the caller's reference; the op is freed when no tier request holds it. */
void tc_stack_op_release(struct tc_stack_op *op);

/*
 * Start an operation. @p cb runs exactly once, on the ctx's thread, possibly
 * before the call returns; read the results in it, then release the op.
 */
void tc_stack_get(struct tc_stack_op *op, tc_stack_cb cb, void *arg);

/**
 * Called from inside a get's callback, on a hit (status TC_OK), instead of
 * using and releasing the op: says the value cannot be used (it does not
 * render as its encoding says). The tier's copy counts as corrupt, the
 * lookup goes on with the next tier, and the callback runs again with that
 * result, as it would for any miss in the rejected tier.
 */
void tc_stack_get_reject(struct tc_stack_op *op);
/**
 * A get for a reader that must see the last write (a conditional write
 * holding the key's lock): asks the slowest tier that is up first, then the
 * faster ones in turn, and back-fills nothing. Every write reaches the
 * slowest tier that takes its size, while back-fills and cross-host
 * invalidations only ever change faster tiers, so a faster tier's copy may
 * lag (a back-fill of an older value landing after a write) and the
 * slowest one's does not. As tc_stack_get() otherwise.
 */
void tc_stack_get_widest(struct tc_stack_op *op, tc_stack_cb cb, void *arg);
void tc_stack_set(struct tc_stack_op *op, tc_stack_cb cb, void *arg);
void tc_stack_del(struct tc_stack_op *op, tc_stack_cb cb, void *arg);

#endif
