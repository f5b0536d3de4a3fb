/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* pipe2 */
#include "tests/support/server.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TC_SERVER_BIN
#error "TC_SERVER_BIN must name the tiercache binary"
#endif

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tc_test_server_drain_log(struct tc_test_server *s)
{
    for (;;) {
        if (s->log_len + 1 >= sizeof(s->log)) {
            /* Keep the newest half. */
            memmove(s->log, s->log + sizeof(s->log) / 2, sizeof(s->log) / 2);
            s->log_len -= sizeof(s->log) / 2;
        }
        ssize_t n = read(s->log_fd, s->log + s->log_len, sizeof(s->log) - 1 - s->log_len);
        if (n <= 0) {
            break;
        }
        s->log_len += (size_t)n;
        s->log[s->log_len] = '\0';
    }
}

pid_t tc_test_spawn(const char *bin, const char *const *args, int fd, int *out)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        return -1;
    }
    const char *argv[64];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 62; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pfd[1], fd);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    *out = pfd[0];
    return pid;
}

int tc_test_server_start(struct tc_test_server *s, const char *const *args)
{
    memset(s, 0, sizeof(*s));
    int log_fd;
    pid_t pid = tc_test_spawn(TC_SERVER_BIN, args, 2, &log_fd);
    if (pid < 0) {
        return -1;
    }
    s->pid = pid;
    s->log_fd = log_fd;
    fcntl(s->log_fd, F_SETFL, O_NONBLOCK);
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        struct pollfd p = {s->log_fd, POLLIN, 0};
        poll(&p, 1, 50);
        tc_test_server_drain_log(s);
        const char *at = strstr(s->log, "listening on 127.0.0.1:");
        if (at != NULL) {
            s->port = (unsigned)atoi(at + strlen("listening on 127.0.0.1:"));
            return 0;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            tc_test_server_drain_log(s);
            s->pid = 0;
            return -1;
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = 0;
    return -1;
}

int tc_test_server_stop(struct tc_test_server *s, int sig)
{
    int status = -1;
    if (s->pid <= 0) {
        return -1;
    }
    kill(s->pid, sig);
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            tc_test_server_drain_log(s);
            close(s->log_fd);
            return status;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        tc_test_server_drain_log(s);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    close(s->log_fd);
    return -1;
}

int tc_test_server_stop_clean(struct tc_test_server *s)
{
    s->exit_status = 0;
    if (s->pid <= 0) {
        return 1;
    }
    s->exit_status = tc_test_server_stop(s, SIGTERM);
    return s->exit_status >= 0 && WIFEXITED(s->exit_status) && WEXITSTATUS(s->exit_status) == 0;
}

int tc_test_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

struct parse_state {
    struct tc_test_resp *r;
    char field[64];
    int which; /* header we are filling: 1 ctype, 2 x-cache, 3 tier, 4 allow, 5 ratelimit,
                * 6 retry-after, 7 x-lease-token */
    int done;
    int head; /* the request was HEAD: no body follows the headers */
    int last; /* last header callback: 0 none, 1 field, 2 value (for r->headers) */
    size_t cap;
};

static int on_headers_done(http_parser *p)
{
    struct parse_state *ps = p->data;
    return ps->head ? 1 : 0; /* 1 tells http-parser to expect no body */
}

/* Appends s to r->headers, as far as it fits. */
static void keep_header_bytes(struct tc_test_resp *r, const char *s, size_t len)
{
    size_t have = strlen(r->headers);
    size_t n = len < sizeof(r->headers) - 1 - have ? len : sizeof(r->headers) - 1 - have;
    memcpy(r->headers + have, s, n);
    r->headers[have + n] = '\0';
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    struct parse_state *ps = p->data;
    if (ps->last == 2) {
        keep_header_bytes(ps->r, "\n", 1);
    }
    keep_header_bytes(ps->r, at, len);
    ps->last = 1;
    size_t n = len < sizeof(ps->field) - 1 ? len : sizeof(ps->field) - 1;
    memcpy(ps->field, at, n);
    ps->field[n] = '\0';
    ps->which = strcasecmp(ps->field, "content-type") == 0    ? 1
                : strcasecmp(ps->field, "x-cache") == 0       ? 2
                : strcasecmp(ps->field, "x-cache-tier") == 0  ? 3
                : strcasecmp(ps->field, "allow") == 0         ? 4
                : strcasecmp(ps->field, "ratelimit") == 0     ? 5
                : strcasecmp(ps->field, "retry-after") == 0   ? 6
                : strcasecmp(ps->field, "x-lease-token") == 0 ? 7
                                                              : 0;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    struct parse_state *ps = p->data;
    if (ps->last == 1) {
        keep_header_bytes(ps->r, ": ", 2);
    }
    keep_header_bytes(ps->r, at, len);
    ps->last = 2;
    char *dst = NULL;
    size_t cap = 0;
    switch (ps->which) {
    case 1:
        dst = ps->r->content_type;
        cap = sizeof(ps->r->content_type);
        break;
    case 2:
        dst = ps->r->x_cache;
        cap = sizeof(ps->r->x_cache);
        break;
    case 3:
        dst = ps->r->x_cache_tier;
        cap = sizeof(ps->r->x_cache_tier);
        break;
    case 4:
        dst = ps->r->allow;
        cap = sizeof(ps->r->allow);
        break;
    case 5:
        dst = ps->r->ratelimit;
        cap = sizeof(ps->r->ratelimit);
        break;
    case 6:
        dst = ps->r->retry_after;
        cap = sizeof(ps->r->retry_after);
        break;
    case 7:
        dst = ps->r->lease_token;
        cap = sizeof(ps->r->lease_token);
        break;
    default:
        return 0;
    }
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(dst, at, n);
    dst[n] = '\0';
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct parse_state *ps = p->data;
    struct tc_test_resp *r = ps->r;
    if (r->body_len + len + 1 > ps->cap) {
        size_t cap = (r->body_len + len + 1) * 2;
        char *b = realloc(r->body, cap);
        if (b == NULL) {
            return -1;
        }
        r->body = b;
        ps->cap = cap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_done(http_parser *p)
{
    struct parse_state *ps = p->data;
    ps->done = 1;
    ps->r->status = (int)p->status_code;
    http_parser_pause(p, 1);
    return 0;
}

int tc_test_http_fd(int fd, const char *method, const char *target, const char *headers,
                    const void *body, size_t body_len, struct tc_test_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    size_t hl = strlen(method) + strlen(target) + (headers ? strlen(headers) : 0) + 128;
    char *head = malloc(hl);
    if (head == NULL) {
        return -1;
    }
    int n = snprintf(head, hl, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", method, target,
                     headers ? headers : "");
    if (body != NULL) {
        n += snprintf(head + n, hl - (size_t)n, "Content-Length: %zu\r\n", body_len);
    }
    n += snprintf(head + n, hl - (size_t)n, "\r\n");
    ssize_t w0 = send(fd, head, (size_t)n, MSG_NOSIGNAL);
    free(head);
    if (w0 != n) {
        return -1;
    }
    size_t sent = 0;
    while (body != NULL && sent < body_len) {
        ssize_t w = send(fd, (const char *)body + sent, body_len - sent, MSG_NOSIGNAL);
        if (w <= 0) {
            return -1;
        }
        sent += (size_t)w;
    }
    http_parser p;
    http_parser_settings st = {0};
    st.on_header_field = on_field;
    st.on_header_value = on_value;
    st.on_body = on_body;
    st.on_message_complete = on_done;
    st.on_headers_complete = on_headers_done;
    struct parse_state ps = {.r = resp, .head = strcmp(method, "HEAD") == 0};
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &ps;
    char buf[65536];
    while (!ps.done) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            /* EOF ends a response without length. */
            http_parser_execute(&p, &st, buf, 0);
            break;
        }
        http_parser_execute(&p, &st, buf, (size_t)got);
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_PAUSED) {
            return -1;
        }
    }
    if (resp->body == NULL) {
        resp->body = calloc(1, 1);
    }
    return ps.done ? 0 : -1;
}

int tc_test_http(unsigned port, const char *method, const char *target, const char *headers,
                 const void *body, size_t body_len, struct tc_test_resp *resp)
{
    int fd = tc_test_connect(port);
    if (fd < 0) {
        memset(resp, 0, sizeof(*resp));
        return -1;
    }
    int rc = tc_test_http_fd(fd, method, target, headers, body, body_len, resp);
    close(fd);
    return rc;
}

void tc_test_resp_free(struct tc_test_resp *r)
{
    free(r->body);
    r->body = NULL;
}

int tc_test_resp_header(const struct tc_test_resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *line = r->headers; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > nl + 1 && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') {
                v++;
            }
            size_t vl = len - (size_t)(v - line);
            vl = vl < cap - 1 ? vl : cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 0;
        }
        line += len + (end != NULL);
    }
    return -1;
}
