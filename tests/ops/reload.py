#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Issue 17: SIGHUP reloads the configuration without dropping a connection.

A server runs from a config file; a keep-alive connection is opened. Then:
  1. default-ttl changes, SIGHUP: the next PUT (on the same, still open
     connection) gets the new TTL; the log names the change.
  2. listen changes: logged as "needs a restart", the server keeps its port.
  3. a broken file: logged, refused; PUTs keep the TTL of step 1.
  4. access-log-format switches to json on reload; lines are JSON.
Usage: reload.py TIERCACHE
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="tc17reload")
seg = "tc17rl%d" % os.getpid()
conf = os.path.join(tmp, "tiercache.conf")
logf = os.path.join(tmp, "server.log")
acc = os.path.join(tmp, "access.log")
proc = None


def write_conf(ttl, extra=""):
    with open(conf + ".new", "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:0\nworkers = 2\ndefault-ttl = %s\n"
                "tier = shm://%s?size=8M\ntier = lmdb://%s/l2?map_size=16M\n"
                "access-log = %s\n%s" % (ttl, seg, tmp, acc, extra))
    os.replace(conf + ".new", conf)


def log_text():
    with open(logf) as f:
        return f.read()


def wait_log(pattern, after, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log_text()[after:]
        m = re.search(pattern, text)
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError("no /%s/ in the log:\n%s" % (pattern, log_text()))


def put_ttl(conn, key):
    body = json.dumps({"value": "v"})
    conn.request("PUT", "/cache/" + key, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
    conn.request("GET", "/cache/" + key)
    r = conn.getresponse()
    doc = json.loads(r.read())
    assert r.status == 200, doc
    return doc["ttl"]


def main():
    global proc
    write_conf(100)
    with open(logf, "w") as out:
        proc = subprocess.Popen([BIN, "--config", conf], stdout=out, stderr=subprocess.STDOUT)
    port = int(wait_log(r"listening on 127\.0\.0\.1:(\d+)", 0).group(1))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ttl = put_ttl(conn, "before")
    assert 99 <= ttl <= 100, "ttl %r before the reload" % ttl
    sock = conn.sock

    # 1. default-ttl 100 -> 250, applied live; the connection stays open.
    mark = len(log_text())
    write_conf(250)
    proc.send_signal(signal.SIGHUP)
    wait_log(r"reload: configuration applied", mark)
    wait_log(r"reload: default-ttl: '100s' -> '250s'", mark)
    ttl = put_ttl(conn, "after")
    assert conn.sock is sock, "the keep-alive connection was dropped"
    assert 249 <= ttl <= 250, "ttl %r after the reload (wanted 250)" % ttl

    # 2. listen needs a restart: logged, the port stays.
    mark = len(log_text())
    with open(conf, "a") as f:
        f.write("listen = 127.0.0.1:1\n")
    proc.send_signal(signal.SIGHUP)
    wait_log(r"reload: listen changed .*needs a restart", mark)
    wait_log(r"reload: configuration applied", mark)
    assert 249 <= put_ttl(conn, "listen") <= 250
    assert conn.sock is sock

    # 3. a broken file is refused with the reason; the running TTL stays.
    mark = len(log_text())
    write_conf(500, "this is not a setting\n")
    proc.send_signal(signal.SIGHUP)
    wait_log(r"reload: .*not a NAME = VALUE line", mark)
    wait_log(r"configuration refused; the running one is kept", mark)
    ttl = put_ttl(conn, "bad")
    assert 249 <= ttl <= 250, "ttl %r after a bad reload (wanted 250 kept)" % ttl
    write_conf(250, "default-ttl = banana\n")
    proc.send_signal(signal.SIGHUP)
    wait_log(r"bad value 'banana' for default-ttl", mark)
    assert 249 <= put_ttl(conn, "bad2") <= 250

    # 4. the access log switches format on reload.
    mark = len(log_text())
    write_conf(250, "access-log-format = json\n")
    proc.send_signal(signal.SIGHUP)
    wait_log(r"reload: access-log-format: 'combined' -> 'json'", mark)
    put_ttl(conn, "json")
    time.sleep(0.2)
    lines = open(acc).read().splitlines()
    assert lines and json.loads(lines[-1])["path"] == "/cache/json", lines[-3:]
    assert conn.sock is sock

    # 5. an access log that cannot be opened: the old file stays in use,
    #    the rest of the file applies (here default-ttl), and the next
    #    reload tries the path again.
    mark = len(log_text())
    n = len(open(acc).read().splitlines())
    write_conf(200, "access-log-format = json\naccess-log = %s/no/such/dir/a.log\n" % tmp)
    with open(conf) as f:
        text = f.read().replace("access-log = %s\n" % acc, "")
    with open(conf, "w") as f:
        f.write(text)
    proc.send_signal(signal.SIGHUP)
    wait_log(r"cannot open access log '.*/no/such/dir/a.log'", mark)
    wait_log(r"reload: log files unchanged", mark)
    wait_log(r"reload: configuration applied", mark)
    assert 199 <= put_ttl(conn, "logkept") <= 200
    time.sleep(0.2)
    lines = open(acc).read().splitlines()
    assert len(lines) > n and json.loads(lines[-1])["path"] == "/cache/logkept", lines[-2:]
    mark = len(log_text())
    proc.send_signal(signal.SIGHUP)
    # Tried again and still shown as a change: the running config kept the old path.
    wait_log(r"reload: access-log: '%s' -> '.*/no/such/dir/a.log'" % re.escape(acc), mark)
    wait_log(r"cannot open access log", mark)
    conn.close()
    print("reload: ok")


try:
    main()
finally:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        os.unlink("/dev/shm/" + seg)
    except FileNotFoundError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)
