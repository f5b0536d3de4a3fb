/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* pipe2 */
#include "tests/support/origin.h"
#include "tests/support/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TC_ORIGIN_BIN
#error "TC_ORIGIN_BIN must name the tc-test-origin binary"
#endif

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tc_test_origin_start(struct tc_test_origin *o, const char *const *args)
{
    memset(o, 0, sizeof(*o));
    int out;
    pid_t pid = tc_test_spawn(TC_ORIGIN_BIN, args, 1, &out);
    if (pid < 0) {
        perror("origin: spawn");
        return -1;
    }
    char line[256];
    size_t len = 0;
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline && len + 1 < sizeof(line)) {
        struct pollfd p = {out, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        ssize_t r = read(out, line + len, sizeof(line) - 1 - len);
        if (r <= 0) {
            break; /* exited */
        }
        len += (size_t)r;
        line[len] = '\0';
        const char *at = strstr(line, "listening on 127.0.0.1:");
        if (at != NULL && strchr(at, '\n') != NULL) {
            o->pid = pid;
            o->port = (unsigned)atoi(at + strlen("listening on 127.0.0.1:"));
            snprintf(o->url, sizeof(o->url), "http://127.0.0.1:%u", o->port);
            close(out);
            return 0;
        }
    }
    close(out);
    fprintf(stderr, "origin: %s did not start\n", TC_ORIGIN_BIN);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* One request on a new connection: its status, its body copied into body. */
static int request(const struct tc_test_origin *o, const char *method, const char *target,
                   char *body, size_t len)
{
    struct tc_test_resp r;
    if (tc_test_http(o->port, method, target, NULL, NULL, 0, &r) != 0) {
        return -1;
    }
    if (body != NULL && len > 0) {
        snprintf(body, len, "%s", r.body != NULL ? r.body : "");
    }
    int status = r.status;
    tc_test_resp_free(&r);
    return status;
}

int tc_test_origin_get(const struct tc_test_origin *o, const char *path, char *buf, size_t len)
{
    return request(o, "GET", path, buf, len);
}

long tc_test_origin_requests(const struct tc_test_origin *o)
{
    char body[512];
    if (request(o, "GET", "/__stats", body, sizeof(body)) != 200) {
        return -1;
    }
    const char *at = strstr(body, "\"requests\":");
    return at != NULL ? atol(at + strlen("\"requests\":")) : -1;
}

int tc_test_origin_reset(const struct tc_test_origin *o)
{
    return request(o, "POST", "/__reset", NULL, 0) == 200 ? 0 : -1;
}

int tc_test_origin_config(const struct tc_test_origin *o, const char *query)
{
    char target[1500];
    if ((size_t)snprintf(target, sizeof(target), "/__config?%s", query) >= sizeof(target)) {
        return -1;
    }
    return request(o, "POST", target, NULL, 0) == 200 ? 0 : -1;
}

int tc_test_origin_stop(struct tc_test_origin *o)
{
    int status;
    if (o->pid <= 0) {
        return -1;
    }
    kill(o->pid, SIGTERM);
    long long deadline = now_ms() + 5000;
    while (now_ms() < deadline) {
        if (waitpid(o->pid, &status, WNOHANG) == o->pid) {
            o->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(o->pid, SIGKILL);
    waitpid(o->pid, NULL, 0);
    o->pid = 0;
    return -1;
}
