/* SPDX-License-Identifier: BSD-2-Clause */
#include "tiers/item.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static const uint64_t T0 = 1700000000000ull; /* an arbitrary "now", in ms */
static const char KEY[] = "user:42";
#define KLEN (sizeof(KEY) - 1)

static size_t make_record(uint8_t *buf, const struct tc_item_hdr *h, const void *val)
{
    cr_assert_eq(tc_item_encode(h, KEY, KLEN, val, buf), TC_OK);
    memcpy(buf + TC_ITEM_HDR_SIZE, val, h->value_len);
    return TC_ITEM_HDR_SIZE + h->value_len;
}

static enum tc_status decode(const uint8_t *buf, size_t len, struct tc_item_hdr *out)
{
    return tc_item_decode(buf, len, KEY, KLEN, out);
}

/* Recomputes the check of a record whose header was edited on purpose, as a
 * writer that knows the format would (item.h: XXH3-64 chained over header
 * bytes 0..31, key, value). */
static void reseal(uint8_t *b, size_t len)
{
    uint64_t c = XXH3_64bits(b, 32);
    c = XXH3_64bits_withSeed(KEY, KLEN, c);
    c = XXH3_64bits_withSeed(b + TC_ITEM_HDR_SIZE, len - TC_ITEM_HDR_SIZE, c);
    for (int i = 0; i < 8; i++) {
        b[32 + i] = (uint8_t)(c >> (56 - 8 * i));
    }
}

Test(item, round_trip_every_encoding_and_flag)
{
    static const uint8_t encs[] = {TC_ENC_STRING, TC_ENC_JSON, TC_ENC_BINARY};
    static const uint8_t flags[] = {0,
                                    TC_ITEM_F_ENCRYPTED,
                                    TC_ITEM_F_COMPRESSED,
                                    TC_ITEM_F_ENCRYPTED | TC_ITEM_F_COMPRESSED,
                                    TC_ITEM_F_PLAIN,
                                    TC_ITEM_F_NEGATIVE};
    uint8_t buf[TC_ITEM_HDR_SIZE + 5];
    for (size_t e = 0; e < sizeof(encs); e++) {
        for (size_t f = 0; f < sizeof(flags); f++) {
            uint32_t kid = (flags[f] & TC_ITEM_F_ENCRYPTED) ? 7u + (uint32_t)f : 0;
            struct tc_item_hdr in = {encs[e], flags[f], T0 + e, T0 + 60000 + f, 5, 0, kid}, out;
            size_t n = make_record(buf, &in, "a\0b\0c");
            cr_assert_eq(decode(buf, n, &out), TC_OK);
            cr_assert_eq(out.encoding, in.encoding);
            cr_assert_eq(out.flags, in.flags);
            cr_assert_eq(out.created_ms, in.created_ms);
            cr_assert_eq(out.expire_ms, in.expire_ms);
            cr_assert_eq(out.value_len, 5);
            cr_assert_eq(out.key_id, kid);
        }
    }
}

Test(item, byte_order_is_fixed_big_endian)
{
    struct tc_item_hdr h = {
        TC_ENC_BINARY, TC_ITEM_F_ENCRYPTED, 0x0102030405060708ull, 0x1112131415161718ull, 0, 0,
        0x31323334};
    uint8_t b[TC_ITEM_HDR_SIZE];
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, "", b), TC_OK);
    static const uint8_t want[] = {'t',  'C',  2, 40, 3, 1,    0,    0,    1,    2,    3,
                                   4,    5,    6, 7,  8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
                                   0x17, 0x18, 0, 0,  0, 0,    0x31, 0x32, 0x33, 0x34};
    cr_assert_arr_eq(b, want, sizeof(want));
    uint8_t copy[TC_ITEM_HDR_SIZE];
    memcpy(copy, b, sizeof(b));
    reseal(copy, sizeof(copy));
    cr_assert_arr_eq(copy, b, sizeof(b), "the check is not XXH3 over header, key, value");
}

Test(item, max_and_zero_values_round_trip)
{
    uint8_t b[TC_ITEM_HDR_SIZE];
    struct tc_item_hdr h = {TC_ENC_JSON, 0, UINT64_MAX, UINT64_MAX, 0, 0, 0}, out;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, NULL, b), TC_OK);
    cr_assert_eq(decode(b, sizeof(b), &out), TC_OK);
    cr_assert_eq(out.expire_ms, UINT64_MAX);
    cr_assert_eq(out.value_len, 0);
}

Test(item, encode_refuses_unknown_encoding_or_flags)
{
    uint8_t b[TC_ITEM_HDR_SIZE];
    struct tc_item_hdr h = {0, 0, T0, 0, 0, 0, 0};
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, "", b), TC_EINVAL);
    h.encoding = 4;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, "", b), TC_EINVAL);
    h.encoding = TC_ENC_STRING;
    h.flags = 0x80;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, "", b), TC_EINVAL);
    cr_assert_eq(tc_item_hdr_validate(&h), TC_EINVAL);
    h.flags = 0;
    h.key_id = 3; /* a key id without encryption */
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, "", b), TC_EINVAL);
    h.key_id = 0;
    h.value_len = 4; /* a length with no value */
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, NULL, b), TC_EINVAL);
    cr_assert_eq(tc_item_hdr_validate(&h), TC_OK);
}

/* The shm ring's records (tc_item_encode_guarded): the check slot holds the
 * value's ETag, which a read hands back; the flag never leaves the codec. */
Test(item, guarded_records_carry_the_etag_and_only_there)
{
    uint8_t buf[TC_ITEM_HDR_SIZE + 5];
    struct tc_item_hdr in = {TC_ENC_JSON, TC_ITEM_F_PLAIN, T0, T0 + 60000, 5, 0, 0}, out;
    cr_assert_eq(tc_item_encode_guarded(&in, "[1,2]", buf), TC_OK);
    memcpy(buf + TC_ITEM_HDR_SIZE, "[1,2]", 5);
    uint64_t etag = 1;
    cr_assert_eq(tc_item_decode_guarded(buf, sizeof(buf), &out, &etag), TC_OK);
    cr_assert_eq(etag, tc_item_etag(&in, "[1,2]", 5), "the slot is the value's ETag");
    cr_assert_eq(out.flags, TC_ITEM_F_PLAIN, "the guarded flag is the codec's, not the caller's");
    cr_assert_eq(out.created_ms, in.created_ms);
    cr_assert_eq(out.expire_ms, in.expire_ms);
    /* Not a self-checked record: a tier that verifies checks refuses it. */
    cr_assert_eq(decode(buf, sizeof(buf), &out), TC_ECORRUPT);
    /* A record of tc_item_encode (an older writer) reads with no ETag. */
    make_record(buf, &in, "[1,2]");
    cr_assert_eq(tc_item_decode_guarded(buf, sizeof(buf), &out, &etag), TC_OK);
    cr_assert_eq(etag, 0u);
    /* The flag is not the caller's to set. */
    in.flags = TC_ITEM_F_ETAG;
    cr_assert_eq(tc_item_encode(&in, KEY, KLEN, "[1,2]", buf), TC_EINVAL);
    cr_assert_eq(tc_item_encode_guarded(&in, "[1,2]", buf), TC_EINVAL);
}

Test(item, grace_round_trips_and_sets_freshness)
{
    uint8_t b[TC_ITEM_HDR_SIZE];
    struct tc_item_hdr h = {TC_ENC_JSON, TC_ITEM_F_GRACE, T0, T0 + 70000, 0, 10, 0}, out;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, NULL, b), TC_OK);
    cr_assert_eq(decode(b, sizeof(b), &out), TC_OK);
    cr_assert_eq(out.grace_s, 10);
    cr_assert_eq(tc_item_fresh_until(&out), T0 + 60000);
    /* Without the flag the bytes must stay zero, both ways. */
    h.flags = 0;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, NULL, b), TC_EINVAL);
    h.grace_s = 0;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, NULL, b), TC_OK);
    cr_assert_eq(decode(b, sizeof(b), &out), TC_OK);
    cr_assert_eq(tc_item_fresh_until(&out), T0 + 70000);
    b[7] = 1;
    reseal(b, sizeof(b));
    cr_assert_eq(decode(b, sizeof(b), &out), TC_ECORRUPT);
}

Test(item, every_truncation_is_refused)
{
    uint8_t buf[TC_ITEM_HDR_SIZE + 10];
    struct tc_item_hdr h = {TC_ENC_BINARY, 0, T0, T0 + 1000, 10, 0, 0}, out;
    size_t n = make_record(buf, &h, "0123456789");
    for (size_t len = 0; len < n; len++) {
        /* A fresh heap copy of exactly len bytes, so ASan catches any read past it. */
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, buf, len);
        cr_assert_eq(decode(copy, len, &out), TC_ECORRUPT, "length %zu accepted", len);
        cr_assert_eq(tc_item_peek(copy, len, &out), TC_ECORRUPT, "length %zu peeked", len);
        free(copy);
    }
    cr_assert_eq(decode(NULL, 0, &out), TC_ECORRUPT);
}

Test(item, trailing_bytes_are_refused)
{
    uint8_t buf[TC_ITEM_HDR_SIZE + 4];
    struct tc_item_hdr h = {TC_ENC_BINARY, 0, T0, 0, 3, 0, 0}, out;
    make_record(buf, &h, "abc");
    cr_assert_eq(decode(buf, TC_ITEM_HDR_SIZE + 4, &out), TC_ECORRUPT);
}

/* Issue 12: the check used to cover the header only, so a changed value
 * byte (or another key's record) was served as if it were the key's. */
Test(item, every_single_bit_flip_in_header_or_value_is_refused)
{
    uint8_t buf[TC_ITEM_HDR_SIZE + 64];
    char val[64];
    for (size_t i = 0; i < sizeof(val); i++) {
        val[i] = (char)('a' + i % 26);
    }
    struct tc_item_hdr h = {TC_ENC_STRING, 0, T0, T0 + 5, sizeof(val), 0, 0}, out;
    size_t n = make_record(buf, &h, val);
    for (size_t bit = 0; bit < n * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cr_assert_neq(decode(buf, n, &out), TC_OK, "flip of bit %zu accepted", bit);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    cr_assert_eq(decode(buf, n, &out), TC_OK);
}

Test(item, another_keys_record_is_refused)
{
    uint8_t buf[TC_ITEM_HDR_SIZE + 6];
    struct tc_item_hdr h = {TC_ENC_STRING, 0, T0, 0, 6, 0, 0}, out;
    size_t n = make_record(buf, &h, "val-k0");
    cr_assert_eq(decode(buf, n, &out), TC_OK);
    cr_assert_eq(tc_item_decode(buf, n, "user:43", 7, &out), TC_ECORRUPT);
    cr_assert_eq(tc_item_decode(buf, n, "user:4", 6, &out), TC_ECORRUPT);
    cr_assert_eq(tc_item_decode(buf, n, "user:42\0", 8, &out), TC_ECORRUPT);
    /* Bytes cannot move between key and value unnoticed: "ab"+"c" is not "a"+"bc". */
    uint8_t r1[TC_ITEM_HDR_SIZE + 1], r2[TC_ITEM_HDR_SIZE + 2];
    struct tc_item_hdr h1 = {TC_ENC_BINARY, 0, T0, 0, 1, 0, 0};
    struct tc_item_hdr h2 = {TC_ENC_BINARY, 0, T0, 0, 2, 0, 0};
    cr_assert_eq(tc_item_encode(&h1, "ab", 2, "c", r1), TC_OK);
    cr_assert_eq(tc_item_encode(&h2, "a", 1, "bc", r2), TC_OK);
    cr_assert(memcmp(r1 + 32, r2 + 32, 8) != 0);
    /* peek does not verify: it is for records whose value is not handed out. */
    cr_assert_eq(tc_item_peek(buf, n, &out), TC_OK);
    buf[n - 1] ^= 1;
    cr_assert_eq(tc_item_peek(buf, n, &out), TC_OK);
    cr_assert_eq(decode(buf, n, &out), TC_ECORRUPT);
}

Test(item, version_1_records_are_refused)
{
    /* A record as tiercache wrote it before the check covered key and
     * value: 32-byte header, version 1. It must read as a miss. */
    uint8_t b[32 + 3] = {'t', 'C', 1, 32, TC_ENC_STRING, 0, 0, 0};
    b[27] = 3;
    uint32_t c = XXH32(b, 28, 0);
    b[28] = (uint8_t)(c >> 24), b[29] = (uint8_t)(c >> 16), b[30] = (uint8_t)(c >> 8);
    b[31] = (uint8_t)c;
    memcpy(b + 32, "abc", 3);
    struct tc_item_hdr out;
    cr_assert_neq(decode(b, sizeof(b), &out), TC_OK);
}

Test(item, other_version_and_unknown_flags_are_version_errors)
{
    uint8_t b[TC_ITEM_HDR_SIZE];
    struct tc_item_hdr h = {TC_ENC_STRING, 0, T0, 0, 0, 0, 0}, out;
    cr_assert_eq(tc_item_encode(&h, KEY, KLEN, NULL, b), TC_OK);
    b[2] = 3;
    reseal(b, sizeof(b));
    cr_assert_eq(decode(b, sizeof(b), &out), TC_EVERSION);
    b[2] = TC_ITEM_VERSION;
    b[5] = 0x40;
    reseal(b, sizeof(b));
    cr_assert_eq(decode(b, sizeof(b), &out), TC_EVERSION);
    b[5] = 0;
    b[4] = 9;
    reseal(b, sizeof(b));
    cr_assert_eq(decode(b, sizeof(b), &out), TC_ECORRUPT);
    b[4] = TC_ENC_STRING;
    b[28] = 1; /* a key id without the encrypted flag */
    reseal(b, sizeof(b));
    cr_assert_eq(decode(b, sizeof(b), &out), TC_ECORRUPT);
    b[28] = 0;
    b[24] = 0xff; /* value_len far past the buffer */
    reseal(b, sizeof(b));
    cr_assert_eq(decode(b, sizeof(b), &out), TC_ECORRUPT);
}

Test(item, random_bytes_never_decode_out_of_bounds)
{
    uint64_t s = 88172645463325252ull;
    for (int round = 0; round < 200000; round++) {
        size_t len = (size_t)(round % 80);
        uint8_t *b = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            b[i] = (uint8_t)s;
        }
        if (len >= 4 && (round & 1)) {
            b[0] = TC_ITEM_MAGIC0; /* half the rounds get past the magic check */
            b[1] = TC_ITEM_MAGIC1;
            b[2] = TC_ITEM_VERSION;
            b[3] = TC_ITEM_HDR_SIZE;
        }
        struct tc_item_hdr out;
        enum tc_status st = decode(b, len, &out);
        if (st == TC_OK) {
            cr_assert_leq(out.value_len + (size_t)TC_ITEM_HDR_SIZE, len);
        }
        st = tc_item_peek(b, len, &out);
        if (st == TC_OK) {
            cr_assert_leq(out.value_len + (size_t)TC_ITEM_HDR_SIZE, len);
        }
        free(b);
    }
}

/* ---- TTL arithmetic ---- */

Test(ttl, ratio_one_keeps_full_time)
{
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 60000, 1.0, 0), T0 + 60000);
}

Test(ttl, ratio_half_halves_remaining)
{
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 60000, 0.5, 0), T0 + 30000);
    /* Back-fill later: uses the remaining 20 s, not the original 60 s. */
    cr_assert_eq(tc_item_local_expiry(T0 + 40000, T0 + 60000, 0.5, 0), T0 + 50000);
}

Test(ttl, repeated_backfill_never_drifts_past_E)
{
    uint64_t E = T0 + 3600000, now = T0;
    for (int i = 0; i < 1000; i++) {
        uint64_t local = tc_item_local_expiry(now, E, 0.9, 0);
        cr_assert_leq(local, E);
        cr_assert_gt(local, now);
        now = local - 1; /* the next back-fill happens just before the local copy expires */
        if (now <= T0) {
            break;
        }
    }
}

Test(ttl, tiny_ratio_still_stores_at_least_one_ms)
{
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 1000, 1e-12, 0), T0 + 1);
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 1, 1e-3, 0), T0 + 1);
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 1000000, 0.001, 0), T0 + 1000);
}

Test(ttl, max_ttl_caps)
{
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 3600000, 0.5, 60000), T0 + 60000);
    cr_assert_eq(tc_item_local_expiry(T0, T0 + 10000, 1.0, 60000), T0 + 10000);
}

Test(ttl, no_expiry_only_capped_by_max_ttl)
{
    cr_assert_eq(tc_item_local_expiry(T0, 0, 0.5, 0), 0);
    cr_assert_eq(tc_item_local_expiry(T0, 0, 0.5, 5000), T0 + 5000);
    cr_assert_eq(tc_item_local_expiry(UINT64_MAX - 10, 0, 1.0, 5000), UINT64_MAX);
}

Test(ttl, E_past_or_now_is_expired)
{
    uint64_t l = tc_item_local_expiry(T0, T0 - 1, 1.0, 0);
    cr_assert_leq(l, T0);
    l = tc_item_local_expiry(T0, T0, 0.5, 1000);
    cr_assert_leq(l, T0);
    cr_assert(tc_item_expired(T0, T0));
    cr_assert(tc_item_expired(T0 - 1, T0));
    cr_assert_not(tc_item_expired(T0 + 1, T0));
    cr_assert_not(tc_item_expired(0, T0));
}

Test(ttl, huge_values_do_not_overflow)
{
    uint64_t l = tc_item_local_expiry(1, UINT64_MAX, 0.999999999, 0);
    cr_assert_leq(l, UINT64_MAX);
    cr_assert_gt(l, 1);
    cr_assert_eq(tc_item_local_expiry(0, UINT64_MAX, 1.0, 0), UINT64_MAX);
}

Test(item, encoding_names)
{
    cr_assert_str_eq(tc_item_encoding_name(TC_ENC_STRING), "string");
    cr_assert_str_eq(tc_item_encoding_name(TC_ENC_JSON), "json");
    cr_assert_str_eq(tc_item_encoding_name(TC_ENC_BINARY), "binary");
    cr_assert_null(tc_item_encoding_name(0));
}
