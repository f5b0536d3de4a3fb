/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Counter and rate-limit decisions (count.h has the state encoding). Times
 * are ms except GCRA's arrival time, kept in ns so that an emission interval
 * (window / limit) below a millisecond stays exact enough: window >= 1 ms and
 * limit <= 1e9 give an interval of at least 1 ns.
 */
#include "tiers/count.h"

#include <limits.h>

/* GCC and Clang's 128-bit integers: the sliding window compares products of
 * a count (< 2^31) and a window (< 2^35) that do not fit 64 bits. An
 * extension, so marked (STYLE R0). */
__extension__ typedef unsigned __int128 u128;

#define NS_PER_MS 1000000ll

int tc_count_cell_dead(const struct tc_count_cell *c, uint64_t now_ms)
{
    return (c->x == 0 && c->t == 0) || (c->t != 0 && c->t <= now_ms);
}

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

static int counter(struct tc_tier_count_req *req, uint64_t now, struct tc_count_cell *c)
{
    int fresh = tc_count_cell_dead(c, now);
    struct tc_count_cell cur = fresh ? (struct tc_count_cell){0, 0} : *c;
    int store = 0;
    if (req->op == TC_COUNT_ADD) {
        int64_t v;
        if (__builtin_add_overflow(cur.x, req->by, &v)) {
            req->overflow = 1;
        } else {
            req->overflow = 0;
            cur.x = v;
            if (fresh || req->elastic) {
                cur.t = req->ttl_ms ? now + req->ttl_ms : 0;
            }
            store = 1;
        }
    } else if (req->op == TC_COUNT_RESET) {
        store = c->x != 0 || c->t != 0;
        cur = (struct tc_count_cell){0, 0};
    }
    req->value = cur.x;
    req->ttl_ms_left = cur.t ? cur.t - now : 0;
    if (store) {
        *c = cur;
    }
    return store;
}

static int fixed(struct tc_tier_count_req *req, uint64_t now, struct tc_count_cell *c)
{
    int fresh = tc_count_cell_dead(c, now);
    uint64_t count = fresh ? 0 : (uint64_t)c->x;
    uint64_t end = fresh ? 0 : c->t;
    int hit = req->op == TC_LIMIT_HIT && req->cost > 0;
    req->allowed = count + req->cost <= req->limit;
    int store = 0;
    if (hit && req->allowed) {
        count += req->cost;
        store = 1;
        if (end == 0) {
            end = now + req->window_ms; /* the window starts at this hit */
        }
    }
    if (hit && req->elastic && end != 0) {
        end = now + req->window_ms; /* every hit, even a denied one, pushes it out */
        store = 1;
    }
    req->value = (int64_t)count;
    req->remaining = req->limit - (count < req->limit ? count : req->limit);
    req->reset_ms = end ? end - now : 0;
    req->retry_ms = req->allowed ? 0 : (end ? end - now : 1);
    req->start_ms = end ? end - req->window_ms : 0;
    if (store) {
        *c = (struct tc_count_cell){(int64_t)count, end};
    }
    return store;
}

/* a * b, saturated at INT64_MAX (a, b >= 0). */
static int64_t mul_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

static int gcra(struct tc_tier_count_req *req, uint64_t now, struct tc_count_cell *c)
{
    int64_t now_ns = mul_sat((int64_t)now, NS_PER_MS);
    int64_t period = (int64_t)(req->window_ms * (uint64_t)NS_PER_MS / req->limit);
    if (period < 1) {
        period = 1;
    }
    int64_t burst = (int64_t)(req->burst ? req->burst : req->limit);
    int64_t span = mul_sat(burst, period); /* the most TAT may lead now by */
    int64_t tat = tc_count_cell_dead(c, now) || c->x < now_ns ? now_ns : c->x;
    int64_t new_tat = add_sat(tat, mul_sat((int64_t)req->cost, period));
    req->allowed = new_tat - now_ns <= span;
    int store = 0;
    if (req->op == TC_LIMIT_HIT && req->cost > 0 && req->allowed) {
        tat = new_tat;
        *c = (struct tc_count_cell){tat, ceil_div((uint64_t)tat, NS_PER_MS)};
        store = 1;
    }
    uint64_t lead = (uint64_t)(tat - now_ns); /* ns of burst in use */
    uint64_t used = ceil_div(lead, (uint64_t)period);
    req->value = (int64_t)used;
    req->remaining = (uint64_t)burst > used ? (uint64_t)burst - used : 0;
    req->reset_ms = ceil_div(lead, NS_PER_MS);
    req->retry_ms = req->allowed ? 0 : ceil_div((uint64_t)(new_tat - now_ns - span), NS_PER_MS);
    if (!req->allowed && req->retry_ms == 0) {
        req->retry_ms = 1;
    }
    req->start_ms = 0;
    return store;
}

static int sliding(struct tc_tier_count_req *req, uint64_t now, struct tc_count_cell *c)
{
    uint64_t w = req->window_ms;
    uint64_t cur = 0, prev = 0, start = now;
    if (!tc_count_cell_dead(c, now) && c->t >= 2 * w && c->t - 2 * w <= now) {
        cur = (uint64_t)c->x & 0xffffffffu;
        prev = (uint64_t)c->x >> 32;
        start = c->t - 2 * w;
        uint64_t n = (now - start) / w;
        if (n >= 1) {
            prev = n == 1 ? cur : 0;
            cur = 0;
            start += n * w;
        }
    }
    uint64_t el = now - start;
    /* Weighted in units of 1/w: prev * (w - el) + cur * w against limit * w. */
    u128 used_w = (u128)prev * (w - el) + (u128)cur * w;
    req->allowed = used_w + (u128)req->cost * w <= (u128)req->limit * w;
    int store = 0;
    if (req->op == TC_LIMIT_HIT && req->cost > 0 && req->allowed) {
        cur += req->cost;
        used_w += (u128)req->cost * w;
        *c = (struct tc_count_cell){(int64_t)(cur | prev << 32), start + 2 * w};
        store = 1;
    }
    uint64_t used = (uint64_t)((used_w + w - 1) / w);
    req->value = (int64_t)used;
    req->remaining = req->limit > used ? req->limit - used : 0;
    req->reset_ms = cur || prev ? start + (cur ? 2 * w : w) - now : 0;
    req->start_ms = start;
    req->retry_ms = 0;
    if (!req->allowed) {
        /* The first time a hit of cost fits: later in this window while
         * prev's weight fades, else in the next, where cur becomes prev. */
        uint64_t room = req->limit >= cur + req->cost ? req->limit - cur - req->cost : 0;
        uint64_t at = 0;
        if (req->limit >= cur + req->cost && prev > 0) {
            uint64_t need = w - (uint64_t)((u128)room * w / prev); /* el at which it fits */
            if (need < w) {
                at = start + need;
            }
        }
        if (at == 0) {
            uint64_t room2 = req->limit - req->cost;
            uint64_t need = cur > 0 ? w - (uint64_t)((u128)room2 * w / cur) : 0;
            at = start + w + (need < w ? need : w);
        }
        req->retry_ms = at > now ? at - now : 1;
    }
    return store;
}

int tc_count_apply(struct tc_tier_count_req *req, uint64_t now_ms, struct tc_count_cell *cell)
{
    switch (req->op) {
    case TC_COUNT_ADD:
    case TC_COUNT_GET:
    case TC_COUNT_RESET:
        return counter(req, now_ms, cell);
    case TC_LIMIT_CLEAR:
        if (cell->x == 0 && cell->t == 0) {
            return 0;
        }
        *cell = (struct tc_count_cell){0, 0};
        return 1;
    case TC_LIMIT_HIT:
    case TC_LIMIT_PEEK:
        switch (req->strategy) {
        case TC_LIMIT_FIXED:
            return fixed(req, now_ms, cell);
        case TC_LIMIT_GCRA:
            return gcra(req, now_ms, cell);
        case TC_LIMIT_SLIDING:
            return sliding(req, now_ms, cell);
        case TC_LIMIT_MOVING:
            break;
        }
        break;
    }
    return 0;
}

/* The k-th newest kept hit (k >= 1), or 0 when fewer are kept. */
static uint64_t kth(const struct tc_count_log *l, uint64_t k)
{
    if (k > l->n) {
        return 0;
    }
    return l->ts[(l->head + l->cap - (k - 1)) % l->cap];
}

int tc_count_moving(struct tc_tier_count_req *req, uint64_t now_ms, struct tc_count_log *log)
{
    uint64_t w = req->window_ms;
    uint64_t floor_ms = now_ms > w ? now_ms - w : 0; /* hits at or before it are out */
    /* A hit of cost passes when the (limit - cost + 1)-th newest is out. */
    uint64_t k = req->limit - req->cost + 1;
    uint64_t blocker = req->cost > 0 ? kth(log, k) : 0;
    req->allowed = blocker <= floor_ms;
    int store = 0;
    if (req->op == TC_LIMIT_HIT && req->cost > 0 && req->allowed) {
        for (uint64_t i = 0; i < req->cost; i++) {
            log->head = log->n == 0 ? 0 : (log->head + 1) % log->cap;
            log->ts[log->head] = now_ms;
            if (log->n < log->cap) {
                log->n++;
            }
        }
        store = 1;
    }
    /* Hits within the window: the newest ones, up to the first out. */
    uint64_t used = 0, oldest = 0;
    uint64_t upto = log->n < req->limit ? log->n : req->limit;
    for (uint64_t i = 1; i <= upto; i++) {
        uint64_t t = kth(log, i);
        if (t <= floor_ms) {
            break;
        }
        used++;
        oldest = t;
    }
    req->value = (int64_t)used;
    req->remaining = req->limit > used ? req->limit - used : 0;
    req->start_ms = oldest;
    req->reset_ms = used ? kth(log, 1) + w - now_ms : 0;
    req->retry_ms = req->allowed ? 0 : blocker + w - now_ms;
    return store;
}
