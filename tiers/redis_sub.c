/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The subscriber: one thread per tier, with its own event_base and
 * connection, SUBSCRIBEd to the invalidation channel (invalidate=pubsub)
 * and, once a lock-release callback is registered, to the lock channel.
 *
 * Invalidation. Every set and delete PUBLISHes "<16 hex instance id><op>
 * <key>" on PREFIX‖"invalidate@"‖DB; this thread drops messages carrying
 * its own instance id (a fresh random id per open) and hands the others'
 * keys to the callback registered with tc_tier_on_invalidate(), on this
 * thread. A clear publishes op 'c' with its prefix (empty: everything),
 * handed to the callback of tc_tier_on_invalidate_prefix(). open() starts it when
 * invalidate=pubsub; tc_tier_on_lock_release() starts it otherwise.
 *
 * Lock notices "<token> <name>" (redis_lock.c) go to the callback of
 * tc_tier_on_lock_release(), this process's own included; after a lost
 * subscription it calls fn(NULL, 0, NULL).
 *
 * The connection is bounded like the data connections (redis_io.c, with
 * rt->sub_lim): a message longer than any we publish is refused as it
 * arrives. Once AUTH is answered, every reply must be a subscribe
 * confirmation or a message; anything else closes the connection
 * ("protocol_errors") and a new one is made after the backoff.
 */
#include "tiers/redis_impl.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sub_connect(struct redis_tier *rt);

static struct timeval ms_tv(uint64_t ms)
{
    struct timeval tv;
    tv.tv_sec = (time_t)(ms / 1000u);
    tv.tv_usec = (suseconds_t)((ms % 1000u) * 1000u);
    return tv;
}

static void sub_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub_connect(arg);
}

static void sub_schedule(struct redis_tier *rt)
{
    uint64_t rng = tc_redis_mono_ms() ^ (uint64_t)(uintptr_t)rt;
    struct timeval tv = ms_tv(tc_redis_backoff(rt, rt->sub_backoff_k, &rng));
    if (rt->sub_backoff_k < 30) {
        rt->sub_backoff_k++;
    }
    evtimer_add(rt->sub_retry_ev, &tv);
}

int tc_redis_sub_complete(struct redis_tier *rt)
{
    int want_inval = rt->invalidate == TC_REDIS_INVALIDATE_PUBSUB;
    int want_lock = atomic_load(&rt->lock_wanted);
    return (want_inval || want_lock) && (!want_inval || atomic_load(&rt->inval_sub)) &&
           (!want_lock || atomic_load(&rt->lock_sub));
}

/* Wakes whoever waits for a subscription (open, a lock registration): all
 * channels are subscribed, or an attempt failed. */
static void sub_first_signal(struct redis_tier *rt)
{
    pthread_mutex_lock(&rt->sub_lock);
    rt->sub_first_done = 1;
    pthread_cond_broadcast(&rt->sub_cond);
    pthread_mutex_unlock(&rt->sub_lock);
}

static void sub_deliver(struct redis_tier *rt, const void *key, size_t len)
{
    pthread_mutex_lock(&rt->sub_lock);
    if (rt->inval_fn != NULL) {
        rt->inval_fn(rt->inval_arg, key, len);
    }
    pthread_mutex_unlock(&rt->sub_lock);
}

static void sub_message(struct redis_tier *rt, const redisReply *m)
{
    char op =
        m->type == REDIS_REPLY_STRING && m->len > TC_REDIS_ID_LEN ? m->str[TC_REDIS_ID_LEN] : 0;
    /* A clear's prefix may be empty (everything); a key never is. */
    size_t min = op == 'c' ? TC_REDIS_ID_LEN + 1 : TC_REDIS_ID_LEN + 2;
    if (m->type != REDIS_REPLY_STRING || m->len < min ||
        m->len > TC_REDIS_ID_LEN + 1 + TC_KEY_MAX || (op != 's' && op != 'd' && op != 'c')) {
        REDIS_COUNT(rt, inval_malformed);
        return;
    }
    if (memcmp(m->str, rt->id, TC_REDIS_ID_LEN) == 0) {
        REDIS_COUNT(rt, inval_own);
        return;
    }
    REDIS_COUNT(rt, inval_received);
    if (op == 'c') {
        pthread_mutex_lock(&rt->sub_lock);
        if (rt->inval_prefix_fn != NULL) {
            rt->inval_prefix_fn(rt->inval_prefix_arg, m->str + TC_REDIS_ID_LEN + 1,
                                m->len - TC_REDIS_ID_LEN - 1);
        }
        pthread_mutex_unlock(&rt->sub_lock);
        return;
    }
    sub_deliver(rt, m->str + TC_REDIS_ID_LEN + 1, m->len - TC_REDIS_ID_LEN - 1);
}

/* "<token> <name>" from any process, this one included (tier.h). */
static void sub_lock_message(struct redis_tier *rt, const redisReply *m)
{
    if (m->type != REDIS_REPLY_STRING || m->str == NULL) {
        REDIS_COUNT(rt, lock_malformed);
        return;
    }
    size_t scan = m->len < TC_LOCK_TOKEN_MAX ? m->len : TC_LOCK_TOKEN_MAX;
    const char *sp = memchr(m->str, ' ', scan);
    size_t toklen = sp != NULL ? (size_t)(sp - m->str) : 0;
    size_t name_len = sp != NULL ? m->len - toklen - 1 : 0;
    if (sp == NULL || !tc_redis_token_ok(m->str, toklen) || name_len == 0 ||
        name_len > TC_LOCK_NAME_MAX) {
        REDIS_COUNT(rt, lock_malformed);
        return;
    }
    char token[TC_LOCK_TOKEN_MAX];
    memcpy(token, m->str, toklen);
    token[toklen] = '\0';
    REDIS_COUNT(rt, lock_notices);
    pthread_mutex_lock(&rt->sub_lock);
    if (rt->lock_fn != NULL) {
        rt->lock_fn(rt->lock_arg, sp + 1, name_len, token);
    }
    pthread_mutex_unlock(&rt->sub_lock);
}

static int is_str(const redisReply *r, const char *s, size_t len)
{
    return r->type == REDIS_REPLY_STRING && r->str != NULL && r->len == len &&
           memcmp(r->str, s, len) == 0;
}

/* The subscription is gone (the socket is closed already): everything
 * subscribed is lost until the retry. */
static void sub_lost(struct redis_tier *rt, const char *why)
{
    rt->lock_sub_sent = 0;
    rt->sub_auth_pending = 0;
    atomic_store(&rt->inval_sub, 0);
    atomic_store(&rt->lock_sub, 0);
    rt->sub_lost = 1;
    pthread_mutex_lock(&rt->sub_lock);
    rt->lock_gap = 1;
    pthread_mutex_unlock(&rt->sub_lock);
    tc_redis_set_error(rt, "subscriber %s: %s", rt->target, why);
    sub_first_signal(rt);
    sub_schedule(rt);
}

static void sub_on_lost(void *arg, int protocol, const char *why)
{
    struct redis_tier *rt = arg;
    if (protocol) {
        REDIS_COUNT(rt, protocol_errors);
    }
    sub_lost(rt, why);
}

/* Closes the subscription for a reply it cannot have (redis_conn.c says why). */
static void sub_fault(struct redis_tier *rt, const char *why)
{
    REDIS_COUNT(rt, protocol_errors);
    tc_redis_io_close(&rt->sub_io);
    sub_lost(rt, why);
}

static void sub_on_reply(void *arg, redisReply *r)
{
    struct redis_tier *rt = arg;
    if (rt->sub_auth_pending) {
        rt->sub_auth_pending = 0;
        if (r->type == REDIS_REPLY_STATUS) {
            return;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            char why[TC_REDIS_ERR_TEXT];
            snprintf(why, sizeof(why), "AUTH refused: %.*s", (int)(r->len > 100 ? 100 : r->len),
                     r->str ? r->str : "");
            tc_redis_io_close(&rt->sub_io);
            sub_lost(rt, why);
            return;
        }
        sub_fault(rt, "a reply to AUTH that is not a status");
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        sub_fault(rt, "a reply that is neither a message nor a subscription");
        return;
    }
    const redisReply *kind = r->element[0], *ch = r->element[1];
    int inval = is_str(ch, rt->channel, rt->channel_len);
    int lock = is_str(ch, rt->lock_channel, rt->lock_channel_len);
    if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0) {
        if (inval) {
            sub_message(rt, r->element[2]);
        } else if (lock) {
            sub_lock_message(rt, r->element[2]);
        } else {
            REDIS_COUNT(rt, inval_malformed);
        }
    } else if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
        if (inval) {
            atomic_store(&rt->inval_sub, 1);
            if (rt->sub_lost) {
                /* Messages published while we were away are gone. */
                rt->sub_lost = 0;
                sub_deliver(rt, NULL, 0);
            }
        } else if (lock) {
            /* Stored before the gap check, under the lock a registration
             * takes to read it: either it sees 1, or we see its gap. */
            atomic_store(&rt->lock_sub, 1);
            pthread_mutex_lock(&rt->sub_lock);
            if (rt->lock_gap) {
                rt->lock_gap = 0;
                if (rt->lock_fn != NULL) {
                    rt->lock_fn(rt->lock_arg, NULL, 0, NULL);
                }
            }
            pthread_mutex_unlock(&rt->sub_lock);
        }
        if (tc_redis_sub_complete(rt)) {
            rt->sub_backoff_k = 0;
            sub_first_signal(rt);
        }
    } else {
        sub_fault(rt, "a push reply of an unknown kind");
    }
}

/* There is no connect timeout on a non-blocking connect: a host that drops
 * SYNs would hold the subscriber for minutes; a SUBSCRIBE that is never
 * answered likewise. */
static void sub_arm_check(struct redis_tier *rt)
{
    struct timeval tv = ms_tv(rt->connect_timeout_ms);
    evtimer_add(rt->sub_check_ev, &tv);
}

static void sub_connect(struct redis_tier *rt)
{
    char why[128];
    if (tc_redis_io_open(&rt->sub_io, (const struct sockaddr *)&rt->sa, rt->salen, why,
                         sizeof(why)) != TC_OK) {
        tc_redis_set_error(rt, "subscriber connect %s: %s", rt->target, why);
        sub_first_signal(rt);
        sub_schedule(rt);
        return;
    }
    if (rt->sub_ever) {
        REDIS_COUNT(rt, sub_reconnects);
    }
    rt->sub_ever = 1;
    const char *argv[3];
    size_t argvlen[3];
    int argc = tc_redis_auth_args(rt, argv, argvlen);
    enum tc_status st = TC_OK;
    if (argc > 0) {
        st = tc_redis_io_send(&rt->sub_io, argc, argv, argvlen);
        rt->sub_auth_pending = st == TC_OK;
    }
    argc = 0;
    argv[argc] = "SUBSCRIBE";
    argvlen[argc++] = 9;
    if (rt->invalidate == TC_REDIS_INVALIDATE_PUBSUB) {
        argv[argc] = rt->channel;
        argvlen[argc++] = rt->channel_len;
    }
    int lock = atomic_load(&rt->lock_wanted);
    if (lock) {
        argv[argc] = rt->lock_channel;
        argvlen[argc++] = rt->lock_channel_len;
    }
    if (st != TC_OK || tc_redis_io_send(&rt->sub_io, argc, argv, argvlen) != TC_OK) {
        tc_redis_io_close(&rt->sub_io);
        sub_lost(rt, "out of memory");
        return;
    }
    rt->lock_sub_sent = lock;
    sub_arm_check(rt);
}

static void sub_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_tier *rt = arg;
    char why[TC_REDIS_ERR_TEXT];
    (void)fd;
    (void)what;
    if (!tc_redis_io_is_open(&rt->sub_io) || tc_redis_sub_complete(rt)) {
        return;
    }
    snprintf(why, sizeof(why), "no SUBSCRIBE answer within %llu ms",
             (unsigned long long)rt->connect_timeout_ms);
    tc_redis_io_close(&rt->sub_io);
    sub_lost(rt, why);
}

/* A lock-release callback was registered: add the lock channel to a live
 * subscription (a connection made later includes it from the start). */
static void sub_add_lock_channel(struct redis_tier *rt)
{
    if (!tc_redis_io_is_open(&rt->sub_io) || rt->lock_sub_sent) {
        return;
    }
    const char *argv[] = {"SUBSCRIBE", rt->lock_channel};
    size_t argvlen[] = {9, rt->lock_channel_len};
    if (tc_redis_io_send(&rt->sub_io, 2, argv, argvlen) != TC_OK) {
        tc_redis_io_close(&rt->sub_io); /* reconnects, with the lock channel */
        sub_lost(rt, "out of memory");
        return;
    }
    rt->lock_sub_sent = 1;
    sub_arm_check(rt);
}

static void sub_cmd_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_tier *rt = arg;
    (void)what;
    char cmd[16];
    ssize_t n = read(fd, cmd, sizeof(cmd));
    if (n < 0 && errno == EINTR) {
        return;
    }
    int stop = n <= 0; /* the write end is gone: nobody can stop us otherwise */
    for (ssize_t i = 0; i < n; i++) {
        if (cmd[i] == 'q') {
            stop = 1;
        } else if (cmd[i] == 'l') {
            sub_add_lock_channel(rt);
        }
    }
    if (stop) {
        tc_redis_io_close(&rt->sub_io);
        event_base_loopbreak(rt->sub_base);
    }
}

static void *sub_main(void *arg)
{
    struct redis_tier *rt = arg;
    sub_connect(rt);
    event_base_dispatch(rt->sub_base);
    return NULL;
}

static void sub_command(struct redis_tier *rt, char b)
{
    ssize_t w;
    do {
        w = write(rt->sub_pipe[1], &b, 1);
    } while (w < 0 && errno == EINTR);
}

/* Waits on sub_cond (sub_lock held) until *done or connect_timeout_ms. */
static void sub_wait(struct redis_tier *rt, int (*done)(struct redis_tier *))
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(rt->connect_timeout_ms / 1000);
    until.tv_nsec += (long)(rt->connect_timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!done(rt)) {
        if (pthread_cond_timedwait(&rt->sub_cond, &rt->sub_lock, &until) != 0) {
            break;
        }
    }
}

static int wait_first(struct redis_tier *rt)
{
    return rt->sub_first_done;
}

static int wait_lock(struct redis_tier *rt)
{
    return atomic_load(&rt->lock_sub);
}

void tc_redis_sub_stop(struct redis_tier *rt)
{
    if (rt->sub_started) {
        sub_command(rt, 'q');
        pthread_join(rt->sub_thread, NULL);
        rt->sub_started = 0;
    }
    if (rt->sub_io_ready) {
        tc_redis_io_deinit(&rt->sub_io);
        rt->sub_io_ready = 0;
    }
    if (rt->sub_cmd_ev != NULL) {
        event_free(rt->sub_cmd_ev);
        rt->sub_cmd_ev = NULL;
    }
    if (rt->sub_check_ev != NULL) {
        event_free(rt->sub_check_ev);
        rt->sub_check_ev = NULL;
    }
    if (rt->sub_retry_ev != NULL) {
        event_free(rt->sub_retry_ev);
        rt->sub_retry_ev = NULL;
    }
    if (rt->sub_base != NULL) {
        event_base_free(rt->sub_base);
        rt->sub_base = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (rt->sub_pipe[i] >= 0) {
            close(rt->sub_pipe[i]);
            rt->sub_pipe[i] = -1;
        }
    }
}

enum tc_status tc_redis_sub_start(struct redis_tier *rt, char *err, size_t errlen)
{
    enum tc_status st = TC_ENOMEM;
    if (pipe(rt->sub_pipe) != 0) {
        tc_tier_errf(err, errlen, "redis: pipe() for the subscriber failed: %s", strerror(errno));
        rt->sub_pipe[0] = rt->sub_pipe[1] = -1;
        return TC_EIO;
    }
    rt->sub_base = event_base_new();
    if (rt->sub_base == NULL) {
        goto fail;
    }
    if (tc_redis_io_init(&rt->sub_io, rt->sub_base, &rt->sub_lim, sub_on_reply, sub_on_lost, rt) !=
        TC_OK) {
        goto fail;
    }
    rt->sub_io_ready = 1;
    rt->sub_io.keepalive = !rt->unix_socket;
    rt->sub_cmd_ev = event_new(rt->sub_base, rt->sub_pipe[0], EV_READ | EV_PERSIST, sub_cmd_cb, rt);
    rt->sub_retry_ev = evtimer_new(rt->sub_base, sub_retry_cb, rt);
    rt->sub_check_ev = evtimer_new(rt->sub_base, sub_check_cb, rt);
    if (rt->sub_cmd_ev == NULL || rt->sub_retry_ev == NULL || rt->sub_check_ev == NULL ||
        event_add(rt->sub_cmd_ev, NULL) != 0) {
        goto fail;
    }
    if (pthread_create(&rt->sub_thread, NULL, sub_main, rt) != 0) {
        tc_tier_errf(err, errlen, "redis: cannot start the subscriber thread");
        goto fail;
    }
    rt->sub_started = 1;
    /* Wait (bounded) for the first SUBSCRIBE, so that messages sent right
     * after this returns are not missed when Redis is up. */
    pthread_mutex_lock(&rt->sub_lock);
    sub_wait(rt, wait_first);
    pthread_mutex_unlock(&rt->sub_lock);
    return TC_OK;
fail:
    tc_redis_sub_stop(rt);
    return st;
}

enum tc_status tc_redis_on_invalidate(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    if (rt->invalidate != TC_REDIS_INVALIDATE_PUBSUB) {
        return TC_ENOTSUP;
    }
    /* Under the lock the subscriber holds while calling: after this
     * returns, the old callback is not running and will not run again. */
    pthread_mutex_lock(&rt->sub_lock);
    rt->inval_fn = fn;
    rt->inval_arg = arg;
    pthread_mutex_unlock(&rt->sub_lock);
    return TC_OK;
}

enum tc_status tc_redis_on_lock_release(struct tc_tier *t, tc_tier_lock_release_fn fn, void *arg)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    if (!rt->locks_ok) {
        return TC_ENOTSUP;
    }
    enum tc_status st = TC_OK;
    pthread_mutex_lock(&rt->sub_ctl);
    /* Set first, under the subscriber's lock (so the old one is done with):
     * a notice that arrives while we wait below must not be dropped. */
    pthread_mutex_lock(&rt->sub_lock);
    rt->lock_fn = fn;
    rt->lock_arg = arg;
    if (!atomic_load(&rt->lock_wanted)) {
        rt->lock_gap = 0; /* losses before anyone listened are nobody's gap */
    }
    pthread_mutex_unlock(&rt->sub_lock);
    if (fn != NULL && !atomic_load(&rt->lock_wanted)) {
        /* Subscribed from now on, until close, even if fn is unregistered:
         * an idle channel costs nothing. */
        atomic_store(&rt->lock_wanted, 1);
        if (!rt->sub_started) {
            st = tc_redis_sub_start(rt, NULL, 0); /* waits for the SUBSCRIBE */
        } else {
            sub_command(rt, 'l');
            pthread_mutex_lock(&rt->sub_lock);
            sub_wait(rt, wait_lock);
            pthread_mutex_unlock(&rt->sub_lock);
        }
        if (st != TC_OK) {
            atomic_store(&rt->lock_wanted, 0);
        }
    }
    pthread_mutex_lock(&rt->sub_lock);
    if (st != TC_OK) {
        rt->lock_fn = NULL;
        rt->lock_arg = NULL;
    } else if (fn != NULL && !atomic_load(&rt->lock_sub)) {
        /* Not subscribed yet (Redis down or slow): when it is, fn hears
         * "recheck everything" for what it may have missed until then. */
        rt->lock_gap = 1;
    }
    pthread_mutex_unlock(&rt->sub_lock);
    pthread_mutex_unlock(&rt->sub_ctl);
    return st;
}

enum tc_status tc_redis_on_invalidate_prefix(struct tc_tier *t, tc_tier_invalidate_prefix_fn fn,
                                             void *arg)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    if (rt->invalidate != TC_REDIS_INVALIDATE_PUBSUB) {
        return TC_ENOTSUP;
    }
    /* As tc_redis_on_invalidate(): swapped under the subscriber's lock. */
    pthread_mutex_lock(&rt->sub_lock);
    rt->inval_prefix_fn = fn;
    rt->inval_prefix_arg = arg;
    pthread_mutex_unlock(&rt->sub_lock);
    return TC_OK;
}
