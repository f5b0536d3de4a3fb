/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: how to make a fresh, empty instance of each tier backend for
 * the conformance suite and the stress tests. Every backend issue adds its
 * row to the table in backends.c.
 */
#ifndef TC_TESTS_SUPPORT_BACKENDS_H
#define TC_TESTS_SUPPORT_BACKENDS_H

#include <stddef.h>

struct tc_test_backend {
    const char *name;
    /* Writes the URI of a fresh, empty instance into uri; extra (may be "")
     * is appended to the query, e.g. "ttl_ratio=0.5". Returns 0 on success. */
    int (*setup)(char *uri, size_t n, const char *extra);
    /* Removes what setup made (temp dirs, segments, servers). Idempotent. */
    void (*teardown)(void);
};

/** The backend named by $TC_TEST_TIER ("mem" when unset), or NULL if unknown. */
const struct tc_test_backend *tc_test_backend_from_env(void);

#endif
