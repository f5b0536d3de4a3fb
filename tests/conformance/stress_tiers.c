/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Concurrency stress for one tier backend ($TC_TEST_TIER), without Criterion
 * so that it runs under ThreadSanitizer too (Criterion aborts at start under
 * TSan: Snaipe/Criterion#274). Prints "N passed, N failed" and exits non-zero
 * on any failure.
 */
#include "tests/support/check.h"
#include "tests/support/backends.h"
#include "tests/support/conc.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void)
{
    const struct tc_test_backend *be = tc_test_backend_from_env();
    if (be == NULL) {
        fprintf(stderr, "stress: unknown TC_TEST_TIER\n");
        return 2;
    }
    char uri[1024], err[512];
    if (be->setup(uri, sizeof(uri), "") != 0) {
        fprintf(stderr, "stress: cannot set up %s\n", be->name);
        return 2;
    }
    struct tc_tier *t;
    enum tc_status st = tc_tier_open(NULL, uri, &t, err, sizeof(err));
    CHECK(st == TC_OK, "open %s: %s", uri, err);
    if (st == TC_OK) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
        static const int keys[] = {4, 64, 4096};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            struct tc_conc_result r;
            tc_conc_run(t, 4, 20000, keys[i], now, &r);
            CHECK(r.fail == TC_OK, "%s, %d keys: %s", be->name, keys[i], tc_strerror(r.fail));
            CHECK(r.bad == 0, "%s, %d keys: %llu torn reads", be->name, keys[i],
                  (unsigned long long)r.bad);
            CHECK(r.hits > 0, "%s, %d keys: no hit, nothing was checked", be->name, keys[i]);
            printf("stress %s keys=%d: %llu gets (%llu hits), %llu sets\n", be->name, keys[i],
                   (unsigned long long)r.gets, (unsigned long long)r.hits,
                   (unsigned long long)r.sets);
        }
        tc_tier_close(t);
    }
    be->teardown();
    printf("stress: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
