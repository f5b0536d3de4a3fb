#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: `cmake --install` into a temp prefix puts in place what an
# operator and a library user need, and a program built only with
# `pkg-config --cflags --libs tiercache` against that prefix reads a value
# that was written over HTTP into the server's shm L1.
#   install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
. "$src/tests/support/server.sh"
tc_test_begin tc17inst

cmake --install "$build" --prefix "$tmp/p" >"$tmp/install.log" 2>&1 || {
    cat "$tmp/install.log"
    fail "cmake --install"
}
echo "installed files:"
(cd "$tmp/p" && find . \( -type f -o -type l \) | sort | sed 's/^\.\//  /')
for f in sbin/tiercache bin/tiercache-burst etc/tiercache/tiercache.conf \
    lib/systemd/system/tiercache.service include/tiercache/l1.h \
    share/bash-completion/completions/tiercache share/doc/tiercache/LICENSE; do
    [ -e "$tmp/p/$f" ] || fail "$f not installed"
done
ls "$tmp/p"/lib*/libtiercache.a >/dev/null || fail "static library not installed"
so=$(ls "$tmp/p"/lib*/libtiercache.so.1 2>/dev/null) || fail "libtiercache.so.1 not installed"
# The soname carries the ABI version, and the library needs libc and libxxhash only.
objdump -p "$so" | grep -q 'SONAME *libtiercache.so.1' || fail "soname is not libtiercache.so.1"
needed=$(objdump -p "$so" | awk '/NEEDED/ {print $2}' | grep -v -E '^(libc|libxxhash|libpthread|librt)\.so' || true)
[ -z "$needed" ] || fail "libtiercache needs more than libc and libxxhash: $needed"
# Only the documented API is exported.
extra=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDB]/ {print $3}' | grep -v '^tc_l1_' || true)
[ -z "$extra" ] || fail "libtiercache exports more than tc_l1_*: $extra"
if command -v man >/dev/null && [ -d "$tmp/p/share/man" ]; then
    for m in man8/tiercache.8 man1/tiercache-bench.1 man1/tiercache-burst.1 man3/libtiercache.3; do
        [ -f "$tmp/p/share/man/$m" ] || fail "man page $m not installed"
    done
fi
unit="$tmp/p/lib/systemd/system/tiercache.service"
grep -q "ExecStart=$tmp/p/sbin/tiercache" "$unit" || fail "the unit does not name the installed binary"
# The installed unit verifies (its binary and man page exist) and its
# sandbox scores at most 2.0 (tests/package/package.sh checks the packaged one).
if command -v systemd-analyze >/dev/null; then
    MANPATH="$tmp/p/share/man" systemd-analyze verify "$unit" >"$tmp/verify.log" 2>&1 || {
        cat "$tmp/verify.log"
        fail "systemd-analyze verify"
    }
    score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null |
        sed -n 's/.*Overall exposure level for tiercache.service: \([0-9.]*\).*/\1/p')
    echo "unit exposure: $score"
    [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure '$score' > 2.0"
fi

# The example, built against the prefix only.
libdir=$(dirname "$so")
export PKG_CONFIG_PATH="$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs tiercache) || fail "pkg-config tiercache"
cc -std=c11 -Wall -Werror -o "$tmp/l1_get" "$src/tests/install/l1_get.c" $flags ||
    fail "the example does not build with: $flags"

# The static library: the same example linked against libtiercache.a with
# what `pkg-config --static` lists, and no libtiercache.so at run time.
sflags=$(pkg-config --static --cflags --libs-only-other --libs-only-L tiercache)
slibs=$(pkg-config --static --libs-only-l tiercache | sed 's/-ltiercache//')
cc -std=c11 -Wall -Werror -o "$tmp/l1_get_static" "$src/tests/install/l1_get.c" $sflags \
    "$libdir/libtiercache.a" $slibs || fail "the example does not link statically"
if ldd "$tmp/l1_get_static" | grep -q libtiercache; then
    fail "the static example still needs libtiercache.so"
fi

# A server from this build writes a value over HTTP; the example reads it.
tc_server_start "$build/tiercache" "$tmp/server.log" --workers 1 --tier "shm://$seg?size=8M" \
    --tier "lmdb://$tmp/l2?map_size=16M" || fail "server did not start"
curl -sf -X PUT -H 'Content-Type: application/json' \
    --data '{"value":"hello from HTTP","ttl":60}' "http://127.0.0.1:$port/cache/greeting" >/dev/null ||
    fail "PUT over HTTP"
curl -sf -X PUT -H 'Content-Type: application/json' \
    --data '{"value":{"n":[1,2,3]},"ttl":60}' "http://127.0.0.1:$port/cache/doc" >/dev/null ||
    fail "PUT over HTTP"
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/l1_get" "$seg" greeting) || fail "example: $out"
echo "$out" | head -1 | grep -qx 'hello from HTTP' || fail "example read '$out'"
echo "$out" | grep -q 'encoding=1' || fail "string encoding not reported: $out"
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/l1_get" "$seg" doc) || fail "example: $out"
echo "$out" | head -1 | grep -qx '{"n":\[1,2,3\]}' || fail "example read '$out'"
echo "$out" | grep -q 'encoding=2' || fail "json encoding not reported: $out"
out=$("$tmp/l1_get_static" "$seg" greeting) || fail "static example: $out"
echo "$out" | head -1 | grep -qx 'hello from HTTP' || fail "static example read '$out'"
set +e
LD_LIBRARY_PATH="$libdir" "$tmp/l1_get" "$seg" nosuchkey 2>/dev/null
rc=$?
set -e
[ "$rc" = 1 ] || fail "a missing key gave exit $rc, not 1 (miss)"
# The other way: a value the library stores is what the server serves.
LD_LIBRARY_PATH="$libdir" "$tmp/l1_get" "$seg" fromlib "written by libtiercache" ||
    fail "tc_l1_set"
got=$(curl -sf "http://127.0.0.1:$port/cache/fromlib") || fail "GET of a value the library set"
echo "$got" | grep -q '"value":"written by libtiercache"' || fail "server served '$got'"
echo "install: ok"
