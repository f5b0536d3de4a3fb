/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * One connection to Redis, on one event_base: a non-blocking socket we read
 * and write ourselves, hiredis' redisReader to parse what comes back, and in
 * front of it a framing scanner that enforces struct tc_redis_limits.
 *
 *   socket ──read()──▶ tc_redis_scan_feed ──bytes in bounds──▶ redisReader
 *                          │ a bound crossed                        │ complete reply
 *                          ▼                                        ▼
 *                      on_lost(protocol)                       on_reply(r)
 *
 * The scanner follows RESP's framing only: a type byte, a line ending in
 * CRLF, and for "$N" N payload bytes and a CRLF, for "*N" N nested values.
 * A "$N" or "*N" beyond the limits is refused when its line ends, before a
 * byte of what it announces is read; so no reply, however it lies about its
 * size, makes us buffer more than reply_max. hiredis sees only bytes the
 * scanner passed, and reads the same framing (its lines end at the first
 * CRLF, as ours do), so both agree on where each reply ends.
 *
 * Writes use send(MSG_NOSIGNAL): a server that closed its end must not kill
 * the process with SIGPIPE.
 */
/* TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT are Linux names that strict
 * POSIX hides; the subscriber needs them (below). */
#define _GNU_SOURCE
#include "tiers/redis_impl.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { SCAN_TYPE = 0, SCAN_LINE, SCAN_BULK };

/* Longest line of a length or an integer: "-9223372036854775808". */
#define NUM_LINE_MAX 20
/* Bytes read per read(): one turn of the loop per this much of a reply. */
#define READ_CHUNK 32768

/* ---- the framing scanner ------------------------------------------------------ */

void tc_redis_scan_reset(struct tc_redis_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->state = SCAN_TYPE;
}

/* A value ended: finished arrays close with it; at depth 0 the reply ends. */
static void scan_value_done(struct tc_redis_scan *s)
{
    s->state = SCAN_TYPE;
    while (s->depth > 0) {
        if (--s->left[s->depth - 1] > 0) {
            return;
        }
        s->depth--;
    }
    s->elems = 0;
    s->bytes = 0;
}

/* A number line: "-1" (a nil) when @p nil_ok, else an optional '-' (when
 * @p neg_ok) and 1..19 digits within int64. Returns 0 if malformed. */
static int scan_number(const char *num, size_t len, int neg_ok, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (len > 0 && num[0] == '-') {
        if (!neg_ok) {
            return 0;
        }
        neg = 1;
        i = 1;
    }
    if (i == len || len - i > 19) {
        return 0;
    }
    uint64_t v = 0;
    for (; i < len; i++) {
        if (num[i] < '0' || num[i] > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(num[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) {
        return 0;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 1;
}

/* The line of type s->type ended (its CRLF consumed). NULL, or why not. */
static const char *scan_line_done(struct tc_redis_scan *s, const struct tc_redis_limits *lim)
{
    int64_t v;
    switch (s->type) {
    case '+':
    case '-':
        scan_value_done(s);
        return NULL;
    case ':':
        if (!scan_number(s->num, s->linelen, 1, &v)) {
            return "malformed integer reply";
        }
        scan_value_done(s);
        return NULL;
    case '$':
        if (!scan_number(s->num, s->linelen, 1, &v) || v < -1) {
            return "malformed bulk length";
        }
        if (v == -1) {
            scan_value_done(s);
            return NULL;
        }
        if ((uint64_t)v > lim->bulk_max || s->bytes + (uint64_t)v + 2 > lim->reply_max) {
            return "a bulk reply longer than the tier accepts (max_item plus the item header)";
        }
        s->bulk_left = (uint64_t)v + 2;
        s->state = SCAN_BULK;
        return NULL;
    case '*':
        if (!scan_number(s->num, s->linelen, 1, &v) || v < -1) {
            return "malformed array length";
        }
        if (v <= 0) {
            scan_value_done(s); /* nil or empty */
            return NULL;
        }
        if ((uint64_t)v > lim->array_max || s->elems + (uint64_t)v > lim->elems_max) {
            return "an array reply with more elements than any reply of ours has";
        }
        if (s->depth == TC_REDIS_DEPTH_MAX) {
            return "array replies nested too deep";
        }
        s->elems += (uint64_t)v;
        s->left[s->depth++] = (uint64_t)v;
        s->state = SCAN_TYPE;
        return NULL;
    }
    return "bad reply type";
}

const char *tc_redis_scan_feed(struct tc_redis_scan *s, const struct tc_redis_limits *lim,
                               const char *p, size_t n, size_t *ok)
{
    size_t i = 0;
    const char *why = NULL;
    while (i < n) {
        if (s->state == SCAN_BULK) {
            /* The payload is not looked at; its CRLF is, so that garbage
             * after it cannot pass as the next reply. */
            if (s->bulk_left > 2) {
                uint64_t take = s->bulk_left - 2;
                if (take > n - i) {
                    take = n - i;
                }
                i += (size_t)take;
                s->bytes += take;
                s->bulk_left -= take;
                continue;
            }
            char want = s->bulk_left == 2 ? '\r' : '\n';
            if (p[i] != want) {
                why = "bulk reply not followed by CRLF";
                break;
            }
            i++;
            s->bytes++;
            if (--s->bulk_left == 0) {
                scan_value_done(s);
            }
            continue;
        }
        if (++s->bytes > lim->reply_max) {
            why = "a reply longer than the tier accepts";
            break;
        }
        char ch = p[i];
        if (s->state == SCAN_TYPE) {
            if (ch != '+' && ch != '-' && ch != ':' && ch != '$' && ch != '*') {
                why = "bytes that are not a reply (bad type byte)";
                break;
            }
            s->type = ch;
            s->linelen = 0;
            s->cr = 0;
            s->state = SCAN_LINE;
            i++;
            continue;
        }
        /* SCAN_LINE: ends at the first CRLF, as hiredis reads it. */
        if (ch == '\n' && s->cr) {
            s->linelen--; /* the '\r' */
            if ((why = scan_line_done(s, lim)) != NULL) {
                break;
            }
            i++;
            continue;
        }
        s->cr = ch == '\r';
        int num = s->type != '+' && s->type != '-';
        if (num) {
            if (s->linelen >= NUM_LINE_MAX + 1) { /* + the '\r' */
                why = "a length or integer line that is too long";
                break;
            }
            s->num[s->linelen] = ch;
        } else if (s->linelen >= lim->line_max + 1) {
            why = "a status or error line longer than the tier accepts";
            break;
        }
        s->linelen++;
        i++;
    }
    *ok = i;
    return why;
}

/* ---- the socket ------------------------------------------------------------------ */

static void io_read_cb(evutil_socket_t fd, short what, void *arg);
static void io_write_cb(evutil_socket_t fd, short what, void *arg);

enum tc_status tc_redis_io_init(struct tc_redis_io *io, struct event_base *base,
                                const struct tc_redis_limits *lim, tc_redis_reply_fn on_reply,
                                tc_redis_lost_fn on_lost, void *arg)
{
    memset(io, 0, sizeof(*io));
    io->base = base;
    io->lim = lim;
    io->on_reply = on_reply;
    io->on_lost = on_lost;
    io->arg = arg;
    io->fd = -1;
    if ((io->out = evbuffer_new()) == NULL) {
        return TC_ENOMEM;
    }
    return TC_OK;
}

void tc_redis_io_close(struct tc_redis_io *io)
{
    if (io->fd < 0) {
        return;
    }
    event_free(io->rev);
    event_free(io->wev);
    io->rev = io->wev = NULL;
    close(io->fd);
    io->fd = -1;
    io->connecting = 0;
    io->gen++;
    evbuffer_drain(io->out, evbuffer_get_length(io->out));
    redisReaderFree(io->reader);
    io->reader = NULL;
}

void tc_redis_io_deinit(struct tc_redis_io *io)
{
    tc_redis_io_close(io);
    if (io->out != NULL) {
        evbuffer_free(io->out);
        io->out = NULL;
    }
}

int tc_redis_io_is_open(const struct tc_redis_io *io)
{
    return io->fd >= 0;
}

/* The connection failed by itself: closed, then the owner hears why. */
static void io_lost(struct tc_redis_io *io, int protocol, const char *why)
{
    tc_redis_io_close(io);
    io->on_lost(io->arg, protocol, why);
}

static void set_sockopts(int fd, int tcp, int keepalive)
{
    int one = 1;
    if (!tcp) {
        return; /* TCP options fail on a unix socket */
    }
    /* Requests are small and latency-bound: no Nagle delay. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (keepalive) {
        /* The subscriber only reads: keepalive notices a peer host that
         * vanished (as hiredis' redisEnableKeepAlive did, 15 s). */
        int idle = 15, intvl = 5, cnt = 3;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
}

enum tc_status tc_redis_io_open(struct tc_redis_io *io, const struct sockaddr *sa, socklen_t len,
                                char *why, size_t whylen)
{
    tc_redis_io_close(io);
    int fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        return TC_EUNAVAIL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        snprintf(why, whylen, "fcntl: %s", strerror(errno));
        close(fd);
        return TC_EUNAVAIL;
    }
    set_sockopts(fd, sa->sa_family != AF_UNIX, io->keepalive);
    int connecting = 0;
    if (connect(fd, sa, len) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(why, whylen, "%s", strerror(errno));
            close(fd);
            return TC_EUNAVAIL;
        }
        connecting = 1;
    }
    io->rev = event_new(io->base, fd, EV_READ | EV_PERSIST, io_read_cb, io);
    io->wev = event_new(io->base, fd, EV_WRITE, io_write_cb, io);
    io->reader = redisReaderCreate();
    if (io->rev == NULL || io->wev == NULL || io->reader == NULL) {
        if (io->rev != NULL) {
            event_free(io->rev);
        }
        if (io->wev != NULL) {
            event_free(io->wev);
        }
        redisReaderFree(io->reader);
        io->rev = io->wev = NULL;
        io->reader = NULL;
        close(fd);
        snprintf(why, whylen, "out of memory");
        return TC_ENOMEM;
    }
    io->fd = fd;
    io->gen++;
    io->connecting = connecting;
    tc_redis_scan_reset(&io->scan);
    /* Connecting: writable means done (or failed); then reading starts. */
    event_add(connecting ? io->wev : io->rev, NULL);
    return TC_OK;
}

/* Writes what it can now; 0, or -1 with the connection lost. */
static int io_write_now(struct tc_redis_io *io)
{
    while (evbuffer_get_length(io->out) > 0) {
        struct evbuffer_iovec v[16];
        struct iovec iov[16];
        int n = evbuffer_peek(io->out, -1, NULL, v, 16);
        if (n > 16) {
            n = 16;
        }
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        struct msghdr m;
        memset(&m, 0, sizeof(m));
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(io->fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            char why[128];
            snprintf(why, sizeof(why), "send: %s", strerror(errno));
            io_lost(io, 0, why);
            return -1;
        }
        evbuffer_drain(io->out, (size_t)w);
    }
    if (evbuffer_get_length(io->out) > 0) {
        event_add(io->wev, NULL);
    }
    return 0;
}

static void io_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_redis_io *io = arg;
    (void)what;
    if (io->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err != 0) {
            char why[128];
            snprintf(why, sizeof(why), "connect: %s", strerror(err));
            io_lost(io, 0, why);
            return;
        }
        io->connecting = 0;
        event_add(io->rev, NULL);
    }
    io_write_now(io);
}

static void free_command(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    redisFreeCommand((char *)data);
}

enum tc_status tc_redis_io_send(struct tc_redis_io *io, int argc, const char **argv,
                                const size_t *argvlen)
{
    if (io->fd < 0) {
        return TC_EUNAVAIL;
    }
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0 || cmd == NULL) {
        return TC_ENOMEM;
    }
    /* By reference: a 1 MB value is not copied once more. */
    if (evbuffer_add_reference(io->out, cmd, (size_t)len, free_command, NULL) != 0) {
        redisFreeCommand(cmd);
        return TC_ENOMEM;
    }
    if (!io->connecting) {
        event_add(io->wev, NULL);
    }
    return TC_OK;
}

void tc_redis_io_flush(struct tc_redis_io *io)
{
    if (io->fd >= 0 && !io->connecting) {
        io_write_now(io);
    }
}

static void io_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_redis_io *io = arg;
    char buf[READ_CHUNK];
    (void)what;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        }
        char why[128];
        snprintf(why, sizeof(why), "read: %s", strerror(errno));
        io_lost(io, 0, why);
        return;
    }
    if (n == 0) {
        io_lost(io, 0, "connection closed by the server");
        return;
    }
    size_t ok;
    const char *bad = tc_redis_scan_feed(&io->scan, io->lim, buf, (size_t)n, &ok);
    /* Replies complete before the offending bytes are still answers. */
    if (ok > 0 && redisReaderFeed(io->reader, buf, ok) != REDIS_OK) {
        io_lost(io, 1, "out of memory reading a reply");
        return;
    }
    unsigned gen = io->gen;
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(io->reader, &r) != REDIS_OK) {
            char why[160];
            snprintf(why, sizeof(why), "unparseable reply (%s)", io->reader->errstr);
            io_lost(io, 1, why);
            return;
        }
        if (r == NULL) {
            break;
        }
        io->on_reply(io->arg, r);
        freeReplyObject(r);
        if (io->gen != gen) {
            return; /* closed (perhaps reopened) by the owner */
        }
    }
    if (bad != NULL) {
        io_lost(io, 1, bad);
    }
}
