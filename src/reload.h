/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Reload (SIGHUP): re-read the configuration file and apply, without
 * dropping a connection, what can change live; log the rest as "changed,
 * needs a restart" and keep it as it runs.
 *
 *   SIGHUP ─▶ tc_conf_reload(argv) ──bad──▶ log why, keep the running config
 *                    │
 *                    └─ok─▶ diff with the running config, setting by setting
 *                             live: log old -> new      restart: log, keep old
 *                           ─▶ log level and files (src/log.h)
 *                           ─▶ srv->conf = new (one atomic store)
 *                           ─▶ each worker, on its own event loop: its
 *                              read-through options (w->rt.opt) = new
 *
 * Every configuration ever applied stays allocated until
 * tc_reload_destroy(): a request in flight may still hold a pointer into the
 * one it started with. A reload costs a few KiB; operators reload rarely.
 *
 * Threading: tc_reload_run() on the main thread only (getopt, the signal
 * loop); workers see the new settings through an atomic pointer and their
 * own event loops, so nothing is written that another thread reads plainly.
 */
#ifndef TC_SRC_RELOAD_H
#define TC_SRC_RELOAD_H

#include "shm/status.h"
#include "src/worker.h"

struct tc_reload;

/**
 * Creates the reloader of @p srv, whose running configuration was loaded
 * from @p argv (kept by reference: it must outlive the reloader).
 * @return NULL when out of memory.
 */
struct tc_reload *tc_reload_create(struct tc_server *srv, int argc, char **argv);

/**
 * Re-reads the configuration and applies it (see the file comment), logging
 * every setting that changed and whether it took effect.
 * @return TC_OK when the new configuration was applied (settings that need a
 *         restart excepted); TC_EINVAL when it was refused (the reason is
 *         logged) and the running one kept; TC_ENOMEM.
 */
enum tc_status tc_reload_run(struct tc_reload *r);

/** The read-through options of configuration @p c (at start and on every reload). */
void tc_reload_rt_options(const struct tc_conf *c, struct tc_rt_options *out);

/** Whether setting @p name (as in TC_CONF_OPTIONS) applies on reload. */
int tc_reload_is_live(const char *name);

/**
 * Frees every configuration applied since creation. After the workers have
 * been joined (they may hold pointers into them). NULL is a no-op.
 */
void tc_reload_destroy(struct tc_reload *r);

#endif
