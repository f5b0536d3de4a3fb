#!/usr/bin/env bash
# Group commit vs one transaction per set (batch=1) for the lmdb:// tier, in
# one invocation so that both sides see the same machine load, plus
# single-thread get hits. Figures only mean something as ratios within one
# run; the load average is printed with them.
#
#   bench/lmdb_group_commit.sh [BUILD_DIR] [SECONDS]
#
# The gets end with tiercache-lmdb-raw on the same data: bare mdb_get, no
# tiercache code, the ceiling the tier's get figures are a fraction of.
#
# sync=always uses a smaller keyspace (--keys 20000) only because the
# bench writes every key once before timing, and with batch=1 every one of
# those writes is an fsync.
set -euo pipefail
build=${1:-build-rel}
secs=${2:-3}
bench="$build/tiercache-bench"
dir=$(mktemp -d /tmp/tc-lmdb-bench-XXXXXX)
trap 'rm -rf "$dir"' EXIT

run() { # label, uri, extra args...
    local label=$1 uri=$2
    shift 2
    rm -rf "$dir/db"
    printf '%-44s ' "$label"
    "$bench" --tier "$uri" --seconds "$secs" "$@" | grep -E '^throughput' | sed 's/^throughput: *//'
}

echo "load before: $(uptime)"
for wm in off on; do
    for sync in always periodic; do
        keys=100000
        [ "$sync" = always ] && keys=20000
        for batch in 1 1024; do
            run "sets sync=$sync writemap=$wm batch=$batch" \
                "lmdb://$dir/db?map_size=1G&sync=$sync&writemap=$wm&batch=$batch" \
                --threads 2 --inflight 64 --read-ratio 0 --keys "$keys" --value-size 100
        done
    done
done
run "gets 1M keys, 1 thread" "lmdb://$dir/db?map_size=2G&sync=none" \
    --threads 1 --inflight 64 --read-ratio 1 --keys 1000000 --value-size 100
run "gets 1M keys, 1 thread, --batch 16" "lmdb://$dir/db?map_size=2G&sync=none" \
    --threads 1 --inflight 64 --read-ratio 1 --keys 1000000 --value-size 100 --batch 16
# The ceiling: bare mdb_get on the environment the last run wrote.
"$build/tiercache-lmdb-raw" "$dir/db" 1000000 "$secs"
echo "load after:  $(uptime)"
