/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Host-scope lease locks in the shm segment (ring.h has the contract,
 * ring_layout.h and LAYOUT.md the bytes).
 *
 * A name hashes to a bucket of TC_RING_LOCK_WAYS entries and may claim any
 * free one, so names that share a bucket do not serialise. With no fixed
 * home per name, two acquirers of one name could claim two entries; a
 * Dekker-style handshake settles it:
 *
 *   acquire(name):
 *     1. scan the bucket: a live HELD entry of the name -> busy
 *     2. CAS a free entry: FREE(g) -> CLAIMING(g+1, tag, deadline)   seq_cst
 *     3. describe the claim: name hash, token random, pid; seal      release
 *     4. scan the other entries again (seq_cst loads). For each live
 *        claim of the same name:
 *          HELD, or CLAIMING at a lower way -> withdraw ours, busy
 *          CLAIMING at a higher way         -> CAS it back to FREE (kill)
 *     5. CAS ours CLAIMING -> HELD; failing that, we were killed: retry
 *
 * Why exact: take two claims X (lower way) and Y (higher) of one name.
 * Both did "CAS own word, then load the other's word" with seq_cst, so at
 * least one of the step-4 loads sees the other's claim. If Y sees X (CLAIMING
 * or HELD), Y withdraws. Otherwise X sees Y: Y HELD -> X withdraws; Y
 * CLAIMING -> X's kill CAS and Y's step-5 CAS start from the same word, and
 * only one succeeds. Either way at most one of them reaches HELD. A claim
 * that already expired or whose process is gone is no claim at all.
 *
 * Half-written entries: the words beside the lock word (name hash, token
 * random, pid) are written after the CAS, so they may be missing or belong
 * to an older claim. The seal (XXH3 of the lock word's claim bits and the
 * three words, segment-seeded) is stored last: readers trust those words
 * only when the seal matches the lock word they read. A HELD word is always
 * sealed (the claimer seals before the HELD CAS, and that CAS releases the
 * seal to whoever loads HELD), so an unsealed HELD word is garbage or stale
 * and counts as free. An unsealed CLAIMING word may be a claimer between
 * steps 2 and 3: it counts as a claim of every name with its 6-bit tag until
 * its deadline, which the lock word itself carries so that a claimer killed
 * in that window is reclaimed when its lease ends. The generation (16 bits)
 * and the deadline (ms) make a stale CAS, or a stale token, need 65536
 * claims of one entry ending on the same millisecond.
 *
 * Waiting: every release bumps its bucket's futex word and the segment's
 * epoch, then calls FUTEX_WAKE only if the matching waiter count is non-zero
 * (shared futexes: the waiters are other processes). A waiter reads the futex
 * word before looking at the entries and sleeps only while it is unchanged,
 * so no release is missed; it sleeps at most until the holder's lease ends,
 * and at most TC_RING_LOCK_POLL_MS between checks of the holder's pid (a
 * process that dies holding a lock wakes nobody). Waiter counts are
 * untrusted too: a scribbled zero only delays a waiter to its next bound,
 * and a count left high by a waiter killed asleep only costs each release
 * one needless FUTEX_WAKE.
 */
#define _GNU_SOURCE /* syscall(2), for futex(2) */
#include "shm/ring.h"
#include "shm/ring_internal.h"
#include "shm/ring_layout.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define WAYS         TC_RING_LOCK_WAYS
#define STATE(w)     ((unsigned)((w)&TC_RING_LOCK_STATE_MASK))
#define TAG_MASK     ((1ull << TC_RING_LOCK_TAG_BITS) - 1)
#define GEN_MASK     ((1ull << TC_RING_LOCK_GEN_BITS) - 1)
#define DEADLINE_MAX ((1ull << TC_RING_LOCK_DEADLINE_BITS) - 1)
/* A live claim ends within this of now: a legitimate one within
 * TC_RING_LOCK_TTL_MAX (twice, for a reader whose clock was read early). */
#define PLAUSIBLE_MS (2 * TC_RING_LOCK_TTL_MAX)
/* Attempts of one acquire when claims keep colliding; each failed attempt
 * means another claimer moved, so this bounds the work, not a wait. */
#define CLAIM_TRIES 16
/* Lock names hash apart from cache keys even under the same segment seed. */
#define NAME_SALT 0x6c6f636b6e616d65ull
/* "W-GGGG-RRRRRRRRRRRRRRRR": way, generation, 64 random bits, in hex. */
#define TOKEN_LEN 23u
/* Longest single futex sleep (the kernel's timeout arithmetic stays small). */
#define MAX_SLEEP_MS (24ull * 3600 * 1000)

_Static_assert(TOKEN_LEN < TC_RING_LOCK_TOKEN_MAX, "token fits its buffer");
_Static_assert(WAYS <= 9, "the way is one decimal digit of the token");
_Static_assert(TC_RING_LOCK_TTL_MAX + PLAUSIBLE_MS < DEADLINE_MAX / 2,
               "deadlines (boot-relative ms) fit the lock word for decades of uptime");

/* ---- words ---------------------------------------------------------------------------------- */

static uint64_t w_gen(uint64_t w)
{
    return (w >> TC_RING_LOCK_GEN_SHIFT) & GEN_MASK;
}

static uint64_t w_tag(uint64_t w)
{
    return (w >> TC_RING_LOCK_TAG_SHIFT) & TAG_MASK;
}

static uint64_t w_deadline(uint64_t w)
{
    return w >> TC_RING_LOCK_DEADLINE_SHIFT;
}

/* A free word keeps its generation, so the next claim moves it on. */
static uint64_t free_word(uint64_t w)
{
    return w & (GEN_MASK << TC_RING_LOCK_GEN_SHIFT);
}

static uint64_t make_word(uint64_t deadline, uint64_t gen, uint64_t tag, unsigned state)
{
    return deadline << TC_RING_LOCK_DEADLINE_SHIFT | (gen & GEN_MASK) << TC_RING_LOCK_GEN_SHIFT |
           (tag & TAG_MASK) << TC_RING_LOCK_TAG_SHIFT | state;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int pid_gone(uint64_t pid)
{
    return pid > 0 && pid <= INT32_MAX && kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

/* ---- futexes -------------------------------------------------------------------------------- */

/* Not FUTEX_PRIVATE_FLAG: the word lives in a MAP_SHARED segment and the
 * waker is usually another process. Returns 0 when woken, else the errno
 * (EAGAIN: the word had changed already; ETIMEDOUT; EINTR). */
static int futex_wait(_Atomic uint32_t *word, uint32_t seen, uint64_t ms)
{
    if (ms > MAX_SLEEP_MS) {
        ms = MAX_SLEEP_MS;
    }
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    long rc = syscall(SYS_futex, (void *)word, FUTEX_WAIT, seen, &ts, NULL, 0);
    return rc == 0 ? 0 : errno;
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (void *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleeps while *word == seen, up to ms. The waiter count goes up before the
 * kernel compares the word (seq_cst RMW): a releaser that bumped the word
 * after our read either sees the count and wakes us, or bumped it before the
 * kernel's comparison, which then fails (EAGAIN). Pairs with notify(). */
static int sleep_on(_Atomic uint32_t *word, _Atomic uint32_t *waiters, uint32_t seen, uint64_t ms)
{
    atomic_fetch_add(waiters, 1);
    int e = futex_wait(word, seen, ms);
    atomic_fetch_sub(waiters, 1);
    return e;
}

/* After a lock word was freed: wakes the bucket's waiters, and (a release or
 * a takeover, not a withdrawn claim) the epoch's. seq_cst bump then seq_cst
 * load of the count: pairs with sleep_on(). */
static void notify(const struct tc_ring_locks_ *l, struct tc_ring_lock_bucket *b, int epoch)
{
    atomic_fetch_add(&b->wake, 1);
    if (atomic_load(&b->waiters) != 0) {
        futex_wake_all(&b->wake);
    }
    if (epoch) {
        atomic_fetch_add(&l->epoch->epoch, 1);
        if (atomic_load(&l->epoch->waiters) != 0) {
            futex_wake_all(&l->epoch->epoch);
        }
    }
}

/* ---- entries -------------------------------------------------------------------------------- */

struct lname {
    uint64_t hash, tag;
    struct tc_ring_lock_bucket *b;
};

static void lname_init(const struct tc_ring_locks_ *l, const void *name, size_t len,
                       struct lname *n)
{
    n->hash = XXH3_64bits_withSeed(name, len, l->seed ^ NAME_SALT);
    n->tag = n->hash >> (64 - TC_RING_LOCK_TAG_BITS);
    n->b = &l->bucket[n->hash & l->mask];
}

/* One entry as read: the lock word, and the claim's description when sealed. */
struct view {
    uint64_t w, hash, rnd, pid;
    int sealed;
};

static uint64_t seal_of(uint64_t seed, uint64_t w, uint64_t hash, uint64_t rnd, uint64_t pid)
{
    /* Not the deadline: a renewal moves it with one CAS, and the claim it
     * describes stays the same claim (the generation names it). */
    uint64_t v[4] = {w & ~TC_RING_LOCK_STATE_MASK & ~(DEADLINE_MAX << TC_RING_LOCK_DEADLINE_SHIFT),
                     hash, rnd, pid};
    return XXH3_64bits_withSeed(v, sizeof(v), seed);
}

static void load_entry(const struct tc_ring_locks_ *l, struct tc_ring_lock_entry *e, struct view *v)
{
    /* seq_cst: the "load the other's word" half of the handshake (top). */
    v->w = atomic_load(&e->word);
    /* Acquire: pairs with the claimer's release store of the seal, so the
     * words it describes are at least as new as the seal. */
    uint64_t seal = atomic_load_explicit(&e->seal, memory_order_acquire);
    v->hash = atomic_load_explicit(&e->name_hash, memory_order_relaxed);
    v->rnd = atomic_load_explicit(&e->rnd, memory_order_relaxed);
    v->pid = atomic_load_explicit(&e->owner_pid, memory_order_relaxed);
    v->sealed = seal == seal_of(l->seed, v->w, v->hash, v->rnd, v->pid);
}

/* Writes the description of the claim @p claim just made on @p e. */
static void describe(const struct tc_ring_locks_ *l, struct tc_ring_lock_entry *e, uint64_t claim,
                     uint64_t hash, uint64_t rnd)
{
    atomic_store_explicit(&e->name_hash, hash, memory_order_relaxed);
    atomic_store_explicit(&e->rnd, rnd, memory_order_relaxed);
    atomic_store_explicit(&e->owner_pid, l->pid, memory_order_relaxed);
    /* Release: pairs with load_entry()'s acquire load of the seal. */
    atomic_store_explicit(&e->seal, seal_of(l->seed, claim, hash, rnd, l->pid),
                          memory_order_release);
}

/* A claim that still counts at @p now: CLAIMING (sealed or not yet), or HELD
 * and sealed, with a plausible deadline still ahead. */
static int live(const struct view *v, uint64_t now)
{
    unsigned s = STATE(v->w);
    uint64_t d = w_deadline(v->w);
    if (!(s == TC_RING_LOCK_CLAIMING || (s == TC_RING_LOCK_HELD && v->sealed))) {
        return 0;
    }
    return d > now && d - now <= PLAUSIBLE_MS;
}

/* Whether a live claim may be of name @p n (an unsealed claim: by its tag). */
static int same_name(const struct view *v, const struct lname *n)
{
    return w_tag(v->w) == n->tag && (!v->sealed || v->hash == n->hash);
}

/* A sealed claim whose process is gone. */
static int dead(const struct view *v)
{
    return v->sealed && pid_gone(v->pid);
}

static uint64_t left(const struct view *v, uint64_t now)
{
    uint64_t d = w_deadline(v->w);
    return d > now ? d - now : 1;
}

/* Frees an entry whose claim ended (dead holder): a takeover, so waiters
 * and watchers hear of it. Returns whether this CAS did it. */
static int reclaim(const struct tc_ring_locks_ *l, struct tc_ring_lock_bucket *b,
                   struct tc_ring_lock_entry *e, uint64_t seen)
{
    if (!atomic_compare_exchange_strong(&e->word, &seen, free_word(seen))) {
        return 0;
    }
    notify(l, b, 1);
    return 1;
}

/* ---- tokens --------------------------------------------------------------------------------- */

static uint64_t token_random(void)
{
    uint64_t v;
    for (int i = 0; i < 3; i++) {
        if (getrandom(&v, sizeof(v), 0) == (ssize_t)sizeof(v)) {
            return v;
        }
    }
    /* getrandom(2) refused (seccomp, interrupted thrice): still differs per
     * call and process, though it is guessable by someone who sees the clock. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mix[3] = {(uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30, (uint64_t)getpid(),
                       (uint64_t)(uintptr_t)&v};
    return XXH3_64bits(mix, sizeof(mix));
}

static void token_format(char token[TC_RING_LOCK_TOKEN_MAX], unsigned way, uint64_t gen,
                         uint64_t rnd)
{
    snprintf(token, TC_RING_LOCK_TOKEN_MAX, "%u-%04x-%016llx", way, (unsigned)gen,
             (unsigned long long)rnd);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

static int hex_field(const char *p, unsigned n, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) {
        int d = hexval(p[i]);
        if (d < 0) {
            return 0;
        }
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 1;
}

/* Strict: exactly what token_format() writes. */
static int token_parse(const char *token, unsigned *way, uint64_t *gen, uint64_t *rnd)
{
    if (strnlen(token, TC_RING_LOCK_TOKEN_MAX) != TOKEN_LEN || token[0] < '0' ||
        token[0] >= (char)('0' + WAYS) || token[1] != '-' || token[6] != '-') {
        return 0;
    }
    *way = (unsigned)(token[0] - '0');
    return hex_field(token + 2, 4, gen) && hex_field(token + 7, 16, rnd);
}

/* ---- acquire -------------------------------------------------------------------------------- */

enum settle { WIN, LOSE, RETRY };

/* Step 1: returns TC_EEXIST (with *rem) if a live holder of the name is
 * there, or no entry can be had; else the first free way and its word.
 * Dead holders' entries are taken back on the way. */
static enum tc_status find_free(const struct tc_ring_locks_ *l, const struct lname *n, uint64_t now,
                                unsigned *way, uint64_t *word, uint64_t *rem)
{
    int pick = -1;
    uint64_t pick_w = 0, soonest = UINT64_MAX;
    for (unsigned i = 0; i < WAYS; i++) {
        struct tc_ring_lock_entry *e = &n->b->e[i];
        struct view v;
        load_entry(l, e, &v);
        if (live(&v, now) && same_name(&v, n)) {
            if (dead(&v)) {
                if (!reclaim(l, n->b, e, v.w)) {
                    continue;
                }
                v.w = free_word(v.w);
            } else if (STATE(v.w) == TC_RING_LOCK_HELD) {
                *rem = left(&v, now);
                return TC_EEXIST;
            } else {
                /* Someone is claiming the name now: step 4 decides. */
                continue;
            }
        } else if (live(&v, now)) {
            soonest = left(&v, now) < soonest ? left(&v, now) : soonest;
            continue;
        }
        if (pick < 0) {
            pick = (int)i;
            pick_w = v.w;
        }
    }
    /* Full: only then is it worth a kill(2) per entry of other names. */
    for (unsigned i = 0; i < WAYS && pick < 0; i++) {
        struct tc_ring_lock_entry *e = &n->b->e[i];
        struct view v;
        load_entry(l, e, &v);
        if (live(&v, now) && dead(&v) && reclaim(l, n->b, e, v.w)) {
            pick = (int)i;
            pick_w = free_word(v.w);
        }
    }
    if (pick < 0) {
        *rem = soonest != UINT64_MAX ? soonest : 1;
        return TC_EEXIST;
    }
    *way = (unsigned)pick;
    *word = pick_w;
    return TC_OK;
}

/* Step 4, with our claim at way @p mine visible to everyone. */
static enum settle settle(const struct tc_ring_locks_ *l, const struct lname *n, unsigned mine,
                          uint64_t now, uint64_t *rem)
{
    for (unsigned j = 0; j < WAYS; j++) {
        if (j == mine) {
            continue;
        }
        struct tc_ring_lock_entry *e = &n->b->e[j];
        /* A few looks at one entry whose word keeps moving, then start over. */
        for (int look = 0;; look++) {
            struct view v;
            load_entry(l, e, &v);
            if (!live(&v, now) || !same_name(&v, n) || dead(&v)) {
                break;
            }
            *rem = left(&v, now);
            if (STATE(v.w) == TC_RING_LOCK_HELD || (v.sealed && j < mine)) {
                return LOSE;
            }
            if (!v.sealed || look == 3) {
                /* A claim between its CAS and its seal (maybe another name
                 * with our tag): withdraw, look again once it is described. */
                return RETRY;
            }
            /* A later claim of the name at a higher way: ours wins. If the
             * CAS fails, that claim moved (held, withdrawn, taken back). */
            uint64_t seen = v.w;
            if (atomic_compare_exchange_strong(&e->word, &seen, free_word(v.w))) {
                notify(l, n->b, 0);
                break;
            }
        }
    }
    return WIN;
}

enum tc_status tc_ring_lock_acquire(struct tc_ring *r, const void *name, size_t len,
                                    uint64_t ttl_ms, char token[TC_RING_LOCK_TOKEN_MAX],
                                    uint64_t *remaining_ms)
{
    if (r == NULL || name == NULL || len == 0 || token == NULL || ttl_ms == 0 ||
        ttl_ms > TC_RING_LOCK_TTL_MAX) {
        return TC_EINVAL;
    }
    token[0] = '\0';
    const struct tc_ring_locks_ *l = tc_ring_locks_(r);
    struct lname n;
    lname_init(l, name, len, &n);
    uint64_t rnd = token_random();
    uint64_t rem = 1;
    for (int attempt = 0; attempt < CLAIM_TRIES; attempt++) {
        uint64_t now = mono_ms(), seen;
        unsigned way;
        if (find_free(l, &n, now, &way, &seen, &rem) != TC_OK) {
            break;
        }
        uint64_t deadline = now + ttl_ms;
        if (deadline > DEADLINE_MAX) {
            deadline = DEADLINE_MAX;
        }
        uint64_t claim = make_word(deadline, w_gen(seen) + 1, n.tag, TC_RING_LOCK_CLAIMING);
        struct tc_ring_lock_entry *e = &n.b->e[way];
        if (!atomic_compare_exchange_strong(&e->word, &seen, claim)) {
            continue; /* taken under us: look again */
        }
        describe(l, e, claim, n.hash, rnd);
        enum settle s = settle(l, &n, way, now, &rem);
        if (s == WIN) {
            uint64_t expect = claim;
            uint64_t held = (claim & ~TC_RING_LOCK_STATE_MASK) | TC_RING_LOCK_HELD;
            /* seq_cst (release): whoever loads HELD also sees the seal. */
            if (atomic_compare_exchange_strong(&e->word, &expect, held)) {
                token_format(token, way, w_gen(claim), rnd);
                return TC_OK;
            }
            continue; /* killed by an earlier-way claim of the name: look again */
        }
        /* Withdraw, unless a kill did it already. */
        uint64_t expect = claim;
        if (atomic_compare_exchange_strong(&e->word, &expect, free_word(claim))) {
            notify(l, n.b, 0);
        }
        if (s == LOSE) {
            break;
        }
    }
    if (remaining_ms != NULL) {
        *remaining_ms = rem >= 1 ? rem : 1;
    }
    return TC_EEXIST;
}

/* ---- release, peek -------------------------------------------------------------------------- */

enum tc_status tc_ring_lock_release(struct tc_ring *r, const void *name, size_t len,
                                    const char *token)
{
    if (r == NULL || name == NULL || len == 0 || token == NULL || token[0] == '\0') {
        return TC_EINVAL;
    }
    unsigned way;
    uint64_t gen, rnd;
    if (!token_parse(token, &way, &gen, &rnd)) {
        return TC_ENOTFOUND;
    }
    const struct tc_ring_locks_ *l = tc_ring_locks_(r);
    struct lname n;
    lname_init(l, name, len, &n);
    struct tc_ring_lock_entry *e = &n.b->e[way];
    struct view v;
    load_entry(l, e, &v);
    uint64_t now = mono_ms();
    if (STATE(v.w) != TC_RING_LOCK_HELD || !v.sealed || w_gen(v.w) != gen || v.rnd != rnd ||
        v.hash != n.hash) {
        return TC_ENOTFOUND;
    }
    /* Only a takeover or another release with this token can move a HELD
     * word of this generation: either way, not ours to release any more. */
    uint64_t seen = v.w;
    if (!atomic_compare_exchange_strong(&e->word, &seen, free_word(v.w))) {
        return TC_ENOTFOUND;
    }
    notify(l, n.b, 1);
    /* A lease that ended was free for the taking already: freeing it spares
     * the next acquirer the takeover, but the caller did not hold it. */
    return live(&v, now) ? TC_OK : TC_ENOTFOUND;
}

enum tc_status tc_ring_lock_renew(struct tc_ring *r, const void *name, size_t len,
                                  const char *token, uint64_t ttl_ms)
{
    if (r == NULL || name == NULL || len == 0 || token == NULL || token[0] == '\0' || ttl_ms == 0 ||
        ttl_ms > TC_RING_LOCK_TTL_MAX) {
        return TC_EINVAL;
    }
    const struct tc_ring_locks_ *l = tc_ring_locks_(r);
    struct lname n;
    lname_init(l, name, len, &n);
    unsigned way;
    uint64_t gen, rnd;
    if (token_parse(token, &way, &gen, &rnd)) {
        struct tc_ring_lock_entry *e = &n.b->e[way];
        /* A few tries: only a concurrent renewal with this same token (or a
         * takeover, after which the check below fails) moves the word. */
        for (int attempt = 0; attempt < CLAIM_TRIES; attempt++) {
            struct view v;
            load_entry(l, e, &v);
            uint64_t now = mono_ms();
            if (STATE(v.w) != TC_RING_LOCK_HELD || !v.sealed || w_gen(v.w) != gen || v.rnd != rnd ||
                v.hash != n.hash || !live(&v, now) || dead(&v)) {
                break;
            }
            uint64_t deadline = now + ttl_ms < DEADLINE_MAX ? now + ttl_ms : DEADLINE_MAX;
            uint64_t seen = v.w;
            /* Same generation, tag and state: the seal still matches. */
            if (atomic_compare_exchange_strong(
                    &e->word, &seen, make_word(deadline, gen, n.tag, TC_RING_LOCK_HELD))) {
                return TC_OK;
            }
        }
    }
    /* Not ours: held under another token, or not held at all. */
    return tc_ring_lock_peek(r, name, len, NULL, NULL, NULL) == TC_OK ? TC_EEXIST : TC_ENOTFOUND;
}

enum tc_status tc_ring_lock_peek(struct tc_ring *r, const void *name, size_t len,
                                 char token[TC_RING_LOCK_TOKEN_MAX], uint64_t *remaining_ms,
                                 uint32_t *pid)
{
    if (r == NULL || name == NULL || len == 0) {
        return TC_EINVAL;
    }
    if (token != NULL) {
        token[0] = '\0';
    }
    const struct tc_ring_locks_ *l = tc_ring_locks_(r);
    struct lname n;
    lname_init(l, name, len, &n);
    uint64_t now = mono_ms();
    for (unsigned i = 0; i < WAYS; i++) {
        struct view v;
        load_entry(l, &n.b->e[i], &v);
        if (STATE(v.w) != TC_RING_LOCK_HELD || !live(&v, now) || v.hash != n.hash ||
            w_tag(v.w) != n.tag || dead(&v)) {
            continue;
        }
        if (token != NULL) {
            token_format(token, i, w_gen(v.w), v.rnd);
        }
        if (remaining_ms != NULL) {
            *remaining_ms = left(&v, now);
        }
        if (pid != NULL) {
            *pid = (uint32_t)v.pid;
        }
        return TC_OK;
    }
    return TC_ENOTFOUND;
}

/* ---- waiting -------------------------------------------------------------------------------- */

enum tc_status tc_ring_lock_wait(struct tc_ring *r, const void *name, size_t len,
                                 uint64_t timeout_ms)
{
    if (r == NULL || name == NULL || len == 0) {
        return TC_EINVAL;
    }
    const struct tc_ring_locks_ *l = tc_ring_locks_(r);
    struct lname n;
    lname_init(l, name, len, &n);
    uint64_t start = mono_ms();
    uint64_t end = timeout_ms < UINT64_MAX - start ? start + timeout_ms : UINT64_MAX;
    for (;;) {
        /* Before looking: a release after this read changes the word, and
         * the futex then refuses to sleep (see sleep_on()). */
        uint32_t seq = atomic_load(&n.b->wake);
        uint64_t now = mono_ms();
        uint64_t holder = 0, soonest = UINT64_MAX;
        int have_free = 0;
        for (unsigned i = 0; i < WAYS; i++) {
            struct view v;
            load_entry(l, &n.b->e[i], &v);
            if (!live(&v, now)) {
                have_free = 1;
            } else if (same_name(&v, &n)) {
                if (dead(&v)) {
                    return TC_OK; /* the holder died: acquire takes it over */
                }
                holder = w_deadline(v.w) > holder ? w_deadline(v.w) : holder;
            } else {
                soonest = w_deadline(v.w) < soonest ? w_deadline(v.w) : soonest;
                if (!have_free && dead(&v)) {
                    have_free = 1;
                }
            }
        }
        if (holder == 0 && have_free) {
            return TC_OK;
        }
        if (now >= end) {
            return TC_ETIMEOUT;
        }
        /* Until the lease that blocks us ends (the name's, or the bucket's
         * soonest when it is full), the deadline, or the next pid check. */
        uint64_t until = holder != 0 ? holder : soonest;
        until = until < end ? until : end;
        until = until < now + TC_RING_LOCK_POLL_MS ? until : now + TC_RING_LOCK_POLL_MS;
        sleep_on(&n.b->wake, &n.b->waiters, seq, until > now ? until - now : 1);
    }
}

uint32_t tc_ring_lock_epoch(struct tc_ring *r)
{
    return atomic_load(&tc_ring_locks_(r)->epoch->epoch);
}

enum tc_status tc_ring_lock_wait_epoch(struct tc_ring *r, uint32_t seen, uint64_t timeout_ms)
{
    struct tc_ring_lock_epoch *ep = tc_ring_locks_(r)->epoch;
    uint64_t start = mono_ms();
    uint64_t end = timeout_ms < UINT64_MAX - start ? start + timeout_ms : UINT64_MAX;
    for (;;) {
        if (atomic_load(&ep->epoch) != seen) {
            return TC_OK;
        }
        uint64_t now = mono_ms();
        if (now >= end) {
            return TC_ETIMEOUT;
        }
        if (sleep_on(&ep->epoch, &ep->waiters, seen, end - now) != ETIMEDOUT) {
            return TC_OK; /* woken, changed, or interrupted: the caller compares */
        }
    }
}

void tc_ring_lock_kick(struct tc_ring *r)
{
    struct tc_ring_lock_epoch *ep = tc_ring_locks_(r)->epoch;
    atomic_fetch_add(&ep->epoch, 1);
    futex_wake_all(&ep->epoch);
}

/* ---- stats ---------------------------------------------------------------------------------- */

uint64_t tc_ring_locks_held_(const struct tc_ring_locks_ *l)
{
    uint64_t now = mono_ms(), n = 0;
    for (uint64_t b = 0; b <= l->mask; b++) {
        for (unsigned i = 0; i < WAYS; i++) {
            struct tc_ring_lock_entry *e = &l->bucket[b].e[i];
            if (STATE(atomic_load_explicit(&e->word, memory_order_relaxed)) != TC_RING_LOCK_HELD) {
                continue; /* most entries: skip the seal's hash */
            }
            struct view v;
            load_entry(l, e, &v);
            n += STATE(v.w) == TC_RING_LOCK_HELD && live(&v, now);
        }
    }
    return n;
}
