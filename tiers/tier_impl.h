/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * For backend authors: the layouts of struct tc_tier and struct tc_tier_ctx,
 * the backend vtable, and the URI parameter helpers.
 *
 * A backend embeds struct tc_tier as the first member of its own tier struct
 * and struct tc_tier_ctx as the first member of its ctx struct, and converts
 * back with a cast (the C idiom for "derived" structs; the first member is
 * at offset 0 by the standard). Its open() allocates and fills its own
 * members plus max_key/max_value; the registry then fills the rest.
 *
 * The tier layer (tier.c) validates requests before a backend sees them:
 * key_len in 1..max_key, value_len <= max_value, req->out non-NULL for get,
 * local_expire_ms computed for set and never already past. It also keeps the
 * common counters and checks E on every hit, so backends need not.
 */
#ifndef TC_TIERS_TIER_IMPL_H
#define TC_TIERS_TIER_IMPL_H

#include "tiers/parse.h"
#include "tiers/seal.h"
#include "tiers/tier.h"

#include <pthread.h>
#include <stdatomic.h>

/** Counters kept per ctx by the tier layer: one writer (the ctx's thread),
 * read by stats with relaxed loads, so a hit never writes a shared line. */
#define TC_TIER_COUNTERS(X)                                                                        \
    X(gets)                                                                                        \
    X(hits)                                                                                        \
    X(misses)                                                                                      \
    X(sets)                                                                                        \
    X(deletes)                                                                                     \
    X(clears)                                                                                      \
    X(errors)                                                                                      \
    X(corrupt)                                                                                     \
    X(too_big)

/** Kept likewise for lock operations; reported only by lock tiers. */
#define TC_TIER_LOCK_COUNTERS(X)                                                                   \
    X(locks_taken)                                                                                 \
    X(locks_busy)                                                                                  \
    X(locks_released)                                                                              \
    X(lock_release_refused)                                                                        \
    X(lock_errors)                                                                                 \
    X(locks_renewed)                                                                               \
    X(lock_renew_refused)

/** Kept likewise for counters and limits (issue 16); reported only by
 * TC_TIER_CAP_COUNT tiers. */
#define TC_TIER_COUNT_COUNTERS(X)                                                                  \
    X(count_adds)                                                                                  \
    X(limit_allowed)                                                                               \
    X(limit_denied)                                                                                \
    X(count_errors)

struct tc_tier_counters {
#define TC_X(name) _Atomic uint64_t name;
    TC_TIER_COUNTERS(TC_X)
    TC_TIER_LOCK_COUNTERS(TC_X)
    TC_TIER_COUNT_COUNTERS(TC_X)
#undef TC_X
};

struct tc_tier_ctx {
    struct tc_tier *tier;
    struct event_base *base; /* NULL: synchronous mode */
    struct tc_tier_counters counters;
    struct tc_seal_ctx *_seal;         /* a sealing tier's cipher context; else NULL */
    struct tc_tier_ctx *_next, *_prev; /* tier's list of live ctxs, under tier->_lock */
};

struct tc_tier {
    const struct tc_tier_ops *ops;
    /* Set by the backend's open(). */
    size_t max_key;   /* <= TC_KEY_MAX */
    size_t max_value; /* payload bytes, without the item header */
    /* Set by the registry after open(). */
    char *uri;    /* redacted */
    char *scheme; /* lower case */
    double ttl_ratio;
    uint64_t max_ttl_ms;
    struct tc_seal *seal; /* encrypt=on: values are sealed with it (tiers/seal.h); else NULL */
    /* Tier layer private. */
    pthread_mutex_t _lock;            /* guards _ctxs and _retired */
    struct tc_tier_ctx *_ctxs;        /* live contexts */
    struct tc_tier_counters _retired; /* folded in from disposed ctxs */
    struct tc_tier_rekey *_rekey; /* rekey state and census (tier.c); NULL until the first step */
};

/** The parsed URI a backend's open() receives. Opaque; use the helpers. */
struct tc_tier_params;

/*
 * A backend's URI parameters, declared once as rows: the row drives the
 * parsing, the bounds, the default, the "unknown parameter" check and
 * `tiercache --list-tiers`. A backend keeps its settings in a struct and
 * loads it with tc_tier_params_load(); bounds that depend on another
 * parameter (max_item below map_size) it checks itself after the load.
 */

/** How a parameter is read, and the type of the field it fills. */
enum tc_tier_param_kind {
    TC_TIER_PARAM_SIZE = 1, /* uint64_t: bytes, "64M", "1G" (tiers/parse.h) */
    TC_TIER_PARAM_UINT,     /* uint64_t: a decimal integer */
    TC_TIER_PARAM_OCTAL,    /* uint64_t: an octal integer, "0600" */
    TC_TIER_PARAM_MS,       /* uint64_t: a duration in ms, "250ms", "2s"; a bare number is ms */
    TC_TIER_PARAM_SECS,     /* uint64_t: a duration in ms, as MS, but a bare number is seconds */
    TC_TIER_PARAM_DOUBLE,   /* double */
    TC_TIER_PARAM_BOOL,     /* int: true/false, yes/no, on/off, 1/0 */
    TC_TIER_PARAM_CHOICE,   /* int: the index of the value in choices */
    TC_TIER_PARAM_TEXT,     /* const char *: the value as given, valid during open(); or def */
};

struct tc_tier_param {
    const char *name;
    enum tc_tier_param_kind kind;
    size_t offset;   /* of the field in the backend's settings struct (offsetof) */
    const char *def; /* the default as a user would write it; NULL: none, the field
                      * keeps what the backend put there (a default computed from
                      * other parameters, which def_help describes) */
    double min, max; /* accepted values of a number: [min, max], or (min, max] with min_open */
    int min_open;
    const char *const *choices; /* CHOICE: the accepted words, NULL-terminated */
    const char *help;           /* one line: what it sets */
    const char *def_help;       /* with def NULL: how the default is computed, or NULL */
};

/**
 * Fills @p settings from @p p by @p rows (ended by a row whose name is
 * NULL): a parameter given is parsed and checked against its row, one not
 * given takes the row's default (or keeps the field as it was, for a row
 * without one).
 * @return TC_OK; TC_EINVAL with "bad value 'X' for NAME in SCHEME:// (expected
 *         ...)" in @p err.
 */
enum tc_status tc_tier_params_load(const struct tc_tier_params *p, const struct tc_tier_param *rows,
                                   void *settings, char *err, size_t errlen);

/**
 * Receives one stored record during a rewrite walk (tc_tier_ops.rewrite):
 * its key, its verified header and a writable copy of its value
 * (h->value_len bytes). Returns 1 after changing *h and the value in place
 * (the same value_len) for the backend to store instead, 0 to leave the
 * record. Called with key NULL (and nothing else) when the backend starts a
 * step over (a retried transaction): forget what this step counted.
 */
typedef int (*tc_tier_rewrite_fn)(void *arg, const void *key, size_t key_len, struct tc_item_hdr *h,
                                  uint8_t *value);

/**
 * A backend. One const instance per scheme; the registry keeps a pointer.
 * Every function pointer is required except clear, sweep, stats, health and
 * on_invalidate.
 */
struct tc_tier_ops {
    const char *scheme;                 /* lower case, e.g. "lmdb" */
    unsigned abi_version;               /* TC_TIER_ABI_VERSION */
    unsigned caps;                      /* TC_TIER_CAP_* */
    const struct tc_tier_param *params; /* its URI parameters, ended by a row with no name */
    const char *usage;                  /* e.g. "lmdb://PATH?map_size=4G&sync=periodic" */

    /**
     * Opens the backend. On failure writes a message to @p err (naming the
     * parameter or path at fault) and returns non-TC_OK with nothing to free.
     * On success @p err stays empty unless the backend repaired something
     * the operator must hear of (tc_tier_open() says how it is logged).
     */
    enum tc_status (*open)(const struct tc_tier_params *p, struct tc_tier **out, char *err,
                           size_t errlen);
    /** Frees everything open() made, including @p t itself. */
    void (*close)(struct tc_tier *t);

    /** Makes a per-thread ctx (embedding struct tc_tier_ctx first). */
    enum tc_status (*ctx_init)(struct tc_tier *t, struct event_base *base,
                               struct tc_tier_ctx **out);
    /** Completes in-flight requests with TC_EUNAVAIL, then frees @p c. */
    void (*ctx_dispose)(struct tc_tier_ctx *c);

    /* Operations: see tier.h. A backend sets req->status before returning
     * anything but TC_EINPROGRESS, and before calling req->done otherwise. */
    enum tc_status (*get)(struct tc_tier_ctx *c, struct tc_tier_req *req);
    enum tc_status (*set)(struct tc_tier_ctx *c, struct tc_tier_req *req);
    enum tc_status (*del)(struct tc_tier_ctx *c, struct tc_tier_req *req);
    enum tc_status (*clear)(struct tc_tier_ctx *c, struct tc_tier_req *req);

    enum tc_status (*sweep)(struct tc_tier *t, uint64_t now_ms, size_t budget, uint64_t *removed);
    /** Emits backend-specific stats only; the tier layer adds the common ones. */
    void (*stats)(struct tc_tier *t, tc_tier_stat_fn emit, void *arg);
    enum tc_tier_health (*health)(struct tc_tier *t, char *detail, size_t len);

    /* Added in ABI 2; optional (NULL: TC_ENOTSUP). See tc_tier_on_invalidate(). */
    enum tc_status (*on_invalidate)(struct tc_tier *t, tc_tier_invalidate_fn fn, void *arg);

    /* Added in ABI 3; optional, all or none, with TC_TIER_CAP_LOCK_*. The
     * tier layer has checked name_len, ttl_ms and done; set req->status as
     * for the other operations, complete with tc_tier_lock_complete(). */
    enum tc_status (*lock_acquire)(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);
    enum tc_status (*lock_release)(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);
    enum tc_status (*lock_peek)(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);
    enum tc_status (*on_lock_release)(struct tc_tier *t, tc_tier_lock_release_fn fn, void *arg);

    /* Optional, for backends whose gets finish at once (their writes may
     * still be asynchronous): gets reqs[0..n) (validated
     * by the tier layer, n <= TC_TIER_GET_MANY_MAX) with the results of n
     * calls to get, setting each reqs[i]->status; free to overlap their
     * memory accesses. */
    void (*get_many)(struct tc_tier_ctx *c, struct tc_tier_req **reqs, size_t n);

    /* Added in ABI 5; optional (NULL: TC_ENOTSUP). Walks up to @p budget
     * stored records from where its last call stopped, calling @p fn on
     * each that verifies, and stores what fn rewrites in the same write
     * transaction as it read it. TC_OK when the walk reached the end (the
     * next call starts over), TC_EAGAIN when records remain. One caller at
     * a time (tc_tier_rekey_step()). */
    enum tc_status (*rewrite)(struct tc_tier *t, tc_tier_rewrite_fn fn, void *arg, size_t budget);
    /* Added in ABI 6 (issue 15); optional. list with TC_TIER_CAP_LIST: the
     * tier layer has checked limit, the cursor length and out/next; set
     * req->status, complete with tc_tier_list_complete(). */
    enum tc_status (*list)(struct tc_tier_ctx *c, struct tc_tier_list_req *req);
    enum tc_status (*on_invalidate_prefix)(struct tc_tier *t, tc_tier_invalidate_prefix_fn fn,
                                           void *arg);
    /* Added in ABI 7 (issue 16); optional. lock_renew: with the lock ops
     * (NULL: TC_ENOTSUP). count: called only with TC_TIER_CAP_COUNT; the tier layer has
     * checked the key and the parameters; complete with
     * tc_tier_count_complete(). */
    enum tc_status (*lock_renew)(struct tc_tier_ctx *c, struct tc_tier_lock_req *req);
    enum tc_status (*count)(struct tc_tier_ctx *c, struct tc_tier_count_req *req);
};

/** The mem:// backend, for programs that register it under another name
 * (tiercache-bench registers it as "ref-mutex"). */
extern const struct tc_tier_ops tc_tier_mem_ops;

/**
 * Completes an asynchronous request: records @p st in req->status and calls
 * the tier layer's completion, which counts it and runs the caller's done().
 * Call it exactly once per TC_EINPROGRESS, on the ctx's event_base thread.
 */
void tc_tier_complete(struct tc_tier_req *req, enum tc_status st);

/** tc_tier_complete() for a lock request. */
void tc_tier_lock_complete(struct tc_tier_lock_req *req, enum tc_status st);

/** tc_tier_complete() for a counter or limit request. */
void tc_tier_count_complete(struct tc_tier_count_req *req, enum tc_status st);

/**
 * Initialises the tier-layer part of a backend's ctx. Backends call it from
 * ctx_init before returning the ctx.
 */
void tc_tier_ctx_base_init(struct tc_tier_ctx *c, struct tc_tier *t, struct event_base *base);

/* ---- URI parameters ----------------------------------------------------- */

/** The scheme, lower case. */
const char *tc_tier_params_scheme(const struct tc_tier_params *p);
/** Authority and path joined as written: "tiercache", "./data/l2", "/abs/dir",
 * "127.0.0.1:6379/0". Percent-decoded. Never NULL (may be ""). */
const char *tc_tier_params_target(const struct tc_tier_params *p);
/** Host ("" if none), port (0 if none), path ("" if none; decoded, with
 * its leading '/'), userinfo user and password (NULL if none; decoded). */
const char *tc_tier_params_host(const struct tc_tier_params *p);
unsigned tc_tier_params_port(const struct tc_tier_params *p);
const char *tc_tier_params_path(const struct tc_tier_params *p);
const char *tc_tier_params_user(const struct tc_tier_params *p);
const char *tc_tier_params_password(const struct tc_tier_params *p);

/** The decoded value of query parameter @p name, or NULL if absent. */
const char *tc_tier_params_get(const struct tc_tier_params *p, const char *name);

/*
 * Typed getters. Each leaves *out = def when the parameter is absent, and on
 * a bad value writes "bad value 'X' for NAME in SCHEME:// (expected ...)"
 * to err and returns TC_EINVAL.
 */

/** Sizes: a number with an optional K, M, G or T suffix (powers of 1024, an
 * optional trailing 'B' or 'iB'), within [min, max]. */
enum tc_status tc_tier_params_size(const struct tc_tier_params *p, const char *name, uint64_t def,
                                   uint64_t min, uint64_t max, uint64_t *out, char *err,
                                   size_t errlen);
/** Plain unsigned integers in [min, max]; "0x" hex and leading "0" octal accepted
 * only when @p base is 0 (as strtoull). */
enum tc_status tc_tier_params_uint(const struct tc_tier_params *p, const char *name, int base,
                                   uint64_t def, uint64_t min, uint64_t max, uint64_t *out,
                                   char *err, size_t errlen);
/** Durations in ms: "250ms", "2s", "5m", "1h", "1d"; a bare number is in
 * @p bare_unit_ms units (1000 for seconds, 1 for milliseconds). */
enum tc_status tc_tier_params_duration(const struct tc_tier_params *p, const char *name,
                                       uint64_t bare_unit_ms, uint64_t def, uint64_t min,
                                       uint64_t max, uint64_t *out, char *err, size_t errlen);
/** Finite doubles in the interval (lo, hi] when @p lo_open, else [lo, hi]. */
enum tc_status tc_tier_params_double(const struct tc_tier_params *p, const char *name, double def,
                                     double lo, int lo_open, double hi, double *out, char *err,
                                     size_t errlen);
/** One of @p choices (NULL-terminated); *out is the index. */
enum tc_status tc_tier_params_choice(const struct tc_tier_params *p, const char *name,
                                     const char *const *choices, int def, int *out, char *err,
                                     size_t errlen);
/** true/false, yes/no, on/off, 1/0. */
enum tc_status tc_tier_params_bool(const struct tc_tier_params *p, const char *name, int def,
                                   int *out, char *err, size_t errlen);

/**
 * Writes a printf-formatted message into @p err (@p errlen bytes, always
 * NUL-terminated); a NULL @p err or zero @p errlen writes nothing. For
 * backends' open() error messages.
 */
void tc_tier_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
