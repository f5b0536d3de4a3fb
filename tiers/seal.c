/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The keyring and AES-256-GCM sealing of values (see seal.h). OpenSSL does
 * the cryptography and the randomness; this file reads the key file, keeps
 * the key sets and frames the sealed bytes.
 *
 *   tc_seal ── cur ──▶ keyset (immutable, refcounted) ◀── ks ── tc_seal_ctx (a thread)
 *      │                                                          │
 *      └─ gen: bumped by each reload ─── compared on every op ────┘
 *
 * A reload builds a new key set, swaps cur and bumps gen under the ring's
 * mutex; a ctx that sees a new gen takes a reference to the new set under
 * the mutex and drops its old one. The last reference to a set wipes its
 * keys. So the hot path costs one acquire load of a line that is written
 * only on reload.
 */
#define _GNU_SOURCE /* O_NOFOLLOW, O_CLOEXEC, flock, mkstemp */
#include "tiers/seal.h"
#include "tiers/tier_impl.h" /* tc_tier_errf */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* A keyring file is a few lines per key; anything much larger is not one. */
#define FILE_MAX (1u << 20)

struct key {
    uint32_t id;
    unsigned char bytes[TC_SEAL_KEY_BYTES];
};

struct keyset {
    atomic_uint refs;
    size_t n;
    struct key k[]; /* ascending by id; the last one encrypts */
};

struct tc_seal {
    pthread_mutex_t lock; /* guards cur; gen is written under it */
    struct keyset *cur;
    atomic_uint_fast64_t gen;
    char *path;
};

/* One direction's cipher context, keyed once per key id: only the nonce is
 * set per value, which skips the key schedule and GHASH set-up (most of
 * the cost of a small value). */
struct dir {
    EVP_CIPHER_CTX *ev;
    const struct key *key; /* the key it holds, in ks; NULL: none yet */
};

/* Nonces drawn from RAND_bytes this many at a time: one call costs about
 * as much as sealing a small value (docs/benchmarks.md), its per-byte cost
 * is small. Each nonce is still fresh random bytes, used once. */
#define NONCE_POOL 256u

struct tc_seal_ctx {
    struct tc_seal *s;
    struct keyset *ks;
    uint64_t gen;
    struct dir enc, dec;
    size_t pool_used; /* nonces of pool handed out; NONCE_POOL: refill first */
    unsigned char pool[NONCE_POOL * TC_SEAL_NONCE_BYTES];
};

static void keyset_release(struct keyset *ks)
{
    if (ks == NULL) {
        return;
    }
    /* acq_rel: the last holder's wipe must see every other holder done with it. */
    if (atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) == 1) {
        OPENSSL_cleanse(ks->k, ks->n * sizeof(ks->k[0]));
        free(ks);
    }
}

static const struct key *keyset_find(const struct keyset *ks, uint32_t id)
{
    size_t lo = 0, hi = ks->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ks->k[mid].id == id) {
            return &ks->k[mid];
        }
        if (ks->k[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int key_cmp(const void *a, const void *b)
{
    uint32_t x = ((const struct key *)a)->id, y = ((const struct key *)b)->id;
    return x < y ? -1 : x > y;
}

/*
 * Parses a keyring's text. Messages name the path and the line, never its
 * contents (a malformed line may still be mostly a key). With @p allow_empty
 * a file without keys parses (tiercache key new appends to it).
 */
static enum tc_status parse(const char *path, const char *buf, size_t len, int allow_empty,
                            struct keyset **out, char *err, size_t errlen)
{
    size_t cap = 8, n = 0;
    struct keyset *ks = malloc(sizeof(*ks) + cap * sizeof(ks->k[0]));
    enum tc_status st = TC_EINVAL;
    if (ks == NULL) {
        tc_tier_errf(err, errlen, "out of memory reading %s", path);
        return TC_ENOMEM;
    }
    size_t line = 0;
    for (size_t at = 0; at < len;) {
        const char *p = buf + at;
        const char *nl = memchr(p, '\n', len - at);
        size_t ll = nl != NULL ? (size_t)(nl - p) : len - at;
        at += ll + (nl != NULL);
        line++;
        while (ll > 0 && (p[ll - 1] == ' ' || p[ll - 1] == '\t' || p[ll - 1] == '\r')) {
            ll--;
        }
        size_t i = 0;
        while (i < ll && (p[i] == ' ' || p[i] == '\t')) {
            i++;
        }
        if (i == ll || p[i] == '#') {
            continue;
        }
        uint64_t id = 0;
        size_t d0 = i;
        while (i < ll && p[i] >= '0' && p[i] <= '9' && i - d0 < 11) {
            id = id * 10 + (uint64_t)(p[i] - '0');
            i++;
        }
        size_t sp = i;
        while (i < ll && (p[i] == ' ' || p[i] == '\t')) {
            i++;
        }
        if (i == d0 || sp == i || id == 0 || id > UINT32_MAX || ll - i != 2 * TC_SEAL_KEY_BYTES) {
            tc_tier_errf(err, errlen,
                         "%s line %zu: expected 'ID HEX' (ID in 1..4294967295, HEX %u hex digits)",
                         path, line, 2 * TC_SEAL_KEY_BYTES);
            goto fail;
        }
        if (n == TC_SEAL_KEYS_MAX) {
            tc_tier_errf(err, errlen, "%s: more than %u keys", path, TC_SEAL_KEYS_MAX);
            goto fail;
        }
        if (n == cap) {
            struct keyset *bigger = malloc(sizeof(*ks) + 2 * cap * sizeof(ks->k[0]));
            if (bigger == NULL) {
                tc_tier_errf(err, errlen, "out of memory reading %s", path);
                st = TC_ENOMEM;
                goto fail;
            }
            memcpy(bigger->k, ks->k, n * sizeof(ks->k[0]));
            OPENSSL_cleanse(ks->k, n * sizeof(ks->k[0]));
            free(ks);
            ks = bigger;
            cap *= 2;
        }
        struct key *k = &ks->k[n];
        k->id = (uint32_t)id;
        for (size_t b = 0; b < TC_SEAL_KEY_BYTES; b++) {
            int hi = hexval(p[i + 2 * b]), lo = hexval(p[i + 2 * b + 1]);
            if (hi < 0 || lo < 0) {
                OPENSSL_cleanse(k, sizeof(*k));
                tc_tier_errf(err, errlen, "%s line %zu: the key is not %u hex digits", path, line,
                             2 * TC_SEAL_KEY_BYTES);
                goto fail;
            }
            k->bytes[b] = (unsigned char)(hi << 4 | lo);
        }
        n++;
    }
    if (n == 0 && !allow_empty) {
        tc_tier_errf(err, errlen, "%s holds no key (create one with: tiercache key new %s)", path,
                     path);
        goto fail;
    }
    qsort(ks->k, n, sizeof(ks->k[0]), key_cmp);
    for (size_t i = 1; i < n; i++) {
        if (ks->k[i].id == ks->k[i - 1].id) {
            tc_tier_errf(err, errlen, "%s: key id %u appears twice", path, (unsigned)ks->k[i].id);
            goto fail;
        }
    }
    ks->n = n;
    atomic_init(&ks->refs, 1);
    *out = ks;
    return TC_OK;
fail:
    OPENSSL_cleanse(ks->k, n * sizeof(ks->k[0]));
    free(ks);
    return st;
}

/* Checks that the open file @p fd may hold keys: a regular file that only
 * its owner can access. */
static enum tc_status check_file(int fd, const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        tc_tier_errf(err, errlen, "fstat(%s): %s", path, strerror(errno));
        return TC_EIO;
    }
    if (!S_ISREG(sb.st_mode)) {
        tc_tier_errf(err, errlen, "%s is not a regular file; a keyring must be one", path);
        return TC_EPERM;
    }
    if ((sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        tc_tier_errf(
            err, errlen,
            "%s has mode %04o: a keyring must be accessible by its owner only (chmod 600 %s)", path,
            (unsigned)(sb.st_mode & 07777), path);
        return TC_EPERM;
    }
    if (sb.st_size > (off_t)FILE_MAX) {
        tc_tier_errf(err, errlen, "%s is larger than %u bytes: not a keyring", path, FILE_MAX);
        return TC_EINVAL;
    }
    return TC_OK;
}

/* Reads all of @p fd (checked by check_file) into a new buffer. */
static enum tc_status read_all(int fd, const char *path, char **out, size_t *len, char *err,
                               size_t errlen)
{
    char *buf = malloc(FILE_MAX + 1);
    size_t n = 0;
    if (buf == NULL) {
        tc_tier_errf(err, errlen, "out of memory reading %s", path);
        return TC_ENOMEM;
    }
    for (;;) {
        ssize_t r = pread(fd, buf + n, FILE_MAX + 1 - n, (off_t)n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            tc_tier_errf(err, errlen, "read(%s): %s", path, strerror(errno));
            OPENSSL_cleanse(buf, n);
            free(buf);
            return TC_EIO;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
        if (n > FILE_MAX) {
            tc_tier_errf(err, errlen, "%s is larger than %u bytes: not a keyring", path, FILE_MAX);
            OPENSSL_cleanse(buf, n);
            free(buf);
            return TC_EINVAL;
        }
    }
    *out = buf;
    *len = n;
    return TC_OK;
}

/* Loads @p path into a new key set. */
static enum tc_status load(const char *path, int allow_empty, struct keyset **out, char *err,
                           size_t errlen)
{
    /* O_NONBLOCK: a FIFO put where the keyring should be must not hang us
     * before check_file() refuses it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        tc_tier_errf(err, errlen, "open(%s): %s", path, strerror(errno));
        return TC_EIO;
    }
    char *buf = NULL;
    size_t len = 0;
    enum tc_status st = check_file(fd, path, err, errlen);
    if (st == TC_OK) {
        st = read_all(fd, path, &buf, &len, err, errlen);
    }
    close(fd);
    if (st == TC_OK) {
        st = parse(path, buf, len, allow_empty, out, err, errlen);
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    return st;
}

enum tc_status tc_seal_open(const char *path, struct tc_seal **out, char *err, size_t errlen)
{
    struct tc_seal *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        tc_tier_errf(err, errlen, "out of memory");
        return TC_ENOMEM;
    }
    enum tc_status st = load(path, 0, &s->cur, err, errlen);
    if (st != TC_OK) {
        free(s->path);
        free(s);
        return st;
    }
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        keyset_release(s->cur);
        free(s->path);
        free(s);
        tc_tier_errf(err, errlen, "out of memory");
        return TC_ENOMEM;
    }
    atomic_init(&s->gen, 1);
    *out = s;
    return TC_OK;
}

enum tc_status tc_seal_reload(struct tc_seal *s, char *err, size_t errlen)
{
    struct keyset *ks = NULL;
    enum tc_status st = load(s->path, 0, &ks, err, errlen);
    if (st != TC_OK) {
        return st;
    }
    pthread_mutex_lock(&s->lock);
    struct keyset *old = s->cur;
    s->cur = ks;
    /* release: a ctx that sees the new gen (acquire in refresh) then takes
     * the lock anyway; the order only makes the check cheap. */
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
    pthread_mutex_unlock(&s->lock);
    keyset_release(old);
    return TC_OK;
}

void tc_seal_close(struct tc_seal *s)
{
    if (s == NULL) {
        return;
    }
    keyset_release(s->cur);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}

const char *tc_seal_path(const struct tc_seal *s)
{
    return s->path;
}

size_t tc_seal_key_ids(struct tc_seal *s, uint32_t *ids, size_t max)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->cur->n;
    for (size_t i = 0; i < n && i < max; i++) {
        ids[i] = s->cur->k[i].id;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Takes the ring's current set if a reload happened since the last look. */
static void refresh(struct tc_seal_ctx *c)
{
    /* acquire: pairs with the release increment in tc_seal_reload(). */
    uint64_t g = atomic_load_explicit(&c->s->gen, memory_order_acquire);
    if (g == c->gen) {
        return;
    }
    pthread_mutex_lock(&c->s->lock);
    struct keyset *old = c->ks;
    c->ks = c->s->cur;
    c->enc.key = NULL; /* they pointed into the old set */
    c->dec.key = NULL;
    atomic_fetch_add_explicit(&c->ks->refs, 1, memory_order_relaxed);
    c->gen = atomic_load_explicit(&c->s->gen, memory_order_relaxed);
    pthread_mutex_unlock(&c->s->lock);
    keyset_release(old);
}

enum tc_status tc_seal_ctx_create(struct tc_seal *s, struct tc_seal_ctx **out)
{
    struct tc_seal_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return TC_ENOMEM;
    }
    c->s = s;
    c->pool_used = NONCE_POOL;
    c->enc.ev = EVP_CIPHER_CTX_new();
    c->dec.ev = EVP_CIPHER_CTX_new();
    if (c->enc.ev == NULL || c->dec.ev == NULL ||
        EVP_CipherInit_ex(c->enc.ev, EVP_aes_256_gcm(), NULL, NULL, NULL, 1) != 1 ||
        EVP_CipherInit_ex(c->dec.ev, EVP_aes_256_gcm(), NULL, NULL, NULL, 0) != 1) {
        EVP_CIPHER_CTX_free(c->enc.ev);
        EVP_CIPHER_CTX_free(c->dec.ev);
        free(c);
        return TC_ENOMEM;
    }
    refresh(c);
    *out = c;
    return TC_OK;
}

void tc_seal_ctx_destroy(struct tc_seal_ctx *c)
{
    if (c == NULL) {
        return;
    }
    EVP_CIPHER_CTX_free(c->enc.ev); /* wipes the expanded key */
    EVP_CIPHER_CTX_free(c->dec.ev);
    keyset_release(c->ks);
    OPENSSL_cleanse(c->pool, sizeof(c->pool)); /* nonces not used yet */
    free(c);
}

uint32_t tc_seal_current(struct tc_seal_ctx *c)
{
    refresh(c);
    return c->ks->k[c->ks->n - 1].id;
}

/* Feeds @p len bytes through EVP_CipherUpdate, which takes an int length. */
static int update(EVP_CIPHER_CTX *ev, unsigned char *out, const unsigned char *in, size_t len)
{
    while (len > 0) {
        int chunk = len > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)len;
        int outl = 0;
        if (EVP_CipherUpdate(ev, out, &outl, in, chunk) != 1) {
            return 0;
        }
        if (out != NULL) {
            out += chunk;
        }
        in += chunk;
        len -= (size_t)chunk;
    }
    return 1;
}

/* Starts one value in @p d under @p k with nonce @p iv, and feeds it the
 * additional data: @p aad then @p key (one update when they fit together). */
static int start(struct dir *d, int enc, const struct key *k, const unsigned char *iv,
                 const void *aad, size_t aad_len, const void *key, size_t key_len)
{
    if (d->key != k) {
        if (EVP_CipherInit_ex(d->ev, NULL, NULL, k->bytes, NULL, enc) != 1) {
            d->key = NULL;
            return 0;
        }
        d->key = k;
    }
    if (EVP_CipherInit_ex(d->ev, NULL, NULL, NULL, iv, enc) != 1) {
        return 0;
    }
    unsigned char both[64 + 1100];
    if (aad_len <= 64 && key_len <= 1100) {
        memcpy(both, aad, aad_len);
        memcpy(both + aad_len, key, key_len);
        return update(d->ev, NULL, both, aad_len + key_len);
    }
    return update(d->ev, NULL, aad, aad_len) && update(d->ev, NULL, key, key_len);
}

enum tc_status tc_seal_encrypt(struct tc_seal_ctx *c, uint32_t kid, const void *aad, size_t aad_len,
                               const void *key, size_t key_len, const void *plain, size_t len,
                               void *out)
{
    const struct key *k = keyset_find(c->ks, kid);
    unsigned char *o = out;
    int outl = 0;
    if (k == NULL) {
        return TC_ENOTFOUND;
    }
    if (c->pool_used == NONCE_POOL) {
        if (RAND_bytes(c->pool, sizeof(c->pool)) != 1) {
            return TC_EIO;
        }
        c->pool_used = 0;
    }
    unsigned char *nonce = c->pool + c->pool_used++ * TC_SEAL_NONCE_BYTES;
    memcpy(o, nonce, TC_SEAL_NONCE_BYTES);
    OPENSSL_cleanse(nonce, TC_SEAL_NONCE_BYTES); /* never handed out twice */
    if (!start(&c->enc, 1, k, o, aad, aad_len, key, key_len) ||
        !update(c->enc.ev, o + TC_SEAL_NONCE_BYTES, plain, len) ||
        EVP_CipherFinal_ex(c->enc.ev, o + TC_SEAL_NONCE_BYTES + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(c->enc.ev, EVP_CTRL_GCM_GET_TAG, TC_SEAL_TAG_BYTES,
                            o + TC_SEAL_NONCE_BYTES + len) != 1) {
        return TC_EIO;
    }
    return TC_OK;
}

enum tc_status tc_seal_decrypt(struct tc_seal_ctx *c, uint32_t kid, const void *aad, size_t aad_len,
                               const void *key, size_t key_len, void *buf, size_t len,
                               size_t *plain_len)
{
    refresh(c);
    const struct key *k = keyset_find(c->ks, kid);
    unsigned char *b = buf;
    int outl = 0;
    if (k == NULL || len < TC_SEAL_OVERHEAD) {
        return TC_ECORRUPT;
    }
    size_t n = len - TC_SEAL_OVERHEAD;
    unsigned char *ct = b + TC_SEAL_NONCE_BYTES;
    /* In place (out == in, as EVP allows), then moved down over the nonce. */
    if (!start(&c->dec, 0, k, b, aad, aad_len, key, key_len) || !update(c->dec.ev, ct, ct, n) ||
        EVP_CIPHER_CTX_ctrl(c->dec.ev, EVP_CTRL_GCM_SET_TAG, TC_SEAL_TAG_BYTES, ct + n) != 1 ||
        EVP_CipherFinal_ex(c->dec.ev, ct + n, &outl) != 1) {
        return TC_ECORRUPT;
    }
    memmove(b, ct, n);
    *plain_len = n;
    return TC_OK;
}

void tc_seal_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

/* ---- tiercache key new ---------------------------------------------------------------- */

static enum tc_status write_all(int fd, const char *path, const char *p, size_t n, char *err,
                                size_t errlen)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            tc_tier_errf(err, errlen, "write(%s): %s", path, strerror(errno));
            return TC_EIO;
        }
        p += w;
        n -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        tc_tier_errf(err, errlen, "fsync(%s): %s", path, strerror(errno));
        return TC_EIO;
    }
    return TC_OK;
}

/* "ID HEX\n" for a new random key, into @p line (wiped by the caller). */
static enum tc_status new_line(uint32_t id, char *line, size_t cap, size_t *n)
{
    unsigned char k[TC_SEAL_KEY_BYTES];
    static const char hex[] = "0123456789abcdef";
    if (RAND_bytes(k, sizeof(k)) != 1) {
        return TC_EIO;
    }
    int at = snprintf(line, cap, "%u ", (unsigned)id);
    for (size_t i = 0; i < sizeof(k); i++) {
        line[at++] = hex[k[i] >> 4];
        line[at++] = hex[k[i] & 15];
    }
    line[at++] = '\n';
    *n = (size_t)at;
    OPENSSL_cleanse(k, sizeof(k));
    return TC_OK;
}

static const char file_head[] = "# tiercache encryption keyring (docs/security.md). Keep it mode "
                                "0600.\n# One key a line: ID HEX. The highest id encrypts; every "
                                "id decrypts.\n";

/* Creates @p path holding one key, atomically: written to a temporary file
 * (mkstemp: mode 0600 whatever the umask) and linked into place, so that no
 * reader ever sees it empty and an existing file is never replaced. */
static enum tc_status create_file(const char *path, char *err, size_t errlen)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    char line[128];
    size_t n = 0;
    if (tmp == NULL) {
        tc_tier_errf(err, errlen, "out of memory");
        return TC_ENOMEM;
    }
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        tc_tier_errf(err, errlen, "mkstemp(%s): %s", tmp, strerror(errno));
        free(tmp);
        return TC_EIO;
    }
    enum tc_status st = new_line(1, line, sizeof(line), &n);
    if (st != TC_OK) {
        tc_tier_errf(err, errlen, "no randomness for a key (RAND_bytes failed)");
    }
    if (st == TC_OK && fchmod(fd, 0600) != 0) {
        tc_tier_errf(err, errlen, "fchmod(%s, 0600): %s", tmp, strerror(errno));
        st = TC_EIO;
    }
    if (st == TC_OK) {
        st = write_all(fd, tmp, file_head, sizeof(file_head) - 1, err, errlen);
    }
    if (st == TC_OK) {
        st = write_all(fd, tmp, line, n, err, errlen);
    }
    OPENSSL_cleanse(line, sizeof(line));
    close(fd);
    if (st == TC_OK && link(tmp, path) != 0) {
        st = errno == EEXIST ? TC_EEXIST : TC_EIO;
        if (st == TC_EIO) {
            tc_tier_errf(err, errlen, "link(%s, %s): %s", tmp, path, strerror(errno));
        }
    }
    unlink(tmp);
    free(tmp);
    return st;
}

/* Appends a key with the next id to the existing keyring @p path. */
static enum tc_status append_key(const char *path, uint32_t *id, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        tc_tier_errf(err, errlen, "open(%s): %s%s", path, strerror(errno),
                     errno == ELOOP ? " (a symlink: give the file itself)" : "");
        return TC_EIO;
    }
    enum tc_status st = check_file(fd, path, err, errlen);
    if (st == TC_OK && flock(fd, LOCK_EX) != 0) {
        tc_tier_errf(err, errlen, "flock(%s): %s", path, strerror(errno));
        st = TC_EIO;
    }
    char *buf = NULL;
    size_t len = 0;
    struct keyset *ks = NULL;
    if (st == TC_OK) {
        st = read_all(fd, path, &buf, &len, err, errlen);
    }
    if (st == TC_OK) {
        st = parse(path, buf, len, 1, &ks, err, errlen);
    }
    if (st == TC_OK) {
        uint32_t top = ks->n > 0 ? ks->k[ks->n - 1].id : 0;
        keyset_release(ks);
        if (top == UINT32_MAX) {
            tc_tier_errf(err, errlen, "%s: the highest key id is already %u", path, (unsigned)top);
            st = TC_EEXIST;
        } else {
            char line[130];
            size_t n = 0;
            line[0] = '\n';
            /* A last line without its newline would swallow the new key. */
            int nl = len > 0 && buf[len - 1] != '\n';
            if (new_line(top + 1, line + nl, sizeof(line) - 1, &n) != TC_OK) {
                tc_tier_errf(err, errlen, "no randomness for a key (RAND_bytes failed)");
                st = TC_EIO;
            } else if (lseek(fd, 0, SEEK_END) < 0) {
                tc_tier_errf(err, errlen, "lseek(%s): %s", path, strerror(errno));
                st = TC_EIO;
            } else {
                st = write_all(fd, path, line, n + (size_t)nl, err, errlen);
            }
            OPENSSL_cleanse(line, sizeof(line));
            *id = top + 1;
        }
    }
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    close(fd); /* drops the lock */
    return st;
}

enum tc_status tc_seal_keyfile_add(const char *path, uint32_t *id, int *created, char *err,
                                   size_t errlen)
{
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    enum tc_status st = create_file(path, err, errlen);
    if (st == TC_OK) {
        *id = 1;
        *created = 1;
        return TC_OK;
    }
    if (st != TC_EEXIST) {
        return st;
    }
    *created = 0;
    return append_key(path, id, err, errlen);
}
