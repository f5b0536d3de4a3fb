/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * /health, /stats and /metrics: what the server and each tier are doing.
 */
#include "src/api.h"
#include "src/metrics.h"

/* ---- /health ------------------------------------------------------------------------------ */

enum tc_status tc_api_health(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_stack *s = w->srv->stack;
    json_t *j = json_object();
    json_t *tiers = json_array();
    json_t *failing = json_array();
    size_t down = 0, bad = 0, n = tc_stack_ntiers(s);
    for (size_t i = 0; i < n; i++) {
        char why[256];
        struct tc_tier *t = tc_stack_tier(s, i);
        enum tc_tier_health h = tc_tier_health(t, why, sizeof(why));
        json_t *o = json_object();
        json_object_set_new(o, "tier", json_string(tc_api_tier_label((int)i)));
        json_object_set_new(o, "uri", json_string(tc_tier_uri(t)));
        json_object_set_new(o, "status", json_string(tc_tier_health_name(h)));
        if (why[0]) {
            json_object_set_new(o, "detail", json_string(why));
        }
        json_array_append_new(tiers, o);
        if (h != TC_HEALTH_OK) {
            bad++;
            down += h == TC_HEALTH_DOWN;
            json_array_append_new(failing, json_string(tc_api_tier_label((int)i)));
        }
    }
    int status = 200;
    const char *word = "ok";
    if (n == 0 || down == n) {
        status = 503;
        word = "down";
    } else if (bad > 0) {
        word = "degraded";
    }
    json_object_set_new(j, "status", json_string(word));
    if (bad > 0) {
        json_object_set_new(j, "failing", failing);
    } else {
        json_decref(failing);
    }
    json_object_set_new(j, "tiers", tiers);
    tc_api_respond_json(w, r, status, j, NULL);
    return TC_OK;
}

/* ---- /stats and /metrics: two renderers of the registry's rows (src/metrics.h) ------------ */

enum tc_status tc_api_stats(struct tc_worker *w, struct tc_http_req *r)
{
    json_t *j = tc_metrics_json(w->srv);
    if (j == NULL) {
        return TC_ENOMEM;
    }
    tc_api_respond_json(w, r, 200, j, NULL);
    return TC_OK;
}

enum tc_status tc_api_metrics(struct tc_worker *w, struct tc_http_req *r)
{
    struct tc_buf b = TC_BUF_INIT;
    enum tc_status st = tc_metrics_prom(w->srv, &b);
    if (st != TC_OK) {
        tc_buf_deinit(&b);
        return st;
    }
    tc_api_respond(w, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    tc_buf_deinit(&b);
    return TC_OK;
}
