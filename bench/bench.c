/*
 * tiercache-bench: workloads against a tier, in process. First version:
 * one tier, one thread, uniform keys, a cache-aside get/set mix.
 */
#define _GNU_SOURCE /* getopt_long */
#include "tiers/tier.h"

#include <getopt.h>
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

static void usage(FILE *out)
{
    fprintf(out, "Usage: tiercache-bench --tier URI [--keys N] [--value-size B] [--read-ratio R]\n"
                 "                       [--seconds D] [--json]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tier", required_argument, NULL, 't'},
        {"keys", required_argument, NULL, 'k'},
        {"value-size", required_argument, NULL, 'v'},
        {"read-ratio", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *uri = NULL;
    unsigned long keys = 100000, vsize = 100;
    double read_ratio = 0.9, seconds = 2;
    int json = 0, opt;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 't':
            uri = optarg;
            break;
        case 'k':
            keys = strtoul(optarg, NULL, 10);
            break;
        case 'v':
            vsize = strtoul(optarg, NULL, 10);
            break;
        case 'r':
            read_ratio = strtod(optarg, NULL);
            break;
        case 's':
            seconds = strtod(optarg, NULL);
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (uri == NULL || keys == 0) {
        usage(stderr);
        return 2;
    }
    char err[512];
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
        fprintf(stderr, "tiercache-bench: %s\n", err);
        return 1;
    }
    if (tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        fprintf(stderr, "tiercache-bench: cannot create a context for %s\n", uri);
        tc_tier_close(t);
        return 1;
    }
    char *value = malloc(vsize ? vsize : 1);
    memset(value, 'v', vsize);
    struct tc_buf out = TC_BUF_INIT;
    char key[32];
    uint64_t seed = 0x9e3779b97f4a7c15ull, gets = 0, hits = 0, sets = 0;
    struct tc_tier_req req;

    for (unsigned long i = 0; i < keys; i++) {
        memset(&req, 0, sizeof(req));
        req.key = key;
        req.key_len = (size_t)snprintf(key, sizeof(key), "key:%lu", i);
        req.value = value;
        req.value_len = vsize;
        req.hdr.encoding = TC_ENC_BINARY;
        req.now_ms = wall_ms();
        tc_tier_set(c, &req);
    }
    uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), end;
    uint64_t threshold = (uint64_t)(read_ratio * (double)UINT64_MAX);
    do {
        for (int batch = 0; batch < 1024; batch++) {
            unsigned long k = (unsigned long)(xorshift(&seed) % keys);
            memset(&req, 0, sizeof(req));
            req.key = key;
            req.key_len = (size_t)snprintf(key, sizeof(key), "key:%lu", k);
            req.now_ms = wall_ms();
            int is_get = read_ratio >= 1.0 || xorshift(&seed) < threshold;
            if (is_get) {
                req.out = &out;
                gets++;
                if (tc_tier_get(c, &req) == TC_OK) {
                    hits++;
                    continue;
                }
            }
            req.value = value;
            req.value_len = vsize;
            req.hdr.encoding = TC_ENC_BINARY;
            tc_tier_set(c, &req);
            sets++;
        }
        end = now_ns();
    } while (end < deadline);
    double secs = (double)(end - start) / 1e9;
    double ops = (double)(gets + sets) / secs;
    double hr = gets ? (double)hits / (double)gets : 0;
    if (json) {
        printf("{\"tier\":\"%s\",\"ops_per_sec\":%.0f,\"gets\":%llu,\"sets\":%llu,"
               "\"hit_ratio\":%.4f}\n",
               tc_tier_uri(t), ops, (unsigned long long)gets, (unsigned long long)sets, hr);
    } else {
        printf("%s: %.0f ops/s (%llu gets, %llu sets, hit ratio %.4f)\n", tc_tier_uri(t), ops,
               (unsigned long long)gets, (unsigned long long)sets, hr);
    }
    tc_buf_deinit(&out);
    free(value);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    return 0;
}
