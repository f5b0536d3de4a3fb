#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Issue 16: the cost of a rate-limit decision, in one run.
#
#   1. host scope (shm://): POST /limits gcra and fixed against GET /cache
#      hits of a 100-byte value, wrk -t1 -c64, one server worker on core 0,
#      wrk on core 1 (target: a decision >= 0.8x a GET hit);
#   2. cluster scope (redis://): the same POST /limits through tiercache
#      against redis-benchmark sending the very EVALSHA tiercache sends (read
#      off MONITOR) to the same private redis-server, 64 clients;
#   3. the moving window at limit=1000 against the fixed window at
#      limit=1000, at host scope (shm slabs) and cluster scope (Redis lists),
#      each past its limit for most of the run: the decisions a client of a
#      busy limit pays for.
#
#   bench/limits_bench.sh [SECONDS]
#
# Run it under the shared lock: flock /work/notes/bench.lock bench/limits_bench.sh 5
# Writes nothing outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-5}
build=${TC_BUILD_DIR:-build-rel}
# Build before taking the bench lock: flock ... only around the measuring.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target tiercache >/dev/null

tmp=$(mktemp -d)
pids=()
shm=tc-limits-bench-$$
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$build/tiercache" shm unlink "$shm" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/lib.sh" # free_port, wait_port, cpu_of, nginx_conf_head
value=$(head -c 100 /dev/zero | tr '\0' 'v')

start_tc() { # start_tc LOG TIER... ; sets $port
    local log=$1
    shift
    local args=()
    for t in "$@"; do args+=(--tier "$t"); done
    taskset -c 0 "$build/tiercache" --listen 127.0.0.1:0 --workers 1 "${args[@]}" 2>"$log" &
    pids+=($!)
    port=$(wait_port "$log" "${pids[-1]}")
    [ -n "$port" ] || { echo "tiercache did not start" >&2; cat "$log" >&2; exit 1; }
}

post_script() { # post_script FILE BODY
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
LUA
}

# wrk URL [SCRIPT] -> "req/s non2xx"
run_wrk() {
    local out
    if [ -n "${2:-}" ]; then
        out=$(timeout $((secs + 30)) taskset -c 1 wrk -t1 -c64 -d"${secs}s" -s "$2" "$1")
    else
        out=$(timeout $((secs + 30)) taskset -c 1 wrk -t1 -c64 -d"${secs}s" "$1")
    fi
    local rps non
    rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
    non=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
    echo "$rps ${non:-0}"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c64 -d${secs}s on core 1, tiercache --workers 1 on core 0"

# ---- 1. host scope ----------------------------------------------------------------------
start_tc "$tmp/host.log" "shm://$shm?size=64M"
hp=$port
curl -sf -X PUT -H 'Content-Type: application/json' -d "{\"value\":\"$value\",\"ttl\":3600}" \
    "http://127.0.0.1:$hp/cache/bench" >/dev/null
# Limits no client reaches in the run: every decision is an allowed one that
# stores (the 429 path stores nothing and is cheaper).
post_script "$tmp/gcra.lua" '{"limit":1000000000,"window":"1s","strategy":"gcra"}'
post_script "$tmp/fixed.lua" '{"limit":1000000000,"window":"1h","strategy":"fixed"}'
read -r get_rps _ < <(run_wrk "http://127.0.0.1:$hp/cache/bench")
read -r gcra_rps gcra_non < <(run_wrk "http://127.0.0.1:$hp/limits/bench-g" "$tmp/gcra.lua")
read -r fixed_rps fixed_non < <(run_wrk "http://127.0.0.1:$hp/limits/bench-f" "$tmp/fixed.lua")
read -r get2_rps _ < <(run_wrk "http://127.0.0.1:$hp/cache/bench")
echo "host scope (shm): GET hit $get_rps, $get2_rps req/s (before, after)"
echo "host scope (shm): POST /limits gcra  $gcra_rps req/s ($gcra_non non-2xx)"
echo "host scope (shm): POST /limits fixed $fixed_rps req/s ($fixed_non non-2xx)"
awk -v g="$get_rps" -v g2="$get2_rps" -v a="$gcra_rps" -v f="$fixed_rps" 'BEGIN {
    m = (g + g2) / 2
    printf "host scope: gcra/GET = %.2f, fixed/GET = %.2f (target >= 0.8)\n", a / m, f / m }'
post_script "$tmp/moving.lua" '{"limit":1000,"window":"1h","strategy":"moving"}'
post_script "$tmp/fixedc.lua" '{"limit":1000,"window":"1h","strategy":"fixed"}'
read -r h_mov h_mov_non < <(run_wrk "http://127.0.0.1:$hp/limits/bench-m" "$tmp/moving.lua")
read -r h_fix h_fix_non < <(run_wrk "http://127.0.0.1:$hp/limits/bench-f1000" "$tmp/fixedc.lua")
echo "host scope: limit=1000 moving $h_mov req/s ($h_mov_non 429s), fixed $h_fix req/s ($h_fix_non 429s)"
awk -v m="$h_mov" -v f="$h_fix" 'BEGIN { printf "host scope: moving/fixed at limit=1000 = %.2f\n", m / f }'

# ---- 2, 3. cluster scope ----------------------------------------------------------------
rport=$(free_port)
taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
pids+=($!)
for _ in $(seq 100); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.05
done
start_tc "$tmp/cluster.log" "shm://$shm?size=64M" "redis://127.0.0.1:$rport/0?prefix=tc:&timeout_ms=1000"
cp=$port

# The EVALSHA tiercache sends for a body, as MONITOR shows it.
evalsha_of() { # evalsha_of KEY BODY -> the command's words
    redis-cli -p "$rport" monitor >"$tmp/monitor" &
    local mp=$!
    sleep 0.3
    curl -s -X POST -H 'Content-Type: application/json' -d "$2" \
        "http://127.0.0.1:$cp/limits/$1" >/dev/null
    sleep 0.3
    kill "$mp" 2>/dev/null || true
    wait "$mp" 2>/dev/null || true
    grep -m1 '"EVALSHA"' "$tmp/monitor" | sed 's/^[^"]*//; s/"//g'
}
read -r -a ev_gcra < <(evalsha_of bench-g '{"limit":1000000000,"window":"1s","strategy":"gcra"}')
read -r -a ev_moving < <(evalsha_of bench-m '{"limit":1000,"window":"1h","strategy":"moving"}')
read -r -a ev_fixed < <(evalsha_of bench-f '{"limit":1000,"window":"1h","strategy":"fixed"}')
echo "redis-benchmark runs: ${ev_gcra[*]} | ${ev_moving[*]} | ${ev_fixed[*]}"

rb() { # rb WORDS... -> ops/s
    timeout 120 taskset -c 1 redis-benchmark -p "$rport" -c 64 --threads 1 -n $((secs * 10000)) \
        --csv "$@" | awk -F'"' 'NR == 2 { print $4 }'
}
read -r c_gcra c_gcra_non < <(run_wrk "http://127.0.0.1:$cp/limits/bench-g" "$tmp/gcra.lua")
rb_gcra=$(rb "${ev_gcra[@]}")
read -r c_mov c_mov_non < <(run_wrk "http://127.0.0.1:$cp/limits/bench-m" "$tmp/moving.lua")
read -r c_fix c_fix_non < <(run_wrk "http://127.0.0.1:$cp/limits/bench-f" "$tmp/fixedc.lua")
rb_mov=$(rb "${ev_moving[@]}")
rb_fix=$(rb "${ev_fixed[@]}")
echo "cluster scope: POST /limits gcra through tiercache $c_gcra req/s ($c_gcra_non non-2xx); redis-benchmark EVALSHA $rb_gcra req/s"
echo "cluster scope: limit=1000 moving $c_mov req/s ($c_mov_non 429s), fixed $c_fix req/s ($c_fix_non 429s) through tiercache"
echo "redis-benchmark EVALSHA limit=1000: moving $rb_mov, fixed $rb_fix req/s"
awk -v a="$c_gcra" -v b="$rb_gcra" -v m="$c_mov" -v f="$c_fix" -v rm="$rb_mov" -v rf="$rb_fix" 'BEGIN {
    printf "cluster scope: tiercache/redis-benchmark (gcra) = %.2f\n", a / b
    printf "moving/fixed at limit=1000: %.2f through tiercache, %.2f in Redis alone\n", m / f, rm / rf }'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
