/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Concurrency stress of shm/ring.[ch] with real processes and real
 * segments. A plain program, not Criterion, so that it also runs under
 * ThreadSanitizer (Criterion aborts at start under TSan: Snaipe/Criterion#274).
 *
 *  1. processes: 2 writers + 2 readers forked on one small segment (the log
 *     laps hundreds of times) for ~2 s. Every value names its key, writer
 *     and version and ends in a checksum; every hit is verified.
 *  2. crash: a reader and a writer run while 50 victim writers are killed
 *     with SIGKILL at random moments; afterwards nobody is stuck (the
 *     survivors kept making progress) and no read was corrupt.
 *  3. threads: the same mix as 1, as threads of one process: the case TSan
 *     can see. Runs last: TSan does not support fork() after threads.
 *
 * Prints "stress_ring: N passed, M failed" and exits non-zero on failure.
 */
/* MAP_ANONYMOUS (a shared results area for forked workers) is not in POSIX
 * 2008; ask glibc for its default set in this file only. */
#define _DEFAULT_SOURCE
#include "tests/support/check.h"
#include "shm/ring.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEYS     256u
#define SEG_SIZE (1u << 20)

/* Results shared by every process of a phase (an anonymous shared mapping). */
struct shared {
    _Atomic uint64_t gets, hits, sets, bad, errors;
    _Atomic uint64_t progress[8]; /* per worker: operations done so far */
    _Atomic int stop;
};

struct worker {
    const char *name;
    struct tc_ring *ring; /* threads share the parent's; processes open their own */
    struct shared *sh;
    int id, writer;
    unsigned big; /* writers: largest value */
    int fixed;    /* writers: every value big bytes, so sets rewrite records in place */
    double seconds;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

/* "key|writer|version|" + filler + fnv of all that (8 bytes). */
static size_t make_value(unsigned char *v, const char *key, int writer, uint64_t ver, size_t len)
{
    int n = snprintf((char *)v, 64, "%s|%d|%llu|", key, writer, (unsigned long long)ver);
    size_t body = (size_t)n + len;
    for (size_t i = (size_t)n; i < body; i++) {
        v[i] = (unsigned char)(ver * 31 + i);
    }
    uint64_t h = fnv(v, body);
    memcpy(v + body, &h, 8);
    return body + 8;
}

static int value_ok(const unsigned char *v, size_t len, const char *key)
{
    size_t kl = strlen(key);
    if (len < kl + 9 || memcmp(v, key, kl) != 0 || v[kl] != '|') {
        return 0;
    }
    uint64_t h;
    memcpy(&h, v + len - 8, 8);
    return h == fnv(v, len - 8);
}

static void *work(void *p)
{
    struct worker *w = p;
    struct tc_ring *ring = w->ring;
    struct tc_ring_ctx *c;
    static const struct tc_ring_options o = {.size = SEG_SIZE};
    if (ring == NULL && tc_ring_open(w->name, &o, &ring, NULL, 0) != TC_OK) {
        atomic_fetch_add(&w->sh->errors, 1);
        return NULL;
    }
    if (tc_ring_ctx_create(ring, &c) != TC_OK) {
        atomic_fetch_add(&w->sh->errors, 1);
        return NULL;
    }
    unsigned char *v = malloc(70000);
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1) ^ (uint64_t)getpid();
    uint64_t end = mono_ns() + (uint64_t)(w->seconds * 1e9);
    uint64_t gets = 0, hits = 0, sets = 0, bad = 0, errors = 0, ver = 0;
    for (uint64_t i = 0; !atomic_load(&w->sh->stop); i++) {
        if ((i & 63) == 0 && mono_ns() > end) {
            break;
        }
        char key[16];
        snprintf(key, sizeof(key), "k%u", (unsigned)(rnd(&seed) % KEYS));
        if (w->writer) {
            size_t len = w->fixed ? w->big : (size_t)(rnd(&seed) % w->big);
            size_t n = make_value(v, key, w->id, ver++, len);
            int del = rnd(&seed) % 32 == 0;
            enum tc_status st = del ? tc_ring_del(c, key, strlen(key), 1)
                                    : tc_ring_set(c, key, strlen(key), v, n, 0, 0, 1);
            errors += st != TC_OK && st != TC_ENOTFOUND;
            /* Sets only: the ring counts deletes apart (and only those that
             * found their key), so the crash phase compares sets with sets. */
            sets += !del;
        } else {
            struct tc_ring_item it;
            enum tc_status st = tc_ring_get(c, key, strlen(key), 1, v, 70000, &it);
            gets++;
            if (st == TC_OK) {
                hits++;
                if (!value_ok(v, it.value_len, key)) {
                    bad++;
                }
            } else if (st != TC_ENOTFOUND) {
                errors++;
            }
        }
        atomic_store_explicit(&w->sh->progress[w->id], i + 1, memory_order_relaxed);
    }
    atomic_fetch_add(&w->sh->gets, gets);
    atomic_fetch_add(&w->sh->hits, hits);
    atomic_fetch_add(&w->sh->sets, sets);
    atomic_fetch_add(&w->sh->bad, bad);
    atomic_fetch_add(&w->sh->errors, errors);
    free(v);
    tc_ring_ctx_destroy(c);
    if (w->ring == NULL) {
        tc_ring_close(ring);
    }
    return NULL;
}

static pid_t spawn(struct worker *w)
{
    fflush(stdout); /* or the child's exit may print our buffer again */
    pid_t pid = fork();
    if (pid == 0) {
        work(w);
        _exit(0);
    }
    return pid;
}

static struct shared *shared_area(void)
{
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, sizeof(struct shared));
    return p;
}

static int create(const char *name, struct tc_ring **out)
{
    char err[512];
    struct tc_ring_options o = {.size = SEG_SIZE};
    tc_ring_unlink(name, NULL, 0);
    enum tc_status st = tc_ring_open(name, &o, out, err, sizeof(err));
    CHECK(st == TC_OK, "open %s: %s", name, err);
    return st == TC_OK;
}

static void phase_processes(const char *name)
{
    struct tc_ring *r;
    if (!create(name, &r)) {
        return;
    }
    struct shared *sh = shared_area();
    struct worker w[4];
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        /* Writer 1 keeps one length: its sets mostly rewrite in place. */
        w[i] = (struct worker){name, NULL, sh, i, i < 2, i == 1 ? 200 : 9000, i == 1, 2.0};
        pids[i] = spawn(&w[i]);
        CHECK(pids[i] > 0, "fork");
    }
    for (int i = 0; i < 4; i++) {
        int status;
        CHECK(pids[i] > 0 && waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0,
              "worker %d did not exit cleanly", i);
    }
    struct tc_ring_stats s;
    tc_ring_stats(r, &s);
    printf("processes: %llu gets, %llu hits, %llu sets; ring saw %llu torn copies, %llu bad "
           "records, %llu lost sets\n",
           (unsigned long long)sh->gets, (unsigned long long)sh->hits, (unsigned long long)sh->sets,
           (unsigned long long)s.torn, (unsigned long long)s.corrupt,
           (unsigned long long)s.lost_sets);
    CHECK(sh->bad == 0, "processes: %llu corrupt reads", (unsigned long long)sh->bad);
    CHECK(sh->errors == 0, "processes: %llu errors", (unsigned long long)sh->errors);
    CHECK(sh->hits > 0, "processes: no hit, nothing was verified");
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(name, NULL, 0);
}

static void phase_crash(const char *name)
{
    struct tc_ring *r;
    if (!create(name, &r)) {
        return;
    }
    struct shared *sh = shared_area();
    /* Survivors run until told to stop; victims would run for 10 s. */
    struct worker reader = {name, NULL, sh, 0, 0, 0, 0, 60.0};
    struct worker writer = {name, NULL, sh, 1, 1, 3000, 0, 60.0};
    pid_t rp = spawn(&reader), wp = spawn(&writer);
    CHECK(rp > 0 && wp > 0, "fork");
    uint64_t seed = (uint64_t)getpid() * 0x2545F4914F6CDD1Dull;
    int killed = 0;
    for (int i = 0; i < 50; i++) {
        /* Odd victims rewrite in place, so some die holding a BUSY bit. */
        struct worker victim = {name, NULL, sh, 2, 1, i % 2 ? 100 : 60000, i % 2, 10.0};
        pid_t vp = spawn(&victim);
        if (vp <= 0) {
            continue;
        }
        struct timespec ts = {0, (long)(rnd(&seed) % 8000) * 1000L};
        nanosleep(&ts, NULL);
        kill(vp, SIGKILL);
        int status;
        if (waitpid(vp, &status, 0) == vp && WIFSIGNALED(status)) {
            killed++;
        }
    }
    /* Not stuck: both survivors still make progress after the last kill. */
    uint64_t before[2] = {atomic_load(&sh->progress[0]), atomic_load(&sh->progress[1])};
    uint64_t deadline = mono_ns() + 5000000000ull;
    while ((atomic_load(&sh->progress[0]) < before[0] + 1000 ||
            atomic_load(&sh->progress[1]) < before[1] + 1000) &&
           mono_ns() < deadline) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    CHECK(atomic_load(&sh->progress[0]) >= before[0] + 1000, "reader stuck after the kills");
    CHECK(atomic_load(&sh->progress[1]) >= before[1] + 1000, "writer stuck after the kills");
    atomic_store(&sh->stop, 1);
    int status;
    CHECK(waitpid(rp, &status, 0) == rp && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "reader did not exit cleanly");
    CHECK(waitpid(wp, &status, 0) == wp && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "writer did not exit cleanly");
    CHECK(killed == 50, "only %d victims were killed", killed);
    /* Newcomers attach and take every stat slot in the segment (128, two
     * rings' worth of ctxs): that works only if the slots of the 50 killed
     * writers are reclaimed from their dead pids. */
    struct tc_ring *r2;
    struct tc_ring_options o2 = {.size = SEG_SIZE};
    CHECK(tc_ring_open(name, &o2, &r2, NULL, 0) == TC_OK, "second attach");
    struct tc_ring_ctx *cs[TC_RING_MAX_CTX], *cs2[TC_RING_MAX_CTX];
    int got = 0, got2 = 0;
    for (unsigned i = 0; i < TC_RING_MAX_CTX; i++) {
        got += tc_ring_ctx_create(r, &cs[i]) == TC_OK;
        got2 += tc_ring_ctx_create(r2, &cs2[i]) == TC_OK;
    }
    CHECK(got == TC_RING_MAX_CTX && got2 == TC_RING_MAX_CTX, "ctxs after the crashes: %d + %d", got,
          got2);
    struct tc_ring_stats rs;
    tc_ring_stats(r, &rs);
    CHECK(rs.ctxs == 2 * TC_RING_MAX_CTX, "stat slots owned: %llu (dead ones not reclaimed?)",
          (unsigned long long)rs.ctxs);
    CHECK(rs.sets >= sh->sets, "counters of dead writers lost: %llu < %llu",
          (unsigned long long)rs.sets, (unsigned long long)sh->sets);
    tc_ring_close(r2);
    CHECK(tc_ring_set(cs[0], "after", 5, "ok", 2, 0, 0, 1) == TC_OK, "set after the crashes");
    char b[8];
    struct tc_ring_item it;
    CHECK(tc_ring_get(cs[0], "after", 5, 1, b, sizeof(b), &it) == TC_OK && it.value_len == 2,
          "get after the crashes");
    for (int i = 0; i < got; i++) {
        tc_ring_ctx_destroy(cs[i]);
    }
    printf("crash: %d writers killed; survivors did %llu gets (%llu hits), %llu sets\n", killed,
           (unsigned long long)sh->gets, (unsigned long long)sh->hits,
           (unsigned long long)sh->sets);
    CHECK(sh->bad == 0, "crash: %llu corrupt reads", (unsigned long long)sh->bad);
    CHECK(sh->errors == 0, "crash: %llu errors", (unsigned long long)sh->errors);
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(name, NULL, 0);
}

static void phase_threads(const char *name)
{
    struct tc_ring *r;
    if (!create(name, &r)) {
        return;
    }
    struct shared *sh = shared_area();
    struct worker w[4];
    pthread_t th[4];
    int started = 0;
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){name, r, sh, i, i < 2, i == 1 ? 200 : 9000, i == 1, 1.0};
        if (pthread_create(&th[i], NULL, work, &w[i]) == 0) {
            started++;
        }
    }
    CHECK(started == 4, "pthread_create");
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    printf("threads: %llu gets, %llu hits, %llu sets\n", (unsigned long long)sh->gets,
           (unsigned long long)sh->hits, (unsigned long long)sh->sets);
    CHECK(sh->bad == 0, "threads: %llu corrupt reads", (unsigned long long)sh->bad);
    CHECK(sh->errors == 0, "threads: %llu errors", (unsigned long long)sh->errors);
    CHECK(sh->hits > 0, "threads: no hit, nothing was verified");
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(name, NULL, 0);
}

int main(void)
{
    char name[64];
    snprintf(name, sizeof(name), "tc-stress-ring-%ld", (long)getpid());
    phase_processes(name);
    phase_crash(name);
    phase_threads(name);
    printf("stress_ring: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
