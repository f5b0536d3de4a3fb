#define _GNU_SOURCE /* pipe2 */
#include "tests/support/origin.h"

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
    int pfd[2];
    memset(o, 0, sizeof(*o));
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        perror("origin: pipe2");
        return -1;
    }
    const char *argv[64];
    size_t n = 0;
    argv[n++] = TC_ORIGIN_BIN;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    for (size_t i = 0; args != NULL && args[i] != NULL && n < 62; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        perror("origin: fork");
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pfd[1], 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char line[256];
    size_t len = 0;
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline && len + 1 < sizeof(line)) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        ssize_t r = read(pfd[0], line + len, sizeof(line) - 1 - len);
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
            close(pfd[0]);
            return 0;
        }
    }
    close(pfd[0]);
    fprintf(stderr, "origin: %s did not start\n", TC_ORIGIN_BIN);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* One request on a new connection, answered with Connection: close. */
static int request(const struct tc_test_origin *o, const char *method, const char *target,
                   char *body, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)o->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     method, target);
    if (n <= 0 || (size_t)n >= sizeof(req) || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    char resp[16384];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
        if (got + 1 >= sizeof(resp)) {
            break;
        }
    }
    close(fd);
    resp[got] = '\0';
    int status;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        return -1;
    }
    if (body != NULL && len > 0) {
        const char *b = strstr(resp, "\r\n\r\n");
        snprintf(body, len, "%s", b != NULL ? b + 4 : "");
    }
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
