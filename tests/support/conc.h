/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: concurrent set/get from several threads against one tier,
 * each thread with its own ctx. Every value names its key and carries a
 * checksum, so a torn, mixed or misplaced value is counted. Used by the
 * Criterion conformance suite and by the stress test that runs under TSan
 * (Criterion itself cannot start under TSan: Snaipe/Criterion#274).
 */
#ifndef TC_TESTS_SUPPORT_CONC_H
#define TC_TESTS_SUPPORT_CONC_H

#include "tiers/tier.h"

struct tc_conc_result {
    uint64_t gets, hits, sets, bad;
    enum tc_status fail; /* first unexpected status, TC_OK if none */
};

/** Runs @p threads threads of @p ops operations each over @p keys keys. */
void tc_conc_run(struct tc_tier *t, int threads, int ops, int keys, uint64_t now_ms,
                 struct tc_conc_result *res);

#endif
