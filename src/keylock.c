/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/keylock.h"
#include "src/clock.h"
#include "src/log.h"

#include <event2/event.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <xxhash.h>

#define KL_BUCKETS 1024u /* per home; chains grow beyond */

enum {
    M_ACQUIRE = 1,  /* a waiter, to the name's home */
    M_REPLY_WAITER, /* a waiter, back to its own worker */
    M_RELEASE,      /* to the name's home */
    M_PEEK,         /* to the name's home */
    M_POKE,         /* to the name's home */
    M_NOTIFY,       /* from the lock tier's thread, to the name's home (or all) */
    M_REPLY_DONE,   /* a release/peek answer, back to the asking worker */
    M_RENEW,        /* to the name's home (issue 16); remaining_ms carries the ttl */
};

/* Every message but the waiter ones: the header and what it carries. */
struct kl_msg {
    struct tc_keylock_msg hdr;
    struct tc_keylock_home *from;
    tc_keylock_done_fn done;
    void *arg;
    enum tc_status st;
    uint64_t remaining_ms;
    char token[TC_LOCK_TOKEN_MAX];
    struct tc_keylock_result *result;
    int all; /* M_NOTIFY: the tier does not say which lock */
    size_t name_len;
    uint8_t name[];
};

struct kl_entry {
    struct kl_entry *next; /* hash chain */
    uint64_t hash;
    uint8_t *name;
    size_t name_len;
    int held;       /* this process holds it: token, lease_end */
    int local_only; /* held without the wide lock (no lock tier, or it failed) */
    char token[TC_LOCK_TOKEN_MAX];
    uint64_t lease_end;
    int busy; /* the wide lock is held by someone else, until busy_until */
    uint64_t busy_until;
    uint64_t next_poll;
    int acquiring; /* a wide acquire is in flight */
    int releasing; /* held, and the wide release of it is in flight */
    int inflight;  /* wide operations referring to this entry */
    struct tc_keylock_waiter *wq_head, *wq_tail;
    struct event *timer;
    struct tc_keylock_home *home;
};

struct tc_keylock_home {
    struct tc_keylock *kl;
    size_t id;
    struct event_base *base;
    struct tc_tier_ctx *ctx;
    struct event *mbox_ev;
    pthread_mutex_t mu; /* guards head, tail, closed */
    struct tc_keylock_msg *head, *tail;
    int closed;
    int closing; /* shut down: nothing new starts */
    struct kl_entry *buckets[KL_BUCKETS];
};

struct tc_keylock {
    size_t nhomes;
    _Atomic(struct tc_keylock_home *) *homes;
    struct tc_tier *tier;
    const char *scope;
    _Atomic uint64_t stats[TC_KEYLOCK_NSTATS];
    _Atomic uint64_t entries;
};

/* A lock-tier operation in flight. */
enum { W_ACQUIRE = 1, W_RELEASE, W_PEEK_POLL, W_PEEK_HELD, W_PEEK_REPLY, W_FORGET, W_RENEW };

struct kl_wide {
    struct tc_tier_lock_req req;
    struct tc_keylock_home *h;
    struct kl_entry *e; /* may be NULL */
    int kind;
    struct tc_keylock_waiter *kw;     /* W_ACQUIRE */
    struct kl_msg *m;                 /* W_RELEASE, W_PEEK_REPLY: the request to answer */
    struct tc_keylock_result *result; /* W_RELEASE: for the woken waiters */
    uint8_t *name;                    /* a copy when there is no entry */
};

static const char *const stat_names[] = {
#define TC_X(name, help) #name,
    TC_KEYLOCK_STATS(TC_X)
#undef TC_X
};
static const char *const stat_helps[] = {
#define TC_X(name, help) help,
    TC_KEYLOCK_STATS(TC_X)
#undef TC_X
};

const char *tc_keylock_stat_name(enum tc_keylock_counter s)
{
    return stat_names[s];
}

const char *tc_keylock_stat_help(enum tc_keylock_counter s)
{
    return stat_helps[s];
}

void tc_keylock_count(struct tc_keylock *kl, enum tc_keylock_counter s)
{
    atomic_fetch_add_explicit(&kl->stats[s], 1, memory_order_relaxed);
}

uint64_t tc_keylock_stat(const struct tc_keylock *kl, enum tc_keylock_counter s)
{
    return atomic_load_explicit(&((struct tc_keylock *)kl)->stats[s], memory_order_relaxed);
}

uint64_t tc_keylock_entries(const struct tc_keylock *kl)
{
    return atomic_load_explicit(&((struct tc_keylock *)kl)->entries, memory_order_relaxed);
}

const char *tc_keylock_scope(const struct tc_keylock *kl)
{
    return kl->scope;
}

struct tc_keylock_result *tc_keylock_result_ref(struct tc_keylock_result *r)
{
    if (r != NULL) {
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    }
    return r;
}

void tc_keylock_result_unref(struct tc_keylock_result *r)
{
    if (r != NULL && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
        r->free(r);
    }
}

/* ---- mailboxes ------------------------------------------------------------------------ */

static uint64_t name_hash(const void *name, size_t len)
{
    return XXH3_64bits(name, len);
}

static struct tc_keylock_home *home_of(struct tc_keylock *kl, uint64_t hash)
{
    return atomic_load_explicit(&kl->homes[hash % kl->nhomes], memory_order_acquire);
}

__attribute__((noinline)) static void msg_drop(struct tc_keylock_msg *m)
{
    if (m->kind == M_ACQUIRE || m->kind == M_REPLY_WAITER) {
        return; /* embedded in a waiter whose worker is gone too */
    }
    struct kl_msg *km = (struct kl_msg *)m;
    tc_keylock_result_unref(km->result);
    free(km);
}

/* Queues m for h's thread. A closed mailbox (its worker stopped) drops it. */
static void post(struct tc_keylock_home *h, struct tc_keylock_msg *m)
{
    if (h == NULL) {
        msg_drop(m);
        return;
    }
    m->next = NULL;
    pthread_mutex_lock(&h->mu);
    if (h->closed) {
        pthread_mutex_unlock(&h->mu);
        msg_drop(m);
        return;
    }
    if (h->tail != NULL) {
        h->tail->next = m;
    } else {
        h->head = m;
    }
    h->tail = m;
    /* Under mu: dispose frees the event only after setting closed under mu.
     * Thread-safe because main() called evthread_use_pthreads(). */
    event_active(h->mbox_ev, EV_READ, 0);
    pthread_mutex_unlock(&h->mu);
}

static struct kl_msg *msg_new(int kind, const void *name, size_t len)
{
    struct kl_msg *m = calloc(1, sizeof(*m) + len);
    if (m != NULL) {
        m->hdr.kind = kind;
        m->name_len = len;
        if (len > 0) {
            memcpy(m->name, name, len);
        }
    }
    return m;
}

static void reply_waiter(struct tc_keylock_waiter *kw, enum tc_keylock_outcome outcome)
{
    if (kw->_name != kw->_namebuf) {
        free(kw->_name); /* only on_acquire reads it, before any answer */
    }
    kw->_name = NULL;
    kw->outcome = outcome;
    kw->_msg.kind = M_REPLY_WAITER;
    post(kw->_from, &kw->_msg);
}

/* Answers a release/peek request m (reused as the reply). */
static void reply_done(struct kl_msg *m, enum tc_status st, uint64_t remaining, const char *token)
{
    m->hdr.kind = M_REPLY_DONE;
    m->st = st;
    m->remaining_ms = remaining;
    snprintf(m->token, sizeof(m->token), "%s", token ? token : "");
    tc_keylock_result_unref(m->result);
    m->result = NULL;
    post(m->from, &m->hdr);
}

/* ---- entries ---------------------------------------------------------------------------- */

static void entry_timer_cb(evutil_socket_t fd, short what, void *arg);

static struct kl_entry *entry_find(struct tc_keylock_home *h, uint64_t hash, const void *name,
                                   size_t len)
{
    for (struct kl_entry *e = h->buckets[hash % KL_BUCKETS]; e != NULL; e = e->next) {
        if (e->hash == hash && e->name_len == len && memcmp(e->name, name, len) == 0) {
            return e;
        }
    }
    return NULL;
}

static struct kl_entry *entry_get(struct tc_keylock_home *h, uint64_t hash, const void *name,
                                  size_t len)
{
    struct kl_entry *e = entry_find(h, hash, name, len);
    if (e != NULL) {
        return e;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->name = malloc(len)) == NULL ||
        (e->timer = evtimer_new(h->base, entry_timer_cb, e)) == NULL) {
        if (e != NULL) {
            free(e->name);
            free(e);
        }
        return NULL;
    }
    memcpy(e->name, name, len);
    e->name_len = len;
    e->hash = hash;
    e->home = h;
    e->next = h->buckets[hash % KL_BUCKETS];
    h->buckets[hash % KL_BUCKETS] = e;
    atomic_fetch_add_explicit(&h->kl->entries, 1, memory_order_relaxed);
    return e;
}

/* Frees e once nothing refers to it any more. */
static void entry_maybe_free(struct kl_entry *e)
{
    if (e->held || e->acquiring || e->inflight > 0 || e->wq_head != NULL) {
        return;
    }
    struct tc_keylock_home *h = e->home;
    struct kl_entry **pp = &h->buckets[e->hash % KL_BUCKETS];
    while (*pp != e) {
        pp = &(*pp)->next;
    }
    *pp = e->next;
    event_free(e->timer);
    free(e->name);
    free(e);
    atomic_fetch_sub_explicit(&h->kl->entries, 1, memory_order_relaxed);
}

static void enqueue(struct kl_entry *e, struct tc_keylock_waiter *kw)
{
    kw->_next = NULL;
    if (e->wq_tail != NULL) {
        e->wq_tail->_next = kw;
    } else {
        e->wq_head = kw;
    }
    e->wq_tail = kw;
}

/* Wakes every waiter of e: the lock may be free, or what they wait for may
 * be there. They recheck, and one of them acquires again if need be. */
static void wake_all(struct kl_entry *e, struct tc_keylock_result *result)
{
    struct tc_keylock_waiter *kw = e->wq_head;
    e->wq_head = e->wq_tail = NULL;
    e->busy = 0;
    while (kw != NULL) {
        struct tc_keylock_waiter *next = kw->_next;
        kw->result = tc_keylock_result_ref(result);
        tc_keylock_count(e->home->kl, TC_KEYLOCK_woken);
        reply_waiter(kw, TC_KEYLOCK_WOKEN);
        kw = next;
    }
}

/* When the entry next needs attention: a waiter's deadline, the end of our
 * lease, or the next look at someone else's. */
static void schedule(struct kl_entry *e, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (struct tc_keylock_waiter *kw = e->wq_head; kw != NULL; kw = kw->_next) {
        if (kw->deadline_ms < next) {
            next = kw->deadline_ms;
        }
    }
    if (e->held && e->wq_head != NULL && e->lease_end < next) {
        next = e->lease_end;
    }
    if (e->busy && e->wq_head != NULL) {
        uint64_t at = e->busy_until < e->next_poll ? e->busy_until : e->next_poll;
        if (at < next) {
            next = at;
        }
    }
    if (e->held && e->wq_head == NULL) {
        /* Nobody waits: still forget the lease when it ends. */
        next = e->lease_end;
    }
    if (next == UINT64_MAX) {
        evtimer_del(e->timer);
        return;
    }
    uint64_t in = next > now ? next - now : 0;
    struct timeval tv = {(time_t)(in / 1000), (suseconds_t)(in % 1000) * 1000};
    evtimer_add(e->timer, &tv);
}

static void local_token(char out[TC_LOCK_TOKEN_MAX])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        /* Not secret, only unique: a local token never leaves the process's
         * own check. */
        static _Atomic uint64_t seq;
        uint64_t v = atomic_fetch_add(&seq, 1) ^ tc_clock_ns();
        memcpy(raw, &v, sizeof(v));
        memcpy(raw + 8, &v, sizeof(v));
    }
    out[0] = 'p';
    for (size_t i = 0; i < sizeof(raw); i++) {
        snprintf(out + 1 + 2 * i, 3, "%02x", raw[i]);
    }
}

static void grant(struct kl_entry *e, struct tc_keylock_waiter *kw, const char *token,
                  int local_only, uint64_t now)
{
    e->held = 1;
    e->releasing = 0;
    e->local_only = local_only;
    e->busy = 0;
    snprintf(e->token, sizeof(e->token), "%s", token);
    e->lease_end = now + kw->ttl_ms;
    snprintf(kw->token, sizeof(kw->token), "%s", token);
    kw->remaining_ms = kw->ttl_ms;
    tc_keylock_count(e->home->kl, TC_KEYLOCK_acquired);
    reply_waiter(kw, TC_KEYLOCK_ACQUIRED);
    schedule(e, now);
}

static void park(struct kl_entry *e, struct tc_keylock_waiter *kw, uint64_t now)
{
    if (kw->deadline_ms <= now || e->home->closing) {
        kw->remaining_ms = e->held ? (e->lease_end > now ? e->lease_end - now : 1)
                                   : (e->busy_until > now ? e->busy_until - now : 1);
        reply_waiter(kw, e->home->closing ? TC_KEYLOCK_FAILED : TC_KEYLOCK_TIMEOUT);
        return;
    }
    tc_keylock_count(e->home->kl, TC_KEYLOCK_waits);
    enqueue(e, kw);
    schedule(e, now);
}

/* ---- the lock tier ------------------------------------------------------------------------ */

static void wide_done(struct tc_tier_lock_req *req);

static struct kl_wide *wide_new(struct tc_keylock_home *h, struct kl_entry *e, int kind,
                                const void *name, size_t len)
{
    struct kl_wide *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    w->h = h;
    w->e = e;
    w->kind = kind;
    if (e != NULL) {
        e->inflight++;
        w->req.name = e->name;
        w->req.name_len = e->name_len;
    } else {
        if ((w->name = malloc(len)) == NULL) {
            free(w);
            return NULL;
        }
        memcpy(w->name, name, len);
        w->req.name = w->name;
        w->req.name_len = len;
    }
    w->req.done = wide_done;
    w->req.arg = w;
    return w;
}

static void wide_start(struct kl_wide *w)
{
    struct tc_tier_ctx *c = w->h->ctx;
    struct kl_entry *e = w->e;
    enum tc_status st;
    /* A local lock tier completes inside the call: keep the entry alive for
     * the caller, which frees it (entry_maybe_free) when it is done with it. */
    if (e != NULL) {
        e->inflight++;
    }
    switch (w->kind) {
    case W_ACQUIRE:
        st = tc_tier_lock_acquire(c, &w->req);
        break;
    case W_RELEASE:
    case W_FORGET:
        st = tc_tier_lock_release(c, &w->req);
        break;
    case W_RENEW:
        st = tc_tier_lock_renew(c, &w->req);
        break;
    default:
        st = tc_tier_lock_peek(c, &w->req);
        break;
    }
    if (st != TC_EINPROGRESS) {
        wide_done(&w->req);
    }
    if (e != NULL) {
        e->inflight--;
    }
}

static void try_acquire(struct kl_entry *e, struct tc_keylock_waiter *kw, uint64_t now)
{
    struct tc_keylock_home *h = e->home;
    if (h->ctx == NULL) {
        char tok[TC_LOCK_TOKEN_MAX];
        local_token(tok);
        grant(e, kw, tok, 1, now);
        return;
    }
    struct kl_wide *w = wide_new(h, e, W_ACQUIRE, NULL, 0);
    if (w == NULL) {
        kw->status = TC_ENOMEM;
        reply_waiter(kw, TC_KEYLOCK_FAILED);
        return;
    }
    w->kw = kw;
    w->req.ttl_ms = kw->ttl_ms;
    e->acquiring = 1;
    wide_start(w);
}

/* Looks at someone else's lock again: free now → wake the waiters. */
static void poll_entry(struct kl_entry *e, uint64_t now)
{
    e->next_poll = now + TC_KEYLOCK_POLL_MS;
    if (e->home->closing || e->home->ctx == NULL) {
        return;
    }
    struct kl_wide *w = wide_new(e->home, e, W_PEEK_POLL, NULL, 0);
    if (w != NULL) {
        wide_start(w);
    }
}

static void wide_done(struct tc_tier_lock_req *req)
{
    struct kl_wide *w = req->arg;
    struct kl_entry *e = w->e;
    struct tc_keylock_home *h = w->h;
    uint64_t now = tc_clock_ms();
    enum tc_status st = req->status;

    if (e != NULL) {
        e->inflight--;
    }
    switch (w->kind) {
    case W_ACQUIRE: {
        struct tc_keylock_waiter *kw = w->kw;
        e->acquiring = 0;
        if (st == TC_OK) {
            grant(e, kw, req->token, 0, now);
        } else if (st == TC_EEXIST) {
            e->busy = 1;
            e->busy_until = now + (req->remaining_ms ? req->remaining_ms : 1);
            e->next_poll = now + TC_KEYLOCK_POLL_MS;
            park(e, kw, now);
        } else if (h->closing) {
            kw->status = TC_EUNAVAIL;
            reply_waiter(kw, TC_KEYLOCK_FAILED);
        } else {
            /* The lock tier failed (Redis down, ...): coalesce in this process
             * at least, rather than fail the request or let every request
             * through. */
            char tok[TC_LOCK_TOKEN_MAX];
            local_token(tok);
            tc_keylock_count(h->kl, TC_KEYLOCK_fallbacks);
            tc_log(TC_LOG_DEBUG, "lock tier failed (%s): locking in this process only",
                   tc_strerror(st));
            if (req->token[0] != '\0') {
                /* The acquire may have reached the tier before it timed out:
                 * give that lock back, or it would hold off every other
                 * process for the whole lease. */
                struct kl_wide *f = wide_new(h, NULL, W_FORGET, e->name, e->name_len);
                if (f != NULL) {
                    snprintf(f->req.token, sizeof(f->req.token), "%s", req->token);
                    wide_start(f);
                }
            }
            grant(e, kw, tok, 1, now);
        }
        /* Requests that arrived meanwhile were parked behind this one. */
        if (!e->held && !e->busy && e->wq_head != NULL) {
            wake_all(e, NULL);
        }
        break;
    }
    case W_RELEASE: {
        /* Whatever the tier said, a hold of ours is over (TC_ENOTFOUND there
         * means that the lease had already run out). */
        struct kl_entry *we = e;
        if (e != NULL && strcmp(e->token, req->token) == 0) {
            e->held = 0;
            e->releasing = 0;
        } else if (e == NULL) {
            we = entry_find(h, name_hash(req->name, req->name_len), req->name, req->name_len);
        }
        tc_keylock_count(h->kl, st == TC_OK ? TC_KEYLOCK_released : TC_KEYLOCK_release_refused);
        if (we != NULL && (st == TC_OK || we == e)) {
            wake_all(we, st == TC_OK ? w->result : NULL);
        }
        reply_done(w->m, st, 0, NULL);
        tc_keylock_result_unref(w->result);
        e = we; /* rescheduled (or freed) below */
        break;
    }
    case W_PEEK_POLL:
        if (st == TC_ENOTFOUND || (st != TC_OK && st != TC_EEXIST)) {
            /* Free, or the tier cannot tell: let the waiters try. */
            e->busy = 0;
            wake_all(e, NULL);
        } else if (st == TC_OK) {
            e->busy_until = now + (req->remaining_ms ? req->remaining_ms : 1);
        }
        break;
    case W_PEEK_HELD:
        /* We think we hold e: did a process release it for us (a PUT with
         * our token that reached another server)? */
        if (e->held && !e->local_only && !e->releasing &&
            (st == TC_ENOTFOUND || (st == TC_OK && strcmp(req->token, e->token) != 0))) {
            e->held = 0;
            wake_all(e, NULL);
        }
        break;
    case W_FORGET:
        break; /* best effort: the lease runs out otherwise */
    case W_RENEW:
        /* The tier's lease moved: so does ours, if this process holds it. */
        if (st == TC_OK && e != NULL && e->held && strcmp(e->token, req->token) == 0) {
            e->lease_end = now + req->ttl_ms;
        }
        reply_done(w->m, st, st == TC_OK ? req->ttl_ms : 0, NULL);
        break;
    case W_PEEK_REPLY:
        reply_done(w->m, st, req->remaining_ms, req->token);
        break;
    }
    if (e != NULL) {
        schedule(e, now);
        entry_maybe_free(e);
    }
    free(w->name);
    free(w);
}

/* ---- the home's side of each request --------------------------------------------------------- */

static void on_acquire(struct tc_keylock_home *h, struct tc_keylock_waiter *kw)
{
    uint64_t now = tc_clock_ms();
    if (h->closing) {
        kw->status = TC_EUNAVAIL;
        reply_waiter(kw, TC_KEYLOCK_FAILED);
        return;
    }
    struct kl_entry *e =
        entry_get(h, name_hash(kw->_name, kw->_name_len), kw->_name, kw->_name_len);
    if (e == NULL) {
        kw->status = TC_ENOMEM;
        reply_waiter(kw, TC_KEYLOCK_FAILED);
        return;
    }
    if (e->held && e->lease_end <= now) {
        /* Its lease ran out before the timer saw it. */
        e->held = 0;
        tc_keylock_count(h->kl, TC_KEYLOCK_leases_expired);
    }
    if (e->held || e->acquiring || (e->busy && e->busy_until > now)) {
        park(e, kw, now);
        entry_maybe_free(e);
        return;
    }
    try_acquire(e, kw, now);
    entry_maybe_free(e);
}

static void on_release(struct tc_keylock_home *h, struct kl_msg *m)
{
    uint64_t now = tc_clock_ms();
    struct kl_entry *e = entry_find(h, name_hash(m->name, m->name_len), m->name, m->name_len);
    int ours = e != NULL && e->held && strcmp(e->token, m->token) == 0;
    if (ours && (e->local_only || h->ctx == NULL)) {
        e->held = 0;
        tc_keylock_count(h->kl, TC_KEYLOCK_released);
        wake_all(e, m->result);
        schedule(e, now);
        entry_maybe_free(e);
        reply_done(m, TC_OK, 0, NULL);
        return;
    }
    if (h->ctx == NULL || m->token[0] == 'p' || h->closing) {
        /* A local token this home does not hold, or no wider scope to ask. */
        tc_keylock_count(h->kl, TC_KEYLOCK_release_refused);
        reply_done(m, h->closing ? TC_EUNAVAIL : TC_ENOTFOUND, 0, NULL);
        return;
    }
    struct kl_wide *w = wide_new(h, ours ? e : NULL, W_RELEASE, m->name, m->name_len);
    if (w == NULL) {
        reply_done(m, TC_ENOMEM, 0, NULL);
        return;
    }
    w->m = m;
    w->result = m->result;
    m->result = NULL;
    snprintf(w->req.token, sizeof(w->req.token), "%s", m->token);
    if (ours) {
        /* Until the tier answers, e stays held: new requests park behind it
         * and the echo of this release (the tier tells every process,
         * this one too, and may do so before it answers) changes nothing.
         * The answer wakes the waiters, with the result. */
        e->releasing = 1;
    }
    wide_start(w);
    if (ours) {
        entry_maybe_free(e);
    }
}

static void on_renew(struct tc_keylock_home *h, struct kl_msg *m)
{
    uint64_t now = tc_clock_ms(), ttl = m->remaining_ms;
    struct kl_entry *e = entry_find(h, name_hash(m->name, m->name_len), m->name, m->name_len);
    int live = e != NULL && e->held && e->lease_end > now;
    int ours = live && strcmp(e->token, m->token) == 0;
    if (ours && (e->local_only || h->ctx == NULL)) {
        e->lease_end = now + ttl;
        schedule(e, now);
        reply_done(m, TC_OK, ttl, NULL);
        return;
    }
    if (h->ctx == NULL || m->token[0] == 'p' || h->closing) {
        /* No wider scope to ask: held here by another token, or not held. */
        reply_done(m, h->closing ? TC_EUNAVAIL : live ? TC_EEXIST : TC_ENOTFOUND, 0, NULL);
        return;
    }
    struct kl_wide *w = wide_new(h, ours ? e : NULL, W_RENEW, m->name, m->name_len);
    if (w == NULL) {
        reply_done(m, TC_ENOMEM, 0, NULL);
        return;
    }
    w->m = m;
    w->req.ttl_ms = ttl;
    snprintf(w->req.token, sizeof(w->req.token), "%s", m->token);
    wide_start(w);
    if (ours) {
        entry_maybe_free(e);
    }
}

static void on_peek(struct tc_keylock_home *h, struct kl_msg *m)
{
    uint64_t now = tc_clock_ms();
    struct kl_entry *e = entry_find(h, name_hash(m->name, m->name_len), m->name, m->name_len);
    if (e != NULL && e->held && e->lease_end > now) {
        reply_done(m, TC_OK, e->lease_end - now, e->token);
        return;
    }
    if (h->ctx == NULL || h->closing) {
        reply_done(m, h->closing ? TC_EUNAVAIL : TC_ENOTFOUND, 0, NULL);
        return;
    }
    struct kl_wide *w = wide_new(h, NULL, W_PEEK_REPLY, m->name, m->name_len);
    if (w == NULL) {
        reply_done(m, TC_ENOMEM, 0, NULL);
        return;
    }
    w->m = m;
    wide_start(w);
}

/* A release elsewhere (m->all: somewhere) that the lock tier told us of. */
static void on_notify_entry(struct kl_entry *e, struct kl_msg *m, uint64_t now)
{
    if (e->held && e->releasing) {
        /* Most likely the echo of our own release: its answer wakes the
         * waiters with the holder's result; waking them now without it would
         * send each to the origin again. */
    } else if (e->held && !e->local_only) {
        if (!m->all) {
            if (m->token[0] != '\0' && strcmp(m->token, e->token) == 0) {
                e->held = 0; /* our lease, released through another server */
                wake_all(e, NULL);
            }
        } else if (!e->home->closing) {
            struct kl_wide *w = wide_new(e->home, e, W_PEEK_HELD, NULL, 0);
            if (w != NULL) {
                wide_start(w);
            }
        }
    } else if (e->busy || e->wq_head != NULL) {
        if (m->all) {
            poll_entry(e, now);
        } else {
            e->busy = 0;
            wake_all(e, NULL);
        }
    }
    schedule(e, now);
}

static void on_notify(struct tc_keylock_home *h, struct kl_msg *m)
{
    uint64_t now = tc_clock_ms();
    if (!m->all) {
        struct kl_entry *e = entry_find(h, name_hash(m->name, m->name_len), m->name, m->name_len);
        if (e != NULL) {
            on_notify_entry(e, m, now);
            entry_maybe_free(e);
        }
        return;
    }
    for (size_t b = 0; b < KL_BUCKETS; b++) {
        struct kl_entry *e = h->buckets[b];
        while (e != NULL) {
            struct kl_entry *next = e->next;
            on_notify_entry(e, m, now);
            entry_maybe_free(e);
            e = next;
        }
    }
}

static void entry_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kl_entry *e = arg;
    struct tc_keylock_home *h = e->home;
    uint64_t now = tc_clock_ms();
    (void)fd;
    (void)what;
    if (e->held && e->lease_end <= now) {
        /* The holder never released: its lease is over here and (same ttl,
         * started earlier) in the lock tier. */
        e->held = 0;
        tc_keylock_count(h->kl, TC_KEYLOCK_leases_expired);
        wake_all(e, NULL);
    } else if (e->busy && e->wq_head != NULL && (now >= e->busy_until || now >= e->next_poll)) {
        poll_entry(e, now);
    }
    /* Waiters whose time is up. */
    struct tc_keylock_waiter **pp = &e->wq_head, *last = NULL;
    while (*pp != NULL) {
        struct tc_keylock_waiter *kw = *pp;
        if (kw->deadline_ms <= now) {
            *pp = kw->_next;
            kw->remaining_ms = e->held               ? e->lease_end - now
                               : e->busy_until > now ? e->busy_until - now
                                                     : 1;
            tc_keylock_count(h->kl, TC_KEYLOCK_timeouts);
            reply_waiter(kw, TC_KEYLOCK_TIMEOUT);
        } else {
            last = kw;
            pp = &kw->_next;
        }
    }
    e->wq_tail = last;
    schedule(e, now);
    entry_maybe_free(e);
}

static void mbox_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tc_keylock_home *h = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&h->mu);
    struct tc_keylock_msg *m = h->head;
    h->head = h->tail = NULL;
    pthread_mutex_unlock(&h->mu);
    while (m != NULL) {
        struct tc_keylock_msg *next = m->next;
        struct kl_msg *km = (struct kl_msg *)m;
        switch (m->kind) {
        case M_ACQUIRE:
            on_acquire(h, (struct tc_keylock_waiter *)((char *)m -
                                                       offsetof(struct tc_keylock_waiter, _msg)));
            break;
        case M_REPLY_WAITER: {
            struct tc_keylock_waiter *kw =
                (struct tc_keylock_waiter *)((char *)m - offsetof(struct tc_keylock_waiter, _msg));
            kw->cb(kw);
            break;
        }
        case M_RELEASE:
            on_release(h, km);
            break;
        case M_PEEK:
            on_peek(h, km);
            break;
        case M_RENEW:
            on_renew(h, km);
            break;
        case M_POKE: {
            struct kl_entry *e =
                entry_find(h, name_hash(km->name, km->name_len), km->name, km->name_len);
            if (e != NULL && e->wq_head != NULL) {
                wake_all(e, NULL);
                schedule(e, tc_clock_ms());
                entry_maybe_free(e);
            }
            free(km);
            break;
        }
        case M_NOTIFY:
            on_notify(h, km);
            free(km);
            break;
        case M_REPLY_DONE:
            if (km->done != NULL) {
                km->done(km->arg, km->st, km->remaining_ms, km->token);
            }
            free(km);
            break;
        }
        m = next;
    }
}

/* ---- public calls ------------------------------------------------------------------------- */

void tc_keylock_acquire(struct tc_keylock_home *from, struct tc_keylock_waiter *kw,
                        const void *name, size_t len)
{
    kw->_from = from;
    kw->outcome = 0;
    kw->status = TC_OK;
    kw->token[0] = '\0';
    kw->remaining_ms = 0;
    kw->result = NULL;
    if (kw->ttl_ms == 0) {
        kw->ttl_ms = 1;
    }
    if (len <= sizeof(kw->_namebuf)) {
        kw->_name = kw->_namebuf;
    } else if ((kw->_name = malloc(len)) == NULL) {
        kw->status = TC_ENOMEM;
        reply_waiter(kw, TC_KEYLOCK_FAILED);
        return;
    }
    memcpy(kw->_name, name, len);
    kw->_name_len = len;
    kw->_msg.kind = M_ACQUIRE;
    post(home_of(from->kl, name_hash(name, len)), &kw->_msg);
}

static void send_req(struct tc_keylock_home *from, int kind, const void *name, size_t len,
                     const char *token, struct tc_keylock_result *result, tc_keylock_done_fn done,
                     void *arg)
{
    struct kl_msg *m = msg_new(kind, name, len);
    if (m == NULL) {
        tc_keylock_result_unref(result);
        if (done != NULL) {
            /* Answer on the caller's thread later, like every answer. */
            done(arg, TC_ENOMEM, 0, "");
        }
        return;
    }
    m->from = from;
    m->done = done;
    m->arg = arg;
    m->result = result;
    snprintf(m->token, sizeof(m->token), "%s", token ? token : "");
    post(home_of(from->kl, name_hash(name, len)), &m->hdr);
}

void tc_keylock_release(struct tc_keylock_home *from, const void *name, size_t len,
                        const char *token, struct tc_keylock_result *result,
                        tc_keylock_done_fn done, void *arg)
{
    send_req(from, M_RELEASE, name, len, token, result, done, arg);
}

void tc_keylock_renew(struct tc_keylock_home *from, const void *name, size_t len, const char *token,
                      uint64_t ttl_ms, tc_keylock_done_fn done, void *arg)
{
    struct kl_msg *m = msg_new(M_RENEW, name, len);
    if (m == NULL) {
        done(arg, TC_ENOMEM, 0, "");
        return;
    }
    m->from = from;
    m->done = done;
    m->arg = arg;
    m->remaining_ms = ttl_ms;
    snprintf(m->token, sizeof(m->token), "%s", token);
    post(home_of(from->kl, name_hash(name, len)), &m->hdr);
}

void tc_keylock_peek(struct tc_keylock_home *from, const void *name, size_t len,
                     tc_keylock_done_fn done, void *arg)
{
    send_req(from, M_PEEK, name, len, NULL, NULL, done, arg);
}

void tc_keylock_poke(struct tc_keylock_home *from, const void *name, size_t len)
{
    struct kl_msg *m = msg_new(M_POKE, name, len);
    if (m != NULL) {
        post(home_of(from->kl, name_hash(name, len)), &m->hdr);
    }
}

/* The lock tier's thread: a release anywhere. */
static void on_tier_release(void *arg, const void *name, size_t len, const char *token)
{
    struct tc_keylock *kl = arg;
    if (name == NULL) {
        for (size_t i = 0; i < kl->nhomes; i++) {
            struct kl_msg *m = msg_new(M_NOTIFY, NULL, 0);
            if (m != NULL) {
                m->all = 1;
                post(atomic_load_explicit(&kl->homes[i], memory_order_acquire), &m->hdr);
            }
        }
        return;
    }
    struct kl_msg *m = msg_new(M_NOTIFY, name, len);
    if (m != NULL) {
        snprintf(m->token, sizeof(m->token), "%s", token ? token : "");
        post(home_of(kl, name_hash(name, len)), &m->hdr);
    }
}

/* ---- life cycle ------------------------------------------------------------------------------ */

struct tc_keylock *tc_keylock_create(size_t nhomes, struct tc_tier *lock_tier)
{
    struct tc_keylock *kl = calloc(1, sizeof(*kl));
    if (kl == NULL || nhomes == 0) {
        free(kl);
        return NULL;
    }
    kl->homes = calloc(nhomes, sizeof(*kl->homes));
    if (kl->homes == NULL) {
        free(kl);
        return NULL;
    }
    kl->nhomes = nhomes;
    kl->tier = lock_tier;
    kl->scope = "worker-pool";
    if (lock_tier != NULL) {
        kl->scope = (tc_tier_caps(lock_tier) & TC_TIER_CAP_LOCK_CLUSTER) ? "cluster" : "host";
        if (tc_tier_on_lock_release(lock_tier, on_tier_release, kl) != TC_OK) {
            tc_log(TC_LOG_WARN, "locks: no release notifications from %s; waiters poll every %u ms",
                   tc_tier_uri(lock_tier), TC_KEYLOCK_POLL_MS);
        }
    }
    return kl;
}

void tc_keylock_destroy(struct tc_keylock *kl)
{
    if (kl == NULL) {
        return;
    }
    if (kl->tier != NULL) {
        tc_tier_on_lock_release(kl->tier, NULL, NULL);
    }
    for (size_t i = 0; i < kl->nhomes; i++) {
        struct tc_keylock_home *h = atomic_load(&kl->homes[i]);
        if (h != NULL) {
            pthread_mutex_destroy(&h->mu);
            free(h);
        }
    }
    free(kl->homes);
    free(kl);
}

enum tc_status tc_keylock_home_init(struct tc_keylock *kl, size_t id, struct event_base *base,
                                    struct tc_tier_ctx *lock_ctx, struct tc_keylock_home **out)
{
    struct tc_keylock_home *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return TC_ENOMEM;
    }
    h->kl = kl;
    h->id = id;
    h->base = base;
    h->ctx = lock_ctx;
    pthread_mutex_init(&h->mu, NULL);
    h->mbox_ev = event_new(base, -1, 0, mbox_cb, h);
    if (h->mbox_ev == NULL) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return TC_ENOMEM;
    }
    atomic_store_explicit(&kl->homes[id], h, memory_order_release);
    *out = h;
    return TC_OK;
}

void tc_keylock_home_shutdown(struct tc_keylock_home *h)
{
    h->closing = 1;
    for (size_t b = 0; b < KL_BUCKETS; b++) {
        for (struct kl_entry *e = h->buckets[b]; e != NULL; e = e->next) {
            struct tc_keylock_waiter *kw = e->wq_head;
            e->wq_head = e->wq_tail = NULL;
            while (kw != NULL) {
                struct tc_keylock_waiter *next = kw->_next;
                kw->status = TC_EUNAVAIL;
                reply_waiter(kw, TC_KEYLOCK_FAILED);
                kw = next;
            }
        }
    }
}

void tc_keylock_home_dispose(struct tc_keylock_home *h)
{
    if (h == NULL) {
        return;
    }
    h->closing = 1;
    pthread_mutex_lock(&h->mu);
    h->closed = 1;
    struct tc_keylock_msg *m = h->head;
    h->head = h->tail = NULL;
    event_free(h->mbox_ev);
    h->mbox_ev = NULL;
    pthread_mutex_unlock(&h->mu);
    while (m != NULL) {
        struct tc_keylock_msg *next = m->next;
        msg_drop(m);
        m = next;
    }
    for (size_t b = 0; b < KL_BUCKETS; b++) {
        struct kl_entry *e = h->buckets[b];
        while (e != NULL) {
            struct kl_entry *next = e->next;
            event_free(e->timer);
            free(e->name);
            free(e);
            e = next;
        }
        h->buckets[b] = NULL;
    }
    /* The struct itself stays until tc_keylock_destroy: other threads may
     * still post to it (and find it closed). */
}

int tc_keylock_widest_tier(struct tc_tier *const *tiers, size_t n)
{
    static const unsigned widest_first[] = {TC_TIER_CAP_LOCK_CLUSTER, TC_TIER_CAP_LOCK_HOST};
    for (size_t k = 0; k < sizeof(widest_first) / sizeof(widest_first[0]); k++) {
        for (size_t i = 0; i < n; i++) {
            if (tc_tier_caps(tiers[i]) & widest_first[k]) {
                return (int)i;
            }
        }
    }
    return -1;
}
