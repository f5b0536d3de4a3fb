/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * mem:// — an in-process tier: one pthread mutex over a chained hash table
 * and an exact LRU list, with a byte budget. It is the simplest correct
 * backend: the reference the conformance suite is proven against, and the
 * "ref-mutex" baseline tiercache-bench measures the shm ring against.
 *
 *   mem://?size=64M&max_item=1M
 *
 * Bytes charged per item: the entry struct, the key and the value, so that a
 * byte budget here compares honestly with the same budget in the shm ring.
 */
#include "tiers/tier_impl.h"
#include "tiers/count.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct mem_entry {
    struct mem_entry *hnext;         /* hash chain */
    struct mem_entry *lprev, *lnext; /* LRU list, most recent at head */
    uint64_t hash;
    uint64_t local_expire_ms; /* 0 = never */
    struct tc_item_hdr hdr;
    size_t key_len, value_len;
    unsigned char data[]; /* key, then value */
};

/* A counter or limit state (issue 16): a cell, or a moving window's log.
 * Kept apart from the items; the bytes of all of them are bounded by
 * count_cap (a quarter of size), dead ones dropped on the way. */
struct mem_count {
    struct mem_count *next;
    uint64_t hash;
    struct tc_count_cell cell;
    struct tc_count_log log; /* moving window: ts owned, cap = its limit */
    uint64_t log_expire_ms;  /* moving: newest hit + window */
    size_t key_len;          /* of the kind byte + key */
    unsigned char key[];
};

#define COUNT_BUCKETS 4096u

struct mem_tier {
    struct tc_tier base;
    pthread_mutex_t lock;
    struct mem_count *counts[COUNT_BUCKETS]; /* under lock */
    uint64_t count_bytes, count_cap;
    struct mem_entry **buckets;
    size_t nbuckets; /* power of two */
    struct mem_entry *lru_head, *lru_tail;
    uint64_t capacity, used, items;
    uint64_t evictions, expired;
    size_t sweep_cursor;
};

struct mem_ctx {
    struct tc_tier_ctx base;
};

struct mem_settings {
    uint64_t size;
    uint64_t max_item; /* UINT64_MAX: not given */
};

static const struct tc_tier_param mem_params[] = {
    {"size", TC_TIER_PARAM_SIZE, offsetof(struct mem_settings, size), "64M", 64 << 10,
     (double)(1ull << 40), 0, NULL, "bytes charged for entries, keys and values; LRU beyond", NULL},
    {"max_item", TC_TIER_PARAM_SIZE, offsetof(struct mem_settings, max_item), NULL, 0,
     (double)(1ull << 40), 0, NULL, "largest value accepted (at most size/2)", "min(1M, size/16)"},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

static size_t entry_cost(size_t klen, size_t vlen)
{
    return sizeof(struct mem_entry) + klen + vlen;
}

static void lru_unlink(struct mem_tier *m, struct mem_entry *e)
{
    if (e->lprev != NULL) {
        e->lprev->lnext = e->lnext;
    } else {
        m->lru_head = e->lnext;
    }
    if (e->lnext != NULL) {
        e->lnext->lprev = e->lprev;
    } else {
        m->lru_tail = e->lprev;
    }
    e->lprev = e->lnext = NULL;
}

static void lru_push_head(struct mem_tier *m, struct mem_entry *e)
{
    e->lprev = NULL;
    e->lnext = m->lru_head;
    if (m->lru_head != NULL) {
        m->lru_head->lprev = e;
    }
    m->lru_head = e;
    if (m->lru_tail == NULL) {
        m->lru_tail = e;
    }
}

/* Returns the link that points at the entry for key, or at the chain's NULL end. */
static struct mem_entry **find_link(struct mem_tier *m, uint64_t h, const void *key, size_t klen)
{
    struct mem_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp != NULL; pp = &(*pp)->hnext) {
        struct mem_entry *e = *pp;
        if (e->hash == h && e->key_len == klen && memcmp(e->data, key, klen) == 0) {
            break;
        }
    }
    return pp;
}

static void remove_entry(struct mem_tier *m, struct mem_entry **link)
{
    struct mem_entry *e = *link;
    *link = e->hnext;
    lru_unlink(m, e);
    m->used -= entry_cost(e->key_len, e->value_len);
    m->items--;
    free(e);
}

static void evict_one(struct mem_tier *m)
{
    struct mem_entry *e = m->lru_tail;
    remove_entry(m, find_link(m, e->hash, e->data, e->key_len));
    m->evictions++;
}

static int entry_expired(const struct mem_entry *e, uint64_t now_ms)
{
    return e->local_expire_ms != 0 && e->local_expire_ms <= now_ms;
}

static enum tc_status mem_open(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                               size_t errlen)
{
    struct mem_settings set = {.max_item = UINT64_MAX};
    enum tc_status st = tc_tier_params_load(p, mem_params, &set, err, errlen);
    if (st != TC_OK) {
        return st;
    }
    uint64_t size = set.size, max_item = set.max_item;
    if (max_item == UINT64_MAX) {
        max_item = size / 16 < (1u << 20) ? size / 16 : (1u << 20);
    } else if (max_item > size / 2) {
        tc_tier_errf(err, errlen,
                     "bad value '%s' for max_item in mem:// (expected a size from 0 to size/2, "
                     "%llu bytes)",
                     tc_tier_params_get(p, "max_item"), (unsigned long long)(size / 2));
        return TC_EINVAL;
    }
    struct mem_tier *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return TC_ENOMEM;
    }
    /* One bucket per ~256 budgeted bytes keeps chains short for small items. */
    m->nbuckets = 1024;
    while (m->nbuckets < size / 256 && m->nbuckets < (1u << 24)) {
        m->nbuckets *= 2;
    }
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (m->buckets == NULL || pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m->buckets);
        free(m);
        return TC_ENOMEM;
    }
    m->capacity = size;
    m->count_cap = size / 4;
    m->base.max_key = TC_KEY_MAX;
    m->base.max_value = (size_t)max_item;
    *out = &m->base;
    return TC_OK;
}

static void count_free(struct mem_count *e)
{
    if (e != NULL) {
        free(e->log.ts);
        free(e);
    }
}

static void mem_close(struct tc_tier *t)
{
    struct mem_tier *m = (struct mem_tier *)t;
    for (size_t i = 0; i < COUNT_BUCKETS; i++) {
        while (m->counts[i] != NULL) {
            struct mem_count *next = m->counts[i]->next;
            count_free(m->counts[i]);
            m->counts[i] = next;
        }
    }
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct mem_entry *e = m->buckets[i];
        while (e != NULL) {
            struct mem_entry *next = e->hnext;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static enum tc_status mem_ctx_init(struct tc_tier *t, struct event_base *base,
                                   struct tc_tier_ctx **out)
{
    struct mem_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return TC_ENOMEM;
    }
    tc_tier_ctx_base_init(&c->base, t, base);
    *out = &c->base;
    return TC_OK;
}

static void mem_ctx_dispose(struct tc_tier_ctx *c)
{
    free(c);
}

static enum tc_status mem_get(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct mem_tier *m = (struct mem_tier *)c->tier;
    uint64_t h = XXH3_64bits(req->key, req->key_len);
    enum tc_status st = TC_ENOTFOUND;

    pthread_mutex_lock(&m->lock);
    struct mem_entry **link = find_link(m, h, req->key, req->key_len);
    struct mem_entry *e = *link;
    if (e != NULL && entry_expired(e, req->now_ms)) {
        remove_entry(m, link);
        m->expired++;
    } else if (e != NULL) {
        st = tc_buf_set(req->out, e->data + e->key_len, e->value_len);
        if (st == TC_OK) {
            req->hdr = e->hdr;
            req->local_expire_ms = e->local_expire_ms;
            lru_unlink(m, e);
            lru_push_head(m, e);
        }
    }
    pthread_mutex_unlock(&m->lock);
    req->status = st;
    return st;
}

static enum tc_status mem_set(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct mem_tier *m = (struct mem_tier *)c->tier;
    uint64_t h = XXH3_64bits(req->key, req->key_len);
    size_t cost = entry_cost(req->key_len, req->value_len);

    if (cost > m->capacity) {
        req->status = TC_ETOOBIG;
        return TC_ETOOBIG;
    }
    struct mem_entry *e = malloc(sizeof(*e) + req->key_len + req->value_len);
    if (e == NULL) {
        req->status = TC_ENOMEM;
        return TC_ENOMEM;
    }
    e->hash = h;
    e->local_expire_ms = req->local_expire_ms;
    e->hdr = req->hdr;
    e->key_len = req->key_len;
    e->value_len = req->value_len;
    memcpy(e->data, req->key, req->key_len);
    if (req->value_len > 0) {
        memcpy(e->data + req->key_len, req->value, req->value_len);
    }
    pthread_mutex_lock(&m->lock);
    struct mem_entry **link = find_link(m, h, req->key, req->key_len);
    if (*link != NULL) {
        remove_entry(m, link);
    }
    while (m->used + cost > m->capacity && m->lru_tail != NULL) {
        evict_one(m);
    }
    link = &m->buckets[h & (m->nbuckets - 1)];
    e->hnext = *link;
    *link = e;
    lru_push_head(m, e);
    m->used += cost;
    m->items++;
    pthread_mutex_unlock(&m->lock);
    req->status = TC_OK;
    return TC_OK;
}

static enum tc_status mem_del(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct mem_tier *m = (struct mem_tier *)c->tier;
    uint64_t h = XXH3_64bits(req->key, req->key_len);
    enum tc_status st = TC_ENOTFOUND;

    pthread_mutex_lock(&m->lock);
    struct mem_entry **link = find_link(m, h, req->key, req->key_len);
    if (*link != NULL) {
        remove_entry(m, link);
        st = TC_OK;
    }
    pthread_mutex_unlock(&m->lock);
    req->status = st;
    return st;
}

static enum tc_status mem_clear(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct mem_tier *m = (struct mem_tier *)c->tier;
    uint64_t n = 0;

    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct mem_entry **link = &m->buckets[i];
        while (*link != NULL) {
            struct mem_entry *e = *link;
            if (e->key_len >= req->key_len && memcmp(e->data, req->key, req->key_len) == 0) {
                remove_entry(m, link);
                n++;
            } else {
                link = &e->hnext;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    req->count = n;
    req->status = TC_OK;
    return TC_OK;
}

static enum tc_status mem_sweep(struct tc_tier *t, uint64_t now_ms, size_t budget,
                                uint64_t *removed)
{
    struct mem_tier *m = (struct mem_tier *)t;
    uint64_t n = 0;
    enum tc_status st = TC_EAGAIN;

    pthread_mutex_lock(&m->lock);
    while (budget > 0) {
        struct mem_entry **link = &m->buckets[m->sweep_cursor];
        while (*link != NULL) {
            budget = budget > 0 ? budget - 1 : 0;
            if (entry_expired(*link, now_ms)) {
                remove_entry(m, link);
                m->expired++;
                n++;
            } else {
                link = &(*link)->hnext;
            }
        }
        budget = budget > 0 ? budget - 1 : 0; /* an empty bucket costs a unit too */
        if (++m->sweep_cursor == m->nbuckets) {
            m->sweep_cursor = 0;
            st = TC_OK;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (removed != NULL) {
        *removed += n;
    }
    return st;
}

static void mem_stats(struct tc_tier *t, tc_tier_stat_fn emit, void *arg)
{
    struct mem_tier *m = (struct mem_tier *)t;
    pthread_mutex_lock(&m->lock);
    uint64_t items = m->items, used = m->used, ev = m->evictions, ex = m->expired;
    pthread_mutex_unlock(&m->lock);
    emit(arg, "items", items, TC_STAT_GAUGE);
    emit(arg, "bytes_used", used, TC_STAT_GAUGE);
    emit(arg, "bytes_capacity", m->capacity, TC_STAT_GAUGE);
    emit(arg, "evictions", ev, TC_STAT_COUNTER);
    emit(arg, "expired", ex, TC_STAT_COUNTER);
}

/* ---- counters and limits (issue 16) ------------------------------------------------------- */

static size_t count_bytes(const struct mem_count *e)
{
    return sizeof(*e) + e->key_len + e->log.cap * sizeof(uint64_t);
}

static int count_dead(const struct mem_count *e, uint64_t now)
{
    if (e->log.ts != NULL) {
        return e->log.n == 0 || e->log_expire_ms <= now;
    }
    return tc_count_cell_dead(&e->cell, now);
}

/* Drops dead states: from one chain, or (all) from every chain. Under lock. */
static void count_prune(struct mem_tier *m, size_t first, size_t n, uint64_t now)
{
    for (size_t i = first; i < first + n; i++) {
        struct mem_count **link = &m->counts[i];
        while (*link != NULL) {
            struct mem_count *e = *link;
            if (count_dead(e, now)) {
                *link = e->next;
                m->count_bytes -= count_bytes(e);
                count_free(e);
            } else {
                link = &e->next;
            }
        }
    }
}

static struct mem_count *count_find(struct mem_tier *m, uint64_t h, const unsigned char *k,
                                    size_t len)
{
    for (struct mem_count *e = m->counts[h % COUNT_BUCKETS]; e != NULL; e = e->next) {
        if (e->hash == h && e->key_len == len && memcmp(e->key, k, len) == 0) {
            return e;
        }
    }
    return NULL;
}

/* One state (kind byte + key in @p k) of @p req. Under lock. */
static enum tc_status count_one(struct mem_tier *m, struct tc_tier_count_req *req,
                                const unsigned char *k, size_t len)
{
    uint64_t now = req->now_ms, h = XXH3_64bits(k, len);
    size_t b = h % COUNT_BUCKETS;
    count_prune(m, b, 1, now);
    struct mem_count *e = count_find(m, h, k, len);
    int moving = k[0] == 'm';
    if (req->op == TC_COUNT_RESET || req->op == TC_LIMIT_CLEAR) {
        if (e != NULL) {
            struct mem_count **link = &m->counts[b];
            while (*link != e) {
                link = &(*link)->next;
            }
            *link = e->next;
            m->count_bytes -= count_bytes(e);
            count_free(e);
        }
        req->value = 0;
        return TC_OK;
    }
    /* A moving window whose limit changed keeps its newest hits, as many
     * as the new limit needs (as shm and Redis do). */
    if (e != NULL && moving && e->log.cap != req->limit) {
        uint64_t *ts = malloc(req->limit * sizeof(uint64_t));
        if (ts == NULL) {
            return TC_ENOMEM;
        }
        uint64_t n = e->log.n < req->limit ? e->log.n : req->limit;
        for (uint64_t i = 0; i < n; i++) { /* oldest kept first */
            ts[i] = e->log.ts[(e->log.head + e->log.cap - (n - 1 - i)) % e->log.cap];
        }
        free(e->log.ts);
        m->count_bytes -= e->log.cap * sizeof(uint64_t);
        m->count_bytes += req->limit * sizeof(uint64_t);
        e->log = (struct tc_count_log){ts, req->limit, n, n ? n - 1 : 0};
    }
    if (e != NULL) {
        if (moving) {
            if (tc_count_moving(req, now, &e->log)) {
                e->log_expire_ms = now + req->window_ms;
            }
        } else {
            tc_count_apply(req, now, &e->cell);
        }
        return TC_OK;
    }
    /* No state yet: decide on an empty one, and keep it only if it changed. */
    struct tc_count_cell cell = {0, 0};
    uint64_t none = 0;
    struct tc_count_log empty = {&none, 1, 0, 0};
    if (moving ? req->op != TC_LIMIT_HIT || req->cost == 0
               : !tc_count_apply(req, now, &cell) || tc_count_cell_dead(&cell, now)) {
        if (moving) {
            tc_count_moving(req, now, &empty); /* outputs only: nothing is pushed */
        }
        return TC_OK;
    }
    size_t need = sizeof(*e) + len + (moving ? req->limit * sizeof(uint64_t) : 0);
    if (m->count_bytes + need > m->count_cap) {
        count_prune(m, 0, COUNT_BUCKETS, now);
        if (m->count_bytes + need > m->count_cap) {
            return TC_ENOMEM;
        }
    }
    e = calloc(1, sizeof(*e) + len);
    if (e == NULL) {
        return TC_ENOMEM;
    }
    if (moving) {
        e->log.ts = malloc(req->limit * sizeof(uint64_t));
        if (e->log.ts == NULL) {
            free(e);
            return TC_ENOMEM;
        }
        e->log.cap = req->limit;
        tc_count_moving(req, now, &e->log);
        e->log_expire_ms = now + req->window_ms;
    } else {
        e->cell = cell;
    }
    e->hash = h;
    e->key_len = len;
    memcpy(e->key, k, len);
    e->next = m->counts[b];
    m->counts[b] = e;
    m->count_bytes += count_bytes(e);
    return TC_OK;
}

static enum tc_status mem_count(struct tc_tier_ctx *c, struct tc_tier_count_req *req)
{
    struct mem_tier *m = (struct mem_tier *)c->tier;
    unsigned char *k = malloc(1 + req->key_len);
    if (k == NULL) {
        return TC_ENOMEM;
    }
    memcpy(k + 1, req->key, req->key_len);
    static const char kinds[] = "fsmg"; /* by enum tc_limit_strategy - 1 */
    enum tc_status st = TC_OK;
    pthread_mutex_lock(&m->lock);
    if (req->op == TC_COUNT_ADD || req->op == TC_COUNT_GET || req->op == TC_COUNT_RESET) {
        k[0] = 'c';
        st = count_one(m, req, k, 1 + req->key_len);
    } else if (req->op == TC_LIMIT_CLEAR && req->strategy == 0) {
        for (size_t i = 0; i < 4 && st == TC_OK; i++) {
            k[0] = (unsigned char)kinds[i];
            st = count_one(m, req, k, 1 + req->key_len);
        }
    } else {
        k[0] = (unsigned char)kinds[req->strategy - 1];
        st = count_one(m, req, k, 1 + req->key_len);
    }
    pthread_mutex_unlock(&m->lock);
    free(k);
    return st;
}

const struct tc_tier_ops tc_tier_mem_ops = {
    .scheme = "mem",
    .abi_version = TC_TIER_ABI_VERSION,
    .caps = TC_TIER_CAP_COUNT,
    .params = mem_params,
    .usage = "mem://?size=64M&max_item=1M",
    .open = mem_open,
    .close = mem_close,
    .ctx_init = mem_ctx_init,
    .ctx_dispose = mem_ctx_dispose,
    .get = mem_get,
    .set = mem_set,
    .del = mem_del,
    .clear = mem_clear,
    .sweep = mem_sweep,
    .stats = mem_stats,
    .health = NULL,
    .count = mem_count,
};
