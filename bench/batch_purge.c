/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 15's two speed figures, against a running tiercache (127.0.0.1:PORT):
 *
 *   batch_purge get PORT SECONDS [SERVER_PID]
 *       16 keys stored, then on ONE keep-alive connection, alternately for
 *       SECONDS in all: 16 single GET /cache/{key}, and one POST /batch/get
 *       of the same 16 keys. Prints keys/s of each and the ratio; with
 *       SERVER_PID, also keys per server CPU-second (/proc/PID/stat), the
 *       figure that a shared machine disturbs least.
 *   batch_purge fill PORT PREFIX N [BATCH]
 *       stores PREFIX0000000 .. PREFIX(N-1) through POST /batch/set, BATCH
 *       keys per request (default 1000), 100-byte values.
 *
 * A plain blocking client: one request, then its whole answer (the server
 * always sends Content-Length). Its own cost is the same per request for
 * both sides of the ratio, and small next to the server's.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int conn(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("connect");
        exit(1);
    }
    return fd;
}

static char rbuf[1 << 22];

/* Sends one request and reads its answer; returns the status. */
static int rt(int fd, const char *method, const char *target, const char *body)
{
    char head[512];
    size_t blen = body ? strlen(body) : 0;
    int n =
        snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n",
                 method, target, body ? "Content-Type: application/json\r\n" : "", blen);
    if (write(fd, head, (size_t)n) != n || (blen && write(fd, body, blen) != (ssize_t)blen)) {
        perror("write");
        exit(1);
    }
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, rbuf + have, sizeof(rbuf) - have - 1);
        if (r <= 0) {
            fprintf(stderr, "connection closed\n");
            exit(1);
        }
        have += (size_t)r;
        rbuf[have] = '\0';
        char *end = strstr(rbuf, "\r\n\r\n");
        if (end == NULL) {
            continue;
        }
        char *cl = strcasestr(rbuf, "content-length:");
        size_t len = cl ? strtoul(cl + 15, NULL, 10) : 0;
        if (have >= (size_t)(end + 4 - rbuf) + len) {
            return atoi(rbuf + 9);
        }
    }
}

/* The server's user + system CPU seconds so far (0 without a pid). */
static double cpu_s(int pid)
{
    if (pid <= 0) {
        return 0;
    }
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(buf, sizeof(buf), f) == NULL) {
        if (f) {
            fclose(f);
        }
        return 0;
    }
    fclose(f);
    /* After the ")" that ends the command name: state, then utime is the 12th field, stime 13th. */
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
        return 0;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int bench_get(unsigned port, double secs, int pid)
{
    int fd = conn(port);
    char body[2048], target[64];
    size_t o = (size_t)snprintf(body, sizeof(body), "{\"keys\":[");
    for (int i = 0; i < 16; i++) {
        char put[160];
        snprintf(target, sizeof(target), "/cache/bench:%02d", i);
        snprintf(put, sizeof(put), "{\"value\":\"%0100d\",\"ttl\":3600}", i);
        if (rt(fd, "PUT", target, put) != 200) {
            fprintf(stderr, "PUT failed\n");
            return 1;
        }
        o += (size_t)snprintf(body + o, sizeof(body) - o, "%s\"bench:%02d\"", i ? "," : "", i);
    }
    snprintf(body + o, sizeof(body) - o, "]}");
    double single_keys = 0, single_t = 0, batch_keys = 0, batch_t = 0, single_cpu = 0,
           batch_cpu = 0, c0;
    /* Alternating rounds, so that both sides see the same machine. */
    for (int round = 0; round < 6; round++) {
        double t0 = now_s(), t;
        long keys = 0;
        c0 = cpu_s(pid);
        while ((t = now_s()) - t0 < secs / 6) {
            for (int i = 0; i < 16; i++) {
                snprintf(target, sizeof(target), "/cache/bench:%02d", i);
                if (rt(fd, "GET", target, NULL) != 200) {
                    fprintf(stderr, "GET failed\n");
                    return 1;
                }
            }
            keys += 16;
        }
        single_keys += (double)keys;
        single_t += t - t0;
        single_cpu += cpu_s(pid) - c0;
        t0 = now_s();
        c0 = cpu_s(pid);
        keys = 0;
        while ((t = now_s()) - t0 < secs / 6) {
            if (rt(fd, "POST", "/batch/get", body) != 200) {
                fprintf(stderr, "batch failed: %s\n", rbuf);
                return 1;
            }
            keys += 16;
        }
        batch_keys += (double)keys;
        batch_t += t - t0;
        batch_cpu += cpu_s(pid) - c0;
    }
    double s = single_keys / single_t, b = batch_keys / batch_t;
    printf("16 single GETs: %.0f keys/s\nPOST /batch/get of 16: %.0f keys/s\nratio: %.2fx\n", s, b,
           b / s);
    if (pid > 0 && single_cpu > 0 && batch_cpu > 0) {
        double sc = single_keys / single_cpu, bc = batch_keys / batch_cpu;
        printf("server CPU: single %.2f s, batch %.2f s\n", single_cpu, batch_cpu);
        printf("keys per server CPU-second: single %.0f, batch %.0f, ratio %.2fx\n", sc, bc,
               bc / sc);
    }
    close(fd);
    return 0;
}

static int fill(unsigned port, const char *prefix, long n, long per)
{
    int fd = conn(port);
    size_t cap = (size_t)per * 200 + 64;
    char *body = malloc(cap);
    double t0 = now_s();
    for (long b = 0; b < n; b += per) {
        size_t o = (size_t)snprintf(body, cap, "{\"items\":[");
        for (long i = b; i < b + per && i < n; i++) {
            o += (size_t)snprintf(body + o, cap - o,
                                  "%s{\"key\":\"%s%07ld\",\"value\":\"%0100ld\",\"ttl\":86400}",
                                  i > b ? "," : "", prefix, i, i);
        }
        snprintf(body + o, cap - o, "]}");
        if (rt(fd, "POST", "/batch/set", body) != 200 || strstr(rbuf, "\"error\"") != NULL) {
            fprintf(stderr, "batch/set failed: %.300s\n", rbuf);
            return 1;
        }
    }
    printf("stored %ld keys %s* in %.1f s\n", n, prefix, now_s() - t0);
    free(body);
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "get") == 0) {
        return bench_get((unsigned)atoi(argv[2]), atof(argv[3]), argc > 4 ? atoi(argv[4]) : 0);
    }
    if (argc >= 5 && strcmp(argv[1], "fill") == 0) {
        return fill((unsigned)atoi(argv[2]), argv[3], atol(argv[4]),
                    argc > 5 ? atol(argv[5]) : 1000);
    }
    fprintf(stderr, "usage: batch_purge get PORT SECONDS | fill PORT PREFIX N [BATCH]\n");
    return 2;
}
