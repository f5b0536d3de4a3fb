#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Makes the certificates the TLS tests and bench/https_peers.sh use, in DIR
# (created), with the openssl command line: real certificates, made fresh
# each run, EC P-256 keys (fast to make). Files:
#   ca.pem ca.key            the CA that signs the server and the clients
#   other-ca.pem             a second CA, which signed nothing we trust
#   server.pem server.key    CN=localhost, SAN DNS:localhost, IP:127.0.0.1
#   server2.pem              the same key, a new certificate (O=reloaded)
#   expired.pem              the same key, valid only in January 2020
#   app1.pem app1.key        client CN=app1, from ca
#   ops.pem ops.key          client CN=ops, from ca
#   rogue.pem rogue.key      client CN=app1, from other-ca
#   chain.pem                server.pem then ca.pem (a chain)
# Keys are mode 0600.
#   tests/support/tls_certs.sh DIR
set -eu
d=$1
mkdir -p "$d"
cd "$d"
umask 077
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
q() { "$@" >/dev/null 2>&1 || { echo "tls_certs.sh: failed: $*" >&2; "$@"; exit 1; }; }
q openssl req -x509 $ec -keyout ca.key -out ca.pem -subj /CN=tc-test-ca -days 30 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
q openssl req -x509 $ec -keyout other-ca.key -out other-ca.pem -subj /CN=tc-other-ca -days 30 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
san="subjectAltName=DNS:localhost,IP:127.0.0.1"
q openssl req -new $ec -keyout server.key -out server.csr -subj /CN=localhost -addext "$san"
q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 1001 -days 30 \
    -copy_extensions copy -out server.pem
q openssl req -new -key server.key -out server2.csr -subj /CN=localhost/O=reloaded -addext "$san"
q openssl x509 -req -in server2.csr -CA ca.pem -CAkey ca.key -set_serial 1002 -days 30 \
    -copy_extensions copy -out server2.pem
cat server.pem ca.pem >chain.pem
# An expired certificate: openssl x509 cannot set past dates, openssl ca can.
: >index.txt
echo 1003 >serial
cat >ca.cnf <<CNF
[ca]
default_ca = c
[c]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = p
unique_subject = no
copy_extensions = copy
[p]
commonName = supplied
CNF
q openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in server.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20200102000000Z -notext
for c in app1:ca ops:ca rogue:other-ca; do
    n=${c%%:*} ca=${c#*:}
    cn=$n
    [ "$n" = rogue ] && cn=app1
    q openssl req -new $ec -keyout "$n.key" -out "$n.csr" -subj "/CN=$cn"
    q openssl x509 -req -in "$n.csr" -CA "$ca.pem" -CAkey "$ca.key" -days 30 -out "$n.pem" \
        -set_serial "$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"
done
chmod 644 ./*.pem
chmod 600 ./*.key
