/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * POST /purge: remove many keys at once from every tier (issue 15), and
 * the tags writes attach to keys.
 *
 *   {"prefix":"P"}   the keys starting with P
 *   {"all":true}     every key
 *   200 {"purged":{"prefix":P}|{"all":true},
 *        "tiers":[{"tier":"l1","removed":N}, ...]}
 *   {"tag":"T"}      the keys written with tag T (X-Cache-Tags, "tags")
 *   200 {"purged":{"tag":T}, "keys":N,
 *        "tiers":[{"tier":"l2","tagged":N2}, {"tier":"l3","tagged":N3}]}
 *   503 the same with "error" and the tiers that failed ({"tier","error"})
 *
 * Tags are indexed by the tiers that can (lmdb://, redis://: tag -> keys).
 * A tag purge reads each index, slowest tier first, a page at a time, and
 * deletes every key it lists as a DELETE would: from every tier of this
 * server, shm included (which keeps no index: its copies go because every
 * key of the tag is named by an index below it), and through Redis' channel
 * from every other server's faster tiers. Then it drops the tag's index.
 * Its cost is O(keys with the tag), not O(keys).
 *
 * The tiers are cleared one after the other, slowest first: a read racing
 * the purge can back-fill a faster tier only from a slower one not yet
 * cleared, and that faster tier is cleared after it. A shared tier with an
 * invalidation channel (Redis) publishes the clear, and every other server
 * on that Redis clears the same prefix from its own faster tiers
 * (src/stack.c), so their copies go too.
 */
#include "src/api.h"
#include "src/clock.h"
#include "src/log.h"

#include <stdlib.h>
#include <string.h>

#define TAG_PAGE 256u /* keys of a tag listed, then deleted, at once */

struct purge {
    struct tc_worker *w;
    struct tc_http_req *r;
    json_t *doc; /* holds the prefix */
    json_t *what;
    size_t next; /* tiers left to clear: next - 1 is the one in flight */
    struct tc_tier_req req;
    enum tc_status st[TC_STACK_MAX_TIERS];
    uint64_t removed[TC_STACK_MAX_TIERS];
    uint64_t t0, ms[TC_STACK_MAX_TIERS]; /* prefix, all: how long each tier's clear took */
    /* A tag purge. */
    char tag[TC_TAG_MAX + 1]; /* NUL-ended: tc_tier_req.tags of the index clear */
    size_t tag_len;
    int indexed[TC_STACK_MAX_TIERS]; /* the tier keeps a tag index */
    int phase;                       /* 0: deleting the keys; 1: dropping the indexes */
    int listing;                     /* phase 0: the tier whose index is read */
    int soft;                        /* mark stale instead of deleting */
    uint64_t grace_ms;               /* soft: how long marked values stay servable */
    struct tc_tier_list_req lr;
    struct tc_buf page, cursor, next_cursor;
    size_t dels; /* deletes of the page in flight, + 1 while they start */
    uint64_t keys;
};

static void purge_free(struct purge *p)
{
    json_decref(p->what);
    json_decref(p->doc);
    tc_buf_deinit(&p->page);
    tc_buf_deinit(&p->cursor);
    tc_buf_deinit(&p->next_cursor);
    free(p);
}

/*
 * Answers a purge: per tier (only the tiers in @p only, when given) its
 * count under @p count_name, or its error; with @p keys_name, the number of
 * keys deleted or marked. 503 when any tier failed: its keys may remain.
 */
static void purge_respond(struct purge *p, const int *only, const char *count_name,
                          const char *keys_name)
{
    size_t n = tc_stack_ntiers(p->w->srv->stack);
    json_t *j = json_object();
    json_t *tiers = json_array();
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (only != NULL && !only[i]) {
            continue;
        }
        json_t *t = json_object();
        json_object_set_new(t, "tier", json_string(tc_api_tier_label((int)i)));
        if (p->st[i] == TC_OK) {
            json_object_set_new(t, count_name, json_integer((json_int_t)p->removed[i]));
            if (only == NULL) {
                json_object_set_new(t, "ms", json_integer((json_int_t)p->ms[i]));
            }
        } else {
            failed = 1;
            json_object_set_new(t, "error", json_string(tc_strerror(p->st[i])));
        }
        json_array_append_new(tiers, t);
    }
    if (failed) {
        json_object_set_new(j, "error", json_string("unavailable"));
        json_object_set_new(j, "message",
                            json_string("the purge failed on some tiers: their keys may remain"));
    }
    json_object_set(j, "purged", p->what);
    if (keys_name != NULL) {
        json_object_set_new(j, keys_name, json_integer((json_int_t)p->keys));
    }
    json_object_set_new(j, "tiers", tiers);
    tc_api_respond_json(p->w, p->r, failed ? 503 : 200, j, NULL);
    purge_free(p);
}

static void purge_step(struct purge *p);

static void purge_tier_done(struct tc_tier_req *req)
{
    struct purge *p = req->arg;
    p->st[p->next] = req->status;
    p->removed[p->next] = req->count;
    p->ms[p->next] = tc_clock_ms() - p->t0;
    purge_step(p);
}

/* Clears the next tier up; answers after the fastest. */
static void purge_step(struct purge *p)
{
    struct tc_stack *s = p->w->srv->stack;
    while (p->next > 0) {
        size_t i = --p->next;
        if (tc_stack_tier_down(s, i)) {
            p->st[i] = TC_EUNAVAIL;
            continue;
        }
        p->req.now_ms = p->t0 = tc_clock_ms();
        p->req.count = 0;
        p->req.done = purge_tier_done;
        p->req.arg = p;
        enum tc_status st = tc_tier_clear(tc_stack_ctx_tier(p->w->sc, i), &p->req);
        if (st == TC_EINPROGRESS) {
            return; /* purge_tier_done goes on */
        }
        p->st[i] = st;
        p->removed[i] = p->req.count;
        p->ms[i] = tc_clock_ms() - p->t0;
    }
    purge_respond(p, NULL, "removed", NULL);
}

/* ---- by tag -------------------------------------------------------------------------- */

static void tag_step(struct purge *p);

static void tag_del_done(void *arg, const struct tc_rt_write_result *res)
{
    struct purge *p = arg;
    if (res->outcome != TC_RT_STORED && p->st[p->listing] == TC_OK) {
        p->st[p->listing] = res->status != TC_OK ? res->status : TC_EUNAVAIL;
    }
    if (--p->dels == 0) {
        tag_step(p);
    }
}

/*
 * Soft purge of one key: read it through the stack, and write it back with
 * its authoritative expiry moved to now + grace (never later than it was)
 * and all of that as grace, so that it is stale from now on: served
 * X-Cache: STALE within grace while the first reader refreshes it
 * (src/readthrough.h). The write goes to every tier and, through Redis'
 * channel, makes other servers drop their fresh copies.
 */
static void soft_got(struct tc_stack_op *op)
{
    struct purge *p = op->arg;
    uint64_t now = op->now_ms;
    struct tc_stack_op *set = NULL;
    if (op->status == TC_OK) {
        uint64_t fresh = tc_item_fresh_until(&op->hdr);
        if (fresh == 0 || fresh > now) {
            set = tc_stack_op_create(p->w->sc, op->key, op->key_len, now);
        }
    }
    if (set != NULL) {
        uint64_t e = now + p->grace_ms;
        if (op->hdr.expire_ms != 0 && op->hdr.expire_ms < e) {
            e = op->hdr.expire_ms;
        }
        set->hdr = op->hdr;
        set->hdr.expire_ms = e;
        set->hdr.flags |= TC_ITEM_F_GRACE;
        set->hdr.grace_s = (uint16_t)((e - now + 999) / 1000);
        /* The value's buffer moves: no copy. */
        tc_buf_deinit(&set->value);
        set->value = op->value;
        tc_buf_init(&op->value);
        p->keys++;
    }
    tc_stack_op_release(op);
    if (set != NULL && tc_rt_set(&p->w->rt, set, NULL, tag_del_done, p) == TC_OK) {
        return; /* tag_del_done counts it */
    }
    struct tc_rt_write_result none = {.outcome = TC_RT_STORED};
    tag_del_done(p, &none);
}

/* A page of keys came: delete (or mark) each, then go on. */
static void tag_page_done(struct tc_tier_list_req *lr)
{
    struct purge *p = lr->arg;
    int i = p->listing;
    if (lr->status != TC_OK) {
        p->st[i] = lr->status;
        tag_step(p);
        return;
    }
    p->removed[i] += lr->count;
    /* The next page resumes after this one (empty: the index is read through). */
    if (tc_buf_set(&p->cursor, p->next_cursor.data, p->next_cursor.len) != TC_OK) {
        p->st[i] = TC_ENOMEM;
    }
    p->dels = 1;
    const uint8_t *at = p->page.data, *end = p->page.data + p->page.len;
    uint64_t now = tc_clock_ms();
    while ((size_t)(end - at) >= sizeof(uint32_t) + sizeof(uint64_t)) {
        uint32_t kl;
        memcpy(&kl, at, sizeof(kl));
        if ((size_t)(end - at) < sizeof(kl) + kl + sizeof(uint64_t)) {
            break;
        }
        struct tc_stack_op *op = tc_stack_op_create(p->w->sc, at + sizeof(kl), kl, now);
        at += sizeof(kl) + kl + sizeof(uint64_t);
        p->dels++;
        if (op == NULL) {
            p->st[i] = TC_ENOMEM;
            p->dels--;
        } else if (p->soft) {
            tc_stack_get(op, soft_got, p);
        } else {
            p->keys++;
            if (tc_rt_del(&p->w->rt, op, tag_del_done, p) != TC_OK) {
                p->st[i] = TC_ENOMEM;
                p->dels--;
            }
        }
    }
    if (--p->dels == 0) {
        tag_step(p);
    }
}

static void tag_clear_done(struct tc_tier_req *req)
{
    struct purge *p = req->arg;
    p->st[p->next] = req->status;
    tag_step(p);
}

/* Lists a page of the tag's keys from tier p->listing, after p->cursor. */
static void tag_list(struct purge *p)
{
    memset(&p->lr, 0, sizeof(p->lr));
    p->page.len = 0;
    p->lr.tag = p->tag;
    p->lr.tag_len = p->tag_len;
    p->lr.prefix = p->req.key; /* a soft purge by prefix (or of all: empty) */
    p->lr.prefix_len = p->req.key_len;
    p->lr.cursor = p->cursor.data;
    p->lr.cursor_len = p->cursor.len;
    p->lr.limit = TAG_PAGE;
    p->lr.now_ms = tc_clock_ms();
    p->lr.out = &p->page;
    p->lr.next = &p->next_cursor;
    p->lr.done = tag_page_done;
    p->lr.arg = p;
    if (tc_tier_list(tc_stack_ctx_tier(p->w->sc, (size_t)p->listing), &p->lr) != TC_EINPROGRESS) {
        tag_page_done(&p->lr);
    }
}

/*
 * Phase 0: for each indexing tier, slowest first, list a page of the tag's
 * keys and delete them, until its index is read through. Phase 1: drop the
 * tag's index in each of them (unless deleting failed there: the index
 * still names keys that may remain). Then answer.
 */
static void tag_step(struct purge *p)
{
    struct tc_stack *s = p->w->srv->stack;
    if (p->phase == 0) {
        if (p->listing >= 0 && p->cursor.len > 0 && p->st[p->listing] == TC_OK) {
            tag_list(p);
            return;
        }
        while (p->next > 0) {
            size_t i = --p->next;
            if (!p->indexed[i]) {
                continue;
            }
            if (tc_stack_tier_down(s, i)) {
                p->st[i] = TC_EUNAVAIL;
                continue;
            }
            p->listing = (int)i;
            p->cursor.len = 0;
            tag_list(p);
            return;
        }
        p->phase = 1;
        /* A soft purge keeps the tags: the keys are still there. */
        p->next = p->soft ? 0 : tc_stack_ntiers(s);
    }
    while (p->next > 0) {
        size_t i = --p->next;
        if (!p->indexed[i] || p->st[i] != TC_OK) {
            continue;
        }
        memset(&p->req, 0, sizeof(p->req));
        p->req.tags = p->tag;
        p->req.tags_len = p->tag_len + 1;
        p->req.now_ms = tc_clock_ms();
        p->req.done = tag_clear_done;
        p->req.arg = p;
        enum tc_status st = tc_tier_clear(tc_stack_ctx_tier(p->w->sc, i), &p->req);
        if (st == TC_EINPROGRESS) {
            return;
        }
        p->st[i] = st;
    }
    purge_respond(p, p->indexed, p->tag_len ? "tagged" : "listed", p->soft ? "marked" : "keys");
}

/* Whether @p t (@p n bytes) is a tag: 1..TC_TAG_MAX of [A-Za-z0-9_.:/@+-]. */
static int tag_ok(const char *t, size_t n)
{
    if (n == 0 || n > TC_TAG_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("_.:/@+-", c) != NULL) ||
            c == '\0') {
            return 0;
        }
    }
    return 1;
}

#define TAG_RULE "a tag is 1 to 64 characters of A-Z a-z 0-9 _ . : / @ + -"

/* Appends tag @p t to @p out as tc_tier_req.tags; -1 once it answered 400. */
static int add_tag(struct tc_worker *w, struct tc_http_req *r, const char *t, size_t n,
                   struct tc_buf *out)
{
    if (!tag_ok(t, n)) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "bad tag '%.*s': " TAG_RULE,
                     (int)(n > TC_TAG_MAX ? TC_TAG_MAX : n), t);
        return -1;
    }
    size_t count = 0;
    for (size_t i = 0; i < out->len; i++) {
        count += out->data[i] == '\0';
    }
    if (count >= TC_TAGS_MAX) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "at most %u tags per key", TC_TAGS_MAX);
        return -1;
    }
    if (tc_buf_append(out, t, n) != TC_OK || tc_buf_append(out, "", 1) != TC_OK) {
        tc_api_status(w, r, TC_ENOMEM);
        return -1;
    }
    return 0;
}

int tc_api_tags_json(struct tc_worker *w, struct tc_http_req *r, json_t *v, struct tc_buf *out)
{
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_array(v)) {
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL,
                     "\"tags\" must be an array of strings, like [\"user:42\", \"page\"]");
        return -1;
    }
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_string(t)) {
            tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "tags[%zu] must be a string", i);
            return -1;
        }
        if (add_tag(w, r, json_string_value(t), json_string_length(t), out) != 0) {
            return -1;
        }
    }
    return 0;
}

int tc_api_tags_header(struct tc_worker *w, struct tc_http_req *r, struct tc_buf *out)
{
    const char *h = tc_http_header(r, "x-cache-tags");
    while (h != NULL && *h != '\0') {
        while (*h == ' ' || *h == '\t' || *h == ',') {
            h++;
        }
        size_t n = strcspn(h, ", \t");
        if (n > 0 && add_tag(w, r, h, n, out) != 0) {
            return -1;
        }
        h += n;
    }
    return 0;
}

static const char *const purge_fields[] = {"prefix", "tag", "all", "soft", NULL};
#define PURGE_USAGE "{\"prefix\": \"user:\"}, {\"tag\": \"T\"} or {\"all\": true}"

enum tc_status tc_api_purge(struct tc_worker *w, struct tc_http_req *r)
{
    json_t *doc = tc_api_body_object(w, r, purge_fields, PURGE_USAGE);
    if (doc == NULL) {
        return TC_OK;
    }
    json_t *prefix = json_object_get(doc, "prefix");
    json_t *all = json_object_get(doc, "all");
    json_t *tag = json_object_get(doc, "tag");
    json_t *soft = json_object_get(doc, "soft");
    const char *msg = NULL;
    if ((prefix != NULL) + (all != NULL) + (tag != NULL) != 1) {
        msg = "give exactly one of \"prefix\", \"tag\" or \"all\": " PURGE_USAGE;
    } else if (prefix != NULL && (!json_is_string(prefix) || json_string_length(prefix) == 0 ||
                                  json_string_length(prefix) > TC_KEY_MAX)) {
        msg = "\"prefix\" must be a string of 1 to 1024 bytes (use {\"all\": true} for every key)";
    } else if (all != NULL && !json_is_true(all)) {
        msg = "\"all\" must be true";
    } else if (tag != NULL &&
               (!json_is_string(tag) || !tag_ok(json_string_value(tag), json_string_length(tag)))) {
        msg = "\"tag\" must be a string: " TAG_RULE;
    } else if (soft != NULL && !json_is_boolean(soft)) {
        msg = "\"soft\" must be true or false";
    } else if (json_is_true(soft) && w->srv->conf->grace_ms == 0) {
        msg = "\"soft\": true keeps values servable stale for the grace period, and grace is 0: "
              "start the server with --grace";
    }
    if (msg != NULL) {
        json_decref(doc);
        tc_api_error(w, r, TC_API_BAD_REQUEST, NULL, "%s", msg);
        return TC_OK;
    }
    struct purge *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        json_decref(doc);
        return TC_ENOMEM;
    }
    p->w = w;
    p->r = r;
    p->doc = doc;
    p->listing = -1;
    p->soft = json_is_true(soft);
    p->grace_ms = w->srv->conf->grace_ms;
    if (p->soft && tag == NULL) {
        /* Marking needs each key: listed by the widest tier that can list. */
        struct tc_stack *s = w->srv->stack;
        int lister = 0;
        for (size_t i = tc_stack_ntiers(s); i-- > 0 && !lister;) {
            lister = p->indexed[i] = (tc_tier_caps(tc_stack_tier(s, i)) & TC_TIER_CAP_LIST) != 0;
        }
        if (!lister) {
            purge_free(p);
            tc_api_error(w, r, TC_API_UNAVAILABLE, NULL,
                         "a soft purge by prefix needs a tier that can list keys (lmdb://, "
                         "redis://)");
            return TC_OK;
        }
        if (prefix != NULL) {
            p->req.key = json_string_value(prefix);
            p->req.key_len = json_string_length(prefix);
        }
        p->what = prefix ? json_pack("{sOsb}", "prefix", prefix, "soft", 1)
                         : json_pack("{sbsb}", "all", 1, "soft", 1);
        p->next = tc_stack_ntiers(s);
        tc_log(TC_LOG_INFO, "soft purge requested");
        tag_step(p);
        return TC_OK;
    }
    if (tag != NULL) {
        p->what =
            p->soft ? json_pack("{sOsb}", "tag", tag, "soft", 1) : json_pack("{sO}", "tag", tag);
        p->tag_len = json_string_length(tag);
        memcpy(p->tag, json_string_value(tag), p->tag_len);
        p->tag[p->tag_len] = '\0';
        struct tc_stack *s = w->srv->stack;
        for (size_t i = 0; i < tc_stack_ntiers(s); i++) {
            p->indexed[i] = (tc_tier_caps(tc_stack_tier(s, i)) & TC_TIER_CAP_TAGS) != 0;
        }
        p->next = tc_stack_ntiers(s);
        tc_log(TC_LOG_INFO, "purge of a tag requested");
        tag_step(p);
        return TC_OK;
    }
    if (prefix != NULL) {
        p->what = json_pack("{sO}", "prefix", prefix);
        p->req.key = json_string_value(prefix);
        p->req.key_len = json_string_length(prefix);
    } else {
        p->what = json_pack("{sb}", "all", 1);
    }
    p->next = tc_stack_ntiers(w->srv->stack);
    /* The prefix is a client's bytes: not written to the log. */
    tc_log(TC_LOG_INFO, "purge of %s requested", prefix ? "a prefix" : "all keys");
    purge_step(p);
    return TC_OK;
}
