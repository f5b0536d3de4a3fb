/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Black-box tests of the HTTP API: the real tiercache binary on a free
 * loopback port, driven over TCP (STYLE R20).
 */
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct tc_test_server srv;

static void start_with(const char *const *args)
{
    if (tc_test_server_start(&srv, args) != 0) {
        cr_assert_fail("tiercache did not start:\n%s", srv.log);
    }
}

static void setup(void)
{
    static const char *const args[] = {
        "--tier", "mem://?size=64M", "--workers", "2", "--max-value", "64K", NULL};
    start_with(args);
}

static void teardown(void)
{
    cr_expect(tc_test_server_stop_clean(&srv), "server did not exit cleanly (status %d):\n%s",
              srv.exit_status, srv.log);
}

TestSuite(api, .init = setup, .fini = teardown, .timeout = 60);

#define JSON_CT "Content-Type: application/json\r\n"

static struct tc_test_resp req(const char *method, const char *target, const char *headers,
                               const char *body)
{
    struct tc_test_resp r;
    int rc = tc_test_http(srv.port, method, target, headers, body, body ? strlen(body) : 0, &r);
    cr_assert_eq(rc, 0, "%s %s: no complete response", method, target);
    return r;
}

static void expect_status(const char *method, const char *target, const char *headers,
                          const char *body, int status, const char *error)
{
    struct tc_test_resp r = req(method, target, headers, body);
    cr_assert_eq(r.status, status, "%s %s -> %d, want %d: %s", method, target, r.status, status,
                 r.body);
    cr_assert(strncmp(r.content_type, "application/json", 16) == 0, "%s %s: Content-Type %s",
              method, target, r.content_type);
    if (error != NULL) {
        json_error_t e;
        json_t *j = json_loads(r.body, 0, &e);
        cr_assert_not_null(j, "error body is not JSON: %s", r.body);
        cr_assert_str_eq(json_string_value(json_object_get(j, "error")), error, "%s", r.body);
        cr_assert(json_is_string(json_object_get(j, "message")), "no message: %s", r.body);
        cr_assert_gt(strlen(json_string_value(json_object_get(j, "message"))), 5);
        json_decref(j);
    }
    tc_test_resp_free(&r);
}

static json_t *get_json(const char *target, struct tc_test_resp *out)
{
    *out = req("GET", target, NULL, NULL);
    cr_assert_eq(out->status, 200, "GET %s -> %d: %s", target, out->status, out->body);
    json_error_t e;
    json_t *j = json_loadb(out->body, out->body_len, JSON_ALLOW_NUL, &e);
    cr_assert_not_null(j, "not JSON: %s", out->body);
    return j;
}

Test(api, string_round_trip_with_cache_headers)
{
    expect_status("PUT", "/cache/greeting", JSON_CT, "{\"value\":\"héllo wörld\",\"ttl\":60}", 200,
                  NULL);
    struct tc_test_resp r;
    json_t *j = get_json("/cache/greeting", &r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "value")), "héllo wörld");
    cr_assert_str_eq(json_string_value(json_object_get(j, "key")), "greeting");
    json_int_t ttl = json_integer_value(json_object_get(j, "ttl"));
    cr_assert(ttl >= 59 && ttl <= 60, "ttl %lld", (long long)ttl);
    cr_assert_str_eq(r.x_cache, "HIT");
    cr_assert_str_eq(r.x_cache_tier, "l1");
    json_decref(j);
    tc_test_resp_free(&r);
}

Test(api, any_json_value_round_trips_as_the_same_value)
{
    static const char *const values[] = {
        "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}",
        "[1,\"two\",3.5,false]",
        "42",
        "-0.125",
        "true",
        "null",
        "\"\"",
        "{}",
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char body[256], target[32];
        snprintf(body, sizeof(body), "{\"value\":%s}", values[i]);
        snprintf(target, sizeof(target), "/cache/v%zu", i);
        expect_status("PUT", target, JSON_CT, body, 200, NULL);
        struct tc_test_resp r;
        json_t *j = get_json(target, &r);
        json_t *want = json_loads(values[i], JSON_DECODE_ANY, NULL);
        cr_assert(json_equal(json_object_get(j, "value"), want), "value %s came back as %s",
                  values[i], r.body);
        json_decref(want);
        json_decref(j);
        tc_test_resp_free(&r);
    }
}

Test(api, timeout_alias_and_default_ttl)
{
    /* Existing Python clients send {"value": ..., "timeout": ...}. */
    expect_status("PUT", "/cache/py", JSON_CT, "{\"value\":[1,2],\"timeout\":30}", 200, NULL);
    struct tc_test_resp r;
    json_t *j = get_json("/cache/py", &r);
    json_int_t ttl = json_integer_value(json_object_get(j, "ttl"));
    cr_assert(ttl >= 29 && ttl <= 30, "ttl %lld", (long long)ttl);
    json_decref(j);
    tc_test_resp_free(&r);

    expect_status("PUT", "/cache/dflt", JSON_CT, "{\"value\":1}", 200, NULL);
    j = get_json("/cache/dflt", &r);
    ttl = json_integer_value(json_object_get(j, "ttl"));
    cr_assert(ttl >= 3599 && ttl <= 3600, "default ttl %lld", (long long)ttl);
    json_decref(j);
    tc_test_resp_free(&r);

    expect_status("PUT", "/cache/forever", JSON_CT, "{\"value\":1,\"ttl\":0}", 200, NULL);
    j = get_json("/cache/forever", &r);
    cr_assert(json_is_null(json_object_get(j, "ttl")), "ttl 0 never expires: %s", r.body);
    json_decref(j);
    tc_test_resp_free(&r);
}

Test(api, missing_content_type_is_bytes)
{
    /* curl -T FILE sends none: the body is the value's bytes (issue 15). */
    expect_status("PUT", "/cache/noct", NULL, "{\"value\":\"x\"}", 200, NULL);
    struct tc_test_resp r;
    json_t *j = get_json("/cache/noct", &r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "encoding")), "base64");
    json_decref(j);
    tc_test_resp_free(&r);
}

Test(api, binary_round_trip_base64_and_raw)
{
    static const char bin[] = {'\0', 'a', '\xff', '\0', 'b', '\x80'};
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/bin?ttl=20",
                              "Content-Type: application/octet-stream\r\n", bin, sizeof(bin), &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);

    json_t *j = get_json("/cache/bin", &r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "value")), "AGH/AGKA");
    cr_assert_str_eq(json_string_value(json_object_get(j, "encoding")), "base64");
    json_int_t ttl = json_integer_value(json_object_get(j, "ttl"));
    cr_assert(ttl >= 19 && ttl <= 20);
    json_decref(j);
    tc_test_resp_free(&r);

    r = req("GET", "/cache/bin", "Accept: application/octet-stream\r\n", NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.content_type, "application/octet-stream");
    cr_assert_eq(r.body_len, sizeof(bin));
    cr_assert_arr_eq(r.body, bin, sizeof(bin));
    cr_assert_str_eq(r.x_cache, "HIT");
    tc_test_resp_free(&r);
}

Test(api, keys_with_slashes_escapes_utf8_and_max_length)
{
    static const char *const targets[][2] = {
        {"/cache/a/b/c", "a/b/c"},
        {"/cache/a%2Fb", "a/b"},
        {"/cache/caf%C3%A9%20%E2%9C%93", "café ✓"},
        {"/cache/nul%00inside", "nul\0inside"},
    };
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"value\":%zu}", i);
        expect_status("PUT", targets[i][0], JSON_CT, body, 200, NULL);
        struct tc_test_resp r;
        json_t *j = get_json(targets[i][0], &r);
        cr_assert_eq(json_integer_value(json_object_get(j, "value")), (json_int_t)i);
        if (i < 3) {
            cr_assert_str_eq(json_string_value(json_object_get(j, "key")), targets[i][1]);
        } else {
            cr_assert_eq(json_string_length(json_object_get(j, "key")), 10);
        }
        json_decref(j);
        tc_test_resp_free(&r);
    }
    /* "a/b/c" and "a%2Fb/c" are the same key; "a%2Fb" and "a/b" too. */
    struct tc_test_resp r;
    json_t *j = get_json("/cache/a/b", &r);
    cr_assert_eq(json_integer_value(json_object_get(j, "value")), 1);
    json_decref(j);
    tc_test_resp_free(&r);

    char target[8 + 3 * 1025 + 1];
    strcpy(target, "/cache/");
    memset(target + 7, 'k', 1024);
    target[7 + 1024] = '\0';
    expect_status("PUT", target, JSON_CT, "{\"value\":\"max\"}", 200, NULL);
    j = get_json(target, &r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "value")), "max");
    json_decref(j);
    tc_test_resp_free(&r);
    strcat(target, "k");
    expect_status("PUT", target, JSON_CT, "{\"value\":\"over\"}", 414, "key_too_long");
    expect_status("GET", target, NULL, NULL, 414, "key_too_long");
}

Test(api, bad_keys)
{
    expect_status("GET", "/cache/", NULL, NULL, 400, "bad_key");
    expect_status("PUT", "/cache/", JSON_CT, "{\"value\":1}", 400, "bad_key");
    expect_status("GET", "/cache", NULL, NULL, 400, "bad_key");
    expect_status("PUT", "/cache/%FF%FE", JSON_CT, "{\"value\":1}", 400, "bad_key");
}

Test(api, bad_input_gets_the_right_status_and_stores_nothing)
{
    expect_status("PUT", "/cache/k", JSON_CT, "{\"value\": ", 400, "bad_json");
    expect_status("PUT", "/cache/k", JSON_CT, "[1,2]", 400, "bad_json");
    expect_status("PUT", "/cache/k", JSON_CT, "{\"valu\":1}", 400, "unknown_field");
    expect_status("PUT", "/cache/k", JSON_CT, "{}", 400, "missing_value");
    expect_status("PUT", "/cache/k", JSON_CT, "{\"value\":1,\"ttl\":-1}", 400, "bad_ttl");
    expect_status("PUT", "/cache/k", JSON_CT, "{\"value\":1,\"ttl\":\"soon\"}", 400, "bad_ttl");
    expect_status("PUT", "/cache/k", JSON_CT, "{\"value\":1,\"ttl\":1e12}", 400, "bad_ttl");
    expect_status("PUT", "/cache/k", JSON_CT, "{\"value\":1,\"ttl\":5,\"timeout\":5}", 400,
                  "bad_ttl");
    expect_status("PUT", "/cache/k", JSON_CT, "{\"value\":1,\"value\":2}", 400, "bad_json");
    expect_status("PUT", "/cache/k?ttl=abc", "Content-Type: application/octet-stream\r\n", "x", 400,
                  "bad_ttl");
    expect_status("PUT", "/cache/k", "Content-Type: image/png\r\n", "x", 415,
                  "unsupported_media_type");
    /* --max-value 64K: a 70 KB string value is refused. */
    size_t n = 70 * 1024;
    char *big = malloc(n + 32);
    strcpy(big, "{\"value\":\"");
    memset(big + 10, 'x', n);
    strcpy(big + 10 + n, "\"}");
    expect_status("PUT", "/cache/k", JSON_CT, big, 413, "payload_too_large");
    free(big);
    expect_status("GET", "/cache/k", NULL, NULL, 404, "not_found");
}

Test(api, oversized_body_refused_before_it_is_read)
{
    /* Announce a body far above the limit: refused from the headers alone. */
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static const char head[] = "PUT /cache/huge HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                               "application/json\r\nContent-Length: 999999999\r\n\r\n";
    cr_assert_eq(send(fd, head, sizeof(head) - 1, 0), (ssize_t)sizeof(head) - 1);
    char buf[512];
    ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    cr_assert(strncmp(buf, "HTTP/1.1 413", 12) == 0, "%s", buf);
    close(fd);
}

Test(api, put_without_length_is_411)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static const char head[] = "PUT /cache/x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    cr_assert_eq(send(fd, head, sizeof(head) - 1, 0), (ssize_t)sizeof(head) - 1);
    char buf[512];
    ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    cr_assert(strncmp(buf, "HTTP/1.1 411", 12) == 0, "%s", buf);
    cr_assert(strstr(buf, "length_required") != NULL, "%s", buf);
    close(fd);
}

Test(api, huge_headers_and_garbage)
{
    char *h = malloc(40000);
    strcpy(h, "X-Junk: ");
    memset(h + 8, 'j', 30000);
    strcpy(h + 8 + 30000, "\r\n");
    struct tc_test_resp r;
    int rc = tc_test_http(srv.port, "GET", "/cache/a", h, NULL, 0, &r);
    free(h);
    cr_assert_eq(rc, 0);
    cr_assert_eq(r.status, 431, "%d %s", r.status, r.body);
    tc_test_resp_free(&r);

    int fd = tc_test_connect(srv.port);
    static const char junk[] = "\x01\x02 not http at all\r\n\r\n";
    cr_assert_eq(send(fd, junk, sizeof(junk) - 1, 0), (ssize_t)sizeof(junk) - 1);
    char buf[512];
    ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    cr_assert(strncmp(buf, "HTTP/1.1 400", 12) == 0, "%s", buf);
    close(fd);
}

Test(api, unknown_path_and_wrong_method)
{
    expect_status("GET", "/nothing/here", NULL, NULL, 404, "not_found");
    struct tc_test_resp r = req("POST", "/cache/x", JSON_CT, "{}");
    cr_assert_eq(r.status, 405);
    cr_assert(strstr(r.allow, "PUT") != NULL, "Allow: %s", r.allow);
    tc_test_resp_free(&r);
    expect_status("DELETE", "/health", NULL, NULL, 405, "method_not_allowed");
}

Test(api, head_and_delete)
{
    expect_status("PUT", "/cache/h", JSON_CT, "{\"value\":\"v\"}", 200, NULL);
    struct tc_test_resp r = req("HEAD", "/cache/h", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, 0);
    cr_assert_str_eq(r.x_cache, "HIT");
    tc_test_resp_free(&r);
    expect_status("DELETE", "/cache/h", NULL, NULL, 200, NULL);
    expect_status("DELETE", "/cache/h", NULL, NULL, 200, NULL);
    r = req("HEAD", "/cache/h", NULL, NULL);
    cr_assert_eq(r.status, 404);
    cr_assert_eq(r.body_len, 0);
    tc_test_resp_free(&r);
}

Test(api, expiry_over_http)
{
    expect_status("PUT", "/cache/brief", JSON_CT, "{\"value\":1,\"ttl\":0.3}", 200, NULL);
    struct tc_test_resp r;
    json_t *j = get_json("/cache/brief", &r);
    json_decref(j);
    tc_test_resp_free(&r);
    struct timespec ts = {0, 400000000};
    nanosleep(&ts, NULL);
    expect_status("GET", "/cache/brief", NULL, NULL, 404, "not_found");
}

Test(api, keep_alive_and_pipelining_answer_in_order)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static const char two[] =
        "PUT /cache/p1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: 11\r\n\r\n{\"value\":1}"
        "GET /cache/p1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
        "GET /cache/missing HTTP/1.1\r\nHost: localhost\r\n\r\n";
    cr_assert_eq(send(fd, two, sizeof(two) - 1, 0), (ssize_t)sizeof(two) - 1);
    char buf[4096];
    size_t have = 0;
    while (have < sizeof(buf) - 1) {
        ssize_t got = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (got <= 0) {
            break;
        }
        have += (size_t)got;
        buf[have] = '\0';
        if (strstr(buf, "no value for this key") != NULL) {
            break;
        }
    }
    char *a = strstr(buf, "HTTP/1.1 200");
    char *b = a ? strstr(a + 1, "HTTP/1.1 200") : NULL;
    char *c = b ? strstr(b + 1, "HTTP/1.1 404") : NULL;
    cr_assert(a && b && c, "responses out of order or missing:\n%s", buf);
    /* The connection is still usable. */
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http_fd(fd, "GET", "/cache/p1", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200);
    tc_test_resp_free(&r);
    close(fd);
}

Test(api, health_stats_metrics)
{
    struct tc_test_resp r;
    json_t *j = get_json("/health", &r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    tc_test_resp_free(&r);

    expect_status("PUT", "/cache/s", JSON_CT, "{\"value\":1}", 200, NULL);
    expect_status("GET", "/cache/s", NULL, NULL, 200, NULL);
    expect_status("GET", "/cache/none", NULL, NULL, 404, NULL);
    j = get_json("/stats", &r);
    json_t *t0 = json_array_get(json_object_get(j, "tiers"), 0);
    cr_assert_not_null(t0, "%s", r.body);
    cr_assert_geq(json_integer_value(json_object_get(t0, "hits")), 1);
    cr_assert_geq(json_integer_value(json_object_get(t0, "misses")), 1);
    cr_assert_geq(json_integer_value(json_object_get(t0, "sets")), 1);
    json_t *lat = json_object_get(json_object_get(t0, "latency"), "get");
    cr_assert_geq(json_integer_value(json_object_get(lat, "count")), 2);
    cr_assert(json_is_integer(json_object_get(lat, "p99_ns")));
    json_t *by = json_object_get(json_object_get(j, "requests"), "by_status");
    cr_assert_geq(json_integer_value(json_object_get(by, "404")), 1);
    cr_assert(json_is_number(json_object_get(j, "uptime_s")));
    json_decref(j);
    tc_test_resp_free(&r);

    r = req("GET", "/metrics", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert(strncmp(r.content_type, "text/plain", 10) == 0);
    cr_assert(strstr(r.body, "# TYPE tiercache_http_request_duration_seconds histogram") != NULL);
    cr_assert(strstr(r.body, "tiercache_http_request_duration_seconds_count{route=\"/cache/{key}\","
                             "method=\"GET\",code=\"404\"}") != NULL);
    cr_assert(strstr(r.body, "tiercache_tier_hits_total{tier=\"l1\",scheme=\"mem\"}") != NULL);
    cr_assert(strstr(r.body, "# TYPE tiercache_tier_op_duration_seconds histogram") != NULL);
    cr_assert(strstr(r.body, "tiercache_tier_op_duration_seconds_bucket{tier=\"l1\",scheme=\"mem\","
                             "op=\"get\","
                             "le=\"+Inf\"}") != NULL);
    tc_test_resp_free(&r);
}

/* 200 connections doing mixed traffic for a few seconds: no error; the
 * server then exits 0 (under ASan, LeakSanitizer would make that fail). */
#define LOAD_THREADS 8
#define LOAD_CONNS   25

struct load_arg {
    int id;
    unsigned long ok, bad;
    char why[256];
};

static void *load_worker(void *p)
{
    struct load_arg *a = p;
    int fds[LOAD_CONNS];
    for (int i = 0; i < LOAD_CONNS; i++) {
        fds[i] = tc_test_connect(srv.port);
        if (fds[i] < 0) {
            snprintf(a->why, sizeof(a->why), "connect failed");
            a->bad++;
            return NULL;
        }
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t s = (uint64_t)a->id * 7919 + 1;
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= 3) {
            break;
        }
        for (int i = 0; i < LOAD_CONNS; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            char target[64], body[64];
            snprintf(target, sizeof(target), "/cache/load%llu",
                     (unsigned long long)(s >> 33) % 500);
            struct tc_test_resp r;
            int rc, want;
            switch ((s >> 20) % 4) {
            case 0:
                snprintf(body, sizeof(body), "{\"value\":\"v%d\",\"ttl\":30}", a->id);
                rc = tc_test_http_fd(fds[i], "PUT", target, JSON_CT, body, strlen(body), &r);
                want = 200;
                break;
            case 1:
                rc = tc_test_http_fd(fds[i], "DELETE", target, NULL, NULL, 0, &r);
                want = 200;
                break;
            default:
                rc = tc_test_http_fd(fds[i], "GET", target, NULL, NULL, 0, &r);
                want = r.status == 404 ? 404 : 200;
                break;
            }
            if (rc != 0 || r.status != want) {
                a->bad++;
                snprintf(a->why, sizeof(a->why), "%s -> rc %d status %d", target, rc, r.status);
            } else {
                a->ok++;
            }
            tc_test_resp_free(&r);
        }
    }
    for (int i = 0; i < LOAD_CONNS; i++) {
        close(fds[i]);
    }
    return NULL;
}

Test(api, two_hundred_connections_mixed_traffic)
{
    pthread_t th[LOAD_THREADS];
    struct load_arg args[LOAD_THREADS];
    for (int i = 0; i < LOAD_THREADS; i++) {
        args[i] = (struct load_arg){.id = i};
        pthread_create(&th[i], NULL, load_worker, &args[i]);
    }
    unsigned long ok = 0;
    for (int i = 0; i < LOAD_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].bad, 0, "thread %d: %lu failures, e.g. %s", i, args[i].bad,
                     args[i].why);
        ok += args[i].ok;
    }
    cr_assert_gt(ok, 1000, "only %lu requests in 3 s", ok);
    struct tc_test_resp r;
    json_t *j = get_json("/stats", &r);
    json_t *conns = json_object_get(j, "connections");
    cr_assert_geq(json_integer_value(json_object_get(conns, "accepted")), 200);
    json_decref(j);
    tc_test_resp_free(&r);
}

/* ---- configuration and lifecycle (own servers) ---- */

Test(config, invalid_settings_are_refused_at_start, .init = NULL, .fini = NULL)
{
    static const char *const cases[][3] = {
        {"--workers", "lots", "bad value 'lots' for workers"},
        {"--max-value", "12Q", "bad value '12Q' for max-value"},
        {"--default-ttl", "-5", "bad value '-5' for default-ttl"},
        {"--listen-x", "1", "unknown option"},
        {"--tier", "nosuch://x", "unknown tier scheme 'nosuch'"},
        {"--tier", "mem://?sizee=1", "unknown parameter 'sizee' for mem://"},
        {"--log-level", "loud", "bad value 'loud' for log-level"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[] = {cases[i][0], cases[i][1], NULL};
        struct tc_test_server s;
        cr_assert_neq(tc_test_server_start(&s, args), 0, "%s %s was accepted", cases[i][0],
                      cases[i][1]);
        cr_assert(strstr(s.log, cases[i][2]) != NULL, "%s %s: message was: %s", cases[i][0],
                  cases[i][1], s.log);
    }
}

Test(config, file_settings_and_command_line_precedence, .init = NULL, .fini = NULL)
{
    char path[] = "/tmp/tc-conf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static const char text[] = "[server]\n"
                               "tier = mem://?size=8M\n"
                               "default-ttl = 77\n"
                               "max_value = 1K\n"
                               "workers = 1\n";
    cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
    close(fd);
    const char *args[] = {"--config", path, "--default-ttl", "88", NULL};
    start_with(args);
    expect_status("PUT", "/cache/c", JSON_CT, "{\"value\":1}", 200, NULL);
    struct tc_test_resp r;
    json_t *j = get_json("/cache/c", &r);
    json_int_t ttl = json_integer_value(json_object_get(j, "ttl"));
    cr_assert(ttl >= 87 && ttl <= 88, "the command line must win: ttl %lld", (long long)ttl);
    json_decref(j);
    tc_test_resp_free(&r);
    char big[2048];
    strcpy(big, "{\"value\":\"");
    memset(big + 10, 'x', 1490);
    strcpy(big + 1500, "\"}");
    expect_status("PUT", "/cache/c", JSON_CT, big, 413, "payload_too_large");
    teardown();
    unlink(path);

    char bad[] = "/tmp/tc-conf-XXXXXX";
    fd = mkstemp(bad);
    static const char wrong[] = "[server]\nmax_valu = 1K\n";
    cr_assert_eq(write(fd, wrong, sizeof(wrong) - 1), (ssize_t)sizeof(wrong) - 1);
    close(fd);
    const char *bargs[] = {"--config", bad, NULL};
    struct tc_test_server s;
    cr_assert_neq(tc_test_server_start(&s, bargs), 0);
    cr_assert(strstr(s.log, "unknown setting 'max_valu'") != NULL, "%s", s.log);
    unlink(bad);
}

Test(config, max_connections_refuses_the_excess, .init = NULL, .fini = NULL)
{
    const char *args[] = {"--tier", "mem://?size=8M", "--max-connections", "4", "--workers", "1",
                          NULL};
    start_with(args);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = tc_test_connect(srv.port);
        struct tc_test_resp r;
        cr_assert_eq(tc_test_http_fd(fds[i], "GET", "/health", NULL, NULL, 0, &r), 0);
        cr_assert_eq(r.status, 200);
        tc_test_resp_free(&r);
    }
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "GET", "/health", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 503, "connection over the limit: %d", r.status);
    tc_test_resp_free(&r);
    close(fds[0]);
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/health", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "a freed slot is usable again");
    tc_test_resp_free(&r);
    for (int i = 1; i < 4; i++) {
        close(fds[i]);
    }
    teardown();
}

Test(config, sigterm_finishes_and_exits_zero, .init = NULL, .fini = NULL)
{
    const char *args[] = {"--tier", "mem://?size=8M", NULL};
    start_with(args);
    int fd = tc_test_connect(srv.port);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http_fd(fd, "GET", "/health", NULL, NULL, 0, &r), 0);
    tc_test_resp_free(&r);
    int st = tc_test_server_stop(&srv, SIGTERM);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d:\n%s", st, srv.log);
    cr_assert(strstr(srv.log, "stopped") != NULL, "%s", srv.log);
    close(fd);
}

Test(config, help_and_version, .init = NULL, .fini = NULL)
{
    FILE *p = popen(TC_SERVER_BIN " --help", "r");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    cr_assert_eq(pclose(p), 0);
    cr_assert(strstr(buf, "--tier") && strstr(buf, "--listen") && strstr(buf, "--max-value") &&
                  strstr(buf, "--config"),
              "%s", buf);
    p = popen(TC_SERVER_BIN " --version", "r");
    n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    cr_assert_eq(pclose(p), 0);
    cr_assert(strncmp(buf, "tiercache ", 10) == 0, "%s", buf);
}
