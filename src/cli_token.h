/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * `tiercache token new NAME SCOPES`: a new random Bearer token and the line
 * of the tokens file that grants it (issue 14, docs/security.md).
 */
#ifndef TC_SRC_CLI_TOKEN_H
#define TC_SRC_CLI_TOKEN_H

/**
 * Runs `tiercache token new NAME SCOPES`. @p argv[1] is "token". Prints the
 * token on the first line of stdout and the tokens-file line
 * (NAME SCOPES sha256:HEX) on the second, a note on stderr. Returns the
 * process exit code: 0, 1 (no randomness), 2 (usage, bad name or scopes).
 */
int tc_cli_token_main(int argc, char **argv);

#endif
