#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Opens N idle keep-alive connections to a tiercache server (each first does
one GET so it is a real HTTP connection), then prints the server's resident
memory beyond its shared-memory segments. Loopback only.

    bench/idle_conns.py PORT PID [N]
"""
import socket
import sys
import time


def rss_private_kb(pid):
    """Resident memory not backed by shm segments (/dev/shm mappings), in KiB."""
    total = 0
    shm = 0
    current_is_shm = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "-" in parts[0]:
                current_is_shm = parts[-1].startswith("/dev/shm/")
            elif parts[0] == "Rss:":
                kb = int(parts[1])
                total += kb
                if current_is_shm:
                    shm += kb
    return total, shm


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    before, shm0 = rss_private_kb(pid)
    conns = []
    req = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        conns.append(s)
    for s in conns:
        s.recv(4096)
    time.sleep(1)
    after, shm1 = rss_private_kb(pid)
    print(f"{n} idle keep-alive connections: RSS {after / 1024:.1f} MiB "
          f"({shm1 / 1024:.1f} MiB of it shm segments); beyond shm {(after - shm1) / 1024:.1f} MiB; "
          f"before connecting {(before - shm0) / 1024:.1f} MiB")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
