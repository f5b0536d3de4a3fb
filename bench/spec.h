/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/spec.h — a tiercache-bench run: the stacks and workloads of its
 * matrix, read from a JSON run file (jansson), every unknown field refused
 * by name. docs/benchmarks.md documents each field; the one-off flags of
 * bench/main.c fill the same structures.
 */
#ifndef TC_BENCH_SPEC_H
#define TC_BENCH_SPEC_H

#include "bench/workload.h"

#include <stddef.h>
#include <stdint.h>

#define TB_MAX_TIERS     8
#define TB_MAX_STACKS    16
#define TB_MAX_WORKLOADS 16
#define TB_URI_MAX       1024

/** One configuration under test: tier URIs in process, or a server over HTTP. */
struct tb_stack {
    char name[64];
    int ntiers;
    char tiers[TB_MAX_TIERS][TB_URI_MAX];
    /* HTTP mode (url[0] != 0): the server's base URL. */
    char url[TB_URI_MAX];
    int connections; /* per thread */
    int pipeline;    /* requests in flight per connection */
    char token[512]; /* sent as Authorization: Bearer */
    int batch;       /* gets handed to the first tier this many at a time */
};

struct tb_run {
    size_t nstacks, nworkloads;
    struct tb_stack stacks[TB_MAX_STACKS];
    struct tb_workload workloads[TB_MAX_WORKLOADS];
    int repeat;
    char output[1024];
    int keep;
};

/** Fills @p s with a stack's defaults. */
void tb_stack_defaults(struct tb_stack *s);

/**
 * Reads the run file @p path into @p run. Returns 0, or -1 with a message in
 * @p err naming the field at fault, e.g. "workloads[1]: unknown field
 * 'zipff' (valid: name, keys, ...)".
 */
int tb_spec_load(const char *path, struct tb_run *run, char *err, size_t errlen);

/**
 * Parses a distribution as the flags write it: "100" (fixed), "64-1024"
 * (uniform range), "100:3,1000:1" (weighted list); sizes take K/M/G.
 * @p is_size: values are sizes (else plain numbers, seconds). 0 or -1.
 */
int tb_dist_parse(const char *s, int is_size, struct tb_dist *d);

/** Reads a token file: its first line, trimmed. 0 or -1 with @p err. */
int tb_token_read(const char *path, char *out, size_t len, char *err, size_t errlen);

/** The size= of an shm:// URI (its default, 64M, when absent); 0 if not shm. */
uint64_t tb_shm_uri_size(const char *uri);

#endif
