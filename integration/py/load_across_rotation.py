"""Continuous HTTP load from inside a pod, bounded in time and count.

usage: load_across_rotation.py URL SECONDS MAX_REQUESTS

Each request opens a new connection (new tunnel streams, and new handshakes once
the SVID rotates); a second, persistent connection sends one request per loop
too. Prints JSON: ok, failed, the first failures, and every distinct XFCC `Hash`
seen (the client certificate the destination verified).
"""
import http.client
import json
import sys
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
seconds = float(sys.argv[2])
max_requests = int(sys.argv[3])
host, port = url.hostname, url.port or 80

ok = 0
failures = []
hashes = set()
persistent = http.client.HTTPConnection(host, port, timeout=5)


def one(conn):
    conn.request("GET", url.path or "/")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError("status %d: %s" % (response.status, body[:100]))
    xfcc = json.loads(body)["request"]["headers"]["x-forwarded-client-cert"]
    hashes.add(xfcc.split("Hash=")[1].split(";")[0])


deadline = time.monotonic() + seconds
sent = 0
while time.monotonic() < deadline and sent < max_requests:
    for conn in (http.client.HTTPConnection(host, port, timeout=5), persistent):
        sent += 1
        try:
            one(conn)
            ok += 1
        except Exception as e:  # noqa: BLE001 - every failure counts
            failures.append("%s: %s" % (type(e).__name__, e))
    time.sleep(0.02)

print(json.dumps({"ok": ok, "failed": len(failures), "failures": failures[:5], "hashes": sorted(hashes)}))
