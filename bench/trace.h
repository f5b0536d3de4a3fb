/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/trace.h — reads a cache trace into a request stream: libCacheSim's
 * oracleGeneral binary format (24-byte little-endian records: uint32 time,
 * uint64 object id, uint32 size, int64 next access) or CSV with configurable
 * columns (time, key, key size, size, op, ttl), which covers the Twitter
 * cache-trace format. A path ending in ".zst" is decompressed on the fly
 * with libzstd.
 *
 * A trace's object id is the key (a CSV key that is not a decimal number is
 * hashed to one); its size is the value size (a CSV key-size column gives the
 * key's length, and the simulators charge key + value, as libCacheSim does
 * for the Twitter format). oracleGeneral records are all gets; CSV ops map
 * get/gets to gets, set/add/replace/cas/append/prepend/incr/decr to sets and
 * delete to deletes.
 */
#ifndef TC_BENCH_TRACE_H
#define TC_BENCH_TRACE_H

#include "bench/workload.h"

#include <stddef.h>
#include <stdint.h>

/**
 * Reads the trace of @p w (w->trace, w->trace_format, w->csv, at most
 * w->trace_limit records) into a malloc'd array *out of *n requests, owned by
 * the caller (free()). A write with no TTL in the trace gets the workload's
 * TTL. Returns 0, or -1 with a message naming the file and line in @p err.
 */
int tb_trace_load(const struct tb_workload *w, struct tb_req **out, size_t *n, char *err,
                  size_t errlen);

/** "oraclegeneral" / "csv" to the format; TB_TRACE_NONE when unknown. */
enum tb_trace_format tb_trace_format_parse(const char *s);

#endif
