/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/report.h"
#include "tiers/tier.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const plots[] = {"throughput", "tier_share", "latency_cdf", "mrc"};

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median, min, max of throughput over the repeats of (stack, workload). */
static size_t stats_of(const struct tb_results *rs, size_t s, size_t w, double *med, double *mn,
                       double *mx, const struct tb_cellrec **last)
{
    double v[100];
    size_t n = 0;
    for (size_t i = 0; i < rs->ncells && n < 100; i++) {
        if (rs->cells[i].stack == s && rs->cells[i].workload == w) {
            v[n++] = tb_cell_throughput(&rs->cells[i]);
            *last = &rs->cells[i];
        }
    }
    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof(*v), cmp_d);
    *med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    *mn = v[0];
    *mx = v[n - 1];
    return n;
}

/* The merged histograms and counts of a configuration's repeats. */
static void merged(const struct tb_results *rs, size_t s, size_t w, struct tb_result *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < rs->ncells; i++) {
        if (rs->cells[i].stack == s && rs->cells[i].workload == w) {
            tb_result_merge(out, &rs->cells[i].r);
        }
    }
}

/* A configuration's throughput figures, merged counts and last cell; NULL
 * when it has no cell. */
static const struct tb_cellrec *config(const struct tb_results *rs, size_t s, size_t w,
                                       struct tb_result *m, double *med, double *mn, double *mx)
{
    const struct tb_cellrec *last = NULL;
    if (stats_of(rs, s, w, med, mn, mx, &last) == 0) {
        return NULL;
    }
    merged(rs, s, w, m);
    return last;
}

static FILE *open_in(const char *dir, const char *name)
{
    char path[1400];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        fprintf(stderr, "tiercache-bench: path too long: %s/%s\n", dir, name);
        return NULL;
    }
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "tiercache-bench: cannot write %s: %s\n", path, strerror(errno));
    }
    return f;
}

static void label(char *out, size_t len, const struct tb_run *run, size_t s, size_t w)
{
    if (run->nworkloads == 1) {
        snprintf(out, len, "%s", run->stacks[s].name);
    } else {
        snprintf(out, len, "%s/%s", run->stacks[s].name, run->workloads[w].name);
    }
    for (char *p = out; *p; p++) {
        if (*p == '"' || *p == ' ') {
            *p = '_'; /* gnuplot reads labels as quoted words */
        }
    }
}

#define MAX_CONFIGS (TB_MAX_STACKS * TB_MAX_WORKLOADS)

/* What the script needs to know of the data: the curves and their titles. */
struct plotinfo {
    int ncdf, max_tiers, nl1;
    char cdf[MAX_CONFIGS][160];  /* latency_cdf.dat index i */
    char l1[TB_MAX_STACKS][160]; /* mrc_stacks.dat index i */
};

static int write_data(const struct tb_results *rs, const char *pdir, struct plotinfo *pi)
{
    const struct tb_run *run = rs->run;
    FILE *tp = open_in(pdir, "throughput.dat"), *sh = open_in(pdir, "tier_share.dat");
    FILE *cdf = open_in(pdir, "latency_cdf.dat"), *mrc = open_in(pdir, "mrc.dat");
    FILE *l1 = open_in(pdir, "mrc_stacks.dat");
    int rc = tp && sh && cdf && mrc && l1 ? 0 : -1;
    size_t simw = rs->nsims ? rs->sims[0].workload : 0; /* the workload the curves are of */
    pi->ncdf = pi->max_tiers = pi->nl1 = 0;
    for (size_t s = 0; rc == 0 && s < run->nstacks; s++) {
        for (size_t w = 0; w < run->nworkloads; w++) {
            double med, mn, mx;
            struct tb_result m;
            const struct tb_cellrec *last = config(rs, s, w, &m, &med, &mn, &mx);
            if (last == NULL) {
                continue;
            }
            char lb[160];
            label(lb, sizeof(lb), run, s, w);
            fprintf(tp, "\"%s\" %.0f %.0f %.0f\n", lb, med, mn, mx);
            fprintf(sh, "\"%s\"", lb);
            for (int t = 0; t < TB_MAX_TIERS; t++) {
                fprintf(sh, " %.6f",
                        t < last->ntiers && m.gets ? (double)m.tier_hits[t] / (double)m.gets : 0.0);
            }
            fprintf(sh, " %.6f\n", m.gets ? (double)(m.gets - m.hits) / (double)m.gets : 0.0);
            if (last->ntiers > pi->max_tiers) {
                pi->max_tiers = last->ntiers;
            }
            struct tb_lat all = {0};
            for (int i = 0; i <= TB_MAX_TIERS; i++) {
                tb_lat_merge(&all, &m.lat_get[i]);
            }
            fprintf(cdf, "# \"%s\"\n", lb);
            uint64_t seen = 0;
            for (size_t b = 0; b < TB_LAT_NB && all.count; b++) {
                if (all.b[b] == 0) {
                    continue;
                }
                seen += all.b[b];
                fprintf(cdf, "%.3f %.6f\n", (double)tb_lat_bucket_ns(b) / 1000.0,
                        (double)seen / (double)all.count);
            }
            fprintf(cdf, "\n\n");
            snprintf(pi->cdf[pi->ncdf++], 160, "%s", lb);
            /* The stack's L1 as a point on the miss-ratio curve of its workload. */
            uint64_t l1size = run->stacks[s].ntiers ? tb_shm_uri_size(run->stacks[s].tiers[0]) : 0;
            if (l1size > 0 && m.gets > 0 && w == simw) {
                fprintf(l1, "%.3f %.6f\n\n\n", (double)l1size / 1048576.0,
                        1.0 - (double)m.tier_hits[0] / (double)m.gets);
                snprintf(pi->l1[pi->nl1++], 160, "L1 of %.150s", lb);
            }
        }
    }
    /* Simulator curves of the first workload that has them: lru, then fifo. */
    for (int p = 0; rc == 0 && p < 2; p++) {
        fprintf(mrc, "# %s\n", tb_sim_policy_name((enum tb_sim_policy)p));
        for (size_t i = 0; i < rs->nsims; i++) {
            const struct tb_simrec *x = &rs->sims[i];
            if ((int)x->policy == p && x->workload == simw) {
                fprintf(mrc, "%.3f %.6f\n", (double)x->size / 1048576.0,
                        x->r.requests ? (double)x->r.misses / (double)x->r.requests : 0.0);
            }
        }
        fprintf(mrc, "\n\n");
    }
    FILE *fs[] = {tp, sh, cdf, mrc, l1};
    for (size_t i = 0; i < 5; i++) {
        if (fs[i] != NULL && fclose(fs[i]) != 0) {
            rc = -1;
        }
    }
    return rc;
}

static int write_script(const struct tb_results *rs, const char *pdir, const struct plotinfo *pi)
{
    FILE *f = open_in(pdir, "plots.gp");
    if (f == NULL) {
        return -1;
    }
    /* Sims sorted by size so the curves draw left to right. */
    fprintf(f, "# Drawn by tiercache-bench; run `gnuplot plots.gp` here to redraw.\n"
               "set datafile separator whitespace\n"
               "set grid ytics\n"
               "set key outside right top\n"
               "do for [fmt in \"svg png\"] {\n"
               "  if (fmt eq \"svg\") { set terminal svg size 900,500 dynamic noenhanced } "
               "else { set terminal pngcairo size 900,500 noenhanced }\n"
               "  set output \"throughput.\".fmt\n"
               "  set title \"Throughput per configuration (median; bars: min-max of repeats)\"\n"
               "  set ylabel \"requests/s\"\n"
               "  set style data histogram\n"
               "  set style histogram errorbars gap 1 lw 1\n"
               "  set style fill solid 0.6 border -1\n"
               "  set xtics rotate by -30\n"
               "  set logscale y\n"
               "  set yrange [*:*]\n"
               "  plot \"throughput.dat\" using 2:3:4:xtic(1) title \"requests/s (log scale)\"\n"
               "  unset logscale y\n"
               "  set output \"tier_share.\".fmt\n"
               "  set title \"Share of gets served by each tier\"\n"
               "  set ylabel \"fraction of gets\"\n"
               "  set style histogram rowstacked\n"
               "  set yrange [0:1]\n"
               "  plot ");
    for (int t = 0; t < pi->max_tiers; t++) {
        fprintf(f, "\"tier_share.dat\" using %d%s title \"L%d\", ", t + 2, t == 0 ? ":xtic(1)" : "",
                t + 1);
    }
    fprintf(f, "\"tier_share.dat\" using %d%s title \"miss\"\n", TB_MAX_TIERS + 2,
            pi->max_tiers == 0 ? ":xtic(1)" : "");
    fprintf(f, "  set output \"latency_cdf.\".fmt\n"
               "  set title \"Get latency CDF (all repeats)\"\n"
               "  set style data lines\n"
               "  set xtics norotate\n"
               "  set logscale x\n"
               "  set xlabel \"latency (us)\"\n"
               "  set ylabel \"fraction of gets\"\n"
               "  set yrange [0:1]\n"
               "  plot ");
    for (int i = 0; i < pi->ncdf; i++) {
        fprintf(f, "%s\"latency_cdf.dat\" index %d using 1:2 with steps title \"%s\"",
                i ? ", " : "", i, pi->cdf[i]);
    }
    if (pi->ncdf == 0) {
        fprintf(f, "NaN title \"no gets\"");
    }
    fprintf(f, "\n  unset logscale x\n"
               "  set output \"mrc.\".fmt\n"
               "  set title \"Miss ratio by cache size: exact LRU and FIFO, and each stack's L1\"\n"
               "  set xlabel \"cache size (MiB)\"\n"
               "  set ylabel \"miss ratio\"\n"
               "  set yrange [0:1]\n"
               "  set xrange [0:*]\n"
               "  set key inside right top\n"
               "  plot \"mrc.dat\" index 0 using 1:2 with linespoints title \"LRU\", "
               "\"mrc.dat\" index 1 using 1:2 with linespoints title \"FIFO\"");
    /* One point per stack, each in the key (their L1 sizes often coincide). */
    for (int i = 0; rs->nsims && i < pi->nl1; i++) {
        fprintf(f, ", \"mrc_stacks.dat\" index %d using 1:2 with points pt %d ps 1.5 title \"%s\"",
                i, 4 + i % 10, pi->l1[i]);
    }
    fprintf(f, "\n  unset xrange\n"
               "  set key outside right top\n"
               "  unset xlabel\n"
               "}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* Runs gnuplot in @p pdir; its chatter goes to plots/gnuplot.log. */
static int run_gnuplot(const char *pdir)
{
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        if (chdir(pdir) != 0) {
            _exit(127);
        }
        FILE *log = freopen("gnuplot.log", "w", stderr);
        (void)log;
        execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void fmt_ns(char *out, size_t len, uint64_t ns)
{
    if (ns < 10000) {
        snprintf(out, len, "%llu ns", (unsigned long long)ns);
    } else if (ns < 10000000) {
        snprintf(out, len, "%.1f us", (double)ns / 1e3);
    } else {
        snprintf(out, len, "%.1f ms", (double)ns / 1e6);
    }
}

int tb_report_write(const struct tb_results *rs, const char *dir)
{
    const struct tb_run *run = rs->run;
    char pdir[1200];
    static struct plotinfo pi;
    snprintf(pdir, sizeof(pdir), "%s/plots", dir);
    if (mkdir(pdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "tiercache-bench: cannot make %s: %s\n", pdir, strerror(errno));
        return -1;
    }
    int plots_ok = write_data(rs, pdir, &pi) == 0 && write_script(rs, pdir, &pi) == 0 &&
                   run_gnuplot(pdir) == 0;
    if (!plots_ok) {
        fprintf(stderr, "tiercache-bench: gnuplot failed (is it installed?); see %s/gnuplot.log\n",
                pdir);
    }
    FILE *f = open_in(dir, "report.md");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "# tiercache-bench report\n\n");
    fprintf(f,
            "Command: `%s` (tiercache %s). Each configuration ran %d time%s; figures are the "
            "median, with min-max where it matters.\n\n",
            rs->command, TC_VERSION, run->repeat, run->repeat > 1 ? "s" : "");
    fprintf(f, "## Stacks\n\n| stack | tiers |\n|---|---|\n");
    for (size_t s = 0; s < run->nstacks; s++) {
        fprintf(f, "| %s | ", run->stacks[s].name);
        if (run->stacks[s].url[0]) {
            fprintf(f, "HTTP %s (%d connections x %d pipelined per thread)", run->stacks[s].url,
                    run->stacks[s].connections, run->stacks[s].pipeline);
        }
        for (int t = 0; t < run->stacks[s].ntiers; t++) {
            char red[TB_URI_MAX];
            fprintf(f, "%s`%s`", t ? " → " : "",
                    tc_tier_uri_redact(run->stacks[s].tiers[t], red, sizeof(red)));
        }
        fprintf(f, " |\n");
    }
    fprintf(f, "\n## Workloads\n\n| workload | requests | loop | duration |\n|---|---|---|---|\n");
    for (size_t w = 0; w < run->nworkloads; w++) {
        const struct tb_workload *wl = &run->workloads[w];
        fprintf(f, "| %s | ", wl->name);
        if (wl->trace[0]) {
            fprintf(f, "trace `%s` (%s)", wl->trace,
                    wl->trace_format == TB_TRACE_ORACLE ? "oracleGeneral" : "CSV");
        } else {
            fprintf(f, "%llu keys, %s", (unsigned long long)wl->keys,
                    wl->pop == TB_POP_ZIPF     ? "Zipf"
                    : wl->pop == TB_POP_HOTSET ? "hot set"
                                               : "uniform");
            if (wl->pop == TB_POP_ZIPF) {
                fprintf(f, " %.2f", wl->zipf);
            }
            fprintf(f, ", %.0f%% get / %.0f%% set / %.0f%% delete", wl->get * 100, wl->set * 100,
                    wl->del * 100);
        }
        fprintf(f, "%s%s | ", wl->cache_aside ? ", cache-aside" : "",
                wl->prefill ? ", prefilled" : "");
        if (wl->rate > 0) {
            fprintf(f, "open, %.0f req/s", wl->rate);
        } else {
            fprintf(f, "closed, %d proc x %d thr x %d in flight", wl->processes, wl->threads,
                    wl->inflight);
        }
        fprintf(f, " | %.1f s warm-up + %.1f s |\n", wl->warmup, wl->seconds);
    }
    fprintf(f, "\n## Throughput and tiers\n\n"
               "| stack | workload | requests/s (median) | min | max | hit ratio |");
    for (int t = 0; t < pi.max_tiers; t++) {
        fprintf(f, " L%d share |", t + 1);
    }
    fprintf(f, " errors |\n|---|---|---|---|---|---|");
    for (int t = 0; t < pi.max_tiers; t++) {
        fprintf(f, "---|");
    }
    fprintf(f, "---|\n");
    for (size_t s = 0; s < run->nstacks; s++) {
        for (size_t w = 0; w < run->nworkloads; w++) {
            double med, mn, mx;
            struct tb_result m;
            const struct tb_cellrec *last = config(rs, s, w, &m, &med, &mn, &mx);
            if (last == NULL) {
                continue;
            }
            fprintf(f, "| %s | %s | %.0f | %.0f | %.0f | %.4f |", run->stacks[s].name,
                    run->workloads[w].name, med, mn, mx,
                    m.gets ? (double)m.hits / (double)m.gets : 0.0);
            for (int t = 0; t < pi.max_tiers; t++) {
                if (t < last->ntiers) {
                    fprintf(f, " %s %.4f |", last->tier_names[t],
                            m.gets ? (double)m.tier_hits[t] / (double)m.gets : 0.0);
                } else {
                    fprintf(f, " |");
                }
            }
            fprintf(f, " %llu |\n", (unsigned long long)m.errors);
        }
    }
    fprintf(f, "\n## Latency (all repeats)\n\n"
               "| stack | workload | op | answered by | count | p50 | p90 | p99 | p99.9 |\n"
               "|---|---|---|---|---|---|---|---|---|\n");
    for (size_t s = 0; s < run->nstacks; s++) {
        for (size_t w = 0; w < run->nworkloads; w++) {
            double med, mn, mx;
            struct tb_result m;
            const struct tb_cellrec *last = config(rs, s, w, &m, &med, &mn, &mx);
            if (last == NULL) {
                continue;
            }
            for (int t = 0; t <= last->ntiers + 2; t++) {
                const struct tb_lat *h;
                const char *op = "get", *by;
                if (t < last->ntiers) {
                    h = &m.lat_get[t];
                    by = last->tier_names[t];
                } else if (t == last->ntiers) {
                    h = &m.lat_get[TB_MAX_TIERS];
                    by = "miss";
                } else {
                    h = t == last->ntiers + 1 ? &m.lat_set : &m.lat_del;
                    op = t == last->ntiers + 1 ? "set" : "delete";
                    by = "all tiers";
                }
                if (h->count == 0) {
                    continue;
                }
                char q[4][32];
                double qs[] = {0.5, 0.9, 0.99, 0.999};
                for (int k = 0; k < 4; k++) {
                    fmt_ns(q[k], sizeof(q[k]), tb_lat_quantile(h, qs[k]));
                }
                fprintf(f, "| %s | %s | %s | %s | %llu | %s | %s | %s | %s |\n",
                        run->stacks[s].name, run->workloads[w].name, op, by,
                        (unsigned long long)h->count, q[0], q[1], q[2], q[3]);
            }
        }
    }
    if (rs->nsims > 0) {
        fprintf(f, "\n## Reference simulators (exact, byte capacity, libCacheSim semantics)\n\n"
                   "| workload | policy | size | requests | misses | miss ratio | miss bytes |\n"
                   "|---|---|---|---|---|---|---|\n");
        for (size_t i = 0; i < rs->nsims; i++) {
            const struct tb_simrec *x = &rs->sims[i];
            fprintf(f, "| %s | %s | %.1f MiB | %llu | %llu | %.4f | %llu |\n",
                    run->workloads[x->workload].name, tb_sim_policy_name(x->policy),
                    (double)x->size / 1048576.0, (unsigned long long)x->r.requests,
                    (unsigned long long)x->r.misses,
                    x->r.requests ? (double)x->r.misses / (double)x->r.requests : 0.0,
                    (unsigned long long)x->r.miss_bytes);
        }
    }
    fprintf(f, "\n## Machine load (1/5/15 min) before and after each cell\n\n"
               "| stack | workload | repeat | before | after |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < rs->ncells; i++) {
        const struct tb_cellrec *c = &rs->cells[i];
        fprintf(f, "| %s | %s | %d | %.2f %.2f %.2f | %.2f %.2f %.2f |\n",
                run->stacks[c->stack].name, run->workloads[c->workload].name, c->repeat,
                c->load_before[0], c->load_before[1], c->load_before[2], c->load_after[0],
                c->load_after[1], c->load_after[2]);
    }
    fprintf(f, "\n## Plots\n\n");
    if (!plots_ok) {
        fprintf(f, "gnuplot failed; the data and script are in plots/ (see plots/gnuplot.log).\n");
    }
    for (size_t i = 0; i < sizeof(plots) / sizeof(plots[0]); i++) {
        fprintf(f, "![%s](plots/%s.svg)\n\n", plots[i], plots[i]);
    }
    fprintf(f, "PNG versions: ");
    for (size_t i = 0; i < sizeof(plots) / sizeof(plots[0]); i++) {
        fprintf(f, "%s[%s.png](plots/%s.png)", i ? ", " : "", plots[i], plots[i]);
    }
    fprintf(f, ".\n");
    int rc = fclose(f) == 0 && plots_ok ? 0 : -1;
    return rc;
}
