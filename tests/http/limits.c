/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 16 through the real binary: counters, rate limits and lock renewal
 * exact across two tiercache processes, at host scope (one shm segment) and
 * at cluster scope (one private redis-server), with 8 client threads per
 * process on one key, and a process SIGKILLed in the middle of counter
 * updates. A plain program (not Criterion) so that the TSan pass reruns it
 * against the TSan build of the server. Prints "limits: N passed, M failed".
 *
 * What "exact" means per strategy, judged from the clients' own clocks: a
 * decision happened between the request's send and its answer.
 *   counters  the final value is the sum of the acknowledged increments
 *   fixed,    at most `limit` allowed per window (each answer names its
 *   sliding   window's start)
 *   moving    no limit+1 allowed hits within less than one window
 *   gcra      allowed <= T / period + burst + 1 over the run's length T
 */
#define _GNU_SOURCE
#include "tests/support/check.h"
#include "tests/support/clock.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PER_SERVER 8
#define THREADS    (2 * PER_SERVER)

static struct tc_redis_server *redis;
static struct tc_test_server srv[2];
static char shm_name[64];
static const char *scope;

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int start_one(struct tc_test_server *s)
{
    char shm[128], red[256];
    const char *args[16];
    int n = 0;
    snprintf(shm, sizeof(shm), "shm://%s?size=16M", shm_name);
    args[n++] = "--workers";
    args[n++] = "2";
    args[n++] = "--tier";
    args[n++] = shm;
    if (strcmp(scope, "cluster") == 0) {
        snprintf(red, sizeof(red), "redis://127.0.0.1:%u/0?prefix=tcl:&timeout_ms=3000",
                 tc_redis_server_port(redis));
        args[n++] = "--tier";
        args[n++] = red;
    }
    args[n] = NULL;
    if (tc_test_server_start(s, args) != 0) {
        fprintf(stderr, "tiercache did not start:\n%s\n", s->log);
        return -1;
    }
    tc_test_server_drain_log(s);
    char want[64];
    snprintf(want, sizeof(want), "counters and limits: %s scope", scope);
    if (strstr(s->log, want) == NULL) {
        fprintf(stderr, "the server does not report '%s':\n%s\n", want, s->log);
        return -1;
    }
    return 0;
}

/* One request on a kept connection (reopened when it broke); the answer's
 * JSON in *out (caller decrefs). Returns the status, or -1 with no answer. */
static int call(int *fd, unsigned port, const char *method, const char *target, const char *body,
                json_t **out)
{
    struct tc_test_resp r;
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (*fd < 0 && (*fd = tc_test_connect(port)) < 0) {
            return -1;
        }
        if (tc_test_http_fd(*fd, method, target, "Content-Type: application/json\r\n", body,
                            body ? strlen(body) : 0, &r) == 0) {
            *out = json_loads(r.body, 0, NULL);
            int st = r.status;
            tc_test_resp_free(&r);
            return st;
        }
        tc_test_resp_free(&r); /* what a broken answer left */
        close(*fd);
        *fd = -1;
        if (body != NULL && strcmp(method, "GET") != 0) {
            return -1; /* maybe applied: never resend a write */
        }
    }
    return -1;
}

/* ---- counters ---------------------------------------------------------------------------- */

struct ctr_run {
    unsigned port;
    int id, n;
    const char *key;
    int64_t acked;
    int uncertain; /* sent, no answer: may or may not have counted */
    int stop_on_error;
};

static void *ctr_thread(void *p)
{
    struct ctr_run *c = p;
    int fd = -1;
    char target[128], body[64];
    snprintf(target, sizeof(target), "/counters/%s", c->key);
    snprintf(body, sizeof(body), "{\"by\":%d}", c->id + 1);
    for (int i = 0; i < c->n; i++) {
        json_t *j;
        int st = call(&fd, c->port, "POST", target, body, &j);
        if (st == 200) {
            c->acked += c->id + 1;
        } else if (st < 0) {
            c->uncertain += c->id + 1;
            json_decref(j);
            if (c->stop_on_error) {
                break;
            }
            continue;
        }
        json_decref(j);
    }
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

static int64_t counter_value(unsigned port, const char *key)
{
    int fd = -1;
    char target[128];
    snprintf(target, sizeof(target), "/counters/%s", key);
    json_t *j;
    int st = call(&fd, port, "GET", target, NULL, &j);
    int64_t v = st == 200 ? json_integer_value(json_object_get(j, "value")) : INT64_MIN;
    json_decref(j);
    if (fd >= 0) {
        close(fd);
    }
    return v;
}

static void case_counter_exact(void)
{
    pthread_t th[THREADS];
    struct ctr_run r[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct ctr_run){srv[i % 2].port, i, 60, "exact", 0, 0, 0};
        pthread_create(&th[i], NULL, ctr_thread, &r[i]);
    }
    int64_t sum = 0;
    int lost = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        sum += r[i].acked;
        lost += r[i].uncertain != 0;
    }
    CHECK(lost == 0, "%s: %d threads saw requests fail", scope, lost);
    int64_t v = counter_value(srv[0].port, "exact");
    CHECK(v == sum, "%s: counter %lld, acknowledged increments %lld", scope, (long long)v,
          (long long)sum);
    CHECK(counter_value(srv[1].port, "exact") == v, "%s: both processes read one counter", scope);
}

/* Server 1 is SIGKILLed while its clients add: every acknowledged increment
 * counts once, the unanswered ones at most once, and the key (and new keys)
 * keep working from the survivor. */
static void case_counter_kill(void)
{
    pthread_t th[THREADS];
    struct ctr_run r[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct ctr_run){srv[i % 2].port, i, 400, "killed", 0, 0, 1};
        pthread_create(&th[i], NULL, ctr_thread, &r[i]);
    }
    tc_test_sleep_ms(300);
    int st = tc_test_server_stop(&srv[1], SIGKILL);
    CHECK(st >= 0 && WIFSIGNALED(st), "%s: server 1 killed", scope);
    srv[1].pid = 0;
    int64_t acked = 0, maybe = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        acked += r[i].acked;
        maybe += r[i].uncertain;
    }
    double t0 = mono_ms();
    int64_t v = counter_value(srv[0].port, "killed");
    CHECK(v >= acked && v <= acked + maybe,
          "%s: after the kill the counter is %lld; acknowledged %lld, unanswered %lld", scope,
          (long long)v, (long long)acked, (long long)maybe);
    int fd = -1;
    json_t *j;
    CHECK(call(&fd, srv[0].port, "POST", "/counters/killed", "{\"by\":1}", &j) == 200 &&
              json_integer_value(json_object_get(j, "value")) == v + 1,
          "%s: the key still counts", scope);
    json_decref(j);
    char target[64];
    int fresh_ok = 1;
    for (int i = 0; i < 50; i++) {
        snprintf(target, sizeof(target), "/counters/fresh-%d", i);
        fresh_ok &= call(&fd, srv[0].port, "POST", target, "{\"by\":1,\"ttl\":60}", &j) == 200;
        json_decref(j);
    }
    CHECK(fresh_ok, "%s: new keys after the kill", scope);
    CHECK(mono_ms() - t0 < 3000, "%s: no stuck slot (took %.0f ms)", scope, mono_ms() - t0);
    if (fd >= 0) {
        close(fd);
    }
    CHECK(start_one(&srv[1]) == 0, "%s: server 1 restarted", scope);
}

/* ---- limits ------------------------------------------------------------------------------ */

struct hitrec {
    double sent, got;
    double start; /* the window's start the answer named (ms), or 0 */
};

struct lim_run {
    unsigned port;
    const char *key, *body;
    double until;
    struct hitrec *ok;
    size_t nok, cap;
    int denied, errors;
};

static void *lim_thread(void *p)
{
    struct lim_run *l = p;
    int fd = -1;
    char target[128];
    snprintf(target, sizeof(target), "/limits/%s", l->key);
    while (mono_ms() < l->until) {
        json_t *j;
        double sent = mono_ms();
        int st = call(&fd, l->port, "POST", target, l->body, &j);
        double got = mono_ms();
        if (st == 200 && l->nok < l->cap) {
            json_t *s = json_object_get(j, "start");
            l->ok[l->nok++] =
                (struct hitrec){sent, got, json_is_number(s) ? json_number_value(s) * 1e3 : 0};
        } else if (st == 429) {
            l->denied++;
        } else {
            l->errors++;
        }
        json_decref(j);
    }
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

static int by_got(const void *a, const void *b)
{
    double x = ((const struct hitrec *)a)->got, y = ((const struct hitrec *)b)->got;
    return x < y ? -1 : x > y;
}

static void case_limit(const char *strategy, unsigned limit, unsigned window_ms, unsigned burst,
                       unsigned run_ms)
{
    char key[64], body[160];
    snprintf(key, sizeof(key), "lim-%s", strategy);
    if (burst) {
        snprintf(body, sizeof(body),
                 "{\"limit\":%u,\"window\":\"%ums\",\"strategy\":\"%s\",\"burst\":%u}", limit,
                 window_ms, strategy, burst);
    } else {
        snprintf(body, sizeof(body), "{\"limit\":%u,\"window\":\"%ums\",\"strategy\":\"%s\"}",
                 limit, window_ms, strategy);
    }
    pthread_t th[THREADS];
    struct lim_run r[THREADS];
    double until = mono_ms() + run_ms;
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct lim_run){
            srv[i % 2].port, key, body, until, calloc(4096, sizeof(struct hitrec)), 0, 4096, 0, 0};
        pthread_create(&th[i], NULL, lim_thread, &r[i]);
    }
    size_t n = 0, denied = 0, errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        n += r[i].nok;
        denied += (size_t)r[i].denied;
        errors += (size_t)r[i].errors;
    }
    struct hitrec *all = calloc(n + 1, sizeof(*all));
    size_t k = 0;
    double first = 1e300, last = 0;
    for (int i = 0; i < THREADS; i++) {
        for (size_t j = 0; j < r[i].nok; j++) {
            all[k++] = r[i].ok[j];
        }
        free(r[i].ok);
    }
    qsort(all, n, sizeof(*all), by_got);
    for (size_t i = 0; i < n; i++) {
        first = all[i].sent < first ? all[i].sent : first;
        last = all[i].got > last ? all[i].got : last;
    }
    CHECK(errors == 0, "%s %s: %zu requests failed", scope, strategy, errors);
    CHECK(n > 0 && denied > 0, "%s %s: some allowed (%zu), some denied (%zu)", scope, strategy, n,
          denied);
    if (strcmp(strategy, "fixed") == 0 || strcmp(strategy, "sliding") == 0) {
        /* Per window, as the answers name it. */
        size_t worst = 0;
        for (size_t i = 0; i < n; i++) {
            size_t c = 0;
            for (size_t j = 0; j < n; j++) {
                c += all[j].start == all[i].start;
            }
            worst = c > worst ? c : worst;
        }
        CHECK(worst <= limit, "%s %s: %zu allowed in one window of %u ms, limit %u", scope,
              strategy, worst, window_ms, limit);
    } else if (strcmp(strategy, "moving") == 0) {
        /* limit+1 allowed hits whose answers all came within less than a
         * window of the earliest send among them: a violation for sure. */
        int bad = 0;
        for (size_t j = limit; j < n && !bad; j++) {
            double lo = 1e300;
            for (size_t i = j - limit; i <= j; i++) {
                lo = all[i].sent < lo ? all[i].sent : lo;
            }
            if (all[j].got - lo < window_ms - 1.0) {
                bad = 1;
                CHECK(0, "%s moving: %u+1 allowed within %.1f ms (window %u)", scope, limit,
                      all[j].got - lo, window_ms);
            }
        }
        CHECK(!bad, "%s moving: never more than %u in any %u ms", scope, limit, window_ms);
    } else {
        double period = (double)window_ms / limit;
        double bound = (last - first) / period + (burst ? burst : limit) + 1;
        CHECK((double)n <= bound, "%s gcra: %zu allowed over %.0f ms, bound %.1f", scope, n,
              last - first, bound);
        CHECK((double)n >= bound / 2, "%s gcra: only %zu allowed of %.1f", scope, n, bound);
    }
    free(all);
}

/* ---- validation and headers ------------------------------------------------------------ */

static int status_of(const char *method, const char *target, const char *body,
                     const char *want_in_body, struct tc_test_resp *keep)
{
    struct tc_test_resp r;
    if (tc_test_http(srv[0].port, method, target, "Content-Type: application/json\r\n", body,
                     body ? strlen(body) : 0, &r) != 0) {
        return -1;
    }
    int st = r.status;
    if (want_in_body != NULL && strstr(r.body, want_in_body) == NULL) {
        CHECK(0, "%s %s: '%s' not in %s", method, target, want_in_body, r.body);
    }
    if (keep != NULL) {
        *keep = r;
    } else {
        tc_test_resp_free(&r);
    }
    return st;
}

static void case_api(void)
{
    CHECK(status_of("POST", "/limits/v", "{\"limit\":5,\"window\":1,\"windw\":2,\"x\":1}",
                    "unknown fields \\\"windw\\\", \\\"x\\\"", NULL) == 400,
          "unknown members named");
    CHECK(status_of("POST", "/limits/v", "{\"limit\":5,\"window\":1,\"strategy\":\"leaky\"}",
                    "unknown strategy", NULL) == 400,
          "bad strategy");
    CHECK(status_of("POST", "/limits/v", "{\"limit\":5,\"window\":\"soon\"}", "window", NULL) ==
              400,
          "bad window");
    CHECK(status_of("POST", "/limits/v", "{\"window\":1}", "limit", NULL) == 400, "no limit");
    CHECK(status_of("POST", "/limits/v", "{\"limit\":5,\"window\":1,\"burst\":3}", "gcra", NULL) ==
              400,
          "burst without gcra");
    CHECK(status_of("POST", "/limits/v", "{\"limit\":5,\"window\":1,\"cost\":6}", "cost", NULL) ==
              400,
          "cost above the limit");
    CHECK(status_of("POST", "/counters/v", "{\"by\":1.5}", "by", NULL) == 400, "by not an integer");
    CHECK(status_of("POST", "/counters/v", "{\"by\":1,\"tll\":3}", "unknown field \\\"tll\\\"",
                    NULL) == 400,
          "counter: unknown member named");
    CHECK(status_of("GET", "/counters/v", NULL, "\"value\":0", NULL) == 200,
          "nothing was stored by the bad requests");
    CHECK(status_of("POST", "/counters/v", "{\"by\":9223372036854775807}", NULL, NULL) == 200,
          "add the largest");
    CHECK(status_of("POST", "/counters/v", "{\"by\":1}", "overflow", NULL) == 409, "overflow 409");
    CHECK(status_of("DELETE", "/counters/v", NULL, NULL, NULL) == 200, "reset");
    struct tc_test_resp r;
    const char *one = "{\"limit\":1,\"window\":\"1h\",\"strategy\":\"fixed\"}";
    CHECK(status_of("POST", "/limits/h", one, "\"remaining\":0", &r) == 200 &&
              strstr(r.ratelimit, "\"fixed\";r=0;t=") == r.ratelimit,
          "RateLimit on 200: %s", r.ratelimit);
    tc_test_resp_free(&r);
    CHECK(status_of("POST", "/limits/h", one, "rate_limited", &r) == 429 &&
              atoi(r.retry_after) >= 3500 && atoi(r.retry_after) <= 3600 &&
              strstr(r.ratelimit, "\"fixed\";r=0;t=") == r.ratelimit,
          "429 with Retry-After %s and RateLimit %s", r.retry_after, r.ratelimit);
    tc_test_resp_free(&r);
    CHECK(status_of("GET", "/limits/h?limit=1&window=1h", NULL, "\"allowed\":false", NULL) == 200,
          "GET: the state, no hit");
    CHECK(status_of("DELETE", "/limits/h", NULL, NULL, NULL) == 200, "DELETE clears");
    CHECK(status_of("POST", "/limits/h", one, "\"allowed\":true", NULL) == 200, "allowed again");
}

/* ---- renewal ----------------------------------------------------------------------------- */

static void case_renew(void)
{
    int fa = -1, fb = -1;
    json_t *j;
    CHECK(call(&fa, srv[0].port, "POST", "/locks/renewed", "{\"ttl\":1}", &j) == 200,
          "%s: lock taken", scope);
    char token[64] = "";
    snprintf(token, sizeof(token), "%s", json_string_value(json_object_get(j, "token")));
    json_decref(j);
    char body[128];
    snprintf(body, sizeof(body), "{\"token\":\"%s\",\"ttl\":1}", token);
    for (int i = 0; i < 3; i++) {
        tc_test_sleep_ms(500);
        int st = call(&fb, srv[1].port, "PATCH", "/locks/renewed", body, &j);
        CHECK(st == 200, "%s: the owner's renew %d through the other process: %d", scope, i, st);
        json_decref(j);
    }
    /* 1.5 s after a 1 s lease: still held. */
    CHECK(call(&fb, srv[1].port, "POST", "/locks/renewed", "{\"ttl\":5}", &j) == 409,
          "%s: held past its first lease", scope);
    json_decref(j);
    CHECK(call(&fb, srv[1].port, "PATCH", "/locks/renewed",
               "{\"token\":\"0-0000-0123456789abcdef\",\"ttl\":5}", &j) == 409 &&
              strcmp(json_string_value(json_object_get(j, "error")), "not_owner") == 0,
          "%s: a non-owner's renew is 409 not_owner", scope);
    json_decref(j);
    tc_test_sleep_ms(1300);
    CHECK(call(&fa, srv[0].port, "PATCH", "/locks/renewed", body, &j) == 404,
          "%s: a renew after the lease ran out is 404", scope);
    json_decref(j);
    close(fa);
    close(fb);
}

/* A cache lease (X-Cache-Lease) renewed by its holder through the other
 * process outlives its first length, and its PUT still lands. */
static void case_lease_renew(void)
{
    struct tc_test_resp r;
    CHECK(tc_test_http(srv[0].port, "GET", "/cache/leased", "X-Cache-Lease: 800\r\n", NULL, 0,
                       &r) == 0 &&
              r.status == 404 && r.lease_token[0] != '\0',
          "%s: a lease granted", scope);
    char tok[64], hdr[160];
    snprintf(tok, sizeof(tok), "%s", r.lease_token);
    tc_test_resp_free(&r);
    snprintf(hdr, sizeof(hdr), "X-Lease-Token: %s\r\nContent-Type: application/json\r\n", tok);
    for (int i = 0; i < 3; i++) {
        tc_test_sleep_ms(500);
        CHECK(tc_test_http(srv[1].port, "PATCH", "/cache/leased", hdr, "{\"ttl\":0.8}", 11, &r) ==
                      0 &&
                  r.status == 200,
              "%s: lease renewal %d: %d %s", scope, i, r.status, r.body);
        tc_test_resp_free(&r);
    }
    CHECK(tc_test_http(srv[1].port, "PATCH", "/cache/leased",
                       "X-Lease-Token: 0-0000-0123456789abcdef\r\n", "{\"ttl\":1}", 9, &r) == 0 &&
              r.status == 409,
          "%s: a stranger's lease renewal: %d", scope, r.status);
    tc_test_resp_free(&r);
    const char *v = "{\"value\":\"filled\",\"ttl\":60}";
    CHECK(tc_test_http(srv[0].port, "PUT", "/cache/leased", hdr, v, strlen(v), &r) == 0 &&
              r.status == 200,
          "%s: the holder's PUT after 1.5 s of a 0.8 s lease: %d %s", scope, r.status, r.body);
    tc_test_resp_free(&r);
    CHECK(tc_test_http(srv[0].port, "PATCH", "/cache/leased", hdr, "{\"ttl\":1}", 9, &r) == 0 &&
              r.status == 404,
          "%s: renewing a lease that its PUT released: %d", scope, r.status);
    tc_test_resp_free(&r);
}

static void run(const char *sc)
{
    scope = sc;
    snprintf(shm_name, sizeof(shm_name), "tc-limits-%d-%s", (int)getpid(), sc);
    if (start_one(&srv[0]) != 0 || start_one(&srv[1]) != 0) {
        CHECK(0, "%s: servers did not start", sc);
        return;
    }
    case_counter_exact();
    if (strcmp(sc, "host") == 0) {
        case_api();
    }
    case_limit("fixed", 20, 300, 0, 1200);
    case_limit("sliding", 20, 300, 0, 1200);
    case_limit("moving", 20, 300, 0, 1200);
    case_limit("gcra", 50, 500, 10, 1200);
    case_renew();
    case_lease_renew();
    case_counter_kill();
    for (int i = 0; i < 2; i++) {
        if (srv[i].pid > 0) {
            int st = tc_test_server_stop(&srv[i], SIGTERM);
            CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: server %d exit", sc, i);
            srv[i].pid = 0;
        }
    }
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", shm_name);
    unlink(path);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (tc_redis_server_start(NULL, &redis) != 0) {
        fprintf(stderr, "redis-server did not start\n");
        return 1;
    }
    run("host");
    run("cluster");
    tc_redis_server_destroy(redis);
    printf("limits: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
