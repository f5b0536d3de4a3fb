#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Group commit vs one transaction per set (batch=1) for the lmdb:// tier, in
# one invocation so that both sides see the same machine load, plus
# single-thread get hits. Figures only mean something as ratios within one
# run; the load average is printed with them.
#
#   bench/lmdb_group_commit.sh [BUILD_DIR] [SECONDS]
#   (BUILD_DIR default: $TC_BUILD_DIR, else build, as deploy/run.sh; the
#   LMDB environments live under $TMPDIR and are removed on any exit)
#   bench/lmdb_group_commit.sh BUILD_DIR SECONDS BASE_BUILD_DIR [ROUNDS]
#
# With a BASE_BUILD_DIR (e.g. today's main built in another worktree), it
# only compares group-commit set throughput of the two builds, sync=periodic
# then sync=always, alternating the binaries ROUNDS times (default 3) so
# that both see the same machine load, and prints the ratio of the means.
#
# The gets end with tiercache-lmdb-raw on the same data: bare mdb_get, no
# tiercache code, the ceiling the tier's get figures are a fraction of.
#
# sync=always uses a smaller keyspace (--keys 20000) only because the
# bench writes every key once before timing, and with batch=1 every one of
# those writes is an fsync.
set -euo pipefail
build=${1:-${TC_BUILD_DIR:-build}}
secs=${2:-3}
bench="$build/tiercache-bench"
dir=$(mktemp -d "${TMPDIR:-/tmp}/tc-lmdb-bench-XXXXXX")
trap 'rm -rf "$dir"' EXIT
# Ctrl-C or kill: exit through the EXIT trap, so the LMDB files go too.
trap 'exit 130' INT
trap 'exit 143' TERM

run() { # label, uri, extra args...
    local label=$1 uri=$2
    shift 2
    rm -rf "$dir/db"
    printf '%-44s ' "$label"
    # --prefill --keep: the keyspace written before timing and left for
    # tiercache-lmdb-raw, as this script has always measured.
    "$bench" --tier "$uri" --seconds "$secs" --prefill --keep "$@" 2>/dev/null |
        grep -E '^throughput' | sed 's/^throughput: *//'
}

if [ $# -ge 3 ]; then
    base="$3/tiercache-bench"
    rounds=${4:-3}
    echo "load before: $(uptime)"
    for sync in periodic always; do
        keys=100000
        [ "$sync" = always ] && keys=20000
        uri="lmdb://$dir/db?map_size=1G&sync=$sync"
        args=(--threads 2 --inflight 64 --read-ratio 0 --keys "$keys" --value-size 100)
        sum_new=0
        sum_base=0
        for r in $(seq 1 "$rounds"); do
            for side in base new; do
                b=$bench
                extra=(--prefill) # the base build always prefilled
                [ "$side" = base ] && b=$base && extra=()
                rm -rf "$dir/db"
                t=$("$b" --tier "$uri" --seconds "$secs" "${extra[@]}" "${args[@]}" 2>/dev/null |
                    sed -n 's/^throughput: *\([0-9.]*\).*/\1/p')
                printf 'sets sync=%-8s round %d %-4s %12s/s\n' "$sync" "$r" "$side" "$t"
                if [ "$side" = base ]; then
                    sum_base=$(echo "$sum_base + $t" | bc -l)
                else
                    sum_new=$(echo "$sum_new + $t" | bc -l)
                fi
            done
        done
        printf 'sets sync=%-8s mean base %.0f/s, new %.0f/s, new/base %.3f\n' "$sync" \
            "$(echo "$sum_base / $rounds" | bc -l)" "$(echo "$sum_new / $rounds" | bc -l)" \
            "$(echo "$sum_new / $sum_base" | bc -l)"
    done
    echo "load after:  $(uptime)"
    exit 0
fi

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
