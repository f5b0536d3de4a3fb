/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * `tiercache shm ...`: inspect or remove an L1 segment from outside any
 * server, through the ring library alone (shm/ring.h).
 */
#ifndef TC_SRC_SHM_ADMIN_H
#define TC_SRC_SHM_ADMIN_H

/**
 * Runs `tiercache shm stats NAME` (the segment's state as JSON on stdout,
 * whoever owns it: it only reads) or `tiercache shm unlink NAME`.
 * @p argv[1] is "shm". Returns the process exit code: 0, 1 (failed), 2 (usage).
 */
int tc_shm_admin_main(int argc, char **argv);

#endif
