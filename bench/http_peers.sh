#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# GET hits over HTTP: tiercache (L1 hit, a VALUE_BYTES value, 100 by default)
# against nginx returning a body of the same size and Varnish serving it as a
# cache hit, all measured in the same run with wrk, keep-alive, -t1 -c64.
# Each server is pinned to core 0 with one worker; wrk is pinned to core 1.
# nginx answers with `return 200 '<body>'` up to 3000 bytes; its config
# parser refuses longer strings, so a larger body is a file it keeps open
# (open_file_cache) and sends with sendfile, its fastest path.
#
#   bench/http_peers.sh [SECONDS] [TIER_URI] [VALUE_BYTES]
#   TC_BASE_BIN=/path/to/older/tiercache bench/http_peers.sh ...
#   TC_ROUNDS=N bench/http_peers.sh ...   (N rounds, medians: for a noisy VM)
#
# Prints one line per server: requests/s, p99, and the server's CPU seconds
# over the run (utime + stime of its processes, from /proc; each also per
# request), so that the figure to compare is requests per server CPU-second
# when wrk, on its one core, is the bottleneck. With TC_BASE_BIN, an older
# tiercache binary runs the same test in the same run (after the new one, on
# the same core), for a before/after ratio against the same nginx. Writes nothing outside a temp dir
# (under TMPDIR); TC_BUILD_DIR (default build, as deploy/run.sh) and
# TC_BENCH_SHM (segment name, default tc-bench-PID) are options. Removes its
# segments and temp dir on exit, Ctrl-C and kill.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
shm=${TC_BENCH_SHM:-tc-bench-$$}
tier=${2:-shm://$shm?size=64M}
vbytes=${3:-100}
TC_DEPS_BENCH=1 deploy/deps.sh
build=${TC_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target tiercache >/dev/null

tmp=$(mktemp -d)
chmod 755 "$tmp" # varnishd reads the VCL as its own unprivileged user
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$tmp/varnish.pid" ] && kill "$(cat "$tmp/varnish.pid")" 2>/dev/null || true
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    "$build/tiercache" shm unlink "$shm" >/dev/null 2>&1 || true
    "$build/tiercache" shm unlink "$shm-base" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
# Ctrl-C or kill: exit through the EXIT trap, so nothing is left behind.
trap 'exit 130' INT
trap 'exit 143' TERM

. "$(dirname "$0")/lib.sh" # free_port, wait_port, cpu_of, nginx_conf_head
value=$(head -c "$vbytes" /dev/zero | tr '\0' 'v')
printf '%s' "$value" >"$tmp/body"
chmod 644 "$tmp/body"
if [ "$vbytes" -le 3000 ]; then
    ngx_loc="default_type application/json; return 200 '$value';"
else
    ngx_loc="default_type application/json; root $tmp; try_files /body =404;"
fi

# nginx: return 200 with the same 100-byte body.
np=$(free_port)
{
    nginx_conf_head "$tmp"
    cat <<EOF
    keepalive_requests 1000000;
    sendfile on;
    open_file_cache max=16;
    server {
        listen 127.0.0.1:$np;
        location / { $ngx_loc }
    }
}
EOF
} >"$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -p "$tmp"

# Varnish in front of nginx; the object is cached after the first request.
vp=$(free_port)
cat >"$tmp/default.vcl" <<EOF
vcl 4.1;
backend nginx { .host = "127.0.0.1"; .port = "$np"; }
sub vcl_backend_response { set beresp.ttl = 1h; }
EOF
chmod 644 "$tmp/default.vcl"
taskset -c 0 varnishd -a "127.0.0.1:$vp" -f "$tmp/default.vcl" -n "$tmp/varnish" \
    -P "$tmp/varnish.pid" -s malloc,64m -p thread_pools=1 -p thread_pool_min=8 >/dev/null

# tiercache: one worker on core 0. start_tc BIN TIER LOG sets $port. (Not
# called in $(...): a subshell would lose the pid and run the EXIT trap.)
start_tc() {
    taskset -c 0 "$1" --listen 127.0.0.1:0 --workers 1 --tier "$2" 2>"$3" &
    pids+=($!)
    port=$(wait_port "$3" "${pids[-1]}")
    [ -n "$port" ] || { echo "tiercache ($1) did not start" >&2; cat "$3" >&2; exit 1; }
    printf '{"value":"%s","ttl":3600}' "$value" >"$tmp/put.json"
    curl -sf -X PUT -H 'Content-Type: application/json' --data-binary "@$tmp/put.json" \
        "http://127.0.0.1:$port/cache/bench" >/dev/null
    curl -sf "http://127.0.0.1:$port/cache/bench" >/dev/null
}
start_tc "$build/tiercache" "$tier" "$tmp/tc.log"
tcp=$port
tc_pid=${pids[-1]}
if [ -n "${TC_BASE_BIN:-}" ]; then
    start_tc "$TC_BASE_BIN" "shm://$shm-base?size=64M" "$tmp/tc-base.log"
    basep=$port
    base_pid=${pids[-1]}
fi
curl -sf "http://127.0.0.1:$vp/" >/dev/null
curl -sf "http://127.0.0.1:$vp/" >/dev/null

run() { # name url pids... -> prints a line, sets $rps and $cpu
    local name=$1 url=$2 out c0 c1 p99 req
    shift 2
    c0=$(cpu_split "$@")
    out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency "$url")
    c1=$(cpu_split "$@")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    req=$(echo "$out" | awk '/requests in/ {print $1}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    cpu=$(echo "$c0 $c1" | awk '{ print $3 + $4 - $1 - $2 }')
    # User and system time per request apart: where the server's CPU goes.
    echo "$c0 $c1" | awk -v n="$name" -v r="$rps" -v q="$req" -v p="$p99" -v cpu="$cpu" \
        -v s="$secs" '{
        printf "%-14s %10.0f req/s   p99 %-8s server CPU %6.2f s   %9.0f req per CPU-s   user %.2f sys %.2f us/req\n",
        n, r, p, cpu, (cpu > 0 ? r * s / cpu : 0), (q > 0 ? ($3 - $1) / q * 1e6 : 0), (q > 0 ? ($4 - $2) / q * 1e6 : 0) }'
}
echo "GET hit, $vbytes-byte value, wrk -t1 -c64 -d${secs}s, servers on core 0, wrk on core 1 (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
# nginx renames its processes ("nginx: worker process"): take the master
# from its pid file and the workers as its children.
ngx_master=$(cat "$tmp/nginx.pid")
mapfile -t ngx < <(echo "$ngx_master"; pgrep -P "$ngx_master")
mapfile -t vrn < <(pgrep -f "$tmp/varnish")
# One round: nginx, tiercache (and the base build), each for SECS; the order
# alternates between rounds so that a drift of the machine's speed (other
# guests on the host) does not favour one side. Per-CPU rates and ratios of
# each round go to $tmp/rounds.
round() { # number
    local order=(nginx tiercache) w
    [ $(($1 % 2)) -eq 0 ] && order=(tiercache nginx)
    for w in "${order[@]}"; do
        if [ "$w" = nginx ]; then
            run nginx "http://127.0.0.1:$np/" "${ngx[@]}"
            n=$rps ncpu=$cpu
        else
            run tiercache "http://127.0.0.1:$tcp/cache/bench" "$tc_pid"
            t=$rps tcpu=$cpu
        fi
    done
    b=0 bcpu=0
    if [ -n "${TC_BASE_BIN:-}" ]; then
        run tiercache-base "http://127.0.0.1:$basep/cache/bench" "$base_pid"
        b=$rps bcpu=$cpu
    fi
    echo "$n $ncpu $t $tcpu $b $bcpu" >>"$tmp/rounds"
}
rounds=${TC_ROUNDS:-1}
round 1
run varnish "http://127.0.0.1:$vp/" "${vrn[@]}"
v=$rps
for r in $(seq 2 "$rounds"); do round "$r"; done
# Per round: rates per server CPU-second and their ratios; then the median
# of each ratio over the rounds (the figure to quote on a noisy machine).
awk -v v="$v" -v rounds="$rounds" -v base="${TC_BASE_BIN:+1}" '
    function med(a, k,   i, j, x) {
        for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    { k++; n = $1 / $2; t = $3 / $4; tn[k] = t / n; tr[k] = $3 / $1
      if (base) { b = $5 / $6; bn[k] = b / n; nb[k] = t / b }
      if (k == 1) t1 = $3 }
    END {
      if (rounds > 1) for (i = 1; i <= k; i++)
          printf "round %d: tiercache/nginx %.2f per server CPU-s%s\n", i, tn[i],
              base ? sprintf(", base/nginx %.2f, new/base %.2f", bn[i], nb[i]) : ""
      m = rounds > 1 ? sprintf(" (median of %d rounds)", k) : ""
      printf "tiercache/nginx   = %.2f req/s, %.2f per server CPU-s%s (issue 15 target >= 1.0)\n", med(tr, k), med(tn, k), m
      printf "tiercache/varnish = %.2f req/s (round 1; target >= 1.3)\n", t1 / v
      if (base) {
          printf "base/nginx        = %.2f per server CPU-s%s\n", med(bn, k), m
          printf "new/base          = %.2f per server CPU-s%s\n", med(nb, k), m
      }
    }' "$tmp/rounds"
