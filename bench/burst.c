/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache-burst: N clients that each send ONE request at the same moment,
 * to see what a server does with a thundering herd (dogpile protection:
 * how many requests reach the origin, how long the herd waits).
 *
 *   connect all N ──(every connection up, or failed)──▶ send all N in one
 *   tight loop ──▶ read every response (http-parser) ──▶ JSON report
 *
 * One thread, nonblocking sockets and epoll: the clients are not spread
 * over time by thread scheduling, and 500 of them cost 500 fds, no more.
 * Clients go round-robin over the --url targets. Latency is per client,
 * from its send to its complete response.
 *
 * The report (stdout, one JSON object):
 *   clients, responses (complete answers, any status), ok (2xx/3xx),
 *   errors (no complete answer) and error_kinds, status histogram,
 *   latency_ms {min,p50,p90,p99,max,mean}, connect_ms, wall_ms, and per
 *   --count-header NAME: {"count": responses carrying it, "values":
 *   {value: n} for values of at most 32 characters, "long": the others}.
 */
#include <errno.h>
#include <event2/http.h>
#include <fcntl.h>
#include <http_parser.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef TC_VERSION
#define TC_VERSION "0"
#endif

#define MAX_URLS    64
#define MAX_HDRS    32
#define MAX_COUNT   16
#define SHORT_VALUE 32

enum cstate { C_CONNECTING, C_CONNECTED, C_SENDING, C_READING, C_DONE, C_FAILED };

enum ekind { E_NONE, E_CONNECT, E_SEND, E_CLOSED, E_PARSE, E_TIMEOUT, E_NKINDS };
static const char *const ekind_name[E_NKINDS] = {"",       "connect", "send",
                                                 "closed", "parse",   "timeout"};

struct target {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *request; /* the whole request text */
    size_t request_len;
};

struct client {
    int fd;
    int target;
    enum cstate state;
    enum ekind err;
    int in_flight; /* counted in active */
    size_t sent;
    uint64_t t_send, t_done;
    http_parser parser;
    int status;
    /* header being parsed: name (truncated) and value (first SHORT_VALUE+1 bytes) */
    char field[64];
    size_t field_len;
    char value[SHORT_VALUE + 2];
    size_t value_len; /* full length */
    int in_value;
    /* per counted header: seen, its value */
    unsigned char seen[MAX_COUNT];
    char *val[MAX_COUNT];
    size_t val_len[MAX_COUNT];
};

struct opts {
    unsigned clients;
    const char *urls[MAX_URLS];
    unsigned nurls;
    const char *hdrs[MAX_HDRS];
    unsigned nhdrs;
    const char *count[MAX_COUNT];
    unsigned ncount;
    const char *method;
    uint64_t timeout_ms;
};

static struct opts opt = {.clients = 100, .method = "GET", .timeout_ms = 10000};
static int head_request;
static unsigned active; /* clients sending or waiting for their answer */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: tiercache-burst --url http://HOST:PORT/PATH [--url ...] [-c N]\n"
            "         [-H 'Name: value']... [--method GET] [--timeout-ms N]\n"
            "         [--count-header NAME]...\n"
            "Connects N clients (default 100) to the URLs (round-robin), then has each send\n"
            "one request at the same moment; prints a JSON report on stdout.\n"
            "  -c, --clients N      concurrent clients, each with one request\n"
            "  --url URL            a target; repeat to spread clients over several\n"
            "  -H, --header H       an extra request header line; repeatable\n"
            "  --method M           request method (default GET)\n"
            "  --timeout-ms N       bound for connecting all, and again for all answers (10000)\n"
            "  --count-header NAME  count responses carrying NAME, with a histogram of its\n"
            "                       values of at most 32 characters; repeatable\n"
            "  -h, --help           show this help\n"
            "  -V, --version        print the version\n");
}

static int fail(const char *fmt, const char *a)
{
    fprintf(stderr, "tiercache-burst: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("tiercache-burst %s\n", TC_VERSION);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return fail("%s needs a value", a);
        }
        const char *v = argv[++i];
        char *end;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--clients") == 0) {
            unsigned long n = strtoul(v, &end, 10);
            if (*end != '\0' || n < 1 || n > 100000) {
                return fail("bad client count '%s' (1..100000)", v);
            }
            opt.clients = (unsigned)n;
        } else if (strcmp(a, "--url") == 0) {
            if (opt.nurls == MAX_URLS) {
                return fail("too many --url (at most %s)", "64");
            }
            opt.urls[opt.nurls++] = v;
        } else if (strcmp(a, "-H") == 0 || strcmp(a, "--header") == 0) {
            if (opt.nhdrs == MAX_HDRS || strchr(v, ':') == NULL || strpbrk(v, "\r\n") != NULL) {
                return fail("bad or too many headers: '%s'", v);
            }
            opt.hdrs[opt.nhdrs++] = v;
        } else if (strcmp(a, "--method") == 0) {
            for (const char *p = v; *p; p++) {
                if (*p < 'A' || *p > 'Z') {
                    return fail("bad method '%s'", v);
                }
            }
            opt.method = v;
        } else if (strcmp(a, "--timeout-ms") == 0) {
            unsigned long long n = strtoull(v, &end, 10);
            if (*end != '\0' || n < 1 || n > 3600000) {
                return fail("bad timeout '%s'", v);
            }
            opt.timeout_ms = n;
        } else if (strcmp(a, "--count-header") == 0) {
            if (opt.ncount == MAX_COUNT) {
                return fail("too many --count-header (at most %s)", "16");
            }
            opt.count[opt.ncount++] = v;
        } else {
            usage(stderr);
            return fail("unknown option %s", a);
        }
    }
    if (opt.nurls == 0) {
        usage(stderr);
        return fail("%s", "at least one --url is needed");
    }
    head_request = strcmp(opt.method, "HEAD") == 0;
    return 0;
}

static int make_target(const char *url, struct target *t)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    if (u == NULL || evhttp_uri_get_scheme(u) == NULL ||
        strcasecmp(evhttp_uri_get_scheme(u), "http") != 0 || evhttp_uri_get_host(u) == NULL) {
        evhttp_uri_free(u);
        return fail("bad URL '%s' (want http://host[:port]/path)", url);
    }
    const char *host = evhttp_uri_get_host(u);
    int port = evhttp_uri_get_port(u) < 0 ? 80 : evhttp_uri_get_port(u);
    char hostbuf[256], portbuf[16];
    size_t hl = strlen(host);
    if (hl >= sizeof(hostbuf)) {
        evhttp_uri_free(u);
        return fail("host too long in '%s'", url);
    }
    memcpy(hostbuf, host[0] == '[' ? host + 1 : host, hl + 1);
    if (host[0] == '[') {
        hostbuf[hl - 2] = '\0';
    }
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(hostbuf, portbuf, &hints, &ai);
    if (rc != 0) {
        evhttp_uri_free(u);
        return fail("cannot resolve the host of '%s'", url);
    }
    memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
    t->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    const char *path = evhttp_uri_get_path(u);
    const char *query = evhttp_uri_get_query(u);
    size_t cap = 512 + strlen(url);
    for (unsigned i = 0; i < opt.nhdrs; i++) {
        cap += strlen(opt.hdrs[i]) + 2;
    }
    t->request = malloc(cap);
    if (t->request == NULL) {
        evhttp_uri_free(u);
        return fail("%s", "out of memory");
    }
    int n = snprintf(t->request, cap, "%s %s%s%s HTTP/1.1\r\nHost: %s%s%s\r\n", opt.method,
                     path != NULL && path[0] != '\0' ? path : "/", query ? "?" : "",
                     query ? query : "", host, evhttp_uri_get_port(u) < 0 ? "" : ":",
                     evhttp_uri_get_port(u) < 0 ? "" : portbuf);
    size_t len = (size_t)n;
    int has_ua = 0;
    for (unsigned i = 0; i < opt.nhdrs; i++) {
        has_ua |= strncasecmp(opt.hdrs[i], "User-Agent:", 11) == 0;
        len += (size_t)snprintf(t->request + len, cap - len, "%s\r\n", opt.hdrs[i]);
    }
    if (!has_ua) {
        len += (size_t)snprintf(t->request + len, cap - len,
                                "User-Agent: tiercache-burst/" TC_VERSION "\r\n");
    }
    if (strcmp(opt.method, "POST") == 0 || strcmp(opt.method, "PUT") == 0) {
        len += (size_t)snprintf(t->request + len, cap - len, "Content-Length: 0\r\n");
    }
    len += (size_t)snprintf(t->request + len, cap - len, "\r\n");
    t->request_len = len;
    evhttp_uri_free(u);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Response parsing.                                                      */

static void header_done(struct client *c)
{
    if (!c->in_value) {
        return;
    }
    c->in_value = 0;
    for (unsigned i = 0; i < opt.ncount; i++) {
        if (c->seen[i] || strlen(opt.count[i]) != c->field_len ||
            strncasecmp(opt.count[i], c->field, c->field_len) != 0) {
            continue;
        }
        c->seen[i] = 1;
        c->val_len[i] = c->value_len;
        if (c->value_len <= SHORT_VALUE) {
            c->val[i] = malloc(c->value_len + 1);
            if (c->val[i] != NULL) {
                /* JSON keys must be valid UTF-8: keep printable ASCII only. */
                for (size_t k = 0; k < c->value_len; k++) {
                    unsigned char ch = (unsigned char)c->value[k];
                    c->val[i][k] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
                }
                c->val[i][c->value_len] = '\0';
            }
        }
    }
    c->field_len = 0;
    c->value_len = 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    struct client *c = p->data;
    header_done(c);
    size_t room = sizeof(c->field) - c->field_len;
    size_t n = len < room ? len : room;
    memcpy(c->field + c->field_len, at, n);
    c->field_len += n;
    if (len > n) {
        c->field_len = sizeof(c->field); /* too long to match any name we count */
    }
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    struct client *c = p->data;
    c->in_value = 1;
    size_t room = c->value_len < sizeof(c->value) ? sizeof(c->value) - c->value_len : 0;
    size_t n = len < room ? len : room;
    memcpy(c->value + c->value_len, at, n);
    c->value_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct client *c = p->data;
    header_done(c);
    return head_request ? 1 : 0; /* 1: no body follows (HEAD) */
}

static int on_message_complete(http_parser *p)
{
    struct client *c = p->data;
    c->status = (int)p->status_code;
    c->state = C_DONE;
    c->t_done = now_ns();
    http_parser_pause(p, 1);
    return 0;
}

static http_parser_settings settings = {
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* ---------------------------------------------------------------------- */

static void finish(int ep, struct client *c, enum cstate st, enum ekind err)
{
    if (c->in_flight) {
        c->in_flight = 0;
        active--;
    }
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = st;
    c->err = err;
}

static void raise_fd_limit(unsigned want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) {
        return;
    }
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want) {
        fprintf(stderr,
                "tiercache-burst: open files are limited to %llu, fewer than the %u needed; "
                "some clients will fail to connect (raise ulimit -n)\n",
                (unsigned long long)rl.rlim_cur, want);
    }
}

static void try_send(int ep, struct client *c, const struct target *t)
{
    while (c->sent < t->request_len) {
        ssize_t w = send(c->fd, t->request + c->sent, t->request_len - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            c->state = C_SENDING;
            return;
        }
        if (w <= 0) {
            finish(ep, c, C_FAILED, E_SEND);
            return;
        }
        c->sent += (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = C_READING;
}

static void on_readable(int ep, struct client *c)
{
    char buf[65536];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (r <= 0) {
            /* EOF completes a response that runs until close. */
            http_parser_execute(&c->parser, &settings, buf, 0);
            if (c->state == C_DONE) {
                finish(ep, c, C_DONE, E_NONE);
            } else {
                finish(ep, c, C_FAILED, E_CLOSED); /* EOF or reset before a full answer */
            }
            return;
        }
        http_parser_execute(&c->parser, &settings, buf, (size_t)r);
        if (c->state == C_DONE) {
            finish(ep, c, C_DONE, E_NONE);
            return;
        }
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            finish(ep, c, C_FAILED, E_PARSE);
            return;
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double quantile_ms(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    size_t rank = (size_t)(q * (double)n + 0.999999); /* nearest rank, 1-based */
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return (double)sorted[rank - 1] / 1e6;
}

static double round3(double v)
{
    return (double)(int64_t)(v * 1000.0 + 0.5) / 1000.0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        return 2;
    }
    struct target targets[MAX_URLS];
    for (unsigned i = 0; i < opt.nurls; i++) {
        if (make_target(opt.urls[i], &targets[i]) != 0) {
            return 2;
        }
    }
    raise_fd_limit(opt.clients + 64);
    struct client *cl = calloc(opt.clients, sizeof(*cl));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event *evs = calloc(1024, sizeof(*evs));
    if (cl == NULL || ep < 0 || evs == NULL) {
        return fail("%s", "out of memory or no epoll");
    }

    /* Phase 1: connect everyone. */
    uint64_t t0 = now_ns();
    unsigned pending = 0;
    for (unsigned i = 0; i < opt.clients; i++) {
        struct client *c = &cl[i];
        c->target = (int)(i % opt.nurls);
        const struct target *t = &targets[c->target];
        c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            c->state = C_FAILED;
            c->err = E_CONNECT;
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
        if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0 &&
            errno != EINPROGRESS) {
            finish(ep, c, C_FAILED, E_CONNECT);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            finish(ep, c, C_FAILED, E_CONNECT);
            continue;
        }
        c->state = C_CONNECTING;
        pending++;
    }
    uint64_t deadline = now_ns() + opt.timeout_ms * 1000000u;
    while (pending > 0) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            break;
        }
        int n = epoll_wait(ep, evs, 1024, (int)((deadline - now) / 1000000u) + 1);
        for (int k = 0; k < n; k++) {
            struct client *c = evs[k].data.ptr;
            if (c->state != C_CONNECTING) {
                continue;
            }
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            pending--;
            if (err != 0 || (evs[k].events & (EPOLLERR | EPOLLHUP))) {
                finish(ep, c, C_FAILED, E_CONNECT);
                continue;
            }
            /* Quiet until the send: no wake-ups for writability. */
            struct epoll_event ev = {.events = 0, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            c->state = C_CONNECTED;
        }
    }
    for (unsigned i = 0; i < opt.clients; i++) {
        if (cl[i].state == C_CONNECTING) {
            finish(ep, &cl[i], C_FAILED, E_CONNECT);
        }
    }
    uint64_t connect_ns = now_ns() - t0;

    /* Phase 2: everyone sends, in one tight loop. */
    uint64_t t_send = now_ns();
    for (unsigned i = 0; i < opt.clients; i++) {
        struct client *c = &cl[i];
        if (c->state == C_CONNECTED) {
            c->t_send = now_ns();
            c->state = C_SENDING;
            c->in_flight = 1;
            active++;
            try_send(ep, c, &targets[c->target]);
        }
    }

    /* Phase 3: read every answer. */
    deadline = now_ns() + opt.timeout_ms * 1000000u;
    for (;;) {
        uint64_t now = now_ns();
        if (active == 0 || now >= deadline) {
            break;
        }
        int n = epoll_wait(ep, evs, 1024, (int)((deadline - now) / 1000000u) + 1);
        for (int k = 0; k < n; k++) {
            struct client *c = evs[k].data.ptr;
            if (c->fd < 0) {
                continue;
            }
            if (c->state == C_SENDING && (evs[k].events & EPOLLOUT)) {
                try_send(ep, c, &targets[c->target]);
            }
            if ((c->state == C_READING || c->state == C_SENDING) &&
                (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                on_readable(ep, c);
            }
        }
    }
    uint64_t wall_ns = now_ns() - t_send;
    for (unsigned i = 0; i < opt.clients; i++) {
        if (cl[i].in_flight) {
            finish(ep, &cl[i], C_FAILED, E_TIMEOUT);
        }
    }

    /* Report. */
    uint64_t *lat = calloc(opt.clients, sizeof(*lat));
    size_t nlat = 0;
    unsigned ok = 0, errors = 0, kinds[E_NKINDS] = {0};
    json_t *status = json_object();
    double sum = 0;
    for (unsigned i = 0; i < opt.clients; i++) {
        struct client *c = &cl[i];
        if (c->state != C_DONE) {
            errors++;
            kinds[c->err]++;
            continue;
        }
        lat[nlat++] = c->t_done - c->t_send;
        sum += (double)(c->t_done - c->t_send) / 1e6;
        ok += c->status >= 200 && c->status < 400;
        char code[16];
        snprintf(code, sizeof(code), "%d", c->status);
        json_t *v = json_object_get(status, code);
        json_object_set_new(status, code, json_integer(v ? json_integer_value(v) + 1 : 1));
    }
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    json_t *ek = json_object();
    for (int k = 1; k < E_NKINDS; k++) {
        if (kinds[k] > 0) {
            json_object_set_new(ek, ekind_name[k], json_integer(kinds[k]));
        }
    }
    json_t *hdrs = json_object();
    for (unsigned h = 0; h < opt.ncount; h++) {
        json_t *values = json_object();
        unsigned count = 0, longv = 0;
        for (unsigned i = 0; i < opt.clients; i++) {
            struct client *c = &cl[i];
            if (c->state != C_DONE || !c->seen[h]) {
                continue;
            }
            count++;
            if (c->val[h] == NULL) {
                longv++;
                continue;
            }
            json_t *v = json_object_get(values, c->val[h]);
            json_object_set_new(values, c->val[h], json_integer(v ? json_integer_value(v) + 1 : 1));
        }
        json_object_set_new(
            hdrs, opt.count[h],
            json_pack("{s:i,s:o,s:i}", "count", (int)count, "values", values, "long", (int)longv));
    }
    json_t *report = json_pack(
        "{s:i,s:i,s:i,s:i,s:o,s:o,s:{s:f,s:f,s:f,s:f,s:f,s:f},s:f,s:f,s:o}", "clients",
        (int)opt.clients, "responses", (int)nlat, "ok", (int)ok, "errors", (int)errors,
        "error_kinds", ek, "status", status, "latency_ms", "min", round3(quantile_ms(lat, nlat, 0)),
        "p50", round3(quantile_ms(lat, nlat, 0.5)), "p90", round3(quantile_ms(lat, nlat, 0.9)),
        "p99", round3(quantile_ms(lat, nlat, 0.99)), "max", round3(quantile_ms(lat, nlat, 1.0)),
        "mean", round3(nlat ? sum / (double)nlat : 0), "connect_ms",
        round3((double)connect_ns / 1e6), "wall_ms", round3((double)wall_ns / 1e6), "headers",
        hdrs);
    if (report == NULL) {
        return fail("%s", "cannot build the report");
    }
    json_dumpf(report, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    fputc('\n', stdout);
    json_decref(report);

    for (unsigned i = 0; i < opt.clients; i++) {
        for (unsigned h = 0; h < opt.ncount; h++) {
            free(cl[i].val[h]);
        }
    }
    for (unsigned i = 0; i < opt.nurls; i++) {
        free(targets[i].request);
    }
    free(lat);
    free(cl);
    free(evs);
    close(ep);
    return 0; /* errors are in the report */
}
