/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* MAP_ANONYMOUS under strict C11 */
#include "bench/driver.h"
#include "bench/engine.h"
#include "bench/httpc.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void tb_result_merge(struct tb_result *dst, const struct tb_result *src)
{
    dst->gets += src->gets;
    dst->sets += src->sets;
    dst->dels += src->dels;
    dst->hits += src->hits;
    dst->errors += src->errors;
    dst->sets_refused += src->sets_refused;
    dst->late += src->late;
    dst->bytes_read += src->bytes_read;
    dst->bytes_written += src->bytes_written;
    for (int i = 0; i < TB_MAX_TIERS; i++) {
        dst->tier_hits[i] += src->tier_hits[i];
    }
    for (int i = 0; i <= TB_MAX_TIERS; i++) {
        tb_lat_merge(&dst->lat_get[i], &src->lat_get[i]);
    }
    tb_lat_merge(&dst->lat_set, &src->lat_set);
    tb_lat_merge(&dst->lat_del, &src->lat_del);
    if (dst->error[0] == '\0' && src->error[0] != '\0') {
        memcpy(dst->error, src->error, sizeof(dst->error));
    }
}

enum tb_phase tb_wctx_phase(const struct tb_wctx *w)
{
    return (enum tb_phase)atomic_load_explicit(&w->sh->phase, memory_order_relaxed);
}

int tb_wctx_next(struct tb_wctx *w, struct tb_req *out)
{
    if (w->cell->trace != NULL) {
        uint64_t i = atomic_fetch_add_explicit(&w->sh->trace_pos, 1, memory_order_relaxed);
        if (i >= w->cell->ntrace) {
            return 0;
        }
        *out = w->cell->trace[i];
        return 1;
    }
    *out = w->stream[w->nstream++ & (TB_STREAM_LEN - 1)];
    return 1;
}

void tb_wctx_ready(struct tb_wctx *w)
{
    atomic_fetch_add(&w->sh->ready, 1);
    while (tb_wctx_phase(w) == TB_PH_PREFILL) {
        usleep(200);
    }
}

struct proc {
    const struct tb_cell *c;
    struct tb_shared *sh;
    struct tb_engine *eng;
    int pidx, prefill;
};

struct targ {
    struct proc *p;
    int tidx;
};

static void *thread_main(void *argp)
{
    struct targ *ta = argp;
    struct proc *p = ta->p;
    const struct tb_workload *wl = p->c->wl;
    int id = p->pidx * wl->threads + ta->tidx;
    struct tb_wctx w = {.cell = p->c,
                        .sh = p->sh,
                        .res = &p->sh->res[id],
                        .id = id,
                        .tidx = ta->tidx,
                        .pidx = p->pidx,
                        .prefill = p->prefill};
    w.gen = tb_gen_create(wl);
    if (p->c->trace == NULL) {
        w.stream = malloc(TB_STREAM_LEN * sizeof(*w.stream));
        if (w.stream != NULL && w.gen != NULL) {
            /* Worker 0's stream is the one the simulators replay (same seed). */
            tb_gen_fill(w.gen, wl->seed + (uint64_t)id, w.stream, TB_STREAM_LEN);
        }
    }
    if (w.gen == NULL || (p->c->trace == NULL && w.stream == NULL)) {
        snprintf(w.res->error, sizeof(w.res->error), "out of memory");
        atomic_fetch_add(&p->sh->ready, 1);
    } else if (p->eng != NULL) {
        tb_engine_thread(p->eng, &w);
    } else {
        tb_http_thread(&w);
    }
    free(w.stream);
    tb_gen_destroy(w.gen);
    return NULL;
}

static int process_main(const struct tb_cell *c, struct tb_shared *sh, int pidx, int prefill)
{
    struct proc p = {.c = c, .sh = sh, .pidx = pidx, .prefill = prefill};
    const struct tb_workload *wl = c->wl;
    pthread_t th[64];
    struct targ ta[64];
    int started = 0, rc = 0;
    if (c->stack->url[0] == '\0') {
        char err[512];
        if (tb_engine_open(c, &p.eng, err, sizeof(err)) != 0) {
            snprintf(sh->res[pidx * wl->threads].error, sizeof(sh->res[0].error), "%.1000s", err);
            atomic_fetch_add(&sh->ready, wl->threads);
            return 1;
        }
    }
    for (int t = 0; t < wl->threads; t++) {
        ta[t] = (struct targ){&p, t};
        if (pthread_create(&th[t], NULL, thread_main, &ta[t]) != 0) {
            snprintf(sh->res[pidx * wl->threads + t].error, sizeof(sh->res[0].error),
                     "pthread_create failed");
            atomic_fetch_add(&sh->ready, wl->threads - t);
            rc = 1;
            break;
        }
        started++;
    }
    for (int t = 0; t < started; t++) {
        pthread_join(th[t], NULL);
    }
    if (p.eng != NULL && pidx == 0) {
        tb_engine_stats(p.eng, sh->tstats);
    }
    tb_engine_close(p.eng);
    return rc;
}

/* Tiers whose data every process of the host shares are prefilled once. */
static int all_shared(const struct tb_cell *c)
{
    for (int i = 0; i < c->ntiers; i++) {
        if (strncmp(c->uris[i], "mem:", 4) == 0 || strncmp(c->uris[i], "ref-mutex:", 10) == 0) {
            return 0;
        }
    }
    return 1;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void progress_line(struct tb_shared *sh, int n, const struct tb_cell *c, double t,
                          uint64_t *last_ops, uint64_t *last_hits, double dt)
{
    uint64_t ops = 0, hits = 0;
    for (int i = 0; i < n; i++) {
        ops += atomic_load_explicit(&sh->prog_ops[i], memory_order_relaxed);
        hits += atomic_load_explicit(&sh->prog_hits[i], memory_order_relaxed);
    }
    double rate = (double)(ops - *last_ops) / dt;
    double hr = ops > *last_ops ? (double)(hits - *last_hits) / (double)(ops - *last_ops) : 0;
    fprintf(stderr, "\r\033[K%s / %s: %5.1fs %s %10.0f req/s, hits %.3f of requests",
            c->stack->name, c->wl->name, t,
            atomic_load(&sh->phase) == TB_PH_WARMUP ? "warm-up" : "timed  ", rate, hr);
    fflush(stderr);
    *last_ops = ops;
    *last_hits = hits;
}

/* Waits until @p deadline_ns, the stop flag, or every worker finishing the
 * trace; prints progress every second on the way. */
static void wait_phase(struct tb_shared *sh, int n, const struct tb_cell *c, uint64_t t0,
                       uint64_t deadline_ns, volatile sig_atomic_t *stop, int progress,
                       uint64_t *lo, uint64_t *lh, uint64_t *last_print)
{
    for (;;) {
        uint64_t now = tc_clock_ns();
        if (now >= deadline_ns || *stop || atomic_load(&sh->finished) >= n) {
            return;
        }
        if (progress && now - *last_print >= 1000000000u) {
            progress_line(sh, n, c, (double)(now - t0) / 1e9, lo, lh,
                          (double)(now - *last_print) / 1e9);
            *last_print = now;
        }
        uint64_t left = deadline_ns - now;
        sleep_ns(left < 20000000u ? left : 20000000u);
    }
}

int tb_driver_run(const struct tb_cell *c, volatile sig_atomic_t *stop, int progress,
                  struct tb_result *out, double *seconds, struct tb_tier_stats *tstats, char *err,
                  size_t errlen)
{
    const struct tb_workload *wl = c->wl;
    int n = wl->threads * wl->processes;
    if (n > TB_MAX_WORKERS) {
        snprintf(err, errlen, "at most %d threads in all", TB_MAX_WORKERS);
        return -1;
    }
    size_t shsize = sizeof(struct tb_shared) + (size_t)n * sizeof(struct tb_result);
    struct tb_shared *sh =
        mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        snprintf(err, errlen, "mmap(%zu) failed: %s", shsize, strerror(errno));
        return -1;
    }
    int shared = all_shared(c);
    pid_t pids[64];
    int nchild = 0, rc = 0;
    fflush(NULL); /* children must not flush the parent's buffers again */
    for (int p = 0; p < wl->processes; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            snprintf(err, errlen, "fork failed: %s", strerror(errno));
            rc = -1;
            break;
        }
        if (pid == 0) {
            /* The parent handles SIGINT and stops the cell through sh->phase. */
            signal(SIGINT, SIG_IGN);
            signal(SIGTERM, SIG_DFL);
            _exit(process_main(c, sh, p, wl->prefill && (p == 0 || !shared)));
        }
        pids[nchild++] = pid;
    }
    /* Prefill (untimed), then warm-up, then the timed window. */
    while (rc == 0 && atomic_load(&sh->ready) < n && !*stop) {
        int status;
        pid_t dead = waitpid(-1, &status, WNOHANG);
        if (dead > 0) {
            for (int i = 0; i < nchild; i++) {
                if (pids[i] == dead) {
                    pids[i] = 0;
                }
            }
            if (atomic_load(&sh->ready) < n) {
                rc = -1;
                snprintf(err, errlen, "a worker process exited before the run started");
            }
        }
        sleep_ns(1000000);
    }
    uint64_t lo = 0, lh = 0, t0 = tc_clock_ns(), last = t0, start = t0, end = t0;
    if (rc == 0 && !*stop) {
        atomic_store(&sh->phase, wl->warmup > 0 ? TB_PH_WARMUP : TB_PH_TIMED);
        if (wl->warmup > 0) {
            wait_phase(sh, n, c, t0, t0 + (uint64_t)(wl->warmup * 1e9), stop, progress, &lo, &lh,
                       &last);
            atomic_store(&sh->phase, TB_PH_TIMED);
        }
        start = tc_clock_ns();
        wait_phase(sh, n, c, t0, start + (uint64_t)(wl->seconds * 1e9), stop, progress, &lo, &lh,
                   &last);
    }
    atomic_store(&sh->phase, TB_PH_STOP);
    end = tc_clock_ns();
    for (int i = 0; i < nchild; i++) {
        int status;
        if (pids[i] > 0 && waitpid(pids[i], &status, 0) > 0 &&
            (!WIFEXITED(status) || WEXITSTATUS(status) != 0) && rc == 0) {
            rc = -1;
            snprintf(err, errlen, "worker process %d failed (%s %d)", i,
                     WIFEXITED(status) ? "exit" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
    }
    if (progress) {
        fprintf(stderr, "\r\033[K");
    }
    memset(out, 0, sizeof(*out));
    uint64_t wstart = UINT64_MAX, wend = 0;
    for (int i = 0; i < n; i++) {
        struct tb_result *r = &sh->res[i];
        tb_result_merge(out, r);
        if (r->start_ns && r->start_ns < wstart) {
            wstart = r->start_ns;
        }
        if (r->end_ns > wend) {
            wend = r->end_ns;
        }
    }
    /* The timed window is the workers' own (a trace may end early). */
    *seconds = wend > wstart && wstart != UINT64_MAX ? (double)(wend - wstart) / 1e9
                                                     : (double)(end - start) / 1e9;
    memcpy(tstats, sh->tstats, sizeof(sh->tstats));
    if (rc != 0 && out->error[0] != '\0') {
        snprintf(err, errlen, "%s", out->error);
    }
    munmap(sh, shsize);
    return rc;
}
