/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 14, items 1-3, through the real server: Bearer tokens with scopes
 * (every route of the route table × no token / a wrong token / each scope),
 * the tokens file's checks, SIGHUP reload under an open keep-alive
 * connection, protected mode, the Host and Origin checks, CORS, `tiercache
 * token new`, and tokens kept out of the logs. Requests are written raw, so
 * that Host, Origin and Authorization are exactly what a hostile page or
 * client would send.
 */
#define _GNU_SOURCE /* strcasestr, mkdtemp */
#include "src/routes.h"
#include "src/scope.h"
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TC_SERVER_BIN
#error "TC_SERVER_BIN must name the tiercache binary"
#endif

/* One token per scope, and one the file does not know. */
static const struct {
    const char *name, *token;
    unsigned scope;
} toks[] = {
    {"reader", "tok-read-0123456789", TC_SCOPE_READ},
    {"writer", "tok-write-0123456789", TC_SCOPE_WRITE},
    {"locker", "tok-locks-0123456789", TC_SCOPE_LOCKS},
    {"root", "tok-admin-0123456789", TC_SCOPE_ADMIN},
};
#define NTOKS     (sizeof(toks) / sizeof(toks[0]))
#define BAD_TOKEN "tok-unknown-0123456789"

static char dir[64];
static struct tc_test_server srv;

static void teardown(void)
{
    if (srv.pid > 0) {
        tc_test_server_stop(&srv, SIGKILL);
    }
    if (dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        cr_expect_eq(system(cmd), 0);
        dir[0] = '\0';
    }
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tc-issue14-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

TestSuite(auth, .init = setup, .fini = teardown, .timeout = 60);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "NAME SCOPES sha256:HEX" for @p token. */
static void token_line(char *out, size_t cap, const char *name, const char *scopes,
                       const char *token)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    cr_assert_eq(EVP_Digest(token, strlen(token), d, &n, EVP_sha256(), NULL), 1);
    int at = snprintf(out, cap, "%s %s sha256:", name, scopes);
    for (unsigned i = 0; i < n; i++) {
        at += snprintf(out + at, cap - (size_t)at, "%02x", d[i]);
    }
    snprintf(out + at, cap - (size_t)at, "\n");
}

/* Writes @p text to dir/NAME with @p mode; returns the path (static). */
static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[2][128];
    static int which;
    char *p = path[which++ % 2];
    snprintf(p, 128, "%s/%s", dir, name);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
    cr_assert_eq(rename(tmp, p), 0); /* a reload sees the old file or the new one */
    return p;
}

/* The tokens file granting toks[] (all of them when @p mask is ~0). */
static const char *tokens_file(unsigned mask)
{
    char text[4096] = "# tiercache tokens\n\n";
    for (size_t i = 0; i < NTOKS; i++) {
        if (mask & (1u << i)) {
            char line[256], scopes[32];
            token_line(line, sizeof(line), toks[i].name,
                       tc_scope_format(toks[i].scope, scopes, sizeof(scopes)), toks[i].token);
            strcat(text, line);
        }
    }
    return write_file("tokens", text, 0600);
}

/* The server's arguments: a small mem:// tier, 2 workers, then @p extra. */
static void server_args(const char **args, size_t cap, const char *const *extra)
{
    static const char *const base[] = {"--tier", "mem://?size=4M", "--workers", "2"};
    size_t n = 0;
    for (; n < 4; n++) {
        args[n] = base[n];
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n + 1 < cap; i++) {
        args[n++] = extra[i];
    }
    args[n] = NULL;
}

static void start(const char *const *extra)
{
    const char *args[40];
    server_args(args, 40, extra);
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "server did not start: %s", srv.log);
}

/* Runs the server expecting it to refuse to start; returns its log. */
static const char *start_refused(const char *const *extra, int *status)
{
    const char *args[40];
    server_args(args, 40, extra);
    cr_assert_neq(tc_test_server_start(&srv, args), 0, "the server started: %s", srv.log);
    int fd = srv.log_fd;
    tc_test_server_drain_log(&srv);
    close(fd);
    *status = -1;
    return srv.log;
}

/* ---- a raw HTTP client ------------------------------------------------------------- */

struct xresp {
    int status;
    char head[4096]; /* status line and headers */
    char body[1 << 20];
};

/* Sends @p req on @p fd and reads one response (Content-Length framed). */
static int xreq_fd(int fd, const char *req, int head_only, struct xresp *x)
{
    memset(x, 0, sizeof(*x));
    size_t len = strlen(req);
    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
        return -1;
    }
    static char buf[sizeof(x->head) + sizeof(x->body)];
    size_t got = 0;
    char *end = NULL;
    while ((end = memmem(buf, got, "\r\n\r\n", 4)) == NULL) {
        ssize_t r = recv(fd, buf + got, sizeof(x->head) - got, 0);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    size_t hlen = (size_t)(end - buf) + 4;
    snprintf(x->head, sizeof(x->head), "%.*s", (int)hlen, buf);
    x->status = atoi(buf + 9);
    const char *cl = strcasestr(x->head, "\r\nContent-Length:");
    size_t blen = cl != NULL && !head_only ? strtoul(cl + 17, NULL, 10) : 0;
    if (blen >= sizeof(x->body)) {
        return -1;
    }
    while (got < hlen + blen) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    snprintf(x->body, sizeof(x->body), "%.*s", (int)blen, buf + hlen);
    return 0;
}

static int xreq(const char *req, int head_only, struct xresp *x)
{
    int fd = tc_test_connect(srv.port);
    if (fd < 0) {
        return -1;
    }
    int rc = xreq_fd(fd, req, head_only, x);
    close(fd);
    return rc;
}

/* METHOD TARGET with Host: 127.0.0.1, @p auth (a token, or NULL for none)
 * and @p extra header lines; a body when @p body is not NULL. */
static int areq_fd(int fd, const char *method, const char *target, const char *auth,
                   const char *extra, const char *body, struct xresp *x)
{
    char req[2048], authz[256] = "";
    if (auth != NULL) {
        snprintf(authz, sizeof(authz), "Authorization: Bearer %s\r\n", auth);
    }
    char bodyhdr[64] = "";
    if (body != NULL) {
        snprintf(bodyhdr, sizeof(bodyhdr), "Content-Length: %zu\r\n", strlen(body));
    }
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n%s%s%s\r\n%s", method,
             target, srv.port, authz, extra ? extra : "", bodyhdr, body ? body : "");
    return xreq_fd(fd, req, strcmp(method, "HEAD") == 0, x);
}

static int areq(const char *method, const char *target, const char *auth, const char *extra,
                const char *body, struct xresp *x)
{
    int fd = tc_test_connect(srv.port);
    if (fd < 0) {
        return -1;
    }
    int rc = areq_fd(fd, method, target, auth, extra, body, x);
    close(fd);
    return rc;
}

/* Waits up to 5 s for @p text in the server's log. */
static int log_has(const char *text)
{
    uint64_t end = now_ms() + 5000;
    while (now_ms() < end) {
        tc_test_server_drain_log(&srv);
        if (strstr(srv.log, text) != NULL) {
            return 1;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* ---- the route table ------------------------------------------------------------------ */

static int declared(unsigned scope)
{
    return scope == TC_ROUTE_PUBLIC || scope == TC_SCOPE_READ || scope == TC_SCOPE_WRITE ||
           scope == TC_SCOPE_LOCKS || scope == TC_SCOPE_ADMIN;
}

Test(auth, every_route_declares_its_scopes)
{
    struct tc_route_info ri;
    size_t n = 0;
    for (; tc_routes_info(n, &ri) == 0; n++) {
        cr_expect(declared(ri.read_scope), "%s: read scope %#x is not declared", ri.label,
                  ri.read_scope);
        cr_expect(declared(ri.write_scope), "%s: write scope %#x is not declared", ri.label,
                  ri.write_scope);
    }
    cr_expect_geq(n, 5);
}

/* The request for @p method on route @p ri, allowed or not by auth. */
static void route_request(const struct tc_route_info *ri, unsigned method, const char **m,
                          char *target, size_t cap, const char **body, const char **extra)
{
    static const struct {
        unsigned bit;
        const char *name;
    } methods[] = {{TC_HTTP_GET, "GET"},       {TC_HTTP_HEAD, "HEAD"}, {TC_HTTP_PUT, "PUT"},
                   {TC_HTTP_DELETE, "DELETE"}, {TC_HTTP_POST, "POST"}, {TC_HTTP_PURGE, "PURGE"},
                   {TC_HTTP_PATCH, "PATCH"}};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (methods[i].bit == method) {
            *m = methods[i].name;
        }
    }
    snprintf(target, cap, "%s%s", ri->path, ri->prefix ? "matrix" : "");
    *body = NULL;
    *extra = NULL;
    if (method == TC_HTTP_PATCH) {
        *body = "{\"ttl\":1,\"token\":\"not-the-owner\"}";
        *extra = "Content-Type: application/json\r\n";
        return;
    }
    if (method == TC_HTTP_PUT || method == TC_HTTP_POST) {
        *body = strncmp(ri->path, "/locks/", 7) == 0 ? "{\"ttl\":1}" : "{\"value\":1,\"ttl\":60}";
        *extra = "Content-Type: application/json\r\n";
    }
    if (method == TC_HTTP_DELETE && strncmp(ri->path, "/locks/", 7) == 0) {
        *extra = "X-Lock-Token: not-the-owner\r\n";
    }
}

Test(auth, every_route_and_method_by_credential)
{
    /* An LMDB tier too, so that /keys has a tier that can list. */
    char l2[128];
    snprintf(l2, sizeof(l2), "lmdb://%s/l2", dir);
    start((const char *const[]){"--auth-tokens-file", tokens_file(~0u), "--tier", l2, NULL});
    struct tc_route_info ri;
    size_t checked = 0;
    for (size_t i = 0; tc_routes_info(i, &ri) == 0; i++) {
        for (unsigned bit = TC_HTTP_GET; bit <= TC_HTTP_PATCH; bit <<= 1) {
            /* OPTIONS needs no token (the preflight test); OTHER is no method. */
            if (!(ri.methods & bit) || bit == TC_HTTP_OPTIONS || bit == TC_HTTP_OTHER) {
                continue;
            }
            const char *m, *body, *extra;
            char target[128];
            route_request(&ri, bit, &m, target, sizeof(target), &body, &extra);
            unsigned need = bit & (TC_HTTP_GET | TC_HTTP_HEAD) ? ri.read_scope : ri.write_scope;
            static struct xresp x;
            /* No token. */
            cr_assert_eq(areq(m, target, NULL, extra, body, &x), 0);
            if (need == TC_ROUTE_PUBLIC) {
                cr_expect_eq(x.status, 200, "%s %s without a token: %d", m, target, x.status);
            } else {
                cr_expect_eq(x.status, 401, "%s %s without a token: %d", m, target, x.status);
                cr_expect(strcasestr(x.head, "\r\nWWW-Authenticate: Bearer realm=\"tiercache\"") !=
                              NULL,
                          "%s", x.head);
                cr_expect(bit == TC_HTTP_HEAD || strstr(x.body, "\"unauthorized\"") != NULL, "%s",
                          x.body);
            }
            /* A token the file does not know. */
            cr_assert_eq(areq(m, target, BAD_TOKEN, extra, body, &x), 0);
            if (need != TC_ROUTE_PUBLIC) {
                cr_expect_eq(x.status, 401, "%s %s, bad token: %d", m, target, x.status);
                cr_expect(strstr(x.head, "error=\"invalid_token\"") != NULL, "%s", x.head);
            }
            /* Each scope. */
            for (size_t k = 0; k < NTOKS; k++) {
                cr_assert_eq(areq(m, target, toks[k].token, extra, body, &x), 0, "%s %s %s", m,
                             target, toks[k].name);
                int allowed = need == TC_ROUTE_PUBLIC || (tc_scope_effective(toks[k].scope) & need);
                if (allowed) {
                    cr_expect(x.status != 401 && x.status != 403 && x.status < 500,
                              "%s %s with %s: %d %s", m, target, toks[k].name, x.status, x.body);
                } else {
                    cr_expect_eq(x.status, 403, "%s %s with %s: %d", m, target, toks[k].name,
                                 x.status);
                    cr_expect(strstr(x.head, "error=\"insufficient_scope\"") != NULL, "%s", x.head);
                }
                checked++;
            }
        }
    }
    cr_expect_geq(checked, 4 * 14);
    /* The right 200s: a write then a read, the admin routes. */
    static struct xresp x;
    cr_assert_eq(areq("PUT", "/cache/k", toks[1].token, "Content-Type: application/json\r\n",
                      "{\"value\":\"v\"}", &x),
                 0);
    cr_expect_eq(x.status, 200, "%s", x.body);
    cr_assert_eq(areq("GET", "/cache/k", toks[0].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 200, "%s", x.body);
    cr_assert_eq(areq("GET", "/stats", toks[3].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 200);
    /* Lower-case scheme (RFC 9110: case-insensitive). */
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "Authorization: bearer %s\r\n", toks[3].token);
    cr_assert_eq(areq("GET", "/metrics", NULL, hdr, NULL, &x), 0);
    cr_expect_eq(x.status, 200);
    cr_expect(strstr(x.body, "tiercache_auth_failures_total{reason=\"missing\"}") != NULL);
    cr_expect(strstr(x.body, "tiercache_auth_failures_total{reason=\"scope\"}") != NULL);
}

Test(auth, health_public_unless_public_health_no)
{
    start((const char *const[]){"--auth-tokens-file", tokens_file(~0u), "--public-health", "no",
                                NULL});
    static struct xresp x;
    cr_assert_eq(areq("GET", "/health", NULL, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 401);
    cr_assert_eq(areq("GET", "/health", toks[0].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 200, "any valid token will do: %d", x.status);
}

/* ---- the tokens file ------------------------------------------------------------------ */

Test(auth, tokens_file_readable_by_others_is_refused)
{
    char line[256];
    token_line(line, sizeof(line), "a", "read", "x");
    const char *path = write_file("tokens", line, 0644);
    int st;
    const char *log = start_refused((const char *const[]){"--auth-tokens-file", path, NULL}, &st);
    cr_expect(strstr(log, path) != NULL, "%s", log);
    cr_expect(strstr(log, "mode 0644") != NULL, "%s", log);
    cr_expect(strstr(log, "chmod 600") != NULL, "%s", log);
    /* Not a regular file. */
    log = start_refused((const char *const[]){"--auth-tokens-file", dir, NULL}, &st);
    cr_expect(strstr(log, "not a regular file") != NULL, "%s", log);
}

Test(auth, a_bad_line_refuses_the_file_naming_the_line)
{
    char text[1024], line[256];
    token_line(line, sizeof(line), "good", "read", "t1");
    snprintf(text, sizeof(text), "# comment\n%scheat read,write deadbeef\n", line);
    const char *path = write_file("tokens", text, 0600);
    int st;
    const char *log = start_refused((const char *const[]){"--auth-tokens-file", path, NULL}, &st);
    cr_expect(strstr(log, ":3: the digest must be sha256:") != NULL, "%s", log);

    token_line(line, sizeof(line), "good", "read,fly", "t1");
    path = write_file("tokens", line, 0600);
    log = start_refused((const char *const[]){"--auth-tokens-file", path, NULL}, &st);
    cr_expect(strstr(log, ":1: bad scopes 'read,fly'") != NULL, "%s", log);
}

Test(auth, sighup_reload_swaps_tokens_without_dropping_the_connection)
{
    start(
        (const char *const[]){"--auth-tokens-file", tokens_file(1u << 0), "--workers", "1", NULL});
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static struct xresp x;
    cr_assert_eq(areq_fd(fd, "GET", "/cache/r", toks[0].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 404, "reader allowed before the reload: %d", x.status);
    cr_assert_eq(areq_fd(fd, "GET", "/stats", toks[3].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 401);

    /* Remove reader, add root; reload. */
    tokens_file(1u << 3);
    kill(srv.pid, SIGHUP);
    cr_assert(log_has("reloaded: 1 tokens"), "%s", srv.log);
    cr_assert_eq(areq_fd(fd, "GET", "/stats", toks[3].token, NULL, NULL, &x), 0,
                 "the keep-alive connection was dropped");
    cr_expect_eq(x.status, 200, "root added by the reload: %d", x.status);
    cr_assert_eq(areq_fd(fd, "GET", "/cache/r", toks[0].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 401, "reader removed by the reload: %d", x.status);

    /* A bad file: the old set stays, and the log says why. */
    write_file("tokens", "root admin sha256:nothex\n", 0600);
    kill(srv.pid, SIGHUP);
    cr_assert(log_has("stay in use"), "%s", srv.log);
    cr_expect(strstr(srv.log, ":1: the digest must be") != NULL, "%s", srv.log);
    cr_assert_eq(areq_fd(fd, "GET", "/stats", toks[3].token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 200, "the old set is kept: %d", x.status);
    cr_expect(strstr(x.body, "\"reload_failures\":1") != NULL, "%s", x.body);
    close(fd);
}

/* ---- protected mode ------------------------------------------------------------------ */

Test(auth, protected_mode_refuses_an_open_non_loopback_listener)
{
    int st;
    const char *log = start_refused((const char *const[]){"--listen", "0.0.0.0:0", NULL}, &st);
    cr_expect(strstr(log, "protected mode") != NULL, "%s", log);
    cr_expect(strstr(log, "auth-tokens-file") != NULL, "%s", log);
    cr_expect(strstr(log, "insecure = yes") != NULL, "%s", log);

    /* Either way out starts it. */
    const char *const ways[][5] = {
        {"--listen", "0.0.0.0:0", "--insecure", "yes", NULL},
        {"--listen", "0.0.0.0:0", "--auth-tokens-file", tokens_file(1), NULL},
    };
    for (size_t i = 0; i < 2; i++) {
        const char *args[12] = {"--tier", "mem://?size=1M", "--workers", "1"};
        memcpy(args + 4, ways[i], sizeof(ways[i]));
        int log_fd;
        pid_t pid = tc_test_spawn(TC_SERVER_BIN, args, 2, &log_fd);
        cr_assert_gt(pid, 0);
        char buf[8192];
        size_t n = 0;
        uint64_t end = now_ms() + 10000;
        while (now_ms() < end && n < sizeof(buf) - 1) {
            struct pollfd p = {log_fd, POLLIN, 0};
            if (poll(&p, 1, 100) > 0) {
                ssize_t r = read(log_fd, buf + n, sizeof(buf) - 1 - n);
                if (r <= 0) {
                    break;
                }
                n += (size_t)r;
                buf[n] = '\0';
                if (strstr(buf, "listening on 0.0.0.0:") != NULL) {
                    break;
                }
            }
        }
        buf[n] = '\0';
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(log_fd);
        cr_expect(strstr(buf, "listening on 0.0.0.0:") != NULL, "way out %zu: %s", i, buf);
    }
}

/* ---- Host and Origin ----------------------------------------------------------------- */

Test(auth, a_foreign_host_gets_no_stats)
{
    start(NULL); /* loopback, no tokens: open, as before issue 14, but for the Host */
    static struct xresp x;
    cr_assert_eq(xreq("GET /stats HTTP/1.1\r\nHost: evil.example\r\n\r\n", 0, &x), 0);
    cr_expect_eq(x.status, 421, "%s", x.head);
    cr_expect(strstr(x.body, "\"misdirected_request\"") != NULL, "%s", x.body);
    cr_expect(strstr(x.body, "uptime") == NULL);
    cr_assert_eq(xreq("GET /stats HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n", 0, &x), 0);
    cr_expect_eq(x.status, 421);
    /* HTTP/1.1 without Host: 400 (RFC 9112 3.2). HTTP/1.0 without: served. */
    cr_assert_eq(xreq("GET /stats HTTP/1.1\r\n\r\n", 0, &x), 0);
    cr_expect_eq(x.status, 400, "%s", x.head);
    cr_assert_eq(xreq("GET /health HTTP/1.0\r\n\r\n", 0, &x), 0);
    cr_expect_eq(x.status, 200, "%s", x.head);
    static const char *const good[] = {"localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:99"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /stats HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        cr_assert_eq(xreq(req, 0, &x), 0);
        cr_expect_eq(x.status, 200, "Host: %s -> %d", good[i], x.status);
    }
    cr_assert_eq(areq("GET", "/stats", NULL, NULL, NULL, &x), 0);
    cr_expect(strstr(x.body, "\"host\":2") != NULL, "%s", x.body);
}

Test(auth, allowed_hosts_replaces_the_defaults)
{
    start((const char *const[]){"--allowed-hosts", "cache.example, api.example:8443", NULL});
    static struct xresp x;
    static const struct {
        const char *host;
        int status;
    } cases[] = {{"cache.example", 200},     {"Cache.Example:1", 200}, {"api.example:8443", 200},
                 {"api.example:8444", 421},  {"api.example", 421},     {"localhost", 421},
                 {"cache.example.evil", 421}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", cases[i].host);
        cr_assert_eq(xreq(req, 0, &x), 0);
        cr_expect_eq(x.status, cases[i].status, "Host: %s -> %d", cases[i].host, x.status);
    }
}

/* Hit path: the Host check is made once per keep-alive connection and
 * remembered there (src/routes.c, tc_http_host_remember). A pass must cover
 * that exact value only: every other Host on the same connection is
 * checked again. */
Test(auth, the_host_remembered_on_a_connection_covers_that_value_only)
{
    start((const char *const[]){"--allowed-hosts", "cache.example, api.example:8443", NULL});
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static struct xresp x;
    char longhost[400];
    memset(longhost, 'a', sizeof(longhost));
    snprintf(longhost + 300, sizeof(longhost) - 300, ".cache.example");
    static const struct {
        const char *host;
        int status;
    } cases[] = {
        {"cache.example", 200},    {"cache.example", 200},    {"cache.example.evil", 421},
        {"cache.exampl", 421},     {"cache.example", 200},    {"CACHE.EXAMPLE:80", 200},
        {"api.example:8444", 421}, {"api.example:8443", 200}, {"api.example:84430", 421},
        {"localhost", 421},        {"api.example:8443", 200}, {NULL, 421},
        {"cache.example", 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *host = cases[i].host != NULL ? cases[i].host : longhost;
        char req[600];
        snprintf(req, sizeof(req), "GET /health HTTP/1.1\r\nHost: %s\r\n\r\n", host);
        cr_assert_eq(xreq_fd(fd, req, 0, &x), 0, "the connection closed at case %zu", i);
        cr_expect_eq(x.status, cases[i].status, "case %zu, Host: %.40s -> %d", i, host, x.status);
    }
    close(fd);
}

/* The memo above is keyed on the access-control set, whose host list is
 * fixed for the life of the process: a reload that drops a host from
 * allowed-hosts keeps serving it, on open connections as on new ones,
 * until a restart (docs/operations.md). If allowed-hosts becomes live,
 * this test fails: the memo's key must then change with the host list. */
Test(auth, a_reload_dropping_a_host_keeps_it_until_a_restart)
{
    char conf[128], text[256];
    snprintf(conf, sizeof(conf), "%s/tiercache.conf", dir);
    snprintf(text, sizeof(text), "allowed-hosts = a.example, b.example\n");
    write_file("tiercache.conf", text, 0600);
    start((const char *const[]){"--config", conf, "--workers", "1", NULL});
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static struct xresp x;
    const char *req = "GET /health HTTP/1.1\r\nHost: a.example\r\n\r\n";
    cr_assert_eq(xreq_fd(fd, req, 0, &x), 0);
    cr_expect_eq(x.status, 200, "%s", x.head);

    write_file("tiercache.conf", "allowed-hosts = b.example\n", 0600);
    kill(srv.pid, SIGHUP);
    cr_assert(log_has("allowed-hosts changed"), "%s", srv.log);
    cr_assert(log_has("needs a restart"), "%s", srv.log);
    cr_assert_eq(xreq_fd(fd, req, 0, &x), 0, "the keep-alive connection was dropped");
    cr_expect_eq(x.status, 200, "a.example on the open connection after the reload: %d", x.status);
    cr_assert_eq(xreq(req, 0, &x), 0);
    cr_expect_eq(x.status, 200, "a.example on a new connection after the reload: %d", x.status);
    cr_assert_eq(xreq("GET /health HTTP/1.1\r\nHost: c.example\r\n\r\n", 0, &x), 0);
    cr_expect_eq(x.status, 421);
    close(fd);
}

Test(auth, a_cross_site_post_cannot_take_a_lock)
{
    start(NULL); /* the defaults: no origin allowed */
    /* What a page on evil.example can send without a preflight. */
    static const char attack[] = "POST /locks/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "Origin: http://evil.example\r\nContent-Type: text/plain\r\n"
                                 "Content-Length: 10\r\n\r\n{\"ttl\":60}";
    static struct xresp x;
    cr_assert_eq(xreq(attack, 0, &x), 0);
    cr_expect_eq(x.status, 403, "%s", x.head);
    cr_expect(strstr(x.body, "\"forbidden\"") != NULL, "%s", x.body);
    cr_assert_eq(areq("GET", "/locks/x", NULL, NULL, NULL, &x), 0);
    cr_expect(strstr(x.body, "\"held\":false") != NULL, "the lock was taken: %s", x.body);
    /* Same for a write and a delete; reads are not refused (they change nothing). */
    cr_assert_eq(xreq("DELETE /cache/k HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: null\r\n\r\n", 0, &x),
                 0);
    cr_expect_eq(x.status, 403);
    cr_assert_eq(
        xreq("GET /cache/k HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n", 0,
             &x),
        0);
    cr_expect_eq(x.status, 404);
    cr_expect(strcasestr(x.head, "Access-Control-Allow-Origin") == NULL, "%s", x.head);
    /* A client that sends no Origin may (with a JSON type: a JSON body is
     * never text/plain, docs/api.md "Request bodies"). */
    cr_assert_eq(
        areq("POST", "/locks/x", NULL, "Content-Type: application/json\r\n", "{\"ttl\":60}", &x),
        0);
    cr_expect_eq(x.status, 200, "%s", x.body);
    cr_assert_eq(areq("GET", "/stats", NULL, NULL, NULL, &x), 0);
    cr_expect(strstr(x.body, "\"origin\":2") != NULL, "%s", x.body);
}

Test(auth, cors_preflight_and_headers_for_allowed_origins)
{
    start((const char *const[]){"--allowed-origins", "https://app.example,http://localhost:3000",
                                "--auth-tokens-file", tokens_file(~0u), NULL});
    static struct xresp x;
    cr_assert_eq(xreq("OPTIONS /cache/k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Origin: https://app.example\r\nAccess-Control-Request-Method: PUT\r\n"
                      "Access-Control-Request-Headers: authorization, content-type\r\n\r\n",
                      0, &x),
                 0);
    cr_expect_eq(x.status, 204, "a preflight carries no token: %s", x.head);
    cr_expect(strcasestr(x.head, "\r\nAccess-Control-Allow-Origin: https://app.example\r\n"), "%s",
              x.head);
    cr_expect(
        strcasestr(x.head,
                   "\r\nAccess-Control-Allow-Methods: GET, HEAD, PUT, DELETE, PURGE, PATCH\r\n"),
        "%s", x.head);
    cr_expect(strcasestr(x.head, "\r\nAccess-Control-Allow-Headers: Authorization, Content-Type"),
              "%s", x.head);
    cr_expect(strcasestr(x.head, "\r\nAccess-Control-Max-Age: 600\r\n"), "%s", x.head);
    cr_expect(strcasestr(x.head, "\r\nVary: Origin\r\n"), "%s", x.head);
    /* A preflight from another origin gets no CORS headers: the browser stops. */
    cr_assert_eq(xreq("OPTIONS /cache/k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Origin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
                      0, &x),
                 0);
    cr_expect_eq(x.status, 204);
    cr_expect(strcasestr(x.head, "Access-Control-Allow") == NULL, "%s", x.head);
    cr_expect(strcasestr(x.head, "\r\nAllow: GET, HEAD, PUT, DELETE, PURGE, PATCH, OPTIONS\r\n"),
              "%s", x.head);
    /* The actual request from the allowed origin: answered with CORS headers,
     * errors included (so that the page can read a 401). */
    cr_assert_eq(areq("GET", "/cache/k", NULL, "Origin: http://localhost:3000\r\n", NULL, &x), 0);
    cr_expect_eq(x.status, 401);
    cr_expect(strcasestr(x.head, "\r\nAccess-Control-Allow-Origin: http://localhost:3000\r\n"),
              "%s", x.head);
    cr_assert_eq(areq("PUT", "/cache/k", toks[1].token,
                      "Origin: https://app.example\r\nContent-Type: application/json\r\n",
                      "{\"value\":1}", &x),
                 0);
    cr_expect_eq(x.status, 200, "%s", x.body);
    cr_expect(strcasestr(x.head, "\r\nAccess-Control-Expose-Headers: ETag, X-Cache"), "%s", x.head);
    /* An allowed origin may change things (with a token that may). */
    cr_assert_eq(xreq("POST /locks/y HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://app.example\r\n"
                      "Authorization: Bearer tok-locks-0123456789\r\n"
                      "Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"ttl\":60}",
                      0, &x),
                 0);
    cr_expect_eq(x.status, 200, "%s", x.body);
}

/* ---- tiercache token new, and secrets kept out of the logs ------------------------------ */

/* Runs `tiercache token new ARGS`; its stdout into @p out. Returns the exit status. */
static int token_new(const char *name, const char *scopes, char *out, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s token new '%s' '%s' 2>/dev/null", TC_SERVER_BIN, name, scopes);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(auth, token_new_prints_a_token_and_its_line)
{
    char out[512], out2[512];
    cr_assert_eq(token_new("app", "write,read", out, sizeof(out)), 0);
    cr_assert_eq(token_new("app", "read", out2, sizeof(out2)), 0);
    char *nl = strchr(out, '\n');
    cr_assert_not_null(nl);
    *nl = '\0';
    const char *token = out, *line = nl + 1;
    cr_expect_eq(strlen(token), 43, "32 random bytes, base64url: %s", token);
    cr_expect(strncmp(out2, token, 43) != 0, "two tokens are the same");
    cr_expect(strncmp(line, "app read,write sha256:", 22) == 0, "%s", line);
    cr_expect(strstr(line, token) == NULL, "the line holds the token itself");
    cr_expect_eq(token_new("app", "read,fly", out2, sizeof(out2)), 2);
    cr_expect_eq(token_new("bad name", "read", out2, sizeof(out2)), 2);

    const char *path = write_file("tokens", line, 0600);
    start((const char *const[]){"--auth-tokens-file", path, NULL});
    static struct xresp x;
    cr_assert_eq(
        areq("PUT", "/cache/t", token, "Content-Type: application/json\r\n", "{\"value\":1}", &x),
        0);
    cr_expect_eq(x.status, 200, "%s", x.body);
    cr_assert_eq(areq("GET", "/stats", token, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 403);
}

Test(auth, tokens_never_reach_the_logs)
{
    char access[128];
    snprintf(access, sizeof(access), "%s/access.log", dir);
    start((const char *const[]){"--auth-tokens-file", tokens_file(~0u), "--log-level", "debug",
                                "--access-log", access, NULL});
    static struct xresp x;
    for (size_t k = 0; k < NTOKS; k++) {
        cr_assert_eq(areq("GET", "/stats", toks[k].token, NULL, NULL, &x), 0);
    }
    cr_assert_eq(areq("GET", "/cache/k", BAD_TOKEN, NULL, NULL, &x), 0);
    cr_expect_eq(x.status, 401);
    cr_assert_eq(areq("GET", "/cache/k", NULL, NULL, NULL, &x), 0);
    tc_test_server_stop(&srv, SIGTERM);
    char text[65536];
    FILE *f = fopen(access, "r");
    cr_assert_not_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    cr_expect(strstr(text, "/stats HTTP/1.1\" 200") != NULL, "the access log is written: %s", text);
    cr_expect(strstr(srv.log, "401 unauthorized") != NULL, "debug lines are written: %s", srv.log);
    for (size_t k = 0; k < NTOKS; k++) {
        cr_expect(strstr(text, toks[k].token) == NULL, "token in the access log");
        cr_expect(strstr(srv.log, toks[k].token) == NULL, "token in the log");
    }
    cr_expect(strstr(text, BAD_TOKEN) == NULL && strstr(srv.log, BAD_TOKEN) == NULL);
}
