/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of src/text.c: the word-at-a-time plain-ASCII scan against the
 * byte-at-a-time definition, for every byte value at every position of
 * every length up to three words (alignment and tail included).
 */
#include "src/text.h"

#include <criterion/criterion.h>
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
