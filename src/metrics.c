/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The metrics registry (see metrics.h): the rows, the tables that name the
 * tiers' stats, and the two renderers.
 *
 *   rows[] ── getter ──▶ samples ──┬─▶ prom_sample(): HELP and TYPE once, a line per series
 *                                   └─▶ json_put(): at the row's path in /stats
 *   tier stats, by name ── stat maps ──▶ tier_metrics[] ──▶ the same two
 *                       (a name no map knows: a generic family, a HELP saying so)
 *
 * A getter emits one sample per series: its label values and its value (a
 * count, a real, a histogram snapshot, an enum's state, a string). Every
 * render first reads what is read once (render_create: each tier's stats
 * and health, /proc/self, the origin's counters), so that both renderers
 * see one snapshot of each.
 */
#include "src/metrics.h"
#include "src/api.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/routes.h"

#include <dirent.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef TC_VERSION
#define TC_VERSION "0.0.0"
#endif

enum mtype {
    M_COUNTER,
    M_GAUGE,
    M_HISTOGRAM,  /* a tc_hist in ns, exposed in seconds */
    M_SUMMARY,    /* _sum and _count only: what a mean is made of */
    M_ENUM,       /* a gauge per state, 1 for the current one; /stats: the state's name */
    M_INFO,       /* a gauge of 1 whose label carries a string; /stats: the string */
    M_STRING,     /* /stats only: a string */
    M_TIER_STATS, /* the place of the tiers' own stats (tier_metrics[], stat maps) */
};

enum munit { U_NONE, U_SECONDS, U_BYTES };

/* Label sets, in this order in every series; a row names those it carries. */
enum {
    L_TIER = 1,    /* tier="l1", scheme="shm": every per-tier series */
    L_SEGMENT = 2, /* segment="NAME": an shm segment, the same for every process attached */
    L_ROUTE = 4,   /* route="/cache/{key}" */
    L_METHOD = 8,  /* method="GET" */
    L_CODE = 16,   /* code="200" */
    L_OP = 32,     /* op="get": a tier operation */
    L_REASON = 64, /* reason="missing": why access control refused a request */
    L_KEY = 128,   /* key_id="2": an encryption key of the keyring */
};
#define MAX_LABELS 8

/* How a row shows in /stats. */
enum jform {
    J_VALUE,     /* the value (a histogram: not shown) */
    J_COUNT,     /* a histogram's count, added up over the series that land on one member */
    J_QUANTILES, /* a histogram as {"count", "p50_ns", "p99_ns"} */
};

struct render;
struct metric;
typedef void (*get_fn)(struct render *rc, const struct metric *m);

struct metric {
    const char *name; /* the family as exposed, _total included; NULL: /stats only */
    enum mtype type;
    enum munit unit;
    const char *help;
    unsigned labels;
    /* Where /stats puts it, NULL: not in /stats. A path of members split at
     * '.': "tiers[]" is the tier's element of the tiers array, "{label}" a
     * member named by the series' value of that label. */
    const char *json, *json2;
    enum jform jform;
    get_fn get;
    size_t arg;
    const char *elabel;        /* M_ENUM: the label naming the state; M_INFO: the label */
    const char *const *states; /* M_ENUM: the states by value, NULL-terminated */
};

struct sample {
    int tier; /* the tier's index for "tiers[]", -1 if none */
    const char *lv[MAX_LABELS];
    uint64_t u;     /* a count or gauge; M_ENUM: the state's index; M_SUMMARY: _sum */
    uint64_t count; /* M_SUMMARY: _count */
    double d;       /* when real */
    int real;
    const struct tc_hist_snap *h; /* M_HISTOGRAM */
    const char *s;                /* M_INFO, M_STRING */
};

/* ---- what a render reads once ------------------------------------------------------- */

struct stat_row {
    char name[64];
    uint64_t value;
    enum tc_stat_kind kind;
};

struct stat_map;

struct tier_view {
    struct tc_tier *t;
    const char *label, *scheme;
    char segment[128]; /* shm: the segment's name, "" otherwise */
    int dup_segment;   /* an earlier tier is the same segment: its series are not repeated */
    enum tc_tier_health health;
    const struct stat_map *map; /* the backend's table, NULL if it has none */
    struct stat_row rows[96];   /* what tc_tier_stats() reported */
    size_t n;
};

struct proc_view {
    double cpu_s;
    uint64_t rss, vsize, fds, max_fds;
    int mem_ok, fds_ok, max_ok;
};

struct render {
    struct tc_server *srv;
    size_t ntiers;
    struct tier_view tiers[TC_STACK_MAX_TIERS];
    struct proc_view proc;
    struct tc_origin_stats origin;
    /* /metrics */
    struct tc_buf *out;
    const struct metric *header; /* family whose HELP and TYPE are still to be written */
    enum tc_status st;
    /* /stats */
    json_t *root, *jtiers;
};

static void collect_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    struct tier_view *tv = arg;
    if (tv->n < sizeof(tv->rows) / sizeof(tv->rows[0])) {
        snprintf(tv->rows[tv->n].name, sizeof(tv->rows[tv->n].name), "%s", name);
        tv->rows[tv->n].value = v;
        tv->rows[tv->n].kind = kind;
        tv->n++;
    }
}

static const struct stat_row *tier_stat(const struct tier_view *tv, const char *name)
{
    for (size_t i = 0; i < tv->n; i++) {
        if (strcmp(tv->rows[i].name, name) == 0) {
            return &tv->rows[i];
        }
    }
    return NULL;
}

/* /proc/self: what the process_* metrics need. Missing files leave the
 * metric out rather than report 0. */
static void read_proc(struct proc_view *p)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        p->cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        unsigned long long size, resident;
        long page = sysconf(_SC_PAGESIZE);
        if (fscanf(f, "%llu %llu", &size, &resident) == 2 && page > 0) {
            p->vsize = size * (uint64_t)page;
            p->rss = resident * (uint64_t)page;
            p->mem_ok = 1;
        }
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        uint64_t n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            n += e->d_name[0] != '.';
        }
        closedir(d);
        p->fds = n > 0 ? n - 1 : 0; /* not the one opendir() holds */
        p->fds_ok = 1;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        p->max_fds = (uint64_t)rl.rlim_cur;
        p->max_ok = 1;
    }
}

/* "shm://NAME?..." -> "NAME". */
static void segment_of(const char *uri, char *out, size_t len)
{
    const char *p = strstr(uri, "://");
    p = p != NULL ? p + 3 : uri;
    size_t n = strcspn(p, "?#");
    snprintf(out, len, "%.*s", (int)n, p);
}

static const struct stat_map *map_of(const char *scheme);

static struct render *render_create(struct tc_server *srv)
{
    struct render *rc = calloc(1, sizeof(*rc));
    if (rc == NULL) {
        return NULL;
    }
    rc->srv = srv;
    rc->ntiers = tc_stack_ntiers(srv->stack);
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct tier_view *tv = &rc->tiers[i];
        tv->t = tc_stack_tier(srv->stack, i);
        tv->label = tc_api_tier_label((int)i);
        tv->scheme = tc_tier_scheme(tv->t);
        tv->health = tc_tier_health(tv->t, NULL, 0);
        tv->map = map_of(tv->scheme);
        if (strcmp(tv->scheme, "shm") == 0) {
            segment_of(tc_tier_uri(tv->t), tv->segment, sizeof(tv->segment));
            for (size_t k = 0; k < i; k++) {
                tv->dup_segment |= strcmp(rc->tiers[k].segment, tv->segment) == 0;
            }
        }
        tc_tier_stats(tv->t, collect_stat, tv);
    }
    read_proc(&rc->proc);
    if (srv->origin != NULL) {
        tc_origin_stats(srv->origin, &rc->origin);
    }
    return rc;
}

/* ---- rendering a sample ------------------------------------------------------------- */

static size_t label_names(const struct metric *m, const char **names)
{
    size_t n = 0;
    if (m->labels & L_TIER) {
        names[n++] = "tier";
        names[n++] = "scheme";
    }
    if (m->labels & L_SEGMENT) {
        names[n++] = "segment";
    }
    if (m->labels & L_ROUTE) {
        names[n++] = "route";
    }
    if (m->labels & L_METHOD) {
        names[n++] = "method";
    }
    if (m->labels & L_CODE) {
        names[n++] = "code";
    }
    if (m->labels & L_OP) {
        names[n++] = "op";
    }
    if (m->labels & L_REASON) {
        names[n++] = "reason";
    }
    if (m->labels & L_KEY) {
        names[n++] = "key_id";
    }
    return n;
}

static void out(struct render *rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out(struct render *rc, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0 && rc->st == TC_OK) {
        rc->st =
            tc_buf_append(rc->out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
}

/* Appends name="value" to lb (escaping \, " and newline, as the format asks). */
static size_t put_label(char *lb, size_t at, size_t cap, const char *name, const char *value)
{
    int n = snprintf(lb + at, cap - at, "%s%s=\"", at > 1 ? "," : "", name);
    at += n > 0 && (size_t)n < cap - at ? (size_t)n : 0;
    for (const char *v = value; *v != '\0' && at + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            lb[at++] = '\\';
            lb[at++] = *v;
        } else if (*v == '\n') {
            lb[at++] = '\\';
            lb[at++] = 'n';
        } else {
            lb[at++] = *v;
        }
    }
    if (at + 1 < cap) {
        lb[at++] = '"';
    }
    lb[at] = '\0';
    return at;
}

/* "{a="x",b="y"" (no closing brace: the caller may add one more label). */
static size_t labels_of(const struct metric *m, const struct sample *s, char *lb, size_t cap)
{
    const char *names[MAX_LABELS];
    size_t n = label_names(m, names);
    size_t at = 1;
    lb[0] = '{';
    lb[1] = '\0';
    for (size_t i = 0; i < n; i++) {
        at = put_label(lb, at, cap, names[i], s->lv[i] != NULL ? s->lv[i] : "");
    }
    return at;
}

static const char *type_word(enum mtype t)
{
    switch (t) {
    case M_COUNTER:
        return "counter";
    case M_HISTOGRAM:
        return "histogram";
    case M_SUMMARY:
        return "summary";
    default:
        return "gauge";
    }
}

static void prom_sample(struct render *rc, const struct metric *m, const struct sample *s)
{
    const char *name = m->name;
    if (rc->header == m) {
        out(rc, "# HELP %s %s\n# TYPE %s %s\n", name, m->help, name, type_word(m->type));
        rc->header = NULL;
    }
    char lb[768];
    size_t at = labels_of(m, s, lb, sizeof(lb));
    /* lb + close: the labels as they are; "{" alone means none. */
    const char *close = at > 1 ? "}" : "";
    const char *open = at > 1 ? lb : "";
    switch (m->type) {
    case M_COUNTER:
    case M_GAUGE:
        if (s->real) {
            out(rc, "%s%s%s %.15g\n", name, open, close, s->d);
        } else {
            out(rc, "%s%s%s %llu\n", name, open, close, (unsigned long long)s->u);
        }
        break;
    case M_ENUM:
        for (uint64_t k = 0; m->states[k] != NULL; k++) {
            char l2[1024];
            memcpy(l2, lb, at + 1);
            put_label(l2, at, sizeof(l2), m->elabel, m->states[k]);
            out(rc, "%s%s} %d\n", name, l2, k == s->u);
        }
        break;
    case M_INFO: {
        char l2[1024];
        memcpy(l2, lb, at + 1);
        put_label(l2, at, sizeof(l2), m->elabel, s->s);
        out(rc, "%s%s} 1\n", name, l2);
        break;
    }
    case M_SUMMARY:
        out(rc, "%s_sum%s%s %llu\n", name, open, close, (unsigned long long)s->u);
        out(rc, "%s_count%s%s %llu\n", name, open, close, (unsigned long long)s->count);
        break;
    case M_HISTOGRAM: {
        uint64_t cum = 0;
        for (int b = 0; b < TC_HIST_NB; b++) {
            cum += s->h->b[b];
            char le[32];
            if (b == TC_HIST_NB - 1) {
                snprintf(le, sizeof(le), "+Inf");
            } else {
                snprintf(le, sizeof(le), "%g", (double)tc_hist_le_ns[b] / 1e9);
            }
            char l2[1024];
            memcpy(l2, lb, at + 1);
            put_label(l2, at, sizeof(l2), "le", le);
            out(rc, "%s_bucket%s} %llu\n", name, l2, (unsigned long long)cum);
        }
        out(rc, "%s_sum%s%s %.9f\n", name, open, close, (double)s->h->sum_ns / 1e9);
        out(rc, "%s_count%s%s %llu\n", name, open, close, (unsigned long long)s->h->count);
        break;
    }
    default:
        break;
    }
}

static const char *label_value(const struct metric *m, const struct sample *s, const char *name)
{
    const char *names[MAX_LABELS];
    size_t n = label_names(m, names);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0) {
            return s->lv[i];
        }
    }
    return NULL;
}

static json_t *json_value(const struct metric *m, enum jform form, const struct sample *s)
{
    if (form == J_COUNT) {
        return json_integer((json_int_t)s->h->count);
    }
    if (form == J_QUANTILES) {
        json_t *q = json_object();
        json_object_set_new(q, "count", json_integer((json_int_t)s->h->count));
        json_object_set_new(q, "p50_ns",
                            json_integer((json_int_t)tc_hist_snap_quantile(s->h, 0.50)));
        json_object_set_new(q, "p99_ns",
                            json_integer((json_int_t)tc_hist_snap_quantile(s->h, 0.99)));
        return q;
    }
    switch (m->type) {
    case M_ENUM:
        return json_string(m->states[s->u]);
    case M_INFO:
    case M_STRING:
        return json_string(s->s);
    case M_HISTOGRAM:
        return NULL;
    default:
        return s->real ? json_real(s->d) : json_integer((json_int_t)s->u);
    }
}

static void make_tiers(struct render *rc)
{
    rc->jtiers = json_array();
    for (size_t i = 0; i < rc->ntiers; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "tier", json_string(rc->tiers[i].label));
        json_array_append_new(rc->jtiers, o);
    }
    json_object_set_new(rc->root, "tiers", rc->jtiers);
}

/*
 * Places the sample at @p path (see struct metric); with @p s NULL, only
 * makes the objects on the way, and a J_COUNT member without placeholders
 * starts at 0 (so that "requests.total" shows before any request).
 */
static void json_put(struct render *rc, const struct metric *m, enum jform form, const char *path,
                     const struct sample *s)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *o = rc->root;
    char *save = NULL;
    char *seg = strtok_r(buf, ".", &save);
    while (seg != NULL) {
        char *next = strtok_r(NULL, ".", &save);
        const char *key = seg;
        if (strcmp(seg, "tiers[]") == 0) {
            if (s == NULL) {
                return;
            }
            if (rc->jtiers == NULL) {
                make_tiers(rc);
            }
            o = json_array_get(rc->jtiers, (size_t)s->tier);
            if (o == NULL) {
                return;
            }
            seg = next;
            continue;
        }
        if (seg[0] == '{') {
            if (s == NULL) {
                return;
            }
            seg[strlen(seg) - 1] = '\0';
            key = label_value(m, s, seg + 1);
            if (key == NULL) {
                return;
            }
        }
        if (next == NULL) {
            json_t *old = json_object_get(o, key);
            if (s == NULL) {
                if (form == J_COUNT && old == NULL) {
                    json_object_set_new(o, key, json_integer(0));
                }
                return;
            }
            json_t *v = json_value(m, form, s);
            if (v == NULL) {
                return;
            }
            if (form == J_COUNT && json_is_integer(old)) {
                json_integer_set(old, json_integer_value(old) + json_integer_value(v));
                json_decref(v);
                return;
            }
            json_object_set_new(o, key, v);
            return;
        }
        json_t *c = json_object_get(o, key);
        if (!json_is_object(c)) {
            c = json_object();
            json_object_set_new(o, key, c);
        }
        o = c;
        seg = next;
    }
}

static void emit(struct render *rc, const struct metric *m, const struct sample *s)
{
    if (rc->out != NULL) {
        prom_sample(rc, m, s);
        return;
    }
    if (m->json != NULL) {
        json_put(rc, m, m->jform, m->json, s);
    }
    if (m->json2 != NULL) {
        json_put(rc, m, m->jform, m->json2, s);
    }
}

static void emit_u(struct render *rc, const struct metric *m, uint64_t v)
{
    struct sample s = {.tier = -1, .u = v};
    emit(rc, m, &s);
}

static void emit_d(struct render *rc, const struct metric *m, double v)
{
    struct sample s = {.tier = -1, .d = v, .real = 1};
    emit(rc, m, &s);
}

/* A per-tier sample: labels tier and scheme first. */
static struct sample tier_sample(const struct render *rc, size_t i)
{
    struct sample s = {.tier = (int)i};
    s.lv[0] = rc->tiers[i].label;
    s.lv[1] = rc->tiers[i].scheme;
    return s;
}

/* ---- getters: the server -------------------------------------------------------------- */

static void get_build_info(struct render *rc, const struct metric *m)
{
    struct sample s = {.tier = -1, .s = TC_VERSION};
    emit(rc, m, &s);
}

static void get_uptime(struct render *rc, const struct metric *m)
{
    emit_d(rc, m, (double)(tc_clock_ms() - rc->srv->start_ms) / 1e3);
}

static void get_workers(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, rc->srv->nworkers);
}

static void get_log_dropped(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, tc_log_dropped_total());
}

enum { P_CPU, P_RSS, P_VSIZE, P_FDS, P_MAX_FDS, P_START };

static void get_process(struct render *rc, const struct metric *m)
{
    const struct proc_view *p = &rc->proc;
    switch (m->arg) {
    case P_CPU:
        emit_d(rc, m, p->cpu_s);
        break;
    case P_RSS:
        if (p->mem_ok) {
            emit_u(rc, m, p->rss);
        }
        break;
    case P_VSIZE:
        if (p->mem_ok) {
            emit_u(rc, m, p->vsize);
        }
        break;
    case P_FDS:
        if (p->fds_ok) {
            emit_u(rc, m, p->fds);
        }
        break;
    case P_MAX_FDS:
        if (p->max_ok) {
            emit_u(rc, m, p->max_fds);
        }
        break;
    case P_START:
        emit_d(rc, m, (double)rc->srv->start_ms / 1e3);
        break;
    }
}

static void get_connections(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, atomic_load_explicit(&rc->srv->conn_count, memory_order_relaxed));
}

/* A field of struct tc_http_counters (offset m->arg), over every worker's
 * servers: the plain listener's and the TLS listener's (listen-tls). */
static void get_http(struct render *rc, const struct metric *m)
{
    uint64_t sum = 0;
    for (size_t k = 0; k < rc->srv->nworkers; k++) {
        const struct tc_worker *w = &rc->srv->workers[k];
        const struct tc_http_server *servers[2] = {w->http, w->https};
        for (size_t i = 0; i < 2; i++) {
            if (servers[i] != NULL) {
                const _Atomic uint64_t *p =
                    (const _Atomic uint64_t *)((const char *)tc_http_server_counters(servers[i]) +
                                               m->arg);
                sum += atomic_load_explicit(p, memory_order_relaxed);
            }
        }
    }
    emit_u(rc, m, sum);
}

static void get_body_pending(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, atomic_load_explicit(&rc->srv->body_pending, memory_order_relaxed));
}

/* Answers by route, method and status: only the combinations that occurred. */
static void get_requests(struct render *rc, const struct metric *m)
{
    for (unsigned ro = 0; ro < TC_ROUTE_SLOTS; ro++) {
        for (unsigned me = 0; me < TC_METHOD_SLOTS; me++) {
            for (unsigned co = 0; co < TC_CODE_SLOTS; co++) {
                struct tc_hist_snap snap;
                memset(&snap, 0, sizeof(snap));
                for (size_t k = 0; k < rc->srv->nworkers; k++) {
                    tc_hist_snap_add(&snap, &rc->srv->workers[k].requests[ro][me][co]);
                }
                if (snap.count == 0) {
                    continue;
                }
                struct sample s = {.tier = -1, .h = &snap};
                s.lv[0] = tc_routes_label(ro);
                s.lv[1] = tc_worker_method_name(me);
                s.lv[2] = tc_worker_code_name((enum tc_worker_code)co);
                emit(rc, m, &s);
            }
        }
    }
}

/* X-Cache results: m->arg is TC_READ_HIT or TC_READ_STALE (per tier), or TC_READ_MISS. */
static void get_reads(struct render *rc, const struct metric *m)
{
    if (m->arg == TC_READ_MISS) {
        uint64_t sum = 0;
        for (size_t k = 0; k < rc->srv->nworkers; k++) {
            sum += atomic_load_explicit(&rc->srv->workers[k].read_misses, memory_order_relaxed);
        }
        emit_u(rc, m, sum);
        return;
    }
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct sample s = tier_sample(rc, i);
        for (size_t k = 0; k < rc->srv->nworkers; k++) {
            const struct tc_worker *w = &rc->srv->workers[k];
            s.u += atomic_load_explicit(
                m->arg == TC_READ_HIT ? &w->read_hits[i] : &w->read_stale[i], memory_order_relaxed);
        }
        emit(rc, m, &s);
    }
}

static void get_invalidations(struct render *rc, const struct metric *m)
{
    uint64_t lost;
    uint64_t applied = tc_stack_invalidations(rc->srv->stack, &lost);
    emit_u(rc, m, m->arg ? lost : applied);
}

static const char *const scope_states[] = {"worker-pool", "host", "cluster", NULL};

static void get_lock_scope(struct render *rc, const struct metric *m)
{
    const char *scope = tc_keylock_scope(rc->srv->keylock);
    for (uint64_t k = 0; scope_states[k] != NULL; k++) {
        if (strcmp(scope_states[k], scope) == 0) {
            emit_u(rc, m, k);
        }
    }
}

static void get_lock_active(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, tc_keylock_entries(rc->srv->keylock));
}

static void get_keylock(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, tc_keylock_stat(rc->srv->keylock, (enum tc_keylock_counter)m->arg));
}

static void get_origin_url(struct render *rc, const struct metric *m)
{
    if (rc->srv->origin != NULL) {
        struct sample s = {.tier = -1, .s = tc_origin_url(rc->srv->origin)};
        emit(rc, m, &s);
    }
}

/* A field of struct tc_origin_stats (offset m->arg); nothing without --origin. */
static void get_origin(struct render *rc, const struct metric *m)
{
    if (rc->srv->origin != NULL) {
        emit_u(rc, m, *(const uint64_t *)((const char *)&rc->origin + m->arg));
    }
}

/* Access control (issue 14): refusals by reason, over every worker. */
static void get_auth_failures(struct render *rc, const struct metric *m)
{
    for (unsigned f = 0; f < TC_AUTH_FAIL_N; f++) {
        struct sample s = {.tier = -1};
        for (size_t k = 0; k < rc->srv->nworkers; k++) {
            s.u +=
                atomic_load_explicit(&rc->srv->workers[k].auth_failures[f], memory_order_relaxed);
        }
        s.lv[0] = tc_auth_failure_name((enum tc_auth_failure)f);
        emit(rc, m, &s);
    }
}

static void get_auth(struct render *rc, const struct metric *m)
{
    emit_u(rc, m, m->arg ? tc_auth_reload_failures(rc->srv->auth) : tc_auth_ntokens(rc->srv->auth));
}

/* ---- getters: per tier ---------------------------------------------------------------- */

static void get_tier_uri(struct render *rc, const struct metric *m)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct sample s = tier_sample(rc, i);
        s.s = tc_tier_uri(rc->tiers[i].t);
        emit(rc, m, &s);
    }
}

static void get_tier_ttl_ratio(struct render *rc, const struct metric *m)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct sample s = tier_sample(rc, i);
        s.d = tc_tier_ttl_ratio(rc->tiers[i].t);
        s.real = 1;
        emit(rc, m, &s);
    }
}

static const char *const health_states[] = {"ok", "degraded", "down", NULL};

static void get_tier_health(struct render *rc, const struct metric *m)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct sample s = tier_sample(rc, i);
        enum tc_tier_health h = rc->tiers[i].health;
        s.u = h == TC_HEALTH_OK ? 0 : h == TC_HEALTH_DEGRADED ? 1 : 2;
        emit(rc, m, &s);
    }
}

static void get_tier_up(struct render *rc, const struct metric *m)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct sample s = tier_sample(rc, i);
        s.u = rc->tiers[i].health != TC_HEALTH_DOWN;
        emit(rc, m, &s);
    }
}

static void get_sweeps(struct render *rc, const struct metric *m)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct sample s = tier_sample(rc, i);
        s.u = atomic_load(m->arg ? &rc->srv->swept[i] : &rc->srv->sweeps[i]);
        emit(rc, m, &s);
    }
}

static void get_tier_latency(struct render *rc, const struct metric *m)
{
    static const char *const ops[] = {"get", "set", "del"};
    for (size_t i = 0; i < rc->ntiers; i++) {
        for (int kind = 0; kind < 3; kind++) {
            struct tc_hist_snap snap;
            memset(&snap, 0, sizeof(snap));
            for (size_t k = 0; k < rc->srv->nworkers; k++) {
                const struct tc_worker *w = &rc->srv->workers[k];
                if (w->sc != NULL) {
                    tc_hist_snap_add(&snap, tc_stack_ctx_hist(w->sc, i, kind));
                }
            }
            struct sample s = tier_sample(rc, i);
            s.lv[2] = ops[kind];
            s.h = &snap;
            emit(rc, m, &s);
        }
    }
}

/* Encryption at rest: records per key id as the last rekey pass counted
 * them, for the tiers that seal and can be walked (tc_tier_key_census()). */
static void get_tier_key_census(struct render *rc, const struct metric *m)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        struct tc_tier_key_count rows[TC_TIER_CENSUS_KEYS];
        size_t n = tc_tier_key_census(rc->tiers[i].t, rows, TC_TIER_CENSUS_KEYS, NULL);
        for (size_t k = 0; k < n && k < TC_TIER_CENSUS_KEYS; k++) {
            char id[16];
            snprintf(id, sizeof(id), "%u", (unsigned)rows[k].key_id);
            struct sample s = tier_sample(rc, i);
            s.lv[2] = id; /* rendered during emit() */
            s.u = rows[k].records;
            emit(rc, m, &s);
        }
    }
}

/* ---- the rows --------------------------------------------------------------------------- */

#define COUNTER(name, help, json, get, arg)                                                        \
    {                                                                                              \
        name, M_COUNTER, U_NONE, help, 0, json, NULL, J_VALUE, get, arg, NULL, NULL                \
    }
#define TIER_COUNTER(name, help, json, get, arg)                                                   \
    {                                                                                              \
        name, M_COUNTER, U_NONE, help, L_TIER, json, NULL, J_VALUE, get, arg, NULL, NULL           \
    }

static const struct metric rows[] = {
    {"tiercache_build_info", M_INFO, U_NONE,
     "Always 1: the label version is the tiercache version serving.", 0, "version", NULL, J_VALUE,
     get_build_info, 0, "version", NULL},
    {"tiercache_uptime_seconds", M_GAUGE, U_SECONDS, "Seconds since the server started.", 0,
     "uptime_s", NULL, J_VALUE, get_uptime, 0, NULL, NULL},
    {"tiercache_workers", M_GAUGE, U_NONE, "Worker threads serving HTTP.", 0, "workers", NULL,
     J_VALUE, get_workers, 0, NULL, NULL},
    COUNTER("tiercache_log_lines_dropped_total",
            "Warn and notice log lines dropped by the limit of 10 a second per call site.",
            "log_lines_dropped", get_log_dropped, 0),

    /* The standard process metrics, as the Prometheus client libraries name them. */
    {"process_cpu_seconds_total", M_COUNTER, U_SECONDS,
     "User and system CPU time used by the process, in seconds.", 0, "process.cpu_seconds", NULL,
     J_VALUE, get_process, P_CPU, NULL, NULL},
    {"process_resident_memory_bytes", M_GAUGE, U_BYTES, "Resident memory of the process, in bytes.",
     0, "process.resident_memory_bytes", NULL, J_VALUE, get_process, P_RSS, NULL, NULL},
    {"process_virtual_memory_bytes", M_GAUGE, U_BYTES,
     "Virtual memory size of the process, in bytes.", 0, "process.virtual_memory_bytes", NULL,
     J_VALUE, get_process, P_VSIZE, NULL, NULL},
    {"process_open_fds", M_GAUGE, U_NONE, "File descriptors the process has open.", 0,
     "process.open_fds", NULL, J_VALUE, get_process, P_FDS, NULL, NULL},
    {"process_max_fds", M_GAUGE, U_NONE,
     "Most file descriptors the process may open (its RLIMIT_NOFILE).", 0, "process.max_fds", NULL,
     J_VALUE, get_process, P_MAX_FDS, NULL, NULL},
    {"process_start_time_seconds", M_GAUGE, U_SECONDS,
     "When the process started, in seconds since the Unix epoch.", 0, "process.start_time_seconds",
     NULL, J_VALUE, get_process, P_START, NULL, NULL},

    {"tiercache_connections_active", M_GAUGE, U_NONE, "Client connections open now.", 0,
     "connections.active", NULL, J_VALUE, get_connections, 0, NULL, NULL},
    COUNTER("tiercache_connections_accepted_total", "Client connections accepted.",
            "connections.accepted", get_http, offsetof(struct tc_http_counters, accepted)),
    COUNTER("tiercache_connections_refused_total",
            "Client connections refused (503, then closed) because max-connections were open.",
            "connections.refused", get_http, offsetof(struct tc_http_counters, refused)),
#define TC_HTTP_X(field, help)                                                                     \
    COUNTER("tiercache_http_" #field "_total", "HTTP layer: " help ".", "http." #field, get_http,  \
            offsetof(struct tc_http_counters, field)),
    TC_HTTP_REFUSALS(TC_HTTP_X)
#undef TC_HTTP_X
/* TLS (listen-tls): handshakes by outcome, and the connections open. */
#define TC_HTTP_X(field, json, help)                                                               \
    COUNTER("tiercache_" #field "_total", help ".", "tls." json, get_http,                         \
            offsetof(struct tc_http_counters, field)),
        TC_HTTP_TLS_COUNTERS(TC_HTTP_X)
#undef TC_HTTP_X
            {"tiercache_tls_connections_active", M_GAUGE, U_NONE,
             "TLS client connections open now (handshaking included).", 0, "tls.connections_active",
             NULL, J_VALUE, get_http, offsetof(struct tc_http_counters, tls_active), NULL, NULL},
    {"tiercache_http_pending_body_bytes", M_GAUGE, U_BYTES,
     "Bytes held by request bodies still being received (bounded by max-pending-body).", 0,
     "http.pending_body_bytes", NULL, J_VALUE, get_body_pending, 0, NULL, NULL},
    {"tiercache_http_request_duration_seconds", M_HISTOGRAM, U_SECONDS,
     "Time from a complete request to the API's answer, in seconds, by route, method and "
     "status (the HTTP layer's own refusals are in tiercache_http_*_total instead).",
     L_ROUTE | L_METHOD | L_CODE, "requests.total", "requests.by_status.{code}", J_COUNT,
     get_requests, 0, NULL, NULL},
    TIER_COUNTER("tiercache_http_cache_hits_total",
                 "Cache reads (GET or HEAD /cache/{key}) answered X-Cache: HIT from the tier.",
                 "cache.hits.{tier}", get_reads, TC_READ_HIT),
    TIER_COUNTER("tiercache_http_cache_stale_total",
                 "Cache reads answered X-Cache: STALE (past the TTL, within grace) from the tier.",
                 "cache.stale.{tier}", get_reads, TC_READ_STALE),
    COUNTER("tiercache_http_cache_misses_total",
            "Cache reads answered X-Cache: MISS: no fresh value in any tier (404, a lease, or "
            "the origin's answer).",
            "cache.misses", get_reads, TC_READ_MISS),

    COUNTER("tiercache_invalidations_applied_total",
            "Keys removed from the faster tiers because another host wrote or deleted them.",
            "invalidations.applied", get_invalidations, 0),
    COUNTER("tiercache_invalidations_subscription_lost_total",
            "Times the invalidation subscription was lost (messages may have been missed).",
            "invalidations.subscription_lost", get_invalidations, 1),

    {"tiercache_dogpile_scope", M_ENUM, U_NONE,
     "Reach of the per-key locks, 1 for the scope in use: worker-pool (this process), host "
     "(every process on the host), cluster (every host sharing the lock tier).",
     0, "dogpile.scope", NULL, J_VALUE, get_lock_scope, 0, "scope", scope_states},
    {"tiercache_dogpile_active", M_GAUGE, U_NONE,
     "Keys and lock names with waiters or a holder in this process.", 0, "dogpile.active", NULL,
     J_VALUE, get_lock_active, 0, NULL, NULL},
#define TC_X(name, help)                                                                           \
    COUNTER("tiercache_dogpile_" #name "_total", "Dogpile protection: " help ".",                  \
            "dogpile." #name, get_keylock, TC_KEYLOCK_##name),
    TC_KEYLOCK_STATS(TC_X)
#undef TC_X

        {NULL, M_STRING, U_NONE, "The origin's URL.", 0, "origin.url", NULL, J_VALUE,
         get_origin_url, 0, NULL, NULL},
#define TC_ORIGIN_X(name, help)                                                                    \
    COUNTER("tiercache_origin_" #name "_total", "Origin: " help ".", "origin." #name, get_origin,  \
            offsetof(struct tc_origin_stats, name)),
    TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
        {"tiercache_origin_fetches_in_flight", M_GAUGE, U_NONE,
         "Origin fetches started and not yet complete.", 0, "origin.inflight", NULL, J_VALUE,
         get_origin, offsetof(struct tc_origin_stats, inflight), NULL, NULL},

    /* Access control (issue 14, docs/security.md). */
    {"tiercache_auth_failures_total", M_COUNTER, U_NONE,
     "Requests refused by access control, by reason: missing (no token, 401), invalid (unknown "
     "token, 401), scope (token without the route's scope, 403), host (Host not in "
     "allowed-hosts, 421), origin (state-changing request from an Origin not in "
     "allowed-origins, 403).",
     L_REASON, "auth.failures.{reason}", NULL, J_VALUE, get_auth_failures, 0, NULL, NULL},
    {"tiercache_auth_tokens", M_GAUGE, U_NONE, "Tokens loaded from auth-tokens-file.", 0,
     "auth.tokens", NULL, J_VALUE, get_auth, 0, NULL, NULL},
    COUNTER("tiercache_auth_reload_failures_total",
            "Reloads of auth-tokens-file (SIGHUP) refused; the tokens loaded before stayed in use.",
            "auth.reload_failures", get_auth, 1),

    {NULL, M_STRING, U_NONE, "The tier's URI, secrets redacted.", L_TIER, "tiers[].uri", NULL,
     J_VALUE, get_tier_uri, 0, NULL, NULL},
    {"tiercache_tier_ttl_ratio", M_GAUGE, U_NONE,
     "The tier's ttl_ratio: the share of a value's remaining time the tier keeps it.", L_TIER,
     "tiers[].ttl_ratio", NULL, J_VALUE, get_tier_ttl_ratio, 0, NULL, NULL},
    {"tiercache_tier_health", M_ENUM, U_NONE,
     "Health of the tier, 1 for its state: ok, degraded (serving with a fault) or down (skipped "
     "by the stack).",
     L_TIER, "tiers[].health", NULL, J_VALUE, get_tier_health, 0, "state", health_states},
    {"tiercache_tier_up", M_GAUGE, U_NONE,
     "1 while the tier serves (health ok or degraded), 0 while it is down.", L_TIER, NULL, NULL,
     J_VALUE, get_tier_up, 0, NULL, NULL},
    {NULL, M_TIER_STATS, U_NONE, NULL, 0, NULL, NULL, J_VALUE, NULL, 0, NULL, NULL},
    TIER_COUNTER("tiercache_tier_sweeps_total",
                 "Sweeper passes over the tier by this process (each bounded by sweep-budget).",
                 "tiers[].sweeps", get_sweeps, 0),
    TIER_COUNTER("tiercache_tier_swept_items_total",
                 "Entries the sweeper of this process removed from the tier.", "tiers[].swept",
                 get_sweeps, 1),
    {"tiercache_tier_records_by_key", M_GAUGE, U_NONE,
     "Records stored under each encryption key id as the last complete rekey pass counted them "
     "(key_id 0: not sealed); a key at 0 in every tier may leave the keyring.",
     L_TIER | L_KEY, "tiers[].records_by_key.{key_id}", NULL, J_VALUE, get_tier_key_census, 0, NULL,
     NULL},
    {"tiercache_tier_op_duration_seconds", M_HISTOGRAM, U_SECONDS,
     "Time of tier operations as the stack sees them, in seconds, by op (get, set, del).",
     L_TIER | L_OP, "tiers[].latency.{op}", NULL, J_QUANTILES, get_tier_latency, 0, NULL, NULL},
};

/* ---- the tiers' own stats ------------------------------------------------------------- */

/*
 * The families of the stats tiers report by name. Shared ones first (the
 * tier layer's counters of this process; what several backends report
 * alike), then each backend's.
 */
enum tier_metric {
    TM_GETS,
    TM_HITS,
    TM_MISSES,
    TM_SETS,
    TM_DELETES,
    TM_CLEARS,
    TM_ERRORS,
    TM_CORRUPT,
    TM_TOO_BIG,
    TM_LOCKS_TAKEN,
    TM_LOCKS_BUSY,
    TM_LOCKS_RELEASED,
    TM_LOCK_RELEASE_REFUSED,
    TM_LOCK_ERRORS,
    TM_REKEYED,
    TM_REKEY_PASSES,
    /* Issue 16: lock renewal, counters and limits. */
    TM_LOCKS_RENEWED,
    TM_LOCK_RENEW_REFUSED,
    TM_COUNT_ADDS,
    TM_LIMIT_ALLOWED,
    TM_LIMIT_DENIED,
    TM_COUNT_ERRORS,
    TM_SHM_CELLS_LIVE,
    TM_ITEMS,
    TM_USED_BYTES,
    TM_CAPACITY_BYTES,
    TM_EVICTIONS,
    TM_EXPIRED,
    TM_SHM_ITEMS,
    TM_SHM_LOG_USED_BYTES,
    TM_SHM_SIZE_BYTES,
    TM_SHM_LOG_CAPACITY_BYTES,
    TM_SHM_INDEX_SLOTS,
    TM_SHM_ATTACHED,
    TM_SHM_HITS,
    TM_SHM_MISSES,
    TM_SHM_SETS,
    TM_SHM_EVICTIONS,
    TM_SHM_PROMOTIONS,
    TM_SHM_EXPIRED,
    TM_SHM_TORN,
    TM_SHM_CORRUPT,
    TM_SHM_SWEPT,
    TM_SHM_LOST_SETS,
    TM_SHM_LOCK_SLOTS,
    TM_SHM_LOCKS_HELD,
    TM_SHM_STATS_REJECTED,
    TM_SHM_CHECK_FAILURES,
    TM_SHM_HOT_HITS,
    TM_SHM_HOT_BYTES,
    TM_LMDB_INDEX,
    TM_LMDB_QUEUED,
    TM_LMDB_READERS,
    TM_LMDB_BATCH,
    TM_LMDB_COMMIT_ERRORS,
    TM_LMDB_MAP_FULL,
    TM_LMDB_SYNCS,
    TM_LMDB_SYNC_ERRORS,
    TM_LMDB_QUEUE_FULL,
    TM_LMDB_STALE_READERS,
    TM_REDIS_TIMEOUTS,
    TM_REDIS_FAILURES,
    TM_REDIS_BAD_REPLIES,
    TM_REDIS_PROTOCOL_ERRORS,
    TM_REDIS_SKIPPED,
    TM_REDIS_CONNECTS,
    TM_REDIS_CONNECT_FAILURES,
    TM_REDIS_CIRCUIT_OPENS,
    TM_REDIS_INVAL_PUBLISHED,
    TM_REDIS_INVAL_RECEIVED,
    TM_REDIS_INVAL_OWN,
    TM_REDIS_INVAL_MALFORMED,
    TM_REDIS_SUB_RECONNECTS,
    TM_REDIS_LOCK_NOTICES,
    TM_REDIS_LOCK_MALFORMED,
    TM_REDIS_SCRIPT_LOADS,
    TM_REDIS_CONNECTIONS,
    TM_REDIS_CIRCUITS_OPEN,
    TM_REDIS_CIRCUITS_HALF_OPEN,
    TM_REDIS_CIRCUIT_STATE,
    TM_REDIS_SUBSCRIBED,
    TM_N
};

static const char *const circuit_states[] = {"closed", "half_open", "open", NULL};

#define TC(n, h)                                                                                   \
    {                                                                                              \
        .name = n, .type = M_COUNTER, .unit = U_NONE, .help = h, .labels = L_TIER                  \
    }
#define TG(n, u, h)                                                                                \
    {                                                                                              \
        .name = n, .type = M_GAUGE, .unit = u, .help = h, .labels = L_TIER                         \
    }
#define SC(n, h)                                                                                   \
    {                                                                                              \
        .name = n, .type = M_COUNTER, .unit = U_NONE, .help = h, .labels = L_SEGMENT               \
    }
#define SG(n, u, h)                                                                                \
    {                                                                                              \
        .name = n, .type = M_GAUGE, .unit = u, .help = h, .labels = L_SEGMENT                      \
    }

static const struct metric tier_metrics[TM_N] = {
    [TM_GETS] = TC("tiercache_tier_gets_total",
                   "Gets this process asked of the tier (hits, misses, corrupt and errors)."),
    [TM_HITS] = TC("tiercache_tier_hits_total", "Gets the tier answered with a live value."),
    [TM_MISSES] = TC("tiercache_tier_misses_total", "Gets the tier had no live value for."),
    [TM_SETS] = TC("tiercache_tier_sets_total", "Sets the tier stored."),
    [TM_DELETES] = TC("tiercache_tier_deletes_total", "Deletes the tier did (a missing key too)."),
    [TM_CLEARS] = TC("tiercache_tier_clears_total", "Clears (by prefix or all) the tier did."),
    [TM_ERRORS] = TC("tiercache_tier_errors_total",
                     "Operations the tier failed (I/O, timeout, unavailable)."),
    [TM_CORRUPT] = TC("tiercache_tier_corrupt_total",
                      "Records that failed their check (header, checksum, key): answered as "
                      "misses and deleted."),
    [TM_TOO_BIG] = TC("tiercache_tier_too_big_total", "Sets refused for size (over max_item)."),
    [TM_LOCKS_TAKEN] = TC("tiercache_tier_locks_taken_total", "Lease locks taken in the tier."),
    [TM_LOCKS_BUSY] =
        TC("tiercache_tier_locks_busy_total", "Lease lock requests refused: another holder."),
    [TM_LOCKS_RELEASED] =
        TC("tiercache_tier_locks_released_total", "Lease locks released by their holder."),
    [TM_LOCK_RELEASE_REFUSED] = TC("tiercache_tier_lock_release_refused_total",
                                   "Lock releases refused: the token does not hold the lock."),
    [TM_LOCK_ERRORS] = TC("tiercache_tier_lock_errors_total", "Lock operations the tier failed."),
    /* Encryption at rest (tiers/seal.h): the sweeper's rekey walk. */
    [TM_REKEYED] = TC("tiercache_tier_rekeyed_total",
                      "Records the rekey walk re-sealed under the newest encryption key."),
    [TM_REKEY_PASSES] = TC("tiercache_tier_rekey_passes_total",
                           "Complete rekey passes over the tier (each ends a key census)."),
    [TM_LOCKS_RENEWED] =
        TC("tiercache_tier_locks_renewed_total", "Lease locks renewed by their holder."),
    [TM_LOCK_RENEW_REFUSED] = TC("tiercache_tier_lock_renew_refused_total",
                                 "Lock renewals refused: held under another token, or not held."),
    [TM_COUNT_ADDS] = TC("tiercache_tier_count_adds_total", "Counter adds the tier applied."),
    [TM_LIMIT_ALLOWED] =
        TC("tiercache_tier_limit_allowed_total", "Rate-limit hits the tier allowed."),
    [TM_LIMIT_DENIED] =
        TC("tiercache_tier_limit_denied_total", "Rate-limit hits the tier denied (answered 429)."),
    [TM_COUNT_ERRORS] =
        TC("tiercache_tier_count_errors_total", "Counter and limit operations the tier failed."),
    [TM_SHM_CELLS_LIVE] = SG("tiercache_shm_segment_cells_live", U_NONE,
                             "Counter and limit cells of the segment holding a live state now."),

    [TM_ITEMS] = TG("tiercache_tier_items", U_NONE,
                    "Entries in the tier (lmdb: in the environment, shared by every process "
                    "that opens it)."),
    [TM_USED_BYTES] = TG("tiercache_tier_used_bytes", U_BYTES,
                         "Bytes the tier's entries take (mem: entries, keys and values; lmdb: "
                         "pages held by the trees)."),
    [TM_CAPACITY_BYTES] =
        TG("tiercache_tier_capacity_bytes", U_BYTES, "Bytes the tier may hold (size, map_size)."),
    [TM_EVICTIONS] =
        TC("tiercache_tier_evictions_total", "Live entries the tier removed to make room."),
    [TM_EXPIRED] = TC("tiercache_tier_expired_total", "Entries the tier removed as expired."),

    [TM_SHM_ITEMS] = SG("tiercache_shm_segment_items", U_NONE,
                        "Index slots of the segment pointing at records not yet overwritten."),
    [TM_SHM_LOG_USED_BYTES] =
        SG("tiercache_shm_segment_log_used_bytes", U_BYTES,
           "Bytes of the segment's logs holding records (live or not yet overwritten)."),
    [TM_SHM_SIZE_BYTES] = SG("tiercache_shm_segment_size_bytes", U_BYTES, "Bytes of the segment."),
    [TM_SHM_LOG_CAPACITY_BYTES] = SG("tiercache_shm_segment_log_capacity_bytes", U_BYTES,
                                     "Bytes of the segment's two logs (probation and main)."),
    [TM_SHM_INDEX_SLOTS] =
        SG("tiercache_shm_segment_index_slots", U_NONE, "Slots of the segment's hash index."),
    [TM_SHM_ATTACHED] = SG("tiercache_shm_segment_attached_contexts", U_NONE,
                           "Stat slots in use: threads of every process attached to the segment."),
    [TM_SHM_HITS] =
        SC("tiercache_shm_segment_hits_total", "Gets that found a value, by every process."),
    [TM_SHM_MISSES] =
        SC("tiercache_shm_segment_misses_total", "Gets that found no value, by every process."),
    [TM_SHM_SETS] = SC("tiercache_shm_segment_sets_total", "Records written, by every process."),
    [TM_SHM_EVICTIONS] = SC("tiercache_shm_segment_evictions_total",
                            "Live records that lost their index slot to a newer one (a full "
                            "bucket), and overwritten records cleared by sweeps."),
    [TM_SHM_PROMOTIONS] = SC("tiercache_shm_segment_promotions_total",
                             "Hot records re-appended to the main log (lazy promotion)."),
    [TM_SHM_EXPIRED] =
        SC("tiercache_shm_segment_expired_total", "Expired records cleared by readers or sweeps."),
    [TM_SHM_TORN] = SC("tiercache_shm_segment_torn_reads_total",
                       "Copies a writer overwrote while they were read (answered as misses)."),
    [TM_SHM_CORRUPT] =
        SC("tiercache_shm_segment_corrupt_total", "Records with a damaged header dropped."),
    [TM_SHM_SWEPT] = SC("tiercache_shm_segment_swept_items_total",
                        "Index slots cleared by the sweeps of every process."),
    [TM_SHM_LOST_SETS] = SC("tiercache_shm_segment_lost_sets_total",
                            "Sets whose record was never indexed: overwritten before it was "
                            "published, or every race for its bucket lost."),
    [TM_SHM_LOCK_SLOTS] =
        SG("tiercache_shm_segment_lock_slots", U_NONE, "Entries of the segment's lock table."),
    [TM_SHM_LOCKS_HELD] = SG("tiercache_shm_segment_locks_held", U_NONE,
                             "Locks of the segment's table held by a live lease now."),
    [TM_SHM_STATS_REJECTED] =
        TG("tiercache_shm_stats_rejected", U_NONE,
           "Stat values of the segment that were implausible (scribbled by another process) and "
           "left out of the last snapshot."),
    [TM_SHM_CHECK_FAILURES] = TC("tiercache_shm_check_failures_total",
                                 "Checks by this process that found the segment damaged."),
    [TM_SHM_HOT_HITS] = TC("tiercache_shm_hot_hits_total",
                           "Hits answered from a worker's checked copy of a large value, the "
                           "segment's record unchanged (hot parameter)."),
    [TM_SHM_HOT_BYTES] = TG("tiercache_shm_hot_bytes", U_BYTES,
                            "Bytes of large values this process's workers keep checked copies of."),

    [TM_LMDB_INDEX] = TG("tiercache_lmdb_index_entries", U_NONE,
                         "Entries of the expiry index (stale ones not yet dropped included)."),
    [TM_LMDB_QUEUED] =
        TG("tiercache_lmdb_queued_writes", U_NONE, "Writes waiting for the writer thread."),
    [TM_LMDB_READERS] = TG("tiercache_lmdb_reader_slots_used", U_NONE,
                           "LMDB reader slots in use, by every process that opens the "
                           "environment."),
    [TM_LMDB_BATCH] = {.name = "tiercache_lmdb_commit_batch_writes",
                       .type = M_SUMMARY,
                       .help = "Writes per committed transaction (group commit): _sum is the "
                               "writes committed, _count the transactions.",
                       .labels = L_TIER},
    [TM_LMDB_COMMIT_ERRORS] =
        TC("tiercache_lmdb_commit_errors_total", "Write transactions that failed to commit."),
    [TM_LMDB_MAP_FULL] = TC("tiercache_lmdb_map_full_retries_total",
                            "Commits retried after eviction because the map was full."),
    [TM_LMDB_SYNCS] = TC("tiercache_lmdb_syncs_total",
                         "Flushes of the environment to disk: with sync=periodic, checkpoints "
                         "of the durable snapshot."),
    [TM_LMDB_SYNC_ERRORS] = TC("tiercache_lmdb_sync_errors_total",
                               "Checkpoints of the durable snapshot (sync=periodic) that failed."),
    [TM_LMDB_QUEUE_FULL] = TC("tiercache_lmdb_queue_full_total",
                              "Writes refused (TC_EAGAIN) because the write queue was full."),
    [TM_LMDB_STALE_READERS] =
        TC("tiercache_lmdb_stale_readers_cleared_total", "Reader slots of dead processes cleared."),

    [TM_REDIS_TIMEOUTS] =
        TC("tiercache_redis_timeouts_total", "Operations past their deadline (timeout_ms)."),
    [TM_REDIS_FAILURES] =
        TC("tiercache_redis_failures_total", "Operations failed by Redis or by a lost connection."),
    [TM_REDIS_BAD_REPLIES] = TC("tiercache_redis_bad_replies_total",
                                "Replies of the wrong shape, or values that did not decode."),
    [TM_REDIS_PROTOCOL_ERRORS] =
        TC("tiercache_redis_protocol_errors_total",
           "Connections closed for a reply out of bounds, out of order or malformed."),
    [TM_REDIS_SKIPPED] =
        TC("tiercache_redis_skipped_total", "Operations failed fast while the circuit was open."),
    [TM_REDIS_CONNECTS] = TC("tiercache_redis_connects_total",
                             "Connection handshakes completed (connect, AUTH, SELECT)."),
    [TM_REDIS_CONNECT_FAILURES] =
        TC("tiercache_redis_connect_failures_total", "Connects or handshakes that failed."),
    [TM_REDIS_CIRCUIT_OPENS] = TC("tiercache_redis_circuit_opens_total",
                                  "Times a worker's circuit opened (from closed or half-open)."),
    [TM_REDIS_INVAL_PUBLISHED] =
        TC("tiercache_redis_invalidations_published_total", "Invalidation messages published."),
    [TM_REDIS_INVAL_RECEIVED] = TC("tiercache_redis_invalidations_received_total",
                                   "Invalidation messages from other instances applied."),
    [TM_REDIS_INVAL_OWN] = TC("tiercache_redis_invalidations_own_total",
                              "This instance's own invalidation messages received back, ignored."),
    [TM_REDIS_INVAL_MALFORMED] = TC("tiercache_redis_invalidations_malformed_total",
                                    "Invalidation messages that did not parse, ignored."),
    [TM_REDIS_SUB_RECONNECTS] =
        TC("tiercache_redis_subscriber_reconnects_total", "Subscriber connections re-made."),
    [TM_REDIS_LOCK_NOTICES] =
        TC("tiercache_redis_lock_notices_total", "Lock release messages handed to the lock table."),
    [TM_REDIS_LOCK_MALFORMED] = TC("tiercache_redis_lock_notices_malformed_total",
                                   "Lock channel messages that did not parse, ignored."),
    [TM_REDIS_SCRIPT_LOADS] = TC("tiercache_redis_script_loads_total",
                                 "NOSCRIPT answers: a lock script re-sent as EVAL."),
    [TM_REDIS_CONNECTIONS] =
        TG("tiercache_redis_connections", U_NONE, "Worker connections to Redis ready now."),
    [TM_REDIS_CIRCUITS_OPEN] =
        TG("tiercache_redis_circuits_open", U_NONE, "Workers whose circuit is open now."),
    [TM_REDIS_CIRCUITS_HALF_OPEN] = TG("tiercache_redis_circuits_half_open", U_NONE,
                                       "Workers whose circuit is half-open (probing) now."),
    [TM_REDIS_CIRCUIT_STATE] = {"tiercache_redis_circuit_state", M_ENUM, U_NONE,
                                "The circuit breaker, the worst over all workers: 1 for its "
                                "state (closed, half_open, open).",
                                L_TIER, NULL, NULL, J_VALUE, NULL, 0, "state", circuit_states},
    [TM_REDIS_SUBSCRIBED] = TG("tiercache_redis_subscribed", U_NONE,
                               "1 when every channel wanted (invalidation, lock notices) is "
                               "subscribed."),
};

#undef TC
#undef TG
#undef SC
#undef SG

/* How a reported value feeds its family. */
enum part { PART_VALUE, PART_SUM, PART_COUNT };

/* A stat a tier reports by name: its family (-1: not in /metrics) and its
 * member in the tier's /stats object (NULL: not in /stats). */
struct stat_map {
    const char *stat;
    int metric;
    enum part part;
    const char *json;
};

#define SAME(stat, metric)                                                                         \
    {                                                                                              \
        stat, metric, PART_VALUE, stat                                                             \
    }

/* The tier layer's counters, for every scheme. */
static const struct stat_map common_map[] = {
    SAME("gets", TM_GETS),
    SAME("hits", TM_HITS),
    SAME("misses", TM_MISSES),
    SAME("sets", TM_SETS),
    SAME("deletes", TM_DELETES),
    SAME("clears", TM_CLEARS),
    SAME("errors", TM_ERRORS),
    SAME("corrupt", TM_CORRUPT),
    SAME("too_big", TM_TOO_BIG),
    SAME("locks_taken", TM_LOCKS_TAKEN),
    SAME("locks_busy", TM_LOCKS_BUSY),
    SAME("locks_released", TM_LOCKS_RELEASED),
    SAME("lock_release_refused", TM_LOCK_RELEASE_REFUSED),
    SAME("lock_errors", TM_LOCK_ERRORS),
    SAME("rekeyed", TM_REKEYED),
    SAME("rekey_passes", TM_REKEY_PASSES),
    SAME("locks_renewed", TM_LOCKS_RENEWED),
    SAME("lock_renew_refused", TM_LOCK_RENEW_REFUSED),
    SAME("count_adds", TM_COUNT_ADDS),
    SAME("limit_allowed", TM_LIMIT_ALLOWED),
    SAME("limit_denied", TM_LIMIT_DENIED),
    SAME("count_errors", TM_COUNT_ERRORS),
    {NULL, -1, PART_VALUE, NULL},
};

static const struct stat_map mem_map[] = {
    SAME("items", TM_ITEMS),
    SAME("bytes_used", TM_USED_BYTES),
    SAME("bytes_capacity", TM_CAPACITY_BYTES),
    SAME("evictions", TM_EVICTIONS),
    SAME("expired", TM_EXPIRED),
    {NULL, -1, PART_VALUE, NULL},
};

/* The ring's snapshot is of the whole segment: in /stats, the tier's
 * "segment" object. */
static const struct stat_map shm_map[] = {
    {"items", TM_SHM_ITEMS, PART_VALUE, "segment.items"},
    {"bytes_used", TM_SHM_LOG_USED_BYTES, PART_VALUE, "segment.bytes_used"},
    {"bytes_capacity", TM_SHM_SIZE_BYTES, PART_VALUE, "segment.bytes_capacity"},
    {"log_capacity", TM_SHM_LOG_CAPACITY_BYTES, PART_VALUE, "segment.log_capacity"},
    {"index_slots", TM_SHM_INDEX_SLOTS, PART_VALUE, "segment.index_slots"},
    {"attached_ctxs", TM_SHM_ATTACHED, PART_VALUE, "segment.attached_ctxs"},
    {"shm_hits", TM_SHM_HITS, PART_VALUE, "segment.hits"},
    {"shm_misses", TM_SHM_MISSES, PART_VALUE, "segment.misses"},
    {"shm_sets", TM_SHM_SETS, PART_VALUE, "segment.sets"},
    {"evictions", TM_SHM_EVICTIONS, PART_VALUE, "segment.evictions"},
    {"promotions", TM_SHM_PROMOTIONS, PART_VALUE, "segment.promotions"},
    {"expired", TM_SHM_EXPIRED, PART_VALUE, "segment.expired"},
    {"torn_reads", TM_SHM_TORN, PART_VALUE, "segment.torn_reads"},
    {"shm_corrupt", TM_SHM_CORRUPT, PART_VALUE, "segment.corrupt"},
    {"swept", TM_SHM_SWEPT, PART_VALUE, "segment.swept"},
    {"lost_sets", TM_SHM_LOST_SETS, PART_VALUE, "segment.lost_sets"},
    {"lock_slots", TM_SHM_LOCK_SLOTS, PART_VALUE, "segment.lock_slots"},
    {"locks_held", TM_SHM_LOCKS_HELD, PART_VALUE, "segment.locks_held"},
    {"cells_live", TM_SHM_CELLS_LIVE, PART_VALUE, "segment.cells_live"},
    /* These are this process's own. */
    SAME("stats_rejected", TM_SHM_STATS_REJECTED),
    SAME("check_failures", TM_SHM_CHECK_FAILURES),
    SAME("hot_hits", TM_SHM_HOT_HITS),
    SAME("hot_bytes", TM_SHM_HOT_BYTES),
    {NULL, -1, PART_VALUE, NULL},
};

static const struct stat_map lmdb_map[] = {
    SAME("items", TM_ITEMS),
    SAME("index_entries", TM_LMDB_INDEX),
    SAME("write_queue", TM_LMDB_QUEUED),
    SAME("bytes_used", TM_USED_BYTES),
    SAME("bytes_capacity", TM_CAPACITY_BYTES),
    SAME("reader_slots", TM_LMDB_READERS),
    {"commit_batches", TM_LMDB_BATCH, PART_COUNT, "commit_batches"},
    {"commit_ops", TM_LMDB_BATCH, PART_SUM, "commit_ops"},
    SAME("commit_errors", TM_LMDB_COMMIT_ERRORS),
    SAME("evictions", TM_EVICTIONS),
    SAME("expired", TM_EXPIRED),
    /* Counts the same sweeps as tiercache_tier_sweeps_total ("sweeps" in
     * /stats), which every tier has. */
    {"sweeps", -1, PART_VALUE, NULL},
    SAME("map_full_retries", TM_LMDB_MAP_FULL),
    SAME("syncs", TM_LMDB_SYNCS),
    SAME("sync_errors", TM_LMDB_SYNC_ERRORS),
    SAME("queue_full", TM_LMDB_QUEUE_FULL),
    SAME("stale_readers_cleared", TM_LMDB_STALE_READERS),
    /* A precomputed mean: /metrics has its _sum and _count instead. */
    {"commit_batch_mean", -1, PART_VALUE, "commit_batch_mean"},
    {NULL, -1, PART_VALUE, NULL},
};

static const struct stat_map redis_map[] = {
    SAME("timeouts", TM_REDIS_TIMEOUTS),
    SAME("failures", TM_REDIS_FAILURES),
    SAME("bad_replies", TM_REDIS_BAD_REPLIES),
    SAME("protocol_errors", TM_REDIS_PROTOCOL_ERRORS),
    SAME("skipped", TM_REDIS_SKIPPED),
    SAME("connects", TM_REDIS_CONNECTS),
    SAME("connect_failures", TM_REDIS_CONNECT_FAILURES),
    SAME("circuit_opens", TM_REDIS_CIRCUIT_OPENS),
    SAME("inval_published", TM_REDIS_INVAL_PUBLISHED),
    SAME("inval_received", TM_REDIS_INVAL_RECEIVED),
    SAME("inval_own", TM_REDIS_INVAL_OWN),
    SAME("inval_malformed", TM_REDIS_INVAL_MALFORMED),
    SAME("sub_reconnects", TM_REDIS_SUB_RECONNECTS),
    SAME("lock_notices", TM_REDIS_LOCK_NOTICES),
    SAME("lock_malformed", TM_REDIS_LOCK_MALFORMED),
    SAME("script_loads", TM_REDIS_SCRIPT_LOADS),
    SAME("connections", TM_REDIS_CONNECTIONS),
    SAME("circuit_open", TM_REDIS_CIRCUITS_OPEN),
    SAME("circuit_half_open", TM_REDIS_CIRCUITS_HALF_OPEN),
    SAME("circuit_state", TM_REDIS_CIRCUIT_STATE),
    SAME("subscribed", TM_REDIS_SUBSCRIBED),
    {NULL, -1, PART_VALUE, NULL},
};

#undef SAME

static const struct {
    const char *scheme;
    const struct stat_map *map;
} scheme_maps[] = {
    {"mem", mem_map},     {"shm", shm_map},          {"lmdb", lmdb_map},
    {"redis", redis_map}, {"redis+unix", redis_map},
};

static const struct stat_map *map_of(const char *scheme)
{
    for (size_t i = 0; i < sizeof(scheme_maps) / sizeof(scheme_maps[0]); i++) {
        if (strcmp(scheme_maps[i].scheme, scheme) == 0) {
            return scheme_maps[i].map;
        }
    }
    return NULL;
}

/* The row of a reported stat: the backend's table, then the common one. */
static const struct stat_map *find_map(const struct tier_view *tv, const char *stat)
{
    for (const struct stat_map *p = tv->map; p != NULL && p->stat != NULL; p++) {
        if (strcmp(p->stat, stat) == 0) {
            return p;
        }
    }
    for (const struct stat_map *p = common_map; p->stat != NULL; p++) {
        if (strcmp(p->stat, stat) == 0) {
            return p;
        }
    }
    return NULL;
}

/* The value tier @p tv reported for part @p part of family @p id, if any. */
static const struct stat_row *part_value(const struct tier_view *tv, int id, enum part part)
{
    const struct stat_map *maps[2] = {tv->map, common_map};
    for (int k = 0; k < 2; k++) {
        for (const struct stat_map *p = maps[k]; p != NULL && p->stat != NULL; p++) {
            if (p->metric == id && p->part == part) {
                return tier_stat(tv, p->stat);
            }
        }
    }
    return NULL;
}

static void prom_tier_family(struct render *rc, int id)
{
    const struct metric *m = &tier_metrics[id];
    rc->header = m;
    for (size_t i = 0; i < rc->ntiers; i++) {
        const struct tier_view *tv = &rc->tiers[i];
        struct sample s = {.tier = (int)i};
        if (m->labels & L_SEGMENT) {
            if (tv->dup_segment) {
                continue;
            }
            s.lv[0] = tv->segment;
        } else {
            s.lv[0] = tv->label;
            s.lv[1] = tv->scheme;
        }
        const struct stat_row *v = part_value(tv, id, m->type == M_SUMMARY ? PART_SUM : PART_VALUE);
        if (v == NULL) {
            continue;
        }
        s.u = v->value;
        if (m->type == M_SUMMARY) {
            const struct stat_row *c = part_value(tv, id, PART_COUNT);
            if (c == NULL) {
                continue;
            }
            s.count = c->value;
        } else if (m->type == M_ENUM) {
            size_t n = 0;
            while (m->states[n] != NULL) {
                n++;
            }
            s.u = s.u < n ? s.u : n - 1;
        }
        prom_sample(rc, m, &s);
    }
}

/*
 * A stat no table describes: shown as tiercache_tier_<scheme>_<stat>, with a
 * HELP that says so, grouped over the tiers that report it.
 */
static void fallback_name(const struct tier_view *tv, const struct stat_row *r, char *out,
                          size_t len)
{
    int n = snprintf(out, len, "tiercache_tier_%s_%s%s", tv->scheme, r->name,
                     r->kind == TC_STAT_COUNTER ? "_total" : "");
    for (int i = 0; i < n && (size_t)i < len; i++) {
        char c = out[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            out[i] = '_';
        }
    }
}

static void prom_fallbacks(struct render *rc)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        const struct tier_view *tv = &rc->tiers[i];
        for (size_t k = 0; k < tv->n; k++) {
            if (find_map(tv, tv->rows[k].name) != NULL) {
                continue;
            }
            char name[160];
            fallback_name(tv, &tv->rows[k], name, sizeof(name));
            int seen = 0;
            for (size_t pi = 0; pi <= i && !seen; pi++) {
                const struct tier_view *pv = &rc->tiers[pi];
                for (size_t pk = 0; pk < (pi == i ? k : pv->n) && !seen; pk++) {
                    char other[160];
                    fallback_name(pv, &pv->rows[pk], other, sizeof(other));
                    seen = find_map(pv, pv->rows[pk].name) == NULL && strcmp(other, name) == 0;
                }
            }
            if (seen) {
                continue; /* written with its family */
            }
            char help[256];
            snprintf(help, sizeof(help),
                     "The %s tier's stat \"%s\", which no row of src/metrics.c describes.",
                     tv->scheme, tv->rows[k].name);
            struct metric m = {.name = name,
                               .type = tv->rows[k].kind == TC_STAT_COUNTER ? M_COUNTER : M_GAUGE,
                               .help = help,
                               .labels = L_TIER};
            rc->header = &m;
            for (size_t ti = i; ti < rc->ntiers; ti++) {
                const struct tier_view *xv = &rc->tiers[ti];
                for (size_t tk = 0; tk < xv->n; tk++) {
                    char other[160];
                    fallback_name(xv, &xv->rows[tk], other, sizeof(other));
                    if (strcmp(other, name) == 0 && find_map(xv, xv->rows[tk].name) == NULL) {
                        struct sample s = tier_sample(rc, ti);
                        s.u = xv->rows[tk].value;
                        prom_sample(rc, &m, &s);
                    }
                }
            }
        }
    }
}

/* In /stats, each tier's stats in the order the tier reports them. */
static void json_tier_stats(struct render *rc)
{
    for (size_t i = 0; i < rc->ntiers; i++) {
        const struct tier_view *tv = &rc->tiers[i];
        for (size_t k = 0; k < tv->n; k++) {
            const struct stat_row *r = &tv->rows[k];
            const struct stat_map *p = find_map(tv, r->name);
            if (p != NULL && p->json == NULL) {
                continue;
            }
            char path[96];
            snprintf(path, sizeof(path), "tiers[].%s", p != NULL ? p->json : r->name);
            struct metric m = {.type = M_GAUGE};
            if (p != NULL && p->metric >= 0 && tier_metrics[p->metric].type == M_ENUM) {
                m = tier_metrics[p->metric];
            }
            struct sample s = {.tier = (int)i, .u = r->value};
            if (m.type == M_ENUM) {
                size_t n = 0;
                while (m.states[n] != NULL) {
                    n++;
                }
                s.u = s.u < n ? s.u : n - 1;
            }
            json_put(rc, &m, J_VALUE, path, &s);
        }
    }
}

/* ---- checking the rows ---------------------------------------------------------------- */

static int ends_in(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && strncmp(s + n - k, suffix, k) == 0;
}

static int check_row(const struct metric *m, char *err, size_t len, size_t *at)
{
    if (m->name == NULL || m->type == M_TIER_STATS) {
        return 0; /* not in /metrics */
    }
    size_t n = strlen(m->name);
    int total = ends_in(m->name, n, "_total");
    n -= total ? 6 : 0; /* the name before _total */
    const char *unit = m->unit == U_SECONDS ? "_seconds" : m->unit == U_BYTES ? "_bytes" : NULL;
    const char *why = NULL;
    if (m->help == NULL || m->help[0] == '\0') {
        why = "no HELP";
    } else if ((m->type == M_COUNTER) != total) {
        why = total ? "_total on a non-counter" : "a counter without _total";
    } else if (unit != NULL && !ends_in(m->name, n, unit)) {
        why = "its unit is not the last word";
    } else if (unit == NULL && (ends_in(m->name, n, "_seconds") || ends_in(m->name, n, "_bytes"))) {
        why = "a unit in the name but none in the row";
    }
    if (why == NULL) {
        return 0;
    }
    if (*at < len) {
        int k = snprintf(err + *at, len - *at, "%s: %s\n", m->name, why);
        if (k > 0) {
            *at = *at + (size_t)k < len ? *at + (size_t)k : len - 1;
        }
    }
    return 1;
}

int tc_metrics_check(char *err, size_t len)
{
    size_t at = 0;
    int bad = 0;
    if (len > 0) {
        err[0] = '\0';
    }
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        bad += check_row(&rows[i], err, len, &at);
    }
    for (int id = 0; id < TM_N; id++) {
        bad += check_row(&tier_metrics[id], err, len, &at);
    }
    return bad;
}

/* ---- the renderers ---------------------------------------------------------------------- */

enum tc_status tc_metrics_prom(struct tc_server *srv, struct tc_buf *out)
{
    struct render *rc = render_create(srv);
    if (rc == NULL) {
        return TC_ENOMEM;
    }
    rc->out = out;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct metric *m = &rows[i];
        if (m->type == M_TIER_STATS) {
            for (int id = 0; id < TM_N; id++) {
                prom_tier_family(rc, id);
            }
            prom_fallbacks(rc);
            continue;
        }
        if (m->name == NULL) {
            continue; /* /stats only */
        }
        rc->header = m;
        m->get(rc, m);
    }
    enum tc_status st = rc->st;
    free(rc);
    return st;
}

json_t *tc_metrics_json(struct tc_server *srv)
{
    struct render *rc = render_create(srv);
    if (rc == NULL) {
        return NULL;
    }
    rc->root = json_object();
    if (rc->root == NULL) {
        free(rc);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct metric *m = &rows[i];
        if (m->type == M_TIER_STATS) {
            json_tier_stats(rc);
            continue;
        }
        if (m->json == NULL) {
            continue; /* /metrics only */
        }
        if (m->jform == J_COUNT) {
            json_put(rc, m, m->jform, m->json, NULL);
            if (m->json2 != NULL) {
                json_put(rc, m, m->jform, m->json2, NULL);
            }
        }
        m->get(rc, m);
    }
    if (rc->jtiers == NULL) {
        make_tiers(rc);
    }
    json_t *root = rc->root;
    free(rc);
    return root;
}
