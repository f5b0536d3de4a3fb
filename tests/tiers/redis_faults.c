/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Redis tier under faults, cross-host invalidation, and async workers on
 * several threads. A plain program (not Criterion) so that deploy/test.sh can
 * rerun it under ThreadSanitizer (Snaipe/Criterion#274): the tier's
 * subscriber thread and per-worker connections are what TSan should see.
 * Prints "redis_faults: N passed, M failed"; exits non-zero on failure.
 *
 *   fault:        kill redis-server under a load of gets and sets on an
 *                 event_base; every operation completes once, within its
 *                 deadline, as a miss or a counted failure; restart it on the
 *                 same port and the tier is healthy again within the backoff cap.
 *   invalidation: two tier instances ("hosts") on one Redis; a set or delete
 *                 on one reaches the other's callback within 100 ms; nobody
 *                 hears their own messages; a lost subscription is reported.
 *   processes:    a forked child with its own tier (own pid, own instance id)
 *                 writes; this process hears the set and delete within 100 ms.
 *   threads:      four workers, each with its own event_base and ctx, 50
 *                 operations in flight each, values checked.
 *   lock_mutex:   forked processes, each with its own tier (blocking or on an
 *                 event_base), take turns on one lease lock around a GET +
 *                 SET of a plain counter; the final count is exact.
 *   lock_killed:  a child holding a lock is SIGKILLed; the lock is free
 *                 again at its ttl, not before.
 *   lock_notices: a release on one instance reaches the release callbacks of
 *                 the others (and its own), with invalidation on or off;
 *                 a refused release publishes nothing; a callback replaced
 *                 or unregistered is never called again.
 *   lock_faults:  Redis frozen: lock operations fail within their deadline,
 *                 a lock taken before survives; Redis restarted: the
 *                 subscribers say "recheck everything" and notices flow again.
 */
#include "tests/support/clock.h"
#include "tests/support/check.h"
#include "tests/support/stats.h"
#include "tests/support/redis_server.h"
#include "tiers/tier.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Scheduling slack on a loaded 2-core machine under TSan. */
#define SLACK_MS 400

static uint64_t stat(struct tc_tier *t, const char *name)
{
    uint64_t v;
    tc_test_tier_stat(t, name, &v);
    return v;
}

static struct tc_tier *open_tier(const char *fmt, unsigned port)
{
    char uri[512], err[512];
    struct tc_tier *t = NULL;
    snprintf(uri, sizeof(uri), fmt, port);
    enum tc_status st = tc_tier_open(NULL, uri, &t, err, sizeof(err));
    CHECK(st == TC_OK, "open %s: %s", uri, err);
    return st == TC_OK ? t : NULL;
}

/* ---- a load of async operations ------------------------------------------------ */

#define SLOTS 50
#define KEYS  64

struct slot {
    struct tc_tier_req req;
    struct tc_buf out;
    int busy;
    uint64_t started;
    char key[16];
    char val[32];
    struct load *load;
};

struct load {
    struct tc_tier_ctx *ctx;
    struct slot slots[SLOTS];
    uint64_t rng;
    int inflight;
    int stop;
    uint64_t max_latency, deadline_ms;
    uint64_t done, hits, misses, failures, bad, twice, late;
};

static void slot_done(struct tc_tier_req *req);

static void classify(struct load *l, struct slot *s, enum tc_status st)
{
    l->done++;
    if (s->req.out != NULL) {
        if (st == TC_OK) {
            l->hits++;
            size_t kl = strlen(s->key);
            if (s->out.len < kl || memcmp(s->out.data, s->key, kl) != 0) {
                l->bad++;
            }
        } else if (st == TC_ENOTFOUND) {
            l->misses++;
        } else {
            l->failures++;
        }
    } else if (st != TC_OK) {
        l->failures++;
    }
}

static void slot_issue(struct load *l, struct slot *s)
{
    uint64_t x = l->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    l->rng = x;
    snprintf(s->key, sizeof(s->key), "k%u", (unsigned)(x % KEYS));
    memset(&s->req, 0, sizeof(s->req));
    s->req.key = s->key;
    s->req.key_len = strlen(s->key);
    s->req.now_ms = tc_test_wall_ms();
    s->req.done = slot_done;
    s->req.arg = s;
    s->busy = 1;
    s->started = tc_test_mono_ms();
    enum tc_status st;
    if ((x >> 32) % 4 == 0) {
        int n = snprintf(s->val, sizeof(s->val), "%s|%llu", s->key, (unsigned long long)x);
        s->req.value = s->val;
        s->req.value_len = (size_t)n;
        s->req.hdr.encoding = TC_ENC_STRING;
        s->req.hdr.expire_ms = s->req.now_ms + 60000;
        st = tc_tier_set(l->ctx, &s->req);
    } else {
        s->req.out = &s->out;
        st = tc_tier_get(l->ctx, &s->req);
    }
    if (st == TC_EINPROGRESS) {
        l->inflight++;
    } else {
        /* Completed synchronously (fast fail while the circuit is open):
         * the ticker re-issues the slot, so an open circuit cannot spin. */
        s->busy = 0;
        classify(l, s, st);
    }
}

static void slot_done(struct tc_tier_req *req)
{
    struct slot *s = req->arg;
    struct load *l = s->load;
    if (!s->busy) {
        l->twice++;
        return;
    }
    s->busy = 0;
    l->inflight--;
    uint64_t lat = tc_test_mono_ms() - s->started;
    if (lat > l->max_latency) {
        l->max_latency = lat;
    }
    if (lat > l->deadline_ms + SLACK_MS) {
        l->late++;
    }
    classify(l, s, req->status);
    if (!l->stop) {
        slot_issue(l, s);
    }
}

static void load_tick(struct load *l)
{
    for (int i = 0; i < SLOTS && !l->stop; i++) {
        if (!l->slots[i].busy) {
            slot_issue(l, &l->slots[i]);
        }
    }
}

static void load_init(struct load *l, struct tc_tier_ctx *ctx, uint64_t deadline_ms, uint64_t seed)
{
    memset(l, 0, sizeof(*l));
    l->ctx = ctx;
    l->rng = seed | 1;
    l->deadline_ms = deadline_ms;
    for (int i = 0; i < SLOTS; i++) {
        l->slots[i].load = l;
        tc_buf_init(&l->slots[i].out);
    }
}

static void load_deinit(struct load *l)
{
    for (int i = 0; i < SLOTS; i++) {
        tc_buf_deinit(&l->slots[i].out);
    }
}

/* Runs the loop for ms milliseconds, re-issuing idle slots every 2 ms. */
static void run_for(struct event_base *base, struct load *l, uint64_t ms)
{
    uint64_t end = tc_test_mono_ms() + ms;
    struct timeval tick = {0, 2000};
    while (tc_test_mono_ms() < end) {
        load_tick(l);
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

/* Stops issuing and waits (bounded) for everything in flight. */
static void drain(struct event_base *base, struct load *l)
{
    l->stop = 1;
    uint64_t end = tc_test_mono_ms() + 3000;
    struct timeval tick = {0, 5000};
    while (l->inflight > 0 && tc_test_mono_ms() < end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

static void test_fault(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    const uint64_t timeout = 50, cap = 300;
    struct tc_tier *t = open_tier("redis://127.0.0.1:%u/0?timeout_ms=50&connect_timeout_ms=200&"
                                  "backoff_ms=20&backoff_max_ms=300&breaker_failures=5",
                                  tc_redis_server_port(srv));
    if (t == NULL) {
        tc_redis_server_destroy(srv);
        return;
    }
    struct event_base *base = event_base_new();
    struct tc_tier_ctx *ctx;
    CHECK(tc_tier_ctx_init(t, base, &ctx) == TC_OK, "ctx_init");
    struct load l;
    load_init(&l, ctx, timeout, 42);

    run_for(base, &l, 300);
    uint64_t hits_before = l.hits;
    CHECK(hits_before > 0 && l.failures == 0, "healthy phase: %llu hits, %llu failures",
          (unsigned long long)l.hits, (unsigned long long)l.failures);

    tc_redis_server_kill(srv);
    uint64_t done_at_kill = l.done, fail_at_kill = l.failures + l.misses;
    run_for(base, &l, 700);
    char detail[256];
    enum tc_tier_health h = tc_tier_health(t, detail, sizeof(detail));
    CHECK(l.done > done_at_kill + 100, "operations keep completing while Redis is dead (%llu)",
          (unsigned long long)(l.done - done_at_kill));
    CHECK(l.failures + l.misses > fail_at_kill, "outage shows as misses or failures");
    CHECK(h == TC_HEALTH_DOWN, "health while dead: %s (%s)", tc_tier_health_name(h), detail);
    CHECK(stat(t, "circuit_opens") >= 1, "circuit_opens %llu",
          (unsigned long long)stat(t, "circuit_opens"));
    CHECK(stat(t, "circuit_state") >= 1, "circuit state while dead: %llu",
          (unsigned long long)stat(t, "circuit_state"));
    printf("fault: while dead: health %s (%s), circuit_state %llu, skipped %llu, timeouts %llu\n",
           tc_tier_health_name(h), detail, (unsigned long long)stat(t, "circuit_state"),
           (unsigned long long)stat(t, "skipped"), (unsigned long long)stat(t, "timeouts"));

    CHECK(tc_redis_server_restart(srv) == 0, "restart on port %u", tc_redis_server_port(srv));
    uint64_t restarted = tc_test_mono_ms(), healthy_after = 0;
    while (tc_test_mono_ms() - restarted < 5000) {
        run_for(base, &l, 5);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            healthy_after = tc_test_mono_ms() - restarted;
            break;
        }
    }
    CHECK(healthy_after > 0 && healthy_after <= cap + 200 + SLACK_MS,
          "healthy again %llu ms after restart (cap %llu ms)", (unsigned long long)healthy_after,
          (unsigned long long)cap);
    uint64_t hits_at_restart = l.hits;
    run_for(base, &l, 300);
    CHECK(l.hits > hits_at_restart, "hits resume after the restart");
    drain(base, &l);
    CHECK(l.inflight == 0, "%d operations stuck", l.inflight);
    CHECK(l.twice == 0, "%llu completions ran twice", (unsigned long long)l.twice);
    CHECK(l.late == 0, "%llu operations past deadline + slack (max %llu ms)",
          (unsigned long long)l.late, (unsigned long long)l.max_latency);
    CHECK(l.bad == 0, "%llu wrong values", (unsigned long long)l.bad);
    printf("fault: %llu ops (%llu hits, %llu misses, %llu failures), max latency %llu ms, "
           "healthy %llu ms after restart\n",
           (unsigned long long)l.done, (unsigned long long)l.hits, (unsigned long long)l.misses,
           (unsigned long long)l.failures, (unsigned long long)l.max_latency,
           (unsigned long long)healthy_after);

    /* A frozen server: connections stay up and nothing answers, so only
     * the deadlines and the breaker keep the loop moving. */
    load_deinit(&l);
    load_init(&l, ctx, timeout, 7);
    run_for(base, &l, 100);
    tc_redis_server_pause(srv);
    uint64_t timeouts = stat(t, "timeouts"), done_at_pause = l.done;
    run_for(base, &l, 600);
    h = tc_tier_health(t, detail, sizeof(detail));
    CHECK(stat(t, "timeouts") > timeouts, "a frozen server shows as timeouts");
    CHECK(l.done > done_at_pause + 100, "operations keep completing while Redis is frozen");
    CHECK(h == TC_HEALTH_DOWN, "health while frozen: %s (%s)", tc_tier_health_name(h), detail);
    tc_redis_server_resume(srv);
    uint64_t resumed = tc_test_mono_ms();
    healthy_after = 0;
    while (tc_test_mono_ms() - resumed < 5000) {
        run_for(base, &l, 5);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            healthy_after = tc_test_mono_ms() - resumed;
            break;
        }
    }
    CHECK(healthy_after > 0 && healthy_after <= cap + 200 + SLACK_MS,
          "healthy again %llu ms after thawing", (unsigned long long)healthy_after);
    drain(base, &l);
    CHECK(l.inflight == 0 && l.twice == 0 && l.late == 0 && l.bad == 0,
          "frozen: %d stuck, %llu twice, %llu late (max %llu ms), %llu bad", l.inflight,
          (unsigned long long)l.twice, (unsigned long long)l.late,
          (unsigned long long)l.max_latency, (unsigned long long)l.bad);
    printf("fault: frozen: %llu ops (%llu misses, %llu failures), timeouts %llu, max latency "
           "%llu ms, healthy %llu ms after thawing; %s\n",
           (unsigned long long)l.done, (unsigned long long)l.misses, (unsigned long long)l.failures,
           (unsigned long long)stat(t, "timeouts"), (unsigned long long)l.max_latency,
           (unsigned long long)healthy_after, detail);

    /* Idle: no request in flight when Redis dies; health must still say
     * so (the closed connection is re-made at once, and that fails). */
    drain(base, &l);
    uint64_t killed = tc_test_mono_ms(), down_after = 0;
    tc_redis_server_kill(srv);
    while (tc_test_mono_ms() - killed < 3000) {
        struct timeval tick = {0, 5000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_DOWN) {
            down_after = tc_test_mono_ms() - killed;
            break;
        }
    }
    CHECK(down_after > 0, "an idle tier notices a dead Redis");
    CHECK(tc_redis_server_restart(srv) == 0, "restart");
    uint64_t back = tc_test_mono_ms(), ok_after = 0;
    while (tc_test_mono_ms() - back < 5000) {
        struct timeval tick = {0, 5000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            ok_after = tc_test_mono_ms() - back;
            break;
        }
    }
    CHECK(ok_after > 0 && ok_after <= cap + 200 + SLACK_MS,
          "idle tier healthy %llu ms after the restart", (unsigned long long)ok_after);
    printf("fault: idle: down %llu ms after the kill, ok %llu ms after the restart\n",
           (unsigned long long)down_after, (unsigned long long)ok_after);

    tc_tier_ctx_dispose(ctx);
    load_deinit(&l);
    event_base_free(base);
    tc_tier_close(t);
    tc_redis_server_destroy(srv);
}

/* ---- invalidation --------------------------------------------------------------- */

struct heard {
    pthread_mutex_t lock;
    char keys[64][32];
    int n;
    int lost; /* (NULL, 0) calls */
};

static void on_invalidate(void *arg, const void *key, size_t len)
{
    struct heard *h = arg;
    pthread_mutex_lock(&h->lock);
    if (key == NULL) {
        h->lost++;
    } else if (h->n < 64 && len < 32) {
        memcpy(h->keys[h->n], key, len);
        h->keys[h->n][len] = '\0';
        h->n++;
    }
    pthread_mutex_unlock(&h->lock);
}

static int heard_key(struct heard *h, const char *key)
{
    int found = 0;
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->n; i++) {
        found |= strcmp(h->keys[i], key) == 0;
    }
    pthread_mutex_unlock(&h->lock);
    return found;
}

static int heard_lost(struct heard *h)
{
    pthread_mutex_lock(&h->lock);
    int n = h->lost;
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* Milliseconds until h hears key, or -1 after limit_ms. */
static long wait_heard(struct heard *h, const char *key, long limit_ms)
{
    uint64_t start = tc_test_mono_ms();
    while ((long)(tc_test_mono_ms() - start) <= limit_ms) {
        if (heard_key(h, key)) {
            return (long)(tc_test_mono_ms() - start);
        }
        tc_test_sleep_ms(1);
    }
    return -1;
}

static enum tc_status sync_write(struct tc_tier_ctx *c, const char *key, int del)
{
    struct tc_tier_req r = {.key = key,
                            .key_len = strlen(key),
                            .value = "v",
                            .value_len = 1,
                            .now_ms = tc_test_wall_ms()};
    r.hdr.encoding = TC_ENC_STRING;
    r.hdr.expire_ms = r.now_ms + 60000;
    return del ? tc_tier_del(c, &r) : tc_tier_set(c, &r);
}

static void test_invalidation(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    const char *fmt = "redis://127.0.0.1:%u/0?timeout_ms=1000&connect_timeout_ms=500&"
                      "backoff_ms=20&backoff_max_ms=300";
    struct tc_tier *a = open_tier(fmt, tc_redis_server_port(srv));
    struct tc_tier *b = open_tier(fmt, tc_redis_server_port(srv));
    if (a == NULL || b == NULL) {
        tc_tier_close(a);
        tc_tier_close(b);
        tc_redis_server_destroy(srv);
        return;
    }
    struct heard ha = {.n = 0}, hb = {.n = 0};
    pthread_mutex_init(&ha.lock, NULL);
    pthread_mutex_init(&hb.lock, NULL);
    CHECK(tc_tier_on_invalidate(a, on_invalidate, &ha) == TC_OK, "register a");
    CHECK(tc_tier_on_invalidate(b, on_invalidate, &hb) == TC_OK, "register b");
    CHECK(stat(a, "subscribed") == 1 && stat(b, "subscribed") == 1, "subscribed after open");
    struct tc_tier_ctx *ca, *cb;
    CHECK(tc_tier_ctx_init(a, NULL, &ca) == TC_OK, "ctx a");
    CHECK(tc_tier_ctx_init(b, NULL, &cb) == TC_OK, "ctx b");

    CHECK(sync_write(ca, "set-on-a", 0) == TC_OK, "set on a");
    long ms = wait_heard(&hb, "set-on-a", 100);
    CHECK(ms >= 0, "b heard a's set within 100 ms");
    CHECK(sync_write(ca, "del-on-a", 1) == TC_OK, "delete on a");
    long ms2 = wait_heard(&hb, "del-on-a", 100);
    CHECK(ms2 >= 0, "b heard a's delete within 100 ms");
    CHECK(sync_write(cb, "set-on-b", 0) == TC_OK, "set on b");
    CHECK(wait_heard(&ha, "set-on-b", 100) >= 0, "a heard b's set within 100 ms");
    tc_test_sleep_ms(50);
    CHECK(!heard_key(&hb, "set-on-b"), "b heard its own message");
    CHECK(!heard_key(&ha, "set-on-a") && !heard_key(&ha, "del-on-a"), "a heard its own messages");
    CHECK(stat(b, "inval_own") >= 1, "b counted its own message");
    printf("invalidation: set seen after %ld ms, delete after %ld ms\n", ms, ms2);

    /* A lost subscription is reported as (NULL, 0), then messages flow again. */
    tc_redis_server_kill(srv);
    CHECK(tc_redis_server_restart(srv) == 0, "restart");
    uint64_t start = tc_test_mono_ms();
    while (heard_lost(&hb) == 0 && tc_test_mono_ms() - start < 3000) {
        tc_test_sleep_ms(5);
    }
    CHECK(heard_lost(&hb) >= 1, "b was told that messages may have been lost");
    CHECK(stat(b, "subscribed") == 1, "b subscribed again");
    enum tc_status st = TC_EUNAVAIL;
    for (start = tc_test_mono_ms(); st != TC_OK && tc_test_mono_ms() - start < 3000;
         tc_test_sleep_ms(10)) {
        st = sync_write(ca, "after-restart", 0);
    }
    CHECK(st == TC_OK, "a writes again after the restart");
    CHECK(wait_heard(&hb, "after-restart", 100) >= 0, "b hears a again after the restart");

    CHECK(tc_tier_on_invalidate(b, NULL, NULL) == TC_OK, "unregister");
    tc_tier_ctx_dispose(ca);
    tc_tier_ctx_dispose(cb);
    tc_tier_close(a);
    tc_tier_close(b);
    pthread_mutex_destroy(&ha.lock);
    pthread_mutex_destroy(&hb.lock);

    /* invalidate=none: no subscriber, and the tier says so. */
    struct tc_tier *n = open_tier("redis://127.0.0.1:%u/0?invalidate=none&timeout_ms=1000",
                                  tc_redis_server_port(srv));
    if (n != NULL) {
        CHECK(tc_tier_on_invalidate(n, on_invalidate, &ha) == TC_ENOTSUP, "invalidate=none");
        tc_tier_close(n);
    }
    tc_redis_server_destroy(srv);
}

/* ---- invalidation between two processes ------------------------------------------ */

/* The child is forked before this process opens anything (no threads yet),
 * opens its own tier (its own instance id, its own pid), and reports the
 * monotonic time of each write, which is system-wide, through a pipe. */
static void child_writer(unsigned port, int go_fd, int report_fd)
{
    char b;
    if (read(go_fd, &b, 1) != 1) {
        _exit(2);
    }
    char uri[256], err[256];
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?timeout_ms=2000&invalidate=pubsub", port);
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK ||
        tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        _exit(3);
    }
    uint64_t at[2];
    at[0] = tc_test_mono_ms();
    int ok = sync_write(c, "from-child", 0) == TC_OK;
    at[1] = tc_test_mono_ms();
    ok &= sync_write(c, "from-child-del", 1) == TC_OK;
    if (write(report_fd, at, sizeof(at)) != (ssize_t)sizeof(at)) {
        ok = 0;
    }
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    _exit(ok ? 0 : 4);
}

static void test_processes(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    int go[2], report[2];
    if (pipe(go) != 0 || pipe(report) != 0) {
        CHECK(0, "pipe");
        tc_redis_server_destroy(srv);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(go[1]);
        close(report[0]);
        child_writer(tc_redis_server_port(srv), go[0], report[1]);
    }
    close(go[0]);
    close(report[1]);
    struct tc_tier *t = open_tier("redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=2000",
                                  tc_redis_server_port(srv));
    struct heard h = {.n = 0};
    pthread_mutex_init(&h.lock, NULL);
    if (t != NULL) {
        CHECK(tc_tier_on_invalidate(t, on_invalidate, &h) == TC_OK, "register");
    }
    char b = 1;
    CHECK(write(go[1], &b, 1) == 1, "start the child");
    uint64_t at[2] = {0, 0};
    CHECK(read(report[0], at, sizeof(at)) == (ssize_t)sizeof(at), "child's report");
    if (t != NULL) {
        long a = wait_heard(&h, "from-child", 1000), d = wait_heard(&h, "from-child-del", 1000);
        uint64_t now = tc_test_mono_ms();
        CHECK(a >= 0 && d >= 0, "heard the other process's set and delete");
        /* An upper bound: both were heard by now, and now - at is their age. */
        CHECK(a >= 0 && now - at[0] <= 100, "set heard %llu ms after it was written",
              (unsigned long long)(now - at[0]));
        printf("processes: other process's set and delete heard within %llu ms\n",
               (unsigned long long)(now - at[0]));
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit status %d", status);
    close(go[1]);
    close(report[0]);
    tc_tier_close(t);
    pthread_mutex_destroy(&h.lock);
    tc_redis_server_destroy(srv);
}

/* ---- async workers on several threads ------------------------------------------- */

struct worker {
    struct tc_tier *tier;
    uint64_t seed;
    struct load l;
    enum tc_status init;
};

static void *worker_main(void *p)
{
    struct worker *w = p;
    struct event_base *base = event_base_new();
    struct tc_tier_ctx *ctx;
    if ((w->init = tc_tier_ctx_init(w->tier, base, &ctx)) != TC_OK) {
        event_base_free(base);
        return NULL;
    }
    load_init(&w->l, ctx, 2000, w->seed);
    run_for(base, &w->l, 1000);
    drain(base, &w->l);
    tc_tier_ctx_dispose(ctx);
    load_deinit(&w->l);
    event_base_free(base);
    return NULL;
}

static void test_threads(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    struct tc_tier *t = open_tier("redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=2000",
                                  tc_redis_server_port(srv));
    if (t == NULL) {
        tc_redis_server_destroy(srv);
        return;
    }
    struct worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i].tier = t;
        w[i].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    uint64_t ops = 0, hits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].init == TC_OK, "worker %d ctx_init", i);
        CHECK(w[i].l.failures == 0, "worker %d: %llu failures", i,
              (unsigned long long)w[i].l.failures);
        CHECK(w[i].l.bad == 0 && w[i].l.twice == 0, "worker %d: %llu bad, %llu twice", i,
              (unsigned long long)w[i].l.bad, (unsigned long long)w[i].l.twice);
        CHECK(w[i].l.inflight == 0, "worker %d: %d stuck", i, w[i].l.inflight);
        ops += w[i].l.done;
        hits += w[i].l.hits;
    }
    CHECK(hits > 0, "no hits: nothing was checked");
    CHECK(stat(t, "inval_own") > 0, "the tier's own workers' writes are its own messages");
    CHECK(stat(t, "inval_received") == 0, "no other instance wrote");
    printf("threads: %llu ops, %llu hits; inval_own %llu\n", (unsigned long long)ops,
           (unsigned long long)hits, (unsigned long long)stat(t, "inval_own"));
    tc_tier_close(t);
    tc_redis_server_destroy(srv);
}

/* ---- lease locks: helpers ------------------------------------------------------- */

struct lwait {
    int done, calls;
};

static void lwait_done(struct tc_tier_lock_req *r)
{
    struct lwait *w = r->arg;
    w->calls++;
    w->done = 1;
}

/* One lock operation (0 acquire, 1 release, 2 peek) to completion: on base
 * when there is one, else on a blocking ctx. */
static enum tc_status lock_do(struct tc_tier_ctx *c, struct event_base *base, int op,
                              struct tc_tier_lock_req *r)
{
    struct lwait w = {0, 0};
    r->done = base != NULL ? lwait_done : NULL;
    r->arg = &w;
    enum tc_status st = op == 0   ? tc_tier_lock_acquire(c, r)
                        : op == 1 ? tc_tier_lock_release(c, r)
                                  : tc_tier_lock_peek(c, r);
    if (st != TC_EINPROGRESS) {
        return st;
    }
    while (!w.done) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    return w.calls == 1 ? r->status : TC_ECORRUPT;
}

static enum tc_status lock_named(struct tc_tier_ctx *c, struct event_base *base, int op,
                                 const char *name, uint64_t ttl, struct tc_tier_lock_req *r)
{
    if (op != 1) {
        memset(r, 0, sizeof(*r));
    }
    r->name = name;
    r->name_len = strlen(name);
    r->ttl_ms = ttl;
    return lock_do(c, base, op, r);
}

static redisContext *raw_connect(unsigned port)
{
    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", (int)port, tv);
    if (rc != NULL && rc->err) {
        redisFree(rc);
        rc = NULL;
    }
    return rc;
}

/* A plain string key as an integer; -1 on any error. */
static long long raw_get_int(redisContext *rc, const char *key)
{
    redisReply *r = redisCommand(rc, "GET %s", key);
    long long v = -1;
    if (r != NULL && r->type == REDIS_REPLY_NIL) {
        v = 0;
    } else if (r != NULL && r->type == REDIS_REPLY_STRING) {
        v = strtoll(r->str, NULL, 10);
    }
    freeReplyObject(r);
    return v;
}

/* ---- lease locks: mutual exclusion between processes ------------------------------- */

#define MUTEX_CHILDREN 4
#define MUTEX_ROUNDS   25

/* Takes the lock MUTEX_ROUNDS times; inside, increments a plain counter by
 * GET, a pause, SET, which loses updates unless the lock excludes. Exits 0,
 * or with a code saying what went wrong. */
static void child_mutex(unsigned port, int async, int go_fd)
{
    char b;
    if (read(go_fd, &b, 1) != 1) {
        _exit(2);
    }
    char uri[256], err[256];
    snprintf(uri, sizeof(uri),
             "redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=2000&invalidate=none",
             port);
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    struct event_base *base = async ? event_base_new() : NULL;
    redisContext *rc = raw_connect(port);
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK ||
        tc_tier_ctx_init(t, base, &c) != TC_OK || rc == NULL) {
        _exit(3);
    }
    int code = 0;
    uint64_t give_up = tc_test_mono_ms() + 60000;
    for (int i = 0; i < MUTEX_ROUNDS && code == 0; i++) {
        struct tc_tier_lock_req r;
        enum tc_status st;
        while ((st = lock_named(c, base, 0, "mutex", 10000, &r)) == TC_EEXIST) {
            if (tc_test_mono_ms() > give_up) {
                _exit(4);
            }
            tc_test_sleep_ms(r.remaining_ms < 3 ? (long)r.remaining_ms : 3);
        }
        if (st != TC_OK) {
            code = 5;
            break;
        }
        /* Also count holders directly: more than one inside is a failure
         * even if the counter happened to come out right. */
        redisReply *in = redisCommand(rc, "INCR inside");
        if (in == NULL || in->type != REDIS_REPLY_INTEGER || in->integer != 1) {
            code = 6;
        }
        freeReplyObject(in);
        long long v = raw_get_int(rc, "counter");
        tc_test_sleep_ms(1);
        freeReplyObject(redisCommand(rc, "SET counter %lld", v + 1));
        freeReplyObject(redisCommand(rc, "DECR inside"));
        if (lock_named(c, base, 1, "mutex", 0, &r) != TC_OK) {
            code = 7; /* the lease ran out under us, or someone else released it */
        }
    }
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    if (base != NULL) {
        event_base_free(base);
    }
    redisFree(rc);
    _exit(code);
}

static void test_lock_mutex(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    int go[2];
    if (pipe(go) != 0) {
        CHECK(0, "pipe");
        tc_redis_server_destroy(srv);
        return;
    }
    pid_t pids[MUTEX_CHILDREN];
    for (int i = 0; i < MUTEX_CHILDREN; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            close(go[1]);
            child_mutex(tc_redis_server_port(srv), i % 2, go[0]);
        }
    }
    close(go[0]);
    uint64_t start = tc_test_mono_ms();
    char all[MUTEX_CHILDREN] = {0};
    CHECK(write(go[1], all, sizeof(all)) == (ssize_t)sizeof(all), "start the children");
    close(go[1]);
    for (int i = 0; i < MUTEX_CHILDREN; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "mutex child %d (%s): status %d (exit %d)", i, i % 2 ? "async" : "blocking", status,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    redisContext *rc = raw_connect(tc_redis_server_port(srv));
    long long counter = rc != NULL ? raw_get_int(rc, "counter") : -1;
    CHECK(counter == MUTEX_CHILDREN * MUTEX_ROUNDS, "counter %lld, expected %d", counter,
          MUTEX_CHILDREN * MUTEX_ROUNDS);
    printf("lock_mutex: %d processes x %d rounds, counter %lld, %llu ms\n", MUTEX_CHILDREN,
           MUTEX_ROUNDS, counter, (unsigned long long)(tc_test_mono_ms() - start));
    if (rc != NULL) {
        redisFree(rc);
    }
    tc_redis_server_destroy(srv);
}

/* ---- lease locks: a holder that dies ---------------------------------------------- */

#define KILLED_TTL 1500

static void child_holder(unsigned port, int report_fd)
{
    char uri[256], err[256];
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?timeout_ms=2000&invalidate=none", port);
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK ||
        tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        _exit(3);
    }
    struct {
        uint64_t before;
        char token[TC_LOCK_TOKEN_MAX];
    } rep;
    struct tc_tier_lock_req r;
    rep.before = tc_test_mono_ms();
    if (lock_named(c, NULL, 0, "crash", KILLED_TTL, &r) != TC_OK) {
        _exit(4);
    }
    memcpy(rep.token, r.token, sizeof(rep.token));
    if (write(report_fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep)) {
        _exit(5);
    }
    for (;;) {
        pause(); /* holding, until SIGKILL */
    }
}

static void test_lock_killed(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    int report[2];
    if (pipe(report) != 0) {
        CHECK(0, "pipe");
        tc_redis_server_destroy(srv);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        child_holder(tc_redis_server_port(srv), report[1]);
    }
    close(report[1]);
    struct {
        uint64_t before;
        char token[TC_LOCK_TOKEN_MAX];
    } rep;
    int got = read(report[0], &rep, sizeof(rep)) == (ssize_t)sizeof(rep);
    CHECK(got, "the child took the lock");
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(report[0]);
    struct tc_tier *t = open_tier("redis://127.0.0.1:%u/0?timeout_ms=2000&invalidate=none",
                                  tc_redis_server_port(srv));
    struct tc_tier_ctx *c = NULL;
    if (!got || t == NULL || tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        CHECK(0, "setup");
        tc_tier_close(t);
        tc_redis_server_destroy(srv);
        return;
    }
    rep.token[TC_LOCK_TOKEN_MAX - 1] = '\0';
    struct tc_tier_lock_req r;
    enum tc_status st = lock_named(c, NULL, 2, "crash", 0, &r);
    uint64_t now = tc_test_mono_ms();
    if (now - rep.before < KILLED_TTL) {
        CHECK(st == TC_OK && strcmp(r.token, rep.token) == 0,
              "the dead holder's lease outlives it: %s, '%s'", tc_strerror(st), r.token);
    }
    /* Poll: free at the ttl (to the few ms Redis' clock and ours differ),
     * not before, and without anyone's help. */
    uint64_t freed = 0;
    while (tc_test_mono_ms() - rep.before < KILLED_TTL + 5000) {
        st = lock_named(c, NULL, 0, "crash", 60000, &r);
        if (st != TC_EEXIST) {
            freed = st == TC_OK ? tc_test_mono_ms() : 0;
            break;
        }
        tc_test_sleep_ms(10);
    }
    CHECK(st == TC_OK || st == TC_EEXIST, "acquire while held: %s", tc_strerror(st));
    CHECK(freed != 0, "free again %llu ms after a %d ms lease",
          (unsigned long long)(tc_test_mono_ms() - rep.before), KILLED_TTL);
    CHECK(freed == 0 || freed + 5 >= rep.before + KILLED_TTL,
          "taken over %llu ms into a %d ms lease", (unsigned long long)(freed - rep.before),
          KILLED_TTL);
    printf("lock_killed: a dead holder's %d ms lease was free again after %llu ms\n", KILLED_TTL,
           (unsigned long long)(freed - rep.before));
    struct tc_tier_lock_req old;
    memset(&old, 0, sizeof(old));
    memcpy(old.token, rep.token, sizeof(old.token));
    CHECK(lock_named(c, NULL, 1, "crash", 0, &old) == TC_ENOTFOUND,
          "the dead holder's token releases the new lease");
    CHECK(lock_named(c, NULL, 1, "crash", 0, &r) == TC_OK, "release");
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    tc_redis_server_destroy(srv);
}

/* ---- lease locks: release notices ------------------------------------------------- */

#define NOTICES 256

struct notices {
    pthread_mutex_t lock;
    int n, recheck, bad;
    size_t len[NOTICES];
    char name[NOTICES][32];
    char token[NOTICES][TC_LOCK_TOKEN_MAX];
};

static void notices_init(struct notices *h)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
}

static void on_notice(void *arg, const void *name, size_t len, const char *token)
{
    struct notices *h = arg;
    pthread_mutex_lock(&h->lock);
    if (name == NULL) {
        h->recheck++;
        h->bad += len != 0 || token != NULL;
    } else if (token == NULL || len == 0 || len > 32 || strlen(token) >= TC_LOCK_TOKEN_MAX) {
        h->bad++;
    } else if (h->n < NOTICES) {
        memcpy(h->name[h->n], name, len);
        h->len[h->n] = len;
        memcpy(h->token[h->n], token, strlen(token) + 1);
        h->n++;
    }
    pthread_mutex_unlock(&h->lock);
}

/* 1 if h heard a release of name (by token, when given). */
static int heard_notice(struct notices *h, const void *name, size_t len, const char *token)
{
    int found = 0;
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->n && !found; i++) {
        found = h->len[i] == len && memcmp(h->name[i], name, len) == 0 &&
                (token == NULL || strcmp(h->token[i], token) == 0);
    }
    pthread_mutex_unlock(&h->lock);
    return found;
}

static long wait_notice(struct notices *h, const void *name, size_t len, const char *token,
                        long limit_ms)
{
    uint64_t start = tc_test_mono_ms();
    while ((long)(tc_test_mono_ms() - start) <= limit_ms) {
        if (heard_notice(h, name, len, token)) {
            return (long)(tc_test_mono_ms() - start);
        }
        tc_test_sleep_ms(1);
    }
    return -1;
}

static int notices_count(struct notices *h, int recheck)
{
    pthread_mutex_lock(&h->lock);
    int n = recheck ? h->recheck : h->n;
    pthread_mutex_unlock(&h->lock);
    return n;
}

static int wait_recheck(struct notices *h, int above, long limit_ms)
{
    uint64_t start = tc_test_mono_ms();
    while ((long)(tc_test_mono_ms() - start) <= limit_ms) {
        if (notices_count(h, 1) > above) {
            return 1;
        }
        tc_test_sleep_ms(5);
    }
    return 0;
}

/* Takes and releases name through c; returns the token, or "" on failure. */
static void take_and_release(struct tc_tier_ctx *c, const void *name, size_t len,
                             char token[TC_LOCK_TOKEN_MAX])
{
    struct tc_tier_lock_req r;
    memset(&r, 0, sizeof(r));
    r.name = name;
    r.name_len = len;
    r.ttl_ms = 10000;
    token[0] = '\0';
    if (lock_do(c, NULL, 0, &r) == TC_OK && lock_do(c, NULL, 1, &r) == TC_OK) {
        memcpy(token, r.token, TC_LOCK_TOKEN_MAX);
    }
}

static void test_lock_notices(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    unsigned port = tc_redis_server_port(srv);
    const char *fmt = "redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=5000";
    struct tc_tier *a = open_tier(fmt, port), *b = open_tier(fmt, port);
    struct tc_tier *n = open_tier("redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=5000&"
                                  "invalidate=none",
                                  port);
    struct tc_tier_ctx *ca = NULL;
    if (a == NULL || b == NULL || n == NULL || tc_tier_ctx_init(a, NULL, &ca) != TC_OK) {
        tc_tier_close(a);
        tc_tier_close(b);
        tc_tier_close(n);
        tc_redis_server_destroy(srv);
        return;
    }
    struct notices ha, hb, hn, hx, hy;
    notices_init(&ha);
    notices_init(&hb);
    notices_init(&hn);
    notices_init(&hx);
    notices_init(&hy);
    CHECK(stat(n, "subscribed") == 0, "invalidate=none subscribes to nothing by itself");
    CHECK(tc_tier_on_lock_release(a, on_notice, &ha) == TC_OK, "register a");
    CHECK(tc_tier_on_lock_release(b, on_notice, &hb) == TC_OK, "register b");
    CHECK(tc_tier_on_lock_release(n, on_notice, &hn) == TC_OK, "register n (invalidate=none)");
    CHECK(stat(n, "subscribed") == 1 && stat(b, "subscribed") == 1,
          "subscribed when registration returns");
    CHECK(tc_tier_on_invalidate(n, on_invalidate, NULL) == TC_ENOTSUP,
          "still no invalidation on n");

    char tok[TC_LOCK_TOKEN_MAX];
    take_and_release(ca, "job-1", 5, tok);
    CHECK(tok[0] != '\0', "a takes and releases job-1");
    long mb = wait_notice(&hb, "job-1", 5, tok, 5000);
    long mn = wait_notice(&hn, "job-1", 5, tok, 5000);
    CHECK(mb >= 0, "b heard a's release (name and token)");
    CHECK(mn >= 0, "n heard a's release with invalidation off");
    CHECK(wait_notice(&ha, "job-1", 5, tok, 5000) >= 0, "a heard its own release");
    printf("lock_notices: release heard by another instance after %ld ms\n", mb);

    /* Any bytes in a name, spaces and NULs included. */
    static const char bin[] = {'x', ' ', 0, 'y', ' '};
    take_and_release(ca, bin, sizeof(bin), tok);
    CHECK(tok[0] != '\0' && wait_notice(&hb, bin, sizeof(bin), tok, 5000) >= 0,
          "b heard a binary name exactly");

    /* A refused release publishes nothing: notices keep their order, so
     * once the next one arrived, the refused one would have too. */
    struct tc_tier_lock_req q;
    CHECK(lock_named(ca, NULL, 0, "quiet", 10000, &q) == TC_OK, "take quiet");
    struct tc_tier_lock_req wrong = q;
    memcpy(wrong.token, "0000", 5);
    CHECK(lock_do(ca, NULL, 1, &wrong) == TC_ENOTFOUND, "wrong token refused");
    take_and_release(ca, "loud", 4, tok);
    CHECK(wait_notice(&hb, "loud", 4, tok, 5000) >= 0, "b heard loud");
    CHECK(!heard_notice(&hb, "quiet", 5, NULL), "a refused release was published");
    CHECK(lock_do(ca, NULL, 1, &q) == TC_OK, "release quiet");
    CHECK(wait_notice(&hb, "quiet", 5, q.token, 5000) >= 0, "b heard quiet");

    /* Replacing the callback races with deliveries: once the call returns,
     * the previous callback must never run again (and TSan watches the
     * handover). Each release is heard by whichever callback is registered
     * when it arrives, or by nobody after the final unregister. */
    struct notices *live = &hb;
    int frozen[2] = {0, 0}, late = 0, before = notices_count(&hb, 0);
    for (int i = 0; i < 40; i++) {
        struct notices *next = i % 2 ? &hy : &hx;
        if (i >= 2) {
            late += notices_count(next, 0) != frozen[i % 2]; /* retired at i - 1 */
        }
        CHECK(tc_tier_on_lock_release(b, on_notice, next) == TC_OK, "switch %d", i);
        if (live != &hb) {
            frozen[(i + 1) % 2] = notices_count(live, 0);
        } else {
            before = notices_count(&hb, 0);
        }
        live = next;
        char name[16];
        snprintf(name, sizeof(name), "switch-%d", i);
        take_and_release(ca, name, strlen(name), tok);
    }
    /* Notices keep their order: once the last one is heard, none of the 40
     * is still on its way, so the count below depends on no scheduling (a
     * loaded machine used to leave two in flight at the unregister). */
    CHECK(wait_notice(live, "switch-39", 9, tok, 5000) >= 0, "the last switch was heard");
    CHECK(tc_tier_on_lock_release(b, NULL, NULL) == TC_OK, "unregister b");
    int bx = notices_count(&hx, 0), by = notices_count(&hy, 0), bb = notices_count(&hb, 0);
    take_and_release(ca, "after-unregister", 16, tok);
    CHECK(wait_notice(&hn, "after-unregister", 16, tok, 5000) >= 0, "n heard it");
    tc_test_sleep_ms(100);
    late +=
        notices_count(&hx, 0) != bx || notices_count(&hy, 0) != by || notices_count(&hb, 0) != bb;
    CHECK(late == 0, "%d notices reached a callback after it was replaced", late);
    CHECK(bx + by + bb - before >= 39, "the switched callbacks heard %d of 40",
          bx + by + bb - before);
    CHECK(tc_tier_on_lock_release(b, on_notice, &hb) == TC_OK, "register b again");
    take_and_release(ca, "again", 5, tok);
    CHECK(wait_notice(&hb, "again", 5, tok, 5000) >= 0, "b hears again after re-registering");

    int bad = ha.bad + hb.bad + hn.bad + hx.bad + hy.bad;
    CHECK(bad == 0, "%d malformed callback calls", bad);
    CHECK(notices_count(&hb, 1) == 0 && notices_count(&hn, 1) == 0,
          "no recheck without a lost subscription (b %d, n %d)", notices_count(&hb, 1),
          notices_count(&hn, 1));
    CHECK(stat(b, "lock_malformed") == 0 && stat(b, "lock_notices") > 0, "b's notice stats");

    CHECK(tc_tier_on_lock_release(n, NULL, NULL) == TC_OK, "unregister n");
    tc_tier_ctx_dispose(ca);
    /* Closing with callbacks still registered stops everything. */
    tc_tier_close(a);
    tc_tier_close(b);
    tc_tier_close(n);
    pthread_mutex_destroy(&ha.lock);
    pthread_mutex_destroy(&hb.lock);
    pthread_mutex_destroy(&hn.lock);
    pthread_mutex_destroy(&hx.lock);
    pthread_mutex_destroy(&hy.lock);
    tc_redis_server_destroy(srv);
}

/* ---- lease locks: a frozen and a restarted Redis ---------------------------------- */

static void test_lock_faults(void)
{
    struct tc_redis_server *srv;
    if (tc_redis_server_start(NULL, &srv) != 0) {
        CHECK(0, "cannot start redis-server");
        return;
    }
    unsigned port = tc_redis_server_port(srv);
    const uint64_t timeout = 100, ctimeout = 200;
    const char *fmt = "redis://127.0.0.1:%u/0?timeout_ms=100&connect_timeout_ms=200&"
                      "backoff_ms=20&backoff_max_ms=300&breaker_failures=3";
    struct tc_tier *a = open_tier(fmt, port);
    struct tc_tier *n = open_tier("redis://127.0.0.1:%u/0?timeout_ms=100&connect_timeout_ms=200&"
                                  "backoff_ms=20&backoff_max_ms=300&invalidate=none",
                                  port);
    struct event_base *base = event_base_new();
    struct tc_tier_ctx *cs = NULL, *cx = NULL;
    if (a == NULL || n == NULL || tc_tier_ctx_init(a, NULL, &cs) != TC_OK ||
        tc_tier_ctx_init(a, base, &cx) != TC_OK) {
        CHECK(0, "setup");
        tc_tier_close(a);
        tc_tier_close(n);
        event_base_free(base);
        tc_redis_server_destroy(srv);
        return;
    }
    struct notices hn;
    notices_init(&hn);
    CHECK(tc_tier_on_lock_release(n, on_notice, &hn) == TC_OK, "register n");
    struct tc_tier_lock_req held;
    CHECK(lock_named(cx, base, 0, "held", 60000, &held) == TC_OK, "take a lock before the freeze");

    /* Frozen: every lock operation ends within its deadline (blocking: a
     * reconnect may add a handshake), as TC_ETIMEOUT or TC_EUNAVAIL. */
    tc_redis_server_pause(srv);
    char sent[32][TC_LOCK_TOKEN_MAX];
    int nsent = 0, wrong = 0;
    uint64_t worst_async = 0, worst_sync = 0;
    for (int i = 0; i < 12; i++) {
        struct tc_tier_ctx *c = i % 2 ? cs : cx;
        struct event_base *bb = i % 2 ? NULL : base;
        int op = (i / 2) % 3;
        struct tc_tier_lock_req r;
        memset(&r, 0, sizeof(r));
        if (op == 1) {
            memcpy(r.token, held.token, sizeof(r.token));
        }
        uint64_t t0 = tc_test_mono_ms();
        enum tc_status st = lock_named(c, bb, op, op == 1 ? "held" : "frozen", 60000, &r);
        uint64_t took = tc_test_mono_ms() - t0;
        if (bb != NULL && took > worst_async) {
            worst_async = took;
        } else if (bb == NULL && took > worst_sync) {
            worst_sync = took;
        }
        if (st != TC_ETIMEOUT && st != TC_EUNAVAIL) {
            wrong++;
            fprintf(stderr, "frozen: op %d got %s\n", op, tc_strerror(st));
        }
        if (op == 0 && r.token[0] != '\0' && nsent < 32) {
            memcpy(sent[nsent++], r.token, TC_LOCK_TOKEN_MAX);
        }
    }
    CHECK(wrong == 0, "%d lock operations on a frozen Redis did not fail as they should", wrong);
    CHECK(worst_async <= timeout + SLACK_MS, "async lock operation took %llu ms (deadline %llu)",
          (unsigned long long)worst_async, (unsigned long long)timeout);
    CHECK(worst_sync <= timeout + ctimeout + SLACK_MS,
          "blocking lock operation took %llu ms (deadline %llu + handshake %llu)",
          (unsigned long long)worst_sync, (unsigned long long)timeout,
          (unsigned long long)ctimeout);
    printf("lock_faults: frozen: worst %llu ms async, %llu ms blocking\n",
           (unsigned long long)worst_async, (unsigned long long)worst_sync);
    tc_redis_server_resume(srv);

    /* Back: the lock taken before is still its holder's, and an acquire
     * that timed out either took "frozen" under the token it kept or not
     * at all. */
    struct tc_tier_lock_req r;
    enum tc_status st = TC_EUNAVAIL;
    uint64_t start = tc_test_mono_ms();
    while ((st = lock_named(cx, base, 2, "held", 0, &r)) != TC_OK &&
           tc_test_mono_ms() - start < 5000) {
        struct timeval tick = {0, 20000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    CHECK(st == TC_OK && strcmp(r.token, held.token) == 0, "held survives the freeze: %s",
          tc_strerror(st));
    st = lock_named(cx, base, 2, "frozen", 0, &r);
    int known = st == TC_ENOTFOUND;
    for (int i = 0; i < nsent && st == TC_OK; i++) {
        known |= strcmp(sent[i], r.token) == 0;
    }
    CHECK(known, "'frozen' is held by a token no acquire reported: %s '%s'", tc_strerror(st),
          r.token);
    for (start = tc_test_mono_ms();
         (st = lock_do(cs, NULL, 1, &held)) != TC_OK && tc_test_mono_ms() - start < 5000;
         tc_test_sleep_ms(20)) {
    }
    CHECK(st == TC_OK, "the blocking ctx releases held after the freeze: %s", tc_strerror(st));
    CHECK(wait_notice(&hn, "held", 4, held.token, 5000) >= 0, "n heard held's release");

    /* Restarted (empty, no scripts): n is told to recheck everything, then
     * hears releases again; a's first scripts are loaded again. */
    int rechecks = notices_count(&hn, 1);
    uint64_t loads = stat(a, "script_loads");
    tc_redis_server_kill(srv);
    CHECK(tc_redis_server_restart(srv) == 0, "restart");
    CHECK(wait_recheck(&hn, rechecks, 5000), "n was told to recheck after the restart");
    char tok[TC_LOCK_TOKEN_MAX] = "";
    for (start = tc_test_mono_ms(); tok[0] == '\0' && tc_test_mono_ms() - start < 5000;
         tc_test_sleep_ms(20)) {
        take_and_release(cs, "after-restart", 13, tok);
    }
    CHECK(tok[0] != '\0', "locks work again after the restart");
    CHECK(wait_notice(&hn, "after-restart", 13, tok, 5000) >= 0, "n hears releases again");
    CHECK(stat(a, "script_loads") > loads, "scripts loaded again after the restart");
    CHECK(hn.bad == 0, "malformed callback calls");

    tc_tier_ctx_dispose(cs);
    tc_tier_ctx_dispose(cx);
    event_base_free(base);
    tc_tier_close(a);
    tc_tier_close(n);
    pthread_mutex_destroy(&hn.lock);
    tc_redis_server_destroy(srv);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    /* First, while this process has no threads: they fork. */
    if (only == NULL || strcmp(only, "lock_mutex") == 0) {
        test_lock_mutex();
    }
    if (only == NULL || strcmp(only, "lock_killed") == 0) {
        test_lock_killed();
    }
    if (only == NULL || strcmp(only, "processes") == 0) {
        test_processes();
    }
    if (only == NULL || strcmp(only, "fault") == 0) {
        test_fault();
    }
    if (only == NULL || strcmp(only, "invalidation") == 0) {
        test_invalidation();
    }
    if (only == NULL || strcmp(only, "threads") == 0) {
        test_threads();
    }
    if (only == NULL || strcmp(only, "lock_notices") == 0) {
        test_lock_notices();
    }
    if (only == NULL || strcmp(only, "lock_faults") == 0) {
        test_lock_faults();
    }
    printf("redis_faults: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
