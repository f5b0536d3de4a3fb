/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Scheme registry and URI parsing. A tier URI is parsed once here with
 * uriparser; the common parameters (ttl_ratio, max_ttl, encrypt) are consumed here and
 * every other parameter is checked against the backend's declared list, so
 * that every backend reports unknown parameters the same way.
 */
#include "tiers/tier.h"
#include "tiers/tier_impl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <uriparser/Uri.h>

extern const struct tc_tier_ops tc_tier_lmdb_ops;
extern const struct tc_tier_ops tc_tier_mem_ops;
extern const struct tc_tier_ops tc_tier_shm_ops;
extern const struct tc_tier_ops tc_tier_redis_ops;
extern const struct tc_tier_ops tc_tier_redis_unix_ops;

/* The built-in backends (STYLE R8). */
static const struct tc_tier_ops *const builtin_tiers[] = {
    &tc_tier_lmdb_ops,  &tc_tier_mem_ops,        &tc_tier_shm_ops,
    &tc_tier_redis_ops, &tc_tier_redis_unix_ops, NULL,
};

/* The parameters every tier takes, handled here (tc_tier_open). */
struct common_settings {
    double ttl_ratio;
    uint64_t max_ttl_ms; /* 0: no cap */
    int encrypt;         /* -1: not given (on for persistent and remote tiers with a keyring) */
};

static const struct tc_tier_param common_params[] = {
    {"ttl_ratio", TC_TIER_PARAM_DOUBLE, offsetof(struct common_settings, ttl_ratio), "1", 0, 1, 1,
     NULL, "this tier keeps a value for this fraction (0, 1] of its remaining TTL", NULL},
    {"max_ttl", TC_TIER_PARAM_SECS, offsetof(struct common_settings, max_ttl_ms), NULL, 1,
     (double)(1ull << 52), 0, NULL,
     "a cap on this tier's local lifetime: 60 (seconds), 500ms, 30s, 5m, 1h, 1d", "none"},
    {"encrypt", TC_TIER_PARAM_BOOL, offsetof(struct common_settings, encrypt), NULL, 0, 0, 0, NULL,
     "store values AES-256-GCM sealed with the encryption-keys-file keyring (on/off)",
     "on for persistent and remote tiers (lmdb, redis) when a keyring is set, else off"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

struct tc_tier_registry {
    const struct tc_tier_ops **ops;
    size_t n, cap;
    struct tc_seal *seal; /* the keyring for encrypt=on, or NULL */
};

void tc_tier_registry_set_seal(struct tc_tier_registry *reg, struct tc_seal *seal)
{
    reg->seal = seal;
}

/* Decides whether a tier opened from @p ops seals its values: encrypt= as
 * given, else on for the tiers whose data leaves the process's memory for
 * long (a file, a server) when a keyring is set. */
static enum tc_status resolve_encrypt(const struct tc_tier_registry *reg,
                                      const struct tc_tier_ops *ops, int given, const char *shown,
                                      struct tc_seal **seal, char *err, size_t errlen)
{
    struct tc_seal *ring = reg != NULL ? reg->seal : NULL;
    *seal = NULL;
    if (given == 1 && ring == NULL) {
        tc_tier_errf(err, errlen,
                     "encrypt=on in '%s' needs a keyring: set encryption-keys-file (create one "
                     "with: tiercache key new PATH)",
                     shown);
        return TC_EINVAL;
    }
    if (given == 1 ||
        (given == -1 && (ops->caps & (TC_TIER_CAP_PERSISTENT | TC_TIER_CAP_REMOTE)) != 0)) {
        *seal = ring;
    }
    return TC_OK;
}

struct tc_param {
    char *name;
    char *value;
};

struct tc_tier_params {
    char *scheme;
    char *target;
    char *host;
    unsigned port;
    char *path;
    char *user;
    char *password;
    struct tc_param *params;
    size_t nparams;
};

void tc_tier_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- registry ----------------------------------------------------------- */

static int scheme_valid(const char *s)
{
    if (s == NULL || !islower((unsigned char)s[0])) {
        return 0;
    }
    for (; *s; s++) {
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '+' && *s != '-' &&
            *s != '.') {
            return 0;
        }
    }
    return 1;
}

struct tc_tier_registry *tc_tier_registry_create(void)
{
    struct tc_tier_registry *reg = calloc(1, sizeof(*reg));
    if (reg == NULL) {
        return NULL;
    }
    for (size_t i = 0; builtin_tiers[i] != NULL; i++) {
        if (tc_tier_register(reg, builtin_tiers[i]) != TC_OK) {
            tc_tier_registry_destroy(reg);
            return NULL;
        }
    }
    return reg;
}

void tc_tier_registry_destroy(struct tc_tier_registry *reg)
{
    if (reg == NULL) {
        return;
    }
    free(reg->ops);
    free(reg);
}

const struct tc_tier_ops *tc_tier_registry_find(const struct tc_tier_registry *reg,
                                                const char *scheme)
{
    if (reg == NULL) {
        for (size_t i = 0; builtin_tiers[i] != NULL; i++) {
            if (strcmp(builtin_tiers[i]->scheme, scheme) == 0) {
                return builtin_tiers[i];
            }
        }
        return NULL;
    }
    for (size_t i = 0; i < reg->n; i++) {
        if (strcmp(reg->ops[i]->scheme, scheme) == 0) {
            return reg->ops[i];
        }
    }
    return NULL;
}

enum tc_status tc_tier_register(struct tc_tier_registry *reg, const struct tc_tier_ops *ops)
{
    if (reg == NULL || ops == NULL) {
        return TC_EINVAL;
    }
    if (ops->abi_version != TC_TIER_ABI_VERSION) {
        return TC_EVERSION;
    }
    if (!scheme_valid(ops->scheme) || ops->open == NULL || ops->close == NULL ||
        ops->ctx_init == NULL || ops->ctx_dispose == NULL || ops->get == NULL || ops->set == NULL ||
        ops->del == NULL) {
        return TC_EINVAL;
    }
    /* Lock operations come all together or not at all, with a scope. */
    int nlock =
        (ops->lock_acquire != NULL) + (ops->lock_release != NULL) + (ops->lock_peek != NULL);
    int scoped = (ops->caps & (TC_TIER_CAP_LOCK_HOST | TC_TIER_CAP_LOCK_CLUSTER)) != 0;
    if ((nlock != 0 && nlock != 3) || (nlock == 3) != scoped) {
        return TC_EINVAL;
    }
    /* Renewal only beside the lock operations; the counter bit only with
     * the operation (a copy of mem's ops without the bit keeps its count:
     * unused, as the tier layer looks at the bit). */
    if ((ops->lock_renew != NULL && nlock != 3) ||
        ((ops->caps & TC_TIER_CAP_COUNT) && ops->count == NULL)) {
        return TC_EINVAL;
    }
    if (tc_tier_registry_find(reg, ops->scheme) != NULL) {
        return TC_EEXIST;
    }
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 8;
        const struct tc_tier_ops **p = realloc(reg->ops, cap * sizeof(*p));
        if (p == NULL) {
            return TC_ENOMEM;
        }
        reg->ops = p;
        reg->cap = cap;
    }
    /* Kept sorted by scheme so that listings are stable. */
    size_t at = reg->n;
    while (at > 0 && strcmp(reg->ops[at - 1]->scheme, ops->scheme) > 0) {
        reg->ops[at] = reg->ops[at - 1];
        at--;
    }
    reg->ops[at] = ops;
    reg->n++;
    return TC_OK;
}

/* The default of a row, as --list-tiers shows it. */
static const char *shown_default(const struct tc_tier_param *row)
{
    if (row->def != NULL) {
        return row->def;
    }
    return row->def_help != NULL ? row->def_help : "";
}

void tc_tier_registry_describe(const struct tc_tier_registry *reg, tc_tier_describe_fn fn,
                               void *arg)
{
    const struct tc_tier_ops *const *list = reg ? reg->ops : builtin_tiers;
    size_t n = reg ? reg->n : 0;
    if (reg == NULL) {
        while (builtin_tiers[n] != NULL) {
            n++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct tc_tier_ops *ops = list[i];
        fn(arg, ops->scheme, NULL, "", ops->usage ? ops->usage : "");
        const struct tc_tier_param *lists[2] = {ops->params, common_params};
        for (int l = 0; l < 2; l++) {
            for (size_t k = 0; lists[l] != NULL && lists[l][k].name != NULL; k++) {
                const struct tc_tier_param *row = &lists[l][k];
                fn(arg, ops->scheme, row->name, shown_default(row), row->help ? row->help : "");
            }
        }
    }
}

void tc_tier_registry_schemes(const struct tc_tier_registry *reg, char *out, size_t len)
{
    const struct tc_tier_ops *const *list = reg ? reg->ops : builtin_tiers;
    size_t n = 0;
    if (len == 0) {
        return;
    }
    out[0] = '\0';
    if (reg != NULL) {
        n = reg->n;
    } else {
        while (builtin_tiers[n] != NULL) {
            n++;
        }
    }
    size_t used = 0;
    for (size_t i = 0; i < n && used < len; i++) {
        int w = snprintf(out + used, len - used, "%s%s", i ? ", " : "", list[i]->scheme);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
}

/* ---- URI parsing ---------------------------------------------------------- */

static char *range_dup(const UriTextRangeA *r, int decode)
{
    if (r->first == NULL || r->afterLast == NULL) {
        return strdup("");
    }
    size_t n = (size_t)(r->afterLast - r->first);
    char *s = malloc(n + 1);
    if (s == NULL) {
        return NULL;
    }
    memcpy(s, r->first, n);
    s[n] = '\0';
    if (decode) {
        uriUnescapeInPlaceExA(s, URI_FALSE, URI_BR_DONT_TOUCH);
    }
    return s;
}

static void params_free(struct tc_tier_params *p)
{
    free(p->scheme);
    free(p->target);
    free(p->host);
    free(p->path);
    free(p->user);
    free(p->password);
    for (size_t i = 0; i < p->nparams; i++) {
        free(p->params[i].name);
        free(p->params[i].value);
    }
    free(p->params);
}

static int name_in(const char *name, const struct tc_tier_param *rows)
{
    for (size_t i = 0; rows != NULL && rows[i].name != NULL; i++) {
        if (strcmp(rows[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static void valid_list(const struct tc_tier_ops *ops, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    const struct tc_tier_param *lists[2] = {ops->params, common_params};
    for (int l = 0; l < 2; l++) {
        for (size_t i = 0; lists[l] != NULL && lists[l][i].name != NULL && used < len; i++) {
            int w = snprintf(out + used, len - used, "%s%s", used ? ", " : "", lists[l][i].name);
            if (w < 0) {
                return;
            }
            used += (size_t)w;
        }
    }
}

/* ---- redaction ------------------------------------------------------------ */

/* Query parameters whose values are secrets: password=, pass=, pwd=, auth=,
 * secret=, token=, api_token=... but not password_file=, whose value is a
 * path (the point of it). The name is compared decoded and case-folded, so
 * that "Pass%77ord" is caught too. */
static int secret_name(const char *name, size_t len)
{
    char n[64];
    size_t o = 0;
    for (size_t i = 0; i < len && o < sizeof(n) - 1; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == '%' && i + 2 < len && isxdigit((unsigned char)name[i + 1]) &&
            isxdigit((unsigned char)name[i + 2])) {
            char hex[3] = {name[i + 1], name[i + 2], '\0'};
            ch = (unsigned char)strtoul(hex, NULL, 16);
            i += 2;
        }
        n[o++] = (char)tolower(ch);
    }
    n[o] = '\0';
    if (o >= 5 && strcmp(n + o - 5, "_file") == 0) {
        return 0;
    }
    return strstr(n, "pass") != NULL || strstr(n, "pwd") != NULL || strstr(n, "secret") != NULL ||
           strstr(n, "token") != NULL || strcmp(n, "auth") == 0;
}

struct sink {
    char *p;
    size_t len, used;
};

static void emit(struct sink *s, const char *from, size_t n)
{
    if (s->used + 1 >= s->len) {
        return;
    }
    if (n > s->len - 1 - s->used) {
        n = s->len - 1 - s->used;
    }
    memcpy(s->p + s->used, from, n);
    s->used += n;
    s->p[s->used] = '\0';
}

const char *tc_tier_uri_redact(const char *uri, char *out, size_t len)
{
    struct sink s = {out, len, 0};
    if (out == NULL || len == 0) {
        return out;
    }
    out[0] = '\0';
    if (uri == NULL) {
        return out;
    }
    /* Where the userinfo and the query are: as uriparser reads the URI, or,
     * for one it cannot read (which is when an error message quotes it), a
     * guess that errs on the side of masking: everything from "://" to the
     * last '@' is userinfo. */
    const char *ui0 = NULL, *ui1 = NULL, *q0 = NULL, *q1 = NULL;
    UriUriA u;
    const char *errpos = NULL;
    if (uriParseSingleUriA(&u, uri, &errpos) == URI_SUCCESS) {
        if (u.userInfo.first != NULL) {
            ui0 = u.userInfo.first;
            ui1 = u.userInfo.afterLast;
        }
        if (u.query.first != NULL) {
            q0 = u.query.first;
            q1 = u.query.afterLast;
        }
        uriFreeUriMembersA(&u);
    } else {
        const char *a = strstr(uri, "://");
        const char *at = a != NULL ? strrchr(a + 3, '@') : NULL;
        if (at != NULL) {
            ui0 = a + 3;
            ui1 = at;
        }
        q0 = strchr(at != NULL ? at : uri, '?');
        if (q0 != NULL) {
            q0++;
            q1 = q0 + strcspn(q0, "#");
        }
    }
    const char *p = uri;
    if (ui0 != NULL) {
        emit(&s, p, (size_t)(ui0 - p));
        const char *colon = memchr(ui0, ':', (size_t)(ui1 - ui0));
        if (colon != NULL) {
            emit(&s, ui0, (size_t)(colon + 1 - ui0)); /* the user stays */
        }
        /* A lone userinfo is a password to Redis (redis://SECRET@host). */
        emit(&s, "***", 3);
        p = ui1;
    }
    if (q0 != NULL && q0 >= p) {
        emit(&s, p, (size_t)(q0 - p));
        const char *seg = q0;
        while (seg < q1) {
            const char *end = memchr(seg, '&', (size_t)(q1 - seg));
            if (end == NULL) {
                end = q1;
            }
            const char *eq = memchr(seg, '=', (size_t)(end - seg));
            if (eq != NULL && secret_name(seg, (size_t)(eq - seg))) {
                emit(&s, seg, (size_t)(eq + 1 - seg));
                emit(&s, "***", 3);
            } else {
                emit(&s, seg, (size_t)(end - seg));
            }
            if (end < q1) {
                emit(&s, "&", 1);
            }
            seg = end + 1;
        }
        p = q1;
    }
    emit(&s, p, strlen(p));
    return out;
}

/* tc_tier_uri_redact() into a new string (room for every mask). */
static char *redact_dup(const char *uri)
{
    size_t n = 3 * strlen(uri) + 16;
    char *s = malloc(n);
    if (s != NULL) {
        tc_tier_uri_redact(uri, s, n);
    }
    return s;
}

/* @p shown is @p uri redacted: what error messages quote. */
static enum tc_status parse_uri(const struct tc_tier_registry *reg, const char *uri,
                                const char *shown, struct tc_tier_params *p,
                                const struct tc_tier_ops **opsp, char *err, size_t errlen)
{
    UriUriA u;
    const char *errpos = NULL;
    enum tc_status st = TC_ENOMEM;
    UriQueryListA *qlist = NULL;
    char valid[512];

    memset(p, 0, sizeof(*p));
    if (uriParseSingleUriA(&u, uri, &errpos) != URI_SUCCESS) {
        tc_tier_errf(err, errlen,
                     "malformed tier URI '%s' at offset %zu (expected SCHEME://TARGET?k=v&...)",
                     shown, errpos ? (size_t)(errpos - uri) : 0);
        return TC_EINVAL;
    }
    if (u.scheme.first == NULL) {
        tc_tier_errf(err, errlen, "tier URI '%s' has no scheme (expected SCHEME://TARGET?k=v&...)",
                     shown);
        st = TC_EINVAL;
        goto out;
    }
    if ((p->scheme = range_dup(&u.scheme, 0)) == NULL) {
        goto out;
    }
    for (char *c = p->scheme; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    const struct tc_tier_ops *ops = tc_tier_registry_find(reg, p->scheme);
    if (ops == NULL) {
        char schemes[256];
        tc_tier_registry_schemes(reg, schemes, sizeof(schemes));
        tc_tier_errf(err, errlen, "unknown tier scheme '%s' in '%s' (valid: %s)", p->scheme, shown,
                     schemes);
        st = TC_EINVAL;
        goto out;
    }
    if (u.fragment.first != NULL) {
        tc_tier_errf(err, errlen, "tier URI '%s' has a fragment ('#...'); %s:// takes none", shown,
                     p->scheme);
        st = TC_EINVAL;
        goto out;
    }

    /* Target: everything between "://" and '?', as written, decoded. */
    const char *t0 = strstr(uri, "://");
    t0 = t0 ? t0 + 3 : uri + strlen(p->scheme) + 1;
    const char *t1 = t0 + strcspn(t0, "?#");
    UriTextRangeA tr = {t0, t1};
    if ((p->target = range_dup(&tr, 1)) == NULL || (p->host = range_dup(&u.hostText, 1)) == NULL) {
        goto out;
    }
    if (u.portText.first != NULL && u.portText.afterLast > u.portText.first) {
        char *port = range_dup(&u.portText, 0);
        if (port == NULL) {
            goto out;
        }
        char *end;
        errno = 0;
        unsigned long v = strtoul(port, &end, 10);
        int bad = errno != 0 || *end != '\0' || v == 0 || v > 65535;
        if (bad) {
            tc_tier_errf(err, errlen, "bad port '%s' in '%s' (expected 1..65535)", port, shown);
        }
        free(port);
        if (bad) {
            st = TC_EINVAL;
            goto out;
        }
        p->port = (unsigned)v;
    }
    /* Path: the segments joined; a leading '/' when there is an authority or
     * the path is absolute ("lmdb:///abs" gives "/abs"). */
    {
        size_t n = 2;
        for (UriPathSegmentA *s = u.pathHead; s != NULL; s = s->next) {
            n += (size_t)(s->text.afterLast - s->text.first) + 1;
        }
        if ((p->path = malloc(n)) == NULL) {
            goto out;
        }
        size_t used = 0;
        for (UriPathSegmentA *s = u.pathHead; s != NULL; s = s->next) {
            if (used > 0 || u.absolutePath || u.hostText.first != NULL) {
                p->path[used++] = '/';
            }
            size_t len = (size_t)(s->text.afterLast - s->text.first);
            memcpy(p->path + used, s->text.first, len);
            used += len;
        }
        p->path[used] = '\0';
        uriUnescapeInPlaceExA(p->path, URI_FALSE, URI_BR_DONT_TOUCH);
    }
    if (u.userInfo.first != NULL) {
        char *ui = range_dup(&u.userInfo, 0);
        if (ui == NULL) {
            goto out;
        }
        char *colon = strchr(ui, ':');
        if (colon != NULL) {
            *colon = '\0';
            p->password = strdup(colon + 1);
            if (p->password == NULL) {
                free(ui);
                goto out;
            }
            uriUnescapeInPlaceExA(p->password, URI_FALSE, URI_BR_DONT_TOUCH);
        }
        uriUnescapeInPlaceExA(ui, URI_FALSE, URI_BR_DONT_TOUCH);
        if (ui[0] == '\0') {
            free(ui);
        } else {
            p->user = ui;
        }
    }

    if (u.query.first != NULL && u.query.afterLast > u.query.first) {
        int count = 0;
        if (uriDissectQueryMallocExA(&qlist, &count, u.query.first, u.query.afterLast, URI_FALSE,
                                     URI_BR_DONT_TOUCH) != URI_SUCCESS) {
            tc_tier_errf(err, errlen, "malformed query in tier URI '%s'", shown);
            st = TC_EINVAL;
            goto out;
        }
        if ((p->params = calloc((size_t)count, sizeof(*p->params))) == NULL) {
            goto out;
        }
        for (UriQueryListA *q = qlist; q != NULL; q = q->next) {
            if (q->key == NULL || q->key[0] == '\0') {
                tc_tier_errf(err, errlen, "empty parameter name in tier URI '%s'", shown);
                st = TC_EINVAL;
                goto out;
            }
            if (!name_in(q->key, ops->params) && !name_in(q->key, common_params)) {
                valid_list(ops, valid, sizeof(valid));
                tc_tier_errf(err, errlen, "unknown parameter '%s' for %s:// (valid: %s)", q->key,
                             p->scheme, valid);
                st = TC_EINVAL;
                goto out;
            }
            if (q->value == NULL) {
                tc_tier_errf(err, errlen, "parameter '%s' for %s:// has no value (write %s=VALUE)",
                             q->key, p->scheme, q->key);
                st = TC_EINVAL;
                goto out;
            }
            if (tc_tier_params_get(p, q->key) != NULL) {
                tc_tier_errf(err, errlen, "parameter '%s' given twice in '%s'", q->key, shown);
                st = TC_EINVAL;
                goto out;
            }
            struct tc_param *pp = &p->params[p->nparams];
            pp->name = strdup(q->key);
            pp->value = strdup(q->value);
            if (pp->name == NULL || pp->value == NULL) {
                free(pp->name);
                free(pp->value);
                goto out;
            }
            p->nparams++;
        }
    }
    *opsp = ops;
    st = TC_OK;
out:
    if (st == TC_ENOMEM) {
        tc_tier_errf(err, errlen, "out of memory parsing tier URI");
    }
    if (qlist != NULL) {
        uriFreeQueryListA(qlist);
    }
    uriFreeUriMembersA(&u);
    if (st != TC_OK) {
        params_free(p);
        memset(p, 0, sizeof(*p));
    }
    return st;
}

enum tc_status tc_tier_open(const struct tc_tier_registry *reg, const char *uri,
                            struct tc_tier **out, char *err, size_t errlen)
{
    struct tc_tier_params p;
    const struct tc_tier_ops *ops = NULL;
    char *redacted = NULL;
    double ratio;
    uint64_t max_ttl;
    struct tc_tier *t = NULL;

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (uri == NULL || out == NULL) {
        tc_tier_errf(err, errlen, "no tier URI given");
        return TC_EINVAL;
    }
    if ((redacted = redact_dup(uri)) == NULL) {
        tc_tier_errf(err, errlen, "out of memory parsing tier URI");
        return TC_ENOMEM;
    }
    enum tc_status st = parse_uri(reg, uri, redacted, &p, &ops, err, errlen);
    if (st != TC_OK) {
        free(redacted);
        return st;
    }
    struct common_settings common = {1.0, 0, -1};
    struct tc_seal *seal = NULL;
    st = tc_tier_params_load(&p, common_params, &common, err, errlen);
    ratio = common.ttl_ratio;
    max_ttl = common.max_ttl_ms;
    if (st == TC_OK) {
        st = resolve_encrypt(reg, ops, common.encrypt, redacted, &seal, err, errlen);
    }
    if (st == TC_OK) {
        st = ops->open(&p, &t, err, errlen);
        if (st == TC_OK && t == NULL) {
            st = TC_EIO;
        }
    }
    if (st == TC_OK && seal != NULL && t->max_value < TC_SEAL_OVERHEAD) {
        tc_tier_errf(err, errlen,
                     "'%s': values of at most %zu bytes leave no room for encryption (%u bytes "
                     "a value); raise max_item or set encrypt=off",
                     redacted, t->max_value, TC_SEAL_OVERHEAD);
        ops->close(t);
        t = NULL;
        st = TC_EINVAL;
    }
    if (st == TC_OK) {
        char *scheme = strdup(ops->scheme);
        if (scheme == NULL || pthread_mutex_init(&t->_lock, NULL) != 0) {
            free(scheme);
            ops->close(t);
            t = NULL;
            st = TC_ENOMEM;
            tc_tier_errf(err, errlen, "out of memory opening '%s'", redacted);
        } else {
            t->ops = ops;
            t->uri = redacted;
            redacted = NULL;
            t->scheme = scheme;
            t->ttl_ratio = ratio;
            t->max_ttl_ms = max_ttl;
            t->seal = seal;
            t->_rekey = NULL;
            if (seal != NULL) {
                t->max_value -= TC_SEAL_OVERHEAD; /* what the backend stores stays in its bound */
            }
            if (t->max_key == 0 || t->max_key > TC_KEY_MAX) {
                t->max_key = TC_KEY_MAX;
            }
            t->_ctxs = NULL;
#define TC_X(name) atomic_init(&t->_retired.name, 0);
            TC_TIER_COUNTERS(TC_X)
#undef TC_X
        }
    }
    free(redacted);
    params_free(&p);
    if (st == TC_OK) {
        *out = t;
    }
    return st;
}

/* Every backend's settings struct is small: the scratch that
 * tc_tier_check() parses into only has to reach past the last row's field. */
static size_t settings_extent(const struct tc_tier_param *rows)
{
    size_t end = 0;
    for (const struct tc_tier_param *r = rows; r != NULL && r->name != NULL; r++) {
        if (r->offset + 16 > end) {
            end = r->offset + 16; /* 16: the widest field kind (pointer, double) and then some */
        }
    }
    return end;
}

enum tc_status tc_tier_check(const struct tc_tier_registry *reg, const char *uri, char *err,
                             size_t errlen)
{
    struct tc_tier_params p;
    const struct tc_tier_ops *ops = NULL;
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (uri == NULL) {
        tc_tier_errf(err, errlen, "no tier URI given");
        return TC_EINVAL;
    }
    char *redacted = redact_dup(uri);
    if (redacted == NULL) {
        tc_tier_errf(err, errlen, "out of memory parsing tier URI");
        return TC_ENOMEM;
    }
    enum tc_status st = parse_uri(reg, uri, redacted, &p, &ops, err, errlen);
    free(redacted);
    if (st != TC_OK) {
        return st;
    }
    struct common_settings common = {1.0, 0, -1};
    st = tc_tier_params_load(&p, common_params, &common, err, errlen);
    if (st == TC_OK && ops->params != NULL) {
        /* Parsed into scratch memory: the values are checked against their
         * rows exactly as open() would, and nothing is opened. */
        void *scratch = calloc(1, settings_extent(ops->params));
        if (scratch == NULL) {
            st = TC_ENOMEM;
            tc_tier_errf(err, errlen, "out of memory checking tier URI");
        } else {
            st = tc_tier_params_load(&p, ops->params, scratch, err, errlen);
            free(scratch);
        }
    }
    params_free(&p);
    return st;
}

/* ---- parameter helpers -------------------------------------------------- */

const char *tc_tier_params_scheme(const struct tc_tier_params *p)
{
    return p->scheme;
}

const char *tc_tier_params_target(const struct tc_tier_params *p)
{
    return p->target;
}

const char *tc_tier_params_host(const struct tc_tier_params *p)
{
    return p->host;
}

unsigned tc_tier_params_port(const struct tc_tier_params *p)
{
    return p->port;
}

const char *tc_tier_params_path(const struct tc_tier_params *p)
{
    return p->path;
}

const char *tc_tier_params_user(const struct tc_tier_params *p)
{
    return p->user;
}

const char *tc_tier_params_password(const struct tc_tier_params *p)
{
    return p->password;
}

const char *tc_tier_params_get(const struct tc_tier_params *p, const char *name)
{
    for (size_t i = 0; i < p->nparams; i++) {
        if (strcmp(p->params[i].name, name) == 0) {
            return p->params[i].value;
        }
    }
    return NULL;
}

enum tc_status tc_tier_params_size(const struct tc_tier_params *p, const char *name, uint64_t def,
                                   uint64_t min, uint64_t max, uint64_t *out, char *err,
                                   size_t errlen)
{
    const char *s = tc_tier_params_get(p, name);
    uint64_t v;
    if (s == NULL) {
        *out = def;
        return TC_OK;
    }
    if (tc_parse_size(s, &v) != TC_OK || v < min || v > max) {
        tc_tier_errf(err, errlen,
                     "bad value '%s' for %s in %s:// (expected a size from %llu to %llu bytes, "
                     "e.g. 64M or 4G)",
                     s, name, p->scheme, (unsigned long long)min, (unsigned long long)max);
        return TC_EINVAL;
    }
    *out = v;
    return TC_OK;
}

enum tc_status tc_tier_params_uint(const struct tc_tier_params *p, const char *name, int base,
                                   uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                                   char *err, size_t errlen)
{
    const char *s = tc_tier_params_get(p, name);
    if (s == NULL) {
        *out = def;
        return TC_OK;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (!isdigit((unsigned char)s[0]) || errno != 0 || *end != '\0' || v < min || v > max) {
        tc_tier_errf(err, errlen,
                     "bad value '%s' for %s in %s:// (expected an integer from %llu to %llu)", s,
                     name, p->scheme, (unsigned long long)min, (unsigned long long)max);
        return TC_EINVAL;
    }
    *out = v;
    return TC_OK;
}

enum tc_status tc_tier_params_duration(const struct tc_tier_params *p, const char *name,
                                       uint64_t bare_unit_ms, uint64_t def, uint64_t min,
                                       uint64_t max, uint64_t *out, char *err, size_t errlen)
{
    const char *s = tc_tier_params_get(p, name);
    uint64_t v;
    if (s == NULL) {
        *out = def;
        return TC_OK;
    }
    if (tc_parse_duration(s, bare_unit_ms, &v) != TC_OK || v < min || v > max) {
        tc_tier_errf(
            err, errlen,
            "bad value '%s' for %s in %s:// (expected a duration like %s, 500ms, 30s, 5m, 1h; "
            "a bare number is %s)",
            s, name, p->scheme, bare_unit_ms == 1 ? "250" : "60",
            bare_unit_ms == 1 ? "milliseconds" : "seconds");
        return TC_EINVAL;
    }
    *out = v;
    return TC_OK;
}

enum tc_status tc_tier_params_double(const struct tc_tier_params *p, const char *name, double def,
                                     double lo, int lo_open, double hi, double *out, char *err,
                                     size_t errlen)
{
    const char *s = tc_tier_params_get(p, name);
    if (s == NULL) {
        *out = def;
        return TC_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    int ok = s[0] != '\0' && *end == '\0' && errno == 0 && isfinite(v) && v <= hi &&
             (lo_open ? v > lo : v >= lo);
    if (!ok) {
        tc_tier_errf(err, errlen, "bad value '%s' for %s in %s:// (expected a number in %c%g, %g])",
                     s, name, p->scheme, lo_open ? '(' : '[', lo, hi);
        return TC_EINVAL;
    }
    *out = v;
    return TC_OK;
}

enum tc_status tc_tier_params_choice(const struct tc_tier_params *p, const char *name,
                                     const char *const *choices, int def, int *out, char *err,
                                     size_t errlen)
{
    const char *s = tc_tier_params_get(p, name);
    if (s == NULL) {
        *out = def;
        return TC_OK;
    }
    for (int i = 0; choices[i] != NULL; i++) {
        if (strcmp(choices[i], s) == 0) {
            *out = i;
            return TC_OK;
        }
    }
    char list[256];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; choices[i] != NULL && used < sizeof(list); i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", choices[i]);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
    tc_tier_errf(err, errlen, "bad value '%s' for %s in %s:// (valid: %s)", s, name, p->scheme,
                 list);
    return TC_EINVAL;
}

enum tc_status tc_tier_params_bool(const struct tc_tier_params *p, const char *name, int def,
                                   int *out, char *err, size_t errlen)
{
    static const char *const choices[] = {"false", "true", "no", "yes", "off",
                                          "on",    "0",    "1",  NULL};
    int i;
    enum tc_status st = tc_tier_params_choice(p, name, choices, def, &i, err, errlen);
    if (st == TC_OK) {
        *out = tc_tier_params_get(p, name) == NULL ? def : (i & 1);
    }
    return st;
}

/* ---- parameters as rows ------------------------------------------------------ */

/* A row's default, parsed as the row's kind would parse a value; 0 when the
 * row has none or it does not parse (a backend's bug, caught by the
 * registry test that loads every backend's defaults). */
static int row_default(const struct tc_tier_param *row, uint64_t *u, double *d, int *i)
{
    const char *def = row->def;
    char *end;
    if (def == NULL) {
        return 0;
    }
    switch (row->kind) {
    case TC_TIER_PARAM_SIZE:
        return tc_parse_size(def, u) == TC_OK;
    case TC_TIER_PARAM_MS:
        return tc_parse_duration(def, 1, u) == TC_OK;
    case TC_TIER_PARAM_SECS:
        return tc_parse_duration(def, 1000, u) == TC_OK;
    case TC_TIER_PARAM_UINT:
    case TC_TIER_PARAM_OCTAL:
        *u = strtoull(def, &end, row->kind == TC_TIER_PARAM_OCTAL ? 8 : 10);
        return *end == '\0';
    case TC_TIER_PARAM_DOUBLE:
        *d = strtod(def, &end);
        return *end == '\0';
    case TC_TIER_PARAM_BOOL:
        *i = strcmp(def, "on") == 0 || strcmp(def, "true") == 0 || strcmp(def, "yes") == 0 ||
             strcmp(def, "1") == 0;
        return 1;
    case TC_TIER_PARAM_CHOICE:
        for (int k = 0; row->choices != NULL && row->choices[k] != NULL; k++) {
            if (strcmp(row->choices[k], def) == 0) {
                *i = k;
                return 1;
            }
        }
        return 0;
    case TC_TIER_PARAM_TEXT:
        return 1;
    }
    return 0;
}

/* The bound of a row as an integer (rows keep doubles, exact up to 2^53). */
static uint64_t bound_u64(double v)
{
    if (!(v > 0)) {
        return 0;
    }
    return v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v;
}

enum tc_status tc_tier_params_load(const struct tc_tier_params *p, const struct tc_tier_param *rows,
                                   void *settings, char *err, size_t errlen)
{
    unsigned char *base = settings;
    for (size_t k = 0; rows != NULL && rows[k].name != NULL; k++) {
        const struct tc_tier_param *row = &rows[k];
        void *field = base + row->offset;
        uint64_t u = 0;
        double d = 0;
        int i = 0;
        int has_def = row_default(row, &u, &d, &i);
        if (row->def != NULL && !has_def) {
            /* A backend's row whose default does not parse: its bug, said
             * plainly, so the first open in any test finds it. */
            tc_tier_errf(err, errlen, "%s:// declares a default '%s' for %s that does not parse",
                         p->scheme, row->def, row->name);
            return TC_EINVAL;
        }
        if (tc_tier_params_get(p, row->name) == NULL && !has_def) {
            continue; /* no default: the backend's own value stays */
        }
        enum tc_status st = TC_OK;
        uint64_t lo = bound_u64(row->min), hi = bound_u64(row->max);
        switch (row->kind) {
        case TC_TIER_PARAM_SIZE:
            st = tc_tier_params_size(p, row->name, u, lo, hi, &u, err, errlen);
            break;
        case TC_TIER_PARAM_MS:
        case TC_TIER_PARAM_SECS:
            st = tc_tier_params_duration(p, row->name, row->kind == TC_TIER_PARAM_SECS ? 1000 : 1,
                                         u, lo, hi, &u, err, errlen);
            break;
        case TC_TIER_PARAM_UINT:
        case TC_TIER_PARAM_OCTAL:
            st = tc_tier_params_uint(p, row->name, row->kind == TC_TIER_PARAM_OCTAL ? 8 : 10, u, lo,
                                     hi, &u, err, errlen);
            break;
        case TC_TIER_PARAM_DOUBLE:
            st = tc_tier_params_double(p, row->name, d, row->min, row->min_open, row->max, &d, err,
                                       errlen);
            break;
        case TC_TIER_PARAM_BOOL:
            st = tc_tier_params_bool(p, row->name, i, &i, err, errlen);
            break;
        case TC_TIER_PARAM_CHOICE:
            st = tc_tier_params_choice(p, row->name, row->choices, i, &i, err, errlen);
            break;
        case TC_TIER_PARAM_TEXT: {
            const char *v = tc_tier_params_get(p, row->name);
            const char *text = v != NULL ? v : row->def;
            memcpy(field, &text, sizeof(text));
            continue;
        }
        }
        if (st != TC_OK) {
            return st;
        }
        switch (row->kind) {
        case TC_TIER_PARAM_DOUBLE:
            memcpy(field, &d, sizeof(d));
            break;
        case TC_TIER_PARAM_BOOL:
        case TC_TIER_PARAM_CHOICE:
            memcpy(field, &i, sizeof(i));
            break;
        default:
            memcpy(field, &u, sizeof(u));
            break;
        }
    }
    return TC_OK;
}
