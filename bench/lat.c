/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/lat.h"

static size_t bucket_of(uint64_t ns)
{
    if (ns < TB_LAT_SUB) {
        return (size_t)ns;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns); /* >= 4 */
    /* The 4 bits below the top one pick the sub-bucket. */
    size_t sub = (size_t)((ns >> (msb - 4)) & (TB_LAT_SUB - 1));
    size_t i = (size_t)(msb - 3) * TB_LAT_SUB + sub;
    return i < TB_LAT_NB ? i : TB_LAT_NB - 1;
}

uint64_t tb_lat_bucket_ns(size_t i)
{
    if (i < TB_LAT_SUB) {
        return i;
    }
    unsigned msb = (unsigned)(i / TB_LAT_SUB) + 3;
    uint64_t sub = i % TB_LAT_SUB;
    /* Largest value whose top five bits are 1 sub. */
    return ((TB_LAT_SUB + sub + 1) << (msb - 4)) - 1;
}

void tb_lat_add(struct tb_lat *h, uint64_t ns)
{
    h->b[bucket_of(ns)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
}

void tb_lat_merge(struct tb_lat *dst, const struct tb_lat *src)
{
    for (size_t i = 0; i < TB_LAT_NB; i++) {
        dst->b[i] += src->b[i];
    }
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->max_ns > dst->max_ns) {
        dst->max_ns = src->max_ns;
    }
}

uint64_t tb_lat_quantile(const struct tb_lat *h, double q)
{
    if (h->count == 0) {
        return 0;
    }
    uint64_t want = (uint64_t)(q * (double)h->count + 0.5);
    if (want == 0) {
        want = 1;
    }
    uint64_t seen = 0;
    for (size_t i = 0; i < TB_LAT_NB; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t ub = tb_lat_bucket_ns(i);
            return ub < h->max_ns ? ub : h->max_ns;
        }
    }
    return h->max_ns;
}
