"""
TLS-ALPN-01 (RFC 8737) building blocks, free of I/O: the C{acme} library
dropped this challenge, so the key authorization, the challenge certificate
and the recognition of a validation server's hello are done here.

A TLS server answers a challenge by presenting the challenge certificate
only to a validation server's hello (L{dualproxy.tls.CertificateBook}),
and the normal certificate to everyone else.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import Optional, Protocol, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ..tls import certificateBuilder

# RFC 8737 section 6.1: id-pe-acmeIdentifier.
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
# The validation server checks only the extension and the name, so a
# short lifetime is enough.
_LIFETIME = datetime.timedelta(days=7)


class _Thumbprinted(Protocol):
    """
    What L{keyAuthorization} needs of an account key: a C{josepy} JWK.
    """

    def thumbprint(self) -> bytes: ...


def keyAuthorization(token: str, accountKey: _Thumbprinted) -> str:
    """
    The key authorization of RFC 8555 section 8.1, which binds the
    challenge's C{token} to the account: the token, a dot and the
    unpadded base64url SHA-256 JWK thumbprint (RFC 7638) of the account's
    public key.
    """
    thumbprint = base64.urlsafe_b64encode(accountKey.thumbprint()).rstrip(b"=")
    return token + "." + thumbprint.decode("ascii")


def _acmeIdentifier(keyAuthorization: str) -> bytes:
    """
    The DER of the extension's value, an OCTET STRING holding the SHA-256
    digest of the key authorization (RFC 8737 section 3): the digest has a
    fixed length of 32, so its header is always C{04 20}.
    """
    return b"\x04\x20" + hashlib.sha256(keyAuthorization.encode("ascii")).digest()


def selfSigned(names: Sequence[str], commonName: Optional[str] = None,
               extensions: Sequence[x509.ExtensionType] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A fresh self-signed P-256 certificate for C{names}, valid for a week,
    with C{extensions} marked critical.  Without a common name the subject
    is empty, so the names are critical too (RFC 5280 section 4.2.1.6).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)] if commonName else [])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = certificateBuilder(subject, subject, key.public_key(), now, now + _LIFETIME).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=commonName is None)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    return builder.sign(key, hashes.SHA256()), key


def challengeCertificate(domain: str, keyAuthorization: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """
    A certificate and its key that answer the TLS-ALPN-01 challenge for
    C{domain}: its only name is C{domain} and its critical acmeIdentifier
    extension carries the key authorization's digest (RFC 8737 section 3).
    The key is new each time because the certificate is thrown away once
    the challenge is decided.
    """
    return selfSigned([domain], extensions=[
        x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, _acmeIdentifier(keyAuthorization))])
