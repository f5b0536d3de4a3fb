/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 15 (bulk, purge, keys) through real servers: two tiercache
 * processes, each with its own shm L1 and LMDB L2, sharing one private
 * redis-server L3 (as two hosts would). The test opens the same tiers
 * through the tier API to see what each holds.
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
#include <unistd.h>

static struct tc_test_server srv_a, srv_b;
static struct tc_redis_server *redis;
static char name_a[64], name_b[64], dir_a[64], dir_b[64];
static char l1_a[256], l2_a[256], l1_b[256], l2_b[256], l3[256];

static void setup(void)
{
    static int n;
    snprintf(name_a, sizeof(name_a), "tc-i15a-%d-%d", (int)getpid(), n);
    snprintf(name_b, sizeof(name_b), "tc-i15b-%d-%d", (int)getpid(), n++);
    strcpy(dir_a, "/tmp/tc-i15a-XXXXXX");
    strcpy(dir_b, "/tmp/tc-i15b-XXXXXX");
    cr_assert_not_null(mkdtemp(dir_a));
    cr_assert_not_null(mkdtemp(dir_b));
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "redis-server did not start");
    snprintf(l1_a, sizeof(l1_a), "shm://%s?size=8M", name_a);
    snprintf(l1_b, sizeof(l1_b), "shm://%s?size=8M", name_b);
    snprintf(l2_a, sizeof(l2_a), "lmdb://%s?map_size=64M&sync=none", dir_a);
    snprintf(l2_b, sizeof(l2_b), "lmdb://%s?map_size=64M&sync=none", dir_b);
    snprintf(l3, sizeof(l3), "redis://127.0.0.1:%u/0?prefix=i15:&timeout_ms=500",
             tc_redis_server_port(redis));
}

static void stop(struct tc_test_server *s)
{
    cr_expect(tc_test_server_stop_clean(s), "server did not exit cleanly (status %d):\n%s",
              s->exit_status, s->log);
}

static void teardown(void)
{
    stop(&srv_a);
    stop(&srv_b);
    tc_redis_server_destroy(redis);
    redis = NULL;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' /dev/shm/%s* /dev/shm/%s*", dir_a, dir_b, name_a,
             name_b);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(issue_15, .init = setup, .fini = teardown, .timeout = 60);

/* Starts @p s over l1, l2 (and the shared l3 if @p with_l3), plus @p extra args. */
static void start(struct tc_test_server *s, const char *l1, const char *l2, int with_l3,
                  const char *extra_name, const char *extra_val)
{
    const char *args[16];
    int n = 0;
    args[n++] = "--workers";
    args[n++] = "2";
    args[n++] = "--tier";
    args[n++] = l1;
    args[n++] = "--tier";
    args[n++] = l2;
    if (with_l3) {
        args[n++] = "--tier";
        args[n++] = l3;
    }
    if (extra_name != NULL) {
        args[n++] = extra_name;
        args[n++] = extra_val;
    }
    args[n] = NULL;
    if (tc_test_server_start(s, args) != 0) {
        cr_assert_fail("tiercache did not start:\n%s", s->log);
    }
}

static struct tc_test_resp req(struct tc_test_server *s, const char *method, const char *target,
                               const char *ctype, const void *body, size_t len)
{
    struct tc_test_resp r;
    char h[128] = "";
    if (ctype != NULL) {
        snprintf(h, sizeof(h), "Content-Type: %s\r\n", ctype);
    }
    int rc = tc_test_http(s->port, method, target, h[0] ? h : NULL, body, len, &r);
    cr_assert_eq(rc, 0, "%s %s: no answer", method, target);
    return r;
}

/* A JSON request; returns the status and the parsed body in *out (may be NULL). */
static int call(struct tc_test_server *s, const char *method, const char *target, const char *body,
                json_t **out)
{
    struct tc_test_resp r =
        req(s, method, target, body ? "application/json" : NULL, body, body ? strlen(body) : 0);
    int status = r.status;
    if (out != NULL) {
        json_error_t e;
        *out = json_loads(r.body, 0, &e);
        cr_assert_not_null(*out, "%s %s: not JSON: %s", method, target, r.body);
    }
    tc_test_resp_free(&r);
    return status;
}

/* Status and "error" code of a request expected to fail. */
static void expect_error(struct tc_test_server *s, const char *target, const char *body, int status,
                         const char *code)
{
    json_t *j;
    int st = call(s, "POST", target, body, &j);
    cr_expect_eq(st, status, "POST %s %s: %d, want %d", target, body, st, status);
    const char *got = json_string_value(json_object_get(j, "error"));
    cr_expect(got != NULL && strcmp(got, code) == 0, "POST %s %s: error %s, want %s", target, body,
              got ? got : "(none)", code);
    cr_expect(json_is_string(json_object_get(j, "message")), "no message");
    json_decref(j);
}

static void put(struct tc_test_server *s, const char *key, const char *body)
{
    char t[256];
    snprintf(t, sizeof(t), "/cache/%s", key);
    cr_assert_eq(call(s, "PUT", t, body, NULL), 200, "PUT %s", key);
}

static int get_status(struct tc_test_server *s, const char *key)
{
    char t[256];
    snprintf(t, sizeof(t), "/cache/%s", key);
    return call(s, "GET", t, NULL, NULL);
}

/* What tier @p uri holds for @p k, seen from this process. */
static enum tc_status peek(const char *uri, const char *k)
{
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[256];
    cr_assert_eq(tc_tier_open(NULL, uri, &t, err, sizeof(err)), TC_OK, "%s: %s", uri, err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct tc_buf out = TC_BUF_INIT;
    struct tc_tier_req r = {
        .key = k, .key_len = strlen(k), .out = &out, .now_ms = tc_test_wall_ms()};
    enum tc_status st = tc_tier_get(c, &r);
    tc_buf_deinit(&out);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    return st;
}

/* ---- bulk ---------------------------------------------------------------------------- */

Test(issue_15, batch_routes_refuse_bad_requests_and_store_nothing)
{
    start(&srv_a, l1_a, l2_a, 0, "--max-batch", "4");
    const char *routes[] = {"/batch/get", "/batch/set", "/batch/delete"};
    for (int i = 0; i < 3; i++) {
        expect_error(&srv_a, routes[i], "{\"keys\":", 400, "bad_json");
        expect_error(&srv_a, routes[i], "[1,2]", 400, "bad_json");
        expect_error(&srv_a, routes[i], "{}", 400, "bad_request");
        expect_error(&srv_a, routes[i], "{\"keys\":[],\"items\":[],\"tll\":5}", 400,
                     "unknown_field");
    }
    /* An empty body says so. */
    struct tc_test_resp r = req(&srv_a, "POST", "/batch/get", "application/json", "", 0);
    cr_expect_eq(r.status, 400);
    cr_expect(strstr(r.body, "empty body") != NULL, "%s", r.body);
    tc_test_resp_free(&r);
    r = req(&srv_a, "POST", "/batch/get", "text/plain", "{\"keys\":[]}", 11);
    cr_expect_eq(r.status, 415, "%s", r.body);
    tc_test_resp_free(&r);
    r = req(&srv_a, "GET", "/batch/get", NULL, NULL, 0);
    cr_expect_eq(r.status, 405);
    cr_expect_str_eq(r.allow, "POST");
    tc_test_resp_free(&r);

    expect_error(&srv_a, "/batch/get", "{\"keys\":\"k\"}", 400, "bad_request");
    expect_error(&srv_a, "/batch/get", "{\"keys\":[\"a\",7]}", 400, "bad_key");
    expect_error(&srv_a, "/batch/get", "{\"keys\":[\"\"]}", 400, "bad_key");
    expect_error(&srv_a, "/batch/get", "{\"keys\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 413,
                 "payload_too_large");
    expect_error(&srv_a, "/batch/delete", "{\"keys\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 413,
                 "payload_too_large");
    expect_error(&srv_a, "/batch/set",
                 "{\"items\":[{\"key\":\"a\",\"value\":1},{\"key\":\"b\",\"value\":1},"
                 "{\"key\":\"c\",\"value\":1},{\"key\":\"d\",\"value\":1},"
                 "{\"key\":\"e\",\"value\":1}]}",
                 413, "payload_too_large");

    /* One bad item refuses the whole batch: the good items before it are not stored. */
    const char *bad_sets[][2] = {
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},5]}", "bad_request"},
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},{\"key\":\"x\"}]}", "missing_value"},
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},{\"value\":1}]}", "bad_key"},
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},{\"key\":3,\"value\":1}]}", "bad_key"},
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},{\"key\":\"x\",\"value\":1,\"ttl\":\"5\"}]}",
         "bad_ttl"},
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},{\"key\":\"x\",\"value\":1,\"ttl\":-1}]}",
         "bad_ttl"},
        {"{\"items\":[{\"key\":\"ok1\",\"value\":1},{\"key\":\"x\",\"value\":1,\"tll\":5}]}",
         "unknown_field"},
        {"{\"items\":{\"key\":\"ok1\",\"value\":1}}", "bad_request"},
    };
    for (size_t i = 0; i < sizeof(bad_sets) / sizeof(bad_sets[0]); i++) {
        expect_error(&srv_a, "/batch/set", bad_sets[i][0], 400, bad_sets[i][1]);
        cr_expect_eq(get_status(&srv_a, "ok1"), 404, "batch %zu stored a key", i);
    }
    json_t *j;
    cr_assert_eq(call(&srv_a, "POST", "/batch/get", "{\"keys\":[]}", &j), 200);
    cr_expect_eq(json_array_size(json_object_get(j, "items")), 0);
    json_decref(j);
}

/* The single GET's body of @p key (NULL on 404). */
static json_t *single(struct tc_test_server *s, const char *key)
{
    char t[256];
    snprintf(t, sizeof(t), "/cache/%s", key);
    json_t *j;
    int st = call(s, "GET", t, NULL, &j);
    if (st == 404) {
        json_decref(j);
        return NULL;
    }
    cr_assert_eq(st, 200, "GET %s: %d", key, st);
    return j;
}

Test(issue_15, batch_results_equal_single_results_for_every_kind_of_record)
{
    start(&srv_a, l1_a, l2_a, 1, NULL, NULL);
    put(&srv_a, "str", "{\"value\":\"h\\u00e9llo\",\"ttl\":1000}");
    put(&srv_a, "json", "{\"value\":{\"a\":[1,2.5,null,true]},\"ttl\":1000}");
    put(&srv_a, "forever", "{\"value\":42,\"ttl\":0}");
    static const char bin[] = {'\0', 'b', '\xff', '\n', '\0'};
    struct tc_test_resp r =
        req(&srv_a, "PUT", "/cache/bin?ttl=1000", "application/octet-stream", bin, sizeof(bin));
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    put(&srv_a, "expired", "{\"value\":\"soon gone\",\"ttl\":0.2}");
    tc_test_sleep_ms(400);

    const char *keys[] = {"str", "json", "forever", "bin", "missing", "expired"};
    json_t *b;
    cr_assert_eq(call(&srv_a, "POST", "/batch/get",
                      "{\"keys\":[\"str\",\"json\",\"forever\",\"bin\",\"missing\",\"expired\"]}",
                      &b),
                 200);
    json_t *items = json_object_get(b, "items");
    cr_assert_eq(json_array_size(items), 6);
    for (size_t i = 0; i < 6; i++) {
        json_t *it = json_array_get(items, i);
        json_t *one = single(&srv_a, keys[i]);
        cr_expect_str_eq(json_string_value(json_object_get(it, "key")), keys[i], "order");
        if (one == NULL) {
            cr_expect_str_eq(json_string_value(json_object_get(it, "error")), "not_found", "%s",
                             keys[i]);
            cr_expect_null(json_object_get(it, "value"));
            continue;
        }
        cr_expect(json_is_string(json_object_get(it, "tier")), "%s: no tier", keys[i]);
        json_object_del(it, "tier");
        char *a = json_dumps(it, JSON_SORT_KEYS), *o = json_dumps(one, JSON_SORT_KEYS);
        cr_expect(json_equal(it, one), "%s: batch %s, single %s", keys[i], a, o);
        free(a);
        free(o);
        json_decref(one);
    }
    json_decref(b);

    /* Written by a batch, read back as a single PUT of the same values would be. */
    cr_assert_eq(call(&srv_a, "POST", "/batch/set",
                      "{\"items\":[{\"key\":\"bs\",\"value\":\"h\\u00e9llo\",\"ttl\":1000},"
                      "{\"key\":\"bj\",\"value\":{\"a\":[1,2.5,null,true]},\"ttl\":1000},"
                      "{\"key\":\"bf\",\"value\":42,\"ttl\":null}]}",
                      &b),
                 200);
    items = json_object_get(b, "items");
    cr_assert_eq(json_array_size(items), 3);
    for (size_t i = 0; i < 3; i++) {
        cr_expect(json_is_true(json_object_get(json_array_get(items, i), "ok")));
    }
    json_decref(b);
    const char *pairs[][2] = {{"bs", "str"}, {"bj", "json"}};
    for (size_t i = 0; i < 2; i++) {
        json_t *x = single(&srv_a, pairs[i][0]), *y = single(&srv_a, pairs[i][1]);
        cr_assert_not_null(x);
        cr_assert_not_null(y);
        cr_expect(json_equal(json_object_get(x, "value"), json_object_get(y, "value")));
        cr_expect(json_equal(json_object_get(x, "ttl"), json_object_get(y, "ttl")));
        json_decref(x);
        json_decref(y);
    }
    /* ttl null: the default TTL (3600 s), as a PUT without one. */
    json_t *x = single(&srv_a, "bf");
    cr_assert_not_null(x);
    cr_expect_eq(json_integer_value(json_object_get(x, "ttl")), 3600);
    json_decref(x);
    /* Every tier holds it, as after a single PUT. */
    cr_expect_eq(peek(l1_a, "bj"), TC_OK);
    cr_expect_eq(peek(l2_a, "bj"), TC_OK);
    cr_expect_eq(peek(l3, "bj"), TC_OK);

    /* A miss in L1 and L2 is found in L3 and back-filled, as for a single GET. */
    stop(&srv_a);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/* /dev/shm/%s*", dir_a, name_a);
    cr_assert_eq(system(cmd), 0);
    start(&srv_a, l1_a, l2_a, 1, NULL, NULL);
    cr_assert_eq(call(&srv_a, "POST", "/batch/get", "{\"keys\":[\"bj\",\"nope\"]}", &b), 200);
    json_t *it = json_array_get(json_object_get(b, "items"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(it, "tier")), "l3");
    json_decref(b);
    tc_test_sleep_ms(200); /* the back-fill runs after the answer */
    cr_expect_eq(peek(l1_a, "bj"), TC_OK, "L1 not back-filled");
    cr_expect_eq(peek(l2_a, "bj"), TC_OK, "L2 not back-filled");

    /* Delete: a result per key, idempotent, and the keys are gone. */
    cr_assert_eq(call(&srv_a, "POST", "/batch/delete", "{\"keys\":[\"bs\",\"bj\",\"nope\"]}", &b),
                 200);
    items = json_object_get(b, "items");
    cr_assert_eq(json_array_size(items), 3);
    for (size_t i = 0; i < 3; i++) {
        cr_expect(json_is_true(json_object_get(json_array_get(items, i), "ok")));
    }
    json_decref(b);
    cr_expect_eq(get_status(&srv_a, "bs"), 404);
    cr_expect_eq(get_status(&srv_a, "bj"), 404);
    cr_expect_eq(peek(l3, "bj"), TC_ENOTFOUND);
}

/* ---- purge ------------------------------------------------------------------------------ */

static uint64_t removed_in(json_t *j, const char *tier)
{
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(j, "tiers"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "tier")), tier) == 0) {
            cr_assert(json_is_integer(json_object_get(t, "removed")), "%s failed", tier);
            return (uint64_t)json_integer_value(json_object_get(t, "removed"));
        }
    }
    cr_assert_fail("no tier %s in the answer", tier);
    return 0;
}

/* Waits up to 2 s for @p uri to lose @p k (another server's subscriber applies it). */
static enum tc_status gone(const char *uri, const char *k)
{
    enum tc_status st = TC_OK;
    for (int i = 0; i < 100 && (st = peek(uri, k)) == TC_OK; i++) {
        tc_test_sleep_ms(20);
    }
    return st;
}

Test(issue_15, purge_by_prefix_and_all_reaches_another_server_sharing_redis)
{
    start(&srv_a, l1_a, l2_a, 1, NULL, NULL);
    start(&srv_b, l1_b, l2_b, 1, NULL, NULL);
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "p:%02d", i);
        put(&srv_a, key, "{\"value\":\"v\",\"ttl\":1000}");
    }
    put(&srv_a, "q:1", "{\"value\":\"keep\",\"ttl\":1000}");
    /* A's writes publish invalidations; let B receive them before it reads,
     * or one arriving late drops a copy B has just back-filled (a miss,
     * not a wrong value, but not what this test sets up). */
    tc_test_sleep_ms(300);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "p:%02d", i);
        /* B reads it through: its own L1 and L2 now hold copies. */
        cr_assert_eq(get_status(&srv_b, key), 200);
    }
    cr_assert_eq(get_status(&srv_b, "q:1"), 200);
    tc_test_sleep_ms(200); /* B's back-fills run after its answers */
    cr_assert_eq(peek(l1_b, "p:07"), TC_OK);
    cr_assert_eq(peek(l2_b, "p:07"), TC_OK);

    json_t *j;
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"prefix\":\"p:\"}", &j), 200);
    cr_expect_eq(removed_in(j, "l1"), 20);
    cr_expect_eq(removed_in(j, "l2"), 20);
    cr_expect_eq(removed_in(j, "l3"), 20);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "purged"), "prefix")),
                     "p:");
    json_decref(j);
    cr_expect_eq(peek(l1_a, "p:07"), TC_ENOTFOUND);
    cr_expect_eq(peek(l2_a, "p:07"), TC_ENOTFOUND);
    cr_expect_eq(peek(l3, "p:07"), TC_ENOTFOUND);
    /* The other server's copies go too: the purge was published. */
    cr_expect_eq(gone(l1_b, "p:07"), TC_ENOTFOUND, "B's L1 still holds a purged key");
    cr_expect_eq(gone(l2_b, "p:07"), TC_ENOTFOUND, "B's L2 still holds a purged key");
    cr_expect_eq(get_status(&srv_b, "p:13"), 404);
    /* Keys outside the prefix stay everywhere. */
    cr_expect_eq(peek(l1_b, "q:1"), TC_OK);
    cr_expect_eq(peek(l2_b, "q:1"), TC_OK);
    cr_expect_eq(get_status(&srv_a, "q:1"), 200);

    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"all\":true}", &j), 200);
    cr_expect_eq(removed_in(j, "l3"), 1);
    json_decref(j);
    cr_expect_eq(gone(l1_b, "q:1"), TC_ENOTFOUND, "purge all did not reach B's L1");
    cr_expect_eq(gone(l2_b, "q:1"), TC_ENOTFOUND, "purge all did not reach B's L2");
    cr_expect_eq(get_status(&srv_b, "q:1"), 404);
}

Test(issue_15, purge_refuses_bad_requests)
{
    start(&srv_a, l1_a, l2_a, 0, NULL, NULL);
    put(&srv_a, "k", "{\"value\":1}");
    const char *bad[] = {
        "{}",
        "{\"prefix\":\"k\",\"all\":true}",
        "{\"prefix\":\"\"}",
        "{\"prefix\":5}",
        "{\"all\":false}",
        "{\"all\":\"yes\"}",
        "{\"prefix\":\"k\",\"soft\":\"yes\"}",
        "{\"prefix\":\"k\",\"soft\":true}", /* grace is 0: nothing to serve stale */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_error(&srv_a, "/purge", bad[i], 400, "bad_request");
    }
    expect_error(&srv_a, "/purge", "{\"prefix\":", 400, "bad_json");
    expect_error(&srv_a, "/purge", "{\"prefix\":\"k\",\"hard\":true}", 400, "unknown_field");
    cr_expect_eq(get_status(&srv_a, "k"), 200, "a refused purge removed a key");
    struct tc_test_resp r = req(&srv_a, "DELETE", "/purge", NULL, NULL, 0);
    cr_expect_eq(r.status, 405);
    tc_test_resp_free(&r);
}

Test(issue_15, purge_method_deletes_a_key)
{
    start(&srv_a, l1_a, l2_a, 1, NULL, NULL);
    put(&srv_a, "v1", "{\"value\":\"x\"}");
    struct tc_test_resp r = req(&srv_a, "PURGE", "/cache/v1", NULL, NULL, 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    cr_expect_eq(get_status(&srv_a, "v1"), 404);
    cr_expect_eq(peek(l3, "v1"), TC_ENOTFOUND);
    /* Idempotent, as DELETE; and named in Allow. */
    r = req(&srv_a, "PURGE", "/cache/v1", NULL, NULL, 0);
    cr_expect_eq(r.status, 200);
    tc_test_resp_free(&r);
    r = req(&srv_a, "POST", "/cache/v1", "application/json", "{}", 2);
    cr_expect_eq(r.status, 405);
    cr_expect(strstr(r.allow, "PURGE") != NULL, "Allow: %s", r.allow);
    tc_test_resp_free(&r);
}

/* ---- tags ------------------------------------------------------------------------------- */

/* A PUT of @p body with X-Cache-Tags @p tags (NULL: none). */
static int put_tagged(struct tc_test_server *s, const char *key, const char *tags, const char *body)
{
    char t[256], h[256];
    snprintf(t, sizeof(t), "/cache/%s", key);
    snprintf(h, sizeof(h), "Content-Type: application/json\r\n%s%s%s", tags ? "X-Cache-Tags: " : "",
             tags ? tags : "", tags ? "\r\n" : "");
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(s->port, "PUT", t, h, body, strlen(body), &r), 0);
    int st = r.status;
    tc_test_resp_free(&r);
    return st;
}

Test(issue_15, purge_by_tag_reaches_every_tier_and_another_server)
{
    start(&srv_a, l1_a, l2_a, 1, NULL, NULL);
    start(&srv_b, l1_b, l2_b, 1, NULL, NULL);
    /* Tags from the header, from the body, and from a batch. */
    cr_assert_eq(put_tagged(&srv_a, "t1", "page:7, user:1", "{\"value\":1}"), 200);
    cr_assert_eq(put_tagged(&srv_a, "t2", NULL, "{\"value\":2,\"tags\":[\"page:7\"]}"), 200);
    cr_assert_eq(call(&srv_a, "POST", "/batch/set",
                      "{\"items\":[{\"key\":\"t3\",\"value\":3,\"tags\":[\"page:7\"]},"
                      "{\"key\":\"u1\",\"value\":4,\"tags\":[\"user:1\"]}]}",
                      NULL),
                 200);
    put(&srv_a, "plain", "{\"value\":5}");
    tc_test_sleep_ms(300); /* A's invalidations reach B before B reads */
    const char *keys[] = {"t1", "t2", "t3", "u1", "plain"};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(get_status(&srv_b, keys[i]), 200); /* B's L1 and L2 get copies */
    }
    tc_test_sleep_ms(200);
    cr_assert_eq(peek(l1_b, "t2"), TC_OK);
    cr_assert_eq(peek(l2_b, "t2"), TC_OK);

    json_t *j;
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"tag\":\"page:7\"}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "keys")), 3, "keys of the tag deleted");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "purged"), "tag")),
                     "page:7");
    json_decref(j);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(peek(l1_a, keys[i]), TC_ENOTFOUND, "%s in A's L1", keys[i]);
        cr_expect_eq(peek(l2_a, keys[i]), TC_ENOTFOUND, "%s in A's L2", keys[i]);
        cr_expect_eq(peek(l3, keys[i]), TC_ENOTFOUND, "%s in L3", keys[i]);
        cr_expect_eq(gone(l1_b, keys[i]), TC_ENOTFOUND, "%s in B's L1", keys[i]);
        cr_expect_eq(gone(l2_b, keys[i]), TC_ENOTFOUND, "%s in B's L2", keys[i]);
        cr_expect_eq(get_status(&srv_b, keys[i]), 404);
    }
    /* Keys without the tag stay, and so does another tag of a purged key's. */
    cr_expect_eq(get_status(&srv_a, "u1"), 200);
    cr_expect_eq(get_status(&srv_b, "plain"), 200);
    cr_expect_eq(peek(l1_b, "u1"), TC_OK);
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"tag\":\"user:1\"}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "keys")), 1, "t1 is gone already");
    json_decref(j);
    cr_expect_eq(get_status(&srv_a, "u1"), 404);
    cr_expect_eq(gone(l1_b, "u1"), TC_ENOTFOUND);
    /* A tag purged has no index left: purging it again finds nothing. */
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"tag\":\"page:7\"}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "keys")), 0);
    json_decref(j);
}

/* Without Redis: LMDB's index names the keys, and their shm copies go too. */
Test(issue_15, purge_by_tag_drops_shm_copies_through_the_lmdb_index)
{
    start(&srv_a, l1_a, l2_a, 0, NULL, NULL);
    char key[32];
    for (int i = 0; i < 600; i++) { /* more than one page of the index */
        snprintf(key, sizeof(key), "g%03d", i);
        cr_assert_eq(put_tagged(&srv_a, key, i % 2 ? "odd" : "even", "{\"value\":1}"), 200);
    }
    cr_assert_eq(peek(l1_a, "g001"), TC_OK);
    json_t *j;
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"tag\":\"odd\"}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "keys")), 300);
    json_decref(j);
    for (int i = 0; i < 600; i++) {
        snprintf(key, sizeof(key), "g%03d", i);
        enum tc_status want = i % 2 ? TC_ENOTFOUND : TC_OK;
        cr_expect_eq(peek(l1_a, key), want, "%s in L1", key);
        cr_expect_eq(peek(l2_a, key), want, "%s in L2", key);
    }
}

Test(issue_15, tags_refuse_bad_input_and_store_nothing)
{
    start(&srv_a, l1_a, l2_a, 0, NULL, NULL);
    const char *bad_headers[] = {
        "a b!", "x,,\xc3\xa9", "toolongtoolongtoolongtoolongtoolongtoolongtoolongtoolongtoolong12"};
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(put_tagged(&srv_a, "k", bad_headers[i], "{\"value\":1}"), 400, "%s",
                     bad_headers[i]);
    }
    cr_expect_eq(put_tagged(&srv_a, "k", NULL, "{\"value\":1,\"tags\":\"a\"}"), 400);
    cr_expect_eq(put_tagged(&srv_a, "k", NULL, "{\"value\":1,\"tags\":[1]}"), 400);
    cr_expect_eq(put_tagged(&srv_a, "k", "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", "{\"value\":1}"),
                 400);
    expect_error(&srv_a, "/batch/set",
                 "{\"items\":[{\"key\":\"k\",\"value\":1,\"tags\":[\"no space\"]}]}", 400,
                 "bad_request");
    cr_expect_eq(get_status(&srv_a, "k"), 404, "a write with bad tags stored its value");
    expect_error(&srv_a, "/purge", "{\"tag\":\"\"}", 400, "bad_request");
    expect_error(&srv_a, "/purge", "{\"tag\":[\"a\"]}", 400, "bad_request");
    expect_error(&srv_a, "/purge", "{\"tag\":\"a\",\"prefix\":\"b\"}", 400, "bad_request");
}

/* ---- soft purge ---------------------------------------------------------------------------- */

/* GET @p key: status, X-Cache in @p xc, body's "value" as text in @p val. */
static int get_xc(struct tc_test_server *s, const char *key, char *xc, size_t xn, char *val,
                  size_t vn)
{
    char t[256];
    snprintf(t, sizeof(t), "/cache/%s", key);
    struct tc_test_resp r = req(s, "GET", t, NULL, NULL, 0);
    int st = r.status;
    snprintf(xc, xn, "%s", r.x_cache);
    json_t *j = json_loads(r.body, 0, NULL);
    const char *v = json_string_value(json_object_get(j, "value"));
    snprintf(val, vn, "%s", v ? v : "");
    json_decref(j);
    tc_test_resp_free(&r);
    return st;
}

/* Whether @p s answers @p key 200 with X-Cache @p xc and value @p want within 2 s
 * (another server applies a publication asynchronously). */
static int served_as(struct tc_test_server *s, const char *key, const char *xc, const char *want)
{
    char got[32], val[64];
    for (int i = 0; i < 100; i++) {
        int st = get_xc(s, key, got, sizeof(got), val, sizeof(val));
        if (st == 200 && strcmp(got, xc) == 0 && strcmp(val, want) == 0) {
            return 1;
        }
        tc_test_sleep_ms(20);
    }
    return 0;
}

Test(issue_15, soft_purge_is_served_stale_then_refreshed_on_both_servers)
{
    start(&srv_a, l1_a, l2_a, 1, "--grace", "30");
    start(&srv_b, l1_b, l2_b, 1, "--grace", "30");
    put(&srv_a, "s:1", "{\"value\":\"old\",\"ttl\":100}");
    put(&srv_a, "s:2", "{\"value\":\"old\",\"ttl\":100}");
    put(&srv_a, "x:1", "{\"value\":\"other\",\"ttl\":100}");
    tc_test_sleep_ms(300);                        /* A's invalidations reach B before B reads */
    cr_assert_eq(get_status(&srv_b, "s:1"), 200); /* B holds fresh copies */
    tc_test_sleep_ms(200);
    json_t *j;
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"prefix\":\"s:\",\"soft\":true}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "marked")), 2);
    json_decref(j);
    /* The values are kept, in every tier. */
    cr_expect_eq(peek(l3, "s:1"), TC_OK);
    cr_expect_eq(peek(l2_a, "s:1"), TC_OK);

    /* One client refreshes (it gets the lease), the others are served stale. */
    char xc[32], val[64];
    int st = get_xc(&srv_a, "s:1", xc, sizeof(xc), val, sizeof(val));
    cr_expect(st == 404 && strcmp(xc, "MISS") == 0, "first reader: %d %s", st, xc);
    st = get_xc(&srv_a, "s:1", xc, sizeof(xc), val, sizeof(val));
    cr_expect_eq(st, 200);
    cr_expect_str_eq(xc, "STALE");
    cr_expect_str_eq(val, "old");
    /* B dropped its fresh copy (the marked write was published): stale there too. */
    cr_expect(served_as(&srv_b, "s:1", "STALE", "old"), "B still serves s:1 fresh");
    /* Outside the prefix: untouched. */
    st = get_xc(&srv_a, "x:1", xc, sizeof(xc), val, sizeof(val));
    cr_expect_str_eq(xc, "HIT");

    /* The refresh lands: fresh everywhere again. */
    put(&srv_a, "s:1", "{\"value\":\"new\",\"ttl\":100}");
    st = get_xc(&srv_a, "s:1", xc, sizeof(xc), val, sizeof(val));
    cr_expect_eq(st, 200);
    cr_expect_str_eq(xc, "HIT");
    cr_expect_str_eq(val, "new");
    cr_expect(served_as(&srv_b, "s:1", "HIT", "new"), "B never served the refreshed value");

    /* A soft purge by tag marks the tagged keys only, and keeps them tagged. */
    cr_assert_eq(put_tagged(&srv_a, "tg:1", "grp", "{\"value\":\"t\",\"ttl\":100}"), 200);
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"tag\":\"grp\",\"soft\":true}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "marked")), 1);
    json_decref(j);
    get_xc(&srv_a, "tg:1", xc, sizeof(xc), val, sizeof(val)); /* the refresher */
    st = get_xc(&srv_a, "tg:1", xc, sizeof(xc), val, sizeof(val));
    cr_expect_str_eq(xc, "STALE");
    cr_assert_eq(call(&srv_a, "POST", "/purge", "{\"tag\":\"grp\"}", &j), 200);
    cr_expect_eq(json_integer_value(json_object_get(j, "keys")), 1);
    json_decref(j);
    cr_expect_eq(get_status(&srv_a, "tg:1"), 404);
}

/* ---- keys ------------------------------------------------------------------------------- */

/* Lists every key under @p prefix, @p limit per page, into @p seen (counts per index). */
static void list_all(struct tc_test_server *s, const char *tier, const char *prefix, int limit,
                     int *seen, int nseen, int *pages)
{
    char cursor[4096] = "";
    *pages = 0;
    for (;;) {
        char t[4200];
        snprintf(t, sizeof(t), "/keys?prefix=%s&limit=%d%s%s", prefix, limit,
                 cursor[0] ? "&cursor=" : "", cursor);
        json_t *j;
        int st = call(s, "GET", t, NULL, &j);
        cr_assert_eq(st, 200, "GET %s: %d", t, st);
        cr_expect_str_eq(json_string_value(json_object_get(j, "tier")), tier);
        json_t *keys = json_object_get(j, "keys"), *k;
        if (strcmp(tier, "l2") == 0) {
            /* Redis' COUNT is a hint: its pages may be longer. */
            cr_assert_leq(json_array_size(keys), (size_t)limit);
        }
        size_t i;
        json_array_foreach(keys, i, k)
        {
            const char *name = json_string_value(json_object_get(k, "key"));
            cr_assert_not_null(name);
            cr_assert(strncmp(name, prefix, strlen(prefix)) == 0, "%s outside %s", name, prefix);
            int n;
            char tail;
            /* Stable keys are "<prefix><4 digits>"; churn keys have a letter after. */
            if (sscanf(name + strlen(prefix), "%4d%c", &n, &tail) == 1 && n >= 0 && n < nseen) {
                seen[n]++;
            }
        }
        (*pages)++;
        json_t *c = json_object_get(j, "cursor");
        if (json_is_null(c)) {
            json_decref(j);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", json_string_value(c));
        json_decref(j);
        cr_assert_lt(*pages, 10000, "the listing does not end");
    }
}

Test(issue_15, keys_pages_by_prefix_and_refuses_bad_parameters)
{
    start(&srv_a, l1_a, l2_a, 0, NULL, NULL);
    put(&srv_a, "a:0000", "{\"value\":1,\"ttl\":100}");
    put(&srv_a, "a:0001", "{\"value\":1,\"ttl\":0}");
    put(&srv_a, "a:0002", "{\"value\":1}");
    put(&srv_a, "b:0000", "{\"value\":1}");
    json_t *j;
    cr_assert_eq(call(&srv_a, "GET", "/keys?prefix=a:&limit=2", NULL, &j), 200);
    json_t *keys = json_object_get(j, "keys");
    cr_assert_eq(json_array_size(keys), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(keys, 0), "key")), "a:0000");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(keys, 0), "ttl")), 100);
    cr_expect(json_is_null(json_object_get(json_array_get(keys, 1), "ttl")), "ttl 0: never");
    cr_assert(json_is_string(json_object_get(j, "cursor")));
    json_decref(j);
    int seen[3] = {0}, pages;
    list_all(&srv_a, "l2", "a:", 1, seen, 3, &pages);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(seen[i], 1, "a:%04d seen %d times", i, seen[i]);
    }
    cr_assert_eq(call(&srv_a, "GET", "/keys", NULL, &j), 200);
    cr_expect_eq(json_array_size(json_object_get(j, "keys")), 4);
    cr_expect(json_is_null(json_object_get(j, "cursor")));
    json_decref(j);

    const char *bad[] = {"/keys?limit=0",   "/keys?limit=x",       "/keys?limit=100000",
                         "/keys?cursor=zz", "/keys?cursor=l2.abc", "/keys?cursor=l1.00",
                         "/keys?prefx=a"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = call(&srv_a, "GET", bad[i], NULL, &j);
        cr_expect_eq(st, 400, "%s: %d", bad[i], st);
        cr_expect(json_is_string(json_object_get(j, "message")));
        json_decref(j);
    }
}

struct churn {
    unsigned port;
    _Atomic int stop;
    int writes;
};

/* Inserts and deletes keys between the stable ones, and overwrites stable ones. */
static void *churn_main(void *arg)
{
    struct churn *c = arg;
    unsigned seed = 7;
    while (!c->stop) {
        int n = (int)(rand_r(&seed) % 400);
        char t[64];
        struct tc_test_resp r;
        static const char body[] = "{\"value\":\"c\"}";
        snprintf(t, sizeof(t), "/cache/k:%04d%c", n, 'a' + (int)(rand_r(&seed) % 26));
        const char *m = rand_r(&seed) % 3 == 0 ? "DELETE" : "PUT";
        if (tc_test_http(c->port, m, t, "Content-Type: application/json\r\n", body,
                         m[0] == 'P' ? sizeof(body) - 1 : 0, &r) == 0) {
            tc_test_resp_free(&r);
        }
        snprintf(t, sizeof(t), "/cache/k:%04d", n);
        if (tc_test_http(c->port, "PUT", t, "Content-Type: application/json\r\n", body,
                         sizeof(body) - 1, &r) == 0) {
            tc_test_resp_free(&r);
        }
        c->writes++;
    }
    return NULL;
}

static void stable_listing(const char *tier)
{
    enum { N = 400 };
    /* The stable keys, written in one go. */
    for (int b = 0; b < N; b += 100) {
        char body[8192];
        size_t o = (size_t)snprintf(body, sizeof(body), "{\"items\":[");
        for (int i = b; i < b + 100; i++) {
            o += (size_t)snprintf(body + o, sizeof(body) - o, "%s{\"key\":\"k:%04d\",\"value\":%d}",
                                  i > b ? "," : "", i, i);
        }
        snprintf(body + o, sizeof(body) - o, "]}");
        cr_assert_eq(call(&srv_a, "POST", "/batch/set", body, NULL), 200);
    }
    struct churn c = {.port = srv_a.port};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, churn_main, &c), 0);
    tc_test_sleep_ms(100);
    int seen[N] = {0}, pages;
    list_all(&srv_a, tier, "k:", 7, seen, N, &pages);
    c.stop = 1;
    pthread_join(th, NULL);
    cr_expect_gt(c.writes, 10, "the writer did not run alongside (%d writes)", c.writes);
    cr_expect_gt(pages, 10);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(seen[i], 1, "%s: k:%04d listed %d times", tier, i, seen[i]);
    }
}

Test(issue_15, keys_listing_is_stable_under_concurrent_writes)
{
    start(&srv_a, l1_a, l2_a, 0, NULL, NULL);
    stable_listing("l2");
}

/* With Redis in the stack the listing comes from it, the widest tier (SCAN). */
Test(issue_15, keys_listing_from_redis_is_stable_under_concurrent_writes)
{
    start(&srv_a, l1_a, l2_a, 1, NULL, NULL);
    stable_listing("l3");
    json_t *j;
    cr_assert_eq(call(&srv_a, "GET", "/keys?prefix=k:000&limit=1000", NULL, &j), 200);
    cr_expect_str_eq(json_string_value(json_object_get(j, "tier")), "l3");
    cr_expect_eq(call(&srv_a, "GET", "/keys?cursor=l3.7a7a", NULL, NULL), 400);
    cr_expect_eq(call(&srv_a, "GET", "/keys?cursor=l2.00", NULL, NULL), 400);
    json_decref(j);
}
