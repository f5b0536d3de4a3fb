/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache: set-up in dependency order, serve, tear down in exactly the
 * reverse order (STYLE R5):
 *
 *   conf → log → tiers (registry) → stack → workers → signals/sweeper loop
 */
#include "src/conf.h"
#include "src/access_log.h"
#include "src/auth.h"
#include "src/cli_token.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/shm_admin.h"
#include "src/sweeper.h"
#include "src/tls.h"
#include "src/worker.h"
#include "src/hist.h"
#include "src/reload.h"
#include "src/top.h"
#include "tiers/tier.h"
#include "src/cli_key.h"
#include "tiers/seal.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef TC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static const char *const default_tiers[] = {
    "shm://tiercache?size=64M",
    "lmdb://./data/l2",
};

struct main_ctx {
    struct tc_server *srv;
    struct event_base *base;
    struct tc_reload *reload;
    int stopping;
    struct tc_seal *seal; /* encryption-keys-file, or NULL */
};

/* Tells systemd (Type=notify) where the service is: READY=1, RELOADING=1,
 * STOPPING=1. A no-op outside systemd (no NOTIFY_SOCKET) or without
 * libsystemd in the build. */
static void notify(const char *state)
{
#ifdef TC_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

/* SIGHUP: re-reads the keyring; a file that does not load leaves the keys
 * in use as they were (tiers/seal.h). */
static void reload_keyring(struct tc_seal *seal)
{
    char err[512];
    if (seal == NULL) {
        return;
    }
    if (tc_seal_reload(seal, err, sizeof(err)) != TC_OK) {
        tc_log(TC_LOG_CRIT, "SIGHUP: keyring not reloaded, the keys in use stay: %s", err);
        return;
    }
    uint32_t ids[TC_SEAL_KEYS_MAX];
    size_t n = tc_seal_key_ids(seal, ids, TC_SEAL_KEYS_MAX);
    tc_log(TC_LOG_INFO, "SIGHUP: keyring %s reloaded: %zu key%s, new writes use key %u",
           tc_seal_path(seal), n, n == 1 ? "" : "s", (unsigned)ids[n - 1]);
}

/* Every TC_LOG_WINDOW_MS: the count of lines a flood dropped, once it stopped. */
static void on_log_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    tc_log_flush_dropped(0);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct main_ctx *m = arg;
    (void)what;
    if (sig == SIGHUP) {
        if (m->stopping) {
            return;
        }
        notify("RELOADING=1");
        tc_log(TC_LOG_INFO, "SIGHUP: reloading the configuration");
        if (tc_reload_run(m->reload) != TC_OK) {
            tc_log_reopen(); /* logrotate still gets its new files */
        }
        /* Module reloads (auth tokens, TLS certificates, keyring) go here,
         * each keeping its old state when its file is bad. */
        /* TLS: new certificates for new connections; open ones keep theirs. */
        if (m->srv->tls != NULL) {
            char err[512];
            if (tc_tls_reload(m->srv->tls, err, sizeof(err)) == TC_OK) {
                tc_log(TC_LOG_INFO, "SIGHUP: TLS certificates reloaded");
            } else {
                tc_log(TC_LOG_CRIT, "SIGHUP: TLS certificates not reloaded, the old ones stay: %s",
                       err);
            }
        }
        /* Issue 14: a new token set; on failure the old one stays (logged). */
        char err[512];
        tc_auth_reload(m->srv->auth, err, sizeof(err));
        reload_keyring(m->seal);
        notify("READY=1");
        return;
    }
    if (m->stopping) {
        return;
    }
    notify("STOPPING=1");
    m->stopping = 1;
    tc_log(TC_LOG_INFO, "%s: stopping (finishing in-flight requests)",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
    tc_worker_stop_all(m->srv);
    event_base_loopexit(m->base, NULL);
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

static int open_tiers(const struct tc_conf *conf, struct tc_seal *seal, struct tc_tier **tiers,
                      size_t *n)
{
    struct tc_tier_registry *reg = tc_tier_registry_create();
    const char *uris[TC_CONF_MAX_TIERS];
    size_t nuris = 0;
    if (reg == NULL) {
        tc_log(TC_LOG_CRIT, "out of memory");
        return -1;
    }
    tc_tier_registry_set_seal(reg, seal);
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
        tc_log(TC_LOG_INFO,
               "tier l%zu: %s (ttl_ratio=%g, max_ttl=%llums, max value %zu bytes, encrypt=%s)",
               i + 1, tc_tier_uri(tiers[i]), tc_tier_ttl_ratio(tiers[i]),
               (unsigned long long)tc_tier_max_ttl_ms(tiers[i]), tc_tier_max_value(tiers[i]),
               tc_tier_seal(tiers[i]) != NULL ? "on" : "off");
        (*n)++;
    }
    tc_tier_registry_destroy(reg);
    return 0;
}

/* Issue 16: where counters and limits live. The widest tier that keeps them
 * (Redis: every host; shm: every process on the host), else a mem:// tier of
 * this process, shared by its workers. Returns 0, or -1 (logged). */
static int count_setup(struct tc_server *srv, struct tc_tier **tiers, size_t n)
{
    srv->count_tier = -1;
    srv->count_own = NULL;
    int host = -1;
    for (size_t i = 0; i < n && srv->count_tier < 0; i++) {
        unsigned caps = tc_tier_caps(tiers[i]);
        if (!(caps & TC_TIER_CAP_COUNT)) {
            continue;
        }
        if (caps & TC_TIER_CAP_REMOTE) {
            srv->count_tier = (int)i;
        } else if ((caps & TC_TIER_CAP_SHARED) && host < 0) {
            host = (int)i;
        }
    }
    if (srv->count_tier >= 0) {
        srv->count_scope = "cluster";
    } else if (host >= 0) {
        srv->count_tier = host;
        srv->count_scope = "host";
    } else {
        char err[256];
        if (tc_tier_open(NULL, "mem://?size=64M", &srv->count_own, err, sizeof(err)) != TC_OK) {
            tc_log(TC_LOG_CRIT, "counters: %s", err);
            return -1;
        }
        srv->count_scope = "process";
    }
    tc_log(TC_LOG_INFO, "counters and limits: %s scope%s%s", srv->count_scope,
           srv->count_tier >= 0 ? " in " : "",
           srv->count_tier >= 0 ? tc_tier_uri(tiers[srv->count_tier]) : "");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "shm") == 0) {
        return tc_shm_admin_main(argc, argv); /* a tool, before any server set-up */
    }
    if (argc >= 2 && strcmp(argv[1], "top") == 0) {
        return tc_top_main(argc - 1, argv + 1); /* a client of /stats, no server set-up */
    }
    if (argc >= 2 && strcmp(argv[1], "token") == 0) {
        return tc_cli_token_main(argc, argv); /* issue 14: tiercache token new NAME SCOPES */
    }
    if (argc >= 2 && strcmp(argv[1], "key") == 0) {
        return tc_cli_key_main(argc, argv); /* keyring tool (src/cli_key.h) */
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
    tc_log_set_access_format(tc_access_format_parse(conf.access_log_format));
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

    /* Access control (issue 14), before anything is opened: protected mode,
     * then the tokens file and the host and origin lists. */
    {
        /* Verified client certificates (mutual TLS) are a way to authenticate too. */
        int has_client_certs = conf.listen_tls[0] != '\0' && conf.tls_client_ca[0] != '\0';
        int has_tokens = conf.auth_tokens_file[0] != '\0';
        char err[1024];
        if (tc_auth_protected_mode(conf.listen_host, has_tokens, has_client_certs, conf.insecure,
                                   err, sizeof(err)) != TC_OK ||
            (conf.listen_tls[0] != '\0' &&
             tc_auth_protected_mode(conf.listen_tls_host, has_tokens, has_client_certs,
                                    conf.insecure, err, sizeof(err)) != TC_OK)) {
            tc_log(TC_LOG_CRIT, "%s", err);
            fprintf(stderr, "tiercache: %s\n", err);
            rc = 2;
            goto out_conf;
        }
        struct tc_auth_options ao = {.tokens_file = conf.auth_tokens_file,
                                     .allowed_hosts = conf.allowed_hosts,
                                     .allowed_origins = conf.allowed_origins,
                                     .listen_host = conf.listen_host,
                                     .listen_tls_host = conf.listen_tls_host,
                                     .client_certs = has_client_certs};
        if (tc_auth_create(&ao, &srv.auth, err, sizeof(err)) != TC_OK) {
            tc_log(TC_LOG_CRIT, "%s", err);
            fprintf(stderr, "tiercache: %s\n", err);
            rc = 2;
            goto out_conf;
        }
        if (conf.insecure && !tc_auth_required(srv.auth) &&
            tc_auth_protected_mode(conf.listen_host, 0, 0, 0, err, sizeof(err)) != TC_OK) {
            tc_log(TC_LOG_WARN, "insecure = yes: anyone who can reach %s may use every route",
                   conf.listen);
        }
    }
    if (conf.encryption_keys_file[0] != '\0') {
        char err[512];
        if (tc_seal_open(conf.encryption_keys_file, &m.seal, err, sizeof(err)) != TC_OK) {
            tc_log(TC_LOG_CRIT, "encryption-keys-file: %s", err);
            fprintf(stderr, "tiercache: encryption-keys-file: %s\n", err);
            goto out_conf;
        }
    }
    if (open_tiers(&conf, m.seal, tiers, &ntiers) != 0) {
        goto out_conf;
    }
    size_t widest_value = 0;
    for (size_t i = 0; i < ntiers; i++) {
        size_t v = tc_tier_max_value(tiers[i]);
        widest_value = v > widest_value ? v : widest_value;
    }
    if (ntiers > 0 && conf.max_value > widest_value) {
        /* Said once here rather than as a surprise 413 on the first large PUT. */
        tc_log(TC_LOG_WARN,
               "max-value (%llu) is larger than any tier accepts (%zu, max_item in the tier URI): "
               "larger values get 413",
               (unsigned long long)conf.max_value, widest_value);
    }
    tc_reload_rt_options(&conf, &srv.rt_opt);
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
    srv.lock_tier = tc_keylock_widest_tier(tiers, ntiers);
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
    if (conf.listen_tls[0] != '\0') {
        char err[512];
        struct tc_tls_options to = {conf.tls_cert, conf.tls_key, conf.tls_client_ca,
                                    conf.tls_client_scopes};
        if (tc_tls_create(&to, &srv.tls, err, sizeof(err)) != TC_OK) {
            tc_log(TC_LOG_CRIT, "listen-tls: %s", err);
            fprintf(stderr, "tiercache: listen-tls: %s\n", err);
            goto out_stack;
        }
    } else if (conf.tls_cert[0] != '\0' || conf.tls_client_ca[0] != '\0') {
        tc_log(TC_LOG_WARN, "tls-cert / tls-client-ca are set without listen-tls: no TLS served");
    }
    if (count_setup(&srv, tiers, ntiers) != 0) {
        goto out_stack;
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
    m.reload = tc_reload_create(&srv, argc, argv);
    if (m.reload == NULL) {
        tc_log(TC_LOG_CRIT, "out of memory");
        goto out_stack;
    }
    char detail[512];
    tc_stack_check_health(srv.stack, detail, sizeof(detail));
    /* Signals first: a SIGTERM that arrives while workers start is kept and
     * handled once the loop runs, instead of killing the process. */
    static const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sig_ev[i] = evsignal_new(m.base, sigs[i], on_signal, &m);
        event_add(sig_ev[i], NULL);
    }
    if (tc_worker_start_all(&srv) != TC_OK) {
        tc_log(TC_LOG_CRIT, "could not start the workers on %s", conf.listen);
        fprintf(stderr, "tiercache: could not listen on %s (see the log above)\n", conf.listen);
        tc_worker_stop_all(&srv);
        tc_worker_join_all(&srv);
        goto out_stack;
    }
    tc_log(TC_LOG_INFO, "listening on %s:%u with %zu workers", conf.listen_host, srv.port,
           srv.nworkers);
    if (srv.tls != NULL) {
        tc_log(TC_LOG_INFO, "listening for TLS on %s:%u%s", conf.listen_tls_host, srv.tls_port,
               tc_tls_client_certs(srv.tls) ? " (client certificates verified)" : "");
    }
    notify("READY=1");

    struct tc_sweeper *sweeper = tc_sweeper_create(m.base, &srv);
    struct event *log_ev = event_new(m.base, -1, EV_PERSIST, on_log_tick, NULL);
    struct timeval log_every = {TC_LOG_WINDOW_MS / 1000, TC_LOG_WINDOW_MS % 1000 * 1000};
    if (sweeper == NULL || log_ev == NULL || event_add(log_ev, &log_every) != 0) {
        tc_log(TC_LOG_CRIT, "out of memory");
        tc_worker_stop_all(&srv);
    } else {
        event_base_dispatch(m.base);
    }

    tc_worker_join_all(&srv);
    rc = 0;
    if (log_ev != NULL) {
        event_free(log_ev);
    }
    tc_log_flush_dropped(1);
    tc_log(TC_LOG_INFO, "stopped");
    tc_sweeper_destroy(sweeper);
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
    tc_tls_destroy(srv.tls);     /* after the workers: their connections held it */
    tc_reload_destroy(m.reload); /* the workers, which read its configurations, are gone */
    tc_origin_destroy(srv.origin);
    tc_keylock_destroy(srv.keylock); /* before its lock tier closes */
    tc_tier_close(srv.count_own);
    tc_stack_destroy(srv.stack); /* closes the tiers: flushes LMDB, detaches shm */
out_conf:
    tc_seal_close(m.seal);     /* after the tiers that seal with it */
    tc_auth_destroy(srv.auth); /* after the workers, which held views of it */
    pthread_cond_destroy(&srv.done_cond);
    pthread_mutex_destroy(&srv.done_lock);
    tc_log_teardown();
    tc_conf_deinit(&conf);
    return rc;
}
