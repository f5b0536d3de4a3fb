/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 14 item 5 through the real binary: values written through the HTTP
 * API are sealed in LMDB (data.mdb) and in Redis (redis-cli --scan, GET of
 * the raw key); `tiercache key new` + SIGHUP rotate the key with every value
 * still readable; a keyring others may read, or encrypt=on without one,
 * refuses to start; no key material reaches the log.
 */
#define _GNU_SOURCE /* memmem */
#include "tests/support/clock.h"
#include "tests/support/lmdb_damage.h"
#include "tests/support/metrics_lint.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SECRET "HTTP-PLAINTEXT-SECRET-4711"

static char dir[256], keys[300], l2[300], tier_l2[400];
static char shm_path[128]; /* a test's shm segment, removed at teardown even when it fails */
static struct tc_test_server srv;
static struct tc_redis_server *redis;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tc-crypt-http-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(keys, sizeof(keys), "%s/keys", dir);
    snprintf(l2, sizeof(l2), "%s/l2", dir);
    snprintf(tier_l2, sizeof(tier_l2), "lmdb://%s?map_size=16M&sync=none", l2);
    memset(&srv, 0, sizeof(srv));
}

static void teardown(void)
{
    if (srv.pid > 0) {
        tc_test_server_stop(&srv, SIGTERM);
    }
    tc_redis_server_destroy(redis);
    redis = NULL;
    tc_test_rm_flat_dir(l2);
    tc_test_rm_flat_dir(dir);
    if (shm_path[0] != '\0') {
        unlink(shm_path);
        shm_path[0] = '\0';
    }
}

TestSuite(crypt_http, .init = setup, .fini = teardown, .timeout = 120);

/* Runs a command line, returns its exit status and its stdout in @p out. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "%s", cmd);
    size_t n = 0, r;
    while (n + 1 < cap && (r = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += r;
    }
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void key_new(void)
{
    char cmd[512], out[512];
    snprintf(cmd, sizeof(cmd), "%s key new %s 2>&1", TC_SERVER_BIN, keys);
    cr_assert_eq(run(cmd, out, sizeof(out)), 0, "%s: %s", cmd, out);
}

static void put(const char *key, const char *value)
{
    char target[256], body[256];
    snprintf(target, sizeof(target), "/cache/%s", key);
    snprintf(body, sizeof(body), "{\"value\":\"%s\",\"ttl\":600}", value);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", target, "Content-Type: application/json\r\n", body,
                              strlen(body), &r),
                 0);
    cr_assert_eq(r.status, 200, "PUT %s: %d %s", key, r.status, r.body);
    tc_test_resp_free(&r);
}

static void expect_value(const char *key, const char *value)
{
    char target[256], want[256];
    snprintf(target, sizeof(target), "/cache/%s", key);
    snprintf(want, sizeof(want), "\"value\":\"%s\"", value);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "GET", target, NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "GET %s: %d %s", key, r.status, r.body);
    cr_assert_not_null(strstr(r.body, want), "GET %s: %s", key, r.body);
    tc_test_resp_free(&r);
}

/* Waits (up to 5 s) for @p text in the server's log. */
static int log_has(const char *text)
{
    for (int i = 0; i < 100; i++) {
        tc_test_server_drain_log(&srv);
        if (strstr(srv.log, text) != NULL) {
            return 1;
        }
        tc_test_sleep_ms(50);
    }
    return 0;
}

/* The key lines' hex must never be logged. */
static void expect_no_key_in_log(void)
{
    char cmd[512], out[4096];
    snprintf(cmd, sizeof(cmd), "grep -v '^#' %s | cut -d' ' -f2", keys);
    cr_assert_eq(run(cmd, out, sizeof(out)), 0);
    tc_test_server_drain_log(&srv);
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char head[17];
        snprintf(head, sizeof(head), "%s", line); /* even a part of it */
        cr_assert_null(strstr(srv.log, head), "key material in the log:\n%s", srv.log);
    }
}

Test(crypt_http, no_plaintext_in_data_mdb_or_redis)
{
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "cannot start redis-server");
    key_new();
    char tier_l3[256];
    snprintf(tier_l3, sizeof(tier_l3), "redis://127.0.0.1:%u/0?timeout_ms=2000",
             tc_redis_server_port(redis));
    const char *args[] = {
        "--workers", "1", "--tier", tier_l2, "--tier", tier_l3, "--encryption-keys-file",
        keys,        NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "did not start:\n%s", srv.log);
    cr_assert(log_has("encrypt=on"), "%s", srv.log);
    for (int i = 0; i < 5; i++) {
        char k[32];
        snprintf(k, sizeof(k), "doc%d", i);
        put(k, SECRET);
    }
    expect_value("doc3", SECRET);

    /* Redis: every key the tier wrote, and the raw value of each. */
    char cmd[512], keylist[4096], val[8192];
    snprintf(cmd, sizeof(cmd), "redis-cli -p %u --scan", tc_redis_server_port(redis));
    cr_assert_eq(run(cmd, keylist, sizeof(keylist)), 0);
    int seen = 0;
    for (char *k = strtok(keylist, "\n"); k != NULL; k = strtok(NULL, "\n")) {
        if (strncmp(k, "tc:doc", 6) != 0) {
            continue;
        }
        seen++;
        char get[512];
        snprintf(get, sizeof(get), "redis-cli -p %u --no-raw GET '%s'", tc_redis_server_port(redis),
                 k);
        cr_assert_eq(run(get, val, sizeof(val)), 0);
        cr_assert_gt(strlen(val), 40, "%s: %s", k, val);
        cr_assert_null(strstr(val, SECRET), "plaintext in Redis under %s: %s", k, val);
        cr_assert_null(strstr(val, "PLAINTEXT"), "plaintext in Redis under %s: %s", k, val);
    }
    cr_assert_eq(seen, 5, "redis-cli --scan saw %d of the 5 keys", seen);

    cr_assert_eq(tc_test_server_stop(&srv, SIGTERM), 0);
    srv.pid = 0;
    char path[400];
    snprintf(path, sizeof(path), "%s/data.mdb", l2);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    static unsigned char buf[16 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_gt(n, 0);
    cr_assert_null(memmem(buf, n, SECRET, strlen(SECRET)), "plaintext in data.mdb");
    cr_assert_null(memmem(buf, n, "PLAINTEXT", 9), "plaintext in data.mdb");
    expect_no_key_in_log();
}

Test(crypt_http, sighup_rotation_keeps_every_value_readable)
{
    key_new();
    const char *args[] = {"--workers", "2", "--tier", tier_l2, "--encryption-keys-file",
                          keys,        NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "did not start:\n%s", srv.log);
    char k[32], v[64];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "rot%d", i);
        snprintf(v, sizeof(v), "under-key-1-%d", i);
        put(k, v);
    }
    key_new();
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    cr_assert(log_has("new writes use key 2"), "no reload:\n%s", srv.log);
    for (int i = 10; i < 20; i++) {
        snprintf(k, sizeof(k), "rot%d", i);
        snprintf(v, sizeof(v), "under-key-2-%d", i);
        put(k, v);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "rot%d", i);
        snprintf(v, sizeof(v), "under-key-%d-%d", i < 10 ? 1 : 2, i);
        expect_value(k, v);
    }
    /* The sweeper's rekey walk moves the first ten to key 2, and /stats
     * then says no record uses key 1: it may be retired. */
    cr_assert(log_has("records re-sealed under the newest key"), "no rekey:\n%s", srv.log);
    int retired = 0;
    for (int i = 0; i < 100 && !retired; i++) {
        struct tc_test_resp r;
        cr_assert_eq(tc_test_http(srv.port, "GET", "/stats", NULL, NULL, 0, &r), 0);
        retired = strstr(r.body, "\"records_by_key\":{\"2\":20}") != NULL;
        tc_test_resp_free(&r);
        if (!retired) {
            tc_test_sleep_ms(50);
        }
    }
    cr_assert(retired, "/stats never counted all 20 records under key 2");
    struct tc_test_resp mr;
    cr_assert_eq(tc_test_http(srv.port, "GET", "/metrics", NULL, NULL, 0, &mr), 0);
    cr_assert_not_null(
        strstr(mr.body,
               "tiercache_tier_records_by_key{tier=\"l1\",scheme=\"lmdb\",key_id=\"2\"} 20"),
        "%s", mr.body);
    char report[4096];
    cr_assert_eq(tc_test_metrics_lint(mr.body, report, sizeof(report)), 0, "%s", report);
    tc_test_resp_free(&mr);
    /* A keyring made unsafe is not reloaded: the keys in use stay. */
    cr_assert_eq(chmod(keys, 0644), 0);
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    cr_assert(log_has("keyring not reloaded"), "%s", srv.log);
    put("after", "still-sealed");
    expect_value("after", "still-sealed");
    expect_value("rot0", "under-key-1-0");
    expect_no_key_in_log();
}

/* An L1 that seals its values: the shm record's ETag slot is over the sealed
 * bytes, so a hit from it must give the plaintext's ETag, the one the PUT
 * answered (tiers/tier.c drops the backend's). */
Test(crypt_http, a_sealed_shm_hit_has_the_values_etag)
{
    key_new();
    char l1[128];
    snprintf(l1, sizeof(l1), "shm://tc-crypt-etag-%d?size=4M&encrypt=on", (int)getpid());
    snprintf(shm_path, sizeof(shm_path), "/dev/shm/tc-crypt-etag-%d", (int)getpid());
    const char *args[] = {
        "--workers", "1", "--tier", l1, "--tier", tier_l2, "--encryption-keys-file", keys, NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "did not start:\n%s", srv.log);
    const char *body = "{\"value\":\"" SECRET "\",\"ttl\":600}";
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/e", "Content-Type: application/json\r\n",
                              body, strlen(body), &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char etag[64], got[64];
    cr_assert_eq(tc_test_resp_header(&r, "etag", etag, sizeof(etag)), 0, "no ETag on the PUT");
    tc_test_resp_free(&r);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/cache/e", NULL, NULL, 0, &r), 0);
    cr_assert_str_eq(r.x_cache_tier, "l1");
    cr_assert_eq(tc_test_resp_header(&r, "etag", got, sizeof(got)), 0);
    cr_assert_str_eq(got, etag, "the sealed L1's ETag is not the value's");
    tc_test_resp_free(&r);
    cr_assert(tc_test_server_stop_clean(&srv), "%s", srv.log);
}

Test(crypt_http, a_readable_keyring_or_encrypt_without_one_refuses_to_start)
{
    key_new();
    cr_assert_eq(chmod(keys, 0644), 0);
    const char *args[] = {"--workers", "1", "--tier", tier_l2, "--encryption-keys-file",
                          keys,        NULL};
    cr_assert_neq(tc_test_server_start(&srv, args), 0, "started with a 0644 keyring");
    cr_assert_not_null(strstr(srv.log, "chmod 600"), "%s", srv.log);
    cr_assert_not_null(strstr(srv.log, "encryption-keys-file"), "%s", srv.log);
    close(srv.log_fd);
    memset(&srv, 0, sizeof(srv));

    char tier[512];
    snprintf(tier, sizeof(tier), "%s&encrypt=on", tier_l2);
    const char *args2[] = {"--workers", "1", "--tier", tier, NULL};
    cr_assert_neq(tc_test_server_start(&srv, args2), 0, "encrypt=on started without a keyring");
    cr_assert_not_null(strstr(srv.log, "encryption-keys-file"), "%s", srv.log);
}
