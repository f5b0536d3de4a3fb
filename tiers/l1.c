/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * libtiercache (include/tiercache/l1.h): the shm ring (shm/ring.h) plus the
 * item codec (tiers/item.h), behind a handful of functions with a stable
 * ABI. Built into libtiercache.so/.a from the same sources the server uses,
 * so the library decodes exactly what the server's shm:// tier writes
 * (tiers/tier_shm.c: a 40-byte item header in front of the value, one
 * gathered write; the ring's local expiry beside it; the header's check
 * slot holds the value's ETag, tc_item_encode_guarded).
 */
#include "include/tiercache/l1.h"
#include "shm/ring.h"
#include "tiers/item.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TC_VERSION
#define TC_VERSION "0.0.0"
#endif

/* The public codes are the server's, so that tc_strerror() covers them. */
_Static_assert(TC_L1_OK == (int)TC_OK && TC_L1_ENOTFOUND == (int)TC_ENOTFOUND &&
                   TC_L1_ETOOBIG == (int)TC_ETOOBIG && TC_L1_ENOMEM == (int)TC_ENOMEM &&
                   TC_L1_EIO == (int)TC_EIO && TC_L1_ECORRUPT == (int)TC_ECORRUPT &&
                   TC_L1_EVERSION == (int)TC_EVERSION && TC_L1_EINVAL == (int)TC_EINVAL &&
                   TC_L1_ENOTSUP == (int)TC_ENOTSUP && TC_L1_EPERM == (int)TC_EPERM,
               "libtiercache codes are tc_status codes");
_Static_assert((int)TC_L1_STRING == (int)TC_ENC_STRING && (int)TC_L1_JSON == (int)TC_ENC_JSON &&
                   (int)TC_L1_BINARY == (int)TC_ENC_BINARY,
               "libtiercache encodings are the item encodings");

struct tc_l1 {
    struct tc_ring *ring;
    struct tc_ring_ctx *ctx;
    unsigned flags;
    uint8_t *scratch; /* header + value of the last get; grows up to the largest item */
    size_t scratch_cap;
};

/* Values carry absolute expiries in ms since the epoch (the server's clock). */
static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A user or group name, or a number, as an id; -1 if unknown. */
static int resolve_id(const char *s, int group, uint32_t *id)
{
    char *end;
    unsigned long n = strtoul(s, &end, 10);
    if (s[0] >= '0' && s[0] <= '9' && *end == '\0' && n <= UINT32_MAX) {
        *id = (uint32_t)n;
        return 0;
    }
    char buf[4096];
    if (group) {
        struct group g, *gp = NULL;
        if (getgrnam_r(s, &g, buf, sizeof(buf), &gp) != 0 || gp == NULL) {
            return -1;
        }
        *id = (uint32_t)gp->gr_gid;
    } else {
        struct passwd p, *pp = NULL;
        if (getpwnam_r(s, &p, buf, sizeof(buf), &pp) != 0 || pp == NULL) {
            return -1;
        }
        *id = (uint32_t)pp->pw_uid;
    }
    return 0;
}

int tc_l1_open(const char *name, unsigned flags, const struct tc_l1_options *opt,
               struct tc_l1 **out, char *err, size_t errlen)
{
    struct tc_ring_options ro = {0}; /* size 0: attach only, never create */
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (name == NULL || out == NULL || flags > TC_L1_WRITE) {
        if (err != NULL) {
            snprintf(err, errlen, "tc_l1_open: NULL name or out, or unknown flags");
        }
        return TC_L1_EINVAL;
    }
    if (opt != NULL) {
        ro.mode = opt->mode;
        if (opt->owner != NULL) {
            if (resolve_id(opt->owner, 0, &ro.owner_uid) != 0) {
                if (err != NULL) {
                    snprintf(err, errlen, "unknown user '%s'", opt->owner);
                }
                return TC_L1_EINVAL;
            }
            ro.has_owner = 1;
        }
        if (opt->group != NULL) {
            if (resolve_id(opt->group, 1, &ro.group_gid) != 0) {
                if (err != NULL) {
                    snprintf(err, errlen, "unknown group '%s'", opt->group);
                }
                return TC_L1_EINVAL;
            }
            ro.has_group = 1;
        }
    }
    struct tc_l1 *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return TC_L1_ENOMEM;
    }
    l->flags = flags;
    enum tc_status st = tc_ring_open(name, &ro, &l->ring, err, errlen);
    if (st == TC_OK) {
        st = tc_ring_ctx_create(l->ring, &l->ctx);
        if (st != TC_OK && err != NULL) {
            snprintf(err, errlen, "every statistics slot of /%s is taken", name);
        }
    }
    if (st != TC_OK) {
        tc_l1_close(l);
        return st == TC_EAGAIN ? TC_L1_EIO : (int)st;
    }
    *out = l;
    return TC_L1_OK;
}

static int reserve(struct tc_l1 *l, size_t need)
{
    if (need <= l->scratch_cap) {
        return 0;
    }
    uint8_t *p = realloc(l->scratch, need);
    if (p == NULL) {
        return -1;
    }
    l->scratch = p;
    l->scratch_cap = need;
    return 0;
}

int tc_l1_get(struct tc_l1 *l, const void *key, size_t klen, void *buf, size_t cap,
              struct tc_l1_value *value)
{
    struct tc_ring_item it;
    struct tc_item_hdr h;
    enum tc_status st = TC_ENOTFOUND;
    if (l == NULL || key == NULL || klen == 0 || (buf == NULL && cap > 0)) {
        return TC_L1_EINVAL;
    }
    if (klen > TC_RING_KEY_MAX) {
        return TC_L1_ETOOBIG;
    }
    it.value_len = 0;
    uint64_t now = now_ms();
    /* The record may grow between the size report and the retry. */
    for (int tries = 0; tries < 4; tries++) {
        if (reserve(l, l->scratch_cap > 0 ? l->scratch_cap : TC_ITEM_HDR_SIZE + 4096) != 0) {
            return TC_L1_ENOMEM;
        }
        st = tc_ring_get(l->ctx, key, klen, now, l->scratch, l->scratch_cap, &it);
        if (st != TC_ETOOBIG || it.value_len <= l->scratch_cap) {
            break;
        }
        if (reserve(l, it.value_len) != 0) {
            return TC_L1_ENOMEM;
        }
        st = TC_ENOTFOUND;
    }
    if (st != TC_OK) {
        return st == TC_ETOOBIG ? TC_L1_ENOTFOUND : (int)st;
    }
    /* Written by another program, an older format, or damaged: a miss. The
     * ring's check covered every byte, as for the server's shm tier. */
    uint64_t etag;
    if (tc_item_decode_guarded(l->scratch, it.value_len, &h, &etag) != TC_OK ||
        tc_item_expired(h.expire_ms, now)) {
        return TC_L1_ENOTFOUND;
    }
    if (h.flags & (TC_ITEM_F_ENCRYPTED | TC_ITEM_F_COMPRESSED)) {
        return TC_L1_ENOTSUP;
    }
    if (value != NULL) {
        uint64_t fresh = tc_item_fresh_until(&h);
        *value = (struct tc_l1_value){h.value_len, h.encoding, h.created_ms, h.expire_ms,
                                      fresh != 0 && fresh <= now};
    }
    if (h.value_len > cap) {
        return TC_L1_ETOOBIG;
    }
    if (h.value_len > 0) {
        memcpy(buf, l->scratch + TC_ITEM_HDR_SIZE, h.value_len);
    }
    return TC_L1_OK;
}

int tc_l1_set(struct tc_l1 *l, const void *key, size_t klen, const void *value, size_t vlen,
              enum tc_l1_encoding encoding, uint64_t ttl_ms)
{
    if (l == NULL || key == NULL || klen == 0 || (value == NULL && vlen > 0)) {
        return TC_L1_EINVAL;
    }
    if (!(l->flags & TC_L1_WRITE)) {
        return TC_L1_EPERM;
    }
    if (vlen > TC_ITEM_VALUE_MAX) {
        return TC_L1_ETOOBIG;
    }
    uint64_t now = now_ms();
    struct tc_item_hdr h = {.encoding = (uint8_t)encoding,
                            .created_ms = now,
                            .expire_ms = ttl_ms == 0 ? 0 : now + ttl_ms,
                            .value_len = (uint32_t)vlen};
    uint8_t hdr[TC_ITEM_HDR_SIZE];
    enum tc_status st = tc_item_encode_guarded(&h, value, hdr);
    if (st == TC_OK) {
        struct tc_ring_iov iov[2] = {{hdr, sizeof(hdr)}, {value, vlen}};
        st = tc_ring_setv(l->ctx, key, klen, iov, 2, h.expire_ms, 0, now);
    }
    return (int)st;
}

int tc_l1_del(struct tc_l1 *l, const void *key, size_t klen)
{
    if (l == NULL || key == NULL || klen == 0) {
        return TC_L1_EINVAL;
    }
    if (!(l->flags & TC_L1_WRITE)) {
        return TC_L1_EPERM;
    }
    return (int)tc_ring_del(l->ctx, key, klen, now_ms());
}

void tc_l1_close(struct tc_l1 *l)
{
    if (l == NULL) {
        return;
    }
    tc_ring_ctx_destroy(l->ctx);
    tc_ring_close(l->ring);
    free(l->scratch);
    free(l);
}

const char *tc_l1_strerror(int status)
{
    return tc_status_name((enum tc_status)status);
}

const char *tc_l1_version(void)
{
    return TC_VERSION;
}
