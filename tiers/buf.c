/* SPDX-License-Identifier: BSD-2-Clause */
#include "tiers/buf.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct tc_buf_block {
    atomic_size_t refs;
    size_t len;
    uint8_t data[];
};

struct tc_buf_block *tc_buf_block_new(const void *p, size_t n)
{
    if (n > SIZE_MAX - sizeof(struct tc_buf_block)) {
        return NULL;
    }
    struct tc_buf_block *blk = malloc(sizeof(*blk) + n);
    if (blk == NULL) {
        return NULL;
    }
    atomic_init(&blk->refs, 1);
    blk->len = n;
    if (n > 0) {
        memcpy(blk->data, p, n);
    }
    return blk;
}

const uint8_t *tc_buf_block_data(const struct tc_buf_block *blk)
{
    return blk->data;
}

size_t tc_buf_block_len(const struct tc_buf_block *blk)
{
    return blk->len;
}

void tc_buf_block_unref(struct tc_buf_block *blk)
{
    /* Acquire-release: every view's reads happen before the free, on
     * whichever thread drops the last reference (no fence: TSan reads
     * orderings on the atomic, not fences). */
    if (blk != NULL && atomic_fetch_sub_explicit(&blk->refs, 1, memory_order_acq_rel) == 1) {
        free(blk);
    }
}

void tc_buf_init(struct tc_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->block = NULL;
}

void tc_buf_deinit(struct tc_buf *b)
{
    if (b->block != NULL) {
        tc_buf_block_unref(b->block);
    } else {
        free(b->data);
    }
    tc_buf_init(b);
}

void tc_buf_view(struct tc_buf *b, struct tc_buf_block *blk)
{
    atomic_fetch_add_explicit(&blk->refs, 1, memory_order_relaxed);
    tc_buf_deinit(b);
    b->data = blk->data;
    b->len = b->cap = blk->len;
    b->block = blk;
}

/* A view about to be written: its bytes move to storage of its own. */
static enum tc_status unshare(struct tc_buf *b, size_t n)
{
    size_t cap = n > b->len ? n : b->len;
    uint8_t *p = malloc(cap > 0 ? cap : 1);
    if (p == NULL) {
        return TC_ENOMEM;
    }
    if (b->len > 0) {
        memcpy(p, b->data, b->len);
    }
    tc_buf_block_unref(b->block);
    b->block = NULL;
    b->data = p;
    b->cap = cap > 0 ? cap : 1;
    return TC_OK;
}

enum tc_status tc_buf_reserve(struct tc_buf *b, size_t n)
{
    if (b->block != NULL) {
        return unshare(b, n);
    }
    if (n <= b->cap) {
        return TC_OK;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < n) {
        if (cap > SIZE_MAX / 2) {
            cap = n;
            break;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
        return TC_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return TC_OK;
}

enum tc_status tc_buf_set(struct tc_buf *b, const void *p, size_t n)
{
    if (b->block != NULL) {
        tc_buf_deinit(b); /* the old bytes are not kept: no copy of them */
    }
    enum tc_status st = tc_buf_reserve(b, n);
    if (st != TC_OK) {
        return st;
    }
    if (n > 0) {
        memcpy(b->data, p, n);
    }
    b->len = n;
    return TC_OK;
}

enum tc_status tc_buf_append_grow(struct tc_buf *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - b->len) {
        return TC_ENOMEM;
    }
    enum tc_status st = tc_buf_reserve(b, b->len + n);
    if (st != TC_OK) {
        return st;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return TC_OK;
}
