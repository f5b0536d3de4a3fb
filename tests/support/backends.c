#include "tests/support/backends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mem_setup(char *uri, size_t n, const char *extra)
{
    snprintf(uri, n, "mem://?size=64M%s%s", extra[0] ? "&" : "", extra);
    return 0;
}

static void nothing(void)
{
}

static const struct tc_test_backend backends[] = {
    {"mem", mem_setup, nothing},
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
