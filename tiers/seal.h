/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Encryption at rest: a keyring of 256-bit keys read from a file, and
 * AES-256-GCM over item values through OpenSSL's EVP interface (no
 * cryptography is written here). The tier layer (tiers/tier.c) seals a
 * value before a backend stores it and opens it after a backend reads it;
 * backends never see a key.
 *
 * A sealed value, as a tier stores it after the item header:
 *
 *    +--------------+---------------------------+------------+
 *    | nonce (12 B) | ciphertext (plain length) | tag (16 B) |
 *    +--------------+---------------------------+------------+
 *
 * The nonce is fresh from RAND_bytes for every write (drawn 256 at a time
 * per thread context, each used once: one RAND_bytes call costs about as
 * much as sealing a small value). The additional
 * authenticated data is the item header's fields (tc_item_encode_fields():
 * encoding, flags, grace, created, E, the sealed length, the key id) followed
 * by the key the record is stored under: a record moved to another key, a
 * header or a byte altered, or a key id the ring does not hold all fail to
 * open (TC_ECORRUPT), and the tier layer counts the read as a corrupt miss.
 *
 * The keyring file (docs/security.md, "Encryption at rest"): text, one key
 * a line, "ID HEX" with ID a decimal in 1..4294967295 and HEX 64 hex digits;
 * '#' starts a comment line; blank lines are skipped. The highest ID
 * encrypts; every ID decrypts. The file must be a regular file that no
 * group or other user may read or write (mode 0600 or 0400), else it is
 * refused.
 *
 * Rotation: tc_seal_reload() re-reads the file (on SIGHUP); a file that
 * fails to load leaves the ring as it was. Threads see a reload at their
 * next seal or open, without a lock on the hot path: each ctx holds a
 * reference to an immutable key set and swaps it when the ring's generation
 * moves.
 *
 * Secrets: key bytes are never logged nor put in an error message, and
 * every copy (file buffer, key set) is wiped with OPENSSL_cleanse before
 * its memory is freed.
 *
 * Thread safety: a struct tc_seal may be used from any thread; a struct
 * tc_seal_ctx belongs to one thread at a time.
 */
#ifndef TC_TIERS_SEAL_H
#define TC_TIERS_SEAL_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>

#define TC_SEAL_KEY_BYTES   32u
#define TC_SEAL_NONCE_BYTES 12u
#define TC_SEAL_TAG_BYTES   16u
/** What sealing adds to a value. */
#define TC_SEAL_OVERHEAD (TC_SEAL_NONCE_BYTES + TC_SEAL_TAG_BYTES)
/** Most keys a ring holds (a file with more is refused). */
#define TC_SEAL_KEYS_MAX 4096u

struct tc_seal;     /* a keyring, shared by every thread */
struct tc_seal_ctx; /* one thread's cipher context and key set */

/**
 * Loads the keyring at @p path (see the format above).
 * @param[out] out  the ring, owned by the caller (tc_seal_close()); it must
 *                  outlive every tier and ctx that uses it.
 * @param[out] err  on failure, why, naming the path and line (never a key).
 * @return TC_OK; TC_EPERM for a file group or others may access, or that is
 *         not a regular file; TC_EINVAL for a malformed line, a duplicate id
 *         or no key at all; TC_EIO when it cannot be read; TC_ENOMEM.
 */
enum tc_status tc_seal_open(const char *path, struct tc_seal **out, char *err, size_t errlen);

/**
 * Re-reads the ring's file. On success the new set is used by every
 * thread's next operation; on failure the ring keeps its keys and @p err
 * says why (as tc_seal_open()). Any thread.
 */
enum tc_status tc_seal_reload(struct tc_seal *s, char *err, size_t errlen);

/** Wipes and frees the ring. Every ctx must be destroyed first. NULL is a no-op. */
void tc_seal_close(struct tc_seal *s);

/** The path the ring was loaded from. */
const char *tc_seal_path(const struct tc_seal *s);

/**
 * Writes up to @p max key ids of the current set into @p ids, ascending,
 * and returns how many the set holds (may exceed @p max). The last one
 * written when all fit is the id that encrypts. Any thread.
 */
size_t tc_seal_key_ids(struct tc_seal *s, uint32_t *ids, size_t max);

/**
 * Creates a ctx on @p s for the calling thread.
 * @return TC_OK with *out set; TC_ENOMEM.
 */
enum tc_status tc_seal_ctx_create(struct tc_seal *s, struct tc_seal_ctx **out);

/** Frees @p c and drops its reference to a key set. NULL is a no-op. */
void tc_seal_ctx_destroy(struct tc_seal_ctx *c);

/**
 * The id of the key the next tc_seal_encrypt() on @p c uses: the highest of
 * the ring's current set (picking up a reload here).
 */
uint32_t tc_seal_current(struct tc_seal_ctx *c);

/**
 * Seals @p len bytes at @p plain under key @p kid (from tc_seal_current())
 * with a fresh nonce, authenticating @p aad (@p aad_len bytes) and then
 * @p key (@p key_len bytes), into @p out, which must hold
 * len + TC_SEAL_OVERHEAD bytes and not overlap @p plain.
 * @return TC_OK; TC_ENOTFOUND if @p kid is not in the ctx's set (a reload
 *         in between); TC_EIO if OpenSSL fails (no randomness).
 */
enum tc_status tc_seal_encrypt(struct tc_seal_ctx *c, uint32_t kid, const void *aad, size_t aad_len,
                               const void *key, size_t key_len, const void *plain, size_t len,
                               void *out);

/**
 * Opens, in place, the @p len sealed bytes at @p buf (as tc_seal_encrypt()
 * wrote them) with key @p kid and the same @p aad and @p key. On TC_OK the
 * plaintext is at @p buf and *plain_len = len - TC_SEAL_OVERHEAD. On failure
 * @p buf holds garbage that must not be used.
 * @return TC_OK; TC_ECORRUPT when the tag does not verify (altered bytes or
 *         header, another key's record), @p kid is unknown, or @p len is
 *         shorter than TC_SEAL_OVERHEAD.
 */
enum tc_status tc_seal_decrypt(struct tc_seal_ctx *c, uint32_t kid, const void *aad, size_t aad_len,
                               const void *key, size_t key_len, void *buf, size_t len,
                               size_t *plain_len);

/** Wipes @p n bytes at @p p (OPENSSL_cleanse: not optimised away), for
 * plaintext copies a caller made. */
void tc_seal_wipe(void *p, size_t n);

/**
 * `tiercache key new PATH`: creates the keyring file @p path with one new
 * random key (id 1), mode 0600 whatever the umask, refusing to follow a
 * symlink or to replace a file; or, if it exists, checks it as
 * tc_seal_open() does and appends a new random key with the next id, under
 * an exclusive lock so that two runs do not pick the same id. The file is
 * fsynced before returning.
 * @param[out] id       the new key's id.
 * @param[out] created  1 if the file was created, 0 if appended to.
 * @return TC_OK; the codes of tc_seal_open(); TC_EEXIST when the highest id
 *         is already 4294967295.
 */
enum tc_status tc_seal_keyfile_add(const char *path, uint32_t *id, int *created, char *err,
                                   size_t errlen);

#endif
