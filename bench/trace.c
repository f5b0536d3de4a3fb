/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/trace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>
#include <zstd.h>

#define RD_CHUNK (1u << 16)

/* A byte source: a plain file, or a zstd frame sequence decompressed as it
 * is read. */
struct src {
    FILE *f;
    ZSTD_DCtx *z;
    unsigned char in[RD_CHUNK];
    ZSTD_inBuffer zin;
    int eof;
    int zerr;
    /* Decompressed (or read) bytes not yet consumed. */
    unsigned char buf[RD_CHUNK];
    size_t pos, len;
};

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Refills s->buf; returns 0 at the end of the data, -1 on a zstd error. */
static int src_fill(struct src *s)
{
    s->pos = s->len = 0;
    if (s->z == NULL) {
        s->len = fread(s->buf, 1, sizeof(s->buf), s->f);
        return s->len > 0;
    }
    while (s->len == 0) {
        if (s->zin.pos == s->zin.size) {
            if (s->eof) {
                return 0;
            }
            s->zin.src = s->in;
            s->zin.size = fread(s->in, 1, sizeof(s->in), s->f);
            s->zin.pos = 0;
            if (s->zin.size == 0) {
                s->eof = 1;
                return 0;
            }
        }
        ZSTD_outBuffer out = {s->buf, sizeof(s->buf), 0};
        size_t r = ZSTD_decompressStream(s->z, &out, &s->zin);
        if (ZSTD_isError(r)) {
            s->zerr = 1;
            return -1;
        }
        s->len = out.pos;
    }
    return 1;
}

/* Reads exactly @p n bytes; returns n, 0 at a clean end, or -1 (short or bad). */
static long src_read(struct src *s, void *dst, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (s->pos == s->len) {
            int r = src_fill(s);
            if (r <= 0) {
                return r < 0 || got > 0 ? -1 : 0;
            }
        }
        size_t k = s->len - s->pos < n - got ? s->len - s->pos : n - got;
        memcpy((char *)dst + got, s->buf + s->pos, k);
        s->pos += k;
        got += k;
    }
    return (long)n;
}

/* Reads one line (without its newline) into @p line; returns its length, or
 * -1 at the end, -2 when longer than @p cap - 1, -3 on a zstd error. */
static long src_line(struct src *s, char *line, size_t cap)
{
    size_t n = 0;
    int any = 0;
    for (;;) {
        if (s->pos == s->len) {
            int r = src_fill(s);
            if (r < 0) {
                return -3;
            }
            if (r == 0) {
                return any ? (long)n : -1;
            }
        }
        any = 1;
        unsigned char c = s->buf[s->pos++];
        if (c == '\n') {
            break;
        }
        if (n + 1 >= cap) {
            return -2;
        }
        line[n++] = (char)c;
    }
    if (n > 0 && line[n - 1] == '\r') {
        n--;
    }
    line[n] = '\0';
    return (long)n;
}

enum tb_trace_format tb_trace_format_parse(const char *s)
{
    if (strcasecmp(s, "oraclegeneral") == 0) {
        return TB_TRACE_ORACLE;
    }
    if (strcasecmp(s, "csv") == 0) {
        return TB_TRACE_CSV;
    }
    return TB_TRACE_NONE;
}

static int push(struct tb_req **arr, size_t *n, size_t *cap, const struct tb_req *r)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        struct tb_req *a = realloc(*arr, nc * sizeof(*a));
        if (a == NULL) {
            return -1;
        }
        *arr = a;
        *cap = nc;
    }
    (*arr)[(*n)++] = *r;
    return 0;
}

static uint64_t le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9') {
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

static int op_of(const char *s)
{
    static const char *const gets[] = {"get", "gets", NULL};
    static const char *const sets[] = {"set",     "add",  "replace", "cas", "append",
                                       "prepend", "incr", "decr",    NULL};
    for (int i = 0; gets[i]; i++) {
        if (strcasecmp(s, gets[i]) == 0) {
            return TB_GET;
        }
    }
    for (int i = 0; sets[i]; i++) {
        if (strcasecmp(s, sets[i]) == 0) {
            return TB_SET;
        }
    }
    if (strcasecmp(s, "delete") == 0) {
        return TB_DEL;
    }
    return -1;
}

#define CSV_FIELDS 64

static int load_csv(const struct tb_workload *w, struct src *s, struct tb_req **arr, size_t *n,
                    size_t *cap, char *err, size_t errlen)
{
    const struct tb_csv_cols *c = &w->csv;
    char line[8192];
    uint64_t lineno = 0;
    for (;;) {
        long len = src_line(s, line, sizeof(line));
        if (len == -1) {
            return 0;
        }
        lineno++;
        if (len == -2 || len == -3) {
            errf(err, errlen, "%s:%llu: %s", w->trace, (unsigned long long)lineno,
                 len == -2 ? "line longer than 8191 bytes" : "bad zstd data");
            return -1;
        }
        if ((lineno == 1 && c->header) || len == 0) {
            continue;
        }
        char *f[CSV_FIELDS];
        int nf = 0;
        char *p = line;
        f[nf++] = p;
        for (; *p; p++) {
            if (*p == c->sep) {
                *p = '\0';
                if (nf == CSV_FIELDS) {
                    break;
                }
                f[nf++] = p + 1;
            }
        }
        int want[] = {c->time, c->key, c->key_size, c->size, c->op, c->ttl};
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
            if (want[i] > nf) {
                errf(err, errlen, "%s:%llu: %d fields, but a column is set to %d", w->trace,
                     (unsigned long long)lineno, nf, want[i]);
                return -1;
            }
        }
        struct tb_req r = {.op = TB_GET};
        const char *key = f[c->key - 1];
        if (*key == '\0') {
            errf(err, errlen, "%s:%llu: empty key", w->trace, (unsigned long long)lineno);
            return -1;
        }
        if (parse_u64(key, &r.id) != 0) {
            r.id = XXH3_64bits(key, strlen(key));
        }
        uint64_t v = 0;
        if (c->size > 0) {
            if (parse_u64(f[c->size - 1], &v) != 0 || v > UINT32_MAX) {
                errf(err, errlen, "%s:%llu: bad size '%s' in column %d", w->trace,
                     (unsigned long long)lineno, f[c->size - 1], c->size);
                return -1;
            }
            r.vsize = (uint32_t)v;
        }
        if (c->key_size > 0) {
            if (parse_u64(f[c->key_size - 1], &v) != 0 || v > 250) {
                errf(err, errlen, "%s:%llu: bad key size '%s' in column %d (0..250)", w->trace,
                     (unsigned long long)lineno, f[c->key_size - 1], c->key_size);
                return -1;
            }
            r.ksize = (uint16_t)v;
        }
        if (c->op > 0) {
            int op = op_of(f[c->op - 1]);
            if (op < 0) {
                errf(err, errlen, "%s:%llu: unknown op '%s' in column %d", w->trace,
                     (unsigned long long)lineno, f[c->op - 1], c->op);
                return -1;
            }
            r.op = (uint8_t)op;
        }
        r.ttl_s = (uint32_t)w->ttl.lo;
        if (c->ttl > 0) {
            if (parse_u64(f[c->ttl - 1], &v) != 0 || v > UINT32_MAX) {
                errf(err, errlen, "%s:%llu: bad ttl '%s' in column %d", w->trace,
                     (unsigned long long)lineno, f[c->ttl - 1], c->ttl);
                return -1;
            }
            if (v > 0) {
                r.ttl_s = (uint32_t)v;
            }
        }
        if (push(arr, n, cap, &r) != 0) {
            errf(err, errlen, "%s: out of memory at record %zu", w->trace, *n);
            return -1;
        }
        if (w->trace_limit && *n >= w->trace_limit) {
            return 0;
        }
    }
}

static int load_oracle(const struct tb_workload *w, struct src *s, struct tb_req **arr, size_t *n,
                       size_t *cap, char *err, size_t errlen)
{
    unsigned char rec[24];
    for (;;) {
        long r = src_read(s, rec, sizeof(rec));
        if (r == 0) {
            return 0;
        }
        if (r < 0) {
            errf(err, errlen, "%s: %s after %zu records", w->trace,
                 s->zerr ? "bad zstd data" : "truncated record (not a multiple of 24 bytes)", *n);
            return -1;
        }
        /* time (4) | id (8) | size (4) | next access (8), little-endian. */
        struct tb_req q = {.id = le(rec + 4, 8),
                           .vsize = (uint32_t)le(rec + 12, 4),
                           .ttl_s = (uint32_t)w->ttl.lo,
                           .op = TB_GET};
        if (push(arr, n, cap, &q) != 0) {
            errf(err, errlen, "%s: out of memory at record %zu", w->trace, *n);
            return -1;
        }
        if (w->trace_limit && *n >= w->trace_limit) {
            return 0;
        }
    }
}

int tb_trace_load(const struct tb_workload *w, struct tb_req **out, size_t *n, char *err,
                  size_t errlen)
{
    struct src *s = calloc(1, sizeof(*s));
    struct tb_req *arr = NULL;
    size_t cnt = 0, cap = 0;
    int rc = -1;
    *out = NULL;
    *n = 0;
    if (s == NULL) {
        errf(err, errlen, "out of memory");
        return -1;
    }
    s->f = fopen(w->trace, "rb");
    if (s->f == NULL) {
        errf(err, errlen, "%s: %s", w->trace, strerror(errno));
        goto out;
    }
    size_t plen = strlen(w->trace);
    if (plen > 4 && strcmp(w->trace + plen - 4, ".zst") == 0) {
        s->z = ZSTD_createDCtx();
        if (s->z == NULL) {
            errf(err, errlen, "out of memory");
            goto out;
        }
    }
    if (w->trace_format == TB_TRACE_ORACLE) {
        rc = load_oracle(w, s, &arr, &cnt, &cap, err, errlen);
    } else if (w->trace_format == TB_TRACE_CSV) {
        rc = load_csv(w, s, &arr, &cnt, &cap, err, errlen);
    } else {
        errf(err, errlen, "%s: no trace format given (oraclegeneral or csv)", w->trace);
    }
    if (rc == 0 && ferror(s->f)) {
        errf(err, errlen, "%s: read error", w->trace);
        rc = -1;
    }
    if (rc == 0 && cnt == 0) {
        errf(err, errlen, "%s: no records", w->trace);
        rc = -1;
    }
out:
    if (s->f != NULL) {
        fclose(s->f);
    }
    ZSTD_freeDCtx(s->z);
    free(s);
    if (rc != 0) {
        free(arr);
        return -1;
    }
    *out = arr;
    *n = cnt;
    return 0;
}
