"""
What the SOCKS proxy decides, one configuration's worth (a reload swaps
it): who may use it, who logs in, where a tunnel may go and how a failure
to open one is replied to.  The policies are the forward proxy's: the same
client ACL, the same SSRF defence, the same password file and limiters.
"""

from __future__ import annotations

import errno
import hashlib
from typing import Callable, Dict, FrozenSet, Optional, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..http.message import Headers, Refusal
from ..http.proxystatus import (
    CONNECTION_REFUSED,
    CONNECTION_TIMEOUT,
    DESTINATION_IP_PROHIBITED,
    DESTINATION_IP_UNROUTABLE,
    DNS_ERROR,
    DNS_TIMEOUT,
)
from ..policy.acl import ClientACL, DestinationPolicy
from ..policy.auth import PasswordFile
from ..policy.ratelimit import RateLimit
from ..relay.connect import asRefusal, connectHost
from . import protocol
from .settings import SocksSettings

# Verified logins remembered (hashing a password costs tens of
# milliseconds on purpose, and a browser opens many sessions).
_VERIFIED = 1024

# The reply for each way opening a tunnel fails, by the RFC 9209 type the
# HTTP proxy answers it with (L{dualproxy.relay.connect.asRefusal}); any
# other is a general failure.  Network unreachable has no type of its own.
_REPLIES = {
    DESTINATION_IP_PROHIBITED: protocol.NOT_ALLOWED,
    DNS_ERROR: protocol.HOST_UNREACHABLE,
    DESTINATION_IP_UNROUTABLE: protocol.HOST_UNREACHABLE,
    CONNECTION_REFUSED: protocol.CONNECTION_REFUSED,
    DNS_TIMEOUT: protocol.TTL_EXPIRED,
    CONNECTION_TIMEOUT: protocol.TTL_EXPIRED,
}


class Session:
    """
    What one SOCKS connection did, for its access-log line and the metrics.

    @ivar result: how it ended (a L{protocol.REPLY_NAMES} value, or a
        handshake outcome such as C{auth_failed}); None while undecided.
    @ivar bytesReceived: tunnelled bytes from the client.
    @ivar bytesSent: tunnelled bytes to the client.
    """

    def __init__(self, clientHost: Optional[str], started: float):
        self.clientHost = clientHost
        self.started = started
        self.user: Optional[str] = None
        self.destination: Optional[str] = None
        self.result: Optional[str] = None
        self.reason: Optional[str] = None
        self.bytesReceived = 0
        self.bytesSent = 0


class SocksHandler:
    """
    The decisions of one configuration, asked by each connection as its
    handshake goes.

    @param sessionLog: called with each L{Session} once it is over.
    """

    def __init__(self, reactor, settings: SocksSettings, timeouts, passwords: Optional[PasswordFile],
                 rateLimit: Optional[RateLimit], sessionLog: Callable[[Session], None]):
        self.reactor = reactor
        self.settings = settings
        self.timeouts = timeouts
        self.passwords = passwords
        self.rateLimit = rateLimit
        self.sessionLog = sessionLog
        self.resolver = reactor.nameResolver
        self.clients = ClientACL(settings.allow_clients)
        self.destinations = DestinationPolicy(settings.deny_destinations, settings.allow_destinations, ())
        self._verified: Dict[bytes, str] = {}

    def methods(self, clientHost: Optional[str]) -> FrozenSet[int]:
        """
        The authentication methods the client at C{clientHost} may use:
        none when it may not use the proxy at all.
        """
        if not self.clients.allows(clientHost):
            return frozenset()
        return frozenset((protocol.USERNAME_PASSWORD if self.passwords is not None else protocol.NO_AUTHENTICATION,))

    def authenticate(self, user: str, password: str) -> bool:
        """
        Whether C{password} is C{user}'s; successes are remembered by a
        digest, so no password stays in memory.
        """
        key = hashlib.sha256(user.encode("utf-8") + b"\0" + password.encode("utf-8")).digest()
        if self._verified.get(key) == user:
            return True
        if self.passwords is None or not self.passwords.check(user, password):
            return False
        if len(self._verified) >= _VERIFIED:
            del self._verified[next(iter(self._verified))]
        self._verified[key] = user
        return True

    def refusal(self, session: Session, host: str, port: int) -> Union[None, str, Deferred]:
        """
        Why a tunnel to C{host}:C{port} is refused before anything is
        resolved (port, destination, rate limit), or None; a Deferred
        firing with either when the rate limit asks a shared store.
        """
        if not self.settings.allowsPort(port):
            return f"port {port} is not in socks.ports"
        reason = self.destinations.checkHost(host)
        if reason is not None:
            return reason
        if self.rateLimit is not None:
            try:
                checked = self.rateLimit.check(session.clientHost, Headers(), session.user, self.reactor.seconds())
            except Refusal as refused:
                return refused.reason
            if checked is not None:
                return checked.addErrback(_refusedReason)
        return None

    def connect(self, host: str, port: int) -> Deferred:
        """
        Open the tunnel's upstream connection, checking the very address
        connected to (a name cannot resolve its way to a private address).
        """
        return connectHost(self.reactor, self.resolver, host, port, self.timeouts, check=self._addressRefusal)

    def _addressRefusal(self, address: str) -> Optional[Refusal]:
        reason = self.destinations.checkAddress(address)
        return None if reason is None else Refusal(403, reason, errorType=DESTINATION_IP_PROHIBITED)


def _refusedReason(failure: Failure) -> str:
    failure.trap(Refusal)
    return failure.value.reason


def replyFor(failure: Failure, destination: str) -> Tuple[int, str]:
    """
    The reply code for a tunnel that could not be opened, and why in words
    (for the log only: a reply carries no text).
    """
    if getattr(failure.value, "osError", None) == errno.ENETUNREACH:
        return protocol.NETWORK_UNREACHABLE, f"network unreachable for {destination}"
    refusal = asRefusal(failure, destination)
    return _REPLIES.get(refusal.errorType, protocol.GENERAL_FAILURE), refusal.reason
