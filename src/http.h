/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A small HTTP/1.1 server on libevent and http-parser: one instance per
 * worker thread, all on the same port (SO_REUSEPORT).
 *
 * Why not evhttp: evhttp allocates a request with a header list and parses
 * the URI for every request, has no connection limit in libevent 2.1, and
 * cannot be told to stop reading while a request is answered asynchronously.
 * This layer keeps one parser per connection, builds each response in one
 * evbuffer, reads nothing while a request is being answered (pipelined
 * requests wait in the socket buffer) and bounds what one client can hold:
 * header size, body size, bodies being received server-wide
 * (max_pending_body), unsent output (reading stops while more than 1 MiB
 * waits), time to send the headers, time between body reads, idle time and
 * the number of connections. Measured figures: docs/benchmarks.md.
 *
 * Plain connections are read edge-triggered (EV_ET), as nginx reads them:
 * epoll reports a socket when bytes arrive, not again on each wait; a read
 * that fills the read buffer reads again, since no new edge would come for
 * the bytes it left (src/http.c read_more). TLS connections stay
 * level-triggered.
 *
 * http-parser is built without HTTP_PARSER_STRICT on Debian, so it accepts
 * framing that another parser in front of us may read differently (request
 * smuggling). The callbacks refuse those shapes with 400: a header name that
 * is not a token ("Host : x"), a Transfer-Encoding other than exactly
 * "chunked", Transfer-Encoding with Content-Length, two Host headers, a line
 * not ended by CRLF, obsolete line folding, chunk data not followed by CRLF.
 *
 * Connection states:
 *
 *   READING ──message complete──▶ ANSWERING ──tc_http_respond()──▶ READING
 *      │                              │                              (next request)
 *      │ EOF / idle                   │ "Connection: close"
 *      ▼                              ▼
 *    freed ◀── output written ──── CLOSING ◀── 4xx / 408 / 503 from this layer
 *      ▲                              │ (the client may still be sending)
 *      └── EOF / time / byte bound ─ LINGERING: write side shut, input discarded
 *
 * Lingering (as nginx's lingering_close) lets a client that is still sending
 * a body read an early 413 or 431 instead of a TCP reset.
 *
 * TLS (tc_http_server_set_tls, listen-tls): the same state machine, with a
 * handshake before READING under its own deadline; reads and writes go
 * through src/tls.h instead of the socket, bytes already decrypted inside
 * TLS re-run the read callback (no socket event would come), and an
 * answer up to one TLS record is written as one record.
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
#include <string.h>

struct event_base;
struct tc_http_server;
struct tc_http_conn;
struct tc_tls;

enum tc_http_method {
    TC_HTTP_GET = 1,
    TC_HTTP_HEAD = 2,
    TC_HTTP_PUT = 4,
    TC_HTTP_DELETE = 8,
    TC_HTTP_POST = 16,
    TC_HTTP_OTHER = 32,
    TC_HTTP_OPTIONS = 64, /* answered by src/routes.c for every route (CORS preflight) */
    TC_HTTP_PURGE = 128,  /* Varnish's PURGE: DELETE on /cache/{key} (issue 15) */
    TC_HTTP_PATCH = 256,  /* issue 16: lock and lease renewal */
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
    unsigned tag;       /* for the handler too, 0 at first (src/routes.c: the route's slot) */
    uint64_t start_ns;  /* when the request was complete (CLOCK_MONOTONIC, as tc_clock_ns) */
    /* The wall clock then, in ms since the epoch, from the worker's cached
     * clock (src/clock.h: no wall-clock read per request): the "now" of the
     * request's TTL arithmetic and of its answer's Date (tc_http_date_ms). */
    uint64_t now_ms;
    /* TC_SCOPE_* bits (src/scope.h) a verified TLS client certificate grants
     * on this connection; 0 when there is none (set by the TLS layer). */
    unsigned peer_scopes;
    /* The request's Origin when it is in allowed-origins (src/routes.c): every
     * answer then carries the CORS headers (tc_api_respond). NULL otherwise. */
    const char *cors_origin;

    /* Private. */
    struct tc_http_conn *_conn; /* NULL once the connection is gone */
    struct tc_buf _target;      /* target bytes, NUL-terminated */
    struct tc_buf _hdrs;        /* "name\0value\0" pairs, names lower-cased */
    unsigned _nhdrs;
    int _in_value;
    unsigned _host;                         /* 1 + the index of the Host header; 0: none */
    uint64_t _date_ms;                      /* the answer's Date, once fixed; 0: not yet */
    uint32_t _hoff[TC_HTTP_MAX_HEADERS][2]; /* last: a reused request clears what is before */
};

/** tc_http_header() of a name @p n bytes long. */
const char *tc_http_header_n(const struct tc_http_req *r, const char *name, size_t n);

/** Returns the value of header @p name (lower case), or NULL. Inline so
 * that a literal name's length is known at compile time: a lookup then
 * compares lengths before bytes (a hit asks for half a dozen headers that
 * a plain client never sends). */
static inline const char *tc_http_header(const struct tc_http_req *r, const char *name)
{
    return tc_http_header_n(r, name, strlen(name));
}

/** The Host header's value, or NULL (found while parsing: no lookup). */
const char *tc_http_host(const struct tc_http_req *r);

/** The longest Host value a connection remembers (tc_http_host_remember). */
#define TC_HTTP_HOST_MEMO 255

/**
 * A check of the Host header made once per connection instead of once per
 * request (src/routes.c: allowed-hosts). 1 when @p r's Host value is, byte
 * for byte, the one last remembered on the same connection by
 * tc_http_host_remember() under the same @p key; 0 otherwise: no Host, the
 * connection is gone, nothing remembered, another value, another key.
 * @p key names what the value passed: the caller must use a key that
 * changes whenever the answer for a value could change.
 */
int tc_http_host_known(const struct tc_http_req *r, const void *key);

/**
 * Remembers @p r's Host value on its connection under @p key, replacing
 * what was remembered; a value longer than TC_HTTP_HOST_MEMO bytes is not
 * remembered (checked on each request). No-op without a Host or connection.
 */
void tc_http_host_remember(struct tc_http_req *r, const void *key);

/** Handles a complete request; must eventually call tc_http_respond() once. */
typedef void (*tc_http_handler_fn)(struct tc_http_req *r, void *arg);

struct tc_http_limits {
    size_t max_header_size;         /* request line + headers */
    size_t max_body;                /* bytes */
    uint64_t idle_timeout_ms;       /* keep-alive wait; also: no output taken this long */
    uint64_t header_timeout_ms;     /* first byte (or accept) to the end of the headers */
    uint64_t body_timeout_ms;       /* between two reads of a body */
    uint64_t max_connections;       /* across all servers sharing conn_count */
    uint64_t max_pending_body;      /* body bytes being received, across servers */
    _Atomic uint64_t *conn_count;   /* shared by every worker's server */
    _Atomic uint64_t *body_pending; /* shared too: bytes held by bodies still arriving */
};

/*
 * What the HTTP layer refused, one row per counter: field, help text. The
 * rows are fields of struct tc_http_counters; /stats and /metrics list them
 * from this table.
 */
#define TC_HTTP_REFUSALS(X)                                                                        \
    X(parse_errors, "requests answered 400, 411, 413, 414 or 431 by the HTTP layer")               \
    X(strict_refused, "requests refused (400) for framing a proxy may read differently, "          \
                      "a subset of parse_errors")                                                  \
    X(header_timeouts, "requests answered 408: headers not complete within header-timeout")        \
    X(body_timeouts, "requests answered 408: no body bytes for body-timeout")                      \
    X(send_timeouts, "connections closed: the client took no output for idle-timeout")             \
    X(body_budget_refused, "requests answered 503: max-pending-body reached")                      \
    X(output_paused, "times reading a connection stopped until its unsent output drained")

/*
 * The TLS handshakes of a listen-tls server, one row per counter: field,
 * /stats member (under "tls"), help text. Every failed handshake is counted
 * once, under one reason.
 */
#define TC_HTTP_TLS_COUNTERS(X)                                                                    \
    X(tls_handshakes, "handshakes", "TLS handshakes completed")                                    \
    X(tls_handshakes_resumed, "handshakes_resumed",                                                \
      "TLS handshakes that resumed a session (ticket or session cache), a subset of "              \
      "tls_handshakes")                                                                            \
    X(tls_handshake_timeouts, "handshake_timeouts",                                                \
      "TLS handshakes not complete within tls-handshake-timeout (connection closed)")              \
    X(tls_handshake_protocol_errors, "handshake_protocol_errors",                                  \
      "TLS handshakes failed on the protocol: not TLS (plain HTTP included), a version, cipher "   \
      "or ALPN refused, or the client closed")                                                     \
    X(tls_handshake_cert_errors, "handshake_cert_errors",                                          \
      "TLS handshakes failed on a certificate: a client certificate that does not verify, or "     \
      "ours refused by the client")

/** Per-server counters, written by its thread only; read with relaxed loads. */
struct tc_http_counters {
    _Atomic uint64_t accepted;
    _Atomic uint64_t refused; /* over max_connections */
    _Atomic uint64_t active;
    _Atomic uint64_t requests;
#define TC_HTTP_X(field, help) _Atomic uint64_t field;
    TC_HTTP_REFUSALS(TC_HTTP_X)
#undef TC_HTTP_X
#define TC_HTTP_X(field, json, help) _Atomic uint64_t field;
    TC_HTTP_TLS_COUNTERS(TC_HTTP_X)
#undef TC_HTTP_X
    _Atomic uint64_t tls_active; /* TLS connections open (handshaking included) */
};

/**
 * Creates a server on @p base that accepts on the listening socket @p fd
 * (taken over: closed by tc_http_server_destroy), or on none if @p fd is -1
 * (connections then come from tc_http_server_adopt()). @p limits is copied;
 * its conn_count and body_pending must outlive the server. Returns NULL on
 * failure.
 */
struct tc_http_server *tc_http_server_create(struct event_base *base, int fd,
                                             const struct tc_http_limits *limits,
                                             tc_http_handler_fn handler, void *arg);

/**
 * Serves the connected stream socket @p fd (taken over, even on failure) as
 * if it had been accepted: it counts against max_connections. For tests and
 * the fuzz target, which drive a connection through a socketpair. Returns
 * TC_OK, TC_EUNAVAIL over max_connections or TC_ENOMEM.
 */
enum tc_status tc_http_server_adopt(struct tc_http_server *s, int fd);

/**
 * Makes @p s a TLS server (call before it accepts anything): every
 * connection then starts with a TLS handshake on a context from @p tls
 * (which must outlive the server), closed if not complete within
 * @p handshake_ms; requests carry the scopes of a verified client
 * certificate in peer_scopes.
 */
void tc_http_server_set_tls(struct tc_http_server *s, struct tc_tls *tls, uint64_t handshake_ms);

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
 * request gets the headers and Content-Length of @p body without the body;
 * a 304 gets neither Content-Length nor body.
 * With an access log, writes its line: method, target with the value of any
 * "token" query parameter shown as "***", status, length, time. Request
 * headers (Authorization, X-Lock-Token, X-Lease-Token, ...) are never logged.
 */
void tc_http_respond(struct tc_http_req *r, int status, const char *content_type, const void *body,
                     size_t len, const char *headers);

/** One piece of a response body, sent by reference (not copied when large). */
struct tc_http_part {
    const void *data;
    size_t len;
};

#define TC_HTTP_MAX_PARTS 4

/**
 * As tc_http_respond(), with the body in @p nparts pieces (at most
 * TC_HTTP_MAX_PARTS), sent in order with the headers in one writev; each
 * piece need live only until the call returns (what the socket does not
 * take is copied).
 */
void tc_http_respond_parts(struct tc_http_req *r, int status, const char *content_type,
                           const struct tc_http_part *parts, size_t nparts, const char *headers);

/**
 * The time (wall clock, ms since the epoch) the Date header of @p r's
 * answer carries, fixed by the first call (tc_http_respond makes one): the
 * request's now_ms when it is answered within its dispatch, else (answered
 * later: a remote tier, the origin, a wait) the clock read again, never
 * earlier than now_ms. A Last-Modified in the same answer must not be later
 * (RFC 9110 8.8.2.1): clamp it to this.
 */
uint64_t tc_http_date_ms(struct tc_http_req *r);

/** The reason phrase for @p status ("Not Found"). */
const char *tc_http_reason(int status);

/**
 * Opens a listening TCP socket on host:port with SO_REUSEPORT, so that each
 * worker can have its own. Returns the fd, or -1 with a message logged;
 * *bound_port receives the port actually bound (for port 0).
 */
int tc_http_listen(const char *host, unsigned port, unsigned *bound_port);

#endif
