/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The access log's line formats (access-log-format):
 *
 *   combined  nginx/Apache "combined" plus the cache's fields:
 *     127.0.0.1 - - [05/Dec/2026:10:24:42 +0000] "GET /cache/k HTTP/1.1" 200 41 "-" "curl/7.88.1"
 * cache=HIT tier=l1 us=87 json      one object per line:
 *     {"time":"2026-12-05T10:24:42.123Z","remote":"127.0.0.1","method":"GET","path":"/cache/k",
 *      "query":"","protocol":"HTTP/1.1","status":200,"bytes":41,"referer":"","user_agent":"curl/7.88.1",
 *      "cache":"HIT","tier":"l1","duration_us":87}
 *
 * Credentials never reach a line: no header but Referer and User-Agent is
 * written, and the caller masks token= in the query. Bytes a client chose
 * (path, query, headers) are escaped (\xHH in combined, \u00HH in json), so
 * a line is always one line of printable ASCII and json lines always parse.
 */
#ifndef TC_SRC_ACCESS_LOG_H
#define TC_SRC_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

enum tc_access_format {
    TC_ACCESS_COMBINED = 0,
    TC_ACCESS_JSON = 1,
};

/** One answered request. Strings may be NULL ("-" or ""); path/query are length-delimited. */
struct tc_access_entry {
    const char *remote; /* client address, no port */
    const char *method;
    const char *path;
    size_t path_len;
    const char *query; /* already masked */
    size_t query_len;
    unsigned http_major, http_minor;
    int status;
    size_t bytes; /* body bytes sent */
    uint64_t duration_us;
    const char *referer, *user_agent;
    const char *cache; /* X-Cache: HIT, MISS, STALE, or NULL */
    const char *tier;  /* X-Cache-Tier: l1, l2, ..., or NULL */
    uint64_t now_ms;   /* wall clock, ms since the epoch */
};

/** Parses "combined" or "json"; -1 otherwise. */
int tc_access_format_parse(const char *s);

/**
 * Formats @p e as one line (no newline) of format @p fmt into @p out
 * (@p cap bytes, NUL-terminated; fields are cut, never the line's
 * structure). Returns the line's length.
 */
size_t tc_access_format(enum tc_access_format fmt, const struct tc_access_entry *e, char *out,
                        size_t cap);

#endif
