/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Encryption at rest (issue 14 item 5): the keyring file (tiers/seal.h) and
 * values sealed by the tier layer in real LMDB environments (temp dirs) and
 * a real redis-server (tests/support/redis_server.h).
 *
 * The forgeries below recompute the item's XXH3 check after they change a
 * record (it is not a MAC; anyone who can write the store can recompute
 * it), so that what refuses them is AES-GCM's tag over the header fields
 * and the key, as a real attacker with write access would force.
 */
#define _GNU_SOURCE /* memmem */
#include "shm/ring.h"
#include "tests/support/clock.h"
#include "tests/support/lmdb_damage.h"
#include "tests/support/redis_server.h"
#include "tests/support/stats.h"
#include "tiers/seal.h"
#include "tiers/tier.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET    "PLAINTEXT-SECRET-VALUE-31337"
#define REC_FIXED 10u /* tier_lmdb.c: local expiry + full-key length before the item */

static char dir[256], keys[300];
static struct tc_seal *ring;
static struct tc_tier_registry *reg;
static struct tc_tier *tier;
static struct tc_tier_ctx *ctx;
static struct tc_buf out;
static uint64_t t0;
static struct tc_redis_server *redis;

static void setup(void)
{
    t0 = tc_test_wall_ms();
    snprintf(dir, sizeof(dir), "/tmp/tc-seal-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(keys, sizeof(keys), "%s/keys", dir);
    tc_buf_init(&out);
    reg = tc_tier_registry_create();
    cr_assert_not_null(reg);
}

static void close_tier(void)
{
    tc_tier_ctx_dispose(ctx);
    ctx = NULL;
    tc_tier_close(tier);
    tier = NULL;
}

static void teardown(void)
{
    close_tier();
    tc_tier_registry_destroy(reg);
    tc_seal_close(ring);
    ring = NULL;
    tc_buf_deinit(&out);
    tc_redis_server_destroy(redis);
    redis = NULL;
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/l2", dir);
    tc_test_rm_flat_dir(sub);
    tc_test_rm_flat_dir(dir);
}

TestSuite(keyring, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(sealed_lmdb, .init = setup, .fini = teardown, .timeout = 60);
TestSuite(sealed_redis, .init = setup, .fini = teardown, .timeout = 60);

static uint32_t add_key(void)
{
    char err[512];
    uint32_t id = 0;
    int created = -1;
    cr_assert_eq(tc_seal_keyfile_add(keys, &id, &created, err, sizeof(err)), TC_OK, "%s", err);
    return id;
}

static void make_ring(void)
{
    char err[512];
    add_key();
    cr_assert_eq(tc_seal_open(keys, &ring, err, sizeof(err)), TC_OK, "%s", err);
    tc_tier_registry_set_seal(reg, ring);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

static enum tc_status open_tier(const char *uri, char *err, size_t errlen)
{
    enum tc_status st = tc_tier_open(reg, uri, &tier, err, errlen);
    if (st == TC_OK) {
        cr_assert_eq(tc_tier_ctx_init(tier, NULL, &ctx), TC_OK);
    }
    return st;
}

static void open_lmdb(const char *params)
{
    char uri[512], err[512];
    snprintf(uri, sizeof(uri), "lmdb://%s/l2?map_size=16M&sync=none%s", dir, params);
    enum tc_status st = open_tier(uri, err, sizeof(err));
    cr_assert_eq(st, TC_OK, "open %s: %s", uri, err);
}

static enum tc_status put(const char *k, const void *v, size_t vl)
{
    struct tc_tier_req r = {
        .key = k, .key_len = strlen(k), .value = v, .value_len = vl, .now_ms = t0};
    r.hdr.encoding = TC_ENC_STRING;
    r.hdr.created_ms = t0;
    r.hdr.expire_ms = t0 + 600000;
    enum tc_status st = tc_tier_set(ctx, &r);
    /* The caller's request is as it gave it once the set completed. */
    cr_assert_eq(r.value, v);
    cr_assert_eq(r.value_len, vl);
    cr_assert_eq(r.hdr.flags & TC_ITEM_F_ENCRYPTED, 0);
    return st;
}

static enum tc_status get(const char *k)
{
    struct tc_tier_req r = {.key = k, .key_len = strlen(k), .out = &out, .now_ms = t0};
    enum tc_status st = tc_tier_get(ctx, &r);
    if (st == TC_OK) {
        cr_assert_eq(r.hdr.flags & TC_ITEM_F_ENCRYPTED, 0, "a sealed header reached the caller");
        cr_assert_eq(r.hdr.key_id, 0);
        cr_assert_eq(r.hdr.value_len, out.len);
    } else {
        cr_assert_eq(out.len, 0, "bytes handed out with %s", tc_strerror(st));
    }
    return st;
}

/* @p k reads back as exactly @p v. */
static void expect_get(const char *k, const char *v)
{
    cr_assert_eq(get(k), TC_OK, "%s unreadable", k);
    cr_assert(out.len == strlen(v) && memcmp(out.data, v, out.len) == 0, "%s: wrong value", k);
}

static uint64_t stat_of(const char *name)
{
    uint64_t v = 0;
    cr_assert(tc_test_tier_stat(tier, name, &v), "no stat %s", name);
    return v;
}

/* Reads all of @p path; free the result. */
static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* ---- the keyring file ------------------------------------------------------------------ */

Test(keyring, key_new_makes_a_private_file_and_appends_the_next_id)
{
    mode_t old = umask(0); /* a careless umask must not make it readable */
    cr_assert_eq(add_key(), 1);
    umask(old);
    struct stat sb;
    cr_assert_eq(stat(keys, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "mode %o", sb.st_mode & 0777);
    cr_assert_eq(add_key(), 2);
    cr_assert_eq(add_key(), 3);
    char err[512];
    cr_assert_eq(tc_seal_open(keys, &ring, err, sizeof(err)), TC_OK, "%s", err);
    uint32_t ids[8];
    cr_assert_eq(tc_seal_key_ids(ring, ids, 8), 3);
    cr_assert(ids[0] == 1 && ids[1] == 2 && ids[2] == 3);
    /* Three different random keys, 64 hex digits each. */
    size_t len;
    char *text = (char *)slurp(keys, &len);
    text[len] = '\0';
    char k[3][65];
    const char *p = text;
    for (int i = 0; i < 3; i++) {
        p = strstr(p, i == 0 ? "\n1 " : i == 1 ? "\n2 " : "\n3 ");
        cr_assert_not_null(p);
        cr_assert_eq(sscanf(p + 3, "%64[0-9a-f]", k[i]), 1);
        cr_assert_eq(strlen(k[i]), 64);
        p += 3;
    }
    cr_assert(strcmp(k[0], k[1]) != 0 && strcmp(k[1], k[2]) != 0);
    free(text);
}

Test(keyring, group_or_world_access_is_refused)
{
    add_key();
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0606};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        cr_assert_eq(chmod(keys, bad[i]), 0);
        cr_assert_eq(tc_seal_open(keys, &ring, err, sizeof(err)), TC_EPERM, "mode %o", bad[i]);
        cr_assert_not_null(strstr(err, "chmod 600"), "%s", err);
        uint32_t id;
        int created;
        cr_assert_eq(tc_seal_keyfile_add(keys, &id, &created, err, sizeof(err)), TC_EPERM);
    }
    cr_assert_eq(chmod(keys, 0400), 0);
    char err[512];
    cr_assert_eq(tc_seal_open(keys, &ring, err, sizeof(err)), TC_OK, "0400: %s", err);
}

Test(keyring, a_directory_or_fifo_is_refused)
{
    char err[512];
    cr_assert_eq(tc_seal_open(dir, &ring, err, sizeof(err)), TC_EPERM, "%s", err);
    char fifo[320];
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(tc_seal_open(fifo, &ring, err, sizeof(err)), TC_EPERM, "%s", err);
    unlink(fifo);
}

Test(keyring, malformed_files_are_refused_without_quoting_keys)
{
    static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char buf[512];
    static const char *const bad[] = {
        "",                                                                       /* no key */
        "# only a comment\n",                                                     /* no key */
        "1 00112233445566778899aabbccddeeff00112233445566778899aabbccddee\n",     /* short */
        "1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeffaa\n", /* long */
        "0 %s\n",                                                                 /* id 0 */
        "4294967296 %s\n",                                                        /* too big */
        "1 %s\n1 %s\n",                                                           /* twice */
        "x %s\n",
        "1 0011223344556677889zaabbccddeeff00112233445566778899aabbccddeeff\n", /* not hex */
        "1%s\n",                                                                /* no space */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(buf, sizeof(buf), bad[i], hex, hex);
        write_file(keys, buf, 0600);
        char err[512] = "";
        cr_assert_eq(tc_seal_open(keys, &ring, err, sizeof(err)), TC_EINVAL, "case %zu", i);
        cr_assert_neq(err[0], '\0');
        cr_assert_null(strstr(err, "00112233"), "case %zu quotes the key: %s", i, err);
    }
    snprintf(buf, sizeof(buf), "# comment\n\n  7 %s  \r\n3\t%s\n", hex, hex);
    write_file(keys, buf, 0600);
    char err[512];
    cr_assert_eq(tc_seal_open(keys, &ring, err, sizeof(err)), TC_OK, "%s", err);
    uint32_t ids[4];
    cr_assert_eq(tc_seal_key_ids(ring, ids, 4), 2);
    cr_assert(ids[0] == 3 && ids[1] == 7, "ascending, the highest encrypts");
}

Test(keyring, a_bad_reload_keeps_the_keys_in_use)
{
    make_ring();
    cr_assert_eq(chmod(keys, 0644), 0);
    char err[512];
    cr_assert_eq(tc_seal_reload(ring, err, sizeof(err)), TC_EPERM);
    write_file(keys, "garbage\n", 0600);
    cr_assert_eq(tc_seal_reload(ring, err, sizeof(err)), TC_EINVAL);
    uint32_t ids[4];
    cr_assert_eq(tc_seal_key_ids(ring, ids, 4), 1);
    cr_assert_eq(ids[0], 1);
}

/* ---- sealed LMDB -------------------------------------------------------------------------- */

Test(sealed_lmdb, nothing_in_data_mdb_is_plaintext)
{
    make_ring();
    open_lmdb("");
    cr_assert_not_null(tc_tier_seal(tier), "lmdb:// with a keyring seals by default");
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof(k), "secret-%d", i);
        cr_assert_eq(put(k, SECRET, strlen(SECRET)), TC_OK);
    }
    cr_assert_eq(get("secret-7"), TC_OK);
    cr_assert_eq(out.len, strlen(SECRET));
    cr_assert(memcmp(out.data, SECRET, out.len) == 0);
    close_tier();
    char path[320];
    snprintf(path, sizeof(path), "%s/l2/data.mdb", dir);
    size_t len;
    unsigned char *b = slurp(path, &len);
    cr_assert_null(memmem(b, len, SECRET, strlen(SECRET)), "plaintext in data.mdb");
    cr_assert_null(memmem(b, len, "PLAINTEXT", 9), "plaintext in data.mdb");
    free(b);
}

/*
 * Raw access to the closed environment: the record of @p from, its item
 * changed by @p edit (header fields and value), its XXH3 check recomputed
 * for key @p to, stored under @p to.
 */
typedef void (*edit_fn)(struct tc_item_hdr *h, unsigned char *value);

static void forge_lmdb(const char *from, const char *to, edit_fn edit)
{
    char path[320];
    snprintf(path, sizeof(path), "%s/l2", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    cr_assert_eq(mdb_env_open(env, path, 0, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "tc_data", 0, &dbi), 0);
    MDB_val k = {strlen(from), (void *)from}, v;
    cr_assert_eq(mdb_get(txn, dbi, &k, &v), 0, "no record for %s", from);
    unsigned char *rec = malloc(v.mv_size);
    memcpy(rec, v.mv_data, v.mv_size);
    unsigned char *item = rec + REC_FIXED; /* short keys: no full key stored */
    struct tc_item_hdr h;
    cr_assert_eq(tc_item_decode(item, v.mv_size - REC_FIXED, from, strlen(from), &h), TC_OK);
    if (edit != NULL) {
        edit(&h, item + TC_ITEM_HDR_SIZE);
    }
    cr_assert_eq(tc_item_encode(&h, to, strlen(to), item + TC_ITEM_HDR_SIZE, item), TC_OK);
    MDB_val k2 = {strlen(to), (void *)to}, v2 = {v.mv_size, rec};
    cr_assert_eq(mdb_put(txn, dbi, &k2, &v2, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(rec);
}

/* The raw header of @p key's record in the closed environment. */
static struct tc_item_hdr raw_hdr_lmdb(const char *key)
{
    char path[320];
    snprintf(path, sizeof(path), "%s/l2", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    struct tc_item_hdr h;
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    cr_assert_eq(mdb_env_open(env, path, MDB_RDONLY, 0600), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "tc_data", 0, &dbi), 0);
    MDB_val k = {strlen(key), (void *)key}, v;
    cr_assert_eq(mdb_get(txn, dbi, &k, &v), 0);
    cr_assert_eq(tc_item_peek((unsigned char *)v.mv_data + REC_FIXED, v.mv_size - REC_FIXED, &h),
                 TC_OK);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return h;
}

/* Writes "victim" and "other", lets @p edit forge "victim" into @p to,
 * reopens, and expects @p to to be a counted corrupt miss. */
static void expect_forgery_refused(const char *to, edit_fn edit)
{
    make_ring();
    open_lmdb("");
    cr_assert_eq(put("victim", SECRET, strlen(SECRET)), TC_OK);
    cr_assert_eq(put("other", "other-value", 11), TC_OK);
    close_tier();
    forge_lmdb("victim", to, edit);
    open_lmdb("");
    uint64_t before = stat_of("corrupt");
    cr_assert_eq(get(to), TC_ECORRUPT, "a forged record was served");
    cr_assert_eq(stat_of("corrupt"), before + 1);
    const char *intact = strcmp(to, "victim") == 0 ? "other" : "victim";
    cr_assert_eq(get(intact), TC_OK, "the record left alone still reads");
}

Test(sealed_lmdb, a_record_moved_to_another_key_is_a_counted_corrupt_miss)
{
    expect_forgery_refused("other", NULL);
}

static void flip_ciphertext(struct tc_item_hdr *h, unsigned char *value)
{
    (void)h;
    value[TC_SEAL_NONCE_BYTES + 3] ^= 0x01;
}

Test(sealed_lmdb, a_flipped_ciphertext_byte_is_a_counted_corrupt_miss)
{
    expect_forgery_refused("victim", flip_ciphertext);
}

static void flip_tag(struct tc_item_hdr *h, unsigned char *value)
{
    value[h->value_len - 1] ^= 0x80;
}

Test(sealed_lmdb, a_flipped_tag_byte_is_a_counted_corrupt_miss)
{
    expect_forgery_refused("victim", flip_tag);
}

static void longer_life(struct tc_item_hdr *h, unsigned char *value)
{
    (void)value;
    h->expire_ms += 3600 * 1000; /* the header is authenticated too */
}

Test(sealed_lmdb, an_altered_header_is_a_counted_corrupt_miss)
{
    expect_forgery_refused("victim", longer_life);
}

static void unknown_kid(struct tc_item_hdr *h, unsigned char *value)
{
    (void)value;
    h->key_id = 77;
}

Test(sealed_lmdb, an_unknown_key_id_is_a_counted_corrupt_miss)
{
    expect_forgery_refused("victim", unknown_kid);
}

Test(sealed_lmdb, a_key_removed_from_the_ring_no_longer_opens_its_records)
{
    make_ring();
    open_lmdb("");
    cr_assert_eq(put("k1", SECRET, strlen(SECRET)), TC_OK);
    close_tier();
    /* A ring holding another key with the same id: the record's key is gone. */
    tc_tier_registry_set_seal(reg, NULL);
    tc_seal_close(ring);
    ring = NULL;
    unlink(keys);
    make_ring();
    open_lmdb("");
    cr_assert_eq(get("k1"), TC_ECORRUPT);
    cr_assert_eq(stat_of("corrupt"), 1);
}

Test(sealed_lmdb, a_plaintext_record_is_not_trusted_by_a_sealing_tier)
{
    make_ring();
    open_lmdb("&encrypt=off");
    cr_assert_null(tc_tier_seal(tier));
    cr_assert_eq(put("plain", SECRET, strlen(SECRET)), TC_OK);
    close_tier();
    open_lmdb("");
    cr_assert_eq(get("plain"), TC_ECORRUPT, "a record without a tag was served");
    cr_assert_eq(stat_of("corrupt"), 1);
    /* And the other way: a tier told not to seal has no key to open one with. */
    cr_assert_eq(put("sealed", SECRET, strlen(SECRET)), TC_OK);
    close_tier();
    open_lmdb("&encrypt=off");
    cr_assert_eq(get("sealed"), TC_ECORRUPT);
}

Test(sealed_lmdb, rotation_keeps_every_value_readable)
{
    make_ring();
    open_lmdb("");
    char k[32], v[64];
    for (int i = 0; i < 40; i++) {
        if (i == 20) {
            cr_assert_eq(add_key(), 2);
            char err[512];
            cr_assert_eq(tc_seal_reload(ring, err, sizeof(err)), TC_OK, "%s", err);
        }
        snprintf(k, sizeof(k), "rot-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        cr_assert_eq(put(k, v, strlen(v)), TC_OK);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof(k), "rot-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        expect_get(k, v);
    }
    close_tier();
    cr_assert_eq(raw_hdr_lmdb("rot-0").key_id, 1);
    cr_assert_eq(raw_hdr_lmdb("rot-19").key_id, 1);
    cr_assert_eq(raw_hdr_lmdb("rot-20").key_id, 2, "new writes use the new key");
    cr_assert_eq(raw_hdr_lmdb("rot-39").key_id, 2);
}

static uint32_t census_of(uint32_t kid)
{
    struct tc_tier_key_count rows[TC_TIER_CENSUS_KEYS];
    size_t n = tc_tier_key_census(tier, rows, TC_TIER_CENSUS_KEYS, NULL);
    for (size_t i = 0; i < n; i++) {
        if (rows[i].key_id == kid) {
            return (uint32_t)rows[i].records;
        }
    }
    return 0;
}

/* Steps the rekey walk (budget 7) until a pass ends; returns records moved. */
static uint64_t rekey_pass(void)
{
    uint64_t moved = 0;
    for (int i = 0; i < 1000; i++) {
        enum tc_status st = tc_tier_rekey_step(tier, 7, &moved);
        if (st == TC_OK) {
            return moved;
        }
        cr_assert_eq(st, TC_EAGAIN, "rekey step: %s", tc_strerror(st));
    }
    cr_assert_fail("no pass ended");
    return 0;
}

Test(sealed_lmdb, rekey_moves_old_records_forward_and_counts_them_per_key)
{
    make_ring();
    open_lmdb("");
    char k[32], v[64];
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof(k), "old-%02d", i);
        snprintf(v, sizeof(v), "sealed-by-1-%d", i);
        cr_assert_eq(put(k, v, strlen(v)), TC_OK);
    }
    uint64_t passes = 9;
    struct tc_tier_key_count rows[TC_TIER_CENSUS_KEYS];
    cr_assert_eq(tc_tier_key_census(tier, rows, TC_TIER_CENSUS_KEYS, &passes), 0);
    cr_assert_eq(passes, 0, "no census before a pass");
    cr_assert_eq(rekey_pass(), 0, "nothing to move under one key");
    cr_assert_eq(census_of(1), 30);

    cr_assert_eq(add_key(), 2);
    char err[512];
    cr_assert_eq(tc_seal_reload(ring, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(put("new-00", "sealed-by-2", 11), TC_OK);
    cr_assert_eq(rekey_pass(), 30, "every record under key 1 moves");
    cr_assert_eq(census_of(2), 31);
    cr_assert_eq(census_of(1), 0);
    cr_assert_eq(rekey_pass(), 0, "a second pass finds nothing to move");
    cr_assert_eq(census_of(2), 31);
    uint64_t rk = 0;
    cr_assert(tc_test_tier_stat(tier, "rekeyed", &rk));
    cr_assert_eq(rk, 30);

    /* Key 1 can now leave the ring: every value still reads. */
    char line[256];
    size_t len;
    char *text = (char *)slurp(keys, &len);
    text[len] = '\0';
    char *two = strstr(text, "\n2 ");
    cr_assert_not_null(two);
    snprintf(line, sizeof(line), "%s", two + 1);
    free(text);
    write_file(keys, line, 0600);
    cr_assert_eq(tc_seal_reload(ring, err, sizeof(err)), TC_OK, "%s", err);
    uint32_t ids[4];
    cr_assert_eq(tc_seal_key_ids(ring, ids, 4), 1);
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof(k), "old-%02d", i);
        snprintf(v, sizeof(v), "sealed-by-1-%d", i);
        expect_get(k, v);
    }
    close_tier();
    cr_assert_eq(raw_hdr_lmdb("old-00").key_id, 2);
    cr_assert_eq(raw_hdr_lmdb("old-29").key_id, 2);
}

Test(sealed_lmdb, rekey_leaves_records_it_cannot_open_and_counts_them)
{
    expect_forgery_refused("victim", unknown_kid);
    cr_assert_eq(add_key(), 2);
    char err[512];
    cr_assert_eq(tc_seal_reload(ring, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(rekey_pass(), 1, "'other' moves; the forged record cannot");
    cr_assert_eq(census_of(77), 1);
    cr_assert_eq(census_of(2), 1);
    cr_assert_eq(get("victim"), TC_ECORRUPT);
    cr_assert_eq(get("other"), TC_OK);
}

Test(sealed_lmdb, values_up_to_the_limit_and_empty_ones_round_trip)
{
    make_ring();
    open_lmdb("&max_item=64K");
    size_t max = tc_tier_max_value(tier);
    cr_assert_eq(max, 65536 - TC_SEAL_OVERHEAD, "the seal's bytes come out of max_item");
    unsigned char *v = malloc(max + 1);
    for (size_t i = 0; i <= max; i++) {
        v[i] = (unsigned char)(i * 131u);
    }
    cr_assert_eq(put("max", v, max), TC_OK);
    cr_assert_eq(get("max"), TC_OK);
    cr_assert(out.len == max && memcmp(out.data, v, max) == 0);
    cr_assert_eq(put("over", v, max + 1), TC_ETOOBIG);
    cr_assert_eq(put("empty", "", 0), TC_OK);
    cr_assert_eq(get("empty"), TC_OK);
    cr_assert_eq(out.len, 0);
    free(v);
}

Test(sealed_lmdb, encrypt_parameter_defaults_and_refusals)
{
    char uri[512], err[512] = "";
    /* No keyring: encrypt=on refused, naming the way out. */
    snprintf(uri, sizeof(uri), "lmdb://%s/l2?encrypt=on", dir);
    cr_assert_eq(open_tier(uri, err, sizeof(err)), TC_EINVAL);
    cr_assert_not_null(strstr(err, "encryption-keys-file"), "%s", err);
    snprintf(uri, sizeof(uri), "lmdb://%s/l2", dir);
    cr_assert_eq(open_tier(uri, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_null(tc_tier_seal(tier), "no keyring, nothing sealed");
    close_tier();
    make_ring();
    cr_assert_eq(open_tier("mem://?size=1M", err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_null(tc_tier_seal(tier), "mem:// is off by default");
    close_tier();
    cr_assert_eq(open_tier("mem://?size=1M&encrypt=on", err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_not_null(tc_tier_seal(tier));
    cr_assert_eq(put("m", SECRET, strlen(SECRET)), TC_OK);
    cr_assert_eq(get("m"), TC_OK);
    cr_assert_eq(out.len, strlen(SECRET));
    close_tier();
    cr_assert_eq(open_tier("mem://?size=1M&encrypt=maybe", err, sizeof(err)), TC_EINVAL);
    cr_assert_eq(open_tier("mem://?size=1M&max_item=16&encrypt=on", err, sizeof(err)), TC_EINVAL,
                 "no room for the seal");
}

/* ---- sealed Redis --------------------------------------------------------------------------- */

static void open_redis(void)
{
    cr_assert_eq(tc_redis_server_start(NULL, &redis), 0, "cannot start redis-server");
    char uri[256], err[512];
    snprintf(uri, sizeof(uri), "redis://127.0.0.1:%u/0?timeout_ms=2000",
             tc_redis_server_port(redis));
    cr_assert_eq(open_tier(uri, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_not_null(tc_tier_seal(tier), "redis:// with a keyring seals by default");
}

Test(sealed_redis, no_plaintext_in_redis_and_moved_records_are_refused)
{
    make_ring();
    open_redis();
    cr_assert_eq(put("victim", SECRET, strlen(SECRET)), TC_OK);
    cr_assert_eq(put("other", "other-value", 11), TC_OK);
    cr_assert_eq(get("victim"), TC_OK);
    cr_assert(out.len == strlen(SECRET) && memcmp(out.data, SECRET, out.len) == 0);

    redisContext *rc = redisConnect("127.0.0.1", (int)tc_redis_server_port(redis));
    cr_assert(rc != NULL && rc->err == 0);
    redisReply *r = redisCommand(rc, "GET tc:victim");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING, "no raw record");
    cr_assert_null(memmem(r->str, r->len, SECRET, strlen(SECRET)), "plaintext in Redis");
    /* Moved to another key, check recomputed: only the tag can tell. */
    size_t n = r->len;
    unsigned char *rec = malloc(n);
    memcpy(rec, r->str, n);
    freeReplyObject(r);
    struct tc_item_hdr h;
    cr_assert_eq(tc_item_decode(rec, n, "victim", 6, &h), TC_OK);
    cr_assert(h.flags & TC_ITEM_F_ENCRYPTED);
    cr_assert_eq(tc_item_encode(&h, "other", 5, rec + TC_ITEM_HDR_SIZE, rec), TC_OK);
    r = redisCommand(rc, "SET tc:other %b", rec, n);
    cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    cr_assert_eq(get("other"), TC_ECORRUPT, "a record moved in Redis was served");
    cr_assert_eq(stat_of("corrupt"), 1);
    /* A flipped ciphertext byte under the right key. */
    cr_assert_eq(tc_item_decode(rec, n, "other", 5, &h), TC_OK);
    rec[TC_ITEM_HDR_SIZE + TC_SEAL_NONCE_BYTES] ^= 1;
    cr_assert_eq(tc_item_encode(&h, "victim", 6, rec + TC_ITEM_HDR_SIZE, rec), TC_OK);
    r = redisCommand(rc, "SET tc:victim %b", rec, n);
    freeReplyObject(r);
    cr_assert_eq(get("victim"), TC_ECORRUPT);
    cr_assert_eq(stat_of("corrupt"), 2);
    free(rec);
    redisFree(rc);
}

/* A sealed shm value large enough for the tier's hot copies: the copy is
 * lent to the caller as a view, and opening in place must not decrypt the
 * tier's copy (the next hit would open plaintext and fail its tag). */
TestSuite(sealed_shm, .init = setup, .fini = teardown, .timeout = 60);

Test(sealed_shm, hot_copies_of_sealed_values_open_on_every_hit)
{
    char uri[256], err[512], name[64];
    make_ring();
    snprintf(name, sizeof(name), "tc-seal-test-%ld", (long)getpid());
    tc_ring_unlink(name, NULL, 0);
    snprintf(uri, sizeof(uri), "shm://%s?size=4M&encrypt=on", name);
    cr_assert_eq(open_tier(uri, err, sizeof(err)), TC_OK, "%s", err);
    static char v[65536];
    memset(v, 'q', sizeof(v) - 1);
    memcpy(v + 1000, SECRET, strlen(SECRET));
    cr_assert_eq(put("big", v, strlen(v)), TC_OK);
    for (int i = 0; i < 4; i++) {
        expect_get("big", v);
    }
    cr_assert_geq(stat_of("hot_hits"), 2, "the hot copy was not used");
    cr_assert_eq(stat_of("corrupt"), 0);
    close_tier();
    tc_ring_unlink(name, NULL, 0);
}
