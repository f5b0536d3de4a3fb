/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * /metrics and /stats (src/metrics.c, issue 13 item 2), through the real
 * server over every backend (shm L1, LMDB L2, a private redis-server as L3)
 * with an origin behind it:
 *
 *   - promtool check metrics (Debian's prometheus package) finds nothing;
 *     skipped, saying so, when promtool is not installed;
 *   - the names follow tiercache's conventions (tests/support/metrics_lint.h);
 *   - /stats and /metrics, two renderers of one registry, agree, and count
 *     what the requests did.
 *
 * And the name rules themselves: each fails on a name that breaks it.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "src/metrics.h"
#include "tests/support/metrics_lint.h"
#include "tests/support/origin.h"
#include "tests/support/redis_server.h"
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the name rules, each on a name that breaks it ---------------------------------- */

/* Every family the rules require, well named. */
static const char good[] =
    "# HELP process_cpu_seconds_total User and system CPU time, in seconds.\n"
    "# TYPE process_cpu_seconds_total counter\n"
    "process_cpu_seconds_total 1.5\n"
    "# HELP process_resident_memory_bytes Resident memory, in bytes.\n"
    "# TYPE process_resident_memory_bytes gauge\n"
    "process_resident_memory_bytes 4096\n"
    "# HELP process_open_fds File descriptors open.\n"
    "# TYPE process_open_fds gauge\n"
    "process_open_fds 12\n"
    "# HELP process_start_time_seconds Start, in seconds since the epoch.\n"
    "# TYPE process_start_time_seconds gauge\n"
    "process_start_time_seconds 1700000000\n"
    "# HELP tiercache_build_info Always 1: the label version is the version.\n"
    "# TYPE tiercache_build_info gauge\n"
    "tiercache_build_info{version=\"0.1.0\"} 1\n"
    "# HELP tiercache_http_request_duration_seconds Time to answer, in seconds.\n"
    "# TYPE tiercache_http_request_duration_seconds histogram\n"
    "tiercache_http_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",code=\"200\","
    "le=\"0.001\"} 1\n"
    "tiercache_http_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",code=\"200\","
    "le=\"+Inf\"} 1\n"
    "tiercache_http_request_duration_seconds_sum{route=\"/health\",method=\"GET\",code=\"200\"} "
    "0.0001\n"
    "tiercache_http_request_duration_seconds_count{route=\"/health\",method=\"GET\",code=\"200\"} "
    "1\n"
    "# HELP tiercache_http_cache_hits_total Reads answered X-Cache: HIT from the tier.\n"
    "# TYPE tiercache_http_cache_hits_total counter\n"
    "tiercache_http_cache_hits_total{tier=\"l1\",scheme=\"shm\"} 3\n"
    "# HELP tiercache_http_cache_stale_total Reads answered X-Cache: STALE from the tier.\n"
    "# TYPE tiercache_http_cache_stale_total counter\n"
    "tiercache_http_cache_stale_total{tier=\"l1\",scheme=\"shm\"} 0\n"
    "# HELP tiercache_http_cache_misses_total Reads answered X-Cache: MISS.\n"
    "# TYPE tiercache_http_cache_misses_total counter\n"
    "tiercache_http_cache_misses_total 1\n"
    "# HELP tiercache_tier_health Health of the tier, 1 for its state.\n"
    "# TYPE tiercache_tier_health gauge\n"
    "tiercache_tier_health{tier=\"l1\",scheme=\"shm\",state=\"ok\"} 1\n"
    "tiercache_tier_health{tier=\"l1\",scheme=\"shm\",state=\"down\"} 0\n"
    "# HELP tiercache_shm_segment_hits_total Gets that found a value, by every process.\n"
    "# TYPE tiercache_shm_segment_hits_total counter\n"
    "tiercache_shm_segment_hits_total{segment=\"tc-l1\"} 7\n"
    "# HELP tiercache_lmdb_commit_batch_writes Writes per transaction.\n"
    "# TYPE tiercache_lmdb_commit_batch_writes summary\n"
    "tiercache_lmdb_commit_batch_writes_sum{tier=\"l2\",scheme=\"lmdb\"} 10\n"
    "tiercache_lmdb_commit_batch_writes_count{tier=\"l2\",scheme=\"lmdb\"} 2\n";

static int lint(const char *text, char *report, size_t len)
{
    return tc_test_metrics_lint(text, report, len);
}

Test(metrics_lint, good_names_pass)
{
    char report[4096];
    cr_assert_eq(lint(good, report, sizeof(report)), 0, "%s", report);
}

/* A family, and the rule it breaks. */
static const char *const bad[][2] = {
    {"# HELP tiercache_Tier_Items Entries in the tier.\n# TYPE tiercache_Tier_Items gauge\n"
     "tiercache_Tier_Items 1\n",
     "names"},
    {"# HELP cache_items Entries in the tier.\n# TYPE cache_items gauge\ncache_items 1\n",
     "prefix"},
    {"# HELP tiercache_tier_hits Gets the tier answered.\n# TYPE tiercache_tier_hits counter\n"
     "tiercache_tier_hits 1\n",
     "total"},
    {"# HELP tiercache_tier_items_total Entries in the tier.\n"
     "# TYPE tiercache_tier_items_total gauge\ntiercache_tier_items_total 1\n",
     "total"},
    {"# HELP tiercache_tier_bytes_used Bytes the entries take.\n"
     "# TYPE tiercache_tier_bytes_used gauge\ntiercache_tier_bytes_used 1\n",
     "units"},
    {"# HELP tiercache_request_time_ms Time to answer.\n# TYPE tiercache_request_time_ms gauge\n"
     "tiercache_request_time_ms 1\n",
     "units"},
    {"# HELP tiercache_tier_log_capacity Bytes of the log.\n"
     "# TYPE tiercache_tier_log_capacity gauge\ntiercache_tier_log_capacity 1\n",
     "units"},
    {"# HELP tiercache_tier_gets_total Tier stat 'gets'.\n"
     "# TYPE tiercache_tier_gets_total counter\ntiercache_tier_gets_total{tier=\"l1\","
     "scheme=\"mem\"} 1\n",
     "help"},
    {"# TYPE tiercache_tier_sets_total counter\n"
     "tiercache_tier_sets_total{tier=\"l1\",scheme=\"mem\"} 1\n",
     "help"},
    {"# HELP tiercache_tier_foo_x_total The mem tier's stat \"x\", which no row of "
     "src/metrics.c describes.\n# TYPE tiercache_tier_foo_x_total counter\n"
     "tiercache_tier_foo_x_total{tier=\"l1\",scheme=\"foo\"} 1\n",
     "help"},
    {"tiercache_untyped 1\n", "type"},
    {"# HELP tiercache_workers Worker threads.\n# TYPE tiercache_workers gauge\n"
     "tiercache_workers 1\n# HELP tiercache_workers Worker threads.\n"
     "# TYPE tiercache_workers gauge\n",
     "duplicate"},
    {"# HELP tiercache_sweeps_total Sweeper passes.\n# TYPE tiercache_sweeps_total counter\n"
     "tiercache_sweeps_total{tier=\"l1\",scheme=\"mem\"} 1\n"
     "# HELP tiercache_tier_sweeps_total Sweeper passes.\n"
     "# TYPE tiercache_tier_sweeps_total counter\n"
     "tiercache_tier_sweeps_total{tier=\"l1\",scheme=\"mem\"} 1\n",
     "duplicate"},
    {"# HELP tiercache_tier_swept_total Entries swept.\n# TYPE tiercache_tier_swept_total counter\n"
     "tiercache_tier_swept_total{tier=\"l1\"} 1\n",
     "tier-labels"},
    {"# HELP tiercache_tier_reads_total Reads of the tier.\n"
     "# TYPE tiercache_tier_reads_total counter\n"
     "tiercache_tier_reads_total{tier=\"l1\",scheme=\"mem\",worker=\"3\"} 1\n",
     "tier-labels"},
    {"# HELP tiercache_tier_reads_total Reads of the tier.\n"
     "# TYPE tiercache_tier_reads_total counter\n"
     "tiercache_tier_reads_total{tier=\"l1\",scheme=\"mem\"} 1\n"
     "tiercache_tier_reads_total{tier=\"l2\",scheme=\"lmdb\",op=\"get\"} 1\n",
     "tier-labels"},
    {"# HELP tiercache_tier_circuit_state The circuit: 0 closed, 1 half-open, 2 open.\n"
     "# TYPE tiercache_tier_circuit_state gauge\n"
     "tiercache_tier_circuit_state{tier=\"l3\",scheme=\"redis\"} 2\n",
     "enum"},
    {"# HELP tiercache_tier_commit_batch_mean Writes per commit.\n"
     "# TYPE tiercache_tier_commit_batch_mean gauge\n"
     "tiercache_tier_commit_batch_mean{tier=\"l2\",scheme=\"lmdb\"} 3\n",
     "mean"},
    {"# HELP tiercache_tier_shm_hits_total Gets that found a value, every process.\n"
     "# TYPE tiercache_tier_shm_hits_total counter\n"
     "tiercache_tier_shm_hits_total{tier=\"l1\",scheme=\"shm\"} 1\n",
     "segment"},
    {"# HELP tiercache_shm_segment_sets_total Records written, every process.\n"
     "# TYPE tiercache_shm_segment_sets_total counter\n"
     "tiercache_shm_segment_sets_total{tier=\"l1\",scheme=\"shm\"} 1\n",
     "segment"},
};

Test(metrics_lint, each_rule_fails_on_a_name_that_breaks_it)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = strlen(good) + strlen(bad[i][0]) + 1;
        char *text = malloc(n);
        cr_assert_not_null(text);
        snprintf(text, n, "%s%s", good, bad[i][0]);
        char report[4096], want[32];
        int v = lint(text, report, sizeof(report));
        snprintf(want, sizeof(want), "%s: ", bad[i][1]);
        cr_expect_gt(v, 0, "case %zu (%s) passed:\n%s", i, bad[i][1], bad[i][0]);
        cr_expect(strstr(report, want) != NULL, "case %zu: no \"%s\" violation in:\n%s", i,
                  bad[i][1], report);
        free(text);
    }
}

Test(metrics_lint, required_families_are_required)
{
    /* The good text without process_open_fds. */
    char *text = strdup(good);
    cr_assert_not_null(text);
    char *p = strstr(text, "# HELP process_open_fds");
    char *q = strstr(text, "# HELP process_start_time_seconds");
    cr_assert(p != NULL && q != NULL);
    memmove(p, q, strlen(q) + 1);
    char report[4096];
    cr_expect_eq(lint(text, report, sizeof(report)), 1, "%s", report);
    cr_expect(strstr(report, "required: process_open_fds") != NULL, "%s", report);
    free(text);
}

/* ---- the registry's own rows ---------------------------------------------------------- */

Test(metrics_registry, rows_follow_the_conventions)
{
    char err[4096];
    cr_expect_eq(tc_metrics_check(err, sizeof(err)), 0, "%s", err);
}

/* ---- the real server, every backend, an origin --------------------------------------- */

static struct tc_test_server srv;
static struct tc_redis_server *redis;
static struct tc_test_origin origin;
static char shm_name[64], lmdb_dir[64];

static void start(void)
{
    static int n;
    snprintf(shm_name, sizeof(shm_name), "tc-metrics-%d-%d", (int)getpid(), n++);
    strcpy(lmdb_dir, "/tmp/tc-metrics-XXXXXX");
    cr_assert_not_null(mkdtemp(lmdb_dir));
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "redis-server did not start");
    cr_assert_eq(tc_test_origin_start(&origin, NULL), 0, "tc-test-origin did not start");
    char l1[128], l2[128], l3[128];
    snprintf(l1, sizeof(l1), "shm://%s?size=8M", shm_name);
    snprintf(l2, sizeof(l2), "lmdb://%s?map_size=32M&sync=none", lmdb_dir);
    snprintf(l3, sizeof(l3), "redis://127.0.0.1:%u/0?prefix=tcm:&timeout_ms=500",
             tc_redis_server_port(redis));
    /* No sweeps while the two renderers are compared (a sweep is an LMDB commit). */
    const char *args[] = {"--tier",   l1,         "--tier",    l2,  "--tier",           l3,
                          "--origin", origin.url, "--workers", "2", "--sweep-interval", "3600",
                          NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "%s", srv.log);
}

static void stop(void)
{
    cr_expect(tc_test_server_stop_clean(&srv), "server did not exit cleanly (status %d):\n%s",
              srv.exit_status, srv.log);
    tc_test_origin_stop(&origin);
    tc_redis_server_destroy(redis);
    redis = NULL;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' /dev/shm/%s*", lmdb_dir, shm_name);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(metrics, .init = start, .fini = stop, .timeout = 120);

static int request(const char *method, const char *target, const char *body)
{
    struct tc_test_resp r;
    const char *h = body != NULL ? "Content-Type: application/json\r\n" : NULL;
    cr_assert_eq(tc_test_http(srv.port, method, target, h, body, body ? strlen(body) : 0, &r), 0,
                 "%s %s: no answer", method, target);
    int st = r.status;
    tc_test_resp_free(&r);
    return st;
}

static char *get_body(const char *target)
{
    struct tc_test_resp r;
    cr_assert_eq(tc_test_http(srv.port, "GET", target, NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s -> %d %s", target, r.status, r.body);
    char *b = r.body;
    r.body = NULL;
    tc_test_resp_free(&r);
    return b;
}

/* What the tests count on: writes, hits, misses (the origin's value, a 404
 * from the origin), HEAD, DELETE, a lock, a 405, a path with no route. */
enum { PUTS = 3, HITS = 5, MISSES = 2 };

static void workload(void)
{
    char target[64], body[64];
    for (int i = 0; i < PUTS; i++) {
        snprintf(target, sizeof(target), "/cache/k%d", i);
        snprintf(body, sizeof(body), "{\"value\":\"v%d\",\"ttl\":600}", i);
        cr_assert_eq(request("PUT", target, body), 200);
    }
    for (int i = 0; i < HITS - 1; i++) {
        cr_assert_eq(request("GET", "/cache/k0", NULL), 200);
    }
    cr_assert_eq(request("HEAD", "/cache/k1", NULL), 200);
    cr_assert_eq(request("GET", "/cache/from-origin", NULL), 200); /* a miss, filled */
    cr_assert_eq(tc_test_origin_config(&origin, "status=404"), 0);
    cr_assert_eq(request("GET", "/cache/nowhere", NULL), 404); /* a miss, not found */
    cr_assert_eq(request("DELETE", "/cache/k2", NULL), 200);
    cr_assert_eq(request("POST", "/locks/job", "{\"ttl\":5}"), 200);
    cr_assert_eq(request("POST", "/stats", "{}"), 405);
    cr_assert_eq(request("GET", "/nope", NULL), 404);
}

static int promtool_path(char *out, size_t len)
{
    FILE *p = popen("command -v promtool", "r");
    if (p == NULL) {
        return -1;
    }
    int ok = fgets(out, (int)len, p) != NULL;
    pclose(p);
    if (!ok) {
        return -1;
    }
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

Test(metrics, promtool_check_metrics_is_clean)
{
    char promtool[256];
    if (promtool_path(promtool, sizeof(promtool)) != 0) {
        cr_skip_test("promtool is not installed (Debian: apt-get install prometheus, or "
                     "deploy/deps.sh): /metrics not checked by promtool");
    }
    workload();
    char *text = get_body("/metrics");
    char path[] = "/tmp/tc-metrics-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "'%s' check metrics < '%s' 2>&1", promtool, path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char said[8192];
    size_t n = fread(said, 1, sizeof(said) - 1, p);
    said[n] = '\0';
    int st = pclose(p);
    unlink(path);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0 && n == 0,
              "promtool check metrics (exit %d):\n%s", WEXITSTATUS(st), said);
    free(text);
}

Test(metrics, names_follow_the_conventions)
{
    workload();
    char *text = get_body("/metrics");
    static char report[65536];
    int v = tc_test_metrics_lint(text, report, sizeof(report));
    cr_expect_eq(v, 0, "%d violations:\n%s", v, report);
    /* Every backend's own families are there (none fell back to a generic name). */
    static const char *const want[] = {
        "tiercache_shm_segment_hits_total{segment=\"",
        "tiercache_lmdb_commit_batch_writes_count{tier=\"l2\",scheme=\"lmdb\"}",
        "tiercache_redis_circuit_state{tier=\"l3\",scheme=\"redis\",state=\"closed\"} 1",
        "tiercache_tier_health{tier=\"l1\",scheme=\"shm\",state=\"ok\"} 1",
        "tiercache_origin_requests_total ",
        "tiercache_dogpile_scope{scope=\"cluster\"} 1",
        "tiercache_build_info{version=\"",
        "tiercache_http_request_duration_seconds_bucket{route=\"/cache/{key}\",method=\"GET\","
        "code=\"200\",le=\"+Inf\"}",
        "tiercache_http_request_duration_seconds_count{route=\"none\",method=\"GET\","
        "code=\"404\"} 1",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        cr_expect(strstr(text, want[i]) != NULL, "no %s in /metrics", want[i]);
    }
    cr_expect(strstr(text, "code=\"other\"") == NULL, "a status outside TC_WORKER_CODES:\n%s",
              text);
    free(text);
}

/* The value of the series @p series ("name{labels}") in @p text; -1 if absent. */
static double series(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            return strtod(p + n + 1, NULL);
        }
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return -1;
}

/* The sum of the series of family @p name whose labels include @p label. */
static double sum_series(const char *text, const char *name, const char *label)
{
    double sum = 0;
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0';) {
        const char *end = strchr(p, '\n');
        if (strncmp(p, name, n) == 0 && p[n] == '{') {
            const char *close = strstr(p, "} "); /* a value may hold '}' ("/cache/{key}") */
            const char *hit = strstr(p, label);
            if (close != NULL && hit != NULL && hit < close && (end == NULL || close < end)) {
                sum += strtod(close + 2, NULL);
            }
        }
        p = end != NULL ? end + 1 : NULL;
    }
    return sum;
}

static long long jint(json_t *root, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *j = root;
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k != NULL && j != NULL;
         k = strtok_r(NULL, ".", &save)) {
        j = json_is_array(j) ? json_array_get(j, strtoul(k, NULL, 10)) : json_object_get(j, k);
    }
    cr_assert(json_is_integer(j), "/stats has no integer at %s", path);
    return (long long)json_integer_value(j);
}

Test(metrics, stats_and_metrics_agree)
{
    workload();
    char *stats = get_body("/stats");
    char *text = get_body("/metrics");
    json_error_t e;
    json_t *j = json_loads(stats, 0, &e);
    cr_assert_not_null(j, "%s", stats);

    /* What the requests did, counted once in each. */
    cr_expect_eq(jint(j, "cache.hits.l1"), HITS);
    cr_expect_eq(series(text, "tiercache_http_cache_hits_total{tier=\"l1\",scheme=\"shm\"}"), HITS);
    cr_expect_eq(jint(j, "cache.misses"), MISSES);
    cr_expect_eq(series(text, "tiercache_http_cache_misses_total"), MISSES);
    cr_expect_eq(jint(j, "requests.by_status.405"), 1);
    cr_expect_eq(sum_series(text, "tiercache_http_request_duration_seconds_count", "code=\"405\""),
                 1);
    cr_expect_eq(jint(j, "requests.by_status.404"), 2);
    cr_expect_eq(sum_series(text, "tiercache_http_request_duration_seconds_count", "code=\"404\""),
                 2);
    cr_expect_eq(series(text,
                        "tiercache_http_request_duration_seconds_count{route=\"/cache/{key}\","
                        "method=\"PUT\",code=\"200\"}"),
                 PUTS);
    cr_expect_eq(jint(j, "origin.requests"), MISSES);
    cr_expect_eq(series(text, "tiercache_origin_requests_total"), MISSES);

    /* The same counters read through both renderers. */
    static const struct {
        const char *json, *series;
    } same[] = {
        {"tiers.0.hits", "tiercache_tier_hits_total{tier=\"l1\",scheme=\"shm\"}"},
        {"tiers.0.sets", "tiercache_tier_sets_total{tier=\"l1\",scheme=\"shm\"}"},
        {"tiers.1.sets", "tiercache_tier_sets_total{tier=\"l2\",scheme=\"lmdb\"}"},
        {"tiers.2.sets", "tiercache_tier_sets_total{tier=\"l3\",scheme=\"redis\"}"},
        {"tiers.2.deletes", "tiercache_tier_deletes_total{tier=\"l3\",scheme=\"redis\"}"},
        {"tiers.1.commit_ops",
         "tiercache_lmdb_commit_batch_writes_sum{tier=\"l2\",scheme=\"lmdb\"}"},
        {"tiers.1.commit_batches",
         "tiercache_lmdb_commit_batch_writes_count{tier=\"l2\",scheme=\"lmdb\"}"},
        {"dogpile.acquired", "tiercache_dogpile_acquired_total"},
        {"dogpile.origin_fetches", "tiercache_dogpile_origin_fetches_total"},
        {"origin.responses", "tiercache_origin_responses_total"},
        {"http.parse_errors", "tiercache_http_parse_errors_total"},
        {"invalidations.applied", "tiercache_invalidations_applied_total"},
    };
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        long long a = jint(j, same[i].json);
        double b = series(text, same[i].series);
        cr_expect_eq((double)a, b, "/stats %s = %lld, /metrics %s = %g", same[i].json, a,
                     same[i].series, b);
    }
    cr_expect_eq(jint(j, "tiers.0.sets"), PUTS + 1);
    cr_expect_geq(jint(j, "tiers.0.hits"), HITS);

    /* The segment's own counters are the ring's, under "segment". */
    char seg[160];
    snprintf(seg, sizeof(seg), "tiercache_shm_segment_sets_total{segment=\"%s\"}", shm_name);
    cr_expect_eq((double)jint(j, "tiers.0.segment.sets"), series(text, seg), "%s", text);
    cr_expect_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(j, "tiers"), 2), "circuit_state")),
                     "closed");
    json_decref(j);
    free(stats);
    free(text);
}
