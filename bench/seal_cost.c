/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache-seal-cost — what encryption at rest (AES-256-GCM, tiers/seal.h)
 * costs lmdb:// gets and sets, as a ratio to the same tier storing plain
 * values, measured in one run on the same machine.
 *
 *   tiercache-seal-cost [SECONDS_PER_ROUND] [KEYS]      (defaults 0.5, 20000)
 *
 * Two LMDB environments in temp dirs, opened through the tier interface as
 * the server opens them (sync=none, so that fsync does not hide the cipher):
 * one with encrypt=off, one with encrypt=on and a fresh keyring. For each
 * value size (100 B, 4 KiB):
 *
 *   set  KEYS keys written on an event_base ctx with 64 writes in flight
 *        (the server's path: asynchronous sets, group commit), for the round
 *   get  uniform random gets of those keys (synchronous, as LMDB gets are),
 *        for the round
 *
 * Rounds alternate plain and sealed, five each; the median of each is
 * reported, per wall-clock second and per CPU second of the process (less
 * sensitive to other load on the machine), with ratio = sealed / plain.
 * Bounded: 2 sizes x 2 ops x 10 rounds x SECONDS_PER_ROUND, plus the fills.
 */
#include "tiers/seal.h"
#include "tiers/tier.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 64
#define ROUNDS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the whole process (every thread: the caller's sealing and
 * the LMDB writer's commits), so that a figure counts work done, not time
 * the machine gave to other processes. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One round's figures. */
struct rate {
    double wall; /* ops per second */
    double cpu;  /* ops per CPU second */
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct setter {
    struct event_base *base;
    struct tc_tier_ctx *ctx;
    const unsigned char *value;
    size_t vlen, keys;
    uint64_t next, done, failed;
    double until;
    int stopping;
    struct slot {
        struct tc_tier_req req;
        char key[32];
        struct setter *s;
    } slots[WINDOW];
};

static void issue(struct slot *sl);

static void on_set(struct tc_tier_req *req)
{
    struct slot *sl = req->arg;
    struct setter *s = sl->s;
    s->done++;
    s->failed += req->status != TC_OK;
    if (!s->stopping && (s->done & 63) == 0 && now_s() >= s->until) {
        s->stopping = 1;
    }
    if (!s->stopping) {
        issue(sl);
    } else if (s->next == s->done) {
        event_base_loopbreak(s->base);
    }
}

static void issue(struct slot *sl)
{
    struct setter *s = sl->s;
    uint64_t k = s->next++ % s->keys;
    snprintf(sl->key, sizeof(sl->key), "key:%llu", (unsigned long long)k);
    uint64_t now = wall_ms();
    memset(&sl->req, 0, sizeof(sl->req));
    sl->req.key = sl->key;
    sl->req.key_len = strlen(sl->key);
    sl->req.value = s->value;
    sl->req.value_len = s->vlen;
    sl->req.now_ms = now;
    sl->req.hdr.encoding = TC_ENC_BINARY;
    sl->req.hdr.created_ms = now;
    sl->req.hdr.expire_ms = now + 3600 * 1000;
    sl->req.done = on_set;
    sl->req.arg = sl;
    enum tc_status st = tc_tier_set(s->ctx, &sl->req);
    if (st != TC_EINPROGRESS) {
        on_set(&sl->req);
    }
}

/* Writes every key once through a synchronous ctx (the fill before a size). */
static void fill(struct tc_tier *t, const unsigned char *v, size_t vlen, size_t keys)
{
    struct tc_tier_ctx *ctx;
    if (tc_tier_ctx_init(t, NULL, &ctx) != TC_OK) {
        exit(1);
    }
    char key[32];
    for (size_t k = 0; k < keys; k++) {
        snprintf(key, sizeof(key), "key:%zu", k);
        uint64_t now = wall_ms();
        struct tc_tier_req r = {
            .key = key, .key_len = strlen(key), .value = v, .value_len = vlen, .now_ms = now};
        r.hdr.encoding = TC_ENC_BINARY;
        r.hdr.created_ms = now;
        r.hdr.expire_ms = now + 3600 * 1000;
        if (tc_tier_set(ctx, &r) != TC_OK) {
            fprintf(stderr, "tiercache-seal-cost: fill failed\n");
            exit(1);
        }
    }
    tc_tier_ctx_dispose(ctx);
}

/* Writes for @p secs with WINDOW sets in flight. */
static struct rate run_sets(struct tc_tier *t, const unsigned char *v, size_t vlen, size_t keys,
                            double secs)
{
    struct setter *s = calloc(1, sizeof(*s));
    s->base = event_base_new();
    if (s->base == NULL || tc_tier_ctx_init(t, s->base, &s->ctx) != TC_OK) {
        fprintf(stderr, "tiercache-seal-cost: ctx_init failed\n");
        exit(1);
    }
    s->value = v;
    s->vlen = vlen;
    s->keys = keys;
    double t0 = now_s(), c0 = cpu_s();
    s->until = t0 + secs;
    for (int i = 0; i < WINDOW; i++) {
        s->slots[i].s = s;
        issue(&s->slots[i]);
    }
    event_base_dispatch(s->base);
    struct rate rate = {(double)s->done / (now_s() - t0), (double)s->done / (cpu_s() - c0)};
    if (s->failed) {
        fprintf(stderr, "tiercache-seal-cost: %llu sets failed\n", (unsigned long long)s->failed);
        exit(1);
    }
    tc_tier_ctx_dispose(s->ctx);
    event_base_free(s->base);
    free(s);
    return rate;
}

static struct rate run_gets(struct tc_tier *t, size_t vlen, size_t keys, double secs)
{
    struct tc_tier_ctx *ctx;
    struct tc_buf out = TC_BUF_INIT;
    if (tc_tier_ctx_init(t, NULL, &ctx) != TC_OK) {
        exit(1);
    }
    uint64_t x = 88172645463325252ull, n = 0, miss = 0;
    double t0 = now_s(), end = t0 + secs, c0 = cpu_s();
    char key[32];
    while ((n & 255) != 0 || now_s() < end) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        snprintf(key, sizeof(key), "key:%llu", (unsigned long long)(x % keys));
        struct tc_tier_req r = {
            .key = key, .key_len = strlen(key), .out = &out, .now_ms = wall_ms()};
        if (tc_tier_get(ctx, &r) != TC_OK || out.len != vlen) {
            miss++;
        }
        n++;
    }
    struct rate rate = {(double)n / (now_s() - t0), (double)n / (cpu_s() - c0)};
    tc_tier_ctx_dispose(ctx);
    tc_buf_deinit(&out);
    if (miss) {
        fprintf(stderr, "tiercache-seal-cost: %llu gets missed\n", (unsigned long long)miss);
        exit(1);
    }
    return rate;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of field @p cpu (1) or wall (0) over the rounds. */
static double median(const struct rate *r, int cpu)
{
    double v[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        v[i] = cpu ? r[i].cpu : r[i].wall;
    }
    qsort(v, ROUNDS, sizeof(v[0]), cmp_double);
    return v[ROUNDS / 2];
}

static void report(size_t vlen, const char *op, const struct rate *plain, const struct rate *sealed)
{
    double pw = median(plain, 0), sw = median(sealed, 0);
    double pc = median(plain, 1), sc = median(sealed, 1);
    printf("%-6zu %-4s %12.0f %12.0f %7.3f %12.0f %12.0f %7.3f\n", vlen, op, pw, sw, sw / pw, pc,
           sc, sc / pc);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    size_t keys = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 20000;
    if (secs <= 0 || secs > 30 || keys == 0 || keys > 10000000) {
        fprintf(stderr, "usage: tiercache-seal-cost [SECONDS_PER_ROUND (0-30)] [KEYS]\n");
        return 2;
    }
    char dir[] = "/tmp/tc-seal-cost-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char keyfile[128], err[512], uri[2][256];
    snprintf(keyfile, sizeof(keyfile), "%s/keys", dir);
    uint32_t id;
    int created;
    struct tc_seal *ring;
    if (tc_seal_keyfile_add(keyfile, &id, &created, err, sizeof(err)) != TC_OK ||
        tc_seal_open(keyfile, &ring, err, sizeof(err)) != TC_OK) {
        fprintf(stderr, "tiercache-seal-cost: %s\n", err);
        return 1;
    }
    struct tc_tier_registry *reg = tc_tier_registry_create();
    tc_tier_registry_set_seal(reg, ring);
    struct tc_tier *t[2];
    static const char *const mode[2] = {"off", "on"};
    for (int m = 0; m < 2; m++) {
        snprintf(uri[m], sizeof(uri[m]), "lmdb://%s/%s?map_size=1G&sync=none&encrypt=%s", dir,
                 mode[m], mode[m]);
        if (tc_tier_open(reg, uri[m], &t[m], err, sizeof(err)) != TC_OK) {
            fprintf(stderr, "tiercache-seal-cost: %s: %s\n", uri[m], err);
            return 1;
        }
    }
    static const size_t sizes[] = {100, 4096};
    unsigned char *v = malloc(4096);
    for (size_t i = 0; i < 4096; i++) {
        v[i] = (unsigned char)(i * 2654435761u >> 11);
    }
    printf("# tiercache-seal-cost: lmdb:// sync=none, %zu keys, %.2f s rounds, median of %d\n"
           "# ops/s: wall clock; ops/cpu-s: per CPU second of the process (all threads)\n",
           keys, secs, ROUNDS);
    printf("%-6s %-4s %12s %12s %7s %12s %12s %7s\n", "value", "op", "plain/s", "sealed/s", "ratio",
           "plain/cpu-s", "sealed/cpu-s", "ratio");
    for (size_t si = 0; si < 2; si++) {
        size_t vlen = sizes[si];
        for (int m = 0; m < 2; m++) {
            fill(t[m], v, vlen, keys); /* every key present at this size */
        }
        struct rate set[2][ROUNDS], get[2][ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            for (int m = 0; m < 2; m++) {
                int mm = (r & 1) ? 1 - m : m; /* alternate which goes first */
                set[mm][r] = run_sets(t[mm], v, vlen, keys, secs);
            }
        }
        for (int r = 0; r < ROUNDS; r++) {
            for (int m = 0; m < 2; m++) {
                int mm = (r & 1) ? 1 - m : m;
                get[mm][r] = run_gets(t[mm], vlen, keys, secs);
            }
        }
        report(vlen, "set", set[0], set[1]);
        report(vlen, "get", get[0], get[1]);
        fflush(stdout);
    }
    for (int m = 0; m < 2; m++) {
        tc_tier_close(t[m]);
    }
    tc_tier_registry_destroy(reg);
    tc_seal_close(ring);
    free(v);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "tiercache-seal-cost: could not remove %s\n", dir);
    }
    return 0;
}
