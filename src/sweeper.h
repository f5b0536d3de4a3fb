/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The sweeper: every sweep-interval, bounded expiry work on each local tier,
 * then a health check that lets the stack skip tiers that are down. It runs
 * on the main thread's event_base, never on a worker, so that a sweep cannot
 * stall a request.
 */
#ifndef TC_SRC_SWEEPER_H
#define TC_SRC_SWEEPER_H

#include "src/worker.h"

struct event_base;
struct tc_sweeper;

/**
 * Starts sweeping @p srv's stack from @p base every srv->conf's
 * sweep_interval_ms, sweep_budget entries per tier per visit, counting in
 * srv->sweeps and srv->swept. Returns NULL when out of memory.
 */
struct tc_sweeper *tc_sweeper_create(struct event_base *base, struct tc_server *srv);

/** Stops and frees @p s. NULL is a no-op. */
void tc_sweeper_destroy(struct tc_sweeper *s);

#endif
