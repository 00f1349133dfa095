"""
TLS-ALPN-01 (RFC 8737): the key authorization, the challenge certificate,
the validation server's hello, and a server switching to the challenge
certificate in its ALPN callback, over an in-memory handshake.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.acme.tlsalpn import ACME_IDENTIFIER_OID, challengeCertificate, keyAuthorization
from dualproxy.tls import ACME_TLS_ALPN, CertificateBook, CertificatePair, ServerTLS, isChallengeHello

try:
    import josepy
except ImportError:
    josepy = None

UTC = datetime.timezone.utc

# RFC 7638 section 3.1: the example RSA key, its canonical JSON (members
# sorted, no whitespace) and the base64url of that JSON's SHA-256.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aP"
    "FFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl9"
    "3lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
    "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3"
    "XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_JSON = '{"e":"AQAB","kty":"RSA","n":"' + RFC7638_N + '"}'
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

Pair = Tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


class _HandThumbprinted:
    """
    An account key whose thumbprint is computed here by hand, so the key
    authorization is checked without C{josepy}.
    """

    def thumbprint(self) -> bytes:
        return hashlib.sha256(RFC7638_JSON.encode("ascii")).digest()


class KeyAuthorizationTests(SynchronousTestCase):
    def test_tokenDotThumbprint(self):
        self.assertEqual(
            keyAuthorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", _HandThumbprinted()),
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA." + RFC7638_THUMBPRINT,
        )

    def test_josepyKey(self):
        key = josepy.JWKRSA.json_loads(RFC7638_JSON)
        self.assertEqual(keyAuthorization("token", key), "token." + RFC7638_THUMBPRINT)

    if josepy is None:
        test_josepyKey.skip = "josepy (the acme extra) is not installed"


class ChallengeCertificateTests(SynchronousTestCase):
    def setUp(self):
        self.authorization = "token." + RFC7638_THUMBPRINT
        self.certificate, self.key = challengeCertificate("example.test", self.authorization)

    def test_onlyTheDomain(self):
        names = self.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(list(names.value), [x509.DNSName("example.test")])

    def test_acmeIdentifier(self):
        extension = self.certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        self.assertTrue(extension.critical)
        digest = hashlib.sha256(self.authorization.encode("ascii")).digest()
        self.assertEqual(extension.value.value, b"\x04\x20" + digest)

    def test_selfSignedFreshP256Key(self):
        self.assertIsInstance(self.key.curve, ec.SECP256R1)
        self.assertEqual(self.certificate.public_key(), self.key.public_key())
        self.certificate.verify_directly_issued_by(self.certificate)
        _, other = challengeCertificate("example.test", self.authorization)
        self.assertNotEqual(other.public_key(), self.key.public_key())

    def test_validity(self):
        now = datetime.datetime.now(UTC)
        notBefore = self.certificate.not_valid_before_utc
        notAfter = self.certificate.not_valid_after_utc
        self.assertLess(abs(now - datetime.timedelta(days=1) - notBefore), datetime.timedelta(minutes=1))
        self.assertEqual(notAfter - notBefore, datetime.timedelta(days=8))


class ChallengeHelloTests(SynchronousTestCase):
    def test_onlyAcme(self):
        self.assertTrue(isChallengeHello([ACME_TLS_ALPN]))

    def test_others(self):
        self.assertFalse(isChallengeHello([]))
        self.assertFalse(isChallengeHello([b"http/1.1"]))
        self.assertFalse(isChallengeHello([b"h2", b"acme-tls/1"]))
        self.assertFalse(isChallengeHello([b"acme-tls/1", b"acme-tls/1"]))


def _selfSigned(name: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _handshake(
    serverTLS: ServerTLS, offered: List[bytes], serverName: bytes
) -> Tuple[Optional[x509.Certificate], bytes]:
    """
    Handshake a client offering C{offered} with C{serverTLS} over memory
    BIOs: the certificate the client got and the protocol negotiated.
    """
    server = serverTLS.serverConnectionForTLS(None)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
    client.set_connect_state()
    client.set_tlsext_host_name(serverName)
    client.set_alpn_protos(offered)
    pending = [client, server]
    for _ in range(10):
        for connection in list(pending):
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                continue
            pending.remove(connection)
        for source, sink in ((client, server), (server, client)):
            try:
                sink.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
        if not pending:
            break
    else:
        raise AssertionError("handshake did not complete")
    return client.get_peer_certificate(as_cryptography=True), client.get_alpn_proto_negotiated()


class ALPNCallbackTests(SynchronousTestCase):
    """
    The listeners' TLS answering a challenge from their certificate book.
    """

    def setUp(self):
        self.normal = _selfSigned("normal.test")
        self.other = _selfSigned("other.test")
        self.authorization = "token." + RFC7638_THUMBPRINT
        self.challenge = challengeCertificate("example.test", self.authorization)
        self.book = CertificateBook(CertificatePair("-", "-", [self.normal[0]], self.normal[1]))
        self.book.put("other.test", CertificatePair("-", "-", [self.other[0]], self.other[1]))
        self.book.offerChallenge("Example.Test", *self.challenge)
        self.serverTLS = ServerTLS([], None, book=self.book)

    def test_validationServerGetsChallenge(self):
        certificate, protocol = _handshake(self.serverTLS, [ACME_TLS_ALPN], b"example.test")
        self.assertEqual(protocol, ACME_TLS_ALPN)
        self.assertEqual(certificate, self.challenge[0])
        extension = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        digest = hashlib.sha256(self.authorization.encode("ascii")).digest()
        self.assertEqual(extension.value.value, b"\x04\x20" + digest)

    def test_afterSNISwitch(self):
        """
        A challenge for a name another certificate covers is answered from
        that certificate's context too (SNI switched to it first).
        """
        self.book.offerChallenge("other.test", *self.challenge)
        certificate, protocol = _handshake(self.serverTLS, [ACME_TLS_ALPN], b"other.test")
        self.assertEqual((certificate, protocol), (self.challenge[0], ACME_TLS_ALPN))

    def test_normalClientGetsNormal(self):
        certificate, protocol = _handshake(self.serverTLS, [b"http/1.1"], b"example.test")
        self.assertEqual(protocol, b"http/1.1")
        self.assertEqual(certificate, self.other[0])
        self.assertRaises(
            x509.ExtensionNotFound, certificate.extensions.get_extension_for_oid, ACME_IDENTIFIER_OID
        )

    def test_alsoOfferingAcmeGetsNormal(self):
        certificate, protocol = _handshake(self.serverTLS, [b"h2", ACME_TLS_ALPN], b"example.test")
        self.assertEqual(protocol, b"")
        self.assertEqual(certificate, self.other[0])

    def test_withdrawn(self):
        self.book.withdrawChallenge("example.test")
        certificate, _ = _handshake(self.serverTLS, [ACME_TLS_ALPN], b"example.test")
        self.assertEqual(certificate, self.other[0])
