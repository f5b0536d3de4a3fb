/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE
#include "tests/support/burst.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct client {
    int fd;
    int sent;
    int done;
    char *buf;
    size_t len, cap;
    double t0;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void raise_nofile(size_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The value of header name (with ": ") in the header block h, or "". */
static void header(const char *h, size_t hlen, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    out[0] = '\0';
    for (const char *p = h; p < h + hlen;) {
        const char *eol = memmem(p, (size_t)(h + hlen - p), "\r\n", 2);
        if (eol == NULL) {
            break;
        }
        if ((size_t)(eol - p) > n + 1 && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ') {
                v++;
            }
            size_t vl = (size_t)(eol - v) < outlen - 1 ? (size_t)(eol - v) : outlen - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return;
        }
        p = eol + 2;
    }
}

/* 1 when c->buf holds a complete answer (parsed into r), 0 if not yet. */
static int parse(struct client *c, struct tc_burst_resp *r)
{
    const char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
    if (end == NULL) {
        return 0;
    }
    size_t hlen = (size_t)(end - c->buf) + 2;
    char cl[32];
    header(c->buf, hlen, "Content-Length", cl, sizeof(cl));
    size_t blen = (size_t)strtoull(cl, NULL, 10);
    size_t have = c->len - (hlen + 2);
    if (have < blen) {
        return 0;
    }
    if (sscanf(c->buf, "HTTP/1.1 %d", &r->status) != 1) {
        r->status = -1;
    }
    header(c->buf, hlen, "X-Cache", r->x_cache, sizeof(r->x_cache));
    header(c->buf, hlen, "X-Lease-Token", r->lease_token, sizeof(r->lease_token));
    r->body = malloc(blen + 1);
    if (r->body != NULL) {
        memcpy(r->body, end + 4, blen);
        r->body[blen] = '\0';
        r->body_len = blen;
    }
    return 1;
}

size_t tc_burst(const unsigned *ports, size_t nports, size_t n, const char *method,
                const char *target, const char *headers, int timeout_ms, tc_burst_tick_fn tick,
                void *arg, struct tc_burst_resp *out)
{
    struct client *cl = calloc(n, sizeof(*cl));
    struct pollfd *pfd = calloc(n, sizeof(*pfd));
    char req[4096];
    int rl = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", method,
                      target, headers ? headers : "");
    size_t done = 0;
    memset(out, 0, n * sizeof(*out));
    if (cl == NULL || pfd == NULL || rl <= 0 || (size_t)rl >= sizeof(req)) {
        free(cl);
        free(pfd);
        return 0;
    }
    raise_nofile(n + 256);
    /* Connect everyone first (blocking connects to loopback are quick),
     * then send all: the requests reach the servers together. */
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)ports[i % nports])};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cl[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cl[i].fd < 0 || connect(cl[i].fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
            if (cl[i].fd >= 0) {
                close(cl[i].fd);
            }
            cl[i].fd = -1;
            cl[i].done = 1;
            done++;
            continue;
        }
        fcntl(cl[i].fd, F_SETFL, fcntl(cl[i].fd, F_GETFL) | O_NONBLOCK);
    }
    for (size_t i = 0; i < n; i++) {
        if (cl[i].fd >= 0) {
            cl[i].t0 = now_ms();
            cl[i].sent = send(cl[i].fd, req, (size_t)rl, MSG_NOSIGNAL) == rl;
            if (!cl[i].sent) {
                close(cl[i].fd);
                cl[i].fd = -1;
                cl[i].done = 1;
                done++;
            }
        }
    }
    double deadline = now_ms() + timeout_ms, next_tick = now_ms();
    while (done < n && now_ms() < deadline) {
        size_t np = 0;
        for (size_t i = 0; i < n; i++) {
            if (!cl[i].done) {
                pfd[np].fd = cl[i].fd;
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                np++;
            }
        }
        poll(pfd, np, 20);
        for (size_t i = 0, k = 0; i < n; i++) {
            if (cl[i].done) {
                continue;
            }
            short ev = pfd[k++].revents;
            if (ev == 0) {
                continue;
            }
            if (cl[i].cap - cl[i].len < 4096) {
                size_t cap = cl[i].cap ? cl[i].cap * 2 : 8192;
                char *b = realloc(cl[i].buf, cap);
                if (b == NULL) {
                    continue;
                }
                cl[i].buf = b;
                cl[i].cap = cap;
            }
            ssize_t got = recv(cl[i].fd, cl[i].buf + cl[i].len, cl[i].cap - cl[i].len - 1, 0);
            if (got > 0) {
                cl[i].len += (size_t)got;
                if (parse(&cl[i], &out[i])) {
                    out[i].ms = now_ms() - cl[i].t0;
                    cl[i].done = 1;
                    done++;
                    close(cl[i].fd);
                    cl[i].fd = -1;
                }
            } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                cl[i].done = 1;
                done++;
                close(cl[i].fd);
                cl[i].fd = -1;
            }
        }
        if (tick != NULL && now_ms() >= next_tick) {
            next_tick = now_ms() + 20;
            if (tick(arg, done, out)) {
                break;
            }
        }
    }
    size_t complete = 0;
    for (size_t i = 0; i < n; i++) {
        if (cl[i].fd >= 0) {
            close(cl[i].fd);
        }
        free(cl[i].buf);
        complete += out[i].status > 0;
    }
    free(cl);
    free(pfd);
    return complete;
}

void tc_burst_free(struct tc_burst_resp *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(out[i].body);
        out[i].body = NULL;
    }
}
