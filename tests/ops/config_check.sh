#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: `tiercache -t` checks a config as `nginx -t` does (exit 0 and
# "configuration ok", or exit 2 naming the problem, opening nothing), and
# -T / --describe-config print the effective settings (file + command line),
# not the built-in defaults.
#   config_check.sh TIERCACHE
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}
# expect RC PATTERN(stdout+stderr) ARGS...
expect() {
    want=$1
    pat=$2
    shift 2
    "$bin" "$@" >"$tmp/out" 2>&1
    rc=$?
    [ "$rc" = "$want" ] || fail "tiercache $*: exit $rc, want $want: $(cat "$tmp/out")"
    grep -q -E -- "$pat" "$tmp/out" || fail "tiercache $*: no /$pat/ in: $(cat "$tmp/out")"
}

seg="tc17chk$$"
cat >"$tmp/good.conf" <<CONF
[server]
listen = 127.0.0.1:18080
default-ttl = 150
tier = shm://$seg?size=8M&ttl_ratio=0.5
tier = lmdb://$tmp/l2?map_size=16M
access-log = $tmp/access.log
CONF
printf '[server]\ndefault-ttl = banana\n' >"$tmp/bad_value.conf"
printf '[server]\nno-such-setting = 1\n' >"$tmp/unknown.conf"
printf '[server]\ntier = lmdb://%s/x?mapsize=4G\n' "$tmp" >"$tmp/bad_param.conf"
printf '[server]\ntier = nosuch://x\n' >"$tmp/bad_scheme.conf"
printf '[server]\ntier = shm://x?size=lots\n' >"$tmp/bad_size.conf"
printf '[server]\naccess-log = /nonexistent-dir/a.log\n' >"$tmp/bad_log.conf"
printf '[server]\naccess-log-format = xml\n' >"$tmp/bad_format.conf"

expect 0 'configuration file .*good.conf ok' -t --config "$tmp/good.conf"
expect 0 'configuration file .*good.conf ok' --check-config --config "$tmp/good.conf"
# -t opened nothing: no segment, no LMDB directory, no access log.
[ ! -e "/dev/shm/$seg" ] || fail "-t created the shm segment"
[ ! -e "$tmp/l2" ] || fail "-t created the LMDB directory"
[ ! -e "$tmp/access.log" ] || fail "-t created the access log"
expect 2 "bad value 'banana' for default-ttl" -t --config "$tmp/bad_value.conf"
expect 2 'configuration test failed' -t --config "$tmp/bad_value.conf"
expect 2 "unknown setting 'no-such-setting'" -t --config "$tmp/unknown.conf"
expect 2 "unknown parameter 'mapsize' for lmdb://" -t --config "$tmp/bad_param.conf"
expect 2 'nosuch' -t --config "$tmp/bad_scheme.conf"
expect 2 "size" -t --config "$tmp/bad_size.conf"
expect 2 "access-log '/nonexistent-dir/a.log'" -t --config "$tmp/bad_log.conf"
expect 2 "bad value 'xml' for access-log-format" -t --config "$tmp/bad_format.conf"
expect 2 "cannot read config file" -t --config "$tmp/missing.conf"
# The command line is checked too, and wins.
expect 2 "bad value 'x' for grace" -t --config "$tmp/good.conf" --grace x

# -T: the file's values and the command line's, one effective config.
expect 0 'default-ttl = 150s' -T --config "$tmp/good.conf" --grace 7
expect 0 'grace = 7s' -T --config "$tmp/good.conf" --grace 7
expect 0 "tier = shm://$seg" -T --config "$tmp/good.conf"
expect 0 'listen = 127.0.0.1:18080' -T --config "$tmp/good.conf"
expect 0 'listen = 127.0.0.1:9' -T --config "$tmp/good.conf" --listen 127.0.0.1:9
expect 2 'test failed' -T --config "$tmp/bad_param.conf"
# A password in a tier URI is not printed.
expect 0 'redis://:\*\*\*@|redis://:xxx@|\*\*\*' -T --tier 'redis://:s3cret@127.0.0.1:6379/0'
if "$bin" -T --tier 'redis://:s3cret@127.0.0.1:6379/0' 2>&1 | grep -q s3cret; then
    fail "-T printed a tier password"
fi
# --describe-config shows the file's value, not the default (it printed 3600 before).
expect 0 '^default-ttl = 150s' --describe-config --config "$tmp/good.conf"
# -h and -V.
expect 0 'Usage: tiercache' -h
expect 0 '^tiercache [0-9]' -V
expect 0 '^tiercache [0-9]' --version
[ "$failed" = 0 ] && echo "config_check: ok"
exit $failed
