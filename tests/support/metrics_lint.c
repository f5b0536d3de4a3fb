/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The /metrics name rules of tests/support/metrics_lint.h. A line parser of
 * the text format (HELP, TYPE, samples with labels), then checks per series
 * and per family.
 */
#include "tests/support/metrics_lint.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FAMILIES 1024

struct family {
    char name[192];
    char type[16]; /* "" without a TYPE line */
    char help[512];
    int nhelp, ntype, nseries;
    char labels[256]; /* label names of its first series, sorted, comma-separated, le left out */
    int mismatch;     /* reported: series with other label names */
    int tier_bad, segment_bad, enum_bad;
};

struct lint {
    char *report;
    size_t len, at;
    int n;
    struct family fam[MAX_FAMILIES];
    size_t nfam;
};

static void violation(struct lint *l, const char *rule, const char *family, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void violation(struct lint *l, const char *rule, const char *family, const char *fmt, ...)
{
    l->n++;
    if (l->report == NULL || l->at + 1 >= l->len) {
        return;
    }
    int k = snprintf(l->report + l->at, l->len - l->at, "%s: %s: ", rule, family);
    if (k > 0) {
        l->at = l->at + (size_t)k < l->len ? l->at + (size_t)k : l->len - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    k = vsnprintf(l->report + l->at, l->len - l->at, fmt, ap);
    va_end(ap);
    if (k > 0) {
        l->at = l->at + (size_t)k < l->len ? l->at + (size_t)k : l->len - 1;
    }
    if (l->at + 1 < l->len) {
        l->report[l->at++] = '\n';
        l->report[l->at] = '\0';
    }
}

static struct family *find(struct lint *l, const char *name)
{
    for (size_t i = 0; i < l->nfam; i++) {
        if (strcmp(l->fam[i].name, name) == 0) {
            return &l->fam[i];
        }
    }
    return NULL;
}

static struct family *get(struct lint *l, const char *name)
{
    struct family *f = find(l, name);
    if (f == NULL && l->nfam < MAX_FAMILIES) {
        f = &l->fam[l->nfam++];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", name);
    }
    return f;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The family a sample belongs to: its own name, or without the suffix a
 * histogram or summary adds. */
static struct family *family_of(struct lint *l, const char *sample)
{
    struct family *f = find(l, sample);
    if (f != NULL && f->ntype > 0) {
        return f;
    }
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    for (size_t i = 0; i < 3; i++) {
        if (ends_with(sample, suffixes[i])) {
            char base[192];
            snprintf(base, sizeof(base), "%.*s", (int)(strlen(sample) - strlen(suffixes[i])),
                     sample);
            struct family *b = find(l, base);
            if (b != NULL &&
                (strcmp(b->type, "histogram") == 0 || strcmp(b->type, "summary") == 0)) {
                return b;
            }
        }
    }
    return f;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int has_label(const char *set, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = set; *p != '\0';) {
        size_t k = strcspn(p, ",");
        if (k == n && strncmp(p, name, n) == 0) {
            return 1;
        }
        p += k + (p[k] == ',');
    }
    return 0;
}

static int is_enum_name(const char *name)
{
    static const char *const words[] = {"_state", "_status", "_health", "_mode", "_scope"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (ends_with(name, words[i])) {
            return 1;
        }
    }
    return 0;
}

/* One sample line: "name{a="x",b="y"} value". */
static void sample_line(struct lint *l, char *line)
{
    size_t nlen = strcspn(line, "{ \t");
    char name[192];
    snprintf(name, sizeof(name), "%.*s", (int)nlen, line);
    const char *names[32];
    size_t nl = 0;
    char *p = line + nlen;
    if (*p == '{') {
        p++;
        while (*p != '\0' && *p != '}' && nl < 32) {
            char *ln = p;
            p += strcspn(p, "=");
            if (*p != '=') {
                break;
            }
            *p++ = '\0';
            if (*p != '"') {
                break;
            }
            char *w = ++p; /* the value, unescaped in place: not checked */
            while (*p != '\0' && *p != '"') {
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                }
                *w++ = *p++;
            }
            if (*p != '"') {
                break;
            }
            p++;
            *w = '\0';
            names[nl++] = ln;
            if (*p == ',') {
                p++;
            }
        }
        p += *p == '}';
    }
    double value = strtod(p, NULL);

    struct family *f = family_of(l, name);
    if (f == NULL || f->ntype == 0) {
        f = get(l, name);
        if (f != NULL && f->nseries == 0) {
            violation(l, "type", name, "a sample without a TYPE line");
        }
    }
    if (f == NULL) {
        return;
    }
    f->nseries++;

    const char *sorted[32];
    size_t ns = 0;
    int tier = 0, scheme = 0, segment = 0, extra = 0, state = 0;
    for (size_t i = 0; i < nl; i++) {
        if (strcmp(names[i], "le") == 0 || strcmp(names[i], "quantile") == 0) {
            continue;
        }
        sorted[ns++] = names[i];
        tier |= strcmp(names[i], "tier") == 0;
        scheme |= strcmp(names[i], "scheme") == 0;
        segment |= strcmp(names[i], "segment") == 0;
        state |= strcmp(names[i], "state") == 0 || strcmp(names[i], "scope") == 0;
    }
    qsort(sorted, ns, sizeof(sorted[0]), cmp_str);
    char set[256] = "";
    size_t at = 0;
    for (size_t i = 0; i < ns; i++) {
        int k = snprintf(set + at, sizeof(set) - at, "%s%s", i ? "," : "", sorted[i]);
        at = k > 0 && (size_t)k < sizeof(set) - at ? at + (size_t)k : sizeof(set) - 1;
        if (strcmp(sorted[i], "tier") != 0 && strcmp(sorted[i], "scheme") != 0 &&
            strcmp(sorted[i], "op") != 0 && strcmp(sorted[i], "state") != 0 &&
            strcmp(sorted[i], "key_id") != 0) {
            extra = 1;
        }
    }
    if (f->nseries == 1) {
        snprintf(f->labels, sizeof(f->labels), "%s", set);
    } else if (strcmp(f->labels, set) != 0 && !f->mismatch) {
        f->mismatch = 1;
        violation(l, "tier-labels", f->name, "series with labels {%s} and {%s}", f->labels, set);
    }
    if ((tier || scheme) && !f->tier_bad) {
        if (!(tier && scheme)) {
            f->tier_bad = 1;
            violation(l, "tier-labels", f->name, "per-tier series with {%s}, not tier and scheme",
                      set);
        } else if (extra) {
            f->tier_bad = 1;
            violation(l, "tier-labels", f->name,
                      "per-tier series with {%s}: only tier, scheme, op, state, key_id", set);
        }
    }
    if (segment && !f->segment_bad &&
        (!starts_with(f->name, "tiercache_shm_segment_") || strcmp(set, "segment") != 0)) {
        f->segment_bad = 1;
        violation(l, "segment", f->name, "label segment on {%s}", set);
    }
    if (starts_with(f->name, "tiercache_shm_segment_") && strcmp(set, "segment") != 0 &&
        !f->segment_bad) {
        f->segment_bad = 1;
        violation(l, "segment", f->name, "segment-wide series with {%s}, not {segment}", set);
    }
    if (is_enum_name(f->name) && state && value != 0 && value != 1 && !f->enum_bad) {
        f->enum_bad = 1;
        violation(l, "enum", f->name, "a state gauge of value %g", value);
    }
}

/* Tokens of a name, split at '_'. */
static int has_token(const char *name, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = name; *p != '\0';) {
        size_t k = strcspn(p, "_");
        if (k == n && strncmp(p, token, n) == 0) {
            return 1;
        }
        p += k + (p[k] == '_');
    }
    return 0;
}

static void family_checks(struct lint *l, struct family *f)
{
    const char *name = f->name;
    int snake =
        name[0] >= 'a' && name[0] <= 'z' && strstr(name, "__") == NULL && !ends_with(name, "_");
    for (const char *p = name; *p != '\0'; p++) {
        snake &= (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
    }
    if (!snake) {
        violation(l, "names", name, "not snake_case");
    }
    if (!starts_with(name, "tiercache_") && !starts_with(name, "process_")) {
        violation(l, "prefix", name, "neither tiercache_ nor process_");
    }
    if (f->ntype == 0) {
        return; /* reported with its first sample */
    }
    if (f->ntype > 1 || f->nhelp > 1) {
        violation(l, "duplicate", name, "declared %d times",
                  f->ntype > f->nhelp ? f->ntype : f->nhelp);
    }
    int counter = strcmp(f->type, "counter") == 0;
    if (counter && !ends_with(name, "_total")) {
        violation(l, "total", name, "a counter without _total");
    }
    if (!counter && ends_with(name, "_total")) {
        violation(l, "total", name, "a %s named _total", f->type);
    }
    /* Units: base units only, last. */
    char base[192];
    snprintf(base, sizeof(base), "%s", name);
    if (ends_with(base, "_total")) {
        base[strlen(base) - 6] = '\0';
    }
    static const char *const not_base[] = {
        "ms",      "msec",         "millis", "milliseconds", "us",        "usec",
        "micros",  "microseconds", "ns",     "nanoseconds",  "kb",        "mb",
        "gb",      "kib",          "mib",    "gib",          "kilobytes", "megabytes",
        "minutes", "hours",        "days",   "percent",
    };
    for (size_t i = 0; i < sizeof(not_base) / sizeof(not_base[0]); i++) {
        if (has_token(base, not_base[i])) {
            violation(l, "units", name, "unit \"%s\" is not a base unit (seconds, bytes)",
                      not_base[i]);
        }
    }
    static const char *const units[] = {"seconds", "bytes"};
    for (size_t i = 0; i < 2; i++) {
        char tail[16];
        snprintf(tail, sizeof(tail), "_%s", units[i]);
        if (has_token(base, units[i]) && !ends_with(base, tail)) {
            violation(l, "units", name, "\"%s\" is not the last word", units[i]);
        }
    }
    const char *h = f->help;
    if ((strstr(h, " in bytes") != NULL || starts_with(h, "Bytes ")) &&
        !ends_with(base, "_bytes")) {
        violation(l, "units", name, "HELP counts bytes but the name does not end in _bytes");
    }
    if ((strstr(h, " in seconds") != NULL || starts_with(h, "Seconds ")) &&
        !ends_with(base, "_seconds")) {
        violation(l, "units", name, "HELP counts seconds but the name does not end in _seconds");
    }
    if (f->nhelp == 0 || strlen(h) < 8 || starts_with(h, "Tier stat '") ||
        strstr(h, "which no row of src/metrics.c describes") != NULL || strcmp(h, name) == 0 ||
        strstr(h, "TODO") != NULL) {
        violation(l, "help", name, "HELP missing, empty or a placeholder: \"%s\"", h);
    }
    if (has_token(base, "mean") || has_token(base, "avg") || has_token(base, "average")) {
        violation(l, "mean", name, "a precomputed mean: expose _sum and _count");
    }
    if (is_enum_name(name) && f->nseries > 0 &&
        (strcmp(f->type, "gauge") != 0 ||
         !(has_label(f->labels, "state") || has_label(f->labels, "scope")))) {
        violation(l, "enum", name, "an enum as a number: a gauge per state, labelled state");
    }
    if (strstr(name, "_shm_") != NULL && !starts_with(name, "tiercache_shm_")) {
        violation(l, "segment", name,
                  "segment-wide shm stats are tiercache_shm_segment_*, labelled segment");
    }
}

/* tiercache_X and tiercache_tier_X are one family twice. */
static void near_duplicates(struct lint *l)
{
    for (size_t i = 0; i < l->nfam; i++) {
        for (size_t k = i + 1; k < l->nfam; k++) {
            const char *a = l->fam[i].name, *b = l->fam[k].name;
            if (!starts_with(a, "tiercache_") || !starts_with(b, "tiercache_")) {
                continue;
            }
            a += strlen("tiercache_");
            b += strlen("tiercache_");
            a += starts_with(a, "tier_") ? 5 : 0;
            b += starts_with(b, "tier_") ? 5 : 0;
            if (strcmp(a, b) == 0) {
                violation(l, "duplicate", l->fam[k].name, "the same family as %s", l->fam[i].name);
            }
        }
    }
}

static void require(struct lint *l, const char *name, const char *type, const char *labels)
{
    struct family *f = find(l, name);
    if (f == NULL || f->ntype == 0 || f->nseries == 0) {
        violation(l, "required", name, "missing");
        return;
    }
    if (strcmp(f->type, type) != 0) {
        violation(l, "required", name, "a %s, not a %s", f->type, type);
    }
    for (const char *p = labels; *p != '\0';) {
        size_t k = strcspn(p, ",");
        char one[32];
        snprintf(one, sizeof(one), "%.*s", (int)k, p);
        if (!has_label(f->labels, one)) {
            violation(l, "required", name, "no label %s (has {%s})", one, f->labels);
        }
        p += k + (p[k] == ',');
    }
}

int tc_test_metrics_lint(const char *text, char *report, size_t len)
{
    struct lint *l = calloc(1, sizeof(*l));
    char *copy = strdup(text);
    if (l == NULL || copy == NULL) {
        free(l);
        free(copy);
        if (report != NULL && len > 0) {
            snprintf(report, len, "out of memory\n");
        }
        return 1;
    }
    l->report = report;
    l->len = len;
    if (report != NULL && len > 0) {
        report[0] = '\0';
    }
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (starts_with(line, "# HELP ") || starts_with(line, "# TYPE ")) {
            char *name = line + 7;
            size_t n = strcspn(name, " ");
            char *rest = name[n] != '\0' ? name + n + 1 : name + n;
            name[n] = '\0';
            struct family *f = get(l, name);
            if (f == NULL) {
                continue;
            }
            if (line[2] == 'H') {
                f->nhelp++;
                snprintf(f->help, sizeof(f->help), "%s", rest);
            } else {
                f->ntype++;
                snprintf(f->type, sizeof(f->type), "%s", rest);
            }
        } else if (line[0] != '#' && line[0] != '\0') {
            sample_line(l, line);
        }
    }
    for (size_t i = 0; i < l->nfam; i++) {
        family_checks(l, &l->fam[i]);
    }
    near_duplicates(l);
    require(l, "process_cpu_seconds_total", "counter", "");
    require(l, "process_resident_memory_bytes", "gauge", "");
    require(l, "process_open_fds", "gauge", "");
    require(l, "process_start_time_seconds", "gauge", "");
    require(l, "tiercache_build_info", "gauge", "version");
    require(l, "tiercache_http_request_duration_seconds", "histogram", "route,method,code");
    require(l, "tiercache_http_cache_hits_total", "counter", "tier,scheme");
    require(l, "tiercache_http_cache_stale_total", "counter", "tier,scheme");
    require(l, "tiercache_http_cache_misses_total", "counter", "");
    int n = l->n;
    free(copy);
    free(l);
    return n;
}
