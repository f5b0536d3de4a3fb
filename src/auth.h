/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Access control (issue 14, docs/security.md): Bearer tokens with scopes,
 * the Host and Origin checks against DNS rebinding and cross-site requests,
 * CORS for the allowed origins, and protected mode.
 *
 * The tokens file holds one line per token, `NAME SCOPES sha256:HEX`: the
 * SHA-256 of each token, never a token. A request's token is hashed once
 * and compared with every entry by CRYPTO_memcmp, without stopping at a
 * match, so that the time taken says nothing about which digest matched.
 *
 * Token sets are immutable and refcounted. SIGHUP builds a new set
 * (tc_auth_reload) and publishes it by bumping a generation counter; each
 * worker holds a reference to the set it uses (struct tc_auth_view) and
 * picks up the new one at its next request, after one acquire load on the
 * hot path; only that pick-up takes a mutex. The old set is freed when the
 * last worker lets go of it. A reload that fails keeps the old set.
 *
 *   main thread (SIGHUP)            worker k (each request)
 *   parse file → new set            g = gen (acquire)
 *   lock; cur = new; gen++ (release) g != view.gen? lock; take cur; unlock;
 *   unlock; release old                               release view's old set
 *                                   hash token, compare with every entry
 *
 * Thread safety: tc_auth_create/destroy/reload on one thread (main);
 * tc_auth_check on the worker owning the view; the host, origin and query
 * functions read immutable state and are safe anywhere.
 */
#ifndef TC_SRC_AUTH_H
#define TC_SRC_AUTH_H

#include "shm/status.h"

#include <stddef.h>

struct tc_auth;
struct tc_auth_view;

/* Why a request was refused, one row per counter (/stats auth.failures,
 * /metrics tiercache_auth_failures_total{reason}): name, help. */
#define TC_AUTH_FAILURES(X)                                                                        \
    X(missing, "no Bearer token (or client certificate) on a route that needs one: 401")           \
    X(invalid, "a Bearer token that matches no entry of the tokens file: 401")                     \
    X(scope, "a valid token without the scope the route needs: 403")                               \
    X(host, "a Host header not in allowed-hosts: 421")                                             \
    X(origin, "a state-changing request from an Origin not in allowed-origins: 403")

enum tc_auth_failure {
#define TC_X(name, help) TC_AUTH_FAIL_##name,
    TC_AUTH_FAILURES(TC_X)
#undef TC_X
        TC_AUTH_FAIL_N
};

/** The name of failure @p f ("missing", ...). */
const char *tc_auth_failure_name(enum tc_auth_failure f);

/** The result of checking a request's credentials. */
enum tc_auth_result {
    TC_AUTH_OK = 0,  /* a known token, or none given and none needed: see *grant */
    TC_AUTH_MISSING, /* no Bearer token */
    TC_AUTH_INVALID, /* a Bearer token no entry matches */
};

struct tc_auth_options {
    const char *tokens_file;     /* NULL or "": no tokens */
    const char *allowed_hosts;   /* comma-separated; NULL or "": the defaults */
    const char *allowed_origins; /* comma-separated; NULL or "": none */
    const char *listen_host;     /* the listen address, for the default hosts */
    const char *listen_tls_host; /* the listen-tls address, likewise; NULL or "": none */
    int client_certs;            /* verified TLS client certificates grant scopes */
};

/**
 * Loads the tokens file (when given) and parses the host and origin lists.
 * Refuses (TC_EINVAL, @p err says why, naming the file and line): a tokens
 * file that is not a regular file, whose mode gives group or others any
 * access, that cannot be read, or with a bad line; a bad host or origin
 * entry. TC_ENOMEM when out of memory. On TC_OK *out is owned by the caller
 * (tc_auth_destroy).
 */
enum tc_status tc_auth_create(const struct tc_auth_options *o, struct tc_auth **out, char *err,
                              size_t len);

/** Frees @p a, after every view has been destroyed. NULL is a no-op. */
void tc_auth_destroy(struct tc_auth *a);

/**
 * Re-reads the tokens file (SIGHUP) and publishes the new set; workers pick
 * it up at their next request, connections stay open. Without a tokens file
 * it does nothing (TC_OK). On failure the old set stays in use and @p err
 * says why (TC_EINVAL, TC_ENOMEM). Logs either outcome.
 */
enum tc_status tc_auth_reload(struct tc_auth *a, char *err, size_t len);

/** 1 when requests must prove a scope (a tokens file or client certificates). */
int tc_auth_required(const struct tc_auth *a);

/** Tokens in the set published last. */
size_t tc_auth_ntokens(struct tc_auth *a);

/** Tokens-file reloads that failed (the old set was kept). */
unsigned long long tc_auth_reload_failures(struct tc_auth *a);

/**
 * A worker's view of @p a: a reference to the current token set and its own
 * digest context. Created and used on that worker's thread. Returns NULL
 * when out of memory.
 */
struct tc_auth_view *tc_auth_view_create(struct tc_auth *a);

/** Releases the view's token set. NULL is a no-op. */
void tc_auth_view_destroy(struct tc_auth_view *v);

/**
 * Checks the Authorization header value @p authorization (NULL: none):
 * "Bearer TOKEN", the scheme in any case. TC_AUTH_OK with *grant the
 * token's scopes (TC_SCOPE_* bits), or TC_AUTH_MISSING (no header, or
 * another scheme) / TC_AUTH_INVALID with *grant 0. The token is neither
 * kept nor logged.
 */
enum tc_auth_result tc_auth_check(struct tc_auth_view *v, const char *authorization,
                                  unsigned *grant);

/**
 * 1 when the Host header value @p host may be served: it names an entry of
 * allowed-hosts (case-insensitive; an entry without a port takes any port).
 * NULL (no Host, HTTP/1.0) is allowed: browsers always send one. The
 * answer for a value never changes during @p a's life (allowed-hosts is
 * read at start; a reload keeps it), so a caller may remember a pass keyed
 * on @p a (src/routes.c does, per connection). Making allowed-hosts live
 * would have to change that key.
 */
int tc_auth_host_allowed(const struct tc_auth *a, const char *host);

/** 1 when the Origin header value @p origin is in allowed-origins. */
int tc_auth_origin_allowed(const struct tc_auth *a, const char *origin);

/**
 * Protected mode: TC_OK when @p listen_host is a loopback address
 * (127.0.0.0/8, ::1, a name resolving only to those, a unix socket path),
 * or when @p has_tokens, @p has_client_certs or @p insecure. Otherwise
 * TC_EINVAL with @p err naming the address and both ways out.
 */
enum tc_status tc_auth_protected_mode(const char *listen_host, int has_tokens, int has_client_certs,
                                      int insecure, char *err, size_t len);

/**
 * A new random token (32 bytes from RAND_bytes, base64url without padding:
 * 43 characters) into @p token (at least 44 bytes), and its digest as 64
 * lowercase hex digits into @p hex (at least 65 bytes). TC_EIO if the
 * random generator fails.
 */
enum tc_status tc_auth_token_generate(char *token, size_t tlen, char *hex, size_t hlen);

/** Checks a token name for the tokens file: 1 to 64 of [A-Za-z0-9._@-]. */
int tc_auth_name_valid(const char *name);

#endif
