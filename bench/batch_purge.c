/*
 * Issue 15's two speed figures, against a running tiercache (127.0.0.1:PORT):
 *
 *   batch_purge get PORT SECONDS
 *       16 keys stored, then on ONE keep-alive connection, alternately for
 *       SECONDS each: 16 single GET /cache/{key}, and one POST /batch/get
 *       of the same 16 keys. Prints keys/s of each and the ratio.
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

static int bench_get(unsigned port, double secs)
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
    double single_keys = 0, single_t = 0, batch_keys = 0, batch_t = 0;
    /* Alternating rounds, so that both sides see the same machine. */
    for (int round = 0; round < 6; round++) {
        double t0 = now_s(), t;
        long keys = 0;
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
        t0 = now_s();
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
    }
    double s = single_keys / single_t, b = batch_keys / batch_t;
    printf("16 single GETs: %.0f keys/s\nPOST /batch/get of 16: %.0f keys/s\nratio: %.2fx\n", s, b,
           b / s);
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
        return bench_get((unsigned)atoi(argv[2]), atof(argv[3]));
    }
    if (argc >= 5 && strcmp(argv[1], "fill") == 0) {
        return fill((unsigned)atoi(argv[2]), argv[3], atol(argv[4]),
                    argc > 5 ? atol(argv[5]) : 1000);
    }
    fprintf(stderr, "usage: batch_purge get PORT SECONDS | fill PORT PREFIX N [BATCH]\n");
    return 2;
}
