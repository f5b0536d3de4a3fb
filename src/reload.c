/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* open_memstream */
#include "src/reload.h"
#include "src/access_log.h"
#include "src/log.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Settings a reload applies. Every other setting (listen, tier, workers,
 * the connection limits and timeouts the workers' HTTP servers took at
 * start, origin and its timeout, which the origin client holds) needs a
 * restart: a new row in TC_CONF_OPTIONS is restart-only until it is listed
 * here and read where it can change (srv->conf per request, or below). */
static const char *const live_settings[] = {
    "default-ttl",  "max-ttl",       "max-value", "grace",      "lease",
    "sweep-budget", "log-level",     "log-file",  "access-log", "access-log-format",
    "negative-ttl", "cache-control", NULL,
};

/* One applied configuration; the read-through options are derived from it. */
struct snapshot {
    struct tc_conf conf;
    struct tc_rt_options rt;
    struct snapshot *prev;
};

struct tc_reload {
    struct tc_server *srv;
    int argc;
    char **argv;
    struct snapshot *applied; /* newest first */
};

int tc_reload_is_live(const char *name)
{
    for (size_t i = 0; live_settings[i] != NULL; i++) {
        if (strcmp(live_settings[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

void tc_reload_rt_options(const struct tc_conf *c, struct tc_rt_options *out)
{
    *out = (struct tc_rt_options){.default_ttl_ms = c->default_ttl_ms,
                                  .max_ttl_ms = c->max_ttl_ms,
                                  .grace_ms = c->grace_ms,
                                  .lease_ms = c->lease_ms,
                                  .origin_timeout_ms = c->origin_timeout_ms,
                                  .max_value = c->max_value,
                                  .negative_ttl_ms = c->negative_ttl_ms};
}

struct tc_reload *tc_reload_create(struct tc_server *srv, int argc, char **argv)
{
    struct tc_reload *r = calloc(1, sizeof(*r));
    if (r != NULL) {
        r->srv = srv;
        r->argc = argc;
        r->argv = argv;
    }
    return r;
}

struct diff_ctx {
    int changed, restart;
};

static void on_diff(void *arg, const char *name, const char *old_value, const char *new_value)
{
    struct diff_ctx *d = arg;
    d->changed++;
    if (tc_reload_is_live(name)) {
        tc_log(TC_LOG_INFO, "reload: %s: '%s' -> '%s'", name, old_value, new_value);
    } else {
        d->restart++;
        tc_log(TC_LOG_WARN, "reload: %s changed ('%s' -> '%s'), needs a restart; still '%s'", name,
               old_value, new_value, old_value);
    }
}

/* What a reload may not change keeps its running value in the new
 * configuration, so that srv->conf (/stats, a later -T) says what runs. The
 * strings stay valid: the old configuration is kept until the end. */
static void keep_restart_settings(struct tc_conf *nc, const struct tc_conf *old)
{
    struct tc_conf keep = *old;
#define TC_X(name, field, type, def, min, max, help)                                               \
    if (!tc_reload_is_live(name)) {                                                                \
        memcpy(&nc->field, &keep.field, sizeof(nc->field));                                        \
    }
    TC_CONF_OPTIONS(TC_X)
#undef TC_X
    nc->ntiers = old->ntiers;
    memcpy(nc->listen_host, old->listen_host, sizeof(nc->listen_host));
    nc->listen_port = old->listen_port;
}

/* On the worker's thread: its read-through options become the new ones. */
static void apply_on_worker(evutil_socket_t fd, short what, void *arg)
{
    struct tc_worker *w = arg;
    (void)fd;
    (void)what;
    w->rt.opt = atomic_load_explicit(&w->srv->rt_live, memory_order_acquire);
}

enum tc_status tc_reload_run(struct tc_reload *r)
{
    struct tc_server *srv = r->srv;
    const struct tc_conf *old = srv->conf;
    struct snapshot *s = calloc(1, sizeof(*s));
    char *errbuf = NULL;
    size_t errlen = 0;
    FILE *err = open_memstream(&errbuf, &errlen);
    if (s == NULL || err == NULL) {
        free(s);
        if (err != NULL) {
            fclose(err);
        }
        free(errbuf);
        tc_log(TC_LOG_WARN, "reload: out of memory; the running configuration is kept");
        return TC_ENOMEM;
    }
    enum tc_conf_result cr = tc_conf_reload(&s->conf, r->argc, r->argv, err);
    fclose(err);
    if (cr != TC_CONF_RUN) {
        /* One log line per message line: the parser's messages name the
         * file, the line and the setting. */
        char *save = NULL;
        for (char *line = strtok_r(errbuf, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save)) {
            tc_log(TC_LOG_WARN, "reload: %s", line);
        }
        tc_log(TC_LOG_WARN, "reload: configuration refused; the running one is kept");
        free(errbuf);
        tc_conf_deinit(&s->conf);
        free(s);
        return TC_EINVAL;
    }
    free(errbuf);
    s->conf._err = stderr; /* the memstream is closed */

    struct diff_ctx d = {0, 0};
    tc_conf_diff(old, &s->conf, on_diff, &d);
    keep_restart_settings(&s->conf, old);

    if (tc_log_reconfigure((enum tc_log_level)s->conf.log_level, s->conf.log_file,
                           s->conf.access_log) != TC_OK) {
        /* The log module kept its old files and said why; the running
         * configuration says so too, and the next reload tries again. */
        s->conf.log_file = old->log_file;
        s->conf.access_log = old->access_log;
        tc_log(TC_LOG_WARN, "reload: log files unchanged");
    }
    tc_log_set_access_format(tc_access_format_parse(s->conf.access_log_format));
    tc_reload_rt_options(&s->conf, &s->rt);
    s->prev = r->applied;
    r->applied = s;
    /* Release: a worker that loads the pointer sees the settings written above. */
    atomic_store_explicit(&srv->rt_live, &s->rt, memory_order_release);
    srv->conf = &s->conf;
    for (size_t i = 0; i < srv->nworkers; i++) {
        struct tc_worker *w = &srv->workers[i];
        if (atomic_load(&w->ready) != 1 ||
            event_base_once(w->base, -1, EV_TIMEOUT, apply_on_worker, w, NULL) != 0) {
            tc_log(TC_LOG_WARN, "reload: worker %zu did not take the new settings", i);
        }
    }
    tc_log(TC_LOG_INFO, "reload: configuration applied (%d setting%s changed, %d need%s a restart)",
           d.changed, d.changed == 1 ? "" : "s", d.restart, d.restart == 1 ? "s" : "");
    return TC_OK;
}

void tc_reload_destroy(struct tc_reload *r)
{
    if (r == NULL) {
        return;
    }
    while (r->applied != NULL) {
        struct snapshot *s = r->applied;
        r->applied = s->prev;
        tc_conf_deinit(&s->conf);
        free(s);
    }
    free(r);
}
