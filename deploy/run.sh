#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# README command 1: install what is missing, build (Release), and start
# tiercache on its embedded default (shm L1 + LMDB L2 under ./data,
# listening on 127.0.0.1:8080). Extra arguments go to tiercache.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/deps.sh
build=${TC_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
mkdir -p data
exec "$build/tiercache" "$@"
