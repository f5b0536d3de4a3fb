/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * TLS for the client listener: OpenSSL 3 does all the cryptography; this
 * file chooses the policy (src/tls.h), loads and reloads the files, maps
 * client certificate subjects to scopes and turns OpenSSL's results into
 * enum tc_tls_io for src/http.c.
 */
#include "src/tls.h"
#include "src/log.h"
#include "src/scope.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct scope_rule {
    char *subject; /* "CN=name" (is_cn: name only) or a whole RFC 2253 DN */
    int is_cn;
    unsigned scopes;
};

struct tc_tls {
    char *cert, *key, *client_ca; /* the files, re-read on reload */
    struct scope_rule *rules;     /* fixed for the life of the server */
    size_t nrules;
    pthread_mutex_t lock; /* guards ctx: workers take a reference while main swaps it */
    SSL_CTX *ctx;         /* for new connections; open ones hold their own reference */
};

struct tc_tls_conn {
    SSL *ssl;
    const struct tc_tls *tls;
    unsigned scopes;
    int dead; /* a fatal error or the peer's close: no close_notify, no more I/O */
};

static void set_err(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (len > 0) {
        vsnprintf(err, len, fmt, ap);
    }
    va_end(ap);
}

/* The reason of OpenSSL's last error, then an empty queue for the next call. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : "unknown error";
}

/* ---- the scope mapping ------------------------------------------------------------------ */

static void rules_free(struct scope_rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rules[i].subject);
    }
    free(rules);
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* "SUBJECT SCOPES; SUBJECT SCOPES; ..." into rules (see src/tls.h). */
static enum tc_status rules_parse(const char *s, struct scope_rule **out, size_t *nout, char *err,
                                  size_t errlen)
{
    struct scope_rule *rules = NULL;
    size_t n = 0;
    *out = NULL;
    *nout = 0;
    if (s == NULL) {
        return TC_OK;
    }
    while (*s != '\0') {
        size_t len = strcspn(s, ";");
        const char *a = s, *b = s + len;
        s = *b == ';' ? b + 1 : b;
        while (a < b && is_space(*a)) {
            a++;
        }
        while (b > a && is_space(b[-1])) {
            b--;
        }
        if (a == b) {
            continue; /* an empty entry, as after a trailing ';' */
        }
        const char *sp = b;
        while (sp > a && !is_space(sp[-1])) {
            sp--;
        }
        const char *subj_end = sp;
        while (subj_end > a && is_space(subj_end[-1])) {
            subj_end--;
        }
        unsigned scopes = 0;
        if (subj_end == a || tc_scope_parse(sp, (size_t)(b - sp), &scopes) != TC_OK) {
            set_err(err, errlen,
                    "tls-client-scopes: bad entry '%.*s' (expected SUBJECT SCOPES, e.g. "
                    "'CN=app1 read,write'; scopes: read, write, locks, admin)",
                    (int)(b - a), a);
            rules_free(rules, n);
            return TC_EINVAL;
        }
        size_t slen = (size_t)(subj_end - a);
        if (slen < 4 || memchr(a, '=', slen) == NULL) {
            set_err(err, errlen,
                    "tls-client-scopes: '%.*s' is not a subject (expected CN=NAME or a DN such "
                    "as CN=app1,O=Example)",
                    (int)slen, a);
            rules_free(rules, n);
            return TC_EINVAL;
        }
        struct scope_rule *grown = realloc(rules, (n + 1) * sizeof(*rules));
        if (grown == NULL) {
            rules_free(rules, n);
            return TC_ENOMEM;
        }
        rules = grown;
        int is_cn = strncmp(a, "CN=", 3) == 0 && memchr(a, ',', slen) == NULL;
        const char *subj = is_cn ? a + 3 : a;
        size_t sublen = is_cn ? slen - 3 : slen;
        rules[n].subject = strndup(subj, sublen);
        if (rules[n].subject == NULL) {
            rules_free(rules, n);
            return TC_ENOMEM;
        }
        rules[n].is_cn = is_cn;
        rules[n].scopes = scopes;
        n++;
    }
    *out = rules;
    *nout = n;
    return TC_OK;
}

static unsigned rules_match(const struct scope_rule *rules, size_t n, const char *cn,
                            const char *dn)
{
    for (size_t i = 0; i < n; i++) {
        const char *have = rules[i].is_cn ? cn : dn;
        if (have != NULL && strcmp(have, rules[i].subject) == 0) {
            return rules[i].scopes;
        }
    }
    return 0;
}

enum tc_status tc_tls_scopes_match(const char *mapping, const char *cn, const char *dn,
                                   unsigned *scopes, char *err, size_t errlen)
{
    struct scope_rule *rules;
    size_t n;
    enum tc_status st = rules_parse(mapping, &rules, &n, err, errlen);
    if (st != TC_OK) {
        return st;
    }
    *scopes = rules_match(rules, n, cn, dn);
    rules_free(rules, n);
    return TC_OK;
}

/* The scopes of the peer's verified certificate: its single commonName and
 * its RFC 2253 subject against the rules. A subject with several CNs maps
 * by its whole DN only (which CN would count is not obvious). */
static unsigned peer_scopes(const struct tc_tls_conn *c)
{
    const struct tc_tls *t = c->tls;
    if (t->nrules == 0) {
        return 0;
    }
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (peer == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK) {
        return 0;
    }
    X509_NAME *name = X509_get_subject_name(peer);
    unsigned char *cn = NULL;
    int at = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (at >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, at) < 0) {
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at));
        int len = ASN1_STRING_to_UTF8(&cn, v);
        if (len < 0 || memchr(cn, '\0', (size_t)len) != NULL) {
            /* A NUL inside the name must not end it early on our side. */
            OPENSSL_free(cn);
            cn = NULL;
        }
    }
    char dn[1024];
    dn[0] = '\0';
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL) {
        if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
            int n = BIO_read(bio, dn, sizeof(dn) - 1);
            dn[n > 0 ? n : 0] = '\0';
        }
        BIO_free(bio);
    }
    unsigned s = rules_match(t->rules, t->nrules, (const char *)cn, dn[0] ? dn : NULL);
    OPENSSL_free(cn);
    ERR_clear_error();
    return s;
}

/* ---- the context -------------------------------------------------------------------------- */

/* ALPN: HTTP/1.1 is all we speak. A client that offers ALPN without it
 * (an h2-only client) is refused with no_application_protocol rather than
 * left to send HTTP/2 frames to an HTTP/1.1 parser. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char http11[] = "\x08http/1.1";
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* A file we can read, with a sentence naming it otherwise. */
static enum tc_status check_readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        set_err(err, errlen, "%s '%s': %s", what, path, strerror(e));
        return e == EACCES ? TC_EPERM : TC_EIO;
    }
    fclose(f);
    return TC_OK;
}

static SSL_CTX *ctx_build(const struct tc_tls *t, char *err, size_t errlen, enum tc_status *st)
{
    *st = TC_EINVAL;
    if (t->cert[0] == '\0' || t->key[0] == '\0') {
        set_err(err, errlen, "listen-tls needs tls-cert and tls-key (PEM files)");
        return NULL;
    }
    if ((*st = check_readable("tls-cert", t->cert, err, errlen)) != TC_OK ||
        (*st = check_readable("tls-key", t->key, err, errlen)) != TC_OK ||
        (t->client_ca[0] != '\0' &&
         (*st = check_readable("tls-client-ca", t->client_ca, err, errlen)) != TC_OK)) {
        return NULL;
    }
    struct stat sb;
    if (stat(t->key, &sb) != 0) {
        set_err(err, errlen, "tls-key '%s': %s", t->key, strerror(errno));
        *st = TC_EIO;
        return NULL;
    }
    if ((sb.st_mode & 077) != 0) {
        set_err(err, errlen,
                "tls-key '%s' is accessible by group or others (mode %03o): chmod 600 it", t->key,
                (unsigned)(sb.st_mode & 0777));
        *st = TC_EPERM;
        return NULL;
    }
    *st = TC_EINVAL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        set_err(err, errlen, "TLS: cannot create a context: %s", ssl_reason());
        *st = TC_ENOMEM;
        return NULL;
    }
    /* Versions only; the cipher suites are OpenSSL's defaults (its security
     * level included), which track current advice better than a list here. */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        set_err(err, errlen, "TLS: cannot set the minimum version: %s", ssl_reason());
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    /* Partial writes and a moving buffer let SSL_write be used like
     * write(2) on http.c's output buffer; released buffers keep an idle
     * keep-alive connection at a few hundred bytes of TLS state. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Resumption: tickets (stateless, TLS 1.2 and 1.3) are on by default;
     * the cache serves TLS 1.2 clients that resume by session id. */
    /* Read-ahead: one read(2) takes a record's header and body (and what
     * follows) instead of two; http.c asks tc_tls_pending() for the rest. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    static const unsigned char sid_ctx[] = "tiercache";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        set_err(err, errlen, "tls-cert '%s': not a usable PEM certificate (chain): %s", t->cert,
                ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            set_err(err, errlen, "tls-key '%s' does not match the certificate in tls-cert '%s'",
                    t->key, t->cert);
            ERR_clear_error();
        } else {
            set_err(err, errlen, "tls-key '%s': not a usable PEM private key: %s", t->key,
                    ssl_reason());
        }
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        set_err(err, errlen, "tls-key '%s' does not match the certificate in tls-cert '%s': %s",
                t->key, t->cert, ssl_reason());
        goto fail;
    }
    if (t->client_ca[0] != '\0') {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1) {
            if (names != NULL) {
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            }
            set_err(err, errlen, "tls-client-ca '%s': no usable PEM CA certificate: %s",
                    t->client_ca, ssl_reason());
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        /* Asked for, not required: a client without a certificate gets no
         * scopes from TLS; one whose certificate does not verify is refused. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    ERR_clear_error();
    *st = TC_OK;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tc_tls_client_certs(const struct tc_tls *t)
{
    return t->client_ca[0] != '\0';
}

enum tc_status tc_tls_create(const struct tc_tls_options *o, struct tc_tls **out, char *err,
                             size_t errlen)
{
    *out = NULL;
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    struct tc_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return TC_ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    enum tc_status st = TC_ENOMEM;
    t->cert = strdup(o->cert != NULL ? o->cert : "");
    t->key = strdup(o->key != NULL ? o->key : "");
    t->client_ca = strdup(o->client_ca != NULL ? o->client_ca : "");
    if (t->cert == NULL || t->key == NULL || t->client_ca == NULL) {
        goto fail;
    }
    st = rules_parse(o->client_scopes, &t->rules, &t->nrules, err, errlen);
    if (st != TC_OK) {
        goto fail;
    }
    if (t->nrules > 0 && t->client_ca[0] == '\0') {
        set_err(err, errlen,
                "tls-client-scopes needs tls-client-ca: only certificates verified against it "
                "can be given scopes");
        st = TC_EINVAL;
        goto fail;
    }
    t->ctx = ctx_build(t, err, errlen, &st);
    if (t->ctx == NULL) {
        goto fail;
    }
    *out = t;
    return TC_OK;
fail:
    tc_tls_destroy(t);
    return st;
}

enum tc_status tc_tls_reload(struct tc_tls *t, char *err, size_t errlen)
{
    enum tc_status st;
    SSL_CTX *ctx = ctx_build(t, err, errlen, &st);
    if (ctx == NULL) {
        return st;
    }
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old); /* freed once the last connection made from it is gone */
    return TC_OK;
}

void tc_tls_destroy(struct tc_tls *t)
{
    if (t == NULL) {
        return;
    }
    SSL_CTX_free(t->ctx);
    rules_free(t->rules, t->nrules);
    free(t->cert);
    free(t->key);
    free(t->client_ca);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ---- connections ------------------------------------------------------------------------- */

struct tc_tls_conn *tc_tls_conn_create(struct tc_tls *t, int fd)
{
    struct tc_tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&t->lock);
    c->ssl = SSL_new(t->ctx); /* takes its own reference on the context */
    pthread_mutex_unlock(&t->lock);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        ERR_clear_error();
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    SSL_set_accept_state(c->ssl);
    c->tls = t;
    return c;
}

/* Maps the result @p rc of an SSL call. */
static enum tc_tls_io io_result(struct tc_tls_conn *c, int rc)
{
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return TC_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TC_TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        /* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a plain EOF. */
        c->dead = 1;
        return TC_TLS_CLOSED;
    default:
        c->dead = 1;
        return TC_TLS_FAILED;
    }
}

static int cert_reason(int reason)
{
    switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_NO_CERTIFICATES_RETURNED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        return 1;
    }
    return 0;
}

enum tc_tls_io tc_tls_handshake(struct tc_tls_conn *c, enum tc_tls_fail *why)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->scopes = peer_scopes(c);
        return TC_TLS_DONE;
    }
    enum tc_tls_io io = io_result(c, rc);
    if (io == TC_TLS_WANT_READ || io == TC_TLS_WANT_WRITE) {
        return io;
    }
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
    if (reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST) {
        *why = TC_TLS_FAIL_PLAINTEXT;
    } else if (cert_reason(reason) || SSL_get_verify_result(c->ssl) != X509_V_OK) {
        *why = TC_TLS_FAIL_CERT;
    } else {
        *why = TC_TLS_FAIL_PROTOCOL;
    }
    /* The reason only: nothing from the peer's certificate or data. */
    tc_log(TC_LOG_DEBUG, "tls: handshake failed: %s",
           e != 0 ? ERR_reason_error_string(e) : "connection closed");
    ERR_clear_error();
    return TC_TLS_FAILED;
}

enum tc_tls_io tc_tls_read(struct tc_tls_conn *c, void *buf, size_t len, size_t *got)
{
    if (c->dead) {
        return TC_TLS_FAILED;
    }
    ERR_clear_error();
    int rc = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (rc > 0) {
        *got = (size_t)rc;
        return TC_TLS_DONE;
    }
    enum tc_tls_io io = io_result(c, rc);
    ERR_clear_error();
    return io;
}

enum tc_tls_io tc_tls_write(struct tc_tls_conn *c, const void *buf, size_t len, size_t *done)
{
    if (c->dead) {
        return TC_TLS_FAILED;
    }
    ERR_clear_error();
    int rc = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (rc > 0) {
        *done = (size_t)rc;
        return TC_TLS_DONE;
    }
    enum tc_tls_io io = io_result(c, rc);
    ERR_clear_error();
    return io;
}

int tc_tls_pending(const struct tc_tls_conn *c)
{
    return !c->dead && SSL_has_pending(c->ssl);
}

int tc_tls_resumed(const struct tc_tls_conn *c)
{
    return SSL_session_reused(c->ssl);
}

unsigned tc_tls_peer_scopes(const struct tc_tls_conn *c)
{
    return c->scopes;
}

void tc_tls_shutdown(struct tc_tls_conn *c)
{
    if (c->dead || !SSL_is_init_finished(c->ssl)) {
        return;
    }
    c->dead = 1;
    ERR_clear_error();
    /* One try: a close_notify that does not fit in the socket now is
     * dropped, as the connection is closing anyway. */
    (void)SSL_shutdown(c->ssl);
    ERR_clear_error();
}

void tc_tls_conn_destroy(struct tc_tls_conn *c)
{
    if (c == NULL) {
        return;
    }
    SSL_free(c->ssl);
    free(c);
}
