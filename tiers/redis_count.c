/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Counters and rate limits on Redis (TC_TIER_CAP_COUNT; issue 16). The state
 * of KIND (c counter; f, s, m, g the limit strategies) for KEY lives at
 * "rl:"‖PREFIX‖KIND‖":"‖KEY (apart from cache keys as lock keys are:
 * tier_redis.c), with a Redis TTL where the state ends:
 *
 *   counter  a string integer, INCRBY (+ PEXPIRE on the first, or every
 *            elastic, add); Redis' own overflow check refuses a wrap
 *   fixed    a string integer, the window's hits; its TTL the window's end
 *   sliding  a hash {s: window start, c: hits in it, p: hits in the previous}
 *   moving   a list of hit times (ms), newest first, trimmed to the limit
 *   gcra     a string, the theoretical arrival time in us
 *
 * Each decision is one Lua script (EVALSHA, one round trip, atomic), with
 * the same rules as tiers/count.c but at Redis' clock (TIME), so that every
 * host decides at one time. NOSCRIPT resends once as EVAL (redis_lock.c).
 * Lua numbers are doubles: counter values travel as strings, times and
 * counts of limits stay far below 2^53.
 *
 * Limit scripts answer {allowed, used, remaining, reset_ms, retry_ms,
 * start_ms}; counter scripts {ok, value, pttl} (ok 0: the add would
 * overflow, nothing changed).
 */
#include "tiers/redis_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNT_NS "rl:"

#define LUA_NOW_MS                                                                                 \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
/* ARGV of every limit script: hit (1) or peek (0), limit, window ms, cost,
 * burst, elastic. */
#define LUA_LIMIT_ARGS                                                                             \
    "local hit = ARGV[1] == '1'\n"                                                                 \
    "local limit, w, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"

static const char *const count_script[TC_REDIS_COUNT_SCRIPTS] = {
    /* ARGV: by, ttl ms (0: none), elastic (1/0). */
    [TC_REDIS_COUNT_ADD] =
        "local fresh = redis.call('EXISTS', KEYS[1]) == 0\n"
        "local v = redis.pcall('INCRBY', KEYS[1], ARGV[1])\n"
        "if type(v) == 'table' then\n"
        "  if v.err and string.find(v.err, 'overflow', 1, true) then\n"
        "    return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}\n"
        "  end\n"
        "  return v\n"
        "end\n"
        "local ttl = tonumber(ARGV[2])\n"
        "if fresh or ARGV[3] == '1' then\n"
        "  if ttl > 0 then\n"
        "    redis.call('PEXPIRE', KEYS[1], ttl)\n"
        "  elseif not fresh then\n"
        "    redis.call('PERSIST', KEYS[1])\n"
        "  end\n"
        "end\n"
        "return {1, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}\n",
    [TC_REDIS_COUNT_GET] = "local v = redis.pcall('GET', KEYS[1])\n"
                           "if type(v) == 'table' then\n"
                           "  return v\n"
                           "end\n"
                           "if not v then\n"
                           "  return {1, '0', -2}\n"
                           "end\n"
                           "return {1, v, redis.call('PTTL', KEYS[1])}\n",
    [TC_REDIS_COUNT_DEL] = "return redis.call('DEL', unpack(KEYS))\n",
    [TC_REDIS_LIMIT_FIXED] =
        LUA_NOW_MS LUA_LIMIT_ARGS "local raw = redis.pcall('GET', KEYS[1])\n"
                                  "if type(raw) == 'table' then\n"
                                  "  return raw\n"
                                  "end\n"
                                  "local c = tonumber(raw or '0') or 0\n"
                                  "local pttl = redis.call('PTTL', KEYS[1])\n"
                                  "if pttl < 0 then pttl = 0 end\n"
                                  "local ok = c + cost <= limit\n"
                                  "if hit and cost > 0 then\n"
                                  "  if ok then\n"
                                  "    c = redis.call('INCRBY', KEYS[1], cost)\n"
                                  "    if pttl == 0 then\n"
                                  "      redis.call('PEXPIRE', KEYS[1], w)\n"
                                  "      pttl = w\n"
                                  "    end\n"
                                  "  end\n"
                                  "  if ARGV[6] == '1' and c > 0 then\n"
                                  "    redis.call('PEXPIRE', KEYS[1], w)\n"
                                  "    pttl = w\n"
                                  "  end\n"
                                  "end\n"
                                  "local retry = 0\n"
                                  "if not ok then retry = math.max(pttl, 1) end\n"
                                  "local start = 0\n"
                                  "if pttl > 0 then start = now + pttl - w end\n"
                                  "return {ok and 1 or 0, c, math.max(limit - c, 0), pttl, retry, "
                                  "start}\n",
    [TC_REDIS_LIMIT_SLIDING] = LUA_NOW_MS LUA_LIMIT_ARGS
    "local v = redis.pcall('HMGET', KEYS[1], 's', 'c', 'p')\n"
    "if v.err then\n"
    "  return v\n"
    "end\n"
    "local s, c, p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0\n"
    "if not s or s > now then\n"
    "  s, c, p = now, 0, 0\n"
    "else\n"
    "  local n = math.floor((now - s) / w)\n"
    "  if n >= 1 then\n"
    "    if n == 1 then p = c else p = 0 end\n"
    "    c = 0\n"
    "    s = s + n * w\n"
    "  end\n"
    "end\n"
    "local el = now - s\n"
    "local uw = p * (w - el) + c * w\n"
    "local ok = uw + cost * w <= limit * w\n"
    "if hit and cost > 0 and ok then\n"
    "  c = c + cost\n"
    "  uw = uw + cost * w\n"
    "  redis.call('HSET', KEYS[1], 's', s, 'c', c, 'p', p)\n"
    "  redis.call('PEXPIRE', KEYS[1], s + 2 * w - now)\n"
    "end\n"
    "local used = math.ceil(uw / w)\n"
    "local reset = 0\n"
    "if c > 0 then reset = s + 2 * w - now elseif p > 0 then reset = s + w - now end\n"
    "local retry = 0\n"
    "if not ok then\n"
    "  local at = 0\n"
    "  if limit >= c + cost and p > 0 then\n"
    "    local need = w - math.floor((limit - c - cost) * w / p)\n"
    "    if need < w then at = s + need end\n"
    "  end\n"
    "  if at == 0 then\n"
    "    local need = 0\n"
    "    if c > 0 then need = w - math.floor((limit - cost) * w / c) end\n"
    "    at = s + w + math.min(need, w)\n"
    "  end\n"
    "  retry = math.max(at - now, 1)\n"
    "end\n"
    "return {ok and 1 or 0, used, math.max(limit - used, 0), reset, retry, s}\n",
    [TC_REDIS_LIMIT_MOVING] = LUA_NOW_MS LUA_LIMIT_ARGS
    "local floor = now - w\n"
    "local ok, blocker = true, 0\n"
    "if cost > 0 then\n"
    "  local e = redis.pcall('LINDEX', KEYS[1], limit - cost)\n"
    "  if type(e) == 'table' then\n"
    "    return e\n"
    "  end\n"
    "  if e and tonumber(e) and tonumber(e) > floor then\n"
    "    ok, blocker = false, tonumber(e)\n"
    "  end\n"
    "end\n"
    "if hit and cost > 0 and ok then\n"
    "  for i = 1, cost do\n"
    "    redis.call('LPUSH', KEYS[1], now)\n"
    "  end\n"
    "  redis.call('LTRIM', KEYS[1], 0, limit - 1)\n"
    "  redis.call('PEXPIRE', KEYS[1], w)\n"
    "end\n"
    "local all = redis.call('LRANGE', KEYS[1], 0, limit - 1)\n"
    "local used, oldest, newest = 0, 0, 0\n"
    "for i = 1, #all do\n"
    "  local ts = tonumber(all[i]) or 0\n"
    "  if ts <= floor then break end\n"
    "  if i == 1 then newest = ts end\n"
    "  used = used + 1\n"
    "  oldest = ts\n"
    "end\n"
    "local reset = 0\n"
    "if used > 0 then reset = newest + w - now end\n"
    "local retry = 0\n"
    "if not ok then retry = math.max(blocker + w - now, 1) end\n"
    "return {ok and 1 or 0, used, math.max(limit - used, 0), reset, retry, oldest}\n",
    [TC_REDIS_LIMIT_GCRA] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n" LUA_LIMIT_ARGS
        "local burst = tonumber(ARGV[5])\n"
        "if burst == 0 then burst = limit end\n"
        "local T = w * 1000 / limit\n"
        "local span = burst * T\n"
        "local raw = redis.pcall('GET', KEYS[1])\n"
        "if type(raw) == 'table' then\n"
        "  return raw\n"
        "end\n"
        "local tat = tonumber(raw or '0') or 0\n"
        "if tat < now then tat = now end\n"
        "local new = tat + cost * T\n"
        "local ok = new - now <= span\n"
        "if hit and cost > 0 and ok then\n"
        "  tat = new\n"
        "  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', "
        "math.ceil((tat - now) / 1000) + 1)\n"
        "end\n"
        "local lead = tat - now\n"
        "local used = math.ceil(lead / T - 1e-9)\n"
        "local retry = 0\n"
        "if not ok then retry = math.max(math.ceil((new - now - span) / 1000), 1) end\n"
        "return {ok and 1 or 0, used, math.max(burst - used, 0), math.ceil(lead / 1000), retry, "
        "0}\n",
};

enum tc_status tc_redis_count_setup(struct redis_tier *rt, char *err, size_t errlen)
{
    rt->count_prefix_len = strlen(COUNT_NS) + rt->prefix_len;
    if ((rt->count_prefix = malloc(rt->count_prefix_len + 1)) == NULL) {
        return TC_ENOMEM;
    }
    memcpy(rt->count_prefix, COUNT_NS, strlen(COUNT_NS));
    memcpy(rt->count_prefix + strlen(COUNT_NS), rt->prefix, rt->prefix_len + 1);
    for (int i = 0; i < TC_REDIS_COUNT_SCRIPTS; i++) {
        enum tc_status st = tc_redis_script_sha(count_script[i], rt->count_sha[i], err, errlen);
        if (st != TC_OK) {
            return st;
        }
    }
    return TC_OK;
}

static int script_of(const struct tc_tier_count_req *req)
{
    switch (req->op) {
    case TC_COUNT_ADD:
        return TC_REDIS_COUNT_ADD;
    case TC_COUNT_GET:
        return TC_REDIS_COUNT_GET;
    case TC_COUNT_RESET:
    case TC_LIMIT_CLEAR:
        return TC_REDIS_COUNT_DEL;
    case TC_LIMIT_HIT:
    case TC_LIMIT_PEEK:
        break;
    }
    switch (req->strategy) {
    case TC_LIMIT_FIXED:
        return TC_REDIS_LIMIT_FIXED;
    case TC_LIMIT_SLIDING:
        return TC_REDIS_LIMIT_SLIDING;
    case TC_LIMIT_MOVING:
        return TC_REDIS_LIMIT_MOVING;
    case TC_LIMIT_GCRA:
        break;
    }
    return TC_REDIS_LIMIT_GCRA;
}

static char kind_of(enum tc_limit_strategy s)
{
    return s == TC_LIMIT_FIXED     ? 'f'
           : s == TC_LIMIT_SLIDING ? 's'
           : s == TC_LIMIT_MOVING  ? 'm'
                                   : 'g';
}

#define MAX_KEYS 4
#define MAX_ARGS (3 + MAX_KEYS + 6)

/* The EVALSHA (EVAL) of @p req: the keys go into ctx->kbuf, the numbers into
 * @p num. Returns argc, or a negative tc_status. */
static int count_args(struct redis_ctx *c, const struct tc_tier_count_req *req, int eval,
                      char num[6][24], const char *argv[MAX_ARGS], size_t argvlen[MAX_ARGS])
{
    struct redis_tier *rt = c->rt;
    int script = script_of(req);
    char kinds[MAX_KEYS];
    int nkeys = 1;
    if (req->op == TC_COUNT_ADD || req->op == TC_COUNT_GET || req->op == TC_COUNT_RESET) {
        kinds[0] = 'c';
    } else if (req->op == TC_LIMIT_CLEAR && req->strategy == 0) {
        memcpy(kinds, "fsmg", MAX_KEYS);
        nkeys = MAX_KEYS;
    } else {
        kinds[0] = kind_of(req->strategy);
    }
    size_t one = rt->count_prefix_len + 2 + req->key_len;
    if (tc_buf_reserve(&c->kbuf, one * (size_t)nkeys) != TC_OK) {
        return TC_ENOMEM;
    }
    argv[0] = eval ? "EVAL" : "EVALSHA";
    argvlen[0] = strlen(argv[0]);
    argv[1] = eval ? count_script[script] : rt->count_sha[script];
    argvlen[1] = strlen(argv[1]);
    snprintf(num[0], 24, "%d", nkeys);
    argv[2] = num[0];
    argvlen[2] = strlen(num[0]);
    int argc = 3;
    for (int i = 0; i < nkeys; i++) {
        uint8_t *k = c->kbuf.data + one * (size_t)i;
        memcpy(k, rt->count_prefix, rt->count_prefix_len);
        k[rt->count_prefix_len] = (uint8_t)kinds[i];
        k[rt->count_prefix_len + 1] = ':';
        memcpy(k + rt->count_prefix_len + 2, req->key, req->key_len);
        argv[argc] = (const char *)k;
        argvlen[argc++] = one;
    }
    c->kbuf.len = one * (size_t)nkeys;
    int nnum = 0;
    char *n = num[1];
    if (script == TC_REDIS_COUNT_ADD) {
        snprintf(num[1], 24, "%" PRId64, req->by);
        snprintf(num[2], 24, "%" PRIu64, req->ttl_ms);
        snprintf(num[3], 24, "%d", req->elastic ? 1 : 0);
        nnum = 3;
    } else if (script >= TC_REDIS_LIMIT_FIXED) {
        /* num[0] holds the key count: five more fit, then elastic inline. */
        snprintf(num[1], 24, "%d", req->op == TC_LIMIT_HIT ? 1 : 0);
        snprintf(num[2], 24, "%" PRIu64, req->limit);
        snprintf(num[3], 24, "%" PRIu64, req->window_ms);
        snprintf(num[4], 24, "%" PRIu64, req->cost);
        snprintf(num[5], 24, "%" PRIu64, req->burst);
        nnum = 5;
    }
    for (int i = 0; i < nnum; i++, n += 24) {
        argv[argc] = n;
        argvlen[argc++] = strlen(n);
    }
    if (script >= TC_REDIS_LIMIT_FIXED) {
        argv[argc] = req->elastic ? "1" : "0";
        argvlen[argc++] = 1;
    }
    return argc;
}

/* A reply element as a signed 64-bit integer (an integer, or a string of
 * one); 0 when it is neither. */
static int elem_i64(const redisReply *e, int64_t *out)
{
    if (e->type == REDIS_REPLY_INTEGER) {
        *out = e->integer;
        return 1;
    }
    if (e->type != REDIS_REPLY_STRING || e->str == NULL || e->len == 0 || e->len > 21) {
        return 0;
    }
    char tmp[24];
    memcpy(tmp, e->str, e->len);
    tmp[e->len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno != 0 || *end != '\0') {
        return 0;
    }
    *out = v;
    return 1;
}

static uint64_t nonneg(int64_t v)
{
    return v > 0 ? (uint64_t)v : 0;
}

/* A count script's reply -> req's outputs and a status: TC_EIO for an error
 * reply (a foreign value of another type), TC_ECORRUPT for another shape. */
static enum tc_status count_decode(struct redis_tier *rt, struct tc_tier_count_req *req,
                                   const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        return TC_EIO;
    }
    int script = script_of(req);
    if (script == TC_REDIS_COUNT_DEL) {
        if (r->type == REDIS_REPLY_INTEGER) {
            return TC_OK;
        }
    } else if (script == TC_REDIS_COUNT_ADD || script == TC_REDIS_COUNT_GET) {
        int64_t ok, v, pttl;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && elem_i64(r->element[0], &ok) &&
            elem_i64(r->element[1], &v) && elem_i64(r->element[2], &pttl)) {
            req->overflow = ok == 0;
            req->value = v;
            req->ttl_ms_left = pttl > 0 ? (uint64_t)pttl : 0;
            return TC_OK;
        }
    } else {
        int64_t f[6];
        int good = r->type == REDIS_REPLY_ARRAY && r->elements == 6;
        for (size_t i = 0; good && i < 6; i++) {
            good = elem_i64(r->element[i], &f[i]);
        }
        if (good) {
            req->allowed = f[0] == 1;
            req->value = f[1];
            req->remaining = nonneg(f[2]);
            req->reset_ms = nonneg(f[3]);
            req->retry_ms = nonneg(f[4]);
            req->start_ms = nonneg(f[5]);
            return TC_OK;
        }
    }
    REDIS_COUNT(rt, bad_replies);
    return TC_ECORRUPT;
}

void tc_redis_count_reply(struct redis_ctx *c, struct tc_redis_rop *o, const redisReply *r)
{
    struct tc_tier_count_req *req = o->creq;
    if (req == NULL) {
        return; /* completed already (a timeout): only read past */
    }
    if (tc_redis_is_noscript(r) && !o->resent) {
        /* As for the lock scripts: once more as EVAL, same rop and deadline. */
        char num[6][24];
        const char *argv[MAX_ARGS];
        size_t argvlen[MAX_ARGS];
        int argc = count_args(c, req, 1, num, argv, argvlen);
        REDIS_COUNT(c->rt, script_loads);
        enum tc_status st =
            argc < 0 ? (enum tc_status)argc : tc_redis_send(c, o, W_COUNT, argc, argv, argvlen);
        if (st == TC_OK) {
            o->resent = 1;
        } else {
            o->st = st == TC_ENOMEM ? st : TC_EUNAVAIL;
        }
        return;
    }
    o->st = count_decode(c->rt, req, r);
}

void tc_redis_count_finish(struct redis_ctx *c, struct tc_redis_rop *o)
{
    struct tc_tier_count_req *req = o->creq;
    enum tc_status st = o->st;
    if (o->lost && st == TC_OK) {
        st = TC_EUNAVAIL;
    }
    o->creq = NULL;
    tc_redis_rop_put(c, o);
    if (req == NULL) {
        return;
    }
    if (st == TC_EUNAVAIL || st == TC_EIO) {
        REDIS_COUNT(c->rt, failures);
        if (st == TC_EUNAVAIL) {
            tc_redis_failed(c);
        }
    } else {
        tc_redis_succeeded(c);
    }
    tc_redis_complete_count(c, req, st);
}

static enum tc_status start_count(struct redis_ctx *c, struct tc_tier_count_req *req)
{
    enum tc_status st = tc_redis_ready(c);
    if (st != TC_OK) {
        return st;
    }
    char num[6][24];
    const char *argv[MAX_ARGS];
    size_t argvlen[MAX_ARGS];
    int argc = count_args(c, req, 0, num, argv, argvlen);
    if (argc < 0) {
        return (enum tc_status)argc;
    }
    struct tc_redis_rop *o = tc_redis_rop_get(c, ROP_COUNT, c->rt->timeout_ms);
    if (o == NULL) {
        return TC_ENOMEM;
    }
    if ((st = tc_redis_send(c, o, W_COUNT, argc, argv, argvlen)) != TC_OK) {
        tc_redis_rop_put(c, o);
        return st == TC_ENOMEM ? st : TC_EUNAVAIL;
    }
    o->creq = req;
    tc_redis_arm(c, o->deadline);
    return TC_EINPROGRESS;
}

enum tc_status tc_redis_count(struct tc_tier_ctx *base, struct tc_tier_count_req *req)
{
    struct redis_ctx *c = (struct redis_ctx *)base;
    enum tc_status st;
    /* Count keys must never start with PREFIX, as lock keys (tier_redis.c). */
    if (memcmp(c->rt->count_prefix, c->rt->prefix, c->rt->prefix_len) == 0) {
        st = TC_ENOTSUP;
    } else {
        if (c->own_base != NULL) {
            tc_redis_blocking_prepare(c);
        }
        st = start_count(c, req);
    }
    st = tc_redis_settle_count(c, req, st);
    req->status = st;
    return st;
}
