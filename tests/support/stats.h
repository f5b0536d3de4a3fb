/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: one counter of a tier's stats, by name.
 */
#ifndef TC_TESTS_SUPPORT_STATS_H
#define TC_TESTS_SUPPORT_STATS_H

#include "tiers/tier.h"

#include <stdint.h>
#include <string.h>

struct tc_test_stat_find {
    const char *name;
    uint64_t value;
    int found;
};

static inline void tc_test_stat_find_cb(void *arg, const char *name, uint64_t v,
                                        enum tc_stat_kind kind)
{
    struct tc_test_stat_find *f = arg;
    (void)kind;
    if (strcmp(name, f->name) == 0) {
        f->value = v;
        f->found = 1;
    }
}

/** Stores stat @p name of @p t in *out; returns 0 when the tier has none. */
static inline int tc_test_tier_stat(struct tc_tier *t, const char *name, uint64_t *out)
{
    struct tc_test_stat_find f = {name, 0, 0};
    tc_tier_stats(t, tc_test_stat_find_cb, &f);
    *out = f.value;
    return f.found;
}

#endif
