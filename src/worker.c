/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Worker threads: each owns an event_base, an HTTP server on its own
 * SO_REUSEPORT socket and a stack ctx (its own remote-tier connections), so
 * that nothing on the request path is shared between workers.
 */
#include "src/log.h"
#include "src/clock.h"
#include "src/worker.h"
#include "src/api.h"
#include "src/routes.h"
#include "src/tls.h"

#include <event2/event.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Single writer (this worker): a relaxed load and store, no locked
 * read-modify-write; readers pair with nothing (counters order nothing). */
static void bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

enum tc_worker_code tc_worker_code_slot(int status)
{
    switch (status) {
#define TC_X(c)                                                                                    \
    case c:                                                                                        \
        return TC_CODE_##c;
        TC_WORKER_CODES(TC_X)
#undef TC_X
    default:
        return TC_CODE_OTHER;
    }
}

const char *tc_worker_code_name(enum tc_worker_code slot)
{
    static const char *const names[TC_CODE_SLOTS] = {"other",
#define TC_X(c) #c,
                                                     TC_WORKER_CODES(TC_X)
#undef TC_X
    };
    return (unsigned)slot < TC_CODE_SLOTS ? names[slot] : "other";
}

unsigned tc_worker_method_slot(enum tc_http_method method)
{
    /* One bit per method, GET = 1 ... OTHER = 32, PURGE = 64. */
    unsigned m = (unsigned)method;
    unsigned other = (unsigned)__builtin_ctz(TC_HTTP_OTHER);
    unsigned slot = m != 0 ? (unsigned)__builtin_ctz(m) : other;
    return slot < TC_METHOD_SLOTS ? slot : other;
}

const char *tc_worker_method_name(unsigned slot)
{
    static const char *const names[TC_METHOD_SLOTS] = {
        "GET", "HEAD", "PUT", "DELETE", "POST", "OTHER", "OPTIONS", "PURGE", "PATCH"};
    return slot < TC_METHOD_SLOTS ? names[slot] : "OTHER";
}

void tc_worker_count_response(struct tc_worker *w, unsigned route, enum tc_http_method method,
                              int status, uint64_t ns)
{
    if (route >= TC_ROUTE_SLOTS) {
        route = TC_ROUTE_SLOTS - 1;
    }
    tc_hist_add(&w->requests[route][tc_worker_method_slot(method)][tc_worker_code_slot(status)],
                ns);
}

void tc_worker_count_read(struct tc_worker *w, enum tc_worker_read what, int tier)
{
    if (what == TC_READ_MISS) {
        bump(&w->read_misses);
    } else if (tier >= 0 && tier < TC_STACK_MAX_TIERS) {
        bump(what == TC_READ_HIT ? &w->read_hits[tier] : &w->read_stale[tier]);
    }
}

/* Requests being answered on this worker, over both listeners. */
static size_t worker_busy(const struct tc_worker *w)
{
    return tc_http_server_busy(w->http) + (w->https != NULL ? tc_http_server_busy(w->https) : 0);
}

void tc_worker_count_auth_failure(struct tc_worker *w, enum tc_auth_failure why)
{
    if ((unsigned)why < TC_AUTH_FAIL_N) {
        bump(&w->auth_failures[why]);
    }
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_worker *w = arg;
    (void)fd;
    (void)what;
    if (worker_busy(w) == 0 || tc_clock_ns() >= w->stop_deadline_ns) {
        if (worker_busy(w) != 0) {
            tc_log(TC_LOG_WARN, "worker %d: %zu requests still in flight at shutdown", w->id,
                   worker_busy(w));
        }
        event_base_loopexit(w->base, NULL);
        return;
    }
    struct timeval tv = {0, 10000};
    event_add(w->drain_ev, &tv);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_worker *w = arg;
    (void)fd;
    (void)what;
    tc_http_server_stop_accepting(w->http);
    if (w->https != NULL) {
        tc_http_server_stop_accepting(w->https);
    }
    tc_keylock_home_shutdown(w->home); /* parked requests answer now */
    w->stop_deadline_ns = tc_clock_ns() + w->srv->conf->shutdown_timeout_ms * 1000000u;
    drain_cb(-1, 0, w);
}

static void *worker_main(void *arg)
{
    struct tc_worker *w = arg;
    struct tc_server *srv = w->srv;
    const struct tc_conf *c = srv->conf;
    struct tc_http_limits limits = {
        .max_header_size = c->max_header_size,
        /* A JSON body may escape bytes (\u00XX), so allow room beyond max-value. */
        .max_body = c->max_value * 2 + 65536,
        .idle_timeout_ms = c->idle_timeout_ms,
        .header_timeout_ms = c->header_timeout_ms,
        .body_timeout_ms = c->body_timeout_ms,
        .max_connections = c->max_connections,
        .max_pending_body = c->max_pending_body,
        .conn_count = &srv->conn_count,
        .body_pending = &srv->body_pending,
    };

    w->base = event_base_new();
    if (w->base == NULL) {
        tc_log(TC_LOG_CRIT, "worker %d: event_base_new failed", w->id);
        goto fail;
    }
    if (tc_stack_ctx_init(srv->stack, w->base, &w->sc) != TC_OK) {
        goto fail;
    }
    if (tc_keylock_home_init(srv->keylock, (size_t)w->id, w->base,
                             srv->lock_tier >= 0 ? tc_stack_ctx_tier(w->sc, (size_t)srv->lock_tier)
                                                 : NULL,
                             &w->home) != TC_OK) {
        tc_log(TC_LOG_CRIT, "worker %d: out of memory", w->id);
        goto fail;
    }
    if (srv->origin != NULL && tc_origin_ctx_init(srv->origin, w->base, &w->origin) != TC_OK) {
        tc_log(TC_LOG_CRIT, "worker %d: out of memory", w->id);
        goto fail;
    }
    w->auth = tc_auth_view_create(srv->auth);
    if (w->auth == NULL) {
        tc_log(TC_LOG_CRIT, "worker %d: out of memory", w->id);
        goto fail;
    }
    if (srv->count_tier >= 0) {
        w->count_ctx = tc_stack_ctx_tier(w->sc, (size_t)srv->count_tier);
    } else if (srv->count_own != NULL) {
        if (tc_tier_ctx_init(srv->count_own, w->base, &w->count_own_ctx) != TC_OK) {
            tc_log(TC_LOG_CRIT, "worker %d: out of memory", w->id);
            goto fail;
        }
        w->count_ctx = w->count_own_ctx;
    }
    w->rt = (struct tc_rt_env){w->sc, w->home, srv->keylock, w->origin, &srv->rt_opt, NULL, 0};
    w->http = tc_http_server_create(w->base, w->fd, &limits, tc_routes_handle, w);
    w->fd = -1; /* taken over, even on failure */
    w->stop_ev = event_new(w->base, -1, 0, stop_cb, w);
    w->drain_ev = evtimer_new(w->base, drain_cb, w);
    if (w->http == NULL || w->stop_ev == NULL || w->drain_ev == NULL) {
        tc_log(TC_LOG_CRIT, "worker %d: cannot start its HTTP server", w->id);
        goto fail;
    }
    if (w->tls_fd >= 0) {
        w->https = tc_http_server_create(w->base, w->tls_fd, &limits, tc_routes_handle, w);
        w->tls_fd = -1; /* taken over, even on failure */
        if (w->https == NULL) {
            tc_log(TC_LOG_CRIT, "worker %d: cannot start its TLS server", w->id);
            goto fail;
        }
        tc_http_server_set_tls(w->https, srv->tls, c->tls_handshake_timeout_ms);
    }
    atomic_store(&w->ready, 1);
    event_base_dispatch(w->base);
    pthread_mutex_lock(&srv->done_lock);
    srv->done++;
    pthread_cond_broadcast(&srv->done_cond);
    while (srv->done < srv->nworkers) {
        pthread_cond_wait(&srv->done_cond, &srv->done_lock);
    }
    pthread_mutex_unlock(&srv->done_lock);
    tc_http_server_destroy(w->http);
    w->http = NULL;
    tc_http_server_destroy(w->https);
    w->https = NULL;
    tc_keylock_home_shutdown(w->home);
    tc_origin_ctx_dispose(w->origin); /* fetches in flight answer (unavailable) */
    w->origin = NULL;
    tc_tier_ctx_dispose(w->count_own_ctx);
    w->count_own_ctx = w->count_ctx = NULL;
    tc_stack_ctx_dispose(w->sc); /* lock operations in flight complete first */
    w->sc = NULL;
    tc_keylock_home_dispose(w->home);
    w->home = NULL;
    tc_rt_env_deinit(&w->rt);
    tc_api_cache_pool_destroy(w->cache_pool);
    w->cache_pool = NULL;
    tc_auth_view_destroy(w->auth);
    w->auth = NULL;
    event_free(w->stop_ev);
    event_free(w->drain_ev);
    event_base_free(w->base);
    w->base = NULL;
    return NULL;
fail:
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->tls_fd >= 0) {
        close(w->tls_fd);
        w->tls_fd = -1;
    }
    tc_http_server_destroy(w->http);
    w->http = NULL;
    tc_http_server_destroy(w->https);
    w->https = NULL;
    if (w->home != NULL) {
        tc_keylock_home_shutdown(w->home);
    }
    tc_origin_ctx_dispose(w->origin);
    w->origin = NULL;
    tc_tier_ctx_dispose(w->count_own_ctx);
    w->count_own_ctx = w->count_ctx = NULL;
    tc_stack_ctx_dispose(w->sc);
    w->sc = NULL;
    tc_keylock_home_dispose(w->home);
    w->home = NULL;
    tc_auth_view_destroy(w->auth);
    w->auth = NULL;
    if (w->stop_ev != NULL) {
        event_free(w->stop_ev);
    }
    if (w->drain_ev != NULL) {
        event_free(w->drain_ev);
    }
    if (w->base != NULL) {
        event_base_free(w->base);
        w->base = NULL;
    }
    pthread_mutex_lock(&srv->done_lock);
    srv->done++;
    pthread_cond_broadcast(&srv->done_cond);
    pthread_mutex_unlock(&srv->done_lock);
    atomic_store(&w->ready, -1);
    return NULL;
}

/* One listening socket per worker on host:*port, stored at offset @p
 * fd_off of each struct tc_worker (fd, or tls_fd for listen-tls). The first
 * socket fixes the port (port 0 picks one, written back to *port); the
 * others join it with SO_REUSEPORT, or share it (listener=shared: every
 * worker polls one accept queue; kept to compare, see docs/benchmarks.md).
 * Closes what it opened on failure. */
static enum tc_status open_listeners(struct tc_server *srv, const char *host, unsigned *port,
                                     size_t fd_off)
{
#define WORKER_FD(i) (*(int *)((char *)&srv->workers[i] + fd_off))
    for (size_t i = 0; i < srv->nworkers; i++) {
        if (i > 0 && srv->conf->listener_shared) {
            WORKER_FD(i) = fcntl(WORKER_FD(0), F_DUPFD_CLOEXEC, 0);
        } else {
            WORKER_FD(i) = tc_http_listen(host, *port, port);
        }
        if (WORKER_FD(i) < 0) {
            for (size_t k = 0; k < i; k++) {
                close(WORKER_FD(k));
                WORKER_FD(k) = -1;
            }
            return TC_EIO;
        }
    }
    return TC_OK;
#undef WORKER_FD
}

enum tc_status tc_worker_start_all(struct tc_server *srv)
{
    const struct tc_conf *c = srv->conf;
    unsigned port = c->listen_port, tls_port = c->listen_tls_port;
    for (size_t i = 0; i < srv->nworkers; i++) {
        srv->workers[i].srv = srv;
        srv->workers[i].id = (int)i;
        srv->workers[i].fd = -1;
        srv->workers[i].tls_fd = -1;
    }
    if (open_listeners(srv, c->listen_host, &port, offsetof(struct tc_worker, fd)) != TC_OK) {
        return TC_EIO;
    }
    srv->port = port;
    if (srv->tls != NULL && open_listeners(srv, c->listen_tls_host, &tls_port,
                                           offsetof(struct tc_worker, tls_fd)) != TC_OK) {
        for (size_t k = 0; k < srv->nworkers; k++) {
            close(srv->workers[k].fd);
            srv->workers[k].fd = -1;
        }
        return TC_EIO;
    }
    srv->tls_port = tls_port;
    for (size_t i = 0; i < srv->nworkers; i++) {
        struct tc_worker *w = &srv->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            tc_log(TC_LOG_CRIT, "pthread_create failed for worker %zu", i);
            atomic_store(&w->ready, -1);
            close(w->fd);
            w->fd = -1;
            if (w->tls_fd >= 0) {
                close(w->tls_fd);
                w->tls_fd = -1;
            }
            pthread_mutex_lock(&srv->done_lock);
            srv->done++;
            pthread_mutex_unlock(&srv->done_lock);
            continue;
        }
        w->started = 1;
    }
    int failed = 0;
    for (size_t i = 0; i < srv->nworkers; i++) {
        while (atomic_load(&srv->workers[i].ready) == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        failed |= atomic_load(&srv->workers[i].ready) < 0;
    }
    return failed ? TC_EIO : TC_OK;
}

void tc_worker_stop_all(struct tc_server *srv)
{
    for (size_t i = 0; i < srv->nworkers; i++) {
        struct tc_worker *w = &srv->workers[i];
        if (atomic_load(&w->ready) == 1) {
            /* Thread-safe because main() called evthread_use_pthreads(). */
            event_active(w->stop_ev, EV_READ, 0);
        }
    }
}

void tc_worker_join_all(struct tc_server *srv)
{
    for (size_t i = 0; i < srv->nworkers; i++) {
        if (srv->workers[i].started) {
            pthread_join(srv->workers[i].thread, NULL);
        }
    }
}
