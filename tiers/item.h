/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The item header: the few bytes that travel in front of every value, the
 * same in every tier, and the TTL-ratio arithmetic (DESIGN.md "The item").
 *
 * Wire layout, 40 bytes, all integers big-endian:
 *
 *    0    2    3    4    5    6      8            16           24     28     32           40
 *    +----+----+----+----+----+------+------------+------------+------+------+------------+
 *    |'t''C'| ver| hl | enc| flg| rsvd | created_ms | expire_ms E| vlen | kid  |   check    |
 *    +----+----+----+----+----+------+------------+------------+------+------+------------+
 *
 *  ver    format version (TC_ITEM_VERSION); another version is refused, so
 *         records written by an older tiercache read as misses (it is a cache).
 *  hl     header length in bytes (40); lets a future version append fields.
 *  enc    enum tc_item_encoding.
 *  flg    TC_ITEM_F_* bits; an unknown bit is refused (we could not honour it).
 *         PLAIN: the writer found the value to be its own JSON string body
 *         (UTF-8, no control byte, '"' or '\\'), so a reader copies it
 *         without scanning; set only with encoding string. NEGATIVE: the
 *         origin answered 404/410 for this key; the value is empty and
 *         means "no value" until E (negative caching). ETAG: the record is
 *         kept by a store whose own checksum covers its every byte and is
 *         checked on every read (the shm ring), and the check slot holds
 *         the value's ETag (tc_item_etag) instead of the check, so that a
 *         hit there needs no second pass over the value
 *         (tc_item_encode_guarded); tc_item_decode refuses such a record.
 *  rsvd   grace in seconds when flg has TC_ITEM_F_GRACE, else zero.
 *  E      authoritative expiry, absolute ms since the Unix epoch; 0 = never.
 *         With a grace period, E is the end of the grace: the value is
 *         fresh until E - grace, and may be served stale until E.
 *  vlen   length of the value that follows the header.
 *  kid    key id of the value's encryption key (TC_ITEM_F_ENCRYPTED), else 0.
 *  check  XXH3-64 of bytes 0..31, then the key the record is stored under,
 *         then the value (each hashed with the previous result as seed, so
 *         that no byte can move between key and value unnoticed).
 *
 * Why the key and the value are in the check: a record altered on disk, in
 * Redis or in a shared segment, or another key's record handed back for
 * this key, must be a miss and never a wrong answer. A record carries no
 * copy of its key; the reader supplies the key it asked for, and a record
 * stored under any other key fails the check. XXH3 is not a MAC: it catches
 * damage and mix-ups, not a forger (encryption at rest is for that).
 *
 * Everything decoded here may come from another program (Redis, a shared LMDB
 * file, a shm segment): the decoder checks every byte it relies on and never
 * reads past the buffer it is given.
 */
#ifndef TC_TIERS_ITEM_H
#define TC_TIERS_ITEM_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>

#define TC_ITEM_HDR_SIZE 40u
/** Bytes 0..31 of the header: every field but the check (TC_ITEM_F_ENCRYPTED:
 * with the key, the additional authenticated data of the value). */
#define TC_ITEM_FIELDS_SIZE 32u
#define TC_ITEM_VERSION     2u
#define TC_ITEM_MAGIC0      0x74u /* 't' */
#define TC_ITEM_MAGIC1      0x43u /* 'C' */

/** Largest value an item can describe (vlen is 32 bits). */
#define TC_ITEM_VALUE_MAX UINT32_MAX

/** How the value bytes are to be interpreted by the HTTP layer. */
enum tc_item_encoding {
    TC_ENC_STRING = 1, /* UTF-8 text, returned as a JSON string */
    TC_ENC_JSON = 2,   /* serialized JSON text, returned as the same JSON value */
    TC_ENC_BINARY = 3, /* opaque bytes, returned base64 or raw */
};

#define TC_ITEM_F_ENCRYPTED  0x01u
#define TC_ITEM_F_COMPRESSED 0x02u
#define TC_ITEM_F_GRACE      0x04u /* rsvd holds the grace in seconds */
#define TC_ITEM_F_PLAIN      0x08u /* string value needing no JSON escaping */
#define TC_ITEM_F_NEGATIVE   0x10u /* the origin has no value for this key */
#define TC_ITEM_F_ETAG       0x20u /* check slot = ETag; the store guards the bytes */
#define TC_ITEM_F_KNOWN                                                                            \
    (TC_ITEM_F_ENCRYPTED | TC_ITEM_F_COMPRESSED | TC_ITEM_F_GRACE | TC_ITEM_F_PLAIN |              \
     TC_ITEM_F_NEGATIVE | TC_ITEM_F_ETAG)
#define TC_ITEM_GRACE_MAX_S 65535u

/** The decoded header. Plain data; copy freely. */
struct tc_item_hdr {
    uint8_t encoding;    /* enum tc_item_encoding */
    uint8_t flags;       /* TC_ITEM_F_* */
    uint64_t created_ms; /* when the client wrote it */
    uint64_t expire_ms;  /* authoritative expiry E; 0 = never */
    uint32_t value_len;  /* bytes of value following the header */
    uint16_t grace_s;    /* with TC_ITEM_F_GRACE: fresh until expire_ms - grace */
    uint32_t key_id;     /* with TC_ITEM_F_ENCRYPTED: the encryption key's id, else 0 */
};

/** When the item stops being fresh (0 = never): E, or E - grace. */
static inline uint64_t tc_item_fresh_until(const struct tc_item_hdr *h)
{
    if (h->expire_ms == 0 || !(h->flags & TC_ITEM_F_GRACE)) {
        return h->expire_ms;
    }
    uint64_t g = (uint64_t)h->grace_s * 1000u;
    return h->expire_ms > g ? h->expire_ms - g : 1;
}

/**
 * Encodes @p h into exactly TC_ITEM_HDR_SIZE bytes at @p out, with the check
 * over the header, @p key (@p key_len bytes) and @p value (h->value_len
 * bytes; may be NULL when that is 0). The value itself is not copied: the
 * caller stores it right after the header.
 * @return TC_OK; TC_EINVAL if the encoding is unknown, flags has unknown
 *         bits, grace is set without TC_ITEM_F_GRACE or key_id without
 *         TC_ITEM_F_ENCRYPTED.
 */
enum tc_status tc_item_encode(const struct tc_item_hdr *h, const void *key, size_t key_len,
                              const void *value, uint8_t out[TC_ITEM_HDR_SIZE]);

/**
 * Encodes the fields of @p h (bytes 0..31 of the header, all but the check)
 * into @p out, exactly as tc_item_encode() writes them: with the key, what
 * an encrypted value's tag authenticates (tiers/seal.h), so that a header
 * altered or a record moved to another key fails to decrypt.
 * @return TC_OK; TC_EINVAL as tc_item_hdr_validate().
 */
enum tc_status tc_item_encode_fields(const struct tc_item_hdr *h, uint8_t out[TC_ITEM_FIELDS_SIZE]);

/**
 * Whether tc_item_encode() would accept @p h: TC_OK or TC_EINVAL. For a
 * tier that wants to refuse a bad header before it queues the write.
 */
enum tc_status tc_item_hdr_validate(const struct tc_item_hdr *h);

/**
 * Decodes and verifies the record at @p buf (@p len bytes: header, then
 * exactly h->value_len bytes of value) as stored under @p key. On success
 * fills @p h; the value is at buf + TC_ITEM_HDR_SIZE.
 * @return TC_OK; TC_ECORRUPT for truncated, mismatched-length or garbage
 *         bytes, a failed check (altered bytes, or a record of another key);
 *         TC_EVERSION for another format version or unknown flag bits (in
 *         an otherwise well-formed header). Never reads outside [buf, buf+len).
 *         Either failure is a miss to the caller, never a value.
 */
enum tc_status tc_item_decode(const void *buf, size_t len, const void *key, size_t key_len,
                              struct tc_item_hdr *h);

/**
 * Reads the header fields at @p buf without verifying the check: for code
 * that needs the shape of a record (its length, its expiry) but never hands
 * its value out. Same length and format rules as tc_item_decode().
 */
enum tc_status tc_item_peek(const void *buf, size_t len, struct tc_item_hdr *h);

/**
 * The value's ETag (issue 15): XXH3-64 of @p value (@p len bytes), seeded
 * with its encoding and h->created_ms, so that the JSON text 1 and the
 * string "1" differ and every tier gives one write the same ETag.
 */
uint64_t tc_item_etag(const struct tc_item_hdr *h, const void *value, size_t len);

/**
 * Encodes @p h as tc_item_encode() does, for a store that checks its own
 * checksum over every byte of a record on every read (the shm ring): with
 * TC_ITEM_F_ETAG, the check slot holding tc_item_etag() of @p value. One
 * pass over the value, as tc_item_encode().
 * @return TC_OK; TC_EINVAL as tc_item_encode(), or if h->flags has
 *         TC_ITEM_F_ETAG (it is this function's to set).
 */
enum tc_status tc_item_encode_guarded(const struct tc_item_hdr *h, const void *value,
                                      uint8_t out[TC_ITEM_HDR_SIZE]);

/**
 * Reads a record of such a store, whose bytes the store has verified: @p
 * hdr is the record's first min(@p len, TC_ITEM_HDR_SIZE) bytes and @p len
 * the whole record's length (the value need not follow @p hdr in memory;
 * only the header is read). Fills @p h (without TC_ITEM_F_ETAG) and *etag
 * with the slot's ETag; a record written by tc_item_encode() (an older
 * tiercache) has no ETag there and gives *etag = 0 (unknown: hash the
 * value). Same format rules as tc_item_peek(), which it is plus the slot.
 */
enum tc_status tc_item_decode_guarded(const void *hdr, size_t len, struct tc_item_hdr *h,
                                      uint64_t *etag);

/**
 * Local expiry for a tier with ratio @p ratio (0 < r <= 1) and cap
 * @p max_ttl_ms (0 = no cap), for an item with authoritative expiry
 * @p expire_ms (0 = never) at time @p now_ms:
 *
 *     local = now + min((E - now) * r, max_ttl)      never past E
 *
 * The same rule serves the first write (E = t + T) and every back-fill (the
 * remaining time shrinks, so TTLs never drift upward). A positive remaining
 * time always yields at least 1 ms, so a tiny ratio still stores the item
 * briefly rather than writing it already expired.
 *
 * @return the absolute local expiry in ms; 0 means "never" (E = 0 and no
 *         cap); a value <= now_ms means the item is already expired and
 *         should not be stored.
 */
uint64_t tc_item_local_expiry(uint64_t now_ms, uint64_t expire_ms, double ratio,
                              uint64_t max_ttl_ms);

/** True if an item whose expiry is @p expire_ms (0 = never) is expired at @p now_ms. */
static inline int tc_item_expired(uint64_t expire_ms, uint64_t now_ms)
{
    return expire_ms != 0 && expire_ms <= now_ms;
}

/** Returns "string", "json", "binary", or NULL for an unknown encoding. */
const char *tc_item_encoding_name(unsigned encoding);

#endif
