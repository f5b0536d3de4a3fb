/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/workload.h — what a tiercache-bench workload is, and the synthetic
 * request streams it generates: key popularity (uniform, Zipf, hot set), key
 * and value sizes per key (fixed, uniform range, weighted list), a TTL per
 * write, and a get/set/delete mix. A trace (bench/trace.h) yields the same
 * struct tb_req, so that everything downstream (driver, HTTP client,
 * simulators) takes one kind of stream.
 *
 * Streams are generated before timing, so drawing costs nothing inside the
 * timed loop.
 */
#ifndef TC_BENCH_WORKLOAD_H
#define TC_BENCH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

enum tb_op { TB_GET = 0, TB_SET = 1, TB_DEL = 2 };

/** One request. An object's id is its key ("key:<id>", padded to ksize). */
struct tb_req {
    uint64_t id;
    uint32_t vsize; /* value bytes; for a get, the size a cache-aside set writes */
    uint32_t ttl_s; /* TTL of what a set (or the set after a miss) writes; 0 = never */
    uint16_t ksize; /* key bytes; 0 = as short as "key:<id>" */
    uint8_t op;     /* enum tb_op */
    uint8_t pad_[5];
};

enum tb_dist_kind { TB_DIST_FIXED = 0, TB_DIST_UNIFORM = 1, TB_DIST_WEIGHTED = 2 };

#define TB_DIST_MAX 32

/** A distribution of sizes (bytes) or TTLs (seconds). */
struct tb_dist {
    enum tb_dist_kind kind;
    uint64_t lo, hi; /* FIXED: lo; UNIFORM: [lo, hi] */
    size_t n;        /* WEIGHTED: n values with weights */
    uint64_t vals[TB_DIST_MAX];
    double cum[TB_DIST_MAX]; /* cumulative weights, normalised to end at 1 */
};

enum tb_pop { TB_POP_UNIFORM = 0, TB_POP_ZIPF = 1, TB_POP_HOTSET = 2 };

enum tb_trace_format { TB_TRACE_NONE = 0, TB_TRACE_ORACLE = 1, TB_TRACE_CSV = 2 };

/** CSV columns, 1-based; 0 = absent. */
struct tb_csv_cols {
    int time, key, key_size, size, op, ttl;
    int header; /* the first line is a header: skipped */
    char sep;
};

#define TB_SIM_SIZES_MAX 32

/** One workload of a run (bench/spec.h fills it from the run file or flags). */
struct tb_workload {
    char name[64];
    uint64_t keys;
    enum tb_pop pop;
    double zipf;               /* TB_POP_ZIPF: the exponent */
    double hot_keys, hot_ops;  /* TB_POP_HOTSET: fraction of keys that get a fraction of ops */
    struct tb_dist key_size;   /* bytes, per key */
    struct tb_dist value_size; /* bytes, per key */
    struct tb_dist ttl;        /* seconds, per write */
    double get, set, del;      /* op mix, sums to 1 */
    int cache_aside;           /* a get that misses everywhere is followed by a set */
    int prefill;               /* write the keyspace before timing */
    double warmup;             /* seconds run before timing, not counted */
    double seconds;            /* timed */
    int threads, processes, inflight;
    double rate; /* > 0: open loop at this many requests/s in all */
    uint64_t seed;
    /* Trace replay (TB_TRACE_NONE: synthetic). */
    enum tb_trace_format trace_format;
    char trace[1024];
    struct tb_csv_cols csv;
    uint64_t trace_limit; /* read at most this many records (0 = all) */
    /* Reference simulators. */
    unsigned sim_policies; /* bit 0 LRU, bit 1 FIFO */
    size_t nsim_sizes;
    uint64_t sim_sizes[TB_SIM_SIZES_MAX];
    uint64_t sim_requests; /* synthetic: length of the stream simulated */
};

/** Fills @p w with the defaults the docs list. */
void tb_workload_defaults(struct tb_workload *w);

/** The largest value @p d can draw. */
uint64_t tb_dist_max(const struct tb_dist *d);

/** A value drawn from @p d with the random state @p rng. */
uint64_t tb_dist_draw(const struct tb_dist *d, uint64_t *rng);

/** A generator of a workload's synthetic stream (precomputed Zipf constants). */
struct tb_gen;

/** NULL when out of memory. @p w must outlive it. */
struct tb_gen *tb_gen_create(const struct tb_workload *w);
void tb_gen_destroy(struct tb_gen *g);

/** Fills @p out with @p n requests drawn with @p seed (same seed, same stream). */
void tb_gen_fill(const struct tb_gen *g, uint64_t seed, struct tb_req *out, size_t n);

/** The request of writing key @p id (prefill): its sizes as every request for it has. */
struct tb_req tb_gen_object(const struct tb_gen *g, uint64_t id);

/** Longest key tb_req_key() writes. */
#define TB_KEY_MAX 256

/** Writes the key of @p r (prefixed by @p prefix, may be "") to @p buf; returns its length. */
size_t tb_req_key(const struct tb_req *r, const char *prefix, char *buf);

#endif
