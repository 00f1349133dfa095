"""
The relay engine in memory: an upstream connection per request from the
pool, streaming, reuse, retries of stale connections, timeouts and
backpressure, with no sockets.
"""

from __future__ import annotations

import errno

from twisted.internet import defer, error
from twisted.internet.defer import fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, TimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.http.message import CHUNKED, LENGTH, NO_BODY, Headers, Refusal, RequestHead
from dualproxy.relay.client import UpstreamProtocol
from dualproxy.relay.connect import asRefusal
from dualproxy.relay.pool import ConnectionPool
from dualproxy.relay.relay import Relay
from dualproxy.server.http1 import HTTPServerChannel

from ..tables import fromTable
from .test_server import RecordingHandler


class Upstreams:
    """
    Hands out in-memory upstream connections and remembers them.
    """

    def __init__(self, clock, readTimeout=30.0):
        self.clock = clock
        self.readTimeout = readTimeout
        self.made = []

    def __call__(self):
        upstream = UpstreamProtocol(self.clock, self.readTimeout)
        upstream.makeConnection(StringTransport())
        self.made.append(upstream)
        return succeed(upstream)


class RelayTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pool = ConnectionPool(self.clock, 2, 60.0)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.upstreams = Upstreams(self.clock)
        self.handler = RecordingHandler(self.relay)
        self.channel = HTTPServerChannel(self.handler, self.clock, 60.0)
        self.client = StringTransport()
        self.channel.makeConnection(self.client)

    def relay(self, exchange):
        request = exchange.request
        head = RequestHead(
            request.method, b"/", b"HTTP/1.1", Headers([(b"Host", b"origin")]), request.framing, request.length
        )
        if request.framing == CHUNKED:
            head.headers.add(b"Transfer-Encoding", b"chunked")
        elif request.framing == LENGTH:
            head.headers.add(b"Content-Length", b"%d" % request.length)
        Relay(exchange, head, self.pool, "origin", self.upstreams, lambda head: None, "origin").start()

    def request(self, wire=b"GET http://origin/ HTTP/1.1\r\nHost: origin\r\n\r\n"):
        self.channel.dataReceived(wire)
        return self.upstreams.made[-1]

    def test_interimResponseLosesConnectionFields(self):
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
                              b"Keep-Alive: timeout=5\r\n\r\n")
        self.assertEqual(self.client.value(), b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")

    def test_responseStreamedAndConnectionReused(self):
        upstream = self.request()
        self.assertEqual(upstream.transport.value(), b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n")
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        self.assertTrue(self.client.value().endswith(b"\r\n\r\nab"))
        upstream.dataReceived(b"cd")
        self.assertTrue(self.client.value().endswith(b"abcd"))
        self.assertEqual(self.pool.idleCount("origin"), 1)
        again = self.request()
        self.assertIs(again, upstream)
        self.assertEqual(len(self.upstreams.made), 1)

    def test_closingResponseNotPooled(self):
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.pool.idleCount("origin"), 0)
        self.assertTrue(upstream.transport.disconnecting)

    def test_requestBodyStreamedChunked(self):
        upstream = self.request(
            b"POST http://origin/ HTTP/1.1\r\nHost: origin\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        self.assertTrue(upstream.transport.value().endswith(b"\r\n\r\n3\r\nabc\r\n"))
        self.channel.dataReceived(b"0\r\n\r\n")
        self.assertTrue(upstream.transport.value().endswith(b"3\r\nabc\r\n0\r\n\r\n"))

    def test_slowUpstreamPausesClientReading(self):
        """
        When the upstream cannot take the request body faster, the proxy
        stops reading it from the client.
        """
        upstream = self.request(b"POST http://origin/ HTTP/1.1\r\nHost: origin\r\nContent-Length: 10\r\n\r\nab")
        upstream.transport.producer.pauseProducing()
        self.assertEqual(self.client.producerState, "paused")
        upstream.transport.producer.resumeProducing()
        self.assertEqual(self.client.producerState, "producing")

    def test_slowClientPausesUpstream(self):
        """
        When the client reads slowly, the proxy stops reading the response
        from the upstream.
        """
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxx")
        self.assertIs(self.client.producer, upstream)
        self.client.producer.pauseProducing()
        self.assertEqual(upstream.transport.producerState, "paused")
        self.client.producer.resumeProducing()
        self.assertEqual(upstream.transport.producerState, "producing")

    def test_staleIdleConnectionRetried(self):
        """
        A pooled connection the origin closed just as it was reused: a GET is
        retried once on a fresh connection and the client never notices.
        """
        first = self.request()
        first.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        reused = self.request()
        self.assertIs(reused, first)
        reused.connectionLost(Failure(ConnectionRefusedError()))
        fresh = self.upstreams.made[-1]
        self.assertIsNot(fresh, first)
        fresh.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(self.client.value().endswith(b"ok"))
        self.assertEqual(self.client.value().count(b"HTTP/1.1 200 OK"), 2)

    def test_postNotRetried(self):
        first = self.request()
        first.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        reused = self.request(b"POST http://origin/ HTTP/1.1\r\nHost: origin\r\nContent-Length: 1\r\n\r\nx")
        reused.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(len(self.upstreams.made), 1)
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", self.client.value())

    def test_upstreamTimeout(self):
        self.request()
        self.clock.advance(29)
        self.assertNotIn(b"504", self.client.value())
        self.clock.advance(1)
        self.assertIn(b"HTTP/1.1 504 Gateway Timeout", self.client.value())
        self.assertIn(b"upstream timed out", self.client.value())
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_read_timeout;", self.client.value())

    def test_truncatedResponseAbortsClient(self):
        """
        A response cut short cannot be completed honestly: the client
        connection is aborted instead of ending the message.
        """
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        upstream.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(self.client.disconnecting)
        self.assertEqual(self.handler.done[0].errorType, "http_response_incomplete")

    def test_closedBeforeResponding(self):
        upstream = self.request()
        upstream.connectionLost(Failure(ConnectionDone()))
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", self.client.value())
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_terminated;", self.client.value())

    def test_closedMidHead(self):
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Le")
        upstream.connectionLost(Failure(ConnectionDone()))
        self.assertIn(
            b'Proxy-Status: dualproxy; error=http_response_incomplete; details="upstream closed the connection early"',
            self.client.value(),
        )

    def test_unsupportedTransferCoding(self):
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", self.client.value())
        self.assertIn(b"Proxy-Status: dualproxy; error=http_response_transfer_coding;", self.client.value())

    def test_unaskedSwitchIsProtocolError(self):
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", self.client.value())
        self.assertIn(b"Proxy-Status: dualproxy; error=http_protocol_error;", self.client.value())

    def test_clientGoneAbortsUpstream(self):
        upstream = self.request()
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        self.channel.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(upstream.transport.disconnecting)
        self.assertEqual(self.pool.idleCount("origin"), 0)

    def test_earlyResponseDropsUnsentBody(self):
        """
        An upstream that answers before the whole request body was sent
        cannot be reused: the rest of the body would be read as a request.
        """
        upstream = self.request(b"POST http://origin/ HTTP/1.1\r\nHost: origin\r\nContent-Length: 10\r\n\r\nab")
        upstream.dataReceived(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertIn(b"413", self.client.value())
        self.assertTrue(upstream.transport.disconnecting)
        self.assertEqual(self.pool.idleCount("origin"), 0)


class ConnectFailureTests(SynchronousTestCase):
    def answer(self, failure):
        clock = Clock()
        pool = ConnectionPool(clock, 2, 60.0)
        client = StringTransport()

        def relay(exchange):
            head = RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"o")]), NO_BODY)
            Relay(exchange, head, pool, "o", lambda: fail(failure), lambda head: None, "origin o:80").start()

        channel = HTTPServerChannel(RecordingHandler(relay), clock, 60.0)
        channel.makeConnection(client)
        channel.dataReceived(b"GET http://o/ HTTP/1.1\r\nHost: o\r\n\r\n")
        return client.value()

    def test_refused(self):
        value = self.answer(ConnectionRefusedError())
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", value)
        self.assertIn(b"origin o:80 refused the connection", value)
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_refused;", value)

    def test_connectTimeout(self):
        value = self.answer(TimeoutError())
        self.assertIn(b"HTTP/1.1 504 Gateway Timeout", value)
        self.assertIn(b"connecting to origin o:80 timed out", value)
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_timeout;", value)


# (rule, failure to connect, status, RFC 9209 error type)
CONNECT_FAILURES = [
    ("no name", error.DNSLookupError("o"), 502, "dns_error"),
    ("only a lookup is bounded by a Deferred timeout", defer.TimeoutError(), 504, "dns_timeout"),
    ("refused", ConnectionRefusedError(), 502, "connection_refused"),
    ("connect timed out", TimeoutError(), 504, "connection_timeout"),
    ("TCP timed out", error.TCPTimedOutError(), 504, "connection_timeout"),
    ("network unreachable", error.NoRouteError(), 502, "destination_ip_unroutable"),
    ("host unreachable", error.getConnectError((errno.EHOSTUNREACH, "No route to host")), 502,
     "destination_ip_unroutable"),
    ("no local address", error.getConnectError((errno.EADDRNOTAVAIL, "Cannot assign")), 502,
     "proxy_internal_error"),
    ("out of descriptors: over once some are freed", error.ConnectBindError(errno.EMFILE, "Too many open files"),
     503, "proxy_internal_error"),
    ("the system out of descriptors", error.ConnectBindError(errno.ENFILE, "Too many open files in system"), 503,
     "proxy_internal_error"),
    ("a refusal stands", Refusal(403, "denied", errorType="destination_ip_prohibited"), 403,
     "destination_ip_prohibited"),
]


@fromTable(CONNECT_FAILURES, "check")
class AsRefusalTests(SynchronousTestCase):
    def check(self, exception, status, errorType):
        refusal = asRefusal(Failure(exception), "origin o:80")
        self.assertEqual((refusal.status, refusal.errorType), (status, errorType))


class ConnectionPoolTests(SynchronousTestCase):
    def test_dropKey(self):
        """
        Dropping a key closes its idle connections and keeps the others.
        """
        clock = Clock()
        pool = ConnectionPool(clock, 2, 60.0)
        pool.startService()
        self.addCleanup(pool.stopService)
        upstreams = Upstreams(clock)
        for key in ("old", "old", "other"):
            pool.acquire(key, upstreams)
        for upstream in upstreams.made:
            pool.release(upstream)
        pool.dropKey("old")
        pool.dropKey("unknown")
        self.assertEqual([u.transport.disconnecting for u in upstreams.made], [True, True, False])
        self.assertEqual((pool.idleCount("old"), pool.idleCount("other")), (0, 1))
        fresh = self.successResultOf(pool.acquire("old", upstreams))
        self.assertIs(fresh, upstreams.made[-1])
        self.assertEqual(len(upstreams.made), 4)

    def test_connectionInUseWhenKeyDroppedNotPooled(self):
        """
        A connection busy when its key was dropped is closed when released,
        not kept for reuse: it leads to the old address.
        """
        clock = Clock()
        pool = ConnectionPool(clock, 2, 60.0)
        pool.startService()
        self.addCleanup(pool.stopService)
        busy = self.successResultOf(pool.acquire("old", Upstreams(clock)))
        pool.dropKey("old")
        pool.release(busy)
        self.assertTrue(busy.transport.disconnecting)
        self.assertEqual(pool.idleCount("old"), 0)
