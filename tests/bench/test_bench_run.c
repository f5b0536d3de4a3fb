/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache-bench end to end: a run file of three stacks (shm, shm+lmdb,
 * shm+lmdb+redis, against a private redis-server) and two workloads (Zipf
 * with deletes, closed loop; a CSV trace, open loop), run by the real binary.
 * Checks every output file (results.json by name, results.csv, report.md,
 * the plots as non-empty SVG and PNG images), that unknown run-file fields
 * are refused by name, and that nothing is left behind (no shm segment with
 * its name, no LMDB directory, no Redis key under its prefix), also after a
 * SIGINT in the middle of a cell.
 */
#include "tests/support/redis_server.h"
#include "tests/support/server.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[64], shm_base[64];

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}
static struct tc_redis_server *redis;

static void setup(void)
{
    strcpy(dir, "/tmp/tc-test-bench-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(shm_base, sizeof(shm_base), "tc-test-bench-%ld", (long)getpid());
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0);
}

static void teardown(void)
{
    char cmd[160];
    tc_redis_server_destroy(redis);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' /dev/shm/%s*", dir, shm_base);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(bench_run, .init = setup, .fini = teardown, .timeout = 100);

static void write_file(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static void write_trace(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/t.csv", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 30000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned k = (unsigned)(x % 4000);
        k = k < 2000 ? k % 200 : k; /* a hot tenth */
        fprintf(f, "%d,k%u,%u,%s\n", i, k, 64 + k % 200, i % 10 == 0 ? "set" : "get");
    }
    cr_assert_eq(fclose(f), 0);
}

/* The stacks of the run file; @p seconds per cell. */
static void write_run(const char *name, double seconds, int nstacks)
{
    char text[4096], stacks[2048];
    unsigned port = tc_redis_server_port(redis);
    char l1[128], l2[256], l3[256];
    snprintf(l1, sizeof(l1), "\"shm://%s?size=1M\"", shm_base);
    snprintf(l2, sizeof(l2), "\"lmdb://%s/l2?map_size=64M&sync=none\"", dir);
    snprintf(l3, sizeof(l3), "\"redis://127.0.0.1:%u/0?prefix=tbt:&timeout_ms=1000\"", port);
    if (nstacks == 1) {
        snprintf(stacks, sizeof(stacks), "{\"name\":\"all\",\"tiers\":[%s,%s,%s]}", l1, l2, l3);
    } else {
        snprintf(stacks, sizeof(stacks),
                 "{\"name\":\"shm\",\"tiers\":[%s]},"
                 "{\"name\":\"shm+lmdb\",\"tiers\":[%s,%s]},"
                 "{\"name\":\"shm+lmdb+redis\",\"tiers\":[%s,%s,%s]}",
                 l1, l1, l2, l1, l2, l3);
    }
    snprintf(
        text, sizeof(text),
        "{\"stacks\":[%s],\n"
        " \"workloads\":[\n"
        "  {\"name\":\"zipf\",\"keys\":20000,\"zipf\":0.9,\"value_size\":{\"uniform\":[50,150]},"
        "\"ttl\":{\"weighted\":[[60,1],[600,3]]},\"mix\":{\"get\":0.8,\"set\":0.1,"
        "\"delete\":0.1},\"warmup\":0.2,\"seconds\":%g,\"inflight\":4,"
        "\"sim\":{\"sizes\":[\"512K\",\"2M\"],\"requests\":100000}},\n"
        "  {\"name\":\"trace\",\"trace\":\"%s/t.csv\",\"trace_format\":\"csv\","
        "\"csv\":{\"time\":1,\"key\":2,\"size\":3,\"op\":4},\"rate\":20000,\"inflight\":16,"
        "\"seconds\":%g}],\n"
        " \"repeat\":1, \"output\":\"%s/out\"}\n",
        stacks, seconds, dir, seconds, dir);
    write_file(name, text);
}

/* Starts the bench with stdout and stderr into DIR/NAME.out / .err. */
static pid_t start(const char *name, char *const argv[])
{
    char out[256], err[256];
    snprintf(out, sizeof(out), "%s/%s.out", dir, name);
    snprintf(err, sizeof(err), "%s/%s.err", dir, name);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(o, 1);
        dup2(e, 2);
        execv(TC_BENCH_BIN, argv);
        _exit(127);
    }
    return pid;
}

/* The exit code, or -1 when it does not exit within @p seconds (killed). */
static int finish(pid_t pid, int seconds)
{
    for (int i = 0; i < seconds * 20; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static char *slurp(const char *name, size_t *len)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *buf = malloc(1 << 22);
    size_t n = fread(buf, 1, (1 << 22) - 1, f);
    buf[n] = '\0';
    fclose(f);
    if (len) {
        *len = n;
    }
    return buf;
}

static void check_nothing_left(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL) {
        cr_expect(strncmp(e->d_name, shm_base, strlen(shm_base)) != 0,
                  "segment /dev/shm/%s left behind", e->d_name);
    }
    closedir(d);
    char l2[128];
    struct stat sb;
    snprintf(l2, sizeof(l2), "%s/l2", dir);
    cr_expect(stat(l2, &sb) != 0, "LMDB directory %s left behind", l2);
    redisContext *c = redisConnect("127.0.0.1", (int)tc_redis_server_port(redis));
    cr_assert(c != NULL && c->err == 0);
    redisReply *r = redisCommand(c, "KEYS tbt:*");
    cr_assert(r != NULL && r->type == REDIS_REPLY_ARRAY);
    cr_expect_eq(r->elements, 0, "%zu Redis keys left behind, e.g. %s", r->elements,
                 r->elements ? r->element[0]->str : "");
    freeReplyObject(r);
    redisFree(c);
}

static void check_image(const char *name)
{
    char path[128];
    size_t n = 0;
    snprintf(path, sizeof(path), "out/plots/%s.svg", name);
    char *svg = slurp(path, &n);
    cr_assert_not_null(svg, "%s missing", path);
    cr_expect(n > 1000 && strstr(svg, "<svg") != NULL && strstr(svg, "</svg>") != NULL,
              "%s is not an SVG image (%zu bytes)", path, n);
    free(svg);
    snprintf(path, sizeof(path), "out/plots/%s.png", name);
    char *png = slurp(path, &n);
    cr_assert_not_null(png, "%s missing", path);
    cr_expect(n > 2000 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0,
              "%s is not a PNG image (%zu bytes)", path, n);
    free(png);
}

Test(bench_run, matrix_outputs_and_cleanup)
{
    char file[128];
    write_trace();
    write_run("run.json", 1, 3);
    snprintf(file, sizeof(file), "%s/run.json", dir);
    char *argv[] = {"tiercache-bench", "run", file, NULL};
    int rc = finish(start("run", argv), 90);
    char *err = slurp("run.err", NULL);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    free(err);

    json_error_t je;
    char path[128];
    snprintf(path, sizeof(path), "%s/out/results.json", dir);
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "results.json: %s", je.text);
    json_t *cells = json_object_get(j, "cells");
    cr_assert_eq(json_array_size(cells), 6);
    static const char *const names[] = {"shm", "lmdb", "redis"};
    size_t i;
    json_t *c;
    int l2_hits = 0;
    json_array_foreach(cells, i, c)
    {
        json_t *tiers = json_object_get(c, "tiers");
        size_t nt = json_array_size(tiers);
        const char *stack = json_string_value(json_object_get(c, "stack"));
        cr_expect_eq(nt, i % 3 + 1, "cell %zu (%s): %zu tiers", i, stack, nt);
        cr_expect(json_number_value(json_object_get(c, "throughput")) > 0, "%s", stack);
        cr_expect(json_integer_value(json_object_get(c, "gets")) > 0);
        cr_expect_eq(json_integer_value(json_object_get(c, "errors")), 0, "%s: %s", stack,
                     json_string_value(json_object_get(c, "error")));
        for (size_t t = 0; t < nt; t++) {
            json_t *tier = json_array_get(tiers, t);
            cr_expect_str_eq(json_string_value(json_object_get(tier, "name")), names[t]);
            cr_expect(json_is_real(json_object_get(tier, "share")));
            cr_expect(json_is_object(json_object_get(tier, "latency")));
            if (t == 1) {
                l2_hits += json_integer_value(json_object_get(tier, "hits")) > 0;
            }
        }
        cr_expect(json_array_size(json_object_get(c, "sim")) > 0 || i >= 3);
        if (i >= 3) {
            /* Open loop at 20000/s: never more than asked for. */
            cr_expect(json_number_value(json_object_get(c, "throughput")) < 20000 * 1.05, "%s: %f",
                      stack, json_number_value(json_object_get(c, "throughput")));
        }
    }
    cr_expect(l2_hits > 0, "cache-aside with a 1M L1: L2 must serve some gets");
    cr_expect_eq(json_array_size(json_object_get(j, "summary")), 6);
    cr_expect(json_array_size(json_object_get(j, "sim")) >= 4, "LRU and FIFO at 512K, 1M, 2M");
    json_decref(j);

    char *csv = slurp("out/results.csv", NULL);
    cr_assert_not_null(csv);
    int lines = 0;
    for (char *p = csv; *p; p++) {
        lines += *p == '\n';
    }
    cr_expect_eq(lines, 1 + 2 * (2 + 3 + 4), "a header and a row per cell and tier (+ miss)");
    cr_expect(strstr(csv, "\"shm+lmdb+redis\",\"trace\",0,") != NULL);
    free(csv);
    char *md = slurp("out/report.md", NULL);
    cr_assert_not_null(md);
    cr_expect(strstr(md, "## Throughput and tiers") != NULL);
    cr_expect(strstr(md, "| shm+lmdb+redis | zipf |") != NULL);
    cr_expect(strstr(md, "![mrc](plots/mrc.svg)") != NULL);
    free(md);
    static const char *const plots[] = {"throughput", "tier_share", "latency_cdf", "mrc"};
    for (size_t p = 0; p < 4; p++) {
        check_image(plots[p]);
    }
    check_nothing_left();
}

Test(bench_run, unknown_fields_refused_by_name)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"stacks\":[{\"name\":\"a\",\"tiers\":[\"mem://\"]}],\"workloads\":[{\"name\":\"w\","
         "\"zipff\":1}],\"output\":\"x\"}",
         "workloads[0]: unknown field 'zipff' (valid: name, keys,"},
        {"{\"stacks\":[{\"name\":\"a\",\"tierz\":[]}],\"workloads\":[{\"name\":\"w\"}]}",
         "stacks[0]: unknown field 'tierz'"},
        {"{\"stacks\":[],\"workloads\":[],\"outptu\":\"x\"}", "run file: unknown field 'outptu'"},
        {"{\"stacks\":[{\"name\":\"a\",\"tiers\":[\"mem://\"]}],\"workloads\":[{\"name\":\"w\","
         "\"mix\":{\"get\":1,\"del\":1}}]}",
         "workloads[0].mix: unknown field 'del' (valid: get, set, delete)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char file[128];
        write_file("bad.json", cases[i].text);
        snprintf(file, sizeof(file), "%s/bad.json", dir);
        char *argv[] = {"tiercache-bench", "run", file, "--out", dir, NULL};
        int rc = finish(start("bad", argv), 30);
        char *err = slurp("bad.err", NULL);
        cr_expect_eq(rc, 2, "case %zu: exit %d", i, rc);
        cr_expect(err && strstr(err, cases[i].want) != NULL, "case %zu: %s", i, err);
        free(err);
    }
}

Test(bench_run, sigint_mid_run_leaves_nothing)
{
    char file[128], l2[128];
    struct stat sb;
    write_trace();
    write_run("long.json", 60, 1);
    snprintf(file, sizeof(file), "%s/long.json", dir);
    snprintf(l2, sizeof(l2), "%s/l2", dir);
    char *argv[] = {"tiercache-bench", "run", file, NULL};
    pid_t pid = start("long", argv);
    /* The first cell is running once its LMDB directory exists. */
    int up = 0;
    for (int i = 0; i < 300 && !up; i++) {
        up = stat(l2, &sb) == 0;
        sleep_ms(50);
    }
    cr_assert(up, "the cell never started");
    sleep_ms(700);
    kill(pid, SIGINT);
    int rc = finish(pid, 30);
    char *err = slurp("long.err", NULL);
    cr_expect_eq(rc, 130, "exit %d: %s", rc, err);
    free(err);
    char *res = slurp("out/results.json", NULL);
    cr_expect(res && strstr(res, "\"interrupted\": true") != NULL,
              "the interrupted cell is in results.json");
    free(res);
    check_nothing_left();
}

/* HTTP mode against the real server: pipelined keep-alive requests, and
 * the per-tier split read from X-Cache-Tier. */
Test(bench_run, http_against_the_server)
{
    char l1[128], l2[160], url[64];
    struct tc_test_server srv;
    snprintf(l1, sizeof(l1), "shm://%s-srv?size=1M", shm_base);
    snprintf(l2, sizeof(l2), "lmdb://%s/srv-l2?map_size=64M&sync=none", dir);
    const char *args[] = {"--tier", l1, "--tier", l2, NULL};
    cr_assert_eq(tc_test_server_start(&srv, args), 0, "%s", srv.log);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", srv.port);
    char *argv[] = {"tiercache-bench",
                    "--url",
                    url,
                    "--keys",
                    "20000",
                    "--zipf",
                    "0.9",
                    "--mix",
                    "8,1,1",
                    "--seconds",
                    "1",
                    "--connections",
                    "2",
                    "--pipeline",
                    "4",
                    "--inflight",
                    "8",
                    "--json",
                    NULL};
    int rc = finish(start("http", argv), 60);
    tc_test_server_stop(&srv, SIGTERM);
    char *out = slurp("http.out", NULL), *err = slurp("http.err", NULL);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert_not_null(j, "%s: %s", je.text, out);
    cr_expect(json_integer_value(json_object_get(j, "gets")) > 100, "%s", out);
    cr_expect(json_integer_value(json_object_get(j, "deletes")) > 0, "%s", out);
    cr_expect_eq(json_integer_value(json_object_get(j, "errors")), 0, "%s", out);
    json_t *t0 = json_array_get(json_object_get(j, "tiers"), 0);
    json_t *t1 = json_array_get(json_object_get(j, "tiers"), 1);
    cr_expect_str_eq(json_string_value(json_object_get(t0, "name")), "l1");
    cr_expect(json_integer_value(json_object_get(t0, "hits")) > 0, "%s", out);
    cr_expect_str_eq(json_string_value(json_object_get(t1, "name")), "l2");
    json_decref(j);
    free(out);
    free(err);
}

/* A hostile-enough peer: counts the GETs that carry the bearer token. */
struct peer {
    int lfd;
    unsigned port;
    int with_token, without;
};

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    int fd = accept(p->lfd, NULL, NULL);
    char buf[65536];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n <= 0) {
            break;
        }
        have += (size_t)n;
        buf[have] = '\0';
        char *end;
        while ((end = strstr(buf, "\r\n\r\n")) != NULL) {
            *end = '\0';
            const char *h = strstr(buf, "\r\nAuthorization: Bearer t0k-en");
            if (h != NULL && (h[30] == '\r' || h[30] == '\0')) {
                p->with_token++;
            } else {
                p->without++;
            }
            const char *ans = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
            if (write(fd, ans, strlen(ans)) < 0) {
                break;
            }
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, buf + used, have - used);
            have -= used;
            buf[have] = '\0';
        }
    }
    close(fd);
    return NULL;
}

Test(bench_run, http_token_file_sent_as_bearer)
{
    struct peer p = {0};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    p.lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(p.lfd >= 0);
    cr_assert_eq(bind(p.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(p.lfd, 4), 0);
    cr_assert_eq(getsockname(p.lfd, (struct sockaddr *)&a, &al), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, peer_main, &p), 0);
    char url[64], tf[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(a.sin_port));
    write_file("token", "t0k-en\n");
    snprintf(tf, sizeof(tf), "%s/token", dir);
    char *argv[] = {
        "tiercache-bench",  "--url",     url,   "--token-file",  tf,  "--read-ratio", "1",
        "--no-cache-aside", "--seconds", "0.5", "--connections", "1", "--json",       NULL};
    int rc = finish(start("tok", argv), 30);
    pthread_join(th, NULL);
    close(p.lfd);
    char *err = slurp("tok.err", NULL);
    cr_expect_eq(rc, 0, "exit %d: %s", rc, err);
    free(err);
    cr_expect(p.with_token > 10, "%d requests carried the token", p.with_token);
    cr_expect_eq(p.without, 0, "%d requests without it", p.without);
}
