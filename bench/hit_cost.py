#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Instructions per GET hit, counted by callgrind: a noise-free figure for
"no slower hit path" on a shared machine, where wrk's requests/s move with
whatever else runs.

    bench/hit_cost.py BIN [BIN ...] [--tier URI ...] [--gets N] [--size BYTES] [--auth]

For each binary and tier, the server runs under `valgrind --tool=callgrind`
with one worker; one keep-alive connection PUTs a value of --size bytes
(100 by default), then GETs
it N times, then 2N times in a second run. Instructions per GET are the
difference of the two totals over N, so start-up and shutdown cancel out.
Give the older build as a second BIN for a before/after ratio. callgrind
counts user-space instructions only: the kernel's share (syscalls) and the
vDSO clock are not in it.

--auth (issue 14): each binary also runs twice with every request carrying
`Authorization: Bearer TOKEN`: without a tokens file (the header is parsed,
not checked: what the bytes cost), then with an auth-tokens-file of 8 tokens
(TOKEN is the last one, read,write). Each line gives the ratio to the same
binary without the header: the difference between the two is the check.
Only the first BIN runs these (an older build may not know auth-tokens-file).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


AUTH_TOKENS = 8


def write_tokens(work):
    """A tokens file of AUTH_TOKENS entries; returns (path, the last token)."""
    import hashlib
    path = os.path.join(work, "tokens")
    lines, token = [], ""
    for i in range(AUTH_TOKENS):
        token = "bench-token-%02d-%s" % (i, "x" * 28)
        lines.append("client%d read,write sha256:%s" % (i, hashlib.sha256(token.encode()).hexdigest()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, ("\n".join(lines) + "\n").encode())
    os.close(fd)
    return path, token


def client(port, n, size, token=None):
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""

    def resp():
        nonlocal buf
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise SystemExit("the server closed the connection")
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        cl = 0
        for line in head.split(b"\r\n")[1:]:
            k, v = line.split(b":", 1)
            if k.strip().lower() == b"content-length":
                cl = int(v)
        while len(rest) < cl:
            rest += s.recv(65536)
        buf = rest[cl:]
        return int(head.split(b" ")[1])

    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    body = b'{"value":"' + b"v" * size + b'","ttl":3600}'
    s.sendall(b"PUT /cache/k HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              + auth + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    if resp() != 200:
        raise SystemExit("PUT failed")
    req = b"GET /cache/k HTTP/1.1\r\nHost: localhost\r\n" + auth + b"\r\n"
    for _ in range(n):
        s.sendall(req)
        if resp() != 200:
            raise SystemExit("GET failed")
    s.close()


def total_ir(binary, tier, n, work, size, auth=None):
    port = free_port()
    out = os.path.join(work, "cg.out")
    log = open(os.path.join(work, "server.log"), "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary,
                          "--listen", "127.0.0.1:%d" % port, "--workers", "1", "--tier", tier,
                          "--log-level", "warn", "--sweep-interval", "3600"]
                         + (["--auth-tokens-file", auth[0]] if auth and auth[0] else []),
                         stdout=log, stderr=log)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.1)
    client(port, n, size, auth[1] if auth else None)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    ann = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+)\s+\(?[\d.%]*\)?\s*PROGRAM TOTALS", ann)
    if not m:
        raise SystemExit("no totals from callgrind_annotate")
    return int(m.group(1).replace(",", ""))


def main():
    # kill (SIGTERM) unwinds like Ctrl-C, through the finally blocks that
    # stop the servers and remove the temp dirs and segments.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--tier", action="append")
    ap.add_argument("--gets", type=int, default=2000)
    ap.add_argument("--auth", action="store_true",
                    help="also run each binary with a tokens file and Bearer tokens")
    ap.add_argument("--size", type=int, default=100)
    a = ap.parse_args()
    tiers = a.tier or ["mem://?size=16M", "shm://tc-hitcost-%d?size=16M" % os.getpid()]
    work = tempfile.mkdtemp(prefix="tc-hitcost-")
    try:
        first = {}
        for tier in tiers:
            for b in a.bins:
                ir1 = total_ir(b, tier, a.gets, work, a.size)
                ir2 = total_ir(b, tier, 2 * a.gets, work, a.size)
                per = (ir2 - ir1) / a.gets
                line = "%-28s %-40s %8.0f instructions per GET hit" % (tier.split("?")[0], b, per)
                if tier in first:
                    line += "  (%.3fx the first binary)" % (per / first[tier])
                else:
                    first[tier] = per
                print(line, flush=True)
                if a.auth and b == a.bins[0]:
                    # The header alone (no tokens file: parsed, not checked),
                    # then the header checked against AUTH_TOKENS entries.
                    tok = write_tokens(work)
                    for label, auth in (("Authorization sent, auth off", (None, tok[1])),
                                        ("Bearer token checked (%d tokens)" % AUTH_TOKENS, tok)):
                        ir1 = total_ir(b, tier, a.gets, work, a.size, auth)
                        ir2 = total_ir(b, tier, 2 * a.gets, work, a.size, auth)
                        pa = (ir2 - ir1) / a.gets
                        print("%-28s %-40s %8.0f instructions per GET hit, %s: %.3fx, +%.0f" % (
                            tier.split("?")[0], b, pa, label, pa / per, pa - per), flush=True)
                if tier.startswith("shm://"):
                    subprocess.run([b, "shm", "unlink", tier[6:].split("?")[0]],
                                   capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
