/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Unit tests of src/auth.c through src/auth.h: the tokens file's format
 * and checks, token checks and reloads through a view, the Host and Origin
 * lists, protected mode, and new tokens.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "src/auth.h"
#include "src/scope.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64], path[128];
static struct tc_auth *auth;
static struct tc_auth_view *view;
static char err[1024];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tc-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/tokens", dir);
}

static void teardown(void)
{
    tc_auth_view_destroy(view);
    view = NULL;
    tc_auth_destroy(auth);
    auth = NULL;
    unlink(path);
    rmdir(dir);
}

TestSuite(auth, .init = setup, .fini = teardown);

static void digest_hex(const char *token, char *hex)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    cr_assert_eq(EVP_Digest(token, strlen(token), d, &n, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < n; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
}

static void write_text(const char *text, mode_t mode)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(tmp, mode), 0);
    cr_assert_eq(rename(tmp, path), 0);
}

/* "NAME SCOPES sha256:<digest of TOKEN>\n" */
static const char *line(const char *name, const char *scopes, const char *token)
{
    static char buf[4][256];
    static int k;
    char hex[65];
    digest_hex(token, hex);
    char *b = buf[k++ % 4];
    snprintf(b, 256, "%s %s sha256:%s\n", name, scopes, hex);
    return b;
}

static enum tc_status create(const char *tokens_file)
{
    struct tc_auth_options o = {.tokens_file = tokens_file, .listen_host = "127.0.0.1"};
    return tc_auth_create(&o, &auth, err, sizeof(err));
}

static enum tc_auth_result check(const char *authz, unsigned *grant)
{
    return tc_auth_check(view, authz, grant);
}

Test(auth, a_good_file_and_every_kind_of_line)
{
    char text[2048], hex[65];
    digest_hex("t2", hex);
    /* Comments, blank lines, tabs, a trailing comment, a CRLF line end. */
    snprintf(text, sizeof(text), "# comment\n\n   \t\n%s  ops\tadmin\tsha256:%s # trailing\r\n",
             line("app", "read,write", "t1"), hex);
    write_text(text, 0600);
    cr_assert_eq(create(path), TC_OK, "%s", err);
    cr_expect(tc_auth_required(auth));
    cr_expect_eq(tc_auth_ntokens(auth), 2);
    view = tc_auth_view_create(auth);
    cr_assert_not_null(view);
    unsigned g;
    cr_expect_eq(check("Bearer t1", &g), TC_AUTH_OK);
    cr_expect_eq(g, TC_SCOPE_READ | TC_SCOPE_WRITE);
    cr_expect_eq(check("bEaReR   t2  ", &g), TC_AUTH_OK, "scheme in any case, spaces around");
    cr_expect_eq(g, TC_SCOPE_ADMIN);
    cr_expect_eq(check("Bearer t3", &g), TC_AUTH_INVALID);
    cr_expect_eq(g, 0);
    cr_expect_eq(check("Bearer t", &g), TC_AUTH_INVALID, "a prefix of a token");
    cr_expect_eq(check("Bearer t1x", &g), TC_AUTH_INVALID);
    cr_expect_eq(check(NULL, &g), TC_AUTH_MISSING);
    cr_expect_eq(check("Basic dDE6", &g), TC_AUTH_MISSING);
    cr_expect_eq(check("Bearer ", &g), TC_AUTH_MISSING);
    cr_expect_eq(check("Bearert1", &g), TC_AUTH_MISSING);
}

Test(auth, bad_files_are_refused_with_the_reason)
{
    static const struct {
        const char *text;
        const char *why;
    } cases[] = {
        {"app read\n", ":1: expected NAME SCOPES sha256:HEX, the digest is missing"},
        {"app\n", ":1: expected NAME SCOPES sha256:HEX, found only a name"},
        {"a/b read sha256:00\n", ":1: bad token name"},
        {"\n\napp read md5:00\n", ":3: the digest must be sha256:"},
        {"app read sha256:zz00000000000000000000000000000000000000000000000000000000000000\n",
         ":1: the digest has a character that is not a hex digit"},
        {"app read,fly sha256:00\n", ":1: bad scopes 'read,fly'"},
        {"app read sha256:0000000000000000000000000000000000000000000000000000000000000000 x\n",
         ":1: unexpected text after the digest"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_text(cases[i].text, 0600);
        cr_expect_eq(create(path), TC_EINVAL, "case %zu", i);
        cr_expect(strstr(err, cases[i].why) != NULL, "case %zu: %s", i, err);
        cr_expect(strstr(err, path) != NULL, "the message names the file: %s", err);
        cr_expect_null(auth);
    }
    char text[1024];
    snprintf(text, sizeof(text), "%s%s", line("a", "read", "t1"), line("a", "write", "t2"));
    write_text(text, 0600);
    cr_expect_eq(create(path), TC_EINVAL);
    cr_expect(strstr(err, ":2: the name 'a' is already used above") != NULL, "%s", err);
    snprintf(text, sizeof(text), "%s%s", line("a", "read", "t1"), line("b", "write", "t1"));
    write_text(text, 0600);
    cr_expect_eq(create(path), TC_EINVAL);
    cr_expect(strstr(err, ":2: the same digest as 'a' above") != NULL, "%s", err);
}

Test(auth, file_mode_and_type)
{
    write_text(line("a", "read", "t1"), 0640);
    cr_expect_eq(create(path), TC_EINVAL);
    cr_expect(strstr(err, "mode 0640") != NULL && strstr(err, "chmod 600") != NULL, "%s", err);
    write_text(line("a", "read", "t1"), 0604);
    cr_expect_eq(create(path), TC_EINVAL);
    write_text(line("a", "read", "t1"), 0400);
    cr_expect_eq(create(path), TC_OK, "0400 is fine: %s", err);
    tc_auth_destroy(auth);
    auth = NULL;
    cr_expect_eq(create(dir), TC_EINVAL);
    cr_expect(strstr(err, "not a regular file") != NULL, "%s", err);
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    cr_expect_eq(create(missing), TC_EINVAL);
    cr_expect(strstr(err, "cannot open") != NULL, "%s", err);
}

Test(auth, reload_swaps_the_set_and_a_bad_file_keeps_the_old)
{
    write_text(line("a", "read", "t1"), 0600);
    cr_assert_eq(create(path), TC_OK, "%s", err);
    view = tc_auth_view_create(auth);
    unsigned g;
    cr_expect_eq(check("Bearer t1", &g), TC_AUTH_OK);
    write_text(line("b", "locks", "t2"), 0600);
    cr_expect_eq(check("Bearer t1", &g), TC_AUTH_OK, "nothing changes before the reload");
    cr_assert_eq(tc_auth_reload(auth, err, sizeof(err)), TC_OK, "%s", err);
    cr_expect_eq(check("Bearer t1", &g), TC_AUTH_INVALID);
    cr_expect_eq(check("Bearer t2", &g), TC_AUTH_OK);
    cr_expect_eq(g, TC_SCOPE_LOCKS);
    write_text(line("b", "locks", "t3"), 0644);
    cr_expect_eq(tc_auth_reload(auth, err, sizeof(err)), TC_EINVAL);
    cr_expect(strstr(err, "mode 0644") != NULL, "%s", err);
    cr_expect_eq(check("Bearer t2", &g), TC_AUTH_OK, "the old set stays");
    cr_expect_eq(tc_auth_reload_failures(auth), 1);
    cr_expect_eq(tc_auth_ntokens(auth), 1);
}

Test(auth, no_tokens_file)
{
    cr_assert_eq(create(""), TC_OK, "%s", err);
    cr_expect(!tc_auth_required(auth));
    cr_expect_eq(tc_auth_reload(auth, err, sizeof(err)), TC_OK);
    view = tc_auth_view_create(auth);
    unsigned g;
    cr_expect_eq(check("Bearer x", &g), TC_AUTH_INVALID);
    struct tc_auth_options o = {.client_certs = 1};
    struct tc_auth *a2;
    cr_assert_eq(tc_auth_create(&o, &a2, err, sizeof(err)), TC_OK);
    cr_expect(tc_auth_required(a2), "client certificates alone turn auth on");
    tc_auth_destroy(a2);
}

static int host_ok(const char *listen, const char *allowed, const char *host)
{
    struct tc_auth_options o = {.listen_host = listen, .allowed_hosts = allowed};
    struct tc_auth *a;
    cr_assert_eq(tc_auth_create(&o, &a, err, sizeof(err)), TC_OK, "%s", err);
    int ok = tc_auth_host_allowed(a, host);
    tc_auth_destroy(a);
    return ok;
}

Test(auth, hosts)
{
    cr_expect(host_ok("127.0.0.1", NULL, "localhost"));
    cr_expect(host_ok("127.0.0.1", NULL, "localhost:8080"));
    cr_expect(host_ok("127.0.0.1", NULL, "127.0.0.1:1"));
    cr_expect(host_ok("127.0.0.1", NULL, "[::1]:8080"));
    cr_expect(host_ok("127.0.0.1", NULL, NULL), "no Host (HTTP/1.0)");
    cr_expect(!host_ok("127.0.0.1", NULL, "evil.example"));
    cr_expect(!host_ok("127.0.0.1", NULL, "localhost.evil.example"));
    cr_expect(!host_ok("127.0.0.1", NULL, "10.0.0.1"));
    cr_expect(!host_ok("127.0.0.1", NULL, "localhost:"), "an empty port");
    cr_expect(!host_ok("127.0.0.1", NULL, "localhost:x"));
    cr_expect(!host_ok("127.0.0.1", NULL, ""));
    cr_expect(host_ok("10.1.2.3", NULL, "10.1.2.3:80"), "the listen address");
    cr_expect(host_ok("::1", NULL, "[::1]"));
    cr_expect(host_ok("fd00::5", NULL, "[FD00::5]:80"));
    cr_expect(host_ok("0.0.0.0", NULL, "192.168.1.9:8080"), "any IP on a wildcard listen");
    cr_expect(host_ok("::", NULL, "[fe80::1]"));
    cr_expect(!host_ok("0.0.0.0", NULL, "evil.example"));
    cr_expect(host_ok("0.0.0.0", "cache.example", "CACHE.example:1"));
    cr_expect(!host_ok("0.0.0.0", "cache.example", "localhost"), "the list replaces defaults");
    cr_expect(!host_ok("0.0.0.0", "cache.example", "10.0.0.1"));
    cr_expect(host_ok("0.0.0.0", "a.example:81", "a.example:81"));
    cr_expect(!host_ok("0.0.0.0", "a.example:81", "a.example:82"));
    cr_expect(!host_ok("0.0.0.0", "a.example:81", "a.example"));
    cr_expect(host_ok("0.0.0.0", "*", "anything.example"));
    struct tc_auth_options o = {.allowed_hosts = "good, bad host:99999"};
    struct tc_auth *a;
    cr_expect_eq(tc_auth_create(&o, &a, err, sizeof(err)), TC_EINVAL);
    cr_expect(strstr(err, "allowed-hosts") != NULL, "%s", err);
}

Test(auth, origins)
{
    struct tc_auth_options o = {.allowed_origins = "https://app.example/, http://localhost:3000"};
    cr_assert_eq(tc_auth_create(&o, &auth, err, sizeof(err)), TC_OK, "%s", err);
    cr_expect(tc_auth_origin_allowed(auth, "https://app.example"));
    cr_expect(tc_auth_origin_allowed(auth, "HTTPS://APP.example"));
    cr_expect(tc_auth_origin_allowed(auth, "http://localhost:3000"));
    cr_expect(!tc_auth_origin_allowed(auth, "http://app.example"));
    cr_expect(!tc_auth_origin_allowed(auth, "https://app.example.evil"));
    cr_expect(!tc_auth_origin_allowed(auth, "null"));
    static const char *const bad[] = {"app.example", "https://a.example/path", "ftp://x",
                                      "https://"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tc_auth_options b = {.allowed_origins = bad[i]};
        struct tc_auth *a;
        cr_expect_eq(tc_auth_create(&b, &a, err, sizeof(err)), TC_EINVAL, "%s", bad[i]);
    }
}

Test(auth, protected_mode)
{
    static const char *const loopback[] = {"127.0.0.1", "127.1.2.3", "::1", "localhost",
                                           "/run/tiercache.sock"};
    for (size_t i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
        cr_expect_eq(tc_auth_protected_mode(loopback[i], 0, 0, 0, err, sizeof(err)), TC_OK, "%s",
                     loopback[i]);
    }
    static const char *const open[] = {"0.0.0.0", "", "::", "10.0.0.1", "192.0.2.1", "fd00::1"};
    for (size_t i = 0; i < sizeof(open) / sizeof(open[0]); i++) {
        cr_expect_eq(tc_auth_protected_mode(open[i], 0, 0, 0, err, sizeof(err)), TC_EINVAL, "%s",
                     open[i]);
        cr_expect(strstr(err, "auth-tokens-file") != NULL && strstr(err, "insecure = yes"), "%s",
                  err);
        cr_expect_eq(tc_auth_protected_mode(open[i], 1, 0, 0, err, sizeof(err)), TC_OK);
        cr_expect_eq(tc_auth_protected_mode(open[i], 0, 1, 0, err, sizeof(err)), TC_OK);
        cr_expect_eq(tc_auth_protected_mode(open[i], 0, 0, 1, err, sizeof(err)), TC_OK);
    }
}

Test(auth, new_tokens)
{
    char t1[64], t2[64], h1[72], h2[72], want[65];
    cr_assert_eq(tc_auth_token_generate(t1, sizeof(t1), h1, sizeof(h1)), TC_OK);
    cr_assert_eq(tc_auth_token_generate(t2, sizeof(t2), h2, sizeof(h2)), TC_OK);
    cr_expect_eq(strlen(t1), 43);
    cr_expect_eq(strlen(h1), 64);
    cr_expect_str_neq(t1, t2);
    cr_expect_eq(strspn(t1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43,
                 "base64url: %s", t1);
    digest_hex(t1, want);
    cr_expect_str_eq(h1, want);
    cr_expect(tc_auth_name_valid("web-1.prod@eu_west"));
    cr_expect(!tc_auth_name_valid(""));
    cr_expect(!tc_auth_name_valid("a b"));
    char long_name[80];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    cr_expect(!tc_auth_name_valid(long_name));
}
