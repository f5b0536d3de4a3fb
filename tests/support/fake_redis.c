/* SPDX-License-Identifier: BSD-2-Clause */
/* prctl(PR_SET_PDEATHSIG) is Linux-only: the fake dies with its test. */
#define _GNU_SOURCE
#include "tests/support/fake_redis.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXC      64
#define BIG_LEN   1073741824ull  /* what the lying replies announce */
#define BULK_FAST (256ull << 20) /* junk sent at full speed after "$1073741824" */
#define ARR_FAST  (4ull << 20)   /* ... after "*2000000000" (":1" elements) */
#define SLOW_STEP 1024           /* then this many bytes every SLOW_MS */
#define SLOW_MS   10
#define CHUNK     65536

struct shared {
    _Atomic int mode;
    _Atomic unsigned accepted, closed_by_client;
    _Atomic uint64_t junk;
};

struct tc_fake_redis {
    pid_t pid;
    unsigned port;
    struct shared *sh;
};

struct fconn {
    int fd;
    redisReader *rd;
    char *out;
    size_t olen, opos, ocap;
    int drip;
    int subscribed, pushed;
    char channel[128];
    uint64_t junk_left, junk_fast, junk_done;
    int junk_elems; /* ":1\r\n" elements instead of bulk bytes */
    uint64_t next_slow;
    int close_when_flushed;
    uint64_t extra_at;
    int stalled; /* a command went unanswered: answer nothing more */
};

struct kv {
    char *k, *v;
    size_t kl, vl;
};

static struct shared *sh;
static struct fconn conns[MAXC];
static struct kv store[256];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void out_add(struct fconn *c, const void *p, size_t n)
{
    if (c->olen + n > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 4096;
        while (cap < c->olen + n) {
            cap *= 2;
        }
        char *o = realloc(c->out, cap);
        if (o == NULL) {
            abort();
        }
        c->out = o;
        c->ocap = cap;
    }
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
}

static void out_str(struct fconn *c, const char *s)
{
    out_add(c, s, strlen(s));
}

static void out_bulk(struct fconn *c, const char *p, size_t n)
{
    char h[32];
    snprintf(h, sizeof(h), "$%zu\r\n", n);
    out_str(c, h);
    out_add(c, p, n);
    out_str(c, "\r\n");
}

static struct kv *find(const char *k, size_t kl)
{
    for (size_t i = 0; i < sizeof(store) / sizeof(store[0]); i++) {
        if (store[i].k != NULL && store[i].kl == kl && memcmp(store[i].k, k, kl) == 0) {
            return &store[i];
        }
    }
    return NULL;
}

static void put(const char *k, size_t kl, const char *v, size_t vl)
{
    struct kv *e = find(k, kl);
    for (size_t i = 0; e == NULL && i < sizeof(store) / sizeof(store[0]); i++) {
        if (store[i].k == NULL) {
            e = &store[i];
            e->k = malloc(kl);
            memcpy(e->k, k, kl);
            e->kl = kl;
        }
    }
    if (e == NULL) {
        return;
    }
    free(e->v);
    e->v = malloc(vl ? vl : 1);
    memcpy(e->v, v, vl);
    e->vl = vl;
}

static int del(const char *k, size_t kl)
{
    struct kv *e = find(k, kl);
    if (e == NULL) {
        return 0;
    }
    free(e->k);
    free(e->v);
    memset(e, 0, sizeof(*e));
    return 1;
}

static int is_cmd(const redisReply *a, const char *name)
{
    size_t n = strlen(name);
    if (a->type != REDIS_REPLY_STRING || a->len != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (toupper((unsigned char)a->str[i]) != name[i]) {
            return 0;
        }
    }
    return 1;
}

static void answer_get(struct fconn *c, const redisReply *k)
{
    struct kv *e = find(k->str, k->len);
    if (e != NULL) {
        out_bulk(c, e->v, e->vl);
    } else {
        out_str(c, "$-1\r\n");
    }
}

static void handle(struct fconn *c, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        out_str(c, "-ERR protocol\r\n");
        return;
    }
    const redisReply *const *a = (const redisReply *const *)r->element;
    int mode = atomic_load(&sh->mode);
    if (is_cmd(a[0], "AUTH") || is_cmd(a[0], "SELECT")) {
        out_str(c, "+OK\r\n");
        return;
    }
    if (is_cmd(a[0], "PING")) {
        out_str(c, "+PONG\r\n");
        return;
    }
    if (is_cmd(a[0], "SUBSCRIBE")) {
        for (size_t i = 1; i < r->elements; i++) {
            char n[32];
            out_str(c, "*3\r\n$9\r\nsubscribe\r\n");
            out_bulk(c, a[i]->str, a[i]->len);
            snprintf(n, sizeof(n), ":%zu\r\n", i);
            out_str(c, n);
            if (a[i]->len < sizeof(c->channel)) {
                memcpy(c->channel, a[i]->str, a[i]->len);
                c->channel[a[i]->len] = '\0';
            }
        }
        c->subscribed = 1;
        return;
    }
    if (c->stalled || c->junk_left > 0 || mode == TC_FAKE_STALL) {
        c->stalled = 1; /* after an unanswered command, nothing may be answered */
        return;
    }
    c->drip = mode == TC_FAKE_SPLIT;
    if (is_cmd(a[0], "GET") && r->elements == 2) {
        switch (mode) {
        case TC_FAKE_UNSOLICITED:
            out_str(c, "+OK\r\n");
            answer_get(c, a[1]);
            break;
        case TC_FAKE_WRONG_TYPE:
            out_str(c, ":1\r\n");
            break;
        case TC_FAKE_BIG_BULK:
            out_str(c, "$1073741824\r\n");
            c->junk_left = BIG_LEN + 2;
            c->junk_fast = BULK_FAST;
            c->junk_elems = 0;
            break;
        case TC_FAKE_HUGE_ARRAY:
            out_str(c, "*2000000000\r\n");
            c->junk_left = 2000000000ull * 4;
            c->junk_fast = ARR_FAST;
            c->junk_elems = 1;
            break;
        case TC_FAKE_GARBAGE:
            out_add(c, "\x01\x02 this is not RESP \xff\r\n", 24);
            break;
        case TC_FAKE_CLOSE_MID: {
            size_t before = c->olen;
            answer_get(c, a[1]);
            c->olen = before + (c->olen - before) / 2;
            c->close_when_flushed = 1;
            break;
        }
        default:
            answer_get(c, a[1]);
            break;
        }
        return;
    }
    if (is_cmd(a[0], "PTTL") && r->elements == 2) {
        out_str(c, find(a[1]->str, a[1]->len) ? ":-1\r\n" : ":-2\r\n");
        if (mode == TC_FAKE_EXTRA_AFTER) {
            c->extra_at = now_ms() + 20;
        }
        return;
    }
    if (is_cmd(a[0], "SET") && r->elements >= 3) {
        put(a[1]->str, a[1]->len, a[2]->str, a[2]->len);
        out_str(c, "+OK\r\n");
        return;
    }
    if ((is_cmd(a[0], "UNLINK") || is_cmd(a[0], "DEL")) && r->elements >= 2) {
        int n = 0;
        for (size_t i = 1; i < r->elements; i++) {
            n += del(a[i]->str, a[i]->len);
        }
        char s[32];
        snprintf(s, sizeof(s), ":%d\r\n", n);
        out_str(c, s);
        return;
    }
    if (is_cmd(a[0], "PUBLISH")) {
        out_str(c, ":0\r\n");
        return;
    }
    if (is_cmd(a[0], "SCAN")) {
        out_str(c, "*2\r\n$1\r\n0\r\n*0\r\n");
        return;
    }
    out_str(c, "-ERR unknown command\r\n");
}

static void conn_close(struct fconn *c, int by_client)
{
    if (by_client) {
        atomic_fetch_add(&sh->closed_by_client, 1);
    }
    close(c->fd);
    redisReaderFree(c->rd);
    free(c->out);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* Writes what is due; 0, or -1 when the connection is gone. */
static int conn_flush(struct fconn *c, uint64_t now)
{
    for (int round = 0; round < 4; round++) {
        while (c->opos < c->olen) {
            size_t n = c->drip ? 1 : c->olen - c->opos;
            ssize_t w = send(c->fd, c->out + c->opos, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    return 0;
                }
                conn_close(c, 1);
                return -1;
            }
            c->opos += (size_t)w;
            if (c->drip) {
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
            }
        }
        c->olen = c->opos = 0;
        if (c->close_when_flushed) {
            conn_close(c, 0);
            return -1;
        }
        if (c->extra_at != 0 && now >= c->extra_at) {
            out_str(c, "+OK\r\n");
            c->extra_at = 0;
            continue;
        }
        if (c->junk_left == 0) {
            return 0;
        }
        size_t n;
        if (c->junk_done < c->junk_fast) {
            n = CHUNK;
        } else if (now >= c->next_slow) {
            n = SLOW_STEP;
            c->next_slow = now + SLOW_MS;
        } else {
            return 0;
        }
        if (n > c->junk_left) {
            n = (size_t)c->junk_left;
        }
        char buf[CHUNK];
        for (size_t i = 0; i < n; i++) {
            buf[i] = c->junk_elems ? ":1\r\n"[i % 4] : 'x';
        }
        out_add(c, buf, n);
        c->junk_left -= n;
        c->junk_done += n;
        atomic_fetch_add(&sh->junk, n);
    }
    return 0;
}

static void push(struct fconn *c)
{
    /* A message announcing 1 GB on the channel the client subscribed to. */
    out_str(c, "*3\r\n$7\r\nmessage\r\n");
    out_bulk(c, c->channel, strlen(c->channel));
    out_str(c, "$1073741824\r\n");
    c->junk_left = BIG_LEN + 2;
    c->junk_fast = BULK_FAST;
    c->junk_elems = 0;
    c->pushed = 1;
}

static void serve(int lfd)
{
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAXC; i++) {
        conns[i].fd = -1;
    }
    for (;;) {
        struct pollfd pf[MAXC + 1];
        int idx[MAXC + 1];
        int n = 0, busy = 0;
        pf[n].fd = lfd;
        pf[n].events = POLLIN;
        idx[n++] = -1;
        int mode = atomic_load(&sh->mode);
        for (int i = 0; i < MAXC; i++) {
            struct fconn *c = &conns[i];
            if (c->fd < 0) {
                continue;
            }
            if (mode == TC_FAKE_BIG_MESSAGE && c->subscribed && !c->pushed) {
                push(c);
            }
            short ev = POLLIN;
            if (c->opos < c->olen || (c->junk_left > 0 && c->junk_done < c->junk_fast)) {
                ev |= POLLOUT;
            }
            busy |= c->junk_left > 0 || c->extra_at != 0;
            pf[n].fd = c->fd;
            pf[n].events = ev;
            idx[n++] = i;
        }
        if (poll(pf, (nfds_t)n, busy ? 1 : 20) < 0 && errno != EINTR) {
            _exit(1);
        }
        uint64_t now = now_ms();
        if (pf[0].revents & POLLIN) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                int slot = -1;
                for (int i = 0; i < MAXC && slot < 0; i++) {
                    slot = conns[i].fd < 0 ? i : -1;
                }
                if (slot < 0) {
                    close(fd);
                } else {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct fconn *c = &conns[slot];
                    memset(c, 0, sizeof(*c));
                    c->fd = fd;
                    c->rd = redisReaderCreate();
                    atomic_fetch_add(&sh->accepted, 1);
                }
            }
        }
        for (int k = 1; k < n; k++) {
            struct fconn *c = &conns[idx[k]];
            if (c->fd < 0) {
                continue;
            }
            if (pf[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                char buf[65536];
                ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    conn_close(c, 1);
                    continue;
                }
                if (r > 0) {
                    redisReaderFeed(c->rd, buf, (size_t)r);
                    void *cmd;
                    while (redisReaderGetReply(c->rd, &cmd) == REDIS_OK && cmd != NULL) {
                        handle(c, cmd);
                        freeReplyObject(cmd);
                    }
                }
            }
            conn_flush(c, now);
        }
    }
}

int tc_fake_redis_start(struct tc_fake_redis **out)
{
    struct tc_fake_redis *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return -1;
    }
    f->sh = mmap(NULL, sizeof(*f->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (f->sh == MAP_FAILED) {
        free(f);
        return -1;
    }
    memset(f->sh, 0, sizeof(*f->sh));
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 64) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) != 0) {
        perror("fake_redis: listen");
        if (lfd >= 0) {
            close(lfd);
        }
        munmap(f->sh, sizeof(*f->sh));
        free(f);
        return -1;
    }
    f->port = ntohs(a.sin_port);
    pid_t parent = getpid();
    f->pid = fork();
    if (f->pid < 0) {
        perror("fake_redis: fork");
        close(lfd);
        munmap(f->sh, sizeof(*f->sh));
        free(f);
        return -1;
    }
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(0);
        }
        sh = f->sh;
        serve(lfd);
        _exit(0);
    }
    close(lfd);
    *out = f;
    return 0;
}

unsigned tc_fake_redis_port(const struct tc_fake_redis *f)
{
    return f->port;
}

void tc_fake_redis_set_mode(struct tc_fake_redis *f, enum tc_fake_mode mode)
{
    atomic_store(&f->sh->mode, (int)mode);
}

unsigned tc_fake_redis_accepted(const struct tc_fake_redis *f)
{
    return atomic_load(&f->sh->accepted);
}

unsigned tc_fake_redis_closed_by_client(const struct tc_fake_redis *f)
{
    return atomic_load(&f->sh->closed_by_client);
}

uint64_t tc_fake_redis_junk_sent(const struct tc_fake_redis *f)
{
    return atomic_load(&f->sh->junk);
}

void tc_fake_redis_stop(struct tc_fake_redis *f)
{
    if (f == NULL) {
        return;
    }
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    munmap(f->sh, sizeof(*f->sh));
    free(f);
}
