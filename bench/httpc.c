/* SPDX-License-Identifier: BSD-2-Clause */
#include "bench/httpc.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_CONNS     1024
#define READ_TIMEOUT  10 /* seconds: an answer later than this fails the connection */
#define MAX_RECONNECT 5  /* connection failures in a row before the worker gives up */

enum step { ST_GET, ST_SET, ST_DEL };

struct hworker;
struct hconn;

/* One request in flight (or a slot waiting for its next one). */
struct hslot {
    struct hworker *w;
    struct hconn *c;
    struct tb_req r;
    enum step step;
    int counted;
    uint64_t t0;
    struct hslot *next; /* the connection's FIFO, or the free list */
};

struct hconn {
    struct hworker *w;
    struct bufferevent *bev;
    http_parser parser;
    struct hslot *head, *tail; /* answers come in this order */
    int inflight;
    int in_tier; /* parsing the X-Cache-Tier header */
    int tier;    /* from it: 0-based, -1 none */
    int failures;
};

struct hworker {
    struct tb_wctx *wc;
    struct tb_result *res;
    struct event_base *base;
    struct hconn *conns;
    int nconns, pipeline;
    char host[256], base_path[512], hosthdr[300];
    int port;
    const char *value;
    uint64_t nops;
    int counting, stopping, dead, outstanding, open;
    uint64_t interval_ns, next_due;
    struct hslot *free_slots;
    char token[560];
};

static void conn_send(struct hconn *c, struct hslot *s);
static void send_due(struct hworker *w);
static int conn_open(struct hconn *c);

static void note(struct hworker *w, const char *fmt, const char *a, int b)
{
    w->res->errors++;
    if (w->res->error[0] == '\0') {
        snprintf(w->res->error, sizeof(w->res->error), fmt, a, b);
    }
}

static void refresh(struct hworker *w)
{
    struct tb_result *res = w->res;
    if ((++w->nops & 63) == 0 || w->open) {
        atomic_store_explicit(&w->wc->sh->prog_ops[w->wc->id], res->gets + res->sets + res->dels,
                              memory_order_relaxed);
        atomic_store_explicit(&w->wc->sh->prog_hits[w->wc->id], res->hits, memory_order_relaxed);
        enum tb_phase ph = tb_wctx_phase(w->wc);
        if (ph == TB_PH_TIMED && !w->counting) {
            w->counting = 1;
            res->start_ns = tc_clock_ns();
        }
        if (ph == TB_PH_STOP) {
            w->stopping = 1;
        }
    }
}

/* Takes the slot's next request; 0 when the worker is done. */
static int next_req(struct hslot *s, uint64_t t0)
{
    struct hworker *w = s->w;
    refresh(w);
    if (w->stopping || w->dead) {
        return 0;
    }
    if (!tb_wctx_next(w->wc, &s->r)) {
        w->stopping = 1;
        atomic_fetch_add(&w->wc->sh->finished, 1);
        return 0;
    }
    s->counted = w->counting;
    s->step = s->r.op == TB_GET ? ST_GET : s->r.op == TB_SET ? ST_SET : ST_DEL;
    s->t0 = t0 ? t0 : tc_clock_ns();
    return 1;
}

/* The request's answer is known: count it (a get: by the tier that answered). */
static void answer(struct hslot *s, int hit_tier)
{
    struct tb_result *res = s->w->res;
    if (!s->counted) {
        return;
    }
    struct tb_lat *h;
    if (s->r.op == TB_GET) {
        res->gets++;
        if (hit_tier >= 0) {
            res->hits++;
            res->tier_hits[hit_tier]++;
        }
        h = &res->lat_get[hit_tier >= 0 ? hit_tier : TB_MAX_TIERS];
    } else if (s->r.op == TB_SET) {
        res->sets++;
        res->bytes_written += s->r.vsize;
        h = &res->lat_set;
    } else {
        res->dels++;
        h = &res->lat_del;
    }
    tb_lat_add(h, tc_clock_ns() - s->t0);
}

/* The slot is free for a new request: the next one now (closed loop), or
 * back to the free list to wait for its intended time (open loop). */
static void slot_done(struct hslot *s)
{
    struct hworker *w = s->w;
    if (w->open) {
        s->next = w->free_slots;
        w->free_slots = s;
        w->outstanding--;
        send_due(w); /* a request may be waiting for this slot already */
        return;
    }
    if (!next_req(s, 0)) {
        w->outstanding--;
        if (w->outstanding == 0) {
            event_base_loopbreak(w->base);
        }
        return;
    }
    conn_send(s->c, s);
}

static void on_response(struct hconn *c, struct hslot *s, int status)
{
    struct hworker *w = c->w;
    switch (s->step) {
    case ST_GET:
        if (status == 200) {
            answer(s, c->tier >= 0 && c->tier < TB_MAX_TIERS ? c->tier : 0);
            if (s->counted) {
                /* Body bytes are not tracked; count the value's size. */
                w->res->bytes_read += s->r.vsize;
            }
            break;
        }
        if (status != 404) {
            note(w, "GET %s: HTTP %d", "/cache/...", status);
        }
        answer(s, -1);
        if (w->wc->cell->wl->cache_aside) {
            s->step = ST_SET; /* the application sets what it missed */
            s->counted = 0;   /* part of the get, not a request of its own */
            conn_send(c, s);
            return;
        }
        break;
    case ST_SET:
        if (status == 413) {
            w->res->sets_refused += s->counted;
        } else if (status != 200 && status != 201 && status != 204) {
            note(w, "PUT %s: HTTP %d", "/cache/...", status);
        }
        if (s->r.op == TB_SET) {
            answer(s, -1);
        }
        break;
    case ST_DEL:
        if (status != 200 && status != 204 && status != 404) {
            note(w, "DELETE %s: HTTP %d", "/cache/...", status);
        }
        answer(s, -1);
        break;
    }
    slot_done(s);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct hconn *c = p->data;
    c->in_tier = len == 12 && strncasecmp(at, "X-Cache-Tier", 12) == 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct hconn *c = p->data;
    /* "l1".."l8": the server's tier labels (tc_api_tier_label). */
    if (c->in_tier && len == 2 && (at[0] == 'l' || at[0] == 'L') && at[1] >= '1' && at[1] <= '8') {
        c->tier = at[1] - '1';
    }
    c->in_tier = 0;
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct hconn *c = p->data;
    c->tier = -1;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct hconn *c = p->data;
    struct hslot *s = c->head;
    if (s == NULL) {
        return -1; /* an answer nobody asked for */
    }
    c->head = s->next;
    if (c->head == NULL) {
        c->tail = NULL;
    }
    c->inflight--;
    on_response(c, s, (int)p->status_code);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_message_complete = on_message_complete,
};

/* Fails every request in flight on @p c and reconnects; the slots start
 * new requests (a failed request counts as an error, not as a latency). */
static void conn_fail(struct hconn *c, const char *why)
{
    struct hworker *w = c->w;
    struct hslot *s = c->head;
    c->head = c->tail = NULL;
    c->inflight = 0;
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    w->res->errors++;
    if (w->res->error[0] == '\0') {
        snprintf(w->res->error, sizeof(w->res->error), "connection to %s: %s", w->hosthdr, why);
    }
    if (++c->failures > MAX_RECONNECT) {
        w->dead = 1;
    } else if (conn_open(c) != 0) {
        w->dead = 1;
    }
    while (s != NULL) {
        struct hslot *n = s->next;
        if (w->dead) {
            w->outstanding--;
        } else {
            slot_done(s);
        }
        s = n;
    }
    if (w->dead && w->outstanding <= 0) {
        event_base_loopbreak(w->base);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct hconn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = evbuffer_get_length(in);
        if (n == 0) {
            return;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
            return;
        }
        size_t used = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        if (c->bev == NULL) {
            return; /* failed and replaced inside a callback */
        }
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != v.iov_len) {
            conn_fail(c, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
            return;
        }
        c->failures = 0;
        evbuffer_drain(in, used);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct hconn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        return;
    }
    conn_fail(c, what & BEV_EVENT_TIMEOUT ? "timed out"
                 : what & BEV_EVENT_EOF   ? "closed by the server"
                                          : "error");
}

static int conn_open(struct hconn *c)
{
    struct hworker *w = c->w;
    c->bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        return -1;
    }
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    struct timeval tv = {READ_TIMEOUT, 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect_hostname(c->bev, NULL, AF_UNSPEC, w->host, w->port) != 0) {
        bufferevent_free(c->bev);
        c->bev = NULL;
        return -1;
    }
    return 0;
}

static void conn_send(struct hconn *c, struct hslot *s)
{
    struct hworker *w = c->w;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char key[TB_KEY_MAX + 96];
    tb_req_key(&s->r, w->wc->cell->key_prefix, key);
    const char *auth = w->token[0] ? w->token : "";
    switch (s->step) {
    case ST_GET:
        evbuffer_add_printf(out, "GET %s/cache/%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", w->base_path,
                            key, w->hosthdr, auth);
        break;
    case ST_SET: {
        char ttl[32] = "";
        if (s->r.ttl_s > 0) {
            snprintf(ttl, sizeof(ttl), "?ttl=%u", s->r.ttl_s);
        }
        evbuffer_add_printf(out,
                            "PUT %s/cache/%s%s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: "
                            "application/octet-stream\r\nContent-Length: %u\r\n\r\n",
                            w->base_path, key, ttl, w->hosthdr, auth, s->r.vsize);
        evbuffer_add(out, w->value, s->r.vsize);
        break;
    }
    case ST_DEL:
        evbuffer_add_printf(out, "DELETE %s/cache/%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", w->base_path,
                            key, w->hosthdr, auth);
        break;
    }
    s->c = c;
    s->next = NULL;
    if (c->tail) {
        c->tail->next = s;
    } else {
        c->head = s;
    }
    c->tail = s;
    c->inflight++;
}

/* http://HOST[:PORT][/BASE] */
static int parse_url(struct hworker *w, const char *url)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, strlen(url), 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
        u.field_data[UF_HOST].len >= sizeof(w->host)) {
        return -1;
    }
    memcpy(w->host, url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
    w->host[u.field_data[UF_HOST].len] = '\0';
    w->port = (u.field_set & (1 << UF_PORT)) ? u.port : 80;
    if (u.field_set & (1 << UF_PATH)) {
        size_t n = u.field_data[UF_PATH].len;
        if (n >= sizeof(w->base_path)) {
            return -1;
        }
        memcpy(w->base_path, url + u.field_data[UF_PATH].off, n);
        while (n > 0 && w->base_path[n - 1] == '/') {
            n--;
        }
        w->base_path[n] = '\0';
    }
    snprintf(w->hosthdr, sizeof(w->hosthdr), "%s:%d", w->host, w->port);
    return 0;
}

/* Open loop: sends every request due by now on a connection with room. */
static void send_due(struct hworker *w)
{
    uint64_t now = tc_clock_ns();
    int ci = 0;
    while (!w->stopping && !w->dead && w->next_due <= now && w->free_slots != NULL) {
        struct hconn *c = NULL;
        for (int k = 0; k < w->nconns; k++) {
            struct hconn *x = &w->conns[(ci + k) % w->nconns];
            if (x->bev != NULL && x->inflight < w->pipeline) {
                c = x;
                ci = (ci + k + 1) % w->nconns;
                break;
            }
        }
        if (c == NULL) {
            return;
        }
        struct hslot *s = w->free_slots;
        if (!next_req(s, w->next_due)) {
            return;
        }
        if (s->counted && now - w->next_due > 1000000u) {
            w->res->late++;
        }
        w->free_slots = s->next;
        w->next_due += w->interval_ns;
        w->outstanding++;
        conn_send(c, s);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct hworker *w = arg;
    (void)fd;
    (void)what;
    refresh(w);
    send_due(w);
    if ((w->stopping || w->dead) && w->outstanding == 0) {
        event_base_loopbreak(w->base);
    }
}

void tb_http_thread(struct tb_wctx *wc)
{
    const struct tb_stack *st = wc->cell->stack;
    const struct tb_workload *wl = wc->cell->wl;
    struct hworker *w = calloc(1, sizeof(*w));
    struct hslot *slots = NULL;
    struct event *tick = NULL;
    char *value = NULL;
    int ready = 0, nslots = 0;
    size_t vmax = tb_dist_max(&wl->value_size) > 0 ? tb_dist_max(&wl->value_size) : 1;
    for (size_t i = 0; wc->cell->trace != NULL && i < wc->cell->ntrace; i++) {
        vmax = wc->cell->trace[i].vsize > vmax ? wc->cell->trace[i].vsize : vmax;
    }
    if (w == NULL || (value = malloc(vmax)) == NULL) {
        snprintf(wc->res->error, sizeof(wc->res->error), "out of memory");
        goto out;
    }
    memset(value, 'v', vmax);
    w->wc = wc;
    w->res = wc->res;
    w->value = value;
    w->nconns = st->connections < MAX_CONNS ? st->connections : MAX_CONNS;
    w->pipeline = st->pipeline;
    if (st->token[0]) {
        snprintf(w->token, sizeof(w->token), "Authorization: Bearer %.500s\r\n", st->token);
    }
    if (parse_url(w, st->url) != 0) {
        snprintf(wc->res->error, sizeof(wc->res->error), "bad URL '%.900s'", st->url);
        goto out;
    }
    nslots = w->nconns * w->pipeline;
    if (wl->rate <= 0 && wl->inflight < nslots) {
        nslots = wl->inflight > w->nconns ? wl->inflight : w->nconns; /* closed: inflight */
    }
    w->base = event_base_new();
    w->conns = calloc((size_t)w->nconns, sizeof(*w->conns));
    slots = calloc((size_t)nslots, sizeof(*slots));
    if (w->base == NULL || w->conns == NULL || slots == NULL) {
        snprintf(wc->res->error, sizeof(wc->res->error), "out of memory");
        goto out;
    }
    for (int i = 0; i < w->nconns; i++) {
        w->conns[i].w = w;
        if (conn_open(&w->conns[i]) != 0) {
            snprintf(wc->res->error, sizeof(wc->res->error), "cannot connect to %s", w->hosthdr);
            goto out;
        }
    }
    for (int i = 0; i < nslots; i++) {
        slots[i].w = w;
        slots[i].next = w->free_slots;
        w->free_slots = &slots[i];
    }
    /* No HTTP prefill: the server's stack is whatever it is. */
    tb_wctx_ready(wc);
    ready = 1;
    w->counting = tb_wctx_phase(wc) == TB_PH_TIMED;
    if (w->counting) {
        w->res->start_ns = tc_clock_ns();
    }
    struct timeval tv = {0, 1000};
    if (wl->rate > 0) {
        int n = wl->threads * wl->processes;
        w->open = 1;
        w->interval_ns = (uint64_t)(1e9 * (double)n / wl->rate);
        w->interval_ns = w->interval_ns ? w->interval_ns : 1;
        w->next_due = tc_clock_ns();
    } else {
        /* Closed loop: every slot on a connection, round-robin, until stopped. */
        for (int i = 0; i < nslots; i++) {
            struct hslot *s = w->free_slots;
            if (!next_req(s, 0)) {
                break;
            }
            w->free_slots = s->next;
            w->outstanding++;
            conn_send(&w->conns[i % w->nconns], s);
        }
        tv.tv_usec = 20000; /* only to see the stop flag when nothing answers */
    }
    tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    if (tick == NULL || event_add(tick, &tv) != 0) {
        snprintf(wc->res->error, sizeof(wc->res->error), "event_new failed");
        goto out;
    }
    event_base_dispatch(w->base);
    w->res->end_ns = tc_clock_ns();
out:
    if (!ready) {
        atomic_fetch_add(&wc->sh->ready, 1);
    }
    if (tick != NULL) {
        event_free(tick);
    }
    for (int i = 0; w != NULL && w->conns != NULL && i < w->nconns; i++) {
        if (w->conns[i].bev != NULL) {
            bufferevent_free(w->conns[i].bev);
        }
    }
    if (w != NULL) {
        free(w->conns);
        if (w->base != NULL) {
            event_base_free(w->base);
        }
    }
    free(slots);
    free(value);
    free(w);
}
