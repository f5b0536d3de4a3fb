/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Concurrency stress of the server, without Criterion so that it also runs
 * in the TSan build (Criterion aborts under TSan: Snaipe/Criterion#274):
 * the real binary with 2 workers, 64 keep-alive connections from 8 threads
 * doing PUT/GET/DELETE and /stats + /metrics (which read every worker's
 * counters) for 2 seconds. The server must answer everything and exit 0
 * on SIGTERM; a sanitizer report makes it exit non-zero.
 * Prints "stress_http: N passed, M failed".
 */
#include "tests/support/check.h"
#include "tests/support/server.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 8
#define CONNS   8

static unsigned port;

struct arg {
    int id;
    unsigned long ok, bad;
    char why[256];
};

static void *client(void *p)
{
    struct arg *a = p;
    int fds[CONNS];
    for (int i = 0; i < CONNS; i++) {
        fds[i] = tc_test_connect(port);
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t s = (uint64_t)a->id * 0x9E3779B97F4A7C15ull + 1;
    do {
        for (int i = 0; i < CONNS; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            char target[64], body[96];
            snprintf(target, sizeof(target), "/cache/s%llu", (unsigned long long)(s >> 40) % 200);
            struct tc_test_resp r;
            int rc, ok;
            switch ((s >> 20) % 8) {
            case 0:
            case 1:
                snprintf(body, sizeof(body), "{\"value\":{\"by\":%d},\"ttl\":30}", a->id);
                rc = tc_test_http_fd(fds[i], "PUT", target, "Content-Type: application/json\r\n",
                                     body, strlen(body), &r);
                ok = rc == 0 && r.status == 200;
                break;
            case 2:
                rc = tc_test_http_fd(fds[i], "DELETE", target, NULL, NULL, 0, &r);
                ok = rc == 0 && r.status == 200;
                break;
            case 3:
                rc = tc_test_http_fd(fds[i], "GET", (s >> 30) & 1 ? "/stats" : "/metrics", NULL,
                                     NULL, 0, &r);
                ok = rc == 0 && r.status == 200;
                break;
            default:
                rc = tc_test_http_fd(fds[i], "GET", target, NULL, NULL, 0, &r);
                ok = rc == 0 && (r.status == 200 || r.status == 404);
                if (ok && r.status == 200) {
                    ok = strstr(r.body, "\"by\":") != NULL;
                }
                break;
            }
            if (ok) {
                a->ok++;
            } else {
                a->bad++;
                snprintf(a->why, sizeof(a->why), "%s: rc %d status %d %s", target, rc, r.status,
                         r.body ? r.body : "");
            }
            tc_test_resp_free(&r);
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - t0.tv_sec < 2);
    for (int i = 0; i < CONNS; i++) {
        close(fds[i]);
    }
    return NULL;
}

int main(void)
{
    struct tc_test_server srv;
    const char *tier = getenv("TC_STRESS_TIER");
    const char *args[] = {"--workers",        "2",    "--tier", tier ? tier : "mem://?size=16M",
                          "--sweep-interval", "50ms", NULL};
    if (tc_test_server_start(&srv, args) != 0) {
        fprintf(stderr, "server did not start:\n%s\n", srv.log);
        printf("stress_http: 0 passed, 1 failed\n");
        return 1;
    }
    port = srv.port;
    pthread_t th[THREADS];
    struct arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct arg){.id = i};
        pthread_create(&th[i], NULL, client, &a[i]);
    }
    unsigned long ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].bad == 0, "client %d: %lu bad answers, e.g. %s", i, a[i].bad, a[i].why);
        ok += a[i].ok;
    }
    CHECK(ok > 200, "only %lu answers", ok);
    int st = tc_test_server_stop(&srv, SIGTERM);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exit status %d; log:\n%s", st,
          srv.log);
    printf("stress_http: %lu requests answered\n", ok);
    printf("stress_http: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
