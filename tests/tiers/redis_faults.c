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
 */
#include "tests/support/check.h"
#include "tests/support/redis_server.h"
#include "tiers/tier.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Scheduling slack on a loaded 2-core machine under TSan. */
#define SLACK_MS 400

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

struct stat_find {
    const char *name;
    uint64_t value;
};

static void find_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    struct stat_find *f = arg;
    (void)kind;
    if (strcmp(name, f->name) == 0) {
        f->value = v;
    }
}

static uint64_t stat(struct tc_tier *t, const char *name)
{
    struct stat_find f = {name, 0};
    tc_tier_stats(t, find_stat, &f);
    return f.value;
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
    s->req.now_ms = wall_ms();
    s->req.done = slot_done;
    s->req.arg = s;
    s->busy = 1;
    s->started = mono_ms();
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
    uint64_t lat = mono_ms() - s->started;
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
    uint64_t end = mono_ms() + ms;
    struct timeval tick = {0, 2000};
    while (mono_ms() < end) {
        load_tick(l);
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
}

/* Stops issuing and waits (bounded) for everything in flight. */
static void drain(struct event_base *base, struct load *l)
{
    l->stop = 1;
    uint64_t end = mono_ms() + 3000;
    struct timeval tick = {0, 5000};
    while (l->inflight > 0 && mono_ms() < end) {
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
    uint64_t restarted = mono_ms(), healthy_after = 0;
    while (mono_ms() - restarted < 5000) {
        run_for(base, &l, 5);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            healthy_after = mono_ms() - restarted;
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
    uint64_t resumed = mono_ms();
    healthy_after = 0;
    while (mono_ms() - resumed < 5000) {
        run_for(base, &l, 5);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            healthy_after = mono_ms() - resumed;
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
    uint64_t killed = mono_ms(), down_after = 0;
    tc_redis_server_kill(srv);
    while (mono_ms() - killed < 3000) {
        struct timeval tick = {0, 5000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_DOWN) {
            down_after = mono_ms() - killed;
            break;
        }
    }
    CHECK(down_after > 0, "an idle tier notices a dead Redis");
    CHECK(tc_redis_server_restart(srv) == 0, "restart");
    uint64_t back = mono_ms(), ok_after = 0;
    while (mono_ms() - back < 5000) {
        struct timeval tick = {0, 5000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        if (tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            ok_after = mono_ms() - back;
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
    uint64_t start = mono_ms();
    while ((long)(mono_ms() - start) <= limit_ms) {
        if (heard_key(h, key)) {
            return (long)(mono_ms() - start);
        }
        sleep_ms(1);
    }
    return -1;
}

static enum tc_status sync_write(struct tc_tier_ctx *c, const char *key, int del)
{
    struct tc_tier_req r = {
        .key = key, .key_len = strlen(key), .value = "v", .value_len = 1, .now_ms = wall_ms()};
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
    sleep_ms(50);
    CHECK(!heard_key(&hb, "set-on-b"), "b heard its own message");
    CHECK(!heard_key(&ha, "set-on-a") && !heard_key(&ha, "del-on-a"), "a heard its own messages");
    CHECK(stat(b, "inval_own") >= 1, "b counted its own message");
    printf("invalidation: set seen after %ld ms, delete after %ld ms\n", ms, ms2);

    /* A lost subscription is reported as (NULL, 0), then messages flow again. */
    tc_redis_server_kill(srv);
    CHECK(tc_redis_server_restart(srv) == 0, "restart");
    uint64_t start = mono_ms();
    while (heard_lost(&hb) == 0 && mono_ms() - start < 3000) {
        sleep_ms(5);
    }
    CHECK(heard_lost(&hb) >= 1, "b was told that messages may have been lost");
    CHECK(stat(b, "subscribed") == 1, "b subscribed again");
    enum tc_status st = TC_EUNAVAIL;
    for (start = mono_ms(); st != TC_OK && mono_ms() - start < 3000; sleep_ms(10)) {
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
    at[0] = mono_ms();
    int ok = sync_write(c, "from-child", 0) == TC_OK;
    at[1] = mono_ms();
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
        uint64_t now = mono_ms();
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

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    /* First, while this process has no threads: it forks. */
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
    printf("redis_faults: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
