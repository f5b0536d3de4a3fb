/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tc-metrics-lint [FILE]: checks a /metrics text (FILE or stdin) against the
 * rules of tests/support/metrics_lint.h; prints one line per violation and
 * their number, exits 1 if there is any. For checking another build's
 * /metrics (curl -s HOST/metrics | tc-metrics-lint).
 */
#include "tests/support/metrics_lint.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    FILE *f = argc > 1 ? fopen(argv[1], "r") : stdin;
    if (f == NULL) {
        perror(argv[1]);
        return 2;
    }
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    for (size_t n; text != NULL && (n = fread(text + len, 1, cap - len - 1, f)) > 0;) {
        len += n;
        if (cap - len - 1 == 0) {
            char *bigger = realloc(text, cap * 2);
            if (bigger == NULL) {
                free(text);
                text = NULL;
                break;
            }
            text = bigger;
            cap *= 2;
        }
    }
    if (text == NULL) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    text[len] = '\0';
    static char report[1 << 20];
    int n = tc_test_metrics_lint(text, report, sizeof(report));
    fputs(report, stdout);
    printf("%d violation%s\n", n, n == 1 ? "" : "s");
    free(text);
    return n > 0;
}
