/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/cli_key.h"
#include "tiers/seal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: tiercache key new PATH    create the keyring, or add a key to it\n"
                    "       tiercache key list PATH   check the keyring and list its key ids\n");
    return 2;
}

static int key_new(const char *path)
{
    char err[512];
    uint32_t id = 0;
    int created = 0;
    enum tc_status st = tc_seal_keyfile_add(path, &id, &created, err, sizeof(err));
    if (st != TC_OK) {
        fprintf(stderr, "tiercache: key new: %s\n", err[0] ? err : tc_strerror(st));
        return 1;
    }
    if (created) {
        printf("created %s (mode 0600) with key %u\n", path, (unsigned)id);
    } else {
        printf("added key %u to %s; send SIGHUP to running servers so new writes use it\n",
               (unsigned)id, path);
    }
    return 0;
}

static int key_list(const char *path)
{
    char err[512];
    struct tc_seal *s = NULL;
    enum tc_status st = tc_seal_open(path, &s, err, sizeof(err));
    if (st != TC_OK) {
        fprintf(stderr, "tiercache: key list: %s\n", err);
        return 1;
    }
    uint32_t ids[TC_SEAL_KEYS_MAX];
    size_t n = tc_seal_key_ids(s, ids, TC_SEAL_KEYS_MAX);
    for (size_t i = 0; i < n; i++) {
        printf("%u%s\n", (unsigned)ids[i], i + 1 == n ? " (encrypts)" : "");
    }
    tc_seal_close(s);
    return 0;
}

int tc_cli_key_main(int argc, char **argv)
{
    if (argc != 4) {
        return usage();
    }
    if (strcmp(argv[2], "new") == 0) {
        return key_new(argv[3]);
    }
    if (strcmp(argv[2], "list") == 0) {
        return key_list(argv[3]);
    }
    return usage();
}
