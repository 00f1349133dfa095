"""
Certificates on demand (C{[tls.acme] on_demand}): a TLS listener reads
each ClientHello before OpenSSL does, and a handshake asking for a name
that no certificate covers yet waits, its reads paused, while the ACME
service orders one, as Caddy's on-demand TLS does.  It goes on once the
order is settled, or after L{ON_DEMAND_WAIT} seconds, with what the
listener has then: the new certificate, or the placeholder.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from ..clienthello import HelloError, readClientHello
from ..listeners import LayerFactory
from ..tls import isChallengeHello
from ..twistedcompat import handOver

_log = Logger()

#: How long a handshake waits for its name's certificate, in seconds.
ON_DEMAND_WAIT = 30.0


class HandshakeGateFactory(LayerFactory):
    """
    Wraps a TLS listener's factory (L{TLSMemoryBIOFactory}).

    @param presents: whether the listener has a certificate for a name.
    @param onDemand: for a name it has none for, a Deferred to wait for,
        or None (L{dualproxy.acme.service.AcmeService.onDemand}).
    @param helloTimeout: how long a client has to send its hello.
    """

    def __init__(self, wrappedFactory: Factory, clock, presents: Callable[[str], bool],
                 onDemand: Callable[[str], Optional[Deferred]], helloTimeout: float,
                 wait: float = ON_DEMAND_WAIT) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.presents = presents
        self.onDemand = onDemand
        self.helloTimeout = helloTimeout
        self.wait = wait

    def buildProtocol(self, addr) -> Protocol:
        return HandshakeGate(self, addr)


class HandshakeGate(Protocol):
    """
    Holds a connection's first bytes until its ClientHello is read (and
    its certificate is there, or not coming), then hands the connection
    and the bytes to the TLS protocol for the rest of its life.  What does
    not read as a ClientHello goes to OpenSSL at once, for its own error.
    """

    def __init__(self, factory: HandshakeGateFactory, addr) -> None:
        self.factory = factory
        self.addr = addr
        self._buffer = b""
        self._timer = None
        self._waiting = False
        self._done = False

    def connectionMade(self) -> None:
        self._timer = self.factory.clock.callLater(self.factory.helloTimeout, self._noHello)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        if self._waiting:
            return
        try:
            hello = readClientHello(self._buffer)
        except HelloError:
            self._handOver()
            return
        if hello is None:
            return
        name = hello.serverName
        waiting = None
        if name is not None and not isChallengeHello(list(hello.alpn)) and not self.factory.presents(name):
            # A validation server's hello (acme-tls/1) never waits: the order waits for it.
            waiting = self.factory.onDemand(name)
        if waiting is None:
            self._handOver()
            return
        self._stopTimer()
        self._waiting = True
        self.transport.pauseProducing()
        self._timer = self.factory.clock.callLater(self.factory.wait, self._waitedTooLong, name)
        waiting.addCallback(lambda _: self._settled())

    def connectionLost(self, reason=None) -> None:
        self._done = True
        self._stopTimer()

    def _settled(self) -> None:
        if self._done:
            return
        self.transport.resumeProducing()
        self._handOver()

    def _waitedTooLong(self, name: str) -> None:
        self._timer = None
        _log.info("no certificate for {name} within {wait:g} s: the handshake goes on with the placeholder",
                  name=name, wait=self.factory.wait)
        self._settled()

    def _noHello(self) -> None:
        self._timer = None
        self._done = True
        self.transport.loseConnection()

    def _handOver(self) -> None:
        self._stopTimer()
        self._done = True
        transport = self.transport
        protocol = self.factory.wrappedFactory.buildProtocol(self.addr)
        if protocol is None:
            # Over a connection limit (logged where it is counted).
            transport.loseConnection()
            return
        data, self._buffer = self._buffer, b""
        handOver(transport, protocol)
        protocol.dataReceived(data)

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
