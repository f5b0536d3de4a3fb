/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/sim.h — exact LRU and FIFO caches at a byte capacity, with
 * libCacheSim's semantics, as references for the tier stacks:
 *
 *  - a request for a cached object is a hit (LRU moves it to the head; FIFO
 *    leaves it where it is; the cached size stays what it was inserted with);
 *  - a miss inserts the object unless it is larger than the capacity,
 *    evicting from the tail until it fits;
 *  - the object's size is the size in the request (key size + value size);
 *  - every request counts, whatever its op, as libCacheSim counts them.
 *
 * No per-object overhead is charged: the capacity is the bytes of objects.
 */
#ifndef TC_BENCH_SIM_H
#define TC_BENCH_SIM_H

#include "bench/workload.h"

#include <stddef.h>
#include <stdint.h>

enum tb_sim_policy { TB_SIM_LRU = 0, TB_SIM_FIFO = 1 };

#define TB_SIM_POLICY_LRU  (1u << TB_SIM_LRU)
#define TB_SIM_POLICY_FIFO (1u << TB_SIM_FIFO)

struct tb_sim_result {
    uint64_t requests, misses, miss_bytes;
};

/** "lru" or "fifo". */
const char *tb_sim_policy_name(enum tb_sim_policy p);

/**
 * Replays @p reqs[0..n) through policy @p p with @p capacity bytes.
 * Returns 0, or -1 when out of memory.
 */
int tb_sim_run(enum tb_sim_policy p, uint64_t capacity, const struct tb_req *reqs, size_t n,
               struct tb_sim_result *out);

#endif
