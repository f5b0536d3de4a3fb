/* SPDX-License-Identifier: BSD-2-Clause */
#include "tests/support/backends.h"
#include "shm/ring.h"
#include "tests/support/redis_server.h"

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
    static int registered;
    if (!registered) {
        /* cr_skip_test() ends a test without the suite's .fini; exit
         * handlers still run, so the temp dir goes too. */
        atexit(lmdb_teardown);
        registered = 1;
    }
    lmdb_teardown();
    snprintf(lmdb_dir, sizeof(lmdb_dir), "/tmp/tc-lmdb-XXXXXX");
    if (mkdtemp(lmdb_dir) == NULL) {
        lmdb_dir[0] = '\0';
        return -1;
    }
    snprintf(uri, n, "lmdb://%s?map_size=64M%s%s", lmdb_dir, extra[0] ? "&" : "", extra);
    return 0;
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

/* One private redis-server per setup (a fresh, empty instance); generous
 * deadlines because sanitizer builds on a busy machine are slow, and the
 * fault tests set their own. */
static struct tc_redis_server *redis;

static void redis_teardown(void);

static int redis_start(void)
{
    static int registered;
    if (!registered) {
        /* cr_skip_test() ends the test process without the suite's .fini;
         * exit handlers still run, so the server's temp dir goes too. */
        atexit(redis_teardown);
        registered = 1;
    }
    if (redis == NULL && tc_redis_server_start(NULL, &redis) != 0) {
        return -1;
    }
    return 0;
}

static int redis_setup(char *uri, size_t n, const char *extra)
{
    if (redis_start() != 0) {
        return -1;
    }
    snprintf(uri, n, "redis://127.0.0.1:%u/0?timeout_ms=2000&connect_timeout_ms=2000%s%s",
             tc_redis_server_port(redis), extra[0] ? "&" : "", extra);
    return 0;
}

static int redis_unix_setup(char *uri, size_t n, const char *extra)
{
    if (redis_start() != 0) {
        return -1;
    }
    snprintf(uri, n, "redis+unix://%s?db=0&timeout_ms=2000&connect_timeout_ms=2000%s%s",
             tc_redis_server_socket(redis), extra[0] ? "&" : "", extra);
    return 0;
}

static void redis_teardown(void)
{
    tc_redis_server_destroy(redis);
    redis = NULL;
}

static const struct tc_test_backend backends[] = {
    {"lmdb", lmdb_setup, lmdb_teardown},
    {"mem", mem_setup, nothing},
    {"shm", shm_setup, shm_teardown},
    {"redis", redis_setup, redis_teardown},
    {"redis+unix", redis_unix_setup, redis_teardown},
    {"redis_unix", redis_unix_setup, redis_teardown}, /* for CTest names */
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
