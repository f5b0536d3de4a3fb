/* SPDX-License-Identifier: BSD-2-Clause */
#include "tiers/buf.h"

#include <stdlib.h>
#include <string.h>

void tc_buf_init(struct tc_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void tc_buf_deinit(struct tc_buf *b)
{
    free(b->data);
    tc_buf_init(b);
}

enum tc_status tc_buf_reserve(struct tc_buf *b, size_t n)
{
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
