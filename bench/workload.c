/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/workload.h"
#include "bench/keys.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void tb_workload_defaults(struct tb_workload *w)
{
    memset(w, 0, sizeof(*w));
    strcpy(w->name, "default");
    w->keys = 100000;
    w->pop = TB_POP_UNIFORM;
    w->hot_keys = 0.1;
    w->hot_ops = 0.9;
    w->key_size = (struct tb_dist){.kind = TB_DIST_FIXED, .lo = 0};
    w->value_size = (struct tb_dist){.kind = TB_DIST_FIXED, .lo = 100};
    w->ttl = (struct tb_dist){.kind = TB_DIST_FIXED, .lo = 3600};
    w->get = 0.9;
    w->set = 0.1;
    w->cache_aside = 1;
    w->seconds = 5;
    w->threads = 1;
    w->processes = 1;
    w->inflight = 1;
    w->seed = 1;
    w->csv = (struct tb_csv_cols){.key = 1, .size = 2, .sep = ','};
    w->sim_requests = 1000000;
}

static double unit(uint64_t *s)
{
    return (double)(xorshift(s) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t tb_dist_max(const struct tb_dist *d)
{
    if (d->kind == TB_DIST_FIXED) {
        return d->lo;
    }
    if (d->kind == TB_DIST_UNIFORM) {
        return d->hi;
    }
    uint64_t m = 0;
    for (size_t i = 0; i < d->n; i++) {
        m = d->vals[i] > m ? d->vals[i] : m;
    }
    return m;
}

uint64_t tb_dist_draw(const struct tb_dist *d, uint64_t *rng)
{
    switch (d->kind) {
    case TB_DIST_FIXED:
        return d->lo;
    case TB_DIST_UNIFORM:
        return d->lo + xorshift(rng) % (d->hi - d->lo + 1);
    case TB_DIST_WEIGHTED: {
        double u = unit(rng);
        for (size_t i = 0; i < d->n; i++) {
            if (u < d->cum[i]) {
                return d->vals[i];
            }
        }
        return d->n ? d->vals[d->n - 1] : 0;
    }
    }
    return 0;
}

/* Zipf ranks by Gray et al., "Quickly generating billion-record synthetic
 * databases" (the YCSB generator): O(n) set-up for zeta(n), O(1) a draw. */
struct tb_gen {
    const struct tb_workload *w;
    double theta, alpha, zetan, eta, half_pow;
    uint64_t hot_n;
};

static double zeta(uint64_t n, double theta)
{
    double sum = 0;
    for (uint64_t i = 1; i <= n; i++) {
        sum += 1.0 / pow((double)i, theta);
    }
    return sum;
}

struct tb_gen *tb_gen_create(const struct tb_workload *w)
{
    struct tb_gen *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return NULL;
    }
    g->w = w;
    if (w->pop == TB_POP_ZIPF) {
        double theta = w->zipf;
        if (fabs(theta - 1.0) < 1e-9) {
            theta = 1.0 - 1e-6; /* the closed form divides by 1 - theta */
        }
        uint64_t n = w->keys;
        g->theta = theta;
        g->zetan = zeta(n, theta);
        g->alpha = 1.0 / (1.0 - theta);
        g->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta(2, theta) / g->zetan);
        g->half_pow = 1.0 + pow(0.5, theta);
    }
    g->hot_n = (uint64_t)((double)w->keys * w->hot_keys);
    if (g->hot_n == 0) {
        g->hot_n = 1;
    }
    if (g->hot_n > w->keys) {
        g->hot_n = w->keys;
    }
    return g;
}

void tb_gen_destroy(struct tb_gen *g)
{
    free(g);
}

static uint64_t rank_draw(const struct tb_gen *g, uint64_t *rng)
{
    const struct tb_workload *w = g->w;
    uint64_t n = w->keys;
    switch (w->pop) {
    case TB_POP_ZIPF: {
        double u = unit(rng);
        double uz = u * g->zetan;
        if (uz < 1.0) {
            return 0;
        }
        if (uz < g->half_pow) {
            return 1;
        }
        uint64_t r = (uint64_t)((double)n * pow(g->eta * u - g->eta + 1.0, g->alpha));
        return r < n ? r : n - 1;
    }
    case TB_POP_HOTSET:
        if (unit(rng) < w->hot_ops || g->hot_n == n) {
            return xorshift(rng) % g->hot_n;
        }
        return g->hot_n + xorshift(rng) % (n - g->hot_n);
    case TB_POP_UNIFORM:
        break;
    }
    return xorshift(rng) % n;
}

/* Hot ranks are spread over the keyspace so that "hot" does not also mean
 * "adjacent in the key order". */
static uint64_t scramble(uint64_t rank, uint64_t n)
{
    return (rank * 0x9E3779B97F4A7C15ull) % n;
}

/* An object's sizes are a function of its id, as a real object's are: every
 * request for it, and every write of it, agree. */
static uint64_t obj_rng(uint64_t id, uint64_t salt)
{
    uint64_t s = (id + 1) * 0xBF58476D1CE4E5B9ull ^ salt;
    s ^= s >> 31;
    return s ? s : 1;
}

struct tb_req tb_gen_object(const struct tb_gen *g, uint64_t id)
{
    const struct tb_workload *w = g->w;
    uint64_t rk = obj_rng(id, 0x94D049BB133111EBull), rv = obj_rng(id, 0x2545F4914F6CDD1Dull);
    uint64_t rt = obj_rng(id, w->seed);
    struct tb_req r = {.id = id, .op = TB_SET};
    r.ksize = (uint16_t)tb_dist_draw(&w->key_size, &rk);
    r.vsize = (uint32_t)tb_dist_draw(&w->value_size, &rv);
    r.ttl_s = (uint32_t)tb_dist_draw(&w->ttl, &rt);
    return r;
}

void tb_gen_fill(const struct tb_gen *g, uint64_t seed, struct tb_req *out, size_t n)
{
    const struct tb_workload *w = g->w;
    uint64_t rng = (seed * 0x243F6A8885A308D3ull) | 1;
    double get_cut = w->get, set_cut = w->get + w->set;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = scramble(rank_draw(g, &rng), w->keys);
        struct tb_req r = tb_gen_object(g, id);
        double u = unit(&rng);
        r.op = u < get_cut ? TB_GET : u < set_cut ? TB_SET : TB_DEL;
        /* The TTL spreads per write, not per object. */
        r.ttl_s = (uint32_t)tb_dist_draw(&w->ttl, &rng);
        out[i] = r;
    }
}

size_t tb_req_key(const struct tb_req *r, const char *prefix, char *buf)
{
    size_t p = strlen(prefix);
    memcpy(buf, prefix, p);
    size_t n = p + fmt_key(buf + p, r->id);
    size_t want = p + r->ksize;
    if (want > TB_KEY_MAX + p) {
        want = TB_KEY_MAX + p;
    }
    /* Padding makes the key as long as the workload or the trace says. */
    while (n < want) {
        buf[n++] = '.';
    }
    buf[n] = '\0';
    return n;
}
