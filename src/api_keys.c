/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * GET /keys?prefix=P&limit=N&cursor=C: list the keys, a page at a time
 * (issue 15).
 *
 *   200 {"keys":[{"key":K,"ttl":S|null}...], "cursor":C|null, "tier":"l2"}
 *
 * The listing comes from the widest tier that can list (the slowest one
 * with TC_TIER_CAP_LIST that is up: it holds every key the faster ones
 * hold, and more). The cursor names that tier and where its last page
 * ended ("l2.<hex>"); the tier resumes strictly after it, so a key present
 * for the whole listing appears exactly once whatever is written meanwhile
 * (tc_tier_list). cursor null: the listing is complete. A page may hold
 * fewer than N keys (even none) and still have a cursor.
 */
#include "src/api.h"
#include "src/clock.h"

#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define KEYS_DEFAULT_LIMIT 100u

struct keys_page {
    struct tc_worker *w;
    struct tc_http_req *r;
    int tier;
    struct tc_buf prefix, cursor, out, next;
    struct tc_tier_list_req req;
};

static void page_free(struct keys_page *p)
{
    tc_buf_deinit(&p->prefix);
    tc_buf_deinit(&p->cursor);
    tc_buf_deinit(&p->out);
    tc_buf_deinit(&p->next);
    free(p);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "lN.<hex>" -> tier N - 1 and the bytes; -1 if malformed. */
static int cursor_decode(const char *s, struct tc_buf *out)
{
    if (s[0] != 'l' || s[1] < '1' || s[1] > '8' || s[2] != '.') {
        return -1;
    }
    const char *h = s + 3;
    size_t n = strlen(h);
    if (n == 0 || n % 2 != 0 || n / 2 > TC_TIER_CURSOR_MAX ||
        tc_buf_reserve(out, n / 2 + 1) != TC_OK) {
        return -1;
    }
    for (size_t i = 0; i < n / 2; i++) {
        int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
        if (a < 0 || b < 0) {
            return -1;
        }
        out->data[i] = (uint8_t)(a << 4 | b);
    }
    out->len = n / 2;
    return s[1] - '1';
}

static json_t *cursor_encode(int tier, const struct tc_buf *c)
{
    static const char hex[] = "0123456789abcdef";
    char *s = malloc(4 + 2 * c->len);
    if (s == NULL) {
        return NULL;
    }
    snprintf(s, 4, "%s.", tc_api_tier_label(tier));
    for (size_t i = 0; i < c->len; i++) {
        s[3 + 2 * i] = hex[c->data[i] >> 4];
        s[3 + 2 * i + 1] = hex[c->data[i] & 15];
    }
    s[3 + 2 * c->len] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

static void page_done(struct tc_tier_list_req *req)
{
    struct keys_page *p = req->arg;
    if (req->status != TC_OK) {
        if (req->status == TC_EINVAL) {
            tc_api_error(p->w, p->r, TC_API_BAD_REQUEST, NULL,
                         "the cursor is not one this listing gave");
        } else {
            tc_api_status(p->w, p->r, req->status);
        }
        page_free(p);
        return;
    }
    uint64_t now = req->now_ms;
    json_t *keys = json_array();
    const uint8_t *at = p->out.data, *end = p->out.data + p->out.len;
    while (at != NULL && (size_t)(end - at) >= sizeof(uint32_t) + sizeof(uint64_t)) {
        uint32_t kl;
        uint64_t fresh;
        memcpy(&kl, at, sizeof(kl));
        if ((size_t)(end - at) < sizeof(kl) + kl + sizeof(fresh)) {
            break;
        }
        memcpy(&fresh, at + sizeof(kl) + kl, sizeof(fresh));
        /* A key another program stored that is not UTF-8 has no JSON form. */
        json_t *k = json_stringn((const char *)at + sizeof(kl), kl);
        at += sizeof(kl) + kl + sizeof(fresh);
        if (k == NULL) {
            continue;
        }
        json_t *ttl = fresh == 0     ? json_null()
                      : fresh <= now ? json_integer(0)
                                     : json_integer((json_int_t)((fresh - now + 999) / 1000));
        json_array_append_new(keys, json_pack("{soso}", "key", k, "ttl", ttl));
    }
    json_t *cursor = p->next.len > 0 ? cursor_encode(p->tier, &p->next) : json_null();
    json_t *j =
        json_pack("{soso*ss}", "keys", keys, "cursor", cursor, "tier", tc_api_tier_label(p->tier));
    if (j == NULL) {
        tc_api_status(p->w, p->r, TC_ENOMEM);
    } else {
        tc_api_respond_json(p->w, p->r, 200, j, NULL);
    }
    page_free(p);
}

/* The slowest tier that can list and is up, or -1. */
static int widest_lister(struct tc_stack *s)
{
    for (size_t i = tc_stack_ntiers(s); i-- > 0;) {
        if ((tc_tier_caps(tc_stack_tier(s, i)) & TC_TIER_CAP_LIST) && !tc_stack_tier_down(s, i)) {
            return (int)i;
        }
    }
    return -1;
}

static const char *const keys_params[] = {"prefix", "limit", "cursor", NULL};

enum tc_status tc_api_keys(struct tc_worker *w, struct tc_http_req *r)
{
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (r->query != NULL && evhttp_parse_query_str(r->query, &q) != 0) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "malformed query string");
        return TC_OK;
    }
    enum tc_status st = TC_OK;
    struct keys_page *p = NULL;
    const char *bad = NULL;
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &q, next)
    {
        int known = 0;
        for (const char *const *n = keys_params; *n != NULL; n++) {
            known |= strcmp(kv->key, *n) == 0;
        }
        if (!known) {
            bad = kv->key;
            break;
        }
    }
    if (bad != NULL) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "unknown parameter \"%s\" (valid: prefix, limit, cursor)", bad);
        goto out;
    }
    uint64_t max = w->srv->conf->max_batch;
    unsigned long long limit = KEYS_DEFAULT_LIMIT < max ? KEYS_DEFAULT_LIMIT : max;
    const char *ls = evhttp_find_header(&q, "limit");
    if (ls != NULL) {
        char *end;
        limit = ls[0] >= '0' && ls[0] <= '9' ? strtoull(ls, &end, 10) : 0;
        if (limit == 0 || *end != '\0' || limit > max) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                         "limit must be a whole number from 1 to %llu (max-batch), not '%s'",
                         (unsigned long long)max, ls);
            goto out;
        }
    }
    const char *prefix = evhttp_find_header(&q, "prefix");
    if (prefix != NULL && strlen(prefix) > TC_KEY_MAX) {
        tc_api_error(w, r, TC_API_KEY_TOO_LONG, NULL, "the prefix is longer than %u bytes",
                     TC_KEY_MAX);
        goto out;
    }
    int tier = widest_lister(w->srv->stack);
    if (tier < 0) {
        tc_api_error(w, r, TC_API_UNAVAILABLE, NULL,
                     "no tier that can list keys is up (lmdb:// and redis:// can)");
        goto out;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        st = TC_ENOMEM;
        goto out;
    }
    const char *cs = evhttp_find_header(&q, "cursor");
    if (cs != NULL && cs[0] != '\0') {
        int ct = cursor_decode(cs, &p->cursor);
        if (ct < 0) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "the cursor is not one this listing gave");
        } else if (ct != tier) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                         "the cursor is from another tier (%s); the listing now comes from %s: "
                         "start again without a cursor",
                         tc_api_tier_label(ct), tc_api_tier_label(tier));
        }
        if (ct < 0 || ct != tier) {
            page_free(p);
            goto out;
        }
    }
    if (prefix != NULL && tc_buf_set(&p->prefix, prefix, strlen(prefix)) != TC_OK) {
        page_free(p);
        st = TC_ENOMEM;
        goto out;
    }
    p->w = w;
    p->r = r;
    p->tier = tier;
    p->req.prefix = p->prefix.data;
    p->req.prefix_len = p->prefix.len;
    p->req.cursor = p->cursor.data;
    p->req.cursor_len = p->cursor.len;
    p->req.limit = (size_t)limit;
    p->req.now_ms = tc_clock_ms();
    p->req.out = &p->out;
    p->req.next = &p->next;
    p->req.done = page_done;
    p->req.arg = p;
    if (tc_tier_list(tc_stack_ctx_tier(w->sc, (size_t)tier), &p->req) != TC_EINPROGRESS) {
        page_done(&p->req);
    }
out:
    evhttp_clear_headers(&q);
    return st;
}
