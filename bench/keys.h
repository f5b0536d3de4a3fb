/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/keys.h — the keys and random numbers every bench program shares, so
 * that tiercache-lmdb-raw reads exactly the keys tiercache-bench wrote.
 */
#ifndef TC_BENCH_KEYS_H
#define TC_BENCH_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* "key:<k>" without snprintf, which would cost more than a shm hit. buf
 * must hold 24 bytes. */
static inline size_t fmt_key(char *buf, uint64_t k)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + k % 10);
        k /= 10;
    } while (k != 0);
    memcpy(buf, "key:", 4);
    for (size_t i = 0; i < n; i++) {
        buf[4 + i] = digits[n - 1 - i];
    }
    return 4 + n;
}

#endif
