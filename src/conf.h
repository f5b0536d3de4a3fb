/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Server configuration: every option is one row of TC_CONF_OPTIONS (STYLE
 * R11). The row drives the defaults, the command line (--NAME VALUE), the
 * config file (NAME = VALUE in INI form, any section; '-' and '_' are the
 * same), validation, --help and --describe-config. The command line wins over
 * the file. The result is immutable after tc_conf_load() returns.
 */
#ifndef TC_SRC_CONF_H
#define TC_SRC_CONF_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TC_CONF_MAX_TIERS 8

enum tc_conf_type {
    TC_CONF_STR,      /* free text */
    TC_CONF_UINT,     /* unsigned integer in [min, max] */
    TC_CONF_SIZE,     /* bytes with K/M/G suffixes, in [min, max] */
    TC_CONF_DURATION, /* ms; a bare number is seconds; in [min, max] */
    TC_CONF_LEVEL,    /* log level name */
    TC_CONF_TIERS,    /* repeatable tier URI */
    TC_CONF_LISTENER, /* reuseport | shared */
    TC_CONF_BOOL,     /* yes | no (also on/off, true/false, 1/0) */
    TC_CONF_CACHECTL, /* private | public */
};

/*    name                 field             type              default        min   max description
 */
#define TC_CONF_OPTIONS(X)                                                                         \
    X("listen", listen, TC_CONF_STR, "127.0.0.1:8080", 0, 0,                                       \
      "address:port to listen on ([::1]:8080 for IPv6)")                                           \
    X("tier", tiers, TC_CONF_TIERS, NULL, 0, 0,                                                    \
      "a tier URI, fastest first; repeatable (default: shm L1 64M + LMDB L2 in ./data)")           \
    X("workers", workers, TC_CONF_UINT, "0", 0, 256, "worker threads; 0 = number of cores")        \
    X("default-ttl", default_ttl_ms, TC_CONF_DURATION, "3600", 0, 3153600000000ull,                \
      "TTL for writes that give none; 0 = never expires")                                          \
    X("max-ttl", max_ttl_ms, TC_CONF_DURATION, "365d", 1000, 3153600000000ull,                     \
      "largest TTL a client may ask for")                                                          \
    X("max-value", max_value, TC_CONF_SIZE, "16M", 1, 1ull << 31, "largest value stored")          \
    X("max-header-size", max_header_size, TC_CONF_SIZE, "16K", 1024, 1u << 20,                     \
      "largest request line plus headers")                                                         \
    X("max-connections", max_connections, TC_CONF_UINT, "16384", 1, 1000000,                       \
      "open client connections at most; further ones get 503 and are closed")                      \
    X("idle-timeout", idle_timeout_ms, TC_CONF_DURATION, "60", 100, 86400000,                      \
      "close a keep-alive connection idle this long, or one that takes no output this long")       \
    X("header-timeout", header_timeout_ms, TC_CONF_DURATION, "10", 100, 3600000,                   \
      "answer 408 and close when a request's headers are not complete this long after its first "  \
      "byte (after connect for a new connection)")                                                 \
    X("body-timeout", body_timeout_ms, TC_CONF_DURATION, "10", 100, 3600000,                       \
      "answer 408 and close when no byte of a request body arrives for this long")                 \
    X("max-pending-body", max_pending_body, TC_CONF_SIZE, "256M", 65536, 1ull << 40,               \
      "request body bytes being received at once, server-wide; new bodies past it get 503")        \
    X("shutdown-timeout", shutdown_timeout_ms, TC_CONF_DURATION, "5", 0, 600000,                   \
      "on SIGTERM, wait this long for in-flight requests")                                         \
    X("sweep-interval", sweep_interval_ms, TC_CONF_DURATION, "1", 10, 86400000,                    \
      "how often the sweeper visits each local tier")                                              \
    X("sweep-budget", sweep_budget, TC_CONF_UINT, "20000", 1, 100000000,                           \
      "entries a sweep examines per tier per visit")                                               \
    X("grace", grace_ms, TC_CONF_DURATION, "0", 0, 65535000,                                       \
      "keep values this long past their TTL, served stale while one client refreshes them")        \
    X("lease", lease_ms, TC_CONF_DURATION, "5", 1, 3600000,                                        \
      "lease given to the first client that finds a stale value (grace) without asking for one")   \
    X("origin", origin, TC_CONF_STR, "", 0, 0,                                                     \
      "read-through: fetch a missing /cache/{key} from URL/{key}, once for all clients")           \
    X("origin-timeout", origin_timeout_ms, TC_CONF_DURATION, "5", 10, 600000,                      \
      "give up on an origin fetch after this long (504)")                                          \
    X("negative-ttl", negative_ttl_ms, TC_CONF_DURATION, "0", 0, 31536000000ull,                   \
      "remember an origin's 404/410 this long and answer 404 without asking again; 0 = off")       \
    X("cache-control", cache_control_public, TC_CONF_CACHECTL, "private", 0, 0,                    \
      "Cache-Control of GET answers: private (browsers only) or public (CDNs and proxies too)")    \
    X("listener", listener_shared, TC_CONF_LISTENER, "reuseport", 0, 0,                            \
      "reuseport: a listening socket per worker; shared: one socket all workers accept on")        \
    X("listen-tls", listen_tls, TC_CONF_STR, "", 0, 0,                                             \
      "address:port for HTTPS clients (TLS 1.2/1.3), beside listen; needs tls-cert and tls-key")   \
    X("tls-cert", tls_cert, TC_CONF_STR, "", 0, 0,                                                 \
      "PEM file: the server certificate, then its chain; SIGHUP reloads it")                       \
    X("tls-key", tls_key, TC_CONF_STR, "", 0, 0,                                                   \
      "PEM file: the private key of tls-cert; refused if group or others may access it")           \
    X("tls-client-ca", tls_client_ca, TC_CONF_STR, "", 0, 0,                                       \
      "PEM CA bundle: ask TLS clients for a certificate and refuse one it does not verify")        \
    X("tls-client-scopes", tls_client_scopes, TC_CONF_STR, "", 0, 0,                               \
      "scopes of verified client certificates: 'CN=app1 read,write; CN=ops admin' "                \
      "(CN=NAME or a whole RFC 2253 DN)")                                                          \
    X("tls-handshake-timeout", tls_handshake_timeout_ms, TC_CONF_DURATION, "10", 100, 3600000,     \
      "close a TLS connection whose handshake is not complete this long after connect")            \
    X("log-level", log_level, TC_CONF_LEVEL, "info", 0, 0, "crit, warn, notice, info or debug")    \
    X("log-file", log_file, TC_CONF_STR, "", 0, 0, "log to this file instead of stderr")           \
    X("access-log", access_log, TC_CONF_STR, "", 0, 0, "write one line per request to this file")  \
    X("access-log-format", access_log_format, TC_CONF_STR, "combined", 0, 0,                       \
      "combined (nginx/Apache combined + cache=, tier=, us=) or json (one object per line)")       \
    X("encryption-keys-file", encryption_keys_file, TC_CONF_STR, "", 0, 0,                         \
      "keyring (mode 0600) whose newest key seals values in lmdb:// and redis:// tiers "           \
      "(AES-256-GCM); make one with: tiercache key new PATH")                                      \
    /* issue 15: bulk requests */                                                                  \
    X("max-batch", max_batch, TC_CONF_UINT, "1000", 1, 1000000,                                    \
      "keys in one /batch request at most; more get 413")                                          \
    TC_CONF_AUTH_OPTIONS(X)

/* Access control (issue 14, src/auth.h, docs/security.md). */
#define TC_CONF_AUTH_OPTIONS(X)                                                                    \
    X("auth-tokens-file", auth_tokens_file, TC_CONF_STR, "", 0, 0,                                 \
      "Bearer tokens with scopes, one 'NAME SCOPES sha256:HEX' a line (mode 0600; re-read on "     \
      "SIGHUP); empty: no tokens")                                                                 \
    X("public-health", public_health, TC_CONF_BOOL, "yes", 0, 0,                                   \
      "no: /health needs a valid token (any scope) like every other route")                        \
    X("insecure", insecure, TC_CONF_BOOL, "no", 0, 0,                                              \
      "yes: allow a non-loopback listen address with no auth-tokens-file and no client "           \
      "certificates (protected mode off)")                                                         \
    X("allowed-hosts", allowed_hosts, TC_CONF_STR, "", 0, 0,                                       \
      "Host names clients may use (comma-separated, NAME or NAME:PORT, * for any); empty: the "    \
      "listen address, localhost, 127.0.0.1, [::1] (and any IP address on a wildcard listen)")     \
    X("allowed-origins", allowed_origins, TC_CONF_STR, "", 0, 0,                                   \
      "web origins (https://app.example) allowed to send state-changing requests and given CORS "  \
      "headers (comma-separated); empty: none")

struct tc_conf {
    const char *listen;
    const char *tiers[TC_CONF_MAX_TIERS];
    size_t ntiers;
    uint64_t workers;
    uint64_t default_ttl_ms;
    uint64_t max_ttl_ms;
    uint64_t max_value;
    uint64_t max_header_size;
    uint64_t max_connections;
    uint64_t idle_timeout_ms;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t max_pending_body;
    uint64_t shutdown_timeout_ms;
    uint64_t sweep_interval_ms;
    uint64_t sweep_budget;
    uint64_t grace_ms;
    uint64_t lease_ms;
    const char *origin;
    uint64_t origin_timeout_ms;
    uint64_t negative_ttl_ms;
    int cache_control_public;
    int listener_shared;
    const char *listen_tls;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_client_ca;
    const char *tls_client_scopes;
    uint64_t tls_handshake_timeout_ms;
    int log_level;
    const char *log_file;
    const char *access_log;
    const char *access_log_format;
    /* Access control (TC_CONF_AUTH_OPTIONS). */
    const char *auth_tokens_file;
    int public_health;
    int insecure;
    const char *allowed_hosts;
    const char *allowed_origins;
    const char *encryption_keys_file;
    uint64_t max_batch; /* issue 15 */
    /* Derived. */
    char listen_host[256];
    unsigned listen_port;
    FILE *_err;                /* where load errors go: stderr, or the reload's buffer */
    char listen_tls_host[256]; /* from listen-tls; "" when there is none */
    unsigned listen_tls_port;
    /* Storage for strings (owned). */
    char *_strings[64];
    size_t _nstrings;
};

enum tc_conf_result {
    TC_CONF_RUN = 0,  /* start the server */
    TC_CONF_EXIT = 1, /* --help, --version, ... printed; exit 0 */
    TC_CONF_ERROR = 2 /* message printed; exit 2 */
};

/**
 * Fills @p c from the defaults, the config file (--config FILE) and the
 * command line. Prints errors naming the option, the value and what is
 * valid. -t/--check-config checks it (tier URIs by tc_tier_check(), log
 * paths writable) and says "configuration ok" (TC_CONF_EXIT) or names the
 * problem (TC_CONF_ERROR); -T also prints the effective settings, as does
 * --describe-config (with each setting's description).
 * On TC_CONF_RUN the caller owns @p c (tc_conf_deinit()).
 */
enum tc_conf_result tc_conf_load(struct tc_conf *c, int argc, char **argv);

/**
 * For a reload (SIGHUP): fills @p c from the defaults, the config file and
 * the command line of @p argv (the argv the server started with, whose
 * informational flags are ignored), writing errors to @p err instead of
 * stderr. The caller owns @p c whatever the result (tc_conf_deinit()).
 * Not thread-safe (getopt): the main thread only.
 */
enum tc_conf_result tc_conf_reload(struct tc_conf *c, int argc, char **argv, FILE *err);

/** Prints every setting of @p c as an INI file (tier URIs redacted): what -T shows. */
void tc_conf_print(const struct tc_conf *c, FILE *out);

/** Receives one setting that differs: its name, the old and the new value as text. */
typedef void (*tc_conf_diff_fn)(void *arg, const char *name, const char *old_value,
                                const char *new_value);

/** Calls @p fn for every setting whose value differs between @p a and @p b, in table order. */
void tc_conf_diff(const struct tc_conf *a, const struct tc_conf *b, tc_conf_diff_fn fn, void *arg);

/** Frees what tc_conf_load() allocated. */
void tc_conf_deinit(struct tc_conf *c);

#endif
