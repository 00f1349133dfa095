"""
What integration tests share: origins started by the test on 127.0.0.1,
the proxy built from a config as a user's would be, and real clients.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import weakref
from typing import Dict, List, Optional

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest
from twisted.web import resource, server
from zope.interface import implementer

from dualproxy import prestart
from dualproxy.config import fromDict
from dualproxy.core.exchange import Exchange
from dualproxy.plugins import findModes
from dualproxy.relay.relay import Relay

# Clients must talk to the proxy under test, never to one from the environment.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Headers(resource.Resource):
    """
    Answers with the request as the origin saw it, as JSON.
    """

    isLeaf = True

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": [[k.decode(), v.decode()] for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs],
                "body": request.content.read().decode("latin-1"),
            }
        ).encode()


class _Bytes(resource.Resource):
    """
    /bytes/N: N bytes of a repeating pattern.
    """

    isLeaf = True

    def render_GET(self, request):
        size = int(request.postpath[0])
        request.setHeader(b"content-type", b"application/octet-stream")
        return pattern(size)


class _Status(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(int(request.postpath[0]))
        return b""


def pattern(size: int) -> bytes:
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


class _Name(resource.Resource):
    isLeaf = True

    def __init__(self, origin):
        super().__init__()
        self.origin = origin

    def render(self, request):
        self.origin.requests += 1
        return self.origin.name.encode()


class _Held(resource.Resource):
    """
    Answers only when the test releases the request.
    """

    isLeaf = True

    def __init__(self, origin):
        super().__init__()
        self.origin = origin

    def render(self, request):
        self.origin.held.append(request)
        waiting, self.origin.waiting = self.origin.waiting, []
        for deferred in waiting:
            deferred.callback(request)
        return server.NOT_DONE_YET


class Origin:
    """
    A twisted.web origin that counts the connections it accepts.
    """

    def __init__(self, name: str = "origin", port: int = 0, interface: str = "127.0.0.1"):
        self.name = name
        self.requests = 0
        self.held: list = []
        self.waiting: list = []
        root = resource.Resource()
        root.putChild(b"headers", _Headers())
        root.putChild(b"bytes", _Bytes())
        root.putChild(b"status", _Status())
        root.putChild(b"name", _Name(self))
        root.putChild(b"held", _Held(self))
        self.site = server.Site(root)
        self.site.log = lambda request: None
        self.connections = 0
        build = self.site.buildProtocol

        self.protocols: list = []

        def counting(addr):
            self.connections += 1
            protocol = build(addr)
            self.protocols.append(protocol)
            return protocol

        self.site.buildProtocol = counting
        self.port = reactor.listenTCP(port, self.site, interface=interface)
        self.address = f"{interface}:{self.port.getHost().port}"

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def kill(self):
        """
        Stop as a crashed server would: no listener, no open connections.
        """
        for protocol in self.protocols:
            transport = getattr(protocol, "_channel", protocol).transport
            if transport is not None:
                transport.abortConnection()
        return self.stop()

    def whenHeld(self) -> defer.Deferred:
        """
        Fires with the next request that arrives at /held.
        """
        self.waiting.append(defer.Deferred())
        return self.waiting[-1]

    def release(self) -> None:
        for request in self.held:
            request.write(self.name.encode())
            request.finish()
        self.held = []

    def stop(self):
        return self.port.stopListening()


class RawOrigin(Factory):
    """
    An origin that answers every request head with canned bytes, for
    responses twisted.web would never send (close-delimited, malformed).
    """

    noisy = False

    def __init__(self, response: bytes, close: bool = True):
        self.response = response
        self.close = close
        self.requests: List[bytes] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"

    def buildProtocol(self, addr):
        return _RawOriginProtocol(self)

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}{path}"

    def stop(self):
        return self.port.stopListening()


class _RawOriginProtocol(Protocol):
    def __init__(self, factory):
        self.factory = factory
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.factory.requests.append(head)
            if self.factory.response is None:
                return
            self.transport.write(self.factory.response)
            if self.factory.close:
                self.transport.loseConnection()


@implementer(IPushProducer)
class StreamingOrigin(Factory, Protocol):
    """
    Answers one request with C{size} bytes written as fast as the
    connection takes them, and tells when backpressure stopped it
    (C{paused}) and when the connection closed (C{lost}).
    """

    noisy = False
    chunk = pattern(65536)

    def __init__(self, size: int):
        self.size = size
        self.sent = 0
        self.paused: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"
        self._producing = False

    def buildProtocol(self, addr):
        return self

    def dataReceived(self, data):
        if self._producing or b"\r\n\r\n" not in data:
            return
        self._producing = True
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self):
        self._producing = "paused"
        if not self.paused.called:
            self.paused.callback(self.sent)

    def resumeProducing(self):
        self._producing = True
        while self._producing is True and self.sent < self.size:
            data = self.chunk[: self.size - self.sent]
            self.sent += len(data)
            self.transport.write(data)
        if self.sent >= self.size:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self):
        self._producing = False

    def connectionLost(self, reason=None):
        self.lost.callback(None)

    def stop(self):
        return self.port.stopListening()


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Names the test controls, so no lookup ever leaves the machine.
    """

    def __init__(self, names: Dict[str, List[str]]):
        self.names = names

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        if hostName == "silent.test":
            return  # a name server that never answers
        receiver.resolutionBegan(None)
        for address in self.names.get(hostName, []):
            receiver.addressResolved(IPv4Address("TCP", address, portNumber))
        receiver.resolutionComplete()


class Proxy:
    """
    The proxy built from a config dict by the mode plugin, exactly as twistd
    builds it, listening on a port the OS picks.
    """

    def __init__(self, settings: dict, filters=(), names: Optional[Dict[str, List[str]]] = None):
        data = {"access_log": "off", "listen": ["tcp:0:interface=127.0.0.1"]}
        data.update(settings)
        modes = findModes()
        self.config = fromDict(data, modes)
        prestart.check(self.config, modes)
        mode = modes[self.config.mode]
        self.service = mode.makeService(self.config, list(filters))
        self.service.startService()
        listener = self.service.listeners()[0]
        self.handler = self.service.listenerGroup.factories()[0].handler
        if names is not None:
            self.handler.resolver = FakeResolver(names)
        host = listener.port.getHost()
        self.address = f"127.0.0.1:{host.port}" if hasattr(host, "port") else host.name
        self.url = f"http://{self.address}"
        self.tlsPort = self.service.listenerGroup.listeners()[-1].port.getHost().port if self.config.tls.listen else None

    def stop(self):
        return self.service.stopService()


class Survivors:
    """
    The exchanges and relays made while a test runs with the garbage
    collector off, and which of them are still alive: what a reference
    cycle keeps waits for the collector, whose passes cost a busy proxy a
    request's worth of CPU every few requests.
    """

    def __init__(self, testCase) -> None:
        if sys.implementation.name != "cpython":
            # A tracing collector (PyPy's) frees nothing by reference
            # counting, and a cycle costs it no more than anything else.
            raise SkipTest("reference counting is CPython's")
        self.made = 0
        self.living: weakref.WeakSet = weakref.WeakSet()
        gc.collect()
        gc.disable()
        testCase.addCleanup(gc.enable)
        for cls in (Exchange, Relay):
            testCase.patch(cls, "__init__", self._watching(cls.__init__))

    def _watching(self, init):
        def watched(instance, *args, **kw):
            init(instance, *args, **kw)
            self.made += 1
            self.living.add(instance)

        return watched

    def alive(self) -> list:
        return sorted(type(instance).__name__ for instance in self.living)


def curl(*args: str) -> defer.Deferred:
    """
    Run curl; fires with (stdout, stderr, exit code).
    """
    return getProcessOutputAndValue("curl", ["--silent", "--show-error", "--max-time", "20", *args], env=CLEAN_ENV)


def pythonClient(script: str, *args: str) -> defer.Deferred:
    """
    Run a Python HTTP client (stdlib http.client) in a child interpreter.
    """
    return getProcessOutputAndValue(sys.executable, ["-c", script, *args], env=CLEAN_ENV)


def serveTLS(testCase, origin, cert: bytes, key: bytes) -> int:
    """
    Move C{origin} (anything with a C{site} and a listening C{port}) to TLS
    with this PEM certificate and key, until C{testCase} ends: its new port.
    """
    from twisted.internet import ssl

    origin.port.stopListening()
    origin.port = reactor.listenSSL(0, origin.site, ssl.PrivateCertificate.loadPEM(cert + key).options(),
                                    interface="127.0.0.1")
    testCase.addCleanup(origin.port.stopListening)
    return origin.port.getHost().port


def selfSignedCertificate(name: str = "localhost"):
    """
    A fresh certificate and key made at run time, for a TLS origin: PEM.
    """
    from cryptography.hazmat.primitives import serialization

    from dualproxy.acme.tlsalpn import selfSigned

    cert, key = selfSigned([name], name)
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


# GETs TARGET (a path, or an absolute URL for a forward proxy) N times on
# one keep-alive connection to ADDRESS, with any "Name: value" arguments as
# headers; prints [status, Retry-After, body] per request as JSON.
REPEAT_CLIENT = """
import http.client, json, sys
address, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
headers = dict(h.split(": ", 1) for h in sys.argv[4:])
host, port = address.split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=20)
out = []
for _ in range(count):
    conn.request("GET", target, headers=headers)
    response = conn.getresponse()
    out.append([response.status, response.getheader("Retry-After"), response.read().decode()])
print(json.dumps(out))
"""
