"""
The upstream side's own rules in memory: the bounds on a response head
([limits] max_response_header_bytes) and where they apply, and an upstream
that does not speak HTTP told apart by its first bytes, and quick ACKs
for a response that arrives in parts, and a tunnel's producer outliving
its TLS upstream.
"""

from __future__ import annotations

import socket

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dualproxy.http.message import LENGTH, Headers, Refusal, RequestHead
from dualproxy.http.parser import MessageReader
from dualproxy.http.proxystatus import HTTP_PROTOCOL_ERROR, HTTP_RESPONSE_HEADER_SECTION_SIZE
from dualproxy.relay.client import (
    DEFAULT_RESPONSE_LIMITS, TCP_QUICKACK, UpstreamProtocol, responseLimits,
)
from dualproxy.relay.pool import ConnectionPool
from dualproxy.relay.relay import Relay
from dualproxy.server.http1 import HTTPServerChannel

from ..tables import fromTable
from .test_parser import Recorder
from .test_relay import Upstreams
from .test_server import RecordingHandler


def readResponse(pieces, limits=DEFAULT_RESPONSE_LIMITS):
    """
    What a response reader makes of C{pieces}: its events, or the status
    and error type it refused them with.
    """
    sink = Recorder()
    reader = MessageReader(sink, False, limits)
    reader.expectResponse(b"GET")
    try:
        for piece in pieces:
            reader.feed(piece)
    except Refusal as refusal:
        return refusal.status, refusal.errorType
    return sink.events


def head(fields: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"


def pieces(wire: bytes, size: int = 4096):
    return [wire[i:i + size] for i in range(0, len(wire), size)]


class ResponseLimitsTests(SynchronousTestCase):
    """
    The one setting bounds the whole head; lines and fields are bounded
    only so far as a head of that size needs.
    """

    def test_derivedBounds(self):
        self.assertEqual((DEFAULT_RESPONSE_LIMITS.maxHead, DEFAULT_RESPONSE_LIMITS.maxLine,
                          DEFAULT_RESPONSE_LIMITS.maxFields), (65536, 65536, 1024))
        self.assertEqual(responseLimits(1000).maxFields, 100)

    def test_longFieldLineWithinTheHead(self):
        """
        One field line far longer than a request's may be (a big
        Content-Security-Policy) is fine within the head's bytes.
        """
        events = readResponse(pieces(head(b"X-Big: " + b"a" * 60000 + b"\r\n")))
        self.assertEqual(events[0][4][0], (b"X-Big", b"a" * 60000))

    def test_manyFieldsWithinTheHead(self):
        events = readResponse(pieces(head(b"Set-Cookie: n=v\r\n" * 1000)))
        self.assertEqual(len(events[0][4]), 1001)

    def test_headOverTheLimit(self):
        wire = head(b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 1000) for i in range(70)))
        self.assertEqual(readResponse(pieces(wire)), (502, HTTP_RESPONSE_HEADER_SECTION_SIZE))
        self.assertEqual(readResponse(pieces(wire), responseLimits(131072))[-1], ("end",))

    def test_tooManyFields(self):
        wire = head(b"A: 1\r\n" * 1030)
        self.assertEqual(readResponse([wire]), (502, HTTP_RESPONSE_HEADER_SECTION_SIZE))


# (rule, first bytes from the upstream, refused before the head is whole)
FIRST_BYTES = [
    ("another service's banner line", b"SSH-2.0-OpenSSH_9.6\r\n", True),
    ("a TLS alert (plain HTTP sent to a TLS port)", b"\x15\x03\x03\x00\x02\x02\x46", True),
    ("RFC 9112 \u00a72.3: the HTTP-name is case-sensitive", b"http/1.1 200 OK\r\n", True),
    ("a malformed status line before its fields", b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n", True),
    ("a status line still arriving", b"HTTP/1.", False),
    ("fields still arriving", b"HTTP/1.1 200 OK\r\nContent-Le", False),
    ("a status line without a reason, fields still arriving", b"HTTP/1.1 204\r\nDate: x", False),
]


@fromTable(FIRST_BYTES, "check")
class FirstBytesTests(SynchronousTestCase):
    """
    A response head that cannot be HTTP is refused (502, protocol error)
    as soon as its first bytes show it, not when the upstream times out or
    closes; one that may still be HTTP is waited for.
    """

    def check(self, wire: bytes, refused: bool):
        expected = (502, HTTP_PROTOCOL_ERROR) if refused else []
        for split in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
            self.assertEqual(readResponse(split), expected, split)


class PoolLimitsTests(SynchronousTestCase):
    """
    The pool gives every connection it hands out its current bounds: a
    connection pooled before a reload reads by the reloaded ones.
    """

    def test_freshAndReusedConnections(self):
        clock = Clock()
        limits = responseLimits(1000)
        pool = ConnectionPool(clock, 2, 60.0, limits)
        pool.startService()
        self.addCleanup(pool.stopService)
        upstreams = Upstreams(clock)
        upstream = self.successResultOf(pool.acquire("origin", upstreams))
        self.assertIs(upstream.reader.limits, limits)
        pool.release(upstream)
        pool.responseLimits = raised = responseLimits(200000)
        reused = self.successResultOf(pool.acquire("origin", upstreams))
        self.assertIs(reused, upstream)
        self.assertIs(reused.reader.limits, raised)


    def test_readTimeoutOfReusedConnections(self):
        """
        A connection reused after the read timeout was shortened times out
        by the new one, though its timer was armed for the old.
        """
        clock = Clock()
        pool = ConnectionPool(clock, 2, 60.0, readTimeout=60.0)
        pool.startService()
        self.addCleanup(pool.stopService)
        upstream = self.successResultOf(pool.acquire("origin", Upstreams(clock, readTimeout=60.0)))
        failures = []
        listener = Listener(failures)
        upstream.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"origin")])), listener)
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(pool.idleCount(), 1)
        pool.readTimeout = 1.0
        reused = self.successResultOf(pool.acquire("origin", Upstreams(clock)))
        self.assertIs(reused, upstream)
        reused.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"origin")])), listener)
        clock.advance(0.9)
        self.assertEqual(failures, [])
        clock.advance(0.1)
        self.assertEqual(failures, [504])



class InterimDeadlineTests(SynchronousTestCase):
    """
    Interim responses are not progress: a trickle of 102 Processing does
    not hold an exchange past the read timeout after the request was sent.
    """

    def setUp(self):
        self.clock = Clock()
        self.pool = ConnectionPool(self.clock, 2, 60.0, readTimeout=5.0)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.upstream = self.successResultOf(self.pool.acquire("origin", Upstreams(self.clock, readTimeout=5.0)))
        self.failures = []
        self.listener = Listener(self.failures)
        self.listener.responseInterim = lambda head: None

    def send(self, framing=0):
        request = RequestHead(b"POST", b"/", b"HTTP/1.1", Headers([(b"Host", b"origin")]))
        request.framing = framing
        self.upstream.send(request, self.listener)

    def trickle(self, seconds: int) -> None:
        for _ in range(seconds):
            self.upstream.dataReceived(b"HTTP/1.1 102 Processing\r\n\r\n")
            self.clock.advance(1)

    def test_trickleOfInterimResponsesIsCut(self):
        self.send()
        self.trickle(4)
        self.assertEqual(self.failures, [])
        self.trickle(1)
        self.assertEqual(self.failures, [502])
        self.assertTrue(self.upstream.transport.disconnected)

    def test_finalResponseInTime(self):
        self.send()
        self.trickle(4)
        self.upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.clock.advance(10)
        self.assertEqual(self.failures, [])

    def test_deadlineStartsWhenTheRequestIsSent(self):
        """
        A 100 Continue before a long upload does not start the clock: the
        upstream cannot answer before it has the body.
        """
        self.send(framing=LENGTH)
        self.upstream.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.clock.advance(3)
        self.upstream.writeBody(b"x")
        self.upstream.dataReceived(b"HTTP/1.1 102 Processing\r\n\r\n")
        self.clock.advance(1)
        self.upstream.endBody()
        self.clock.advance(3)
        self.upstream.dataReceived(b"HTTP/1.1 102 Processing\r\n\r\n")
        self.clock.advance(1.9)
        self.assertEqual(self.failures, [])
        self.clock.advance(0.2)
        self.assertEqual(self.failures, [502])

class Listener:
    """
    A response listener that notes the statuses of failures.
    """

    def __init__(self, failures):
        self.failures = failures

    def responseHead(self, head):
        pass

    def responseBody(self, data):
        pass

    def responseEnded(self):
        pass

    def responseFailed(self, refusal):
        self.failures.append(refusal.status)


class ReusedConnectionTests(SynchronousTestCase):
    """
    GETs relayed on a pooled connection: which failures are retried on a
    fresh one (the upstream closed it unanswered) and which are not (it
    had the request: asking again would only double its work and the
    client's wait).
    """

    def setUp(self):
        self.clock = Clock()
        self.pool = ConnectionPool(self.clock, 2, 60.0, responseLimits(1000))
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        self.upstreams = Upstreams(self.clock, readTimeout=5.0)
        self.client = StringTransport()
        channel = HTTPServerChannel(RecordingHandler(self.relay), self.clock, 60.0)
        channel.makeConnection(self.client)
        channel.dataReceived(b"GET http://origin/ HTTP/1.1\r\nHost: origin\r\n\r\n")
        self.upstreams.made[0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.client.clear()
        channel.dataReceived(b"GET http://origin/ HTTP/1.1\r\nHost: origin\r\n\r\n")
        self.reused, = self.upstreams.made
        self.assertTrue(self.reused.reused)

    def relay(self, exchange):
        request = RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"origin")]))
        Relay(exchange, request, self.pool, "origin", self.upstreams, lambda head: None, "origin").start()

    def assertNotRetried(self, errorType: bytes):
        self.assertTrue(self.client.value().startswith(b"HTTP/1.1 50"), self.client.value())
        self.assertIn(b"Proxy-Status: dualproxy; error=" + errorType + b";", self.client.value())
        self.assertEqual(len(self.upstreams.made), 1, "sent again")
        self.assertTrue(self.reused.transport.disconnected, "not aborted")
        self.assertEqual(self.pool.idleCount(), 0)

    def test_closedUnansweredRetried(self):
        self.reused.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.upstreams.made), 2)
        self.assertEqual(self.client.value(), b"")

    def test_timeoutNotRetried(self):
        self.clock.advance(5)
        self.assertNotRetried(b"connection_read_timeout")

    def test_malformedAnswerNotRetried(self):
        self.reused.dataReceived(b"SSH-2.0-OpenSSH_9.6\r\n")
        self.assertNotRetried(b"http_protocol_error")

    def test_headOverTheLimitNotRetried(self):
        """
        A response head over the limit reaches the client as a 502 of ours,
        and its connection, out of step, is closed rather than pooled.
        """
        self.reused.dataReceived(head(b"X-Padding: " + b"p" * 1000 + b"\r\n"))
        self.assertNotRetried(b"http_response_header_section_size")
        self.assertNotIn(b"X-Padding", self.client.value())

    def test_cutHeadNotRetried(self):
        self.reused.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Le")
        self.reused.connectionLost(Failure(ConnectionDone()))
        self.assertIn(b"error=http_response_incomplete;", self.client.value())
        self.assertEqual(len(self.upstreams.made), 1, "sent again")


class _Handle:
    """
    A TCP socket as far as quick ACKs go: notes the quick-ACK requests
    made of it, and whether Nagle was turned off.
    """

    def __init__(self, family=socket.AF_INET, refuse=False):
        self.family = family
        self.refuse = refuse
        self.options = []
        self.noDelay = False

    def setsockopt(self, level, option, value):
        if (level, option) == (socket.IPPROTO_TCP, socket.TCP_NODELAY):
            self.noDelay = bool(value)
            return
        if self.refuse:
            raise OSError("not here")
        self.options.append((level, option, value))


class _SocketTransport(FileDescriptor):
    """
    A socket transport in memory: the type L{socketTransport} looks for,
    with a recorded handle.
    """

    def __init__(self, handle):
        super().__init__(Clock())
        self.handle = handle
        self.written = []

    def getHandle(self):
        return self.handle

    def write(self, data):
        self.written.append(data)

    def abortConnection(self):
        pass

    def loseConnection(self):
        pass


class QuickAckTests(SynchronousTestCase):
    """
    A response that arrives in parts has each part acknowledged at once
    (TCP_QUICKACK re-armed on every read); a response read whole costs no
    system call.
    """

    def setUp(self):
        if TCP_QUICKACK is None:
            raise SkipTest("TCP_QUICKACK is Linux's")

    def connect(self, handle):
        upstream = UpstreamProtocol(Clock(), 5.0)
        upstream.makeConnection(_SocketTransport(handle))
        failures = []
        upstream.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"origin")])), Listener(failures))
        return upstream, failures

    def test_partsAcknowledgedAtOnce(self):
        handle = _Handle()
        upstream, failures = self.connect(handle)
        self.assertTrue(handle.noDelay)
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        self.assertEqual(handle.options, [(socket.IPPROTO_TCP, TCP_QUICKACK, 1)])
        upstream.dataReceived(b"ab")
        self.assertEqual(len(handle.options), 2)
        upstream.dataReceived(b"cd")
        self.assertEqual(len(handle.options), 2, "nothing more is due")
        self.assertEqual(failures, [])

    def test_wholeResponseNoCall(self):
        handle = _Handle(socket.AF_INET6)
        upstream, failures = self.connect(handle)
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(handle.options, [])

    def test_notTCP(self):
        """
        A UNIX-socket upstream is left alone.
        """
        handle = _Handle(socket.AF_UNIX)
        upstream, failures = self.connect(handle)
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        upstream.dataReceived(b"ab")
        self.assertEqual((handle.options, handle.noDelay), ([], False))
        self.assertEqual(failures, [])

    def test_refusedOnceThenLeftAlone(self):
        """
        A socket that refuses the option is not asked again, and the
        response goes on.
        """
        handle = _Handle(refuse=True)
        upstream, failures = self.connect(handle)
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        handle.refuse = False
        upstream.dataReceived(b"ab")
        self.assertEqual(handle.options, [])
        upstream.dataReceived(b"cd")
        self.assertEqual(failures, [])


class TunnelOverTLSTests(SynchronousTestCase):
    """
    A tunnel through a TLS upstream (an https parent) that closes first:
    the client's side still holds the upstream as its producer while it
    drains, and stopping it then must not touch the lost TLS transport.
    """

    def test_producerOutlivesTheTLSConnection(self):
        upstream = UpstreamProtocol(Clock(), 5.0)
        tls = TLSMemoryBIOFactory(CertificateOptions(), True,
                                  Factory.forProtocol(lambda: upstream)).buildProtocol(None)
        tls.makeConnection(StringTransport())
        client = StringTransport()
        upstream.becomeTunnel(client)
        tls.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(client.disconnecting)
        upstream.pauseProducing()
        upstream.resumeProducing()
        upstream.stopProducing()
