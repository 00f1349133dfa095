"""
A kept-alive backend that writes each response's head and body in two
sends with Nagle on (Python's http.server, many WSGI servers): the proxy
acknowledges the head at once, so the body is not held back for the 40 ms
of a delayed ACK.
"""

from __future__ import annotations

import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from dualproxy.relay.client import TCP_QUICKACK

from .support import Proxy, curl

REQUESTS = 20


class _TwoSends(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"x" * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # the head, one send
        self.wfile.write(body)  # the body, a second

    def log_message(self, format, *args):
        pass


class _Backend(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the proxy's pooled connection reset as it stops


class NagleBackendTests(TestCase):
    def setUp(self):
        if TCP_QUICKACK is None:
            raise SkipTest("TCP_QUICKACK is Linux's")
        self.backend = _Backend(("127.0.0.1", 0), _TwoSends)
        thread = threading.Thread(target=self.backend.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(self.backend.server_close)
        self.addCleanup(self.backend.shutdown)

    @inlineCallbacks
    def test_noDelayedAckPerResponse(self):
        """
        Twenty requests on one client connection, relayed on one pooled
        upstream connection, each take a few milliseconds, not the 40 ms a
        delayed ACK of the head costs.
        """
        host, port = self.backend.server_address[:2]
        proxy = Proxy({"mode": "reverse", "reverse": {
            "pools": {"app": {"backends": [{"url": f"http://{host}:{port}"}]}},
            "routes": [{"prefix": "/", "pool": "app"}]}})
        self.addCleanup(proxy.stop)
        urls = [argument for n in range(REQUESTS) for argument in ("-o", "/dev/null", f"{proxy.url}/{n}")]
        out, err, code = yield curl("-w", "%{http_code} %{time_total}\n", *urls)
        self.assertEqual(code, 0, err)
        lines = [line.split() for line in out.decode().splitlines()]
        self.assertEqual([status for status, _ in lines], ["200"] * REQUESTS)
        median = statistics.median(float(seconds) for _, seconds in lines)
        self.assertLess(median, 0.02, f"per-response times: {[seconds for _, seconds in lines]}")
