#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The closing-note report of issue 18: shm, shm+lmdb and shm+lmdb+redis on
# two workloads, with a private redis-server on a free loopback port
# (started here, stopped on exit), written to OUT (default
# docs/bench-report). The L1 (4M) and L2 (a 32M map) are smaller than the
# keyspace (about 60 MB of values), so that each lower tier has misses above
# it to serve: "zipf-prefilled" starts with every tier full (the steady
# state, closed loop), "zipf-cold-open-2k" starts cold, cache-aside, at a
# rate every stack sustains (open loop: latency from the intended send).
#
#   bench/tier_report.sh [BUILD_DIR] [OUT]
#
# Run it under the shared lock: flock /work/notes/bench.lock bench/tier_report.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build-rel}
out=${2:-$here/docs/bench-report}
bench="$build/tiercache-bench"
[ -x "$bench" ] || { echo "tier_report: no $bench (cmake --build $build)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/tc-tier-report-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$tmp" \
    >"$tmp/redis.log" 2>&1 &
rpid=$!
cleanup() { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
l1="shm://tc-report?size=4M"
l2="lmdb://$tmp/l2?map_size=32M&sync=periodic"
l3="redis://127.0.0.1:$port/0?prefix=tcr:&timeout_ms=1000"
cat >"$tmp/run.json" <<JSON
{
  "stacks": [
    {"name": "shm", "tiers": ["$l1"]},
    {"name": "shm+lmdb", "tiers": ["$l1", "$l2"]},
    {"name": "shm+lmdb+redis", "tiers": ["$l1", "$l2", "$l3"]}
  ],
  "workloads": [
    {"name": "zipf-prefilled", "keys": 50000, "zipf": 0.99, "prefill": true,
     "value_size": {"weighted": [[100, 6], [1024, 3], [8192, 1]]},
     "ttl": {"uniform": [300, 3600]}, "mix": {"get": 0.90, "set": 0.08, "delete": 0.02},
     "warmup": 1, "seconds": 4, "threads": 1, "inflight": 16,
     "sim": {"sizes": ["1M", "2M", "4M", "8M", "16M", "32M", "64M"], "requests": 2000000}},
    {"name": "zipf-cold-open-2k", "keys": 50000, "zipf": 0.99,
     "value_size": {"weighted": [[100, 6], [1024, 3], [8192, 1]]},
     "ttl": {"uniform": [300, 3600]}, "mix": {"get": 0.90, "set": 0.08, "delete": 0.02},
     "warmup": 1, "seconds": 4, "threads": 1, "inflight": 64, "rate": 2000}
  ],
  "repeat": 3
}
JSON
"$bench" run "$tmp/run.json" --out "$out" --quiet
# The run file goes with the report, the loopback port and temp dir made generic.
sed -e "s|$tmp|/tmp/tc-tier-report|g" -e "s|127.0.0.1:$port|127.0.0.1:PORT|g" "$tmp/run.json" \
    >"$out/run.json"
left=$(redis-cli -p "$port" --scan --pattern 'tcr:*' | wc -l)
echo "tier_report: $out/report.md; Redis keys left under tcr:: $left; shm segments left: $(ls /dev/shm | grep -c '^tc-report' || true)"
