/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * `tiercache top [URL]`: a live view of a running server, read from its
 * GET /stats once a second, like varnishstat or redis-cli --stat. `-1`
 * prints one text snapshot for scripts instead of the full-screen view.
 */
#ifndef TC_SRC_TOP_H
#define TC_SRC_TOP_H

/**
 * The subcommand's main: @p argv[0] is "top". Returns the exit status:
 * 0, 1 (the server could not be read), 2 (usage).
 */
int tc_top_main(int argc, char **argv);

#endif
