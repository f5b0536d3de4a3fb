/* SPDX-License-Identifier: BSD-2-Clause */
#include "tiers/tier.h"
#include "tiers/tier_impl.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A probe backend that records what the registry handed it. */
static struct {
    char target[256], host[64], path[128], user[32], password[32], color[32];
    unsigned port;
} seen;

struct probe_tier {
    struct tc_tier base;
};

struct probe_settings {
    const char *color;
    uint64_t size;
    uint64_t wait_ms, cap_ms;
    double weight;
    int loud, shape;
    uint64_t mode;
};

static const char *const shapes[] = {"round", "square", NULL};

#define PF(f) offsetof(struct probe_settings, f)
static const struct tc_tier_param probe_params[] = {
    {"color", TC_TIER_PARAM_TEXT, PF(color), NULL, 0, 0, 0, NULL, "a word", "none"},
    {"size", TC_TIER_PARAM_SIZE, PF(size), "1K", 1, 1 << 30, 0, NULL, "bytes", NULL},
    {"wait", TC_TIER_PARAM_MS, PF(wait_ms), "250", 1, 60000, 0, NULL, "a wait", NULL},
    {"cap", TC_TIER_PARAM_SECS, PF(cap_ms), "2", 0, 3600000, 0, NULL, "a cap", NULL},
    {"weight", TC_TIER_PARAM_DOUBLE, PF(weight), "0.5", 0, 1, 1, NULL, "a fraction", NULL},
    {"loud", TC_TIER_PARAM_BOOL, PF(loud), "off", 0, 0, 0, NULL, "on or off", NULL},
    {"shape", TC_TIER_PARAM_CHOICE, PF(shape), "square", 0, 0, 0, shapes, "a shape", NULL},
    {"mode", TC_TIER_PARAM_OCTAL, PF(mode), "0640", 0, 0777, 0, NULL, "permissions", NULL},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

static struct probe_settings loaded;

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "(null)");
}

static enum tc_status probe_open(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                                 size_t errlen)
{
    memset(&seen, 0, sizeof(seen));
    copy(seen.target, sizeof(seen.target), tc_tier_params_target(p));
    copy(seen.host, sizeof(seen.host), tc_tier_params_host(p));
    copy(seen.path, sizeof(seen.path), tc_tier_params_path(p));
    copy(seen.user, sizeof(seen.user), tc_tier_params_user(p));
    copy(seen.password, sizeof(seen.password), tc_tier_params_password(p));
    copy(seen.color, sizeof(seen.color), tc_tier_params_get(p, "color"));
    seen.port = tc_tier_params_port(p);
    memset(&loaded, 0, sizeof(loaded));
    loaded.color = "unset";
    enum tc_status st = tc_tier_params_load(p, probe_params, &loaded, err, errlen);
    if (st != TC_OK) {
        return st;
    }
    /* A TEXT value lives as long as the open call: keep a copy. */
    static char color[32];
    snprintf(color, sizeof(color), "%s", loaded.color);
    loaded.color = color;
    struct probe_tier *t = calloc(1, sizeof(*t));
    t->base.max_value = 100;
    *out = &t->base;
    return TC_OK;
}

static void probe_close(struct tc_tier *t)
{
    free(t);
}

static enum tc_status probe_ctx_init(struct tc_tier *t, struct event_base *b,
                                     struct tc_tier_ctx **out)
{
    struct tc_tier_ctx *c = calloc(1, sizeof(*c));
    tc_tier_ctx_base_init(c, t, b);
    *out = c;
    return TC_OK;
}

static void probe_ctx_dispose(struct tc_tier_ctx *c)
{
    free(c);
}

static enum tc_status probe_op(struct tc_tier_ctx *c, struct tc_tier_req *r)
{
    (void)c;
    r->status = TC_ENOTFOUND;
    return TC_ENOTFOUND;
}

static const struct tc_tier_ops probe_ops = {
    .scheme = "probe",
    .abi_version = TC_TIER_ABI_VERSION,
    .params = probe_params,
    .open = probe_open,
    .close = probe_close,
    .ctx_init = probe_ctx_init,
    .ctx_dispose = probe_ctx_dispose,
    .get = probe_op,
    .set = probe_op,
    .del = probe_op,
};

static struct tc_tier_registry *reg;

static void setup(void)
{
    reg = tc_tier_registry_create();
    cr_assert_not_null(reg);
    cr_assert_eq(tc_tier_register(reg, &probe_ops), TC_OK);
}

static void teardown(void)
{
    tc_tier_registry_destroy(reg);
}

TestSuite(registry, .init = setup, .fini = teardown);

static enum tc_status open_err(const char *uri, char *err, size_t n)
{
    struct tc_tier *t = NULL;
    enum tc_status st = tc_tier_open(reg, uri, &t, err, n);
    if (st == TC_OK) {
        tc_tier_close(t);
    }
    return st;
}

Test(registry, unknown_scheme_names_it_and_lists_valid)
{
    char err[512];
    cr_assert_eq(open_err("nosuch://x", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "unknown tier scheme 'nosuch'") != NULL, "%s", err);
    cr_assert(strstr(err, "mem") != NULL && strstr(err, "probe") != NULL, "%s", err);
}

Test(registry, unknown_parameter_names_it_and_lists_valid)
{
    char err[512];
    cr_assert_eq(open_err("probe://x?colour=red", err, sizeof(err)), TC_EINVAL);
    cr_assert_str_eq(err, "unknown parameter 'colour' for probe:// (valid: color, size, wait, "
                          "cap, weight, loud, shape, mode, ttl_ratio, max_ttl, encrypt)");
}

Test(registry, bad_values_are_named)
{
    char err[512];
    cr_assert_eq(open_err("probe://x?ttl_ratio=0", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "'0' for ttl_ratio") != NULL, "%s", err);
    cr_assert_eq(open_err("probe://x?ttl_ratio=1.5", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://x?ttl_ratio=-0.1", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://x?ttl_ratio=nan", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://x?ttl_ratio=0.5x", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://x?max_ttl=soon", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "'soon' for max_ttl") != NULL, "%s", err);
    cr_assert_eq(open_err("probe://x?size=12Q", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "'12Q' for size in probe://") != NULL, "%s", err);
    cr_assert_eq(open_err("probe://x?size=2G", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://x?size=-1", err, sizeof(err)), TC_EINVAL);
}

Test(registry, duplicate_and_valueless_parameters_refused)
{
    char err[512];
    cr_assert_eq(open_err("probe://x?color=a&color=b", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "given twice") != NULL, "%s", err);
    cr_assert_eq(open_err("probe://x?color", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "has no value") != NULL, "%s", err);
}

Test(registry, malformed_uris_refused)
{
    char err[512];
    cr_assert_eq(open_err("not a uri", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://x#frag", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_err("probe://h:99999/", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "port") != NULL, "%s", err);
}

Test(registry, common_parameters_reach_the_tier_not_the_backend)
{
    struct tc_tier *t;
    char err[256];
    cr_assert_eq(
        tc_tier_open(reg, "probe://x?ttl_ratio=0.25&max_ttl=90s&color=blue", &t, err, sizeof(err)),
        TC_OK, "%s", err);
    cr_assert_float_eq(tc_tier_ttl_ratio(t), 0.25, 1e-12);
    cr_assert_eq(tc_tier_max_ttl_ms(t), 90000);
    cr_assert_str_eq(seen.color, "blue");
    cr_assert_str_eq(tc_tier_scheme(t), "probe");
    tc_tier_close(t);

    cr_assert_eq(tc_tier_open(reg, "probe://x?max_ttl=60", &t, err, sizeof(err)), TC_OK);
    cr_assert_eq(tc_tier_max_ttl_ms(t), 60000, "a bare max_ttl is in seconds");
    cr_assert_float_eq(tc_tier_ttl_ratio(t), 1.0, 1e-12);
    tc_tier_close(t);
}

Test(registry, targets_hosts_and_paths)
{
    struct tc_tier *t;
    char err[256];
    cr_assert_eq(tc_tier_open(reg, "probe://./data/l2?size=4K", &t, err, sizeof(err)), TC_OK, "%s",
                 err);
    cr_assert_str_eq(seen.target, "./data/l2");
    tc_tier_close(t);

    cr_assert_eq(tc_tier_open(reg, "probe:///var/lib/tc", &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_str_eq(seen.target, "/var/lib/tc");
    cr_assert_str_eq(seen.path, "/var/lib/tc");
    tc_tier_close(t);

    cr_assert_eq(tc_tier_open(reg, "probe://bob:s%40cret@127.0.0.1:6380/3", &t, err, sizeof(err)),
                 TC_OK, "%s", err);
    cr_assert_str_eq(seen.host, "127.0.0.1");
    cr_assert_eq(seen.port, 6380);
    cr_assert_str_eq(seen.path, "/3");
    cr_assert_str_eq(seen.user, "bob");
    cr_assert_str_eq(seen.password, "s@cret");
    cr_assert(strstr(tc_tier_uri(t), "cret") == NULL, "password leaked: %s", tc_tier_uri(t));
    cr_assert_str_eq(tc_tier_uri(t), "probe://bob:***@127.0.0.1:6380/3");
    tc_tier_close(t);

    cr_assert_eq(tc_tier_open(reg, "PROBE://name%20x", &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_str_eq(seen.target, "name x");
    cr_assert_str_eq(seen.user, "(null)");
    tc_tier_close(t);
}

Test(registry, register_refuses_duplicates_bad_abi_and_bad_schemes)
{
    cr_assert_eq(tc_tier_register(reg, &probe_ops), TC_EEXIST);
    struct tc_tier_ops bad = probe_ops;
    bad.scheme = "probe2";
    bad.abi_version = TC_TIER_ABI_VERSION + 1;
    cr_assert_eq(tc_tier_register(reg, &bad), TC_EVERSION);
    bad.abi_version = TC_TIER_ABI_VERSION;
    bad.scheme = "Bad Scheme";
    cr_assert_eq(tc_tier_register(reg, &bad), TC_EINVAL);
    bad.scheme = "probe2";
    bad.get = NULL;
    cr_assert_eq(tc_tier_register(reg, &bad), TC_EINVAL);
    cr_assert_not_null(tc_tier_registry_find(reg, "probe"));
    cr_assert_null(tc_tier_registry_find(reg, "probe2"));
}

/* Issue 16: the counter bit needs its operation; renewal needs the locks. */
static enum tc_status probe_count(struct tc_tier_ctx *c, struct tc_tier_count_req *req)
{
    (void)c;
    (void)req;
    return TC_OK;
}

static enum tc_status probe_renew(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    (void)c;
    (void)req;
    return TC_OK;
}

Test(registry, register_checks_the_counter_bit_and_renewal)
{
    struct tc_tier_ops bad = probe_ops;
    bad.scheme = "probe3";
    bad.caps |= TC_TIER_CAP_COUNT;
    cr_assert_eq(tc_tier_register(reg, &bad), TC_EINVAL, "the bit without count");
    bad.caps = probe_ops.caps;
    bad.lock_renew = probe_renew;
    cr_assert_eq(tc_tier_register(reg, &bad), TC_EINVAL, "renewal without lock operations");
    bad.lock_renew = NULL;
    bad.count = probe_count;
    cr_assert_eq(tc_tier_register(reg, &bad), TC_OK, "count without the bit: allowed, unused");
    struct tc_tier *t = NULL;
    char err[256];
    cr_assert_eq(tc_tier_open(reg, "probe3://x", &t, err, sizeof(err)), TC_OK, "%s", err);
    struct tc_tier_ctx *c = NULL;
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct tc_tier_count_req q = {.key = "k", .key_len = 1, .op = TC_COUNT_GET};
    cr_assert_eq(tc_tier_count(c, &q), TC_ENOTSUP, "never called without the bit");
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

Test(registry, null_registry_has_builtins_only)
{
    struct tc_tier *t;
    char err[256];
    cr_assert_eq(tc_tier_open(NULL, "mem://?size=1M", &t, err, sizeof(err)), TC_OK, "%s", err);
    tc_tier_close(t);
    cr_assert_eq(tc_tier_open(NULL, "probe://x", &t, err, sizeof(err)), TC_EINVAL);
    cr_assert_null(tc_tier_registry_find(NULL, "probe"));
}

Test(registry, size_and_duration_parsers)
{
    uint64_t v;
    cr_assert_eq(tc_parse_size("256M", &v), TC_OK);
    cr_assert_eq(v, 256ull << 20);
    cr_assert_eq(tc_parse_size("4G", &v), TC_OK);
    cr_assert_eq(v, 4ull << 30);
    cr_assert_eq(tc_parse_size("1.5K", &v), TC_OK);
    cr_assert_eq(v, 1536);
    cr_assert_eq(tc_parse_size("16MiB", &v), TC_OK);
    cr_assert_eq(v, 16ull << 20);
    cr_assert_eq(tc_parse_size("100", &v), TC_OK);
    cr_assert_eq(v, 100);
    cr_assert_eq(tc_parse_size("1.3", &v), TC_EINVAL);
    cr_assert_eq(tc_parse_size("M", &v), TC_EINVAL);
    cr_assert_eq(tc_parse_size("99999999T", &v), TC_EINVAL);
    cr_assert_eq(tc_parse_duration("250ms", 1000, &v), TC_OK);
    cr_assert_eq(v, 250);
    cr_assert_eq(tc_parse_duration("2h", 1000, &v), TC_OK);
    cr_assert_eq(v, 7200000);
    cr_assert_eq(tc_parse_duration("7", 1, &v), TC_OK);
    cr_assert_eq(v, 7);
    cr_assert_eq(tc_parse_duration("7 s", 1000, &v), TC_EINVAL);
    cr_assert_eq(tc_parse_duration("-1", 1000, &v), TC_EINVAL);
}

Test(registry, tier_layer_validates_requests)
{
    struct tc_tier *t;
    struct tc_tier_ctx *c;
    char err[256];
    cr_assert_eq(tc_tier_open(reg, "probe://x", &t, err, sizeof(err)), TC_OK);
    cr_assert_eq(tc_tier_ctx_init(t, NULL, &c), TC_OK);
    struct tc_buf out = TC_BUF_INIT;
    char big[TC_KEY_MAX + 1];
    memset(big, 'k', sizeof(big));
    struct tc_tier_req r = {.key = big, .key_len = 0, .out = &out};
    cr_assert_eq(tc_tier_get(c, &r), TC_EINVAL);
    r.key_len = sizeof(big);
    cr_assert_eq(tc_tier_get(c, &r), TC_ETOOBIG);
    r.key_len = 1;
    r.out = NULL;
    cr_assert_eq(tc_tier_get(c, &r), TC_EINVAL);
    char val[101] = {0};
    struct tc_tier_req w = {.key = "k",
                            .key_len = 1,
                            .value = val,
                            .value_len = 101,
                            .hdr = {.encoding = TC_ENC_BINARY}};
    cr_assert_eq(tc_tier_set(c, &w), TC_ETOOBIG, "probe's max_value is 100");
    cr_assert_eq(w.status, TC_ETOOBIG);
    struct tc_tier_req d = {.key = "k", .key_len = 1};
    cr_assert_eq(tc_tier_del(c, &d), TC_OK, "deleting a missing key is not an error");
    tc_tier_ctx_dispose(c);
    tc_tier_close(t);
}

/* Issue 12: whatever quotes a tier URI quotes it without its secrets. */
Test(registry, uri_redact_masks_every_secret)
{
    static const char *const cases[][2] = {
        {"redis://:pw@h:1/0", "redis://:***@h:1/0"},
        {"redis://bob:s%40cret@h/0?prefix=a", "redis://bob:***@h/0?prefix=a"},
        {"redis://lone-secret@h/0", "redis://***@h/0"},
        {"redis://h/0?password=pw&prefix=a", "redis://h/0?password=***&prefix=a"},
        {"redis://h/0?prefix=a&Pass%77ord=pw", "redis://h/0?prefix=a&Pass%77ord=***"},
        {"x://h?token=t&api_token=u&auth=v&secret=w&pwd=z",
         "x://h?token=***&api_token=***&auth=***&"
         "secret=***&pwd=***"},
        {"redis://h/0?password_file=/etc/pw", "redis://h/0?password_file=/etc/pw"},
        {"lmdb://./data/l2?map_size=1G", "lmdb://./data/l2?map_size=1G"},
        /* Malformed (a space): masked all the same. */
        {"redis://:p w@h/0?token=abc", "redis://:***@h/0?token=***"},
        {"redis://a@b:p@ss@h/0", "redis://a@b:***@h/0"},
        {"redis://:p@ss@h/0", "redis://:***@h/0"},
        {"", ""},
    };
    char out[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_str_eq(tc_tier_uri_redact(cases[i][0], out, sizeof(out)), cases[i][1], "%s",
                         cases[i][0]);
    }
    /* Cut short, still terminated, never the secret. */
    char small[12];
    tc_tier_uri_redact("redis://:secret@host/0", small, sizeof(small));
    cr_assert_str_eq(small, "redis://:**");
    cr_assert_eq(tc_tier_uri_redact(NULL, out, sizeof(out))[0], '\0');
}

Test(registry, open_errors_quote_uris_redacted)
{
    char err[512];
    cr_assert_eq(open_err("probe://bob:hunter2@h/x?color=a&color=b", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "given twice") != NULL, "%s", err);
    cr_assert(strstr(err, "hunter2") == NULL, "%s", err);
    cr_assert_eq(open_err("nope://:hunter3@h/x", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "hunter3") == NULL && strstr(err, "nope") != NULL, "%s", err);
    cr_assert_eq(open_err("probe://:hunter 4@h/x", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "hunter") == NULL, "%s", err);
    cr_assert_eq(open_err("probe://:hunter5@h:99999/x", err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "hunter5") == NULL && strstr(err, "port") != NULL, "%s", err);
}

/* ---- parameters as rows ---- */

Test(registry, rows_give_defaults_and_parse_every_kind)
{
    char err[256] = "";
    cr_assert_eq(open_err("probe://x", err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_str_eq(loaded.color, "unset", "a row without a default leaves the field");
    cr_assert_eq(loaded.size, 1024);
    cr_assert_eq(loaded.wait_ms, 250, "MS: a bare number is ms");
    cr_assert_eq(loaded.cap_ms, 2000, "SECS: a bare number is seconds");
    cr_assert_float_eq(loaded.weight, 0.5, 1e-12);
    cr_assert_eq(loaded.loud, 0);
    cr_assert_eq(loaded.shape, 1);
    cr_assert_eq(loaded.mode, 0640);
    cr_assert_eq(open_err("probe://x?color=teal&size=2M&wait=1s&cap=90&weight=1&loud=yes"
                          "&shape=round&mode=0600",
                          err, sizeof(err)),
                 TC_OK, "%s", err);
    cr_assert_str_eq(loaded.color, "teal");
    cr_assert_eq(loaded.size, 2u << 20);
    cr_assert_eq(loaded.wait_ms, 1000);
    cr_assert_eq(loaded.cap_ms, 90000);
    cr_assert_float_eq(loaded.weight, 1.0, 1e-12);
    cr_assert_eq(loaded.loud, 1);
    cr_assert_eq(loaded.shape, 0);
    cr_assert_eq(loaded.mode, 0600);
}

Test(registry, rows_refuse_values_out_of_bounds_naming_them)
{
    static const struct {
        const char *uri, *want;
    } bad[] = {
        {"probe://x?size=2G", "bad value '2G' for size in probe://"},
        {"probe://x?wait=0", "bad value '0' for wait in probe://"},
        {"probe://x?weight=0",
         "bad value '0' for weight in probe:// (expected a number in (0, 1])"},
        {"probe://x?loud=maybe", "bad value 'maybe' for loud in probe://"},
        {"probe://x?shape=oval", "bad value 'oval' for shape in probe:// (valid: round, square)"},
        {"probe://x?mode=0999", "bad value '0999' for mode in probe://"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        cr_assert_eq(open_err(bad[i].uri, err, sizeof(err)), TC_EINVAL, "%s", bad[i].uri);
        cr_assert(strstr(err, bad[i].want) != NULL, "%s: %s", bad[i].uri, err);
    }
}

struct described {
    char text[8192];
    size_t len;
};

static void describe_cb(void *arg, const char *scheme, const char *param, const char *def,
                        const char *help)
{
    struct described *d = arg;
    int n = snprintf(d->text + d->len, sizeof(d->text) - d->len, "%s|%s|%s|%s\n", scheme,
                     param ? param : "-", def, help);
    if (n > 0 && d->len + (size_t)n < sizeof(d->text)) {
        d->len += (size_t)n;
    }
}

Test(registry, describe_lists_every_parameter_with_its_default_and_meaning)
{
    static struct described d;
    d.len = 0;
    tc_tier_registry_describe(reg, describe_cb, &d);
    cr_assert(strstr(d.text, "probe|size|1K|bytes\n") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "probe|color|none|a word\n") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "probe|ttl_ratio|1|") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "probe|max_ttl|none|") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "lmdb|map_size|1G|") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "lmdb|max_item|min(16M, map_size/16)|") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "redis|timeout_ms|50|") != NULL, "%s", d.text);
    cr_assert(strstr(d.text, "shm|mode|0600|") != NULL, "%s", d.text);
    /* Every built-in row has a meaning, and a default or a word on how it is computed. */
    for (char *line = strtok(d.text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *f[4] = {line, NULL, NULL, NULL};
        for (int k = 1; k < 4; k++) {
            f[k] = strchr(f[k - 1], '|');
            cr_assert_not_null(f[k], "%s", line);
            *f[k]++ = '\0';
        }
        if (strcmp(f[1], "-") != 0) {
            cr_assert(f[2][0] != '\0', "%s:// %s has no default shown", f[0], f[1]);
            cr_assert(f[3][0] != '\0', "%s:// %s has no help", f[0], f[1]);
        }
    }
}
