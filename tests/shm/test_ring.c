/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of shm/ring.[ch] through its public API, on real segments.
 * Every test gets its own segment name (pid + counter: Criterion runs each
 * test in its own process, two at a time). The garbage and version tests
 * reach into the segment through shm/ring_layout.h, the published ABI.
 */
#define _GNU_SOURCE /* memmem */
#include "shm/ring.h"
#include "shm/ring_layout.h"
#include "tests/support/asuser.h"
#include "tests/support/shm_damage.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

static char name[64];
static struct tc_ring *ring;
static struct tc_ring_ctx *ctx;
static char err[1024];

static void new_name(void)
{
    static unsigned counter;
    snprintf(name, sizeof(name), "tc-test-ring-%ld-%u", (long)getpid(), counter++);
    tc_ring_unlink(name, NULL, 0);
}

static void open_ring(uint64_t size, uint64_t buckets)
{
    struct tc_ring_options o = {.size = size, .buckets = buckets};
    enum tc_status st = tc_ring_open(name, &o, &ring, err, sizeof(err));
    cr_assert_eq(st, TC_OK, "open %s: %s (%s)", name, err, tc_strerror(st));
    cr_assert_eq(tc_ring_ctx_create(ring, &ctx), TC_OK);
}

static void close_ring(void)
{
    tc_ring_ctx_destroy(ctx);
    ctx = NULL;
    tc_ring_close(ring);
    ring = NULL;
}

static void setup(void)
{
    new_name();
    open_ring(4u << 20, 0);
}

static void teardown(void)
{
    if (ring != NULL) {
        close_ring();
    }
    tc_ring_unlink(name, NULL, 0);
}

TestSuite(ring, .init = setup, .fini = teardown, .timeout = 60);

static enum tc_status put(const char *k, const void *v, size_t vl, uint64_t exp)
{
    return tc_ring_set(ctx, k, strlen(k), v, vl, exp, 0, 1000);
}

static unsigned char buf[2u << 20];
static struct tc_ring_item item;

static enum tc_status get_at(const char *k, uint64_t now)
{
    return tc_ring_get(ctx, k, strlen(k), now, buf, sizeof(buf), &item);
}

static enum tc_status get(const char *k)
{
    return get_at(k, 1000);
}

Test(ring, set_get_delete_overwrite)
{
    cr_assert_eq(get("a"), TC_ENOTFOUND);
    cr_assert_eq(put("a", "hello", 5, 0), TC_OK);
    cr_assert_eq(get("a"), TC_OK);
    cr_assert_eq(item.value_len, 5);
    cr_assert(memcmp(buf, "hello", 5) == 0);
    cr_assert_eq(put("a", "bye", 3, 0), TC_OK);
    cr_assert_eq(get("a"), TC_OK);
    cr_assert_eq(item.value_len, 3);
    cr_assert(memcmp(buf, "bye", 3) == 0);
    cr_assert_eq(tc_ring_del(ctx, "a", 1, 1000), TC_OK);
    cr_assert_eq(get("a"), TC_ENOTFOUND);
    cr_assert_eq(tc_ring_del(ctx, "a", 1, 1000), TC_ENOTFOUND);
    /* Many overwrites leave one slot, the last value. */
    char v[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(v, sizeof(v), "value-%d", i);
        cr_assert_eq(put("many", v, (size_t)n, 0), TC_OK);
    }
    cr_assert_eq(get("many"), TC_OK);
    cr_assert(item.value_len == 9 && memcmp(buf, "value-999", 9) == 0);
    struct tc_ring_stats s;
    tc_ring_stats(ring, &s);
    cr_assert_eq(s.items, 1, "items %llu", (unsigned long long)s.items);
}

Test(ring, same_size_overwrite_rewrites_in_place)
{
    char v[64], big[200];
    memset(v, 'a', sizeof(v));
    memset(big, 'b', sizeof(big));
    cr_assert_eq(put("hot", v, sizeof(v), 0), TC_OK);
    struct tc_ring_stats s0, s1;
    tc_ring_stats(ring, &s0);
    for (int i = 0; i < 1000; i++) {
        memset(v, 'a' + i % 26, sizeof(v));
        cr_assert_eq(put("hot", v, sizeof(v), (uint64_t)i + 2000), TC_OK);
    }
    tc_ring_stats(ring, &s1);
    cr_assert_eq(s1.bytes_used, s0.bytes_used, "same-size sets must not append");
    cr_assert_eq(get("hot"), TC_OK);
    cr_assert_eq(item.value_len, sizeof(v));
    cr_assert_eq(buf[0], 'a' + 999 % 26);
    cr_assert_eq(item.expire_ms, 999 + 2000);
    /* Another size appends. */
    cr_assert_eq(put("hot", big, sizeof(big), 0), TC_OK);
    tc_ring_stats(ring, &s1);
    cr_assert_gt(s1.bytes_used, s0.bytes_used);
    cr_assert_eq(s1.items, 1);
}

Test(ring, probation_hit_promotes_and_keeps_the_value)
{
    /* Fill the main log once, so that new keys go to probation. */
    char k[32], v[200];
    for (int i = 0; i < 30000; i++) {
        snprintf(k, sizeof(k), "fill%d", i);
        memset(v, 'f', sizeof(v));
        cr_assert_eq(put(k, v, sizeof(v), 0), TC_OK);
    }
    memset(v, 'p', sizeof(v));
    cr_assert_eq(put("probe", v, sizeof(v), 0), TC_OK);
    struct tc_ring_stats s0, s1;
    tc_ring_stats(ring, &s0);
    cr_assert_eq(get("probe"), TC_OK);
    tc_ring_stats(ring, &s1);
    cr_assert_eq(s1.promotions, s0.promotions + 1, "a probation hit moves the key");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(get("probe"), TC_OK);
        cr_assert(item.value_len == sizeof(v) && memcmp(buf, v, sizeof(v)) == 0);
    }
    tc_ring_stats(ring, &s1);
    cr_assert_eq(s1.promotions, s0.promotions + 1, "a young main-log item stays put");
}

Test(ring, far_expiry_is_clamped_not_wrapped)
{
    cr_assert_eq(put("far", "v", 1, UINT64_MAX), TC_OK);
    cr_assert_eq(get_at("far", UINT64_MAX / 2), TC_ENOTFOUND, "clamped to the year 2527");
    cr_assert_eq(put("far", "v", 1, UINT64_MAX), TC_OK);
    cr_assert_eq(get_at("far", 1700000000000ull), TC_OK);
    cr_assert_eq(item.expire_ms, TC_RING_EXPIRE_MAX);
}

Test(ring, flags_and_expiry_through_injected_clock)
{
    cr_assert_eq(tc_ring_set(ctx, "e", 1, "v", 1, 5000, 0xabcd, 1000), TC_OK);
    cr_assert_eq(get_at("e", 4999), TC_OK);
    cr_assert_eq(item.expire_ms, 5000);
    cr_assert_eq(item.flags, 0xabcd);
    cr_assert_eq(get_at("e", 5000), TC_ENOTFOUND, "expired at its expiry");
    cr_assert_eq(get_at("e", 1000), TC_ENOTFOUND, "an expired read cleared the slot");
    cr_assert_eq(tc_ring_set(ctx, "f", 1, "v", 1, 0, TC_RING_FLAGS_MAX + 1, 1000), TC_EINVAL);
    cr_assert_eq(get("f"), TC_ENOTFOUND);
}

Test(ring, empty_binary_and_max_size_values)
{
    cr_assert_eq(put("empty", "", 0, 0), TC_OK);
    cr_assert_eq(get("empty"), TC_OK);
    cr_assert_eq(item.value_len, 0);
    /* No buffer at all is fine for an empty value; too small for any other. */
    cr_assert_eq(tc_ring_get(ctx, "empty", 5, 1, NULL, 0, &item), TC_OK);
    cr_assert_eq(put("1b", "x", 1, 0), TC_OK);
    cr_assert_eq(tc_ring_get(ctx, "1b", 2, 1, NULL, 0, &item), TC_ETOOBIG);
    cr_assert_eq(item.value_len, 1);

    static const char bin[] = "\0\x01\0\xff\0";
    static const char bkey[] = "k\0ey";
    cr_assert_eq(tc_ring_set(ctx, bkey, 4, bin, sizeof(bin), 0, 0, 1), TC_OK);
    cr_assert_eq(tc_ring_get(ctx, bkey, 4, 1, buf, sizeof(buf), &item), TC_OK);
    cr_assert_eq(item.value_len, sizeof(bin));
    cr_assert(memcmp(buf, bin, sizeof(bin)) == 0);
    cr_assert_eq(tc_ring_get(ctx, "k", 1, 1, buf, sizeof(buf), &item), TC_ENOTFOUND);

    size_t max = (size_t)tc_ring_max_item(ring);
    cr_assert_eq(max, (4u << 20) / 16, "default max item is size/16 here (%zu)", max);
    unsigned char *v = malloc(max + 1);
    for (size_t i = 0; i <= max; i++) {
        v[i] = (unsigned char)(i * 7 + 3);
    }
    cr_assert_eq(put("max", v, max, 0), TC_OK);
    cr_assert_eq(get("max"), TC_OK);
    cr_assert_eq(item.value_len, max);
    cr_assert(memcmp(buf, v, max) == 0);
    cr_assert_eq(put("max", v, max + 1, 0), TC_ETOOBIG);
    cr_assert_eq(get("max"), TC_OK, "a refused set keeps the older value");
    cr_assert_eq(item.value_len, max);
    cr_assert_eq(put("over", v, max + 1, 0), TC_ETOOBIG);
    cr_assert_eq(get("over"), TC_ENOTFOUND, "nothing stored");

    /* A buffer too small says how large the value is. */
    cr_assert_eq(tc_ring_get(ctx, "max", 3, 1, buf, 10, &item), TC_ETOOBIG);
    cr_assert_eq(item.value_len, max);
    free(v);
}

Test(ring, bad_keys_refused)
{
    char big[TC_RING_KEY_MAX + 1];
    memset(big, 'k', sizeof(big));
    cr_assert_eq(tc_ring_set(ctx, big, sizeof(big), "v", 1, 0, 0, 1), TC_ETOOBIG);
    cr_assert_eq(tc_ring_set(ctx, big, TC_RING_KEY_MAX, "v", 1, 0, 0, 1), TC_OK);
    cr_assert_eq(tc_ring_get(ctx, big, TC_RING_KEY_MAX, 1, buf, sizeof(buf), &item), TC_OK);
    cr_assert_eq(tc_ring_get(ctx, big, sizeof(big), 1, buf, sizeof(buf), &item), TC_ETOOBIG);
    cr_assert_eq(tc_ring_set(ctx, "", 0, "v", 1, 0, 0, 1), TC_EINVAL);
    cr_assert_eq(tc_ring_get(ctx, NULL, 0, 1, buf, sizeof(buf), &item), TC_EINVAL);
    cr_assert_eq(tc_ring_del(ctx, "", 0, 1), TC_EINVAL);
}

static size_t fill(unsigned char *v, unsigned key, unsigned ver)
{
    size_t n = 1 + (key * 131u + ver * 17u) % 700u;
    for (size_t i = 0; i < n; i++) {
        v[i] = (unsigned char)(key ^ (ver << 3) ^ i);
    }
    return n;
}

Test(ring, log_wraps_many_times)
{
    close_ring();
    tc_ring_unlink(name, NULL, 0);
    open_ring(256u << 10, 0);
    unsigned char v[1024], want[1024];
    char k[32];
    unsigned keys = 3000, rounds = 40;
    for (unsigned ver = 0; ver < rounds; ver++) {
        for (unsigned i = 0; i < keys; i++) {
            snprintf(k, sizeof(k), "w%u", i);
            size_t n = fill(v, i, ver);
            cr_assert_eq(put(k, v, n, 0), TC_OK);
        }
    }
    unsigned hits = 0;
    for (unsigned i = 0; i < keys; i++) {
        snprintf(k, sizeof(k), "w%u", i);
        if (get(k) == TC_OK) {
            hits++;
            size_t n = fill(want, i, rounds - 1);
            cr_assert_eq(item.value_len, n, "%s: stale or torn value", k);
            cr_assert(memcmp(buf, want, n) == 0, "%s: wrong bytes", k);
        }
    }
    struct tc_ring_stats s;
    tc_ring_stats(ring, &s);
    cr_assert_gt(hits, 100, "the newest writes must be readable (%u hits)", hits);
    cr_assert_lt(hits, keys, "the log must have wrapped");
    cr_assert_eq(s.bytes_used, s.log_capacity);
    cr_assert_eq(s.torn + s.corrupt, 0);
}

Test(ring, bucket_overflow_drops_oldest)
{
    close_ring();
    tc_ring_unlink(name, NULL, 0);
    open_ring(1u << 20, 1); /* one bucket: 8 slots for everything */
    char k[16];
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "b%d", i);
        cr_assert_eq(put(k, k, strlen(k), 0), TC_OK);
    }
    int hits = 0;
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "b%d", i);
        if (get(k) == TC_OK) {
            hits++;
            cr_assert(item.value_len == strlen(k) && memcmp(buf, k, item.value_len) == 0);
            cr_assert_geq(i, 12, "%s survived though it is among the oldest", k);
        }
    }
    cr_assert_eq(hits, 8);
    struct tc_ring_stats s;
    tc_ring_stats(ring, &s);
    cr_assert_eq(s.evictions, 12);
    cr_assert_eq(s.items, 8);
}

Test(ring, sweep_clears_expired_and_reports)
{
    char k[16];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        cr_assert_eq(put(k, "v", 1, i % 2 ? 0 : 2000), TC_OK);
    }
    uint64_t cleared = 0;
    int rounds = 0;
    enum tc_status st;
    while ((st = tc_ring_sweep(ctx, 3000, 100, &cleared)) == TC_EAGAIN && ++rounds < 100000) {
    }
    cr_assert_eq(st, TC_OK);
    cr_assert_eq(cleared, 50);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "s%d", i);
        cr_assert_eq(get_at(k, 3000), i % 2 ? TC_OK : TC_ENOTFOUND);
    }
    /* A second pass finds nothing more. */
    cleared = 0;
    while (tc_ring_sweep(ctx, 3000, 1000, &cleared) == TC_EAGAIN) {
    }
    cr_assert_eq(cleared, 0);
}

Test(ring, clear_by_prefix)
{
    cr_assert_eq(put("user:1", "a", 1, 0), TC_OK);
    cr_assert_eq(put("user:2", "b", 1, 0), TC_OK);
    cr_assert_eq(put("page:1", "c", 1, 0), TC_OK);
    uint64_t n = 0;
    cr_assert_eq(tc_ring_clear(ctx, "user:", 5, 1000, &n), TC_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(get("user:1"), TC_ENOTFOUND);
    cr_assert_eq(get("page:1"), TC_OK);
    cr_assert_eq(tc_ring_clear(ctx, NULL, 0, 1000, &n), TC_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(get("page:1"), TC_ENOTFOUND);
}

Test(ring, stats_and_ctx_limits)
{
    cr_assert_eq(put("a", "1", 1, 0), TC_OK);
    cr_assert_eq(get("a"), TC_OK);
    cr_assert_eq(get("b"), TC_ENOTFOUND);
    struct tc_ring_stats s;
    tc_ring_stats(ring, &s);
    cr_assert_eq(s.sets, 1);
    cr_assert_eq(s.hits, 1);
    cr_assert_eq(s.misses, 1);
    cr_assert_eq(s.gets, 2);
    cr_assert_eq(s.items, 1);
    cr_assert_eq(s.ctxs, 1);
    cr_assert_eq(s.seg_size, 4u << 20);
    struct tc_ring_ctx *more[TC_RING_MAX_CTX];
    for (unsigned i = 0; i < TC_RING_MAX_CTX - 1; i++) {
        cr_assert_eq(tc_ring_ctx_create(ring, &more[i]), TC_OK);
    }
    struct tc_ring_ctx *extra;
    cr_assert_eq(tc_ring_ctx_create(ring, &extra), TC_EAGAIN);
    for (unsigned i = 0; i < TC_RING_MAX_CTX - 1; i++) {
        tc_ring_ctx_destroy(more[i]);
    }
    /* Counters of a destroyed ctx survive in the retired totals. */
    tc_ring_ctx_destroy(ctx);
    cr_assert_eq(tc_ring_ctx_create(ring, &ctx), TC_OK);
    tc_ring_stats(ring, &s);
    cr_assert_eq(s.hits, 1);
    cr_assert_eq(s.sets, 1);
}

Test(ring, other_process_sees_the_data)
{
    cr_assert_eq(put("shared", "yes", 3, 0), TC_OK);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        struct tc_ring *r2;
        struct tc_ring_ctx *c2;
        struct tc_ring_options o = {.size = 4u << 20};
        char b[8];
        struct tc_ring_item it;
        int ok = tc_ring_open(name, &o, &r2, NULL, 0) == TC_OK &&
                 tc_ring_ctx_create(r2, &c2) == TC_OK &&
                 tc_ring_get(c2, "shared", 6, 1, b, sizeof(b), &it) == TC_OK && it.value_len == 3 &&
                 memcmp(b, "yes", 3) == 0 && tc_ring_set(c2, "child", 5, "hi", 2, 0, 0, 1) == TC_OK;
        _exit(ok ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_eq(get("child"), TC_OK);
    cr_assert(item.value_len == 2 && memcmp(buf, "hi", 2) == 0);
}

Test(ring, concurrent_creators_agree)
{
    close_ring();
    tc_ring_unlink(name, NULL, 0);
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        kids[i] = fork();
        cr_assert_neq(kids[i], -1);
        if (kids[i] == 0) {
            struct tc_ring *r2;
            struct tc_ring_ctx *c2;
            struct tc_ring_options o = {.size = 2u << 20};
            char k[8];
            snprintf(k, sizeof(k), "c%d", i);
            int ok = tc_ring_open(name, &o, &r2, NULL, 0) == TC_OK &&
                     tc_ring_ctx_create(r2, &c2) == TC_OK &&
                     tc_ring_set(c2, k, strlen(k), k, strlen(k), 0, 0, 1) == TC_OK;
            _exit(ok ? 0 : 1);
        }
    }
    for (int i = 0; i < 6; i++) {
        int status;
        cr_assert_eq(waitpid(kids[i], &status, 0), kids[i]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "creator %d failed", i);
    }
    open_ring(2u << 20, 0);
    char k[8];
    for (int i = 0; i < 6; i++) {
        snprintf(k, sizeof(k), "c%d", i);
        cr_assert_eq(get(k), TC_OK, "%s was written to another segment or seed", k);
    }
}

static struct tc_ring_hdr *map_raw(size_t *len)
{
    char path[80];
    snprintf(path, sizeof(path), "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    cr_assert_geq(fd, 0);
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    *len = (size_t)sb.st_size;
    void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(p, MAP_FAILED);
    return p;
}

Test(ring, size_and_version_mismatch_refused_with_message)
{
    struct tc_ring *r2;
    struct tc_ring_options o = {.size = 8u << 20};
    cr_assert_eq(tc_ring_open(name, &o, &r2, err, sizeof(err)), TC_EVERSION);
    cr_assert(strstr(err, "4194304") != NULL && strstr(err, "8388608") != NULL,
              "message must name both sizes: %s", err);
    char how[128];
    snprintf(how, sizeof(how), "tiercache shm unlink %s", name);
    cr_assert(strstr(err, how) != NULL, "message must say how to remove it: %s", err);

    /* Attach-only opens whatever size is there. */
    struct tc_ring_options any = {.size = 0};
    cr_assert_eq(tc_ring_open(name, &any, &r2, err, sizeof(err)), TC_OK, "%s", err);
    tc_ring_close(r2);

    size_t len;
    struct tc_ring_hdr *h = map_raw(&len);
    h->major = 99;
    o.size = 4u << 20;
    cr_assert_eq(tc_ring_open(name, &o, &r2, err, sizeof(err)), TC_EVERSION);
    char ours[32];
    snprintf(ours, sizeof(ours), "layout %u.%u", TC_RING_LAYOUT_MAJOR, TC_RING_LAYOUT_MINOR);
    cr_assert(strstr(err, "layout 99.0") != NULL && strstr(err, ours) != NULL,
              "message must name both versions: %s", err);
    h->major = TC_RING_LAYOUT_MAJOR;
    h->log_cap[1] += 64; /* geometry past the end of the segment */
    cr_assert_eq(tc_ring_open(name, &o, &r2, err, sizeof(err)), TC_ECORRUPT, "%s", err);
    h->log_cap[1] -= 64;
    /* A creator that died before publishing the magic: bounded wait. */
    atomic_store(&h->magic, 0);
    o.attach_timeout_ms = 50;
    cr_assert_eq(tc_ring_open(name, &o, &r2, err, sizeof(err)), TC_ETIMEOUT);
    cr_assert(strstr(err, how) != NULL, "%s", err);
    munmap(h, len);

    /* A creator that died before even sizing the segment. */
    cr_assert_eq(tc_ring_unlink(name, NULL, 0), TC_OK);
    char path[80];
    snprintf(path, sizeof(path), "/%s", name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(tc_ring_open(name, &o, &r2, err, sizeof(err)), TC_ETIMEOUT);
    cr_assert(strstr(err, "never sized") != NULL && strstr(err, how) != NULL, "%s", err);

    struct tc_ring_options none = {.size = 0};
    cr_assert_eq(tc_ring_open("tc-test-no-such-segment", &none, &r2, err, sizeof(err)),
                 TC_ENOTFOUND);
    cr_assert_eq(tc_ring_open("a/b", &o, &r2, err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(tc_ring_open("", &o, &r2, err, sizeof(err)), TC_EINVAL);
    o.size = 1000;
    cr_assert_eq(tc_ring_open("tc-test-tiny", &o, &r2, err, sizeof(err)), TC_EINVAL);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Hammers a scribbled segment with every operation; ASan/UBSan catch any
 * out-of-bounds access, and no read may return a value we did not write. */
static void hammer(uint64_t *seed)
{
    char k[32];
    unsigned char small[64];
    for (int i = 0; i < 20000; i++) {
        int n = snprintf(k, sizeof(k), "g%u", (unsigned)(rnd(seed) % 4000));
        uint64_t op = rnd(seed) % 8;
        if (op < 4) {
            enum tc_status st = tc_ring_get(ctx, k, (size_t)n, 1000, buf, sizeof(buf), &item);
            cr_assert(st == TC_OK || st == TC_ENOTFOUND, "get: %s", tc_status_name(st));
            if (st == TC_OK) {
                /* Only our own writes may be served: they hold their key. */
                cr_assert(item.value_len == (size_t)n && memcmp(buf, k, (size_t)n) == 0,
                          "garbage served for %s", k);
            }
        } else if (op < 6) {
            cr_assert_eq(tc_ring_set(ctx, k, (size_t)n, k, (size_t)n, 0, 0, 1000), TC_OK);
        } else if (op == 6) {
            enum tc_status st = tc_ring_del(ctx, k, (size_t)n, 1000);
            cr_assert(st == TC_OK || st == TC_ENOTFOUND);
        } else {
            tc_ring_sweep(ctx, 1000, 512, NULL);
            (void)tc_ring_get(ctx, k, (size_t)n, 1000, small, 3, &item);
        }
    }
    uint64_t n = 0;
    cr_assert_eq(tc_ring_clear(ctx, "g1", 2, 1000, &n), TC_OK);
    struct tc_ring_stats s;
    tc_ring_stats(ring, &s);
}

Test(ring, garbage_segment_never_crashes)
{
    close_ring();
    size_t len;
    struct tc_ring_hdr *h = map_raw(&len);
    uint64_t seed = 0x1234567;
    uint64_t seg_seed = h->seed;
    for (int variant = 0; variant < 4; variant++) {
        /* Scribble stats, index and logs (the header's geometry is copied at
         * attach and checked; scribbling it is the version test's job). */
        uint64_t *p = (uint64_t *)((uint8_t *)h + h->stat_off);
        uint64_t *end = (uint64_t *)((uint8_t *)h + len);
        for (; p < end; p++) {
            *p = rnd(&seed);
        }
        if (variant >= 1) {
            /* Plausible heads, so that slots resolve into the live window. */
            for (unsigned L = 0; L < TC_RING_NLOGS; L++) {
                atomic_store(&h->head[L].v, h->log_cap[L] * (3 + variant) + rnd(&seed) % 4096 * 8);
            }
        }
        if (variant >= 2) {
            /* Slots whose tags match real keys and whose records carry a
             * correct stamp and the key itself, over random values: only the
             * checksum stands between them and a reader. */
            struct tc_ring_bucket *idx = (struct tc_ring_bucket *)((uint8_t *)h + h->index_off);
            for (unsigned i = 0; i < 4000; i += 3) {
                char k[32];
                int n = snprintf(k, sizeof(k), "g%u", i);
                uint64_t kh = XXH3_64bits_withSeed(k, (size_t)n, seg_seed);
                uint64_t tag = kh >> TC_RING_TAG_SHIFT ? kh >> TC_RING_TAG_SHIFT : 1;
                unsigned L = (unsigned)(rnd(&seed) & 1);
                uint64_t head = atomic_load(&h->head[L].v);
                uint64_t pos = (head - h->log_cap[L] / 2 + rnd(&seed) % 4096 * 8) & ~7ull;
                uint64_t *log = (uint64_t *)((uint8_t *)h + h->log_off[L]);
                uint64_t words = h->log_cap[L] / 8, w = (pos % h->log_cap[L]) / 8;
                uint64_t vlen = variant == 3 ? rnd(&seed) >> 32 : rnd(&seed) % 64;
                /* Header: no expiry, the right stamp bits, the key's length;
                 * then the key; the checksum (word 2) stays random. */
                log[w] = ((pos >> 3) & TC_RING_STAMP_MASK) << TC_RING_EXPIRE_BITS;
                log[(w + 1) % words] = (uint64_t)n | (vlen << 27);
                uint64_t kw[4] = {0};
                memcpy(kw, k, (size_t)n);
                for (unsigned j = 0; j < 4; j++) {
                    log[(w + 3 + j) % words] = kw[j];
                }
                idx[kh & (h->nbuckets - 1)].slot[rnd(&seed) % TC_RING_BUCKET_W] =
                    tag << TC_RING_TAG_SHIFT | (L ? TC_RING_LOG_BIT : 0) | (pos & TC_RING_POS_MASK);
            }
        }
        open_ring(4u << 20, 0);
        hammer(&seed);
        close_ring();
    }
    munmap(h, len);
}

/* Flips a byte of every copy of @p mark in the segment's bytes. */
static int flip_all(const char *mark)
{
    int n = tc_test_shm_flip_all(name, mark);
    cr_assert_geq(n, 0, "segment %s not mapped", name);
    return n;
}

/* tc_ring_get_split: the same bytes as a whole get, each part where asked,
 * and the checksum still over every byte of both parts. */
Test(ring, split_get_matches_whole_get_and_checks_both_parts)
{
    char v[300];
    for (size_t i = 0; i < sizeof(v); i++) {
        v[i] = (char)('a' + i % 26);
    }
    memcpy(v, "HEADMARK", 8);
    memcpy(v + 200, "TAILMARK", 8);
    uint8_t head[40];
    static uint8_t rest[512];
    for (int part = 0; part < 2; part++) {
        cr_assert_eq(put("k", v, sizeof(v), 0), TC_OK);
        memset(head, 0, sizeof(head));
        cr_assert_eq(
            tc_ring_get_split(ctx, "k", 1, 1000, head, sizeof(head), rest, sizeof(rest), &item),
            TC_OK);
        cr_assert_eq(item.value_len, sizeof(v));
        cr_assert_eq(memcmp(head, v, 40), 0);
        cr_assert_eq(memcmp(rest, v + 40, sizeof(v) - 40), 0);
        cr_assert_eq(get_at("k", 1000), TC_OK, "the whole get agrees");
        cr_assert_eq(memcmp(buf, v, sizeof(v)), 0);
        /* The rest is larger than the buffer: the size is reported. */
        cr_assert_eq(tc_ring_get_split(ctx, "k", 1, 1000, head, sizeof(head), rest, 100, &item),
                     TC_ETOOBIG);
        cr_assert_eq(item.value_len, sizeof(v));
        /* A byte changed in the head part, then in the rest: a miss. */
        cr_assert_geq(flip_all(part == 0 ? "HEADMARK" : "TAILMARK"), 1);
        cr_assert_eq(
            tc_ring_get_split(ctx, "k", 1, 1000, head, sizeof(head), rest, sizeof(rest), &item),
            TC_ENOTFOUND, "a changed byte in part %d was served", part);
    }
    /* A value past the join size (a streamed check), read several times:
     * the first hit promotes it out of probation, the next ones read the
     * promoted copy. */
    static uint8_t big[65536], got[65536];
    for (size_t i = 0; i < sizeof(big); i++) {
        big[i] = (uint8_t)(i * 7 + 3);
    }
    cr_assert_eq(tc_ring_set(ctx, "big", 3, big, sizeof(big), 0, 0, 1000), TC_OK);
    for (int i = 0; i < 3; i++) {
        memset(got, 0, sizeof(got));
        cr_assert_eq(
            tc_ring_get_split(ctx, "big", 3, 1000, head, sizeof(head), got, sizeof(got), &item),
            TC_OK, "read %d", i);
        cr_assert_eq(memcmp(head, big, 40), 0);
        cr_assert_eq(memcmp(got, big + 40, sizeof(big) - 40), 0);
    }
    /* Shorter than the head: all of it lands there. */
    cr_assert_eq(put("s", "abc", 3, 0), TC_OK);
    cr_assert_eq(tc_ring_get_split(ctx, "s", 1, 1000, head, sizeof(head), NULL, 0, &item), TC_OK);
    cr_assert_eq(item.value_len, 3);
    cr_assert_eq(memcmp(head, "abc", 3), 0);
    cr_assert_eq(tc_ring_get_split(ctx, "s", 1, 1000, NULL, 4, rest, sizeof(rest), &item),
                 TC_EINVAL);
}

static uint8_t kbig[65536], kgot[65536], khead[40];

/* tc_ring_get_known of @p k at @p now into khead and kgot. */
static enum tc_status known(const char *k, uint64_t now, struct tc_ring_ident *id, int *same)
{
    return tc_ring_get_known(ctx, k, strlen(k), now, khead, sizeof(khead), kgot, sizeof(kgot),
                             &item, id, same);
}

/* tc_ring_get_known: a reader that holds a checked copy of a record is
 * told so without a copy, and only while that very record is the live one:
 * a rewrite, a delete, an expiry or a changed header each make it copy (or
 * miss) again. Bytes scribbled under an unchanged header: the holder keeps
 * its checked copy, a reader without one gets a miss, never the scribble. */
Test(ring, known_record_is_not_copied_again_and_any_change_is)
{
    for (size_t i = 0; i < sizeof(kbig); i++) {
        kbig[i] = (uint8_t)(i * 7 + 3);
    }
    memcpy(kbig + 30000, "TAILMARK", 8);
    cr_assert_eq(tc_ring_set(ctx, "big", 3, kbig, sizeof(kbig), 0, 0, 1000), TC_OK);
    struct tc_ring_ident id = {0};
    int same = 1;
    /* The first read copies; one from probation promotes the record, and
     * the next read copies the promoted one: a new record, a new copy. */
    memset(kgot, 0, sizeof(kgot));
    cr_assert_eq(known("big", 1000, &id, &same), TC_OK);
    cr_assert_eq(same, 0, "a record not held yet was called the same");
    cr_assert_eq(memcmp(kgot, kbig + 40, sizeof(kbig) - 40), 0);
    if (id.log == TC_RING_LOG_SMALL) {
        cr_assert_eq(known("big", 1000, &id, &same), TC_OK);
        cr_assert_eq(same, 0, "the promoted record was called the same as its probation copy");
    }
    struct tc_ring_ident held = id;
    memset(kgot, 0xee, sizeof(kgot));
    memset(khead, 0xee, sizeof(khead));
    cr_assert_eq(known("big", 1000, &id, &same), TC_OK);
    cr_assert_eq(same, 1, "the held record was copied again");
    cr_assert_eq(item.value_len, sizeof(kbig));
    cr_assert(kgot[0] == 0xee && kgot[sizeof(kgot) - 1] == 0xee && khead[0] == 0xee,
              "nothing is copied for the record held");
    cr_assert_eq(memcmp(&id, &held, sizeof(id)), 0);

    /* Another identity (a header word differs): copied and checked. */
    struct tc_ring_ident other = held;
    other.check ^= 1;
    cr_assert_eq(known("big", 1000, &other, &same), TC_OK);
    cr_assert_eq(same, 0);
    cr_assert_eq(memcmp(kgot, kbig + 40, sizeof(kbig) - 40), 0);
    cr_assert_eq(memcmp(&other, &held, sizeof(id)), 0, "the identity of the record copied");

    /* Scribbled value bytes under the same header. */
    cr_assert_geq(flip_all("TAILMARK"), 1);
    cr_assert_eq(known("big", 1000, &id, &same), TC_OK);
    cr_assert_eq(same, 1, "the holder's checked copy stands");
    struct tc_ring_ident none = {0};
    memset(kgot, 0, sizeof(kgot));
    cr_assert_eq(known("big", 1000, &none, &same), TC_ENOTFOUND,
                 "a reader without a copy was served the scribble");
    cr_assert_eq(same, 0);
    /* ...which dropped the record: the holder misses too from now on. */
    cr_assert_eq(known("big", 1000, &id, &same), TC_ENOTFOUND);

    /* A new value of the same size (rewritten in place once promoted), a
     * delete and an expiry: never the held copy. */
    cr_assert_eq(tc_ring_set(ctx, "big", 3, kbig, sizeof(kbig), 0, 0, 1000), TC_OK);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(known("big", 1000, &id, &same), TC_OK);
    }
    cr_assert_eq(same, 1);
    held = id;
    kbig[50000] ^= 1;
    cr_assert_eq(tc_ring_set(ctx, "big", 3, kbig, sizeof(kbig), 0, 0, 1000), TC_OK);
    cr_assert_eq(known("big", 1000, &id, &same), TC_OK);
    cr_assert_eq(same, 0, "a new value was called the same");
    cr_assert_eq(memcmp(kgot, kbig + 40, sizeof(kbig) - 40), 0, "the new value");
    cr_assert_neq(memcmp(&id, &held, sizeof(id)), 0);
    cr_assert_eq(tc_ring_del(ctx, "big", 3, 1000), TC_OK);
    cr_assert_eq(known("big", 1000, &id, &same), TC_ENOTFOUND);
    cr_assert_eq(same, 0);
    cr_assert_eq(tc_ring_set(ctx, "exp", 3, kbig, sizeof(kbig), 5000, 0, 1000), TC_OK);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(known("exp", 1000, &id, &same), TC_OK);
    }
    cr_assert_eq(same, 1);
    cr_assert_eq(known("exp", 5000, &id, &same), TC_ENOTFOUND, "expired, held or not");
}

/* A batch answers exactly as the same gets one by one: hits, misses, bad
 * keys, buffers too small, expired items, across several prefetch waves. */
Test(ring, batch_get_matches_single_gets)
{
    enum { N = 150 };
    static char keys[N][40];
    static unsigned char bufs[N][64], one[64];
    static struct tc_ring_item items[N];
    static enum tc_status st[N];
    static struct tc_ring_getreq q[N];
    char big[TC_RING_KEY_MAX + 2];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (unsigned i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "batch:%u", i);
        unsigned char v[100];
        memset(v, (int)i, sizeof(v));
        size_t vl = i % 5 == 0 ? 100 : 20 + i % 40; /* every fifth too big for 64 */
        if (i % 3 != 0) {                           /* every third is a miss */
            cr_assert_eq(
                tc_ring_set(ctx, keys[i], strlen(keys[i]), v, vl, i % 7 == 0 ? 1500 : 0, i, 1000),
                TC_OK);
        }
    }
    for (unsigned i = 0; i < N; i++) {
        const char *k = i == 10 ? "" : i == 11 ? big : keys[i];
        q[i] = (struct tc_ring_getreq){.key = k,
                                       .klen = strlen(k),
                                       .buf = bufs[i],
                                       .cap = sizeof(bufs[i]),
                                       .item = &items[i],
                                       .status = &st[i],
                                       .now_ms = 2000};
    }
    tc_ring_get_batch(ctx, N, q);
    for (unsigned i = 0; i < N; i++) {
        struct tc_ring_item it1;
        enum tc_status s1 = tc_ring_get(ctx, q[i].key, q[i].klen, 2000, one, sizeof(one), &it1);
        cr_assert_eq(st[i], s1, "key %u: batch %s, single %s", i, tc_status_name(st[i]),
                     tc_status_name(s1));
        if (s1 == TC_OK) {
            cr_assert_eq(items[i].value_len, it1.value_len, "key %u", i);
            cr_assert_eq(items[i].flags, i);
            cr_assert_eq(memcmp(bufs[i], one, it1.value_len), 0, "key %u", i);
        } else if (s1 == TC_ETOOBIG && i != 11) {
            cr_assert_eq(items[i].value_len, 100, "key %u", i);
        }
    }
    /* The expectations themselves, so that a batch and a get that were
     * both wrong the same way still fail. */
    cr_assert_eq(st[3], TC_ENOTFOUND);
    cr_assert_eq(st[5], TC_ETOOBIG);
    cr_assert_eq(st[7], TC_ENOTFOUND); /* expired at 1500 */
    cr_assert_eq(st[10], TC_EINVAL);
    cr_assert_eq(st[11], TC_ETOOBIG);
    cr_assert_eq(st[13], TC_OK);
    tc_ring_get_batch(ctx, 0, q); /* nothing to do, nothing touched */
}

/* ---- trust: who may have made the segment (issue 12, item 8) ----------------------------------
 */

/* What a user other than the server's does in these tests: create the
 * segment wide open, as it would to squat the name, and plant a value. */
static int squat(void *arg)
{
    const unsigned *mode = arg;
    struct tc_ring *r;
    struct tc_ring_ctx *c;
    struct tc_ring_options o = {.size = 4u << 20, .mode = *mode};
    umask(0);
    if (tc_ring_open(name, &o, &r, NULL, 0) != TC_OK || tc_ring_ctx_create(r, &c) != TC_OK ||
        tc_ring_set(c, "planted", 7, "evil", 4, 0, 0, 1000) != TC_OK) {
        return 1;
    }
    tc_ring_ctx_destroy(c);
    tc_ring_close(r);
    return 0;
}

/* Makes the segment as user nobody; skips the test where that cannot be. */
static void squat_as_nobody(unsigned mode, uint32_t *uid)
{
    char why[200];
    int rc = tc_test_as_user("nobody", squat, &mode, uid, NULL, why, sizeof(why));
    if (rc == TC_TEST_ASUSER_SKIP) {
        teardown(); /* cr_skip_test() does not run .fini */
        cr_skip_test("a segment of another uid cannot be made here: %s", why);
    }
    cr_assert_eq(rc, 0, "nobody could not create and fill the segment: %s", why);
}

static enum tc_status try_open(const struct tc_ring_options *o)
{
    struct tc_ring *r2 = NULL;
    err[0] = '\0';
    enum tc_status st = tc_ring_open(name, o, &r2, err, sizeof(err));
    if (st == TC_OK) {
        /* The planted value must not come back through a ring that was
         * refused; through an accepted one it is the caller's choice. */
        tc_ring_close(r2);
    }
    return st;
}

static void expect_refused(const struct tc_ring_options *o, const char *why_part)
{
    enum tc_status st = try_open(o);
    cr_assert_eq(st, TC_EPERM, "opened a segment it must refuse (%s): %s", tc_status_name(st), err);
    char want[160];
    snprintf(want, sizeof(want), "/dev/shm/%s", name);
    cr_assert(strstr(err, want) != NULL, "message must name the path: %s", err);
    snprintf(want, sizeof(want), "tiercache shm unlink %s", name);
    cr_assert(strstr(err, want) != NULL, "message must say how to remove it: %s", err);
    cr_assert(strstr(err, "owner=") != NULL && strstr(err, "mode=") != NULL,
              "message must say how to accept it: %s", err);
    cr_assert(strstr(err, why_part) != NULL, "message must say '%s': %s", why_part, err);
}

static void trust_setup(void)
{
    new_name();
}

TestSuite(trust, .init = trust_setup, .fini = teardown, .timeout = 60);

Test(trust, segment_of_another_uid_is_refused)
{
    uint32_t nobody;
    squat_as_nobody(0666, &nobody);
    struct stat sb;
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_uid, nobody);

    /* Today's server, run as root: attach it whatever owner and mode. */
    struct tc_ring_options o = {.size = 4u << 20};
    expect_refused(&o, "owner is not");
    char who[64];
    snprintf(who, sizeof(who), "owner %u", (unsigned)nobody);
    cr_assert(strstr(err, who) != NULL && strstr(err, "mode 0666") != NULL,
              "message must name the owner and mode found: %s", err);
    /* Attach-only opens (size 0) are held to the same rules. */
    struct tc_ring_options any_size = {.size = 0};
    expect_refused(&any_size, "owner is not");
    /* Accepting the owner alone is not enough while the mode is wider. */
    struct tc_ring_options owner_only = {.size = 4u << 20, .has_owner = 1, .owner_uid = nobody};
    expect_refused(&owner_only, "mode grants 0066 beyond the allowed 0600");
    /* Both accepted explicitly: it opens, and what nobody planted is there. */
    struct tc_ring_options both = {
        .size = 4u << 20, .has_owner = 1, .owner_uid = nobody, .mode = 0666};
    cr_assert_eq(try_open(&both), TC_OK, "%s", err);
    /* Inspection tools may look at it without the checks. */
    struct tc_ring_options tool = {.any_owner = 1};
    struct tc_ring *r2;
    cr_assert_eq(tc_ring_open(name, &tool, &r2, err, sizeof(err)), TC_OK, "%s", err);
    struct tc_ring_stats s;
    tc_ring_stats(r2, &s);
    cr_assert(s.seg_uid == nobody && s.seg_mode == 0666, "stats show owner %u mode %o", s.seg_uid,
              s.seg_mode);
    tc_ring_close(r2);
}

Test(trust, own_segment_wider_than_configured_is_refused)
{
    struct tc_ring_options wide = {.size = 4u << 20, .mode = 0666};
    cr_assert_eq(try_open(&wide), TC_OK, "%s", err); /* creates it 0666, on purpose */
    struct tc_ring_options def = {.size = 4u << 20};
    expect_refused(&def, "mode grants 0066 beyond the allowed 0600");
    struct tc_ring_options g = {.size = 4u << 20, .mode = 0644};
    expect_refused(&g, "mode grants 0022 beyond the allowed 0644");
    cr_assert_eq(try_open(&wide), TC_OK, "%s", err);
    struct tc_ring_options wider = {.size = 4u << 20, .mode = 0777};
    cr_assert_eq(try_open(&wider), TC_OK, "narrower than allowed is fine: %s", err);
}

static unsigned mode_of(void)
{
    struct stat sb;
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    cr_assert_eq(stat(path, &sb), 0);
    return (unsigned)sb.st_mode & 07777;
}

Test(trust, created_segment_has_exactly_the_configured_mode_and_group)
{
    mode_t old = umask(0);
    struct tc_ring_options o = {.size = 1u << 20, .mode = 0640};
    cr_assert_eq(try_open(&o), TC_OK, "%s", err);
    cr_assert_eq(mode_of(), 0640, "umask 0: mode %04o", mode_of());
    tc_ring_unlink(name, NULL, 0);
    umask(077);
    o.mode = 0660;
    cr_assert_eq(try_open(&o), TC_OK, "%s", err);
    cr_assert_eq(mode_of(), 0660, "umask 077: mode %04o", mode_of());
    tc_ring_unlink(name, NULL, 0);
    umask(old);

    /* A configured group is given to the new segment, and checked later. */
    if (geteuid() != 0) {
        teardown();
        cr_skip_test("giving a segment to another group needs root");
    }
    struct tc_ring_options grp = {
        .size = 1u << 20, .mode = 0660, .has_group = 1, .group_gid = 4242};
    cr_assert_eq(try_open(&grp), TC_OK, "%s", err);
    struct stat sb;
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_gid, 4242);
    cr_assert_eq(sb.st_mode & 07777, 0660);
    struct tc_ring_options other = grp;
    other.group_gid = 4243;
    expect_refused(&other, "its group, not 4243, has access");
    struct tc_ring_options nogroup = {.size = 1u << 20, .mode = 0660};
    cr_assert_eq(try_open(&nogroup), TC_OK, "no group configured: the owner's choice: %s", err);
    /* The group does not matter while the mode keeps it out. */
    tc_ring_unlink(name, NULL, 0);
    struct tc_ring_options closed = {
        .size = 1u << 20, .mode = 0600, .has_group = 1, .group_gid = 4242};
    cr_assert_eq(try_open(&closed), TC_OK, "%s", err);
    other = closed;
    other.group_gid = 4243;
    cr_assert_eq(try_open(&other), TC_OK, "%s", err);
}

/* As nobody: a segment to be owned by root cannot be made; nothing is left. */
static int give_away(void *arg)
{
    (void)arg;
    struct tc_ring *r;
    struct tc_ring_options o = {.size = 1u << 20, .has_owner = 1, .owner_uid = 0};
    char e[512] = "";
    if (tc_ring_open(name, &o, &r, e, sizeof(e)) != TC_EPERM || strstr(e, "fchown") == NULL) {
        return 1;
    }
    char path[128];
    struct stat sb;
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    return stat(path, &sb) == 0 ? 2 : 0;
}

Test(trust, creator_that_cannot_give_the_segment_away_fails_cleanly)
{
    char why[200];
    int rc = tc_test_as_user("nobody", give_away, NULL, NULL, NULL, why, sizeof(why));
    if (rc == TC_TEST_ASUSER_SKIP) {
        teardown();
        cr_skip_test("%s", why);
    }
    cr_assert_eq(rc, 0, "as nobody, owner=root must fail with TC_EPERM and leave no segment");
}

/* ---- stats and header read back from a scribbled segment (issue 12, item 8) ---------------------
 */

static void expect_sane(const struct tc_ring_stats *s)
{
#define TC_RING_X(f, i)                                                                            \
    cr_assert_leq(s->f, TC_RING_STAT_MAX, #f " = %llu", (unsigned long long)s->f);
    TC_RING_STATS_COUNTERS(TC_RING_X)
#undef TC_RING_X
    cr_assert_leq(s->items, s->slots);
    cr_assert_leq(s->bytes_used, s->log_capacity);
    cr_assert_leq(s->ctxs, TC_RING_STAT_SLOTS);
    cr_assert_leq(s->locks_held, s->lock_slots);
    cr_assert_eq(s->layout_major, TC_RING_LAYOUT_MAJOR);
}

/* Every key was set to its own name: a hit must give exactly that. */
static void expect_no_wrong_values(unsigned n)
{
    char k[32];
    for (unsigned i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof(k), "key:%u", i);
        enum tc_status st = tc_ring_get(ctx, k, (size_t)kl, 1000, buf, sizeof(buf), &item);
        cr_assert(st == TC_OK || st == TC_ENOTFOUND, "%s: %s", k, tc_status_name(st));
        if (st == TC_OK) {
            cr_assert(item.value_len == (size_t)kl && memcmp(buf, k, (size_t)kl) == 0,
                      "wrong value served for %s", k);
        }
    }
}

Test(ring, scribbled_stats_are_clamped_and_reported)
{
    char k[32];
    for (unsigned i = 0; i < 200; i++) {
        int kl = snprintf(k, sizeof(k), "key:%u", i);
        cr_assert_eq(tc_ring_set(ctx, k, (size_t)kl, k, (size_t)kl, 0, 0, 1000), TC_OK);
    }
    expect_no_wrong_values(200);
    char why[512] = "";
    cr_assert_eq(tc_ring_check(ring, why, sizeof(why)), TC_OK, "clean segment: %s", why);
    struct tc_ring_stats s;
    tc_ring_stats(ring, &s);
    cr_assert(s.sets == 200 && s.hits == 200 && s.stats_rejected == 0 && s.check_failures == 0);

    /* Another process with write access writes garbage over every stat slot
     * and the retired counters: half of it reads as negative int64. */
    size_t len;
    struct tc_ring_hdr *h = map_raw(&len);
    uint64_t seed = 0xfeedface;
    struct tc_ring_stat_slot *slots = (struct tc_ring_stat_slot *)((uint8_t *)h + h->stat_off);
    for (unsigned i = 0; i < TC_RING_STAT_SLOTS; i++) {
        atomic_store(&slots[i].owner_pid, i % 2 ? rnd(&seed) : 0);
        for (unsigned c = 0; c < TC_RING_NCOUNTERS; c++) {
            atomic_store(&slots[i].c[c], rnd(&seed) | 1ull << 63);
        }
    }
    for (unsigned c = 0; c < TC_RING_NCOUNTERS; c++) {
        atomic_store(&h->retired.c[c], 0xA74F5E3B2C1D0E23ull); /* -6390785737979261405 as int64 */
    }
    tc_ring_stats(ring, &s);
    expect_sane(&s);
    cr_assert_gt(s.stats_rejected, TC_RING_STAT_SLOTS * TC_RING_NCOUNTERS);
    cr_assert_gt(s.check_failures, 0);
    cr_assert_eq(tc_ring_check(ring, why, sizeof(why)), TC_ECORRUPT);
    cr_assert(strstr(why, "implausible stat values") != NULL && strstr(why, name) != NULL,
              "reason: %s", why);
    expect_no_wrong_values(200);
    /* Our ctx keeps counting from garbage; a dead owner's garbage is never
     * folded into the retired totals; a new ctx starts its slot from zero. */
    struct tc_ring_ctx *c2;
    cr_assert_eq(tc_ring_ctx_create(ring, &c2), TC_OK);
    tc_ring_ctx_destroy(c2);
    tc_ring_stats(ring, &s);
    expect_sane(&s);

    /* The header: the fixed fields and a head that moves back. */
    uint64_t old_buckets = h->nbuckets;
    h->nbuckets = 1;
    atomic_store(&h->head[1].v, 8);
    tc_ring_stats(ring, &s);
    expect_sane(&s);
    cr_assert_eq(tc_ring_check(ring, why, sizeof(why)), TC_ECORRUPT);
    cr_assert(strstr(why, "header changed since attach") != NULL &&
                  strstr(why, "log head moved back") != NULL,
              "reason: %s", why);
    expect_no_wrong_values(200);
    h->nbuckets = old_buckets;
    /* Sticky: the segment was scribbled on, and stays reported. */
    cr_assert_eq(tc_ring_check(ring, why, sizeof(why)), TC_ECORRUPT);
    munmap(h, len);
}

Test(ring, garbage_in_a_free_slot_is_not_counted_by_its_next_owner)
{
    close_ring();
    size_t len;
    struct tc_ring_hdr *h = map_raw(&len);
    struct tc_ring_stat_slot *slots = (struct tc_ring_stat_slot *)((uint8_t *)h + h->stat_off);
    for (unsigned i = 0; i < TC_RING_STAT_SLOTS; i++) {
        for (unsigned c = 0; c < TC_RING_NCOUNTERS; c++) {
            atomic_store(&slots[i].c[c], 1000 + c); /* plausible, but nobody's */
        }
    }
    open_ring(4u << 20, 0);
    cr_assert_eq(put("a", "1", 1, 0), TC_OK);
    uint64_t mine = 0;
    for (unsigned i = 0; i < TC_RING_STAT_SLOTS; i++) {
        if (atomic_load(&slots[i].owner_pid) == (uint64_t)getpid()) {
            mine = atomic_load(&slots[i].c[3]); /* sets */
        }
    }
    cr_assert_eq(mine, 1, "the new ctx counted on top of garbage: %llu", (unsigned long long)mine);
    munmap(h, len);
}
