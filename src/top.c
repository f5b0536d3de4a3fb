/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache top: polls GET /stats (one HTTP/1.0 request per sample, with a
 * deadline) and shows rates computed from two consecutive samples:
 *
 *   sample(t-1) ─┐
 *                ├─▶ render(lines) ─▶ ncurses screen (refresh each interval, q quits)
 *   sample(t)   ─┘                 └▶ stdout once (-1, for scripts)
 *
 * Everything read from the server is untrusted text: a missing or odd field
 * shows as "-" and never stops the view.
 */
#include "src/top.h"

#include <curses.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef TC_VERSION
#define TC_VERSION "0.0.0"
#endif

#define TOP_MAX_RESPONSE (8u << 20) /* a /stats answer larger than this is refused */
#define TOP_TIMEOUT_MS   2000
#define TOP_LINE         256

struct top {
    char host[300];
    char port[16];
    char path[512]; /* .../stats */
    char auth[600]; /* "Authorization: Bearer ...\r\n" or "" */
    json_t *prev, *cur;
    double prev_t, cur_t;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_url(struct top *t, const char *url, char *err, size_t errlen)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strstr(p, "://") != NULL) {
        snprintf(err, errlen, "only http:// URLs are supported: '%s'", url);
        return -1;
    }
    const char *slash = strchr(p, '/');
    size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
    char hp[300];
    if (hostport == 0 || hostport >= sizeof(hp)) {
        snprintf(err, errlen, "bad URL '%s' (expected http://HOST:PORT)", url);
        return -1;
    }
    memcpy(hp, p, hostport);
    hp[hostport] = '\0';
    char *colon = hp[0] == '[' ? strstr(hp, "]:") : strrchr(hp, ':');
    if (hp[0] == '[') {
        char *close = strchr(hp, ']');
        if (close == NULL) {
            snprintf(err, errlen, "bad URL '%s'", url);
            return -1;
        }
        *close = '\0';
        snprintf(t->host, sizeof(t->host), "%s", hp + 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        if (colon != NULL) {
            *colon = '\0';
        }
        snprintf(t->host, sizeof(t->host), "%s", hp);
    }
    snprintf(t->port, sizeof(t->port), "%s", colon != NULL ? colon + 1 : "80");
    const char *base = slash ? slash : "";
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/') {
        blen--;
    }
    if (blen > 400) {
        snprintf(err, errlen, "URL path too long");
        return -1;
    }
    snprintf(t->path, sizeof(t->path), "%.*s/stats", (int)blen, base);
    return 0;
}

static int read_token(struct top *t, const char *file, char *err, size_t errlen)
{
    FILE *fp = fopen(file, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "cannot read token file '%s': %s", file, strerror(errno));
        return -1;
    }
    char tok[512];
    size_t n = fread(tok, 1, sizeof(tok) - 1, fp);
    fclose(fp);
    tok[n] = '\0';
    while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ')) {
        tok[--n] = '\0';
    }
    if (n == 0 || strpbrk(tok, "\r\n") != NULL) {
        snprintf(err, errlen, "token file '%s' holds no single-line token", file);
        return -1;
    }
    snprintf(t->auth, sizeof(t->auth), "Authorization: Bearer %s\r\n", tok);
    return 0;
}

/* Waits for @p events on @p fd until @p deadline (mono_s); 0 when ready. */
static int wait_fd(int fd, short events, double deadline)
{
    double left = deadline - mono_s();
    if (left <= 0) {
        return -1;
    }
    struct pollfd pfd = {fd, events, 0};
    return poll(&pfd, 1, (int)(left * 1000) + 1) == 1 ? 0 : -1;
}

/* One GET of /stats; the parsed body, or NULL with the reason in err. */
static json_t *fetch(struct top *t, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(t->host, t->port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s:%s: %s", t->host, t->port, gai_strerror(rc));
        return NULL;
    }
    double deadline = mono_s() + TOP_TIMEOUT_MS / 1000.0;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    char *buf = NULL;
    json_t *j = NULL;
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        goto out;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect to %s:%s: %s", t->host, t->port, strerror(errno));
        goto out;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (wait_fd(fd, POLLOUT, deadline) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        snprintf(err, errlen, "connect to %s:%s: %s", t->host, t->port,
                 soerr ? strerror(soerr) : "timed out");
        goto out;
    }
    char req[1400];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.0\r\nHost: %s\r\n%sAccept: application/json\r\n\r\n", t->path,
                     t->host, t->auth);
    if (n < 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        snprintf(err, errlen, "send to %s:%s failed", t->host, t->port);
        goto out;
    }
    size_t len = 0, cap = 65536;
    buf = malloc(cap + 1);
    while (buf != NULL) {
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            snprintf(err, errlen, "no complete answer from %s:%s within %d ms", t->host, t->port,
                     TOP_TIMEOUT_MS);
            goto out;
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r == 0) {
            break;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            snprintf(err, errlen, "recv: %s", strerror(errno));
            goto out;
        }
        len += (size_t)r;
        if (len == cap) {
            if (cap >= TOP_MAX_RESPONSE) {
                snprintf(err, errlen, "answer larger than %u bytes", TOP_MAX_RESPONSE);
                goto out;
            }
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    buf[len] = '\0';
    int status = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || body == NULL) {
        snprintf(err, errlen, "not an HTTP answer from %s:%s", t->host, t->port);
        goto out;
    }
    if (status != 200) {
        snprintf(err, errlen, "GET %.200s: HTTP %d%s", t->path, status,
                 status == 401 || status == 403 ? " (give a token: --token-file FILE)" : "");
        goto out;
    }
    json_error_t je;
    j = json_loads(body + 4, 0, &je);
    if (j == NULL || !json_is_object(j)) {
        snprintf(err, errlen, "GET %.200s: not a JSON object: %s", t->path, je.text);
        json_decref(j);
        j = NULL;
    }
out:
    free(buf);
    if (fd >= 0) {
        close(fd);
    }
    freeaddrinfo(ai);
    return j;
}

/* A number at a path of object keys ("a", "b", NULL); -1 when absent. */
static double num(const json_t *o, ...)
{
    va_list ap;
    va_start(ap, o);
    const char *k;
    while (o != NULL && (k = va_arg(ap, const char *)) != NULL) {
        o = json_object_get(o, k);
    }
    va_end(ap);
    return json_is_number(o) ? json_number_value(o) : -1;
}

/* The per-second rate of a counter between the two samples, or -1. */
static double rate(double now, double before, double dt)
{
    if (now < 0 || before < 0 || dt <= 0 || now < before) {
        return -1;
    }
    return (now - before) / dt;
}

static void fmt_num(char *out, size_t len, double v)
{
    if (v < 0) {
        snprintf(out, len, "-");
    } else if (v >= 1e9) {
        snprintf(out, len, "%.1fG", v / 1e9);
    } else if (v >= 1e6) {
        snprintf(out, len, "%.1fM", v / 1e6);
    } else if (v >= 1e4) {
        snprintf(out, len, "%.1fk", v / 1e3);
    } else {
        snprintf(out, len, "%.0f", v);
    }
}

static void fmt_ns(char *out, size_t len, double ns)
{
    if (ns < 0) {
        snprintf(out, len, "-");
    } else if (ns >= 1e9) {
        snprintf(out, len, "%.2fs", ns / 1e9);
    } else if (ns >= 1e6) {
        snprintf(out, len, "%.2fms", ns / 1e6);
    } else {
        snprintf(out, len, "%.0fus", ns / 1e3);
    }
}

typedef void (*emit_fn)(void *arg, int bold, const char *fmt, ...);

/* The view, as lines; shared by the screen and -1. */
static void render(struct top *t, const char *url, emit_fn emit, void *arg)
{
    const json_t *c = t->cur, *p = t->prev;
    double dt = t->cur_t - t->prev_t;
    char a[32], b[32], d[32], e[32], f[32], g[32];
    const json_t *ver = json_object_get(c, "version");
    fmt_num(a, sizeof(a),
            rate(num(c, "requests", "total", NULL), num(p, "requests", "total", NULL), dt));
    emit(arg, 1, "tiercache %s at %s   up %.0fs   workers %.0f   requests/s %s",
         json_is_string(ver) ? json_string_value(ver) : "?", url, num(c, "uptime_s", NULL),
         num(c, "workers", NULL), a);
    fmt_num(a, sizeof(a), num(c, "connections", "active", NULL));
    fmt_num(
        b, sizeof(b),
        rate(num(c, "connections", "accepted", NULL), num(p, "connections", "accepted", NULL), dt));
    fmt_num(d, sizeof(d), num(c, "connections", "refused", NULL));
    emit(arg, 0, "connections: active %s   accepted/s %s   refused %s", a, b, d);
    emit(arg, 0, "");
    emit(arg, 1, "%-4s %-8s %9s %7s %9s %9s %10s %8s", "TIER", "HEALTH", "OPS/S", "HIT%", "P50",
         "P99", "EVICTIONS", "ERRORS");
    const json_t *tiers = json_object_get(c, "tiers"), *ptiers = json_object_get(p, "tiers");
    for (size_t i = 0; i < json_array_size(tiers) && i < 16; i++) {
        const json_t *ti = json_array_get(tiers, i), *pi = json_array_get(ptiers, i);
        const json_t *name = json_object_get(ti, "tier"), *health = json_object_get(ti, "health");
        double ops = 0, pops = 0;
        static const char *const opnames[] = {"gets", "sets", "deletes"};
        for (int k = 0; k < 3; k++) {
            ops += num(ti, opnames[k], NULL) > 0 ? num(ti, opnames[k], NULL) : 0;
            pops += num(pi, opnames[k], NULL) > 0 ? num(pi, opnames[k], NULL) : 0;
        }
        double dg = num(ti, "gets", NULL) - num(pi, "gets", NULL);
        double dh = num(ti, "hits", NULL) - num(pi, "hits", NULL);
        fmt_num(a, sizeof(a), pi != NULL ? rate(ops, pops, dt) : -1);
        if (pi != NULL && dg > 0 && dh >= 0) {
            snprintf(b, sizeof(b), "%.1f", 100.0 * dh / dg);
        } else {
            snprintf(b, sizeof(b), "-");
        }
        fmt_ns(d, sizeof(d), num(ti, "latency", "get", "p50_ns", NULL));
        fmt_ns(e, sizeof(e), num(ti, "latency", "get", "p99_ns", NULL));
        fmt_num(f, sizeof(f), num(ti, "segment", "evictions", NULL));
        fmt_num(g, sizeof(g), num(ti, "errors", NULL));
        emit(arg, 0, "%-4s %-8s %9s %7s %9s %9s %10s %8s",
             json_is_string(name) ? json_string_value(name) : "?",
             json_is_string(health) ? json_string_value(health) : "?", a, b, d, e, f, g);
    }
    emit(arg, 0, "");
    char line[TOP_LINE];
    size_t n = (size_t)snprintf(line, sizeof(line), "requests by status:");
    const char *code;
    const json_t *v;
    const json_t *bys = json_object_get(json_object_get(c, "requests"), "by_status");
    const json_t *pbys = json_object_get(json_object_get(p, "requests"), "by_status");
    json_object_foreach((json_t *)bys, code, v)
    {
        const json_t *pv = json_object_get(pbys, code);
        fmt_num(a, sizeof(a), json_number_value(v));
        fmt_num(b, sizeof(b),
                rate(json_number_value(v), pv != NULL ? json_number_value(pv) : 0, dt));
        if (n < sizeof(line)) {
            n += (size_t)snprintf(line + n, sizeof(line) - n, "  %.4s %s (%s/s)", code, a, b);
        }
    }
    emit(arg, 0, "%s", line);
    fmt_num(a, sizeof(a), num(c, "cache", "misses", NULL));
    emit(arg, 0, "cache misses: %s", a);
    const json_t *dog = json_object_get(c, "dogpile");
    const json_t *scope = json_object_get(dog, "scope");
    fmt_num(a, sizeof(a), num(dog, "acquired", NULL));
    fmt_num(b, sizeof(b), num(dog, "waits", NULL));
    fmt_num(d, sizeof(d), num(dog, "timeouts", NULL));
    fmt_num(e, sizeof(e), num(dog, "stale_served", NULL));
    fmt_num(f, sizeof(f), num(dog, "origin_fetches", NULL));
    emit(arg, 0,
         "dogpile (%s): locks %s  waits %s  timeouts %s  stale served %s  origin fetches %s",
         json_is_string(scope) ? json_string_value(scope) : "?", a, b, d, e, f);
}

static void emit_stdout(void *arg, int bold, const char *fmt, ...)
{
    (void)arg;
    (void)bold;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static void emit_screen(void *arg, int bold, const char *fmt, ...)
{
    int *row = arg;
    char line[TOP_LINE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (bold) {
        attron(A_BOLD);
    }
    mvaddnstr((*row)++, 0, line, COLS > 0 ? COLS : 80);
    if (bold) {
        attroff(A_BOLD);
    }
}

/* Takes a sample: the newest becomes the previous one. */
static int sample(struct top *t, char *err, size_t errlen)
{
    json_t *j = fetch(t, err, errlen);
    if (j == NULL) {
        return -1;
    }
    json_decref(t->prev);
    t->prev = t->cur;
    t->prev_t = t->cur_t;
    t->cur = j;
    t->cur_t = mono_s();
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: tiercache top [-1] [-i SECONDS] [--token-file FILE] [URL]\n\n"
                 "A live view of a running tiercache (GET URL/stats), refreshed each interval;\n"
                 "q quits. URL defaults to http://127.0.0.1:8080.\n\n"
                 "  -1, --once            print one text snapshot (rates over one interval), exit\n"
                 "  -i, --interval SECS   seconds between samples (default 1; 0.1 to 60)\n"
                 "      --token-file FILE send the token in FILE as a Bearer token\n"
                 "  -h, --help            show this help\n"
                 "  -V, --version         print the version\n");
}

int tc_top_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"once", no_argument, NULL, '1'},
        {"interval", required_argument, NULL, 'i'},
        {"token-file", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct top t;
    memset(&t, 0, sizeof(t));
    int once = 0, opt;
    double interval = 1.0;
    const char *token_file = NULL;
    char err[512];
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":1i:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case '1':
            once = 1;
            break;
        case 'i': {
            char *end;
            interval = strtod(optarg, &end);
            if (*end != '\0' || !(interval >= 0.1 && interval <= 60)) {
                fprintf(stderr, "tiercache top: bad interval '%s' (0.1 to 60 seconds)\n", optarg);
                return 2;
            }
            break;
        }
        case 'T':
            token_file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("tiercache top %s\n", TC_VERSION);
            return 0;
        default:
            fprintf(stderr, "tiercache top: bad option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "tiercache top: one URL at most (see --help)\n");
        return 2;
    }
    const char *url = optind < argc ? argv[optind] : "http://127.0.0.1:8080";
    if (parse_url(&t, url, err, sizeof(err)) != 0 ||
        (token_file != NULL && read_token(&t, token_file, err, sizeof(err)) != 0)) {
        fprintf(stderr, "tiercache top: %s\n", err);
        return 2;
    }
    struct timespec iv = {(time_t)interval, (long)((interval - (double)(time_t)interval) * 1e9)};
    if (sample(&t, err, sizeof(err)) != 0) {
        fprintf(stderr, "tiercache top: %s\n", err);
        return 1;
    }
    if (once) {
        nanosleep(&iv, NULL);
        int rc = sample(&t, err, sizeof(err));
        if (rc == 0) {
            render(&t, url, emit_stdout, NULL);
        } else {
            fprintf(stderr, "tiercache top: %s\n", err);
        }
        json_decref(t.prev);
        json_decref(t.cur);
        return rc == 0 ? 0 : 1;
    }
    initscr();
    cbreak();
    noecho();
    curs_set(0);
    timeout((int)(interval * 1000));
    int rc = 0;
    err[0] = '\0';
    for (;;) {
        int row = 0;
        erase();
        render(&t, url, emit_screen, &row);
        row++;
        attron(A_DIM);
        mvaddstr(row, 0, "q: quit");
        attroff(A_DIM);
        if (err[0] != '\0') {
            mvaddnstr(row + 1, 0, err, COLS > 0 ? COLS : 80);
        }
        refresh();
        int ch = getch();
        if (ch == 'q' || ch == 'Q') {
            break;
        }
        if (sample(&t, err, sizeof(err)) == 0) {
            err[0] = '\0'; /* a server that went away is shown, and retried */
        }
    }
    endwin();
    json_decref(t.prev);
    json_decref(t.cur);
    return rc;
}
