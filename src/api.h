/* SPDX-License-Identifier: BSD-2-Clause */
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
    X(UNAUTHORIZED, 401, "unauthorized")                                                           \
    X(FORBIDDEN, 403, "forbidden")                                                                 \
    X(UNKNOWN_FIELD, 400, "unknown_field")                                                         \
    X(EMPTY_BODY, 400, "empty_body")                                                               \
    X(NOT_FOUND, 404, "not_found")                                                                 \
    X(LEASE_TIMEOUT, 404, "lease_timeout")                                                         \
    X(METHOD_NOT_ALLOWED, 405, "method_not_allowed")                                               \
    X(LOCK_HELD, 409, "timeout")                                                                   \
    X(NOT_OWNER, 409, "not_owner")                                                                 \
    X(NOT_HELD, 404, "not_held")                                                                   \
    X(OVERFLOW, 409, "overflow")                                                                   \
    X(RATE_LIMITED, 429, "rate_limited")                                                           \
    X(WRITE_BUSY, 409, "busy")                                                                     \
    X(PRECONDITION_FAILED, 412, "precondition_failed")                                             \
    X(TOO_LARGE, 413, "payload_too_large")                                                         \
    X(KEY_TOO_LONG, 414, "key_too_long")                                                           \
    X(UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type")                                       \
    X(MISDIRECTED, 421, "misdirected_request")                                                     \
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

/**
 * Reads member @p name of the JSON object @p doc (may be NULL) as seconds
 * into *out ms, within [0, max]; *out = def when absent or null. Returns 0;
 * or -1 once it answered 400 (not a number of seconds in range).
 */
int tc_api_json_seconds(struct tc_worker *w, struct tc_http_req *r, json_t *doc, const char *name,
                        uint64_t def, uint64_t max, uint64_t *out);

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

/*
 * Shared by /cache/{key} (src/api_cache.c, which keeps them) and the bulk
 * routes (src/api_batch.c), so that an item of a batch is read, stored and
 * written exactly as a single request's value.
 */

/** Appends @p s (@p n bytes) to @p out as a JSON string, copied as it is
 * when it is plain ASCII. @return TC_OK; TC_EINVAL if it is not valid UTF-8;
 * TC_ENOMEM. */
enum tc_status tc_api_json_string(struct tc_buf *out, const char *s, size_t n);

/** Stores the JSON @p value (a client's "value") in @p op: a string as
 * TC_ENC_STRING bytes (with TC_ITEM_F_PLAIN when it needs no escaping),
 * anything else as its compact serialization, TC_ENC_JSON.
 * @return TC_OK or TC_ENOMEM. */
enum tc_status tc_api_value_from_json(json_t *value, struct tc_stack_op *op);

/** Reads the JSON TTL @p v (seconds; @p what names it in the error) into
 * *ttl_ms within max-ttl; @p v NULL leaves *ttl_ms. Returns 0, or -1 once
 * it answered 400 bad_ttl. */
int tc_api_parse_ttl(struct tc_worker *w, struct tc_http_req *r, json_t *v, const char *what,
                     uint64_t *ttl_ms);

/*
 * A JSON request body, read by one rule on every route that takes one
 * (docs/api.md "Request bodies"); the routes' own cases (PUT's bytes and
 * text, an empty body meaning "all defaults") stay at the call site.
 */

/** What tc_api_body_parse() accepts besides a non-empty JSON object. */
enum tc_api_body_opt {
    TC_API_BODY_EMPTY_OK = 1 << 0, /* an empty body: no document (all defaults) */
    TC_API_BODY_NUL_OK = 1 << 1,   /* strings may hold U+0000 (a value stored as it is) */
};

/**
 * Reads @p r's body as a JSON object into *out (the caller's to
 * json_decref; NULL for an empty body under TC_API_BODY_EMPTY_OK).
 * Content-Type may be absent, application/json, or the
 * application/x-www-form-urlencoded that curl -d sends, the latter not
 * from a web page (an Origin header): a page's form may post it to any
 * site with no CORS preflight. @p opts: enum tc_api_body_opt bits;
 * @p usage: an example body for the messages.
 * Returns 0; or -1 once it answered: 415 unsupported_media_type, 400
 * empty_body, 400 bad_json (malformed, a duplicate member, not an object).
 * Checks the type before the length: an empty form from a page is refused.
 */
int tc_api_body_parse(struct tc_worker *w, struct tc_http_req *r, unsigned opts, const char *usage,
                      json_t **out);

/**
 * Refuses the members of the JSON object @p o not in @p fields
 * (NULL-terminated): a misspelt member would otherwise be ignored and its
 * default used, silently. Answers 400 unknown_field naming each unknown
 * member and the valid ones, the message prefixed by @p where ("items[3]")
 * unless NULL. Returns 0 when all are known, -1 once it answered.
 */
int tc_api_body_fields(struct tc_worker *w, struct tc_http_req *r, json_t *o,
                       const char *const *fields, const char *where);

/**
 * tc_api_body_parse() of a required body, then tc_api_body_fields(): the
 * document (the caller's), or NULL once it answered.
 */
json_t *tc_api_body_object(struct tc_worker *w, struct tc_http_req *r, const char *const *fields,
                           const char *usage);

/**
 * Tags of a write (issue 15), appended to @p out as tc_tier_req.tags
 * ("a\0b\0"): from the JSON array @p v ("tags"; NULL or null: none), or
 * from the X-Cache-Tags header ("a, b"). Returns 0, or -1 once it answered
 * 400 (a tag that is not 1..64 of [A-Za-z0-9_.:/@+-], more than 16).
 * In src/api_purge.c.
 */
int tc_api_tags_json(struct tc_worker *w, struct tc_http_req *r, json_t *v, struct tc_buf *out);
int tc_api_tags_header(struct tc_worker *w, struct tc_http_req *r, struct tc_buf *out);

/* The handlers, one file per area of the API. */
enum tc_status tc_api_cache(struct tc_worker *w, struct tc_http_req *r); /* src/api_cache.c */
enum tc_status tc_api_locks(struct tc_worker *w, struct tc_http_req *r); /* src/api_locks.c */
/* PATCH /cache/{key}: renews a cache lease (X-Lease-Token); src/api_locks.c. */
enum tc_status tc_api_lease_renew(struct tc_worker *w, struct tc_http_req *r);
enum tc_status tc_api_counters(struct tc_worker *w, struct tc_http_req *r); /* api_counters.c */
enum tc_status tc_api_limits(struct tc_worker *w, struct tc_http_req *r);   /* api_counters.c */
enum tc_status tc_api_health(struct tc_worker *w, struct tc_http_req *r);   /* src/api_admin.c */
enum tc_status tc_api_stats(struct tc_worker *w, struct tc_http_req *r);
enum tc_status tc_api_metrics(struct tc_worker *w, struct tc_http_req *r);
/* issue 15 */
enum tc_status tc_api_batch_get(struct tc_worker *w, struct tc_http_req *r); /* src/api_batch.c */
enum tc_status tc_api_batch_set(struct tc_worker *w, struct tc_http_req *r); /* src/api_batch.c */
enum tc_status tc_api_batch_delete(struct tc_worker *w,
                                   struct tc_http_req *r);               /* src/api_batch.c */
enum tc_status tc_api_purge(struct tc_worker *w, struct tc_http_req *r); /* src/api_purge.c */
enum tc_status tc_api_keys(struct tc_worker *w, struct tc_http_req *r);  /* src/api_keys.c */

#endif
