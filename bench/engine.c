/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/engine.h"
#include "tiers/tier.h"
#include "tiers/tier_impl.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LAT_EVERY    8 /* closed loop: one op in LAT_EVERY is timed (clock reads cost) */
#define MAX_INFLIGHT 4096

struct tb_engine {
    const struct tb_cell *c;
    struct tc_tier_registry *reg;
    struct tc_tier *tiers[TB_MAX_TIERS];
    int n;
};

enum phase { PH_GET, PH_FILL, PH_SET, PH_DEL };

struct worker;

struct slot {
    struct worker *w;
    struct tc_tier_req req;
    struct tc_buf out;
    enum phase phase;
    int tier;     /* tier the current call went to */
    int hit_tier; /* PH_FILL: the tier that answered */
    int timed, counted, answered;
    uint64_t t0;
    struct tc_item_hdr hit_hdr;
    struct tb_req r;
    char key[TB_KEY_MAX + 64];
    size_t key_len;
    int ready; /* batch: a get due at tier 0, waiting for the next batch */
    int next_free;
};

struct worker {
    struct tb_engine *e;
    struct tb_wctx *wc;
    struct tb_result *res;
    struct tc_tier_ctx *ctx[TB_MAX_TIERS];
    struct event_base *base;
    const char *value;
    uint64_t now_ms;
    uint64_t nops;
    int counting, stopping, outstanding, inflight, batch;
    /* open loop */
    int open;
    uint64_t interval_ns, next_due;
    int free_head;
    /* prefill */
    int prefill;
    uint64_t pf_next, pf_end;
    struct slot slots[];
};

static void on_done(struct tc_tier_req *req);
static void drive(struct slot *s, enum tc_status st);

/* ---- tiers ------------------------------------------------------------------ */

int tb_engine_open(const struct tb_cell *c, struct tb_engine **out, char *err, size_t errlen)
{
    /* The in-process reference, under the name the README's figures use. */
    static struct tc_tier_ops ref_mutex;
    struct tb_engine *e = calloc(1, sizeof(*e));
    *out = NULL;
    if (e == NULL || (e->reg = tc_tier_registry_create()) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(e);
        return -1;
    }
    e->c = c;
    ref_mutex = tc_tier_mem_ops;
    ref_mutex.scheme = "ref-mutex";
    (void)tc_tier_register(e->reg, &ref_mutex);
    for (; e->n < c->ntiers; e->n++) {
        char e2[512] = "";
        enum tc_status st = tc_tier_open(e->reg, c->uris[e->n], &e->tiers[e->n], e2, sizeof(e2));
        if (st != TC_OK) {
            char red[TB_URI_MAX];
            snprintf(err, errlen, "tier '%s': %s",
                     tc_tier_uri_redact(c->uris[e->n], red, sizeof(red)),
                     e2[0] ? e2 : tc_strerror(st));
            tb_engine_close(e);
            return -1;
        }
    }
    *out = e;
    return 0;
}

void tb_engine_close(struct tb_engine *e)
{
    if (e == NULL) {
        return;
    }
    for (int i = e->n - 1; i >= 0; i--) {
        tc_tier_close(e->tiers[i]);
    }
    tc_tier_registry_destroy(e->reg);
    free(e);
}

static void stat_cb(void *arg, const char *name, uint64_t v, enum tc_stat_kind kind)
{
    struct tb_tier_stats *ts = arg;
    (void)kind;
    if (ts->n < TB_STATS_MAX && strlen(name) < sizeof(ts->s[0].name)) {
        strcpy(ts->s[ts->n].name, name);
        ts->s[ts->n++].value = v;
    }
}

void tb_engine_stats(struct tb_engine *e, struct tb_tier_stats *out)
{
    for (int i = 0; i < e->n; i++) {
        out[i].n = 0;
        tc_tier_stats(e->tiers[i], stat_cb, &out[i]);
    }
}

/* ---- the operation state machine ------------------------------------------- */

static void prep(struct slot *s)
{
    struct tc_tier_req *r = &s->req;
    memset(r, 0, sizeof(*r));
    r->key = s->key;
    r->key_len = s->key_len;
    r->now_ms = s->w->now_ms;
    r->done = on_done;
    r->arg = s;
}

static enum tc_status issue(struct slot *s)
{
    struct worker *w = s->w;
    struct tc_tier_req *r = &s->req;
    struct tc_tier_ctx *c = w->ctx[s->tier];
    prep(s);
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
        r->value_len = s->r.vsize;
        r->hdr.encoding = TC_ENC_BINARY;
        r->hdr.created_ms = w->now_ms;
        r->hdr.expire_ms = s->r.ttl_s ? w->now_ms + (uint64_t)s->r.ttl_s * 1000u : 0;
        return tc_tier_set(c, r);
    case PH_DEL:
        return tc_tier_del(c, r);
    }
    return TC_EINVAL;
}

static void refresh(struct worker *w)
{
    if ((++w->nops & 63) == 0) {
        w->now_ms = tc_clock_ms();
        struct tb_result *res = w->res;
        atomic_store_explicit(&w->wc->sh->prog_ops[w->wc->id], res->gets + res->sets + res->dels,
                              memory_order_relaxed);
        atomic_store_explicit(&w->wc->sh->prog_hits[w->wc->id], res->hits, memory_order_relaxed);
    }
    if (w->prefill) {
        return;
    }
    if ((w->nops & 63) == 0 || w->open) {
        enum tb_phase ph = tb_wctx_phase(w->wc);
        if (ph == TB_PH_TIMED && !w->counting) {
            w->counting = 1;
            w->res->start_ns = tc_clock_ns();
        }
        if (ph == TB_PH_STOP) {
            w->stopping = 1;
        }
    }
}

/* Starts the slot's next request; 0 when the slot should retire. t0 is the
 * request's intended start (open loop) or 0 (now). */
static int start_op(struct slot *s, uint64_t t0)
{
    struct worker *w = s->w;
    refresh(w);
    if (w->prefill) {
        if (w->pf_next >= w->pf_end) {
            return 0;
        }
        s->r = tb_gen_object(w->wc->gen, w->pf_next++);
        s->counted = 0;
    } else {
        if (w->stopping) {
            return 0;
        }
        if (!tb_wctx_next(w->wc, &s->r)) {
            w->stopping = 1;
            if (atomic_fetch_add(&w->wc->sh->finished, 1) == 0) {
                /* first worker to run out: nothing */
            }
            return 0;
        }
        s->counted = w->counting;
    }
    s->key_len = tb_req_key(&s->r, "", s->key);
    s->tier = 0;
    s->answered = 0;
    s->phase = s->r.op == TB_GET ? PH_GET : s->r.op == TB_SET ? PH_SET : PH_DEL;
    s->timed = s->counted && (w->open || (w->nops % LAT_EVERY) == 0);
    if (s->timed) {
        s->t0 = t0 ? t0 : tc_clock_ns();
    }
    return 1;
}

/* The request's answer is known (a get's hit or miss; a write's last tier). */
static void answer(struct slot *s, int hit_tier)
{
    struct worker *w = s->w;
    struct tb_result *res = w->res;
    if (s->answered) {
        return;
    }
    s->answered = 1;
    if (!s->counted) {
        return;
    }
    struct tb_lat *h;
    switch (s->r.op) {
    case TB_GET:
        res->gets++;
        if (hit_tier >= 0) {
            res->hits++;
            res->tier_hits[hit_tier]++;
            res->bytes_read += s->out.len;
        }
        h = &res->lat_get[hit_tier >= 0 ? hit_tier : TB_MAX_TIERS];
        break;
    case TB_SET:
        res->sets++;
        res->bytes_written += s->r.vsize;
        h = &res->lat_set;
        break;
    default:
        res->dels++;
        h = &res->lat_del;
        break;
    }
    if (s->timed) {
        tb_lat_add(h, tc_clock_ns() - s->t0);
    }
}

static void note_error(struct slot *s, enum tc_status st, const char *what)
{
    struct tb_result *res = s->w->res;
    res->errors++;
    if (res->error[0] == '\0') {
        char red[TB_URI_MAX];
        snprintf(res->error, sizeof(res->error), "%s on %s: %s", what,
                 tc_tier_uri_redact(tc_tier_uri(s->w->e->tiers[s->tier]), red, sizeof(red)),
                 tc_strerror(st));
    }
}

/* Advances slot s given the status of its last call, issuing calls until one
 * goes asynchronous or the slot retires. Iterative, so that synchronous tiers
 * never grow the stack. */
static void drive(struct slot *s, enum tc_status st)
{
    struct worker *w = s->w;
    int ntiers = w->e->n;
    for (;;) {
        int next = 0; /* 1: another call for this request; 0: request done */
        switch (s->phase) {
        case PH_GET:
            if (st == TC_OK) {
                answer(s, s->tier);
                if (s->tier > 0) {
                    s->hit_hdr = s->req.hdr;
                    s->hit_tier = s->tier;
                    s->phase = PH_FILL;
                    s->tier = 0;
                    next = 1;
                }
            } else {
                if (st != TC_ENOTFOUND) {
                    note_error(s, st, "get");
                }
                if (s->tier + 1 < ntiers) {
                    s->tier++;
                    next = 1;
                } else {
                    answer(s, -1);
                    if (w->wc->cell->wl->cache_aside) {
                        s->phase = PH_SET; /* the application sets what it missed */
                        s->tier = 0;
                        next = 1;
                    }
                }
            }
            break;
        case PH_FILL:
            if (st != TC_OK && st != TC_ETOOBIG) {
                note_error(s, st, "back-fill");
            }
            if (++s->tier < s->hit_tier) {
                next = 1;
            }
            break;
        case PH_SET:
            if (st == TC_ETOOBIG) {
                if (s->counted) {
                    w->res->sets_refused++;
                }
            } else if (st != TC_OK) {
                note_error(s, st, "set");
            }
            if (++s->tier < ntiers) {
                next = 1;
            } else {
                answer(s, -1);
            }
            break;
        case PH_DEL:
            if (st != TC_OK && st != TC_ENOTFOUND) {
                note_error(s, st, "delete");
            }
            if (++s->tier < ntiers) {
                next = 1;
            } else {
                answer(s, -1);
            }
            break;
        }
        if (!next) {
            if (w->open && !w->prefill) {
                /* Open loop: the slot waits for the next intended send. */
                s->next_free = w->free_head;
                w->free_head = (int)(s - w->slots);
                w->outstanding--;
                return;
            }
            if (!start_op(s, 0)) {
                w->outstanding--;
                return;
            }
            if (w->batch > 1 && s->phase == PH_GET && !w->prefill) {
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

static void launch(struct slot *s)
{
    s->w->outstanding++;
    enum tc_status st = issue(s);
    if (st != TC_EINPROGRESS) {
        drive(s, st);
    }
}

/* Closed loop: every slot runs request after request until it retires. */
static void run_closed(struct worker *w)
{
    w->outstanding = 0;
    for (int i = 0; i < w->inflight; i++) {
        struct slot *s = &w->slots[i];
        if (!start_op(s, 0)) {
            break;
        }
        launch(s);
    }
    while (w->outstanding > 0) {
        event_base_loop(w->base, EVLOOP_ONCE);
    }
}

/* Batches: the gets due at tier 0 go out together, the rest one by one. */
static void run_batches(struct worker *w)
{
    struct tc_tier_req *reqs[MAX_INFLIGHT];
    struct slot *who[MAX_INFLIGHT];
    w->outstanding = 0;
    for (int i = 0; i < w->inflight; i++) {
        struct slot *s = &w->slots[i];
        if (!start_op(s, 0)) {
            break;
        }
        if (s->phase == PH_GET) {
            w->outstanding++;
            s->ready = 1;
        } else {
            launch(s);
        }
    }
    while (w->outstanding > 0) {
        int m = 0;
        for (int i = 0; i < w->inflight; i++) {
            struct slot *s = &w->slots[i];
            if (s->ready) {
                s->ready = 0;
                prep(s);
                s->req.out = &s->out;
                reqs[m] = &s->req;
                who[m++] = s;
            }
        }
        if (m == 0) {
            event_base_loop(w->base, EVLOOP_ONCE);
            continue;
        }
        tc_tier_get_many(w->ctx[0], reqs, (size_t)m);
        for (int i = 0; i < m; i++) {
            if (reqs[i]->status != TC_EINPROGRESS) {
                drive(who[i], reqs[i]->status);
            }
        }
    }
}

/* Open loop: request i is due at start + i * interval whatever happened to
 * the ones before it; its latency counts from then (no coordinated
 * omission). When every slot is busy, due requests wait and count late. */
static void run_open(struct worker *w)
{
    w->outstanding = 0;
    w->free_head = -1;
    for (int i = w->inflight - 1; i >= 0; i--) {
        w->slots[i].next_free = w->free_head;
        w->free_head = i;
    }
    w->next_due = tc_clock_ns();
    while (!w->stopping || w->outstanding > 0) {
        uint64_t now = tc_clock_ns();
        while (!w->stopping && w->next_due <= now && w->free_head >= 0) {
            struct slot *s = &w->slots[w->free_head];
            if (!start_op(s, w->next_due)) {
                break;
            }
            if (s->counted && now - w->next_due > 1000000u) {
                w->res->late++; /* sent more than 1 ms after its time */
            }
            w->free_head = s->next_free;
            w->next_due += w->interval_ns;
            launch(s);
        }
        if (w->outstanding > 0) {
            event_base_loop(w->base, EVLOOP_NONBLOCK);
        }
        refresh(w);
        now = tc_clock_ns();
        if (!w->stopping && w->next_due > now && (w->free_head >= 0 || w->outstanding == 0)) {
            uint64_t ns = w->next_due - now;
            struct timespec ts = {0, (long)(ns < 50000 ? ns : 50000)};
            nanosleep(&ts, NULL);
        }
    }
}

void tb_engine_thread(struct tb_engine *e, struct tb_wctx *wc)
{
    const struct tb_workload *wl = wc->cell->wl;
    int batch = wc->cell->stack->batch;
    int inflight = wl->inflight > batch ? wl->inflight : batch;
    struct worker *w = calloc(1, sizeof(*w) + (size_t)inflight * sizeof(struct slot));
    size_t vmax = 1;
    char *value = NULL;
    int nctx = 0, ready = 0;

    if (wc->cell->trace != NULL) {
        for (size_t i = 0; i < wc->cell->ntrace; i++) {
            vmax = wc->cell->trace[i].vsize > vmax ? wc->cell->trace[i].vsize : vmax;
        }
    } else if (tb_dist_max(&wl->value_size) > vmax) {
        vmax = tb_dist_max(&wl->value_size);
    }
    value = malloc(vmax);
    if (w == NULL || value == NULL) {
        snprintf(wc->res->error, sizeof(wc->res->error), "out of memory");
        goto out;
    }
    memset(value, 'v', vmax);
    w->e = e;
    w->wc = wc;
    w->res = wc->res;
    w->value = value;
    w->inflight = inflight;
    w->batch = batch;
    w->now_ms = tc_clock_ms();
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(wc->res->error, sizeof(wc->res->error), "event_base_new failed");
        goto out;
    }
    for (; nctx < e->n; nctx++) {
        enum tc_status st = tc_tier_ctx_init(e->tiers[nctx], w->base, &w->ctx[nctx]);
        if (st != TC_OK) {
            char red[TB_URI_MAX];
            snprintf(wc->res->error, sizeof(wc->res->error), "ctx for %s: %s",
                     tc_tier_uri_redact(tc_tier_uri(e->tiers[nctx]), red, sizeof(red)),
                     tc_strerror(st));
            goto out;
        }
    }
    for (int i = 0; i < inflight; i++) {
        w->slots[i].w = w;
        tc_buf_init(&w->slots[i].out);
    }
    if (wc->prefill) {
        /* Each thread of the prefilling process writes its share of keys. */
        uint64_t per = (wl->keys + (uint64_t)wl->threads - 1) / (uint64_t)wl->threads;
        w->prefill = 1;
        w->pf_next = per * (uint64_t)wc->tidx;
        w->pf_end = w->pf_next + per < wl->keys ? w->pf_next + per : wl->keys;
        run_closed(w);
        w->prefill = 0;
    }
    tb_wctx_ready(wc);
    ready = 1;
    w->now_ms = tc_clock_ms();
    w->counting = tb_wctx_phase(wc) == TB_PH_TIMED;
    if (w->counting) {
        w->res->start_ns = tc_clock_ns();
    }
    if (wl->rate > 0) {
        int n = wl->threads * wl->processes;
        w->open = 1;
        w->interval_ns = (uint64_t)(1e9 * (double)n / wl->rate);
        if (w->interval_ns == 0) {
            w->interval_ns = 1;
        }
        run_open(w);
    } else if (batch > 1) {
        run_batches(w);
    } else {
        run_closed(w);
    }
    w->res->end_ns = tc_clock_ns();

out:
    if (!ready) {
        atomic_fetch_add(&wc->sh->ready, 1); /* failed early: let the parent move on */
    }
    if (w != NULL) {
        for (int i = 0; i < inflight; i++) {
            tc_buf_deinit(&w->slots[i].out);
        }
        for (int i = nctx - 1; i >= 0; i--) {
            tc_tier_ctx_dispose(w->ctx[i]);
        }
        if (w->base != NULL) {
            event_base_free(w->base);
        }
    }
    free(value);
    free(w);
}
