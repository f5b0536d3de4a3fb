/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/report.h — report.md and its plots: gnuplot (from Debian) draws each
 * as SVG and PNG from data files the bench writes beside the script
 * (DIR/plots/), so the figures can be redrawn or restyled by hand:
 * throughput per configuration (median, min-max bars), the stacked share of
 * gets each tier served, get latency CDFs, and the miss-ratio curve of the
 * LRU and FIFO simulators with each stack's L1 as a point.
 */
#ifndef TC_BENCH_REPORT_H
#define TC_BENCH_REPORT_H

#include "bench/results.h"

/**
 * Writes DIR/report.md, the data files and plots.gp in DIR/plots and runs gnuplot
 * there. Returns 0, or -1 (message on stderr; report.md then says the plots
 * are missing).
 */
int tb_report_write(const struct tb_results *rs, const char *dir);

#endif
