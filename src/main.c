/*
 * tiercache: the server binary. For now it parses its options, opens the
 * configured tier stack, reports it, and exits; the HTTP worker pool comes
 * with the server issue.
 */
#define _GNU_SOURCE /* getopt_long */
#include "tiers/tier.h"
#include "shm/ring.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TC_VERSION
#define TC_VERSION "0.0.0"
#endif

#define TC_MAX_TIERS 8

static const char *const default_tiers[] = {
    "shm://tiercache?size=64M",
    "lmdb://./data/l2",
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: tiercache [OPTIONS]\n"
            "       tiercache shm stats NAME | shm unlink NAME\n"
            "\n"
            "A multi-tier caching proxy: HTTP/JSON API over a stack of cache tiers.\n"
            "\n"
            "Options:\n"
            "  --listen ADDR:PORT   address to listen on (default 127.0.0.1:8080)\n"
            "  --tier URI           add a tier, fastest first (repeatable, up to %d);\n"
            "                       default: %s + %s\n"
            "  --workers N          worker threads (default: number of cores)\n"
            "  --default-ttl SECS   TTL for writes that give none (default 3600)\n"
            "  --max-value BYTES    largest value accepted (default 16M)\n"
            "  --config FILE        read settings from an INI file (command line wins)\n"
            "  --log-level LEVEL    crit, warn, notice, info, debug (default info)\n"
            "  --list-tiers         list the tier schemes this build knows, and exit\n"
            "  --help               show this help and exit\n"
            "  --version            print the version and exit\n"
            "\n"
            "Tier URIs (common parameters: ttl_ratio=(0,1], max_ttl=DURATION):\n",
            TC_MAX_TIERS, default_tiers[0], default_tiers[1]);
    struct tc_tier_registry *reg = tc_tier_registry_create();
    char schemes[256];
    tc_tier_registry_schemes(reg, schemes, sizeof(schemes));
    fprintf(out, "  schemes: %s\n", schemes);
    tc_tier_registry_destroy(reg);
}

/* `tiercache shm stats NAME` and `tiercache shm unlink NAME`: inspection of
 * an L1 segment from outside any server, through the ring library alone. */
static int shm_command(int argc, char **argv)
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
    struct tc_ring_options o = {.size = 0, .attach_timeout_ms = 500}; /* attach only, any size */
    enum tc_status st = tc_ring_open(name, &o, &ring, err, sizeof(err));
    if (st != TC_OK) {
        fprintf(stderr, "tiercache: shm stats %s: %s\n", name, err[0] ? err : tc_strerror(st));
        return 1;
    }
    struct tc_ring_stats rs;
    tc_ring_stats(ring, &rs);
    tc_ring_close(ring);
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(name));
    json_object_set_new(j, "layout", json_sprintf("%u.%u", rs.layout_major, rs.layout_minor));
    json_object_set_new(j, "creator_pid", json_integer((json_int_t)rs.creator_pid));
    json_object_set_new(j, "capacity", json_integer((json_int_t)rs.seg_size));
    json_object_set_new(j, "log_capacity", json_integer((json_int_t)rs.log_capacity));
    json_object_set_new(j, "bytes_used", json_integer((json_int_t)rs.bytes_used));
    json_object_set_new(j, "items", json_integer((json_int_t)rs.items));
    json_object_set_new(j, "index_slots", json_integer((json_int_t)rs.slots));
    json_object_set_new(j, "attached_ctxs", json_integer((json_int_t)rs.ctxs));
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

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"tier", required_argument, NULL, 't'},
        {"workers", required_argument, NULL, 'w'},
        {"default-ttl", required_argument, NULL, 'T'},
        {"max-value", required_argument, NULL, 'm'},
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'L'},
        {"list-tiers", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && strcmp(argv[1], "shm") == 0) {
        return shm_command(argc, argv);
    }
    const char *tiers[TC_MAX_TIERS];
    size_t ntiers = 0;
    const char *listen = "127.0.0.1:8080";
    int opt;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen = optarg;
            break;
        case 't':
            if (ntiers == TC_MAX_TIERS) {
                fprintf(stderr, "tiercache: too many --tier options (at most %d)\n", TC_MAX_TIERS);
                return 2;
            }
            tiers[ntiers++] = optarg;
            break;
        case 'w':
        case 'T':
        case 'm':
        case 'c':
        case 'L':
            break; /* accepted now, used by the server */
        case 's': {
            struct tc_tier_registry *reg = tc_tier_registry_create();
            char schemes[256];
            tc_tier_registry_schemes(reg, schemes, sizeof(schemes));
            printf("%s\n", schemes);
            tc_tier_registry_destroy(reg);
            return 0;
        }
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("tiercache %s\n", TC_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tiercache: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    struct tc_tier_registry *reg = tc_tier_registry_create();
    if (reg == NULL) {
        fprintf(stderr, "tiercache: out of memory\n");
        return 1;
    }
    if (ntiers == 0) {
        for (size_t i = 0; i < sizeof(default_tiers) / sizeof(default_tiers[0]); i++) {
            char scheme[16];
            sscanf(default_tiers[i], "%15[a-z+]", scheme);
            if (tc_tier_registry_find(reg, scheme) == NULL) {
                /* A backend still to be built; the default stack skips it. */
                fprintf(stderr, "tiercache: default tier %s:// not in this build, skipped\n",
                        scheme);
                continue;
            }
            tiers[ntiers++] = default_tiers[i];
        }
    }
    struct tc_tier *open_tiers[TC_MAX_TIERS] = {0};
    int rc = 0;
    for (size_t i = 0; i < ntiers; i++) {
        char err[512];
        enum tc_status st = tc_tier_open(reg, tiers[i], &open_tiers[i], err, sizeof(err));
        if (st != TC_OK) {
            fprintf(stderr, "tiercache: --tier '%s': %s\n", tiers[i],
                    err[0] ? err : tc_strerror(st));
            rc = 1;
            break;
        }
        fprintf(stderr, "tiercache: L%zu %s (ttl_ratio=%g, max_ttl=%llums)\n", i + 1,
                tc_tier_uri(open_tiers[i]), tc_tier_ttl_ratio(open_tiers[i]),
                (unsigned long long)tc_tier_max_ttl_ms(open_tiers[i]));
    }
    if (rc == 0) {
        fprintf(stderr, "tiercache: stack opened; the HTTP server (%s) is not built yet, exiting\n",
                listen);
    }
    for (size_t i = ntiers; i-- > 0;) {
        tc_tier_close(open_tiers[i]);
    }
    tc_tier_registry_destroy(reg);
    return rc;
}
