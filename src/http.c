/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* SO_REUSEPORT, SOCK_NONBLOCK, SOCK_CLOEXEC, CLOCK_MONOTONIC_COARSE */
#include "src/http.h"
#include "src/access_log.h"
#include "src/clock.h"
#include "src/cond.h"
#include "src/log.h"
#include "src/text.h"
#include "src/tls.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/uio.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum conn_state { ST_READING, ST_ANSWERING, ST_CLOSING, ST_LINGERING };

/* What the read deadline of a connection means when it passes. */
enum conn_wait {
    WAIT_NONE,   /* no read deadline: answering, or reading stopped for output */
    WAIT_IDLE,   /* no byte of a request yet: close quietly */
    WAIT_HEADER, /* a request started and its headers are not complete: 408 */
    WAIT_BODY,   /* waiting for the next bytes of a body: 408 */
    WAIT_LINGER, /* lingering close: close */
    WAIT_TLS,    /* the TLS handshake is not complete: close (tls-handshake-timeout) */
};

/* Framing scanner states (scan_framing), kept across reads. */
enum { FR_TEXT, FR_CR, FR_LF, FR_CHUNK_END };

/* Reading a connection stops while more than this much output waits (and
 * resumes at or below it), so one response may exceed it but a client that
 * pipelines requests and never reads holds at most this plus one response. */
#define OUT_PAUSE ((size_t)1 << 20)

/* Lingering close, as nginx's lingering_close: after an error answer the
 * write side is shut and input discarded until EOF, LINGER_IDLE_MS without a
 * byte, LINGER_MAX_MS in all or LINGER_MAX_BYTES (nginx: lingering_timeout 5 s,
 * lingering_time 30 s; shorter here because a lingering connection still
 * holds one of max-connections). */
#define LINGER_IDLE_MS   2000u
#define LINGER_MAX_MS    5000u
#define LINGER_MAX_BYTES ((uint64_t)64 << 20)

/* The largest TLS record's plaintext (RFC 8446 5.1): answers up to this
 * size are written to a TLS connection as one record. */
#define TLS_RECORD_MAX ((size_t)16384)

/* Smallest allocation for a body: growth then doubles, capped at the
 * announced length, so memory follows what arrived, not what was announced. */
#define BODY_MIN_ALLOC ((size_t)16384)

struct tc_http_conn {
    struct tc_http_server *srv;
    int fd;
    /* rev: EV_READ|EV_PERSIST, no timeout (deadlines live in tev); wev:
     * EV_WRITE, added only while output is pending. Both EV_ET on a plain
     * connection (read_more), both level-triggered on a TLS one. */
    struct event *rev;
    struct event *wev;
    struct event *tev; /* one timer per connection, for every deadline (timer_cb) */
    struct tc_buf in;  /* unparsed input left over (pipelined); usually empty */
    struct tc_buf out; /* output the socket did not take yet */
    size_t out_off;
    http_parser parser;
    struct tc_http_req *req;   /* being parsed or answered; NULL between requests */
    struct tc_http_req *spare; /* the last one answered, kept for the next (req_recycle) */
    enum conn_state state;
    enum conn_wait wait;
    uint64_t read_deadline_ms;  /* meaningful unless wait == WAIT_NONE */
    uint64_t write_deadline_ms; /* 0: no output waits */
    uint64_t tev_at_ms;         /* when tev fires; 0: not armed */
    uint64_t linger_end_ms;
    uint64_t linger_bytes;
    size_t header_bytes;
    size_t body_charged;    /* bytes of max_pending_body held by the body being read */
    uint64_t body_expected; /* Content-Length of that body; 0 when chunked */
    const char *scan;       /* first byte of the buffer being parsed not yet scanned */
    uint8_t fr;             /* FR_*: framing scanner state */
    uint8_t fresh;          /* no request answered yet: the header clock runs from accept */
    uint8_t out_paused;     /* reading stopped until output drains to OUT_PAUSE */
    uint8_t linger;         /* close lingering: the client may still be sending */
    uint8_t rfull; /* the last plain read filled rbuf: the socket may hold more (read_more) */
    /* The Host value that last passed the caller's check, and what it passed
     * (tc_http_host_remember); host_len 0: none. */
    uint16_t host_len;
    const void *host_key;
    char host[TC_HTTP_HOST_MEMO + 1];
    int in_feed; /* inside feed(): a synchronous reply must not re-enter it */
    int error;   /* an HTTP status to answer with, set by a parser callback */
    const char *error_msg;
    int close_after; /* close once the current response is written */
    struct tc_http_conn *prev, *next;
    /* TLS (a listen-tls server): NULL on a plain connection, whose reads and
     * writes then go straight to the socket (conn_recv, conn_send). */
    struct tc_tls_conn *tls;
    unsigned peer_scopes; /* from the verified client certificate, for each request */
    uint8_t handshaking;  /* read_cb and write_cb advance the handshake */
    uint8_t read_blocked; /* a TLS read needs the socket writable first */
};

struct tc_http_server {
    struct event_base *base;
    struct tc_buf scratch; /* responses are built here, then written at once */
    char rbuf[65536];      /* reads land here; only leftovers are copied to a conn */
    struct evconnlistener *listener;
    struct tc_http_limits limits;
    tc_http_handler_fn handler;
    void *arg;
    struct tc_http_conn *conns;
    size_t busy;
    struct tc_http_counters counters;
    http_parser_settings settings;
    struct tc_tls *tls;        /* a TLS listener: its context; NULL: plain HTTP */
    uint64_t tls_handshake_ms; /* tls-handshake-timeout */
    struct tc_clock clock;     /* this worker's cached clock: one read per request */
    int clock_held;  /* 1 while read_cb runs: its one reading of clock serves all it does */
    uint64_t date_s; /* the second date[] says */
    char date[TC_COND_DATE_LEN + 1]; /* the Date header, formatted once a second */
};

#define BUMP(s, f)                                                                                 \
    atomic_store_explicit(&(s)->counters.f,                                                        \
                          atomic_load_explicit(&(s)->counters.f, memory_order_relaxed) + 1,        \
                          memory_order_relaxed)
#define DROP(s, f)                                                                                 \
    atomic_store_explicit(&(s)->counters.f,                                                        \
                          atomic_load_explicit(&(s)->counters.f, memory_order_relaxed) - 1,        \
                          memory_order_relaxed)

static void feed(struct tc_http_conn *c);
static void conn_free(struct tc_http_conn *c);
static void conn_write(struct tc_http_conn *c, const void *a, size_t alen, const void *b,
                       size_t blen);
static void respond_error(struct tc_http_conn *c, int status, const char *msg);

/* ---- transport: the socket, or TLS over it -------------------------------------------- */

/*
 * conn_recv and conn_send behave as read(2) and writev(2) (bytes; 0 at EOF;
 * -1 with errno EAGAIN, or another errno when the connection is lost),
 * whichever the connection speaks, so that one state machine serves both
 * and a plain connection pays one branch per call. A plain one uses recv and
 * sendmsg, not read and writev: those go through the file layer, whose
 * position lock (fdget_pos) was 2.7% of a 100-byte hit's CPU, for sockets
 * that have no position.
 */
static ssize_t conn_recv(struct tc_http_conn *c, void *buf, size_t len)
{
    ssize_t got;
    if (c->tls == NULL) {
        do {
            got = recv(c->fd, buf, len, 0);
        } while (got < 0 && errno == EINTR);
        return got;
    }
    size_t n = 0;
    switch (tc_tls_read(c->tls, buf, len, &n)) {
    case TC_TLS_DONE:
        return (ssize_t)n;
    case TC_TLS_CLOSED:
        return 0;
    case TC_TLS_WANT_WRITE:
        /* Rare after the handshake (a TLS 1.3 KeyUpdate to answer while the
         * socket is full): write_cb wakes the read once the socket drains. */
        c->read_blocked = 1;
        event_add(c->wev, NULL);
        errno = EAGAIN;
        return -1;
    case TC_TLS_WANT_READ:
        errno = EAGAIN;
        return -1;
    case TC_TLS_FAILED:
        break;
    }
    errno = EIO;
    return -1;
}

static ssize_t conn_send(struct tc_http_conn *c, const struct iovec *iov, int n)
{
    ssize_t w;
    if (c->tls == NULL) {
        /* One piece (every small answer: write_response joins them) goes by
         * send, which the kernel takes as one user buffer, without copying
         * in and checking a msghdr and an iovec as sendmsg does. */
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        do {
            w = n == 1 ? send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                       : sendmsg(c->fd, &m, MSG_NOSIGNAL);
        } while (w < 0 && errno == EINTR);
        return w;
    }
    /* Partial writes are on (src/tls.c): a record at a time, like write(2). */
    size_t done = 0;
    for (int part = 0; part < n; part++) {
        const char *p = iov[part].iov_base;
        size_t left = iov[part].iov_len;
        while (left > 0) {
            size_t got = 0;
            enum tc_tls_io io = tc_tls_write(c->tls, p, left, &got);
            if (io == TC_TLS_DONE) {
                done += got;
                p += got;
                left -= got;
                continue;
            }
            if (io == TC_TLS_WANT_WRITE) {
                if (done > 0) {
                    return (ssize_t)done;
                }
                errno = EAGAIN;
                return -1;
            }
            /* WANT_READ cannot come without renegotiation (it is off): a
             * lost connection, as the rest. */
            errno = EPIPE;
            return -1;
        }
    }
    return (ssize_t)done;
}

/* Deadlines are set on every request: the coarse clock (vDSO, no syscall,
 * a few ms of resolution) is cheap enough for that and precise enough. */
static uint64_t coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Monotonic ms for a deadline: inside read_cb its reading of the clock
 * (the same CLOCK_MONOTONIC base as the coarse clock timer_cb checks
 * against, a few µs old at most), else the coarse clock. */
static uint64_t deadline_now_ms(const struct tc_http_server *s)
{
    return s->clock_held ? s->clock.mono_ns / 1000000u : coarse_ms();
}

/* ---- deadlines ------------------------------------------------------------------------ */

/*
 * Each connection has one timer, armed lazily: setting a deadline later than
 * the one the timer is armed for costs nothing; the timer fires early, finds
 * the deadline moved and re-arms (timer_cb). A keep-alive connection thus
 * touches the timer heap about once per header-timeout, not per request.
 */
static void timer_arm(struct tc_http_conn *c, uint64_t at, uint64_t now)
{
    if (c->tev_at_ms != 0 && c->tev_at_ms <= at) {
        return;
    }
    uint64_t d = at > now ? at - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)(d % 1000) * 1000};
    event_add(c->tev, &tv);
    c->tev_at_ms = at;
}

static void set_wait(struct tc_http_conn *c, enum conn_wait w, uint64_t timeout_ms)
{
    uint64_t now = deadline_now_ms(c->srv);
    c->wait = w;
    c->read_deadline_ms = now + timeout_ms;
    timer_arm(c, c->read_deadline_ms, now);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_http_conn *c = arg;
    struct tc_http_server *s = c->srv;
    (void)fd;
    (void)what;
    c->tev_at_ms = 0;
    uint64_t now = coarse_ms();
    if (c->write_deadline_ms != 0 && now >= c->write_deadline_ms) {
        tc_log(TC_LOG_DEBUG, "http: closing a connection that takes no output");
        BUMP(s, send_timeouts);
        conn_free(c);
        return;
    }
    if (c->wait != WAIT_NONE && now >= c->read_deadline_ms) {
        switch (c->wait) {
        case WAIT_HEADER:
            BUMP(s, header_timeouts);
            respond_error(c, 408, "the request headers did not arrive in time");
            return;
        case WAIT_BODY:
            BUMP(s, body_timeouts);
            respond_error(c, 408, "the request body stalled");
            return;
        case WAIT_TLS:
            BUMP(s, tls_handshake_timeouts);
            tc_log(TC_LOG_DEBUG, "tls: handshake not complete within tls-handshake-timeout");
            conn_free(c);
            return;
        case WAIT_IDLE:
        case WAIT_LINGER:
        case WAIT_NONE:
            conn_free(c);
            return;
        }
    }
    uint64_t next = c->write_deadline_ms;
    if (c->wait != WAIT_NONE && (next == 0 || c->read_deadline_ms < next)) {
        next = c->read_deadline_ms;
    }
    if (next != 0) {
        timer_arm(c, next, now);
    }
}

/* ---- pending body budget -------------------------------------------------------------- */

/* Takes @p n bytes of the server-wide body budget for @p c; -1 if they
 * would pass it. A compare-and-swap loop, not an add then undo, so that a
 * refused request never makes a concurrent one on another worker fail. */
static int body_charge(struct tc_http_conn *c, size_t n)
{
    const struct tc_http_limits *l = &c->srv->limits;
    uint64_t cur = atomic_load_explicit(l->body_pending, memory_order_relaxed);
    do {
        if (n > l->max_pending_body || cur > l->max_pending_body - n) {
            return -1;
        }
    } while (!atomic_compare_exchange_weak_explicit(l->body_pending, &cur, cur + n,
                                                    memory_order_relaxed, memory_order_relaxed));
    c->body_charged += n;
    return 0;
}

/* The body is complete (it belongs to the handler now) or dropped. */
static void body_release(struct tc_http_conn *c)
{
    if (c->body_charged != 0) {
        atomic_fetch_sub_explicit(c->srv->limits.body_pending, c->body_charged,
                                  memory_order_relaxed);
        c->body_charged = 0;
    }
}

const char *tc_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 421:
        return "Misdirected Request";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    }
    return "Unknown";
}

const char *tc_http_header_n(const struct tc_http_req *r, const char *name, size_t n)
{
    for (unsigned i = 0; i < r->_nhdrs; i++) {
        /* Once the headers are complete each name is followed by its NUL
         * and then its value (on_headers_complete), so the value's offset
         * gives the name's length. */
        if (r->_hoff[i][1] - r->_hoff[i][0] == n + 1 &&
            memcmp(r->_hdrs.data + r->_hoff[i][0], name, n) == 0) {
            return (const char *)r->_hdrs.data + r->_hoff[i][1];
        }
    }
    return NULL;
}

const char *tc_http_host(const struct tc_http_req *r)
{
    return r->_host != 0 ? (const char *)r->_hdrs.data + r->_hoff[r->_host - 1][1] : NULL;
}

int tc_http_host_known(const struct tc_http_req *r, const void *key)
{
    const struct tc_http_conn *c = r->_conn;
    if (c == NULL || c->host_len == 0 || c->host_key != key || r->_host == 0) {
        return 0;
    }
    /* Up to the memo's NUL: a longer value differs there, a shorter one
     * before it; strncmp stops at the request's own NUL. */
    return strncmp(tc_http_host(r), c->host, (size_t)c->host_len + 1) == 0;
}

void tc_http_host_remember(struct tc_http_req *r, const void *key)
{
    struct tc_http_conn *c = r->_conn;
    const char *host = tc_http_host(r);
    if (c == NULL || host == NULL) {
        return;
    }
    size_t n = strnlen(host, TC_HTTP_HOST_MEMO + 1);
    if (n == 0 || n > TC_HTTP_HOST_MEMO) {
        c->host_len = 0; /* not kept: each request is checked */
        return;
    }
    memcpy(c->host, host, n + 1);
    c->host_len = (uint16_t)n;
    c->host_key = key;
}

/* ---- requests --------------------------------------------------------------- */

/* A spare request keeps its target and header buffers up to this size; a
 * body's buffer is never kept (GETs have none, and it may be megabytes). */
#define REQ_KEEP_BUF ((size_t)4096)

static void req_free(struct tc_http_req *r)
{
    tc_buf_deinit(&r->body);
    tc_buf_deinit(&r->_target);
    tc_buf_deinit(&r->_hdrs);
    free(r);
}

/* Keeps the answered request @p r for the connection's next one: on a hit,
 * its calloc and the three buffers' allocations and frees were a tenth of
 * the server's instructions (bench/hit_cost.py). A connection holds at most
 * one spare of at most 2 x REQ_KEEP_BUF bytes of buffers. */
static void req_park(struct tc_http_conn *c, struct tc_http_req *r)
{
    if (c->spare != NULL) {
        req_free(r);
        return;
    }
    tc_buf_deinit(&r->body);
    if (r->_target.cap > REQ_KEEP_BUF) {
        tc_buf_deinit(&r->_target);
    }
    if (r->_hdrs.cap > REQ_KEEP_BUF) {
        tc_buf_deinit(&r->_hdrs);
    }
    c->spare = r;
}

/* A request to parse into: the connection's spare, cleared, or a new one. */
static struct tc_http_req *req_recycle(struct tc_http_conn *c)
{
    struct tc_http_req *r = c->spare;
    if (r == NULL) {
        return calloc(1, sizeof(*r));
    }
    c->spare = NULL;
    struct tc_buf target = r->_target, hdrs = r->_hdrs;
    /* Every member before _hoff; _hoff is read only below _nhdrs. */
    memset(r, 0, offsetof(struct tc_http_req, _hoff));
    r->_target = target;
    r->_hdrs = hdrs;
    r->_target.len = r->_hdrs.len = 0;
    return r;
}

static int fail(struct tc_http_conn *c, int status, const char *msg)
{
    if (c->error == 0) {
        c->error = status;
        c->error_msg = msg;
    }
    return -1; /* stops http_parser_execute with HPE_CB_* */
}

/* A request whose framing another parser (a proxy in front of us) might read
 * differently: refused, and counted apart from other malformed requests. */
static int fail_strict(struct tc_http_conn *c, const char *msg)
{
    if (c->error == 0) {
        BUMP(c->srv, strict_refused);
    }
    return fail(c, 400, msg);
}

/*
 * Checks the bytes http-parser consumed as framing (everything but body
 * data, which on_body cuts out): every LF is preceded by CR, every CR is
 * followed by LF, no line starts with SP or HT (obsolete folding), and chunk
 * data is followed by exactly CRLF. Non-strict http-parser accepts all of
 * these. The state is kept in c->fr, so a CRLF split across reads is fine.
 * This runs over every header byte, so text is skipped a word at a time
 * and a plain CRLF is taken in one step.
 */
static int scan_framing(struct tc_http_conn *c, const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull;
    unsigned fr = c->fr;
    for (;;) {
        if (fr == FR_TEXT) {
            /* To the first byte below 0x0E (CR is 0x0D, LF 0x0A): "hasless"
             * from Bit Twiddling Hacks; its lowest flag is never false. */
            while (end - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                uint64_t m = (w - ones * 0x0e) & ~w & (ones * 0x80);
                if (m != 0) {
                    p += __builtin_ctzll(m) >> 3;
                    break;
                }
                p += 8;
            }
            while (p < end && (uint8_t)*p > '\r') {
                p++;
            }
            if (end - p >= 3 && p[0] == '\r' && p[1] == '\n' && p[2] != ' ' && p[2] != '\t') {
                p += 2;
                continue;
            }
        }
        if (p >= end) {
            break;
        }
        uint8_t ch = (uint8_t)*p++;
        if (fr == FR_CR) {
            if (ch != '\n') {
                return fail_strict(c, "a CR not followed by LF");
            }
            fr = FR_LF;
            continue;
        }
        if (fr == FR_CHUNK_END) {
            if (ch != '\r') {
                return fail_strict(c, "chunk data not followed by CRLF");
            }
            fr = FR_CR;
            continue;
        }
        if (fr == FR_LF && (ch == ' ' || ch == '\t')) {
            return fail_strict(c, "a header line folded onto the next (obsolete folding)");
        }
        fr = FR_TEXT;
        if (ch == '\r') {
            fr = FR_CR;
        } else if (ch == '\n') {
            return fail_strict(c, "a line ends in a bare LF instead of CRLF");
        }
    }
    c->fr = (uint8_t)fr;
    return 0;
}

/* RFC 9110 tchar (!#$%&'*+-.^_`|~ DIGIT ALPHA) lower-cased; 0: not a tchar.
 * Bytes from 0x80 up are not tchars either. */
static const uint8_t name_char[128] = {
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   33,  0,   35,  36,  37,
    38,  39,  0,   0,   42,  43,  0,   45,  46,  0,   48,  49,  50,  51,  52,  53,  54,  55,  56,
    57,  0,   0,   0,   0,   0,   0,   0,   97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107,
    108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 0,   0,   0,   94,
    95,  96,  97,  98,  99,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113,
    114, 115, 116, 117, 118, 119, 120, 121, 122, 0,   124, 0,   126, 0,
};

static int count_header_bytes(struct tc_http_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->limits.max_header_size) {
        return fail(c, c->req && c->req->_hdrs.len == 0 && !c->req->_in_value ? 414 : 431,
                    c->req && c->req->_hdrs.len == 0 ? "request line too long"
                                                     : "request headers too large");
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct tc_http_conn *c = p->data;
    c->header_bytes = 0;
    c->body_expected = 0;
    /* The header clock of a new connection runs from accept (as nginx's
     * client_header_timeout); later requests start it at their first byte. */
    if (c->fresh && c->wait == WAIT_IDLE) {
        c->wait = WAIT_HEADER;
    } else {
        set_wait(c, WAIT_HEADER, c->srv->limits.header_timeout_ms);
    }
    c->req = req_recycle(c);
    if (c->req == NULL) {
        return fail(c, 503, "out of memory");
    }
    c->req->_conn = c;
    c->req->peer_scopes = c->peer_scopes;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct tc_http_conn *c = p->data;
    if (count_header_bytes(c, len) != 0) {
        return -1;
    }
    /* Non-strict http-parser lets HT and FF into the target. */
    uint8_t bad = 0;
    for (size_t i = 0; i < len; i++) {
        bad |= (uint8_t)at[i] < 0x20 || at[i] == 0x7f;
    }
    if (bad) {
        return fail_strict(c, "a control character in the request target");
    }
    if (tc_buf_append(&c->req->_target, at, len) != TC_OK) {
        return fail(c, 503, "out of memory");
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct tc_http_conn *c = p->data;
    struct tc_http_req *r = c->req;
    if (count_header_bytes(c, len) != 0) {
        return -1;
    }
    if (r->_in_value || r->_nhdrs == 0) {
        /* A new header starts: finish the previous value. */
        if (r->_in_value && tc_buf_append(&r->_hdrs, "", 1) != TC_OK) {
            return fail(c, 503, "out of memory");
        }
        if (r->_nhdrs == TC_HTTP_MAX_HEADERS) {
            return fail(c, 431, "too many request headers");
        }
        r->_hoff[r->_nhdrs][0] = (uint32_t)r->_hdrs.len;
        r->_hoff[r->_nhdrs][1] = UINT32_MAX;
        r->_nhdrs++;
        r->_in_value = 0;
    }
    size_t at_len = r->_hdrs.len;
    if (tc_buf_append(&r->_hdrs, at, len) != TC_OK) {
        return fail(c, 503, "out of memory");
    }
    uint8_t bad = 0;
    for (size_t i = at_len; i < r->_hdrs.len; i++) {
        uint8_t ch = r->_hdrs.data[i];
        uint8_t lc = ch < 128 ? name_char[ch] : 0;
        bad |= lc == 0;
        r->_hdrs.data[i] = lc;
    }
    if (bad) {
        /* Non-strict http-parser passes "Host : x" as the name "Host ". */
        return fail_strict(c, "a header name with a character HTTP does not allow "
                              "(a space before the colon?)");
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct tc_http_conn *c = p->data;
    struct tc_http_req *r = c->req;
    if (count_header_bytes(c, len) != 0) {
        return -1;
    }
    if (!r->_in_value) {
        if (tc_buf_append(&r->_hdrs, "", 1) != TC_OK) {
            return fail(c, 503, "out of memory");
        }
        r->_hoff[r->_nhdrs - 1][1] = (uint32_t)r->_hdrs.len;
        r->_in_value = 1;
    }
    if (tc_buf_append(&r->_hdrs, at, len) != TC_OK) {
        return fail(c, 503, "out of memory");
    }
    return 0;
}

/* "chunked" in any case, with optional whitespace around it. */
static int is_chunked(const char *v)
{
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    if (strncasecmp(v, "chunked", 7) != 0) {
        return 0;
    }
    for (v += 7; *v == ' ' || *v == '\t'; v++) {
    }
    return *v == '\0';
}

/* Refuses what http-parser accepts but a proxy may frame differently. */
static int check_framing_headers(struct tc_http_conn *c, const char *cl)
{
    struct tc_http_req *r = c->req;
    unsigned te = 0, host = 0;
    for (unsigned i = 0; i < r->_nhdrs; i++) {
        const char *name = (const char *)r->_hdrs.data + r->_hoff[i][0];
        if (strcmp(name, "transfer-encoding") == 0) {
            /* Non-strict http-parser decodes "gzip, chunked" as chunked. */
            if (++te > 1 || !is_chunked((const char *)r->_hdrs.data + r->_hoff[i][1])) {
                return fail_strict(c, "Transfer-Encoding must be exactly chunked, given once");
            }
        } else if (strcmp(name, "host") == 0) {
            if (++host > 1) {
                return fail_strict(c, "more than one Host header");
            }
            r->_host = i + 1; /* tc_http_host() */
        }
    }
    if (te != 0 && cl != NULL) {
        return fail_strict(c, "both Transfer-Encoding and Content-Length");
    }
    /* RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without
     * Host; the Host check against DNS rebinding (src/auth.c) relies on it. */
    if (host == 0 && c->parser.http_major == 1 && c->parser.http_minor >= 1) {
        return fail(c, 400, "an HTTP/1.1 request needs a Host header");
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct tc_http_conn *c = p->data;
    struct tc_http_req *r = c->req;
    struct tc_http_server *s = c->srv;

    /* Terminate the last header (a name without value gets ""). */
    if (r->_nhdrs > 0) {
        if (!r->_in_value) {
            if (tc_buf_append(&r->_hdrs, "", 1) != TC_OK) {
                return fail(c, 503, "out of memory");
            }
            r->_hoff[r->_nhdrs - 1][1] = (uint32_t)r->_hdrs.len;
        }
        if (tc_buf_append(&r->_hdrs, "", 1) != TC_OK) {
            return fail(c, 503, "out of memory");
        }
    }
    if (tc_buf_append(&r->_target, "", 1) != TC_OK) {
        return fail(c, 503, "out of memory");
    }
    switch (p->method) {
    case HTTP_GET:
        r->method = TC_HTTP_GET;
        break;
    case HTTP_HEAD:
        r->method = TC_HTTP_HEAD;
        break;
    case HTTP_PUT:
        r->method = TC_HTTP_PUT;
        break;
    case HTTP_DELETE:
        r->method = TC_HTTP_DELETE;
        break;
    case HTTP_POST:
        r->method = TC_HTTP_POST;
        break;
    case HTTP_OPTIONS:
        r->method = TC_HTTP_OPTIONS; /* CORS preflight (src/routes.c) */
        break;
    case HTTP_PURGE:
        r->method = TC_HTTP_PURGE;
        break;
    case HTTP_PATCH:
        r->method = TC_HTTP_PATCH;
        break;
    default:
        r->method = TC_HTTP_OTHER;
        break;
    }
    r->method_name = http_method_str((enum http_method)p->method);
    r->keep_alive = http_should_keep_alive(p);

    const char *cl = tc_http_header(r, "content-length");
    int chunked = (p->flags & F_CHUNKED) != 0;
    if (check_framing_headers(c, cl) != 0) {
        return -1;
    }
    if ((r->method == TC_HTTP_PUT || r->method == TC_HTTP_POST) && cl == NULL && !chunked) {
        return fail(c, 411, "a PUT or POST needs Content-Length or chunked encoding");
    }
    if (cl != NULL && p->content_length > s->limits.max_body) {
        return fail(c, 413, "request body larger than the server accepts");
    }
    if (!chunked && (cl == NULL || p->content_length == 0)) {
        return 0; /* no body: the message completes now */
    }
    /* Refuse a new body the budget has no room for now, before the client
     * sends it; nothing is reserved: the budget is taken as bytes arrive. */
    uint64_t used = atomic_load_explicit(s->limits.body_pending, memory_order_relaxed);
    uint64_t need = chunked ? 1 : p->content_length;
    if (used > s->limits.max_pending_body || need > s->limits.max_pending_body - used) {
        BUMP(s, body_budget_refused);
        return fail(c, 503, "the server is receiving too many request bodies; try again later");
    }
    c->body_expected = chunked ? 0 : p->content_length;
    set_wait(c, WAIT_BODY, s->limits.body_timeout_ms);
    const char *expect = tc_http_header(r, "expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_write(c, cont, sizeof(cont) - 1, NULL, 0);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct tc_http_conn *c = p->data;
    struct tc_http_req *r = c->req;
    const struct tc_http_limits *l = &c->srv->limits;
    /* Body data is not framing: scan what came before it, skip it. */
    if (scan_framing(c, c->scan, at) != 0) {
        return -1;
    }
    c->scan = at + len;
    size_t need = r->body.len + len;
    if (need > l->max_body) {
        return fail(c, 413, "request body larger than the server accepts");
    }
    if (need > r->body.cap) {
        size_t want = r->body.cap * 2;
        want = want < BODY_MIN_ALLOC ? BODY_MIN_ALLOC : want;
        want = c->body_expected != 0 && want > c->body_expected ? (size_t)c->body_expected : want;
        want = want > l->max_body ? l->max_body : want;
        want = want < need ? need : want;
        size_t before = r->body.cap;
        if (tc_buf_reserve(&r->body, want) != TC_OK) {
            return fail(c, 503, "out of memory");
        }
        /* Charge what was allocated (tc_buf rounds up), not what was announced. */
        if (body_charge(c, r->body.cap - before) != 0) {
            BUMP(c->srv, body_budget_refused);
            return fail(c, 503, "the server is receiving too many request bodies; try again later");
        }
    }
    memcpy(r->body.data + r->body.len, at, len);
    r->body.len = need;
    if ((p->flags & F_CHUNKED) && p->content_length == 0) {
        /* This chunk's data is complete: exactly CRLF must follow. */
        c->fr = FR_CHUNK_END;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct tc_http_conn *c = p->data;
    /* Stop here: the next pipelined request is parsed after this one is
     * answered, so that responses go out in order. */
    http_parser_pause(p, 1);
    c->state = ST_ANSWERING;
    return 0;
}

/* ---- responses -------------------------------------------------------------------- */

/* For a head sized beforehand (write_response). */
#define PUT_LIT(buf, n, lit)                                                                       \
    do {                                                                                           \
        memcpy((buf) + (n), lit, sizeof(lit) - 1);                                                 \
        (n) += sizeof(lit) - 1;                                                                    \
    } while (0)

/* The common status line and Server, one copy. */
#define HEAD_200 "HTTP/1.1 200 OK\r\nServer: tiercache\r\nDate: "

/* The head's bytes besides the reason, the content type and the caller's
 * headers: status line, Server, Date, the header names, Content-Length's
 * 20 digits, Connection: close, the blank line. */
#define HEAD_FIXED_MAX 256

static size_t out_pending(const struct tc_http_conn *c)
{
    return c->out.len - c->out_off;
}

static int output_pending(const struct tc_http_conn *c)
{
    return c->out.len > c->out_off;
}

/* Output starts to wait, or the socket took some: a client that takes none
 * for idle-timeout is closed (timer_cb), as nginx's send_timeout. */
static void touch_write_deadline(struct tc_http_conn *c)
{
    uint64_t now = deadline_now_ms(c->srv);
    c->write_deadline_ms = now + c->srv->limits.idle_timeout_ms;
    timer_arm(c, c->write_deadline_ms, now);
}

/* Sends the n pieces now if the socket takes them; what it does not take
 * waits in c->out for write_cb. Nothing is registered with epoll on the
 * common path. */
static void conn_writev(struct tc_http_conn *c, const struct iovec *iov, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += iov[i].iov_len;
    }
    size_t done = 0;
    if (c->out.len > c->out_off) {
        /* Earlier output still waits: keep the order. Move what waits to the
         * front first once half the buffer is sent bytes, so that a client
         * reading slowly but steadily does not grow the buffer for ever. */
        if (c->out_off >= c->out.len / 2) {
            memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
            c->out.len -= c->out_off;
            c->out_off = 0;
        }
    } else {
        ssize_t w = conn_send(c, iov, n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->close_after = 1; /* the peer is gone; close once answered */
                c->out.len = c->out_off = 0;
                return;
            }
            w = 0;
        }
        done = (size_t)w;
        if (done >= total) {
            return;
        }
        c->out.len = c->out_off = 0;
        event_add(c->wev, NULL);
        touch_write_deadline(c);
    }
    /* What the socket did not take, in order. */
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        if (done >= len) {
            done -= len;
            continue;
        }
        if (tc_buf_append(&c->out, (const char *)iov[i].iov_base + done, len - done) != TC_OK) {
            c->close_after = 1;
            return;
        }
        done = 0;
    }
}

static void conn_write(struct tc_http_conn *c, const void *a, size_t alen, const void *b,
                       size_t blen)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    conn_writev(c, iov, blen ? 2 : 1);
}

/* RFC 9110 §6.6.1: a server with a clock sends Date in every response.
 * The time is the request's (tc_http_date_ms), from the cached clock, not
 * the coarse one: a Date a few ms behind could name the second before a
 * value's Last-Modified, which is clamped to the same time. Formatted once
 * a second. */
static const char *http_date(struct tc_http_server *s, uint64_t ms)
{
    uint64_t sec = ms / 1000u;
    if (sec != s->date_s || s->date[0] == '\0') {
        tc_cond_http_date(sec * 1000u, s->date);
        s->date_s = sec;
    }
    return s->date;
}

uint64_t tc_http_date_ms(struct tc_http_req *r)
{
    struct tc_http_conn *c = r->_conn;
    if (r->_date_ms != 0) {
        return r->_date_ms;
    }
    r->_date_ms = r->now_ms;
    if (c != NULL && !c->in_feed) {
        /* Answered after its dispatch returned (a remote tier, the origin,
         * a lock wait): now_ms may be seconds old. Never earlier than it, so
         * that a Last-Modified clamped to now_ms before stays below Date. */
        tc_clock_read(&c->srv->clock);
        uint64_t now = tc_clock_wall_ms(&c->srv->clock);
        r->_date_ms = now > r->now_ms ? now : r->now_ms;
    }
    return r->_date_ms;
}

/* Builds status line and headers in the server's scratch buffer and sends
 * them with the body's parts in one writev; @p date_ms is the Date's time. */
static void write_response(struct tc_http_conn *c, int status, const char *ctype,
                           const struct tc_http_part *parts, size_t nparts, const char *headers,
                           int head_only, int keep_alive, uint64_t date_ms)
{
    size_t len = 0;
    for (size_t i = 0; i < nparts; i++) {
        len += parts[i].len;
    }
    /* The head is written straight into the scratch buffer, sized first:
     * every piece but the caller's headers is bounded here. */
    const char *reason = tc_http_reason(status);
    size_t reason_len = strlen(reason), ctype_len = strlen(ctype);
    size_t headers_len = headers != NULL ? strlen(headers) : 0;
    struct tc_buf *sb = &c->srv->scratch;
    sb->len = 0;
    if (tc_buf_reserve(sb, HEAD_FIXED_MAX + reason_len + ctype_len + headers_len) != TC_OK) {
        c->close_after = 1;
        return;
    }
    char *h = (char *)sb->data;
    size_t n;
    if (status == 200) {
        n = sizeof(HEAD_200) - 1;
        memcpy(h, HEAD_200, n);
    } else {
        n = sizeof("HTTP/1.1 ") - 1;
        memcpy(h, "HTTP/1.1 ", n);
        n += tc_text_u64(h + n, (uint64_t)status);
        h[n++] = ' ';
        memcpy(h + n, reason, reason_len);
        n += reason_len;
        PUT_LIT(h, n, "\r\nServer: tiercache\r\nDate: ");
    }
    memcpy(h + n, http_date(c->srv, date_ms), TC_COND_DATE_LEN);
    n += TC_COND_DATE_LEN;
    PUT_LIT(h, n, "\r\nContent-Type: ");
    memcpy(h + n, ctype, ctype_len);
    n += ctype_len;
    if (status == 304) {
        /* RFC 9110 §8.6: a 304's Content-Length would have to be the 200's. */
        PUT_LIT(h, n, "\r\n");
        len = 0;
    } else {
        PUT_LIT(h, n, "\r\nContent-Length: ");
        n += tc_text_u64(h + n, len);
        PUT_LIT(h, n, "\r\n");
    }
    if (!keep_alive) {
        PUT_LIT(h, n, "Connection: close\r\n");
    }
    if (headers_len > 0) {
        memcpy(h + n, headers, headers_len);
        n += headers_len;
    }
    PUT_LIT(h, n, "\r\n");
    sb->len = n;
    if (head_only || len == 0) {
        conn_write(c, sb->data, sb->len, NULL, 0);
        return;
    }
    /* Small bodies ride in the same buffer; large ones go by reference. Over
     * TLS a body up to one record rides too: one record and one write per
     * answer instead of two, for a copy much cheaper than the encryption. */
    size_t ride = c->tls != NULL ? TLS_RECORD_MAX : 4096;
    if (len <= ride && tc_buf_reserve(sb, sb->len + len) == TC_OK) {
        for (size_t i = 0; i < nparts; i++) {
            memcpy(sb->data + sb->len, parts[i].data, parts[i].len);
            sb->len += parts[i].len;
        }
        conn_write(c, sb->data, sb->len, NULL, 0);
        return;
    }
    struct iovec iov[1 + TC_HTTP_MAX_PARTS];
    int k = 0;
    iov[k++] = (struct iovec){sb->data, sb->len};
    for (size_t i = 0; i < nparts && i < TC_HTTP_MAX_PARTS; i++) {
        if (parts[i].len > 0) {
            iov[k++] = (struct iovec){(void *)parts[i].data, parts[i].len};
        }
    }
    conn_writev(c, iov, k);
}

/* The last response is written: close, or linger so that a client still
 * sending reads the answer before it sees the connection go. */
static void finish_close(struct tc_http_conn *c)
{
    if (c->tls != NULL) {
        tc_tls_shutdown(c->tls); /* close_notify, before the write side closes */
    }
    if (!c->linger || shutdown(c->fd, SHUT_WR) != 0) {
        conn_free(c);
        return;
    }
    c->state = ST_LINGERING;
    tc_buf_deinit(&c->in);
    uint64_t now = coarse_ms();
    c->linger_end_ms = now + LINGER_MAX_MS;
    set_wait(c, WAIT_LINGER, LINGER_IDLE_MS);
    event_add(c->rev, NULL);
}

/* @p linger: the client may still be sending (an error answered before the
 * request was read to its end, or unread pipelined input). */
static void close_when_written(struct tc_http_conn *c, int linger)
{
    c->state = ST_CLOSING;
    c->wait = WAIT_NONE;
    c->out_paused = 0;
    c->linger = (uint8_t)(linger && !c->close_after);
    event_del(c->rev);
    if (!output_pending(c) && !c->in_feed) {
        finish_close(c);
    }
    /* Otherwise write_cb closes once the output has drained, or the
     * parse loop that is running does when it returns (finish_feed). */
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
        return (ch | 0x20) - 'a' + 10;
    }
    return -1;
}

/* Lock and lease tokens are credentials: the value of a query parameter
 * named "token" (in any case, as evhttp's lookup matches it, and %-encoded
 * or not) is written as "***". Returns the length written to @p dst. */
static size_t mask_query(char *dst, size_t cap, const char *q)
{
    size_t n = 0;
    while (*q != '\0' && n < cap) {
        size_t len = strcspn(q, "&;");
        size_t name_len = strcspn(q, "=&;");
        char name[6];
        size_t k = 0;
        for (size_t i = 0; i < name_len && k < sizeof(name); i++, k++) {
            int hi = q[i] == '%' && i + 2 < name_len ? hex_digit(q[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(q[i + 2]) : -1;
            if (lo >= 0) {
                name[k] = (char)(hi * 16 + lo);
                i += 2;
            } else {
                name[k] = q[i];
            }
        }
        int secret = q[name_len] == '=' && k == 5 && strncasecmp(name, "token", 5) == 0;
        size_t copy = secret ? name_len + 1 : len;
        copy = copy > cap - n ? cap - n : copy;
        memcpy(dst + n, q, copy);
        n += copy;
        if (secret && n + 3 <= cap) {
            memcpy(dst + n, "***", 3);
            n += 3;
        }
        q += len;
        if (*q != '\0' && n < cap) {
            dst[n++] = *q++; /* the separator */
        }
    }
    return n;
}

/* The value of response header @p name ("X-Cache") in @p headers (lines
 * ending in CRLF) into @p out; NULL when absent. */
static const char *resp_header(const char *headers, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *h = headers; h != NULL && *h != '\0';) {
        const char *eol = strstr(h, "\r\n");
        size_t len = eol ? (size_t)(eol - h) : strlen(h);
        if (len > nl + 1 && strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ') {
                v++;
            }
            size_t vl = (size_t)(h + len - v);
            vl = vl < cap - 1 ? vl : cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        h = eol ? eol + 2 : h + len;
    }
    return NULL;
}

/* One access-log line, in the configured format (src/access_log.h). */
static void access_log(struct tc_http_req *r, int status, size_t len, const char *headers)
{
    char line[2048];
    char query[320];
    char remote[INET6_ADDRSTRLEN] = "";
    char cache[16], tier[16];
    size_t qlen = r->query != NULL ? mask_query(query, sizeof(query), r->query) : 0;
    struct tc_http_conn *c = r->_conn;
    if (c != NULL) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0) {
            getnameinfo((struct sockaddr *)&ss, sl, remote, sizeof(remote), NULL, 0,
                        NI_NUMERICHOST);
        }
    }
    /* Headers other than these two are never written: Authorization,
     * X-Lock-Token and X-Lease-Token carry credentials. */
    struct tc_access_entry e = {
        .remote = remote,
        .method = r->method_name,
        .path = r->path,
        .path_len = r->path_len > 1024 ? 1024 : r->path_len,
        .query = r->query != NULL ? query : NULL,
        .query_len = qlen,
        .http_major = c != NULL ? c->parser.http_major : 1,
        .http_minor = c != NULL ? c->parser.http_minor : 1,
        .status = status,
        .bytes = len,
        .duration_us = (tc_clock_ns() - r->start_ns) / 1000,
        .referer = tc_http_header(r, "referer"),
        .user_agent = tc_http_header(r, "user-agent"),
        .cache = resp_header(headers, "X-Cache", cache, sizeof(cache)),
        .tier = resp_header(headers, "X-Cache-Tier", tier, sizeof(tier)),
        .now_ms = tc_clock_ms(),
    };
    size_t n =
        tc_access_format((enum tc_access_format)tc_log_access_format(), &e, line, sizeof(line));
    tc_log_access(line, n);
}

void tc_http_respond(struct tc_http_req *r, int status, const char *ctype, const void *body,
                     size_t len, const char *headers)
{
    struct tc_http_part part = {body, len};
    tc_http_respond_parts(r, status, ctype, &part, 1, headers);
}

void tc_http_respond_parts(struct tc_http_req *r, int status, const char *ctype,
                           const struct tc_http_part *parts, size_t nparts, const char *headers)
{
    struct tc_http_conn *c = r->_conn;
    if (tc_log_access_enabled()) {
        size_t len = 0;
        for (size_t i = 0; i < nparts; i++) {
            len += parts[i].len;
        }
        access_log(r, status, len, headers);
    }
    if (c == NULL) {
        /* The connection is gone (shutdown); nothing to send. */
        req_free(r);
        return;
    }
    struct tc_http_server *s = c->srv;
    int keep = r->keep_alive && !c->close_after;
    write_response(c, status, ctype, parts, nparts > TC_HTTP_MAX_PARTS ? TC_HTTP_MAX_PARTS : nparts,
                   headers, r->method == TC_HTTP_HEAD, keep, tc_http_date_ms(r));
    req_park(c, r);
    c->req = NULL;
    c->fresh = 0;
    s->busy--;
    if (!keep || c->close_after) {
        close_when_written(c, c->in.len > 0);
        return;
    }
    c->state = ST_READING;
    http_parser_pause(&c->parser, 0);
    /* Until the next request's first byte (on_message_begin). */
    set_wait(c, WAIT_IDLE, s->limits.idle_timeout_ms);
    if (!c->in_feed) {
        /* Answered asynchronously: reading was stopped (see dispatch). */
        event_add(c->rev, NULL);
        feed(c);
    }
}

static void respond_error(struct tc_http_conn *c, int status, const char *msg)
{
    static const char *const codes[][2] = {
        {"400", "bad_request"},       {"408", "request_timeout"}, {"411", "length_required"},
        {"413", "payload_too_large"}, {"414", "uri_too_long"},    {"431", "headers_too_large"},
        {"503", "unavailable"},
    };
    const char *code = "bad_request";
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (strcmp(codes[i][0], st) == 0) {
            code = codes[i][1];
        }
    }
    char body[256];
    /* msg is one of this file's constant strings: no JSON escaping needed. */
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}", code, msg);
    struct tc_http_part part = {body, (size_t)n};
    /* No request to take the time from (or one being refused): read it. */
    tc_clock_read(&c->srv->clock);
    write_response(c, status, "application/json", &part, 1, NULL, 0, 0,
                   tc_clock_wall_ms(&c->srv->clock));
    body_release(c);
    if (c->req != NULL) {
        req_free(c->req);
        c->req = NULL;
    }
    close_when_written(c, 1);
}

/* ---- connections --------------------------------------------------------------------- */

static void dispatch(struct tc_http_conn *c)
{
    struct tc_http_req *r = c->req;
    struct tc_http_server *s = c->srv;
    char *t = (char *)r->_target.data;
    char *q = strchr(t, '?');
    if (q != NULL) {
        *q = '\0';
        r->query = q + 1;
    }
    r->path = t;
    r->path_len = strlen(t);
    /* The request's one clock read (read_cb's, when it parsed the request:
     * the request then counts from the read that brought its bytes): the
     * wall clock is derived from it. */
    r->start_ns = s->clock_held ? s->clock.mono_ns : tc_clock_read(&s->clock);
    r->now_ms = tc_clock_wall_ms(&s->clock);
    /* The body is complete: it is the handler's now, no longer pending. */
    body_release(c);
    c->wait = WAIT_NONE;
    s->busy++;
    BUMP(s, requests);
    s->handler(r, s->arg);
}

/* Reading stops until write_cb has sent the output down to OUT_PAUSE. */
static void pause_reading(struct tc_http_conn *c)
{
    c->out_paused = 1;
    c->wait = WAIT_NONE; /* the write deadline runs instead */
    event_del(c->rev);
    BUMP(c->srv, output_paused);
}

/* Parses bytes; returns how many were consumed. Dispatches complete requests. */
static size_t parse(struct tc_http_conn *c, const char *data, size_t len)
{
    size_t used = 0;
    while (used < len && c->state == ST_READING) {
        if (out_pending(c) > OUT_PAUSE) {
            /* Between two requests (the parser is at a message boundary). */
            pause_reading(c);
            break;
        }
        c->scan = data + used;
        size_t n = http_parser_execute(&c->parser, &c->srv->settings, data + used, len - used);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->error == 0 && (e == HPE_OK || e == HPE_PAUSED)) {
            /* Before dispatch: a request with bad framing is not answered. */
            scan_framing(c, c->scan, data + used + n);
        }
        used += n;
        if (c->error != 0 || (e != HPE_OK && e != HPE_PAUSED)) {
            if (c->error == 0) {
                c->error = e == HPE_HEADER_OVERFLOW ? 431 : 400;
                c->error_msg = e == HPE_HEADER_OVERFLOW ? "request headers too large"
                                                        : "malformed HTTP request";
            }
            if (c->error != 503) {
                BUMP(c->srv, parse_errors);
            }
            respond_error(c, c->error, c->error_msg);
            return len;
        }
        if (c->state == ST_ANSWERING) {
            /* Paused at message complete: answer before parsing further. */
            dispatch(c);
            continue; /* a synchronous reply has set ST_READING again */
        }
        if (n == 0) {
            break;
        }
    }
    return used;
}

/* After a parse loop: closes a connection closed inside it. Returns 1 if
 * the connection is closing (and must not be touched by the caller). */
static int finish_feed(struct tc_http_conn *c)
{
    c->in_feed = 0;
    if (c->state != ST_CLOSING) {
        return 0;
    }
    if (!output_pending(c)) {
        finish_close(c);
    }
    return 1;
}

/*
 * Reading goes on without a socket event when none may come. A plain
 * connection's read event is edge-triggered (EV_ET), as nginx's are: epoll
 * reports a socket once per arrival of bytes and does not poll each socket
 * it delivered again on the next epoll_wait (sock_poll, tcp_poll,
 * ep_item_poll: ~3% of a 100-byte hit's CPU under wrk, ~1.3% in nginx).
 * The rule that keeps this correct: a read that filled rbuf may have left
 * bytes in the socket, so it reads again here; a short read or EAGAIN
 * emptied it, and the next byte is a new edge. Where reading stops
 * (answering, pause_reading, close_when_written) the event is deleted, and
 * event_add re-registers it with epoll_ctl, which reports bytes already
 * waiting (libevent's epoll backend without its changelist:
 * event_base_new() does not enable it).
 * rfull is kept until the next read, not cleared by a stop, so that a
 * restart reads again even where an event_del and event_add cancel out
 * (the changelist an EVENT_EPOLL_USE_CHANGELIST environment would turn on).
 * TLS stays level-triggered: OpenSSL may leave bytes of a record in the
 * socket; bytes it already decrypted wake no socket event at all, so
 * read_cb is run for them too.
 */
static void read_more(struct tc_http_conn *c)
{
    if (c->state != ST_READING || c->out_paused) {
        return;
    }
    if (c->tls != NULL ? tc_tls_pending(c->tls) != 0 : c->rfull != 0) {
        event_active(c->rev, EV_READ, 0);
    }
}

/* Parses what is buffered on the connection (pipelined leftovers). */
static void feed(struct tc_http_conn *c)
{
    c->in_feed = 1;
    size_t n = parse(c, (const char *)c->in.data, c->in.len);
    if (finish_feed(c)) {
        return;
    }
    if (n >= c->in.len) {
        tc_buf_deinit(&c->in); /* an idle connection holds no buffer */
    } else if (n > 0) {
        memmove(c->in.data, c->in.data + n, c->in.len - n);
        c->in.len -= n;
    }
    if (c->state == ST_ANSWERING) {
        event_del(c->rev); /* read nothing while answering asynchronously */
    } else {
        read_more(c);
    }
}

/* Lingering: read and drop what the client still sends, until EOF or a bound. */
static void linger_read(struct tc_http_conn *c)
{
    struct tc_http_server *s = c->srv;
    ssize_t got;
    do {
        got = read(c->fd, s->rbuf, sizeof(s->rbuf));
    } while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
    }
    if (got <= 0) {
        conn_free(c);
        return;
    }
    c->linger_bytes += (uint64_t)got;
    if (c->linger_bytes > LINGER_MAX_BYTES) {
        conn_free(c);
        return;
    }
    if (c->tls == NULL && (size_t)got == sizeof(s->rbuf)) {
        event_active(c->rev, EV_READ, 0); /* edge-triggered: the rest makes no new edge */
    }
    uint64_t now = coarse_ms();
    c->read_deadline_ms = now + LINGER_IDLE_MS;
    if (c->read_deadline_ms > c->linger_end_ms) {
        c->read_deadline_ms = c->linger_end_ms;
    }
    timer_arm(c, c->read_deadline_ms, now);
}

/* An error answer written straight to the socket @p fd of a connection that
 * is being refused (no conn state): best effort, the connection closes
 * either way. @p msg is a constant of this file: no JSON escaping needed. */
static void send_raw_error(int fd, int status, const char *msg)
{
    char resp[512];
    char body[256];
    int blen = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}",
                        status == 503 ? "unavailable" : "bad_request", msg);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nServer: tiercache\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     status, tc_http_reason(status), blen, body);
    ssize_t w = send(fd, resp, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w;
}

/* Plain HTTP sent to the TLS port: answered 400 in plain HTTP (as nginx
 * does), so that the client learns why, then closed lingering. */
static void tls_refuse_plain(struct tc_http_conn *c)
{
    send_raw_error(c->fd, 400, "plain HTTP sent to the TLS port; use https://");
    c->handshaking = 0;
    c->linger = 1;
    c->state = ST_CLOSING;
    finish_close(c);
}

/* Advances the TLS handshake of @p c, from read_cb or write_cb; may free c. */
static void tls_handshake_step(struct tc_http_conn *c)
{
    struct tc_http_server *s = c->srv;
    enum tc_tls_fail why = TC_TLS_FAIL_PROTOCOL;
    switch (tc_tls_handshake(c->tls, &why)) {
    case TC_TLS_WANT_READ:
        return; /* rev is armed */
    case TC_TLS_WANT_WRITE:
        event_add(c->wev, NULL);
        return;
    case TC_TLS_DONE:
        break;
    case TC_TLS_CLOSED:
    case TC_TLS_FAILED:
        if (why == TC_TLS_FAIL_CERT) {
            BUMP(s, tls_handshake_cert_errors);
        } else {
            BUMP(s, tls_handshake_protocol_errors);
        }
        if (why == TC_TLS_FAIL_PLAINTEXT) {
            tls_refuse_plain(c);
        } else {
            conn_free(c);
        }
        return;
    }
    c->handshaking = 0;
    BUMP(s, tls_handshakes);
    if (tc_tls_resumed(c->tls)) {
        BUMP(s, tls_handshakes_resumed);
    }
    c->peer_scopes = tc_tls_peer_scopes(c->tls);
    /* The header clock starts now, so that header-timeout means the same
     * on both listeners. */
    set_wait(c, WAIT_IDLE, s->limits.header_timeout_ms);
    read_more(c);
}

static void read_ready(struct tc_http_conn *c);

/* One clock reading per read: the requests parsed from it start then, and
 * their deadlines count from it (instead of a reading each). */
static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_http_conn *c = arg;
    struct tc_http_server *s = c->srv;
    (void)fd;
    (void)what;
    tc_clock_read(&s->clock);
    s->clock_held = 1;
    read_ready(c); /* may free c, never s */
    s->clock_held = 0;
}

static void read_ready(struct tc_http_conn *c)
{
    struct tc_http_server *s = c->srv;
    if (c->state == ST_LINGERING) {
        linger_read(c);
        return;
    }
    if (c->handshaking) {
        tls_handshake_step(c);
        return;
    }
    ssize_t got = conn_recv(c, s->rbuf, sizeof(s->rbuf));
    c->rfull = (uint8_t)(c->tls == NULL && got == (ssize_t)sizeof(s->rbuf));
    if (got == 0 && output_pending(c)) {
        /* The client shut its side after its last request (as "printf |
         * nc" does): its answers still go out, under the write deadline. */
        close_when_written(c, 0);
        return;
    }
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        conn_free(c);
        return;
    }
    if (got < 0) {
        return;
    }
    if (c->wait == WAIT_BODY) {
        /* body-timeout is the time between two reads of a body. */
        set_wait(c, WAIT_BODY, s->limits.body_timeout_ms);
    }
    if (c->in.len > 0) {
        /* Leftovers first, to keep the byte order. */
        if (tc_buf_append(&c->in, s->rbuf, (size_t)got) != TC_OK) {
            conn_free(c);
            return;
        }
        feed(c);
        return;
    }
    c->in_feed = 1;
    size_t n = parse(c, s->rbuf, (size_t)got);
    if (finish_feed(c)) {
        return;
    }
    if (n < (size_t)got && tc_buf_set(&c->in, s->rbuf + n, (size_t)got - n) != TC_OK) {
        conn_free(c);
        return;
    }
    if (c->state == ST_ANSWERING) {
        event_del(c->rev);
    } else {
        read_more(c);
    }
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_http_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->handshaking) {
        tls_handshake_step(c);
        return;
    }
    if (c->read_blocked) {
        c->read_blocked = 0;
        if (c->state == ST_READING && !c->out_paused) {
            event_active(c->rev, EV_READ, 0);
        }
        if (!output_pending(c)) {
            return;
        }
    }
    struct iovec pending = {c->out.data + c->out_off, c->out.len - c->out_off};
    ssize_t w = conn_send(c, &pending, 1);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        if (c->state == ST_ANSWERING) {
            c->close_after = 1; /* the handler still owns the request */
            c->out.len = c->out_off = 0;
            c->write_deadline_ms = 0;
            return;
        }
        conn_free(c);
        return;
    }
    if (w > 0) {
        c->out_off += (size_t)w;
        touch_write_deadline(c);
    }
    if (output_pending(c)) {
        event_add(c->wev, NULL);
        if (c->out_paused && out_pending(c) <= OUT_PAUSE) {
            /* The client reads again: so do we. */
            c->out_paused = 0;
            set_wait(c, WAIT_IDLE, c->srv->limits.idle_timeout_ms);
            event_add(c->rev, NULL);
            feed(c); /* may close c: nothing after this */
        }
        return;
    }
    tc_buf_deinit(&c->out);
    c->out_off = 0;
    c->write_deadline_ms = 0;
    if (c->state == ST_CLOSING) {
        finish_close(c);
        return;
    }
    if (c->out_paused) {
        c->out_paused = 0;
        set_wait(c, WAIT_IDLE, c->srv->limits.idle_timeout_ms);
        event_add(c->rev, NULL);
        feed(c);
    }
}

static void conn_free(struct tc_http_conn *c)
{
    struct tc_http_server *s = c->srv;
    body_release(c);
    if (c->req != NULL) {
        if (c->state == ST_ANSWERING) {
            c->req->_conn = NULL; /* its handler frees it when it responds */
            s->busy--;
        } else {
            req_free(c->req);
        }
    }
    if (c->spare != NULL) {
        req_free(c->spare);
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->tev);
    if (c->tls != NULL) {
        tc_tls_shutdown(c->tls); /* close_notify on an idle or finished connection */
        tc_tls_conn_destroy(c->tls);
        DROP(s, tls_active);
    }
    close(c->fd);
    tc_buf_deinit(&c->in);
    tc_buf_deinit(&c->out);
    free(c);
    DROP(s, active);
    atomic_fetch_sub_explicit(s->limits.conn_count, 1, memory_order_relaxed);
}

/* Serves @p fd, already counted in conn_count; on failure closes it and
 * gives the count back. */
static enum tc_status conn_open(struct tc_http_server *s, int fd)
{
    struct tc_http_conn *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        /* Edge-triggered on a plain connection (read_more); rev and wev
         * alike, because libevent takes EPOLLET from the event being added
         * or deleted: a level-triggered wev would turn the fd's reads back
         * to level-triggered each time output waits. */
        short et = s->tls != NULL ? 0 : EV_ET;
        c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST | et, read_cb, c);
        c->wev = event_new(s->base, fd, EV_WRITE | et, write_cb, c);
        c->tev = evtimer_new(s->base, timer_cb, c);
    }
    if (c == NULL || c->rev == NULL || c->wev == NULL || c->tev == NULL) {
        tc_log(TC_LOG_WARN, "http: out of memory accepting a connection");
        if (c != NULL) {
            if (c->rev != NULL) {
                event_free(c->rev);
            }
            if (c->wev != NULL) {
                event_free(c->wev);
            }
            if (c->tev != NULL) {
                event_free(c->tev);
            }
            free(c);
        }
        evutil_closesocket(fd);
        atomic_fetch_sub_explicit(s->limits.conn_count, 1, memory_order_relaxed);
        return TC_ENOMEM;
    }
    evutil_make_socket_nonblocking(fd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on a socketpair */
    c->srv = s;
    c->fd = fd;
    c->state = ST_READING;
    c->fresh = 1;
    c->fr = FR_LF;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    BUMP(s, accepted);
    BUMP(s, active);
    if (s->tls != NULL) {
        c->tls = tc_tls_conn_create(s->tls, fd);
        if (c->tls == NULL) {
            tc_log(TC_LOG_WARN, "http: out of memory accepting a TLS connection");
            conn_free(c);
            return TC_ENOMEM;
        }
        BUMP(s, tls_active);
        c->handshaking = 1;
        /* The handshake has its own deadline; the header clock starts after. */
        set_wait(c, WAIT_TLS, s->tls_handshake_ms);
        event_add(c->rev, NULL);
        return TC_OK;
    }
    /* A connection that never completes its headers is closed after
     * header-timeout: quietly if it sent nothing, with 408 otherwise. */
    set_wait(c, WAIT_IDLE, s->limits.header_timeout_ms);
    event_add(c->rev, NULL);
    return TC_OK;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct tc_http_server *s = arg;
    (void)l;
    (void)sa;
    (void)salen;
    /* One shared counter across workers, touched only on connect and close. */
    uint64_t n = atomic_fetch_add_explicit(s->limits.conn_count, 1, memory_order_relaxed);
    if (n >= s->limits.max_connections && s->tls != NULL) {
        /* No plaintext 503 on a TLS port: the client would read garbage. */
        evutil_closesocket(fd);
        atomic_fetch_sub_explicit(s->limits.conn_count, 1, memory_order_relaxed);
        BUMP(s, refused);
        return;
    }
    if (n >= s->limits.max_connections) {
        send_raw_error(fd, 503, "too many open connections");
        evutil_closesocket(fd);
        atomic_fetch_sub_explicit(s->limits.conn_count, 1, memory_order_relaxed);
        BUMP(s, refused);
        return;
    }
    conn_open(s, fd);
}

enum tc_status tc_http_server_adopt(struct tc_http_server *s, int fd)
{
    uint64_t n = atomic_fetch_add_explicit(s->limits.conn_count, 1, memory_order_relaxed);
    if (n >= s->limits.max_connections) {
        close(fd);
        atomic_fetch_sub_explicit(s->limits.conn_count, 1, memory_order_relaxed);
        BUMP(s, refused);
        return TC_EUNAVAIL;
    }
    return conn_open(s, fd);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    tc_log(TC_LOG_WARN, "http: accept() failed: %s", evutil_socket_error_to_string(err));
}

struct tc_http_server *tc_http_server_create(struct event_base *base, int fd,
                                             const struct tc_http_limits *limits,
                                             tc_http_handler_fn handler, void *arg)
{
    struct tc_http_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    s->base = base;
    tc_clock_init(&s->clock);
    s->limits = *limits;
    s->handler = handler;
    s->arg = arg;
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    if (fd < 0) {
        return s; /* adopted connections only */
    }
    s->listener = evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (s->listener == NULL) {
        close(fd);
        free(s);
        return NULL;
    }
    evconnlistener_set_error_cb(s->listener, accept_error_cb);
    return s;
}

void tc_http_server_set_tls(struct tc_http_server *s, struct tc_tls *tls, uint64_t handshake_ms)
{
    s->tls = tls;
    s->tls_handshake_ms = handshake_ms;
}

void tc_http_server_stop_accepting(struct tc_http_server *s)
{
    if (s->listener != NULL) {
        evconnlistener_free(s->listener);
        s->listener = NULL;
    }
}

size_t tc_http_server_busy(const struct tc_http_server *s)
{
    return s->busy;
}

const struct tc_http_counters *tc_http_server_counters(const struct tc_http_server *s)
{
    return &s->counters;
}

void tc_http_server_destroy(struct tc_http_server *s)
{
    if (s == NULL) {
        return;
    }
    tc_http_server_stop_accepting(s);
    while (s->conns != NULL) {
        conn_free(s->conns);
    }
    tc_buf_deinit(&s->scratch);
    free(s);
}

int tc_http_listen(const char *host, unsigned port, unsigned *bound_port)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[8];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        tc_log(TC_LOG_CRIT, "getaddrinfo(%s, %s) failed: %s", host, portstr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        tc_log(TC_LOG_CRIT, "socket() failed: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Each worker binds its own socket to the same port; the kernel spreads
     * new connections over them without a shared accept queue lock. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        tc_log(TC_LOG_CRIT, "setsockopt(SO_REUSEPORT) failed: %s", strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        tc_log(TC_LOG_CRIT, "bind(%s:%u) failed: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (listen(fd, 4096) != 0) {
        tc_log(TC_LOG_CRIT, "listen(%s:%u) failed: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}
