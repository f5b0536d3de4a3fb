/*
 * The HTTP API's entry point: the route table dispatches each request to
 * its handler (src/api_*.c). See src/routes.c for the table.
 */
#ifndef TC_SRC_ROUTES_H
#define TC_SRC_ROUTES_H

#include "src/http.h"

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

#endif
