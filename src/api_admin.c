/*
 * /health, /stats and /metrics: what the server and each tier are doing.
 */
#include "src/api.h"
#include "src/clock.h"
#include "src/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- /health ------------------------------------------------------------------------------ */

enum tc_status tc_api_health(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_stack *s = w->srv->stack;
    json_t *j = json_object();
    json_t *tiers = json_array();
    json_t *failing = json_array();
    size_t down = 0, bad = 0, n = tc_stack_ntiers(s);
    for (size_t i = 0; i < n; i++) {
        char why[256];
        struct tc_tier *t = tc_stack_tier(s, i);
        enum tc_tier_health h = tc_tier_health(t, why, sizeof(why));
        json_t *o = json_object();
        json_object_set_new(o, "tier", json_string(tc_api_tier_label((int)i)));
        json_object_set_new(o, "uri", json_string(tc_tier_uri(t)));
        json_object_set_new(o, "status", json_string(tc_tier_health_name(h)));
        if (why[0]) {
            json_object_set_new(o, "detail", json_string(why));
        }
        json_array_append_new(tiers, o);
        if (h != TC_HEALTH_OK) {
            bad++;
            down += h == TC_HEALTH_DOWN;
            json_array_append_new(failing, json_string(tc_api_tier_label((int)i)));
        }
    }
    int status = 200;
    const char *word = "ok";
    if (n == 0 || down == n) {
        status = 503;
        word = "down";
    } else if (bad > 0) {
        word = "degraded";
    }
    json_object_set_new(j, "status", json_string(word));
    if (bad > 0) {
        json_object_set_new(j, "failing", failing);
    } else {
        json_decref(failing);
    }
    json_object_set_new(j, "tiers", tiers);
    tc_api_respond_json(w, r, status, j, NULL);
    return TC_OK;
}

/* ---- /stats and /metrics ---------------------------------------------------------------- */

struct stat_row {
    char name[64];
    uint64_t value;
    enum tc_stat_kind kind;
};

struct stat_list {
    struct stat_row rows[96];
    size_t n;
};

static void collect_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    struct stat_list *l = arg;
    if (l->n < sizeof(l->rows) / sizeof(l->rows[0])) {
        snprintf(l->rows[l->n].name, sizeof(l->rows[l->n].name), "%s", name);
        l->rows[l->n].value = v;
        l->rows[l->n].kind = kind;
        l->n++;
    }
}

static const char *const op_names[] = {"get", "set", "del"};

static void tier_hist(const struct tc_server *srv, size_t i, int kind, struct tc_hist_snap *snap)
{
    memset(snap, 0, sizeof(*snap));
    for (size_t k = 0; k < srv->nworkers; k++) {
        const struct tc_worker *w = &srv->workers[k];
        if (w->sc != NULL) {
            tc_hist_snap_add(snap, tc_stack_ctx_hist(w->sc, i, kind));
        }
    }
}

static uint64_t conn_counter(const struct tc_server *srv, size_t off)
{
    uint64_t sum = 0;
    for (size_t k = 0; k < srv->nworkers; k++) {
        const struct tc_worker *w = &srv->workers[k];
        if (w->http != NULL) {
            const _Atomic uint64_t *p =
                (const _Atomic uint64_t *)((const char *)tc_http_server_counters(w->http) + off);
            sum += atomic_load_explicit(p, memory_order_relaxed);
        }
    }
    return sum;
}

static uint64_t status_count(const struct tc_server *srv, int code)
{
    uint64_t sum = 0;
    for (size_t k = 0; k < srv->nworkers; k++) {
        sum += atomic_load_explicit(&srv->workers[k].by_status[code], memory_order_relaxed);
    }
    return sum;
}

enum tc_status tc_api_stats(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_server *srv = w->srv;
    json_t *j = json_object();
    uint64_t now = tc_clock_ms();
    json_object_set_new(j, "uptime_s", json_real((double)(now - srv->start_ms) / 1000.0));
    json_object_set_new(j, "workers", json_integer((json_int_t)srv->nworkers));

    json_t *conns = json_object();
    json_object_set_new(
        conns, "active",
        json_integer((json_int_t)atomic_load_explicit(&srv->conn_count, memory_order_relaxed)));
    json_object_set_new(
        conns, "accepted",
        json_integer((json_int_t)conn_counter(srv, offsetof(struct tc_http_counters, accepted))));
    json_object_set_new(
        conns, "refused",
        json_integer((json_int_t)conn_counter(srv, offsetof(struct tc_http_counters, refused))));
    json_object_set_new(j, "connections", conns);

    json_t *hj = json_object();
#define TC_HTTP_X(field, help)                                                                     \
    json_object_set_new(                                                                           \
        hj, #field,                                                                                \
        json_integer((json_int_t)conn_counter(srv, offsetof(struct tc_http_counters, field))));
    TC_HTTP_REFUSALS(TC_HTTP_X)
#undef TC_HTTP_X
    json_object_set_new(
        hj, "pending_body_bytes",
        json_integer((json_int_t)atomic_load_explicit(&srv->body_pending, memory_order_relaxed)));
    json_object_set_new(j, "http", hj);

    json_t *req = json_object();
    json_t *by = json_object();
    uint64_t total = 0;
    for (int code = 0; code < TC_STATUS_CODES; code++) {
        uint64_t n = status_count(srv, code);
        if (n > 0) {
            char k[8];
            snprintf(k, sizeof(k), "%d", code);
            json_object_set_new(by, k, json_integer((json_int_t)n));
            total += n;
        }
    }
    json_object_set_new(req, "total", json_integer((json_int_t)total));
    json_object_set_new(req, "by_status", by);
    json_object_set_new(j, "requests", req);
    uint64_t lost;
    uint64_t inval = tc_stack_invalidations(srv->stack, &lost);
    json_t *iv = json_object();
    json_object_set_new(iv, "applied", json_integer((json_int_t)inval));
    json_object_set_new(iv, "subscription_lost", json_integer((json_int_t)lost));
    json_object_set_new(j, "invalidations", iv);

    json_t *locks = json_object();
    json_object_set_new(locks, "scope", json_string(tc_keylock_scope(srv->keylock)));
    json_object_set_new(locks, "active",
                        json_integer((json_int_t)tc_keylock_entries(srv->keylock)));
    for (int k = 0; k < TC_KEYLOCK_NSTATS; k++) {
        json_object_set_new(
            locks, tc_keylock_stat_name((enum tc_keylock_counter)k),
            json_integer((json_int_t)tc_keylock_stat(srv->keylock, (enum tc_keylock_counter)k)));
    }
    json_object_set_new(j, "dogpile", locks);
    if (srv->origin != NULL) {
        struct tc_origin_stats os;
        tc_origin_stats(srv->origin, &os);
        json_t *o = json_object();
        json_object_set_new(o, "url", json_string(tc_origin_url(srv->origin)));
#define TC_ORIGIN_X(name, help) json_object_set_new(o, #name, json_integer((json_int_t)os.name));
        TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
        json_object_set_new(o, "inflight", json_integer((json_int_t)os.inflight));
        json_object_set_new(j, "origin", o);
    }

    json_t *tiers = json_array();
    for (size_t i = 0; i < tc_stack_ntiers(srv->stack); i++) {
        struct tc_tier *t = tc_stack_tier(srv->stack, i);
        json_t *o = json_object();
        json_object_set_new(o, "tier", json_string(tc_api_tier_label((int)i)));
        json_object_set_new(o, "uri", json_string(tc_tier_uri(t)));
        json_object_set_new(o, "ttl_ratio", json_real(tc_tier_ttl_ratio(t)));
        json_object_set_new(o, "health",
                            json_string(tc_tier_health_name(tc_tier_health(t, NULL, 0))));
        struct stat_list l;
        l.n = 0;
        tc_tier_stats(t, collect_stat, &l);
        for (size_t k = 0; k < l.n; k++) {
            json_object_set_new(o, l.rows[k].name, json_integer((json_int_t)l.rows[k].value));
        }
        json_object_set_new(o, "sweeps", json_integer((json_int_t)atomic_load(&srv->sweeps[i])));
        json_object_set_new(o, "swept", json_integer((json_int_t)atomic_load(&srv->swept[i])));
        json_t *lat = json_object();
        for (int kind = 0; kind < 3; kind++) {
            struct tc_hist_snap snap;
            tier_hist(srv, i, kind, &snap);
            json_t *q = json_object();
            json_object_set_new(q, "count", json_integer((json_int_t)snap.count));
            json_object_set_new(q, "p50_ns",
                                json_integer((json_int_t)tc_hist_snap_quantile(&snap, 0.50)));
            json_object_set_new(q, "p99_ns",
                                json_integer((json_int_t)tc_hist_snap_quantile(&snap, 0.99)));
            json_object_set_new(lat, op_names[kind], q);
        }
        json_object_set_new(o, "latency", lat);
        json_array_append_new(tiers, o);
    }
    json_object_set_new(j, "tiers", tiers);
    tc_api_respond_json(w, r, 200, j, NULL);
    return TC_OK;
}

static void prom_family(struct tc_buf *b, const char *name, const char *type, const char *help)
{
    char line[256];
    int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    tc_buf_append(b, line, (size_t)n);
}

static void prom_line(struct tc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void prom_line(struct tc_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0) {
        tc_buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
}

enum tc_status tc_api_metrics(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_server *srv = w->srv;
    struct tc_buf b = TC_BUF_INIT;
    size_t nt = tc_stack_ntiers(srv->stack);

    prom_family(&b, "tiercache_uptime_seconds", "gauge", "Seconds since the server started.");
    prom_line(&b, "tiercache_uptime_seconds %.3f\n", (double)(tc_clock_ms() - srv->start_ms) / 1e3);
    prom_family(&b, "tiercache_connections", "gauge", "Open client connections.");
    prom_line(&b, "tiercache_connections %llu\n",
              (unsigned long long)atomic_load_explicit(&srv->conn_count, memory_order_relaxed));
    prom_family(&b, "tiercache_connections_accepted_total", "counter", "Connections accepted.");
    prom_line(&b, "tiercache_connections_accepted_total %llu\n",
              (unsigned long long)conn_counter(srv, offsetof(struct tc_http_counters, accepted)));
    prom_family(&b, "tiercache_connections_refused_total", "counter",
                "Connections refused over max-connections.");
    prom_line(&b, "tiercache_connections_refused_total %llu\n",
              (unsigned long long)conn_counter(srv, offsetof(struct tc_http_counters, refused)));
#define TC_HTTP_X(field, help)                                                                     \
    prom_family(&b, "tiercache_http_" #field "_total", "counter", help ".");                       \
    prom_line(&b, "tiercache_http_" #field "_total %llu\n",                                        \
              (unsigned long long)conn_counter(srv, offsetof(struct tc_http_counters, field)));
    TC_HTTP_REFUSALS(TC_HTTP_X)
#undef TC_HTTP_X
    prom_family(&b, "tiercache_http_pending_body_bytes", "gauge",
                "Bytes held by request bodies being received (bounded by max-pending-body).");
    prom_line(&b, "tiercache_http_pending_body_bytes %llu\n",
              (unsigned long long)atomic_load_explicit(&srv->body_pending, memory_order_relaxed));
    prom_family(&b, "tiercache_requests_total", "counter", "HTTP responses by status code.");
    for (int code = 0; code < TC_STATUS_CODES; code++) {
        uint64_t n = status_count(srv, code);
        if (n > 0) {
            prom_line(&b, "tiercache_requests_total{code=\"%d\"} %llu\n", code,
                      (unsigned long long)n);
        }
    }

    /* Tier stats: grouped by name across tiers, as the format requires. */
    struct stat_list *lists = calloc(nt ? nt : 1, sizeof(*lists));
    if (lists == NULL) {
        tc_buf_deinit(&b);
        return TC_ENOMEM;
    }
    for (size_t i = 0; i < nt; i++) {
        tc_tier_stats(tc_stack_tier(srv->stack, i), collect_stat, &lists[i]);
    }
    for (size_t i = 0; i < nt; i++) {
        for (size_t k = 0; k < lists[i].n; k++) {
            const struct stat_row *row = &lists[i].rows[k];
            int seen = 0;
            for (size_t pi = 0; pi <= i && !seen; pi++) {
                for (size_t pk = 0; pk < (pi == i ? k : lists[pi].n); pk++) {
                    if (strcmp(lists[pi].rows[pk].name, row->name) == 0) {
                        seen = 1;
                        break;
                    }
                }
            }
            if (seen) {
                continue; /* already written with its family */
            }
            char fam[128], help[160];
            int counter = row->kind == TC_STAT_COUNTER;
            snprintf(fam, sizeof(fam), "tiercache_tier_%s%s", row->name, counter ? "_total" : "");
            snprintf(help, sizeof(help), "Tier stat '%s'.", row->name);
            prom_family(&b, fam, counter ? "counter" : "gauge", help);
            for (size_t ti = i; ti < nt; ti++) {
                for (size_t tk = 0; tk < lists[ti].n; tk++) {
                    if (strcmp(lists[ti].rows[tk].name, row->name) == 0) {
                        prom_line(&b, "%s{tier=\"%s\",scheme=\"%s\"} %llu\n", fam,
                                  tc_api_tier_label((int)ti),
                                  tc_tier_scheme(tc_stack_tier(srv->stack, ti)),
                                  (unsigned long long)lists[ti].rows[tk].value);
                    }
                }
            }
        }
    }
    free(lists);

    uint64_t lost;
    uint64_t inval = tc_stack_invalidations(srv->stack, &lost);
    prom_family(&b, "tiercache_invalidations_total", "counter",
                "Keys removed here because another host wrote or deleted them.");
    prom_line(&b, "tiercache_invalidations_total %llu\n", (unsigned long long)inval);
    prom_family(&b, "tiercache_invalidation_subscription_lost_total", "counter",
                "Times the invalidation subscription was lost (messages may be missed).");
    prom_line(&b, "tiercache_invalidation_subscription_lost_total %llu\n",
              (unsigned long long)lost);
    prom_family(&b, "tiercache_dogpile_active", "gauge",
                "Keys and lock names with waiters or a holder in this process.");
    prom_line(&b, "tiercache_dogpile_active{scope=\"%s\"} %llu\n", tc_keylock_scope(srv->keylock),
              (unsigned long long)tc_keylock_entries(srv->keylock));
    for (int k = 0; k < TC_KEYLOCK_NSTATS; k++) {
        char fam[96], help[160];
        snprintf(fam, sizeof(fam), "tiercache_dogpile_%s_total",
                 tc_keylock_stat_name((enum tc_keylock_counter)k));
        snprintf(help, sizeof(help), "Dogpile protection: %s.",
                 tc_keylock_stat_help((enum tc_keylock_counter)k));
        prom_family(&b, fam, "counter", help);
        prom_line(&b, "%s %llu\n", fam,
                  (unsigned long long)tc_keylock_stat(srv->keylock, (enum tc_keylock_counter)k));
    }
    if (srv->origin != NULL) {
        struct tc_origin_stats os;
        tc_origin_stats(srv->origin, &os);
#define TC_ORIGIN_X(name, help)                                                                    \
    prom_family(&b, "tiercache_origin_" #name "_total", "counter", "Origin: " help ".");           \
    prom_line(&b, "tiercache_origin_" #name "_total %llu\n", (unsigned long long)os.name);
        TC_ORIGIN_STATS(TC_ORIGIN_X)
#undef TC_ORIGIN_X
    }
    prom_family(&b, "tiercache_tier_up", "gauge", "1 if the tier is serving (ok or degraded).");
    for (size_t i = 0; i < nt; i++) {
        struct tc_tier *t = tc_stack_tier(srv->stack, i);
        prom_line(&b, "tiercache_tier_up{tier=\"%s\",scheme=\"%s\"} %d\n",
                  tc_api_tier_label((int)i), tc_tier_scheme(t),
                  tc_tier_health(t, NULL, 0) != TC_HEALTH_DOWN);
    }
    prom_family(&b, "tiercache_sweeps_total", "counter", "Sweeper visits per tier.");
    for (size_t i = 0; i < nt; i++) {
        prom_line(&b, "tiercache_sweeps_total{tier=\"%s\"} %llu\n", tc_api_tier_label((int)i),
                  (unsigned long long)atomic_load(&srv->sweeps[i]));
    }
    prom_family(&b, "tiercache_swept_total", "counter", "Expired entries removed by the sweeper.");
    for (size_t i = 0; i < nt; i++) {
        prom_line(&b, "tiercache_swept_total{tier=\"%s\"} %llu\n", tc_api_tier_label((int)i),
                  (unsigned long long)atomic_load(&srv->swept[i]));
    }
    prom_family(&b, "tiercache_tier_op_duration_seconds", "histogram",
                "Latency of tier operations as the stack sees them.");
    for (size_t i = 0; i < nt; i++) {
        for (int kind = 0; kind < 3; kind++) {
            struct tc_hist_snap snap;
            tier_hist(srv, i, kind, &snap);
            uint64_t cum = 0;
            for (int bk = 0; bk < TC_HIST_NB; bk++) {
                cum += snap.b[bk];
                if (bk == TC_HIST_NB - 1) {
                    prom_line(&b,
                              "tiercache_tier_op_duration_seconds_bucket{tier=\"%s\",op=\"%s\","
                              "le=\"+Inf\"} %llu\n",
                              tc_api_tier_label((int)i), op_names[kind], (unsigned long long)cum);
                } else {
                    prom_line(&b,
                              "tiercache_tier_op_duration_seconds_bucket{tier=\"%s\",op=\"%s\","
                              "le=\"%g\"} %llu\n",
                              tc_api_tier_label((int)i), op_names[kind],
                              (double)tc_hist_le_ns[bk] / 1e9, (unsigned long long)cum);
                }
            }
            prom_line(&b, "tiercache_tier_op_duration_seconds_sum{tier=\"%s\",op=\"%s\"} %.9f\n",
                      tc_api_tier_label((int)i), op_names[kind], (double)snap.sum_ns / 1e9);
            prom_line(&b, "tiercache_tier_op_duration_seconds_count{tier=\"%s\",op=\"%s\"} %llu\n",
                      tc_api_tier_label((int)i), op_names[kind], (unsigned long long)snap.count);
        }
    }
    tc_api_respond(w, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    tc_buf_deinit(&b);
    return TC_OK;
}
