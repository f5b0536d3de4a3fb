/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * shm:// — the L1 tier over the shared-memory ring (shm/ring.h): every
 * process on the host that opens the same NAME shares one cache.
 *
 *   shm://NAME?size=256M&mode=0600&max_item=1M&owner=USER&group=GROUP
 *
 * Trust: an existing segment is attached only if it belongs to `owner` (a
 * user name or uid; default: this process's effective uid) and grants no
 * permission beyond `mode` (octal, default 0600); when `group` (a group name
 * or gid) is given, a created segment gets that group and an existing one
 * that lets its group in must have it. Otherwise open fails with TC_EPERM
 * and a message naming /dev/shm/NAME, its owner and mode, and the fix
 * (shm/ring.h, tc_ring_open()). Sharing with processes of other users takes
 * e.g. `mode=0660&group=tccache` on every side, plus `owner=tiercache` on
 * the sides that do not run as that user.
 *
 * Health: DEGRADED once the segment fails tc_ring_check() (its header
 * changed since attach, implausible stat values, a head that moved back):
 * some process with write access scribbled on it. Gets stay safe (every
 * record is validated); the stats read from the segment are clamped.
 *
 * The ring knows keys, value bytes, a local expiry and flag bits only; the
 * 40-byte item header (tiers/item.h) travels inside the value bytes, written
 * in front of the payload in one gathered write, so shm/ never depends on
 * tiers/. A get copies the header aside and the payload straight into the
 * caller's buffer (tc_ring_get_split), and decodes the header. The header carries no check
 * of its own here: the ring's check already covers every byte of the record
 * (header and payload) and is seeded with the key, whose bytes the ring
 * compares, so a second pass over the value would catch nothing more. Its
 * slot holds the value's ETag instead (tc_item_encode_guarded, computed in
 * the same one pass at write), handed up as tc_tier_req.etag so that a hit
 * is one pass over the value, not two; the header's shape is still checked.
 *
 * Hot copies: a value of at least HOT_MIN bytes costs a hit far more in
 * its copy out of the segment and its check than in anything else (at
 * 64 KiB, 12% of the server's CPU against nginx's sendfile). So each ctx
 * (one per worker) keeps a checked copy of the last few it read, up to
 * the `hot` bytes, with the identity of the record it came from; a hit
 * on a record with that same identity (tc_ring_get_known: same log
 * position, same header words and check, not lapped) is served from the
 * copy without reading the value out of the segment. Every other record
 * is read and checked as before: a new value, a rewrite in place, a
 * delete or a purge changes or removes the record, and the copy is
 * replaced or left unused. Value bytes scribbled over in the segment
 * under an unchanged header are not seen on such a hit; what is served is
 * the value as it was checked, never the scribble.
 *
 * Lossy: the ring may drop an item at any time (FIFO log, lossy index), which
 * is why a slower tier sits behind it.
 *
 * Lease locks (TC_TIER_CAP_LOCK_HOST): the segment's lock table, shared by
 * every process that opens the same NAME; lock names never meet cache keys.
 * Operations complete synchronously. Leases are capped at
 * TC_RING_LOCK_TTL_MAX (24 h): a longer ttl_ms is TC_EINVAL. Releases reach
 * tc_tier_on_lock_release() through one watcher thread per tier, asleep on
 * the segment's release epoch; it cannot tell which lock moved, so it calls
 * back with name NULL ("recheck all"), also after another process stops its
 * own watcher (a stop bumps the epoch). on_lock_release answers TC_ENOMEM
 * when that thread cannot be started (and then leaves no callback behind).
 */
#include "tiers/tier_impl.h"
#include "shm/ring.h"
#include "tiers/count.h"

#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(TC_RING_LOCK_TOKEN_MAX == TC_LOCK_TOKEN_MAX, "one token size for tier and ring");

/* How long the watcher sleeps on the epoch before it looks again on its own. */
#define WATCH_WAIT_MS 1000u

struct shm_tier {
    struct tc_tier base;
    struct tc_ring *ring;
    pthread_mutex_t maint_lock; /* guards maint (sweep may run on any thread) and ctxs */
    struct shm_ctx *ctxs;       /* open ctxs, whose hot-copy counters stats adds up */
    uint64_t hot_hits_gone;     /* of the ctxs disposed of (under maint_lock) */
    uint64_t hot;               /* the hot parameter: bytes of hot copies per ctx */
    struct tc_ring_ctx *maint;
    /* Lock-release watcher (on_lock_release). watch_lock serialises
     * registrations (the thread's start and join); cb_lock guards cb_fn and
     * cb_arg and is held while the callback runs, so that a registration
     * that returns knows the old callback is neither running nor called. */
    pthread_mutex_t watch_lock, cb_lock;
    tc_tier_lock_release_fn cb_fn;
    void *cb_arg;
    pthread_t watcher;
    int watching;    /* under watch_lock */
    atomic_int stop; /* tells the watcher to return */
};

/* Values at least this large get hot copies: below it, the copy and check
 * cost less than the syscalls of the answer. */
#define HOT_MIN   (16u << 10)
#define HOT_SLOTS 8

/* One hot copy: the record's identity, its key, and its bytes (the item
 * header apart, as the ring splits them). klen 0: empty. */
struct hot {
    struct tc_ring_ident id;
    uint64_t used; /* the ctx's use clock at its last hit (least recent goes first) */
    uint8_t *key;
    size_t klen;
    uint8_t hb[TC_ITEM_HDR_SIZE];
    struct tc_buf_block *val; /* lent to the requests it answers (tc_buf_view) */
};

struct shm_ctx {
    struct tc_tier_ctx base;
    struct tc_ring_ctx *rc;
    struct shm_ctx *next; /* in the tier's list, for its stats (under maint_lock) */
    size_t hot_cap;       /* bytes of payload its copies may hold; 0: none */
    size_t hot_bytes;
    uint64_t clock;
    /* Written by the ctx's thread only, read by stats: relaxed load + store. */
    _Atomic uint64_t hot_hits, hot_held;
    struct hot hot[HOT_SLOTS];
};

struct shm_settings {
    uint64_t size;
    uint64_t mode;
    uint64_t max_item;               /* UINT64_MAX: not given */
    uint64_t small_pct, promote_pct; /* 0: the ring's default */
    uint64_t hot;
    const char *owner, *group; /* resolved by id_param() */
};

#define SHM_FIELD(f) offsetof(struct shm_settings, f)
static const struct tc_tier_param shm_params[] = {
    {"size", TC_TIER_PARAM_SIZE, SHM_FIELD(size), "64M", 256 << 10, (double)(1ull << 44), 0, NULL,
     "bytes of the whole segment (header, index, logs); fixed at creation", NULL},
    {"mode", TC_TIER_PARAM_OCTAL, SHM_FIELD(mode), "0600", 0, 0777, 0, NULL,
     "permissions, at least 0600: a new segment gets exactly these; an existing one that grants "
     "more is refused",
     NULL},
    {"owner", TC_TIER_PARAM_TEXT, SHM_FIELD(owner), NULL, 0, 0, 0, NULL,
     "user (name or uid) an existing segment must belong to", "the server's own user"},
    {"group", TC_TIER_PARAM_TEXT, SHM_FIELD(group), NULL, 0, 0, 0, NULL,
     "group (name or gid) a new segment gets; an existing one that lets its group in must have "
     "it",
     "none"},
    {"max_item", TC_TIER_PARAM_SIZE, SHM_FIELD(max_item), NULL, 1, (double)(1ull << 44), 0, NULL,
     "largest value (at most size/4); larger ones go to slower tiers", "min(1M, size/16)"},
    {"small_pct", TC_TIER_PARAM_UINT, SHM_FIELD(small_pct), NULL, 1, 50, 0, NULL,
     "percent of the log for probation (new keys)", "20"},
    {"promote_pct", TC_TIER_PARAM_UINT, SHM_FIELD(promote_pct), NULL, 1, 100, 0, NULL,
     "a main-log item read in the oldest promote_pct% of the log is re-appended", "15"},
    {"hot", TC_TIER_PARAM_SIZE, SHM_FIELD(hot), "4M", 0, (double)(1ull << 40), 0, NULL,
     "bytes of checked copies of large values (16 KiB and up) each worker keeps, so that a hit "
     "on an unchanged record skips its copy and check; 0: none",
     NULL},
    {NULL, 0, 0, NULL, 0, 0, 0, NULL, NULL, NULL},
};

/* Largest uid or gid a parameter may name: (uid_t)-1 means "unchanged" to
 * chown, and is nobody's id. */
#define ID_MAX 0xfffffffeull

/* owner= or group=: a number, or a name looked up in the user or group
 * database. *set = 0 when absent. */
static enum tc_status id_param(const struct tc_tier_params *p, const char *name, int *set,
                               uint32_t *out, char *err, size_t errlen)
{
    const char *v = tc_tier_params_get(p, name);
    *set = 0;
    if (v == NULL) {
        return TC_OK;
    }
    int is_group = strcmp(name, "group") == 0;
    if (v[0] != '\0' && isdigit((unsigned char)v[0])) {
        uint64_t id;
        enum tc_status st = tc_tier_params_uint(p, name, 10, 0, 0, ID_MAX, &id, err, errlen);
        if (st != TC_OK) {
            return st;
        }
        *out = (uint32_t)id;
        *set = 1;
        return TC_OK;
    }
    char tmp[4096]; /* a group entry lists its members */
    int rc;
    if (is_group) {
        struct group g, *res = NULL;
        rc = getgrnam_r(v, &g, tmp, sizeof(tmp), &res);
        if (rc == 0 && res != NULL) {
            *out = (uint32_t)g.gr_gid;
            *set = 1;
        }
    } else {
        struct passwd pw, *res = NULL;
        rc = getpwnam_r(v, &pw, tmp, sizeof(tmp), &res);
        if (rc == 0 && res != NULL) {
            *out = (uint32_t)pw.pw_uid;
            *set = 1;
        }
    }
    if (!*set) {
        tc_tier_errf(err, errlen,
                     "bad value '%s' for %s in shm:// (expected a %s name or number%s%s)", v, name,
                     is_group ? "group" : "user", rc != 0 ? ": " : "",
                     rc != 0 ? strerror(rc) : ": no such entry");
        return TC_EINVAL;
    }
    return TC_OK;
}

static enum tc_status shm_open_tier(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                                    size_t errlen)
{
    struct shm_settings set = {.max_item = UINT64_MAX};
    int has_owner = 0, has_group = 0;
    uint32_t owner = 0, group = 0;
    enum tc_status st = tc_tier_params_load(p, shm_params, &set, err, errlen);
    uint64_t size = set.size, mode = set.mode, max_item = set.max_item;
    uint64_t small_pct = set.small_pct, promote_pct = set.promote_pct;
    if (st == TC_OK && (mode & 0600) != 0600) {
        /* Without them the owner could not open its own segment again. */
        tc_tier_errf(err, errlen,
                     "bad value '%s' for mode in shm:// (expected octal permissions that include "
                     "0600, e.g. 0600 or 0660)",
                     tc_tier_params_get(p, "mode"));
        st = TC_EINVAL;
    }
    if (st == TC_OK) {
        st = id_param(p, "owner", &has_owner, &owner, err, errlen);
    }
    if (st == TC_OK) {
        st = id_param(p, "group", &has_group, &group, err, errlen);
    }
    if (st == TC_OK && max_item == UINT64_MAX) {
        max_item = size / 16 < (1u << 20) ? size / 16 : (1u << 20);
    } else if (st == TC_OK && max_item > size / 4) {
        tc_tier_errf(err, errlen,
                     "bad value '%s' for max_item in shm:// (expected a size from 1 to size/4, "
                     "%llu bytes)",
                     tc_tier_params_get(p, "max_item"), (unsigned long long)(size / 4));
        st = TC_EINVAL;
    }
    if (st != TC_OK) {
        return st;
    }
    struct shm_tier *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return TC_ENOMEM;
    }
    /* The ring's max item counts the item header we put in front. */
    struct tc_ring_options o = {.size = size,
                                .mode = (unsigned)mode,
                                .has_owner = has_owner,
                                .owner_uid = owner,
                                .has_group = has_group,
                                .group_gid = group,
                                .max_item = max_item + TC_ITEM_HDR_SIZE,
                                .small_pct = (unsigned)small_pct,
                                .promote_pct = (unsigned)promote_pct};
    st = tc_ring_open(tc_tier_params_target(p), &o, &s->ring, err, errlen);
    if (st != TC_OK) {
        free(s);
        return st;
    }
    st = tc_ring_ctx_create(s->ring, &s->maint);
    int locks = 0;
    if (st == TC_OK) {
        locks += pthread_mutex_init(&s->maint_lock, NULL) == 0;
        locks += locks == 1 && pthread_mutex_init(&s->watch_lock, NULL) == 0;
        locks += locks == 2 && pthread_mutex_init(&s->cb_lock, NULL) == 0;
    }
    if (locks != 3) {
        pthread_mutex_t *m[] = {&s->maint_lock, &s->watch_lock};
        for (int i = 0; i < locks && i < 2; i++) {
            pthread_mutex_destroy(m[i]);
        }
        tc_ring_ctx_destroy(s->maint);
        tc_ring_close(s->ring);
        free(s);
        return st != TC_OK ? st : TC_ENOMEM;
    }
    s->base.max_key = TC_KEY_MAX < TC_RING_KEY_MAX ? TC_KEY_MAX : TC_RING_KEY_MAX;
    s->base.max_value = (size_t)(tc_ring_max_item(s->ring) - TC_ITEM_HDR_SIZE);
    s->hot = set.hot;
    *out = &s->base;
    return TC_OK;
}

static void watch_stop(struct shm_tier *s);

static void shm_close(struct tc_tier *t)
{
    struct shm_tier *s = (struct shm_tier *)t;
    watch_stop(s);
    pthread_mutex_destroy(&s->cb_lock);
    pthread_mutex_destroy(&s->watch_lock);
    tc_ring_ctx_destroy(s->maint);
    pthread_mutex_destroy(&s->maint_lock);
    tc_ring_close(s->ring);
    free(s);
}

static enum tc_status shm_ctx_init(struct tc_tier *t, struct event_base *base,
                                   struct tc_tier_ctx **out)
{
    struct shm_tier *s = (struct shm_tier *)t;
    struct shm_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return TC_ENOMEM;
    }
    enum tc_status st = tc_ring_ctx_create(s->ring, &c->rc);
    if (st != TC_OK) {
        free(c);
        return st;
    }
    tc_tier_ctx_base_init(&c->base, t, base);
    c->hot_cap = s->hot > SIZE_MAX ? SIZE_MAX : (size_t)s->hot;
    pthread_mutex_lock(&s->maint_lock);
    c->next = s->ctxs;
    s->ctxs = c;
    pthread_mutex_unlock(&s->maint_lock);
    *out = &c->base;
    return TC_OK;
}

static void hot_drop(struct shm_ctx *c, struct hot *e)
{
    if (e->klen > 0) {
        c->hot_bytes -= tc_buf_block_len(e->val) + e->klen;
        atomic_store_explicit(&c->hot_held, c->hot_bytes, memory_order_relaxed);
    }
    free(e->key);
    tc_buf_block_unref(e->val); /* views still out keep it until they go */
    memset(e, 0, sizeof(*e));
}

static void shm_ctx_dispose(struct tc_tier_ctx *c)
{
    struct shm_ctx *sc = (struct shm_ctx *)c;
    struct shm_tier *s = (struct shm_tier *)c->tier;
    pthread_mutex_lock(&s->maint_lock);
    for (struct shm_ctx **p = &s->ctxs; *p != NULL; p = &(*p)->next) {
        if (*p == sc) {
            *p = sc->next;
            break;
        }
    }
    s->hot_hits_gone += atomic_load_explicit(&sc->hot_hits, memory_order_relaxed);
    pthread_mutex_unlock(&s->maint_lock);
    for (size_t i = 0; i < HOT_SLOTS; i++) {
        hot_drop(sc, &sc->hot[i]);
    }
    tc_ring_ctx_destroy(sc->rc);
    free(sc);
}

static struct hot *hot_find(struct shm_ctx *c, const void *key, size_t klen)
{
    for (size_t i = 0; i < HOT_SLOTS; i++) {
        struct hot *e = &c->hot[i];
        if (e->klen == klen && memcmp(e->key, key, klen) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Keeps a copy of what a checked get just copied and decoded (header
 * @p hb, payload @p val of @p n bytes, from record @p id), dropping the
 * least recently used copies to stay within hot_cap. Without the memory,
 * nothing is kept. */
static void hot_keep(struct shm_ctx *c, const void *key, size_t klen,
                     const struct tc_ring_ident *id, const uint8_t *hb, const void *val, size_t n)
{
    struct hot *e = NULL;
    if (n < HOT_MIN || n > c->hot_cap || klen > c->hot_cap - n) {
        return;
    }
    size_t need = n + klen;
    for (;;) { /* the least recently used go until a slot is free and it fits */
        struct hot *slot = NULL, *lru = NULL;
        for (size_t i = 0; i < HOT_SLOTS; i++) {
            struct hot *h = &c->hot[i];
            if (h->klen == 0) {
                slot = slot != NULL ? slot : h;
            } else if (lru == NULL || h->used < lru->used) {
                lru = h;
            }
        }
        if (slot != NULL && c->hot_bytes <= c->hot_cap - need) {
            e = slot;
            break;
        }
        if (lru == NULL) {
            return;
        }
        hot_drop(c, lru);
    }
    e->key = malloc(klen);
    e->val = e->key != NULL ? tc_buf_block_new(val, n) : NULL;
    if (e->val == NULL) {
        free(e->key);
        memset(e, 0, sizeof(*e));
        return;
    }
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->id = *id;
    e->used = ++c->clock;
    memcpy(e->hb, hb, TC_ITEM_HDR_SIZE);
    c->hot_bytes += need;
    atomic_store_explicit(&c->hot_held, c->hot_bytes, memory_order_relaxed);
}

/* Turns what the ring copied (the header to @p hb, the payload to
 * req->out) into the request's answer. */
static enum tc_status get_finish(struct tc_tier_req *req, enum tc_status st,
                                 const struct tc_ring_item *it, const uint8_t *hb)
{
    struct tc_buf *out = req->out;
    if (st == TC_ETOOBIG) {
        st = TC_ENOTFOUND; /* kept changing under us: a miss is the honest answer */
    }
    if (st == TC_OK) {
        if (tc_item_decode_guarded(hb, it->value_len, &req->hdr, &req->etag) == TC_OK) {
            out->len = req->hdr.value_len;
            req->local_expire_ms = it->expire_ms;
        } else {
            /* Written by another program (or an older format), or damaged
             * in the segment: a miss that the stack counts and replaces. */
            st = TC_ECORRUPT;
        }
    }
    if (st != TC_OK) {
        out->len = 0;
    }
    req->status = st;
    return st;
}

static enum tc_status shm_get(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct shm_ctx *sc = (struct shm_ctx *)c;
    struct tc_buf *out = req->out;
    struct tc_ring_item it;
    uint8_t hb[TC_ITEM_HDR_SIZE];
    enum tc_status st = TC_ENOTFOUND;
    struct hot *e = sc->hot_cap > 0 ? hot_find(sc, req->key, req->key_len) : NULL;
    struct tc_ring_ident id = e != NULL ? e->id : (struct tc_ring_ident){0};
    if (out->block != NULL) {
        tc_buf_deinit(out); /* a view (of an earlier answer): the ring writes below */
    }
    /* The value may have grown between the size report and the retry. */
    for (int tries = 0; tries < 4; tries++) {
        /* With a hot copy the answer is most likely a view of it: no buffer
         * yet (a record that changed reports its size, and the retry gets
         * one). */
        if (e == NULL && out->cap < 256 && tc_buf_reserve(out, 256) != TC_OK) {
            st = TC_ENOMEM;
            break;
        }
        /* The header apart, the payload straight into out: no move after. */
        int same = 0;
        st = tc_ring_get_known(sc->rc, req->key, req->key_len, req->now_ms, hb, sizeof(hb),
                               out->data, out->cap, &it, &id, &same);
        if (same) {
            /* Only e's record can be the same: an id of zeros names none
             * (a record's w1 holds its key length, never 0). */
            memcpy(hb, e->hb, sizeof(hb));
            tc_buf_view(out, e->val);
            e->used = ++sc->clock;
            atomic_store_explicit(&sc->hot_hits,
                                  atomic_load_explicit(&sc->hot_hits, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            return get_finish(req, st, &it, hb);
        }
        if (st != TC_ETOOBIG) {
            break;
        }
        if (tc_buf_reserve(out, it.value_len - TC_ITEM_HDR_SIZE) != TC_OK) {
            st = TC_ENOMEM;
            break;
        }
        st = TC_ENOTFOUND;
    }
    if (e != NULL) {
        hot_drop(sc, e); /* its record changed, went, or could not be read */
    }
    st = get_finish(req, st, &it, hb);
    if (st == TC_OK && out->len >= HOT_MIN && sc->hot_cap > 0) {
        hot_keep(sc, req->key, req->key_len, &id, hb, out->data, out->len);
    }
    return st;
}

/* The batch goes to the ring in one call, so that its cache misses overlap;
 * a value larger than its buffer takes the one-by-one path. */
static void shm_get_many(struct tc_tier_ctx *c, struct tc_tier_req **reqs, size_t n)
{
    struct shm_ctx *sc = (struct shm_ctx *)c;
    struct tc_ring_getreq q[TC_TIER_GET_MANY_MAX];
    struct tc_ring_item it[TC_TIER_GET_MANY_MAX];
    enum tc_status st[TC_TIER_GET_MANY_MAX];
    uint8_t hb[TC_TIER_GET_MANY_MAX][TC_ITEM_HDR_SIZE];
    size_t idx[TC_TIER_GET_MANY_MAX], m = 0;
    for (size_t i = 0; i < n && i < TC_TIER_GET_MANY_MAX; i++) {
        struct tc_buf *out = reqs[i]->out;
        if (out->block != NULL) {
            tc_buf_deinit(out); /* a view: the ring writes into out below */
        }
        if (out->cap < 256 && tc_buf_reserve(out, 256) != TC_OK) {
            get_finish(reqs[i], TC_ENOMEM, NULL, NULL);
            continue;
        }
        q[m] = (struct tc_ring_getreq){.key = reqs[i]->key,
                                       .klen = reqs[i]->key_len,
                                       .buf = out->data,
                                       .cap = out->cap,
                                       .item = &it[m],
                                       .status = &st[m],
                                       .now_ms = reqs[i]->now_ms,
                                       .head = hb[m],
                                       .head_len = TC_ITEM_HDR_SIZE};
        idx[m++] = i;
    }
    if (m == 0) {
        return;
    }
    tc_ring_get_batch(sc->rc, m, q);
    for (size_t k = 0; k < m; k++) {
        struct tc_tier_req *req = reqs[idx[k]];
        if (st[k] == TC_ETOOBIG) {
            shm_get(c, req);
        } else {
            get_finish(req, st[k], &it[k], hb[k]);
        }
    }
}

static enum tc_status shm_set(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct shm_ctx *sc = (struct shm_ctx *)c;
    uint8_t hdr[TC_ITEM_HDR_SIZE];
    enum tc_status st = tc_item_encode_guarded(&req->hdr, req->value, hdr);
    if (st == TC_OK) {
        struct tc_ring_iov iov[2] = {{hdr, sizeof(hdr)}, {req->value, req->value_len}};
        st = tc_ring_setv(sc->rc, req->key, req->key_len, iov, 2, req->local_expire_ms, 0,
                          req->now_ms);
    }
    req->status = st;
    return st;
}

static enum tc_status shm_del(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct shm_ctx *sc = (struct shm_ctx *)c;
    enum tc_status st = tc_ring_del(sc->rc, req->key, req->key_len, req->now_ms);
    req->status = st;
    return st;
}

/* A full index walk (O(slots): ~1 ms per 2 M slots); meant for rare admin use. */
static enum tc_status shm_clear(struct tc_tier_ctx *c, struct tc_tier_req *req)
{
    struct shm_ctx *sc = (struct shm_ctx *)c;
    uint64_t n = 0;
    enum tc_status st = tc_ring_clear(sc->rc, req->key, req->key_len, req->now_ms, &n);
    req->count = n;
    req->status = st;
    return st;
}

static enum tc_status shm_sweep(struct tc_tier *t, uint64_t now_ms, size_t budget,
                                uint64_t *removed)
{
    struct shm_tier *s = (struct shm_tier *)t;
    pthread_mutex_lock(&s->maint_lock);
    enum tc_status st = tc_ring_sweep(s->maint, now_ms, budget, removed);
    pthread_mutex_unlock(&s->maint_lock);
    return st;
}

static void shm_stats(struct tc_tier *t, tc_tier_stat_fn emit, void *arg)
{
    struct shm_tier *s = (struct shm_tier *)t;
    struct tc_ring_stats rs;
    tc_ring_stats(s->ring, &rs);
    emit(arg, "items", rs.items, TC_STAT_GAUGE);
    emit(arg, "bytes_used", rs.bytes_used, TC_STAT_GAUGE);
    emit(arg, "bytes_capacity", rs.seg_size, TC_STAT_GAUGE);
    emit(arg, "log_capacity", rs.log_capacity, TC_STAT_GAUGE);
    emit(arg, "index_slots", rs.slots, TC_STAT_GAUGE);
    emit(arg, "attached_ctxs", rs.ctxs, TC_STAT_GAUGE);
    /* Segment-wide counters (every process), beside this process's common ones. */
    emit(arg, "shm_hits", rs.hits, TC_STAT_COUNTER);
    emit(arg, "shm_misses", rs.misses, TC_STAT_COUNTER);
    emit(arg, "shm_sets", rs.sets, TC_STAT_COUNTER);
    emit(arg, "evictions", rs.evictions, TC_STAT_COUNTER);
    emit(arg, "promotions", rs.promotions, TC_STAT_COUNTER);
    emit(arg, "expired", rs.expired, TC_STAT_COUNTER);
    emit(arg, "torn_reads", rs.torn, TC_STAT_COUNTER);
    emit(arg, "shm_corrupt", rs.corrupt, TC_STAT_COUNTER);
    emit(arg, "swept", rs.swept, TC_STAT_COUNTER);
    emit(arg, "lost_sets", rs.lost_sets, TC_STAT_COUNTER);
    emit(arg, "lock_slots", rs.lock_slots, TC_STAT_GAUGE);
    emit(arg, "locks_held", rs.locks_held, TC_STAT_GAUGE);
    emit(arg, "cells_live", tc_ring_cells_live(s->ring, (uint64_t)time(NULL) * 1000u),
         TC_STAT_GAUGE);
    /* How much of the above was garbage in the segment, left out. */
    emit(arg, "stats_rejected", rs.stats_rejected, TC_STAT_GAUGE);
    emit(arg, "check_failures", rs.check_failures, TC_STAT_COUNTER);
    /* This process's hot copies (see the top of this file). */
    uint64_t hits = 0, held = 0;
    pthread_mutex_lock(&s->maint_lock);
    hits = s->hot_hits_gone;
    for (struct shm_ctx *c = s->ctxs; c != NULL; c = c->next) {
        hits += atomic_load_explicit(&c->hot_hits, memory_order_relaxed);
        held += atomic_load_explicit(&c->hot_held, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->maint_lock);
    emit(arg, "hot_hits", hits, TC_STAT_COUNTER);
    emit(arg, "hot_bytes", held, TC_STAT_GAUGE);
}

static enum tc_tier_health shm_health(struct tc_tier *t, char *detail, size_t len)
{
    struct shm_tier *s = (struct shm_tier *)t;
    if (tc_ring_check(s->ring, detail, len) != TC_OK) {
        return TC_HEALTH_DEGRADED; /* still serving: reads validate every record */
    }
    return TC_HEALTH_OK;
}

/* ---- lease locks ---------------------------------------------------------------------------- */

static enum tc_status shm_lock_acquire(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    struct shm_tier *s = (struct shm_tier *)c->tier;
    uint64_t rem = 0;
    enum tc_status st =
        tc_ring_lock_acquire(s->ring, req->name, req->name_len, req->ttl_ms, req->token, &rem);
    if (st == TC_EEXIST) {
        req->remaining_ms = rem;
    }
    req->status = st;
    return st;
}

static enum tc_status shm_lock_release(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    struct shm_tier *s = (struct shm_tier *)c->tier;
    enum tc_status st = tc_ring_lock_release(s->ring, req->name, req->name_len, req->token);
    req->status = st;
    return st;
}

static enum tc_status shm_lock_peek(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    struct shm_tier *s = (struct shm_tier *)c->tier;
    uint64_t rem = 0;
    enum tc_status st =
        tc_ring_lock_peek(s->ring, req->name, req->name_len, req->token, &rem, NULL);
    if (st == TC_OK) {
        req->remaining_ms = rem;
    }
    req->status = st;
    return st;
}

static enum tc_status shm_lock_renew(struct tc_tier_ctx *c, struct tc_tier_lock_req *req)
{
    struct shm_tier *s = (struct shm_tier *)c->tier;
    enum tc_status st =
        tc_ring_lock_renew(s->ring, req->name, req->name_len, req->token, req->ttl_ms);
    req->status = st;
    return st;
}

/* ---- counters and limits (issue 16) ------------------------------------------------------- */

/* The segment's cells (shm/cell.c) hold the states of tiers/count.h; every
 * decision is one 16-byte CAS. The moving window keeps its log in a slab of
 * the segment (tc_ring_moving): a limit above TC_RING_MOVING_MAX is
 * TC_ETOOBIG here. */

struct count_call {
    struct tc_tier_count_req *req;
};

static int count_cell_fn(struct tc_ring_cellval *v, void *arg)
{
    struct count_call *cc = arg;
    struct tc_count_cell cell = {v->x, v->t};
    int store = tc_count_apply(cc->req, cc->req->now_ms, &cell);
    v->x = cell.x;
    v->t = cell.t;
    return store;
}

/* The kind byte in front of a cell's name: counters and each strategy of a
 * limit are states of their own. */
static char count_kind(int op, enum tc_limit_strategy s)
{
    if (op == TC_COUNT_ADD || op == TC_COUNT_GET || op == TC_COUNT_RESET) {
        return 'c';
    }
    return s == TC_LIMIT_FIXED ? 'f' : s == TC_LIMIT_SLIDING ? 's' : s == TC_LIMIT_GCRA ? 'g' : 'm';
}

static enum tc_status shm_moving(struct shm_tier *s, struct tc_tier_count_req *req,
                                 const uint8_t *name, size_t len)
{
    if (req->op != TC_LIMIT_CLEAR && req->limit > TC_RING_MOVING_MAX) {
        return TC_ETOOBIG;
    }
    struct tc_ring_moving m = {.limit = req->limit,
                               .window_ms = req->window_ms,
                               .cost = req->cost,
                               .hit = req->op == TC_LIMIT_HIT,
                               .clear = req->op == TC_LIMIT_CLEAR};
    enum tc_status st = tc_ring_moving(s->ring, name, len, req->now_ms, &m);
    if (st != TC_OK || m.clear) {
        return st;
    }
    uint64_t now = req->now_ms, w = req->window_ms;
    req->allowed = m.allowed;
    req->value = (int64_t)m.used;
    req->remaining = req->limit > m.used ? req->limit - m.used : 0;
    req->start_ms = m.oldest_ms;
    req->reset_ms = m.used && m.newest_ms + w > now ? m.newest_ms + w - now : 0;
    req->retry_ms = m.allowed ? 0 : (m.blocker_ms + w > now ? m.blocker_ms + w - now : 1);
    return TC_OK;
}

static enum tc_status shm_count(struct tc_tier_ctx *c, struct tc_tier_count_req *req)
{
    struct shm_tier *s = (struct shm_tier *)c->tier;
    uint8_t name[1 + TC_LOCK_NAME_MAX];
    memcpy(name + 1, req->key, req->key_len);
    struct count_call cc = {req};
    if (req->op == TC_LIMIT_CLEAR && req->strategy == 0) {
        static const enum tc_limit_strategy all[] = {TC_LIMIT_FIXED, TC_LIMIT_SLIDING,
                                                     TC_LIMIT_GCRA, TC_LIMIT_MOVING};
        for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
            name[0] = (uint8_t)count_kind(req->op, all[i]);
            enum tc_status st = all[i] == TC_LIMIT_MOVING
                                    ? shm_moving(s, req, name, req->key_len + 1)
                                    : tc_ring_cell_update(s->ring, name, req->key_len + 1,
                                                          req->now_ms, count_cell_fn, &cc);
            if (st != TC_OK) {
                return st;
            }
        }
        return TC_OK;
    }
    name[0] = (uint8_t)count_kind(req->op, req->strategy);
    if (req->strategy == TC_LIMIT_MOVING && req->op != TC_COUNT_ADD && req->op != TC_COUNT_GET &&
        req->op != TC_COUNT_RESET) {
        return shm_moving(s, req, name, req->key_len + 1);
    }
    return tc_ring_cell_update(s->ring, name, req->key_len + 1, req->now_ms, count_cell_fn, &cc);
}

/* The watcher: one per tier while a callback is registered. It keeps the
 * last epoch it reported, so a release made while the callback runs is
 * reported again afterwards, never lost. */
static void *watch_main(void *arg)
{
    struct shm_tier *s = arg;
    uint32_t seen = tc_ring_lock_epoch(s->ring);
    while (!atomic_load(&s->stop)) {
        tc_ring_lock_wait_epoch(s->ring, seen, WATCH_WAIT_MS);
        uint32_t now = tc_ring_lock_epoch(s->ring);
        if (now == seen || atomic_load(&s->stop)) {
            continue;
        }
        seen = now;
        pthread_mutex_lock(&s->cb_lock);
        if (s->cb_fn != NULL) {
            s->cb_fn(s->cb_arg, NULL, 0, NULL);
        }
        pthread_mutex_unlock(&s->cb_lock);
    }
    return NULL;
}

/* Stops and joins the watcher if it runs. Under watch_lock, or at close. */
static void watch_stop(struct shm_tier *s)
{
    if (!s->watching) {
        return;
    }
    atomic_store(&s->stop, 1);
    /* Wakes every watcher on the segment, ours included: the others see a
     * spurious "recheck all", which their contract allows. */
    tc_ring_lock_kick(s->ring);
    pthread_join(s->watcher, NULL);
    s->watching = 0;
}

static enum tc_status shm_on_lock_release(struct tc_tier *t, tc_tier_lock_release_fn fn, void *arg)
{
    struct shm_tier *s = (struct shm_tier *)t;
    enum tc_status st = TC_OK;
    pthread_mutex_lock(&s->watch_lock);
    /* Under cb_lock, which the watcher holds while calling: once it is
     * released here, the old callback is not running and will not run. */
    pthread_mutex_lock(&s->cb_lock);
    s->cb_fn = fn;
    s->cb_arg = arg;
    pthread_mutex_unlock(&s->cb_lock);
    if (fn == NULL) {
        watch_stop(s);
    } else if (!s->watching) {
        atomic_store(&s->stop, 0);
        if (pthread_create(&s->watcher, NULL, watch_main, s) == 0) {
            s->watching = 1;
        } else {
            pthread_mutex_lock(&s->cb_lock);
            s->cb_fn = NULL;
            s->cb_arg = NULL;
            pthread_mutex_unlock(&s->cb_lock);
            st = TC_ENOMEM;
        }
    }
    pthread_mutex_unlock(&s->watch_lock);
    return st;
}

const struct tc_tier_ops tc_tier_shm_ops = {
    .scheme = "shm",
    .abi_version = TC_TIER_ABI_VERSION,
    .caps = TC_TIER_CAP_SHARED | TC_TIER_CAP_LOCK_HOST | TC_TIER_CAP_COUNT,
    .params = shm_params,
    .usage = "shm://NAME?size=64M&mode=0600&max_item=1M&owner=USER&group=GROUP",
    .open = shm_open_tier,
    .close = shm_close,
    .ctx_init = shm_ctx_init,
    .ctx_dispose = shm_ctx_dispose,
    .get = shm_get,
    .get_many = shm_get_many,
    .set = shm_set,
    .del = shm_del,
    .clear = shm_clear,
    .sweep = shm_sweep,
    .stats = shm_stats,
    .health = shm_health,
    .lock_acquire = shm_lock_acquire,
    .lock_release = shm_lock_release,
    .lock_peek = shm_lock_peek,
    .on_lock_release = shm_on_lock_release,
    .lock_renew = shm_lock_renew,
    .count = shm_count,
};
