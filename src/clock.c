/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/clock.h"

#include <time.h>

static uint64_t read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tc_clock_ns(void)
{
    return read_ns(CLOCK_MONOTONIC);
}

uint64_t tc_clock_ms(void)
{
    return read_ns(CLOCK_REALTIME) / 1000000u;
}

int tc_clock_advance(struct tc_clock *c, uint64_t mono_ns)
{
    c->mono_ns = mono_ns;
    return mono_ns >= c->wall_next_ns;
}

void tc_clock_set_wall(struct tc_clock *c, uint64_t wall_ns)
{
    c->wall_off_ns = wall_ns - c->mono_ns; /* unsigned: wraps right either way */
    c->wall_next_ns = c->mono_ns + (uint64_t)TC_CLOCK_WALL_REFRESH_MS * 1000000u;
}

void tc_clock_init(struct tc_clock *c)
{
    tc_clock_advance(c, read_ns(CLOCK_MONOTONIC));
    tc_clock_set_wall(c, read_ns(CLOCK_REALTIME));
}

uint64_t tc_clock_read(struct tc_clock *c)
{
    if (tc_clock_advance(c, read_ns(CLOCK_MONOTONIC))) {
        tc_clock_set_wall(c, read_ns(CLOCK_REALTIME));
    }
    return c->mono_ns;
}

uint64_t tc_clock_wall_ms(const struct tc_clock *c)
{
    return (c->mono_ns + c->wall_off_ns) / 1000000u;
}
