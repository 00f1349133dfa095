"""
What the proxy sends on is re-serialised in one canonical form (issue #7):
a raw client sends valid but unusual messages, a raw peer records the exact
bytes it receives, and the tests compare them byte for byte, in forward
and reverse mode, for requests and for responses.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from .support import Proxy
from ..tables import fromTable

# Seconds for what should happen, however loaded the machine.
PATIENCE = 30


class RecordingOrigin(Factory):
    """
    A peer that keeps the exact bytes of every request it receives, and
    answers each whole request with canned bytes.

    It finds where a request ends by its own reading of the framing, so that
    a proxy sending something else than it should shows as a missing request
    (a timeout), never as a parse by the code under test.
    """

    noisy = False

    def __init__(self, response: bytes, interface: str = "127.0.0.1", port: int = 0, close: bool = False):
        self.response = response
        self.close = close
        self.received: List[bytes] = []  # every byte, one entry per connection
        self.requests: List[bytes] = []
        self._waiting: List[Deferred] = []
        self.port = reactor.listenTCP(port, self, interface=interface)
        self.portNumber = self.port.getHost().port
        self.address = f"{interface}:{self.portNumber}"

    @property
    def connections(self) -> int:
        return len(self.received)

    def buildProtocol(self, addr):
        self.received.append(b"")
        return _RecordingProtocol(self, len(self.received) - 1)

    def nextRequest(self) -> Deferred:
        """
        Fires with the bytes of the next whole request to arrive.
        """
        waiting: Deferred = Deferred()
        self._waiting.append(waiting)
        return waiting.addTimeout(PATIENCE, reactor)

    def _request(self, data: bytes) -> None:
        self.requests.append(data)
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(data)

    def stop(self):
        return self.port.stopListening()


class _RecordingProtocol(Protocol):
    def __init__(self, factory: RecordingOrigin, index: int):
        self.factory = factory
        self.index = index
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.factory.received[self.index] += data
        self.buffer += data
        end = requestEnd(self.buffer)
        while end is not None:
            request, self.buffer = self.buffer[:end], self.buffer[end:]
            self.factory._request(request)
            if self.factory.response is not None:
                self.transport.write(self.factory.response)
            if self.factory.close:
                self.transport.loseConnection()
                return
            end = requestEnd(self.buffer)


def requestEnd(data: bytes) -> Optional[int]:
    """
    Where the first request in C{data} ends, from its CRLF head and its
    Content-Length or chunked framing; C{None} until it is all there.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head, start = data[:end].lower(), end + 4
    if b"\r\ntransfer-encoding: chunked" in head:
        chunks = chunkedEnd(data, start)
        return None if chunks is None else chunks[0]
    length = re.search(rb"\r\ncontent-length: ([0-9]+)", head)
    size = int(length.group(1)) if length else 0
    return start + size if len(data) >= start + size else None


def chunkedEnd(data: bytes, start: int) -> Optional[Tuple[int, List[bytes], bytes, List[bytes]]]:
    """
    A chunked body read leniently (extensions and trailers allowed), for
    the test to judge: its end, its chunk-size lines, the data, the trailer
    lines; C{None} while incomplete.
    """
    sizes, body, position = [], b"", start
    while True:
        eol = data.find(b"\r\n", position)
        if eol < 0:
            return None
        line = data[position:eol]
        sizes.append(line)
        size = int(line.split(b";")[0].strip(), 16)
        position = eol + 2
        if size == 0:
            break
        if len(data) < position + size + 2:
            return None
        body += data[position:position + size]
        position += size + 2
    trailers = []
    while True:
        eol = data.find(b"\r\n", position)
        if eol < 0:
            return None
        line = data[position:eol]
        position = eol + 2
        if not line:
            return position, sizes, body, trailers
        trailers.append(line)


class _RawClient(Protocol):
    def __init__(self, data: bytes, done: Deferred):
        self.data = data
        self.done = done
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback(self.received)


def rawExchange(address: str, data: bytes) -> Deferred:
    """
    Send C{data} as it is on a new connection to C{address}; fires with
    every byte received until the other side closes.
    """
    host, port = address.split(":")
    client: List[_RawClient] = []

    def cancel(deferred):
        if client:
            client[0].transport.abortConnection()

    done: Deferred = Deferred(cancel)
    client.append(_RawClient(data, done))
    connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), client[0]).addErrback(done.errback)
    return done.addTimeout(PATIENCE, reactor)


def splitResponse(data: bytes) -> Tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


ORIGIN_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def forwardProxy(testCase: TestCase, **forward) -> Proxy:
    """
    A forward proxy allowed to reach loopback, where the name origin.test
    is 127.0.0.1.
    """
    settings = {"allow_destinations": ["127.0.0.0/8"], **forward}
    proxy = Proxy({"forward": settings}, names={"origin.test": ["127.0.0.1"]})
    testCase.addCleanup(proxy.stop)
    return proxy


def reverseProxy(testCase: TestCase, origin: RecordingOrigin, anyHost: bool = False) -> Proxy:
    """
    A reverse proxy sending site.test to C{origin}; any other host gets
    404, so a request routed by the wrong host shows.  With C{anyHost},
    every host goes there.
    """
    route = {"prefix": "/", "pool": "app"} if anyHost else {"host": "site.test", "prefix": "/", "pool": "app"}
    proxy = Proxy({
        "mode": "reverse",
        "reverse": {"pools": {"app": {"backends": [{"url": f"http://{origin.address}"}], "retries": 0}},
                    "routes": [route]},
    })
    testCase.addCleanup(proxy.stop)
    return proxy


REVERSE_ADDED = b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: site.test\r\n"


# (rule, method, fields as received, body as received,
#  fields sent on, framing fields sent on, body data sent on)
REQUESTS = [
    ("RFC 9112 \u00a75.1: whitespace around a field value is not part of it",
     b"GET", b"X-Pad: \t a  b \t\r\nX-Tight:1\r\n", b"",
     b"X-Pad: a  b\r\nX-Tight: 1\r\n", b"", b""),
    ("RFC 9110 \u00a77.6.1: hop-by-hop fields and those Connection names are not sent on",
     b"GET",
     b"Connection: X-Hop, Keep-Alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
     b"Upgrade: h2c\r\nProxy-Connection: X-Other\r\nX-Other: 2\r\nX-Kept: 1\r\n", b"",
     b"X-Kept: 1\r\n", b"", b""),
    ("RFC 9112 \u00a77.1.1: chunk extensions are not sent on",
     b"POST", b"Transfer-Encoding: Chunked\r\n",
     b'5;name=value\r\nhello\r\n6 ; q="a;b"\r\n world\r\n0;last=1\r\n\r\n',
     b"", b"Transfer-Encoding: chunked\r\n", b"hello world"),
    ("RFC 9110 \u00a76.5.1: request trailer fields are dropped with the chunked coding",
     b"PUT", b"Trailer: X-Sum\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
     b"", b"Transfer-Encoding: chunked\r\n", b"abc"),
    ("RFC 9110 \u00a78.6: a Content-Length list of one repeated value is sent as one value",
     b"POST", b"Content-Length: 5, 5\r\n", b"hello",
     b"", b"Content-Length: 5\r\n", b"hello"),
    ("RFC 9110 \u00a78.6: repeated identical Content-Length fields are sent as one field",
     b"POST", b"Content-Length: 5\r\nX-Between: 1\r\nContent-Length: 5\r\n", b"hello",
     b"X-Between: 1\r\n", b"Content-Length: 5\r\n", b"hello"),
    ("RFC 9110 \u00a78.6: a POST without a body is sent with Content-Length 0",
     b"POST", b"", b"", b"", b"Content-Length: 0\r\n", b""),
    ("RFC 9110 \u00a79.1: an extension method is sent on as it is",
     b"PURGE", b"", b"", b"", b"", b""),
]


@fromTable(REQUESTS, "check")
class ForwardRequestTests(TestCase):
    """
    Forward mode: an absolute-form request goes on in origin form, with a
    Host made from the target (never the received one) and its fields
    re-serialised.
    """

    @inlineCallbacks
    def check(self, method, fields, body, sentFields, framing, sentBody):
        origin = RecordingOrigin(ORIGIN_OK)
        self.addCleanup(origin.stop)
        proxy = forwardProxy(self)
        port = origin.portNumber
        arrived = origin.nextRequest()
        answer = yield rawExchange(proxy.address, method + b" http://origin.test:%d/c?x=1 HTTP/1.1\r\n"
                                   b"Host: evil.example\r\n%sConnection: close\r\n\r\n%s" % (port, fields, body))
        request = yield arrived
        head, data = splitResponse(request)
        self.assertEqual(
            head,
            method + b" /c?x=1 HTTP/1.1\r\nHost: origin.test:%d\r\n%sVia: 1.1 dualproxy\r\n%s\r\n"
            % (port, sentFields, framing),
        )
        assertBody(self, framing, data, sentBody)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertEqual(origin.requests, [request])


@fromTable(REQUESTS, "check")
class ReverseRequestTests(TestCase):
    """
    Reverse mode: the same re-serialisation towards a backend.
    """

    @inlineCallbacks
    def check(self, method, fields, body, sentFields, framing, sentBody):
        origin = RecordingOrigin(ORIGIN_OK)
        self.addCleanup(origin.stop)
        proxy = reverseProxy(self, origin)
        arrived = origin.nextRequest()
        answer = yield rawExchange(proxy.address, method + b" /c?x=1 HTTP/1.1\r\nHost: site.test\r\n%s"
                                   b"Connection: close\r\n\r\n%s" % (fields, body))
        request = yield arrived
        head, data = splitResponse(request)
        self.assertEqual(
            head,
            method + b" /c?x=1 HTTP/1.1\r\nHost: site.test\r\n%s%s%s\r\n" % (sentFields, REVERSE_ADDED, framing),
        )
        assertBody(self, framing, data, sentBody)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertEqual(origin.requests, [request])


def assertBody(testCase: TestCase, framing: bytes, data: bytes, expected: bytes) -> None:
    """
    A chunked body must be bare chunk sizes, the data and no trailer; any
    other body is compared byte for byte.
    """
    if framing != b"Transfer-Encoding: chunked\r\n":
        testCase.assertEqual(data, expected)
        return
    end, sizes, decoded, trailers = chunkedEnd(data, 0)
    testCase.assertEqual(end, len(data))
    testCase.assertEqual(decoded, expected)
    testCase.assertEqual(trailers, [])
    for size in sizes:
        testCase.assertRegex(size, rb"\A[0-9a-f]+\Z")
    testCase.assertEqual(sizes[-1], b"0")


class _RequestLineTestCase(TestCase):
    @inlineCallbacks
    def relay(self, raw: bytes) -> bytes:
        """
        Send C{raw}, expect a 200; what the origin received.
        """
        arrived = self.origin.nextRequest()
        answer = yield rawExchange(self.proxy.address, raw)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        request = yield arrived
        return request


class ForwardRequestLineTests(_RequestLineTestCase):
    """
    The request line upstream is always METHOD SP origin-form SP HTTP/1.1,
    whatever the line and its fields looked like when they arrived.
    """

    def setUp(self):
        self.origin = RecordingOrigin(ORIGIN_OK)
        self.addCleanup(self.origin.stop)
        self.proxy = forwardProxy(self)
        self.port = self.origin.portNumber

    @inlineCallbacks
    def test_bareLineFeeds(self):
        """
        RFC 9112 section 2.2: empty lines before the request line are
        ignored, a bare LF ends a line; upstream every line ends in CRLF.
        """
        request = yield self.relay(b"\r\n\nGET http://origin.test:%d/lf HTTP/1.1\nHost: origin.test:%d\n"
                                   b"X-A:1\nConnection: close\n\n" % (self.port, self.port))
        self.assertEqual(request, b"GET /lf HTTP/1.1\r\nHost: origin.test:%d\r\nX-A: 1\r\n"
                                  b"Via: 1.1 dualproxy\r\n\r\n" % self.port)

    @inlineCallbacks
    def test_http10Client(self):
        """
        RFC 9112 section 3.2.2: an HTTP/1.0 request without Host goes on as
        HTTP/1.1 with the Host of its target; Via names the version it came
        in (RFC 9110 section 7.6.3).
        """
        request = yield self.relay(b"GET http://origin.test:%d/old HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n"
                                   % self.port)
        self.assertEqual(request, b"GET /old HTTP/1.1\r\nHost: origin.test:%d\r\nVia: 1.0 dualproxy\r\n\r\n"
                         % self.port)

    @inlineCallbacks
    def test_schemeAndHostCase(self):
        """
        RFC 9110 section 4.2.3: scheme and host are case-insensitive; the
        Host field is the target's authority, never the received Host.
        """
        request = yield self.relay(b"GET HTTP://Origin.TEST:%d?only=query HTTP/1.1\r\nHost: origin.test:1\r\n"
                                   b"Connection: close\r\n\r\n" % self.port)
        self.assertEqual(request, b"GET /?only=query HTTP/1.1\r\nHost: Origin.TEST:%d\r\n"
                                  b"Via: 1.1 dualproxy\r\n\r\n" % self.port)

    @inlineCallbacks
    def test_serverWideOptions(self):
        """
        RFC 9112 section 3.2.4: OPTIONS for an absolute URI with neither
        path nor query is sent to the origin as OPTIONS *; with a path it
        keeps the path.
        """
        request = yield self.relay(b"OPTIONS http://origin.test:%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                   % self.port)
        self.assertEqual(request, b"OPTIONS * HTTP/1.1\r\nHost: origin.test:%d\r\nVia: 1.1 dualproxy\r\n\r\n"
                         % self.port)
        request = yield self.relay(b"OPTIONS http://origin.test:%d/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                   % self.port)
        self.assertEqual(request, b"OPTIONS / HTTP/1.1\r\nHost: origin.test:%d\r\nVia: 1.1 dualproxy\r\n\r\n"
                         % self.port)

    @inlineCallbacks
    def test_serverWideOptionsThroughParent(self):
        """
        RFC 9112 section 3.2.4: only the last proxy makes OPTIONS *, so a
        parent is sent the URI without a path to tell it from OPTIONS /.
        """
        parent = forwardProxy(self, via="parent")
        child = Proxy({"forward": {"parent": parent.url, "via": "child"}})
        self.addCleanup(child.stop)
        self.proxy = child
        request = yield self.relay(b"OPTIONS http://origin.test:%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                   % self.port)
        self.assertEqual(request, b"OPTIONS * HTTP/1.1\r\nHost: origin.test:%d\r\nVia: 1.1 child\r\n"
                                  b"Via: 1.1 parent\r\n\r\n" % self.port)

    @inlineCallbacks
    def test_chunkedFromHttp10Client(self):
        """
        RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 request
        cannot be trusted: 400, the connection closed, nothing sent on.
        """
        answer = yield rawExchange(self.proxy.address, b"POST http://origin.test:%d/ HTTP/1.0\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % self.port)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertEqual(self.origin.connections, 0)


class ReverseRequestLineTests(_RequestLineTestCase):
    """
    Reverse mode: the same request line rules, and absolute form accepted
    as a server must (RFC 9112 section 3.2.2).
    """

    def setUp(self):
        self.origin = RecordingOrigin(ORIGIN_OK)
        self.addCleanup(self.origin.stop)
        self.proxy = reverseProxy(self, self.origin)

    @inlineCallbacks
    def test_absoluteFormHostFromTarget(self):
        """
        RFC 9112 section 3.2.2: the host of an absolute-form target wins
        over the received Host, for routing and for what is sent on; the
        target goes on in origin form.
        """
        request = yield self.relay(b"GET http://site.test/p?q=1 HTTP/1.1\r\nHost: evil.example\r\n"
                                   b"Connection: close\r\n\r\n")
        self.assertEqual(request, b"GET /p?q=1 HTTP/1.1\r\nHost: site.test\r\n" + REVERSE_ADDED + b"\r\n")

    @inlineCallbacks
    def test_absoluteFormQueryWithoutPath(self):
        """
        RFC 3986 section 3.3: a query right after the authority keeps all of
        itself, slashes included, behind the path /.
        """
        request = yield self.relay(b"GET http://site.test?a/b HTTP/1.1\r\nHost: site.test\r\n"
                                   b"Connection: close\r\n\r\n")
        self.assertEqual(request, b"GET /?a/b HTTP/1.1\r\nHost: site.test\r\n" + REVERSE_ADDED + b"\r\n")

    @inlineCallbacks
    def test_absoluteFormUserinfoRefused(self):
        """
        RFC 9110 section 4.2.4: userinfo in an http URI is an error.
        """
        answer = yield rawExchange(self.proxy.address, b"GET http://user@site.test/ HTTP/1.1\r\n"
                                   b"Host: site.test\r\nConnection: close\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertEqual(self.origin.connections, 0)

    @inlineCallbacks
    def test_bareLineFeedsAndHttp10(self):
        """
        RFC 9112 section 2.2 and 2.3: bare LFs and HTTP/1.0 arrive; CRLF
        and HTTP/1.1 go on.
        """
        request = yield self.relay(b"\nGET /lf HTTP/1.0\nHost: site.test\nX-A:1\n\n")
        self.assertEqual(request, b"GET /lf HTTP/1.1\r\nHost: site.test\r\nX-A: 1\r\n" + REVERSE_ADDED + b"\r\n")

    @inlineCallbacks
    def test_http10WithoutHostGetsEmptyHost(self):
        """
        RFC 9112 section 3.2: an HTTP/1.0 request that named no site goes on
        as HTTP/1.1 with an empty Host, which that version requires.
        """
        self.proxy = reverseProxy(self, self.origin, anyHost=True)
        request = yield self.relay(b"GET /old HTTP/1.0\r\n\r\n")
        self.assertTrue(request.startswith(b"GET /old HTTP/1.1\r\n"), request)
        self.assertEqual(request.count(b"\r\nHost:"), 1, request)
        self.assertIn(b"\r\nHost: \r\n", request)

    @inlineCallbacks
    def test_connectionCannotTakeHost(self):
        request = yield self.relay(b"GET /h HTTP/1.1\r\nHost: site.test\r\nConnection: host, close\r\n\r\n")
        self.assertTrue(request.startswith(b"GET /h HTTP/1.1\r\nHost: site.test\r\n"), request)

    @inlineCallbacks
    def test_chunkedFromHttp10Client(self):
        answer = yield rawExchange(self.proxy.address, b"POST / HTTP/1.0\r\nHost: site.test\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertEqual(self.origin.connections, 0)


# (rule, response from the origin, client's HTTP version, head the client
#  gets, with "{via V}" where forward mode adds Via, and body data)
RESPONSES = [
    ("RFC 9112 \u00a75.1: whitespace around response field values is dropped, hop-by-hop fields too",
     b"HTTP/1.1 200 Fine\r\nX-Pad: \t a  b \t\r\nX-Tight:1\r\nConnection: X-Resp, keep-alive\r\nX-Resp: 1\r\n"
     b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1",
     b"HTTP/1.1 200 Fine\r\nX-Pad: a  b\r\nX-Tight: 1\r\nContent-Length: 2\r\n{via 1.1}Connection: close\r\n\r\n",
     b"ok"),
    ("RFC 9112 \u00a77.1.1: response chunk extensions and trailer fields are not relayed",
     b"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2 ; e\r\nde\r\n"
     b"0\r\nX-Sum: 1\r\n\r\n", b"HTTP/1.1",
     b"HTTP/1.1 200 OK\r\n{via 1.1}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n", b"abcde"),
    ("RFC 9112 \u00a76.3: an HTTP/1.0 client gets a chunked response decoded, delimited by the close",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n", b"HTTP/1.0",
     b"HTTP/1.1 200 OK\r\n{via 1.1}Connection: close\r\n\r\n", b"abc"),
    ("RFC 9110 \u00a76.2: an HTTP/1.0 response goes on as HTTP/1.1",
     b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{via 1.0}Connection: close\r\n\r\n", b"ok"),
    ("RFC 9112 \u00a72.2: a response with bare LFs goes on with CRLFs",
     b"HTTP/1.1 200 OK\nX-A:1\nContent-Length: 2\n\nok", b"HTTP/1.1",
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n{via 1.1}Connection: close\r\n\r\n", b"ok"),
    ("RFC 9112 \u00a74: a status line without reason phrase keeps the space after the code",
     b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1",
     b"HTTP/1.1 200 \r\nContent-Length: 2\r\n{via 1.1}Connection: close\r\n\r\n", b"ok"),
    ("RFC 9110 \u00a78.6: a response Content-Length list of one repeated value goes on as one field",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1",
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n{via 1.1}Connection: close\r\n\r\n", b"ok"),
    ("RFC 9110 \u00a78.6: a 304 keeps the representation's length in one field",
     b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7, 7\r\nETag: \"x\"\r\n\r\n", b"HTTP/1.1",
     b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 7\r\n{via 1.1}Connection: close\r\n\r\n", b""),
    ("RFC 9110 \u00a78.6: a 204 reaches the client without Content-Length",
     b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n", b"HTTP/1.1",
     b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n{via 1.1}Connection: close\r\n\r\n", b""),
]


def expectedHead(head: bytes, via: bool) -> bytes:
    return re.sub(rb"\{via ([0-9.]+)\}", rb"Via: \1 dualproxy\r\n" if via else b"", head)


def assertResponse(testCase: TestCase, answer: bytes, head: bytes, body: bytes) -> None:
    received, data = splitResponse(answer)
    testCase.assertEqual(received, head)
    if b"\r\nTransfer-Encoding: chunked\r\n" in head:
        assertBody(testCase, b"Transfer-Encoding: chunked\r\n", data, body)
    else:
        testCase.assertEqual(data, body)


@fromTable(RESPONSES, "check")
class ForwardResponseTests(TestCase):
    """
    An origin's unusual but valid response reaches the client canonical.
    """

    @inlineCallbacks
    def check(self, response, version, head, body):
        origin = RecordingOrigin(response)
        self.addCleanup(origin.stop)
        proxy = forwardProxy(self)
        answer = yield rawExchange(proxy.address, b"GET http://origin.test:%d/ %s\r\nHost: origin.test\r\n"
                                   b"Connection: close\r\n\r\n" % (origin.portNumber, version))
        assertResponse(self, answer, expectedHead(head, True), body)


@fromTable(RESPONSES, "check")
class ReverseResponseTests(TestCase):
    """
    A backend's unusual but valid response reaches the client canonical.
    """

    @inlineCallbacks
    def check(self, response, version, head, body):
        origin = RecordingOrigin(response)
        self.addCleanup(origin.stop)
        proxy = reverseProxy(self, origin)
        answer = yield rawExchange(proxy.address, b"GET / %s\r\nHost: site.test\r\nConnection: close\r\n\r\n"
                                   % version)
        assertResponse(self, answer, expectedHead(head, False), body)
