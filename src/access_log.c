/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/access_log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int tc_access_format_parse(const char *s)
{
    if (strcmp(s, "combined") == 0) {
        return TC_ACCESS_COMBINED;
    }
    if (strcmp(s, "json") == 0) {
        return TC_ACCESS_JSON;
    }
    return -1;
}

/* A bounded writer: once full, it drops bytes but keeps counting nothing, so
 * the closing characters can still be reserved by the caller. */
struct w {
    char *p;
    size_t n, cap; /* cap excludes the reserve for the line's closing bytes */
};

static void put(struct w *w, const char *s, size_t len)
{
    if (len > w->cap - w->n) {
        len = w->cap - w->n;
    }
    memcpy(w->p + w->n, s, len);
    w->n += len;
}

static void puts_(struct w *w, const char *s)
{
    put(w, s, strlen(s));
}

/* Client-chosen bytes: printable ASCII except '"' and '\' as is, the rest
 * escaped; an escape is never cut in half. */
static void put_escaped(struct w *w, const char *s, size_t len, int json)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; s != NULL && i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            if (w->n == w->cap) {
                return;
            }
            w->p[w->n++] = (char)ch;
            continue;
        }
        char e[6];
        size_t k;
        if (json) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[ch >> 4];
            e[5] = hex[ch & 15];
            k = 6;
        } else {
            e[0] = '\\';
            e[1] = 'x';
            e[2] = hex[ch >> 4];
            e[3] = hex[ch & 15];
            k = 4;
        }
        if (w->cap - w->n < k) {
            return;
        }
        put(w, e, k);
    }
}

static void put_str_or_dash(struct w *w, const char *s, int json)
{
    if (s == NULL || s[0] == '\0') {
        puts_(w, json ? "" : "-");
    } else {
        put_escaped(w, s, strlen(s), json);
    }
}

size_t tc_access_format(enum tc_access_format fmt, const struct tc_access_entry *e, char *out,
                        size_t cap)
{
    char num[160], ts[64];
    time_t sec = (time_t)(e->now_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    /* The closing bytes ('}' or the cache fields) are reserved up front. */
    struct w w = {out, 0, cap > 200 ? cap - 200 : 0};
    if (fmt == TC_ACCESS_JSON) {
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(num, sizeof(num), "{\"time\":\"%s.%03uZ\",\"remote\":\"", ts,
                 (unsigned)(e->now_ms % 1000));
        puts_(&w, num);
        put_str_or_dash(&w, e->remote, 1);
        puts_(&w, "\",\"method\":\"");
        put_str_or_dash(&w, e->method, 1);
        puts_(&w, "\",\"path\":\"");
        put_escaped(&w, e->path, e->path_len, 1);
        puts_(&w, "\",\"query\":\"");
        put_escaped(&w, e->query, e->query_len, 1);
        puts_(&w, "\",\"referer\":\"");
        put_str_or_dash(&w, e->referer, 1);
        puts_(&w, "\",\"user_agent\":\"");
        put_str_or_dash(&w, e->user_agent, 1);
        w.cap = cap - 1; /* the reserve is for what follows */
        snprintf(num, sizeof(num),
                 "\",\"protocol\":\"HTTP/%u.%u\",\"status\":%d,\"bytes\":%zu,\"cache\":\"%.8s\","
                 "\"tier\":\"%.8s\",\"duration_us\":%llu}",
                 e->http_major, e->http_minor, e->status, e->bytes, e->cache ? e->cache : "",
                 e->tier ? e->tier : "", (unsigned long long)e->duration_us);
        puts_(&w, num);
    } else {
        strftime(ts, sizeof(ts), "%d/%b/%Y:%H:%M:%S +0000", &tm);
        put_str_or_dash(&w, e->remote, 0);
        snprintf(num, sizeof(num), " - - [%s] \"", ts);
        puts_(&w, num);
        put_str_or_dash(&w, e->method, 0);
        puts_(&w, " ");
        put_escaped(&w, e->path, e->path_len, 0);
        if (e->query != NULL) {
            puts_(&w, "?");
            put_escaped(&w, e->query, e->query_len, 0);
        }
        snprintf(num, sizeof(num), " HTTP/%u.%u\" %d %zu \"", e->http_major, e->http_minor,
                 e->status, e->bytes);
        puts_(&w, num);
        put_str_or_dash(&w, e->referer, 0);
        puts_(&w, "\" \"");
        put_str_or_dash(&w, e->user_agent, 0);
        w.cap = cap - 1;
        snprintf(num, sizeof(num), "\" cache=%.8s tier=%.8s us=%llu", e->cache ? e->cache : "-",
                 e->tier ? e->tier : "-", (unsigned long long)e->duration_us);
        puts_(&w, num);
    }
    out[w.n] = '\0';
    return w.n;
}
