/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * `tiercache token new NAME SCOPES` (see cli_token.h). The token goes to
 * stdout only; the file gets its SHA-256, so that a copy of the file (a
 * backup, a config repository) grants nothing.
 */
#include "src/cli_token.h"
#include "src/auth.h"
#include "src/scope.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

int tc_cli_token_main(int argc, char **argv)
{
    if (argc != 5 || strcmp(argv[2], "new") != 0) {
        fprintf(stderr, "Usage: tiercache token new NAME SCOPES\n"
                        "  prints a new random token and the line that grants it for "
                        "auth-tokens-file;\n"
                        "  SCOPES: comma-separated read, write, locks, admin\n");
        return 2;
    }
    const char *name = argv[3];
    unsigned scopes;
    if (!tc_auth_name_valid(name)) {
        fprintf(stderr, "tiercache: token new: bad name '%s' (1 to 64 letters, digits, . _ @ -)\n",
                name);
        return 2;
    }
    if (tc_scope_parse(argv[4], strlen(argv[4]), &scopes) != TC_OK) {
        fprintf(stderr,
                "tiercache: token new: bad scopes '%s' (comma-separated: read, write, locks, "
                "admin)\n",
                argv[4]);
        return 2;
    }
    char token[64], hex[72], list[64];
    if (tc_auth_token_generate(token, sizeof(token), hex, sizeof(hex)) != TC_OK) {
        fprintf(stderr, "tiercache: token new: the random generator failed\n");
        return 1;
    }
    printf("%s\n%s %s sha256:%s\n", token, name, tc_scope_format(scopes, list, sizeof(list)), hex);
    fflush(stdout);
    OPENSSL_cleanse(token, sizeof(token));
    fprintf(stderr, "tiercache: line 1 is the token: give it to the client (Authorization: Bearer "
                    "TOKEN); it is shown once and stored nowhere.\n"
                    "tiercache: line 2 goes into auth-tokens-file (mode 0600); then reload with "
                    "SIGHUP.\n");
    return 0;
}
