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

#define tc_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((int)(level) <= tc_log_level_current) {                                                \
            tc_log_write((level), __VA_ARGS__);                                                    \
        }                                                                                          \
    } while (0)

/** Writes one line; use tc_log() so that the level is checked first. */
void tc_log_write(enum tc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

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
