/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: CHECK() for the plain (non-Criterion) test programs, which
 * exist so that the concurrency tests also run under ThreadSanitizer
 * (Criterion aborts at start under TSan: Snaipe/Criterion#274). Each such
 * program ends with tc_check_report(), whose "NAME: N passed, M failed" line
 * is what CI reads. Include once per program.
 */
#ifndef TC_TESTS_SUPPORT_CHECK_H
#define TC_TESTS_SUPPORT_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#endif
