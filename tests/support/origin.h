/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: run tc-test-origin (tests/support/origin_server.c) on a free
 * loopback port, as the origin behind tiercache --origin or the origin
 * client, and read or change what it does. The binary's path comes from
 * TC_ORIGIN_BIN (set by CMake); its port from the "listening on" line it
 * prints (it is started with --listen 127.0.0.1:0).
 *
 * Not thread-safe: drive one origin from one thread.
 */
#ifndef TC_TESTS_SUPPORT_ORIGIN_H
#define TC_TESTS_SUPPORT_ORIGIN_H

#include <sys/types.h>

struct tc_test_origin {
    pid_t pid;
    unsigned port;
    char url[64]; /* "http://127.0.0.1:PORT" */
};

/**
 * Starts the origin with @p args (NULL-terminated tc-test-origin options
 * such as "--delay-ms", "200"; --listen is added; NULL for none) and waits
 * up to 10 s for its port. Returns 0, or -1 with a message on stderr.
 */
int tc_test_origin_start(struct tc_test_origin *o, const char *const *args);

/** Requests counted since start or the last reset (GET /__stats); -1 on error. */
long tc_test_origin_requests(const struct tc_test_origin *o);

/** Zeroes the counter (POST /__reset). 0 or -1. */
int tc_test_origin_reset(const struct tc_test_origin *o);

/**
 * Changes the behaviour (POST /__config?QUERY), e.g. "delay_ms=0&status=503".
 * Values must be percent-encoded. 0 or -1.
 */
int tc_test_origin_config(const struct tc_test_origin *o, const char *query);

/**
 * GETs @p path (a control endpoint such as "/__last") into @p buf (NUL-terminated
 * body). Returns the HTTP status, or -1.
 */
int tc_test_origin_get(const struct tc_test_origin *o, const char *path, char *buf, size_t len);

/**
 * Stops the origin (SIGTERM, then SIGKILL after 5 s) and reaps it. Returns
 * its exit code (0: clean, which under a sanitizer build also means no
 * report), or -1 if it had to be killed or was not running. Safe twice.
 */
int tc_test_origin_stop(struct tc_test_origin *o);

#endif
