#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Python's ssl module as a TLS client of tiercache, for tests/http/test_tls.c.

  tls_client.py get PORT CAFILE [tls1.2]      GET /health; prints version, ALPN, status
  tls_client.py reload PORT DIR PID CERT      SIGHUP with an open connection (see below)
  tls_client.py seed PORT CAFILE TOKEN        the seed's HTTPAPIBackend shape over https
  tls_client.py pipeline PORT CAFILE          pipelined requests in several records at once
  tls_client.py hammer PORT CAFILE SECONDS    4 threads of new, resumed and keep-alive requests

Exit status 0 when every check passed; a message on stderr otherwise.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time


def ctx(cafile, max12=False):
    c = ssl.create_default_context(cafile=cafile)
    c.set_alpn_protocols(["http/1.1"])
    if max12:
        c.maximum_version = ssl.TLSVersion.TLSv1_2
    return c


def conn(port, c):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return c.wrap_socket(s, server_hostname="localhost")


def get(s, path="/health"):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    r = http.client.HTTPResponse(s)
    r.begin()
    body = r.read()
    return r.status, body


def cmd_get(port, cafile, ver=""):
    s = conn(port, ctx(cafile, ver == "tls1.2"))
    st, _ = get(s)
    print(s.version(), s.selected_alpn_protocol(), st)
    return 0 if st == 200 else 1


def cmd_reload(port, d, pid, cert):
    """An open connection survives a certificate reload and keeps its
    certificate; a new one gets the new certificate; a bad file keeps the
    last good one."""
    c = ctx(os.path.join(d, "ca.pem"))
    old = conn(port, c)
    st, _ = get(old)
    assert st == 200, st
    old_der = old.getpeercert(binary_form=True)
    shutil.copy(os.path.join(d, "server2.pem"), cert)
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.5)
    new = conn(port, c)
    new_subject = dict(x[0] for x in new.getpeercert()["subject"])
    assert new_subject.get("organizationName") == "reloaded", new_subject
    assert new.getpeercert(binary_form=True) != old_der
    st, _ = get(old)
    assert st == 200, ("old connection after reload", st)
    assert old.getpeercert(binary_form=True) == old_der
    st, _ = get(new)
    assert st == 200, st
    # A broken file: the reload fails and the last good certificate stays.
    with open(cert, "w") as f:
        f.write("not a certificate\n")
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.5)
    third = conn(port, c)
    subject = dict(x[0] for x in third.getpeercert()["subject"])
    assert subject.get("organizationName") == "reloaded", subject
    st, _ = get(third)
    assert st == 200, st
    st, _ = get(old)
    assert st == 200, st
    print("reload ok")
    return 0


def cmd_pipeline(port, cafile):
    """Five requests as five TLS records in one TCP segment (TCP_CORK), then
    five more in one record: every answer must come, though after the first
    read the rest of the records wait inside the server's TLS layer, where
    no socket event announces them."""
    s = conn(port, ctx(cafile))
    req = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    for _ in range(5):
        s.sendall(req)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    s.sendall(req * 5)
    s.settimeout(5)
    got = b""
    while got.count(b"HTTP/1.1 200 OK") < 10:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    n = got.count(b"HTTP/1.1 200 OK")
    assert n == 10, f"{n} answers of 10"
    print("pipeline ok")
    return 0


def cmd_hammer(port, cafile, seconds, threads=4):
    """THREADS threads for SECONDS: each opens connections (a third of them
    resuming the last session) and makes 1-4 keep-alive requests on each.
    Prints "ok N" and exits 0 when every request got 200."""
    import threading
    c = ctx(cafile)
    stop = time.monotonic() + seconds
    counts, errors = [0] * threads, []

    def run(i):
        session = None
        k = 0
        while time.monotonic() < stop and not errors:
            k += 1
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                s = c.wrap_socket(raw, server_hostname="localhost",
                                  session=session if k % 3 == 0 else None)
                for _ in range(1 + k % 4):
                    st, _ = get(s)
                    if st != 200:
                        errors.append(f"status {st}")
                    counts[i] += 1
                session = s.session
                s.close()
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        print(f"errors: {errors[:3]}", file=sys.stderr)
        return 1
    print("ok", sum(counts))
    return 0


def cmd_seed(port, cafile, token):
    """cache-middleware's HTTPAPIBackend: GET/PUT/DELETE /cache/{key},
    JSON {"value", "timeout"}, Authorization: Bearer, over https."""
    h = http.client.HTTPSConnection("localhost", port, context=ctx(cafile), timeout=10)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    h.request("PUT", "/cache/seed%3Akey", json.dumps({"value": {"a": [1, 2]}, "timeout": 60}),
              auth)
    r = h.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body)
    h.request("GET", "/cache/seed%3Akey", headers=auth)
    r = h.getresponse()
    body = json.loads(r.read())
    assert r.status == 200 and body["value"] == {"a": [1, 2]}, (r.status, body)
    h.request("DELETE", "/cache/seed%3Akey", headers=auth)
    r = h.getresponse()
    r.read()
    assert r.status == 200, r.status
    h.request("GET", "/cache/seed%3Akey", headers=auth)
    r = h.getresponse()
    r.read()
    assert r.status == 404, r.status
    # Without the token, or with another one: a clean 401, nothing stored.
    for hdrs in ({"Content-Type": "application/json"},
                 {"Authorization": "Bearer not-a-token", "Content-Type": "application/json"}):
        h.request("PUT", "/cache/seed%3Akey", json.dumps({"value": 1, "timeout": 60}), hdrs)
        r = h.getresponse()
        body = json.loads(r.read())
        assert r.status == 401 and body["error"] == "unauthorized", (r.status, body)
        assert r.getheader("WWW-Authenticate", "").startswith("Bearer"), r.getheaders()
    h.request("GET", "/cache/seed%3Akey", headers=auth)
    r = h.getresponse()
    r.read()
    assert r.status == 404, r.status
    print("seed ok")
    return 0


def main(argv):
    try:
        if argv[1] == "get":
            return cmd_get(int(argv[2]), argv[3], argv[4] if len(argv) > 4 else "")
        if argv[1] == "reload":
            return cmd_reload(int(argv[2]), argv[3], int(argv[4]), argv[5])
        if argv[1] == "pipeline":
            return cmd_pipeline(int(argv[2]), argv[3])
        if argv[1] == "hammer":
            return cmd_hammer(int(argv[2]), argv[3], float(argv[4]))
        if argv[1] == "seed":
            return cmd_seed(int(argv[2]), argv[3], argv[4])
    except (AssertionError, OSError, TimeoutError, ssl.SSLError, http.client.HTTPException) as e:
        print(f"tls_client.py {argv[1]}: {e!r}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
