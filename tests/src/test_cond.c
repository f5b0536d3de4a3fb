/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * src/cond.c: ETags, entity-tag lists and HTTP-dates, as pure functions.
 */
#include "src/cond.h"

#include <criterion/criterion.h>
#include <string.h>

Test(cond, etag_is_strong_and_formatted_as_sixteen_hex_digits)
{
    char out[TC_COND_ETAG_LEN + 1];
    cr_assert_eq(tc_cond_etag_format(0x0123456789abcdefull, out), TC_COND_ETAG_LEN);
    cr_assert_str_eq(out, "\"0123456789abcdef\"");
    tc_cond_etag_format(0, out);
    cr_assert_str_eq(out, "\"0000000000000000\"");
}

Test(cond, etag_covers_encoding_created_time_and_value)
{
    struct tc_item_hdr a = {.encoding = TC_ENC_JSON, .created_ms = 1000};
    struct tc_item_hdr b = a;
    uint64_t e = tc_item_etag(&a, "1", 1);
    cr_assert_eq(tc_item_etag(&b, "1", 1), e, "same item, same ETag");
    b.expire_ms = 99999; /* not in it: the TTL is not the value */
    b.flags = TC_ITEM_F_GRACE;
    cr_assert_eq(tc_item_etag(&b, "1", 1), e);
    b.encoding = TC_ENC_STRING;
    cr_assert_neq(tc_item_etag(&b, "1", 1), e, "the JSON 1 and the string \"1\" differ");
    b = a;
    b.created_ms = 1001;
    cr_assert_neq(tc_item_etag(&b, "1", 1), e, "a rewrite of the same value is another version");
    cr_assert_neq(tc_item_etag(&a, "2", 1), e);
    cr_assert_neq(tc_item_etag(&a, NULL, 0), e);
}

struct match_case {
    const char *list;
    int exists, weak, want;
};

/* Ours is "\"00000000000000ff\"" throughout. */
static const struct match_case match_cases[] = {
    {"\"00000000000000ff\"", 1, 0, 1},
    {"\"00000000000000ff\"", 0, 0, 0}, /* no current value: nothing matches */
    {"*", 1, 0, 1},
    {" * ", 1, 1, 1},
    {"*", 0, 0, 0},
    {"*", 0, 1, 0},
    {"\"00000000000000fe\"", 1, 0, 0},
    {"\"00000000000000fe\", \"00000000000000ff\"", 1, 0, 1},
    {"\"a\",\"00000000000000ff\"", 1, 1, 1},
    {" ,, \"00000000000000ff\" ,", 1, 0, 1},
    {"W/\"00000000000000ff\"", 1, 1, 1}, /* If-None-Match: weak comparison */
    {"W/\"00000000000000ff\"", 1, 0, 0}, /* If-Match: strong, a weak tag never matches */
    {"\"00000000000000FF\"", 1, 0, 0},   /* opaque-tags compare byte for byte */
    {"00000000000000ff", 1, 0, 0},       /* unquoted: malformed */
    {"\"00000000000000ff", 1, 0, 0},     /* unterminated */
    {"\"x\" junk, \"00000000000000ff\"", 1, 0, 0},
    {"", 1, 0, 0},
    {"**", 1, 0, 0},
};

Test(cond, entity_tag_lists)
{
    for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
        const struct match_case *c = &match_cases[i];
        cr_expect_eq(tc_cond_match(c->list, c->exists, 0xff, c->weak), c->want,
                     "'%s' exists=%d weak=%d: want %d", c->list, c->exists, c->weak, c->want);
    }
}

Test(cond, http_dates_are_imf_fixdate_in_gmt)
{
    char out[TC_COND_DATE_LEN + 1];
    cr_assert_eq(tc_cond_http_date(784111777000ull, out), TC_COND_DATE_LEN);
    cr_assert_str_eq(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    tc_cond_http_date(1796461200999ull, out);
    cr_assert_str_eq(out, "Sat, 05 Dec 2026 09:00:00 GMT");
    cr_assert_eq(strlen(out), TC_COND_DATE_LEN);
}

Test(cond, if_modified_since_compares_whole_seconds)
{
    const char *d = "Sun, 06 Nov 1994 08:49:37 GMT";
    cr_assert(tc_cond_not_modified_since(d, 784111777000ull));
    cr_assert(tc_cond_not_modified_since(d, 784111777999ull), "same second: not modified");
    cr_assert(tc_cond_not_modified_since(d, 784111700000ull));
    cr_assert(!tc_cond_not_modified_since(d, 784111778000ull), "a second later: modified");
    cr_assert(!tc_cond_not_modified_since("yesterday", 0));
    cr_assert(tc_cond_not_modified_since("Sunday, 06-Nov-94 08:49:37 GMT", 784111777000ull));
}
