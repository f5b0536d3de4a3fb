#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: `tiercache top` against a running server: the full-screen view
# under tmux (capture-pane shows the tier table and counts that move; q
# quits), `top -1` (one text snapshot, exit 0), and a server that is not
# there (exit 1 with the reason).
#   top.sh TIERCACHE
set -u
bin=$1
. "$(dirname "$0")/../support/server.sh"
tc_test_begin tc17top
sess="tc17top$$"
tc_test_cleanup_extra() {
    tmux kill-session -t "$sess" 2>/dev/null
}
# Failures show the screen as it was.
fail() {
    echo "FAIL: $*" >&2
    [ -f "$tmp/pane" ] && cat "$tmp/pane" >&2
    exit 1
}
tc_server_start "$bin" "$tmp/server.log" --workers 1 --tier "shm://$seg?size=8M" ||
    fail "server did not start"
url="http://127.0.0.1:$port"
traffic() {
    for i in 1 2 3 4 5; do
        curl -s -X PUT -H 'Content-Type: application/json' --data '{"value":1}' "$url/cache/k$i" >/dev/null
        curl -s "$url/cache/k$i" >/dev/null
        curl -s "$url/cache/missing$i" >/dev/null
    done
}
traffic

# -1: one snapshot on stdout.
"$bin" top -1 -i 0.2 "$url" >"$tmp/once" 2>&1 || fail "top -1 exit $?: $(cat "$tmp/once")"
grep -q "^tiercache .* at $url" "$tmp/once" || fail "top -1 header: $(cat "$tmp/once")"
grep -q '^TIER .*HEALTH .*OPS/S .*HIT% .*P50 .*P99' "$tmp/once" || fail "top -1 table: $(cat "$tmp/once")"
grep -q '^l1 *ok ' "$tmp/once" || fail "top -1 tier row: $(cat "$tmp/once")"
grep -q 'requests by status: .*200 [0-9]' "$tmp/once" || fail "top -1 statuses: $(cat "$tmp/once")"
grep -q '404 5' "$tmp/once" || fail "top -1 did not count the 5 misses (404): $(cat "$tmp/once")"
grep -q '^dogpile' "$tmp/once" || fail "top -1 dogpile: $(cat "$tmp/once")"

# Not there: exit 1 and the reason.
"$bin" top -1 http://127.0.0.1:1 >"$tmp/down" 2>&1
rc=$?
[ "$rc" = 1 ] || fail "top against nothing: exit $rc"
grep -q 'connect to 127.0.0.1:1' "$tmp/down" || fail "top against nothing: $(cat "$tmp/down")"

# The full-screen view under tmux.
tmux new-session -d -s "$sess" -x 120 -y 30 "$bin top -i 0.3 $url; echo TOP-EXITED \$?; sleep 30" ||
    fail "tmux new-session"
# pane_shows PATTERN...: waits up to 5 s for the pane to hold every pattern.
pane_shows() {
    for _ in $(seq 50); do
        tmux capture-pane -p -t "$sess" >"$tmp/pane"
        all=1
        for p in "$@"; do
            grep -q -- "$p" "$tmp/pane" || all=0
        done
        [ "$all" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}
pane_shows '^l1 *ok ' 'q: quit' || fail "the view did not show the tier table"
# It refreshes: new requests show in the counts.
traffic
pane_shows '404 10' || fail "the view did not refresh (404 10 never shown)"
tmux send-keys -t "$sess" q
pane_shows 'TOP-EXITED 0' || fail "q did not quit with exit 0"
echo "top: ok"
