/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The shm ring (see ring.h for the contract, ring_layout.h and LAYOUT.md for
 * the bytes).
 *
 * Why every access to the logs is an atomic word access: a reader copies a
 * record optimistically while a writer may be overwriting it (a seqlock
 * read). With plain memcpy that is a data race, undefined behaviour in C11
 * and a report under ThreadSanitizer. Relaxed 8-byte atomic loads and stores
 * compile to plain moves on x86-64 and arm64, make the race defined, and let
 * TSan reason about it without annotations. Records are 8-byte aligned and
 * the log capacity is a multiple of 8, so a word never straddles the wrap.
 * One exception outside TSan builds: the bulk copy of a record's bytes on a
 * read is memcpy (copy_out() says why).
 *
 * The validation protocol (reader side, per hit):
 *
 *   s    = load(slot, acquire)          pairs with the publishing CAS (release)
 *   pos  = position from s and head[L]; head - pos > cap  => overwritten, miss
 *   copy header, key, value             relaxed word loads
 *   sum  = XXH3(value, seed(key hash, header)); must equal the stored check
 *   fence(acquire); head' = load(head[L])
 *   head' - pos > cap => a writer reserved over the bytes while we copied: miss
 *
 * The writer: pos = fetch_add(head[L], len); fence(release); relaxed word
 * stores; CAS(slot, release). If a reader's copy saw any byte stored after
 * that release fence, the fence pair makes the fetch-add visible to the
 * reader's head re-read, so the overlap is detected.
 *
 * The head check alone misses two writers that never move the head over the
 * bytes they touch: one that reserved its bytes, then stalled (or was
 * stopped) for longer than a whole lap of the log and resumes writing into
 * bytes a newer record now owns; and an in-place rewrite of a live record
 * (rewrite_in_place(), under the slot's BUSY bit). For both, the checksum
 * over header, full position, key hash and value is what catches the mix. Records that a killed
 * writer left half-written are never published; a garbage slot pointing at them fails the stamp (20
 * bits of the record's own position) or the checksum, which covers the full position.
 */
#include "shm/ring.h"
#include "shm/ring_internal.h"
#include "shm/ring_layout.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
/* XXH3_state_t on the stack (a gathered write's checksum without malloc) needs
 * the state's layout, which xxhash only shows under this macro. */
#define XXH_STATIC_LINKING_ONLY
#include "shm/xxh.h"

_Static_assert(TC_RING_NCOUNTERS ==
#define TC_RING_X(name, i) +1
                   (0 TC_RING_STATS_COUNTERS(TC_RING_X)),
#undef TC_RING_X
               "ring.h counters and ring_layout.h slots disagree");

#define MIN_SEG_SIZE  (256u << 10)
#define MAX_SEG_SIZE  (1ull << 44)
#define NAME_MAX_LEN  200u
#define REC_HDR       ((uint64_t)sizeof(struct tc_ring_rec))
#define PUBLISH_TRIES 16
/* Defaults measured with a deterministic replay of tiercache-bench's Zipf
 * 0.99 trace (1M keys, 16 MiB): the hit ratio is flat within 0.1 point for
 * small 20-25% and promote 15-25%, and falls off past promote 60%. */
#define DEF_PROMOTE    15u
#define DEF_SMALL      20u
#define DEF_TIMEOUT_MS 2000u
/* Index bytes ~ 1/IDX_DIV of the segment (rounded down to a power of two of
 * buckets): about one slot per 100 log bytes, so that records of small
 * values (~150-200 bytes) rarely lose their slot to a full bucket. */
#define IDX_DIV 10u
/* A dead slot counts as a ghost (the key was here recently: it goes to the
 * main log when written again) while its log has written less than
 * (1 + GHOST_PCT/100) laps since. Measured on Zipf 0.99: 100% is too short
 * (one-pass hit ratio -0.3 points), beyond ~3 laps it no longer matters. */
#define GHOST_PCT 900u
/* Lock table bytes ~ 1/LOCK_DIV of the segment, as a power of two of
 * buckets within [LOCK_MIN_BUCKETS, LOCK_MAX_BUCKETS]: 1 MiB (14336 entries)
 * for 64 MiB. A held lock is one in-flight regeneration, so even a busy host
 * holds a few hundred at once: a bucket of 7 is then rarely full. */
#define LOCK_DIV         64u
#define LOCK_MIN_BUCKETS 8u
#define LOCK_MAX_BUCKETS 8192u
#define LOCK_BUCKET_SIZE ((uint64_t)sizeof(struct tc_ring_lock_bucket))
/* Counter/limit cells likewise: ~1/64 of the segment, 8 to 8192 buckets of
 * 4 cells (1 MiB, 32768 cells, for 64 MiB). */
#define CELL_BUCKET_SIZE ((uint64_t)sizeof(struct tc_ring_cell_bucket))
/* Moving-window slabs: ~1/32 of the segment, a power of two from 4 to 1024
 * (128 slabs, 1 MiB, for 64 MiB). */
#define MLOG_SIZE ((uint64_t)sizeof(struct tc_ring_mlog))
#define MLOG_DIV  32u
#define MLOG_MIN  4u
#define MLOG_MAX  1024u

enum {
    C_GETS,
    C_HITS,
    C_MISSES,
    C_SETS,
    C_DELETES,
    C_TOO_BIG,
    C_EVICTIONS,
    C_PROMOTIONS,
    C_EXPIRED,
    C_TORN,
    C_CORRUPT,
    C_SWEPT,
    C_LOST_SETS
};

struct tc_ring_ctx {
    struct tc_ring *ring;
    struct tc_ring_stat_slot *st;
    int shared; /* st is the segment's retired slot, shared: use atomic adds */
    atomic_int in_use;
    uint64_t sweep_cursor; /* next index slot the sweep examines */
};

struct tc_ring {
    uint8_t *base;
    size_t map_len;
    struct tc_ring_hdr *hdr;
    /* Geometry copied from the header once, after validation: the header may
     * be scribbled later, these may not. */
    struct tc_ring_stat_slot *stats;
    uint64_t nstat;
    struct tc_ring_bucket *index;
    uint64_t bucket_mask, nslots;
    _Atomic uint64_t *log[TC_RING_NLOGS];
    _Atomic uint64_t *head[TC_RING_NLOGS];
    uint64_t cap[TC_RING_NLOGS], words[TC_RING_NLOGS];
    uint64_t seed, max_rec, max_item, seg_size;
    /* A multiple of cap[L] near the head, so that most positions map to the
     * ring without a 64-bit division (tens of cycles on the read path).
     * Threads of this process share it; it moves once per lap. */
    _Atomic uint64_t lap_base[TC_RING_NLOGS];
    uint64_t promote_age; /* main-log age past which a read re-appends */
    uint64_t inplace_age; /* main-log age below which a same-size set rewrites in place */
    /* A dead slot remembers its key only this long (bytes written since),
     * like S3-FIFO's bounded ghost queue: older comebacks are new keys. */
    uint64_t ghost_age[TC_RING_NLOGS];
    uint64_t pid;
    struct tc_ring_locks_ locks;
    struct tc_ring_cells_ cells;
    /* The header as validated at attach: tc_ring_check() compares the live
     * one with it. Only the fields no process ever writes after creation
     * are compared (see hdr_fixed_equal()). */
    struct tc_ring_hdr hdr0;
    uint32_t seg_uid, seg_gid, seg_mode; /* fstat of the mapped descriptor */
    /* Integrity, sticky: BAD_* bits of the checks that failed so far, how
     * many checks failed, and the highest head each log was seen at. */
    atomic_uint bad;
    _Atomic uint64_t check_failures;
    _Atomic uint64_t head_seen[TC_RING_NLOGS];
    char name[NAME_MAX_LEN + 1];
    struct tc_ring_ctx ctxs[TC_RING_MAX_CTX];
};

enum { BAD_HEADER = 1u, BAD_STATS = 2u, BAD_HEAD = 4u };

/* The largest pid Linux can hand out (PID_MAX_LIMIT on 64-bit): a stat
 * slot owner past it is garbage. */
#define PID_LIMIT (4u << 20)

/* ---- small helpers ------------------------------------------------------------------ */

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~7ull;
}

/* Key and value are stored back to back and padded together. */
static uint64_t rec_len(uint64_t klen, uint64_t vlen)
{
    return REC_HDR + pad8(klen + vlen);
}

/* The record header, decoded into process memory. */
struct rec {
    uint64_t w0, w1;    /* as stored: expire | stamp bits; lengths and flags */
    uint64_t expire_ms; /* 0 = never */
    uint64_t check;
    uint32_t val_len;
    uint16_t key_len, flags;
};

static uint64_t enc_w0(uint64_t pos, uint64_t expire_ms)
{
    if (expire_ms > TC_RING_EXPIRE_MAX) {
        expire_ms = TC_RING_EXPIRE_MAX; /* year 2527: as good as never */
    }
    return expire_ms | ((pos >> 3) & TC_RING_STAMP_MASK) << TC_RING_EXPIRE_BITS;
}

static uint64_t enc_w1(uint64_t klen, uint64_t flags, uint64_t vlen)
{
    return klen | flags << 11 | vlen << 27;
}

static void dec_rec(struct rec *h, uint64_t w0, uint64_t w1, uint64_t check)
{
    h->w0 = w0;
    h->w1 = w1;
    h->expire_ms = w0 & TC_RING_EXPIRE_MAX;
    h->check = check;
    h->key_len = (uint16_t)(w1 & 0x7ff);
    h->flags = (uint16_t)(w1 >> 11);
    h->val_len = (uint32_t)(w1 >> 27);
}

/* The owner is the ctx's only writer: a relaxed load + store avoids a locked
 * RMW. Stat readers use relaxed loads (counters order nothing else). */
static void bump(struct tc_ring_ctx *c, unsigned i)
{
    _Atomic uint64_t *p = &c->st->c[i];
    if (c->shared) {
        atomic_fetch_add_explicit(p, 1, memory_order_relaxed);
    } else {
        atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
}

static uint64_t key_hash(struct tc_ring *r, const void *key, size_t klen)
{
    return XXH3_64bits_withSeed(key, klen, r->seed);
}

static uint64_t tag_of(uint64_t h)
{
    uint64_t t = h >> TC_RING_TAG_SHIFT;
    return t != 0 ? t : 1; /* 0 would make a slot look empty */
}

/* The checksum's seed covers the key (by its hash: readers compare the key
 * bytes themselves), the record's full position and both header words. */
static uint64_t check_seed(uint64_t khash, uint64_t pos, uint64_t w0, uint64_t w1)
{
    return khash ^ (pos * 0x9E3779B97F4A7C15ull) ^ (w0 * 0xC2B2AE3D27D4EB4Full) ^
           (w1 * 0x165667B19E3779F9ull);
}

static int expired(uint64_t expire_ms, uint64_t now_ms)
{
    return expire_ms != 0 && expire_ms <= now_ms;
}

/* ---- log word I/O ------------------------------------------------------------------- */

/* Loads the head of log L. Relaxed: the value is only a hint until the
 * fence(acquire) + reload in still_intact(). */
static uint64_t head_of(struct tc_ring *r, unsigned L)
{
    return atomic_load_explicit(r->head[L], memory_order_relaxed);
}

/* Full position of a slot's 47-bit position relative to the current head. */
static uint64_t slot_pos(uint64_t s, uint64_t head)
{
    return head - ((head - (s & TC_RING_POS_MASK & ~7ull)) & TC_RING_POS_MASK);
}

static unsigned slot_log(uint64_t s)
{
    return (s & TC_RING_LOG_BIT) ? 1u : 0u;
}

/* A record at pos is intact while no reservation has reached past pos + cap. */
static int intact(struct tc_ring *r, unsigned L, uint64_t pos, uint64_t head)
{
    return head - pos <= r->cap[L];
}

/* Called after copying: proves no writer reserved over the copied bytes. */
static int still_intact(struct tc_ring *r, unsigned L, uint64_t pos)
{
    /* Pairs with the writer's fence(release) after its fetch-add: if any
     * byte we loaded came from a newer writer, its fetch-add is visible now. */
    atomic_thread_fence(memory_order_acquire);
    return intact(r, L, pos, head_of(r, L));
}

/* Word index in log L of position pos. */
static uint64_t phys_word(struct tc_ring *r, unsigned L, uint64_t pos)
{
    /* Relaxed: a stale base only costs the slow path; it orders nothing. */
    uint64_t base = atomic_load_explicit(&r->lap_base[L], memory_order_relaxed);
    uint64_t d = pos - base, cap = r->cap[L];
    if (d < cap) {
        return d / 8;
    }
    if (d < 2 * cap) {
        return (d - cap) / 8;
    }
    uint64_t m = pos % cap;
    atomic_store_explicit(&r->lap_base[L], pos - m, memory_order_relaxed);
    return m / 8;
}

struct wcur {
    _Atomic uint64_t *log;
    uint64_t words, w; /* ring size in words; current word index */
};

static struct wcur cur_at(struct tc_ring *r, unsigned L, uint64_t pos)
{
    struct wcur c = {r->log[L], r->words[L], phys_word(r, L, pos)};
    return c;
}

static uint64_t cur_load(struct wcur *c)
{
    uint64_t v = atomic_load_explicit(&c->log[c->w], memory_order_relaxed);
    if (++c->w == c->words) {
        c->w = 0;
    }
    return v;
}

static void cur_store(struct wcur *c, uint64_t v)
{
    atomic_store_explicit(&c->log[c->w], v, memory_order_relaxed);
    if (++c->w == c->words) {
        c->w = 0;
    }
}

/*
 * Copies n bytes that start at byte `at` of a log (no wrap inside). Under
 * ThreadSanitizer this is the word-atomic copy the header comment describes,
 * so that the race with a writer stays defined and visible to the tool. In
 * every other build it is memcpy: a relaxed load and a store per word run at
 * one word a cycle, a quarter of memcpy's speed, and on a 64 KiB hit that
 * copy was 13% of the server's time. The bytes are the same; what a torn
 * copy holds is never used either way, since the caller checks the head and
 * the checksum over exactly these bytes before it trusts them (the seqlock
 * read the Linux kernel also does with plain loads). The segment is shared
 * with other processes, which the C abstract machine does not model anyway;
 * memcpy is an opaque call over it.
 */
#if defined(__SANITIZE_THREAD__)
#define RING_WORD_COPY 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_WORD_COPY 1
#endif
#endif
static void copy_out(_Atomic uint64_t *log, uint64_t at, uint8_t *d, size_t n)
{
#ifdef RING_WORD_COPY
    uint64_t w = at / 8;
    size_t off = (size_t)(at % 8);
    while (n > 0) {
        uint64_t v = atomic_load_explicit(&log[w++], memory_order_relaxed);
        size_t take = 8 - off < n ? 8 - off : n;
        memcpy(d, (const uint8_t *)&v + off, take);
        d += take;
        n -= take;
        off = 0;
    }
#else
    memcpy(d, (const uint8_t *)(const void *)log + at, n);
#endif
}

/* Copies n bytes starting off bytes past word w of log L, in at most two
 * runs (the second from the start of the log when the bytes wrap). */
static void log_read_at(struct tc_ring *r, unsigned L, uint64_t w, size_t off, void *dst, size_t n)
{
    if (n == 0) {
        return; /* dst may be NULL for an empty value */
    }
    uint64_t size = r->words[L] * 8;
    uint64_t at = (w * 8 + off) % size;
    size_t first = size - at < n ? (size_t)(size - at) : n;
    copy_out(r->log[L], at, dst, first);
    if (first < n) {
        copy_out(r->log[L], 0, (uint8_t *)dst + first, n - first);
    }
}

static void log_read(struct tc_ring *r, unsigned L, uint64_t w, void *dst, size_t n)
{
    log_read_at(r, L, w, 0, dst, n);
}

static uint64_t word_add(struct tc_ring *r, unsigned L, uint64_t w, uint64_t n)
{
    w += n;
    return w >= r->words[L] ? w - r->words[L] : w;
}

/* Streams bytes into words; pads the last word with zeros on flush. */
struct wstream {
    struct wcur c;
    uint64_t acc;
    unsigned fill;
};

static void ws_put(struct wstream *s, const void *src, size_t n)
{
    const uint8_t *p = src;
    while (n > 0) {
        if (s->fill == 0 && n >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            cur_store(&s->c, v);
            p += 8;
            n -= 8;
            continue;
        }
        size_t take = 8 - s->fill < n ? 8 - s->fill : n;
        memcpy((uint8_t *)&s->acc + s->fill, p, take);
        s->fill += (unsigned)take;
        p += take;
        n -= take;
        if (s->fill == 8) {
            cur_store(&s->c, s->acc);
            s->fill = 0;
            s->acc = 0;
        }
    }
}

static void ws_flush(struct wstream *s)
{
    if (s->fill > 0) {
        cur_store(&s->c, s->acc);
        s->fill = 0;
        s->acc = 0;
    }
}

/* ---- records -------------------------------------------------------------------------- */

/* The caller's key, zero-padded to whole words, for word-wise comparison. */
struct wkey {
    const void *key;
    size_t klen;
    uint64_t hash, tag;
    uint64_t w[TC_RING_KEY_MAX / 8 + 1];
};

static void wkey_init_hashed(struct wkey *k, const void *key, size_t klen, uint64_t hash)
{
    k->key = key;
    k->klen = klen;
    k->hash = hash;
    k->tag = tag_of(k->hash);
    size_t nw = (size_t)pad8(klen) / 8;
    k->w[nw - 1] = 0;
    memcpy(k->w, key, klen);
}

static void wkey_init(struct tc_ring *r, struct wkey *k, const void *key, size_t klen)
{
    wkey_init_hashed(k, key, klen, key_hash(r, key, klen));
}

enum probe { P_DEAD, P_BAD, P_OTHER, P_MATCH };

struct found {
    uint64_t slot, pos, head;
    unsigned L;
    struct rec rec;
    uint64_t wkey; /* word index of the key in log L */
};

/* Resolves slot s and reads its record header. P_DEAD: overwritten; P_BAD:
 * header fails validation (garbage or a lapped writer); otherwise the header
 * is plausible and f->wkey locates the key. */
static enum probe read_header(struct tc_ring *r, uint64_t s, struct found *f)
{
    f->slot = s;
    f->L = slot_log(s);
    f->head = head_of(r, f->L);
    f->pos = slot_pos(s, f->head);
    if (!intact(r, f->L, f->pos, f->head)) {
        return P_DEAD;
    }
    uint64_t w0 = phys_word(r, f->L, f->pos);
    /* The record's first lines miss together instead of one after another:
     * a get is two dependent cache misses (bucket, record) at best. */
    if (w0 + 32 <= r->words[f->L]) {
        __builtin_prefetch(&r->log[f->L][w0 + 8]);
        __builtin_prefetch(&r->log[f->L][w0 + 16]);
        __builtin_prefetch(&r->log[f->L][w0 + 24]);
    }
    uint64_t w[3];
    log_read(r, f->L, w0, w, sizeof(w));
    dec_rec(&f->rec, w[0], w[1], w[2]);
    f->wkey = word_add(r, f->L, w0, 3);
    uint64_t len = rec_len(f->rec.key_len, f->rec.val_len);
    if (((w[0] >> TC_RING_EXPIRE_BITS) & TC_RING_STAMP_MASK) !=
            ((f->pos >> 3) & TC_RING_STAMP_MASK) ||
        (w[1] >> 59) != 0 || f->rec.key_len == 0 || f->rec.key_len > TC_RING_KEY_MAX ||
        len > r->max_rec || f->head - f->pos < len) {
        return P_BAD;
    }
    return P_OTHER;
}

/* Reads slot s's header and compares its key with k. */
static enum probe probe(struct tc_ring *r, uint64_t s, const struct wkey *k, struct found *f)
{
    enum probe p = read_header(r, s, f);
    if (p != P_OTHER) {
        return p;
    }
    if (f->rec.key_len != k->klen) {
        return P_OTHER;
    }
    /* Whole words, then the tail bytes (the value follows in the same word). */
    size_t full = k->klen / 8, tail = k->klen % 8;
    _Atomic uint64_t *log = r->log[f->L];
    struct wcur c = {log, r->words[f->L], f->wkey};
    for (size_t i = 0; i < full; i++) {
        if (cur_load(&c) != k->w[i]) {
            return P_OTHER;
        }
    }
    if (tail != 0) {
        uint64_t v = cur_load(&c);
        if (memcmp(&v, &k->w[full], tail) != 0) {
            return P_OTHER;
        }
    }
    return P_MATCH;
}

/* Clears slot s if it still holds what we saw. Release: orders nothing we
 * wrote, but keeps one convention for every slot store (readers acquire). */
static int clear_slot(_Atomic uint64_t *slot, uint64_t seen)
{
    return atomic_compare_exchange_strong_explicit(slot, &seen, 0, memory_order_release,
                                                   memory_order_relaxed);
}

/* Writes a whole record at pos of log L with relaxed word stores. */
static void write_record(struct tc_ring *r, unsigned L, uint64_t pos, const struct wkey *k,
                         const struct tc_ring_iov *iov, size_t iovcnt, size_t vlen,
                         uint64_t expire_ms, unsigned flags)
{
    uint64_t w0 = enc_w0(pos, expire_ms), w1 = enc_w1(k->klen, flags, vlen);
    uint64_t seed = check_seed(k->hash, pos, w0, w1), check;
    if (iovcnt == 1) {
        check = XXH3_64bits_withSeed(iov[0].base, iov[0].len, seed);
    } else {
        XXH3_state_t st;
        /* A stack state must start with seed 0 (xxhash.h): reset_withSeed
         * skips building the secret when the seed it finds is the one asked,
         * and stack garbage from the last write at this position may be. */
        XXH3_INITSTATE(&st);
        XXH3_64bits_reset_withSeed(&st, seed);
        for (size_t i = 0; i < iovcnt; i++) {
            if (iov[i].len > 0) {
                XXH3_64bits_update(&st, iov[i].base, iov[i].len);
            }
        }
        check = XXH3_64bits_digest(&st);
    }
    struct wstream ws = {cur_at(r, L, pos), 0, 0};
    cur_store(&ws.c, w0);
    cur_store(&ws.c, w1);
    cur_store(&ws.c, check);
    /* Header before value: pairs with the fence(acquire) a reader runs
     * (still_intact) before header_unchanged(), so one that saw new value
     * bytes of an in-place rewrite also sees its new header. */
    atomic_thread_fence(memory_order_release);
    ws_put(&ws, k->key, k->klen);
    for (size_t i = 0; i < iovcnt; i++) {
        if (iov[i].len > 0) {
            ws_put(&ws, iov[i].base, iov[i].len);
        }
    }
    ws_flush(&ws);
}

/* Reserves and writes a record; returns its position. */
static uint64_t append(struct tc_ring *r, unsigned L, const struct wkey *k,
                       const struct tc_ring_iov *iov, size_t iovcnt, size_t vlen,
                       uint64_t expire_ms, unsigned flags)
{
    uint64_t len = rec_len(k->klen, vlen);
    /* Relaxed: the release fence below orders it before our stores. */
    uint64_t pos = atomic_fetch_add_explicit(r->head[L], len, memory_order_relaxed);
    /* Pairs with the fence(acquire) in still_intact(): a reader that sees
     * any of the bytes below also sees this reservation. */
    atomic_thread_fence(memory_order_release);
    write_record(r, L, pos, k, iov, iovcnt, vlen, expire_ms, flags);
    return pos;
}

/* Takes the BUSY bit of a slot that still holds exactly what we saw.
 * Acq_rel: our record stores after it cannot move before it, and we see the
 * record as the last releaser of the slot left it. */
static int take_busy(_Atomic uint64_t *slot, uint64_t seen)
{
    return (seen & TC_RING_SLOT_BUSY) == 0 &&
           atomic_compare_exchange_strong_explicit(slot, &seen, seen | TC_RING_SLOT_BUSY,
                                                   memory_order_acq_rel, memory_order_relaxed);
}

/* True if the record header at f still reads as probed (nobody rewrote it). */
static int header_unchanged(struct tc_ring *r, const struct found *f)
{
    uint64_t w[3];
    log_read(r, f->L, phys_word(r, f->L, f->pos), w, sizeof(w));
    return w[0] == f->rec.w0 && w[1] == f->rec.w1 && w[2] == f->rec.check;
}

static uint64_t make_slot(uint64_t tag, unsigned L, uint64_t pos)
{
    return tag << TC_RING_TAG_SHIFT | (L ? TC_RING_LOG_BIT : 0) | (pos & TC_RING_POS_MASK);
}

#define DEAD_AGE (UINT64_MAX - 1)

/* Age of a slot relative to its log's capacity, scaled to 2^16, for picking
 * the victim in a full bucket across two logs of different sizes. */
static uint64_t slot_age(struct tc_ring *r, uint64_t s)
{
    unsigned L = slot_log(s);
    uint64_t h = head_of(r, L);
    uint64_t age = h - slot_pos(s, h);
    if (age > r->cap[L]) {
        return DEAD_AGE;
    }
    /* A full bucket drops a probationary item before any main-log one: the
     * main log holds the keys that proved they come back. */
    return (age << 16) / r->cap[L] + (L == TC_RING_LOG_SMALL ? 1ull << 20 : 0);
}

/* Publishes (L, pos) for key k in its bucket. Of two concurrent inserts of
 * one key, the record with the larger (pos, L) survives in both writers' view. */
static void publish(struct tc_ring_ctx *c, const struct wkey *k, unsigned L, uint64_t pos)
{
    struct tc_ring *r = c->ring;
    struct tc_ring_bucket *b = &r->index[k->hash & r->bucket_mask];
    uint64_t mine = make_slot(k->tag, L, pos);

    for (int attempt = 0; attempt < PUBLISH_TRIES; attempt++) {
        if (!intact(r, L, pos, head_of(r, L))) {
            /* Lapped before we published: the bytes belong to someone else. */
            bump(c, C_LOST_SETS);
            return;
        }
        int victim = 0, match = -1;
        uint64_t vseen = 0, vscore = 0, mseen = 0;
        for (unsigned i = 0; i < TC_RING_BUCKET_W; i++) {
            /* Acquire: pairs with the CAS (release) that published it, so
             * the record's bytes are visible to probe(). */
            uint64_t s = atomic_load_explicit(&b->slot[i], memory_order_acquire);
            if (s != 0 && s >> TC_RING_TAG_SHIFT == k->tag) {
                struct found f;
                if (probe(r, s, k, &f) == P_MATCH) {
                    match = (int)i;
                    mseen = s;
                    break;
                }
            }
            /* Victim: an empty slot, else an overwritten one, else the oldest. */
            uint64_t score = s == 0 ? UINT64_MAX : slot_age(r, s);
            if (i == 0 || score > vscore) {
                victim = (int)i;
                vseen = s;
                vscore = score;
            }
        }
        _Atomic uint64_t *slot;
        uint64_t seen;
        if (match >= 0) {
            slot = &b->slot[match];
            seen = mseen;
        } else {
            slot = &b->slot[victim];
            seen = vseen;
        }
        /* Release: pairs with readers' acquire load of the slot, making the
         * record's bytes (relaxed stores above) visible before its slot. */
        if (!atomic_compare_exchange_strong_explicit(slot, &seen, mine, memory_order_release,
                                                     memory_order_relaxed)) {
            continue;
        }
        if (match < 0 && seen != 0 && vscore != DEAD_AGE) {
            bump(c, C_EVICTIONS); /* a live item lost its slot: the bucket was full */
        }
        if (match >= 0) {
            return;
        }
        /* We took a fresh slot: another writer may have done the same for
         * this key. Keep the larger (pos, L) in both writers' view. */
        uint64_t my_rank = pos << 1 | L;
        for (unsigned i = 0; i < TC_RING_BUCKET_W; i++) {
            uint64_t s = atomic_load_explicit(&b->slot[i], memory_order_acquire);
            if (&b->slot[i] == slot || s >> TC_RING_TAG_SHIFT != k->tag) {
                continue;
            }
            struct found f;
            if (probe(r, s, k, &f) != P_MATCH) {
                continue;
            }
            if ((f.pos << 1 | f.L) > my_rank) {
                clear_slot(slot, mine);
                return;
            }
            clear_slot(&b->slot[i], s);
        }
        return;
    }
    bump(c, C_LOST_SETS); /* lost every race: heavy contention on one bucket */
}

/* ---- operations --------------------------------------------------------------------------- */

static enum tc_status check_key(const void *key, size_t klen)
{
    if (key == NULL || klen == 0) {
        return TC_EINVAL;
    }
    if (klen > TC_RING_KEY_MAX) {
        return TC_ETOOBIG;
    }
    return TC_OK;
}

/* Re-appends a record read near the tail (or in probation) to the main log.
 * Under the slot's BUSY bit, so that an in-place rewrite cannot slip between
 * our copy and our CAS (the slot value would be the same again: ABA). */
static void promote(struct tc_ring_ctx *c, const struct wkey *k, _Atomic uint64_t *slot,
                    const struct found *f, const void *head, size_t hn, const void *rest)
{
    struct tc_ring *r = c->ring;
    uint64_t seen = f->slot;
    if (!take_busy(slot, seen)) {
        return;
    }
    if (!header_unchanged(r, f) || !still_intact(r, f->L, f->pos)) {
        /* Rewritten since we copied it: our copy is stale. Release: we wrote
         * nothing, but every slot store releases. */
        uint64_t b = seen | TC_RING_SLOT_BUSY;
        atomic_compare_exchange_strong_explicit(slot, &b, seen, memory_order_release,
                                                memory_order_relaxed);
        return;
    }
    struct tc_ring_iov iov[2] = {{head, hn}, {rest, f->rec.val_len - hn}};
    uint64_t pos = append(r, TC_RING_LOG_MAIN, k, hn ? iov : iov + 1, hn ? 2 : 1, f->rec.val_len,
                          f->rec.expire_ms, f->rec.flags);
    uint64_t b = seen | TC_RING_SLOT_BUSY;
    uint64_t next = intact(r, TC_RING_LOG_MAIN, pos, head_of(r, TC_RING_LOG_MAIN))
                        ? make_slot(k->tag, TC_RING_LOG_MAIN, pos)
                        : seen;
    /* Only over our own BUSY slot: a set or delete that replaced it is newer
     * than our copy and wins. Release: pairs with readers' acquire load. */
    if (atomic_compare_exchange_strong_explicit(slot, &b, next, memory_order_release,
                                                memory_order_relaxed) &&
        next != seen) {
        bump(c, C_PROMOTIONS);
    }
}

/* Rewrites a live main-log record of the same length where it lies, so that
 * updating a hot key does not fill the log with its dead versions. Readers
 * copying it meanwhile see the checksum fail (a miss). Returns 1 if done. */
static int rewrite_in_place(struct tc_ring_ctx *c, const struct wkey *k, _Atomic uint64_t *slot,
                            const struct found *f, const struct tc_ring_iov *iov, size_t iovcnt,
                            size_t vlen, uint64_t expire_ms, unsigned flags)
{
    struct tc_ring *r = c->ring;
    uint64_t seen = f->slot;
    if (!take_busy(slot, seen)) {
        return 0;
    }
    uint64_t b = seen | TC_RING_SLOT_BUSY;
    if (!still_intact(r, f->L, f->pos) || head_of(r, f->L) - f->pos > r->inplace_age) {
        /* Too close to the tail now: an append is safer. Release: as below. */
        atomic_compare_exchange_strong_explicit(slot, &b, seen, memory_order_release,
                                                memory_order_relaxed);
        return 0;
    }
    write_record(r, f->L, f->pos, k, iov, iovcnt, vlen, expire_ms, flags);
    /* Release: pairs with readers' acquire load of the slot; a reader that
     * sees the slot un-BUSY sees the whole new record. If the CAS fails, a
     * set or delete replaced the slot meanwhile and is the newer write. */
    atomic_compare_exchange_strong_explicit(slot, &b, seen, memory_order_release,
                                            memory_order_relaxed);
    return 1;
}

/*
 * Copies a record's n value bytes (at byte off past word w of log L), the
 * first hn of them to head and the rest to buf, and returns the record
 * check over exactly the bytes copied. A value up to SPLIT_JOIN_MAX is
 * hashed in one call (XXH3's streaming set-up, its seeded secret and
 * state, costs more than a short value's whole hash); a longer one is
 * streamed over its two parts (XXH3's streamed result equals its one-shot
 * one over the same bytes). Copying and hashing a chunk at a time, to hash
 * each while in L1, measured slower: 12% of a 64 KiB hit against 9%.
 */
#define SPLIT_JOIN_MAX 1024u
static uint64_t copy_sum(struct tc_ring *r, unsigned L, uint64_t w, size_t off, uint8_t *head,
                         size_t hn, uint8_t *buf, size_t n, uint64_t seed)
{
    if (hn + n <= SPLIT_JOIN_MAX) {
        uint8_t block[SPLIT_JOIN_MAX];
        log_read_at(r, L, w, off, head, hn);
        log_read_at(r, L, w, off + hn, buf, n);
        if (hn == 0) {
            return XXH3_64bits_withSeed(buf, n, seed);
        }
        memcpy(block, head, hn);
        if (n > 0) {
            memcpy(block + hn, buf, n);
        }
        return XXH3_64bits_withSeed(block, hn + n, seed);
    }
    XXH3_state_t st;
    XXH3_INITSTATE(&st); /* as in write_record() */
    XXH3_64bits_reset_withSeed(&st, seed);
    log_read_at(r, L, w, off, head, hn);
    log_read_at(r, L, w, off + hn, buf, n);
    if (hn > 0) {
        XXH3_64bits_update(&st, head, hn);
    }
    XXH3_64bits_update(&st, buf, n);
    return XXH3_64bits_digest(&st);
}

/* tc_ring_get_split() of a checked key whose hash is known. */
static enum tc_status get_hashed(struct tc_ring_ctx *c, const void *key, size_t klen, uint64_t hash,
                                 uint64_t now_ms, void *head, size_t head_len, void *buf,
                                 size_t cap, struct tc_ring_item *item, struct tc_ring_ident *id,
                                 int *same)
{
    struct tc_ring *r = c->ring;
    if ((buf == NULL && cap > 0) || (head == NULL && head_len > 0)) {
        return TC_EINVAL;
    }
    bump(c, C_GETS);
    struct wkey k;
    wkey_init_hashed(&k, key, klen, hash);
    struct tc_ring_bucket *b = &r->index[k.hash & r->bucket_mask];
    for (unsigned i = 0; i < TC_RING_BUCKET_W; i++) {
        /* Acquire: pairs with the publishing CAS (release) in publish(). */
        uint64_t s = atomic_load_explicit(&b->slot[i], memory_order_acquire);
        if (s >> TC_RING_TAG_SHIFT != k.tag) {
            continue;
        }
        struct found f;
        enum probe p = probe(r, s, &k, &f);
        if (p == P_BAD) {
            if (still_intact(r, f.L, f.pos)) {
                bump(c, C_CORRUPT); /* a stable bad header: garbage, drop it */
                clear_slot(&b->slot[i], s);
            }
            continue;
        }
        if (p != P_MATCH) {
            continue;
        }
        if (expired(f.rec.expire_ms, now_ms)) {
            if (still_intact(r, f.L, f.pos) && clear_slot(&b->slot[i], s)) {
                bump(c, C_EXPIRED);
            }
            break;
        }
        size_t vlen = f.rec.val_len;
        if (item != NULL) {
            item->value_len = vlen;
            item->expire_ms = f.rec.expire_ms;
            item->flags = f.rec.flags;
        }
        if (id != NULL && id->log == f.L && id->pos == f.pos && id->w0 == f.rec.w0 &&
            id->w1 == f.rec.w1 && id->check == f.rec.check && f.L != TC_RING_LOG_SMALL &&
            f.head - f.pos <= r->promote_age && still_intact(r, f.L, f.pos)) {
            /* The record the caller holds a checked copy of, not lapped:
             * its bytes are the copy's (its check covers them), whatever
             * they read as now. One due for promotion takes the copying
             * path, which moves it. */
            bump(c, C_HITS);
            *same = 1;
            return TC_OK;
        }
        size_t hn = vlen < head_len ? vlen : head_len;
        if (vlen - hn > cap) {
            if (still_intact(r, f.L, f.pos)) {
                return TC_ETOOBIG;
            }
            break;
        }
        uint64_t sum = copy_sum(r, f.L, f.wkey, f.rec.key_len, head, hn, buf, vlen - hn,
                                check_seed(k.hash, f.pos, f.rec.w0, f.rec.w1));
        if (!still_intact(r, f.L, f.pos)) {
            bump(c, C_TORN);
            break;
        }
        if (sum != f.rec.check) {
            /* Never served. A record being rewritten in place changes its
             * header first (then the value), so an unchanged header over
             * disagreeing bytes means a lapped writer or a scribbler. */
            if ((s & TC_RING_SLOT_BUSY) == 0 && header_unchanged(r, &f)) {
                bump(c, C_CORRUPT);
                clear_slot(&b->slot[i], s);
            } else {
                bump(c, C_TORN);
            }
            continue;
        }
        bump(c, C_HITS);
        if (id != NULL) {
            *id = (struct tc_ring_ident){f.pos, f.rec.w0, f.rec.w1, f.rec.check, f.L};
        }
        if (f.L == TC_RING_LOG_SMALL || f.head - f.pos > r->promote_age) {
            promote(c, &k, &b->slot[i], &f, head, hn, buf);
        }
        return TC_OK;
    }
    bump(c, C_MISSES);
    if (item != NULL) {
        item->value_len = 0;
    }
    return TC_ENOTFOUND;
}

enum tc_status tc_ring_get(struct tc_ring_ctx *c, const void *key, size_t klen, uint64_t now_ms,
                           void *buf, size_t cap, struct tc_ring_item *item)
{
    return tc_ring_get_split(c, key, klen, now_ms, NULL, 0, buf, cap, item);
}

enum tc_status tc_ring_get_split(struct tc_ring_ctx *c, const void *key, size_t klen,
                                 uint64_t now_ms, void *head, size_t head_len, void *buf,
                                 size_t cap, struct tc_ring_item *item)
{
    int same; /* stays 0: no identity given */
    return tc_ring_get_known(c, key, klen, now_ms, head, head_len, buf, cap, item, NULL, &same);
}

enum tc_status tc_ring_get_known(struct tc_ring_ctx *c, const void *key, size_t klen,
                                 uint64_t now_ms, void *head, size_t head_len, void *buf,
                                 size_t cap, struct tc_ring_item *item, struct tc_ring_ident *id,
                                 int *same)
{
    *same = 0;
    enum tc_status st = check_key(key, klen);
    if (st != TC_OK) {
        return st;
    }
    return get_hashed(c, key, klen, key_hash(c->ring, key, klen), now_ms, head, head_len, buf, cap,
                      item, id, same);
}

/* Overlaps the cache misses of a batch of gets in a software pipeline:
 * while get i runs, the record of get i+D is being fetched (its bucket,
 * asked for D steps earlier, has arrived) and the bucket of get i+2D is
 * asked for. The prefetches are hints only: nothing read for them is
 * trusted, and get_hashed() checks everything as tc_ring_get() does. */
#define BATCH_D    8
#define BATCH_WAVE 64

static void prefetch_record(struct tc_ring *r, const struct tc_ring_bucket *b, uint64_t tag)
{
    for (unsigned k = 0; k < TC_RING_BUCKET_W; k++) {
        uint64_t sl = atomic_load_explicit(&b->slot[k], memory_order_relaxed);
        if (sl >> TC_RING_TAG_SHIFT != tag) {
            continue;
        }
        unsigned L = slot_log(sl);
        uint64_t w = phys_word(r, L, slot_pos(sl, head_of(r, L)));
        const char *rec = (const char *)(r->log[L] + w);
        /* A 100-byte value's record spans up to four lines; past the end
         * of the log it wraps, and those lines are left to the get. */
        for (uint64_t off = 0; off < 256 && w + off / 8 < r->words[L]; off += 64) {
            __builtin_prefetch(rec + off, 0, 3);
        }
        return;
    }
}

void tc_ring_get_batch(struct tc_ring_ctx *c, size_t n, const struct tc_ring_getreq *reqs)
{
    struct tc_ring *r = c->ring;
    for (size_t at = 0; at < n; at += BATCH_WAVE) {
        size_t m = n - at < BATCH_WAVE ? n - at : BATCH_WAVE;
        const struct tc_ring_getreq *q = reqs + at;
        uint64_t hash[BATCH_WAVE];
        int ok[BATCH_WAVE];
        for (size_t i = 0; i < m + 2 * BATCH_D; i++) {
            if (i < m) {
                ok[i] = check_key(q[i].key, q[i].klen) == TC_OK;
                if (ok[i]) {
                    hash[i] = key_hash(r, q[i].key, q[i].klen);
                    __builtin_prefetch(&r->index[hash[i] & r->bucket_mask], 0, 3);
                }
            }
            if (i >= BATCH_D && i - BATCH_D < m && ok[i - BATCH_D]) {
                size_t j = i - BATCH_D;
                prefetch_record(r, &r->index[hash[j] & r->bucket_mask], tag_of(hash[j]));
            }
            if (i >= 2 * BATCH_D && i - 2 * BATCH_D < m) {
                size_t j = i - 2 * BATCH_D;
                q[j].status[0] =
                    ok[j] ? get_hashed(c, q[j].key, q[j].klen, hash[j], q[j].now_ms, q[j].head,
                                       q[j].head_len, q[j].buf, q[j].cap, q[j].item, NULL, NULL)
                          : check_key(q[j].key, q[j].klen);
            }
        }
    }
}

enum tc_status tc_ring_setv(struct tc_ring_ctx *c, const void *key, size_t klen,
                            const struct tc_ring_iov *iov, size_t iovcnt, uint64_t expire_ms,
                            unsigned flags, uint64_t now_ms)
{
    struct tc_ring *r = c->ring;
    enum tc_status st = check_key(key, klen);
    size_t vlen = 0;
    for (size_t i = 0; st == TC_OK && i < iovcnt; i++) {
        if (iov[i].len > 0 && iov[i].base == NULL) {
            st = TC_EINVAL;
        }
        vlen += iov[i].len;
        if (vlen > r->max_item || iov[i].len > r->max_item) {
            st = TC_ETOOBIG;
        }
    }
    if (st == TC_OK && flags > TC_RING_FLAGS_MAX) {
        st = TC_EINVAL;
    }
    if (st != TC_OK) {
        if (st == TC_ETOOBIG) {
            bump(c, C_TOO_BIG);
        }
        return st;
    }
    /* Heartbeat: the ctx's own line, so it costs no sharing. */
    atomic_store_explicit(&c->st->heartbeat_ms, now_ms, memory_order_relaxed);
    struct wkey k;
    wkey_init(r, &k, key, klen);
    /* Which log: a key already live, or one whose slot still remembers it
     * was here until recently (a ghost: tag match, record overwritten), has
     * proved it comes back; it goes to the main log. New keys go to probation,
     * except while the main log has never lapped (nothing to protect yet). */
    unsigned L = TC_RING_LOG_SMALL;
    if (head_of(r, TC_RING_LOG_MAIN) + rec_len(klen, vlen) <= r->cap[TC_RING_LOG_MAIN]) {
        L = TC_RING_LOG_MAIN;
    }
    struct tc_ring_bucket *b = &r->index[k.hash & r->bucket_mask];
    for (unsigned i = 0; i < TC_RING_BUCKET_W; i++) {
        uint64_t s = atomic_load_explicit(&b->slot[i], memory_order_acquire); /* as in get */
        if (s >> TC_RING_TAG_SHIFT != k.tag) {
            continue;
        }
        struct found f;
        enum probe p = probe(r, s, &k, &f);
        if (p == P_MATCH) {
            if (f.L == TC_RING_LOG_MAIN && rec_len(klen, vlen) == rec_len(klen, f.rec.val_len) &&
                f.head - f.pos <= r->inplace_age && !expired(f.rec.expire_ms, now_ms) &&
                rewrite_in_place(c, &k, &b->slot[i], &f, iov, iovcnt, vlen, expire_ms, flags)) {
                bump(c, C_SETS);
                return TC_OK;
            }
            L = TC_RING_LOG_MAIN;
            break;
        }
        if (p == P_DEAD && f.head - f.pos <= r->ghost_age[f.L]) {
            L = TC_RING_LOG_MAIN;
            break;
        }
    }
    uint64_t pos = append(r, L, &k, iov, iovcnt, vlen, expire_ms, flags);
    publish(c, &k, L, pos);
    bump(c, C_SETS);
    return TC_OK;
}

enum tc_status tc_ring_set(struct tc_ring_ctx *c, const void *key, size_t klen, const void *value,
                           size_t vlen, uint64_t expire_ms, unsigned flags, uint64_t now_ms)
{
    struct tc_ring_iov iov = {value, vlen};
    return tc_ring_setv(c, key, klen, &iov, 1, expire_ms, flags, now_ms);
}

enum tc_status tc_ring_del(struct tc_ring_ctx *c, const void *key, size_t klen, uint64_t now_ms)
{
    struct tc_ring *r = c->ring;
    enum tc_status st = check_key(key, klen);
    if (st != TC_OK) {
        return st;
    }
    struct wkey k;
    wkey_init(r, &k, key, klen);
    struct tc_ring_bucket *b = &r->index[k.hash & r->bucket_mask];
    st = TC_ENOTFOUND;
    for (unsigned i = 0; i < TC_RING_BUCKET_W; i++) {
        uint64_t s = atomic_load_explicit(&b->slot[i], memory_order_acquire); /* as in get */
        if (s >> TC_RING_TAG_SHIFT != k.tag) {
            continue;
        }
        struct found f;
        if (probe(r, s, &k, &f) == P_MATCH && clear_slot(&b->slot[i], s) &&
            !expired(f.rec.expire_ms, now_ms)) {
            st = TC_OK;
        }
    }
    if (st == TC_OK) {
        bump(c, C_DELETES);
    }
    return st;
}

enum tc_status tc_ring_clear(struct tc_ring_ctx *c, const void *prefix, size_t plen,
                             uint64_t now_ms, uint64_t *removed)
{
    struct tc_ring *r = c->ring;
    if ((prefix == NULL && plen > 0) || plen > TC_RING_KEY_MAX) {
        return TC_EINVAL;
    }
    uint64_t n = 0;
    uint8_t kbuf[TC_RING_KEY_MAX + 8];
    for (uint64_t i = 0; i < r->nslots; i++) {
        _Atomic uint64_t *slot = &r->index[i / TC_RING_BUCKET_W].slot[i % TC_RING_BUCKET_W];
        uint64_t s = atomic_load_explicit(slot, memory_order_acquire); /* as in get */
        if (s == 0) {
            continue;
        }
        struct found f;
        if (read_header(r, s, &f) != P_OTHER) {
            continue;
        }
        if (f.rec.key_len < plen) {
            continue;
        }
        log_read(r, f.L, f.wkey, kbuf, f.rec.key_len);
        if (!still_intact(r, f.L, f.pos) || (plen > 0 && memcmp(kbuf, prefix, plen) != 0)) {
            continue;
        }
        if (clear_slot(slot, s) && !expired(f.rec.expire_ms, now_ms)) {
            n++;
        }
    }
    if (removed != NULL) {
        *removed += n;
    }
    return TC_OK;
}

enum tc_status tc_ring_sweep(struct tc_ring_ctx *c, uint64_t now_ms, size_t budget,
                             uint64_t *cleared)
{
    struct tc_ring *r = c->ring;
    uint64_t n = 0;
    enum tc_status st = TC_EAGAIN;
    while (budget-- > 0) {
        uint64_t i = c->sweep_cursor;
        if (i >= r->nslots) {
            i = 0;
        }
        _Atomic uint64_t *slot = &r->index[i / TC_RING_BUCKET_W].slot[i % TC_RING_BUCKET_W];
        uint64_t s = atomic_load_explicit(slot, memory_order_acquire); /* as in get */
        if (s != 0) {
            struct found f;
            enum probe p = read_header(r, s, &f);
            int drop = p == P_DEAD;
            if (p == P_BAD || (p == P_OTHER && expired(f.rec.expire_ms, now_ms))) {
                /* Only a header that stayed put while we read it is evidence. */
                drop = still_intact(r, f.L, f.pos);
            }
            if (drop && clear_slot(slot, s)) {
                n++;
                bump(c, p == P_DEAD ? C_EVICTIONS : p == P_BAD ? C_CORRUPT : C_EXPIRED);
            }
        }
        c->sweep_cursor = i + 1;
        if (i + 1 == r->nslots) {
            c->sweep_cursor = 0;
            st = TC_OK;
            break;
        }
    }
    for (uint64_t j = 0; j < n; j++) {
        bump(c, C_SWEPT);
    }
    if (cleared != NULL) {
        *cleared += n;
    }
    return st;
}

/* ---- ctxs and stats ---------------------------------------------------------------------------
 */

/* Moves a slot's counters into the retired totals. A value past
 * TC_RING_STAT_MAX is garbage someone wrote there: folding it would spoil
 * the totals for good, so it is dropped (and the stats path, which saw it,
 * has already reported it). */
static void fold_slot(struct tc_ring *r, struct tc_ring_stat_slot *s)
{
    for (unsigned i = 0; i < TC_RING_NCOUNTERS; i++) {
        uint64_t v = atomic_exchange_explicit(&s->c[i], 0, memory_order_relaxed);
        if (v != 0 && v <= TC_RING_STAT_MAX) {
            atomic_fetch_add_explicit(&r->hdr->retired.c[i], v, memory_order_relaxed);
        }
    }
}

static int pid_gone(uint64_t pid)
{
    return pid > 0 && pid <= INT32_MAX && kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

enum tc_status tc_ring_ctx_create(struct tc_ring *r, struct tc_ring_ctx **out)
{
    struct tc_ring_ctx *c = NULL;
    for (unsigned i = 0; i < TC_RING_MAX_CTX && c == NULL; i++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&r->ctxs[i].in_use, &expect, 1)) {
            c = &r->ctxs[i];
        }
    }
    if (c == NULL) {
        return TC_EAGAIN;
    }
    c->ring = r;
    c->sweep_cursor = 0;
    c->shared = 0;
    c->st = NULL;
    /* A free slot, else one whose process is gone (its counters folded into
     * the retired totals first), else share the retired slot itself. */
    for (int pass = 0; pass < 2 && c->st == NULL; pass++) {
        for (uint64_t i = 0; i < r->nstat && c->st == NULL; i++) {
            struct tc_ring_stat_slot *s = &r->stats[i];
            uint64_t o = atomic_load_explicit(&s->owner_pid, memory_order_relaxed);
            if ((pass == 0 && o != 0) || (pass == 1 && !pid_gone(o))) {
                continue;
            }
            if (atomic_compare_exchange_strong(&s->owner_pid, &o, r->pid)) {
                if (pass == 1) {
                    fold_slot(r, s);
                } else {
                    /* A free slot was zeroed by the ctx that freed it: anything
                     * in it now was scribbled, and is no count of ours. */
                    for (unsigned k = 0; k < TC_RING_NCOUNTERS; k++) {
                        atomic_store_explicit(&s->c[k], 0, memory_order_relaxed);
                    }
                }
                c->st = s;
            }
        }
    }
    if (c->st == NULL) {
        c->st = &r->hdr->retired;
        c->shared = 1;
    }
    *out = c;
    return TC_OK;
}

void tc_ring_ctx_destroy(struct tc_ring_ctx *c)
{
    if (c == NULL) {
        return;
    }
    if (!c->shared) {
        fold_slot(c->ring, c->st);
        /* Release: the folded counters are in place before the slot is free. */
        atomic_store_explicit(&c->st->owner_pid, 0, memory_order_release);
    }
    atomic_store(&c->in_use, 0);
}

/* Adds v to *sum, saturating at TC_RING_STAT_MAX. */
static void sat_add(uint64_t *sum, uint64_t v)
{
    *sum = v > TC_RING_STAT_MAX - *sum ? TC_RING_STAT_MAX : *sum + v;
}

/* Sums the counters of the retired slot and of every stat slot into sum[]
 * (each at most TC_RING_STAT_MAX), counts the slots in use, and returns how
 * many values were implausible and left out: a counter past
 * TC_RING_STAT_MAX, an owner past the largest pid. Relaxed loads: counts
 * order nothing. */
static uint64_t scan_slots(struct tc_ring *r, uint64_t sum[TC_RING_NCOUNTERS], uint64_t *ctxs)
{
    uint64_t rejected = 0;
    *ctxs = 0;
    for (unsigned i = 0; i < TC_RING_NCOUNTERS; i++) {
        sum[i] = 0;
    }
    for (uint64_t s = 0; s <= r->nstat; s++) {
        /* The retired slot last: it has no owner. */
        struct tc_ring_stat_slot *slot = s < r->nstat ? &r->stats[s] : &r->hdr->retired;
        if (s < r->nstat) {
            uint64_t o = atomic_load_explicit(&slot->owner_pid, memory_order_relaxed);
            if (o > PID_LIMIT) {
                rejected++;
            } else if (o != 0) {
                (*ctxs)++;
            }
        }
        for (unsigned i = 0; i < TC_RING_NCOUNTERS; i++) {
            uint64_t v = atomic_load_explicit(&slot->c[i], memory_order_relaxed);
            if (v > TC_RING_STAT_MAX) {
                rejected++;
            } else {
                sat_add(&sum[i], v);
            }
        }
    }
    return rejected;
}

/* Fields that no process writes after the creator published the magic:
 * bytes 8 (major) to 128 (head[0]) and the lock and cell geometry. The heads, the
 * retired slot and the epoch line are written all the time. */
static int hdr_fixed_equal(const struct tc_ring_hdr *live, const struct tc_ring_hdr *copy)
{
    const size_t a = offsetof(struct tc_ring_hdr, major), b = offsetof(struct tc_ring_hdr, head);
    const size_t c = offsetof(struct tc_ring_hdr, lock_off),
                 d = offsetof(struct tc_ring_hdr, _pad0);
    return atomic_load_explicit(&((struct tc_ring_hdr *)live)->magic, memory_order_relaxed) ==
               TC_RING_MAGIC &&
           memcmp((const uint8_t *)live + a, (const uint8_t *)copy + a, b - a) == 0 &&
           memcmp((const uint8_t *)live + c, (const uint8_t *)copy + c, d - c) == 0;
}

/* Header and heads: the checks besides the stat slots. Returns BAD_* bits. */
static unsigned check_header_heads(struct tc_ring *r)
{
    unsigned bad = hdr_fixed_equal(r->hdr, &r->hdr0) ? 0 : BAD_HEADER;
    for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
        /* Acquire, then the head: the head is only ever advanced (fetch_add),
         * so a head loaded after seeing another thread's head_seen store
         * (release, after its own head load) is at least that value. A
         * smaller one was written by someone who is not a ring writer. */
        uint64_t seen = atomic_load_explicit(&r->head_seen[L], memory_order_acquire);
        uint64_t h = atomic_load_explicit(r->head[L], memory_order_relaxed);
        if (h < seen) {
            bad |= BAD_HEAD;
            continue;
        }
        while (h > seen &&
               !atomic_compare_exchange_weak_explicit(&r->head_seen[L], &seen, h,
                                                      memory_order_release, memory_order_acquire)) {
        }
    }
    return bad;
}

/* Records a check's outcome; returns the sticky bits so far. */
static unsigned note_check(struct tc_ring *r, unsigned bad)
{
    if (bad != 0) {
        atomic_fetch_add_explicit(&r->check_failures, 1, memory_order_relaxed);
        return atomic_fetch_or_explicit(&r->bad, bad, memory_order_relaxed) | bad;
    }
    return atomic_load_explicit(&r->bad, memory_order_relaxed);
}

enum tc_status tc_ring_check(struct tc_ring *r, char *why, size_t len)
{
    uint64_t sum[TC_RING_NCOUNTERS], ctxs;
    unsigned now = check_header_heads(r);
    if (scan_slots(r, sum, &ctxs) != 0) {
        now |= BAD_STATS;
    }
    unsigned bad = note_check(r, now);
    if (bad == 0) {
        return TC_OK;
    }
    errf(why, len,
         "segment /dev/shm/%s was scribbled on (%s%s%s%s%s): values stay checked, but remove it "
         "with `tiercache shm unlink %s` and restart",
         r->name, bad & BAD_HEADER ? "header changed since attach" : "",
         (bad & BAD_HEADER) && (bad & (BAD_STATS | BAD_HEAD)) ? ", " : "",
         bad & BAD_STATS ? "implausible stat values" : "",
         (bad & BAD_STATS) && (bad & BAD_HEAD) ? ", " : "",
         bad & BAD_HEAD ? "a log head moved back" : "", r->name);
    return TC_ECORRUPT;
}

void tc_ring_stats(struct tc_ring *r, struct tc_ring_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->seg_size = r->seg_size;
    out->log_capacity = r->cap[0] + r->cap[1];
    out->slots = r->nslots;
    out->max_item = r->max_item;
    /* From the copy taken at attach: the live header is anyone's to scribble. */
    out->layout_major = r->hdr0.major;
    out->layout_minor = r->hdr0.minor;
    out->creator_pid = r->hdr0.creator_pid;
    out->seg_uid = r->seg_uid;
    out->seg_gid = r->seg_gid;
    out->seg_mode = r->seg_mode;
    out->lock_slots = (r->locks.mask + 1) * TC_RING_LOCK_WAYS;
    out->locks_held = tc_ring_locks_held_(&r->locks);
    for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
        uint64_t h = head_of(r, L);
        out->bytes_used += h < r->cap[L] ? h : r->cap[L];
    }
    uint64_t sum[TC_RING_NCOUNTERS];
    out->stats_rejected = scan_slots(r, sum, &out->ctxs);
    note_check(r, check_header_heads(r) | (out->stats_rejected ? BAD_STATS : 0));
    out->check_failures = atomic_load_explicit(&r->check_failures, memory_order_relaxed);
#define TC_RING_X(name, i) out->name = sum[i];
    TC_RING_STATS_COUNTERS(TC_RING_X)
#undef TC_RING_X
    for (uint64_t i = 0; i < r->nslots; i++) {
        uint64_t s =
            atomic_load_explicit(&r->index[i / TC_RING_BUCKET_W].slot[i % TC_RING_BUCKET_W],
                                 memory_order_relaxed); /* a count, orders nothing */
        if (s != 0) {
            unsigned L = slot_log(s);
            uint64_t h = head_of(r, L);
            out->items += intact(r, L, slot_pos(s, h), h);
        }
    }
}

uint64_t tc_ring_max_item(const struct tc_ring *r)
{
    return r->max_item;
}

const struct tc_ring_locks_ *tc_ring_locks_(struct tc_ring *r)
{
    return &r->locks;
}

const struct tc_ring_cells_ *tc_ring_cells_(struct tc_ring *r)
{
    return &r->cells;
}

/* ---- open / close -------------------------------------------------------------------------------
 */

static enum tc_status shm_path(const char *name, char *path, size_t n, char *err, size_t errlen)
{
    size_t len = name != NULL ? strlen(name) : 0;
    if (len == 0 || len > NAME_MAX_LEN || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0) {
        errf(err, errlen, "bad shm segment name '%s' (1..%u characters, no '/')",
             name != NULL ? name : "(null)", NAME_MAX_LEN);
        return TC_EINVAL;
    }
    snprintf(path, n, "/%s", name);
    return TC_OK;
}

struct geometry {
    uint64_t stat_off, nstat, lock_off, lock_nbuckets, cell_off, cell_nbuckets, mlog_off,
        mlog_nslabs, index_off, nbuckets, log_off[TC_RING_NLOGS], log_cap[TC_RING_NLOGS], max_rec;
};

static uint64_t default_max_item(uint64_t size)
{
    return size / 16 < (1u << 20) ? size / 16 : (1u << 20);
}

static uint64_t rec_overhead(void)
{
    return REC_HDR + TC_RING_KEY_MAX + 8;
}

static enum tc_status plan(const struct tc_ring_options *o, struct geometry *g, char *err,
                           size_t errlen)
{
    uint64_t size = o->size;
    if (size < MIN_SEG_SIZE || size > MAX_SEG_SIZE) {
        errf(err, errlen, "shm size %llu out of range (%u to %llu bytes)", (unsigned long long)size,
             MIN_SEG_SIZE, (unsigned long long)MAX_SEG_SIZE);
        return TC_EINVAL;
    }
    g->stat_off = TC_RING_HDR_SIZE;
    g->nstat = TC_RING_STAT_SLOTS;
    g->lock_off = g->stat_off + g->nstat * sizeof(struct tc_ring_stat_slot);
    g->lock_nbuckets = LOCK_MIN_BUCKETS;
    while (g->lock_nbuckets < LOCK_MAX_BUCKETS &&
           g->lock_nbuckets * 2 * LOCK_BUCKET_SIZE <= size / LOCK_DIV) {
        g->lock_nbuckets *= 2;
    }
    g->cell_off = g->lock_off + g->lock_nbuckets * LOCK_BUCKET_SIZE;
    g->cell_nbuckets = LOCK_MIN_BUCKETS;
    while (g->cell_nbuckets < LOCK_MAX_BUCKETS &&
           g->cell_nbuckets * 2 * CELL_BUCKET_SIZE <= size / LOCK_DIV) {
        g->cell_nbuckets *= 2;
    }
    g->mlog_off = g->cell_off + g->cell_nbuckets * CELL_BUCKET_SIZE;
    g->mlog_nslabs = MLOG_MIN;
    while (g->mlog_nslabs < MLOG_MAX && g->mlog_nslabs * 2 * MLOG_SIZE <= size / MLOG_DIV) {
        g->mlog_nslabs *= 2;
    }
    g->index_off = g->mlog_off + g->mlog_nslabs * MLOG_SIZE;
    uint64_t avail = size - g->index_off;
    uint64_t nb = o->buckets;
    if (nb == 0) {
        nb = 1;
        /* ~1 slot per 100 log bytes: records of small values are ~150-200
         * bytes, so the index rarely drops a live item for want of a slot. */
        while (nb * 2 * TC_RING_CACHELINE <= avail / IDX_DIV) {
            nb *= 2;
        }
    }
    if ((nb & (nb - 1)) != 0 || nb * TC_RING_CACHELINE > avail / 2) {
        errf(err, errlen, "shm buckets %llu must be a power of two using at most half the segment",
             (unsigned long long)nb);
        return TC_EINVAL;
    }
    g->nbuckets = nb;
    uint64_t logs = (avail - nb * TC_RING_CACHELINE) & ~(uint64_t)(TC_RING_CACHELINE - 1);
    unsigned pct = o->small_pct ? o->small_pct : DEF_SMALL;
    if (pct > 50) {
        errf(err, errlen, "shm small_pct %u must be at most 50", pct);
        return TC_EINVAL;
    }
    uint64_t want_item = o->max_item ? o->max_item : default_max_item(size);
    uint64_t small = logs * pct / 100;
    uint64_t need = (2 * pad8(want_item + rec_overhead()) + TC_RING_CACHELINE - 1) &
                    ~(uint64_t)(TC_RING_CACHELINE - 1);
    if (small < need) {
        small = need;
    }
    if (small > logs / 2) {
        small = logs / 2;
    }
    small &= ~(uint64_t)(TC_RING_CACHELINE - 1);
    g->log_off[0] = g->index_off + nb * TC_RING_CACHELINE;
    g->log_cap[0] = small;
    g->log_off[1] = g->log_off[0] + small;
    g->log_cap[1] = logs - small;
    g->max_rec = (small / 2) & ~7ull;
    return TC_OK;
}

/* Everything a reader relies on, checked once at attach (STYLE R15). */
static int geometry_ok(const struct tc_ring_hdr *h, uint64_t seg_size)
{
    if (h->seg_size != seg_size || h->stat_off != TC_RING_HDR_SIZE ||
        h->nstat != TC_RING_STAT_SLOTS) {
        return 0;
    }
    uint64_t end = h->stat_off + h->nstat * sizeof(struct tc_ring_stat_slot);
    if (h->lock_off != end || h->lock_nbuckets == 0 ||
        (h->lock_nbuckets & (h->lock_nbuckets - 1)) != 0 ||
        h->lock_nbuckets > seg_size / LOCK_BUCKET_SIZE) {
        return 0;
    }
    end = h->lock_off + h->lock_nbuckets * LOCK_BUCKET_SIZE;
    if (end > seg_size || h->cell_off != end || h->cell_nbuckets == 0 ||
        (h->cell_nbuckets & (h->cell_nbuckets - 1)) != 0 ||
        h->cell_nbuckets > seg_size / CELL_BUCKET_SIZE) {
        return 0;
    }
    end = h->cell_off + h->cell_nbuckets * CELL_BUCKET_SIZE;
    if (end > seg_size || h->mlog_off != end || h->mlog_nslabs < MLOG_MIN ||
        (h->mlog_nslabs & (h->mlog_nslabs - 1)) != 0 || h->mlog_nslabs > MLOG_MAX) {
        return 0;
    }
    end = h->mlog_off + h->mlog_nslabs * MLOG_SIZE;
    if (end > seg_size || h->index_off != end || h->nbuckets == 0 ||
        (h->nbuckets & (h->nbuckets - 1)) != 0 || h->nbuckets > seg_size / TC_RING_CACHELINE) {
        return 0;
    }
    end = h->index_off + h->nbuckets * TC_RING_CACHELINE;
    for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
        if (h->log_off[L] != end || h->log_cap[L] == 0 || h->log_cap[L] % TC_RING_CACHELINE ||
            h->log_cap[L] > seg_size || h->log_off[L] > seg_size - h->log_cap[L]) {
            return 0;
        }
        end = h->log_off[L] + h->log_cap[L];
    }
    return h->max_rec >= REC_HDR + 16 && h->max_rec <= h->log_cap[0] / 2 &&
           h->max_rec <= h->log_cap[1] / 2 && h->max_rec % 8 == 0;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &s, sizeof(s)) != (ssize_t)sizeof(s)) {
            s = 0;
        }
        close(fd);
    }
    /* Without /dev/urandom, still differ between segments and runs. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t mix[3] = {(uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30, (uint64_t)getpid(),
                       (uint64_t)(uintptr_t)&s};
    return s ^ XXH3_64bits(mix, sizeof(mix));
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void init_header(struct tc_ring_hdr *h, uint64_t size, const struct geometry *g)
{
    h->major = TC_RING_LAYOUT_MAJOR;
    h->minor = TC_RING_LAYOUT_MINOR;
    h->fingerprint = tc_ring_layout_fingerprint();
    h->seg_size = size;
    h->seed = random_seed();
    h->creator_pid = (uint64_t)getpid();
    h->flags = 0;
    h->stat_off = g->stat_off;
    h->nstat = g->nstat;
    h->lock_off = g->lock_off;
    h->lock_nbuckets = g->lock_nbuckets;
    h->cell_off = g->cell_off;
    h->cell_nbuckets = g->cell_nbuckets;
    h->mlog_off = g->mlog_off;
    h->mlog_nslabs = g->mlog_nslabs;
    h->index_off = g->index_off;
    h->nbuckets = g->nbuckets;
    for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
        h->log_off[L] = g->log_off[L];
        h->log_cap[L] = g->log_cap[L];
        atomic_init(&h->head[L].v, 0);
    }
    h->max_rec = g->max_rec;
    /* Release: pairs with attachers' acquire load of the magic; every field
     * above (and the zeroed index from ftruncate) is visible first. */
    atomic_store_explicit(&h->magic, TC_RING_MAGIC, memory_order_release);
}

/* "65534 (nobody)", or the number alone when it has no name. */
static void user_label(uint32_t uid, char *buf, size_t n)
{
    struct passwd pw, *res = NULL;
    char tmp[1024];
    if (getpwuid_r((uid_t)uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL) {
        snprintf(buf, n, "%u (%s)", (unsigned)uid, pw.pw_name);
    } else {
        snprintf(buf, n, "%u", (unsigned)uid);
    }
}

static void group_label(uint32_t gid, char *buf, size_t n)
{
    struct group gr, *res = NULL;
    char tmp[4096]; /* a group entry lists its members */
    if (getgrgid_r((gid_t)gid, &gr, tmp, sizeof(tmp), &res) == 0 && res != NULL) {
        snprintf(buf, n, "%u (%s)", (unsigned)gid, gr.gr_name);
    } else {
        snprintf(buf, n, "%u", (unsigned)gid);
    }
}

/* Appends "; "-separated reasons to a bounded buffer. */
static void why_add(char *why, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void why_add(char *why, size_t n, const char *fmt, ...)
{
    size_t used = strlen(why);
    if (used + 3 >= n) {
        return;
    }
    if (used > 0) {
        memcpy(why + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used, n - used, fmt, ap);
    va_end(ap);
}

/*
 * Whether the segment behind the descriptor about to be mapped may be
 * trusted. Whoever can write a segment can plant values that every process
 * attached to it serves, and read the values they store: so its owner must
 * be the expected uid (who alone, besides root, can change its mode), and
 * its mode must grant nobody more than configured. The group matters only
 * when the mode lets the group in. @p sb comes from fstat on that very
 * descriptor: the path could name another object by now.
 */
static enum tc_status check_trust(const char *name, const struct stat *sb,
                                  const struct tc_ring_options *o, char *err, size_t errlen)
{
    uint32_t want_uid = o->has_owner ? o->owner_uid : (uint32_t)geteuid();
    unsigned mode = (unsigned)sb->st_mode & 07777;
    char why[256] = "", a[96], b[96];
    if (!S_ISREG(sb->st_mode)) {
        why_add(why, sizeof(why), "not a shared-memory object");
    }
    if ((uint32_t)sb->st_uid != want_uid) {
        user_label(want_uid, a, sizeof(a));
        why_add(why, sizeof(why), "owner is not %s%s", o->has_owner ? "the configured " : "", a);
    }
    if ((mode & ~o->mode) != 0) {
        why_add(why, sizeof(why), "mode grants %04o beyond the allowed %04o", mode & ~o->mode,
                o->mode);
    }
    if (o->has_group && (mode & 0070) != 0 && (uint32_t)sb->st_gid != o->group_gid) {
        group_label(o->group_gid, a, sizeof(a));
        why_add(why, sizeof(why), "its group, not %s, has access", a);
    }
    if (why[0] == '\0') {
        return TC_OK;
    }
    user_label((uint32_t)sb->st_uid, a, sizeof(a));
    group_label((uint32_t)sb->st_gid, b, sizeof(b));
    errf(err, errlen,
         "shm segment /dev/shm/%s (owner %s, group %s, mode %04o) is refused: %s. Another user "
         "may have made it to plant or read values. Remove it (`tiercache shm unlink %s` or "
         "rm /dev/shm/%s), or accept it with owner=, group=, mode= in the shm:// URI",
         name, a, b, mode, why, name, name);
    return TC_EPERM;
}

/* shm_open() was refused access (EACCES): say whose segment it is, from the
 * path (informational: nothing is mapped). */
static void no_access_message(const char *name, int e, char *err, size_t errlen)
{
    char path[NAME_MAX_LEN + 16], a[96] = "?", b[96] = "?";
    struct stat sb;
    unsigned mode = 0;
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    if (stat(path, &sb) == 0) {
        user_label((uint32_t)sb.st_uid, a, sizeof(a));
        group_label((uint32_t)sb.st_gid, b, sizeof(b));
        mode = (unsigned)sb.st_mode & 07777;
    }
    errf(err, errlen,
         "shm_open(/%s): %s: %s (owner %s, group %s, mode %04o) is not this user's. Remove it "
         "(`tiercache shm unlink %s` as its owner or root) or run as its owner",
         name, strerror(e), path, a, b, mode, name);
}

/* The header fields no process writes after creation (hdr_fixed_equal()),
 * copied out of the segment: the magic, bytes 8..128, the lock and cell geometry.
 * The rest of the copy stays zero. */
static void hdr_copy_fixed(struct tc_ring_hdr *dst, const struct tc_ring_hdr *src, uint64_t magic)
{
    const size_t a = offsetof(struct tc_ring_hdr, major), b = offsetof(struct tc_ring_hdr, head);
    const size_t c = offsetof(struct tc_ring_hdr, lock_off),
                 d = offsetof(struct tc_ring_hdr, _pad0);
    memset(dst, 0, sizeof(*dst));
    atomic_init(&dst->magic, magic);
    memcpy((uint8_t *)dst + a, (const uint8_t *)src + a, b - a);
    memcpy((uint8_t *)dst + c, (const uint8_t *)src + c, d - c);
}

enum tc_status tc_ring_open(const char *name, const struct tc_ring_options *opt,
                            struct tc_ring **out, char *err, size_t errlen)
{
    static const struct tc_ring_options defaults = {0};
    struct tc_ring_options o = opt != NULL ? *opt : defaults;
    char path[NAME_MAX_LEN + 2];
    struct geometry g = {0}; /* plan() fills it whenever the segment is created */
    enum tc_status st = shm_path(name, path, sizeof(path), err, errlen);
    if (st != TC_OK) {
        return st;
    }
    if (o.mode == 0) {
        o.mode = 0600;
    }
    if (o.mode > 0777 || o.promote_pct > 100) {
        errf(err, errlen, "bad shm option (mode %o must be <= 0777, promote_pct <= 100)", o.mode);
        return TC_EINVAL;
    }
    if (o.any_owner && o.size != 0) {
        errf(err, errlen, "bad shm option: any_owner is for attaching (size 0) only");
        return TC_EINVAL;
    }
    if (o.size != 0 && (st = plan(&o, &g, err, errlen)) != TC_OK) {
        return st;
    }
    unsigned timeout = o.attach_timeout_ms ? o.attach_timeout_ms : DEF_TIMEOUT_MS;

    struct tc_ring *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return TC_ENOMEM;
    }
    snprintf(r->name, sizeof(r->name), "%s", name);
    int fd = -1, created = 0;
    for (int tries = 0; fd < 0 && tries < 3; tries++) {
        if (o.size != 0) {
            fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)o.mode);
            if (fd >= 0) {
                created = 1;
                break;
            }
            if (errno != EEXIST) {
                int e = errno;
                errf(err, errlen, "shm_open(%s, O_CREAT|O_EXCL, %o): %s", path, o.mode,
                     strerror(e));
                st = e == EACCES || e == EPERM ? TC_EPERM : TC_EIO;
                goto fail;
            }
        }
        fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
        if (fd < 0 && errno == ENOENT && o.size != 0) {
            continue; /* unlinked between our two calls: create it again */
        }
        if (fd < 0) {
            int e = errno;
            if (e == EACCES || e == EPERM) {
                no_access_message(name, e, err, errlen);
                st = TC_EPERM;
            } else {
                errf(err, errlen, "shm_open(%s): %s", path, strerror(e));
                st = e == ENOENT ? TC_ENOTFOUND : TC_EIO;
            }
            goto fail;
        }
    }
    if (fd < 0) {
        errf(err, errlen, "shm segment %s keeps disappearing while opening", path);
        st = TC_EIO;
        goto fail;
    }
    uint64_t seg_size;
    struct stat sb;
    if (created) {
        /* Owner and group first (a chown may clear mode bits), then exactly
         * the configured mode: shm_open applied the umask, which only ever
         * narrows it, so the segment is never wider than configured. The
         * size comes last: attachers judge owner and mode only once it is
         * there. */
        uid_t u = o.has_owner ? (uid_t)o.owner_uid : (uid_t)-1;
        gid_t gr = o.has_group ? (gid_t)o.group_gid : (gid_t)-1;
        if ((o.has_owner || o.has_group) && fchown(fd, u, gr) != 0) {
            int e = errno;
            char a[96] = "(unchanged)", b[96] = "(unchanged)";
            if (o.has_owner) {
                user_label(o.owner_uid, a, sizeof(a));
            }
            if (o.has_group) {
                group_label(o.group_gid, b, sizeof(b));
            }
            errf(err, errlen,
                 "fchown(/dev/shm/%s, owner %s, group %s): %s (giving a segment away takes root; "
                 "a group, membership of it)",
                 name, a, b, strerror(e));
            shm_unlink(path);
            st = e == EPERM || e == EACCES ? TC_EPERM : TC_EIO;
            goto fail;
        }
        if (fchmod(fd, (mode_t)o.mode) != 0 || ftruncate(fd, (off_t)o.size) != 0 ||
            fstat(fd, &sb) != 0) {
            errf(err, errlen, "fchmod(%s, %o), ftruncate(%s, %llu) or fstat: %s", path, o.mode,
                 path, (unsigned long long)o.size, strerror(errno));
            shm_unlink(path);
            st = TC_EIO;
            goto fail;
        }
        seg_size = o.size;
    } else {
        /* The creator sets owner and mode, then the size, in that order:
         * until the size is there, owner and mode may not be final yet, so
         * a segment is judged once sized (or when the wait ends). */
        uint64_t deadline = mono_ms() + timeout;
        for (;;) {
            if (fstat(fd, &sb) != 0) {
                errf(err, errlen, "fstat(%s): %s", path, strerror(errno));
                st = TC_EIO;
                goto fail;
            }
            if (sb.st_size >= (off_t)TC_RING_HDR_SIZE || mono_ms() > deadline) {
                break;
            }
            sleep_ms(1);
        }
        if (!o.any_owner && (st = check_trust(name, &sb, &o, err, errlen)) != TC_OK) {
            goto fail;
        }
        if (sb.st_size < (off_t)TC_RING_HDR_SIZE) {
            errf(err, errlen,
                 "shm segment '%s' was never sized (its creator died?); remove it with "
                 "`tiercache shm unlink %s`",
                 name, name);
            st = TC_ETIMEOUT;
            goto fail;
        }
        seg_size = (uint64_t)sb.st_size;
    }
    r->seg_uid = (uint32_t)sb.st_uid;
    r->seg_gid = (uint32_t)sb.st_gid;
    r->seg_mode = (uint32_t)sb.st_mode & 07777;
    void *base = mmap(NULL, (size_t)seg_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        errf(err, errlen, "mmap(%s, %llu, MAP_SHARED): %s", path, (unsigned long long)seg_size,
             strerror(errno));
        if (created) {
            shm_unlink(path);
        }
        st = TC_EIO;
        goto fail;
    }
    close(fd);
    fd = -1;
    r->base = base;
    r->map_len = (size_t)seg_size;
    r->hdr = base;
    struct tc_ring_hdr *h = &r->hdr0; /* validated and used from here on */
    if (created) {
        init_header(r->hdr, seg_size, &g);
        hdr_copy_fixed(h, r->hdr, TC_RING_MAGIC);
    } else {
        uint64_t deadline = mono_ms() + timeout;
        uint64_t magic;
        /* Acquire: pairs with the creator's release store in init_header(). */
        while ((magic = atomic_load_explicit(&r->hdr->magic, memory_order_acquire)) == 0 &&
               mono_ms() <= deadline) {
            sleep_ms(1);
        }
        if (magic == 0) {
            errf(err, errlen,
                 "shm segment '%s' was never initialised (its creator died?); remove it with "
                 "`tiercache shm unlink %s`",
                 name, name);
            st = TC_ETIMEOUT;
            goto fail;
        }
        /* One copy, checked and then used: a process scribbling on the
         * header while we attach cannot slip a geometry past the checks. */
        hdr_copy_fixed(h, r->hdr, magic);
        uint64_t want = o.size ? o.size : seg_size;
        if (magic != TC_RING_MAGIC || h->major != TC_RING_LAYOUT_MAJOR ||
            h->fingerprint != tc_ring_layout_fingerprint() || seg_size != want) {
            errf(err, errlen,
                 "shm segment '%s' has layout %s%u.%u (fingerprint %016llx) and size %llu bytes; "
                 "this process needs layout %u.%u (fingerprint %016llx) and size %llu bytes. "
                 "Remove it with `tiercache shm unlink %s` (its cached data is lost) or open it "
                 "with size=%llu",
                 name, magic == TC_RING_MAGIC ? "" : "<not a tiercache ring> ", h->major, h->minor,
                 (unsigned long long)h->fingerprint, (unsigned long long)seg_size,
                 TC_RING_LAYOUT_MAJOR, TC_RING_LAYOUT_MINOR,
                 (unsigned long long)tc_ring_layout_fingerprint(), (unsigned long long)want, name,
                 (unsigned long long)seg_size);
            st = TC_EVERSION;
            goto fail;
        }
        if (!geometry_ok(h, seg_size)) {
            errf(err, errlen,
                 "shm segment '%s' has an inconsistent header (corrupt); remove it with "
                 "`tiercache shm unlink %s`",
                 name, name);
            st = TC_ECORRUPT;
            goto fail;
        }
    }
    r->seg_size = seg_size;
    r->stats = (struct tc_ring_stat_slot *)(r->base + h->stat_off);
    r->nstat = h->nstat;
    r->index = (struct tc_ring_bucket *)(r->base + h->index_off);
    r->bucket_mask = h->nbuckets - 1;
    r->nslots = h->nbuckets * TC_RING_BUCKET_W;
    for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
        r->log[L] = (_Atomic uint64_t *)(r->base + h->log_off[L]);
        r->cap[L] = h->log_cap[L];
        r->words[L] = h->log_cap[L] / 8;
        r->head[L] = &r->hdr->head[L].v;
    }
    r->seed = h->seed;
    r->max_rec = h->max_rec;
    uint64_t limit = r->max_rec > rec_overhead() ? r->max_rec - rec_overhead() : 0;
    r->max_item = o.max_item ? o.max_item : default_max_item(seg_size);
    if (r->max_item > limit) {
        r->max_item = limit;
    }
    unsigned pp = o.promote_pct ? o.promote_pct : DEF_PROMOTE;
    r->promote_age = r->cap[TC_RING_LOG_MAIN] / 100 * (100 - pp);
    /* Far from the tail, so that a rewrite is not lapped while it writes
     * (the checksum would catch it, but it would cost the newer record). */
    r->inplace_age = r->cap[TC_RING_LOG_MAIN] / 2;
    if (r->inplace_age > r->promote_age) {
        r->inplace_age = r->promote_age;
    }
    for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
        r->ghost_age[L] = r->cap[L] + r->cap[L] * GHOST_PCT / 100;
    }
    r->pid = (uint64_t)getpid();
    r->locks.bucket = (struct tc_ring_lock_bucket *)(r->base + h->lock_off);
    r->locks.mask = h->lock_nbuckets - 1;
    r->locks.epoch = &r->hdr->lock_epoch;
    r->locks.seed = r->seed;
    r->locks.pid = r->pid;
    r->cells.bucket = (struct tc_ring_cell_bucket *)(r->base + h->cell_off);
    r->cells.mask = h->cell_nbuckets - 1;
    r->cells.seed = r->seed;
    r->cells.mlog = (struct tc_ring_mlog *)(r->base + h->mlog_off);
    r->cells.mlog_mask = h->mlog_nslabs / TC_RING_CELL_WAYS - 1;
    *out = r;
    return TC_OK;
fail:
    if (fd >= 0) {
        close(fd);
    }
    if (r->base != NULL) {
        munmap(r->base, r->map_len);
    }
    free(r);
    return st;
}

void tc_ring_close(struct tc_ring *r)
{
    if (r == NULL) {
        return;
    }
    for (unsigned i = 0; i < TC_RING_MAX_CTX; i++) {
        if (atomic_load(&r->ctxs[i].in_use)) {
            tc_ring_ctx_destroy(&r->ctxs[i]);
        }
    }
    munmap(r->base, r->map_len);
    free(r);
}

enum tc_status tc_ring_unlink(const char *name, char *err, size_t errlen)
{
    char path[NAME_MAX_LEN + 2];
    enum tc_status st = shm_path(name, path, sizeof(path), err, errlen);
    if (st != TC_OK) {
        return st;
    }
    if (shm_unlink(path) != 0) {
        int e = errno;
        errf(err, errlen, "shm_unlink(%s): %s", path, strerror(e));
        return e == ENOENT ? TC_ENOTFOUND : TC_EIO;
    }
    return TC_OK;
}
