#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: every binary answers --version and -h/--help with exit 0 and
# says who it is (tiercache-bench is checked by its own tests, issue 18).
#   tools.sh BINARY...
set -u
failed=0
for bin in "$@"; do
    name=$(basename "$bin")
    for v in --version -V; do
        out=$("$bin" $v 2>&1)
        rc=$?
        if [ "$rc" != 0 ] || ! echo "$out" | grep -q "^$name [0-9]"; then
            echo "FAIL: $name $v: exit $rc: $out" >&2
            failed=1
        fi
    done
    for h in -h --help; do
        out=$("$bin" $h 2>&1)
        rc=$?
        if [ "$rc" != 0 ] || ! echo "$out" | grep -q -i "usage: $name"; then
            echo "FAIL: $name $h: exit $rc: $out" >&2
            failed=1
        fi
    done
done
# Subcommands too.
bin=$1
for sub in top; do
    "$bin" $sub --help 2>&1 | grep -q "Usage: tiercache $sub" || {
        echo "FAIL: tiercache $sub --help" >&2
        failed=1
    }
done
# bash completion: subcommands, option names (from --help), option values.
completion="$(dirname "$0")/../../deploy/tiercache.bash-completion"
if command -v bash >/dev/null; then
    out=$(PATH="$(dirname "$bin"):$PATH" bash -c '
        . "$1"
        try() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _tiercache; echo "${COMPREPLY[*]}"; }
        try tiercache t
        try tiercache --log-level d
        try tiercache --check
        try tiercache --access-log-format j' _ "$completion")
    expected="top
debug
--check-config
json"
    [ "$out" = "$expected" ] || {
        echo "FAIL: bash completion gave: $out" >&2
        failed=1
    }
fi
[ "$failed" = 0 ] && echo "tools: ok"
exit $failed
