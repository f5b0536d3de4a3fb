/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/results.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tb_loadavg(double out[3])
{
    out[0] = out[1] = out[2] = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3) {
            out[0] = out[1] = out[2] = 0;
        }
        fclose(f);
    }
}

double tb_cell_throughput(const struct tb_cellrec *c)
{
    uint64_t ops = c->r.gets + c->r.sets + c->r.dels;
    return c->seconds > 0 ? (double)ops / c->seconds : 0;
}

static json_t *lat_json(const struct tb_lat *h)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "count", (json_int_t)h->count, "p50_ns",
                     (json_int_t)tb_lat_quantile(h, 0.50), "p90_ns",
                     (json_int_t)tb_lat_quantile(h, 0.90), "p99_ns",
                     (json_int_t)tb_lat_quantile(h, 0.99), "p999_ns",
                     (json_int_t)tb_lat_quantile(h, 0.999), "max_ns", (json_int_t)h->max_ns,
                     "mean_ns", (json_int_t)(h->count ? h->sum_ns / h->count : 0));
}

static json_t *sim_json(const struct tb_simrec *s)
{
    const struct tb_sim_result *r = &s->r;
    return json_pack("{s:s,s:I,s:I,s:I,s:I,s:f}", "policy", tb_sim_policy_name(s->policy), "size",
                     (json_int_t)s->size, "requests", (json_int_t)r->requests, "misses",
                     (json_int_t)r->misses, "miss_bytes", (json_int_t)r->miss_bytes, "miss_ratio",
                     r->requests ? (double)r->misses / (double)r->requests : 0.0);
}

json_t *tb_cell_json(const struct tb_results *rs, const struct tb_cellrec *c)
{
    const struct tb_result *r = &c->r;
    const struct tb_stack *st = &rs->run->stacks[c->stack];
    json_t *j = json_object();
    json_object_set_new(j, "stack", json_string(st->name));
    json_object_set_new(j, "workload", json_string(rs->run->workloads[c->workload].name));
    json_object_set_new(j, "repeat", json_integer(c->repeat));
    if (st->url[0]) {
        json_object_set_new(j, "url", json_string(st->url));
    }
    json_object_set_new(j, "seconds", json_real(c->seconds));
    json_object_set_new(j, "throughput", json_real(tb_cell_throughput(c)));
    json_object_set_new(j, "gets", json_integer((json_int_t)r->gets));
    json_object_set_new(j, "sets", json_integer((json_int_t)r->sets));
    json_object_set_new(j, "deletes", json_integer((json_int_t)r->dels));
    json_object_set_new(j, "hits", json_integer((json_int_t)r->hits));
    json_object_set_new(j, "hit_ratio",
                        json_real(r->gets ? (double)r->hits / (double)r->gets : 0.0));
    json_object_set_new(j, "errors", json_integer((json_int_t)r->errors));
    json_object_set_new(j, "sets_refused", json_integer((json_int_t)r->sets_refused));
    json_object_set_new(j, "late", json_integer((json_int_t)r->late));
    json_object_set_new(j, "bytes_read", json_integer((json_int_t)r->bytes_read));
    json_object_set_new(j, "bytes_written", json_integer((json_int_t)r->bytes_written));
    json_t *tiers = json_array();
    uint64_t reached = r->gets;
    for (int i = 0; i < c->ntiers; i++) {
        json_t *t = json_object();
        uint64_t h = r->tier_hits[i];
        json_object_set_new(t, "name", json_string(c->tier_names[i]));
        json_object_set_new(t, "uri", json_string(c->tier_uris[i]));
        /* A get reaches tier i when every faster tier missed it. */
        json_object_set_new(t, "gets", json_integer((json_int_t)reached));
        json_object_set_new(t, "hits", json_integer((json_int_t)h));
        json_object_set_new(t, "hit_ratio", json_real(reached ? (double)h / (double)reached : 0.0));
        json_object_set_new(t, "share", json_real(r->gets ? (double)h / (double)r->gets : 0.0));
        json_object_set_new(t, "latency", lat_json(&r->lat_get[i]));
        json_t *stats = json_object();
        for (int k = 0; k < c->tstats[i].n; k++) {
            json_object_set_new(stats, c->tstats[i].s[k].name,
                                json_integer((json_int_t)c->tstats[i].s[k].value));
        }
        json_object_set_new(t, "stats", stats);
        json_array_append_new(tiers, t);
        reached = reached > h ? reached - h : 0;
    }
    json_object_set_new(j, "tiers", tiers);
    json_object_set_new(j, "miss",
                        json_pack("{s:I,s:f,s:o}", "gets", (json_int_t)(r->gets - r->hits), "share",
                                  r->gets ? (double)(r->gets - r->hits) / (double)r->gets : 0.0,
                                  "latency", lat_json(&r->lat_get[TB_MAX_TIERS])));
    struct tb_lat all = {0};
    for (int i = 0; i <= TB_MAX_TIERS; i++) {
        tb_lat_merge(&all, &r->lat_get[i]);
    }
    json_object_set_new(j, "latency",
                        json_pack("{s:o,s:o,s:o}", "get", lat_json(&all), "set",
                                  lat_json(&r->lat_set), "delete", lat_json(&r->lat_del)));
    json_object_set_new(j, "load",
                        json_pack("{s:[f,f,f],s:[f,f,f]}", "before", c->load_before[0],
                                  c->load_before[1], c->load_before[2], "after", c->load_after[0],
                                  c->load_after[1], c->load_after[2]));
    json_t *sims = json_array();
    for (size_t i = 0; i < rs->nsims; i++) {
        if (rs->sims[i].workload == c->workload) {
            json_array_append_new(sims, sim_json(&rs->sims[i]));
        }
    }
    json_object_set_new(j, "sim", sims);
    if (c->interrupted) {
        json_object_set_new(j, "interrupted", json_true());
    }
    if (c->error[0]) {
        json_object_set_new(j, "error", json_string(c->error));
    }
    return j;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static json_t *mmm(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_d);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return json_pack("{s:f,s:f,s:f}", "min", v[0], "median", med, "max", v[n - 1]);
}

json_t *tb_results_json(const struct tb_results *rs)
{
    const struct tb_run *run = rs->run;
    json_t *j = json_object();
    json_object_set_new(j, "version", json_string(TC_VERSION));
    json_object_set_new(j, "command", json_string(rs->command));
    json_object_set_new(j, "repeat", json_integer(run->repeat));
    json_t *cells = json_array();
    for (size_t i = 0; i < rs->ncells; i++) {
        json_array_append_new(cells, tb_cell_json(rs, &rs->cells[i]));
    }
    json_object_set_new(j, "cells", cells);
    /* Repeats of a configuration: min / median / max. */
    json_t *summary = json_array();
    for (size_t s = 0; s < run->nstacks; s++) {
        for (size_t w = 0; w < run->nworkloads; w++) {
            double tp[100], hr[100], sh[TB_MAX_TIERS][100];
            size_t n = 0;
            const struct tb_cellrec *last = NULL;
            for (size_t i = 0; i < rs->ncells && n < 100; i++) {
                const struct tb_cellrec *c = &rs->cells[i];
                if (c->stack != s || c->workload != w) {
                    continue;
                }
                tp[n] = tb_cell_throughput(c);
                hr[n] = c->r.gets ? (double)c->r.hits / (double)c->r.gets : 0;
                for (int t = 0; t < c->ntiers; t++) {
                    sh[t][n] = c->r.gets ? (double)c->r.tier_hits[t] / (double)c->r.gets : 0;
                }
                last = c;
                n++;
            }
            if (n == 0) {
                continue;
            }
            json_t *o = json_pack("{s:s,s:s,s:i}", "stack", run->stacks[s].name, "workload",
                                  run->workloads[w].name, "repeats", (int)n);
            json_object_set_new(o, "throughput", mmm(tp, n));
            json_object_set_new(o, "hit_ratio", mmm(hr, n));
            json_t *ts = json_array();
            for (int t = 0; t < last->ntiers; t++) {
                json_t *x = json_pack("{s:s}", "name", last->tier_names[t]);
                json_object_set_new(x, "share", mmm(sh[t], n));
                json_array_append_new(ts, x);
            }
            json_object_set_new(o, "tiers", ts);
            json_array_append_new(summary, o);
        }
    }
    json_object_set_new(j, "summary", summary);
    json_t *sims = json_array();
    for (size_t i = 0; i < rs->nsims; i++) {
        json_t *o = sim_json(&rs->sims[i]);
        json_object_set_new(o, "workload", json_string(run->workloads[rs->sims[i].workload].name));
        json_object_set_new(o, "seconds", json_real(rs->sims[i].seconds));
        json_object_set_new(o, "cpu_seconds", json_real(rs->sims[i].cpu_seconds));
        json_array_append_new(sims, o);
    }
    json_object_set_new(j, "sim", sims);
    return j;
}

static void csv_field(FILE *f, const char *s)
{
    /* RFC 4180 quoting: names are the user's. */
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') {
            fputc('"', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

int tb_results_write(const struct tb_results *rs, const char *dir)
{
    char path[1200];
    json_t *j = tb_results_json(rs);
    snprintf(path, sizeof(path), "%s/results.json", dir);
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (rc != 0) {
        fprintf(stderr, "tiercache-bench: cannot write %s\n", path);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/results.csv", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "tiercache-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "stack,workload,repeat,seconds,throughput,gets,sets,deletes,hit_ratio,errors,"
               "tier,tier_gets,tier_hits,tier_hit_ratio,tier_share,p50_ns,p90_ns,p99_ns,"
               "p999_ns\n");
    for (size_t i = 0; i < rs->ncells; i++) {
        const struct tb_cellrec *c = &rs->cells[i];
        const struct tb_result *r = &c->r;
        uint64_t reached = r->gets;
        for (int t = 0; t <= c->ntiers; t++) {
            int miss = t == c->ntiers;
            uint64_t h = miss ? r->gets - r->hits : r->tier_hits[t];
            const struct tb_lat *l = &r->lat_get[miss ? TB_MAX_TIERS : t];
            csv_field(f, rs->run->stacks[c->stack].name);
            fputc(',', f);
            csv_field(f, rs->run->workloads[c->workload].name);
            fprintf(f, ",%d,%.3f,%.0f,%llu,%llu,%llu,%.6f,%llu,", c->repeat, c->seconds,
                    tb_cell_throughput(c), (unsigned long long)r->gets, (unsigned long long)r->sets,
                    (unsigned long long)r->dels, r->gets ? (double)r->hits / (double)r->gets : 0.0,
                    (unsigned long long)r->errors);
            csv_field(f, miss ? "miss" : c->tier_names[t]);
            fprintf(f, ",%llu,%llu,%.6f,%.6f,%llu,%llu,%llu,%llu\n",
                    (unsigned long long)(miss ? r->gets - r->hits : reached), (unsigned long long)h,
                    miss ? 0.0 : (reached ? (double)h / (double)reached : 0.0),
                    r->gets ? (double)h / (double)r->gets : 0.0,
                    (unsigned long long)tb_lat_quantile(l, 0.5),
                    (unsigned long long)tb_lat_quantile(l, 0.9),
                    (unsigned long long)tb_lat_quantile(l, 0.99),
                    (unsigned long long)tb_lat_quantile(l, 0.999));
            if (!miss) {
                reached = reached > h ? reached - h : 0;
            }
        }
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "tiercache-bench: cannot write %s\n", path);
        return -1;
    }
    return 0;
}
