/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The server's two clocks. Tiers and the stack never read a clock: they are
 * handed "now" (STYLE R17); these are where src/ gets it from.
 */
#ifndef TC_SRC_CLOCK_H
#define TC_SRC_CLOCK_H

#include <stdint.h>

/** Monotonic clock in ns: durations, latencies, deadlines. */
uint64_t tc_clock_ns(void);

/** Wall clock in ms since the Unix epoch: what expiries (E) are counted in. */
uint64_t tc_clock_ms(void);

#endif
