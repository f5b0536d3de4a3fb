/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The origin client (src/origin.c): the caching decision as pure functions
 * (tables, no network), then fetches against a real tc-test-origin and
 * against raw sockets that misbehave.
 */
#include "tests/support/clock.h"
#include "src/origin.h"
#include "tests/support/origin.h"

#include <criterion/criterion.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Cache-Control, dates, freshness.                                       */

struct cc_case {
    const char *value;
    int no_store, no_cache, private_, public_;
    int has_max_age;
    uint64_t max_age;
    int has_s_maxage;
    uint64_t s_maxage;
};

static const struct cc_case cc_cases[] = {
    {NULL, 0, 0, 0, 0, 0, 0, 0, 0},
    {"", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=60", 0, 0, 0, 0, 1, 60, 0, 0},
    {"MAX-AGE=60", 0, 0, 0, 0, 1, 60, 0, 0},
    {"Max-Age=060", 0, 0, 0, 0, 1, 60, 0, 0},
    {"max-age=\"60\"", 0, 0, 0, 0, 1, 60, 0, 0},
    {"  max-age = 60 ,  public  ", 0, 0, 0, 1, 1, 60, 0, 0},
    {"public,max-age=5", 0, 0, 0, 1, 1, 5, 0, 0},
    {"s-maxage=10, max-age=60", 0, 0, 0, 0, 1, 60, 1, 10},
    {"max-age=60, S-MAXAGE=0", 0, 0, 0, 0, 1, 60, 1, 0},
    {"no-store", 1, 0, 0, 0, 0, 0, 0, 0},
    {"NO-STORE, max-age=60", 1, 0, 0, 0, 1, 60, 0, 0},
    {"private", 0, 0, 1, 0, 0, 0, 0, 0},
    {"Private=\"Set-Cookie\", max-age=9", 0, 0, 1, 0, 1, 9, 0, 0},
    {"no-cache", 0, 1, 0, 0, 0, 0, 0, 0},
    {"no-cache=\"set-cookie, max-age=1\", max-age=7", 0, 1, 0, 0, 1, 7, 0, 0},
    {"foo=\"a,max-age=1\", max-age=7", 0, 0, 0, 0, 1, 7, 0, 0},
    {"max-age=60, max-age=0", 0, 0, 0, 0, 1, 60, 0, 0},
    /* Malformed numbers: that directive is dropped, the rest stays. */
    {"max-age=abc", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=-1", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=+1", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=1.5", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=60x, public", 0, 0, 0, 1, 0, 0, 0, 0},
    {"max-age=60 x", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=\"60", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=\"6\\0\"", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=abc, max-age=30", 0, 0, 0, 0, 1, 30, 0, 0},
    {"s-maxage=x, max-age=30", 0, 0, 0, 0, 1, 30, 0, 0},
    /* Huge numbers clamp to 2^31 s. */
    {"max-age=99999999999999999999999999", 0, 0, 0, 0, 1, TC_CACHE_MAX_DELTA_S, 0, 0},
    {"s-maxage=2147483649", 0, 0, 0, 0, 0, 0, 1, TC_CACHE_MAX_DELTA_S},
    {"max-age=2147483647", 0, 0, 0, 0, 1, 2147483647, 0, 0},
    /* Garbage around sane directives. */
    {",,, ;;; =5, max-age=5,", 0, 0, 0, 0, 1, 5, 0, 0},
    {"\"\"\"", 0, 0, 0, 0, 0, 0, 0, 0},
    {"no-store garbage", 1, 0, 0, 0, 0, 0, 0, 0},
    {"\t no-store\t", 1, 0, 0, 0, 0, 0, 0, 0},
    {"no-storex, nocache, privatee", 0, 0, 0, 0, 0, 0, 0, 0},
    {"max-age=60\x01, public", 0, 0, 0, 1, 0, 0, 0, 0},
    {"\xff\xfe max-age=3", 0, 0, 0, 0, 0, 0, 0, 0},
};

Test(cache_control, table)
{
    for (size_t i = 0; i < sizeof(cc_cases) / sizeof(cc_cases[0]); i++) {
        const struct cc_case *c = &cc_cases[i];
        struct tc_cache_policy p;
        memset(&p, 0xAB, sizeof(p));
        tc_origin_cache_control_parse(c->value, &p);
        const char *v = c->value ? c->value : "(null)";
        cr_expect_eq(p.no_store, c->no_store, "[%s] no_store %d", v, p.no_store);
        cr_expect_eq(p.no_cache, c->no_cache, "[%s] no_cache %d", v, p.no_cache);
        cr_expect_eq(p.private_, c->private_, "[%s] private %d", v, p.private_);
        cr_expect_eq(p.public_, c->public_, "[%s] public %d", v, p.public_);
        cr_expect_eq(p.has_max_age, c->has_max_age, "[%s] has_max_age %d", v, p.has_max_age);
        if (c->has_max_age) {
            cr_expect_eq(p.max_age_s, c->max_age, "[%s] max_age %llu", v,
                         (unsigned long long)p.max_age_s);
        }
        cr_expect_eq(p.has_s_maxage, c->has_s_maxage, "[%s] has_s_maxage %d", v, p.has_s_maxage);
        if (c->has_s_maxage) {
            cr_expect_eq(p.s_maxage_s, c->s_maxage, "[%s] s_maxage %llu", v,
                         (unsigned long long)p.s_maxage_s);
        }
    }
}

Test(http_date, formats)
{
    int64_t t;
    /* RFC 9110 §5.6.7's example, in its three forms. */
    cr_assert_eq(tc_http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
    cr_expect_eq(t, 784111777);
    cr_assert_eq(tc_http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
    cr_expect_eq(t, 784111777);
    cr_assert_eq(tc_http_date_parse("Sun Nov  6 08:49:37 1994", &t), 0);
    cr_expect_eq(t, 784111777);
    cr_assert_eq(tc_http_date_parse("Thu, 01 Jan 1970 00:00:00 GMT", &t), 0);
    cr_expect_eq(t, 0);
    cr_assert_eq(tc_http_date_parse("Tue, 29 Feb 2028 23:59:59 GMT", &t), 0);
    cr_expect_eq(t, 1835481599);
    const char *bad[] = {"",
                         "0",
                         "-1",
                         "garbage",
                         "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Foo 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 24:00:00 GMT",
                         "Sun, 06 Nov 1994 08:49:37 PST",
                         "Sun, 06 Nov 1994 08:49:37 GMT trailing",
                         "Sun, 6 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Nov 94 08:49:37 GMT"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(tc_http_date_parse(bad[i], &t), -1, "'%s' accepted", bad[i]);
    }
}

struct fr_case {
    int status;
    struct tc_origin_hdrs h;
    int cacheable, has_ttl;
    uint64_t ttl_ms;
};

#define NOW 1700000000 /* Tue, 14 Nov 2023 22:13:20 GMT */

static const struct fr_case fr_cases[] = {
    {200, {.cache_control = "max-age=60"}, 1, 1, 60000},
    {200, {.cache_control = "s-maxage=10, max-age=60"}, 1, 1, 10000},
    {200, {.cache_control = "max-age=60, s-maxage=0"}, 0, 1, 0},
    {200, {.cache_control = "max-age=60", .age = "15"}, 1, 1, 45000},
    {200, {.cache_control = "max-age=60", .age = " 100 "}, 0, 1, 0},
    {200, {.cache_control = "max-age=60", .age = "junk"}, 1, 1, 60000},
    {200, {.cache_control = "max-age=0"}, 0, 1, 0},
    {200, {.cache_control = "max-age=99999999999"}, 1, 1, TC_CACHE_MAX_DELTA_S * 1000},
    {200, {0}, 1, 0, 0},
    {200, {.cache_control = "public"}, 1, 0, 0},
    {200, {.cache_control = "no-store, max-age=60"}, 0, 1, 60000},
    {200, {.cache_control = "private"}, 0, 0, 0},
    {200, {.cache_control = "no-cache, max-age=60"}, 0, 1, 60000},
    {200, {.cache_control = "max-age=60", .set_cookie = 1}, 0, 1, 60000},
    {200, {.cache_control = "max-age=60", .vary = "Accept-Encoding, *"}, 0, 1, 60000},
    {200, {.cache_control = "max-age=60", .vary = "Accept-Encoding"}, 1, 1, 60000},
    {503, {.cache_control = "max-age=60"}, 0, 1, 60000},
    {404, {.cache_control = "max-age=60"}, 0, 1, 60000},
    {204, {0}, 0, 0, 0},
    /* Expires − Date, minus Age; an invalid Expires is already expired. */
    {200,
     {.expires = "Tue, 14 Nov 2023 22:15:20 GMT", .date = "Tue, 14 Nov 2023 22:13:20 GMT"},
     1,
     1,
     120000},
    {200,
     {.expires = "Tue, 14 Nov 2023 22:15:20 GMT",
      .date = "Tue, 14 Nov 2023 22:13:20 GMT",
      .age = "20"},
     1,
     1,
     100000},
    {200, {.expires = "Tue, 14 Nov 2023 22:14:20 GMT"}, 1, 1, 60000}, /* no Date: now */
    {200, {.expires = "Tue, 14 Nov 2023 22:14:20 GMT", .date = "bogus"}, 1, 1, 60000},
    {200, {.expires = "0"}, 0, 1, 0},
    {200, {.expires = "Tue, 14 Nov 2023 22:00:00 GMT"}, 0, 1, 0},
    {200, {.cache_control = "max-age=5", .expires = "Tue, 14 Nov 2023 23:13:20 GMT"}, 1, 1, 5000},
    {200,
     {.cache_control = "max-age=bad", .expires = "Tue, 14 Nov 2023 22:13:30 GMT"},
     1,
     1,
     10000},
};

Test(freshness, table)
{
    for (size_t i = 0; i < sizeof(fr_cases) / sizeof(fr_cases[0]); i++) {
        const struct fr_case *c = &fr_cases[i];
        struct tc_origin_result r;
        memset(&r, 0xAB, sizeof(r));
        tc_origin_freshness(c->status, &c->h, NOW, &r);
        cr_expect_eq(r.cacheable, c->cacheable, "case %zu (%d, cc '%s'): cacheable %d", i,
                     c->status, c->h.cache_control ? c->h.cache_control : "", r.cacheable);
        cr_expect_eq(r.has_ttl, c->has_ttl, "case %zu: has_ttl %d", i, r.has_ttl);
        if (c->has_ttl) {
            cr_expect_eq(r.ttl_ms, c->ttl_ms, "case %zu: ttl_ms %llu, want %llu", i,
                         (unsigned long long)r.ttl_ms, (unsigned long long)c->ttl_ms);
        }
    }
}

Test(origin_url, rejected_with_a_message)
{
    static const struct {
        const char *url, *says;
    } bad[] = {
        {"", "empty"},
        {"not a url", "not a valid URL"},
        {"127.0.0.1:8080", "not a valid URL"},
        {"ftp://127.0.0.1/", "http://"},
        {"https://127.0.0.1/", "https is not supported"},
        {"http://user:pw@127.0.0.1/", "user:password"},
        {"http:///path", "no host"},
        {"http://127.0.0.1:0/", "port 0"},
        {"http://127.0.0.1:99999/", "not a valid URL"},
        {"http://127.0.0.1/#frag", "fragment"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        struct tc_origin *o = tc_origin_create(bad[i].url, 1000, 1024, err, sizeof(err));
        cr_expect_null(o, "'%s' accepted", bad[i].url);
        tc_origin_destroy(o);
        cr_expect(strstr(err, bad[i].says) != NULL, "'%s': message '%s' lacks '%s'", bad[i].url,
                  err, bad[i].says);
    }
    char err[256];
    struct tc_origin *o = tc_origin_create("http://127.0.0.1:1/", 0, 1024, err, sizeof(err));
    cr_expect_null(o, "timeout 0 accepted");
    o = tc_origin_create("HTTP://127.0.0.1:8080/a/b//?x=1", 1000, 1024, err, sizeof(err));
    cr_expect_not_null(o, "%s", err);
    tc_origin_destroy(o);
    o = tc_origin_create("http://[::1]:8080", 1000, 1024, err, sizeof(err));
    cr_expect_not_null(o, "%s", err);
    tc_origin_destroy(o);
}

/* ---------------------------------------------------------------------- */
/* Fetches against a real origin.                                         */

#define MAXF 64

struct got {
    struct event_base *base;
    int want, n;
    int returned[MAXF]; /* tc_origin_fetch had returned */
    int early;          /* a callback ran before its fetch returned */
    struct {
        enum tc_status status;
        int http_status, cacheable, has_ttl;
        uint64_t ttl_ms;
        char body[512];
        size_t body_len;
        char content_type[128];
        char error[256];
        uint64_t at_ms;
    } r[MAXF];
};

struct slot {
    struct got *g;
    int i;
};

static struct tc_test_origin origin;
static struct event_base *base;
static struct tc_origin *org;
static struct tc_origin_ctx *ctx;
static struct got got;
static struct slot slots[MAXF];

static void on_result(struct tc_origin_result *res, void *arg)
{
    struct slot *s = arg;
    struct got *g = s->g;
    if (!g->returned[s->i]) {
        g->early = 1;
    }
    g->r[s->i].status = res->status;
    g->r[s->i].http_status = res->http_status;
    g->r[s->i].cacheable = res->cacheable;
    g->r[s->i].has_ttl = res->has_ttl;
    g->r[s->i].ttl_ms = res->ttl_ms;
    g->r[s->i].body_len = res->body.len;
    size_t n = res->body.len < sizeof(g->r[0].body) - 1 ? res->body.len : sizeof(g->r[0].body) - 1;
    if (n > 0) {
        memcpy(g->r[s->i].body, res->body.data, n);
    }
    g->r[s->i].body[n] = '\0';
    snprintf(g->r[s->i].content_type, sizeof(g->r[0].content_type), "%s", res->content_type);
    snprintf(g->r[s->i].error, sizeof(g->r[0].error), "%s", res->error);
    g->r[s->i].at_ms = tc_test_mono_ms();
    if (++g->n == g->want) {
        event_base_loopbreak(g->base);
    }
}

static void start_origin(const char *const *args)
{
    cr_assert_eq(tc_test_origin_start(&origin, args), 0, "tc-test-origin did not start");
}

static void client(const char *url, uint64_t timeout_ms, size_t max_body)
{
    char err[256];
    org = tc_origin_create(url, timeout_ms, max_body, err, sizeof(err));
    cr_assert_not_null(org, "tc_origin_create(%s): %s", url, err);
    cr_assert_eq(tc_origin_ctx_init(org, base, &ctx), TC_OK);
}

static void fetch(int i, const char *key)
{
    slots[i].g = &got;
    slots[i].i = i;
    got.want++;
    enum tc_status st = tc_origin_fetch(ctx, key, strlen(key), on_result, &slots[i]);
    cr_assert_eq(st, TC_OK, "fetch %s: %s", key, tc_strerror(st));
    got.returned[i] = 1;
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Runs the loop until every fetch answered, at most @p limit_ms. */
static void run(uint64_t limit_ms)
{
    struct event *guard = evtimer_new(base, on_guard, base);
    struct timeval tv = {(time_t)(limit_ms / 1000), (suseconds_t)(limit_ms % 1000) * 1000};
    evtimer_add(guard, &tv);
    if (got.n < got.want) {
        event_base_dispatch(base);
    }
    event_free(guard);
    cr_assert_eq(got.n, got.want, "%d of %d fetches answered within %llu ms", got.n, got.want,
                 (unsigned long long)limit_ms);
    cr_assert_not(got.early, "a callback ran before tc_origin_fetch returned");
}

static void setup(void)
{
    memset(&got, 0, sizeof(got));
    base = event_base_new();
    cr_assert_not_null(base);
    got.base = base;
}

static void teardown(void)
{
    tc_origin_ctx_dispose(ctx);
    ctx = NULL;
    tc_origin_destroy(org);
    org = NULL;
    event_base_free(base);
    if (origin.pid > 0) {
        cr_expect_eq(tc_test_origin_stop(&origin), 0, "tc-test-origin did not exit cleanly");
    }
}

TestSuite(fetch, .init = setup, .fini = teardown, .timeout = 60);

Test(fetch, ok_with_body_content_type_and_ttl)
{
    static const char *const args[] = {"--cache-control", "public, max-age=60", "--content-type",
                                       "application/json; charset=utf-8", NULL};
    start_origin(args);
    client(origin.url, 5000, 1 << 20);
    fetch(0, "hello");
    run(10000);
    cr_assert_eq(got.r[0].status, TC_OK, "%s", got.r[0].error);
    cr_expect_eq(got.r[0].http_status, 200);
    cr_expect_str_eq(got.r[0].body, "value of /hello");
    cr_expect_eq(got.r[0].body_len, strlen("value of /hello"));
    cr_expect_str_eq(got.r[0].content_type, "application/json; charset=utf-8");
    cr_expect_eq(got.r[0].cacheable, 1);
    cr_expect_eq(got.r[0].has_ttl, 1);
    cr_expect_eq(got.r[0].ttl_ms, 60000);
    cr_expect_str_eq(got.r[0].error, "");
    cr_expect_eq(tc_test_origin_requests(&origin), 1);

    /* The origin saw our Host and User-Agent. */
    char last[1024], want[128];
    cr_assert_eq(tc_test_origin_get(&origin, "/__last", last, sizeof(last)), 200);
    snprintf(want, sizeof(want), "\"host\":\"127.0.0.1:%u\"", origin.port);
    cr_expect(strstr(last, want) != NULL, "%s lacks %s", last, want);
    cr_expect(strstr(last, "\"user_agent\":\"tiercache/") != NULL, "%s", last);

    struct tc_origin_stats s;
    tc_origin_stats(org, &s);
    cr_expect_eq(s.requests, 1);
    cr_expect_eq(s.responses, 1);
    cr_expect_eq(s.errors, 0);
    cr_expect_eq(s.inflight, 0);
}

Test(fetch, no_cache_control_is_cacheable_without_ttl)
{
    start_origin(NULL);
    client(origin.url, 5000, 1 << 20);
    fetch(0, "k");
    run(10000);
    cr_assert_eq(got.r[0].status, TC_OK, "%s", got.r[0].error);
    cr_expect_eq(got.r[0].cacheable, 1);
    cr_expect_eq(got.r[0].has_ttl, 0);
    cr_expect_str_eq(got.r[0].content_type, "text/plain");
}

Test(fetch, server_error_keeps_status_and_is_not_cacheable)
{
    static const char *const args[] = {
        "--status", "503", "--cache-control", "max-age=60", "--body", "try later", NULL};
    start_origin(args);
    client(origin.url, 5000, 1 << 20);
    fetch(0, "k");
    run(10000);
    cr_assert_eq(got.r[0].status, TC_OK, "%s", got.r[0].error);
    cr_expect_eq(got.r[0].http_status, 503);
    cr_expect_eq(got.r[0].cacheable, 0);
    cr_expect_str_eq(got.r[0].body, "try later");
    cr_expect(strstr(got.r[0].error, "503") != NULL, "error '%s'", got.r[0].error);
    struct tc_origin_stats s;
    tc_origin_stats(org, &s);
    cr_expect_eq(s.status_5xx, 1);
    cr_expect_eq(s.errors, 0);

    /* no-store and 404 are answers too, just not storable. */
    cr_assert_eq(tc_test_origin_config(&origin, "status=404&cache_control=max-age%3D60"), 0);
    fetch(1, "k");
    run(10000);
    cr_assert_eq(tc_test_origin_config(&origin, "status=200&cache_control=no-store"), 0);
    fetch(2, "k");
    run(10000);
    cr_expect_eq(got.r[1].http_status, 404);
    cr_expect_eq(got.r[1].cacheable, 0);
    cr_expect_str_eq(got.r[1].error, "");
    cr_expect_eq(got.r[2].http_status, 200);
    cr_expect_eq(got.r[2].cacheable, 0);
}

Test(fetch, slow_origin_times_out_within_bounds)
{
    static const char *const args[] = {"--delay-ms", "6000", NULL};
    start_origin(args);
    client(origin.url, 300, 1 << 20);
    uint64_t t0 = tc_test_mono_ms();
    fetch(0, "slow");
    fetch(1, "slow2"); /* a second one, queued or on a second connection */
    run(10000);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(got.r[i].status, TC_ETIMEOUT, "%d: %s", i, tc_strerror(got.r[i].status));
        uint64_t took = got.r[i].at_ms - t0;
        /* Not before the deadline; well before the origin would answer. */
        cr_expect(took >= 250 && took < 5000, "timed out after %llu ms", (unsigned long long)took);
        cr_expect_neq(got.r[i].error[0], '\0');
    }
    struct tc_origin_stats s;
    tc_origin_stats(org, &s);
    cr_expect_eq(s.timeouts, 2);
    cr_expect_eq(s.errors, 2);
    cr_expect_eq(s.inflight, 0);

    /* The connections were dropped; a fast answer afterwards still works. */
    cr_assert_eq(tc_test_origin_config(&origin, "delay_ms=0"), 0);
    fetch(2, "fast");
    run(10000);
    cr_expect_eq(got.r[2].status, TC_OK, "%s", got.r[2].error);
    cr_expect_str_eq(got.r[2].body, "value of /fast");
}

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

Test(fetch, refused_port_is_unavailable)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", free_port());
    client(url, 3000, 1 << 20);
    uint64_t t0 = tc_test_mono_ms();
    fetch(0, "a");
    fetch(1, "b");
    run(10000);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(got.r[i].status, TC_EUNAVAIL, "%s", tc_strerror(got.r[i].status));
        cr_expect_eq(got.r[i].http_status, 0);
        cr_expect_neq(got.r[i].error[0], '\0');
    }
    cr_expect_lt(tc_test_mono_ms() - t0, 2500,
                 "a refused connect should not wait for the deadline");
}

Test(fetch, body_over_max_body_is_too_big)
{
    static const char *const args[] = {"--body-size", "100000", NULL};
    start_origin(args);
    client(origin.url, 5000, 1000);
    fetch(0, "big");
    run(10000);
    cr_expect_eq(got.r[0].status, TC_ETOOBIG, "%s", tc_strerror(got.r[0].status));
    /* Chunked: the limit holds without a Content-Length. */
    cr_assert_eq(tc_test_origin_config(&origin, "chunked=1"), 0);
    fetch(1, "big");
    run(10000);
    cr_expect_eq(got.r[1].status, TC_ETOOBIG, "%s", tc_strerror(got.r[1].status));
    /* Exactly the limit is fine, chunked or not. */
    cr_assert_eq(tc_test_origin_config(&origin, "body_size=1000"), 0);
    fetch(2, "edge");
    run(10000);
    cr_assert_eq(tc_test_origin_config(&origin, "chunked=0"), 0);
    fetch(3, "edge");
    run(10000);
    for (int i = 2; i < 4; i++) {
        cr_expect_eq(got.r[i].status, TC_OK, "%d: %s", i, got.r[i].error);
        cr_expect_eq(got.r[i].body_len, 1000);
    }
    struct tc_origin_stats s;
    tc_origin_stats(org, &s);
    cr_expect_eq(s.too_big, 2);
}

Test(fetch, keys_are_percent_encoded_under_the_url_path)
{
    start_origin(NULL);
    char url[128];
    snprintf(url, sizeof(url), "%s/api/v1/", origin.url);
    client(url, 5000, 1 << 20);
    fetch(0, "a b/c/\xc3\xa9?#%+~._-");
    run(10000);
    cr_assert_eq(got.r[0].status, TC_OK, "%s", got.r[0].error);
    cr_expect_str_eq(got.r[0].body, "value of /api/v1/a%20b%2Fc%2F%C3%A9%3F%23%25%2B~._-");
    char last[1024];
    cr_assert_eq(tc_test_origin_get(&origin, "/__last", last, sizeof(last)), 200);
    cr_expect(strstr(last, "\"target\":\"/api/v1/a%20b%2Fc%2F%C3%A9%3F%23%25%2B~._-\"") != NULL,
              "%s", last);

    /* Binary keys (NUL included) and a query kept after the key. */
    tc_origin_ctx_dispose(ctx);
    tc_origin_destroy(org);
    ctx = NULL;
    snprintf(url, sizeof(url), "%s/p?v=1&w=2", origin.url);
    client(url, 5000, 1 << 20);
    slots[1].g = &got;
    slots[1].i = 1;
    got.want++;
    cr_assert_eq(tc_origin_fetch(ctx, "x\0y", 3, on_result, &slots[1]), TC_OK);
    got.returned[1] = 1;
    run(10000);
    cr_assert_eq(got.r[1].status, TC_OK, "%s", got.r[1].error);
    cr_expect_str_eq(got.r[1].body, "value of /p/x%00y");
    cr_assert_eq(tc_test_origin_get(&origin, "/__last", last, sizeof(last)), 200);
    cr_expect(strstr(last, "\"target\":\"/p/x%00y?v=1&w=2\"") != NULL, "%s", last);

    cr_expect_eq(tc_origin_fetch(ctx, "", 0, on_result, &slots[2]), TC_EINVAL);
}

Test(fetch, fifty_concurrent_on_one_ctx)
{
    static const char *const args[] = {"--delay-ms", "100", NULL};
    start_origin(args);
    client(origin.url, 10000, 1 << 20);
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        fetch(i, key);
    }
    run(20000);
    char want[64];
    for (int i = 0; i < 50; i++) {
        snprintf(want, sizeof(want), "value of /k%d", i);
        cr_expect_eq(got.r[i].status, TC_OK, "%d: %s", i, got.r[i].error);
        cr_expect_str_eq(got.r[i].body, want);
    }
    cr_expect_eq(tc_test_origin_requests(&origin), 50);
    struct tc_origin_stats s;
    tc_origin_stats(org, &s);
    cr_expect_eq(s.requests, 50);
    cr_expect_eq(s.responses, 50);
    cr_expect(s.connections >= 2 && s.connections <= TC_ORIGIN_DEFAULT_CONNS, "%llu connections",
              (unsigned long long)s.connections);
}

Test(fetch, sequential_fetches_reuse_one_connection)
{
    start_origin(NULL);
    client(origin.url, 5000, 1 << 20);
    for (int i = 0; i < 5; i++) {
        fetch(i, "again");
        run(10000);
        cr_expect_eq(got.r[i].status, TC_OK, "%s", got.r[i].error);
    }
    struct tc_origin_stats s;
    tc_origin_stats(org, &s);
    cr_expect_eq(s.connections, 1);
    cr_expect_eq(tc_test_origin_requests(&origin), 5);
}

static void on_result_refetch(struct tc_origin_result *res, void *arg)
{
    on_result(res, arg);
    /* Fetches started while the ctx is disposed fail at once. */
    cr_expect_eq(tc_origin_fetch(ctx, "late", 4, on_result, &slots[MAXF - 1]), TC_EUNAVAIL);
}

Test(fetch, dispose_completes_in_flight_fetches)
{
    static const char *const args[] = {"--delay-ms", "5000", NULL};
    start_origin(args);
    client(origin.url, 20000, 1 << 20);
    for (int i = 0; i < 3; i++) {
        slots[i].g = &got;
        slots[i].i = i;
        got.want++;
        cr_assert_eq(tc_origin_fetch(ctx, "k", 1, on_result_refetch, &slots[i]), TC_OK);
        got.returned[i] = 1;
    }
    /* Let the requests reach the origin. */
    struct event *guard = evtimer_new(base, on_guard, base);
    struct timeval tv = {0, 200000};
    evtimer_add(guard, &tv);
    event_base_dispatch(base);
    event_free(guard);
    cr_assert_eq(got.n, 0);
    tc_origin_ctx_dispose(ctx);
    ctx = NULL;
    cr_expect_eq(got.n, 3, "dispose ran %d of 3 callbacks", got.n);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(got.r[i].status, TC_EUNAVAIL);
    }
    struct tc_origin_stats s;
    tc_origin_stats(org, &s); /* a disposed ctx still counts */
    cr_expect_eq(s.requests, 3);
    cr_expect_eq(s.errors, 3);
    cr_expect_eq(s.inflight, 0);
}

/* A raw server that answers one connection with @p reply (NULL: closes
 * without a word), in a child process. */
static pid_t raw_server(const char *reply, unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(fd, 16), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int c = accept(fd, NULL, NULL);
        char buf[4096];
        if (c >= 0 && recv(c, buf, sizeof(buf), 0) > 0 && reply != NULL) {
            if (send(c, reply, strlen(reply), MSG_NOSIGNAL) < 0) {
                _exit(1);
            }
        }
        _exit(0); /* closes c */
    }
    close(fd);
    return pid;
}

Test(fetch, malformed_answer_is_eio_and_early_close_is_unavailable)
{
    unsigned port;
    char url[64];
    pid_t pid = raw_server("garbage that is not HTTP\r\n\r\n", &port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
    client(url, 5000, 1 << 20);
    fetch(0, "k");
    run(10000);
    waitpid(pid, NULL, 0);
    cr_expect_eq(got.r[0].status, TC_EIO, "%s", tc_strerror(got.r[0].status));
    cr_expect_neq(got.r[0].error[0], '\0');
    tc_origin_ctx_dispose(ctx);
    tc_origin_destroy(org);
    ctx = NULL;

    pid = raw_server(NULL, &port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
    client(url, 5000, 1 << 20);
    fetch(1, "k");
    run(10000);
    waitpid(pid, NULL, 0);
    cr_expect_eq(got.r[1].status, TC_EUNAVAIL, "%s", tc_strerror(got.r[1].status));
    tc_origin_ctx_dispose(ctx);
    tc_origin_destroy(org);
    ctx = NULL;

    /* Headers cut short by the close: not an answer either. */
    pid = raw_server("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", &port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
    client(url, 5000, 1 << 20);
    fetch(2, "k");
    run(10000);
    waitpid(pid, NULL, 0);
    cr_expect_eq(got.r[2].status, TC_EUNAVAIL, "%s", tc_strerror(got.r[2].status));

    /* A CR inside a header value: evhttp refuses the whole answer. */
    tc_origin_ctx_dispose(ctx);
    tc_origin_destroy(org);
    ctx = NULL;
    pid = raw_server("HTTP/1.1 200 OK\r\nContent-Type: text/html\rX-Evil: 1\r\n"
                     "Content-Length: 2\r\nConnection: close\r\n\r\nok",
                     &port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
    client(url, 5000, 1 << 20);
    fetch(3, "k");
    run(10000);
    waitpid(pid, NULL, 0);
    cr_expect_eq(got.r[3].status, TC_EIO, "%s", tc_strerror(got.r[3].status));

    /* Other control bytes pass evhttp; the Content-Type is then dropped. */
    tc_origin_ctx_dispose(ctx);
    tc_origin_destroy(org);
    ctx = NULL;
    pid = raw_server("HTTP/1.1 200 OK\r\nContent-Type: text/\x01html\r\n"
                     "Content-Length: 2\r\nConnection: close\r\n\r\nok",
                     &port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
    client(url, 5000, 1 << 20);
    fetch(4, "k");
    run(10000);
    waitpid(pid, NULL, 0);
    cr_expect_eq(got.r[4].status, TC_OK, "%s", got.r[4].error);
    cr_expect_str_eq(got.r[4].body, "ok");
    cr_expect_str_eq(got.r[4].content_type, "");
}
