/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/driver.h — runs one cell: P forked processes of T threads each, all
 * started together after an untimed prefill, then a warm-up that is not
 * counted, then the timed window; the parent watches, prints a progress
 * line on a terminal, and stops the workers when time is up, the trace is
 * used up, or the user interrupts. Every cell runs in children, so the
 * parent never holds a tier handle across fork() (LMDB forbids it) and can
 * always clean up after a crashed cell.
 *
 * The workers themselves are bench/engine.c (tiers in process) and
 * bench/httpc.c (a server over HTTP); both follow struct tb_worker.
 */
#ifndef TC_BENCH_DRIVER_H
#define TC_BENCH_DRIVER_H

#include "bench/result.h"
#include "bench/spec.h"
#include "bench/workload.h"
#include "src/clock.h" /* the server's clocks: tc_clock_ns, tc_clock_ms */

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#define TB_MAX_WORKERS 256
/** Synthetic requests per worker, replayed cyclically. */
#define TB_STREAM_LEN (1u << 20)

enum tb_phase { TB_PH_PREFILL = 0, TB_PH_WARMUP = 1, TB_PH_TIMED = 2, TB_PH_STOP = 3 };

/** A cell as the workers see it (read-only for them). */
struct tb_cell {
    const struct tb_stack *stack;
    const struct tb_workload *wl;
    const char *uris[TB_MAX_TIERS]; /* the stack's tier URIs, renamed for this cell */
    int ntiers;
    const char *tier_names[TB_MAX_TIERS];
    const struct tb_req *trace; /* NULL: synthetic */
    size_t ntrace;
    const char *key_prefix; /* HTTP: keys live under it, so they can be told apart */
};

/** Memory shared by the parent and every worker of a cell. */
struct tb_shared {
    _Atomic int phase;          /* enum tb_phase, set by the parent */
    _Atomic int ready;          /* workers done with prefill */
    _Atomic int finished;       /* workers that ran out of trace */
    _Atomic uint64_t trace_pos; /* next trace record to replay */
    _Atomic uint64_t prog_ops[TB_MAX_WORKERS], prog_hits[TB_MAX_WORKERS];
    struct tb_tier_stats tstats[TB_MAX_TIERS]; /* from process 0, after the run */
    struct tb_result res[];
};

/** One worker thread's view. */
struct tb_wctx {
    const struct tb_cell *cell;
    struct tb_shared *sh;
    struct tb_result *res;
    int id;         /* 0 .. P*T-1 */
    int tidx, pidx; /* thread in process, process */
    int prefill;    /* this worker writes its share of the keyspace first */
    struct tb_gen *gen;
    /* Synthetic: this worker's own stream, replayed cyclically. */
    struct tb_req *stream;
    size_t nstream;
};

/** Takes the next request; 0 when the trace is used up. Counts progress. */
int tb_wctx_next(struct tb_wctx *w, struct tb_req *out);

/** The phase the parent set (relaxed). */
enum tb_phase tb_wctx_phase(const struct tb_wctx *w);

/** Marks the worker ready after prefill and waits for the parent's go. */
void tb_wctx_ready(struct tb_wctx *w);

/**
 * Runs cell @p c into @p out. @p stop is set by the SIGINT handler; the cell
 * then ends early (its result is marked interrupted). @p progress: print a
 * progress line on stderr every second. Returns 0, or -1 with @p err.
 * out->error holds the first worker error, if any.
 */
int tb_driver_run(const struct tb_cell *c, volatile sig_atomic_t *stop, int progress,
                  struct tb_result *out, double *seconds, struct tb_tier_stats *tstats, char *err,
                  size_t errlen);

#endif
