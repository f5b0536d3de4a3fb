/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache-bench: choose a tier configuration for a workload. Runs a matrix
 * of stacks (tier URIs in process, or a server over HTTP) x workloads
 * (synthetic or replayed traces), each cell `repeat` times, and writes named
 * results (results.json, results.csv) and report.md with plots; replays
 * traces through exact LRU and FIFO simulators as references.
 *
 *   tiercache-bench run FILE [--out DIR] [--keep]
 *   tiercache-bench --tier URI... [workload flags] [--json] [--out DIR]
 *   tiercache-bench --trace PATH --trace-format oraclegeneral --sim lru,fifo --sim-size 128M
 *
 * Modules: spec (run file), workload (generators), trace (readers), sim
 * (reference caches), driver (processes, phases), engine (tiers in
 * process), httpc (over HTTP), results and report (outputs), cleanup (what a
 * cell leaves behind).
 */
#define _GNU_SOURCE /* getopt_long */
#include "bench/cleanup.h"
#include "bench/driver.h"
#include "bench/httpc.h"
#include "bench/report.h"
#include "bench/results.h"
#include "bench/sim.h"
#include "bench/spec.h"
#include "bench/trace.h"
#include "tiers/parse.h"
#include "tiers/tier.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The SIGINT flag (STYLE R10: the one global a signal handler needs). */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

struct cli {
    int run_mode; /* `run FILE` */
    const char *file;
    const char *out;
    int json, keep, lru_sim, quiet;
    unsigned sim_policies;
    int have_sim_sizes;
};

static void usage(FILE *f)
{
    fprintf(
        f, "Usage: tiercache-bench run FILE [--out DIR] [--keep] [--quiet]\n"
           "       tiercache-bench --tier URI [--tier URI ...] [options]\n"
           "       tiercache-bench --url http://HOST:PORT [options]\n"
           "       tiercache-bench --trace PATH --trace-format F --sim lru,fifo --sim-size S,...\n"
           "\n"
           "Runs workloads against tier stacks and writes named results; `run FILE` runs\n"
           "the matrix of a JSON run file (docs/benchmarks.md lists its fields).\n"
           "\n"
           "Stack:\n"
           "  --tier URI          a tier, fastest first (shm://, lmdb://, redis://, ref-mutex://)\n"
           "  --batch N           gets handed to the first tier N at a time (tc_tier_get_many)\n"
           "  --url URL           a running tiercache server instead (HTTP)\n"
           "  --connections N     HTTP keep-alive connections per thread (default 4)\n"
           "  --pipeline N        HTTP requests in flight per connection (default 1)\n"
           "  --token T, --token-file F   sent as Authorization: Bearer\n"
           "Workload:\n"
           "  --keys N            keyspace (default 100000)\n"
           "  --zipf S            Zipf popularity with exponent S (0: uniform, the default)\n"
           "  --hotset K,O        fraction K of the keys gets fraction O of the requests\n"
           "  --key-size D        key bytes: 40 | 16-64 | 16:3,64:1 (default: \"key:<id>\")\n"
           "  --value-size D      value bytes, same forms (default 100)\n"
           "  --ttl D             TTL of writes in seconds, same forms (default 3600)\n"
           "  --read-ratio R      fraction of gets, the rest sets (default 0.9)\n"
           "  --mix G,S,D         get, set, delete weights (e.g. 0.8,0.1,0.1)\n"
           "  --prefill           write the keyspace before timing\n"
           "  --no-cache-aside    a missed get is not followed by a set\n"
           "  --warmup S          seconds run before timing, not counted (default 0)\n"
           "  --seconds S         timed seconds (default 5)\n"
           "  --threads T         threads per process (default 1)\n"
           "  --processes P       processes (default 1)\n"
           "  --inflight N        requests in flight per thread (default 1)\n"
           "  --rate R            open loop at R requests/s in all; latency from the intended\n"
           "                      send time (default: closed loop)\n"
           "  --seed N            random seed (default 1)\n"
           "Traces:\n"
           "  --trace PATH        replay a trace (.zst read through libzstd)\n"
           "  --trace-format F    oraclegeneral | csv\n"
           "  --csv-columns C     e.g. time=1,key=2,key_size=3,size=4,op=6,ttl=7 (Twitter)\n"
           "  --csv-header        the CSV's first line is a header\n"
           "  --trace-limit N     read at most N records\n"
           "Simulators:\n"
           "  --sim P             lru, fifo or lru,fifo: replay through exact simulators\n"
           "  --sim-size S,...    their byte capacities (default: the shm tier's size)\n"
           "  --sim-requests N    synthetic: requests simulated (default 1000000)\n"
           "  --lru-sim           --sim lru at the first tier's size\n"
           "Output:\n"
           "  --json              print the results as one JSON object\n"
           "  --out DIR           also write results.json, results.csv, report.md, plots/\n"
           "  --repeat N          run N times (min/median/max)\n"
           "  --keep              keep the shm segments, LMDB dirs and Redis keys it made\n"
           "  --quiet             no progress line (it is only shown on a terminal anyway)\n"
           "  --version, -h/--help\n");
}

static int bad(const char *flag, const char *v)
{
    fprintf(stderr, "tiercache-bench: bad value '%s' for --%s (see --help)\n", v, flag);
    return -1;
}

static int num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(d >= lo && d <= hi)) {
        return -1;
    }
    *out = d;
    return 0;
}

static int csv_columns(const char *s, struct tb_csv_cols *c)
{
    char buf[256];
    if (strlen(s) >= sizeof(buf)) {
        return -1;
    }
    strcpy(buf, s);
    struct tb_csv_cols n = {.sep = c->sep, .header = c->header};
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        double v;
        if (eq == NULL || num(eq + 1, 1, 64, &v) != 0) {
            return -1;
        }
        *eq = '\0';
        int *f = strcmp(t, "time") == 0       ? &n.time
                 : strcmp(t, "key") == 0      ? &n.key
                 : strcmp(t, "key_size") == 0 ? &n.key_size
                 : strcmp(t, "size") == 0     ? &n.size
                 : strcmp(t, "op") == 0       ? &n.op
                 : strcmp(t, "ttl") == 0      ? &n.ttl
                                              : NULL;
        if (f == NULL) {
            return -1;
        }
        *f = (int)v;
    }
    if (n.key == 0) {
        return -1;
    }
    *c = n;
    return 0;
}

static int parse_flags(int argc, char **argv, struct cli *cli, struct tb_run *run)
{
    enum {
        O_TIER = 256,
        O_BATCH,
        O_URL,
        O_CONN,
        O_PIPE,
        O_TOKEN,
        O_TOKENF,
        O_KEYS,
        O_ZIPF,
        O_HOTSET,
        O_KSIZE,
        O_VSIZE,
        O_TTL,
        O_READ,
        O_MIX,
        O_PREFILL,
        O_NOCA,
        O_WARMUP,
        O_SECONDS,
        O_THREADS,
        O_PROCS,
        O_INFLIGHT,
        O_RATE,
        O_SEED,
        O_TRACE,
        O_TFORMAT,
        O_CSVCOLS,
        O_CSVHDR,
        O_TLIMIT,
        O_SIM,
        O_SIMSIZE,
        O_SIMREQ,
        O_LRUSIM,
        O_JSON,
        O_OUT,
        O_REPEAT,
        O_KEEP,
        O_QUIET,
        O_VERSION
    };
    static const struct option lo[] = {
        {"tier", required_argument, NULL, O_TIER},
        {"batch", required_argument, NULL, O_BATCH},
        {"url", required_argument, NULL, O_URL},
        {"connections", required_argument, NULL, O_CONN},
        {"pipeline", required_argument, NULL, O_PIPE},
        {"token", required_argument, NULL, O_TOKEN},
        {"token-file", required_argument, NULL, O_TOKENF},
        {"keys", required_argument, NULL, O_KEYS},
        {"zipf", required_argument, NULL, O_ZIPF},
        {"hotset", required_argument, NULL, O_HOTSET},
        {"key-size", required_argument, NULL, O_KSIZE},
        {"value-size", required_argument, NULL, O_VSIZE},
        {"ttl", required_argument, NULL, O_TTL},
        {"read-ratio", required_argument, NULL, O_READ},
        {"mix", required_argument, NULL, O_MIX},
        {"prefill", no_argument, NULL, O_PREFILL},
        {"no-cache-aside", no_argument, NULL, O_NOCA},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"seconds", required_argument, NULL, O_SECONDS},
        {"threads", required_argument, NULL, O_THREADS},
        {"processes", required_argument, NULL, O_PROCS},
        {"inflight", required_argument, NULL, O_INFLIGHT},
        {"rate", required_argument, NULL, O_RATE},
        {"seed", required_argument, NULL, O_SEED},
        {"trace", required_argument, NULL, O_TRACE},
        {"trace-format", required_argument, NULL, O_TFORMAT},
        {"csv-columns", required_argument, NULL, O_CSVCOLS},
        {"csv-header", no_argument, NULL, O_CSVHDR},
        {"trace-limit", required_argument, NULL, O_TLIMIT},
        {"sim", required_argument, NULL, O_SIM},
        {"sim-size", required_argument, NULL, O_SIMSIZE},
        {"sim-requests", required_argument, NULL, O_SIMREQ},
        {"lru-sim", no_argument, NULL, O_LRUSIM},
        {"json", no_argument, NULL, O_JSON},
        {"out", required_argument, NULL, O_OUT},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"keep", no_argument, NULL, O_KEEP},
        {"quiet", no_argument, NULL, O_QUIET},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct tb_stack *s = &run->stacks[0];
    struct tb_workload *w = &run->workloads[0];
    int opt;
    double d;
    char err[1200];
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        const char *name = "?";
        for (const struct option *o = lo; o->name; o++) {
            if (o->val == opt) {
                name = o->name;
            }
        }
        switch (opt) {
        case O_TIER:
            if (s->ntiers == TB_MAX_TIERS || strlen(optarg) >= TB_URI_MAX) {
                fprintf(stderr, "tiercache-bench: at most %d tiers\n", TB_MAX_TIERS);
                return -1;
            }
            strcpy(s->tiers[s->ntiers++], optarg);
            break;
        case O_BATCH:
            if (num(optarg, 1, 64, &d) != 0) {
                return bad(name, optarg);
            }
            s->batch = (int)d;
            break;
        case O_URL:
            if (strncmp(optarg, "http://", 7) != 0 || strlen(optarg) >= sizeof(s->url)) {
                return bad(name, optarg);
            }
            strcpy(s->url, optarg);
            break;
        case O_CONN:
        case O_PIPE:
            if (num(optarg, 1, 1024, &d) != 0) {
                return bad(name, optarg);
            }
            *(opt == O_CONN ? &s->connections : &s->pipeline) = (int)d;
            break;
        case O_TOKEN:
            if (*optarg == '\0' || strlen(optarg) >= sizeof(s->token)) {
                return bad(name, "(the token)");
            }
            strcpy(s->token, optarg);
            break;
        case O_TOKENF:
            if (tb_token_read(optarg, s->token, sizeof(s->token), err, sizeof(err)) != 0) {
                fprintf(stderr, "tiercache-bench: %s\n", err);
                return -1;
            }
            break;
        case O_KEYS:
            if (tc_parse_size(optarg, &w->keys) != TC_OK || w->keys == 0 ||
                w->keys > (1ull << 40)) {
                return bad(name, optarg);
            }
            break;
        case O_ZIPF:
            if (num(optarg, 0, 10, &w->zipf) != 0) {
                return bad(name, optarg);
            }
            w->pop = w->zipf > 0 ? TB_POP_ZIPF : TB_POP_UNIFORM;
            break;
        case O_HOTSET: {
            char *c = strchr(optarg, ',');
            if (c == NULL) {
                return bad(name, optarg);
            }
            *c = '\0';
            if (num(optarg, 1e-9, 1, &w->hot_keys) != 0 || num(c + 1, 0, 1, &w->hot_ops) != 0) {
                *c = ',';
                return bad(name, optarg);
            }
            *c = ',';
            w->pop = TB_POP_HOTSET;
            break;
        }
        case O_KSIZE:
            if (tb_dist_parse(optarg, 1, &w->key_size) != 0 || tb_dist_max(&w->key_size) > 250) {
                return bad(name, optarg);
            }
            break;
        case O_VSIZE:
            if (tb_dist_parse(optarg, 1, &w->value_size) != 0 ||
                tb_dist_max(&w->value_size) > (256u << 20)) {
                return bad(name, optarg);
            }
            break;
        case O_TTL:
            if (tb_dist_parse(optarg, 0, &w->ttl) != 0 || tb_dist_max(&w->ttl) > 100000000) {
                return bad(name, optarg);
            }
            break;
        case O_READ:
            if (num(optarg, 0, 1, &d) != 0) {
                return bad(name, optarg);
            }
            w->get = d;
            w->set = 1 - d;
            w->del = 0;
            break;
        case O_MIX: {
            double g, st, dl;
            char extra;
            if (sscanf(optarg, "%lf,%lf,%lf%c", &g, &st, &dl, &extra) != 3 || g < 0 || st < 0 ||
                dl < 0 || !(g + st + dl > 0)) {
                return bad(name, optarg);
            }
            w->get = g / (g + st + dl);
            w->set = st / (g + st + dl);
            w->del = dl / (g + st + dl);
            break;
        }
        case O_PREFILL:
            w->prefill = 1;
            break;
        case O_NOCA:
            w->cache_aside = 0;
            break;
        case O_WARMUP:
            if (num(optarg, 0, 3600, &w->warmup) != 0) {
                return bad(name, optarg);
            }
            break;
        case O_SECONDS:
            if (num(optarg, 0.01, 86400, &w->seconds) != 0) {
                return bad(name, optarg);
            }
            break;
        case O_THREADS:
        case O_PROCS:
            if (num(optarg, 1, 64, &d) != 0) {
                return bad(name, optarg);
            }
            *(opt == O_THREADS ? &w->threads : &w->processes) = (int)d;
            break;
        case O_INFLIGHT:
            if (num(optarg, 1, 4096, &d) != 0) {
                return bad(name, optarg);
            }
            w->inflight = (int)d;
            break;
        case O_RATE:
            if (num(optarg, 0, 1e9, &w->rate) != 0) {
                return bad(name, optarg);
            }
            break;
        case O_SEED:
            if (num(optarg, 0, 1e18, &d) != 0) {
                return bad(name, optarg);
            }
            w->seed = (uint64_t)d;
            break;
        case O_TRACE:
            if (strlen(optarg) >= sizeof(w->trace)) {
                return bad(name, optarg);
            }
            strcpy(w->trace, optarg);
            break;
        case O_TFORMAT:
            w->trace_format = tb_trace_format_parse(optarg);
            if (w->trace_format == TB_TRACE_NONE) {
                return bad(name, optarg);
            }
            break;
        case O_CSVCOLS:
            if (csv_columns(optarg, &w->csv) != 0) {
                return bad(name, optarg);
            }
            break;
        case O_CSVHDR:
            w->csv.header = 1;
            break;
        case O_TLIMIT:
            if (tc_parse_size(optarg, &w->trace_limit) != TC_OK) {
                return bad(name, optarg);
            }
            break;
        case O_SIM: {
            char buf[64];
            snprintf(buf, sizeof(buf), "%s", optarg);
            cli->sim_policies = 0;
            for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
                if (strcmp(t, "lru") == 0) {
                    cli->sim_policies |= TB_SIM_POLICY_LRU;
                } else if (strcmp(t, "fifo") == 0) {
                    cli->sim_policies |= TB_SIM_POLICY_FIFO;
                } else {
                    return bad(name, optarg);
                }
            }
            break;
        }
        case O_SIMSIZE: {
            char buf[1024];
            snprintf(buf, sizeof(buf), "%s", optarg);
            w->nsim_sizes = 0;
            for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
                if (w->nsim_sizes == TB_SIM_SIZES_MAX ||
                    tc_parse_size(t, &w->sim_sizes[w->nsim_sizes]) != TC_OK ||
                    w->sim_sizes[w->nsim_sizes] == 0) {
                    return bad(name, optarg);
                }
                w->nsim_sizes++;
            }
            cli->have_sim_sizes = 1;
            break;
        }
        case O_SIMREQ:
            if (tc_parse_size(optarg, &w->sim_requests) != TC_OK || w->sim_requests == 0 ||
                w->sim_requests > (1ull << 32)) {
                return bad(name, optarg);
            }
            break;
        case O_LRUSIM:
            cli->lru_sim = 1;
            cli->sim_policies |= TB_SIM_POLICY_LRU;
            break;
        case O_JSON:
            cli->json = 1;
            break;
        case O_OUT:
            cli->out = optarg;
            break;
        case O_REPEAT:
            if (num(optarg, 1, 100, &d) != 0) {
                return bad(name, optarg);
            }
            run->repeat = (int)d;
            break;
        case O_KEEP:
            cli->keep = 1;
            break;
        case O_QUIET:
            cli->quiet = 1;
            break;
        case O_VERSION:
            printf("tiercache-bench %s\n", TC_VERSION);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

/* Tier names: the scheme, numbered when a stack has two of a kind. */
static void tier_names(const struct tb_stack *s, char names[][32], int *n)
{
    if (s->url[0]) {
        static const char *const l[] = {"l1", "l2", "l3"};
        for (int i = 0; i < TB_HTTP_TIERS; i++) {
            snprintf(names[i], 32, "%s", l[i]);
        }
        *n = TB_HTTP_TIERS;
        return;
    }
    for (int i = 0; i < s->ntiers; i++) {
        size_t k = strcspn(s->tiers[i], ":");
        snprintf(names[i], 32, "%.*s", (int)(k < 24 ? k : 24), s->tiers[i]);
        int dup = 1;
        for (int j = 0; j < i; j++) {
            dup += strncmp(names[j], names[i], k) == 0;
        }
        if (dup > 1) {
            size_t l = strlen(names[i]);
            snprintf(names[i] + l, 32 - l, "-%d", dup);
        }
    }
    *n = s->ntiers;
}

/* Runs the simulators of workload @p wi over its stream; the sizes are its
 * own plus each stack's shm L1 size (the same byte budget). */
static int run_sims(struct tb_results *rs, size_t wi, const struct tb_req *trace, size_t ntrace,
                    unsigned policies)
{
    const struct tb_run *run = rs->run;
    const struct tb_workload *w = &run->workloads[wi];
    uint64_t sizes[TB_SIM_SIZES_MAX + TB_MAX_STACKS];
    size_t ns = 0;
    for (size_t i = 0; i < w->nsim_sizes; i++) {
        sizes[ns++] = w->sim_sizes[i];
    }
    for (size_t s = 0; s < run->nstacks; s++) {
        uint64_t l1 = run->stacks[s].ntiers ? tb_shm_uri_size(run->stacks[s].tiers[0]) : 0;
        int have = 0;
        for (size_t i = 0; i < ns; i++) {
            have |= sizes[i] == l1;
        }
        if (l1 && !have) {
            sizes[ns++] = l1;
        }
    }
    if (policies == 0 || ns == 0) {
        return 0;
    }
    /* Sorted, so the curve reads left to right. */
    for (size_t i = 1; i < ns; i++) {
        for (size_t j = i; j > 0 && sizes[j - 1] > sizes[j]; j--) {
            uint64_t t = sizes[j];
            sizes[j] = sizes[j - 1];
            sizes[j - 1] = t;
        }
    }
    struct tb_req *own = NULL;
    const struct tb_req *reqs = trace;
    size_t n = ntrace;
    if (trace == NULL) {
        /* Worker 0's stream: the same seed, replayed cyclically as it is. */
        struct tb_gen *g = tb_gen_create(w);
        n = w->sim_requests;
        own = malloc(n * sizeof(*own));
        if (g == NULL || own == NULL) {
            tb_gen_destroy(g);
            free(own);
            fprintf(stderr, "tiercache-bench: out of memory for the simulators\n");
            return -1;
        }
        size_t first = n < TB_STREAM_LEN ? n : TB_STREAM_LEN;
        tb_gen_fill(g, w->seed, own, first);
        for (size_t i = first; i < n; i++) {
            own[i] = own[i % TB_STREAM_LEN];
        }
        tb_gen_destroy(g);
        reqs = own;
    }
    for (int p = 0; p < 2; p++) {
        if (!(policies & (1u << p))) {
            continue;
        }
        for (size_t i = 0; i < ns && !g_stop; i++) {
            struct tb_simrec *x = &rs->sims[rs->nsims];
            if (rs->nsims == sizeof(rs->sims) / sizeof(rs->sims[0])) {
                break;
            }
            x->workload = wi;
            x->policy = (enum tb_sim_policy)p;
            x->size = sizes[i];
            struct timespec c0, c1;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
            uint64_t t0 = tc_clock_ns();
            if (tb_sim_run(x->policy, x->size, reqs, n, &x->r) != 0) {
                fprintf(stderr, "tiercache-bench: out of memory in the simulator\n");
                free(own);
                return -1;
            }
            x->seconds = (double)(tc_clock_ns() - t0) / 1e9;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
            /* CPU time too: on a shared machine wall time counts the waits. */
            x->cpu_seconds =
                (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
            rs->nsims++;
        }
    }
    free(own);
    return 0;
}

static int add_cell(struct tb_results *rs, struct tb_cellrec **out)
{
    if (rs->ncells == rs->cap_cells) {
        size_t nc = rs->cap_cells ? rs->cap_cells * 2 : 8;
        struct tb_cellrec *c = realloc(rs->cells, nc * sizeof(*c));
        if (c == NULL) {
            return -1;
        }
        rs->cells = c;
        rs->cap_cells = nc;
    }
    *out = &rs->cells[rs->ncells];
    memset(*out, 0, sizeof(**out));
    return 0;
}

/* Runs one cell; 0, or -1 on a failure that should end the run. */
static int run_cell(struct tb_results *rs, size_t si, size_t wi, int rep, int cellno,
                    const struct tb_req *trace, size_t ntrace, const struct cli *cli, int fixed)
{
    const struct tb_run *run = rs->run;
    const struct tb_stack *s = &run->stacks[si];
    struct tb_cellrec *rec;
    struct tb_leftovers *lo = calloc(1, sizeof(*lo));
    static char uris[TB_MAX_TIERS][TB_URI_MAX];
    char tag[64], prefix[80], err[1024] = "";
    int rc = 0;
    if (lo == NULL || add_cell(rs, &rec) != 0) {
        free(lo);
        fprintf(stderr, "tiercache-bench: out of memory\n");
        return -1;
    }
    snprintf(tag, sizeof(tag), "tb%ld-%d", (long)getpid(), cellno);
    snprintf(prefix, sizeof(prefix), "%s:", tag);
    struct tb_cell c = {.stack = s,
                        .wl = &run->workloads[wi],
                        .ntiers = s->ntiers,
                        .trace = trace,
                        .ntrace = ntrace,
                        .key_prefix = prefix};
    rec->stack = si;
    rec->workload = wi;
    rec->repeat = rep;
    tier_names(s, rec->tier_names, &rec->ntiers);
    for (int i = 0; i < s->ntiers; i++) {
        if (tb_cleanup_tag_uri(s->tiers[i], tag, fixed ? tag : NULL, uris[i], TB_URI_MAX, lo) !=
            0) {
            fprintf(stderr, "tiercache-bench: stack %s: tier URI too long\n", s->name);
            free(lo);
            rs->ncells++;
            return -1;
        }
        c.uris[i] = uris[i];
        c.tier_names[i] = rec->tier_names[i];
        tc_tier_uri_redact(uris[i], rec->tier_uris[i], sizeof(rec->tier_uris[i]));
    }
    if (s->url[0]) {
        snprintf(rec->tier_uris[0], sizeof(rec->tier_uris[0]), "%s", s->url);
    }
    tb_loadavg(rec->load_before);
    int progress = !cli->quiet && !cli->json && isatty(STDERR_FILENO);
    if (tb_driver_run(&c, &g_stop, progress, &rec->r, &rec->seconds, rec->tstats, err,
                      sizeof(err)) != 0) {
        fprintf(stderr, "tiercache-bench: %s / %s: %s\n", s->name, run->workloads[wi].name, err);
        snprintf(rec->error, sizeof(rec->error), "%.1000s", err);
        rc = -1;
    }
    tb_loadavg(rec->load_after);
    rec->interrupted = g_stop != 0;
    if (rec->r.error[0] && rec->error[0] == '\0') {
        memcpy(rec->error, rec->r.error, sizeof(rec->error));
    }
    if (cli->keep) {
        tb_cleanup_list(lo);
    } else if (tb_cleanup_run(lo) != 0) {
        rc = -1;
    }
    free(lo);
    rs->ncells++;
    return rc;
}

static int mkdirs(const char *dir)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            *s = '/';
        }
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* The text of a one-off run; the first words of each line are the ones the
 * older tiercache-bench printed, for the scripts that grep them
 * ("throughput:" in bench/lmdb_group_commit.sh). */
static void print_text(const struct tb_results *rs)
{
    for (size_t i = 0; i < rs->ncells; i++) {
        const struct tb_cellrec *c = &rs->cells[i];
        const struct tb_result *r = &c->r;
        const struct tb_stack *s = &rs->run->stacks[c->stack];
        struct tb_lat all = {0};
        for (int t = 0; t <= TB_MAX_TIERS; t++) {
            tb_lat_merge(&all, &r->lat_get[t]);
        }
        printf("tiers:      ");
        for (int t = 0; t < c->ntiers; t++) {
            printf("%s%s", t ? " -> " : "", s->url[0] ? c->tier_names[t] : c->tier_uris[t]);
        }
        printf("%s%s\n", s->url[0] ? " at " : "", s->url);
        printf("throughput: %.0f ops/s (%llu gets, %llu sets, %llu deletes, %llu errors) over "
               "%.1fs\n",
               tb_cell_throughput(c), (unsigned long long)r->gets, (unsigned long long)r->sets,
               (unsigned long long)r->dels, (unsigned long long)r->errors, c->seconds);
        printf("get:        p50 %llu ns, p99 %llu ns, p99.9 %llu ns\n",
               (unsigned long long)tb_lat_quantile(&all, 0.5),
               (unsigned long long)tb_lat_quantile(&all, 0.99),
               (unsigned long long)tb_lat_quantile(&all, 0.999));
        printf("set:        p50 %llu ns, p99 %llu ns\n",
               (unsigned long long)tb_lat_quantile(&r->lat_set, 0.5),
               (unsigned long long)tb_lat_quantile(&r->lat_set, 0.99));
        printf("hit ratio:  %.4f (", r->gets ? (double)r->hits / (double)r->gets : 0.0);
        for (int t = 0; t < c->ntiers; t++) {
            printf("%s%s %.4f", t ? ", " : "", c->tier_names[t],
                   r->gets ? (double)r->tier_hits[t] / (double)r->gets : 0.0);
        }
        printf(" of gets)\n");
    }
    for (size_t i = 0; i < rs->nsims; i++) {
        const struct tb_simrec *x = &rs->sims[i];
        printf("sim %s %llu bytes: %llu requests, %llu misses (%.4f), %llu miss bytes\n",
               tb_sim_policy_name(x->policy), (unsigned long long)x->size,
               (unsigned long long)x->r.requests, (unsigned long long)x->r.misses,
               x->r.requests ? (double)x->r.misses / (double)x->r.requests : 0.0,
               (unsigned long long)x->r.miss_bytes);
    }
}

int main(int argc, char **argv)
{
    static struct tb_run run;
    static struct tb_results rs;
    struct cli cli = {0};
    char err[1200];
    int rc = 0, fixed = 0;

    tb_stack_defaults(&run.stacks[0]);
    tb_workload_defaults(&run.workloads[0]);
    run.repeat = 1;
    if (argc >= 2 && strcmp(argv[1], "run") == 0) {
        if (argc < 3 || argv[2][0] == '-') {
            fprintf(stderr, "tiercache-bench: run needs a run file (see --help)\n");
            return 2;
        }
        cli.run_mode = 1;
        cli.file = argv[2];
        if (tb_spec_load(cli.file, &run, err, sizeof(err)) != 0) {
            fprintf(stderr, "tiercache-bench: %s\n", err);
            return 2;
        }
        /* Only output flags after `run FILE`. */
        static const struct option lo[] = {{"out", required_argument, NULL, 'o'},
                                           {"keep", no_argument, NULL, 'k'},
                                           {"quiet", no_argument, NULL, 'q'},
                                           {"json", no_argument, NULL, 'j'},
                                           {NULL, 0, NULL, 0}};
        int opt;
        optind = 3;
        while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
            switch (opt) {
            case 'o':
                cli.out = optarg;
                break;
            case 'k':
                cli.keep = 1;
                break;
            case 'q':
                cli.quiet = 1;
                break;
            case 'j':
                cli.json = 1;
                break;
            default:
                fprintf(stderr, "tiercache-bench: after `run FILE` only --out DIR, --keep, "
                                "--quiet and --json\n");
                return 2;
            }
        }
        cli.keep |= run.keep;
        if (cli.out == NULL) {
            cli.out = run.output[0] ? run.output : NULL;
        }
        if (cli.out == NULL) {
            fprintf(stderr, "tiercache-bench: no output directory (--out DIR or \"output\")\n");
            return 2;
        }
        for (size_t w = 0; w < run.nworkloads; w++) {
            if (run.workloads[w].sim_policies == 0) {
                run.workloads[w].sim_policies = TB_SIM_POLICY_LRU | TB_SIM_POLICY_FIFO;
            }
        }
    } else {
        if (parse_flags(argc, argv, &cli, &run) != 0) {
            return 2;
        }
        if (optind < argc) {
            fprintf(stderr, "tiercache-bench: unexpected argument '%s'\n", argv[optind]);
            return 2;
        }
        struct tb_stack *s = &run.stacks[0];
        struct tb_workload *w = &run.workloads[0];
        if ((w->trace[0] != '\0') != (w->trace_format != TB_TRACE_NONE)) {
            fprintf(stderr, "tiercache-bench: --trace and --trace-format go together\n");
            return 2;
        }
        if (s->ntiers > 0 && s->url[0]) {
            fprintf(stderr, "tiercache-bench: give --tier URIs or --url, not both\n");
            return 2;
        }
        if (s->ntiers == 0 && s->url[0] == '\0' && cli.sim_policies == 0) {
            fprintf(stderr, "tiercache-bench: give at least one --tier URI, a --url, or --sim\n");
            usage(stderr);
            return 2;
        }
        if (s->token[0] && s->url[0] == '\0') {
            fprintf(stderr, "tiercache-bench: --token is for --url\n");
            return 2;
        }
        run.nstacks = s->ntiers > 0 || s->url[0] ? 1 : 0;
        run.nworkloads = 1;
        snprintf(s->name, sizeof(s->name), "%s", s->url[0] ? "http" : "stack");
        if (w->trace[0]) {
            const char *b = strrchr(w->trace, '/');
            snprintf(w->name, sizeof(w->name), "%.60s", b ? b + 1 : w->trace);
        }
        w->sim_policies = cli.sim_policies;
        if (cli.sim_policies && !cli.have_sim_sizes && run.nstacks == 0) {
            fprintf(stderr, "tiercache-bench: --sim needs --sim-size without a shm:// tier\n");
            return 2;
        }
        fixed = 1; /* one-off: the names are the user's */
    }
    rs.run = &run;
    {
        size_t pos = 0;
        for (int i = 0; i < argc && pos + 2 < sizeof(rs.command); i++) {
            char red[TB_URI_MAX];
            int n = snprintf(rs.command + pos, sizeof(rs.command) - pos, "%s%s", i ? " " : "",
                             strstr(argv[i], "://") ? tc_tier_uri_redact(argv[i], red, sizeof(red))
                             : i > 0 && strcmp(argv[i - 1], "--token") == 0 ? "***"
                                                                            : argv[i]);
            pos += n > 0 ? (size_t)n : 0;
        }
        if (pos >= sizeof(rs.command)) {
            rs.command[sizeof(rs.command) - 1] = '\0';
        }
    }
    if (cli.out != NULL && mkdirs(cli.out) != 0) {
        fprintf(stderr, "tiercache-bench: cannot make %s: %s\n", cli.out, strerror(errno));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Traces are read once per workload; sims first (they need no tiers). */
    struct tb_req *traces[TB_MAX_WORKLOADS] = {0};
    size_t ntraces[TB_MAX_WORKLOADS] = {0};
    for (size_t w = 0; w < run.nworkloads && rc == 0 && !g_stop; w++) {
        if (run.workloads[w].trace[0] &&
            tb_trace_load(&run.workloads[w], &traces[w], &ntraces[w], err, sizeof(err)) != 0) {
            fprintf(stderr, "tiercache-bench: workload %s: %s\n", run.workloads[w].name, err);
            rc = 2;
            break;
        }
        if (run_sims(&rs, w, traces[w], ntraces[w], run.workloads[w].sim_policies) != 0) {
            rc = 1;
        }
    }
    int cellno = 0;
    for (int rep = 0; rep < run.repeat && rc == 0 && !g_stop; rep++) {
        for (size_t w = 0; w < run.nworkloads && rc == 0 && !g_stop; w++) {
            for (size_t s = 0; s < run.nstacks && !g_stop; s++) {
                if (run_cell(&rs, s, w, rep, cellno++, traces[w], ntraces[w], &cli, fixed) != 0) {
                    rc = 1;
                    if (cli.run_mode) {
                        break;
                    }
                }
            }
        }
    }
    for (size_t w = 0; w < run.nworkloads; w++) {
        free(traces[w]);
    }
    if (cli.out != NULL) {
        if (tb_results_write(&rs, cli.out) != 0 ||
            (cli.run_mode || rs.ncells > 0 ? tb_report_write(&rs, cli.out) : 0) != 0) {
            rc = rc ? rc : 1;
        }
    }
    if (cli.json) {
        json_t *j;
        if (!cli.run_mode && rs.ncells == 1 && run.repeat == 1) {
            j = tb_cell_json(&rs, &rs.cells[0]);
        } else if (!cli.run_mode && rs.ncells == 0) {
            json_t *all = tb_results_json(&rs);
            j = json_pack("{s:O}", "sim", json_object_get(all, "sim"));
            json_decref(all);
        } else {
            j = tb_results_json(&rs);
        }
        json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
        putchar('\n');
        json_decref(j);
    } else if (!cli.run_mode) {
        print_text(&rs);
    } else {
        printf("tiercache-bench: %zu cells; results in %s/results.json, report in %s/report.md\n",
               rs.ncells, cli.out, cli.out);
    }
    for (size_t i = 0; i < rs.ncells; i++) {
        if (rs.cells[i].r.errors > 0 && !cli.json) {
            fprintf(stderr, "tiercache-bench: %s / %s: %llu requests failed (first: %s)\n",
                    run.stacks[rs.cells[i].stack].name, run.workloads[rs.cells[i].workload].name,
                    (unsigned long long)rs.cells[i].r.errors, rs.cells[i].r.error);
        }
    }
    free(rs.cells);
    if (g_stop) {
        fprintf(stderr, "tiercache-bench: interrupted; cleaned up%s\n",
                cli.keep ? " nothing (--keep)" : "");
        return 130;
    }
    return rc;
}
