"""
L{dualproxy.tls} over real sockets on 127.0.0.1: a Twisted server choosing
certificates by SNI as curl and Python's ssl module see it, and
L{clientCreator} verifying that server.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from zope.interface import implementer

from dualproxy.tls import ServerTLS, clientCreator, loadPair, verificationError

from ..certs import CertificateAuthority
from .support import curl, pythonClient

# Connects to 127.0.0.1:PORT asking for NAME, verifying against CA; prints
# the presented certificate's DNS names as JSON.
SSL_CLIENT = """
import json, socket, ssl, sys
port, name, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with context.wrap_socket(raw, server_hostname=name) as tls:
        print(json.dumps([v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"]))
"""


class _ServerName(resource.Resource):
    """
    Answers with the name the client asked for, as the TLS layer saw it.
    """

    isLeaf = True

    def render_GET(self, request):
        name = request.channel.transport.getHandle().get_servername()
        return b"server name: " + (name or b"none")


@implementer(IHandshakeListener)
class _Probe(Protocol):
    """
    Sends one HTTP/1.0 request once the handshake is done; C{done} fires
    when the connection has ended, for C{reason}.
    """

    def __init__(self) -> None:
        self.done: defer.Deferred = defer.Deferred()
        self.handshook = False
        self.received = b""
        self.reason = None

    def handshakeCompleted(self) -> None:
        self.handshook = True
        self.transport.write(b"GET / HTTP/1.0\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.reason = reason
        self.done.callback(self)


class ServerTLSTests(TestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.ca = CertificateAuthority(self.directory)
        a = loadPair(*self.ca.issue("a", ["a.test"], commonName="a.test"))
        b = loadPair(*self.ca.issue("b", ["b.test"], commonName="b.test", chain=True))
        site = server.Site(_ServerName())
        self.port = reactor.listenTCP(0, TLSMemoryBIOFactory(ServerTLS([a, b], a), False, site), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.portNumber = self.port.getHost().port

    @inlineCallbacks
    def test_curl(self):
        for name in ("a.test", "b.test"):
            out, err, code = yield curl(
                "-v", "--resolve", f"{name}:{self.portNumber}:127.0.0.1", "--cacert", self.ca.certPath,
                f"https://{name}:{self.portNumber}/",
            )
            self.assertEqual(code, 0, err)
            self.assertEqual(out, b"server name: " + name.encode())
            self.assertIn(f"subject: CN={name}".encode(), err)

    @inlineCallbacks
    def test_pythonClient(self):
        for name in ("a.test", "b.test"):
            out, err, code = yield pythonClient(SSL_CLIENT, str(self.portNumber), name, self.ca.certPath)
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out), [name])

    def probe(self, creator) -> defer.Deferred:
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", self.portNumber))
        probe = _Probe()
        return endpoint.connect(Factory.forProtocol(lambda: probe)).addCallback(lambda _: probe.done)

    @inlineCallbacks
    def test_clientVerified(self):
        probe = yield self.probe(clientCreator("b.test", caBundle=self.ca.certPath))
        self.assertTrue(probe.handshook)
        self.assertTrue(probe.received.startswith(b"HTTP/1.0 200"), probe.received)
        self.assertTrue(probe.received.endswith(b"server name: b.test"), probe.received)
        self.assertIsNone(verificationError(probe.reason))

    @inlineCallbacks
    def test_clientHostnameMismatch(self):
        probe = yield self.probe(clientCreator("c.test", caBundle=self.ca.certPath))
        # Some Twisted releases check the name only once the handshake is
        # done; none lets a byte of the answer through.
        self.assertEqual(probe.received, b"")
        self.assertEqual(verificationError(probe.reason), "certificate verify failed: hostname mismatch")

    @inlineCallbacks
    def test_clientUntrusted(self):
        other = CertificateAuthority(self.directory, "another CA", stem="other")
        probe = yield self.probe(clientCreator("a.test", caBundle=other.certPath))
        self.assertFalse(probe.handshook)
        self.assertEqual(verificationError(probe.reason), "certificate verify failed: untrusted or invalid certificate")

    @inlineCallbacks
    def test_clientUnverified(self):
        probe = yield self.probe(clientCreator("c.test", verify=False))
        self.assertTrue(probe.received.endswith(b"server name: c.test"), probe.received)
