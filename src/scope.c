/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Scope names and their bits (src/scope.h).
 */
#include "src/scope.h"

#include <stdio.h>
#include <string.h>

static const struct {
    unsigned bit;
    const char *name;
} scope_names[] = {
    {TC_SCOPE_READ, "read"},
    {TC_SCOPE_WRITE, "write"},
    {TC_SCOPE_LOCKS, "locks"},
    {TC_SCOPE_ADMIN, "admin"},
};

#define NSCOPES (sizeof(scope_names) / sizeof(scope_names[0]))

const char *tc_scope_name(unsigned bit)
{
    for (size_t i = 0; i < NSCOPES; i++) {
        if (scope_names[i].bit == bit) {
            return scope_names[i].name;
        }
    }
    return NULL;
}

enum tc_status tc_scope_parse(const char *s, size_t len, unsigned *out)
{
    unsigned got = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != ',') {
            j++;
        }
        size_t a = i, b = j;
        while (a < b && (s[a] == ' ' || s[a] == '\t')) {
            a++;
        }
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) {
            b--;
        }
        size_t k = 0;
        for (; k < NSCOPES; k++) {
            size_t n = strlen(scope_names[k].name);
            if (b - a == n && memcmp(s + a, scope_names[k].name, n) == 0) {
                break;
            }
        }
        if (k == NSCOPES) {
            return TC_EINVAL;
        }
        got |= scope_names[k].bit;
        i = j + 1;
    }
    if (got == 0) {
        return TC_EINVAL;
    }
    *out = got;
    return TC_OK;
}

const char *tc_scope_format(unsigned scopes, char *buf, size_t n)
{
    size_t used = 0;
    if (n == 0) {
        return buf;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < NSCOPES; i++) {
        if (!(scopes & scope_names[i].bit)) {
            continue;
        }
        int w = snprintf(buf + used, n - used, "%s%s", used ? "," : "", scope_names[i].name);
        if (w < 0 || (size_t)w >= n - used) {
            break;
        }
        used += (size_t)w;
    }
    if (used == 0) {
        snprintf(buf, n, "none");
    }
    return buf;
}
