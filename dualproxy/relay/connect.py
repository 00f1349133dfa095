"""
Opening upstream connections: name resolution, TCP connect, and turning
their failures into the status a client should see.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Callable, List, Optional, Sequence

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from ..http.message import Refusal
from ..listeners import EXHAUSTED
from ..tls import upstreamTLSError
from ..http.proxystatus import (
    CONNECTION_REFUSED,
    CONNECTION_TIMEOUT,
    DESTINATION_IP_UNROUTABLE,
    DNS_ERROR,
    DNS_TIMEOUT,
    PROXY_INTERNAL_ERROR,
)
from .client import UpstreamProtocol


def isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self, host: str):
        self.host = host
        self.addresses: List[str] = []
        self.deferred: Deferred = Deferred()

    def resolutionBegan(self, resolution) -> None:
        pass

    def addressResolved(self, address) -> None:
        if address.host not in self.addresses:
            self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        if self.addresses:
            self.deferred.callback(self.addresses)
        else:
            self.deferred.errback(error.DNSLookupError(self.host))


def resolve(resolver, host: str, port: int) -> Deferred:
    """
    Every address C{host} resolves to with an
    L{twisted.internet.interfaces.IHostnameResolver}, as IP strings (an IP
    literal resolves to itself without a lookup).
    """
    if isAddress(host):
        done: Deferred = Deferred()
        done.callback([host])
        return done
    receiver = _Addresses(host)
    resolver.resolveHostName(receiver, host, port)
    return receiver.deferred


class _OneConnection(Factory):
    # Quiet: a busy proxy opens upstream connections all the time.
    noisy = False

    def __init__(self, protocol: UpstreamProtocol):
        self._protocol = protocol

    def buildProtocol(self, addr) -> UpstreamProtocol:
        return self._protocol


def connectTCP(reactor, address: str, port: int, timeout: float, readTimeout: float, tls=None,
               preamble: bytes = b"") -> Deferred:
    """
    A new L{UpstreamProtocol} connected to an IP address; over TLS when
    C{tls} is given (an L{IOpenSSLClientConnectionCreator} from
    L{dualproxy.tls.clientCreator}); C{preamble} (a PROXY header) is sent
    first, before any TLS.
    """
    endpointType = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
    endpoint = endpointType(reactor, address, port, timeout=timeout)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    return endpoint.connect(_OneConnection(UpstreamProtocol(reactor, readTimeout, preamble)))


def connectHost(reactor, resolver, host: str, port: int, timeouts, tls=None, addresses: Sequence[str] = (),
                check: Optional[Callable[[str], Optional[Refusal]]] = None, preamble: bytes = b"") -> Deferred:
    """
    The one way an upstream connection is opened: resolve C{host} (unless
    C{addresses} already says where it is), then connect to the first
    address C{check} lets through.

    The address checked is the very address connected to, so a name cannot
    resolve to an allowed address for the check and another for the
    connect.  A lookup that never answers counts against the connect
    timeout.

    @param timeouts: the L{dualproxy.settings.model.Timeouts}.
    @param check: the refusal for an address that may not be used, or None.
    @param preamble: bytes sent first on the connection, see L{connectTCP}.
    @return: a L{Deferred} firing with the connected L{UpstreamProtocol},
        or failing with the first refusal when no address may be used.
    """

    def connect(addresses: Sequence[str]) -> Deferred:
        refusal = None
        for address in addresses:
            reason = check(address) if check is not None else None
            if reason is None:
                return connectTCP(reactor, address, port, timeouts.connect, timeouts.upstream_read, tls,
                                  preamble)
            refusal = refusal or reason
        raise refusal

    if addresses:
        return connect(addresses)
    return resolve(resolver, host, port).addTimeout(timeouts.connect, reactor).addCallback(connect)


def outOfResources(failure: Failure) -> bool:
    """
    Whether connecting failed for want of a descriptor or buffer on this
    host: no fault of the upstream, and over as soon as some are freed.
    """
    return getattr(failure.value, "osError", None) in EXHAUSTED


def asRefusal(failure: Failure, what: str) -> Refusal:
    """
    The answer for a failed upstream connection (RFC 9110 sections 15.6.3
    and 15.6.5): C{what} names the upstream, e.g. "origin example.com:80".

    Only a name lookup is bounded by a L{Deferred} timeout, so that
    timeout is the DNS's.  Any other failure to connect is on this host's
    side (no local address, a local firewall), hence an internal error.
    """
    if failure.check(Refusal):
        return failure.value
    tls = upstreamTLSError(failure)
    if tls is not None:
        errorType, why = tls
        return Refusal(502, f"{what}: TLS {why}", errorType=errorType)
    if failure.check(error.DNSLookupError):
        return Refusal(502, f"DNS lookup failed for {what}", errorType=DNS_ERROR)
    if failure.check(defer.TimeoutError):
        return Refusal(504, f"DNS lookup for {what} timed out", errorType=DNS_TIMEOUT)
    if failure.check(error.ConnectionRefusedError):
        return Refusal(502, f"{what} refused the connection", errorType=CONNECTION_REFUSED)
    if failure.check(error.TimeoutError, error.TCPTimedOutError):
        return Refusal(504, f"connecting to {what} timed out", errorType=CONNECTION_TIMEOUT)
    if failure.check(error.NoRouteError) or getattr(failure.value, "osError", None) == errno.EHOSTUNREACH:
        return Refusal(502, f"no route to {what}", errorType=DESTINATION_IP_UNROUTABLE)
    if outOfResources(failure):
        return Refusal(503, f"cannot connect to {what} now: {EXHAUSTED[failure.value.osError]}",
                       [(b"Retry-After", b"1")], errorType=PROXY_INTERNAL_ERROR)
    return Refusal(502, f"cannot connect to {what}: {failure.getErrorMessage()}", errorType=PROXY_INTERNAL_ERROR)
