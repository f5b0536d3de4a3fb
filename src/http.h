/*
 * A small HTTP/1.1 server on libevent bufferevents and http-parser: one
 * instance per worker thread, all on the same port (SO_REUSEPORT).
 *
 * Why not evhttp: evhttp allocates a request with a header list and parses
 * the URI for every request, has no connection limit in libevent 2.1, and
 * cannot be told to stop reading while a request is answered asynchronously.
 * This layer keeps one parser per connection, builds each response in one
 * evbuffer, reads nothing while a request is being answered (pipelined
 * requests wait in the socket buffer) and bounds header size, body size,
 * idle time and the number of connections. Measured figures: README.md.
 *
 * Connection states:
 *
 *   READING ──message complete──▶ ANSWERING ──tc_http_respond()──▶ READING
 *      │                              │                              (next request)
 *      └─ error / EOF / idle ──▶ CLOSING ◀── "Connection: close" ────┘
 *
 * Threading: a server and its connections belong to the thread running its
 * event_base. tc_http_respond() must be called on that thread.
 */
#ifndef TC_SRC_HTTP_H
#define TC_SRC_HTTP_H

#include "shm/status.h"
#include "tiers/buf.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct tc_http_server;
struct tc_http_conn;

enum tc_http_method {
    TC_HTTP_GET = 1,
    TC_HTTP_HEAD = 2,
    TC_HTTP_PUT = 4,
    TC_HTTP_DELETE = 8,
    TC_HTTP_POST = 16,
    TC_HTTP_OTHER = 32,
};

#define TC_HTTP_MAX_HEADERS 48

/** One parsed request. Read-only for handlers except udata. */
struct tc_http_req {
    enum tc_http_method method;
    const char *method_name;
    /* The request target split at '?': both NUL-terminated, raw (undecoded).
     * query is NULL when there is none. */
    const char *path;
    size_t path_len;
    const char *query;
    int keep_alive;
    struct tc_buf body; /* the whole body; owned by the request */
    void *udata;        /* for the handler */
    uint64_t start_ns;  /* when the request was complete */

    /* Private. */
    struct tc_http_conn *_conn; /* NULL once the connection is gone */
    struct tc_buf _target;      /* target bytes, NUL-terminated */
    struct tc_buf _hdrs;        /* "name\0value\0" pairs, names lower-cased */
    uint32_t _hoff[TC_HTTP_MAX_HEADERS][2];
    unsigned _nhdrs;
    int _in_value;
};

/** Returns the value of header @p name (lower case), or NULL. */
const char *tc_http_header(const struct tc_http_req *r, const char *name);

/** Handles a complete request; must eventually call tc_http_respond() once. */
typedef void (*tc_http_handler_fn)(struct tc_http_req *r, void *arg);

struct tc_http_limits {
    size_t max_header_size; /* request line + headers */
    size_t max_body;        /* bytes */
    uint64_t idle_timeout_ms;
    uint64_t max_connections;     /* across all servers sharing conn_count */
    _Atomic uint64_t *conn_count; /* shared by every worker's server */
};

/** Per-server counters, written by its thread only; read with relaxed loads. */
struct tc_http_counters {
    _Atomic uint64_t accepted;
    _Atomic uint64_t refused; /* over max_connections */
    _Atomic uint64_t active;
    _Atomic uint64_t requests;
    _Atomic uint64_t parse_errors;
};

/**
 * Creates a server on @p base that accepts on the listening socket @p fd
 * (taken over: closed by tc_http_server_destroy). Returns NULL on failure.
 */
struct tc_http_server *tc_http_server_create(struct event_base *base, int fd,
                                             const struct tc_http_limits *limits,
                                             tc_http_handler_fn handler, void *arg);

/** Stops accepting new connections; open ones are served on. */
void tc_http_server_stop_accepting(struct tc_http_server *s);

/** Number of requests being answered right now. */
size_t tc_http_server_busy(const struct tc_http_server *s);

/**
 * Closes every connection and frees the server. Requests still being
 * answered lose their connection: their tc_http_respond() only frees them.
 */
void tc_http_server_destroy(struct tc_http_server *s);

/** The server's counters. */
const struct tc_http_counters *tc_http_server_counters(const struct tc_http_server *s);

/**
 * Sends the response to @p r and releases @p r (do not touch it after).
 * @p headers: extra header lines, each ending in "\r\n", or NULL. A HEAD
 * request gets the headers and Content-Length of @p body without the body.
 */
void tc_http_respond(struct tc_http_req *r, int status, const char *content_type, const void *body,
                     size_t len, const char *headers);

/** The reason phrase for @p status ("Not Found"). */
const char *tc_http_reason(int status);

/**
 * Opens a listening TCP socket on host:port with SO_REUSEPORT, so that each
 * worker can have its own. Returns the fd, or -1 with a message logged;
 * *bound_port receives the port actually bound (for port 0).
 */
int tc_http_listen(const char *host, unsigned port, unsigned *bound_port);

#endif
