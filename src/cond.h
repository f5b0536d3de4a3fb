/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * HTTP validators and conditional requests (RFC 9110 §8.8, §13) for cache
 * items: the ETag of an item, the lists of entity-tags in If-Match and
 * If-None-Match, and HTTP-dates for Last-Modified, If-Modified-Since and Date.
 *
 * The ETag is computed from the plaintext value, its encoding and the
 * item's created time, never from the check a tier stores: with
 * encryption at rest that check covers other bytes in each tier, and the
 * ETag must be the same whichever tier answers. Two writes of the same
 * value at different times get different ETags (a compare-and-set sees
 * the second write), and every reader of one write sees one ETag.
 *
 * Pure functions; any thread.
 */
#ifndef TC_SRC_COND_H
#define TC_SRC_COND_H

#include "tiers/item.h"

#include <stddef.h>
#include <stdint.h>

/** Length of a formatted ETag: '"', 16 hex digits, '"'. */
#define TC_COND_ETAG_LEN 18u

/** Length of an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT". */
#define TC_COND_DATE_LEN 29u

/** Writes @p etag (tc_item_etag(), tiers/item.h) as a strong ETag ("\"0123456789abcdef\"") and a
 * NUL into
 * @p out; returns TC_COND_ETAG_LEN. */
size_t tc_cond_etag_format(uint64_t etag, char out[TC_COND_ETAG_LEN + 1]);

/**
 * Whether the If-Match or If-None-Match value @p list (a comma-separated
 * list of entity-tags, or "*") matches the current item: @p exists is 0
 * when there is none, else @p etag is its ETag. "*" matches any existing
 * item. @p weak: the weak comparison (If-None-Match: a W/ prefix is
 * ignored); else the strong one (If-Match: a W/ tag never matches).
 * A malformed member matches nothing.
 */
int tc_cond_match(const char *list, int exists, uint64_t etag, int weak);

/** 1 if @p list is "*" (spaces around allowed). */
int tc_cond_is_any(const char *list);

/**
 * Writes @p ms since the Unix epoch as an IMF-fixdate and a NUL into
 * @p out; returns TC_COND_DATE_LEN.
 */
size_t tc_cond_http_date(uint64_t ms, char out[TC_COND_DATE_LEN + 1]);

/**
 * If-Modified-Since (RFC 9110 §13.1.3): 1 when an item created at
 * @p created_ms is not newer than the date @p ims (to the second), so the
 * answer is 304; 0 otherwise, and for a date that does not parse.
 */
int tc_cond_not_modified_since(const char *ims, uint64_t created_ms);

#endif
