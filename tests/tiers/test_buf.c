/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Tests of tiers/buf.c's views: a buffer lent a block's bytes reads as any
 * buffer, and no call that may write (reserve, set, append, growing or
 * not) ever writes into the block, which other views and the block's
 * owner still read. The last reference frees the block (ASan: no leak, no
 * use after free).
 */
#include "tiers/buf.h"

#include <criterion/criterion.h>
#include <string.h>

static struct tc_buf_block *block_of(const char *s)
{
    struct tc_buf_block *blk = tc_buf_block_new(s, strlen(s));
    cr_assert_not_null(blk);
    return blk;
}

static void expect_block(const struct tc_buf_block *blk, const char *s)
{
    cr_assert_eq(tc_buf_block_len(blk), strlen(s));
    cr_assert_eq(memcmp(tc_buf_block_data(blk), s, strlen(s)), 0, "the block was written into");
}

Test(buf, a_view_reads_the_block_and_releases_its_own_storage)
{
    struct tc_buf_block *blk = block_of("hot value");
    struct tc_buf b = TC_BUF_INIT;
    cr_assert_eq(tc_buf_set(&b, "own storage", 11), TC_OK);
    tc_buf_view(&b, blk);
    cr_assert_eq(b.len, 9);
    cr_assert_eq(b.data, tc_buf_block_data(blk), "a view, not a copy");
    cr_assert_eq(memcmp(b.data, "hot value", 9), 0);
    tc_buf_block_unref(blk); /* the owner lets go: the view keeps it */
    cr_assert_eq(memcmp(b.data, "hot value", 9), 0);
    tc_buf_deinit(&b); /* the last reference */
    cr_assert_null(b.data);
}

Test(buf, every_write_to_a_view_goes_to_storage_of_its_own)
{
    struct tc_buf_block *blk = block_of("0123456789abcdef");
    struct tc_buf b = TC_BUF_INIT;

    /* Append, with len cut to 0 first (as a tier that reuses a buffer). */
    tc_buf_view(&b, blk);
    b.len = 0;
    cr_assert_eq(tc_buf_append(&b, "XY", 2), TC_OK);
    cr_assert_eq(b.len, 2);
    cr_assert_eq(memcmp(b.data, "XY", 2), 0);
    cr_assert_neq(b.data, tc_buf_block_data(blk));
    expect_block(blk, "0123456789abcdef");

    /* Append at the end keeps the view's bytes in front. */
    tc_buf_view(&b, blk);
    cr_assert_eq(tc_buf_append(&b, "!", 1), TC_OK);
    cr_assert_eq(b.len, 17);
    cr_assert_eq(memcmp(b.data, "0123456789abcdef!", 17), 0);
    expect_block(blk, "0123456789abcdef");

    /* Reserve within the view's length, then a write into data. */
    tc_buf_view(&b, blk);
    cr_assert_eq(tc_buf_reserve(&b, 4), TC_OK);
    cr_assert_neq(b.data, tc_buf_block_data(blk));
    cr_assert_geq(b.cap, 16);
    cr_assert_eq(memcmp(b.data, "0123456789abcdef", 16), 0, "reserve keeps the contents");
    memcpy(b.data, "WXYZ", 4);
    expect_block(blk, "0123456789abcdef");

    /* Set, shorter and longer, and set to nothing. */
    tc_buf_view(&b, blk);
    cr_assert_eq(tc_buf_set(&b, "ab", 2), TC_OK);
    cr_assert_eq(memcmp(b.data, "ab", 2), 0);
    tc_buf_view(&b, blk);
    cr_assert_eq(tc_buf_set(&b, "a much longer value than the block", 34), TC_OK);
    tc_buf_view(&b, blk);
    cr_assert_eq(tc_buf_set(&b, NULL, 0), TC_OK);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(tc_buf_append(&b, "q", 1), TC_OK);
    expect_block(blk, "0123456789abcdef");

    /* Two views of one block: one written, the other unchanged. */
    struct tc_buf v2 = TC_BUF_INIT;
    tc_buf_view(&b, blk);
    tc_buf_view(&v2, blk);
    cr_assert_eq(tc_buf_append(&b, "+", 1), TC_OK);
    cr_assert_eq(memcmp(v2.data, "0123456789abcdef", 16), 0);
    tc_buf_deinit(&b);
    tc_buf_deinit(&v2);
    expect_block(blk, "0123456789abcdef");
    tc_buf_block_unref(blk);
}

Test(buf, an_empty_block_and_a_null_unref)
{
    struct tc_buf_block *blk = tc_buf_block_new(NULL, 0);
    cr_assert_not_null(blk);
    struct tc_buf b = TC_BUF_INIT;
    tc_buf_view(&b, blk);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(tc_buf_append(&b, "z", 1), TC_OK);
    cr_assert_eq(b.data[0], 'z');
    tc_buf_deinit(&b);
    tc_buf_block_unref(blk);
    tc_buf_block_unref(NULL);
}
