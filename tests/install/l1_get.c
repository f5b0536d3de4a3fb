/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * An example reader of the L1, built the way an installed user builds it:
 *
 *   cc l1_get.c $(pkg-config --cflags --libs tiercache)
 *   ./a.out SEGMENT KEY          prints the value and its encoding, exit 0;
 *                                exit 1 on a miss, 2 on an error.
 *   ./a.out SEGMENT KEY VALUE    stores VALUE (a string, TTL 60 s) read-write.
 *
 * It includes only <tiercache/l1.h>: anything else it needed would be a
 * hole in the installed library.
 */
#include <tiercache/l1.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s SEGMENT KEY [VALUE]\n", argv[0]);
        return 2;
    }
    struct tc_l1 *l1;
    char err[512];
    if (argc == 4) {
        int st = tc_l1_open(argv[1], TC_L1_WRITE, NULL, &l1, err, sizeof(err));
        if (st == TC_L1_OK) {
            st = tc_l1_set(l1, argv[2], strlen(argv[2]), argv[3], strlen(argv[3]), TC_L1_STRING,
                           60000);
            tc_l1_close(l1);
        }
        if (st != TC_L1_OK) {
            fprintf(stderr, "set: %s %s\n", tc_l1_strerror(st), err);
        }
        return st == TC_L1_OK ? 0 : 2;
    }
    int st = tc_l1_open(argv[1], TC_L1_READ, NULL, &l1, err, sizeof(err));
    if (st != TC_L1_OK) {
        fprintf(stderr, "tc_l1_open: %s: %s\n", tc_l1_strerror(st), err);
        return 2;
    }
    char small[4];
    struct tc_l1_value v;
    st = tc_l1_get(l1, argv[2], strlen(argv[2]), small, sizeof(small), &v);
    char *buf = small;
    if (st == TC_L1_ETOOBIG) { /* the documented retry with the size reported */
        buf = malloc(v.len + 1);
        st = buf == NULL ? TC_L1_ENOMEM : tc_l1_get(l1, argv[2], strlen(argv[2]), buf, v.len, &v);
    }
    if (st == TC_L1_OK) {
        printf("%.*s\nencoding=%u expire_ms=%llu\n", (int)v.len, buf, v.encoding,
               (unsigned long long)v.expire_ms);
    } else {
        fprintf(stderr, "tc_l1_get: %s\n", tc_l1_strerror(st));
    }
    /* A read-only handle refuses writes. */
    if (tc_l1_set(l1, "k", 1, "v", 1, TC_L1_STRING, 0) != TC_L1_EPERM) {
        fprintf(stderr, "tc_l1_set on a TC_L1_READ handle was not refused\n");
        st = -100;
    }
    if (buf != small) {
        free(buf);
    }
    tc_l1_close(l1);
    return st == TC_L1_OK ? 0 : st == TC_L1_ENOTFOUND ? 1 : 2;
}
