#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# What the Bearer-token check costs on plain-HTTP GET hits (issue 14 target:
# <= 5% of throughput). Two tiercache servers from the same binary, one
# worker each, both pinned to core 0: one without auth-tokens-file, one with
# a file of 8 tokens whose clients send `Authorization: Bearer` (the last
# token, so that the check walks every entry). wrk -t1 -c64 keep-alive on
# core 1 against each in turn, ROUNDS times interleaved, in the same run:
# no-auth (no header), header (the same Authorization header sent to the
# server without tokens: what the bytes cost), token (checked). The figure is requests per server CPU-second
# (utime + stime from /proc), so that a busy machine moves both alike.
#
#   flock /work/notes/bench.lock bench/auth_cost.sh [SECONDS] [ROUNDS]
#
# Builds build-rel (Release) if needed; writes nothing outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-5}
rounds=${2:-3}
build=${TC_BUILD_DIR:-build-rel}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target tiercache >/dev/null
bin="$build/tiercache"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# 8 tokens; clients use the last.
token=""
for i in $(seq 0 7); do
    token="bench-token-$i-$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    echo "client$i read,write sha256:$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
done >"$tmp/tokens"
chmod 600 "$tmp/tokens"

value=$(head -c 100 /dev/zero | tr '\0' 'v')
. "$(dirname "$0")/lib.sh" # wait_port, cpu_of
start_tc() { # LOG [ARGS...] -> sets $port, appends the pid to pids
    local log=$1
    shift
    taskset -c 0 "$bin" --listen 127.0.0.1:0 --workers 1 --tier 'mem://?size=64M' \
        "$@" 2>"$log" &
    pids+=($!)
    port=$(wait_port "$log" "${pids[-1]}")
    [ -n "$port" ] || { echo "tiercache did not start" >&2; cat "$log" >&2; exit 1; }
}
start_tc "$tmp/off.log"
off_port=$port off_pid=${pids[-1]}
start_tc "$tmp/on.log" --auth-tokens-file "$tmp/tokens"
on_port=$port on_pid=${pids[-1]}
auth="Authorization: Bearer $token"
curl -sf -X PUT -H 'Content-Type: application/json' -d "{\"value\":\"$value\",\"ttl\":3600}" \
    "http://127.0.0.1:$off_port/cache/bench" >/dev/null
curl -sf -X PUT -H 'Content-Type: application/json' -H "$auth" \
    -d "{\"value\":\"$value\",\"ttl\":3600}" "http://127.0.0.1:$on_port/cache/bench" >/dev/null
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$on_port/cache/bench")" = 401 ] ||
    { echo "the server with tokens answered without one" >&2; exit 1; }

run() { # NAME PORT PID [WRK ARGS...] -> prints a line, sets $per
    local name=$1 port=$2 pid=$3 c0 c1 out rps cpu
    shift 3
    c0=$(cpu_of "$pid")
    out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" "$@" "http://127.0.0.1:$port/cache/bench")
    c1=$(cpu_of "$pid")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    if echo "$out" | grep -q 'Non-2xx'; then
        echo "$name: non-2xx answers: $out" >&2
        exit 1
    fi
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')
    per=$(awk -v r="$rps" -v c="$cpu" -v s="$secs" 'BEGIN { printf "%.0f", (c > 0 ? r * s / c : 0) }')
    printf "%-10s %10.0f req/s   server CPU %6.2f s   %9.0f req per CPU-s\n" "$name" "$rps" \
        "$cpu" "$per"
}
echo "GET hit, 100-byte value, mem tier, wrk -t1 -c64 -d${secs}s x $rounds rounds," \
    "servers on core 0, wrk on core 1 (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
sum_off=0 sum_hdr=0 sum_on=0
for r in $(seq "$rounds"); do
    run "no-auth" "$off_port" "$off_pid"
    sum_off=$((sum_off + per))
    run "header" "$off_port" "$off_pid" -H "$auth"
    sum_hdr=$((sum_hdr + per))
    run "token" "$on_port" "$on_pid" -H "$auth"
    sum_on=$((sum_on + per))
done
awk -v a="$sum_on" -v h="$sum_hdr" -v b="$sum_off" 'BEGIN {
    printf "token/no-auth = %.3f req per server CPU-s (cost %.1f%%; target: cost <= 5%%)\n",
        a / b, (1 - a / b) * 100;
    printf "token/header  = %.3f (the check alone: the header sent to a server without tokens " \
        "costs %.1f%%)\n", a / h, (1 - h / b) * 100 }'
