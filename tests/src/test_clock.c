/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The cached clock (src/clock.h): the wall clock derived from monotonic
 * readings by an offset refreshed at most every TC_CLOCK_WALL_REFRESH_MS.
 * Readings are injected (tc_clock_advance, tc_clock_set_wall), so a step of
 * the wall clock is a number, not a settimeofday.
 */
#include "src/clock.h"

#include <criterion/criterion.h>

#define MS       1000000ull /* ns */
#define REFRESH  ((uint64_t)TC_CLOCK_WALL_REFRESH_MS * MS)
#define WALL0_NS (1764900000000ull * MS) /* 2025-12-05 */

/* A clock whose first readings were mono 5 s, wall WALL0. */
static struct tc_clock started(void)
{
    struct tc_clock c = {0};
    cr_assert(tc_clock_advance(&c, 5000 * MS), "a new clock reads the wall clock");
    tc_clock_set_wall(&c, WALL0_NS);
    return c;
}

Test(clock, the_wall_clock_is_derived_between_refreshes)
{
    struct tc_clock c = started();
    cr_expect_eq(tc_clock_wall_ms(&c), WALL0_NS / MS);
    /* 40 ms later, no wall reading: the derived time moves with the monotonic one. */
    cr_expect_not(tc_clock_advance(&c, 5040 * MS), "a wall reading before it was due");
    cr_expect_eq(tc_clock_wall_ms(&c), WALL0_NS / MS + 40);
    cr_expect_not(tc_clock_advance(&c, 5000 * MS + REFRESH - 1));
    cr_expect(tc_clock_advance(&c, 5000 * MS + REFRESH), "no wall reading when it was due");
}

Test(clock, a_step_of_the_wall_clock_is_followed_within_the_refresh)
{
    struct tc_clock c = started();
    /* The wall clock steps 10 s forward right after the first reading.
     * Until the refresh the old offset holds; at it the step shows. */
    uint64_t step = 10000 * MS;
    uint64_t t = 5000 * MS;
    while (!tc_clock_advance(&c, t += MS)) {
        cr_assert_lt(t - 5000 * MS, REFRESH + MS);
        cr_expect_lt(tc_clock_wall_ms(&c), (WALL0_NS + step) / MS);
    }
    cr_expect_leq(t - 5000 * MS, REFRESH, "the step was followed after %llu ms",
                  (unsigned long long)((t - 5000 * MS) / MS));
    tc_clock_set_wall(&c, WALL0_NS + step + (t - 5000 * MS));
    cr_expect_eq(tc_clock_wall_ms(&c), (WALL0_NS + step + (t - 5000 * MS)) / MS);

    /* And back 20 s: the offset goes negative relative to before. */
    t += REFRESH;
    cr_assert(tc_clock_advance(&c, t));
    uint64_t wall = WALL0_NS + step + (t - 5000 * MS) - 20000 * MS;
    tc_clock_set_wall(&c, wall);
    cr_expect_eq(tc_clock_wall_ms(&c), wall / MS);
    cr_expect_not(tc_clock_advance(&c, t + 7 * MS));
    cr_expect_eq(tc_clock_wall_ms(&c), wall / MS + 7);
}

Test(clock, the_real_clocks_agree)
{
    struct tc_clock c;
    tc_clock_init(&c);
    uint64_t mono = tc_clock_read(&c);
    uint64_t real = tc_clock_ms();
    uint64_t derived = tc_clock_wall_ms(&c);
    cr_expect(derived <= real + 1 && real <= derived + 5, "derived %llu ms, real %llu ms",
              (unsigned long long)derived, (unsigned long long)real);
    cr_expect_geq(tc_clock_ns(), mono);
}
