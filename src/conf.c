/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* getopt_long */
#include "src/conf.h"
#include "src/access_log.h"
#include "src/log.h"
#include "tiers/tier.h"
#include "tiers/parse.h"
#include "tiers/tier.h"

#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TC_VERSION
#define TC_VERSION "0.0.0"
#endif

struct opt_desc {
    const char *name;
    size_t offset;
    enum tc_conf_type type;
    const char *def;
    uint64_t min, max;
    const char *help;
};

static const struct opt_desc options[] = {
#define TC_X(name, field, type, def, min, max, help)                                               \
    {name, offsetof(struct tc_conf, field), type, def, min, max, help},
    TC_CONF_OPTIONS(TC_X)
#undef TC_X
};
#define NOPTS (sizeof(options) / sizeof(options[0]))

enum { OPT_CONFIG = 1000, OPT_HELP, OPT_VERSION, OPT_DESCRIBE, OPT_LIST_TIERS };

static const char *keep(struct tc_conf *c, const char *s)
{
    if (c->_nstrings == sizeof(c->_strings) / sizeof(c->_strings[0])) {
        return NULL;
    }
    char *d = strdup(s);
    if (d != NULL) {
        c->_strings[c->_nstrings++] = d;
    }
    return d;
}

/* One line of --list-tiers: a scheme and its usage, then one line per
 * parameter with its default and meaning. */
struct tier_list {
    FILE *out;
    int schemes; /* printed so far: a blank line between two */
};

static void list_tier_line(void *arg, const char *scheme, const char *param, const char *def,
                           const char *help)
{
    struct tier_list *l = arg;
    if (param == NULL) {
        fprintf(l->out, "%s%s://  %s\n", l->schemes++ ? "\n" : "", scheme, help);
        return;
    }
    fprintf(l->out, "  %-20s %-22s %s\n", param, def[0] ? def : "-", help);
}

static const char *type_hint(const struct opt_desc *o)
{
    switch (o->type) {
    case TC_CONF_STR:
        return "text";
    case TC_CONF_UINT:
        return "an integer";
    case TC_CONF_SIZE:
        return "a size like 64K, 16M, 1G";
    case TC_CONF_DURATION:
        return "a duration like 30 (seconds), 500ms, 5m, 1h, 1d";
    case TC_CONF_LEVEL:
        return "crit, warn, notice, info or debug";
    case TC_CONF_TIERS:
        return "a tier URI";
    case TC_CONF_LISTENER:
        return "reuseport or shared";
    case TC_CONF_BOOL:
        return "yes or no";
    case TC_CONF_CACHECTL:
        return "private or public";
    }
    return "?";
}

/* Sets option o from text; origin names where the value came from. */
static int set_opt(struct tc_conf *c, const struct opt_desc *o, const char *v, const char *origin,
                   int *tiers_from_cli)
{
    char *base = (char *)c;
    uint64_t n = 0;
    enum tc_status st = TC_OK;
    switch (o->type) {
    case TC_CONF_STR: {
        const char *s = keep(c, v);
        if (s == NULL) {
            fprintf(c->_err, "tiercache: out of memory\n");
            return -1;
        }
        *(const char **)(base + o->offset) = s;
        return 0;
    }
    case TC_CONF_TIERS: {
        if (tiers_from_cli != NULL && *tiers_from_cli == 0) {
            c->ntiers = 0; /* the command line's tiers replace the file's */
            *tiers_from_cli = 1;
        }
        if (c->ntiers == TC_CONF_MAX_TIERS) {
            fprintf(c->_err, "tiercache: %s: too many tiers (at most %d)\n", origin,
                    TC_CONF_MAX_TIERS);
            return -1;
        }
        const char *s = keep(c, v);
        if (s == NULL) {
            return -1;
        }
        c->tiers[c->ntiers++] = s;
        return 0;
    }
    case TC_CONF_LISTENER:
    case TC_CONF_CACHECTL: {
        /* Two choices: the field is 1 for the second. */
        int listener = o->type == TC_CONF_LISTENER;
        const char *first = listener ? "reuseport" : "private";
        const char *second = listener ? "shared" : "public";
        if (strcmp(v, first) != 0 && strcmp(v, second) != 0) {
            fprintf(c->_err, "tiercache: %s: bad value '%s' for %s (valid: %s)\n", origin, v,
                    o->name, type_hint(o));
            return -1;
        }
        *(int *)(base + o->offset) = strcmp(v, second) == 0;
        return 0;
    }
    case TC_CONF_BOOL: {
        static const char *const yes[] = {"yes", "on", "true", "1"}, *const no[] = {"no", "off",
                                                                                    "false", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
                *(int *)(base + o->offset) = strcmp(v, yes[i]) == 0;
                return 0;
            }
        }
        fprintf(c->_err, "tiercache: %s: bad value '%s' for %s (valid: %s)\n", origin, v, o->name,
                type_hint(o));
        return -1;
    }
    case TC_CONF_LEVEL: {
        int l = tc_log_level_parse(v);
        if (l < 0) {
            fprintf(c->_err, "tiercache: %s: bad value '%s' for %s (valid: %s)\n", origin, v,
                    o->name, type_hint(o));
            return -1;
        }
        *(int *)(base + o->offset) = l;
        return 0;
    }
    case TC_CONF_UINT: {
        char *end;
        errno = 0;
        n = strtoull(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || errno != 0 || *end != '\0') {
            st = TC_EINVAL;
        }
        break;
    }
    case TC_CONF_SIZE:
        st = tc_parse_size(v, &n);
        break;
    case TC_CONF_DURATION:
        st = tc_parse_duration(v, 1000, &n);
        break;
    }
    if (st != TC_OK || n < o->min || n > o->max) {
        if (o->type == TC_CONF_DURATION) {
            fprintf(c->_err,
                    "tiercache: %s: bad value '%s' for %s (expected %s, from %llums to %llums)\n",
                    origin, v, o->name, type_hint(o), (unsigned long long)o->min,
                    (unsigned long long)o->max);
        } else {
            fprintf(c->_err,
                    "tiercache: %s: bad value '%s' for %s (expected %s from %llu to %llu)\n",
                    origin, v, o->name, type_hint(o), (unsigned long long)o->min,
                    (unsigned long long)o->max);
        }
        return -1;
    }
    *(uint64_t *)(base + o->offset) = n;
    return 0;
}

static const struct opt_desc *find_opt(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const char *a = options[i].name, *b = name;
        while (*a && *b && (*a == *b || (*a == '-' && *b == '_'))) {
            a++;
            b++;
        }
        if (*a == '\0' && *b == '\0') {
            return &options[i];
        }
    }
    return NULL;
}

struct ini_ctx {
    struct tc_conf *c;
    const char *path;
    int failed;
};

/* Debian's inih passes no line number to handlers; ini_parse() returns the
 * line of the first error, which tc_conf_load() adds to the message. */
static int on_ini_line(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ic = user;
    char origin[512];
    (void)section;
    snprintf(origin, sizeof(origin), "%s", ic->path);
    const struct opt_desc *o = find_opt(name);
    if (o == NULL) {
        fprintf(ic->c->_err, "tiercache: %s: unknown setting '%s' (see --describe-config)\n",
                origin, name);
        ic->failed = 1;
        return 0;
    }
    if (set_opt(ic->c, o, value, origin, NULL) != 0) {
        ic->failed = 1;
        return 0;
    }
    return 1;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: tiercache [OPTIONS]\n"
                 "       tiercache -t | -T [OPTIONS]      check | print the configuration\n"
                 "       tiercache top [-1] [URL]         live view of a running server\n"
                 "       tiercache shm stats NAME | shm unlink NAME\n"
                 "       tiercache token new NAME SCOPES\n\n"
                 "A multi-tier caching proxy: an HTTP/JSON cache API over a stack of tiers.\n\n"
                 "Options (also settable as NAME = VALUE in --config FILE; the command line "
                 "wins):\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt_desc *o = &options[i];
        fprintf(out, "  --%-18s %s", o->name, o->help);
        if (o->def != NULL && o->def[0] != '\0' && o->type != TC_CONF_TIERS) {
            fprintf(out, " (default %s)", o->def);
        }
        fputc('\n', out);
    }
    fprintf(out, "  --%-18s %s\n", "config FILE", "read settings from an INI file");
    fprintf(out, "  --%-18s %s\n", "describe-config",
            "print every setting (defaults < --config file < command line) as an INI file");
    fprintf(out, "  -t, --%-14s %s\n", "check-config",
            "check the configuration and each tier URI, open nothing; exit 0 or 2");
    fprintf(out, "  -T, --%-14s %s\n", "dump-config",
            "as -t, then print the effective configuration");
    fprintf(out, "  --%-18s %s\n", "list-tiers",
            "list the tier schemes this build knows, each parameter with its default");
    fprintf(out, "  -h, --%-14s %s\n", "help", "show this help");
    fprintf(out, "  -V, --%-14s %s\n", "version", "print the version");
    char schemes[256];
    struct tc_tier_registry *reg = tc_tier_registry_create();
    tc_tier_registry_schemes(reg, schemes, sizeof(schemes));
    tc_tier_registry_destroy(reg);
    fprintf(out,
            "\nTier URIs: SCHEME://TARGET?PARAM=VALUE&...  (schemes: %s)\n"
            "Every tier takes ttl_ratio=(0,1] and max_ttl=DURATION. See docs/tiers.md.\n",
            schemes);
}

/* Writes option @p o of @p c as it would be written in a config file, so
 * that -T output fed back as --config gives the same configuration. */
static void format_value(const struct tc_conf *c, const struct opt_desc *o, char *out, size_t len)
{
    const char *base = (const char *)c;
    switch (o->type) {
    case TC_CONF_STR: {
        const char *v = *(const char *const *)(base + o->offset);
        snprintf(out, len, "%s", v != NULL ? v : "");
        return;
    }
    case TC_CONF_LEVEL: {
        static const char *const names[] = {"crit", "warn", "notice", "info", "debug"};
        int l = *(const int *)(base + o->offset);
        snprintf(out, len, "%s", l >= 0 && l < 5 ? names[l] : "?");
        return;
    }
    case TC_CONF_LISTENER:
        snprintf(out, len, "%s", *(const int *)(base + o->offset) ? "shared" : "reuseport");
        return;
    case TC_CONF_BOOL:
        snprintf(out, len, "%s", *(const int *)(base + o->offset) ? "yes" : "no");
        return;
    case TC_CONF_CACHECTL:
        snprintf(out, len, "%s", *(const int *)(base + o->offset) ? "public" : "private");
        return;
    case TC_CONF_TIERS:
        out[0] = '\0'; /* one line per tier: print_conf() */
        return;
    case TC_CONF_UINT:
        snprintf(out, len, "%llu", *(const unsigned long long *)(const void *)(base + o->offset));
        return;
    case TC_CONF_SIZE:
    case TC_CONF_DURATION: {
        /* The largest unit that divides the value exactly, as people write
         * it (16M, 1h); the parsers read every form back. */
        static const struct {
            uint64_t n;
            const char *unit;
        } sizes[] = {{1ull << 30, "G"}, {1ull << 20, "M"}, {1ull << 10, "K"}, {1, ""}},
          durations[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
        uint64_t v = *(const uint64_t *)(const void *)(base + o->offset);
        int size = o->type == TC_CONF_SIZE;
        size_t n =
            size ? sizeof(sizes) / sizeof(sizes[0]) : sizeof(durations) / sizeof(durations[0]);
        for (size_t i = 0; i < n; i++) {
            uint64_t u = size ? sizes[i].n : durations[i].n;
            if (v == 0 || v % u == 0 || i == n - 1) {
                snprintf(out, len, "%llu%s", (unsigned long long)(v / u),
                         v == 0 ? (size ? "" : "s")
                         : size ? sizes[i].unit
                                : durations[i].unit);
                return;
            }
        }
        return;
    }
    }
    out[0] = '\0';
}

/* Prints every setting of @p c as an INI file; with @p help, each with its
 * description and type as a comment. Tier URIs are printed redacted. */
static void print_conf(const struct tc_conf *c, FILE *out, int help)
{
    fprintf(out, "[server]\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt_desc *o = &options[i];
        if (help) {
            fprintf(out, "# %s (%s)\n", o->help, type_hint(o));
        }
        if (o->type == TC_CONF_TIERS) {
            if (c->ntiers == 0) {
                fprintf(out, "# tier = shm://tiercache?size=64M\n# tier = lmdb://./data/l2\n");
            }
            for (size_t k = 0; k < c->ntiers; k++) {
                char shown[1024];
                tc_tier_uri_redact(c->tiers[k], shown, sizeof(shown));
                fprintf(out, "tier = %s\n", shown);
            }
            continue;
        }
        char v[1024];
        format_value(c, o, v, sizeof(v));
        fprintf(out, "%s = %s\n", o->name, v);
    }
}

void tc_conf_print(const struct tc_conf *c, FILE *out)
{
    print_conf(c, out, 0);
}

void tc_conf_diff(const struct tc_conf *a, const struct tc_conf *b, tc_conf_diff_fn fn, void *arg)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt_desc *o = &options[i];
        int same = 1;
        if (o->type == TC_CONF_TIERS) {
            same = a->ntiers == b->ntiers;
            for (size_t k = 0; same && k < a->ntiers; k++) {
                same = strcmp(a->tiers[k], b->tiers[k]) == 0;
            }
            if (!same) {
                fn(arg, o->name, "(tier URIs)", "(tier URIs)");
            }
            continue;
        }
        char va[1024], vb[1024];
        format_value(a, o, va, sizeof(va));
        format_value(b, o, vb, sizeof(vb));
        if (strcmp(va, vb) != 0) {
            fn(arg, o->name, va, vb);
        }
    }
}

/* Writable, or creatable in its directory: what tc_log_setup() will need,
 * checked without creating or opening anything. */
static int check_writable(struct tc_conf *c, const char *what, const char *path)
{
    if (path == NULL || path[0] == '\0' || access(path, W_OK) == 0) {
        return 0;
    }
    if (errno == ENOENT) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash == NULL) {
            snprintf(dir, sizeof(dir), ".");
        } else if (slash == dir) {
            dir[1] = '\0';
        } else {
            *slash = '\0';
        }
        if (access(dir, W_OK) == 0) {
            return 0;
        }
        fprintf(c->_err, "tiercache: %s '%s': cannot create it in '%s': %s\n", what, path, dir,
                strerror(errno));
        return -1;
    }
    fprintf(c->_err, "tiercache: %s '%s': not writable: %s\n", what, path, strerror(errno));
    return -1;
}

/* -t: what can be checked without opening a tier or a file. */
static int check_conf(struct tc_conf *c)
{
    int bad = 0;
    struct tc_tier_registry *reg = tc_tier_registry_create();
    if (reg == NULL) {
        fprintf(c->_err, "tiercache: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < c->ntiers; i++) {
        char err[512], shown[1024];
        if (tc_tier_check(reg, c->tiers[i], err, sizeof(err)) != TC_OK) {
            tc_tier_uri_redact(c->tiers[i], shown, sizeof(shown));
            fprintf(c->_err, "tiercache: tier '%s': %s\n", shown, err);
            bad = 1;
        }
    }
    tc_tier_registry_destroy(reg);
    bad |= check_writable(c, "log-file", c->log_file) != 0;
    bad |= check_writable(c, "access-log", c->access_log) != 0;
    return bad ? -1 : 0;
}

/* HOST:PORT or [V6]:PORT of option @p opt into host and *port. */
static int parse_hostport(FILE *err, const char *opt, const char *s, char *host, size_t hostcap,
                          unsigned *port_out)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            goto bad;
        }
        size_t n = (size_t)(close - s - 1);
        if (n == 0 || n >= hostcap) {
            goto bad;
        }
        memcpy(host, s + 1, n);
        host[n] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            goto bad;
        }
        size_t n = (size_t)(colon - s);
        if (n >= hostcap) {
            goto bad;
        }
        memcpy(host, s, n);
        host[n] = '\0';
        if (n == 0) {
            snprintf(host, hostcap, "0.0.0.0");
        }
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || port > 65535) {
        goto bad;
    }
    *port_out = (unsigned)port;
    return 0;
bad:
    fprintf(err,
            "tiercache: bad value '%s' for %s (expected HOST:PORT, e.g. 127.0.0.1:8080 or "
            "[::1]:8080; port 0 picks a free one)\n",
            s, opt);
    return -1;
}

static int parse_listen(struct tc_conf *c)
{
    if (parse_hostport(c->_err, "listen", c->listen, c->listen_host, sizeof(c->listen_host),
                       &c->listen_port) != 0) {
        return -1;
    }
    if (c->listen_tls[0] != '\0' &&
        parse_hostport(c->_err, "listen-tls", c->listen_tls, c->listen_tls_host,
                       sizeof(c->listen_tls_host), &c->listen_tls_port) != 0) {
        return -1;
    }
    return 0;
}

enum { MODE_RUN, MODE_RELOAD };

static enum tc_conf_result load(struct tc_conf *c, int argc, char **argv, FILE *err, int mode)
{
    struct option longopts[NOPTS + 8];
    const char *config = NULL;
    int tiers_from_cli = 0;
    int describe = 0, test = 0, dump = 0;

    memset(c, 0, sizeof(*c));
    c->_err = err;
    for (size_t i = 0; i < NOPTS; i++) {
        if (options[i].def != NULL && set_opt(c, &options[i], options[i].def, "default", NULL)) {
            return TC_CONF_ERROR;
        }
        longopts[i] = (struct option){options[i].name, required_argument, NULL, (int)i};
    }
    longopts[NOPTS] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    longopts[NOPTS + 1] = (struct option){"help", no_argument, NULL, OPT_HELP};
    longopts[NOPTS + 2] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    longopts[NOPTS + 3] = (struct option){"describe-config", no_argument, NULL, OPT_DESCRIBE};
    longopts[NOPTS + 4] = (struct option){"list-tiers", no_argument, NULL, OPT_LIST_TIERS};
    longopts[NOPTS + 5] = (struct option){"check-config", no_argument, NULL, 't'};
    longopts[NOPTS + 6] = (struct option){"dump-config", no_argument, NULL, 'T'};
    longopts[NOPTS + 7] = (struct option){NULL, 0, NULL, 0};

    /* Pass 1: informational flags and --config; pass 2: the rest, so that the
     * command line wins over the file whatever the order. A reload runs
     * with the argv that started the server: its flags were already handled. */
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":htTV", longopts, NULL)) != -1) {
        if (mode == MODE_RELOAD && opt != OPT_CONFIG) {
            continue;
        }
        switch (opt) {
        case OPT_CONFIG:
            config = optarg;
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return TC_CONF_EXIT;
        case 'V':
        case OPT_VERSION:
            printf("tiercache %s\n", TC_VERSION);
            return TC_CONF_EXIT;
        case OPT_DESCRIBE:
            describe = 1;
            break;
        case 't':
            test = 1;
            break;
        case 'T':
            dump = 1;
            break;
        case OPT_LIST_TIERS: {
            struct tier_list l = {stdout, 0};
            tc_tier_registry_describe(NULL, list_tier_line, &l);
            return TC_CONF_EXIT;
        }
        case '?':
            fprintf(c->_err, "tiercache: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return TC_CONF_ERROR;
        case ':':
            fprintf(c->_err, "tiercache: option '%s' needs a value (see --help)\n",
                    argv[optind - 1]);
            return TC_CONF_ERROR;
        default:
            break;
        }
    }
    if (optind < argc) {
        fprintf(c->_err, "tiercache: unexpected argument '%s' (see --help)\n", argv[optind]);
        return TC_CONF_ERROR;
    }
    if (config != NULL) {
        struct ini_ctx ic = {c, config, 0};
        int rc = ini_parse(config, on_ini_line, &ic);
        if (rc < 0) {
            fprintf(c->_err, "tiercache: cannot read config file '%s': %s\n", config,
                    rc == -1 ? strerror(errno) : "out of memory");
            return TC_CONF_ERROR;
        }
        if (ic.failed) {
            fprintf(c->_err, "tiercache: (in %s, line %d)\n", config, rc);
            return TC_CONF_ERROR;
        }
        if (rc > 0) {
            fprintf(c->_err, "tiercache: %s:%d: not a NAME = VALUE line\n", config, rc);
            return TC_CONF_ERROR;
        }
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":htTV", longopts, NULL)) != -1) {
        if (opt >= 0 && (size_t)opt < NOPTS) {
            char origin[64];
            snprintf(origin, sizeof(origin), "--%s", options[opt].name);
            if (set_opt(c, &options[opt], optarg, origin, &tiers_from_cli) != 0) {
                return TC_CONF_ERROR;
            }
        }
    }
    if (parse_listen(c) != 0) {
        return TC_CONF_ERROR;
    }
    if (tc_access_format_parse(c->access_log_format) < 0) {
        fprintf(c->_err,
                "tiercache: bad value '%s' for access-log-format (valid: combined, json)\n",
                c->access_log_format);
        return TC_CONF_ERROR;
    }
    if (test || dump) {
        if (check_conf(c) != 0) {
            return TC_CONF_ERROR; /* tc_conf_load() says "test failed" */
        }
    }
    if (dump || describe) {
        /* The effective settings: defaults, then the file, then the command
         * line, which is what a server started with the same argv runs. */
        printf("# tiercache %s: effective configuration (defaults < %s < command line)\n",
               TC_VERSION, config ? config : "no --config file");
        print_conf(c, stdout, describe);
    }
    if (test) {
        printf("tiercache: configuration%s%s ok\n", config ? " file " : "", config ? config : "");
    }
    return test || dump || describe ? TC_CONF_EXIT : TC_CONF_RUN;
}

enum tc_conf_result tc_conf_load(struct tc_conf *c, int argc, char **argv)
{
    enum tc_conf_result r = load(c, argc, argv, stderr, MODE_RUN);
    for (int i = 1; r == TC_CONF_ERROR && i < argc; i++) {
        /* -t/-T end with a verdict line, as nginx -t does, whatever failed. */
        if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "-T") == 0 ||
            strcmp(argv[i], "--check-config") == 0 || strcmp(argv[i], "--dump-config") == 0) {
            fprintf(stderr, "tiercache: configuration test failed\n");
            break;
        }
    }
    return r;
}

enum tc_conf_result tc_conf_reload(struct tc_conf *c, int argc, char **argv, FILE *err)
{
    return load(c, argc, argv, err, MODE_RELOAD);
}

void tc_conf_deinit(struct tc_conf *c)
{
    for (size_t i = 0; i < c->_nstrings; i++) {
        free(c->_strings[i]);
    }
    c->_nstrings = 0;
}
