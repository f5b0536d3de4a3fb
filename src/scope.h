/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Auth scopes: what a client may do (issue 14). A client's grant is a set of
 * these bits, from its Bearer token (src/auth.c) or from its verified TLS
 * client certificate (the TLS layer); each route in src/routes.c names the
 * one bit it needs. `admin` implies every other scope.
 */
#ifndef TC_SRC_SCOPE_H
#define TC_SRC_SCOPE_H

#include "shm/status.h"

#include <stddef.h>

#define TC_SCOPE_READ  0x1u /* GET/HEAD cache values, bulk gets */
#define TC_SCOPE_WRITE 0x2u /* PUT/DELETE cache values, bulk writes */
#define TC_SCOPE_LOCKS 0x4u /* /locks, leases */
#define TC_SCOPE_ADMIN 0x8u /* /stats, /metrics, flush, purge, key listing: everything */
#define TC_SCOPE_ALL   0xfu

/** The scopes @p grant actually allows: admin implies all the others. */
static inline unsigned tc_scope_effective(unsigned grant)
{
    return (grant & TC_SCOPE_ADMIN) ? TC_SCOPE_ALL : grant;
}

/**
 * Parses a comma-separated list of scope names ("read,write"; spaces around
 * names allowed) of @p len bytes into @p out.
 * @return TC_OK; TC_EINVAL for an empty list or an unknown name.
 */
enum tc_status tc_scope_parse(const char *s, size_t len, unsigned *out);

/** Writes @p scopes as "read,write,..." into @p buf (NUL-terminated, truncated
 * to @p n); returns @p buf. No scope at all is written as "none". */
const char *tc_scope_format(unsigned scopes, char *buf, size_t n);

/** The name of a single scope bit ("read", ...), or NULL. */
const char *tc_scope_name(unsigned bit);

#endif
