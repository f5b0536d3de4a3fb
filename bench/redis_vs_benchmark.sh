#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Gets through the Redis tier (tiercache-bench, one thread, 50 operations in
# flight on one event_base) against redis-benchmark's GET with 50 clients on
# one thread, on the same private redis-server, in the same run. Figures are
# only meaningful as the ratio printed at the end; the load average is shown
# because the machine may be shared.
#
#   bench/redis_vs_benchmark.sh [BUILD_DIR] [ROUNDS] [SECONDS]
#
# BUILD_DIR holds tiercache-bench (default: $TC_BUILD_DIR, else build, as
# deploy/run.sh; built if missing). The private redis-server listens on
# TC_BENCH_REDIS_PORT (default: a free port) with its files under TMPDIR;
# it is stopped and its files removed on any exit, Ctrl-C included.
# Each round runs both tools once, alternating, so that drift in the
# machine's load hits both; the median of the rounds is compared.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-${TC_BUILD_DIR:-build}}
rounds=${2:-3}
seconds=${3:-5}
keys=100000

if [ ! -x "$build/tiercache-bench" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
    cmake --build "$build" -j2 --target tiercache-bench >/dev/null
fi
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
    echo "needs redis-server and redis-benchmark (deploy/deps.sh)" >&2
    exit 2
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/tc-redis-bench-XXXXXX")
port=${TC_BENCH_REDIS_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --daemonize no &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
# Ctrl-C or kill: exit through the EXIT trap, so nothing is left behind.
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
done

# redis-benchmark's keys: key:000000000000 .. key:000000099999, 100-byte
# values, so that its GETs return values as the tier's do.
redis-benchmark -p "$port" -t set -d 100 -r "$keys" -n $((keys * 3)) -c 50 --threads 1 -q >/dev/null

uri="redis://127.0.0.1:$port/0"
tc_cmd=("$build/tiercache-bench" --tier "$uri" --threads 1 --inflight 50 --value-size 100
    --read-ratio 1.0 --keys "$keys" --prefill --seconds "$seconds" --json)
# About as many GETs as the tier's run does in $seconds at 100k ops/s.
rb_cmd=(redis-benchmark -t get -d 100 -c 50 --threads 1 -p "$port" -r "$keys"
    -n $((seconds * 100000)) --csv)

echo "redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$port"
echo "tier:     ${tc_cmd[*]}"
echo "baseline: ${rb_cmd[*]}"
echo "load before: $(uptime)"

tc=()
rb=()
for r in $(seq "$rounds"); do
    j=$("${tc_cmd[@]}" 2>/dev/null || true)
    t=$(python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["throughput"])' <<<"$j" 2>/dev/null || true)
    e=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["errors"])' <<<"$j" 2>/dev/null || true)
    b=$("${rb_cmd[@]}" | awk -F'"' '$2 == "GET" { print $4 }')
    if [ -z "$t" ] || [ "${e:-1}" != 0 ]; then
        # Failed operations (deadlines missed on an overloaded machine, so
        # the breaker skipped Redis) make ops/s meaningless: not counted.
        echo "round $r: tiercache-bench ${t:-?} ops/s with ${e:-?} failed operations (not counted), redis-benchmark $b ops/s"
        continue
    fi
    echo "round $r: tiercache-bench $t ops/s, redis-benchmark $b ops/s"
    tc+=("$t")
    rb+=("$b")
done
if [ ${#tc[@]} -eq 0 ]; then
    echo "no clean round; machine too loaded? (try a larger timeout_ms)" >&2
    exit 1
fi
# Not the target, but the like-for-like peer: the tier pipelines its 50
# operations on one connection, which redis-benchmark does with -c 1 -P 50.
rbp_cmd=(redis-benchmark -t get -d 100 -c 1 -P 50 --threads 1 -p "$port" -r "$keys"
    -n $((seconds * 400000)) --csv)
p=$("${rbp_cmd[@]}" | awk -F'"' '$2 == "GET" { print $4 }')
echo "pipelined peer (${rbp_cmd[*]}): $p ops/s"
echo "load after:  $(uptime)"

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mt=$(median "${tc[@]}")
mb=$(median "${rb[@]}")
awk -v t="$mt" -v b="$mb" 'BEGIN {
    printf "median: tiercache-bench %.0f ops/s, redis-benchmark %.0f ops/s, ratio %.2fx (target >= 0.80x)\n", t, b, t / b
    exit (t / b >= 0.8 ? 0 : 1)
}'
