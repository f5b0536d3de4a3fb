#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# `tiercache shm stats NAME` / `tiercache shm unlink NAME` against a real
# segment, made and used by a short tiercache-bench run (the server itself
# would keep running). Usage: cli_shm.sh PATH/TO/tiercache PATH/TO/tiercache-bench
set -eu
bin=$1
bench=$2
name="tc-test-cli-$$"
fail() { echo "cli_shm: FAIL: $*" >&2; "$bin" shm unlink "$name" 2>/dev/null || true; exit 1; }

timeout 60 "$bench" --tier "shm://$name?size=1M" --keys 100 --prefill --keep --seconds 0.1 >/dev/null 2>&1 ||
    fail "creating the segment"
out=$("$bin" shm stats "$name") || fail "stats of an existing segment"
echo "$out" | grep -q '"capacity": 1048576' || fail "stats lacks the capacity: $out"
echo "$out" | grep -q '"items": 100,' || fail "stats: the bench wrote 100 keys: $out"
echo "$out" | grep -q '"mode": "0600"' || fail "stats lacks the segment's mode: $out"
echo "$out" | grep -q '"check": "ok"' || fail "a fresh segment fails its check: $out"
for k in owner_uid group_gid stats_rejected bytes_used items hits misses sets evictions lock_slots locks_held; do
    echo "$out" | grep -q "\"$k\": " || fail "stats lacks $k: $out"
done
err=$(timeout 60 "$bench" --tier "shm://$name?size=2M" --keys 10 --seconds 0.1 2>&1) &&
    fail "a size mismatch was accepted"
echo "$err" | grep -q "tiercache shm unlink $name" || fail "mismatch message: $err"
"$bin" shm unlink "$name" || fail "unlink"
"$bin" shm unlink "$name" 2>/dev/null && fail "a second unlink succeeded"
"$bin" shm stats "$name" 2>/dev/null && fail "stats of a missing segment succeeded"
"$bin" shm bogus 2>/dev/null && fail "a bad subcommand succeeded"
echo "cli_shm: 1 passed, 0 failed"
