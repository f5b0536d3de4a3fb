/* SPDX-License-Identifier: BSD-2-Clause */
#define _XOPEN_SOURCE 700 /* nftw */
#include "bench/cleanup.h"
#include "shm/ring.h"
#include "tiers/tier.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int add(struct tb_leftovers *lo, enum tb_left_kind k, const char *what, size_t n)
{
    if (lo->n == TB_LEFT_MAX || n >= sizeof(lo->e[0].what)) {
        return -1;
    }
    lo->e[lo->n].kind = k;
    memcpy(lo->e[lo->n].what, what, n);
    lo->e[lo->n].what[n] = '\0';
    lo->n++;
    return 0;
}

static int cat(char *out, size_t len, size_t *pos, const char *s, size_t n)
{
    if (*pos + n >= len) {
        return -1;
    }
    memcpy(out + *pos, s, n);
    *pos += n;
    out[*pos] = '\0';
    return 0;
}

int tb_cleanup_tag_uri(const char *uri, const char *tag, const char *fixed, char *out, size_t len,
                       struct tb_leftovers *lo)
{
    const char *sep = strstr(uri, "://");
    size_t pos = 0;
    if (sep == NULL) {
        return cat(out, len, &pos, uri, strlen(uri));
    }
    size_t slen = (size_t)(sep - uri);
    const char *target = sep + 3;
    size_t tlen = strcspn(target, "?#");
    const char *rest = target + tlen; /* "?query" or "" */
    if (slen == 3 && strncmp(uri, "shm", 3) == 0 && fixed != NULL) {
        /* A name the user gave: removed only if this run makes it. */
        char path[1200];
        snprintf(path, sizeof(path), "/dev/shm/%.*s", (int)tlen, target);
        if (access(path, F_OK) != 0 && add(lo, TB_LEFT_SHM, target, tlen) != 0) {
            return -1;
        }
        return cat(out, len, &pos, uri, strlen(uri));
    }
    if (slen == 4 && strncmp(uri, "lmdb", 4) == 0 && fixed != NULL) {
        struct stat sb;
        char dir[1100];
        snprintf(dir, sizeof(dir), "%.*s", (int)tlen, target);
        if (stat(dir, &sb) != 0 && add(lo, TB_LEFT_LMDB, target, tlen) != 0) {
            return -1;
        }
        return cat(out, len, &pos, uri, strlen(uri));
    }
    if (fixed != NULL && strncmp(uri, "redis", 5) == 0) {
        tag = fixed;
    }
    if (slen == 3 && strncmp(uri, "shm", 3) == 0) {
        char name[1100];
        int n = snprintf(name, sizeof(name), "%.*s.%s", (int)tlen, target, tag);
        if (n < 0 || (size_t)n >= sizeof(name) || add(lo, TB_LEFT_SHM, name, (size_t)n) != 0) {
            return -1;
        }
        return cat(out, len, &pos, "shm://", 6) || cat(out, len, &pos, name, (size_t)n) ||
               cat(out, len, &pos, rest, strlen(rest));
    }
    if (slen == 4 && strncmp(uri, "lmdb", 4) == 0) {
        char dir[1100];
        struct stat sb;
        int n = snprintf(dir, sizeof(dir), "%.*s", (int)tlen, target);
        if (n < 0 || (size_t)n >= sizeof(dir)) {
            return -1;
        }
        /* A parent directory the bench makes is the bench's to remove too. */
        if (stat(dir, &sb) != 0 && add(lo, TB_LEFT_DIR, dir, (size_t)n) != 0) {
            return -1;
        }
        n = snprintf(dir, sizeof(dir), "%.*s%s%s", (int)tlen, target,
                     tlen > 0 && target[tlen - 1] == '/' ? "" : "/", tag);
        if (n < 0 || (size_t)n >= sizeof(dir) || add(lo, TB_LEFT_LMDB, dir, (size_t)n) != 0) {
            return -1;
        }
        /* Removal runs in reverse: DIR/TAG, then DIR (recorded first). */
        return cat(out, len, &pos, "lmdb://", 7) || cat(out, len, &pos, dir, (size_t)n) ||
               cat(out, len, &pos, rest, strlen(rest));
    }
    if ((slen == 5 && strncmp(uri, "redis", 5) == 0) ||
        (slen == 10 && strncmp(uri, "redis+unix", 10) == 0)) {
        /* prefix=P (default tc:) becomes prefix=P TAG: */
        char prefix[256] = "tc:";
        const char *q = strchr(uri, '?');
        if (cat(out, len, &pos, uri, (size_t)(rest - uri)) != 0) {
            return -1;
        }
        int first = 1;
        while (q != NULL && *q != '\0' && *q != '#') {
            q++;
            size_t n = strcspn(q, "&#");
            if (n > 7 && strncmp(q, "prefix=", 7) == 0) {
                if (n - 7 >= sizeof(prefix)) {
                    return -1;
                }
                memcpy(prefix, q + 7, n - 7);
                prefix[n - 7] = '\0';
            } else if (n > 0) {
                if (cat(out, len, &pos, first ? "?" : "&", 1) || cat(out, len, &pos, q, n)) {
                    return -1;
                }
                first = 0;
            }
            q += n;
            if (*q != '&') {
                break;
            }
        }
        char p2[512];
        int n = snprintf(p2, sizeof(p2), "%sprefix=%s%s:", first ? "?" : "&", prefix, tag);
        if (n < 0 || (size_t)n >= sizeof(p2) || cat(out, len, &pos, p2, (size_t)n) != 0) {
            return -1;
        }
        return add(lo, TB_LEFT_REDIS, out, strlen(out));
    }
    return cat(out, len, &pos, uri, strlen(uri));
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "tiercache-bench: cannot remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int clear_redis(const char *uri)
{
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[512] = "", red[1100];
    enum tc_status st = tc_tier_open(NULL, uri, &t, err, sizeof(err));
    if (st == TC_OK) {
        st = tc_tier_ctx_init(t, NULL, &c);
        if (st == TC_OK) {
            struct tc_tier_req r = {.key = "", .key_len = 0};
            st = tc_tier_clear(c, &r);
            tc_tier_ctx_dispose(c);
        }
        tc_tier_close(t);
    }
    if (st != TC_OK) {
        fprintf(stderr, "tiercache-bench: cannot clear the keys of %s: %s\n",
                tc_tier_uri_redact(uri, red, sizeof(red)), err[0] ? err : tc_strerror(st));
        return -1;
    }
    return 0;
}

int tb_cleanup_run(struct tb_leftovers *lo)
{
    int fails = 0;
    for (size_t i = lo->n; i-- > 0;) {
        struct tb_left *e = &lo->e[i];
        char err[512];
        enum tc_status st;
        switch (e->kind) {
        case TB_LEFT_SHM:
            st = tc_ring_unlink(e->what, err, sizeof(err));
            if (st != TC_OK && st != TC_ENOTFOUND) {
                fprintf(stderr, "tiercache-bench: cannot unlink segment %s: %s\n", e->what, err);
                fails++;
            }
            break;
        case TB_LEFT_LMDB:
            if (nftw(e->what, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
                fails++;
            }
            break;
        case TB_LEFT_DIR:
            /* Only if empty: someone else may have put files there meanwhile. */
            if (rmdir(e->what) != 0 && errno != ENOENT) {
                fprintf(stderr, "tiercache-bench: kept %s: %s\n", e->what, strerror(errno));
            }
            break;
        case TB_LEFT_REDIS:
            fails += clear_redis(e->what) != 0;
            break;
        }
    }
    lo->n = 0;
    return fails;
}

void tb_cleanup_list(const struct tb_leftovers *lo)
{
    static const char *const kinds[] = {"shm segment", "lmdb directory", "redis keys of",
                                        "directory"};
    for (size_t i = 0; i < lo->n; i++) {
        char red[1100];
        fprintf(stderr, "tiercache-bench: kept %s %s\n", kinds[lo->e[i].kind],
                tc_tier_uri_redact(lo->e[i].what, red, sizeof(red)));
    }
}
