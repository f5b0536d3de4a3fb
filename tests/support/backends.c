#include "tests/support/backends.h"

#include <dirent.h>
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

/* lmdb: a fresh directory under /tmp per setup; test support may keep it in
 * a static (tests are not bound by STYLE R10's no-globals rule). */
static char lmdb_dir[256];

static void lmdb_teardown(void)
{
    if (lmdb_dir[0] == '\0') {
        return;
    }
    DIR *d = opendir(lmdb_dir);
    if (d != NULL) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                snprintf(p, sizeof(p), "%s/%s", lmdb_dir, e->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    rmdir(lmdb_dir);
    lmdb_dir[0] = '\0';
}

static int lmdb_setup(char *uri, size_t n, const char *extra)
{
    lmdb_teardown();
    snprintf(lmdb_dir, sizeof(lmdb_dir), "/tmp/tc-lmdb-XXXXXX");
    if (mkdtemp(lmdb_dir) == NULL) {
        lmdb_dir[0] = '\0';
        return -1;
    }
    snprintf(uri, n, "lmdb://%s?map_size=64M%s%s", lmdb_dir, extra[0] ? "&" : "", extra);
    return 0;
}

static const struct tc_test_backend backends[] = {
    {"lmdb", lmdb_setup, lmdb_teardown},
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
