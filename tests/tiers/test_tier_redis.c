/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Redis tier specifics beyond the shared conformance suite: AUTH (password,
 * ACL user, wrong password), untrusted values planted by another client,
 * clear by prefix next to foreign keys, URI errors, an unreachable server,
 * the async path on an event_base, and lease locks (blocking and async).
 * Every case starts its own redis-server on a free loopback port
 * (tests/support/redis_server.h).
 * Threaded and fault cases live in redis_faults.c, which also runs under TSan.
 */
#include "tests/support/clock.h"
#include "tests/support/redis_server.h"
#include "tests/support/stats.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct tc_redis_server *srv;
static struct tc_tier *tier;
static struct tc_tier_ctx *ctx;
static struct tc_buf out;
static uint64_t t0;

static void start_server(const struct tc_redis_server_opts *o)
{
    cr_assert_eq(tc_redis_server_start(o, &srv), 0, "cannot start redis-server");
}

static void setup(void)
{
    tc_buf_init(&out);
    t0 = tc_test_wall_ms();
}

static void teardown(void)
{
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    tc_tier_close(tier);
    tier = NULL;
    tc_buf_deinit(&out);
    tc_redis_server_destroy(srv);
    srv = NULL;
}

TestSuite(redis, .init = setup, .fini = teardown, .timeout = 60);

static enum tc_status open_uri(const char *fmt, char *err, size_t errlen)
{
    char uri[512];
    snprintf(uri, sizeof(uri), fmt, tc_redis_server_port(srv));
    return tc_tier_open(NULL, uri, &tier, err, errlen);
}

static void open_ok(const char *fmt)
{
    char err[512];
    enum tc_status st = open_uri(fmt, err, sizeof(err));
    cr_assert_eq(st, TC_OK, "open: %s (%s)", err, tc_strerror(st));
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
}

static enum tc_status put(const char *k, const char *v)
{
    struct tc_tier_req r = {
        .key = k, .key_len = strlen(k), .value = v, .value_len = strlen(v), .now_ms = t0};
    r.hdr.encoding = TC_ENC_STRING;
    r.hdr.created_ms = t0;
    r.hdr.expire_ms = t0 + 60000;
    return tc_tier_set(ctx, &r);
}

static enum tc_status get(const char *k)
{
    struct tc_tier_req r = {.key = k, .key_len = strlen(k), .out = &out, .now_ms = t0};
    return tc_tier_get(ctx, &r);
}

/* A plain client, as another program would be. */
static redisContext *raw(const char *password)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)tc_redis_server_port(srv), tv);
    cr_assert(c != NULL && !c->err);
    if (password != NULL) {
        redisReply *r = redisCommand(c, "AUTH %s", password);
        cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    return c;
}

static long long raw_int(redisContext *c, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(c, fmt, arg);
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static uint64_t tier_stat(const char *name)
{
    uint64_t v;
    cr_assert(tc_test_tier_stat(tier, name, &v), "no stat %s", name);
    return v;
}

/* ---- AUTH -------------------------------------------------------------------- */

Test(redis, requirepass_auth_and_redacted_uri)
{
    struct tc_redis_server_opts o = {.requirepass = "s3cret-pw"};
    start_server(&o);
    open_ok("redis://:s3cret-pw@127.0.0.1:%u/2?timeout_ms=2000");
    cr_assert_null(strstr(tc_tier_uri(tier), "s3cret-pw"), "password in %s", tc_tier_uri(tier));
    cr_assert_eq(put("a", "1"), TC_OK);
    cr_assert_eq(get("a"), TC_OK);
    cr_assert_eq(out.len, 1);
    /* SELECT 2 happened: the key is in db 2, not db 0. */
    redisContext *c = raw("s3cret-pw");
    cr_assert_eq(raw_int(c, "EXISTS %s", "tc:a"), 0);
    redisReply *r = redisCommand(c, "SELECT 2");
    freeReplyObject(r);
    cr_assert_eq(raw_int(c, "EXISTS %s", "tc:a"), 1);
    redisFree(c);
    cr_assert_eq(tc_tier_health(tier, NULL, 0), TC_HEALTH_OK);
}

Test(redis, acl_user_auth)
{
    struct tc_redis_server_opts o = {
        .requirepass = "default-pw", .acl_user = "alice", .acl_password = "alice-pw"};
    start_server(&o);
    open_ok("redis://alice:alice-pw@127.0.0.1:%u/0?timeout_ms=2000");
    cr_assert_eq(put("k", "v"), TC_OK);
    cr_assert_eq(get("k"), TC_OK);
    cr_assert_eq(tier_stat("subscribed"), 1, "the subscriber authenticates as alice too");
}

Test(redis, requirepass_over_the_unix_socket)
{
    struct tc_redis_server_opts o = {.requirepass = "unix-pw"};
    start_server(&o);
    char uri[512], err[512];
    snprintf(uri, sizeof(uri), "redis+unix://:unix-pw@%s?db=3&timeout_ms=2000",
             tc_redis_server_socket(srv));
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_null(strstr(tc_tier_uri(tier), "unix-pw"));
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    cr_assert_eq(put("u", "1"), TC_OK);
    cr_assert_eq(get("u"), TC_OK);
    redisContext *c = raw("unix-pw");
    freeReplyObject(redisCommand(c, "SELECT 3"));
    cr_assert_eq(raw_int(c, "EXISTS %s", "tc:u"), 1);
    redisFree(c);
}

Test(redis, wrong_password_fails_at_open_with_a_clear_error)
{
    struct tc_redis_server_opts o = {.requirepass = "right-pw"};
    start_server(&o);
    char err[512] = "";
    enum tc_status st = open_uri("redis://:wrong-pw@127.0.0.1:%u/0", err, sizeof(err));
    cr_assert_eq(st, TC_EUNAVAIL, "%s", tc_strerror(st));
    cr_assert_not_null(strstr(err, "AUTH refused"), "error: %s", err);
    cr_assert_null(strstr(err, "wrong-pw"), "the password leaked: %s", err);
    cr_assert_null(tier);

    err[0] = '\0';
    st = open_uri("redis://127.0.0.1:%u/0", err, sizeof(err));
    cr_assert_eq(st, TC_EUNAVAIL, "no password at all: %s", tc_strerror(st));
    cr_assert_not_null(strstr(err, "NOAUTH"), "error: %s", err);

    err[0] = '\0';
    st = open_uri("redis://alice:pw@127.0.0.1:%u/0", err, sizeof(err));
    cr_assert_eq(st, TC_EUNAVAIL, "unknown user: %s", err);
}

/* ---- password_file and secrets in errors (issue 12) ------------------------------ */

/* A temp file holding @p content with mode @p mode; its path in @p path. */
static void pw_file(char path[64], const char *content, mode_t mode)
{
    snprintf(path, 64, "/tmp/tc-pw-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

Test(redis, password_file_is_read_at_open)
{
    struct tc_redis_server_opts o = {
        .requirepass = "file-pw-1", .acl_user = "alice", .acl_password = "alice-file-pw"};
    start_server(&o);
    char path[64], uri[512], err[512];
    pw_file(path, "file-pw-1\n", 0600);
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?timeout_ms=2000&password_file=%s",
             tc_redis_server_port(srv), path);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    cr_assert_eq(put("f", "1"), TC_OK);
    cr_assert_eq(get("f"), TC_OK);
    cr_assert_eq(tier_stat("subscribed"), 1, "the subscriber authenticates from the file too");
    cr_assert_not_null(strstr(tc_tier_uri(tier), "password_file="), "%s", tc_tier_uri(tier));
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    tc_tier_close(tier);
    tier = NULL;
    unlink(path);

    /* 0400, CRLF, an ACL user in the URI and the password in the file, and
     * redis+unix://. */
    pw_file(path, "alice-file-pw\r\n", 0400);
    snprintf(uri, sizeof(uri), "redis+unix://alice@%s?timeout_ms=2000&password_file=%s",
             tc_redis_server_socket(srv), path);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    cr_assert_eq(get("f"), TC_OK);
    unlink(path);
}

Test(redis, password_file_refused_unless_private)
{
    struct tc_redis_server_opts o = {.requirepass = "file-pw-2"};
    start_server(&o);
    char path[64], uri[512], err[512];
    static const mode_t open_modes[] = {0644, 0640, 0604, 0660};
    for (size_t i = 0; i < sizeof(open_modes) / sizeof(open_modes[0]); i++) {
        pw_file(path, "file-pw-2\n", open_modes[i]);
        snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?password_file=%s",
                 tc_redis_server_port(srv), path);
        err[0] = '\0';
        cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_EINVAL, "mode %o",
                     open_modes[i]);
        cr_assert_not_null(strstr(err, "chmod 600"), "mode %o: %s", open_modes[i], err);
        cr_assert_null(strstr(err, "file-pw-2"), "%s", err);
        unlink(path);
    }
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?password_file=/nonexistent/tc-pw",
             tc_redis_server_port(srv));
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_EINVAL);
    cr_assert_not_null(strstr(err, "cannot open"), "%s", err);

    pw_file(path, "", 0600);
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?password_file=%s", tc_redis_server_port(srv),
             path);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_EINVAL);
    cr_assert_not_null(strstr(err, "empty"), "%s", err);
    unlink(path);

    pw_file(path, "file-pw-2\n", 0600);
    snprintf(uri, sizeof(uri), "redis://:file-pw-2@127.0.0.1:%u/0?password_file=%s",
             tc_redis_server_port(srv), path);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_EINVAL);
    cr_assert_not_null(strstr(err, "given twice"), "%s", err);
    cr_assert_null(strstr(err, "file-pw-2"), "%s", err);

    /* A wrong password from the file: refused by Redis, never quoted. */
    unlink(path);
    pw_file(path, "not-the-pw-2\n", 0600);
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?password_file=%s", tc_redis_server_port(srv),
             path);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_EUNAVAIL);
    cr_assert_not_null(strstr(err, "AUTH refused"), "%s", err);
    cr_assert_null(strstr(err, "not-the-pw-2"), "%s", err);
    unlink(path);
}

/* Every error about a tier URI that holds a secret quotes it masked. */
Test(redis, secrets_never_in_open_errors)
{
    struct tc_redis_server_opts o = {.requirepass = "right-pw-3"};
    start_server(&o);
    static const struct {
        const char *fmt, *secret;
    } bad[] = {
        {"redis://:sekrit-a@127.0.0.1:%u/0?bogus=1", "sekrit-a"},
        {"redis://:sekrit-b@127.0.0.1:%u/0?timeout_ms=abc", "sekrit-b"},
        {"redis://:sekrit-c@127.0.0.1:%u/0?db=1&db=2", "sekrit-c"},
        {"redis://sekrit-d@127.0.0.1:%u/0#frag", "sekrit-d"},
        {"redis://:sek rit-e@127.0.0.1:%u/0", "rit-e"},
        {"redis://:sekrit-f@127.0.0.1:%u/0?prefix=a&prefix=b", "sekrit-f"},
        {"redis://127.0.0.1:%u/0?password=sekrit-g&password=x", "sekrit-g"},
        {"redis://:sekrit-h@127.0.0.1:%u/0", "sekrit-h"},  /* wrong password */
        {"redis://sekrit-i@127.0.0.1:%u/0", "sekrit-i"},   /* lone userinfo, wrong */
        {"rediss://:sekrit-j@127.0.0.1:%u/0", "sekrit-j"}, /* unknown scheme */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        enum tc_status st = open_uri(bad[i].fmt, err, sizeof(err));
        cr_assert_neq(st, TC_OK, "%s opened", bad[i].fmt);
        cr_assert_neq(err[0], '\0', "%s: no message", bad[i].fmt);
        cr_assert_null(strstr(err, bad[i].secret), "%s leaked: %s", bad[i].fmt, err);
    }
    /* Opened: tc_tier_uri() masks the lone userinfo too. */
    cr_assert_eq(open_uri("redis://right-pw-3@127.0.0.1:%u/0?timeout_ms=2000", NULL, 0), TC_OK);
    cr_assert_null(strstr(tc_tier_uri(tier), "right-pw-3"), "%s", tc_tier_uri(tier));
}

/* ---- untrusted values ----------------------------------------------------------- */

Test(redis, garbage_values_are_counted_misses)
{
    start_server(NULL);
    open_ok("redis://127.0.0.1:%u/0?timeout_ms=2000&invalidate=none");
    cr_assert_eq(put("good", "value"), TC_OK);
    cr_assert_eq(put("other", "val-o"), TC_OK);
    redisContext *c = raw(NULL);
    redisReply *r = redisCommand(c, "GET %s", "tc:good");
    const size_t n = TC_ITEM_HDR_SIZE + 5;
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING && r->len == n);
    /* The same bytes with one more byte at the end, cut short, or bit-flipped. */
    char buf[64];
    memcpy(buf, r->str, r->len);
    freeReplyObject(r);
    /* Issue 12: a changed payload byte, and another key's item, were served. */
    buf[n - 5] = 'X';
    freeReplyObject(redisCommand(c, "SET tc:payload %b", buf, n));
    buf[n - 5] = 'v';
    r = redisCommand(c, "GET %s", "tc:other");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING && r->len == n);
    freeReplyObject(redisCommand(c, "SET tc:swapped %b", r->str, r->len));
    freeReplyObject(r);
    buf[n] = 'x';
    freeReplyObject(redisCommand(c, "SET tc:trailing %b", buf, n + 1));
    freeReplyObject(redisCommand(c, "SET tc:short %b", buf, (size_t)20));
    buf[10] ^= 0x40;
    freeReplyObject(redisCommand(c, "SET tc:flipped %b", buf, n));
    freeReplyObject(redisCommand(c, "SET tc:text %s", "hello, not an item"));
    freeReplyObject(redisCommand(c, "SET tc:empty %s", ""));
    freeReplyObject(redisCommand(c, "RPUSH tc:list a b c"));
    freeReplyObject(redisCommand(c, "HSET tc:hash f v"));
    redisFree(c);

    static const char *const bad[] = {"payload", "swapped", "trailing", "short", "flipped",
                                      "text",    "empty",   "list",     "hash"};
    const size_t nbad = sizeof(bad) / sizeof(bad[0]);
    for (size_t i = 0; i < nbad; i++) {
        enum tc_status gst = get(bad[i]);
        cr_assert_eq(gst, TC_ECORRUPT, "%s: %s", bad[i], tc_strerror(gst));
        cr_assert_eq(out.len, 0);
    }
    cr_assert_eq(tier_stat("bad_replies"), nbad);
    cr_assert_eq(tier_stat("corrupt"), nbad);
    cr_assert_eq(tier_stat("misses"), 0);
    cr_assert_eq(tier_stat("errors"), 0);
    cr_assert_eq(get("good"), TC_OK, "the connection survives garbage");
    cr_assert_eq(get("other"), TC_OK);
    cr_assert_eq(tc_tier_health(tier, NULL, 0), TC_HEALTH_OK);
}

/* Issue 12: a reply longer than max_item plus the item header is refused as
 * it arrives (the connection is closed and re-made); one of exactly that
 * length is a value like any other. */
Test(redis, replies_longer_than_max_item_are_refused)
{
    start_server(NULL);
    open_ok("redis://127.0.0.1:%u/0?timeout_ms=2000&invalidate=none&max_item=4K");
    char *v = malloc(4096 + TC_ITEM_HDR_SIZE + 2);
    cr_assert_not_null(v);
    memset(v, 'v', 4096);
    v[4096] = '\0';
    cr_assert_eq(put("max", v), TC_OK);
    cr_assert_eq(get("max"), TC_OK);
    cr_assert_eq(out.len, 4096);
    redisContext *c = raw(NULL);
    memset(v, 'w', 4096 + TC_ITEM_HDR_SIZE + 1);
    freeReplyObject(redisCommand(c, "SET tc:over %b", v, (size_t)(4096 + TC_ITEM_HDR_SIZE + 1)));
    redisFree(c);
    free(v);
    uint64_t connects = tier_stat("connects");
    cr_assert_eq(get("over"), TC_ENOTFOUND);
    cr_assert_eq(tier_stat("protocol_errors"), 1);
    cr_assert_eq(get("max"), TC_OK, "a new connection serves the next get");
    cr_assert_eq(out.len, 4096);
    cr_assert_gt(tier_stat("connects"), connects);
}

/* ---- clear ------------------------------------------------------------------------- */

Test(redis, clear_by_prefix_leaves_foreign_keys)
{
    start_server(NULL);
    /* A prefix with glob characters: MATCH must take it literally. */
    open_ok("redis://127.0.0.1:%u/0?prefix=t*c:&timeout_ms=2000");
    redisContext *c = raw(NULL);
    freeReplyObject(redisCommand(c, "SET other:1 x"));
    freeReplyObject(redisCommand(c, "SET tXc:1 x")); /* matches an unescaped t*c:* */
    freeReplyObject(redisCommand(c, "SET t*c 1"));
    char k[32];
    for (int i = 0; i < 1500; i++) { /* several SCAN batches */
        snprintf(k, sizeof(k), "user:%d", i);
        cr_assert_eq(put(k, "v"), TC_OK);
    }
    cr_assert_eq(put("page:1", "v"), TC_OK);
    struct tc_tier_req r = {.key = "user:", .key_len = 5, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &r), TC_OK);
    cr_assert_eq(r.count, 1500);
    cr_assert_eq(get("user:7"), TC_ENOTFOUND);
    cr_assert_eq(get("page:1"), TC_OK);
    struct tc_tier_req all = {.key = NULL, .key_len = 0, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &all), TC_OK);
    cr_assert_eq(all.count, 1);
    cr_assert_eq(raw_int(c, "EXISTS %s", "other:1"), 1);
    cr_assert_eq(raw_int(c, "EXISTS %s", "tXc:1"), 1);
    cr_assert_eq(raw_int(c, "EXISTS %s", "t*c"), 1);
    cr_assert_eq(raw_int(c, "DBSIZE%s", ""), 3);
    redisFree(c);
}

Test(redis, clear_everything_needs_a_prefix)
{
    start_server(NULL);
    open_ok("redis://127.0.0.1:%u/0?prefix=&timeout_ms=2000");
    struct tc_tier_req all = {.key = NULL, .key_len = 0, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &all), TC_EINVAL);
}

/* ---- URIs and an absent server ---------------------------------------------------------- */

Test(redis, bad_uris_are_refused_with_a_reason)
{
    char err[512];
    static const char *const bad[] = {
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/1?db=2",
        "redis://127.0.0.1:6379/0?timeout_ms=0",
        "redis://127.0.0.1:6379/0?invalidate=carrier-pigeon",
        "redis://127.0.0.1:6379/0?backoff_ms=500&backoff_max_ms=100",
        "redis://127.0.0.1:6379/0?prefixx=a",
        "redis+unix://relative/sock",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(tc_tier_open(NULL, bad[i], &tier, err, sizeof(err)), TC_EINVAL, "%s", bad[i]);
        cr_assert_neq(err[0], '\0', "no message for %s", bad[i]);
    }
}

Test(redis, unreachable_server_opens_down_and_misses_fast)
{
    start_server(NULL);
    unsigned port = tc_redis_server_port(srv);
    tc_redis_server_kill(srv); /* nobody listens on the port now */
    char uri[256], err[512];
    snprintf(uri, sizeof(uri),
             "redis://127.0.0.1:%u/"
             "0?timeout_ms=50&connect_timeout_ms=100&backoff_ms=10s&backoff_max_ms=10s&"
             "invalidate=none",
             port);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    char detail[256];
    cr_assert_eq(tc_tier_health(tier, detail, sizeof(detail)), TC_HEALTH_DOWN);
    cr_assert_not_null(strstr(detail, "connect"), "detail: %s", detail);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    cr_assert_eq(get("x"), TC_ENOTFOUND);
    cr_assert_eq(put("x", "v"), TC_EUNAVAIL);
    uint64_t before = tc_test_wall_ms();
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(get("x"), TC_ENOTFOUND);
    }
    cr_assert_lt(tc_test_wall_ms() - before, 1000, "an open circuit must fail fast");
    cr_assert_geq(tier_stat("skipped"), 100);
    cr_assert_eq(tier_stat("circuit_open"), 1);
    cr_assert_eq(tc_tier_health(tier, NULL, 0), TC_HEALTH_DOWN);
}

/* ---- the async path -------------------------------------------------------------------- */

struct pending {
    int done;
    int calls;
    enum tc_status st;
};

static void on_done(struct tc_tier_req *req)
{
    struct pending *p = req->arg;
    p->calls++;
    p->done = 1;
    p->st = req->status;
}

static enum tc_status run(struct event_base *base, struct tc_tier_req *r, int op)
{
    struct pending p = {0, 0, TC_OK};
    r->done = on_done;
    r->arg = &p;
    enum tc_status st = op == 0   ? tc_tier_get(ctx, r)
                        : op == 1 ? tc_tier_set(ctx, r)
                        : op == 2 ? tc_tier_del(ctx, r)
                                  : tc_tier_clear(ctx, r);
    if (st != TC_EINPROGRESS) {
        return st;
    }
    while (!p.done) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    cr_assert_eq(p.calls, 1);
    return p.st;
}

Test(redis, async_operations_on_an_event_base)
{
    start_server(NULL);
    char err[512], uri[256];
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?timeout_ms=2000&ttl_ratio=0.5",
             tc_redis_server_port(srv));
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    struct event_base *base = event_base_new();
    cr_assert_eq(tc_tier_ctx_init(tier, base, &ctx), TC_OK);

    struct tc_tier_req w = {.key = "ak", .key_len = 2, .value = "av", .value_len = 2, .now_ms = t0};
    w.hdr.encoding = TC_ENC_BINARY;
    w.hdr.expire_ms = t0 + 10000;
    cr_assert_eq(run(base, &w, 1), TC_OK);
    struct tc_tier_req r = {.key = "ak", .key_len = 2, .out = &out, .now_ms = t0};
    cr_assert_eq(run(base, &r, 0), TC_OK);
    cr_assert_eq(out.len, 2);
    cr_assert(memcmp(out.data, "av", 2) == 0);
    cr_assert_eq(r.hdr.expire_ms, t0 + 10000);
    cr_assert(r.local_expire_ms <= t0 + 5000 && r.local_expire_ms + 1000 >= t0 + 5000, "local %llu",
              (unsigned long long)(r.local_expire_ms - t0));
    struct tc_tier_req m = {.key = "nope", .key_len = 4, .out = &out, .now_ms = t0};
    cr_assert_eq(run(base, &m, 0), TC_ENOTFOUND);
    struct tc_tier_req c = {.key = "a", .key_len = 1, .now_ms = t0};
    cr_assert_eq(run(base, &c, 3), TC_OK);
    cr_assert_eq(c.count, 1);
    struct tc_tier_req d = {.key = "ak", .key_len = 2, .now_ms = t0};
    cr_assert_eq(run(base, &d, 2), TC_OK);
    cr_assert_eq(run(base, &r, 0), TC_ENOTFOUND);

    /* Dispose with requests in flight: each completes once, TC_EUNAVAIL. */
    struct pending p[8];
    struct tc_tier_req g[8];
    for (int i = 0; i < 8; i++) {
        p[i] = (struct pending){0, 0, TC_OK};
        g[i] = (struct tc_tier_req){
            .key = "ak", .key_len = 2, .out = &out, .now_ms = t0, .done = on_done, .arg = &p[i]};
        cr_assert_eq(tc_tier_get(ctx, &g[i]), TC_EINPROGRESS);
    }
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(p[i].calls, 1);
        cr_assert_eq(p[i].st, TC_EUNAVAIL, "%s", tc_strerror(p[i].st));
    }
    event_base_free(base);
}

/* ---- lease locks ------------------------------------------------------------------------ */

static struct event_base *lock_base; /* NULL: the blocking ctx */

static void on_lock_done(struct tc_tier_lock_req *req)
{
    struct pending *p = req->arg;
    p->calls++;
    p->done = 1;
    p->st = req->status;
}

/* Runs one lock operation (0 acquire, 1 release, 2 peek) to completion, on
 * lock_base when set; r->token is the release token in and the result out. */
static enum tc_status lock_op(int op, const void *name, size_t len, uint64_t ttl_ms,
                              struct tc_tier_lock_req *r)
{
    struct pending p = {0, 0, TC_OK};
    r->name = name;
    r->name_len = len;
    r->ttl_ms = ttl_ms;
    r->done = lock_base != NULL ? on_lock_done : NULL;
    r->arg = &p;
    enum tc_status st = op == 0   ? tc_tier_lock_acquire(ctx, r)
                        : op == 1 ? tc_tier_lock_release(ctx, r)
                                  : tc_tier_lock_peek(ctx, r);
    if (lock_base == NULL) {
        cr_assert_neq(st, TC_EINPROGRESS, "a blocking ctx went async");
        cr_assert_eq(r->status, st);
        return st;
    }
    cr_assert_eq(st, TC_EINPROGRESS, "an async ctx answered at once: %s", tc_strerror(st));
    while (!p.done) {
        event_base_loop(lock_base, EVLOOP_ONCE);
    }
    cr_assert_eq(p.calls, 1);
    cr_assert_eq(r->status, p.st);
    return p.st;
}

static enum tc_status acquire(const char *name, uint64_t ttl_ms, struct tc_tier_lock_req *r)
{
    memset(r, 0, sizeof(*r));
    return lock_op(0, name, strlen(name), ttl_ms, r);
}

static enum tc_status release(const char *name, const char *token)
{
    struct tc_tier_lock_req r;
    memset(&r, 0, sizeof(r));
    size_t n = strnlen(token, sizeof(r.token) - 1); /* longer ones are cut, on purpose */
    memcpy(r.token, token, n);
    return lock_op(1, name, strlen(name), 0, &r);
}

static enum tc_status peek(const char *name, struct tc_tier_lock_req *r)
{
    memset(r, 0, sizeof(*r));
    return lock_op(2, name, strlen(name), 0, r);
}

static void open_lock_tier(int async, const char *params)
{
    char uri[512], err[512];
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=2000%s",
             tc_redis_server_port(srv), params);
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    lock_base = async ? event_base_new() : NULL;
    cr_assert_eq(tc_tier_ctx_init(tier, lock_base, &ctx), TC_OK);
}

static void close_lock_tier(void)
{
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    if (lock_base != NULL) {
        event_base_free(lock_base);
        lock_base = NULL;
    }
}

static int is_our_token(const char *t)
{
    if (strlen(t) != 32) {
        return 0;
    }
    for (size_t i = 0; i < 32; i++) {
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

static void acquire_busy_release_reacquire(int async)
{
    start_server(NULL);
    open_lock_tier(async, "");
    cr_assert(tc_tier_caps(tier) & TC_TIER_CAP_LOCK_CLUSTER);

    struct tc_tier_lock_req a, b, p;
    cr_assert_eq(acquire("job", 10000, &a), TC_OK);
    cr_assert(is_our_token(a.token), "token '%s'", a.token);
    cr_assert_eq(acquire("job", 10000, &b), TC_EEXIST);
    cr_assert_eq(b.token[0], '\0', "a refused acquire holds nothing");
    cr_assert(b.remaining_ms >= 1 && b.remaining_ms <= 10000, "remaining %llu",
              (unsigned long long)b.remaining_ms);

    /* Wrong token: refused, and the lock stays its holder's. */
    cr_assert_eq(release("job", "0123456789abcdef0123456789abcdef"), TC_ENOTFOUND);
    cr_assert_eq(peek("job", &p), TC_OK);
    cr_assert_str_eq(p.token, a.token);
    cr_assert(p.remaining_ms >= 1 && p.remaining_ms <= 10000);

    /* Where it lives: outside the cache prefix, value = token, TTL = lease. */
    redisContext *c = raw(NULL);
    redisReply *r = redisCommand(c, "GET %s", "lock:tc:job");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, a.token) == 0);
    freeReplyObject(r);
    long long pttl = raw_int(c, "PTTL %s", "lock:tc:job");
    cr_assert(pttl > 0 && pttl <= 10000, "pttl %lld", pttl);

    cr_assert_eq(release("job", a.token), TC_OK);
    cr_assert_eq(raw_int(c, "EXISTS %s", "lock:tc:job"), 0);
    cr_assert_eq(release("job", a.token), TC_ENOTFOUND, "released twice");
    cr_assert_eq(peek("job", &p), TC_ENOTFOUND);
    cr_assert_eq(p.token[0], '\0');

    cr_assert_eq(acquire("job", 10000, &b), TC_OK);
    cr_assert(is_our_token(b.token) && strcmp(a.token, b.token) != 0);
    cr_assert_eq(release("job", a.token), TC_ENOTFOUND, "an old token must not free a new lease");
    cr_assert_eq(peek("job", &p), TC_OK);
    cr_assert_str_eq(p.token, b.token);
    redisFree(c);

    cr_assert_eq(tier_stat("locks_taken"), 2);
    cr_assert_eq(tier_stat("locks_busy"), 1);
    cr_assert_eq(tier_stat("locks_released"), 1);
    cr_assert_eq(tier_stat("lock_release_refused"), 3);
    cr_assert_eq(tier_stat("lock_errors"), 0);
    close_lock_tier();
}

Test(redis, lock_acquire_busy_release_reacquire)
{
    acquire_busy_release_reacquire(0);
}

Test(redis, lock_acquire_busy_release_reacquire_async)
{
    acquire_busy_release_reacquire(1);
}

static void expires_after_ttl(int async)
{
    start_server(NULL);
    open_lock_tier(async, "");
    const uint64_t ttl = 400;
    struct tc_tier_lock_req a, b;
    uint64_t before = tc_test_mono_ms();
    cr_assert_eq(acquire("lease", ttl, &a), TC_OK);
    enum tc_status st = acquire("lease", ttl, &b);
    if (tc_test_mono_ms() - before < ttl) { /* else the machine stalled past the lease */
        cr_assert_eq(st, TC_EEXIST, "held before its ttl: %s", tc_strerror(st));
        cr_assert(b.remaining_ms >= 1 && b.remaining_ms <= ttl);
    }
    /* Free again at its ttl, not before (Redis' clock and ours agree to a
     * few ms on one host), and within a generous bound after. */
    uint64_t freed = 0;
    while (tc_test_mono_ms() - before < ttl + 5000) {
        if (acquire("lease", 60000, &b) == TC_OK) {
            freed = tc_test_mono_ms();
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert_neq(freed, 0, "still held %llu ms after a %llu ms lease",
                  (unsigned long long)(tc_test_mono_ms() - before), (unsigned long long)ttl);
    cr_assert_geq(freed + 5, before + ttl, "free after %llu ms of a %llu ms lease",
                  (unsigned long long)(freed - before), (unsigned long long)ttl);
    cr_assert_eq(release("lease", a.token), TC_ENOTFOUND,
                 "the expired holder released the new one");
    cr_assert_eq(release("lease", b.token), TC_OK);
    close_lock_tier();
}

Test(redis, lock_expires_after_its_ttl)
{
    expires_after_ttl(0);
}

Test(redis, lock_expires_after_its_ttl_async)
{
    expires_after_ttl(1);
}

Test(redis, lock_names_are_not_cache_keys)
{
    start_server(NULL);
    open_lock_tier(0, "&invalidate=none");
    struct tc_tier_lock_req a, b, p;
    cr_assert_eq(acquire("k", 60000, &a), TC_OK);
    cr_assert_eq(acquire("lock:k", 60000, &b), TC_OK);
    /* Neither lock is visible as a cache key, whatever the spelling. */
    static const char *const keys[] = {"k", "lock:k", "lock:tc:k", "lock:lock:k"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        cr_assert_eq(get(keys[i]), TC_ENOTFOUND, "%s", keys[i]);
    }
    /* Cache writes under every such name leave the locks alone. */
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        cr_assert_eq(put(keys[i], "cached"), TC_OK);
    }
    cr_assert_eq(peek("k", &p), TC_OK);
    cr_assert_str_eq(p.token, a.token);
    cr_assert_eq(peek("lock:k", &p), TC_OK);
    cr_assert_str_eq(p.token, b.token);
    cr_assert_eq(get("k"), TC_OK, "and the locks leave the cache alone");

    /* clear (everything, and by the "lock:" prefix) keeps the locks. */
    struct tc_tier_req all = {.key = NULL, .key_len = 0, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &all), TC_OK);
    cr_assert_eq(all.count, 4, "cleared %llu", (unsigned long long)all.count);
    struct tc_tier_req byp = {.key = "lock:", .key_len = 5, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &byp), TC_OK);
    cr_assert_eq(peek("k", &p), TC_OK);
    cr_assert_str_eq(p.token, a.token);
    cr_assert_eq(release("k", a.token), TC_OK);
    cr_assert_eq(release("lock:k", b.token), TC_OK);
    redisContext *c = raw(NULL);
    cr_assert_eq(raw_int(c, "DBSIZE%s", ""), 0);
    redisFree(c);
    close_lock_tier();
}

Test(redis, lock_names_are_binary)
{
    start_server(NULL);
    open_lock_tier(0, "&invalidate=none");
    static const char n1[] = {'a', 0, 'b', ' ', '\n'};
    static const char n2[] = {'a', 0, 'c', ' ', '\n'};
    struct tc_tier_lock_req a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    cr_assert_eq(lock_op(0, n1, sizeof(n1), 60000, &a), TC_OK);
    cr_assert_eq(lock_op(0, n2, sizeof(n2), 60000, &b), TC_OK, "NUL is not the end of a name");
    char longname[TC_LOCK_NAME_MAX];
    memset(longname, 'x', sizeof(longname));
    memset(&b, 0, sizeof(b));
    cr_assert_eq(lock_op(0, longname, sizeof(longname), 60000, &b), TC_OK);
    cr_assert_eq(lock_op(1, longname, sizeof(longname), 0, &b), TC_OK);
    cr_assert_eq(lock_op(1, n1, sizeof(n1), 0, &a), TC_OK);
    close_lock_tier();
}

Test(redis, lock_peek_reports_holder_and_lease)
{
    start_server(NULL);
    open_lock_tier(1, "");
    struct tc_tier_lock_req a, p;
    cr_assert_eq(peek("p", &p), TC_ENOTFOUND);
    cr_assert_eq(p.token[0], '\0');
    cr_assert_eq(p.remaining_ms, 0);
    cr_assert_eq(acquire("p", 30000, &a), TC_OK);
    cr_assert_eq(peek("p", &p), TC_OK);
    cr_assert_str_eq(p.token, a.token);
    cr_assert(p.remaining_ms > 0 && p.remaining_ms <= 30000);
    cr_assert_eq(tier_stat("lock_errors"), 0, "a free lock is not an error");
    close_lock_tier();
}

/* Another program wrote to lock keys: huge values, near-tokens, other types,
 * no expiry. They are someone else's locks; nothing overflows, nothing is
 * taken over, and the connection survives. */
Test(redis, lock_foreign_values_are_held_by_someone_else)
{
    start_server(NULL);
    open_lock_tier(0, "&invalidate=none");
    redisContext *c = raw(NULL);
    char *big = malloc(10240);
    cr_assert_not_null(big);
    memset(big, 'A', 10240); /* token characters, far too many */
    freeReplyObject(redisCommand(c, "SET lock:tc:big %b", big, (size_t)10240));
    char t48[49];
    memset(t48, 'b', 48);
    t48[48] = '\0';
    freeReplyObject(redisCommand(c, "SET lock:tc:t48 %s PX 60000", t48));
    freeReplyObject(redisCommand(c, "SET lock:tc:odd %s PX 60000", "abc def"));
    freeReplyObject(redisCommand(c, "SET lock:tc:nul %b PX 60000", "ab\0cd", (size_t)5));
    freeReplyObject(redisCommand(c, "RPUSH lock:tc:list a b"));
    freeReplyObject(redisCommand(c, "HSET lock:tc:hash f v"));
    freeReplyObject(redisCommand(c, "SET lock:tc:fine %s PX 60000", "Foreign_token-1"));

    static const char *const names[] = {"big", "t48", "odd", "nul", "list", "hash"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct tc_tier_lock_req r;
        cr_assert_eq(acquire(names[i], 1000, &r), TC_EEXIST, "%s", names[i]);
        cr_assert_eq(r.token[0], '\0');
        cr_assert_geq(r.remaining_ms, 1);
        cr_assert_eq(peek(names[i], &r), TC_OK, "%s", names[i]);
        cr_assert_eq(r.token[0], '\0', "%s: token '%s'", names[i], r.token);
        cr_assert_eq(memchr(r.token, '\0', sizeof(r.token)) != NULL, 1);
        cr_assert_geq(r.remaining_ms, 1);
        cr_assert_eq(release(names[i], "0123456789abcdef0123456789abcdef"), TC_ENOTFOUND, "%s",
                     names[i]);
    }
    /* No expiry: held "for longer than anyone waits". */
    struct tc_tier_lock_req r;
    cr_assert_eq(peek("big", &r), TC_OK);
    cr_assert_geq(r.remaining_ms, 1ull << 40);
    cr_assert_eq(peek("t48", &r), TC_OK);
    cr_assert_leq(r.remaining_ms, 60000);
    /* A foreign value made of token characters reads back as a token. */
    cr_assert_eq(peek("fine", &r), TC_OK);
    cr_assert_str_eq(r.token, "Foreign_token-1");
    /* Untouched, every one of them. */
    redisReply *v = redisCommand(c, "STRLEN lock:tc:big");
    cr_assert(v != NULL && v->type == REDIS_REPLY_INTEGER && v->integer == 10240);
    freeReplyObject(v);
    cr_assert_eq(raw_int(c, "LLEN %s", "lock:tc:list"), 2);
    cr_assert_eq(tier_stat("lock_errors"), 0, "foreign values are not errors");
    cr_assert_geq(tier_stat("bad_replies"), 6);
    cr_assert_eq(tier_stat("failures"), 0);
    cr_assert_eq(acquire("other", 1000, &r), TC_OK, "the connection survives");
    cr_assert_eq(tc_tier_health(tier, NULL, 0), TC_HEALTH_OK);
    free(big);
    redisFree(c);
    close_lock_tier();
}

Test(redis, lock_bad_input_is_refused)
{
    start_server(NULL);
    open_lock_tier(0, "&invalidate=none");
    struct tc_tier_lock_req r;
    cr_assert_eq(acquire("x", 0, &r), TC_EINVAL, "ttl 0");
    cr_assert_eq(acquire("x", 1ull << 60, &r), TC_EINVAL, "ttl beyond any lease");
    cr_assert_eq(release("x", "has space"), TC_EINVAL);
    cr_assert_eq(release("x", "semi;colon"), TC_EINVAL);
    char t48[49];
    memset(t48, 'a', 48);
    t48[47] = '\0'; /* 47: the longest token */
    cr_assert_eq(release("x", t48), TC_ENOTFOUND);
    memset(&r, 0, sizeof(r));
    cr_assert_eq(lock_op(0, "", 0, 1000, &r), TC_EINVAL, "empty name");
    close_lock_tier();
}

Test(redis, lock_scripts_survive_a_script_flush)
{
    start_server(NULL);
    open_lock_tier(1, "&invalidate=none");
    struct tc_tier_lock_req a, p;
    /* A fresh server has no scripts: the first use of each loads it. */
    cr_assert_eq(acquire("f", 60000, &a), TC_OK);
    cr_assert_eq(tier_stat("script_loads"), 1);
    cr_assert_eq(peek("f", &p), TC_OK);
    cr_assert_eq(tier_stat("script_loads"), 2);
    cr_assert_eq(peek("f", &p), TC_OK);
    cr_assert_eq(tier_stat("script_loads"), 2, "one EVAL loads the script for good");
    redisContext *c = raw(NULL);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    cr_assert_eq(peek("f", &p), TC_OK);
    cr_assert_str_eq(p.token, a.token);
    cr_assert_eq(tier_stat("script_loads"), 3);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    cr_assert_eq(release("f", a.token), TC_OK);
    cr_assert_eq(tier_stat("script_loads"), 4);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    cr_assert_eq(acquire("f", 60000, &a), TC_OK);
    cr_assert_eq(tier_stat("script_loads"), 5);
    cr_assert_eq(release("f", a.token), TC_OK); /* flushed with the others */
    cr_assert_eq(tier_stat("script_loads"), 6);
    cr_assert_eq(acquire("f", 60000, &a), TC_OK);
    cr_assert_eq(release("f", a.token), TC_OK);
    cr_assert_eq(tier_stat("script_loads"), 6);
    cr_assert_eq(tier_stat("lock_errors"), 0);
    redisFree(c);
    close_lock_tier();
}

Test(redis, lock_needs_a_prefix_outside_the_lock_namespace)
{
    start_server(NULL);
    /* Each is a prefix of "lock:" PREFIX, so it would hold the lock keys. */
    static const char *const bad[] = {"", "l", "lock", "lock:", "lock:lock:"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char params[64];
        snprintf(params, sizeof(params), "&invalidate=none&prefix=%s", bad[i]);
        open_lock_tier(0, params);
        struct tc_tier_lock_req r;
        cr_assert_eq(acquire("x", 1000, &r), TC_ENOTSUP, "prefix '%s'", bad[i]);
        cr_assert_eq(tc_tier_on_lock_release(tier, NULL, NULL), TC_ENOTSUP);
        close_lock_tier();
        tc_tier_close(tier);
        tier = NULL;
    }
    open_lock_tier(0, "&invalidate=none&prefix=loc:");
    struct tc_tier_lock_req r;
    cr_assert_eq(acquire("x", 1000, &r), TC_OK, "'lock:loc:x' is not under 'loc:'");
    close_lock_tier();
}

Test(redis, lock_caps_on_both_schemes)
{
    start_server(NULL);
    char uri[512], err[512];
    snprintf(uri, sizeof(uri), "redis+unix://%s?timeout_ms=2000&invalidate=none",
             tc_redis_server_socket(srv));
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert(tc_tier_caps(tier) & TC_TIER_CAP_LOCK_CLUSTER);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    struct tc_tier_lock_req a;
    cr_assert_eq(acquire("u", 60000, &a), TC_OK);
    cr_assert_eq(release("u", a.token), TC_OK);
}

Test(redis, lock_async_dispose_completes_in_flight_once)
{
    start_server(NULL);
    open_lock_tier(1, "&invalidate=none");
    struct pending p[6];
    struct tc_tier_lock_req r[6];
    for (int i = 0; i < 6; i++) {
        p[i] = (struct pending){0, 0, TC_OK};
        memset(&r[i], 0, sizeof(r[i]));
        r[i].name = "d";
        r[i].name_len = 1;
        r[i].ttl_ms = 60000;
        r[i].done = on_lock_done;
        r[i].arg = &p[i];
        snprintf(r[i].token, sizeof(r[i].token), "t%d", i);
        enum tc_status st = i % 3 == 0   ? tc_tier_lock_acquire(ctx, &r[i])
                            : i % 3 == 1 ? tc_tier_lock_release(ctx, &r[i])
                                         : tc_tier_lock_peek(ctx, &r[i]);
        cr_assert_eq(st, TC_EINPROGRESS);
    }
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(p[i].calls, 1, "op %d: %d calls", i, p[i].calls);
        cr_assert_eq(p[i].st, TC_EUNAVAIL, "op %d: %s", i, tc_strerror(p[i].st));
    }
    event_base_free(lock_base);
    lock_base = NULL;
}
