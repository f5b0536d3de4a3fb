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
