"""
Tests for L{dualproxy.tls}: loading certificate pairs, the names they cover,
and the listening side's handshakes (SNI, ALPN, versions, client
certificates, reload), all in memory.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dualproxy.tls import (
    ServerTLS,
    TLSConfigError,
    clientCreator,
    loadPair,
    peerSubject,
    upstreamTLSError,
    verificationError,
)

from ..certs import CertificateAuthority


def dnsNames(certificate: x509.Certificate) -> List[str]:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def _pump(source: SSL.Connection, destination: SSL.Connection) -> bool:
    try:
        data = source.bio_read(65536)
    except SSL.WantReadError:
        return False
    destination.bio_write(data)
    return True


def handshake(client: SSL.Connection, server: SSL.Connection) -> None:
    """
    Drive both ends of a memory-BIO connection through the handshake; an
    C{SSL.Error} from either end propagates.
    """
    done = set()
    for _ in range(10):
        for end in (client, server):
            if id(end) not in done:
                try:
                    end.do_handshake()
                    done.add(id(end))
                except SSL.WantReadError:
                    pass
        moved = _pump(client, server) | _pump(server, client)
        if len(done) == 2 and not moved:
            return
    raise AssertionError("handshake did not finish")


class _Directory(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.ca = CertificateAuthority(self.directory)

    def path(self, name: str, content: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(content)
        return path


class LoadPairTests(_Directory):
    def test_loads(self) -> None:
        pair = loadPair(*self.ca.issue("a", ["a.test"]))
        self.assertEqual(len(pair.chain), 1)
        self.assertEqual(pair.names, ("a.test",))

    def test_chain(self) -> None:
        pair = loadPair(*self.ca.issue("a", ["a.test"], chain=True))
        self.assertEqual([c.subject for c in pair.chain][1], self.ca.certificate.subject)

    def assertProblem(self, certPath: str, keyPath: str, *fragments: str) -> None:
        problem = str(self.assertRaises(TLSConfigError, loadPair, certPath, keyPath))
        self.assertNotIn("\n", problem)
        self.assertIsInstance(TLSConfigError(problem), ValueError)
        for fragment in fragments:
            self.assertIn(fragment, problem)

    def test_missingFile(self) -> None:
        certPath, keyPath = self.ca.issue("a", ["a.test"])
        missing = os.path.join(self.directory, "missing.pem")
        self.assertProblem(missing, keyPath, missing, "cannot read")
        self.assertProblem(certPath, missing, missing, "cannot read")

    def test_notPEM(self) -> None:
        certPath, keyPath = self.ca.issue("a", ["a.test"])
        junk = self.path("junk.pem", b"hello\n")
        self.assertProblem(junk, keyPath, junk, "not a PEM certificate")
        self.assertProblem(certPath, junk, junk, "not a PEM private key")
        self.assertProblem(keyPath, keyPath, keyPath, "not a PEM certificate")

    def test_encryptedKey(self) -> None:
        certPath, keyPath = self.ca.issue("a", ["a.test"])
        key = loadPair(certPath, keyPath).key
        encrypted = self.path(
            "encrypted.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
        )
        self.assertProblem(certPath, encrypted, encrypted, "encrypted")

    def test_keyMismatch(self) -> None:
        certPath, _ = self.ca.issue("a", ["a.test"])
        _, otherKey = self.ca.issue("b", ["b.test"])
        self.assertProblem(certPath, otherKey, otherKey, "does not match", certPath)

    def test_chainOrder(self) -> None:
        certPath, keyPath = self.ca.issue("a", ["a.test"])
        with open(certPath, "rb") as f:
            leaf = f.read()
        with open(self.ca.certPath, "rb") as f:
            authority = f.read()
        reversed_ = self.path("reversed.crt", authority + leaf)
        self.assertProblem(reversed_, keyPath, reversed_, "leaf first")
        other = CertificateAuthority(self.directory, "another CA", stem="other")
        with open(other.certPath, "rb") as f:
            unrelated = self.path("unrelated.crt", leaf + f.read())
        self.assertProblem(unrelated, keyPath, unrelated, "certificate 2 did not issue certificate 1")


class NamesTests(_Directory):
    def test_names(self) -> None:
        self.assertEqual(loadPair(*self.ca.issue("s", ["A.test", "*.w.test"], commonName="ignored.test")).names,
                         ("a.test", "*.w.test"))
        self.assertEqual(loadPair(*self.ca.issue("c", [], commonName="cn.test")).names, ("cn.test",))

    def test_covers(self) -> None:
        pair = loadPair(*self.ca.issue("s", ["a.test", "*.example.com"]))
        table = [
            ("a.test", True),
            ("A.Test.", True),
            ("b.test", False),
            ("x.a.test", False),
            ("a.example.com", True),
            ("A.EXAMPLE.COM", True),
            ("example.com", False),
            ("a.b.example.com", False),
            (".example.com", False),
            ("aexample.com", False),
        ]
        for hostname, expected in table:
            self.assertEqual(pair.covers(hostname), expected, hostname)


class ServerTLSTests(_Directory):
    def setUp(self) -> None:
        super().setUp()
        self.a = loadPair(*self.ca.issue("a", ["a.test"]))
        self.b = loadPair(*self.ca.issue("b", ["b.test", "*.b.test"], chain=True))
        self.fallback = loadPair(*self.ca.issue("default", ["default.test"]))

    def client(
        self,
        serverName: Optional[bytes],
        alpn: Sequence[bytes] = (),
        maximumVersion: Optional[int] = None,
        certificate=None,
    ) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_METHOD)
        context.load_verify_locations(self.ca.certPath)
        context.set_verify(SSL.VERIFY_PEER)
        if maximumVersion is not None:
            context.set_max_proto_version(maximumVersion)
        if certificate is not None:
            context.use_certificate(certificate.chain[0])
            context.use_privatekey(certificate.key)
        connection = SSL.Connection(context, None)
        if serverName is not None:
            connection.set_tlsext_host_name(serverName)
        if alpn:
            connection.set_alpn_protos(list(alpn))
        connection.set_connect_state()
        return connection

    def server(self, creator: ServerTLS) -> SSL.Connection:
        connection = creator.serverConnectionForTLS(None)
        connection.set_accept_state()
        return connection

    def presented(self, creator: ServerTLS, serverName: Optional[bytes]) -> List[str]:
        client = self.client(serverName)
        handshake(client, self.server(creator))
        return dnsNames(client.get_peer_certificate(as_cryptography=True))

    def test_serverName(self) -> None:
        creator = ServerTLS([self.a, self.b], self.fallback)
        table = [
            (b"a.test", ["a.test"]),
            (b"A.TEST", ["a.test"]),
            (b"b.test", ["b.test", "*.b.test"]),
            (b"x.b.test", ["b.test", "*.b.test"]),
            (b"unknown.test", ["default.test"]),
            (None, ["default.test"]),
        ]
        for serverName, names in table:
            self.assertEqual(self.presented(creator, serverName), names, serverName)

    def test_exactBeforeWildcard(self) -> None:
        exact = loadPair(*self.ca.issue("x", ["x.b.test"]))
        creator = ServerTLS([self.b, exact], self.fallback)
        self.assertEqual(self.presented(creator, b"x.b.test"), ["x.b.test"])

    def test_chainSent(self) -> None:
        client = self.client(b"b.test")
        handshake(client, self.server(ServerTLS([self.a, self.b], self.fallback)))
        self.assertEqual(len(client.get_peer_cert_chain()), 2)

    def negotiated(self, creator: ServerTLS, offered: Sequence[bytes]) -> bytes:
        client = self.client(b"a.test", alpn=offered)
        server = self.server(creator)
        handshake(client, server)
        self.assertEqual(client.get_alpn_proto_negotiated(), server.get_alpn_proto_negotiated())
        return client.get_alpn_proto_negotiated()

    def test_alpn(self) -> None:
        both = ServerTLS([self.a], self.fallback, alpn=[b"h2", b"http/1.1"])
        plain = ServerTLS([self.a], self.fallback)
        self.assertEqual(self.negotiated(both, [b"http/1.1", b"h2"]), b"h2")
        self.assertEqual(self.negotiated(both, [b"http/1.1"]), b"http/1.1")
        self.assertEqual(self.negotiated(plain, [b"h2", b"http/1.1"]), b"http/1.1")
        self.assertEqual(self.negotiated(plain, [b"h2"]), b"")
        self.assertEqual(self.negotiated(plain, []), b"")

    def test_minimumVersion(self) -> None:
        default = ServerTLS([self.a], self.fallback)
        strict = ServerTLS([self.a], self.fallback, minimumVersion="TLSv1.3")
        self.assertRaises(
            SSL.Error, handshake, self.client(b"a.test", maximumVersion=SSL.TLS1_1_VERSION), self.server(default)
        )
        client = self.client(b"a.test", maximumVersion=SSL.TLS1_2_VERSION)
        handshake(client, self.server(default))
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.2")
        self.assertTrue(client.get_cipher_name().startswith("ECDHE-"))
        self.assertRaises(
            SSL.Error, handshake, self.client(b"a.test", maximumVersion=SSL.TLS1_2_VERSION), self.server(strict)
        )
        client = self.client(b"a.test")
        handshake(client, self.server(strict))
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.3")

    def test_badMinimumVersion(self) -> None:
        problem = str(self.assertRaises(TLSConfigError, ServerTLS, [], self.fallback, minimumVersion="TLSv1.1"))
        self.assertIn("TLSv1.1", problem)

    def test_clientCertificateRequired(self) -> None:
        alice = loadPair(*self.ca.issue("alice", [], commonName="alice", organization="Example", client=True))
        creator = ServerTLS([self.a], self.fallback, clientCA=self.ca.certPath)
        self.assertRaises(SSL.Error, handshake, self.client(b"a.test"), self.server(creator))
        server = self.server(creator)
        handshake(self.client(b"a.test", certificate=alice), server)
        self.assertEqual(
            server.get_peer_certificate(as_cryptography=True).subject, alice.chain[0].subject
        )

    def test_clientCertificateFromOtherCA(self) -> None:
        other = CertificateAuthority(self.directory, "another CA", stem="other")
        mallory = loadPair(*other.issue("mallory", [], commonName="mallory", client=True))
        creator = ServerTLS([self.a], self.fallback, clientCA=self.ca.certPath, clientCertificateOptional=True)
        self.assertRaises(SSL.Error, handshake, self.client(b"a.test", certificate=mallory), self.server(creator))

    def test_clientCertificateOptional(self) -> None:
        creator = ServerTLS([self.a], self.fallback, clientCA=self.ca.certPath, clientCertificateOptional=True)
        server = self.server(creator)
        handshake(self.client(b"a.test"), server)
        self.assertIsNone(server.get_peer_certificate())

    def test_missingClientCA(self) -> None:
        missing = os.path.join(self.directory, "missing.pem")
        problem = str(self.assertRaises(TLSConfigError, ServerTLS, [self.a], self.fallback, clientCA=missing))
        self.assertIn(missing, problem)

    def test_reload(self) -> None:
        creator = ServerTLS([self.a, self.b], self.fallback)
        before = self.server(creator)
        old = self.a.chain[0].serial_number
        self.ca.issue("a", ["a.test", "new.a.test"])
        creator.reload()

        client = self.client(b"a.test")
        handshake(client, before)
        self.assertEqual(client.get_peer_certificate(as_cryptography=True).serial_number, old)
        self.assertEqual(self.presented(creator, b"a.test"), ["a.test", "new.a.test"])

        with open(self.a.keyPath, "wb") as f:
            f.write(b"not a key\n")
        problem = str(self.assertRaises(TLSConfigError, creator.reload))
        self.assertIn(self.a.keyPath, problem)
        self.assertEqual(self.presented(creator, b"a.test"), ["a.test", "new.a.test"])
        self.assertEqual(self.presented(creator, b"b.test"), ["b.test", "*.b.test"])


@implementer(IHandshakeListener)
class _Recorder(Protocol):
    handshook = False
    lost = None

    def handshakeCompleted(self) -> None:
        self.handshook = True

    def connectionLost(self, reason) -> None:
        self.lost = reason


class TwistedTests(_Directory):
    """
    L{ServerTLS} and L{clientCreator} in Twisted's own TLS protocol, with
    an in-memory transport.
    """

    def connect(self, server: ServerTLS, client) -> Tuple[_Recorder, _Recorder]:
        """
        Connect and run the handshake; return the application protocols of
        the client and the server.
        """
        serverFactory = TLSMemoryBIOFactory(server, False, Factory.forProtocol(_Recorder))
        clientFactory = TLSMemoryBIOFactory(client, True, Factory.forProtocol(_Recorder))
        clientTLS, serverTLS, pump = iosim.connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None), lambda: clientFactory.buildProtocol(None), greet=False
        )
        applications = clientTLS.wrappedProtocol, serverTLS.wrappedProtocol
        pump.flush()
        return applications

    def test_peerSubject(self) -> None:
        a = loadPair(*self.ca.issue("a", ["a.test"]))
        alice = loadPair(*self.ca.issue("alice", [], commonName="alice", organization="Example", client=True))
        creator = ServerTLS([a], a, clientCA=self.ca.certPath, clientCertificateOptional=True)

        client, server = self.connect(creator, clientCreator("a.test", self.ca.certPath, clientPair=alice))
        self.assertTrue(client.handshook)
        self.assertEqual(peerSubject(server.transport), "CN=alice,O=Example")

        client, server = self.connect(creator, clientCreator("a.test", self.ca.certPath))
        self.assertTrue(server.handshook)
        self.assertIsNone(peerSubject(server.transport))

    def test_peerSubjectPlain(self) -> None:
        client, server, pump = iosim.connectedServerAndClient(Protocol, Protocol)
        self.assertIsNone(peerSubject(server.transport))

    def test_alpnThroughTwisted(self) -> None:
        a = loadPair(*self.ca.issue("a", ["a.test"]))
        creator = ServerTLS([a], a, alpn=[b"h2", b"http/1.1"])
        client, server = self.connect(creator, clientCreator("a.test", self.ca.certPath, alpn=[b"http/1.1", b"h2"]))
        self.assertEqual(server.transport.negotiatedProtocol, b"h2")
        self.assertEqual(client.transport.negotiatedProtocol, b"h2")

    def test_unverified(self) -> None:
        """
        Each failure is named for what it is, on every Twisted release (an
        untrusted certificate for the wrong name is reported either way by
        different releases, and some check the name only once the handshake
        is done, so each case has one fault and the test looks at how the
        connection was lost).
        """
        other = CertificateAuthority(self.directory, "another CA", stem="other")
        untrusted = ServerTLS([], loadPair(*other.issue("a", ["a.test"])))
        client, _ = self.connect(untrusted, clientCreator("a.test", self.ca.certPath))
        self.assertFalse(client.handshook)
        self.assertEqual(
            upstreamTLSError(client.lost),
            ("tls_certificate_error", "certificate verify failed: untrusted or invalid certificate"),
        )
        misnamed = ServerTLS([], loadPair(*self.ca.issue("a", ["a.test"])))
        client, _ = self.connect(misnamed, clientCreator("wrong.test", self.ca.certPath))
        self.assertEqual(verificationError(client.lost), "certificate verify failed: hostname mismatch")
        self.assertEqual(
            upstreamTLSError(client.lost), ("tls_certificate_error", "certificate verify failed: hostname mismatch")
        )
        client, server = self.connect(untrusted, clientCreator("wrong.test", verify=False))
        self.assertTrue(client.handshook)
        self.assertEqual(server.transport.getHandle().get_servername(), b"wrong.test")

    def test_otherFailures(self) -> None:
        self.assertIsNone(verificationError(Failure(ConnectionRefusedError())))
        self.assertIsNone(verificationError(Failure(SSL.Error([("SSL routines", "", "wrong version number")]))))

    def test_alertFromUpstream(self) -> None:
        """
        RFC 9209 section 2.3.15: an upstream that wants a client
        certificate we do not have says so with an alert.
        """
        a = loadPair(*self.ca.issue("a", ["a.test"]))
        creator = ServerTLS([a], a, clientCA=self.ca.certPath)
        client, _ = self.connect(creator, clientCreator("a.test", self.ca.certPath))
        self.assertEqual(
            upstreamTLSError(client.lost), ("tls_alert_received", "alert received: tlsv13 alert certificate required")
        )

    def test_upstreamTLSErrorTypes(self) -> None:
        self.assertIsNone(upstreamTLSError(Failure(ConnectionRefusedError())))
        self.assertEqual(
            upstreamTLSError(Failure(SSL.Error([("SSL routines", "", "wrong version number")]))),
            ("tls_protocol_error", "failed: wrong version number"),
        )
        self.assertEqual(
            upstreamTLSError(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))),
            ("tls_certificate_error", "certificate verify failed: untrusted or invalid certificate"),
        )
        self.assertEqual(upstreamTLSError(Failure(SSL.Error())), ("tls_protocol_error", "failed: protocol error"))
