#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Issue 17: the access log in the formats people parse.

combined: every line matches the nginx/Apache combined regex, plus
cache=, tier= and us=; json: every line parses as one JSON object with the
same fields. In both: the client address and a timestamp, a HIT names its
tier, token= in a query and the Authorization header never appear, and
bytes a client chose (quotes, control bytes, non-UTF-8) cannot break a line.
Usage: access_log.py TIERCACHE
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
COMBINED = re.compile(
    r'^(?P<remote>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<method>[A-Z]+) (?P<target>[^"\s]+) HTTP/(?P<ver>\d\.\d)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<ua>[^"]*)" cache=(?P<cache>\S+) tier=(?P<tier>\S+) us=(?P<us>\d+)$')


def run(fmt):
    tmp = tempfile.mkdtemp(prefix="tc17acc")
    seg = "tc17acc%d%s" % (os.getpid(), fmt)
    acc = os.path.join(tmp, "access.log")
    logf = open(os.path.join(tmp, "server.log"), "w+")
    proc = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--workers", "1",
                             "--tier", "shm://%s?size=8M" % seg, "--access-log", acc,
                             "--access-log-format", fmt], stdout=logf, stderr=subprocess.STDOUT)
    try:
        port = None
        for _ in range(100):
            logf.seek(0)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", logf.read())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.1)
        assert port, "server did not start"

        def raw(req):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            return data

        body = b'{"value":"hello"}'
        raw(b"PUT /cache/k1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        raw(b"GET /cache/k1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"User-Agent: evil\"agent\xe9\r\nReferer: http://r.example/\r\n"
            b"Authorization: Bearer SECRET-TOKEN-1\r\n\r\n")
        raw(b"GET /cache/missing?token=SECRET-TOKEN-2&x=1 HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\n\r\n")
        raw(b"GET /cache/caf\xc3\xa9\xff%22q HTTP/1.0\r\n\r\n")
        time.sleep(0.3)
        with open(acc, "rb") as f:
            text = f.read()
        assert b"SECRET-TOKEN" not in text, text
        lines = text.decode("ascii").splitlines()  # printable ASCII only
        assert len(lines) == 4, lines
        recs = []
        for line in lines:
            if fmt == "json":
                d = json.loads(line)
                for k in ("time", "remote", "method", "path", "query", "protocol", "status",
                          "bytes", "referer", "user_agent", "cache", "tier", "duration_us"):
                    assert k in d, (k, line)
                assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", d["time"]), line
                recs.append(d)
            else:
                m = COMBINED.match(line)
                assert m, "not combined: %r" % line
                recs.append(m.groupdict())
        for r in recs:
            assert r["remote"] == "127.0.0.1", r
        put, hit, miss, odd = recs
        assert int(put["status"]) == 200
        assert int(hit["status"]) == 200 and hit["cache"] == "HIT" and hit["tier"] == "l1", hit
        ua = hit["ua"] if fmt == "combined" else hit["user_agent"]
        assert ua.startswith("evil"), hit
        ref = hit["referer"]
        assert ref == "http://r.example/", hit
        assert int(miss["status"]) == 404, miss
        target = miss["target"] if fmt == "combined" else miss["path"] + "?" + miss["query"]
        assert "token=***" in target and "x=1" in target, miss
        assert int(odd["status"]) in (200, 400, 404), odd
        print("access_log %s: ok (%s)" % (fmt, lines[1]))
    finally:
        proc.terminate()
        proc.wait(10)
        try:
            os.unlink("/dev/shm/" + seg)
        except FileNotFoundError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


run("combined")
run("json")
