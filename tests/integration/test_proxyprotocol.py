"""
The PROXY protocol over real sockets on 127.0.0.1: clients that send
headers (raw ones naming made-up clients, and curl) to reverse, forward and
socks proxies, and backends that read the headers a reverse pool sends.
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet import defer, reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from dualproxy import proxyprotocol

from .support import Origin, Proxy, curl, selfSignedCertificate

CLIENT_A = ("192.0.2.1", 1111)
CLIENT_B = ("192.0.2.2", 2222)
DESTINATION = ("198.51.100.7", 443)


def v1(source=CLIENT_A) -> bytes:
    return proxyprotocol.header(1, source, DESTINATION)


def get(path: str, close: bool = False, host: str = "app.test") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()


class RawClient(Protocol):
    """
    Writes what the test says, with C{preamble} first and then TLS if
    C{tls}, and reads whole Content-Length responses.
    """

    def __init__(self, preamble: bytes = b"", tls: bool = False):
        self.preamble = preamble
        self.tls = tls
        self.data = b""
        self.closed: defer.Deferred = defer.Deferred()
        self._waiting: list = []

    def connectionMade(self):
        if self.preamble:
            self.transport.write(self.preamble)
        if self.tls:
            self.transport.startTLS(ssl.CertificateOptions())

    def dataReceived(self, data):
        self.data += data
        self._deliver()

    def connectionLost(self, reason=None):
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(None)
        self.closed.callback(self.data)
        self._deliver()

    def response(self, request: bytes) -> defer.Deferred:
        """
        Send C{request}; fires with the next whole response, or None if the
        connection closes first.
        """
        self._waiting.append(defer.Deferred())
        waiter = self._waiting[-1]
        self.transport.write(request)
        self._deliver()
        return waiter

    def bytes(self, count: int) -> defer.Deferred:
        """
        Fires with the first C{count} bytes received, or fewer if the
        connection closes first.
        """
        if len(self.data) >= count or self.closed.called:
            return defer.succeed(self.data[:count])
        self._counting = (count, defer.Deferred())
        return self._counting[1]

    def _deliver(self):
        counting = getattr(self, "_counting", None)
        if counting is not None and (len(self.data) >= counting[0] or self.closed.called):
            del self._counting
            counting[1].callback(self.data[:counting[0]])
        while self._waiting:
            end = self.data.find(b"\r\n\r\n")
            if end < 0:
                return
            length = re.search(rb"(?im)^content-length: *(\d+)", self.data[:end])
            total = end + 4 + (int(length.group(1)) if length else 0)
            if len(self.data) < total:
                return
            response, self.data = self.data[:total], self.data[total:]
            self._waiting.pop(0).callback(response)


def body(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


class ProxiedOrigin(Factory):
    """
    A backend that requires a PROXY header on every connection, answers
    each request with the header's client and the connection's number, and
    keeps connections open unless asked to close.
    """

    noisy = False

    def __init__(self):
        self.headers: list = []
        self._waiting: list = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def buildProtocol(self, addr):
        return _ProxiedOriginProtocol(self)

    def whenHeader(self) -> defer.Deferred:
        self._waiting.append(defer.Deferred())
        return self._waiting[-1]

    def received(self, header) -> int:
        self.headers.append(header)
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(header)
        return len(self.headers) - 1


class _ProxiedOriginProtocol(Protocol):
    def __init__(self, factory: ProxiedOrigin):
        self.factory = factory
        self.buffer = b""
        self.number = None
        self.header = None

    def dataReceived(self, data):
        self.buffer += data
        if self.number is None:
            try:
                parsed = proxyprotocol.parse(self.buffer)
            except proxyprotocol.ProxyHeaderError:
                self.transport.loseConnection()
                return
            if parsed is None:
                return
            self.header, used = parsed
            self.buffer = self.buffer[used:]
            self.number = self.factory.received(self.header)
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            source = self.header.source
            answer = f"{source[0]}:{source[1]} #{self.number}" if source else f"local #{self.number}"
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer.encode()))
            if b"connection: close" in head.lower():
                self.transport.loseConnection()


class ProxyProtocolTestCase(TestCase):
    def startProxy(self, settings) -> Proxy:
        proxy = Proxy(settings)
        self.addCleanup(proxy.stop)
        return proxy

    def reverse(self, backend: str, trusted=("127.0.0.0/8",), pool=None, **settings) -> Proxy:
        return self.startProxy(dict({
            "mode": "reverse",
            "proxy_protocol": list(trusted),
            "reverse": {"pools": {"app": dict({"backends": [backend]}, **(pool or {}))},
                        "routes": [{"prefix": "/", "pool": "app"}]},
        }, **settings))

    def startOrigin(self) -> Origin:
        origin = Origin()
        self.addCleanup(origin.stop)
        return origin

    @inlineCallbacks
    def connect(self, port: int, preamble: bytes = b"", tls: bool = False):
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient(preamble, tls))

        def close():
            client.transport.abortConnection()
            return client.closed

        self.addCleanup(close)
        return client

    def accessLog(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return lambda: [json.loads(e["line"]) for e in events if e.get("log_namespace") == "dualproxy.access"]


def forwardedFor(response: bytes):
    return [value for name, value in json.loads(body(response))["headers"] if name == "X-Forwarded-For"]


class AcceptingTests(ProxyProtocolTestCase):
    @inlineCallbacks
    def test_v1HeaderNamesTheClient(self):
        """
        The backend's X-Forwarded-For and the access log name the client of
        the header, not the balancer that connected.
        """
        origin = self.startOrigin()
        proxy = self.reverse(origin.url(""), access_log="json")
        lines = self.accessLog()
        client = yield self.connect(proxy.service.listeners()[0].portNumber(), v1())
        response = yield client.response(get("/headers", close=True))
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response)
        self.assertEqual(forwardedFor(response), ["192.0.2.1"])
        self.assertEqual([line["client"] for line in lines()], ["192.0.2.1"])

    @inlineCallbacks
    def test_v2HeaderNamesAnIPv6Client(self):
        origin = self.startOrigin()
        proxy = self.reverse(origin.url(""))
        header = proxyprotocol.header(2, ("2001:db8::7", 5), ("2001:db8::1", 443))
        client = yield self.connect(proxy.service.listeners()[0].portNumber(), header)
        response = yield client.response(get("/headers", close=True))
        self.assertEqual(forwardedFor(response), ["2001:db8::7"])

    @inlineCallbacks
    def test_untrustedPeersHeaderIsBadInput(self):
        """
        A peer outside C{proxy_protocol} is a direct client, whose PROXY
        line is a malformed request.
        """
        origin = self.startOrigin()
        proxy = self.reverse(origin.url(""), trusted=["192.0.2.0/24"])
        client = yield self.connect(proxy.service.listeners()[0].portNumber(), v1())
        response = yield client.response(get("/headers"))
        self.assertTrue(response.startswith(b"HTTP/1.1 400 "), response)
        plain = yield self.connect(proxy.service.listeners()[0].portNumber())
        response = yield plain.response(get("/headers", close=True))
        self.assertEqual(forwardedFor(response), ["127.0.0.1"])

    @inlineCallbacks
    def test_trustedPeerWithoutHeaderIsClosed(self):
        origin = self.startOrigin()
        proxy = self.reverse(origin.url(""))
        client = yield self.connect(proxy.service.listeners()[0].portNumber())
        response = yield client.response(get("/headers"))
        self.assertIsNone(response)
        self.assertEqual(client.data, b"")
        self.assertEqual(origin.connections, 0)

    @inlineCallbacks
    def test_curlPlainAndTLS(self):
        """
        curl's C{--haproxy-protocol} header goes before TLS on a TLS
        listener, as before HTTP on a plain one; without it a trusted peer
        gets nowhere.
        """
        origin = self.startOrigin()
        cert, key = selfSignedCertificate("localhost")
        directory = self.mktemp()
        os.mkdir(directory)
        for name, pem in (("cert.pem", cert), ("key.pem", key)):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(pem)
        proxy = self.reverse(origin.url(""), tls={
            "listen": ["tcp:0:interface=127.0.0.1"],
            "certificates": [{"cert": os.path.join(directory, "cert.pem"), "key": os.path.join(directory, "key.pem")}],
        })
        for url in (f"{proxy.url}/headers", f"https://localhost:{proxy.tlsPort}/headers"):
            out, err, code = yield curl("--haproxy-protocol", "-k", "--resolve", f"localhost:{proxy.tlsPort}:127.0.0.1",
                                        url)
            self.assertEqual(code, 0, err)
            self.assertIn(["X-Forwarded-For", "127.0.0.1"], json.loads(out)["headers"])
        out, err, code = yield curl("-k", "--resolve", f"localhost:{proxy.tlsPort}:127.0.0.1",
                                    f"https://localhost:{proxy.tlsPort}/headers")
        self.assertNotEqual(code, 0)

    @inlineCallbacks
    def test_headerThenTLSNamesTheClient(self):
        origin = self.startOrigin()
        cert, key = selfSignedCertificate("localhost")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(cert + key)
        proxy = self.reverse(origin.url(""), tls={"listen": ["tcp:0:interface=127.0.0.1"],
                                                  "certificates": [{"cert": path, "key": path}], "http2": False})
        client = yield self.connect(proxy.tlsPort, v1(("192.0.2.9", 9)), tls=True)
        response = yield client.response(get("/headers", close=True))
        self.assertEqual(forwardedFor(response), ["192.0.2.9"])

    @inlineCallbacks
    def test_forwardACLDecidesOnTheHeadersClient(self):
        origin = self.startOrigin()
        proxy = self.startProxy({
            "mode": "forward",
            "proxy_protocol": ["127.0.0.1/32"],
            "forward": {"allow_clients": ["192.0.2.0/24"], "allow_destinations": ["127.0.0.0/8"]},
        })
        port = proxy.service.listeners()[0].portNumber()
        statuses = []
        for source in (("192.0.2.1", 5), ("198.51.100.1", 5)):
            client = yield self.connect(port, v1(source))
            response = yield client.response(get(origin.url("/name"), close=True, host=origin.address))
            statuses.append(response.split(b" ", 2)[1])
        self.assertEqual(statuses, [b"200", b"403"])

    @inlineCallbacks
    def test_socksACLDecidesOnTheHeadersClient(self):
        proxy = self.startProxy({"mode": "socks", "proxy_protocol": ["127.0.0.0/8"],
                                 "socks": {"allow_clients": ["192.0.2.0/24"]}})
        port = proxy.service.listeners()[0].portNumber()
        replies = []
        for source in (("192.0.2.1", 5), ("198.51.100.1", 5)):
            client = yield self.connect(port, proxyprotocol.header(2, source, DESTINATION) + b"\x05\x01\x00")
            reply = yield client.bytes(2)
            replies.append(reply)
        self.assertEqual(replies, [b"\x05\x00", b"\x05\xff"])


class SendingTests(ProxyProtocolTestCase):
    def backend(self) -> ProxiedOrigin:
        origin = ProxiedOrigin()
        self.addCleanup(origin.port.stopListening)
        return origin

    @inlineCallbacks
    def test_v1KeepAliveIsPrivateToTheClient(self):
        """
        The backend gets the header of the client each connection carries,
        and a kept-alive connection serves only that client again.
        """
        origin = self.backend()
        proxy = self.reverse(origin.url, pool={"proxy_protocol": "v1"})
        port = proxy.service.listeners()[0].portNumber()
        a = yield self.connect(port, v1(CLIENT_A))
        b = yield self.connect(port, v1(CLIENT_B))
        answers = []
        for client in (a, b, a, b):
            response = yield client.response(get("/"))
            answers.append(body(response))
        self.assertEqual(answers, [b"192.0.2.1:1111 #0", b"192.0.2.2:2222 #1", b"192.0.2.1:1111 #0",
                                   b"192.0.2.2:2222 #1"])
        self.assertEqual([header.version for header in origin.headers], [1, 1])
        self.assertEqual(origin.headers[0].destination, DESTINATION)

    @inlineCallbacks
    def test_v2(self):
        origin = self.backend()
        proxy = self.reverse(origin.url, pool={"proxy_protocol": "v2"})
        client = yield self.connect(proxy.service.listeners()[0].portNumber(), v1(("2001:db8::5", 7)))
        response = yield client.response(get("/", close=True))
        self.assertEqual(body(response), b"2001:db8::5:7 #0")
        self.assertEqual(origin.headers[0].version, 2)

    @inlineCallbacks
    def test_directClientsOwnAddress(self):
        """
        Without a header of its own, the client's real address is sent.
        """
        origin = self.backend()
        proxy = self.reverse(origin.url, trusted=(), pool={"proxy_protocol": "v2"})
        out, err, code = yield curl(f"{proxy.url}/")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"127.0.0.1:"), out)
        self.assertEqual(origin.headers[0].destination, ("127.0.0.1", proxy.service.listeners()[0].portNumber()))

    @inlineCallbacks
    def test_healthChecksSendLocal(self):
        origin = self.backend()
        arrived = origin.whenHeader()
        self.reverse(origin.url, pool={"proxy_protocol": "v2", "health": {"path": "/health", "interval": 0.2}})
        header = yield arrived
        self.assertEqual(header, proxyprotocol.ProxyHeader(2))
