"""
TLS for both modes, in one place so that both share the same secure
defaults: certificate pairs read from PEM files, the listening side's
per-name contexts chosen by SNI (reloadable), and connection creators for
TLS to upstreams.  Only contexts and connections are built here; the
protocol work stays in L{twisted.protocols.tls}.
"""

from __future__ import annotations

import datetime
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    ISystemHandle,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from .http.proxystatus import TLS_ALERT_RECEIVED, TLS_CERTIFICATE_ERROR, TLS_PROTOCOL_ERROR
from .twistedcompat import tlsConnection

__all__ = [
    "TLSConfigError",
    "CertificatePair",
    "loadPair",
    "certificateBuilder",
    "ServerTLS",
    "CertificateBook",
    "serverContext",
    "peerSubject",
    "clientCreator",
    "verificationError",
    "upstreamTLSError",
]

_VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}

# Forward secrecy and AEAD only; TLS 1.3 suites are all of that already.
_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20"

# Renegotiation is a DoS lever with no use for a proxy; older pyOpenSSL
# builds lack the constant, and their OpenSSL then does not offer it.
_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | getattr(SSL, "OP_NO_RENEGOTIATION", 0)


class TLSConfigError(ValueError):
    """
    Certificates, keys or TLS settings that cannot be used; C{str()} is one
    line naming the file and the problem, fit for a startup error or a
    failed reload's log line.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"{path}: cannot read: {e.strerror or e}") from None


def _loadCertificates(path: str) -> List[x509.Certificate]:
    data = _read(path)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"{path}: not a PEM certificate file") from None


def _spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _matches(pattern: str, hostname: str) -> bool:
    if pattern.startswith("*."):
        label, dot, rest = hostname.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == hostname


def _normalise(hostname: str) -> str:
    return hostname.lower().rstrip(".")


class CertificatePair:
    """
    A certificate chain (leaf first) and its private key, kept with the
    paths they came from so that a reload can read them again.

    @ivar names: the DNS names the leaf covers, lower case: its subject
        alternative names, or its common name when it has none (as older
        certificates do).
    """

    def __init__(self, certPath: str, keyPath: str, chain: Sequence[x509.Certificate], key) -> None:
        self.certPath = certPath
        self.keyPath = keyPath
        self.chain = tuple(chain)
        self.key = key
        self.names = self._names(self.chain[0])

    @staticmethod
    def _names(leaf: x509.Certificate) -> Tuple[str, ...]:
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return tuple(
                _normalise(str(a.value)) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            )
        return tuple(_normalise(name) for name in san.get_values_for_type(x509.DNSName))

    def covers(self, hostname: str) -> bool:
        """
        Whether a client asking for C{hostname} would accept this
        certificate; a wildcard stands for exactly one leftmost label.
        """
        hostname = _normalise(hostname)
        return any(_matches(name, hostname) for name in self.names)

    def __repr__(self) -> str:
        return f"<CertificatePair {self.certPath} {list(self.names)}>"


def loadPair(certPath: str, keyPath: str) -> CertificatePair:
    """
    Read and check a PEM certificate chain and its key, so that mistakes
    surface at startup (or reload) rather than as handshake failures.

    @raise TLSConfigError: a file is missing or unreadable, is not PEM, the
        key is encrypted or belongs to another certificate, or the chain is
        not in leaf-then-issuer order.
    """
    chain = _loadCertificates(certPath)
    data = _read(keyPath)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(f"{keyPath}: encrypted private keys are not supported") from None
    except ValueError:
        raise TLSConfigError(f"{keyPath}: not a PEM private key") from None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    owners = [i for i, certificate in enumerate(chain) if _spki(certificate) == public]
    if not owners:
        raise TLSConfigError(f"{keyPath}: key does not match the certificate in {certPath}")
    if owners[0] != 0:
        raise TLSConfigError(
            f"{certPath}: the key matches certificate {owners[0] + 1}, not the first: put the leaf first"
        )
    for i in range(len(chain) - 1):
        if chain[i].issuer != chain[i + 1].subject:
            raise TLSConfigError(
                f"{certPath}: certificate {i + 2} did not issue certificate {i + 1}: "
                "put the leaf first, then each issuer"
            )
    return CertificatePair(certPath, keyPath, chain, key)


def validity(certificate: x509.Certificate) -> Tuple[float, float]:
    """
    When C{certificate} starts and stops being valid, in POSIX seconds.
    """
    # cryptography before 42 has only the naive UTC datetimes.
    before = getattr(certificate, "not_valid_before_utc", None)
    after = getattr(certificate, "not_valid_after_utc", None)
    if before is None or after is None:
        utc = datetime.timezone.utc
        before = certificate.not_valid_before.replace(tzinfo=utc)
        after = certificate.not_valid_after.replace(tzinfo=utc)
    return before.timestamp(), after.timestamp()


def certificateBuilder(subject: x509.Name, issuer: x509.Name, publicKey, now: datetime.datetime,
                       notAfter: datetime.datetime) -> x509.CertificateBuilder:
    """
    The start every certificate made at run time shares (ACME's
    placeholder and challenges, the interception CA and its leaves): a
    random serial, and valid from a day before C{now}, so that a peer
    whose clock is slow accepts it; the caller adds the extensions and
    signs.
    """
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(notAfter)
    )


class _Generation:
    """
    The named contexts built from one reading of the files.  It chooses for
    connections started from its own default context only, so a reload
    never changes a handshake under way.
    """

    def __init__(self, named: Sequence[Tuple[CertificatePair, SSL.Context]]) -> None:
        self._exact: Dict[str, SSL.Context] = {}
        self._named = list(named)
        for pair, context in named:
            for name in pair.names:
                if not name.startswith("*."):
                    self._exact.setdefault(name, context)

    def contextFor(self, hostname: str) -> Optional[SSL.Context]:
        """
        The context for an exact name match, else the first wildcard match.
        """
        hostname = _normalise(hostname)
        if hostname in self._exact:
            return self._exact[hostname]
        for pair, context in self._named:
            if pair.covers(hostname):
                return context
        return None

    def chooseContext(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if name is None:
            return
        context = self.contextFor(name.decode("ascii", "replace"))
        if context is not None:
            connection.set_context(context)


class CertificateBook:
    """
    Certificates that change while the proxy runs (obtained over ACME), by
    the name each was obtained for, and the TLS-ALPN-01 challenges in
    progress.  Listeners that present them take each new generation at
    their next connection; connections already made keep theirs.

    @ivar placeholder: presented for a name whose certificate is not
        there yet, when no configured certificate is either.
    """

    def __init__(self, placeholder: CertificatePair) -> None:
        self.placeholder = placeholder
        self.generation = 0
        self._pairs: Dict[str, CertificatePair] = {}
        self._challenges: Dict[str, Tuple[x509.Certificate, object]] = {}

    def pairs(self) -> List[CertificatePair]:
        return list(self._pairs.values())

    def get(self, name: str) -> Optional[CertificatePair]:
        return self._pairs.get(name)

    def put(self, name: str, pair: CertificatePair) -> None:
        self._pairs[name] = pair
        self.generation += 1

    def offerChallenge(self, name: str, certificate: x509.Certificate, key) -> None:
        """
        Present C{certificate} to TLS-ALPN-01 validation of C{name} until
        L{withdrawChallenge}.
        """
        self._challenges[_normalise(name)] = (certificate, key)

    def withdrawChallenge(self, name: str) -> None:
        self._challenges.pop(_normalise(name), None)

    def answerChallenge(self, connection: SSL.Connection, offered: List[bytes]) -> Optional[bytes]:
        """
        In the ALPN callback: for a validation server's hello naming a
        challenge in progress, switch the connection to the challenge
        certificate and choose C{acme-tls/1}; None for every other client.
        OpenSSL picks the certificate after ALPN (and after SNI, which may
        have switched the context: so every context asks the book).
        """
        if not self._challenges or not isChallengeHello(offered):
            return None
        name = connection.get_servername()
        challenge = self._challenges.get(_normalise(name.decode("ascii", "replace"))) if name else None
        if challenge is None:
            return None
        connection.use_certificate(challenge[0])
        connection.use_privatekey(challenge[1])
        return ACME_TLS_ALPN


#: The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
ACME_TLS_ALPN = b"acme-tls/1"


def isChallengeHello(offered: List[bytes]) -> bool:
    """
    Whether a client's ALPN offer is a validation server's: RFC 8737
    section 3 has it offer C{acme-tls/1} and nothing else, so an ordinary
    client that also lists it still gets the normal certificate.
    """
    return offered == [ACME_TLS_ALPN]


def _pairContext(pair: CertificatePair, minimumVersion: int, alpn: Sequence[bytes],
                 book: Optional[CertificateBook] = None) -> SSL.Context:
    """
    A server context presenting C{pair}, with the secure defaults every
    listening context shares (ciphers are set last, by the caller).
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(minimumVersion)
    context.set_options(_OPTIONS)
    context.use_certificate(pair.chain[0])
    for issuer in pair.chain[1:]:
        context.add_extra_chain_cert(issuer)
    context.use_privatekey(pair.key)
    # Without a session id context, resuming a session whose client was
    # verified fails the handshake.
    context.set_session_id(b"dualproxy")
    if alpn:
        preferred = tuple(alpn)

        def select(connection: SSL.Connection, offered: List[bytes]):
            if book is not None:
                challenge = book.answerChallenge(connection, offered)
                if challenge is not None:
                    return challenge
            for protocol in preferred:
                if protocol in offered:
                    return protocol
            return SSL.NO_OVERLAPPING_PROTOCOLS

        context.set_alpn_select_callback(select)
    return context


def serverContext(pair: CertificatePair, alpn: Sequence[bytes], chooseContext=None) -> SSL.Context:
    """
    A listening context for C{pair} with the default TLS settings (TLS 1.2
    or later, forward-secret AEAD ciphers), for certificates made at run
    time rather than configured.

    @param chooseContext: called with the connection once its client's
        SNI is known, to switch it to another context.
    """
    context = _pairContext(pair, SSL.TLS1_2_VERSION, alpn)
    if chooseContext is not None:
        context.set_tlsext_servername_callback(chooseContext)
    context.set_cipher_list(_CIPHERS)
    return context


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The listening side's TLS: one context per certificate pair, chosen by
    the name the client asks for (SNI), the default pair for clients that
    ask for none or for a name no pair covers.

    @param pairs: the certificates to choose among, earlier ones winning
        when several cover a name.
    @param default: presented when no pair fits; None, with a C{book}: its
        first certificate, or its placeholder until it has one.
    @param minimumVersion: C{"TLSv1.2"} or C{"TLSv1.3"}.
    @param alpn: protocols the server speaks, preferred first; h2 only when
        the caller can serve it.
    @param clientCA: a PEM bundle of CAs whose client certificates are
        accepted; when set, clients must present one (mutual TLS).
    @param clientCertificateOptional: with C{clientCA}, ask for a client
        certificate but let clients without one in (a presented one must
        still verify).
    @param ciphers: an OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are
        all modern already).
    @param book: certificates obtained at run time, presented after
        C{pairs} (and by default when C{pairs} is empty), and the
        TLS-ALPN-01 challenges to answer.
    """

    def __init__(
        self,
        pairs: Sequence[CertificatePair],
        default: Optional[CertificatePair],
        minimumVersion: str = "TLSv1.2",
        alpn: Sequence[bytes] = (b"http/1.1",),
        clientCA: Optional[str] = None,
        clientCertificateOptional: bool = False,
        ciphers: str = _CIPHERS.decode("ascii"),
        book: Optional[CertificateBook] = None,
    ) -> None:
        if minimumVersion not in _VERSIONS:
            raise TLSConfigError(
                f"minimum TLS version {minimumVersion!r} is not one of {', '.join(sorted(_VERSIONS))}"
            )
        self._minimumVersion = _VERSIONS[minimumVersion]
        self._alpn = tuple(alpn)
        self._clientCA = clientCA
        self._clientCertificateOptional = clientCertificateOptional
        self._ciphers = ciphers.encode("ascii")
        try:
            SSL.Context(SSL.TLS_SERVER_METHOD).set_cipher_list(self._ciphers)
        except SSL.Error:
            raise TLSConfigError(f"no usable cipher in {ciphers!r}")
        self._book = book
        self._pairs = list(pairs)
        self._default = default
        self._context = self._build(self._pairs, self._default)

    def _build(self, pairs: Sequence[CertificatePair], default: Optional[CertificatePair]) -> SSL.Context:
        """
        The default context of a new generation, which every connection
        starts from.
        """
        book = self._book
        if book is not None:
            self._seen = book.generation
            obtained = book.pairs()
            pairs = list(pairs) + obtained
            if default is None:
                default = obtained[0] if obtained else book.placeholder
        authorities = _loadCertificates(self._clientCA) if self._clientCA is not None else []
        generation = _Generation([(pair, self._contextFor(pair, authorities)) for pair in pairs])
        return self._contextFor(default, authorities, generation.chooseContext)

    def _contextFor(
        self, pair: CertificatePair, authorities: Sequence[x509.Certificate], chooseContext=None
    ) -> SSL.Context:
        # After SNI switches a connection to another context, OpenSSL reads
        # the certificate and ALPN callback from that context but keeps the
        # connection's options and verify mode: every context gets them all.
        context = _pairContext(pair, self._minimumVersion, self._alpn, self._book)
        if authorities:
            store = context.get_cert_store()
            for authority in authorities:
                store.add_cert(crypto.X509.from_cryptography(authority))
                context.add_client_ca(authority)
            mode = SSL.VERIFY_PEER
            if not self._clientCertificateOptional:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(mode)
        if chooseContext is not None:
            context.set_tlsext_servername_callback(chooseContext)
        # Last: some pyOpenSSL versions mark the context used when checking
        # the cipher list, and warn about any change after that.
        context.set_cipher_list(self._ciphers)
        return context

    def presents(self, name: str) -> bool:
        """
        Whether a configured or obtained certificate (not the placeholder)
        covers C{name}: its handshake has nothing to wait for.
        """
        name = _normalise(name)
        if self._book is not None and self._book.get(name) is not None:
            return True
        return any(pair.covers(name) for pair in self._pairs)

    def pairs(self) -> List[CertificatePair]:
        """
        The configured pairs presented now, earliest winning (the book's
        are not among them), for their expiry in the status and metrics.
        """
        return list(self._pairs)

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        book = self._book
        if book is not None and book.generation != self._seen:
            self._context = self._build(self._pairs, self._default)
        return tlsConnection(self._context)

    def reload(self) -> None:
        """
        Read every pair's files (and the client CA bundle) again and use
        them for new connections; connections already made keep theirs.

        @raise TLSConfigError: something could not be loaded; the contexts
            in use stay.
        """
        pairs = [loadPair(pair.certPath, pair.keyPath) for pair in self._pairs]
        default = None if self._default is None else loadPair(self._default.certPath, self._default.keyPath)
        context = self._build(pairs, default)
        self._pairs, self._default, self._context = pairs, default, context

    def adopt(self, other: ServerTLS) -> None:
        """
        Take every setting of C{other} (a reloaded configuration's) for new
        connections; the listeners keep this object.
        """
        self.__dict__.update(other.__dict__)


def peerSubject(transport) -> Optional[str]:
    """
    The subject of the client certificate a TLS transport verified, like
    C{"CN=alice,O=Example"}, for logs and filters; L{None} for a transport
    that is not TLS or a client that sent no certificate.  A certificate
    is only there if L{ServerTLS} asked for one (C{clientCA}), and OpenSSL
    ends the handshake when it does not verify.
    """
    if not ISystemHandle.providedBy(transport):
        return None
    connection = transport.getHandle()
    if not isinstance(connection, SSL.Connection):
        return None
    certificate = connection.get_peer_certificate(as_cryptography=True)
    if certificate is None:
        return None
    return certificate.subject.rfc4514_string()


def _trustRoot(caBundle: Optional[str]):
    if caBundle is None:
        return platformTrust()
    return trustRootFromCertificates(
        [Certificate(crypto.X509.from_cryptography(c)) for c in _loadCertificates(caBundle)]
    )


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClient:
    """
    Client TLS that accepts any server certificate (still sending SNI), for
    upstreams the operator explicitly chose not to verify.
    """

    def __init__(self, hostname: str, options: CertificateOptions, alpn: Sequence[bytes]) -> None:
        self._serverName = None if isIPAddress(hostname) or isIPv6Address(hostname) else hostname.encode("idna")
        self._options = options
        self._alpn = list(alpn)

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = tlsConnection(self._options.getContext())
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        if self._alpn:
            connection.set_alpn_protos(self._alpn)
        return connection


def clientCreator(
    hostname: str,
    caBundle: Optional[str] = None,
    verify: bool = True,
    clientPair: Optional[CertificatePair] = None,
    alpn: Optional[Iterable[bytes]] = None,
):
    """
    TLS to an upstream known as C{hostname}: SNI sent, and the certificate
    verified against that name and the system's trust store (or
    C{caBundle}) unless C{verify} is false, which the caller should log.

    @param clientPair: a client certificate to present (mutual TLS).
    @param alpn: protocols to offer, preferred first.
    @raise TLSConfigError: C{caBundle} cannot be read.
    @rtype: L{IOpenSSLClientConnectionCreator}
    """
    protocols = list(alpn or ())
    options: Dict[str, object] = {"raiseMinimumTo": TLSVersion.TLSv1_2}
    if clientPair is not None:
        options["privateKey"] = crypto.PKey.from_cryptography_key(clientPair.key)
        options["certificate"] = crypto.X509.from_cryptography(clientPair.chain[0])
        if len(clientPair.chain) > 1:
            options["extraCertChain"] = [crypto.X509.from_cryptography(c) for c in clientPair.chain[1:]]
    if not verify:
        return _UnverifiedClient(hostname, CertificateOptions(**options), protocols)
    return optionsForClientTLS(
        hostname,
        trustRoot=_trustRoot(caBundle),
        acceptableProtocols=protocols or None,
        extraCertificateOptions=options,
    )


def verificationError(failure: Failure) -> Optional[str]:
    """
    A short reason, for a 502 body, when C{failure} is an upstream's
    certificate failing verification; L{None} for any other failure.
    """
    if failure.check(VerificationError):
        return "certificate verify failed: hostname mismatch"
    if failure.check(SSL.Error) and any("certificate verify failed" in reason for reason in _reasons(failure)):
        return "certificate verify failed: untrusted or invalid certificate"
    return None


def upstreamTLSError(failure: Failure) -> Optional[Tuple[str, str]]:
    """
    The RFC 9209 error type and a short reason, for a 502, when an
    upstream connection failed in TLS; L{None} for any other failure.
    """
    reason = verificationError(failure)
    if reason is not None:
        return TLS_CERTIFICATE_ERROR, reason
    if not failure.check(SSL.Error):
        return None
    reasons = _reasons(failure)
    for reason in reasons:
        if " alert " in reason:
            return TLS_ALERT_RECEIVED, "alert received: " + reason
    return TLS_PROTOCOL_ERROR, "failed: " + (reasons[0] if reasons else "protocol error")


def _reasons(failure: Failure) -> List[str]:
    """
    The OpenSSL reason strings of an L{SSL.Error}, e.g. "tlsv1 alert
    unknown ca".
    """
    errors = failure.value.args[0] if failure.value.args else []
    if not isinstance(errors, list):
        return []
    return [error[-1] for error in errors if isinstance(error, tuple) and isinstance(error[-1], str)]
