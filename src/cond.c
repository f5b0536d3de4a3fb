/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/cond.h"
#include "src/origin.h"

#include <string.h>
#include <time.h>

size_t tc_cond_etag_format(uint64_t etag, char out[TC_COND_ETAG_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    out[0] = '"';
    for (int i = 0; i < 16; i++) {
        out[1 + i] = hex[(etag >> (60 - 4 * i)) & 0xf];
    }
    out[17] = '"';
    out[18] = '\0';
    return TC_COND_ETAG_LEN;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return p;
}

int tc_cond_is_any(const char *list)
{
    const char *p = skip_ws(list);
    return *p == '*' && *skip_ws(p + 1) == '\0';
}

int tc_cond_match(const char *list, int exists, uint64_t etag, int weak)
{
    if (tc_cond_is_any(list)) {
        return exists;
    }
    if (!exists) {
        return 0;
    }
    char ours[TC_COND_ETAG_LEN + 1];
    tc_cond_etag_format(etag, ours);
    const char *p = list;
    for (;;) {
        p = skip_ws(p);
        if (*p == ',') {
            p++; /* empty members are allowed (RFC 9110 §5.6.1) */
            continue;
        }
        if (*p == '\0') {
            return 0;
        }
        int is_weak = 0;
        if (p[0] == 'W' && p[1] == '/') {
            is_weak = 1;
            p += 2;
        }
        if (*p != '"') {
            return 0; /* malformed: nothing after it can be trusted */
        }
        const char *end = strchr(p + 1, '"');
        if (end == NULL) {
            return 0;
        }
        size_t n = (size_t)(end - p) + 1;
        if ((weak || !is_weak) && n == TC_COND_ETAG_LEN && memcmp(p, ours, n) == 0) {
            return 1;
        }
        p = skip_ws(end + 1);
        if (*p != ',' && *p != '\0') {
            return 0;
        }
    }
}

size_t tc_cond_http_date(uint64_t ms, char out[TC_COND_DATE_LEN + 1])
{
    static const char days[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999) {
        memset(&tm, 0, sizeof(tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
        tm.tm_wday = 4;
    }
    /* By hand, not strftime: its %a and %b follow the locale. */
    char *p = out;
    memcpy(p, days[tm.tm_wday], 3);
    p[3] = ',';
    p[4] = ' ';
    p[5] = (char)('0' + tm.tm_mday / 10);
    p[6] = (char)('0' + tm.tm_mday % 10);
    p[7] = ' ';
    memcpy(p + 8, months[tm.tm_mon], 3);
    p[11] = ' ';
    int y = tm.tm_year + 1900;
    p[12] = (char)('0' + y / 1000);
    p[13] = (char)('0' + y / 100 % 10);
    p[14] = (char)('0' + y / 10 % 10);
    p[15] = (char)('0' + y % 10);
    p[16] = ' ';
    p[17] = (char)('0' + tm.tm_hour / 10);
    p[18] = (char)('0' + tm.tm_hour % 10);
    p[19] = ':';
    p[20] = (char)('0' + tm.tm_min / 10);
    p[21] = (char)('0' + tm.tm_min % 10);
    p[22] = ':';
    p[23] = (char)('0' + tm.tm_sec / 10);
    p[24] = (char)('0' + tm.tm_sec % 10);
    memcpy(p + 25, " GMT", 5); /* with the NUL */
    return TC_COND_DATE_LEN;
}

int tc_cond_not_modified_since(const char *ims, uint64_t created_ms)
{
    int64_t since;
    if (tc_http_date_parse(ims, &since) != 0 || since < 0) {
        return 0;
    }
    /* Last-Modified has whole seconds: compare what the client was sent. */
    return (int64_t)(created_ms / 1000) <= since;
}
