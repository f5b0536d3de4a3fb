/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tc_count: the decisions of counters and rate limits (struct
 * tc_tier_count_req), as pure functions of a small state and the time, so
 * that every local backend (shm, mem) decides the same way and only stores
 * the state its own way. The Redis backend runs the same rules as Lua
 * scripts (tiers/redis_count.c); a change here changes those too.
 *
 * A state is a cell of two words, x and t, where t is the time (ms) after
 * which the state is worth nothing ("dead after"; 0 = never):
 *
 *   counter  x = value                     t = expiry (0: none)
 *   fixed    x = hits in the window        t = end of the window
 *   sliding  x = cur | prev << 32          t = start of the current window + 2 windows
 *   gcra     x = theoretical arrival, ns   t = that time in ms, rounded up
 *
 * A dead cell reads as the empty cell {0, 0}, so a backend may drop (or
 * reuse the room of) any cell whose t has passed. The moving window keeps
 * a log instead (struct tc_count_log).
 */
#ifndef TC_TIERS_COUNT_H
#define TC_TIERS_COUNT_H

#include "tiers/tier.h"

#include <stdint.h>

struct tc_count_cell {
    int64_t x;
    uint64_t t;
};

/**
 * Applies @p req (any op but a moving-window HIT or PEEK) at @p now_ms to
 * @p cell, as stored (dead or not), and fills req's outputs. Returns 1 when
 * *cell changed and must be stored, 0 when it must stay as it was (a peek,
 * a denied hit, an overflow). Pure: callers may call it again on a newer
 * cell (a CAS loop); each call rewrites every output.
 */
int tc_count_apply(struct tc_tier_count_req *req, uint64_t now_ms, struct tc_count_cell *cell);

/** Whether @p c is worth nothing at @p now_ms (empty, or dead). */
int tc_count_cell_dead(const struct tc_count_cell *c, uint64_t now_ms);

/** A moving window's log: the last hits' times (ms), newest at ts[head]. */
struct tc_count_log {
    uint64_t *ts;
    uint64_t cap;  /* room, >= the limit */
    uint64_t n;    /* hits kept, <= cap */
    uint64_t head; /* index of the newest */
};

/**
 * A moving-window HIT or PEEK of @p req at @p now_ms over @p log (cap must be
 * at least req->limit for a HIT): a hit of cost c passes when the
 * (limit - c + 1)-th newest kept hit is outside the last window, and then
 * adds c entries of now. Fills req's outputs; returns 1 when the log changed.
 */
int tc_count_moving(struct tc_tier_count_req *req, uint64_t now_ms, struct tc_count_log *log);

#endif
