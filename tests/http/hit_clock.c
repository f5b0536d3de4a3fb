/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The hit path's cached clock, through the real server (src/clock.h: one
 * monotonic read per request, the wall clock derived from it): the times a
 * client sees are honest. Last-Modified is never later than Date in one
 * answer (RFC 9110 8.8.2.1), also for a value written on a clock ahead of
 * the server's (planted in the shared shm segment through the tier code,
 * as another process or host would write it); Date follows the real clock;
 * a TTL counts on the real clock.
 */
#include "src/origin.h"
#include "tests/support/clock.h"
#include "tests/support/server.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define JSON_CT "Content-Type: application/json\r\n"

static struct tc_test_server srv;
static char name[64];
static char uri[160];

static void setup(void)
{
    static int n;
    snprintf(name, sizeof(name), "tc-hitclock-%d-%d", (int)getpid(), n++);
    snprintf(uri, sizeof(uri), "shm://%s?size=4M", name);
    memset(&srv, 0, sizeof(srv));
    /* One worker: every request of a test meets the same cached clock. */
    const char *args[] = {"--tier", uri, "--workers", "1", NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "tiercache did not start:\n%s", srv.log);
}

static void teardown(void)
{
    cr_expect(tc_test_server_stop_clean(&srv), "server did not exit cleanly (status %d):\n%s",
              srv.exit_status, srv.log);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    unlink(path);
}

TestSuite(hit_clock, .init = setup, .fini = teardown, .timeout = 60);

static int64_t date_of(const struct tc_test_resp *r, const char *header)
{
    char v[128];
    cr_assert_eq(tc_test_resp_header(r, header, v, sizeof(v)), 0, "no %s in:\n%s", header,
                 r->headers);
    int64_t s;
    cr_assert_eq(tc_http_date_parse(v, &s), 0, "%s: '%s'", header, v);
    return s;
}

static int request(int fd, const char *method, const char *target, const char *body,
                   struct tc_test_resp *r)
{
    return tc_test_http_fd(fd, method, target, body ? JSON_CT : NULL, body, body ? strlen(body) : 0,
                           r);
}

Test(hit_clock, a_just_written_key_has_last_modified_not_after_date_and_date_is_now)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    for (int i = 0; i < 50; i++) {
        char target[32];
        snprintf(target, sizeof(target), "/cache/k%d", i);
        struct tc_test_resp r;
        cr_assert_eq(request(fd, "PUT", target, "{\"value\":\"v\",\"ttl\":60}", &r), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        tc_test_resp_free(&r);
        cr_assert_eq(request(fd, "GET", target, NULL, &r), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        int64_t wall = (int64_t)(tc_test_wall_ms() / 1000);
        int64_t lm = date_of(&r, "last-modified"), date = date_of(&r, "date");
        cr_expect_leq(lm, date, "round %d: Last-Modified %lld after Date %lld", i, (long long)lm,
                      (long long)date);
        cr_expect(date <= wall && date >= wall - 1, "round %d: Date %lld, the clock says %lld", i,
                  (long long)date, (long long)wall);
        tc_test_resp_free(&r);
        if (i % 10 == 9) {
            tc_test_sleep_ms(450); /* past refreshes of the wall-clock offset */
        }
    }
    close(fd);
}

Test(hit_clock, a_value_written_on_a_clock_ahead_gets_last_modified_no_later_than_date)
{
    /* Another process on the host writes into the shared segment with its
     * clock a minute ahead (or a Redis tier carries it from such a host). */
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[512];
    cr_assert_eq(tc_tier_open(NULL, uri, &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    uint64_t ahead = tc_test_wall_ms() + 60000;
    struct tc_tier_req w = {.key = "ahead", .key_len = 5, .value = "x", .value_len = 1};
    w.now_ms = ahead;
    w.hdr.encoding = TC_ENC_STRING;
    w.hdr.created_ms = ahead;
    w.hdr.expire_ms = ahead + 600000;
    cr_assert_eq(tc_tier_set(c, &w), TC_OK);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);

    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    struct tc_test_resp r;
    for (int i = 0; i < 2; i++) { /* the second answer's Last-Modified is the formatted one kept */
        cr_assert_eq(request(fd, "GET", "/cache/ahead", NULL, &r), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        int64_t lm = date_of(&r, "last-modified"), date = date_of(&r, "date");
        cr_expect_leq(lm, date, "Last-Modified %lld is after Date %lld", (long long)lm,
                      (long long)date);
        cr_expect_eq(lm, date, "clamped to Date");
        tc_test_resp_free(&r);
    }
    close(fd);
}

/* Requests on @p fd for @p ms: the worker's cached clock is read by each. */
static void keep_busy(int fd, unsigned ms)
{
    uint64_t t0 = tc_test_mono_ms();
    while (tc_test_mono_ms() - t0 < ms) {
        struct tc_test_resp r;
        cr_assert_eq(request(fd, "GET", "/health", NULL, &r), 0);
        tc_test_resp_free(&r);
        tc_test_sleep_ms(20);
    }
}

Test(hit_clock, a_ttl_counts_on_the_real_clock)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    /* First let the server run a while: a clock that stood still (or lagged)
     * would write the key with an expiry already past. */
    keep_busy(fd, 1300);
    struct tc_test_resp r;
    cr_assert_eq(request(fd, "PUT", "/cache/brief", "{\"value\":1,\"ttl\":1}", &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    cr_assert_eq(request(fd, "GET", "/cache/brief", NULL, &r), 0);
    cr_expect_eq(r.status, 200, "a key with ttl 1 s is gone at once: %s", r.body);
    int64_t wall = (int64_t)(tc_test_wall_ms() / 1000), date = date_of(&r, "date");
    cr_expect(date <= wall && date >= wall - 1, "Date %lld, the clock says %lld", (long long)date,
              (long long)wall);
    tc_test_resp_free(&r);
    keep_busy(fd, 1200);
    cr_assert_eq(request(fd, "GET", "/cache/brief", NULL, &r), 0);
    cr_expect_eq(r.status, 404, "a key with ttl 1 s is still there after 1.2 s: %s", r.body);
    tc_test_resp_free(&r);
    close(fd);
}
