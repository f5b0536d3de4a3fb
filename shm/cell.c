/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Host-scope counter and limit cells in the shm segment (ring.h has the
 * contract, ring_layout.h and LAYOUT.md the bytes).
 *
 * A cell is two 16-byte words, each changed only by a 16-byte CAS:
 *
 *   id = { hash, gen }           whose cell it is
 *   st = { x, t << 20 | gen }    the state, valid for id while the gens agree
 *
 *   update(name):                                     lock-free
 *     find: a cell of the bucket with id.hash == H and gen(st) == id.gen
 *     CAS st: { x, t | g } -> { fn(x, t), t' | g }    fails if anyone changed
 *                                                     it (or took the cell): retry
 *   claim(name), when find fails and fn stores something:
 *     take the name's claim lease (lock table), find again, then on a cell
 *     that is free or past its t:
 *       1. CAS st: { x, t | g } -> { 0, 0 | g+1 }     the old state is gone:
 *                                                     no one's update can land
 *       2. CAS id: { old, g } -> { H, g+1 }           the cell is H's, empty
 *       3. CAS st: { 0, 0 | g+1 } -> { fn(0, 0) | g+1 }, release the lease
 *
 * A process killed anywhere leaves every word whole: after 1, a cell with
 * gen(st) ahead of id.gen, which any claimer may finish taking (2); after 2,
 * an empty cell of H, which H's updates use as found; its claim lease is
 * taken over once kill(pid, 0) says it is gone (shm/lock.c). An update is
 * done, and acknowledged by the caller, only once its CAS succeeded, so no
 * acknowledged update is ever lost or applied twice. The per-name lease keeps
 * two claimers of one name from making two cells for it; claimers of two
 * names racing for one free cell are settled by the CAS of step 2.
 */
#include "shm/ring.h"
#include "shm/ring_internal.h"
#include "shm/ring_layout.h"

#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#define WAYS     TC_RING_CELL_WAYS
#define GEN_MASK ((1ull << TC_RING_CELL_GEN_BITS) - 1)
#define T_MAX    ((1ull << TC_RING_CELL_T_BITS) - 1)
/* Cell names hash apart from cache keys and lock names. */
#define CELL_SALT 0x63656c6c6e616d65ull
/* How long an update waits for another process's claim of the same name. */
#define CLAIM_WAIT_MS 1000u

#if defined(__x86_64__)
#define HAVE_CAS16 1
/* 16-byte compare-and-swap: *p == exp ? (*p = des, 1) : (exp = *p, 0).
 * cmpxchg16b is on every x86-64 CPU made since 2008 (x86-64-v2); a C11
 * atomic of 16 bytes would go through libatomic, which may fall back to a
 * process-local lock that other processes never see (R0). */
static int cas16(uint64_t *p, uint64_t exp[2], const uint64_t des[2])
{
    unsigned char ok;
    __asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
                         : "=q"(ok), "+m"(*(uint64_t(*)[2])p), "+a"(exp[0]), "+d"(exp[1])
                         : "b"(des[0]), "c"(des[1])
                         : "memory", "cc");
    return ok;
}
#else
#define HAVE_CAS16 0
static int cas16(uint64_t *p, uint64_t exp[2], const uint64_t des[2])
{
    (void)p;
    (void)exp;
    (void)des;
    return 0;
}
#endif

/* An atomic 16-byte load: a CAS that stores what is there (or 0 over 0). */
static void load16(uint64_t *p, uint64_t out[2])
{
    uint64_t z[2] = {0, 0};
    out[0] = 0;
    out[1] = 0;
    cas16(p, out, z);
}

static uint64_t gen_of(uint64_t w)
{
    return w & GEN_MASK;
}

static uint64_t t_of(const uint64_t st[2])
{
    return st[1] >> TC_RING_CELL_GEN_BITS;
}

static int st_dead(const uint64_t st[2], uint64_t now)
{
    uint64_t t = t_of(st);
    return (st[0] == 0 && t == 0) || (t != 0 && t <= now);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Cells and moving-window slabs are taken and found alike; they differ in
 * when a state is dead and what a claim leaves in x (see the log section). */
struct kind {
    int (*dead)(const uint64_t st[2], uint64_t now);
    uint64_t (*freed_x)(const uint64_t st[2]);
};

static uint64_t cell_freed_x(const uint64_t st[2])
{
    (void)st;
    return 0;
}

static int mlog_dead(const uint64_t st[2], uint64_t now);
static uint64_t mlog_freed_x(const uint64_t st[2]);

static const struct kind CELL = {st_dead, cell_freed_x};
static const struct kind MLOG = {mlog_dead, mlog_freed_x};

/* The way of the cell that is @p h's, with its state in @p st; -1 if none. */
static int find(struct tc_ring_cell *const *cells, uint64_t h, uint64_t st[2])
{
    for (int i = 0; i < (int)WAYS; i++) {
        uint64_t id[2];
        load16(cells[i]->id, id);
        if (id[0] != h) {
            continue;
        }
        load16(cells[i]->st, st);
        if (gen_of(st[1]) == gen_of(id[1])) {
            return i;
        }
    }
    return -1;
}

/* Steps 1-2 of a claim of @p cell for @p h: 1 when the cell is H's and
 * empty, else 0. */
static int take(struct tc_ring_cell *cell, uint64_t h, uint64_t now, const struct kind *k)
{
    uint64_t id[2], st[2];
    load16(cell->id, id);
    load16(cell->st, st);
    uint64_t g = gen_of(id[1]);
    if (gen_of(st[1]) == g) {
        if (!k->dead(st, now)) {
            return 0;
        }
        uint64_t freed[2] = {k->freed_x(st), (g + 1) & GEN_MASK};
        if (!cas16(cell->st, st, freed)) {
            return 0; /* changed under us: look elsewhere */
        }
    } else if (gen_of(st[1]) != ((g + 1) & GEN_MASK) || t_of(st) != 0) {
        return 0; /* neither a state nor a half-taken cell: garbage, leave it */
    }
    uint64_t mine[2] = {h, (g + 1) & GEN_MASK};
    return cas16(cell->id, id, mine);
}

/* Runs one decision on H's cell found with state @p st: 1 done, 0 the cell
 * was taken for another name meanwhile (find again). */
typedef int (*run_fn)(struct tc_ring_cell *cell, uint64_t st[2], void *arg);
/* Whether a name without a cell needs one for this decision. */
typedef int (*want_fn)(void *arg);

static uint64_t name_hash(const struct tc_ring_cells_ *cs, const void *name, size_t len)
{
    uint64_t h = XXH3_64bits_withSeed(name, len, cs->seed ^ CELL_SALT);
    return h ? h : 1;
}

static enum tc_status update(struct tc_ring *r, struct tc_ring_cell *const *cells, uint64_t h,
                             uint64_t now_ms, const struct kind *k, want_fn want, run_fn run,
                             void *arg)
{
    /* The claim lease's name: a NUL first, then the hash. */
    uint8_t lname[1 + 4 + sizeof(h)] = {0, 'c', 'e', 'l', 'l'};
    memcpy(lname + 5, &h, sizeof(h));
    uint64_t wait_until = 0;
    for (;;) {
        uint64_t st[2];
        int i = find(cells, h, st);
        if (i >= 0) {
            if (run(cells[i], st, arg)) {
                return TC_OK;
            }
            continue;
        }
        if (!want(arg)) {
            return TC_OK; /* nothing to keep for a name without a cell */
        }
        char token[TC_RING_LOCK_TOKEN_MAX];
        if (tc_ring_lock_acquire(r, lname, sizeof(lname), TC_RING_CELL_CLAIM_MS, token, NULL) !=
            TC_OK) {
            /* Another process is making the name's cell: use it once made. */
            uint64_t now = mono_ms();
            if (wait_until == 0) {
                wait_until = now + CLAIM_WAIT_MS;
            } else if (now >= wait_until) {
                return TC_EAGAIN;
            }
            sched_yield();
            continue;
        }
        enum tc_status st_ret = TC_ENOMEM;
        if (find(cells, h, st) >= 0) {
            st_ret = TC_EAGAIN; /* made meanwhile: update it as found */
        } else {
            for (unsigned w = 0; w < WAYS; w++) {
                if (take(cells[w], h, now_ms, k)) {
                    i = (int)w;
                    break;
                }
            }
            if (i >= 0 && (i = find(cells, h, st)) >= 0 && run(cells[i], st, arg)) {
                st_ret = TC_OK;
            } else if (i >= 0) {
                st_ret = TC_EAGAIN;
            }
        }
        tc_ring_lock_release(r, lname, sizeof(lname), token);
        if (st_ret != TC_EAGAIN) {
            return st_ret;
        }
    }
}

/* ---- cells ---------------------------------------------------------------------------------- */

struct cell_call {
    tc_ring_cell_fn fn;
    void *arg;
};

/* Applies fn to the state of a cell found as @p st (H's, gen g) until a CAS
 * holds or the cell stops being H's. */
static int cell_run(struct tc_ring_cell *cell, uint64_t st[2], void *arg)
{
    struct cell_call *cc = arg;
    uint64_t g = gen_of(st[1]);
    for (;;) {
        struct tc_ring_cellval v = {(int64_t)st[0], t_of(st)};
        if (!cc->fn(&v, cc->arg)) {
            return 1;
        }
        uint64_t t = v.t > T_MAX ? T_MAX : v.t;
        uint64_t des[2] = {(uint64_t)v.x, t << TC_RING_CELL_GEN_BITS | g};
        if (cas16(cell->st, st, des)) {
            return 1;
        }
        if (gen_of(st[1]) != g) {
            return 0; /* taken for another name between our find and CAS */
        }
    }
}

static int cell_want(void *arg)
{
    struct cell_call *cc = arg;
    struct tc_ring_cellval v = {0, 0};
    return cc->fn(&v, cc->arg) && (v.x != 0 || v.t != 0);
}

enum tc_status tc_ring_cell_update(struct tc_ring *r, const void *name, size_t len, uint64_t now_ms,
                                   tc_ring_cell_fn fn, void *arg)
{
    if (r == NULL || name == NULL || len == 0 || fn == NULL) {
        return TC_EINVAL;
    }
    if (!HAVE_CAS16) {
        return TC_ENOTSUP;
    }
    const struct tc_ring_cells_ *cs = tc_ring_cells_(r);
    uint64_t h = name_hash(cs, name, len);
    struct tc_ring_cell_bucket *b = &cs->bucket[h & cs->mask];
    struct tc_ring_cell *cells[WAYS];
    for (unsigned w = 0; w < WAYS; w++) {
        cells[w] = &b->c[w];
    }
    struct cell_call cc = {fn, arg};
    return update(r, cells, h, now_ms, &CELL, cell_want, cell_run, &cc);
}

/* ---- moving-window logs --------------------------------------------------------------------
 *
 * A slab's st: x = p << 24 | c (p hits ever, the newest batch c of them,
 * all at time t - window), t = the newest hit + window. Hit k (< p) is in
 * slot k mod TC_RING_MLOG_SLOTS with tag(k); the newest batch's slots may
 * be unwritten yet: its time is in st. Before a CAS moves p on, the mover
 * writes the newest batch's slots (helping a mover that died), never over a
 * slot of a later lap, so a helper that slept for a lap cannot overwrite
 * newer hits. Hence every hit below the newest batch and within the last
 * TC_RING_MLOG_SLOTS is in its slot, except across a dead state (all its
 * hits out of the window already): a slot without its hit's tag reads as a
 * hit long gone. A dead log restarts a lap further on (p + slots), so its
 * next hits never read the old hits' slots, whatever their window was; a
 * slab taken for another name does the same.
 */

#define MLOG_P_SHIFT 24u
#define MLOG_C_MASK  0xffffffull
#define SLOT_TS_BITS 44u
#define SLOT_TS_MASK ((1ull << SLOT_TS_BITS) - 1)
#define TAG_MOD      0xfffffull

_Static_assert(TC_RING_MOVING_MAX == TC_RING_MLOG_SLOTS, "one limit per slab size");

static uint64_t tag_of(uint64_t k)
{
    return k % TAG_MOD + 1;
}

static int mlog_dead(const uint64_t st[2], uint64_t now)
{
    uint64_t t = t_of(st);
    return t == 0 || t <= now;
}

static uint64_t mlog_freed_x(const uint64_t st[2])
{
    return ((st[0] >> MLOG_P_SHIFT) + TC_RING_MLOG_SLOTS) << MLOG_P_SHIFT;
}

struct mlog_call {
    struct tc_ring_moving *m;
    uint64_t now;
};

/* The time of hit k (p - limit <= k < p) of a log whose newest batch
 * [p - c, p) happened at @p newest. */
static uint64_t hit_ts(const struct tc_ring_mlog *s, uint64_t k, uint64_t p, uint64_t c,
                       uint64_t newest)
{
    if (k >= p - c) {
        return newest;
    }
    uint64_t v = atomic_load_explicit((_Atomic uint64_t *)&s->slot[k % TC_RING_MLOG_SLOTS],
                                      memory_order_acquire);
    return (v >> SLOT_TS_BITS) == tag_of(k) ? (v & SLOT_TS_MASK) : 0;
}

/* Whether tag @p have is of hit k + j * slots for some j in 1..1024 (a
 * later lap than hit k's @p want). */
static int later_lap(uint64_t have, uint64_t want)
{
    uint64_t d = (have + TAG_MOD - want) % TAG_MOD;
    return d != 0 && d % TC_RING_MLOG_SLOTS == 0 && d / TC_RING_MLOG_SLOTS <= 1024;
}

/* Writes hit k's slot unless it is written already, or by a later lap. */
static void slot_put(struct tc_ring_mlog *s, uint64_t k, uint64_t ts)
{
    _Atomic uint64_t *slot = &s->slot[k % TC_RING_MLOG_SLOTS];
    uint64_t v = atomic_load_explicit(slot, memory_order_relaxed);
    if ((v >> SLOT_TS_BITS) == tag_of(k) || later_lap(v >> SLOT_TS_BITS, tag_of(k))) {
        return;
    }
    /* Release: pairs with hit_ts()'s acquire load. */
    atomic_compare_exchange_strong_explicit(slot, &v,
                                            tag_of(k) << SLOT_TS_BITS | (ts & SLOT_TS_MASK),
                                            memory_order_release, memory_order_relaxed);
}

static int mlog_run(struct tc_ring_cell *cell, uint64_t st[2], void *arg)
{
    struct mlog_call *mc = arg;
    struct tc_ring_moving *m = mc->m;
    struct tc_ring_mlog *s = (struct tc_ring_mlog *)cell;
    uint64_t now = mc->now, w = m->window_ms, g = gen_of(st[1]);
    uint64_t floor_ms = now > w ? now - w : 0; /* hits at or before it are out */
    for (;;) {
        uint64_t p = st[0] >> MLOG_P_SHIFT, c = st[0] & MLOG_C_MASK, t = t_of(st);
        int live = t > now && c <= p && c <= TC_RING_MLOG_SLOTS;
        uint64_t newest = live && t >= w ? t - w : 0;
        if (!live && t != 0) {
            /* Dead: start a lap further on (see above), batch empty. */
            p += TC_RING_MLOG_SLOTS;
            c = 0;
        }
        if (m->clear) {
            uint64_t des[2] = {mlog_freed_x(st), g}; /* t = 0: every hit out */
            if (t == 0 || cas16(cell->st, st, des)) {
                return 1;
            }
            if (gen_of(st[1]) != g) {
                return 0;
            }
            continue;
        }
        /* The (limit - cost + 1)-th newest hit must be out of the window. */
        uint64_t need = m->limit - m->cost + 1;
        m->blocker_ms = 0;
        if (live && m->cost > 0 && p >= need) {
            m->blocker_ms = hit_ts(s, p - need, p, c, newest);
        }
        m->allowed = m->blocker_ms <= floor_ms;
        if (m->hit && m->cost > 0 && m->allowed) {
            for (uint64_t k = p - c; live && k < p; k++) {
                slot_put(s, k, newest); /* the newest batch, before p moves on */
            }
            uint64_t des[2] = {(p + m->cost) << MLOG_P_SHIFT | m->cost,
                               (now + w) << TC_RING_CELL_GEN_BITS | g};
            if (!cas16(cell->st, st, des)) {
                if (gen_of(st[1]) != g) {
                    return 0;
                }
                continue;
            }
            for (uint64_t k = p; k < p + m->cost; k++) {
                slot_put(s, k, now); /* early, for readers; the next mover checks */
            }
            st[0] = des[0];
            st[1] = des[1];
            p += m->cost;
            c = m->cost;
            newest = now;
            live = 1;
        }
        /* Count what is within the window: the newest first, up to limit. */
        m->used = m->oldest_ms = m->newest_ms = 0;
        uint64_t upto = live ? (p < m->limit ? p : m->limit) : 0;
        for (uint64_t i = 1; i <= upto; i++) {
            uint64_t ts = hit_ts(s, p - i, p, c, newest);
            if (ts <= floor_ms) {
                break;
            }
            if (i == 1) {
                m->newest_ms = ts;
            }
            m->used++;
            m->oldest_ms = ts;
        }
        return 1;
    }
}

static int mlog_want(void *arg)
{
    const struct mlog_call *mc = arg;
    struct tc_ring_moving *m = mc->m;
    if (m->clear || !m->hit || m->cost == 0) {
        /* An empty log: everything is allowed, nothing is used. */
        m->allowed = 1;
        m->used = m->oldest_ms = m->newest_ms = m->blocker_ms = 0;
        return 0;
    }
    return 1;
}

enum tc_status tc_ring_moving(struct tc_ring *r, const void *name, size_t len, uint64_t now_ms,
                              struct tc_ring_moving *m)
{
    if (r == NULL || name == NULL || len == 0 || m == NULL ||
        (!m->clear && (m->limit == 0 || m->limit > TC_RING_MOVING_MAX || m->window_ms == 0 ||
                       m->cost > m->limit))) {
        return TC_EINVAL;
    }
    if (!HAVE_CAS16) {
        return TC_ENOTSUP;
    }
    const struct tc_ring_cells_ *cs = tc_ring_cells_(r);
    uint64_t h = name_hash(cs, name, len);
    struct tc_ring_mlog *b = &cs->mlog[(h & cs->mlog_mask) * WAYS];
    struct tc_ring_cell *cells[WAYS];
    for (unsigned w = 0; w < WAYS; w++) {
        cells[w] = &b[w].head;
    }
    struct mlog_call mc = {m, now_ms};
    return update(r, cells, h, now_ms, &MLOG, mlog_want, mlog_run, &mc);
}

uint64_t tc_ring_cells_live(struct tc_ring *r, uint64_t now_ms)
{
    if (r == NULL || !HAVE_CAS16) {
        return 0;
    }
    const struct tc_ring_cells_ *cs = tc_ring_cells_(r);
    uint64_t n = 0;
    for (uint64_t bi = 0; bi <= cs->mask; bi++) {
        for (unsigned w = 0; w < WAYS; w++) {
            uint64_t id[2], st[2];
            load16(cs->bucket[bi].c[w].id, id);
            load16(cs->bucket[bi].c[w].st, st);
            n += gen_of(st[1]) == gen_of(id[1]) && !st_dead(st, now_ms);
        }
    }
    return n;
}
