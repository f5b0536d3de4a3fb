#!/bin/sh
# `tiercache shm stats NAME` / `tiercache shm unlink NAME` against a real
# segment. Usage: cli_shm.sh PATH/TO/tiercache
set -eu
bin=$1
name="tc-test-cli-$$"
fail() { echo "cli_shm: FAIL: $*" >&2; "$bin" shm unlink "$name" 2>/dev/null || true; exit 1; }

"$bin" --tier "shm://$name?size=1M" 2>/dev/null || fail "creating the segment"
out=$("$bin" shm stats "$name") || fail "stats of an existing segment"
echo "$out" | grep -q '"capacity": 1048576' || fail "stats lacks the capacity: $out"
for k in bytes_used items hits misses sets evictions; do
    echo "$out" | grep -q "\"$k\": " || fail "stats lacks $k: $out"
done
err=$("$bin" --tier "shm://$name?size=2M" 2>&1) && fail "a size mismatch was accepted"
echo "$err" | grep -q "tiercache shm unlink $name" || fail "mismatch message: $err"
"$bin" shm unlink "$name" || fail "unlink"
"$bin" shm unlink "$name" 2>/dev/null && fail "a second unlink succeeded"
"$bin" shm stats "$name" 2>/dev/null && fail "stats of a missing segment succeeded"
"$bin" shm bogus 2>/dev/null && fail "a bad subcommand succeeded"
echo "cli_shm: 1 passed, 0 failed"
