#!/usr/bin/env bash
# README command 2: install what is missing, build under AddressSanitizer +
# UndefinedBehaviorSanitizer, run every test, then rebuild under
# ThreadSanitizer and run the concurrency tests again. Exits non-zero on any
# failure. Set TC_SKIP_TSAN=1 to skip the second pass while iterating.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/deps.sh

jobs=$(nproc)
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
