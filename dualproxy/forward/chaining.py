"""
Reaching origins through parent proxies: connections to parents (TLS to
https ones, verified, the handshake done before anything is sent), their
health marked by every attempt, failover to the next parent of a pool,
and plain requests and CONNECT tunnels chained through them.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..http.message import Headers, Refusal, RequestHead
from ..http.proxystatus import CONNECTION_REFUSED, PROXY_LOOP_DETECTED
from ..http.rules import addVia
from ..relay.client import UpstreamProtocol
from ..relay.connect import asRefusal, outOfResources
from ..relay.pool import ConnectionPool
from ..relay.relay import Relay
from .parents import Parent

_log = Logger()


def countsAgainst(failure: Failure) -> bool:
    """
    Whether a failed connection attempt is the parent's doing (refused,
    timed out, unresolvable, TLS failed), so that it is marked down and
    the next one tried: not a refusal of ours, nor this host out of
    descriptors.
    """
    return not failure.check(Refusal) and not outOfResources(failure)


def authorize(headers: Headers, parent: Parent) -> None:
    """
    Give C{headers} this parent's credentials and no others: a request
    failing over carries only the credentials of the parent it goes to.
    """
    headers.remove(b"proxy-authorization")
    if parent.settings.authorization:
        headers.add(b"Proxy-Authorization", parent.settings.authorization)


class ParentConnector:
    """
    Opens connections to parents and keeps their health: a parent is
    marked down when connecting to it fails and up when it succeeds, and
    each change is logged once.

    @param open: opens a TCP connection, C{open(host, port, tls)}, with
        C{tls} an L{IOpenSSLClientConnectionCreator} or None.
    @param timeout: the time a TLS handshake may take.
    @param caBundle: the CAs https parents are verified against (None: the
        system's).
    """

    def __init__(self, clock, open: Callable[[str, int, object], Deferred], timeout: float,
                 caBundle: Optional[str] = None):
        self.clock = clock
        self.open = open
        self.timeout = timeout
        self.caBundle = caBundle
        self._creators: Dict[str, object] = {}

    def connect(self, parent: Parent) -> Deferred:
        """
        A connection to C{parent} that is ready for a request: a
        L{Deferred} firing with the L{UpstreamProtocol}.
        """
        parent.health.trying(self.clock.seconds())
        proxy = parent.settings
        if proxy.tls:
            opening = self.open(proxy.host, proxy.port, self._creator(proxy.host)).addCallback(self._handshaken)
        else:
            opening = self.open(proxy.host, proxy.port, None)
        return opening.addCallbacks(self._reached, self._unreached, callbackArgs=(parent,), errbackArgs=(parent,))

    def _creator(self, host: str):
        creator = self._creators.get(host)
        if creator is None:
            from ..tls import clientCreator

            creator = self._creators[host] = clientCreator(host, self.caBundle)
        return creator

    def _handshaken(self, upstream: UpstreamProtocol) -> Deferred:
        # Until the handshake is done, a failure is a failure to connect:
        # nothing of the request has left yet, so another parent may take it.
        return upstream.whenHandshaken().addTimeout(self.timeout, self.clock, onTimeoutCancel=_handshakeTimedOut)

    def _reached(self, upstream: UpstreamProtocol, parent: Parent) -> UpstreamProtocol:
        if parent.health.succeeded():
            _log.info("parent proxy {parent} is up", parent=parent.health.name)
        return upstream

    def _unreached(self, failure: Failure, parent: Parent) -> Failure:
        if countsAgainst(failure) and parent.health.failed(self.clock.seconds()):
            _log.warn("parent proxy {parent} is down for {seconds:g} s: {reason}", parent=parent.health.name,
                      seconds=parent.health.retry, reason=asRefusal(failure, parent.what).reason)
        return failure

    def firstReachable(self, parents: Sequence[Parent]) -> Deferred:
        """
        A connection to the first of C{parents} that can be connected to,
        as C{(parent, upstream)}; failing with the L{Refusal} for the last
        one tried when none can.
        """
        return self._attempt(tuple(parents))

    def _attempt(self, parents: Tuple[Parent, ...]) -> Deferred:
        parent = parents[0]

        def failed(failure: Failure):
            if len(parents) > 1 and countsAgainst(failure):
                return self._attempt(parents[1:])
            raise asRefusal(failure, parent.what)

        return self.connect(parent).addCallbacks(lambda upstream: (parent, upstream), failed)


def _handshakeTimedOut(result, timeout: float) -> Failure:
    return Failure(error.TimeoutError(f"no TLS handshake within {timeout:g} s"))


class ParentRelay(Relay):
    """
    A plain request relayed through the parents of a pool, in order: when
    one cannot be connected to (nothing was sent), the next takes the
    request, with that parent's credentials only.
    """

    def __init__(self, exchange, head: RequestHead, pool: ConnectionPool, parents: Sequence[Parent],
                 connector: ParentConnector, onResponse, response=None):
        super().__init__(exchange, head, pool, None, None, onResponse, "", response=response)
        self.connector = connector
        self.parents = tuple(parents)
        self._use(self.parents[0])

    def _use(self, parent: Parent) -> None:
        self.key = parent.key
        self.connect = partial(self.connector.connect, parent)
        self.what = parent.what
        authorize(self.head.headers, parent)

    def connectFailed(self, failure: Failure) -> None:
        if len(self.parents) > 1 and countsAgainst(failure) and not self.exchange.finished:
            self.parents = self.parents[1:]
            self._use(self.parents[0])
            self.connectFresh()
            return
        super().connectFailed(failure)


def chainTunnel(connector: ParentConnector, parents: Sequence[Parent], authority: bytes,
                pseudonym: bytes) -> Deferred:
    """
    A tunnel to C{authority} through the first of C{parents} that can be
    connected to, chained with a CONNECT of our own: a L{Deferred} firing
    with the upstream once that parent agreed, or failing with the
    L{Refusal} for the client.  A parent that answers, even with a
    refusal, is not failed over: its answer is the client's.
    """
    return connector.firstReachable(parents).addCallback(_askParent, authority, pseudonym)


def _askParent(reached: Tuple[Parent, UpstreamProtocol], authority: bytes, pseudonym: bytes) -> Deferred:
    parent, upstream = reached
    answered: Deferred = Deferred()
    headers = Headers([(b"Host", authority)])
    authorize(headers, parent)
    addVia(headers, b"HTTP/1.1", pseudonym)
    upstream.send(RequestHead(b"CONNECT", authority, b"HTTP/1.1", headers), _ParentAnswer(answered, upstream))
    return answered


class _ParentAnswer:
    """
    Listens for the parent proxy's answer to our CONNECT.
    """

    def __init__(self, deferred: Deferred, upstream: UpstreamProtocol):
        self.deferred = deferred
        self.upstream = upstream

    def responseInterim(self, head) -> None:
        pass

    def responseHead(self, head) -> None:
        if 200 <= head.status < 300:
            self.deferred.callback(self.upstream)
            return
        self.upstream.transport.loseConnection()
        if head.status == 508:
            # A proxy further on saw this tunnel request pass before: the
            # client learns of the loop, as a plain request learns of it.
            self.deferred.errback(Refusal(508, "proxy loop detected one hop further on",
                                          errorType=PROXY_LOOP_DETECTED))
            return
        # The tunnel was refused one hop further; the reason names the
        # parent's status.
        self.deferred.errback(Refusal(502, f"parent proxy refused the tunnel with {head.status}",
                                      errorType=CONNECTION_REFUSED))

    def responseBody(self, data: bytes) -> None:
        pass

    def responseEnded(self) -> None:
        pass

    def responseFailed(self, refusal: Refusal) -> None:
        if not self.deferred.called:
            self.deferred.errback(refusal)
