#!/usr/bin/env python3
"""Instructions per GET hit, counted by callgrind: a noise-free figure for
"no slower hit path" on a shared machine, where wrk's requests/s move with
whatever else runs.

    bench/hit_cost.py BIN [BIN ...] [--tier URI ...] [--gets N] [--size BYTES]

For each binary and tier, the server runs under `valgrind --tool=callgrind`
with one worker; one keep-alive connection PUTs a value of --size bytes
(100 by default), then GETs
it N times, then 2N times in a second run. Instructions per GET are the
difference of the two totals over N, so start-up and shutdown cancel out.
Give the older build as a second BIN for a before/after ratio. callgrind
counts user-space instructions only: the kernel's share (syscalls) and the
vDSO clock are not in it.
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


def client(port, n, size):
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

    body = b'{"value":"' + b"v" * size + b'","ttl":3600}'
    s.sendall(b"PUT /cache/k HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    if resp() != 200:
        raise SystemExit("PUT failed")
    req = b"GET /cache/k HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(n):
        s.sendall(req)
        if resp() != 200:
            raise SystemExit("GET failed")
    s.close()


def total_ir(binary, tier, n, work, size):
    port = free_port()
    out = os.path.join(work, "cg.out")
    log = open(os.path.join(work, "server.log"), "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary,
                          "--listen", "127.0.0.1:%d" % port, "--workers", "1", "--tier", tier,
                          "--log-level", "warn", "--sweep-interval", "3600"],
                         stdout=log, stderr=log)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.1)
    client(port, n, size)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    ann = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+)\s+\(?[\d.%]*\)?\s*PROGRAM TOTALS", ann)
    if not m:
        raise SystemExit("no totals from callgrind_annotate")
    return int(m.group(1).replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--tier", action="append")
    ap.add_argument("--gets", type=int, default=2000)
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
                if tier.startswith("shm://"):
                    subprocess.run([b, "shm", "unlink", tier[6:].split("?")[0]],
                                   capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
