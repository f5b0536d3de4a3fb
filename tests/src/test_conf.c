/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of the configuration (src/conf.h): tc_conf_load() with an argv
 * and a config file. Defaults, the file against the command line, each
 * option type's good and bad values, and the error text, which must name
 * the option, quote the value and say what is valid. Errors go to stderr and
 * --help and friends to stdout; the test reads both through temp files.
 */
#include "src/conf.h"
#include "src/log.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct tc_conf conf;
static char errtext[8192], outtext[65536];
static char cfg_path[64];

static void teardown(void)
{
    tc_conf_deinit(&conf);
    if (cfg_path[0] != '\0') {
        unlink(cfg_path);
        cfg_path[0] = '\0';
    }
}

TestSuite(conf, .fini = teardown);

/* Reads what fd @p fd (redirected to @p tmp) received into @p out. */
static void slurp(FILE *tmp, char *out, size_t cap)
{
    fflush(tmp);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
}

/* tc_conf_load(&conf, "tiercache", args..., NULL), with stdout and stderr
 * captured in outtext and errtext. */
static enum tc_conf_result load(const char *arg, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "tiercache";
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) {
        cr_assert_lt(argc, 63);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;

    tc_conf_deinit(&conf);
    FILE *out = tmpfile(), *err = tmpfile();
    cr_assert(out != NULL && err != NULL);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fileno(out), 1);
    dup2(fileno(err), 2);
    enum tc_conf_result r = tc_conf_load(&conf, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    slurp(out, outtext, sizeof(outtext));
    slurp(err, errtext, sizeof(errtext));
    return r;
}

/* Writes a config file and returns its path. */
static const char *config(const char *text)
{
    if (cfg_path[0] == '\0') {
        snprintf(cfg_path, sizeof(cfg_path), "/tmp/tc-conf-XXXXXX");
        int fd = mkstemp(cfg_path);
        cr_assert_geq(fd, 0);
        close(fd);
    }
    FILE *f = fopen(cfg_path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return cfg_path;
}

/* Expects a load error whose message contains every fragment given. */
static void expect_error(const char *fragment, ...)
{
    va_list ap;
    va_start(ap, fragment);
    for (const char *f = fragment; f != NULL; f = va_arg(ap, const char *)) {
        cr_expect(strstr(errtext, f) != NULL, "'%s' is not in the error: %s", f, errtext);
    }
    va_end(ap);
}

/* ---- defaults --------------------------------------------------------------------- */

Test(conf, defaults)
{
    cr_assert_eq(load(NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_str_empty(errtext);
    cr_expect_str_eq(conf.listen, "127.0.0.1:8080");
    cr_expect_str_eq(conf.listen_host, "127.0.0.1");
    cr_expect_eq(conf.listen_port, 8080u);
    cr_expect_eq(conf.ntiers, 0u, "the default tiers are the server's choice, not a row's");
    cr_expect_eq(conf.workers, 0u);
    cr_expect_eq(conf.default_ttl_ms, 3600000u);
    cr_expect_eq(conf.max_ttl_ms, 365ull * 86400000u);
    cr_expect_eq(conf.max_value, 16u << 20);
    cr_expect_eq(conf.max_header_size, 16u << 10);
    cr_expect_eq(conf.max_connections, 16384u);
    cr_expect_eq(conf.idle_timeout_ms, 60000u);
    cr_expect_eq(conf.header_timeout_ms, 10000u);
    cr_expect_eq(conf.body_timeout_ms, 10000u);
    cr_expect_eq(conf.max_pending_body, 256u << 20);
    cr_expect_eq(conf.shutdown_timeout_ms, 5000u);
    cr_expect_eq(conf.sweep_interval_ms, 1000u);
    cr_expect_eq(conf.sweep_budget, 20000u);
    cr_expect_eq(conf.grace_ms, 0u);
    cr_expect_eq(conf.lease_ms, 5000u);
    cr_expect_str_eq(conf.origin, "");
    cr_expect_eq(conf.origin_timeout_ms, 5000u);
    cr_expect_eq(conf.listener_shared, 0);
    cr_expect_eq(conf.log_level, TC_LOG_INFO);
    cr_expect_str_eq(conf.log_file, "");
    cr_expect_str_eq(conf.access_log, "");
}

/* Field comparisons for describe_config_reads_back_as_the_defaults, one
 * per field type (chosen with _Generic from the TC_CONF_OPTIONS rows). */
static void same_str(const void *a, const void *b, const char *name)
{
    cr_expect_str_eq(*(const char *const *)a, *(const char *const *)b, "%s", name);
}

static void same_u64(const void *a, const void *b, const char *name)
{
    cr_expect_eq(*(const uint64_t *)a, *(const uint64_t *)b, "%s", name);
}

static void same_int(const void *a, const void *b, const char *name)
{
    cr_expect_eq(*(const int *)a, *(const int *)b, "%s", name);
}

static void same_none(const void *a, const void *b, const char *name)
{
    (void)a;
    (void)b;
    (void)name; /* the tiers: compared by count */
}

Test(conf, describe_config_reads_back_as_the_defaults)
{
    cr_assert_eq(load("--describe-config", NULL), TC_CONF_EXIT);
    cr_expect(strstr(outtext, "max-value = 16M\n") != NULL, "%s", outtext);
    cr_expect(strstr(outtext, "# tier = ") != NULL);
    char text[sizeof(outtext)];
    memcpy(text, outtext, sizeof(text));
    cr_assert_eq(load("--config", config(text), NULL), TC_CONF_RUN, "%s", errtext);
    struct tc_conf from_file = conf;
    memset(&conf, 0, sizeof(conf)); /* its strings now belong to from_file */
    cr_assert_eq(load(NULL), TC_CONF_RUN);
    cr_expect_eq(from_file.ntiers, 0u);
#define TC_X(name, field, type, def, min, max, help)                                               \
    _Generic(conf.field, const char *: same_str, uint64_t: same_u64, int: same_int,                \
             default: same_none)(&from_file.field, &conf.field, name);
    TC_CONF_OPTIONS(TC_X)
#undef TC_X
    tc_conf_deinit(&from_file);
}

Test(conf, help_and_version_exit)
{
    cr_expect_eq(load("--help", NULL), TC_CONF_EXIT);
    cr_expect(strstr(outtext, "--max-pending-body") != NULL, "%s", outtext);
    cr_expect(strstr(outtext, "(default 16K)") != NULL);
    cr_expect_eq(load("--version", NULL), TC_CONF_EXIT);
    cr_expect(strncmp(outtext, "tiercache ", 10) == 0, "%s", outtext);
    cr_expect_eq(load("--list-tiers", NULL), TC_CONF_EXIT);
    cr_expect(strstr(outtext, "lmdb") && strstr(outtext, "mem") && strstr(outtext, "shm"), "%s",
              outtext);
}

/* ---- good values of each type ---------------------------------------------------------- */

Test(conf, good_values_of_each_type)
{
    cr_assert_eq(load("--workers", "4", "--max-value", "1.5K", "--max-header-size", "1M",
                      "--max-pending-body", "1G", "--default-ttl", "30", "--max-ttl", "2d",
                      "--grace", "500ms", "--sweep-interval", "1.5s", "--max-connections", "7",
                      "--lease", "5m", "--idle-timeout", "1h", "--log-level", "debug", "--listener",
                      "shared", "--origin", "http://127.0.0.1:9/x", "--listen", "[::1]:0", NULL),
                 TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.workers, 4u);
    cr_expect_eq(conf.max_value, 1536u, "a fraction that comes to whole bytes");
    cr_expect_eq(conf.max_header_size, 1u << 20, "K/M/G are powers of 1024");
    cr_expect_eq(conf.max_pending_body, 1u << 30);
    cr_expect_eq(conf.default_ttl_ms, 30000u, "a bare duration is in seconds");
    cr_expect_eq(conf.max_ttl_ms, 2u * 86400000u);
    cr_expect_eq(conf.grace_ms, 500u);
    cr_expect_eq(conf.sweep_interval_ms, 1500u, "a fraction that comes to whole ms");
    cr_expect_eq(conf.max_connections, 7u);
    cr_expect_eq(conf.lease_ms, 300000u);
    cr_expect_eq(conf.idle_timeout_ms, 3600000u);
    cr_expect_eq(conf.log_level, TC_LOG_DEBUG);
    cr_expect_eq(conf.listener_shared, 1);
    cr_expect_str_eq(conf.origin, "http://127.0.0.1:9/x");
    cr_expect_str_eq(conf.listen_host, "::1");
    cr_expect_eq(conf.listen_port, 0u);
}

Test(conf, bounds_are_inclusive)
{
    cr_expect_eq(load("--workers", "256", "--max-value", "2G", "--max-ttl", "1s",
                      "--header-timeout", "100ms", "--sweep-budget", "1", NULL),
                 TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.workers, 256u);
    cr_expect_eq(conf.max_value, 1ull << 31);
    cr_expect_eq(conf.max_ttl_ms, 1000u);
    cr_expect_eq(conf.header_timeout_ms, 100u);
    cr_expect_eq(load("--workers", "0", "--default-ttl", "0", NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.default_ttl_ms, 0u, "0 = never expires");
}

Test(conf, listen_forms)
{
    cr_expect_eq(load("--listen", ":9000", NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_str_eq(conf.listen_host, "0.0.0.0");
    cr_expect_eq(conf.listen_port, 9000u);
    cr_expect_eq(load("--listen", "localhost:65535", NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_str_eq(conf.listen_host, "localhost");
    cr_expect_eq(conf.listen_port, 65535u);
}

/* ---- bad values: the message names option, value and what is valid ------------------------ */

Test(conf, bad_integers)
{
    const char *bad[] = {"abc", "-1", "257", "", " 4", "4 ", "0x10", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        cr_expect_eq(load("--workers", bad[i], NULL), TC_CONF_ERROR, "'%s' was taken", bad[i]);
        expect_error("--workers", quoted, "for workers", "an integer from 0 to 256", NULL);
    }
}

Test(conf, bad_sizes)
{
    const char *bad[] = {"3G", "0", "12Q", "0.5", "M", "-1K", "1K1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        cr_expect_eq(load("--max-value", bad[i], NULL), TC_CONF_ERROR, "'%s' was taken", bad[i]);
        expect_error("--max-value", quoted, "for max-value", "a size like 64K",
                     "from 1 to 2147483648", NULL);
    }
    cr_expect_eq(load("--max-header-size", "1023", NULL), TC_CONF_ERROR);
    expect_error("'1023'", "max-header-size", "from 1024 to 1048576", NULL);
}

Test(conf, bad_durations)
{
    const char *bad[] = {"0", "999ms", "5x", "ms", "-5", "1.0005s", "1s500ms"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        cr_expect_eq(load("--max-ttl", bad[i], NULL), TC_CONF_ERROR, "'%s' was taken", bad[i]);
        expect_error("--max-ttl", quoted, "for max-ttl", "a duration like 30 (seconds), 500ms",
                     "from 1000ms to 3153600000000ms", NULL);
    }
    cr_expect_eq(load("--header-timeout", "2h", NULL), TC_CONF_ERROR);
    expect_error("'2h'", "header-timeout", "from 100ms to 3600000ms", NULL);
}

Test(conf, bad_choices)
{
    cr_expect_eq(load("--log-level", "loud", NULL), TC_CONF_ERROR);
    expect_error("--log-level", "'loud'", "for log-level", "crit, warn, notice, info or debug",
                 NULL);
    cr_expect_eq(load("--listener", "both", NULL), TC_CONF_ERROR);
    expect_error("--listener", "'both'", "for listener", "reuseport or shared", NULL);
}

Test(conf, bad_listen)
{
    const char *bad[] = {"nohost",    "127.0.0.1:", "127.0.0.1:70000",
                         "[::1]8080", "[]:80",      "1.2.3.4:http"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        cr_expect_eq(load("--listen", bad[i], NULL), TC_CONF_ERROR, "'%s' was taken", bad[i]);
        expect_error(quoted, "for listen", "HOST:PORT", NULL);
    }
}

/* ---- the command line ------------------------------------------------------------------- */

Test(conf, unknown_options_and_stray_arguments)
{
    cr_expect_eq(load("--no-such-option", "1", NULL), TC_CONF_ERROR);
    expect_error("unknown option '--no-such-option'", "--help", NULL);
    cr_expect_eq(load("--workers", "2", "extra", NULL), TC_CONF_ERROR);
    expect_error("unexpected argument 'extra'", NULL);
    cr_expect_eq(load("-w", NULL), TC_CONF_ERROR);
    expect_error("unknown option", NULL);
    cr_expect_eq(load("--workers", NULL), TC_CONF_ERROR);
    expect_error("'--workers' needs a value", NULL);
}

Test(conf, the_last_of_a_repeated_option_wins_and_tier_accumulates)
{
    cr_assert_eq(load("--workers", "2", "--workers", "3", "--tier", "mem://?size=1M", "--tier",
                      "lmdb://./x", "--tier=shm://y", NULL),
                 TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.workers, 3u);
    cr_assert_eq(conf.ntiers, 3u);
    cr_expect_str_eq(conf.tiers[0], "mem://?size=1M");
    cr_expect_str_eq(conf.tiers[1], "lmdb://./x");
    cr_expect_str_eq(conf.tiers[2], "shm://y", "--NAME=VALUE works too");
}

Test(conf, at_most_eight_tiers)
{
    const char *t = "mem://";
    cr_expect_eq(load("--tier", t, "--tier", t, "--tier", t, "--tier", t, "--tier", t, "--tier", t,
                      "--tier", t, "--tier", t, NULL),
                 TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.ntiers, (size_t)TC_CONF_MAX_TIERS);
    cr_expect_eq(load("--tier", t, "--tier", t, "--tier", t, "--tier", t, "--tier", t, "--tier", t,
                      "--tier", t, "--tier", t, "--tier", t, NULL),
                 TC_CONF_ERROR);
    expect_error("--tier", "too many tiers (at most 8)", NULL);
}

/* ---- the config file ------------------------------------------------------------------------- */

Test(conf, the_file_sets_and_the_command_line_wins_in_any_order)
{
    const char *f = config("; a comment\n"
                           "[server]\n"
                           "workers = 3\n"
                           "default-ttl = 10\n"
                           "log-level = warn\n"
                           "tier = mem://?size=1M\n"
                           "tier = lmdb://./data\n");
    cr_assert_eq(load("--config", f, NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.workers, 3u);
    cr_expect_eq(conf.default_ttl_ms, 10000u);
    cr_expect_eq(conf.log_level, TC_LOG_WARN);
    cr_expect_eq(conf.ntiers, 2u, "tier repeats in a file too");

    cr_assert_eq(load("--workers", "5", "--config", f, NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.workers, 5u, "the file won over an earlier --workers");
    cr_expect_eq(conf.default_ttl_ms, 10000u);
    cr_assert_eq(load("--config", f, "--workers", "6", NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.workers, 6u);
    cr_expect_eq(conf.ntiers, 2u);

    /* The command line's tiers replace the file's rather than add to them. */
    cr_assert_eq(load("--tier", "shm://l1", "--config", f, "--tier", "redis://h:1", NULL),
                 TC_CONF_RUN, "%s", errtext);
    cr_assert_eq(conf.ntiers, 2u);
    cr_expect_str_eq(conf.tiers[0], "shm://l1");
    cr_expect_str_eq(conf.tiers[1], "redis://h:1");
}

Test(conf, dash_and_underscore_are_the_same_in_the_file)
{
    const char *f = config("default_ttl = 7\n"
                           "max-value = 1K\n"
                           "max_pending_body = 1M\n"
                           "[another section]\n"
                           "origin_timeout = 2s\n");
    cr_assert_eq(load("--config", f, NULL), TC_CONF_RUN, "%s", errtext);
    cr_expect_eq(conf.default_ttl_ms, 7000u);
    cr_expect_eq(conf.max_value, 1024u);
    cr_expect_eq(conf.max_pending_body, 1u << 20);
    cr_expect_eq(conf.origin_timeout_ms, 2000u);
}

Test(conf, errors_in_the_file_name_the_file_the_line_and_the_setting)
{
    const char *f = config("workers = 2\n"
                           "\n"
                           "max_value = 3G\n");
    cr_expect_eq(load("--config", f, NULL), TC_CONF_ERROR);
    expect_error(f, "line 3", "'3G'", "for max-value", "from 1 to 2147483648", NULL);

    f = config("workers = 2\n"
               "colour = blue\n");
    cr_expect_eq(load("--config", f, NULL), TC_CONF_ERROR);
    expect_error(f, "unknown setting 'colour'", "line 2", NULL);

    f = config("workers = 2\n"
               "just some words\n");
    cr_expect_eq(load("--config", f, NULL), TC_CONF_ERROR);
    expect_error(f, ":2: not a NAME = VALUE line", NULL);

    /* An error on the command line is found even when the file is fine. */
    f = config("workers = 2\n");
    cr_expect_eq(load("--config", f, "--workers", "x", NULL), TC_CONF_ERROR);
    expect_error("--workers", "'x'", NULL);
}

Test(conf, a_missing_config_file_is_an_error)
{
    cr_expect_eq(load("--config", "/nonexistent/tc.ini", NULL), TC_CONF_ERROR);
    expect_error("cannot read config file '/nonexistent/tc.ini'", NULL);
}

/* Issue 14: the yes/no options (TC_CONF_BOOL). */
Test(conf, booleans)
{
    cr_assert_eq(load(NULL), TC_CONF_RUN);
    cr_expect_eq(conf.public_health, 1);
    cr_expect_eq(conf.insecure, 0);
    cr_expect_str_eq(conf.auth_tokens_file, "");
    static const char *const yes[] = {"yes", "on", "true", "1"}, *const no[] = {"no", "off",
                                                                                "false", "0"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(load("--insecure", yes[i], "--public-health", no[i], NULL), TC_CONF_RUN, "%s",
                     errtext);
        cr_expect_eq(conf.insecure, 1, "%s", yes[i]);
        cr_expect_eq(conf.public_health, 0, "%s", no[i]);
    }
    cr_assert_eq(load("--config", config("insecure = yes\npublic_health = off\n"), NULL),
                 TC_CONF_RUN, "%s", errtext);
    cr_expect(conf.insecure && !conf.public_health);
    cr_expect_eq(load("--insecure", "maybe", NULL), TC_CONF_ERROR);
    expect_error("--insecure", "'maybe'", "for insecure", "yes or no", NULL);
}
