/* SPDX-License-Identifier: BSD-2-Clause */
#include "shm/status.h"

const char *tc_strerror(enum tc_status st)
{
    switch (st) {
    case TC_EINPROGRESS:
        return "operation in progress";
    case TC_OK:
        return "success";
    case TC_ENOTFOUND:
        return "not found";
    case TC_EEXIST:
        return "already exists";
    case TC_ETOOBIG:
        return "key or value too large";
    case TC_ENOMEM:
        return "out of memory or space";
    case TC_EAGAIN:
        return "resource temporarily busy, try again";
    case TC_ETIMEOUT:
        return "operation timed out";
    case TC_EIO:
        return "input/output error";
    case TC_ECORRUPT:
        return "stored data is corrupt";
    case TC_EVERSION:
        return "layout or format version mismatch";
    case TC_EUNAVAIL:
        return "tier unavailable";
    case TC_EINVAL:
        return "invalid argument";
    case TC_ENOTSUP:
        return "operation not supported";
    case TC_EPERM:
        return "permission denied or owner not trusted";
    }
    return "unknown status";
}

const char *tc_status_name(enum tc_status st)
{
    switch (st) {
    case TC_EINPROGRESS:
        return "TC_EINPROGRESS";
    case TC_OK:
        return "TC_OK";
    case TC_ENOTFOUND:
        return "TC_ENOTFOUND";
    case TC_EEXIST:
        return "TC_EEXIST";
    case TC_ETOOBIG:
        return "TC_ETOOBIG";
    case TC_ENOMEM:
        return "TC_ENOMEM";
    case TC_EAGAIN:
        return "TC_EAGAIN";
    case TC_ETIMEOUT:
        return "TC_ETIMEOUT";
    case TC_EIO:
        return "TC_EIO";
    case TC_ECORRUPT:
        return "TC_ECORRUPT";
    case TC_EVERSION:
        return "TC_EVERSION";
    case TC_EUNAVAIL:
        return "TC_EUNAVAIL";
    case TC_EINVAL:
        return "TC_EINVAL";
    case TC_ENOTSUP:
        return "TC_ENOTSUP";
    case TC_EPERM:
        return "TC_EPERM";
    }
    return "TC_?";
}
