/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/spec.h"
#include "bench/sim.h"
#include "bench/trace.h"
#include "tiers/parse.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tb_stack_defaults(struct tb_stack *s)
{
    memset(s, 0, sizeof(*s));
    s->connections = 4;
    s->pipeline = 1;
    s->batch = 1;
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Refuses any member of @p obj not in @p valid (NULL-terminated), by name. */
static int check_fields(json_t *obj, const char *where, const char *const *valid, char *err,
                        size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        int ok = 0;
        for (size_t i = 0; valid[i]; i++) {
            ok |= strcmp(k, valid[i]) == 0;
        }
        if (!ok) {
            char list[1024] = "";
            for (size_t i = 0; valid[i]; i++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "", valid[i]);
            }
            errf(err, errlen, "%s: unknown field '%s' (valid: %s)", where, k, list);
            return -1;
        }
    }
    return 0;
}

/* A size: a non-negative integer or a string "64M". */
static int get_size(json_t *v, uint64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        return tc_parse_size(json_string_value(v), out) == TC_OK ? 0 : -1;
    }
    return -1;
}

static int get_num(json_t *v, double lo, double hi, double *out)
{
    if (!json_is_number(v)) {
        return -1;
    }
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) {
        return -1;
    }
    *out = d;
    return 0;
}

static int get_int(json_t *v, long lo, long hi, int *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_str(json_t *v, char *out, size_t len)
{
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= len) {
        return -1;
    }
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int get_bool(json_t *v, int *out)
{
    if (!json_is_boolean(v)) {
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int dist_finish(struct tb_dist *d)
{
    if (d->kind == TB_DIST_UNIFORM && d->lo > d->hi) {
        return -1;
    }
    if (d->kind == TB_DIST_WEIGHTED) {
        double sum = 0;
        for (size_t i = 0; i < d->n; i++) {
            if (!(d->cum[i] > 0)) {
                return -1;
            }
            sum += d->cum[i];
            d->cum[i] = sum;
        }
        if (d->n == 0) {
            return -1;
        }
        for (size_t i = 0; i < d->n; i++) {
            d->cum[i] /= sum;
        }
        d->cum[d->n - 1] = 1.0;
    }
    return 0;
}

/* 100 | "1K" | {"uniform":[lo,hi]} | {"weighted":[[v,w],...]} */
static int get_dist(json_t *v, int is_size, struct tb_dist *d)
{
    memset(d, 0, sizeof(*d));
    uint64_t x;
    if (is_size ? get_size(v, &x) == 0 : (json_is_integer(v) && json_integer_value(v) >= 0)) {
        d->kind = TB_DIST_FIXED;
        d->lo = is_size ? x : (uint64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_object(v) || json_object_size(v) != 1) {
        return -1;
    }
    json_t *u = json_object_get(v, "uniform"), *w = json_object_get(v, "weighted");
    if (json_is_array(u) && json_array_size(u) == 2) {
        d->kind = TB_DIST_UNIFORM;
        if (get_size(json_array_get(u, 0), &d->lo) != 0 ||
            get_size(json_array_get(u, 1), &d->hi) != 0) {
            return -1;
        }
        return dist_finish(d);
    }
    if (json_is_array(w) && json_array_size(w) >= 1 && json_array_size(w) <= TB_DIST_MAX) {
        d->kind = TB_DIST_WEIGHTED;
        size_t i;
        json_t *e;
        json_array_foreach(w, i, e)
        {
            double wt;
            if (!json_is_array(e) || json_array_size(e) != 2 ||
                get_size(json_array_get(e, 0), &d->vals[i]) != 0 ||
                get_num(json_array_get(e, 1), 0, 1e12, &wt) != 0) {
                return -1;
            }
            d->cum[i] = wt;
        }
        d->n = json_array_size(w);
        return dist_finish(d);
    }
    return -1;
}

int tb_dist_parse(const char *s, int is_size, struct tb_dist *d)
{
    char buf[1024];
    uint64_t v;
    memset(d, 0, sizeof(*d));
    if (strlen(s) >= sizeof(buf) || *s == '\0') {
        return -1;
    }
    strcpy(buf, s);
    (void)is_size; /* tc_parse_size reads plain numbers too */
    if (strchr(buf, ':') != NULL) {
        d->kind = TB_DIST_WEIGHTED;
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            char *c = strchr(t, ':');
            if (c == NULL || d->n == TB_DIST_MAX) {
                return -1;
            }
            *c = '\0';
            char *end;
            errno = 0;
            double w = strtod(c + 1, &end);
            if (tc_parse_size(t, &v) != TC_OK || *end != '\0' || errno != 0) {
                return -1;
            }
            d->vals[d->n] = v;
            d->cum[d->n++] = w;
        }
        return dist_finish(d);
    }
    char *dash = strchr(buf, '-');
    if (dash != NULL) {
        *dash = '\0';
        d->kind = TB_DIST_UNIFORM;
        if (tc_parse_size(buf, &d->lo) != TC_OK || tc_parse_size(dash + 1, &d->hi) != TC_OK) {
            return -1;
        }
        return dist_finish(d);
    }
    d->kind = TB_DIST_FIXED;
    return tc_parse_size(buf, &d->lo) == TC_OK ? 0 : -1;
}

int tb_token_read(const char *path, char *out, size_t len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        errf(err, errlen, "token file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    size_t n = ok ? strcspn(line, "\r\n") : 0;
    line[n] = '\0';
    if (n == 0 || n >= len) {
        errf(err, errlen, "token file %s: the first line must hold the token (1..%zu bytes)", path,
             len - 1);
        return -1;
    }
    memcpy(out, line, n + 1);
    return 0;
}

uint64_t tb_shm_uri_size(const char *uri)
{
    if (strncmp(uri, "shm://", 6) != 0) {
        return 0;
    }
    uint64_t size = 64ull << 20; /* shm://'s default */
    const char *q = strchr(uri, '?');
    while (q != NULL) {
        q++;
        if (strncmp(q, "size=", 5) == 0) {
            char v[64];
            size_t n = strcspn(q + 5, "&#");
            if (n < sizeof(v)) {
                memcpy(v, q + 5, n);
                v[n] = '\0';
                if (tc_parse_size(v, &size) != TC_OK) {
                    return 0;
                }
            }
        }
        q = strchr(q, '&');
    }
    return size;
}

static const char *const stack_fields[] = {
    "name", "tiers", "url", "connections", "pipeline", "token", "token_file", "batch", NULL};

static int load_stack(json_t *o, const char *where, struct tb_stack *s, char *err, size_t errlen)
{
    tb_stack_defaults(s);
    if (!json_is_object(o)) {
        errf(err, errlen, "%s: expected an object", where);
        return -1;
    }
    if (check_fields(o, where, stack_fields, err, errlen) != 0) {
        return -1;
    }
    json_t *v;
    if ((v = json_object_get(o, "name")) == NULL || get_str(v, s->name, sizeof(s->name)) != 0) {
        errf(err, errlen, "%s: 'name' must be a string of 1..63 characters", where);
        return -1;
    }
    json_t *tiers = json_object_get(o, "tiers");
    json_t *url = json_object_get(o, "url");
    if ((tiers == NULL) == (url == NULL)) {
        errf(err, errlen, "%s: give either 'tiers' (URIs, in process) or 'url' (HTTP)", where);
        return -1;
    }
    if (tiers != NULL) {
        if (!json_is_array(tiers) || json_array_size(tiers) == 0 ||
            json_array_size(tiers) > TB_MAX_TIERS) {
            errf(err, errlen, "%s: 'tiers' must be a list of 1..%d tier URIs", where, TB_MAX_TIERS);
            return -1;
        }
        size_t i;
        json_t *t;
        json_array_foreach(tiers, i, t)
        {
            if (get_str(t, s->tiers[i], TB_URI_MAX) != 0) {
                errf(err, errlen, "%s: tiers[%zu] must be a URI string", where, i);
                return -1;
            }
        }
        s->ntiers = (int)json_array_size(tiers);
    } else if (get_str(url, s->url, sizeof(s->url)) != 0 || strncmp(s->url, "http://", 7) != 0) {
        errf(err, errlen, "%s: 'url' must be an http:// URL", where);
        return -1;
    }
    if ((v = json_object_get(o, "connections")) && get_int(v, 1, 1024, &s->connections) != 0) {
        errf(err, errlen, "%s: 'connections' must be an integer 1..1024", where);
        return -1;
    }
    if ((v = json_object_get(o, "pipeline")) && get_int(v, 1, 1024, &s->pipeline) != 0) {
        errf(err, errlen, "%s: 'pipeline' must be an integer 1..1024", where);
        return -1;
    }
    if ((v = json_object_get(o, "batch")) && get_int(v, 1, 64, &s->batch) != 0) {
        errf(err, errlen, "%s: 'batch' must be an integer 1..64", where);
        return -1;
    }
    if ((v = json_object_get(o, "token")) && get_str(v, s->token, sizeof(s->token)) != 0) {
        errf(err, errlen, "%s: 'token' must be a string", where);
        return -1;
    }
    if ((v = json_object_get(o, "token_file")) != NULL) {
        char path[1024];
        if (get_str(v, path, sizeof(path)) != 0) {
            errf(err, errlen, "%s: 'token_file' must be a path", where);
            return -1;
        }
        char e2[1200];
        if (tb_token_read(path, s->token, sizeof(s->token), e2, sizeof(e2)) != 0) {
            errf(err, errlen, "%s: %s", where, e2);
            return -1;
        }
    }
    if (s->url[0] == '\0' && s->token[0] != '\0') {
        errf(err, errlen, "%s: 'token' is for HTTP stacks ('url')", where);
        return -1;
    }
    return 0;
}

static const char *const wl_fields[] = {
    "name",       "keys",        "popularity", "zipf",        "hot_keys", "hot_ops", "key_size",
    "value_size", "ttl",         "mix",        "cache_aside", "prefill",  "warmup",  "seconds",
    "threads",    "processes",   "inflight",   "rate",        "seed",     "trace",   "trace_format",
    "csv",        "trace_limit", "sim",        NULL};
static const char *const mix_fields[] = {"get", "set", "delete", NULL};
static const char *const csv_fields[] = {"time", "key",    "key_size",  "size", "op",
                                         "ttl",  "header", "separator", NULL};
static const char *const sim_fields[] = {"policies", "sizes", "requests", NULL};

#define BAD(...)                                                                                   \
    do {                                                                                           \
        errf(err, errlen, __VA_ARGS__);                                                            \
        return -1;                                                                                 \
    } while (0)

static int load_workload(json_t *o, const char *where, struct tb_workload *w, char *err,
                         size_t errlen)
{
    tb_workload_defaults(w);
    if (!json_is_object(o)) {
        BAD("%s: expected an object", where);
    }
    if (check_fields(o, where, wl_fields, err, errlen) != 0) {
        return -1;
    }
    json_t *v;
    double d;
    if ((v = json_object_get(o, "name")) == NULL || get_str(v, w->name, sizeof(w->name)) != 0) {
        BAD("%s: 'name' must be a string of 1..63 characters", where);
    }
    if ((v = json_object_get(o, "keys")) &&
        (get_size(v, &w->keys) != 0 || w->keys == 0 || w->keys > (1ull << 40))) {
        BAD("%s: 'keys' must be a count 1..2^40", where);
    }
    if ((v = json_object_get(o, "zipf")) != NULL) {
        if (get_num(v, 0, 10, &w->zipf) != 0) {
            BAD("%s: 'zipf' must be an exponent 0..10", where);
        }
        w->pop = w->zipf > 0 ? TB_POP_ZIPF : TB_POP_UNIFORM;
    }
    if ((v = json_object_get(o, "popularity")) != NULL) {
        const char *p = json_string_value(v);
        if (p && strcmp(p, "uniform") == 0) {
            w->pop = TB_POP_UNIFORM;
        } else if (p && strcmp(p, "zipf") == 0) {
            w->pop = TB_POP_ZIPF;
            if (w->zipf == 0) {
                w->zipf = 0.99;
            }
        } else if (p && strcmp(p, "hotset") == 0) {
            w->pop = TB_POP_HOTSET;
        } else {
            BAD("%s: 'popularity' must be \"uniform\", \"zipf\" or \"hotset\"", where);
        }
    }
    if ((v = json_object_get(o, "hot_keys")) && get_num(v, 1e-9, 1, &w->hot_keys) != 0) {
        BAD("%s: 'hot_keys' must be a fraction (0, 1]", where);
    }
    if ((v = json_object_get(o, "hot_ops")) && get_num(v, 0, 1, &w->hot_ops) != 0) {
        BAD("%s: 'hot_ops' must be a fraction [0, 1]", where);
    }
    if ((v = json_object_get(o, "key_size")) &&
        (get_dist(v, 1, &w->key_size) != 0 || tb_dist_max(&w->key_size) > 250)) {
        BAD("%s: 'key_size' must be a size distribution of 0..250 bytes (100, "
            "{\"uniform\":[lo,hi]}, {\"weighted\":[[size,weight],...]})",
            where);
    }
    if ((v = json_object_get(o, "value_size")) &&
        (get_dist(v, 1, &w->value_size) != 0 || tb_dist_max(&w->value_size) > (256u << 20))) {
        BAD("%s: 'value_size' must be a size distribution up to 256M (100, \"4K\", "
            "{\"uniform\":[lo,hi]}, {\"weighted\":[[size,weight],...]})",
            where);
    }
    if ((v = json_object_get(o, "ttl")) &&
        (get_dist(v, 0, &w->ttl) != 0 || tb_dist_max(&w->ttl) > 100000000)) {
        BAD("%s: 'ttl' must be a distribution of seconds (3600, {\"uniform\":[lo,hi]}, "
            "{\"weighted\":[[s,weight],...]}); 0 = no expiry",
            where);
    }
    if ((v = json_object_get(o, "mix")) != NULL) {
        char w2[128];
        snprintf(w2, sizeof(w2), "%s.mix", where);
        if (!json_is_object(v)) {
            BAD("%s: expected an object {\"get\":..,\"set\":..,\"delete\":..}", w2);
        }
        if (check_fields(v, w2, mix_fields, err, errlen) != 0) {
            return -1;
        }
        double g = 0, s = 0, dl = 0;
        json_t *x;
        if (((x = json_object_get(v, "get")) && get_num(x, 0, 1e9, &g) != 0) ||
            ((x = json_object_get(v, "set")) && get_num(x, 0, 1e9, &s) != 0) ||
            ((x = json_object_get(v, "delete")) && get_num(x, 0, 1e9, &dl) != 0) ||
            !(g + s + dl > 0)) {
            BAD("%s: weights must be non-negative numbers, not all 0", w2);
        }
        w->get = g / (g + s + dl);
        w->set = s / (g + s + dl);
        w->del = dl / (g + s + dl);
    }
    if ((v = json_object_get(o, "cache_aside")) && get_bool(v, &w->cache_aside) != 0) {
        BAD("%s: 'cache_aside' must be true or false", where);
    }
    if ((v = json_object_get(o, "prefill")) && get_bool(v, &w->prefill) != 0) {
        BAD("%s: 'prefill' must be true or false", where);
    }
    if ((v = json_object_get(o, "warmup")) && get_num(v, 0, 3600, &w->warmup) != 0) {
        BAD("%s: 'warmup' must be seconds 0..3600", where);
    }
    if ((v = json_object_get(o, "seconds")) && get_num(v, 0.01, 86400, &w->seconds) != 0) {
        BAD("%s: 'seconds' must be 0.01..86400", where);
    }
    if ((v = json_object_get(o, "threads")) && get_int(v, 1, 64, &w->threads) != 0) {
        BAD("%s: 'threads' must be 1..64", where);
    }
    if ((v = json_object_get(o, "processes")) && get_int(v, 1, 64, &w->processes) != 0) {
        BAD("%s: 'processes' must be 1..64", where);
    }
    if ((v = json_object_get(o, "inflight")) && get_int(v, 1, 4096, &w->inflight) != 0) {
        BAD("%s: 'inflight' must be 1..4096", where);
    }
    if ((v = json_object_get(o, "rate")) && get_num(v, 0, 1e9, &w->rate) != 0) {
        BAD("%s: 'rate' must be requests/s 0..1e9 (0: closed loop)", where);
    }
    if ((v = json_object_get(o, "seed")) && (!json_is_integer(v) || json_integer_value(v) < 0)) {
        BAD("%s: 'seed' must be a non-negative integer", where);
    } else if (v != NULL) {
        w->seed = (uint64_t)json_integer_value(v);
    }
    if ((v = json_object_get(o, "trace")) && get_str(v, w->trace, sizeof(w->trace)) != 0) {
        BAD("%s: 'trace' must be a path", where);
    }
    if ((v = json_object_get(o, "trace_format")) != NULL) {
        w->trace_format =
            json_is_string(v) ? tb_trace_format_parse(json_string_value(v)) : TB_TRACE_NONE;
        if (w->trace_format == TB_TRACE_NONE) {
            BAD("%s: 'trace_format' must be \"oraclegeneral\" or \"csv\"", where);
        }
    }
    if ((w->trace[0] != '\0') != (w->trace_format != TB_TRACE_NONE)) {
        BAD("%s: 'trace' and 'trace_format' go together", where);
    }
    if ((v = json_object_get(o, "trace_limit")) && get_size(v, &w->trace_limit) != 0) {
        BAD("%s: 'trace_limit' must be a count", where);
    }
    if ((v = json_object_get(o, "csv")) != NULL) {
        char w2[128];
        snprintf(w2, sizeof(w2), "%s.csv", where);
        if (!json_is_object(v)) {
            BAD("%s: expected an object of 1-based column numbers", w2);
        }
        if (check_fields(v, w2, csv_fields, err, errlen) != 0) {
            return -1;
        }
        struct tb_csv_cols c = {.sep = ','};
        int *cols[] = {&c.time, &c.key, &c.key_size, &c.size, &c.op, &c.ttl};
        const char *names[] = {"time", "key", "key_size", "size", "op", "ttl"};
        for (size_t i = 0; i < 6; i++) {
            json_t *x = json_object_get(v, names[i]);
            if (x && get_int(x, 0, 64, cols[i]) != 0) {
                BAD("%s: '%s' must be a column number 1..64 (0: absent)", w2, names[i]);
            }
        }
        json_t *x;
        if ((x = json_object_get(v, "header")) && get_bool(x, &c.header) != 0) {
            BAD("%s: 'header' must be true or false", w2);
        }
        if ((x = json_object_get(v, "separator")) != NULL) {
            if (!json_is_string(x) || json_string_length(x) != 1) {
                BAD("%s: 'separator' must be one character", w2);
            }
            c.sep = json_string_value(x)[0];
        }
        if (c.key == 0) {
            BAD("%s: 'key' (the key's column) is required", w2);
        }
        w->csv = c;
    }
    if ((v = json_object_get(o, "sim")) != NULL) {
        char w2[128];
        snprintf(w2, sizeof(w2), "%s.sim", where);
        if (!json_is_object(v)) {
            BAD("%s: expected {\"policies\":[\"lru\",\"fifo\"],\"sizes\":[\"16M\",...]}", w2);
        }
        if (check_fields(v, w2, sim_fields, err, errlen) != 0) {
            return -1;
        }
        json_t *p = json_object_get(v, "policies"), *s = json_object_get(v, "sizes"), *x, *e;
        size_t i;
        w->sim_policies = TB_SIM_POLICY_LRU | TB_SIM_POLICY_FIFO;
        if (p != NULL) {
            w->sim_policies = 0;
            if (!json_is_array(p)) {
                BAD("%s: 'policies' must be a list of \"lru\", \"fifo\"", w2);
            }
            json_array_foreach(p, i, e)
            {
                const char *n = json_string_value(e);
                if (n && strcmp(n, "lru") == 0) {
                    w->sim_policies |= TB_SIM_POLICY_LRU;
                } else if (n && strcmp(n, "fifo") == 0) {
                    w->sim_policies |= TB_SIM_POLICY_FIFO;
                } else {
                    BAD("%s: unknown policy in 'policies' (valid: lru, fifo)", w2);
                }
            }
        }
        if (s != NULL) {
            if (!json_is_array(s) || json_array_size(s) > TB_SIM_SIZES_MAX) {
                BAD("%s: 'sizes' must be a list of at most %d sizes", w2, TB_SIM_SIZES_MAX);
            }
            json_array_foreach(s, i, e)
            {
                if (get_size(e, &w->sim_sizes[i]) != 0 || w->sim_sizes[i] == 0) {
                    BAD("%s: sizes[%zu] must be a size (\"64M\")", w2, i);
                }
            }
            w->nsim_sizes = json_array_size(s);
        }
        if ((x = json_object_get(v, "requests")) &&
            (get_size(x, &w->sim_requests) != 0 || w->sim_requests == 0 ||
             w->sim_requests > (1ull << 32))) {
            BAD("%s: 'requests' must be a count 1..2^32", w2);
        }
    }
    if (w->trace[0] == '\0' && w->pop == TB_POP_ZIPF && w->keys > (1ull << 32)) {
        BAD("%s: Zipf over more than 2^32 keys would take minutes to set up", where);
    }
    (void)d;
    return 0;
}

static const char *const run_fields[] = {"stacks", "workloads", "repeat", "output", "keep", NULL};

int tb_spec_load(const char *path, struct tb_run *run, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    char where[64];
    int rc = -1;
    memset(run, 0, sizeof(*run));
    run->repeat = 1;
    if (root == NULL) {
        errf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        return -1;
    }
    if (!json_is_object(root)) {
        errf(err, errlen, "%s: expected a JSON object", path);
        goto out;
    }
    if (check_fields(root, "run file", run_fields, err, errlen) != 0) {
        goto out;
    }
    json_t *st = json_object_get(root, "stacks"), *wl = json_object_get(root, "workloads"), *v, *e;
    size_t i;
    if (!json_is_array(st) || json_array_size(st) == 0 || json_array_size(st) > TB_MAX_STACKS) {
        errf(err, errlen, "run file: 'stacks' must be a list of 1..%d stacks", TB_MAX_STACKS);
        goto out;
    }
    if (!json_is_array(wl) || json_array_size(wl) == 0 || json_array_size(wl) > TB_MAX_WORKLOADS) {
        errf(err, errlen, "run file: 'workloads' must be a list of 1..%d workloads",
             TB_MAX_WORKLOADS);
        goto out;
    }
    json_array_foreach(st, i, e)
    {
        snprintf(where, sizeof(where), "stacks[%zu]", i);
        if (load_stack(e, where, &run->stacks[i], err, errlen) != 0) {
            goto out;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(run->stacks[j].name, run->stacks[i].name) == 0) {
                errf(err, errlen, "%s: name '%s' is already taken by stacks[%zu]", where,
                     run->stacks[i].name, j);
                goto out;
            }
        }
    }
    run->nstacks = json_array_size(st);
    json_array_foreach(wl, i, e)
    {
        snprintf(where, sizeof(where), "workloads[%zu]", i);
        if (load_workload(e, where, &run->workloads[i], err, errlen) != 0) {
            goto out;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(run->workloads[j].name, run->workloads[i].name) == 0) {
                errf(err, errlen, "%s: name '%s' is already taken by workloads[%zu]", where,
                     run->workloads[i].name, j);
                goto out;
            }
        }
    }
    run->nworkloads = json_array_size(wl);
    if ((v = json_object_get(root, "repeat")) && get_int(v, 1, 100, &run->repeat) != 0) {
        errf(err, errlen, "run file: 'repeat' must be 1..100");
        goto out;
    }
    if ((v = json_object_get(root, "output")) &&
        get_str(v, run->output, sizeof(run->output)) != 0) {
        errf(err, errlen, "run file: 'output' must be a directory path");
        goto out;
    }
    if ((v = json_object_get(root, "keep")) && get_bool(v, &run->keep) != 0) {
        errf(err, errlen, "run file: 'keep' must be true or false");
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}
