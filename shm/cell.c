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

/* The way of the cell that is @p h's, with its state in @p st; -1 if none. */
static int find(struct tc_ring_cell_bucket *b, uint64_t h, uint64_t st[2])
{
    for (int i = 0; i < (int)WAYS; i++) {
        uint64_t id[2];
        load16(b->c[i].id, id);
        if (id[0] != h) {
            continue;
        }
        load16(b->c[i].st, st);
        if (gen_of(st[1]) == gen_of(id[1])) {
            return i;
        }
    }
    return -1;
}

/* Applies fn to the state of a cell found as @p st (H's, gen g) until a CAS
 * holds or the cell stops being H's. 1: done; 0: the cell was taken. */
static int apply(struct tc_ring_cell *cell, uint64_t st[2], tc_ring_cell_fn fn, void *arg)
{
    uint64_t g = gen_of(st[1]);
    for (;;) {
        struct tc_ring_cellval v = {(int64_t)st[0], t_of(st)};
        if (!fn(&v, arg)) {
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

/* Step 1-2 of a claim on way @p i for @p h: returns 1 with the cell H's and
 * empty (gen in *gen), else 0. */
static int take(struct tc_ring_cell *cell, uint64_t h, uint64_t now)
{
    uint64_t id[2], st[2];
    load16(cell->id, id);
    load16(cell->st, st);
    uint64_t g = gen_of(id[1]);
    if (gen_of(st[1]) == g) {
        if (!st_dead(st, now)) {
            return 0;
        }
        uint64_t freed[2] = {0, (g + 1) & GEN_MASK};
        if (!cas16(cell->st, st, freed)) {
            return 0; /* changed under us: look elsewhere */
        }
    } else if (gen_of(st[1]) != ((g + 1) & GEN_MASK) || st[0] != 0 || t_of(st) != 0) {
        return 0; /* neither a state nor a half-taken cell: garbage, leave it */
    }
    uint64_t mine[2] = {h, (g + 1) & GEN_MASK};
    return cas16(cell->id, id, mine);
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
    uint64_t h = XXH3_64bits_withSeed(name, len, cs->seed ^ CELL_SALT);
    h = h ? h : 1;
    struct tc_ring_cell_bucket *b = &cs->bucket[h & cs->mask];
    /* The claim lease's name: a NUL first, then the hash. */
    uint8_t lname[1 + 4 + sizeof(h)] = {0, 'c', 'e', 'l', 'l'};
    memcpy(lname + 5, &h, sizeof(h));
    uint64_t wait_until = 0;
    for (;;) {
        uint64_t st[2];
        int i = find(b, h, st);
        if (i >= 0) {
            if (apply(&b->c[i], st, fn, arg)) {
                return TC_OK;
            }
            continue;
        }
        struct tc_ring_cellval v = {0, 0};
        if (!fn(&v, arg) || (v.x == 0 && v.t == 0)) {
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
        i = find(b, h, st);
        if (i >= 0) {
            st_ret = TC_EAGAIN; /* made meanwhile: update it as found */
        } else {
            for (unsigned w = 0; w < WAYS; w++) {
                if (take(&b->c[w], h, now_ms)) {
                    i = (int)w;
                    break;
                }
            }
            if (i >= 0 && (i = find(b, h, st)) >= 0 && apply(&b->c[i], st, fn, arg)) {
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
