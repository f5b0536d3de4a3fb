/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer target: the HTTP server of src/http.c, request parsing with its
 * limits, framing checks, pipelining, output pausing and closing, driven
 * through the real connection code.
 *
 * Why a socketpair rather than a feed function: the state that matters
 * (leftover input across reads, a request answered later, output the
 * client does not take, lingering close) lives in the read/write callbacks
 * and the event loop, so the input goes in through a socket the server
 * adopted (tc_http_server_adopt) and the loop runs between segments. The
 * harness is the client: it writes the input, reads and drops the output,
 * then shuts its side so that every connection ends.
 *
 * Input: byte 0 is the segment size (0: all at once; n: n bytes per write,
 * one loop turn between writes), byte 1 flags (bit 0: read no output until
 * all input is written or a write would block; bit 1: close, not just shut, the client's side once
 * the input is written, so that the server's writes fail), then the bytes
 * on the wire. A path containing "async" is answered from a later loop turn,
 * "big" with 1.25 MiB (above the 1 MiB output pause), else a few bytes.
 *
 * After each input: no connection, no body budget and no request may be
 * left, else abort() (a leak of accounting is a bug as much as a crash).
 */
#include "src/http.h"
#include "src/log.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct tc_http_server *srv;
static _Atomic uint64_t conns, pending;
static int deferred;
static char *big;
#define BIG_LEN ((size_t)5 << 18)

static void answer(struct tc_http_req *r)
{
    if (strstr(r->path, "big") != NULL) {
        tc_http_respond(r, 200, "application/octet-stream", big, BIG_LEN, NULL);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"body\":%zu}", r->body.len);
    tc_http_respond(r, r->query != NULL ? 404 : 200, "application/json", body, (size_t)n,
                    "X-Fuzz: 1\r\n");
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
    if (strstr(r->path, "async") != NULL) {
        struct timeval now = {0, 0};
        if (event_base_once(base, -1, EV_TIMEOUT, deferred_cb, r, &now) == 0) {
            deferred++;
            return;
        }
    }
    answer(r);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* as main() does: the server writes with write() */
    /* The access log goes nowhere, but its masking code runs. */
    if (tc_log_setup(TC_LOG_CRIT, NULL, "/dev/null") != TC_OK) {
        abort();
    }
    big = malloc(BIG_LEN);
    memset(big, 'B', BIG_LEN);
    base = event_base_new();
    /* Small limits, so that inputs of a few KiB reach each of them; the
     * timeouts never fire within an input (every input ends with EOF). */
    struct tc_http_limits limits = {
        .max_header_size = 2048,
        .max_body = 32768,
        .idle_timeout_ms = 60000,
        .header_timeout_ms = 60000,
        .body_timeout_ms = 60000,
        .max_connections = 4,
        .max_pending_body = 24576,
        .conn_count = &conns,
        .body_pending = &pending,
    };
    srv = tc_http_server_create(base, -1, &limits, handler, NULL);
    if (base == NULL || srv == NULL || big == NULL) {
        abort();
    }
}

/* Reads and drops what the server sent. */
static void drain(int fd)
{
    char buf[65536];
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (base == NULL) {
        setup();
    }
    if (size < 2) {
        return 0;
    }
    size_t step = data[0] ? data[0] : size;
    int lazy_reader = data[1] & 1;
    int hang_up = data[1] & 2;
    data += 2;
    size -= 2;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        abort();
    }
    if (tc_http_server_adopt(srv, sv[0]) != TC_OK) {
        abort();
    }
    size_t off = 0;
    int shut = 0;
    int blocked = 0; /* the server reads no more: it waits for us to read */
    for (unsigned long spins = 0; atomic_load(&conns) != 0; spins++) {
        if (off < size) {
            size_t n = size - off < step ? size - off : step;
            ssize_t w = send(sv[1], data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            blocked = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
            if (w > 0) {
                off += (size_t)w;
            } else if (w < 0 && !blocked) {
                off = size; /* the server closed its side */
            }
        } else if (!shut) {
            if (hang_up) {
                close(sv[1]);
                sv[1] = -1;
            } else {
                shutdown(sv[1], SHUT_WR);
            }
            shut = 1;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (sv[1] >= 0 && (!lazy_reader || blocked || off == size)) {
            drain(sv[1]);
        }
        if (spins > 1000000) {
            fprintf(stderr, "fuzz_http: the connection never ended\n");
            abort();
        }
    }
    if (sv[1] >= 0) {
        close(sv[1]);
    }
    for (unsigned long spins = 0; deferred > 0; spins++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (spins > 1000000) {
            abort();
        }
    }
    if (atomic_load(&pending) != 0 || tc_http_server_busy(srv) != 0) {
        fprintf(stderr, "fuzz_http: %llu body bytes or %zu requests left behind\n",
                (unsigned long long)atomic_load(&pending), tc_http_server_busy(srv));
        abort();
    }
    return 0;
}
