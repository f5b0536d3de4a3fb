/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test support: the certificates of tests/support/tls_certs.sh, made once
 * per test run. A Criterion binary calls tc_test_tls_certs_make() from its
 * ReportHook(PRE_ALL) (the runner, before any test process starts: they
 * find the directory through TC_TLS_DIR in their environment) and
 * tc_test_tls_certs_remove() from ReportHook(POST_ALL).
 */
#ifndef TC_TESTS_SUPPORT_TLS_CERTS_H
#define TC_TESTS_SUPPORT_TLS_CERTS_H

/** Makes the certificates in a new temp dir and sets TC_TLS_DIR to it. */
void tc_test_tls_certs_make(void);

/** Removes the directory tc_test_tls_certs_make() made. */
void tc_test_tls_certs_remove(void);

/** The directory, or NULL if making the certificates failed. */
const char *tc_test_tls_dir(void);

/** DIR/@p file, in one of 8 rotating static buffers. */
const char *tc_test_tls_path(const char *file);

#endif
