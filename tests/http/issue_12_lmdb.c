/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 12, item 4, end to end: the server over an LMDB L2 whose data.mdb
 * was damaged while it was stopped. It used to die of SIGBUS at the first
 * GET after a truncation, and to refuse to start at all when LMDB refused
 * the file. Now:
 *
 *   truncated      it starts (the environment moved aside, a crit line in
 *                  the log), GETs answer 404, /health shows what happened;
 *   damaged while  the GET that meets the damage answers 404 (a miss, not a
 *   it runs        5xx, not a crash), the tier goes down and /health says
 *                  why; the next start moves the environment aside;
 *   on_corrupt=fail  it refuses to start, with a message that says so.
 *
 * The environment is written through the tier API in this process (faster
 * than thousands of PUTs) and closed before the server starts.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "tests/support/lmdb_damage.h"
#include "tests/support/server.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { NKEYS = 2000 };

static struct tc_test_server srv;
static char dir[64], l2[256];

static void setup(void)
{
    strcpy(dir, "/tmp/tc-issue12-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(l2, sizeof(l2), "lmdb://%s?map_size=16M&sync=none", dir);
}

static void teardown(void)
{
    if (srv.pid > 0) {
        tc_test_server_stop(&srv, SIGKILL);
    }
    tc_test_rm_flat_dir(dir);
}

TestSuite(issue_12_lmdb, .init = setup, .fini = teardown, .timeout = 90);

static void key_of(int i, char *k, size_t cap)
{
    snprintf(k, cap, "key:%05d", i);
}

/* NKEYS string values "v-KEY|..." of 20 to 300 bytes: a tc_data tree with a
 * branch page at its root. */
static void fill(void)
{
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[512], k[32], v[400];
    cr_assert_eq(tc_tier_open(NULL, l2, &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int i = 0; i < NKEYS; i++) {
        key_of(i, k, sizeof(k));
        int n = snprintf(v, sizeof(v), "v-%s|", k);
        size_t len = 20 + (size_t)(i * 37) % 300;
        memset(v + n, 'x', len - (size_t)n);
        struct tc_tier_req r = {
            .key = k, .key_len = strlen(k), .value = v, .value_len = len, .now_ms = now};
        r.hdr.encoding = TC_ENC_STRING;
        r.hdr.created_ms = now;
        cr_assert_eq(tc_tier_set(c, &r), TC_OK);
    }
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

static int start(const char *tier)
{
    const char *args[] = {"--workers", "2", "--sweep-interval", "100ms", "--tier", tier, NULL};
    return tc_test_server_start(&srv, args);
}

static struct tc_test_resp get(const char *target)
{
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "GET", target, NULL, NULL, 0, &r), 0,
                 "GET %s: no answer (did the server die?)\n%s", target,
                 (tc_test_server_drain_log(&srv), srv.log));
    return r;
}

Test(issue_12_lmdb, truncated_l2_starts_answers_404_and_health_says_why)
{
    fill();
    char data[128];
    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    cr_assert_eq(truncate(data, 5 * 4096 + 100), 0);
    cr_assert_eq(start(l2), 0, "tiercache did not start:\n%s", srv.log);
    for (int i = 0; i < NKEYS; i += 97) {
        char target[64], k[32];
        key_of(i, k, sizeof(k));
        snprintf(target, sizeof(target), "/cache/%s", k);
        struct tc_test_resp r = get(target);
        cr_assert_eq(r.status, 404, "GET %s: %d %s", target, r.status, r.body);
        tc_test_resp_free(&r);
    }
    struct tc_test_resp h = get("/health");
    cr_assert_eq(h.status, 200, "%s", h.body);
    cr_assert(strstr(h.body, "\"status\":\"ok\"") && strstr(h.body, "damaged") &&
                  strstr(h.body, "moved"),
              "/health does not tell: %s", h.body);
    tc_test_resp_free(&h);
    tc_test_server_drain_log(&srv);
    cr_assert(strstr(srv.log, " crit ") && strstr(srv.log, "data.mdb.corrupt-"),
              "no crit line about the move:\n%s", srv.log);
    /* Serving normally from the new environment. */
    struct tc_test_resp p;
    cr_assert_eq(tc_test_http(srv.port, "PUT", "/cache/again", "Content-Type: application/json\r\n",
                              "{\"value\":\"v\"}", 13, &p),
                 0);
    cr_assert_eq(p.status, 200, "%s", p.body);
    tc_test_resp_free(&p);
    struct tc_test_resp g = get("/cache/again");
    cr_assert_eq(g.status, 200);
    tc_test_resp_free(&g);
    int st = tc_test_server_stop(&srv, SIGTERM);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d\n%s", st, srv.log);
}

Test(issue_12_lmdb, damage_met_at_run_time_is_a_miss_and_takes_l2_down)
{
    fill();
    uint64_t ps, last, root;
    unsigned depth;
    cr_assert_eq(tc_test_lmdb_geometry(dir, &ps, &last), 0);
    cr_assert_eq(tc_test_lmdb_db_root(dir, "tc_data", &root, &depth), 0);
    cr_assert_geq(depth, 2);
    unsigned char *pg = malloc(ps);
    cr_assert_eq(tc_test_lmdb_page_read(dir, root, pg, ps), 0);
    char damaged[64], target[96];
    tc_test_lmdb_branch_key(pg, 1, damaged, sizeof(damaged)); /* first key under child 1 */
    cr_assert_eq(start(l2), 0, "tiercache did not start:\n%s", srv.log);
    /* The first leaf is whole: the server does read this environment. */
    struct tc_test_resp ok = get("/cache/key:00000");
    cr_assert_eq(ok.status, 200, "%s", ok.body);
    tc_test_resp_free(&ok);
    /* Then the disk goes bad under it (the open checks every page, so the
     * damage must come while it runs to be met by a GET). */
    tc_test_lmdb_set_branch_child(pg, 1, last + 1000);
    cr_assert_eq(tc_test_lmdb_page_write(dir, root, pg, ps), 0);
    free(pg);
    snprintf(target, sizeof(target), "/cache/%s", damaged);
    for (int i = 0; i < 3; i++) {
        struct tc_test_resp r = get(target);
        cr_assert_eq(r.status, 404, "GET %s (try %d): %d %s", target, i, r.status, r.body);
        tc_test_resp_free(&r);
    }
    struct tc_test_resp h = get("/health");
    cr_assert_eq(h.status, 503, "the only tier is down: %d %s", h.status, h.body);
    cr_assert(strstr(h.body, "\"status\":\"down\"") && strstr(h.body, "MDB_PAGE_NOTFOUND"),
              "/health does not tell: %s", h.body);
    tc_test_resp_free(&h);
    /* Every tier down: a GET is a miss. */
    struct tc_test_resp m = get("/cache/key:00000");
    cr_assert_eq(m.status, 404, "%d %s", m.status, m.body);
    tc_test_resp_free(&m);
    int st = tc_test_server_stop(&srv, SIGTERM);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d\n%s", st, srv.log);
    /* The next start recovers by itself. */
    cr_assert_eq(start(l2), 0, "tiercache did not start again:\n%s", srv.log);
    struct tc_test_resp h2 = get("/health");
    cr_assert_eq(h2.status, 200, "%s", h2.body);
    cr_assert(strstr(h2.body, "marked damaged at run time"), "%s", h2.body);
    tc_test_resp_free(&h2);
}

Test(issue_12_lmdb, on_corrupt_fail_refuses_to_start)
{
    fill();
    char data[128], tier[300];
    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    cr_assert_eq(truncate(data, 5 * 4096 + 100), 0);
    snprintf(tier, sizeof(tier), "%s&on_corrupt=fail", l2);
    cr_assert_neq(start(tier), 0, "started on a damaged environment with on_corrupt=fail");
    cr_assert(strstr(srv.log, "damaged") && strstr(srv.log, "on_corrupt=fail"),
              "unclear message:\n%s", srv.log);
}
