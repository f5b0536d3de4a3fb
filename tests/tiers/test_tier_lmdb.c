/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tests for tiers/tier_lmdb.c beyond the shared conformance suite: large
 * values, keys around LMDB's key limit, eviction of a full map, the sweep,
 * the asynchronous (event_base) path, bad URIs, corrupt records, and
 * damaged environments (issue 12: truncated files, garbage meta pages, bit
 * flips, damage met at run time, a damaged file another process uses), and
 * the durable snapshot of sync=periodic (the record, its restore after a
 * host crash, records that cannot be used, sync=none after a host crash). Each
 * test gets a fresh environment in a temp dir. The multi-process cases
 * (kill -9, two writers) live in stress_tier_lmdb.c: they fork and run
 * threads, which Criterion cannot host under TSan (Snaipe/Criterion#274).
 */
#define _GNU_SOURCE /* dladdr: in which library a damaged-file round crashed */
#include "tests/support/backends.h"
#include "tests/support/lmdb_damage.h"
#include "tests/support/stats.h"
#include "tiers/lmdb_durable.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <event2/event.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif
#include <unistd.h>

static char dir[256];
static char uri[1024];
static struct tc_tier *tier;
static struct tc_tier_ctx *ctx;
static struct tc_buf out;
static uint64_t t0;

static void rm_dir(void)
{
    if (dir[0] != '\0') {
        tc_test_rm_flat_dir(dir); /* data.mdb.corrupt-* too */
    }
}

static void open_with(const char *params)
{
    char err[512];
    snprintf(uri, sizeof(uri), "lmdb://%s?%s", dir, params);
    enum tc_status st = tc_tier_open(NULL, uri, &tier, err, sizeof(err));
    cr_assert_eq(st, TC_OK, "open %s: %s", uri, err);
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t0 = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    snprintf(dir, sizeof(dir), "/tmp/tc-lmdb-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    tc_buf_init(&out);
}

static void teardown(void)
{
    if (tier != NULL) {
        close_tier();
    }
    tc_buf_deinit(&out);
    rm_dir();
}

TestSuite(tier_lmdb, .init = setup, .fini = teardown, .timeout = 60);

static enum tc_status put_e(const void *k, size_t kl, const void *v, size_t vl, uint64_t E)
{
    struct tc_tier_req r = {.key = k, .key_len = kl, .value = v, .value_len = vl, .now_ms = t0};
    r.hdr.encoding = TC_ENC_BINARY;
    r.hdr.created_ms = t0;
    r.hdr.expire_ms = E;
    return tc_tier_set(ctx, &r);
}

static enum tc_status get_at(const void *k, size_t kl, uint64_t now)
{
    struct tc_tier_req r = {.key = k, .key_len = kl, .out = &out, .now_ms = now};
    return tc_tier_get(ctx, &r);
}

static uint64_t stat_of(const char *name)
{
    uint64_t v;
    cr_assert(tc_test_tier_stat(tier, name, &v), "no stat named %s", name);
    return v;
}

/* ---- values and keys ------------------------------------------------------ */

Test(tier_lmdb, large_values_round_trip_through_overflow_pages)
{
    open_with("map_size=128M&max_item=8M&sync=none");
    cr_assert_eq(tc_tier_max_value(tier), 8u << 20);
    static const size_t sizes[] = {3u << 20, (5u << 20) + 17, 8u << 20};
    unsigned char *v = malloc((8u << 20) + 1);
    for (size_t i = 0; i < (8u << 20); i++) {
        v[i] = (unsigned char)(i * 2654435761u >> 13);
    }
    for (size_t i = 0; i < 3; i++) {
        char k[8];
        snprintf(k, sizeof(k), "big%zu", i);
        cr_assert_eq(put_e(k, strlen(k), v + i, sizes[i] - i, 0), TC_OK);
    }
    for (size_t i = 0; i < 3; i++) {
        char k[8];
        snprintf(k, sizeof(k), "big%zu", i);
        cr_assert_eq(get_at(k, strlen(k), t0), TC_OK);
        cr_assert_eq(out.len, sizes[i] - i);
        cr_assert(memcmp(out.data, v + i, out.len) == 0, "%s corrupted", k);
    }
    /* Shrinking in place and growing again keep exactly the new bytes. */
    cr_assert_eq(put_e("big0", 4, "tiny", 4, 0), TC_OK);
    cr_assert_eq(get_at("big0", 4, t0), TC_OK);
    cr_assert_eq(out.len, 4);
    cr_assert_eq(put_e("big0", 4, v, 6u << 20, 0), TC_OK);
    cr_assert_eq(get_at("big0", 4, t0), TC_OK);
    cr_assert_eq(out.len, 6u << 20);
    cr_assert(memcmp(out.data, v, out.len) == 0);
    cr_assert_eq(put_e("over", 4, v, (8u << 20) + 1, 0), TC_ETOOBIG);
    cr_assert_eq(get_at("over", 4, t0), TC_ENOTFOUND, "a refused value is not stored");
    free(v);
    cr_assert_eq(stat_of("items"), 3);
}

/* Keys of every length around the raw/digest boundary: LMDB's own limit is
 * mdb_env_get_maxkeysize() (511 on Debian) and the expiry index needs 8
 * more bytes, so 502 is the longest raw key and 503+ are digested. */
Test(tier_lmdb, keys_at_and_beyond_the_lmdb_key_limit)
{
    open_with("map_size=64M&sync=none");
    cr_assert_eq(tc_tier_max_key(tier), TC_KEY_MAX);
    static const size_t lens[] = {1, 255, 501, 502, 503, 504, 510, 511, 512, 513, 700, 1023, 1024};
    const size_t n = sizeof(lens) / sizeof(lens[0]);
    char *k = malloc(TC_KEY_MAX);
    memset(k, 'L', TC_KEY_MAX); /* every key is a prefix of the longer ones */
    for (size_t i = 0; i < n; i++) {
        char v[32];
        int vl = snprintf(v, sizeof(v), "len=%zu", lens[i]);
        cr_assert_eq(put_e(k, lens[i], v, (size_t)vl, 0), TC_OK, "len %zu", lens[i]);
    }
    for (size_t i = 0; i < n; i++) {
        char v[32];
        int vl = snprintf(v, sizeof(v), "len=%zu", lens[i]);
        cr_assert_eq(get_at(k, lens[i], t0), TC_OK, "len %zu", lens[i]);
        cr_assert_eq(out.len, (size_t)vl);
        cr_assert(memcmp(out.data, v, (size_t)vl) == 0, "len %zu read %.*s", lens[i], (int)out.len,
                  out.data);
    }
    cr_assert_eq(stat_of("items"), n);
    cr_assert_eq(get_at(k, 505, t0), TC_ENOTFOUND, "never written");

    /* Two long keys sharing a long prefix: same first 471 dkey bytes, the
     * digest tells them apart, and the stored full key is checked. */
    char *a = malloc(1000), *b = malloc(1000);
    memset(a, 'p', 1000);
    memset(b, 'p', 1000);
    a[999] = 'A';
    b[999] = 'B';
    cr_assert_eq(put_e(a, 1000, "A", 1, 0), TC_OK);
    cr_assert_eq(put_e(b, 1000, "B", 1, 0), TC_OK);
    cr_assert_eq(get_at(a, 1000, t0), TC_OK);
    cr_assert_eq(out.data[0], 'A');
    cr_assert_eq(get_at(b, 1000, t0), TC_OK);
    cr_assert_eq(out.data[0], 'B');
    struct tc_tier_req d = {.key = a, .key_len = 1000, .now_ms = t0};
    cr_assert_eq(tc_tier_del(ctx, &d), TC_OK);
    cr_assert_eq(get_at(a, 1000, t0), TC_ENOTFOUND);
    cr_assert_eq(get_at(b, 1000, t0), TC_OK, "deleting a neighbour must not touch b");

    /* Clear by a prefix longer than the digested keys keep: the full key
     * decides. 'p'*999 matches b only; 'L'*600 matches the 3 longest L keys. */
    cr_assert_eq(put_e(a, 1000, "A", 1, 0), TC_OK);
    a[999] = 'C';
    struct tc_tier_req c = {.key = b, .key_len = 1000, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &c), TC_OK);
    cr_assert_eq(c.count, 1);
    a[999] = 'A';
    cr_assert_eq(get_at(a, 1000, t0), TC_OK);
    cr_assert_eq(get_at(b, 1000, t0), TC_ENOTFOUND);
    struct tc_tier_req c2 = {.key = k, .key_len = 600, .now_ms = t0};
    cr_assert_eq(tc_tier_clear(ctx, &c2), TC_OK);
    cr_assert_eq(c2.count, 3, "cleared %llu", (unsigned long long)c2.count);
    cr_assert_eq(get_at(k, 513, t0), TC_OK);
    cr_assert_eq(get_at(k, 700, t0), TC_ENOTFOUND);
    free(a);
    free(b);
    free(k);
}

/* tc_tier_get_many shares one read txn across the batch and copies values
 * out after all lookups: every kind of record must come back exactly as a
 * single get returns it, in the same batch as the others. */
Test(tier_lmdb, get_many_matches_single_gets_for_every_kind_of_record)
{
    open_with("map_size=64M&sync=none&max_item=4M");
    enum { N = 7 };
    size_t big = 3u << 20; /* overflow pages */
    char *bigv = malloc(big), longk[800];
    for (size_t i = 0; i < big; i++) {
        bigv[i] = (char)(i * 7 + 1);
    }
    memset(longk, 'q', sizeof(longk));
    cr_assert_eq(put_e("short", 5, "v-short", 7, 0), TC_OK);
    cr_assert_eq(put_e(longk, sizeof(longk), "v-long", 6, 0), TC_OK);
    cr_assert_eq(put_e("big", 3, bigv, big, 0), TC_OK);
    cr_assert_eq(put_e("soon", 4, "v-soon", 6, t0 + 1000), TC_OK);
    cr_assert_eq(put_e("empty", 5, "", 0, 0), TC_OK);
    cr_assert_eq(put_e("later", 5, "v-later", 7, t0 + 60000), TC_OK);
    const char *keys[N] = {"short", longk, "big", "soon", "missing", "empty", "later"};
    size_t klens[N] = {5, sizeof(longk), 3, 4, 7, 5, 5};
    for (int pass = 0; pass < 2; pass++) {
        uint64_t now = pass == 0 ? t0 : t0 + 2000; /* "soon" has expired in pass 1 */
        struct tc_tier_req reqs[N], *ptr[N];
        struct tc_buf outs[N];
        for (int i = 0; i < N; i++) {
            tc_buf_init(&outs[i]);
            reqs[i] = (struct tc_tier_req){
                .key = keys[i], .key_len = klens[i], .out = &outs[i], .now_ms = now};
            ptr[i] = &reqs[i];
        }
        tc_tier_get_many(ctx, ptr, N);
        for (int i = 0; i < N; i++) {
            struct tc_tier_req r1 = {
                .key = keys[i], .key_len = klens[i], .out = &out, .now_ms = now};
            enum tc_status one = tc_tier_get(ctx, &r1);
            cr_assert_eq(reqs[i].status, one, "pass %d key %d: %s vs %s", pass, i,
                         tc_status_name(reqs[i].status), tc_status_name(one));
            if (one == TC_OK) {
                cr_assert_eq(outs[i].len, out.len, "pass %d key %d", pass, i);
                cr_assert(out.len == 0 || memcmp(outs[i].data, out.data, out.len) == 0);
                cr_assert_eq(reqs[i].hdr.expire_ms, r1.hdr.expire_ms);
                cr_assert_eq(reqs[i].hdr.value_len, r1.hdr.value_len);
                cr_assert_eq(reqs[i].local_expire_ms, r1.local_expire_ms);
            }
            tc_buf_deinit(&outs[i]);
        }
        cr_assert_eq(reqs[2].status, TC_OK);
        cr_assert_eq(reqs[2].hdr.value_len, big);
        cr_assert_eq(reqs[6].hdr.expire_ms, t0 + 60000);
        cr_assert_eq(reqs[3].status, pass == 0 ? TC_OK : TC_ENOTFOUND);
        cr_assert_eq(reqs[4].status, TC_ENOTFOUND);
    }
    free(bigv);
}

/* ---- space ------------------------------------------------------------------ */

/* An 8 MiB map written with ~40 MiB: every write succeeds, and what goes is
 * always what expires first. Phase 1 stores records with shuffled expiries
 * (plus a few that never expire); phase 2 writes later-expiring filler until
 * far past the map size. */
Test(tier_lmdb, full_map_evicts_earliest_expiry_and_never_fails)
{
    open_with("map_size=8M&sync=none&max_item=64K");
    enum { P1 = 600, VAL = 3000, FILL = 13000 };
    static unsigned char v[VAL];
    memset(v, 'f', sizeof(v));
    char k[32];
    for (int i = 0; i < P1; i++) {
        uint64_t E = t0 + 3600000u + (uint64_t)((i * 7919) % P1) * 1000u;
        snprintf(k, sizeof(k), "p1:%d", i);
        cr_assert_eq(put_e(k, strlen(k), v, VAL, i < 5 ? 0 : E), TC_OK);
    }
    int fill = 0;
    /* Until the first evictions have happened, then a little more. */
    while (stat_of("evictions") == 0 && fill < FILL) {
        snprintf(k, sizeof(k), "fill:%d", fill);
        cr_assert_eq(put_e(k, strlen(k), v, VAL, t0 + 36000000u + (uint64_t)fill), TC_OK);
        fill++;
    }
    cr_assert_gt(stat_of("evictions"), 0, "8 MiB never filled up");
    /* Phase-1 survivors are exactly those expiring after every evicted one. */
    uint64_t max_gone = 0, min_kept = UINT64_MAX;
    for (int i = 5; i < P1; i++) {
        uint64_t E = t0 + 3600000u + (uint64_t)((i * 7919) % P1) * 1000u;
        snprintf(k, sizeof(k), "p1:%d", i);
        if (get_at(k, strlen(k), t0) == TC_OK) {
            min_kept = E < min_kept ? E : min_kept;
        } else {
            max_gone = E > max_gone ? E : max_gone;
        }
    }
    cr_assert_gt(max_gone, 0, "nothing of phase 1 was evicted");
    cr_assert(max_gone < min_kept, "evicted a record expiring at +%llu but kept one at +%llu",
              (unsigned long long)(max_gone - t0), (unsigned long long)(min_kept - t0));
    for (int i = 0; i < fill; i++) {
        snprintf(k, sizeof(k), "fill:%d", i);
        cr_assert_eq(get_at(k, strlen(k), t0), TC_OK, "filler %d evicted before phase 1", i);
    }
    /* Far past the map: still no failure. */
    for (; fill < FILL; fill++) {
        snprintf(k, sizeof(k), "fill:%d", fill);
        cr_assert_eq(put_e(k, strlen(k), v, VAL, t0 + 36000000u + (uint64_t)fill), TC_OK,
                     "write %d failed", fill);
    }
    /* Fillers expire in write order, so the survivors are the newest ones. */
    int first_kept = -1;
    for (int i = 0; i < FILL; i++) {
        snprintf(k, sizeof(k), "fill:%d", i);
        int hit = get_at(k, strlen(k), t0) == TC_OK;
        if (hit && first_kept < 0) {
            first_kept = i;
        }
        cr_assert(!(first_kept >= 0 && !hit), "fill:%d gone but fill:%d kept", i, first_kept);
    }
    cr_assert(first_kept > 0 && first_kept < FILL - 100, "kept from %d", first_kept);
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof(k), "p1:%d", i);
        cr_assert_eq(get_at(k, strlen(k), t0), TC_OK, "a never-expiring record went first");
    }
    cr_assert_lt(stat_of("bytes_used"), 8u << 20);
    cr_assert_eq(stat_of("errors"), 0);
}

/* Many writers in flight through the event loop, tiny and huge values: the
 * shapes that ran an 8 MiB map full before eviction could act (a batch of
 * random inserts larger than the room above high_water; values that need a
 * long contiguous run of pages). No write may fail. */
struct fill_loop {
    struct event_base *base;
    struct tc_tier_ctx *actx;
    const unsigned char *value;
    size_t vsize;
    int next, total, outstanding, failed;
    enum tc_status last_fail;
    struct fill_slot {
        struct tc_tier_req req;
        char key[24];
        struct fill_loop *loop;
    } slots[64];
};

static void fill_issue(struct fill_slot *s);

static void fill_done(struct tc_tier_req *req)
{
    struct fill_slot *s = req->arg;
    s->loop->outstanding--;
    if (req->status != TC_OK) {
        s->loop->failed++;
        s->loop->last_fail = req->status;
    }
    fill_issue(s);
}

static void fill_issue(struct fill_slot *s)
{
    struct fill_loop *l = s->loop;
    if (l->next >= l->total) {
        return;
    }
    int i = l->next++;
    if (i > 0 && (i & 1)) {
        /* Reads between the writes: readers must not starve eviction. */
        struct tc_buf b = TC_BUF_INIT;
        snprintf(s->key, sizeof(s->key), "f:%d", i / 2);
        struct tc_tier_req g = {.key = s->key,
                                .key_len = strlen(s->key),
                                .out = &b,
                                .now_ms = t0,
                                .done = fill_done,
                                .arg = s};
        enum tc_status st = tc_tier_get(l->actx, &g);
        if (st != TC_OK && st != TC_ENOTFOUND) {
            l->failed++;
            l->last_fail = st;
        }
        tc_buf_deinit(&b);
    }
    snprintf(s->key, sizeof(s->key), "f:%d", i);
    memset(&s->req, 0, sizeof(s->req));
    s->req.key = s->key;
    s->req.key_len = strlen(s->key);
    s->req.value = l->value;
    s->req.value_len = l->vsize;
    s->req.now_ms = t0;
    s->req.hdr.encoding = TC_ENC_BINARY;
    s->req.hdr.expire_ms = t0 + 3600000u + (uint64_t)i; /* write order = expiry order */
    s->req.done = fill_done;
    s->req.arg = s;
    l->outstanding++;
    if (tc_tier_set(l->actx, &s->req) != TC_EINPROGRESS) {
        l->outstanding--;
        l->failed++;
    }
}

static void fill_async(size_t vsize, int total, int inflight)
{
    struct fill_loop *l = calloc(1, sizeof(*l));
    unsigned char *v = malloc(vsize);
    memset(v, 'x', vsize);
    l->base = event_base_new();
    cr_assert_eq(tc_tier_ctx_init(tier, l->base, &l->actx), TC_OK);
    l->value = v;
    l->vsize = vsize;
    l->total = total;
    for (int i = 0; i < inflight; i++) {
        l->slots[i].loop = l;
        fill_issue(&l->slots[i]);
    }
    while (l->outstanding > 0) {
        event_base_loop(l->base, EVLOOP_ONCE);
    }
    tc_tier_ctx_dispose(l->actx);
    event_base_free(l->base);
    cr_assert_eq(l->failed, 0, "%d of %d operations (values of %zu bytes) failed, last with %s",
                 l->failed, total, vsize, tc_status_name(l->last_fail));
    free(v);
    free(l);
}

static void full_map_in_flight(void)
{
    /* ~60 MiB of 100-byte records, then values of 1 MiB and of the 2 MiB
     * maximum (a quarter of the map, one contiguous run of pages each). */
    fill_async(100, 250000, 64);
    cr_assert_gt(stat_of("evictions"), 0);
    char k[24];
    snprintf(k, sizeof(k), "f:%d", 250000 - 1);
    cr_assert_eq(get_at(k, strlen(k), t0), TC_OK, "the newest write was evicted");
    cr_assert_eq(get_at("f:0", 3, t0), TC_ENOTFOUND, "the earliest expiry survived");
    fill_async(1u << 20, 40, 8);
    fill_async(2u << 20, 20, 4);
    cr_assert_eq(get_at("f:19", 4, t0), TC_OK);
    cr_assert_eq(out.len, 2u << 20);
    cr_assert_eq(stat_of("commit_errors"), 0);
}

Test(tier_lmdb, full_map_with_writes_in_flight_small_and_huge_values)
{
    open_with("map_size=8M&sync=none&max_item=2M");
    full_map_in_flight();
}

/* The same through a writable map (MDB_WRITEMAP), then a reopen. */
Test(tier_lmdb, writemap_full_map_and_reopen)
{
    open_with("map_size=8M&sync=periodic&max_item=2M&writemap=on");
    full_map_in_flight();
    close_tier();
    open_with("map_size=8M&sync=periodic&max_item=2M&writemap=on");
    cr_assert_eq(get_at("f:19", 4, t0), TC_OK, "lost across a clean close");
    cr_assert_eq(out.len, 2u << 20);
}

/* ---- expiry ----------------------------------------------------------------- */

Test(tier_lmdb, sweep_removes_exactly_the_expired)
{
    open_with("map_size=32M&sync=none&ttl_ratio=0.5");
    char k[16];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        /* Local expiry is half the TTL: t0+100, t0+200, never. */
        uint64_t E = i < 100 ? t0 + 200 : i < 200 ? t0 + 400 : 0;
        cr_assert_eq(put_e(k, strlen(k), "v", 1, E), TC_OK);
    }
    /* Before any sweep a reader already misses what is past local expiry. */
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        cr_assert_eq(get_at(k, strlen(k), t0 + 150), i < 100 ? TC_ENOTFOUND : TC_OK, "%s", k);
    }
    uint64_t removed = 0;
    enum tc_status st;
    int rounds = 0;
    while ((st = tc_tier_sweep(tier, t0 + 150, 7, &removed)) == TC_EAGAIN) {
        rounds++;
    }
    cr_assert_eq(st, TC_OK);
    cr_assert_eq(removed, 100);
    cr_assert_geq(rounds, 100 / 7, "the budget bounds each call");
    cr_assert_eq(stat_of("items"), 200);
    removed = 0;
    cr_assert_eq(tc_tier_sweep(tier, t0 + 150, 1000, &removed), TC_OK);
    cr_assert_eq(removed, 0, "a second pass finds nothing");
    cr_assert_eq(tc_tier_sweep(tier, t0 + 10000000, 1000, &removed), TC_OK);
    cr_assert_eq(removed, 100);
    for (int i = 200; i < 300; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        cr_assert_eq(get_at(k, strlen(k), t0 + 10000000), TC_OK, "never-expiring %s swept", k);
    }
    cr_assert_eq(stat_of("expired"), 200);
    /* An overwrite moves the expiry: the old index entry must not sweep it. */
    cr_assert_eq(put_e("m", 1, "v", 1, t0 + 200), TC_OK);
    cr_assert_eq(put_e("m", 1, "v", 1, t0 + 2000000), TC_OK);
    cr_assert_eq(tc_tier_sweep(tier, t0 + 500, 1000, &removed), TC_OK);
    cr_assert_eq(get_at("m", 1, t0 + 500), TC_OK);
}

/* The expiry index is lazy: overwrites and deletes leave stale entries,
 * which must neither count as expired records nor grow without bound. */
Test(tier_lmdb, stale_index_entries_stay_bounded)
{
    open_with("map_size=64M&sync=none");
    char k[16];
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 200; i++) {
            snprintf(k, sizeof(k), "o%d", i);
            cr_assert_eq(put_e(k, strlen(k), "v", 1, t0 + 1000 + (uint64_t)round), TC_OK);
        }
    }
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "o%d", i);
        struct tc_tier_req d = {.key = k, .key_len = strlen(k), .now_ms = t0};
        cr_assert_eq(tc_tier_del(ctx, &d), TC_OK);
    }
    cr_assert_eq(stat_of("items"), 100);
    /* 8000 writes of 200 keys: the scrub keeps the index near 2 x records
     * plus its slack (4096), however many overwrites there are. */
    cr_assert_leq(stat_of("index_entries"), 2 * 200 + 4096 + 2);
    cr_assert_geq(stat_of("index_entries"), 100);
    uint64_t removed = 0;
    enum tc_status st;
    while ((st = tc_tier_sweep(tier, t0 + 5000, 7, &removed)) == TC_EAGAIN) {
    }
    cr_assert_eq(st, TC_OK);
    cr_assert_eq(removed, 100, "stale entries are not expired records");
    cr_assert_eq(stat_of("items"), 0);
    cr_assert_eq(stat_of("index_entries"), 0);
    cr_assert_eq(stat_of("expired"), 100);
}

/* ---- asynchronous path -------------------------------------------------------- */

struct async_req {
    struct tc_tier_req req;
    char key[16];
    int calls;
    pthread_t thread;
};

static void on_done(struct tc_tier_req *req)
{
    struct async_req *a = req->arg;
    a->calls++;
    a->thread = pthread_self();
}

static void issue_sets(struct async_req *rs, int n, enum tc_status *first)
{
    for (int i = 0; i < n; i++) {
        struct async_req *a = &rs[i];
        memset(a, 0, sizeof(*a));
        snprintf(a->key, sizeof(a->key), "a%d", i);
        a->req.key = a->key;
        a->req.key_len = strlen(a->key);
        a->req.value = a->key;
        a->req.value_len = strlen(a->key);
        a->req.now_ms = t0;
        a->req.hdr.encoding = TC_ENC_STRING;
        a->req.done = on_done;
        a->req.arg = a;
        enum tc_status st = tc_tier_set(ctx, &a->req);
        if (i == 0) {
            *first = st;
        }
        cr_assert_eq(st, TC_EINPROGRESS, "set %d returned %s", i, tc_status_name(st));
    }
}

Test(tier_lmdb, async_sets_complete_on_the_loop_thread)
{
    open_with("map_size=32M&sync=always");
    tc_tier_ctx_dispose(ctx);
    struct event_base *base = event_base_new();
    cr_assert_not_null(base);
    cr_assert_eq(tc_tier_ctx_init(tier, base, &ctx), TC_OK);
    enum { N = 300 };
    struct async_req *rs = calloc(N, sizeof(*rs));
    enum tc_status first;
    issue_sets(rs, N, &first);
    int done = 0;
    for (int spins = 0; done < N && spins < 100000; spins++) {
        event_base_loop(base, EVLOOP_ONCE);
        done = 0;
        for (int i = 0; i < N; i++) {
            done += rs[i].calls;
        }
    }
    cr_assert_eq(done, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rs[i].calls, 1, "done() ran %d times for %d", rs[i].calls, i);
        cr_assert_eq(rs[i].req.status, TC_OK);
        cr_assert(pthread_equal(rs[i].thread, pthread_self()), "completed off the loop thread");
    }
    /* Gets on an async ctx answer at once; they never wait for the writer
     * (done is still required on an async ctx: tier.h). */
    struct tc_tier_req g = {
        .key = "a7", .key_len = 2, .out = &out, .now_ms = t0, .done = on_done, .arg = &rs[0]};
    cr_assert_eq(tc_tier_get(ctx, &g), TC_OK);
    cr_assert_eq(out.len, 2);
    /* Group commit: far fewer transactions than sets. */
    cr_assert_lt(stat_of("commit_batches"), N);
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    event_base_free(base);
    tc_tier_close(tier);
    tier = NULL;
    free(rs);
}

/* An async ctx keeps its read snapshot between gets; it must still see
 * every commit made since, by this process's writer or by anyone. */
Test(tier_lmdb, async_ctx_gets_see_every_commit)
{
    open_with("map_size=32M&sync=none");
    struct tc_tier_ctx *sync_ctx = ctx;
    struct event_base *base = event_base_new();
    struct tc_tier_ctx *actx;
    cr_assert_eq(tc_tier_ctx_init(tier, base, &actx), TC_OK);
    struct async_req a;
    memset(&a, 0, sizeof(a));
    for (int round = 0; round < 50; round++) {
        char v[16];
        int vl = snprintf(v, sizeof(v), "v%d", round);
        struct tc_tier_req g = {
            .key = "k", .key_len = 1, .out = &out, .now_ms = t0, .done = on_done, .arg = &a};
        enum tc_status st = tc_tier_get(actx, &g);
        if (round == 0) {
            cr_assert_eq(st, TC_ENOTFOUND);
        } else {
            char prev[16];
            int pl = snprintf(prev, sizeof(prev), "v%d", round - 1);
            cr_assert_eq(st, TC_OK, "round %d", round);
            cr_assert(out.len == (size_t)pl && memcmp(out.data, prev, out.len) == 0,
                      "round %d read a stale value", round);
        }
        /* Written through the other ctx, synchronously: committed now. */
        ctx = sync_ctx;
        cr_assert_eq(put_e("k", 1, v, (size_t)vl, 0), TC_OK);
        struct tc_tier_req g2 = {
            .key = "k", .key_len = 1, .out = &out, .now_ms = t0, .done = on_done, .arg = &a};
        cr_assert_eq(tc_tier_get(actx, &g2), TC_OK);
        cr_assert(out.len == (size_t)vl && memcmp(out.data, v, out.len) == 0,
                  "round %d: a get after the commit read an old snapshot", round);
    }
    /* Idle: the loop's timer releases the snapshot; gets still work after. */
    struct timeval tv = {0, 30000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    struct tc_tier_req g3 = {
        .key = "k", .key_len = 1, .out = &out, .now_ms = t0, .done = on_done, .arg = &a};
    cr_assert_eq(tc_tier_get(actx, &g3), TC_OK);
    tc_tier_ctx_dispose(actx);
    event_base_free(base);
}

Test(tier_lmdb, dispose_with_requests_in_flight_completes_each_once)
{
    open_with("map_size=32M&sync=always");
    struct tc_tier_ctx *sync_ctx = ctx;
    struct event_base *base = event_base_new();
    cr_assert_eq(tc_tier_ctx_init(tier, base, &ctx), TC_OK);
    enum { N = 2000 };
    struct async_req *rs = calloc(N, sizeof(*rs));
    enum tc_status first;
    issue_sets(rs, N, &first);
    tc_tier_ctx_dispose(ctx); /* the loop never ran */
    ctx = sync_ctx;
    int ok = 0, cancelled = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rs[i].calls, 1, "done() ran %d times for %d", rs[i].calls, i);
        cr_assert(rs[i].req.status == TC_OK || rs[i].req.status == TC_EUNAVAIL, "%d: %s", i,
                  tc_status_name(rs[i].req.status));
        if (rs[i].req.status == TC_OK) {
            ok++;
            cr_assert_eq(get_at(rs[i].key, strlen(rs[i].key), t0), TC_OK,
                         "%s acknowledged but missing", rs[i].key);
        } else {
            cancelled++;
        }
    }
    cr_assert_eq(ok + cancelled, N);
    event_base_free(base);
    free(rs);
}

/* A loop that outruns the disk is told to back off (TC_EAGAIN) instead of
 * queueing without bound; what was accepted still completes once. */
Test(tier_lmdb, a_full_write_queue_answers_eagain)
{
    /* Small batches: at 1024 ops per fsync the writer of new keys can keep
     * up with this loop on a fast disk, and nothing would be refused. */
    open_with("map_size=64M&sync=always&batch=16");
    struct tc_tier_ctx *sync_ctx = ctx;
    struct event_base *base = event_base_new();
    cr_assert_eq(tc_tier_ctx_init(tier, base, &ctx), TC_OK);
    enum { N = 100000 };
    struct async_req *rs = calloc(N, sizeof(*rs));
    int accepted = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        struct async_req *a = &rs[i];
        snprintf(a->key, sizeof(a->key), "q%d", i);
        a->req.key = a->key;
        a->req.key_len = strlen(a->key);
        a->req.value = "v";
        a->req.value_len = 1;
        a->req.now_ms = t0;
        a->req.hdr.encoding = TC_ENC_BINARY;
        a->req.done = on_done;
        a->req.arg = a;
        enum tc_status st = tc_tier_set(ctx, &a->req);
        if (st == TC_EINPROGRESS) {
            accepted++;
        } else {
            cr_assert_eq(st, TC_EAGAIN, "%d: %s", i, tc_status_name(st));
            refused++;
        }
    }
    cr_assert_gt(refused, 0, "100000 writes queued faster than fsyncs and none refused");
    cr_assert_eq(stat_of("queue_full"), (uint64_t)refused);
    cr_assert_leq(stat_of("write_queue"), 65536); /* reported; its value depends on the disk */
    tc_tier_ctx_dispose(ctx);
    ctx = sync_ctx;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(rs[i].calls, rs[i].req.status == TC_EAGAIN ? 0 : 1, "%d ran done() %d times",
                     i, rs[i].calls);
    }
    event_base_free(base);
    free(rs);
}

/* ---- bad input --------------------------------------------------------------- */

static void expect_open_error(const char *u, enum tc_status want, const char *needle)
{
    char err[512] = "";
    struct tc_tier *t = NULL;
    enum tc_status st = tc_tier_open(NULL, u, &t, err, sizeof(err));
    cr_assert_eq(st, want, "%s: %s (%s)", u, tc_status_name(st), err);
    cr_assert_null(t);
    cr_assert(strstr(err, needle) != NULL, "%s: message '%s' does not name '%s'", u, err, needle);
}

Test(tier_lmdb, bad_uris_are_refused_with_a_clear_message)
{
    char u[600], file[300];
    snprintf(file, sizeof(file), "%s/plainfile", dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(u, sizeof(u), "lmdb://%s", file);
    expect_open_error(u, TC_EINVAL, file);
    snprintf(u, sizeof(u), "lmdb://%s/sub", file);
    expect_open_error(u, TC_EINVAL, "plainfile");
    expect_open_error("lmdb://", TC_EINVAL, "directory");
    snprintf(u, sizeof(u), "lmdb://%s/x?sync=sometimes", dir);
    expect_open_error(u, TC_EINVAL, "sync");
    snprintf(u, sizeof(u), "lmdb://%s/x?high_water=0.5&low_water=0.6", dir);
    expect_open_error(u, TC_EINVAL, "low_water");
    snprintf(u, sizeof(u), "lmdb://%s/x?map_size=8M&max_item=4M", dir);
    expect_open_error(u, TC_EINVAL, "max_item");
    snprintf(u, sizeof(u), "lmdb://%s/x?batch=0", dir);
    expect_open_error(u, TC_EINVAL, "batch");
    snprintf(u, sizeof(u), "lmdb://%s/x?map_size=10", dir);
    expect_open_error(u, TC_EINVAL, "map_size");
    unlink(file);
    /* A header the item codec refuses fails that set only, synchronously,
     * and leaves the tier healthy. */
    snprintf(u, sizeof(u), "lmdb://%s/hdr?map_size=8M", dir);
    char err0[512];
    cr_assert_eq(tc_tier_open(NULL, u, &tier, err0, sizeof(err0)), TC_OK, "%s", err0);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    struct tc_tier_req bad = {.key = "h", .key_len = 1, .value = "v", .value_len = 1, .now_ms = t0};
    bad.hdr.encoding = 99;
    cr_assert_eq(tc_tier_set(ctx, &bad), TC_EINVAL);
    cr_assert_eq(get_at("h", 1, t0), TC_ENOTFOUND);
    cr_assert_eq(tc_tier_health(tier, NULL, 0), TC_HEALTH_OK);
    close_tier();
    snprintf(u, sizeof(u), "%s/hdr/data.mdb", dir);
    unlink(u);
    snprintf(u, sizeof(u), "%s/hdr/lock.mdb", dir);
    unlink(u);
    snprintf(u, sizeof(u), "%s/hdr", dir);
    rmdir(u);
    /* The directory is created when missing, parents included. */
    snprintf(u, sizeof(u), "lmdb://%s/new/deeper?map_size=8M", dir);
    char err[512];
    cr_assert_eq(tc_tier_open(NULL, u, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    close_tier();
    char p[600];
    snprintf(p, sizeof(p), "%s/new/deeper/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/new/deeper/lock.mdb", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/new/deeper", dir);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/new", dir);
    rmdir(p);
}

/* Bytes in the file are untrusted: a record that does not decode is a miss,
 * counted, never a crash, and the key can be written again. */
Test(tier_lmdb, corrupt_records_are_counted_misses)
{
    open_with("map_size=16M&sync=none");
    char longk[800];
    memset(longk, 'z', sizeof(longk));
    cr_assert_eq(put_e("a", 1, "va", 2, 0), TC_OK);
    cr_assert_eq(put_e("b", 1, "vb", 2, 0), TC_OK);
    cr_assert_eq(put_e("c", 1, "vc", 2, 0), TC_OK);
    cr_assert_eq(put_e(longk, sizeof(longk), "vz", 2, 0), TC_OK);
    cr_assert_eq(put_e("d", 1, "val-d", 5, 0), TC_OK);
    cr_assert_eq(put_e("e", 1, "val-e", 5, 0), TC_OK);
    cr_assert_eq(put_e("f", 1, "val-f", 5, 0), TC_OK);
    close_tier();

    /* Damage the records behind the tier's back. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 16u << 20);
    cr_assert_eq(mdb_env_open(env, dir, 0, 0640), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "tc_data", 0, &dbi), 0);
    MDB_val k = {1, "a"}, v = {5, "short"};
    cr_assert_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    /* b: a plausible prefix, then a header with a flipped byte. */
    MDB_val kb = {1, "b"}, vb;
    cr_assert_eq(mdb_get(txn, dbi, &kb, &vb), 0);
    unsigned char *copy = malloc(vb.mv_size);
    memcpy(copy, vb.mv_data, vb.mv_size);
    copy[10 + 5] ^= 0x40;
    MDB_val vb2 = {vb.mv_size, copy};
    cr_assert_eq(mdb_put(txn, dbi, &kb, &vb2, 0), 0);
    /* c: claims a full key longer than the record. */
    MDB_val kc = {1, "c"}, vc;
    cr_assert_eq(mdb_get(txn, dbi, &kc, &vc), 0);
    unsigned char *copy2 = malloc(vc.mv_size);
    memcpy(copy2, vc.mv_data, vc.mv_size);
    copy2[8] = 0xff;
    copy2[9] = 0xff;
    MDB_val vc2 = {vc.mv_size, copy2};
    cr_assert_eq(mdb_put(txn, dbi, &kc, &vc2, 0), 0);
    /* The long key: its stored full key no longer matches. */
    MDB_cursor *cur;
    cr_assert_eq(mdb_cursor_open(txn, dbi, &cur), 0);
    MDB_val ck, cv;
    unsigned char *copy3 = NULL, ckey[600];
    size_t cklen = 0;
    MDB_cursor_op op = MDB_FIRST;
    while (mdb_cursor_get(cur, &ck, &cv, op) == 0) {
        op = MDB_NEXT;
        if (ck.mv_size > 100 && ck.mv_size <= sizeof(ckey)) {
            copy3 = malloc(cv.mv_size);
            memcpy(copy3, cv.mv_data, cv.mv_size);
            copy3[10 + 400] = 'y';
            memcpy(ckey, ck.mv_data, ck.mv_size);
            cklen = ck.mv_size;
            break;
        }
    }
    mdb_cursor_close(cur);
    cr_assert_not_null(copy3, "no digested record found");
    MDB_val ck2 = {cklen, ckey}, cv2 = {cv.mv_size, copy3};
    cr_assert_eq(mdb_put(txn, dbi, &ck2, &cv2, 0), 0);
    /* d: one value byte changed; header intact (issue 12: served as "Xal-d"). */
    MDB_val kd = {1, "d"}, vd;
    cr_assert_eq(mdb_get(txn, dbi, &kd, &vd), 0);
    unsigned char copy4[128];
    cr_assert_leq(vd.mv_size, sizeof(copy4));
    memcpy(copy4, vd.mv_data, vd.mv_size);
    copy4[vd.mv_size - 5] = 'X';
    MDB_val vd2 = {vd.mv_size, copy4};
    cr_assert_eq(mdb_put(txn, dbi, &kd, &vd2, 0), 0);
    /* f: holds e's record, byte for byte (issue 12: served as f's value). */
    MDB_val ke = {1, "e"}, ve, kf = {1, "f"};
    cr_assert_eq(mdb_get(txn, dbi, &ke, &ve), 0);
    unsigned char copy5[128];
    cr_assert_leq(ve.mv_size, sizeof(copy5));
    memcpy(copy5, ve.mv_data, ve.mv_size);
    MDB_val ve2 = {ve.mv_size, copy5};
    cr_assert_eq(mdb_put(txn, dbi, &kf, &ve2, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
    free(copy2);
    free(copy3);

    char err[512];
    cr_assert_eq(tc_tier_open(NULL, uri, &tier, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    cr_assert_eq(get_at("a", 1, t0), TC_ECORRUPT);
    cr_assert_eq(get_at("b", 1, t0), TC_ECORRUPT);
    cr_assert_eq(get_at("c", 1, t0), TC_ECORRUPT);
    cr_assert_eq(get_at(longk, sizeof(longk), t0), TC_ECORRUPT);
    cr_assert_eq(get_at("d", 1, t0), TC_ECORRUPT);
    cr_assert_eq(get_at("f", 1, t0), TC_ECORRUPT);
    cr_assert_eq(get_at("e", 1, t0), TC_OK);
    cr_assert_eq(stat_of("corrupt"), 6);
    /* The same records in one batch, around a good one. */
    cr_assert_eq(put_e("good", 4, "ok", 2, 0), TC_OK);
    const char *bk[5] = {"a", "b", "good", "c", longk};
    size_t bl[5] = {1, 1, 4, 1, sizeof(longk)};
    struct tc_tier_req br[5], *bp[5];
    struct tc_buf bo[5];
    for (int i = 0; i < 5; i++) {
        tc_buf_init(&bo[i]);
        br[i] = (struct tc_tier_req){.key = bk[i], .key_len = bl[i], .out = &bo[i], .now_ms = t0};
        bp[i] = &br[i];
    }
    tc_tier_get_many(ctx, bp, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(br[i].status, i == 2 ? TC_OK : TC_ECORRUPT, "batch key %d", i);
    }
    cr_assert_eq(bo[2].len, 2);
    cr_assert(memcmp(bo[2].data, "ok", 2) == 0);
    for (int i = 0; i < 5; i++) {
        tc_buf_deinit(&bo[i]);
    }
    cr_assert_eq(stat_of("corrupt"), 10);
    /* Writable again, and a full sweep copes with what is left. */
    cr_assert_eq(put_e("a", 1, "new", 3, 0), TC_OK);
    cr_assert_eq(get_at("a", 1, t0), TC_OK);
    cr_assert_eq(out.len, 3);
    uint64_t removed = 0;
    cr_assert_eq(tc_tier_sweep(tier, t0, 1000, &removed), TC_OK);
    struct tc_tier_req del = {.key = "b", .key_len = 1, .now_ms = t0};
    cr_assert_eq(tc_tier_del(ctx, &del), TC_OK);
}

Test(tier_lmdb, stats_and_health)
{
    open_with("map_size=16M&sync=periodic&sync_interval_ms=10");
    char k[16];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        cr_assert_eq(put_e(k, strlen(k), "v", 1, 0), TC_OK);
    }
    cr_assert_eq(stat_of("items"), 50);
    cr_assert_eq(stat_of("bytes_capacity"), 16u << 20);
    cr_assert_gt(stat_of("bytes_used"), 0);
    cr_assert_geq(stat_of("commit_ops"), 50);
    cr_assert_gt(stat_of("commit_batches"), 0);
    cr_assert_geq(stat_of("commit_batch_mean"), 1);
    cr_assert_eq(stat_of("evictions"), 0);
    char detail[128];
    cr_assert_eq(tc_tier_health(tier, detail, sizeof(detail)), TC_HEALTH_OK, "%s", detail);
    /* sync=periodic really syncs on its interval. */
    for (int i = 0; i < 200 && stat_of("syncs") == 0; i++) {
        struct timespec ms5 = {0, 5000000};
        nanosleep(&ms5, NULL);
    }
    cr_assert_gt(stat_of("syncs"), 0);
}

/* ---- damaged environments (issue 12) ------------------------------------------ */

enum { DN = 2000 }; /* keys: enough for a tc_data tree of depth 2 */

static void key_of(size_t i, char *k, size_t cap)
{
    snprintf(k, cap, "key:%05zu", i);
}

/* "v-" + the key, padded to a length that depends on i; every 97th value
 * takes overflow pages. A value served for another key, or altered, shows. */
static size_t value_of(size_t i, char *v, size_t cap)
{
    char k[32];
    key_of(i, k, sizeof(k));
    size_t len = i % 97 == 0 ? 6000 : 20 + (i * 37) % 300;
    int h = snprintf(v, cap, "v-%s|", k);
    for (size_t j = (size_t)h; j < len && j < cap; j++) {
        v[j] = (char)('a' + (i + j) % 26);
    }
    return len < cap ? len : cap;
}

static void fill_keys(size_t n)
{
    open_with("map_size=16M&sync=none");
    char k[32], v[8192];
    for (size_t i = 0; i < n; i++) {
        key_of(i, k, sizeof(k));
        size_t vl = value_of(i, v, sizeof(v));
        cr_assert_eq(put_e(k, strlen(k), v, vl, 0), TC_OK);
    }
    close_tier();
}

struct tally {
    size_t hits, misses, wrong, errors;
};

/* Gets every key; any status but a hit, a miss, a corrupt record (a miss
 * too) or "unavailable" (down) is counted an error. Never asserts, so that
 * forked children can use it. */
static struct tally read_back(struct tc_tier_ctx *c, size_t n, struct tc_buf *b)
{
    struct tally t = {0, 0, 0, 0};
    char k[32], v[8192];
    for (size_t i = 0; i < n; i++) {
        key_of(i, k, sizeof(k));
        struct tc_tier_req r = {.key = k, .key_len = strlen(k), .out = b, .now_ms = t0};
        enum tc_status st = tc_tier_get(c, &r);
        if (st == TC_OK) {
            size_t vl = value_of(i, v, sizeof(v));
            t.hits++;
            t.wrong += b->len != vl || memcmp(b->data, v, vl) != 0;
        } else if (st == TC_ENOTFOUND || st == TC_EUNAVAIL || st == TC_ECORRUPT) {
            t.misses++;
        } else {
            t.errors++;
        }
    }
    return t;
}

static void path_in(char *p, size_t cap, const char *name)
{
    snprintf(p, cap, "%s/%s", dir, name);
}

/* Number of data.mdb.corrupt-* files in dir, and the size of one. */
static int moved_aside(off_t *size)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "data.mdb.corrupt-", 17) == 0) {
            char p[600];
            struct stat sb;
            path_in(p, sizeof(p), e->d_name);
            if (size != NULL && stat(p, &sb) == 0) {
                *size = sb.st_size;
            }
            n++;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void drop_moved_aside(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "data.mdb.corrupt-", 17) == 0) {
            char p[600];
            path_in(p, sizeof(p), e->d_name);
            unlink(p);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

/* Opens uri (set by fill_keys) with the default on_corrupt; *err gets the
 * crit news when the environment was moved aside. */
static void reopen(char *err, size_t errlen)
{
    err[0] = '\0';
    enum tc_status st = tc_tier_open(NULL, uri, &tier, err, errlen);
    cr_assert_eq(st, TC_OK, "open %s: %s: %s", uri, tc_status_name(st), err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
}

/* After a move aside: empty, healthy (health says what happened), writable. */
static void expect_fresh(const char *err, const char *why)
{
    cr_assert(strstr(err, "damaged") != NULL && strstr(err, "moved") != NULL,
              "%s: no crit news of the move: '%s'", why, err);
    struct tally t = read_back(ctx, DN, &out);
    cr_assert_eq(t.hits, 0, "%s: %zu hits from a new environment", why, t.hits);
    cr_assert_eq(t.errors, 0, "%s", why);
    char detail[700];
    cr_assert_eq(tc_tier_health(tier, detail, sizeof(detail)), TC_HEALTH_OK, "%s: %s", why, detail);
    cr_assert(strstr(detail, "damaged") != NULL, "%s: health detail '%s'", why, detail);
    cr_assert_eq(put_e("after", 5, "v-after", 7, 0), TC_OK);
    cr_assert_eq(get_at("after", 5, t0), TC_OK);
}

/* A data.mdb cut short while no server ran (a full disk, a bad copy, a
 * power cut on a file system that lost the tail) used to open, and the
 * first get died of SIGBUS inside mdb_get. At every cut the environment is
 * now either moved aside at open, or (only when the lost tail held free
 * pages) still whole. */
Test(tier_lmdb, truncated_data_mdb_is_moved_aside_and_reads_miss)
{
    fill_keys(DN);
    uint64_t ps, last;
    cr_assert_eq(tc_test_lmdb_geometry(dir, &ps, &last), 0);
    uint64_t used = (last + 1) * ps;
    char data[600], tmpl[600];
    path_in(data, sizeof(data), "data.mdb");
    path_in(tmpl, sizeof(tmpl), "template");
    cr_assert_eq(tc_test_copy_file(data, tmpl), 0);
    const uint64_t cuts[] = {100, ps + 7, 2 * ps, used / 3, used * 2 / 3 + 1, used - ps};
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        char why[64], err[1024];
        snprintf(why, sizeof(why), "cut at %llu of %llu", (unsigned long long)cuts[c],
                 (unsigned long long)used);
        cr_assert_eq(tc_test_copy_file(tmpl, data), 0);
        cr_assert_eq(truncate(data, (off_t)cuts[c]), 0);
        reopen(err, sizeof(err));
        off_t msize = -1;
        int moved = moved_aside(&msize);
        if (cuts[c] < used - ps) {
            cr_assert_eq(moved, 1, "%s: not moved aside (%s)", why, err);
        }
        if (moved) {
            cr_assert_eq((uint64_t)msize, cuts[c], "%s: the moved file was changed", why);
            expect_fresh(err, why);
        } else {
            /* Only free pages were lost: everything is still there. */
            cr_assert_eq(err[0], '\0', "%s: %s", why, err);
            struct tally t = read_back(ctx, DN, &out);
            cr_assert_eq(t.hits, DN, "%s: kept, but %zu of %d keys read", why, t.hits, DN);
            cr_assert_eq(t.wrong, 0, "%s", why);
        }
        close_tier();
        drop_moved_aside();
    }
}

Test(tier_lmdb, on_corrupt_fail_refuses_a_damaged_environment)
{
    fill_keys(DN);
    char data[600], u[700], err[1024] = "";
    path_in(data, sizeof(data), "data.mdb");
    cr_assert_eq(truncate(data, 3 * 4096 + 5), 0);
    snprintf(u, sizeof(u), "lmdb://%s?map_size=16M&sync=none&on_corrupt=fail", dir);
    struct tc_tier *t = NULL;
    enum tc_status st = tc_tier_open(NULL, u, &t, err, sizeof(err));
    cr_assert_eq(st, TC_ECORRUPT, "%s: %s", tc_status_name(st), err);
    cr_assert_null(t);
    cr_assert(strstr(err, "damaged") && strstr(err, "on_corrupt=fail") && strstr(err, "data.mdb"),
              "unclear message: %s", err);
    struct stat sb;
    cr_assert_eq(stat(data, &sb), 0, "data.mdb must stay where it is");
    cr_assert_eq(sb.st_size, 3 * 4096 + 5, "data.mdb must stay as it is");
    cr_assert_eq(moved_aside(NULL), 0);
    snprintf(u, sizeof(u), "lmdb://%s?on_corrupt=sometimes", dir);
    expect_open_error(u, TC_EINVAL, "on_corrupt");
}

/* Meta pages LMDB refuses (MDB_INVALID) kept the server from starting; one
 * with a page size of 0 made mdb_env_open divide by zero; a root page past
 * the end failed the first transaction (MDB_PAGE_NOTFOUND). Each is now
 * moved aside. */
Test(tier_lmdb, garbage_meta_pages_are_moved_aside)
{
    fill_keys(DN);
    char data[600], tmpl[600];
    path_in(data, sizeof(data), "data.mdb");
    path_in(tmpl, sizeof(tmpl), "template");
    cr_assert_eq(tc_test_copy_file(data, tmpl), 0);
    uint64_t ps, last;
    cr_assert_eq(tc_test_lmdb_geometry(dir, &ps, &last), 0);
    unsigned char *pg = malloc(ps);
    static const char *const what[] = {"both meta pages garbage", "meta page 1 magic zeroed",
                                       "page size 0 in meta page 0",
                                       "main root past the last page in both"};
    for (int c = 0; c < 4; c++) {
        cr_assert_eq(tc_test_copy_file(tmpl, data), 0);
        for (uint64_t p = 0; p < 2; p++) {
            cr_assert_eq(tc_test_lmdb_page_read(dir, p, pg, ps), 0);
            if (c == 0) {
                for (size_t i = 0; i < ps; i++) {
                    pg[i] = (unsigned char)(i * 131 + p * 7 + 3);
                }
            } else if (c == 1 && p == 1) {
                memset(pg + 16, 0, 4);
            } else if (c == 2 && p == 0) {
                memset(pg + 16 + 24, 0, 4);
            } else if (c == 3) {
                uint64_t bad = last + 1000;
                memcpy(pg + 16 + 72 + 40, &bad, 8);
            }
            cr_assert_eq(tc_test_lmdb_page_write(dir, p, pg, ps), 0);
        }
        char err[1024];
        reopen(err, sizeof(err));
        cr_assert_eq(moved_aside(NULL), 1, "%s: not moved aside", what[c]);
        expect_fresh(err, what[c]);
        close_tier();
        drop_moved_aside();
    }
    free(pg);
}

#define EXIT_LMDB_CRASH 100 /* + the signal (0: a sanitizer report): died inside liblmdb */

/* Whether the frames of a dying child, from the innermost, reach liblmdb
 * before tiercache's code: first skip the frames of the handler that asks
 * (this binary, behind a sanitizer's backtrace interceptor), then those of
 * libc and the sanitizers (memcpy, a report), and look at the first frame
 * left. */
static int died_in_lmdb(void)
{
    void *fr[64];
    int n = backtrace(fr, 64), i = 0;
    Dl_info di;
    const char *self = NULL;
    if (dladdr((void *)(uintptr_t)died_in_lmdb, &di) != 0) {
        self = di.dli_fname;
    }
#define IS_SELF(k)                                                                                 \
    (dladdr(fr[k], &di) != 0 && di.dli_fname != NULL && self != NULL &&                            \
     strcmp(di.dli_fname, self) == 0)
    while (i < n && !IS_SELF(i)) {
        i++; /* a sanitizer's backtrace interceptor */
    }
    while (i < n && IS_SELF(i)) {
        i++;
    }
#undef IS_SELF
    for (; i < n; i++) {
        if (dladdr(fr[i], &di) == 0 || di.dli_fname == NULL) {
            continue;
        }
        const char *f = di.dli_fname;
        if (strstr(f, "libc.so") || strstr(f, "libasan") || strstr(f, "libubsan") ||
            strstr(f, "vdso")) {
            continue;
        }
        if (strstr(f, "liblmdb") != NULL) {
            return 1;
        }
        break;
    }
    backtrace_symbols_fd(fr, n, 2); /* ours: show where */
    return 0;
}

/* A damaged-file round's child: a fault inside liblmdb is LMDB trusting a
 * damaged page (e.g. a flipped F_DUPDATA flag sends mdb_cursor_set to the
 * NULL xcursor of a plain database), which the tier cannot prevent without
 * a fault handler of its own; say so by the exit code. Any other fault is
 * ours: die of it. (LMDB's assertions abort; the tier's assertion hook
 * leaves its damage marker, which the parent reads.) */
static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (died_in_lmdb()) {
        _exit(EXIT_LMDB_CRASH + sig);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

#if defined(__SANITIZE_ADDRESS__)
/* The same for a sanitizer report (a read past a buffer inside LMDB). */
static void on_sanitizer_death(void)
{
    if (died_in_lmdb()) {
        _exit(EXIT_LMDB_CRASH);
    }
}
#endif

/* Bit flips and zeroed pages anywhere in a closed environment, then, in a
 * child per round, the open, a full read-back (phase 1), and a few writes,
 * a sweep and another read-back (phase 2). Opening and reading must never
 * crash in tiercache's code, and no value may be wrong (values name their
 * key; the item check covers key and value). Crashes inside LMDB are
 * counted and printed (see on_fault), and so are crashes in phase 2 outside
 * it: writing over a damaged page LMDB can hand out a wild pointer (mdb_put
 * with MDB_RESERVE returns space computed from the damaged page header),
 * which the writer then fills; the stack printed shows where. Since the
 * open checks every page (tiers/lmdb_check.h), neither is expected. */
Test(tier_lmdb, bit_flips_and_zeroed_pages_never_crash)
{
    fill_keys(DN);
    char data[600], tmpl[600];
    path_in(data, sizeof(data), "data.mdb");
    path_in(tmpl, sizeof(tmpl), "template");
    cr_assert_eq(tc_test_copy_file(data, tmpl), 0);
    uint64_t ps, last;
    cr_assert_eq(tc_test_lmdb_geometry(dir, &ps, &last), 0);
    uint64_t size = (last + 1) * ps;
    const char *es = getenv("TC_TEST_SEED"); /* to replay a round that failed */
    unsigned seed = es != NULL ? (unsigned)strtoul(es, NULL, 10) : (unsigned)time(NULL);
    srand(seed);
    enum { ROUNDS = 40, FLIPS = 25 };
    size_t crashes = 0, lmdb_crashes = 0, write_crashes = 0, hits = 0, wrong = 0, moved = 0,
           failed_opens = 0;
    for (int round = 0; round < ROUNDS; round++) {
        cr_assert_eq(tc_test_copy_file(tmpl, data), 0);
        drop_moved_aside();
        char markp[600];
        path_in(markp, sizeof(markp), "tiercache-damaged");
        unlink(markp);
        if (round % 2 == 0) {
            /* One flip (most land in a value: the item check's) or many
             * (most hit structure: the open's check). */
            int flips = round % 4 == 0 ? 1 : FLIPS;
            for (int f = 0; f < flips; f++) {
                uint64_t off = ((uint64_t)rand() << 16 ^ (uint64_t)rand()) % size;
                cr_assert_eq(tc_test_flip_bit(data, off, (unsigned)rand()), 0);
            }
        } else {
            /* Any page, meta pages included (rounds 1 and 3 always hit one). */
            unsigned char *z = calloc(1, ps);
            for (int f = 0; f < 2; f++) {
                uint64_t p = (uint64_t)rand() % (last + 1);
                if (f == 0 && round < 4) {
                    p = (uint64_t)round / 2;
                }
                cr_assert_eq(tc_test_lmdb_page_write(dir, p, z, ps), 0);
            }
            free(z);
        }
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_sigaction = on_fault;
            sa.sa_flags = SA_SIGINFO;
            sigaction(SIGSEGV, &sa, NULL);
            sigaction(SIGBUS, &sa, NULL);
            sigaction(SIGFPE, &sa, NULL);
#if defined(__SANITIZE_ADDRESS__)
            __sanitizer_set_death_callback(on_sanitizer_death);
#endif
            char err[1024] = "";
            struct tc_tier *t;
            struct tc_tier_ctx *c;
            struct tc_buf b = TC_BUF_INIT;
            size_t res[4] = {0, 0, 0, 0};
            if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
                res[3] = 1;
                ssize_t w = write(fds[1], res, sizeof(res));
                (void)w;
                _exit(0);
            }
            if (tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
                _exit(3);
            }
            struct tally ty = read_back(c, DN, &b);
            res[0] = ty.hits;
            res[1] = ty.wrong;
            res[2] = err[0] != '\0';
            if (write(fds[1], res, sizeof(res)) != (ssize_t)sizeof(res)) {
                _exit(4);
            }
            for (int i = 0; i < 50; i++) {
                char k[32];
                key_of((size_t)i * 41, k, sizeof(k));
                struct tc_tier_req r = {
                    .key = k, .key_len = strlen(k), .value = "x", .value_len = 1, .now_ms = t0};
                r.hdr.encoding = TC_ENC_BINARY;
                tc_tier_set(c, &r);
            }
            uint64_t removed = 0;
            tc_tier_sweep(t, t0 + 1, 1000, &removed);
            read_back(c, DN, &b);
            if (write(fds[1], "2", 1) != 1) {
                _exit(4);
            }
            tc_buf_deinit(&b);
            tc_tier_ctx_dispose(c);
            tc_tier_close(t);
            _exit(0);
        }
        close(fds[1]);
        size_t res[4] = {0, 0, 0, 0};
        char two = 0;
        ssize_t got = read(fds[0], res, sizeof(res));
        int phase2 = got == (ssize_t)sizeof(res) && res[3] == 0 && read(fds[0], &two, 1) == 1;
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) >= EXIT_LMDB_CRASH) {
            int sig = WEXITSTATUS(status) - EXIT_LMDB_CRASH;
            lmdb_crashes++;
            fprintf(stderr, "bit flips: round %d (seed %u) died of %s inside liblmdb\n", round,
                    seed, sig ? strsignal(sig) : "a sanitizer report");
            continue;
        }
        char markf[600], mtext[256] = "";
        path_in(markf, sizeof(markf), "tiercache-damaged");
        FILE *mf = fopen(markf, "r");
        if (mf != NULL) {
            size_t ml = fread(mtext, 1, sizeof(mtext) - 1, mf);
            mtext[ml] = '\0';
            fclose(mf);
        }
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT &&
            strstr(mtext, "Assertion") != NULL) {
            /* LMDB asserted (and aborted) on the damage; the marker it left
             * through the tier's hook must make the next open recover. */
            lmdb_crashes++;
            fprintf(stderr, "bit flips: round %d (seed %u): %s\n", round, seed, mtext);
            char err[1024];
            reopen(err, sizeof(err));
            cr_assert_eq(moved_aside(NULL), 1, "round %d: not moved aside after %s", round, mtext);
            close_tier();
            continue;
        }
        int died = WIFSIGNALED(status) || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        if (died && got == (ssize_t)sizeof(res) && !phase2) {
            write_crashes++; /* after the reads: see the comment above */
            fprintf(stderr, "bit flips: round %d (seed %u) died writing, of %s\n", round, seed,
                    WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "an early exit");
        } else if (died || got != (ssize_t)sizeof(res)) {
            crashes++;
            fprintf(stderr, "bit flips: round %d (seed %u) ended by %s while opening or reading\n",
                    round, seed,
                    WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "an early exit");
            continue;
        }
        hits += res[0];
        wrong += res[1];
        moved += res[2];
        failed_opens += res[3];
    }
    fprintf(stderr,
            "bit flips (seed %u): %d rounds; %zu crashed in tiercache opening or reading, %zu "
            "inside liblmdb, %zu in tiercache writing; %zu moved aside at open, %zu did not "
            "open; %zu hits, %zu wrong values\n",
            seed, ROUNDS, crashes, lmdb_crashes, write_crashes, moved, failed_opens, hits, wrong);
    cr_assert_eq(crashes, 0, "%zu of %d rounds crashed (seed %u)", crashes, ROUNDS, seed);
    cr_assert_eq(failed_opens, 0, "with on_corrupt=recreate every round must open");
    cr_assert_eq(wrong, 0, "%zu wrong values served (seed %u)", wrong, seed);
}

/* Damage that comes while the tier runs (a disk going bad under it, a stray
 * write by another program): written into data.mdb behind the open tier,
 * below the root of tc_data, so that LMDB sees it through its shared map.
 * The get or commit that meets it marks the tier down (health DOWN with the
 * reason, then TC_EUNAVAIL without touching the map) and leaves the marker
 * that makes the next open move the environment aside. */
static void damage_below_root(int kind)
{
    uint64_t ps, last, root;
    unsigned depth;
    cr_assert_eq(tc_test_lmdb_geometry(dir, &ps, &last), 0);
    cr_assert_eq(tc_test_lmdb_db_root(dir, "tc_data", &root, &depth), 0);
    cr_assert_geq(depth, 2, "the test needs a branch page at the root");
    unsigned char *pg = malloc(ps);
    cr_assert_eq(tc_test_lmdb_page_read(dir, root, pg, ps), 0);
    cr_assert(tc_test_lmdb_page_is_branch(pg));
    unsigned n = tc_test_lmdb_page_nkeys(pg);
    cr_assert_geq(n, 3);
    uint64_t child = tc_test_lmdb_branch_child(pg, 1);
    if (kind == 0) {
        tc_test_lmdb_set_branch_child(pg, 1, last + 1000); /* MDB_PAGE_NOTFOUND */
        cr_assert_eq(tc_test_lmdb_page_write(dir, root, pg, ps), 0);
    } else if (kind == 1) {
        memset(pg, 0, ps); /* a page of the wrong type: MDB_CORRUPTED */
        cr_assert_eq(tc_test_lmdb_page_write(dir, child, pg, ps), 0);
    } else {
        for (unsigned i = 0; i < n; i++) {
            tc_test_lmdb_set_branch_child(pg, i, last + 1000 + i);
        }
        cr_assert_eq(tc_test_lmdb_page_write(dir, root, pg, ps), 0);
    }
    free(pg);
}

static void runtime_damage(int kind, const char *expect_rc)
{
    fill_keys(DN);
    char err[1024];
    reopen(err, sizeof(err));
    cr_assert_eq(err[0], '\0', "a sound environment: %s", err);
    damage_below_root(kind);
    cr_assert_eq(tc_tier_health(tier, NULL, 0), TC_HEALTH_OK);
    struct tally t = read_back(ctx, DN, &out);
    cr_assert_gt(t.hits, 0, "keys before the damaged subtree still read");
    cr_assert_eq(t.wrong, 0);
    char detail[512];
    cr_assert_eq(tc_tier_health(tier, detail, sizeof(detail)), TC_HEALTH_DOWN, "%s", detail);
    cr_assert(strstr(detail, expect_rc) != NULL, "health detail '%s' lacks %s", detail, expect_rc);
    cr_assert_eq(get_at("key:00000", 9, t0), TC_EUNAVAIL, "down: no more reads of the map");
    cr_assert_eq(put_e("new", 3, "v", 1, 0), TC_EUNAVAIL);
    uint64_t removed = 0;
    cr_assert_eq(tc_tier_sweep(tier, t0, 100, &removed), TC_EUNAVAIL);
    char mark[600];
    path_in(mark, sizeof(mark), "tiercache-damaged");
    cr_assert_eq(access(mark, F_OK), 0, "no damage marker");
    close_tier();
    reopen(err, sizeof(err));
    cr_assert(strstr(err, "marked damaged at run time") != NULL, "reopen: '%s'", err);
    cr_assert_eq(moved_aside(NULL), 1);
    cr_assert_neq(access(mark, F_OK), 0, "the marker goes with the move");
    expect_fresh(err, "reopen after run-time damage");
}

Test(tier_lmdb, page_not_found_at_run_time_marks_the_tier_down)
{
    runtime_damage(0, "MDB_PAGE_NOTFOUND");
}

Test(tier_lmdb, corrupted_page_at_run_time_marks_the_tier_down)
{
    runtime_damage(1, "MDB_CORRUPTED");
}

/* The writer meets the damage first: the commit fails, the tier goes down. */
Test(tier_lmdb, damage_met_by_a_commit_marks_the_tier_down)
{
    fill_keys(DN);
    char err[1024];
    reopen(err, sizeof(err));
    damage_below_root(2);
    enum tc_status st = put_e("key:00005", 9, "v", 1, 0);
    cr_assert_neq(st, TC_OK);
    char detail[512];
    cr_assert_eq(tc_tier_health(tier, detail, sizeof(detail)), TC_HEALTH_DOWN, "%s", detail);
    cr_assert(strstr(detail, "commit") != NULL, "%s", detail);
}

/* Moving aside an environment another process has open would pull it from
 * under that process: open fails instead, naming the process, and leaves
 * the file; once that process is gone the next open moves it aside. */
Test(tier_lmdb, a_damaged_environment_in_use_elsewhere_is_not_moved)
{
    fill_keys(DN);
    int go[2], ready[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(ready), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(go[1]);
        close(ready[0]);
        struct tc_tier *t;
        char err[512];
        if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
            _exit(2);
        }
        char b = 1, x;
        if (write(ready[1], &b, 1) != 1 || read(go[0], &x, 1) < 0) {
            _exit(3);
        }
        /* Exit without closing: the kernel drops its locks, as for a crash. */
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char b;
    cr_assert_eq(read(ready[0], &b, 1), 1, "the other process did not open the environment");
    /* Damage seen by the other process at run time (its marker). */
    char mark[600];
    path_in(mark, sizeof(mark), "tiercache-damaged");
    FILE *f = fopen(mark, "w");
    cr_assert_not_null(f);
    fputs("a get failed: MDB_CORRUPTED", f);
    fclose(f);
    char err[1024] = "", want[32];
    struct tc_tier *t = NULL;
    enum tc_status st = tc_tier_open(NULL, uri, &t, err, sizeof(err));
    cr_assert_neq(st, TC_OK, "opened a damaged environment another process uses");
    snprintf(want, sizeof(want), "process %d", (int)pid);
    cr_assert(strstr(err, want) != NULL && strstr(err, "not moved") != NULL,
              "message does not name %s: %s", want, err);
    cr_assert_eq(moved_aside(NULL), 0);
    char data[600];
    path_in(data, sizeof(data), "data.mdb");
    cr_assert_eq(access(data, F_OK), 0);
    cr_assert_eq(write(go[1], "x", 1), 1);
    close(go[1]);
    int status;
    waitpid(pid, &status, 0);
    close(ready[0]);
    reopen(err, sizeof(err));
    cr_assert_eq(moved_aside(NULL), 1);
    expect_fresh(err, "after the other process left");
}

/* Pages a transaction allocated at the end of the file and freed before its
 * commit are never written: the file is shorter than its last page, and
 * that is not damage. Everything must still be there, nothing moved. */
Test(tier_lmdb, unwritten_free_pages_at_the_end_are_not_damage)
{
    fill_keys(DN);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 16u << 20);
    cr_assert_eq(mdb_env_open(env, dir, 0, 0640), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "scratch", MDB_CREATE, &dbi), 0);
    static char big[256 << 10];
    MDB_val k = {3, "big"}, v = {sizeof(big), big};
    cr_assert_eq(mdb_put(txn, dbi, &k, &v, 0), 0); /* overflow pages from the end */
    cr_assert_eq(mdb_del(txn, dbi, &k, NULL), 0);  /* freed before they are written */
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    uint64_t ps, last;
    cr_assert_eq(tc_test_lmdb_geometry(dir, &ps, &last), 0);
    char data[600];
    path_in(data, sizeof(data), "data.mdb");
    struct stat sb;
    cr_assert_eq(stat(data, &sb), 0);
    cr_assert_lt((uint64_t)sb.st_size, (last + 1) * ps, "the scenario needs a short file");
    char err[1024];
    reopen(err, sizeof(err));
    cr_assert_eq(err[0], '\0', "%s", err);
    cr_assert_eq(moved_aside(NULL), 0);
    struct tally t = read_back(ctx, DN, &out);
    cr_assert_eq(t.hits, DN);
    cr_assert_eq(t.wrong, 0);
}

/* ---- the durable snapshot of sync=periodic (issue 12, item 5) -------------------- */

enum { SN = 600, SNEW = 100 }; /* keys of phase A; keys phase B adds */

static void snap_key(size_t i, char *k, size_t cap)
{
    snprintf(k, cap, "d:%05zu", i);
}

/* Version @p ver of key i; every 53rd value takes overflow pages. */
static size_t snap_value(size_t i, unsigned ver, char *v, size_t cap)
{
    size_t len = i % 53 == 0 ? 5000 : 30 + (i * 41 + ver * 7) % 400;
    int h = snprintf(v, cap, "v%u-d:%05zu|", ver, i);
    for (size_t j = (size_t)h; j < len && j < cap; j++) {
        v[j] = (char)('a' + (i + j + ver) % 26);
    }
    return len < cap ? len : cap;
}

/* Phase A: keys 0..SN at version 1. Phase B: every third key set to
 * version 2, every third deleted, the rest left, SNEW new keys at 2. */
static int snap_phase(struct tc_tier_ctx *c, int phase)
{
    char k[32], v[8192];
    for (size_t i = 0; i < (phase == 0 ? SN : SN + SNEW); i++) {
        snap_key(i, k, sizeof(k));
        struct tc_tier_req r = {.key = k, .key_len = strlen(k), .now_ms = t0};
        enum tc_status st;
        if (phase == 1 && i < SN && i % 3 == 1) {
            st = tc_tier_del(c, &r);
        } else if (phase == 0 || i % 3 == 0 || i >= SN) {
            r.value = v;
            r.value_len = snap_value(i, phase + 1, v, sizeof(v));
            r.hdr.encoding = TC_ENC_BINARY;
            r.hdr.created_ms = t0;
            st = tc_tier_set(c, &r);
        } else {
            continue;
        }
        if (st != TC_OK) {
            return -1;
        }
    }
    return 0;
}

/* Keys whose state is not the one phase A (0) or phase B (1) left. */
static size_t snap_mismatches(int phase)
{
    char k[32], v[8192];
    size_t bad = 0;
    for (size_t i = 0; i < SN + SNEW; i++) {
        unsigned ver = 0; /* absent */
        if (i < SN) {
            ver = phase == 0 || i % 3 == 2 ? 1 : i % 3 == 0 ? 2 : 0;
        } else if (phase == 1) {
            ver = 2;
        }
        snap_key(i, k, sizeof(k));
        enum tc_status st = get_at(k, strlen(k), t0);
        if (ver == 0) {
            bad += st != TC_ENOTFOUND;
        } else {
            size_t vl = snap_value(i, ver, v, sizeof(v));
            bad += st != TC_OK || out.len != vl || memcmp(out.data, v, vl) != 0;
        }
    }
    return bad;
}

static void load_record(const char *d, struct tc_lmdb_durable *rec)
{
    char why[200];
    enum tc_status st = tc_lmdb_durable_load(d, rec, why, sizeof(why));
    cr_assert_eq(st, TC_OK, "%s/tiercache-durable: %s: %s", d, tc_status_name(st), why);
}

/* What a reboot does to the record: another boot's id. */
static void reboot(const char *d)
{
    struct tc_lmdb_durable rec;
    char why[200];
    load_record(d, &rec);
    snprintf(rec.boot_id, sizeof(rec.boot_id), "00000000-0000-4000-8000-000000000001");
    cr_assert_eq(tc_lmdb_durable_store(d, &rec, why, sizeof(why)), TC_OK, "%s", why);
}

/*
 * Phase A written and closed cleanly by one process, then phase B written by
 * another that is SIGKILLed once B is acknowledged: a crash of the process,
 * its commits in the page cache. sync_interval_ms=1h, and a map large
 * enough that B's copies do not call for an early checkpoint (half the
 * water band: 51 MB): the only checkpoint after A is the one B's open
 * takes, so the durable snapshot is exactly A.
 */
static void crash_after_b(const char *mode)
{
    snprintf(uri, sizeof(uri), "lmdb://%s?map_size=1G&sync=%s&sync_interval_ms=1h", dir, mode);
    struct tc_lmdb_durable rec;
    uint64_t after_a = 0;
    for (int phase = 0; phase < 2; phase++) {
        int ready[2];
        cr_assert_eq(pipe(ready), 0);
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(ready[0]);
            struct tc_tier *t;
            struct tc_tier_ctx *c;
            char err[512];
            if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK ||
                tc_tier_ctx_init(t, NULL, &c) != TC_OK || snap_phase(c, phase) != 0) {
                _exit(2);
            }
            if (phase == 0) {
                tc_tier_ctx_dispose(c);
                tc_tier_close(t);
                _exit(0);
            }
            char b = 1;
            if (write(ready[1], &b, 1) != 1) {
                _exit(3);
            }
            pause(); /* until SIGKILL: nothing closed, nothing flushed */
            _exit(4);
        }
        close(ready[1]);
        int status;
        if (phase == 1) {
            char b;
            cr_assert_eq(read(ready[0], &b, 1), 1, "the writer of phase B failed");
            kill(pid, SIGKILL);
        }
        waitpid(pid, &status, 0);
        close(ready[0]);
        cr_assert(phase == 1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
                  "the writer of phase A failed");
        load_record(dir, &rec);
        if (phase == 0) {
            after_a = rec.txnid;
        } else if (strcmp(mode, "periodic") == 0) {
            cr_assert(rec.flags == TC_LMDB_DURABLE_SNAPSHOT && rec.txnid == after_a,
                      "the scenario needs A as the durable snapshot: flags %u, txn %llu, A %llu",
                      rec.flags, (unsigned long long)rec.txnid, (unsigned long long)after_a);
        }
    }
}

static void open_news(char *err, size_t errlen)
{
    err[0] = '\0';
    enum tc_status st = tc_tier_open(NULL, uri, &tier, err, errlen);
    cr_assert_eq(st, TC_OK, "open %s: %s: %s", uri, tc_status_name(st), err);
    cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
}

/* The record names the newest flushed snapshot, every interval, and says
 * "open" until the last process closes cleanly; sync=none keeps only the
 * boot and the flag. */
Test(tier_lmdb, durable_record_follows_each_interval_and_a_clean_close)
{
    char me[TC_LMDB_DURABLE_BOOT_ID];
    tc_lmdb_durable_boot_id(me);
    cr_assert_neq(me[0], '\0', "no boot id on this host");
    open_with("map_size=16M&sync=periodic&sync_interval_ms=50");
    struct tc_lmdb_durable rec;
    load_record(dir, &rec);
    cr_assert_eq(rec.flags, TC_LMDB_DURABLE_SNAPSHOT, "taken at open, before any write");
    cr_assert_eq(rec.mode, 1);
    cr_assert_str_eq(rec.boot_id, me);
    uint64_t seen = rec.txnid;
    for (int round = 0; round < 3; round++) {
        char k[32];
        snprintf(k, sizeof(k), "k%d", round);
        cr_assert_eq(put_e(k, strlen(k), "v", 1, 0), TC_OK);
        struct timespec ts = {0, 10000000};
        for (int tries = 0; tries < 500; tries++) { /* 5 s at most */
            nanosleep(&ts, NULL);
            load_record(dir, &rec);
            if (rec.txnid > seen) {
                break;
            }
        }
        cr_assert_gt(rec.txnid, seen, "round %d: the record did not move on", round);
        cr_assert_eq(rec.flags, TC_LMDB_DURABLE_SNAPSHOT);
        cr_assert_eq(rec.meta_len, 152u);
        seen = rec.txnid;
    }
    close_tier();
    load_record(dir, &rec);
    cr_assert_eq(rec.flags, TC_LMDB_DURABLE_CLEAN);
    MDB_env *env;
    MDB_envinfo info;
    cr_assert_eq(mdb_env_create(&env), 0);
    cr_assert_eq(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    cr_assert_eq(mdb_env_info(env, &info), 0);
    mdb_env_close(env);
    cr_assert_eq(rec.txnid, info.me_last_txnid, "the clean record names the last commit");

    open_with("map_size=16M&sync=none");
    load_record(dir, &rec);
    cr_assert_eq(rec.flags, 0u, "sync=none: open, no snapshot");
    cr_assert_eq(rec.mode, 2);
    cr_assert_str_eq(rec.boot_id, me);
    close_tier();
    load_record(dir, &rec);
    cr_assert_eq(rec.flags, TC_LMDB_DURABLE_CLEAN);
}

/* A host crash (the record's boot is not this one) after B: the open puts
 * the meta pages back to the durable snapshot, A, exactly; nothing of B,
 * not its new keys, its new versions or its deletes. The same files after
 * a crash of the process alone (same boot) keep B. */
Test(tier_lmdb, host_crash_restores_exactly_the_durable_snapshot)
{
    crash_after_b("periodic");
    char dir2[256], from[600], to[600];
    snprintf(dir2, sizeof(dir2), "/tmp/tc-lmdb-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir2));
    const char *files[] = {"data.mdb", "lock.mdb", TC_LMDB_DURABLE_FILE};
    for (int i = 0; i < 3; i++) {
        path_in(from, sizeof(from), files[i]);
        snprintf(to, sizeof(to), "%s/%s", dir2, files[i]);
        cr_assert_eq(tc_test_copy_file(from, to), 0);
    }
    reboot(dir);
    char err[1024], detail[700];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    open_news(err, sizeof(err));
    clock_gettime(CLOCK_MONOTONIC, &b);
    cr_assert(strstr(err, "restored to the durable snapshot of") != NULL, "news: '%s'", err);
    cr_log_info("open with a restore: %.1f ms (%s)",
                (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6, err);
    cr_assert_eq(snap_mismatches(0), 0, "not at the snapshot A");
    cr_assert_eq(tc_tier_health(tier, detail, sizeof(detail)), TC_HEALTH_OK, "%s", detail);
    cr_assert(strstr(detail, "restored") != NULL, "health detail '%s'", detail);
    cr_assert_eq(moved_aside(NULL), 0);
    /* Writable, and a clean reopen restores nothing more. */
    cr_assert_eq(put_e("after", 5, "v-after", 7, 0), TC_OK);
    close_tier();
    open_news(err, sizeof(err));
    cr_assert_eq(err[0], '\0', "%s", err);
    cr_assert_eq(get_at("after", 5, t0), TC_OK);
    cr_assert_eq(snap_mismatches(0), 0);
    close_tier();

    /* The copy, with this boot's id: only the process died. */
    snprintf(uri, sizeof(uri), "lmdb://%s?map_size=1G&sync=periodic", dir2);
    open_news(err, sizeof(err));
    cr_assert_eq(err[0], '\0', "%s", err);
    cr_assert_eq(snap_mismatches(1), 0, "a crash of the process lost B");
    close_tier();
    tc_test_rm_flat_dir(dir2);
}

/* A record that is garbage, torn, or of another data.mdb is not applied:
 * nothing restored, the open says why, and B (in the page cache) is there. */
Test(tier_lmdb, an_unusable_durable_record_restores_nothing)
{
    static const char *const kinds[] = {"flipped byte", "garbage", "truncated", "other file"};
    for (int kind = 0; kind < 4; kind++) {
        rm_dir();
        cr_assert_not_null(mkdtemp(strcpy(dir, "/tmp/tc-lmdb-test-XXXXXX")));
        crash_after_b("periodic");
        reboot(dir);
        char rp[600], why[200];
        path_in(rp, sizeof(rp), TC_LMDB_DURABLE_FILE);
        if (kind == 0) {
            cr_assert_eq(tc_test_flip_bit(rp, 130, 3), 0); /* inside the meta page */
        } else if (kind == 1) {
            FILE *f = fopen(rp, "w");
            cr_assert_not_null(f);
            fputs("not a record at all, but long enough to be read as one?", f);
            fclose(f);
        } else if (kind == 2) {
            cr_assert_eq(truncate(rp, 200), 0);
        } else {
            struct tc_lmdb_durable rec;
            load_record(dir, &rec);
            rec.inode++;
            cr_assert_eq(tc_lmdb_durable_store(dir, &rec, why, sizeof(why)), TC_OK);
        }
        char err[1024];
        open_news(err, sizeof(err));
        cr_assert(strstr(err, "nothing restored") != NULL && strstr(err, "restored to") == NULL,
                  "%s: news '%s'", kinds[kind], err);
        cr_assert_eq(snap_mismatches(1), 0, "%s: not at B", kinds[kind]);
        cr_assert_eq(moved_aside(NULL), 0, "%s", kinds[kind]);
        close_tier();
    }
}

/* While another process has the environment open, nothing is restored,
 * whatever the record says: its pages are that process's to use. */
Test(tier_lmdb, a_process_holding_the_environment_prevents_a_restore)
{
    crash_after_b("periodic");
    reboot(dir);
    int go[2], ready[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(ready), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(go[1]);
        close(ready[0]);
        MDB_env *env;
        char b = 1, x;
        /* LMDB itself, not a tier: it restores nothing either. */
        if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, 4) != 0 ||
            mdb_env_open(env, dir, MDB_RDONLY, 0640) != 0 || write(ready[1], &b, 1) != 1 ||
            read(go[0], &x, 1) < 0) {
            _exit(2);
        }
        mdb_env_close(env);
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char b;
    cr_assert_eq(read(ready[0], &b, 1), 1, "the other process did not open the environment");
    char err[1024];
    open_news(err, sizeof(err));
    cr_assert_eq(err[0], '\0', "%s", err);
    cr_assert_eq(snap_mismatches(1), 0, "not at B");
    close_tier();
    cr_assert_eq(write(go[1], "x", 1), 1);
    close(go[1]);
    int status;
    waitpid(pid, &status, 0);
    close(ready[0]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* sync=none after a host crash: moved aside (stale pages could bring old
 * values back); after a clean close, kept. */
Test(tier_lmdb, host_crash_with_sync_none_moves_the_environment_aside)
{
    crash_after_b("none");
    reboot(dir);
    char err[1024];
    snprintf(uri, sizeof(uri), "lmdb://%s?map_size=1G&sync=none", dir);
    open_news(err, sizeof(err));
    cr_assert(strstr(err, "sync=none") != NULL && strstr(err, "moved") != NULL, "news: '%s'", err);
    cr_assert_eq(moved_aside(NULL), 1);
    cr_assert_eq(get_at("d:00000", 7, t0), TC_ENOTFOUND);
    cr_assert_eq(put_e("d:00000", 7, "x", 1, 0), TC_OK);
    close_tier();
    reboot(dir); /* after a clean close: nothing to fear */
    open_news(err, sizeof(err));
    cr_assert_eq(err[0], '\0', "%s", err);
    cr_assert_eq(get_at("d:00000", 7, t0), TC_OK);
    cr_assert_eq(moved_aside(NULL), 1);
}

/* One process without checkpoints beside one with them would void the
 * latter's guarantee: a second sync mode is refused while the first is
 * open. */
Test(tier_lmdb, a_second_sync_mode_is_refused_while_the_environment_is_open)
{
    snprintf(uri, sizeof(uri), "lmdb://%s?map_size=16M&sync=periodic", dir);
    int go[2], ready[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(ready), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(go[1]);
        close(ready[0]);
        struct tc_tier *t;
        char err[512], b = 1, x;
        if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK || write(ready[1], &b, 1) != 1 ||
            read(go[0], &x, 1) < 0) {
            _exit(2);
        }
        tc_tier_close(t);
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char b;
    cr_assert_eq(read(ready[0], &b, 1), 1, "the other process did not open the environment");
    char err[1024] = "", u2[600];
    struct tc_tier *t = NULL;
    snprintf(u2, sizeof(u2), "lmdb://%s?map_size=16M&sync=none", dir);
    enum tc_status st = tc_tier_open(NULL, u2, &t, err, sizeof(err));
    cr_assert_eq(st, TC_EINVAL, "%s: %s", tc_status_name(st), err);
    cr_assert(strstr(err, "sync=periodic") != NULL, "%s", err);
    open_news(err, sizeof(err)); /* the same mode is welcome */
    cr_assert_eq(err[0], '\0', "%s", err);
    close_tier();
    cr_assert_eq(write(go[1], "x", 1), 1);
    close(go[1]);
    int status;
    waitpid(pid, &status, 0);
    close(ready[0]);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The pin holds the pages freed since the last checkpoint: overwriting a
 * few keys many times over the map's size (no checkpoint due for an hour)
 * fills the map with pinned free pages. The writer has the syncer move the
 * pin on at once; it must not evict, and no write may fail. */
Test(tier_lmdb, pinned_room_is_freed_by_an_early_checkpoint_not_by_eviction)
{
    open_with("map_size=4M&sync=periodic&sync_interval_ms=1h");
    static char v[2048];
    char k[16];
    for (int i = 0; i < 8000; i++) {
        snprintf(k, sizeof(k), "o%d", i % 100);
        memset(v, 'a' + i % 26, sizeof(v));
        cr_assert_eq(put_e(k, strlen(k), v, sizeof(v), 0), TC_OK, "write %d", i);
    }
    cr_assert_eq(stat_of("evictions"), 0);
    cr_assert_gt(stat_of("syncs"), 1, "no checkpoint beyond the first");
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "o%d", i);
        cr_assert_eq(get_at(k, strlen(k), t0), TC_OK);
        cr_assert_eq(out.data[0], 'a' + (7900 + i) % 26);
    }
}
