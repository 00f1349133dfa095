"""
Slow and stalled clients over real sockets: a request body that stops
arriving, a response the client stops reading, a keep-alive connection left
idle.  Each is cut after its timeout, the upstream request with it, and the
proxy goes on serving everyone else.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from dualproxy.relay import splice

from .support import Origin, Proxy, StreamingOrigin, curl, pattern

# Generous: how long something that should happen may take on a busy machine.
PATIENCE = 20.0


def within(deferred: defer.Deferred, seconds: float = PATIENCE) -> defer.Deferred:
    return deferred.addTimeout(seconds, reactor)


@implementer(IPushProducer)
class _EndlessChunks(Protocol):
    """
    An origin connection that answers with a chunked body that never ends,
    as fast as the proxy takes it.
    """

    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)

    def dataReceived(self, data: bytes) -> None:
        self.factory.requests.append(data)
        if b"\r\n\r\n" in data and not self.factory.answering:
            self.factory.answering = True
            self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            self.transport.registerProducer(self, True)
            self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        for _ in range(16):
            if self.paused:
                break
            self.transport.write(self.chunk)
        else:
            reactor.callLater(0, self.resumeProducing)

    def stopProducing(self) -> None:
        self.paused = True

    def connectionLost(self, reason=None) -> None:
        self.paused = True
        self.factory.lost.callback(None)


class RecordingOrigin(Factory):
    """
    Keeps what each connection sent; with C{endless}, answers with a body
    that never ends.  C{lost} fires when the (first) connection closes.
    """

    noisy = False

    def __init__(self, endless: bool = False):
        self.requests: list = []
        self.answering = not endless
        self.lost = defer.Deferred()
        self.protocol = _EndlessChunks
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"


class _Client(Protocol):
    """
    Sends C{request}; reads only while C{reading}.  C{lost} fires with
    everything received once the connection closes.
    """

    def __init__(self, request: bytes, reading: bool):
        self.request = request
        self.reading = reading
        self.received = b""
        self.lost = defer.Deferred()

    def connectionMade(self) -> None:
        if not self.reading:
            # A small window, so the proxy's writes back up quickly.
            self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.transport.pauseProducing()
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(self.received)


def connectClient(address: str, request: bytes, reading: bool = True) -> _Client:
    client = _Client(request, reading)
    factory = ClientFactory.forProtocol(lambda: client)
    host, port = address.split(":")
    reactor.connectTCP(host, int(port), factory)
    return client


class SlowClientTests(TestCase):
    def start(self, origin, **timeouts):
        """
        A reverse proxy in front of C{origin}, with a healthy origin beside
        it under /healthy.
        """
        self.addCleanup(origin.port.stopListening)
        healthy = Origin("b")
        self.addCleanup(healthy.stop)
        proxy = Proxy({
            "mode": "reverse", "timeouts": timeouts,
            "reverse": {"pools": {"app": {"backends": [{"url": f"http://{origin.address}"}]},
                                  "healthy": {"backends": [{"url": f"http://{healthy.address}"}]}},
                        "routes": [{"prefix": "/healthy", "pool": "healthy", "strip_prefix": True},
                                   {"prefix": "/", "pool": "app"}]},
        })
        self.addCleanup(proxy.stop)
        return proxy

    @inlineCallbacks
    def stillServing(self, proxy):
        out, err, code = yield curl("-D", "-", f"{proxy.url}/healthy/headers")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)

    @inlineCallbacks
    def test_stalledRequestBodyGets408(self):
        """
        A client that sends part of a body and falls silent gets 408 after
        timeouts.client_body, and the upstream request it began is cut.
        """
        origin = RecordingOrigin()
        proxy = self.start(origin, client_body=0.5)
        started = reactor.seconds()
        client = connectClient(proxy.address, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n"
                                              + b"b" * 10)
        received = yield within(client.lost)
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        self.assertTrue(received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received)
        self.assertIn(b"Connection: close", received)
        self.assertIn(b"the request body stopped arriving for 0.5 s", received)
        yield within(origin.lost)
        self.assertTrue(b"".join(origin.requests).startswith(b"POST /upload HTTP/1.1\r\n"))
        yield self.stillServing(proxy)

    @inlineCallbacks
    def test_clientThatStopsReadingIsCut(self):
        """
        A client that stops reading a response that never ends: the proxy's
        output backs up, and after timeouts.client_write without progress
        the client is disconnected and the upstream connection closed, so
        nothing stays pinned.
        """
        origin = RecordingOrigin(endless=True)
        proxy = self.start(origin, client_write=0.5)
        started = reactor.seconds()
        client = connectClient(proxy.address, b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n", reading=False)
        yield within(origin.lost)
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        client.transport.resumeProducing()
        received = yield within(client.lost)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertNotIn(b"\r\n0\r\n\r\n", received, "a cut response looked complete")
        yield self.stillServing(proxy)

    @inlineCallbacks
    def test_clientThatStopsReadingASplicedBodyIsCut(self):
        """
        The same for a large body moved by splice, outside the transport's
        buffer: the client is cut after timeouts.client_write, not left to
        the upstream's read timeout.
        """
        splicers = []
        start = splice.Splicer.start
        self.patch(splice.Splicer, "start", lambda splicer: (splicers.append(splicer), start(splicer)))
        origin = StreamingOrigin(1 << 30)
        proxy = self.start(origin, client_write=0.5)
        client = connectClient(proxy.address, b"GET /large HTTP/1.1\r\nHost: a\r\n\r\n", reading=False)
        yield within(origin.lost)
        self.assertEqual(len(splicers), 1, "the body was not spliced")
        client.transport.resumeProducing()
        received = yield within(client.lost)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertLess(len(received), 1 << 30)
        yield self.stillServing(proxy)

    @inlineCallbacks
    def test_idleKeepAliveConnectionClosed(self):
        """
        After a response, a keep-alive connection left idle for
        timeouts.client_idle is closed by the proxy.
        """
        proxy = self.start(RecordingOrigin(), client_idle=0.5)
        client = connectClient(proxy.address, b"GET /healthy/bytes/5 HTTP/1.1\r\nHost: a\r\n\r\n")
        started = reactor.seconds()
        received = yield within(client.lost)
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertNotIn(b"Connection: close", received)
        self.assertTrue(received.endswith(b"\r\n\r\n" + pattern(5)), received)
