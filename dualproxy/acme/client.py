"""
A thin layer over the C{acme} library: an account and certificates kept
in a storage directory, every blocking call of the library run in the
reactor's thread pool, and the HTTP-01 answers handed to the reactor
thread for the routing tree to serve.

Storage layout::

    DIR/account/key.pem            the account key (0600)
    DIR/account/registration.json  the account's URL and body
    DIR/certs/NAME/key.pem         a certificate's key (0600)
    DIR/certs/NAME/cert.pem        its chain, leaf first

Every file is written to a temporary file beside it and renamed over it,
so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import josepy as jose
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from dualproxy import __version__

log = Logger()

USER_AGENT = f"dualproxy/{__version__} acme-python"
ORDER_TIMEOUT = datetime.timedelta(seconds=90)


class CertificatePaths(NamedTuple):
    certificate: str
    key: str


def writePrivate(path: str, data: bytes, mode: int = 0o600) -> None:
    """
    Replace C{path} with C{data} atomically, the new file created with
    C{mode} from the start (never readable by others, even briefly).
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


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


def certificateDirectory(storage: str, name: str) -> str:
    """
    Where the certificate first naming C{name} is stored; wildcards get a
    file-name-safe spelling.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"not a host name: {name!r}")
    return os.path.join(storage, "certs", name.replace("*", "_"))


class AcmeClient:
    """
    One ACME account at one CA, ordering certificates with HTTP-01.

    @param publish: called on the reactor thread with C{(token,
        keyAuthorization)} before the CA is told to validate.
    @param withdraw: called on the reactor thread with C{token} once the
        order is settled, whatever the outcome.
    @param contact: the account's contact URIs (C{mailto:...}).
    @param verify: C{True}, or the CA bundle to trust for the directory's
        HTTPS (a test CA such as pebble's).
    """

    def __init__(self, reactor: IReactorFromThreads, directoryURL: str, storage: str,
                 publish: Callable[[str, str], None], withdraw: Callable[[str], None],
                 contact: Sequence[str] = (), verify: Union[bool, str] = True) -> None:
        self.reactor = reactor
        self.directoryURL = directoryURL
        self.storage = storage
        self.publish = publish
        self.withdraw = withdraw
        self.contact = tuple(contact)
        self.verify = verify
        self._client: Optional[client.ClientV2] = None

    @property
    def _accountDirectory(self) -> str:
        return os.path.join(self.storage, "account")

    def register(self) -> defer.Deferred:
        """
        Load the stored account, or register a new one and store it.

        @return: a Deferred firing with the account's URL.
        """
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._register)

    def obtain(self, names: List[str]) -> defer.Deferred:
        """
        Order, validate and download a certificate for C{names} (the first
        names its directory), registering first if need be.

        @return: a Deferred firing with its L{CertificatePaths}.
        """
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._obtain, list(names))

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
        directory = certificateDirectory(self.storage, names[0])
        keyPEM = newPrivateKeyPEM()
        order = ca.new_order(crypto_util.make_csr(keyPEM, names))
        published = []
        try:
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue
                challenge = self._http01(authorization)
                response, validation = challenge.response_and_validation(ca.net.key)
                token = challenge.chall.encode("token")
                self._onReactor(self.publish, token, validation)
                published.append(token)
                ca.answer_challenge(challenge, response)
            deadline = datetime.datetime.now() + ORDER_TIMEOUT
            order = ca.poll_and_finalize(order, deadline)
        finally:
            for token in published:
                self._onReactor(self.withdraw, token)
        paths = CertificatePaths(os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
        writePrivate(paths.key, keyPEM)
        writePrivate(paths.certificate, order.fullchain_pem.encode("ascii"), mode=0o644)
        log.info("Obtained a certificate for {names}", names=names)
        return paths

    def _onReactor(self, f: Callable, *args) -> None:
        # The callbacks touch reactor-thread state (the routing tree's map).
        threads.blockingCallFromThread(self.reactor, f, *args)

    @staticmethod
    def _http01(authorization: messages.AuthorizationResource) -> messages.ChallengeBody:
        for challenge in authorization.body.challenges:
            if isinstance(challenge.chall, challenges.HTTP01):
                return challenge
        raise RuntimeError(f"the CA offers no HTTP-01 challenge for {authorization.body.identifier.value}")
