#include "tests/support/backends.h"
#include "shm/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int mem_setup(char *uri, size_t n, const char *extra)
{
    snprintf(uri, n, "mem://?size=64M%s%s", extra[0] ? "&" : "", extra);
    return 0;
}

static void nothing(void)
{
}

/* One segment name per setup: Criterion runs each test in its own process
 * and CTest may run the shm suites in parallel, so pid + counter. */
static char shm_name[64];

static void shm_teardown(void)
{
    if (shm_name[0] != '\0') {
        tc_ring_unlink(shm_name, NULL, 0);
        shm_name[0] = '\0';
    }
}

static int shm_setup(char *uri, size_t n, const char *extra)
{
    static unsigned counter;
    shm_teardown();
    if (counter == 0) {
        /* Criterion skips .fini after cr_skip_test(); still remove the segment. */
        atexit(shm_teardown);
    }
    snprintf(shm_name, sizeof(shm_name), "tc-test-%ld-%u", (long)getpid(), counter++);
    tc_ring_unlink(shm_name, NULL, 0); /* a leftover from a crashed run with our pid */
    snprintf(uri, n, "shm://%s?size=16M%s%s", shm_name, extra[0] ? "&" : "", extra);
    return 0;
}

static const struct tc_test_backend backends[] = {
    {"mem", mem_setup, nothing},
    {"shm", shm_setup, shm_teardown},
};

const struct tc_test_backend *tc_test_backend_from_env(void)
{
    const char *want = getenv("TC_TEST_TIER");
    if (want == NULL || want[0] == '\0') {
        want = "mem";
    }
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (strcmp(backends[i].name, want) == 0) {
            return &backends[i];
        }
    }
    return NULL;
}
