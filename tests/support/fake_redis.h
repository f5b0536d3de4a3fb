/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: a fake Redis that misbehaves on cue. A forked process (so
 * that what it buffers never counts in the test's own RSS) listening on a
 * free 127.0.0.1 port. It answers the handshake (AUTH, SELECT), PING,
 * SUBSCRIBE and a small working subset of data commands (GET, PTTL, SET,
 * UNLINK, DEL, PUBLISH, SCAN) like Redis, and, in every mode but
 * TC_FAKE_NORMAL, answers GET (and only GET) as the mode says; the
 * handshake stays correct, so a client can reconnect and fail again.
 *
 * Start it before the test process makes any thread (it forks). It dies
 * with the process that started it. Not thread-safe: one driver thread.
 */
#ifndef TC_TESTS_SUPPORT_FAKE_REDIS_H
#define TC_TESTS_SUPPORT_FAKE_REDIS_H

#include <stdint.h>

enum tc_fake_mode {
    TC_FAKE_NORMAL = 0,
    TC_FAKE_UNSOLICITED, /* "+OK" before the reply to GET */
    TC_FAKE_EXTRA_AFTER, /* "+OK" 20 ms after the reply to PTTL, nothing pending */
    TC_FAKE_WRONG_TYPE,  /* GET answered with an integer */
    TC_FAKE_BIG_BULK,    /* GET answered "$1073741824", then bytes: 256 MiB fast, then a trickle */
    TC_FAKE_HUGE_ARRAY, /* GET answered "*2000000000", then ":1" elements (4 MiB), then a trickle */
    TC_FAKE_GARBAGE,    /* GET answered with bytes that are no reply */
    TC_FAKE_SPLIT,      /* correct replies, written one byte at a time */
    TC_FAKE_CLOSE_MID,  /* half the reply to GET, then the connection closed */
    TC_FAKE_STALL,      /* GET never answered (the connection stays open) */
    TC_FAKE_BIG_MESSAGE, /* subscribed connections get a message announcing 1 GB, then bytes */
};

struct tc_fake_redis;

/** Forks the server and waits until it listens. 0 and *out, or -1. */
int tc_fake_redis_start(struct tc_fake_redis **out);

/** Its TCP port on 127.0.0.1. */
unsigned tc_fake_redis_port(const struct tc_fake_redis *f);

/** Changes how GET is answered from now on (for connections old and new). */
void tc_fake_redis_set_mode(struct tc_fake_redis *f, enum tc_fake_mode mode);

/** Connections accepted so far. */
unsigned tc_fake_redis_accepted(const struct tc_fake_redis *f);

/** Connections the client side closed so far (EOF or reset seen by the server). */
unsigned tc_fake_redis_closed_by_client(const struct tc_fake_redis *f);

/** Bytes of misbehaviour (junk after a lying length) written so far. */
uint64_t tc_fake_redis_junk_sent(const struct tc_fake_redis *f);

/** Stops the server and reaps it. NULL is a no-op. */
void tc_fake_redis_stop(struct tc_fake_redis *f);

#endif
