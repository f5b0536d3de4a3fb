/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: damage a closed LMDB environment as a failing disk, a power
 * cut or a careless operator would, byte by byte, and read back where its
 * pages are. The page layout is LMDB 0.9's on a 64-bit host (mdb.c): a
 * 16-byte page header (flags at 10, lower/upper bounds at 12/14, node
 * offsets from 16), meta pages 0 and 1, branch nodes holding their child's
 * page number in their first 6 bytes. Nothing here may run while a process
 * has the environment open.
 */
#ifndef TC_TESTS_SUPPORT_LMDB_DAMAGE_H
#define TC_TESTS_SUPPORT_LMDB_DAMAGE_H

#include <stddef.h>
#include <stdint.h>

/** Page size and last used page of the newest meta page of DIR/data.mdb. 0, or -1. */
int tc_test_lmdb_geometry(const char *dir, uint64_t *psize, uint64_t *last_pg);

/**
 * Root page and depth of the named database (e.g. "tc_data") in DIR, read
 * through LMDB (its record in the main database). 0, or -1.
 */
int tc_test_lmdb_db_root(const char *dir, const char *name, uint64_t *root, unsigned *depth);

/** Reads (writes) page @p pgno of DIR/data.mdb into (from) @p buf of @p psize bytes. 0, or -1. */
int tc_test_lmdb_page_read(const char *dir, uint64_t pgno, unsigned char *buf, size_t psize);
int tc_test_lmdb_page_write(const char *dir, uint64_t pgno, const unsigned char *buf, size_t psize);

/** Number of nodes on a page. */
unsigned tc_test_lmdb_page_nkeys(const unsigned char *page);

/** 1 if the page is a branch page. */
int tc_test_lmdb_page_is_branch(const unsigned char *page);

/** The child page number of node @p i of a branch page; set it. */
uint64_t tc_test_lmdb_branch_child(const unsigned char *page, unsigned i);
void tc_test_lmdb_set_branch_child(unsigned char *page, unsigned i, uint64_t pgno);

/** The key of node @p i of a branch page (node 0's is empty) into @p buf; its length. */
size_t tc_test_lmdb_branch_key(const unsigned char *page, unsigned i, char *buf, size_t cap);

/** Copies a file (the whole of it, holes as zeros). 0, or -1. */
int tc_test_copy_file(const char *from, const char *to);

/** Flips one bit at byte @p off of @p path. 0, or -1. */
int tc_test_flip_bit(const char *path, uint64_t off, unsigned bit);

/** Removes every file in @p dir, then @p dir itself (one level: no subdirectories). */
void tc_test_rm_flat_dir(const char *dir);

#endif
