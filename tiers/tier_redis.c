/*
 * redis:// and redis+unix:// — L3, the tier every host shares.
 *
 *   redis://[user:password@]HOST:PORT/DB?prefix=tc:&timeout_ms=50&connect_timeout_ms=200
 *   redis+unix:///path/to/sock?db=0&prefix=tc:&invalidate=pubsub
 *
 * Storage. Key K lives at PREFIX‖K; its value is the 40-byte item header
 * (tiers/item.h, which carries the authoritative expiry E and a check over
 * the header, K and the payload) followed by the
 * payload, written with SET key value PX local_ttl. A get is one round trip:
 * GET and PTTL pipelined (PTTL gives the tier's local expiry). Everything
 * Redis returns is untrusted: a reply of the wrong type, a value that does
 * not decode as an item of K (a changed byte, or another key's value), or an
 * odd PTTL is a miss, counted in "bad_replies" (and a value that fails its
 * check in the tier layer's "corrupt" as well).
 *
 * Connections (STYLE R9). Each ctx owns one connection, made on the ctx's
 * thread: a hiredis async context attached to the ctx's event_base, or a
 * blocking redisContext when the ctx has no base (tools, tests, the bench).
 * Nothing here is shared between ctxs except atomic counters and the last
 * error text (under a mutex).
 *
 * Deadlines. hiredis 0.14 has no async timeouts, so each ctx keeps its
 * in-flight operations ("rops") in a list with a deadline each and one timer.
 * An operation past its deadline completes at once (a get as a miss, others
 * TC_ETIMEOUT) and its rop stays behind, abandoned, until Redis answers or
 * the connection is dropped. Blocking ctxs use socket timeouts instead.
 *
 * Circuit breaker, per ctx:
 *
 *            breaker_failures consecutive failures,
 *   CLOSED ── or a connect/handshake failure ─────────▶ OPEN ◀──────┐
 *     ▲                                                 │ backoff   │ probe
 *     │ handshake (AUTH, SELECT) answered               ▼ elapsed   │ failed
 *     └─────────────────────────────────────────── HALF_OPEN ───────┘
 *
 * A failure is an error reply, or a stall: the requests that expire in one
 * deadline sweep count once. A lost connection is not counted per request;
 * it is re-made at once and the breaker judges the reconnect.
 *
 * While OPEN or HALF_OPEN, operations fail fast without touching the network:
 * gets are misses ("skipped"), sets and deletes TC_EUNAVAIL. The backoff
 * doubles from backoff_ms up to backoff_max_ms (with up to 25% jitter
 * downwards) and resets when a probe succeeds. Async ctxs probe from a timer
 * on their base; blocking ctxs probe on the first operation after the
 * backoff. A connection lost while CLOSED is re-made at once (async: from
 * the retry timer when it was idle, or by the next operation, whose request
 * then waits behind the handshake; blocking: by the next operation).
 *
 * Caveat: a done() callback must not dispose of its own ctx (completions run
 * inside hiredis' and the deadline timer's loops over the ctx's state).
 *
 * Invalidation (invalidate=pubsub, the default). Every set and delete also
 * PUBLISHes, in the same round trip, "<16 hex instance id><op><key>" on the
 * channel PREFIX‖"invalidate@"‖DB. One subscriber thread per tier, with its
 * own event_base and connection, drops messages carrying its own instance id
 * (a fresh random id per open) and hands the others' keys to the callback
 * registered with tc_tier_on_invalidate(), on that thread. open() starts it
 * when invalidate=pubsub; tc_tier_on_lock_release() starts it otherwise.
 *
 * Lease locks (TC_TIER_CAP_LOCK_CLUSTER). Lock NAME lives at the key
 * "lock:"‖PREFIX‖NAME, its value the holder's token (32 hex digits from
 * RAND_bytes), its Redis TTL the lease. Not PREFIX‖"lock:"‖NAME: a cache key
 * may be any bytes, so that is also cache key "lock:"‖NAME, which a set
 * would overwrite (breaking exclusion) and clear would remove. Every key
 * under PREFIX is a possible cache key; "lock:"‖PREFIX is not under PREFIX
 * unless PREFIX is a prefix of it (empty, "lock:", "l", ...): with such a
 * prefix the lock operations are TC_ENOTSUP.
 *
 *   acquire  SET key token NX PX ttl, else PTTL          -> {1} | {0, pttl}
 *   release  GET == token ? DEL + PUBLISH : nothing      -> 1 | 0
 *   peek     GET (first 64 bytes) + PTTL                 -> 0 | {value, pttl}
 *
 * Each is one Lua script, so one round trip and atomic (a pipeline of
 * SET NX + PTTL could see the key expire or change hands in between). They
 * run by EVALSHA; a NOSCRIPT answer (Redis restarted, SCRIPT FLUSH) resends
 * that request once as EVAL, which caches the script again, within the same
 * deadline. Scripts read the key with redis.pcall so that a foreign value of
 * another type is "held by someone else", not a server error. A release
 * PUBLISHes "<token> <name>" on PREFIX‖"locks@"‖DB from inside the script,
 * so a notice goes out exactly when a lock was released. The subscriber
 * thread subscribes to that channel once a callback is registered with
 * tc_tier_on_lock_release() and hands every notice, this process's own
 * included, to it; after a lost subscription it calls fn(NULL, 0, NULL).
 * Lock operations share the data connections, deadlines and breaker with
 * the cache operations. A token read back (peek) that is not 1..47
 * characters of [0-9A-Za-z_-] is a foreign value: held, token "" (counted
 * in "bad_replies"). An acquire that fails after it was sent (TC_ETIMEOUT,
 * TC_EUNAVAIL) leaves its token in req->token: the lock may have been taken
 * under it, and releasing with it is safe; otherwise req->token is "".
 */
#include "tiers/tier_impl.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Backend counters, emitted by stats (STYLE R11). */
#define REDIS_COUNTERS(X)                                                                          \
    X(timeouts)         /* operations past their deadline */                                       \
    X(failures)         /* operations failed by Redis or a lost connection */                      \
    X(bad_replies)      /* replies or values that did not decode: misses */                        \
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

enum brk_state { BRK_CLOSED = 0, BRK_HALF_OPEN = 1, BRK_OPEN = 2 };
enum conn_state { CONN_NONE = 0, CONN_CONNECTING, CONN_READY };
enum rop_kind { ROP_HANDSHAKE = 1, ROP_GET, ROP_WRITE, ROP_CLEAR, ROP_LOCK };
enum { INVALIDATE_NONE = 0, INVALIDATE_PUBSUB = 1 };
enum lock_op { LOCK_ACQUIRE = 0, LOCK_RELEASE = 1, LOCK_PEEK = 2, LOCK_OPS = 3 };

#define ID_LEN     16 /* hex digits of the instance id */
#define SCAN_COUNT "512"
#define ROP_CACHE  256 /* freed rops kept per ctx */
#define ERR_TEXT   160
/* Keys in one UNLINK: what one SCAN returned (about SCAN_COUNT), as long as
 * it fits hiredis' int argc; the reply holding them is already in memory. */
#define CLEAR_MAX_KEYS (1u << 20)
/* Longest lease accepted (about 35,000 years; far from the overflow of
 * Redis' now + PX), and the remaining time reported for a lock key without
 * expiry (only a foreign writer makes one): "held, for longer than anyone
 * waits". Callers may add it to a ms clock without overflow. */
#define LOCK_TTL_MAX (1ull << 50)
#define TOKEN_LEN    32 /* hex digits of the tokens made here */
#define LOCK_NS      "lock:"
#define SHA_HEX      40

struct redis_tier {
    struct tc_tier base;
    int unix_socket;
    char *addr; /* numeric address (resolved once at open) or socket path */
    int port;
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
    char id[ID_LEN + 1];

    /* Lease locks: keys LOCK_NS‖PREFIX‖NAME, notices on lock_channel. */
    char *lock_prefix;
    size_t lock_prefix_len;
    int locks_ok; /* 0: PREFIX would contain lock keys (see the top comment) */
    char *lock_channel;
    size_t lock_channel_len;
    char lock_sha[LOCK_OPS][SHA_HEX + 1]; /* SHA1 of each script, for EVALSHA */

    struct {
#define TC_X(name) _Atomic uint64_t name;
        REDIS_COUNTERS(TC_X)
#undef TC_X
    } n;
    _Atomic int ctx_total, ctx_open, ctx_half_open, ctx_ready;
    _Atomic int reachable; /* result of the last connect attempt by anyone */

    pthread_mutex_t err_lock;
    char last_err[ERR_TEXT];

    /* Subscriber thread (invalidate=pubsub, or a lock-release callback). */
    pthread_mutex_t sub_ctl; /* serialises starting the thread and lock registrations */
    pthread_t sub_thread;
    int sub_started; /* under sub_ctl (and read by close) */
    int sub_pipe[2]; /* commands to the thread through [1]: 'q' stop, 'l' lock channel */
    struct event_base *sub_base;
    struct event *sub_cmd_ev, *sub_retry_ev;
    struct event *sub_check_ev; /* connect + SUBSCRIBE deadline */
    redisAsyncContext *sub_ac;  /* sub thread only */
    unsigned sub_backoff_k;
    int sub_lost;             /* sub thread only: a subscription was lost since the last one */
    int sub_ever;             /* sub thread only: a connection was attempted before */
    int lock_sub_sent;        /* sub thread only: SUBSCRIBE lock_channel sent on sub_ac */
    _Atomic int inval_sub;    /* the invalidation channel is subscribed */
    _Atomic int lock_sub;     /* the lock channel is subscribed */
    _Atomic int lock_wanted;  /* a lock-release callback was registered once */
    pthread_mutex_t sub_lock; /* guards the callbacks, lock_gap and the subscribe waits */
    pthread_cond_t sub_cond;
    int sub_first_done;
    tc_tier_invalidate_fn inval_fn;
    void *inval_arg;
    tc_tier_lock_release_fn lock_fn;
    void *lock_arg;
    int lock_gap; /* lock notices may have been missed since lock_fn was set */
};

struct redis_ctx;

/* A request to complete later: a cache request or (req NULL) a lock one. */
struct expired {
    struct tc_tier_req *req;
    struct tc_tier_lock_req *lreq;
    enum tc_status st;
};

/* One operation in flight on an async connection. hiredis holds it as
 * privdata until every reply it waits for has been delivered (or the
 * connection is freed, which delivers NULL replies), so it outlives its
 * request when the request times out. */
struct rop {
    struct rop *next, *prev;       /* ctx->rops, while ctx is alive */
    struct redis_ctx *ctx;         /* NULL once the ctx is disposed */
    struct tc_tier_req *req;       /* NULL once the request completed */
    struct tc_tier_lock_req *lreq; /* ROP_LOCK: as req */
    int lop;                       /* ROP_LOCK: enum lock_op */
    int resent;                    /* ROP_LOCK: NOSCRIPT made it resend as EVAL */
    uint64_t deadline;             /* monotonic ms */
    int kind;
    int replies; /* hiredis callbacks still to come */
    enum tc_status st;
    int failed;            /* handshake: a reply was bad */
    redisAsyncContext *ac; /* the connection the rop was sent on */
    /* clear */
    char *pattern;
    size_t pattern_len;
    int scanning;
};

struct redis_ctx {
    struct tc_tier_ctx base;
    struct redis_tier *rt;
    /* blocking mode */
    redisContext *sc;
    uint64_t probe_at; /* monotonic ms; OPEN -> probe allowed from then */
    /* async mode */
    redisAsyncContext *ac;
    struct event *timer; /* deadlines */
    uint64_t timer_at;   /* 0: not armed */
    struct event *retry; /* breaker probes */
    struct rop rops;     /* sentinel of the in-flight list */
    struct rop *cache;
    size_t ncache;
    struct expired *expired; /* scratch for the deadline walk */
    /* Results known at once (circuit open, connection gone) complete from
     * the loop, not inside the call: a caller that issues again from done()
     * would otherwise spin without ever letting the probe timer run. */
    struct event *defer_ev;
    struct defq {
        struct expired *v;
        size_t len, cap;
    } dq[2];
    int dq_cur, defer_armed;
    size_t expired_cap;

    int conn; /* enum conn_state */
    int brk;  /* enum brk_state */
    unsigned fails, backoff_k;
    int disposing;
    uint64_t rng;
    struct tc_buf kbuf, vbuf;
};

static const char *const redis_params[] = {
    "prefix",   "timeout_ms",       "connect_timeout_ms", "invalidate",     "db",
    "max_item", "breaker_failures", "backoff_ms",         "backoff_max_ms", NULL};

/* ---- small helpers -------------------------------------------------------- */

#define COUNT(rt, name) atomic_fetch_add_explicit(&(rt)->n.name, 1, memory_order_relaxed)

static uint64_t mono_ms(void)
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

static void set_error(struct redis_tier *rt, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records why Redis is unusable, for health. Texts come from hiredis or from
 * Redis error replies, neither of which contains the password. */
static void set_error(struct redis_tier *rt, const char *fmt, ...)
{
    char buf[ERR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (char *c = buf; *c; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) {
            *c = '?'; /* error replies are untrusted bytes too */
        }
    }
    pthread_mutex_lock(&rt->err_lock);
    memcpy(rt->last_err, buf, sizeof(buf));
    pthread_mutex_unlock(&rt->err_lock);
}

static const char *target_name(const struct redis_tier *rt, char *buf, size_t len)
{
    if (rt->unix_socket) {
        snprintf(buf, len, "unix:%s", rt->addr);
    } else {
        snprintf(buf, len, "%s:%d", rt->addr, rt->port);
    }
    return buf;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Capped exponential backoff, with jitter downwards so that the workers of
 * a host do not all probe Redis in the same millisecond. */
static uint64_t backoff_delay(const struct redis_tier *rt, unsigned k, uint64_t *rng)
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

/* Builds prefix‖key in ctx->kbuf. */
static enum tc_status join_key(struct redis_ctx *c, const char *prefix, size_t plen,
                               const void *key, size_t len)
{
    if (tc_buf_reserve(&c->kbuf, plen + len + 2) != TC_OK) {
        return TC_ENOMEM;
    }
    memcpy(c->kbuf.data, prefix, plen);
    memcpy(c->kbuf.data + plen, key, len);
    c->kbuf.len = plen + len;
    return TC_OK;
}

/* Builds PREFIX‖key in ctx->kbuf. */
static enum tc_status make_key(struct redis_ctx *c, const void *key, size_t len)
{
    return join_key(c, c->rt->prefix, c->rt->prefix_len, key, len);
}

/* Builds the invalidation message "<id><op><key>" in ctx->vbuf. */
static enum tc_status make_inval(struct redis_ctx *c, char op, const void *key, size_t len)
{
    if (tc_buf_reserve(&c->vbuf, ID_LEN + 1 + len) != TC_OK) {
        return TC_ENOMEM;
    }
    memcpy(c->vbuf.data, c->rt->id, ID_LEN);
    c->vbuf.data[ID_LEN] = (uint8_t)op;
    memcpy(c->vbuf.data + ID_LEN + 1, key, len);
    c->vbuf.len = ID_LEN + 1 + len;
    return TC_OK;
}

/* Builds header‖payload in ctx->vbuf. */
static enum tc_status make_value(struct redis_ctx *c, const struct tc_tier_req *req)
{
    if (tc_buf_reserve(&c->vbuf, TC_ITEM_HDR_SIZE + req->value_len) != TC_OK) {
        return TC_ENOMEM;
    }
    if (tc_item_encode(&req->hdr, req->key, req->key_len, req->value, c->vbuf.data) != TC_OK) {
        return TC_EINVAL;
    }
    if (req->value_len > 0) {
        memcpy(c->vbuf.data + TC_ITEM_HDR_SIZE, req->value, req->value_len);
    }
    c->vbuf.len = TC_ITEM_HDR_SIZE + req->value_len;
    return TC_OK;
}

/* ---- lease locks: scripts, keys, tokens ------------------------------------ */

/* KEYS[1] the lock key. ARGV: acquire token, ttl; release token, channel,
 * message. The replies are what lock_decode() accepts. */
static const char *const lock_script[LOCK_OPS] = {
    [LOCK_ACQUIRE] = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
                     "  return {1}\n"
                     "end\n"
                     "return {0, redis.call('PTTL', KEYS[1])}\n",
    [LOCK_RELEASE] = "if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then\n"
                     "  return 0\n"
                     "end\n"
                     "redis.call('DEL', KEYS[1])\n"
                     "redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
                     "return 1\n",
    /* At most 64 bytes of the value come back: enough to see that a
     * foreign value is not a token, without shipping all of it. */
    [LOCK_PEEK] = "local v = redis.pcall('GET', KEYS[1])\n"
                  "if not v then\n"
                  "  return 0\n"
                  "end\n"
                  "if type(v) ~= 'string' then\n"
                  "  v = ''\n"
                  "end\n"
                  "return {string.sub(v, 1, 64), redis.call('PTTL', KEYS[1])}\n",
};

/* 1..47 characters of [0-9A-Za-z_-] (tier.h): what a token may be. */
static int token_ok(const char *s, size_t len)
{
    if (len == 0 || len >= TC_LOCK_TOKEN_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '_' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

/* A fresh token: 128 bits from OpenSSL's CSPRNG, so that no two holders,
 * on any host, ever present the same one. */
static enum tc_status make_token(char out[TC_LOCK_TOKEN_MAX])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[TOKEN_LEN / 2];
    if (RAND_bytes(b, (int)sizeof(b)) != 1) {
        out[0] = '\0';
        return TC_EIO;
    }
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[TOKEN_LEN] = '\0';
    return TC_OK;
}

/* Builds LOCK_NS‖PREFIX‖name in ctx->kbuf. */
static enum tc_status make_lock_key(struct redis_ctx *c, const void *name, size_t len)
{
    return join_key(c, c->rt->lock_prefix, c->rt->lock_prefix_len, name, len);
}

/* The EVALSHA (or, with @p eval, EVAL) of a lock operation, shared by the
 * blocking and the async paths; the key and the release notice go into the
 * ctx's buffers, the TTL digits into ttl. Returns argc, or a negative
 * tc_status. */
static int lock_args(struct redis_ctx *c, const struct tc_tier_lock_req *req, int op, int eval,
                     char ttl[24], const char *argv[7], size_t argvlen[7])
{
    struct redis_tier *rt = c->rt;
    if (make_lock_key(c, req->name, req->name_len) != TC_OK) {
        return TC_ENOMEM;
    }
    argv[0] = eval ? "EVAL" : "EVALSHA";
    argvlen[0] = strlen(argv[0]);
    argv[1] = eval ? lock_script[op] : rt->lock_sha[op];
    argvlen[1] = strlen(argv[1]);
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (const char *)c->kbuf.data;
    argvlen[3] = c->kbuf.len;
    if (op == LOCK_PEEK) {
        return 4;
    }
    size_t toklen = strlen(req->token);
    argv[4] = req->token;
    argvlen[4] = toklen;
    if (op == LOCK_ACQUIRE) {
        snprintf(ttl, 24, "%llu", (unsigned long long)req->ttl_ms);
        argv[5] = ttl;
        argvlen[5] = strlen(ttl);
        return 6;
    }
    /* The notice "<token> <name>": tokens have no spaces, so the first
     * space ends the token and the name may hold any bytes. */
    if (tc_buf_reserve(&c->vbuf, toklen + 1 + req->name_len) != TC_OK) {
        return TC_ENOMEM;
    }
    memcpy(c->vbuf.data, req->token, toklen);
    c->vbuf.data[toklen] = ' ';
    memcpy(c->vbuf.data + toklen + 1, req->name, req->name_len);
    c->vbuf.len = toklen + 1 + req->name_len;
    argv[5] = rt->lock_channel;
    argvlen[5] = rt->lock_channel_len;
    argv[6] = (const char *)c->vbuf.data;
    argvlen[6] = c->vbuf.len;
    return 7;
}

/* ---- reply decoding (untrusted input) --------------------------------------- */

/* GET reply -> req->out / req->hdr. TC_ENOTFOUND for nil, TC_ECORRUPT for
 * anything that is not exactly one item, TC_EIO for a server error. */
static enum tc_status decode_value(struct redis_tier *rt, struct tc_tier_req *req,
                                   const redisReply *r)
{
    if (r->type == REDIS_REPLY_NIL) {
        return TC_ENOTFOUND;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* WRONGTYPE: another program stored a list or hash under our
         * prefix; that is foreign data, not a sick server. */
        if (r->str != NULL && r->len >= 9 && memcmp(r->str, "WRONGTYPE", 9) == 0) {
            COUNT(rt, bad_replies);
            return TC_ECORRUPT;
        }
        return TC_EIO;
    }
    if (r->type != REDIS_REPLY_STRING || r->str == NULL) {
        COUNT(rt, bad_replies);
        return TC_ECORRUPT;
    }
    struct tc_item_hdr h;
    if (tc_item_decode(r->str, r->len, req->key, req->key_len, &h) != TC_OK) {
        COUNT(rt, bad_replies);
        return TC_ECORRUPT;
    }
    if (tc_buf_set(req->out, r->str + TC_ITEM_HDR_SIZE, h.value_len) != TC_OK) {
        return TC_ENOMEM;
    }
    req->hdr = h;
    return TC_OK;
}

/* PTTL reply -> req->local_expire_ms. -1 means no expiry; -2 means the key
 * went away between GET and PTTL, which makes the hit a miss. */
static enum tc_status decode_pttl(struct redis_tier *rt, struct tc_tier_req *req,
                                  const redisReply *r)
{
    if (r->type != REDIS_REPLY_INTEGER) {
        if (r->type == REDIS_REPLY_ERROR) {
            return TC_EIO;
        }
        COUNT(rt, bad_replies);
        return TC_ECORRUPT;
    }
    if (r->integer == -1) {
        req->local_expire_ms = 0;
    } else if (r->integer >= 0 && (unsigned long long)r->integer < (1ull << 50)) {
        req->local_expire_ms = req->now_ms + (uint64_t)r->integer;
    } else if (r->integer == -2) {
        return TC_ENOTFOUND;
    } else {
        COUNT(rt, bad_replies);
        return TC_ECORRUPT;
    }
    return TC_OK;
}

static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->str != NULL && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* A PTTL as the remaining time of a held lock: >= 1 (a lease in its last
 * millisecond is still held), LOCK_TTL_MAX for a key without expiry. */
static uint64_t lock_remaining(long long pttl)
{
    if (pttl == -1 || pttl >= (long long)LOCK_TTL_MAX) {
        return LOCK_TTL_MAX;
    }
    return pttl < 1 ? 1 : (uint64_t)pttl;
}

/* A lock script's reply -> req->status material. TC_EIO for an error reply
 * (NOSCRIPT is handled before), TC_ECORRUPT for any other shape. */
static enum tc_status lock_decode(struct redis_tier *rt, int op, struct tc_tier_lock_req *req,
                                  const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        return TC_EIO;
    }
    switch (op) {
    case LOCK_ACQUIRE:
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_INTEGER) {
            if (r->element[0]->integer == 1 && r->elements == 1) {
                return TC_OK;
            }
            if (r->element[0]->integer == 0 && r->elements == 2 &&
                r->element[1]->type == REDIS_REPLY_INTEGER) {
                req->remaining_ms = lock_remaining(r->element[1]->integer);
                return TC_EEXIST;
            }
        }
        break;
    case LOCK_RELEASE:
        if (r->type == REDIS_REPLY_INTEGER && (r->integer == 0 || r->integer == 1)) {
            return r->integer == 1 ? TC_OK : TC_ENOTFOUND;
        }
        break;
    case LOCK_PEEK:
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
            return TC_ENOTFOUND;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_INTEGER) {
            const redisReply *v = r->element[0];
            if (v->str != NULL && token_ok(v->str, v->len)) {
                memcpy(req->token, v->str, v->len);
                req->token[v->len] = '\0';
            } else {
                COUNT(rt, bad_replies); /* a foreign value: held by someone unknown */
                req->token[0] = '\0';
            }
            /* -2: gone between GET and PTTL, which one script cannot see. */
            if (r->element[1]->integer == -2) {
                req->token[0] = '\0';
                return TC_ENOTFOUND;
            }
            req->remaining_ms = lock_remaining(r->element[1]->integer);
            return TC_OK;
        }
        break;
    }
    COUNT(rt, bad_replies);
    return TC_ECORRUPT;
}

/* Leaves req->token as the top comment says: an acquire keeps it only when
 * the lock is, or may be, held under it. */
static void lock_token_fixup(struct tc_tier_lock_req *req, int op, enum tc_status st)
{
    if (op == LOCK_ACQUIRE && st != TC_OK && st != TC_ETIMEOUT && st != TC_EUNAVAIL) {
        req->token[0] = '\0';
    } else if (op == LOCK_PEEK && st != TC_OK) {
        req->token[0] = '\0';
    }
}

/* ---- breaker state (shared by both modes) ------------------------------------ */

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
        COUNT(rt, circuit_opens);
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

/* ---- blocking mode ------------------------------------------------------------ */

static enum tc_status handshake_reply(struct redis_tier *rt, const char *what, redisReply *r)
{
    char tgt[160];
    if (r == NULL) {
        return TC_EIO;
    }
    enum tc_status st = TC_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        set_error(rt, "%s: %s refused: %.*s", target_name(rt, tgt, sizeof(tgt)), what,
                  (int)(r->len > 100 ? 100 : r->len), r->str ? r->str : "");
        st = TC_EUNAVAIL;
    } else if (r->type != REDIS_REPLY_STATUS) {
        set_error(rt, "%s: unexpected reply to %s", target_name(rt, tgt, sizeof(tgt)), what);
        st = TC_ECORRUPT;
    }
    return st;
}

/* Connects, authenticates and selects the DB, blocking for at most
 * connect_timeout per step. *rejected is set when Redis answered but said no
 * (bad password, unknown user, bad DB): retrying will not help. */
static redisContext *sync_connect(struct redis_tier *rt, int *rejected)
{
    char tgt[160];
    struct timeval ctv = ms_tv(rt->connect_timeout_ms);
    redisContext *sc = rt->unix_socket ? redisConnectUnixWithTimeout(rt->addr, ctv)
                                       : redisConnectWithTimeout(rt->addr, rt->port, ctv);
    *rejected = 0;
    if (sc == NULL || sc->err) {
        set_error(rt, "connect %s: %s", target_name(rt, tgt, sizeof(tgt)),
                  sc ? sc->errstr : "out of memory");
        goto fail;
    }
    if (redisSetTimeout(sc, ctv) != REDIS_OK) {
        set_error(rt, "connect %s: cannot set socket timeout", target_name(rt, tgt, sizeof(tgt)));
        goto fail;
    }
    const char *argv[3];
    size_t argvlen[3];
    int argc = 0;
    if (rt->password != NULL) {
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;
        if (rt->user != NULL) {
            argv[argc] = rt->user;
            argvlen[argc++] = strlen(rt->user);
        }
        argv[argc] = rt->password;
        argvlen[argc++] = strlen(rt->password);
        redisReply *r = redisCommandArgv(sc, argc, argv, argvlen);
        enum tc_status st = handshake_reply(rt, "AUTH", r);
        if (r == NULL) {
            set_error(rt, "%s: AUTH: %s", target_name(rt, tgt, sizeof(tgt)), sc->errstr);
        }
        freeReplyObject(r);
        if (st != TC_OK) {
            *rejected = st == TC_EUNAVAIL;
            goto fail;
        }
    }
    char db[16];
    snprintf(db, sizeof(db), "%u", rt->db);
    argv[0] = "SELECT";
    argvlen[0] = 6;
    argv[1] = db;
    argvlen[1] = strlen(db);
    redisReply *r = redisCommandArgv(sc, 2, argv, argvlen);
    enum tc_status st = handshake_reply(rt, "SELECT", r);
    if (r == NULL) {
        set_error(rt, "%s: SELECT: %s", target_name(rt, tgt, sizeof(tgt)), sc->errstr);
    }
    freeReplyObject(r);
    if (st != TC_OK) {
        *rejected = st == TC_EUNAVAIL;
        goto fail;
    }
    if (redisSetTimeout(sc, ms_tv(rt->timeout_ms)) != REDIS_OK) {
        goto fail;
    }
    atomic_store(&rt->reachable, 1);
    COUNT(rt, connects);
    return sc;
fail:
    if (sc != NULL) {
        redisFree(sc);
    }
    atomic_store(&rt->reachable, 0);
    COUNT(rt, connect_failures);
    return NULL;
}

static void sync_drop(struct redis_ctx *c)
{
    if (c->sc != NULL) {
        redisFree(c->sc);
        c->sc = NULL;
    }
    conn_set(c, CONN_NONE);
}

static void sync_trip(struct redis_ctx *c)
{
    sync_drop(c);
    brk_set(c, BRK_OPEN);
    c->probe_at = mono_ms() + backoff_delay(c->rt, c->backoff_k, &c->rng);
    if (c->backoff_k < 30) {
        c->backoff_k++;
    }
}

/* Makes sure the blocking connection is usable; fails fast while open. */
static enum tc_status sync_ready(struct redis_ctx *c)
{
    int rejected;
    if (c->sc != NULL) {
        return TC_OK;
    }
    if (c->brk == BRK_OPEN && mono_ms() < c->probe_at) {
        COUNT(c->rt, skipped);
        return TC_EUNAVAIL;
    }
    if (c->brk == BRK_OPEN) {
        brk_set(c, BRK_HALF_OPEN);
    }
    c->sc = sync_connect(c->rt, &rejected);
    if (c->sc == NULL) {
        sync_trip(c);
        return TC_EUNAVAIL;
    }
    conn_set(c, CONN_READY);
    brk_set(c, BRK_CLOSED);
    c->fails = 0;
    c->backoff_k = 0;
    return TC_OK;
}

/* A blocking call failed with hiredis' I/O error for SO_RCVTIMEO/SO_SNDTIMEO. */
static int sync_timed_out(const redisContext *sc)
{
    return sc != NULL && sc->err == REDIS_ERR_IO &&
           (errno == EAGAIN || errno == EWOULDBLOCK || strstr(sc->errstr, "temporarily") != NULL);
}

/* A failed exchange: the connection is in an unknown state (a late reply
 * could still arrive), so it is dropped; the breaker counts the failure. */
static void sync_failed(struct redis_ctx *c)
{
    struct redis_tier *rt = c->rt;
    char tgt[160];
    if (c->sc != NULL && c->sc->err) {
        int timeout = sync_timed_out(c->sc);
        if (timeout) {
            COUNT(rt, timeouts);
        } else {
            COUNT(rt, failures);
        }
        set_error(rt, "%s: %s", target_name(rt, tgt, sizeof(tgt)),
                  timeout ? "operation timed out" : c->sc->errstr);
        sync_drop(c);
    } else {
        COUNT(rt, failures);
    }
    /* A dropped connection is re-made by the next operation; only repeated
     * failures (or a failed reconnect, in sync_ready) open the circuit. */
    if (++c->fails >= rt->breaker_failures) {
        sync_trip(c);
    }
}

/* Sends n pipelined commands and reads their n replies into r[]. */
static enum tc_status sync_exchange(struct redis_ctx *c, int n, const int *argc,
                                    const char *const *argv[], const size_t *argvlen[],
                                    redisReply **r)
{
    for (int i = 0; i < n; i++) {
        r[i] = NULL;
    }
    for (int i = 0; i < n; i++) {
        if (redisAppendCommandArgv(c->sc, argc[i], (const char **)argv[i], argvlen[i]) !=
            REDIS_OK) {
            return TC_ENOMEM;
        }
    }
    for (int i = 0; i < n; i++) {
        void *rep = NULL;
        if (redisGetReply(c->sc, &rep) != REDIS_OK || rep == NULL) {
            for (int j = 0; j < i; j++) {
                freeReplyObject(r[j]);
                r[j] = NULL;
            }
            return TC_EIO;
        }
        r[i] = rep;
    }
    return TC_OK;
}

static enum tc_status sync_get(struct redis_ctx *c, struct tc_tier_req *req)
{
    struct redis_tier *rt = c->rt;
    enum tc_status st = sync_ready(c);
    if (st != TC_OK) {
        return TC_ENOTFOUND; /* a skipped get is a miss */
    }
    if (make_key(c, req->key, req->key_len) != TC_OK) {
        return TC_ENOMEM;
    }
    const char *a0[] = {"GET", (const char *)c->kbuf.data};
    const char *a1[] = {"PTTL", (const char *)c->kbuf.data};
    size_t l0[] = {3, c->kbuf.len}, l1[] = {4, c->kbuf.len};
    const char *const *argv[] = {a0, a1};
    const size_t *argvlen[] = {l0, l1};
    int argc[] = {2, 2};
    redisReply *r[2];
    st = sync_exchange(c, 2, argc, argv, argvlen, r);
    if (st == TC_EIO) {
        sync_failed(c);
        return TC_ENOTFOUND;
    }
    if (st != TC_OK) {
        return st;
    }
    st = decode_value(rt, req, r[0]);
    if (st == TC_OK) {
        st = decode_pttl(rt, req, r[1]);
    }
    freeReplyObject(r[0]);
    freeReplyObject(r[1]);
    if (st == TC_EIO) {
        sync_failed(c); /* an error reply: the server is not serving */
    } else {
        c->fails = 0;
    }
    if (st != TC_OK && st != TC_ENOMEM) {
        req->out->len = 0;
        if (st != TC_ECORRUPT) {
            st = TC_ENOTFOUND;
        }
    }
    return st;
}

/* The command of a write, shared by the blocking and the async paths:
 * "SET key value [PX ttl]" or "UNLINK key", with key and value formatted
 * into the ctx's buffers and the TTL digits into px. Returns argc, or a
 * negative tc_status. */
static int write_args(struct redis_ctx *c, struct tc_tier_req *req, int is_set, char px[24],
                      const char *argv[5], size_t argvlen[5])
{
    if (make_key(c, req->key, req->key_len) != TC_OK) {
        return TC_ENOMEM;
    }
    if (!is_set) {
        argv[0] = "UNLINK";
        argvlen[0] = 6;
        argv[1] = (const char *)c->kbuf.data;
        argvlen[1] = c->kbuf.len;
        return 2;
    }
    enum tc_status st = make_value(c, req);
    if (st != TC_OK) {
        return st;
    }
    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *)c->kbuf.data;
    argvlen[1] = c->kbuf.len;
    argv[2] = (const char *)c->vbuf.data;
    argvlen[2] = c->vbuf.len;
    if (req->local_expire_ms == 0) {
        return 3;
    }
    snprintf(px, 24, "%llu", (unsigned long long)(req->local_expire_ms - req->now_ms));
    argv[3] = "PX";
    argvlen[3] = 2;
    argv[4] = px;
    argvlen[4] = strlen(px);
    return 5;
}

/* Write (set, delete) plus its PUBLISH in one round trip. */
static enum tc_status sync_write(struct redis_ctx *c, struct tc_tier_req *req, int is_set)
{
    struct redis_tier *rt = c->rt;
    enum tc_status st = sync_ready(c);
    if (st != TC_OK) {
        return st;
    }
    char px[24];
    const char *a0[5];
    size_t l0[5];
    int argc[2];
    if ((argc[0] = write_args(c, req, is_set, px, a0, l0)) < 0) {
        return (enum tc_status)argc[0];
    }
    int n = 1;
    const char *a1[3];
    size_t l1[3];
    struct tc_buf msg = TC_BUF_INIT;
    if (rt->invalidate == INVALIDATE_PUBSUB) {
        /* The value is already formatted into hiredis' buffer by the append
         * below, but the message needs its own buffer: vbuf holds the value. */
        if (tc_buf_reserve(&msg, ID_LEN + 1 + req->key_len) != TC_OK) {
            return TC_ENOMEM;
        }
        memcpy(msg.data, rt->id, ID_LEN);
        msg.data[ID_LEN] = is_set ? 's' : 'd';
        memcpy(msg.data + ID_LEN + 1, req->key, req->key_len);
        msg.len = ID_LEN + 1 + req->key_len;
        a1[0] = "PUBLISH";
        l1[0] = 7;
        a1[1] = rt->channel;
        l1[1] = strlen(rt->channel);
        a1[2] = (const char *)msg.data;
        l1[2] = msg.len;
        argc[1] = 3;
        n = 2;
    }
    const char *const *argv[] = {a0, a1};
    const size_t *argvlen[] = {l0, l1};
    redisReply *r[2] = {NULL, NULL};
    st = sync_exchange(c, n, argc, argv, argvlen, r);
    tc_buf_deinit(&msg);
    if (st == TC_EIO) {
        int timeout = sync_timed_out(c->sc);
        sync_failed(c);
        return timeout ? TC_ETIMEOUT : TC_EUNAVAIL;
    }
    if (st != TC_OK) {
        return st;
    }
    if (r[0]->type == REDIS_REPLY_ERROR) {
        st = TC_EIO;
    } else if (is_set && r[0]->type != REDIS_REPLY_STATUS) {
        st = TC_ECORRUPT;
    } else if (!is_set && r[0]->type != REDIS_REPLY_INTEGER) {
        st = TC_ECORRUPT;
    }
    if (n == 2) {
        COUNT(rt, inval_published);
    }
    freeReplyObject(r[0]);
    freeReplyObject(r[1]);
    if (st == TC_EIO) {
        sync_failed(c);
    } else {
        c->fails = 0;
    }
    return st;
}

/* A lock script, blocking: EVALSHA, and EVAL once after NOSCRIPT. */
static enum tc_status sync_lock(struct redis_ctx *c, struct tc_tier_lock_req *req, int op)
{
    struct redis_tier *rt = c->rt;
    enum tc_status st = sync_ready(c);
    if (st != TC_OK) {
        return st;
    }
    if (op == LOCK_ACQUIRE && (st = make_token(req->token)) != TC_OK) {
        return st;
    }
    redisReply *r = NULL;
    for (int eval = 0;; eval = 1) {
        char ttl[24];
        const char *argv[7];
        size_t argvlen[7];
        int argc = lock_args(c, req, op, eval, ttl, argv, argvlen);
        if (argc < 0) {
            return (enum tc_status)argc; /* not sent: lock_token_fixup() clears a new token */
        }
        const char *const *av[] = {argv};
        const size_t *al[] = {argvlen};
        st = sync_exchange(c, 1, &argc, av, al, &r);
        if (st == TC_EIO) {
            int timeout = sync_timed_out(c->sc);
            sync_failed(c);
            return timeout ? TC_ETIMEOUT : TC_EUNAVAIL;
        }
        if (st != TC_OK) {
            return st;
        }
        if (eval || !is_noscript(r)) {
            break;
        }
        COUNT(rt, script_loads);
        freeReplyObject(r);
        r = NULL;
    }
    st = lock_decode(rt, op, req, r);
    freeReplyObject(r);
    if (st == TC_EIO) {
        sync_failed(c); /* an error reply: the server is not serving */
    } else {
        c->fails = 0;
    }
    return st;
}

/* Escapes glob metacharacters so that MATCH takes the prefix literally. */
static char *make_pattern(const struct redis_tier *rt, const void *key, size_t len, size_t *outlen)
{
    size_t n = rt->prefix_len + len;
    char *p = malloc(2 * n + 2);
    if (p == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = i < rt->prefix_len ? rt->prefix[i] : ((const char *)key)[i - rt->prefix_len];
        if (ch == '*' || ch == '?' || ch == '[' || ch == ']' || ch == '\\') {
            p[o++] = '\\';
        }
        p[o++] = ch;
    }
    p[o++] = '*';
    p[o] = '\0';
    *outlen = o;
    return p;
}

/* Validates a SCAN reply: [cursor, [key, ...]] with string keys. */
static int scan_reply_ok(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len == 0 ||
        r->element[0]->len > 24 || r->element[1]->type != REDIS_REPLY_ARRAY ||
        r->element[1]->elements > CLEAR_MAX_KEYS) {
        return 0; /* an untrusted reply: refused rather than partly applied */
    }
    for (size_t i = 0; i < r->element[0]->len; i++) {
        if (r->element[0]->str[i] < '0' || r->element[0]->str[i] > '9') {
            return 0;
        }
    }
    for (size_t i = 0; i < r->element[1]->elements; i++) {
        if (r->element[1]->element[i]->type != REDIS_REPLY_STRING) {
            return 0;
        }
    }
    return 1;
}

static int scan_done(const redisReply *r)
{
    return r->element[0]->len == 1 && r->element[0]->str[0] == '0';
}

/* Fills argv for UNLINK with the keys of a SCAN reply. */
static enum tc_status unlink_args(const redisReply *keys, const char ***argv, size_t **argvlen)
{
    size_t n = keys->elements;
    *argv = malloc((n + 1) * sizeof(**argv));
    *argvlen = malloc((n + 1) * sizeof(**argvlen));
    if (*argv == NULL || *argvlen == NULL) {
        free(*argv);
        free(*argvlen);
        return TC_ENOMEM;
    }
    (*argv)[0] = "UNLINK";
    (*argvlen)[0] = 6;
    for (size_t i = 0; i < n; i++) {
        (*argv)[i + 1] = keys->element[i]->str;
        (*argvlen)[i + 1] = keys->element[i]->len;
    }
    return TC_OK;
}

static enum tc_status sync_clear(struct redis_ctx *c, struct tc_tier_req *req)
{
    enum tc_status st = sync_ready(c);
    if (st != TC_OK) {
        return st;
    }
    size_t plen;
    char *pat = make_pattern(c->rt, req->key, req->key_len, &plen);
    if (pat == NULL) {
        return TC_ENOMEM;
    }
    char cursor[32] = "0";
    uint64_t removed = 0;
    for (;;) {
        const char *argv[] = {"SCAN", cursor, "MATCH", pat, "COUNT", SCAN_COUNT};
        size_t argvlen[] = {4, strlen(cursor), 5, plen, 5, strlen(SCAN_COUNT)};
        redisReply *r = redisCommandArgv(c->sc, 6, argv, argvlen);
        if (r == NULL) {
            sync_failed(c);
            st = TC_EUNAVAIL;
            break;
        }
        if (!scan_reply_ok(r)) {
            st = r->type == REDIS_REPLY_ERROR ? TC_EIO : TC_ECORRUPT;
            freeReplyObject(r);
            break;
        }
        const redisReply *keys = r->element[1];
        if (keys->elements > 0) {
            const char **uargv;
            size_t *uargvlen;
            if ((st = unlink_args(keys, &uargv, &uargvlen)) != TC_OK) {
                freeReplyObject(r);
                break;
            }
            redisReply *u = redisCommandArgv(c->sc, (int)keys->elements + 1, uargv, uargvlen);
            free(uargv);
            free(uargvlen);
            if (u == NULL) {
                freeReplyObject(r);
                sync_failed(c);
                st = TC_EUNAVAIL;
                break;
            }
            if (u->type == REDIS_REPLY_INTEGER && u->integer > 0) {
                removed += (uint64_t)u->integer;
            }
            freeReplyObject(u);
        }
        int done = scan_done(r);
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = '\0';
        freeReplyObject(r);
        if (done) {
            break;
        }
    }
    free(pat);
    req->count = removed;
    return st;
}

/* ---- async mode: rops and deadlines ---------------------------------------------- */

static struct rop *rop_get(struct redis_ctx *c, int kind, uint64_t timeout_ms)
{
    struct rop *o = c->cache;
    if (o != NULL) {
        c->cache = o->next;
        c->ncache--;
    } else if ((o = malloc(sizeof(*o))) == NULL) {
        return NULL;
    }
    memset(o, 0, sizeof(*o));
    o->ctx = c;
    o->kind = kind;
    o->st = TC_OK;
    o->deadline = mono_ms() + timeout_ms;
    o->ac = c->ac;
    /* Append: the list is the order of sending. */
    o->prev = c->rops.prev;
    o->next = &c->rops;
    c->rops.prev->next = o;
    c->rops.prev = o;
    return o;
}

static void rop_put(struct rop *o)
{
    struct redis_ctx *c = o->ctx;
    free(o->pattern);
    o->pattern = NULL;
    if (c == NULL) {
        free(o); /* the ctx is gone; the rop was orphaned at dispose */
        return;
    }
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

static void arm_timer(struct redis_ctx *c, uint64_t deadline)
{
    if (c->timer_at != 0 && c->timer_at <= deadline) {
        return;
    }
    uint64_t now = mono_ms();
    struct timeval tv = ms_tv(deadline > now ? deadline - now : 0);
    evtimer_add(c->timer, &tv);
    c->timer_at = deadline;
}

static void async_trip(struct redis_ctx *c);

/* Drops the async connection. Its pending callbacks then run with NULL
 * replies: right now, or after the current hiredis callback returns. */
static void async_drop(struct redis_ctx *c)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    conn_set(c, CONN_NONE);
    if (ac != NULL && !(ac->c.flags & (REDIS_FREEING | REDIS_DISCONNECTING))) {
        redisAsyncFree(ac);
    }
}

static void expired_complete(const struct expired *e)
{
    if (e->req != NULL) {
        tc_tier_complete(e->req, e->st);
    } else {
        tc_tier_lock_complete(e->lreq, e->st);
    }
}

/* Completes a request, unless it already completed (timeout, shutdown). */
static void rop_complete(struct rop *o, enum tc_status st)
{
    struct expired e = {o->req, o->lreq, st};
    if (e.req == NULL && e.lreq == NULL) {
        return;
    }
    o->req = NULL;
    o->lreq = NULL;
    expired_complete(&e);
}

/* Counts a failed operation; opens the circuit after too many in a row. */
static void async_failed(struct redis_ctx *c)
{
    if (c->disposing) {
        return;
    }
    if (++c->fails >= c->rt->breaker_failures && c->brk == BRK_CLOSED) {
        async_trip(c);
    }
}

/* Only an error reply is a failure of its own for the breaker: a lost
 * connection (TC_EUNAVAIL) fails every request in flight at once, and is
 * judged by whether the reconnect that follows succeeds. */
static void breaker_count(struct redis_ctx *c, enum tc_status st)
{
    if (st == TC_EIO) {
        async_failed(c);
    }
}

/* A NULL reply: the connection died under this rop. */
static void conn_lost(struct redis_ctx *c, const redisAsyncContext *ac)
{
    char tgt[160];
    if (c != NULL && c->ac == ac) {
        set_error(c->rt, "%s: %s", target_name(c->rt, tgt, sizeof(tgt)),
                  ac->errstr[0] ? ac->errstr : "connection lost");
        c->ac = NULL; /* hiredis is freeing it already */
        conn_set(c, CONN_NONE);
    }
}

static enum tc_status fail_status(int kind, int timeout)
{
    if (kind == ROP_GET) {
        return TC_ENOTFOUND;
    }
    return timeout ? TC_ETIMEOUT : TC_EUNAVAIL;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ctx *c = arg;
    struct redis_tier *rt = c->rt;
    (void)fd;
    (void)what;
    c->timer_at = 0;
    uint64_t now = mono_ms();
    size_t n = 0;
    int handshake_late = 0;
    /* Phase 1 only marks: completing a request may run user code that sends
     * or drops the connection, which changes the list. */
    for (struct rop *o = c->rops.next; o != &c->rops; o = o->next) {
        if (o->deadline > now || (o->req == NULL && o->lreq == NULL && o->kind != ROP_HANDSHAKE)) {
            continue;
        }
        if (o->kind == ROP_HANDSHAKE) {
            if (!o->failed && o->ac == c->ac) {
                o->failed = 1;
                handshake_late = 1;
            }
            continue;
        }
        if (n == c->expired_cap) {
            size_t cap = c->expired_cap ? c->expired_cap * 2 : 64;
            struct expired *p = realloc(c->expired, cap * sizeof(*p));
            if (p == NULL) {
                break; /* the rest waits for the next tick */
            }
            c->expired = p;
            c->expired_cap = cap;
        }
        c->expired[n].req = o->req;
        c->expired[n].lreq = o->lreq;
        c->expired[n++].st = fail_status(o->kind, 1);
        o->req = NULL;
        o->lreq = NULL;
    }
    if (handshake_late) {
        char tgt[160];
        set_error(rt, "%s: handshake timed out after %llu ms", target_name(rt, tgt, sizeof(tgt)),
                  (unsigned long long)rt->connect_timeout_ms);
        COUNT(rt, connect_failures);
        atomic_store(&rt->reachable, 0);
        async_trip(c);
    }
    /* Requests that expire in one sweep are one stall of the connection,
     * one failure for the breaker: with 50 in flight, a single 50 ms hiccup
     * must not open the circuit on its own. */
    if (n > 0) {
        async_failed(c);
    }
    for (size_t i = 0; i < n; i++) {
        COUNT(rt, timeouts);
        expired_complete(&c->expired[i]);
    }
    /* Re-arm for the earliest live deadline. */
    uint64_t next = 0;
    for (struct rop *o = c->rops.next; o != &c->rops; o = o->next) {
        if ((o->req != NULL || o->lreq != NULL || (o->kind == ROP_HANDSHAKE && !o->failed)) &&
            (next == 0 || o->deadline < next)) {
            next = o->deadline;
        }
    }
    if (next != 0) {
        arm_timer(c, next);
    }
}

/* ---- async mode: connecting and the breaker ------------------------------------------ */

static void retry_cb(evutil_socket_t fd, short what, void *arg);
static enum tc_status async_connect(struct redis_ctx *c);

static void async_trip(struct redis_ctx *c)
{
    if (c->brk != BRK_OPEN || !evtimer_pending(c->retry, NULL)) {
        /* Open before dropping: dropping runs the pending requests'
         * completions, whose done() may send again and must fail fast
         * rather than reconnect behind the breaker's back. */
        brk_set(c, BRK_OPEN);
        struct timeval tv = ms_tv(backoff_delay(c->rt, c->backoff_k, &c->rng));
        if (c->backoff_k < 30) {
            c->backoff_k++;
        }
        evtimer_add(c->retry, &tv);
    }
    async_drop(c);
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
        /* Reconnect after an idle connection was closed, so that a dead
         * Redis shows in health before the next request finds it. */
        if (c->ac == NULL && async_connect(c) != TC_OK) {
            async_trip(c);
        }
        return;
    }
    if (c->brk != BRK_OPEN) {
        return;
    }
    brk_set(c, BRK_HALF_OPEN);
    if (async_connect(c) != TC_OK) {
        async_trip(c);
    }
}

static void handshake_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *o = privdata;
    struct redis_ctx *c = o->ctx;
    redisReply *r = reply;
    if (c != NULL && !o->failed && o->ac == c->ac) {
        if (r == NULL) {
            conn_lost(c, ac);
            o->failed = 1;
        } else if (handshake_reply(c->rt, "handshake", r) != TC_OK) {
            o->failed = 1;
        }
    }
    if (--o->replies > 0) {
        return;
    }
    int ok = !o->failed;
    int current = c != NULL && o->ac == c->ac;
    rop_put(o);
    if (c == NULL || c->disposing) {
        return;
    }
    if (ok && current) {
        conn_set(c, CONN_READY);
        brk_set(c, BRK_CLOSED);
        c->fails = 0;
        c->backoff_k = 0;
        atomic_store(&c->rt->reachable, 1);
        COUNT(c->rt, connects);
    } else if (!ok && (current || c->ac == NULL) && c->brk != BRK_OPEN) {
        COUNT(c->rt, connect_failures);
        atomic_store(&c->rt->reachable, 0);
        async_trip(c);
    }
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct redis_ctx *c = ac->data;
    (void)status;
    if (c != NULL && c->ac == ac) {
        /* An idle connection closed (server restart, idle timeout): make a
         * new one from the loop, not from inside hiredis' teardown. */
        conn_lost(c, ac);
        if (c->brk == BRK_CLOSED && !c->disposing) {
            struct timeval now = {0, 0};
            evtimer_add(c->retry, &now);
        }
    }
}

/* Starts a non-blocking connect and pipelines the handshake behind it; the
 * address is numeric (resolved at open), so nothing here blocks. */
static enum tc_status async_connect(struct redis_ctx *c)
{
    struct redis_tier *rt = c->rt;
    char tgt[160];
    redisAsyncContext *ac =
        rt->unix_socket ? redisAsyncConnectUnix(rt->addr) : redisAsyncConnect(rt->addr, rt->port);
    if (ac == NULL || ac->err) {
        set_error(rt, "connect %s: %s", target_name(rt, tgt, sizeof(tgt)),
                  ac ? ac->errstr : "out of memory");
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
        COUNT(rt, connect_failures);
        atomic_store(&rt->reachable, 0);
        return TC_EUNAVAIL;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->base.base) != REDIS_OK) {
        redisAsyncFree(ac);
        return TC_ENOMEM;
    }
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    c->ac = ac;
    conn_set(c, CONN_CONNECTING);
    struct rop *o = rop_get(c, ROP_HANDSHAKE, rt->connect_timeout_ms);
    if (o == NULL) {
        async_drop(c);
        return TC_ENOMEM;
    }
    arm_timer(c, o->deadline);
    const char *argv[3];
    size_t argvlen[3];
    int argc = 0, ok = 1;
    if (rt->password != NULL) {
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;
        if (rt->user != NULL) {
            argv[argc] = rt->user;
            argvlen[argc++] = strlen(rt->user);
        }
        argv[argc] = rt->password;
        argvlen[argc++] = strlen(rt->password);
        ok = redisAsyncCommandArgv(ac, handshake_cb, o, argc, argv, argvlen) == REDIS_OK;
        o->replies += ok;
    }
    char db[16];
    snprintf(db, sizeof(db), "%u", rt->db);
    argv[0] = "SELECT";
    argvlen[0] = 6;
    argv[1] = db;
    argvlen[1] = strlen(db);
    if (ok) {
        ok = redisAsyncCommandArgv(ac, handshake_cb, o, 2, argv, argvlen) == REDIS_OK;
        o->replies += ok;
    }
    if (!ok) {
        if (o->replies == 0) {
            rop_put(o);
        } else {
            o->failed = 1;
        }
        async_drop(c);
        return TC_EUNAVAIL;
    }
    return TC_OK;
}

/* Gets the ctx ready to send: fails fast while the circuit is not closed,
 * (re)connects when there is no connection. */
static enum tc_status async_ready(struct redis_ctx *c)
{
    if (c->disposing) {
        return TC_EUNAVAIL;
    }
    if (c->brk != BRK_CLOSED) {
        COUNT(c->rt, skipped);
        return TC_EUNAVAIL;
    }
    if (c->ac == NULL) {
        enum tc_status st = async_connect(c);
        if (st != TC_OK) {
            async_trip(c);
            return TC_EUNAVAIL;
        }
    }
    return TC_OK;
}

/* ---- async mode: operations --------------------------------------------------------- */

static void get_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *o = privdata;
    struct redis_ctx *c = o->ctx;
    redisReply *r = reply;
    int second = o->replies == 1;
    if (r == NULL) {
        conn_lost(c, ac);
        if (o->st == TC_OK || o->st == TC_ENOTFOUND) {
            o->st = TC_EUNAVAIL;
        }
    } else if (o->req != NULL && c != NULL && o->st == TC_OK) {
        o->st = second ? decode_pttl(c->rt, o->req, r) : decode_value(c->rt, o->req, r);
    }
    if (--o->replies > 0) {
        return;
    }
    enum tc_status st = o->st;
    struct tc_tier_req *req = o->req;
    o->req = NULL;
    rop_put(o);
    if (req == NULL) {
        return;
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        COUNT(c->rt, failures);
        breaker_count(c, st);
    } else if (c != NULL) {
        c->fails = 0;
    }
    if (st != TC_OK && st != TC_ENOMEM) {
        req->out->len = 0;
        if (st != TC_ECORRUPT) {
            st = TC_ENOTFOUND; /* every failed get is a miss; a corrupt one is counted too */
        }
    }
    tc_tier_complete(req, st);
}

static void write_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *o = privdata;
    struct redis_ctx *c = o->ctx;
    redisReply *r = reply;
    enum tc_status st = TC_OK;
    if (r == NULL) {
        conn_lost(c, ac);
        st = TC_EUNAVAIL;
    } else if (r->type == REDIS_REPLY_ERROR) {
        st = TC_EIO;
    } else if (r->type != REDIS_REPLY_STATUS && r->type != REDIS_REPLY_INTEGER) {
        st = TC_ECORRUPT;
    }
    struct tc_tier_req *req = o->req;
    o->req = NULL;
    rop_put(o);
    if (req == NULL) {
        return;
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        COUNT(c->rt, failures);
        breaker_count(c, st);
    } else if (c != NULL) {
        c->fails = 0;
    }
    tc_tier_complete(req, st);
}

static enum tc_status async_get(struct redis_ctx *c, struct tc_tier_req *req)
{
    if (async_ready(c) != TC_OK) {
        return TC_ENOTFOUND;
    }
    if (make_key(c, req->key, req->key_len) != TC_OK) {
        return TC_ENOMEM;
    }
    struct rop *o = rop_get(c, ROP_GET, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    const char *a0[] = {"GET", (const char *)c->kbuf.data};
    const char *a1[] = {"PTTL", (const char *)c->kbuf.data};
    size_t l0[] = {3, c->kbuf.len}, l1[] = {4, c->kbuf.len};
    if (redisAsyncCommandArgv(c->ac, get_cb, o, 2, a0, l0) != REDIS_OK) {
        rop_put(o);
        return TC_ENOTFOUND;
    }
    o->replies = 1;
    if (redisAsyncCommandArgv(c->ac, get_cb, o, 2, a1, l1) == REDIS_OK) {
        o->replies = 2;
    } else {
        o->st = TC_EUNAVAIL; /* only when the connection is going away */
    }
    o->req = req;
    arm_timer(c, o->deadline);
    return TC_EINPROGRESS;
}

static enum tc_status async_write(struct redis_ctx *c, struct tc_tier_req *req, int is_set)
{
    struct redis_tier *rt = c->rt;
    enum tc_status st = async_ready(c);
    if (st != TC_OK) {
        return st;
    }
    char px[24];
    const char *argv[5];
    size_t argvlen[5];
    int argc = write_args(c, req, is_set, px, argv, argvlen);
    if (argc < 0) {
        return (enum tc_status)argc;
    }
    struct rop *o = rop_get(c, ROP_WRITE, rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if (redisAsyncCommandArgv(c->ac, write_cb, o, argc, argv, argvlen) != REDIS_OK) {
        rop_put(o);
        return TC_EUNAVAIL;
    }
    o->replies = 1;
    o->req = req;
    arm_timer(c, o->deadline);
    if (rt->invalidate == INVALIDATE_PUBSUB &&
        make_inval(c, is_set ? 's' : 'd', req->key, req->key_len) == TC_OK) {
        const char *pargv[] = {"PUBLISH", rt->channel, (const char *)c->vbuf.data};
        size_t pargvlen[] = {7, strlen(rt->channel), c->vbuf.len};
        /* Fire and forget: the write's own reply decides its status. */
        if (redisAsyncCommandArgv(c->ac, NULL, NULL, 3, pargv, pargvlen) == REDIS_OK) {
            COUNT(rt, inval_published);
        }
    }
    return TC_EINPROGRESS;
}

static void clear_scan_cb(redisAsyncContext *ac, void *reply, void *privdata);

static void clear_unlink_cb(redisAsyncContext *ac, void *reply, void *privdata);

/* Finishes a clear when its last outstanding reply arrived. */
static void clear_maybe_done(struct rop *o)
{
    if (o->replies > 0 || o->scanning) {
        return;
    }
    struct redis_ctx *c = o->ctx;
    enum tc_status st = o->st;
    struct tc_tier_req *req = o->req;
    o->req = NULL;
    rop_put(o);
    if (req == NULL) {
        return;
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        COUNT(c->rt, failures);
        breaker_count(c, st);
    }
    tc_tier_complete(req, st);
}

static void clear_unlink_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *o = privdata;
    redisReply *r = reply;
    if (r == NULL) {
        conn_lost(o->ctx, ac);
        o->st = TC_EUNAVAIL;
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer > 0 && o->req != NULL) {
        o->req->count += (uint64_t)r->integer;
    } else if (r->type == REDIS_REPLY_ERROR && o->st == TC_OK) {
        o->st = TC_EIO;
    }
    o->replies--;
    clear_maybe_done(o);
}

static void clear_scan_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *o = privdata;
    struct redis_ctx *c = o->ctx;
    redisReply *r = reply;
    o->replies--;
    o->scanning = 0;
    if (r == NULL) {
        conn_lost(c, ac);
        o->st = TC_EUNAVAIL;
    } else if (!scan_reply_ok(r)) {
        if (o->st == TC_OK) {
            o->st = r->type == REDIS_REPLY_ERROR ? TC_EIO : TC_ECORRUPT;
        }
    } else if (o->req != NULL && o->st == TC_OK && c != NULL && c->ac == ac) {
        const redisReply *keys = r->element[1];
        if (keys->elements > 0) {
            const char **argv;
            size_t *argvlen;
            if (unlink_args(keys, &argv, &argvlen) != TC_OK) {
                o->st = TC_ENOMEM;
            } else if (redisAsyncCommandArgv(ac, clear_unlink_cb, o, (int)keys->elements + 1, argv,
                                             argvlen) == REDIS_OK) {
                o->replies++;
            } else {
                o->st = TC_EUNAVAIL;
            }
            free(argv);
            free(argvlen);
        }
        if (o->st == TC_OK && !scan_done(r)) {
            /* Each SCAN is a bounded batch; the deadline is per round trip. */
            const char *argv[] = {"SCAN",  r->element[0]->str, "MATCH", o->pattern,
                                  "COUNT", SCAN_COUNT};
            size_t argvlen[] = {4, r->element[0]->len, 5, o->pattern_len, 5, strlen(SCAN_COUNT)};
            if (redisAsyncCommandArgv(ac, clear_scan_cb, o, 6, argv, argvlen) == REDIS_OK) {
                o->replies++;
                o->scanning = 1;
                o->deadline = mono_ms() + c->rt->timeout_ms;
                arm_timer(c, o->deadline);
            } else {
                o->st = TC_EUNAVAIL;
            }
        }
    }
    clear_maybe_done(o);
}

static enum tc_status async_clear(struct redis_ctx *c, struct tc_tier_req *req)
{
    enum tc_status st = async_ready(c);
    if (st != TC_OK) {
        return st;
    }
    struct rop *o = rop_get(c, ROP_CLEAR, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if ((o->pattern = make_pattern(c->rt, req->key, req->key_len, &o->pattern_len)) == NULL) {
        rop_put(o);
        return TC_ENOMEM;
    }
    const char *argv[] = {"SCAN", "0", "MATCH", o->pattern, "COUNT", SCAN_COUNT};
    size_t argvlen[] = {4, 1, 5, o->pattern_len, 5, strlen(SCAN_COUNT)};
    if (redisAsyncCommandArgv(c->ac, clear_scan_cb, o, 6, argv, argvlen) != REDIS_OK) {
        rop_put(o);
        return TC_EUNAVAIL;
    }
    o->replies = 1;
    o->scanning = 1;
    o->req = req;
    arm_timer(c, o->deadline);
    return TC_EINPROGRESS;
}

static void lock_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct rop *o = privdata;
    struct redis_ctx *c = o->ctx;
    redisReply *r = reply;
    struct tc_tier_lock_req *req = o->lreq;
    enum tc_status st = TC_OK;
    if (r == NULL) {
        conn_lost(c, ac);
        st = TC_EUNAVAIL;
    } else if (req != NULL && c != NULL && is_noscript(r) && !o->resent && c->ac == ac) {
        /* Redis lost its script cache: the same request once more as EVAL,
         * which nothing ran yet (NOSCRIPT executes nothing), on the same rop
         * and under the same deadline. */
        char ttl[24];
        const char *argv[7];
        size_t argvlen[7];
        int argc = lock_args(c, req, o->lop, 1, ttl, argv, argvlen);
        COUNT(c->rt, script_loads);
        if (argc >= 0 && redisAsyncCommandArgv(ac, lock_cb, o, argc, argv, argvlen) == REDIS_OK) {
            o->resent = 1;
            return;
        }
        st = argc < 0 ? (enum tc_status)argc : TC_EUNAVAIL;
    } else if (req != NULL && c != NULL) {
        st = lock_decode(c->rt, o->lop, req, r);
    }
    int op = o->lop;
    o->lreq = NULL;
    rop_put(o);
    if (req == NULL) {
        return;
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        COUNT(c->rt, failures);
        breaker_count(c, st);
    } else if (c != NULL) {
        c->fails = 0;
    }
    lock_token_fixup(req, op, st);
    tc_tier_lock_complete(req, st);
}

static enum tc_status async_lock(struct redis_ctx *c, struct tc_tier_lock_req *req, int op)
{
    enum tc_status st = async_ready(c);
    if (st != TC_OK) {
        return st;
    }
    if (op == LOCK_ACQUIRE && (st = make_token(req->token)) != TC_OK) {
        return st;
    }
    char ttl[24];
    const char *argv[7];
    size_t argvlen[7];
    int argc = lock_args(c, req, op, 0, ttl, argv, argvlen);
    if (argc < 0) {
        return (enum tc_status)argc;
    }
    struct rop *o = rop_get(c, ROP_LOCK, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if (redisAsyncCommandArgv(c->ac, lock_cb, o, argc, argv, argvlen) != REDIS_OK) {
        rop_put(o);
        if (op == LOCK_ACQUIRE) {
            req->token[0] = '\0'; /* never sent: not held under it */
        }
        return TC_EUNAVAIL;
    }
    o->replies = 1;
    o->lreq = req;
    o->lop = op;
    arm_timer(c, o->deadline);
    return TC_EINPROGRESS;
}

/* ---- async mode: results known at once -------------------------------------------------- */

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_ctx *c = arg;
    (void)fd;
    (void)what;
    c->defer_armed = 0;
    /* Completions may defer more; those go to the other queue and run on
     * the next loop turn. */
    struct defq *q = &c->dq[c->dq_cur];
    c->dq_cur ^= 1;
    for (size_t i = 0; i < q->len; i++) {
        expired_complete(&q->v[i]);
    }
    q->len = 0;
}

/* Turns an immediate result on an async ctx into a completion from the
 * loop (of req, or of lreq when req is NULL). Falls back to returning it
 * when disposing or out of memory. */
static enum tc_status defer_result(struct redis_ctx *c, struct tc_tier_req *req,
                                   struct tc_tier_lock_req *lreq, enum tc_status st)
{
    if (st == TC_EINPROGRESS || c->disposing) {
        return st;
    }
    struct defq *q = &c->dq[c->dq_cur];
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        struct expired *v = realloc(q->v, cap * sizeof(*v));
        if (v == NULL) {
            return st;
        }
        q->v = v;
        q->cap = cap;
    }
    q->v[q->len].req = req;
    q->v[q->len].lreq = lreq;
    q->v[q->len++].st = st;
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

static enum tc_status async_result(struct redis_ctx *c, struct tc_tier_req *req, enum tc_status st)
{
    return defer_result(c, req, NULL, st);
}

/* ---- vtable: operations ----------------------------------------------------------------- */

static enum tc_status redis_get(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st = base->base ? async_result(c, req, async_get(c, req)) : sync_get(c, req);
    req->status = st;
    return st;
}

static enum tc_status redis_set(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st =
        base->base ? async_result(c, req, async_write(c, req, 1)) : sync_write(c, req, 1);
    req->status = st;
    return st;
}

static enum tc_status redis_del(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st =
        base->base ? async_result(c, req, async_write(c, req, 0)) : sync_write(c, req, 0);
    req->status = st;
    return st;
}

static enum tc_status redis_clear(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st;
    if (c->rt->prefix_len == 0 && req->key_len == 0) {
        /* Would be every key of the database, other programs' data too. */
        st = TC_EINVAL;
    } else {
        st = base->base ? async_clear(c, req) : sync_clear(c, req);
    }
    if (base->base != NULL) {
        st = async_result(c, req, st);
    }
    req->status = st;
    return st;
}

static enum tc_status redis_lock(struct tc_tier_ctx *base, struct tc_tier_lock_req *req, int op)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st;
    if (!c->rt->locks_ok) {
        st = TC_ENOTSUP;
    } else if (op == LOCK_ACQUIRE && req->ttl_ms > LOCK_TTL_MAX) {
        st = TC_EINVAL;
    } else if (op == LOCK_RELEASE && !token_ok(req->token, strlen(req->token))) {
        st = TC_EINVAL; /* never one of ours, and a space would garble the notice */
    } else {
        st = base->base ? async_lock(c, req, op) : sync_lock(c, req, op);
    }
    if (st != TC_EINPROGRESS) {
        lock_token_fixup(req, op, st);
    }
    if (base->base != NULL) {
        st = defer_result(c, NULL, req, st);
    }
    req->status = st;
    return st;
}

static enum tc_status redis_lock_acquire(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return redis_lock(base, req, LOCK_ACQUIRE);
}

static enum tc_status redis_lock_release(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return redis_lock(base, req, LOCK_RELEASE);
}

static enum tc_status redis_lock_peek(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return redis_lock(base, req, LOCK_PEEK);
}

/* ---- vtable: contexts --------------------------------------------------------------------- */

static enum tc_status redis_ctx_init(struct tc_tier *t, struct event_base *base,
                                     struct tc_tier_ctx **out)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    struct redis_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return TC_ENOMEM;
    }
    tc_tier_ctx_base_init(&c->base, t, base);
    c->rt = rt;
    c->rops.next = c->rops.prev = &c->rops;
    c->rng = (uint64_t)(uintptr_t)c ^ (mono_ms() << 20) ^ 0x9e3779b97f4a7c15ull;
    tc_buf_init(&c->kbuf);
    tc_buf_init(&c->vbuf);
    if (base != NULL) {
        c->timer = evtimer_new(base, deadline_cb, c);
        c->retry = evtimer_new(base, retry_cb, c);
        c->defer_ev = evtimer_new(base, defer_cb, c);
        if (c->timer == NULL || c->retry == NULL || c->defer_ev == NULL) {
            if (c->timer != NULL) {
                event_free(c->timer);
            }
            if (c->retry != NULL) {
                event_free(c->retry);
            }
            if (c->defer_ev != NULL) {
                event_free(c->defer_ev);
            }
            free(c);
            return TC_ENOMEM;
        }
        /* Connect now so that the first request does not pay for it; a
         * failure here just opens the circuit. */
        if (async_connect(c) != TC_OK) {
            async_trip(c);
        }
    }
    atomic_fetch_add(&rt->ctx_total, 1);
    *out = &c->base;
    return TC_OK;
}

static void redis_ctx_dispose(struct tc_tier_ctx *base)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    struct redis_tier *rt = c->rt;
    c->disposing = 1;
    if (base->base == NULL) {
        sync_drop(c);
    } else {
        /* Every request still in flight completes now with TC_EUNAVAIL (its
         * done() may not start new work on this ctx: disposing refuses it). */
        for (int q = 0; q < 2; q++) {
            for (size_t i = 0; i < c->dq[q].len; i++) {
                c->dq[q].v[i].st = TC_EUNAVAIL;
                expired_complete(&c->dq[q].v[i]);
            }
            c->dq[q].len = 0;
        }
        for (;;) {
            struct rop *o = c->rops.next;
            while (o != &c->rops && o->req == NULL && o->lreq == NULL) {
                o = o->next;
            }
            if (o == &c->rops) {
                break;
            }
            rop_complete(o, TC_EUNAVAIL);
        }
        /* Orphan the rops: hiredis still holds them and frees them through
         * their callbacks when the connection goes. */
        while (c->rops.next != &c->rops) {
            struct rop *o = c->rops.next;
            c->rops.next = o->next;
            o->ctx = NULL;
        }
        c->rops.prev = &c->rops;
        if (c->ac != NULL) {
            c->ac->data = NULL;
        }
        async_drop(c);
        event_free(c->timer);
        event_free(c->retry);
        event_free(c->defer_ev);
        free(c->dq[0].v);
        free(c->dq[1].v);
    }
    brk_set(c, BRK_CLOSED);
    conn_set(c, CONN_NONE);
    while (c->cache != NULL) {
        struct rop *o = c->cache;
        c->cache = o->next;
        free(o);
    }
    free(c->expired);
    tc_buf_deinit(&c->kbuf);
    tc_buf_deinit(&c->vbuf);
    atomic_fetch_sub(&rt->ctx_total, 1);
    free(c);
}

/* ---- the subscriber thread ------------------------------------------------------------------ */

static void sub_connect(struct redis_tier *rt);
static void sub_check_cb(evutil_socket_t fd, short what, void *arg);

static void sub_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub_connect(arg);
}

static void sub_schedule(struct redis_tier *rt)
{
    uint64_t rng = mono_ms() ^ (uint64_t)(uintptr_t)rt;
    struct timeval tv = ms_tv(backoff_delay(rt, rt->sub_backoff_k, &rng));
    if (rt->sub_backoff_k < 30) {
        rt->sub_backoff_k++;
    }
    evtimer_add(rt->sub_retry_ev, &tv);
}

/* Every channel wanted is subscribed on the current connection. */
static int sub_complete(struct redis_tier *rt)
{
    int want_inval = rt->invalidate == INVALIDATE_PUBSUB;
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
    if (m->type != REDIS_REPLY_STRING || m->len < ID_LEN + 2 || m->len > ID_LEN + 1 + TC_KEY_MAX ||
        (m->str[ID_LEN] != 's' && m->str[ID_LEN] != 'd')) {
        COUNT(rt, inval_malformed);
        return;
    }
    if (memcmp(m->str, rt->id, ID_LEN) == 0) {
        COUNT(rt, inval_own);
        return;
    }
    COUNT(rt, inval_received);
    sub_deliver(rt, m->str + ID_LEN + 1, m->len - ID_LEN - 1);
}

/* "<token> <name>" from any process, this one included (tier.h). */
static void sub_lock_message(struct redis_tier *rt, const redisReply *m)
{
    if (m->type != REDIS_REPLY_STRING || m->str == NULL) {
        COUNT(rt, lock_malformed);
        return;
    }
    size_t scan = m->len < TC_LOCK_TOKEN_MAX ? m->len : TC_LOCK_TOKEN_MAX;
    const char *sp = memchr(m->str, ' ', scan);
    size_t toklen = sp != NULL ? (size_t)(sp - m->str) : 0;
    size_t name_len = sp != NULL ? m->len - toklen - 1 : 0;
    if (sp == NULL || !token_ok(m->str, toklen) || name_len == 0 || name_len > TC_LOCK_NAME_MAX) {
        COUNT(rt, lock_malformed);
        return;
    }
    char token[TC_LOCK_TOKEN_MAX];
    memcpy(token, m->str, toklen);
    token[toklen] = '\0';
    COUNT(rt, lock_notices);
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

static void sub_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_tier *rt = privdata;
    redisReply *r = reply;
    char tgt[160];
    if (r == NULL) {
        /* The connection died (or is being freed at shutdown); hiredis
         * calls this once per channel, hence the check. */
        if (rt->sub_ac == ac) {
            rt->sub_ac = NULL;
            rt->lock_sub_sent = 0;
            atomic_store(&rt->inval_sub, 0);
            atomic_store(&rt->lock_sub, 0);
            rt->sub_lost = 1;
            pthread_mutex_lock(&rt->sub_lock);
            rt->lock_gap = 1;
            pthread_mutex_unlock(&rt->sub_lock);
            set_error(rt, "subscriber %s: %s", target_name(rt, tgt, sizeof(tgt)),
                      ac->errstr[0] ? ac->errstr : "connection lost");
            sub_first_signal(rt);
            sub_schedule(rt);
        }
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        COUNT(rt, inval_malformed);
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
            COUNT(rt, inval_malformed);
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
        if (sub_complete(rt)) {
            rt->sub_backoff_k = 0;
            sub_first_signal(rt);
        }
    }
}

static void sub_auth_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_tier *rt = privdata;
    (void)ac;
    if (reply != NULL) {
        handshake_reply(rt, "AUTH (subscriber)", reply);
    }
}

/* hiredis 0.14 has no async connect timeout: a host that drops SYNs would
 * hold the subscriber for minutes; a SUBSCRIBE that is never answered
 * likewise. */
static void sub_arm_check(struct redis_tier *rt)
{
    struct timeval tv = ms_tv(rt->connect_timeout_ms);
    evtimer_add(rt->sub_check_ev, &tv);
}

static void sub_connect(struct redis_tier *rt)
{
    char tgt[160];
    redisAsyncContext *ac =
        rt->unix_socket ? redisAsyncConnectUnix(rt->addr) : redisAsyncConnect(rt->addr, rt->port);
    if (ac == NULL || ac->err) {
        set_error(rt, "subscriber connect %s: %s", target_name(rt, tgt, sizeof(tgt)),
                  ac ? ac->errstr : "out of memory");
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
        sub_first_signal(rt);
        sub_schedule(rt);
        return;
    }
    if (redisLibeventAttach(ac, rt->sub_base) != REDIS_OK) {
        redisAsyncFree(ac);
        sub_schedule(rt);
        return;
    }
    /* The subscriber only reads; TCP keepalive is what notices a peer host
     * that vanished (a frozen but live Redis still goes unnoticed here;
     * the data connections' deadlines see it). Never on a unix socket: the
     * TCP_KEEP* options fail there, and hiredis then leaves its error set
     * on the context, which makes it drop the connection at the first read
     * or write, before SUBSCRIBE ever goes out (the local peer's death is
     * seen as EOF anyway). */
    if (!rt->unix_socket && redisEnableKeepAlive(&ac->c) != REDIS_OK) {
        set_error(rt, "subscriber keepalive %s: %s", target_name(rt, tgt, sizeof(tgt)), ac->errstr);
        redisAsyncFree(ac);
        sub_first_signal(rt);
        sub_schedule(rt);
        return;
    }
    if (rt->sub_ever) {
        COUNT(rt, sub_reconnects);
    }
    rt->sub_ever = 1;
    rt->sub_ac = ac;
    const char *argv[3];
    size_t argvlen[3];
    int argc = 0;
    if (rt->password != NULL) {
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;
        if (rt->user != NULL) {
            argv[argc] = rt->user;
            argvlen[argc++] = strlen(rt->user);
        }
        argv[argc] = rt->password;
        argvlen[argc++] = strlen(rt->password);
        redisAsyncCommandArgv(ac, sub_auth_cb, rt, argc, argv, argvlen);
    }
    argc = 0;
    argv[argc] = "SUBSCRIBE";
    argvlen[argc++] = 9;
    if (rt->invalidate == INVALIDATE_PUBSUB) {
        argv[argc] = rt->channel;
        argvlen[argc++] = rt->channel_len;
    }
    int lock = atomic_load(&rt->lock_wanted);
    if (lock) {
        argv[argc] = rt->lock_channel;
        argvlen[argc++] = rt->lock_channel_len;
    }
    if (redisAsyncCommandArgv(ac, sub_cb, rt, argc, argv, argvlen) != REDIS_OK) {
        rt->sub_ac = NULL;
        redisAsyncFree(ac);
        sub_schedule(rt);
        return;
    }
    rt->lock_sub_sent = lock;
    sub_arm_check(rt);
}

static void sub_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct redis_tier *rt = arg;
    char tgt[160];
    (void)fd;
    (void)what;
    if (rt->sub_ac == NULL || sub_complete(rt)) {
        return;
    }
    /* Freeing runs sub_cb with a NULL reply, which schedules the retry. */
    set_error(rt, "subscriber %s: no SUBSCRIBE answer within %llu ms",
              target_name(rt, tgt, sizeof(tgt)), (unsigned long long)rt->connect_timeout_ms);
    redisAsyncFree(rt->sub_ac);
}

/* A lock-release callback was registered: add the lock channel to a live
 * subscription (a connection made later includes it from the start). */
static void sub_add_lock_channel(struct redis_tier *rt)
{
    if (rt->sub_ac == NULL || rt->lock_sub_sent) {
        return;
    }
    const char *argv[] = {"SUBSCRIBE", rt->lock_channel};
    size_t argvlen[] = {9, rt->lock_channel_len};
    if (redisAsyncCommandArgv(rt->sub_ac, sub_cb, rt, 2, argv, argvlen) != REDIS_OK) {
        redisAsyncFree(rt->sub_ac); /* reconnects, with the lock channel */
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
        redisAsyncContext *ac = rt->sub_ac;
        rt->sub_ac = NULL;
        if (ac != NULL) {
            redisAsyncFree(ac);
        }
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

static void sub_stop(struct redis_tier *rt)
{
    if (rt->sub_started) {
        sub_command(rt, 'q');
        pthread_join(rt->sub_thread, NULL);
        rt->sub_started = 0;
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

/* Starts the subscriber thread; on failure nothing of it is left. */
static enum tc_status sub_start(struct redis_tier *rt, char *err, size_t errlen)
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
    sub_stop(rt);
    return st;
}

static enum tc_status redis_on_invalidate(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    if (rt->invalidate != INVALIDATE_PUBSUB) {
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

static enum tc_status redis_on_lock_release(struct tc_tier *t, tc_tier_lock_release_fn fn,
                                            void *arg)
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
            st = sub_start(rt, NULL, 0); /* waits for the SUBSCRIBE */
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

/* ---- vtable: open, close, stats, health ------------------------------------------------------ */

static void redis_close(struct tc_tier *t)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    sub_stop(rt);
    pthread_mutex_destroy(&rt->err_lock);
    pthread_mutex_destroy(&rt->sub_ctl);
    pthread_mutex_destroy(&rt->sub_lock);
    pthread_cond_destroy(&rt->sub_cond);
    free(rt->addr);
    free(rt->user);
    if (rt->password != NULL) {
        memset(rt->password, 0, strlen(rt->password));
        free(rt->password);
    }
    free(rt->prefix);
    free(rt->channel);
    free(rt->lock_prefix);
    free(rt->lock_channel);
    free(rt);
}

/* The SHA1 of a script, as EVALSHA wants it (40 lower-case hex digits). */
static enum tc_status script_sha(const char *script, char out[SHA_HEX + 1], char *err,
                                 size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(script, strlen(script), md, &len, EVP_sha1(), NULL) != 1 || len * 2 != SHA_HEX) {
        tc_tier_errf(err, errlen, "redis: SHA1 (OpenSSL) unavailable for the lock scripts");
        return TC_EIO;
    }
    for (unsigned i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
    return TC_OK;
}

static void make_id(char out[ID_LEN + 1])
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
            v = 0;
        }
        close(fd);
    }
    if (v == 0) {
        /* No urandom: pid and time still differ between live instances. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = ((uint64_t)getpid() << 40) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
            (uint64_t)(uintptr_t)out;
    }
    snprintf(out, ID_LEN + 1, "%016llx", (unsigned long long)v);
}

/* Resolves HOST once, at open, so that connects from worker threads never
 * block in getaddrinfo(). */
static enum tc_status resolve(const char *host, char **out, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL) {
        tc_tier_errf(err, errlen, "redis: cannot resolve host '%s': %s", host, gai_strerror(rc));
        return TC_EINVAL;
    }
    char buf[1025]; /* NI_MAXHOST, which strict POSIX does not define */
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, buf, sizeof(buf), NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        tc_tier_errf(err, errlen, "redis: cannot resolve host '%s': %s", host, gai_strerror(rc));
        return TC_EINVAL;
    }
    *out = strdup(buf);
    return *out ? TC_OK : TC_ENOMEM;
}

static enum tc_status redis_open_common(const struct tc_tier_params *p, int unix_socket,
                                        struct tc_tier **out, char *err, size_t errlen)
{
    static const char *const inval_choices[] = {"none", "pubsub", NULL};
    const char *scheme = tc_tier_params_scheme(p);
    uint64_t timeout, ctimeout, max_item, db = 0, brk, bo, bomax;
    int inval;
    enum tc_status st;

    if ((st = tc_tier_params_duration(p, "timeout_ms", 1, 50, 1, 3600000, &timeout, err, errlen)) !=
            TC_OK ||
        (st = tc_tier_params_duration(p, "connect_timeout_ms", 1, 200, 1, 3600000, &ctimeout, err,
                                      errlen)) != TC_OK ||
        (st = tc_tier_params_size(p, "max_item", 1u << 20, 0, (512ull << 20) - 64, &max_item, err,
                                  errlen)) != TC_OK ||
        (st = tc_tier_params_uint(p, "breaker_failures", 10, 5, 1, 1000000, &brk, err, errlen)) !=
            TC_OK ||
        (st = tc_tier_params_duration(p, "backoff_ms", 1, 100, 1, 3600000, &bo, err, errlen)) !=
            TC_OK ||
        (st = tc_tier_params_duration(p, "backoff_max_ms", 1, 5000, 1, 3600000, &bomax, err,
                                      errlen)) != TC_OK ||
        (st = tc_tier_params_choice(p, "invalidate", inval_choices, INVALIDATE_PUBSUB, &inval, err,
                                    errlen)) != TC_OK) {
        return st;
    }
    if (bomax < bo) {
        tc_tier_errf(err, errlen, "backoff_max_ms (%llu) is below backoff_ms (%llu) in %s://",
                     (unsigned long long)bomax, (unsigned long long)bo, scheme);
        return TC_EINVAL;
    }
    const char *dbparam = tc_tier_params_get(p, "db");
    const char *path = tc_tier_params_path(p);
    if (!unix_socket && path[0] != '\0' && strcmp(path, "/") != 0) {
        char *end;
        unsigned long v = strtoul(path + 1, &end, 10);
        if (path[1] < '0' || path[1] > '9' || *end != '\0' || v > 1000000) {
            tc_tier_errf(
                err, errlen,
                "bad database '%s' in %s:// (expected redis://HOST:PORT/DB with DB a number)",
                path + 1, scheme);
            return TC_EINVAL;
        }
        if (dbparam != NULL) {
            tc_tier_errf(err, errlen, "database given twice in %s:// (path /%lu and db=%s)", scheme,
                         v, dbparam);
            return TC_EINVAL;
        }
        db = v;
    }
    if (dbparam != NULL &&
        (st = tc_tier_params_uint(p, "db", 10, 0, 0, 1000000, &db, err, errlen)) != TC_OK) {
        return st;
    }

    struct redis_tier *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        return TC_ENOMEM;
    }
    rt->sub_pipe[0] = rt->sub_pipe[1] = -1;
    pthread_mutex_init(&rt->err_lock, NULL);
    pthread_mutex_init(&rt->sub_ctl, NULL);
    pthread_mutex_init(&rt->sub_lock, NULL);
    pthread_cond_init(&rt->sub_cond, NULL);
    rt->unix_socket = unix_socket;
    rt->timeout_ms = timeout;
    rt->connect_timeout_ms = ctimeout;
    rt->backoff_ms = bo;
    rt->backoff_max_ms = bomax;
    rt->breaker_failures = (unsigned)brk;
    rt->invalidate = inval;
    rt->db = (unsigned)db;
    make_id(rt->id);
    st = TC_ENOMEM;
    if (unix_socket) {
        if (path[0] != '/' || tc_tier_params_host(p)[0] != '\0') {
            tc_tier_errf(err, errlen,
                         "%s:// needs an absolute socket path: redis+unix:///path/to/sock", scheme);
            st = TC_EINVAL;
            goto fail;
        }
        if ((rt->addr = strdup(path)) == NULL) {
            goto fail;
        }
    } else {
        const char *host = tc_tier_params_host(p);
        rt->port = tc_tier_params_port(p) ? (int)tc_tier_params_port(p) : 6379;
        if ((st = resolve(host[0] ? host : "127.0.0.1", &rt->addr, err, errlen)) != TC_OK) {
            goto fail;
        }
        st = TC_ENOMEM;
    }
    const char *user = tc_tier_params_user(p), *password = tc_tier_params_password(p);
    if (password == NULL && user != NULL) {
        /* redis://secret@host: a lone userinfo is the password (requirepass). */
        password = user;
        user = NULL;
    }
    if ((user != NULL && (rt->user = strdup(user)) == NULL) ||
        (password != NULL && (rt->password = strdup(password)) == NULL)) {
        goto fail;
    }
    const char *prefix = tc_tier_params_get(p, "prefix");
    if (prefix == NULL) {
        prefix = "tc:";
    }
    rt->prefix_len = strlen(prefix);
    if ((rt->prefix = strdup(prefix)) == NULL) {
        goto fail;
    }
    size_t chlen = rt->prefix_len + 32;
    if ((rt->channel = malloc(chlen)) == NULL) {
        goto fail;
    }
    snprintf(rt->channel, chlen, "%sinvalidate@%u", prefix, rt->db);
    rt->channel_len = strlen(rt->channel);
    if ((rt->lock_channel = malloc(chlen)) == NULL) {
        goto fail;
    }
    snprintf(rt->lock_channel, chlen, "%slocks@%u", prefix, rt->db);
    rt->lock_channel_len = strlen(rt->lock_channel);
    rt->lock_prefix_len = strlen(LOCK_NS) + rt->prefix_len;
    if ((rt->lock_prefix = malloc(rt->lock_prefix_len + 1)) == NULL) {
        goto fail;
    }
    memcpy(rt->lock_prefix, LOCK_NS, strlen(LOCK_NS));
    memcpy(rt->lock_prefix + strlen(LOCK_NS), prefix, rt->prefix_len + 1);
    /* Lock keys must never start with PREFIX (see the top comment). */
    rt->locks_ok = memcmp(rt->lock_prefix, rt->prefix, rt->prefix_len) != 0;
    for (int op = 0; op < LOCK_OPS; op++) {
        if ((st = script_sha(lock_script[op], rt->lock_sha[op], err, errlen)) != TC_OK) {
            goto fail;
        }
    }
    st = TC_ENOMEM;
    rt->base.max_key = TC_KEY_MAX;
    rt->base.max_value = (size_t)max_item;

    /* Probe once: a rejected password or database is a configuration error
     * worth failing on now; an unreachable server is not (the cache runs on
     * its faster tiers and the breaker probes Redis back). */
    int rejected;
    redisContext *sc = sync_connect(rt, &rejected);
    if (sc != NULL) {
        redisFree(sc);
    } else if (rejected) {
        pthread_mutex_lock(&rt->err_lock);
        tc_tier_errf(err, errlen, "%s", rt->last_err);
        pthread_mutex_unlock(&rt->err_lock);
        st = TC_EUNAVAIL;
        goto fail;
    }
    if (inval == INVALIDATE_PUBSUB && (st = sub_start(rt, err, errlen)) != TC_OK) {
        goto fail;
    }
    *out = &rt->base;
    return TC_OK;
fail:
    if (st == TC_ENOMEM && err != NULL && errlen > 0 && err[0] == '\0') {
        tc_tier_errf(err, errlen, "out of memory opening %s://", scheme);
    }
    redis_close(&rt->base);
    return st;
}

static enum tc_status redis_open(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                                 size_t errlen)
{
    return redis_open_common(p, 0, out, err, errlen);
}

static enum tc_status redis_unix_open(const struct tc_tier_params *p, struct tc_tier **out,
                                      char *err, size_t errlen)
{
    return redis_open_common(p, 1, out, err, errlen);
}

static void redis_stats(struct tc_tier *t, tc_tier_stat_fn emit, void *arg)
{
    struct redis_tier *rt = (struct redis_tier *)t;
#define TC_X(name) emit(arg, #name, atomic_load(&rt->n.name), TC_STAT_COUNTER);
    REDIS_COUNTERS(TC_X)
#undef TC_X
    int open = atomic_load(&rt->ctx_open), half = atomic_load(&rt->ctx_half_open);
    emit(arg, "connections", (uint64_t)atomic_load(&rt->ctx_ready), TC_STAT_GAUGE);
    emit(arg, "circuit_open", (uint64_t)open, TC_STAT_GAUGE);
    emit(arg, "circuit_half_open", (uint64_t)half, TC_STAT_GAUGE);
    /* The worst state over all contexts: 0 closed, 1 half-open, 2 open. */
    emit(arg, "circuit_state", open > 0 ? 2u : half > 0 ? 1u : 0u, TC_STAT_GAUGE);
    /* 1 when every channel wanted (invalidation, lock notices) is subscribed. */
    emit(arg, "subscribed", (uint64_t)sub_complete(rt), TC_STAT_GAUGE);
}

static enum tc_tier_health redis_health(struct tc_tier *t, char *detail, size_t len)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    int total = atomic_load(&rt->ctx_total), open = atomic_load(&rt->ctx_open);
    int half = atomic_load(&rt->ctx_half_open);
    char err[ERR_TEXT];
    pthread_mutex_lock(&rt->err_lock);
    memcpy(err, rt->last_err, sizeof(err));
    pthread_mutex_unlock(&rt->err_lock);
    enum tc_tier_health h;
    if (total == 0) {
        h = atomic_load(&rt->reachable) ? TC_HEALTH_OK : TC_HEALTH_DOWN;
        tc_tier_errf(detail, len, "%s", h == TC_HEALTH_OK ? "reachable" : err);
    } else if (open + half >= total) {
        h = TC_HEALTH_DOWN;
        tc_tier_errf(detail, len, "circuit %s on all %d connections: %s",
                     open ? "open" : "half-open", total, err);
    } else if (open + half > 0) {
        h = TC_HEALTH_DEGRADED;
        tc_tier_errf(detail, len, "circuit open on %d of %d connections: %s", open + half, total,
                     err);
    } else if (rt->invalidate == INVALIDATE_PUBSUB && !atomic_load(&rt->inval_sub)) {
        h = TC_HEALTH_DEGRADED;
        tc_tier_errf(detail, len, "invalidation subscriber down: %s", err);
    } else {
        h = TC_HEALTH_OK;
        tc_tier_errf(detail, len, "circuit closed");
    }
    return h;
}

#define REDIS_OPS(sym, name, open_fn, usage_text)                                                  \
    const struct tc_tier_ops sym = {                                                               \
        .scheme = name,                                                                            \
        .abi_version = TC_TIER_ABI_VERSION,                                                        \
        .caps = TC_TIER_CAP_REMOTE | TC_TIER_CAP_ASYNC | TC_TIER_CAP_SHARED |                      \
                TC_TIER_CAP_LOCK_CLUSTER,                                                          \
        .params = redis_params,                                                                    \
        .usage = usage_text,                                                                       \
        .open = open_fn,                                                                           \
        .close = redis_close,                                                                      \
        .ctx_init = redis_ctx_init,                                                                \
        .ctx_dispose = redis_ctx_dispose,                                                          \
        .get = redis_get,                                                                          \
        .set = redis_set,                                                                          \
        .del = redis_del,                                                                          \
        .clear = redis_clear,                                                                      \
        .sweep = NULL,                                                                             \
        .stats = redis_stats,                                                                      \
        .health = redis_health,                                                                    \
        .on_invalidate = redis_on_invalidate,                                                      \
        .lock_acquire = redis_lock_acquire,                                                        \
        .lock_release = redis_lock_release,                                                        \
        .lock_peek = redis_lock_peek,                                                              \
        .on_lock_release = redis_on_lock_release,                                                  \
    };

REDIS_OPS(tc_tier_redis_ops, "redis", redis_open,
          "redis://[user:password@]HOST:PORT/DB?prefix=tc:&timeout_ms=50&connect_timeout_ms=200")
REDIS_OPS(tc_tier_redis_unix_ops, "redis+unix", redis_unix_open,
          "redis+unix:///path/to/sock?db=0&prefix=tc:&timeout_ms=50")
