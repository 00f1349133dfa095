"""
The interception CA: made once by ``dualproxy-ca init``, loaded at start-up,
and the leaf certificates it mints for each host a client tunnels to.

Leaves share one P-256 key made at start-up: minting is then a signature,
well under a millisecond, so it runs on the reactor thread.  Each leaf's
context is kept in a bounded LRU, since a client opens many tunnels to the
same hosts.
"""

from __future__ import annotations

import datetime
import os
import stat
from collections import OrderedDict
from ipaddress import ip_address
from typing import Callable, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from ..tls import CertificatePair, TLSConfigError, certificateBuilder, loadPair, serverContext, validity

CERTIFICATE_FILE = "ca.pem"
KEY_FILE = "ca-key.pem"

#: How long a minted leaf is valid; it is minted again after half of it.
LEAF_LIFETIME = datetime.timedelta(days=30)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _keyPEM(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def createAuthority(directory: str, commonName: str = "dualproxy interception CA",
                    days: int = 3650) -> Tuple[str, str]:
    """
    Make a new CA in C{directory}: its certificate (world-readable, to be
    installed in clients) and its key (0600 from the moment it exists).

    @raise FileExistsError: either file is there already; an existing CA is
        never overwritten, since clients trust it.
    @return: the certificate and key paths.
    """
    certPath = os.path.join(directory, CERTIFICATE_FILE)
    keyPath = os.path.join(directory, KEY_FILE)
    for path in (certPath, keyPath):
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists already: remove it to make a new CA")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dualproxy")])
    now = _now()
    certificate = (
        certificateBuilder(name, name, key.public_key(), now, now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    descriptor = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(_keyPEM(key))
    with open(certPath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return certPath, keyPath


def fingerprint(certificate: x509.Certificate) -> str:
    """
    The SHA-256 fingerprint as browsers show it (colon-separated hex).
    """
    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def loadAuthority(certPath: str, keyPath: str) -> CertificatePair:
    """
    Read the CA, refusing one that could not sign leaves or whose key
    others can read.

    @raise TLSConfigError: one line naming the file and the problem.
    """
    try:
        mode = os.stat(keyPath).st_mode
    except OSError as e:
        raise TLSConfigError(f"{keyPath}: cannot read: {e.strerror or e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TLSConfigError(f"{keyPath}: the CA key is readable by others (mode {stat.S_IMODE(mode):04o}): "
                             f"chmod 600 {keyPath}")
    pair = loadPair(certPath, keyPath)
    certificate = pair.chain[0]
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise TLSConfigError(f"{certPath}: not a CA certificate (make one with dualproxy-ca init)")
    expiry = _notAfter(certificate)
    if expiry <= _now():
        raise TLSConfigError(f"{certPath}: the CA certificate expired on {expiry:%Y-%m-%d}")
    return pair


def _subjectName(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class LeafMinter:
    """
    Leaf certificates signed by the CA, one per host name, their server
    contexts kept in an LRU of C{size}.

    @param alpn: what the contexts offer, preferred first.
    @param clock: returns the current UTC time (a test's fixed clock).
    """

    def __init__(self, authority: CertificatePair, size: int, alpn: Sequence[bytes],
                 clock: Callable[[], datetime.datetime] = _now):
        self.authority = authority
        self.size = size
        self.alpn = tuple(alpn)
        self.clock = clock
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.minted = 0
        self._contexts: OrderedDict = OrderedDict()

    def mint(self, host: str) -> CertificatePair:
        """
        A leaf for C{host} (a name or an IP address), valid from a day ago
        (clocks drift) for L{LEAF_LIFETIME}, never past the CA's own expiry.
        """
        issuer = self.authority.chain[0]
        now = self.clock()
        notAfter = min(now + LEAF_LIFETIME, _notAfter(issuer))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
        certificate = (
            certificateBuilder(subject, issuer.subject, self.key.public_key(), now, notAfter)
            .add_extension(x509.SubjectAlternativeName([_subjectName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.authority.key.public_key()),
                           critical=False)
            .sign(self.authority.key, hashes.SHA256())
        )
        self.minted += 1
        return CertificatePair("(minted)", "(minted)", (certificate, issuer), self.key)

    def contextFor(self, host: str) -> SSL.Context:
        """
        The server context presenting C{host}'s leaf, minted on first use
        and again once half its lifetime has passed.
        """
        host = host.lower().rstrip(".")
        now = self.clock()
        entry = self._contexts.get(host)
        if entry is not None and now < entry[1]:
            self._contexts.move_to_end(host)
            return entry[0]
        context = serverContext(self.mint(host), self.alpn, self.chooseContext)
        self._contexts[host] = (context, now + LEAF_LIFETIME / 2)
        self._contexts.move_to_end(host)
        while len(self._contexts) > self.size:
            self._contexts.popitem(last=False)
        return context

    def __len__(self) -> int:
        return len(self._contexts)

    def chooseContext(self, connection: SSL.Connection) -> None:
        """
        The SNI callback: present the name the client asked for.
        """
        name = connection.get_servername()
        if name:
            connection.set_context(self.contextFor(name.decode("ascii", "replace")))


def _notAfter(certificate: x509.Certificate) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(validity(certificate)[1], datetime.timezone.utc)
