/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * bench/cleanup.h — what a cell leaves on the machine, and its removal.
 *
 * Each cell gets tiers of its own, so that it starts cold and removing them
 * can never touch anyone else's data: an shm segment NAME becomes NAME.TAG,
 * an LMDB directory DIR becomes DIR/TAG, and a Redis prefix P becomes P TAG:
 * (TAG = tb<pid>-<cell>). The bench removes exactly those after the cell, at
 * the end and on SIGINT, unless --keep.
 */
#ifndef TC_BENCH_CLEANUP_H
#define TC_BENCH_CLEANUP_H

#include <stddef.h>

#define TB_LEFT_MAX 64

enum tb_left_kind { TB_LEFT_SHM = 0, TB_LEFT_LMDB = 1, TB_LEFT_REDIS = 2, TB_LEFT_DIR = 3 };

struct tb_left {
    enum tb_left_kind kind;
    char what[1100]; /* segment name, directory, or the Redis tier's URI */
};

struct tb_leftovers {
    size_t n;
    struct tb_left e[TB_LEFT_MAX];
};

/**
 * Writes @p uri renamed with @p tag to @p out (see above) and records what
 * to remove in @p lo. Schemes without anything on disk (mem://) pass as they
 * are. With @p fixed (a tag for Redis prefixes only), shm and LMDB names stay
 * as the user wrote them (one-off runs: `tiercache shm stats NAME` must find
 * them) and are recorded only when they do not exist yet, so that the bench
 * never removes what it did not make. Returns 0, or -1 when @p out is too
 * small or @p lo is full.
 */
int tb_cleanup_tag_uri(const char *uri, const char *tag, const char *fixed, char *out, size_t len,
                       struct tb_leftovers *lo);

/**
 * Removes everything in @p lo (segments unlinked, directories removed with
 * their files, Redis keys under the prefix cleared) and empties it. Returns
 * the number of failures, each described on stderr.
 */
int tb_cleanup_run(struct tb_leftovers *lo);

/** Prints what @p lo holds (for --keep), one line each, to stderr. */
void tb_cleanup_list(const struct tb_leftovers *lo);

#endif
