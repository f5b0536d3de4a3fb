/* SPDX-License-Identifier: BSD-2-Clause */
#include "tiers/parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Parses a decimal number (digits, optional fraction) at the start of s. */
static int parse_number(const char *s, double *v, const char **end)
{
    if (!isdigit((unsigned char)*s)) {
        return 0;
    }
    char *e;
    errno = 0;
    *v = strtod(s, &e);
    if (errno != 0 || !isfinite(*v)) {
        return 0;
    }
    *end = e;
    return 1;
}

enum tc_status tc_parse_size(const char *s, uint64_t *out)
{
    double v;
    const char *e;
    if (s == NULL || !parse_number(s, &v, &e)) {
        return TC_EINVAL;
    }
    double mult = 1;
    switch (toupper((unsigned char)*e)) {
    case 'K':
        mult = 1024.0;
        e++;
        break;
    case 'M':
        mult = 1024.0 * 1024;
        e++;
        break;
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        e++;
        break;
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        e++;
        break;
    }
    if (mult > 1 && (*e == 'i' || *e == 'I')) {
        e++;
    }
    if (*e == 'B' || *e == 'b') {
        e++;
    }
    if (*e != '\0') {
        return TC_EINVAL;
    }
    v *= mult;
    if (v != floor(v) || v >= 18446744073709551616.0) {
        return TC_EINVAL;
    }
    *out = (uint64_t)v;
    return TC_OK;
}

enum tc_status tc_parse_duration(const char *s, uint64_t bare_unit_ms, uint64_t *out)
{
    double v;
    const char *e;
    if (s == NULL || !parse_number(s, &v, &e)) {
        return TC_EINVAL;
    }
    double mult;
    if (*e == '\0') {
        mult = (double)bare_unit_ms;
    } else if (strcmp(e, "ms") == 0) {
        mult = 1;
    } else if (strcmp(e, "s") == 0) {
        mult = 1000;
    } else if (strcmp(e, "m") == 0) {
        mult = 60000;
    } else if (strcmp(e, "h") == 0) {
        mult = 3600000;
    } else if (strcmp(e, "d") == 0) {
        mult = 86400000;
    } else {
        return TC_EINVAL;
    }
    v *= mult;
    if (v != floor(v) || v >= 18446744073709551616.0) {
        return TC_EINVAL;
    }
    *out = (uint64_t)v;
    return TC_OK;
}
