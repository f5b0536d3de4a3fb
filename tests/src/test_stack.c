/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of the stack (src/stack.h): read-through with back-fill by the
 * TTL-ratio rule, write-through, delete everywhere, the TC_ETOOBIG cleanup,
 * tiers that are down, copies that fail verification or that the caller
 * rejects.
 *
 * The tiers are in-process: mem:// (each with its own ttl_ratio, max_ttl,
 * max_item), and "tst://", a mem:// backend registered under another scheme
 * whose health and get the test controls (down, TC_ECORRUPT for one key) and
 * whose gets, sets and deletes are counted. Every ctx is made with a NULL
 * event_base, so every operation completes inside the call; time is the
 * op's now_ms, so local expiries are checked to the millisecond.
 */
#include "src/stack.h"
#include "tiers/tier_impl.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define T0  1000000000ull /* the injected clock's start, ms */
#define SEC 1000ull

/* ---- tst://: mem:// with a remote control ------------------------------------ */

struct tst_ctl {
    struct tc_tier *tier;
    int down;
    char corrupt_key[64]; /* get of this key answers TC_ECORRUPT ("" = none) */
    unsigned gets, sets, dels;
    /* tstr:// only: the stack's invalidation callback, for the test to call
     * as the tier's subscriber thread would when another host writes. */
    tc_tier_invalidate_fn inval_fn;
    void *inval_arg;
};

static struct tst_ctl ctl[TC_STACK_MAX_TIERS];
static struct tc_tier_ops tst_ops, tstr_ops;
/* Names only: tst_open reads "id" itself and hands the rest to mem://'s open,
 * which loads its own rows. */
static const struct tc_tier_param tst_params[] = {
    {"size", TC_TIER_PARAM_TEXT, 0, NULL, 0, 0, 0, NULL, "as mem://", NULL},
    {"max_item", TC_TIER_PARAM_TEXT, 0, NULL, 0, 0, 0, NULL, "as mem://", NULL},
    {"id", TC_TIER_PARAM_TEXT, 0, NULL, 0, 0, 0, NULL, "this test's handle on the tier", NULL},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

static struct tst_ctl *ctl_of(const struct tc_tier *t)
{
    for (size_t i = 0; i < TC_STACK_MAX_TIERS; i++) {
        if (ctl[i].tier == t) {
            return &ctl[i];
        }
    }
    cr_assert_fail("a tst:// tier that was not opened through tst_open");
    return NULL;
}

static enum tc_status tst_open(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                               size_t errlen)
{
    uint64_t id;
    enum tc_status st =
        tc_tier_params_uint(p, "id", 10, 0, 0, TC_STACK_MAX_TIERS - 1, &id, err, errlen);
    if (st == TC_OK) {
        st = tc_tier_mem_ops.open(p, out, err, errlen);
    }
    if (st == TC_OK) {
        memset(&ctl[id], 0, sizeof(ctl[id]));
        ctl[id].tier = *out;
    }
    return st;
}

static enum tc_status tst_get(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct tst_ctl *k = ctl_of(c->tier);
    k->gets++;
    size_t n = strlen(k->corrupt_key);
    if (n > 0 && n == req->key_len && memcmp(req->key, k->corrupt_key, n) == 0) {
        req->status = TC_ECORRUPT;
        return TC_ECORRUPT;
    }
    return tc_tier_mem_ops.get(c, req);
}

static enum tc_status tst_set(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    ctl_of(c->tier)->sets++;
    return tc_tier_mem_ops.set(c, req);
}

static enum tc_status tst_del(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    ctl_of(c->tier)->dels++;
    return tc_tier_mem_ops.del(c, req);
}

static enum tc_status tst_on_invalidate(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg)
{
    struct tst_ctl *k = ctl_of(t);
    k->inval_fn = fn;
    k->inval_arg = arg;
    return TC_OK;
}

static enum tc_tier_health tst_health(struct tc_tier *t, char *detail, size_t len)
{
    if (ctl_of(t)->down) {
        snprintf(detail, len, "switched off by the test");
        return TC_HEALTH_DOWN;
    }
    if (len > 0) {
        detail[0] = '\0';
    }
    return TC_HEALTH_OK;
}

/* ---- fixture ------------------------------------------------------------------ */

static struct tc_stack *stack;
static struct tc_stack_ctx *sc;

/* Opens a stack of the URIs given (NULL-terminated), fastest first. */
static void open_stack(const char *uri, ...)
{
    struct tc_tier_registry *reg = tc_tier_registry_create();
    cr_assert_not_null(reg);
    tst_ops = tc_tier_mem_ops;
    tst_ops.scheme = "tst";
    tst_ops.params = tst_params;
    tst_ops.open = tst_open;
    tst_ops.get = tst_get;
    tst_ops.get_many = NULL;
    tst_ops.set = tst_set;
    tst_ops.del = tst_del;
    tst_ops.health = tst_health;
    cr_assert_eq(tc_tier_register(reg, &tst_ops), TC_OK);
    /* tstr://: the same, claiming to be a remote tier shared with other
     * hosts, whose writes it reports (tc_tier_on_invalidate). */
    tstr_ops = tst_ops;
    tstr_ops.scheme = "tstr";
    tstr_ops.caps = TC_TIER_CAP_REMOTE;
    tstr_ops.on_invalidate = tst_on_invalidate;
    cr_assert_eq(tc_tier_register(reg, &tstr_ops), TC_OK);

    struct tc_tier *tiers[TC_STACK_MAX_TIERS];
    size_t n = 0;
    va_list ap;
    va_start(ap, uri);
    for (const char *u = uri; u != NULL; u = va_arg(ap, const char *)) {
        char err[256];
        cr_assert_eq(tc_tier_open(reg, u, &tiers[n], err, sizeof(err)), TC_OK, "%s: %s", u, err);
        n++;
    }
    va_end(ap);
    tc_tier_registry_destroy(reg);
    stack = tc_stack_create(tiers, n);
    cr_assert_not_null(stack);
    char detail[256];
    cr_assert_eq(tc_stack_check_health(stack, detail, sizeof(detail)), TC_HEALTH_OK, "%s", detail);
    cr_assert_eq(tc_stack_ctx_init(stack, NULL, &sc), TC_OK);
}

static void close_stack(void)
{
    tc_stack_ctx_dispose(sc);
    tc_stack_destroy(stack);
    sc = NULL;
    stack = NULL;
}

/* What a callback saw. */
struct seen {
    int calls;
    unsigned reject_mask; /* get: reject a hit in these tiers (tc_stack_get_reject) */
    enum tc_status status;
    int hit_tier;
    uint64_t local_expire_ms;
    unsigned stored_mask, failed_mask;
    struct tc_item_hdr hdr;
    char value[4096];
    size_t value_len;
    int tiers_seen[8]; /* get: hit_tier of each call, in order */
};

static void on_done(struct tc_stack_op *op)
{
    struct seen *s = op->arg;
    if (s->calls < 8) {
        s->tiers_seen[s->calls] = op->hit_tier;
    }
    s->calls++;
    s->status = op->status;
    s->hit_tier = op->hit_tier;
    s->local_expire_ms = op->local_expire_ms;
    s->stored_mask = op->stored_mask;
    s->failed_mask = op->failed_mask;
    s->hdr = op->hdr;
    s->value_len = op->value.len;
    if (op->value.len > 0 && op->value.len <= sizeof(s->value)) {
        memcpy(s->value, op->value.data, op->value.len);
    }
    if (op->status == TC_OK && op->hit_tier >= 0 && (s->reject_mask & (1u << op->hit_tier))) {
        tc_stack_get_reject(op); /* the op stays the stack's: the lookup goes on */
        return;
    }
    tc_stack_op_release(op);
}

static struct seen sget(const char *key, uint64_t now, unsigned reject_mask)
{
    struct seen s = {.reject_mask = reject_mask};
    struct tc_stack_op *op = tc_stack_op_create(sc, key, strlen(key), now);
    cr_assert_not_null(op);
    tc_stack_get(op, on_done, &s);
    return s;
}

static struct seen sset(const char *key, const void *value, size_t len, uint64_t now, uint64_t e)
{
    struct seen s = {0};
    struct tc_stack_op *op = tc_stack_op_create(sc, key, strlen(key), now);
    cr_assert_not_null(op);
    cr_assert_eq(tc_buf_set(&op->value, value, len), TC_OK);
    op->hdr.created_ms = now;
    op->hdr.expire_ms = e;
    tc_stack_set(op, on_done, &s);
    cr_assert_eq(s.calls, 1, "the set callback ran %d times", s.calls);
    return s;
}

static struct seen sdel(const char *key, uint64_t now)
{
    struct seen s = {0};
    struct tc_stack_op *op = tc_stack_op_create(sc, key, strlen(key), now);
    cr_assert_not_null(op);
    tc_stack_del(op, on_done, &s);
    cr_assert_eq(s.calls, 1, "the delete callback ran %d times", s.calls);
    return s;
}

/* Reads tier i directly (not through the stack): status, local expiry, value. */
static enum tc_status tier_get(size_t i, const char *key, uint64_t now, uint64_t *local,
                               struct tc_buf *out)
{
    struct tc_tier_req r = {.key = key, .key_len = strlen(key), .now_ms = now, .out = out};
    enum tc_status st = tc_tier_get(tc_stack_ctx_tier(sc, i), &r);
    if (local != NULL) {
        *local = r.local_expire_ms;
    }
    return st;
}

/* Writes tier i directly with authoritative expiry e. */
static void tier_set(size_t i, const char *key, const char *value, uint64_t now, uint64_t e)
{
    struct tc_tier_req r = {.key = key,
                            .key_len = strlen(key),
                            .now_ms = now,
                            .value = value,
                            .value_len = strlen(value),
                            .hdr = {.created_ms = now, .expire_ms = e}};
    cr_assert_eq(tc_tier_set(tc_stack_ctx_tier(sc, i), &r), TC_OK);
}

/* Expects tier i to hold key with value and local expiry exactly local. */
static void expect_tier(size_t i, const char *key, const char *value, uint64_t now, uint64_t local)
{
    struct tc_buf out = TC_BUF_INIT;
    uint64_t got = 0;
    enum tc_status st = tier_get(i, key, now, &got, &out);
    cr_assert_eq(st, TC_OK, "l%zu: %s", i + 1, tc_strerror(st));
    cr_expect_eq(out.len, strlen(value), "l%zu: value length %zu", i + 1, out.len);
    cr_expect(out.len == strlen(value) && memcmp(out.data, value, out.len) == 0,
              "l%zu: another value", i + 1);
    cr_expect_eq(got, local, "l%zu: local expiry now+%lld ms, expected now+%lld ms", i + 1,
                 (long long)(got - now), (long long)(local - now));
    tc_buf_deinit(&out);
}

static void expect_absent(size_t i, const char *key, uint64_t now)
{
    struct tc_buf out = TC_BUF_INIT;
    enum tc_status st = tier_get(i, key, now, NULL, &out);
    cr_expect_eq(st, TC_ENOTFOUND, "l%zu still answers %s", i + 1, tc_strerror(st));
    tc_buf_deinit(&out);
}

struct stat_find {
    const char *name;
    uint64_t value;
};

static void stat_cb(void *arg, const char *name, uint64_t value, enum tc_stat_kind kind)
{
    struct stat_find *f = arg;
    (void)kind;
    if (strcmp(name, f->name) == 0) {
        f->value = value;
    }
}

static uint64_t tier_stat(size_t i, const char *name)
{
    struct stat_find f = {name, UINT64_MAX};
    tc_tier_stats(tc_stack_tier(stack, i), stat_cb, &f);
    cr_assert_neq(f.value, UINT64_MAX, "no stat %s", name);
    return f.value;
}

/* L1 ratio 0.25 capped at 15 s, L2 ratio 0.75, L3 ratio 1 (ratios exact in binary). */
#define L1_RATIO "ttl_ratio=0.25&max_ttl=15s"
#define L2_RATIO "ttl_ratio=0.75"

/* ---- TTL ratios ---------------------------------------------------------------- */

Test(stack, write_through_sets_every_tier_with_its_local_expiry)
{
    open_stack("mem://?size=1M&" L1_RATIO, "mem://?size=1M&" L2_RATIO, "mem://?size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    struct seen s = sset("k", "v1", 2, T0, e);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.stored_mask, 7u);
    cr_expect_eq(s.failed_mask, 0u);
    expect_tier(0, "k", "v1", T0, T0 + 15 * SEC); /* min(100 s * 0.25, 15 s): the cap */
    expect_tier(1, "k", "v1", T0, T0 + 75 * SEC); /* 100 s * 0.75 */
    expect_tier(2, "k", "v1", T0, e);             /* the whole TTL: E */

    /* A get answers from L1 with L1's own expiry and the authoritative E. */
    s = sget("k", T0 + SEC, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.hit_tier, 0);
    cr_expect_eq(s.local_expire_ms, T0 + 15 * SEC);
    cr_expect_eq(s.hdr.expire_ms, e);
    cr_expect(s.value_len == 2 && memcmp(s.value, "v1", 2) == 0);
    close_stack();
}

Test(stack, hit_in_l3_backfills_l1_and_l2_with_the_remaining_time)
{
    open_stack("mem://?size=1M&" L1_RATIO, "mem://?size=1M&" L2_RATIO, "mem://?size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(2, "k", "deep", T0, e);

    uint64_t now = T0 + 60 * SEC; /* 40 s left */
    struct seen s = sget("k", now, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.hit_tier, 2);
    cr_expect_eq(s.hdr.expire_ms, e);
    cr_expect_eq(s.local_expire_ms, e);
    expect_tier(0, "k", "deep", now, now + 10 * SEC); /* 40 s * 0.25, under the cap */
    expect_tier(1, "k", "deep", now, now + 30 * SEC); /* 40 s * 0.75 */
    expect_tier(2, "k", "deep", now, e);              /* untouched */
    close_stack();
}

Test(stack, backfill_from_l2_uses_e_not_l2s_own_expiry)
{
    open_stack("mem://?size=1M&" L1_RATIO, "mem://?size=1M&" L2_RATIO, "mem://?size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(1, "k", "mid", T0, e); /* L2's local expiry: T0 + 75 s */

    uint64_t now = T0 + 50 * SEC; /* 50 s left of E, 25 s of L2's copy */
    struct seen s = sget("k", now, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.hit_tier, 1);
    cr_expect_eq(s.local_expire_ms, T0 + 75 * SEC);
    /* 50 s * 0.25 = 12.5 s; from L2's 25 s it would be 6.25 s. */
    expect_tier(0, "k", "mid", now, now + 12500);
    close_stack();
}

Test(stack, nothing_outlives_e)
{
    open_stack("mem://?size=1M&" L1_RATIO, "mem://?size=1M&" L2_RATIO, "mem://?size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(2, "k", "v", T0, e);

    /* Repeated back-fills, each from the tier below, never pass E. */
    uint64_t times[] = {T0 + 50 * SEC, T0 + 80 * SEC, T0 + 95 * SEC, e - 3, e - 1};
    for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
        uint64_t now = times[t];
        sdel("other", now); /* unrelated traffic in between */
        struct seen s = sget("k", now, 0);
        cr_assert_eq(s.calls, 1);
        cr_assert_eq(s.status, TC_OK, "at E-%llu ms: %s", (unsigned long long)(e - now),
                     tc_strerror(s.status));
        cr_expect_eq(s.hdr.expire_ms, e);
        for (size_t i = 0; i < 3; i++) {
            struct tc_buf out = TC_BUF_INIT;
            uint64_t local = 0;
            if (tier_get(i, "k", now, &local, &out) == TC_OK) {
                cr_expect(local > now && local <= e, "l%zu: local expiry E%+lld ms at E-%llu ms",
                          i + 1, (long long)(local - e), (unsigned long long)(e - now));
            }
            tc_buf_deinit(&out);
        }
    }
    /* At E, no tier answers, whatever it holds. */
    struct seen s = sget("k", e, 0);
    cr_expect_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_ENOTFOUND);
    cr_expect_eq(s.hit_tier, -1);
    /* A write whose E has passed stores nothing and removes the older value. */
    sset("k2", "x", 1, T0, e);
    s = sset("k2", "y", 1, e + 1, e);
    for (size_t i = 0; i < 3; i++) {
        expect_absent(i, "k2", T0);
    }
    close_stack();
}

Test(stack, no_expiry_stays_without_expiry_unless_a_tier_caps_it)
{
    open_stack("mem://?size=1M&" L1_RATIO, "mem://?size=1M&" L2_RATIO, NULL);
    sset("k", "forever", 7, T0, 0);
    expect_tier(0, "k", "forever", T0, T0 + 15 * SEC); /* only max_ttl bounds it */
    expect_tier(1, "k", "forever", T0, 0);
    close_stack();
}

/* ---- TC_ETOOBIG ------------------------------------------------------------------ */

Test(stack, value_too_big_for_l1_goes_below_and_removes_the_older_l1_copy)
{
    open_stack("tst://?id=0&size=1M&max_item=1K", "tst://?id=1&size=1M", "tst://?id=2&size=1M",
               NULL);
    uint64_t e = T0 + 100 * SEC;
    struct seen s = sset("k", "old", 3, T0, e);
    cr_assert_eq(s.stored_mask, 7u);
    expect_tier(0, "k", "old", T0, e);

    static char big[2048];
    memset(big, 'B', sizeof(big));
    s = sset("k", big, sizeof(big), T0 + SEC, e);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.stored_mask, 6u);
    cr_expect_eq(s.failed_mask, 0u, "a refusal for size is not a failure");
    cr_expect_eq(ctl[0].dels, 1u, "the cleanup delete in l1");
    expect_absent(0, "k", T0 + SEC);
    cr_expect_eq(tier_stat(0, "too_big"), 1u);

    /* Read back from L2; the back-fill skips the L1 that cannot hold it. */
    unsigned sets0 = ctl[0].sets;
    s = sget("k", T0 + 2 * SEC, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.hit_tier, 1);
    cr_expect_eq(s.value_len, sizeof(big));
    cr_expect_eq(ctl[0].sets, sets0, "a back-fill too big for l1 reached it");
    expect_absent(0, "k", T0 + 2 * SEC);
    close_stack();
}

Test(stack, value_too_big_everywhere_is_etoobig_and_leaves_no_older_copy)
{
    open_stack("mem://?size=1M&max_item=1K", "mem://?size=1M&max_item=1K", NULL);
    uint64_t e = T0 + 100 * SEC;
    sset("k", "old", 3, T0, e);
    static char big[2048];
    memset(big, 'B', sizeof(big));
    struct seen s = sset("k", big, sizeof(big), T0 + SEC, e);
    cr_expect_eq(s.status, TC_ETOOBIG);
    cr_expect_eq(s.stored_mask, 0u);
    expect_absent(0, "k", T0 + SEC);
    expect_absent(1, "k", T0 + SEC);
    close_stack();
}

/* ---- tiers that are down ---------------------------------------------------------- */

Test(stack, a_tier_marked_down_is_skipped_until_it_is_back)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", "tst://?id=2&size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    sset("k", "v", 1, T0, e);

    ctl[0].down = 1;
    cr_expect_eq(tc_stack_tier_down(stack, 0), 0, "down before the health check saw it");
    char detail[256];
    cr_expect_eq(tc_stack_check_health(stack, detail, sizeof(detail)), TC_HEALTH_DEGRADED);
    cr_expect(strstr(detail, "l1 down") != NULL, "detail: %s", detail);
    cr_expect_eq(tc_stack_tier_down(stack, 0), 1);
    cr_expect_eq(tc_stack_tier_down(stack, 1), 0);

    unsigned g0 = ctl[0].gets, s0 = ctl[0].sets, d0 = ctl[0].dels;
    struct seen s = sget("k", T0 + SEC, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.hit_tier, 1);
    s = sset("k2", "w", 1, T0 + SEC, e);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.stored_mask, 6u);
    cr_expect_eq(s.failed_mask, 1u, "a down tier counts as failed for a write");
    s = sdel("k", T0 + SEC);
    cr_expect_eq(s.status, TC_EUNAVAIL, "a delete that missed a tier is not OK");
    cr_expect_eq(s.failed_mask, 1u);
    cr_expect_eq(ctl[0].gets, g0, "l1 was asked while down");
    cr_expect_eq(ctl[0].sets, s0);
    cr_expect_eq(ctl[0].dels, d0);

    /* Back up: asked again. */
    ctl[0].down = 0;
    cr_expect_eq(tc_stack_check_health(stack, detail, sizeof(detail)), TC_HEALTH_OK);
    sset("k3", "z", 1, T0 + 2 * SEC, e);
    s = sget("k3", T0 + 2 * SEC, 0);
    cr_expect_eq(s.hit_tier, 0);
    cr_expect_eq(ctl[0].gets, g0 + 1);
    close_stack();
}

Test(stack, every_tier_down_is_a_miss_that_asks_none)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", NULL);
    sset("k", "v", 1, T0, 0);
    ctl[0].down = ctl[1].down = 1;
    char detail[256];
    cr_expect_eq(tc_stack_check_health(stack, detail, sizeof(detail)), TC_HEALTH_DOWN);
    struct seen s = sget("k", T0, 0);
    cr_expect_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_ENOTFOUND);
    cr_expect_eq(ctl[0].gets + ctl[1].gets, 0u);
    s = sset("k", "w", 1, T0, 0);
    cr_expect_eq(s.status, TC_EUNAVAIL);
    cr_expect_eq(s.failed_mask, 3u);
    close_stack();
}

Test(stack, a_down_tier_between_two_is_skipped_on_the_way_down_and_on_backfill)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", "tst://?id=2&size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(2, "k", "deep", T0, e);
    ctl[1].down = 1;
    tc_stack_check_health(stack, NULL, 0);
    struct seen s = sget("k", T0 + SEC, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.hit_tier, 2);
    cr_expect_eq(ctl[1].gets + ctl[1].sets, 0u);
    expect_tier(0, "k", "deep", T0 + SEC, e);
    close_stack();
}

/* ---- corrupt and rejected copies ------------------------------------------------------ */

Test(stack, a_corrupt_l1_copy_is_answered_from_l2_and_overwritten)
{
    open_stack("tst://?id=0&size=1M&" L1_RATIO, "tst://?id=1&size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(0, "k", "damaged", T0, e);
    tier_set(1, "k", "good", T0, e);
    snprintf(ctl[0].corrupt_key, sizeof(ctl[0].corrupt_key), "k");

    uint64_t now = T0 + 60 * SEC;
    struct seen s = sget("k", now, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.hit_tier, 1);
    cr_expect(s.value_len == 4 && memcmp(s.value, "good", 4) == 0);
    cr_expect_eq(tier_stat(0, "corrupt"), 1u);
    /* The back-fill replaced the bad copy (with the remaining time). */
    ctl[0].corrupt_key[0] = '\0';
    expect_tier(0, "k", "good", now, now + 10 * SEC);
    close_stack();
}

Test(stack, corrupt_copies_are_deleted_on_a_miss_everywhere)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", "tst://?id=2&size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(0, "k", "bad0", T0, e);
    tier_set(1, "k", "bad1", T0, e);
    snprintf(ctl[0].corrupt_key, sizeof(ctl[0].corrupt_key), "k");
    snprintf(ctl[1].corrupt_key, sizeof(ctl[1].corrupt_key), "k");

    struct seen s = sget("k", T0 + SEC, 0);
    cr_assert_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_ENOTFOUND);
    cr_expect_eq(s.hit_tier, -1);
    cr_expect_eq(s.value_len, 0u);
    cr_expect_eq(ctl[0].dels, 1u);
    cr_expect_eq(ctl[1].dels, 1u);
    cr_expect_eq(ctl[2].dels, 0u, "a tier that only missed was scrubbed");
    ctl[0].corrupt_key[0] = ctl[1].corrupt_key[0] = '\0';
    expect_absent(0, "k", T0 + SEC);
    expect_absent(1, "k", T0 + SEC);
    close_stack();
}

Test(stack, a_corrupt_copy_with_no_room_above_the_hit_is_deleted)
{
    /* L1 takes at most 1 KiB: the good 2 KiB copy from L2 cannot replace
     * the bad one, so it is deleted instead. */
    open_stack("tst://?id=0&size=1M&max_item=1K", "tst://?id=1&size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    static char big[2048];
    memset(big, 'B', sizeof(big) - 1);
    tier_set(0, "k", "bad", T0, e);
    tier_set(1, "k", big, T0, e);
    snprintf(ctl[0].corrupt_key, sizeof(ctl[0].corrupt_key), "k");
    struct seen s = sget("k", T0 + SEC, 0);
    cr_expect_eq(s.hit_tier, 1);
    cr_expect_eq(ctl[0].dels, 1u);
    ctl[0].corrupt_key[0] = '\0';
    expect_absent(0, "k", T0 + SEC);
    close_stack();
}

Test(stack, a_rejected_hit_goes_on_to_the_next_tier_and_counts_corrupt)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", NULL);
    uint64_t e = T0 + 100 * SEC;
    tier_set(0, "k", "unusable", T0, e);
    tier_set(1, "k", "fine", T0, e);

    struct seen s = sget("k", T0 + SEC, 1u /* reject what l1 answers */);
    cr_assert_eq(s.calls, 2, "one callback per answer: the rejected hit, then l2's");
    cr_expect_eq(s.tiers_seen[0], 0);
    cr_expect_eq(s.tiers_seen[1], 1);
    cr_expect_eq(s.status, TC_OK);
    cr_expect(s.value_len == 4 && memcmp(s.value, "fine", 4) == 0);
    cr_expect_eq(tier_stat(0, "corrupt"), 1u);
    cr_expect_eq(tier_stat(1, "corrupt"), 0u);
    expect_tier(0, "k", "fine", T0 + SEC, e); /* overwritten by the back-fill */
    close_stack();
}

Test(stack, a_rejected_hit_in_the_last_tier_is_a_miss_and_is_deleted)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", NULL);
    tier_set(1, "k", "unusable", T0, 0);
    struct seen s = sget("k", T0, 2u);
    cr_assert_eq(s.calls, 2);
    cr_expect_eq(s.tiers_seen[0], 1);
    cr_expect_eq(s.status, TC_ENOTFOUND);
    cr_expect_eq(s.hit_tier, -1);
    cr_expect_eq(tier_stat(1, "corrupt"), 1u);
    cr_expect_eq(ctl[1].dels, 1u);
    cr_expect_eq(ctl[0].sets, 0u, "a rejected value was back-filled");
    expect_absent(1, "k", T0);
    close_stack();
}

/* ---- delete, miss, callbacks ---------------------------------------------------------------- */

Test(stack, delete_reaches_every_tier)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", "tst://?id=2&size=1M", NULL);
    sset("k", "v", 1, T0, 0);
    struct seen s = sdel("k", T0 + 1);
    cr_expect_eq(s.status, TC_OK);
    cr_expect_eq(s.failed_mask, 0u);
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(ctl[i].dels, 1u, "l%zu", i + 1);
        expect_absent(i, "k", T0 + 1);
    }
    /* Deleting what is not there is fine too (idempotent). */
    s = sdel("k", T0 + 2);
    cr_expect_eq(s.status, TC_OK);
    close_stack();
}

Test(stack, a_miss_asks_every_tier_once_and_answers_once)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", "tst://?id=2&size=1M", NULL);
    struct seen s = sget("nothing", T0, 0);
    cr_expect_eq(s.calls, 1);
    cr_expect_eq(s.status, TC_ENOTFOUND);
    cr_expect_eq(s.hit_tier, -1);
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(ctl[i].gets, 1u, "l%zu", i + 1);
        cr_expect_eq(ctl[i].sets + ctl[i].dels, 0u, "l%zu written on a plain miss", i + 1);
    }
    close_stack();
}

Test(stack, a_long_key_and_a_recycled_op_work_as_a_fresh_one)
{
    /* Keys longer than the op's inline buffer are allocated; ops are
     * recycled through the ctx's free list: neither may leak a value. */
    open_stack("mem://?size=1M", NULL);
    char key[200];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    sset(key, "long", 4, T0, 0);
    struct seen s = sget(key, T0, 0);
    cr_expect_eq(s.hit_tier, 0);
    cr_expect(s.value_len == 4 && memcmp(s.value, "long", 4) == 0);
    s = sget("short", T0, 0);
    cr_expect_eq(s.status, TC_ENOTFOUND);
    cr_expect_eq(s.value_len, 0u, "a recycled op kept the previous value");
    close_stack();
}

/* ---- writes by other hosts ------------------------------------------------------------------ */

Test(stack, a_write_by_another_host_clears_the_faster_tiers)
{
    open_stack("tst://?id=0&size=1M", "tst://?id=1&size=1M", "tstr://?id=2&size=1M", NULL);
    cr_assert_not_null(ctl[2].inval_fn, "the stack did not subscribe to the remote tier");
    cr_expect_null(ctl[0].inval_fn, "a local tier has nothing to report");
    sset("k", "v", 1, T0, 0);
    sset("other", "w", 1, T0, 0);

    ctl[2].inval_fn(ctl[2].inval_arg, "k", 1);
    expect_absent(0, "k", T0);
    expect_absent(1, "k", T0);
    expect_tier(2, "k", "v", T0, 0); /* the shared tier holds the other host's write */
    expect_tier(0, "other", "w", T0, 0);
    uint64_t lost = 99;
    cr_expect_eq(tc_stack_invalidations(stack, &lost), 1u);
    cr_expect_eq(lost, 0u);

    /* Messages may have been lost: counted, nothing cleared. */
    ctl[2].inval_fn(ctl[2].inval_arg, NULL, 0);
    cr_expect_eq(tc_stack_invalidations(stack, &lost), 1u);
    cr_expect_eq(lost, 1u);
    expect_tier(0, "other", "w", T0, 0);

    /* The next get finds the new value below and fills the faster tiers. */
    struct seen s = sget("k", T0, 0);
    cr_expect_eq(s.hit_tier, 2);
    close_stack();
    cr_expect_null(ctl[2].inval_fn, "the stack did not unsubscribe when destroyed");
}
