/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * lmdb:// — the persistent, host-shared L2 tier (DESIGN.md "L2: LMDB").
 *
 *   lmdb://PATH?map_size=1G&sync=periodic&sync_interval_ms=1000
 *              &high_water=0.90&low_water=0.80&max_item=1M&batch=1024&max_readers=256
 *              &writemap=off&on_corrupt=recreate
 *
 * One LMDB environment in directory PATH (created if missing) holds two
 * named databases, always changed together in one write transaction:
 *
 *   tc_data : dkey                       -> record (below)
 *   tc_exp  : be64(local expiry) ‖ dkey  -> ""      (0 = never is stored as
 *                                                    UINT64_MAX: sorts last)
 *
 * so that sweeping expired records and evicting the earliest-expiring ones
 * walk tc_exp from its start: O(removed), never O(all keys).
 *
 * Lazy expiry index: every record has its tc_exp entry, but an entry may
 * outlive the record or its expiry. An overwrite adds the new entry and
 * leaves the old one; a del or clear-by-prefix deletes only the record.
 * Deleting the old entry at once would dirty a random tc_exp leaf per
 * overwrite on top of the random data leaf: with sync=periodic the pwrite
 * of those pages held group commit near 2.4x batch=1 (README "Measured
 * speed"). An entry is stale when its record is gone or holds another
 * local expiry; whoever reads one checks that. Sweep and eviction drop a
 * stale entry without counting it (it spends budget, as the sweep contract
 * counts entries examined, so neither can loop on them), and each batch
 * scrubs a stretch of tc_exp once stale entries outnumber the records
 * (plus SCRUB_SLACK), so the index stays under about twice its eager size.
 *
 * and, for tags (issue 15):
 *
 *   tc_tags : tag ‖ 0x00 ‖ tkey          -> full key
 *
 * where tkey is the key itself when tag ‖ 0 ‖ key fits LMDB's key limit,
 * else its first bytes and its SHA-256 (as a digested dkey). A set with
 * tags adds one entry per tag in the same transaction; an overwrite
 * without the tag, a delete or an expiry leave the entry, stale, until the
 * tag's index is dropped (clear with tags): a tag purge may so remove a key
 * that lost the tag, which a cache can afford, and never misses one that
 * has it. A clear of everything drops the whole index.
 *
 * The unnamed main database holds only those three and a format marker
 * ("tiercache_format"), checked at open.
 *
 * dkey is the key itself when it is at most raw_max bytes, raw_max being
 * mdb_env_get_maxkeysize() - 9 (502 on Debian), so that 8 + dkey fits
 * LMDB's key limit in tc_exp. A longer key is stored under exactly
 * raw_max + 1 bytes: its first raw_max + 1 - 32 bytes, then the SHA-256 of
 * the whole key. Raw and digested dkeys therefore never collide (different
 * lengths), keep prefix order for clear-by-prefix, and the record keeps the
 * full key, compared on every read.
 *
 * Record (all integers big-endian; everything read back is untrusted and
 * bounds-checked, a record that fails is a counted miss):
 *
 *   0        8       10          10+fk                 10+fk+32
 *   +--------+-------+-----------+---------------------+-----------+
 *   | local  | fk    | full key  | item header         | value     |
 *   | expiry | (u16) | (fk bytes;| (tiers/item.h)      | (vlen)    |
 *   |        |       | 0 if raw) |                     |           |
 *   +--------+-------+-----------+---------------------+-----------+
 *
 * Reads run on the caller's thread in a per-ctx read-only transaction made
 * once (MDB_NOTLS) and reset/renewed around every get, so a reader never
 * blocks the writer and never pins an old snapshot between gets.
 *
 * Writes (set, del, clear, sweep) go to one writer thread per open tier:
 *
 *   ctx thread ──wop──▶ queue ──▶ writer: take up to `batch` ops,
 *                                  one write txn, commit (+fsync if sync=always)
 *   ◀── pipe byte + event (ctx with an event_base) ──┘ or
 *   ◀── condition variable (ctx without one: the caller waits)
 *
 * While one commit runs, new ops queue up and ride the next one: that is the
 * group commit, and why a worker on an event loop never waits for an fsync.
 * With sync=periodic a second thread (the syncer) takes the checkpoints
 * (below) beside the writer, so that commits go on during the flush.
 * Async ops beyond MAX_QUEUE queued are refused with TC_EAGAIN. A sync
 * caller's op lives on its stack; an async op comes from its ctx's free
 * list and points at the caller's request, which tier.h keeps valid until
 * done() has run.
 *
 * Space: "in use" is the pages held by the B-trees. Before a batch, if in
 * use plus what the batch may dirty passes high_water of the map, the writer
 * deletes earliest-expiry records (in small transactions, so freed pages
 * become reusable) until low_water. Every transaction is sized to dirty at
 * most half the high/low band, so even a nearly full map has room for the
 * deletes that make room. If a commit still meets MDB_MAP_FULL (free pages
 * pinned by readers, no contiguous run for a large value) the writer evicts
 * harder, splits the batch and retries; a user sees an error only when
 * nothing is left to evict.
 *
 * Readers never write: a record past its local expiry is a miss at once and
 * goes with the next sweep (or eviction) through the expiry index.
 *
 * Durability. sync=always commits as LMDB does by default: the dirty pages,
 * fdatasync, the meta page, fdatasync; an acknowledged write survives a host
 * crash. sync=periodic and sync=none commit with MDB_NOSYNC: a commit only
 * writes into the page cache, so no write waits for the disk. What makes
 * periodic durable is a checkpoint that a second thread (the syncer) takes
 * every sync_interval_ms, and that the next open puts back if the host went
 * down:
 *
 *   every interval (syncer)                  at open, alone, host crashed
 *   ---------------------------------------  ---------------------------------
 *   W = a write txn: LMDB's writer lock, so  PATH/tiercache-durable (written
 *       no process commits until W ends      by another boot, not clean)
 *   R = a read txn: pins S, the last         names S: S's meta page goes back
 *       committed txn (W's id - 1)           into its slot, and a copy with
 *   pread S's meta page; abort W             txnid S - 1 into the other one;
 *   mdb_env_sync: S's pages are on disk      fdatasync. LMDB then opens at S,
 *   tiercache-durable := S, its meta page,   and the page check at open
 *       the boot id... (tmp, fsync, rename) verifies S.
 *   release the previous pin; keep R
 *
 * Why S is whole on the disk after a host crash, whatever the kernel wrote
 * back after the flush: LMDB lets a commit reuse a page only when the
 * transaction that freed it is older than every live reader's snapshot
 * (mdb_page_alloc, mdb_find_oldest in mdb.c), and the pages of S are freed
 * only by commits after S; so while R pins S, no commit writes a page of S,
 * in the page cache or on the disk, and the flush put them all there. The
 * meta pages on the disk, though, may name a later commit whose pages never
 * got there (the kernel writes dirty pages back in any order: that is how
 * MDB_NOSYNC lost whole environments), which is why they are put back rather
 * than trusted. LMDB 0.9 refuses a file unless both meta pages are sound and
 * uses the one with the higher txnid, hence the S - 1 copy; a commit writes
 * the slot of its own txnid's parity, so the next one (S + 1) overwrites the
 * copy and S stays. A host crash therefore loses the writes after the last
 * checkpoint's pin: at most sync_interval_ms plus the time one flush takes.
 *
 * A crash of the process alone loses nothing: its commits are in the page
 * cache, which outlives it. The record's boot id tells the two apart; with
 * the boot it was written in, nothing is restored. When the boot id cannot
 * be read, every unclean stop counts as a host crash (sound: S is intact
 * either way, only more is lost).
 *
 * Several processes. Each runs its own syncer and pins its own snapshots;
 * the record is shared. It is replaced under flock(2) on PATH and only by a
 * later snapshot (a process whose S is not newer than the record's leaves
 * the record as it is), and a process releases its previous pin only after
 * the record names a snapshot at least as new as its new pin. So every
 * process that has taken a checkpoint holds a pin at or before the record's
 * S; a pin protects every later snapshot as well (their pages are freed by
 * still later commits), so while any of those processes lives no commit can
 * touch the pages the record names. A process commits nothing before its
 * first checkpoint, taken in open right after mdb_env_open. So when the
 * process that wrote the record dies and others go on writing, their pins
 * still cover it: there is no window. When the last one dies, nobody
 * commits until the next open, which, alone with the files, flushes them and
 * writes a fresh record (naming the newest meta page) before LMDB opens.
 * The record also carries the sync mode: a process that finds the
 * environment open with another mode refuses to open it (one process
 * committing without checkpoints, or with MDB_NOSYNC beside sync=always
 * processes, would void the others' guarantee). Programs other than
 * tiercache must not write to PATH while tiercache uses it.
 *
 * sync=none takes no checkpoints; its record only says which boot opened the
 * environment and whether the last process closed it cleanly. Opened after a
 * host crash, the environment is moved aside (see "Damage"): the pages
 * MDB_NOSYNC left may be stale yet well formed, and then an old value could
 * come back under its key, which no check can tell from the right one (an
 * old record is a valid record of its key). A clean close, in any mode,
 * flushes and, when no other process has the environment open, marks the
 * record clean.
 *
 * The price of the pin: a page freed since the last checkpoint cannot be
 * reused until the next one moves the pin on, so every page a commit
 * copies is a new page, and the flush writes each of them once (under
 * MDB_NOSYNC alone, the same few pages are rewritten in the page cache and
 * flushed once an interval). Commits never wait for that writeback; with
 * small random sets it is about 8 KB per set, and where the disk writes
 * less than that the syncer falls behind, the file grows, and once the map
 * is full the writer waits for a checkpoint (see checkpoint_now) rather
 * than evict. The file also grows by what is copied between two
 * checkpoints; once it has grown by half the high/low water band since the
 * last one began, the writer asks for the next at once (see
 * checkpoint_if_grown), which costs no extra writeback. Each process uses
 * two reader slots for its pins.
 *
 * The alternative, MDB_NOMETASYNC (the pages flushed at every commit, the
 * meta page left to the next flush), also keeps the file whole, but costs
 * an fdatasync per commit, and with LMDB copying whole pages that held
 * periodic to about a quarter of MDB_NOSYNC's set throughput.
 *
 * Damage. Bytes in the file are untrusted, and LMDB trusts its pages. At
 * open, the tier checks what LMDB does not, before LMDB reads more than the
 * meta pages: when no other process has the environment open (this process
 * can take the lock LMDB's first opener takes, byte 0 of lock.mdb,
 * exclusively), both meta pages (LMDB checks only their magic and version;
 * a page size of 0 divides by zero inside mdb_env_open); then, once LMDB
 * has mapped the file, every page of the snapshot it is about to use,
 * with tc_lmdb_check (tiers/lmdb_check.h): kinds, bounds, nodes, children
 * and overflow runs inside the file (a truncated file is mapped past its
 * end, and the first get that touches a missing page dies of SIGBUS), free
 * lists. That check reads every page in use, so an open takes about as long
 * as reading the file.
 *
 * Before those checks, alone with the files, the open reads
 * tiercache-durable (see "Durability") and puts the meta pages back to its
 * snapshot when the host went down with the environment open in
 * sync=periodic; the checks then verify that snapshot. A record that does
 * not decode, or names another data.mdb, or a snapshot newer than the file,
 * restores nothing and is named in the open message.
 *
 * A damaged environment (those checks failing; mdb_env_open or the first
 * transaction failing with MDB_INVALID, MDB_CORRUPTED, MDB_PAGE_NOTFOUND or
 * MDB_INCOMPATIBLE; a garbage format marker; the marker file below; or a
 * host crash while it was open with sync=none) is
 * moved aside, data.mdb renamed data.mdb.corrupt-<UTC time>, and a new empty
 * environment created. open() then succeeds with a message in its err
 * buffer that the caller logs at crit (src/main.c), and health says so. With
 * on_corrupt=fail, or when another process has the environment open (moving
 * it would pull it from under that process), open fails instead, with a
 * message that says which and what to do.
 *
 * At run time, MDB_CORRUPTED, MDB_PAGE_NOTFOUND or MDB_PANIC from any LMDB
 * call marks the tier down: health DOWN with the reason, and every operation
 * answers TC_EUNAVAIL without touching the map again (the stack skips a down
 * tier; a get that finds nothing else is a miss). The file
 * PATH/tiercache-damaged records the reason, so that the next open moves
 * the environment aside instead of serving from it again. LMDB's own
 * assertions (which abort the process) leave that file too, through
 * mdb_env_set_assert, so that a restart recovers. Damage that happens
 * while the tier runs (a disk going bad under it) is not checked before
 * LMDB follows it.
 *
 * Processes: any number may open the same PATH at once (LMDB's lock file
 * serialises their writers). Reader slots left by killed processes are
 * cleared at open and every few seconds (mdb_reader_check). Caveats (LMDB's
 * own): one process must not open the same PATH twice at once, an open tier
 * must not be used in a fork()ed child, and every process should use the
 * same map_size.
 *
 * Thread safety: the tier may be used from any thread (sweep, stats, health,
 * ctx_init); each ctx belongs to the thread that made it (tier.h).
 */
#include "tiers/tier_impl.h"

#include "tiers/lmdb_check.h"
#include "tiers/lmdb_durable.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC_FIXED      10u /* local expiry + full-key length */
#define DIGEST_LEN     32u /* SHA-256 */
#define KEYBUF_MAX     (TC_KEY_MAX + 8u)
#define FORMAT_KEY     "tiercache_format"
#define FORMAT_VALUE   "tc-lmdb-1"
#define EVICT_CHUNK    256u   /* most records deleted per eviction transaction */
#define REWRITE_VISITS 4096u  /* most records a rewrite step reads: the writer waits on it */
#define READER_CHECK_S 5      /* seconds between mdb_reader_check runs */
#define MAX_FULL_TRIES 12     /* MDB_MAP_FULL retries of one batch */
#define MAX_QUEUE      65536u /* async writes queued before TC_EAGAIN */
#define SCRUB_SLACK    4096u  /* stale tc_exp entries tolerated beyond one per record */
#define SCRUB_VISITS   4u     /* tc_exp entries a scrub looks at per op in the batch */
#define DAMAGE_MARK    "tiercache-damaged" /* in PATH: damage seen at run time */
#define CKPT_WAIT_MS   10000u /* longest a writer waits for a checkpoint it asked for */

enum sync_mode { SYNC_ALWAYS = 0, SYNC_PERIODIC = 1, SYNC_NONE = 2 };
static const char *const sync_names[] = {"always", "periodic", "none", NULL};

enum on_corrupt { ON_CORRUPT_RECREATE = 0, ON_CORRUPT_FAIL = 1 };
static const char *const on_corrupt_names[] = {"recreate", "fail", NULL};

enum wop_kind { W_SET = 1, W_DEL, W_CLEAR, W_SWEEP, W_REWRITE };

struct lmdb_ctx;

/* One queued write. For a ctx with an event_base it comes from the ctx's
 * free list and the request it points to stays valid until completion
 * (tier.h); for a synchronous caller it lives on the caller's stack. */
struct wop {
    struct wop *next;
    struct lmdb_ctx *ctx; /* NULL: a synchronous waiter */
    struct tc_tier_req *req;
    enum wop_kind kind;
    enum tc_status st;
    int done; /* synchronous waiters: set under the writer lock */
    /* sweep only */
    uint64_t now_ms;
    size_t budget;
    uint64_t removed;
    /* rewrite only (budget too): the caller's callback, and where the walk
     * stopped (rw_next_len 0: it reached the end), in lmdb_rewrite()'s
     * buffer of KEYBUF_MAX bytes (not here: every queued write is a wop) */
    tc_tier_rewrite_fn rw_fn;
    void *rw_arg;
    unsigned char *rw_next;
    size_t rw_next_len;
};

#define LMDB_STATS(X)                                                                              \
    X(commit_batches)                                                                              \
    X(commit_ops)                                                                                  \
    X(commit_errors)                                                                               \
    X(evictions)                                                                                   \
    X(expired)                                                                                     \
    X(sweeps)                                                                                      \
    X(map_full_retries)                                                                            \
    X(syncs)                                                                                       \
    X(sync_errors)                                                                                 \
    X(queue_full)                                                                                  \
    X(stale_readers_cleared)

struct lmdb_stats {
#define TC_X(name) _Atomic uint64_t name;
    LMDB_STATS(TC_X)
#undef TC_X
};

struct lmdb_tier {
    struct tc_tier base;
    MDB_env *env;
    MDB_dbi data, exp;
    MDB_dbi tags; /* issue 15 */
    char *path;
    uint64_t map_size;
    int sync;
    uint64_t sync_interval_ms;
    double high_water, low_water;
    size_t batch_max;
    size_t raw_max;     /* longest key stored as itself */
    size_t psize;       /* LMDB page size */
    size_t evict_chunk; /* records per eviction txn: a few pages each must fit */
    size_t txn_pages;   /* most pages one write txn should dirty */
    struct lmdb_stats stats;
    _Atomic int last_error; /* last commit's enum tc_status, for health */
    int on_corrupt;
    unsigned env_flags;
    size_t rec_max; /* longest record a process with our map_size writes */
    /* Damage seen at run time: 0 none, 1 being recorded, 2 recorded
     * (down_why is written before the release store of 2). */
    _Atomic int down;
    char down_why[256];
    char recovered[640]; /* set at open when a damaged environment was moved aside */
    char news[640];      /* set at open: a restore, or a record that could not be used */
    char boot_id[TC_LMDB_DURABLE_BOOT_ID];
    /* sync=periodic: the pinned snapshots (see "Durability"). pin[pin_cur]
     * holds the newest; during a checkpoint the other one pins the next.
     * The env opener, then the syncer thread only; pin_txnid is also read by
     * the writer, under lock. */
    MDB_txn *pin[2];
    int pin_live[2];
    int pin_cur; /* -1: nothing pinned yet */
    int lock_fd; /* lock.mdb, from lock_exclusive until mdb_env_close; or -1 */

    /* Writer. Everything below is guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* writer: work queued or stopping */
    pthread_cond_t done; /* synchronous waiters and disposing ctxs */
    struct wop *q_head, *q_tail;
    size_t q_len;
    int stopping;
    pthread_t writer;
    /* sync=periodic: a thread of its own flushes, so that the writer goes on
     * committing while the disk works. */
    pthread_cond_t sync_wake;   /* syncer: stopping, or a checkpoint asked for */
    pthread_cond_t ckpt_cv;     /* writer: a checkpoint it asked for is done */
    uint64_t commits;           /* batches committed */
    uint64_t ckpt_req;          /* checkpoints asked for by the writer (full map) */
    uint64_t ckpt_done;         /* of those, taken (or failed) */
    uint64_t pin_txnid;         /* the snapshot pinned last */
    _Atomic uint64_t grow_mark; /* the file's last page when the last checkpoint began */
    char sync_why[200];         /* the last checkpoint's failure, "" after a success */
    int has_syncer;
    pthread_t syncer;
    struct wop **batch; /* the writer's batch, batch_max slots */

    /* Writer thread only: where the next scrub of tc_exp resumes (a hint;
     * 0 bytes = the start). */
    unsigned char scrub_key[KEYBUF_MAX];
    size_t scrub_len;

    /* Where the next rewrite walk resumes (0 bytes: the start). Written by
     * lmdb_rewrite() after its op committed, read by the writer inside the
     * next one: one rewrite at a time (tier_impl.h), handed over under
     * m->lock with the op. */
    unsigned char rw_pos[KEYBUF_MAX];
    size_t rw_pos_len;
};

struct lmdb_ctx {
    struct tc_tier_ctx base;
    MDB_txn *rtxn; /* reset between gets */
    /* Async only (base.base != NULL). */
    int pipe_rd, pipe_wr;
    struct event *ev;
    struct wop *free_wops; /* ctx thread only */
    /* Guarded by the tier lock. */
    struct wop *done_head, *done_tail;
    size_t at_writer; /* ops queued or being applied */
    int notified;     /* a byte is in the pipe and not yet drained */
};

struct lmdb_settings {
    uint64_t map_size;
    int sync;
    uint64_t sync_interval_ms;
    double high_water, low_water;
    int on_corrupt;
    uint64_t max_item; /* UINT64_MAX: not given */
    uint64_t batch, max_readers;
    int writemap;
};

#define LMDB_FIELD(f) offsetof(struct lmdb_settings, f)
static const struct tc_tier_param lmdb_params[] = {
    {"map_size", TC_TIER_PARAM_SIZE, LMDB_FIELD(map_size), "1G", 1 << 20, (double)(1ull << 44), 0,
     NULL, "the LMDB map: the most the file can hold (sparse; every process the same)", NULL},
    {"sync", TC_TIER_PARAM_CHOICE, LMDB_FIELD(sync), "periodic", 0, 0, 0, sync_names,
     "always: durable at the acknowledgement; periodic: a host crash loses at most "
     "sync_interval_ms; none: a host crash loses the environment",
     NULL},
    {"sync_interval_ms", TC_TIER_PARAM_MS, LMDB_FIELD(sync_interval_ms), "1000", 1, 3600000, 0,
     NULL, "with sync=periodic, how often the durable snapshot moves on (a checkpoint)", NULL},
    {"high_water", TC_TIER_PARAM_DOUBLE, LMDB_FIELD(high_water), "0.90", 0, 0.99, 1, NULL,
     "fraction of the map in use above which the writer evicts the earliest expiries", NULL},
    {"low_water", TC_TIER_PARAM_DOUBLE, LMDB_FIELD(low_water), "0.80", 0, 0.99, 1, NULL,
     "where eviction stops; below high_water", NULL},
    {"on_corrupt", TC_TIER_PARAM_CHOICE, LMDB_FIELD(on_corrupt), "recreate", 0, 0, 0,
     on_corrupt_names, "a damaged environment at start: recreate (moved aside) or fail", NULL},
    {"max_item", TC_TIER_PARAM_SIZE, LMDB_FIELD(max_item), NULL, 0, (double)(1ull << 42), 0, NULL,
     "largest value accepted (at most map_size/4)", "min(16M, map_size/16)"},
    {"batch", TC_TIER_PARAM_UINT, LMDB_FIELD(batch), "1024", 1, 1 << 20, 0, NULL,
     "most writes committed in one transaction (1: one per write)", NULL},
    {"max_readers", TC_TIER_PARAM_UINT, LMDB_FIELD(max_readers), "256", 8, 65536, 0, NULL,
     "LMDB reader slots: one per worker thread, plus two per process with sync=periodic, in "
     "every process sharing the environment",
     NULL},
    {"writemap", TC_TIER_PARAM_BOOL, LMDB_FIELD(writemap), "off", 0, 0, 0, NULL,
     "on: commits write into a writable map (faster with sync=always|none, slower with "
     "periodic; a stray write could damage the file)",
     NULL},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

#define STAT_ADD(m, name, n) atomic_fetch_add_explicit(&(m)->stats.name, (n), memory_order_relaxed)

static int checkpoint_now(struct lmdb_tier *m);
static void checkpoint_if_grown(struct lmdb_tier *m);

/* ---- helpers --------------------------------------------------------------- */

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* LMDB and errno codes stop here (STYLE R6). */
static enum tc_status map_rc(int rc)
{
    switch (rc) {
    case 0:
        return TC_OK;
    case MDB_NOTFOUND:
        return TC_ENOTFOUND;
    case MDB_MAP_FULL:
        return TC_ENOMEM;
    case ENOMEM:
        return TC_ENOMEM;
    case MDB_CORRUPTED:
    case MDB_INVALID:
    case MDB_PAGE_NOTFOUND:
        return TC_ECORRUPT;
    case MDB_VERSION_MISMATCH:
        return TC_EVERSION;
    case MDB_READERS_FULL:
    case MDB_MAP_RESIZED:
    case EAGAIN:
    case EBUSY:
        return TC_EAGAIN;
    case MDB_BAD_VALSIZE:
        return TC_ETOOBIG;
    case EINVAL:
        return TC_EINVAL;
    default:
        return TC_EIO;
    }
}

/* The dkey of a key (see the file comment). Points at the key itself when it
 * is short, else at buf, which must hold raw_max + 1 bytes. */
static MDB_val dkey_of(const struct lmdb_tier *m, const void *key, size_t klen, unsigned char *buf)
{
    MDB_val v;
    if (klen <= m->raw_max) {
        v.mv_data = (void *)(uintptr_t)key;
        v.mv_size = klen;
        return v;
    }
    size_t keep = m->raw_max + 1 - DIGEST_LEN;
    memcpy(buf, key, keep);
    unsigned int dl = DIGEST_LEN;
    /* EVP_Digest with SHA-256 cannot fail short of memory corruption; a zero
     * digest would still be caught by the full-key compare on read. */
    if (EVP_Digest(key, klen, buf + keep, &dl, EVP_sha256(), NULL) != 1) {
        memset(buf + keep, 0, DIGEST_LEN);
    }
    v.mv_data = buf;
    v.mv_size = m->raw_max + 1;
    return v;
}

/* tc_exp key: big-endian expiry (0 = never -> UINT64_MAX) then the dkey. */
static MDB_val expkey_of(uint64_t local_exp, const MDB_val *dk, unsigned char *buf)
{
    put_be64(buf, local_exp == 0 ? UINT64_MAX : local_exp);
    memcpy(buf + 8, dk->mv_data, dk->mv_size);
    MDB_val v = {dk->mv_size + 8, buf};
    return v;
}

/* A decoded record; pointers into the map, valid only inside the txn. */
struct rec {
    uint64_t local_exp;
    const unsigned char *fullkey; /* NULL when the dkey is the key */
    size_t fk_len;
    struct tc_item_hdr hdr;
    const unsigned char *value;
};

/* Validates a record read from the map. dk_len tells whether a full key
 * must be present. With @p key, the item's check is verified against it (a
 * record whose value is handed out); without, only its shape is (a record
 * read for its full key or expiry). */
static enum tc_status rec_decode(const struct lmdb_tier *m, const MDB_val *v, size_t dk_len,
                                 const void *key, size_t key_len, struct rec *r)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < REC_FIXED + TC_ITEM_HDR_SIZE) {
        return TC_ECORRUPT;
    }
    r->local_exp = get_be64(p);
    size_t fk = ((size_t)p[8] << 8) | p[9];
    if (fk > v->mv_size - REC_FIXED - TC_ITEM_HDR_SIZE || fk > TC_KEY_MAX) {
        return TC_ECORRUPT;
    }
    if ((dk_len > m->raw_max) != (fk > m->raw_max) || (dk_len <= m->raw_max && fk != 0)) {
        return TC_ECORRUPT;
    }
    r->fk_len = fk;
    r->fullkey = fk ? p + REC_FIXED : NULL;
    const unsigned char *item = p + REC_FIXED + fk;
    size_t item_len = v->mv_size - REC_FIXED - fk;
    enum tc_status st = key != NULL ? tc_item_decode(item, item_len, key, key_len, &r->hdr)
                                    : tc_item_peek(item, item_len, &r->hdr);
    if (st != TC_OK) {
        return st == TC_EVERSION ? TC_EVERSION : TC_ECORRUPT;
    }
    r->value = p + REC_FIXED + fk + TC_ITEM_HDR_SIZE;
    return TC_OK;
}

/* The local expiry stored in a record, if it has at least that much. */
static int rec_local_exp(const MDB_val *v, uint64_t *le)
{
    if (v->mv_size < 8) {
        return 0;
    }
    *le = get_be64(v->mv_data);
    return 1;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- damage at run time --------------------------------------------------- */

/* "DIR/NAME" in a new string, or NULL when out of memory. */
static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

/* LMDB answers after which the environment must not be used again: a
 * damaged page, or (MDB_PANIC) LMDB giving up on it after a failed write. */
static int is_fatal(int rc)
{
    return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_PANIC;
}

static int is_down(struct lmdb_tier *m)
{
    return atomic_load_explicit(&m->down, memory_order_relaxed) != 0;
}

/*
 * Marks the tier down, once, for the reason @p why, and
 * leaves DAMAGE_MARK in PATH so that the next open moves the environment
 * aside rather than serving from it again. Any thread. A marker that cannot
 * be written costs only that: the next open's own checks may still find the
 * damage, or the next run meets it again.
 */
static void mark_down_why(struct lmdb_tier *m, const char *why)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&m->down, &expect, 1)) {
        return;
    }
    snprintf(m->down_why, sizeof(m->down_why), "%s", why);
    char *p = path_join(m->path, DAMAGE_MARK);
    int fd = p != NULL ? open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640) : -1;
    if (fd >= 0) {
        ssize_t w = write(fd, m->down_why, strlen(m->down_why));
        (void)w;
        close(fd);
    }
    free(p);
    atomic_store_explicit(&m->down, 2, memory_order_release);
}

static void mark_down(struct lmdb_tier *m, int rc, const char *where)
{
    char why[160];
    snprintf(why, sizeof(why), "%s failed: %s", where, mdb_strerror(rc));
    mark_down_why(m, why);
}

/*
 * LMDB's assertion hook. Some damage trips an assertion inside LMDB (e.g.
 * "mp->mp_pgno != pgno" in mdb_page_touch, met by a commit over a flipped
 * page number), and LMDB then abort()s whatever this hook does. Leaving the
 * marker first means that the restart moves the environment aside instead
 * of dying on it again.
 */
static void on_lmdb_assert(MDB_env *env, const char *msg)
{
    struct lmdb_tier *m = mdb_env_get_userctx(env);
    if (m != NULL) {
        char why[240];
        snprintf(why, sizeof(why), "LMDB %s", msg);
        mark_down_why(m, why);
    }
}

/* ---- write operations (writer thread, inside a write txn) ----------------- */

/* LMDB's key limit: raw_max was derived from it (see the file comment). */
#define MAXKEY(m) ((m)->raw_max + 9)

/* The tc_tags key of (tag, key) in buf (MAXKEY bytes at least). */
static MDB_val tagkey_of(const struct lmdb_tier *m, const void *tag, size_t tlen, const void *key,
                         size_t klen, unsigned char *buf)
{
    memcpy(buf, tag, tlen);
    buf[tlen] = 0;
    size_t room = MAXKEY(m) - tlen - 1;
    MDB_val v = {tlen + 1 + klen, buf};
    if (klen <= room) {
        memcpy(buf + tlen + 1, key, klen);
        return v;
    }
    size_t keep = room - DIGEST_LEN;
    memcpy(buf + tlen + 1, key, keep);
    unsigned int dl = DIGEST_LEN;
    if (EVP_Digest(key, klen, buf + tlen + 1 + keep, &dl, EVP_sha256(), NULL) != 1) {
        memset(buf + tlen + 1 + keep, 0, DIGEST_LEN);
    }
    v.mv_size = MAXKEY(m);
    return v;
}

/* Records req's key under each of its tags (tier.h: "a\0b\0"). */
static int index_tags(struct lmdb_tier *m, MDB_txn *txn, const struct tc_tier_req *req)
{
    unsigned char buf[KEYBUF_MAX + TC_TAG_MAX + 1];
    const char *t = req->tags, *end = t + req->tags_len;
    while (t < end) {
        size_t tl = strlen(t); /* NUL-ended: checked by the tier layer */
        MDB_val k = tagkey_of(m, t, tl, req->key, req->key_len, buf);
        MDB_val v = {req->key_len, (void *)(uintptr_t)req->key};
        int rc = mdb_put(txn, m->tags, &k, &v, 0);
        if (rc != 0) {
            return rc;
        }
        t += tl + 1;
    }
    return 0;
}

/* Drops the index of the tag req->tags (NUL-ended); counts its entries. */
static int clear_tag(struct lmdb_tier *m, MDB_txn *txn, struct tc_tier_req *req)
{
    size_t plen = req->tags_len; /* tag ‖ 0 */
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, m->tags, &cur);
    if (rc != 0) {
        return rc;
    }
    MDB_val k = {plen, (void *)(uintptr_t)req->tags}, v;
    uint64_t n = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= plen && memcmp(k.mv_data, req->tags, plen) == 0) {
        if ((rc = mdb_cursor_del(cur, 0)) != 0) {
            break;
        }
        n++;
        /* After a delete, MDB_NEXT yields the entry that followed. */
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND && rc != 0) {
        return rc;
    }
    req->count = n;
    return 0;
}

/*
 * Writes the record for req and indexes its expiry. The tc_exp entry of the
 * value it replaces stays behind, stale (see "Lazy expiry index" at the top):
 * deleting it would dirty one more random leaf per overwrite.
 */
static int apply_set(struct lmdb_tier *m, MDB_txn *txn, struct tc_tier_req *req)
{
    unsigned char kbuf[KEYBUF_MAX], ebuf[KEYBUF_MAX];
    MDB_val dk = dkey_of(m, req->key, req->key_len, kbuf);
    size_t fk = dk.mv_size > m->raw_max ? req->key_len : 0;
    MDB_val v = {REC_FIXED + fk + TC_ITEM_HDR_SIZE + req->value_len, NULL};
    int rc = mdb_put(txn, m->data, &dk, &v, MDB_RESERVE);
    if (rc != 0) {
        return rc;
    }
    unsigned char *p = v.mv_data;
    put_be64(p, req->local_expire_ms);
    p[8] = (unsigned char)(fk >> 8);
    p[9] = (unsigned char)fk;
    if (fk) {
        memcpy(p + REC_FIXED, req->key, fk);
    }
    if (tc_item_encode(&req->hdr, req->key, req->key_len, req->value, p + REC_FIXED + fk) !=
        TC_OK) {
        return EINVAL; /* the caller's header; aborts only this op's batch try */
    }
    if (req->value_len > 0) {
        memcpy(p + REC_FIXED + fk + TC_ITEM_HDR_SIZE, req->value, req->value_len);
    }
    MDB_val ek = expkey_of(req->local_expire_ms, &dk, ebuf);
    MDB_val empty = {0, NULL};
    /* NOOVERWRITE: an entry already there (same expiry as before, or a
     * stale one that is now right again) is found without dirtying its
     * leaf. */
    rc = mdb_put(txn, m->exp, &ek, &empty, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        rc = 0;
    }
    return rc == 0 && req->tags_len > 0 ? index_tags(m, txn, req) : rc;
}

/* The full key of a record found at dk (for prefix matching). */
static int record_key(const struct lmdb_tier *m, const MDB_val *dk, const MDB_val *v,
                      const unsigned char **key, size_t *klen)
{
    if (dk->mv_size <= m->raw_max) {
        *key = dk->mv_data;
        *klen = dk->mv_size;
        return 1;
    }
    struct rec r;
    if (rec_decode(m, v, dk->mv_size, NULL, 0, &r) != TC_OK) {
        return 0;
    }
    *key = r.fullkey;
    *klen = r.fk_len;
    return 1;
}

static int apply_clear(struct lmdb_tier *m, MDB_txn *txn, struct tc_tier_req *req)
{
    MDB_stat s;
    int rc;
    if (req->tags_len > 0) {
        return clear_tag(m, txn, req);
    }
    if (req->key_len == 0) {
        if ((rc = mdb_stat(txn, m->data, &s)) != 0) {
            return rc;
        }
        if ((rc = mdb_drop(txn, m->data, 0)) != 0 || (rc = mdb_drop(txn, m->exp, 0)) != 0 ||
            (rc = mdb_drop(txn, m->tags, 0)) != 0) {
            return rc;
        }
        req->count = s.ms_entries;
        return 0;
    }
    /* Digested dkeys keep the key's first bytes, so a range scan over the
     * shorter of (prefix, kept bytes) finds every candidate; the full key
     * decides. */
    size_t keep = m->raw_max + 1 - DIGEST_LEN;
    size_t scan_len = req->key_len < keep ? req->key_len : keep;
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, m->data, &cur)) != 0) {
        return rc;
    }
    MDB_val k = {scan_len, (void *)(uintptr_t)req->key}, v;
    uint64_t n = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size < scan_len || memcmp(k.mv_data, req->key, scan_len) != 0) {
            break;
        }
        const unsigned char *fk;
        size_t fkl;
        int match = record_key(m, &k, &v, &fk, &fkl) && fkl >= req->key_len &&
                    memcmp(fk, req->key, req->key_len) == 0;
        if (match) {
            /* The tc_exp entries stay behind, stale, as after a del. */
            if ((rc = mdb_cursor_del(cur, 0)) != 0) {
                break;
            }
            n++;
            /* After a delete, MDB_NEXT yields the record that followed. */
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND && rc != 0) {
        return rc;
    }
    req->count = n;
    return 0;
}

/*
 * Deletes up to @p budget tc_exp entries from the front (earliest expiry),
 * only those expiring at or before @p until (UINT64_MAX: any). A stale
 * entry (record gone or holding another expiry) just goes: it takes budget
 * but is not counted in *removed. Sets *more when entries due remain.
 */
static int drop_front(struct lmdb_tier *m, MDB_txn *txn, uint64_t until, size_t budget,
                      uint64_t *removed, int *more)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, m->exp, &cur);
    if (rc != 0) {
        return rc;
    }
    MDB_val k, v;
    *more = 0;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        if (k.mv_size < 9) {
            /* Foreign or corrupt entry: drop it, it indexes nothing. */
            if ((rc = mdb_cursor_del(cur, 0)) != 0) {
                break;
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
            continue;
        }
        uint64_t e = get_be64(k.mv_data);
        if (until != UINT64_MAX && (e == UINT64_MAX || e > until)) {
            break;
        }
        if (budget == 0) {
            *more = 1;
            break;
        }
        budget--;
        MDB_val dk = {k.mv_size - 8, (unsigned char *)k.mv_data + 8}, rv;
        int r2 = mdb_get(txn, m->data, &dk, &rv);
        uint64_t le;
        /* Ours: the record holds this expiry. Garbage too short to name one
         * goes as well, or nothing would ever index it again. A record with
         * another expiry was rewritten and has its own entry (lazy index). */
        int short_rec = r2 == 0 && !rec_local_exp(&rv, &le);
        if (r2 == 0 && (short_rec || (le == 0 ? UINT64_MAX : le) == e)) {
            if ((r2 = mdb_del(txn, m->data, &dk, NULL)) != 0) {
                rc = r2;
                break;
            }
            (*removed)++;
        } else if (r2 != 0 && r2 != MDB_NOTFOUND) {
            rc = r2;
            break;
        }
        if ((rc = mdb_cursor_del(cur, 0)) != 0) {
            break;
        }
        /* Always the front: everything before it is gone. */
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Keeps the stale tc_exp entries (left by overwrites and deletes) bounded:
 * once the index holds more than about twice as many entries as there are
 * records, each batch also walks the next stretch of it (resuming where the
 * last walk stopped, wrapping at the end) and drops up to @p max_del stale
 * entries, looking at most SCRUB_VISITS times that many. Stale entries left
 * by a steady stream of writes lie together (written at about the same
 * time, so about the same expiry), so this dirties a few leaves where the
 * eager delete dirtied one random leaf per overwrite. Entries whose record
 * holds their expiry stay, expired or not: those are the sweep's and
 * eviction's to remove and count.
 */
static int scrub_index(struct lmdb_tier *m, MDB_txn *txn, size_t max_del)
{
    MDB_stat ds, es;
    int rc;
    if ((rc = mdb_stat(txn, m->data, &ds)) != 0 || (rc = mdb_stat(txn, m->exp, &es)) != 0) {
        return rc;
    }
    if (es.ms_entries <= 2 * ds.ms_entries + SCRUB_SLACK) {
        return 0;
    }
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, m->exp, &cur)) != 0) {
        return rc;
    }
    MDB_val k = {m->scrub_len, m->scrub_key}, v;
    rc = mdb_cursor_get(cur, &k, &v, m->scrub_len > 0 ? MDB_SET_RANGE : MDB_FIRST);
    size_t visits = SCRUB_VISITS * max_del, dels = 0;
    while (visits > 0 && dels < max_del) {
        if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); /* wrap around */
        }
        if (rc != 0) {
            break;
        }
        visits--;
        if (k.mv_size >= 9) { /* shorter garbage is drop_front's */
            MDB_val dk = {k.mv_size - 8, (unsigned char *)k.mv_data + 8}, rv;
            uint64_t le;
            int r2 = mdb_get(txn, m->data, &dk, &rv);
            if (r2 != 0 && r2 != MDB_NOTFOUND) {
                rc = r2;
                break;
            }
            if (r2 == MDB_NOTFOUND ||
                (rec_local_exp(&rv, &le) && (le == 0 ? UINT64_MAX : le) != get_be64(k.mv_data))) {
                if ((rc = mdb_cursor_del(cur, 0)) != 0) {
                    break;
                }
                dels++;
            }
        }
        /* After a delete, MDB_NEXT yields the entry that followed. */
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == 0 && k.mv_size <= sizeof(m->scrub_key)) {
        memcpy(m->scrub_key, k.mv_data, k.mv_size);
        m->scrub_len = k.mv_size;
    } else {
        m->scrub_len = 0;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Pages held by the trees (not the free list). */
static size_t used_pages(struct lmdb_tier *m, MDB_txn *txn)
{
    MDB_dbi dbis[4] = {m->data, m->exp, 0 /* FREE_DBI */, 1 /* MAIN_DBI */};
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        MDB_stat s;
        if (mdb_stat(txn, dbis[i], &s) == 0) {
            n += s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages;
        }
    }
    return n;
}

static size_t map_pages(struct lmdb_tier *m)
{
    MDB_envinfo info;
    mdb_env_info(m->env, &info);
    /* Another process may have opened the file with a larger map. */
    return info.me_mapsize / m->psize;
}

/*
 * Pages a write may dirty: copy-on-write of the data and expiry leaves it
 * lands in (their branches are shared by a batch), plus the overflow pages
 * of a record too big for a leaf. An estimate, used to keep each write
 * transaction well inside the room left above high_water.
 */
static size_t op_pages(const struct lmdb_tier *m, const struct wop *op)
{
    if (op->kind != W_SET) {
        return 3;
    }
    if (op->req->tags_len > 0) {
        return 3 + TC_TAGS_MAX + (op->req->value_len + m->psize - 1) / m->psize;
    }
    size_t rec = REC_FIXED + TC_ITEM_HDR_SIZE + op->req->value_len +
                 (op->req->key_len > m->raw_max ? op->req->key_len : 0);
    if (rec <= m->psize / 4) {
        return 3;
    }
    return 3 + (rec + 64 + m->psize - 1) / m->psize;
}

/*
 * Commits a write that changes nothing of ours. LMDB reuses pages freed by
 * transaction N only from N + 2 on, so after freeing room one more commit
 * makes that room usable by the next batch. The record is the format
 * marker, rewritten with the same bytes.
 */
static void advance(struct lmdb_tier *m)
{
    MDB_txn *txn;
    MDB_dbi main_dbi;
    if (mdb_txn_begin(m->env, NULL, 0, &txn) != 0) {
        return;
    }
    MDB_val k = {sizeof(FORMAT_KEY) - 1, (void *)(uintptr_t)FORMAT_KEY};
    MDB_val v = {sizeof(FORMAT_VALUE) - 1, (void *)(uintptr_t)FORMAT_VALUE};
    if (mdb_dbi_open(txn, NULL, 0, &main_dbi) != 0 || mdb_put(txn, main_dbi, &k, &v, 0) != 0) {
        mdb_txn_abort(txn);
        return;
    }
    mdb_txn_commit(txn); /* frees txn either way; a failure only delays reuse */
}

/*
 * Evicts earliest-expiry records until the trees use at most @p target
 * pages and at least @p min_records went. Small transactions, so that pages
 * freed by one are reusable a commit or two later, and smaller still when
 * even a delete meets a full map. Returns the number evicted.
 */
static uint64_t evict(struct lmdb_tier *m, size_t target, uint64_t min_records)
{
    uint64_t total = 0;
    size_t chunk = m->evict_chunk;
    while (chunk > 0) {
        MDB_txn *txn;
        if (mdb_txn_begin(m->env, NULL, 0, &txn) != 0) {
            break;
        }
        if (used_pages(m, txn) <= target && total >= min_records) {
            mdb_txn_abort(txn);
            break;
        }
        uint64_t n = 0;
        int more;
        int rc = drop_front(m, txn, UINT64_MAX, chunk, &n, &more);
        if (rc == 0) {
            rc = mdb_txn_commit(txn);
        } else {
            mdb_txn_abort(txn);
        }
        if (rc == MDB_MAP_FULL) {
            /* Pinned room first (see run_batch), then smaller deletes. */
            if (m->sync != SYNC_PERIODIC || !checkpoint_now(m)) {
                chunk /= 2;
            }
            continue;
        }
        if (rc != 0) {
            if (is_fatal(rc)) {
                mark_down(m, rc, "an eviction");
            }
            break;
        }
        total += n;
        if (!more) {
            break; /* the index is empty (a chunk of orphans still counts as progress) */
        }
    }
    if (total > 0) {
        advance(m);
    }
    STAT_ADD(m, evictions, total);
    return total;
}

/*
 * Walks up to op->budget records of tc_data from m->rw_pos, handing each
 * that verifies to op->rw_fn, and puts back what it rewrote, in this write
 * transaction: a client's write to the same key lands before or after it,
 * never lost under it. The record keeps its size, local expiry and full
 * key, so tc_exp needs nothing.
 */
static int apply_rewrite(struct lmdb_tier *m, MDB_txn *txn, struct wop *op)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, m->data, &cur);
    if (rc != 0) {
        return rc;
    }
    op->rw_fn(op->rw_arg, NULL, 0, NULL, NULL); /* a retried txn starts the step over */
    op->rw_next_len = 0;
    op->st = TC_OK;
    k.mv_size = m->rw_pos_len;
    k.mv_data = m->rw_pos;
    rc = mdb_cursor_get(cur, &k, &v, m->rw_pos_len > 0 ? MDB_SET_RANGE : MDB_FIRST);
    /* Rewrites dirty pages: at most evict_chunk of them per step, as an
     * eviction would, so that the txn fits in a nearly full map. */
    size_t rewrites = 0;
    for (size_t n = 0; rc == 0; n++) {
        if (n == op->budget || rewrites == m->evict_chunk) {
            memcpy(op->rw_next, k.mv_data, k.mv_size);
            op->rw_next_len = k.mv_size;
            op->st = TC_EAGAIN;
            break;
        }
        unsigned char key[TC_KEY_MAX], dk[KEYBUF_MAX];
        const unsigned char *kp;
        size_t klen, dlen = k.mv_size;
        struct rec r;
        if (dlen <= sizeof(dk) && record_key(m, &k, &v, &kp, &klen) && klen <= sizeof(key)) {
            memcpy(key, kp, klen);
            memcpy(dk, k.mv_data, dlen);
        } else {
            klen = SIZE_MAX;
        }
        /* Records that do not verify are the readers' to count as corrupt. */
        if (klen != SIZE_MAX && rec_decode(m, &v, dlen, key, klen, &r) == TC_OK) {
            size_t at = REC_FIXED + r.fk_len, vlen = r.hdr.value_len;
            unsigned char *copy = malloc(v.mv_size);
            if (copy == NULL) {
                rc = ENOMEM;
                break;
            }
            memcpy(copy, v.mv_data, v.mv_size);
            struct tc_item_hdr h = r.hdr;
            if (op->rw_fn(op->rw_arg, key, klen, &h, copy + at + TC_ITEM_HDR_SIZE) &&
                h.value_len == vlen &&
                tc_item_encode(&h, key, klen, copy + at + TC_ITEM_HDR_SIZE, copy + at) == TC_OK) {
                MDB_val ck = {dlen, dk}, cv = {v.mv_size, copy};
                rc = mdb_cursor_put(cur, &ck, &cv, MDB_CURRENT);
                rewrites++;
            }
            /* The copy held a record a rewrite may have unsealed in passing. */
            tc_seal_wipe(copy, v.mv_size);
            free(copy);
            if (rc != 0) {
                break;
            }
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int apply_one(struct lmdb_tier *m, MDB_txn *txn, struct wop *op)
{
    int rc;
    switch (op->kind) {
    case W_SET:
        rc = apply_set(m, txn, op->req);
        op->st = TC_OK;
        return rc;
    case W_DEL: {
        unsigned char kbuf[KEYBUF_MAX];
        MDB_val dk = dkey_of(m, op->req->key, op->req->key_len, kbuf);
        /* Its tc_exp entry goes stale and leaves with the next sweep or
         * eviction that reaches it. */
        rc = mdb_del(txn, m->data, &dk, NULL);
        op->st = rc == MDB_NOTFOUND ? TC_ENOTFOUND : TC_OK;
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    case W_CLEAR:
        rc = apply_clear(m, txn, op->req);
        op->st = TC_OK;
        return rc;
    case W_SWEEP: {
        /* Bounded by the eviction chunk too: a sweep must fit in a nearly
         * full map. Doing less than the budget just means TC_EAGAIN. */
        int more;
        size_t budget = op->budget < m->evict_chunk ? op->budget : m->evict_chunk;
        op->removed = 0;
        rc = drop_front(m, txn, op->now_ms, budget, &op->removed, &more);
        op->st = more ? TC_EAGAIN : TC_OK;
        return rc;
    }
    case W_REWRITE:
        return apply_rewrite(m, txn, op);
    }
    return EINVAL;
}

/* One write txn over ops[0..n) expected to dirty @p need pages; 0 or the
 * LMDB error that aborted it. Makes room first when the trees plus this
 * batch would pass high_water. */
static int try_batch(struct lmdb_tier *m, struct wop **ops, size_t n, size_t need)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc != 0) {
        return rc;
    }
    size_t max = map_pages(m);
    size_t high = (size_t)(m->high_water * (double)max);
    if (used_pages(m, txn) + need > high) {
        mdb_txn_abort(txn);
        size_t low = (size_t)(m->low_water * (double)max);
        evict(m, need < high && high - need < low ? high - need : low, 1);
        if (is_down(m)) {
            return MDB_CORRUPTED; /* the eviction met damage: apply nothing */
        }
        if ((rc = mdb_txn_begin(m->env, NULL, 0, &txn)) != 0) {
            return rc;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = apply_one(m, txn, ops[i])) != 0) {
            mdb_txn_abort(txn);
            return rc;
        }
    }
    /* In the batch's own transaction: no extra commit (or fsync). At most
     * n deletes, within the 3 pages op_pages allows a set, which itself
     * dirties two leaves. */
    if ((rc = scrub_index(m, txn, n)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

static size_t batch_pages(const struct lmdb_tier *m, struct wop **ops, size_t n)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        need += op_pages(m, ops[i]);
    }
    return need;
}

/*
 * Applies a batch. On MDB_MAP_FULL (freed pages still pinned by readers, or
 * no contiguous run for a large value) it evicts harder and retries, then
 * splits the batch, so that one op fails (TC_ENOMEM) only when nothing is
 * left to evict.
 */
static void run_batch(struct lmdb_tier *m, struct wop **ops, size_t n)
{
    size_t need = batch_pages(m, ops, n);
    int rc = 0;
    for (int attempt = 0; attempt < MAX_FULL_TRIES && !is_down(m); attempt++) {
        rc = try_batch(m, ops, n, need);
        if (is_fatal(rc)) {
            mark_down(m, rc, "a commit");
        }
        if (rc != MDB_MAP_FULL) {
            break;
        }
        STAT_ADD(m, map_full_retries, 1);
        /* With sync=periodic the room may only be pinned (by the pin, or
         * by the last evictions' frees, which the pin holds too): move the
         * pin on before splitting or evicting more. */
        if (m->sync == SYNC_PERIODIC && checkpoint_now(m)) {
            continue; /* the room the pin held is free now: the same batch again */
        }
        /* Freed pages may be pinned: by a dead process's reader slot (clear
         * it now, not at the next periodic check), or by a reader inside a
         * get (or another process's long read), so later tries wait a
         * little instead of evicting everything at once. */
        int dead = 0;
        mdb_reader_check(m->env, &dead);
        STAT_ADD(m, stale_readers_cleared, (uint64_t)dead);
        if (attempt > 0) {
            struct timespec pause = {0, 2000000};
            nanosleep(&pause, NULL);
        }
        if (n > 1) {
            break; /* split first: half a batch needs half the room */
        }
        /* Harder each time: a lower target and a growing minimum. */
        double frac = m->low_water - 0.1 * (attempt + 1);
        size_t target = frac > 0 ? (size_t)(frac * (double)map_pages(m)) : 0;
        if (evict(m, target, (uint64_t)m->evict_chunk << (attempt < 10 ? attempt : 10)) == 0) {
            /* Nothing left to evict, but pages freed by the last commits
             * may still be waiting to become reusable: age the free list
             * and try again until the tries run out. */
            advance(m);
        }
    }
    if (is_down(m)) {
        for (size_t i = 0; i < n; i++) {
            ops[i]->st = TC_EUNAVAIL;
        }
        return;
    }
    if (rc == 0) {
        STAT_ADD(m, commit_batches, 1);
        STAT_ADD(m, commit_ops, n);
        atomic_store_explicit(&m->last_error, TC_OK, memory_order_relaxed);
        return;
    }
    if (n > 1) {
        run_batch(m, ops, n / 2);
        run_batch(m, ops + n / 2, n - n / 2);
        return;
    }
    STAT_ADD(m, commit_errors, 1);
    enum tc_status st = map_rc(rc);
    if (st == TC_ENOTFOUND) {
        st = TC_EIO;
    }
    atomic_store_explicit(&m->last_error, st, memory_order_relaxed);
    ops[0]->st = st;
}

/* Hands finished ops back. Called with m->lock held. */
static void complete_locked(struct lmdb_tier *m, struct wop **ops, size_t n)
{
    int wake_sync = 0;
    for (size_t i = 0; i < n; i++) {
        struct wop *op = ops[i];
        struct lmdb_ctx *c = op->ctx;
        if (c == NULL) {
            op->done = 1;
            wake_sync = 1;
            continue;
        }
        op->next = NULL;
        if (c->done_tail != NULL) {
            c->done_tail->next = op;
        } else {
            c->done_head = op;
        }
        c->done_tail = op;
        c->at_writer--;
        if (c->at_writer == 0) {
            wake_sync = 1; /* a disposing ctx may wait for this */
        }
        if (!c->notified) {
            /* Under the lock: ctx_dispose cannot close the pipe meanwhile.
             * A full pipe already holds a wakeup, so EAGAIN is harmless. */
            c->notified = 1;
            char b = 1;
            ssize_t w = write(c->pipe_wr, &b, 1);
            (void)w;
        }
    }
    if (wake_sync) {
        pthread_cond_broadcast(&m->done);
    }
}

static void *writer_main(void *arg)
{
    struct lmdb_tier *m = arg;
    size_t cap = m->batch_max;
    struct wop **ops = m->batch;
    uint64_t next_check = mono_ms() + READER_CHECK_S * 1000u;

    pthread_mutex_lock(&m->lock);
    for (;;) {
        if (m->q_head == NULL) {
            if (m->stopping) {
                break;
            }
            uint64_t now = mono_ms();
            uint64_t until = next_check;
            if (now < until) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t ns = (uint64_t)ts.tv_nsec + (until - now) * 1000000u;
                ts.tv_sec += (time_t)(ns / 1000000000u);
                ts.tv_nsec = (long)(ns % 1000000000u);
                pthread_cond_timedwait(&m->wake, &m->lock, &ts);
            }
        }
        uint64_t now = mono_ms();
        if (now >= next_check) {
            pthread_mutex_unlock(&m->lock);
            int dead = 0;
            mdb_reader_check(m->env, &dead);
            STAT_ADD(m, stale_readers_cleared, (uint64_t)dead);
            next_check = now + READER_CHECK_S * 1000u;
            pthread_mutex_lock(&m->lock);
        }
        size_t n = 0, pages = 0;
        while (m->q_head != NULL && n < cap) {
            /* A transaction stays well inside the room above high_water
             * (it matters for small maps only). */
            size_t p = op_pages(m, m->q_head);
            if (n > 0 && pages + p > m->txn_pages) {
                break;
            }
            pages += p;
            ops[n++] = m->q_head;
            m->q_head = m->q_head->next;
            m->q_len--;
        }
        if (m->q_head == NULL) {
            m->q_tail = NULL;
        }
        if (n == 0) {
            continue;
        }
        pthread_mutex_unlock(&m->lock);
        if (m->sync == SYNC_PERIODIC) {
            checkpoint_if_grown(m);
        }
        run_batch(m, ops, n);
        pthread_mutex_lock(&m->lock);
        m->commits++;
        complete_locked(m, ops, n);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

static enum tc_status checkpoint(struct lmdb_tier *m, char *why, size_t wl);

/* CLOCK_MONOTONIC deadline @p ms from now, for the conds made with it. */
static struct timespec deadline_in(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + ms * 1000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

/*
 * sync=periodic: a checkpoint (see "Durability") every sync_interval_ms,
 * counted from the start of the last one so that the pin, which bounds what
 * a host crash loses, moves on at that rate however long a flush takes; and
 * one at once when the writer asks (a full map). A checkpoint with nothing
 * committed since the last one is free. Beside the writer: its only wait on
 * the writer is LMDB's writer lock, held for two preads.
 */
static void *syncer_main(void *arg)
{
    struct lmdb_tier *m = arg;
    pthread_mutex_lock(&m->lock);
    uint64_t due = mono_ms() + m->sync_interval_ms;
    while (!m->stopping) {
        if (m->ckpt_done == m->ckpt_req && mono_ms() < due) {
            struct timespec ts = deadline_in(due - mono_ms());
            pthread_cond_timedwait(&m->sync_wake, &m->lock, &ts);
            continue;
        }
        uint64_t req = m->ckpt_req;
        due = mono_ms() + m->sync_interval_ms;
        pthread_mutex_unlock(&m->lock);
        char why[sizeof(m->sync_why)] = "";
        enum tc_status st = checkpoint(m, why, sizeof(why));
        pthread_mutex_lock(&m->lock);
        if (st != TC_OK && st != TC_EUNAVAIL) {
            STAT_ADD(m, sync_errors, 1);
            snprintf(m->sync_why, sizeof(m->sync_why), "%s", why);
        } else if (st == TC_OK) {
            m->sync_why[0] = '\0';
        }
        m->ckpt_done = req;
        pthread_cond_broadcast(&m->ckpt_cv);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/*
 * sync=periodic, writer thread, before a batch: the pin keeps every page
 * freed since the last checkpoint from being reused, so the file grows by
 * what the writers copy until the next one moves it on (a few hundred MB a
 * second under a load of small sets). Once it has grown by half the band
 * between high and low water since the last checkpoint began, ask for the
 * next one now (without waiting): the writeback is the same volume either
 * way (every page the pin kept is flushed once), but the file stays within
 * about that much of what the trees need.
 */
static void checkpoint_if_grown(struct lmdb_tier *m)
{
    MDB_envinfo info;
    if (mdb_env_info(m->env, &info) != 0 ||
        (uint64_t)info.me_last_pgno <=
            atomic_load_explicit(&m->grow_mark, memory_order_relaxed) + m->txn_pages) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    if (m->ckpt_req == m->ckpt_done) {
        m->ckpt_req++;
        pthread_cond_signal(&m->sync_wake);
    }
    pthread_mutex_unlock(&m->lock);
}

/*
 * sync=periodic, writer thread, on MDB_MAP_FULL: the pages freed since the
 * oldest pinned snapshot cannot be reused until the syncer moves the pin on,
 * so have it do that now (and wait, at most CKPT_WAIT_MS) rather than evict
 * records for room that is only pinned. 1 when a checkpoint was taken since
 * the call, 0 when there is none to gain (the pin is at the last commits
 * already) or it did not come in time.
 */
static int checkpoint_now(struct lmdb_tier *m)
{
    MDB_envinfo info;
    if (m->sync != SYNC_PERIODIC || mdb_env_info(m->env, &info) != 0) {
        return 0;
    }
    pthread_mutex_lock(&m->lock);
    /* Pages freed by commits before the pin are reusable already. */
    if (m->pin_txnid + 1 >= (uint64_t)info.me_last_txnid) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    uint64_t want = ++m->ckpt_req;
    pthread_cond_signal(&m->sync_wake);
    struct timespec ts = deadline_in(CKPT_WAIT_MS);
    while (!m->stopping && m->ckpt_done < want) {
        if (pthread_cond_timedwait(&m->ckpt_cv, &m->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    int ok = m->ckpt_done >= want && m->sync_why[0] == '\0';
    pthread_mutex_unlock(&m->lock);
    return ok;
}

/* Queues op; the writer owns it until it comes back through completion. */
static int enqueue(struct lmdb_tier *m, struct wop *op)
{
    op->next = NULL;
    pthread_mutex_lock(&m->lock);
    if (op->ctx != NULL) {
        /* Loops that outrun the disk get TC_EAGAIN instead of growing the
         * queue without bound; synchronous callers wait, one op each. */
        if (m->q_len >= MAX_QUEUE) {
            pthread_mutex_unlock(&m->lock);
            return -1;
        }
        op->ctx->at_writer++;
    }
    m->q_len++;
    if (m->q_tail != NULL) {
        m->q_tail->next = op;
    } else {
        m->q_head = op;
    }
    m->q_tail = op;
    pthread_cond_signal(&m->wake);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Runs op through the writer and waits for it (synchronous callers). */
static enum tc_status run_sync(struct lmdb_tier *m, struct wop *op)
{
    op->ctx = NULL;
    op->done = 0;
    (void)enqueue(m, op); /* never refused: op->ctx is NULL */
    pthread_mutex_lock(&m->lock);
    while (!op->done) {
        pthread_cond_wait(&m->done, &m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return op->st;
}

/* ---- async completion (ctx thread) ---------------------------------------- */

static void ctx_on_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct lmdb_ctx *c = arg;
    struct lmdb_tier *m = (struct lmdb_tier *)c->base.tier;
    char buf[64];
    (void)what;
    /* Drain first, then take the list: a wakeup written after the drain
     * belongs to ops pushed after we took it, so none is lost. */
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    pthread_mutex_lock(&m->lock);
    c->notified = 0;
    struct wop *op = c->done_head;
    c->done_head = c->done_tail = NULL;
    pthread_mutex_unlock(&m->lock);
    while (op != NULL) {
        struct wop *next = op->next;
        struct tc_tier_req *req = op->req;
        enum tc_status st = op->st;
        op->next = c->free_wops;
        c->free_wops = op;
        tc_tier_complete(req, st);
        op = next;
    }
}

/* Starts a write: async for a ctx with an event_base, else waits. */
static enum tc_status submit(struct tc_tier_ctx *cb, struct tc_tier_req *req, enum wop_kind kind)
{
    struct lmdb_ctx *c = (struct lmdb_ctx *)cb;
    struct lmdb_tier *m = (struct lmdb_tier *)cb->tier;
    if (is_down(m)) {
        req->status = TC_EUNAVAIL;
        return TC_EUNAVAIL;
    }
    if (cb->base == NULL) {
        struct wop op = {.req = req, .kind = kind};
        enum tc_status st = run_sync(m, &op);
        req->status = st;
        return st;
    }
    struct wop *op = c->free_wops;
    if (op != NULL) {
        c->free_wops = op->next;
    } else if ((op = calloc(1, sizeof(*op))) == NULL) {
        req->status = TC_ENOMEM;
        return TC_ENOMEM;
    }
    memset(op, 0, sizeof(*op));
    op->ctx = c;
    op->req = req;
    op->kind = kind;
    if (enqueue(m, op) != 0) {
        STAT_ADD(m, queue_full, 1);
        op->next = c->free_wops;
        c->free_wops = op;
        req->status = TC_EAGAIN;
        return TC_EAGAIN;
    }
    return TC_EINPROGRESS;
}

/* ---- tier ops ------------------------------------------------------------ */

static enum tc_status make_dir(const char *path, char *err, size_t errlen)
{
    char *p = strdup(path);
    if (p == NULL) {
        return TC_ENOMEM;
    }
    /* mkdir -p: each prefix ending before a '/', then the whole path. */
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0750) != 0 && errno != EEXIST) {
                tc_tier_errf(err, errlen, "lmdb://%s: cannot create directory '%s': %s", path, p,
                             strerror(errno));
                free(p);
                return TC_EINVAL;
            }
            *s = c;
            if (c == '\0') {
                break;
            }
        }
    }
    free(p);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        tc_tier_errf(err, errlen, "lmdb://%s: '%s' is not a directory", path, path);
        return TC_EINVAL;
    }
    if (access(path, R_OK | W_OK | X_OK) != 0) {
        tc_tier_errf(err, errlen, "lmdb://%s: directory '%s' is not writable: %s", path, path,
                     strerror(errno));
        return TC_EINVAL;
    }
    return TC_OK;
}

/* ---- open: checks, and moving a damaged environment aside ------------------ */

/* The descriptor lock_exclusive left open; only with no environment open. */
static void unlock_files(struct lmdb_tier *m)
{
    if (m->lock_fd >= 0) {
        close(m->lock_fd);
        m->lock_fd = -1;
    }
}

/* LMDB answers at open that mean the files are damaged, rather than
 * unreadable, locked, or written by another LMDB version. */
static int is_damage(int rc)
{
    return rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
           rc == MDB_INCOMPATIBLE || rc == MDB_PANIC;
}

/*
 * Takes, without waiting, the lock LMDB's first opener takes: a write lock
 * on byte 0 of lock.mdb, where every process that has the environment open
 * holds a read lock. Returns the lock file's descriptor (closing it releases
 * the lock; an opener that comes meanwhile waits for that inside
 * mdb_env_open), -1 with *holder set (0 if unknown) when another process has
 * the environment open, or -2 when it cannot tell (lock.mdb cannot be opened
 * or locked). POSIX record locks belong to the process, and closing any
 * descriptor of the file drops them all, so this runs only while this tier
 * has no environment open (and one process must not open PATH twice).
 *
 * Whoever goes on to open the environment keeps the descriptor open until
 * after mdb_env_close (m->lock_fd): mdb_env_open's own write lock on byte 0
 * then succeeds (the process holds it already), so LMDB initialises
 * lock.mdb as the first opener and only then shares the lock. Closing the
 * descriptor before mdb_env_open would let a process waiting inside its
 * own mdb_env_open take the shared lock of a lock.mdb nobody initialised
 * (a new one is empty: mdb_env_open fails with EINVAL).
 */
static int lock_exclusive(const char *path, long *holder)
{
    char *lp = path_join(path, "lock.mdb");
    int fd = lp != NULL ? open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0640) : -1;
    free(lp);
    if (fd < 0) {
        return -2;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    int rc;
    while ((rc = fcntl(fd, F_SETLK, &fl)) != 0 && errno == EINTR) {
    }
    if (rc == 0) {
        return fd;
    }
    int e = errno;
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    *holder = fcntl(fd, F_GETLK, &q) == 0 && q.l_type != F_UNLCK ? (long)q.l_pid : 0;
    close(fd);
    return e == EAGAIN || e == EACCES ? -1 : -2;
}

/*
 * The meta pages of data.mdb, checked before mdb_env_open reads them (LMDB
 * checks only their magic and version before it trusts the rest; see
 * "Damage" at the top; the layout is tiers/lmdb_check.c's), while this
 * process holds the environment
 * exclusively. TC_OK; TC_ECORRUPT with the reason in why; another status
 * with a message in err.
 */
static enum tc_status check_file(struct lmdb_tier *m, char *why, size_t wl, char *err,
                                 size_t errlen)
{
    if (sizeof(size_t) != 8) {
        return TC_OK; /* the layout read here is that of 64-bit hosts */
    }
    char *dp = path_join(m->path, "data.mdb");
    int fd = dp != NULL ? open(dp, O_RDONLY | O_CLOEXEC) : -1;
    int e = errno;
    free(dp);
    if (fd < 0) {
        if (e == ENOENT) {
            return TC_OK; /* a new environment */
        }
        tc_tier_errf(err, errlen, "lmdb://%s: cannot open data.mdb: %s", m->path, strerror(e));
        return TC_EIO;
    }
    enum tc_status st = TC_OK;
    struct stat sb;
    unsigned char b[2][TC_LMDB_META_SIZE];
    struct tc_lmdb_meta mv[2];
    const char *bad = NULL;
    if (fstat(fd, &sb) != 0) {
        tc_tier_errf(err, errlen, "lmdb://%s: fstat(data.mdb): %s", m->path, strerror(errno));
        close(fd);
        return TC_EIO;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size == 0) {
        close(fd); /* LMDB makes an empty file a new environment */
        return TC_OK;
    }
    if (pread(fd, b[0], TC_LMDB_META_SIZE, 0) != (ssize_t)TC_LMDB_META_SIZE) {
        snprintf(why, wl, "data.mdb is only %llu bytes", (unsigned long long)size);
        st = TC_ECORRUPT;
    } else if ((bad = tc_lmdb_meta_decode(b[0], &mv[0])) != NULL) {
        snprintf(why, wl, "meta page 0: %s", bad);
        st = TC_ECORRUPT;
    } else if (pread(fd, b[1], TC_LMDB_META_SIZE, (off_t)mv[0].psize) !=
               (ssize_t)TC_LMDB_META_SIZE) {
        snprintf(why, wl, "data.mdb is only %llu bytes", (unsigned long long)size);
        st = TC_ECORRUPT;
    } else if ((bad = tc_lmdb_meta_decode(b[1], &mv[1])) != NULL) {
        snprintf(why, wl, "meta page 1: %s", bad);
        st = TC_ECORRUPT;
    } else if (mv[0].psize != mv[1].psize) {
        snprintf(why, wl, "the meta pages disagree on the page size");
        st = TC_ECORRUPT;
    }
    close(fd);
    return st;
}

/* ---- the durable snapshot (see "Durability" at the top) --------------------- */

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "2024-05-01T12:00:00.250Z" for people: wall-clock, as move_aside's names. */
static void utc_ms(uint64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000u);
    struct tm tm;
    char s[32];
    if (gmtime_r(&t, &tm) == NULL || strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(buf, cap, "%llu ms after the epoch", (unsigned long long)ms);
        return;
    }
    snprintf(buf, cap, "%s.%03uZ", s, (unsigned)(ms % 1000u));
}

/* Appends to the news open() hands its caller (logged at crit). */
__attribute__((format(printf, 2, 3))) static void add_news(struct lmdb_tier *m, const char *fmt,
                                                           ...)
{
    size_t len = strlen(m->news);
    if (len > 0 && len + 2 < sizeof(m->news)) {
        m->news[len++] = ';';
        m->news[len++] = ' ';
        m->news[len] = '\0';
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->news + len, sizeof(m->news) - len, fmt, ap);
    va_end(ap);
}

/* Meta page @p slot of the data file open as @p fd, its first TC_LMDB_META_SIZE
 * bytes into @p b: NULL when sound, else what is wrong with it. */
static const char *meta_at(int fd, uint64_t psize, int slot, unsigned char *b,
                           struct tc_lmdb_meta *mv)
{
    if (pread(fd, b, TC_LMDB_META_SIZE, (off_t)(psize * (uint64_t)slot)) !=
        (ssize_t)TC_LMDB_META_SIZE) {
        return "cannot be read";
    }
    return tc_lmdb_meta_decode(b, mv);
}

/* The fields every record of this process carries. */
static void durable_base(const struct lmdb_tier *m, struct tc_lmdb_durable *d)
{
    memset(d, 0, sizeof(*d));
    d->mode = (uint32_t)m->sync;
    d->interval_ms = m->sync_interval_ms;
    d->pinned_ms = wall_ms();
    memcpy(d->boot_id, m->boot_id, sizeof(d->boot_id));
}

/*
 * Puts the meta pages of data.mdb (open read-write as @p fd) back to the
 * snapshot @p rec names: its meta page into its slot, and into the other
 * the same with that slot's page number and the txnid before it (LMDB
 * reads both and uses the higher). TC_OK with *done = 1 when it rewrote
 * them, 0 when they named the snapshot already; TC_ECORRUPT with why when
 * the record cannot be this file's (nothing written); TC_EIO with why.
 */
static enum tc_status restore_snapshot(const struct tc_lmdb_durable *rec, int fd, int *done,
                                       char *why, size_t wl)
{
    struct tc_lmdb_meta sv, dv[2];
    unsigned char disk[2][TC_LMDB_META_SIZE];
    *done = 0;
    const char *bad = rec->meta_len != TC_LMDB_META_SIZE ? "its meta page has another length"
                                                         : tc_lmdb_meta_decode(rec->meta, &sv);
    if (bad == NULL &&
        (sv.txnid != rec->txnid || sv.psize != rec->psize || sv.pgno != (rec->txnid & 1))) {
        bad = "its meta page is not the snapshot's";
    }
    if (bad != NULL) {
        snprintf(why, wl, "%s", bad);
        return TC_ECORRUPT;
    }
    int slot = (int)(rec->txnid & 1), ok[2], any = 0;
    uint64_t newest = 0;
    for (int i = 0; i < 2; i++) {
        ok[i] = meta_at(fd, sv.psize, i, disk[i], &dv[i]) == NULL && dv[i].psize == sv.psize;
        if (ok[i] && (!any || dv[i].txnid > newest)) {
            newest = dv[i].txnid;
            any = 1;
        }
    }
    /* The flush made meta S durable, and later commits only raise the txnid
     * in its slot: a file behind S is another file, or one a disk lost. */
    if (any && newest < rec->txnid) {
        snprintf(why, wl, "data.mdb is at transaction %llu, before the snapshot's %llu",
                 (unsigned long long)newest, (unsigned long long)rec->txnid);
        return TC_ECORRUPT;
    }
    if (ok[0] && ok[1] && dv[!slot].txnid < rec->txnid &&
        memcmp(disk[slot], rec->meta, TC_LMDB_META_SIZE) == 0) {
        return TC_OK;
    }
    unsigned char other[TC_LMDB_META_SIZE];
    uint64_t pg = (uint64_t)!slot, t = rec->txnid > 0 ? rec->txnid - 1 : 0;
    memcpy(other, rec->meta, TC_LMDB_META_SIZE);
    memcpy(other, &pg, sizeof(pg)); /* mp_pgno, at the start of the page header */
    memcpy(other + TC_LMDB_META_TXNID_OFF, &t, sizeof(t));
    const char *what = NULL;
    if (pwrite(fd, rec->meta, TC_LMDB_META_SIZE, (off_t)(sv.psize * (uint64_t)slot)) !=
            (ssize_t)TC_LMDB_META_SIZE ||
        pwrite(fd, other, TC_LMDB_META_SIZE, (off_t)(sv.psize * (uint64_t)!slot)) !=
            (ssize_t)TC_LMDB_META_SIZE) {
        what = "pwrite";
    } else if (fdatasync(fd) != 0) {
        what = "fdatasync";
    }
    if (what != NULL) {
        snprintf(why, wl, "%s(data.mdb): %s", what, strerror(errno));
        return TC_EIO;
    }
    *done = 1;
    return TC_OK;
}

/*
 * At open, alone with the files (lock_exclusive held), before check_file:
 * what tiercache-durable says about the last run. After a host crash
 * (another boot, not closed cleanly): with sync=periodic the meta pages go
 * back to its snapshot; with sync=none the environment is damaged
 * (TC_ECORRUPT with why: moved aside). A record that cannot be used
 * restores nothing and goes into the news. TC_OK, TC_ECORRUPT, or an error
 * with err.
 */
static enum tc_status durable_recover(struct lmdb_tier *m, char *why, size_t wl, char *err,
                                      size_t errlen)
{
    char *dp = path_join(m->path, "data.mdb");
    int fd = dp != NULL ? open(dp, O_RDWR | O_CLOEXEC) : -1;
    int e = errno;
    free(dp);
    if (fd < 0) {
        if (e == ENOENT) {
            return TC_OK; /* a new environment: nothing to recover */
        }
        tc_tier_errf(err, errlen, "lmdb://%s: cannot open data.mdb: %s", m->path, strerror(e));
        return TC_EIO;
    }
    struct stat sb;
    struct tc_lmdb_durable rec;
    char rw[200];
    enum tc_status st = TC_OK;
    if (fstat(fd, &sb) != 0 || sb.st_size == 0) {
        goto out; /* fstat failing is check_file's to report */
    }
    enum tc_status ls = tc_lmdb_durable_load(m->path, &rec, rw, sizeof(rw));
    if (ls == TC_ENOTFOUND) {
        goto out; /* written before this record existed, or by sync=always only */
    }
    if (ls != TC_OK) {
        add_news(m, TC_LMDB_DURABLE_FILE " is unusable (%s): ignored, nothing restored", rw);
        goto out;
    }
    if ((rec.flags & TC_LMDB_DURABLE_CLEAN) ||
        (m->boot_id[0] != '\0' && strcmp(rec.boot_id, m->boot_id) == 0)) {
        goto out; /* closed cleanly, or only a process died: the page cache has it all */
    }
    if (rec.inode != (uint64_t)sb.st_ino) {
        add_news(m,
                 "the host went down with the environment open, but " TC_LMDB_DURABLE_FILE
                 " belongs to another data.mdb (inode %llu, this one is %llu): ignored, "
                 "nothing restored",
                 (unsigned long long)rec.inode, (unsigned long long)sb.st_ino);
        goto out;
    }
    if (rec.mode == SYNC_NONE) {
        snprintf(why, wl,
                 "the host went down while it was open with sync=none, so pages it had not "
                 "flushed may hold older values");
        st = TC_ECORRUPT;
    } else if (rec.mode == SYNC_PERIODIC && (rec.flags & TC_LMDB_DURABLE_SNAPSHOT)) {
        int done = 0;
        st = restore_snapshot(&rec, fd, &done, rw, sizeof(rw));
        if (st == TC_ECORRUPT) {
            add_news(m,
                     "the host went down with the environment open, but " TC_LMDB_DURABLE_FILE
                     " does not fit data.mdb (%s): nothing restored",
                     rw);
            st = TC_OK;
        } else if (st != TC_OK) {
            tc_tier_errf(err, errlen, "lmdb://%s: restoring the durable snapshot failed: %s",
                         m->path, rw);
        } else if (done) {
            char when[48];
            utc_ms(rec.pinned_ms, when, sizeof(when));
            add_news(m,
                     "the host went down with the environment open: restored to the durable "
                     "snapshot of %s (transaction %llu), losing at most sync_interval_ms "
                     "(%llu ms, plus one flush) of writes before the crash",
                     when, (unsigned long long)rec.txnid, (unsigned long long)rec.interval_ms);
        }
    }
out:
    close(fd);
    return st;
}

/*
 * Still alone with the files, once they passed check_file (or after a move
 * aside): the record for the run that starts, written before LMDB opens, so
 * that it is this boot's, names this data.mdb and carries this mode before
 * any other process can open the environment. With sync=periodic it names
 * the newest meta page, flushed first: the process that wrote it may have
 * died with its commits in the page cache only. Nothing commits before a
 * checkpoint replaces it (see "Durability"). TC_OK, or an error with err.
 */
static enum tc_status durable_reset(struct lmdb_tier *m, char *err, size_t errlen)
{
    struct tc_lmdb_durable d;
    durable_base(m, &d);
    char *dp = path_join(m->path, "data.mdb");
    int fd = dp != NULL ? open(dp, O_RDWR | O_CLOEXEC) : -1;
    int e = errno;
    free(dp);
    const char *what = NULL;
    struct stat sb;
    if (fd < 0 && e != ENOENT) {
        what = "open(data.mdb)";
    } else if (fd >= 0 && fstat(fd, &sb) != 0) {
        what = "fstat(data.mdb)";
        e = errno;
    } else if (fd >= 0) {
        d.inode = (uint64_t)sb.st_ino;
        if (sb.st_size > 0 && m->sync == SYNC_PERIODIC) {
            if (fdatasync(fd) != 0) {
                what = "fdatasync(data.mdb)";
                e = errno;
            } else {
                unsigned char b[TC_LMDB_META_SIZE];
                struct tc_lmdb_meta mv;
                uint64_t ps = 0;
                /* check_file found both sound; the page size is meta 0's. */
                if (meta_at(fd, 0, 0, b, &mv) == NULL) {
                    ps = mv.psize;
                }
                for (int i = 0; ps > 0 && i < 2; i++) {
                    if (meta_at(fd, ps, i, b, &mv) == NULL &&
                        (!(d.flags & TC_LMDB_DURABLE_SNAPSHOT) || mv.txnid > d.txnid)) {
                        d.flags = TC_LMDB_DURABLE_SNAPSHOT;
                        d.txnid = mv.txnid;
                        d.psize = (uint32_t)ps;
                        d.meta_len = TC_LMDB_META_SIZE;
                        memcpy(d.meta, b, TC_LMDB_META_SIZE);
                    }
                }
            }
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    if (what != NULL) {
        tc_tier_errf(err, errlen, "lmdb://%s: %s: %s", m->path, what, strerror(e));
        return TC_EIO;
    }
    char rw[200];
    int lk = tc_lmdb_durable_lock(m->path);
    enum tc_status st = tc_lmdb_durable_store(m->path, &d, rw, sizeof(rw));
    tc_lmdb_durable_unlock(lk);
    if (st != TC_OK) {
        tc_tier_errf(err, errlen, "lmdb://%s: writing " TC_LMDB_DURABLE_FILE ": %s", m->path, rw);
    }
    return st;
}

/*
 * When another process has the environment open: it must be in the same
 * sync mode (see "Durability": several processes). TC_OK, or TC_EINVAL
 * with err.
 */
static enum tc_status durable_check_mode(struct lmdb_tier *m, char *err, size_t errlen)
{
    struct tc_lmdb_durable rec;
    char rw[200];
    /* A clean record is one a closing process wrote just now; no record,
     * or an unusable one, was not written by a tiercache that checks. */
    if (tc_lmdb_durable_load(m->path, &rec, rw, sizeof(rw)) != TC_OK ||
        (rec.flags & TC_LMDB_DURABLE_CLEAN) || rec.mode == (uint32_t)m->sync) {
        return TC_OK;
    }
    tc_tier_errf(err, errlen,
                 "lmdb://%s: another process has the environment open with sync=%s; every "
                 "process sharing it must use the same sync mode (this one has sync=%s)",
                 m->path, sync_names[rec.mode], sync_names[m->sync]);
    return TC_EINVAL;
}

static void unpin(struct lmdb_tier *m, int i)
{
    if (m->pin_live[i]) {
        mdb_txn_reset(m->pin[i]); /* keeps the reader slot for the next pin */
        m->pin_live[i] = 0;
    }
}

/* Before mdb_env_close: the pins are read transactions. */
static void pins_release(struct lmdb_tier *m)
{
    for (int i = 0; i < 2; i++) {
        if (m->pin[i] != NULL) {
            mdb_txn_abort(m->pin[i]);
            m->pin[i] = NULL;
        }
        m->pin_live[i] = 0;
    }
    m->pin_cur = -1;
}

/*
 * One checkpoint (sync=periodic; see "Durability"): pins the last committed
 * snapshot S, flushes, makes the record name S (unless it names a later
 * one already), then releases the previous pin. On any failure the previous
 * pin stays and the new one goes: the record names nothing unpinned. The
 * syncer thread, or open() before the threads start. TC_OK; TC_EUNAVAIL
 * when the tier is down; another status with why.
 */
static enum tc_status checkpoint(struct lmdb_tier *m, char *why, size_t wl)
{
    if (is_down(m)) {
        return TC_EUNAVAIL; /* never touch a damaged map again */
    }
    int cur = m->pin_cur, nxt = cur == 0 ? 1 : 0;
    MDB_envinfo info;
    /* pin_txnid is written by this thread only (under lock, for the writer). */
    if (cur >= 0 && mdb_env_info(m->env, &info) == 0 &&
        (uint64_t)info.me_last_txnid == m->pin_txnid) {
        return TC_OK; /* nothing committed since: the record stands */
    }
    /* checkpoint_if_grown measures from here (the first, in open, too). */
    if (mdb_env_info(m->env, &info) == 0) {
        atomic_store_explicit(&m->grow_mark, (uint64_t)info.me_last_pgno, memory_order_relaxed);
    }
    struct tc_lmdb_durable d;
    durable_base(m, &d); /* its time: no later than the pin */
    MDB_txn *w;
    int rc = mdb_txn_begin(m->env, NULL, 0, &w);
    if (rc != 0) {
        if (is_fatal(rc)) {
            mark_down(m, rc, "a checkpoint");
        }
        snprintf(why, wl, "a write transaction to pin the snapshot: %s", mdb_strerror(rc));
        return TC_EIO;
    }
    /* LMDB's writer lock is held: no process commits until w ends, so the
     * last committed transaction is w's id - 1, the read transaction below
     * pins exactly it, and its meta page stays as it is while it is read. */
    uint64_t s = (uint64_t)mdb_txn_id(w) - 1;
    rc = m->pin[nxt] == NULL ? mdb_txn_begin(m->env, NULL, MDB_RDONLY, &m->pin[nxt])
                             : mdb_txn_renew(m->pin[nxt]);
    const char *bad = NULL;
    mdb_filehandle_t fd;
    struct stat sb;
    if (rc == 0) {
        struct tc_lmdb_meta mv;
        m->pin_live[nxt] = 1;
        if ((uint64_t)mdb_txn_id(m->pin[nxt]) != s) {
            bad = "the read transaction is not at the last commit";
        } else if (mdb_env_get_fd(m->env, &fd) != 0 || fstat(fd, &sb) != 0) {
            bad = "data.mdb cannot be read";
        } else if ((bad = meta_at(fd, m->psize, (int)(s & 1), d.meta, &mv)) == NULL &&
                   mv.txnid != s) {
            bad = "it names another transaction";
        }
    }
    mdb_txn_abort(w);
    if (rc != 0 || bad != NULL) {
        if (rc == 0) {
            unpin(m, nxt);
            snprintf(why, wl, "the snapshot's meta page: %s", bad);
        } else {
            if (is_fatal(rc)) {
                mark_down(m, rc, "a checkpoint");
            }
            snprintf(why, wl, "a read transaction to pin the snapshot: %s", mdb_strerror(rc));
        }
        return TC_EIO;
    }
    /* Every page of S on the disk: from here on, only the meta pages can
     * name anything that is not. */
    if ((rc = mdb_env_sync(m->env, 1)) != 0) {
        unpin(m, nxt);
        snprintf(why, wl, "mdb_env_sync: %s", mdb_strerror(rc));
        return TC_EIO;
    }
    d.flags = TC_LMDB_DURABLE_SNAPSHOT;
    d.psize = (uint32_t)m->psize;
    d.txnid = s;
    d.inode = (uint64_t)sb.st_ino;
    d.meta_len = TC_LMDB_META_SIZE;
    struct tc_lmdb_durable on_disk;
    char rw[200];
    int lk = tc_lmdb_durable_lock(m->path);
    if (lk < 0) {
        /* Unlocked, another process could put an older snapshot back over
         * a newer one that only its writer's pin covers. */
        unpin(m, nxt);
        snprintf(why, wl, "locking %.150s with flock failed", m->path);
        return TC_EIO;
    }
    /* Only ever a later snapshot: a process whose pin is not newer than
     * the record's keeps the record, and its pin covers it. */
    int later = tc_lmdb_durable_load(m->path, &on_disk, rw, sizeof(rw)) == TC_OK &&
                !(on_disk.flags & TC_LMDB_DURABLE_CLEAN) &&
                (on_disk.flags & TC_LMDB_DURABLE_SNAPSHOT) && on_disk.inode == d.inode &&
                on_disk.txnid >= s;
    enum tc_status st = later ? TC_OK : tc_lmdb_durable_store(m->path, &d, rw, sizeof(rw));
    tc_lmdb_durable_unlock(lk);
    if (st != TC_OK) {
        unpin(m, nxt);
        snprintf(why, wl, "writing " TC_LMDB_DURABLE_FILE ": %.150s", rw);
        return st;
    }
    if (cur >= 0) {
        unpin(m, cur);
    }
    m->pin_cur = nxt;
    pthread_mutex_lock(&m->lock);
    m->pin_txnid = s;
    pthread_mutex_unlock(&m->lock);
    STAT_ADD(m, syncs, 1);
    return TC_OK;
}

/*
 * After mdb_env_open, before this process commits anything (see
 * "Durability"): with sync=periodic the first checkpoint; otherwise the
 * record must say "open, this boot" (it may say "clean" from a process
 * that closed while this one was opening). TC_OK, or an error with err.
 */
static enum tc_status durable_start(struct lmdb_tier *m, char *err, size_t errlen)
{
    char rw[200];
    enum tc_status st;
    if (m->sync == SYNC_PERIODIC) {
        if ((st = checkpoint(m, rw, sizeof(rw))) != TC_OK) {
            tc_tier_errf(err, errlen, "lmdb://%s: the first checkpoint failed: %s", m->path, rw);
            return TC_EIO;
        }
        return TC_OK;
    }
    struct tc_lmdb_durable d, on_disk;
    mdb_filehandle_t fd;
    struct stat sb;
    durable_base(m, &d);
    if (mdb_env_get_fd(m->env, &fd) == 0 && fstat(fd, &sb) == 0) {
        d.inode = (uint64_t)sb.st_ino;
    }
    int lk = tc_lmdb_durable_lock(m->path);
    int same = tc_lmdb_durable_load(m->path, &on_disk, rw, sizeof(rw)) == TC_OK &&
               !(on_disk.flags & TC_LMDB_DURABLE_CLEAN) && on_disk.mode == d.mode &&
               on_disk.inode == d.inode && m->boot_id[0] != '\0' &&
               strcmp(on_disk.boot_id, m->boot_id) == 0;
    st = same ? TC_OK : tc_lmdb_durable_store(m->path, &d, rw, sizeof(rw));
    tc_lmdb_durable_unlock(lk);
    if (st != TC_OK) {
        tc_tier_errf(err, errlen, "lmdb://%s: writing " TC_LMDB_DURABLE_FILE ": %s", m->path, rw);
    }
    return st;
}

/*
 * After a clean close (everything flushed, LMDB closed): when no other
 * process has the environment open, the record says so, and names the last
 * transaction. Otherwise the others' pins keep covering it. Best effort: a
 * record left "open" only makes the next start after a host crash restore
 * (or move aside) what a clean one would have kept.
 */
static void durable_close(struct lmdb_tier *m, uint64_t txnid, uint64_t inode)
{
    long holder = 0;
    int lfd = lock_exclusive(m->path, &holder);
    if (lfd < 0) {
        return;
    }
    struct tc_lmdb_durable d;
    char rw[200];
    durable_base(m, &d);
    d.flags = TC_LMDB_DURABLE_CLEAN;
    d.txnid = txnid;
    d.inode = inode;
    int lk = tc_lmdb_durable_lock(m->path);
    (void)tc_lmdb_durable_store(m->path, &d, rw, sizeof(rw));
    tc_lmdb_durable_unlock(lk);
    close(lfd);
}

/*
 * The structural check of tiers/lmdb_check.h over the snapshot LMDB is
 * about to use, before it follows any page of a file this process did not
 * write: LMDB trusts its pages, and a damaged one (or one past the end of
 * a truncated file) would have it read through a wild pointer. Other
 * processes may write meanwhile; when they commit too fast for the check to
 * pin its snapshot, a few tries later they vouch for the file instead.
 * TC_OK; TC_ECORRUPT with the problem in why; another status with err.
 */
static enum tc_status check_structure(struct lmdb_tier *m, char *why, size_t wl, char *err,
                                      size_t errlen)
{
    struct tc_lmdb_check_report rep;
    enum tc_status st = TC_EAGAIN;
    for (int i = 0; i < 8 && st == TC_EAGAIN; i++) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn);
        if (rc != 0) {
            tc_tier_errf(err, errlen, "lmdb://%s: a read transaction for the check failed: %s",
                         m->path, mdb_strerror(rc));
            return map_rc(rc) == TC_EAGAIN ? TC_EAGAIN : TC_EIO;
        }
        st = tc_lmdb_check(m->env, txn, &rep);
        mdb_txn_abort(txn);
    }
    if (st == TC_ECORRUPT) {
        snprintf(why, wl, "%s", rep.problem);
    } else if (st == TC_ENOMEM || st == TC_EIO) {
        tc_tier_errf(err, errlen, "lmdb://%s: checking data.mdb failed: %s", m->path,
                     tc_strerror(st));
    } else {
        st = TC_OK; /* TC_OK, or still TC_EAGAIN: see above */
    }
    return st;
}

/*
 * Opens m->env with the tier's flags, then the tiercache databases. TC_OK;
 * TC_ECORRUPT with the reason in @p why when the files are damaged;
 * another status with a message in @p err. On failure m->env is closed.
 */
static enum tc_status env_open(struct lmdb_tier *m, uint64_t max_readers, char *why, size_t wl,
                               char *err, size_t errlen)
{
    const char *path = m->path;
    enum tc_status st;
    int rc = mdb_env_create(&m->env);
    const char *what = "mdb_env_create";
    if (rc == 0) {
        mdb_env_set_userctx(m->env, m);
        mdb_env_set_assert(m->env, on_lmdb_assert);
        what = "mdb_env_set_mapsize";
        rc = mdb_env_set_mapsize(m->env, (size_t)m->map_size);
    }
    if (rc == 0) {
        what = "mdb_env_set_maxdbs";
        rc = mdb_env_set_maxdbs(m->env, 4);
    }
    if (rc == 0) {
        what = "mdb_env_set_maxreaders";
        rc = mdb_env_set_maxreaders(m->env, (unsigned)max_readers);
    }
    if (rc == 0) {
        what = "mdb_env_open";
        rc = mdb_env_open(m->env, path, m->env_flags, 0640);
    }
    if (rc != 0) {
        if (is_damage(rc)) {
            snprintf(why, wl, "%s: %s", what, mdb_strerror(rc));
            st = TC_ECORRUPT;
        } else {
            st = map_rc(rc);
            if (st == TC_ENOTFOUND || st == TC_EINVAL || st == TC_ECORRUPT) {
                st = TC_EIO;
            }
            tc_tier_errf(err, errlen, "lmdb://%s: %s failed: %s", path, what, mdb_strerror(rc));
        }
        goto fail;
    }
    int dead = 0;
    mdb_reader_check(m->env, &dead);
    STAT_ADD(m, stale_readers_cleared, (uint64_t)dead);

    size_t maxkey = (size_t)mdb_env_get_maxkeysize(m->env);
    if (maxkey < 8 + DIGEST_LEN + 16) {
        tc_tier_errf(err, errlen, "lmdb://%s: LMDB key limit %zu is too small", path, maxkey);
        st = TC_EVERSION;
        goto fail;
    }
    /* tc_exp keys are 8 + dkey; digested dkeys are raw_max + 1 bytes. */
    m->raw_max = maxkey - 8 - 1;
    MDB_stat es;
    mdb_env_stat(m->env, &es);
    m->psize = es.ms_psize;
    /* The band between high and low water is the room eviction keeps free;
     * one transaction (a batch, or an eviction chunk at ~3 pages a record)
     * dirties at most half of it, so it cannot run the map full. */
    size_t band = (size_t)((m->high_water - m->low_water) * (double)(m->map_size / m->psize));
    m->txn_pages = band / 2 > 16 ? band / 2 : 16;
    m->evict_chunk = band / 6 > EVICT_CHUNK ? EVICT_CHUNK : band / 6 > 0 ? band / 6 : 1;

    /* Before this process commits anything, the format marker included. */
    if ((st = durable_start(m, err, errlen)) != TC_OK) {
        goto fail;
    }
    if ((st = check_structure(m, why, wl, err, errlen)) != TC_OK) {
        goto fail;
    }
    MDB_txn *txn;
    int garbage = 0;
    if ((rc = mdb_txn_begin(m->env, NULL, 0, &txn)) == 0) {
        /* The format marker: written by the first opener, checked by the
         * rest, so that a future record layout is refused, not misread. */
        MDB_dbi main_dbi;
        MDB_val fk = {sizeof(FORMAT_KEY) - 1, (void *)(uintptr_t)FORMAT_KEY};
        MDB_val fv = {sizeof(FORMAT_VALUE) - 1, (void *)(uintptr_t)FORMAT_VALUE}, got;
        rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
        if (rc == 0) {
            rc = mdb_get(txn, main_dbi, &fk, &got);
            if (rc == MDB_NOTFOUND) {
                rc = mdb_put(txn, main_dbi, &fk, &fv, 0);
            } else if (rc == 0 &&
                       (got.mv_size != fv.mv_size || memcmp(got.mv_data, fv.mv_data, fv.mv_size))) {
                /* Another tiercache format names itself "tc-lmdb-..."; anything
                 * else in its place is damage. */
                garbage = got.mv_size < 8 || memcmp(got.mv_data, FORMAT_VALUE, 8) != 0;
                rc = MDB_VERSION_MISMATCH;
            }
        }
        if (rc == 0) {
            rc = mdb_dbi_open(txn, "tc_data", MDB_CREATE, &m->data);
        }
        if (rc == 0) {
            rc = mdb_dbi_open(txn, "tc_exp", MDB_CREATE, &m->exp);
        }
        if (rc == 0) {
            rc = mdb_dbi_open(txn, "tc_tags", MDB_CREATE, &m->tags);
        }
        rc = rc == 0 ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), rc);
    }
    if (garbage || is_damage(rc)) {
        snprintf(why, wl, "opening the tiercache databases: %s",
                 garbage ? "the format marker is garbage" : mdb_strerror(rc));
        st = TC_ECORRUPT;
        goto fail;
    }
    if (rc != 0) {
        st = map_rc(rc);
        if (st == TC_ENOTFOUND || st == TC_EINVAL) {
            st = TC_EIO;
        }
        tc_tier_errf(err, errlen, "lmdb://%s: opening the tiercache databases failed: %s", path,
                     rc == MDB_VERSION_MISMATCH ? "written by another tiercache record format"
                                                : mdb_strerror(rc));
        goto fail;
    }
    return TC_OK;

fail:
    pins_release(m);
    mdb_env_close(m->env);
    m->env = NULL;
    unlock_files(m);
    return st;
}

/*
 * Renames data.mdb to data.mdb.corrupt-<UTC time> and drops DAMAGE_MARK,
 * while no other process has the environment open. lock.mdb stays: an
 * opener may be waiting on its lock right now, and LMDB resets it at the
 * next exclusive open. Fills m->recovered. TC_OK, or an error with a
 * message in err.
 */
static enum tc_status move_aside(struct lmdb_tier *m, const char *why, char *err, size_t errlen)
{
    long holder = 0;
    int lfd = lock_exclusive(m->path, &holder);
    if (lfd < 0) {
        char who[80] = "whether another process has it open cannot be told";
        if (lfd == -1 && holder > 0) {
            snprintf(who, sizeof(who), "process %ld has it open", holder);
        } else if (lfd == -1) {
            snprintf(who, sizeof(who), "another process has it open");
        }
        tc_tier_errf(err, errlen,
                     "lmdb://%s: the environment is damaged (%s), but %s, so it was not moved "
                     "aside: stop every process that uses %s and start again, or remove "
                     "%s/data.mdb",
                     m->path, why, who, m->path, m->path);
        return TC_EUNAVAIL;
    }
    /* A name for people, so wall-clock time (not the injected clock of
     * STYLE R17, which exists for expiry arithmetic). */
    struct timespec ts;
    struct tm tm;
    char stamp[32] = "unknown-time";
    clock_gettime(CLOCK_REALTIME, &ts);
    if (gmtime_r(&ts.tv_sec, &tm) != NULL) {
        strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    }
    char *from = path_join(m->path, "data.mdb");
    char *mark = path_join(m->path, DAMAGE_MARK);
    size_t tl = strlen(m->path) + 64;
    char *to = malloc(tl);
    enum tc_status st = TC_OK;
    if (from == NULL || mark == NULL || to == NULL) {
        tc_tier_errf(err, errlen, "out of memory opening lmdb://%s", m->path);
        st = TC_ENOMEM;
        goto out;
    }
    for (int i = 0;; i++) {
        struct stat sb;
        snprintf(to, tl, i == 0 ? "%s/data.mdb.corrupt-%s" : "%s/data.mdb.corrupt-%s.%d", m->path,
                 stamp, i);
        if (lstat(to, &sb) != 0 && errno == ENOENT) {
            break;
        }
        if (i == 99) {
            tc_tier_errf(err, errlen, "lmdb://%s: too many data.mdb.corrupt-%s* files", m->path,
                         stamp);
            st = TC_EIO;
            goto out;
        }
    }
    int moved = rename(from, to) == 0;
    if (!moved && errno != ENOENT) {
        tc_tier_errf(err, errlen,
                     "lmdb://%s: the environment is damaged (%s), and moving data.mdb to %s "
                     "failed: %s",
                     m->path, why, to, strerror(errno));
        st = TC_EIO;
        goto out;
    }
    unlink(mark);
    /* A new data.mdb: the record of the old one must not be applied to it. */
    if ((st = durable_reset(m, err, errlen)) != TC_OK) {
        goto out;
    }
    snprintf(m->recovered, sizeof(m->recovered),
             "data.mdb was damaged (%s); %s%s, and a new environment was created", why,
             moved ? "moved at start to " : "it was already gone", moved ? to : "");
    m->lock_fd = lfd; /* held into mdb_env_open: see lock_exclusive */
    lfd = -1;
out:
    if (lfd >= 0) {
        close(lfd);
    }
    free(from);
    free(mark);
    free(to);
    return st;
}

/*
 * The marker left by mark_down in an earlier run: TC_ECORRUPT with its
 * reason in why, or TC_OK when there is none.
 */
static enum tc_status check_mark(struct lmdb_tier *m, char *why, size_t wl)
{
    char *mp = path_join(m->path, DAMAGE_MARK);
    int fd = mp != NULL ? open(mp, O_RDONLY | O_CLOEXEC) : -1;
    free(mp);
    if (fd < 0) {
        return TC_OK;
    }
    char buf[200];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    for (ssize_t i = 0; i < n; i++) {
        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e) {
            buf[i] = '?'; /* the file is ours, but goes to a log line */
        }
    }
    snprintf(why, wl, "marked damaged at run time: %s", n > 0 ? buf : "no reason recorded");
    return TC_ECORRUPT;
}

/*
 * The environment as it is found, checked (see "Damage" at the top): TC_OK
 * with m->env open, TC_ECORRUPT with why, or another error with err.
 */
static enum tc_status open_checked(struct lmdb_tier *m, uint64_t max_readers, char *why, size_t wl,
                                   char *err, size_t errlen)
{
    enum tc_status st = check_mark(m, why, wl);
    if (st != TC_OK) {
        return st;
    }
    long holder = 0;
    int lfd = lock_exclusive(m->path, &holder);
    if (lfd >= 0) {
        /* Alone with the files: what the last run left, then the meta
         * pages as they now are, then this run's record. */
        st = durable_recover(m, why, wl, err, errlen);
        if (st == TC_OK) {
            st = check_file(m, why, wl, err, errlen);
        }
        if (st == TC_OK) {
            st = durable_reset(m, err, errlen);
        }
        if (st != TC_OK) {
            close(lfd);
            return st;
        }
        m->lock_fd = lfd; /* held into mdb_env_open: see lock_exclusive */
    } else if (lfd == -1 && (st = durable_check_mode(m, err, errlen)) != TC_OK) {
        return st;
    }
    return env_open(m, max_readers, why, wl, err, errlen);
}

static void lmdb_close(struct tc_tier *t);

static enum tc_status lmdb_open(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                                size_t errlen)
{
    uint64_t map_size, max_item, interval, batch, max_readers;
    double high, low;
    int sync, writemap, on_corrupt;
    enum tc_status st;
    const char *path = tc_tier_params_target(p);

    if (path[0] == '\0') {
        tc_tier_errf(err, errlen, "lmdb:// needs a directory: lmdb://PATH (e.g. lmdb://./data/l2)");
        return TC_EINVAL;
    }
    struct lmdb_settings set = {.max_item = UINT64_MAX};
    if ((st = tc_tier_params_load(p, lmdb_params, &set, err, errlen)) != TC_OK) {
        return st;
    }
    map_size = set.map_size;
    sync = set.sync;
    interval = set.sync_interval_ms;
    high = set.high_water;
    low = set.low_water;
    on_corrupt = set.on_corrupt;
    batch = set.batch;
    max_readers = set.max_readers;
    writemap = set.writemap;
    max_item = set.max_item;
    if (max_item == UINT64_MAX) {
        /* As large as the server's default max-value (16M) once the map
         * can hold a few: a default stack takes what the API accepts. */
        max_item = map_size / 16 < (16u << 20) ? map_size / 16 : (16u << 20);
    } else if (max_item > map_size / 4) {
        tc_tier_errf(err, errlen,
                     "bad value '%s' for max_item in lmdb:// (expected a size from 0 to "
                     "map_size/4, %llu bytes)",
                     tc_tier_params_get(p, "max_item"), (unsigned long long)(map_size / 4));
        return TC_EINVAL;
    }
    if (low >= high) {
        tc_tier_errf(err, errlen, "lmdb://%s: low_water (%g) must be below high_water (%g)", path,
                     low, high);
        return TC_EINVAL;
    }
    if ((st = make_dir(path, err, errlen)) != TC_OK) {
        return st;
    }

    struct lmdb_tier *m = calloc(1, sizeof(*m));
    if (m == NULL || (m->path = strdup(path)) == NULL) {
        free(m);
        tc_tier_errf(err, errlen, "out of memory opening lmdb://%s", path);
        return TC_ENOMEM;
    }
    m->map_size = map_size;
    m->sync = sync;
    m->sync_interval_ms = interval;
    m->high_water = high;
    m->low_water = low;
    m->batch_max = (size_t)batch;
    m->on_corrupt = on_corrupt;
    /* Any process sharing the file with our map_size may write max_item up
     * to map_size / 4 (see max_item's bounds), plus key and headers. */
    m->rec_max = (size_t)(map_size / 4) + REC_FIXED + TC_KEY_MAX + TC_ITEM_HDR_SIZE;
    if ((m->batch = calloc(m->batch_max, sizeof(*m->batch))) == NULL) {
        free(m->path);
        free(m);
        tc_tier_errf(err, errlen, "out of memory opening lmdb://%s", path);
        return TC_ENOMEM;
    }
#define TC_X(name) atomic_init(&m->stats.name, 0);
    LMDB_STATS(TC_X)
#undef TC_X
    atomic_init(&m->last_error, TC_OK);
    atomic_init(&m->down, 0);
    m->pin_cur = -1;
    m->lock_fd = -1;
    atomic_init(&m->grow_mark, 0);
    tc_lmdb_durable_boot_id(m->boot_id);
    /* Before the environment opens: the first checkpoint takes the lock. */
    pthread_condattr_t ca;
    if (pthread_mutex_init(&m->lock, NULL) != 0 || pthread_condattr_init(&ca) != 0) {
        free(m->batch);
        free(m->path);
        free(m);
        tc_tier_errf(err, errlen, "out of memory opening lmdb://%s", path);
        return TC_ENOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->wake, &ca);
    pthread_cond_init(&m->sync_wake, &ca);
    pthread_cond_init(&m->ckpt_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&m->done, NULL);

    /* NOTLS: read txns belong to ctxs, not threads, and are reset/renewed
     * (a thread may own several ctxs). NORDAHEAD: random access to a cache
     * larger than RAM gains nothing from readahead. NOSYNC for periodic
     * (made durable by the checkpoints) and none: see "Durability" at the
     * top. */
    m->env_flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (sync != SYNC_ALWAYS) {
        m->env_flags |= MDB_NOSYNC;
    }
    if (writemap) {
        /* Commits write into the shared mapping instead of pwrite()ing
         * each dirty page: about 3x the write throughput, at the cost
         * of LMDB's protection against stray writes by this process
         * (the map is then writable). Off unless asked for. */
        m->env_flags |= MDB_WRITEMAP;
    }
    char why[384] = "";
    st = open_checked(m, max_readers, why, sizeof(why), err, errlen);
    if (st == TC_ECORRUPT && on_corrupt == ON_CORRUPT_FAIL) {
        tc_tier_errf(err, errlen,
                     "lmdb://%s: the environment is damaged (%s); on_corrupt=fail, so it is left "
                     "as it is: move %s/data.mdb aside (and remove %s/" DAMAGE_MARK
                     " if present), or set on_corrupt=recreate",
                     path, why, path, path);
    } else if (st == TC_ECORRUPT) {
        st = move_aside(m, why, err, errlen);
        if (st == TC_OK) {
            char why2[384] = "";
            st = env_open(m, max_readers, why2, sizeof(why2), err, errlen);
            if (st == TC_ECORRUPT) {
                tc_tier_errf(err, errlen, "lmdb://%s: a new environment does not open either: %s",
                             path, why2);
            }
        }
    }
    if (st != TC_OK) {
        goto fail;
    }
    if (pthread_create(&m->writer, NULL, writer_main, m) != 0) {
        tc_tier_errf(err, errlen, "lmdb://%s: cannot start the writer thread", path);
        st = TC_ENOMEM;
        goto fail;
    }
    if (sync == SYNC_PERIODIC) {
        if (pthread_create(&m->syncer, NULL, syncer_main, m) != 0) {
            lmdb_close(&m->base); /* stops the writer and frees everything */
            tc_tier_errf(err, errlen, "lmdb://%s: cannot start the sync thread", path);
            return TC_ENOMEM;
        }
        m->has_syncer = 1;
    }
    m->base.max_key = TC_KEY_MAX;
    m->base.max_value = (size_t)max_item;
    if (m->recovered[0] != '\0' || m->news[0] != '\0') {
        /* Success, with news the caller must log at crit (tier.h). */
        tc_tier_errf(err, errlen, "lmdb://%s: %s%s%s%s", path, m->news,
                     m->news[0] != '\0' && m->recovered[0] != '\0' ? "; " : "", m->recovered,
                     m->recovered[0] != '\0' ? "; remove the old file when it is no longer needed"
                                             : "");
    }
    *out = &m->base;
    return TC_OK;

fail:
    if (m->env != NULL) {
        pins_release(m);
        mdb_env_close(m->env);
    }
    unlock_files(m);
    pthread_cond_destroy(&m->wake);
    pthread_cond_destroy(&m->sync_wake);
    pthread_cond_destroy(&m->ckpt_cv);
    pthread_cond_destroy(&m->done);
    pthread_mutex_destroy(&m->lock);
    free(m->batch);
    free(m->path);
    free(m);
    return st;
}

static void lmdb_close(struct tc_tier *t)
{
    struct lmdb_tier *m = (struct lmdb_tier *)t;
    pthread_mutex_lock(&m->lock);
    m->stopping = 1;
    pthread_cond_signal(&m->wake);
    pthread_cond_signal(&m->sync_wake);
    pthread_cond_broadcast(&m->ckpt_cv);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->writer, NULL);
    if (m->has_syncer) {
        pthread_join(m->syncer, NULL);
    }
    /* A clean close loses nothing in any mode. */
    int synced = m->sync == SYNC_ALWAYS || mdb_env_sync(m->env, 1) == 0;
    MDB_envinfo info;
    mdb_filehandle_t fd;
    struct stat sb;
    uint64_t last = mdb_env_info(m->env, &info) == 0 ? (uint64_t)info.me_last_txnid : 0;
    uint64_t inode =
        mdb_env_get_fd(m->env, &fd) == 0 && fstat(fd, &sb) == 0 ? (uint64_t)sb.st_ino : 0;
    pins_release(m);
    mdb_env_close(m->env);
    unlock_files(m);
    if (synced && !is_down(m)) {
        durable_close(m, last, inode);
    }
    pthread_cond_destroy(&m->wake);
    pthread_cond_destroy(&m->sync_wake);
    pthread_cond_destroy(&m->ckpt_cv);
    pthread_cond_destroy(&m->done);
    pthread_mutex_destroy(&m->lock);
    free(m->batch);
    free(m->path);
    free(m);
}

static enum tc_status lmdb_ctx_init(struct tc_tier *t, struct event_base *base,
                                    struct tc_tier_ctx **out)
{
    struct lmdb_tier *m = (struct lmdb_tier *)t;
    struct lmdb_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return TC_ENOMEM;
    }
    c->pipe_rd = c->pipe_wr = -1;
    int rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &c->rtxn);
    if (rc != 0) {
        free(c);
        return map_rc(rc) == TC_EAGAIN ? TC_EAGAIN : TC_EIO;
    }
    mdb_txn_reset(c->rtxn);
    if (base != NULL) {
        int fds[2];
        if (pipe(fds) != 0) {
            mdb_txn_abort(c->rtxn);
            free(c);
            return TC_EIO;
        }
        c->pipe_rd = fds[0];
        c->pipe_wr = fds[1];
        for (int i = 0; i < 2; i++) {
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
            fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        }
        c->ev = event_new(base, c->pipe_rd, EV_READ | EV_PERSIST, ctx_on_pipe, c);
        if (c->ev == NULL || event_add(c->ev, NULL) != 0) {
            if (c->ev != NULL) {
                event_free(c->ev);
            }
            close(fds[0]);
            close(fds[1]);
            mdb_txn_abort(c->rtxn);
            free(c);
            return TC_ENOMEM;
        }
    }
    tc_tier_ctx_base_init(&c->base, t, base);
    *out = &c->base;
    return TC_OK;
}

static void lmdb_ctx_dispose(struct tc_tier_ctx *cb)
{
    struct lmdb_ctx *c = (struct lmdb_ctx *)cb;
    struct lmdb_tier *m = (struct lmdb_tier *)cb->tier;
    struct wop *cancelled = NULL, **tail = &cancelled;

    if (cb->base != NULL) {
        /* Ops the writer has not taken yet are cancelled (TC_EUNAVAIL); ops
         * it is applying finish with their real result. Either way every
         * done() runs once, here, on this thread. */
        pthread_mutex_lock(&m->lock);
        struct wop **pp = &m->q_head, *prev = NULL;
        while (*pp != NULL) {
            struct wop *op = *pp;
            if (op->ctx == c) {
                *pp = op->next;
                op->next = NULL;
                *tail = op;
                tail = &op->next;
                c->at_writer--;
                m->q_len--;
            } else {
                prev = op;
                pp = &op->next;
            }
        }
        m->q_tail = prev;
        while (c->at_writer > 0) {
            pthread_cond_wait(&m->done, &m->lock);
        }
        struct wop *finished = c->done_head;
        c->done_head = c->done_tail = NULL;
        pthread_mutex_unlock(&m->lock);
        for (struct wop *op = cancelled; op != NULL;) {
            struct wop *next = op->next;
            tc_tier_complete(op->req, TC_EUNAVAIL);
            free(op);
            op = next;
        }
        for (struct wop *op = finished; op != NULL;) {
            struct wop *next = op->next;
            tc_tier_complete(op->req, op->st);
            free(op);
            op = next;
        }
        event_free(c->ev);
        close(c->pipe_rd);
        close(c->pipe_wr);
        while (c->free_wops != NULL) {
            struct wop *next = c->free_wops->next;
            free(c->free_wops);
            c->free_wops = next;
        }
    }
    mdb_txn_abort(c->rtxn);
    free(c);
}

/* Looks req up in the renewed read txn. On TC_OK *r describes the record,
 * its value still in the map (valid until the txn is reset). */
static enum tc_status lookup(struct lmdb_tier *m, MDB_txn *txn, const struct tc_tier_req *req,
                             struct rec *r)
{
    unsigned char kbuf[KEYBUF_MAX];
    MDB_val dk = dkey_of(m, req->key, req->key_len, kbuf), v;
    int rc = mdb_get(txn, m->data, &dk, &v);
    if (rc != 0) {
        if (is_fatal(rc)) {
            /* The environment, not one record, is damaged: not TC_ECORRUPT,
             * whose bad copy the stack would try to delete. */
            mark_down(m, rc, "a get");
            return TC_EUNAVAIL;
        }
        return rc == MDB_NOTFOUND ? TC_ENOTFOUND : map_rc(rc);
    }
    /* A size no writer with this map_size makes is a damaged node header:
     * copying that much out of the map could run past its end. */
    if (v.mv_size > m->rec_max) {
        return TC_ECORRUPT;
    }
    enum tc_status st = rec_decode(m, &v, dk.mv_size, req->key, req->key_len, r);
    if (st != TC_OK) {
        return TC_ECORRUPT; /* a miss, never a crash; the tier layer counts it */
    }
    if (r->fullkey != NULL &&
        (r->fk_len != req->key_len || memcmp(r->fullkey, req->key, r->fk_len) != 0)) {
        /* Same prefix and SHA-256 but another full key: not a collision
         * anyone will meet, so the record is damaged. */
        return TC_ECORRUPT;
    }
    if (tc_item_expired(r->local_exp, req->now_ms)) {
        return TC_ENOTFOUND; /* the sweep will remove it; readers never write */
    }
    return TC_OK;
}

/* Copies a found record out to the caller (inside the txn). */
static enum tc_status hand_out(struct tc_tier_req *req, enum tc_status st, const struct rec *r)
{
    if (st == TC_OK) {
        st = tc_buf_set(req->out, r->value, r->hdr.value_len);
        if (st == TC_OK) {
            req->hdr = r->hdr;
            req->local_expire_ms = r->local_exp;
        }
    }
    req->status = st;
    return st;
}

static enum tc_status renew(struct lmdb_ctx *c)
{
    struct lmdb_tier *m = (struct lmdb_tier *)c->base.tier;
    if (is_down(m)) {
        return TC_EUNAVAIL; /* never touch a damaged map again */
    }
    int rc = mdb_txn_renew(c->rtxn);
    if (rc != 0) {
        if (is_fatal(rc)) {
            mark_down(m, rc, "a read transaction");
        }
        return map_rc(rc) == TC_EAGAIN ? TC_EAGAIN : TC_EIO;
    }
    return TC_OK;
}

static enum tc_status lmdb_get(struct tc_tier_ctx *cb, struct tc_tier_req *req)
{
    struct lmdb_ctx *c = (struct lmdb_ctx *)cb;
    enum tc_status st = renew(c);
    if (st != TC_OK) {
        req->status = st;
        return st;
    }
    struct rec r;
    st = hand_out(req, lookup((struct lmdb_tier *)cb->tier, c->rtxn, req, &r), &r);
    /* No pointer into the map survives this reset (STYLE R7). */
    mdb_txn_reset(c->rtxn);
    return st;
}

/*
 * The batch shares one read txn (one renew and reset instead of n), and
 * copies the values out only after every lookup, having asked for their
 * cache lines first, so that those misses overlap instead of each ending a
 * lookup. The tree search itself is LMDB's and stays one miss after
 * another. The snapshot is held for the batch only (at most
 * TC_TIER_GET_MANY_MAX lookups).
 */
static void lmdb_get_many(struct tc_tier_ctx *cb, struct tc_tier_req **reqs, size_t n)
{
    struct lmdb_ctx *c = (struct lmdb_ctx *)cb;
    struct lmdb_tier *m = (struct lmdb_tier *)cb->tier;
    struct rec r[TC_TIER_GET_MANY_MAX];
    enum tc_status st[TC_TIER_GET_MANY_MAX];
    enum tc_status rs = renew(c);
    if (n > TC_TIER_GET_MANY_MAX) {
        n = TC_TIER_GET_MANY_MAX; /* the tier layer never passes more */
    }
    if (rs != TC_OK) {
        for (size_t i = 0; i < n; i++) {
            reqs[i]->status = rs;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* A lookup that met damage has marked the tier down: stop reading. */
        st[i] = is_down(m) ? TC_EUNAVAIL : lookup(m, c->rtxn, reqs[i], &r[i]);
        if (st[i] == TC_OK) {
            const char *p = (const char *)r[i].value;
            size_t len = r[i].hdr.value_len;
            for (size_t off = 0; off < len && off < 256; off += 64) {
                __builtin_prefetch(p + off);
            }
            if (len > 0) {
                __builtin_prefetch(p + len - 1);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        hand_out(reqs[i], st[i], &r[i]);
    }
    mdb_txn_reset(c->rtxn);
}

/* Records a listing examines per page at most, beyond its limit: a page over
 * a prefix among many expired records ends early (with a cursor) rather
 * than holding the read snapshot for the whole database. */
#define LIST_SCAN_SLACK 4096u

/* Appends one listing record (tier.h) for @p key. */
static enum tc_status list_put(struct tc_buf *out, const void *key, size_t klen, uint64_t fresh)
{
    uint32_t kl = (uint32_t)klen;
    enum tc_status st = tc_buf_append(out, &kl, sizeof(kl));
    if (st == TC_OK) {
        st = tc_buf_append(out, key, klen);
    }
    return st == TC_OK ? tc_buf_append(out, &fresh, sizeof(fresh)) : st;
}

/*
 * Walks tc_data in dkey order from just after the cursor (the last dkey the
 * previous page returned or examined), in the ctx's read txn. The order of
 * dkeys does not change with writes, so a page resumes exactly where the
 * last one stopped: a key present throughout is listed once (tier.h).
 */
/*
 * The keys recorded under req->tag, from tc_tags in tkey order after the
 * cursor (the last tkey examined). Each is looked up in tc_data: a key gone
 * or expired is not listed (but moves the cursor).
 */
static enum tc_status list_tag(struct lmdb_ctx *c, struct lmdb_tier *m,
                               struct tc_tier_list_req *req)
{
    unsigned char pbuf[KEYBUF_MAX + TC_TAG_MAX + 1];
    size_t plen = req->tag_len + 1;
    if (req->cursor_len > MAXKEY(m) - plen) {
        return TC_EINVAL;
    }
    memcpy(pbuf, req->tag, req->tag_len);
    pbuf[req->tag_len] = 0;
    if (req->cursor_len > 0) {
        memcpy(pbuf + plen, req->cursor, req->cursor_len);
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->rtxn, m->tags, &cur);
    if (rc != 0) {
        return map_rc(rc);
    }
    MDB_val k = {plen + req->cursor_len, pbuf}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && req->cursor_len > 0 && k.mv_size == plen + req->cursor_len &&
        memcmp(k.mv_data, pbuf, k.mv_size) == 0) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    size_t examined = 0;
    enum tc_status st = TC_OK;
    while (rc == 0 && k.mv_size > plen && memcmp(k.mv_data, pbuf, plen) == 0) {
        if (req->count >= req->limit || examined >= req->limit + LIST_SCAN_SLACK) {
            /* k is the next entry: resume at the one before it, the last examined. */
            break;
        }
        examined++;
        if ((st = tc_buf_set(req->next, (const unsigned char *)k.mv_data + plen,
                             k.mv_size - plen)) != TC_OK) {
            break;
        }
        struct tc_tier_req g = {.key = v.mv_data, .key_len = v.mv_size, .now_ms = req->now_ms};
        struct rec r;
        if (v.mv_size > 0 && v.mv_size <= TC_KEY_MAX && lookup(m, c->rtxn, &g, &r) == TC_OK &&
            !tc_item_expired(r.hdr.expire_ms, req->now_ms)) {
            if ((st = list_put(req->out, v.mv_data, v.mv_size, tc_item_fresh_until(&r.hdr))) !=
                TC_OK) {
                break;
            }
            req->count++;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (st == TC_OK && (rc == MDB_NOTFOUND ||
                        (rc == 0 && (k.mv_size <= plen || memcmp(k.mv_data, pbuf, plen) != 0)))) {
        req->next->len = 0; /* the tag's entries are all examined */
        rc = 0;
    }
    mdb_cursor_close(cur);
    return rc != 0 ? map_rc(rc) : st;
}

static enum tc_status lmdb_list(struct tc_tier_ctx *cb, struct tc_tier_list_req *req)
{
    struct lmdb_ctx *c = (struct lmdb_ctx *)cb;
    struct lmdb_tier *m = (struct lmdb_tier *)cb->tier;
    if (req->tag_len > 0) {
        enum tc_status st = renew(c);
        if (st == TC_OK) {
            st = list_tag(c, m, req);
            /* No pointer into the map survives this reset (STYLE R7). */
            mdb_txn_reset(c->rtxn);
        }
        return st;
    }
    size_t keep = m->raw_max + 1 - DIGEST_LEN;
    size_t scan_len = req->prefix_len < keep ? req->prefix_len : keep;
    if (req->cursor_len > m->raw_max + 1) {
        return TC_EINVAL; /* not a dkey: no page of ours ends there */
    }
    enum tc_status st = renew(c);
    if (st != TC_OK) {
        return st;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->rtxn, m->data, &cur);
    if (rc != 0) {
        mdb_txn_reset(c->rtxn);
        return map_rc(rc);
    }
    /* Start at the later of the prefix and the cursor. */
    MDB_val k = {scan_len, (void *)(uintptr_t)req->prefix}, v;
    int after = 0;
    if (req->cursor_len > 0) {
        size_t n = req->cursor_len < scan_len ? req->cursor_len : scan_len;
        int cmp = memcmp(req->cursor, req->prefix, n);
        if (cmp > 0 || (cmp == 0 && req->cursor_len >= scan_len)) {
            k.mv_size = req->cursor_len;
            k.mv_data = (void *)(uintptr_t)req->cursor;
            after = 1;
        }
    }
    size_t examined = 0;
    const void *last = NULL;
    size_t last_len = 0;
    rc = mdb_cursor_get(cur, &k, &v, k.mv_size ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && after && k.mv_size == req->cursor_len &&
        memcmp(k.mv_data, req->cursor, k.mv_size) == 0) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    st = TC_OK;
    while (rc == 0) {
        if (k.mv_size < scan_len || memcmp(k.mv_data, req->prefix, scan_len) != 0) {
            break; /* past the prefix's range: the listing is complete */
        }
        if (req->count >= req->limit || examined >= req->limit + LIST_SCAN_SLACK) {
            st = tc_buf_set(req->next, last, last_len);
            break;
        }
        examined++;
        last = k.mv_data;
        last_len = k.mv_size;
        struct rec r;
        if (v.mv_size > m->rec_max || rec_decode(m, &v, k.mv_size, NULL, 0, &r) != TC_OK) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue; /* a damaged record is not a key to list */
        }
        const void *fk = r.fullkey ? (const void *)r.fullkey : k.mv_data;
        size_t fkl = r.fullkey ? r.fk_len : k.mv_size;
        if (fkl >= req->prefix_len && memcmp(fk, req->prefix, req->prefix_len) == 0 &&
            !tc_item_expired(r.local_exp, req->now_ms) &&
            !tc_item_expired(r.hdr.expire_ms, req->now_ms)) {
            if ((st = list_put(req->out, fk, fkl, tc_item_fresh_until(&r.hdr))) != TC_OK) {
                break;
            }
            req->count++;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        st = map_rc(rc);
    }
    mdb_cursor_close(cur);
    /* No pointer into the map survives this reset (STYLE R7): next is a copy. */
    mdb_txn_reset(c->rtxn);
    return st;
}

static enum tc_status lmdb_set(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    /* A header the codec refuses (unknown encoding or flag) is the
     * caller's error: answer it here, before it can fail a whole batch
     * and mark the tier degraded. */
    if (tc_item_hdr_validate(&req->hdr) != TC_OK) {
        req->status = TC_EINVAL;
        return TC_EINVAL;
    }
    return submit(c, req, W_SET);
}

static enum tc_status lmdb_del(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    return submit(c, req, W_DEL);
}

static enum tc_status lmdb_clear(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    return submit(c, req, W_CLEAR);
}

static enum tc_status lmdb_sweep(struct tc_tier *t, uint64_t now_ms, size_t budget,
                                 uint64_t *removed)
{
    struct lmdb_tier *m = (struct lmdb_tier *)t;
    if (is_down(m)) {
        return TC_EUNAVAIL;
    }
    struct wop op = {.kind = W_SWEEP, .now_ms = now_ms, .budget = budget ? budget : 1};
    enum tc_status st = run_sync(m, &op);
    STAT_ADD(m, sweeps, 1);
    STAT_ADD(m, expired, op.removed);
    if (removed != NULL) {
        *removed += op.removed;
    }
    return st;
}

static enum tc_status lmdb_rewrite(struct tc_tier *t, tc_tier_rewrite_fn fn, void *arg,
                                   size_t budget)
{
    struct lmdb_tier *m = (struct lmdb_tier *)t;
    if (is_down(m)) {
        return TC_EUNAVAIL;
    }
    struct wop *op = calloc(1, sizeof(*op));
    unsigned char *next = malloc(KEYBUF_MAX);
    if (op == NULL || next == NULL) {
        free(op);
        free(next);
        return TC_ENOMEM;
    }
    op->rw_next = next;
    op->kind = W_REWRITE;
    op->budget = budget < REWRITE_VISITS ? budget : REWRITE_VISITS;
    op->rw_fn = fn;
    op->rw_arg = arg;
    enum tc_status st = run_sync(m, op);
    if (st == TC_OK || st == TC_EAGAIN) {
        memcpy(m->rw_pos, op->rw_next, op->rw_next_len);
        m->rw_pos_len = op->rw_next_len;
    }
    free(next);
    free(op);
    return st;
}

static void lmdb_stats(struct tc_tier *t, tc_tier_stat_fn emit, void *arg)
{
    struct lmdb_tier *m = (struct lmdb_tier *)t;
    MDB_txn *txn;
    uint64_t records = 0, index = 0, used = 0;
    MDB_stat es;
    mdb_env_stat(m->env, &es);
    /* Down: the trees are not read again (their pages are damaged). */
    if (!is_down(m) && mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn) == 0) {
        MDB_stat s;
        if (mdb_stat(txn, m->data, &s) == 0) {
            records = s.ms_entries;
        }
        if (mdb_stat(txn, m->exp, &s) == 0) {
            index = s.ms_entries; /* records plus stale entries not yet dropped */
        }
        used = (uint64_t)used_pages(m, txn) * es.ms_psize;
        mdb_txn_abort(txn);
    }
    MDB_envinfo info;
    mdb_env_info(m->env, &info);
    pthread_mutex_lock(&m->lock);
    uint64_t queued = m->q_len;
    pthread_mutex_unlock(&m->lock);
    emit(arg, "items", records, TC_STAT_GAUGE);
    emit(arg, "index_entries", index, TC_STAT_GAUGE);
    emit(arg, "write_queue", queued, TC_STAT_GAUGE);
    emit(arg, "bytes_used", used, TC_STAT_GAUGE);
    emit(arg, "bytes_capacity", info.me_mapsize, TC_STAT_GAUGE);
    emit(arg, "reader_slots", info.me_numreaders, TC_STAT_GAUGE);
#define TC_X(name)                                                                                 \
    emit(arg, #name, atomic_load_explicit(&m->stats.name, memory_order_relaxed), TC_STAT_COUNTER);
    LMDB_STATS(TC_X)
#undef TC_X
    uint64_t b = atomic_load_explicit(&m->stats.commit_batches, memory_order_relaxed);
    uint64_t o = atomic_load_explicit(&m->stats.commit_ops, memory_order_relaxed);
    emit(arg, "commit_batch_mean", b ? (o + b / 2) / b : 0, TC_STAT_GAUGE);
}

static enum tc_tier_health lmdb_health(struct tc_tier *t, char *detail, size_t len)
{
    struct lmdb_tier *m = (struct lmdb_tier *)t;
    int d = atomic_load_explicit(&m->down, memory_order_acquire); /* pairs with mark_down */
    if (d != 0) {
        if (detail != NULL && len > 0) {
            snprintf(detail, len, "environment damaged (%s); %s", d == 2 ? m->down_why : "LMDB",
                     m->on_corrupt == ON_CORRUPT_FAIL
                         ? "remove data.mdb and tiercache-damaged to start again (on_corrupt=fail)"
                         : "it is moved aside at the next start");
        }
        return TC_HEALTH_DOWN;
    }
    int e = atomic_load_explicit(&m->last_error, memory_order_relaxed);
    if (e != TC_OK) {
        if (detail != NULL && len > 0) {
            snprintf(detail, len, "last commit failed: %s", tc_strerror((enum tc_status)e));
        }
        return TC_HEALTH_DEGRADED;
    }
    char sync_why[sizeof(m->sync_why)];
    pthread_mutex_lock(&m->lock);
    memcpy(sync_why, m->sync_why, sizeof(sync_why));
    pthread_mutex_unlock(&m->lock);
    if (sync_why[0] != '\0') {
        if (detail != NULL && len > 0) {
            snprintf(detail, len, "the durable snapshot is not moving on: %s", sync_why);
        }
        return TC_HEALTH_DEGRADED;
    }
    if (detail != NULL && len > 0 && (m->recovered[0] != '\0' || m->news[0] != '\0')) {
        /* serving, from a new or restored environment */
        snprintf(detail, len, "%s", m->recovered[0] != '\0' ? m->recovered : m->news);
    }
    return TC_HEALTH_OK;
}

const struct tc_tier_ops tc_tier_lmdb_ops = {
    .scheme = "lmdb",
    .abi_version = TC_TIER_ABI_VERSION,
    .caps = TC_TIER_CAP_PERSISTENT | TC_TIER_CAP_SHARED | TC_TIER_CAP_ASYNC | TC_TIER_CAP_LIST |
            TC_TIER_CAP_TAGS,
    .params = lmdb_params,
    .usage = "lmdb://PATH?map_size=1G&sync=periodic&sync_interval_ms=1000&high_water=0.90"
             "&low_water=0.80&max_item=16M&batch=1024&writemap=off&on_corrupt=recreate",
    .open = lmdb_open,
    .close = lmdb_close,
    .ctx_init = lmdb_ctx_init,
    .ctx_dispose = lmdb_ctx_dispose,
    .get = lmdb_get,
    .get_many = lmdb_get_many,
    .set = lmdb_set,
    .del = lmdb_del,
    .clear = lmdb_clear,
    .sweep = lmdb_sweep,
    .stats = lmdb_stats,
    .health = lmdb_health,
    .rewrite = lmdb_rewrite,
    .list = lmdb_list,
};
