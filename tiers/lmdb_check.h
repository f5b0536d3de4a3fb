/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A structural check of an LMDB environment's B-trees, for the lmdb:// tier
 * (tiers/tier_lmdb.c), before it lets LMDB loose on a file it did not write
 * in this process's lifetime.
 *
 * Why: LMDB trusts its pages. A flipped bit in a node offset, a size or a
 * child page number makes mdb_get read (or the writer memmove) far outside
 * the page: SIGSEGV, or SIGBUS past the end of a truncated file. The item
 * check (tiers/item.h) catches damaged *values*; this catches damaged
 * *structure*, so that every page LMDB will follow is one it can follow.
 *
 * What is checked, in the snapshot of a read transaction the caller holds
 * (pages of a live snapshot are never reused, so other processes may go on
 * writing meanwhile):
 *
 *   meta page   the one whose txnid is the transaction's: magic, version,
 *               page size, last page, the free and main tree roots
 *   every page  reached from the free tree, the main tree and each named
 *   reached     database in it: its own number, its kind (branch, leaf,
 *               overflow), lower/upper bounds, every node inside the page,
 *               child and overflow page numbers inside the file and not
 *               past the last page, leaves at the tree's depth (at most
 *               LMDB's cursor stack), no page reached twice
 *   free lists  every listed page number in range, none also in a tree
 *
 * Not checked: key order (a misplaced key is a miss, not a crash) and
 * values (the item check's job). LMDB's format is read from the file with
 * pread, never through the map, and never written.
 *
 * Cost: one read of every page in use, about as long as reading the file.
 */
#ifndef TC_TIERS_LMDB_CHECK_H
#define TC_TIERS_LMDB_CHECK_H

#include "shm/status.h"

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

/*
 * LMDB's meta page, for code that must read it before LMDB does (the
 * lmdb:// tier checks both at open and puts one back after a host crash).
 * Its first TC_LMDB_META_SIZE bytes are the page header and MDB_meta.
 */
#define TC_LMDB_META_SIZE      152u
#define TC_LMDB_META_TXNID_OFF 144u /* mm_txnid: where a copy is relabelled */

/** The fields of a meta page that tiercache uses. */
struct tc_lmdb_meta {
    uint64_t pgno;    /* the page's own number: 0 or 1 */
    uint64_t psize;   /* page size */
    uint64_t last_pg; /* last page in use */
    uint64_t txnid;   /* the commit it names */
};

/**
 * Decodes and checks the meta page at @p b (TC_LMDB_META_SIZE bytes, any
 * alignment): its kind, magic, data version, a page size LMDB could have
 * written (a power of two, 512..65536), a last page inside 16 TiB, and tree
 * roots no further than the last page.
 * @return NULL with *out filled when it is sound, else what is wrong with it.
 */
const char *tc_lmdb_meta_decode(const unsigned char *b, struct tc_lmdb_meta *out);

/** What the check saw. */
struct tc_lmdb_check_report {
    uint64_t pages; /* pages read (overflow runs count their first page) */
    uint64_t branch, leaf, overflow;
    uint64_t free_pages; /* pages listed in the free tree */
    uint64_t entries;    /* leaf nodes in the named databases */
    uint64_t last_page;  /* of the snapshot */
    char problem[200];   /* on TC_ECORRUPT: the first problem found, with its page */
};

/**
 * Checks the snapshot @p txn sees in @p env (open, with @p txn a read
 * transaction the caller keeps alive for the duration of the call).
 * @return TC_OK when every reachable page is sound; TC_ECORRUPT when one is
 *         not (report->problem says which and why); TC_EAGAIN when writers
 *         in other processes committed twice before this call could read
 *         the snapshot's meta page (renew the transaction and call again);
 *         TC_ENOMEM; TC_EIO when the file cannot be read.
 * Thread safety: uses only @p txn's thread and the caller's memory.
 */
enum tc_status tc_lmdb_check(MDB_env *env, MDB_txn *txn, struct tc_lmdb_check_report *report);

#endif
