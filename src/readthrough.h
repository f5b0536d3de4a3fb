/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Read-through: what a cache read does when the stack misses or finds a value
 * past its TTL, and how a write interacts with the leases a read handed out.
 * It knows the stack, the per-key locks and the origin client; it knows
 * nothing of the HTTP request it serves, and hands back one result that the
 * caller turns into one response (src/api_cache.c).
 *
 *   tc_rt_get ──▶ stack get ──hit, fresh─────────────────────────▶ HIT
 *                    │     ──hit, in grace──▶ key lock ─held──────▶ STALE
 *                    │                           └─taken─▶ lead ─┐
 *                    └─miss──▶ plain: MISS                       │
 *                             lease/origin: key lock ─taken──▶ reread ─hit─▶ HIT
 *                                   │                           └─miss─▶ lead
 *                                   └─held: wait ─woken with the holder's answer─▶ FILLED
 *                                                ─woken without─▶ get again
 *                                                ─deadline─▶ LEASE_TIMEOUT / WAIT_TIMEOUT
 *
 *   lead: origin mode fetches the origin (the caller, and every waiter the
 *         release wakes, gets FILLED or ORIGIN_FAILED / MISS; with a stale
 *         value in hand the caller gets STALE at once and the fetch goes on);
 *         otherwise the caller gets LEASE_GRANTED and fills the key itself
 *         with tc_rt_set() and its token.
 *
 * Modes: plain (a miss is a miss; a stale value is refreshed by the first
 * reader, who gets a lease), lease (a miss makes the first reader the
 * leaseholder and parks the others until its write), origin (one reader
 * fetches the origin; the others wait for its answer: one origin request
 * per herd).
 *
 * Threading: everything runs on the worker thread that owns the env; the
 * callbacks run there, exactly once per call, possibly before the call
 * returns.
 */
#ifndef TC_SRC_READTHROUGH_H
#define TC_SRC_READTHROUGH_H

#include "src/keylock.h"
#include "src/origin.h"
#include "src/stack.h"

/** How a read treats a miss. */
enum tc_rt_mode {
    TC_RT_PLAIN = 0,  /* a miss is a miss */
    TC_RT_LEASE = 1,  /* the first reader gets a lease and fills the key; the others wait */
    TC_RT_ORIGIN = 2, /* the first reader fetches the origin; the others wait for its answer */
};

/** Settings, from the configuration; immutable. */
struct tc_rt_options {
    uint64_t default_ttl_ms;    /* TTL of an origin answer without one */
    uint64_t max_ttl_ms;        /* the longest TTL stored */
    uint64_t grace_ms;          /* kept this long past the TTL, served stale */
    uint64_t lease_ms;          /* plain mode: the lease of the reader refreshing a stale value */
    uint64_t origin_timeout_ms; /* an origin fetch ends after this */
    uint64_t max_value;         /* an origin answer larger than this is not stored */
    uint64_t negative_ttl_ms;   /* an origin 404/410 is remembered this long; 0 = not at all */
};

struct tc_rt_call;

/** A worker's share: everything it owns on its thread. Caller-owned; must
 * outlive every call made with it; tc_rt_env_deinit() frees what it kept. */
struct tc_rt_env {
    struct tc_stack_ctx *sc;
    struct tc_keylock_home *home; /* the worker's part of the key-lock table */
    struct tc_keylock *keylock;
    struct tc_origin_ctx *origin; /* NULL without an origin */
    const struct tc_rt_options *opt;
    /* Private: ended calls kept for the next ones, so that a read allocates
     * nothing (the stack recycles its operations the same way). */
    struct tc_rt_call *_free;
    unsigned _nfree;
};

/** Frees the calls @p env kept for reuse. On the env's thread, once no call is in flight. */
void tc_rt_env_deinit(struct tc_rt_env *env);

/** What a read came to. */
enum tc_rt_outcome {
    TC_RT_HIT = 1,       /* a fresh value (value, hdr, tier) */
    TC_RT_STALE,         /* a value past its TTL, within grace (value, hdr, tier) */
    TC_RT_MISS,          /* no value; with origin_status, the origin has none either */
    TC_RT_FILLED,        /* the origin's value, fetched by this read or another (coalesced) */
    TC_RT_LEASE_GRANTED, /* no value, and the caller holds the key's lease (token, lease_ms) */
    TC_RT_LEASE_TIMEOUT, /* lease mode: no value came within the wait (remaining_ms) */
    TC_RT_WAIT_TIMEOUT,  /* origin mode: another read's fetch did not end within lease_ms */
    TC_RT_ORIGIN_FAILED, /* status: TC_ETIMEOUT, TC_ETOOBIG, TC_EUNAVAIL, TC_EIO (origin_status) */
    TC_RT_FAILED,        /* status: TC_ENOMEM, TC_EUNAVAIL, or a stack error */
    TC_RT_NEGATIVE,      /* a remembered origin 404/410 (hdr, tier): no value, origin not asked */
};

/** A read's result; every pointer is valid during the done callback only. */
struct tc_rt_result {
    enum tc_rt_outcome outcome;
    enum tc_status status;
    const void *key; /* the key read */
    size_t key_len;
    const struct tc_buf *value;    /* HIT, STALE, FILLED */
    const struct tc_item_hdr *hdr; /* HIT, STALE, FILLED, NEGATIVE */
    uint64_t etag;                 /* HIT, STALE: the value's ETag if the tier kept it, else 0 */
    uint64_t now_ms;               /* the clock the value's TTL and age count from */
    int tier;                      /* HIT, STALE, NEGATIVE: index of the tier that answered */
    int coalesced;                 /* FILLED: another read fetched it */
    int origin_status;             /* MISS, ORIGIN_FAILED: the origin's HTTP status, or 0 */
    const char *token;             /* LEASE_GRANTED: the lease's token */
    uint64_t lease_ms;             /* LEASE_GRANTED: its length; WAIT_TIMEOUT: the wait */
    uint64_t remaining_ms;         /* LEASE_TIMEOUT: ms left on the holder's lease */
    const char *message;           /* MISS from the origin, ORIGIN_FAILED: what happened */
};

/**
 * Called on every hit before it is used, with the key, the value and the
 * clock the result will carry; returns 0 when the value cannot be served (it does not
 * render as its encoding says): the tier's copy then counts as corrupt and
 * the lookup goes on (tc_stack_get_reject). May keep what it computed for
 * the done callback, whose res->value is then the same pointer.
 */
typedef int (*tc_rt_accept_fn)(void *arg, const void *key, size_t key_len,
                               const struct tc_buf *value, const struct tc_item_hdr *hdr,
                               uint64_t now_ms);

typedef void (*tc_rt_done_fn)(void *arg, const struct tc_rt_result *res);

/**
 * Reads @p key (copied) in @p mode. @p lease_ms: the lease a leader takes
 * (lease mode: the client's; origin mode: the fetch's bound); the wait of
 * the others ends lease_ms from now. @p accept may be NULL. @p now_ms is
 * the wall clock (ms since the epoch) the read starts at: the request's
 * (struct tc_http_req now_ms), so that its answer's times agree with it.
 * @return TC_OK: @p done runs exactly once (maybe before this returns);
 *         TC_ENOMEM: nothing started, @p done never runs.
 */
enum tc_status tc_rt_get(struct tc_rt_env *env, const void *key, size_t key_len,
                         enum tc_rt_mode mode, uint64_t lease_ms, uint64_t now_ms,
                         tc_rt_accept_fn accept, tc_rt_done_fn done, void *arg);

/** What a write came to. */
enum tc_rt_write_outcome {
    TC_RT_STORED = 1,   /* set or deleted in every tier that took it */
    TC_RT_NOT_OWNER,    /* a write with a lease token that does not hold the key's lease */
    TC_RT_REFUSED,      /* status: TC_ETOOBIG (no tier takes the size), TC_EUNAVAIL (failed_mask) */
    TC_RT_PRECONDITION, /* a conditional write whose condition did not hold: nothing stored */
    TC_RT_BUSY,         /* a conditional write that did not get the key's lock in time */
};

/** A write's lease, when it gave a token. */
enum tc_rt_lease {
    TC_RT_NO_LEASE = 0,
    TC_RT_LEASE_RELEASED, /* the write released the lease it held */
    TC_RT_LEASE_EXPIRED,  /* the lease ended before the write did; stored anyway */
};

struct tc_rt_write_result {
    enum tc_rt_write_outcome outcome;
    enum tc_status status;
    enum tc_rt_lease lease;
    unsigned failed_mask; /* REFUSED: the tiers that failed */
    size_t value_len;
};

typedef void (*tc_rt_write_fn)(void *arg, const struct tc_rt_write_result *res);

/**
 * Writes @p op (its key, value and header, filled by the caller; taken
 * over: released here) through the stack. With @p token (a lease a read
 * granted), the write happens only if that token still holds the key's
 * lease, and then releases it so that the parked readers get the value;
 * without, readers parked on the key are told to look again.
 * @return as tc_rt_get(); on TC_ENOMEM the op is still released.
 */
enum tc_status tc_rt_set(struct tc_rt_env *env, struct tc_stack_op *op, const char *token,
                         tc_rt_write_fn done, void *arg);

/**
 * A conditional write's test, run while the key's write lock is held: the
 * current item (@p hdr and @p value; hdr NULL when the key has no value
 * a GET would serve) against the request's condition. Returns 1 to write.
 */
typedef int (*tc_rt_cond_fn)(void *arg, const struct tc_item_hdr *hdr, const struct tc_buf *value);

/**
 * Writes (@p is_set) or deletes @p op (taken over) only if @p cond holds
 * for the current value: takes the key's conditional-write lock (at the
 * key-lock scope: worker pool, host or cluster), reads the key through the
 * stack, asks @p cond, writes, releases. Every conditional write of a key
 * anywhere in that scope is serialised, so that of racing writes with the
 * same If-Match exactly one succeeds. Writes without a condition take no
 * lock and are not ordered against these. Outcomes: STORED, PRECONDITION,
 * BUSY (the lock stayed held for TC_RT_COND_WAIT_MS), REFUSED.
 * @return as tc_rt_set().
 */
enum tc_status tc_rt_write_if(struct tc_rt_env *env, struct tc_stack_op *op, int is_set,
                              tc_rt_cond_fn cond, tc_rt_write_fn done, void *arg);

#define TC_RT_COND_WAIT_MS  5000u  /* a conditional write waits this long for the key's lock */
#define TC_RT_COND_LEASE_MS 10000u /* and holds it at most this long (a dead holder's ends) */

/** Deletes @p op's key (op taken over) from every tier. As tc_rt_set(). */
enum tc_status tc_rt_del(struct tc_rt_env *env, struct tc_stack_op *op, tc_rt_write_fn done,
                         void *arg);

/**
 * Sets hdr->created_ms and the authoritative expiry for a write of
 * @p ttl_ms (0 = never expires) at @p now_ms, adding the configured grace
 * (TC_ITEM_F_GRACE) to a value that expires.
 */
void tc_rt_set_expiry(const struct tc_rt_options *opt, struct tc_item_hdr *hdr, uint64_t now_ms,
                      uint64_t ttl_ms);

#endif
