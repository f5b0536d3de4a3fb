/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Small text checks shared by the API handlers and read-through: UTF-8 and
 * plain-ASCII tests, media types without their parameters, and the decimal
 * writer the hit path uses instead of snprintf.
 */
#ifndef TC_SRC_TEXT_H
#define TC_SRC_TEXT_H

#include <stddef.h>
#include <stdint.h>

/** Writes @p v in decimal at @p out (at most 20 bytes, no NUL); returns the
 * length. A tenth of snprintf's instructions: a hit writes two or three. */
size_t tc_text_u64(char *out, uint64_t v);

/** 1 if s[0..n) is printable ASCII other than '"' and '\\' (its own JSON
 * string body: the common case needs no escaping). */
int tc_text_plain_ascii(const char *s, size_t n);

/** 1 if s[0..n) is valid UTF-8 with no control byte, '"' or '\\': its own
 * JSON string body, copied into a response as it is. Decided once, when a
 * value is written (TC_ITEM_F_PLAIN), so that reads need not scan. */
int tc_text_json_plain(const char *s, size_t n);

/** 1 if s[0..n) is valid UTF-8 (NULs allowed). */
int tc_text_utf8_valid(const char *s, size_t n);

/** 1 if the media type @p ct, without its parameters and compared without
 * case, is @p want ("application/json; charset=utf-8" is application/json). */
int tc_text_ctype_is(const char *ct, const char *want);

#endif
