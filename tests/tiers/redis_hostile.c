/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Issue 12 (item 3): nothing a Redis server, or anything pretending to be
 * one, sends can crash the process or grow it past a bound. A fake Redis
 * (tests/support/fake_redis.h, a forked process on a free loopback port)
 * answers the handshake and then answers GET wrongly on cue:
 *
 *   unsolicited  "+OK" before the reply     extra        "+OK" when nothing is pending
 *   wrong_type   an integer for GET         big_bulk     "$1073741824", then bytes
 *   huge_array   "*2000000000", then ":1"s  garbage      bytes that are no reply
 *   split        one byte per write (must still work)
 *   close_mid    half a reply, then close   stall        no answer at all
 *   big_message  (the subscriber) a message announcing 1 GB
 *
 * Each case runs in a child process, async (on an event_base) and blocking
 * (NULL event_base), so that an abort or a hang is reported, not suffered.
 * In the child: the process survives; its peak RSS (VmHWM, reset first)
 * grows by less than LIMIT_KB; the faulty get completes exactly once, as a
 * miss with the fault counted; the connection is closed (the fake sees the
 * client close it) and re-made; repeated faults open the circuit; once the
 * fake behaves again, the tier probes back and hits.
 *
 * A plain program (not Criterion) so that deploy/test.sh reruns it under
 * ThreadSanitizer. Prints one line of figures per case and
 * "redis_hostile: N passed, M failed"; `redis_hostile CASE` runs one case.
 */
#include "tests/support/clock.h"
#include "tests/support/check.h"
#include "tests/support/fake_redis.h"
#include "tests/support/stats.h"
#include "tiers/tier.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEM    "256K"
#define MAX_ITEM_KB 256
/* "A few MB over max_item": what one case may add to the peak RSS. */
#define LIMIT_KB    (MAX_ITEM_KB + 8192)
#define TIMEOUT_MS  200
#define CASE_TIME_S 40 /* a child that runs longer has hung */

static struct tc_fake_redis *fake;

struct fault {
    const char *name;
    enum tc_fake_mode mode;
    int protocol; /* counted in protocol_errors */
    int ok;       /* the get still hits */
    int trips;    /* repeated faults open the circuit */
};

static const struct fault faults[] = {
    {"unsolicited", TC_FAKE_UNSOLICITED, 1, 0, 1},
    {"extra", TC_FAKE_EXTRA_AFTER, 1, 1, 0},
    {"wrong_type", TC_FAKE_WRONG_TYPE, 1, 0, 1},
    {"big_bulk", TC_FAKE_BIG_BULK, 1, 0, 1},
    {"huge_array", TC_FAKE_HUGE_ARRAY, 1, 0, 1},
    {"garbage", TC_FAKE_GARBAGE, 1, 0, 1},
    {"split", TC_FAKE_SPLIT, 0, 1, 0},
    {"close_mid", TC_FAKE_CLOSE_MID, 0, 0, 1},
    {"stall", TC_FAKE_STALL, 0, 0, 1},
};

/* A line of /proc/self/status, in kB; -1 if absent. */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0), so that the peak seen
 * later is this case's. */
static void reset_peak(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1) {
            fprintf(stderr, "clear_refs: %s\n", strerror(errno));
        }
        close(fd);
    }
}

static uint64_t tstat(struct tc_tier *t, const char *name)
{
    uint64_t v = 0;
    tc_test_tier_stat(t, name, &v);
    return v;
}

/* ---- one operation, async or blocking -------------------------------------------- */

struct op {
    struct tc_tier_req req;
    int calls;
};

static struct event_base *base; /* NULL: the blocking mode */
static struct tc_tier_ctx *ctx;
static struct tc_buf out;

static void op_done(struct tc_tier_req *req)
{
    struct op *o = req->arg;
    o->calls++;
}

/* Runs a get (value NULL) or a set to completion; *calls: completions seen. */
static enum tc_status run(const char *key, const char *value, int *calls)
{
    struct op o;
    memset(&o, 0, sizeof(o));
    o.req.key = key;
    o.req.key_len = strlen(key);
    o.req.now_ms = tc_test_wall_ms();
    o.req.done = base != NULL ? op_done : NULL;
    o.req.arg = &o;
    enum tc_status st;
    if (value != NULL) {
        o.req.value = value;
        o.req.value_len = strlen(value);
        o.req.hdr.encoding = TC_ENC_STRING;
        o.req.hdr.expire_ms = o.req.now_ms + 600000;
        st = tc_tier_set(ctx, &o.req);
    } else {
        o.req.out = &out;
        st = tc_tier_get(ctx, &o.req);
    }
    if (st == TC_EINPROGRESS) {
        uint64_t end = tc_test_mono_ms() + 10000;
        while (o.calls == 0 && tc_test_mono_ms() < end) {
            event_base_loop(base, EVLOOP_ONCE);
        }
        /* A second completion would come from the loop: give it a chance. */
        struct timeval tick = {0, 2000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
        st = o.calls > 0 ? o.req.status : TC_EINPROGRESS;
    } else {
        o.calls = 1;
    }
    *calls = o.calls;
    return st;
}

/* Lets the async ctx's loop run (a reconnect, a stray reply) for ms. */
static void idle(long ms)
{
    if (base == NULL) {
        tc_test_sleep_ms(ms);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static const char VALUE[] = "value-of-k0-with-some-length-to-it-0123456789";

/* ---- one case, in a child ---------------------------------------------------------- */

static int child_case(const struct fault *f, int async)
{
    passed = failed = 0; /* this child's own */
    char uri[512], err[512];
    snprintf(uri, sizeof(uri),
             "redis://127.0.0.1:%u/0?timeout_ms=%d&connect_timeout_ms=500&backoff_ms=50&"
             "backoff_max_ms=200&breaker_failures=3&invalidate=none&max_item=%s",
             tc_fake_redis_port(fake), TIMEOUT_MS, MAX_ITEM);
    struct tc_tier *t = NULL;
    tc_fake_redis_set_mode(fake, TC_FAKE_NORMAL);
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
        CHECK(0, "open: %s", err);
        return 1;
    }
    base = async ? event_base_new() : NULL;
    CHECK(tc_tier_ctx_init(t, base, &ctx) == TC_OK, "ctx_init");
    tc_buf_init(&out);
    int calls;
    CHECK(run("k0", VALUE, &calls) == TC_OK, "set while the fake behaves");
    enum tc_status st = run("k0", NULL, &calls);
    CHECK(st == TC_OK && out.len == strlen(VALUE), "get while the fake behaves: %s",
          tc_strerror(st));

    reset_peak();
    long rss0 = status_kb("VmRSS");
    unsigned acc0 = tc_fake_redis_accepted(fake), closed0 = tc_fake_redis_closed_by_client(fake);
    uint64_t proto0 = tstat(t, "protocol_errors"), fail0 = tstat(t, "failures");
    uint64_t tmo0 = tstat(t, "timeouts"), conn0 = tstat(t, "connects");

    /* The fault. */
    tc_fake_redis_set_mode(fake, f->mode);
    uint64_t t0 = tc_test_mono_ms();
    st = run("k0", NULL, &calls);
    uint64_t took = tc_test_mono_ms() - t0;
    CHECK(calls == 1, "%s: the get completed %d times", f->name, calls);
    if (f->ok) {
        CHECK(st == TC_OK && out.len == strlen(VALUE) && memcmp(out.data, VALUE, out.len) == 0,
              "%s: the get should still hit: %s", f->name, tc_strerror(st));
    } else {
        CHECK(st == TC_ENOTFOUND, "%s: the get should be a miss: %s", f->name, tc_strerror(st));
    }
    CHECK(took <= TIMEOUT_MS + 1000, "%s: the get took %llu ms", f->name, (unsigned long long)took);
    /* The stray reply of "extra" arrives after the get; the blocking mode
     * reads it at its next call. */
    idle(100);
    if (f->mode == TC_FAKE_EXTRA_AFTER) {
        st = run("k0", NULL, &calls);
        CHECK(st == TC_OK, "extra: the next get hits too: %s", tc_strerror(st));
        idle(100);
    }
    if (f->protocol) {
        CHECK(tstat(t, "protocol_errors") > proto0, "%s: no protocol error counted", f->name);
    } else if (f->mode == TC_FAKE_STALL) {
        CHECK(tstat(t, "timeouts") > tmo0, "stall: no timeout counted");
    } else if (f->mode == TC_FAKE_CLOSE_MID) {
        CHECK(tstat(t, "failures") > fail0, "close_mid: no failure counted");
    } else {
        CHECK(tstat(t, "protocol_errors") == proto0 && tstat(t, "failures") == fail0,
              "%s: faults counted on a healthy exchange", f->name);
    }
    if (f->protocol) {
        /* Closed by us (the fake saw it), and a new one made. */
        uint64_t end = tc_test_mono_ms() + 2000;
        while (tc_fake_redis_closed_by_client(fake) == closed0 && tc_test_mono_ms() < end) {
            idle(10);
        }
        CHECK(tc_fake_redis_closed_by_client(fake) > closed0, "%s: the connection was not closed",
              f->name);
    }

    /* Repeated faults open the circuit; every get still completes once. */
    int ops = 0, twice = 0;
    if (f->trips) {
        uint64_t end = tc_test_mono_ms() + 8000;
        while (tstat(t, "circuit_opens") == 0 && tc_test_mono_ms() < end) {
            st = run("k0", NULL, &calls);
            twice += calls != 1;
            ops++;
        }
        CHECK(tstat(t, "circuit_opens") >= 1, "%s: the circuit never opened (%d gets)", f->name,
              ops);
        CHECK(twice == 0, "%s: %d gets did not complete exactly once", f->name, twice);
        CHECK(tc_tier_health(t, NULL, 0) != TC_HEALTH_OK, "%s: healthy with the circuit open",
              f->name);
    } else {
        for (int i = 0; i < 5; i++) {
            st = run("k0", NULL, &calls);
            CHECK(st == TC_OK && calls == 1, "%s: get %d: %s", f->name, i, tc_strerror(st));
        }
    }
    long peak = status_kb("VmHWM"), grew = peak - rss0;
    CHECK(grew < LIMIT_KB, "%s: peak RSS grew by %ld kB (limit %d kB)", f->name, grew, LIMIT_KB);
    if (f->trips && f->mode != TC_FAKE_CLOSE_MID) { /* that one the fake closes */
        uint64_t end = tc_test_mono_ms() + 2000;
        while (tc_fake_redis_closed_by_client(fake) == closed0 && tc_test_mono_ms() < end) {
            tc_test_sleep_ms(5);
        }
        CHECK(tc_fake_redis_closed_by_client(fake) > closed0,
              "%s: the faulty connection was not closed", f->name);
    }

    /* The fake behaves again: probed back, hits. */
    tc_fake_redis_set_mode(fake, TC_FAKE_NORMAL);
    uint64_t back0 = tc_test_mono_ms(), back = 0;
    int is_back = 0;
    while (tc_test_mono_ms() - back0 < 5000) {
        if (run("k0", NULL, &calls) == TC_OK && tc_tier_health(t, NULL, 0) == TC_HEALTH_OK) {
            back = tc_test_mono_ms() - back0;
            is_back = 1;
            break;
        }
        idle(10);
    }
    CHECK(is_back, "%s: never back after the fake behaved", f->name);
    CHECK(out.len == strlen(VALUE) && memcmp(out.data, VALUE, out.len) == 0,
          "%s: wrong value after recovery", f->name);
    unsigned reconnects = tc_fake_redis_accepted(fake) - acc0;
    if (f->protocol || f->trips) {
        CHECK(reconnects >= 1 && tstat(t, "connects") > conn0, "%s: no connection re-made",
              f->name);
    } else if (f->mode == TC_FAKE_SPLIT) {
        CHECK(reconnects == 0, "split: %u reconnects", reconnects);
    }
    printf("hostile: %-11s %-8s get %-11s in %4llu ms; peak RSS +%ld kB; protocol_errors %llu, "
           "bad_replies %llu, failures %llu, timeouts %llu; %u new connections; circuit opened "
           "%llu times after %d gets; back in %llu ms\n",
           f->name, async ? "async" : "blocking", f->ok ? "hit" : "miss", (unsigned long long)took,
           grew, (unsigned long long)(tstat(t, "protocol_errors") - proto0),
           (unsigned long long)tstat(t, "bad_replies"),
           (unsigned long long)(tstat(t, "failures") - fail0),
           (unsigned long long)(tstat(t, "timeouts") - tmo0), reconnects,
           (unsigned long long)tstat(t, "circuit_opens"), ops, (unsigned long long)back);
    fflush(stdout);
    tc_tier_ctx_dispose(ctx);
    if (base != NULL) {
        event_base_free(base);
    }
    tc_buf_deinit(&out);
    tc_tier_close(t);
    return failed ? 1 : 0;
}

/* The subscriber connection has the same bounds: a message announcing 1 GB
 * closes it, it subscribes again, and the process stays small. */
static int child_subscriber(void)
{
    passed = failed = 0;
    char uri[512], err[512];
    snprintf(uri, sizeof(uri),
             "redis://127.0.0.1:%u/0?timeout_ms=%d&connect_timeout_ms=500&backoff_ms=50&"
             "backoff_max_ms=200&invalidate=pubsub&max_item=%s",
             tc_fake_redis_port(fake), TIMEOUT_MS, MAX_ITEM);
    struct tc_tier *t = NULL;
    tc_fake_redis_set_mode(fake, TC_FAKE_NORMAL);
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
        CHECK(0, "open: %s", err);
        return 1;
    }
    CHECK(tstat(t, "subscribed") == 1, "subscribed after open");
    reset_peak();
    long rss0 = status_kb("VmRSS");
    unsigned closed0 = tc_fake_redis_closed_by_client(fake);
    tc_fake_redis_set_mode(fake, TC_FAKE_BIG_MESSAGE);
    uint64_t end = tc_test_mono_ms() + 3000;
    while (tstat(t, "protocol_errors") < 2 && tc_test_mono_ms() < end) {
        tc_test_sleep_ms(10);
    }
    CHECK(tstat(t, "protocol_errors") >= 2, "big_message: refused %llu times",
          (unsigned long long)tstat(t, "protocol_errors"));
    CHECK(tc_fake_redis_closed_by_client(fake) > closed0, "big_message: not closed");
    long grew = status_kb("VmHWM") - rss0;
    CHECK(grew < LIMIT_KB, "big_message: peak RSS grew by %ld kB", grew);
    tc_fake_redis_set_mode(fake, TC_FAKE_NORMAL);
    end = tc_test_mono_ms() + 3000;
    while (tstat(t, "subscribed") == 0 && tc_test_mono_ms() < end) {
        tc_test_sleep_ms(10);
    }
    CHECK(tstat(t, "subscribed") == 1, "big_message: not subscribed again");
    printf("hostile: big_message subscriber: peak RSS +%ld kB; protocol_errors %llu, "
           "sub_reconnects %llu; subscribed again\n",
           grew, (unsigned long long)tstat(t, "protocol_errors"),
           (unsigned long long)tstat(t, "sub_reconnects"));
    fflush(stdout);
    tc_tier_close(t);
    return failed ? 1 : 0;
}

/* Runs fn in a child; reports an abort or a hang as a failure. */
static void in_child(const char *name, int (*fn)(const struct fault *, int), const struct fault *f,
                     int async)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(CASE_TIME_S);
        _exit(fn(f, async));
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
        printf("hostile: %-11s %-8s DIED of signal %d (%s)\n", name, async ? "async" : "blocking",
               WTERMSIG(status),
               WTERMSIG(status) == SIGALRM ? "hung: killed by its alarm"
                                           : strsignal(WTERMSIG(status)));
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s (%s): %s %d", name,
          async ? "async" : "blocking", WIFEXITED(status) ? "exit" : "signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

static int sub_case(const struct fault *f, int async)
{
    (void)f;
    (void)async;
    return child_subscriber();
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    signal(SIGPIPE, SIG_IGN); /* as the server does */
    if (tc_fake_redis_start(&fake) != 0) {
        CHECK(0, "cannot start the fake Redis");
        printf("redis_hostile: %d passed, %d failed\n", passed, failed);
        return 1;
    }
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        if (only != NULL && strcmp(only, faults[i].name) != 0) {
            continue;
        }
        in_child(faults[i].name, child_case, &faults[i], 1);
        in_child(faults[i].name, child_case, &faults[i], 0);
    }
    if (only == NULL || strcmp(only, "big_message") == 0) {
        in_child("big_message", sub_case, NULL, 1);
    }
    tc_fake_redis_stop(fake);
    printf("redis_hostile: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
