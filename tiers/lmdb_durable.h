/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The durable-snapshot record of the lmdb:// tier (tiers/tier_lmdb.c,
 * "Durability"): the file PATH/tiercache-durable beside data.mdb, which says
 * what state the environment is in should the host go down now.
 *
 * It names a snapshot S (an LMDB transaction id) whose pages are all on the
 * disk and which a live process keeps pinned with a read transaction, and
 * holds S's meta page verbatim, so that after a host crash the meta pages can
 * be put back to S before LMDB reads them. It also says which boot of the
 * host wrote it (a different boot at the next open means the host went down
 * with the environment open), whether the environment was closed cleanly,
 * and the sync mode of the processes that use it.
 *
 * Layout, 368 bytes, integers little-endian; the meta page bytes are LMDB's,
 * verbatim (host order):
 *
 *     0  8  magic "tc-durbl"
 *     8  4  version (1)
 *    12  4  flags: bit 0 clean (closed cleanly by the last process),
 *               bit 1 snapshot (the fields from psize on name S)
 *    16  4  sync mode of the writer (0 always, 1 periodic, 2 none)
 *    20  4  page size of data.mdb
 *    24  8  S, the snapshot's transaction id
 *    32  8  inode number of data.mdb (a record of another file is ignored)
 *    40  8  when S was pinned, ms since the Unix epoch (wall clock)
 *    48  8  sync_interval_ms of the writer
 *    56 40  boot id of the writer's host boot (/proc/sys/kernel/random/boot_id),
 *           NUL-padded; empty when it could not be read
 *    96  4  length of the meta bytes that follow (at most 256)
 *   100  4  zero
 *   104 256 the first bytes of S's meta page: page header and MDB_meta
 *   360  8  XXH3-64 of bytes 0..359
 *
 * The file is replaced atomically (a temporary file, fsync, rename, fsync of
 * the directory), so a reader sees an old record or a new one, never a mix;
 * anything else it finds (short, bad magic or checksum) is garbage and
 * reported as such, never trusted.
 *
 * Thread safety: every function uses only its arguments.
 */
#ifndef TC_TIERS_LMDB_DURABLE_H
#define TC_TIERS_LMDB_DURABLE_H

#include "shm/status.h"

#include <stddef.h>
#include <stdint.h>

#define TC_LMDB_DURABLE_FILE     "tiercache-durable"
#define TC_LMDB_DURABLE_SIZE     368u
#define TC_LMDB_DURABLE_META_MAX 256u
#define TC_LMDB_DURABLE_BOOT_ID  40u /* 36 characters, NUL-padded */

#define TC_LMDB_DURABLE_CLEAN    0x1u
#define TC_LMDB_DURABLE_SNAPSHOT 0x2u

/** The record, decoded. */
struct tc_lmdb_durable {
    uint32_t flags; /* TC_LMDB_DURABLE_* */
    uint32_t mode;  /* the tier's sync mode: 0 always, 1 periodic, 2 none */
    uint32_t psize;
    uint64_t txnid;
    uint64_t inode;
    uint64_t pinned_ms;
    uint64_t interval_ms;
    char boot_id[TC_LMDB_DURABLE_BOOT_ID]; /* NUL-terminated */
    uint32_t meta_len;
    unsigned char meta[TC_LMDB_DURABLE_META_MAX];
};

/** Encodes @p d (meta_len must be at most TC_LMDB_DURABLE_META_MAX) into @p out. */
void tc_lmdb_durable_encode(const struct tc_lmdb_durable *d,
                            unsigned char out[TC_LMDB_DURABLE_SIZE]);

/**
 * Decodes @p len bytes. TC_OK; TC_ECORRUPT with *why set (a static string)
 * when they are not a record this version wrote intact; TC_EVERSION when a
 * later version wrote them.
 */
enum tc_status tc_lmdb_durable_decode(const unsigned char *in, size_t len,
                                      struct tc_lmdb_durable *d, const char **why);

/**
 * Reads DIR/tiercache-durable. TC_OK; TC_ENOTFOUND when there is none;
 * TC_ECORRUPT or TC_EVERSION (see decode) or TC_EIO with the reason in @p why.
 */
enum tc_status tc_lmdb_durable_load(const char *dir, struct tc_lmdb_durable *d, char *why,
                                    size_t wl);

/**
 * Replaces DIR/tiercache-durable with @p d, durably: when it returns TC_OK
 * the new record is on the disk. TC_EIO (or TC_ENOMEM) with the failing call
 * in @p why; the old record is then still in place.
 */
enum tc_status tc_lmdb_durable_store(const char *dir, const struct tc_lmdb_durable *d, char *why,
                                     size_t wl);

/**
 * Serialises the read-compare-replace of the record between the processes
 * (and threads) that share DIR: flock(2) on the directory itself, so no
 * lock file of LMDB's is opened or closed (closing a descriptor of lock.mdb
 * would drop the process's LMDB record locks). Waits. The descriptor to give
 * tc_lmdb_durable_unlock, or -1 when the directory cannot be opened or
 * locked (the record is still replaced whole; whether going on unlocked is
 * safe is the caller's to decide).
 */
int tc_lmdb_durable_lock(const char *dir);

/** Releases a lock from tc_lmdb_durable_lock; -1 is a no-op. */
void tc_lmdb_durable_unlock(int fd);

/**
 * This boot's id into @p out (NUL-terminated), or "" when it cannot be read.
 * Two records with the same non-empty id were written during one boot.
 */
void tc_lmdb_durable_boot_id(char out[TC_LMDB_DURABLE_BOOT_ID]);

#endif
