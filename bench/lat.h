/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/lat.h — latency histograms for tiercache-bench: log-linear buckets
 * (16 per power of two, so a quantile is within 1/16 of the truth), a fixed
 * size so that a result can live in a MAP_SHARED mapping a forked cell
 * reports into, and a CDF for the report's plots.
 *
 * Bench-private modules use the prefix tb_ (tiercache-bench) instead of
 * tc_: they are not part of any library (STYLE R2, R0).
 */
#ifndef TC_BENCH_LAT_H
#define TC_BENCH_LAT_H

#include <stddef.h>
#include <stdint.h>

#define TB_LAT_SUB 16
#define TB_LAT_NB  (44 * TB_LAT_SUB) /* up to 2^44 ns, about 4.9 hours */

struct tb_lat {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;
    uint32_t b[TB_LAT_NB];
};

/** Records one latency. One writer per histogram; no locking. */
void tb_lat_add(struct tb_lat *h, uint64_t ns);

/** Adds @p src into @p dst. */
void tb_lat_merge(struct tb_lat *dst, const struct tb_lat *src);

/** The q-quantile (0 < q <= 1) in ns: the upper bound of its bucket; 0 if empty. */
uint64_t tb_lat_quantile(const struct tb_lat *h, double q);

/** Upper bound in ns of bucket @p i. */
uint64_t tb_lat_bucket_ns(size_t i);

#endif
