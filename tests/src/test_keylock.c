/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of the per-key locks (src/keylock.h), driven as the server
 * drives them but on one thread: each "worker" is an event_base with its
 * home, and the test turns the loops by hand until the callbacks it waits
 * for have run. Worker-pool scope has two homes, so that a request often
 * crosses from its own worker to the name's home and back. Host scope opens
 * one shm:// segment twice, one handle and one lock table per "process".
 *
 * The keylock reads the wall clock itself (tc_clock_ms()), so the lease and
 * deadline cases wait for real, with leases of a few hundred ms.
 */
#include "shm/ring.h"
#include "src/keylock.h"
#include "src/clock.h"

#include <criterion/criterion.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NHOMES 2

struct proc {
    struct tc_keylock *kl;
    struct event_base *base[NHOMES];
    struct tc_keylock_home *home[NHOMES];
    struct tc_tier *tier; /* host scope only */
    struct tc_tier_ctx *ctx[NHOMES];
};

static struct proc pa, pb;
static char shm_name[64];

static void proc_init(struct proc *p, size_t nhomes, const char *lock_uri)
{
    memset(p, 0, sizeof(*p));
    if (lock_uri != NULL) {
        char err[256];
        cr_assert_eq(tc_tier_open(NULL, lock_uri, &p->tier, err, sizeof(err)), TC_OK, "%s", err);
    }
    p->kl = tc_keylock_create(nhomes, p->tier);
    cr_assert_not_null(p->kl);
    for (size_t i = 0; i < nhomes; i++) {
        p->base[i] = event_base_new();
        cr_assert_not_null(p->base[i]);
        if (p->tier != NULL) {
            cr_assert_eq(tc_tier_ctx_init(p->tier, p->base[i], &p->ctx[i]), TC_OK);
        }
        cr_assert_eq(tc_keylock_home_init(p->kl, i, p->base[i], p->ctx[i], &p->home[i]), TC_OK);
    }
}

/* As the server stops: shut down, dispose the lock ctxs, then the homes. */
static void proc_fini(struct proc *p)
{
    if (p->kl == NULL) {
        return;
    }
    for (size_t i = 0; i < NHOMES && p->home[i] != NULL; i++) {
        tc_keylock_home_shutdown(p->home[i]);
    }
    for (size_t i = 0; i < NHOMES && p->home[i] != NULL; i++) {
        tc_tier_ctx_dispose(p->ctx[i]);
        tc_keylock_home_dispose(p->home[i]);
    }
    tc_keylock_destroy(p->kl);
    for (size_t i = 0; i < NHOMES && p->base[i] != NULL; i++) {
        event_base_free(p->base[i]);
    }
    tc_tier_close(p->tier);
    memset(p, 0, sizeof(*p));
}

static void setup(void)
{
    /* Releases in the shm segment are heard on the tier's own thread,
     * which posts to the homes' mailboxes (as main() does). */
    cr_assert_eq(evthread_use_pthreads(), 0);
}

static void teardown(void)
{
    proc_fini(&pa);
    proc_fini(&pb);
    if (shm_name[0] != '\0') {
        tc_ring_unlink(shm_name, NULL, 0);
        shm_name[0] = '\0';
    }
}

TestSuite(keylock, .init = setup, .fini = teardown, .timeout = 30);

static void nap_ms(unsigned ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Turns every loop once. */
static void spin(void)
{
    struct proc *ps[] = {&pa, &pb};
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < NHOMES; i++) {
            if (ps[k]->base[i] != NULL) {
                event_base_loop(ps[k]->base[i], EVLOOP_NONBLOCK);
            }
        }
    }
}

/* Turns the loops until *flag is non-zero or @p ms have passed. */
static int spin_until(const int *flag, unsigned ms)
{
    uint64_t end = tc_clock_ms() + ms;
    while (!*flag && tc_clock_ms() < end) {
        spin();
        nap_ms(1);
    }
    spin();
    return *flag;
}

/* Turns the loops for @p ms. */
static void spin_for(unsigned ms)
{
    int never = 0;
    spin_until(&never, ms);
}

struct waiter {
    struct tc_keylock_waiter kw;
    int calls;
    uint64_t at_ms; /* when the callback ran */
};

static void waiter_cb(struct tc_keylock_waiter *kw)
{
    struct waiter *w = kw->arg;
    w->calls++;
    w->at_ms = tc_clock_ms();
}

/* Starts an acquire of @p name from @p home; the callback never runs inside. */
static void acquire(struct tc_keylock_home *home, struct waiter *w, const char *name,
                    uint64_t ttl_ms, uint64_t wait_ms)
{
    memset(w, 0, sizeof(*w));
    w->kw.ttl_ms = ttl_ms;
    w->kw.deadline_ms = wait_ms ? tc_clock_ms() + wait_ms : 0;
    w->kw.cb = waiter_cb;
    w->kw.arg = w;
    tc_keylock_acquire(home, &w->kw, name, strlen(name));
    cr_assert_eq(w->calls, 0, "the callback ran before tc_keylock_acquire returned");
}

/* Acquires and waits for the answer. */
static enum tc_keylock_outcome acquire_now(struct tc_keylock_home *home, struct waiter *w,
                                           const char *name, uint64_t ttl_ms)
{
    acquire(home, w, name, ttl_ms, 0);
    cr_assert(spin_until(&w->calls, 5000), "no answer to an acquire of %s", name);
    return w->kw.outcome;
}

struct done {
    int calls;
    enum tc_status st;
    uint64_t remaining_ms;
    char token[TC_LOCK_TOKEN_MAX];
};

static void done_cb(void *arg, enum tc_status st, uint64_t remaining_ms, const char *token)
{
    struct done *d = arg;
    d->calls++;
    d->st = st;
    d->remaining_ms = remaining_ms;
    snprintf(d->token, sizeof(d->token), "%s", token ? token : "");
}

static struct done release(struct tc_keylock_home *home, const char *name, const char *token,
                           struct tc_keylock_result *result)
{
    struct done d = {0};
    tc_keylock_release(home, name, strlen(name), token, result, done_cb, &d);
    cr_assert_eq(d.calls, 0, "the release answered inside the call");
    cr_assert(spin_until(&d.calls, 5000), "no answer to a release");
    cr_assert_eq(d.calls, 1);
    return d;
}

static struct done peek(struct tc_keylock_home *home, const char *name)
{
    struct done d = {0};
    tc_keylock_peek(home, name, strlen(name), done_cb, &d);
    cr_assert(spin_until(&d.calls, 5000), "no answer to a peek");
    cr_assert_eq(d.calls, 1);
    return d;
}

/* A holder's answer for its waiters; counts how often it is freed. */
struct answer {
    struct tc_keylock_result base;
    int *freed;
};

static void answer_free(struct tc_keylock_result *r)
{
    struct answer *a = (struct answer *)r;
    (*a->freed)++;
    free(a);
}

static struct tc_keylock_result *answer_new(int *freed)
{
    struct answer *a = calloc(1, sizeof(*a));
    cr_assert_not_null(a);
    atomic_init(&a->base.refs, 1);
    a->base.free = answer_free;
    a->freed = freed;
    return &a->base;
}

/* ---- worker-pool scope ---------------------------------------------------------- */

Test(keylock, one_holder_at_a_time)
{
    proc_init(&pa, NHOMES, NULL);
    cr_expect_str_eq(tc_keylock_scope(pa.kl), "worker-pool");
    struct waiter a, b;
    cr_assert_eq(acquire_now(pa.home[0], &a, "job", 5000), TC_KEYLOCK_ACQUIRED);
    cr_expect_eq(a.calls, 1);
    cr_expect_neq(a.kw.token[0], '\0');
    cr_expect_eq(a.kw.remaining_ms, 5000u);
    cr_expect_eq(tc_keylock_entries(pa.kl), 1u);

    /* From either worker, a try without waiting is refused with the time left. */
    for (size_t i = 0; i < NHOMES; i++) {
        cr_expect_eq(acquire_now(pa.home[i], &b, "job", 5000), TC_KEYLOCK_TIMEOUT);
        cr_expect(b.kw.remaining_ms > 0 && b.kw.remaining_ms <= 5000, "remaining %llu ms",
                  (unsigned long long)b.kw.remaining_ms);
        cr_expect_eq(b.kw.token[0], '\0');
    }
    struct done d = peek(pa.home[1], "job");
    cr_expect_eq(d.st, TC_OK);
    cr_expect_str_eq(d.token, a.kw.token);

    /* Another name is independent. */
    cr_expect_eq(acquire_now(pa.home[1], &b, "other", 5000), TC_KEYLOCK_ACQUIRED);
    cr_expect_str_neq(b.kw.token, a.kw.token);
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_acquired), 2u);

    cr_expect_eq(release(pa.home[1], "job", a.kw.token, NULL).st, TC_OK);
    cr_expect_eq(release(pa.home[0], "other", b.kw.token, NULL).st, TC_OK);
    cr_expect_eq(peek(pa.home[0], "job").st, TC_ENOTFOUND);
    cr_expect_eq(tc_keylock_entries(pa.kl), 0u, "a free name kept its entry");
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_released), 2u);
}

Test(keylock, waiters_are_woken_by_the_release_with_the_result)
{
    proc_init(&pa, NHOMES, NULL);
    struct waiter h, w[4];
    cr_assert_eq(acquire_now(pa.home[0], &h, "job", 5000), TC_KEYLOCK_ACQUIRED);
    for (size_t i = 0; i < 4; i++) {
        acquire(pa.home[i % NHOMES], &w[i], "job", 5000, 5000);
    }
    spin_for(100);
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(w[i].calls, 0, "waiter %zu answered while the lock was held", i);
    }
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_waits), 4u);

    int freed = 0;
    struct tc_keylock_result *res = answer_new(&freed);
    cr_expect_eq(release(pa.home[1], "job", h.kw.token, res).st, TC_OK);
    for (size_t i = 0; i < 4; i++) {
        cr_assert(spin_until(&w[i].calls, 2000), "waiter %zu not woken", i);
        cr_expect_eq(w[i].calls, 1);
        cr_expect_eq(w[i].kw.outcome, TC_KEYLOCK_WOKEN);
        cr_expect_eq(w[i].kw.result, res, "waiter %zu did not get the holder's result", i);
    }
    cr_expect_eq(freed, 0, "the result was freed while waiters held it");
    for (size_t i = 0; i < 4; i++) {
        tc_keylock_result_unref(w[i].kw.result);
    }
    cr_expect_eq(freed, 1, "the result was freed %d times", freed);
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_woken), 4u);

    /* Woken, they recheck, all at once; exactly one becomes the next holder. */
    for (size_t i = 0; i < 4; i++) {
        acquire(pa.home[i % NHOMES], &w[i], "job", 5000, 0);
    }
    int holders = 0;
    for (size_t i = 0; i < 4; i++) {
        cr_assert(spin_until(&w[i].calls, 2000));
        holders += w[i].kw.outcome == TC_KEYLOCK_ACQUIRED;
    }
    cr_expect_eq(holders, 1);
}

Test(keylock, a_waiter_gives_up_at_its_deadline)
{
    proc_init(&pa, NHOMES, NULL);
    struct waiter h, w;
    cr_assert_eq(acquire_now(pa.home[0], &h, "job", 10000), TC_KEYLOCK_ACQUIRED);
    uint64_t t0 = tc_clock_ms();
    acquire(pa.home[1], &w, "job", 5000, 300);
    cr_assert(spin_until(&w.calls, 5000));
    cr_expect_eq(w.kw.outcome, TC_KEYLOCK_TIMEOUT);
    cr_expect(w.at_ms >= t0 + 300, "gave up after %llu ms", (unsigned long long)(w.at_ms - t0));
    cr_expect(w.at_ms < t0 + 3000, "gave up after %llu ms", (unsigned long long)(w.at_ms - t0));
    cr_expect(w.kw.remaining_ms > 0 && w.kw.remaining_ms <= 10000);
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_timeouts), 1u);
    struct done d = peek(pa.home[0], "job");
    cr_expect_eq(d.st, TC_OK, "the holder lost the lock to a waiter's timeout");
    cr_expect_str_eq(d.token, h.kw.token);
}

Test(keylock, an_expired_lease_hands_the_lock_to_one_waiter)
{
    proc_init(&pa, NHOMES, NULL);
    struct waiter h, w[3];
    uint64_t t0 = tc_clock_ms();
    cr_assert_eq(acquire_now(pa.home[0], &h, "job", 300), TC_KEYLOCK_ACQUIRED);
    for (size_t i = 0; i < 3; i++) {
        acquire(pa.home[(i + 1) % NHOMES], &w[i], "job", 5000, 5000);
    }
    for (size_t i = 0; i < 3; i++) {
        cr_assert(spin_until(&w[i].calls, 5000), "waiter %zu not woken", i);
        cr_expect_eq(w[i].kw.outcome, TC_KEYLOCK_WOKEN);
        cr_expect_null(w[i].kw.result, "an expired lease has no result to hand over");
        cr_expect(w[i].at_ms >= t0 + 300, "woken after %llu ms, before the lease ended",
                  (unsigned long long)(w[i].at_ms - t0));
    }
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_leases_expired), 1u);
    int holders = 0;
    struct waiter *next = NULL;
    for (size_t i = 0; i < 3; i++) {
        if (acquire_now(pa.home[i % NHOMES], &w[i], "job", 5000) == TC_KEYLOCK_ACQUIRED) {
            holders++;
            next = &w[i];
        }
    }
    cr_assert_eq(holders, 1);
    /* The old holder's late release is refused and leaves the new one be. */
    cr_expect_eq(release(pa.home[0], "job", h.kw.token, NULL).st, TC_ENOTFOUND);
    struct done d = peek(pa.home[1], "job");
    cr_expect_eq(d.st, TC_OK);
    cr_expect_str_eq(d.token, next->kw.token);
}

Test(keylock, a_release_with_another_token_is_refused)
{
    proc_init(&pa, NHOMES, NULL);
    struct waiter h, w;
    cr_assert_eq(acquire_now(pa.home[0], &h, "job", 5000), TC_KEYLOCK_ACQUIRED);
    acquire(pa.home[1], &w, "job", 5000, 5000);
    const char *wrong[] = {"p00000000000000000000000000000000", "not-a-local-token", ""};
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(release(pa.home[i % NHOMES], "job", wrong[i], NULL).st, TC_ENOTFOUND,
                     "token '%s'", wrong[i]);
    }
    /* A token of another name does not release this one either. */
    struct waiter o;
    cr_assert_eq(acquire_now(pa.home[0], &o, "other", 5000), TC_KEYLOCK_ACQUIRED);
    cr_expect_eq(release(pa.home[0], "job", o.kw.token, NULL).st, TC_ENOTFOUND);
    cr_expect_eq(tc_keylock_stat(pa.kl, TC_KEYLOCK_release_refused), 4u);
    spin_for(50);
    cr_expect_eq(w.calls, 0, "a refused release woke the waiter");
    cr_expect_str_eq(peek(pa.home[1], "job").token, h.kw.token);

    cr_expect_eq(release(pa.home[0], "job", h.kw.token, NULL).st, TC_OK);
    cr_expect(spin_until(&w.calls, 2000));
    cr_expect_eq(w.kw.outcome, TC_KEYLOCK_WOKEN);
    /* Released twice: the second is refused. */
    cr_expect_eq(release(pa.home[0], "job", h.kw.token, NULL).st, TC_ENOTFOUND);
}

Test(keylock, a_poke_wakes_the_waiters_and_keeps_the_holder)
{
    proc_init(&pa, NHOMES, NULL);
    struct waiter h, w;
    cr_assert_eq(acquire_now(pa.home[0], &h, "job", 5000), TC_KEYLOCK_ACQUIRED);
    acquire(pa.home[1], &w, "job", 5000, 5000);
    spin_for(20);
    tc_keylock_poke(pa.home[1], "job", 3);
    cr_assert(spin_until(&w.calls, 2000));
    cr_expect_eq(w.kw.outcome, TC_KEYLOCK_WOKEN);
    cr_expect_str_eq(peek(pa.home[0], "job").token, h.kw.token);
}

Test(keylock, shutdown_fails_the_parked_waiters)
{
    proc_init(&pa, NHOMES, NULL);
    struct waiter h, w[2];
    cr_assert_eq(acquire_now(pa.home[0], &h, "job", 5000), TC_KEYLOCK_ACQUIRED);
    acquire(pa.home[0], &w[0], "job", 5000, 5000);
    acquire(pa.home[1], &w[1], "job", 5000, 5000);
    spin_for(20);
    for (size_t i = 0; i < NHOMES; i++) {
        tc_keylock_home_shutdown(pa.home[i]);
    }
    for (size_t i = 0; i < 2; i++) {
        cr_assert(spin_until(&w[i].calls, 2000));
        cr_expect_eq(w[i].kw.outcome, TC_KEYLOCK_FAILED);
        cr_expect_eq(w[i].kw.status, TC_EUNAVAIL);
    }
    /* And nothing new starts. */
    struct waiter late;
    cr_expect_eq(acquire_now(pa.home[1], &late, "new", 5000), TC_KEYLOCK_FAILED);
}

Test(keylock, names_of_any_length_and_bytes)
{
    proc_init(&pa, NHOMES, NULL);
    char name[300]; /* longer than the waiter's inline buffer */
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    struct waiter a, b;
    cr_assert_eq(acquire_now(pa.home[0], &a, name, 5000), TC_KEYLOCK_ACQUIRED);
    name[sizeof(name) - 2] = 'm'; /* differs in the last byte only */
    cr_expect_eq(acquire_now(pa.home[1], &b, name, 5000), TC_KEYLOCK_ACQUIRED);
    cr_expect_eq(release(pa.home[1], name, b.kw.token, NULL).st, TC_OK);
    name[sizeof(name) - 2] = 'n';
    cr_expect_eq(release(pa.home[1], name, a.kw.token, NULL).st, TC_OK);
}

/* ---- host scope: two "processes" over one shm segment ----------------------------------- */

static void open_two_processes(void)
{
    static unsigned n;
    char uri[128];
    snprintf(shm_name, sizeof(shm_name), "tc-test-kl-%ld-%u", (long)getpid(), n++);
    tc_ring_unlink(shm_name, NULL, 0);
    snprintf(uri, sizeof(uri), "shm://%s?size=1M", shm_name);
    proc_init(&pa, 1, uri);
    proc_init(&pb, 1, uri);
    cr_expect_str_eq(tc_keylock_scope(pa.kl), "host");
}

Test(keylock, host_scope_one_holder_across_processes)
{
    open_two_processes();
    struct waiter a, b;
    cr_assert_eq(acquire_now(pa.home[0], &a, "job", 5000), TC_KEYLOCK_ACQUIRED);
    cr_expect_eq(acquire_now(pb.home[0], &b, "job", 5000), TC_KEYLOCK_TIMEOUT);
    cr_expect(b.kw.remaining_ms > 0 && b.kw.remaining_ms <= 5000);
    struct done d = peek(pb.home[0], "job");
    cr_expect_eq(d.st, TC_OK);
    cr_expect_str_eq(d.token, a.kw.token, "the other process sees another holder");
    /* The other process cannot release it, even with a made-up token. */
    cr_expect_eq(release(pb.home[0], "job", "forged", NULL).st, TC_ENOTFOUND);
    /* But the holder's token works from there (a PUT reaching another
     * server), and the holder's process hears of it: its waiter wakes long
     * before the lease would have ended. */
    struct waiter w;
    acquire(pa.home[0], &w, "job", 5000, 5000);
    spin_for(20);
    cr_assert_eq(w.calls, 0);
    cr_expect_eq(release(pb.home[0], "job", a.kw.token, NULL).st, TC_OK);
    cr_assert(spin_until(&w.calls, 1000), "the holder's process never heard of the release");
    cr_expect_eq(w.kw.outcome, TC_KEYLOCK_WOKEN);
    cr_expect_eq(acquire_now(pb.home[0], &b, "job", 5000), TC_KEYLOCK_ACQUIRED);
}

Test(keylock, host_scope_release_wakes_a_waiter_in_the_other_process)
{
    open_two_processes();
    struct waiter a, b;
    cr_assert_eq(acquire_now(pa.home[0], &a, "job", 10000), TC_KEYLOCK_ACQUIRED);
    acquire(pb.home[0], &b, "job", 5000, 8000);
    spin_for(50);
    cr_assert_eq(b.calls, 0, "the waiter answered while the lock was held elsewhere");
    uint64_t released = tc_clock_ms();
    cr_expect_eq(release(pa.home[0], "job", a.kw.token, NULL).st, TC_OK);
    cr_assert(spin_until(&b.calls, 5000), "the waiter in the other process was never woken");
    cr_expect_eq(b.kw.outcome, TC_KEYLOCK_WOKEN);
    /* By the segment's release notification, not by its own next look at
     * the lock (every TC_KEYLOCK_POLL_MS, the first one ~200 ms from now). */
    cr_expect(b.at_ms < released + TC_KEYLOCK_POLL_MS / 2, "woken %llu ms after the release",
              (unsigned long long)(b.at_ms - released));
    cr_expect_null(b.kw.result, "a result crossed processes");
    cr_expect_eq(acquire_now(pb.home[0], &b, "job", 5000), TC_KEYLOCK_ACQUIRED);
    cr_expect_eq(acquire_now(pa.home[0], &a, "job", 5000), TC_KEYLOCK_TIMEOUT);
}

Test(keylock, host_scope_an_expired_lease_elsewhere_lets_a_waiter_in)
{
    open_two_processes();
    struct waiter a, b;
    uint64_t t0 = tc_clock_ms();
    cr_assert_eq(acquire_now(pa.home[0], &a, "job", 300), TC_KEYLOCK_ACQUIRED);
    acquire(pb.home[0], &b, "job", 5000, 8000);
    cr_assert(spin_until(&b.calls, 5000));
    cr_expect_eq(b.kw.outcome, TC_KEYLOCK_WOKEN);
    cr_expect(b.at_ms >= t0 + 300, "woken after %llu ms", (unsigned long long)(b.at_ms - t0));
    cr_expect_eq(acquire_now(pb.home[0], &b, "job", 5000), TC_KEYLOCK_ACQUIRED);
}
