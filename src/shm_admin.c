/* SPDX-License-Identifier: BSD-2-Clause */
#include "src/shm_admin.h"
#include "shm/ring.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* `tiercache shm stats NAME` and `tiercache shm unlink NAME`: inspection of
 * an L1 segment from outside any server, through the ring library alone. */
int tc_shm_admin_main(int argc, char **argv)
{
    char err[512] = "";
    if (argc != 4 || (strcmp(argv[2], "stats") != 0 && strcmp(argv[2], "unlink") != 0)) {
        fprintf(stderr, "Usage: tiercache shm stats NAME   print a segment's state as JSON\n"
                        "       tiercache shm unlink NAME  remove a segment\n");
        return 2;
    }
    const char *name = argv[3];
    if (strcmp(argv[2], "unlink") == 0) {
        enum tc_status st = tc_ring_unlink(name, err, sizeof(err));
        if (st != TC_OK) {
            fprintf(stderr, "tiercache: shm unlink %s: %s\n", name, err[0] ? err : tc_strerror(st));
            return 1;
        }
        return 0;
    }
    struct tc_ring *ring;
    /* Attach only, any size, any owner and mode: it only reads, and shows
     * owner and mode so that a squatted segment can be seen for what it is. */
    struct tc_ring_options o = {.size = 0, .attach_timeout_ms = 500, .any_owner = 1};
    enum tc_status st = tc_ring_open(name, &o, &ring, err, sizeof(err));
    if (st != TC_OK) {
        fprintf(stderr, "tiercache: shm stats %s: %s\n", name, err[0] ? err : tc_strerror(st));
        return 1;
    }
    struct tc_ring_stats rs;
    char why[512];
    tc_ring_stats(ring, &rs);
    int damaged = tc_ring_check(ring, why, sizeof(why)) != TC_OK;
    tc_ring_close(ring);
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(name));
    json_object_set_new(j, "layout", json_sprintf("%u.%u", rs.layout_major, rs.layout_minor));
    json_object_set_new(j, "creator_pid", json_integer((json_int_t)rs.creator_pid));
    json_object_set_new(j, "owner_uid", json_integer((json_int_t)rs.seg_uid));
    json_object_set_new(j, "group_gid", json_integer((json_int_t)rs.seg_gid));
    json_object_set_new(j, "mode", json_sprintf("%04o", (unsigned)rs.seg_mode));
    json_object_set_new(j, "capacity", json_integer((json_int_t)rs.seg_size));
    json_object_set_new(j, "log_capacity", json_integer((json_int_t)rs.log_capacity));
    json_object_set_new(j, "bytes_used", json_integer((json_int_t)rs.bytes_used));
    json_object_set_new(j, "items", json_integer((json_int_t)rs.items));
    json_object_set_new(j, "index_slots", json_integer((json_int_t)rs.slots));
    json_object_set_new(j, "attached_ctxs", json_integer((json_int_t)rs.ctxs));
    json_object_set_new(j, "lock_slots", json_integer((json_int_t)rs.lock_slots));
    json_object_set_new(j, "locks_held", json_integer((json_int_t)rs.locks_held));
    json_object_set_new(j, "stats_rejected", json_integer((json_int_t)rs.stats_rejected));
    json_object_set_new(j, "check", json_string(damaged ? why : "ok"));
#define TC_RING_X(field, i) json_object_set_new(j, #field, json_integer((json_int_t)rs.field));
    TC_RING_STATS_COUNTERS(TC_RING_X)
#undef TC_RING_X
    uint64_t lookups = rs.hits + rs.misses;
    json_object_set_new(j, "hit_ratio",
                        json_real(lookups ? (double)rs.hits / (double)lookups : 0.0));
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(j);
    return 0;
}
