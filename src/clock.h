/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The server's two clocks. Tiers and the stack never read a clock: they are
 * handed "now" (STYLE R17); these are where src/ gets it from.
 *
 * struct tc_clock is a worker's cached clock, as nginx keeps one: one
 * monotonic read per request, and the wall clock derived from it by an
 * offset that a real wall-clock read refreshes at most every
 * TC_CLOCK_WALL_REFRESH_MS (and at the first read past that point). Both
 * clocks run at the same rate (NTP slews them alike), so the derived time
 * is the wall clock's to within a few ns; a step of the wall clock
 * (settimeofday, a VM resumed) is followed within TC_CLOCK_WALL_REFRESH_MS.
 * Each read of the vDSO clock costs ~0.3% of a 100-byte hit.
 *
 *   monotonic ─────●─────●───●────────●──────  tc_clock_read (each request)
 *   wall read      ▲ (offset = wall − mono)    ▲ next one: ≥ 100 ms later
 *   wall_ms = (mono + offset) / 1e6
 */
#ifndef TC_SRC_CLOCK_H
#define TC_SRC_CLOCK_H

#include <stdint.h>

/** Monotonic clock in ns: durations, latencies, deadlines. */
uint64_t tc_clock_ns(void);

/** Wall clock in ms since the Unix epoch: what expiries (E) are counted in. */
uint64_t tc_clock_ms(void);

/** How long a cached clock keeps its wall-clock offset, in ms. */
#define TC_CLOCK_WALL_REFRESH_MS 100u

/** A cached clock, owned by one thread (a worker's HTTP server). */
struct tc_clock {
    uint64_t mono_ns;      /* the last monotonic reading */
    uint64_t wall_off_ns;  /* wall minus monotonic (mod 2^64), at the last wall reading */
    uint64_t wall_next_ns; /* the monotonic time from which the wall clock is read again */
};

/** Reads both clocks into @p c (caller-owned storage; nothing to release). */
void tc_clock_init(struct tc_clock *c);

/**
 * Reads the monotonic clock into @p c and returns it (ns); the wall clock
 * too when TC_CLOCK_WALL_REFRESH_MS have passed since its last reading.
 */
uint64_t tc_clock_read(struct tc_clock *c);

/** The wall clock (ms since the epoch) at @p c's last reading. */
uint64_t tc_clock_wall_ms(const struct tc_clock *c);

/**
 * What tc_clock_read does, with the readings given: @p mono_ns becomes the
 * last reading; returns 1 when the wall clock is due, which the caller then
 * reads and passes to tc_clock_set_wall. For tests (time injected, R17).
 */
int tc_clock_advance(struct tc_clock *c, uint64_t mono_ns);

/** Takes the wall reading @p wall_ns made at @p c's last monotonic reading. */
void tc_clock_set_wall(struct tc_clock *c, uint64_t wall_ns);

#endif
