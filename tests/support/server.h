/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: run the real tiercache binary on a free loopback port and
 * talk HTTP/1.1 to it. The binary's path comes from TC_SERVER_BIN (set by
 * CMake); the port is read from its "listening on" log line (--listen
 * 127.0.0.1:0 lets the kernel pick a free one).
 */
#ifndef TC_TESTS_SUPPORT_SERVER_H
#define TC_TESTS_SUPPORT_SERVER_H

#include <stddef.h>
#include <sys/types.h>

struct tc_test_server {
    pid_t pid;
    unsigned port;
    int log_fd; /* read end of the server's stderr */
    char log[65536];
    size_t log_len;
    int exit_status; /* of the last tc_test_server_stop_clean(): waitpid form, -1 on timeout */
};

/**
 * Forks @p bin with "--listen 127.0.0.1:0" and @p args (NULL-terminated),
 * its file descriptor @p fd (1: stdout, 2: stderr) going to a pipe whose
 * read end is stored in *out. Returns the pid, or -1.
 */
pid_t tc_test_spawn(const char *bin, const char *const *args, int fd, int *out);

/**
 * Starts tiercache with @p args (NULL-terminated; --listen is added) and
 * waits up to 10 s for it to listen. Returns 0, or -1 with the log in s->log.
 */
int tc_test_server_start(struct tc_test_server *s, const char *const *args);

/** Sends @p sig and waits up to 10 s; returns the exit status (waitpid form), -1 on timeout. */
int tc_test_server_stop(struct tc_test_server *s, int sig);

/**
 * Stops the server with SIGTERM, if it runs. Returns 1 when none ran or it
 * exited 0 in time, else 0, with the status in s->exit_status and the log in
 * s->log for the test's message.
 */
int tc_test_server_stop_clean(struct tc_test_server *s);

/** Reads whatever the server logged so far into s->log. */
void tc_test_server_drain_log(struct tc_test_server *s);

struct tc_test_resp {
    int status;
    char content_type[128];
    char x_cache[32];
    char x_cache_tier[16];
    char allow[64];
    char ratelimit[128];  /* issue 16: RateLimit */
    char retry_after[16]; /* issue 16: Retry-After */
    char lease_token[64]; /* issue 16: X-Lease-Token */
    char headers[2048];   /* every header line as received, "Name: value\n" each */
    char *body;           /* NUL-terminated; free with tc_test_resp_free */
    size_t body_len;
};

/**
 * One request on a new connection. @p headers: extra lines, each ending in
 * "\r\n", or NULL. Returns 0 on a complete response, -1 otherwise.
 */
int tc_test_http(unsigned port, const char *method, const char *target, const char *headers,
                 const void *body, size_t body_len, struct tc_test_resp *resp);

/** Same, on an open connection @p fd (keep-alive). */
int tc_test_http_fd(int fd, const char *method, const char *target, const char *headers,
                    const void *body, size_t body_len, struct tc_test_resp *resp);

/** Opens a TCP connection to 127.0.0.1:port; -1 on failure. */
int tc_test_connect(unsigned port);

void tc_test_resp_free(struct tc_test_resp *r);

/**
 * Copies the value of response header @p name (any case; the first one)
 * into @p out (@p cap bytes, NUL-terminated). Returns 0, or -1 when absent.
 */
int tc_test_resp_header(const struct tc_test_resp *r, const char *name, char *out, size_t cap);

#endif
