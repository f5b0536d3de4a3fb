/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libFuzzer target for the item decoder (tiers/item.c): the bytes every tier
 * reads back from a store it cannot trust. The input is split into a key
 * (first byte: its length, at most 64) and a record. Whatever the bytes,
 * tc_item_decode() and tc_item_peek() must stay inside the buffer (ASan
 * checks), agree on the shape, and accept only a record whose value_len
 * fits; a record that decodes must re-encode to the same header bytes.
 */
#include "tiers/item.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t klen = data[0] % 65u;
    if (klen > size - 1) {
        klen = size - 1;
    }
    /* Exact-size heap copies, so that any read past either is caught. */
    uint8_t *key = malloc(klen ? klen : 1);
    size_t rlen = size - 1 - klen;
    uint8_t *rec = malloc(rlen ? rlen : 1);
    if (key == NULL || rec == NULL) {
        free(key);
        free(rec);
        return 0;
    }
    memcpy(key, data + 1, klen);
    memcpy(rec, data + 1 + klen, rlen);

    struct tc_item_hdr h, p;
    enum tc_status st = tc_item_decode(rec, rlen, key, klen, &h);
    enum tc_status sp = tc_item_peek(rec, rlen, &p);
    if (st == TC_OK) {
        /* Verified implies well-formed, and the value fits the record. */
        if (sp != TC_OK || p.value_len != h.value_len ||
            (size_t)h.value_len + TC_ITEM_HDR_SIZE != rlen) {
            abort();
        }
        uint8_t again[TC_ITEM_HDR_SIZE];
        if (tc_item_encode(&h, key, klen, rec + TC_ITEM_HDR_SIZE, again) != TC_OK ||
            memcmp(again, rec, TC_ITEM_HDR_SIZE) != 0) {
            abort();
        }
    } else if (sp == TC_OK && (size_t)p.value_len + TC_ITEM_HDR_SIZE != rlen) {
        abort();
    }
    free(key);
    free(rec);
    return 0;
}
