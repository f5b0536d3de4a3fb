/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Access control (see auth.h): the tokens file, the token sets and their
 * publication to the workers, the Host and Origin lists, protected mode.
 */
#include "src/auth.h"
#include "src/log.h"
#include "src/scope.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define DIGEST_LEN   32
#define NAME_MAX_LEN 64
/* A tokens file is a few lines per client; this bounds what a mistake
 * (pointing at a log file) can make us read. */
#define FILE_MAX ((size_t)16 << 20)
/* Longer Authorization values are not ours: a 32-byte token is 43 chars. */
#define TOKEN_MAX 4096
/* Per-worker cache of tokens verified under the current set: a hit costs a
 * fast hash and one CRYPTO_memcmp instead of SHA-256 and a compare with
 * every entry (docs/benchmarks.md: ~7,700 instructions per request without
 * it, on a hit path of ~10,500). Direct-mapped; a token no entry matches is
 * never cached, so guessing always pays the full check. */
#define CACHE_SLOTS     64
#define CACHE_TOKEN_MAX 96

struct entry {
    unsigned char digest[DIGEST_LEN];
    unsigned scopes;
    char name[NAME_MAX_LEN + 1];
};

/* One immutable token set, shared by the workers that hold a reference. */
struct tokens {
    _Atomic unsigned long refs;
    size_t n;
    struct entry e[];
};

struct host_entry {
    char name[256]; /* lower case; an IPv6 literal keeps its brackets */
    unsigned port;  /* 0: any port */
};

struct tc_auth {
    char *path; /* the tokens file, NULL if none */
    int client_certs;
    EVP_MD *md;          /* SHA-256, fetched once: an implicit fetch per digest costs a lookup */
    uint64_t cache_seed; /* random: where a token lands in a view's cache is not predictable */
    /* The published set: cur changes under lock, then gen is bumped. */
    pthread_mutex_t lock;
    struct tokens *cur;
    _Atomic uint64_t gen;
    _Atomic unsigned long long reload_failures;
    struct host_entry *hosts;
    size_t nhosts;
    int any_host; /* allowed-hosts has "*" */
    int any_ip;   /* default hosts on a wildcard listen: any IP literal */
    char **origins;
    size_t norigins;
};

struct cached_token {
    size_t len; /* 0: empty */
    unsigned scopes;
    char tok[CACHE_TOKEN_MAX];
};

struct tc_auth_view {
    struct tc_auth *a;
    struct tokens *t; /* a reference, or NULL when there is no tokens file */
    uint64_t gen;
    EVP_MD_CTX *ctx;
    /* Tokens of t verified by this worker; emptied when t changes. */
    struct cached_token cache[CACHE_SLOTS];
};

static const char *const failure_names[] = {
#define TC_X(name, help) #name,
    TC_AUTH_FAILURES(TC_X)
#undef TC_X
};

const char *tc_auth_failure_name(enum tc_auth_failure f)
{
    return (unsigned)f < TC_AUTH_FAIL_N ? failure_names[f] : "?";
}

/* ---- token sets ----------------------------------------------------------------------- */

static void tokens_release(struct tokens *t)
{
    /* acq_rel: the last releaser sees every other holder's reads done. */
    if (t != NULL && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        OPENSSL_cleanse(t->e, t->n * sizeof(t->e[0]));
        free(t);
    }
}

int tc_auth_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '@' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Splits the next blank-separated field of [*p, end) into [*f, *f + *n). */
static int next_field(const char **p, const char *end, const char **f, size_t *n)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t')) {
        s++;
    }
    const char *e = s;
    while (e < end && *e != ' ' && *e != '\t') {
        e++;
    }
    *f = s;
    *n = (size_t)(e - s);
    *p = e;
    return e > s;
}

/* Parses one line (without its newline) into *out; 0 for a blank or
 * comment line, 1 for an entry, -1 with @p err filled. */
static int parse_line(const char *line, size_t len, struct entry *out, char *err, size_t elen)
{
    const char *p = line, *end = line + len;
    if (len > 0 && end[-1] == '\r') {
        end--;
    }
    const char *f;
    size_t n;
    if (!next_field(&p, end, &f, &n) || f[0] == '#') {
        return 0;
    }
    if (n > NAME_MAX_LEN) {
        snprintf(err, elen, "the token name is longer than %d characters", NAME_MAX_LEN);
        return -1;
    }
    memcpy(out->name, f, n);
    out->name[n] = '\0';
    if (!tc_auth_name_valid(out->name)) {
        snprintf(err, elen, "bad token name (use letters, digits and . _ @ -)");
        return -1;
    }
    if (!next_field(&p, end, &f, &n)) {
        snprintf(err, elen, "expected NAME SCOPES sha256:HEX, found only a name");
        return -1;
    }
    if (tc_scope_parse(f, n, &out->scopes) != TC_OK) {
        snprintf(err, elen,
                 "bad scopes '%.*s' (comma-separated, no spaces: read, write, locks, "
                 "admin)",
                 (int)(n > 64 ? 64 : n), f);
        return -1;
    }
    if (!next_field(&p, end, &f, &n)) {
        snprintf(err, elen, "expected NAME SCOPES sha256:HEX, the digest is missing");
        return -1;
    }
    static const char pfx[] = "sha256:";
    if (n != sizeof(pfx) - 1 + 2 * DIGEST_LEN || memcmp(f, pfx, sizeof(pfx) - 1) != 0) {
        snprintf(err, elen,
                 "the digest must be sha256: and 64 hex digits (the file holds the token's "
                 "SHA-256, never the token; see 'tiercache token new')");
        return -1;
    }
    f += sizeof(pfx) - 1;
    for (size_t i = 0; i < DIGEST_LEN; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)f[2 * i]);
        int lo = OPENSSL_hexchar2int((unsigned char)f[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(err, elen, "the digest has a character that is not a hex digit");
            return -1;
        }
        out->digest[i] = (unsigned char)(hi * 16 + lo);
    }
    if (next_field(&p, end, &f, &n) && f[0] != '#') {
        snprintf(err, elen, "unexpected text after the digest ('#' starts a comment)");
        return -1;
    }
    return 1;
}

/* Reads @p path whole, refusing what a tokens file must not be. */
static char *read_tokens_file(const char *path, size_t *len, char *err, size_t elen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, elen, "auth-tokens-file %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    /* fstat of the open file: what is checked is what is read. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, elen, "auth-tokens-file %s: fstat failed: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, elen, "auth-tokens-file %s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, elen,
                 "auth-tokens-file %s: mode %04o lets group or others read it; it must be "
                 "readable by its owner only (chmod 600 %s)",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return NULL;
    }
    if ((size_t)st.st_size > FILE_MAX) {
        snprintf(err, elen, "auth-tokens-file %s: larger than %zu bytes", path, FILE_MAX);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        snprintf(err, elen, "auth-tokens-file %s: out of memory", path);
        close(fd);
        return NULL;
    }
    for (;;) {
        if (n == cap - 1) {
            break; /* grew while read: what fstat saw is what we take */
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            snprintf(err, elen, "auth-tokens-file %s: read failed: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Builds a token set from the file at @p path (one reference, the caller's). */
static struct tokens *tokens_load(const char *path, char *err, size_t elen)
{
    size_t len;
    char *buf = read_tokens_file(path, &len, err, elen);
    if (buf == NULL) {
        return NULL;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) {
        lines += buf[i] == '\n';
    }
    struct tokens *t = calloc(1, sizeof(*t) + lines * sizeof(t->e[0]));
    if (t == NULL) {
        snprintf(err, elen, "auth-tokens-file %s: out of memory", path);
        free(buf);
        return NULL;
    }
    atomic_init(&t->refs, 1);
    const char *p = buf, *end = buf + len;
    for (unsigned lineno = 1; p < end; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        char why[256];
        int rc = parse_line(p, (size_t)(le - p), &t->e[t->n], why, sizeof(why));
        if (rc == 1) {
            for (size_t k = 0; k < t->n; k++) {
                if (strcmp(t->e[k].name, t->e[t->n].name) == 0) {
                    snprintf(why, sizeof(why), "the name '%s' is already used above", t->e[k].name);
                    rc = -1;
                } else if (memcmp(t->e[k].digest, t->e[t->n].digest, DIGEST_LEN) == 0) {
                    snprintf(why, sizeof(why), "the same digest as '%s' above", t->e[k].name);
                    rc = -1;
                }
            }
        }
        if (rc < 0) {
            snprintf(err, elen, "auth-tokens-file %s:%u: %s", path, lineno, why);
            OPENSSL_cleanse(buf, len);
            free(buf);
            tokens_release(t);
            return NULL;
        }
        t->n += (size_t)rc;
        p = le + 1;
    }
    OPENSSL_cleanse(buf, len);
    free(buf);
    return t;
}

/* ---- host and origin lists ------------------------------------------------------------ */

/* Splits "name[:port]" or "[v6][:port]" of @p n bytes; -1 if malformed. */
static int split_host(const char *s, size_t n, struct host_entry *h)
{
    size_t name_len;
    const char *port = NULL;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL) {
            return -1;
        }
        name_len = (size_t)(close - s) + 1;
        if (name_len < n) {
            if (s[name_len] != ':') {
                return -1;
            }
            port = s + name_len + 1;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        name_len = colon != NULL ? (size_t)(colon - s) : n;
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (name_len == 0 || name_len >= sizeof(h->name)) {
        return -1;
    }
    for (size_t i = 0; i < name_len; i++) {
        char ch = s[i];
        h->name[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        if (ch == ' ' || ch == '\t' || ch == '/' || ch == '@' || (unsigned char)ch < 0x21) {
            return -1;
        }
    }
    h->name[name_len] = '\0';
    h->port = 0;
    if (port != NULL) {
        size_t plen = (size_t)(s + n - port);
        unsigned v = 0;
        if (plen == 0 || plen > 5) {
            return -1;
        }
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9') {
                return -1;
            }
            v = v * 10 + (unsigned)(port[i] - '0');
        }
        if (v == 0 || v > 65535) {
            return -1;
        }
        h->port = v;
    }
    return 0;
}

/* Calls @p fn on each comma- or blank-separated item of @p list. */
static int each_item(const char *list, int (*fn)(struct tc_auth *, const char *, size_t),
                     struct tc_auth *a)
{
    const char *p = list;
    while (*p != '\0') {
        while (*p == ',' || *p == ' ' || *p == '\t') {
            p++;
        }
        size_t n = strcspn(p, ", \t");
        if (n > 0 && fn(a, p, n) != 0) {
            return -1;
        }
        p += n;
    }
    return 0;
}

static int add_host(struct tc_auth *a, const char *s, size_t n)
{
    if (n == 1 && s[0] == '*') {
        a->any_host = 1;
        return 0;
    }
    struct host_entry h;
    if (split_host(s, n, &h) != 0) {
        return -1;
    }
    struct host_entry *nh = realloc(a->hosts, (a->nhosts + 1) * sizeof(*nh));
    if (nh == NULL) {
        return -1;
    }
    a->hosts = nh;
    a->hosts[a->nhosts++] = h;
    return 0;
}

static int add_origin(struct tc_auth *a, const char *s, size_t n)
{
    while (n > 0 && s[n - 1] == '/') {
        n--; /* "https://app.example/" as written in a browser's address bar */
    }
    const char *rest = NULL;
    if (n > 7 && strncasecmp(s, "http://", 7) == 0) {
        rest = s + 7;
    } else if (n > 8 && strncasecmp(s, "https://", 8) == 0) {
        rest = s + 8;
    } else if (!(n == 4 && strncasecmp(s, "null", 4) == 0)) {
        return -1;
    }
    for (const char *c = rest; c != NULL && c < s + n; c++) {
        /* An origin has no path; and it is echoed in a header: no controls. */
        if (*c == '/' || (unsigned char)*c < 0x21 || *c == 0x7f) {
            return -1;
        }
    }
    char **no = realloc(a->origins, (a->norigins + 1) * sizeof(*no));
    if (no == NULL) {
        return -1;
    }
    a->origins = no;
    a->origins[a->norigins] = strndup(s, n);
    return a->origins[a->norigins++] != NULL ? 0 : -1;
}

static int is_wildcard(const char *host)
{
    return host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
           strcmp(host, "*") == 0;
}

static int default_hosts(struct tc_auth *a, const char *listen_host)
{
    static const char *const fixed[] = {"localhost", "127.0.0.1", "[::1]"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (add_host(a, fixed[i], strlen(fixed[i])) != 0) {
            return -1;
        }
    }
    if (listen_host == NULL) {
        return 0;
    }
    if (is_wildcard(listen_host)) {
        /* Every address of the host is a listen address; an IP literal in
         * Host cannot be a rebinding attack, which needs a DNS name. */
        a->any_ip = 1;
        return 0;
    }
    char h[300];
    snprintf(h, sizeof(h), strchr(listen_host, ':') != NULL ? "[%s]" : "%s", listen_host);
    return add_host(a, h, strlen(h));
}

static int is_ip_literal(const char *name)
{
    unsigned char buf[16];
    if (name[0] == '[') {
        char v6[64];
        size_t n = strlen(name);
        if (n < 3 || n - 2 >= sizeof(v6) || name[n - 1] != ']') {
            return 0;
        }
        memcpy(v6, name + 1, n - 2);
        v6[n - 2] = '\0';
        return inet_pton(AF_INET6, v6, buf) == 1;
    }
    return inet_pton(AF_INET, name, buf) == 1;
}

/* 1 when @p host ("name" or "name:port", any case) is entry @p e. On every
 * request: compares in place, without the copy split_host() makes. */
static int host_matches(const struct host_entry *e, const char *host)
{
    size_t i = 0;
    for (; e->name[i] != '\0'; i++) {
        char ch = host[i];
        if ((ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch) != e->name[i]) {
            return 0;
        }
    }
    if (host[i] == '\0') {
        return e->port == 0;
    }
    if (host[i] != ':') {
        return 0;
    }
    unsigned v = 0, digits = 0;
    for (const char *p = host + i + 1; *p != '\0'; p++, digits++) {
        if (*p < '0' || *p > '9' || digits == 5) {
            return 0;
        }
        v = v * 10 + (unsigned)(*p - '0');
    }
    return digits > 0 && v > 0 && v <= 65535 && (e->port == 0 || e->port == v);
}

int tc_auth_host_allowed(const struct tc_auth *a, const char *host)
{
    if (host == NULL || a->any_host) {
        return 1;
    }
    for (size_t i = 0; i < a->nhosts; i++) {
        if (host_matches(&a->hosts[i], host)) {
            return 1;
        }
    }
    struct host_entry h;
    return a->any_ip && split_host(host, strlen(host), &h) == 0 && is_ip_literal(h.name);
}

int tc_auth_origin_allowed(const struct tc_auth *a, const char *origin)
{
    size_t n = strlen(origin);
    for (size_t i = 0; i < a->norigins; i++) {
        if (strlen(a->origins[i]) == n && strncasecmp(a->origins[i], origin, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- the server's state ----------------------------------------------------------------- */

enum tc_status tc_auth_create(const struct tc_auth_options *o, struct tc_auth **out, char *err,
                              size_t len)
{
    err[0] = '\0';
    *out = NULL;
    struct tc_auth *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, len, "out of memory");
        return TC_ENOMEM;
    }
    pthread_mutex_init(&a->lock, NULL);
    a->client_certs = o->client_certs;
    a->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (a->md == NULL) {
        snprintf(err, len, "OpenSSL has no SHA-256");
        goto fail;
    }
    if (RAND_bytes((unsigned char *)&a->cache_seed, sizeof(a->cache_seed)) != 1) {
        snprintf(err, len, "the random generator failed");
        goto fail;
    }
    if (o->allowed_hosts != NULL && o->allowed_hosts[0] != '\0') {
        if (each_item(o->allowed_hosts, add_host, a) != 0) {
            snprintf(err, len,
                     "bad value '%s' for allowed-hosts (expected NAME or NAME:PORT, [IPv6] or "
                     "[IPv6]:PORT, or *, separated by commas)",
                     o->allowed_hosts);
            goto fail;
        }
    } else if (default_hosts(a, o->listen_host) != 0 ||
               (o->listen_tls_host != NULL && o->listen_tls_host[0] != '\0' &&
                default_hosts(a, o->listen_tls_host) != 0)) {
        snprintf(err, len, "out of memory");
        goto fail;
    }
    if (o->allowed_origins != NULL && each_item(o->allowed_origins, add_origin, a) != 0) {
        snprintf(err, len,
                 "bad value '%s' for allowed-origins (expected origins such as "
                 "https://app.example or http://localhost:3000, no path, separated by commas)",
                 o->allowed_origins);
        goto fail;
    }
    if (o->tokens_file != NULL && o->tokens_file[0] != '\0') {
        a->path = strdup(o->tokens_file);
        if (a->path == NULL) {
            snprintf(err, len, "out of memory");
            goto fail;
        }
        a->cur = tokens_load(a->path, err, len);
        if (a->cur == NULL) {
            goto fail;
        }
        if (a->cur->n == 0) {
            tc_log(TC_LOG_WARN, "auth-tokens-file %s has no tokens: only public routes answer",
                   a->path);
        }
    }
    *out = a;
    return TC_OK;
fail:
    tc_auth_destroy(a);
    return TC_EINVAL;
}

void tc_auth_destroy(struct tc_auth *a)
{
    if (a == NULL) {
        return;
    }
    tokens_release(a->cur);
    EVP_MD_free(a->md);
    free(a->path);
    free(a->hosts);
    for (size_t i = 0; i < a->norigins; i++) {
        free(a->origins[i]);
    }
    free(a->origins);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

enum tc_status tc_auth_reload(struct tc_auth *a, char *err, size_t len)
{
    err[0] = '\0';
    if (a->path == NULL) {
        return TC_OK;
    }
    struct tokens *t = tokens_load(a->path, err, len);
    if (t == NULL) {
        atomic_fetch_add_explicit(&a->reload_failures, 1, memory_order_relaxed);
        tc_log(TC_LOG_WARN, "SIGHUP: %s; the tokens loaded before stay in use", err);
        return TC_EINVAL;
    }
    pthread_mutex_lock(&a->lock);
    struct tokens *old = a->cur;
    a->cur = t;
    /* Release: a worker that sees the new gen, then takes the lock, finds cur set. */
    atomic_fetch_add_explicit(&a->gen, 1, memory_order_release);
    pthread_mutex_unlock(&a->lock);
    tokens_release(old);
    tc_log(TC_LOG_INFO, "SIGHUP: auth-tokens-file %s reloaded: %zu tokens", a->path, t->n);
    return TC_OK;
}

int tc_auth_required(const struct tc_auth *a)
{
    return a->path != NULL || a->client_certs;
}

size_t tc_auth_ntokens(struct tc_auth *a)
{
    pthread_mutex_lock(&a->lock);
    size_t n = a->cur != NULL ? a->cur->n : 0;
    pthread_mutex_unlock(&a->lock);
    return n;
}

unsigned long long tc_auth_reload_failures(struct tc_auth *a)
{
    return atomic_load_explicit(&a->reload_failures, memory_order_relaxed);
}

/* ---- the workers' side -------------------------------------------------------------------- */

/* Takes a reference to the published set; the lock keeps it alive between
 * reading cur and taking the reference (a reload may release it). */
static void view_refresh(struct tc_auth_view *v)
{
    struct tc_auth *a = v->a;
    pthread_mutex_lock(&a->lock);
    struct tokens *t = a->cur;
    if (t != NULL) {
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    }
    v->gen = atomic_load_explicit(&a->gen, memory_order_relaxed);
    pthread_mutex_unlock(&a->lock);
    tokens_release(v->t);
    v->t = t;
    /* What was verified against the old set proves nothing now (a token
     * may have been removed). */
    OPENSSL_cleanse(v->cache, sizeof(v->cache));
}

struct tc_auth_view *tc_auth_view_create(struct tc_auth *a)
{
    struct tc_auth_view *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    v->a = a;
    v->ctx = EVP_MD_CTX_new();
    if (v->ctx == NULL) {
        free(v);
        return NULL;
    }
    view_refresh(v);
    return v;
}

void tc_auth_view_destroy(struct tc_auth_view *v)
{
    if (v == NULL) {
        return;
    }
    tokens_release(v->t);
    EVP_MD_CTX_free(v->ctx);
    OPENSSL_cleanse(v->cache, sizeof(v->cache));
    free(v);
}

enum tc_auth_result tc_auth_check(struct tc_auth_view *v, const char *authorization,
                                  unsigned *grant)
{
    *grant = 0;
    /* "Bearer" in any case (RFC 9110 11.1), then spaces; without
     * strncasecmp's locale machinery on every request: c | 0x20 maps only
     * 'B' and 'b' to 'b' (and so for each letter). */
    static const char bearer[] = "bearer ";
    for (size_t i = 0; i < 7; i++) {
        if (authorization == NULL || (authorization[i] | (i < 6 ? 0x20 : 0)) != bearer[i]) {
            return TC_AUTH_MISSING;
        }
    }
    const char *tok = authorization + 7;
    while (*tok == ' ') {
        tok++;
    }
    size_t n = strlen(tok);
    while (n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t')) {
        n--;
    }
    if (n == 0) {
        return TC_AUTH_MISSING;
    }
    if (n > TOKEN_MAX) {
        return TC_AUTH_INVALID;
    }
    /* Acquire: pairs with the release in tc_auth_reload. */
    if (atomic_load_explicit(&v->a->gen, memory_order_acquire) != v->gen) {
        view_refresh(v);
    }
    const struct tokens *t = v->t;
    if (t == NULL) {
        return TC_AUTH_INVALID;
    }
    struct cached_token *c = NULL;
    if (n <= CACHE_TOKEN_MAX) {
        c = &v->cache[XXH3_64bits_withSeed(tok, n, v->a->cache_seed) % CACHE_SLOTS];
        if (c->len == n && CRYPTO_memcmp(c->tok, tok, n) == 0) {
            *grant = c->scopes;
            return TC_AUTH_OK;
        }
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    if (EVP_DigestInit_ex2(v->ctx, v->a->md, NULL) != 1 || EVP_DigestUpdate(v->ctx, tok, n) != 1 ||
        EVP_DigestFinal_ex(v->ctx, d, &dlen) != 1 || dlen != DIGEST_LEN) {
        return TC_AUTH_INVALID;
    }
    /* Every entry is compared, a match or not: no early exit, no branch on
     * the result, so the time depends on the number of entries only. */
    unsigned scopes = 0, found = 0;
    for (size_t i = 0; i < t->n; i++) {
        unsigned eq = (unsigned)(CRYPTO_memcmp(d, t->e[i].digest, DIGEST_LEN) == 0);
        scopes |= t->e[i].scopes & (0u - eq);
        found |= eq;
    }
    OPENSSL_cleanse(d, sizeof(d));
    if (!found) {
        return TC_AUTH_INVALID;
    }
    if (c != NULL) {
        memcpy(c->tok, tok, n);
        c->len = n;
        c->scopes = scopes;
    }
    *grant = scopes;
    return TC_AUTH_OK;
}

/* ---- protected mode ------------------------------------------------------------------------ */

static int addr_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        return IN6_IS_ADDR_LOOPBACK(a6) ||
               (memcmp(a6->s6_addr, mapped, 12) == 0 && a6->s6_addr[12] == 127);
    }
    return 0;
}

/* 1 when every address @p host names is a loopback address. */
static int host_loopback(const char *host)
{
    if (host[0] == '/' || strncmp(host, "unix:", 5) == 0) {
        return 1; /* a unix socket: reachable from this host only */
    }
    if (is_wildcard(host)) {
        return 0;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
        return 0; /* the listen itself will fail and say why */
    }
    int all = 1;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        all &= addr_loopback(ai->ai_addr);
    }
    freeaddrinfo(res);
    return all;
}

enum tc_status tc_auth_protected_mode(const char *listen_host, int has_tokens, int has_client_certs,
                                      int insecure, char *err, size_t len)
{
    err[0] = '\0';
    if (has_tokens || has_client_certs || insecure || host_loopback(listen_host)) {
        return TC_OK;
    }
    snprintf(err, len,
             "protected mode: listen address '%s' is not loopback and no client must prove who "
             "it is: anyone who can reach the port could read, overwrite and delete every key. "
             "Set auth-tokens-file (see 'tiercache token new' and docs/security.md), or say "
             "insecure = yes to run without access control",
             listen_host[0] ? listen_host : "0.0.0.0");
    return TC_EINVAL;
}

/* ---- new tokens ----------------------------------------------------------------------------- */

enum tc_status tc_auth_token_generate(char *token, size_t tlen, char *hex, size_t hlen)
{
    unsigned char raw[32], b64[48], d[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    if (tlen < 44 || hlen < 2 * DIGEST_LEN + 1 || RAND_bytes(raw, sizeof(raw)) != 1) {
        return TC_EIO;
    }
    int n = EVP_EncodeBlock(b64, raw, sizeof(raw));
    OPENSSL_cleanse(raw, sizeof(raw));
    /* base64url (RFC 4648 section 5) without padding: no character that
     * needs quoting in a header, a URL or a shell. */
    size_t k = 0;
    for (int i = 0; i < n && b64[i] != '='; i++) {
        token[k++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    }
    token[k] = '\0';
    OPENSSL_cleanse(b64, sizeof(b64));
    if (EVP_Digest(token, k, d, &dlen, EVP_sha256(), NULL) != 1 || dlen != DIGEST_LEN) {
        return TC_EIO;
    }
    for (unsigned i = 0; i < dlen; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
    return TC_OK;
}
