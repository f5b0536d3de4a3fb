/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Multi-process and multi-thread stress for tiers/tier_lmdb.c, as a plain
 * program so that it also runs under ThreadSanitizer (Criterion aborts there:
 * Snaipe/Criterion#274). Prints "stress_tier_lmdb: N passed, M failed" and
 * exits non-zero on any failure. Every case is bounded to about a second.
 *
 *   kill9      a forked child writes with sync=always from 3 threads and
 *              reports each acknowledged key over a pipe; the parent kill -9s
 *              it at a random moment, reopens, and finds every acknowledged
 *              write (3 rounds on one environment).
 *   stale      while one process keeps the environment open, another dies
 *              holding reader slots; the next open clears them (when no
 *              process has it open, LMDB resets the whole reader table).
 *   two_procs  two forked processes write and read the same environment at
 *              once; no error, no torn value, no lost acknowledged write.
 *   two_procs_fill  two processes write 10 MiB into one 8 MiB map while
 *              reading: both evict, no write fails.
 *   async      two threads, each with its own event_base, keep 32 writes in
 *              flight: every done() runs once, on its own loop thread.
 *   pinned     sync=periodic in a 1 MiB map with no checkpoint due: two
 *              threads overwrite their keys, so the map fills with pages
 *              the pin holds, and the writer has the syncer take
 *              checkpoints (a write transaction beside the writer's); a
 *              third reads health and stats. No write fails, no eviction.
 *   damaged    three threads read and write an environment whose tc_data
 *              tree is damaged below its root while the tier runs (issue
 *              12): whoever meets the damage first takes the tier down,
 *              once; no thread crashes or reads a wrong value, health says
 *              DOWN, the marker is left.
 *
 * The parent never holds an open tier (or any thread) across fork(): LMDB
 * environments must not be inherited by a child (lmdb.h Caveats).
 */
#include "tests/support/clock.h"
#include "tests/support/check.h"
#include "tests/support/lmdb_damage.h"
#include "tests/support/stats.h"
#include "tiers/tier.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[256];

static uint32_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 16777619u;
    }
    return h;
}

/* Value of a key: the key, '|', padding of a key-dependent length, checksum. */
static size_t make_value(const char *key, char *val, size_t cap)
{
    size_t kl = strlen(key);
    size_t pad = fnv(key, kl) % 200;
    size_t n = kl + 1 + pad;
    if (n + 4 > cap) {
        n = cap - 4;
    }
    memcpy(val, key, kl);
    val[kl] = '|';
    memset(val + kl + 1, 'a' + (int)(pad % 26), n - kl - 1);
    uint32_t sum = fnv(val, n);
    memcpy(val + n, &sum, 4);
    return n + 4;
}

/* 1 if buf is the value make_value gives for key. */
static int value_ok(const char *key, const struct tc_buf *b)
{
    char want[512];
    size_t n = make_value(key, want, sizeof(want));
    return b->len == n && memcmp(b->data, want, n) == 0;
}

static enum tc_status put(struct tc_tier_ctx *c, const char *key)
{
    char val[512];
    size_t vl = make_value(key, val, sizeof(val));
    struct tc_tier_req r = {.key = key,
                            .key_len = strlen(key),
                            .value = val,
                            .value_len = vl,
                            .now_ms = tc_test_wall_ms()};
    r.hdr.encoding = TC_ENC_BINARY;
    r.hdr.expire_ms = r.now_ms + 3600000;
    return tc_tier_set(c, &r);
}

static enum tc_status get(struct tc_tier_ctx *c, const char *key, struct tc_buf *b)
{
    struct tc_tier_req r = {
        .key = key, .key_len = strlen(key), .out = b, .now_ms = tc_test_wall_ms()};
    return tc_tier_get(c, &r);
}

static struct tc_tier *open_tier(const char *params)
{
    char uri[512], err[512];
    struct tc_tier *t = NULL;
    snprintf(uri, sizeof(uri), "lmdb://%s?%s", dir, params);
    enum tc_status st = tc_tier_open(NULL, uri, &t, err, sizeof(err));
    if (st != TC_OK) {
        fprintf(stderr, "open %s: %s\n", uri, err);
        return NULL;
    }
    return t;
}

static uint64_t stat_of(struct tc_tier *t, const char *name)
{
    uint64_t v;
    tc_test_tier_stat(t, name, &v);
    return v;
}

/* ---- kill -9 ------------------------------------------------------------------ */

struct k9_arg {
    struct tc_tier *tier;
    int round, id, fd;
};

static void *k9_writer(void *p)
{
    struct k9_arg *a = p;
    struct tc_tier_ctx *c;
    if (tc_tier_ctx_init(a->tier, NULL, &c) != TC_OK) {
        _exit(3);
    }
    for (uint32_t i = 0;; i++) {
        char key[48];
        snprintf(key, sizeof(key), "k9:%d:%d:%u", a->round, a->id, i);
        if (put(c, key) != TC_OK) {
            _exit(4);
        }
        /* Acknowledged (and fsynced): report it. 4 bytes < PIPE_BUF, so
         * concurrent writers never interleave a record. */
        uint32_t rec = ((uint32_t)a->id << 28) | i;
        if (write(a->fd, &rec, sizeof(rec)) != (ssize_t)sizeof(rec)) {
            _exit(5);
        }
    }
    return NULL;
}

static void k9_child(int round, int fd)
{
    struct tc_tier *t = open_tier("map_size=64M&sync=always");
    if (t == NULL) {
        _exit(2);
    }
    pthread_t th[3];
    struct k9_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (struct k9_arg){t, round, i, fd};
        pthread_create(&th[i], NULL, k9_writer, &args[i]);
    }
    for (;;) {
        pause(); /* until SIGKILL */
    }
}

static void test_kill9(void)
{
    for (int round = 0; round < 3; round++) {
        int fds[2];
        if (pipe(fds) != 0) {
            CHECK(0, "pipe: %s", strerror(errno));
            return;
        }
        fflush(NULL); /* or the child could print our buffered lines again */
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            k9_child(round, fds[1]);
        }
        close(fds[1]);
        CHECK(pid > 0, "fork: %s", strerror(errno));
        if (pid < 0) {
            close(fds[0]);
            return;
        }
        /* Collect acks for a random 150..450 ms, then kill mid-stride. */
        uint32_t next[3] = {0, 0, 0};
        uint64_t deadline = tc_test_mono_ms() + 150 + (uint64_t)(rand() % 300);
        size_t acked = 0;
        int killed = 0;
        for (;;) {
            if (!killed && tc_test_mono_ms() >= deadline) {
                kill(pid, SIGKILL);
                killed = 1;
            }
            struct pollfd pfd = {fds[0], POLLIN, 0};
            if (poll(&pfd, 1, killed ? 1000 : 10) <= 0 && !killed) {
                continue;
            }
            uint32_t rec[256];
            ssize_t n = read(fds[0], rec, sizeof(rec));
            if (n <= 0) {
                break; /* EOF: the child is gone and everything is read */
            }
            for (ssize_t i = 0; i < n / 4; i++) {
                uint32_t id = rec[i] >> 28, seq = rec[i] & 0x0fffffffu;
                if (id < 3 && seq + 1 > next[id]) {
                    next[id] = seq + 1; /* each thread acks in order */
                }
                acked++;
            }
        }
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "round %d: child ended otherwise (status %d)", round, status);
        CHECK(acked > 0, "round %d: no write was acknowledged before the kill", round);

        struct tc_tier *t = open_tier("map_size=64M&sync=always");
        CHECK(t != NULL, "round %d: the environment does not reopen after kill -9", round);
        if (t == NULL) {
            return;
        }
        struct tc_tier_ctx *c;
        struct tc_buf b = TC_BUF_INIT;
        size_t lost = 0, bad = 0;
        tc_tier_ctx_init(t, NULL, &c);
        for (int id = 0; id < 3; id++) {
            for (uint32_t i = 0; i < next[id]; i++) {
                char key[48];
                snprintf(key, sizeof(key), "k9:%d:%d:%u", round, id, i);
                enum tc_status st = get(c, key, &b);
                lost += st != TC_OK;
                bad += st == TC_OK && !value_ok(key, &b);
            }
        }
        CHECK(lost == 0, "round %d: %zu of %zu acknowledged writes lost", round, lost, acked);
        CHECK(bad == 0, "round %d: %zu values damaged", round, bad);
        printf("kill9 round %d: %zu acknowledged writes, all present after kill -9\n", round,
               acked);
        tc_buf_deinit(&b);
        tc_tier_ctx_dispose(c);
        tc_tier_close(t);
    }
}

/* ---- stale reader slots ------------------------------------------------------ */

/* Child: open the tier, take reader slots with two ctxs, say so, wait. */
static void hold_child(int fd)
{
    struct tc_tier *t = open_tier("map_size=64M");
    struct tc_tier_ctx *c1, *c2;
    if (t == NULL || tc_tier_ctx_init(t, NULL, &c1) != TC_OK ||
        tc_tier_ctx_init(t, NULL, &c2) != TC_OK) {
        _exit(2);
    }
    char b = 1;
    if (write(fd, &b, 1) != 1) {
        _exit(3);
    }
    for (;;) {
        pause();
    }
}

static pid_t start_holder(void)
{
    int fds[2];
    if (pipe(fds) != 0) {
        return -1;
    }
    fflush(NULL); /* or the child could print our buffered lines again */
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        hold_child(fds[1]);
    }
    close(fds[1]);
    char b = 0;
    struct pollfd pfd = {fds[0], POLLIN, 0};
    if (pid > 0 && (poll(&pfd, 1, 10000) != 1 || read(fds[0], &b, 1) != 1)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
    }
    close(fds[0]);
    return pid;
}

static void test_stale_readers(void)
{
    pid_t keeper = start_holder();
    pid_t victim = keeper > 0 ? start_holder() : -1;
    CHECK(keeper > 0 && victim > 0, "could not start the holders");
    if (victim > 0) {
        kill(victim, SIGKILL);
        waitpid(victim, NULL, 0);
        struct tc_tier *t = open_tier("map_size=64M");
        CHECK(t != NULL, "open beside a live process");
        if (t != NULL) {
            uint64_t n = stat_of(t, "stale_readers_cleared");
            CHECK(n >= 2, "%llu stale reader slots cleared at open, want 2", (unsigned long long)n);
            printf("stale: %llu reader slots of a kill -9ed process cleared at open\n",
                   (unsigned long long)n);
            tc_tier_close(t);
        }
    }
    if (keeper > 0) {
        kill(keeper, SIGKILL);
        waitpid(keeper, NULL, 0);
    }
}

/* ---- two processes -------------------------------------------------------------- */

enum { TP_KEYS = 1000 };

struct tp_reader {
    struct tc_tier *tier;
    int me;
    int *stop; /* guarded by lock */
    pthread_mutex_t *lock;
    int errors;
    long hits;
};

static void *tp_read(void *p)
{
    struct tp_reader *r = p;
    struct tc_tier_ctx *c;
    struct tc_buf b = TC_BUF_INIT;
    uint64_t s = 88172645463325252ull + (uint64_t)r->me;
    if (tc_tier_ctx_init(r->tier, NULL, &c) != TC_OK) {
        r->errors++;
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(r->lock);
        int stop = *r->stop;
        pthread_mutex_unlock(r->lock);
        if (stop) {
            break;
        }
        for (int i = 0; i < 64; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            char key[32];
            snprintf(key, sizeof(key), "tp:%d:%d", (int)(s % 2), (int)((s >> 8) % TP_KEYS));
            enum tc_status st = get(c, key, &b);
            if (st == TC_OK) {
                r->hits++;
                if (!value_ok(key, &b)) {
                    r->errors++;
                }
            } else if (st != TC_ENOTFOUND) {
                r->errors++;
            }
        }
        /* Leave the writers some CPU: this box may have two cores for all
         * four threads (and TSan makes each of them slower). */
        struct timespec pause = {0, 50000};
        nanosleep(&pause, NULL);
    }
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(c);
    return NULL;
}

static int tp_child(int me)
{
    struct tc_tier *t = open_tier("map_size=64M&sync=periodic&sync_interval_ms=50");
    if (t == NULL) {
        return 2;
    }
    int stop = 0, errors = 0;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    struct tp_reader r = {t, me, &stop, &lock, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, tp_read, &r);
    struct tc_tier_ctx *c;
    if (tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        return 3;
    }
    for (int i = 0; i < TP_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "tp:%d:%d", me, i);
        errors += put(c, key) != TC_OK;
    }
    /* Our own writes, all visible once acknowledged. */
    struct tc_buf b = TC_BUF_INIT;
    for (int i = 0; i < TP_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "tp:%d:%d", me, i);
        errors += get(c, key, &b) != TC_OK || !value_ok(key, &b);
    }
    tc_buf_deinit(&b);
    pthread_mutex_lock(&lock);
    stop = 1;
    pthread_mutex_unlock(&lock);
    pthread_join(th, NULL);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    fprintf(stderr, "two_procs child %d: %d errors, reader %ld hits, %d reader errors\n", me,
            errors, r.hits, r.errors);
    return errors + r.errors == 0 ? 0 : 1;
}

static void test_two_procs(void)
{
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        fflush(NULL); /* or the child could print our buffered lines again */
        pids[i] = fork();
        if (pids[i] == 0) {
            _exit(tp_child(i));
        }
        CHECK(pids[i] > 0, "fork: %s", strerror(errno));
    }
    for (int i = 0; i < 2; i++) {
        int status = -1;
        if (pids[i] > 0) {
            waitpid(pids[i], &status, 0);
        }
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed (status %d)", i,
              status);
    }
    struct tc_tier *t = open_tier("map_size=64M");
    CHECK(t != NULL, "reopen after two processes");
    if (t == NULL) {
        return;
    }
    struct tc_tier_ctx *c;
    struct tc_buf b = TC_BUF_INIT;
    int lost = 0;
    tc_tier_ctx_init(t, NULL, &c);
    for (int me = 0; me < 2; me++) {
        for (int i = 0; i < TP_KEYS; i++) {
            char key[32];
            snprintf(key, sizeof(key), "tp:%d:%d", me, i);
            lost += get(c, key, &b) != TC_OK || !value_ok(key, &b);
        }
    }
    CHECK(lost == 0, "two processes: %d acknowledged writes lost or damaged", lost);
    printf("two_procs: %d writes from 2 processes, all present\n", 2 * TP_KEYS);
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

/* ---- two processes filling a small map ----------------------------------------------- */

/* Each writes ~5 MiB into one 8 MiB map while reading: both evict, and no
 * write of either may fail. */
enum { FILL_WRITES = 5000 };
static int fill_child(int me)
{
    struct tc_tier *t = open_tier("map_size=8M&sync=none");
    struct tc_tier_ctx *c;
    if (t == NULL || tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        return 2;
    }
    static char val[1000];
    memset(val, 'a' + me, sizeof(val));
    struct tc_buf b = TC_BUF_INIT;
    int errors = 0;
    for (int i = 0; i < FILL_WRITES; i++) {
        char key[32];
        snprintf(key, sizeof(key), "fill:%d:%d", me, i);
        struct tc_tier_req r = {.key = key,
                                .key_len = strlen(key),
                                .value = val,
                                .value_len = sizeof(val),
                                .now_ms = tc_test_wall_ms()};
        r.hdr.encoding = TC_ENC_BINARY;
        r.hdr.expire_ms = r.now_ms + 3600000 + (uint64_t)i;
        if (tc_tier_set(c, &r) != TC_OK) {
            if (errors++ == 0) {
                fprintf(stderr, "fill child %d: write %d: %s\n", me, i, tc_status_name(r.status));
            }
        }
        if (i % 4 == 0) {
            snprintf(key, sizeof(key), "fill:%d:%d", 1 - me, i / 2);
            enum tc_status st = get(c, key, &b);
            errors += st != TC_OK && st != TC_ENOTFOUND;
        }
    }
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    return errors == 0 ? 0 : 1;
}

static void test_two_procs_fill(void)
{
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        fflush(NULL); /* or the child could print our buffered lines again */
        pids[i] = fork();
        if (pids[i] == 0) {
            _exit(fill_child(i));
        }
        CHECK(pids[i] > 0, "fork: %s", strerror(errno));
    }
    for (int i = 0; i < 2; i++) {
        int status = -1;
        if (pids[i] > 0) {
            waitpid(pids[i], &status, 0);
        }
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "fill child %d: a write failed in a shared full map (status %d)", i, status);
    }
    struct tc_tier *t = open_tier("map_size=8M");
    CHECK(t != NULL, "reopen after the fill");
    if (t != NULL) {
        uint64_t items = stat_of(t, "items");
        CHECK(items > 1000 && items < 8000, "%llu items left in an 8 MiB map",
              (unsigned long long)items);
        printf("two_procs_fill: 2 x %d writes of 1000 bytes into 8 MiB, %llu kept\n", FILL_WRITES,
               (unsigned long long)items);
        tc_tier_close(t);
    }
}

/* ---- async, two loop threads ------------------------------------------------------- */

enum { AS_INFLIGHT = 32, AS_OPS = 3000 };

struct as_slot {
    struct tc_tier_req req;
    char key[32];
    char val[512];
    struct as_loop *loop;
    int busy;
};

struct as_loop {
    struct tc_tier *tier;
    struct tc_tier_ctx *ctx;
    struct event_base *base;
    pthread_t self;
    int id, issued, completed, outstanding;
    int wrong_thread, bad_status, double_done;
    struct as_slot slots[AS_INFLIGHT];
};

static void as_issue(struct as_slot *s);

static void as_done(struct tc_tier_req *req)
{
    struct as_slot *s = req->arg;
    struct as_loop *l = s->loop;
    if (!pthread_equal(pthread_self(), l->self)) {
        l->wrong_thread++;
    }
    if (!s->busy) {
        l->double_done++;
    }
    s->busy = 0;
    if (req->status != TC_OK) {
        l->bad_status++;
    }
    l->completed++;
    l->outstanding--;
    if (l->issued < AS_OPS) {
        as_issue(s);
    }
}

static void as_issue(struct as_slot *s)
{
    struct as_loop *l = s->loop;
    int n = l->issued++;
    snprintf(s->key, sizeof(s->key), "as:%d:%d", l->id, n % 200);
    memset(&s->req, 0, sizeof(s->req));
    s->req.key = s->key;
    s->req.key_len = strlen(s->key);
    s->req.now_ms = tc_test_wall_ms();
    s->req.done = as_done;
    s->req.arg = s;
    s->busy = 1;
    l->outstanding++;
    enum tc_status st;
    if (n % 7 == 3) {
        st = tc_tier_del(l->ctx, &s->req);
    } else {
        s->req.value = s->val;
        s->req.value_len = make_value(s->key, s->val, sizeof(s->val));
        s->req.hdr.encoding = TC_ENC_BINARY;
        st = tc_tier_set(l->ctx, &s->req);
    }
    if (st != TC_EINPROGRESS) {
        l->bad_status++;
        s->busy = 0;
        l->outstanding--;
    }
}

static void *as_main(void *p)
{
    struct as_loop *l = p;
    l->self = pthread_self();
    l->base = event_base_new();
    if (l->base == NULL || tc_tier_ctx_init(l->tier, l->base, &l->ctx) != TC_OK) {
        l->bad_status++;
        return NULL;
    }
    for (int i = 0; i < AS_INFLIGHT; i++) {
        l->slots[i].loop = l;
        as_issue(&l->slots[i]);
    }
    uint64_t deadline = tc_test_mono_ms() + 20000;
    while (l->outstanding > 0 && tc_test_mono_ms() < deadline) {
        event_base_loop(l->base, EVLOOP_ONCE);
    }
    /* Gets between writes: a synchronous answer on the async ctx. */
    struct tc_buf b = TC_BUF_INIT;
    struct tc_tier_req g = {.key = "as:0:1", .key_len = 6, .out = &b, .now_ms = tc_test_wall_ms()};
    g.done = as_done; /* required on an async ctx; never called for a get */
    enum tc_status st = tc_tier_get(l->ctx, &g);
    if (st != TC_OK && st != TC_ENOTFOUND) {
        l->bad_status++;
    }
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(l->ctx);
    event_base_free(l->base);
    return NULL;
}

static void test_async(void)
{
    struct tc_tier *t = open_tier("map_size=64M&sync=always");
    CHECK(t != NULL, "open for async");
    if (t == NULL) {
        return;
    }
    static struct as_loop loops[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&loops[i], 0, sizeof(loops[i]));
        loops[i].tier = t;
        loops[i].id = i;
        pthread_create(&th[i], NULL, as_main, &loops[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        struct as_loop *l = &loops[i];
        CHECK(l->completed == AS_OPS, "loop %d: %d of %d completed", i, l->completed, AS_OPS);
        CHECK(l->wrong_thread == 0, "loop %d: %d completions off the loop thread", i,
              l->wrong_thread);
        CHECK(l->double_done == 0, "loop %d: %d double completions", i, l->double_done);
        CHECK(l->bad_status == 0, "loop %d: %d failed operations", i, l->bad_status);
    }
    uint64_t batches = stat_of(t, "commit_batches"), ops = stat_of(t, "commit_ops");
    CHECK(ops >= 2 * AS_OPS, "commit_ops %llu", (unsigned long long)ops);
    printf("async: %d ops in %llu commits (mean batch %.1f)\n", 2 * AS_OPS,
           (unsigned long long)batches, batches ? (double)ops / (double)batches : 0.0);
    tc_tier_close(t);
}

/* ---- a damaged environment, several threads ------------------------------------- */

enum { DM_KEYS = 2000, DM_THREADS = 3 };

struct dm_arg {
    struct tc_tier *tier;
    int id;
    size_t hits, wrong, unavailable, other;
};

static void *dm_main(void *p)
{
    struct dm_arg *a = p;
    struct tc_tier_ctx *c;
    struct tc_buf b = TC_BUF_INIT;
    if (tc_tier_ctx_init(a->tier, NULL, &c) != TC_OK) {
        a->other++;
        return NULL;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < DM_KEYS; i++) {
            char key[32];
            /* Each thread starts elsewhere, so that they meet the damage at
             * about the same time. */
            snprintf(key, sizeof(key), "dm:%05d", (i + a->id * 677) % DM_KEYS);
            enum tc_status st = i % 16 == 0 ? put(c, key) : get(c, key, &b);
            if (st == TC_OK && i % 16 != 0) {
                a->hits++;
                a->wrong += !value_ok(key, &b);
            } else if (st == TC_EUNAVAIL || st == TC_ENOTFOUND) {
                a->unavailable++;
            } else if (st != TC_OK) {
                a->other += st != TC_ECORRUPT && st != TC_EIO; /* the op that met it */
            }
        }
    }
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(c);
    return NULL;
}

static void test_damaged(void)
{
    struct tc_tier *t = open_tier("map_size=16M&sync=none");
    CHECK(t != NULL, "open");
    if (t == NULL) {
        return;
    }
    struct tc_tier_ctx *c;
    tc_tier_ctx_init(t, NULL, &c);
    for (int i = 0; i < DM_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "dm:%05d", i);
        put(c, key);
    }
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    uint64_t ps, last, root;
    unsigned depth;
    unsigned char pg[65536];
    int ok = tc_test_lmdb_geometry(dir, &ps, &last) == 0 && ps <= sizeof(pg) &&
             tc_test_lmdb_db_root(dir, "tc_data", &root, &depth) == 0 && depth >= 2 &&
             tc_test_lmdb_page_read(dir, root, pg, ps) == 0 && tc_test_lmdb_page_nkeys(pg) >= 4;
    CHECK(ok, "damaged: no branch page at the root of tc_data to damage");
    if (!ok) {
        return;
    }
    t = open_tier("map_size=16M&sync=none");
    CHECK(t != NULL, "damaged: open");
    if (t == NULL) {
        return;
    }
    /* The damage comes while the tier runs (open checks every page). */
    for (unsigned i = 1; i < tc_test_lmdb_page_nkeys(pg); i += 2) {
        tc_test_lmdb_set_branch_child(pg, i, last + 1000 + i);
    }
    tc_test_lmdb_page_write(dir, root, pg, ps);
    pthread_t th[DM_THREADS];
    struct dm_arg args[DM_THREADS];
    for (int i = 0; i < DM_THREADS; i++) {
        args[i] = (struct dm_arg){.tier = t, .id = i};
        pthread_create(&th[i], NULL, dm_main, &args[i]);
    }
    size_t hits = 0, wrong = 0, other = 0;
    for (int i = 0; i < DM_THREADS; i++) {
        pthread_join(th[i], NULL);
        hits += args[i].hits;
        wrong += args[i].wrong;
        other += args[i].other;
    }
    char detail[300];
    enum tc_tier_health h = tc_tier_health(t, detail, sizeof(detail));
    CHECK(h == TC_HEALTH_DOWN, "damaged: health is %s (%s)", tc_tier_health_name(h), detail);
    CHECK(wrong == 0, "damaged: %zu wrong values", wrong);
    CHECK(other == 0, "damaged: %zu unexpected statuses", other);
    char mark[300];
    snprintf(mark, sizeof(mark), "%s/tiercache-damaged", dir);
    CHECK(access(mark, F_OK) == 0, "damaged: no marker");
    printf("damaged: %zu hits before the damage was met; then down: %s\n", hits, detail);
    tc_tier_close(t);
}

/* ---- pinned: checkpoints asked for by a writer on a full map ------------------ */

enum { PN_KEYS = 150, PN_OPS = 3000, PN_THREADS = 2 };

struct pn_arg {
    struct tc_tier *tier;
    int id;
    size_t failed, wrong;
};

/* Overwrites its own keys over and over (the map holds a few versions of
 * them at most), reading one back after each write. */
static void *pn_main(void *p)
{
    struct pn_arg *a = p;
    struct tc_tier_ctx *c;
    struct tc_buf b = TC_BUF_INIT;
    if (tc_tier_ctx_init(a->tier, NULL, &c) != TC_OK) {
        a->failed++;
        return NULL;
    }
    for (int i = 0; i < PN_OPS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "pn:%d:%03d", a->id, i % PN_KEYS);
        a->failed += put(c, key) != TC_OK;
        a->failed += get(c, key, &b) != TC_OK;
        a->wrong += !value_ok(key, &b);
    }
    tc_buf_deinit(&b);
    tc_tier_ctx_dispose(c);
    return NULL;
}

static _Atomic int pn_stop;

static void pn_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    (void)arg;
    (void)name;
    (void)v;
    (void)kind;
}

static void *pn_watch(void *p)
{
    struct tc_tier *t = p;
    char detail[300];
    while (!atomic_load(&pn_stop)) {
        tc_tier_health(t, detail, sizeof(detail));
        tc_tier_stats(t, pn_stat, NULL);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/*
 * sync=periodic with no checkpoint due (1 h) and a 1 MiB map: the pages
 * freed by overwrites stay pinned until the writer, on a full map, has the
 * syncer take a checkpoint (a write transaction of its own, beside the
 * writer's) and waits for it; readers renew meanwhile, and another thread
 * reads health and stats. No write fails, nothing is evicted.
 */
static void test_pinned(void)
{
    struct tc_tier *t = open_tier("map_size=1M&sync=periodic&sync_interval_ms=1h");
    CHECK(t != NULL, "pinned: open");
    if (t == NULL) {
        return;
    }
    pthread_t th[PN_THREADS], w;
    struct pn_arg args[PN_THREADS];
    atomic_store(&pn_stop, 0);
    pthread_create(&w, NULL, pn_watch, t);
    for (int i = 0; i < PN_THREADS; i++) {
        args[i] = (struct pn_arg){.tier = t, .id = i};
        pthread_create(&th[i], NULL, pn_main, &args[i]);
    }
    size_t failures = 0, wrong = 0;
    for (int i = 0; i < PN_THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += args[i].failed;
        wrong += args[i].wrong;
    }
    atomic_store(&pn_stop, 1);
    pthread_join(w, NULL);
    CHECK(failures == 0, "pinned: %zu operations failed", failures);
    CHECK(wrong == 0, "pinned: %zu wrong values", wrong);
    CHECK(stat_of(t, "evictions") == 0, "pinned: %llu evictions",
          (unsigned long long)stat_of(t, "evictions"));
    uint64_t syncs = stat_of(t, "syncs");
    CHECK(syncs > 1, "pinned: no checkpoint asked for by the writer");
    printf("pinned: %d writes, %llu checkpoints\n", PN_THREADS * PN_OPS, (unsigned long long)syncs);
    tc_tier_close(t);
}

static void rm_dir(void)
{
    tc_test_rm_flat_dir(dir);
}

int main(void)
{
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    static void (*const cases[])(void) = {test_kill9,          test_stale_readers, test_two_procs,
                                          test_two_procs_fill, test_async,         test_damaged,
                                          test_pinned};
    static const char *const names[] = {"kill9", "stale",   "two_procs", "two_procs_fill",
                                        "async", "damaged", "pinned"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(dir, sizeof(dir), "/tmp/tc-lmdb-stress-XXXXXX");
        if (mkdtemp(dir) == NULL) {
            fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
            return 2;
        }
        uint64_t t = tc_test_mono_ms();
        cases[i]();
        printf("%s: %llu ms\n", names[i], (unsigned long long)(tc_test_mono_ms() - t));
        rm_dir();
    }
    printf("stress_tier_lmdb: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
