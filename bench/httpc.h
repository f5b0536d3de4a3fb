/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/httpc.h — the HTTP worker: the same request stream against a
 * running tiercache server (GET, PUT with ?ttl=, DELETE on /cache/{key}),
 * over a pool of keep-alive connections per thread, each with up to
 * `pipeline` requests in flight; the answering tier comes from
 * X-Cache-Tier (l1, l2, l3 ...). Responses are parsed with http-parser.
 */
#ifndef TC_BENCH_HTTPC_H
#define TC_BENCH_HTTPC_H

#include "bench/driver.h"

/** The tier names an HTTP stack reports (X-Cache-Tier values). */
#define TB_HTTP_TIERS 3

/** Runs worker @p w against w->cell->stack->url. */
void tb_http_thread(struct tb_wctx *w);

#endif
