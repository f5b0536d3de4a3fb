#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 15's speed figures (docs/benchmarks.md "Bulk gets and purge"):
#   1. POST /batch/get of 16 keys against 16 single GETs, one keep-alive
#      connection, alternating rounds in the same run (keys/s and ratio);
#   2. POST /purge of a prefix holding 100k of 1M keys, stack shm + LMDB +
#      a private redis-server: time and keys/s.
# Usage: bench/batch_purge.sh BUILD_DIR [SECONDS]   (BUILD_DIR: a Release build)
# Run it under the shared lock: flock /work/notes/bench.lock bench/batch_purge.sh build-rel
set -eu
build=$1
secs=${2:-6}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/tc-bp-XXXXXX)
spid=""; rpid=""
cleanup() {
    [ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null || true
    [ -n "$rpid" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null || true
    rm -rf "$tmp" /dev/shm/tc-bp-$$*
}
trap cleanup EXIT INT TERM
cc -O2 -o "$tmp/client" "$here/batch_purge.c"
rport=$(( 20000 + $$ % 20000 ))
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" \
    >"$tmp/redis.log" 2>&1 &
rpid=$!
sleep 0.5
port=$(( rport + 1 ))
taskset -c 0 "$build/tiercache" --listen "127.0.0.1:$port" --workers 1 \
    --tier "shm://tc-bp-$$?size=256M" \
    --tier "lmdb://$tmp/l2?map_size=4G&sync=none" \
    --tier "redis://127.0.0.1:$rport/0?prefix=bp:&timeout_ms=2000" \
    >"$tmp/server.log" 2>&1 &
spid=$!
sleep 1
echo "== batch get: 16 keys, one keep-alive connection, ${secs}s =="
timeout 120 taskset -c 1 "$tmp/client" get "$port" "$secs" "$spid"
echo "== purge: 100k of 1M keys =="
timeout 900 taskset -c 1 "$tmp/client" fill "$port" o: 900000
timeout 300 taskset -c 1 "$tmp/client" fill "$port" p: 100000
echo "redis keys before: $(redis-cli -p "$rport" dbsize)"
timeout 600 curl -s -o "$tmp/purge.json" -w 'purge time: %{time_total} s\n' \
    -X POST -H 'Content-Type: application/json' -d '{"prefix":"p:"}' \
    "http://127.0.0.1:$port/purge"
cat "$tmp/purge.json"; echo
echo "redis keys after: $(redis-cli -p "$rport" dbsize)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
