/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Many HTTP clients at once, from one thread: every client connects, then
 * all send one request, and the responses are collected as they come, while
 * a tick callback lets the test act in between (read /stats, PUT a value).
 * Responses are parsed just enough for tiercache's own answers (status line,
 * a few headers, Content-Length body).
 */
#ifndef TC_TESTS_SUPPORT_BURST_H
#define TC_TESTS_SUPPORT_BURST_H

#include <stddef.h>

struct tc_burst_resp {
    int status; /* 0: no complete answer (connect failed, closed, timed out) */
    char x_cache[16];
    char lease_token[64]; /* X-Lease-Token, "" if none */
    char *body;           /* NUL-terminated, freed by tc_burst_free */
    size_t body_len;
    double ms; /* from send to the complete answer */
};

/** Called about every 20 ms while answers are outstanding; return non-zero
 * to stop waiting. @p done: answers complete so far. */
typedef int (*tc_burst_tick_fn)(void *arg, size_t done, const struct tc_burst_resp *resp);

/**
 * Sends @p n requests "METHOD TARGET" with extra @p headers (lines ending in
 * \r\n, may be NULL), client i to ports[i % nports] on 127.0.0.1, and waits
 * up to @p timeout_ms for all answers. @p out has n entries.
 * Returns the number of complete answers.
 */
size_t tc_burst(const unsigned *ports, size_t nports, size_t n, const char *method,
                const char *target, const char *headers, int timeout_ms, tc_burst_tick_fn tick,
                void *arg, struct tc_burst_resp *out);

void tc_burst_free(struct tc_burst_resp *out, size_t n);

#endif
