/*
 * The server and its workers: one struct tc_server built by main() and
 * handed down (STYLE R10), N workers each with its own thread, event_base,
 * HTTP server, stack ctx, key-lock home and origin connections.
 */
#ifndef TC_SRC_WORKER_H
#define TC_SRC_WORKER_H

#include "src/conf.h"
#include "src/http.h"
#include "src/keylock.h"
#include "src/origin.h"
#include "src/readthrough.h"
#include "src/stack.h"

#include <pthread.h>
#include <stdatomic.h>

#define TC_STATUS_CODES 600

struct tc_worker {
    struct tc_server *srv;
    int id;
    pthread_t thread;
    int started; /* thread was created */
    int fd;      /* listening socket, handed to the HTTP server */
    struct event_base *base;
    struct tc_http_server *http;
    struct tc_stack_ctx *sc;
    struct tc_keylock_home *home; /* this worker's part of the lock table */
    struct tc_origin_ctx *origin; /* its connections to the origin, or NULL */
    struct tc_rt_env rt;          /* the above, for read-through */
    struct event *stop_ev, *drain_ev;
    uint64_t stop_deadline_ns;
    _Atomic int ready;                           /* 1 once serving, -1 if setup failed */
    _Atomic uint64_t by_status[TC_STATUS_CODES]; /* single writer: this worker */
};

struct tc_server {
    const struct tc_conf *conf;
    struct tc_stack *stack;
    struct tc_keylock *keylock;
    struct tc_origin *origin;    /* --origin, or NULL */
    struct tc_rt_options rt_opt; /* read-through's settings, from conf */
    int lock_tier;               /* index of the tier holding the locks, -1: worker-pool scope */
    struct tc_worker *workers;
    size_t nworkers;
    uint64_t start_ms;
    unsigned port;
    _Atomic uint64_t conn_count;
    _Atomic uint64_t body_pending; /* bytes held by request bodies being received */
    _Atomic uint64_t sweeps[TC_STACK_MAX_TIERS];
    _Atomic uint64_t swept[TC_STACK_MAX_TIERS];
    /* Workers tear down only after every worker has stopped serving, so that
     * a /stats request never reads another worker's freed state. */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond;
    size_t done;
};

/** Starts the workers' threads; returns once each is serving or failed. */
enum tc_status tc_workers_start(struct tc_server *srv);

/** Asks every worker to stop (thread-safe, async-signal-unsafe). */
void tc_workers_stop(struct tc_server *srv);

/** Joins the workers and frees them. */
void tc_workers_join(struct tc_server *srv);

/** Counts a response status for the worker. */
void tc_worker_count_status(struct tc_worker *w, int status);

#endif
