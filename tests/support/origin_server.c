/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tc-test-origin: a small configurable origin server for the tests and the
 * dogpile bench, on libevent's evhttp server (one thread, one event_base).
 *
 *   tc-test-origin --listen 127.0.0.1:0 [--delay-ms N] [--status N]
 *                  [--cache-control STR] [--content-type STR] [--body STR]
 *                  [--body-size N] [--chunked]
 *
 * Prints "listening on HOST:PORT" on stdout once it accepts. Every request
 * except the control endpoints is counted and answered, after --delay-ms
 * (a timer, so hundreds of requests wait at once), with --status, the
 * configured headers and --body (default "value of <path>", the raw path of
 * the request target; --body-size N: N bytes of 'x'; --chunked: sent with
 * chunked transfer encoding).
 *
 * Control endpoints (not counted):
 *   GET  /__stats   {"requests":N,"inflight":M}
 *   GET  /__last    {"path":..,"target":..,"host":..,"user_agent":..} of the last
 *                   counted request (target: the raw request target, query included)
 *   POST /__reset   zeroes the counter
 *   POST /__config?delay_ms=&status=&cache_control=&content_type=&body=&body_size=&chunked=
 *                   changes the behaviour for the requests that follow
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

struct origin {
    struct event_base *base;
    struct evhttp *http;
    /* behaviour */
    unsigned delay_ms;
    int status;
    char *cache_control; /* NULL or "": none */
    char *content_type;
    char *body;     /* NULL: "value of <path>" */
    long body_size; /* >= 0: that many 'x' instead */
    int chunked;
    /* counters */
    uint64_t requests;
    uint64_t inflight;
    char *last_path, *last_target, *last_host, *last_ua;
    struct pending *waiting; /* delayed answers, freed at exit */
};

struct pending {
    struct pending *prev, *next;
    struct origin *o;
    struct evhttp_request *req;
    struct event *timer;
    /* the behaviour when the request arrived */
    int status;
    char *cache_control, *content_type, *body;
    long body_size;
    int chunked;
};

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

static char *xstrdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        fprintf(stderr, "tc-test-origin: out of memory\n");
        exit(1);
    }
    return d;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = xstrdup(v);
}

static void send_json(struct evhttp_request *req, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, s, strlen(s));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, reason(status), b);
    evbuffer_free(b);
    free(s);
    json_decref(j);
}

/* The raw path of the request target (up to '?'), malloc'd. */
static char *raw_path(struct evhttp_request *req)
{
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strcspn(uri, "?");
    char *p = malloc(n + 1);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, uri, n);
    p[n] = '\0';
    return p;
}

static void pending_free(struct pending *p)
{
    struct origin *o = p->o;
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else if (o->waiting == p) {
        o->waiting = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
    if (p->timer != NULL) {
        event_free(p->timer);
    }
    free(p->cache_control);
    free(p->content_type);
    free(p->body);
    free(p);
}

static void answer(struct pending *p)
{
    struct origin *o = p->o;
    struct evhttp_request *req = p->req;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    if (p->body_size >= 0) {
        char chunk[4096];
        memset(chunk, 'x', sizeof(chunk));
        for (long left = p->body_size; left > 0; left -= (long)sizeof(chunk)) {
            evbuffer_add(b, chunk, left < (long)sizeof(chunk) ? (size_t)left : sizeof(chunk));
        }
    } else if (p->body != NULL) {
        evbuffer_add(b, p->body, strlen(p->body));
    } else {
        char *path = raw_path(req);
        evbuffer_add_printf(b, "value of %s", path != NULL ? path : "?");
        free(path);
    }
    evhttp_add_header(out, "Content-Type", p->content_type);
    if (p->cache_control != NULL && p->cache_control[0] != '\0') {
        evhttp_add_header(out, "Cache-Control", p->cache_control);
    }
    if (p->chunked) {
        evhttp_send_reply_start(req, p->status, reason(p->status));
        evhttp_send_reply_chunk(req, b);
        evhttp_send_reply_end(req);
    } else {
        /* If the client went away meanwhile, evhttp detached req from its
         * connection and this only frees it. */
        evhttp_send_reply(req, p->status, reason(p->status), b);
    }
    evbuffer_free(b);
    o->inflight--;
    pending_free(p);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    answer(arg);
}

static int parse_uint(const char *s, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int configure(struct origin *o, const char *key, const char *val)
{
    long v;
    if (strcmp(key, "delay_ms") == 0 || strcmp(key, "delay-ms") == 0) {
        if (parse_uint(val, 3600000, &v) != 0) {
            return -1;
        }
        o->delay_ms = (unsigned)v;
    } else if (strcmp(key, "status") == 0) {
        if (parse_uint(val, 999, &v) != 0 || v < 100) {
            return -1;
        }
        o->status = (int)v;
    } else if (strcmp(key, "cache_control") == 0 || strcmp(key, "cache-control") == 0) {
        set_str(&o->cache_control, val);
    } else if (strcmp(key, "content_type") == 0 || strcmp(key, "content-type") == 0) {
        set_str(&o->content_type, val);
    } else if (strcmp(key, "body") == 0) {
        set_str(&o->body, val);
        o->body_size = -1;
    } else if (strcmp(key, "body_size") == 0 || strcmp(key, "body-size") == 0) {
        if (parse_uint(val, 1L << 30, &v) != 0) {
            return -1;
        }
        o->body_size = v;
    } else if (strcmp(key, "chunked") == 0) {
        o->chunked = strcmp(val, "0") != 0;
    } else {
        return -1;
    }
    return 0;
}

static void control(struct origin *o, struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (strcmp(path, "/__stats") == 0 && m == EVHTTP_REQ_GET) {
        send_json(req, 200,
                  json_pack("{s:I,s:I}", "requests", (json_int_t)o->requests, "inflight",
                            (json_int_t)o->inflight));
    } else if (strcmp(path, "/__last") == 0 && m == EVHTTP_REQ_GET) {
        send_json(req, 200,
                  json_pack("{s:s?,s:s?,s:s?,s:s?}", "path", o->last_path, "target", o->last_target,
                            "host", o->last_host, "user_agent", o->last_ua));
    } else if (strcmp(path, "/__reset") == 0 && m == EVHTTP_REQ_POST) {
        o->requests = 0;
        send_json(req, 200, json_pack("{s:b}", "ok", 1));
    } else if (strcmp(path, "/__config") == 0 && m == EVHTTP_REQ_POST) {
        const char *uri = evhttp_request_get_uri(req);
        const char *q = strchr(uri, '?');
        struct evkeyvalq args;
        args.tqh_first = NULL; /* TAILQ_INIT without sys/queue.h */
        args.tqh_last = &args.tqh_first;
        if (q != NULL && evhttp_parse_query_str(q + 1, &args) != 0) {
            send_json(req, 400, json_pack("{s:s}", "error", "bad query"));
            return;
        }
        for (struct evkeyval *kv = args.tqh_first; kv != NULL; kv = kv->next.tqe_next) {
            if (configure(o, kv->key, kv->value) != 0) {
                json_t *e = json_pack("{s:s,s:s}", "error", "bad setting", "name", kv->key);
                evhttp_clear_headers(&args);
                send_json(req, 400, e);
                return;
            }
        }
        evhttp_clear_headers(&args);
        send_json(req, 200, json_pack("{s:b}", "ok", 1));
    } else {
        send_json(req, 405, json_pack("{s:s}", "error", "method not allowed"));
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct origin *o = arg;
    char *path = raw_path(req);
    if (path == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    if (strncmp(path, "/__", 3) == 0) {
        control(o, req, path);
        free(path);
        return;
    }
    o->requests++;
    o->inflight++;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    free(o->last_path);
    o->last_path = path;
    set_str(&o->last_target, evhttp_request_get_uri(req));
    set_str(&o->last_host, evhttp_find_header(in, "Host"));
    set_str(&o->last_ua, evhttp_find_header(in, "User-Agent"));

    struct pending *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        o->inflight--;
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    p->o = o;
    p->req = req;
    p->status = o->status;
    p->cache_control = xstrdup(o->cache_control);
    p->content_type = xstrdup(o->content_type);
    p->body = xstrdup(o->body);
    p->body_size = o->body_size;
    p->chunked = o->chunked;
    if (o->delay_ms == 0) {
        answer(p);
        return;
    }
    p->next = o->waiting;
    if (o->waiting != NULL) {
        o->waiting->prev = p;
    }
    o->waiting = p;
    p->timer = evtimer_new(o->base, on_timer, p);
    struct timeval tv = {(time_t)(o->delay_ms / 1000), (suseconds_t)(o->delay_ms % 1000) * 1000};
    if (p->timer == NULL || evtimer_add(p->timer, &tv) != 0) {
        answer(p);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    event_base_loopexit(arg, NULL);
}

static void usage(void)
{
    fprintf(stderr, "Usage: tc-test-origin --listen HOST:PORT [--delay-ms N] [--status N]\n"
                    "         [--cache-control STR] [--content-type STR] [--body STR]\n"
                    "         [--body-size N] [--chunked]\n");
}

/* A listening socket with a deep backlog: evhttp_bind_socket listens with
 * 128, and a burst of hundreds of connects would see SYNs dropped. */
static int listen_on(const char *spec, unsigned *port_out, char *host, size_t hostlen)
{
    const char *colon = strrchr(spec, ':');
    long port;
    if (colon == NULL || (size_t)(colon - spec) >= hostlen ||
        parse_uint(colon + 1, 65535, &port) != 0) {
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t sl = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("tc-test-origin: bind/listen");
        close(fd);
        return -1;
    }
    *port_out = ntohs(sa.sin_port);
    return fd;
}

int main(int argc, char **argv)
{
    struct origin o = {0};
    const char *listen_spec = NULL;
    o.status = 200;
    o.content_type = xstrdup("text/plain");
    o.body_size = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--chunked") == 0) {
            o.chunked = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        }
        if (i + 1 >= argc || strncmp(a, "--", 2) != 0) {
            usage();
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--listen") == 0) {
            listen_spec = v;
        } else if (configure(&o, a + 2, v) != 0) {
            fprintf(stderr, "tc-test-origin: bad option %s %s\n", a, v);
            usage();
            return 2;
        }
    }
    if (listen_spec == NULL) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    char host[64];
    unsigned port = 0;
    int fd = listen_on(listen_spec, &port, host, sizeof(host));
    if (fd < 0) {
        fprintf(stderr, "tc-test-origin: cannot listen on %s (want IPv4:PORT)\n", listen_spec);
        return 1;
    }
    o.base = event_base_new();
    o.http = o.base != NULL ? evhttp_new(o.base) : NULL;
    if (o.http == NULL || evhttp_accept_socket_with_handle(o.http, fd) == NULL) {
        fprintf(stderr, "tc-test-origin: cannot start the HTTP server\n");
        return 1;
    }
    evhttp_set_allowed_methods(o.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_timeout(o.http, 120);
    evhttp_set_gencb(o.http, on_request, &o);
    struct event *sig_term = evsignal_new(o.base, SIGTERM, on_signal, o.base);
    struct event *sig_int = evsignal_new(o.base, SIGINT, on_signal, o.base);
    event_add(sig_term, NULL);
    event_add(sig_int, NULL);

    printf("listening on %s:%u\n", host, port);
    fflush(stdout);
    event_base_dispatch(o.base);

    event_free(sig_term);
    event_free(sig_int);
    while (o.waiting != NULL) {
        pending_free(o.waiting); /* evhttp_free frees their requests */
    }
    evhttp_free(o.http);
    event_base_free(o.base);
    free(o.cache_control);
    free(o.content_type);
    free(o.body);
    free(o.last_path);
    free(o.last_target);
    free(o.last_host);
    free(o.last_ua);
    return 0;
}
