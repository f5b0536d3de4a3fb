/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tc_keylock: per-key (and per-name) lease locks that stop dogpiles, at the
 * widest scope the tiers offer, behind one interface (DESIGN.md "Stack and
 * per-key locks").
 *
 *   scope        where the lock lives                         chosen when
 *   worker-pool  this process only (the home table below)     no tier has locks
 *   host         the shm segment's lock table (shm:// tier)   an shm:// tier is configured
 *   cluster      Redis, SET NX PX + compare-and-delete         a redis:// tier is configured
 *
 * Every name has a home worker (hash of the name modulo the workers). All
 * the state of a name in this process lives on its home's thread, so no
 * request ever blocks on a mutex: a request on any worker posts to the
 * home's mailbox, and the answer comes back through its own worker's
 * mailbox. At most one request per process talks to the wider scope for a
 * name at a time; the others are parked at the home:
 *
 *   worker A ──acquire(k)──▶ home(k) ─┬─ free here ──▶ wide acquire ──▶ ACQUIRED ──▶ A
 *                                     └─ held / busy ──▶ parked ─┬─ release, or the lease
 *                                                                │  ran out ──▶ WOKEN (all)
 *                                                                └─ deadline ──▶ TIMEOUT
 *
 * WOKEN means "the lock may be free now": a waiter rechecks what it waited
 * for (the cache), and acquires again if it still needs to, so that exactly
 * one of them becomes the next holder. A release may hand the waiters of
 * this process the holder's result directly (struct tc_keylock_result), which is
 * how an answer that must not be cached still reaches every waiter.
 *
 * Other processes hear of releases through the lock tier (Redis pub/sub, the
 * shm futex watcher) and, if that fails, by polling the lock every
 * TC_KEYLOCK_POLL_MS while they have waiters.
 *
 * Threading: tc_keylock_create/destroy on the main thread; a home is made,
 * shut down and disposed on its own worker's thread; every other call is
 * made on a worker thread with that worker's home, and its callback runs on
 * the same thread, never before the call returns.
 */
#ifndef TC_SRC_KEYLOCK_H
#define TC_SRC_KEYLOCK_H

#include "tiers/tier.h"

#include <stdatomic.h>

#define TC_KEYLOCK_POLL_MS 250u

struct tc_keylock;
struct tc_keylock_home;

/* A mailbox message's header (private; embedded in waiters so that parking
 * and answering a request allocates nothing). */
struct tc_keylock_msg {
    struct tc_keylock_msg *next;
    int kind;
};

/** A leader's answer, handed to the waiters it releases. Embed it first in
 * your own struct; it is freed by free() when the last reference goes. */
struct tc_keylock_result {
    _Atomic int refs;
    void (*free)(struct tc_keylock_result *r);
};

struct tc_keylock_result *tc_keylock_result_ref(struct tc_keylock_result *r);
void tc_keylock_result_unref(struct tc_keylock_result *r);

enum tc_keylock_outcome {
    TC_KEYLOCK_ACQUIRED = 1, /* the caller holds the lock: token */
    TC_KEYLOCK_WOKEN = 2,    /* the lock was released or its lease ran out: recheck */
    TC_KEYLOCK_TIMEOUT = 3,  /* not acquired by the deadline (remaining_ms: the holder's) */
    TC_KEYLOCK_FAILED = 4,   /* shutting down or out of memory (status) */
};

struct tc_keylock_waiter {
    /* In. */
    uint64_t ttl_ms;      /* lease to take, >= 1 */
    uint64_t deadline_ms; /* wait until then; 0 or past: try once, do not wait */
    void (*cb)(struct tc_keylock_waiter *kw);
    void *arg;
    /* Out, valid in cb. */
    enum tc_keylock_outcome outcome;
    enum tc_status status;
    char token[TC_LOCK_TOKEN_MAX];
    uint64_t remaining_ms;
    struct tc_keylock_result *result; /* WOKEN: the holder's answer or NULL; yours to unref */
    /* Private. */
    struct tc_keylock_msg _msg;
    struct tc_keylock_home *_from;
    struct tc_keylock_waiter *_next;
    uint8_t *_name;
    size_t _name_len;
    uint8_t _namebuf[96];
};

/** Counters, all processes' own (relaxed atomics). */
#define TC_KEYLOCK_STATS(X)                                                                        \
    X(acquired, "locks taken (leaders and leases)")                                                \
    X(waits, "requests parked behind a holder")                                                    \
    X(woken, "parked requests woken by a release or an expired lease")                             \
    X(timeouts, "requests that gave up waiting")                                                   \
    X(released, "locks released by their holder")                                                  \
    X(release_refused, "releases with a token that does not hold the lock")                        \
    X(leases_expired, "leases that ran out without a release")                                     \
    X(fallbacks, "locks taken in this process only because the lock tier failed")                  \
    X(leases_granted, "X-Cache-Lease misses answered with a token")                                \
    X(leases_fulfilled, "PUTs that released a lease")                                              \
    X(waiters_served, "parked requests answered with the value")                                   \
    X(stale_served, "stale values served during grace")                                            \
    X(origin_fetches, "requests sent to the origin")                                               \
    X(origin_errors, "origin fetches that failed or answered 5xx")                                 \
    X(lock_waits, "POST /locks requests that had to wait")

enum tc_keylock_counter {
#define TC_X(name, help) TC_KEYLOCK_##name,
    TC_KEYLOCK_STATS(TC_X)
#undef TC_X
        TC_KEYLOCK_NSTATS
};

/**
 * The tier whose lease locks reach widest, for tc_keylock_create(): the
 * first with TC_TIER_CAP_LOCK_CLUSTER (every host sharing it), else the
 * first with TC_TIER_CAP_LOCK_HOST (every process on the host); -1 when
 * none has locks (the worker-pool scope, this process only).
 */
int tc_keylock_widest_tier(struct tc_tier *const *tiers, size_t n);

/**
 * Makes the lock table for @p nhomes workers over @p lock_tier (NULL:
 * worker-pool scope), whose release notifications it subscribes to.
 */
struct tc_keylock *tc_keylock_create(size_t nhomes, struct tc_tier *lock_tier);

/** After every home was disposed of. */
void tc_keylock_destroy(struct tc_keylock *kl);

/** "worker-pool", "host" or "cluster". */
const char *tc_keylock_scope(const struct tc_keylock *kl);

void tc_keylock_count(struct tc_keylock *kl, enum tc_keylock_counter s);
uint64_t tc_keylock_stat(const struct tc_keylock *kl, enum tc_keylock_counter s);
const char *tc_keylock_stat_name(enum tc_keylock_counter s);
const char *tc_keylock_stat_help(enum tc_keylock_counter s);
/** Names with state in this process right now (parked waiters or held). */
uint64_t tc_keylock_entries(const struct tc_keylock *kl);

/** Makes home @p id on the calling worker; @p lock_ctx is that worker's ctx
 * of the lock tier (NULL at worker-pool scope). */
enum tc_status tc_keylock_home_init(struct tc_keylock *kl, size_t id, struct event_base *base,
                                    struct tc_tier_ctx *lock_ctx, struct tc_keylock_home **out);

/** On stop: every request parked here fails (TC_EUNAVAIL) and no new wide
 * operation starts. */
void tc_keylock_home_shutdown(struct tc_keylock_home *h);

/** Frees the home's state; the lock tier ctx must be disposed of first. */
void tc_keylock_home_dispose(struct tc_keylock_home *h);

/** Acquires @p name for @p kw (see struct tc_keylock_waiter); kw->cb runs once. */
void tc_keylock_acquire(struct tc_keylock_home *from, struct tc_keylock_waiter *kw,
                        const void *name, size_t len);

/** Answer of release / peek / check: status, holder's remaining ms, token. */
typedef void (*tc_keylock_done_fn)(void *arg, enum tc_status st, uint64_t remaining_ms,
                                   const char *token);

/**
 * Releases @p name if @p token holds it (TC_OK, else TC_ENOTFOUND) and wakes
 * its waiters, handing those of this process @p result (may be NULL; the
 * call takes the caller's reference).
 */
void tc_keylock_release(struct tc_keylock_home *from, const void *name, size_t len,
                        const char *token, struct tc_keylock_result *result,
                        tc_keylock_done_fn done, void *arg);

/**
 * Extends the lease of @p name to @p ttl_ms from now if @p token holds it
 * (issue 16; sherlock's renew): TC_OK (remaining_ms: the new lease),
 * TC_EEXIST held under another token, TC_ENOTFOUND not held, or an error.
 * At host and cluster scope the lock tier decides; this process's view of a
 * lease it holds follows.
 */
void tc_keylock_renew(struct tc_keylock_home *from, const void *name, size_t len, const char *token,
                      uint64_t ttl_ms, tc_keylock_done_fn done, void *arg);

/** TC_OK (held: remaining ms, token) or TC_ENOTFOUND. */
void tc_keylock_peek(struct tc_keylock_home *from, const void *name, size_t len,
                     tc_keylock_done_fn done, void *arg);

/** Wakes the waiters of @p name in this process (its value changed). */
void tc_keylock_poke(struct tc_keylock_home *from, const void *name, size_t len);

#endif
