/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Private to shm/: what shm/lock.c needs of an open ring. Not API; nothing
 * outside shm/ includes it.
 */
#ifndef TC_SHM_RING_INTERNAL_H
#define TC_SHM_RING_INTERNAL_H

#include "shm/ring.h"
#include "shm/ring_layout.h"

/* The lock table of an attached segment, located once at attach from the
 * validated header (later scribbles on the header cannot move it). */
struct tc_ring_locks_ {
    struct tc_ring_lock_bucket *bucket;
    uint64_t mask; /* buckets - 1 */
    struct tc_ring_lock_epoch *epoch;
    uint64_t seed; /* the segment's seed, for name hashes and seals */
    uint64_t pid;  /* this process */
};

/* The counter/limit cells of an attached segment, located likewise. */
struct tc_ring_cells_ {
    struct tc_ring_cell_bucket *bucket;
    uint64_t mask; /* buckets - 1 */
    uint64_t seed;
    struct tc_ring_mlog *mlog;
    uint64_t mlog_mask; /* slabs / TC_RING_CELL_WAYS - 1 */
};

/** The cell table of @p r. */
const struct tc_ring_cells_ *tc_ring_cells_(struct tc_ring *r);

/** The lock table of @p r. */
const struct tc_ring_locks_ *tc_ring_locks_(struct tc_ring *r);

/** Entries held by a live lease now (a walk of the table, for stats). */
uint64_t tc_ring_locks_held_(const struct tc_ring_locks_ *l);

#endif
