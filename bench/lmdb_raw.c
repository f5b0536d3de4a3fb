/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache-lmdb-raw — the ceiling for lmdb:// gets: bare mdb_get() on an
 * environment the tier wrote, with no tiercache code in the loop.
 *
 *   tiercache-lmdb-raw PATH KEYS SECONDS
 *
 * Draws keys "key:<k>", k uniform in [0, KEYS) (the keys tiercache-bench
 * writes), looks each up in tc_data and copies the record out, for SECONDS,
 * in two modes one after the other:
 *
 *   one-txn     every get inside one read transaction (nothing to renew)
 *   renew-each  mdb_txn_renew + mdb_txn_reset around every get, as the tier's
 *               single get does
 *
 * bench/lmdb_group_commit.sh runs it right after tiercache-bench's get run on
 * the same environment, so that the tier's figure reads as a ratio of what
 * LMDB alone does on this machine at that moment.
 */
#include "bench/keys.h"

#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what, int rc)
{
    fprintf(stderr, "tiercache-lmdb-raw: %s: %s\n", what, mdb_strerror(rc));
    return 1;
}

static volatile unsigned sink;

/* Runs one mode for @p secs on @p txn (active on entry and on return);
 * returns gets/s, or -1 with the LMDB error in *rcp. */
static double run(MDB_txn *txn, MDB_dbi dbi, uint64_t keys, double secs, int renew_each,
                  uint64_t *hits, int *rcp)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull, n = 0;
    unsigned char copy[4096];
    char kb[32];
    double t0 = now_s(), end = t0 + secs, t = t0;
    *hits = 0;
    if (renew_each) {
        mdb_txn_reset(txn);
    }
    while (t < end) {
        for (int i = 0; i < 1024; i++) {
            MDB_val k = {fmt_key(kb, xorshift(&rng) % keys), kb}, v;
            int rc;
            if (renew_each && (rc = mdb_txn_renew(txn)) != 0) {
                *rcp = rc;
                return -1;
            }
            rc = mdb_get(txn, dbi, &k, &v);
            if (rc == 0) {
                size_t len = v.mv_size < sizeof(copy) ? v.mv_size : sizeof(copy);
                memcpy(copy, v.mv_data, len);
                sink += len > 0 ? copy[len - 1] : 0; /* keeps the copy */
                (*hits)++;
            } else if (rc != MDB_NOTFOUND) {
                *rcp = rc;
                return -1;
            }
            if (renew_each) {
                mdb_txn_reset(txn);
            }
        }
        n += 1024;
        t = now_s();
    }
    if (renew_each && (*rcp = mdb_txn_renew(txn)) != 0) {
        return -1;
    }
    return (double)n / (t - t0);
}

#ifndef TC_VERSION
#define TC_VERSION "0.0.0"
#endif

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("Usage: tiercache-lmdb-raw PATH KEYS SECONDS\n"
               "Reads keys 0..KEYS-1 of the lmdb:// tier environment at PATH with bare mdb_get\n"
               "for SECONDS (at most 600): the baseline of bench/lmdb_group_commit.sh.\n");
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0)) {
        printf("tiercache-lmdb-raw %s\n", TC_VERSION);
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: tiercache-lmdb-raw PATH KEYS SECONDS (see --help)\n");
        return 2;
    }
    char *e1, *e2;
    errno = 0;
    unsigned long long keys = strtoull(argv[2], &e1, 10);
    double secs = strtod(argv[3], &e2);
    if (errno != 0 || *e1 != '\0' || *e2 != '\0' || keys == 0 || !(secs > 0 && secs <= 600)) {
        fprintf(stderr, "tiercache-lmdb-raw: KEYS must be a positive integer and SECONDS in "
                        "(0, 600]\n");
        return 2;
    }
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc;
    if ((rc = mdb_env_create(&env)) != 0) {
        return die("mdb_env_create", rc);
    }
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_maxreaders(env, 256); /* as the tier, so the lock file agrees */
    /* Map size 0: take the size recorded in the environment. */
    if ((rc = mdb_env_open(env, argv[1], MDB_RDONLY | MDB_NOTLS, 0640)) != 0) {
        return die(argv[1], rc);
    }
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "tc_data", 0, &dbi)) != 0 || (rc = mdb_txn_commit(txn)) != 0) {
        return die("tc_data", rc);
    }
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0) {
        return die("mdb_txn_begin", rc);
    }
    static const char *const names[2] = {"one-txn", "renew-each"};
    for (int mode = 0; mode < 2; mode++) {
        uint64_t hits;
        int err = 0;
        double rate = run(txn, dbi, keys, secs, mode, &hits, &err);
        if (rate < 0) {
            return die(names[mode], err);
        }
        printf("raw mdb_get %-10s %.0f gets/s (%llu hits)\n", names[mode], rate,
               (unsigned long long)hits);
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return 0;
}
