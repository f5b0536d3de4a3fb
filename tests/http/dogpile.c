/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Dogpile protection through the real binary: two tiercache processes that
 * share one shm segment (host scope) or also one private redis-server
 * (cluster scope), hundreds of clients at once, a holder killed with
 * SIGKILL. A plain program (not Criterion) so that the TSan pass reruns it
 * against the TSan build of the server. Prints "dogpile: N passed, M failed".
 */
#define _GNU_SOURCE
#include "tests/support/clock.h"
#include "tests/support/burst.h"
#include "tests/support/check.h"
#include "tests/support/origin.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct tc_redis_server *redis;
static struct tc_test_server A, B;
static struct tc_test_origin origin;
static char shm_name[64];
static const char *scope; /* "cluster", "host" or "worker-pool" */
static int single;        /* worker-pool: B is A (one process) */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int start_one(struct tc_test_server *s, const char *const *extra)
{
    char shm[128], red[256];
    const char *args[32];
    int n = 0;
    snprintf(shm, sizeof(shm), single ? "mem://?size=16M" : "shm://%s?size=16M", shm_name);
    args[n++] = "--workers";
    args[n++] = "2";
    args[n++] = "--tier";
    args[n++] = shm;
    if (strcmp(scope, "cluster") == 0) {
        snprintf(red, sizeof(red), "redis://127.0.0.1:%u/0?prefix=tcd:&timeout_ms=3000",
                 tc_redis_server_port(redis));
        args[n++] = "--tier";
        args[n++] = red;
    }
    args[n++] = "--origin";
    args[n++] = origin.url;
    args[n++] = "--origin-timeout";
    args[n++] = "1500ms";
    args[n++] = "--grace";
    args[n++] = "60";
    for (int i = 0; extra != NULL && extra[i] != NULL; i++) {
        args[n++] = extra[i];
    }
    args[n] = NULL;
    if (tc_test_server_start(s, args) != 0) {
        fprintf(stderr, "tiercache did not start:\n%s\n", s->log);
        return -1;
    }
    tc_test_server_drain_log(s);
    if (strstr(s->log, scope) == NULL) {
        fprintf(stderr, "the server does not report %s scope:\n%s\n", scope, s->log);
        return -1;
    }
    return 0;
}

static void stop_one(struct tc_test_server *s)
{
    CHECK(tc_test_server_stop_clean(s), "server did not exit cleanly (status %d):\n%s",
          s->exit_status, s->log);
}

/* dogpile.NAME from a server's /stats, -1 if unreadable. */
static long long stat_of(const struct tc_test_server *s, const char *name)
{
    struct tc_test_resp r;
    if (tc_test_http(s->port, "GET", "/stats", NULL, NULL, 0, &r) != 0) {
        return -1;
    }
    long long v = -1;
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *x = json_object_get(json_object_get(j, "dogpile"), name);
    if (json_is_integer(x)) {
        v = json_integer_value(x);
    }
    json_decref(j);
    tc_test_resp_free(&r);
    return v;
}

static int put_value(unsigned port, const char *key, const char *value, const char *token)
{
    char target[256], hdrs[256], body[256];
    snprintf(target, sizeof(target), "/cache/%s", key);
    snprintf(hdrs, sizeof(hdrs), "Content-Type: application/json\r\n%s%s%s",
             token ? "X-Lease-Token: " : "", token ? token : "", token ? "\r\n" : "");
    snprintf(body, sizeof(body), "{\"value\":\"%s\",\"ttl\":60}", value);
    struct tc_test_resp r;
    if (tc_test_http(port, "PUT", target, hdrs, body, strlen(body), &r) != 0) {
        return -1;
    }
    int st = r.status;
    tc_test_resp_free(&r);
    return st;
}

/* ---- 500 clients, one lease ---------------------------------------------------------------- */

struct lease_run {
    const char *key;
    int put_status;
    int put_done;
    size_t n;
};

static int lease_tick(void *arg, size_t done, const struct tc_burst_resp *resp)
{
    struct lease_run *lr = arg;
    (void)done;
    if (lr->put_done) {
        return 0;
    }
    const char *token = NULL;
    for (size_t i = 0; i < lr->n && token == NULL; i++) {
        if (resp[i].lease_token[0] != '\0') {
            token = resp[i].lease_token;
        }
    }
    if (token == NULL) {
        return 0;
    }
    /* Only once every other client waits: then none can slip in between. */
    long long wa = stat_of(&A, "waits"), wb = single ? 0 : stat_of(&B, "waits");
    if (wa < 0 || wb < 0 || (size_t)(wa + wb) < lr->n - 1) {
        return 0;
    }
    lr->put_status = put_value(B.port, lr->key, "computed-once", token);
    lr->put_done = 1;
    return 0;
}

static void test_lease_500(void)
{
    enum { N = 500 };
    static struct tc_burst_resp resp[N];
    unsigned ports[2] = {A.port, B.port};
    char key[64], target[96];
    snprintf(key, sizeof(key), "hot-%s", scope);
    snprintf(target, sizeof(target), "/cache/%s", key);
    struct lease_run lr = {key, 0, 0, N};
    size_t got = tc_burst(ports, 2, N, "GET", target, "X-Cache-Lease: 30000\r\n", 60000, lease_tick,
                          &lr, resp);
    int tokens = 0, ok = 0, other = 0;
    for (size_t i = 0; i < N; i++) {
        if (resp[i].lease_token[0] != '\0' && resp[i].status == 404) {
            tokens++;
        } else if (resp[i].status == 200 && strstr(resp[i].body, "computed-once") != NULL) {
            ok++;
        } else {
            other++;
            if (other <= 3) {
                fprintf(stderr, "client %zu: %d %s\n", i, resp[i].status,
                        resp[i].body ? resp[i].body : "(no answer)");
            }
        }
    }
    CHECK(got == N, "%s: %zu of %d clients were answered", scope, got, N);
    CHECK(tokens == 1, "%s: %d leases granted for one key, want 1", scope, tokens);
    CHECK(lr.put_done && lr.put_status == 200, "%s: the leaseholder's PUT: %d", scope,
          lr.put_status);
    CHECK(ok == N - 1, "%s: %d of %d waiters got the value (%d other answers)", scope, ok, N - 1,
          other);
    long long g = stat_of(&A, "leases_granted") + (single ? 0 : stat_of(&B, "leases_granted"));
    long long f = stat_of(&A, "leases_fulfilled") + (single ? 0 : stat_of(&B, "leases_fulfilled"));
    CHECK(g == 1 && f == 1, "%s: stats say %lld granted, %lld fulfilled", scope, g, f);
    tc_burst_free(resp, N);
}

/* ---- a lease nobody fulfils ----------------------------------------------------------------- */

static void test_lease_abandoned(void)
{
    enum { N = 40 };
    static struct tc_burst_resp resp[N];
    unsigned ports[2] = {A.port, B.port};
    char target[96];
    snprintf(target, sizeof(target), "/cache/abandoned-%s", scope);
    double t0 = now_ms();
    size_t got =
        tc_burst(ports, 2, N, "GET", target, "X-Cache-Lease: 1500\r\n", 20000, NULL, NULL, resp);
    double took = now_ms() - t0;
    int tokens = 0, timeouts = 0;
    for (size_t i = 0; i < N; i++) {
        if (resp[i].status == 404 && resp[i].lease_token[0] != '\0') {
            tokens++;
        } else if (resp[i].status == 404 && strstr(resp[i].body, "lease_timeout") != NULL) {
            timeouts++;
        }
    }
    CHECK(got == N, "%s: %zu of %d answered", scope, got, N);
    /* The first lease, then exactly one waiter takes it over when it runs out. */
    CHECK(tokens == 2, "%s: %d leases for an abandoned key, want 2", scope, tokens);
    CHECK(timeouts == N - 2, "%s: %d clean timeouts, want %d", scope, timeouts, N - 2);
    CHECK(took > 1400 && took < 15000, "%s: took %.0f ms", scope, took);
    tc_burst_free(resp, N);
}

/* ---- the lock API ------------------------------------------------------------------------------
 */

static int lock_call(unsigned port, const char *method, const char *name, const char *hdrs,
                     const char *body, char *token_out, double *ms)
{
    char target[128];
    snprintf(target, sizeof(target), "/locks/%s", name);
    struct tc_test_resp r;
    double t0 = now_ms();
    if (tc_test_http(port, method, target, hdrs, body, body ? strlen(body) : 0, &r) != 0) {
        return -1;
    }
    if (ms != NULL) {
        *ms = now_ms() - t0;
    }
    if (token_out != NULL) {
        token_out[0] = '\0';
        json_t *j = json_loads(r.body, 0, NULL);
        if (json_is_string(json_object_get(j, "token"))) {
            snprintf(token_out, 64, "%s", json_string_value(json_object_get(j, "token")));
        }
        json_decref(j);
    }
    int st = r.status;
    tc_test_resp_free(&r);
    return st;
}

struct delayed_release {
    unsigned port;
    const char *name;
    char token[64];
    long delay_ms;
};

static void *release_later(void *p)
{
    struct delayed_release *d = p;
    char hdr[128];
    tc_test_sleep_ms(d->delay_ms);
    snprintf(hdr, sizeof(hdr), "X-Lock-Token: %s\r\n", d->token);
    lock_call(d->port, "DELETE", d->name, hdr, NULL, NULL, NULL);
    return NULL;
}

static void test_locks(void)
{
    char t1[64], t2[64], hdr[128];
    const char *J = "Content-Type: application/json\r\n";
    char name[64];
    snprintf(name, sizeof(name), "job-%s", scope);
    CHECK(lock_call(A.port, "POST", name, J, "{\"ttl\":5}", t1, NULL) == 200 && t1[0],
          "%s: first POST", scope);
    CHECK(lock_call(B.port, "POST", name, J, "{\"ttl\":5}", NULL, NULL) == 409,
          "%s: the other process got a held lock", scope);
    struct tc_test_resp r;
    char target[96];
    snprintf(target, sizeof(target), "/locks/%s", name);
    CHECK(tc_test_http(B.port, "GET", target, NULL, NULL, 0, &r) == 0 && r.status == 200 &&
              strstr(r.body, "\"held\":true") != NULL,
          "%s: GET /locks says %s", scope, r.body ? r.body : "-");
    tc_test_resp_free(&r);
    CHECK(lock_call(B.port, "DELETE", name, "X-Lock-Token: not-the-token\r\n", NULL, NULL, NULL) ==
              409,
          "%s: a non-owner released the lock", scope);
    snprintf(hdr, sizeof(hdr), "X-Lock-Token: %s\r\n", t1);
    CHECK(lock_call(B.port, "DELETE", name, hdr, NULL, NULL, NULL) == 200,
          "%s: the owner's release through the other process", scope);
    CHECK(lock_call(B.port, "POST", name, J, "{\"ttl\":5}", t2, NULL) == 200,
          "%s: acquire after release", scope);

    /* A waiter in the other process is woken by the release, well before
     * the 5 s lease would end. */
    struct delayed_release d = {B.port, name, "", 300};
    snprintf(d.token, sizeof(d.token), "%s", t2);
    pthread_t th;
    pthread_create(&th, NULL, release_later, &d);
    double ms;
    int st = lock_call(A.port, "POST", name, J, "{\"ttl\":5,\"wait\":10}", t1, &ms);
    pthread_join(th, NULL);
    CHECK(st == 200 && ms < 3000, "%s: waiter got %d after %.0f ms", scope, st, ms);
    snprintf(hdr, sizeof(hdr), "X-Lock-Token: %s\r\n", t1);
    lock_call(A.port, "DELETE", name, hdr, NULL, NULL, NULL);
}

/* ---- read-through ------------------------------------------------------------------------------
 */

struct tally {
    int n200, n404, n502, n504, other, stale, fetched, with_value;
    double max_ms;
};

static struct tally tally(const struct tc_burst_resp *resp, size_t n, const char *want)
{
    struct tally t;
    memset(&t, 0, sizeof(t));
    for (size_t i = 0; i < n; i++) {
        switch (resp[i].status) {
        case 200:
            t.n200++;
            break;
        case 404:
            t.n404++;
            break;
        case 502:
            t.n502++;
            break;
        case 504:
            t.n504++;
            break;
        default:
            t.other++;
            break;
        }
        t.stale += strcmp(resp[i].x_cache, "STALE") == 0;
        t.with_value += resp[i].body != NULL && want != NULL && strstr(resp[i].body, want) != NULL;
        if (resp[i].ms > t.max_ms) {
            t.max_ms = resp[i].ms;
        }
    }
    return t;
}

static struct tally herd(size_t n, const char *key, const char *want, double *took)
{
    static struct tc_burst_resp resp[500];
    unsigned ports[2] = {A.port, B.port};
    char target[128];
    snprintf(target, sizeof(target), "/cache/%s", key);
    double t0 = now_ms();
    tc_burst(ports, 2, n, "GET", target, NULL, 20000, NULL, NULL, resp);
    if (took != NULL) {
        *took = now_ms() - t0;
    }
    struct tally t = tally(resp, n, want);
    tc_burst_free(resp, n);
    return t;
}

static void test_origin(void)
{
    char key[64], want[96];
    double took;
    struct tally t;

    /* 200 cold clients over two processes: one origin request. */
    snprintf(key, sizeof(key), "cold-%s", scope);
    snprintf(want, sizeof(want), "value of /%s", key);
    tc_test_origin_config(&origin, "delay_ms=200&status=200&cache_control=max-age%3D60");
    tc_test_origin_reset(&origin);
    t = herd(200, key, want, NULL);
    CHECK(t.n200 == 200 && t.with_value == 200, "%s: cold herd: %d x 200 (%d with the value)",
          scope, t.n200, t.with_value);
    CHECK(tc_test_origin_requests(&origin) == 1, "%s: the origin saw %ld requests for one key",
          scope, tc_test_origin_requests(&origin));

    /* Stale within grace: everyone is answered at once, one refresh. */
    snprintf(key, sizeof(key), "grace-%s", scope);
    snprintf(want, sizeof(want), "value of /%s", key);
    tc_test_origin_config(&origin, "delay_ms=0&cache_control=max-age%3D1");
    t = herd(1, key, want, NULL);
    CHECK(t.n200 == 1, "%s: first fill", scope);
    tc_test_sleep_ms(1300);
    tc_test_origin_config(&origin, "delay_ms=1200&cache_control=max-age%3D60");
    tc_test_origin_reset(&origin);
    t = herd(100, key, want, &took);
    CHECK(t.n200 == 100 && t.stale >= 99 && took < 1200,
          "%s: stale herd: %d x 200, %d stale, took %.0f ms (the origin takes 1200)", scope, t.n200,
          t.stale, took);
    tc_test_sleep_ms(1500);
    CHECK(tc_test_origin_requests(&origin) == 1, "%s: %ld refreshes of a stale key, want 1", scope,
          tc_test_origin_requests(&origin));
    struct tc_test_resp r;
    char target[128];
    snprintf(target, sizeof(target), "/cache/%s", key);
    CHECK(tc_test_http(A.port, "GET", target, NULL, NULL, 0, &r) == 0 && r.status == 200 &&
              strcmp(r.x_cache, "HIT") == 0,
          "%s: after the refresh: %d %s", scope, r.status, r.x_cache);
    tc_test_resp_free(&r);

    /* 5xx is not cached; everyone gets a clear 502; a stale value survives it. */
    snprintf(key, sizeof(key), "broken-%s", scope);
    tc_test_origin_config(&origin, "delay_ms=500&status=503&cache_control=max-age%3D60");
    tc_test_origin_reset(&origin);
    t = herd(60, key, NULL, NULL);
    CHECK(t.n502 == 60, "%s: 5xx origin: %d x 502 of 60 (200: %d, 404: %d, 504: %d, other %d)",
          scope, t.n502, t.n200, t.n404, t.n504, t.other);
    long reqs = tc_test_origin_requests(&origin);
    /* An error is not stored: each process fetches it for its own waiters
     * (a client that arrives after an answer asks again). */
    CHECK(reqs >= 1 && reqs <= 4, "%s: 5xx origin saw %ld requests for 60 clients", scope, reqs);
    snprintf(key, sizeof(key), "grace-%s", scope);
    tc_test_sleep_ms(100);
    tc_test_origin_config(&origin, "delay_ms=0&status=200&cache_control=max-age%3D1");
    herd(1, key, NULL, NULL); /* still fresh from above (60 s): a hit */

    /* A slow origin: 504 within the bound, for everyone. */
    snprintf(key, sizeof(key), "slow-%s", scope);
    tc_test_origin_config(&origin, "delay_ms=4000&status=200&cache_control=max-age%3D60");
    t = herd(40, key, NULL, &took);
    CHECK(t.n504 == 40 && took < 8000, "%s: slow origin: %d x 504 of 40 in %.0f ms", scope, t.n504,
          took);

    /* no-store: answered, never stored. */
    snprintf(key, sizeof(key), "nostore-%s", scope);
    snprintf(want, sizeof(want), "value of /%s", key);
    tc_test_origin_config(&origin, "delay_ms=100&status=200&cache_control=no-store");
    tc_test_origin_reset(&origin);
    t = herd(40, key, want, NULL);
    CHECK(t.n200 == 40 && t.with_value == 40, "%s: no-store: %d x 200", scope, t.n200);
    reqs = tc_test_origin_requests(&origin);
    herd(1, key, want, NULL);
    CHECK(tc_test_origin_requests(&origin) == reqs + 1,
          "%s: a no-store answer was cached (%ld then %ld requests)", scope, reqs,
          tc_test_origin_requests(&origin));
}

/* Last: kills A. */
static void test_holder_killed(void)
{
    const char *J = "Content-Type: application/json\r\n";
    char name[64], tok[64];
    snprintf(name, sizeof(name), "killed-%s", scope);
    CHECK(lock_call(A.port, "POST", name, J, "{\"ttl\":2}", tok, NULL) == 200, "%s: holder's POST",
          scope);
    kill(A.pid, SIGKILL);
    waitpid(A.pid, NULL, 0);
    A.pid = 0;
    int first = lock_call(B.port, "POST", name, J, "{\"ttl\":2}", NULL, NULL);
    if (strcmp(scope, "cluster") == 0) {
        /* Redis keeps it for its ttl whoever died. */
        CHECK(first == 409, "%s: a dead holder's lock was free at once (%d)", scope, first);
    } else {
        CHECK(first == 200 || first == 409, "%s: %d", scope, first);
    }
    double ms;
    int st = first == 200 ? 200
                          : lock_call(B.port, "POST", name, J, "{\"ttl\":2,\"wait\":6}", NULL, &ms);
    CHECK(st == 200, "%s: the dead holder's lock was never reclaimed (%d)", scope, st);
    /* A release by the dead holder's token now fails: someone else holds it. */
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "X-Lock-Token: %s\r\n", tok);
    CHECK(lock_call(B.port, "DELETE", name, hdr, NULL, NULL, NULL) == 409,
          "%s: a stale token released the new holder's lock", scope);
}

static void run(const char *sc)
{
    static int n;
    scope = sc;
    single = strcmp(sc, "worker-pool") == 0;
    snprintf(shm_name, sizeof(shm_name), "tc-dogpile-%d-%d", (int)getpid(), n++);
    int ok = start_one(&A, NULL) == 0;
    if (ok && single) {
        B = A; /* the same process: its workers are the "other side" */
        B.pid = 0;
    } else if (ok) {
        ok = start_one(&B, NULL) == 0;
    }
    if (!ok) {
        CHECK(0, "%s: servers did not start", sc);
        stop_one(&A);
        stop_one(&B);
        return;
    }
    int failed_before = failed;
    test_lease_500();
    test_lease_abandoned();
    test_locks();
    test_origin();
    if (!single) {
        test_holder_killed();
    }
    if (failed > failed_before) {
        /* What the servers said, for the failures above (A may be dead). */
        struct tc_test_server *sv[2] = {&A, &B};
        for (int i = 0; i < (single ? 1 : 2); i++) {
            tc_test_server_drain_log(sv[i]);
            size_t from = sv[i]->log_len > 4000 ? sv[i]->log_len - 4000 : 0;
            fprintf(stderr, "%s: the end of server %c's log:\n%s\n", sc, "AB"[i],
                    sv[i] -> log + from);
        }
    }
    stop_one(&A);
    stop_one(&B);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -f /dev/shm/%s*", shm_name);
    CHECK(system(cmd) == 0, "rm");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (tc_redis_server_start(NULL, &redis) != 0) {
        fprintf(stderr, "redis-server did not start\n");
        return 1;
    }
    if (tc_test_origin_start(&origin, NULL) != 0) {
        tc_redis_server_destroy(redis);
        return 1;
    }
    run("cluster");
    run("host");
    run("worker-pool");
    CHECK(tc_test_origin_stop(&origin) == 0, "the test origin did not exit cleanly");
    tc_redis_server_destroy(redis);
    printf("dogpile: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
