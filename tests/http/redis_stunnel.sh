#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
# Issue 14 item 6: the redis:// tier over TLS through a stunnel4 client
# tunnel (docs/tiers.md, "Redis over TLS"). Real parts only: certificates
# made here with openssl (a CA, Redis's server certificate, stunnel's client
# certificate), redis-server with tls-port and its plain port closed
# (port 0, tls-auth-clients yes), stunnel4 in client mode from a loopback
# port to Redis's TLS port, and tiercache with its redis:// tier pointed at
# the tunnel. Checks: set/get/del through the server's HTTP API land in
# Redis (read back over TLS with redis-cli --tls), Redis has no plain port,
# plaintext sent to its TLS port gets nothing, and a tunnel that does not
# trust Redis's CA carries nothing.
# Usage: redis_stunnel.sh PATH/TO/tiercache. Exits 77 (skipped) without stunnel4.
set -euo pipefail
bin=$(readlink -f "$1")
for tool in stunnel4 redis-server redis-cli openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "redis_stunnel: SKIP: no $tool (deploy/deps.sh)"; exit 77; }
done

work=$(mktemp -d /tmp/tc-stunnel-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "redis_stunnel: FAIL: $*" >&2
    for f in redis.log stunnel.log tiercache.log; do
        [ -f "$work/$f" ] && { echo "--- $f" >&2; tail -20 "$work/$f" >&2; }
    done
    exit 1
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Waits up to 10 s for a TCP listener on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" \
            2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

cd "$work"
# Certificates: a CA, Redis's server certificate for 127.0.0.1, and the
# client certificate stunnel shows Redis (tls-auth-clients yes).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj /CN=tc-test-ca 2>/dev/null || fail "openssl: CA"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key -out other-ca.crt -days 2 \
    -subj /CN=tc-other-ca 2>/dev/null || fail "openssl: other CA"
for who in redis client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr -subj /CN=$who \
        2>/dev/null || fail "openssl: $who key"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >ext
    openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $who.crt \
        -days 2 -extfile ext 2>/dev/null || fail "openssl: $who certificate"
done
chmod 600 ./*.key

tls_port=$(free_port)
redis-server --port 0 --tls-port "$tls_port" --bind 127.0.0.1 \
    --tls-cert-file redis.crt --tls-key-file redis.key --tls-ca-cert-file ca.crt \
    --tls-auth-clients yes --save '' --appendonly no --dir "$work" >redis.log 2>&1 &
pids+=($!)
wait_port "$tls_port" || fail "redis-server did not listen on its TLS port $tls_port"
rcli=(timeout 10 redis-cli -h 127.0.0.1 -p "$tls_port" --tls --cacert ca.crt --cert client.crt
    --key client.key)
[ "$("${rcli[@]}" PING)" = PONG ] || fail "redis-cli --tls PING"
[ "$("${rcli[@]}" CONFIG GET port | tail -1)" = 0 ] || fail "Redis has a plain port open"
# Plaintext to the TLS port: no answer, ever.
plain=$(timeout 10 redis-cli -h 127.0.0.1 -p "$tls_port" PING 2>&1 || true)
[ "$plain" != PONG ] || fail "the TLS port answered plaintext"

# The tunnel: stunnel in client mode, verifying Redis against the CA.
tun_port=$(free_port)
cat >stunnel.conf <<EOF
foreground = yes
pid =
debug = notice
output = $work/stunnel.log
[redis]
client = yes
accept = 127.0.0.1:$tun_port
connect = 127.0.0.1:$tls_port
CAfile = $work/ca.crt
verifyChain = yes
checkIP = 127.0.0.1
sslVersionMin = TLSv1.2
cert = $work/client.crt
key = $work/client.key
EOF
stunnel4 stunnel.conf >/dev/null 2>&1 &
pids+=($!)
wait_port "$tun_port" || fail "stunnel did not listen on $tun_port"

"$bin" --listen 127.0.0.1:0 --workers 1 \
    --tier "redis://127.0.0.1:$tun_port/0?timeout_ms=3000&connect_timeout_ms=3000" \
    >tiercache.log 2>&1 &
pids+=($!)
port=
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' tiercache.log | head -1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || fail "tiercache did not start"
api="http://127.0.0.1:$port"
c=(curl -sS --max-time 10)

out=$("${c[@]}" -X PUT -H 'Content-Type: application/json' \
    -d '{"value":"over-tls","ttl":300}' "$api/cache/tunnelled") || fail "PUT"
echo "$out" | grep -q '"ok"' || fail "PUT answered $out"
out=$("${c[@]}" "$api/cache/tunnelled") || fail "GET"
echo "$out" | grep -q '"value":"over-tls"' || fail "GET answered $out"
[ "$("${rcli[@]}" EXISTS tc:tunnelled)" = 1 ] || fail "the value is not in Redis"
"${c[@]}" -X DELETE "$api/cache/tunnelled" >/dev/null || fail "DELETE"
[ "$("${rcli[@]}" EXISTS tc:tunnelled)" = 0 ] || fail "DELETE did not reach Redis"
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "$api/cache/tunnelled")
[ "$code" = 404 ] || fail "GET after DELETE: $code"
health=$("${c[@]}" "$api/health")
echo "$health" | grep -q '"down"' && fail "the tier is down: $health"

# A tunnel that does not trust Redis's CA must carry nothing.
bad_port=$(free_port)
sed -e "s/^accept = .*/accept = 127.0.0.1:$bad_port/" -e "s#^CAfile = .*#CAfile = $work/other-ca.crt#" \
    -e "s#^output = .*#output = $work/stunnel-bad.log#" stunnel.conf >bad.conf
stunnel4 bad.conf >/dev/null 2>&1 &
pids+=($!)
wait_port "$bad_port" || fail "the second stunnel did not listen"
bad=$(timeout 10 redis-cli -h 127.0.0.1 -p "$bad_port" PING 2>&1 || true)
[ "$bad" != PONG ] || fail "a tunnel that does not trust the CA reached Redis"
echo "redis_stunnel: 1 passed, 0 failed"
