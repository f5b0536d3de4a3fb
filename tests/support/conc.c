/* SPDX-License-Identifier: BSD-2-Clause */
#include "tests/support/conc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conc_arg {
    struct tc_tier *tier;
    int id, ops, keys;
    uint64_t now_ms;
    struct tc_conc_result r;
};

static uint32_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 16777619u;
    }
    return h;
}

static void *worker(void *p)
{
    struct conc_arg *a = p;
    struct tc_tier_ctx *c;
    struct tc_buf b = TC_BUF_INIT;
    if ((a->r.fail = tc_tier_ctx_init(a->tier, NULL, &c)) != TC_OK) {
        return NULL;
    }
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(a->id + 1);
    for (int i = 0; i < a->ops; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        char key[16], val[128];
        size_t kl = (size_t)snprintf(key, sizeof(key), "c%d", (int)(s % (uint64_t)a->keys));
        if (s & 0x100) {
            /* "key|writer|seq|" padded to a varying length, then a checksum */
            int n = snprintf(val, sizeof(val), "%s|%d|%d|", key, a->id, i);
            size_t vl = (size_t)n + (s >> 20) % 64;
            memset(val + n, 'a' + a->id % 26, vl - (size_t)n);
            uint32_t sum = fnv(val, vl);
            memcpy(val + vl, &sum, 4);
            struct tc_tier_req w = {
                .key = key, .key_len = kl, .value = val, .value_len = vl + 4, .now_ms = a->now_ms};
            w.hdr.encoding = TC_ENC_BINARY;
            w.hdr.expire_ms = a->now_ms + 3600000;
            a->r.sets++;
            if (tc_tier_set(c, &w) != TC_OK && a->r.fail == TC_OK) {
                a->r.fail = w.status;
            }
        } else {
            struct tc_tier_req r = {.key = key, .key_len = kl, .out = &b, .now_ms = a->now_ms};
            enum tc_status st = tc_tier_get(c, &r);
            a->r.gets++;
            if (st == TC_OK) {
                a->r.hits++;
                uint32_t sum;
                if (b.len < kl + 5 || memcmp(b.data, key, kl) != 0 || b.data[kl] != '|') {
                    a->r.bad++;
                    continue;
                }
                memcpy(&sum, b.data + b.len - 4, 4);
                if (sum != fnv(b.data, b.len - 4)) {
                    a->r.bad++;
                }
            } else if (st != TC_ENOTFOUND && a->r.fail == TC_OK) {
                a->r.fail = st;
            }
        }
    }
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(c);
    return NULL;
}

void tc_conc_run(struct tc_tier *t, int threads, int ops, int keys, uint64_t now_ms,
                 struct tc_conc_result *res)
{
    pthread_t *th = calloc((size_t)threads, sizeof(*th));
    struct conc_arg *args = calloc((size_t)threads, sizeof(*args));
    memset(res, 0, sizeof(*res));
    if (th == NULL || args == NULL) {
        res->fail = TC_ENOMEM;
        free(th);
        free(args);
        return;
    }
    int started = 0;
    for (int i = 0; i < threads; i++) {
        args[i] = (struct conc_arg){.tier = t, .id = i, .ops = ops, .keys = keys, .now_ms = now_ms};
        if (pthread_create(&th[i], NULL, worker, &args[i]) != 0) {
            res->fail = TC_ENOMEM;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        res->gets += args[i].r.gets;
        res->hits += args[i].r.hits;
        res->sets += args[i].r.sets;
        res->bad += args[i].r.bad;
        if (res->fail == TC_OK) {
            res->fail = args[i].r.fail;
        }
    }
    free(th);
    free(args);
}
