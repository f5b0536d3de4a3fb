# SPDX-License-Identifier: BSD-2-Clause
# Sourced by the shell tests: start a tiercache on a free loopback port.
#   tc_server_start BIN LOG ARGS...   sets $pid and $port; returns 1 (log
#                                     printed) if it is not listening in 10 s
# The caller's cleanup kills $pid.
tc_server_start() {
    _bin=$1
    _log=$2
    shift 2
    "$_bin" --listen 127.0.0.1:0 "$@" >"$_log" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$_log")
        [ -n "$port" ] && return 0
        sleep 0.1
    done
    cat "$_log" >&2
    return 1
}

# tc_test_begin PREFIX: sets $tmp (a new temp dir), $seg (PREFIX + pid, a
# segment name) and $pid (empty); on exit, Ctrl-C or kill, the server in
# $pid is stopped, tc_test_cleanup_extra runs if the test defines it, and
# the segment and the temp dir are removed.
tc_test_begin() {
    tmp=$(mktemp -d)
    seg="$1$$"
    pid=
    trap tc_test_end EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

tc_test_end() {
    if command -v tc_test_cleanup_extra >/dev/null 2>&1; then
        tc_test_cleanup_extra
    fi
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -f "/dev/shm/$seg"
    rm -rf "$tmp"
}

# fail MESSAGE: says so on stderr and ends the test (exit 1).
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
