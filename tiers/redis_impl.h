/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Private to the Redis tier (redis:// and redis+unix://). Not installed, not
 * included outside the files below; the public face is tier.h.
 *
 *   tier_redis.c   the backend: URI and open/close, get/set/del/clear, the
 *                  decoding of values, stats and health
 *   redis_io.c     one socket: connect, write, and a bounded read that hands
 *                  complete replies (parsed by hiredis' redisReader) to its
 *                  owner; tc_redis_io_*
 *   redis_conn.c   a ctx's connection: operations in flight ("rops") and the
 *                  replies they wait for, deadlines, the handshake, the
 *                  circuit breaker, and the blocking mode; tc_redis_*
 *   redis_sub.c    the subscriber thread (invalidation, lock notices);
 *                  tc_redis_sub_*
 *   redis_lock.c   the lease-lock scripts and operations; tc_redis_lock_*
 *
 * Why we own the I/O: hiredis 0.14's async layer asserts (aborting the
 * process) when a reply arrives that no callback waits for, and its reader
 * buffers whatever length a reply announces. Here every byte read passes a
 * framing check (tc_redis_scan) that refuses a length beyond the bounds
 * (struct tc_redis_limits) before the bytes arrive, and every complete reply
 * is matched against the command it answers; anything else closes that
 * connection. hiredis still parses the replies (redisReader) and formats the
 * commands (redisFormatCommandArgv).
 */
#ifndef TC_TIERS_REDIS_IMPL_H
#define TC_TIERS_REDIS_IMPL_H

#include "tiers/tier_impl.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

/* libevent's types by name only (STYLE R1: tiers/ headers do not pull in
 * libevent). */
struct event;
struct evbuffer;

/* Backend counters, emitted by stats (STYLE R11). */
#define REDIS_COUNTERS(X)                                                                          \
    X(timeouts)         /* operations past their deadline */                                       \
    X(failures)         /* operations failed by Redis or a lost connection */                      \
    X(bad_replies)      /* replies of the wrong shape, or values that did not decode */            \
    X(protocol_errors)  /* connections closed for a reply out of bounds, order or syntax */        \
    X(skipped)          /* operations failed fast while the circuit was open */                    \
    X(connects)         /* handshakes completed */                                                 \
    X(connect_failures) /* connects or handshakes that failed */                                   \
    X(circuit_opens)    /* CLOSED or HALF_OPEN -> OPEN */                                          \
    X(inval_published)  /* invalidation messages sent */                                           \
    X(inval_received)   /* messages from other instances handed to the callback */                 \
    X(inval_own)        /* our own messages, ignored */                                            \
    X(inval_malformed)  /* messages that did not parse, ignored */                                 \
    X(sub_reconnects)   /* subscriber connections re-made */                                       \
    X(lock_notices)     /* lock release messages handed to the callback */                         \
    X(lock_malformed)   /* lock channel messages that did not parse, ignored */                    \
    X(script_loads)     /* NOSCRIPT answers: a lock script resent as EVAL */

#define REDIS_COUNT(rt, name) atomic_fetch_add_explicit(&(rt)->n.name, 1, memory_order_relaxed)

enum { TC_REDIS_INVALIDATE_NONE = 0, TC_REDIS_INVALIDATE_PUBSUB = 1 };
enum tc_redis_lock_op {
    TC_REDIS_LOCK_ACQUIRE = 0,
    TC_REDIS_LOCK_RELEASE = 1,
    TC_REDIS_LOCK_PEEK = 2,
    TC_REDIS_LOCK_RENEW = 3, /* issue 16 */
    TC_REDIS_LOCK_OPS = 4
};

/* Counter and limit scripts (redis_count.c, issue 16). */
enum tc_redis_count_script {
    TC_REDIS_COUNT_ADD = 0,
    TC_REDIS_COUNT_GET,
    TC_REDIS_COUNT_DEL, /* counters' reset and limits' clear */
    TC_REDIS_LIMIT_FIXED,
    TC_REDIS_LIMIT_SLIDING,
    TC_REDIS_LIMIT_MOVING,
    TC_REDIS_LIMIT_GCRA,
    TC_REDIS_COUNT_SCRIPTS
};

#define TC_REDIS_ID_LEN   16 /* hex digits of the instance id */
#define TC_REDIS_ERR_TEXT 160
#define TC_REDIS_SHA_HEX  40

/* ---- the socket (redis_io.c) ---------------------------------------------- */

/* What one connection accepts from the server, per reply. A length prefix
 * beyond a bound is refused when its line ends, before the bytes it
 * announces are read. */
struct tc_redis_limits {
    size_t bulk_max;  /* longest bulk string ($N) */
    size_t line_max;  /* longest status or error line (+..., -...) */
    size_t array_max; /* most elements one *N may announce */
    size_t elems_max; /* most elements in one reply, nested ones included */
    size_t reply_max; /* most bytes in one reply, framing included */
};

/* Deepest array nesting accepted (ours reply with at most 2). */
#define TC_REDIS_DEPTH_MAX 4

/* The framing scanner: just enough of RESP to find where each length prefix
 * is and where each reply ends. The parsing proper is hiredis'. */
struct tc_redis_scan {
    int state; /* TYPE, LINE, BULK */
    char type; /* of the line being read */
    int cr;    /* the last byte of the line so far was '\r' */
    size_t linelen;
    char num[24];       /* a length or integer line */
    uint64_t bulk_left; /* payload bytes + CRLF still to come */
    int depth;
    uint64_t left[TC_REDIS_DEPTH_MAX]; /* elements still to come, per open array */
    uint64_t elems, bytes;             /* of the reply being read */
};

/** Receives one complete reply; @p r is freed when this returns. */
typedef void (*tc_redis_reply_fn)(void *arg, redisReply *r);
/**
 * The connection ended by itself: EOF, a socket error, or (@p protocol set)
 * bytes out of bounds or out of syntax. The socket is closed already;
 * @p why is for logs (no secrets, printable).
 */
typedef void (*tc_redis_lost_fn)(void *arg, int protocol, const char *why);

/** One connection to Redis on one event_base; used on that base's thread only. */
struct tc_redis_io {
    struct event_base *base;
    const struct tc_redis_limits *lim;
    tc_redis_reply_fn on_reply;
    tc_redis_lost_fn on_lost;
    void *arg;
    int fd; /* -1 when closed */
    int connecting;
    int keepalive;
    unsigned gen; /* bumped by every open and close */
    struct event *rev, *wev;
    struct evbuffer *out;
    redisReader *reader;
    struct tc_redis_scan scan;
};

/**
 * Initialises @p io closed, for @p base; @p lim must outlive it.
 * @return TC_OK or TC_ENOMEM (then nothing to deinit).
 */
enum tc_status tc_redis_io_init(struct tc_redis_io *io, struct event_base *base,
                                const struct tc_redis_limits *lim, tc_redis_reply_fn on_reply,
                                tc_redis_lost_fn on_lost, void *arg);
/** Closes and frees what init made. Before the event_base is freed. */
void tc_redis_io_deinit(struct tc_redis_io *io);
/**
 * Starts a non-blocking connect to @p sa (never resolves a name). Commands
 * sent before it completes go out once it does. On failure writes the
 * reason (strerror) to @p why and returns TC_EUNAVAIL (TC_ENOMEM).
 */
enum tc_status tc_redis_io_open(struct tc_redis_io *io, const struct sockaddr *sa, socklen_t len,
                                char *why, size_t whylen);
/** Closes the socket now (on_lost is not called). Closed: no-op. */
void tc_redis_io_close(struct tc_redis_io *io);
/** 1 while the socket is open (connecting or connected). */
int tc_redis_io_is_open(const struct tc_redis_io *io);
/**
 * Formats one command (hiredis) and queues it; the loop writes it (or
 * tc_redis_io_flush(), sooner). TC_OK, TC_EUNAVAIL (closed), TC_ENOMEM.
 */
enum tc_status tc_redis_io_send(struct tc_redis_io *io, int argc, const char **argv,
                                const size_t *argvlen);
/**
 * Writes what is queued now, if the socket is connected; the rest from the
 * loop. For the blocking mode, which runs the loop only to wait. May call
 * on_lost (a dead socket) before it returns.
 */
void tc_redis_io_flush(struct tc_redis_io *io);

/**
 * Scans @p n bytes of the stream. Returns NULL when all of them are in
 * bounds, or a reason, with *ok set to how many bytes before the offending
 * one may still be handed to the parser (they hold no complete bad line).
 */
const char *tc_redis_scan_feed(struct tc_redis_scan *s, const struct tc_redis_limits *lim,
                               const char *p, size_t n, size_t *ok);
/** Resets @p s for a new stream. */
void tc_redis_scan_reset(struct tc_redis_scan *s);

/* ---- the tier and its ctxs ------------------------------------------------ */

struct redis_tier {
    struct tc_tier base;
    int unix_socket;
    struct sockaddr_storage sa; /* resolved once, at open */
    socklen_t salen;
    char *target;          /* "127.0.0.1:6379" or "unix:/path", for messages */
    char *user, *password; /* password: never logged, never in errors */
    unsigned db;
    char *prefix;
    size_t prefix_len;
    uint64_t timeout_ms, connect_timeout_ms;
    uint64_t backoff_ms, backoff_max_ms;
    unsigned breaker_failures;
    int invalidate;
    char *channel;
    size_t channel_len;
    char id[TC_REDIS_ID_LEN + 1];
    struct tc_redis_limits lim;     /* data connections */
    struct tc_redis_limits sub_lim; /* the subscriber */

    /* Lease locks: keys "lock:"‖PREFIX‖NAME, notices on lock_channel. */
    char *lock_prefix;
    size_t lock_prefix_len;
    int locks_ok; /* 0: PREFIX would contain lock keys (tier_redis.c) */
    char *lock_channel;
    size_t lock_channel_len;
    char lock_sha[TC_REDIS_LOCK_OPS][TC_REDIS_SHA_HEX + 1]; /* for EVALSHA */
    /* Counters and limits: keys "rl:"‖PREFIX‖KIND‖":"‖KEY (redis_count.c). */
    char *count_prefix;
    size_t count_prefix_len;
    char count_sha[TC_REDIS_COUNT_SCRIPTS][TC_REDIS_SHA_HEX + 1];

    struct {
#define TC_X(name) _Atomic uint64_t name;
        REDIS_COUNTERS(TC_X)
#undef TC_X
    } n;
    _Atomic int ctx_total, ctx_open, ctx_half_open, ctx_ready;
    _Atomic int reachable; /* result of the last connect attempt by anyone */

    pthread_mutex_t err_lock;
    char last_err[TC_REDIS_ERR_TEXT];

    /* Subscriber thread (invalidate=pubsub, or a lock-release callback). */
    pthread_mutex_t sub_ctl; /* serialises starting the thread and lock registrations */
    pthread_t sub_thread;
    int sub_started; /* under sub_ctl (and read by close) */
    int sub_pipe[2]; /* commands to the thread through [1]: 'q' stop, 'l' lock channel */
    struct event_base *sub_base;
    struct event *sub_cmd_ev, *sub_retry_ev;
    struct event *sub_check_ev; /* connect + SUBSCRIBE deadline */
    struct tc_redis_io sub_io;  /* sub thread only */
    int sub_io_ready;           /* sub_io was initialised */
    int sub_auth_pending;       /* sub thread only: an AUTH reply is due first */
    unsigned sub_backoff_k;
    int sub_lost;             /* sub thread only: a subscription was lost since the last one */
    int sub_ever;             /* sub thread only: a connection was attempted before */
    int lock_sub_sent;        /* sub thread only: SUBSCRIBE lock_channel sent on sub_io */
    _Atomic int inval_sub;    /* the invalidation channel is subscribed */
    _Atomic int lock_sub;     /* the lock channel is subscribed */
    _Atomic int lock_wanted;  /* a lock-release callback was registered once */
    pthread_mutex_t sub_lock; /* guards the callbacks, lock_gap and the subscribe waits */
    pthread_cond_t sub_cond;
    int sub_first_done;
    tc_tier_invalidate_fn inval_fn;
    void *inval_arg;
    tc_tier_invalidate_prefix_fn inval_prefix_fn; /* issue 15: published clears */
    void *inval_prefix_arg;
    tc_tier_lock_release_fn lock_fn;
    void *lock_arg;
    int lock_gap; /* lock notices may have been missed since lock_fn was set */
};

/* Kinds of operation, and what each reply a rop waits for answers. */
enum tc_redis_rop_kind {
    ROP_HANDSHAKE = 1,
    ROP_GET,
    ROP_WRITE,
    ROP_CLEAR,
    ROP_LOCK,
    ROP_LIST,
    ROP_COUNT
};
enum tc_redis_what {
    W_AUTH = 1,
    W_SELECT,
    W_GET,
    W_PTTL,
    W_SET,
    W_UNLINK,
    W_PUBLISH, /* fire and forget: no rop */
    W_SCAN,
    W_UNLINK_MANY,
    W_LOCK,
    W_LSCAN, /* issue 15: a listing's SCAN */
    W_LPTTL, /* and the PTTL of each key it returned */
    W_FIRE,  /* a tag index update: fire and forget (no rop), an integer reply */
    W_COUNT,
};

/* One operation in flight. It stays until every reply it waits for has
 * arrived or its connection is gone, even after its request completed (a
 * timeout): the replies still come, in order, and must be matched. */
struct tc_redis_rop {
    struct tc_redis_rop *next, *prev; /* ctx->rops */
    struct tc_tier_req *req;          /* NULL once the request completed */
    struct tc_tier_lock_req *lreq;    /* ROP_LOCK: as req */
    struct tc_tier_count_req *creq;   /* ROP_COUNT: as req */
    int kind;
    int lop;           /* ROP_LOCK: enum tc_redis_lock_op */
    int resent;        /* ROP_LOCK, ROP_COUNT: NOSCRIPT made it resend as EVAL */
    uint64_t deadline; /* monotonic ms */
    int replies;       /* replies still to come */
    unsigned gen;      /* the connection (io.gen) it was sent on */
    enum tc_status st;
    int failed;   /* handshake: a reply was bad */
    int rejected; /* handshake: Redis said no (AUTH, SELECT) */
    int lost;     /* its connection went away */
    /* clear */
    char *pattern;
    size_t pattern_len;
};

/* A reply the connection waits for, in the order the commands went out. */
struct tc_redis_expect {
    struct tc_redis_rop *o; /* NULL for W_PUBLISH */
    int what;
};

/* A request to complete later: a cache request or (req NULL) a lock one. */
struct tc_redis_done {
    struct tc_tier_req *req;
    struct tc_tier_lock_req *lreq;
    enum tc_status st;
    struct tc_tier_count_req *creq; /* a counter or limit request: req and lreq NULL */
};

struct redis_ctx {
    struct tc_tier_ctx base;
    struct redis_tier *rt;
    struct event_base *evb;      /* base.base, or own_base in the blocking mode */
    struct event_base *own_base; /* blocking mode: a private loop to wait on */
    struct tc_redis_io io;
    struct {
        struct tc_redis_expect *v;
        size_t head, len, cap;
    } fifo;
    struct event *timer;      /* deadlines */
    uint64_t timer_at;        /* 0: not armed */
    struct event *retry;      /* breaker probes and reconnects */
    struct tc_redis_rop rops; /* sentinel of the list of live rops */
    struct tc_redis_rop *cache;
    size_t ncache;
    struct tc_redis_done *expired; /* scratch for the deadline walk */
    size_t expired_cap;
    /* Results known at once (circuit open, connection gone) complete from
     * the loop, not inside the call: a caller that issues again from done()
     * would otherwise spin without ever letting the probe timer run. */
    struct event *defer_ev;
    struct {
        struct tc_redis_done *v;
        size_t len, cap;
    } dq[2];
    int dq_cur, defer_armed;

    int conn; /* CONN_* */
    int brk;  /* BRK_* */
    unsigned fails, backoff_k;
    int probation; /* closed by a probe; the next failure reopens at once */
    int disposing;
    int probe;   /* open()'s one handshake: no breaker, no reconnect */
    int hs_done; /* probe: the handshake finished */
    int hs_ok;   /* probe: ...and succeeded */
    int hs_rejected;
    int sync_done; /* blocking mode: the operation being waited for completed */
    enum tc_status sync_st;
    uint64_t rng;
    struct tc_buf kbuf, vbuf;
};

enum { CONN_NONE = 0, CONN_CONNECTING, CONN_READY };
enum { BRK_CLOSED = 0, BRK_HALF_OPEN = 1, BRK_OPEN = 2 };

/* ---- redis_conn.c ------------------------------------------------------------ */

/** Monotonic ms. */
uint64_t tc_redis_mono_ms(void);
/**
 * The AUTH command of the tier's credentials into @p argv / @p argvlen
 * ("AUTH [user] password"; the strings stay the tier's). Returns argc, or 0
 * when the tier has no password (no AUTH to send).
 */
int tc_redis_auth_args(const struct redis_tier *rt, const char *argv[3], size_t argvlen[3]);
/** Records why Redis is unusable, for health (printable characters only). */
void tc_redis_set_error(struct redis_tier *rt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Capped exponential backoff for attempt @p k, jittered downwards. */
uint64_t tc_redis_backoff(const struct redis_tier *rt, unsigned k, uint64_t *rng);

/**
 * Makes a ctx on @p base (NULL: the blocking mode, on a private loop) and
 * starts connecting. @p probe: open()'s single handshake (no breaker).
 */
enum tc_status tc_redis_ctx_create(struct redis_tier *rt, struct event_base *base, int probe,
                                   struct redis_ctx **out);
/** Completes what is in flight with TC_EUNAVAIL, closes, frees. */
void tc_redis_ctx_destroy(struct redis_ctx *c);
/** open(): waits (bounded by connect_timeout_ms) for a probe ctx's handshake. */
void tc_redis_ctx_wait_handshake(struct redis_ctx *c);

/** Before an operation: fails fast while the circuit is not closed, (re)connects if needed. */
enum tc_status tc_redis_ready(struct redis_ctx *c);
/** Blocking mode, before tc_redis_ready: runs what is due (a probe) and waits for a probe. */
void tc_redis_blocking_prepare(struct redis_ctx *c);
/** A new rop of @p kind with a deadline @p timeout_ms from now; NULL when out of memory. */
struct tc_redis_rop *tc_redis_rop_get(struct redis_ctx *c, int kind, uint64_t timeout_ms);
/** Frees a rop that waits for no reply. */
void tc_redis_rop_put(struct redis_ctx *c, struct tc_redis_rop *o);
/** Sends a command whose reply @p o (may be NULL for W_PUBLISH) waits for. */
enum tc_status tc_redis_send(struct redis_ctx *c, struct tc_redis_rop *o, int what, int argc,
                             const char **argv, const size_t *argvlen);
/** Makes sure the deadline timer fires by @p deadline. */
void tc_redis_arm(struct redis_ctx *c, uint64_t deadline);
/** Completes a request (exactly once): to the caller, or to the blocking waiter. */
void tc_redis_complete(struct redis_ctx *c, struct tc_tier_req *req, struct tc_tier_lock_req *lreq,
                       enum tc_status st);
/**
 * After starting an operation with result @p st: async mode, turns a result
 * known at once into a completion from the loop; blocking mode, waits for
 * TC_EINPROGRESS to complete. Returns what the vtable function returns.
 */
enum tc_status tc_redis_settle(struct redis_ctx *c, struct tc_tier_req *req,
                               struct tc_tier_lock_req *lreq, enum tc_status st);
/** The breaker's view of an operation's end: a failure, or a success. */
void tc_redis_failed(struct redis_ctx *c);
void tc_redis_succeeded(struct redis_ctx *c);
/** A reply that breaks the protocol: closes the connection, counts it. */
void tc_redis_protocol_fault(struct redis_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- tier_redis.c: replies to the cache operations ------------------------------- */

/** A reply to a W_GET/W_PTTL/W_SET/W_UNLINK/W_SCAN/W_UNLINK_MANY of @p o. */
void tc_redis_data_reply(struct redis_ctx *c, struct tc_redis_rop *o, int what,
                         const redisReply *r);
/** @p o (GET, WRITE, CLEAR) waits for no more replies: completes it, frees it. */
void tc_redis_data_finish(struct redis_ctx *c, struct tc_redis_rop *o);

/* ---- redis_lock.c --------------------------------------------------------------- */

/** Fills rt->lock_sha; on failure writes @p err. */
enum tc_status tc_redis_lock_setup(struct redis_tier *rt, char *err, size_t errlen);
/** The vtable's lock operations (op: enum tc_redis_lock_op). */
enum tc_status tc_redis_lock(struct tc_tier_ctx *base, struct tc_tier_lock_req *req, int op);
/** A W_LOCK reply of @p o. */
void tc_redis_lock_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r);
/** @p o (ROP_LOCK) waits for no more replies: completes it, frees it. */
void tc_redis_lock_finish(struct redis_ctx *c, struct tc_redis_rop *o);
/** The SHA1 of @p script as EVALSHA wants it (40 lower-case hex digits). */
enum tc_status tc_redis_script_sha(const char *script, char out[TC_REDIS_SHA_HEX + 1], char *err,
                                   size_t errlen);
/** Whether @p r is Redis' NOSCRIPT error (the script cache lost the script). */
int tc_redis_is_noscript(const redisReply *r);
/** 1..47 characters of [0-9A-Za-z_-] (tier.h). */
int tc_redis_token_ok(const char *s, size_t len);

/* ---- redis_count.c (issue 16) ---------------------------------------------------- */

/** Fills rt->count_prefix and rt->count_sha; on failure writes @p err. */
enum tc_status tc_redis_count_setup(struct redis_tier *rt, char *err, size_t errlen);
/** The vtable's count operation. */
enum tc_status tc_redis_count(struct tc_tier_ctx *base, struct tc_tier_count_req *req);
/** A W_COUNT reply of @p o. */
void tc_redis_count_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r);
/** @p o (ROP_COUNT) waits for no more replies: completes it, frees it. */
void tc_redis_count_finish(struct redis_ctx *c, struct tc_redis_rop *o);
/** tc_redis_complete() for a counter or limit request. */
void tc_redis_complete_count(struct redis_ctx *c, struct tc_tier_count_req *creq,
                             enum tc_status st);
/** tc_redis_settle() for a counter or limit request. */
enum tc_status tc_redis_settle_count(struct redis_ctx *c, struct tc_tier_count_req *creq,
                                     enum tc_status st);

/* ---- redis_sub.c ----------------------------------------------------------------- */

/** Starts the subscriber thread and waits (bounded) for its first SUBSCRIBE. */
enum tc_status tc_redis_sub_start(struct redis_tier *rt, char *err, size_t errlen);
/** Stops and joins it; frees what start made. Safe when never started. */
void tc_redis_sub_stop(struct redis_tier *rt);
/** 1 when every channel wanted is subscribed. */
int tc_redis_sub_complete(struct redis_tier *rt);
enum tc_status tc_redis_on_invalidate(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg);
/** Registers the callback of published clears ('c' messages). */
enum tc_status tc_redis_on_invalidate_prefix(struct tc_tier *t, tc_tier_invalidate_prefix_fn fn,
                                             void *arg);
enum tc_status tc_redis_on_lock_release(struct tc_tier *t, tc_tier_lock_release_fn fn, void *arg);

#endif
