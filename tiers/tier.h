/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The tier interface: one API over every cache backend (shm ring, LMDB,
 * Redis, in-process memory, or a scheme an embedding program registers).
 *
 *    tc_tier_registry ──open(URI)──▶ tc_tier (shared by all threads)
 *                                       │  ctx_init(base) on each worker thread
 *                                       ▼
 *                                   tc_tier_ctx (one thread) ──get/set/del/clear(req)
 *                                                                   │
 *                      returns TC_OK / error ◀── completed now ─────┤
 *                      returns TC_EINPROGRESS ── req->done(req) later, once,
 *                                                on the ctx's event_base thread
 *
 * Completion model. Local tiers answer synchronously. A tier that must wait
 * (network I/O, a group commit) returns TC_EINPROGRESS and later calls
 * req->done exactly once, on the thread running the event_base the ctx was
 * created with, including on shutdown (status TC_EUNAVAIL). A ctx created
 * with a NULL event_base never returns TC_EINPROGRESS: every operation
 * completes before returning (an async tier then blocks; meant for tools, the
 * bench and tests, never for a worker thread).
 *
 * The stack applies TTL ratios here, in one place: a set carries the
 * authoritative expiry E in req->hdr.expire_ms, and tc_tier_set computes the
 * tier's local expiry (tiers/item.h) before the backend sees the request.
 *
 * Results: every call returns an enum tc_status, defined in shm/status.h
 * (included here, so that one include gives a tier user everything):
 * TC_OK, TC_ENOTFOUND, TC_ECORRUPT, TC_EINPROGRESS, ...; tc_strerror() says
 * what each means.
 *
 * Thread safety: a struct tc_tier may be used from any thread for ctx_init,
 * sweep, stats, health and accessors. A struct tc_tier_ctx belongs to the
 * thread that created it. Close a tier only after disposing of all its ctxs.
 */
#ifndef TC_TIERS_TIER_H
#define TC_TIERS_TIER_H

#include "shm/status.h"
#include "tiers/buf.h"
#include "tiers/item.h"

#include <stddef.h>
#include <stdint.h>

/* Only the name of libevent's loop type, so that this header does not pull in
 * libevent (STYLE R1, R0): remote tiers attach to the caller's event_base. */
struct event_base;

struct tc_tier;          /* an open tier; backends see its layout in tier_impl.h */
struct tc_tier_ctx;      /* per-thread context of a tier */
struct tc_tier_registry; /* scheme -> backend table */
struct tc_tier_req;

/** Bumped whenever struct tc_tier_ops or struct tc_tier_req changes shape
 * (4: parameters declared as rows, struct tc_tier_param; 5: the tier
 * layer's sealing members in struct tc_tier_req; 6: key listing and
 * published prefix clears, issue 15; 7: counters, rate limits and lock
 * renewal, struct tc_tier_count_req, issue 16; 8: tc_tier_req.etag). */
#define TC_TIER_ABI_VERSION 8u

/** Capability bits of a backend (struct tc_tier_ops.caps). */
#define TC_TIER_CAP_PERSISTENT   0x01u /* data survives a restart of the process and host */
#define TC_TIER_CAP_SHARED       0x02u /* several processes on the host see the same data */
#define TC_TIER_CAP_ASYNC        0x04u /* operations may return TC_EINPROGRESS */
#define TC_TIER_CAP_REMOTE       0x08u /* data lives across a network; may be slow or down */
#define TC_TIER_CAP_LOCK_HOST    0x10u /* lease locks shared by every process on the host */
#define TC_TIER_CAP_LOCK_CLUSTER 0x20u /* lease locks shared by every host using the tier */
/* issue 15 */
#define TC_TIER_CAP_LIST 0x100u /* lists its keys in a stable order (tc_tier_list) */
#define TC_TIER_CAP_TAGS 0x200u /* indexes keys by tag (tc_tier_req.tags, list_req.tag) */

/** Longest tag, bytes; at most TC_TAGS_MAX tags per key. */
#define TC_TAG_MAX  64u
#define TC_TAGS_MAX 16u
/* Issue 16: counters and rate limits (tc_tier_count()), shared as widely as
 * the tier's data: REMOTE -> every host, SHARED -> every process on the
 * host, neither -> this process. */
#define TC_TIER_CAP_COUNT 0x1000u

/** Longest key any tier accepts (bytes). A backend may accept less. */
#define TC_KEY_MAX 1024u

typedef void (*tc_tier_done_fn)(struct tc_tier_req *req);

/**
 * One operation. Caller-owned; after TC_EINPROGRESS it (and everything it
 * points to) must stay valid and untouched until req->done has run.
 * Members starting with '_' belong to the tier layer.
 */
struct tc_tier_req {
    /* In: all operations. */
    const void *key; /* get/set/del: the key; clear: the prefix (key_len 0 = everything) */
    size_t key_len;
    uint64_t now_ms; /* the caller's clock (STYLE R17) */

    /* set: in. hdr.expire_ms is E (0 = never); hdr.value_len is filled in. */
    const void *value;
    size_t value_len;

    /* get: out. The value (without header) replaces out->len bytes of *out. */
    struct tc_buf *out;

    /* get: out (decoded header); set: in (encoding, flags, created_ms, E). */
    struct tc_item_hdr hdr;

    /* get: out, the value's ETag (tc_item_etag) when the backend read it
     * with the record (the shm ring keeps it: tc_item_encode_guarded), so
     * that the caller need not hash the value; 0 when unknown. */
    uint64_t etag;

    /* set: the local expiry computed from E and the tier's ratio (0 = never);
     * get: out, the local expiry the tier holds for the item (0 = never). */
    uint64_t local_expire_ms;

    /* clear: out, the number of keys removed (best effort for remote tiers). */
    uint64_t count;

    /*
     * Tags (issue 15; TC_TIER_CAP_TAGS, ignored by other tiers). set: the
     * key's tags, each 1..TC_TAG_MAX bytes ended by a NUL ("a\0b\0"), or
     * tags_len 0. clear with tags_len > 0: drops the index of the one tag
     * in tags (its keys stay; the caller deletes them first).
     */
    const void *tags;
    size_t tags_len;

    /* Out: the final status; valid when the call returns anything but
     * TC_EINPROGRESS, and inside done(). TC_ENOTFOUND is a miss. */
    enum tc_status status;

    /* Completion for TC_EINPROGRESS; may be NULL only with a NULL event_base. */
    tc_tier_done_fn done;
    void *arg; /* for the caller; the tier never reads it */

    /* Tier-layer private. */
    struct tc_tier_ctx *_ctx;
    int _op;
    /* set on a sealing tier (encrypt=on): the caller's value, put back in
     * value/value_len when the set completes, and the sealed copy the
     * backend stores meanwhile (tiers/seal.h). */
    const void *_plain;
    size_t _plain_len;
    void *_sealed;
};

/** Health of a tier as the stack sees it. */
enum tc_tier_health {
    TC_HEALTH_OK = 0,
    TC_HEALTH_DEGRADED = 1, /* serving, but with errors or a circuit half-open */
    TC_HEALTH_DOWN = 2,     /* not serving; the stack skips it */
};

/** Kind of a stat passed to a tc_tier_stat_fn. */
enum tc_stat_kind {
    TC_STAT_COUNTER = 0, /* monotonically increasing */
    TC_STAT_GAUGE = 1,   /* current value */
};

/** Receives one stat: a name of [a-z0-9_] characters and its value. */
typedef void (*tc_tier_stat_fn)(void *arg, const char *name, uint64_t value,
                                enum tc_stat_kind kind);

/* ---- registry --------------------------------------------------------- */

struct tc_tier_ops; /* tier_impl.h */

/**
 * Creates a registry holding every built-in scheme. Returns NULL only when
 * out of memory. Destroy with tc_tier_registry_destroy(); tiers opened
 * through it do not depend on it afterwards.
 */
struct tc_tier_registry *tc_tier_registry_create(void);

/** Destroys @p reg. NULL is a no-op. */
void tc_tier_registry_destroy(struct tc_tier_registry *reg);

struct tc_seal; /* tiers/seal.h */

/**
 * Gives @p reg the keyring that tiers opened through it seal their values
 * with (encrypt=on, the default for persistent and remote tiers when a ring
 * is set; NULL: none, and encrypt=on is refused). @p seal must outlive every
 * tier opened afterwards.
 */
void tc_tier_registry_set_seal(struct tc_tier_registry *reg, struct tc_seal *seal);

/**
 * Adds a backend so that URIs with its scheme open through it. @p ops must
 * outlive the registry and every tier opened from it.
 * @return TC_OK; TC_EEXIST if the scheme is taken; TC_EVERSION if
 *         ops->abi_version != TC_TIER_ABI_VERSION; TC_EINVAL if a required
 *         member is missing or the scheme has characters outside [a-z0-9+.-];
 *         TC_ENOMEM.
 */
enum tc_status tc_tier_register(struct tc_tier_registry *reg, const struct tc_tier_ops *ops);

/** Returns the backend registered for @p scheme, or NULL. */
const struct tc_tier_ops *tc_tier_registry_find(const struct tc_tier_registry *reg,
                                                const char *scheme);

/**
 * Receives one line of a registry's description: a scheme (@p param NULL;
 * @p help is its usage, e.g. "lmdb://PATH?map_size=4G&sync=periodic"), or
 * one of its URI parameters with its default as written (@p def; "" when
 * it has none) and what it sets. Strings are valid during the call only.
 */
typedef void (*tc_tier_describe_fn)(void *arg, const char *scheme, const char *param,
                                    const char *def, const char *help);

/**
 * Describes every scheme of @p reg (NULL: the built-in ones) and each of its
 * parameters, the common ones (ttl_ratio, max_ttl) included, through @p fn,
 * in registration order. For `tiercache --list-tiers`.
 */
void tc_tier_registry_describe(const struct tc_tier_registry *reg, tc_tier_describe_fn fn,
                               void *arg);

/**
 * Writes the registered schemes, comma-separated ("lmdb, mem, redis, ..."),
 * into @p out (always NUL-terminated when @p len > 0).
 */
void tc_tier_registry_schemes(const struct tc_tier_registry *reg, char *out, size_t len);

/**
 * Opens a tier from @p uri (see docs/tiers.md). @p reg may be
 * NULL for the built-in schemes only. The common parameters ttl_ratio
 * (0 < r <= 1, default 1), max_ttl (a duration: 60, 60s, 500ms, 5m, 1h;
 * default none) and encrypt (on/off; see tc_tier_registry_set_seal()) are
 * handled here; every other parameter must be one the
 * backend declares.
 *
 * @param[out] out  the open tier, owned by the caller (tc_tier_close()).
 * @param[out] err  on failure, a message naming the bad part and what is
 *                  valid, e.g. "unknown parameter 'mapsize' for lmdb://
 *                  (valid: map_size, sync, ...)"; may be NULL. On success it
 *                  is empty, or holds news the caller must log at crit: the
 *                  backend found its store damaged and recreated it (lmdb://
 *                  with on_corrupt=recreate).
 * @return TC_OK; TC_EINVAL for a malformed URI, unknown scheme or parameter,
 *         or bad value; otherwise the backend's open status.
 */
enum tc_status tc_tier_open(const struct tc_tier_registry *reg, const char *uri,
                            struct tc_tier **out, char *err, size_t errlen);

/**
 * Checks @p uri as tc_tier_open() would parse it (scheme, target, every
 * parameter's name and value against the backend's rows), without opening
 * anything: for `tiercache -t`. What only the backend's open can find out
 * (a segment of another layout, an unreachable Redis) is not checked.
 * @return TC_OK; TC_EINVAL with the same message tc_tier_open() gives in
 *         @p err; TC_ENOMEM.
 */
enum tc_status tc_tier_check(const struct tc_tier_registry *reg, const char *uri, char *err,
                             size_t errlen);

/** Closes @p t and frees it. All its ctxs must be disposed of first. NULL is a no-op. */
void tc_tier_close(struct tc_tier *t);

/* ---- accessors (thread-safe) ------------------------------------------ */

/** The URI the tier was opened with, secrets replaced by "***" (tc_tier_uri_redact()). */
const char *tc_tier_uri(const struct tc_tier *t);

/**
 * Writes @p uri to @p out (@p len bytes, always NUL-terminated when len > 0,
 * cut short if it does not fit) with its secrets replaced by "***": the
 * password in the userinfo (the user stays; a lone userinfo, which Redis
 * reads as the password, goes entirely), and the value of every query
 * parameter whose name says secret (password=, pass=, pwd=, auth=, secret=,
 * token=, ...; not a path given as NAME_file=). Works on any text,
 * malformed URIs included (there it masks everything between the scheme's
 * slashes and the last '@'), so that whatever quotes a URI a user gave (an
 * error, a log line) can quote it safely. Returns @p out. Thread-safe.
 */
const char *tc_tier_uri_redact(const char *uri, char *out, size_t len);
/** The keyring a sealing tier (encrypt=on) uses, or NULL when it stores values as given. */
struct tc_seal *tc_tier_seal(const struct tc_tier *t);
/** The scheme ("shm", "lmdb", ...). */
const char *tc_tier_scheme(const struct tc_tier *t);
/** TC_TIER_CAP_* bits. */
unsigned tc_tier_caps(const struct tc_tier *t);
double tc_tier_ttl_ratio(const struct tc_tier *t);
/** 0 = no cap. */
uint64_t tc_tier_max_ttl_ms(const struct tc_tier *t);
/** Largest key and value (payload, without header) the tier accepts. A
 * sealing tier's is TC_SEAL_OVERHEAD below its backend's max_item. */
size_t tc_tier_max_key(const struct tc_tier *t);
size_t tc_tier_max_value(const struct tc_tier *t);

/* ---- per-thread contexts ---------------------------------------------- */

/**
 * Creates the calling thread's context for @p t. Async completions will run
 * on @p base (NULL: every call completes synchronously, see above).
 * @return TC_OK with *out set, or the backend's error (TC_ENOMEM, TC_EIO...).
 */
enum tc_status tc_tier_ctx_init(struct tc_tier *t, struct event_base *base,
                                struct tc_tier_ctx **out);

/**
 * Disposes of @p c on its own thread. Operations still in flight complete
 * first with TC_EUNAVAIL (their done() runs before this returns). NULL is a
 * no-op.
 */
void tc_tier_ctx_dispose(struct tc_tier_ctx *c);

/** The tier @p c belongs to. */
struct tc_tier *tc_tier_ctx_tier(const struct tc_tier_ctx *c);

/* ---- operations (on the ctx's thread) --------------------------------- */

/**
 * Looks a key up. On TC_OK the value is in req->out, the header in req->hdr
 * and the tier's local expiry in req->local_expire_ms. On a sealing tier
 * (encrypt=on) the value is opened here, before the caller sees it: req->hdr
 * then describes the plaintext (no TC_ITEM_F_ENCRYPTED, key_id 0), and a
 * record that does not open (altered, moved from another key, under a key id
 * the ring lacks, or stored in plain text) is TC_ECORRUPT. An item past its local
 * expiry or its authoritative expiry E is a miss (TC_ENOTFOUND). A record
 * that fails verification (tc_item_decode(): damaged bytes, another key's
 * record, an older format) is TC_ECORRUPT, counted in "corrupt": a miss
 * whose bad copy the caller should delete or overwrite (the stack does).
 * @return TC_OK, TC_ENOTFOUND, TC_ECORRUPT, TC_EINPROGRESS, TC_EINVAL (empty
 *         key), TC_ETOOBIG (key too long), TC_ENOMEM, or a tier error.
 */
enum tc_status tc_tier_get(struct tc_tier_ctx *c, struct tc_tier_req *req);

/**
 * Counts, in "corrupt", a value that this tier returned as a hit but that the
 * caller found unusable (it does not render as its encoding says). For the
 * stack, which then treats the copy as a corrupt miss. On the ctx's thread.
 */
void tc_tier_note_corrupt(struct tc_tier_ctx *c);

/** Requests a backend's get_many sees at once (tc_tier_get_many splits). */
#define TC_TIER_GET_MANY_MAX 64u

/**
 * Starts tc_tier_get() on each of reqs[0..n), in order, with the same
 * results: each reqs[i]->status is its final status, or TC_EINPROGRESS and
 * its done() runs later. A tier in memory (shm) overlaps the cache misses of
 * the batch, which is worth it when the keys are not in the CPU cache
 * (docs/benchmarks.md); lmdb shares one read transaction across the
 * batch; others just loop.
 */
void tc_tier_get_many(struct tc_tier_ctx *c, struct tc_tier_req **reqs, size_t n);

/**
 * Stores a key with req->hdr (E = hdr.expire_ms) at local expiry
 * tc_item_local_expiry(now, E, ratio, max_ttl). TC_ITEM_F_ENCRYPTED and
 * key_id belong to this layer: a sealing tier (encrypt=on) stores the value
 * sealed under the ring's newest key (tiers/seal.h) and sets them; any other
 * tier clears them. A write whose E has already
 * passed deletes the key instead. A value larger than tc_tier_max_value() is
 * refused with TC_ETOOBIG and nothing is stored; the tier keeps any older
 * value, so a caller that writes through several tiers deletes the key from
 * the tiers that refused it (the stack does).
 */
enum tc_status tc_tier_set(struct tc_tier_ctx *c, struct tc_tier_req *req);

/** Deletes a key. Idempotent: a missing key is TC_OK. */
enum tc_status tc_tier_del(struct tc_tier_ctx *c, struct tc_tier_req *req);

/** Removes every key starting with req->key (all keys when key_len is 0). */
enum tc_status tc_tier_clear(struct tc_tier_ctx *c, struct tc_tier_req *req);

/* ---- maintenance (any thread) ----------------------------------------- */

/**
 * Does at most @p budget units of expiry work (one unit ~ one index slot or
 * record examined) and adds the number of entries it removed to *removed.
 * @return TC_OK when a full pass has completed, TC_EAGAIN when work remains,
 *         TC_ENOTSUP for tiers that expire on their own (Redis), or an error.
 */
enum tc_status tc_tier_sweep(struct tc_tier *t, uint64_t now_ms, size_t budget, uint64_t *removed);

/**
 * Reports the tier's stats through @p emit: the common counters kept by this
 * layer ("gets", "hits", "misses", "sets", "deletes", "clears", "errors",
 * "corrupt", "too_big") and whatever the backend adds ("items", "bytes_used",
 * "evictions", ...).
 */
void tc_tier_stats(struct tc_tier *t, tc_tier_stat_fn emit, void *arg);

/* ---- encryption at rest: rekey and key census (tiers/seal.h) ---------- */

/** Records stored under one key id, as a census pass counted them. */
struct tc_tier_key_count {
    uint32_t key_id; /* 0: records not sealed (written before encrypt=on, or forged) */
    uint64_t records;
};

/** Distinct key ids a census keeps apart; records under more land in the last row. */
#define TC_TIER_CENSUS_KEYS 16u

/**
 * One step of the background rekey of a sealing tier: visits up to
 * @p budget stored records, resuming where the last step stopped, and
 * re-seals each one sealed under an older key with the ring's newest key,
 * inside the backend's own write transaction (so a client's write to the
 * same key cannot be lost to it). Counts the records per key id as it goes;
 * when a full pass ends, that count becomes the census
 * (tc_tier_key_census()). Call from one thread at a time (the sweeper).
 * @param[out] rekeyed  incremented by the records re-sealed; may be NULL.
 * @return TC_OK when this step ended a pass; TC_EAGAIN when records remain;
 *         TC_ENOTSUP when the tier does not seal or its backend cannot walk
 *         its records (redis://: see docs/security.md); or an error.
 */
enum tc_status tc_tier_rekey_step(struct tc_tier *t, size_t budget, uint64_t *rekeyed);

/**
 * The census of the last complete rekey pass: up to @p max rows (ascending
 * key id) into @p out; returns how many rows there are, 0 before the first
 * pass ends. *passes (may be NULL) gets the number of passes completed.
 * Records written, deleted or expired during a pass may be missed or
 * counted once too often: it is exact for a tier at rest. Thread-safe.
 */
size_t tc_tier_key_census(struct tc_tier *t, struct tc_tier_key_count *out, size_t max,
                          uint64_t *passes);

/* ---- cross-process invalidation --------------------------------------- */

/**
 * Receives a key that another process set or deleted in a shared tier, so
 * that the caller can drop it from its own faster tiers. @p key is only
 * valid during the call. key == NULL with key_len 0 means "notifications
 * may have been lost" (the subscription was down and is back): any key may
 * be stale, so drop what cannot wait for its local expiry.
 */
typedef void (*tc_tier_invalidate_fn)(void *arg, const void *key, size_t key_len);

/**
 * Registers @p fn (NULL unregisters) to be called when another process
 * publishes a set or delete through this tier. At most one callback per tier;
 * a new registration replaces the old one.
 *
 * Threading: @p fn runs on a thread the tier owns (never on a worker thread
 * and never concurrently with itself), so it must be thread-safe and quick
 * and must not call back into tc_tier_on_invalidate() or close the tier.
 * After this function returns, the previous callback is neither running nor
 * called again. Thread-safe.
 * @return TC_OK; TC_ENOTSUP when the tier has no cross-process invalidation
 *         (a local tier, or redis with invalidate=none).
 */
enum tc_status tc_tier_on_invalidate(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg);

/* ---- lease locks (optional: TC_TIER_CAP_LOCK_HOST / _CLUSTER) ---------- */

/*
 * A lease lock is a named mutex with an expiry, held on behalf of whoever
 * knows its token: acquiring never waits (the caller decides how to wait,
 * helped by tc_tier_on_lock_release), a holder that dies simply lets the
 * lease run out, and a release must present the token. The tier that keeps
 * the lock decides its scope: the shm tier's lock table is shared by every
 * process on the host, the Redis tier's by every host using that Redis.
 *
 * Lock names share nothing with cache keys: a tier keeps them apart.
 */

/** Longest lock name, bytes. */
#define TC_LOCK_NAME_MAX (TC_KEY_MAX + 16u)
/** Longest lease any lock tier takes (a day): longer ones are TC_EINVAL. */
#define TC_LOCK_TTL_MAX 86400000u
/** Room for a token: at most 47 characters of [0-9A-Za-z_-], NUL-terminated. */
#define TC_LOCK_TOKEN_MAX 48u

struct tc_tier_lock_req;
typedef void (*tc_tier_lock_done_fn)(struct tc_tier_lock_req *req);

/** One lock operation; caller-owned, like struct tc_tier_req. */
struct tc_tier_lock_req {
    /* In. */
    const void *name; /* 1..TC_LOCK_NAME_MAX bytes, any bytes */
    size_t name_len;
    uint64_t ttl_ms; /* acquire: lease length, 1 ms .. TC_LOCK_TTL_MAX */
    /* acquire: out (the new token); release: in; peek: out (the holder's). */
    char token[TC_LOCK_TOKEN_MAX];
    /* acquire refused, peek held: ms left on the holder's lease (>= 1). */
    uint64_t remaining_ms;
    /*
     * Out:
     *   acquire  TC_OK taken; TC_EEXIST held by someone else (remaining_ms set)
     *   release  TC_OK released; TC_ENOTFOUND not held under this token
     *            (never taken, expired, or another holder's)
     *   peek     TC_OK held (token, remaining_ms); TC_ENOTFOUND free
     *   any      TC_EINVAL bad name/ttl/token; TC_EUNAVAIL, TC_ETIMEOUT, TC_EIO
     */
    enum tc_status status;
    tc_tier_lock_done_fn done; /* as tc_tier_req.done */
    void *arg;
    /* Tier-layer private. */
    struct tc_tier_ctx *_ctx;
    int _op;
    /* set on a sealing tier (encrypt=on): the caller's value, put back in
     * value/value_len when the set completes, and the sealed copy the
     * backend stores meanwhile (tiers/seal.h). */
    const void *_plain;
    size_t _plain_len;
    void *_sealed;
};

/** Takes the lock @p req->name for req->ttl_ms unless someone holds it. */
enum tc_status tc_tier_lock_acquire(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);
/** Releases the lock if req->token is the holder's; tells every process. */
enum tc_status tc_tier_lock_release(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);
/** Says whether the lock is held, by which token, for how long yet. */
enum tc_status tc_tier_lock_peek(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);

/**
 * Receives a release (or a takeover of an expired lease) seen by a lock tier:
 * @p name and @p token (NUL-terminated; may be NULL when unknown) are only
 * valid during the call. name == NULL means "some lock may have been
 * released": the caller rechecks every lock it waits for.
 */
typedef void (*tc_tier_lock_release_fn)(void *arg, const void *name, size_t name_len,
                                        const char *token);

/**
 * Registers @p fn (NULL unregisters) to hear of releases made by any
 * process, this one included, so that waiters need not poll. Delivery is
 * best effort (a Redis subscription may drop messages): waiters still wake
 * up at the holder's lease expiry on their own. Threading as for
 * tc_tier_on_invalidate(). @return TC_OK; TC_ENOTSUP; TC_ENOMEM (no thread
 * could be started to watch).
 */
enum tc_status tc_tier_on_lock_release(struct tc_tier *t, tc_tier_lock_release_fn fn, void *arg);

/* ---- key listing and published clears (issue 15) ------------------------- */

/**
 * Receives a clear by prefix (@p prefix_len 0: everything) that another
 * process made in a shared tier, so that the caller drops those keys from
 * its own faster tiers. Threading and lifetime as tc_tier_invalidate_fn.
 */
typedef void (*tc_tier_invalidate_prefix_fn)(void *arg, const void *prefix, size_t prefix_len);

/**
 * Registers @p fn (NULL unregisters) for the clears other processes
 * publish through this tier (tc_tier_clear() publishes them where the tier
 * has an invalidation channel). As tc_tier_on_invalidate(); the two
 * callbacks run on the same thread, in the order the events were published.
 * @return TC_OK; TC_ENOTSUP.
 */
enum tc_status tc_tier_on_invalidate_prefix(struct tc_tier *t, tc_tier_invalidate_prefix_fn fn,
                                            void *arg);

/** Longest listing cursor, bytes (an opaque token a listing hands back). */
#define TC_TIER_CURSOR_MAX 1100u

struct tc_tier_list_req;
typedef void (*tc_tier_list_done_fn)(struct tc_tier_list_req *req);

/**
 * One page of a key listing; caller-owned, like struct tc_tier_req.
 *
 * The keys come in the tier's own order, and a page resumes strictly after
 * the place the previous one ended (the cursor), so that a key present for
 * the whole listing appears exactly once however the tier changes in
 * between; a key written or deleted meanwhile may or may not appear.
 */
struct tc_tier_list_req {
    /* In. */
    const void *prefix; /* only keys starting with it (prefix_len 0: all) */
    size_t prefix_len;
    const void *cursor; /* where the previous page ended; cursor_len 0: the start */
    size_t cursor_len;
    const void *tag; /* tag_len > 0 (TC_TIER_CAP_TAGS): the keys recorded under this tag
                      * instead, prefix ignored; a key that has gone since may be listed */
    size_t tag_len;
    size_t limit;    /* keys at most in this page, >= 1 (a tier may return fewer) */
    uint64_t now_ms; /* expired keys are not listed */
    /*
     * Out: the page, appended to *out as records of
     *   u32 key length (host order) | key | u64 fresh-until ms (0: never expires)
     * and the cursor of the next page in *next (left empty when the
     * listing is complete).
     */
    struct tc_buf *out;
    struct tc_buf *next;
    size_t count;          /* records appended */
    enum tc_status status; /* TC_OK; TC_EINVAL (a cursor this tier did not make); errors */
    tc_tier_list_done_fn done;
    void *arg;
    /* Tier-layer private. */
    struct tc_tier_ctx *_ctx;
};

/**
 * Lists one page of keys (TC_TIER_CAP_LIST). Completes as the other
 * operations (TC_EINPROGRESS then done()).
 * @return TC_OK, TC_EINPROGRESS, TC_EINVAL (bad cursor, limit 0), TC_ENOTSUP, errors.
 */
enum tc_status tc_tier_list(struct tc_tier_ctx *c, struct tc_tier_list_req *req);

/** Completes an asynchronous listing (for backends), as tc_tier_complete(). */
void tc_tier_list_complete(struct tc_tier_list_req *req, enum tc_status st);
/**
 * Extends the lease of lock req->name to req->ttl_ms from now if req->token
 * is the holder's (sherlock's renew).
 * @return TC_OK renewed; TC_EEXIST held under another token; TC_ENOTFOUND
 *         not held (never taken, released, or its lease ended); TC_ENOTSUP
 *         when the tier cannot renew; TC_EINVAL bad name/ttl/token; a tier
 *         error. Completes as the other lock operations.
 */
enum tc_status tc_tier_lock_renew(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);

/* ---- counters and rate limits (optional: TC_TIER_CAP_COUNT) -------------- */

/*
 * freiner's storage, as tier operations: a counter with an expiry (incr with
 * expiry and elastic expiry, get, get_expiry, reset) and the rate-limit
 * primitive (take `cost` from a limit, peek, clear), each one atomic step at
 * the tier's scope. Counter and limit state is kept apart from cache keys and
 * locks, and each strategy of a key is its own state. The local tiers decide
 * at req->now_ms; Redis at its own clock, so that every host agrees.
 */

/** What a count request does. */
enum tc_count_op {
    TC_COUNT_ADD = 1, /* counter += by (the first add, or every add with elastic, sets ttl) */
    TC_COUNT_GET,     /* the counter's value and remaining expiry */
    TC_COUNT_RESET,   /* the counter goes (value 0, no expiry) */
    TC_LIMIT_HIT,     /* takes cost from the limit if it allows it */
    TC_LIMIT_PEEK,    /* the limit's state, taking nothing */
    TC_LIMIT_CLEAR,   /* forgets the limit's state (strategy 0: every strategy) */
};

/** Rate-limit strategies (docs/api.md says which to pick). */
enum tc_limit_strategy {
    TC_LIMIT_FIXED =
        1,            /* a counter per window; the window starts at the first hit after the last */
    TC_LIMIT_SLIDING, /* two windows' counts, the previous one weighted: O(1) */
    TC_LIMIT_MOVING,  /* the exact log of the last `limit` hits: O(limit) */
    TC_LIMIT_GCRA,    /* one theoretical arrival time: O(1) */
};

/** Largest limit, cost and burst (also bounds every count a limit keeps). */
#define TC_LIMIT_MAX 1000000000ull
/** Largest limit of the moving window, whose state is one timestamp per hit. */
#define TC_LIMIT_MOVING_MAX 10000ull
/** Longest window and counter expiry (a year), ms. */
#define TC_COUNT_TTL_MAX 31536000000ull

struct tc_tier_count_req;
typedef void (*tc_tier_count_done_fn)(struct tc_tier_count_req *req);

/** One counter or limit operation; caller-owned, like struct tc_tier_req. */
struct tc_tier_count_req {
    /* In: all. */
    const void *key; /* 1..TC_LOCK_NAME_MAX bytes */
    size_t key_len;
    uint64_t now_ms; /* the local tiers' clock (Redis uses its own) */
    enum tc_count_op op;
    /* In: TC_COUNT_ADD. */
    int64_t by;
    uint64_t ttl_ms; /* 0: no expiry; else 1 .. TC_COUNT_TTL_MAX */
    int elastic;     /* ADD and fixed-window HIT: every call pushes the expiry out */
    /* In: limits. */
    enum tc_limit_strategy strategy;
    uint64_t limit;     /* 1 .. TC_LIMIT_MAX (moving: .. TC_LIMIT_MOVING_MAX) */
    uint64_t window_ms; /* 1 .. TC_COUNT_TTL_MAX */
    uint64_t cost;      /* HIT: 0 .. limit (0 only looks) */
    uint64_t burst;     /* GCRA: hits allowed at once, 1 .. TC_LIMIT_MAX (0: limit) */
    /*
     * Out (TC_OK):
     *   ADD, GET     value; ttl_ms_left (0: no expiry); overflow set when the
     *                add would leave signed 64 bits (nothing changed)
     *   HIT, PEEK    allowed (PEEK: whether a hit of cost would be);
     *                value: the count used now (hits in the window; GCRA: the
     *                burst in use); remaining; reset_ms: until the whole limit
     *                is available again; retry_ms: until a hit of cost can
     *                pass (0 when allowed); start_ms: when the current window
     *                began (fixed, sliding), the oldest hit still counted
     *                (moving), or 0
     */
    int64_t value;
    uint64_t ttl_ms_left;
    int overflow;
    int allowed;
    uint64_t remaining, reset_ms, retry_ms, start_ms;
    /* TC_OK; TC_EINVAL (bad key or parameters); TC_ENOMEM (no room for a
     * new key: the table of a local tier is full of live state); a tier error. */
    enum tc_status status;
    tc_tier_count_done_fn done; /* as tc_tier_req.done */
    void *arg;
    /* Tier-layer private. */
    struct tc_tier_ctx *_ctx;
    int _op;
};

/**
 * Runs one counter or limit operation (see struct tc_tier_count_req).
 * @return TC_OK, TC_EINPROGRESS, TC_ENOTSUP (no TC_TIER_CAP_COUNT), or an error.
 */
enum tc_status tc_tier_count(struct tc_tier_ctx *c, struct tc_tier_count_req *req);

/** "fixed", "sliding", "moving", "gcra"; NULL for another value. */
const char *tc_limit_strategy_name(enum tc_limit_strategy s);

/** Current health; @p detail (may be NULL) receives a short reason. */
enum tc_tier_health tc_tier_health(struct tc_tier *t, char *detail, size_t len);

/** "ok", "degraded" or "down". */
const char *tc_tier_health_name(enum tc_tier_health h);

#endif
