/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * /cache/{key}: reads, writes and deletes of cache values, over HTTP.
 *
 *   GET|HEAD  200 {"key","value","ttl"} + X-Cache, X-Cache-Tier, ETag,
 *             Last-Modified, Cache-Control, Date, Age | 304 | 404 | 412
 *             X-Cache-Lease: MS (or ?lease=MS): a miss gives the first
 *             reader a lease (X-Lease-Token) and parks the others
 *   PUT       {"value": JSON, "ttl"|"timeout": s, "tags": [..]}, or bytes
 *             (octet-stream or no Content-Type), or text/plain as a string,
 *             + ?ttl=; X-Cache-Tags: a, b (issue 15: purge by tag,
 *             src/api_purge.c); X-Lease-Token: fills a key whose lease the
 *             writer holds; If-Match / If-None-Match: a conditional write (412)
 *   DELETE    200, idempotent; If-Match: only that value (PURGE: the same)
 *
 * This file is the HTTP side only: it reads the request, hands the work to
 * read-through (src/readthrough.h), and turns the one result it gets back
 * into one response (answer_read, answer_write).
 */
#include "src/api.h"
#include "src/clock.h"
#include "src/cond.h"
#include "src/log.h"
#include "src/readthrough.h"
#include "src/text.h"

#include <errno.h>
#include <event2/http.h>
#include <float.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define CACHE_PREFIX_LEN (sizeof("/cache/") - 1)
#define LEASE_MAX_MS     3600000u

/* One request being answered. Ended ones are kept in the worker's pool and
 * reused with their body buffer, so that a GET hit allocates nothing here. */
struct cache_req {
    struct tc_worker *w;
    struct tc_http_req *r;
    int is_put;
    int raw;                      /* the client takes values as octets (Accept) */
    int cond;                     /* a GET with If-Match, If-None-Match or If-Modified-Since */
    uint64_t etag;                /* a PUT: the stored value's */
    const struct tc_buf *json_of; /* the value json was rendered from */
    struct tc_buf json;           /* a hit's body, rendered when it was accepted */
    struct cache_req *next_free;
};

#define POOL_MAX     64u
#define POOL_BUF_MAX 16384u /* a larger body buffer is not kept */

struct tc_api_cache_pool {
    struct cache_req *free;
    unsigned n;
    /* The Last-Modified of the item served last, reused while it is the
     * same second (a hot key's is formatted once). */
    uint64_t lm_s;
    char lm[TC_COND_DATE_LEN + 1];
};

/* Whether the client takes values as octets only (Accept), not as JSON. */
static int wants_raw(const struct tc_http_req *r)
{
    const char *accept = tc_http_header(r, "accept");
    return accept != NULL && strstr(accept, "application/octet-stream") != NULL &&
           strstr(accept, "application/json") == NULL;
}

static struct cache_req *req_create(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_api_cache_pool *pool = w->cache_pool;
    if (pool == NULL && (pool = w->cache_pool = calloc(1, sizeof(*pool))) == NULL) {
        return NULL;
    }
    struct cache_req *q = pool->free;
    if (q != NULL) {
        pool->free = q->next_free;
        pool->n--;
        q->json.len = 0;
    } else if ((q = calloc(1, sizeof(*q))) == NULL) {
        return NULL;
    }
    q->w = w;
    q->r = r;
    q->is_put = 0;
    q->raw = wants_raw(r);
    q->cond = 0;
    q->json_of = NULL;
    return q;
}

static void req_free(struct cache_req *q)
{
    struct tc_api_cache_pool *pool = q->w->cache_pool;
    if (pool->n < POOL_MAX) {
        if (q->json.cap > POOL_BUF_MAX) {
            tc_buf_deinit(&q->json);
        }
        q->next_free = pool->free;
        pool->free = q;
        pool->n++;
        return;
    }
    tc_buf_deinit(&q->json);
    free(q);
}

void tc_api_cache_pool_destroy(struct tc_api_cache_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    while (pool->free != NULL) {
        struct cache_req *q = pool->free;
        pool->free = q->next_free;
        tc_buf_deinit(&q->json);
        free(q);
    }
    free(pool);
}

enum tc_status tc_api_json_string(struct tc_buf *out, const char *s, size_t n)
{
    if (tc_text_plain_ascii(s, n)) {
        enum tc_status st = tc_buf_append(out, "\"", 1);
        if (st == TC_OK) {
            st = tc_buf_append(out, s, n);
        }
        return st == TC_OK ? tc_buf_append(out, "\"", 1) : st;
    }
    json_t *j = json_stringn(n ? s : "", n);
    if (j == NULL) {
        return TC_EINVAL;
    }
    char *text = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    if (text == NULL) {
        return TC_ENOMEM;
    }
    enum tc_status st = tc_buf_append(out, text, strlen(text));
    free(text);
    return st;
}

/* {"key":<key>,"value": */
static enum tc_status render_head(const void *key, size_t key_len, struct tc_buf *out)
{
    enum tc_status st = tc_buf_append(out, "{\"key\":", 7);
    if (st == TC_OK) {
        st = tc_api_json_string(out, key, key_len);
    }
    return st == TC_OK ? tc_buf_append(out, ",\"value\":", 9) : st;
}

/* ,"ttl":..} */
static enum tc_status render_ttl(const struct tc_item_hdr *hdr, uint64_t now_ms, struct tc_buf *out)
{
    static const char never[] = ",\"ttl\":null}", stale[] = ",\"ttl\":0,\"stale\":true}";
    uint64_t fresh = tc_item_fresh_until(hdr);
    if (fresh == 0) {
        return tc_buf_append(out, never, sizeof(never) - 1);
    }
    if (fresh <= now_ms) {
        return tc_buf_append(out, stale, sizeof(stale) - 1);
    }
    char ttl[32] = ",\"ttl\":";
    size_t n = 7;
    n += tc_text_u64(ttl + n, (fresh - now_ms + 999) / 1000);
    ttl[n++] = '}';
    return tc_buf_append(out, ttl, n);
}

/* 1 if the value is its own JSON text (serialized JSON) or string body
 * (TC_ITEM_F_PLAIN): it goes out as it is, between a head and a tail. */
static int verbatim(const struct tc_item_hdr *hdr)
{
    return hdr->encoding == TC_ENC_JSON ||
           (hdr->encoding == TC_ENC_STRING && (hdr->flags & TC_ITEM_F_PLAIN));
}

/* For a verbatim value: the JSON before it and after it, in out, split at
 * *split (quotes included for a string). */
static enum tc_status render_around(const void *key, size_t key_len, const struct tc_item_hdr *hdr,
                                    uint64_t now_ms, struct tc_buf *out, size_t *split)
{
    int quoted = hdr->encoding == TC_ENC_STRING;
    enum tc_status st = render_head(key, key_len, out);
    if (st == TC_OK && quoted) {
        st = tc_buf_append(out, "\"", 1);
    }
    *split = out->len;
    if (st == TC_OK && quoted) {
        st = tc_buf_append(out, "\"", 1);
    }
    return st == TC_OK ? render_ttl(hdr, now_ms, out) : st;
}

enum tc_status tc_api_cache_render(const void *key, size_t key_len, const struct tc_buf *value,
                                   const struct tc_item_hdr *hdr, uint64_t now_ms,
                                   struct tc_buf *out)
{
    if (verbatim(hdr)) {
        size_t split;
        enum tc_status st = render_around(key, key_len, hdr, now_ms, out, &split);
        if (st == TC_OK) {
            st = tc_buf_reserve(out, out->len + value->len);
        }
        if (st != TC_OK) {
            return st;
        }
        memmove(out->data + split + value->len, out->data + split, out->len - split);
        memcpy(out->data + split, value->data, value->len);
        out->len += value->len;
        return TC_OK;
    }
    enum tc_status st = render_head(key, key_len, out);
    if (st != TC_OK) {
        return st;
    }
    if (hdr->encoding == TC_ENC_STRING) {
        /* Not known to be plain (written before TC_ITEM_F_PLAIN, or needing
         * escapes): scanned and escaped here. */
        st = tc_api_json_string(out, (const char *)value->data, value->len);
        if (st == TC_EINVAL) {
            return TC_ECORRUPT; /* not UTF-8: not what a PUT stores */
        }
    } else {
        size_t n = 4 * ((value->len + 2) / 3);
        size_t at = out->len;
        st = tc_buf_reserve(out, at + n + 32);
        if (st == TC_OK) {
            out->data[at] = '"';
            EVP_EncodeBlock(out->data + at + 1, value->data, (int)value->len);
            out->len = at + 1 + n;
            st = tc_buf_append(out, "\",\"encoding\":\"base64\"", 21);
        }
    }
    return st == TC_OK ? render_ttl(hdr, now_ms, out) : st;
}

/*
 * Read-through's accept hook: renders a hit's body while the stack's
 * callback runs, so that a value that does not render as its encoding says
 * is rejected there and the lookup goes on to the next tier (a corrupt
 * record is a miss, never a 5xx). Only a string not known to be plain can
 * fail so; every other value is rendered at answer time, and a verbatim one
 * is not copied at all (respond_value).
 */
static int accept_value(void *arg, const void *key, size_t key_len, const struct tc_buf *value,
                        const struct tc_item_hdr *hdr, uint64_t now_ms)
{
    struct cache_req *q = arg;
    q->json.len = 0;
    q->json_of = NULL;
    if (q->raw || q->cond || hdr->encoding != TC_ENC_STRING || (hdr->flags & TC_ITEM_F_PLAIN)) {
        return 1;
    }
    enum tc_status st = tc_api_cache_render(key, key_len, value, hdr, now_ms, &q->json);
    if (st == TC_OK) {
        q->json_of = value;
    }
    /* TC_ENOMEM leaves json empty: respond_value renders again and says 503. */
    return st != TC_ECORRUPT;
}

/* Answers 200 with a value: raw if the client accepts only octets, else JSON. */
static void respond_value(struct cache_req *q, const struct tc_rt_result *res, const char *headers)
{
    if (q->raw) {
        tc_api_respond(q->w, q->r, 200, "application/octet-stream", res->value->data,
                       res->value->len, headers);
        return;
    }
    enum tc_status st = TC_OK;
    if (q->json_of != res->value && verbatim(res->hdr)) {
        /* The value goes out by reference between its head and tail: a
         * 64 KiB value is not copied once more to be sent. */
        size_t split;
        q->json.len = 0;
        st = render_around(res->key, res->key_len, res->hdr, res->now_ms, &q->json, &split);
        if (st == TC_OK) {
            struct tc_http_part parts[3] = {{q->json.data, split},
                                            {res->value->data, res->value->len},
                                            {q->json.data + split, q->json.len - split}};
            tc_api_respond_parts(q->w, q->r, 200, "application/json", parts, 3, headers);
            return;
        }
    } else if (q->json_of != res->value) {
        /* Not rendered by accept_value(): binary, an origin's answer, a
         * conditional GET, or a render that ran out of memory there. */
        q->json.len = 0;
        st = tc_api_cache_render(res->key, res->key_len, res->value, res->hdr, res->now_ms,
                                 &q->json);
    }
    q->json_of = NULL;
    if (st == TC_OK) {
        /* tc_http_respond copies the body into the connection's output, so
         * the buffer stays with q for the next request. */
        tc_api_respond(q->w, q->r, 200, "application/json", q->json.data, q->json.len, headers);
    } else {
        tc_log(TC_LOG_WARN, "cannot render a value: %s", tc_strerror(st));
        tc_api_status(q->w, q->r, st == TC_ECORRUPT ? TC_EIO : st);
    }
}

/* A bounded string builder for header lines (the hit path avoids snprintf). */
struct hdrs {
    char *p;
    size_t n, cap;
};

static void hdrs_add(struct hdrs *h, const char *s, size_t len)
{
    if (h->n + len < h->cap) {
        memcpy(h->p + h->n, s, len);
        h->n += len;
        h->p[h->n] = '\0';
    }
}

#define HDRS_LIT(h, lit) hdrs_add(h, lit, sizeof(lit) - 1)

static void hdrs_u64(struct hdrs *h, uint64_t v)
{
    char tmp[20];
    hdrs_add(h, tmp, tc_text_u64(tmp, v));
}

/* The HTTP-date of second s, formatted at most once per second in *cache. */
static const char *cached_date(uint64_t *cache_s, char *cache, uint64_t ms)
{
    uint64_t s = ms / 1000;
    if (*cache_s != s || cache[0] == '\0') {
        tc_cond_http_date(ms, cache);
        *cache_s = s;
    }
    return cache;
}

/* The validators and freshness of a served value (RFC 9110 §8.8, RFC 9111
 * §5; Date is in every response, src/http.c): ETag, Last-Modified (when it
 * was written), Cache-Control: max-age = its lifetime from then to its TTL,
 * and Age = its time since then, so that max-age - Age is the TTL left, as
 * every HTTP cache counts it (a max-age of the TTL left, with an Age, would
 * expire it Age seconds early). */
static void value_headers(struct cache_req *q, struct hdrs *h, const struct tc_item_hdr *hdr,
                          uint64_t etag, uint64_t now_ms)
{
    struct tc_api_cache_pool *pool = q->w->cache_pool;
    char tag[TC_COND_ETAG_LEN + 1];
    HDRS_LIT(h, "ETag: ");
    hdrs_add(h, tag, tc_cond_etag_format(etag, tag));
    /* Never later than the answer's Date (RFC 9110 8.8.2.1): a value written
     * on a clock ahead of this worker's (another process or host) gets the
     * Date's time instead. */
    uint64_t date_ms = tc_http_date_ms(q->r);
    uint64_t lm = hdr->created_ms < date_ms ? hdr->created_ms : date_ms;
    HDRS_LIT(h, "\r\nLast-Modified: ");
    hdrs_add(h, cached_date(&pool->lm_s, pool->lm, lm), TC_COND_DATE_LEN);
    if (q->w->srv->conf->cache_control_public) {
        HDRS_LIT(h, "\r\nCache-Control: public, max-age=");
    } else {
        HDRS_LIT(h, "\r\nCache-Control: private, max-age=");
    }
    uint64_t fresh = tc_item_fresh_until(hdr);
    /* Never expires: a year, the longest RFC 9111 §5.2.2.1 asks caches to keep. */
    hdrs_u64(h, fresh == 0 ? 31536000u
                           : (fresh > hdr->created_ms ? (fresh - hdr->created_ms) / 1000 : 0));
    HDRS_LIT(h, "\r\nAge: ");
    hdrs_u64(h, now_ms > hdr->created_ms ? (now_ms - hdr->created_ms) / 1000 : 0);
    HDRS_LIT(h, "\r\n");
}

/*
 * The preconditions of a GET or HEAD (RFC 9110 §13.2.2), in their order:
 * If-Match (412), then If-None-Match, or without it If-Modified-Since
 * (304). Returns the status to answer, or 200.
 */
static int read_preconditions(const struct tc_http_req *r, const struct tc_item_hdr *hdr,
                              uint64_t etag)
{
    const char *v = tc_http_header(r, "if-match");
    if (v != NULL && !tc_cond_match(v, 1, etag, 0)) {
        return 412;
    }
    if ((v = tc_http_header(r, "if-none-match")) != NULL) {
        return tc_cond_match(v, 1, etag, 1) ? 304 : 200;
    }
    v = tc_http_header(r, "if-modified-since");
    return v != NULL && tc_cond_not_modified_since(v, hdr->created_ms) ? 304 : 200;
}

/* Serves a value with its X-Cache lines @p xcache, its validators, and the
 * answer the request's preconditions ask for. */
static void serve_value(struct cache_req *q, const struct tc_rt_result *res, const char *xcache,
                        size_t xcache_len)
{
    char buf[448];
    struct hdrs h = {buf, 0, sizeof(buf)};
    buf[0] = '\0';
    hdrs_add(&h, xcache, xcache_len);
    if (res->tier >= 0) {
        HDRS_LIT(&h, "X-Cache-Tier: ");
        hdrs_add(&h, tc_api_tier_label(res->tier), 2);
        HDRS_LIT(&h, "\r\n");
    }
    /* The shm tier keeps it with the record: no second pass over the value. */
    uint64_t etag =
        res->etag ? res->etag : tc_item_etag(res->hdr, res->value->data, res->value->len);
    value_headers(q, &h, res->hdr, etag, res->now_ms);
    int status = q->cond ? read_preconditions(q->r, res->hdr, etag) : 200;
    if (status == 304) {
        /* RFC 9110 §15.4.5: the headers a 200 would have had, no body. */
        tc_api_respond(q->w, q->r, 304, q->raw ? "application/octet-stream" : "application/json",
                       NULL, 0, buf);
        return;
    }
    if (status == 412) {
        tc_api_error(q->w, q->r, TC_API_PRECONDITION_FAILED, buf,
                     "If-Match does not match the value's ETag");
        return;
    }
    respond_value(q, res, buf);
}

#define XC(lit) lit, sizeof(lit) - 1

/* The one place a read's result becomes a response. */
static void answer_read(void *arg, const struct tc_rt_result *res)
{
    struct cache_req *q = arg;
    struct tc_worker *w = q->w;
    struct tc_http_req *r = q->r;
    char headers[160];
    /* Each answer with an X-Cache header is counted as that header says. */
    switch (res->outcome) {
    case TC_RT_HIT:
        tc_worker_count_read(w, TC_READ_HIT, res->tier);
        serve_value(q, res, XC("X-Cache: HIT\r\n"));
        break;
    case TC_RT_STALE:
        tc_worker_count_read(w, TC_READ_STALE, res->tier);
        serve_value(q, res, XC("X-Cache: STALE\r\n"));
        break;
    case TC_RT_FILLED:
        tc_worker_count_read(w, TC_READ_MISS, -1);
        if (res->coalesced) {
            serve_value(q, res, XC("X-Cache: MISS\r\nX-Cache-Origin: coalesced\r\n"));
        } else {
            serve_value(q, res, XC("X-Cache: MISS\r\nX-Cache-Origin: fetched\r\n"));
        }
        break;
    case TC_RT_NEGATIVE: {
        tc_worker_count_read(w, TC_READ_HIT, res->tier);
        uint64_t left = res->hdr->expire_ms > res->now_ms ? res->hdr->expire_ms - res->now_ms : 0;
        snprintf(headers, sizeof(headers), "X-Cache: HIT\r\nX-Cache-Tier: %s\r\n",
                 tc_api_tier_label(res->tier));
        tc_api_error(w, r, TC_API_NOT_FOUND, headers,
                     "no value for this key: the origin had none, remembered for %llu s more "
                     "(negative-ttl)",
                     (unsigned long long)((left + 999) / 1000));
        break;
    }
    case TC_RT_MISS:
        tc_worker_count_read(w, TC_READ_MISS, -1);
        tc_api_error(w, r, TC_API_NOT_FOUND, "X-Cache: MISS\r\n", "%s",
                     res->message ? res->message : "no value for this key");
        break;
    case TC_RT_LEASE_GRANTED:
        tc_worker_count_read(w, TC_READ_MISS, -1);
        snprintf(headers, sizeof(headers), "X-Cache: MISS\r\nX-Lease-Token: %s\r\n", res->token);
        tc_api_error(w, r, TC_API_NOT_FOUND, headers,
                     "no value for this key: you hold its lease for %llu ms; PUT the value with "
                     "header X-Lease-Token",
                     (unsigned long long)res->lease_ms);
        break;
    case TC_RT_LEASE_TIMEOUT:
        tc_worker_count_read(w, TC_READ_MISS, -1);
        tc_api_error(w, r, TC_API_LEASE_TIMEOUT, "X-Cache: MISS\r\n",
                     "no value arrived within %llu ms and another client holds the lease "
                     "(for %llu ms more)",
                     (unsigned long long)res->lease_ms, (unsigned long long)res->remaining_ms);
        break;
    case TC_RT_WAIT_TIMEOUT:
        tc_api_error(w, r, TC_API_ORIGIN_TIMEOUT, NULL,
                     "waited %llu ms for another request's origin fetch of this key",
                     (unsigned long long)res->lease_ms);
        break;
    case TC_RT_ORIGIN_FAILED: {
        tc_worker_count_read(w, TC_READ_MISS, -1);
        enum tc_api_error e = res->status == TC_ETIMEOUT  ? TC_API_ORIGIN_TIMEOUT
                              : res->status == TC_EIO     ? TC_API_ORIGIN_ERROR
                              : res->status == TC_ETOOBIG ? TC_API_ORIGIN_TOO_BIG
                                                          : TC_API_ORIGIN_UNREACHABLE;
        tc_api_error(w, r, e, "X-Cache: MISS\r\n", "%s", res->message ? res->message : "");
        break;
    }
    case TC_RT_FAILED:
    default:
        tc_api_status(w, r, res->status == TC_OK ? TC_EUNAVAIL : res->status);
        break;
    }
    req_free(q);
}

/* The one place a write's result becomes a response. */
static void answer_write(void *arg, const struct tc_rt_write_result *res)
{
    struct cache_req *q = arg;
    struct tc_worker *w = q->w;
    struct tc_http_req *r = q->r;
    char headers[96];
    switch (res->outcome) {
    case TC_RT_STORED: {
        struct hdrs h = {headers, 0, sizeof(headers)};
        headers[0] = '\0';
        if (q->is_put) {
            /* The new value's ETag: the If-Match of the next compare-and-set. */
            char tag[TC_COND_ETAG_LEN + 1];
            HDRS_LIT(&h, "ETag: ");
            hdrs_add(&h, tag, tc_cond_etag_format(q->etag, tag));
            HDRS_LIT(&h, "\r\n");
        }
        if (res->lease == TC_RT_LEASE_RELEASED) {
            HDRS_LIT(&h, "X-Lease: released\r\n");
        } else if (res->lease == TC_RT_LEASE_EXPIRED) {
            HDRS_LIT(&h, "X-Lease: expired\r\n");
        }
        tc_api_respond_ok(w, r, h.n ? headers : NULL);
        break;
    }
    case TC_RT_PRECONDITION:
        tc_api_error(w, r, TC_API_PRECONDITION_FAILED, NULL, "%s: nothing %s",
                     tc_http_header(r, "if-match") != NULL
                         ? "If-Match does not match the current value's ETag (or there is none)"
                         : "If-None-Match matches the current value (there is one)",
                     q->is_put ? "stored" : "deleted");
        break;
    case TC_RT_BUSY:
        tc_api_error(w, r, TC_API_WRITE_BUSY, NULL,
                     "other conditional writes of this key held it for %u ms: nothing %s",
                     TC_RT_COND_WAIT_MS, q->is_put ? "stored" : "deleted");
        break;
    case TC_RT_NOT_OWNER:
        tc_api_error(w, r, TC_API_NOT_OWNER, NULL,
                     "X-Lease-Token does not hold the lease of this key (it expired, was "
                     "released, or was never granted): nothing stored");
        break;
    case TC_RT_REFUSED:
    default:
        if (res->status == TC_ETOOBIG) {
            tc_api_error(w, r, TC_API_TOO_LARGE, NULL,
                         "the value (%zu bytes) is larger than any tier accepts", res->value_len);
        } else if (res->failed_mask != 0) {
            char failed[128];
            size_t used = 0;
            failed[0] = '\0';
            for (size_t i = 0; i < TC_STACK_MAX_TIERS && used < sizeof(failed); i++) {
                if (res->failed_mask & (1u << i)) {
                    int n = snprintf(failed + used, sizeof(failed) - used, "%s%s", used ? ", " : "",
                                     tc_api_tier_label((int)i));
                    used += n > 0 ? (size_t)n : 0;
                }
            }
            tc_api_error(w, r, TC_API_UNAVAILABLE, NULL, "%s failed on tiers: %s",
                         q->is_put ? "storing" : "deleting", failed);
        } else {
            tc_api_status(w, r, res->status);
        }
        break;
    }
    req_free(q);
}

/* Parses a TTL in seconds (integer or fraction) into ms within the limits;
 * -1 when it answered (bad TTL). */
static int parse_ttl(struct tc_worker *w, struct tc_http_req *r, json_t *v, const char *text,
                     const char *what, uint64_t *ttl_ms)
{
    double secs;
    if (v != NULL) {
        if (!json_is_number(v)) {
            tc_api_error(w, r, TC_API_BAD_TTL, NULL, "%s must be a number of seconds", what);
            return -1;
        }
        secs = json_number_value(v);
    } else {
        char *end;
        errno = 0;
        secs = strtod(text, &end);
        if (text[0] == '\0' || *end != '\0') {
            tc_api_error(w, r, TC_API_BAD_TTL, NULL, "%s must be a number of seconds, not '%s'",
                         what, text);
            return -1;
        }
        if (errno == ERANGE && secs >= 0 && secs < 1) {
            /* Underflow (1e-400): positive, smaller than a double holds. */
            secs = DBL_MIN;
        }
    }
    if (!isfinite(secs) || secs < 0) {
        tc_api_error(w, r, TC_API_BAD_TTL, NULL, "%s must be 0 (never expires) or positive", what);
        return -1;
    }
    double max = (double)w->srv->conf->max_ttl_ms / 1000.0;
    if (secs > max) {
        tc_api_error(w, r, TC_API_BAD_TTL, NULL, "%s %.17g is above the largest allowed, %.0f s",
                     what, secs, max);
        return -1;
    }
    *ttl_ms = tc_api_secs_to_ms(secs);
    return 0;
}

/* The members a PUT's JSON body may have. */
static const char *const body_fields[] = {"value", "ttl", "timeout", "tags", NULL};
#define PUT_USAGE                                                                                  \
    "{\"value\": ..., \"ttl\": 60} (or the value's bytes as application/octet-stream, or a "       \
    "string as text/plain)"

/* How a PUT's body is read, from its Content-Type (docs/api.md "Request bodies"). */
enum body_kind { BODY_JSON, BODY_BYTES, BODY_TEXT };

/* PUT's own cases: the value's bytes or text. Anything else is a JSON body,
 * whose type tc_api_body_parse() checks as on every route (415 there). */
static enum body_kind body_kind_of(const char *ct)
{
    if (ct == NULL || tc_text_ctype_is(ct, "application/octet-stream")) {
        return BODY_BYTES; /* curl -T FILE sends no Content-Type */
    }
    if (strncasecmp(ct, "text/", 5) == 0) {
        return BODY_TEXT;
    }
    return BODY_JSON;
}

/* Fills op's value, encoding and TTL from a JSON body; -1 when it answered. */
static int read_json_body(struct cache_req *q, struct tc_stack_op *op, uint64_t *ttl_ms,
                          enum tc_status *st)
{
    struct tc_worker *w = q->w;
    struct tc_http_req *r = q->r;
    json_t *doc;
    /* A stored string may hold U+0000: it comes back as it was written. */
    if (tc_api_body_parse(w, r, TC_API_BODY_NUL_OK, PUT_USAGE, &doc) != 0) {
        return -1;
    }
    if (tc_api_body_fields(w, r, doc, body_fields, NULL) != 0) {
        json_decref(doc);
        return -1;
    }
    json_t *value = json_object_get(doc, "value");
    if (value == NULL) {
        json_decref(doc);
        tc_api_error(w, r, TC_API_MISSING_VALUE, NULL, "the JSON body has no \"value\" member");
        return -1;
    }
    json_t *ttl = json_object_get(doc, "ttl");
    json_t *timeout = json_object_get(doc, "timeout");
    if (ttl != NULL && timeout != NULL) {
        json_decref(doc);
        tc_api_error(w, r, TC_API_BAD_TTL, NULL, "give \"ttl\" or its alias \"timeout\", not both");
        return -1;
    }
    json_t *t = ttl ? ttl : timeout;
    if (t != NULL && !json_is_null(t) &&
        parse_ttl(w, r, t, NULL, ttl ? "ttl" : "timeout", ttl_ms) != 0) {
        json_decref(doc);
        return -1;
    }
    if (tc_api_tags_json(w, r, json_object_get(doc, "tags"), &op->tags) != 0) {
        json_decref(doc);
        return -1;
    }
    *st = tc_api_value_from_json(value, op);
    json_decref(doc);
    return *st == TC_OK ? 0 : -1;
}

/* Fills op's value and header from a PUT's body; -1 when it answered (a
 * bad request), or *st when the caller must answer that. */
static int read_put(struct cache_req *q, struct tc_stack_op *op, struct evkeyvalq *qs,
                    enum tc_status *st)
{
    struct tc_worker *w = q->w;
    struct tc_http_req *r = q->r;
    const struct tc_conf *conf = w->srv->conf;
    const char *ct = tc_http_header(r, "content-type");
    uint64_t ttl_ms = conf->default_ttl_ms;
    const char *qttl = tc_api_query(r, "ttl", qs);
    enum body_kind kind = body_kind_of(ct);
    *st = TC_OK;
    if (qttl != NULL && parse_ttl(w, r, NULL, qttl, "ttl", &ttl_ms) != 0) {
        return -1;
    }
    if (kind != BODY_JSON && r->body.len == 0 && ct == NULL) {
        /* Bytes need a label to be an empty value: no body and no type is
         * far more often a forgotten -d than an empty file. */
        tc_api_error(w, r, TC_API_EMPTY_BODY, NULL,
                     "empty body: send {\"value\": ...} as application/json, or an empty value "
                     "with Content-Type: application/octet-stream");
        return -1;
    }
    if (kind == BODY_TEXT && !tc_text_utf8_valid((const char *)r->body.data, r->body.len)) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "a text/* body is stored as a string and must be UTF-8: send bytes as "
                     "application/octet-stream");
        return -1;
    }
    if (kind != BODY_JSON) {
        if (r->body.len > conf->max_value) {
            tc_api_error(w, r, TC_API_TOO_LARGE, NULL,
                         "the value is %zu bytes; the largest accepted is %llu", r->body.len,
                         (unsigned long long)conf->max_value);
            return -1;
        }
        /* The body buffer moves into the op: no copy of large values. */
        tc_buf_deinit(&op->value);
        op->value = r->body;
        tc_buf_init(&r->body);
        op->hdr.encoding = kind == BODY_TEXT ? TC_ENC_STRING : TC_ENC_BINARY;
    } else if (read_json_body(q, op, &ttl_ms, st) != 0) {
        return -1;
    } else if (op->value.len > conf->max_value) {
        tc_api_error(w, r, TC_API_TOO_LARGE, NULL,
                     "the value is %zu bytes; the largest accepted is %llu", op->value.len,
                     (unsigned long long)conf->max_value);
        return -1;
    }
    if (op->hdr.encoding == TC_ENC_STRING &&
        tc_text_json_plain((const char *)op->value.data, op->value.len)) {
        op->hdr.flags |= TC_ITEM_F_PLAIN; /* decided once here, not on every GET */
    }
    tc_rt_set_expiry(w->rt.opt, &op->hdr, op->now_ms, ttl_ms);
    return 0;
}

/* A positive whole number of ms from a header or query value; 0 if bad. */
static uint64_t parse_ms(const char *s, uint64_t max)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9') {
        return 0;
    }
    unsigned long long v = strtoull(s, &end, 10);
    return *end == '\0' && v >= 1 && v <= max ? (uint64_t)v : 0;
}

static enum tc_status cache_get(struct cache_req *q, const char *key, size_t klen,
                                struct evkeyvalq *qs)
{
    struct tc_worker *w = q->w;
    struct tc_http_req *r = q->r;
    const struct tc_conf *conf = w->srv->conf;
    enum tc_rt_mode mode = TC_RT_PLAIN;
    uint64_t lease_ms = conf->lease_ms; /* plain: a stale value's refresher */
    const char *lease = tc_http_header(r, "x-cache-lease");
    q->cond = tc_http_header(r, "if-none-match") != NULL || tc_http_header(r, "if-match") != NULL ||
              tc_http_header(r, "if-modified-since") != NULL;
    if (lease == NULL) {
        lease = tc_api_query(r, "lease", qs);
    }
    if (lease != NULL) {
        mode = TC_RT_LEASE;
        lease_ms = parse_ms(lease, LEASE_MAX_MS);
        if (lease_ms == 0) {
            tc_api_error(w, r, TC_API_BAD_LEASE, NULL,
                         "a lease is a whole number of ms from 1 to %u, not '%s'", LEASE_MAX_MS,
                         lease);
            req_free(q);
            return TC_OK;
        }
    } else if (conf->origin[0] != '\0') {
        mode = TC_RT_ORIGIN;
        lease_ms = conf->origin_timeout_ms + 1000;
    }
    enum tc_status st =
        tc_rt_get(&w->rt, key, klen, mode, lease_ms, r->now_ms, accept_value, answer_read, q);
    if (st != TC_OK) {
        req_free(q);
    }
    return st;
}

/* A conditional write's test (tc_rt_cond_fn): If-Match must match the
 * current value (strong comparison), If-None-Match must not (weak). */
static int write_condition(void *arg, const struct tc_item_hdr *hdr, const struct tc_buf *value)
{
    struct cache_req *q = arg;
    uint64_t etag = hdr != NULL ? tc_item_etag(hdr, value->data, value->len) : 0;
    const char *im = tc_http_header(q->r, "if-match");
    const char *inm = tc_http_header(q->r, "if-none-match");
    if (im != NULL && !tc_cond_match(im, hdr != NULL, etag, 0)) {
        return 0;
    }
    return inm == NULL || !tc_cond_match(inm, hdr != NULL, etag, 1);
}

static enum tc_status cache_write(struct cache_req *q, const char *key, size_t klen,
                                  struct evkeyvalq *qs)
{
    struct tc_worker *w = q->w;
    struct tc_http_req *r = q->r;
    struct tc_stack_op *op = tc_stack_op_create(w->sc, key, klen, r->now_ms);
    if (op == NULL) {
        req_free(q);
        return TC_ENOMEM;
    }
    int conditional =
        tc_http_header(r, "if-match") != NULL || tc_http_header(r, "if-none-match") != NULL;
    const char *token = tc_http_header(r, "x-lease-token");
    int bad_token = 0;
    enum tc_status st = TC_OK;
    if (r->method != TC_HTTP_DELETE && r->method != TC_HTTP_PURGE) {
        q->is_put = 1;
        if (tc_api_tags_header(w, r, &op->tags) != 0 || read_put(q, op, qs, &st) != 0) {
            tc_stack_op_release(op);
            req_free(q);
            return st;
        }
        q->etag = tc_item_etag(&op->hdr, op->value.data, op->value.len);
    }
    if (!q->is_put) {
        token = NULL; /* a DELETE takes no lease token */
    } else if (token != NULL && (token[0] == '\0' || strlen(token) >= TC_LOCK_TOKEN_MAX)) {
        bad_token = 1;
        tc_api_error(w, r, TC_API_BAD_TOKEN, NULL,
                     "X-Lease-Token must be the 1 to %u characters a lease GET returned",
                     TC_LOCK_TOKEN_MAX - 1);
    } else if (token != NULL && conditional) {
        /* The lease already makes its holder the one writer of the key. */
        bad_token = 1;
        tc_api_error(w, r, TC_API_BAD_TOKEN, NULL,
                     "X-Lease-Token cannot be combined with If-Match or If-None-Match");
    }
    if (bad_token) {
        tc_stack_op_release(op);
        req_free(q);
        return TC_OK;
    }
    if (conditional) {
        st = tc_rt_write_if(&w->rt, op, q->is_put, write_condition, answer_write, q);
    } else if (q->is_put) {
        st = tc_rt_set(&w->rt, op, token, answer_write, q);
    } else {
        st = tc_rt_del(&w->rt, op, answer_write, q);
    }
    if (st != TC_OK) {
        req_free(q);
    }
    return st;
}

/* Refuses a query parameter a PUT does not take: a misspelt ?ttl= would
 * otherwise store the value with the default TTL, in silence. Reads and
 * deletes stay lenient: what they ignore changes nothing stored (and cache
 * busters like ?_=123 are common there). -1 when it answered. */
static int check_query(struct tc_worker *w, struct tc_http_req *r, struct evkeyvalq *qs)
{
    if (r->method != TC_HTTP_PUT || r->query == NULL || r->query[0] == '\0') {
        return 0;
    }
    if (TAILQ_EMPTY(qs) && evhttp_parse_query_str(r->query, qs) != 0) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "malformed query string: use NAME=VALUE pairs joined by '&'");
        return -1;
    }
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, qs, next)
    {
        if (strcmp(kv->key, "ttl") != 0) {
            tc_api_error(w, r, TC_API_UNKNOWN_FIELD, NULL,
                         "unknown query parameter \"%.64s\" (PUT /cache/{key} takes ?ttl=)",
                         kv->key);
            return -1;
        }
    }
    return 0;
}

enum tc_status tc_api_cache(struct tc_worker *w, struct tc_http_req *r)
{
    if (r->method == TC_HTTP_PATCH) {
        return tc_api_lease_renew(w, r); /* issue 16: src/api_locks.c */
    }
    char *decoded;
    const char *key;
    size_t klen;
    enum tc_status st;
    if (tc_api_decode_name(w, r, r->path + CACHE_PREFIX_LEN, "key", "/cache/{key}", &decoded, &key,
                           &klen, &st) != 0) {
        return st;
    }
    struct cache_req *q = req_create(w, r);
    if (q == NULL) {
        free(decoded);
        return TC_ENOMEM;
    }
    struct evkeyvalq qs;
    TAILQ_INIT(&qs);
    if (check_query(w, r, &qs) != 0) {
        st = TC_OK;
        req_free(q);
    } else if (r->method == TC_HTTP_GET || r->method == TC_HTTP_HEAD) {
        st = cache_get(q, key, klen, &qs);
    } else {
        st = cache_write(q, key, klen, &qs);
    }
    evhttp_clear_headers(&qs);
    free(decoded);
    return st;
}

/* ---- shared with the bulk routes (src/api_batch.c): one writer per item ---------------- */

enum tc_status tc_api_value_from_json(json_t *value, struct tc_stack_op *op)
{
    if (json_is_string(value)) {
        op->hdr.encoding = TC_ENC_STRING;
        enum tc_status st =
            tc_buf_set(&op->value, json_string_value(value), json_string_length(value));
        if (st == TC_OK && tc_text_json_plain((const char *)op->value.data, op->value.len)) {
            op->hdr.flags |= TC_ITEM_F_PLAIN; /* decided once here, not on every GET */
        }
        return st;
    }
    op->hdr.encoding = TC_ENC_JSON;
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    enum tc_status st = text ? tc_buf_set(&op->value, text, strlen(text)) : TC_ENOMEM;
    free(text);
    return st;
}

int tc_api_parse_ttl(struct tc_worker *w, struct tc_http_req *r, json_t *v, const char *what,
                     uint64_t *ttl_ms)
{
    if (v == NULL) {
        return 0; /* none given: *ttl_ms stays */
    }
    return parse_ttl(w, r, v, "", what, ttl_ms);
}
