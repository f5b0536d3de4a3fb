/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The log's per-call-site limit (src/log.h): at most TC_LOG_BURST warn or
 * notice lines per TC_LOG_WINDOW_MS from one tc_log() call site, the rest
 * counted and reported by that site's next line. Lines go to a real file.
 */
#define _GNU_SOURCE /* mkstemp */
#include "src/log.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char path[64];

static void setup(void)
{
    strcpy(path, "/tmp/tc-log-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(tc_log_setup(TC_LOG_INFO, path, NULL), TC_OK);
}

static void teardown(void)
{
    tc_log_teardown();
    unlink(path);
}

TestSuite(log, .init = setup, .fini = teardown, .timeout = 30);

/* The file's lines containing @p needle (all lines for ""). */
static size_t lines_with(const char *needle, char *last, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[2048];
    size_t n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strstr(line, needle) != NULL) {
            n++;
            if (last != NULL) {
                snprintf(last, cap, "%s", line);
            }
        }
    }
    fclose(f);
    return n;
}

static uint64_t coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits until the start of the limit's next window, so that a short burst
 * falls in one window. */
static void window_start(void)
{
    uint64_t w = coarse_ms() / TC_LOG_WINDOW_MS;
    while (coarse_ms() / TC_LOG_WINDOW_MS == w) {
        usleep(1000);
    }
}

/* One call site each. */
static void site_a(int level, int i)
{
    tc_log(level, "site a line %d", i);
}

static void site_b(int i)
{
    tc_log(TC_LOG_WARN, "site b line %d", i);
}

Test(log, a_site_writes_its_burst_then_counts_and_reports_the_rest)
{
    window_start();
    for (int i = 0; i < 100; i++) {
        site_a(TC_LOG_WARN, i);
    }
    cr_expect_eq(lines_with("site a line", NULL, 0), TC_LOG_BURST);
    cr_expect_eq(tc_log_dropped_total(), 100 - TC_LOG_BURST);
    /* Another site has its own budget. */
    for (int i = 0; i < 3; i++) {
        site_b(i);
    }
    cr_expect_eq(lines_with("site b line", NULL, 0), 3);

    window_start();
    site_a(TC_LOG_WARN, 100);
    char last[2048];
    cr_expect_eq(lines_with("site a line", last, sizeof(last)), TC_LOG_BURST + 1);
    cr_expect(strstr(last, "site a line 100 (90 similar lines dropped)\n") != NULL, "%s", last);
    site_a(TC_LOG_WARN, 101);
    lines_with("site a line", last, sizeof(last));
    cr_expect(strstr(last, "dropped") == NULL, "the drop was reported twice: %s", last);
    cr_expect_eq(tc_log_dropped_total(), 90, "nothing more was dropped");
}

Test(log, a_flood_that_stopped_is_told_once_its_window_closes)
{
    window_start();
    for (int i = 0; i < 25; i++) {
        site_b(i);
    }
    tc_log_flush_dropped(0); /* the window is still open: its site may drop more */
    cr_expect_eq(lines_with("dropped", NULL, 0), 0);
    window_start();
    tc_log_flush_dropped(0);
    char last[2048];
    cr_expect_eq(lines_with("dropped", last, sizeof(last)), 1);
    cr_expect(strstr(last, "warn [") != NULL &&
                  strstr(last, "] 15 similar lines dropped at tests/src/test_log.c:") != NULL,
              "%s", last);
    tc_log_flush_dropped(1);
    site_b(25);
    cr_expect_eq(lines_with("dropped", NULL, 0), 1, "told twice");
    /* At exit everything is told, open window or not. */
    window_start();
    for (int i = 0; i < 12; i++) {
        site_b(i);
    }
    tc_log_flush_dropped(1);
    cr_expect_eq(lines_with("] 2 similar lines dropped at", NULL, 0), 1);
}

Test(log, notice_is_limited_crit_and_info_are_not)
{
    window_start();
    for (int i = 0; i < 30; i++) {
        site_a(TC_LOG_NOTICE, i);
    }
    cr_expect_eq(lines_with("notice [", NULL, 0), TC_LOG_BURST);
    for (int i = 0; i < 30; i++) {
        site_a(TC_LOG_INFO, i);
        site_a(TC_LOG_CRIT, i);
    }
    cr_expect_eq(lines_with("info [", NULL, 0), 30);
    cr_expect_eq(lines_with("crit [", NULL, 0), 30);
    site_a(TC_LOG_DEBUG, 0); /* below the level: neither written nor counted */
    cr_expect_eq(lines_with("debug [", NULL, 0), 0);
    cr_expect_eq(tc_log_dropped_total(), 30 - TC_LOG_BURST);
}

#define THREADS 4
#define CALLS   20000

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < CALLS; i++) {
        site_b(i);
    }
    return NULL;
}

Test(log, threads_at_one_site_each_line_is_written_or_counted)
{
    uint64_t t0 = coarse_ms();
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, hammer, NULL), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    uint64_t windows = (coarse_ms() - t0) / TC_LOG_WINDOW_MS + 2;
    size_t written = lines_with("site b line", NULL, 0);
    cr_expect_eq(written + tc_log_dropped_total(), (size_t)THREADS * CALLS,
                 "%zu written + %llu dropped", written, tc_log_dropped_total());
    /* A racing window change can let a few extra lines in, never a flood. */
    cr_expect_leq(written, windows * (TC_LOG_BURST + THREADS), "%zu lines in %llu windows", written,
                  (unsigned long long)windows);
    cr_expect_geq(written, TC_LOG_BURST);
}
