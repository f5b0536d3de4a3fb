/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The structural check of tiers/lmdb_check.h. The layouts below are LMDB's
 * on-disk format, data version 1 (libraries/liblmdb/mdb.c: MDB_page,
 * MDB_node, MDB_db, MDB_meta), for a 64-bit little- or big-endian host with
 * 8-byte page numbers, which is what Debian's liblmdb0 writes on amd64 and
 * arm64. Fields are read with memcpy at their offsets, never through casts
 * of untrusted bytes.
 *
 *   page header (16)   pgno u64 | pad u16 | flags u16 | lower u16 | upper u16
 *                      (an overflow page has a u32 page count where
 *                      lower/upper are)
 *   node (8 + ...)     lo u16 | hi u16 | flags u16 | ksize u16 | key | data
 *                      leaf: data size = lo | hi << 16
 *                      branch: child = lo | hi << 16 | flags << 32
 *   MDB_db (48)        pad u32 | flags u16 | depth u16 | branch, leaf,
 *                      overflow pages, entries, root (u64 each)
 *   MDB_meta           magic u32 | version u32 | address u64 | mapsize u64 |
 *                      free db | main db | last_pg u64 | txnid u64
 */
#include "tiers/lmdb_check.h"

/* The layout below is LMDB 0.9's: a new LMDB version needs it re-checked. */
#if MDB_VERSION_MAJOR != 0 || MDB_VERSION_MINOR != 9
#error "tiers/lmdb_check.c reads the LMDB 0.9 page layout: re-check it for this LMDB"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGEHDRSZ    16u
#define NODESIZE     8u
#define DB_SIZE      48u
#define META_OFF     PAGEHDRSZ
#define META_DBS     (META_OFF + 24u)
#define META_LAST_PG (META_DBS + 2u * DB_SIZE)
#define META_TXNID   (META_LAST_PG + 8u)
#define META_END     (META_TXNID + 8u)

#define P_BRANCH   0x01u
#define P_LEAF     0x02u
#define P_OVERFLOW 0x04u
#define P_META     0x08u
#define P_LEAF2    0x20u
#define P_SUBP     0x40u

#define F_BIGDATA 0x01u
#define F_SUBDATA 0x02u
#define F_DUPDATA 0x04u

#define LMDB_MAGIC   0xBEEFC0DEu
#define LMDB_VERSION 1u
#define P_INVALID    UINT64_MAX
#define STACK_MAX    32u /* LMDB's CURSOR_STACK: no tree may be deeper */

struct db {
    uint16_t flags, depth;
    uint64_t entries, root;
};

struct ck {
    int fd;
    size_t psize;
    uint64_t limit;   /* pages below this exist: min(last_pg + 1, file pages) */
    uint64_t last_pg; /* of the snapshot */
    uint8_t *seen;    /* one bit per page up to last_pg */
    unsigned char *page, *scratch;
    struct tc_lmdb_check_report *rep;
};

static uint16_t rd16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static enum tc_status bad(struct ck *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static enum tc_status bad(struct ck *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->rep->problem, sizeof(c->rep->problem), fmt, ap);
    va_end(ap);
    return TC_ECORRUPT;
}

static struct db db_at(const unsigned char *p)
{
    struct db d = {rd16(p + 4), rd16(p + 6), rd64(p + 32), rd64(p + 40)};
    return d;
}

/* Reads page pgno into buf (one page). */
static enum tc_status read_page(struct ck *c, uint64_t pgno, unsigned char *buf)
{
    off_t at = (off_t)(pgno * c->psize);
    size_t got = 0;
    while (got < c->psize) {
        ssize_t n = pread(c->fd, buf + got, c->psize - got, at + (off_t)got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n == 0
                       ? bad(c, "page %llu is past the end of data.mdb", (unsigned long long)pgno)
                       : TC_EIO;
        }
        got += (size_t)n;
    }
    return TC_OK;
}

/* Marks pages [pgno, pgno + n) as reached; damage if any is out of range
 * or was reached before. */
static enum tc_status claim(struct ck *c, uint64_t pgno, uint64_t n, const char *what)
{
    if (pgno < 2 || n == 0 || pgno >= c->limit || n > c->limit - pgno) {
        return bad(c, "%s page %llu (+%llu) is outside pages 2..%llu", what,
                   (unsigned long long)pgno, (unsigned long long)n,
                   (unsigned long long)(c->limit - 1));
    }
    for (uint64_t p = pgno; p < pgno + n; p++) {
        uint8_t bit = (uint8_t)(1u << (p & 7));
        if (c->seen[p >> 3] & bit) {
            return bad(c, "page %llu is reached twice (%s)", (unsigned long long)p, what);
        }
        c->seen[p >> 3] |= bit;
    }
    return TC_OK;
}

/* An overflow run starting at pgno that must hold dsize bytes. With @p out,
 * its bytes are copied there (dsize of them; for free lists). */
static enum tc_status check_overflow(struct ck *c, uint64_t pgno, uint64_t dsize,
                                     unsigned char *out)
{
    if (pgno < 2 || pgno >= c->limit) {
        return bad(c, "overflow page %llu is outside the file", (unsigned long long)pgno);
    }
    enum tc_status st = read_page(c, pgno, c->scratch);
    if (st != TC_OK) {
        return st;
    }
    uint16_t flags = rd16(c->scratch + 10);
    uint32_t n = rd32(c->scratch + 12);
    if (rd64(c->scratch) != pgno || flags != P_OVERFLOW) {
        return bad(c, "page %llu should be an overflow page (flags 0x%x)", (unsigned long long)pgno,
                   flags);
    }
    if (n == 0 || PAGEHDRSZ + dsize > (uint64_t)n * c->psize) {
        return bad(c, "overflow page %llu: %u pages cannot hold %llu bytes",
                   (unsigned long long)pgno, n, (unsigned long long)dsize);
    }
    if ((st = claim(c, pgno, n, "overflow")) != TC_OK) {
        return st;
    }
    c->rep->overflow++;
    c->rep->pages++;
    if (out != NULL) {
        size_t first = c->psize - PAGEHDRSZ < dsize ? c->psize - PAGEHDRSZ : (size_t)dsize;
        memcpy(out, c->scratch + PAGEHDRSZ, first);
        if (dsize > first && pread(c->fd, out + first, (size_t)dsize - first,
                                   (off_t)((pgno + 1) * c->psize)) != (ssize_t)(dsize - first)) {
            return bad(c, "overflow run at page %llu is cut short", (unsigned long long)pgno);
        }
    }
    return TC_OK;
}

/* A free-list record: key = txnid, data = count then that many page numbers. */
static enum tc_status check_free_record(struct ck *c, const unsigned char *data, uint64_t dsize)
{
    if (dsize < 8 || dsize % 8 != 0) {
        return bad(c, "a free-list record of %llu bytes", (unsigned long long)dsize);
    }
    uint64_t count = rd64(data);
    if (count > dsize / 8 - 1) {
        return bad(c, "a free-list record claims %llu pages in %llu bytes",
                   (unsigned long long)count, (unsigned long long)dsize);
    }
    for (uint64_t i = 1; i <= count; i++) {
        uint64_t pgno = rd64(data + 8 * i);
        /* Free pages past the file's end are fine (never read before they
         * are written); past the snapshot's last page they are not. */
        if (pgno < 2 || pgno > c->last_pg) {
            return bad(c, "free page %llu is outside pages 2..%llu", (unsigned long long)pgno,
                       (unsigned long long)c->last_pg);
        }
        uint8_t bit = (uint8_t)(1u << (pgno & 7));
        if (c->seen[pgno >> 3] & bit) {
            return bad(c, "page %llu is both free and in use (or free twice)",
                       (unsigned long long)pgno);
        }
        c->seen[pgno >> 3] |= bit;
        c->rep->free_pages++;
    }
    return TC_OK;
}

enum tree_kind { TREE_FREE, TREE_MAIN, TREE_NAMED };

static enum tc_status walk(struct ck *c, uint64_t pgno, unsigned buf, unsigned level,
                           unsigned depth, enum tree_kind kind);

/* One leaf node's data, by the kind of tree it is in. */
static enum tc_status check_leaf_data(struct ck *c, const unsigned char *node, uint16_t nflags,
                                      uint64_t dsize, enum tree_kind kind, uint64_t pgno,
                                      unsigned next_buf)
{
    const unsigned char *data = node + NODESIZE + rd16(node + 6);
    if (nflags & F_DUPDATA) {
        return bad(c, "leaf page %llu has a duplicate-data node; no tiercache database has those",
                   (unsigned long long)pgno);
    }
    if (nflags & F_SUBDATA) {
        if (kind != TREE_MAIN || (nflags & F_BIGDATA) || dsize != DB_SIZE) {
            return bad(c, "leaf page %llu has a misplaced named-database node",
                       (unsigned long long)pgno);
        }
        struct db d = db_at(data);
        if (d.root == P_INVALID) {
            return d.depth == 0 ? TC_OK
                                : bad(c, "an empty named database of depth %u", (unsigned)d.depth);
        }
        if (d.depth == 0 || d.depth > STACK_MAX) {
            return bad(c, "a named database of depth %u", (unsigned)d.depth);
        }
        /* Its pages go in the buffers after the main tree's path. */
        return walk(c, d.root, next_buf, 1, d.depth, TREE_NAMED);
    }
    if (kind == TREE_NAMED) {
        c->rep->entries++;
    }
    if (nflags & F_BIGDATA) {
        if (kind != TREE_FREE) {
            return check_overflow(c, rd64(data), dsize, NULL);
        }
        if (dsize > (uint64_t)1 << 31) {
            return bad(c, "a free-list record of %llu bytes", (unsigned long long)dsize);
        }
        unsigned char *buf = malloc((size_t)dsize);
        if (buf == NULL) {
            return TC_ENOMEM;
        }
        enum tc_status st = check_overflow(c, rd64(data), dsize, buf);
        if (st == TC_OK) {
            st = check_free_record(c, buf, dsize);
        }
        free(buf);
        return st;
    }
    return kind == TREE_FREE ? check_free_record(c, data, dsize) : TC_OK;
}

/* The page at pgno, at tree level `level` of `depth` (1 = root), read into
 * page buffer `buf`. */
static enum tc_status walk(struct ck *c, uint64_t pgno, unsigned buf, unsigned level,
                           unsigned depth, enum tree_kind kind)
{
    enum tc_status st = claim(c, pgno, 1, "tree");
    if (st != TC_OK) {
        return st;
    }
    /* One buffer per level: a branch's nodes stay readable while its
     * children are walked. */
    unsigned char *p = c->page + (size_t)buf * c->psize;
    if ((st = read_page(c, pgno, p)) != TC_OK) {
        return st;
    }
    c->rep->pages++;
    uint16_t flags = rd16(p + 10), lower = rd16(p + 12), upper = rd16(p + 14);
    int branch = flags == P_BRANCH, leaf = flags == P_LEAF;
    if (rd64(p) != pgno) {
        return bad(c, "page %llu says it is page %llu", (unsigned long long)pgno,
                   (unsigned long long)rd64(p));
    }
    if (!branch && !leaf) {
        return bad(c, "page %llu has flags 0x%x, not a plain branch or leaf",
                   (unsigned long long)pgno, flags);
    }
    if ((level < depth) != branch) {
        return bad(c, "page %llu is a %s at level %u of a tree of depth %u",
                   (unsigned long long)pgno, branch ? "branch" : "leaf", level, depth);
    }
    if (lower < PAGEHDRSZ || (lower - PAGEHDRSZ) % 2 != 0 || upper < lower || upper > c->psize) {
        return bad(c, "page %llu has bounds lower %u upper %u", (unsigned long long)pgno, lower,
                   upper);
    }
    unsigned nkeys = (lower - PAGEHDRSZ) / 2u;
    if (branch && nkeys == 0) {
        return bad(c, "page %llu holds %u nodes", (unsigned long long)pgno, nkeys);
    }
    if (branch) {
        c->rep->branch++;
    } else {
        c->rep->leaf++;
    }
    for (unsigned i = 0; i < nkeys; i++) {
        uint16_t off = rd16(p + PAGEHDRSZ + 2u * i);
        if (off < upper || off % 2 != 0 || (size_t)off + NODESIZE > c->psize) {
            return bad(c, "page %llu node %u at offset %u", (unsigned long long)pgno, i, off);
        }
        const unsigned char *node = p + off;
        uint64_t lohi = (uint64_t)rd16(node) | (uint64_t)rd16(node + 2) << 16;
        uint16_t nflags = rd16(node + 4), ksize = rd16(node + 6);
        uint64_t end = (uint64_t)off + NODESIZE + ksize;
        if (branch) {
            if (end > c->psize) {
                return bad(c, "branch page %llu node %u runs past the page",
                           (unsigned long long)pgno, i);
            }
            uint64_t child = lohi | (uint64_t)nflags << 32;
            if ((st = walk(c, child, buf + 1, level + 1, depth, kind)) != TC_OK) {
                return st;
            }
            /* The child walk used the buffers below this level only. */
            continue;
        }
        if (nflags & ~(F_BIGDATA | F_SUBDATA | F_DUPDATA)) {
            return bad(c, "leaf page %llu node %u has flags 0x%x", (unsigned long long)pgno, i,
                       nflags);
        }
        uint64_t inline_size = (nflags & F_BIGDATA) ? 8u : lohi;
        if (end + inline_size > c->psize) {
            return bad(c, "leaf page %llu node %u runs past the page", (unsigned long long)pgno, i);
        }
        if (kind == TREE_FREE && ksize != 8) {
            return bad(c, "free-list page %llu node %u has a %u-byte key", (unsigned long long)pgno,
                       i, ksize);
        }
        if ((st = check_leaf_data(c, node, nflags, lohi, kind, pgno, buf + 1)) != TC_OK) {
            return st;
        }
    }
    return TC_OK;
}

_Static_assert(META_END == TC_LMDB_META_SIZE && META_TXNID == TC_LMDB_META_TXNID_OFF,
               "one meta page layout");

const char *tc_lmdb_meta_decode(const unsigned char *b, struct tc_lmdb_meta *out)
{
    if (!(rd16(b + 10) & P_META) || rd32(b + META_OFF) != LMDB_MAGIC) {
        return "not an LMDB meta page";
    }
    if (rd32(b + META_OFF + 4) != LMDB_VERSION) {
        return "unknown LMDB data version";
    }
    uint64_t ps = rd32(b + META_DBS); /* mm_dbs[FREE_DBI].md_pad */
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) {
        return "impossible page size";
    }
    uint64_t last = rd64(b + META_LAST_PG);
    if (last < 1 || last >= (1ull << 44) / ps) {
        return "impossible last page";
    }
    for (unsigned i = 0; i < 2; i++) {
        uint64_t root = db_at(b + META_DBS + i * DB_SIZE).root;
        if (root != P_INVALID && (root < 2 || root > last)) {
            return "a root page beyond the last page";
        }
    }
    out->pgno = rd64(b);
    out->psize = ps;
    out->last_pg = last;
    out->txnid = rd64(b + META_TXNID);
    return NULL;
}

/* The meta page of the snapshot with id txnid, from pages 0 and 1. */
static enum tc_status find_meta(struct ck *c, uint64_t txnid, unsigned char *meta)
{
    for (uint64_t m = 0; m < 2; m++) {
        enum tc_status st = read_page(c, m, meta);
        if (st != TC_OK) {
            return st;
        }
        if (rd64(meta + META_TXNID) == txnid) {
            struct tc_lmdb_meta mv;
            const char *why = tc_lmdb_meta_decode(meta, &mv);
            if (why != NULL || mv.pgno != m) {
                return bad(c, "meta page %llu is damaged: %s", (unsigned long long)m,
                           why ? why : "it says it is the other one");
            }
            return TC_OK;
        }
    }
    return TC_EAGAIN;
}

static enum tc_status check_tree(struct ck *c, const unsigned char *dbp, enum tree_kind kind,
                                 const char *name)
{
    struct db d = db_at(dbp);
    if (d.root == P_INVALID) {
        return d.depth == 0 ? TC_OK : bad(c, "the empty %s tree has depth %u", name, d.depth);
    }
    if (d.depth == 0 || d.depth > STACK_MAX) {
        return bad(c, "the %s tree has depth %u", name, (unsigned)d.depth);
    }
    return walk(c, d.root, 0, 1, d.depth, kind);
}

enum tc_status tc_lmdb_check(MDB_env *env, MDB_txn *txn, struct tc_lmdb_check_report *report)
{
    struct ck c = {.rep = report};
    memset(report, 0, sizeof(*report));
    MDB_stat ms;
    struct stat fs;
    if (mdb_env_get_fd(env, &c.fd) != 0 || mdb_env_stat(env, &ms) != 0 || fstat(c.fd, &fs) != 0) {
        return TC_EIO;
    }
    c.psize = ms.ms_psize;
    if (c.psize < 512 || c.psize > 65536 || c.psize < META_END) {
        return bad(&c, "page size %zu", c.psize);
    }
    enum tc_status st = TC_ENOMEM;
    unsigned char *meta = malloc(c.psize);
    c.scratch = malloc(c.psize);
    c.page = malloc(c.psize * 2 * STACK_MAX); /* the main tree's path, then a named one's */
    if (meta == NULL || c.scratch == NULL || c.page == NULL) {
        goto out;
    }
    if ((st = find_meta(&c, (uint64_t)mdb_txn_id(txn), meta)) != TC_OK) {
        goto out;
    }
    c.last_pg = rd64(meta + META_LAST_PG);
    uint64_t file_pages = (uint64_t)fs.st_size / c.psize;
    report->last_page = c.last_pg;
    if (rd32(meta + META_DBS) != c.psize) {
        st = bad(&c, "the meta page says page size %u, the environment %zu", rd32(meta + META_DBS),
                 c.psize);
        goto out;
    }
    if (c.last_pg < 1 || c.last_pg > ((uint64_t)1 << 40)) {
        st = bad(&c, "the meta page says the last page is %llu", (unsigned long long)c.last_pg);
        goto out;
    }
    /* Reached pages must exist: reading one past the end of the file is
     * SIGBUS through the map. (Free pages may lie past it.) */
    c.limit = c.last_pg + 1 < file_pages ? c.last_pg + 1 : file_pages;
    c.seen = calloc((size_t)(c.last_pg / 8 + 1), 1);
    if (c.seen == NULL) {
        st = TC_ENOMEM;
        goto out;
    }
    st = check_tree(&c, meta + META_DBS, TREE_FREE, "free-list");
    if (st == TC_OK) {
        st = check_tree(&c, meta + META_DBS + DB_SIZE, TREE_MAIN, "main");
    }
out:
    free(c.seen);
    free(c.page);
    free(c.scratch);
    free(meta);
    return st;
}
