/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The metrics registry: every number /stats and /metrics show, declared once
 * as a row of {name, type, unit, help, labels, getter, place in /stats}.
 * /stats (tc_metrics_json) and /metrics (tc_metrics_prom) are two renderers
 * of the same rows. Nothing is counted here: the getters read the counters
 * where they are kept (each worker's answers, each HTTP server, the key
 * locks, the origin client, the stack's latency histograms, the tiers).
 *
 * The tiers report their stats by name (tc_tier_stats()): the tier layer's
 * common counters and each backend's own. A table per backend maps each
 * reported name to its metric family and its place in /stats. A name no
 * table knows still shows, under a generic family
 * (tiercache_tier_<scheme>_<name>) whose HELP says that nothing describes
 * it, which the name test (tests/http/test_metrics.c) counts as a
 * violation: a backend stat cannot go unseen, nor pass the test unnamed.
 *
 * Names follow the Prometheus conventions (docs/api.md#metrics): prefix
 * tiercache_ (process_ for the standard process metrics), snake_case, base
 * units (seconds, bytes) last, counters end in _total, enums are gauges
 * labelled by state, means are _sum and _count. Per-tier series carry
 * exactly the labels tier and scheme (plus op, state or key_id where the
 * family has that dimension). Counters of an shm segment count for every process
 * attached to it: they are tiercache_shm_segment_* with the label segment
 * alone, so two servers sharing a segment are deduplicated by it
 * (max by (segment)) instead of summed.
 *
 * Thread safety: both renderers may run on any worker at once; they read
 * other workers' counters with relaxed loads.
 */
#ifndef TC_SRC_METRICS_H
#define TC_SRC_METRICS_H

#include "src/worker.h"
#include "tiers/buf.h"

#include <jansson.h>

/**
 * Renders every row as the /stats object: top-level members (uptime_s,
 * version, process, connections, http, requests, cache, invalidations,
 * dogpile, origin with --origin) and a "tiers" array. Returns a new
 * reference, or NULL when out of memory.
 */
json_t *tc_metrics_json(struct tc_server *srv);

/**
 * Appends every row to @p out in the Prometheus text format 0.0.4, one
 * family at a time (HELP, TYPE, samples); families without samples are left
 * out. Returns TC_OK or TC_ENOMEM (@p out then holds part of the text).
 */
enum tc_status tc_metrics_prom(struct tc_server *srv, struct tc_buf *out);

/**
 * Checks the registry's own rows against the rules that need no running
 * server: every exported row has a HELP; a counter's name ends in _total
 * and no other does; a row with a unit (seconds, bytes) ends in it (before
 * _total), and a row without one does not. Writes the offending rows into
 * @p err (NUL-terminated, truncated to @p len); returns how many there are.
 */
int tc_metrics_check(char *err, size_t len);

#endif
