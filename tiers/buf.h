/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A growable byte buffer owned by its caller: tier gets copy values into one,
 * so that no pointer into an LMDB map, a shm slot or a Redis reply outlives
 * the call that produced it (STYLE R7).
 */
#ifndef TC_TIERS_BUF_H
#define TC_TIERS_BUF_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tc_buf {
    uint8_t *data; /* NULL until the first reserve; owned by the buffer */
    size_t len;    /* bytes in use */
    size_t cap;    /* bytes allocated */
};

#define TC_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
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

/** Appends @p n bytes from @p p. TC_OK or TC_ENOMEM (unchanged). Inline:
 * a response is built of a dozen small appends, and a call to another
 * library for each was 6% of a 100-byte hit's instructions. */
static inline enum tc_status tc_buf_append(struct tc_buf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len) {
        return tc_buf_append_grow(b, p, n);
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
    return TC_OK;
}

#endif
