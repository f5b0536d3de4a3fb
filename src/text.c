/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/text.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* "00" to "99": two digits per division (Alexandrescu's digits10/itoa). */
static const char digit_pairs[201] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

size_t tc_text_u64(char *out, uint64_t v)
{
    /* Digits counted first, then written in place from the last, two per
     * division: no scratch buffer and no memcpy call for a few bytes. */
    size_t n = 1;
    for (uint64_t p = 10; n < 20 && v >= p; p *= 10) {
        n++;
    }
    size_t i = n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        out[--i] = digit_pairs[2 * r + 1];
        out[--i] = digit_pairs[2 * r];
    }
    if (v >= 10) {
        out[--i] = digit_pairs[2 * v + 1];
        out[--i] = digit_pairs[2 * v];
    } else {
        out[--i] = (char)('0' + v);
    }
    return n;
}

/*
 * Every cache hit answered as JSON scans its value here, so the scan goes a
 * word at a time with the exact "any byte" tests of Bit Twiddling Hacks
 * (hasless, hasmore, haszero): below 0x20, above 0x7e, '"', '\\'.
 */
int tc_text_plain_ascii(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        uint64_t bad = ((w - ones * 0x20) & ~w) | ((w + ones * (127 - 0x7e)) | w) |
                       ((q - ones) & ~q) | ((b - ones) & ~b);
        if ((bad & high) != 0) {
            return 0;
        }
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
            return 0;
        }
    }
    return 1;
}

int tc_text_json_plain(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') {
            return 0;
        }
    }
    return tc_text_utf8_valid(s, n);
}

/* jansson's decoder is the UTF-8 check; the ASCII scan spares it the
 * common case. */
int tc_text_utf8_valid(const char *s, size_t n)
{
    if (tc_text_plain_ascii(s, n)) {
        return 1;
    }
    json_t *j = json_stringn(n ? s : "", n);
    json_decref(j);
    return j != NULL;
}

int tc_text_ctype_is(const char *ct, const char *want)
{
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0) {
        return 0;
    }
    ct += n;
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    return *ct == '\0' || *ct == ';';
}
