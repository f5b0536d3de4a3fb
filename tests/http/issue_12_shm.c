/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 12, item 8 ("shm squatting"), through the real server: a segment
 * that another user made (wide open, with a planted value) keeps tiercache
 * from starting, with a message that says what and how to fix; and a
 * segment scribbled on while the server runs leaves /stats free of absurd
 * numbers, /health degraded, and every GET right or a miss.
 *
 * The other user is real: a forked child that becomes nobody (skipped,
 * with the reason, where the test does not run as root).
 */
#include "shm/ring_layout.h"
#include "tests/support/asuser.h"
#include "tests/support/server.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The largest count /stats may show: 2^53 - 1, which JSON readers hold
 * exactly (shm/ring.h TC_RING_STAT_MAX). */
#define PLAUSIBLE_MAX 9007199254740991ll

static struct tc_test_server srv;
static char name[64];
static char uri[256];

static void setup(void)
{
    static int n;
    snprintf(name, sizeof(name), "tc-issue12-%d-%d", (int)getpid(), n++);
    snprintf(uri, sizeof(uri), "shm://%s?size=4M", name);
    memset(&srv, 0, sizeof(srv));
}

static void teardown(void)
{
    cr_expect(tc_test_server_stop_clean(&srv), "server did not exit cleanly (status %d):\n%s",
              srv.exit_status, srv.log);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/%s", name);
    unlink(path);
}

TestSuite(issue_12_shm, .init = setup, .fini = teardown, .timeout = 60);

static int start(const char *tier_uri)
{
    const char *args[] = {"--tier", tier_uri, "--workers", "2", "--sweep-interval", "100ms", NULL};
    return tc_test_server_start(&srv, args);
}

static struct tc_test_resp http(const char *method, const char *target, const char *body)
{
    struct tc_test_resp r;
    int rc =
        tc_test_http(srv.port, method, target, body ? "Content-Type: application/json\r\n" : NULL,
                     body, body ? strlen(body) : 0, &r);
    cr_assert_eq(rc, 0, "%s %s: no answer", method, target);
    return r;
}

/* As nobody, umask 0: the segment open to everyone, a value planted in it
 * through the same tier code the server uses. */
static int squat(void *arg)
{
    (void)arg;
    char wide[300], err[512];
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    umask(0);
    snprintf(wide, sizeof(wide), "%s&mode=0666", uri);
    if (tc_tier_open(NULL, wide, &t, err, sizeof(err)) != TC_OK ||
        tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
        return 1;
    }
    struct tc_tier_req r = {.key = "planted", .key_len = 7, .value = "evil", .value_len = 4};
    r.now_ms = 1000;
    r.hdr.encoding = TC_ENC_STRING;
    r.hdr.created_ms = 1000;
    int rc = tc_tier_set(c, &r) == TC_OK ? 0 : 2;
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
    return rc;
}

/* The line of the log that holds @p needle, copied out. */
static int log_line(const char *needle, char *line, size_t n)
{
    const char *at = strstr(srv.log, needle);
    if (at == NULL) {
        return 0;
    }
    const char *b = at, *e = at;
    while (b > srv.log && b[-1] != '\n') {
        b--;
    }
    while (*e != '\0' && *e != '\n') {
        e++;
    }
    snprintf(line, n, "%.*s", (int)(e - b), b);
    return 1;
}

Test(issue_12_shm, squatted_segment_keeps_the_server_from_starting)
{
    uint32_t nobody;
    char why[200];
    int rc = tc_test_as_user("nobody", squat, NULL, &nobody, NULL, why, sizeof(why));
    if (rc == TC_TEST_ASUSER_SKIP) {
        teardown();
        cr_skip_test("a segment of another uid cannot be made here: %s", why);
    }
    cr_assert_eq(rc, 0, "nobody could not make the segment and plant a value (%d)", rc);

    if (start(uri) == 0) {
        struct tc_test_resp r = http("GET", "/cache/planted", NULL);
        cr_assert_fail("the server started on a segment of uid %u, mode 0666; GET /cache/planted "
                       "-> %d %s (X-Cache-Tier %s)",
                       (unsigned)nobody, r.status, r.body, r.x_cache_tier);
    }
    char line[2048], want[160];
    cr_assert(log_line("tiercache: --tier", line, sizeof(line)), "no startup error on stderr:\n%s",
              srv.log);
    /* Readable: one line of printable text that names the segment, what is
     * wrong with it and both ways out. */
    for (const char *p = line; *p != '\0'; p++) {
        cr_assert(isprint((unsigned char)*p), "unprintable byte %#x in: %s", (unsigned char)*p,
                  line);
    }
    cr_assert_lt(strlen(line), 700, "an overlong message: %s", line);
    snprintf(want, sizeof(want), "/dev/shm/%s", name);
    cr_assert(strstr(line, want) != NULL, "no path: %s", line);
    snprintf(want, sizeof(want), "owner %u (nobody)", (unsigned)nobody);
    cr_assert(strstr(line, want) != NULL, "no owner: %s", line);
    cr_assert(strstr(line, "mode 0666") != NULL && strstr(line, "refused") != NULL,
              "no mode or verdict: %s", line);
    snprintf(want, sizeof(want), "tiercache shm unlink %s", name);
    cr_assert(strstr(line, want) != NULL, "no removal command: %s", line);
    cr_assert(strstr(line, "owner=") != NULL && strstr(line, "mode=") != NULL,
              "no way to accept it: %s", line);

    /* Accepting that owner and mode is a choice the URI can make. */
    char accept[300];
    snprintf(accept, sizeof(accept), "%s&owner=nobody&mode=0666", uri);
    cr_assert_eq(start(accept), 0, "did not start with owner= and mode=:\n%s", srv.log);
    struct tc_test_resp r = http("GET", "/cache/planted", NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);

    /* Removed, the name is the server's own again. */
    int st = tc_test_server_stop(&srv, SIGTERM);
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    srv.pid = 0;
    snprintf(want, sizeof(want), "/dev/shm/%s", name);
    cr_assert_eq(unlink(want), 0);
    cr_assert_eq(start(uri), 0, "%s", srv.log);
    r = http("GET", "/cache/planted", NULL);
    cr_assert_eq(r.status, 404, "%s", r.body);
    tc_test_resp_free(&r);
}

/* Every number anywhere in @p j is a count a reader can believe. */
static void expect_plausible(json_t *j, const char *path)
{
    char sub[256];
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        cr_assert(v >= 0 && v <= PLAUSIBLE_MAX, "/stats %s = %lld", path, (long long)v);
    } else if (json_is_real(j)) {
        double v = json_real_value(j);
        cr_assert(v >= 0 && v <= (double)PLAUSIBLE_MAX, "/stats %s = %g", path, v);
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            expect_plausible(v, sub);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            expect_plausible(v, sub);
        }
    }
}

static json_t *get_json(const char *target)
{
    struct tc_test_resp r = http("GET", target, NULL);
    cr_assert_eq(r.status, 200, "%s -> %d %s", target, r.status, r.body);
    json_error_t e;
    json_t *j = json_loads(r.body, 0, &e);
    cr_assert_not_null(j, "%s: not JSON: %s", target, r.body);
    tc_test_resp_free(&r);
    return j;
}

enum { NKEYS = 100 };

/* Each key holds "val-<i>": a 200 must say exactly that. */
static unsigned check_gets(void)
{
    unsigned hits = 0;
    for (unsigned i = 0; i < NKEYS; i++) {
        char target[64], want[64];
        snprintf(target, sizeof(target), "/cache/k%u", i);
        snprintf(want, sizeof(want), "\"value\":\"val-%u\"", i);
        struct tc_test_resp r = http("GET", target, NULL);
        cr_assert(r.status == 200 || r.status == 404, "%s -> %d %s", target, r.status, r.body);
        if (r.status == 200) {
            cr_assert(strstr(r.body, want) != NULL, "wrong value for %s: %s", target, r.body);
            hits++;
        }
        tc_test_resp_free(&r);
    }
    return hits;
}

Test(issue_12_shm, scribbled_segment_gives_sane_stats_and_degraded_health)
{
    cr_assert_eq(start(uri), 0, "%s", srv.log);
    for (unsigned i = 0; i < NKEYS; i++) {
        char target[64], body[64];
        snprintf(target, sizeof(target), "/cache/k%u", i);
        snprintf(body, sizeof(body), "{\"value\":\"val-%u\",\"ttl\":600}", i);
        struct tc_test_resp r = http("PUT", target, body);
        cr_assert_eq(r.status, 200, "%s", r.body);
        tc_test_resp_free(&r);
    }
    cr_assert_eq(check_gets(), NKEYS);
    json_t *h = get_json("/health");
    cr_assert_str_eq(json_string_value(json_object_get(h, "status")), "ok");
    json_decref(h);

    /* A second process with write access scribbles over the stat slots,
     * the retired counters and a fixed header field of the live segment. */
    char path[128];
    snprintf(path, sizeof(path), "/%s", name);
    int fd = shm_open(path, O_RDWR, 0);
    cr_assert_geq(fd, 0);
    struct tc_ring_hdr *hdr = mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(hdr, MAP_FAILED);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint64_t *w = (uint64_t *)((uint8_t *)hdr + hdr->stat_off);
    for (size_t i = 0; i < TC_RING_STAT_SLOTS * sizeof(struct tc_ring_stat_slot) / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[i] = x | 1ull << 63; /* negative as int64 */
    }
    memset(&hdr->retired, 0xa7, sizeof(hdr->retired));
    hdr->seed ^= 0x5a5a;
    munmap(hdr, 4u << 20);

    json_t *s = get_json("/stats");
    expect_plausible(s, "");
    json_t *l1 = json_array_get(json_object_get(s, "tiers"), 0);
    cr_assert_gt(json_integer_value(json_object_get(l1, "stats_rejected")), 0);
    cr_assert_gt(json_integer_value(json_object_get(l1, "check_failures")), 0);
    json_decref(s);

    h = get_json("/health");
    cr_assert_str_eq(json_string_value(json_object_get(h, "status")), "degraded", "%s",
                     json_dumps(h, 0));
    json_t *t = json_array_get(json_object_get(h, "tiers"), 0);
    const char *detail = json_string_value(json_object_get(t, "detail"));
    cr_assert_str_eq(json_string_value(json_object_get(t, "status")), "degraded");
    cr_assert(detail != NULL && strstr(detail, "scribbled") != NULL &&
                  strstr(detail, "header changed") != NULL &&
                  strstr(detail, "implausible stat values") != NULL,
              "detail: %s", detail ? detail : "(none)");
    json_decref(h);

    /* The values stay right: the ring reads its geometry and seed from the
     * copy it took at attach, and validates every record. */
    cr_assert_eq(check_gets(), NKEYS);
    struct tc_test_resp r = http("PUT", "/cache/after", "{\"value\":\"still\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tc_test_resp_free(&r);
    r = http("GET", "/cache/after", NULL);
    cr_assert(r.status == 200 && strstr(r.body, "\"value\":\"still\"") != NULL, "%d %s", r.status,
              r.body);
    tc_test_resp_free(&r);
    s = get_json("/stats");
    expect_plausible(s, "");
    json_decref(s);
}
