/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tiercache status codes, shared by every layer.
 *
 * Every fallible function in tiercache returns an enum tc_status: TC_OK (0) on
 * success, a negative code on failure, or TC_EINPROGRESS (positive, not an
 * error) when an asynchronous operation was started and its callback will run
 * later. errno values, MDB_* codes, REDIS_ERR and OpenSSL errors are mapped at
 * the module boundary and never leak through it (STYLE R6).
 *
 * This header lives in shm/ because shm/ is the lowest layer: it may depend on
 * libc only, and tiers/ and src/ build on it (STYLE R1).
 */
#ifndef TC_SHM_STATUS_H
#define TC_SHM_STATUS_H

enum tc_status {
    TC_EINPROGRESS = 1, /* started; the completion callback runs exactly once later */
    TC_OK = 0,
    TC_ENOTFOUND = -1, /* key absent or expired: a normal result, not an error */
    TC_EEXIST = -2,    /* already exists / already held */
    TC_ETOOBIG = -3,   /* key or value larger than this tier accepts */
    TC_ENOMEM = -4,    /* allocation failed, or no space can be made */
    TC_EAGAIN = -5,    /* transient contention; retrying may succeed */
    TC_ETIMEOUT = -6,  /* a deadline passed */
    TC_EIO = -7,       /* an I/O or system call failed */
    TC_ECORRUPT = -8,  /* bytes read from a store failed validation */
    TC_EVERSION = -9,  /* layout or format version mismatch */
    TC_EUNAVAIL = -10, /* the tier or service is down, closed or shutting down */
    TC_EINVAL = -11,   /* a caller-supplied argument or setting is invalid */
    TC_ENOTSUP = -12,  /* the operation is not supported by this tier */
    TC_EPERM = -13,    /* refused: access denied, or an owner or mode that is not trusted */
};

/** Lowest (most negative) status value; for table bounds in tests. */
#define TC_STATUS_MIN TC_EPERM

/**
 * Returns a static, human-readable description of @p st. Never NULL: an
 * unknown value yields "unknown status". Thread-safe.
 */
const char *tc_strerror(enum tc_status st);

/**
 * Returns the symbolic name of @p st ("TC_ENOTFOUND", ...), or "TC_?" for an
 * unknown value. Static storage, thread-safe.
 */
const char *tc_status_name(enum tc_status st);

#endif
