/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The durable-snapshot record of tiers/lmdb_durable.h: its codec, its atomic
 * replacement, the lock around read-compare-replace, and the boot id.
 */
#include "tiers/lmdb_durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <xxhash.h>

#define MAGIC     "tc-durbl"
#define VERSION   1u
#define CHECK_AT  360u
#define META_AT   104u
#define BOOT_AT   56u
#define KNOWN_FLG (TC_LMDB_DURABLE_CLEAN | TC_LMDB_DURABLE_SNAPSHOT)
#define TMP_NAME  TC_LMDB_DURABLE_FILE ".tmp"

_Static_assert(META_AT + TC_LMDB_DURABLE_META_MAX == CHECK_AT, "layout");
_Static_assert(CHECK_AT + 8 == TC_LMDB_DURABLE_SIZE, "layout");

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

void tc_lmdb_durable_encode(const struct tc_lmdb_durable *d,
                            unsigned char out[TC_LMDB_DURABLE_SIZE])
{
    memset(out, 0, TC_LMDB_DURABLE_SIZE);
    memcpy(out, MAGIC, 8);
    put32(out + 8, VERSION);
    put32(out + 12, d->flags);
    put32(out + 16, d->mode);
    put32(out + 20, d->psize);
    put64(out + 24, d->txnid);
    put64(out + 32, d->inode);
    put64(out + 40, d->pinned_ms);
    put64(out + 48, d->interval_ms);
    size_t bl = strnlen(d->boot_id, TC_LMDB_DURABLE_BOOT_ID - 1);
    memcpy(out + BOOT_AT, d->boot_id, bl);
    uint32_t ml = d->meta_len <= TC_LMDB_DURABLE_META_MAX ? d->meta_len : 0;
    put32(out + 96, ml);
    memcpy(out + META_AT, d->meta, ml);
    put64(out + CHECK_AT, XXH3_64bits(out, CHECK_AT));
}

enum tc_status tc_lmdb_durable_decode(const unsigned char *in, size_t len,
                                      struct tc_lmdb_durable *d, const char **why)
{
    if (len < 12 || memcmp(in, MAGIC, 8) != 0) {
        *why = len < 12 ? "too short" : "not a tiercache-durable record";
        return TC_ECORRUPT;
    }
    if (get32(in + 8) != VERSION) {
        *why = "written by another version";
        return TC_EVERSION;
    }
    if (len != TC_LMDB_DURABLE_SIZE) {
        *why = len < TC_LMDB_DURABLE_SIZE ? "too short" : "too long";
        return TC_ECORRUPT;
    }
    if (get64(in + CHECK_AT) != XXH3_64bits(in, CHECK_AT)) {
        *why = "bad checksum";
        return TC_ECORRUPT;
    }
    memset(d, 0, sizeof(*d));
    d->flags = get32(in + 12);
    d->mode = get32(in + 16);
    d->psize = get32(in + 20);
    d->txnid = get64(in + 24);
    d->inode = get64(in + 32);
    d->pinned_ms = get64(in + 40);
    d->interval_ms = get64(in + 48);
    d->meta_len = get32(in + 96);
    if ((d->flags & ~KNOWN_FLG) != 0 || d->mode > 2 || d->meta_len > TC_LMDB_DURABLE_META_MAX) {
        *why = "impossible field values";
        return TC_ECORRUPT;
    }
    for (size_t i = 0; i < TC_LMDB_DURABLE_BOOT_ID - 1; i++) {
        unsigned char c = in[BOOT_AT + i];
        if (c != 0 && (c < 0x21 || c > 0x7e)) {
            *why = "impossible boot id";
            return TC_ECORRUPT;
        }
        d->boot_id[i] = (char)c;
    }
    memcpy(d->meta, in + META_AT, d->meta_len);
    return TC_OK;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

enum tc_status tc_lmdb_durable_load(const char *dir, struct tc_lmdb_durable *d, char *why,
                                    size_t wl)
{
    char *p = join(dir, TC_LMDB_DURABLE_FILE);
    if (p == NULL) {
        snprintf(why, wl, "out of memory");
        return TC_ENOMEM;
    }
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    int e = errno;
    free(p);
    if (fd < 0) {
        if (e == ENOENT) {
            return TC_ENOTFOUND;
        }
        snprintf(why, wl, "open(" TC_LMDB_DURABLE_FILE "): %s", strerror(e));
        return TC_EIO;
    }
    /* One byte more than a record: a longer file is garbage, not a record. */
    unsigned char buf[TC_LMDB_DURABLE_SIZE + 1];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(buf) && (n = read(fd, buf + got, sizeof(buf) - got)) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            snprintf(why, wl, "read(" TC_LMDB_DURABLE_FILE "): %s", strerror(errno));
            close(fd);
            return TC_EIO;
        }
        got += (size_t)n;
    }
    close(fd);
    const char *bad = NULL;
    enum tc_status st = tc_lmdb_durable_decode(buf, got, d, &bad);
    if (st != TC_OK) {
        snprintf(why, wl, "%s", bad);
    }
    return st;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

enum tc_status tc_lmdb_durable_store(const char *dir, const struct tc_lmdb_durable *d, char *why,
                                     size_t wl)
{
    unsigned char buf[TC_LMDB_DURABLE_SIZE];
    tc_lmdb_durable_encode(d, buf);
    char *tmp = join(dir, TMP_NAME), *dst = join(dir, TC_LMDB_DURABLE_FILE);
    enum tc_status st = TC_OK;
    int fd = -1, dfd = -1;
    if (tmp == NULL || dst == NULL) {
        snprintf(why, wl, "out of memory");
        st = TC_ENOMEM;
        goto out;
    }
    /* Writers hold tc_lmdb_durable_lock, so one temporary name is enough; a
     * leftover from a crash is truncated. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    const char *what = "open";
    if (fd >= 0) {
        what = "write";
        if (write_all(fd, buf, sizeof(buf)) == 0) {
            what = "fsync";
            if (fsync(fd) == 0) {
                what = "rename";
                if (rename(tmp, dst) == 0) {
                    what = NULL;
                }
            }
        }
    }
    if (what != NULL) {
        snprintf(why, wl, "%s(%s): %s", what, tmp, strerror(errno));
        st = TC_EIO;
        unlink(tmp);
        goto out;
    }
    /* The rename is durable only once the directory is. */
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        snprintf(why, wl, "fsync(%s): %s", dir, strerror(errno));
        st = TC_EIO;
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (dfd >= 0) {
        close(dfd);
    }
    free(tmp);
    free(dst);
    return st;
}

int tc_lmdb_durable_lock(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc;
    while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void tc_lmdb_durable_unlock(int fd)
{
    if (fd >= 0) {
        close(fd); /* the last descriptor of its open file: the flock goes */
    }
}

void tc_lmdb_durable_boot_id(char out[TC_LMDB_DURABLE_BOOT_ID])
{
    out[0] = '\0';
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    char buf[TC_LMDB_DURABLE_BOOT_ID];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    size_t len = 0;
    while (n > 0 && len < (size_t)n && buf[len] > 0x20 && buf[len] < 0x7f) {
        len++;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
}
