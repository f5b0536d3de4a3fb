/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Sizes and durations as people write them, in tier URIs and in the server's
 * configuration alike ("64M", "1.5G", "250ms", "5m"): one parser for both,
 * so that "16M" means the same thing everywhere. Depends on libc only; src/
 * may include it (tiers/tier_impl.h is for backend authors).
 */
#ifndef TC_TIERS_PARSE_H
#define TC_TIERS_PARSE_H

#include "shm/status.h"

#include <stdint.h>

/**
 * A size: a decimal number (a fraction allowed) with an optional K, M, G or
 * T suffix (powers of 1024; "Ki", "KiB" and "KB" read the same), a whole
 * number of bytes below 2^64.
 * @return TC_OK with *out set; TC_EINVAL for anything else (NULL included).
 */
enum tc_status tc_parse_size(const char *s, uint64_t *out);

/**
 * A duration in ms: a number with a unit, "250ms", "2s", "5m", "1h", "1d";
 * a bare number counts in @p bare_unit_ms units (1000: seconds, 1: ms).
 * @return TC_OK with *out set; TC_EINVAL otherwise.
 */
enum tc_status tc_parse_duration(const char *s, uint64_t bare_unit_ms, uint64_t *out);

#endif
