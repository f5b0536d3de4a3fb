/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The server over real tiers: shm L1 + LMDB L2 + Redis L3, each made fresh
 * per test (a private segment name, a temp dir, a private redis-server on a
 * free loopback port). The test process opens the same tiers through the
 * tier API (shm and LMDB are shared across processes, Redis is remote) to
 * see what each tier holds and to clear single tiers.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "tests/support/clock.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
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

static struct tc_test_server srv;
static struct tc_redis_server *redis;
static char shm_name[64], lmdb_dir[64];
static char uri_l1[256], uri_l2[256], uri_l3[256];

static void setup(void)
{
    static int n;
    snprintf(shm_name, sizeof(shm_name), "tc-stack-%d-%d", (int)getpid(), n++);
    strcpy(lmdb_dir, "/tmp/tc-stack-XXXXXX");
    cr_assert_not_null(mkdtemp(lmdb_dir));
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "redis-server did not start");
    snprintf(uri_l1, sizeof(uri_l1), "shm://%s?size=16M&ttl_ratio=0.1", shm_name);
    snprintf(uri_l2, sizeof(uri_l2), "lmdb://%s?map_size=64M&ttl_ratio=0.5&sync=none", lmdb_dir);
    snprintf(uri_l3, sizeof(uri_l3), "redis://127.0.0.1:%u/0?prefix=tcs:&timeout_ms=200",
             tc_redis_server_port(redis));
}

static void stop_server(void)
{
    cr_expect(tc_test_server_stop_clean(&srv), "server did not exit cleanly (status %d):\n%s",
              srv.exit_status, srv.log);
}

static void teardown(void)
{
    stop_server();
    tc_redis_server_destroy(redis);
    redis = NULL;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' /dev/shm/%s*", lmdb_dir, shm_name);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(stack, .init = setup, .fini = teardown, .timeout = 90);

static void start(const char *l1, const char *l2, const char *l3)
{
    const char *args[16];
    int n = 0;
    args[n++] = "--workers";
    args[n++] = "2";
    args[n++] = "--sweep-interval";
    args[n++] = "100ms";
    const char *t[3] = {l1, l2, l3};
    for (int i = 0; i < 3; i++) {
        if (t[i] != NULL) {
            args[n++] = "--tier";
            args[n++] = t[i];
        }
    }
    args[n] = NULL;
    if (tc_test_server_start(&srv, args) != 0) {
        cr_assert_fail("tiercache did not start:\n%s", srv.log);
    }
}

static struct tc_test_resp http(const char *method, const char *target, const char *body)
{
    struct tc_test_resp r;
    int rc =
        tc_test_http(srv.port, method, target, body ? "Content-Type: application/json\r\n" : NULL,
                     body, body ? strlen(body) : 0, &r);
    cr_assert_eq(rc, 0, "%s %s: no answer", method, target);
    return r;
}

/* What tier `uri` holds for key k, seen from this process. */
struct held {
    enum tc_status st;
    uint64_t E, local;
};

static struct held peek(const char *uri, const char *k)
{
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[256];
    cr_assert_eq(tc_tier_open(NULL, uri, &t, err, sizeof(err)), TC_OK, "%s: %s", uri, err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct tc_buf out = TC_BUF_INIT;
    struct tc_tier_req r = {
        .key = k, .key_len = strlen(k), .out = &out, .now_ms = tc_test_wall_ms()};
    struct held h = {tc_tier_get(c, &r), r.hdr.expire_ms, r.local_expire_ms};
    tc_buf_deinit(&out);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    return h;
}

static void drop(const char *uri, const char *k)
{
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[256];
    cr_assert_eq(tc_tier_open(NULL, uri, &t, err, sizeof(err)), TC_OK, "%s: %s", uri, err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct tc_tier_req r = {.key = k, .key_len = strlen(k), .now_ms = tc_test_wall_ms()};
    cr_assert_eq(tc_tier_del(c, &r), TC_OK);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

/* |got - want| <= slack ms */
#define NEAR(got, want, slack, what)                                                               \
    cr_assert((got) + (slack) >= (want) && (got) <= (want) + (slack), "%s: %llu, want %llu±%d",    \
              what, (unsigned long long)(got), (unsigned long long)(want), (int)(slack))

Test(stack, write_through_backfill_and_ttl_ratios)
{
    start(uri_l1, uri_l2, uri_l3);
    uint64_t t = tc_test_wall_ms();
    struct tc_test_resp r = http("PUT", "/cache/k", "{\"value\":\"v\",\"ttl\":100}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    uint64_t E = t + 100000;

    /* Each tier holds it for its ratio of the TTL, and all carry the same E. */
    struct held h1 = peek(uri_l1, "k"), h2 = peek(uri_l2, "k"), h3 = peek(uri_l3, "k");
    cr_assert_eq(h1.st, TC_OK);
    cr_assert_eq(h2.st, TC_OK);
    cr_assert_eq(h3.st, TC_OK);
    NEAR(h1.E, E, 1000, "E in L1");
    cr_assert_eq(h2.E, h1.E);
    cr_assert_eq(h3.E, h1.E);
    NEAR(h1.local, t + 10000, 1000, "L1 local expiry (ratio 0.1)");
    NEAR(h2.local, t + 50000, 1000, "L2 local expiry (ratio 0.5)");
    NEAR(h3.local, t + 100000, 1000, "L3 local expiry (ratio 1)");

    /* Cleared from L1 and L2: served from L3, then back-filled. */
    drop(uri_l1, "k");
    drop(uri_l2, "k");
    cr_assert_eq(peek(uri_l1, "k").st, TC_ENOTFOUND);
    tc_test_sleep_ms(300); /* let the remaining time shrink a little */
    uint64_t t2 = tc_test_wall_ms();
    r = http("GET", "/cache/k", NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(r.x_cache_tier, "l3");
    tc_test_resp_free(&r);
    tc_test_sleep_ms(100); /* the back-fill happens after the answer */
    h1 = peek(uri_l1, "k");
    h2 = peek(uri_l2, "k");
    cr_assert_eq(h1.st, TC_OK, "L1 was not back-filled");
    cr_assert_eq(h2.st, TC_OK, "L2 was not back-filled");
    cr_assert_eq(h1.E, h3.E, "back-fill must carry E unchanged");
    NEAR(h1.local, t2 + (E - t2) / 10, 1000, "L1 back-fill uses the remaining time");
    NEAR(h2.local, t2 + (E - t2) / 2, 1000, "L2 back-fill uses the remaining time");
    cr_assert_leq(h1.local, E);
    cr_assert_leq(h2.local, E);
    r = http("GET", "/cache/k", NULL);
    cr_assert_str_eq(r.x_cache_tier, "l1");
    tc_test_resp_free(&r);
}

Test(stack, nothing_outlives_its_authoritative_expiry)
{
    start(uri_l1, uri_l2, uri_l3);
    struct tc_test_resp r = http("PUT", "/cache/short", "{\"value\":1,\"ttl\":0.8}");
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    r = http("GET", "/cache/short", NULL);
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    tc_test_sleep_ms(900);
    r = http("GET", "/cache/short", NULL);
    cr_assert_eq(r.status, 404, "served past E from %s", r.x_cache_tier);
    tc_test_resp_free(&r);
    cr_assert_eq(peek(uri_l1, "short").st, TC_ENOTFOUND);
    cr_assert_eq(peek(uri_l2, "short").st, TC_ENOTFOUND);
    cr_assert_eq(peek(uri_l3, "short").st, TC_ENOTFOUND);
}

Test(stack, delete_reaches_every_tier)
{
    start(uri_l1, uri_l2, uri_l3);
    struct tc_test_resp r = http("PUT", "/cache/d", "{\"value\":[1]}");
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    r = http("DELETE", "/cache/d", NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    cr_assert_eq(peek(uri_l1, "d").st, TC_ENOTFOUND);
    cr_assert_eq(peek(uri_l2, "d").st, TC_ENOTFOUND);
    cr_assert_eq(peek(uri_l3, "d").st, TC_ENOTFOUND);
}

Test(stack, values_too_big_for_l1_go_to_the_tiers_that_take_them)
{
    char l1[300];
    snprintf(l1, sizeof(l1), "shm://%s?size=16M&max_item=1K", shm_name);
    start(l1, uri_l2, NULL);
    size_t n = 4000;
    char *body = malloc(n + 32);
    strcpy(body, "{\"value\":\"");
    memset(body + 10, 'b', n);
    strcpy(body + 10 + n, "\"}");
    struct tc_test_resp r = http("PUT", "/cache/big", body);
    free(body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    r = http("GET", "/cache/big", NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.x_cache_tier, "l2");
    cr_assert_gt(r.body_len, n);
    tc_test_resp_free(&r);
}

Test(stack, restart_serves_from_l2_after_the_segment_is_gone)
{
    start(uri_l1, uri_l2, NULL);
    struct tc_test_resp r =
        http("PUT", "/cache/durable", "{\"value\":{\"kept\":true},\"ttl\":600}");
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    stop_server();
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s shm unlink %s >/dev/null 2>&1", TC_SERVER_BIN, shm_name);
    cr_assert_eq(system(cmd), 0, "tiercache shm unlink failed");
    start(uri_l1, uri_l2, NULL);
    r = http("GET", "/cache/durable", NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(r.x_cache_tier, "l2");
    cr_assert(strstr(r.body, "\"kept\":true") != NULL, "%s", r.body);
    tc_test_resp_free(&r);
    /* The answer is written before the back-fill runs, and the next GET
     * may reach the other worker first: give the back-fill a moment. */
    for (int i = 0;; i++) {
        r = http("GET", "/cache/durable", NULL);
        if (strcmp(r.x_cache_tier, "l1") == 0 || i == 100) {
            break;
        }
        tc_test_resp_free(&r);
        tc_test_sleep_ms(10);
    }
    cr_assert_str_eq(r.x_cache_tier, "l1");
    tc_test_resp_free(&r);
}

/* Gets and sets keep going while Redis is killed and restarted. */
struct load {
    volatile int stop;
    unsigned long gets, fivexx, other;
    char why[160];
};

static void *load_main(void *p)
{
    struct load *l = p;
    int fd = tc_test_connect(srv.port);
    unsigned long i = 0;
    while (!l->stop) {
        char target[32];
        snprintf(target, sizeof(target), "/cache/r%lu", i++ % 50);
        struct tc_test_resp r;
        int rc = i % 5 == 0
                     ? tc_test_http_fd(fd, "PUT", target, "Content-Type: application/json\r\n",
                                       "{\"value\":1}", 11, &r)
                     : tc_test_http_fd(fd, "GET", target, NULL, NULL, 0, &r);
        if (rc != 0) {
            close(fd);
            fd = tc_test_connect(srv.port);
            l->other++;
            snprintf(l->why, sizeof(l->why), "no answer");
            continue;
        }
        l->gets++;
        if (r.status >= 500) {
            l->fivexx++;
            snprintf(l->why, sizeof(l->why), "%s -> %d %s", target, r.status, r.body);
        }
        tc_test_resp_free(&r);
    }
    close(fd);
    return NULL;
}

static const char *health_status(void)
{
    static char word[32];
    struct tc_test_resp r = http("GET", "/health", NULL);
    json_t *j = json_loads(r.body, 0, NULL);
    snprintf(word, sizeof(word), "%s", j ? json_string_value(json_object_get(j, "status")) : "?");
    json_decref(j);
    tc_test_resp_free(&r);
    return word;
}

Test(stack, redis_killed_mid_load_degrades_and_recovers)
{
    /* L1 keeps items only 1 ms, so gets keep reaching Redis. */
    start("mem://?size=8M&max_ttl=1ms", NULL, uri_l3);
    uint64_t began = tc_test_mono_ms();
    /* Static: an assertion that ends the test while the load thread runs
     * must not leave it reading a dead stack frame (ASan would report that
     * instead of the assertion). */
    static struct load l;
    pthread_t th;
    pthread_create(&th, NULL, load_main, &l);
    tc_test_sleep_ms(500);
    tc_redis_server_kill(redis);
    tc_test_sleep_ms(1500);
    const char *h = health_status();
    cr_expect_str_eq(h, "degraded", "health while Redis is down");
    cr_assert_eq(tc_redis_server_restart(redis), 0, "redis-server did not come back on port %u",
                 tc_redis_server_port(redis));
    int healthy = 0;
    for (int i = 0; i < 100 && !healthy; i++) {
        tc_test_sleep_ms(100);
        healthy = strcmp(health_status(), "ok") == 0;
    }
    l.stop = 1;
    pthread_join(th, NULL);
    cr_assert(healthy, "not healthy again within 10 s of Redis coming back");
    cr_assert_eq(l.fivexx, 0, "%lu answers were 5xx, e.g. %s", l.fivexx, l.why);
    cr_assert_eq(l.other, 0, "%lu requests got no answer", l.other);
    cr_assert_gt(l.gets, 100);
    /* Every failed write while Redis was down is a warn line at the same
     * call site: at most 10 a second of them reach the log, and the counter
     * says how many were dropped. (Before the limit, the lines filled the
     * stderr pipe and a worker stalled in write(2): /health went unanswered.) */
    struct tc_test_resp m = http("GET", "/stats", NULL);
    json_t *j = json_loads(m.body, 0, NULL);
    json_int_t dropped = json_integer_value(json_object_get(j, "log_lines_dropped"));
    json_decref(j);
    tc_test_resp_free(&m);
    uint64_t ran_ms = tc_test_mono_ms() - began;
    stop_server();
    size_t lines = 0;
    for (const char *at = srv.log; (at = strstr(at, "set failed")) != NULL; at++) {
        lines++;
    }
    cr_expect_gt(lines, 0, "no set failure was logged:\n%s", srv.log);
    cr_expect_leq(lines, 10 * (ran_ms / 1000 + 2), "%zu set-failure lines in %llu ms:\n%s", lines,
                  (unsigned long long)ran_ms, srv.log);
    /* Each drop is told: by the site's next line "(N similar lines dropped)"
     * or, the flood over, by "N similar lines dropped at FILE:LINE". */
    long long told = 0;
    for (const char *at = srv.log; (at = strstr(at, " similar lines dropped")) != NULL; at++) {
        const char *d = at;
        while (d > srv.log && d[-1] >= '0' && d[-1] <= '9') {
            d--;
        }
        told += atoll(d);
    }
    cr_expect_geq(told, dropped, "%lld lines dropped, %lld told:\n%s", (long long)dropped, told,
                  srv.log);
}

/* Two "hosts": two servers with their own segment and LMDB dir, one Redis. */
Test(stack, writes_on_one_host_invalidate_the_other)
{
    start(uri_l1, uri_l2, uri_l3);
    struct tc_test_server a = srv;
    char l1b[256], l2b[256], dirb[64];
    strcpy(dirb, "/tmp/tc-stack-b-XXXXXX");
    cr_assert_not_null(mkdtemp(dirb));
    snprintf(l1b, sizeof(l1b), "shm://%s-b?size=16M&ttl_ratio=0.1", shm_name);
    snprintf(l2b, sizeof(l2b), "lmdb://%s?map_size=64M&ttl_ratio=0.5&sync=none", dirb);
    start(l1b, l2b, uri_l3);
    struct tc_test_server b = srv;

    srv = a;
    struct tc_test_resp r = http("PUT", "/cache/shared", "{\"value\":\"one\",\"ttl\":300}");
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    srv = b;
    r = http("GET", "/cache/shared", NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.x_cache_tier, "l3");
    tc_test_resp_free(&r);
    tc_test_sleep_ms(50);
    cr_assert_eq(peek(l1b, "shared").st, TC_OK, "host b back-filled its L1");

    srv = a;
    r = http("PUT", "/cache/shared", "{\"value\":\"two\",\"ttl\":300}");
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    tc_test_sleep_ms(100);
    cr_assert_eq(peek(l1b, "shared").st, TC_ENOTFOUND, "host b's L1 still holds the old value");
    cr_assert_eq(peek(l2b, "shared").st, TC_ENOTFOUND, "host b's L2 still holds the old value");
    srv = b;
    r = http("GET", "/cache/shared", NULL);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"two\"") != NULL, "host b served %s", r.body);
    tc_test_resp_free(&r);

    srv = a;
    r = http("DELETE", "/cache/shared", NULL);
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    tc_test_sleep_ms(100);
    srv = b;
    r = http("GET", "/cache/shared", NULL);
    cr_assert_eq(r.status, 404, "deleted on a, still served by b from %s", r.x_cache_tier);
    tc_test_resp_free(&r);

    stop_server(); /* b */
    srv = a;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' /dev/shm/%s-b", dirb, shm_name);
    cr_expect_eq(system(cmd), 0);
}
