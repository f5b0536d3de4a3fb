/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tc_ring: a lock-free cache in one POSIX shared-memory segment that any
 * number of processes on a host attach and use at memory speed. A
 * MICA-style circular log plus a lossy hash index (DESIGN.md "L1"); the
 * layout is in shm/ring_layout.h and shm/LAYOUT.md.
 *
 *          set: reserve (fetch-add head[L]) ─▶ write record ─▶ publish (CAS slot)
 *                                                                   │
 *   index bucket (one line) [tag|L|pos] x 8 ◀───────────────────────┘
 *                                   │
 *          get: load slot ─▶ check stamp, key ─▶ copy value ─▶ check sum, re-read head[L]
 *                                                                   │
 *                         bytes reserved over while copying? ──yes──▶ miss
 *
 * A set of a live key whose record keeps its size rewrites the record in
 * place (under a BUSY bit in its slot) instead of appending, so hot keys that
 * are updated often do not fill the log with their dead versions.
 *
 * Two logs share the byte budget: new keys land in a small probation log; a
 * key read again while there, or written again soon after it fell out, moves
 * to the main log, where an item read in the oldest part of the log is
 * re-appended (lazy promotion). One-hit keys thus cost only probation space,
 * which is what lets a FIFO log beat LRU on skewed workloads.
 *
 * Library rules: depends on libc and libxxhash only; never logs (errors are
 * enum tc_status plus an optional message buffer); allocates only in
 * tc_ring_open (never on an operation path).
 *
 * Thread and process safety: a struct tc_ring may be shared by the threads
 * of one process; a struct tc_ring_ctx belongs to one thread at a time.
 * Any number of processes may open the same segment. Readers take no lock;
 * writers use one fetch-add and CASes. A process killed at any instruction
 * leaves nothing locked and corrupts nothing: its half-written record was
 * never published, and its stat slot is reclaimed once its pid is gone.
 *
 * Host-scope lease locks (tc_ring_lock_*) live in the same segment: a
 * fixed table of lock words taken by CAS, whose waiters sleep on a futex and
 * whose dead holders are reclaimed by lease expiry and pid check.
 *
 * Caveats:
 *  - Lossy by design: a set may be dropped (index bucket full, log lapped
 *    while the write was in progress); callers keep a slower tier behind it.
 *  - Crash mid-write: the reserved bytes stay in the log as garbage until
 *    overwritten; readers reject them (stamp, key, checksum). A writer
 *    killed while rewriting a record in place (same-size set of a live key)
 *    leaves that key a miss until it is set again; nobody waits for it.
 *  - fork(): a child must not use its parent's struct tc_ring or ctxs (their
 *    stat slots belong to the parent's pid); it calls tc_ring_open again.
 *  - Everything read from the segment is untrusted: a scribbled segment gives
 *    misses, never a crash or an out-of-bounds access. Shrinking the segment
 *    file under attached processes is another matter: their next access past
 *    the new end faults (SIGBUS), as with any shared mapping.
 */
#ifndef TC_SHM_RING_H
#define TC_SHM_RING_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>

struct tc_ring;     /* an attached segment, per process */
struct tc_ring_ctx; /* one thread's handle on a ring: its stat slot and sweep cursor */

/** Longest key, bytes. */
#define TC_RING_KEY_MAX 1024u
/** Flag bits a caller may store with an item. */
#define TC_RING_FLAGS_MAX 0xffffu
/** Ctxs one struct tc_ring can hand out at once. */
#define TC_RING_MAX_CTX 64u

/** Options of tc_ring_open(). Zero means the default everywhere. */
struct tc_ring_options {
    /** Bytes of the whole segment (header, stats, index, logs). 0 = attach to
     * an existing segment of any size, never create (inspection tools). */
    uint64_t size;
    /** Permission bits (default 0600): a created segment gets exactly these,
     * whatever the umask; an existing one is refused (TC_EPERM) if it grants
     * any bit beyond them. */
    unsigned mode;
    /** Owner a segment must have (used when has_owner; default: this
     * process's effective uid). A creator whose euid differs gives the new
     * segment to it (fchown, which needs CAP_CHOWN); an existing segment with
     * another owner is refused (TC_EPERM). */
    int has_owner;
    uint32_t owner_uid;
    /** Group of the segment (used when has_group; default: none checked). A
     * created segment gets it (fchown: the creator must be a member, or
     * root); an existing one that grants its group any access must have it. */
    int has_group;
    uint32_t group_gid;
    /** 1 = attach whatever the owner and mode (attach only: size must be 0).
     * For inspection tools that only read stats, never for a process that
     * stores or serves values. */
    int any_owner;
    /** Largest value this process will store (default min(1 MiB, size/16));
     * clamped to what the segment's geometry allows. */
    uint64_t max_item;
    /** Index buckets when creating, a power of two (default: ~1/16 of size). */
    uint64_t buckets;
    /** Percent of the log used for probation when creating (default 20). */
    unsigned small_pct;
    /** A main-log item read in the oldest promote_pct percent of the log is
     * re-appended (default 15; 100 = on every read, like LRU). */
    unsigned promote_pct;
    /** How long to wait for another process to finish creating (default 2000). */
    unsigned attach_timeout_ms;
};

/** Counters kept per ctx in the segment; X(name, index). */
#define TC_RING_STATS_COUNTERS(X)                                                                  \
    X(gets, 0)                                                                                     \
    X(hits, 1)                                                                                     \
    X(misses, 2)                                                                                   \
    X(sets, 3)                                                                                     \
    X(deletes, 4)                                                                                  \
    X(too_big, 5)                                                                                  \
    X(evictions, 6)                                                                                \
    X(promotions, 7)                                                                               \
    X(expired, 8)                                                                                  \
    X(torn, 9)                                                                                     \
    X(corrupt, 10)                                                                                 \
    X(swept, 11)                                                                                   \
    X(lost_sets, 12)

/** What tc_ring_get() reports beside the value. */
struct tc_ring_item {
    size_t value_len;   /* bytes of the value (also set when the buffer is too small) */
    uint64_t expire_ms; /* local expiry; 0 = never */
    unsigned flags;     /* as given to set */
};

/** Largest counter value a snapshot reports: 2^53 - 1, the largest integer
 * that JSON readers and Prometheus (doubles) hold exactly; ~28 years of 10 M
 * operations a second. A counter read past it from the segment is garbage. */
#define TC_RING_STAT_MAX ((1ull << 53) - 1)

/** A snapshot of a segment's state and of every process's counters. Every
 * counter is at most TC_RING_STAT_MAX; every gauge is within the geometry
 * taken at attach (items <= slots, bytes_used <= log_capacity, ctxs <= the
 * stat slots, locks_held <= lock_slots), whatever the segment holds. */
struct tc_ring_stats {
    uint64_t seg_size;     /* bytes of the segment */
    uint64_t log_capacity; /* bytes of both logs */
    uint64_t bytes_used;   /* log bytes holding records (live or not yet overwritten) */
    uint64_t items;        /* index slots pointing at not-yet-overwritten records */
    uint64_t slots;        /* index slots in total */
    uint64_t max_item;     /* largest value this process stores */
    uint64_t ctxs;         /* stat slots in use (threads attached, all processes) */
    uint32_t layout_major, layout_minor;
    uint64_t creator_pid;
    uint64_t lock_slots;                 /* entries of the lock table */
    uint64_t locks_held;                 /* of which held by a live lease now */
    uint32_t seg_uid, seg_gid, seg_mode; /* the segment's owner, group, mode (at attach) */
    /* Stat values in the segment that were implausible (a counter past
     * TC_RING_STAT_MAX, an owner past the largest pid) and left out of this
     * snapshot. Any other process with write access can scribble them. */
    uint64_t stats_rejected;
    /* Checks (tc_ring_check(), tc_ring_stats()) that found the segment
     * damaged, in this process so far. */
    uint64_t check_failures;
#define TC_RING_X(name, i) uint64_t name;
    TC_RING_STATS_COUNTERS(TC_RING_X)
#undef TC_RING_X
};

/**
 * Creates the segment /NAME (shm_open + mmap) or attaches to it.
 *
 * The creator initialises everything and publishes the magic last;
 * attachers wait up to attach_timeout_ms for it. A segment whose layout
 * version or size differs from what @p opt asks for is refused with
 * TC_EVERSION and a message in @p err naming both and saying how to remove
 * it (`tiercache shm unlink NAME`).
 *
 * Trust: anyone who can write the segment can plant values that other
 * processes serve, and read theirs. So an existing segment is attached only
 * if the descriptor being mapped (fstat, not the path: no race with a
 * rename) is a regular object owned by the expected uid (opt->owner_uid, else
 * this process's euid), that grants nothing beyond opt->mode, and, when it
 * grants its group anything and opt->has_group, whose group is
 * opt->group_gid. Otherwise TC_EPERM, with a message naming /dev/shm/NAME,
 * its owner and mode, and both fixes (remove it, or widen owner/group/mode).
 *
 * @param name  1..200 characters, no '/'.
 * @param opt   may be NULL (all defaults; then size 0: attach only).
 * @param[out] out  the ring, owned by the caller: tc_ring_close().
 * @param[out] err  a human-readable reason on failure (may be NULL).
 * @return TC_OK; TC_EINVAL (bad name or option); TC_ENOTFOUND (attach only,
 *         no such segment); TC_EPERM (owner, group or mode not accepted, or
 *         no access; a creator that cannot chown); TC_EVERSION (other layout
 *         or size); TC_ECORRUPT
 *         (the header's geometry is inconsistent); TC_ETIMEOUT (the creator
 *         never finished); TC_EIO (a system call failed); TC_ENOMEM.
 */
enum tc_status tc_ring_open(const char *name, const struct tc_ring_options *opt,
                            struct tc_ring **out, char *err, size_t errlen);

/** Detaches: releases every ctx still open, unmaps, frees. NULL is a no-op.
 * The segment stays for other processes (see tc_ring_unlink()). */
void tc_ring_close(struct tc_ring *r);

/** Removes the name /NAME; processes attached keep their mapping until they
 * close. @return TC_OK, TC_ENOTFOUND, TC_EINVAL (bad name), TC_EIO. */
enum tc_status tc_ring_unlink(const char *name, char *err, size_t errlen);

/**
 * Hands out a ctx for the calling thread: a stat slot in the segment that
 * only this ctx writes, so hits never write a line other cores read.
 * No allocation (ctxs are preallocated in the ring).
 * @return TC_OK; TC_EAGAIN if TC_RING_MAX_CTX ctxs are already out.
 */
enum tc_status tc_ring_ctx_create(struct tc_ring *r, struct tc_ring_ctx **out);

/** Returns @p c to its ring, folding its counters into the segment's
 * retired totals. NULL is a no-op. */
void tc_ring_ctx_destroy(struct tc_ring_ctx *c);

/**
 * Looks @p key up and copies its value into @p buf (@p cap bytes).
 * A locally-expired item (expire_ms <= now_ms) is a miss.
 * @param[out] item  value length, expiry, flags (may be NULL).
 * @return TC_OK; TC_ENOTFOUND; TC_ETOOBIG if the value is larger than @p cap
 *         (item->value_len says how large; retry with a bigger buffer);
 *         TC_EINVAL for an empty key or NULL buffer with cap > 0; TC_ETOOBIG
 *         for a key longer than TC_RING_KEY_MAX.
 */
enum tc_status tc_ring_get(struct tc_ring_ctx *c, const void *key, size_t klen, uint64_t now_ms,
                           void *buf, size_t cap, struct tc_ring_item *item);

/**
 * tc_ring_get() with the value's first @p head_len bytes copied to @p head
 * and the rest to @p buf (@p cap bytes): for a caller whose values start
 * with a fixed-size header of its own (the shm tier's item header), so that
 * the payload lands where it is used, without a move after the copy. The
 * checksum is over exactly the bytes copied, as for tc_ring_get(). A value
 * shorter than @p head_len is copied whole to @p head (item->value_len says
 * how long). @return as tc_ring_get(), with TC_ETOOBIG when the rest is
 * larger than @p cap; TC_EINVAL also for a NULL head with head_len > 0.
 */
enum tc_status tc_ring_get_split(struct tc_ring_ctx *c, const void *key, size_t klen,
                                 uint64_t now_ms, void *head, size_t head_len, void *buf,
                                 size_t cap, struct tc_ring_item *item);

/** Who a record is. Two equal identities name the same record, bytes and
 * all: a position in a log is never reused before the log laps it, and a
 * record rewritten where it lies gets a new check. */
struct tc_ring_ident {
    uint64_t pos, w0, w1, check;
    unsigned log;
};

/**
 * tc_ring_get_split() for a caller that keeps checked copies of values it
 * read (the shm tier keeps its large ones, so that a hot key is not copied
 * and hashed out of the segment on every hit). On entry @p id is the
 * identity of the record the caller holds a copy of (all zero: none; NULL:
 * none, and none is returned either: tc_ring_get_split()). When
 * the key's live record is that one, neither expired nor due to move,
 * nothing is copied or hashed and *@p same is 1; item is filled as on any
 * hit. Otherwise the get copies and checks as tc_ring_get_split() and, on
 * TC_OK, *@p id becomes the identity of the record copied.
 * @return as tc_ring_get_split().
 */
enum tc_status tc_ring_get_known(struct tc_ring_ctx *c, const void *key, size_t klen,
                                 uint64_t now_ms, void *head, size_t head_len, void *buf,
                                 size_t cap, struct tc_ring_item *item, struct tc_ring_ident *id,
                                 int *same);

/** One get of a batch (tc_ring_get_batch). */
struct tc_ring_getreq {
    const void *key;
    size_t klen;
    void *buf;
    size_t cap;
    struct tc_ring_item *item; /* may be NULL */
    enum tc_status *status;    /* out: what tc_ring_get() would return */
    uint64_t now_ms;
    void *head;      /* with head_len > 0: as tc_ring_get_split() */
    size_t head_len; /* 0: as tc_ring_get() */
};

/**
 * tc_ring_get() for each of @p n requests, in order, with the same results,
 * but faster when the keys are not in the CPU cache: the index buckets and
 * records of up to 32 gets are prefetched together, so that their memory
 * latencies overlap (the MICA idea). Nothing beyond tc_ring_get() is
 * assumed about the segment; the prefetches are hints.
 */
void tc_ring_get_batch(struct tc_ring_ctx *c, size_t n, const struct tc_ring_getreq *reqs);

/** One piece of a value given in parts (tc_ring_setv). */
struct tc_ring_iov {
    const void *base;
    size_t len;
};

/**
 * Stores @p key -> the concatenation of @p iov[0..iovcnt) with local expiry
 * @p expire_ms (0 = never; anything past 2^44-1 ms, the year 2527, is stored
 * as 2^44-1) and @p flags. Replaces any older value; of two
 * concurrent sets of one key one value survives whole, never a mix.
 * @return TC_OK (the ring may still drop it later, or at once if the log was
 *         lapped during the write: it is a cache); TC_EINVAL (empty key,
 *         flags > TC_RING_FLAGS_MAX); TC_ETOOBIG (key > TC_RING_KEY_MAX or
 *         value > max item); nothing is stored on error.
 */
enum tc_status tc_ring_setv(struct tc_ring_ctx *c, const void *key, size_t klen,
                            const struct tc_ring_iov *iov, size_t iovcnt, uint64_t expire_ms,
                            unsigned flags, uint64_t now_ms);

/** tc_ring_setv() with one part. */
enum tc_status tc_ring_set(struct tc_ring_ctx *c, const void *key, size_t klen, const void *value,
                           size_t vlen, uint64_t expire_ms, unsigned flags, uint64_t now_ms);

/** Removes @p key. @return TC_OK if a live value was removed, TC_ENOTFOUND
 * if there was none, TC_EINVAL / TC_ETOOBIG for a bad key. */
enum tc_status tc_ring_del(struct tc_ring_ctx *c, const void *key, size_t klen, uint64_t now_ms);

/**
 * Removes every live key starting with @p prefix (all keys when @p plen is
 * 0) and adds their number to *removed. Walks the whole index: O(slots),
 * about 1 ms per 2 M slots; meant for rare administrative use.
 */
enum tc_status tc_ring_clear(struct tc_ring_ctx *c, const void *prefix, size_t plen,
                             uint64_t now_ms, uint64_t *removed);

/**
 * Examines at most @p budget index slots from the ctx's cursor, clearing
 * those that point to expired, overwritten or invalid records, and adds the
 * number cleared to *cleared (may be NULL).
 * @return TC_OK when the cursor completed a pass over the index, TC_EAGAIN
 *         when work remains.
 */
enum tc_status tc_ring_sweep(struct tc_ring_ctx *c, uint64_t now_ms, size_t budget,
                             uint64_t *cleared);

/** Fills @p out. Walks the index to count items: O(slots), for tools and
 * stats endpoints, not hot paths. Thread-safe. Values read from the segment
 * are clamped as struct tc_ring_stats says; an implausible one counts as a
 * failed check (see tc_ring_check()). */
void tc_ring_stats(struct tc_ring *r, struct tc_ring_stats *out);

/**
 * Checks what a process can check of a live segment without stopping the
 * others: the header still equals the copy taken at attach (magic, version,
 * fingerprint, size, seed, geometry), every stat slot holds plausible values,
 * and no log head moved backwards since this process last looked. Cheap
 * (the header and the 128 stat slots): meant for periodic health checks.
 *
 * The ring's own reads never trust these bytes (geometry is used from the
 * copy, records are validated), so a failure does not make gets wrong; it
 * shows that some process with write access scribbled on the segment. A
 * failure is sticky for this struct tc_ring (it does not heal by itself):
 * later calls keep reporting it, and the first reasons stay in the message.
 *
 * @param why  receives a human-readable reason on failure (may be NULL).
 * @return TC_OK; TC_ECORRUPT (failed now or earlier in this process).
 */
enum tc_status tc_ring_check(struct tc_ring *r, char *why, size_t len);

/** Largest value tc_ring_set() accepts in this process. */
uint64_t tc_ring_max_item(const struct tc_ring *r);

/* ---- host-scope counter and limit cells (issue 16) ------------------------------------------
 *
 * A table of small states keyed by name (any bytes; told apart by a 64-bit
 * hash, like lock names, and apart from lock names and cache keys): each
 * state is two words, x (signed) and t, a time in ms after which the state
 * is worth nothing (0: never; at most 2^44 - 1). Every change of a state is
 * one 16-byte compare-and-swap of the pair: a process killed at any point
 * leaves each state either as it was or as it became, never half-changed,
 * and no state locked. What x and t mean is the caller's business
 * (tiers/count.h).
 *
 * A name gets a cell in its bucket (TC_RING_CELL_WAYS cells) the first time
 * a change is stored for it, taking a free cell or one whose t has passed;
 * making a cell a name's is serialised per name through the lock table (a
 * lease of TC_RING_CELL_CLAIM_MS, taken over from a dead process). A bucket
 * whose cells all hold live states refuses new names (TC_ENOMEM). The table
 * takes ~1/64 of the segment: 8 to 8192 buckets (32768 cells for 64 MiB).
 *
 * Needs a 16-byte CAS (x86-64's cmpxchg16b); elsewhere every call answers
 * TC_ENOTSUP.
 */

/** A state: see above. */
struct tc_ring_cellval {
    int64_t x;
    uint64_t t;
};

/**
 * Decides a state's change: called with the state as stored (zeros for a
 * name without a cell); returns 1 to store the new *v, 0 to leave it. May
 * be called several times in one update (each time a concurrent change
 * won), always on the latest state, so it must not count its calls.
 */
typedef int (*tc_ring_cell_fn)(struct tc_ring_cellval *v, void *arg);

/** Lease (ms) of the per-name claim of a cell; see above. */
#define TC_RING_CELL_CLAIM_MS 10000u

/**
 * Updates the state of @p name (@p len >= 1 bytes) with @p fn at @p now_ms
 * (which decides which cells are past their t). Storing zeros frees the
 * cell.
 * @return TC_OK (fn's decision was stored, or it stored nothing); TC_ENOMEM
 *         (a new name and no cell free in its bucket); TC_EAGAIN (another
 *         process kept the name's claim for 1 s); TC_EINVAL; TC_ENOTSUP.
 * Thread- and process-safe; lock-free except for a new name's claim.
 */
enum tc_status tc_ring_cell_update(struct tc_ring *r, const void *name, size_t len, uint64_t now_ms,
                                   tc_ring_cell_fn fn, void *arg);

/** Longest moving-window log of the segment: the largest limit it keeps. */
#define TC_RING_MOVING_MAX 1024u

/** A moving-window decision (tc_ring_moving()). */
struct tc_ring_moving {
    /* In. */
    uint64_t limit;     /* 1 .. TC_RING_MOVING_MAX */
    uint64_t window_ms; /* >= 1 */
    uint64_t cost;      /* 0 .. limit */
    int hit;            /* 1: take cost when allowed; 0: only look */
    int clear;          /* 1: forget the log (everything else ignored) */
    /* Out. */
    int allowed;         /* fewer than limit - cost + 1 hits within the last window */
    uint64_t used;       /* hits within the window, after this one */
    uint64_t oldest_ms;  /* the oldest of them (0: none) */
    uint64_t newest_ms;  /* the newest of them (0: none) */
    uint64_t blocker_ms; /* denied: the hit whose leaving lets this one pass */
};

/**
 * The exact moving window ("at most limit hits in any window") of @p name
 * at @p now_ms: the log of its last TC_RING_MOVING_MAX hit times lives in a
 * slab of the segment (~1/32 of it, 4 to 1024 slabs, in buckets of 4 taken
 * like cells). A hit is one 16-byte CAS of the slab's head, which also
 * carries the newest batch's time; the slots of a batch are written by the
 * next decision at the latest (any process helps), so a process killed
 * anywhere leaves the log whole. O(limit) reads per decision, to count.
 * @return TC_OK; TC_ENOMEM (a new name and no slab free in its bucket);
 *         TC_EAGAIN; TC_EINVAL (limit out of 1..TC_RING_MOVING_MAX, window
 *         0, cost > limit); TC_ENOTSUP (no 16-byte CAS).
 */
enum tc_status tc_ring_moving(struct tc_ring *r, const void *name, size_t len, uint64_t now_ms,
                              struct tc_ring_moving *m);

/** Cells holding a live state at @p now_ms (a walk of the table, for stats). */
uint64_t tc_ring_cells_live(struct tc_ring *r, uint64_t now_ms);

/* ---- host-scope lease locks --------------------------------------------------------------------
 *
 * A lock is a name (any bytes) held for a lease of ttl_ms by whoever knows
 * its token. Every process attached to the segment sees the same locks.
 * Acquiring never waits; tc_ring_lock_wait() and the epoch calls let a
 * caller sleep until a retry is worthwhile.
 *
 * Exactness: two acquirers of one name never both hold it (names are told
 * apart by a 64-bit hash of their bytes: two names with the same hash are
 * one lock). Names hash to a bucket of TC_RING_LOCK_WAYS entries and may use
 * any free entry in it, so different names do not serialise against each
 * other unless all the entries of their bucket are held at once; then an
 * acquire answers TC_EEXIST although its own name is free ("bucket full":
 * rare, as the table takes ~1/64 of the segment, 8 to 8192 buckets of 7
 * entries, e.g. 2048 x 7 for 64 MiB, and a lock is held only while one
 * value is regenerated).
 *
 * Leases run on CLOCK_MONOTONIC, shared by every process on the host. A
 * holder whose process is gone (kill(pid, 0) fails with ESRCH) or whose lease
 * ended is taken over by the next acquire; a process killed in the few
 * instructions between taking a lock word and describing its claim blocks
 * the name (and the 1/64 of its bucket's names that share its 6-bit tag)
 * until the lease ends. All processes must share one pid namespace and one
 * CLOCK_MONOTONIC (no time namespaces with offsets between them).
 *
 * No call allocates or spins. Everything read from the table is untrusted:
 * garbage yields "held", "free" or TC_ENOTFOUND, never a crash.
 */

/** Room for a token: text of [0-9a-zA-Z_-], at most 47 characters, plus NUL
 * (the same as TC_LOCK_TOKEN_MAX in tiers/tier.h). */
#define TC_RING_LOCK_TOKEN_MAX 48
/** Longest lease, ms (24 h). A lock word whose deadline lies more than twice
 * this ahead is garbage, and counts as free. */
#define TC_RING_LOCK_TTL_MAX (24ull * 3600 * 1000)
/** How often a sleeping waiter checks whether the holder's process died, ms. */
#define TC_RING_LOCK_POLL_MS 100u

/**
 * Takes lock @p name (@p len >= 1 bytes) for @p ttl_ms unless it is held.
 * @param[out] token  on TC_OK, the new holder's token (NUL-terminated; 64
 *             random bits from getrandom(2), the entry and its generation).
 * @param[out] remaining_ms  on TC_EEXIST, ms left on the holder's lease
 *             (>= 1); may be NULL.
 * @return TC_OK; TC_EEXIST held (or its bucket is full); TC_EINVAL for a
 *         NULL ring/name/token, len 0, or ttl_ms outside 1..TC_RING_LOCK_TTL_MAX.
 * Thread- and process-safe.
 */
enum tc_status tc_ring_lock_acquire(struct tc_ring *r, const void *name, size_t len,
                                    uint64_t ttl_ms, char token[TC_RING_LOCK_TOKEN_MAX],
                                    uint64_t *remaining_ms);

/**
 * Releases lock @p name if @p token is its holder's token and the lease has
 * not ended, then wakes the processes waiting for it (tc_ring_lock_wait) and
 * bumps the epoch. A lease that ended but was not taken over yet is freed
 * all the same, and answered TC_ENOTFOUND: the caller no longer held it.
 * @return TC_OK released; TC_ENOTFOUND not held under this token (never
 *         taken, expired, taken over, malformed token); TC_EINVAL (NULL or
 *         empty arguments).
 */
enum tc_status tc_ring_lock_release(struct tc_ring *r, const void *name, size_t len,
                                    const char *token);

/**
 * Extends the lease of lock @p name to @p ttl_ms from now if @p token holds
 * it (a live lease). The token stays the same.
 * @return TC_OK renewed; TC_EEXIST held under another token; TC_ENOTFOUND
 *         not held (released, expired, or taken over); TC_EINVAL.
 */
enum tc_status tc_ring_lock_renew(struct tc_ring *r, const void *name, size_t len,
                                  const char *token, uint64_t ttl_ms);

/**
 * Says whether @p name is held by a live lease. On TC_OK fills the holder's
 * @p token, the ms left on its lease (>= 1) and its process id; each out
 * pointer may be NULL. A claim still being made, or a holder whose process is
 * gone, counts as free.
 * @return TC_OK held; TC_ENOTFOUND free; TC_EINVAL.
 */
enum tc_status tc_ring_lock_peek(struct tc_ring *r, const void *name, size_t len,
                                 char token[TC_RING_LOCK_TOKEN_MAX], uint64_t *remaining_ms,
                                 uint32_t *pid);

/**
 * For programs that link shm/ directly: sleeps on a futex (no spinning)
 * until @p name is released, its holder's lease ends, its holder's process
 * is found gone (checked every TC_RING_LOCK_POLL_MS), or @p timeout_ms
 * passes. Returns at once when the name is free already.
 * @return TC_OK: worth retrying tc_ring_lock_acquire() now (another waiter
 *         may still win it); TC_ETIMEOUT; TC_EINVAL.
 */
enum tc_status tc_ring_lock_wait(struct tc_ring *r, const void *name, size_t len,
                                 uint64_t timeout_ms);

/** The segment-wide release counter: it changes on every release (of any
 * lock, by any process) and on every tc_ring_lock_kick(). */
uint32_t tc_ring_lock_epoch(struct tc_ring *r);

/**
 * Futex-sleeps while the epoch equals @p seen, up to @p timeout_ms: one
 * watcher thread per process can wait for "some lock was released".
 * @return TC_OK (the epoch changed, or a spurious wake-up: compare it
 *         again); TC_ETIMEOUT (it still equals @p seen).
 */
enum tc_status tc_ring_lock_wait_epoch(struct tc_ring *r, uint32_t seen, uint64_t timeout_ms);

/** Bumps the epoch and wakes every thread of every process sleeping in
 * tc_ring_lock_wait_epoch(): how a watcher is told to stop. */
void tc_ring_lock_kick(struct tc_ring *r);

#endif
