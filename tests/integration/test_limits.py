"""
The [limits] table over real sockets: oversized requests get the right
status and never reach the origin; connections beyond the limits are
refused while the ones admitted go on being served.
"""

from __future__ import annotations

import json

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from .support import Origin, Proxy, curl, pythonClient

# Opens two connections to ADDRESS, sends REQUEST on the second, then on the
# first; prints what each got back (latin-1) as JSON.
TWO_CONNECTIONS = """
import json, socket, sys
host, port = sys.argv[1].split(":")
request = sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
first = socket.create_connection((host, int(port)), timeout=10)
second = socket.create_connection((host, int(port)), timeout=10)
out = []
for sock in (second, first):
    try:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        data = b"reset"
    out.append(data.decode("latin-1"))
print(json.dumps(out))
"""

# Sends RAW on one connection; prints the answer.
RAW = """
import socket, sys
host, port = sys.argv[1].split(":")
sock = socket.create_connection((host, int(port)), timeout=10)
try:
    sock.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
except BrokenPipeError:
    pass
data = b""
while True:
    try:
        chunk = sock.recv(65536)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode("latin-1"))
"""


class LimitTests(TestCase):
    def start(self, limits):
        self.origin = Origin("a")
        self.addCleanup(self.origin.stop)
        proxy = Proxy({
            "mode": "reverse", "limits": limits,
            "reverse": {"pools": {"app": {"backends": [{"url": f"http://{self.origin.address}"}]}},
                        "routes": [{"prefix": "/", "pool": "app"}]},
        })
        self.addCleanup(proxy.stop)
        return proxy

    @inlineCallbacks
    def raw(self, proxy, data: str):
        out, err, code = yield pythonClient(RAW, proxy.address, data)
        self.assertEqual(code, 0, err)
        return out.decode("latin-1")

    @inlineCallbacks
    def test_requestLineTooLong(self):
        proxy = self.start({"max_request_line": 100})
        out = yield self.raw(proxy, "GET /" + "x" * 200 + " HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
        self.assertTrue(out.startswith("HTTP/1.1 414 URI Too Long"), out)
        self.assertIn("Connection: close", out)

    @inlineCallbacks
    def test_tooManyFields(self):
        proxy = self.start({"max_header_fields": 5})
        fields = "".join(f"X-{i}: {i}\\r\\n" for i in range(10))
        out = yield self.raw(proxy, "GET /name HTTP/1.1\\r\\nHost: a\\r\\n" + fields + "\\r\\n")
        self.assertTrue(out.startswith("HTTP/1.1 431 "), out)

    @inlineCallbacks
    def test_bodyOverLimitByLength(self):
        proxy = self.start({"max_body": 1000})
        out, err, code = yield curl("-s", "-i", "--data-binary", "x" * 2000, proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 413 Content Too Large", out)
        self.assertIn(b"larger than the limit of 1000 bytes", out)
        self.assertEqual(self.origin.requests, 0)
        out, err, code = yield curl("-s", "--data-binary", "x" * 1000, proxy.url + "/name")
        self.assertEqual(out, b"a")

    @inlineCallbacks
    def test_chunkedBodyOverLimit(self):
        proxy = self.start({"max_body": 1000})
        chunks = "400\\r\\n" + "y" * 1024 + "\\r\\n0\\r\\n\\r\\n"
        out = yield self.raw(proxy, "POST /name HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
                             + chunks)
        self.assertTrue(out.startswith("HTTP/1.1 413 "), out)

    @inlineCallbacks
    def test_connectionsBeyondTheLimitRefused(self):
        proxy = self.start({"max_connections": 1})
        out, err, code = yield pythonClient(
            TWO_CONNECTIONS, proxy.address, "GET /name HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n")
        self.assertEqual(code, 0, err)
        second, first = json.loads(out)
        self.assertIn(second, ("", "reset"))
        self.assertTrue(first.startswith("HTTP/1.1 200 OK") and first.endswith("a"), first)

    @inlineCallbacks
    def test_connectionsPerClient(self):
        proxy = self.start({"max_connections_per_client": 1})
        out, err, code = yield pythonClient(
            TWO_CONNECTIONS, proxy.address, "GET /name HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n")
        self.assertEqual(code, 0, err)
        second, first = json.loads(out)
        self.assertIn(second, ("", "reset"))
        self.assertTrue(first.endswith("a"), first)
