"""
A TLS server inside a CONNECT tunnel: the object HTTPServerChannel.splice
takes as its upstream, which instead of relaying the client's bytes to an
origin decrypts them with a minted certificate and serves the requests
inside with a fresh HTTP/1.1 or HTTP/2 connection (ALPN).

Backpressure both ways: when the client cannot take more, the inner
connection's producer is paused; when the inner connection pauses reading,
the client's transport is paused.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer


class _Input:
    """
    Where the tunnel writes the client's bytes: into the TLS layer.
    """

    def __init__(self, tunnel: InterceptedTunnel):
        self.tunnel = tunnel

    def write(self, data: bytes) -> None:
        if self.tunnel.tls is not None and not self.tunnel.closed:
            self.tunnel.tls.dataReceived(data)

    def loseConnection(self) -> None:
        self.tunnel.close(Failure(ConnectionDone()))

    abortConnection = loseConnection


class _ClientSide:
    """
    The TLS layer's transport: the client's, with the inner connection's
    producer kept here, since a transport takes one producer and the
    client's already has the tunnel.
    """

    def __init__(self, tunnel: InterceptedTunnel, peer):
        self.tunnel = tunnel
        # What socketTransport() walks down to find the socket.
        self.transport = peer
        self.producer = None

    def __getattr__(self, name: str):
        # Everything else is the client's: writes, closing, addresses, and
        # pausing (the inner connection pausing its reading pauses the client's).
        return getattr(self.transport, name)

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer
        if self.tunnel.paused:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self.producer = None


@implementer(IPushProducer)
class InterceptedTunnel:
    """
    One intercepted tunnel: the TLS layer (server side, C{creator}) over the
    client's transport, serving C{factory}'s protocol inside.

    @param creator: an L{IOpenSSLServerConnectionCreator} presenting minted
        certificates (L{dualproxy.interception.authority.LeafMinter}).
    @param factory: builds the inner HTTP connection (a NegotiatingFactory).
    """

    def __init__(self, clock, creator, factory):
        self.clock = clock
        self.transport = _Input(self)
        self.tls = None
        self.side: Optional[_ClientSide] = None
        self.paused = False
        self.closed = False
        self._wrapping = TLSMemoryBIOFactory(creator, False, factory)

    @property
    def lastActivity(self) -> float:
        # The inner connection keeps its own deadlines: the tunnel is never
        # idle while it is open.
        return self.clock.seconds()

    def becomeTunnel(self, peer) -> None:
        self.side = _ClientSide(self, peer)
        self.tls = self._wrapping.buildProtocol(peer.getPeer())
        self.tls.makeConnection(self.side)

    def close(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        if self.tls is not None:
            self.tls.connectionLost(reason)

    # IPushProducer, driven by the client's transport.

    def pauseProducing(self) -> None:
        self.paused = True
        if self.side is not None and self.side.producer is not None:
            self.side.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        if self.side is not None and self.side.producer is not None:
            self.side.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.close(Failure(ConnectionDone()))
