/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: a private redis-server for one test program. It listens on a
 * free 127.0.0.1 port and on a unix socket inside its own temp dir, keeps no
 * data on disk (--save '' --appendonly no), and dies with the process that
 * started it. Tests use it to kill Redis under load, restart it on the same
 * port, and check AUTH with requirepass or an ACL user. Loopback only.
 *
 * Not thread-safe: drive one server from one thread. The binary is
 * $TC_REDIS_SERVER, or "redis-server" from PATH.
 */
#ifndef TC_TESTS_SUPPORT_REDIS_SERVER_H
#define TC_TESTS_SUPPORT_REDIS_SERVER_H

struct tc_redis_server;

struct tc_redis_server_opts {
    const char *requirepass;  /* password of the default user, or NULL */
    const char *acl_user;     /* an extra ACL user with every permission, or NULL */
    const char *acl_password; /* that user's password */
};

/**
 * Starts a server and waits (up to 10 s) until it answers PING.
 * @p opts may be NULL. Returns 0 and sets *out, or -1 (message on stderr).
 * Stop it with tc_redis_server_destroy().
 */
int tc_redis_server_start(const struct tc_redis_server_opts *opts, struct tc_redis_server **out);

/** The TCP port (on 127.0.0.1). */
unsigned tc_redis_server_port(const struct tc_redis_server *s);

/** The unix socket path. */
const char *tc_redis_server_socket(const struct tc_redis_server *s);

/** Kills the server with SIGKILL (a crash) and reaps it; the port stays reserved by nobody. */
void tc_redis_server_kill(struct tc_redis_server *s);

/** Freezes the server (SIGSTOP): connections stay open, nothing answers. */
void tc_redis_server_pause(struct tc_redis_server *s);

/** Thaws a paused server (SIGCONT). */
void tc_redis_server_resume(struct tc_redis_server *s);

/** Stops the server with SIGTERM (SIGKILL after 2 s) and reaps it. */
void tc_redis_server_stop(struct tc_redis_server *s);

/** Starts a stopped or killed server again, same port, socket and options. 0 or -1. */
int tc_redis_server_restart(struct tc_redis_server *s);

/** 1 if the server process is running. */
int tc_redis_server_running(const struct tc_redis_server *s);

/** Stops the server if running and removes its temp dir. NULL is a no-op. */
void tc_redis_server_destroy(struct tc_redis_server *s);

#endif
