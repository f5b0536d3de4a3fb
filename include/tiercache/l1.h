/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libtiercache: read (and write) tiercache's shared-memory L1 from any
 * process on the host, without HTTP. Depends on libc and libxxhash only.
 *
 *   #include <tiercache/l1.h>        cc app.c $(pkg-config --cflags --libs tiercache)
 *
 *   struct tc_l1 *l1;
 *   char err[256], buf[4096];
 *   struct tc_l1_value v;
 *   if (tc_l1_open("tiercache", TC_L1_READ, NULL, &l1, err, sizeof(err)) == TC_L1_OK) {
 *       if (tc_l1_get(l1, "user:42", 7, buf, sizeof(buf), &v) == TC_L1_OK) {
 *           ... v.len bytes of buf: the value as the server stored it ...
 *       }
 *       tc_l1_close(l1);
 *   }
 *
 * NAME is the segment of the server's shm:// tier (shm://NAME?size=...).
 * A value comes back exactly as a GET over HTTP would give it, decoded
 * from its item header: the bytes of a string, the text of a JSON value,
 * or the raw bytes of a binary value (v.encoding says which). Every record
 * is verified (a checksum over header, key and value): a damaged record, a
 * record of another format version or one encrypted at rest reads as a miss.
 *
 * ABI: the soname carries TC_L1_ABI (libtiercache.so.1). Structs passed in
 * or out grow only at their end, and never within one soname.
 *
 * Threads: a struct tc_l1 belongs to one thread at a time (it holds the
 * thread's statistics slot in the segment and a scratch buffer); open one
 * per thread. Any number of processes may attach at once.
 *
 * Trust: the segment is attached only if it belongs to opt->owner and
 * grants nothing beyond opt->mode (and, with opt->group, has that group when
 * it lets its group in). Anyone who can write the segment can plant values
 * every reader serves: attach read-write only where that is meant.
 */
#ifndef TIERCACHE_L1_H
#define TIERCACHE_L1_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TC_L1_ABI 1

#if defined(__GNUC__)
#define TC_L1_API __attribute__((visibility("default")))
#else
#define TC_L1_API
#endif

/** Results: 0 or a negative code, the same numbers as the server's tc_status. */
enum tc_l1_status {
    TC_L1_OK = 0,
    TC_L1_ENOTFOUND = -1, /* no such key, expired, or a record that failed verification */
    TC_L1_ETOOBIG = -3,   /* the value does not fit the buffer (value->len says how large),
                           * or a key/value larger than the segment accepts */
    TC_L1_ENOMEM = -4,
    TC_L1_EIO = -7,      /* a system call failed (err says which) */
    TC_L1_ECORRUPT = -8, /* the segment's header is inconsistent */
    TC_L1_EVERSION = -9, /* a segment of a layout version this library does not know */
    TC_L1_EINVAL = -11,  /* a bad argument */
    TC_L1_ENOTSUP = -12, /* the value is encrypted at rest: ask the server over HTTP */
    TC_L1_EPERM = -13,   /* owner, group or mode refused; or a write on a TC_L1_READ handle */
};

/** Open flags. */
#define TC_L1_READ  0u /* get only */
#define TC_L1_WRITE 1u /* get, set and del */

/** How a value's bytes are to be read (the server's encodings). */
enum tc_l1_encoding {
    TC_L1_STRING = 1, /* UTF-8 text */
    TC_L1_JSON = 2,   /* the serialized text of a JSON value */
    TC_L1_BINARY = 3, /* opaque bytes */
};

/** Whom to trust; all fields may be zero/NULL. */
struct tc_l1_options {
    const char *owner; /* user name or uid the segment must belong to; NULL: this process's euid */
    const char *group; /* group name or gid a group-accessible segment must have; NULL: any */
    unsigned mode;     /* permission bits the segment may grant at most (0660 to share with a
                        * group); 0: 0600 */
};

/** What a get reports beside the bytes. */
struct tc_l1_value {
    size_t len;          /* bytes of the value (also when it did not fit) */
    unsigned encoding;   /* enum tc_l1_encoding */
    uint64_t created_ms; /* when it was written, ms since the Unix epoch */
    uint64_t expire_ms;  /* its authoritative expiry, ms since the epoch; 0 = never */
    int stale;           /* 1: past its TTL, within its grace period */
};

struct tc_l1;

/**
 * Attaches to the existing segment /NAME (never creates one).
 * @param flags  TC_L1_READ or TC_L1_WRITE.
 * @param opt    may be NULL (this user's segment, mode 0600).
 * @param[out] out  owned by the caller: tc_l1_close().
 * @param[out] err  a human-readable reason on failure (may be NULL).
 * @return TC_L1_OK; TC_L1_ENOTFOUND (no such segment); TC_L1_EPERM;
 *         TC_L1_EVERSION; TC_L1_ECORRUPT; TC_L1_EINVAL; TC_L1_EIO; TC_L1_ENOMEM.
 */
TC_L1_API int tc_l1_open(const char *name, unsigned flags, const struct tc_l1_options *opt,
                         struct tc_l1 **out, char *err, size_t errlen);

/**
 * Copies the value of @p key into @p buf (@p cap bytes) and describes it in
 * @p value (may be NULL). A value past its expiry is a miss; one within its
 * grace period is returned with value->stale = 1.
 * @return TC_L1_OK; TC_L1_ENOTFOUND; TC_L1_ETOOBIG (buf too small:
 *         value->len says how large); TC_L1_ENOTSUP (encrypted);
 *         TC_L1_EINVAL (empty key, NULL buf with cap > 0); TC_L1_ENOMEM.
 */
TC_L1_API int tc_l1_get(struct tc_l1 *l1, const void *key, size_t klen, void *buf, size_t cap,
                        struct tc_l1_value *value);

/**
 * Stores @p key -> @p value (@p vlen bytes) with @p encoding and a TTL of
 * @p ttl_ms (0 = never expires), as a PUT would; the L1 keeps it until then
 * or until it is evicted (it is a cache). The slower tiers of the server
 * (LMDB, Redis) do not see it.
 * @return TC_L1_OK; TC_L1_EPERM (a TC_L1_READ handle); TC_L1_EINVAL;
 *         TC_L1_ETOOBIG.
 */
TC_L1_API int tc_l1_set(struct tc_l1 *l1, const void *key, size_t klen, const void *value,
                        size_t vlen, enum tc_l1_encoding encoding, uint64_t ttl_ms);

/** Removes @p key from the L1. @return TC_L1_OK, TC_L1_ENOTFOUND, TC_L1_EPERM, TC_L1_EINVAL. */
TC_L1_API int tc_l1_del(struct tc_l1 *l1, const void *key, size_t klen);

/** Detaches. NULL is a no-op. */
TC_L1_API void tc_l1_close(struct tc_l1 *l1);

/** "TC_L1_ENOTFOUND" ... for a result code. */
TC_L1_API const char *tc_l1_strerror(int status);

/** The library's version, "MAJOR.MINOR.PATCH". */
TC_L1_API const char *tc_l1_version(void);

#ifdef __cplusplus
}
#endif

#endif
