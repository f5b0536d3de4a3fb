/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 12 (item 9), through the real binary: a Redis password never
 * reaches the server's log, whether Redis refuses it, the --tier value is
 * bad, or all is well; and password_file= works, and is refused when group
 * or others may read it. Each test starts a private redis-server with a
 * requirepass of its own (tests/support/redis_server.h) and tiercache with
 * a Redis tier only (tests/support/server.h), and greps what the server
 * wrote to stderr, its log.
 */
#include "tests/support/redis_server.h"
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RIGHT_PW "right-pw-7731"
#define BODY     "{\"value\":\"v\",\"ttl\":100}"

static struct tc_redis_server *redis;
static struct tc_test_server srv;
static char pw_path[64];

static void setup(void)
{
    struct tc_redis_server_opts o = {.requirepass = RIGHT_PW};
    cr_assert_eq(tc_redis_server_start(&o, &redis), 0, "cannot start redis-server");
    memset(&srv, 0, sizeof(srv));
    pw_path[0] = '\0';
}

static void teardown(void)
{
    if (srv.pid > 0) {
        tc_test_server_stop(&srv, SIGTERM);
    }
    tc_redis_server_destroy(redis);
    redis = NULL;
    if (pw_path[0] != '\0') {
        unlink(pw_path);
    }
}

TestSuite(secrets, .init = setup, .fini = teardown, .timeout = 120);

/* Starts tiercache with the one tier (a format taking the Redis port). */
static int start_with(const char *fmt)
{
    char tier[512];
    snprintf(tier, sizeof(tier), fmt, tc_redis_server_port(redis));
    const char *args[] = {"--workers", "1", "--tier", tier, NULL};
    return tc_test_server_start(&srv, args);
}

static void write_pw_file(const char *content, mode_t mode)
{
    snprintf(pw_path, sizeof(pw_path), "/tmp/tc-pw-XXXXXX");
    int fd = mkstemp(pw_path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

Test(secrets, refused_password_is_not_in_the_crit_line)
{
    cr_assert_neq(start_with("redis://:wrong-pw-5150@127.0.0.1:%u/0"), 0,
                  "started with a wrong password:\n%s", srv.log);
    cr_assert_not_null(strstr(srv.log, "--tier"), "no crit line:\n%s", srv.log);
    cr_assert_not_null(strstr(srv.log, "AUTH"), "the reason is missing:\n%s", srv.log);
    cr_assert_null(strstr(srv.log, "wrong-pw-5150"), "the password is in the log:\n%s", srv.log);
}

Test(secrets, bad_tier_values_are_quoted_masked)
{
    static const struct {
        const char *fmt, *secret;
    } bad[] = {
        {"redis://:sekrit-one@127.0.0.1:%u/0?bogus=1", "sekrit-one"},
        {"redis://:sek rit-two@127.0.0.1:%u/0", "rit-two"},
        {"redis://127.0.0.1:%u/0?password=sekrit-three", "sekrit-three"},
        {"redis://sekrit-four@127.0.0.1:%u/0", "sekrit-four"},
        {"redis://:sekrit-five@127.0.0.1:%u/0?db=1&db=2", "sekrit-five"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_neq(start_with(bad[i].fmt), 0, "%s: started", bad[i].fmt);
        cr_assert_not_null(strstr(srv.log, "--tier"), "%s: no error:\n%s", bad[i].fmt, srv.log);
        cr_assert_null(strstr(srv.log, bad[i].secret), "%s: the secret is in the log:\n%s",
                       bad[i].fmt, srv.log);
        close(srv.log_fd);
        memset(&srv, 0, sizeof(srv));
    }
}

Test(secrets, right_password_is_masked_in_log_and_stats)
{
    cr_assert_eq(start_with("redis://:" RIGHT_PW "@127.0.0.1:%u/0?timeout_ms=2000"), 0,
                 "did not start:\n%s", srv.log);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/k", "Content-Type: application/json\r\n",
                              BODY, strlen(BODY), &r),
                 0);
    cr_assert_lt(r.status, 300, "PUT: %d %s", r.status, r.body);
    tc_test_resp_free(&r);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/stats", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.body, RIGHT_PW), "/stats shows the password: %s", r.body);
    cr_assert_not_null(strstr(r.body, "redis://"), "%s", r.body);
    tc_test_resp_free(&r);
    tc_test_server_drain_log(&srv);
    cr_assert_not_null(strstr(srv.log, "redis://:***@"), "%s", srv.log);
    cr_assert_null(strstr(srv.log, RIGHT_PW), "the password is in the log:\n%s", srv.log);
}

Test(secrets, password_file_works_and_must_be_private)
{
    write_pw_file(RIGHT_PW "\n", 0600);
    char fmt[256];
    snprintf(fmt, sizeof(fmt), "redis://127.0.0.1:%%u/0?timeout_ms=2000&password_file=%s", pw_path);
    cr_assert_eq(start_with(fmt), 0, "did not start with password_file:\n%s", srv.log);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/f", "Content-Type: application/json\r\n",
                              BODY, strlen(BODY), &r),
                 0);
    cr_assert_lt(r.status, 300, "PUT: %d %s", r.status, r.body);
    tc_test_resp_free(&r);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/cache/f", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "GET: %d %s", r.status, r.body);
    tc_test_resp_free(&r);
    cr_assert_eq(tc_test_server_stop(&srv, SIGTERM) >= 0, 1);
    cr_assert_null(strstr(srv.log, RIGHT_PW), "the password is in the log:\n%s", srv.log);

    cr_assert_eq(chmod(pw_path, 0644), 0);
    memset(&srv, 0, sizeof(srv));
    cr_assert_neq(start_with(fmt), 0, "started with a world-readable password_file");
    cr_assert_not_null(strstr(srv.log, "chmod 600"), "no clear error:\n%s", srv.log);
    cr_assert_null(strstr(srv.log, RIGHT_PW), "the password is in the log:\n%s", srv.log);
}
