/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The tier conformance suite: every backend must pass the same cases,
 * driven only through tiers/tier.h (STYLE R19).
 *
 * CTest runs this binary once per backend with TC_TEST_TIER=<name>; each
 * backend below knows how to make a fresh, empty instance (a temp dir, a
 * private shm name, a redis-server on a free port...) and how to remove it.
 * Without TC_TEST_TIER the suite runs against "mem".
 *
 * Time is injected: "now" starts at the wall clock (so that remote tiers,
 * whose own expiry follows real time, agree with it) and the expiry cases
 * move it forward by hand instead of sleeping.
 */
#include "tests/support/clock.h"
#include "tests/support/backends.h"
#include "tests/support/conc.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- fixture ------------------------------------------------------------- */

static const struct tc_test_backend *be;
static char uri[1024];
static struct tc_tier *tier;
static struct tc_tier_ctx *ctx;
static struct tc_buf out;
static uint64_t t0;

static void open_tier(const char *extra)
{
    char err[512];
    cr_assert_eq(be->setup(uri, sizeof(uri), extra), 0, "setting up backend %s failed", be->name);
    enum tc_status st = tc_tier_open(NULL, uri, &tier, err, sizeof(err));
    cr_assert_eq(st, TC_OK, "open %s: %s (%s)", uri, err, tc_strerror(st));
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
}

static void close_tier(void)
{
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    tc_tier_close(tier);
    tier = NULL;
}

static void setup(void)
{
    be = tc_test_backend_from_env();
    cr_assert_not_null(be, "TC_TEST_TIER=%s: no such backend in the conformance suite",
                       getenv("TC_TEST_TIER"));
    tc_buf_init(&out);
    t0 = tc_test_wall_ms();
    open_tier("");
}

static void teardown(void)
{
    if (tier != NULL) {
        close_tier();
    }
    tc_buf_deinit(&out);
    be->teardown();
}

TestSuite(conformance, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers --------------------------------------------------------------- */

static enum tc_status put_at(const void *k, size_t kl, const void *v, size_t vl, uint64_t now,
                             uint64_t E)
{
    struct tc_tier_req r = {.key = k, .key_len = kl, .value = v, .value_len = vl, .now_ms = now};
    r.hdr.encoding = TC_ENC_BINARY;
    r.hdr.created_ms = now;
    r.hdr.expire_ms = E;
    enum tc_status st = tc_tier_set(ctx, &r);
    cr_assert_neq(st, TC_EINPROGRESS, "a NULL event_base must complete synchronously");
    cr_assert_eq(r.status, st);
    return st;
}

static enum tc_status put(const char *k, const void *v, size_t vl)
{
    return put_at(k, strlen(k), v, vl, t0, t0 + 3600000);
}

static enum tc_status get_at(const void *k, size_t kl, uint64_t now, struct tc_tier_req *r)
{
    memset(r, 0, sizeof(*r));
    r->key = k;
    r->key_len = kl;
    r->out = &out;
    r->now_ms = now;
    enum tc_status st = tc_tier_get(ctx, r);
    cr_assert_neq(st, TC_EINPROGRESS);
    return st;
}

static enum tc_status get(const char *k)
{
    struct tc_tier_req r;
    return get_at(k, strlen(k), t0, &r);
}

static enum tc_status del(const void *k, size_t kl)
{
    struct tc_tier_req r = {.key = k, .key_len = kl, .now_ms = t0};
    return tc_tier_del(ctx, &r);
}

/* ---- cases ------------------------------------------------------------------ */

Test(conformance, missing_key_is_a_miss)
{
    cr_assert_eq(get("never-written"), TC_ENOTFOUND);
    cr_assert_eq(out.len, 0);
}

Test(conformance, round_trip_small_values)
{
    cr_assert_eq(put("empty", "", 0), TC_OK);
    cr_assert_eq(get("empty"), TC_OK);
    cr_assert_eq(out.len, 0);

    cr_assert_eq(put("one", "x", 1), TC_OK);
    cr_assert_eq(get("one"), TC_OK);
    cr_assert_eq(out.len, 1);
    cr_assert_eq(out.data[0], 'x');

    static const char bin[] = "\0a\0\xff\0b\0";
    cr_assert_eq(put("binary", bin, sizeof(bin)), TC_OK);
    cr_assert_eq(get("binary"), TC_OK);
    cr_assert_eq(out.len, sizeof(bin));
    cr_assert_arr_eq(out.data, bin, sizeof(bin));
}

Test(conformance, header_fields_round_trip)
{
    struct tc_tier_req w = {.key = "h", .key_len = 1, .value = "{}", .value_len = 2, .now_ms = t0};
    w.hdr.encoding = TC_ENC_JSON;
    w.hdr.created_ms = t0 - 5;
    w.hdr.expire_ms = t0 + 777000;
    cr_assert_eq(tc_tier_set(ctx, &w), TC_OK);
    struct tc_tier_req r;
    cr_assert_eq(get_at("h", 1, t0, &r), TC_OK);
    cr_assert_eq(r.hdr.encoding, TC_ENC_JSON);
    cr_assert_eq(r.hdr.created_ms, t0 - 5);
    cr_assert_eq(r.hdr.expire_ms, t0 + 777000);
    cr_assert_eq(r.hdr.value_len, 2);
}

Test(conformance, keys_with_nuls_and_max_length)
{
    static const char k1[] = "a\0b";
    static const char k2[] = "a\0c";
    cr_assert_eq(put_at(k1, 3, "1", 1, t0, 0), TC_OK);
    cr_assert_eq(put_at(k2, 3, "2", 1, t0, 0), TC_OK);
    struct tc_tier_req r;
    cr_assert_eq(get_at(k1, 3, t0, &r), TC_OK);
    cr_assert_eq(out.data[0], '1');
    cr_assert_eq(get_at(k2, 3, t0, &r), TC_OK);
    cr_assert_eq(out.data[0], '2');
    cr_assert_eq(get_at("a", 1, t0, &r), TC_ENOTFOUND, "a prefix of a key is another key");

    size_t maxk = tc_tier_max_key(tier);
    char *k = malloc(maxk + 1);
    memset(k, 'K', maxk + 1);
    cr_assert_eq(put_at(k, maxk, "m", 1, t0, 0), TC_OK);
    cr_assert_eq(get_at(k, maxk, t0, &r), TC_OK);
    cr_assert_eq(put_at(k, maxk + 1, "m", 1, t0, 0), TC_ETOOBIG);
    cr_assert_eq(get_at(k, maxk + 1, t0, &r), TC_ETOOBIG);
    free(k);
}

Test(conformance, max_size_value_and_one_byte_more)
{
    size_t max = tc_tier_max_value(tier);
    if (max > (64u << 20)) {
        max = 64u << 20; /* a tier may accept more; 64 MiB shows the point */
    }
    unsigned char *v = malloc(max + 1);
    for (size_t i = 0; i <= max; i++) {
        v[i] = (unsigned char)(i * 131 + 7);
    }
    cr_assert_eq(put("max", v, max), TC_OK);
    cr_assert_eq(get("max"), TC_OK);
    cr_assert_eq(out.len, max);
    cr_assert(memcmp(out.data, v, max) == 0);
    if (tc_tier_max_value(tier) == max) {
        cr_assert_eq(put("over", v, max + 1), TC_ETOOBIG);
        cr_assert_eq(get("over"), TC_ENOTFOUND, "a refused value must not be stored");
    }
    free(v);
}

Test(conformance, get_many_answers_as_single_gets)
{
    enum { N = 70 }; /* more than one TC_TIER_GET_MANY_MAX chunk */
    static char keys[N][32];
    static struct tc_tier_req reqs[N];
    static struct tc_buf outs[N];
    struct tc_tier_req *ptr[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "many:%d", i);
        if (i % 3 != 0) {
            char v[40];
            int n = snprintf(v, sizeof(v), "value %d", i);
            cr_assert_eq(put(keys[i], v, (size_t)n), TC_OK);
        }
        memset(&reqs[i], 0, sizeof(reqs[i]));
        reqs[i].key = keys[i];
        reqs[i].key_len = i == 4 ? 0 : strlen(keys[i]); /* one bad request */
        reqs[i].out = &outs[i];
        reqs[i].now_ms = t0;
        ptr[i] = &reqs[i];
    }
    tc_tier_get_many(ctx, ptr, N);
    for (int i = 0; i < N; i++) {
        cr_assert_neq(reqs[i].status, TC_EINPROGRESS);
        enum tc_status want = i == 4 ? TC_EINVAL : i % 3 == 0 ? TC_ENOTFOUND : TC_OK;
        cr_assert_eq(reqs[i].status, want, "key %d: %s", i, tc_status_name(reqs[i].status));
        if (want == TC_OK) {
            char v[40];
            int n = snprintf(v, sizeof(v), "value %d", i);
            cr_assert_eq(outs[i].len, (size_t)n);
            cr_assert_eq(memcmp(outs[i].data, v, (size_t)n), 0, "key %d", i);
            cr_assert_eq(reqs[i].hdr.expire_ms, t0 + 3600000);
        }
        tc_buf_deinit(&outs[i]);
    }
}

Test(conformance, overwrite_replaces)
{
    cr_assert_eq(put("k", "first", 5), TC_OK);
    cr_assert_eq(put("k", "second!", 7), TC_OK);
    cr_assert_eq(get("k"), TC_OK);
    cr_assert_eq(out.len, 7);
    cr_assert(memcmp(out.data, "second!", 7) == 0);
    cr_assert_eq(put("k", "3", 1), TC_OK);
    cr_assert_eq(get("k"), TC_OK);
    cr_assert_eq(out.len, 1);
}

Test(conformance, delete_is_idempotent)
{
    cr_assert_eq(put("d", "v", 1), TC_OK);
    cr_assert_eq(del("d", 1), TC_OK);
    cr_assert_eq(get("d"), TC_ENOTFOUND);
    cr_assert_eq(del("d", 1), TC_OK);
    cr_assert_eq(del("never", 5), TC_OK);
}

Test(conformance, authoritative_expiry_through_injected_clock)
{
    cr_assert_eq(put_at("e", 1, "v", 1, t0, t0 + 1000), TC_OK);
    struct tc_tier_req r;
    cr_assert_eq(get_at("e", 1, t0 + 999, &r), TC_OK);
    cr_assert_eq(get_at("e", 1, t0 + 1000, &r), TC_ENOTFOUND, "expired at E");
    cr_assert_eq(get_at("e", 1, t0 + 5000, &r), TC_ENOTFOUND);
}

Test(conformance, write_already_expired_removes_old_value)
{
    cr_assert_eq(put("gone", "old", 3), TC_OK);
    cr_assert_eq(put_at("gone", 4, "new", 3, t0, t0 - 1), TC_OK);
    cr_assert_eq(get("gone"), TC_ENOTFOUND);
}

Test(conformance, ttl_ratio_sets_local_expiry)
{
    close_tier();
    be->teardown();
    open_tier("ttl_ratio=0.5&max_ttl=100s");
    cr_assert_eq(put_at("r", 1, "v", 1, t0, t0 + 1000), TC_OK);
    struct tc_tier_req r;
    cr_assert_eq(get_at("r", 1, t0, &r), TC_OK);
    cr_assert_eq(r.hdr.expire_ms, t0 + 1000, "E travels unchanged");
    /* Remote tiers count their own time; allow for the round trip there. */
    uint64_t slack = (tc_tier_caps(tier) & TC_TIER_CAP_REMOTE) ? 100 : 0;
    cr_assert(r.local_expire_ms <= t0 + 500 && r.local_expire_ms + slack >= t0 + 500,
              "local expiry %llu, want %llu", (unsigned long long)r.local_expire_ms,
              (unsigned long long)(t0 + 500));
    if (!(tc_tier_caps(tier) & TC_TIER_CAP_REMOTE)) {
        cr_assert_eq(get_at("r", 1, t0 + 499, &r), TC_OK);
        cr_assert_eq(get_at("r", 1, t0 + 500, &r), TC_ENOTFOUND, "past local expiry");
    }
    /* max_ttl caps a long TTL. */
    cr_assert_eq(put_at("c", 1, "v", 1, t0, t0 + 3600000), TC_OK);
    cr_assert_eq(get_at("c", 1, t0, &r), TC_OK);
    cr_assert(r.local_expire_ms <= t0 + 100000 && r.local_expire_ms + slack >= t0 + 100000,
              "capped local expiry %llu", (unsigned long long)r.local_expire_ms);
}

Test(conformance, clear_by_prefix)
{
    cr_assert_eq(put("user:1", "a", 1), TC_OK);
    cr_assert_eq(put("user:2", "b", 1), TC_OK);
    cr_assert_eq(put("page:1", "c", 1), TC_OK);
    struct tc_tier_req r = {.key = "user:", .key_len = 5, .now_ms = t0};
    enum tc_status st = tc_tier_clear(ctx, &r);
    if (st == TC_ENOTSUP) {
        cr_skip_test("%s does not clear", be->name);
    }
    cr_assert_eq(st, TC_OK);
    cr_assert_eq(r.count, 2);
    cr_assert_eq(get("user:1"), TC_ENOTFOUND);
    cr_assert_eq(get("user:2"), TC_ENOTFOUND);
    cr_assert_eq(get("page:1"), TC_OK);
    struct tc_tier_req all = {.key = NULL, .key_len = 0, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &all), TC_OK);
    cr_assert_eq(get("page:1"), TC_ENOTFOUND);
}

Test(conformance, sweep_removes_expired_only)
{
    char k[16];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        cr_assert_eq(put_at(k, strlen(k), "v", 1, t0, i < 50 ? t0 + 10 : t0 + 3600000), TC_OK);
    }
    uint64_t removed = 0;
    enum tc_status st;
    int rounds = 0;
    do {
        st = tc_tier_sweep(tier, t0 + 20, 64, &removed);
    } while (st == TC_EAGAIN && ++rounds < 100000);
    if (st == TC_ENOTSUP) {
        cr_skip_test("%s expires on its own", be->name);
    }
    cr_assert_eq(st, TC_OK);
    cr_assert_eq(removed, 50, "removed %llu", (unsigned long long)removed);
    struct tc_tier_req r;
    for (int i = 50; i < 100; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        cr_assert_eq(get_at(k, strlen(k), t0 + 20, &r), TC_OK, "%s lost by the sweep", k);
    }
}

struct counts {
    uint64_t hits, misses, sets, deletes;
};

static void count_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    struct counts *c = arg;
    (void)kind;
    if (strcmp(name, "hits") == 0) {
        c->hits += v;
    } else if (strcmp(name, "misses") == 0) {
        c->misses += v;
    } else if (strcmp(name, "sets") == 0) {
        c->sets += v;
    } else if (strcmp(name, "deletes") == 0) {
        c->deletes += v;
    }
}

Test(conformance, stats_count_operations)
{
    cr_assert_eq(put("a", "1", 1), TC_OK);
    cr_assert_eq(get("a"), TC_OK);
    cr_assert_eq(get("a"), TC_OK);
    cr_assert_eq(get("b"), TC_ENOTFOUND);
    cr_assert_eq(del("a", 1), TC_OK);
    struct counts c = {0, 0, 0, 0};
    tc_tier_stats(tier, count_stat, &c);
    cr_assert_eq(c.hits, 2);
    cr_assert_eq(c.misses, 1);
    cr_assert_eq(c.sets, 1);
    cr_assert_eq(c.deletes, 1);
}

Test(conformance, reopen_keeps_data_when_persistent)
{
    if (!(tc_tier_caps(tier) & TC_TIER_CAP_PERSISTENT)) {
        cr_skip_test("%s is not persistent", be->name);
    }
    cr_assert_eq(put("p", "kept", 4), TC_OK);
    tc_tier_ctx_dispose(ctx);
    tc_tier_close(tier);
    char err[512];
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    cr_assert_eq(get("p"), TC_OK);
    cr_assert_eq(out.len, 4);
    cr_assert(memcmp(out.data, "kept", 4) == 0);
}

Test(conformance, concurrent_set_get_never_tears)
{
    struct tc_conc_result r;
    tc_conc_run(tier, 4, 4000, 64, t0, &r);
    cr_assert_eq(r.fail, TC_OK, "%s", tc_strerror(r.fail));
    cr_assert_eq(r.bad, 0, "%llu torn or misplaced values read", (unsigned long long)r.bad);
    cr_assert_gt(r.hits, 0, "no reads hit: the test proved nothing");
}
