/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/result.h — what one worker, and then one cell (stack x workload x
 * repeat), measured. Plain data of fixed size, so that forked workers write
 * it into a MAP_SHARED mapping the parent reads.
 */
#ifndef TC_BENCH_RESULT_H
#define TC_BENCH_RESULT_H

#include "bench/lat.h"
#include "bench/spec.h"

#include <stdint.h>

#define TB_STATS_MAX 48

struct tb_stat {
    char name[40];
    uint64_t value;
};

/** A tier's own stats (tc_tier_stats) after the cell ran. */
struct tb_tier_stats {
    int n;
    struct tb_stat s[TB_STATS_MAX];
};

struct tb_result {
    uint64_t gets, sets, dels, hits, errors, sets_refused, late;
    uint64_t tier_hits[TB_MAX_TIERS]; /* gets answered by each tier */
    uint64_t bytes_read, bytes_written;
    uint64_t start_ns, end_ns; /* a worker's timed window */
    /* get latency by the tier that answered; [TB_MAX_TIERS]: missed everywhere */
    struct tb_lat lat_get[TB_MAX_TIERS + 1];
    struct tb_lat lat_set, lat_del;
    char error[1024];
};

/** Adds the counts and histograms of @p src into @p dst (not the windows). */
void tb_result_merge(struct tb_result *dst, const struct tb_result *src);

#endif
