/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Concurrency stress of the TLS listener, without Criterion so that it also
 * runs in the TSan build: the real binary with 2 workers sharing one TLS
 * context, Python clients making new, resumed and keep-alive connections
 * from 4 threads for 3 seconds while the test sends SIGHUP every 100 ms
 * (each one builds a new context and swaps it under the workers). Every
 * request must get 200, the handshake counters must add up, and the server
 * must exit 0 on SIGTERM (a sanitizer report makes it exit non-zero).
 * Prints "stress_tls: N passed, M failed".
 */
#include "tests/support/check.h"
#include "tests/support/server.h"
#include "tests/support/tls_certs.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TC_SOURCE_DIR
#error "TC_SOURCE_DIR must name the source tree"
#endif

static long long metric(unsigned port, const char *name)
{
    struct tc_test_resp r;
    if (tc_test_http(port, "GET", "/metrics", NULL, NULL, 0, &r) != 0 || r.status != 200) {
        return -1;
    }
    char pat[128];
    snprintf(pat, sizeof(pat), "\n%s ", name);
    const char *at = strstr(r.body, pat);
    long long v = at != NULL ? atoll(at + strlen(pat)) : -1;
    tc_test_resp_free(&r);
    return v;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    tc_test_tls_certs_make();
    if (tc_test_tls_dir() == NULL) {
        printf("stress_tls: 0 passed, 1 failed (no certificates)\n");
        return 1;
    }
    const char *args[] = {"--listen-tls",
                          "127.0.0.1:0",
                          "--tls-cert",
                          tc_test_tls_path("chain.pem"),
                          "--tls-key",
                          tc_test_tls_path("server.key"),
                          "--tier",
                          "mem://?size=16M",
                          "--workers",
                          "2",
                          NULL};
    struct tc_test_server srv;
    if (tc_test_server_start(&srv, args) != 0) {
        fprintf(stderr, "%s\n", srv.log);
        printf("stress_tls: 0 passed, 1 failed\n");
        tc_test_tls_certs_remove();
        return 1;
    }
    unsigned tls_port = 0;
    for (int i = 0; i < 250 && tls_port == 0; i++) {
        const char *at = strstr(srv.log, "listening for TLS on 127.0.0.1:");
        if (at != NULL) {
            tls_port = (unsigned)atoi(at + strlen("listening for TLS on 127.0.0.1:"));
        } else {
            nanosleep(&(struct timespec){0, 20000000}, NULL);
            tc_test_server_drain_log(&srv);
        }
    }
    CHECK(tls_port != 0, "no TLS listener:\n%s", srv.log);

    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "timeout 60 python3 %s/tests/http/tls_client.py hammer %u %s 3 2>&1",
             TC_SOURCE_DIR, tls_port, tc_test_tls_path("ca.pem"));
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL, "popen");
    /* SIGHUPs while the clients run; the log pipe is drained as we go. */
    for (int i = 0; i < 30; i++) {
        kill(srv.pid, SIGHUP);
        nanosleep(&(struct timespec){0, 100000000}, NULL);
        tc_test_server_drain_log(&srv);
    }
    char out[4096] = "";
    size_t len = f != NULL ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[len] = '\0';
    int st = f != NULL ? pclose(f) : -1;
    CHECK(st == 0 && strncmp(out, "ok ", 3) == 0, "clients: %s", out);
    long long reqs = atoll(out + 3);
    CHECK(reqs > 50, "only %lld requests", reqs);
    long long ok = metric(srv.port, "tiercache_tls_handshakes_total");
    long long resumed = metric(srv.port, "tiercache_tls_handshakes_resumed_total");
    long long proto = metric(srv.port, "tiercache_tls_handshake_protocol_errors_total");
    CHECK(ok > 10 && resumed > 0 && resumed <= ok, "handshakes %lld, resumed %lld", ok, resumed);
    CHECK(proto == 0, "%lld protocol errors", proto);
    tc_test_server_drain_log(&srv);
    CHECK(strstr(srv.log, "TLS certificates reloaded") != NULL, "no reload logged");
    CHECK(strstr(srv.log, "not reloaded") == NULL, "a reload failed:\n%s", srv.log);
    int ex = tc_test_server_stop(&srv, SIGTERM);
    CHECK(ex >= 0 && WIFEXITED(ex) && WEXITSTATUS(ex) == 0, "server exit status %d; log:\n%s", ex,
          srv.log);
    tc_test_tls_certs_remove();
    printf("stress_tls: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
