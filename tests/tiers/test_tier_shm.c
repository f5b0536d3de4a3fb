/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Tests of tiers/tier_shm.c beyond the conformance suite: the trust
 * parameters of a shm:// URI (owner=, group=, mode=) against segments made
 * by another user, and the tier's health and stats over a segment that
 * another process scribbled on (issue 12, item 8). Real segments, a real
 * second uid (a forked child that becomes nobody; skipped where the test
 * does not run as root).
 */
#include "shm/ring.h"
#include "shm/ring_layout.h"
#include "tests/support/asuser.h"
#include "tests/support/shm_damage.h"
#include "tests/support/stats.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char name[64];
static char uri[256];
static char err[1024];

static void setup(void)
{
    static unsigned counter;
    snprintf(name, sizeof(name), "tc-test-tier-shm-%ld-%u", (long)getpid(), counter++);
    tc_ring_unlink(name, NULL, 0);
}

static void teardown(void)
{
    tc_ring_unlink(name, NULL, 0);
}

TestSuite(tier_shm, .init = setup, .fini = teardown, .timeout = 60);

static enum tc_status open_uri(const char *params, struct tc_tier **t)
{
    snprintf(uri, sizeof(uri), "shm://%s?size=4M%s%s", name, params[0] ? "&" : "", params);
    err[0] = '\0';
    *t = NULL;
    return tc_tier_open(NULL, uri, t, err, sizeof(err));
}

static void expect_open(const char *params)
{
    struct tc_tier *t;
    enum tc_status st = open_uri(params, &t);
    cr_assert_eq(st, TC_OK, "%s: %s (%s)", uri, err, tc_status_name(st));
    tc_tier_close(t);
}

static void expect_refused(const char *params, enum tc_status want, const char *part)
{
    struct tc_tier *t;
    enum tc_status st = open_uri(params, &t);
    if (st == TC_OK) {
        tc_tier_close(t);
    }
    cr_assert_eq(st, want, "%s: %s, want %s: %s", uri, tc_status_name(st), tc_status_name(want),
                 err);
    cr_assert(strstr(err, part) != NULL, "%s: message must say '%s': %s", uri, part, err);
}

static void set_one(struct tc_tier *t, const char *k, const char *v)
{
    struct tc_tier_ctx *c;
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct tc_tier_req r = {.key = k, .key_len = strlen(k), .value = v, .value_len = strlen(v)};
    r.now_ms = 1000;
    r.hdr.encoding = TC_ENC_STRING;
    r.hdr.created_ms = 1000;
    cr_assert_eq(tc_tier_set(c, &r), TC_OK);
    tc_tier_ctx_dispose(c);
}

/* As nobody, with umask 0: the segment open to all, as a squatter makes it. */
static int squat(void *arg)
{
    (void)arg;
    struct tc_tier *t;
    umask(0);
    if (open_uri("mode=0666", &t) != TC_OK) {
        return 1;
    }
    set_one(t, "planted", "evil");
    tc_tier_close(t);
    return 0;
}

Test(tier_shm, owner_group_mode_parameters)
{
    uint32_t nobody;
    char why[200];
    int rc = tc_test_as_user("nobody", squat, NULL, &nobody, NULL, why, sizeof(why));
    if (rc == TC_TEST_ASUSER_SKIP) {
        teardown();
        cr_skip_test("a segment of another uid cannot be made here: %s", why);
    }
    cr_assert_eq(rc, 0, "nobody could not make the segment");

    char p[128];
    expect_refused("", TC_EPERM, "is refused: owner is not");
    expect_refused("mode=0666", TC_EPERM, "owner is not");
    expect_refused("owner=nobody", TC_EPERM, "mode grants 0066 beyond the allowed 0600");
    expect_open("owner=nobody&mode=0666");
    snprintf(p, sizeof(p), "owner=%u&mode=0666", (unsigned)nobody);
    expect_open(p);
    /* A group is checked when the mode lets the group in. */
    struct group *g = getgrgid(65534);
    snprintf(p, sizeof(p), "owner=nobody&mode=0666&group=%u", (unsigned)nobody + 1);
    expect_refused(p, TC_EPERM, "its group, not");
    if (g != NULL) {
        snprintf(p, sizeof(p), "owner=nobody&mode=0666&group=%s", g->gr_name);
        expect_open(p);
    }

    expect_refused("owner=no-such-user-tc", TC_EINVAL, "owner");
    expect_refused("group=no-such-group-tc", TC_EINVAL, "group");
    expect_refused("owner=4294967295", TC_EINVAL, "owner");
    expect_refused("mode=0400", TC_EINVAL, "0600");
    expect_refused("mode=9", TC_EINVAL, "mode");
}

Test(tier_shm, created_segment_gets_the_configured_group_and_mode)
{
    if (geteuid() != 0) {
        teardown();
        cr_skip_test("giving a segment to another group needs root");
    }
    mode_t old = umask(0);
    expect_open("mode=0660&group=4242");
    umask(old);
    struct stat sb;
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 07777, 0660);
    cr_assert_eq(sb.st_gid, 4242);
    cr_assert_eq(sb.st_uid, 0);
    expect_open("mode=0660&group=4242");
    expect_refused("mode=0660&group=4243", TC_EPERM, "its group, not 4243");
}

static void expect_stats_sane(struct tc_tier *t, const char *when)
{
    static const char *const names[] = {"shm_hits",     "shm_misses", "shm_sets",   "evictions",
                                        "promotions",   "expired",    "torn_reads", "corrupt",
                                        "swept",        "lost_sets",  "items",      "bytes_used",
                                        "attached_ctxs"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        uint64_t v;
        cr_assert(tc_test_tier_stat(t, names[i], &v), "no stat %s", names[i]);
        cr_assert_leq(v, TC_RING_STAT_MAX, "%s: %s = %llu", when, names[i], (unsigned long long)v);
    }
    uint64_t items, slots, used, cap;
    tc_test_tier_stat(t, "items", &items);
    tc_test_tier_stat(t, "index_slots", &slots);
    tc_test_tier_stat(t, "bytes_used", &used);
    tc_test_tier_stat(t, "log_capacity", &cap);
    cr_assert(items <= slots && used <= cap, "%s: gauges beyond the geometry", when);
}

Test(tier_shm, scribbled_segment_is_degraded_and_its_stats_clamped)
{
    struct tc_tier *t;
    cr_assert_eq(open_uri("", &t), TC_OK, "%s", err);
    set_one(t, "k", "v");
    char detail[256];
    cr_assert_eq(tc_tier_health(t, detail, sizeof(detail)), TC_HEALTH_OK, "%s", detail);
    expect_stats_sane(t, "clean");
    uint64_t v;
    cr_assert(tc_test_tier_stat(t, "check_failures", &v) && v == 0);

    /* Another process with write access: garbage over the stat slots. */
    char path[128];
    snprintf(path, sizeof(path), "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    cr_assert_geq(fd, 0);
    struct tc_ring_hdr *h = mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(h, MAP_FAILED);
    memset((uint8_t *)h + h->stat_off, 0xa7, TC_RING_STAT_SLOTS * sizeof(struct tc_ring_stat_slot));
    memset(&h->retired, 0xa7, sizeof(h->retired));
    expect_stats_sane(t, "stat slots scribbled");
    cr_assert_eq(tc_tier_health(t, detail, sizeof(detail)), TC_HEALTH_DEGRADED);
    cr_assert(strstr(detail, "implausible stat values") != NULL && strstr(detail, name) != NULL &&
                  strstr(detail, "tiercache shm unlink") != NULL,
              "detail: %s", detail);
    cr_assert(tc_test_tier_stat(t, "stats_rejected", &v) && v > 0);
    cr_assert(tc_test_tier_stat(t, "check_failures", &v) && v > 0);
    munmap(h, 4u << 20);
    tc_tier_close(t);

    /* A header scribbled after attach, with clean stats. */
    teardown();
    cr_assert_eq(open_uri("", &t), TC_OK, "%s", err);
    fd = shm_open(path, O_RDWR, 0);
    h = mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(h, MAP_FAILED);
    cr_assert_eq(tc_tier_health(t, detail, sizeof(detail)), TC_HEALTH_OK, "%s", detail);
    h->seed ^= 1;
    cr_assert_eq(tc_tier_health(t, detail, sizeof(detail)), TC_HEALTH_DEGRADED);
    cr_assert(strstr(detail, "header changed since attach") != NULL, "detail: %s", detail);
    munmap(h, 4u << 20);
    tc_tier_close(t);
}

/* ---- hot copies of large values ------------------------------------------------------------- */

static uint8_t bigv[3][65536];

static void big_set(struct tc_tier_ctx *c, const char *k, const uint8_t *v, size_t n)
{
    struct tc_tier_req r = {.key = k, .key_len = strlen(k), .value = v, .value_len = n};
    r.now_ms = 1000;
    r.hdr.encoding = TC_ENC_BINARY;
    r.hdr.created_ms = 1000;
    cr_assert_eq(tc_tier_set(c, &r), TC_OK);
}

static enum tc_status big_get(struct tc_tier_ctx *c, const char *k, struct tc_buf *out)
{
    struct tc_tier_req r = {.key = k, .key_len = strlen(k), .out = out, .now_ms = 1000};
    return tc_tier_get(c, &r);
}

static void expect_value(struct tc_tier_ctx *c, const char *k, const uint8_t *v, size_t n,
                         const char *when)
{
    struct tc_buf out = TC_BUF_INIT;
    cr_assert_eq(big_get(c, k, &out), TC_OK, "%s: %s unreadable", when, k);
    cr_assert(out.len == n && memcmp(out.data, v, n) == 0, "%s: %s has a wrong value", when, k);
    tc_buf_deinit(&out);
}

static uint64_t stat_u(struct tc_tier *t, const char *n)
{
    uint64_t v = 0;
    cr_assert(tc_test_tier_stat(t, n, &v), "no stat %s", n);
    return v;
}

/* Another process writes or deletes the key: a child that opens the same
 * segment through its own tier. */
static void in_child(int op, const char *k, const uint8_t *v, size_t n)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct tc_tier *t;
        struct tc_tier_ctx *c;
        if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK ||
            tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
            _exit(2);
        }
        struct tc_tier_req r = {.key = k, .key_len = strlen(k), .value = v, .value_len = n};
        r.now_ms = 1000;
        r.hdr.encoding = TC_ENC_BINARY;
        r.hdr.created_ms = 1000;
        enum tc_status st = op == 0 ? tc_tier_set(c, &r) : tc_tier_del(c, &r);
        tc_tier_ctx_dispose(c);
        tc_tier_close(t);
        _exit(st == TC_OK ? 0 : 1);
    }
    int ws = 0;
    cr_assert_eq(waitpid(pid, &ws, 0), pid);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the other process failed");
}

/* Flips a byte of every copy of @p mark in the segment (as a process with
 * write access that scribbles on values); returns how many. */
static int scribble(const char *mark)
{
    int n = tc_test_shm_flip_all(name, mark);
    cr_assert_geq(n, 0, "segment %s not mapped", name);
    return n;
}

static void fill_values(void)
{
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < sizeof(bigv[i]); j++) {
            bigv[i][j] = (uint8_t)(j * (unsigned)(7 + i) + (unsigned)i);
        }
        memcpy(bigv[i] + 40000, i == 0 ? "MARKZERO" : i == 1 ? "MARKONE_" : "MARKTWO_", 8);
    }
}

Test(tier_shm, hot_copies_serve_only_the_live_record)
{
    fill_values();
    struct tc_tier *t;
    cr_assert_eq(open_uri("", &t), TC_OK, "%s", err);
    struct tc_tier_ctx *c;
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    big_set(c, "big", bigv[0], sizeof(bigv[0]));
    for (int i = 0; i < 4; i++) {
        expect_value(c, "big", bigv[0], sizeof(bigv[0]), "repeated reads");
    }
    uint64_t hot = stat_u(t, "hot_hits");
    cr_assert_geq(hot, 2, "no hit was served from the hot copy");
    cr_assert_geq(stat_u(t, "hot_bytes"), sizeof(bigv[0]));

    /* Another process writes a new value of the same size, then deletes. */
    in_child(0, "big", bigv[1], sizeof(bigv[1]));
    expect_value(c, "big", bigv[1], sizeof(bigv[1]), "after another process's set");
    cr_assert_eq(stat_u(t, "hot_hits"), hot, "the old copy answered a changed record");
    in_child(1, "big", NULL, 0);
    struct tc_buf out = TC_BUF_INIT;
    cr_assert_eq(big_get(c, "big", &out), TC_ENOTFOUND, "a deleted key was served");
    cr_assert_eq(out.len, 0);

    /* A value read as a view outlives the copy it was lent from. */
    big_set(c, "big", bigv[2], sizeof(bigv[2]));
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(big_get(c, "big", &out), TC_OK);
    }
    cr_assert_neq(out.block, NULL, "the third read is lent, not copied");
    tc_tier_ctx_dispose(c);
    cr_assert(out.len == sizeof(bigv[2]) && memcmp(out.data, bigv[2], out.len) == 0);
    tc_buf_deinit(&out);

    /* Value bytes scribbled under an unchanged header: the holder of the
     * checked copy serves it, a ctx without one finds the damage; neither
     * ever hands out the scribble. */
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    for (int i = 0; i < 3; i++) {
        expect_value(c, "big", bigv[2], sizeof(bigv[2]), "before the scribble");
    }
    cr_assert_geq(scribble("MARKTWO_"), 1);
    expect_value(c, "big", bigv[2], sizeof(bigv[2]), "the holder after the scribble");
    struct tc_tier_ctx *c2;
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c2), TC_OK);
    enum tc_status st = big_get(c2, "big", &out);
    cr_assert_neq(st, TC_OK, "the scribbled record was served");
    cr_assert_eq(out.len, 0);
    cr_assert_eq(big_get(c, "big", &out), TC_ENOTFOUND, "found damaged: gone for the holder too");
    tc_buf_deinit(&out);
    tc_tier_ctx_dispose(c2);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

Test(tier_shm, hot_copies_stay_within_their_bytes_and_can_be_turned_off)
{
    fill_values();
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    /* 150 KiB: two 64 KiB values fit, a third pushes the least recent out. */
    cr_assert_eq(open_uri("hot=150K", &t), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    const char *keys[3] = {"k0", "k1", "k2"};
    for (int i = 0; i < 3; i++) {
        big_set(c, keys[i], bigv[i], sizeof(bigv[i]));
        for (int j = 0; j < 3; j++) {
            expect_value(c, keys[i], bigv[i], sizeof(bigv[i]), "fill");
        }
        cr_assert_leq(stat_u(t, "hot_bytes"), 150u << 10);
    }
    uint64_t hot = stat_u(t, "hot_hits");
    expect_value(c, "k2", bigv[2], sizeof(bigv[2]), "most recent");
    expect_value(c, "k1", bigv[1], sizeof(bigv[1]), "kept");
    cr_assert_eq(stat_u(t, "hot_hits"), hot + 2);
    expect_value(c, "k0", bigv[0], sizeof(bigv[0]), "pushed out: read from the segment");
    cr_assert_eq(stat_u(t, "hot_hits"), hot + 2, "k0's copy was kept past the budget");
    /* A value smaller than 16 KiB is never copied aside. */
    big_set(c, "small", bigv[0], 1000);
    for (int j = 0; j < 3; j++) {
        expect_value(c, "small", bigv[0], 1000, "small");
    }
    cr_assert_eq(stat_u(t, "hot_hits"), hot + 2);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);

    teardown();
    cr_assert_eq(open_uri("hot=0", &t), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    big_set(c, "big", bigv[0], sizeof(bigv[0]));
    for (int j = 0; j < 4; j++) {
        expect_value(c, "big", bigv[0], sizeof(bigv[0]), "hot=0");
    }
    cr_assert_eq(stat_u(t, "hot_hits"), 0);
    cr_assert_eq(stat_u(t, "hot_bytes"), 0);
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}
