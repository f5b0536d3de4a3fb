/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * XXH3 for the checksums over values (the ring's record check, the item
 * check, the ETag): where CMake found libxxhash's own run-time CPU dispatch
 * (TC_HAVE_XXH_DISPATCH: Debian's shared libxxhash exports it on x86-64),
 * the XXH3 calls below this header go through it and run on AVX2 or AVX-512
 * when the CPU has them, else the library's portable build (SSE2 on
 * x86-64). The hash values are the same either way; over a 64 KiB value it
 * is 0.94 µs against 3.9 µs on the AVX-512 machine of docs/benchmarks.md.
 * libtiercache is built without it: the static libxxhash.a has no dispatch.
 */
#ifndef TC_SHM_XXH_H
#define TC_SHM_XXH_H

#include <xxhash.h>
#ifdef TC_HAVE_XXH_DISPATCH
#include <xxh_x86dispatch.h>
#endif

#endif
