/* SPDX-License-Identifier: BSD-2-Clause */
#include "tiers/item.h"

#include <string.h>
#include "shm/xxh.h"

/* Where the check starts: it covers every header byte before it. */
#define TC_ITEM_CHECK_AT TC_ITEM_FIELDS_SIZE
_Static_assert(TC_ITEM_CHECK_AT + 8u == TC_ITEM_HDR_SIZE, "the check ends the header");

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static int encoding_valid(unsigned enc)
{
    return enc == TC_ENC_STRING || enc == TC_ENC_JSON || enc == TC_ENC_BINARY;
}

const char *tc_item_encoding_name(unsigned encoding)
{
    switch (encoding) {
    case TC_ENC_STRING:
        return "string";
    case TC_ENC_JSON:
        return "json";
    case TC_ENC_BINARY:
        return "binary";
    }
    return NULL;
}

/* The check (see item.h): header bytes 0..31, then the key, then the value,
 * each hashed with the previous result as its seed. */
static uint64_t item_check(const uint8_t *hdr, const void *key, size_t key_len, const void *value,
                           size_t value_len)
{
    uint64_t h = XXH3_64bits(hdr, TC_ITEM_CHECK_AT);
    h = XXH3_64bits_withSeed(key, key_len, h);
    return XXH3_64bits_withSeed(value, value_len, h);
}

enum tc_status tc_item_hdr_validate(const struct tc_item_hdr *h)
{
    if (!encoding_valid(h->encoding) || (h->flags & ~(TC_ITEM_F_KNOWN & ~TC_ITEM_F_ETAG)) != 0 ||
        (!(h->flags & TC_ITEM_F_GRACE) && h->grace_s != 0) ||
        (!(h->flags & TC_ITEM_F_ENCRYPTED) && h->key_id != 0)) {
        return TC_EINVAL;
    }
    return TC_OK;
}

enum tc_status tc_item_encode_fields(const struct tc_item_hdr *h, uint8_t out[TC_ITEM_FIELDS_SIZE])
{
    if (tc_item_hdr_validate(h) != TC_OK) {
        return TC_EINVAL;
    }
    out[0] = TC_ITEM_MAGIC0;
    out[1] = TC_ITEM_MAGIC1;
    out[2] = TC_ITEM_VERSION;
    out[3] = TC_ITEM_HDR_SIZE;
    out[4] = h->encoding;
    out[5] = h->flags;
    out[6] = (uint8_t)(h->grace_s >> 8);
    out[7] = (uint8_t)h->grace_s;
    put_be64(out + 8, h->created_ms);
    put_be64(out + 16, h->expire_ms);
    put_be32(out + 24, h->value_len);
    put_be32(out + 28, h->key_id);
    return TC_OK;
}

enum tc_status tc_item_encode(const struct tc_item_hdr *h, const void *key, size_t key_len,
                              const void *value, uint8_t out[TC_ITEM_HDR_SIZE])
{
    if ((value == NULL && h->value_len != 0) || tc_item_encode_fields(h, out) != TC_OK) {
        return TC_EINVAL;
    }
    put_be64(out + TC_ITEM_CHECK_AT, item_check(out, key, key_len, value, h->value_len));
    return TC_OK;
}

/* Everything but the check: shape, length, version, fields. */
static enum tc_status parse(const uint8_t *p, size_t len, struct tc_item_hdr *h)
{
    if (p == NULL || len < TC_ITEM_HDR_SIZE) {
        return TC_ECORRUPT;
    }
    if (p[0] != TC_ITEM_MAGIC0 || p[1] != TC_ITEM_MAGIC1) {
        return TC_ECORRUPT;
    }
    if (p[2] != TC_ITEM_VERSION || p[3] != TC_ITEM_HDR_SIZE) {
        return TC_EVERSION;
    }
    if ((p[5] & ~TC_ITEM_F_KNOWN) != 0) {
        return TC_EVERSION;
    }
    uint32_t kid = get_be32(p + 28);
    if (!encoding_valid(p[4]) || (!(p[5] & TC_ITEM_F_GRACE) && (p[6] != 0 || p[7] != 0)) ||
        (!(p[5] & TC_ITEM_F_ENCRYPTED) && kid != 0)) {
        return TC_ECORRUPT;
    }
    uint32_t vlen = get_be32(p + 24);
    if ((uint64_t)vlen != (uint64_t)(len - TC_ITEM_HDR_SIZE)) {
        return TC_ECORRUPT;
    }
    h->encoding = p[4];
    h->flags = p[5];
    h->created_ms = get_be64(p + 8);
    h->expire_ms = get_be64(p + 16);
    h->value_len = vlen;
    h->grace_s = (uint16_t)(p[6] << 8 | p[7]);
    h->key_id = kid;
    return TC_OK;
}

enum tc_status tc_item_peek(const void *buf, size_t len, struct tc_item_hdr *h)
{
    return parse(buf, len, h);
}

uint64_t tc_item_etag(const struct tc_item_hdr *h, const void *value, size_t len)
{
    uint8_t enc = h->encoding;
    uint64_t seed = XXH3_64bits_withSeed(&enc, 1, h->created_ms);
    return XXH3_64bits_withSeed(len ? value : "", len, seed);
}

enum tc_status tc_item_encode_guarded(const struct tc_item_hdr *h, const void *value,
                                      uint8_t out[TC_ITEM_HDR_SIZE])
{
    if ((value == NULL && h->value_len != 0) || tc_item_encode_fields(h, out) != TC_OK) {
        return TC_EINVAL;
    }
    out[5] |= TC_ITEM_F_ETAG;
    put_be64(out + TC_ITEM_CHECK_AT, tc_item_etag(h, value, h->value_len));
    return TC_OK;
}

enum tc_status tc_item_decode_guarded(const void *hdr, size_t len, struct tc_item_hdr *h,
                                      uint64_t *etag)
{
    /* parse() reads the header's bytes only, and none when len is short. */
    enum tc_status st = parse(hdr, len, h);
    *etag = 0;
    if (st == TC_OK && (h->flags & TC_ITEM_F_ETAG)) {
        *etag = get_be64((const uint8_t *)hdr + TC_ITEM_CHECK_AT);
        h->flags &= (uint8_t)~TC_ITEM_F_ETAG;
    }
    return st;
}

enum tc_status tc_item_decode(const void *buf, size_t len, const void *key, size_t key_len,
                              struct tc_item_hdr *h)
{
    const uint8_t *p = buf;
    struct tc_item_hdr got;
    enum tc_status st = parse(p, len, &got);
    if (st != TC_OK) {
        return st;
    }
    if (got.flags & TC_ITEM_F_ETAG) {
        return TC_ECORRUPT; /* a guarded store's record has no check to verify */
    }
    /* Last, because it reads every byte: a record whose shape is wrong is
     * refused without hashing a possibly huge value. */
    if (get_be64(p + TC_ITEM_CHECK_AT) !=
        item_check(p, key, key_len, p + TC_ITEM_HDR_SIZE, got.value_len)) {
        return TC_ECORRUPT;
    }
    *h = got;
    return TC_OK;
}

uint64_t tc_item_local_expiry(uint64_t now_ms, uint64_t expire_ms, double ratio,
                              uint64_t max_ttl_ms)
{
    uint64_t span;

    if (expire_ms == 0) {
        /* No authoritative expiry: only the tier's cap can bound it. */
        if (max_ttl_ms == 0) {
            return 0;
        }
        return now_ms > UINT64_MAX - max_ttl_ms ? UINT64_MAX : now_ms + max_ttl_ms;
    }
    if (expire_ms <= now_ms) {
        return expire_ms;
    }
    uint64_t remaining = expire_ms - now_ms;
    if (!(ratio > 0.0) || ratio >= 1.0) {
        /* r = 1 (and, defensively, an out-of-range r) keeps the full time;
         * the registry refuses r outside (0, 1] before we get here. */
        span = remaining;
    } else {
        double d = (double)remaining * ratio;
        /* d < remaining mathematically, but rounding near 2^64 could reach
         * it; converting a double >= 2^64 to uint64_t is undefined. */
        span = d >= (double)remaining ? remaining : (uint64_t)d;
    }
    if (span == 0) {
        span = 1;
    }
    if (max_ttl_ms != 0 && span > max_ttl_ms) {
        span = max_ttl_ms;
    }
    return now_ms + span; /* span <= remaining, so this is <= E: no overflow */
}
