"""
Certificates made at run time, so that no key material lives in the
repository and tests can ask for exactly the names they exercise.
"""

from __future__ import annotations

import datetime
import os
from typing import Iterable, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dualproxy.tls import certificateBuilder


def _newKey() -> ec.EllipticCurvePrivateKey:
    # P-256 rather than RSA: generating it is instant, even on PyPy.
    return ec.generate_private_key(ec.SECP256R1())


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(commonName: Optional[str], organization: Optional[str]) -> x509.Name:
    attributes = []
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if commonName is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, commonName))
    return x509.Name(attributes)


class CertificateAuthority:
    """
    A CA whose certificate is written to C{directory}/C{stem}.pem, and which
    issues leaf certificates into the same directory.

    @ivar certPath: the CA certificate, to use as a trust bundle.
    """

    def __init__(self, directory: str, commonName: str = "dualproxy test CA", stem: str = "ca") -> None:
        self.directory = directory
        self.key = _newKey()
        now = datetime.datetime.now(datetime.timezone.utc)
        name = _name(commonName, None)
        self.certificate = (
            certificateBuilder(name, name, self.key.public_key(), now, now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.certPath = os.path.join(directory, stem + ".pem")
        with open(self.certPath, "wb") as f:
            f.write(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        names: Iterable[str] = (),
        commonName: Optional[str] = None,
        organization: Optional[str] = None,
        client: bool = False,
        chain: bool = False,
        days: int = 30,
    ) -> Tuple[str, str]:
        """
        Write C{stem}.crt and C{stem}.key for a leaf with C{names} as DNS
        subject alternative names (none: only C{commonName} names it).

        @param client: make a client certificate (clientAuth usage) instead
            of a server one.
        @param chain: append the CA certificate after the leaf, as a server
            sending its whole chain would.
        @param days: how long from now the leaf stays valid.
        @return: the certificate and key paths.
        """
        key = _newKey()
        now = datetime.datetime.now(datetime.timezone.utc)
        names = list(names)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            certificateBuilder(_name(commonName, organization), self.certificate.subject, key.public_key(), now,
                               now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        if chain:
            pem += self.certificate.public_bytes(serialization.Encoding.PEM)
        certPath = os.path.join(self.directory, stem + ".crt")
        keyPath = os.path.join(self.directory, stem + ".key")
        with open(certPath, "wb") as f:
            f.write(pem)
        with open(keyPath, "wb") as f:
            f.write(_keyPEM(key))
        return certPath, keyPath
