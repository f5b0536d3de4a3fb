/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The HTTP API's entry point: the route table dispatches each request to
 * its handler (src/api_*.c). See src/routes.c for the table.
 */
#ifndef TC_SRC_ROUTES_H
#define TC_SRC_ROUTES_H

#include "src/http.h"

#include <stddef.h>

/**
 * Routes and answers @p r. @p worker: the struct tc_worker whose thread
 * runs the request (the tc_http_handler_fn of every worker's server).
 */
void tc_routes_handle(struct tc_http_req *r, void *worker);

/**
 * The "route" label of request-histogram slot @p slot (struct tc_worker's
 * requests): "/cache/{key}", "/locks/{name}", "/health", ..., or "none" for
 * slot 0, the requests no route matched.
 */
const char *tc_routes_label(unsigned slot);

/* A route anyone may use (not a scope bit: a row that names no scope is 0). */
#define TC_ROUTE_PUBLIC 0x100u

/** What the route table says of one route (for tests and docs). */
struct tc_route_info {
    const char *path;                 /* "/cache/" */
    const char *label;                /* "/cache/{key}" */
    int prefix;                       /* path is a prefix: the rest is the key or name */
    unsigned methods;                 /* enum tc_http_method bits */
    unsigned read_scope, write_scope; /* TC_SCOPE_* bit (src/scope.h) or TC_ROUTE_PUBLIC */
};

/** Fills @p out with route @p i of the table; -1 past the last route. */
int tc_routes_info(size_t i, struct tc_route_info *out);

#endif
