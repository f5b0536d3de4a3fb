/*
 * tiercache: set-up in dependency order, serve, tear down in exactly the
 * reverse order (STYLE R5):
 *
 *   conf → log → tiers (registry) → stack → workers → signals/sweeper loop
 */
#include "src/conf.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/worker.h"
#include "src/hist.h"
#include "tiers/tier.h"
#include "shm/ring.h"

#include <event2/event.h>
#include <jansson.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *const default_tiers[] = {
    "shm://tiercache?size=64M",
    "lmdb://./data/l2",
};

struct main_ctx {
    struct tc_server *srv;
    struct event_base *base;
    struct event *sweep_ev;
    int stopping;
};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct main_ctx *m = arg;
    (void)what;
    if (sig == SIGHUP) {
        tc_log_reopen();
        tc_log(TC_LOG_INFO, "SIGHUP: log files reopened");
        return;
    }
    if (m->stopping) {
        return;
    }
    m->stopping = 1;
    tc_log(TC_LOG_INFO, "%s: stopping (finishing in-flight requests)",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    tc_workers_stop(m->srv);
    event_base_loopexit(m->base, NULL);
}

/* The sweeper: bounded expiry work on every tier, then a health check that
 * lets the stack skip tiers that are down. Runs on the main thread, never on
 * a worker, so a sweep cannot stall a request. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct main_ctx *m = arg;
    struct tc_server *srv = m->srv;
    (void)fd;
    (void)what;
    uint64_t now = tc_clock_ms();
    for (size_t i = 0; i < tc_stack_ntiers(srv->stack); i++) {
        uint64_t removed = 0;
        uint64_t t0 = tc_clock_ns();
        enum tc_status st =
            tc_tier_sweep(tc_stack_tier(srv->stack, i), now, srv->conf->sweep_budget, &removed);
        if (st == TC_ENOTSUP) {
            continue;
        }
        atomic_fetch_add(&srv->sweeps[i], 1);
        atomic_fetch_add(&srv->swept[i], removed);
        if (st != TC_OK && st != TC_EAGAIN) {
            tc_log(TC_LOG_WARN, "sweep of tier l%zu failed: %s", i + 1, tc_strerror(st));
        } else if (removed > 0) {
            tc_log(TC_LOG_DEBUG, "sweep of tier l%zu removed %llu in %llu us", i + 1,
                   (unsigned long long)removed, (unsigned long long)(tc_clock_ns() - t0) / 1000);
        }
    }
    char detail[512];
    tc_stack_check_health(srv->stack, detail, sizeof(detail));
}

/* Lets max-connections actually be reached: the default soft limit on file
 * descriptors (often 1024) is raised toward the hard limit. */
static void raise_fd_limit(uint64_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) {
        return;
    }
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? (rlim_t)want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want) {
        tc_log(TC_LOG_WARN,
               "open files are limited to %llu (hard limit; was %llu): fewer than the %llu "
               "that max-connections %llu needs; raise the limit (ulimit -n) or lower the setting",
               (unsigned long long)rl.rlim_cur, (unsigned long long)old, (unsigned long long)want,
               (unsigned long long)want - 256);
    }
}

static int open_tiers(const struct tc_conf *conf, struct tc_tier **tiers, size_t *n)
{
    struct tc_tier_registry *reg = tc_tier_registry_create();
    const char *uris[TC_CONF_MAX_TIERS];
    size_t nuris = 0;
    if (reg == NULL) {
        tc_log(TC_LOG_CRIT, "out of memory");
        return -1;
    }
    if (conf->ntiers > 0) {
        for (size_t i = 0; i < conf->ntiers; i++) {
            uris[nuris++] = conf->tiers[i];
        }
    } else {
        for (size_t i = 0; i < sizeof(default_tiers) / sizeof(default_tiers[0]); i++) {
            char scheme[16];
            if (sscanf(default_tiers[i], "%15[a-z+]", scheme) != 1 ||
                tc_tier_registry_find(reg, scheme) == NULL) {
                tc_log(TC_LOG_WARN, "default tier %s is not in this build, skipped",
                       default_tiers[i]);
                continue;
            }
            uris[nuris++] = default_tiers[i];
        }
        if (nuris == 0) {
            uris[nuris++] = "mem://?size=64M";
            tc_log(TC_LOG_WARN, "no default tier is in this build; using %s", uris[0]);
        }
    }
    *n = 0;
    for (size_t i = 0; i < nuris; i++) {
        char err[512];
        enum tc_status st = tc_tier_open(reg, uris[i], &tiers[i], err, sizeof(err));
        if (st != TC_OK) {
            /* The URI as given may hold a password: quoted redacted only. */
            char shown[1024];
            tc_tier_uri_redact(uris[i], shown, sizeof(shown));
            tc_log(TC_LOG_CRIT, "--tier '%s': %s", shown, err[0] ? err : tc_strerror(st));
            fprintf(stderr, "tiercache: --tier '%s': %s\n", shown, err[0] ? err : tc_strerror(st));
            for (size_t k = i; k-- > 0;) {
                tc_tier_close(tiers[k]);
            }
            tc_tier_registry_destroy(reg);
            return -1;
        }
        if (err[0] != '\0') {
            /* Opened, but the backend had to repair something on the way
             * (e.g. a damaged LMDB environment moved aside): tier.h. */
            tc_log(TC_LOG_CRIT, "tier l%zu: %s", i + 1, err);
        }
        tc_log(TC_LOG_INFO, "tier l%zu: %s (ttl_ratio=%g, max_ttl=%llums, max value %zu bytes)",
               i + 1, tc_tier_uri(tiers[i]), tc_tier_ttl_ratio(tiers[i]),
               (unsigned long long)tc_tier_max_ttl_ms(tiers[i]), tc_tier_max_value(tiers[i]));
        (*n)++;
    }
    tc_tier_registry_destroy(reg);
    return 0;
}

/* `tiercache shm stats NAME` and `tiercache shm unlink NAME`: inspection of
 * an L1 segment from outside any server, through the ring library alone. */
static int shm_command(int argc, char **argv)
{
    char err[512] = "";
    if (argc != 4 || (strcmp(argv[2], "stats") != 0 && strcmp(argv[2], "unlink") != 0)) {
        fprintf(stderr, "Usage: tiercache shm stats NAME   print a segment's state as JSON\n"
                        "       tiercache shm unlink NAME  remove a segment\n");
        return 2;
    }
    const char *name = argv[3];
    if (strcmp(argv[2], "unlink") == 0) {
        enum tc_status st = tc_ring_unlink(name, err, sizeof(err));
        if (st != TC_OK) {
            fprintf(stderr, "tiercache: shm unlink %s: %s\n", name, err[0] ? err : tc_strerror(st));
            return 1;
        }
        return 0;
    }
    struct tc_ring *ring;
    /* Attach only, any size, any owner and mode: it only reads, and shows
     * owner and mode so that a squatted segment can be seen for what it is. */
    struct tc_ring_options o = {.size = 0, .attach_timeout_ms = 500, .any_owner = 1};
    enum tc_status st = tc_ring_open(name, &o, &ring, err, sizeof(err));
    if (st != TC_OK) {
        fprintf(stderr, "tiercache: shm stats %s: %s\n", name, err[0] ? err : tc_strerror(st));
        return 1;
    }
    struct tc_ring_stats rs;
    char why[512];
    tc_ring_stats(ring, &rs);
    int damaged = tc_ring_check(ring, why, sizeof(why)) != TC_OK;
    tc_ring_close(ring);
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(name));
    json_object_set_new(j, "layout", json_sprintf("%u.%u", rs.layout_major, rs.layout_minor));
    json_object_set_new(j, "creator_pid", json_integer((json_int_t)rs.creator_pid));
    json_object_set_new(j, "owner_uid", json_integer((json_int_t)rs.seg_uid));
    json_object_set_new(j, "group_gid", json_integer((json_int_t)rs.seg_gid));
    json_object_set_new(j, "mode", json_sprintf("%04o", (unsigned)rs.seg_mode));
    json_object_set_new(j, "capacity", json_integer((json_int_t)rs.seg_size));
    json_object_set_new(j, "log_capacity", json_integer((json_int_t)rs.log_capacity));
    json_object_set_new(j, "bytes_used", json_integer((json_int_t)rs.bytes_used));
    json_object_set_new(j, "items", json_integer((json_int_t)rs.items));
    json_object_set_new(j, "index_slots", json_integer((json_int_t)rs.slots));
    json_object_set_new(j, "attached_ctxs", json_integer((json_int_t)rs.ctxs));
    json_object_set_new(j, "lock_slots", json_integer((json_int_t)rs.lock_slots));
    json_object_set_new(j, "locks_held", json_integer((json_int_t)rs.locks_held));
    json_object_set_new(j, "stats_rejected", json_integer((json_int_t)rs.stats_rejected));
    json_object_set_new(j, "check", json_string(damaged ? why : "ok"));
#define TC_RING_X(field, i) json_object_set_new(j, #field, json_integer((json_int_t)rs.field));
    TC_RING_STATS_COUNTERS(TC_RING_X)
#undef TC_RING_X
    uint64_t lookups = rs.hits + rs.misses;
    json_object_set_new(j, "hit_ratio",
                        json_real(lookups ? (double)rs.hits / (double)lookups : 0.0));
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(j);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "shm") == 0) {
        return shm_command(argc, argv); /* a tool, before any server set-up */
    }
    struct tc_conf conf;
    enum tc_conf_result cr = tc_conf_load(&conf, argc, argv);
    if (cr != TC_CONF_RUN) {
        tc_conf_deinit(&conf);
        return cr == TC_CONF_EXIT ? 0 : 2;
    }
    if (tc_log_setup((enum tc_log_level)conf.log_level, conf.log_file, conf.access_log) != TC_OK) {
        tc_conf_deinit(&conf);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(conf.max_connections + 256);
    if (conf.max_pending_body < conf.max_value) {
        tc_log(TC_LOG_WARN,
               "max-pending-body (%llu) is below max-value (%llu): larger uploads get 503",
               (unsigned long long)conf.max_pending_body, (unsigned long long)conf.max_value);
    }
    if (evthread_use_pthreads() != 0) {
        tc_log(TC_LOG_CRIT, "evthread_use_pthreads failed");
        return 1;
    }

    int rc = 1;
    struct tc_tier *tiers[TC_CONF_MAX_TIERS];
    size_t ntiers = 0;
    struct tc_server srv;
    struct main_ctx m = {0};
    struct event *sig_ev[3] = {0};
    memset(&srv, 0, sizeof(srv));
    pthread_mutex_init(&srv.done_lock, NULL);
    pthread_cond_init(&srv.done_cond, NULL);
    srv.conf = &conf;
    srv.start_ms = tc_clock_ms();

    if (open_tiers(&conf, tiers, &ntiers) != 0) {
        goto out_conf;
    }
    srv.rt_opt = (struct tc_rt_options){.default_ttl_ms = conf.default_ttl_ms,
                                        .max_ttl_ms = conf.max_ttl_ms,
                                        .grace_ms = conf.grace_ms,
                                        .lease_ms = conf.lease_ms,
                                        .origin_timeout_ms = conf.origin_timeout_ms,
                                        .max_value = conf.max_value};
    srv.stack = tc_stack_create(tiers, ntiers);
    if (srv.stack == NULL) {
        for (size_t k = ntiers; k-- > 0;) {
            tc_tier_close(tiers[k]);
        }
        tc_log(TC_LOG_CRIT, "out of memory");
        goto out_conf;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    srv.nworkers = conf.workers ? (size_t)conf.workers : (size_t)(cores > 0 ? cores : 1);
    /* Dogpile locks at the widest scope a tier offers. */
    srv.lock_tier = -1;
    for (unsigned want = TC_TIER_CAP_LOCK_CLUSTER; want != 0 && srv.lock_tier < 0;
         want = want == TC_TIER_CAP_LOCK_CLUSTER ? TC_TIER_CAP_LOCK_HOST : 0) {
        for (size_t i = 0; i < ntiers; i++) {
            if (tc_tier_caps(tiers[i]) & want) {
                srv.lock_tier = (int)i;
                break;
            }
        }
    }
    srv.keylock = tc_keylock_create(srv.nworkers, srv.lock_tier >= 0 ? tiers[srv.lock_tier] : NULL);
    if (srv.keylock == NULL) {
        tc_log(TC_LOG_CRIT, "out of memory");
        goto out_stack;
    }
    if (conf.origin[0] != '\0') {
        char err[512];
        /* An answer may be as large as the largest value we store. */
        srv.origin =
            tc_origin_create(conf.origin, conf.origin_timeout_ms, conf.max_value, err, sizeof(err));
        if (srv.origin == NULL) {
            tc_log(TC_LOG_CRIT, "--origin: %s", err);
            fprintf(stderr, "tiercache: --origin: %s\n", err);
            goto out_stack;
        }
        tc_log(TC_LOG_INFO, "read-through from %s (timeout %llu ms)", tc_origin_url(srv.origin),
               (unsigned long long)conf.origin_timeout_ms);
    }
    tc_log(TC_LOG_INFO, "dogpile locks: %s scope%s%s", tc_keylock_scope(srv.keylock),
           srv.lock_tier >= 0 ? " in " : "",
           srv.lock_tier >= 0 ? tc_tier_uri(tiers[srv.lock_tier]) : "");
    srv.workers = calloc(srv.nworkers, sizeof(*srv.workers));
    m.base = event_base_new();
    if (srv.workers == NULL || m.base == NULL) {
        tc_log(TC_LOG_CRIT, "out of memory");
        goto out_stack;
    }
    m.srv = &srv;
    char detail[512];
    tc_stack_check_health(srv.stack, detail, sizeof(detail));
    /* Signals first: a SIGTERM that arrives while workers start is kept and
     * handled once the loop runs, instead of killing the process. */
    static const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sig_ev[i] = evsignal_new(m.base, sigs[i], on_signal, &m);
        event_add(sig_ev[i], NULL);
    }
    if (tc_workers_start(&srv) != TC_OK) {
        tc_log(TC_LOG_CRIT, "could not start the workers on %s", conf.listen);
        fprintf(stderr, "tiercache: could not listen on %s (see the log above)\n", conf.listen);
        tc_workers_stop(&srv);
        tc_workers_join(&srv);
        goto out_stack;
    }
    tc_log(TC_LOG_INFO, "listening on %s:%u with %zu workers", conf.listen_host, srv.port,
           srv.nworkers);

    m.sweep_ev = event_new(m.base, -1, EV_PERSIST, on_sweep, &m);
    struct timeval iv = {(time_t)(conf.sweep_interval_ms / 1000),
                         (suseconds_t)(conf.sweep_interval_ms % 1000) * 1000};
    event_add(m.sweep_ev, &iv);
    event_base_dispatch(m.base);

    tc_workers_join(&srv);
    rc = 0;
    tc_log(TC_LOG_INFO, "stopped");
    event_free(m.sweep_ev);
out_stack:
    for (int i = 0; i < 3; i++) {
        if (sig_ev[i] != NULL) {
            event_free(sig_ev[i]);
        }
    }
    if (m.base != NULL) {
        event_base_free(m.base);
    }
    free(srv.workers);
    tc_origin_destroy(srv.origin);
    tc_keylock_destroy(srv.keylock); /* before its lock tier closes */
    tc_stack_destroy(srv.stack);     /* closes the tiers: flushes LMDB, detaches shm */
out_conf:
    pthread_cond_destroy(&srv.done_cond);
    pthread_mutex_destroy(&srv.done_lock);
    tc_log_teardown();
    tc_conf_deinit(&conf);
    return rc;
}
