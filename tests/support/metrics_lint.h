/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: checks a /metrics text (Prometheus text format 0.0.4)
 * against tiercache's naming rules, the ones promtool does not know:
 *
 *   names       snake_case ([a-z][a-z0-9_]*, no "__", no trailing "_")
 *   prefix      tiercache_ or process_
 *   total       a counter ends in _total, nothing else does
 *   units       base units only (seconds, bytes: no ms, kb, ...), and last
 *               (before _total); a HELP that says "in bytes", "in seconds",
 *               "Bytes ..." or "Seconds ..." needs that unit in the name
 *   help        present, not empty, not a placeholder ("Tier stat '...'",
 *               "which no row of src/metrics.c describes", the name itself)
 *   type        every sample belongs to a family with a TYPE line
 *   duplicate   a family declared twice, or two families that differ only by
 *               a "tier_" after the prefix (tiercache_sweeps_total and
 *               tiercache_tier_sweeps_total)
 *   tier-labels a series with tier or scheme has both, and no labels beyond
 *               tier, scheme, op, state (and le); every series of a family
 *               has the same label names
 *   enum        a family named *_state, *_status, *_health, *_mode or
 *               *_scope is a gauge labelled by its state (a "state" or
 *               "scope" label), 0 or 1
 *   mean        no precomputed means (a name with mean, avg, average):
 *               _sum and _count instead
 *   segment     the shm segment's counters are tiercache_shm_segment_* with
 *               the label segment alone; no other family carries segment,
 *               and no family has "_shm_" inside another prefix
 *   required    process_cpu_seconds_total, process_resident_memory_bytes,
 *               process_open_fds, process_start_time_seconds,
 *               tiercache_build_info{version}, the histogram
 *               tiercache_http_request_duration_seconds{route,method,code},
 *               tiercache_http_cache_{hits,stale}_total{tier,scheme},
 *               tiercache_http_cache_misses_total
 */
#ifndef TC_TESTS_SUPPORT_METRICS_LINT_H
#define TC_TESTS_SUPPORT_METRICS_LINT_H

#include <stddef.h>

/**
 * Checks @p text; writes one line per violation ("rule: family: what") into
 * @p report (NUL-terminated, truncated to @p len) and returns how many
 * violations there are (0: clean).
 */
int tc_test_metrics_lint(const char *text, char *report, size_t len);

#endif
