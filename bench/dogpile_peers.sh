#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Dogpile: a herd of clients asks for the same cold key at the same moment,
# in front of one slow origin (tc-test-origin --delay-ms 200, Cache-Control
# max-age=60). Side by side in the same run:
#   nginx      proxy_cache + proxy_cache_lock on (lock timeout 30 s)
#   varnish    request coalescing (its default waiting list)
#   tiercache  --origin (skipped, with the reason, if this build refuses it)
# Each server: ROUNDS rounds, each with a fresh key, one tiercache-burst of
# CLIENTS clients; then the origin's request count (goal: 1 per round) and
# the herd's p50/p99 latency. Servers are pinned to core 0 (one worker
# each), the origin and the burst client to core 1.
#
#   bench/dogpile_peers.sh [ROUNDS] [CLIENTS]
#
# Environment: TC_BUILD_DIR (default build, as deploy/run.sh), TC_DOGPILE_DELAY_MS (200),
# TC_BENCH_SHM (the shm segment name, default tc-dogpile-PID), TMPDIR,
# TC_DOGPILE_TC_ARGS (extra tiercache arguments, e.g. a lock scope).
# Prints a per-round log on stderr and the table on stdout; writes nothing
# outside a temp dir; everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-5}
clients=${2:-200}
delay=${TC_DOGPILE_DELAY_MS:-200}
TC_DEPS_BENCH=1 deploy/deps.sh
build=${TC_BUILD_DIR:-build}
shm=${TC_BENCH_SHM:-tc-dogpile-$$}
# tc-test-origin is built with the tests (it is their origin too).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target tiercache tiercache-burst tc-test-origin >/dev/null

tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx and varnishd workers read their files as unprivileged users
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$tmp/varnish.pid" ]; then kill "$(cat "$tmp/varnish.pid")" 2>/dev/null || true; fi
    if [ -f "$tmp/nginx.pid" ]; then kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true; fi
    "$build/tiercache" shm unlink "$shm" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
# Ctrl-C or kill: exit through the EXIT trap, so nothing is left behind.
trap 'exit 130' INT
trap 'exit 143' TERM

. "$(dirname "$0")/lib.sh" # free_port, wait_port, cpu_of, nginx_conf_head

# The origin.
taskset -c 1 "$build/tests/tc-test-origin" --listen 127.0.0.1:0 --delay-ms "$delay" \
    --cache-control 'max-age=60' >"$tmp/origin.log" 2>&1 &
pids+=($!)
op=$(wait_port "$tmp/origin.log" "$!")
[ -n "$op" ] || { echo "tc-test-origin did not start"; cat "$tmp/origin.log"; exit 1; }
origin="http://127.0.0.1:$op"

# nginx: /cache/KEY → origin /KEY, cached, one fill at a time per key.
np=$(free_port)
{
    nginx_conf_head "$tmp"
    cat <<EOF
    proxy_cache_path $tmp/nginx-cache levels=1:2 keys_zone=dogpile:10m max_size=256m
                     inactive=10m use_temp_path=off;
    upstream origin { server 127.0.0.1:$op; keepalive 32; }
    server {
        listen 127.0.0.1:$np backlog=4096;
        location /cache/ {
            proxy_pass http://origin/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache dogpile;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_lock_age 30s;
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
EOF
} >"$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -p "$tmp"

# Varnish: the same mapping; coalescing needs no configuration.
vp=$(free_port)
cat >"$tmp/default.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$op"; .first_byte_timeout = 30s; }
sub vcl_recv { set req.url = regsub(req.url, "^/cache/", "/"); }
sub vcl_deliver {
    if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; }
}
EOF
chmod 644 "$tmp/default.vcl"
taskset -c 0 varnishd -a "127.0.0.1:$vp" -f "$tmp/default.vcl" -n "$tmp/varnish" \
    -P "$tmp/varnish.pid" -s malloc,64m -p thread_pools=1 -p thread_pool_min=100 \
    -p listen_depth=4096 >"$tmp/varnish.log" 2>&1 || { cat "$tmp/varnish.log"; exit 1; }

# tiercache: one worker on core 0, reading through to the origin.
tcp=""
tc_skip=""
# shellcheck disable=SC2086 # TC_DOGPILE_TC_ARGS is a list of arguments
taskset -c 0 "$build/tiercache" --listen 127.0.0.1:0 --workers 1 --origin "$origin" \
    --tier "shm://$shm?size=64M" ${TC_DOGPILE_TC_ARGS:-} 2>"$tmp/tc.log" &
tc_pid=$!
pids+=("$tc_pid")
tcp=$(wait_port "$tmp/tc.log" "$tc_pid")
if [ -z "$tcp" ]; then
    tc_skip=$(grep -m1 -i -E 'origin|unknown|error|usage' "$tmp/tc.log" || head -1 "$tmp/tc.log" || true)
    echo "tiercache: skipped: this build does not run with --origin ($tc_skip)" >&2
fi

# Both peers answer before the rounds start (cold keys are per round).
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$np/cache/warmup" &&
        curl -sf -o /dev/null "http://127.0.0.1:$vp/cache/warmup" && break
    sleep 0.1
done

results="$tmp/results"
: >"$results"
round() { # name port round
    local key="dp-$1-$3-$$-$RANDOM" out n
    curl -sf -X POST "$origin/__reset" >/dev/null
    out=$(taskset -c 1 timeout 120 "$build/tiercache-burst" -c "$clients" --timeout-ms 30000 \
        --url "http://127.0.0.1:$2/cache/$key" --count-header X-Cache)
    n=$(curl -sf "$origin/__stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
    echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
name, rnd, n = sys.argv[1], sys.argv[2], sys.argv[3]
l = r["latency_ms"]
print(name, rnd, n, l["p50"], l["p99"], r["ok"], r["errors"])
print("%-10s round %s: origin requests %3s   p50 %8.1f ms   p99 %8.1f ms   ok %d/%d  X-Cache %s"
      % (name, rnd, n, l["p50"], l["p99"], r["ok"], r["clients"],
         json.dumps(r["headers"]["X-Cache"]["values"], sort_keys=True)), file=sys.stderr)
' "$1" "$3" "$n" >>"$results"
}

echo "dogpile: $clients clients x $rounds rounds, a cold key per round, origin delay ${delay} ms," \
    "max-age=60 (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
for r in $(seq "$rounds"); do
    round nginx "$np" "$r"
    round varnish "$vp" "$r"
    if [ -n "$tcp" ]; then round tiercache "$tcp" "$r"; fi
done

python3 - "$results" "$tc_skip" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {}
for name, rnd, n, p50, p99, ok, err in rows:
    by.setdefault(name, []).append((int(n), float(p50), float(p99), int(ok), int(err)))
print("%-10s %-24s %10s %10s %8s" % ("server", "origin requests/round", "p50 ms", "p99 ms", "errors"))
med = {}
for name in ("nginx", "varnish", "tiercache"):
    if name not in by:
        continue
    rs = by[name]
    p50 = statistics.median(r[1] for r in rs)
    p99 = statistics.median(r[2] for r in rs)
    med[name] = p99
    print("%-10s %-24s %10.1f %10.1f %8d" % (name, " ".join(str(r[0]) for r in rs), p50, p99,
                                             sum(r[4] for r in rs)))
print("(p50/p99: median over rounds; goal: 1 origin request per round)")
if "tiercache" in med:
    for peer in ("nginx", "varnish"):
        if peer in med and med[peer] > 0:
            print("tiercache p99 / %s p99 = %.2f" % (peer, med["tiercache"] / med[peer]))
else:
    print("tiercache: skipped (%s)" % (sys.argv[2] or "did not start"))
EOF
