/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/results.h — a run's results, named: each cell (stack x workload x
 * repeat) with its per-tier figures by tier name, and the simulators' rows;
 * written as results.json and results.csv (long format: a row per cell and
 * tier), and as the JSON object --json prints.
 */
#ifndef TC_BENCH_RESULTS_H
#define TC_BENCH_RESULTS_H

#include "bench/result.h"
#include "bench/sim.h"
#include "bench/spec.h"

#include <jansson.h>
#include <stddef.h>

struct tb_cellrec {
    size_t stack, workload;
    int repeat;
    int ntiers;
    char tier_names[TB_MAX_TIERS][32];
    char tier_uris[TB_MAX_TIERS][TB_URI_MAX]; /* as the cell opened them, redacted */
    double seconds;
    struct tb_result r;
    struct tb_tier_stats tstats[TB_MAX_TIERS];
    double load_before[3], load_after[3];
    int interrupted;
    char error[1024];
};

struct tb_simrec {
    size_t workload;
    enum tb_sim_policy policy;
    uint64_t size;
    struct tb_sim_result r;
    double seconds;     /* wall time the simulation took */
    double cpu_seconds; /* its thread's CPU time */
};

struct tb_results {
    const struct tb_run *run;
    char command[2048];
    size_t ncells, cap_cells;
    struct tb_cellrec *cells;
    size_t nsims;
    struct tb_simrec sims[TB_MAX_WORKLOADS * TB_SIM_SIZES_MAX * 2 + 8];
};

/** Requests per second of a cell (gets + sets + deletes over its timed window). */
double tb_cell_throughput(const struct tb_cellrec *c);

/** A cell as a JSON object (new reference). @p sims: its workload's refs. */
json_t *tb_cell_json(const struct tb_results *rs, const struct tb_cellrec *c);

/** The whole run as the JSON object results.json holds (new reference). */
json_t *tb_results_json(const struct tb_results *rs);

/** Writes DIR/results.json and DIR/results.csv. 0, or -1 (message on stderr). */
int tb_results_write(const struct tb_results *rs, const char *dir);

/** Reads /proc/loadavg into @p out (zeros when unreadable). */
void tb_loadavg(double out[3]);

#endif
