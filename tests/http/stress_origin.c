/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The origin client from several worker threads at once, as the server uses
 * it: one shared tc_origin, one ctx per thread and event_base, fetches
 * started from callbacks, tc_origin_stats() read from another thread all
 * along, and ctxs disposed with fetches still in flight. A plain program
 * (not Criterion) so that it also runs under ThreadSanitizer.
 */
#include "src/origin.h"
#include "tests/support/check.h"
#include "tests/support/origin.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define THREADS    4
#define PER_THREAD 150
#define WINDOW     24 /* fetches in flight per thread, more than its connections */

struct worker {
    struct tc_origin *o;
    struct event_base *base;
    struct tc_origin_ctx *ctx;
    int id;
    int started, done, ok, wrong;
    int dispose_early; /* dispose with fetches in flight instead of finishing */
    int unavail;
};

static _Atomic int running;

static void on_result(struct tc_origin_result *res, void *arg);

static void start_one(struct worker *w)
{
    char key[32];
    snprintf(key, sizeof(key), "t%d-%d", w->id, w->started);
    if (tc_origin_fetch(w->ctx, key, strlen(key), on_result, w) == TC_OK) {
        w->started++;
    }
}

static void on_result(struct tc_origin_result *res, void *arg)
{
    struct worker *w = arg;
    w->done++;
    if (res->status == TC_OK && res->http_status == 200 && res->body.len > 11 &&
        memcmp(res->body.data, "value of /t", 11) == 0) {
        w->ok++;
    } else if (res->status == TC_EUNAVAIL) {
        w->unavail++;
    } else {
        w->wrong++;
    }
    if (w->started < PER_THREAD) {
        start_one(w); /* fails with TC_EUNAVAIL while disposing: not started */
    }
    if (w->done == w->started && w->started == PER_THREAD) {
        event_base_loopbreak(w->base);
    }
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->base = event_base_new();
    if (w->base == NULL || tc_origin_ctx_init(w->o, w->base, &w->ctx) != TC_OK) {
        w->wrong = -1;
        return NULL;
    }
    for (int i = 0; i < WINDOW; i++) {
        start_one(w);
    }
    struct event *stop = evtimer_new(w->base, on_stop, w->base);
    struct timeval tv = w->dispose_early ? (struct timeval){0, 150000} : (struct timeval){30, 0};
    evtimer_add(stop, &tv);
    event_base_dispatch(w->base);
    event_free(stop);
    tc_origin_ctx_dispose(w->ctx);
    event_base_free(w->base);
    atomic_fetch_sub(&running, 1);
    return NULL;
}

int main(void)
{
    evthread_use_pthreads();
    struct tc_test_origin org;
    static const char *const args[] = {"--delay-ms", "20", NULL};
    if (tc_test_origin_start(&org, args) != 0) {
        fprintf(stderr, "stress_origin: tc-test-origin did not start\n");
        return 1;
    }
    char err[256];
    struct tc_origin *o = tc_origin_create(org.url, 10000, 1 << 16, err, sizeof(err));
    CHECK(o != NULL, "tc_origin_create: %s", err);
    if (o == NULL) {
        return 1;
    }
    tc_origin_set_max_conns(o, 4);

    struct worker w[THREADS + 1];
    pthread_t th[THREADS + 1];
    memset(w, 0, sizeof(w));
    atomic_store(&running, THREADS + 1);
    for (int i = 0; i <= THREADS; i++) {
        w[i].o = o;
        w[i].id = i;
        w[i].dispose_early = i == THREADS; /* the last one stops mid-flight */
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    /* Read the counters while the workers write them. */
    uint64_t last = 0;
    int monotonic = 1;
    while (atomic_load(&running) > 0) {
        struct tc_origin_stats s;
        tc_origin_stats(o, &s);
        monotonic &= s.requests >= last;
        last = s.requests;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i <= THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    CHECK(monotonic, "requests went backwards");

    int total_ok = 0, started = 0;
    for (int i = 0; i < THREADS; i++) {
        CHECK(w[i].ok == PER_THREAD && w[i].wrong == 0,
              "thread %d: %d ok, %d wrong, %d unavailable of %d", i, w[i].ok, w[i].wrong,
              w[i].unavail, PER_THREAD);
        total_ok += w[i].ok;
    }
    struct worker *e = &w[THREADS];
    CHECK(e->done == e->started, "early-disposed thread: %d callbacks for %d fetches", e->done,
          e->started);
    CHECK(e->unavail > 0 && e->wrong == 0, "early-disposed thread: %d unavailable, %d wrong",
          e->unavail, e->wrong);
    for (int i = 0; i <= THREADS; i++) {
        started += w[i].started;
    }
    struct tc_origin_stats s;
    tc_origin_stats(o, &s);
    CHECK(s.requests == (uint64_t)started, "stats: %llu requests, %d started",
          (unsigned long long)s.requests, started);
    CHECK(s.responses + s.errors == s.requests, "stats: %llu responses + %llu errors != %llu",
          (unsigned long long)s.responses, (unsigned long long)s.errors,
          (unsigned long long)s.requests);
    CHECK(s.inflight == 0, "stats: %llu in flight", (unsigned long long)s.inflight);
    CHECK(s.connections <= 4 * (THREADS + 1) + s.retries + s.errors,
          "stats: %llu connections opened", (unsigned long long)s.connections);
    long seen = tc_test_origin_requests(&org);
    CHECK(seen >= total_ok && seen <= started, "origin saw %ld requests (%d ok, %d started)", seen,
          total_ok, started);
    tc_origin_destroy(o);
    CHECK(tc_test_origin_stop(&org) == 0, "tc-test-origin did not exit cleanly");
    printf("stress_origin: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
