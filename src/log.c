/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The log sink: the globals STYLE R10 allows. */
_Atomic int tc_log_level_current = TC_LOG_INFO;
static atomic_int access_on;     /* access_fp != NULL, for the unlocked check */
static atomic_int access_format; /* enum tc_access_format (src/access_log.h) */
static FILE *log_fp;
static FILE *access_fp;
static char *log_path;
static char *access_path;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"crit", "warn", "notice", "info", "debug"};

int tc_log_level_parse(const char *s)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static atomic_ullong dropped_total;
/* The call sites that ever dropped a line: pushed once each, never removed
 * (they are static), walked by tc_log_flush_dropped(). */
static struct tc_log_limit *_Atomic dropping_sites;

static unsigned long long window_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return ((unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000) /
           TC_LOG_WINDOW_MS;
}

int tc_log_admit(struct tc_log_limit *site, enum tc_log_level level, unsigned long long *dropped)
{
    *dropped = 0;
    if (level != TC_LOG_WARN && level != TC_LOG_NOTICE) {
        return 1;
    }
    unsigned long long now = window_now();
    unsigned long long w = atomic_load_explicit(&site->window, memory_order_relaxed);
    if (w != now && atomic_compare_exchange_strong_explicit(
                        &site->window, &w, now, memory_order_relaxed, memory_order_relaxed)) {
        /* Whoever moves the window opens it; a racing line may be counted
         * in the old one, which only errs towards admitting. */
        atomic_store_explicit(&site->count, 0, memory_order_relaxed);
    }
    if (atomic_fetch_add_explicit(&site->count, 1, memory_order_relaxed) >= TC_LOG_BURST) {
        atomic_fetch_add_explicit(&site->dropped, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&dropped_total, 1, memory_order_relaxed);
        int no = 0;
        if (atomic_load_explicit(&site->listed, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&site->listed, &no, 1)) {
            struct tc_log_limit *head = atomic_load(&dropping_sites);
            do {
                atomic_store_explicit(&site->next, head, memory_order_relaxed);
            } while (!atomic_compare_exchange_weak(&dropping_sites, &head, site));
        }
        return 0;
    }
    *dropped = atomic_exchange_explicit(&site->dropped, 0, memory_order_relaxed);
    return 1;
}

void tc_log_flush_dropped(int all)
{
    if ((int)TC_LOG_WARN > tc_log_level_current) {
        return;
    }
    unsigned long long now = window_now();
    for (struct tc_log_limit *site = atomic_load(&dropping_sites); site != NULL;
         site = atomic_load_explicit(&site->next, memory_order_relaxed)) {
        if (atomic_load_explicit(&site->dropped, memory_order_relaxed) == 0 ||
            (!all && atomic_load_explicit(&site->window, memory_order_relaxed) == now)) {
            continue;
        }
        unsigned long long n = atomic_exchange_explicit(&site->dropped, 0, memory_order_relaxed);
        if (n > 0) {
            tc_log_write(TC_LOG_WARN, 0, "%llu similar lines dropped at %s:%d", n, site->file,
                         site->line);
        }
    }
}

unsigned long long tc_log_dropped_total(void)
{
    return atomic_load_explicit(&dropped_total, memory_order_relaxed);
}

static void write_line(enum tc_log_level level, unsigned long long dropped, const char *fmt,
                       va_list ap)
{
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03dZ %s [%d] ", (int)(tv.tv_usec / 1000),
                  level_names[level], (int)getpid());
    int w = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    size_t len = (size_t)n + (w < 0 ? 0 : (size_t)w);
    if (dropped > 0 && len < sizeof(line)) {
        w = snprintf(line + len, sizeof(line) - len, " (%llu similar lines dropped)", dropped);
        len += w < 0 ? 0 : (size_t)w;
    }
    if (len >= sizeof(line) - 1) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    pthread_mutex_lock(&log_lock);
    FILE *fp = log_fp ? log_fp : stderr;
    fwrite(line, 1, len, fp);
    fflush(fp);
    pthread_mutex_unlock(&log_lock);
}

void tc_log_write(enum tc_log_level level, unsigned long long dropped, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(level, dropped, fmt, ap);
    va_end(ap);
}

static FILE *open_append(const char *path)
{
    FILE *fp = fopen(path, "a");
    if (fp != NULL) {
        setvbuf(fp, NULL, _IOLBF, 0);
    }
    return fp;
}

enum tc_status tc_log_setup(enum tc_log_level level, const char *lpath, const char *apath)
{
    tc_log_level_current = (int)level;
    if (lpath != NULL && lpath[0] != '\0') {
        if ((log_fp = open_append(lpath)) == NULL) {
            fprintf(stderr, "tiercache: cannot open log file '%s': %m\n", lpath);
            return TC_EIO;
        }
        log_path = strdup(lpath);
    }
    if (apath != NULL && apath[0] != '\0') {
        if ((access_fp = open_append(apath)) == NULL) {
            fprintf(stderr, "tiercache: cannot open access log '%s': %m\n", apath);
            return TC_EIO;
        }
        access_path = strdup(apath);
        atomic_store(&access_on, 1);
    }
    return TC_OK;
}

/* Opens @p path for appending into *fp, or leaves *fp NULL for no path;
 * -1 (with a log line) when it cannot be opened. */
static int open_new(const char *what, const char *path, FILE **fp)
{
    *fp = NULL;
    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    if ((*fp = open_append(path)) == NULL) {
        tc_log(TC_LOG_WARN, "cannot open %s '%s': %m", what, path);
        return -1;
    }
    return 0;
}

enum tc_status tc_log_reconfigure(enum tc_log_level level, const char *lpath, const char *apath)
{
    FILE *nlog = NULL, *nacc = NULL;
    tc_log_level_current = (int)level; /* whatever becomes of the files */
    char *nlog_path = lpath != NULL && lpath[0] != '\0' ? strdup(lpath) : NULL;
    char *nacc_path = apath != NULL && apath[0] != '\0' ? strdup(apath) : NULL;
    if (open_new("log file", lpath, &nlog) != 0 || open_new("access log", apath, &nacc) != 0 ||
        (lpath != NULL && lpath[0] != '\0' && nlog_path == NULL) ||
        (apath != NULL && apath[0] != '\0' && nacc_path == NULL)) {
        if (nlog != NULL) {
            fclose(nlog);
        }
        if (nacc != NULL) {
            fclose(nacc);
        }
        free(nlog_path);
        free(nacc_path);
        return TC_EIO;
    }
    pthread_mutex_lock(&log_lock);
    if (log_fp != NULL) {
        fclose(log_fp);
    }
    if (access_fp != NULL) {
        fclose(access_fp);
    }
    free(log_path);
    free(access_path);
    log_fp = nlog;
    access_fp = nacc;
    log_path = nlog_path;
    access_path = nacc_path;
    atomic_store(&access_on, nacc != NULL);
    pthread_mutex_unlock(&log_lock);
    return TC_OK;
}

void tc_log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_path != NULL) {
        FILE *fp = open_append(log_path);
        if (fp != NULL) {
            fclose(log_fp);
            log_fp = fp;
        }
    }
    if (access_path != NULL) {
        FILE *fp = open_append(access_path);
        if (fp != NULL) {
            fclose(access_fp);
            access_fp = fp;
        }
    }
    pthread_mutex_unlock(&log_lock);
}

void tc_log_teardown(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_fp != NULL) {
        fclose(log_fp);
        log_fp = NULL;
    }
    if (access_fp != NULL) {
        fclose(access_fp);
        access_fp = NULL;
    }
    free(log_path);
    free(access_path);
    log_path = access_path = NULL;
    atomic_store(&access_on, 0);
    pthread_mutex_unlock(&log_lock);
}

void tc_log_set_access_format(int format)
{
    atomic_store_explicit(&access_format, format, memory_order_relaxed);
}

int tc_log_access_format(void)
{
    return atomic_load_explicit(&access_format, memory_order_relaxed);
}

int tc_log_access_enabled(void)
{
    return atomic_load_explicit(&access_on, memory_order_relaxed);
}

void tc_log_access(const char *line, size_t len)
{
    pthread_mutex_lock(&log_lock);
    if (access_fp != NULL) {
        fwrite(line, 1, len, access_fp);
        fputc('\n', access_fp);
    }
    pthread_mutex_unlock(&log_lock);
}
