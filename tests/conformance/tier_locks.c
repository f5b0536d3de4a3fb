/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Lease-lock conformance for any tier with TC_TIER_CAP_LOCK_HOST or
 * _CLUSTER, driven only through tiers/tier.h: the backend comes from
 * $TC_TEST_TIER as in tier_conformance.c (tests/support/backends.c makes a
 * fresh instance). A plain program, not Criterion: the release callback runs
 * on the tier's own thread, and the contention case uses threads, so this
 * also runs under ThreadSanitizer (Criterion aborts there: Snaipe/Criterion#274).
 *
 * Every ctx is made with a NULL event_base, so every call completes before
 * it returns (never TC_EINPROGRESS). The tier is opened twice from the same
 * URI: the second handle plays "another process" (another mapping of the
 * segment, another Redis connection).
 *
 * Prints "tier_locks: N passed, M failed" and exits non-zero on failure.
 */
#include "tests/support/clock.h"
#include "tests/support/check.h"
#include "tests/support/backends.h"
#include "tiers/tier.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct tc_tier *t1, *t2;
static struct tc_tier_ctx *c1, *c2;

static void nap_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One lock call on @p c; checks that it completed synchronously and that
 * the returned status is the request's. */
static enum tc_status lock_op(struct tc_tier_ctx *c, int op, const void *name, size_t len,
                              uint64_t ttl, struct tc_tier_lock_req *req)
{
    char keep[TC_LOCK_TOKEN_MAX];
    memcpy(keep, req->token, sizeof(keep));
    memset(req, 0, sizeof(*req));
    memcpy(req->token, keep, sizeof(keep));
    req->name = name;
    req->name_len = len;
    req->ttl_ms = ttl;
    enum tc_status st = op == 0   ? tc_tier_lock_acquire(c, req)
                        : op == 1 ? tc_tier_lock_release(c, req)
                                  : tc_tier_lock_peek(c, req);
    CHECK(st != TC_EINPROGRESS, "a NULL event_base must complete synchronously");
    CHECK(req->status == st, "status %s, req->status %s", tc_status_name(st),
          tc_status_name(req->status));
    return st;
}

static enum tc_status acquire(struct tc_tier_ctx *c, const char *name, uint64_t ttl,
                              struct tc_tier_lock_req *req)
{
    return lock_op(c, 0, name, strlen(name), ttl, req);
}

/* Releases @p name with @p token (copied into a fresh request). */
static enum tc_status release(struct tc_tier_ctx *c, const char *name, const char *token)
{
    struct tc_tier_lock_req req = {0};
    snprintf(req.token, sizeof(req.token), "%s", token);
    return lock_op(c, 1, name, strlen(name), 0, &req);
}

static enum tc_status peek(struct tc_tier_ctx *c, const char *name, struct tc_tier_lock_req *req)
{
    return lock_op(c, 2, name, strlen(name), 0, req);
}

static int token_ok(const char *t)
{
    size_t n = strnlen(t, TC_LOCK_TOKEN_MAX);
    if (n == 0 || n >= TC_LOCK_TOKEN_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '_' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

/* ---- cases ---------------------------------------------------------------------------------- */

static void case_acquire_busy_release(void)
{
    struct tc_tier_lock_req a = {0}, b = {0}, p = {0};
    CHECK(peek(c1, "job", &p) == TC_ENOTFOUND, "peek of a free lock");
    CHECK(acquire(c1, "job", 10000, &a) == TC_OK, "acquire");
    CHECK(token_ok(a.token), "token '%s': 1..47 chars of [0-9A-Za-z_-]", a.token);
    CHECK(acquire(c2, "job", 10000, &b) == TC_EEXIST, "held, seen from the other handle");
    CHECK(b.remaining_ms >= 1 && b.remaining_ms <= 10000, "remaining %llu",
          (unsigned long long)b.remaining_ms);
    CHECK(acquire(c1, "job", 10000, &b) == TC_EEXIST, "held, seen by its own handle too");
    CHECK(peek(c2, "job", &p) == TC_OK, "peek of a held lock");
    CHECK(strcmp(p.token, a.token) == 0, "peek token %s, holder %s", p.token, a.token);
    CHECK(p.remaining_ms >= 1 && p.remaining_ms <= 10000, "peek remaining %llu",
          (unsigned long long)p.remaining_ms);

    char wrong[TC_LOCK_TOKEN_MAX];
    snprintf(wrong, sizeof(wrong), "%s", a.token);
    size_t n = strlen(wrong);
    wrong[n - 1] = wrong[n - 1] == 'a' ? 'b' : 'a';
    CHECK(release(c2, "job", wrong) == TC_ENOTFOUND, "release with a wrong token");
    CHECK(release(c2, "job", "not-a-token") == TC_ENOTFOUND, "release with garbage");
    CHECK(release(c2, "other-job", a.token) == TC_ENOTFOUND, "token of another name");
    CHECK(peek(c1, "job", &p) == TC_OK && strcmp(p.token, a.token) == 0,
          "still held after the wrong releases");
    CHECK(release(c2, "job", a.token) == TC_OK, "release by token, from the other handle");
    CHECK(release(c1, "job", a.token) == TC_ENOTFOUND, "second release");
    CHECK(peek(c1, "job", &p) == TC_ENOTFOUND, "free after release");
    CHECK(acquire(c2, "job", 10000, &b) == TC_OK, "acquire again");
    CHECK(strcmp(a.token, b.token) != 0, "a new token");
    CHECK(release(c1, "job", a.token) == TC_ENOTFOUND, "the old token is stale");
    CHECK(release(c1, "job", b.token) == TC_OK, "release again");
}

static void case_lease_expiry(void)
{
    struct tc_tier_lock_req a = {0}, b = {0};
    uint64_t t0 = tc_test_mono_ms();
    CHECK(acquire(c1, "lease", 1000, &a) == TC_OK, "acquire a 1 s lease");
    CHECK(acquire(c2, "lease", 30000, &b) == TC_EEXIST, "held during its lease");
    enum tc_status st = TC_EEXIST;
    uint64_t end = t0 + 10000;
    while (st == TC_EEXIST && tc_test_mono_ms() < end) {
        nap_ms(20);
        st = acquire(c2, "lease", 30000, &b);
    }
    uint64_t took = tc_test_mono_ms() - t0;
    CHECK(st == TC_OK, "second acquirer after the lease: %s", tc_status_name(st));
    CHECK(took >= 950 && took < 10000, "taken over after %llu ms of a 1000 ms lease",
          (unsigned long long)took);
    CHECK(release(c1, "lease", a.token) == TC_ENOTFOUND, "the expired holder's release");
    struct tc_tier_lock_req p = {0};
    CHECK(peek(c1, "lease", &p) == TC_OK && strcmp(p.token, b.token) == 0, "the new holder's");
    CHECK(release(c2, "lease", b.token) == TC_OK, "the new holder's release");
}

/* Issue 16: sherlock's renew. The holder's renewals keep the lock past its
 * first lease; a stranger's token is refused (held by another: TC_EEXIST);
 * once the lease ran out, a renew finds nothing to renew. */
static enum tc_status renew(struct tc_tier_ctx *c, const char *name, const char *token,
                            uint64_t ttl)
{
    struct tc_tier_lock_req req = {0};
    snprintf(req.token, sizeof(req.token), "%s", token);
    req.name = name;
    req.name_len = strlen(name);
    req.ttl_ms = ttl;
    enum tc_status st = tc_tier_lock_renew(c, &req);
    CHECK(st != TC_EINPROGRESS && req.status == st, "renew completes synchronously");
    return st;
}

static void case_renew(void)
{
    struct tc_tier_lock_req a = {0}, b = {0}, p = {0};
    uint64_t t0 = tc_test_mono_ms();
    CHECK(acquire(c1, "renewed", 600, &a) == TC_OK, "acquire a 600 ms lease");
    for (int i = 0; i < 4; i++) {
        nap_ms(300);
        CHECK(renew(c2, "renewed", a.token, 600) == TC_OK, "the holder's renew %d (other handle)",
              i);
    }
    CHECK(tc_test_mono_ms() - t0 >= 1200, "past the first lease");
    CHECK(acquire(c2, "renewed", 1000, &b) == TC_EEXIST, "still held after its first lease");
    CHECK(peek(c1, "renewed", &p) == TC_OK && strcmp(p.token, a.token) == 0 && p.remaining_ms > 200,
          "held by the same token, lease renewed (%llu ms left)",
          (unsigned long long)p.remaining_ms);
    char wrong[TC_LOCK_TOKEN_MAX];
    snprintf(wrong, sizeof(wrong), "%s", a.token);
    size_t n = strlen(wrong);
    wrong[n - 1] = wrong[n - 1] == 'a' ? 'b' : 'a';
    CHECK(renew(c2, "renewed", wrong, 60000) == TC_EEXIST, "a stranger's renew: not the owner");
    CHECK(renew(c2, "never-taken", a.token, 60000) == TC_ENOTFOUND, "renew of a free lock");
    nap_ms(800);
    CHECK(renew(c1, "renewed", a.token, 60000) == TC_ENOTFOUND, "renew after the lease ran out");
    CHECK(acquire(c2, "renewed", 1000, &b) == TC_OK, "free for others after it");
    CHECK(release(c2, "renewed", b.token) == TC_OK, "release");
}

static void case_bad_arguments(void)
{
    struct tc_tier_lock_req r = {0};
    CHECK(lock_op(c1, 0, "x", 0, 1000, &r) == TC_EINVAL, "acquire: empty name");
    CHECK(lock_op(c1, 0, NULL, 3, 1000, &r) == TC_EINVAL, "acquire: NULL name");
    CHECK(lock_op(c1, 0, "x", 1, 0, &r) == TC_EINVAL, "acquire: ttl 0");
    static char big[TC_LOCK_NAME_MAX + 1];
    memset(big, 'n', sizeof(big));
    CHECK(lock_op(c1, 0, big, sizeof(big), 1000, &r) == TC_EINVAL, "acquire: name too long");
    CHECK(lock_op(c1, 2, big, sizeof(big), 0, &r) == TC_EINVAL, "peek: name too long");
    CHECK(lock_op(c1, 2, "x", 0, 0, &r) == TC_EINVAL, "peek: empty name");
    CHECK(lock_op(c1, 0, big, TC_LOCK_NAME_MAX, 1000, &r) == TC_OK, "acquire: longest name");
    char tok[TC_LOCK_TOKEN_MAX];
    memcpy(tok, r.token, sizeof(tok));
    CHECK(lock_op(c1, 2, big, TC_LOCK_NAME_MAX, 0, &r) == TC_OK && strcmp(r.token, tok) == 0,
          "peek: longest name");
    memcpy(r.token, tok, sizeof(tok));
    CHECK(lock_op(c1, 1, big, TC_LOCK_NAME_MAX, 0, &r) == TC_OK, "release: longest name");
    r.token[0] = '\0';
    CHECK(lock_op(c1, 1, "x", 1, 0, &r) == TC_EINVAL, "release: empty token");
    memset(r.token, 'a', sizeof(r.token)); /* no NUL */
    CHECK(lock_op(c1, 1, "x", 1, 0, &r) == TC_EINVAL, "release: unterminated token");
    memcpy(r.token, tok, sizeof(tok));
    CHECK(lock_op(c1, 1, "x", 0, 0, &r) == TC_EINVAL, "release: empty name");
}

static void case_names_apart(void)
{
    /* Binary names one byte apart; and lock names apart from cache keys. */
    const char a[5] = {'n', 0, 'x', 0, 1}, b[5] = {'n', 0, 'x', 0, 2};
    struct tc_tier_lock_req ra = {0}, rb = {0};
    CHECK(lock_op(c1, 0, a, 5, 10000, &ra) == TC_OK, "name a");
    CHECK(lock_op(c2, 0, b, 5, 10000, &rb) == TC_OK, "name b, one byte apart, is free");
    struct tc_tier_lock_req x = rb;
    CHECK(lock_op(c1, 1, a, 5, 0, &x) == TC_ENOTFOUND, "b's token does not release a");
    x = ra;
    CHECK(lock_op(c1, 2, b, 5, 0, &x) == TC_OK && strcmp(x.token, rb.token) == 0, "peek b");
    CHECK(lock_op(c1, 1, a, 5, 0, &ra) == TC_OK, "release a");
    CHECK(lock_op(c2, 2, b, 5, 0, &x) == TC_OK, "b still held after a's release");
    CHECK(lock_op(c2, 1, b, 5, 0, &rb) == TC_OK, "release b");

    struct tc_tier_req set = {.key = "shared", .key_len = 6, .value = "v", .value_len = 1};
    set.now_ms = (uint64_t)time(NULL) * 1000u;
    set.hdr.encoding = TC_ENC_BINARY;
    set.hdr.created_ms = set.now_ms;
    set.hdr.expire_ms = set.now_ms + 3600000;
    CHECK(tc_tier_set(c1, &set) == TC_OK, "set a cache key");
    struct tc_tier_lock_req l = {0};
    CHECK(acquire(c1, "shared", 10000, &l) == TC_OK, "a lock of the same name");
    struct tc_buf out;
    tc_buf_init(&out);
    struct tc_tier_req get = {.key = "shared", .key_len = 6, .now_ms = set.now_ms, .out = &out};
    CHECK(tc_tier_get(c1, &get) == TC_OK && out.len == 1 && out.data[0] == 'v',
          "the cache key is untouched by the lock");
    struct tc_tier_req del = {.key = "shared", .key_len = 6, .now_ms = set.now_ms};
    CHECK(tc_tier_del(c1, &del) == TC_OK, "delete the cache key");
    struct tc_tier_lock_req p = {0};
    CHECK(peek(c2, "shared", &p) == TC_OK, "the lock is untouched by the delete");
    CHECK(release(c1, "shared", l.token) == TC_OK, "release");
    tc_buf_deinit(&out);
}

/* ---- release callbacks ---------------------------------------------------------------------- */

struct heard {
    atomic_int calls, inside, bad;
    atomic_int slow; /* ms each call sleeps */
};

static void on_release(void *arg, const void *name, size_t len, const char *token)
{
    struct heard *h = arg;
    if (atomic_fetch_add(&h->inside, 1) != 0) {
        atomic_fetch_add(&h->bad, 1); /* the callback never runs concurrently with itself */
    }
    if (name == NULL ? len != 0 : len == 0) {
        atomic_fetch_add(&h->bad, 1);
    }
    (void)token;
    int slow = atomic_load(&h->slow);
    if (slow > 0) {
        nap_ms((unsigned)slow);
    }
    atomic_fetch_add(&h->calls, 1);
    atomic_fetch_sub(&h->inside, 1);
}

/* Acquires and releases @p name through the second handle. */
static void cycle(const char *name)
{
    struct tc_tier_lock_req r = {0};
    CHECK(acquire(c2, name, 10000, &r) == TC_OK, "acquire %s", name);
    CHECK(release(c2, name, r.token) == TC_OK, "release %s", name);
}

static int wait_calls(struct heard *h, int above, unsigned ms)
{
    uint64_t end = tc_test_mono_ms() + ms;
    while (atomic_load(&h->calls) <= above && tc_test_mono_ms() < end) {
        nap_ms(5);
    }
    return atomic_load(&h->calls) > above;
}

/* The "subscribed" gauge of a tier that has one (Redis: 1 when every
 * channel it wants is subscribed), or -1. */
static void find_subscribed(void *arg, const char *name, uint64_t value, enum tc_stat_kind kind)
{
    (void)kind;
    if (strcmp(name, "subscribed") == 0) {
        *(int64_t *)arg = (int64_t)value;
    }
}

static int64_t subscribed(struct tc_tier *t)
{
    int64_t v = -1;
    tc_tier_stats(t, find_subscribed, &v);
    return v;
}

static void case_release_callback(void)
{
    static struct heard h, h2;
    enum tc_status st = tc_tier_on_lock_release(t1, on_release, &h);
    CHECK(st == TC_OK, "on_lock_release: %s", tc_status_name(st));
    if (st != TC_OK) {
        return;
    }
    /* A tier that subscribes for notices (Redis) gets there, over every
     * transport: over a unix socket the subscriber once dropped its own
     * connection before SUBSCRIBE went out (TCP keepalive options). */
    uint64_t until = tc_test_mono_ms() + 5000;
    while (subscribed(t1) == 0 && tc_test_mono_ms() < until) {
        nap_ms(10);
    }
    CHECK(subscribed(t1) != 0, "the tier's subscriber is not subscribed within 5 s of registering");
    nap_ms(100); /* let the watcher subscribe (Redis) before the release */
    cycle("cb");
    CHECK(wait_calls(&h, 0, 5000), "no callback within 5 s of a release by the other handle");

    /* Unregistering waits for a running call and stops further ones. */
    atomic_store(&h.slow, 300);
    int before = atomic_load(&h.calls);
    cycle("cb");
    uint64_t end = tc_test_mono_ms() + 5000;
    while (atomic_load(&h.inside) == 0 && atomic_load(&h.calls) == before &&
           tc_test_mono_ms() < end) {
        nap_ms(1);
    }
    CHECK(tc_tier_on_lock_release(t1, NULL, NULL) == TC_OK, "unregister");
    CHECK(atomic_load(&h.inside) == 0, "the callback still runs after unregistering returned");
    int after = atomic_load(&h.calls);
    for (int i = 0; i < 3; i++) {
        cycle("cb");
    }
    nap_ms(1500);
    CHECK(atomic_load(&h.calls) == after, "%d calls after unregistering",
          atomic_load(&h.calls) - after);
    CHECK(tc_tier_on_lock_release(t1, NULL, NULL) == TC_OK, "unregister twice");

    /* Registering again works; replacing swaps the callback. */
    CHECK(tc_tier_on_lock_release(t1, on_release, &h2) == TC_OK, "register again");
    nap_ms(100);
    cycle("cb2");
    CHECK(wait_calls(&h2, 0, 5000), "no callback after registering again");
    CHECK(tc_tier_on_lock_release(t1, on_release, &h) == TC_OK, "replace");
    atomic_store(&h.slow, 0);
    int h2_calls = atomic_load(&h2.calls);
    after = atomic_load(&h.calls);
    cycle("cb3");
    CHECK(wait_calls(&h, after, 5000), "the replacement is called");
    CHECK(atomic_load(&h2.calls) == h2_calls, "the replaced callback is called no more");
    CHECK(atomic_load(&h.bad) == 0 && atomic_load(&h2.bad) == 0,
          "callback ran concurrently with itself, or with a bad name");
    /* Left registered: closing the tier must stop it cleanly. */
}

/* ---- contention through the tier layer ------------------------------------------------------ */

struct racer {
    struct tc_tier *tier;
    uint64_t *counter; /* plain: only touched while holding "race" */
    atomic_int *inside;
    atomic_int errors, overlaps;
    int iters;
};

static void *race(void *p)
{
    struct racer *r = p;
    struct tc_tier_ctx *c;
    if (tc_tier_ctx_init(r->tier, NULL, &c) != TC_OK) {
        atomic_fetch_add(&r->errors, 1);
        return NULL;
    }
    for (int i = 0; i < r->iters; i++) {
        struct tc_tier_lock_req req = {.name = "race", .name_len = 4, .ttl_ms = 20000};
        enum tc_status st;
        uint64_t end = tc_test_mono_ms() + 20000;
        while ((st = tc_tier_lock_acquire(c, &req)) == TC_EEXIST && tc_test_mono_ms() < end) {
            nap_ms(1);
        }
        if (st != TC_OK) {
            atomic_fetch_add(&r->errors, 1);
            continue;
        }
        if (atomic_fetch_add(r->inside, 1) != 0) {
            atomic_fetch_add(&r->overlaps, 1);
        }
        uint64_t v = *r->counter;
        nap_ms(0);
        *r->counter = v + 1;
        atomic_fetch_sub(r->inside, 1);
        if (tc_tier_lock_release(c, &req) != TC_OK) {
            atomic_fetch_add(&r->errors, 1);
        }
    }
    tc_tier_ctx_dispose(c);
    return NULL;
}

static void case_contention(void)
{
    enum { N = 4, ITERS = 150 };
    static uint64_t counter;
    static atomic_int inside;
    static struct racer r[N];
    pthread_t th[N];
    int started = 0;
    for (int i = 0; i < N; i++) {
        r[i] = (struct racer){
            .tier = i % 2 ? t2 : t1, .counter = &counter, .inside = &inside, .iters = ITERS};
        started += pthread_create(&th[i], NULL, race, &r[i]) == 0;
    }
    CHECK(started == N, "pthread_create");
    int errors = 0, overlaps = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        errors += atomic_load(&r[i].errors);
        overlaps += atomic_load(&r[i].overlaps);
    }
    CHECK(errors == 0 && overlaps == 0, "contention: %d errors, %d overlaps", errors, overlaps);
    CHECK(counter == (uint64_t)started * ITERS, "contention: %llu of %d increments",
          (unsigned long long)counter, started * ITERS);
}

int main(void)
{
    const struct tc_test_backend *be = tc_test_backend_from_env();
    if (be == NULL) {
        fprintf(stderr, "tier_locks: unknown TC_TEST_TIER\n");
        return 2;
    }
    char uri[1024], err[512] = "";
    if (be->setup(uri, sizeof(uri), "") != 0) {
        fprintf(stderr, "tier_locks: cannot set up %s\n", be->name);
        return 2;
    }
    enum tc_status st = tc_tier_open(NULL, uri, &t1, err, sizeof(err));
    CHECK(st == TC_OK, "open %s: %s", uri, err);
    if (st == TC_OK) {
        st = tc_tier_open(NULL, uri, &t2, err, sizeof(err));
        CHECK(st == TC_OK, "open %s again: %s", uri, err);
    }
    if (st == TC_OK) {
        unsigned caps = tc_tier_caps(t1);
        CHECK(caps & (TC_TIER_CAP_LOCK_HOST | TC_TIER_CAP_LOCK_CLUSTER),
              "%s has no lock capability", be->name);
        CHECK(tc_tier_ctx_init(t1, NULL, &c1) == TC_OK && tc_tier_ctx_init(t2, NULL, &c2) == TC_OK,
              "ctx_init");
    }
    if (failed == 0) {
        case_acquire_busy_release();
        case_lease_expiry();
        case_renew();
        case_bad_arguments();
        case_names_apart();
        case_release_callback();
        case_contention();
    }
    tc_tier_ctx_dispose(c1);
    tc_tier_ctx_dispose(c2);
    tc_tier_close(t1); /* with a callback still registered */
    tc_tier_close(t2);
    be->teardown();
    printf("tier_locks: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
