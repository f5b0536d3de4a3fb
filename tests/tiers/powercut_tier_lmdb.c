/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Power cuts under write load for tiers/tier_lmdb.c (issue 12, item 5),
 * emulated as the issue did: an ext4 image on a loop device; a child process
 * writes through the tier with 64 operations in flight on an event_base (as
 * a server worker does) and reports each acknowledged one over a pipe; it is
 * SIGKILLed at a random moment and the image file is copied at once, without
 * syncing. The copy holds what ext4 had sent to its disk, not what still sat
 * in its page cache: what a power cut leaves. The copy is mounted on another
 * loop device (ext4 replays its journal) and checked in a child, since a
 * damaged file may crash its reader.
 *
 * The writer sets and deletes keys out of NKEYS, each set with a value that
 * names the operation (its sequence number), so that the check can tell an
 * old value from the last one: a value that comes back from before the last
 * acknowledged write (or a deleted key that comes back) is a wrong answer
 * that no item check can catch, an old record being a valid record of its
 * key. Operations on one key are applied in the order they were issued (one
 * context, one FIFO writer). For every key, its floor is the last operation
 * on it acknowledged before the durable point; the key must then hold the
 * result of the floor or of a later operation issued on it (never an older
 * one, never a value nobody wrote), and be absent only if the floor or a
 * later operation deleted it (or it has no floor):
 *
 *   sync=always    the durable point is the cut: every acknowledged
 *                  operation is there;
 *   sync=periodic  the durable point is the snapshot the environment was
 *                  restored to (the pin time in the copy's tiercache-durable),
 *                  which must be no older than sync_interval_ms plus one
 *                  flush (FLUSH_SLACK_MS) before the cut; without such a
 *                  record (builds before it existed), sync_interval_ms
 *                  before the cut;
 *   both           the environment opens cleanly (on_corrupt=fail: no
 *                  damage found) and a walk of every database meets no error;
 *   sync=none      it opens without crashing and holds no value nobody
 *                  wrote; after the host crash it is moved aside (or its
 *                  file never reached the disk and it holds nothing).
 *
 * Meanwhile the test starts the writeback of random runs of the file's
 * dirty pages every few ms (see flusher()), as the kernel would on its own
 * given more time: after a crash the disk holds the pages the tier flushed
 * plus any others, in any order, and what must hold holds for all of them.
 *
 * A copy made on this host keeps this boot's id in tiercache-durable, so the
 * tier would take it for a crash of the process alone (whose page cache
 * survives) and restore nothing. After a real power cut the host boots
 * again with a new id; the test writes another id into the copy's record,
 * as a reboot would, before the check opens it.
 *
 * The writer uses the tier API directly rather than the server: the cut
 * then falls between the tier's acknowledgement and anything else, and the
 * test needs no port, no HTTP client and no server log to parse.
 *
 * Needs root and loop devices (mount -o loop, mkfs.ext4); without them it
 * says why and exits 77, which CTest reports as skipped. Everything runs in
 * a private mount namespace, so even a crash of this program leaves no
 * mount behind; each cut also unmounts on every path, and the loop devices
 * (set up with autoclear by mount) go with their mounts.
 *
 * A plain program (it forks, mounts and kills): prints
 * "powercut_tier_lmdb: N passed, M failed".
 */
#define _GNU_SOURCE /* unshare(CLONE_NEWNS), SEEK_DATA/SEEK_HOLE */
#include "tests/support/clock.h"
#include "tests/support/check.h"
#include "tiers/lmdb_durable.h"
#include "tiers/tier.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <lmdb.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SKIP        77
#define CUTS        5    /* per sync mode */
#define INTERVAL_MS 200u /* sync_interval_ms for periodic */
#define INFLIGHT    64
#define MAX_ACKS    (1u << 22)
#define IMAGE_SIZE  (256ull << 20)
#define TIER_PARAMS "map_size=192M&max_item=64K"
#define NKEYS       4096u /* keys the writer sets and deletes */
/* How much older than the cut (beyond the interval) the restored snapshot
 * may be: the flush that made it durable, on a loaded machine. */
#define FLUSH_SLACK_MS 1000u

static char work[256]; /* temp dir: template.img, img, copy.img, mnt, mnt2 */

static void in_work(char *p, size_t cap, const char *name)
{
    snprintf(p, cap, "%s/%s", work, name);
}

/* Runs argv (a program on PATH), its output into out; the exit status, or -1. */
static int run(char *const argv[], char *out, size_t cap)
{
    int fds[2];
    if (pipe(fds) != 0) {
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    char sink[256];
    while ((n = read(fds[0], len + 1 < cap ? out + len : sink,
                     len + 1 < cap ? cap - 1 - len : sizeof(sink))) > 0) {
        if (len + 1 < cap) {
            len += (size_t)n;
        }
    }
    out[cap > 0 ? len : 0] = '\0';
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int sh_mount(const char *img, const char *mnt, char *msg, size_t cap)
{
    char *argv[] = {"mount", "-t", "ext4", "-o", "loop", (char *)img, (char *)mnt, NULL};
    return run(argv, msg, cap);
}

/* Unmounts mnt if mounted; then detaches any loop device still on img. */
static void release(const char *mnt, const char *img)
{
    char msg[512];
    char *um[] = {"umount", (char *)mnt, NULL};
    run(um, msg, sizeof(msg)); /* fails harmlessly when not mounted */
    char *lj[] = {"losetup", "-j", (char *)img, NULL};
    if (run(lj, msg, sizeof(msg)) == 0) {
        char *line = msg;
        while (line != NULL && *line != '\0') {
            char *colon = strchr(line, ':');
            char *nl = strchr(line, '\n');
            if (colon != NULL && (nl == NULL || colon < nl)) {
                *colon = '\0';
                char dev[64] = "";
                strncat(dev, line, sizeof(dev) - 1);
                char *ld[] = {"losetup", "-d", dev, NULL};
                char m2[256];
                run(ld, m2, sizeof(m2));
            }
            line = nl != NULL ? nl + 1 : NULL;
        }
    }
}

/* Copies a sparse file: its data extents only, at once, without syncing. */
static int copy_sparse(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = in >= 0 && out >= 0 ? 0 : -1;
    static char buf[1 << 20];
    struct stat sb;
    if (rc == 0 && (fstat(in, &sb) != 0 || ftruncate(out, sb.st_size) != 0)) {
        rc = -1;
    }
    off_t pos = 0;
    while (rc == 0) {
        off_t d = lseek(in, pos, SEEK_DATA);
        if (d < 0) {
            break; /* ENXIO: no data after pos */
        }
        off_t h = lseek(in, d, SEEK_HOLE);
        if (h < 0) {
            rc = -1;
            break;
        }
        for (off_t o = d; o < h && rc == 0;) {
            size_t want = (size_t)(h - o) < sizeof(buf) ? (size_t)(h - o) : sizeof(buf);
            ssize_t n = pread(in, buf, want, o);
            if (n <= 0 || pwrite(out, buf, (size_t)n, o) != n) {
                rc = -1;
            }
            o += n > 0 ? n : 0;
        }
        pos = h;
    }
    if (in >= 0) {
        close(in);
    }
    if (out >= 0) {
        close(out);
    }
    return rc;
}

/* ---- the operations ----------------------------------------------------------- */

/* Operation seq: which key, set or delete. A fixed function of seq, so that
 * the parent and the verifier know every operation from its number. */
static uint32_t mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

static uint32_t key_of(uint32_t seq)
{
    return mix(seq) % NKEYS;
}

static int is_del(uint32_t seq)
{
    return mix(seq ^ 0x5bd1e995u) % 8 == 0;
}

static size_t make_value(uint32_t seq, char *v, size_t cap)
{
    size_t len = 40 + (seq * 2654435761u >> 7) % 600;
    int h = snprintf(v, cap, "v-pc:%u|", seq);
    for (size_t j = (size_t)h; j < len && j < cap; j++) {
        v[j] = (char)('a' + (seq + j) % 26);
    }
    return len < cap ? len : cap;
}

/* ---- the writer (child) ------------------------------------------------------ */

struct wslot {
    struct tc_tier_req req;
    uint32_t seq;
    char key[32];
    char val[1024];
};

struct writer {
    struct tc_tier_ctx *ctx;
    int ack_fd;
    uint32_t next;
};

static void w_issue(struct writer *w, struct wslot *s);

static struct writer the_writer; /* the child's only writer */

static void w_ack(struct wslot *s, enum tc_status st)
{
    if (st != TC_OK && !(st == TC_ENOTFOUND && is_del(s->seq))) {
        _exit(6);
    }
    /* Acknowledged: report it. 4 bytes < PIPE_BUF, never torn. */
    if (write(the_writer.ack_fd, &s->seq, sizeof(s->seq)) != (ssize_t)sizeof(s->seq)) {
        _exit(7);
    }
    w_issue(&the_writer, s);
}

static void w_complete(struct tc_tier_req *req)
{
    w_ack(req->arg, req->status);
}

static void w_issue(struct writer *w, struct wslot *s)
{
    s->seq = w->next++;
    snprintf(s->key, sizeof(s->key), "pc:%u", key_of(s->seq));
    memset(&s->req, 0, sizeof(s->req));
    s->req.key = s->key;
    s->req.key_len = strlen(s->key);
    s->req.now_ms = tc_test_wall_ms();
    s->req.done = w_complete;
    s->req.arg = s;
    enum tc_status st;
    if (is_del(s->seq)) {
        st = tc_tier_del(w->ctx, &s->req);
    } else {
        s->req.value = s->val;
        s->req.value_len = make_value(s->seq, s->val, sizeof(s->val));
        s->req.hdr.encoding = TC_ENC_BINARY;
        s->req.hdr.created_ms = s->req.now_ms;
        st = tc_tier_set(w->ctx, &s->req);
    }
    if (st != TC_EINPROGRESS) {
        w_ack(s, st);
    }
}

static void writer_child(const char *uri, int fd)
{
    char err[512];
    struct tc_tier *t;
    if (tc_tier_open(NULL, uri, &t, err, sizeof(err)) != TC_OK) {
        fprintf(stderr, "writer: %s\n", err);
        _exit(2);
    }
    struct event_base *base = event_base_new();
    if (base == NULL || tc_tier_ctx_init(t, base, &the_writer.ctx) != TC_OK) {
        _exit(3);
    }
    the_writer.ack_fd = fd;
    static struct wslot slots[INFLIGHT];
    for (int i = 0; i < INFLIGHT; i++) {
        w_issue(&the_writer, &slots[i]);
    }
    event_base_dispatch(base); /* until SIGKILL */
    _exit(4);
}

/* ---- the verifier (child) ---------------------------------------------------- */

/* What each key may hold, computed by the parent before it forks the
 * verifier (which inherits it). */
static int64_t floor_of[NKEYS]; /* last op acknowledged before the durable point; -1 none */
static uint8_t absent_ok[NKEYS];
static uint32_t max_seq; /* the highest operation the writer can have issued */

struct verdict {
    int opened;       /* tc_tier_open succeeded */
    int moved;        /* ... after moving the environment aside */
    int restored;     /* ... after restoring the durable snapshot */
    int walk_rc;      /* first LMDB error walking every database, 0 if none */
    uint32_t lost;    /* keys absent that must hold a value */
    uint32_t old;     /* keys holding a value older than their floor */
    uint32_t foreign; /* keys holding a value nobody wrote for them */
    uint32_t errors;  /* gets that failed otherwise */
    uint32_t present;
    char example[160]; /* the first bad key */
    char msg[400];
};

static int walk_db(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) {
        return rc;
    }
    MDB_val k, v;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Every page of every database, read through LMDB: a torn tree shows. */
static int walk_all(const char *path)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi main_dbi, d;
    int rc = mdb_env_create(&env);
    if (rc != 0) {
        return rc;
    }
    mdb_env_set_maxdbs(env, 4);
    rc = mdb_env_open(env, path, MDB_RDONLY, 0640);
    if (rc == 0 && (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) == 0) {
        rc = walk_db(txn, 0); /* the free list */
        if (rc == 0) {
            rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
        }
        if (rc == 0) {
            rc = walk_db(txn, main_dbi);
        }
        const char *names[] = {"tc_data", "tc_exp"};
        for (int i = 0; i < 2 && rc == 0; i++) {
            rc = mdb_dbi_open(txn, names[i], 0, &d);
            if (rc == 0) {
                rc = walk_db(txn, d);
            }
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

/* Judges what key k holds: b->data (b->len bytes), or nothing. */
static void judge(struct verdict *v, uint32_t k, const struct tc_buf *b, int found, int none)
{
    const char *bad = NULL;
    unsigned seq = 0;
    if (!found) {
        if (!absent_ok[k] && !none) {
            v->lost++;
            bad = "absent";
        }
    } else {
        v->present++;
        char val[1024], head[32];
        size_t hl = b->len < sizeof(head) - 1 ? b->len : sizeof(head) - 1;
        memcpy(head, b->data, hl);
        head[hl] = '\0';
        if (sscanf(head, "v-pc:%u|", &seq) != 1 || seq > max_seq || key_of(seq) != k ||
            is_del(seq) || b->len != make_value(seq, val, sizeof(val)) ||
            memcmp(b->data, val, b->len) != 0) {
            v->foreign++;
            bad = "a value nobody wrote for it";
        } else if (!none && (int64_t)seq < floor_of[k]) {
            v->old++;
            bad = "an old value";
        }
    }
    if (bad != NULL && v->example[0] == '\0') {
        snprintf(v->example, sizeof(v->example), "pc:%u holds %s (op %u; floor %lld)", k, bad,
                 found ? seq : 0u, (long long)floor_of[k]);
    }
}

static void verify_child(const char *path, const char *mode, int fd)
{
    struct verdict v;
    memset(&v, 0, sizeof(v));
    int none = strcmp(mode, "none") == 0;
    char uri[512];
    /* Damage fails the check, except with sync=none, where moving the
     * environment aside is the tier's answer to a host crash. */
    snprintf(uri, sizeof(uri), "lmdb://%s?" TIER_PARAMS "&sync=%s&on_corrupt=%s", path, mode,
             none ? "recreate" : "fail");
    struct tc_tier *t;
    char news[400] = "";
    if (tc_tier_open(NULL, uri, &t, news, sizeof(news)) == TC_OK) {
        v.opened = 1;
        v.moved = strstr(news, "moved") != NULL;
        v.restored = strstr(news, "restored") != NULL;
        snprintf(v.msg, sizeof(v.msg), "%s", news);
        struct tc_tier_ctx *c;
        struct tc_buf b = TC_BUF_INIT;
        char key[32];
        if (tc_tier_ctx_init(t, NULL, &c) != TC_OK) {
            _exit(3);
        }
        for (uint32_t k = 0; k < NKEYS; k++) {
            snprintf(key, sizeof(key), "pc:%u", k);
            struct tc_tier_req r = {
                .key = key, .key_len = strlen(key), .out = &b, .now_ms = tc_test_wall_ms()};
            enum tc_status st = tc_tier_get(c, &r);
            if (st == TC_OK || st == TC_ENOTFOUND) {
                judge(&v, k, &b, st == TC_OK, none);
            } else {
                v.errors++;
            }
        }
        char detail[256];
        if (tc_tier_health(t, detail, sizeof(detail)) != TC_HEALTH_OK) {
            snprintf(v.msg, sizeof(v.msg), "health: %s", detail);
        }
        tc_buf_deinit(&b);
        tc_tier_ctx_dispose(c);
        tc_tier_close(t);
        v.walk_rc = walk_all(path);
    } else {
        snprintf(v.msg, sizeof(v.msg), "%s", news);
    }
    if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
        _exit(5);
    }
    _exit(0);
}

/* ---- one cut -------------------------------------------------------------------- */

struct ack {
    uint32_t seq;
    uint64_t at; /* wall ms when the parent read it: no earlier than the ack */
};

static struct ack *acks;

/*
 * The kernel's flusher, sped up: starts the writeback of a random run of
 * data.mdb's dirty pages (a third of the time the meta pages), as the
 * kernel does on its own, in no particular order, after dirty_expire or
 * under memory pressure. In a few seconds it would write back nothing, and
 * the cut would find only what the tier flushed itself; what must hold
 * holds whatever the kernel writes back when.
 */
static void flusher(const char *db, int *fd)
{
    if (*fd < 0) {
        char p[400];
        snprintf(p, sizeof(p), "%s/data.mdb", db);
        if ((*fd = open(p, O_RDONLY | O_CLOEXEC)) < 0) {
            return; /* not created yet */
        }
    }
    struct stat sb;
    if (fstat(*fd, &sb) != 0 || sb.st_size < 8192) {
        return;
    }
    off_t off = 0, len = 8192;
    if (rand() % 3 != 0) {
        off = (off_t)((uint64_t)rand() * 4096u % (uint64_t)sb.st_size);
        len = (off_t)(4096u + (uint64_t)rand() * 4096u % ((uint64_t)sb.st_size / 4 + 1));
    }
    sync_file_range(*fd, off, len, SYNC_FILE_RANGE_WRITE);
}

/* Another boot's id in the copy's record (see the top); 0 when there is
 * none. Fills *pinned_ms with the record's durable point when it names
 * one. */
static int reboot_record(const char *db, uint64_t *pinned_ms, char *msg, size_t cap)
{
    struct tc_lmdb_durable d;
    char why[200];
    enum tc_status st = tc_lmdb_durable_load(db, &d, why, sizeof(why));
    if (st == TC_ENOTFOUND) {
        return 0;
    }
    if (st != TC_OK) {
        snprintf(msg, cap, "the copy's record: %s", why);
        return -1;
    }
    if ((d.flags & TC_LMDB_DURABLE_SNAPSHOT) && d.mode == 1 /* periodic */) {
        *pinned_ms = d.pinned_ms;
    }
    snprintf(d.boot_id, sizeof(d.boot_id), "00000000-0000-4000-8000-%012x", (unsigned)rand());
    if (tc_lmdb_durable_store(db, &d, why, sizeof(why)) != TC_OK) {
        snprintf(msg, cap, "rewriting the copy's record: %s", why);
        return -1;
    }
    return 1;
}

static void one_cut(const char *mode, int n)
{
    char tmpl[300], img[300], copy[300], mnt[300], mnt2[300], db[320], msg[1024];
    in_work(tmpl, sizeof(tmpl), "template.img");
    in_work(img, sizeof(img), "img");
    in_work(copy, sizeof(copy), "copy.img");
    in_work(mnt, sizeof(mnt), "mnt");
    in_work(mnt2, sizeof(mnt2), "mnt2");
    snprintf(db, sizeof(db), "%s/db", mnt);
    int always = strcmp(mode, "always") == 0, none = strcmp(mode, "none") == 0;
    size_t nacks = 0;
    pid_t wpid = -1;
    int fds[2] = {-1, -1};

    if (copy_sparse(tmpl, img) != 0 || sh_mount(img, mnt, msg, sizeof(msg)) != 0) {
        CHECK(0, "%s cut %d: mounting a fresh image failed: %s", mode, n, msg);
        goto out;
    }
    char uri[512];
    snprintf(uri, sizeof(uri), "lmdb://%s?" TIER_PARAMS "&sync=%s&sync_interval_ms=%u", db, mode,
             INTERVAL_MS);
    if (pipe(fds) != 0) {
        CHECK(0, "pipe: %s", strerror(errno));
        goto out;
    }
    fflush(NULL);
    wpid = fork();
    if (wpid == 0) {
        close(fds[0]);
        writer_child(uri, fds[1]);
    }
    close(fds[1]);
    fds[1] = -1;
    /* Run 3 to 7 intervals after the first acknowledgement, then cut. */
    uint64_t cut_at = 0, killed_wall = 0, flush_at = 0, commit_at = 0;
    int dfd = -1;
    for (;;) {
        uint64_t now = tc_test_mono_ms();
        if (cut_at != 0 && now >= flush_at) {
            flusher(db, &dfd);
            flush_at = now + 5 + (uint64_t)(rand() % 20);
        }
        if (commit_at != 0 && now >= commit_at) {
            /* sync=none never flushes, so ext4 would not commit data.mdb's
             * size before its next journal commit (every 5 s): without this
             * the file would never reach the disk. */
            int mfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            CHECK(mfd >= 0 && syncfs(mfd) == 0, "%s cut %d: syncfs: %s", mode, n, strerror(errno));
            if (mfd >= 0) {
                close(mfd);
            }
            commit_at = 0;
        }
        if (cut_at != 0 && now >= cut_at) {
            killed_wall = tc_test_wall_ms();
            kill(wpid, SIGKILL);
            /* The power cut: the disk as ext4 left it, right now. */
            if (copy_sparse(img, copy) != 0) {
                CHECK(0, "%s cut %d: copying the image failed", mode, n);
                goto out;
            }
            break;
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        if (poll(&pfd, 1, 5) <= 0) {
            if (cut_at == 0 && waitpid(wpid, NULL, WNOHANG) == wpid) {
                wpid = -1;
                CHECK(0, "%s cut %d: the writer died before writing", mode, n);
                goto out;
            }
            continue;
        }
        uint32_t rec[1024];
        ssize_t r = read(fds[0], rec, sizeof(rec));
        if (r <= 0) {
            CHECK(0, "%s cut %d: the writer stopped early", mode, n);
            goto out;
        }
        uint64_t at = tc_test_wall_ms();
        for (ssize_t i = 0; i < r / 4 && nacks < MAX_ACKS; i++) {
            acks[nacks++] = (struct ack){rec[i], at};
        }
        if (cut_at == 0) {
            cut_at = tc_test_mono_ms() + 3 * INTERVAL_MS + (uint64_t)(rand() % (4 * INTERVAL_MS));
            commit_at = none ? tc_test_mono_ms() + 2 * INTERVAL_MS : 0;
        }
    }
    /* Acknowledgements still in the pipe were given before the cut. */
    for (;;) {
        uint32_t rec[1024];
        ssize_t r = read(fds[0], rec, sizeof(rec));
        if (r <= 0) {
            break;
        }
        for (ssize_t i = 0; i < r / 4 && nacks < MAX_ACKS; i++) {
            acks[nacks++] = (struct ack){rec[i], killed_wall};
        }
    }
    int status;
    waitpid(wpid, &status, 0);
    wpid = -1;
    if (dfd >= 0) {
        close(dfd);
    }
    release(mnt, img);

    if (sh_mount(copy, mnt2, msg, sizeof(msg)) != 0) {
        CHECK(0, "%s cut %d: the copy does not mount: %s", mode, n, msg);
        goto out;
    }
    char dbc[320];
    snprintf(dbc, sizeof(dbc), "%s/db", mnt2);
    uint64_t pinned = 0;
    int rb = reboot_record(dbc, &pinned, msg, sizeof(msg));
    CHECK(rb >= 0, "%s cut %d: %s", mode, n, msg);
    /* The durable point (see the top). */
    uint64_t point = always ? killed_wall + 1 : killed_wall - INTERVAL_MS;
    if (!always && !none && pinned != 0) {
        point = pinned;
        CHECK(killed_wall - pinned <= INTERVAL_MS + FLUSH_SLACK_MS,
              "%s cut %d: the durable snapshot is %llu ms older than the cut", mode, n,
              (unsigned long long)(killed_wall - pinned));
    }
    /* Each key's floor and whether it may be absent; the writer issued at
     * most INFLIGHT operations beyond those it acknowledged. */
    max_seq = (uint32_t)(nacks + INFLIGHT - 1);
    size_t nreq = 0;
    for (uint32_t k = 0; k < NKEYS; k++) {
        floor_of[k] = -1;
    }
    for (size_t i = 0; i < nacks; i++) {
        uint32_t k = key_of(acks[i].seq);
        if (acks[i].at < point && (int64_t)acks[i].seq > floor_of[k]) {
            floor_of[k] = acks[i].seq;
        }
    }
    for (uint32_t k = 0; k < NKEYS; k++) {
        absent_ok[k] = floor_of[k] < 0 || is_del((uint32_t)floor_of[k]);
        nreq += floor_of[k] >= 0;
    }
    for (uint32_t s = 0; s <= max_seq; s++) {
        uint32_t k = key_of(s);
        if (is_del(s) && (int64_t)s > floor_of[k]) {
            absent_ok[k] = 1; /* a later delete may have been applied */
        }
    }
    int vfd[2];
    if (pipe(vfd) != 0) {
        goto out;
    }
    fflush(NULL);
    pid_t vpid = fork();
    if (vpid == 0) {
        close(vfd[0]);
        verify_child(dbc, mode, vfd[1]);
    }
    close(vfd[1]);
    struct verdict v;
    ssize_t got = read(vfd[0], &v, sizeof(v));
    close(vfd[0]);
    waitpid(vpid, &status, 0);
    if (got != (ssize_t)sizeof(v)) {
        CHECK(0, "%s cut %d: reading the cut environment crashed (%s)", mode, n,
              WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "exit");
        goto out;
    }
    v.msg[sizeof(v.msg) - 1] = '\0';
    v.example[sizeof(v.example) - 1] = '\0';
    CHECK(v.opened, "%s cut %d: does not open cleanly: %s", mode, n, v.msg);
    if (v.opened) {
        CHECK(v.lost == 0 && v.old == 0 && v.foreign == 0 && v.errors == 0,
              "%s cut %d: of %zu keys with an operation to keep, %u lost, %u old, %u never "
              "written, %u errors (%zu operations acknowledged); first: %s",
              mode, n, nreq, v.lost, v.old, v.foreign, v.errors, nacks, v.example);
        CHECK(v.walk_rc == 0, "%s cut %d: walking the databases: %s", mode, n,
              mdb_strerror(v.walk_rc));
        /* An environment whose file never reached the disk holds nothing
         * to bring back; one that did must not be served from. */
        CHECK(!none || v.moved || rb <= 0 || v.present == 0,
              "%s cut %d: %u values served after a host crash with sync=none", mode, n, v.present);
        CHECK(none || !v.moved, "%s cut %d: moved aside: %s", mode, n, v.msg);
    }
    printf("%s cut %d: %zu acknowledged, %zu keys to keep, %u present, durable point %lld ms "
           "before the cut%s: %s\n",
           mode, n, nacks, nreq, v.present, (long long)(killed_wall - point),
           v.restored ? ", restored" : (v.moved ? ", moved aside" : ""),
           !v.opened                                               ? "does not open"
           : v.lost || v.old || v.foreign || v.errors || v.walk_rc ? "LOST, OLD OR DAMAGED"
                                                                   : "as required");
out:
    if (wpid > 0) {
        kill(wpid, SIGKILL);
        waitpid(wpid, NULL, 0);
    }
    if (fds[0] >= 0) {
        close(fds[0]);
    }
    if (fds[1] >= 0) {
        close(fds[1]);
    }
    release(mnt2, copy);
    release(mnt, img);
    unlink(img);
    unlink(copy);
}

/* ---- setup -------------------------------------------------------------------- */

/* NULL when loop mounts can work here, else why not. */
static const char *cannot(char *why, size_t cap)
{
    if (geteuid() != 0) {
        return "needs root (mount -o loop)";
    }
    if (access("/dev/loop-control", F_OK) != 0) {
        return "no loop devices (/dev/loop-control is missing)";
    }
    char out[512];
    char *mk[] = {"mkfs.ext4", "-V", NULL};
    if (run(mk, out, sizeof(out)) != 0) {
        return "mkfs.ext4 is not installed (e2fsprogs)";
    }
    /* A private mount namespace: whatever happens, no mount outlives us. */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(why, cap, "cannot make a private mount namespace: %s", strerror(errno));
        return why;
    }
    return NULL;
}

static void rm_work(void)
{
    char p[300];
    const char *files[] = {"template.img", "img", "copy.img"};
    for (int i = 0; i < 3; i++) {
        in_work(p, sizeof(p), files[i]);
        unlink(p);
    }
    in_work(p, sizeof(p), "mnt");
    rmdir(p);
    in_work(p, sizeof(p), "mnt2");
    rmdir(p);
    rmdir(work);
}

int main(void)
{
    char why[256];
    const char *no = cannot(why, sizeof(why));
    if (no != NULL) {
        printf("powercut_tier_lmdb: SKIPPED: %s\n", no);
        return SKIP;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    snprintf(work, sizeof(work), "/tmp/tc-powercut-XXXXXX");
    if (mkdtemp(work) == NULL) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 2;
    }
    char p[300], out[2048];
    in_work(p, sizeof(p), "mnt");
    mkdir(p, 0700);
    in_work(p, sizeof(p), "mnt2");
    mkdir(p, 0700);
    in_work(p, sizeof(p), "template.img");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)IMAGE_SIZE) != 0) {
        fprintf(stderr, "%s: %s\n", p, strerror(errno));
        rm_work();
        return 2;
    }
    close(fd);
    char *mk[] = {"mkfs.ext4", "-q", "-F", "-E", "nodiscard", p, NULL};
    if (run(mk, out, sizeof(out)) != 0) {
        fprintf(stderr, "mkfs.ext4 %s: %s\n", p, out);
        rm_work();
        return 2;
    }
    /* One trial mount: a kernel without loop or ext4 support is a skip. */
    char img[300], mnt[300];
    in_work(img, sizeof(img), "img");
    in_work(mnt, sizeof(mnt), "mnt");
    if (copy_sparse(p, img) != 0 || sh_mount(img, mnt, out, sizeof(out)) != 0) {
        printf("powercut_tier_lmdb: SKIPPED: mount -o loop does not work here: %s\n", out);
        release(mnt, img);
        rm_work();
        return SKIP;
    }
    release(mnt, img);
    acks = malloc(sizeof(*acks) * MAX_ACKS);
    if (acks == NULL) {
        rm_work();
        return 2;
    }
    uint64_t t0 = tc_test_mono_ms();
    static const char *const modes[] = {"periodic", "always", "none"};
    for (int m = 0; m < 3; m++) {
        for (int n = 0; n < CUTS; n++) {
            one_cut(modes[m], n);
        }
    }
    free(acks);
    rm_work();
    printf("powercut_tier_lmdb: %d cuts in %llu ms\n", 3 * CUTS,
           (unsigned long long)(tc_test_mono_ms() - t0));
    printf("powercut_tier_lmdb: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
