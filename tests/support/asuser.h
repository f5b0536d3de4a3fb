/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: run a piece of a test as another user (a real uid change in
 * a forked child), for the cases where who owns a resource matters: a
 * segment created by someone else, a file another user can write.
 */
#ifndef TC_TESTS_SUPPORT_ASUSER_H
#define TC_TESTS_SUPPORT_ASUSER_H

#include <stddef.h>
#include <stdint.h>

/** Returned by tc_test_as_user() when this process cannot become the user. */
#define TC_TEST_ASUSER_SKIP (-2)

/**
 * Looks @p user up ("nobody"), forks, and in the child drops every group,
 * takes the user's gid and uid (real, effective and saved) and returns
 * fn(arg) as its exit status (keep it within 0..125). Waits for the child.
 * @param[out] uid, gid  the user's ids (may be NULL).
 * @return fn's result; TC_TEST_ASUSER_SKIP with a reason in @p why when this
 *         process is not root, the user does not exist or the uid change
 *         failed; -1 when the child died otherwise.
 */
int tc_test_as_user(const char *user, int (*fn)(void *arg), void *arg, uint32_t *uid, uint32_t *gid,
                    char *why, size_t len);

#endif
