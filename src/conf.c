#define _GNU_SOURCE /* getopt_long */
#include "src/conf.h"
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
            fprintf(stderr, "tiercache: out of memory\n");
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
            fprintf(stderr, "tiercache: %s: too many tiers (at most %d)\n", origin,
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
            fprintf(stderr, "tiercache: %s: bad value '%s' for %s (valid: %s)\n", origin, v,
                    o->name, type_hint(o));
            return -1;
        }
        *(int *)(base + o->offset) = strcmp(v, second) == 0;
        return 0;
    }
    case TC_CONF_LEVEL: {
        int l = tc_log_level_parse(v);
        if (l < 0) {
            fprintf(stderr, "tiercache: %s: bad value '%s' for %s (valid: %s)\n", origin, v,
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
            fprintf(stderr,
                    "tiercache: %s: bad value '%s' for %s (expected %s, from %llums to %llums)\n",
                    origin, v, o->name, type_hint(o), (unsigned long long)o->min,
                    (unsigned long long)o->max);
        } else {
            fprintf(stderr,
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
        fprintf(stderr, "tiercache: %s: unknown setting '%s' (see --describe-config)\n", origin,
                name);
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
                 "       tiercache shm stats NAME | shm unlink NAME\n\n"
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
    fprintf(out, "  --%-18s %s\n", "describe-config", "print every setting as an INI file");
    fprintf(out, "  --%-18s %s\n", "list-tiers",
            "list the tier schemes this build knows, each parameter with its default");
    fprintf(out, "  --%-18s %s\n", "help", "show this help");
    fprintf(out, "  --%-18s %s\n", "version", "print the version");
    char schemes[256];
    struct tc_tier_registry *reg = tc_tier_registry_create();
    tc_tier_registry_schemes(reg, schemes, sizeof(schemes));
    tc_tier_registry_destroy(reg);
    fprintf(out,
            "\nTier URIs: SCHEME://TARGET?PARAM=VALUE&...  (schemes: %s)\n"
            "Every tier takes ttl_ratio=(0,1] and max_ttl=DURATION. See docs/tiers.md.\n",
            schemes);
}

static void describe(void)
{
    printf("# tiercache settings, with their defaults\n[server]\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt_desc *o = &options[i];
        printf("# %s (%s)\n", o->help, type_hint(o));
        if (o->type == TC_CONF_TIERS) {
            printf("# tier = shm://tiercache?size=64M\n# tier = lmdb://./data/l2\n");
        } else {
            printf("%s = %s\n", o->name, o->def ? o->def : "");
        }
    }
}

static int parse_listen(struct tc_conf *c)
{
    const char *s = c->listen;
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            goto bad;
        }
        size_t n = (size_t)(close - s - 1);
        if (n == 0 || n >= sizeof(c->listen_host)) {
            goto bad;
        }
        memcpy(c->listen_host, s + 1, n);
        c->listen_host[n] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            goto bad;
        }
        size_t n = (size_t)(colon - s);
        if (n >= sizeof(c->listen_host)) {
            goto bad;
        }
        memcpy(c->listen_host, s, n);
        c->listen_host[n] = '\0';
        if (n == 0) {
            strcpy(c->listen_host, "0.0.0.0");
        }
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || port > 65535) {
        goto bad;
    }
    c->listen_port = (unsigned)port;
    return 0;
bad:
    fprintf(stderr,
            "tiercache: bad value '%s' for listen (expected HOST:PORT, e.g. 127.0.0.1:8080 or "
            "[::1]:8080; port 0 picks a free one)\n",
            s);
    return -1;
}

enum tc_conf_result tc_conf_load(struct tc_conf *c, int argc, char **argv)
{
    struct option longopts[NOPTS + 6];
    const char *config = NULL;
    int tiers_from_cli = 0;

    memset(c, 0, sizeof(*c));
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
    longopts[NOPTS + 5] = (struct option){NULL, 0, NULL, 0};

    /* Pass 1: informational flags and --config; pass 2: the rest, so that the
     * command line wins over the file whatever the order. */
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_CONFIG:
            config = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return TC_CONF_EXIT;
        case OPT_VERSION:
            printf("tiercache %s\n", TC_VERSION);
            return TC_CONF_EXIT;
        case OPT_DESCRIBE:
            describe();
            return TC_CONF_EXIT;
        case OPT_LIST_TIERS: {
            struct tier_list l = {stdout, 0};
            tc_tier_registry_describe(NULL, list_tier_line, &l);
            return TC_CONF_EXIT;
        }
        case '?':
            fprintf(stderr, "tiercache: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return TC_CONF_ERROR;
        case ':':
            fprintf(stderr, "tiercache: option '%s' needs a value (see --help)\n",
                    argv[optind - 1]);
            return TC_CONF_ERROR;
        default:
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tiercache: unexpected argument '%s' (see --help)\n", argv[optind]);
        return TC_CONF_ERROR;
    }
    if (config != NULL) {
        struct ini_ctx ic = {c, config, 0};
        int rc = ini_parse(config, on_ini_line, &ic);
        if (rc < 0) {
            fprintf(stderr, "tiercache: cannot read config file '%s': %s\n", config,
                    rc == -1 ? strerror(errno) : "out of memory");
            return TC_CONF_ERROR;
        }
        if (ic.failed) {
            fprintf(stderr, "tiercache: (in %s, line %d)\n", config, rc);
            return TC_CONF_ERROR;
        }
        if (rc > 0) {
            fprintf(stderr, "tiercache: %s:%d: not a NAME = VALUE line\n", config, rc);
            return TC_CONF_ERROR;
        }
    }
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
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
    return TC_CONF_RUN;
}

void tc_conf_deinit(struct tc_conf *c)
{
    for (size_t i = 0; i < c->_nstrings; i++) {
        free(c->_strings[i]);
    }
    c->_nstrings = 0;
}
