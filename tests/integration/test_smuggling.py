"""
Request smuggling and malformed requests over a real socket (issue #7):
each is answered 400 (or the status named) with the connection closed, and
nothing reaches the origin.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from .support import Origin, Proxy, pythonClient
from .test_limits import RAW
from ..tables import fromTable

HOST = "Host: a\\r\\n"

# (rule, raw request, expected status)
HOSTILE = [
    ("RFC 9112 §6.1: Content-Length and Transfer-Encoding together",
     "POST /name HTTP/1.1\\r\\n" + HOST + "Content-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n", 400),
    ("RFC 9112 §6.3: several differing Content-Lengths",
     "POST /name HTTP/1.1\\r\\n" + HOST + "Content-Length: 4\\r\\nContent-Length: 5\\r\\n\\r\\nabcde", 400),
    ("RFC 9112 §6.1: a Transfer-Encoding not ending in chunked",
     "POST /name HTTP/1.1\\r\\n" + HOST + "Transfer-Encoding: chunked, gzip\\r\\n\\r\\n0\\r\\n\\r\\n", 400),
    # The head of a chunked request goes upstream as it arrives (bodies are
    # streamed); the malformed chunk never does, and the upstream request is
    # cut, so the origin never sees a whole request.
    ("RFC 9112 §7.1: a malformed chunk size",
     "POST /name HTTP/1.1\\r\\n" + HOST + "Transfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\nab\\r\\n0\\r\\n\\r\\n", 400, True),
    ("RFC 9112 §7.1: chunk data ended by a bare LF",
     "POST /name HTTP/1.1\\r\\n" + HOST + "Transfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\n0\\r\\n\\r\\n", 400, True),
    ("RFC 9112 §5.1: whitespace between a field name and the colon",
     "GET /name HTTP/1.1\\r\\n" + HOST + "X-A : 1\\r\\n\\r\\n", 400),
    ("RFC 9112 §5.2: obs-fold continuation lines",
     "GET /name HTTP/1.1\\r\\n" + HOST + "X-A: 1\\r\\n  folded\\r\\n\\r\\n", 400),
    ("RFC 9110 §5.1: a non-token character in a field name",
     "GET /name HTTP/1.1\\r\\n" + HOST + "X(A): 1\\r\\n\\r\\n", 400),
    ("RFC 9112 §2.2: a bare CR",
     "GET /name HTTP/1.1\\r\\n" + HOST + "X-A: 1\\rX-B: 2\\r\\n\\r\\n", 400),
    ("RFC 9110 §5.5: a NUL in a field value",
     "GET /name HTTP/1.1\\r\\n" + HOST + "X-A: a\\x00b\\r\\n\\r\\n", 400),
    ("RFC 9110 §9.1: an invalid method",
     "G(T /name HTTP/1.1\\r\\n" + HOST + "\\r\\n", 400),
    ("RFC 9112 §3.2: an invalid request target",
     "GET name HTTP/1.1\\r\\n" + HOST + "\\r\\n", 400),
    ("RFC 9112 §3.2: a missing Host in HTTP/1.1",
     "GET /name HTTP/1.1\\r\\n\\r\\n", 400),
    ("RFC 9112 §3.2: several Host fields",
     "GET /name HTTP/1.1\\r\\n" + HOST + "Host: b\\r\\n\\r\\n", 400),
]


def reverseTo(test: TestCase, address: str, **settings) -> Proxy:
    """
    A reverse proxy routing everything to the one backend at C{address},
    without retries, stopped when C{test} ends.
    """
    proxy = Proxy({
        "mode": "reverse",
        **settings,
        "reverse": {"pools": {"app": {"backends": [{"url": f"http://{address}"}], "retries": 0}},
                    "routes": [{"prefix": "/", "pool": "app"}]},
    })
    test.addCleanup(proxy.stop)
    return proxy


@fromTable(HOSTILE, "check")
class SmugglingTests(TestCase):
    def setUp(self):
        self.origin = Origin("a")
        self.addCleanup(self.origin.stop)
        self.proxy = Proxy({
            "mode": "reverse",
            "reverse": {"pools": {"app": {"backends": [{"url": f"http://{self.origin.address}"}]}},
                        "routes": [{"prefix": "/", "pool": "app"}]},
        })
        self.addCleanup(self.proxy.stop)

    @inlineCallbacks
    def check(self, raw, status, headForwarded=False):
        out, err, code = yield pythonClient(RAW, self.proxy.address, raw)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 %d " % status), out)
        self.assertIn(b"Connection: close", out)
        self.assertEqual(self.origin.requests, 0)
        if not headForwarded:
            self.assertEqual(self.origin.connections, 0, "nothing was forwarded")



class ForwardSmugglingTests(TestCase):
    """
    Forward mode reads request bodies with the same parser: the same chunk
    framing is refused there too.
    """

    def setUp(self):
        self.origin = Origin("a")
        self.addCleanup(self.origin.stop)
        self.proxy = Proxy({"mode": "forward", "forward": {"allow_destinations": ["127.0.0.0/8"]}})
        self.addCleanup(self.proxy.stop)

    @inlineCallbacks
    def test_chunkDataEndedByABareLF(self):
        raw = (f"POST http://{self.origin.address}/name HTTP/1.1\\r\\nHost: {self.origin.address}\\r\\n"
               "Transfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\n0\\r\\n\\r\\n")
        out, err, code = yield pythonClient(RAW, self.proxy.address, raw)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out)
        self.assertIn(b"Connection: close", out)
        self.assertEqual(self.origin.requests, 0)

# (rule, raw response from the backend, Proxy-Status error type)
HOSTILE_RESPONSES = [
    ("RFC 9112 §6.3: a response with differing Content-Lengths",
     b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", b"http_protocol_error"),
    ("RFC 9112 §6.1: a response with Content-Length and Transfer-Encoding",
     b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"http_protocol_error"),
    ("RFC 9112 §6.1: a response transfer coding other than chunked",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", b"http_response_transfer_coding"),
    ("RFC 9112 §5.2: a response with an obs-fold line",
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 1\r\n\r\na", b"http_protocol_error"),
    ("RFC 9112 §2.2: a response splitting attempt with a bare CR",
     b"HTTP/1.1 200 OK\r\nX-A: 1\rSet-Cookie: evil=1\r\nContent-Length: 1\r\n\r\na", b"http_protocol_error"),
    ("RFC 9112 §4: a malformed status line",
     b"HTTP/1.1 2OO OK\r\nContent-Length: 1\r\n\r\na", b"http_protocol_error"),
]


@fromTable(HOSTILE_RESPONSES, "check")
class HostileResponseTests(TestCase):
    """
    Responses from upstream meet the same rules: 502 with the precise error
    type, and nothing of the bad response reaches the client.
    """

    @inlineCallbacks
    def check(self, response, errorType):
        from .support import RawOrigin, curl

        origin = RawOrigin(response)
        self.addCleanup(origin.stop)
        proxy = reverseTo(self, origin.address)
        out, err, code = yield curl("-s", "-i", proxy.url + "/")
        self.assertTrue(out.startswith(b"HTTP/1.1 502 Bad Gateway"), out)
        self.assertIn(b"error=" + errorType, out)
        self.assertNotIn(b"evil", out)


class EndlessInterimTests(TestCase):
    """
    A backend that answers with interim responses and never a final one
    (200,000 x 102 Processing) gets a few of them relayed, then a 502.
    """

    @inlineCallbacks
    def test_endlessInterimResponses(self):
        from dualproxy.http.parser import MAX_INTERIM

        from .support import RawOrigin, curl

        origin = RawOrigin(b"HTTP/1.1 102 Processing\r\n\r\n" * 200000 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.addCleanup(origin.stop)
        proxy = reverseTo(self, origin.address)
        out, err, code = yield curl("-s", "-i", proxy.url + "/")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"error=http_protocol_error", out)
        self.assertLessEqual(out.count(b"102 Processing"), MAX_INTERIM)
        self.assertNotIn(b"200 OK", out)

    @inlineCallbacks
    def test_trickleOfInterimResponses(self):
        """
        One 102 every 50 ms keeps the connection busy but is no progress:
        the final response is due within upstream_read.
        """
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.task import LoopingCall

        from .support import curl

        class Trickle(Protocol):
            def connectionMade(self):
                self.ticks = LoopingCall(self.transport.write, b"HTTP/1.1 102 Processing\r\n\r\n")

            def dataReceived(self, data):
                if not self.ticks.running:
                    self.ticks.start(0.05)

            def connectionLost(self, reason):
                if self.ticks.running:
                    self.ticks.stop()

        port = reactor.listenTCP(0, Factory.forProtocol(Trickle), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        proxy = reverseTo(self, f"127.0.0.1:{port.getHost().port}", timeouts={"upstream_read": 0.5})
        out, err, code = yield curl("-s", "-i", "-m", "10", proxy.url + "/")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"no final response after interim responses", out)


H2C_UPGRADE = ("GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: Upgrade, HTTP2-Settings, close\\r\\nUpgrade: h2c\\r\\n"
               "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\\r\\n\\r\\n")


class H2CSmugglingTests(TestCase):
    """
    An h2c upgrade never reaches a backend (h2c smuggling: its 101 would
    open an HTTP/2 connection past routing), and a 101 to anything the
    client did not offer is a 502, not a tunnel.
    """

    def start(self, response):
        from .support import RawOrigin

        origin = RawOrigin(response)
        self.addCleanup(origin.stop)
        proxy = reverseTo(self, origin.address)
        return origin, proxy

    @inlineCallbacks
    def test_h2cUpgradeStripped(self):
        origin, proxy = self.start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        out, err, code = yield pythonClient(RAW, proxy.address, H2C_UPGRADE)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK"), out)
        [head] = origin.requests
        self.assertNotIn(b"h2c", head.lower())
        self.assertNotIn(b"http2-settings", head.lower())
        self.assertNotIn(b"upgrade", head.lower())

    @inlineCallbacks
    def test_backendSwitchingToH2CRefused(self):
        """
        A backend that switches to h2c anyway (it was never offered) gets
        a 502 to the client and no tunnel.
        """
        origin, proxy = self.start(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                                   b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        out, err, code = yield pythonClient(RAW, proxy.address, H2C_UPGRADE)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 502 Bad Gateway"), out)
        self.assertIn(b"error=http_protocol_error", out)
        self.assertNotIn(b"101", out.split(b"\r\n", 1)[0])

    @inlineCallbacks
    def test_unlistedUpgradeNotOffered(self):
        """
        A route relays only the upgrades it lists (websocket by default):
        another goes on as a plain request.
        """
        origin, proxy = self.start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        raw = "GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: Upgrade, close\\r\\nUpgrade: x-tunnel\\r\\n\\r\\n"
        out, err, code = yield pythonClient(RAW, proxy.address, raw)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK"), out)
        [head] = origin.requests
        self.assertNotIn(b"x-tunnel", head.lower())

    @inlineCallbacks
    def test_switchToAnotherProtocolRefused(self):
        """
        Offered websocket, switched to something else: 502.
        """
        origin, proxy = self.start(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-other\r\n\r\n")
        raw = "GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: Upgrade, close\\r\\nUpgrade: websocket\\r\\n\\r\\n"
        out, err, code = yield pythonClient(RAW, proxy.address, raw)
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 502 Bad Gateway"), out)
        self.assertIn(b"did not offer", out)


class TruncatedResponseLogTests(TestCase):
    """
    A backend response that breaks mid-body (a chunk size that overflows)
    reaches the client as what it was: the head and the body so far, then
    a close without the last chunk; the access log says the same.
    """

    @inlineCallbacks
    def test_chunkSizeOverflowLogged(self):
        import json

        from twisted.logger import globalLogPublisher

        from .support import RawOrigin, curl

        origin = RawOrigin(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                           + b"F" * 40 + b"\r\nmore")
        self.addCleanup(origin.stop)
        proxy = reverseTo(self, origin.address, access_log="json")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        out, err, code = yield curl("-i", proxy.url + "/")
        self.assertEqual(code, 18, err)  # curl: transfer closed with outstanding read data
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK"), out)
        self.assertTrue(out.endswith(b"\r\n\r\nhello"), out)
        [line] = [json.loads(e["line"]) for e in events if e.get("log_namespace") == "dualproxy.access"]
        self.assertEqual((line["status"], line["bytes"], line["completed"]), (200, 5, False))
        self.assertEqual(line["error_type"], "http_protocol_error")
