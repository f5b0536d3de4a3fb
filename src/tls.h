/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * TLS for the client listener (listen-tls): the server-wide TLS context and
 * the per-connection I/O that src/http.c calls through a small interface
 * (handshake, read, write, shutdown), so that the plain path never touches
 * OpenSSL and OpenSSL's error codes never leave this module (STYLE R6).
 *
 *   accept ─▶ tc_tls_conn_create ─▶ tc_tls_handshake ... (WANT_READ / WANT_WRITE:
 *            (SSL_new on the current  │                   the caller waits on its
 *             context, under a lock)  ▼                   event loop, never blocks)
 *                              tc_tls_read / tc_tls_write ─▶ tc_tls_shutdown ─▶ destroy
 *
 * Policy (fixed, not configurable): TLS 1.2 and 1.3 only, OpenSSL's default
 * cipher suites and security level, no renegotiation, session tickets on
 * plus a server-side session cache (TLS 1.2 clients without tickets), ALPN
 * "http/1.1" (a client that offers ALPN without it is refused with the
 * no_application_protocol alert), SSL_MODE_RELEASE_BUFFERS so that an idle
 * connection holds no record buffers.
 *
 * Client certificates (tls-client-ca): requested, not required. A
 * certificate that does not verify against the CA fails the handshake; a
 * verified one maps to scopes (src/scope.h) through tls-client-scopes, a
 * list of "SUBJECT SCOPES" entries separated by ';':
 *
 *     tls-client-scopes = CN=app1 read,write; CN=ops admin; CN=x,O=Example Inc read
 *
 * SUBJECT "CN=name" (no ',') matches a certificate whose subject has exactly
 * one commonName, equal to name; any other SUBJECT is compared with the
 * whole subject DN in RFC 2253 form (most specific first, as
 * `openssl x509 -noout -subject -nameopt RFC2253` prints it). Comparisons
 * are exact (case-sensitive). SCOPES is the last word of the entry.
 * The first matching entry wins; no match, or no certificate: scopes 0.
 *
 * Reload (SIGHUP): tc_tls_reload() builds a new context from the same
 * files; new connections use it, open ones keep theirs (OpenSSL counts the
 * context's references); on failure the old one stays.
 *
 * Threading: tc_tls_create/destroy/reload on one thread (main);
 * tc_tls_conn_create from any worker at the same time as a reload; a
 * connection belongs to one thread.
 */
#ifndef TC_SRC_TLS_H
#define TC_SRC_TLS_H

#include "shm/status.h"

#include <stddef.h>

struct tc_tls;
struct tc_tls_conn;

struct tc_tls_options {
    const char *cert;          /* PEM: the certificate, then its chain */
    const char *key;           /* PEM private key; refused if group or others have access */
    const char *client_ca;     /* PEM CA bundle for client certificates; "" or NULL: none */
    const char *client_scopes; /* the mapping above; "" or NULL: none */
};

/** What one TLS I/O step came to. */
enum tc_tls_io {
    TC_TLS_DONE = 0,   /* handshake complete; or bytes were read / written */
    TC_TLS_WANT_READ,  /* call again when the socket is readable */
    TC_TLS_WANT_WRITE, /* call again when the socket is writable */
    TC_TLS_CLOSED,     /* the peer closed (close_notify or EOF) */
    TC_TLS_FAILED,     /* fatal: protocol error, bad certificate, I/O error */
};

/** Why a handshake failed (for the counters). */
enum tc_tls_fail {
    TC_TLS_FAIL_PROTOCOL = 0, /* not TLS, a version or ALPN refused, EOF mid-handshake */
    TC_TLS_FAIL_CERT,         /* a certificate refused, by us or by the client */
    TC_TLS_FAIL_PLAINTEXT,    /* plain HTTP sent to the TLS port (a protocol failure) */
};

/**
 * Loads the certificate, key and client CA of @p o and parses its scope
 * mapping. Refuses (TC_EINVAL / TC_EPERM / TC_EIO, with a sentence naming
 * the file and the problem in @p err) a missing or unreadable file, a key
 * file that group or others may access, a key that does not match the
 * certificate, a certificate that is not PEM, tls-client-scopes without
 * tls-client-ca, a malformed mapping. On TC_OK *out is the caller's
 * (tc_tls_destroy()).
 */
enum tc_status tc_tls_create(const struct tc_tls_options *o, struct tc_tls **out, char *err,
                             size_t errlen);

/**
 * Re-reads the files named at creation into a new context used by
 * connections accepted from now on. On failure returns the code and the
 * reason in @p err, and keeps serving with the old context.
 */
enum tc_status tc_tls_reload(struct tc_tls *t, char *err, size_t errlen);

/** Whether client certificates are requested (tls-client-ca is set). */
int tc_tls_client_certs(const struct tc_tls *t);

/** Frees @p t; every connection made from it must be destroyed first. NULL: no-op. */
void tc_tls_destroy(struct tc_tls *t);

/**
 * Starts the server side of TLS on the connected non-blocking socket @p fd
 * (not taken over: the caller closes it after tc_tls_conn_destroy()).
 * Returns NULL when out of memory.
 */
struct tc_tls_conn *tc_tls_conn_create(struct tc_tls *t, int fd);

/**
 * Advances the handshake. TC_TLS_DONE: complete (tc_tls_peer_scopes() and
 * tc_tls_resumed() are meaningful); TC_TLS_FAILED: *why says why.
 */
enum tc_tls_io tc_tls_handshake(struct tc_tls_conn *c, enum tc_tls_fail *why);

/** Reads up to @p len bytes of plaintext; on TC_TLS_DONE *got > 0. */
enum tc_tls_io tc_tls_read(struct tc_tls_conn *c, void *buf, size_t len, size_t *got);

/**
 * Writes up to @p len bytes (@p len > 0); on TC_TLS_DONE *done > 0 bytes
 * were taken (possibly fewer than @p len: partial writes are on). After
 * TC_TLS_WANT_WRITE the next call must start with the same bytes (they may
 * have moved in memory).
 */
enum tc_tls_io tc_tls_write(struct tc_tls_conn *c, const void *buf, size_t len, size_t *done);

/** Whether plaintext or record bytes wait inside the TLS layer (no socket event will come). */
int tc_tls_pending(const struct tc_tls_conn *c);

/** Whether the completed handshake resumed a session (ticket or cache). */
int tc_tls_resumed(const struct tc_tls_conn *c);

/** The TC_SCOPE_* bits the verified client certificate maps to; 0 if none. */
unsigned tc_tls_peer_scopes(const struct tc_tls_conn *c);

/**
 * Sends close_notify once, best effort and without waiting; does nothing
 * after a fatal error, a peer's close or before the handshake completed.
 */
void tc_tls_shutdown(struct tc_tls_conn *c);

/** Frees @p c (not its socket). NULL: no-op. */
void tc_tls_conn_destroy(struct tc_tls_conn *c);

/**
 * Parses a tls-client-scopes value (the format above) and returns the scopes
 * for a certificate subject given as @p cn (the single commonName, or NULL
 * when the subject has none or several) and @p dn (RFC 2253). For tests and
 * for the validation in tc_tls_create(): TC_EINVAL with @p err on a
 * malformed value.
 */
enum tc_status tc_tls_scopes_match(const char *mapping, const char *cn, const char *dn,
                                   unsigned *scopes, char *err, size_t errlen);

#endif
