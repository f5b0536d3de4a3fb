/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Token sets swapped under readers (src/auth.h): 4 threads, each with its
 * own view, check tokens as fast as they can while the main thread reloads
 * the tokens file 200 times, alternating two sets. A token in both sets must
 * always pass; a token in one set passes or fails, never anything else; and
 * every old set is freed exactly once (ASan: no use after free or leak;
 * TSan: no race between a reload and a check). A plain program, so that it
 * reruns under TSan. Prints "stress_auth: N passed, M failed".
 */
#define _GNU_SOURCE /* mkdtemp */
#include "src/auth.h"
#include "tests/support/check.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define THREADS 4
#define RELOADS 200

static struct tc_auth *auth;
static atomic_int stop;
static char path[128];

struct arg {
    unsigned long checks, common_bad, other_bad, a_ok, b_ok;
};

static void *reader(void *p)
{
    struct arg *a = p;
    struct tc_auth_view *v = tc_auth_view_create(auth);
    if (v == NULL) {
        a->common_bad++;
        return NULL;
    }
    while (!atomic_load(&stop)) {
        unsigned g;
        enum tc_auth_result r = tc_auth_check(v, "Bearer common", &g);
        a->common_bad += r != TC_AUTH_OK || g != 1;
        r = tc_auth_check(v, "Bearer only-a", &g);
        a->a_ok += r == TC_AUTH_OK;
        a->other_bad += r != TC_AUTH_OK && r != TC_AUTH_INVALID;
        r = tc_auth_check(v, "Bearer only-b", &g);
        a->b_ok += r == TC_AUTH_OK;
        a->other_bad += r != TC_AUTH_OK && r != TC_AUTH_INVALID;
        a->checks += 3;
    }
    tc_auth_view_destroy(v);
    return NULL;
}

static void write_set(const char *other)
{
    const char *tokens[2] = {"common", other};
    char text[512] = "";
    for (int i = 0; i < 2; i++) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        EVP_Digest(tokens[i], strlen(tokens[i]), d, &n, EVP_sha256(), NULL);
        char hex[65];
        for (unsigned k = 0; k < n; k++) {
            snprintf(hex + 2 * k, 3, "%02x", d[k]);
        }
        char line[128];
        snprintf(line, sizeof(line), "%s %s sha256:%s\n", tokens[i], i ? "write" : "read", hex);
        strcat(text, line);
    }
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    fputs(text, f);
    fclose(f);
    chmod(tmp, 0600);
    rename(tmp, path);
}

int main(void)
{
    char dir[] = "/tmp/tc-stress-auth-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        printf("stress_auth: 0 passed, 1 failed\n");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/tokens", dir);
    write_set("only-a");
    char err[512];
    struct tc_auth_options o = {.tokens_file = path};
    CHECK(tc_auth_create(&o, &auth, err, sizeof(err)) == TC_OK, "%s", err);
    pthread_t th[THREADS];
    struct arg args[THREADS];
    memset(args, 0, sizeof(args));
    for (int i = 0; i < THREADS; i++) {
        pthread_create(&th[i], NULL, reader, &args[i]);
    }
    int reload_bad = 0;
    for (int i = 0; i < RELOADS; i++) {
        write_set(i % 2 ? "only-a" : "only-b");
        reload_bad += tc_auth_reload(auth, err, sizeof(err)) != TC_OK;
        usleep(1000);
    }
    atomic_store(&stop, 1);
    struct arg sum = {0};
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        sum.checks += args[i].checks;
        sum.common_bad += args[i].common_bad;
        sum.other_bad += args[i].other_bad;
        sum.a_ok += args[i].a_ok;
        sum.b_ok += args[i].b_ok;
    }
    CHECK(reload_bad == 0, "%d reloads failed: %s", reload_bad, err);
    CHECK(sum.checks > 1000, "only %lu checks", sum.checks);
    CHECK(sum.common_bad == 0, "a token in every set failed %lu times", sum.common_bad);
    CHECK(sum.other_bad == 0, "%lu answers that are neither OK nor INVALID", sum.other_bad);
    CHECK(sum.a_ok > 0 && sum.b_ok > 0, "both sets seen by readers: a %lu, b %lu", sum.a_ok,
          sum.b_ok);
    tc_auth_destroy(auth);
    unlink(path);
    rmdir(dir);
    printf("stress_auth: %d passed, %d failed (%lu checks)\n", passed, failed, sum.checks);
    return failed != 0;
}
