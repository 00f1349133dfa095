"""
A thin layer over the C{acme} library: an account and certificates kept
in a storage directory, every blocking call of the library run in the
reactor's thread pool, one at a time, and the challenge answers handed
to the reactor thread for the listeners to present.

Storage layout::

    DIR/account/key.pem            the account key (0600)
    DIR/account/registration.json  the account's URL and body
    DIR/certs/NAME                 a link to the current .NAME.* directory:
    DIR/certs/.NAME.*/key.pem      a certificate's key (0600)
    DIR/certs/.NAME.*/cert.pem     its chain, leaf first

Every file is written to a temporary file beside it and renamed over it,
so a reader sees the old file or the new one, never half of one; a
certificate and its key are written into a directory of their own and
the link renamed over the old one, so they change together.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import List, NamedTuple, Optional, Sequence, Union

import josepy as jose
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from dualproxy import __version__
from dualproxy.files import replaceFile

from .tlsalpn import keyAuthorization

log = Logger()

USER_AGENT = f"dualproxy/{__version__} acme-python"
ORDER_TIMEOUT = datetime.timedelta(seconds=90)


class CertificatePaths(NamedTuple):
    certificate: str
    key: str


def writePrivate(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Replace C{path} with C{data} atomically, the new file created with
    C{mode} from the start (never readable by others, even briefly), in
    directories private to the proxy (0700), made as needed.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    replaceFile(path, data, mode)


def newPrivateKeyPEM() -> bytes:
    """
    A P-256 key in PKCS#8 PEM: quick to make on every interpreter, and
    accepted by every ACME CA for both accounts and certificates.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def loadOrCreateKey(path: str) -> bytes:
    """
    The PEM key at C{path}, made and stored (0600) the first time.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pem = newPrivateKeyPEM()
        writePrivate(path, pem)
        return pem


def certificateLink(storage: str, name: str) -> str:
    """
    The link to the directory of the certificate first naming C{name}.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"not a host name: {name!r}")
    return os.path.join(storage, "certs", name)


def storedPaths(storage: str, name: str) -> Optional[CertificatePaths]:
    """
    The files of the certificate stored for C{name}, both in the one
    directory its link names now; None if there is none.
    """
    directory = os.path.realpath(certificateLink(storage, name))
    paths = CertificatePaths(os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
    return paths if os.path.exists(paths.certificate) and os.path.exists(paths.key) else None


def storePair(storage: str, name: str, keyPEM: bytes, chainPEM: bytes) -> CertificatePaths:
    """
    Store a certificate for C{name} and its key together: both go into a
    new directory, then the link is renamed to it, and the old directory
    removed (open files stay readable).
    """
    link = certificateLink(storage, name)
    certificates = os.path.dirname(link)
    os.makedirs(certificates, mode=0o700, exist_ok=True)
    previous = os.path.realpath(link) if os.path.islink(link) else None
    directory = tempfile.mkdtemp(dir=certificates, prefix="." + name + ".")
    paths = CertificatePaths(os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
    writePrivate(paths.key, keyPEM)
    writePrivate(paths.certificate, chainPEM, mode=0o644)
    temporary = os.path.join(certificates, "." + name + ".link")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(os.path.basename(directory), temporary)
    os.replace(temporary, link)
    if previous is not None and os.path.dirname(previous) == certificates:
        for file in ("cert.pem", "key.pem"):
            try:
                os.unlink(os.path.join(previous, file))
            except FileNotFoundError:
                pass
        os.rmdir(previous)
    return paths


class _TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """
    The answer that asks the CA to validate TLS-ALPN-01 (RFC 8737 section
    3), sent as C{{}}; the library no longer has this challenge type.
    """

    typ = "tls-alpn-01"


class AcmeClient:
    """
    One ACME account at one CA, ordering certificates with one challenge
    type.  Calls run one at a time (a L{defer.DeferredLock}), so that two
    orders never register two accounts.

    @param responder: the L{dualproxy.acme.challenges.IChallengeResponder}
        for C{challenge}.
    @param challenge: C{"http-01"} or C{"tls-alpn-01"}.
    @param contact: the account's contact URIs (C{mailto:...}).
    @param verify: C{True}, or the CA bundle to trust for the directory's
        HTTPS (a test CA such as pebble's).
    """

    def __init__(self, reactor: IReactorFromThreads, directoryURL: str, storage: str, responder,
                 challenge: str = "http-01", contact: Sequence[str] = (),
                 verify: Union[bool, str] = True) -> None:
        self.reactor = reactor
        self.directoryURL = directoryURL
        self.storage = storage
        self.responder = responder
        self.challenge = challenge
        self.contact = tuple(contact)
        self.verify = verify
        self._client: Optional[client.ClientV2] = None
        self._lock = defer.DeferredLock()

    @property
    def _accountDirectory(self) -> str:
        return os.path.join(self.storage, "account")

    def register(self) -> defer.Deferred:
        """
        Load the stored account, or register a new one and store it.

        @return: a Deferred firing with the account's URL.
        """
        return self._inThread(self._register)

    def obtain(self, names: List[str]) -> defer.Deferred:
        """
        Order, validate and download a certificate for C{names} (the first
        names its directory), registering first if need be.

        @return: a Deferred firing with its L{CertificatePaths}.
        """
        return self._inThread(self._obtain, list(names))

    def _inThread(self, f, *args) -> defer.Deferred:
        return self._lock.run(threads.deferToThreadPool, self.reactor, self.reactor.getThreadPool(), f, *args)

    def _register(self) -> str:
        if self._client is not None:
            return self._client.net.account.uri
        key = jose.JWKEC(key=serialization.load_pem_private_key(
            loadOrCreateKey(os.path.join(self._accountDirectory, "key.pem")), None))
        net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=self.verify, user_agent=USER_AGENT)
        directory = client.ClientV2.get_directory(self.directoryURL, net)
        ca = client.ClientV2(directory, net)
        registrationPath = os.path.join(self._accountDirectory, "registration.json")
        try:
            with open(registrationPath, "rb") as f:
                net.account = messages.RegistrationResource.json_loads(f.read())
        except FileNotFoundError:
            registration = messages.NewRegistration(contact=self.contact, terms_of_service_agreed=True)
            net.account = ca.new_account(registration)
            writePrivate(registrationPath, net.account.json_dumps().encode("utf-8"))
            log.info("Registered ACME account {uri} at {directory}", uri=net.account.uri,
                     directory=self.directoryURL)
        self._client = ca
        return net.account.uri

    def _obtain(self, names: List[str]) -> CertificatePaths:
        self._register()
        ca = self._client
        certificateLink(self.storage, names[0])
        keyPEM = newPrivateKeyPEM()
        order = ca.new_order(crypto_util.make_csr(keyPEM, names))
        published = []
        try:
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue
                name = authorization.body.identifier.value
                challenge = self._offered(authorization)
                token = challenge.chall.to_partial_json()["token"]
                proof = keyAuthorization(token, ca.net.key)
                # The callbacks touch reactor-thread state (the tokens, the listeners' book).
                threads.blockingCallFromThread(self.reactor, self.responder.publish, name, token, proof)
                published.append((name, token))
                response = (challenge.chall.response(ca.net.key) if self.challenge == "http-01"
                            else _TLSALPN01Response(key_authorization=proof))
                ca.answer_challenge(challenge, response)
            deadline = datetime.datetime.now() + ORDER_TIMEOUT
            order = ca.poll_and_finalize(order, deadline)
        finally:
            for name, token in published:
                threads.blockingCallFromThread(self.reactor, self.responder.withdraw, name, token)
        paths = storePair(self.storage, names[0], keyPEM, order.fullchain_pem.encode("ascii"))
        log.info("Obtained a certificate for {names}", names=names)
        return paths

    def _offered(self, authorization: messages.AuthorizationResource) -> messages.ChallengeBody:
        for challenge in authorization.body.challenges:
            if challenge.chall.to_partial_json().get("type") == self.challenge:
                return challenge
        raise RuntimeError(f"the CA offers no {self.challenge} challenge for "
                           f"{authorization.body.identifier.value}")
