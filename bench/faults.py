#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Hostile-store figures for issue 12, against any tiercache binary.

    bench/faults.py [--bin build/tiercache] [SCENARIO ...]

Runs each scenario against a fresh server on 127.0.0.1 (a temp LMDB dir, a
private redis-server on a free port) and prints one line of figures each:
how many GETs answered the right value, a miss (404), a wrong value, a 5xx,
or nothing at all (the server died). Run it once with today's binary and
once with an older one (same command, another --bin) for a before/after
pair. Scenarios:

  lmdb-flips   3,000 keys; 1,000 single-bit flips in data.mdb (server stopped)
  lmdb-zero    3,000 keys; 20 zeroed 4 KiB pages in data.mdb (server stopped)
  redis-byte   200 keys; the last byte of every stored value changed in Redis
  redis-swap   200 keys; every key holds another key's stored item
  tiny-ttl     PUT with ttl 0.0004, 1e-9 and ?ttl=1e-400: still there 50 ms later?

Every value names its key ("val-" + key), so a wrong answer is recognisable.
Pages 0 and 1 (LMDB's meta pages) are left alone: that is the open check's
business, measured by the LMDB tests. The random damage is seeded (--seed).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import http.client

PAGE = 4096


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, tiers):
        self.binary = binary
        self.tiers = tiers
        self.proc = None
        self.port = None
        self.log = tempfile.NamedTemporaryFile(prefix="tc-faults-", suffix=".log", delete=False)

    def start(self):
        args = [self.binary, "--listen", "127.0.0.1:0", "--workers", "2"]
        for t in self.tiers:
            args += ["--tier", t]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            with open(self.log.name) as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method, target, body=None, ctype="application/json"):
        """(status, body) or (None, None) when nothing came back."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            headers = {"Content-Type": ctype} if body is not None else {}
            c.request(method, target, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            c.close()
            return r.status, data
        except (OSError, http.client.HTTPException):
            return None, None

    def tail(self, n=5):
        with open(self.log.name) as f:
            return "".join(f.readlines()[-n:])


def put(srv, key, ttl=3600):
    body = json.dumps({"value": "val-" + key, "ttl": ttl})
    st, _ = srv.request("PUT", "/cache/" + key, body)
    if st != 200:
        raise SystemExit("PUT %s answered %s:\n%s" % (key, st, srv.tail()))


def read_back(srv, keys):
    """Counts right / miss / wrong / 5xx / none over GETs of keys."""
    n = {"right": 0, "miss": 0, "wrong": 0, "5xx": 0, "none": 0}
    for k in keys:
        st, body = srv.request("GET", "/cache/" + k)
        if st is None:
            n["none"] += 1
        elif st == 404:
            n["miss"] += 1
        elif st >= 500:
            n["5xx"] += 1
        elif st == 200:
            try:
                v = json.loads(body).get("value")
            except ValueError:
                v = None
            n["right" if v == "val-" + k else "wrong"] += 1
        else:
            n["wrong"] += 1
    return n


def fmt(n, total):
    return "right %d, miss %d, wrong %d, 5xx %d, no answer %d (of %d)" % (
        n["right"], n["miss"], n["wrong"], n["5xx"], n["none"], total)


# ---- LMDB ------------------------------------------------------------------------

def lmdb_scenario(binary, rng, damage):
    d = tempfile.mkdtemp(prefix="tc-faults-")
    try:
        uri = "lmdb://%s?map_size=64M&sync=none" % d
        srv = Server(binary, [uri])
        if not srv.start():
            return "server did not start: " + srv.tail()
        keys = ["k%d" % i for i in range(3000)]
        for k in keys:
            put(srv, k)
        srv.stop()
        path = os.path.join(d, "data.mdb")
        with open(path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            damage(f, size, rng)
        srv = Server(binary, [uri])
        if not srv.start():
            return "server did not start after the damage: " + srv.tail(3).strip()
        n = read_back(srv, keys)
        alive = srv.alive()
        srv.stop()
        return fmt(n, len(keys)) + ("" if alive else "; the server died: " + srv.tail(2).strip())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def flip_bits(f, size, rng):
    for _ in range(1000):
        at = rng.randrange(2 * PAGE, size)
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ (1 << rng.randrange(8))]))


def zero_pages(f, size, rng):
    pages = size // PAGE
    for _ in range(20):
        f.seek(rng.randrange(2, pages) * PAGE)
        f.write(bytes(PAGE))


# ---- Redis -----------------------------------------------------------------------

class Resp:
    """Just enough RESP for GET and SET of binary values."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self.reply()

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def reply(self):
        l = self.line()
        if l[:1] == b"$":
            n = int(l[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(65536)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if l[:1] == b":":
            return int(l[1:])
        return l


def redis_scenario(binary, change):
    d = tempfile.mkdtemp(prefix="tc-faults-redis-")
    port = free_port()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", d],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                r = Resp(port)
                break
            except OSError:
                time.sleep(0.05)
        uri = "redis://127.0.0.1:%d/0?prefix=f:&invalidate=none" % port
        srv = Server(binary, [uri])
        if not srv.start():
            return "server did not start: " + srv.tail()
        keys = ["k%d" % i for i in range(200)]
        for k in keys:
            put(srv, k)
        change(r, keys)
        n = read_back(srv, keys)
        alive = srv.alive()
        srv.stop()
        return fmt(n, len(keys)) + ("" if alive else "; the server died: " + srv.tail(2).strip())
    finally:
        rs.terminate()
        rs.wait()
        shutil.rmtree(d, ignore_errors=True)


def change_last_byte(r, keys):
    for k in keys:
        v = bytearray(r.cmd("GET", "f:" + k))
        v[-1] = ord("X")
        r.cmd("SET", "f:" + k, bytes(v))


def swap_items(r, keys):
    items = [r.cmd("GET", "f:" + k) for k in keys]
    for i, k in enumerate(keys):
        r.cmd("SET", "f:" + k, items[(i + 1) % len(keys)])


# ---- TTL -------------------------------------------------------------------------

def tiny_ttl(binary):
    d = tempfile.mkdtemp(prefix="tc-faults-")
    try:
        srv = Server(binary, ["lmdb://%s?map_size=16M&sync=none" % d])
        if not srv.start():
            return "server did not start: " + srv.tail()
        kept = []
        for label, method, target, body, ctype in [
                ("ttl 0.0004", "PUT", "/cache/t", '{"value":"x","ttl":0.0004}', "application/json"),
                ("ttl 1e-9", "PUT", "/cache/t", '{"value":"x","ttl":1e-9}', "application/json"),
                ("?ttl=1e-400", "PUT", "/cache/t?ttl=1e-400", "x", "application/octet-stream")]:
            srv.request("DELETE", "/cache/t")
            st, _ = srv.request(method, target, body, ctype)
            time.sleep(0.05)
            got, _ = srv.request("GET", "/cache/t")
            kept.append("%s: PUT %s, GET 50 ms later %s" % (label, st, got))
        srv.stop()
        return "; ".join(kept)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    # kill (SIGTERM) unwinds like Ctrl-C, through the finally blocks that
    # stop the servers and remove the temp dirs and segments.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(os.environ.get("TC_BUILD_DIR", "build"), "tiercache"))
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("scenarios", nargs="*",
                    default=["lmdb-flips", "lmdb-zero", "redis-byte", "redis-swap", "tiny-ttl"])
    a = ap.parse_args()
    rng = random.Random(a.seed)
    run = {
        "lmdb-flips": lambda: lmdb_scenario(a.bin, rng, flip_bits),
        "lmdb-zero": lambda: lmdb_scenario(a.bin, rng, zero_pages),
        "redis-byte": lambda: redis_scenario(a.bin, change_last_byte),
        "redis-swap": lambda: redis_scenario(a.bin, swap_items),
        "tiny-ttl": lambda: tiny_ttl(a.bin),
    }
    for s in a.scenarios:
        if s not in run:
            sys.exit("unknown scenario %s (valid: %s)" % (s, ", ".join(run)))
        print("%-11s %s" % (s, run[s]()), flush=True)


if __name__ == "__main__":
    main()
