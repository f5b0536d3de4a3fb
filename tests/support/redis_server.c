/* SPDX-License-Identifier: BSD-2-Clause */
/* prctl(PR_SET_PDEATHSIG) is Linux-only; it makes a crashed or timed-out test
 * take its redis-server down with it instead of leaking it. */
#define _GNU_SOURCE
#include "tests/support/redis_server.h"
#include "tests/support/clock.h"

#include <dirent.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct tc_redis_server {
    pid_t pid; /* 0 when not running */
    unsigned port;
    char dir[64];
    char sock[128];
    char *requirepass, *acl_user, *acl_password;
};

/* A port the kernel just handed out; the tiny race with other programs is
 * covered by retrying start with a new port. */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return 0;
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    unsigned port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    close(fd);
    return port;
}

static int answers_ping(const struct tc_redis_server *s)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", (int)s->port, tv);
    int ok = 0;
    if (c != NULL && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        /* NOAUTH is an answer too: the server is up, it just wants AUTH. */
        ok = r != NULL && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
    if (c != NULL) {
        redisFree(c);
    }
    return ok;
}

static int spawn(struct tc_redis_server *s)
{
    char port[16], logfile[128], user[512];
    snprintf(port, sizeof(port), "%u", s->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", s->dir);
    const char *argv[40];
    int n = 0;
    const char *bin = getenv("TC_REDIS_SERVER");
    argv[n++] = bin != NULL && bin[0] ? bin : "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--unixsocket";
    argv[n++] = s->sock;
    argv[n++] = "--unixsocketperm";
    argv[n++] = "700";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = s->dir;
    argv[n++] = "--logfile";
    argv[n++] = logfile;
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    if (s->requirepass != NULL) {
        argv[n++] = "--requirepass";
        argv[n++] = s->requirepass;
    }
    if (s->acl_user != NULL) {
        /* One word per argument: redis-server joins them into one config
         * line, and a single quoted argument would be read as the name. */
        snprintf(user, sizeof(user), ">%s", s->acl_password ? s->acl_password : "");
        argv[n++] = "--user";
        argv[n++] = s->acl_user;
        argv[n++] = "on";
        argv[n++] = user;
        argv[n++] = "~*";
        argv[n++] = "&*";
        argv[n++] = "+@all";
    }
    argv[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("redis_server: fork");
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127); /* the parent died before prctl took effect */
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 500; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            return -1; /* exited: port taken, bad option, no binary */
        }
        if (answers_ping(s)) {
            return 0;
        }
        tc_test_sleep_ms(20);
    }
    fprintf(stderr, "redis_server: no PING answer on port %u (log: %s)\n", s->port, logfile);
    tc_redis_server_kill(s);
    return -1;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

int tc_redis_server_start(const struct tc_redis_server_opts *opts, struct tc_redis_server **out)
{
    struct tc_redis_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    snprintf(s->dir, sizeof(s->dir), "/tmp/tc-redis-XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        perror("redis_server: mkdtemp");
        free(s);
        return -1;
    }
    snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
    if (opts != NULL) {
        s->requirepass = dup_or_null(opts->requirepass);
        s->acl_user = dup_or_null(opts->acl_user);
        s->acl_password = dup_or_null(opts->acl_password);
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        s->port = free_port();
        if (s->port != 0 && spawn(s) == 0) {
            *out = s;
            return 0;
        }
    }
    fprintf(stderr, "redis_server: could not start %s (is redis-server installed?)\n",
            getenv("TC_REDIS_SERVER") ? getenv("TC_REDIS_SERVER") : "redis-server");
    tc_redis_server_destroy(s);
    return -1;
}

unsigned tc_redis_server_port(const struct tc_redis_server *s)
{
    return s->port;
}

const char *tc_redis_server_socket(const struct tc_redis_server *s)
{
    return s->sock;
}

int tc_redis_server_running(const struct tc_redis_server *s)
{
    return s->pid > 0;
}

static void reap(struct tc_redis_server *s, int sig, int wait_ms)
{
    if (s->pid <= 0) {
        return;
    }
    kill(s->pid, sig);
    kill(s->pid, SIGCONT); /* a paused server acts on SIGTERM only once thawed */
    for (int waited = 0;; waited += 10) {
        int status;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid || (r < 0 && errno == ECHILD)) {
            break;
        }
        if (waited >= wait_ms) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            break;
        }
        tc_test_sleep_ms(10);
    }
    s->pid = 0;
}

void tc_redis_server_kill(struct tc_redis_server *s)
{
    reap(s, SIGKILL, 2000);
}

void tc_redis_server_pause(struct tc_redis_server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGSTOP);
    }
}

void tc_redis_server_resume(struct tc_redis_server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGCONT);
    }
}

void tc_redis_server_stop(struct tc_redis_server *s)
{
    reap(s, SIGTERM, 2000);
}

int tc_redis_server_restart(struct tc_redis_server *s)
{
    if (s->pid > 0) {
        tc_redis_server_stop(s);
    }
    unlink(s->sock);
    /* The port was ours a moment ago; retry briefly in case the kernel has
     * not let go of it yet. */
    for (int attempt = 0; attempt < 20; attempt++) {
        if (spawn(s) == 0) {
            return 0;
        }
        tc_test_sleep_ms(50);
    }
    return -1;
}

void tc_redis_server_destroy(struct tc_redis_server *s)
{
    if (s == NULL) {
        return;
    }
    tc_redis_server_stop(s);
    DIR *d = opendir(s->dir);
    if (d != NULL) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                snprintf(path, sizeof(path), "%s/%s", s->dir, e->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(s->dir);
    free(s->requirepass);
    free(s->acl_user);
    free(s->acl_password);
    free(s);
}
