/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What every API handler answers with (src/api.h): the error table, the one
 * mapping from enum tc_status to an API error, the responses, and the
 * request parsing the handlers share.
 */
#include "src/api.h"
#include "src/clock.h"
#include "src/log.h"
#include "src/text.h"

#include <event2/http.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

/* ---- the error table --------------------------------------------------------------- */

static const struct {
    int http;
    const char *code;
} api_errors[] = {
#define TC_X(name, http, code) [TC_API_##name] = {http, code},
    TC_API_ERRORS(TC_X)
#undef TC_X
};

enum tc_api_error tc_api_error_of(enum tc_status st)
{
    switch (st) {
    case TC_ENOTFOUND:
        return TC_API_NOT_FOUND;
    case TC_ETOOBIG:
        return TC_API_TOO_LARGE;
    case TC_EINVAL:
        return TC_API_BAD_REQUEST;
    case TC_ETIMEOUT:
        return TC_API_TIMEOUT;
    default:
        return TC_API_UNAVAILABLE;
    }
}

/* ---- answers ------------------------------------------------------------------------ */

void tc_api_respond(struct tc_worker *w, struct tc_http_req *r, int status, const char *ctype,
                    const void *body, size_t len, const char *headers)
{
    /* The answer's one clock read; start_ns is on the same clock (CLOCK_MONOTONIC). */
    tc_worker_count_response(w, r->tag, r->method, status, tc_clock_ns() - r->start_ns);
    char cors[1536];
    if (r->cors_origin != NULL) {
        /* An allowed origin (src/routes.c): let its page read the answer and
         * the headers a cache client uses. The origin matched an entry of
         * allowed-origins, which holds no control characters. */
        int n = snprintf(cors, sizeof(cors),
                         "%sAccess-Control-Allow-Origin: %s\r\nVary: Origin\r\n"
                         "Access-Control-Expose-Headers: ETag, X-Cache, X-Cache-Tier, "
                         "Retry-After, WWW-Authenticate\r\n",
                         headers != NULL ? headers : "", r->cors_origin);
        if (n > 0 && (size_t)n < sizeof(cors)) {
            headers = cors;
        }
    }
    tc_http_respond(r, status, ctype, body, len, headers);
}

void tc_api_respond_parts(struct tc_worker *w, struct tc_http_req *r, int status, const char *ctype,
                          const struct tc_http_part *parts, size_t n, const char *headers)
{
    tc_worker_count_response(w, r->tag, r->method, status, tc_clock_ns() - r->start_ns);
    tc_http_respond_parts(r, status, ctype, parts, n, headers);
}

void tc_api_respond_json(struct tc_worker *w, struct tc_http_req *r, int status, json_t *j,
                         const char *headers)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (s == NULL) {
        static const char oom[] = "{\"error\":\"unavailable\",\"message\":\"out of memory\"}";
        tc_api_respond(w, r, 503, "application/json", oom, sizeof(oom) - 1, NULL);
        return;
    }
    tc_api_respond(w, r, status, "application/json", s, strlen(s), headers);
    free(s);
}

void tc_api_respond_ok(struct tc_worker *w, struct tc_http_req *r, const char *headers)
{
    static const char ok[] = "{\"ok\":true}";
    tc_api_respond(w, r, 200, "application/json", ok, sizeof(ok) - 1, headers);
}

void tc_api_error(struct tc_worker *w, struct tc_http_req *r, enum tc_api_error e,
                  const char *headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(api_errors[e].code));
    /* The message may quote client bytes: keep it valid UTF-8 for JSON. */
    json_t *m = json_string(msg);
    json_object_set_new(j, "message", m ? m : json_string("(message not valid UTF-8)"));
    tc_log(TC_LOG_DEBUG, "%d %s: %s", api_errors[e].http, api_errors[e].code, msg);
    tc_api_respond_json(w, r, api_errors[e].http, j, headers);
}

void tc_api_status(struct tc_worker *w, struct tc_http_req *r, enum tc_status st)
{
    tc_api_error(w, r, tc_api_error_of(st), NULL, "%s", tc_strerror(st));
}

/* ---- shared request parsing --------------------------------------------------------- */

const char *tc_api_query(struct tc_http_req *r, const char *name, struct evkeyvalq *q)
{
    if (r->query == NULL) {
        return NULL;
    }
    if (TAILQ_EMPTY(q) && evhttp_parse_query_str(r->query, q) != 0) {
        return NULL;
    }
    return evhttp_find_header(q, name);
}

uint64_t tc_api_secs_to_ms(double secs)
{
    /* A TTL of 0.0004 s rounded to 0 would mean "never expires", the
     * opposite of what was asked. */
    uint64_t ms = (uint64_t)llround(secs * 1000.0);
    return ms == 0 && secs > 0 ? 1 : ms;
}

const char *tc_api_tier_label(int i)
{
    static const char *const labels[] = {"l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8"};
    return i >= 0 && i < 8 ? labels[i] : "l?";
}

int tc_api_decode_name(struct tc_worker *w, struct tc_http_req *r, const char *raw,
                       const char *what, const char *usage, char **to_free, const char **name,
                       size_t *len, enum tc_status *st)
{
    *to_free = NULL;
    *st = TC_OK;
    if (raw[0] == '\0') {
        tc_api_error(w, r, TC_API_BAD_KEY, NULL, "the %s is empty: use %s", what, usage);
        return -1;
    }
    if (strlen(raw) > TC_KEY_MAX * 3) {
        tc_api_error(w, r, TC_API_KEY_TOO_LONG, NULL, "the %s is longer than %u bytes", what,
                     TC_KEY_MAX);
        return -1;
    }
    /* Most names have no escapes: no decoding copy for them. */
    size_t n = 0;
    const char *k = raw;
    if (strchr(raw, '%') != NULL) {
        *to_free = evhttp_uridecode(raw, 0, &n);
        if (*to_free == NULL) {
            *st = TC_ENOMEM;
            return -1;
        }
        k = *to_free;
    } else {
        n = strlen(raw);
    }
    if (n == 0 || n > TC_KEY_MAX) {
        tc_api_error(w, r, n ? TC_API_KEY_TOO_LONG : TC_API_BAD_KEY, NULL,
                     "the %s must be 1 to %u bytes after percent-decoding (it is %zu)", what,
                     TC_KEY_MAX, n);
        free(*to_free);
        *to_free = NULL;
        return -1;
    }
    if (!tc_text_utf8_valid(k, n)) {
        free(*to_free);
        *to_free = NULL;
        tc_api_error(w, r, TC_API_BAD_KEY, NULL,
                     "the %s must be valid UTF-8 after percent-decoding", what);
        return -1;
    }
    *name = k;
    *len = n;
    return 0;
}

/* ---- JSON request bodies -------------------------------------------------------------- */

int tc_api_body_parse(struct tc_worker *w, struct tc_http_req *r, unsigned opts, const char *usage,
                      json_t **out)
{
    *out = NULL;
    const char *ct = tc_http_header(r, "content-type");
    if (ct != NULL && tc_text_ctype_is(ct, "application/x-www-form-urlencoded")) {
        /* curl -d labels the JSON it sends this way. A web page's form can
         * send this type to any site without asking (no CORS preflight),
         * so from a browser (Origin) it is refused. */
        const char *origin = tc_http_header(r, "origin");
        if (origin != NULL) {
            tc_api_error(w, r, TC_API_UNSUPPORTED_MEDIA_TYPE, NULL,
                         "a form-encoded body from a web page (Origin: %.100s) is not accepted: "
                         "send Content-Type: application/json",
                         origin);
            return -1;
        }
    } else if (ct != NULL && !tc_text_ctype_is(ct, "application/json")) {
        tc_api_error(w, r, TC_API_UNSUPPORTED_MEDIA_TYPE, NULL,
                     "Content-Type '%.100s' is not accepted: send a JSON body like %s", ct, usage);
        return -1;
    }
    if (r->body.len == 0) {
        if (opts & TC_API_BODY_EMPTY_OK) {
            return 0;
        }
        tc_api_error(w, r, TC_API_EMPTY_BODY, NULL, "empty body: send a JSON body like %s", usage);
        return -1;
    }
    json_error_t err;
    size_t flags = JSON_REJECT_DUPLICATES | (opts & TC_API_BODY_NUL_OK ? JSON_ALLOW_NUL : 0);
    json_t *doc = json_loadb((const char *)r->body.data, r->body.len, flags, &err);
    if (doc == NULL) {
        tc_api_error(w, r, TC_API_BAD_JSON, NULL, "malformed JSON body: %s (line %d, column %d)",
                     err.text, err.line, err.column);
        return -1;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        tc_api_error(w, r, TC_API_BAD_JSON, NULL, "the body must be a JSON object like %s", usage);
        return -1;
    }
    *out = doc;
    return 0;
}

int tc_api_body_fields(struct tc_worker *w, struct tc_http_req *r, json_t *o,
                       const char *const *fields, const char *where)
{
    char names[256] = "";
    size_t n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        (void)v;
        size_t i = 0;
        while (fields[i] != NULL && strcmp(fields[i], k) != 0) {
            i++;
        }
        if (fields[i] == NULL) {
            /* Every unknown member at once: one round trip to fix them all. */
            size_t used = strlen(names);
            snprintf(names + used, sizeof(names) - used, "%s\"%.40s\"", n ? ", " : "", k);
            n++;
        }
    }
    if (n == 0) {
        return 0;
    }
    char valid[256] = "";
    for (size_t i = 0; fields[i] != NULL; i++) {
        size_t used = strlen(valid);
        snprintf(valid + used, sizeof(valid) - used, "%s%s", i ? ", " : "", fields[i]);
    }
    tc_api_error(w, r, TC_API_UNKNOWN_FIELD, NULL, "%s%sunknown field%s %s%s (valid: %s)",
                 where ? where : "", where ? ": " : "", n > 1 ? "s" : "", names,
                 where ? "" : " in the JSON body", valid[0] ? valid : "none");
    return -1;
}

json_t *tc_api_body_object(struct tc_worker *w, struct tc_http_req *r, const char *const *fields,
                           const char *usage)
{
    json_t *doc;
    if (tc_api_body_parse(w, r, 0, usage, &doc) != 0) {
        return NULL;
    }
    if (tc_api_body_fields(w, r, doc, fields, NULL) != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}
