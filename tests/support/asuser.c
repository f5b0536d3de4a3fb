/* SPDX-License-Identifier: BSD-2-Clause */
#define _GNU_SOURCE /* setgroups, setresuid, setresgid */
#include "tests/support/asuser.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The child's exit status for "could not change uid". */
#define NO_SWITCH 126

int tc_test_as_user(const char *user, int (*fn)(void *arg), void *arg, uint32_t *uid, uint32_t *gid,
                    char *why, size_t len)
{
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        snprintf(why, len, "no user '%s' on this machine", user);
        return TC_TEST_ASUSER_SKIP;
    }
    if (uid != NULL) {
        *uid = (uint32_t)pw->pw_uid;
    }
    if (gid != NULL) {
        *gid = (uint32_t)pw->pw_gid;
    }
    if (geteuid() != 0) {
        snprintf(why, len, "changing to user '%s' needs root (running as uid %u)", user,
                 (unsigned)geteuid());
        return TC_TEST_ASUSER_SKIP;
    }
    uid_t u = pw->pw_uid;
    gid_t g = pw->pw_gid;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, len, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (setgroups(0, NULL) != 0 || setresgid(g, g, g) != 0 || setresuid(u, u, u) != 0 ||
            geteuid() != u) {
            _exit(NO_SWITCH);
        }
        _exit(fn(arg) & 0x7f);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status)) {
        snprintf(why, len, "the child running as '%s' died (status %d)", user, status);
        return -1;
    }
    if (WEXITSTATUS(status) == NO_SWITCH) {
        snprintf(why, len, "could not change to user '%s' (setresuid/setresgid refused)", user);
        return TC_TEST_ASUSER_SKIP;
    }
    return WEXITSTATUS(status);
}
