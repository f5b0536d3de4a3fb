/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A ctx's connection to Redis: the operations in flight ("rops"), the
 * replies they wait for, deadlines, the handshake, the circuit breaker, and
 * the blocking mode. See tier_redis.c for the model; this file is the
 * machinery.
 *
 * Matching replies. Every command sent pushes what its reply answers (an
 * expect: the rop, and W_GET, W_PTTL, ...) on the ctx's FIFO; every reply
 * pops one and must have a shape that command can produce (a GET: a bulk
 * string, nil or an error). A reply with nothing to answer, or of the wrong
 * shape, means the stream and our commands no longer line up: nothing read
 * after it can be trusted, so the connection is closed ("protocol_errors"),
 * which fails everything still waiting on it, as does a connection lost.
 *
 * Circuit breaker, per ctx:
 *
 *            breaker_failures consecutive failures,
 *   CLOSED ── or a connect/handshake failure ─────────▶ OPEN ◀──────┐
 *     ▲                                                 │ backoff   │ probe
 *     │ handshake (AUTH, SELECT) answered               ▼ elapsed   │ failed
 *     └─────────────────────────────────────────── HALF_OPEN ───────┘
 *
 * A failure is an error reply, a stall (the requests that expire in one
 * deadline sweep count once), a reply that breaks the protocol, or a
 * connection lost with requests on it (once, not per request). A
 * connection lost or closed while CLOSED is re-made at once; when the fault
 * is the server's, the failures add up across reconnects, since only an
 * answered operation resets them. After a probe closes the circuit, the
 * ctx is on probation: its first failure reopens it at once (with a longer
 * backoff), its first success resets the backoff.
 *
 * While OPEN or HALF_OPEN, operations fail fast without touching the network:
 * gets are misses ("skipped"), sets and deletes TC_EUNAVAIL. The backoff
 * doubles from backoff_ms up to backoff_max_ms (with up to 25% jitter
 * downwards). Probes run from a timer on the ctx's loop.
 *
 * The blocking mode (a ctx made with a NULL event_base) is the same code on
 * a private event_base: each call starts the operation, then runs that loop
 * until the operation completes (its deadline bounds the wait). Between
 * calls nothing runs, so the first call after a backoff runs the probe and
 * waits for its handshake, and a connection the server closed meanwhile is
 * noticed then.
 *
 * Caveat: a done() callback must not dispose of its own ctx (completions run
 * inside the read and deadline callbacks' loops over the ctx's state).
 */
#include "tiers/redis_impl.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROP_CACHE 256 /* freed rops kept per ctx */

enum { DROP_TRIP = 0, DROP_LOST, DROP_PROTOCOL };

static void trip(struct redis_ctx *c);
static void conn_down(struct redis_ctx *c, int cause, const char *why);
static void retry_cb(evutil_socket_t fd, short what, void *arg);

/* ---- small helpers ---------------------------------------------------------------- */

uint64_t tc_redis_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval ms_tv(uint64_t ms)
{
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000u);
    tv.tv_usec = (suseconds_t)((ms % 1000u) * 1000u);
    return tv;
}

/* Texts come from us, from strerror, or from Redis error replies, none of
 * which contains the password; replies are untrusted bytes, so anything
 * unprintable is replaced. */
void tc_redis_set_error(struct redis_tier *rt, const char *fmt, ...)
{
    char buf[TC_REDIS_ERR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (char *c = buf; *c; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) {
            *c = '?';
        }
    }
    pthread_mutex_lock(&rt->err_lock);
    memcpy(rt->last_err, buf, sizeof(buf));
    pthread_mutex_unlock(&rt->err_lock);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Jitter downwards, so that the workers of a host do not all probe Redis in
 * the same millisecond. */
uint64_t tc_redis_backoff(const struct redis_tier *rt, unsigned k, uint64_t *rng)
{
    uint64_t d = rt->backoff_ms;
    for (unsigned i = 0; i < k && d < rt->backoff_max_ms; i++) {
        d *= 2;
    }
    if (d > rt->backoff_max_ms) {
        d = rt->backoff_max_ms;
    }
    return d - (d / 4) * (xorshift(rng) % 1000u) / 1000u;
}

static void brk_set(struct redis_ctx *c, int s)
{
    struct redis_tier *rt = c->rt;
    if (c->brk == s) {
        return;
    }
    if (c->brk == BRK_OPEN) {
        atomic_fetch_sub(&rt->ctx_open, 1);
    } else if (c->brk == BRK_HALF_OPEN) {
        atomic_fetch_sub(&rt->ctx_half_open, 1);
    }
    if (s == BRK_OPEN) {
        atomic_fetch_add(&rt->ctx_open, 1);
        REDIS_COUNT(rt, circuit_opens);
    } else if (s == BRK_HALF_OPEN) {
        atomic_fetch_add(&rt->ctx_half_open, 1);
    }
    c->brk = s;
}

static void conn_set(struct redis_ctx *c, int s)
{
    if ((c->conn == CONN_READY) != (s == CONN_READY)) {
        atomic_fetch_add(&c->rt->ctx_ready, s == CONN_READY ? 1 : -1);
    }
    c->conn = s;
}

/* ---- rops and the FIFO of expected replies ------------------------------------------ */

struct tc_redis_rop *tc_redis_rop_get(struct redis_ctx *c, int kind, uint64_t timeout_ms)
{
    struct tc_redis_rop *o = c->cache;
    if (o != NULL) {
        c->cache = o->next;
        c->ncache--;
    } else if ((o = malloc(sizeof(*o))) == NULL) {
        return NULL;
    }
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->st = TC_OK;
    o->deadline = tc_redis_mono_ms() + timeout_ms;
    o->gen = c->io.gen;
    o->prev = c->rops.prev;
    o->next = &c->rops;
    c->rops.prev->next = o;
    c->rops.prev = o;
    return o;
}

void tc_redis_rop_put(struct redis_ctx *c, struct tc_redis_rop *o)
{
    free(o->pattern);
    o->pattern = NULL;
    o->prev->next = o->next;
    o->next->prev = o->prev;
    if (c->ncache < ROP_CACHE) {
        o->next = c->cache;
        c->cache = o;
        c->ncache++;
    } else {
        free(o);
    }
}

/* Room for one more expect. */
static int fifo_reserve(struct redis_ctx *c)
{
    if (c->fifo.len < c->fifo.cap) {
        return 0;
    }
    size_t cap = c->fifo.cap ? c->fifo.cap * 2 : 64;
    struct tc_redis_expect *v = malloc(cap * sizeof(*v));
    if (v == NULL) {
        return -1;
    }
    for (size_t i = 0; i < c->fifo.len; i++) {
        v[i] = c->fifo.v[(c->fifo.head + i) % c->fifo.cap];
    }
    free(c->fifo.v);
    c->fifo.v = v;
    c->fifo.head = 0;
    c->fifo.cap = cap;
    return 0;
}

enum tc_status tc_redis_send(struct redis_ctx *c, struct tc_redis_rop *o, int what, int argc,
                             const char **argv, const size_t *argvlen)
{
    /* The expect is pushed only once the command is queued, and room for it
     * is made first: a command out without its expect would shift every
     * later reply onto the wrong request. */
    if (fifo_reserve(c) != 0) {
        return TC_ENOMEM;
    }
    enum tc_status st = tc_redis_io_send(&c->io, argc, argv, argvlen);
    if (st != TC_OK) {
        return st;
    }
    c->fifo.v[(c->fifo.head + c->fifo.len) % c->fifo.cap] = (struct tc_redis_expect){o, what};
    c->fifo.len++;
    if (o != NULL) {
        o->replies++;
    }
    return TC_OK;
}

static void handshake_finish(struct redis_ctx *c, struct tc_redis_rop *o);

/* @p o waits for no more replies. */
static void rop_finish(struct redis_ctx *c, struct tc_redis_rop *o)
{
    switch (o->kind) {
    case ROP_HANDSHAKE:
        handshake_finish(c, o);
        break;
    case ROP_LOCK:
        tc_redis_lock_finish(c, o);
        break;
    case ROP_COUNT:
        tc_redis_count_finish(c, o);
        break;
    default:
        tc_redis_data_finish(c, o);
        break;
    }
}

/* A reply @p o waited for will never come. */
static void reply_lost(struct redis_ctx *c, struct tc_redis_rop *o)
{
    o->lost = 1;
    if (--o->replies == 0) {
        rop_finish(c, o);
    }
}

/* ---- completion -------------------------------------------------------------------- */

void tc_redis_complete(struct redis_ctx *c, struct tc_tier_req *req, struct tc_tier_lock_req *lreq,
                       enum tc_status st)
{
    if (c->own_base != NULL) {
        /* Blocking mode: one request at a time, and the call waiting for it
         * returns the status (the tier layer counts it there). */
        c->sync_st = st;
        c->sync_done = 1;
        return;
    }
    if (req != NULL) {
        tc_tier_complete(req, st);
    } else {
        tc_tier_lock_complete(lreq, st);
    }
}

void tc_redis_complete_count(struct redis_ctx *c, struct tc_tier_count_req *creq, enum tc_status st)
{
    if (c->own_base != NULL) {
        c->sync_st = st;
        c->sync_done = 1;
        return;
    }
    tc_tier_count_complete(creq, st);
}

static void done_complete(struct redis_ctx *c, const struct tc_redis_done *d)
{
    if (d->creq != NULL) {
        tc_redis_complete_count(c, d->creq, d->st);
    } else {
        tc_redis_complete(c, d->req, d->lreq, d->st);
    }
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ctx *c = arg;
    (void)fd;
    (void)what;
    c->defer_armed = 0;
    /* Completions may defer more; those go to the other queue and run on
     * the next loop turn. */
    int q = c->dq_cur;
    c->dq_cur ^= 1;
    for (size_t i = 0; i < c->dq[q].len; i++) {
        done_complete(c, &c->dq[q].v[i]);
    }
    c->dq[q].len = 0;
}

/* Turns an immediate result on an async ctx into a completion from the
 * loop. Falls back to returning it when disposing or out of memory. */
static enum tc_status defer_result(struct redis_ctx *c, struct tc_tier_req *req,
                                   struct tc_tier_lock_req *lreq, struct tc_tier_count_req *creq,
                                   enum tc_status st)
{
    if (st == TC_EINPROGRESS || c->disposing) {
        return st;
    }
    int q = c->dq_cur;
    if (c->dq[q].len == c->dq[q].cap) {
        size_t cap = c->dq[q].cap ? c->dq[q].cap * 2 : 64;
        struct tc_redis_done *v = realloc(c->dq[q].v, cap * sizeof(*v));
        if (v == NULL) {
            return st;
        }
        c->dq[q].v = v;
        c->dq[q].cap = cap;
    }
    c->dq[q].v[c->dq[q].len++] = (struct tc_redis_done){req, lreq, st, creq};
    if (!c->defer_armed) {
        /* A zero timer, not event_active(): libevent runs events activated
         * during its active-queue pass in the same pass, so a done() that
         * issues again would keep the loop there forever; timers run once
         * per loop turn, after I/O and the other timers. */
        struct timeval now = {0, 0};
        evtimer_add(c->defer_ev, &now);
        c->defer_armed = 1;
    }
    return TC_EINPROGRESS;
}

enum tc_status tc_redis_settle(struct redis_ctx *c, struct tc_tier_req *req,
                               struct tc_tier_lock_req *lreq, enum tc_status st)
{
    if (c->own_base == NULL) {
        return defer_result(c, req, lreq, NULL, st);
    }
    if (st != TC_EINPROGRESS) {
        return st;
    }
    tc_redis_io_flush(&c->io);
    while (!c->sync_done) {
        event_base_loop(c->evb, EVLOOP_ONCE);
    }
    return c->sync_st;
}

enum tc_status tc_redis_settle_count(struct redis_ctx *c, struct tc_tier_count_req *creq,
                                     enum tc_status st)
{
    if (c->own_base == NULL) {
        return defer_result(c, NULL, NULL, creq, st);
    }
    return tc_redis_settle(c, NULL, NULL, st);
}

/* ---- the breaker ---------------------------------------------------------------------- */

void tc_redis_failed(struct redis_ctx *c)
{
    if (c->disposing || c->probe) {
        return;
    }
    c->fails++;
    if (c->brk == BRK_CLOSED && (c->probation || c->fails >= c->rt->breaker_failures)) {
        trip(c);
    }
}

void tc_redis_succeeded(struct redis_ctx *c)
{
    c->fails = 0;
    if (c->probation) {
        c->probation = 0;
        c->backoff_k = 0;
    }
}

static void trip(struct redis_ctx *c)
{
    if (!c->probe && (c->brk != BRK_OPEN || !evtimer_pending(c->retry, NULL))) {
        /* Open before dropping: dropping runs the pending requests'
         * completions, whose done() may send again and must fail fast
         * rather than reconnect behind the breaker's back. */
        brk_set(c, BRK_OPEN);
        c->probation = 0;
        struct timeval tv = ms_tv(tc_redis_backoff(c->rt, c->backoff_k, &c->rng));
        if (c->backoff_k < 30) {
            c->backoff_k++;
        }
        evtimer_add(c->retry, &tv);
    }
    conn_down(c, DROP_TRIP, NULL);
}

/* ---- connecting ------------------------------------------------------------------------- */

/* Starts a non-blocking connect and pipelines the handshake behind it; the
 * address was resolved at open, so nothing here blocks. */
static enum tc_status ctx_connect(struct redis_ctx *c)
{
    struct redis_tier *rt = c->rt;
    char why[128];
    enum tc_status st =
        tc_redis_io_open(&c->io, (const struct sockaddr *)&rt->sa, rt->salen, why, sizeof(why));
    if (st != TC_OK) {
        tc_redis_set_error(rt, "connect %s: %s", rt->target, why);
        REDIS_COUNT(rt, connect_failures);
        atomic_store(&rt->reachable, 0);
        return TC_EUNAVAIL;
    }
    conn_set(c, CONN_CONNECTING);
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_HANDSHAKE, rt->connect_timeout_ms);
    if (o == NULL) {
        conn_down(c, DROP_TRIP, NULL);
        return TC_ENOMEM;
    }
    tc_redis_arm(c, o->deadline);
    const char *argv[3];
    size_t argvlen[3];
    int argc = tc_redis_auth_args(rt, argv, argvlen);
    st = TC_OK;
    if (argc > 0) {
        st = tc_redis_send(c, o, W_AUTH, argc, argv, argvlen);
    }
    char db[16];
    snprintf(db, sizeof(db), "%u", rt->db);
    argv[0] = "SELECT";
    argvlen[0] = 6;
    argv[1] = db;
    argvlen[1] = strlen(db);
    if (st == TC_OK) {
        st = tc_redis_send(c, o, W_SELECT, 2, argv, argvlen);
    }
    if (st != TC_OK) {
        o->failed = 1;
        if (o->replies == 0) {
            tc_redis_rop_put(c, o);
        }
        conn_down(c, DROP_TRIP, NULL); /* finishes o if it waits for AUTH */
        return TC_EUNAVAIL;
    }
    if (c->own_base != NULL) {
        tc_redis_io_flush(&c->io);
    }
    return TC_OK;
}

static void handshake_reply(struct redis_ctx *c, struct tc_redis_rop *o, int what,
                            const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR && !o->failed) {
        /* Redis said no (bad password, unknown user, bad DB): retrying will
         * not help until someone fixes the configuration. The first refusal
         * is the reason (after a refused AUTH, SELECT fails with NOAUTH). */
        tc_redis_set_error(c->rt, "%s: %s refused: %.*s", c->rt->target,
                           what == W_AUTH ? "AUTH" : "SELECT", (int)(r->len > 100 ? 100 : r->len),
                           r->str ? r->str : "");
        o->failed = 1;
        o->rejected = 1;
    }
}

static void handshake_finish(struct redis_ctx *c, struct tc_redis_rop *o)
{
    struct redis_tier *rt = c->rt;
    int ok = !o->failed && !o->lost && o->gen == c->io.gen && tc_redis_io_is_open(&c->io);
    int rejected = o->rejected;
    tc_redis_rop_put(c, o);
    if (c->disposing && !c->probe) {
        return;
    }
    if (ok) {
        atomic_store(&rt->reachable, 1);
        REDIS_COUNT(rt, connects);
    } else if (c->probe || c->brk != BRK_OPEN) {
        REDIS_COUNT(rt, connect_failures);
        atomic_store(&rt->reachable, 0);
    }
    if (c->probe) {
        c->hs_done = 1;
        c->hs_ok = ok;
        c->hs_rejected = rejected;
        return;
    }
    if (ok) {
        conn_set(c, CONN_READY);
        if (c->brk == BRK_HALF_OPEN) {
            brk_set(c, BRK_CLOSED);
            c->probation = 1;
            c->fails = 0;
        }
    } else if (c->brk != BRK_OPEN) {
        trip(c);
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ctx *c = arg;
    (void)fd;
    (void)what;
    if (c->disposing) {
        return;
    }
    if (c->brk == BRK_CLOSED) {
        /* Reconnect after a connection was lost or closed, so that a dead
         * Redis shows in health before the next request finds it. */
        if (c->conn == CONN_NONE && ctx_connect(c) != TC_OK) {
            trip(c);
        }
        return;
    }
    if (c->brk != BRK_OPEN) {
        return;
    }
    brk_set(c, BRK_HALF_OPEN);
    if (ctx_connect(c) != TC_OK) {
        trip(c);
    }
}

enum tc_status tc_redis_ready(struct redis_ctx *c)
{
    if (c->disposing) {
        return TC_EUNAVAIL;
    }
    if (c->brk != BRK_CLOSED) {
        REDIS_COUNT(c->rt, skipped);
        return TC_EUNAVAIL;
    }
    if (c->conn == CONN_NONE && ctx_connect(c) != TC_OK) {
        trip(c);
        return TC_EUNAVAIL;
    }
    return TC_OK;
}

void tc_redis_blocking_prepare(struct redis_ctx *c)
{
    c->sync_done = 0;
    /* What happened since the last call: a probe now due, a connection the
     * server closed. */
    event_base_loop(c->evb, EVLOOP_NONBLOCK);
    /* A probe in progress is waited for (its handshake deadline bounds it),
     * so that the call that started it can use the connection. */
    while (c->brk == BRK_HALF_OPEN && c->conn == CONN_CONNECTING) {
        event_base_loop(c->evb, EVLOOP_ONCE);
    }
    c->sync_done = 0;
}

/* ---- the connection going away ---------------------------------------------------------- */

/* Closes the connection (if open) and fails every reply still expected on
 * it. @p cause: DROP_TRIP (we close it: breaker, dispose), DROP_LOST (it died:
 * EOF, socket error), DROP_PROTOCOL (it broke the protocol). */
static void conn_down(struct redis_ctx *c, int cause, const char *why)
{
    struct redis_tier *rt = c->rt;
    tc_redis_io_close(&c->io);
    int was_connecting = c->conn == CONN_CONNECTING;
    conn_set(c, CONN_NONE);
    /* Detached first: the completions below may connect and send again. */
    struct tc_redis_expect *v = c->fifo.v;
    size_t head = c->fifo.head, len = c->fifo.len, cap = c->fifo.cap;
    c->fifo.v = NULL;
    c->fifo.head = c->fifo.len = c->fifo.cap = 0;
    int pending = 0;
    for (size_t i = 0; i < len; i++) {
        const struct tc_redis_rop *o = v[(head + i) % cap].o;
        pending |= o != NULL && (o->req != NULL || o->lreq != NULL || o->creq != NULL);
    }
    if (cause != DROP_TRIP) {
        tc_redis_set_error(rt, "%s: %s", rt->target, why ? why : "connection lost");
        if (cause == DROP_PROTOCOL) {
            REDIS_COUNT(rt, protocol_errors);
        }
        /* A handshake in progress is judged by the handshake itself. */
        if (!was_connecting && (cause == DROP_PROTOCOL || pending)) {
            tc_redis_failed(c);
        }
        if (!was_connecting && !c->disposing && !c->probe && c->brk == BRK_CLOSED &&
            c->conn == CONN_NONE) {
            /* Re-made from the loop, not from inside the read callback. */
            struct timeval now = {0, 0};
            evtimer_add(c->retry, &now);
        }
    }
    for (size_t i = 0; i < len; i++) {
        struct tc_redis_rop *o = v[(head + i) % cap].o;
        if (o != NULL) {
            reply_lost(c, o);
        }
    }
    free(v);
}

static void on_lost(void *arg, int protocol, const char *why)
{
    conn_down(arg, protocol ? DROP_PROTOCOL : DROP_LOST, why);
}

void tc_redis_protocol_fault(struct redis_ctx *c, const char *fmt, ...)
{
    char why[TC_REDIS_ERR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    conn_down(c, DROP_PROTOCOL, why);
}

/* ---- matching replies --------------------------------------------------------------------- */

static const char *type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING:
        return "bulk string";
    case REDIS_REPLY_ARRAY:
        return "array";
    case REDIS_REPLY_INTEGER:
        return "integer";
    case REDIS_REPLY_NIL:
        return "nil";
    case REDIS_REPLY_STATUS:
        return "status";
    case REDIS_REPLY_ERROR:
        return "error";
    }
    return "unknown";
}

static const char *what_name(int what)
{
    static const char *const names[] = {
        [W_AUTH] = "AUTH",
        [W_SELECT] = "SELECT",
        [W_GET] = "GET",
        [W_PTTL] = "PTTL",
        [W_SET] = "SET",
        [W_UNLINK] = "UNLINK",
        [W_PUBLISH] = "PUBLISH",
        [W_SCAN] = "SCAN",
        [W_UNLINK_MANY] = "UNLINK",
        [W_LOCK] = "a lock script",
        [W_LSCAN] = "SCAN",
        [W_LPTTL] = "PTTL",
        [W_FIRE] = "a tag update",
        [W_COUNT] = "a counter script",
    };
    return what > 0 && what <= W_COUNT ? names[what] : "?";
}

/* The reply types each command can produce; an error reply fits any. */
static int shape_ok(int what, const redisReply *r)
{
    int t = r->type;
    if (t == REDIS_REPLY_ERROR) {
        return 1;
    }
    switch (what) {
    case W_AUTH:
    case W_SELECT:
    case W_SET:
        return t == REDIS_REPLY_STATUS;
    case W_GET:
        return t == REDIS_REPLY_STRING || t == REDIS_REPLY_NIL;
    case W_PTTL:
    case W_LPTTL:
    case W_FIRE:
    case W_UNLINK:
    case W_PUBLISH:
    case W_UNLINK_MANY:
        return t == REDIS_REPLY_INTEGER;
    case W_SCAN:
    case W_LSCAN:
        return t == REDIS_REPLY_ARRAY;
    case W_LOCK:
    case W_COUNT:
        return t == REDIS_REPLY_ARRAY || t == REDIS_REPLY_INTEGER;
    }
    return 0;
}

static void on_reply(void *arg, redisReply *r)
{
    struct redis_ctx *c = arg;
    if (c->fifo.len == 0) {
        tc_redis_protocol_fault(c, "a reply (%s) that answers no command", type_name(r->type));
        return;
    }
    struct tc_redis_expect e = c->fifo.v[c->fifo.head];
    c->fifo.head = (c->fifo.head + 1) % c->fifo.cap;
    c->fifo.len--;
    if (!shape_ok(e.what, r)) {
        REDIS_COUNT(c->rt, bad_replies);
        tc_redis_protocol_fault(c, "a %s reply to %s", type_name(r->type), what_name(e.what));
        if (e.o != NULL) {
            reply_lost(c, e.o);
        }
        return;
    }
    struct tc_redis_rop *o = e.o;
    if (o == NULL) {
        return; /* a PUBLISH: fire and forget */
    }
    o->replies--;
    switch (e.what) {
    case W_AUTH:
    case W_SELECT:
        handshake_reply(c, o, e.what, r);
        break;
    case W_LOCK:
        tc_redis_lock_reply(c, o, r);
        break;
    case W_COUNT:
        tc_redis_count_reply(c, o, r);
        break;
    default:
        tc_redis_data_reply(c, o, e.what, r);
        break;
    }
    if (o->replies == 0) {
        rop_finish(c, o);
    }
}

/* ---- deadlines ------------------------------------------------------------------------------ */

void tc_redis_arm(struct redis_ctx *c, uint64_t deadline)
{
    if (c->timer_at != 0 && c->timer_at <= deadline) {
        return;
    }
    uint64_t now = tc_redis_mono_ms();
    struct timeval tv = ms_tv(deadline > now ? deadline - now : 0);
    evtimer_add(c->timer, &tv);
    c->timer_at = deadline;
}

static enum tc_status fail_status(int kind, int timeout)
{
    if (kind == ROP_GET) {
        return TC_ENOTFOUND;
    }
    return timeout ? TC_ETIMEOUT : TC_EUNAVAIL;
}

/* An operation past its deadline completes at once (a get as a miss, others
 * TC_ETIMEOUT); its rop stays, abandoned, until Redis answers or the
 * connection goes. */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ctx *c = arg;
    struct redis_tier *rt = c->rt;
    (void)fd;
    (void)what;
    c->timer_at = 0;
    uint64_t now = tc_redis_mono_ms();
    size_t n = 0;
    int handshake_late = 0;
    /* Phase 1 only marks: completing a request may run user code that sends
     * or drops the connection, which changes the list. */
    for (struct tc_redis_rop *o = c->rops.next; o != &c->rops; o = o->next) {
        if (o->deadline > now ||
            (o->req == NULL && o->lreq == NULL && o->creq == NULL && o->kind != ROP_HANDSHAKE)) {
            continue;
        }
        if (o->kind == ROP_HANDSHAKE) {
            if (!o->failed && o->gen == c->io.gen) {
                o->failed = 1;
                handshake_late = 1;
            }
            continue;
        }
        if (n == c->expired_cap) {
            size_t cap = c->expired_cap ? c->expired_cap * 2 : 64;
            struct tc_redis_done *p = realloc(c->expired, cap * sizeof(*p));
            if (p == NULL) {
                break; /* the rest waits for the next tick */
            }
            c->expired = p;
            c->expired_cap = cap;
        }
        c->expired[n].req = o->req;
        c->expired[n].lreq = o->lreq;
        c->expired[n].creq = o->creq;
        c->expired[n++].st = fail_status(o->kind, 1);
        o->req = NULL;
        o->lreq = NULL;
        o->creq = NULL;
    }
    if (handshake_late) {
        tc_redis_set_error(rt, "%s: handshake timed out after %llu ms", rt->target,
                           (unsigned long long)rt->connect_timeout_ms);
        if (!c->probe) { /* else the handshake's end counts it */
            REDIS_COUNT(rt, connect_failures);
            atomic_store(&rt->reachable, 0);
        }
        trip(c);
    }
    /* Requests that expire in one sweep are one stall of the connection,
     * one failure for the breaker: with 50 in flight, a single 50 ms hiccup
     * must not open the circuit on its own. */
    if (n > 0) {
        tc_redis_failed(c);
    }
    for (size_t i = 0; i < n; i++) {
        REDIS_COUNT(rt, timeouts);
        done_complete(c, &c->expired[i]);
    }
    /* Re-arm for the earliest live deadline. */
    uint64_t next = 0;
    for (struct tc_redis_rop *o = c->rops.next; o != &c->rops; o = o->next) {
        if ((o->req != NULL || o->lreq != NULL || o->creq != NULL ||
             (o->kind == ROP_HANDSHAKE && !o->failed)) &&
            (next == 0 || o->deadline < next)) {
            next = o->deadline;
        }
    }
    if (next != 0) {
        tc_redis_arm(c, next);
    }
}

/* ---- life cycle -------------------------------------------------------------------------------
 */

enum tc_status tc_redis_ctx_create(struct redis_tier *rt, struct event_base *base, int probe,
                                   struct redis_ctx **out)
{
    struct redis_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return TC_ENOMEM;
    }
    tc_tier_ctx_base_init(&c->base, &rt->base, base);
    c->rt = rt;
    c->probe = probe;
    c->rops.next = c->rops.prev = &c->rops;
    c->rng = (uint64_t)(uintptr_t)c ^ (tc_redis_mono_ms() << 20) ^ 0x9e3779b97f4a7c15ull;
    tc_buf_init(&c->kbuf);
    tc_buf_init(&c->vbuf);
    c->io.fd = -1;
    if (base == NULL) {
        /* Only this ctx's thread ever runs it: no locks, and no wake-up
         * descriptor (which a base gets once the process enabled libevent's
         * threading, as the server does). */
        struct event_config *cfg = event_config_new();
        if (cfg != NULL && event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK) == 0) {
            c->own_base = event_base_new_with_config(cfg);
        }
        if (cfg != NULL) {
            event_config_free(cfg);
        }
        if (c->own_base == NULL) {
            free(c);
            return TC_ENOMEM;
        }
    }
    c->evb = base != NULL ? base : c->own_base;
    c->timer = evtimer_new(c->evb, deadline_cb, c);
    c->retry = evtimer_new(c->evb, retry_cb, c);
    c->defer_ev = evtimer_new(c->evb, defer_cb, c);
    if (c->timer == NULL || c->retry == NULL || c->defer_ev == NULL ||
        tc_redis_io_init(&c->io, c->evb, &rt->lim, on_reply, on_lost, c) != TC_OK) {
        tc_redis_ctx_destroy(c);
        return TC_ENOMEM;
    }
    /* Connect now so that the first request does not pay for it; a failure
     * here just opens the circuit. */
    if (ctx_connect(c) != TC_OK) {
        if (probe) {
            c->hs_done = 1;
        } else {
            trip(c);
        }
    }
    *out = c;
    return TC_OK;
}

void tc_redis_ctx_wait_handshake(struct redis_ctx *c)
{
    while (!c->hs_done) {
        event_base_loop(c->evb, EVLOOP_ONCE);
    }
}

void tc_redis_ctx_destroy(struct redis_ctx *c)
{
    if (c == NULL) {
        return;
    }
    c->disposing = 1;
    /* Every request still in flight completes now with TC_EUNAVAIL (its
     * done() may not start new work on this ctx: disposing refuses it). */
    for (int q = 0; q < 2; q++) {
        for (size_t i = 0; i < c->dq[q].len; i++) {
            c->dq[q].v[i].st = TC_EUNAVAIL;
            done_complete(c, &c->dq[q].v[i]);
        }
        c->dq[q].len = 0;
    }
    for (;;) {
        struct tc_redis_rop *o = c->rops.next;
        while (o != &c->rops && o->req == NULL && o->lreq == NULL && o->creq == NULL) {
            o = o->next;
        }
        if (o == &c->rops) {
            break;
        }
        struct tc_redis_done d = {o->req, o->lreq, TC_EUNAVAIL, o->creq};
        o->req = NULL;
        o->lreq = NULL;
        o->creq = NULL;
        done_complete(c, &d);
    }
    if (c->timer != NULL) {
        conn_down(c, DROP_TRIP, NULL); /* frees every rop that waited for a reply */
    }
    while (c->rops.next != &c->rops) {
        tc_redis_rop_put(c, c->rops.next);
    }
    brk_set(c, BRK_CLOSED);
    conn_set(c, CONN_NONE);
    tc_redis_io_deinit(&c->io);
    if (c->timer != NULL) {
        event_free(c->timer);
    }
    if (c->retry != NULL) {
        event_free(c->retry);
    }
    if (c->defer_ev != NULL) {
        event_free(c->defer_ev);
    }
    if (c->own_base != NULL) {
        event_base_free(c->own_base);
    }
    while (c->cache != NULL) {
        struct tc_redis_rop *o = c->cache;
        c->cache = o->next;
        free(o);
    }
    free(c->fifo.v);
    free(c->dq[0].v);
    free(c->dq[1].v);
    free(c->expired);
    tc_buf_deinit(&c->kbuf);
    tc_buf_deinit(&c->vbuf);
    free(c);
}

int tc_redis_auth_args(const struct redis_tier *rt, const char *argv[3], size_t argvlen[3])
{
    int argc = 0;
    if (rt->password == NULL) {
        return 0;
    }
    argv[argc] = "AUTH";
    argvlen[argc++] = 4;
    if (rt->user != NULL) {
        argv[argc] = rt->user;
        argvlen[argc++] = strlen(rt->user);
    }
    argv[argc] = rt->password;
    argvlen[argc++] = strlen(rt->password);
    return argc;
}
