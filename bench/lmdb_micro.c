/*
 * lmdb-micro: a focused benchmark for the lmdb:// tier, kept apart from
 * tiercache-bench (which is being rewritten) so that the L2 figures can be
 * reproduced on their own:
 *
 *   lmdb-micro --tier URI --mode get --keys 1000000 --value-size 100 --seconds 3
 *   lmdb-micro --tier URI --mode set --threads 2 --inflight 64 --seconds 3
 *
 * get: prefills every key (asynchronously, many in flight), then one thread
 * reads uniformly random keys through tc_tier_get. set: each thread drives
 * its own event_base and keeps --inflight sets outstanding; throughput is
 * acknowledged (committed) sets per second. Compare URIs in one invocation
 * of a script (e.g. batch=1 vs the default) on the same machine load.
 */
#define _GNU_SOURCE /* getopt_long */
#include "tiers/tier.h"

#include <event2/event.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

struct slot {
    struct tc_tier_req req;
    char key[32];
    struct setter *owner;
};

struct setter {
    struct tc_tier *tier;
    struct event_base *base;
    struct tc_tier_ctx *ctx;
    const char *value;
    size_t vsize;
    unsigned long keys;
    unsigned long next_key; /* prefill: sequential; bench: random */
    unsigned long limit;    /* prefill: stop issuing at this key */
    int sequential;
    uint64_t seed;
    uint64_t deadline_ns;
    uint64_t ttl_ms; /* 0: items never expire */
    uint64_t acked, failed;
    int outstanding;
    int stop;
};

static void issue(struct slot *s);

static void on_done(struct tc_tier_req *req)
{
    struct slot *s = req->arg;
    struct setter *w = s->owner;
    w->outstanding--;
    if (req->status == TC_OK) {
        w->acked++;
    } else {
        w->failed++;
    }
    if (!w->stop) {
        issue(s);
    }
    if (w->outstanding == 0) {
        event_base_loopbreak(w->base);
    }
}

static void issue(struct slot *s)
{
    struct setter *w = s->owner;
    unsigned long k;
    if (w->sequential) {
        if (w->next_key >= w->limit) {
            w->stop = 1;
            return;
        }
        k = w->next_key++;
    } else {
        if (now_ns() >= w->deadline_ns) {
            w->stop = 1;
            return;
        }
        k = (unsigned long)(xorshift(&w->seed) % w->keys);
    }
    memset(&s->req, 0, sizeof(s->req));
    s->req.key = s->key;
    s->req.key_len = (size_t)snprintf(s->key, sizeof(s->key), "key:%lu", k);
    s->req.value = w->value;
    s->req.value_len = w->vsize;
    s->req.hdr.encoding = TC_ENC_BINARY;
    s->req.now_ms = wall_ms();
    s->req.hdr.expire_ms = w->ttl_ms ? s->req.now_ms + w->ttl_ms : 0;
    s->req.done = on_done;
    s->req.arg = s;
    w->outstanding++;
    enum tc_status st = tc_tier_set(w->ctx, &s->req);
    if (st != TC_EINPROGRESS) {
        /* Completed synchronously (refused): count it, do not recurse. */
        w->outstanding--;
        if (st == TC_OK) {
            w->acked++;
        } else {
            w->failed++;
        }
    }
}

static void print_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    (void)arg;
    (void)kind;
    if (strcmp(name, "commit_batch_mean") == 0 || strcmp(name, "commit_batches") == 0 ||
        strcmp(name, "evictions") == 0 || strcmp(name, "syncs") == 0) {
        printf(" %s=%llu", name, (unsigned long long)v);
    }
}

static void *setter_main(void *arg)
{
    struct setter *w = arg;
    int inflight = w->outstanding;
    w->outstanding = 0;
    w->base = event_base_new();
    if (w->base == NULL || tc_tier_ctx_init(w->tier, w->base, &w->ctx) != TC_OK) {
        fprintf(stderr, "lmdb-micro: cannot make an event loop ctx\n");
        w->failed++;
        return NULL;
    }
    struct slot *slots = calloc((size_t)inflight, sizeof(*slots));
    for (int i = 0; i < inflight; i++) {
        slots[i].owner = w;
        issue(&slots[i]);
    }
    while (w->outstanding > 0) {
        event_base_loop(w->base, EVLOOP_ONCE);
    }
    tc_tier_ctx_dispose(w->ctx);
    event_base_free(w->base);
    free(slots);
    return NULL;
}

/* Runs `threads` setters; returns acknowledged sets per second. */
static double run_setters(struct tc_tier *t, int threads, int inflight, unsigned long keys,
                          const char *value, size_t vsize, double seconds, int prefill,
                          uint64_t ttl_ms, uint64_t *failed)
{
    pthread_t th[64];
    struct setter w[64];
    uint64_t start = now_ns();
    for (int i = 0; i < threads; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].tier = t;
        w[i].value = value;
        w[i].vsize = vsize;
        w[i].keys = keys;
        w[i].sequential = prefill;
        w[i].next_key = keys * (unsigned long)i / (unsigned long)threads;
        w[i].limit = keys * (unsigned long)(i + 1) / (unsigned long)threads;
        w[i].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        w[i].deadline_ns = start + (uint64_t)(seconds * 1e9);
        w[i].outstanding = inflight;
        w[i].ttl_ms = ttl_ms;
        pthread_create(&th[i], NULL, setter_main, &w[i]);
    }
    uint64_t acked = 0;
    *failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        acked += w[i].acked;
        *failed += w[i].failed;
    }
    return (double)acked / ((double)(now_ns() - start) / 1e9);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tier", required_argument, NULL, 't'},    {"mode", required_argument, NULL, 'm'},
        {"keys", required_argument, NULL, 'k'},    {"value-size", required_argument, NULL, 'v'},
        {"threads", required_argument, NULL, 'T'}, {"inflight", required_argument, NULL, 'i'},
        {"seconds", required_argument, NULL, 's'}, {"no-prefill", no_argument, NULL, 'n'},
        {"ttl", required_argument, NULL, 'L'},     {NULL, 0, NULL, 0},
    };
    const char *uri = NULL, *mode = "get";
    unsigned long keys = 1000000, vsize = 100;
    int threads = 1, inflight = 64, opt, prefill = 1;
    double seconds = 3, ttl_s = 3600;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 't':
            uri = optarg;
            break;
        case 'm':
            mode = optarg;
            break;
        case 'k':
            keys = strtoul(optarg, NULL, 10);
            break;
        case 'v':
            vsize = strtoul(optarg, NULL, 10);
            break;
        case 'T':
            threads = atoi(optarg);
            break;
        case 'i':
            inflight = atoi(optarg);
            break;
        case 's':
            seconds = strtod(optarg, NULL);
            break;
        case 'n':
            prefill = 0;
            break;
        case 'L':
            ttl_s = strtod(optarg, NULL);
            break;
        default:
            fprintf(stderr, "usage: lmdb-micro --tier URI [--mode get|set] [--keys N] "
                            "[--value-size B] [--threads T] [--inflight N] [--seconds S] "
                            "[--ttl S (0: never)] [--no-prefill]\n");
            return 2;
        }
    }
    if (uri == NULL || keys == 0 || threads < 1 || threads > 64 || inflight < 1) {
        fprintf(stderr, "lmdb-micro: --tier URI is required; 1 <= threads <= 64\n");
        return 2;
    }
    char err[512];
    struct tc_tier *t;
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
        fprintf(stderr, "lmdb-micro: %s\n", err);
        return 1;
    }
    char *value = malloc(vsize ? vsize : 1);
    memset(value, 'v', vsize);
    uint64_t failed = 0;
    if (strcmp(mode, "set") == 0) {
        double r = run_setters(t, threads, inflight, keys, value, vsize, seconds, 0,
                               (uint64_t)(ttl_s * 1000), &failed);
        printf("%s: set %.0f acked/s (threads=%d inflight=%d, %llu failed)\n", tc_tier_uri(t), r,
               threads, inflight, (unsigned long long)failed);
    } else {
        if (prefill) {
            double r =
                run_setters(t, 1, 256, keys, value, vsize, 0, 1, (uint64_t)(ttl_s * 1000), &failed);
            fprintf(stderr, "prefill: %lu keys at %.0f sets/s (%llu failed)\n", keys, r,
                    (unsigned long long)failed);
        }
        struct tc_tier_ctx *c;
        tc_tier_ctx_init(t, NULL, &c);
        struct tc_buf out = TC_BUF_INIT;
        struct tc_tier_req req;
        char key[32];
        uint64_t seed = 0x2545f4914f6cdd1dull, gets = 0, hits = 0;
        uint64_t now_ms = wall_ms();
        uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), end;
        do {
            for (int i = 0; i < 4096; i++) {
                memset(&req, 0, sizeof(req));
                req.key = key;
                req.key_len = (size_t)snprintf(key, sizeof(key), "key:%lu",
                                               (unsigned long)(xorshift(&seed) % keys));
                req.out = &out;
                req.now_ms = now_ms;
                gets++;
                hits += tc_tier_get(c, &req) == TC_OK;
            }
            end = now_ns();
        } while (end < deadline);
        printf("%s: get %.0f/s single thread (%llu gets, hit ratio %.4f)\n", tc_tier_uri(t),
               (double)gets / ((double)(end - start) / 1e9), (unsigned long long)gets,
               (double)hits / (double)gets);
        tc_buf_deinit(&out);
        tc_tier_ctx_dispose(c);
    }
    printf("  stats:");
    tc_tier_stats(t, print_stat, NULL);
    printf("\n");
    free(value);
    tc_tier_close(t);
    return failed ? 1 : 0;
}
