/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: the clocks and the sleep every test program needs, once.
 * Header-only (static inline), so that any test links it without a library.
 */
#ifndef TC_TESTS_SUPPORT_CLOCK_H
#define TC_TESTS_SUPPORT_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

/** Monotonic ms: for durations and deadlines. */
static inline uint64_t tc_test_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/** Wall-clock ms since the Unix epoch: the "now" tiers and servers use. */
static inline uint64_t tc_test_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/** Sleeps @p ms, through signals. */
static inline void tc_test_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif
