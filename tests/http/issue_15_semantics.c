/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 15 items 5-7 through the real server: HTTP validators and freshness
 * on GET/HEAD (ETag, Last-Modified, Cache-Control, Date, Age, 304),
 * conditional writes (If-None-Match: *, If-Match) including the race of
 * many clients with one If-Match across workers and two processes sharing
 * shm + LMDB + Redis, the requests people type (curl -d, curl -T,
 * text/plain, typos, empty bodies, a 2 MB value with the defaults), and
 * negative caching of an origin's 404 (tc-test-origin counts requests).
 */
#define _GNU_SOURCE /* mkdtemp */
#include "tests/support/clock.h"
#include "tests/support/origin.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"
#include "src/origin.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define JSON_CT "Content-Type: application/json\r\n"

static struct tc_test_server srv, srv2;
static struct tc_redis_server *redis;
static char shm_name[64], shm_name2[64], lmdb_dir[64];
static char uri_l1[160], uri_l2[160];

static void setup(void)
{
    static int n;
    snprintf(shm_name, sizeof(shm_name), "tc-i15-%d-%d", (int)getpid(), n);
    snprintf(shm_name2, sizeof(shm_name2), "tc-i15b-%d-%d", (int)getpid(), n++);
    strcpy(lmdb_dir, "/tmp/tc-i15-XXXXXX");
    cr_assert_not_null(mkdtemp(lmdb_dir));
    /* Each tier's own defaults (no max_item): item 6 is about them. */
    snprintf(uri_l1, sizeof(uri_l1), "shm://%s?size=64M", shm_name);
    snprintf(uri_l2, sizeof(uri_l2), "lmdb://%s?sync=none", lmdb_dir);
}

static void stop(struct tc_test_server *s)
{
    cr_expect(tc_test_server_stop_clean(s), "server did not exit cleanly (status %d):\n%s",
              s->exit_status, s->log);
}

static void teardown(void)
{
    stop(&srv);
    stop(&srv2);
    tc_redis_server_destroy(redis);
    redis = NULL;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' /dev/shm/%s /dev/shm/%s", lmdb_dir, shm_name,
             shm_name2);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(issue15, .init = setup, .fini = teardown, .timeout = 120);

/* Starts s over the test's L1 (or another shm name) and L2, with extra args. */
static void start_on(struct tc_test_server *s, const char *l1, const char *const *extra)
{
    const char *args[32] = {"--workers", "2", "--tier", l1, "--tier", uri_l2};
    int n = 6;
    while (extra != NULL && *extra != NULL) {
        args[n++] = *extra++;
    }
    args[n] = NULL;
    if (tc_test_server_start(s, args) != 0) {
        cr_assert_fail("tiercache did not start:\n%s", s->log);
    }
}

static struct tc_test_resp req_on(unsigned port, const char *method, const char *target,
                                  const char *headers, const char *body, size_t len)
{
    struct tc_test_resp r;
    int rc = tc_test_http(port, method, target, headers, body, len, &r);
    cr_assert_eq(rc, 0, "%s %s: no answer", method, target);
    return r;
}

static struct tc_test_resp req(const char *method, const char *target, const char *headers,
                               const char *body)
{
    return req_on(srv.port, method, target, headers, body, body ? strlen(body) : 0);
}

/* A response header's value, "" when absent (one static buffer per slot). */
static const char *hdr(const struct tc_test_resp *r, const char *name)
{
    static char buf[4][256];
    static int slot;
    char *b = buf[slot++ % 4];
    if (tc_test_resp_header(r, name, b, sizeof(buf[0])) != 0) {
        b[0] = '\0';
    }
    return b;
}

/* Status of a request, its response freed; checks the error code if given. */
static int status_of(const char *method, const char *target, const char *headers, const char *body,
                     const char *code)
{
    struct tc_test_resp r = req(method, target, headers, body);
    if (code != NULL) {
        json_t *j = json_loads(r.body, 0, NULL);
        cr_assert_not_null(j, "%s %s: not JSON: %s", method, target, r.body);
        cr_expect_str_eq(json_string_value(json_object_get(j, "error")), code, "%s %s: %s", method,
                         target, r.body);
        json_decref(j);
    }
    int st = r.status;
    tc_test_resp_free(&r);
    return st;
}

/* PUTs JSON body and returns the ETag the PUT answered. */
static void put_json(const char *target, const char *body, char etag[64])
{
    struct tc_test_resp r = req("PUT", target, JSON_CT, body);
    cr_assert_eq(r.status, 200, "PUT %s: %d %s", target, r.status, r.body);
    snprintf(etag, 64, "%s", hdr(&r, "etag"));
    cr_assert_eq(strlen(etag), 18, "PUT answers a strong ETag: '%s'", etag);
    tc_test_resp_free(&r);
}

static json_t *body_json(const struct tc_test_resp *r)
{
    json_t *j = json_loads(r->body, 0, NULL);
    cr_assert_not_null(j, "not JSON: %s", r->body);
    return j;
}

/* ---- item 5: validators and freshness on GET/HEAD ------------------------------------ */

Test(issue15, get_has_etag_last_modified_cache_control_date_and_age)
{
    start_on(&srv, uri_l1, NULL);
    char etag[64];
    uint64_t before = tc_test_wall_ms();
    put_json("/cache/v", "{\"value\":\"hello\",\"ttl\":100}", etag);
    struct tc_test_resp r = req("GET", "/cache/v", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_expect_str_eq(hdr(&r, "etag"), etag, "the GET's ETag is the one the PUT answered");
    int64_t lm, date;
    cr_assert_eq(tc_http_date_parse(hdr(&r, "last-modified"), &lm), 0, "Last-Modified: '%s'",
                 hdr(&r, "last-modified"));
    cr_assert_eq(tc_http_date_parse(hdr(&r, "date"), &date), 0, "Date: '%s'", hdr(&r, "date"));
    cr_expect(lm >= (int64_t)(before / 1000) - 1 && lm <= date, "Last-Modified %lld, Date %lld",
              (long long)lm, (long long)date);
    cr_expect_str_eq(hdr(&r, "cache-control"), "private, max-age=100");
    cr_expect(strcmp(hdr(&r, "age"), "0") == 0 || strcmp(hdr(&r, "age"), "1") == 0, "Age: %s",
              hdr(&r, "age"));
    tc_test_resp_free(&r);
    /* Every answer has a Date, not only a served value. */
    r = req("GET", "/cache/absent", NULL, NULL);
    cr_expect_eq(r.status, 404);
    cr_expect_eq(tc_http_date_parse(hdr(&r, "date"), &date), 0, "a 404's Date: '%s'",
                 hdr(&r, "date"));
    tc_test_resp_free(&r);

    /* A second on: max-age is the lifetime, Age grows, max-age - Age is the TTL left. */
    tc_test_sleep_ms(1200);
    r = req("GET", "/cache/v", NULL, NULL);
    cr_expect_str_eq(hdr(&r, "cache-control"), "private, max-age=100");
    long age = atol(hdr(&r, "age"));
    json_t *j = body_json(&r);
    long ttl = (long)json_integer_value(json_object_get(j, "ttl"));
    cr_expect(age >= 1 && age <= 3, "Age: %ld", age);
    cr_expect(100 - age >= ttl - 1 && 100 - age <= ttl, "max-age - Age = %ld, ttl %ld", 100 - age,
              ttl);
    json_decref(j);
    tc_test_resp_free(&r);
}

Test(issue15, if_none_match_gives_304_for_get_and_head)
{
    start_on(&srv, uri_l1, NULL);
    char etag[64], h[160];
    put_json("/cache/n", "{\"value\":[1,2,3],\"ttl\":60}", etag);
    const char *methods[] = {"GET", "HEAD"};
    for (int m = 0; m < 2; m++) {
        snprintf(h, sizeof(h), "If-None-Match: %s\r\n", etag);
        struct tc_test_resp r = req(methods[m], "/cache/n", h, NULL);
        cr_expect_eq(r.status, 304, "%s with its ETag: %d", methods[m], r.status);
        cr_expect_eq(r.body_len, 0);
        cr_expect_str_eq(hdr(&r, "etag"), etag, "a 304 carries the ETag");
        cr_expect_str_eq(hdr(&r, "cache-control"), "private, max-age=60");
        cr_expect_str_eq(hdr(&r, "content-length"), "", "no Content-Length on a 304");
        tc_test_resp_free(&r);
        /* Weak comparison, lists, and "*". */
        snprintf(h, sizeof(h), "If-None-Match: \"x\", W/%s\r\n", etag);
        r = req(methods[m], "/cache/n", h, NULL);
        cr_expect_eq(r.status, 304, "%s with W/ in a list: %d", methods[m], r.status);
        tc_test_resp_free(&r);
        r = req(methods[m], "/cache/n", "If-None-Match: *\r\n", NULL);
        cr_expect_eq(r.status, 304);
        tc_test_resp_free(&r);
        r = req(methods[m], "/cache/n", "If-None-Match: \"0000000000000000\"\r\n", NULL);
        cr_expect_eq(r.status, 200, "another ETag: the value");
        cr_expect_str_eq(hdr(&r, "etag"), etag);
        tc_test_resp_free(&r);
    }
    struct tc_test_resp r = req("GET", "/cache/n", "If-None-Match: \"0000000000000000\"\r\n", NULL);
    json_t *j = body_json(&r);
    cr_expect_eq(json_array_size(json_object_get(j, "value")), 3);
    json_decref(j);
    tc_test_resp_free(&r);
    /* GET If-Match: 412 when it does not match. */
    cr_expect_eq(status_of("GET", "/cache/n", "If-Match: \"0000000000000000\"\r\n", NULL,
                           "precondition_failed"),
                 412);
    snprintf(h, sizeof(h), "If-Match: %s\r\n", etag);
    cr_expect_eq(status_of("GET", "/cache/n", h, NULL, NULL), 200);
}

Test(issue15, if_modified_since_gives_304_unless_if_none_match_disagrees)
{
    start_on(&srv, uri_l1, NULL);
    char etag[64], h[160], lm[64];
    put_json("/cache/m", "{\"value\":1}", etag);
    struct tc_test_resp r = req("GET", "/cache/m", NULL, NULL);
    snprintf(lm, sizeof(lm), "%s", hdr(&r, "last-modified"));
    tc_test_resp_free(&r);
    snprintf(h, sizeof(h), "If-Modified-Since: %s\r\n", lm);
    cr_expect_eq(status_of("GET", "/cache/m", h, NULL, NULL), 304);
    cr_expect_eq(status_of("HEAD", "/cache/m", h, NULL, NULL), 304);
    cr_expect_eq(status_of("GET", "/cache/m",
                           "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", NULL, NULL),
                 200, "modified since 1994");
    cr_expect_eq(status_of("GET", "/cache/m", "If-Modified-Since: garbage\r\n", NULL, NULL), 200);
    /* RFC 9110 §13.1.3: with If-None-Match, If-Modified-Since is not looked at. */
    snprintf(h, sizeof(h), "If-None-Match: \"0000000000000000\"\r\nIf-Modified-Since: %s\r\n", lm);
    cr_expect_eq(status_of("GET", "/cache/m", h, NULL, NULL), 200);
}

Test(issue15, cache_control_public_by_setting)
{
    const char *extra[] = {"--cache-control", "public", NULL};
    start_on(&srv, uri_l1, extra);
    char etag[64];
    put_json("/cache/p", "{\"value\":1,\"ttl\":30}", etag);
    struct tc_test_resp r = req("GET", "/cache/p", NULL, NULL);
    cr_expect_str_eq(hdr(&r, "cache-control"), "public, max-age=30");
    tc_test_resp_free(&r);
}

Test(issue15, etag_and_last_modified_are_the_same_from_every_tier)
{
    start_on(&srv, uri_l1, NULL);
    char etag[64], lm[64];
    put_json("/cache/t", "{\"value\":{\"a\":1},\"ttl\":300}", etag);
    struct tc_test_resp r = req("GET", "/cache/t", NULL, NULL);
    cr_assert_str_eq(r.x_cache_tier, "l1");
    snprintf(lm, sizeof(lm), "%s", hdr(&r, "last-modified"));
    tc_test_resp_free(&r);
    stop(&srv);
    /* Another L1, the same L2: the value now comes from LMDB. */
    char other[160];
    snprintf(other, sizeof(other), "shm://%s?size=16M", shm_name2);
    start_on(&srv, other, NULL);
    r = req("GET", "/cache/t", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_expect_str_eq(r.x_cache_tier, "l2");
    cr_expect_str_eq(hdr(&r, "etag"), etag, "from l2");
    cr_expect_str_eq(hdr(&r, "last-modified"), lm, "from l2");
    tc_test_resp_free(&r);
    /* The back-fill into L1 follows the answer, and with two workers the
     * next request may be read by the other worker before it is done: ask
     * until L1 answers (5 s deadline), then compare that answer's validators. */
    uint64_t deadline = tc_test_wall_ms() + 5000;
    for (;;) {
        r = req("GET", "/cache/t", NULL, NULL);
        cr_assert_eq(r.status, 200);
        if (strcmp(r.x_cache_tier, "l1") == 0 || tc_test_wall_ms() > deadline) {
            break;
        }
        tc_test_resp_free(&r);
        usleep(10 * 1000);
    }
    cr_expect_str_eq(r.x_cache_tier, "l1", "back-filled within 5 s");
    cr_expect_str_eq(hdr(&r, "etag"), etag, "from the back-filled l1");
    cr_expect_str_eq(hdr(&r, "last-modified"), lm, "from the back-filled l1");
    tc_test_resp_free(&r);
}

/* A value past the shm ring's one-block check (1 KiB) is read in two parts
 * (its header aside, the payload where it is served) with a streamed check:
 * every read of it, not only the first, is an L1 hit with the same bytes and
 * ETag. (A stack-allocated XXH3 state left uninitialised once made every
 * read after the first a corrupt miss.) */
Test(issue15, a_large_value_is_an_l1_hit_on_every_read)
{
    start_on(&srv, uri_l1, NULL);
    static char body[70000], want[66000];
    for (int round = 0; round < 2; round++) {
        size_t n = round == 0 ? 1000 : 65536;
        memset(want, 'a' + round, n);
        want[n] = '\0';
        snprintf(body, sizeof(body), "{\"value\":\"%s\",\"ttl\":300}", want);
        char etag[64], target[32];
        snprintf(target, sizeof(target), "/cache/large%d", round);
        put_json(target, body, etag);
        for (int i = 0; i < 4; i++) {
            struct tc_test_resp r = req("GET", target, NULL, NULL);
            cr_assert_eq(r.status, 200, "%zu bytes, read %d: %d %s", n, i, r.status, r.body);
            cr_expect_str_eq(r.x_cache_tier, "l1", "%zu bytes, read %d", n, i);
            cr_expect_str_eq(hdr(&r, "etag"), etag, "%zu bytes, read %d", n, i);
            json_t *j = body_json(&r);
            cr_expect_str_eq(json_string_value(json_object_get(j, "value")), want);
            json_decref(j);
            tc_test_resp_free(&r);
        }
    }
}

/* Hot copies (tiers/tier_shm.c): a 64 KiB key overwritten again and again
 * while readers on both workers read it. Every answer is one whole version
 * (never a mix), and never older than the last write completed before the
 * read was sent; the copies did answer (hot_hits). L1 alone: with an L2
 * behind it, a read that meets a record being rewritten in place falls
 * through to L2 and may write an older value back (a race of its own,
 * with or without hot copies: see docs/tiers.md). */
#define HOT_VERSIONS 150
#define HOT_LEN      65536

static _Atomic int hot_written, hot_stop;

static void hot_value(char *v, int version)
{
    for (size_t i = 0; i < HOT_LEN; i += 8) {
        snprintf(v + i, 9, "%08d", version);
    }
}

static void *hot_reader(void *arg)
{
    unsigned port = *(unsigned *)arg;
    int fd = tc_test_connect(port);
    static _Thread_local char want[HOT_LEN + 1];
    long bad = 0;
    while (fd >= 0 && !atomic_load(&hot_stop)) {
        int floor = atomic_load(&hot_written);
        struct tc_test_resp r;
        if (tc_test_http_fd(fd, "GET", "/cache/hot", NULL, NULL, 0, &r) != 0) {
            bad++;
            break;
        }
        if (r.status == 200) {
            json_error_t e;
            json_t *j = json_loads(r.body, 0, &e);
            const char *v = json_string_value(json_object_get(j, "value"));
            char first[9] = "";
            if (v != NULL) {
                memcpy(first, v, 8); /* the version, repeated: read the first */
            }
            int version = atoi(first);
            hot_value(want, version);
            bad += v == NULL || strlen(v) != HOT_LEN || memcmp(v, want, HOT_LEN) != 0 ||
                   version < floor;
            json_decref(j);
        }
        tc_test_resp_free(&r);
    }
    if (fd >= 0) {
        close(fd);
    }
    return (void *)bad;
}

Test(issue15, hot_copies_of_a_large_key_follow_every_overwrite)
{
    const char *args[] = {"--workers", "2", "--tier", uri_l1, NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "tiercache did not start:\n%s", srv.log);
    static char body[HOT_LEN + 64], v[HOT_LEN + 1];
    pthread_t th[4];
    atomic_store(&hot_written, 0);
    atomic_store(&hot_stop, 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, hot_reader, &srv.port), 0);
    }
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    for (int version = 1; version <= HOT_VERSIONS; version++) {
        hot_value(v, version);
        snprintf(body, sizeof(body), "{\"value\":\"%s\",\"ttl\":300}", v);
        struct tc_test_resp r;
        cr_assert_eq(tc_test_http_fd(fd, "PUT", "/cache/hot", JSON_CT, body, strlen(body), &r), 0);
        cr_assert_eq(r.status, 200, "PUT %d: %s", version, r.body);
        tc_test_resp_free(&r);
        atomic_store(&hot_written, version);
        usleep(2000);
    }
    close(fd);
    usleep(100000);
    atomic_store(&hot_stop, 1);
    long bad = 0;
    for (int i = 0; i < 4; i++) {
        void *b;
        pthread_join(th[i], &b);
        bad += (long)b;
    }
    cr_assert_eq(bad, 0, "%ld answers were a mixed, wrong or older version", bad);
    struct tc_test_resp st = req("GET", "/stats", NULL, NULL);
    cr_assert(strstr(st.body, "\"hot_hits\"") != NULL, "%s", st.body);
    const char *h = strstr(st.body, "\"hot_hits\"");
    cr_assert_gt(atol(strchr(h, ':') + 1), 0, "no read was answered from a hot copy");
    tc_test_resp_free(&st);
}

/* ---- item 5: conditional writes -------------------------------------------------------- */

Test(issue15, if_none_match_star_stores_only_when_absent)
{
    start_on(&srv, uri_l1, NULL);
    cr_expect_eq(status_of("PUT", "/cache/add", JSON_CT "If-None-Match: *\r\n",
                           "{\"value\":\"first\"}", NULL),
                 200);
    cr_expect_eq(status_of("PUT", "/cache/add", JSON_CT "If-None-Match: *\r\n",
                           "{\"value\":\"second\"}", "precondition_failed"),
                 412);
    struct tc_test_resp r = req("GET", "/cache/add", NULL, NULL);
    json_t *j = body_json(&r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "value")), "first", "nothing stored");
    json_decref(j);
    tc_test_resp_free(&r);
    /* Deleted: absent again. */
    cr_expect_eq(status_of("DELETE", "/cache/add", NULL, NULL, NULL), 200);
    cr_expect_eq(status_of("PUT", "/cache/add", "If-None-Match: *\r\n", "bytes", NULL), 200);
}

Test(issue15, if_match_is_compare_and_set)
{
    start_on(&srv, uri_l1, NULL);
    char e1[64], e2[64], h[160];
    put_json("/cache/cas", "{\"value\":1}", e1);
    snprintf(h, sizeof(h), JSON_CT "If-Match: %s\r\n", e1);
    struct tc_test_resp r = req("PUT", "/cache/cas", h, "{\"value\":2}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    snprintf(e2, sizeof(e2), "%s", hdr(&r, "etag"));
    tc_test_resp_free(&r);
    cr_expect_str_neq(e2, e1);
    /* e1 is stale now. */
    cr_expect_eq(status_of("PUT", "/cache/cas", h, "{\"value\":3}", "precondition_failed"), 412);
    r = req("GET", "/cache/cas", NULL, NULL);
    cr_expect_str_eq(r.body, "{\"key\":\"cas\",\"value\":2,\"ttl\":3600}");
    cr_expect_str_eq(hdr(&r, "etag"), e2);
    tc_test_resp_free(&r);
    /* The same value written again is another version: e2 no longer matches. */
    put_json("/cache/cas", "{\"value\":2}", e1);
    snprintf(h, sizeof(h), JSON_CT "If-Match: %s\r\n", e2);
    tc_test_sleep_ms(2);
    cr_expect_eq(status_of("PUT", "/cache/cas", h, "{\"value\":4}", "precondition_failed"), 412);
    /* No value: If-Match never holds, If-Match: * neither. */
    cr_expect_eq(status_of("PUT", "/cache/none", h, "{\"value\":1}", "precondition_failed"), 412);
    cr_expect_eq(status_of("PUT", "/cache/none", JSON_CT "If-Match: *\r\n", "{\"value\":1}",
                           "precondition_failed"),
                 412);
    cr_expect_eq(status_of("GET", "/cache/none", NULL, NULL, "not_found"), 404);
    cr_expect_eq(status_of("PUT", "/cache/cas", JSON_CT "If-Match: *\r\n", "{\"value\":5}", NULL),
                 200);
    /* DELETE with If-Match: only that value. */
    r = req("GET", "/cache/cas", NULL, NULL);
    snprintf(e1, sizeof(e1), "%s", hdr(&r, "etag"));
    tc_test_resp_free(&r);
    cr_expect_eq(status_of("DELETE", "/cache/cas", "If-Match: \"0000000000000000\"\r\n", NULL,
                           "precondition_failed"),
                 412);
    cr_expect_eq(status_of("GET", "/cache/cas", NULL, NULL, NULL), 200);
    snprintf(h, sizeof(h), "If-Match: %s\r\n", e1);
    cr_expect_eq(status_of("DELETE", "/cache/cas", h, NULL, NULL), 200);
    cr_expect_eq(status_of("GET", "/cache/cas", NULL, NULL, NULL), 404);
}

/* The race: RACERS clients, half on each of two servers (2 workers each)
 * sharing shm + LMDB + Redis, PUT with the same If-Match at once. */
#define RACERS 12
#define ROUNDS 15

struct racer {
    unsigned port;
    int id;
    const char *etag;
    pthread_barrier_t *go;
    int status;
};

static void *race(void *arg)
{
    struct racer *rc = arg;
    int fd = tc_test_connect(rc->port);
    char h[160], body[64];
    snprintf(h, sizeof(h), JSON_CT "If-Match: %s\r\n", rc->etag);
    snprintf(body, sizeof(body), "{\"value\":\"racer %d\"}", rc->id);
    pthread_barrier_wait(rc->go);
    struct tc_test_resp r;
    rc->status =
        fd >= 0 && tc_test_http_fd(fd, "PUT", "/cache/race", h, body, strlen(body), &r) == 0
            ? r.status
            : -1;
    if (rc->status != -1) {
        tc_test_resp_free(&r);
    }
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

Test(issue15, same_if_match_racing_across_workers_and_processes_has_one_winner)
{
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "redis-server did not start");
    char l3[160];
    snprintf(l3, sizeof(l3), "redis://127.0.0.1:%u/0?prefix=i15:&timeout_ms=500",
             tc_redis_server_port(redis));
    const char *extra[] = {"--tier", l3, NULL};
    start_on(&srv, uri_l1, extra);
    start_on(&srv2, uri_l1, extra);
    for (int round = 0; round < ROUNDS; round++) {
        char etag[64];
        put_json("/cache/race", "{\"value\":\"base\"}", etag);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, RACERS);
        pthread_t t[RACERS];
        struct racer rc[RACERS];
        for (int i = 0; i < RACERS; i++) {
            rc[i] = (struct racer){i % 2 ? srv2.port : srv.port, i, etag, &go, 0};
            pthread_create(&t[i], NULL, race, &rc[i]);
        }
        int won = -1, ok = 0, failed = 0;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(t[i], NULL);
            if (rc[i].status == 200) {
                ok++;
                won = i;
            } else if (rc[i].status == 412) {
                failed++;
            }
        }
        pthread_barrier_destroy(&go);
        cr_assert_eq(ok, 1, "round %d: %d of %d racers stored", round, ok, RACERS);
        cr_assert_eq(failed, RACERS - 1, "round %d: the others get 412", round);
        /* Both servers serve the winner's value. */
        char want[64];
        snprintf(want, sizeof(want), "racer %d", won);
        unsigned ports[2] = {srv.port, srv2.port};
        for (int s = 0; s < 2; s++) {
            struct tc_test_resp r = req_on(ports[s], "GET", "/cache/race", NULL, NULL, 0);
            json_t *j = body_json(&r);
            cr_expect_str_eq(json_string_value(json_object_get(j, "value")), want);
            json_decref(j);
            tc_test_resp_free(&r);
        }
    }
}

/* ---- item 6: what people type ----------------------------------------------------------- */

#define FORM_CT "Content-Type: application/x-www-form-urlencoded\r\n"

Test(issue15, curl_d_json_is_read_as_json_but_not_from_a_web_page)
{
    /* A page of app.example may write (CORS); any other origin may not. */
    start_on(&srv, uri_l1, (const char *const[]){"--allowed-origins", "https://app.example", NULL});
    /* curl -X PUT -d '{"value":1}' URL */
    cr_expect_eq(status_of("PUT", "/cache/d", FORM_CT, "{\"value\":1,\"ttl\":50}", NULL), 200);
    struct tc_test_resp r = req("GET", "/cache/d", NULL, NULL);
    cr_expect_str_eq(r.body, "{\"key\":\"d\",\"value\":1,\"ttl\":50}");
    tc_test_resp_free(&r);
    /* A form a web page posts cross-site carries Origin: still refused, by
     * the origin check (src/auth.c) for an origin not allowed, and as a
     * form body even from an allowed one (a form needs no CORS preflight). */
    cr_expect_eq(status_of("PUT", "/cache/x", FORM_CT "Origin: http://evil.example\r\n",
                           "{\"value\":1}", "forbidden"),
                 403);
    cr_expect_eq(status_of("PUT", "/cache/x", FORM_CT "Origin: https://app.example\r\n",
                           "{\"value\":1}", "unsupported_media_type"),
                 415);
    cr_expect_eq(status_of("GET", "/cache/x", NULL, NULL, NULL), 404);
}

Test(issue15, curl_T_without_content_type_stores_bytes)
{
    start_on(&srv, uri_l1, NULL);
    static const char file[] = "line one\n\0\xff binary\n";
    struct tc_test_resp r =
        req_on(srv.port, "PUT", "/cache/file?ttl=40", NULL, file, sizeof(file) - 1);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    r = req_on(srv.port, "GET", "/cache/file", "Accept: application/octet-stream\r\n", NULL, 0);
    cr_assert_eq(r.body_len, sizeof(file) - 1);
    cr_expect_eq(memcmp(r.body, file, sizeof(file) - 1), 0);
    tc_test_resp_free(&r);
    r = req("GET", "/cache/file", NULL, NULL);
    json_t *j = body_json(&r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "encoding")), "base64");
    cr_expect_eq(json_integer_value(json_object_get(j, "ttl")), 40);
    json_decref(j);
    tc_test_resp_free(&r);
    /* A JSON-looking file without a Content-Type is bytes too: one rule. */
    cr_expect_eq(status_of("PUT", "/cache/jf", NULL, "{\"value\":1}", NULL), 200);
    r = req("GET", "/cache/jf", NULL, NULL);
    j = body_json(&r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "value")), "eyJ2YWx1ZSI6MX0=");
    json_decref(j);
    tc_test_resp_free(&r);
}

Test(issue15, text_plain_stores_a_string)
{
    start_on(&srv, uri_l1, NULL);
    cr_expect_eq(status_of("PUT", "/cache/s", "Content-Type: text/plain; charset=utf-8\r\n",
                           "h\xc3\xa9llo \"world\"\n", NULL),
                 200);
    struct tc_test_resp r = req("GET", "/cache/s", NULL, NULL);
    json_t *j = body_json(&r);
    cr_expect_str_eq(json_string_value(json_object_get(j, "value")), "h\xc3\xa9llo \"world\"\n");
    cr_expect_null(json_object_get(j, "encoding"));
    json_decref(j);
    tc_test_resp_free(&r);
    cr_expect_eq(status_of("PUT", "/cache/s2", "Content-Type: text/plain\r\n", "bad \xff byte",
                           "bad_request"),
                 400);
    cr_expect_eq(
        status_of("PUT", "/cache/s3", "Content-Type: image/png\r\n", "x", "unsupported_media_type"),
        415);
}

Test(issue15, misspelt_fields_are_refused_with_the_valid_ones)
{
    start_on(&srv, uri_l1, NULL);
    struct tc_test_resp r = req("PUT", "/cache/typo", JSON_CT, "{\"value\":1,\"tll\":5}");
    cr_expect_eq(r.status, 400);
    json_t *j = body_json(&r);
    const char *msg = json_string_value(json_object_get(j, "message"));
    cr_expect_str_eq(json_string_value(json_object_get(j, "error")), "unknown_field");
    cr_assert(msg != NULL && strstr(msg, "\"tll\"") && strstr(msg, "value, ttl, timeout"), "%s",
              r.body);
    json_decref(j);
    tc_test_resp_free(&r);
    r = req("PUT", "/cache/typo?tll=5", JSON_CT, "{\"value\":1}");
    cr_expect_eq(r.status, 400);
    cr_expect(strstr(r.body, "unknown_field") && strstr(r.body, "\\\"tll\\\"") &&
                  strstr(r.body, "?ttl"),
              "%s", r.body);
    tc_test_resp_free(&r);
    cr_expect_eq(status_of("GET", "/cache/typo", NULL, NULL, "not_found"), 404, "nothing stored");
    cr_expect_eq(status_of("PUT", "/cache/typo", JSON_CT, "{}", "missing_value"), 400);
    cr_expect_eq(status_of("PUT", "/cache/typo?ttl=5", JSON_CT, "{\"value\":1}", NULL), 200);
}

Test(issue15, an_empty_body_says_empty_body)
{
    start_on(&srv, uri_l1, NULL);
    const char *cts[] = {JSON_CT, FORM_CT, NULL};
    for (int i = 0; i < 3; i++) {
        struct tc_test_resp r = req_on(srv.port, "PUT", "/cache/e", cts[i], "", 0);
        cr_expect_eq(r.status, 400, "%s", r.body);
        cr_expect(strstr(r.body, "\"empty_body\"") && strstr(r.body, "empty body"), "%s", r.body);
        tc_test_resp_free(&r);
    }
    cr_expect_eq(status_of("GET", "/cache/e", NULL, NULL, NULL), 404);
    /* An empty value, said so. */
    struct tc_test_resp r =
        req_on(srv.port, "PUT", "/cache/e", "Content-Type: application/octet-stream\r\n", "", 0);
    cr_expect_eq(r.status, 200);
    tc_test_resp_free(&r);
    cr_expect_eq(status_of("GET", "/cache/e", NULL, NULL, NULL), 200);
}

/* Every route that reads a JSON body reads it by one rule (src/api.c
 * tc_api_body_parse): a form-encoded body from a web page is refused on
 * each of them, not only on PUT; curl -d without an Origin still works. */
Test(issue15, a_form_from_a_web_page_is_refused_on_every_json_route)
{
    start_on(&srv, uri_l1, (const char *const[]){"--allowed-origins", "https://app.example", NULL});
    cr_expect_eq(status_of("PUT", "/cache/k", JSON_CT, "{\"value\":1}", NULL), 200);
    static const char *const posts[][2] = {
        {"/purge", "{\"prefix\":\"k\"}"},
        {"/batch/set", "{\"items\":[{\"key\":\"f\",\"value\":1}]}"},
        {"/batch/delete", "{\"keys\":[\"k\"]}"},
        {"/batch/get", "{\"keys\":[\"k\"]}"},
        {"/counters/c", "{\"by\":5}"},
        {"/counters/c", ""}, /* an empty form: still a form from a web page */
        {"/limits/l", "{\"limit\":1,\"window\":60}"},
        {"/locks/m", "{\"ttl\":30}"},
    };
    for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++) {
        cr_expect_eq(status_of("POST", posts[i][0], FORM_CT "Origin: https://app.example\r\n",
                               posts[i][1], "unsupported_media_type"),
                     415, "POST %s %s", posts[i][0], posts[i][1]);
    }
    /* Nothing was purged, stored, counted, limited or locked. */
    cr_expect_eq(status_of("GET", "/cache/k", NULL, NULL, NULL), 200);
    cr_expect_eq(status_of("GET", "/cache/f", NULL, NULL, NULL), 404);
    struct tc_test_resp r = req("GET", "/counters/c", NULL, NULL);
    cr_expect(strstr(r.body, "\"value\":0") != NULL, "%s", r.body);
    tc_test_resp_free(&r);
    cr_expect_eq(status_of("POST", "/limits/l", JSON_CT, "{\"limit\":1,\"window\":60}", NULL), 200);
    r = req("GET", "/locks/m", NULL, NULL);
    cr_expect(strstr(r.body, "\"held\":false") != NULL, "%s", r.body);
    tc_test_resp_free(&r);
    /* The same form from curl (no Origin) is read as JSON. */
    cr_expect_eq(status_of("POST", "/batch/set", FORM_CT, posts[1][1], NULL), 200);
    cr_expect_eq(status_of("GET", "/cache/f", NULL, NULL, NULL), 200);
    cr_expect_eq(status_of("POST", "/purge", FORM_CT, posts[0][1], NULL), 200);
}

/* One error code for a member a route does not know, naming it, on every
 * route that takes a JSON body (and on each item of a /batch/set). */
Test(issue15, an_unknown_member_is_unknown_field_on_every_route)
{
    start_on(&srv, uri_l1, NULL);
    static const char *const calls[][3] = {
        {"PUT", "/cache/k", "{\"value\":1,\"tll\":5}"},
        {"POST", "/batch/get", "{\"keys\":[\"k\"],\"tll\":5}"},
        {"POST", "/batch/delete", "{\"keys\":[\"k\"],\"tll\":5}"},
        {"POST", "/batch/set", "{\"items\":[],\"tll\":5}"},
        {"POST", "/batch/set", "{\"items\":[{\"key\":\"k\",\"value\":1,\"tll\":5}]}"},
        {"POST", "/purge", "{\"prefix\":\"k\",\"tll\":5}"},
        {"POST", "/counters/c", "{\"by\":1,\"tll\":5}"},
        {"POST", "/limits/l", "{\"limit\":5,\"window\":1,\"tll\":5}"},
        {"POST", "/locks/m", "{\"ttl\":5,\"tll\":5}"},
        {"PATCH", "/locks/m", "{\"ttl\":5,\"tll\":5}"},
        {"DELETE", "/locks/m", "{\"token\":\"t\",\"tll\":5}"},
        {"PATCH", "/cache/k", "{\"ttl\":5,\"tll\":5}"}, /* a cache lease renewal */
    };
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        struct tc_test_resp r = req(calls[i][0], calls[i][1], JSON_CT, calls[i][2]);
        cr_expect_eq(r.status, 400, "%s %s %s: %s", calls[i][0], calls[i][1], calls[i][2], r.body);
        json_t *j = body_json(&r);
        const char *code = json_string_value(json_object_get(j, "error"));
        const char *msg = json_string_value(json_object_get(j, "message"));
        cr_expect(code != NULL && strcmp(code, "unknown_field") == 0, "%s %s: %s", calls[i][0],
                  calls[i][1], r.body);
        cr_expect(msg != NULL && strstr(msg, "\"tll\"") && strstr(msg, "valid:"), "%s %s: %s",
                  calls[i][0], calls[i][1], r.body);
        json_decref(j);
        tc_test_resp_free(&r);
    }
    cr_expect_eq(status_of("GET", "/cache/k", NULL, NULL, NULL), 404, "nothing stored");
    /* An empty body is empty_body wherever a body is needed; counters and
     * locks take one as "all defaults". */
    cr_expect_eq(status_of("POST", "/batch/get", JSON_CT, "", "empty_body"), 400);
    cr_expect_eq(status_of("POST", "/purge", JSON_CT, "", "empty_body"), 400);
    cr_expect_eq(status_of("POST", "/counters/c", JSON_CT, "", NULL), 200);
}

Test(issue15, a_two_megabyte_value_is_stored_with_the_defaults)
{
    start_on(&srv, uri_l1, NULL); /* no --max-value, no max_item: every default */
    size_t n = 2u << 20;
    char *v = malloc(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = (char)(i * 7 + i / 251);
    }
    struct tc_test_resp r =
        req_on(srv.port, "PUT", "/cache/big", "Content-Type: application/octet-stream\r\n", v, n);
    cr_expect_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    r = req_on(srv.port, "GET", "/cache/big", "Accept: application/octet-stream\r\n", NULL, 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.x_cache_tier, "l2", "too large for the L1 ring, which is right");
    cr_expect(r.body_len == n && memcmp(r.body, v, n) == 0);
    tc_test_resp_free(&r);
    /* A large plain string goes out by reference between its JSON head and
     * tail, and more than the socket takes at once: the rest waits in order. */
    size_t sn = 1536u << 10;
    char *body = malloc(sn + 32);
    memcpy(body, "{\"value\":\"", 10);
    for (size_t i = 0; i < sn; i++) {
        body[10 + i] = (char)('a' + i % 26);
    }
    memcpy(body + 10 + sn, "\"}", 3);
    r = req_on(srv.port, "PUT", "/cache/bigs", JSON_CT, body, sn + 12);
    cr_expect_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    r = req("GET", "/cache/bigs", NULL, NULL);
    cr_assert_eq(r.status, 200);
    json_t *j = body_json(&r);
    const char *got = json_string_value(json_object_get(j, "value"));
    cr_expect(got != NULL && strlen(got) == sn && memcmp(got, body + 10, sn) == 0);
    cr_expect_eq(json_integer_value(json_object_get(j, "ttl")), 3600);
    json_decref(j);
    tc_test_resp_free(&r);
    free(body);
    free(v);
}

/* ---- item 7: negative caching ------------------------------------------------------------ */

Test(issue15, negative_ttl_remembers_an_origin_404_then_forgets_it)
{
    struct tc_test_origin origin;
    const char *oargs[] = {"--status", "404", NULL};
    cr_assert_eq(tc_test_origin_start(&origin, oargs), 0);
    const char *extra[] = {"--origin", origin.url, "--negative-ttl", "1500ms", NULL};
    start_on(&srv, uri_l1, extra);
    struct tc_test_resp r = req("GET", "/cache/gone", NULL, NULL);
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq(r.x_cache, "MISS");
    tc_test_resp_free(&r);
    cr_expect_eq(tc_test_origin_requests(&origin), 1);
    for (int i = 0; i < 3; i++) {
        r = req("GET", "/cache/gone", NULL, NULL);
        cr_expect_eq(r.status, 404, "%s", r.body);
        cr_expect_str_eq(r.x_cache, "HIT", "remembered");
        cr_expect(strstr(r.body, "\"not_found\"") != NULL, "%s", r.body);
        tc_test_resp_free(&r);
    }
    cr_expect_eq(tc_test_origin_requests(&origin), 1, "the origin was not asked again");
    /* A second process on the same tiers remembers it too. */
    start_on(&srv2, uri_l1, extra);
    r = req_on(srv2.port, "GET", "/cache/gone", NULL, NULL, 0);
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq(r.x_cache, "HIT");
    tc_test_resp_free(&r);
    cr_expect_eq(tc_test_origin_requests(&origin), 1);
    /* After negative-ttl the origin is asked again; a 410 is remembered too. */
    tc_test_sleep_ms(1700);
    cr_assert_eq(tc_test_origin_config(&origin, "status=410"), 0);
    r = req("GET", "/cache/gone", NULL, NULL);
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq(r.x_cache, "MISS");
    tc_test_resp_free(&r);
    cr_expect_eq(tc_test_origin_requests(&origin), 2, "expired: asked again");
    r = req("GET", "/cache/gone", NULL, NULL);
    cr_expect_str_eq(r.x_cache, "HIT");
    tc_test_resp_free(&r);
    cr_expect_eq(tc_test_origin_requests(&origin), 2);
    /* A remembered 404 is no value: If-None-Match: * stores over it. */
    cr_expect_eq(status_of("PUT", "/cache/gone", JSON_CT "If-None-Match: *\r\n",
                           "{\"value\":\"now\"}", NULL),
                 200);
    cr_expect_eq(status_of("GET", "/cache/gone", NULL, NULL, NULL), 200);
    cr_expect_eq(tc_test_origin_requests(&origin), 2);
    stop(&srv);
    stop(&srv2);
    cr_expect_eq(tc_test_origin_stop(&origin), 0);
}
