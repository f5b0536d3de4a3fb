/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * redis:// and redis+unix:// — L3, the tier every host shares.
 *
 *   redis://[user:password@]HOST:PORT/DB?prefix=tc:&timeout_ms=50&connect_timeout_ms=200
 *   redis+unix:///path/to/sock?db=0&prefix=tc:&invalidate=pubsub
 *   redis://[user@]HOST:PORT/DB?password_file=/etc/tiercache/redis.pw
 *
 * Storage. Key K lives at PREFIX‖K; its value is the 40-byte item header
 * (tiers/item.h, which carries the authoritative expiry E and a check over
 * the header, K and the payload) followed by the
 * payload, written with SET key value PX local_ttl. A get is one round trip:
 * GET and PTTL pipelined (PTTL gives the tier's local expiry). Everything
 * Redis returns is untrusted: a value that does not decode as an item of K
 * (a changed byte, or another key's value), or an odd PTTL, is a miss,
 * counted in "bad_replies" (and a value that fails its check in the tier
 * layer's "corrupt" as well); a reply of the wrong type, or out of order, or
 * longer than max_item plus the header, closes the connection
 * ("protocol_errors", redis_conn.c), and is refused as it arrives: the
 * process never buffers more of a reply than those bounds (redis_io.c).
 *
 * Connections (STYLE R9). Each ctx owns one connection, made on the ctx's
 * thread and driven by the ctx's event_base; a ctx without a base (tools,
 * tests, the bench, the server's invalidation thread) runs the same code on
 * a private event_base and waits on it in each call (redis_conn.c). Nothing
 * is shared between ctxs except atomic counters and the last error text
 * (under a mutex).
 *
 * Deadlines. Each ctx keeps its in-flight operations ("rops") with a
 * deadline each and one timer. An operation past its deadline completes at
 * once (a get as a miss, others TC_ETIMEOUT) and its rop stays behind,
 * abandoned, until Redis answers or the connection is dropped. The circuit
 * breaker (redis_conn.c) skips Redis while it keeps failing.
 *
 * Password. From the URI's userinfo (a lone userinfo is the password, as in
 * requirepass), or read at open from password_file=PATH (the first line,
 * its newline stripped; the file must exist and not be readable by group or
 * others), so that it is not in the process list. Never in a log or error.
 *
 * Invalidation (invalidate=pubsub, the default). Every set and delete also
 * PUBLISHes, in the same round trip, "<16 hex instance id><op><key>" on the
 * channel PREFIX‖"invalidate@"‖DB; one subscriber thread per tier hands the
 * other instances' keys to the callback (redis_sub.c).
 *
 * Tags (TC_TIER_CAP_TAGS, issue 15). A set with tags also SADDs the key to
 * the set PREFIX‖"\xfftag:"‖TAG, whose expiry is pushed out to the key's
 * (PEXPIRE NX, then GT; PERSIST for a key that never expires), all in the
 * same pipeline, fire and forget. 0xff never occurs in UTF-8, so no key a
 * client can write through the HTTP API is a tag set's name; a clear of
 * everything removes the sets with the keys. A listing by tag is SSCAN of
 * the set; clearing a tag's index UNLINKs the set.
 *
 * Lease locks (TC_TIER_CAP_LOCK_CLUSTER). Lock NAME lives at the key
 * "lock:"‖PREFIX‖NAME (redis_lock.c). Not PREFIX‖"lock:"‖NAME: a cache key
 * may be any bytes, so that is also cache key "lock:"‖NAME, which a set
 * would overwrite (breaking exclusion) and clear would remove. Every key
 * under PREFIX is a possible cache key; "lock:"‖PREFIX is not under PREFIX
 * unless PREFIX is a prefix of it (empty, "lock:", "l", ...): with such a
 * prefix the lock operations are TC_ENOTSUP.
 */
#include "tiers/redis_impl.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SCAN_COUNT "512"
/* Keys in one UNLINK: what one SCAN returned (about SCAN_COUNT), as long as
 * it fits hiredis' int argc; the reply holding them is already in memory. */
#define CLEAR_MAX_KEYS (1u << 20)
#define LOCK_NS        "lock:"
/* Longest password_file accepted: a password, not a document. */
#define PASSWORD_FILE_MAX 4096

struct redis_settings {
    const char *prefix;
    uint64_t timeout_ms, connect_timeout_ms;
    int invalidate;
    uint64_t db; /* UINT64_MAX: not given (the URI path may say) */
    uint64_t max_item;
    uint64_t breaker_failures, backoff_ms, backoff_max_ms;
    const char *password_file; /* read by credentials() */
};

static const char *const inval_choices[] = {"none", "pubsub", NULL};

#define REDIS_FIELD(f) offsetof(struct redis_settings, f)
static const struct tc_tier_param redis_params[] = {
    {"prefix", TC_TIER_PARAM_TEXT, REDIS_FIELD(prefix), "tc:", 0, 0, 0, NULL,
     "every key is stored as PREFIX+key; clear and the invalidation channel stay inside it", NULL},
    {"timeout_ms", TC_TIER_PARAM_MS, REDIS_FIELD(timeout_ms), "50", 1, 3600000, 0, NULL,
     "deadline of one operation (one round trip)", NULL},
    {"connect_timeout_ms", TC_TIER_PARAM_MS, REDIS_FIELD(connect_timeout_ms), "200", 1, 3600000, 0,
     NULL, "deadline of connect + AUTH + SELECT", NULL},
    {"invalidate", TC_TIER_PARAM_CHOICE, REDIS_FIELD(invalidate), "pubsub", 0, 0, 0, inval_choices,
     "pubsub: publish every set and delete, and apply other hosts'; none", NULL},
    {"db", TC_TIER_PARAM_UINT, REDIS_FIELD(db), NULL, 0, 1000000, 0, NULL,
     "database number (redis:// may give it as the path instead)", "0"},
    {"max_item", TC_TIER_PARAM_SIZE, REDIS_FIELD(max_item), "1M", 0, (double)((512ull << 20) - 64),
     0, NULL, "largest value accepted; a reply longer than this plus its header is refused", NULL},
    {"breaker_failures", TC_TIER_PARAM_UINT, REDIS_FIELD(breaker_failures), "5", 1, 1000000, 0,
     NULL, "consecutive failures that open the circuit", NULL},
    {"backoff_ms", TC_TIER_PARAM_MS, REDIS_FIELD(backoff_ms), "100", 1, 3600000, 0, NULL,
     "first delay between probes of an open circuit", NULL},
    {"backoff_max_ms", TC_TIER_PARAM_MS, REDIS_FIELD(backoff_max_ms), "5000", 1, 3600000, 0, NULL,
     "largest delay between probes of an open circuit", NULL},
    {"password_file", TC_TIER_PARAM_TEXT, REDIS_FIELD(password_file), NULL, 0, 0, 0, NULL,
     "read the password from this file (mode 0600 or 0400) instead of the URI", "none"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

/* ---- building commands ------------------------------------------------------------ */

/* Builds PREFIX‖key in ctx->kbuf. */
static enum tc_status make_key(struct redis_ctx *c, const void *key, size_t len)
{
    size_t plen = c->rt->prefix_len;
    if (tc_buf_reserve(&c->kbuf, plen + len + 2) != TC_OK) {
        return TC_ENOMEM;
    }
    memcpy(c->kbuf.data, c->rt->prefix, plen);
    memcpy(c->kbuf.data + plen, key, len);
    c->kbuf.len = plen + len;
    return TC_OK;
}

/* Builds the invalidation message "<id><op><key>" in ctx->vbuf. */
static enum tc_status make_inval(struct redis_ctx *c, char op, const void *key, size_t len)
{
    if (tc_buf_reserve(&c->vbuf, TC_REDIS_ID_LEN + 1 + len) != TC_OK) {
        return TC_ENOMEM;
    }
    memcpy(c->vbuf.data, c->rt->id, TC_REDIS_ID_LEN);
    c->vbuf.data[TC_REDIS_ID_LEN] = (uint8_t)op;
    memcpy(c->vbuf.data + TC_REDIS_ID_LEN + 1, key, len);
    c->vbuf.len = TC_REDIS_ID_LEN + 1 + len;
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

/* "SET key value [PX ttl]" or "UNLINK key", with key and value formatted
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

#define TAG_NS     "\xfftag:"
#define TAG_NS_LEN 5u

/* Builds PREFIX‖TAG_NS‖tag in @p b. */
static enum tc_status make_tagset(struct redis_ctx *c, struct tc_buf *b, const char *tag,
                                  size_t len)
{
    enum tc_status st = tc_buf_set(b, c->rt->prefix, c->rt->prefix_len);
    if (st == TC_OK) {
        st = tc_buf_append(b, TAG_NS, TAG_NS_LEN);
    }
    return st == TC_OK ? tc_buf_append(b, tag, len) : st;
}

/* After a set's own command: records the key (in kbuf, prefixed) under each tag. */
static void send_tags(struct redis_ctx *c, struct tc_tier_req *req, const char *px)
{
    struct tc_buf set = TC_BUF_INIT;
    const char *t = req->tags, *end = t + req->tags_len;
    size_t plen = c->rt->prefix_len;
    while (t < end) {
        size_t tl = strlen(t); /* NUL-ended: checked by the tier layer */
        if (make_tagset(c, &set, t, tl) != TC_OK) {
            break;
        }
        const char *sadd[] = {"SADD", (const char *)set.data, (const char *)c->kbuf.data + plen};
        size_t saddl[] = {4, set.len, c->kbuf.len - plen};
        tc_redis_send(c, NULL, W_FIRE, 3, sadd, saddl);
        if (px == NULL) {
            const char *pe[] = {"PERSIST", (const char *)set.data};
            size_t pel[] = {7, set.len};
            tc_redis_send(c, NULL, W_FIRE, 2, pe, pel);
        } else {
            /* The set lives as long as its longest-lived key. */
            const char *nx[] = {"PEXPIRE", (const char *)set.data, px, "NX"};
            const char *gt[] = {"PEXPIRE", (const char *)set.data, px, "GT"};
            size_t l[] = {7, set.len, strlen(px), 2};
            tc_redis_send(c, NULL, W_FIRE, 4, nx, l);
            tc_redis_send(c, NULL, W_FIRE, 4, gt, l);
        }
        t += tl + 1;
    }
    tc_buf_deinit(&set);
}

/* ---- replies (untrusted input) ------------------------------------------------------ */

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
            REDIS_COUNT(rt, bad_replies);
            return TC_ECORRUPT;
        }
        return TC_EIO;
    }
    struct tc_item_hdr h;
    if (r->str == NULL || tc_item_decode(r->str, r->len, req->key, req->key_len, &h) != TC_OK) {
        REDIS_COUNT(rt, bad_replies);
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
    if (r->type == REDIS_REPLY_ERROR) {
        return TC_EIO;
    }
    if (r->integer == -1) {
        req->local_expire_ms = 0;
    } else if (r->integer >= 0 && (unsigned long long)r->integer < (1ull << 50)) {
        req->local_expire_ms = req->now_ms + (uint64_t)r->integer;
    } else if (r->integer == -2) {
        return TC_ENOTFOUND;
    } else {
        REDIS_COUNT(rt, bad_replies);
        return TC_ECORRUPT;
    }
    return TC_OK;
}

/* Validates a SCAN reply: [cursor, [key, ...]] with string keys. */
static int scan_reply_ok(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
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

/* UNLINK of the keys of a SCAN reply, then the next SCAN, on @p o. */
static void clear_next(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r)
{
    const redisReply *keys = r->element[1];
    if (keys->elements > 0) {
        size_t n = keys->elements;
        const char **argv = malloc((n + 1) * sizeof(*argv));
        size_t *argvlen = malloc((n + 1) * sizeof(*argvlen));
        if (argv == NULL || argvlen == NULL) {
            o->st = TC_ENOMEM;
        } else {
            argv[0] = "UNLINK";
            argvlen[0] = 6;
            for (size_t i = 0; i < n; i++) {
                argv[i + 1] = keys->element[i]->str;
                argvlen[i + 1] = keys->element[i]->len;
            }
            o->st = tc_redis_send(c, o, W_UNLINK_MANY, (int)n + 1, argv, argvlen);
        }
        free(argv);
        free(argvlen);
    }
    if (o->st == TC_OK && scan_done(r) && o->req != NULL &&
        c->rt->invalidate == TC_REDIS_INVALIDATE_PUBSUB &&
        make_inval(c, 'c', o->req->key, o->req->key_len) == TC_OK) {
        /* After the last UNLINK on this connection, so that a server that
         * hears it and drops its copies cannot re-read them from here. */
        const char *pargv[] = {"PUBLISH", c->rt->channel, (const char *)c->vbuf.data};
        size_t pargvlen[] = {7, c->rt->channel_len, c->vbuf.len};
        if (tc_redis_send(c, NULL, W_PUBLISH, 3, pargv, pargvlen) == TC_OK) {
            REDIS_COUNT(c->rt, inval_published);
        }
    }
    if (o->st == TC_OK && !scan_done(r)) {
        /* Each SCAN is a bounded batch; the deadline is per round trip. */
        const char *argv[] = {"SCAN", r->element[0]->str, "MATCH", o->pattern, "COUNT", SCAN_COUNT};
        size_t argvlen[] = {4, r->element[0]->len, 5, o->pattern_len, 5, strlen(SCAN_COUNT)};
        o->st = tc_redis_send(c, o, W_SCAN, 6, argv, argvlen);
        if (o->st == TC_OK) {
            o->deadline = tc_redis_mono_ms() + c->rt->timeout_ms;
            tc_redis_arm(c, o->deadline);
        }
    }
}

static void list_scan_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r);
static void list_pttl_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r);

void tc_redis_data_reply(struct redis_ctx *c, struct tc_redis_rop *o, int what, const redisReply *r)
{
    int err = r->type == REDIS_REPLY_ERROR;
    switch (what) {
    case W_GET:
        if (o->req != NULL && o->st == TC_OK) {
            o->st = decode_value(c->rt, o->req, r);
        }
        break;
    case W_PTTL:
        if (o->req != NULL && o->st == TC_OK) {
            o->st = decode_pttl(c->rt, o->req, r);
        }
        break;
    case W_SET:
    case W_UNLINK:
        if (err) {
            o->st = TC_EIO;
        }
        break;
    case W_UNLINK_MANY:
        if (!err && r->integer > 0 && o->req != NULL) {
            o->req->count += (uint64_t)r->integer;
        } else if (err && o->st == TC_OK) {
            o->st = TC_EIO;
        }
        break;
    case W_LSCAN:
        list_scan_reply(c, o, r);
        break;
    case W_LPTTL:
        list_pttl_reply(c, o, r);
        break;
    case W_SCAN:
        if (!scan_reply_ok(r)) {
            if (o->st == TC_OK) {
                o->st = err ? TC_EIO : TC_ECORRUPT;
            }
        } else if (o->req != NULL && o->st == TC_OK) {
            clear_next(c, o, r);
        }
        break;
    }
}

void tc_redis_data_finish(struct redis_ctx *c, struct tc_redis_rop *o)
{
    enum tc_status st = o->st;
    struct tc_tier_req *req = o->req;
    int kind = o->kind;
    if (o->lost && (st == TC_OK || (kind == ROP_GET && st == TC_ENOTFOUND))) {
        st = TC_EUNAVAIL; /* an answer never came */
    }
    o->req = NULL;
    tc_redis_rop_put(c, o);
    if (req == NULL) {
        return; /* completed already (deadline, dispose) */
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        REDIS_COUNT(c->rt, failures);
        /* Only an error reply is a failure of its own for the breaker: a
         * lost connection counts once, for all its requests (redis_conn.c). */
        if (st == TC_EIO) {
            tc_redis_failed(c);
        }
    } else {
        tc_redis_succeeded(c);
    }
    if (kind == ROP_GET && st != TC_OK && st != TC_ENOMEM) {
        req->out->len = 0;
        if (st != TC_ECORRUPT) {
            st = TC_ENOTFOUND; /* every failed get is a miss; a corrupt one is counted too */
        }
    }
    tc_redis_complete(c, req, NULL, st);
}

/* ---- operations ---------------------------------------------------------------------- */

static enum tc_status start_get(struct redis_ctx *c, struct tc_tier_req *req)
{
    if (tc_redis_ready(c) != TC_OK) {
        return TC_ENOTFOUND; /* a skipped get is a miss */
    }
    if (make_key(c, req->key, req->key_len) != TC_OK) {
        return TC_ENOMEM;
    }
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_GET, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    const char *a0[] = {"GET", (const char *)c->kbuf.data};
    const char *a1[] = {"PTTL", (const char *)c->kbuf.data};
    size_t l0[] = {3, c->kbuf.len}, l1[] = {4, c->kbuf.len};
    enum tc_status st = tc_redis_send(c, o, W_GET, 2, a0, l0);
    if (st != TC_OK) {
        tc_redis_rop_put(c, o);
        return st == TC_ENOMEM ? st : TC_ENOTFOUND;
    }
    if (tc_redis_send(c, o, W_PTTL, 2, a1, l1) != TC_OK) {
        o->st = TC_EUNAVAIL; /* out of memory: the GET's reply finishes it */
    }
    o->req = req;
    tc_redis_arm(c, o->deadline);
    return TC_EINPROGRESS;
}

/* Write (set, delete) plus its PUBLISH, pipelined. */
static enum tc_status start_write(struct redis_ctx *c, struct tc_tier_req *req, int is_set)
{
    struct redis_tier *rt = c->rt;
    enum tc_status st = tc_redis_ready(c);
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
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_WRITE, rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if ((st = tc_redis_send(c, o, is_set ? W_SET : W_UNLINK, argc, argv, argvlen)) != TC_OK) {
        tc_redis_rop_put(c, o);
        return st == TC_ENOMEM ? st : TC_EUNAVAIL;
    }
    o->req = req;
    tc_redis_arm(c, o->deadline);
    if (is_set && req->tags_len > 0) {
        send_tags(c, req, argc == 5 ? px : NULL);
    }
    if (rt->invalidate == TC_REDIS_INVALIDATE_PUBSUB &&
        make_inval(c, is_set ? 's' : 'd', req->key, req->key_len) == TC_OK) {
        const char *pargv[] = {"PUBLISH", rt->channel, (const char *)c->vbuf.data};
        size_t pargvlen[] = {7, rt->channel_len, c->vbuf.len};
        /* Fire and forget: the write's own reply decides its status. */
        if (tc_redis_send(c, NULL, W_PUBLISH, 3, pargv, pargvlen) == TC_OK) {
            REDIS_COUNT(rt, inval_published);
        }
    }
    return TC_EINPROGRESS;
}

/* Drops the index of tag req->tags: UNLINK of its set. */
static enum tc_status start_clear_tag(struct redis_ctx *c, struct tc_tier_req *req)
{
    if (make_tagset(c, &c->kbuf, req->tags, req->tags_len - 1) != TC_OK) {
        return TC_ENOMEM;
    }
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_WRITE, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    const char *argv[] = {"UNLINK", (const char *)c->kbuf.data};
    size_t argvlen[] = {6, c->kbuf.len};
    enum tc_status st = tc_redis_send(c, o, W_UNLINK, 2, argv, argvlen);
    if (st != TC_OK) {
        tc_redis_rop_put(c, o);
        return st == TC_ENOMEM ? st : TC_EUNAVAIL;
    }
    o->req = req;
    tc_redis_arm(c, o->deadline);
    return TC_EINPROGRESS;
}

static enum tc_status start_clear(struct redis_ctx *c, struct tc_tier_req *req)
{
    enum tc_status st = tc_redis_ready(c);
    if (st != TC_OK) {
        return st;
    }
    if (req->tags_len > 0) {
        return start_clear_tag(c, req);
    }
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_CLEAR, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if ((o->pattern = make_pattern(c->rt, req->key, req->key_len, &o->pattern_len)) == NULL) {
        tc_redis_rop_put(c, o);
        return TC_ENOMEM;
    }
    const char *argv[] = {"SCAN", "0", "MATCH", o->pattern, "COUNT", SCAN_COUNT};
    size_t argvlen[] = {4, 1, 5, o->pattern_len, 5, strlen(SCAN_COUNT)};
    if ((st = tc_redis_send(c, o, W_SCAN, 6, argv, argvlen)) != TC_OK) {
        tc_redis_rop_put(c, o);
        return st == TC_ENOMEM ? st : TC_EUNAVAIL;
    }
    o->req = req;
    tc_redis_arm(c, o->deadline);
    return TC_EINPROGRESS;
}

/* ---- key listing (issue 15) ----------------------------------------------------------------- */

/*
 * A listing is one SCAN cursor MATCH PREFIX‖prefix* COUNT limit, then a PTTL
 * of each key it returned, pipelined. Redis' cursor is the listing's: SCAN
 * returns every key present for the whole iteration, but may return one
 * twice when the table is rehashed meanwhile (docs/tiers.md). COUNT is a
 * hint, so a page may hold more or fewer keys than asked.
 *
 * The rop machinery completes struct tc_tier_req; a listing rides on one
 * (inner), whose done() completes the listing request (outer).
 */
#define LIST_GONE UINT64_MAX /* a key deleted between the SCAN and its PTTL */

struct redis_list_op {
    struct tc_tier_req inner;
    struct tc_tier_list_req *outer;
    int tag;      /* SSCAN of a tag set: its members are bare keys */
    size_t *offs; /* where each key's fresh-until field lies in outer->out */
    size_t noffs, next_off;
};

static void list_op_end(struct redis_list_op *op)
{
    /* Drops the keys found gone, in place. */
    struct tc_buf *b = op->outer->out;
    size_t start = op->noffs ? op->offs[0] : b->len, w = start, r = start;
    size_t keep = 0;
    for (size_t i = 0; i < op->noffs; i++) {
        uint32_t kl;
        memcpy(&kl, b->data + r, sizeof(kl));
        size_t rec = sizeof(kl) + kl + sizeof(uint64_t);
        uint64_t fresh;
        memcpy(&fresh, b->data + r + sizeof(kl) + kl, sizeof(fresh));
        if (fresh != LIST_GONE) {
            memmove(b->data + w, b->data + r, rec);
            w += rec;
            keep++;
        }
        r += rec;
    }
    b->len = op->noffs ? w : b->len;
    op->outer->count = keep;
    free(op->offs);
    free(op);
}

static void list_inner_done(struct tc_tier_req *inner)
{
    struct redis_list_op *op = inner->arg;
    struct tc_tier_list_req *outer = op->outer;
    enum tc_status st = inner->status;
    list_op_end(op);
    tc_tier_list_complete(outer, st);
}

static void list_scan_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r)
{
    if (!scan_reply_ok(r)) {
        if (o->st == TC_OK) {
            o->st = r->type == REDIS_REPLY_ERROR ? TC_EIO : TC_ECORRUPT;
        }
        return;
    }
    if (o->req == NULL || o->st != TC_OK) {
        return; /* completed already (deadline) */
    }
    struct redis_list_op *op = o->req->arg;
    struct tc_tier_list_req *lr = op->outer;
    const redisReply *keys = r->element[1];
    size_t plen = c->rt->prefix_len;
    if (keys->elements > 0 && (op->offs = malloc(keys->elements * sizeof(size_t))) == NULL) {
        o->st = TC_ENOMEM;
        return;
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        const char *key = k->str + (op->tag ? 0 : plen);
        size_t kl = op->tag ? k->len : k->len - plen;
        /* Untrusted: a key outside the prefix or too long is not listed; nor a tag set. */
        if (op->tag ? (k->len == 0 || k->len > TC_KEY_MAX)
                    : (k->len <= plen || k->len - plen > TC_KEY_MAX ||
                       memcmp(k->str, c->rt->prefix, plen) != 0 ||
                       (kl >= TAG_NS_LEN && memcmp(key, TAG_NS, TAG_NS_LEN) == 0))) {
            continue;
        }
        uint32_t kl32 = (uint32_t)kl;
        uint64_t fresh = LIST_GONE;
        size_t at = lr->out->len;
        if (tc_buf_append(lr->out, &kl32, sizeof(kl32)) != TC_OK ||
            tc_buf_append(lr->out, key, kl) != TC_OK ||
            tc_buf_append(lr->out, &fresh, sizeof(fresh)) != TC_OK ||
            make_key(c, key, kl) != TC_OK) {
            o->st = TC_ENOMEM;
            return;
        }
        const char *argv[] = {"PTTL", (const char *)c->kbuf.data};
        size_t argvlen[] = {4, c->kbuf.len};
        if (tc_redis_send(c, o, W_LPTTL, 2, argv, argvlen) != TC_OK) {
            o->st = TC_EUNAVAIL;
            return;
        }
        op->offs[op->noffs++] = at;
    }
    if (!scan_done(r) && tc_buf_set(lr->next, r->element[0]->str, r->element[0]->len) != TC_OK) {
        o->st = TC_ENOMEM;
    }
}

static void list_pttl_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r)
{
    (void)c;
    if (o->req == NULL) {
        return;
    }
    struct redis_list_op *op = o->req->arg;
    if (op->next_off >= op->noffs) {
        return;
    }
    size_t at = op->offs[op->next_off++];
    struct tc_buf *b = op->outer->out;
    uint32_t kl;
    memcpy(&kl, b->data + at, sizeof(kl));
    uint64_t fresh = LIST_GONE;
    if (r->type == REDIS_REPLY_INTEGER && r->integer == -1) {
        fresh = 0; /* never expires */
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0 &&
               (unsigned long long)r->integer < (1ull << 50)) {
        fresh = op->outer->now_ms + (uint64_t)r->integer;
    }
    memcpy(b->data + at + sizeof(kl) + kl, &fresh, sizeof(fresh));
}

static enum tc_status start_list(struct redis_ctx *c, struct redis_list_op *op)
{
    struct tc_tier_list_req *lr = op->outer;
    enum tc_status st = tc_redis_ready(c);
    if (st != TC_OK) {
        return st;
    }
    char cursor[24] = "0", count[24];
    if (lr->cursor_len > 0) {
        if (lr->cursor_len >= sizeof(cursor)) {
            return TC_EINVAL;
        }
        for (size_t i = 0; i < lr->cursor_len; i++) {
            char ch = ((const char *)lr->cursor)[i];
            if (ch < '0' || ch > '9') {
                return TC_EINVAL; /* not a SCAN cursor: not one of our pages */
            }
        }
        memcpy(cursor, lr->cursor, lr->cursor_len);
        cursor[lr->cursor_len] = '\0';
    }
    snprintf(count, sizeof(count), "%zu", lr->limit);
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_LIST, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if (op->tag) {
        struct tc_buf set = TC_BUF_INIT;
        st = make_tagset(c, &set, lr->tag, lr->tag_len);
        if (st == TC_OK) {
            const char *argv[] = {"SSCAN", (const char *)set.data, cursor, "COUNT", count};
            size_t argvlen[] = {5, set.len, strlen(cursor), 5, strlen(count)};
            st = tc_redis_send(c, o, W_LSCAN, 5, argv, argvlen);
        }
        tc_buf_deinit(&set);
    } else if ((o->pattern = make_pattern(c->rt, lr->prefix, lr->prefix_len, &o->pattern_len)) ==
               NULL) {
        st = TC_ENOMEM;
    } else {
        const char *argv[] = {"SCAN", cursor, "MATCH", o->pattern, "COUNT", count};
        size_t argvlen[] = {4, strlen(cursor), 5, o->pattern_len, 5, strlen(count)};
        st = tc_redis_send(c, o, W_LSCAN, 6, argv, argvlen);
    }
    if (st != TC_OK) {
        tc_redis_rop_put(c, o);
        return st == TC_ENOMEM ? st : TC_EUNAVAIL;
    }
    o->req = &op->inner;
    tc_redis_arm(c, o->deadline);
    return TC_EINPROGRESS;
}

static enum tc_status redis_list(struct tc_tier_ctx *base, struct tc_tier_list_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    struct redis_list_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        return TC_ENOMEM;
    }
    op->outer = req;
    op->tag = req->tag_len > 0;
    op->inner.arg = op;
    op->inner.done = list_inner_done;
    op->inner._ctx = base; /* completed by the tier layer, which counts nothing for it */
    if (c->own_base != NULL) {
        tc_redis_blocking_prepare(c);
    }
    enum tc_status st = start_list(c, op);
    if (c->own_base == NULL && st == TC_EINPROGRESS) {
        return st;
    }
    if (c->own_base != NULL) {
        st = tc_redis_settle(c, &op->inner, NULL, st);
        list_op_end(op);
        return st;
    }
    /* Failed at once on an async ctx: answered now, done() not called. */
    list_op_end(op);
    return st;
}

/* ---- vtable: operations ------------------------------------------------------------------- */

static enum tc_status redis_get(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    if (c->own_base != NULL) {
        tc_redis_blocking_prepare(c);
    }
    enum tc_status st = tc_redis_settle(c, req, NULL, start_get(c, req));
    req->status = st;
    return st;
}

static enum tc_status redis_write(struct tc_tier_ctx *base, struct tc_tier_req *req, int is_set)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    if (c->own_base != NULL) {
        tc_redis_blocking_prepare(c);
    }
    enum tc_status st = tc_redis_settle(c, req, NULL, start_write(c, req, is_set));
    req->status = st;
    return st;
}

static enum tc_status redis_set(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    return redis_write(base, req, 1);
}

static enum tc_status redis_del(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    return redis_write(base, req, 0);
}

static enum tc_status redis_clear(struct tc_tier_ctx *base, struct tc_tier_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st;
    if (c->rt->prefix_len == 0 && req->key_len == 0 && req->tags_len == 0) {
        /* Would be every key of the database, other programs' data too. */
        st = TC_EINVAL;
    } else {
        if (c->own_base != NULL) {
            tc_redis_blocking_prepare(c);
        }
        st = start_clear(c, req);
    }
    st = tc_redis_settle(c, req, NULL, st);
    req->status = st;
    return st;
}

static enum tc_status redis_lock_acquire(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return tc_redis_lock(base, req, TC_REDIS_LOCK_ACQUIRE);
}

static enum tc_status redis_lock_release(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return tc_redis_lock(base, req, TC_REDIS_LOCK_RELEASE);
}

static enum tc_status redis_lock_peek(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return tc_redis_lock(base, req, TC_REDIS_LOCK_PEEK);
}

static enum tc_status redis_lock_renew(struct tc_tier_ctx *base, struct tc_tier_lock_req *req)
{
    return tc_redis_lock(base, req, TC_REDIS_LOCK_RENEW);
}

/* ---- vtable: contexts ------------------------------------------------------------------------ */

static enum tc_status redis_ctx_init(struct tc_tier *t, struct event_base *base,
                                     struct tc_tier_ctx **out)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    struct redis_ctx *c;
    enum tc_status st = tc_redis_ctx_create(rt, base, 0, &c);
    if (st != TC_OK) {
        return st;
    }
    atomic_fetch_add(&rt->ctx_total, 1);
    *out = &c->base;
    return TC_OK;
}

static void redis_ctx_dispose(struct tc_tier_ctx *base)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    struct redis_tier *rt = c->rt;
    tc_redis_ctx_destroy(c);
    atomic_fetch_sub(&rt->ctx_total, 1);
}

/* ---- vtable: open, close, stats, health ------------------------------------------------------ */

static void redis_close(struct tc_tier *t)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    tc_redis_sub_stop(rt);
    pthread_mutex_destroy(&rt->err_lock);
    pthread_mutex_destroy(&rt->sub_ctl);
    pthread_mutex_destroy(&rt->sub_lock);
    pthread_cond_destroy(&rt->sub_cond);
    free(rt->target);
    free(rt->user);
    if (rt->password != NULL) {
        memset(rt->password, 0, strlen(rt->password));
        free(rt->password);
    }
    free(rt->prefix);
    free(rt->channel);
    free(rt->lock_prefix);
    free(rt->count_prefix);
    free(rt->lock_channel);
    free(rt);
}

static void make_id(char out[TC_REDIS_ID_LEN + 1])
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
    snprintf(out, TC_REDIS_ID_LEN + 1, "%016llx", (unsigned long long)v);
}

/* Resolves HOST once, at open, so that connects from worker threads never
 * block in getaddrinfo(). */
static enum tc_status resolve(struct redis_tier *rt, const char *host, unsigned port, char *err,
                              size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    char service[16];
    snprintf(service, sizeof(service), "%u", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0 || res == NULL || res->ai_addrlen > sizeof(rt->sa)) {
        tc_tier_errf(err, errlen, "redis: cannot resolve host '%s': %s", host,
                     rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL) {
            freeaddrinfo(res);
        }
        return TC_EINVAL;
    }
    memcpy(&rt->sa, res->ai_addr, res->ai_addrlen);
    rt->salen = res->ai_addrlen;
    char buf[1025]; /* NI_MAXHOST, which strict POSIX does not define */
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, buf, sizeof(buf), NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        tc_tier_errf(err, errlen, "redis: cannot resolve host '%s': %s", host, gai_strerror(rc));
        return TC_EINVAL;
    }
    size_t n = strlen(buf) + 16;
    if ((rt->target = malloc(n)) == NULL) {
        return TC_ENOMEM;
    }
    snprintf(rt->target, n, strchr(buf, ':') ? "[%s]:%u" : "%s:%u", buf, port);
    return TC_OK;
}

static enum tc_status unix_address(struct redis_tier *rt, const char *path, char *err,
                                   size_t errlen)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&rt->sa;
    if (strlen(path) >= sizeof(un->sun_path)) {
        tc_tier_errf(err, errlen, "redis+unix: socket path '%s' is longer than %zu bytes", path,
                     sizeof(un->sun_path) - 1);
        return TC_EINVAL;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, strlen(path) + 1);
    rt->salen = (socklen_t)sizeof(*un);
    size_t n = strlen(path) + 8;
    if ((rt->target = malloc(n)) == NULL) {
        return TC_ENOMEM;
    }
    snprintf(rt->target, n, "unix:%s", path);
    return TC_OK;
}

/* Reads the password from @p path: the file must be a regular file readable
 * by its owner only (0600 or 0400, as ssh wants of a private key), so that
 * the password is as private as the URI would not be (ps, logs). One line;
 * its newline is stripped. */
static enum tc_status read_password_file(const char *path, const char *scheme, char **out,
                                         char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        tc_tier_errf(err, errlen, "password_file '%s' for %s://: cannot open: %s", path, scheme,
                     strerror(errno));
        return TC_EINVAL;
    }
    struct stat sb;
    enum tc_status st = TC_EINVAL;
    char *buf = NULL;
    if (fstat(fd, &sb) != 0) {
        tc_tier_errf(err, errlen, "password_file '%s': fstat: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        tc_tier_errf(err, errlen, "password_file '%s' is not a regular file", path);
        goto out;
    }
    if ((sb.st_mode & 077) != 0) {
        tc_tier_errf(err, errlen,
                     "password_file '%s' is open to group or others (mode %04o); it must be 0600 "
                     "or 0400 (chmod 600 '%s')",
                     path, (unsigned)(sb.st_mode & 07777), path);
        goto out;
    }
    if ((buf = malloc(PASSWORD_FILE_MAX + 1)) == NULL) {
        st = TC_ENOMEM;
        goto out;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, PASSWORD_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            tc_tier_errf(err, errlen, "password_file '%s': read: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0 || (n += (size_t)r) > PASSWORD_FILE_MAX) {
            break;
        }
    }
    if (n > PASSWORD_FILE_MAX) {
        tc_tier_errf(err, errlen, "password_file '%s' is longer than %d bytes", path,
                     PASSWORD_FILE_MAX);
        goto out;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }
    }
    if (n == 0) {
        tc_tier_errf(err, errlen, "password_file '%s' is empty", path);
        goto out;
    }
    if (memchr(buf, '\0', n) != NULL || memchr(buf, '\n', n) != NULL) {
        tc_tier_errf(err, errlen, "password_file '%s' must hold one line, the password", path);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    st = TC_OK;
out:
    if (buf != NULL) {
        memset(buf, 0, PASSWORD_FILE_MAX + 1);
        free(buf);
    }
    close(fd);
    return st;
}

/* User and password: from the URI's userinfo, or the password from
 * password_file. */
static enum tc_status credentials(struct redis_tier *rt, const struct tc_tier_params *p, char *err,
                                  size_t errlen)
{
    const char *scheme = tc_tier_params_scheme(p);
    const char *user = tc_tier_params_user(p), *password = tc_tier_params_password(p);
    const char *file = tc_tier_params_get(p, "password_file");
    if (file != NULL) {
        if (password != NULL) {
            tc_tier_errf(err, errlen,
                         "password given twice in %s:// (in the URI and in password_file); keep "
                         "only password_file",
                         scheme);
            return TC_EINVAL;
        }
        enum tc_status st = read_password_file(file, scheme, &rt->password, err, errlen);
        if (st != TC_OK) {
            return st;
        }
    } else if (password == NULL && user != NULL) {
        /* redis://secret@host: a lone userinfo is the password (requirepass). */
        password = user;
        user = NULL;
    }
    if ((user != NULL && (rt->user = strdup(user)) == NULL) ||
        (password != NULL && (rt->password = strdup(password)) == NULL)) {
        return TC_ENOMEM;
    }
    return TC_OK;
}

/* open()'s one handshake: a rejected password or database is a
 * configuration error worth failing on now; an unreachable server is not
 * (the cache runs on its faster tiers and the breaker probes Redis back). */
static enum tc_status probe(struct redis_tier *rt, char *err, size_t errlen)
{
    struct redis_ctx *c;
    enum tc_status st = tc_redis_ctx_create(rt, NULL, 1, &c);
    if (st != TC_OK) {
        return st;
    }
    tc_redis_ctx_wait_handshake(c);
    int rejected = c->hs_rejected;
    tc_redis_ctx_destroy(c);
    if (rejected) {
        pthread_mutex_lock(&rt->err_lock);
        tc_tier_errf(err, errlen, "%s", rt->last_err);
        pthread_mutex_unlock(&rt->err_lock);
        return TC_EUNAVAIL;
    }
    return TC_OK;
}

/* Bounds on replies (redis_io.c). A value is at most max_item plus the item
 * header; other bulk strings are keys (SCAN), lock tokens and messages. */
static void set_limits(struct redis_tier *rt, uint64_t max_item)
{
    size_t keys = rt->prefix_len + strlen(LOCK_NS) + TC_LOCK_NAME_MAX + 64;
    rt->lim.bulk_max = (size_t)max_item + TC_ITEM_HDR_SIZE;
    if (rt->lim.bulk_max < keys) {
        rt->lim.bulk_max = keys;
    }
    rt->lim.line_max = 16384;
    rt->lim.array_max = 1u << 16; /* a SCAN batch, with room */
    rt->lim.elems_max = (1u << 16) + 16;
    rt->lim.reply_max = rt->lim.bulk_max + (4u << 20);
    /* The subscriber: ["message", channel, "<id><op><key>"] and the like. */
    rt->sub_lim.bulk_max = 65536;
    rt->sub_lim.line_max = 4096;
    rt->sub_lim.array_max = 8;
    rt->sub_lim.elems_max = 16;
    rt->sub_lim.reply_max = 3 * 65536 + 256;
}

static enum tc_status redis_open_common(const struct tc_tier_params *p, int unix_socket,
                                        struct tc_tier **out, char *err, size_t errlen)
{
    const char *scheme = tc_tier_params_scheme(p);
    struct redis_settings set = {.db = UINT64_MAX};
    enum tc_status st = tc_tier_params_load(p, redis_params, &set, err, errlen);
    if (st != TC_OK) {
        return st;
    }
    uint64_t timeout = set.timeout_ms, ctimeout = set.connect_timeout_ms, max_item = set.max_item;
    uint64_t db = 0, brk = set.breaker_failures, bo = set.backoff_ms, bomax = set.backoff_max_ms;
    int inval = set.invalidate;
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
    if (dbparam != NULL) {
        db = set.db;
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
        if ((st = unix_address(rt, path, err, errlen)) != TC_OK) {
            goto fail;
        }
    } else {
        const char *host = tc_tier_params_host(p);
        unsigned port = tc_tier_params_port(p) ? tc_tier_params_port(p) : 6379;
        if ((st = resolve(rt, host[0] ? host : "127.0.0.1", port, err, errlen)) != TC_OK) {
            goto fail;
        }
    }
    if ((st = credentials(rt, p, err, errlen)) != TC_OK) {
        goto fail;
    }
    st = TC_ENOMEM;
    const char *prefix = set.prefix;
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
    if ((st = tc_redis_lock_setup(rt, err, errlen)) != TC_OK ||
        (st = tc_redis_count_setup(rt, err, errlen)) != TC_OK) {
        goto fail;
    }
    rt->base.max_key = TC_KEY_MAX;
    rt->base.max_value = (size_t)max_item;
    set_limits(rt, max_item);

    if ((st = probe(rt, err, errlen)) != TC_OK) {
        goto fail;
    }
    if (inval == TC_REDIS_INVALIDATE_PUBSUB &&
        (st = tc_redis_sub_start(rt, err, errlen)) != TC_OK) {
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
    emit(arg, "subscribed", (uint64_t)tc_redis_sub_complete(rt), TC_STAT_GAUGE);
}

static enum tc_tier_health redis_health(struct tc_tier *t, char *detail, size_t len)
{
    struct redis_tier *rt = (struct redis_tier *)t;
    int total = atomic_load(&rt->ctx_total), open = atomic_load(&rt->ctx_open);
    int half = atomic_load(&rt->ctx_half_open);
    char err[TC_REDIS_ERR_TEXT];
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
    } else if (rt->invalidate == TC_REDIS_INVALIDATE_PUBSUB && !atomic_load(&rt->inval_sub)) {
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
                TC_TIER_CAP_LOCK_CLUSTER | TC_TIER_CAP_LIST | TC_TIER_CAP_TAGS |                   \
                TC_TIER_CAP_COUNT,                                                                 \
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
        .on_invalidate = tc_redis_on_invalidate,                                                   \
        .on_invalidate_prefix = tc_redis_on_invalidate_prefix,                                     \
        .list = redis_list,                                                                        \
        .lock_acquire = redis_lock_acquire,                                                        \
        .lock_release = redis_lock_release,                                                        \
        .lock_peek = redis_lock_peek,                                                              \
        .on_lock_release = tc_redis_on_lock_release,                                               \
        .lock_renew = redis_lock_renew,                                                            \
        .count = tc_redis_count,                                                                   \
    };

REDIS_OPS(tc_tier_redis_ops, "redis", redis_open,
          "redis://[user:password@]HOST:PORT/DB?prefix=tc:&timeout_ms=50&connect_timeout_ms=200"
          "&password_file=PATH")
REDIS_OPS(tc_tier_redis_unix_ops, "redis+unix", redis_unix_open,
          "redis+unix:///path/to/sock?db=0&prefix=tc:&timeout_ms=50&password_file=PATH")
