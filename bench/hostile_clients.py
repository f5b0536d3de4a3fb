#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""What one hostile client costs a tiercache server (issue 12, item 6).
Starts the given binary on a free loopback port with a mem:// tier, runs one
scenario, prints what it measured, stops the server. Loopback only.

    bench/hostile_clients.py BIN pipeline N       N pipelined GETs of a 1 MiB value, never read:
                                                  the server's RSS (VmRSS / VmHWM)
    bench/hostile_clients.py BIN uploads N MIB    N uploads of MIB MiB, last byte held back:
                                                  RSS, and what each got once completed
    bench/hostile_clients.py BIN slow N SECONDS   N connections sending one header byte a
                                                  second (max-connections N): what a normal
                                                  client polling /health twice a second gets

Extra server arguments may follow "--". Run it against a Release build.
"""
import os
import select
import signal
import socket
import subprocess
import sys
import time

MIB = 1024 * 1024


def start(binary, extra):
    args = [binary, "--listen", "127.0.0.1:0", "--log-level", "info"] + extra
    p = subprocess.Popen(args, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    buf = b""
    while time.time() < deadline:
        line = p.stderr.readline()
        buf += line
        if b"listening on 127.0.0.1:" in line:
            port = int(line.split(b"listening on 127.0.0.1:")[1].split()[0])
            # Keep draining the log so the server never blocks on it.
            import threading
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, port
        if p.poll() is not None:
            break
    sys.exit("server did not start:\n" + buf.decode(errors="replace"))


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def request(port, raw, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(raw)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, body = data.split(b"\r\n\r\n", 1)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") and \
                        len(body) >= int(line.split(b":")[1]):
                    s.close()
                    return int(data[9:12])
    s.close()
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0


def status_of(sock):
    try:
        data = sock.recv(4096)
    except OSError as e:
        return type(e).__name__
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else "closed"


def pipeline(binary, n, extra):
    p, port = start(binary, ["--tier", "mem://?size=64M&max_item=2M", "--max-value", "2M",
                             "--workers", "2"] + extra)
    value = b"v" * MIB
    st = request(port, b"PUT /cache/big HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                 b"application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(value) + value)
    assert st == 200, st
    before = mem_kib(p.pid)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /cache/big HTTP/1.1\r\nHost: localhost\r\nAccept: application/octet-stream\r\n\r\n" * n)
    # Sample until the RSS has not grown for 2 s (at most 30 s).
    peak, still, t0 = 0, 0, time.time()
    while still < 40 and time.time() - t0 < 30:
        time.sleep(0.05)
        rss = mem_kib(p.pid)["VmRSS"]
        still = still + 1 if rss <= peak else 0
        peak = max(peak, rss)
    after = mem_kib(p.pid)
    print(f"pipeline: {n} unread GETs of 1 MiB: RSS {before['VmRSS'] / 1024:.1f} MiB before, "
          f"{peak / 1024:.1f} MiB peak sampled, VmHWM {after['VmHWM'] / 1024:.1f} MiB")
    s.close()
    stop(p)


def uploads(binary, n, mib, extra):
    p, port = start(binary, ["--tier", "mem://?size=4G&max_item=%dM" % (mib + 1), "--max-value",
                             "%dM" % (mib + 1), "--workers", "2"] + extra)
    size = mib * MIB
    before = mem_kib(p.pid)
    chunk = b"b" * MIB
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"PUT /cache/u%d HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream"
                  b"\r\nContent-Length: %d\r\n\r\n" % (i, size))
        sent = 0
        s.settimeout(5)
        try:
            while sent < size - 1:
                sent += s.send(chunk[:min(len(chunk), size - 1 - sent)])
        except OSError:
            pass  # refused: the server answered and stopped reading
        socks.append(s)
    time.sleep(1)
    held = mem_kib(p.pid)
    results = {}
    for s in socks:
        try:
            s.sendall(b"b")
        except OSError:
            pass
        st = status_of(s)
        results[st] = results.get(st, 0) + 1
        s.close()
    print(f"uploads: {n} x {mib} MiB, last byte held: RSS {before['VmRSS'] / 1024:.1f} MiB before, "
          f"{held['VmRSS'] / 1024:.1f} MiB while held (VmHWM {held['VmHWM'] / 1024:.1f} MiB); "
          f"answers {results}")
    stop(p)


def slow(binary, n, seconds, extra):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    p, port = start(binary, ["--tier", "mem://?size=8M", "--workers", "2",
                             "--max-connections", str(n)] + extra)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        socks.append(s)
    t0 = time.time()
    answers = {}
    slow_answers = {}
    first_ok = None
    timeline = []
    next_drip = t0
    while time.time() - t0 < seconds:
        now = time.time()
        if now >= next_drip:
            for s in socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass
            next_drip += 1.0
        try:
            st = request(port, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 2)
        except OSError as e:
            st = type(e).__name__
        answers[st] = answers.get(st, 0) + 1
        timeline.append((round(now - t0, 1), st))
        if st == 200 and first_ok is None:
            first_ok = now - t0
        readable, _, _ = select.select(socks, [], [], 0)
        for s in readable:
            st = status_of(s)
            slow_answers[st] = slow_answers.get(st, 0) + 1
            socks.remove(s)
            s.close()
        time.sleep(max(0.0, 0.5 - (time.time() - now)))
    print(f"slow: {n} one-byte-a-second connections, {seconds} s: the normal client got {answers}; "
          f"first 200 after {first_ok if first_ok is None else round(first_ok, 1)} s; "
          f"slow connections answered {slow_answers}, {len(socks)} still open")
    for s in socks:
        s.close()
    stop(p)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, mode = sys.argv[1], sys.argv[2]
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    if mode == "pipeline":
        pipeline(binary, int(sys.argv[3]), extra)
    elif mode == "uploads":
        uploads(binary, int(sys.argv[3]), int(sys.argv[4]), extra)
    elif mode == "slow":
        slow(binary, int(sys.argv[3]), int(sys.argv[4]), extra)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
