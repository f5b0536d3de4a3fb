/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/engine.h — the in-process worker: a stack of tiers driven the way
 * the server's stack drives them (read tier by tier, back-fill the faster
 * tiers of a hit with the item's own expiry, write and delete through every
 * tier), with N operations in flight per thread on its own event_base, in a
 * closed loop or, at a target rate, an open loop whose latency counts from
 * each request's intended send time.
 */
#ifndef TC_BENCH_ENGINE_H
#define TC_BENCH_ENGINE_H

#include "bench/driver.h"

struct tb_engine;

/** Opens the cell's tiers in this process. 0, or -1 with @p err. */
int tb_engine_open(const struct tb_cell *c, struct tb_engine **out, char *err, size_t errlen);

/** Closes the tiers; every thread must have returned. NULL is a no-op. */
void tb_engine_close(struct tb_engine *e);

/** Runs worker @p w (prefill if asked, then until the parent stops it). */
void tb_engine_thread(struct tb_engine *e, struct tb_wctx *w);

/** Copies each tier's own stats (items, bytes_used, evictions, ...) to @p out. */
void tb_engine_stats(struct tb_engine *e, struct tb_tier_stats *out);

#endif
