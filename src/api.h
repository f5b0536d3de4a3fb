/*
 * For the files that implement the HTTP API (src/api_*.c) and the route
 * table that dispatches to them (src/routes.c): the handler signature, the
 * one table of error answers, and the helpers every handler answers with.
 *
 * A handler answers exactly once, now or later, through tc_api_respond*()
 * and tc_api_error(); it returns TC_OK once it has answered or will answer,
 * and any other status to have routes.c answer that status for it (the one
 * mapping from enum tc_status to an API error, tc_api_error_of()).
 */
#ifndef TC_SRC_API_H
#define TC_SRC_API_H

#include "src/http.h"
#include "src/worker.h"

#include <event2/keyvalq_struct.h>
#include <jansson.h>

/** A route's handler: answers @p r on worker @p w. */
typedef enum tc_status (*tc_api_handler_fn)(struct tc_worker *w, struct tc_http_req *r);

/*
 * Every error the API answers: {name, HTTP status, "error" code}. A handler
 * names one of these, never a status code of its own, so the status of each
 * error is written once, here. A status new to this table needs a slot in
 * TC_WORKER_CODES (src/worker.h), or /metrics counts it as code="other".
 */
#define TC_API_ERRORS(X)                                                                           \
    X(BAD_REQUEST, 400, "bad_request")                                                             \
    X(BAD_JSON, 400, "bad_json")                                                                   \
    X(BAD_KEY, 400, "bad_key")                                                                     \
    X(BAD_TTL, 400, "bad_ttl")                                                                     \
    X(BAD_LEASE, 400, "bad_lease")                                                                 \
    X(BAD_TOKEN, 400, "bad_token")                                                                 \
    X(MISSING_VALUE, 400, "missing_value")                                                         \
    X(MISSING_TOKEN, 400, "missing_token")                                                         \
    X(UNKNOWN_FIELD, 400, "unknown_field")                                                         \
    X(EMPTY_BODY, 400, "empty_body")                                                               \
    X(NOT_FOUND, 404, "not_found")                                                                 \
    X(LEASE_TIMEOUT, 404, "lease_timeout")                                                         \
    X(METHOD_NOT_ALLOWED, 405, "method_not_allowed")                                               \
    X(LOCK_HELD, 409, "timeout")                                                                   \
    X(NOT_OWNER, 409, "not_owner")                                                                 \
    X(WRITE_BUSY, 409, "busy")                                                                     \
    X(PRECONDITION_FAILED, 412, "precondition_failed")                                             \
    X(TOO_LARGE, 413, "payload_too_large")                                                         \
    X(KEY_TOO_LONG, 414, "key_too_long")                                                           \
    X(UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type")                                       \
    X(ORIGIN_ERROR, 502, "origin_error")                                                           \
    X(ORIGIN_UNREACHABLE, 502, "origin_unreachable")                                               \
    X(ORIGIN_TOO_BIG, 502, "origin_too_big")                                                       \
    X(UNAVAILABLE, 503, "unavailable")                                                             \
    X(TIMEOUT, 504, "timeout")                                                                     \
    X(ORIGIN_TIMEOUT, 504, "origin_timeout")

enum tc_api_error {
#define TC_X(name, http, code) TC_API_##name,
    TC_API_ERRORS(TC_X)
#undef TC_X
};

/** The API error answering a tiercache status (TC_ENOTFOUND -> NOT_FOUND...). */
enum tc_api_error tc_api_error_of(enum tc_status st);

/** Answers @p r with @p status and @p body; @p headers: extra lines, each
 * ending in "\r\n", or NULL. Counts the answer (route, method, status,
 * time since the request was complete) for /stats and /metrics. */
void tc_api_respond(struct tc_worker *w, struct tc_http_req *r, int status, const char *ctype,
                    const void *body, size_t len, const char *headers);

/** As tc_api_respond(), the body in @p n parts sent by reference (tc_http_respond_parts). */
void tc_api_respond_parts(struct tc_worker *w, struct tc_http_req *r, int status, const char *ctype,
                          const struct tc_http_part *parts, size_t n, const char *headers);

/** Answers with the JSON @p j (taken over). */
void tc_api_respond_json(struct tc_worker *w, struct tc_http_req *r, int status, json_t *j,
                         const char *headers);

/** Answers {"ok":true} (200). */
void tc_api_respond_ok(struct tc_worker *w, struct tc_http_req *r, const char *headers);

/** Answers {"error": code, "message": printf(fmt, ...)} with the error's status. */
void tc_api_error(struct tc_worker *w, struct tc_http_req *r, enum tc_api_error e,
                  const char *headers, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/** Answers the error of @p st, its message tc_strerror(st). */
void tc_api_status(struct tc_worker *w, struct tc_http_req *r, enum tc_status st);

/**
 * Percent-decodes the key or lock name @p raw (@p what: "key", "lock name";
 * @p usage: "/cache/{key}") into *name / *len, with *to_free the copy to
 * free (NULL when raw had no escapes). Returns 0; or -1 when it answered
 * (a bad name) or, with *st set, when the caller must answer *st.
 */
int tc_api_decode_name(struct tc_worker *w, struct tc_http_req *r, const char *raw,
                       const char *what, const char *usage, char **to_free, const char **name,
                       size_t *len, enum tc_status *st);

/** The decoded value of query parameter @p name, or NULL. @p q holds the
 * parsed query: TAILQ_INIT it once per request, evhttp_clear_headers it
 * when done; the value lives as long as @p q. */
const char *tc_api_query(struct tc_http_req *r, const char *name, struct evkeyvalq *q);

/** Seconds (finite, >= 0) as whole ms; a positive time is at least 1 ms. */
uint64_t tc_api_secs_to_ms(double secs);

/** "l1", "l2", ... for tier index @p i. */
const char *tc_api_tier_label(int i);

/**
 * Appends to @p out the JSON a GET of @p key answers for @p value with
 * header @p hdr at @p now_ms: {"key":..,"value":..,["encoding":"base64",]
 * "ttl":..[,"stale":true]}. A string whose header has TC_ITEM_F_PLAIN is
 * copied without a scan; any other is escaped.
 * @return TC_OK; TC_ENOMEM; TC_ECORRUPT when the value is not what its
 *         encoding says (a string that is not UTF-8): treat as a miss.
 */
enum tc_status tc_api_cache_render(const void *key, size_t key_len, const struct tc_buf *value,
                                   const struct tc_item_hdr *hdr, uint64_t now_ms,
                                   struct tc_buf *out);

/** Frees the /cache request states worker kept for reuse (src/api_cache.c);
 * on the worker's thread once it serves no request. NULL is a no-op. */
void tc_api_cache_pool_destroy(struct tc_api_cache_pool *pool);

/* The handlers, one file per area of the API. */
enum tc_status tc_api_cache(struct tc_worker *w, struct tc_http_req *r);  /* src/api_cache.c */
enum tc_status tc_api_locks(struct tc_worker *w, struct tc_http_req *r);  /* src/api_locks.c */
enum tc_status tc_api_health(struct tc_worker *w, struct tc_http_req *r); /* src/api_admin.c */
enum tc_status tc_api_stats(struct tc_worker *w, struct tc_http_req *r);
enum tc_status tc_api_metrics(struct tc_worker *w, struct tc_http_req *r);

#endif
