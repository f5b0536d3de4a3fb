/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/sim.c and bench/trace.c: a small trace, written here in
 * libCacheSim's oracleGeneral format, as a .zst of it, and as Twitter-format
 * CSV, replayed through the exact LRU and FIFO simulators, against counts
 * worked out by hand (below, step by step).
 */
#include "bench/sim.h"
#include "bench/trace.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* id, size. Capacity 100 bytes. */
static const struct {
    uint64_t id;
    uint32_t size;
} trace[] = {
    {1, 40}, {2, 40}, {1, 40}, {3, 40}, {2, 40}, {4, 200}, /* 4: larger than the cache */
    {1, 40}, {3, 60}, {2, 40}, {2, 80}, {5, 20}, {2, 40},  /* 3 and 2 change size */
};
#define N   (sizeof(trace) / sizeof(trace[0]))
#define CAP 100

/*
 * LRU (most recent first):
 *  1 m [1]        2 m [2 1]      3 h [1 2]      4 m -2 [3 1]    5 m -1 [2 3]
 *  6 m (200 > 100, not inserted) 7 m -3 [1 2]   8 m -2 [3:60 1] (100 bytes)
 *  9 m -1 [2 3]   10 h (2 keeps its 40 bytes)   11 m -3 [5 2]   12 h [2 5]
 *  misses 9, miss bytes 40*6 + 200 + 60 + 20 = 520
 * FIFO (newest first; hits do not move):
 *  1 m [1]  2 m [2 1]  3 h  4 m -1 [3 2]  5 h  6 m (not inserted)  7 m -2 [1 3]
 *  8 h (3 keeps its 40)  9 m -3 [2 1]  10 h  11 m [5 2 1] (100 bytes)  12 h
 *  misses 7, miss bytes 40*5 + 200 + 20 = 420
 */

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/tc-test-sim-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(sim, .init = setup, .fini = teardown);

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void write_oracle(const char *path, int compress)
{
    unsigned char buf[N * 24];
    for (size_t i = 0; i < N; i++) {
        put_le(buf + i * 24, i + 1, 4);
        put_le(buf + i * 24 + 4, trace[i].id, 8);
        put_le(buf + i * 24 + 12, trace[i].size, 4);
        put_le(buf + i * 24 + 16, (uint64_t)-1, 8);
    }
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    if (compress) {
        size_t cap = ZSTD_compressBound(sizeof(buf));
        void *z = malloc(cap);
        size_t zn = ZSTD_compress(z, cap, buf, sizeof(buf), 3);
        cr_assert(!ZSTD_isError(zn));
        cr_assert_eq(fwrite(z, 1, zn, f), zn);
        free(z);
    } else {
        cr_assert_eq(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
    }
    cr_assert_eq(fclose(f), 0);
}

static void load(struct tb_workload *w, struct tb_req **reqs, size_t *n)
{
    char err[512] = "";
    int rc = tb_trace_load(w, reqs, n, err, sizeof(err));
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(*n, N);
}

static void check(const struct tb_req *reqs, size_t n)
{
    struct tb_sim_result r;
    cr_assert_eq(tb_sim_run(TB_SIM_LRU, CAP, reqs, n, &r), 0);
    cr_expect_eq(r.requests, 12);
    cr_expect_eq(r.misses, 9, "LRU misses %llu", (unsigned long long)r.misses);
    cr_expect_eq(r.miss_bytes, 520, "LRU miss bytes %llu", (unsigned long long)r.miss_bytes);
    cr_assert_eq(tb_sim_run(TB_SIM_FIFO, CAP, reqs, n, &r), 0);
    cr_expect_eq(r.requests, 12);
    cr_expect_eq(r.misses, 7, "FIFO misses %llu", (unsigned long long)r.misses);
    cr_expect_eq(r.miss_bytes, 420, "FIFO miss bytes %llu", (unsigned long long)r.miss_bytes);
    /* Everything fits in a large cache: only the first request of each misses. */
    cr_assert_eq(tb_sim_run(TB_SIM_LRU, 1 << 20, reqs, n, &r), 0);
    cr_expect_eq(r.misses, 5);
}

static void replay_oracle(const char *name, int compress)
{
    struct tb_workload w;
    struct tb_req *reqs;
    size_t n;
    tb_workload_defaults(&w);
    snprintf(w.trace, sizeof(w.trace), "%s/%s", dir, name);
    w.trace_format = TB_TRACE_ORACLE;
    write_oracle(w.trace, compress);
    load(&w, &reqs, &n);
    cr_expect_eq(reqs[5].id, 4);
    cr_expect_eq(reqs[5].vsize, 200);
    cr_expect_eq(reqs[5].op, TB_GET);
    check(reqs, n);
    free(reqs);
}

Test(sim, oracle_general)
{
    replay_oracle("t.oracleGeneral", 0);
}

Test(sim, oracle_general_zst)
{
    replay_oracle("t.oracleGeneral.zst", 1);
}

Test(sim, twitter_csv)
{
    struct tb_workload w;
    struct tb_req *reqs;
    size_t n;
    tb_workload_defaults(&w);
    snprintf(w.trace, sizeof(w.trace), "%s/t.csv", dir);
    w.trace_format = TB_TRACE_CSV;
    /* Twitter: timestamp, anonymized key, key size, value size, client id, op, TTL. */
    w.csv = (struct tb_csv_cols){
        .time = 1, .key = 2, .key_size = 3, .size = 4, .op = 6, .ttl = 7, .header = 1, .sep = ','};
    FILE *f = fopen(w.trace, "w");
    cr_assert_not_null(f);
    fprintf(f, "timestamp,key,key_size,value_size,client_id,operation,ttl\r\n");
    for (size_t i = 0; i < N; i++) {
        /* Keys that are not numbers are hashed to ids. */
        fprintf(f, "%zu,obj-%llu,10,%u,7,%s,%d\n", i, (unsigned long long)trace[i].id,
                trace[i].size - 10, i == 1 ? "gets" : "get", i == 0 ? 60 : 0);
    }
    cr_assert_eq(fclose(f), 0);
    load(&w, &reqs, &n);
    cr_expect_eq(reqs[0].ksize, 10);
    cr_expect_eq(reqs[0].vsize, 30);
    cr_expect_eq(reqs[0].ttl_s, 60);
    cr_expect_eq(reqs[1].ttl_s, 3600, "no TTL in the trace: the workload's");
    cr_expect_eq(reqs[0].id, reqs[2].id);
    cr_expect_neq(reqs[0].id, reqs[1].id);
    check(reqs, n);
    free(reqs);
}

Test(sim, bad_traces_are_refused_with_where)
{
    struct tb_workload w;
    struct tb_req *reqs;
    size_t n;
    char err[512];
    tb_workload_defaults(&w);
    snprintf(w.trace, sizeof(w.trace), "%s/short.bin", dir);
    w.trace_format = TB_TRACE_ORACLE;
    FILE *f = fopen(w.trace, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite("0123456789012345678901234567", 1, 28, f), 28); /* 24 + 4 */
    cr_assert_eq(fclose(f), 0);
    cr_expect_eq(tb_trace_load(&w, &reqs, &n, err, sizeof(err)), -1);
    cr_expect(strstr(err, "truncated record") != NULL, "%s", err);

    snprintf(w.trace, sizeof(w.trace), "%s/bad.csv", dir);
    w.trace_format = TB_TRACE_CSV;
    w.csv = (struct tb_csv_cols){.key = 1, .size = 2, .op = 3, .sep = ','};
    f = fopen(w.trace, "w");
    cr_assert_not_null(f);
    fprintf(f, "a,10,get\nb,10,frobnicate\n");
    cr_assert_eq(fclose(f), 0);
    cr_expect_eq(tb_trace_load(&w, &reqs, &n, err, sizeof(err)), -1);
    cr_expect(strstr(err, ":2: unknown op 'frobnicate' in column 3") != NULL, "%s", err);

    snprintf(w.trace, sizeof(w.trace), "%s/bad.csv.zst", dir);
    f = fopen(w.trace, "wb");
    cr_assert_not_null(f);
    fprintf(f, "this is not zstd data at all\n");
    cr_assert_eq(fclose(f), 0);
    cr_expect_eq(tb_trace_load(&w, &reqs, &n, err, sizeof(err)), -1);
    cr_expect(strstr(err, "bad zstd data") != NULL, "%s", err);
}
