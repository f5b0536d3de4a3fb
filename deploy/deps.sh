#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Installs the Debian packages that building, testing and running tiercache
# need. Idempotent: when everything is present it is a no-op and touches no
# network; apt-get update runs only when something is missing.
set -euo pipefail

# prometheus: only its promtool, which checks /metrics in tests/http/test_metrics.c
# (the package's daemon is not used).
# stunnel4: the documented way to reach Redis over TLS (docs/tiers.md), tested by
# tests/http/redis_stunnel.sh.
pkgs=(
    build-essential cmake pkg-config clang-format
    clang libclang-rt-14-dev
    libevent-dev libhiredis-dev liblmdb-dev libssl-dev
    libjansson-dev libxxhash-dev libcriterion-dev libinih-dev
    liburiparser-dev libhttp-parser-dev libzstd-dev gnuplot-nox
    redis-server redis-tools lmdb-utils curl
    prometheus
    # Issue 17: sd_notify, `tiercache top`, man pages, the Debian package
    # and its checks (lintian, systemd-analyze), the top test (tmux).
    libsystemd-dev libncurses-dev scdoc systemd tmux python3
    dpkg-dev debhelper fakeroot lintian
    # Issue 14: Redis over TLS through a stunnel client tunnel (its test).
    stunnel4
)
# Benchmark peers are only needed by bench/ scripts, never by the tests.
if [ "${TC_DEPS_BENCH:-0}" = 1 ]; then
    pkgs+=(wrk nginx-light varnish)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
