/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Latency histograms with fixed bucket bounds, shared by /stats (p50/p99)
 * and /metrics (Prometheus histograms). Each histogram has one writer (a
 * worker thread) and is read by the stats renderer with relaxed loads.
 */
#ifndef TC_SRC_HIST_H
#define TC_SRC_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define TC_HIST_NB 24

/** Upper bounds (inclusive) of the buckets in ns; the last is +Inf. */
extern const uint64_t tc_hist_le_ns[TC_HIST_NB];

struct tc_hist {
    _Atomic uint64_t b[TC_HIST_NB];
    _Atomic uint64_t sum_ns;
};

struct tc_hist_snap {
    uint64_t b[TC_HIST_NB];
    uint64_t count;
    uint64_t sum_ns;
};

/** Records one observation. Only the histogram's owning thread may call it. */
void tc_hist_add(struct tc_hist *h, uint64_t ns);

/** Adds @p h into @p s (any thread). */
void tc_hist_snap_add(struct tc_hist_snap *s, const struct tc_hist *h);

/** The q-quantile (0 < q < 1) in ns, interpolated inside its bucket; 0 if empty. */
uint64_t tc_hist_snap_quantile(const struct tc_hist_snap *s, double q);

#endif
