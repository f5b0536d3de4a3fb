/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * `tiercache key ...`: makes and inspects the keyring that encryption at rest
 * uses (encryption-keys-file; tiers/seal.h, docs/security.md).
 */
#ifndef TC_SRC_CLI_KEY_H
#define TC_SRC_CLI_KEY_H

/**
 * Runs `tiercache key new PATH` (creates the keyring with key 1, mode 0600,
 * or appends a new random key with the next id; prints the id, never the
 * key) or `tiercache key list PATH` (checks the file as the server would and
 * prints its key ids, the encrypting one marked). @p argv[1] is "key".
 * Returns the process exit code: 0, 1 (failed), 2 (usage).
 */
int tc_cli_key_main(int argc, char **argv);

#endif
