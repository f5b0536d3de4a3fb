/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of src/tls.c: the tls-client-scopes format (tc_tls_scopes_match),
 * the refusals of tc_tls_create, and the scopes a verified client
 * certificate puts into r->peer_scopes, seen by a handler of an in-process
 * TLS server (src/http.c) that answers with them; curl, with and without a
 * client certificate, is the client. The test turns the event loop.
 */
#include "src/http.h"
#include "src/scope.h"
#include "src/tls.h"
#include "tests/support/tls_certs.h"

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    tc_test_tls_certs_make();
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    tc_test_tls_certs_remove();
}

static const char *path(const char *file)
{
    cr_assert(tc_test_tls_dir() != NULL, "tests/support/tls_certs.sh failed");
    return tc_test_tls_path(file);
}

/* ---- the mapping ------------------------------------------------------------------------ */

static unsigned match(const char *mapping, const char *cn, const char *dn)
{
    unsigned s = 0xdead;
    char err[256] = "";
    cr_assert_eq(tc_tls_scopes_match(mapping, cn, dn, &s, err, sizeof(err)), TC_OK, "%s: %s",
                 mapping, err);
    return s;
}

Test(tls_scopes, cn_and_dn_entries)
{
    const char *m = "CN=app1 read,write; CN=ops admin ;CN=x,O=Example Inc locks;";
    cr_assert_eq(match(m, "app1", "CN=app1"), TC_SCOPE_READ | TC_SCOPE_WRITE);
    cr_assert_eq(match(m, "ops", "CN=ops,O=Anything"), TC_SCOPE_ADMIN);
    /* A DN entry needs the whole DN. */
    cr_assert_eq(match(m, "x", "CN=x,O=Example Inc"), TC_SCOPE_LOCKS);
    cr_assert_eq(match(m, "x", "CN=x,O=Example Inc,C=FR"), 0);
    cr_assert_eq(match(m, "x", "CN=x"), 0);
    /* Exact, case-sensitive; no prefix or suffix match. */
    cr_assert_eq(match(m, "App1", "CN=App1"), 0);
    cr_assert_eq(match(m, "app10", "CN=app10"), 0);
    cr_assert_eq(match(m, "app", "CN=app"), 0);
    /* No single CN (none or several): CN entries do not match. */
    cr_assert_eq(match(m, NULL, "CN=app1,CN=ops"), 0);
    /* The first entry that matches wins. */
    cr_assert_eq(match("CN=a read; CN=a admin", "a", "CN=a"), TC_SCOPE_READ);
    cr_assert_eq(match("", "a", "CN=a"), 0);
    cr_assert_eq(match(NULL, "a", "CN=a"), 0);
}

Test(tls_scopes, malformed_values_refused)
{
    const char *bad[] = {
        "CN=app1",            /* no scopes */
        "read,write",         /* no subject */
        "CN=app1 reed",       /* unknown scope */
        "app1 read",          /* not a subject */
        "CN=app1 read; junk", /* a bad second entry */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned s;
        char err[256] = "";
        cr_assert_eq(tc_tls_scopes_match(bad[i], "app1", "CN=app1", &s, err, sizeof(err)),
                     TC_EINVAL, "accepted: %s", bad[i]);
        cr_assert(strstr(err, "tls-client-scopes") != NULL, "%s", err);
    }
}

/* ---- tc_tls_create --------------------------------------------------------------------- */

Test(tls_create, refusals)
{
    struct tc_tls *t = NULL;
    char err[512];
    struct tc_tls_options ok = {path("server.pem"), path("server.key"), "", ""};
    cr_assert_eq(tc_tls_create(&ok, &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tls_client_certs(t), 0);
    cr_assert_eq(tc_tls_reload(t, err, sizeof(err)), TC_OK, "%s", err);
    tc_tls_destroy(t);

    struct tc_tls_options mismatch = {path("server.pem"), path("ops.key"), "", ""};
    cr_assert_eq(tc_tls_create(&mismatch, &t, err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "does not match") != NULL, "%s", err);
    cr_assert_null(t);

    struct tc_tls_options expired_ok = {path("expired.pem"), path("server.key"), "", ""};
    /* An expired certificate loads: the clients refuse it (tests/http/test_tls.c). */
    cr_assert_eq(tc_tls_create(&expired_ok, &t, err, sizeof(err)), TC_OK, "%s", err);
    tc_tls_destroy(t);

    struct tc_tls_options bad_ca = {path("server.pem"), path("server.key"), path("ca.cnf"), ""};
    cr_assert_eq(tc_tls_create(&bad_ca, &t, err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "tls-client-ca") != NULL, "%s", err);

    struct tc_tls_options bad_map = {path("server.pem"), path("server.key"), path("ca.pem"),
                                     "CN=x nothing"};
    cr_assert_eq(tc_tls_create(&bad_map, &t, err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "tls-client-scopes") != NULL, "%s", err);
}

Test(tls_create, reload_keeps_the_old_context_on_a_bad_file)
{
    char cert[512];
    snprintf(cert, sizeof(cert), "%s.%d", path("server.pem"), getpid());
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "cp %s %s", path("server.pem"), cert);
    cr_assert_eq(system(cmd), 0);
    struct tc_tls *t = NULL;
    char err[512];
    struct tc_tls_options o = {cert, path("server.key"), "", ""};
    cr_assert_eq(tc_tls_create(&o, &t, err, sizeof(err)), TC_OK, "%s", err);
    FILE *f = fopen(cert, "w");
    cr_assert(f != NULL);
    fputs("garbage\n", f);
    fclose(f);
    cr_assert_eq(tc_tls_reload(t, err, sizeof(err)), TC_EINVAL);
    cr_assert(strstr(err, "not a usable PEM certificate") != NULL, "%s", err);
    /* Still usable: a connection can be made from the old context. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct tc_tls_conn *c = tc_tls_conn_create(t, sv[0]);
    cr_assert_not_null(c);
    tc_tls_conn_destroy(c);
    close(sv[0]);
    close(sv[1]);
    tc_tls_destroy(t);
    unlink(cert);
}

/* ---- peer scopes through an in-process server ------------------------------------------ */

static void answer_scopes(struct tc_http_req *r, void *arg)
{
    (void)arg;
    char body[32];
    int n = snprintf(body, sizeof(body), "scopes=%u", r->peer_scopes);
    tc_http_respond(r, 200, "text/plain", body, (size_t)n, NULL);
}

/* Runs curl against the server (turning its loop until curl exits); returns its output. */
static void curl(struct event_base *base, unsigned port, const char *cert, char *out, size_t cap)
{
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%u/x", port);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        char key[512];
        if (cert != NULL) {
            snprintf(key, sizeof(key), "%s", path(cert));
            strcpy(key + strlen(key) - 3, "key");
            execlp("curl", "curl", "-sS", "--max-time", "10", "--cacert", path("ca.pem"), "--cert",
                   path(cert), "--key", key, url, (char *)NULL);
        } else {
            execlp("curl", "curl", "-sS", "--max-time", "10", "--cacert", path("ca.pem"), url,
                   (char *)NULL);
        }
        _exit(127);
    }
    close(pfd[1]);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    size_t len = 0;
    for (int i = 0; i < 1500; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        ssize_t n = read(pfd[0], out + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            while ((n = read(pfd[0], out + len, cap - 1 - len)) > 0) {
                len += (size_t)n;
            }
            break;
        }
    }
    out[len] = '\0';
    close(pfd[0]);
}

Test(tls_peer, client_certificate_scopes_reach_the_request)
{
    signal(SIGPIPE, SIG_IGN);
    struct tc_tls *t = NULL;
    char err[512];
    struct tc_tls_options o = {path("server.pem"), path("server.key"), path("ca.pem"),
                               "CN=app1 read,write; CN=ops admin"};
    cr_assert_eq(tc_tls_create(&o, &t, err, sizeof(err)), TC_OK, "%s", err);
    cr_assert_eq(tc_tls_client_certs(t), 1);
    struct event_base *base = event_base_new();
    static _Atomic uint64_t conns, pending;
    struct tc_http_limits limits = {
        .max_header_size = 8192,
        .max_body = 65536,
        .idle_timeout_ms = 5000,
        .header_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .max_connections = 16,
        .max_pending_body = 1 << 20,
        .conn_count = &conns,
        .body_pending = &pending,
    };
    unsigned port = 0;
    int fd = tc_http_listen("127.0.0.1", 0, &port);
    cr_assert(fd >= 0);
    struct tc_http_server *s = tc_http_server_create(base, fd, &limits, answer_scopes, NULL);
    cr_assert_not_null(s);
    tc_http_server_set_tls(s, t, 5000);

    char out[4096];
    curl(base, port, "app1.pem", out, sizeof(out));
    cr_assert_str_eq(out, "scopes=3", "read,write: %s", out);
    curl(base, port, "ops.pem", out, sizeof(out));
    cr_assert_str_eq(out, "scopes=8", "admin: %s", out);
    curl(base, port, NULL, out, sizeof(out));
    cr_assert_str_eq(out, "scopes=0", "no certificate: %s", out);
    curl(base, port, "rogue.pem", out, sizeof(out));
    cr_assert(strncmp(out, "scopes=", 7) != 0, "another CA's certificate served: %s", out);

    const struct tc_http_counters *k = tc_http_server_counters(s);
    cr_assert_eq(atomic_load(&k->tls_handshakes), 3);
    cr_assert_eq(atomic_load(&k->tls_handshake_cert_errors), 1);
    /* The connections close as curl exits; turn the loop until they have. */
    for (int i = 0; i < 300 && atomic_load(&k->tls_active) != 0; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    cr_assert_eq(atomic_load(&k->tls_active), 0);
    tc_http_server_destroy(s);
    event_base_free(base);
    tc_tls_destroy(t);
}
