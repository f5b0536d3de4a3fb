/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The shm ring's segment layout: ABI shared by every process that attaches a
 * segment, whatever build it comes from (STYLE R3, R15). shm/LAYOUT.md is the
 * prose version of this file; change both together, and bump
 * TC_RING_LAYOUT_MAJOR on any change that an older build would misread.
 *
 * Only offsets are stored, never pointers: every process maps the segment at
 * its own address. Every value here may be garbage written by a buggy or
 * hostile process; ring.c copies the geometry once at attach, after checking
 * it, and bounds-checks everything else on every read.
 *
 *   offset                      what
 *   0                           header: magic (stored last), version, fingerprint, geometry,
 *                               seed; head[0], head[1] and the retired counters each on their
 *                               own cache lines
 *   4096                        stat slots: 128 x 128 B, one per ring ctx (thread) in any process
 *   lock_off   = 4096 + 16 KiB  lock table: lock_nbuckets x 512 B (a wake line + 7 entries)
 *   cell_off                    counter/limit cells: cell_nbuckets x 128 B (4 cells of 32 B)
 *   mlog_off                    moving-window logs: mlog_nslabs x 8256 B (a cell + 1024 slots)
 *   index_off                   index: nbuckets x 64 B buckets of 8 u64 slots
 *   log_off[0]                  log 0, probation: byte ring where new keys land
 *   log_off[1]                  log 1, main: keys read again, or written again soon
 *   seg_size                    end
 *
 * Index slot (64 bits), 0 = empty:
 *
 *    63          48 47  46                                          0
 *   +--------------+---+---------------------------------------------+
 *   |  tag (!= 0)  | L |  log position, low 47 bits (bit 0: BUSY)    |
 *   +--------------+---+---------------------------------------------+
 *
 * Lock word (64 bits; one per lock entry, see shm/lock.c; the seal covers
 * all but the state and the deadline, so a renewal only moves the deadline):
 *
 *    63                             24 23          8 7     2 1   0
 *   +---------------------------------+-------------+-------+-----+
 *   | lease deadline, CLOCK_MONOTONIC | generation  |  tag  |state|  state: 0 free,
 *   | ms (40 bits; 0 when free)       | (16 bits)   |(6 bit)|     |  1 claiming, 2 held
 *   +---------------------------------+-------------+-------+-----+
 *
 * Record in log L at position pos (8-byte aligned, may wrap the ring's end):
 *
 *   +-------------------+---------------------------+-------+--------------------------------+
 *   | expire_ms : 44    | key_len : 11              | check | key bytes, then value bytes,   |
 *   | pos/8 mod 2^20: 20| flags : 16, val_len : 32  | u64   | zero-padded together to 8      |
 *   +-------------------+---------------------------+-------+--------------------------------+
 *
 * Byte order is the host's: a segment never leaves its host.
 */
#ifndef TC_SHM_RING_LAYOUT_H
#define TC_SHM_RING_LAYOUT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The ring depends on 64-bit atomics that are plain loads/stores/RMWs in the
 * shared mapping: a lock-based fallback would put a process-local lock in
 * front of memory other processes touch without it. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the shm ring needs lock-free 64-bit atomics");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "atomic u64 must have the size of u64");

#define TC_RING_MAGIC        0x7463726E67310A00ull /* "tcrng1\n\0" */
#define TC_RING_LAYOUT_MAJOR 3u                    /* incompatible changes */
#define TC_RING_LAYOUT_MINOR 0u                    /* compatible additions */

#define TC_RING_CACHELINE  64u
#define TC_RING_HDR_SIZE   4096u
#define TC_RING_STAT_SLOTS 128u
#define TC_RING_BUCKET_W   8u /* slots per bucket: one cache line */
#define TC_RING_NLOGS      2u
#define TC_RING_LOG_SMALL  0u /* probation: first writes of a key */
#define TC_RING_LOG_MAIN   1u /* keys that were read again, or came back soon */

#define TC_RING_POS_BITS  47u
#define TC_RING_POS_MASK  ((1ull << TC_RING_POS_BITS) - 1)
#define TC_RING_LOG_BIT   (1ull << TC_RING_POS_BITS)
#define TC_RING_TAG_SHIFT 48u
/* Positions are multiples of 8, so the low bits of the position field are
 * free: bit 0 marks a slot whose record is being rewritten in place or
 * copied by a promotion (one at a time; readers still read it). */
#define TC_RING_SLOT_BUSY 1ull

/* Lock table: buckets of TC_RING_LOCK_WAYS entries; a name may take any
 * entry of its bucket (shm/lock.c says how that stays exclusive). */
#define TC_RING_LOCK_WAYS           7u
#define TC_RING_LOCK_STATE_MASK     3ull
#define TC_RING_LOCK_FREE           0u
#define TC_RING_LOCK_CLAIMING       1u
#define TC_RING_LOCK_HELD           2u
#define TC_RING_LOCK_TAG_SHIFT      2u
#define TC_RING_LOCK_TAG_BITS       6u
#define TC_RING_LOCK_GEN_SHIFT      8u
#define TC_RING_LOCK_GEN_BITS       16u
#define TC_RING_LOCK_DEADLINE_SHIFT 24u
#define TC_RING_LOCK_DEADLINE_BITS  40u

/* Counter/limit cells (issue 16, shm/cell.c): buckets of TC_RING_CELL_WAYS
 * cells; a cell is two 16-byte words, each only ever read and written whole
 * by a 16-byte compare-and-swap (cmpxchg16b), so that a value and its expiry
 * change together:
 *
 *   id = { name hash (never 0), gen }          gen: 20 bits
 *   st = { x, t << 20 | gen }                  t: 44 bits of ms (0: never)
 *
 * The cell holds the name's state while both gens agree; st's gen moving
 * ahead of id's marks a cell being taken for another name. */
#define TC_RING_CELL_WAYS     4u
#define TC_RING_CELL_GEN_BITS 20u
#define TC_RING_CELL_T_BITS   44u

/* Moving-window logs (issue 16, shm/cell.c): slabs of a cell (id, st as
 * above, st.x = hits ever << 24 | the last hit's cost) and one slot per
 * hit of the last TC_RING_MLOG_SLOTS, slot = tag << 44 | time ms, where
 * tag = hit number mod (2^20 - 1) + 1 (0: never written). Slabs come in
 * buckets of TC_RING_CELL_WAYS. */
#define TC_RING_MLOG_SLOTS 1024u

/* Counters per stat slot: the list is TC_RING_STATS_COUNTERS in ring.h. */
#define TC_RING_NCOUNTERS 13u

/* One per ring ctx (a thread's handle): only its owner writes it, so a hit
 * dirties no line another core reads on its own hot path. */
struct tc_ring_stat_slot {
    _Atomic uint64_t owner_pid; /* 0 = free */
    _Atomic uint64_t heartbeat_ms;
    _Atomic uint64_t c[TC_RING_NCOUNTERS];
    uint64_t _reserved[1];
};

struct tc_ring_bucket {
    _Atomic uint64_t slot[TC_RING_BUCKET_W];
};

struct tc_ring_line {
    _Atomic uint64_t v;
    uint64_t _pad[7];
};

/* One lock entry. word is the lock; the other words describe the claim that
 * word's generation made, and count only while seal matches them (a claimer
 * writes them after its CAS: a reader must never trust a half-written set). */
struct tc_ring_lock_entry {
    _Atomic uint64_t word;      /* the lock word above */
    _Atomic uint64_t name_hash; /* XXH3 of the lock name, seeded per segment */
    _Atomic uint64_t rnd;       /* random part of the holder's token */
    _Atomic uint64_t owner_pid; /* the claiming process */
    _Atomic uint64_t seal;      /* XXH3 of (word without state, name_hash, rnd, owner_pid) */
    uint64_t _reserved[3];
};

/* Plain words, not _Atomic: no C11 atomic covers 16 bytes without a lock on
 * every compiler, and shm/cell.c touches them only with cmpxchg16b (R0). */
struct tc_ring_cell {
    alignas(16) uint64_t id[2];
    alignas(16) uint64_t st[2];
};

struct tc_ring_cell_bucket {
    struct tc_ring_cell c[TC_RING_CELL_WAYS];
};

struct tc_ring_mlog {
    struct tc_ring_cell head;
    uint64_t _pad[4];
    _Atomic uint64_t slot[TC_RING_MLOG_SLOTS];
};

/* A bucket: the futex word its releases bump, then its entries. */
struct tc_ring_lock_bucket {
    _Atomic uint32_t wake;    /* futex word: +1 on every release in this bucket */
    _Atomic uint32_t waiters; /* threads sleeping on wake (releasers skip FUTEX_WAKE at 0) */
    uint32_t _pad[14];
    struct tc_ring_lock_entry e[TC_RING_LOCK_WAYS];
};

/* The segment-wide release counter, on its own line. */
struct tc_ring_lock_epoch {
    _Atomic uint32_t epoch;   /* futex word: +1 on every release anywhere, and on kicks */
    _Atomic uint32_t waiters; /* threads sleeping on epoch */
    uint32_t _pad[14];
};

struct tc_ring_hdr {
    _Atomic uint64_t magic; /* stored last by the creator (release) */
    uint32_t major, minor;
    uint64_t fingerprint; /* tc_ring_layout_fingerprint() of the creator */
    uint64_t seg_size;    /* bytes of the whole segment */
    uint64_t seed;        /* XXH3 seed, random per segment */
    uint64_t creator_pid;
    uint64_t flags; /* none yet */
    uint64_t stat_off, nstat;
    uint64_t index_off, nbuckets; /* nbuckets: a power of two */
    uint64_t log_off[TC_RING_NLOGS], log_cap[TC_RING_NLOGS];
    uint64_t max_rec; /* largest record a writer may append, bytes */
    /* Producer positions, one line each: writers to one log do not slow
     * writers to the other (STYLE R16). */
    struct tc_ring_line head[TC_RING_NLOGS];
    /* Counters folded in from ctxs that closed or whose process died. */
    struct tc_ring_stat_slot retired;
    uint64_t lock_off, lock_nbuckets; /* lock table; lock_nbuckets: a power of two */
    uint64_t cell_off, cell_nbuckets; /* counter/limit cells; cell_nbuckets: a power of two */
    uint64_t mlog_off, mlog_nslabs;   /* moving-window logs; mlog_nslabs: a power of two >= 4 */
    uint64_t _pad0[2];
    struct tc_ring_lock_epoch lock_epoch;
    uint8_t _pad1[TC_RING_HDR_SIZE - TC_RING_CACHELINE * (4 + TC_RING_NLOGS) -
                  sizeof(struct tc_ring_stat_slot)];
};

/* Record header: three words. */
struct tc_ring_rec {
    uint64_t expire_stamp; /* bits 0-43 expire_ms (0 = never); 44-63: (pos >> 3) mod 2^20 */
    uint64_t lens;         /* bits 0-10 key_len; 11-26 flags; 27-58 val_len; 59-63 zero */
    uint64_t check;        /* XXH3(value, seed ^ mix(key hash, pos, expire_stamp, lens)) */
};

#define TC_RING_EXPIRE_BITS 44u
#define TC_RING_EXPIRE_MAX  ((1ull << TC_RING_EXPIRE_BITS) - 1)
#define TC_RING_STAMP_MASK  ((1ull << (64 - TC_RING_EXPIRE_BITS)) - 1)

_Static_assert(sizeof(struct tc_ring_stat_slot) == 128, "stat slot is two cache lines");
_Static_assert(sizeof(struct tc_ring_bucket) == TC_RING_CACHELINE, "a bucket is one line");
_Static_assert(sizeof(struct tc_ring_line) == TC_RING_CACHELINE, "a line is a line");
_Static_assert(sizeof(struct tc_ring_hdr) == TC_RING_HDR_SIZE, "header is one page");
_Static_assert(offsetof(struct tc_ring_hdr, head) == 2 * TC_RING_CACHELINE, "heads on own lines");
_Static_assert(offsetof(struct tc_ring_hdr, retired) % TC_RING_CACHELINE == 0, "aligned");
_Static_assert(offsetof(struct tc_ring_hdr, lock_off) == 384, "lock geometry after retired");
_Static_assert(offsetof(struct tc_ring_hdr, lock_epoch) == 448, "epoch on its own line");
_Static_assert(sizeof(struct tc_ring_lock_entry) == TC_RING_CACHELINE, "a lock entry is a line");
_Static_assert(sizeof(struct tc_ring_lock_epoch) == TC_RING_CACHELINE, "the epoch is a line");
_Static_assert(sizeof(struct tc_ring_lock_bucket) == 512, "a lock bucket is 8 lines");
_Static_assert(sizeof(struct tc_ring_cell) == 32 && alignof(struct tc_ring_cell) == 16,
               "a cell is two 16-byte words");
_Static_assert(sizeof(struct tc_ring_cell_bucket) == 2 * TC_RING_CACHELINE, "a cell bucket");
_Static_assert(offsetof(struct tc_ring_hdr, cell_off) == 400, "cell geometry after the locks'");
_Static_assert(offsetof(struct tc_ring_hdr, mlog_off) == 416, "log geometry after the cells'");
_Static_assert(sizeof(struct tc_ring_mlog) == 64 + 8 * TC_RING_MLOG_SLOTS,
               "a slab: a line + slots");
_Static_assert(sizeof(_Atomic uint32_t) == 4 && ATOMIC_INT_LOCK_FREE == 2,
               "futex words are lock-free 32-bit atomics");
_Static_assert(TC_RING_LOCK_DEADLINE_SHIFT + TC_RING_LOCK_DEADLINE_BITS == 64 &&
                   TC_RING_LOCK_GEN_SHIFT + TC_RING_LOCK_GEN_BITS == TC_RING_LOCK_DEADLINE_SHIFT &&
                   TC_RING_LOCK_TAG_SHIFT + TC_RING_LOCK_TAG_BITS == TC_RING_LOCK_GEN_SHIFT,
               "lock word fields tile 64 bits");
_Static_assert(sizeof(struct tc_ring_rec) == 24, "record header is 24 bytes");
_Static_assert(offsetof(struct tc_ring_rec, check) == 16, "record layout");

/** Folds the sizes and alignments of every shared struct into one number, so
 * that a build with another layout is refused even at the same version. */
static inline uint64_t tc_ring_layout_fingerprint(void)
{
    uint64_t f = TC_RING_LAYOUT_MAJOR;
    const uint64_t parts[] = {
        sizeof(struct tc_ring_hdr),
        alignof(struct tc_ring_hdr),
        sizeof(struct tc_ring_stat_slot),
        sizeof(struct tc_ring_bucket),
        sizeof(struct tc_ring_rec),
        TC_RING_BUCKET_W,
        TC_RING_NLOGS,
        TC_RING_POS_BITS,
        TC_RING_NCOUNTERS,
        offsetof(struct tc_ring_hdr, retired),
        sizeof(struct tc_ring_lock_entry),
        sizeof(struct tc_ring_lock_bucket),
        TC_RING_LOCK_WAYS,
        TC_RING_LOCK_GEN_BITS,
        TC_RING_LOCK_DEADLINE_BITS,
        offsetof(struct tc_ring_hdr, lock_off),
        offsetof(struct tc_ring_hdr, lock_epoch),
        sizeof(struct tc_ring_cell_bucket),
        offsetof(struct tc_ring_hdr, cell_off),
        TC_RING_CELL_GEN_BITS,
        sizeof(struct tc_ring_mlog),
        offsetof(struct tc_ring_hdr, mlog_off),
    };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        f = (f ^ parts[i]) * 0x100000001B3ull;
    }
    return f;
}

#endif
