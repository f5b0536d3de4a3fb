/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of the HTTP server (src/http.h) over a socketpair: the server
 * has no listening socket (tc_http_server_create with fd -1) and serves the
 * test's end of a socketpair (tc_http_server_adopt), with a handler in the
 * test that records each request. The test is the client and turns the
 * event loop itself. Covered: a request parsed into method, path, query,
 * headers and body; chunked bodies; keep-alive and pipelining, with
 * synchronous and deferred answers; each limit (header size 431/414, body
 * 413, header and body timeouts 408, the server-wide body budget 503) and
 * the framing refusals (400).
 *
 * After each test every connection must be gone with no request and no
 * body budget left behind (the invariant the fuzz target checks too).
 */
#define _GNU_SOURCE /* memmem */
#include "tests/support/clock.h"
#include "src/http.h"
#include "src/log.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the server and its handler ------------------------------------------------------ */

#define MAX_SEEN 16

struct seen_req {
    enum tc_http_method method;
    char method_name[16];
    char path[256];
    size_t path_len;
    char query[256];
    int has_query;
    int keep_alive;
    char host[64], x_test[128], expect[32];
    char body[4096];
    size_t body_len;
    uint64_t body_hash; /* FNV-1a of the whole body */
};

static struct event_base *base;
static struct tc_http_server *srv;
static _Atomic uint64_t conns, pending;
static struct seen_req seen[MAX_SEEN];
static int nseen;
static int defer;      /* answer from a later loop turn */
static int deferred;   /* answers waiting */
static int max_busy;   /* most requests being answered at once */
static char *big_body; /* for paths starting /big */
#define BIG_LEN ((size_t)2 << 20)

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

/* Answers with "path|query|body length" (the client checks the order). */
static void answer(struct tc_http_req *r)
{
    if (strncmp(r->path, "/big", 4) == 0) {
        tc_http_respond(r, 200, "application/octet-stream", big_body, BIG_LEN, NULL);
        return;
    }
    char body[600];
    int n =
        snprintf(body, sizeof(body), "%s|%s|%zu", r->path, r->query ? r->query : "-", r->body.len);
    tc_http_respond(r, 200, "text/plain", body, (size_t)n, "X-Answer: yes\r\n");
}

static void deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deferred--;
    answer(arg);
}

static void handler(struct tc_http_req *r, void *arg)
{
    (void)arg;
    if (tc_http_server_busy(srv) > (size_t)max_busy) {
        max_busy = (int)tc_http_server_busy(srv);
    }
    if (nseen < MAX_SEEN) {
        struct seen_req *s = &seen[nseen];
        s->method = r->method;
        copy(s->method_name, sizeof(s->method_name), r->method_name);
        copy(s->path, sizeof(s->path), r->path);
        s->path_len = r->path_len;
        s->has_query = r->query != NULL;
        copy(s->query, sizeof(s->query), r->query);
        s->keep_alive = r->keep_alive;
        copy(s->host, sizeof(s->host), tc_http_header(r, "host"));
        copy(s->x_test, sizeof(s->x_test), tc_http_header(r, "x-test"));
        copy(s->expect, sizeof(s->expect), tc_http_header(r, "expect"));
        s->body_len = r->body.len;
        s->body_hash = 14695981039346656037ull;
        for (size_t i = 0; i < r->body.len; i++) {
            s->body_hash = (s->body_hash ^ r->body.data[i]) * 1099511628211ull;
        }
        if (r->body.len > 0 && r->body.len < sizeof(s->body)) {
            memcpy(s->body, r->body.data, r->body.len);
        }
    }
    nseen++;
    if (defer) {
        struct timeval now = {0, 0};
        cr_assert_eq(event_base_once(base, -1, EV_TIMEOUT, deferred_cb, r, &now), 0);
        deferred++;
        return;
    }
    answer(r);
}

static struct tc_http_limits limits(void)
{
    return (struct tc_http_limits){
        .max_header_size = 1024,
        .max_body = 100000,
        .idle_timeout_ms = 60000,
        .header_timeout_ms = 60000,
        .body_timeout_ms = 60000,
        .max_connections = 8,
        .max_pending_body = 1 << 20,
        .conn_count = &conns,
        .body_pending = &pending,
    };
}

static void start(struct tc_http_limits l)
{
    signal(SIGPIPE, SIG_IGN); /* as main() does */
    base = event_base_new();
    cr_assert_not_null(base);
    srv = tc_http_server_create(base, -1, &l, handler, NULL);
    cr_assert_not_null(srv);
    big_body = malloc(BIG_LEN);
    cr_assert_not_null(big_body);
    memset(big_body, 'B', BIG_LEN);
}

static int open_conn(void)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    /* A known, small socket buffer, so that a 2 MiB answer leaves more
     * than OUT_PAUSE (1 MiB) waiting in the server whatever the sysctls. */
    int sndbuf = 65536;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    cr_assert_eq(tc_http_server_adopt(srv, sv[0]), TC_OK);
    return sv[1];
}

static void turn(void)
{
    event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Every connection closed by the client side is freed, nothing left over. */
static void teardown(void)
{
    if (srv == NULL) {
        return;
    }
    uint64_t end = tc_test_mono_ms() + 10000;
    while ((atomic_load(&conns) != 0 || deferred > 0) && tc_test_mono_ms() < end) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_expect_eq(atomic_load(&conns), 0u, "connections left open");
    cr_expect_eq(atomic_load(&pending), 0u, "body budget left charged");
    cr_expect_eq(tc_http_server_busy(srv), 0u, "requests left behind");
    tc_http_server_destroy(srv);
    event_base_free(base);
    free(big_body);
    srv = NULL;
}

TestSuite(http, .fini = teardown, .timeout = 60);

/* ---- the client ---------------------------------------------------------------------- */

struct client {
    int fd;
    char buf[1 << 16];
    size_t len;
    int eof;
};

struct resp {
    int status;
    char head[2048];
    char body[2048];
    size_t body_len; /* the whole body, even when longer than body[] */
};

static struct client *client_new(void)
{
    struct client *c = calloc(1, sizeof(*c));
    cr_assert_not_null(c);
    c->fd = open_conn();
    return c;
}

static void client_close(struct client *c)
{
    close(c->fd);
    free(c);
}

/* Sends all of @p data, turning the loop while the socket is full. */
static void send_bytes(struct client *c, const void *data, size_t len)
{
    const char *p = data;
    uint64_t end = tc_test_mono_ms() + 10000;
    while (len > 0) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        cr_assert(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send: %s", strerror(errno));
        cr_assert_lt(tc_test_mono_ms(), end, "the server stopped reading");
        turn();
    }
    turn();
}

static void send_str(struct client *c, const char *s)
{
    send_bytes(c, s, strlen(s));
}

/* Reads what is there; 1 if something came (or EOF). */
static int pull(struct client *c)
{
    if (c->eof || c->len == sizeof(c->buf)) {
        return 0;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n > 0) {
        c->len += (size_t)n;
        return 1;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        c->eof = 1;
        return 1;
    }
    return 0;
}

/* Takes one complete response off the buffer; 0 if none is complete. A
 * response to HEAD (@p head_only) has no body whatever its length says. */
static size_t big_skipped;

static int take(struct client *c, struct resp *r, int head_only)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) {
        return 0;
    }
    size_t hlen = (size_t)(end - c->buf) + 4;
    memset(r, 0, sizeof(*r));
    memcpy(r->head, c->buf, hlen < sizeof(r->head) ? hlen : sizeof(r->head) - 1);
    cr_assert(sscanf(r->head, "HTTP/1.1 %d ", &r->status) == 1, "not a response: %.80s", r->head);
    const char *cl = strstr(r->head, "\r\nContent-Length: ");
    size_t blen = 0;
    if (cl != NULL && !head_only && r->status >= 200) {
        blen = strtoul(cl + 18, NULL, 10);
    }
    if (blen > sizeof(c->buf) - hlen) {
        /* Too big to hold (big_body): count it off as it arrives, keeping
         * the header in front until the whole body has come. */
        size_t avail = c->len - hlen, use = blen - big_skipped;
        use = use < avail ? use : avail;
        big_skipped += use;
        memmove(c->buf + hlen, c->buf + hlen + use, avail - use);
        c->len -= use;
        if (big_skipped < blen) {
            return 0;
        }
        big_skipped = 0;
        r->body_len = blen;
        memmove(c->buf, c->buf + hlen, c->len - hlen);
        c->len -= hlen;
        return 1;
    }
    if (c->len - hlen < blen) {
        return 0; /* wait for the rest */
    }
    r->body_len = blen;
    memcpy(r->body, c->buf + hlen, blen < sizeof(r->body) ? blen : sizeof(r->body) - 1);
    memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
    c->len -= hlen + blen;
    return 1;
}

/* Waits up to @p ms for one complete response. */
static int read_resp_within(struct client *c, struct resp *r, int head_only, unsigned ms)
{
    uint64_t end = tc_test_mono_ms() + ms;
    for (;;) {
        if (take(c, r, head_only)) {
            return 1;
        }
        if (c->eof || tc_test_mono_ms() >= end) {
            return 0;
        }
        turn();
        if (!pull(c)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

static struct resp read_resp(struct client *c)
{
    struct resp r;
    cr_assert(read_resp_within(c, &r, 0, 5000), "no complete response (%zu bytes: %.*s)", c->len,
              (int)(c->len < 200 ? c->len : 200), c->buf);
    return r;
}

/* Expects the server to close the connection within @p ms, sending nothing more. */
static void expect_closed(struct client *c, unsigned ms)
{
    uint64_t end = tc_test_mono_ms() + ms;
    while (!c->eof && tc_test_mono_ms() < end) {
        turn();
        if (!pull(c)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    cr_expect(c->eof, "the connection is still open");
    cr_expect_eq(c->len, 0u, "unexpected bytes: %.*s", (int)c->len, c->buf);
}

/* Expects an error answer with @p status and JSON code, then the close. */
static void expect_refused(struct client *c, int status, const char *code)
{
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, status, "%s", r.head);
    cr_expect(strstr(r.head, "Connection: close\r\n") != NULL, "%s", r.head);
    char want[64];
    snprintf(want, sizeof(want), "{\"error\":\"%s\",", code);
    cr_expect(strncmp(r.body, want, strlen(want)) == 0, "body: %s", r.body);
    cr_expect(strstr(r.body, "\"message\":\"") != NULL, "body: %s", r.body);
    shutdown(c->fd, SHUT_WR); /* a lingering server closes on EOF */
    expect_closed(c, 5000);
}

static const struct tc_http_counters *counters(void)
{
    return tc_http_server_counters(srv);
}

#define COUNT(f) atomic_load(&counters()->f)

/* ---- requests ------------------------------------------------------------------------ */

Test(http, a_request_is_parsed_into_its_parts)
{
    start(limits());
    struct client *c = client_new();
    send_str(c, "PUT /cache/a%20b?ttl=5&x=1 HTTP/1.1\r\n"
                "Host: example\r\n"
                "X-Test: Value One\r\n"
                "Content-Length: 5\r\n"
                "\r\n"
                "hello");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "/cache/a%20b|ttl=5&x=1|5");
    cr_expect(strstr(r.head, "\r\nX-Answer: yes\r\n") != NULL, "%s", r.head);
    cr_expect(strstr(r.head, "Connection: close") == NULL, "HTTP/1.1 keeps the connection");
    cr_assert_eq(nseen, 1);
    cr_expect_eq(seen[0].method, TC_HTTP_PUT);
    cr_expect_str_eq(seen[0].method_name, "PUT");
    cr_expect_str_eq(seen[0].path, "/cache/a%20b", "the path stays undecoded");
    cr_expect_eq(seen[0].path_len, strlen("/cache/a%20b"));
    cr_expect(seen[0].has_query);
    cr_expect_str_eq(seen[0].query, "ttl=5&x=1");
    cr_expect_str_eq(seen[0].host, "example");
    cr_expect_str_eq(seen[0].x_test, "Value One", "names are matched lower-cased, values kept");
    cr_expect(seen[0].keep_alive);
    cr_expect_eq(seen[0].body_len, 5u);
    cr_expect(memcmp(seen[0].body, "hello", 5) == 0);

    /* The same connection takes the next request: no query, no body. */
    send_str(c, "GET /plain HTTP/1.1\r\nHost: example\r\n\r\n");
    r = read_resp(c);
    cr_expect_str_eq(r.body, "/plain|-|0");
    cr_expect_eq(seen[1].method, TC_HTTP_GET);
    cr_expect_not(seen[1].has_query, "query is NULL without '?'");
    cr_expect_str_empty(seen[1].x_test, "a header of the previous request leaked");
    cr_expect_eq(COUNT(requests), 2u);
    cr_expect_eq(COUNT(accepted), 1u);
    client_close(c);
}

Test(http, methods)
{
    start(limits());
    struct client *c = client_new();
    const char *reqs[] = {"GET", "HEAD", "PUT", "DELETE", "POST", "OPTIONS", "PURGE", "PATCH"};
    enum tc_http_method want[] = {TC_HTTP_GET,  TC_HTTP_HEAD,    TC_HTTP_PUT,   TC_HTTP_DELETE,
                                  TC_HTTP_POST, TC_HTTP_OPTIONS, TC_HTTP_PURGE, TC_HTTP_PATCH};
    for (size_t i = 0; i < 8; i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "%s /m HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                 reqs[i]);
        send_str(c, buf);
        struct resp r;
        cr_assert(read_resp_within(c, &r, i == 1, 5000), "%s: no answer", reqs[i]);
        cr_expect_eq(r.status, 200);
        cr_expect_eq(seen[i].method, want[i], "%s", reqs[i]);
        cr_expect_str_eq(seen[i].method_name, reqs[i]);
        if (i == 1) {
            /* HEAD: the length of the body it would get, and no body. */
            cr_expect(strstr(r.head, "Content-Length: 6\r\n") != NULL, "%s", r.head);
        }
    }
    /* Nothing followed the HEAD answer's headers: the next answers parsed cleanly. */
    cr_expect_eq(c->len, 0u);
    client_close(c);
}

Test(http, a_chunked_body_is_reassembled)
{
    start(limits());
    struct client *c = client_new();
    send_str(c, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(seen[0].body_len, 11u);
    cr_expect(memcmp(seen[0].body, "hello world", 11) == 0);
    client_close(c);
}

Test(http, a_request_arriving_one_byte_at_a_time)
{
    start(limits());
    struct client *c = client_new();
    const char *req =
        "PUT /slow?q HTTP/1.1\r\nHost: h\r\nX-Test: t\r\nContent-Length: 3\r\n\r\nabc";
    for (const char *p = req; *p != '\0'; p++) {
        send_bytes(c, p, 1);
        turn();
    }
    struct resp r = read_resp(c);
    cr_expect_str_eq(r.body, "/slow|q|3");
    cr_expect_str_eq(seen[0].x_test, "t");
    client_close(c);
}

Test(http, expect_100_continue)
{
    start(limits());
    struct client *c = client_new();
    send_str(c, "PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 100, "%s", r.head);
    cr_expect_eq(nseen, 0, "the handler ran before the body came");
    send_str(c, "ok");
    r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "/e|-|2");
    client_close(c);
}

/* ---- keep-alive and pipelining --------------------------------------------------------- */

static void pipelined(int deferring)
{
    start(limits());
    defer = deferring;
    struct client *c = client_new();
    send_str(c, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                "PUT /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
                "GET /3?x HTTP/1.1\r\nHost: h\r\n\r\n");
    const char *want[] = {"/1|-|0", "/2|-|4", "/3|x|0"};
    for (size_t i = 0; i < 3; i++) {
        struct resp r = read_resp(c);
        cr_expect_str_eq(r.body, want[i], "answer %zu out of order", i);
    }
    cr_expect_eq(max_busy, 1, "a pipelined request was dispatched before the previous answer");
    cr_expect_eq(COUNT(accepted), 1u);
    client_close(c);
}

Test(http, pipelined_requests_are_answered_in_order)
{
    pipelined(0);
}

Test(http, pipelined_requests_answered_later_are_still_in_order)
{
    pipelined(1);
}

Test(http, connection_close_and_http_1_0)
{
    start(limits());
    struct client *c = client_new();
    send_str(c, "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.head, "Connection: close\r\n") != NULL, "%s", r.head);
    cr_expect_not(seen[0].keep_alive);
    expect_closed(c, 5000);
    client_close(c);

    c = client_new();
    send_str(c, "GET /b HTTP/1.0\r\n\r\n");
    r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.head, "Connection: close\r\n") != NULL, "%s", r.head);
    expect_closed(c, 5000);
    client_close(c);

    c = client_new();
    send_str(c, "GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    r = read_resp(c);
    cr_expect(strstr(r.head, "Connection: close") == NULL, "%s", r.head);
    send_str(c, "GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    r = read_resp(c);
    cr_expect_str_eq(r.body, "/d|-|0");
    client_close(c);
}

Test(http, reading_stops_while_a_large_answer_is_not_taken)
{
    start(limits());
    struct client *c = client_new();
    /* The client reads nothing while sending: the 2 MiB answer fills the
     * socket and the server must not go on parsing the pipelined requests. */
    send_str(c, "GET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    for (int i = 0; i < 50; i++) {
        turn();
    }
    cr_expect_eq(nseen, 1, "the next request was parsed while >1 MiB of output waited");
    cr_expect_geq(COUNT(output_paused), 1u);
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.body_len, BIG_LEN);
    r = read_resp(c);
    cr_expect_str_eq(r.body, "/after|-|0");
    client_close(c);
}

/* ---- edge-triggered reads ------------------------------------------------------------------
 *
 * A plain connection is read edge-triggered: epoll reports it once per
 * arrival of bytes. The server's read buffer is 64 KiB (rbuf); a read that
 * fills it must read again, since the bytes it left make no new edge. Each
 * test below leaves more than 64 KiB in the socket with nothing more to
 * come; the first two and the lingering one hang (or linger to the idle
 * bound) without that rule. */

#define RBUF ((size_t)65536)

/* Turns the loop for @p ms, reading nothing. */
static void turn_for(unsigned ms)
{
    uint64_t until = tc_test_mono_ms() + ms;
    while (tc_test_mono_ms() < until) {
        turn();
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

Test(http, a_pipelined_burst_larger_than_the_read_buffer_is_all_answered)
{
    start(limits());
    struct client *c = client_new();
    /* 384 GETs of 512 bytes, three read buffers, sent before the server
     * reads one byte. The answers to one buffer's worth fit the server's
     * socket buffer: no write event wakes the connection in between, so
     * only the read-again rule reaches the rest. */
    enum { N = 384, LEN = 512 };
    char *burst = malloc((size_t)N * LEN + 1);
    cr_assert_not_null(burst);
    char pad[LEN];
    memset(pad, 'p', sizeof(pad));
    size_t len = 0;
    for (int i = 0; i < N; i++) {
        /* 22 + 9 + 7 + pad + 2 + 2 = 512 */
        len += (size_t)snprintf(burst + len, (size_t)N * LEN + 1 - len,
                                "GET /b/%04d HTTP/1.1\r\nHost: h\r\nX-Pad: %.*s\r\n\r\n", i,
                                LEN - 42, pad);
    }
    cr_assert_eq(len, (size_t)N * LEN);
    cr_assert_gt(len, 2 * RBUF);
    send_bytes(c, burst, len);
    free(burst);
    for (int i = 0; i < N; i++) {
        struct resp r;
        cr_assert(read_resp_within(c, &r, 0, 3000), "answer %d of %d never came", i, N);
        char want[32];
        snprintf(want, sizeof(want), "/b/%04d|-|0", i);
        cr_assert_str_eq(r.body, want, "answer %d out of order", i);
    }
    cr_expect_eq(nseen, N);
    client_close(c);
}

Test(http, a_large_body_sent_in_pieces_with_pauses_arrives_whole)
{
    struct tc_http_limits l = limits();
    l.max_body = 1 << 20;
    l.max_pending_body = 4 << 20;
    start(l);
    struct client *c = client_new();
    /* Four pieces of 80 KiB, each more than the read buffer, with the
     * loop turning (and nothing sent) between them. */
    enum { PIECE = 80 * 1024, PIECES = 4 };
    static unsigned char body[PIECE * PIECES];
    uint64_t hash = 14695981039346656037ull;
    for (size_t i = 0; i < sizeof(body); i++) {
        body[i] = (unsigned char)(i % 251);
        hash = (hash ^ body[i]) * 1099511628211ull;
    }
    char head[128];
    snprintf(head, sizeof(head), "PUT /put HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n",
             sizeof(body));
    send_str(c, head);
    for (int i = 0; i < PIECES; i++) {
        send_bytes(c, body + (size_t)i * PIECE, PIECE);
        turn_for(30);
    }
    struct resp r;
    cr_assert(read_resp_within(c, &r, 0, 3000), "the body never completed");
    char want[64];
    snprintf(want, sizeof(want), "/put|-|%zu", sizeof(body));
    cr_expect_str_eq(r.body, want);
    cr_expect_eq(seen[0].body_len, sizeof(body));
    cr_expect_eq(seen[0].body_hash, hash, "the body arrived altered");
    client_close(c);
}

Test(http, a_client_that_reads_nothing_until_paused_then_gets_every_answer_in_order)
{
    start(limits());
    struct client *c = client_new();
    /* A 2 MiB answer first, then 3000 small GETs (over 100 KiB) behind it,
     * none of the answers read until the server has stopped reading. */
    enum { N = 3000 };
    size_t cap = 64 + (size_t)N * 48, len = 0;
    char *reqs = malloc(cap);
    cr_assert_not_null(reqs);
    len += (size_t)snprintf(reqs, cap, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    for (int i = 0; i < N; i++) {
        len +=
            (size_t)snprintf(reqs + len, cap - len, "GET /p/%04d HTTP/1.1\r\nHost: h\r\n\r\n", i);
    }
    cr_assert_gt(len, RBUF + RBUF / 2);
    send_bytes(c, reqs, len);
    free(reqs);
    turn_for(50);
    cr_assert_geq(COUNT(output_paused), 1u, "reading never paused for output");
    cr_assert_eq(nseen, 1, "requests were parsed while more than 1 MiB of output waited");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.body_len, BIG_LEN);
    for (int i = 0; i < N; i++) {
        cr_assert(read_resp_within(c, &r, 0, 3000), "answer %d of %d never came", i, N);
        char want[32];
        snprintf(want, sizeof(want), "/p/%04d|-|0", i);
        cr_assert_str_eq(r.body, want, "answer %d out of order", i);
    }
    client_close(c);
}

Test(http, lingering_close_drains_more_than_a_read_buffer_then_closes)
{
    struct tc_http_limits l = limits();
    l.max_body = 1000;
    start(l);
    struct client *c = client_new();
    send_str(c, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 413, "%s", r.head);
    /* The client sends its body anyway, then its FIN: the lingering server
     * drops it all and closes on the EOF, long before the 2 s it lingers
     * without a byte (LINGER_IDLE_MS). */
    static char body[300 * 1024];
    memset(body, 'x', sizeof(body));
    send_bytes(c, body, sizeof(body));
    shutdown(c->fd, SHUT_WR);
    uint64_t t0 = tc_test_mono_ms();
    while (atomic_load(&conns) != 0 && tc_test_mono_ms() - t0 < 1000) {
        turn();
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_expect_eq(atomic_load(&conns), 0u, "the lingering connection did not read to the EOF");
    client_close(c);
}

/* ---- limits -------------------------------------------------------------------------------- */

Test(http, headers_over_max_header_size_get_431)
{
    start(limits()); /* 1024 bytes */
    struct client *c = client_new();
    char req[2048];
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX-Test: %01200d\r\n\r\n", 0);
    send_str(c, req);
    expect_refused(c, 431, "headers_too_large");
    cr_expect_eq(nseen, 0);
    cr_expect_eq(COUNT(parse_errors), 1u);
    client_close(c);

    /* Just under the limit is fine. */
    c = client_new();
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: h\r\nX-Test: %0900d\r\n\r\n", 0);
    send_str(c, req);
    cr_expect_eq(read_resp(c).status, 200);
    client_close(c);
}

Test(http, a_request_line_over_max_header_size_gets_414)
{
    start(limits());
    struct client *c = client_new();
    char req[2048];
    snprintf(req, sizeof(req), "GET /%01200d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    send_str(c, req);
    expect_refused(c, 414, "uri_too_long");
    client_close(c);
}

Test(http, too_many_headers_get_431)
{
    struct tc_http_limits l = limits();
    l.max_header_size = 16384;
    start(l);
    struct client *c = client_new();
    char req[8192];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= TC_HTTP_MAX_HEADERS; i++) {
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-H%d: v\r\n", i);
    }
    snprintf(req + n, sizeof(req) - n, "\r\n");
    send_str(c, req);
    expect_refused(c, 431, "headers_too_large");
    client_close(c);
}

Test(http, a_body_over_max_body_gets_413_before_it_is_sent)
{
    struct tc_http_limits l = limits();
    l.max_body = 1000;
    start(l);
    struct client *c = client_new();
    send_str(c, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n");
    struct resp r = read_resp(c);
    cr_expect_eq(r.status, 413, "%s", r.head);
    cr_expect(strstr(r.body, "payload_too_large") != NULL, "%s", r.body);
    /* The client sends its body anyway: the server lingers and drops it. */
    char body[1001];
    memset(body, 'x', sizeof(body));
    send_bytes(c, body, sizeof(body));
    shutdown(c->fd, SHUT_WR);
    expect_closed(c, 5000);
    cr_expect_eq(nseen, 0);
    client_close(c);

    /* Exactly max_body is accepted. */
    c = client_new();
    send_str(c, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n");
    send_bytes(c, body, 1000);
    cr_expect_str_eq(read_resp(c).body, "/x|-|1000");
    client_close(c);
}

Test(http, a_chunked_body_over_max_body_gets_413)
{
    struct tc_http_limits l = limits();
    l.max_body = 1000;
    start(l);
    struct client *c = client_new();
    send_str(c, "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[700];
    memset(chunk, 'c', sizeof(chunk));
    for (int i = 0; i < 2; i++) {
        send_str(c, "2bc\r\n"); /* 700 */
        send_bytes(c, chunk, sizeof(chunk));
        send_str(c, "\r\n");
    }
    expect_refused(c, 413, "payload_too_large");
    cr_expect_eq(nseen, 0);
    client_close(c);
}

Test(http, headers_not_complete_in_header_timeout_get_408)
{
    struct tc_http_limits l = limits();
    l.header_timeout_ms = 300;
    start(l);
    struct client *c = client_new();
    uint64_t t0 = tc_test_mono_ms();
    send_str(c, "GET / HTTP/1.1\r\nHost: h\r\n");
    struct resp r;
    cr_assert(read_resp_within(c, &r, 0, 5000), "no 408");
    uint64_t took = tc_test_mono_ms() - t0;
    cr_expect_eq(r.status, 408, "%s", r.head);
    cr_expect(strstr(r.body, "request_timeout") != NULL, "%s", r.body);
    cr_expect(took >= 250 && took < 3000, "answered after %llu ms", (unsigned long long)took);
    expect_closed(c, 5000);
    cr_expect_eq(COUNT(header_timeouts), 1u);
    client_close(c);

    /* A connection that sends nothing is closed quietly, without a 408. */
    c = client_new();
    expect_closed(c, 5000);
    client_close(c);
}

Test(http, a_stalled_body_gets_408_after_body_timeout)
{
    struct tc_http_limits l = limits();
    l.body_timeout_ms = 300;
    start(l);
    struct client *c = client_new();
    send_str(c, "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    /* Bytes that keep coming keep it alive, each within the timeout. */
    for (int i = 0; i < 3; i++) {
        uint64_t until = tc_test_mono_ms() + 150;
        while (tc_test_mono_ms() < until) {
            turn();
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
        send_str(c, "d");
    }
    uint64_t t0 = tc_test_mono_ms();
    struct resp r;
    cr_assert(read_resp_within(c, &r, 0, 5000), "no 408");
    uint64_t took = tc_test_mono_ms() - t0;
    cr_expect_eq(r.status, 408, "%s", r.head);
    cr_expect(took >= 250 && took < 3000, "answered %llu ms after the last byte",
              (unsigned long long)took);
    cr_expect_eq(COUNT(body_timeouts), 1u);
    cr_expect_eq(nseen, 0);
    shutdown(c->fd, SHUT_WR);
    expect_closed(c, 5000);
    client_close(c);
}

Test(http, bodies_past_max_pending_body_get_503)
{
    struct tc_http_limits l = limits();
    l.max_pending_body = 65536;
    start(l);
    /* A holds part of the budget with a body still arriving. */
    struct client *a = client_new();
    send_str(a, "PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 60000\r\n\r\n");
    char part[30000];
    memset(part, 'a', sizeof(part));
    send_bytes(a, part, sizeof(part));
    for (int i = 0; i < 10; i++) {
        turn();
    }
    uint64_t held = atomic_load(&pending);
    cr_expect(held >= 30000 && held <= 65536, "%llu bytes charged", (unsigned long long)held);

    /* B announces more than is left: refused before it sends its body. */
    struct client *b = client_new();
    send_str(b, "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 60000\r\n\r\n");
    expect_refused(b, 503, "unavailable");
    cr_expect_eq(COUNT(body_budget_refused), 1u);
    client_close(b);

    /* A chunked body is refused when it reaches the budget. */
    b = client_new();
    send_str(b, "PUT /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 2; i++) {
        send_str(b, "7530\r\n"); /* 30000 */
        send_bytes(b, part, sizeof(part));
        send_str(b, "\r\n");
    }
    expect_refused(b, 503, "unavailable");
    client_close(b);

    /* Once A's body is complete the budget is free again. */
    send_bytes(a, part, sizeof(part));
    cr_expect_str_eq(read_resp(a).body, "/a|-|60000");
    cr_expect_eq(atomic_load(&pending), 0u, "a complete body is still charged");
    b = client_new();
    send_str(b, "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 60000\r\n\r\n");
    send_bytes(b, part, sizeof(part));
    send_bytes(b, part, sizeof(part));
    cr_expect_str_eq(read_resp(b).body, "/b|-|60000");
    client_close(b);
    client_close(a);
}

Test(http, connections_past_max_connections_are_refused)
{
    struct tc_http_limits l = limits();
    l.max_connections = 2;
    start(l);
    struct client *a = client_new(), *b = client_new();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    cr_expect_eq(tc_http_server_adopt(srv, sv[0]), TC_EUNAVAIL);
    cr_expect_eq(COUNT(refused), 1u);
    close(sv[1]);
    cr_expect_eq(atomic_load(&conns), 2u);
    client_close(a);
    client_close(b);
}

/* ---- framing refused with 400 ---------------------------------------------------------------- */

/* @p strict: 1 if the server's own framing checks must refuse it, 0 if
 * http-parser must, -1 if either may. */
static void expect_400(const char *req, int strict)
{
    start(limits());
    struct client *c = client_new();
    send_str(c, req);
    expect_refused(c, 400, "bad_request");
    cr_expect_eq(nseen, 0, "a request with bad framing reached the handler");
    cr_expect_eq(COUNT(parse_errors), 1u);
    if (strict >= 0) {
        cr_expect_eq(COUNT(strict_refused), (uint64_t)strict);
    }
    client_close(c);
}

Test(http, a_space_before_the_colon_is_400)
{
    expect_400("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 1);
}

Test(http, transfer_encoding_other_than_chunked_is_400)
{
    expect_400("PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               "1\r\na\r\n0\r\n\r\n",
               1);
}

Test(http, transfer_encoding_with_content_length_is_400)
{
    expect_400("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
               "\r\n3\r\nabc\r\n0\r\n\r\n",
               -1); /* http-parser 2.9 refuses it too (HPE_UNEXPECTED_CONTENT_LENGTH) */
}

Test(http, two_host_headers_are_400)
{
    expect_400("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 1);
}

Test(http, a_bare_lf_is_400)
{
    expect_400("GET / HTTP/1.1\r\nHost: h\nX-Test: v\r\n\r\n", 1);
}

Test(http, obsolete_line_folding_is_400)
{
    expect_400("GET / HTTP/1.1\r\nHost: h\r\nX-Test: a\r\n b\r\n\r\n", 1);
}

Test(http, chunk_data_not_followed_by_crlf_is_400)
{
    /* Non-strict http-parser takes any two bytes after chunk data as its CRLF. */
    expect_400("PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               "3\r\nabcXY0\r\n\r\n",
               1);
}

Test(http, a_control_character_in_the_target_is_400)
{
    expect_400("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", 1);
}

Test(http, garbage_is_400)
{
    expect_400("HELLO THERE\r\n\r\n", 0);
}

Test(http, a_put_without_length_is_411)
{
    start(limits());
    struct client *c = client_new();
    send_str(c, "PUT /x HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_refused(c, 411, "length_required");
    client_close(c);
}

/* ---- the access log ----------------------------------------------------------------------------
 */

Test(http, the_access_log_masks_tokens_and_never_writes_headers)
{
    char path[] = "/tmp/tc-access-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(tc_log_setup(TC_LOG_CRIT, NULL, path), TC_OK);
    start(limits());
    struct client *c = client_new();
    send_str(c, "GET /locks/x?a=1&token=s3cret&%74oken=s3cret2 HTTP/1.1\r\nHost: h\r\n"
                "Authorization: Bearer hush\r\n\r\n");
    cr_expect_eq(read_resp(c).status, 200);
    client_close(c);
    teardown();
    tc_log_teardown();

    char line[1024] = "";
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    line[n] = '\0';
    fclose(f);
    unlink(path);
    /* access-log-format combined (the default): the request line quoted. */
    cr_expect(strstr(line, "\"GET /locks/x?a=1&token=***&%74oken=*** HTTP/1.1\" 200 ") != NULL,
              "%s", line);
    cr_expect(strstr(line, "s3cret") == NULL, "%s", line);
    cr_expect(strstr(line, "hush") == NULL, "%s", line);
}
