/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* mkdtemp, setenv */
#include "tests/support/tls_certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TC_SOURCE_DIR
#error "TC_SOURCE_DIR must name the source tree"
#endif

#define DIR_PREFIX "/tmp/tc-tls-"

void tc_test_tls_certs_make(void)
{
    char tmpl[] = DIR_PREFIX "XXXXXX";
    if (mkdtemp(tmpl) == NULL) {
        return;
    }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "sh %s/tests/support/tls_certs.sh %s", TC_SOURCE_DIR, tmpl);
    if (system(cmd) == 0) {
        setenv("TC_TLS_DIR", tmpl, 1);
    }
}

void tc_test_tls_certs_remove(void)
{
    const char *d = tc_test_tls_dir();
    if (d != NULL && strncmp(d, DIR_PREFIX, strlen(DIR_PREFIX)) == 0) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", d);
        (void)!system(cmd);
    }
}

const char *tc_test_tls_dir(void)
{
    return getenv("TC_TLS_DIR");
}

const char *tc_test_tls_path(const char *file)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    const char *d = tc_test_tls_dir();
    snprintf(p, sizeof(buf[0]), "%s/%s", d != NULL ? d : "/nonexistent", file);
    return p;
}
