#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: the Debian package. Builds it from a copy of the tree with
# dpkg-buildpackage (one Release build, no tests), runs lintian, installs it
# with dpkg -i on this machine (root only), checks what an operator gets
# (binary, conffile, unit, user, state dir), runs `systemd-analyze verify`
# and `security --offline` on the installed unit, and purges it again.
#   package.sh SOURCE_DIR       (from deploy/test.sh; TC_SKIP_PACKAGE=1 skips)
set -eu
src=$(cd "$1" && pwd)
max_exposure=${TC_MAX_EXPOSURE:-2.0}
tmp=$(mktemp -d)
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then
        dpkg --purge tiercache libtiercache-dev libtiercache1 >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
if [ "$(id -u)" != 0 ]; then
    echo "package: skipped (dpkg -i needs root)"
    exit 0
fi
if dpkg-query -W -f='${Status}' tiercache 2>/dev/null | grep -q 'install ok installed'; then
    echo "package: skipped (a tiercache package is installed here; not replacing it)"
    exit 0
fi

mkdir "$tmp/tiercache-0.1.0"
(cd "$src" && tar --exclude='./build*' --exclude=./.git --exclude=./data -cf - .) |
    (cd "$tmp/tiercache-0.1.0" && tar -xf -)
cd "$tmp/tiercache-0.1.0"
dpkg-checkbuilddeps || fail "build dependencies missing (deploy/deps.sh installs them)"
echo "== package: dpkg-buildpackage"
if ! nice -n 19 dpkg-buildpackage -b -uc -us -j"$(nproc)" >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log"
    fail "dpkg-buildpackage"
fi
cd "$tmp"
ls ./*.deb
echo "== package: lintian"
lintian --tag-display-limit 0 ./*.changes 2>&1 | tee "$tmp/lintian.log" || true
if grep -q '^E:' "$tmp/lintian.log"; then
    fail "lintian reports errors"
fi

echo "== package: dpkg -i"
installed=1
dpkg -i ./tiercache_*.deb ./libtiercache1_*.deb ./libtiercache-dev_*.deb >"$tmp/dpkg.log" 2>&1 || {
    cat "$tmp/dpkg.log"
    fail "dpkg -i"
}
echo "installed files:"
dpkg -L tiercache libtiercache1 libtiercache-dev | sort -u | while read -r f; do
    [ -z "$f" ] || [ -d "$f" ] || echo "  $f"
done
[ -x /usr/sbin/tiercache ] || fail "/usr/sbin/tiercache"
dpkg-query -W -f='${Conffiles}\n' tiercache | grep -q '/etc/tiercache/tiercache.conf' ||
    fail "/etc/tiercache/tiercache.conf is not a conffile"
getent passwd tiercache >/dev/null || fail "no tiercache user"
[ "$(stat -c %U /var/lib/tiercache)" = tiercache ] || fail "/var/lib/tiercache is not tiercache's"
unit=/lib/systemd/system/tiercache.service
[ -f "$unit" ] || fail "$unit"
/usr/sbin/tiercache -t --config /etc/tiercache/tiercache.conf || fail "the shipped config fails -t"
/usr/sbin/tiercache --version | grep -q '^tiercache ' || fail "--version"

echo "== package: systemd-analyze verify"
if ! systemd-analyze verify "$unit" >"$tmp/verify.log" 2>&1; then
    cat "$tmp/verify.log"
    fail "systemd-analyze verify $unit"
fi
# Nothing about our unit may appear (other units of the machine may warn).
if grep -i 'tiercache' "$tmp/verify.log"; then
    fail "systemd-analyze verify complains about the unit"
fi
echo "== package: systemd-analyze security --offline"
systemd-analyze security --offline=true "$unit" >"$tmp/security.log" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for tiercache.service: \([0-9.]*\).*/\1/p' "$tmp/security.log")
[ -n "$score" ] || {
    cat "$tmp/security.log"
    fail "no exposure score"
}
echo "exposure: $score (at most $max_exposure)"
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }' || {
    grep '✗' "$tmp/security.log"
    fail "exposure $score > $max_exposure"
}

echo "== package: purge"
dpkg --purge tiercache libtiercache-dev libtiercache1 >/dev/null || fail "dpkg --purge"
installed=0
[ ! -e /usr/sbin/tiercache ] || fail "purge left /usr/sbin/tiercache"
[ ! -e /etc/tiercache/tiercache.conf ] || fail "purge left the conffile"
echo "package: ok"
