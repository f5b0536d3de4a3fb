/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: scribble on a shm segment as another process with write
 * access would, while processes have it attached.
 */
#ifndef TC_TESTS_SUPPORT_SHM_DAMAGE_H
#define TC_TESTS_SUPPORT_SHM_DAMAGE_H

/**
 * Flips a bit (0x20) of the first byte of every copy of @p mark in the
 * segment /@p name (a hit may have promoted a record, leaving an older
 * copy behind). @return how many copies, or -1 if the segment cannot be
 * mapped.
 */
int tc_test_shm_flip_all(const char *name, const char *mark);

#endif
