/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A growable byte buffer owned by its caller: tier gets copy values into one,
 * so that no pointer into an LMDB map, a shm slot or a Redis reply outlives
 * the call that produced it (STYLE R7).
 *
 * A buffer may instead be a view of a block: refcounted, immutable bytes in
 * the process's own heap that a tier lends (the shm tier's checked copies
 * of hot large values), so that a hit needs no copy at all. A view reads as
 * any buffer; its cap equals its len, and every call that may write
 * (reserve, set, append) first gives it storage of its own, so that no
 * writer ever touches a block. Code that writes into data without one of
 * those calls must not be handed a view.
 */
#ifndef TC_TIERS_BUF_H
#define TC_TIERS_BUF_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tc_buf_block;

struct tc_buf {
    uint8_t *data; /* NULL until the first reserve; owned by the buffer, or the block's */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated (a view: len) */
    struct tc_buf_block *block; /* non-NULL: a view of this block's bytes */
};

#define TC_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0, NULL                                                                           \
    }

/** Initialises @p b empty; no allocation. */
void tc_buf_init(struct tc_buf *b);

/** Releases the storage of @p b and leaves it empty; safe on an empty buffer. */
void tc_buf_deinit(struct tc_buf *b);

/**
 * Makes room for at least @p n bytes in total (not in addition to len); keeps
 * the contents. @return TC_OK, or TC_ENOMEM with @p b unchanged.
 */
enum tc_status tc_buf_reserve(struct tc_buf *b, size_t n);

/** Replaces the contents with @p n bytes from @p p. TC_OK or TC_ENOMEM (unchanged). */
enum tc_status tc_buf_set(struct tc_buf *b, const void *p, size_t n);

/** tc_buf_append() when the bytes do not fit: grows, then appends. */
enum tc_status tc_buf_append_grow(struct tc_buf *b, const void *p, size_t n);

/** A new block holding a copy of @p n bytes from @p p, with one reference
 * (the caller's); NULL without memory. */
struct tc_buf_block *tc_buf_block_new(const void *p, size_t n);

/** The block's bytes and their count. */
const uint8_t *tc_buf_block_data(const struct tc_buf_block *blk);
size_t tc_buf_block_len(const struct tc_buf_block *blk);

/** Drops a reference; the last one frees the block. NULL is a no-op.
 * Thread-safe: a view may be released on another thread. */
void tc_buf_block_unref(struct tc_buf_block *blk);

/** Releases what @p b holds and makes it a view of all of @p blk's bytes,
 * taking a reference of its own. */
void tc_buf_view(struct tc_buf *b, struct tc_buf_block *blk);

/** Appends @p n bytes from @p p. TC_OK or TC_ENOMEM (unchanged). Inline:
 * a response is built of a dozen small appends, and a call to another
 * library for each was 6% of a 100-byte hit's instructions. */
static inline enum tc_status tc_buf_append(struct tc_buf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len || b->block != NULL) {
        return tc_buf_append_grow(b, p, n);
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
    return TC_OK;
}

#endif
