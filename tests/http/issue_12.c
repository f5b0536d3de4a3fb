/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 12 regressions, through the real server: a damaged store must never
 * answer a wrong value or a 5xx, a corrupt copy is a miss that falls through
 * to the next tier and is replaced, and a positive TTL is never "forever".
 *
 * Every value written here names its key ("val-" + key), so a wrong answer
 * is recognisable. Stores are damaged from this process: LMDB's file with
 * the server stopped (bit flips, zeroed pages) or through the LMDB API while
 * it runs, Redis through a raw connection (a changed byte, another key's
 * item), and a value whose check is right but whose bytes do not render as
 * its encoding says, written through the tier API.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "tests/support/clock.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PREFIX "i12:"

static struct tc_test_server srv;
static struct tc_redis_server *redis;
static char lmdb_dir[64];
static char uri_lmdb[256], uri_redis[256];

static void setup(void)
{
    strcpy(lmdb_dir, "/tmp/tc-i12-XXXXXX");
    cr_assert_not_null(mkdtemp(lmdb_dir));
    snprintf(uri_lmdb, sizeof(uri_lmdb), "lmdb://%s?map_size=64M&sync=none", lmdb_dir);
    uri_redis[0] = '\0';
}

static void need_redis(void)
{
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "redis-server did not start");
    snprintf(uri_redis, sizeof(uri_redis),
             "redis://127.0.0.1:%u/0?prefix=" PREFIX "&timeout_ms=500&invalidate=none",
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
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", lmdb_dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(issue_12, .init = setup, .fini = teardown, .timeout = 120);

static void start(const char *t1, const char *t2)
{
    const char *args[12];
    int n = 0;
    args[n++] = "--workers";
    args[n++] = "2";
    args[n++] = "--tier";
    args[n++] = t1;
    if (t2 != NULL) {
        args[n++] = "--tier";
        args[n++] = t2;
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
    cr_assert_eq(rc, 0, "%s %s: no answer (server log:\n%s)", method, target, srv.log);
    return r;
}

static void put(const char *key, unsigned ttl_s)
{
    char target[128], body[128];
    snprintf(target, sizeof(target), "/cache/%s", key);
    snprintf(body, sizeof(body), "{\"value\":\"val-%s\",\"ttl\":%u}", key, ttl_s);
    struct tc_test_resp r = http("PUT", target, body);
    cr_assert_eq(r.status, 200, "PUT %s: %d %s", key, r.status, r.body);
    tc_test_resp_free(&r);
}

/* GET /cache/key: 1 for the right value, 0 for a 404, -1 for anything else
 * (a wrong value, a 5xx), with what came back in *r for the message. */
static int get_check(const char *key, struct tc_test_resp *r)
{
    char target[128], want[128];
    snprintf(target, sizeof(target), "/cache/%s", key);
    *r = http("GET", target, NULL);
    if (r->status == 404) {
        return 0;
    }
    if (r->status != 200) {
        return -1;
    }
    json_t *j = json_loads(r->body, 0, NULL);
    snprintf(want, sizeof(want), "val-%s", key);
    const char *v = json_string_value(json_object_get(j, "value"));
    int ok = v != NULL && strcmp(v, want) == 0;
    json_decref(j);
    return ok ? 1 : -1;
}

/* tiers[i].name from /stats. */
static long long tier_stat(size_t i, const char *name)
{
    struct tc_test_resp r = http("GET", "/stats", NULL);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *t = json_array_get(json_object_get(j, "tiers"), i);
    cr_assert_not_null(t, "%s", r.body);
    json_t *v = json_object_get(t, name);
    cr_assert(json_is_integer(v), "no tier stat %s in %s", name, r.body);
    long long n = json_integer_value(v);
    json_decref(j);
    tc_test_resp_free(&r);
    return n;
}

static void health_answers(void)
{
    struct tc_test_resp r = http("GET", "/health", NULL);
    cr_assert(r.status == 200 || r.status == 503, "health: %d", r.status);
    tc_test_resp_free(&r);
}

/* ---- a damaged LMDB file --------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Writes keys k0..k(n-1) through the server, stops it, lets damage() edit
 * data.mdb, restarts it and reads every key back: no wrong value, no 5xx. */
static void damaged_lmdb_run(int n, void (*damage)(int fd, off_t size))
{
    start(uri_lmdb, NULL);
    char key[32];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put(key, 3600);
    }
    stop_server();

    char path[128];
    snprintf(path, sizeof(path), "%s/data.mdb", lmdb_dir);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    damage(fd, st.st_size);
    close(fd);

    start(uri_lmdb, NULL);
    int right = 0, missed = 0, wrong = 0;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        struct tc_test_resp r;
        int v = get_check(key, &r);
        if (v < 0 && wrong++ < 3) {
            cr_log_error("GET %s: %d %s", key, r.status, r.body);
        }
        right += v == 1;
        missed += v == 0;
        tc_test_resp_free(&r);
    }
    cr_log_info("damaged data.mdb: %d right, %d misses, %d wrong of %d", right, missed, wrong, n);
    cr_assert_eq(wrong, 0, "%d of %d GETs answered a wrong value or a 5xx", wrong, n);
    health_answers();
}

/* Pages 0 and 1 are LMDB's meta pages: damage there is the open check's
 * business (a separate test), this one is about records. */
#define PAGE 4096

static void flip_bits(int fd, off_t size)
{
    cr_assert_gt(size, 4 * PAGE);
    for (int i = 0; i < 1000; i++) {
        off_t at = 2 * PAGE + (off_t)(next_rand() % (uint64_t)(size - 2 * PAGE));
        unsigned char b;
        cr_assert_eq(pread(fd, &b, 1, at), 1);
        b ^= (unsigned char)(1u << (next_rand() % 8));
        cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    }
}

static void zero_pages(int fd, off_t size)
{
    static const unsigned char zeros[PAGE];
    off_t pages = size / PAGE;
    cr_assert_gt(pages, 30);
    for (int i = 0; i < 20; i++) {
        off_t p = 2 + (off_t)(next_rand() % (uint64_t)(pages - 2));
        cr_assert_eq(pwrite(fd, zeros, PAGE, p * PAGE), PAGE);
    }
}

Test(issue_12, lmdb_bit_flips_never_answer_a_wrong_value)
{
    damaged_lmdb_run(3000, flip_bits);
}

Test(issue_12, lmdb_zeroed_pages_never_answer_a_wrong_value)
{
    damaged_lmdb_run(3000, zero_pages);
}

/* ---- a Redis that changes bytes or hands out another key's item ------------------------ */

static redisContext *raw_redis(void)
{
    redisContext *c = redisConnect("127.0.0.1", (int)tc_redis_server_port(redis));
    cr_assert(c != NULL && c->err == 0);
    return c;
}

static long long raw_exists(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "EXISTS " PREFIX "%s", key);
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Changes the last byte of key's stored value ('0' in "val-k0" becomes 'X'). */
static void alter_payload(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "GET " PREFIX "%s", key);
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING && r->len > TC_ITEM_HDR_SIZE);
    char buf[256];
    cr_assert_lt(r->len, sizeof(buf));
    memcpy(buf, r->str, r->len);
    size_t len = r->len;
    freeReplyObject(r);
    buf[TC_ITEM_HDR_SIZE] = 'X';
    freeReplyObject(redisCommand(c, "SET " PREFIX "%s %b", key, buf, len));
}

static void copy_item(redisContext *c, const char *from, const char *to)
{
    redisReply *r = redisCommand(c, "GET " PREFIX "%s", from);
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING);
    freeReplyObject(redisCommand(c, "SET " PREFIX "%s %b", to, r->str, r->len));
    freeReplyObject(r);
}

Test(issue_12, redis_changed_bytes_and_swapped_items_are_counted_misses)
{
    need_redis();
    start(uri_redis, NULL);
    char key[32], other[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put(key, 3600);
    }
    redisContext *c = raw_redis();
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        if (i % 2 == 0) {
            alter_payload(c, key);
        } else {
            snprintf(other, sizeof(other), "k%d", (i + 2) % 200 | 1);
            copy_item(c, other, key);
        }
    }
    int wrong = 0, missed = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        struct tc_test_resp r;
        int v = get_check(key, &r);
        wrong += v != 0;
        missed += v == 0;
        cr_expect_eq(v, 0, "GET %s: %d %s", key, r.status, r.body);
        tc_test_resp_free(&r);
    }
    cr_assert_eq(wrong, 0);
    cr_assert_eq(missed, 200);
    cr_assert_eq(tier_stat(0, "corrupt"), 200);
    /* The bad copies were deleted: the next GET meets nothing, not them again. */
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cr_assert_eq(raw_exists(c, key), 0, "%s still holds its bad copy", key);
    }
    redisFree(c);
}

Test(issue_12, a_corrupt_copy_falls_through_to_the_next_tier_and_is_replaced)
{
    need_redis();
    start(uri_redis, uri_lmdb);
    put("a", 3600);
    put("b", 3600);
    redisContext *c = raw_redis();
    alter_payload(c, "a");
    copy_item(c, "b", "a");
    alter_payload(c, "b");

    struct tc_test_resp r;
    cr_assert_eq(get_check("a", &r), 1, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.x_cache_tier, "l2");
    tc_test_resp_free(&r);
    cr_assert_eq(get_check("b", &r), 1, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.x_cache_tier, "l2");
    tc_test_resp_free(&r);
    cr_assert_eq(tier_stat(0, "corrupt"), 2);
    /* The back-fill replaced the bad copies: l1 answers now, rightly. */
    tc_test_sleep_ms(200);
    cr_assert_eq(get_check("a", &r), 1, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.x_cache_tier, "l1");
    tc_test_resp_free(&r);
    cr_assert_eq(get_check("b", &r), 1, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.x_cache_tier, "l1");
    tc_test_resp_free(&r);
    cr_assert_eq(tier_stat(0, "corrupt"), 2);
    redisFree(c);
}

/* A record whose check is right but whose value is not what its encoding
 * says (a "string" that is not UTF-8): today it answered 503 on every try. */
static void plant_bad_string(const char *uri, const char *key)
{
    struct tc_tier *t;
    struct tc_tier_ctx *ctx;
    char err[256];
    cr_assert_eq(tc_tier_open(NULL, uri, &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &ctx), TC_OK);
    uint64_t now = tc_test_wall_ms();
    struct tc_tier_req q = {.key = key, .key_len = strlen(key), .now_ms = now};
    q.value = "\xff\xfe not utf-8";
    q.value_len = strlen(q.value);
    q.hdr.encoding = TC_ENC_STRING;
    q.hdr.created_ms = now;
    q.hdr.expire_ms = now + 3600000;
    cr_assert_eq(tc_tier_set(ctx, &q), TC_OK);
    tc_tier_ctx_dispose(ctx);
    tc_tier_close(t);
}

Test(issue_12, a_value_that_does_not_render_is_a_miss_not_a_503)
{
    need_redis();
    start(uri_redis, uri_lmdb);
    put("s", 3600);
    plant_bad_string(uri_redis, "s");
    struct tc_test_resp r;
    cr_assert_eq(get_check("s", &r), 1, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.x_cache_tier, "l2");
    tc_test_resp_free(&r);
    cr_assert_eq(tier_stat(0, "corrupt"), 1);
    tc_test_sleep_ms(200);
    cr_assert_eq(get_check("s", &r), 1, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.x_cache_tier, "l1");
    tc_test_resp_free(&r);

    /* Alone in every tier: a miss (404), and the copy goes. */
    plant_bad_string(uri_redis, "t");
    cr_assert_eq(get_check("t", &r), 0, "%d %s", r.status, r.body);
    tc_test_resp_free(&r);
    redisContext *c = raw_redis();
    tc_test_sleep_ms(100);
    cr_assert_eq(raw_exists(c, "t"), 0);
    redisFree(c);
}

/* ---- a tiny TTL is not "never" ------------------------------------------------------------ */

Test(issue_12, a_tiny_positive_ttl_expires)
{
    start(uri_lmdb, NULL);
    static const char *const bodies[] = {
        "{\"value\":\"x\",\"ttl\":0.0004}",
        "{\"value\":\"x\",\"ttl\":1e-9}",
        "{\"value\":\"x\",\"timeout\":0.0001}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct tc_test_resp r = http("PUT", "/cache/tiny", bodies[i]);
        cr_assert_eq(r.status, 200, "%s: %s", bodies[i], r.body);
        tc_test_resp_free(&r);
        tc_test_sleep_ms(20);
        r = http("GET", "/cache/tiny", NULL);
        cr_assert_eq(r.status, 404, "%s is still there after 20 ms: %s", bodies[i], r.body);
        tc_test_resp_free(&r);
    }
    static const char *const targets[] = {"/cache/tiny?ttl=1e-400", "/cache/tiny?ttl=0.0000001"};
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        struct tc_test_resp r;
        cr_assert_eq(tc_test_http(srv.port, "PUT", targets[i],
                                  "Content-Type: application/octet-stream\r\n", "x", 1, &r),
                     0);
        cr_assert_eq(r.status, 200, "%s: %s", targets[i], r.body);
        tc_test_resp_free(&r);
        tc_test_sleep_ms(20);
        r = http("GET", "/cache/tiny", NULL);
        cr_assert_eq(r.status, 404, "%s is still there after 20 ms: %s", targets[i], r.body);
        tc_test_resp_free(&r);
    }
    /* 0 still means "never expires". */
    struct tc_test_resp r = http("PUT", "/cache/forever", "{\"value\":\"x\",\"ttl\":0}");
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    tc_test_sleep_ms(20);
    r = http("GET", "/cache/forever", NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_not_null(strstr(r.body, "\"ttl\":null"), "%s", r.body);
    tc_test_resp_free(&r);
}
