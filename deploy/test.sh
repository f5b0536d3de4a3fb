#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# README command 2: install what is missing, build under AddressSanitizer +
# UndefinedBehaviorSanitizer, run every test, run each libFuzzer target for a
# short bounded time, then rebuild under ThreadSanitizer and run the
# concurrency tests again. Exits non-zero on any failure. Set TC_SKIP_TSAN=1
# to skip the TSan pass while iterating, TC_FUZZ_SECONDS=N to fuzz each
# target N s (default 20; 0 skips fuzzing), TC_SKIP_PACKAGE=1 to skip the
# Debian package build + install test (it runs by default; it needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/deps.sh

jobs=$(nproc)

echo "== check: clang-format and the shm/ include rule"
# Formatting drift fails the run (STYLE R23), and shm/ may include only its
# own headers, libc/POSIX/Linux headers and xxhash (STYLE R1): it is the
# library other processes link without the rest of tiercache.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t srcs < <(git ls-files '*.c' '*.h')
else
    mapfile -t srcs < <(find shm tiers src bench tests -name '*.[ch]')
fi
clang-format --dry-run --Werror "${srcs[@]}"
bad_includes=$(grep -Hn '^[[:space:]]*#[[:space:]]*include' shm/*.c shm/*.h |
    grep -v -E '#[[:space:]]*include[[:space:]]+("shm/[a-z_]+\.h"|<(xxhash|[a-z0-9_]+|sys/[a-z0-9_]+|linux/[a-z0-9_]+)\.h>)' ||
    true)
if [ -n "$bad_includes" ]; then
    echo "shm/ includes something outside its own headers, libc and xxhash:" >&2
    echo "$bad_includes" >&2
    exit 1
fi
# Every source file carries its SPDX license line (LICENSE).
deploy/spdx.sh --check
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

echo "== build: Release (what deploy/run.sh builds: -O3 warnings differ)"
cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build build-rel -j"$jobs"

echo "== build: ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTC_SANITIZE=address,undefined >/dev/null
cmake --build build-asan -j"$jobs"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== test: everything (ASan + UBSan)"
(cd build-asan && ctest -V --timeout 600) | tee -a "$log"

echo "== test: the hit path as deploy/run.sh builds it (Release, label release)"
# The sanitizers move the stack and the allocator: a bug that needs -O3's
# stack reuse (an XXH3 state left uninitialised made every shm read after
# the first a miss) shows only here. Just the labelled tests and what they run.
cmake -S . -B build-rel-tests -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=ON >/dev/null
cmake --build build-rel-tests -j"$jobs" --target tiercache tc-test-origin test_ring test_item \
    issue_15_semantics
(cd build-rel-tests && ctest -V -L release --timeout 300) | tee -a "$log"

if [ "${TC_SKIP_PACKAGE:-0}" != 1 ] && command -v dpkg-buildpackage >/dev/null; then
    echo "== package: build (Release, no tests), lintian, dpkg -i, systemd-analyze, purge"
    # Installs on this machine's root and removes it again (tests/package/package.sh).
    sh tests/package/package.sh . | tee -a "$log"
fi

fuzz_secs=${TC_FUZZ_SECONDS:-20}
if [ "$fuzz_secs" != 0 ]; then
    echo "== build: fuzz targets (clang: libFuzzer + ASan + UBSan)"
    CC=clang cmake -S . -B build-fuzz -DTC_FUZZ=ON -DTC_BUILD_TESTS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build-fuzz -j"$jobs" --target tc_fuzz
    echo "== fuzz: every target in build-fuzz/fuzz, $fuzz_secs s each"
    # Each target starts from its committed seeds (tests/fuzz/corpus/NAME,
    # read only) and writes new inputs and any crash into a temp dir.
    for t in build-fuzz/fuzz/fuzz_*; do
        [ -x "$t" ] || continue
        name=${t##*/fuzz_}
        work=$(mktemp -d)
        mkdir "$work/corpus"
        seeds=()
        [ -d "tests/fuzz/corpus/$name" ] && seeds=("tests/fuzz/corpus/$name")
        if timeout $((fuzz_secs + 120)) "$t" -max_total_time="$fuzz_secs" -timeout=10 \
            -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
            -artifact_prefix="$work/" "$work/corpus" "${seeds[@]}" >"$work/log" 2>&1; then
            runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$work/log")
            echo "fuzz: $name: $runs inputs in $fuzz_secs s, no crash" | tee -a "$log"
            rm -rf "$work"
        else
            tail -n 60 "$work/log"
            echo "fuzz: $name: FAILED; the input and log are in $work" | tee -a "$log"
            exit 1
        fi
    done
fi

if [ "${TC_SKIP_TSAN:-0}" != 1 ]; then
    echo "== build: TSan"
    cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DTC_SANITIZE=thread >/dev/null
    cmake --build build-tsan -j"$jobs"
    echo "== test: concurrency (TSan)"
    # TSan's shadow memory needs a predictable address-space layout; newer
    # kernels randomise mmap bases beyond what gcc 12's TSan accepts, so run
    # without ASLR (setarch -R) when that is allowed here.
    wrap=()
    if setarch "$(uname -m)" -R true 2>/dev/null; then
        wrap=(setarch "$(uname -m)" -R)
    fi
    (cd build-tsan && "${wrap[@]}" ctest -V -L concurrency --timeout 600) | tee -a "$log"
fi
echo "== all tests passed"
# One closing line for both passes, counted from ctest's own summaries.
awk '/tests passed, [0-9]+ tests failed out of/ {
        for (i = 1; i <= NF; i++) if ($i == "of") total += $(i + 1)
        for (i = 1; i <= NF; i++) if ($i == "failed") { bad += $(i - 2) }
     }
     END { printf "deploy/test.sh: %d passed, %d failed\n", total - bad, bad }' "$log"
