/*
 * POST /purge: remove many keys at once from every tier (issue 15).
 *
 *   {"prefix":"P"}   the keys starting with P
 *   {"all":true}     every key
 *   200 {"purged":{"prefix":P}|{"all":true},
 *        "tiers":[{"tier":"l1","removed":N}, ...]}
 *   503 the same with "error" and the tiers that failed ({"tier","error"})
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

struct purge {
    struct tc_worker *w;
    struct tc_http_req *r;
    json_t *doc; /* holds the prefix */
    json_t *what;
    size_t next; /* tiers left to clear: next - 1 is the one in flight */
    struct tc_tier_req req;
    enum tc_status st[TC_STACK_MAX_TIERS];
    uint64_t removed[TC_STACK_MAX_TIERS];
};

static void purge_answer(struct purge *p)
{
    size_t n = tc_stack_ntiers(p->w->srv->stack);
    json_t *j = json_object();
    json_t *tiers = json_array();
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_object();
        json_object_set_new(t, "tier", json_string(tc_api_tier_label((int)i)));
        if (p->st[i] == TC_OK) {
            json_object_set_new(t, "removed", json_integer((json_int_t)p->removed[i]));
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
    json_object_set_new(j, "tiers", tiers);
    tc_api_respond_json(p->w, p->r, failed ? 503 : 200, j, NULL);
    json_decref(p->what);
    json_decref(p->doc);
    free(p);
}

static void purge_step(struct purge *p);

static void purge_tier_done(struct tc_tier_req *req)
{
    struct purge *p = req->arg;
    p->st[p->next] = req->status;
    p->removed[p->next] = req->count;
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
        p->req.now_ms = tc_clock_ms();
        p->req.count = 0;
        p->req.done = purge_tier_done;
        p->req.arg = p;
        enum tc_status st = tc_tier_clear(tc_stack_ctx_tier(p->w->sc, i), &p->req);
        if (st == TC_EINPROGRESS) {
            return; /* purge_tier_done goes on */
        }
        p->st[i] = st;
        p->removed[i] = p->req.count;
    }
    purge_answer(p);
}

static const char *const purge_fields[] = {"prefix", "tag", "all", "soft", NULL};
#define PURGE_USAGE "{\"prefix\": \"user:\"} or {\"all\": true}"

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
    } else if (tag != NULL) {
        msg = "purge by \"tag\" is not available in this build: purge by \"prefix\"";
    } else if (soft != NULL && !json_is_boolean(soft)) {
        msg = "\"soft\" must be true or false";
    } else if (json_is_true(soft)) {
        msg = "\"soft\": true is not available in this build: purge without it";
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
