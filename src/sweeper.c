/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/sweeper.h"
#include "src/clock.h"
#include "src/log.h"

#include <event2/event.h>
#include <stdlib.h>

struct tc_sweeper {
    struct tc_server *srv;
    struct event *ev;
};

/* The sweeper: bounded expiry work on every tier, then a health check that
 * lets the stack skip tiers that are down. Runs on the main thread, never on
 * a worker, so a sweep cannot stall a request. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct tc_sweeper *s = arg;
    struct tc_server *srv = s->srv;
    (void)fd;
    (void)what;
    uint64_t now = tc_clock_ms();
    for (size_t i = 0; i < tc_stack_ntiers(srv->stack); i++) {
        uint64_t removed = 0;
        uint64_t t0 = tc_clock_ns();
        enum tc_status st =
            tc_tier_sweep(tc_stack_tier(srv->stack, i), now, srv->conf->sweep_budget, &removed);
        if (st == TC_ENOTSUP) {
            continue;
        }
        atomic_fetch_add(&srv->sweeps[i], 1);
        atomic_fetch_add(&srv->swept[i], removed);
        if (st != TC_OK && st != TC_EAGAIN) {
            tc_log(TC_LOG_WARN, "sweep of tier l%zu failed: %s", i + 1, tc_strerror(st));
        } else if (removed > 0) {
            tc_log(TC_LOG_DEBUG, "sweep of tier l%zu removed %llu in %llu us", i + 1,
                   (unsigned long long)removed, (unsigned long long)(tc_clock_ns() - t0) / 1000);
        }
    }
    /* Encryption at rest: move records sealed under older keys to the
     * newest, and count records per key (tc_tier_rekey_step()). */
    for (size_t i = 0; i < tc_stack_ntiers(srv->stack); i++) {
        uint64_t moved = 0;
        enum tc_status st =
            tc_tier_rekey_step(tc_stack_tier(srv->stack, i), srv->conf->sweep_budget, &moved);
        if (st != TC_OK && st != TC_EAGAIN && st != TC_ENOTSUP) {
            tc_log(TC_LOG_WARN, "rekey of tier l%zu failed: %s", i + 1, tc_strerror(st));
        } else if (moved > 0) {
            tc_log(TC_LOG_INFO, "tier l%zu: %llu records re-sealed under the newest key", i + 1,
                   (unsigned long long)moved);
        }
    }
    char detail[512];
    tc_stack_check_health(srv->stack, detail, sizeof(detail));
}

struct tc_sweeper *tc_sweeper_create(struct event_base *base, struct tc_server *srv)
{
    struct tc_sweeper *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->srv = srv;
    s->ev = event_new(base, -1, EV_PERSIST, on_sweep, s);
    if (s->ev == NULL) {
        free(s);
        return NULL;
    }
    uint64_t ms = srv->conf->sweep_interval_ms;
    struct timeval iv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(s->ev, &iv);
    return s;
}

void tc_sweeper_destroy(struct tc_sweeper *s)
{
    if (s == NULL) {
        return;
    }
    event_free(s->ev);
    free(s);
}
