/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Lease locks on Redis (TC_TIER_CAP_LOCK_CLUSTER). Lock NAME lives at the
 * key "lock:"‖PREFIX‖NAME (why there: tier_redis.c), its value the holder's
 * token (32 hex digits from RAND_bytes), its Redis TTL the lease.
 *
 *   acquire  SET key token NX PX ttl, else PTTL          -> {1} | {0, pttl}
 *   release  GET == token ? DEL + PUBLISH : nothing      -> 1 | 0
 *   peek     GET (first 64 bytes) + PTTL                 -> 0 | {value, pttl}
 *   renew    GET == token ? PEXPIRE ttl                  -> 1 | 2 (another's) | 0
 *
 * Each is one Lua script, so one round trip and atomic (a pipeline of
 * SET NX + PTTL could see the key expire or change hands in between). They
 * run by EVALSHA; a NOSCRIPT answer (Redis restarted, SCRIPT FLUSH) resends
 * that request once as EVAL, which caches the script again, within the same
 * deadline. Scripts read the key with redis.pcall so that a foreign value of
 * another type is "held by someone else", not a server error. A release
 * PUBLISHes "<token> <name>" on PREFIX‖"locks@"‖DB from inside the script,
 * so a notice goes out exactly when a lock was released (redis_sub.c hands
 * notices to tc_tier_on_lock_release() callbacks).
 *
 * Lock operations share the data connections, deadlines and breaker with
 * the cache operations. A token read back (peek) that is not 1..47
 * characters of [0-9A-Za-z_-] is a foreign value: held, token "" (counted
 * in "bad_replies"). An acquire that fails after it was sent (TC_ETIMEOUT,
 * TC_EUNAVAIL) leaves its token in req->token: the lock may have been taken
 * under it, and releasing with it is safe; otherwise req->token is "".
 */
#include "tiers/redis_impl.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

/* Longest lease accepted (about 35,000 years; far from the overflow of
 * Redis' now + PX), and the remaining time reported for a lock key without
 * expiry (only a foreign writer makes one): "held, for longer than anyone
 * waits". Callers may add it to a ms clock without overflow. */
#define LOCK_TTL_MAX (1ull << 50)
#define TOKEN_LEN    32 /* hex digits of the tokens made here */

/* KEYS[1] the lock key. ARGV: acquire token, ttl; release token, channel,
 * message. The replies are what lock_decode() accepts. */
static const char *const lock_script[TC_REDIS_LOCK_OPS] = {
    [TC_REDIS_LOCK_ACQUIRE] = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
                              "  return {1}\n"
                              "end\n"
                              "return {0, redis.call('PTTL', KEYS[1])}\n",
    [TC_REDIS_LOCK_RELEASE] = "if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then\n"
                              "  return 0\n"
                              "end\n"
                              "redis.call('DEL', KEYS[1])\n"
                              "redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
                              "return 1\n",
    /* At most 64 bytes of the value come back: enough to see that a
     * foreign value is not a token, without shipping all of it. */
    /* 1 renewed, 2 held under another token, 0 not held. */
    [TC_REDIS_LOCK_RENEW] = "local v = redis.pcall('GET', KEYS[1])\n"
                            "if v == ARGV[1] then\n"
                            "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                            "  return 1\n"
                            "end\n"
                            "if v then\n"
                            "  return 2\n"
                            "end\n"
                            "return 0\n",
    [TC_REDIS_LOCK_PEEK] = "local v = redis.pcall('GET', KEYS[1])\n"
                           "if not v then\n"
                           "  return 0\n"
                           "end\n"
                           "if type(v) ~= 'string' then\n"
                           "  v = ''\n"
                           "end\n"
                           "return {string.sub(v, 1, 64), redis.call('PTTL', KEYS[1])}\n",
};

int tc_redis_token_ok(const char *s, size_t len)
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

enum tc_status tc_redis_script_sha(const char *script, char out[TC_REDIS_SHA_HEX + 1], char *err,
                                   size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(script, strlen(script), md, &len, EVP_sha1(), NULL) != 1 ||
        len * 2 != TC_REDIS_SHA_HEX) {
        tc_tier_errf(err, errlen, "redis: SHA1 (OpenSSL) unavailable for the lock scripts");
        return TC_EIO;
    }
    for (unsigned i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
    return TC_OK;
}

enum tc_status tc_redis_lock_setup(struct redis_tier *rt, char *err, size_t errlen)
{
    for (int op = 0; op < TC_REDIS_LOCK_OPS; op++) {
        enum tc_status st = tc_redis_script_sha(lock_script[op], rt->lock_sha[op], err, errlen);
        if (st != TC_OK) {
            return st;
        }
    }
    return TC_OK;
}

/* Builds "lock:"‖PREFIX‖name in ctx->kbuf. */
static enum tc_status make_lock_key(struct redis_ctx *c, const void *name, size_t len)
{
    size_t plen = c->rt->lock_prefix_len;
    if (tc_buf_reserve(&c->kbuf, plen + len + 2) != TC_OK) {
        return TC_ENOMEM;
    }
    memcpy(c->kbuf.data, c->rt->lock_prefix, plen);
    memcpy(c->kbuf.data + plen, name, len);
    c->kbuf.len = plen + len;
    return TC_OK;
}

/* The EVALSHA (or, with @p eval, EVAL) of a lock operation; the key and the
 * release notice go into the ctx's buffers, the TTL digits into ttl.
 * Returns argc, or a negative tc_status. */
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
    if (op == TC_REDIS_LOCK_PEEK) {
        return 4;
    }
    size_t toklen = strlen(req->token);
    argv[4] = req->token;
    argvlen[4] = toklen;
    if (op == TC_REDIS_LOCK_ACQUIRE || op == TC_REDIS_LOCK_RENEW) {
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

int tc_redis_is_noscript(const redisReply *r)
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
    case TC_REDIS_LOCK_ACQUIRE:
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
    case TC_REDIS_LOCK_RELEASE:
        if (r->type == REDIS_REPLY_INTEGER && (r->integer == 0 || r->integer == 1)) {
            return r->integer == 1 ? TC_OK : TC_ENOTFOUND;
        }
        break;
    case TC_REDIS_LOCK_RENEW:
        if (r->type == REDIS_REPLY_INTEGER && r->integer >= 0 && r->integer <= 2) {
            return r->integer == 1 ? TC_OK : r->integer == 2 ? TC_EEXIST : TC_ENOTFOUND;
        }
        break;
    case TC_REDIS_LOCK_PEEK:
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
            return TC_ENOTFOUND;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_INTEGER) {
            const redisReply *v = r->element[0];
            if (v->str != NULL && tc_redis_token_ok(v->str, v->len)) {
                memcpy(req->token, v->str, v->len);
                req->token[v->len] = '\0';
            } else {
                REDIS_COUNT(rt, bad_replies); /* a foreign value: held by someone unknown */
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
    REDIS_COUNT(rt, bad_replies);
    return TC_ECORRUPT;
}

/* Leaves req->token as the top comment says: an acquire keeps it only when
 * the lock is, or may be, held under it. */
static void lock_token_fixup(struct tc_tier_lock_req *req, int op, enum tc_status st)
{
    if (op == TC_REDIS_LOCK_ACQUIRE && st != TC_OK && st != TC_ETIMEOUT && st != TC_EUNAVAIL) {
        req->token[0] = '\0';
    } else if (op == TC_REDIS_LOCK_PEEK && st != TC_OK) {
        req->token[0] = '\0';
    }
}

void tc_redis_lock_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r)
{
    struct tc_tier_lock_req *req = o->lreq;
    if (req == NULL) {
        return; /* completed already: its reply is only read past */
    }
    if (tc_redis_is_noscript(r) && !o->resent) {
        /* Redis lost its script cache: the same request once more as EVAL,
         * which nothing ran yet (NOSCRIPT executes nothing), on the same rop
         * and under the same deadline. */
        char ttl[24];
        const char *argv[7];
        size_t argvlen[7];
        int argc = lock_args(c, req, o->lop, 1, ttl, argv, argvlen);
        REDIS_COUNT(c->rt, script_loads);
        enum tc_status st =
            argc < 0 ? (enum tc_status)argc : tc_redis_send(c, o, W_LOCK, argc, argv, argvlen);
        if (st == TC_OK) {
            o->resent = 1;
        } else {
            o->st = st == TC_ENOMEM ? st : TC_EUNAVAIL;
        }
        return;
    }
    o->st = lock_decode(c->rt, o->lop, req, r);
}

void tc_redis_lock_finish(struct redis_ctx *c, struct tc_redis_rop *o)
{
    struct tc_tier_lock_req *req = o->lreq;
    enum tc_status st = o->st;
    int op = o->lop;
    if (o->lost && st == TC_OK) {
        st = TC_EUNAVAIL; /* the answer never came */
    }
    o->lreq = NULL;
    tc_redis_rop_put(c, o);
    if (req == NULL) {
        return;
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        REDIS_COUNT(c->rt, failures);
        if (st == TC_EIO) {
            tc_redis_failed(c); /* an error reply: the server is not serving */
        }
    } else {
        tc_redis_succeeded(c);
    }
    lock_token_fixup(req, op, st);
    tc_redis_complete(c, NULL, req, st);
}

static enum tc_status start_lock(struct redis_ctx *c, struct tc_tier_lock_req *req, int op)
{
    enum tc_status st = tc_redis_ready(c);
    if (st != TC_OK) {
        return st;
    }
    if (op == TC_REDIS_LOCK_ACQUIRE && (st = make_token(req->token)) != TC_OK) {
        return st;
    }
    char ttl[24];
    const char *argv[7];
    size_t argvlen[7];
    int argc = lock_args(c, req, op, 0, ttl, argv, argvlen);
    if (argc < 0) {
        return (enum tc_status)argc; /* not sent: lock_token_fixup() clears a new token */
    }
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_LOCK, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if ((st = tc_redis_send(c, o, W_LOCK, argc, argv, argvlen)) != TC_OK) {
        tc_redis_rop_put(c, o);
        if (op == TC_REDIS_LOCK_ACQUIRE) {
            req->token[0] = '\0'; /* never sent: not held under it */
        }
        return st == TC_ENOMEM ? st : TC_EUNAVAIL;
    }
    o->lreq = req;
    o->lop = op;
    tc_redis_arm(c, o->deadline);
    return TC_EINPROGRESS;
}

enum tc_status tc_redis_lock(struct tc_tier_ctx *base, struct tc_tier_lock_req *req, int op)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st;
    if (!c->rt->locks_ok) {
        st = TC_ENOTSUP;
    } else if (op == TC_REDIS_LOCK_ACQUIRE && req->ttl_ms > LOCK_TTL_MAX) {
        st = TC_EINVAL;
    } else if (op == TC_REDIS_LOCK_RENEW && req->ttl_ms > LOCK_TTL_MAX) {
        st = TC_EINVAL;
    } else if ((op == TC_REDIS_LOCK_RELEASE || op == TC_REDIS_LOCK_RENEW) &&
               !tc_redis_token_ok(req->token, strlen(req->token))) {
        st = TC_EINVAL; /* never one of ours, and a space would garble the notice */
    } else {
        if (c->own_base != NULL) {
            tc_redis_blocking_prepare(c);
        }
        st = start_lock(c, req, op);
    }
    if (st != TC_EINPROGRESS) {
        lock_token_fixup(req, op, st);
    }
    st = tc_redis_settle(c, NULL, req, st);
    req->status = st;
    return st;
}
