#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# HTTPS against nginx (issue 14): the same certificate (EC P-256, made by
# tests/support/tls_certs.sh), the same TLS versions offered (1.2 and 1.3;
# both negotiate TLS 1.3 with TLS_AES_256_GCM_SHA384, from the same OpenSSL),
# session tickets on and a session cache on both sides.
#
#   bench/https_peers.sh [SECONDS]      (TC_ROUNDS=3: rounds of each pair)
#
# 1. Keep-alive GET hit, 100-byte and 4 KiB values: wrk -t1 -c64 over https.
#    nginx returns the value as its body; tiercache answers GET /cache/{key}
#    as usual (the value inside its JSON answer).
# 2. New TLS connections, one request each (GET, HTTP/1.0, then close):
#    openssl s_time -new (a full handshake every time) and -reuse (resumed
#    with the session of the first connection).
# Each server runs one worker pinned to core 0; the load is pinned to core 1.
# The figure compared is work per server CPU-second (utime + stime from
# /proc over the run), as in bench/http_peers.sh. Writes nothing outside a
# temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
TC_DEPS_BENCH=1 deploy/deps.sh
build=${TC_BUILD_DIR:-build-rel}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target tiercache >/dev/null

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

sh tests/support/tls_certs.sh "$tmp/certs"
c=$tmp/certs
. "$(dirname "$0")/lib.sh" # free_port, cpu_of, nginx_conf_head
v100=$(head -c 100 /dev/zero | tr '\0' 'v')
v4k=$(head -c 4096 /dev/zero | tr '\0' 'v')
v2k=$(head -c 2048 /dev/zero | tr '\0' 'v') # nginx's config takes tokens under 4 KiB

np=$(free_port)
{
    nginx_conf_head "$tmp"
    cat <<NGX
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$np ssl;
        ssl_certificate $c/server.pem;
        ssl_certificate_key $c/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location = /100 { default_type application/json; return 200 '$v100'; }
        location = /4k {
            default_type application/json;
            set \$h '$v2k';
            return 200 "\$h\$h";
        }
        location = /health { default_type application/json; return 200 '{"status":"ok"}'; }
    }
}
NGX
} >"$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -p "$tmp"

taskset -c 0 "$build/tiercache" --listen 127.0.0.1:0 --listen-tls 127.0.0.1:0 --workers 1 \
    --tls-cert "$c/server.pem" --tls-key "$c/server.key" --tier "mem://?size=64M" \
    2>"$tmp/tc.log" &
tc_pid=$!
pids+=("$tc_pid")
tp=""
for _ in $(seq 100); do
    tp=$(grep -o 'listening for TLS on 127.0.0.1:[0-9]*' "$tmp/tc.log" 2>/dev/null | cut -d: -f2 || true)
    [ -n "$tp" ] && break
    sleep 0.1
done
[ -n "$tp" ] || { echo "tiercache did not start" >&2; cat "$tmp/tc.log" >&2; exit 1; }
for kv in "b100:$v100" "b4k:$v4k"; do
    curl -sf --cacert "$c/ca.pem" -X PUT -H 'Content-Type: application/json' \
        -d "{\"value\":\"${kv#*:}\",\"ttl\":3600}" "https://127.0.0.1:$tp/cache/${kv%%:*}" >/dev/null
done
curl -sf --cacert "$c/ca.pem" "https://127.0.0.1:$tp/cache/b100" >/dev/null
curl -sf --cacert "$c/ca.pem" "https://127.0.0.1:$np/100" >/dev/null

proto() { timeout 10 openssl s_client -connect "127.0.0.1:$1" -brief </dev/null 2>&1 | awk -F': ' '/^(Protocol version|Ciphersuite)/ {printf "%s ", $2}'; }
echo "negotiated: nginx $(proto "$np")/ tiercache $(proto "$tp")" >&2

ngx_master=$(cat "$tmp/nginx.pid")
mapfile -t ngx < <(echo "$ngx_master"; pgrep -P "$ngx_master")

# One measurement: sets $n (requests or connections done) and $cpu (server
# CPU seconds over it). wrk URL PIDS... | stime new|reuse PORT PAGE PIDS...
wrk1() {
    local url=$1 out c0 c1
    shift
    c0=$(cpu_of "$@")
    out=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" "$url")
    c1=$(cpu_of "$@")
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')
}
stime1() {
    local mode=$1 port=$2 page=$3 out c0 c1
    shift 3
    c0=$(cpu_of "$@")
    out=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$port" "-$mode" -time "$secs" \
        -www "$page" 2>&1)
    c1=$(cpu_of "$@")
    n=$(echo "$out" | awk '/connections in [0-9.]+s;/ {print $1; exit}')
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')
}
# compare WHAT TARGET UNIT NGINX-CMD... -- TIERCACHE-CMD...: $rounds rounds,
# nginx then tiercache in each (so that a change of machine load hits both),
# sums and ratio of work per server CPU-second.
compare() {
    local what=$1 target=$2 unit=$3 ncmd=() tcmd=() nn=0 nc=0 tn=0 tc=0
    shift 3
    while [ "$1" != -- ]; do ncmd+=("$1"); shift; done
    shift
    tcmd=("$@")
    for _ in $(seq "$rounds"); do
        "${ncmd[@]}"; nn=$((nn + n)); nc=$(awk -v a="$nc" -v b="$cpu" 'BEGIN { print a + b }')
        "${tcmd[@]}"; tn=$((tn + n)); tc=$(awk -v a="$tc" -v b="$cpu" 'BEGIN { print a + b }')
    done
    awk -v w="$what" -v g="$target" -v u="$unit" -v nn="$nn" -v nc="$nc" -v tn="$tn" -v tc="$tc" \
        -v t="$((rounds * secs))" 'BEGIN {
        np = nc > 0 ? nn / nc : 0; tp = tc > 0 ? tn / tc : 0
        printf "%-24s nginx %8.0f %s/s %7.0f per CPU-s | tiercache %8.0f %s/s %7.0f per CPU-s | ratio %.2f (target >= %s)\n",
            w, nn / t, u, np, tn / t, u, tp, (np > 0 ? tp / np : 0), g }'
}

rounds=${TC_ROUNDS:-3}
echo "HTTPS, servers on core 0, load on core 1, $rounds rounds of ${secs}s each (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
compare "keep-alive GET 100 B" 1.0 req wrk1 "https://127.0.0.1:$np/100" "${ngx[@]}" -- \
    wrk1 "https://127.0.0.1:$tp/cache/b100" "$tc_pid"
compare "keep-alive GET 4 KiB" 1.0 req wrk1 "https://127.0.0.1:$np/4k" "${ngx[@]}" -- \
    wrk1 "https://127.0.0.1:$tp/cache/b4k" "$tc_pid"
compare "new connections" 0.8 conn stime1 new "$np" /100 "${ngx[@]}" -- \
    stime1 new "$tp" /cache/b100 "$tc_pid"
compare "resumed connections" 0.8 conn stime1 reuse "$np" /100 "${ngx[@]}" -- \
    stime1 reuse "$tp" /cache/b100 "$tc_pid"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
curl -sf "http://127.0.0.1:$(grep -o 'listening on 127.0.0.1:[0-9]*' "$tmp/tc.log" | cut -d: -f2)/metrics" |
    grep -E '^tiercache_tls_' >&2 || true
