/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiers/lmdb_check.c: sound environments pass, damaged ones are caught, and
 * the property that matters: whatever damage the check passes, LMDB reading
 * and writing that file does not crash. Environments are written by the
 * lmdb:// tier itself (small and overflow values, long keys, overwrites,
 * deletes), then damaged in a copy; LMDB runs on each damaged copy in a
 * forked child, so that a crash is seen as the child's signal.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "tiers/lmdb_check.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64], copy[80];

static void setup(void)
{
    strcpy(dir, "/tmp/tc-lmdbck-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(copy, sizeof(copy), "%s/copy", dir);
    cr_assert_eq(mkdir(copy, 0700), 0);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(lmdb_check, .init = setup, .fini = teardown, .timeout = 120);

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Fills dir through the tier: n keys, some long (digested), some with
 * values that need overflow pages, then overwrites and deletes. */
static void fill(const char *path, int n)
{
    char uri[160], err[256];
    snprintf(uri, sizeof(uri), "lmdb://%s?map_size=64M&sync=none", path);
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    cr_assert_eq(tc_tier_open(NULL, uri, &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    static char big[20000], key[700];
    memset(big, 'b', sizeof(big));
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < n; i++) {
            int klen = i % 50 == 0 ? 600 : snprintf(key, sizeof(key), "key-%d", i);
            if (i % 50 == 0) {
                memset(key, 'L', 600);
                char num[16];
                snprintf(num, sizeof(num), "%09d", i % 1000000000);
                memcpy(key + 590, num, 9);
            }
            size_t vlen = i % 40 == 0 ? 5000 + (size_t)(i % 7) * 2000 : 50 + (size_t)(i % 90);
            struct tc_tier_req r = {.key = key, .key_len = (size_t)klen, .now_ms = 1000};
            r.value = big;
            r.value_len = vlen;
            r.hdr.encoding = TC_ENC_BINARY;
            r.hdr.created_ms = 1000;
            if (round == 1 && i % 3 == 0) {
                cr_assert_eq(tc_tier_del(c, &r), TC_OK);
            } else {
                cr_assert_eq(tc_tier_set(c, &r), TC_OK);
            }
        }
    }
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

static MDB_env *open_env(const char *path, unsigned flags)
{
    MDB_env *env;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 64u << 20);
    int rc = mdb_env_open(env, path, flags, 0600);
    if (rc != 0) {
        mdb_env_close(env);
        return NULL;
    }
    return env;
}

static enum tc_status check_path(const char *path, struct tc_lmdb_check_report *rep)
{
    MDB_env *env = open_env(path, MDB_RDONLY);
    if (env == NULL) {
        snprintf(rep->problem, sizeof(rep->problem), "mdb_env_open refused it");
        return TC_ECORRUPT;
    }
    MDB_txn *txn;
    enum tc_status st = TC_ECORRUPT;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
        st = tc_lmdb_check(env, txn, rep);
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return st;
}

Test(lmdb_check, a_sound_environment_passes)
{
    fill(dir, 3000);
    struct tc_lmdb_check_report rep;
    enum tc_status st = check_path(dir, &rep);
    cr_assert_eq(st, TC_OK, "%s: %s", tc_strerror(st), rep.problem);
    cr_assert_gt(rep.leaf, 10);
    cr_assert_gt(rep.branch, 0);
    cr_assert_gt(rep.overflow, 10);
    cr_assert_gt(rep.free_pages, 0, "overwrites and deletes leave free pages");
    /* tc_data holds 2000 records (a third deleted); tc_exp at least as many. */
    cr_assert_geq(rep.entries, 4000);
    cr_log_info("pages %llu (branch %llu leaf %llu overflow %llu free %llu) of %llu",
                (unsigned long long)rep.pages, (unsigned long long)rep.branch,
                (unsigned long long)rep.leaf, (unsigned long long)rep.overflow,
                (unsigned long long)rep.free_pages, (unsigned long long)rep.last_page);
}

static void cp_env(void)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "cp '%s/data.mdb' '%s/data.mdb' && rm -f '%s/lock.mdb'", dir, copy,
             copy);
    cr_assert_eq(system(cmd), 0);
}

/* In a child: every record of both databases read, then a write
 * transaction that deletes and rewrites some. Exit 0 unless LMDB crashes
 * (errors are fine: the file is damaged). */
static void use_env_in_child(const char *path)
{
    MDB_env *env = open_env(path, 0);
    if (env == NULL) {
        _exit(0);
    }
    MDB_txn *txn;
    MDB_dbi dbs[2];
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, "tc_data", 0, &dbs[0]) != 0 ||
        mdb_dbi_open(txn, "tc_exp", 0, &dbs[1]) != 0) {
        _exit(0);
    }
    volatile size_t sum = 0;
    for (int d = 0; d < 2; d++) {
        MDB_cursor *cur;
        MDB_val k, v;
        if (mdb_cursor_open(txn, dbs[d], &cur) != 0) {
            continue;
        }
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            const unsigned char *p = v.mv_data;
            for (size_t i = 0; i < v.mv_size; i += 512) {
                sum += p[i];
            }
        }
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    if (mdb_txn_begin(env, NULL, 0, &txn) == 0) {
        char key[32], val[300];
        memset(val, 'w', sizeof(val));
        for (int i = 0; i < 300; i++) {
            int kl = snprintf(key, sizeof(key), "key-%d", i * 7);
            MDB_val k = {(size_t)kl, key}, v = {sizeof(val), val};
            if (i % 2) {
                mdb_del(txn, dbs[0], &k, NULL);
            } else {
                mdb_put(txn, dbs[0], &k, &v, 0);
            }
        }
        mdb_txn_commit(txn);
    }
    mdb_env_close(env);
    _exit(0);
}

/* Runs use_env_in_child on the copy; 1 if the child crashed. */
static int lmdb_crashes_on_copy(void)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(20);
        use_env_in_child(copy);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void damage_copy(int flips, int zero_pages, int truncate_pages)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/data.mdb", copy);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    off_t pages = st.st_size / 4096;
    for (int i = 0; i < flips; i++) {
        off_t at = 2 * 4096 + (off_t)(next_rand() % (uint64_t)(st.st_size - 2 * 4096));
        unsigned char b;
        cr_assert_eq(pread(fd, &b, 1, at), 1);
        b ^= (unsigned char)(1u << (next_rand() % 8));
        cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    }
    static const unsigned char zeros[4096];
    for (int i = 0; i < zero_pages; i++) {
        off_t p = 2 + (off_t)(next_rand() % (uint64_t)(pages - 2));
        cr_assert_eq(pwrite(fd, zeros, 4096, p * 4096), 4096);
    }
    if (truncate_pages > 0) {
        cr_assert_eq(ftruncate(fd, st.st_size - (off_t)truncate_pages * 4096), 0);
    }
    close(fd);
}

/* The property: a copy the check passes never crashes LMDB. Damage the
 * check refuses is not run (it is what would have crashed). */
static void property_run(int rounds, int flips, int zeros, int trunc)
{
    fill(dir, 2000);
    int caught = 0, passed = 0;
    for (int r = 0; r < rounds; r++) {
        cp_env();
        damage_copy(flips, zeros, trunc ? 1 + (int)(next_rand() % 20) : 0);
        struct tc_lmdb_check_report rep;
        enum tc_status st = check_path(copy, &rep);
        cr_assert(st == TC_OK || st == TC_ECORRUPT, "round %d: %s", r, tc_strerror(st));
        if (st == TC_ECORRUPT) {
            caught++;
            continue;
        }
        passed++;
        cr_assert_not(lmdb_crashes_on_copy(), "round %d: the check passed, LMDB crashed", r);
    }
    cr_log_info("%d rounds: %d caught by the check, %d passed and ran without a crash", rounds,
                caught, passed);
    cr_assert_gt(caught, 0, "no damage was ever caught");
}

Test(lmdb_check, single_bit_flips_that_pass_never_crash_lmdb)
{
    property_run(60, 1, 0, 0);
}

Test(lmdb_check, many_bit_flips_that_pass_never_crash_lmdb)
{
    property_run(40, 200, 0, 0);
}

Test(lmdb_check, zeroed_pages_that_pass_never_crash_lmdb)
{
    property_run(40, 0, 3, 0);
}

Test(lmdb_check, truncation_is_caught)
{
    fill(dir, 2000);
    for (int r = 0; r < 10; r++) {
        cp_env();
        damage_copy(0, 0, 1 + r * 3);
        struct tc_lmdb_check_report rep;
        enum tc_status st = check_path(copy, &rep);
        cr_assert_eq(st, TC_ECORRUPT, "truncated by %d pages and passed", 1 + r * 3);
    }
}

Test(lmdb_check, a_writer_in_another_process_does_not_fail_the_check)
{
    fill(dir, 1000);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* Writes for about two seconds, through the tier, in its own process. */
        char uri[160], err[256], key[32];
        snprintf(uri, sizeof(uri), "lmdb://%s?map_size=64M&sync=none", dir);
        struct tc_tier *t;
        struct tc_tier_ctx *c;
        if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK ||
            tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
            _exit(2);
        }
        static char val[3000];
        time_t end = time(NULL) + 2;
        for (int i = 0; time(NULL) <= end; i++) {
            int kl = snprintf(key, sizeof(key), "w-%d", i % 5000);
            struct tc_tier_req r = {.key = key, .key_len = (size_t)kl, .now_ms = 1000};
            r.value = val;
            r.value_len = (size_t)(i % 3000);
            r.hdr.encoding = TC_ENC_BINARY;
            if (tc_tier_set(c, &r) != TC_OK) {
                _exit(3);
            }
        }
        tc_tier_ctx_dispose(c);
        tc_tier_close(t);
        _exit(0);
    }
    MDB_env *env = open_env(dir, MDB_RDONLY);
    cr_assert_not_null(env);
    int ok = 0, again = 0;
    struct timespec pause = {0, 20 * 1000000};
    for (int i = 0; i < 40; i++) {
        MDB_txn *txn;
        cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
        struct tc_lmdb_check_report rep;
        enum tc_status st = tc_lmdb_check(env, txn, &rep);
        mdb_txn_abort(txn);
        cr_assert(st == TC_OK || st == TC_EAGAIN, "check %d: %s: %s", i, tc_strerror(st),
                  rep.problem);
        ok += st == TC_OK;
        again += st == TC_EAGAIN;
        nanosleep(&pause, NULL);
    }
    mdb_env_close(env);
    int wst;
    cr_assert_eq(waitpid(pid, &wst, 0), pid);
    cr_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "the writer failed");
    cr_log_info("concurrent checks: %d sound, %d retried", ok, again);
    cr_assert_gt(ok, 0);
}
