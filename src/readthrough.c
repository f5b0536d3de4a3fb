/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/readthrough.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/text.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A key's lock in the key-lock table is "k:" + key: lock names of the
 * /locks API are "n:" + name, so neither can take the other's. Conditional
 * writes lock "c:" + key: they must not wait for a reader's lease. */
#define LOCK_PREFIX_LEN 2u

/* One read or write in progress. Recycled right after its callback ran. */
struct tc_rt_call {
    struct tc_rt_env *env;
    struct tc_stack_op *op; /* the current lookup; a stale value stays in it */
    enum tc_rt_mode mode;
    int is_set;                    /* a write: set (else delete) */
    int parked;                    /* was woken at least once */
    int last_try;                  /* lease mode: the try at the end of the wait was made */
    uint64_t lock_ms;              /* the lease a leader takes */
    uint64_t deadline_ms;          /* waiting ends */
    char token[TC_LOCK_TOKEN_MAX]; /* the lease this call holds (or, writing, presents) */
    tc_rt_accept_fn accept;
    tc_rt_done_fn done;
    tc_rt_write_fn write_done;
    tc_rt_cond_fn cond;      /* a conditional write's test */
    struct tc_stack_op *wop; /* a conditional write's op, while op reads the key */
    void *arg;
    size_t lname_len;
    uint8_t *lname; /* "k:" + key (lname_buf, or allocated) */
    /* Not cleared for each call: set before use. */
    struct tc_rt_call *next_free; /* in env->_free */
    struct tc_keylock_waiter kw;
    uint8_t lname_buf[66];
};

#define MAX_FREE_CALLS 64u

static struct tc_rt_call *call_create(struct tc_rt_env *env, const void *key, size_t key_len)
{
    struct tc_rt_call *c = env->_free;
    if (c != NULL) {
        env->_free = c->next_free;
        env->_nfree--;
    } else if ((c = malloc(sizeof(*c))) == NULL) {
        return NULL;
    }
    memset(c, 0, offsetof(struct tc_rt_call, kw));
    c->env = env;
    size_t n = LOCK_PREFIX_LEN + key_len;
    c->lname = n <= sizeof(c->lname_buf) ? c->lname_buf : malloc(n);
    if (c->lname == NULL) {
        free(c);
        return NULL;
    }
    c->lname[0] = 'k';
    c->lname[1] = ':';
    memcpy(c->lname + LOCK_PREFIX_LEN, key, key_len);
    c->lname_len = n;
    return c;
}

static void call_free(struct tc_rt_call *c)
{
    if (c->op != NULL) {
        tc_stack_op_release(c->op);
    }
    if (c->wop != NULL) {
        tc_stack_op_release(c->wop);
    }
    if (c->lname != c->lname_buf) {
        free(c->lname);
    }
    struct tc_rt_env *env = c->env;
    if (env->_nfree < MAX_FREE_CALLS) {
        c->next_free = env->_free;
        env->_free = c;
        env->_nfree++;
        return;
    }
    free(c);
}

void tc_rt_env_deinit(struct tc_rt_env *env)
{
    while (env->_free != NULL) {
        struct tc_rt_call *c = env->_free;
        env->_free = c->next_free;
        free(c);
    }
    env->_nfree = 0;
}

static void count(const struct tc_rt_call *c, enum tc_keylock_counter s)
{
    tc_keylock_count(c->env->keylock, s);
}

/* Hands res to the caller and ends the call. */
static void finish(struct tc_rt_call *c, struct tc_rt_result *res)
{
    res->key = c->lname + LOCK_PREFIX_LEN;
    res->key_len = c->lname_len - LOCK_PREFIX_LEN;
    if (c->parked && res->value != NULL) {
        count(c, TC_KEYLOCK_waiters_served);
    }
    c->done(c->arg, res);
    call_free(c);
}

static void finish_value(struct tc_rt_call *c, enum tc_rt_outcome outcome)
{
    struct tc_stack_op *op = c->op;
    struct tc_rt_result res = {.outcome = outcome,
                               .value = &op->value,
                               .hdr = &op->hdr,
                               .etag = op->etag,
                               .now_ms = op->now_ms,
                               .tier = op->hit_tier};
    if (outcome == TC_RT_STALE) {
        count(c, TC_KEYLOCK_stale_served);
    }
    finish(c, &res);
}

static void finish_failed(struct tc_rt_call *c, enum tc_status st)
{
    struct tc_rt_result res = {.outcome = TC_RT_FAILED, .status = st};
    finish(c, &res);
}

/* ---- reads --------------------------------------------------------------------------- */

static void get_done(struct tc_stack_op *op);
static void recheck_done(struct tc_stack_op *op);
static void miss_lock_cb(struct tc_keylock_waiter *kw);
static void stale_lock_cb(struct tc_keylock_waiter *kw);
static void lead(struct tc_rt_call *c);

static void start_lock(struct tc_rt_call *c, uint64_t deadline_ms,
                       void (*cb)(struct tc_keylock_waiter *))
{
    c->kw.ttl_ms = c->lock_ms;
    c->kw.deadline_ms = deadline_ms;
    c->kw.cb = cb;
    c->kw.arg = c;
    tc_keylock_acquire(c->env->home, &c->kw, c->lname, c->lname_len);
}

/* Reads the key again through the stack (after a wait, or as a new leader). */
static void reread(struct tc_rt_call *c, tc_stack_cb cb)
{
    struct tc_stack_op *op =
        tc_stack_op_create(c->env->sc, c->op->key, c->op->key_len, tc_clock_ms());
    if (op == NULL) {
        if (c->token[0] != '\0') {
            tc_keylock_release(c->env->home, c->lname, c->lname_len, c->token, NULL, NULL, NULL);
        }
        finish_failed(c, TC_ENOMEM);
        return;
    }
    tc_stack_op_release(c->op);
    c->op = op;
    tc_stack_get(op, cb, c);
}

/* A hit the caller cannot serve is rejected: the stack goes on and calls
 * back. Returns 1 when the hit may be used. */
static int accepted(struct tc_rt_call *c, struct tc_stack_op *op)
{
    if (c->accept == NULL ||
        c->accept(c->arg, op->key, op->key_len, &op->value, &op->hdr, op->now_ms)) {
        return 1;
    }
    tc_log(TC_LOG_NOTICE, "tier l%d returned a value that does not render as %s: a miss",
           op->hit_tier + 1, tc_item_encoding_name(op->hdr.encoding));
    tc_stack_get_reject(op);
    return 0;
}

static int fresh(const struct tc_stack_op *op)
{
    uint64_t until = tc_item_fresh_until(&op->hdr);
    return until == 0 || op->now_ms < until;
}

/* A remembered origin 404: 1 when the hit is one (answered NEGATIVE, or,
 * past its time, turned into a miss). It has no grace: E is its end. */
static int negative(struct tc_rt_call *c, struct tc_stack_op *op)
{
    if (op->status != TC_OK || !(op->hdr.flags & TC_ITEM_F_NEGATIVE)) {
        return 0;
    }
    if (!fresh(op)) {
        op->status = TC_ENOTFOUND;
        return 0;
    }
    if (c->token[0] != '\0') {
        tc_keylock_release(c->env->home, c->lname, c->lname_len, c->token, NULL, NULL, NULL);
    }
    struct tc_rt_result res = {
        .outcome = TC_RT_NEGATIVE, .hdr = &op->hdr, .now_ms = op->now_ms, .tier = op->hit_tier};
    finish(c, &res);
    return 1;
}

static void get_done(struct tc_stack_op *op)
{
    struct tc_rt_call *c = op->arg;
    if (negative(c, op)) {
        return;
    }
    if (op->status == TC_OK) {
        if (!accepted(c, op)) {
            return;
        }
        if (fresh(op)) {
            finish_value(c, TC_RT_HIT);
            return;
        }
        /* Within grace: one reader refreshes it, everyone else gets it stale. */
        start_lock(c, 0, stale_lock_cb);
        return;
    }
    if (op->status != TC_ENOTFOUND) {
        finish_failed(c, op->status);
        return;
    }
    if (c->mode == TC_RT_PLAIN) {
        struct tc_rt_result res = {.outcome = TC_RT_MISS};
        finish(c, &res);
        return;
    }
    start_lock(c, c->deadline_ms, miss_lock_cb);
}

static void stale_lock_cb(struct tc_keylock_waiter *kw)
{
    struct tc_rt_call *c = kw->arg;
    if (kw->outcome == TC_KEYLOCK_ACQUIRED) {
        snprintf(c->token, sizeof(c->token), "%s", kw->token);
        lead(c);
        return;
    }
    tc_keylock_result_unref(kw->result);
    finish_value(c, TC_RT_STALE);
}

struct fill;
static void finish_fill(struct tc_rt_call *c, const struct fill *f, int leader);

static void miss_lock_cb(struct tc_keylock_waiter *kw)
{
    struct tc_rt_call *c = kw->arg;
    struct tc_rt_result res = {0};
    switch (kw->outcome) {
    case TC_KEYLOCK_ACQUIRED:
        /* Someone may have stored the value between our miss and now. */
        snprintf(c->token, sizeof(c->token), "%s", kw->token);
        reread(c, recheck_done);
        return;
    case TC_KEYLOCK_WOKEN:
        c->parked = 1;
        if (kw->result != NULL) {
            /* The leader's answer, whatever it was (even one not cached). */
            struct tc_keylock_result *r = kw->result;
            kw->result = NULL;
            finish_fill(c, (const struct fill *)r, 0);
            tc_keylock_result_unref(r);
            return;
        }
        reread(c, get_done);
        return;
    case TC_KEYLOCK_TIMEOUT:
        if (c->mode == TC_RT_LEASE && !c->last_try) {
            /* The end of our wait is about when the lease we waited on ends:
             * one more try, so that one waiter takes over an abandoned lease. */
            c->last_try = 1;
            start_lock(c, 0, miss_lock_cb);
            return;
        }
        res.outcome = c->mode == TC_RT_LEASE ? TC_RT_LEASE_TIMEOUT : TC_RT_WAIT_TIMEOUT;
        res.status = TC_ETIMEOUT;
        res.lease_ms = c->lock_ms;
        res.remaining_ms = kw->remaining_ms;
        finish(c, &res);
        return;
    default:
        finish_failed(c, kw->status == TC_OK ? TC_EUNAVAIL : kw->status);
        return;
    }
}

/* A new leader: is the value there after all? */
static void recheck_done(struct tc_stack_op *op)
{
    struct tc_rt_call *c = op->arg;
    if (negative(c, op)) {
        return;
    }
    if (op->status == TC_OK) {
        if (!accepted(c, op)) {
            return;
        }
        if (fresh(op)) {
            tc_keylock_release(c->env->home, c->lname, c->lname_len, c->token, NULL, NULL, NULL);
            finish_value(c, TC_RT_HIT);
            return;
        }
    }
    lead(c);
}

/* ---- read-through: one read fetches from the origin, every waiter gets its answer ---- */

/* The leader's answer, shared with the waiters its release wakes. */
struct fill {
    struct tc_keylock_result base; /* first: the keylock hands this to waiters */
    struct tc_rt_env *env;
    struct tc_rt_call *leader; /* the leader's read; NULL: refreshing in the background */
    enum tc_rt_outcome outcome;
    enum tc_status status;
    int origin_status;
    char message[320];
    struct tc_item_hdr hdr;
    struct tc_buf value;
    struct tc_stack_op *op; /* storing it */
    char token[TC_LOCK_TOKEN_MAX];
    size_t lname_len;
    uint8_t lname[LOCK_PREFIX_LEN + TC_KEY_MAX];
};

static void fill_free(struct tc_keylock_result *b)
{
    struct fill *f = (struct fill *)b;
    tc_buf_deinit(&f->value);
    free(f);
}

/* Ends a read with a leader's answer (its own, or a waiter's). */
static void finish_fill(struct tc_rt_call *c, const struct fill *f, int leader)
{
    struct tc_rt_result res = {.outcome = f->outcome,
                               .status = f->status,
                               .origin_status = f->origin_status,
                               .message = f->message[0] ? f->message : NULL};
    if (f->outcome == TC_RT_FILLED) {
        res.value = &f->value;
        res.hdr = &f->hdr;
        res.now_ms = tc_clock_ms();
        res.tier = -1;
        res.coalesced = !leader;
    }
    finish(c, &res);
}

static void fill_finish(struct fill *f)
{
    struct tc_rt_env *env = f->env;
    if (f->leader != NULL) {
        struct tc_rt_call *c = f->leader;
        f->leader = NULL;
        finish_fill(c, f, 1);
    }
    /* The waiters here get f itself; other processes read the stored value
     * (or, if it could not be stored, fetch again, one at a time). */
    tc_keylock_release(env->home, f->lname, f->lname_len, f->token, &f->base, NULL, NULL);
}

static void fill_stored(struct tc_stack_op *op)
{
    struct fill *f = op->arg;
    if (op->status != TC_OK) {
        tc_log(TC_LOG_WARN, "storing an origin answer failed: %s", tc_strerror(op->status));
    }
    tc_stack_op_release(op);
    f->op = NULL;
    fill_finish(f);
}

/* The encoding an origin answer is stored with. */
static uint8_t origin_encoding(const char *ctype, const struct tc_buf *body)
{
    if (tc_text_ctype_is(ctype, "application/json")) {
        json_t *j = json_loadb((const char *)body->data, body->len, JSON_DECODE_ANY, NULL);
        if (j != NULL) {
            json_decref(j);
            return TC_ENC_JSON; /* valid JSON text: spliced back as the same value */
        }
    }
    if ((ctype[0] == '\0' || strncasecmp(ctype, "text/", 5) == 0) &&
        tc_text_utf8_valid((const char *)body->data, body->len)) {
        return TC_ENC_STRING;
    }
    return TC_ENC_BINARY;
}

static void origin_done(struct tc_origin_result *res, void *arg)
{
    struct fill *f = arg;
    struct tc_rt_env *env = f->env;
    const struct tc_rt_options *opt = env->opt;
    uint64_t now = tc_clock_ms();
    if (res->status == TC_OK && res->http_status == 200) {
        tc_origin_result_take_body(res, &f->value);
        f->outcome = TC_RT_FILLED;
        f->hdr.encoding = origin_encoding(res->content_type, &f->value);
        if (f->hdr.encoding == TC_ENC_STRING &&
            tc_text_json_plain((const char *)f->value.data, f->value.len)) {
            f->hdr.flags |= TC_ITEM_F_PLAIN; /* as a PUT decides it: once, here */
        }
        uint64_t ttl = res->has_ttl ? res->ttl_ms : opt->default_ttl_ms;
        if (ttl > opt->max_ttl_ms) {
            ttl = opt->max_ttl_ms;
        }
        tc_rt_set_expiry(opt, &f->hdr, now, ttl);
        if (res->cacheable && f->value.len <= opt->max_value &&
            (f->op = tc_stack_op_create(env->sc, f->lname + LOCK_PREFIX_LEN,
                                        f->lname_len - LOCK_PREFIX_LEN, now)) != NULL) {
            f->op->hdr = f->hdr;
            if (tc_buf_set(&f->op->value, f->value.data, f->value.len) == TC_OK) {
                tc_stack_set(f->op, fill_stored, f);
                return;
            }
            tc_stack_op_release(f->op);
            f->op = NULL;
        }
        fill_finish(f);
        return;
    }
    f->origin_status = res->status == TC_OK ? res->http_status : 0;
    if (res->status == TC_OK && (res->http_status == 404 || res->http_status == 410)) {
        f->outcome = TC_RT_MISS;
        snprintf(f->message, sizeof(f->message), "no value for this key (the origin answered %d)",
                 res->http_status);
        if (opt->negative_ttl_ms > 0 &&
            (f->op = tc_stack_op_create(env->sc, f->lname + LOCK_PREFIX_LEN,
                                        f->lname_len - LOCK_PREFIX_LEN, now)) != NULL) {
            /* Remembered in every tier as an empty record marked negative,
             * so that every process and host sharing a tier answers 404
             * from it until it expires (no grace: E ends it). */
            f->op->hdr = (struct tc_item_hdr){.encoding = TC_ENC_BINARY,
                                              .flags = TC_ITEM_F_NEGATIVE,
                                              .created_ms = now,
                                              .expire_ms = now + opt->negative_ttl_ms};
            tc_stack_set(f->op, fill_stored, f);
            return;
        }
        fill_finish(f);
        return;
    }
    tc_keylock_count(env->keylock, TC_KEYLOCK_origin_errors);
    f->outcome = TC_RT_ORIGIN_FAILED;
    if (res->status == TC_ETIMEOUT) {
        f->status = TC_ETIMEOUT;
        snprintf(f->message, sizeof(f->message), "the origin did not answer within %llu ms",
                 (unsigned long long)opt->origin_timeout_ms);
    } else if (res->status == TC_OK) {
        f->status = TC_EIO;
        snprintf(f->message, sizeof(f->message), "the origin answered %d%s%s", res->http_status,
                 res->error[0] ? ": " : "", res->error);
    } else {
        f->status = res->status == TC_ETOOBIG ? TC_ETOOBIG : TC_EUNAVAIL;
        snprintf(f->message, sizeof(f->message), "origin fetch failed: %s",
                 res->error[0] ? res->error : tc_strerror(res->status));
    }
    fill_finish(f);
}

/* Fetches c's key from the origin as its leader (holding c->token). With a
 * stale value in hand, the reader gets that now and the fetch goes on
 * without it. */
static void fetch_origin(struct tc_rt_call *c, int stale)
{
    struct tc_rt_env *env = c->env;
    struct fill *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        tc_keylock_release(env->home, c->lname, c->lname_len, c->token, NULL, NULL, NULL);
        finish_failed(c, TC_ENOMEM);
        return;
    }
    atomic_init(&f->base.refs, 1);
    f->base.free = fill_free;
    f->env = env;
    memcpy(f->token, c->token, sizeof(f->token));
    memcpy(f->lname, c->lname, c->lname_len);
    f->lname_len = c->lname_len;
    if (stale) {
        finish_value(c, TC_RT_STALE);
    } else {
        f->leader = c;
    }
    tc_keylock_count(env->keylock, TC_KEYLOCK_origin_fetches);
    enum tc_status st = tc_origin_fetch(env->origin, f->lname + LOCK_PREFIX_LEN,
                                        f->lname_len - LOCK_PREFIX_LEN, origin_done, f);
    if (st != TC_OK) {
        struct tc_origin_result res;
        memset(&res, 0, sizeof(res));
        res.status = st;
        snprintf(res.error, sizeof(res.error), "%s", tc_strerror(st));
        origin_done(&res, f);
    }
}

/* This read holds the key's lock (c->token) and the value is missing or
 * stale: fetch it from the origin, or hand the lease to the reader. */
static void lead(struct tc_rt_call *c)
{
    if (c->mode == TC_RT_ORIGIN) {
        fetch_origin(c, c->op->status == TC_OK);
        return;
    }
    count(c, TC_KEYLOCK_leases_granted);
    struct tc_rt_result res = {
        .outcome = TC_RT_LEASE_GRANTED, .token = c->token, .lease_ms = c->lock_ms};
    finish(c, &res);
}

enum tc_status tc_rt_get(struct tc_rt_env *env, const void *key, size_t key_len,
                         enum tc_rt_mode mode, uint64_t lease_ms, uint64_t now,
                         tc_rt_accept_fn accept, tc_rt_done_fn done, void *arg)
{
    struct tc_rt_call *c = call_create(env, key, key_len);
    if (c == NULL || (c->op = tc_stack_op_create(env->sc, key, key_len, now)) == NULL) {
        if (c != NULL) {
            call_free(c);
        }
        return TC_ENOMEM;
    }
    c->mode = mode == TC_RT_ORIGIN && env->origin == NULL ? TC_RT_PLAIN : mode;
    c->lock_ms = lease_ms;
    c->deadline_ms = now + lease_ms;
    c->accept = accept;
    c->done = done;
    c->arg = arg;
    tc_stack_get(c->op, get_done, c);
    return TC_OK;
}

/* ---- writes ------------------------------------------------------------------------------ */

static void write_finish(struct tc_rt_call *c, struct tc_rt_write_result *res)
{
    c->write_done(c->arg, res);
    call_free(c);
}

static void put_release_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct tc_rt_call *c = arg;
    (void)remaining;
    (void)token;
    if (st == TC_OK) {
        count(c, TC_KEYLOCK_leases_fulfilled);
    }
    struct tc_rt_write_result res = {.outcome = TC_RT_STORED,
                                     .lease =
                                         st == TC_OK ? TC_RT_LEASE_RELEASED : TC_RT_LEASE_EXPIRED,
                                     .value_len = c->op->value.len};
    write_finish(c, &res);
}

static void write_done(struct tc_stack_op *op)
{
    struct tc_rt_call *c = op->arg;
    struct tc_rt_env *env = c->env;
    int is_set = c->is_set;
    if (is_set && c->token[0] != '\0') {
        /* A leaseholder's write: release the lease so that waiters read the
         * value (or, if storing failed, one of them takes the lease over). */
        if (op->status == TC_OK) {
            tc_keylock_release(env->home, c->lname, c->lname_len, c->token, NULL, put_release_done,
                               c);
            return;
        }
        tc_keylock_release(env->home, c->lname, c->lname_len, c->token, NULL, NULL, NULL);
    } else if (is_set && op->status == TC_OK) {
        tc_keylock_poke(env->home, c->lname, c->lname_len); /* waiters may have it now */
    }
    struct tc_rt_write_result res = {.outcome = op->status == TC_OK ? TC_RT_STORED : TC_RT_REFUSED,
                                     .status = op->status,
                                     .failed_mask = op->failed_mask,
                                     .value_len = op->value.len};
    write_finish(c, &res);
}

static void put_check_done(void *arg, enum tc_status st, uint64_t remaining, const char *token)
{
    struct tc_rt_call *c = arg;
    (void)remaining;
    if (st == TC_OK && strcmp(token, c->token) == 0) {
        tc_stack_set(c->op, write_done, c);
        return;
    }
    struct tc_rt_write_result res = {.outcome = TC_RT_NOT_OWNER, .status = st};
    if (st != TC_OK && st != TC_ENOTFOUND) {
        res.outcome = TC_RT_REFUSED; /* the lock tier failed: whether we own it is unknown */
    }
    write_finish(c, &res);
}

/* Takes op over; is_set tells a set from a delete. */
static enum tc_status start_write(struct tc_rt_env *env, struct tc_stack_op *op, const char *token,
                                  int is_set, tc_rt_write_fn done, void *arg)
{
    struct tc_rt_call *c = call_create(env, op->key, op->key_len);
    if (c == NULL) {
        tc_stack_op_release(op);
        return TC_ENOMEM;
    }
    c->op = op;
    c->is_set = is_set;
    c->write_done = done;
    c->arg = arg;
    if (!is_set) {
        tc_stack_del(op, write_done, c);
        return TC_OK;
    }
    if (token != NULL) {
        snprintf(c->token, sizeof(c->token), "%s", token);
        tc_keylock_peek(env->home, c->lname, c->lname_len, put_check_done, c);
        return TC_OK;
    }
    tc_stack_set(op, write_done, c);
    return TC_OK;
}

enum tc_status tc_rt_set(struct tc_rt_env *env, struct tc_stack_op *op, const char *token,
                         tc_rt_write_fn done, void *arg)
{
    return start_write(env, op, token, 1, done, arg);
}

enum tc_status tc_rt_del(struct tc_rt_env *env, struct tc_stack_op *op, tc_rt_write_fn done,
                         void *arg)
{
    return start_write(env, op, NULL, 0, done, arg);
}

/* ---- conditional writes: lock, read, test, write, release ------------------------------ */

static void cond_lock_cb(struct tc_keylock_waiter *kw);

static void cond_finish(struct tc_rt_call *c, enum tc_rt_write_outcome outcome, enum tc_status st,
                        unsigned failed_mask)
{
    if (c->token[0] != '\0') {
        tc_keylock_release(c->env->home, c->lname, c->lname_len, c->token, NULL, NULL, NULL);
        c->token[0] = '\0';
    }
    struct tc_rt_write_result res = {.outcome = outcome,
                                     .status = st,
                                     .failed_mask = failed_mask,
                                     .value_len = c->wop ? c->wop->value.len : 0};
    write_finish(c, &res);
}

static void cond_written(struct tc_stack_op *op)
{
    struct tc_rt_call *c = op->arg;
    if (op->status == TC_OK && c->is_set) {
        /* Readers parked on the key's lease may have their value now. */
        uint8_t k = c->lname[0];
        c->lname[0] = 'k';
        tc_keylock_poke(c->env->home, c->lname, c->lname_len);
        c->lname[0] = k;
    }
    cond_finish(c, op->status == TC_OK ? TC_RT_STORED : TC_RT_REFUSED, op->status, op->failed_mask);
}

static void cond_read(struct tc_stack_op *op)
{
    struct tc_rt_call *c = op->arg;
    if (op->status != TC_OK && op->status != TC_ENOTFOUND) {
        cond_finish(c, TC_RT_REFUSED, op->status, 0);
        return;
    }
    /* What a GET would serve is what the condition is about: a value in
     * its grace counts, a remembered origin 404 does not. */
    int exists = op->status == TC_OK && !(op->hdr.flags & TC_ITEM_F_NEGATIVE);
    if (!c->cond(c->arg, exists ? &op->hdr : NULL, exists ? &op->value : NULL)) {
        cond_finish(c, TC_RT_PRECONDITION, TC_OK, 0);
        return;
    }
    struct tc_stack_op *w = c->wop;
    w->now_ms = tc_clock_ms();
    if (c->is_set) {
        tc_stack_set(w, cond_written, c);
    } else {
        tc_stack_del(w, cond_written, c);
    }
}

static void cond_lock_cb(struct tc_keylock_waiter *kw)
{
    struct tc_rt_call *c = kw->arg;
    switch (kw->outcome) {
    case TC_KEYLOCK_ACQUIRED:
        snprintf(c->token, sizeof(c->token), "%s", kw->token);
        c->op = tc_stack_op_create(c->env->sc, c->wop->key, c->wop->key_len, tc_clock_ms());
        if (c->op == NULL) {
            cond_finish(c, TC_RT_REFUSED, TC_ENOMEM, 0);
            return;
        }
        tc_stack_get_widest(c->op, cond_read, c);
        return;
    case TC_KEYLOCK_WOKEN:
        /* The holder is done: try again, one of the waiters gets it. */
        tc_keylock_result_unref(kw->result);
        kw->result = NULL;
        start_lock(c, c->deadline_ms, cond_lock_cb);
        return;
    case TC_KEYLOCK_TIMEOUT:
        cond_finish(c, TC_RT_BUSY, TC_ETIMEOUT, 0);
        return;
    default:
        cond_finish(c, TC_RT_REFUSED, kw->status == TC_OK ? TC_EUNAVAIL : kw->status, 0);
        return;
    }
}

enum tc_status tc_rt_write_if(struct tc_rt_env *env, struct tc_stack_op *op, int is_set,
                              tc_rt_cond_fn cond, tc_rt_write_fn done, void *arg)
{
    struct tc_rt_call *c = call_create(env, op->key, op->key_len);
    if (c == NULL) {
        tc_stack_op_release(op);
        return TC_ENOMEM;
    }
    c->lname[0] = 'c';
    c->wop = op;
    c->is_set = is_set;
    c->cond = cond;
    c->write_done = done;
    c->arg = arg;
    c->lock_ms = TC_RT_COND_LEASE_MS;
    c->deadline_ms = tc_clock_ms() + TC_RT_COND_WAIT_MS;
    start_lock(c, c->deadline_ms, cond_lock_cb);
    return TC_OK;
}

void tc_rt_set_expiry(const struct tc_rt_options *opt, struct tc_item_hdr *hdr, uint64_t now_ms,
                      uint64_t ttl_ms)
{
    hdr->created_ms = now_ms;
    hdr->expire_ms = ttl_ms == 0 ? 0 : now_ms + ttl_ms;
    if (ttl_ms != 0 && opt->grace_ms > 0) {
        /* Every tier keeps it through the grace; readers see it fresh until
         * the TTL and stale after. */
        hdr->flags |= TC_ITEM_F_GRACE;
        hdr->grace_s = (uint16_t)((opt->grace_ms + 999) / 1000);
        hdr->expire_ms += (uint64_t)hdr->grace_s * 1000;
    }
}
