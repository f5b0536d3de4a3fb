/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The shm lock table (tc_ring_lock_*) with real processes, real segments and
 * SIGKILL. A plain program, not Criterion, so that it also runs under
 * ThreadSanitizer (Criterion aborts at start under TSan: Snaipe/Criterion#274).
 *
 *  1. api: tokens, peek, wrong tokens, bad arguments, names one byte apart,
 *     a full bucket (a tiny segment), stats.
 *  2. exclusion: 3 processes x 2 threads contend on 3 names and bump a
 *     plain (non-atomic) counter inside the critical section: the final
 *     counts must be exact.
 *  3. killed holder: a holder dies by SIGKILL with a 60 s lease; a process
 *     asleep in tc_ring_lock_wait wakes and takes the lock within seconds.
 *     Then 30 processes that lock and unlock in a loop are killed at random
 *     moments beside a survivor: nothing stays blocked past its lease.
 *  4. lease overrun: a live holder outstays its lease, is taken over after
 *     it, and its late release is refused.
 *  5. wake-up: processes asleep in tc_ring_lock_wait and in
 *     tc_ring_lock_wait_epoch wake on a release and on a kick, and used
 *     almost no CPU while asleep (a futex sleep, not a spin).
 *  6. garbage: the lock table scribbled over; every call still answers.
 *  7. threads: phase 2 as threads of one process (what TSan can see). Last:
 *     TSan does not support fork() after threads.
 *
 * Prints "stress_ring_lock: N passed, M failed" and exits non-zero on failure.
 */
/* MAP_ANONYMOUS (a shared results area for forked workers) is not in POSIX
 * 2008; ask glibc for its default set in this file only. */
#define _DEFAULT_SOURCE
#include "tests/support/clock.h"
#include "tests/support/check.h"
#include "shm/ring.h"
#include "shm/ring_layout.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEG_SIZE (1u << 20)
#define NAMES    3
#define PROCS    3
#define THREADS  2
#define ITERS    1500

/* Results shared by every process of a phase (an anonymous shared mapping). */
struct shared {
    uint64_t counter[NAMES];       /* plain: only touched while holding the lock */
    _Atomic uint64_t taken[NAMES]; /* acquisitions, counted atomically */
    _Atomic int inside[NAMES];     /* holders inside the critical section now */
    _Atomic uint64_t overlaps, errors, waits;
    _Atomic uint64_t progress;
    _Atomic int ready, go, stop;
    char token[TC_RING_LOCK_TOKEN_MAX];
    _Atomic int status[8];
    _Atomic uint64_t at_ms[8];  /* when a child's call returned */
    _Atomic uint64_t cpu_ms[8]; /* CPU a child used while asleep */
    _Atomic uint64_t wall_ms[8];
};

static char seg[64];

static void nap_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000u;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
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

static struct tc_ring *create(uint64_t size)
{
    char err[512] = "";
    struct tc_ring_options o = {.size = size};
    struct tc_ring *r = NULL;
    tc_ring_unlink(seg, NULL, 0);
    enum tc_status st = tc_ring_open(seg, &o, &r, err, sizeof(err));
    CHECK(st == TC_OK, "open %s: %s", seg, err);
    return st == TC_OK ? r : NULL;
}

/* A child's own attachment (a child must not use its parent's ring). */
static struct tc_ring *attach(void)
{
    struct tc_ring_options o = {.size = 0};
    struct tc_ring *r = NULL;
    return tc_ring_open(seg, &o, &r, NULL, 0) == TC_OK ? r : NULL;
}

static pid_t spawn(void (*fn)(struct shared *, int), struct shared *sh, int arg)
{
    fflush(stdout); /* or the child's exit may print our buffer again */
    pid_t pid = fork();
    if (pid == 0) {
        fn(sh, arg);
        _exit(0);
    }
    return pid;
}

/* Waits for @p pid up to @p ms; kills it if it is still running then.
 * Returns its wait status, or -1 if it had to be killed. */
static int reap(pid_t pid, unsigned ms)
{
    int status = 0;
    uint64_t end = tc_test_mono_ms() + ms;
    while (tc_test_mono_ms() < end) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            return status;
        }
        nap_ms(5);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static int exited_ok(int status)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int token_ok(const char *t)
{
    size_t n = strnlen(t, TC_RING_LOCK_TOKEN_MAX);
    if (n == 0 || n > 47) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Takes @p name, sleeping in tc_ring_lock_wait while it is busy. */
static enum tc_status take(struct tc_ring *r, const char *name, uint64_t ttl, char *token,
                           struct shared *sh)
{
    uint64_t end = tc_test_mono_ms() + 30000;
    for (;;) {
        uint64_t rem = 0;
        enum tc_status st = tc_ring_lock_acquire(r, name, strlen(name), ttl, token, &rem);
        if (st != TC_EEXIST) {
            return st;
        }
        if (rem < 1 || rem > 60000) { /* no lease in this program is longer */
            atomic_fetch_add(&sh->errors, 1);
        }
        if (tc_test_mono_ms() > end) {
            return TC_ETIMEOUT;
        }
        atomic_fetch_add(&sh->waits, 1);
        st = tc_ring_lock_wait(r, name, strlen(name), 5000);
        if (st != TC_OK && st != TC_ETIMEOUT) {
            return st;
        }
    }
}

/* ---- 1. api --------------------------------------------------------------------------------- */

static void phase_api(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    char tok[TC_RING_LOCK_TOKEN_MAX], tok2[TC_RING_LOCK_TOKEN_MAX], bad[TC_RING_LOCK_TOKEN_MAX];
    uint64_t rem = 0;
    uint32_t pid = 0;
    CHECK(tc_ring_lock_peek(r, "tok", 3, tok, &rem, &pid) == TC_ENOTFOUND, "peek of a free lock");
    CHECK(tc_ring_lock_acquire(r, "tok", 3, 10000, tok, &rem) == TC_OK, "acquire");
    CHECK(token_ok(tok), "token '%s' must be 1..47 chars of [0-9a-zA-Z_-]", tok);
    CHECK(tc_ring_lock_acquire(r, "tok", 3, 10000, tok2, &rem) == TC_EEXIST, "second acquire");
    CHECK(rem >= 1 && rem <= 10000, "remaining %llu", (unsigned long long)rem);
    CHECK(tok2[0] == '\0', "no token on a refused acquire");
    rem = 0;
    CHECK(tc_ring_lock_peek(r, "tok", 3, tok2, &rem, &pid) == TC_OK, "peek of a held lock");
    CHECK(strcmp(tok, tok2) == 0, "peek token '%s' != '%s'", tok2, tok);
    CHECK(pid == (uint32_t)getpid(), "peek pid %u", pid);
    CHECK(rem >= 1 && rem <= 10000, "peek remaining %llu", (unsigned long long)rem);
    CHECK(tc_ring_lock_peek(r, "tok", 3, NULL, NULL, NULL) == TC_OK, "peek, no outputs");
    CHECK(tc_ring_lock_peek(r, "tok2", 4, tok2, &rem, &pid) == TC_ENOTFOUND, "other name free");
    CHECK(tc_ring_lock_peek(r, "to", 2, NULL, NULL, NULL) == TC_ENOTFOUND, "prefix name free");

    /* Wrong tokens: every one refused, the lock still held by tok. */
    size_t n = strlen(tok);
    const char *wrong[] = {"x", "zzzz", "0-0000-0000000000000000", tok + 1, bad, bad, bad, bad};
    memcpy(bad, tok, n + 1);
    bad[n - 1] = bad[n - 1] == '0' ? '1' : '0';
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        if (i == 5) {
            memcpy(bad, tok, n + 1);
            bad[0] = bad[0] == '0' ? '1' : '0'; /* another entry */
        } else if (i == 6) {
            memset(bad, 'f', sizeof(bad) - 1); /* over-long, no NUL within 47 */
            bad[sizeof(bad) - 1] = '\0';
        } else if (i == 7) {
            memcpy(bad, tok, n + 1);
            bad[n - 1] = 'Z'; /* a character outside the format */
        }
        CHECK(tc_ring_lock_release(r, "tok", 3, wrong[i]) == TC_ENOTFOUND, "wrong token %zu (%s)",
              i, wrong[i]);
    }
    CHECK(tc_ring_lock_release(r, "tok2", 4, tok) == TC_ENOTFOUND, "token of another name");
    CHECK(tc_ring_lock_peek(r, "tok", 3, tok2, NULL, NULL) == TC_OK && strcmp(tok, tok2) == 0,
          "still held by the right token after the wrong ones");
    CHECK(tc_ring_lock_release(r, "tok", 3, tok) == TC_OK, "release");
    CHECK(tc_ring_lock_release(r, "tok", 3, tok) == TC_ENOTFOUND, "double release");
    CHECK(tc_ring_lock_peek(r, "tok", 3, tok2, NULL, NULL) == TC_ENOTFOUND, "free after release");
    char old[TC_RING_LOCK_TOKEN_MAX];
    memcpy(old, tok, sizeof(old));
    CHECK(tc_ring_lock_acquire(r, "tok", 3, 10000, tok, NULL) == TC_OK, "acquire again");
    CHECK(strcmp(old, tok) != 0, "a new token each time");
    CHECK(tc_ring_lock_release(r, "tok", 3, old) == TC_ENOTFOUND, "stale token");
    CHECK(tc_ring_lock_release(r, "tok", 3, tok) == TC_OK, "release again");

    /* Bad arguments. */
    CHECK(tc_ring_lock_acquire(r, "tok", 0, 10, tok, NULL) == TC_EINVAL, "empty name");
    CHECK(tc_ring_lock_acquire(r, NULL, 3, 10, tok, NULL) == TC_EINVAL, "NULL name");
    CHECK(tc_ring_lock_acquire(r, "tok", 3, 0, tok, NULL) == TC_EINVAL, "ttl 0");
    CHECK(tc_ring_lock_acquire(r, "tok", 3, TC_RING_LOCK_TTL_MAX + 1, tok, NULL) == TC_EINVAL,
          "ttl too long");
    CHECK(tc_ring_lock_acquire(r, "tok", 3, 10, NULL, NULL) == TC_EINVAL, "NULL token");
    CHECK(tc_ring_lock_release(r, "tok", 3, "") == TC_EINVAL, "empty token");
    CHECK(tc_ring_lock_release(r, "tok", 0, "x") == TC_EINVAL, "release: empty name");
    CHECK(tc_ring_lock_peek(r, "tok", 0, NULL, NULL, NULL) == TC_EINVAL, "peek: empty name");
    CHECK(tc_ring_lock_wait(r, NULL, 3, 0) == TC_EINVAL, "wait: NULL name");

    /* Names one byte apart, binary names: independent locks. */
    const char a[4] = {'a', 'b', 0, 1}, b[4] = {'a', 'b', 0, 2};
    char ta[TC_RING_LOCK_TOKEN_MAX], tb[TC_RING_LOCK_TOKEN_MAX];
    CHECK(tc_ring_lock_acquire(r, a, 4, 10000, ta, NULL) == TC_OK, "binary name a");
    CHECK(tc_ring_lock_acquire(r, b, 4, 10000, tb, NULL) == TC_OK, "binary name b");
    CHECK(tc_ring_lock_release(r, a, 4, tb) == TC_ENOTFOUND, "b's token does not release a");
    CHECK(tc_ring_lock_release(r, a, 4, ta) == TC_OK && tc_ring_lock_release(r, b, 4, tb) == TC_OK,
          "release both");
    /* A short lease ends on its own; wait returns at once for a free name. */
    CHECK(tc_ring_lock_acquire(r, "short", 5, 50, ta, NULL) == TC_OK, "short lease");
    uint64_t t0 = tc_test_mono_ms();
    CHECK(tc_ring_lock_wait(r, "short", 5, 10000) == TC_OK, "wait for a lease to end");
    uint64_t waited = tc_test_mono_ms() - t0;
    CHECK(waited < 5000, "waited %llu ms for a 50 ms lease", (unsigned long long)waited);
    CHECK(tc_ring_lock_acquire(r, "short", 5, 10000, tb, NULL) == TC_OK, "after the lease");
    CHECK(tc_ring_lock_release(r, "short", 5, ta) == TC_ENOTFOUND, "expired holder's release");
    CHECK(tc_ring_lock_release(r, "short", 5, tb) == TC_OK, "new holder's release");
    tc_ring_close(r);

    /* A tiny segment: 8 buckets of 7 entries. Holding 200 names fills
     * buckets; a name refused for want of an entry is not "held". */
    r = create(256u << 10);
    if (r == NULL) {
        return;
    }
    struct tc_ring_stats s;
    tc_ring_stats(r, &s);
    CHECK(s.lock_slots == 8 * TC_RING_LOCK_WAYS, "lock slots %llu",
          (unsigned long long)s.lock_slots);
    static char toks[200][TC_RING_LOCK_TOKEN_MAX];
    int held = 0, full = -1;
    char name[16];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        rem = 0;
        enum tc_status st = tc_ring_lock_acquire(r, name, strlen(name), 60000, toks[i], &rem);
        CHECK(st == TC_OK || st == TC_EEXIST, "acquire %s: %s", name, tc_status_name(st));
        held += st == TC_OK;
        if (st == TC_EEXIST) {
            CHECK(rem >= 1 && rem <= 60000, "full bucket remaining %llu", (unsigned long long)rem);
            CHECK(tc_ring_lock_peek(r, name, strlen(name), NULL, NULL, NULL) == TC_ENOTFOUND,
                  "%s refused for a full bucket, yet peek says held", name);
            full = i;
        }
    }
    CHECK(held <= 8 * (int)TC_RING_LOCK_WAYS && full >= 0, "held %d of 200 in 56 entries", held);
    tc_ring_stats(r, &s);
    CHECK(s.locks_held == (uint64_t)held, "stats: %llu held, expected %d",
          (unsigned long long)s.locks_held, held);
    if (full >= 0) {
        snprintf(name, sizeof(name), "n%d", full);
        t0 = tc_test_mono_ms();
        CHECK(tc_ring_lock_wait(r, name, strlen(name), 150) == TC_ETIMEOUT,
              "wait on a full bucket must sleep to its timeout");
        CHECK(tc_test_mono_ms() - t0 >= 149, "ETIMEOUT after %llu ms of 150",
              (unsigned long long)(tc_test_mono_ms() - t0));
    }
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        if (toks[i][0] != '\0') {
            CHECK(tc_ring_lock_release(r, name, strlen(name), toks[i]) == TC_OK, "release %s",
                  name);
        }
    }
    if (full >= 0) {
        snprintf(name, sizeof(name), "n%d", full);
        CHECK(tc_ring_lock_wait(r, name, strlen(name), 0) == TC_OK, "free after the releases");
        CHECK(tc_ring_lock_acquire(r, name, strlen(name), 1000, tok, NULL) == TC_OK,
              "the refused name, once its bucket emptied");
        CHECK(tc_ring_lock_release(r, name, strlen(name), tok) == TC_OK, "and release it");
    }
    tc_ring_stats(r, &s);
    CHECK(s.locks_held == 0, "stats: %llu held after releasing all",
          (unsigned long long)s.locks_held);
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

/* ---- 2. exclusion across processes ---------------------------------------------------------- */

struct contender {
    struct tc_ring *ring;
    struct shared *sh;
    uint64_t seed;
    int iters;
};

static const char *const lock_names[NAMES] = {"alpha", "beta", "gamma"};

static void *contend(void *p)
{
    struct contender *c = p;
    char token[TC_RING_LOCK_TOKEN_MAX];
    for (int i = 0; i < c->iters; i++) {
        int k = (int)(rnd(&c->seed) % NAMES);
        enum tc_status st = take(c->ring, lock_names[k], 20000, token, c->sh);
        if (st != TC_OK) {
            atomic_fetch_add(&c->sh->errors, 1);
            continue;
        }
        if (atomic_fetch_add(&c->sh->inside[k], 1) != 0) {
            atomic_fetch_add(&c->sh->overlaps, 1);
        }
        uint64_t v = c->sh->counter[k];
        if ((i & 7) == 0) {
            sched_yield(); /* let another contender run while we hold it */
        }
        c->sh->counter[k] = v + 1;
        atomic_fetch_sub(&c->sh->inside[k], 1);
        atomic_fetch_add(&c->sh->taken[k], 1);
        if (tc_ring_lock_release(c->ring, lock_names[k], strlen(lock_names[k]), token) != TC_OK) {
            atomic_fetch_add(&c->sh->errors, 1);
        }
    }
    return NULL;
}

static void contend_process(struct shared *sh, int id)
{
    struct tc_ring *r = attach();
    if (r == NULL) {
        atomic_fetch_add(&sh->errors, 1);
        return;
    }
    struct contender c[THREADS];
    pthread_t th[THREADS];
    int started = 0;
    for (int t = 0; t < THREADS; t++) {
        c[t] = (struct contender){r, sh, 0x9E3779B97F4A7C15ull * (uint64_t)(id * THREADS + t + 1),
                                  ITERS};
        started += pthread_create(&th[t], NULL, contend, &c[t]) == 0;
    }
    for (int t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
    }
    if (started != THREADS) {
        atomic_fetch_add(&sh->errors, 1);
    }
    tc_ring_close(r);
}

static void check_counts(const char *what, struct shared *sh, uint64_t expect)
{
    uint64_t total = 0, taken = 0;
    for (int k = 0; k < NAMES; k++) {
        CHECK(sh->counter[k] == atomic_load(&sh->taken[k]),
              "%s: %s counted %llu in the critical section, %llu acquisitions", what, lock_names[k],
              (unsigned long long)sh->counter[k], (unsigned long long)atomic_load(&sh->taken[k]));
        total += sh->counter[k];
        taken += atomic_load(&sh->taken[k]);
    }
    CHECK(total == expect && taken == expect, "%s: %llu increments, expected %llu", what,
          (unsigned long long)total, (unsigned long long)expect);
    CHECK(sh->overlaps == 0, "%s: %llu overlapping holders", what,
          (unsigned long long)sh->overlaps);
    CHECK(sh->errors == 0, "%s: %llu errors", what, (unsigned long long)sh->errors);
    printf("%s: %llu lock cycles, %llu waits\n", what, (unsigned long long)total,
           (unsigned long long)sh->waits);
}

static void phase_exclusion(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    struct shared *sh = shared_area();
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pids[i] = spawn(contend_process, sh, i);
        CHECK(pids[i] > 0, "fork");
    }
    for (int i = 0; i < PROCS; i++) {
        CHECK(pids[i] > 0 && exited_ok(reap(pids[i], 120000)), "contender %d", i);
    }
    check_counts("processes", sh, (uint64_t)PROCS * THREADS * ITERS);
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

/* ---- 3. killed holders ---------------------------------------------------------------------- */

static void hold_forever(struct shared *sh, int arg)
{
    (void)arg;
    struct tc_ring *r = attach();
    if (r == NULL || tc_ring_lock_acquire(r, "victim", 6, 60000, sh->token, NULL) != TC_OK) {
        atomic_fetch_add(&sh->errors, 1);
        atomic_store(&sh->ready, -1);
        return;
    }
    atomic_store(&sh->ready, 1);
    for (;;) {
        pause();
    }
}

/* Sleeps in tc_ring_lock_wait on "victim", then takes it and exits holding it. */
static void wait_then_take(struct shared *sh, int slot)
{
    struct tc_ring *r = attach();
    if (r == NULL) {
        atomic_store(&sh->status[slot], 99);
        return;
    }
    atomic_fetch_add(&sh->go, 1);
    uint64_t t0 = tc_test_mono_ms(), c0 = cpu_ms();
    enum tc_status st = tc_ring_lock_wait(r, "victim", 6, 30000);
    atomic_store(&sh->at_ms[slot], tc_test_mono_ms());
    atomic_store(&sh->wall_ms[slot], tc_test_mono_ms() - t0);
    atomic_store(&sh->cpu_ms[slot], cpu_ms() - c0);
    char token[TC_RING_LOCK_TOKEN_MAX];
    enum tc_status got = tc_ring_lock_acquire(r, "victim", 6, 60000, token, NULL);
    atomic_store(&sh->status[slot], st == TC_OK && got == TC_OK ? 0 : 1);
    /* Exits holding the lock: the next taker must reclaim it by pid. */
}

static void churn(struct shared *sh, int survivor)
{
    struct tc_ring *r = attach();
    if (r == NULL) {
        atomic_fetch_add(&sh->errors, survivor ? 1 : 0);
        return;
    }
    uint64_t seed = (uint64_t)getpid() * 0x2545F4914F6CDD1Dull;
    char token[TC_RING_LOCK_TOKEN_MAX], name[8];
    while (!atomic_load(&sh->stop)) {
        snprintf(name, sizeof(name), "c%u", (unsigned)(rnd(&seed) % 4));
        enum tc_status st = take(r, name, 3000, token, sh);
        if (st != TC_OK) {
            atomic_fetch_add(&sh->errors, survivor ? 1 : 0);
            continue;
        }
        if (rnd(&seed) % 4 == 0) {
            sched_yield();
        }
        st = tc_ring_lock_release(r, name, strlen(name), token);
        if (survivor) {
            atomic_fetch_add(&sh->progress, 1);
            atomic_fetch_add(&sh->errors, st == TC_OK ? 0 : 1);
        }
    }
    tc_ring_close(r);
}

static void phase_killed(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    struct shared *sh = shared_area();
    pid_t holder = spawn(hold_forever, sh, 0);
    uint64_t end = tc_test_mono_ms() + 10000;
    while (atomic_load(&sh->ready) == 0 && tc_test_mono_ms() < end) {
        nap_ms(2);
    }
    CHECK(atomic_load(&sh->ready) == 1, "holder did not take the lock");
    char tok[TC_RING_LOCK_TOKEN_MAX];
    uint64_t rem = 0;
    uint32_t pid = 0;
    CHECK(tc_ring_lock_peek(r, "victim", 6, tok, &rem, &pid) == TC_OK, "peek the holder");
    CHECK(pid == (uint32_t)holder && strcmp(tok, sh->token) == 0 && rem > 30000,
          "peek: pid %u (holder %d), token %s (%s), %llu ms left", pid, (int)holder, tok, sh->token,
          (unsigned long long)rem);
    CHECK(tc_ring_lock_acquire(r, "victim", 6, 1000, tok, &rem) == TC_EEXIST && rem > 30000,
          "held by a live holder: %llu ms left", (unsigned long long)rem);

    pid_t waiter = spawn(wait_then_take, sh, 0);
    end = tc_test_mono_ms() + 10000;
    while (atomic_load(&sh->go) == 0 && tc_test_mono_ms() < end) {
        nap_ms(2);
    }
    nap_ms(300); /* the waiter is asleep in the futex by now, most likely */
    uint64_t killed_at = tc_test_mono_ms();
    kill(holder, SIGKILL);
    int hs = reap(holder, 10000);
    CHECK(hs != -1 && WIFSIGNALED(hs), "holder killed");
    CHECK(exited_ok(reap(waiter, 20000)), "waiter exited");
    CHECK(atomic_load(&sh->status[0]) == 0, "the waiter woke and took the dead holder's lock");
    uint64_t at = atomic_load(&sh->at_ms[0]);
    CHECK(at >= killed_at && at - killed_at < 5000,
          "waiter woke %lld ms after the kill (lease: 60 s)", (long long)(at - killed_at));
    uint64_t wall = atomic_load(&sh->wall_ms[0]), cpu = atomic_load(&sh->cpu_ms[0]);
    CHECK(wall < 250 || cpu * 2 < wall, "waiter used %llu ms of CPU in %llu ms asleep",
          (unsigned long long)cpu, (unsigned long long)wall);
    /* The waiter exited holding the lock in turn: free for peek, and taken
     * over at once by an acquire. */
    CHECK(tc_ring_lock_peek(r, "victim", 6, NULL, NULL, NULL) == TC_ENOTFOUND,
          "a dead holder's lock peeks free");
    uint64_t t0 = tc_test_mono_ms();
    CHECK(tc_ring_lock_acquire(r, "victim", 6, 1000, tok, NULL) == TC_OK,
          "acquire over a dead holder");
    CHECK(tc_test_mono_ms() - t0 < 5000, "takeover took %llu ms",
          (unsigned long long)(tc_test_mono_ms() - t0));
    CHECK(tc_ring_lock_release(r, "victim", 6, tok) == TC_OK, "release after takeover");
    printf("killed holder: waiter woke %llu ms after SIGKILL, %llu ms CPU in %llu ms asleep\n",
           (unsigned long long)(at - killed_at), (unsigned long long)cpu, (unsigned long long)wall);

    /* Processes killed at any instruction of acquire/release. */
    memset(sh, 0, sizeof(*sh));
    pid_t surv = spawn(churn, sh, 1);
    uint64_t seed = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
    int killed = 0;
    for (int i = 0; i < 30; i++) {
        pid_t v = spawn(churn, sh, 0);
        if (v <= 0) {
            continue;
        }
        nap_ms((unsigned)(rnd(&seed) % 20));
        kill(v, SIGKILL);
        int st = reap(v, 10000);
        killed += st != -1 && WIFSIGNALED(st);
    }
    uint64_t before = atomic_load(&sh->progress);
    end = tc_test_mono_ms() + 15000;
    while (atomic_load(&sh->progress) < before + 200 && tc_test_mono_ms() < end) {
        nap_ms(5);
    }
    CHECK(atomic_load(&sh->progress) >= before + 200, "survivor stuck after the kills");
    atomic_store(&sh->stop, 1);
    CHECK(exited_ok(reap(surv, 20000)), "survivor exited");
    CHECK(sh->errors == 0, "survivor: %llu errors", (unsigned long long)sh->errors);
    /* Every name can be had within its lease (3 s) plus the pid checks. */
    t0 = tc_test_mono_ms();
    for (int k = 0; k < 4; k++) {
        char name[8];
        snprintf(name, sizeof(name), "c%d", k);
        CHECK(take(r, name, 1000, tok, sh) == TC_OK, "%s after the kills", name);
        CHECK(tc_ring_lock_release(r, name, strlen(name), tok) == TC_OK, "release %s", name);
    }
    CHECK(tc_test_mono_ms() - t0 < 10000, "names blocked %llu ms after the kills",
          (unsigned long long)(tc_test_mono_ms() - t0));
    printf("churn: %d processes killed, survivor did %llu lock cycles\n", killed,
           (unsigned long long)atomic_load(&sh->progress));
    CHECK(killed == 30, "only %d of 30 killed", killed);
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

/* ---- 4. lease overrun ----------------------------------------------------------------------- */

static void overstay(struct shared *sh, int arg)
{
    (void)arg;
    struct tc_ring *r = attach();
    atomic_store(&sh->at_ms[0], tc_test_mono_ms());
    if (r == NULL || tc_ring_lock_acquire(r, "lease", 5, 400, sh->token, NULL) != TC_OK) {
        atomic_store(&sh->ready, -1);
        return;
    }
    atomic_store(&sh->ready, 1);
    uint64_t end = tc_test_mono_ms() + 30000;
    while (atomic_load(&sh->go) == 0 && tc_test_mono_ms() < end) {
        nap_ms(5);
    }
    atomic_store(&sh->status[0], tc_ring_lock_release(r, "lease", 5, sh->token));
    tc_ring_close(r);
}

static void phase_lease(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    struct shared *sh = shared_area();
    atomic_store(&sh->status[0], 99);
    pid_t child = spawn(overstay, sh, 0);
    uint64_t end = tc_test_mono_ms() + 10000;
    while (atomic_load(&sh->ready) == 0 && tc_test_mono_ms() < end) {
        nap_ms(2);
    }
    CHECK(atomic_load(&sh->ready) == 1, "holder did not take the lock");
    char tok[TC_RING_LOCK_TOKEN_MAX];
    enum tc_status st = take(r, "lease", 30000, tok, sh);
    uint64_t got = tc_test_mono_ms(), since = got - atomic_load(&sh->at_ms[0]);
    CHECK(st == TC_OK, "take over an ended lease: %s", tc_status_name(st));
    CHECK(since >= 399 && since < 5000, "taken over %llu ms after a 400 ms lease began",
          (unsigned long long)since);
    uint32_t pid = 0;
    CHECK(tc_ring_lock_peek(r, "lease", 5, NULL, NULL, &pid) == TC_OK && pid == (uint32_t)getpid(),
          "the new holder is us (pid %u)", pid);
    atomic_store(&sh->go, 1);
    CHECK(exited_ok(reap(child, 20000)), "old holder exited");
    CHECK(atomic_load(&sh->status[0]) == TC_ENOTFOUND, "late release answered %d",
          (int)atomic_load(&sh->status[0]));
    char now[TC_RING_LOCK_TOKEN_MAX];
    CHECK(tc_ring_lock_peek(r, "lease", 5, now, NULL, NULL) == TC_OK && strcmp(now, tok) == 0,
          "still ours after the late release");
    CHECK(tc_ring_lock_release(r, "lease", 5, tok) == TC_OK, "our release");
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

/* ---- 5. wake-ups ---------------------------------------------------------------------------- */

static void sleep_on_name(struct shared *sh, int slot)
{
    struct tc_ring *r = attach();
    if (r == NULL) {
        atomic_store(&sh->status[slot], 99);
        return;
    }
    atomic_fetch_add(&sh->ready, 1);
    uint64_t t0 = tc_test_mono_ms(), c0 = cpu_ms();
    atomic_store(&sh->status[slot], tc_ring_lock_wait(r, "wake", 4, 30000));
    atomic_store(&sh->at_ms[slot], tc_test_mono_ms());
    atomic_store(&sh->wall_ms[slot], tc_test_mono_ms() - t0);
    atomic_store(&sh->cpu_ms[slot], cpu_ms() - c0);
    tc_ring_close(r);
}

static void sleep_on_epoch(struct shared *sh, int slot)
{
    struct tc_ring *r = attach();
    if (r == NULL) {
        atomic_store(&sh->status[slot], 99);
        return;
    }
    uint32_t seen = tc_ring_lock_epoch(r);
    atomic_fetch_add(&sh->ready, 1);
    enum tc_status st;
    do {
        st = tc_ring_lock_wait_epoch(r, seen, 30000);
    } while (st == TC_OK && tc_ring_lock_epoch(r) == seen); /* spurious: sleep again */
    atomic_store(&sh->status[slot], st);
    atomic_store(&sh->at_ms[slot], tc_test_mono_ms());
    tc_ring_close(r);
}

static void wait_ready(struct shared *sh, int n)
{
    uint64_t end = tc_test_mono_ms() + 10000;
    while (atomic_load(&sh->ready) < n && tc_test_mono_ms() < end) {
        nap_ms(2);
    }
    CHECK(atomic_load(&sh->ready) == n, "%d of %d sleepers ready", atomic_load(&sh->ready), n);
    nap_ms(300); /* asleep in the futex by now, most likely */
}

static void phase_wakeups(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    struct shared *sh = shared_area();
    char tok[TC_RING_LOCK_TOKEN_MAX];
    CHECK(tc_ring_lock_acquire(r, "wake", 4, 60000, tok, NULL) == TC_OK, "acquire");
    pid_t pids[4];
    for (int i = 0; i < 3; i++) {
        pids[i] = spawn(sleep_on_name, sh, i);
    }
    pids[3] = spawn(sleep_on_epoch, sh, 3);
    wait_ready(sh, 4);
    uint64_t rel = tc_test_mono_ms();
    CHECK(tc_ring_lock_release(r, "wake", 4, tok) == TC_OK, "release");
    for (int i = 0; i < 4; i++) {
        CHECK(pids[i] > 0 && exited_ok(reap(pids[i], 20000)), "sleeper %d exited", i);
        uint64_t at = atomic_load(&sh->at_ms[i]);
        CHECK(atomic_load(&sh->status[i]) == TC_OK, "sleeper %d: %s", i,
              tc_status_name((enum tc_status)atomic_load(&sh->status[i])));
        CHECK(at >= rel && at - rel < 5000, "sleeper %d woke %lld ms after the release", i,
              (long long)(at - rel));
        if (i < 3) {
            uint64_t wall = atomic_load(&sh->wall_ms[i]), cpu = atomic_load(&sh->cpu_ms[i]);
            CHECK(wall < 250 || cpu * 2 < wall, "sleeper %d used %llu ms of CPU in %llu ms", i,
                  (unsigned long long)cpu, (unsigned long long)wall);
        }
    }

    /* A kick wakes an epoch sleeper; nothing wakes one that times out. */
    memset(sh, 0, sizeof(*sh));
    pid_t p = spawn(sleep_on_epoch, sh, 0);
    wait_ready(sh, 1);
    uint64_t kick = tc_test_mono_ms();
    tc_ring_lock_kick(r);
    CHECK(p > 0 && exited_ok(reap(p, 20000)), "epoch sleeper exited");
    CHECK(atomic_load(&sh->status[0]) == TC_OK && atomic_load(&sh->at_ms[0]) - kick < 5000,
          "kick woke the epoch sleeper");
    uint32_t e = tc_ring_lock_epoch(r);
    uint64_t t0 = tc_test_mono_ms();
    CHECK(tc_ring_lock_wait_epoch(r, e, 100) == TC_ETIMEOUT, "quiet epoch times out");
    CHECK(tc_test_mono_ms() - t0 >= 99, "timed out after %llu ms of 100",
          (unsigned long long)(tc_test_mono_ms() - t0));
    CHECK(tc_ring_lock_wait_epoch(r, e + 1, 10000) == TC_OK, "an old epoch returns at once");
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

/* ---- 6. garbage ----------------------------------------------------------------------------- */

static void phase_garbage(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    char path[80];
    snprintf(path, sizeof(path), "/%s", seg);
    int fd = shm_open(path, O_RDWR, 0);
    void *map =
        fd >= 0 ? mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (fd >= 0) {
        close(fd);
    }
    CHECK(map != MAP_FAILED, "map the segment raw");
    if (map == MAP_FAILED) {
        tc_ring_close(r);
        return;
    }
    struct tc_ring_hdr *h = map;
    uint64_t *lo = (uint64_t *)((uint8_t *)map + h->lock_off);
    uint64_t *hi = (uint64_t *)((uint8_t *)map + h->index_off);
    uint64_t seed = 0x5eed;
    int bad = 0;
    for (int variant = 0; variant < 4; variant++) {
        uint64_t now = tc_test_mono_ms();
        for (uint64_t *p = lo; p < hi; p++) {
            switch (variant) {
            case 0:
                *p = rnd(&seed);
                break;
            case 1:
                *p = ~0ull;
                break;
            default:
                /* Lock words that claim or hold with a plausible deadline
                 * (under 2 s), over random descriptions. */
                *p = (p - lo) % 8 == 0 && (p - lo) % 64 != 0
                         ? (now + rnd(&seed) % 2000) << TC_RING_LOCK_DEADLINE_SHIFT |
                               (rnd(&seed) & 0xfffffc) | (1 + (variant & 1))
                         : rnd(&seed);
                break;
            }
        }
        h->lock_epoch.waiters = (uint32_t)rnd(&seed);
        char name[16], tok[TC_RING_LOCK_TOKEN_MAX];
        uint64_t rem;
        for (int i = 0; i < 600; i++) {
            int n = snprintf(name, sizeof(name), "g%d", i % 150);
            enum tc_status a = tc_ring_lock_acquire(r, name, (size_t)n, 5000, tok, &rem);
            bad += !(a == TC_OK || (a == TC_EEXIST && rem >= 1));
            enum tc_status p = tc_ring_lock_peek(r, name, (size_t)n, NULL, NULL, NULL);
            bad += !(p == TC_OK || p == TC_ENOTFOUND);
            bad += a == TC_OK && p != TC_OK;
            enum tc_status w = tc_ring_lock_wait(r, name, (size_t)n, i % 50 == 0 ? 2 : 0);
            bad += !(w == TC_OK || w == TC_ETIMEOUT);
            if (a == TC_OK) {
                /* Our own claims stay well-formed in a scribbled table. */
                bad += tc_ring_lock_release(r, name, (size_t)n, tok) != TC_OK;
            } else {
                enum tc_status rl =
                    tc_ring_lock_release(r, name, (size_t)n, "3-ffff-0123456789abcdef");
                bad += !(rl == TC_OK || rl == TC_ENOTFOUND);
            }
        }
        enum tc_status e = tc_ring_lock_wait_epoch(r, tc_ring_lock_epoch(r), 1);
        bad += !(e == TC_OK || e == TC_ETIMEOUT);
        struct tc_ring_stats s;
        tc_ring_stats(r, &s);
        bad += s.locks_held > s.lock_slots;
    }
    CHECK(bad == 0, "garbage: %d unexpected answers", bad);
    /* Cleared, the table works again. */
    memset(lo, 0, (size_t)((uint8_t *)hi - (uint8_t *)lo));
    char tok[TC_RING_LOCK_TOKEN_MAX];
    CHECK(tc_ring_lock_acquire(r, "g1", 2, 1000, tok, NULL) == TC_OK &&
              tc_ring_lock_release(r, "g1", 2, tok) == TC_OK,
          "a cleared table works");
    munmap(map, SEG_SIZE);
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

/* ---- 7. threads ----------------------------------------------------------------------------- */

static void phase_threads(void)
{
    struct tc_ring *r = create(SEG_SIZE);
    if (r == NULL) {
        return;
    }
    struct shared *sh = shared_area();
    enum { N = 4 };
    struct contender c[N];
    pthread_t th[N];
    int started = 0;
    for (int t = 0; t < N; t++) {
        c[t] = (struct contender){r, sh, 0xD1B54A32D192ED03ull * (uint64_t)(t + 1), ITERS};
        started += pthread_create(&th[t], NULL, contend, &c[t]) == 0;
    }
    CHECK(started == N, "pthread_create");
    for (int t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
    }
    check_counts("threads", sh, (uint64_t)started * ITERS);
    munmap(sh, sizeof(*sh));
    tc_ring_close(r);
    tc_ring_unlink(seg, NULL, 0);
}

int main(void)
{
    snprintf(seg, sizeof(seg), "tc-stress-lock-%ld", (long)getpid());
    phase_api();
    phase_exclusion();
    phase_killed();
    phase_lease();
    phase_wakeups();
    phase_garbage();
    phase_threads();
    tc_ring_unlink(seg, NULL, 0);
    printf("stress_ring_lock: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
