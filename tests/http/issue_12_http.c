/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 12 ("Trust under faults"), the HTTP items: one client cannot take
 * the server's memory or hold a connection for ever, an early error answer
 * reaches a client that is still sending, framing another parser may read
 * differently is refused, and lock tokens stay out of the access log.
 * Black-box against the real binary (STYLE R20); each hostile client is
 * written here, on raw sockets.
 */
#include "tests/support/clock.h"
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

static struct tc_test_server srv;

static void start(const char *const *args)
{
    if (tc_test_server_start(&srv, args) != 0) {
        cr_assert_fail("tiercache did not start:\n%s", srv.log);
    }
}

static void stop(void)
{
    cr_expect(tc_test_server_stop_clean(&srv), "server did not exit cleanly (status %d):\n%s",
              srv.exit_status, srv.log);
}

TestSuite(issue12, .fini = stop, .timeout = 120);

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The server's resident set (VmRSS), KiB. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = atol(line + 6);
        }
    }
    fclose(f);
    return kib;
}

/* /stats "http".@p name, or -1 when the server does not report it. */
static long long http_stat(const char *name)
{
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "GET", "/stats", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_error_t e;
    json_t *j = json_loads(r.body, 0, &e);
    tc_test_resp_free(&r);
    cr_assert_not_null(j);
    json_t *v = json_object_get(json_object_get(j, "http"), name);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
    json_decref(j);
    return n;
}

/* Sends everything; 0, or the errno of the send that failed. */
static int send_all(int fd, const void *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, (const char *)p + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return w < 0 ? errno : EPIPE;
        }
        done += (size_t)w;
    }
    return 0;
}

/*
 * Reads until EOF, @p cap bytes or @p timeout_ms. Returns the bytes read
 * (NUL-terminated in @p buf); *err: 0 after EOF, ETIMEDOUT, or the errno of
 * the read that failed (ECONNRESET for a reset).
 */
static size_t read_to_eof(int fd, char *buf, size_t cap, unsigned timeout_ms, int *err)
{
    size_t n = 0;
    uint64_t end = now_ms() + timeout_ms;
    *err = ETIMEDOUT;
    while (n + 1 < cap) {
        uint64_t now = now_ms();
        if (now >= end) {
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)(end - now)) <= 0) {
            continue;
        }
        ssize_t got = recv(fd, buf + n, cap - 1 - n, 0);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            *err = got == 0 ? 0 : errno;
            break;
        }
        n += (size_t)got;
    }
    buf[n] = '\0';
    return n;
}

/* The status of the first answer in @p buf, 0 if there is none. */
static int first_status(const char *buf)
{
    return strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
}

/* ---- item 6: output held for a client that does not read ---------------------------- */

struct count_state {
    int done;
    size_t body;
};

static int count_body(http_parser *p, const char *at, size_t len)
{
    (void)at;
    ((struct count_state *)p->data)->body += len;
    return 0;
}

static int count_done(http_parser *p)
{
    struct count_state *cs = p->data;
    cs->done++;
    cr_expect_eq(p->status_code, 200);
    return 0;
}

Test(issue12, pipelined_unread_gets_keep_rss_bounded)
{
    static const char *const args[] = {
        "--tier", "mem://?size=64M&max_item=2M", "--workers", "1", "--max-value", "2M", NULL};
    start(args);
    enum { VALUE = MIB, GETS = 300 };
    char *value = malloc(VALUE);
    memset(value, 'v', VALUE);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/big",
                              "Content-Type: application/octet-stream\r\n", value, VALUE, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    free(value);
    long base = rss_kib(srv.pid);

    /* 300 GETs of the 1 MiB value in one go, and nothing read. */
    static const char get[] =
        "GET /cache/big HTTP/1.1\r\nHost: localhost\r\nAccept: application/octet-stream\r\n\r\n";
    size_t glen = sizeof(get) - 1;
    char *all = malloc(glen * GETS);
    for (int i = 0; i < GETS; i++) {
        memcpy(all + (size_t)i * glen, get, glen);
    }
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(send_all(fd, all, glen * GETS), 0);
    free(all);
    long peak = base;
    for (int i = 0; i < 40; i++) {
        tc_test_sleep_ms(50);
        long now = rss_kib(srv.pid);
        peak = now > peak ? now : peak;
    }
    cr_log_info("RSS %ld KiB before, peak %ld KiB with %d unread 1 MiB GETs", base, peak, GETS);
    cr_expect_lt(peak, 128 * 1024, "RSS %ld KiB (before: %ld KiB)", peak, base);
    cr_expect_lt(peak - base, 64 * 1024, "RSS grew by %ld KiB", peak - base);

    /* Reading resumes the connection: every answer arrives, in full. */
    http_parser p;
    http_parser_settings st = {0};
    st.on_body = count_body;
    st.on_message_complete = count_done;
    struct count_state cs = {0};
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &cs;
    static char buf[1 << 16];
    uint64_t end = now_ms() + 60000;
    while (cs.done < GETS && now_ms() < end) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got <= 0) {
            break;
        }
        size_t used = http_parser_execute(&p, &st, buf, (size_t)got);
        cr_assert_eq(used, (size_t)got, "%s", http_errno_description(HTTP_PARSER_ERRNO(&p)));
    }
    close(fd);
    cr_assert_eq(cs.done, GETS, "%d of %d answers", cs.done, GETS);
    cr_assert_eq(cs.body, (size_t)GETS * VALUE);
    cr_expect_gt(http_stat("output_paused"), 0);
}

Test(issue12, half_closed_client_gets_every_answer)
{
    /* Pipelined GETs, then the client shuts its side and only later reads
     * (as "printf ... | nc" does): no answer may be dropped at the EOF. */
    static const char *const args[] = {
        "--tier", "mem://?size=64M&max_item=2M", "--workers", "1", "--max-value", "2M", NULL};
    start(args);
    enum { VALUE = MIB, GETS = 20 };
    char *value = malloc(VALUE);
    memset(value, 'v', VALUE);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/big",
                              "Content-Type: application/octet-stream\r\n", value, VALUE, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    free(value);
    static const char get[] =
        "GET /cache/big HTTP/1.1\r\nHost: localhost\r\nAccept: application/octet-stream\r\n\r\n";
    int fd = tc_test_connect(srv.port);
    for (int i = 0; i < GETS; i++) {
        cr_assert_eq(send_all(fd, get, sizeof(get) - 1), 0);
    }
    shutdown(fd, SHUT_WR);
    tc_test_sleep_ms(500);
    http_parser p;
    http_parser_settings st = {0};
    st.on_body = count_body;
    st.on_message_complete = count_done;
    struct count_state cs = {0};
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &cs;
    static char buf[1 << 16];
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got <= 0) {
            break;
        }
        http_parser_execute(&p, &st, buf, (size_t)got);
    }
    close(fd);
    cr_expect_eq(cs.done, GETS, "%d of %d answers before the connection closed", cs.done, GETS);
}

/* ---- item 6: the budget for bodies being received ---------------------------------- */

static const char put_head[] = "PUT /cache/%s HTTP/1.1\r\nHost: localhost\r\n"
                               "Content-Type: application/octet-stream\r\n"
                               "Content-Length: %zu\r\n\r\n";

/* Opens a connection and sends the head and @p send of @p len body bytes. */
static int upload_start(const char *key, size_t len, size_t send)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    char head[256];
    int n = snprintf(head, sizeof(head), put_head, key, len);
    cr_assert_eq(send_all(fd, head, (size_t)n), 0);
    char *body = malloc(send + 1);
    memset(body, 'b', send);
    cr_assert_eq(send_all(fd, body, send), 0);
    free(body);
    return fd;
}

/* Sends the rest of an upload and returns the answer's status. */
static int upload_finish(int fd, size_t rest)
{
    char *body = malloc(rest + 1);
    memset(body, 'b', rest);
    cr_assert_eq(send_all(fd, body, rest), 0);
    free(body);
    char buf[4096];
    struct pollfd p = {fd, POLLIN, 0};
    cr_assert_eq(poll(&p, 1, 10000), 1, "no answer");
    ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    return first_status(buf);
}

Test(issue12, held_back_uploads_hit_max_pending_body)
{
    static const char *const args[] = {
        "--tier", "mem://?size=64M&max_item=4M", "--workers", "2", "--max-value",
        "4M",     "--max-pending-body",          "8M",        NULL};
    start(args);
    const size_t len = 3 * MIB;
    /* Two uploads of 3 MiB, each with its last byte held back. */
    int held[2];
    held[0] = upload_start("held0", len, len - 1);
    held[1] = upload_start("held1", len, len - 1);
    uint64_t end = now_ms() + 5000;
    while (http_stat("pending_body_bytes") < (long long)(2 * len - 2) && now_ms() < end) {
        tc_test_sleep_ms(20);
    }
    /* A third one does not fit in the 8 MiB budget: refused, not buffered. */
    char *body = malloc(len);
    memset(body, 'x', len);
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/third",
                              "Content-Type: application/octet-stream\r\n", body, len, &r),
                 0);
    cr_expect_eq(r.status, 503, "third upload -> %d: %s", r.status, r.body);
    cr_expect(strstr(r.body, "\"unavailable\"") != NULL, "%s", r.body);
    tc_test_resp_free(&r);
    cr_expect_eq(tc_test_http(srv.port, "GET", "/cache/third", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404, "a refused upload stored nothing");
    tc_test_resp_free(&r);
    cr_expect_gt(http_stat("body_budget_refused"), 0);

    /* The held ones complete normally and give their budget back. */
    cr_expect_eq(upload_finish(held[0], 1), 200);
    cr_expect_eq(upload_finish(held[1], 1), 200);
    close(held[0]);
    close(held[1]);
    cr_expect_eq(http_stat("pending_body_bytes"), 0);
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/third",
                              "Content-Type: application/octet-stream\r\n", body, len, &r),
                 0);
    cr_expect_eq(r.status, 200, "after the budget is back -> %d: %s", r.status, r.body);
    tc_test_resp_free(&r);

    /* The budget follows bytes that arrived, not lengths announced: three
     * uploads announcing 3 MiB that sent 100 bytes leave room for another. */
    int idle[3];
    for (int i = 0; i < 3; i++) {
        idle[i] = upload_start("announced", len, 100);
    }
    tc_test_sleep_ms(100);
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/fourth",
                              "Content-Type: application/octet-stream\r\n", body, len, &r),
                 0);
    cr_expect_eq(r.status, 200, "announced lengths took the budget -> %d: %s", r.status, r.body);
    tc_test_resp_free(&r);
    free(body);
    for (int i = 0; i < 3; i++) {
        close(idle[i]);
    }
    /* Dropped bodies give their budget back too. */
    end = now_ms() + 3000;
    while (http_stat("pending_body_bytes") != 0 && now_ms() < end) {
        tc_test_sleep_ms(20);
    }
    cr_expect_eq(http_stat("pending_body_bytes"), 0);
}

/* ---- item 6: slow clients ----------------------------------------------------------- */

static const char *const slow_args[] = {
    "--tier", "mem://?size=8M", "--workers", "1", "--header-timeout",
    "500ms",  "--body-timeout", "500ms",     NULL};

/* Sends one byte of @p drip every 100 ms until the server answers; returns
 * the ms until the answer (or 5000+ without one) and the answer in @p buf. */
static uint64_t drip_until_answer(int fd, const char *drip, char *buf, size_t cap)
{
    uint64_t t0 = now_ms();
    size_t i = 0;
    buf[0] = '\0';
    while (now_ms() - t0 < 5000) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) == 1) {
            uint64_t at = now_ms() - t0;
            int err;
            read_to_eof(fd, buf, cap, 3000, &err);
            cr_expect_eq(err, 0, "connection not closed after the answer: %s", strerror(err));
            return at;
        }
        if (drip != NULL && drip[i] != '\0') {
            send(fd, drip + i, 1, MSG_NOSIGNAL);
            i++;
        } else if (drip != NULL) {
            i = 0;
        }
    }
    return now_ms() - t0;
}

Test(issue12, slow_headers_get_408_within_header_timeout)
{
    start(slow_args);
    /* One byte every 100 ms: each would have reset an idle timer. */
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    static const char head[] = "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    cr_assert_eq(send_all(fd, head, sizeof(head) - 1), 0);
    char buf[4096];
    uint64_t ms = drip_until_answer(fd, "aaaaaaaaaa", buf, sizeof(buf));
    close(fd);
    cr_expect_lt(ms, 2000, "answered after %llu ms: %s", (unsigned long long)ms, buf);
    cr_expect_eq(first_status(buf), 408, "%s", buf);
    cr_expect(strstr(buf, "\"request_timeout\"") != NULL, "%s", buf);

    /* A request line alone, dripped from connect on. */
    fd = tc_test_connect(srv.port);
    ms = drip_until_answer(fd, "GET /health HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", buf,
                           sizeof(buf));
    close(fd);
    cr_expect_lt(ms, 2000, "answered after %llu ms: %s", (unsigned long long)ms, buf);
    cr_expect_eq(first_status(buf), 408, "%s", buf);

    /* A connection that sends nothing is closed as quietly after header-timeout. */
    fd = tc_test_connect(srv.port);
    uint64_t t0 = now_ms();
    int err;
    size_t n = read_to_eof(fd, buf, sizeof(buf), 5000, &err);
    close(fd);
    cr_expect_eq(err, 0, "silent connection not closed: %s", strerror(err));
    cr_expect_eq(n, 0u, "%s", buf);
    cr_expect_lt(now_ms() - t0, 2000);
    cr_expect_geq(http_stat("header_timeouts"), 2);
}

Test(issue12, stalled_body_gets_408_a_slow_one_does_not)
{
    start(slow_args);
    /* Ten of a hundred bytes, then nothing. */
    int fd = tc_test_connect(srv.port);
    char head[256];
    int n = snprintf(head, sizeof(head), put_head, "stalled", (size_t)100);
    cr_assert_eq(send_all(fd, head, (size_t)n), 0);
    cr_assert_eq(send_all(fd, "0123456789", 10), 0);
    char buf[4096];
    uint64_t ms = drip_until_answer(fd, NULL, buf, sizeof(buf));
    close(fd);
    cr_expect_lt(ms, 2000, "answered after %llu ms: %s", (unsigned long long)ms, buf);
    cr_expect_eq(first_status(buf), 408, "%s", buf);
    cr_expect_geq(http_stat("body_timeouts"), 1);

    /* body-timeout is between reads: a body sent a byte every 200 ms for
     * 2 s (four times the timeout in all) is taken. */
    fd = tc_test_connect(srv.port);
    n = snprintf(head, sizeof(head), put_head, "slow", (size_t)10);
    cr_assert_eq(send_all(fd, head, (size_t)n), 0);
    for (int i = 0; i < 10; i++) {
        tc_test_sleep_ms(200);
        cr_assert_eq(send_all(fd, "s", 1), 0);
    }
    struct pollfd p = {fd, POLLIN, 0};
    cr_assert_eq(poll(&p, 1, 5000), 1);
    ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    close(fd);
    cr_expect_eq(first_status(buf), 200, "%s", buf);
}

/* ---- item 6: an early answer to a client that is still sending ---------------------- */

/* Sends @p head then @p extra bytes of @p fill, then reads the answer to EOF. */
static void send_on_then_read(const char *head, size_t extra, char fill, int want)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int serr = send_all(fd, head, strlen(head));
    char *more = malloc(extra);
    memset(more, fill, extra);
    if (serr == 0) {
        serr = send_all(fd, more, extra);
    }
    free(more);
    char buf[4096];
    int rerr;
    read_to_eof(fd, buf, sizeof(buf), 8000, &rerr);
    close(fd);
    cr_expect_eq(serr, 0, "sending on after the answer failed: %s", strerror(serr));
    cr_expect_eq(rerr, 0, "reading the answer failed: %s", strerror(rerr));
    cr_expect_eq(first_status(buf), want, "%s", buf);
    cr_expect(strstr(buf, "\"message\"") != NULL, "answer not whole: %s", buf);
}

Test(issue12, early_413_and_431_reach_a_client_still_sending)
{
    static const char *const args[] = {
        "--tier", "mem://?size=8M", "--workers", "1", "--max-value", "64K", NULL};
    start(args);
    /* 413 from the announced length; the client sends its 8 MiB anyway. */
    send_on_then_read("PUT /cache/huge HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                      "application/octet-stream\r\nContent-Length: 8388608\r\n\r\n",
                      8 * MIB, 'b', 413);
    /* 431 at 16 KiB of headers; the client sends 4 MiB of header bytes. */
    send_on_then_read("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: ", 4 * MIB, 'h', 431);
}

/* ---- item 7: framing another parser may read differently --------------------------- */

static int raw_status(const char *raw, size_t len, char *buf, size_t cap)
{
    int fd = tc_test_connect(srv.port);
    cr_assert_geq(fd, 0);
    cr_assert_eq(send_all(fd, raw, len), 0);
    int err;
    read_to_eof(fd, buf, cap, 3000, &err);
    close(fd);
    return first_status(buf);
}

#define PUT_OCTETS                                                                                 \
    "PUT /cache/smug HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"

Test(issue12, smuggling_shapes_get_400)
{
    static const char *const args[] = {"--tier", "mem://?size=8M", "--workers", "1", NULL};
    start(args);
    static const char *const shapes[][2] = {
        {"space before the colon", "GET /health HTTP/1.1\r\nHost : x\r\n\r\n"},
        {"Transfer-Encoding: gzip, chunked",
         PUT_OCTETS "Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
        {"chunk data not followed by CRLF",
         PUT_OCTETS "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"},
        {"chunk data followed by a bare LF",
         PUT_OCTETS "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"},
        {"bare LF line ends", "GET /health HTTP/1.1\nHost: localhost\n\n"},
        {"one bare LF", "GET /health HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n"},
        {"bare LF ending the chunk size",
         PUT_OCTETS "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0"
                    "\r\n\r\n"},
        {"CR without LF", "GET /health HTTP/1.1\r\nHost: localhost\rX-A: b\r\n\r\n"},
        {"obsolete line folding",
         "GET /health HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n c\r\n\r\n"},
        {"Transfer-Encoding twice",
         PUT_OCTETS "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
        {"Transfer-Encoding: identity", PUT_OCTETS "Transfer-Encoding: identity\r\n"
                                                   "Content-Length: 5\r\n\r\nhello"},
        {"Transfer-Encoding and Content-Length",
         PUT_OCTETS "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
        {"two Host headers", "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
        {"a tab in the target", "GET /he\talth HTTP/1.1\r\nHost: localhost\r\n\r\n"},
    };
    char buf[4096];
    int bad = 0;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        int st = raw_status(shapes[i][1], strlen(shapes[i][1]), buf, sizeof(buf));
        if (st != 400) {
            cr_log_error("%s: answered %d, want 400", shapes[i][0], st);
            bad++;
        } else {
            cr_expect(strstr(buf, "\"bad_request\"") != NULL, "%s: %s", shapes[i][0], buf);
        }
    }
    cr_expect_eq(bad, 0, "%d shapes not refused", bad);

    /* The chunk state is kept across reads: bad bytes in a later segment. */
    int fd = tc_test_connect(srv.port);
    static const char part1[] = PUT_OCTETS "Transfer-Encoding: chunked\r\n\r\n5\r\nhel";
    cr_assert_eq(send_all(fd, part1, sizeof(part1) - 1), 0);
    tc_test_sleep_ms(100);
    cr_assert_eq(send_all(fd, "loXX0\r\n\r\n", 9), 0);
    int err;
    read_to_eof(fd, buf, sizeof(buf), 3000, &err);
    close(fd);
    cr_expect_eq(first_status(buf), 400, "split chunk without CRLF: %s", buf);

    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "GET", "/cache/smug", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404, "a refused request stored something: %s", r.body);
    tc_test_resp_free(&r);

    /* What is right still passes: chunked (any case), CRLF split across reads. */
    static const char ok1[] = "PUT /cache/ok1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                              "application/octet-stream\r\nTransfer-Encoding: Chunked\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n";
    cr_expect_eq(raw_status(ok1, sizeof(ok1) - 1, buf, sizeof(buf)), 200, "%s", buf);
    fd = tc_test_connect(srv.port);
    static const char ok2[] = "PUT /cache/ok2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                              "application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r";
    cr_assert_eq(send_all(fd, ok2, sizeof(ok2) - 1), 0);
    tc_test_sleep_ms(100);
    cr_assert_eq(send_all(fd, "\n2\r\n!!\r\n0\r\n\r\n", 14), 0);
    struct pollfd p = {fd, POLLIN, 0};
    cr_assert_eq(poll(&p, 1, 3000), 1);
    ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
    cr_assert_gt(got, 0);
    buf[got] = '\0';
    close(fd);
    cr_expect_eq(first_status(buf), 200, "%s", buf);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/cache/ok2", "Accept: application/octet-stream\r\n",
                              NULL, 0, &r),
                 0);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "hello!!");
    tc_test_resp_free(&r);

    /* The shapes http-parser refuses itself count as parse errors only. */
    cr_expect_geq(http_stat("strict_refused"), 10);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    cr_expect(strstr(r.body, "tiercache_http_strict_refused_total ") != NULL, "not in /metrics");
    tc_test_resp_free(&r);
}

/* ---- item 9: lock tokens in the access log ------------------------------------------ */

static char *post_lock_token(const char *name)
{
    char target[64];
    snprintf(target, sizeof(target), "/locks/%s", name);
    struct tc_test_resp r;
    static const char body[] = "{\"ttl\":30}";
    cr_assert_eq(tc_test_http(srv.port, "POST", target, "Content-Type: application/json\r\n", body,
                              sizeof(body) - 1, &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_error_t e;
    json_t *j = json_loads(r.body, 0, &e);
    cr_assert_not_null(j, "%s", r.body);
    char *token = strdup(json_string_value(json_object_get(j, "token")));
    json_decref(j);
    tc_test_resp_free(&r);
    return token;
}

Test(issue12, access_log_has_no_token)
{
    char path[] = "/tmp/tc-issue12-accessXXXXXX";
    int lfd = mkstemp(path);
    cr_assert_geq(lfd, 0);
    close(lfd);
    const char *const args[] = {"--tier", "mem://?size=8M", "--workers", "1", "--access-log", path,
                                NULL};
    start(args);
    struct tc_test_resp r;
    char *t1 = post_lock_token("l1");
    char target[256];
    snprintf(target, sizeof(target), "/locks/l1?token=%s", t1);
    cr_assert_eq(tc_test_http(srv.port, "DELETE", target, NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    char *t2 = post_lock_token("l2");
    char hdr[256];
    snprintf(hdr, sizeof(hdr), "X-Lock-Token: %s\r\nAuthorization: Bearer sekrit-bearer\r\n", t2);
    cr_assert_eq(tc_test_http(srv.port, "DELETE", "/locks/l2", hdr, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    cr_assert_eq(
        tc_test_http(srv.port, "GET", "/cache/k?a=1&ToKeN=sekrit-3&b=2", NULL, NULL, 0, &r), 0);
    tc_test_resp_free(&r);
    cr_assert_eq(tc_test_http(srv.port, "GET", "/cache/k?%74oken=sekrit-4", NULL, NULL, 0, &r), 0);
    tc_test_resp_free(&r);
    stop(); /* flushes the access log */

    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char log[65536];
    size_t n = fread(log, 1, sizeof(log) - 1, f);
    log[n] = '\0';
    fclose(f);
    unlink(path);
    cr_expect(strstr(log, t1) == NULL, "?token= value in the access log:\n%s", log);
    cr_expect(strstr(log, t2) == NULL, "X-Lock-Token value in the access log:\n%s", log);
    cr_expect(strstr(log, "sekrit") == NULL, "a secret in the access log:\n%s", log);
    /* access-log-format combined (the default): the request line quoted. */
    cr_expect(strstr(log, "/locks/l1?token=*** HTTP/1.1\" 200 ") != NULL, "%s", log);
    cr_expect(strstr(log, "/cache/k?a=1&ToKeN=***&b=2 HTTP/1.1\" 404 ") != NULL, "%s", log);
    free(t1);
    free(t2);
}
