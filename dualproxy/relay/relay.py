"""
One request relayed upstream and its response streamed back: the glue
between a client L{Exchange} and an L{UpstreamProtocol}.
"""

from __future__ import annotations

from typing import Callable, Hashable, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from ..http.message import LENGTH, NO_BODY, Refusal, RequestHead, ResponseHead
from ..http.proxystatus import HTTP_PROTOCOL_ERROR
from ..http.rules import stripHopByHop, upgradeOffered
from ..interfaces import IRequestBodySink, IUpstreamListener
from .client import UpstreamProtocol, isIdempotent, reusedConnectionDied
from .connect import asRefusal
from .pool import ConnectionPool


@implementer(IUpstreamListener, IRequestBodySink)
class Relay:
    """
    Streams C{head} and the request body to an upstream connection taken
    from C{pool}, and the response back, with backpressure both ways.

    C{onResponse} rewrites the response head (hop-by-hop fields, Via,
    filters) before the client sees it; None when a subclass defines it
    as a method (an instance holding its own bound method would be a
    reference cycle, left to the garbage collector on every request).
    C{what} names the upstream in error messages.  C{upgrade} is the
    Upgrade the request offered (e.g. WebSocket): a 101 switching to one of
    those turns the connection into a tunnel; any other 101 is a 502.
    The response goes to C{response} (by default the exchange itself): a
    cache puts itself there to see, store or replace what comes back.
    """

    def __init__(
        self,
        exchange,
        head: RequestHead,
        pool: ConnectionPool,
        key: Hashable,
        connect: Callable[[], Deferred],
        onResponse: Optional[Callable[[ResponseHead], None]],
        what: str,
        upgrade: Optional[bytes] = None,
        response=None,
    ):
        self.exchange = exchange
        self.response = exchange if response is None else response
        self.head = head
        self.pool = pool
        self.key = key
        self.connect = connect
        if onResponse is not None:
            self.onResponse = onResponse
        self.what = what
        self.upgrade = upgrade
        self.upstream: UpstreamProtocol = None
        self._retried = False
        self._started = 0.0
        self._bodyStarted = False
        self._producing = False

    def start(self) -> None:
        self._started = self.pool.clock.seconds()
        self.exchange.onAbort = self._clientGone
        upstream = self.pool.takeIdle(self.key)
        if upstream is not None:
            self._connected(upstream)
            return
        # None idle: a new connection.
        self.connectFresh()

    def connectFresh(self) -> None:
        """
        A new upstream connection for the request: none was idle, or the
        reused one died.
        """
        self.pool.acquire(self.key, self.connect, fresh=True).addCallbacks(self._connected, self.connectFailed)

    def _connected(self, upstream: UpstreamProtocol) -> None:
        exchange = self.exchange
        if exchange.finished:
            # The client left while we were connecting.
            self.pool.release(upstream)
            return
        self.upstream = upstream
        upstream.send(self.head, self)
        if self.head.framing != NO_BODY and not self._bodyStarted:
            self._bodyStarted = True
            upstream.transport.registerProducer(exchange.throttle(), True)
            exchange.setBodySink(self)

    def connectFailed(self, failure: Failure) -> None:
        """
        No connection could be made, so nothing was sent: the client is
        answered.  A subclass may try another upstream first.
        """
        self.refuse(asRefusal(failure, self.what))

    def refuse(self, refusal: Refusal) -> None:
        """
        Answer the client with C{refusal}.  Whoever stands for the exchange
        (a cache) takes only status, reason and fields, so the exchange is
        told the error type first.
        """
        self.exchange.errorType = refusal.errorType
        self.response.refuse(refusal.status, refusal.reason, refusal.headers)

    def _clientGone(self) -> None:
        self._dropUpstream()
        if self.response is not self.exchange:
            self.response.clientGone()

    def _dropUpstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.listener = None
            upstream.transport.abortConnection()

    # Request body sink

    def bodyReceived(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.writeBody(data)

    def bodyEnded(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.listener is self:
            upstream.transport.unregisterProducer()
            upstream.endBody()

    # Response listener

    def responseInterim(self, head: ResponseHead) -> None:
        # An interim response's connection fields are for this hop only,
        # as a final one's (RFC 9110 section 7.6.1).
        stripHopByHop(head.headers)
        self.response.writeInterim(head)

    def responseHead(self, head: ResponseHead) -> None:
        self.exchange.context.upstreamLatency = self.pool.clock.seconds() - self._started
        if head.status == 101:
            self._switchProtocols(head)
            return
        try:
            self.onResponse(head)
        except Refusal as refusal:
            self._dropUpstream()
            self.refuse(refusal)
            return
        response = self.response
        response.writeHead(head)
        if head.framing != NO_BODY:
            self._producing = True
            response.registerProducer(self.upstream)
            if head.framing == LENGTH and response.passesBodyThrough():
                self.upstream.spliceTo(self.exchange.channel.transport)

    def _switchProtocols(self, head: ResponseHead) -> None:
        if not self.upgrade:
            # Only a request that asked for an upgrade may get one.
            self._dropUpstream()
            self.refuse(Refusal(502, "upstream switched protocols unasked", errorType=HTTP_PROTOCOL_ERROR))
            return
        if not upgradeOffered(self.upgrade, head):
            self._dropUpstream()
            self.refuse(Refusal(502, "upstream switched to a protocol the request did not offer",
                                errorType=HTTP_PROTOCOL_ERROR))
            return
        upstream, self.upstream = self.upstream, None
        self.onResponse(head)
        self.exchange.writeHead(head)
        self.exchange.tunnel(upstream)

    def bodySpliced(self, splicer) -> None:
        """
        The rest of the body goes to the client by C{splicer}: the client's
        transport no longer throttles the upstream's, and the client
        connection watches the splicer for a client that stops reading.
        """
        self._stopProducing()
        self.exchange.bytesSent += splicer.remaining
        self.exchange.splicer = splicer

    def responseBody(self, data: bytes) -> None:
        self.response.write(data)

    def responseEnded(self) -> None:
        self.upstream = None
        self._stopProducing()
        if self.exchange.onAbort == self._clientGone:
            # Nothing left to stop; the exchange and this relay no longer
            # hold each other, so both are freed as soon as they are done.
            self.exchange.onAbort = None
        self.response.finish()

    def _stopProducing(self) -> None:
        if self._producing:
            self._producing = False
            self.response.unregisterProducer()

    def responseFailed(self, refusal: Refusal) -> None:
        upstream, self.upstream = self.upstream, None
        exchange = self.exchange
        if exchange.finished:
            return
        if (
            not self._retried
            and not self._bodyStarted
            and reusedConnectionDied(upstream)
            and isIdempotent(self.head.method)
        ):
            # The upstream closed an idle connection as we reused it.
            self._retried = True
            self.connectFresh()
            return
        self._stopProducing()
        self.refuse(refusal)
