/*
 * tiercache-bench: a cache-aside workload against a stack of tiers, in
 * process, with threads and processes, for honest comparisons in one run.
 *
 *   tiercache-bench --tier URI [--tier URI ...] [--keys N] [--zipf S]
 *                   [--value-size B] [--read-ratio R] [--threads T]
 *                   [--processes P] [--inflight N] [--batch N] [--seconds D]
 *                   [--ttl S] [--lru-sim] [--json]
 *
 * Workload. The keyspace (N keys, "key:<i>") is written once before timing.
 * Each operation draws a key (uniform, or Zipf with exponent S: rank 0 the
 * hottest) from a trace generated before timing, so that drawing costs
 * nothing inside the timed loop. A fraction R of operations are gets: the
 * stack is read tier by tier, a hit in tier i back-fills tiers 0..i-1 with
 * the item's own authoritative expiry (the TTL-ratio rule applies), and a get
 * that misses everywhere is followed by a set of the key, as an application
 * would. The other operations are sets, written through every tier.
 *
 * Async tiers. With --inflight N each thread keeps N operations outstanding
 * on its own event_base; a tier answering synchronously costs no loop turn.
 *
 * Batches. With --batch N each thread keeps N operations going and hands
 * the gets among them that are due at the first tier to tc_tier_get_many()
 * together (the shm tier then overlaps their cache misses). Latency then
 * includes the wait for the rest of the batch.
 *
 * Baselines in the same run: 'ref-mutex://?size=...' (the mem:// backend, a
 * pthread mutex around a hash and an exact LRU, registered under that name
 * here) and --lru-sim (an exact LRU simulated over thread 0's key trace with
 * the byte budget of the first tier, giving lru_hit_ratio).
 *
 * Latency is sampled (one operation in LAT_EVERY is timed) so that the clock
 * reads do not dominate sub-microsecond operations; throughput counts all.
 */
#define _GNU_SOURCE /* getopt_long */
#include "bench/keys.h"
#include "tiers/tier.h"
#include "tiers/tier_impl.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TIERS    8
#define TRACE_LEN    (1u << 22) /* per thread; the trace is replayed cyclically */
#define LAT_EVERY    8          /* one op in LAT_EVERY is timed */
#define LAT_SAMPLES  (1u << 18) /* per worker and kind; later samples replace at random */
#define MAX_WORKERS  256
#define MAX_INFLIGHT 4096

struct opts {
    const char *tiers[MAX_TIERS];
    int ntiers;
    uint64_t keys;
    double zipf;
    size_t value_size;
    double read_ratio;
    int threads, processes, inflight, batch;
    double seconds;
    uint64_t ttl_ms;
    int lru_sim, json;
};

/* Results of one worker thread; lives in a MAP_SHARED mapping so that forked
 * processes report into it. */
struct result {
    uint64_t gets, hits, sets, errors, set_refused;
    uint64_t tier_hits[MAX_TIERS];
    uint64_t start_ns, end_ns;
    uint32_t nget_lat, nset_lat;
    uint64_t get_lat[LAT_SAMPLES];
    uint64_t set_lat[LAT_SAMPLES];
    char error[160];
};

struct shared {
    _Atomic int ready; /* workers that finished prefill */
    _Atomic int go;    /* set by the parent: start timing */
    _Atomic int stop;  /* set by the parent when time is up */
    struct result res[];
};

struct worker;

enum phase { PH_GET, PH_FILL, PH_SET };

struct slot {
    struct worker *w;
    struct tc_tier_req req;
    struct tc_buf out;
    enum phase phase;
    int tier;     /* tier the current call went to */
    int hit_tier; /* for PH_FILL: the tier that answered */
    int timed, is_get;
    uint64_t t0;
    struct tc_item_hdr hit_hdr;
    char key[32];
    size_t key_len;
    int ready; /* --batch: a get due at tier 0, waiting for the next batch */
};

struct worker {
    const struct opts *o;
    struct result *res;
    struct shared *sh;
    int id; /* global worker index */
    struct tc_tier *tiers[MAX_TIERS];
    struct tc_tier_ctx *ctx[MAX_TIERS];
    struct event_base *base;
    const uint32_t *trace;
    uint64_t pos;
    uint64_t rng;
    uint64_t read_threshold;
    const char *value;
    uint64_t now_ms;
    uint64_t ops_since_clock;
    int stopping;
    int outstanding;
    /* prefill */
    int prefill;
    uint64_t pf_next, pf_end;
    struct slot slots[];
};

/* ---- small utilities ------------------------------------------------------ */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double unit(uint64_t *s)
{
    return (double)(xorshift(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- key traces ------------------------------------------------------------- */

/* Zipf ranks by Gray et al., "Quickly generating billion-record synthetic
 * databases" (the YCSB generator): O(n) set-up for zeta(n), O(1) a draw. */
struct zipf {
    uint64_t n;
    double theta, alpha, zetan, eta, half_pow;
};

static double zeta(uint64_t n, double theta)
{
    double sum = 0;
    for (uint64_t i = 1; i <= n; i++) {
        sum += 1.0 / pow((double)i, theta);
    }
    return sum;
}

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
    if (fabs(theta - 1.0) < 1e-9) {
        theta = 1.0 - 1e-6; /* the closed form divides by 1 - theta */
    }
    z->n = n;
    z->theta = theta;
    z->zetan = zeta(n, theta);
    double zeta2 = zeta(2, theta);
    z->alpha = 1.0 / (1.0 - theta);
    z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / z->zetan);
    z->half_pow = 1.0 + pow(0.5, theta);
}

static uint64_t zipf_next(const struct zipf *z, uint64_t *rng)
{
    double u = unit(rng);
    double uz = u * z->zetan;
    if (uz < 1.0) {
        return 0;
    }
    if (uz < z->half_pow) {
        return 1;
    }
    uint64_t r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
    return r < z->n ? r : z->n - 1;
}

/* Hot ranks are spread over the keyspace so that "hot" does not also mean
 * "adjacent in the key order". */
static uint32_t scramble(uint64_t rank, uint64_t n)
{
    return (uint32_t)((rank * 0x9E3779B97F4A7C15ull) % n);
}

static uint32_t *make_trace(const struct opts *o, const struct zipf *z, uint64_t seed)
{
    uint32_t *t = malloc(TRACE_LEN * sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    uint64_t rng = seed | 1;
    for (uint32_t i = 0; i < TRACE_LEN; i++) {
        uint64_t rank = o->zipf > 0 ? zipf_next(z, &rng) : xorshift(&rng) % o->keys;
        t[i] = scramble(rank, o->keys);
    }
    return t;
}

/* ---- the workload state machine -------------------------------------------- */

static void on_done(struct tc_tier_req *req);
static void drive(struct slot *s, enum tc_status st);

static void lat_record(struct worker *w, uint64_t *arr, uint32_t *n, uint64_t ns)
{
    if (*n < LAT_SAMPLES) {
        arr[(*n)++] = ns;
    } else {
        /* Keep a uniform sample of the whole run (reservoir-style). */
        uint64_t j = xorshift(&w->rng) % ((uint64_t)*n + 1);
        if (j < LAT_SAMPLES) {
            arr[j] = ns;
        }
        if (*n < UINT32_MAX) {
            (*n)++;
        }
    }
}

static void refresh_clock(struct worker *w)
{
    if (++w->ops_since_clock >= 64) {
        w->ops_since_clock = 0;
        w->now_ms = wall_ms();
        if (!w->prefill && atomic_load_explicit(&w->sh->stop, memory_order_relaxed)) {
            w->stopping = 1;
        }
    }
}

static void prep(struct slot *s)
{
    struct tc_tier_req *r = &s->req;
    memset(r, 0, sizeof(*r));
    r->key = s->key;
    r->key_len = s->key_len;
    r->now_ms = s->w->now_ms;
    r->done = on_done;
    r->arg = s;
    r->out = &s->out;
}

static enum tc_status issue(struct slot *s)
{
    struct worker *w = s->w;
    struct tc_tier_req *r = &s->req;
    struct tc_tier_ctx *c = w->ctx[s->tier];
    prep(s);
    r->out = NULL;
    switch (s->phase) {
    case PH_GET:
        r->out = &s->out;
        return tc_tier_get(c, r);
    case PH_FILL:
        r->value = s->out.data;
        r->value_len = s->out.len;
        r->hdr = s->hit_hdr;
        return tc_tier_set(c, r);
    case PH_SET:
        r->value = w->value;
        r->value_len = w->o->value_size;
        r->hdr.encoding = TC_ENC_BINARY;
        r->hdr.created_ms = w->now_ms;
        r->hdr.expire_ms = w->now_ms + w->o->ttl_ms;
        return tc_tier_set(c, r);
    }
    return TC_EINVAL;
}

/* Starts the slot's next operation; returns 0 when the slot should retire. */
static int start_op(struct slot *s)
{
    struct worker *w = s->w;
    uint64_t k;
    refresh_clock(w);
    if (w->prefill) {
        if (w->pf_next >= w->pf_end) {
            return 0;
        }
        k = w->pf_next++;
        s->is_get = 0;
    } else {
        if (w->stopping) {
            return 0;
        }
        k = w->trace[w->pos++ & (TRACE_LEN - 1)];
        s->is_get = w->o->read_ratio >= 1.0 || xorshift(&w->rng) < w->read_threshold;
    }
    s->key_len = fmt_key(s->key, k);
    s->tier = 0;
    s->phase = s->is_get ? PH_GET : PH_SET;
    s->timed = !w->prefill && (w->pos % LAT_EVERY) == 0;
    if (s->timed) {
        s->t0 = mono_ns();
    }
    return 1;
}

static void finish_op(struct slot *s)
{
    struct worker *w = s->w;
    struct result *res = w->res;
    if (w->prefill) {
        return;
    }
    if (s->is_get) {
        res->gets++;
    } else {
        res->sets++;
    }
    if (s->timed) {
        uint64_t ns = mono_ns() - s->t0;
        if (s->is_get) {
            lat_record(w, res->get_lat, &res->nget_lat, ns);
        } else {
            lat_record(w, res->set_lat, &res->nset_lat, ns);
        }
    }
}

/* Advances slot s given the status of its last call, issuing calls until one
 * goes asynchronous or the slot retires. Iterative, so that synchronous tiers
 * never grow the stack. */
static void drive(struct slot *s, enum tc_status st)
{
    struct worker *w = s->w;
    for (;;) {
        int next = 0; /* 1: issue another call for this op; 0: op finished */
        switch (s->phase) {
        case PH_GET:
            if (st == TC_OK) {
                if (!w->prefill) {
                    w->res->hits++;
                    w->res->tier_hits[s->tier]++;
                }
                if (s->tier > 0) {
                    s->hit_hdr = s->req.hdr;
                    s->hit_tier = s->tier;
                    s->phase = PH_FILL;
                    s->tier = 0;
                    next = 1;
                }
            } else {
                if (st != TC_ENOTFOUND) {
                    w->res->errors++;
                }
                if (s->tier + 1 < w->o->ntiers) {
                    s->tier++;
                } else {
                    s->phase = PH_SET; /* cache-aside: the application sets it */
                    s->tier = 0;
                }
                next = 1;
            }
            break;
        case PH_FILL:
            if (st != TC_OK && st != TC_ETOOBIG) {
                w->res->errors++;
            }
            if (++s->tier < s->hit_tier) {
                next = 1;
            }
            break;
        case PH_SET:
            if (st == TC_ETOOBIG) {
                w->res->set_refused++;
            } else if (st != TC_OK) {
                w->res->errors++;
                if (w->res->error[0] == '\0') {
                    snprintf(w->res->error, sizeof(w->res->error), "set on %s: %s",
                             tc_tier_uri(w->tiers[s->tier]), tc_strerror(st));
                }
            }
            if (++s->tier < w->o->ntiers) {
                next = 1;
            }
            break;
        }
        if (!next) {
            finish_op(s);
            if (!start_op(s)) {
                w->outstanding--;
                return;
            }
            if (w->o->batch > 1 && s->phase == PH_GET) {
                s->ready = 1; /* goes out with the next batch */
                return;
            }
        }
        st = issue(s);
        if (st == TC_EINPROGRESS) {
            return;
        }
    }
}

static void on_done(struct tc_tier_req *req)
{
    struct slot *s = req->arg;
    drive(s, req->status);
}

/* --batch: the gets due at tier 0 go out together, the rest one by one. */
static void run_batches(struct worker *w)
{
    int n = w->o->batch;
    struct tc_tier_req *reqs[MAX_INFLIGHT];
    struct slot *who[MAX_INFLIGHT];
    w->outstanding = 0;
    for (int i = 0; i < n; i++) {
        struct slot *s = &w->slots[i];
        if (!start_op(s)) {
            break;
        }
        w->outstanding++;
        if (s->phase == PH_GET) {
            s->ready = 1;
        } else {
            enum tc_status st = issue(s);
            if (st != TC_EINPROGRESS) {
                drive(s, st);
            }
        }
    }
    while (w->outstanding > 0) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            struct slot *s = &w->slots[i];
            if (s->ready) {
                s->ready = 0;
                prep(s);
                reqs[m] = &s->req;
                who[m++] = s;
            }
        }
        if (m == 0) {
            event_base_loop(w->base, EVLOOP_ONCE);
        } else {
            tc_tier_get_many(w->ctx[0], reqs, (size_t)m);
            for (int i = 0; i < m; i++) {
                if (reqs[i]->status != TC_EINPROGRESS) {
                    drive(who[i], reqs[i]->status);
                }
            }
        }
        if (!w->prefill && atomic_load_explicit(&w->sh->stop, memory_order_relaxed)) {
            w->stopping = 1;
        }
    }
}

/* Runs all slots until each retires (prefill done, or stop requested). */
static void run_slots(struct worker *w)
{
    if (w->o->batch > 1 && !w->prefill) {
        run_batches(w);
        return;
    }
    w->outstanding = 0;
    for (int i = 0; i < w->o->inflight; i++) {
        struct slot *s = &w->slots[i];
        if (!start_op(s)) {
            break;
        }
        w->outstanding++;
        enum tc_status st = issue(s);
        if (st != TC_EINPROGRESS) {
            drive(s, st);
        }
    }
    while (w->outstanding > 0) {
        event_base_loop(w->base, EVLOOP_ONCE);
        if (!w->prefill && atomic_load_explicit(&w->sh->stop, memory_order_relaxed)) {
            w->stopping = 1;
        }
    }
}

/* ---- workers, threads, processes ------------------------------------------------ */

static struct tc_tier_registry *make_registry(void)
{
    /* The in-process reference, under the name the README's figures use. */
    static struct tc_tier_ops ref_mutex;
    struct tc_tier_registry *reg = tc_tier_registry_create();
    if (reg == NULL) {
        return NULL;
    }
    ref_mutex = tc_tier_mem_ops;
    ref_mutex.scheme = "ref-mutex";
    if (tc_tier_register(reg, &ref_mutex) != TC_OK) {
        tc_tier_registry_destroy(reg);
        return NULL;
    }
    return reg;
}

struct proc {
    const struct opts *o;
    struct shared *sh;
    struct tc_tier *tiers[MAX_TIERS];
    const struct zipf *z;
    int pidx;
    int prefill_here;
};

struct thread_arg {
    struct proc *p;
    int tidx;
};

static void *thread_main(void *argp)
{
    struct thread_arg *ta = argp;
    struct proc *p = ta->p;
    const struct opts *o = p->o;
    int id = p->pidx * o->threads + ta->tidx;
    struct result *res = &p->sh->res[id];
    struct worker *w = calloc(1, sizeof(*w) + (size_t)o->inflight * sizeof(struct slot));
    char *value = malloc(o->value_size ? o->value_size : 1);
    uint32_t *trace = make_trace(o, p->z, 0x243F6A8885A308D3ull * (uint64_t)(id + 1));
    int nctx = 0;

    if (w == NULL || value == NULL || trace == NULL) {
        snprintf(res->error, sizeof(res->error), "out of memory");
        goto out;
    }
    memset(value, 'v', o->value_size);
    w->o = o;
    w->res = res;
    w->sh = p->sh;
    w->id = id;
    w->trace = trace;
    w->pos = (uint64_t)id * 7919;
    w->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(id + 1) * 0xBF58476D1CE4E5B9ull;
    w->read_threshold = (uint64_t)(o->read_ratio * 18446744073709551615.0);
    w->value = value;
    w->now_ms = wall_ms();
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(res->error, sizeof(res->error), "event_base_new failed");
        goto out;
    }
    for (; nctx < o->ntiers; nctx++) {
        w->tiers[nctx] = p->tiers[nctx];
        enum tc_status st = tc_tier_ctx_init(p->tiers[nctx], w->base, &w->ctx[nctx]);
        if (st != TC_OK) {
            snprintf(res->error, sizeof(res->error), "ctx for %s: %s", tc_tier_uri(p->tiers[nctx]),
                     tc_strerror(st));
            goto out;
        }
    }
    for (int i = 0; i < o->inflight; i++) {
        w->slots[i].w = w;
        tc_buf_init(&w->slots[i].out);
    }

    if (p->prefill_here) {
        /* Each thread of the prefilling process writes its share of keys. */
        uint64_t per = (o->keys + (uint64_t)o->threads - 1) / (uint64_t)o->threads;
        w->prefill = 1;
        w->pf_next = per * (uint64_t)ta->tidx;
        w->pf_end = w->pf_next + per < o->keys ? w->pf_next + per : o->keys;
        run_slots(w);
        w->prefill = 0;
    }
    memset(res->tier_hits, 0, sizeof(res->tier_hits));
    res->gets = res->hits = res->sets = res->errors = res->set_refused = 0;
    atomic_fetch_add(&p->sh->ready, 1);
    while (!atomic_load(&p->sh->go)) {
        usleep(200);
    }
    w->now_ms = wall_ms();
    res->start_ns = mono_ns();
    run_slots(w);
    res->end_ns = mono_ns();

out:
    if (w != NULL) {
        for (int i = 0; i < o->inflight; i++) {
            tc_buf_deinit(&w->slots[i].out);
        }
        for (int i = nctx - 1; i >= 0; i--) {
            tc_tier_ctx_dispose(w->ctx[i]);
        }
        if (w->base != NULL) {
            event_base_free(w->base);
        }
    }
    if (res->start_ns == 0) {
        /* Failed before timing: still count as ready so the parent moves on. */
        atomic_fetch_add(&p->sh->ready, 1);
    }
    free(trace);
    free(value);
    free(w);
    return NULL;
}

static int process_main(const struct opts *o, struct shared *sh, const struct zipf *z, int pidx,
                        int prefill_here)
{
    struct proc p = {.o = o, .sh = sh, .z = z, .pidx = pidx, .prefill_here = prefill_here};
    struct tc_tier_registry *reg = make_registry();
    int n = 0, rc = 0;
    pthread_t th[MAX_WORKERS];
    struct thread_arg ta[MAX_WORKERS];

    if (reg == NULL) {
        fprintf(stderr, "tiercache-bench: out of memory\n");
        return 1;
    }
    for (; n < o->ntiers; n++) {
        char err[512];
        enum tc_status st = tc_tier_open(reg, o->tiers[n], &p.tiers[n], err, sizeof(err));
        if (st != TC_OK) {
            fprintf(stderr, "tiercache-bench: --tier '%s': %s\n", o->tiers[n],
                    err[0] ? err : tc_strerror(st));
            rc = 1;
            goto out;
        }
    }
    int started = 0;
    for (int t = 0; t < o->threads; t++) {
        ta[t] = (struct thread_arg){&p, t};
        if (pthread_create(&th[t], NULL, thread_main, &ta[t]) != 0) {
            fprintf(stderr, "tiercache-bench: pthread_create failed\n");
            rc = 1;
            break;
        }
        started++;
    }
    for (int t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
    }
out:
    for (int i = n - 1; i >= 0; i--) {
        tc_tier_close(p.tiers[i]);
    }
    tc_tier_registry_destroy(reg);
    return rc;
}

/* ---- exact LRU simulation ----------------------------------------------------------- */

struct lru_node {
    uint32_t prev, next; /* indices + 1; 0 = none */
    uint8_t present;
};

static double lru_sim(const struct opts *o, const struct zipf *z, uint64_t budget)
{
    /* Charged per item: key + value + the 32-byte item header + 24 bytes
     * (two list links and a hash slot: the least an exact LRU needs). */
    uint32_t *trace = make_trace(o, z, 0x243F6A8885A308D3ull * 1);
    struct lru_node *nodes = calloc(o->keys, sizeof(*nodes));
    double ratio = -1;
    if (trace == NULL || nodes == NULL) {
        goto out;
    }
    uint32_t head = 0, tail = 0; /* most recent at head */
    uint64_t used = 0, gets = 0, hits = 0;
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ 0xBF58476D1CE4E5B9ull;
    uint64_t threshold = (uint64_t)(o->read_ratio * 18446744073709551615.0);
    char key[32];

#define COST(k) ((uint64_t)fmt_key(key, (k)) + o->value_size + 32 + 24)
#define UNLINK(i)                                                                                  \
    do {                                                                                           \
        struct lru_node *n_ = &nodes[(i)-1];                                                       \
        if (n_->prev) {                                                                            \
            nodes[n_->prev - 1].next = n_->next;                                                   \
        } else {                                                                                   \
            head = n_->next;                                                                       \
        }                                                                                          \
        if (n_->next) {                                                                            \
            nodes[n_->next - 1].prev = n_->prev;                                                   \
        } else {                                                                                   \
            tail = n_->prev;                                                                       \
        }                                                                                          \
    } while (0)
#define PUSH(i)                                                                                    \
    do {                                                                                           \
        nodes[(i)-1].prev = 0;                                                                     \
        nodes[(i)-1].next = head;                                                                  \
        if (head) {                                                                                \
            nodes[head - 1].prev = (i);                                                            \
        }                                                                                          \
        head = (i);                                                                                \
        if (!tail) {                                                                               \
            tail = (i);                                                                            \
        }                                                                                          \
    } while (0)

    /* Same order of events as a real run: prefill, then the trace. */
    for (uint64_t step = 0; step < o->keys + TRACE_LEN; step++) {
        uint32_t k;
        int is_get;
        if (step < o->keys) {
            k = (uint32_t)step;
            is_get = 0;
        } else {
            k = trace[step - o->keys];
            is_get = o->read_ratio >= 1.0 || xorshift(&rng) < threshold;
        }
        uint32_t idx = k + 1;
        if (is_get) {
            gets++;
        }
        if (nodes[k].present) {
            if (is_get) {
                hits++;
            }
            UNLINK(idx);
            PUSH(idx);
            continue;
        }
        uint64_t cost = COST(k);
        if (cost > budget) {
            continue;
        }
        while (used + cost > budget && tail) {
            uint32_t victim = tail;
            UNLINK(victim);
            nodes[victim - 1].present = 0;
            used -= COST(victim - 1);
        }
        nodes[k].present = 1;
        PUSH(idx);
        used += cost;
    }
#undef COST
#undef UNLINK
#undef PUSH
    ratio = gets ? (double)hits / (double)gets : 0;
out:
    free(trace);
    free(nodes);
    return ratio;
}

static void cap_stat(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    (void)kind;
    if (strcmp(name, "bytes_capacity") == 0) {
        *(uint64_t *)arg = v;
    }
}

static uint64_t first_tier_capacity(const struct opts *o)
{
    struct tc_tier_registry *reg = make_registry();
    struct tc_tier *t;
    uint64_t cap = 0;
    char err[256];
    if (reg != NULL && tc_tier_open(reg, o->tiers[0], &t, err, sizeof(err)) == TC_OK) {
        tc_tier_stats(t, cap_stat, &cap);
        tc_tier_close(t);
    }
    tc_tier_registry_destroy(reg);
    return cap;
}

/* ---- main ------------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    size_t i = (size_t)ceil(q * (double)n);
    return sorted[i == 0 ? 0 : i - 1];
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: tiercache-bench --tier URI [--tier URI ...] [options]\n"
            "\n"
            "A cache-aside workload against a stack of tiers (fastest first).\n"
            "\n"
            "  --keys N          keyspace size, written once before timing (default 100000)\n"
            "  --zipf S          Zipf exponent for key popularity; 0 = uniform (default 0)\n"
            "  --value-size B    value bytes (default 100)\n"
            "  --read-ratio R    fraction of operations that are gets (default 0.9)\n"
            "  --threads T       threads per process (default 1)\n"
            "  --processes P     processes, each with T threads (default 1)\n"
            "  --inflight N      operations outstanding per thread, for async tiers (default 1)\n"
            "  --batch N         gets handed to the first tier N at a time (tc_tier_get_many;\n"
            "                    default 1: one by one)\n"
            "  --seconds D       timed duration (default 5)\n"
            "  --ttl S           TTL of written items in seconds (default 3600)\n"
            "  --lru-sim         also simulate an exact LRU with the first tier's byte budget\n"
            "  --json            print one JSON object\n"
            "\n"
            "Baseline tier: ref-mutex://?size=BYTES (mutex-protected hash + LRU in process).\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"tier", required_argument, NULL, 't'},
        {"keys", required_argument, NULL, 'k'},
        {"zipf", required_argument, NULL, 'z'},
        {"value-size", required_argument, NULL, 'v'},
        {"read-ratio", required_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 'T'},
        {"processes", required_argument, NULL, 'P'},
        {"inflight", required_argument, NULL, 'i'},
        {"batch", required_argument, NULL, 'B'},
        {"seconds", required_argument, NULL, 's'},
        {"ttl", required_argument, NULL, 'L'},
        {"lru-sim", no_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    char *end;
    *o = (struct opts){.keys = 100000,
                       .value_size = 100,
                       .read_ratio = 0.9,
                       .threads = 1,
                       .processes = 1,
                       .inflight = 1,
                       .batch = 1,
                       .seconds = 5,
                       .ttl_ms = 3600000};
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        errno = 0;
        end = NULL;
        switch (opt) {
        case 't':
            if (o->ntiers == MAX_TIERS) {
                fprintf(stderr, "tiercache-bench: at most %d tiers\n", MAX_TIERS);
                return -1;
            }
            o->tiers[o->ntiers++] = optarg;
            continue;
        case 'k':
            o->keys = strtoull(optarg, &end, 10);
            if (o->keys == 0 || o->keys > UINT32_MAX - 1) {
                end = NULL;
            }
            break;
        case 'z':
            o->zipf = strtod(optarg, &end);
            if (!(o->zipf >= 0) || o->zipf > 10) {
                end = NULL;
            }
            break;
        case 'v':
            o->value_size = strtoull(optarg, &end, 10);
            if (o->value_size > (256u << 20)) {
                end = NULL;
            }
            break;
        case 'r':
            o->read_ratio = strtod(optarg, &end);
            if (!(o->read_ratio >= 0 && o->read_ratio <= 1)) {
                end = NULL;
            }
            break;
        case 'T':
            o->threads = (int)strtol(optarg, &end, 10);
            if (o->threads < 1 || o->threads > 64) {
                end = NULL;
            }
            break;
        case 'P':
            o->processes = (int)strtol(optarg, &end, 10);
            if (o->processes < 1 || o->processes > 64) {
                end = NULL;
            }
            break;
        case 'i':
            o->inflight = (int)strtol(optarg, &end, 10);
            if (o->inflight < 1 || o->inflight > MAX_INFLIGHT) {
                end = NULL;
            }
            break;
        case 'B':
            o->batch = (int)strtol(optarg, &end, 10);
            if (o->batch < 1 || o->batch > MAX_INFLIGHT) {
                end = NULL;
            }
            break;
        case 's':
            o->seconds = strtod(optarg, &end);
            if (!(o->seconds > 0 && o->seconds <= 3600)) {
                end = NULL;
            }
            break;
        case 'L': {
            double s = strtod(optarg, &end);
            if (!(s > 0 && s < 1e9)) {
                end = NULL;
            }
            o->ttl_ms = (uint64_t)(s * 1000);
            break;
        }
        case 'l':
            o->lru_sim = 1;
            continue;
        case 'j':
            o->json = 1;
            continue;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (end == NULL || *end != '\0' || errno != 0) {
            const char *name = "?";
            for (const struct option *lo = longopts; lo->name != NULL; lo++) {
                if (lo->val == opt) {
                    name = lo->name;
                }
            }
            fprintf(stderr, "tiercache-bench: bad value '%s' for --%s (see --help)\n", optarg,
                    name);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tiercache-bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->ntiers == 0) {
        fprintf(stderr, "tiercache-bench: give at least one --tier URI\n");
        usage(stderr);
        return -1;
    }
    if (o->threads * o->processes > MAX_WORKERS) {
        fprintf(stderr, "tiercache-bench: at most %d threads in all\n", MAX_WORKERS);
        return -1;
    }
    if (o->batch > o->inflight) {
        o->inflight = o->batch; /* one slot per operation of a batch */
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse_opts(argc, argv, &o) != 0) {
        return 2;
    }
    int nworkers = o.threads * o.processes;
    struct zipf z;
    if (o.zipf > 0) {
        zipf_init(&z, o.keys, o.zipf);
    }
    size_t shsize = sizeof(struct shared) + (size_t)nworkers * sizeof(struct result);
    struct shared *sh =
        mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        fprintf(stderr, "tiercache-bench: mmap(%zu) failed: %s\n", shsize, strerror(errno));
        return 1;
    }
    /* Tiers shared across processes are filled once; others in each process. */
    int all_shared = 1;
    {
        struct tc_tier_registry *reg = make_registry();
        for (int i = 0; i < o.ntiers; i++) {
            char err[512];
            struct tc_tier *t;
            enum tc_status st = tc_tier_open(reg, o.tiers[i], &t, err, sizeof(err));
            if (st != TC_OK) {
                fprintf(stderr, "tiercache-bench: --tier '%s': %s\n", o.tiers[i],
                        err[0] ? err : tc_strerror(st));
                tc_tier_registry_destroy(reg);
                return 1;
            }
            if (!(tc_tier_caps(t) & TC_TIER_CAP_SHARED)) {
                all_shared = 0;
            }
            tc_tier_close(t);
        }
        tc_tier_registry_destroy(reg);
    }

    int rc = 0;
    pid_t pids[64];
    int nchild = 0;
    for (int p = 0; p < o.processes; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "tiercache-bench: fork failed: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        if (pid == 0) {
            /* Every process runs in a child, even with one, so that the
             * parent holds no tier handle across fork (LMDB forbids it). */
            int prefill_here = p == 0 || !all_shared;
            _exit(process_main(&o, sh, &z, p, prefill_here));
        }
        pids[nchild++] = pid;
    }
    /* Wait for every worker to finish prefill, then time the run. */
    while (atomic_load(&sh->ready) < nworkers) {
        int status;
        pid_t dead = waitpid(-1, &status, WNOHANG);
        if (dead > 0) {
            for (int i = 0; i < nchild; i++) {
                if (pids[i] == dead) {
                    pids[i] = 0;
                }
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                rc = 1;
            }
            if (atomic_load(&sh->ready) < nworkers && rc != 0) {
                break;
            }
        }
        usleep(1000);
    }
    atomic_store(&sh->go, 1);
    if (rc == 0) {
        struct timespec ts = {(time_t)o.seconds, (long)((o.seconds - floor(o.seconds)) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < nchild; i++) {
        int status;
        if (pids[i] > 0 && waitpid(pids[i], &status, 0) > 0 &&
            (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
            rc = 1;
        }
    }

    /* Aggregate. */
    uint64_t gets = 0, hits = 0, sets = 0, errors = 0, refused = 0;
    uint64_t tier_hits[MAX_TIERS] = {0};
    double ops_per_sec = 0;
    size_t ng = 0, ns = 0;
    for (int i = 0; i < nworkers; i++) {
        struct result *r = &sh->res[i];
        if (r->error[0]) {
            fprintf(stderr, "tiercache-bench: worker %d: %s\n", i, r->error);
        }
        gets += r->gets;
        hits += r->hits;
        sets += r->sets;
        errors += r->errors;
        refused += r->set_refused;
        for (int t = 0; t < o.ntiers; t++) {
            tier_hits[t] += r->tier_hits[t];
        }
        if (r->end_ns > r->start_ns) {
            ops_per_sec += (double)(r->gets + r->sets) / ((double)(r->end_ns - r->start_ns) / 1e9);
        }
        ng += r->nget_lat < LAT_SAMPLES ? r->nget_lat : LAT_SAMPLES;
        ns += r->nset_lat < LAT_SAMPLES ? r->nset_lat : LAT_SAMPLES;
    }
    uint64_t *gl = malloc((ng ? ng : 1) * sizeof(*gl));
    uint64_t *sl = malloc((ns ? ns : 1) * sizeof(*sl));
    size_t gi = 0, si = 0;
    for (int i = 0; i < nworkers && gl && sl; i++) {
        struct result *r = &sh->res[i];
        size_t a = r->nget_lat < LAT_SAMPLES ? r->nget_lat : LAT_SAMPLES;
        size_t b = r->nset_lat < LAT_SAMPLES ? r->nset_lat : LAT_SAMPLES;
        memcpy(gl + gi, r->get_lat, a * sizeof(*gl));
        memcpy(sl + si, r->set_lat, b * sizeof(*sl));
        gi += a;
        si += b;
    }
    qsort(gl, gi, sizeof(*gl), cmp_u64);
    qsort(sl, si, sizeof(*sl), cmp_u64);
    double hit_ratio = gets ? (double)hits / (double)gets : 0;
    double lru = -1;
    uint64_t budget = 0;
    if (o.lru_sim) {
        budget = first_tier_capacity(&o);
        lru = budget ? lru_sim(&o, &z, budget) : -1;
    }

    json_t *j = json_object();
    json_t *tiers = json_array();
    json_t *th = json_array();
    for (int t = 0; t < o.ntiers; t++) {
        json_array_append_new(tiers, json_string(o.tiers[t]));
        json_array_append_new(th, json_integer((json_int_t)tier_hits[t]));
    }
    json_object_set_new(j, "tiers", tiers);
    json_object_set_new(j, "keys", json_integer((json_int_t)o.keys));
    json_object_set_new(j, "zipf", json_real(o.zipf));
    json_object_set_new(j, "value_size", json_integer((json_int_t)o.value_size));
    json_object_set_new(j, "read_ratio", json_real(o.read_ratio));
    json_object_set_new(j, "threads", json_integer(o.threads));
    json_object_set_new(j, "processes", json_integer(o.processes));
    json_object_set_new(j, "inflight", json_integer(o.inflight));
    json_object_set_new(j, "batch", json_integer(o.batch));
    json_object_set_new(j, "seconds", json_real(o.seconds));
    json_object_set_new(j, "ops_per_sec", json_integer((json_int_t)ops_per_sec));
    json_object_set_new(j, "gets", json_integer((json_int_t)gets));
    json_object_set_new(j, "sets", json_integer((json_int_t)sets));
    json_object_set_new(j, "errors", json_integer((json_int_t)errors));
    json_object_set_new(j, "sets_refused", json_integer((json_int_t)refused));
    json_object_set_new(j, "hit_ratio", json_real(hit_ratio));
    json_object_set_new(j, "tier_hits", th);
    json_object_set_new(j, "get_p50_ns", json_integer((json_int_t)pct(gl, gi, 0.50)));
    json_object_set_new(j, "get_p99_ns", json_integer((json_int_t)pct(gl, gi, 0.99)));
    json_object_set_new(j, "get_p999_ns", json_integer((json_int_t)pct(gl, gi, 0.999)));
    json_object_set_new(j, "set_p50_ns", json_integer((json_int_t)pct(sl, si, 0.50)));
    json_object_set_new(j, "set_p99_ns", json_integer((json_int_t)pct(sl, si, 0.99)));
    if (o.lru_sim) {
        json_object_set_new(j, "lru_budget_bytes", json_integer((json_int_t)budget));
        json_object_set_new(j, "lru_hit_ratio", lru >= 0 ? json_real(lru) : json_null());
    }
    if (o.json) {
        json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
        putchar('\n');
    } else {
        printf("tiers:      ");
        for (int t = 0; t < o.ntiers; t++) {
            printf("%s%s", t ? " -> " : "", o.tiers[t]);
        }
        printf("\nworkload:   %llu keys, %s, %zu-byte values, %.0f%% gets, %d proc x %d thr, "
               "inflight %d, %.1fs\n",
               (unsigned long long)o.keys, o.zipf > 0 ? "zipf" : "uniform", o.value_size,
               o.read_ratio * 100, o.processes, o.threads, o.inflight, o.seconds);
        printf("throughput: %.0f ops/s (%llu gets, %llu sets, %llu errors)\n", ops_per_sec,
               (unsigned long long)gets, (unsigned long long)sets, (unsigned long long)errors);
        printf("get:        p50 %llu ns, p99 %llu ns, p99.9 %llu ns\n",
               (unsigned long long)pct(gl, gi, 0.5), (unsigned long long)pct(gl, gi, 0.99),
               (unsigned long long)pct(gl, gi, 0.999));
        printf("set:        p50 %llu ns, p99 %llu ns\n", (unsigned long long)pct(sl, si, 0.5),
               (unsigned long long)pct(sl, si, 0.99));
        printf("hit ratio:  %.4f", hit_ratio);
        if (o.lru_sim) {
            printf("  (exact LRU with %llu bytes: %.4f)", (unsigned long long)budget, lru);
        }
        printf("\n");
    }
    json_decref(j);
    free(gl);
    free(sl);
    munmap(sh, shsize);
    if (errors > 0 && rc == 0) {
        fprintf(stderr, "tiercache-bench: %llu operations failed\n", (unsigned long long)errors);
    }
    return rc;
}
