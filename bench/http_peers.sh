#!/usr/bin/env bash
# GET hits over HTTP: tiercache (L1 hit, 100-byte value) against nginx
# returning the same 100-byte body and Varnish serving it as a cache hit,
# all measured in the same run with wrk, keep-alive, -t1 -c64.
# Each server is pinned to core 0 with one worker; wrk is pinned to core 1.
#
#   bench/http_peers.sh [SECONDS] [TIER_URI]
#
# Prints one line per server and the ratios; writes nothing outside a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
tier=${2:-shm://tc-bench-$$?size=64M}
TC_DEPS_BENCH=1 deploy/deps.sh
build=${TC_BUILD_DIR:-build-rel}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target tiercache >/dev/null

tmp=$(mktemp -d)
chmod 755 "$tmp" # varnishd reads the VCL as its own unprivileged user
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$tmp/varnish.pid" ] && kill "$(cat "$tmp/varnish.pid")" 2>/dev/null || true
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    "$build/tiercache" shm unlink "tc-bench-$$" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
value=$(head -c 100 /dev/zero | tr '\0' 'v')

# nginx: return 200 with the same 100-byte body.
np=$(free_port)
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
worker_cpu_affinity 01;
daemon on;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$np;
        location / { default_type application/json; return 200 '$value'; }
    }
}
EOF
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

# tiercache: one worker on core 0.
taskset -c 0 "$build/tiercache" --listen 127.0.0.1:0 --workers 1 --tier "$tier" \
    2>"$tmp/tc.log" &
pids+=($!)
tcp=""
for _ in $(seq 100); do
    tcp=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$tmp/tc.log" 2>/dev/null | cut -d: -f2 || true)
    [ -n "$tcp" ] && break
    sleep 0.1
done
[ -n "$tcp" ] || { echo "tiercache did not start"; cat "$tmp/tc.log"; exit 1; }
curl -sf -X PUT -H 'Content-Type: application/json' \
    -d "{\"value\":\"$value\",\"ttl\":3600}" "http://127.0.0.1:$tcp/cache/bench" >/dev/null
curl -sf "http://127.0.0.1:$tcp/cache/bench" >/dev/null
curl -sf "http://127.0.0.1:$vp/" >/dev/null
curl -sf "http://127.0.0.1:$vp/" >/dev/null

run() { # name url
    local out rps
    out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" --latency "$2")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    printf '%-10s %12.0f req/s   p99 %s\n' "$1" "$rps" "$p99" >&2
    echo "$rps"
}
echo "GET hit, 100-byte value, wrk -t1 -c64 -d${secs}s, servers on core 0, wrk on core 1 (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
n=$(run nginx "http://127.0.0.1:$np/")
v=$(run varnish "http://127.0.0.1:$vp/")
t=$(run tiercache "http://127.0.0.1:$tcp/cache/bench")
awk -v t="$t" -v n="$n" -v v="$v" 'BEGIN {
    printf "tiercache/nginx   = %.2f (target >= 0.8)\n", t / n;
    printf "tiercache/varnish = %.2f (target >= 1.3)\n", t / v }'
