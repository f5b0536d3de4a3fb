/* SPDX-License-Identifier: BSD-2-Clause */
#include "tests/support/lmdb_damage.h"

#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGEHDR 16u

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint16_t rd16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static int data_fd(const char *dir, int flags)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/data.mdb", dir);
    return open(p, flags | O_CLOEXEC);
}

int tc_test_lmdb_geometry(const char *dir, uint64_t *psize, uint64_t *last_pg)
{
    int fd = data_fd(dir, O_RDONLY);
    if (fd < 0) {
        return -1;
    }
    unsigned char m[2][PAGEHDR + 136];
    int ok = pread(fd, m[0], sizeof(m[0]), 0) == (ssize_t)sizeof(m[0]);
    uint32_t ps = 0;
    if (ok) {
        memcpy(&ps, m[0] + PAGEHDR + 24, 4);
        ok = ps >= 512 && pread(fd, m[1], sizeof(m[1]), ps) == (ssize_t)sizeof(m[1]);
    }
    close(fd);
    if (!ok) {
        return -1;
    }
    /* LMDB's pick: meta 1 when its txnid is higher. */
    int n = rd64(m[1] + PAGEHDR + 128) > rd64(m[0] + PAGEHDR + 128);
    *psize = ps;
    *last_pg = rd64(m[n] + PAGEHDR + 120);
    return 0;
}

int tc_test_lmdb_db_root(const char *dir, const char *name, uint64_t *root, unsigned *depth)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi main_dbi;
    int rc = mdb_env_create(&env);
    if (rc != 0) {
        return -1;
    }
    mdb_env_set_maxdbs(env, 4);
    rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0640);
    if (rc == 0) {
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    }
    if (rc == 0) {
        MDB_val k = {strlen(name), (void *)(uintptr_t)name}, v;
        rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
        if (rc == 0) {
            rc = mdb_get(txn, main_dbi, &k, &v);
        }
        if (rc == 0 && v.mv_size == 48) { /* an MDB_db */
            *depth = rd16((const unsigned char *)v.mv_data + 6);
            *root = rd64((const unsigned char *)v.mv_data + 40);
        } else if (rc == 0) {
            rc = -1;
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc == 0 ? 0 : -1;
}

int tc_test_lmdb_page_read(const char *dir, uint64_t pgno, unsigned char *buf, size_t psize)
{
    int fd = data_fd(dir, O_RDONLY);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = pread(fd, buf, psize, (off_t)(pgno * psize));
    close(fd);
    return n == (ssize_t)psize ? 0 : -1;
}

int tc_test_lmdb_page_write(const char *dir, uint64_t pgno, const unsigned char *buf, size_t psize)
{
    int fd = data_fd(dir, O_WRONLY);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = pwrite(fd, buf, psize, (off_t)(pgno * psize));
    close(fd);
    return n == (ssize_t)psize ? 0 : -1;
}

unsigned tc_test_lmdb_page_nkeys(const unsigned char *page)
{
    return (unsigned)(rd16(page + 12) - PAGEHDR) / 2u;
}

int tc_test_lmdb_page_is_branch(const unsigned char *page)
{
    return (rd16(page + 10) & 0x01u) != 0;
}

/* Node i: its offset from the page start is in the pointer array. */
static unsigned char *node(const unsigned char *page, unsigned i)
{
    return (unsigned char *)(uintptr_t)(page + rd16(page + PAGEHDR + 2 * i));
}

uint64_t tc_test_lmdb_branch_child(const unsigned char *page, unsigned i)
{
    const unsigned char *n = node(page, i);
    return (uint64_t)rd16(n) | (uint64_t)rd16(n + 2) << 16 | (uint64_t)rd16(n + 4) << 32;
}

void tc_test_lmdb_set_branch_child(unsigned char *page, unsigned i, uint64_t pgno)
{
    unsigned char *n = node(page, i);
    uint16_t w[3] = {(uint16_t)pgno, (uint16_t)(pgno >> 16), (uint16_t)(pgno >> 32)};
    memcpy(n, w, sizeof(w));
}

size_t tc_test_lmdb_branch_key(const unsigned char *page, unsigned i, char *buf, size_t cap)
{
    const unsigned char *n = node(page, i);
    size_t ks = rd16(n + 6); /* mn_ksize; the key follows the 8-byte node header */
    if (cap == 0) {
        return 0;
    }
    if (ks > cap - 1) {
        ks = cap - 1;
    }
    memcpy(buf, n + 8, ks);
    buf[ks] = '\0';
    return ks;
}

int tc_test_copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out < 0) {
        close(in);
        return -1;
    }
    static unsigned char buf[1 << 16];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            rc = -1;
            break;
        }
    }
    if (n < 0) {
        rc = -1;
    }
    close(in);
    close(out);
    return rc;
}

int tc_test_flip_bit(const char *path, uint64_t off, unsigned bit)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    unsigned char b;
    int rc = -1;
    if (fd >= 0 && pread(fd, &b, 1, (off_t)off) == 1) {
        b ^= (unsigned char)(1u << (bit % 8));
        rc = pwrite(fd, &b, 1, (off_t)off) == 1 ? 0 : -1;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

void tc_test_rm_flat_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                char p[1024];
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}
