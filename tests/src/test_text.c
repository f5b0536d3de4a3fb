/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of src/text.c: the word-at-a-time plain-ASCII scan against the
 * byte-at-a-time definition, for every byte value at every position of
 * every length up to three words (alignment and tail included); the
 * decimal writer against printf.
 */
#include "src/text.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int plain_bytewise(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\') {
            return 0;
        }
    }
    return 1;
}

Test(text, plain_ascii_matches_the_definition)
{
    unsigned char buf[32];
    for (size_t n = 0; n <= 25; n++) {
        for (size_t at = 0; at < n; at++) {
            for (unsigned v = 0; v < 256; v++) {
                /* The other bytes: plain, and near each bound. */
                static const unsigned char fill[] = {'a', 0x20, 0x7e, '!', '#', '[', ']'};
                for (size_t f = 0; f < sizeof(fill); f++) {
                    memset(buf, fill[f], sizeof(buf));
                    buf[at + 1] = (unsigned char)v;
                    cr_assert_eq(tc_text_plain_ascii((const char *)buf + 1, n),
                                 plain_bytewise(buf + 1, n), "n %zu at %zu byte 0x%02x fill %c", n,
                                 at, v, fill[f]);
                }
            }
        }
    }
    cr_assert_eq(tc_text_plain_ascii("", 0), 1);
}

static void u64_is_printf(uint64_t v)
{
    char want[24], got[24];
    snprintf(want, sizeof(want), "%" PRIu64, v);
    memset(got, '#', sizeof(got));
    size_t n = tc_text_u64(got, v);
    cr_assert_eq(n, strlen(want), "%s: %zu digits", want, n);
    cr_assert(memcmp(got, want, n) == 0 && got[n] == '#', "%s written as %.*s", want, (int)n, got);
}

Test(text, u64_writes_what_printf_does)
{
    /* Every digit count's ends, then a spread of values. */
    uint64_t p = 1;
    for (int d = 0; d < 20; d++, p *= 10) {
        u64_is_printf(p);
        u64_is_printf(p - 1);
        u64_is_printf(p + 1);
        u64_is_printf(p * 9 + (p - 1)); /* 9...9 */
    }
    u64_is_printf(UINT64_MAX);
    u64_is_printf(UINT64_MAX - 1);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        u64_is_printf(x >> (i % 64));
    }
}
