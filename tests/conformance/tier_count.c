/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Counter and rate-limit conformance (issue 16) for any tier with
 * TC_TIER_CAP_COUNT, driven only through tiers/tier.h: the backend comes from
 * $TC_TEST_TIER (tests/support/backends.c). A plain program, not Criterion,
 * so that its threads also run under ThreadSanitizer.
 *
 * Local tiers (mem, shm) decide at req->now_ms, so expiry is tested with an
 * injected clock and no sleeping; Redis decides at its own clock, so there
 * the time cases use short real windows. The tier is opened twice from one
 * URI: for shared tiers the second handle plays "another process" and must
 * see the same state.
 *
 * Prints "tier_count: N passed, M failed" and exits non-zero on failure.
 */
#include "tests/support/check.h"
#include "tests/support/backends.h"
#include "tests/support/clock.h"
#include "tiers/tier.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct tc_tier *t1, *t2;
static struct tc_tier_ctx *c1, *c2;
static int remote, shared;
static uint64_t base_ms;

static void nap_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One synchronous call; checks that it completed and that the status agrees. */
static enum tc_status run(struct tc_tier_ctx *c, struct tc_tier_count_req *q, uint64_t now)
{
    q->now_ms = now;
    enum tc_status st = tc_tier_count(c, q);
    CHECK(st != TC_EINPROGRESS, "a NULL event_base must complete synchronously");
    CHECK(q->status == st, "status %s, req->status %s", tc_status_name(st),
          tc_status_name(q->status));
    return st;
}

static enum tc_status add(struct tc_tier_ctx *c, const char *key, int64_t by, uint64_t ttl,
                          int elastic, uint64_t now, struct tc_tier_count_req *q)
{
    memset(q, 0, sizeof(*q));
    q->key = key;
    q->key_len = strlen(key);
    q->op = TC_COUNT_ADD;
    q->by = by;
    q->ttl_ms = ttl;
    q->elastic = elastic;
    return run(c, q, now);
}

static enum tc_status cget(struct tc_tier_ctx *c, const char *key, uint64_t now,
                           struct tc_tier_count_req *q)
{
    memset(q, 0, sizeof(*q));
    q->key = key;
    q->key_len = strlen(key);
    q->op = TC_COUNT_GET;
    return run(c, q, now);
}

static enum tc_status hit(struct tc_tier_ctx *c, const char *key, enum tc_limit_strategy s,
                          uint64_t limit, uint64_t window, uint64_t cost, uint64_t now,
                          struct tc_tier_count_req *q)
{
    memset(q, 0, sizeof(*q));
    q->key = key;
    q->key_len = strlen(key);
    q->op = TC_LIMIT_HIT;
    q->strategy = s;
    q->limit = limit;
    q->window_ms = window;
    q->cost = cost;
    return run(c, q, now);
}

/* ---- counters ------------------------------------------------------------------------------- */

static void case_counter(void)
{
    struct tc_tier_count_req q;
    uint64_t now = base_ms;
    CHECK(cget(c1, "ctr", now, &q) == TC_OK && q.value == 0 && q.ttl_ms_left == 0,
          "absent counter: 0, no expiry");
    CHECK(add(c1, "ctr", 5, 0, 0, now, &q) == TC_OK && q.value == 5 && q.ttl_ms_left == 0,
          "add 5: %lld", (long long)q.value);
    CHECK(add(shared ? c2 : c1, "ctr", -7, 0, 0, now, &q) == TC_OK && q.value == -2,
          "add -7 (other handle when shared): %lld", (long long)q.value);
    CHECK(add(c1, "ctr", INT64_MAX, 0, 0, now, &q) == TC_OK, "add max");
    CHECK(add(c1, "ctr", 3, 0, 0, now, &q) == TC_OK && q.overflow && q.value == INT64_MAX - 2,
          "overflow refused, value kept: overflow %d value %lld", q.overflow, (long long)q.value);
    CHECK(cget(c1, "ctr", now, &q) == TC_OK && q.value == INT64_MAX - 2, "unchanged by overflow");
    memset(&q, 0, sizeof(q));
    q.key = "ctr";
    q.key_len = 3;
    q.op = TC_COUNT_RESET;
    CHECK(run(c1, &q, now) == TC_OK, "reset");
    CHECK(cget(c1, "ctr", now, &q) == TC_OK && q.value == 0, "reset: back to 0");
    CHECK(add(c1, "ctr", INT64_MIN, 0, 0, now, &q) == TC_OK && !q.overflow, "add min");
    CHECK(add(c1, "ctr", -1, 0, 0, now, &q) == TC_OK && q.overflow, "underflow refused");
    /* Counters, limits and cache keys are apart. */
    CHECK(hit(c1, "ctr", TC_LIMIT_FIXED, 5, 1000, 1, now, &q) == TC_OK && q.remaining == 4,
          "a limit of the same name starts empty");
}

/* Expiry and elastic expiry: injected time for local tiers, real for Redis. */
static void case_counter_expiry(void)
{
    struct tc_tier_count_req q;
    uint64_t ttl = remote ? 300 : 10000, step = remote ? 200 : 6000;
    uint64_t now = base_ms;
    CHECK(add(c1, "exp", 1, ttl, 0, now, &q) == TC_OK && q.ttl_ms_left > 0 && q.ttl_ms_left <= ttl,
          "first add sets the expiry: %llu", (unsigned long long)q.ttl_ms_left);
    if (remote) {
        nap_ms((unsigned)step);
    }
    now += step;
    CHECK(add(c1, "exp", 1, ttl, 0, now, &q) == TC_OK && q.value == 2 && q.ttl_ms_left > 0 &&
              q.ttl_ms_left <= ttl - step + (remote ? 50 : 0),
          "a later add keeps it: value %lld left %llu", (long long)q.value,
          (unsigned long long)q.ttl_ms_left);
    if (remote) {
        nap_ms((unsigned)step);
    }
    now += step;
    CHECK(cget(c1, "exp", now, &q) == TC_OK && q.value == 0, "expired: %lld", (long long)q.value);
    CHECK(add(c1, "exp", 1, ttl, 0, now, &q) == TC_OK && q.value == 1, "starts over");

    now = base_ms;
    CHECK(add(c1, "ela", 1, ttl, 1, now, &q) == TC_OK, "elastic add");
    for (int i = 0; i < 3; i++) {
        if (remote) {
            nap_ms((unsigned)step);
        }
        now += step;
        CHECK(add(c1, "ela", 1, ttl, 1, now, &q) == TC_OK && q.value == i + 2,
              "elastic: each add pushes the expiry out (value %lld)", (long long)q.value);
    }
    if (remote) {
        nap_ms((unsigned)(ttl + 100));
    }
    now += ttl;
    CHECK(cget(c1, "ela", now, &q) == TC_OK && q.value == 0, "elastic counter expired at last");
}

/* ---- limits --------------------------------------------------------------------------------- */

static void case_fixed(void)
{
    struct tc_tier_count_req q;
    uint64_t w = remote ? 400 : 10000, now = base_ms;
    for (int i = 0; i < 3; i++) {
        CHECK(hit(c1, "fx", TC_LIMIT_FIXED, 3, w, 1, now, &q) == TC_OK && q.allowed &&
                  q.remaining == (uint64_t)(2 - i),
              "fixed hit %d: allowed %d remaining %llu", i, q.allowed,
              (unsigned long long)q.remaining);
    }
    CHECK(hit(shared ? c2 : c1, "fx", TC_LIMIT_FIXED, 3, w, 1, now, &q) == TC_OK && !q.allowed &&
              q.retry_ms > 0 && q.retry_ms <= w,
          "fixed: the 4th is denied (retry %llu)", (unsigned long long)q.retry_ms);
    memset(&q, 0, sizeof(q));
    q.key = "fx";
    q.key_len = 2;
    q.op = TC_LIMIT_PEEK;
    q.strategy = TC_LIMIT_FIXED;
    q.limit = 3;
    q.window_ms = w;
    q.cost = 1;
    CHECK(run(c1, &q, now) == TC_OK && !q.allowed && q.value == 3, "peek: full, takes nothing");
    if (remote) {
        nap_ms((unsigned)(w + 100));
    }
    now += w + 1;
    /* The next window starts at this hit, not on a grid. */
    CHECK(hit(c1, "fx", TC_LIMIT_FIXED, 3, w, 2, now, &q) == TC_OK && q.allowed &&
              q.remaining == 1 && q.reset_ms > w - (remote ? 100 : 1),
          "a new window from the first hit after: remaining %llu reset %llu",
          (unsigned long long)q.remaining, (unsigned long long)q.reset_ms);
    CHECK(hit(c1, "fx", TC_LIMIT_FIXED, 3, w, 2, now, &q) == TC_OK && !q.allowed,
          "cost 2 does not fit in 1");
    memset(&q, 0, sizeof(q));
    q.key = "fx";
    q.key_len = 2;
    q.op = TC_LIMIT_CLEAR;
    CHECK(run(c1, &q, now) == TC_OK, "clear");
    CHECK(hit(c1, "fx", TC_LIMIT_FIXED, 3, w, 3, now, &q) == TC_OK && q.allowed,
          "clear emptied it");
    if (!remote) {
        /* Elastic: a denied hit pushes the window's end too. */
        now = base_ms + 100000;
        memset(&q, 0, sizeof(q));
        for (int i = 0; i < 4; i++) {
            hit(c1, "fe", TC_LIMIT_FIXED, 2, w, 0, now, &q); /* reset below */
        }
        struct tc_tier_count_req e = {.key = "fe",
                                      .key_len = 2,
                                      .op = TC_LIMIT_HIT,
                                      .strategy = TC_LIMIT_FIXED,
                                      .limit = 2,
                                      .window_ms = w,
                                      .cost = 1,
                                      .elastic = 1};
        run(c1, &e, now);
        run(c1, &e, now);
        run(c1, &e, now + w - 1);
        CHECK(!e.allowed, "elastic: third denied");
        run(c1, &e, now + w + 10);
        CHECK(!e.allowed, "elastic: still denied after the first window, pushed by hits");
    }
}

static void case_gcra(void)
{
    struct tc_tier_count_req q;
    uint64_t now = base_ms;
    /* 10 per 1000 ms: one every 100 ms, burst 10. */
    int ok = 0;
    for (int i = 0; i < 12; i++) {
        hit(c1, "g", TC_LIMIT_GCRA, 10, 1000, 1, now, &q);
        ok += q.allowed;
    }
    CHECK(ok == 10, "gcra: a burst of 10 at once, got %d", ok);
    CHECK(!q.allowed && q.retry_ms >= 1 && q.retry_ms <= 100, "retry %llu",
          (unsigned long long)q.retry_ms);
    if (!remote) {
        hit(c1, "g", TC_LIMIT_GCRA, 10, 1000, 1, now + 100, &q);
        CHECK(q.allowed, "one more after one period");
        hit(c1, "g", TC_LIMIT_GCRA, 10, 1000, 1, now + 100, &q);
        CHECK(!q.allowed, "but only one");
        hit(c1, "g", TC_LIMIT_GCRA, 10, 1000, 1, now + 5000, &q);
        CHECK(q.allowed && q.remaining == 9, "full again later: remaining %llu",
              (unsigned long long)q.remaining);
    }
}

static void case_sliding(void)
{
    struct tc_tier_count_req q;
    if (remote) {
        int ok = 0;
        for (int i = 0; i < 6; i++) {
            hit(c1, "s", TC_LIMIT_SLIDING, 4, 60000, 1, 0, &q);
            ok += q.allowed;
        }
        CHECK(ok == 4, "sliding: 4 of 6 in the first window, got %d", ok);
        return;
    }
    uint64_t now = base_ms, w = 1000;
    int ok = 0;
    for (int i = 0; i < 6; i++) {
        hit(c1, "s", TC_LIMIT_SLIDING, 4, w, 1, now, &q);
        ok += q.allowed;
    }
    CHECK(ok == 4, "sliding: 4 of 6 in the first window, got %d", ok);
    /* A quarter into the next window the previous 4 weigh 3: one more. */
    ok = 0;
    for (int i = 0; i < 3; i++) {
        hit(c1, "s", TC_LIMIT_SLIDING, 4, w, 1, now + w + w / 4, &q);
        ok += q.allowed;
    }
    CHECK(ok == 1, "sliding: 1 more at 1/4 into the next window, got %d", ok);
    hit(c1, "s", TC_LIMIT_SLIDING, 4, w, 1, now + 3 * w, &q);
    CHECK(q.allowed && q.remaining == 3, "sliding: empty two windows later");
}

static void case_moving(void)
{
    struct tc_tier_count_req q;
    enum tc_status st = hit(c1, "m", TC_LIMIT_MOVING, 3, 1000, 1, base_ms, &q);
    CHECK(st == TC_OK, "moving: %s", tc_status_name(st));
    if (remote) {
        int ok = q.allowed;
        for (int i = 0; i < 4; i++) {
            hit(c1, "m", TC_LIMIT_MOVING, 3, 60000, 1, 0, &q);
            ok += q.allowed;
        }
        CHECK(ok == 3, "moving: 3 of 5, got %d", ok);
        return;
    }
    uint64_t now = base_ms;
    CHECK(q.allowed, "moving: first");
    hit(c1, "m", TC_LIMIT_MOVING, 3, 1000, 1, now + 400, &q);
    hit(c1, "m", TC_LIMIT_MOVING, 3, 1000, 1, now + 800, &q);
    CHECK(q.allowed && q.remaining == 0, "moving: three within the window");
    hit(c1, "m", TC_LIMIT_MOVING, 3, 1000, 1, now + 999, &q);
    CHECK(!q.allowed && q.retry_ms == 1, "moving: the 4th waits for the first to leave (%llu)",
          (unsigned long long)q.retry_ms);
    hit(c1, "m", TC_LIMIT_MOVING, 3, 1000, 1, now + 1000, &q);
    CHECK(q.allowed, "moving: exactly when the first left");
    hit(c1, "m", TC_LIMIT_MOVING, 3, 1000, 1, now + 1001, &q);
    CHECK(!q.allowed && q.retry_ms == 399, "moving: next at the second's exit (%llu)",
          (unsigned long long)q.retry_ms);
    /* Long after, all out: a fresh log, even with a longer window. */
    hit(c1, "m", TC_LIMIT_MOVING, 3, 100000, 3, now + 50000, &q);
    CHECK(q.allowed && q.value == 3, "moving: all three at once later (used %lld)",
          (long long)q.value);
    hit(c1, "m", TC_LIMIT_MOVING, 5, 100000, 2, now + 50001, &q);
    CHECK(q.allowed && q.value == 5, "moving: a larger limit counts the same log (used %lld)",
          (long long)q.value);
    hit(c1, "m", TC_LIMIT_MOVING, 5, 100000, 1, now + 50002, &q);
    CHECK(!q.allowed, "moving: and is full");
}

static void case_bad(void)
{
    struct tc_tier_count_req q;
    CHECK(hit(c1, "b", TC_LIMIT_FIXED, 0, 1000, 1, base_ms, &q) == TC_EINVAL, "limit 0");
    CHECK(hit(c1, "b", TC_LIMIT_FIXED, 5, 0, 1, base_ms, &q) == TC_EINVAL, "window 0");
    CHECK(hit(c1, "b", TC_LIMIT_FIXED, 5, 1000, 6, base_ms, &q) == TC_EINVAL, "cost > limit");
    CHECK(hit(c1, "b", 9, 5, 1000, 1, base_ms, &q) == TC_EINVAL, "no such strategy");
    CHECK(hit(c1, "b", TC_LIMIT_MOVING, TC_LIMIT_MOVING_MAX + 1, 1000, 1, base_ms, &q) == TC_EINVAL,
          "moving limit above its bound");
    CHECK(hit(c1, "", TC_LIMIT_FIXED, 5, 1000, 1, base_ms, &q) == TC_EINVAL, "empty key");
}

/* ---- threads -------------------------------------------------------------------------------- */

#define THREADS 8
#define ADDS    400

struct worker {
    struct tc_tier *t;
    int id;
    _Atomic uint64_t *allowed, *moving;
    int64_t acked;
    int errors; /* CHECK() is not for threads (check.h): counted here */
};

/* One call from a thread: no CHECK, the status only. */
static enum tc_status quiet(struct tc_tier_ctx *c, struct tc_tier_count_req *q, int op,
                            const char *key, enum tc_limit_strategy s, uint64_t limit, int64_t n)
{
    memset(q, 0, sizeof(*q));
    q->key = key;
    q->key_len = strlen(key);
    q->op = op;
    q->now_ms = base_ms;
    q->by = n;
    q->strategy = s;
    q->limit = limit;
    q->window_ms = 3600000;
    q->cost = (uint64_t)n;
    return tc_tier_count(c, q);
}

static void *adder(void *p)
{
    struct worker *w = p;
    struct tc_tier_ctx *c;
    if (tc_tier_ctx_init(w->t, NULL, &c) != TC_OK) {
        return NULL;
    }
    struct tc_tier_count_req q;
    for (int i = 0; i < ADDS; i++) {
        enum tc_status st = quiet(c, &q, TC_COUNT_ADD, "sum", 0, 0, w->id + 1);
        if (st == TC_OK && !q.overflow) {
            w->acked += w->id + 1;
        }
        w->errors += st != TC_OK;
        st = quiet(c, &q, TC_LIMIT_HIT, "lim", TC_LIMIT_FIXED, 100, 1);
        if (st == TC_OK && q.allowed) {
            atomic_fetch_add(w->allowed, 1);
        }
        w->errors += st != TC_OK;
        if (i % 4 == 0) {
            st = quiet(c, &q, TC_LIMIT_HIT, "mov", TC_LIMIT_MOVING, 30, 1 + (i & 1));
            if (st == TC_OK && q.allowed) {
                atomic_fetch_add(w->moving, 1 + (uint64_t)(i & 1));
            }
            w->errors += st != TC_OK;
        }
    }
    tc_tier_ctx_dispose(c);
    return NULL;
}

static void case_threads(void)
{
    pthread_t th[THREADS];
    struct worker w[THREADS];
    _Atomic uint64_t allowed = 0, moving = 0;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){shared && (i & 1) ? t2 : t1, i, &allowed, &moving, 0, 0};
        pthread_create(&th[i], NULL, adder, &w[i]);
    }
    int64_t sum = 0;
    int errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        sum += w[i].acked;
        errors += w[i].errors;
    }
    CHECK(errors == 0, "threads: %d operations failed", errors);
    struct tc_tier_count_req q;
    CHECK(cget(c1, "sum", base_ms, &q) == TC_OK && q.value == sum,
          "threads: counter %lld = acknowledged %lld", (long long)q.value, (long long)sum);
    CHECK(atomic_load(&allowed) == 100, "threads: exactly the limit allowed, got %llu",
          (unsigned long long)atomic_load(&allowed));
    CHECK(atomic_load(&moving) == 30, "threads: the moving window's exact limit, got %llu",
          (unsigned long long)atomic_load(&moving));
}

int main(void)
{
    const struct tc_test_backend *be = tc_test_backend_from_env();
    if (be == NULL) {
        fprintf(stderr, "tier_count: unknown TC_TEST_TIER\n");
        return 2;
    }
    char uri[1024], err[512] = "";
    if (be->setup(uri, sizeof(uri), "") != 0) {
        fprintf(stderr, "tier_count: cannot set up %s\n", be->name);
        return 2;
    }
    enum tc_status st = tc_tier_open(NULL, uri, &t1, err, sizeof(err));
    CHECK(st == TC_OK, "open %s: %s", uri, err);
    if (st == TC_OK) {
        unsigned caps = tc_tier_caps(t1);
        remote = (caps & TC_TIER_CAP_REMOTE) != 0;
        shared = (caps & (TC_TIER_CAP_SHARED | TC_TIER_CAP_REMOTE)) != 0;
        /* Another process's view of a shared tier; the same instance otherwise. */
        if (shared) {
            st = tc_tier_open(NULL, uri, &t2, err, sizeof(err));
            CHECK(st == TC_OK, "open %s again: %s", uri, err);
        } else {
            t2 = t1;
        }
        CHECK(caps & TC_TIER_CAP_COUNT, "%s has no counter capability", be->name);
        CHECK(tc_tier_ctx_init(t1, NULL, &c1) == TC_OK && tc_tier_ctx_init(t2, NULL, &c2) == TC_OK,
              "ctx_init");
    }
    base_ms = wall_ms();
    if (failed == 0) {
        case_counter();
        case_counter_expiry();
        case_fixed();
        case_gcra();
        case_sliding();
        case_moving();
        case_bad();
        case_threads();
    }
    tc_tier_ctx_dispose(c1);
    tc_tier_ctx_dispose(c2);
    if (t2 != t1) {
        tc_tier_close(t2);
    }
    tc_tier_close(t1);
    be->teardown();
    printf("tier_count: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
