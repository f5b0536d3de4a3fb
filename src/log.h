/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Logging: one printf-style macro and one level policy (STYLE R13).
 *
 *   CRIT    setup failure; the process cannot go on
 *   WARN    one request or one tier operation failed
 *   NOTICE  a client sent something wrong
 *   INFO    module setup and teardown
 *   DEBUG   everything else
 *
 * Lines go to stderr (or --log-file) with a timestamp and level. The level is
 * checked before the arguments are evaluated. The log sink is one of the few
 * globals STYLE R10 allows; tc_log_setup() must run before any thread starts.
 */
#ifndef TC_SRC_LOG_H
#define TC_SRC_LOG_H

#include "shm/status.h"

#include <stddef.h>

enum tc_log_level {
    TC_LOG_CRIT = 0,
    TC_LOG_WARN = 1,
    TC_LOG_NOTICE = 2,
    TC_LOG_INFO = 3,
    TC_LOG_DEBUG = 4,
};

/* Atomic: a reload changes it while workers log. */
extern _Atomic int tc_log_level_current;

/*
 * Lines at WARN and NOTICE are written per request ("one request failed",
 * "a client sent something wrong"), so a tier that is down under load, or a
 * client sending garbage on purpose, could otherwise write a line per
 * request: disk and journal fill, and a worker blocks on a full stderr pipe.
 * Each tc_log() call site therefore admits at most TC_LOG_BURST lines per
 * TC_LOG_WINDOW_MS at those two levels; the rest are counted, and the site's
 * next admitted line (or tc_log_flush_dropped()) says how many it dropped.
 * CRIT (setup, rare), INFO and
 * DEBUG (chosen by the operator) are not limited.
 */
#define TC_LOG_BURST     10
#define TC_LOG_WINDOW_MS 1000

/* One call site's admission window, in static storage. */
struct tc_log_limit {
    const char *file;
    int line;
    _Atomic int listed; /* on the list tc_log_flush_dropped() walks */
    struct tc_log_limit *_Atomic next;
    _Atomic unsigned long long window; /* index of the current window, ms / TC_LOG_WINDOW_MS */
    _Atomic unsigned count;            /* lines admitted in it */
    _Atomic unsigned long long dropped;
};

#define tc_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((int)(level) <= tc_log_level_current) {                                                \
            static struct tc_log_limit tc_log_site_ = {.file = __FILE__, .line = __LINE__};        \
            unsigned long long tc_log_dropped_ = 0;                                                \
            if (tc_log_admit(&tc_log_site_, (level), &tc_log_dropped_)) {                          \
                tc_log_write((level), tc_log_dropped_, __VA_ARGS__);                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/**
 * Whether call site @p site may write a line at @p level now; when it may,
 * *dropped is the number of its lines dropped since its last admitted one.
 */
int tc_log_admit(struct tc_log_limit *site, enum tc_log_level level, unsigned long long *dropped);

/**
 * For each call site that dropped lines in a window now closed (every site
 * when @p all) and has not said so yet: writes "N similar lines dropped at
 * FILE:LINE". A site's next admitted line says it too; this is for a flood
 * that stopped. The server calls it every TC_LOG_WINDOW_MS and at exit.
 */
void tc_log_flush_dropped(int all);

/** Lines dropped by every call site's limit since start. */
unsigned long long tc_log_dropped_total(void);

/**
 * Writes one line, with " (N similar lines dropped)" appended when @p dropped
 * > 0; use tc_log() so that the level and the site's limit are checked first.
 */
void tc_log_write(enum tc_log_level level, unsigned long long dropped, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Sets the level and the log file (NULL: stderr) and, optionally, the access
 * log path (NULL: none). Returns TC_OK or TC_EIO with a message on stderr.
 */
enum tc_status tc_log_setup(enum tc_log_level level, const char *log_path, const char *access_path);

/** Reopens both files (after logrotate: SIGHUP). Thread-safe. */
void tc_log_reopen(void);

/**
 * For a reload: sets the level and replaces both files by @p log_path and
 * @p access_path (NULL or "": none), reopening them even when unchanged.
 * Both are opened before anything is replaced, so a path that cannot be
 * opened leaves the old files (TC_EIO, with a log line); the level is set
 * either way. Thread-safe.
 */
enum tc_status tc_log_reconfigure(enum tc_log_level level, const char *log_path,
                                  const char *access_path);

/** Closes the files. */
void tc_log_teardown(void);

/** Sets the access log's line format (enum tc_access_format, src/access_log.h). Thread-safe. */
void tc_log_set_access_format(int format);

/** The access log's line format. Thread-safe. */
int tc_log_access_format(void);

/** True when an access log is configured. */
int tc_log_access_enabled(void);

/** Appends one access-log line (already formatted, without newline). Thread-safe. */
void tc_log_access(const char *line, size_t len);

/** Parses "crit", "warn", "notice", "info", "debug"; -1 if unknown. */
int tc_log_level_parse(const char *s);

#endif
