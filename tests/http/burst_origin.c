/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache-burst against a real tc-test-origin: every client gets its own
 * answer, the JSON report counts them right, and the origin saw exactly one
 * request per client. A plain program (not Criterion) so that it also runs
 * in the TSan pass with the other process tests.
 */
#include "tests/support/check.h"
#include "tests/support/origin.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TC_BURST_BIN
#error "TC_BURST_BIN must name the tiercache-burst binary"
#endif

static json_t *burst(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s", TC_BURST_BIN, args);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadf(p, 0, &e);
    int rc = pclose(p);
    CHECK(rc == 0, "%s exited with %d", cmd, rc);
    CHECK(j != NULL, "%s: no JSON report (%s)", cmd, e.text);
    return j;
}

static long long get(json_t *j, const char *path)
{
    /* "a.b.c": nested objects */
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = j;
    for (char *tok = strtok(buf, "."); tok != NULL && v != NULL; tok = strtok(NULL, ".")) {
        v = json_object_get(v, tok);
    }
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

int main(void)
{
    struct tc_test_origin o;
    static const char *const args[] = {"--delay-ms", "200", "--cache-control", "max-age=60", NULL};
    if (tc_test_origin_start(&o, args) != 0) {
        fprintf(stderr, "burst_origin: tc-test-origin did not start\n");
        return 1;
    }

    /* 100 clients on one URL. */
    char a[512];
    snprintf(a, sizeof(a), "-c 100 --url %s/key --count-header Cache-Control --count-header X-None",
             o.url);
    json_t *j = burst(a);
    CHECK(get(j, "clients") == 100, "clients %lld", get(j, "clients"));
    CHECK(get(j, "responses") == 100, "responses %lld", get(j, "responses"));
    CHECK(get(j, "ok") == 100, "ok %lld", get(j, "ok"));
    CHECK(get(j, "errors") == 0, "errors %lld", get(j, "errors"));
    CHECK(get(j, "status.200") == 100, "status.200 %lld", get(j, "status.200"));
    CHECK(get(j, "headers.Cache-Control.count") == 100, "Cache-Control seen %lld times",
          get(j, "headers.Cache-Control.count"));
    CHECK(json_integer_value(json_object_get(
              json_object_get(json_object_get(json_object_get(j, "headers"), "Cache-Control"),
                              "values"),
              "max-age=60")) == 100,
          "Cache-Control histogram wrong");
    CHECK(get(j, "headers.X-None.count") == 0, "X-None seen");
    /* The origin answers after 200 ms, by timer: nobody is faster. */
    json_t *lat = json_object_get(j, "latency_ms");
    double p50 = json_number_value(json_object_get(lat, "p50"));
    double max = json_number_value(json_object_get(lat, "max"));
    CHECK(p50 >= 190 && max < 8000, "latency p50 %.1f max %.1f ms", p50, max);
    json_decref(j);
    long seen = tc_test_origin_requests(&o);
    CHECK(seen == 100, "origin saw %ld requests, want 100", seen);

    /* Two URLs: clients go round-robin; errors are counted, not hidden. */
    CHECK(tc_test_origin_reset(&o) == 0, "reset failed");
    CHECK(tc_test_origin_config(&o, "delay_ms=0&status=503") == 0, "config failed");
    snprintf(a, sizeof(a), "-c 51 --url %s/x --url %s/y -H 'X-Test: 1' --timeout-ms 5000", o.url,
             o.url);
    j = burst(a);
    CHECK(get(j, "responses") == 51, "responses %lld", get(j, "responses"));
    CHECK(get(j, "ok") == 0, "ok %lld (503 is not ok)", get(j, "ok"));
    CHECK(get(j, "status.503") == 51, "status.503 %lld", get(j, "status.503"));
    json_decref(j);
    seen = tc_test_origin_requests(&o);
    CHECK(seen == 51, "origin saw %ld requests, want 51", seen);
    char last[512];
    CHECK(tc_test_origin_get(&o, "/__last", last, sizeof(last)) == 200 &&
              (strstr(last, "\"path\":\"/x\"") != NULL || strstr(last, "\"path\":\"/y\"") != NULL),
          "last request %s", last);

    /* Nobody listening: every client is a connect error. */
    int st = tc_test_origin_stop(&o);
    CHECK(st == 0, "tc-test-origin exit status %d", st);
    snprintf(a, sizeof(a), "-c 5 --url %s/z --timeout-ms 3000", o.url);
    j = burst(a);
    CHECK(get(j, "errors") == 5, "errors %lld", get(j, "errors"));
    CHECK(get(j, "error_kinds.connect") == 5, "connect errors %lld", get(j, "error_kinds.connect"));
    json_decref(j);

    printf("burst_origin: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
