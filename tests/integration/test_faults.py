"""
Upstream faults over real sockets (issue #7): an origin that resets in the
middle of a body, answers with something that is not HTTP, falls silent,
sends a head over the limit, or closes a pooled connection just as it is
reused.  Each test checks what the client sees, to the byte where it
matters, and that the proxy goes on serving other clients; each runs in
reverse mode (a pool of one backend) and in forward mode (absolute URIs).
"""

from __future__ import annotations

import socket
import struct
from typing import Callable, List

from twisted.internet import defer, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory, Protocol
from twisted.names import dns
from twisted.trial.unittest import TestCase

from dualproxy.config import fromDict
from dualproxy.plugins import findModes

from ..tables import fromTable
from .support import Origin, Proxy

# Generous: how long something that should happen may take on a busy machine.
PATIENCE = 20.0


def within(deferred: defer.Deferred, seconds: float = PATIENCE) -> defer.Deferred:
    return deferred.addTimeout(seconds, reactor)


def pathOf(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


def splitResponse(received: bytes):
    """
    The head and whatever followed it.
    """
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def dechunk(body: bytes):
    """
    The data of a chunked body as far as it goes, and whether its last
    chunk arrived.
    """
    data = b""
    while True:
        line, newline, rest = body.partition(b"\r\n")
        if not newline:
            return data, False
        size = int(line, 16)
        if size == 0:
            return data, True
        if len(rest) < size + 2:
            return data + rest[:size], False
        data += rest[:size]
        body = rest[size + 2:]


class _ScriptedConnection(Protocol):
    """
    One connection to a L{ScriptedOrigin}: each request head it reads goes
    to the origin's script (bodies, by Content-Length, are skipped).
    C{lost} fires when the connection closes.
    """

    def __init__(self, origin: ScriptedOrigin):
        self.origin = origin
        self.heads: List[bytes] = []
        self.lost: defer.Deferred = defer.Deferred()
        self._buffer = b""
        self._skip = 0

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while not self.transport.disconnecting:
            skipped = min(self._skip, len(self._buffer))
            self._skip -= skipped
            self._buffer = self._buffer[skipped:]
            if self._skip or b"\r\n\r\n" not in self._buffer:
                return
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            self.heads.append(head)
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    self._skip = int(line.split(b":", 1)[1])
            self.origin.script(self, head)
            arrivals, self.origin.arrivals = self.origin.arrivals, []
            for arrival in arrivals:
                arrival.callback(self)

    def reset(self) -> None:
        """
        Close with a TCP reset (SO_LINGER 0), not an orderly FIN.
        """
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


class ScriptedOrigin(Factory):
    """
    An origin that answers each request as C{script(connection, head)}
    says, for the faults no real server commits on purpose.
    """

    noisy = False

    def __init__(self, script: Callable[[_ScriptedConnection, bytes], None]):
        self.script = script
        self.connections: List[_ScriptedConnection] = []
        self.arrivals: List[defer.Deferred] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"

    def buildProtocol(self, addr) -> _ScriptedConnection:
        connection = _ScriptedConnection(self)
        self.connections.append(connection)
        return connection

    def url(self) -> str:
        return f"http://{self.address}"

    def heads(self) -> List[bytes]:
        return [head for connection in self.connections for head in connection.heads]

    def nextRequest(self) -> defer.Deferred:
        """
        Fires with the connection once the next request was handed to the
        script.
        """
        self.arrivals.append(defer.Deferred())
        return self.arrivals[-1]

    def stop(self) -> defer.Deferred:
        for connection in self.connections:
            if connection.transport.connected:
                connection.transport.abortConnection()
        return self.port.stopListening()


class _Client(Protocol):
    """
    Sends C{request} (one or several, pipelined) and keeps every byte of
    the answer.  C{lost} fires with them when the connection closes.
    """

    def __init__(self, request: bytes):
        self.request = request
        self.received = b""
        self.lost: defer.Deferred = defer.Deferred()
        self._waits: list = []

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def until(self, condition: Callable[[bytes], bool]) -> defer.Deferred:
        """
        Fires once what was received satisfies C{condition}.
        """
        waiting: defer.Deferred = defer.Deferred()
        self._waits.append((condition, waiting))
        self.dataReceived(b"")
        return within(waiting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for wait in list(self._waits):
            condition, waiting = wait
            if condition(self.received):
                self._waits.remove(wait)
                waiting.callback(self.received)

    def connectionLost(self, reason=None) -> None:
        for condition, waiting in self._waits:
            waiting.errback(AssertionError(f"closed before the awaited bytes came: {self.received!r}"))
        self._waits = []
        self.lost.callback(self.received)


def connect(address: str, request: bytes) -> _Client:
    client = _Client(request)
    host, port = address.split(":")
    reactor.connectTCP(host, int(port), ClientFactory.forProtocol(lambda: client))
    return client


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answerOK(connection: _ScriptedConnection, head: bytes) -> None:
    connection.transport.write(OK)


class _Modes:
    """
    What the tests need of a mode: a proxy in front of a faulty origin with
    a healthy one beside it, and the request target for a path on either.
    """

    healthy: Origin

    def setUp(self):
        self.healthy = Origin("healthy")
        self.addCleanup(self.healthy.stop)

    def origin(self, script) -> ScriptedOrigin:
        origin = ScriptedOrigin(script)
        self.addCleanup(origin.stop)
        return origin

    def startProxy(self, origin: ScriptedOrigin, **settings) -> Proxy:
        self.settings = dict(self.modeSettings(origin), **settings)
        proxy = Proxy(self.settings)
        self.addCleanup(proxy.stop)
        return proxy

    def request(self, origin, path: bytes, method: bytes = b"GET", body: bytes = b"", close: bool = True) -> bytes:
        head = b"%s %s HTTP/1.1\r\nHost: a\r\n" % (method, self.target(origin, path))
        if close:
            head += b"Connection: close\r\n"
        if body:
            head += b"Content-Length: %d\r\n" % len(body)
        return head + b"\r\n" + body

    @inlineCallbacks
    def fetch(self, proxy: Proxy, origin, path: bytes, method: bytes = b"GET", body: bytes = b""):
        """
        One request on a connection of its own; everything received.
        """
        client = connect(proxy.address, self.request(origin, path, method, body))
        received = yield within(client.lost)
        return received

    @inlineCallbacks
    def stillServing(self, proxy: Proxy):
        received = yield self.fetch(proxy, self.healthy, b"/name")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertTrue(received.endswith(b"\r\n\r\nhealthy"), received)


class Reverse(_Modes):
    """
    Reverse mode: the origin is the only backend of the pool at /, the
    healthy one that of another pool at /healthy.
    """

    def modeSettings(self, origin) -> dict:
        return {"mode": "reverse", "reverse": {
            "pools": {"app": {"backends": [origin.url()]},
                      "healthy": {"backends": [f"http://{self.healthy.address}"]}},
            "routes": [{"prefix": "/healthy", "pool": "healthy", "strip_prefix": True},
                       {"prefix": "/", "pool": "app"}]}}

    def target(self, origin, path: bytes) -> bytes:
        return b"/healthy" + path if origin is self.healthy else path


class Forward(_Modes):
    """
    Forward mode: absolute URIs, loopback destinations allowed.
    """

    def modeSettings(self, origin) -> dict:
        return {"mode": "forward", "forward": {"allow_destinations": ["127.0.0.0/8"]}}

    def target(self, origin, path: bytes) -> bytes:
        return b"http://" + origin.address.encode() + path


# (rule, what the origin sends, whether it then closes)
NOT_HTTP = [
    ("another service's banner, the connection kept open", b"SSH-2.0-OpenSSH_9.6\r\n", False),
    ("a TLS alert, then close", b"\x15\x03\x03\x00\x02\x02\x46", True),
    ("a body without a status line", b"<html>hello</html>\r\n\r\n", False),
]


@fromTable(NOT_HTTP, "checkNotHTTP")
class _Faults:
    """
    The fault tests, for either mode.
    """

    # Cut responses

    @inlineCallbacks
    def checkCut(self, origin: ScriptedOrigin, cutAfter: Callable[[bytes], bool], cut: str):
        """
        A client pipelines a request for /cut, whose response the origin
        cuts with C{cut} ("reset" or "hang") once the client has had
        C{cutAfter}, and a second request.  The client's connection is
        closed: what it got is exactly what the origin sent before the cut,
        and the second request is never answered nor forwarded.
        """
        proxy = self.startProxy(origin, timeouts={"upstream_read": 1.0} if cut == "hang" else {})
        started = reactor.seconds()
        client = connect(proxy.address, self.request(origin, b"/cut", close=False)
                         + self.request(origin, b"/second"))
        yield client.until(cutAfter)
        connection, = origin.connections
        if cut == "reset":
            connection.reset()
        else:
            # Served while the cut response hangs.
            yield self.stillServing(proxy)
            self.assertFalse(client.lost.called)
        received = yield within(client.lost)
        if cut == "hang":
            self.assertGreaterEqual(reactor.seconds() - started, 1.0)
            yield within(connection.lost)
        self.assertEqual(received.count(b"HTTP/1.1 "), 1, received)
        self.assertEqual([pathOf(head) for head in origin.heads()], [b"/cut"])
        yield self.stillServing(proxy)
        return received

    def sendPartial(self, head: bytes, partial: bytes):
        def script(connection, requestHead):
            connection.transport.write(head + partial)
        return script

    @inlineCallbacks
    def checkCutLength(self, length: int, partial: bytes, cut: str):
        origin = self.origin(self.sendPartial(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length, partial))
        received = yield self.checkCut(origin, lambda received: splitResponse(received)[1] == partial, cut)
        head, body = splitResponse(received)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertIn(b"\r\nContent-Length: %d" % length, head)
        self.assertEqual(body, partial, "not exactly what the origin sent")

    def test_resetMidBody(self):
        """
        An origin resetting in the middle of a Content-Length body.
        """
        return self.checkCutLength(1000, b"0123456789", "reset")

    def test_resetMidLargeBody(self):
        """
        The same on the path that moves large bodies by splice.
        """
        return self.checkCutLength(2000000, b"x" * 600000, "reset")

    def test_hangMidBody(self):
        """
        An origin falling silent in the middle of a body: after
        timeouts.upstream_read both connections are closed.
        """
        return self.checkCutLength(1000, b"0123456789", "hang")

    @inlineCallbacks
    def test_resetMidChunkedBody(self):
        """
        A chunked response reset in the middle: the client gets the chunks
        sent, never the last chunk that would make it look complete.
        """
        origin = self.origin(self.sendPartial(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                              b"a\r\n0123456789\r\n"))
        received = yield self.checkCut(
            origin, lambda received: dechunk(splitResponse(received)[1])[0] == b"0123456789", "reset")
        head, body = splitResponse(received)
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(dechunk(body), (b"0123456789", False))
        self.assertTrue(body.endswith(b"0123456789\r\n"), body)

    # Not HTTP, or nothing at all

    @inlineCallbacks
    def checkNotHTTP(self, garbage: bytes, close: bool):
        """
        502, at once (well within timeouts.upstream_read), naming the
        protocol error; that connection is not kept.
        """
        def script(connection, head):
            connection.transport.write(garbage)
            if close:
                connection.transport.loseConnection()

        origin = self.origin(script)
        proxy = self.startProxy(origin, timeouts={"upstream_read": 60.0})
        received = yield self.fetch(proxy, origin, b"/")
        self.assertTrue(received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), received)
        self.assertIn(b'\r\nProxy-Status: dualproxy; error=http_protocol_error; '
                      b'details="malformed status line from upstream"\r\n', received)
        self.assertNotIn(garbage, received)
        yield within(origin.connections[0].lost)
        yield self.stillServing(proxy)

    @inlineCallbacks
    def test_hangBeforeHead(self):
        """
        An origin that never answers does not hold up other clients
        meanwhile; its own client gets 504 after timeouts.upstream_read.
        """
        origin = self.origin(lambda connection, head: None)
        proxy = self.startProxy(origin, timeouts={"upstream_read": 1.0})
        arrived = origin.nextRequest()
        started = reactor.seconds()
        waiting = self.fetch(proxy, origin, b"/")
        connection = yield within(arrived)
        yield self.stillServing(proxy)
        self.assertFalse(waiting.called)
        received = yield waiting
        self.assertGreaterEqual(reactor.seconds() - started, 1.0)
        self.assertTrue(received.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), received)
        self.assertIn(b"\r\nProxy-Status: dualproxy; error=connection_read_timeout;", received)
        yield within(connection.lost)

    # A pooled connection closed as it is reused

    def closeOnReuse(self, connection, head):
        """
        Answer the first request on each connection and keep it open; close
        it without answering on the second, as an origin whose idle timeout
        struck just as the proxy reused the connection.
        """
        if len(connection.heads) == 1:
            connection.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + pathOf(head)[:5].ljust(5))
        else:
            connection.transport.loseConnection()

    @inlineCallbacks
    def test_idempotentRetriedWhenReusedConnectionCloses(self):
        """
        A GET sent on a pooled connection the origin closes unanswered is
        sent again on a fresh one, unnoticed by the client.
        """
        origin = self.origin(self.closeOnReuse)
        proxy = self.startProxy(origin)
        first = yield self.fetch(proxy, origin, b"/one")
        self.assertTrue(first.endswith(b"\r\n\r\n/one "), first)
        second = yield self.fetch(proxy, origin, b"/two")
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"), second)
        self.assertTrue(second.endswith(b"\r\n\r\n/two "), second)
        self.assertEqual([[pathOf(head) for head in c.heads] for c in origin.connections],
                         [[b"/one", b"/two"], [b"/two"]])
        yield self.stillServing(proxy)

    @inlineCallbacks
    def test_postNotRetriedWhenReusedConnectionCloses(self):
        """
        A POST in the same case may have been acted on: it is not sent
        again, and the client gets 502.
        """
        origin = self.origin(self.closeOnReuse)
        proxy = self.startProxy(origin)
        yield self.fetch(proxy, origin, b"/one")
        received = yield self.fetch(proxy, origin, b"/two", b"POST", b"x=1")
        self.assertTrue(received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), received)
        self.assertIn(b'\r\nProxy-Status: dualproxy; error=connection_terminated; '
                      b'details="upstream closed the connection before responding"\r\n', received)
        self.assertEqual([[pathOf(head) for head in c.heads] for c in origin.connections], [[b"/one", b"/two"]])
        yield self.stillServing(proxy)

    # [limits] max_response_header_bytes

    def bigHead(self, connection, head):
        """
        /big: a response head of about 70 KB; anything else a small one.
        Both keep the connection.
        """
        if pathOf(head) == b"/big":
            fields = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 1000) for i in range(70))
            connection.transport.write(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 3\r\n\r\nbig")
        else:
            answerOK(connection, head)

    @inlineCallbacks
    def test_responseHeadOverTheLimit(self):
        """
        Beyond the default 64 KB the client gets 502 naming the error; the
        upstream connection (a pooled one here) is closed, and the request
        is not sent again.
        """
        origin = self.origin(self.bigHead)
        proxy = self.startProxy(origin)
        yield self.fetch(proxy, origin, b"/small")
        received = yield self.fetch(proxy, origin, b"/big")
        self.assertTrue(received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), received)
        self.assertIn(b"\r\nProxy-Status: dualproxy; error=http_response_header_section_size;", received)
        self.assertNotIn(b"X-Padding", received)
        yield within(origin.connections[0].lost)
        received = yield self.fetch(proxy, origin, b"/small")
        self.assertTrue(received.endswith(b"\r\n\r\nok"), received)
        self.assertEqual([[pathOf(head) for head in c.heads] for c in origin.connections],
                         [[b"/small", b"/big"], [b"/small"]])

    @inlineCallbacks
    def test_responseHeadWithinARaisedLimit(self):
        origin = self.origin(self.bigHead)
        proxy = self.startProxy(origin, limits={"max_response_header_bytes": 131072})
        received = yield self.fetch(proxy, origin, b"/big")
        head, body = splitResponse(received)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertIn(b"\r\nX-Padding-69: " + b"p" * 1000, head)
        self.assertEqual(body, b"big")

    @inlineCallbacks
    def test_reloadedLimitAppliesToPooledConnections(self):
        """
        A reload that raises the limit applies to the next request, even on
        an upstream connection pooled before it.
        """
        origin = self.origin(self.bigHead)
        proxy = self.startProxy(origin)
        received = yield self.fetch(proxy, origin, b"/small")
        self.assertTrue(received.endswith(b"\r\n\r\nok"), received)
        self.reload(proxy, limits={"max_response_header_bytes": 131072})
        received = yield self.fetch(proxy, origin, b"/big")
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertEqual(len(origin.connections), 1, "the pooled connection was not reused")


    @inlineCallbacks
    def test_reloadedReadTimeoutAppliesToPooledConnections(self):
        """
        A reload that shortens timeouts.upstream_read: an origin that falls
        silent on a connection pooled before it gets 504 in the new time.
        """
        def answerOnce(connection, head):
            if len(connection.heads) == 1:
                answerOK(connection, head)

        origin = self.origin(answerOnce)
        proxy = self.startProxy(origin, timeouts={"upstream_read": 60.0})
        yield self.fetch(proxy, origin, b"/one")
        self.reload(proxy, timeouts={"upstream_read": 0.5})
        received = yield self.fetch(proxy, origin, b"/two")
        self.assertTrue(received.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), received)
        self.assertEqual([len(connection.heads) for connection in origin.connections], [2])

    def reload(self, proxy: Proxy, **changes) -> None:
        settings = dict(self.settings, access_log="off", listen=list(proxy.config.listen), **changes)
        mode = findModes()[settings["mode"]]
        proxy.service.configure = lambda: (mode, fromDict(settings), [])
        self.assertIsNone(proxy.service.reload())


class ReverseFaultTests(Reverse, _Faults, TestCase):
    pass


class ForwardFaultTests(Forward, _Faults, TestCase):
    pass


class _FailingNameServer(DatagramProtocol):
    """
    A DNS server that answers every query with the error C{rCode}, and
    counts them.
    """

    def __init__(self, rCode: int):
        self.rCode = rCode
        self.queries = 0
        self.asked: defer.Deferred = defer.Deferred()

    def datagramReceived(self, data: bytes, address) -> None:
        query = dns.Message()
        query.fromStr(data)
        self.queries += 1
        answer = dns.Message(id=query.id, answer=1, opCode=query.opCode, recDes=query.recDes, recAv=1,
                             rCode=self.rCode)
        answer.queries = query.queries
        self.transport.write(answer.toStr(), address)
        if self.queries == 2 and not self.asked.called:
            # Both lookups of the name (A and AAAA) have been answered.
            self.asked.callback(None)


class _Backend:
    """
    A backend URL that names no listening origin.
    """

    def __init__(self, url: str):
        self._url = url

    def url(self) -> str:
        return self._url


class ReverseDNSTests(Reverse, TestCase):
    """
    A backend named by a host name that does not resolve: its requests get
    502 (504 when the lookup does not answer), while the configured name
    server keeps failing and other pools are served.  Every lookup stays in
    the test: re-resolution asks a name server started here, and lookups at
    request time (until a first re-resolution succeeds) a resolver that
    knows no names.
    """

    @inlineCallbacks
    def check(self, rCode: int, name: str, status: bytes, errorType: bytes, detail: str):
        server = _FailingNameServer(rCode)
        port = reactor.listenUDP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        backend = _Backend(f"http://{name}:80")
        settings = self.modeSettings(backend)
        settings["reverse"]["dns"] = {"servers": [f"127.0.0.1:{port.getHost().port}"]}
        proxy = Proxy(dict(settings, timeouts={"connect": 0.5}), names={})
        self.addCleanup(proxy.stop)
        yield within(server.asked)
        received = yield self.fetch(proxy, backend, b"/")
        self.assertTrue(received.startswith(b"HTTP/1.1 " + status), received)
        self.assertIn(b'\r\nProxy-Status: dualproxy; error=%s; details="%s"\r\n' % (errorType, detail.encode()),
                      received)
        yield self.stillServing(proxy)

    def test_noSuchName(self):
        return self.check(dns.ENAME, "missing.test", b"502 Bad Gateway", b"dns_error",
                          "DNS lookup failed for backend http://missing.test:80")

    def test_serverFailure(self):
        return self.check(dns.ESERVER, "missing.test", b"502 Bad Gateway", b"dns_error",
                          "DNS lookup failed for backend http://missing.test:80")

    def test_lookupThatNeverAnswers(self):
        return self.check(dns.ESERVER, "silent.test", b"504 Gateway Timeout", b"dns_timeout",
                          "DNS lookup for backend http://silent.test:80 timed out")
