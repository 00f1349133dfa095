"""
SOCKS5 to clients: a thin protocol around the handshake's state machine
(L{dualproxy.socks.protocol}), asking the handler (L{dualproxy.socks.handler})
at each step, then a byte tunnel with the HTTP CONNECT tunnel's machinery
(L{dualproxy.relay.client.UpstreamProtocol.becomeTunnel}): backpressure both
ways, nothing buffered beyond the transports.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import IClientConnection, IClientFactory
from ..server.clients import LimitedFactory
from ..twistedcompat import noDelay, tcpSocket
from . import protocol
from .handler import Session, SocksHandler, replyFor

_log = Logger()


@implementer(IClientConnection, IPushProducer)
class SocksConnection(Protocol):
    """
    One SOCKS client: its handshake within C{headTimeout}, then its tunnel
    until either side closes or neither moves for C{idleTimeout}.

    Once tunnelling it stands in for its transport as the upstream's peer
    (C{write}, C{loseConnection} and the push-producer methods), so that the
    bytes sent to the client are counted.
    """

    def __init__(self, factory: SocksFactory):
        self.factory = factory
        self.clock = factory.clock
        self.machine: Optional[protocol.SocksServer] = None
        self.session: Optional[Session] = None
        self.upstream = None
        self._connecting = None
        self._timer = None
        self._lastActivity = 0.0
        self._gone = False

    def connectionMade(self) -> None:
        host = getattr(self.transport.getPeer(), "host", None)
        self.factory.opened(self, host)
        self.session = Session(host, self.clock.seconds())
        self.machine = protocol.SocksServer(self.factory.handler.methods(host))
        noDelay(tcpSocket(self.transport))
        self._timer = self.clock.callLater(self.factory.headTimeout, self._handshakeTooSlow)

    def dataReceived(self, data: bytes) -> None:
        self._lastActivity = self.clock.seconds()
        if self.upstream is not None:
            self.session.bytesReceived += len(data)
            self.upstream.transport.write(data)
            return
        self._run(self.machine.feed(data))

    def _run(self, events: List[protocol.Event]) -> None:
        for event in events:
            if isinstance(event, protocol.Send):
                self.transport.write(event.data)
            elif isinstance(event, protocol.Close):
                self._decided(event.result, event.reason)
                self.transport.loseConnection()
            elif isinstance(event, protocol.Authenticate):
                self._authenticate(event)
            else:
                self._connect(event)

    def _decided(self, result: str, reason: str) -> None:
        if self.session.result is None:
            self.session.result, self.session.reason = result, reason

    def _authenticate(self, event: protocol.Authenticate) -> None:
        ok = self.factory.handler.authenticate(event.user, event.password)
        if ok:
            self.session.user = event.user
        else:
            # Neither the password nor the name asked (often a password
            # typed in the wrong field) is logged.
            _log.warn("SOCKS login refused for {client}", client=self.session.clientHost or "-")
        self._run(self.machine.authenticated(ok))

    def _connect(self, event: protocol.Connect) -> None:
        self._cancelTimer()
        # Nothing more is read until the tunnel opens: what came with the
        # request is all that waits for it.
        self.transport.pauseProducing()
        host = f"[{event.host}]" if ":" in event.host else event.host
        destination = self.session.destination = f"{host}:{event.port}"
        reason = self.factory.handler.refusal(self.session, event.host, event.port)
        if isinstance(reason, Deferred):
            reason.addCallback(self._checked, event, destination).addErrback(self._notOpened, destination)
            return
        self._checked(reason, event, destination)

    def _checked(self, reason: Optional[str], event: protocol.Connect, destination: str) -> None:
        """
        Refuse the tunnel, or open it.
        """
        if self._gone:
            return
        handler = self.factory.handler
        if reason is not None:
            _log.info("SOCKS tunnel for {client} to {destination} refused: {reason}",
                      client=self.session.clientHost or "-", destination=destination, reason=reason)
            self._run(self.machine.failed(protocol.NOT_ALLOWED, reason))
            return
        connecting = self._connecting = handler.connect(event.host, event.port)
        connecting.addCallbacks(self._opened, self._notOpened, errbackArgs=(destination,))

    def _opened(self, upstream) -> None:
        self._connecting = None
        if self._gone:
            upstream.transport.loseConnection()
            return
        bound = upstream.transport.getHost()
        self._run(self.machine.connected(bound.host, bound.port))
        self._decided(protocol.REPLY_NAMES[protocol.SUCCEEDED], "tunnel opened")
        self.upstream = upstream
        upstream.becomeTunnel(self)
        self.transport.registerProducer(upstream, True)
        leftover = self.machine.leftover
        if leftover:
            self.session.bytesReceived += len(leftover)
            upstream.transport.write(leftover)
        self.transport.resumeProducing()
        self._lastActivity = self.clock.seconds()
        self._timer = self.clock.callLater(self.factory.idleTimeout, self._checkIdle)

    def _notOpened(self, failure, destination: str) -> None:
        self._connecting = None
        if self._gone:
            return
        code, reason = replyFor(failure, destination)
        _log.info("SOCKS tunnel for {client} to {destination} failed: {reason}",
                  client=self.session.clientHost or "-", destination=destination, reason=reason)
        self._run(self.machine.failed(code, reason))

    # Timeouts

    def _handshakeTooSlow(self) -> None:
        self._timer = None
        self._decided("handshake_timeout", f"no complete request within {self.factory.headTimeout:g} s")
        self.transport.abortConnection()

    def _checkIdle(self) -> None:
        """
        A tunnel is idle only when neither direction moves.
        """
        self._timer = None
        now = self.clock.seconds()
        deadline = max(self._lastActivity, self.upstream.lastActivity) + self.factory.idleTimeout
        if now >= deadline:
            self.session.reason = f"idle for {self.factory.idleTimeout:g} s"
            self.transport.loseConnection()
            return
        self._timer = self.clock.callLater(deadline - now, self._checkIdle)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # The upstream's peer, once tunnelling

    def write(self, data: bytes) -> None:
        self.session.bytesSent += len(data)
        self.transport.write(data)

    def loseConnection(self) -> None:
        self.transport.loseConnection()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    # Draining and closing

    def busy(self) -> bool:
        """
        A tunnel is busy until it closes.
        """
        return self.upstream is not None

    def drain(self) -> None:
        """
        A handshake in progress is closed; a tunnel runs on until it ends or
        the drain times out.
        """
        if self.upstream is None:
            self._decided("shutdown", "the proxy is stopping")
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self._gone = True
        self.factory.closed(self, self.session.clientHost)
        self._cancelTimer()
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        if self.upstream is not None:
            self.upstream.transport.loseConnection()
        self._decided("client_closed", "the client closed the connection during the handshake")
        self.factory.handler.sessionLog(self.session)


@implementer(IClientFactory)
class SocksFactory(LimitedFactory):
    """
    Builds SOCKS connections for a handler, within the connection limits.
    """

    def __init__(self, handler: SocksHandler, clock, idleTimeout: float, headTimeout: float):
        super().__init__()
        self.handler = handler
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.headTimeout = headTimeout

    # What a reloaded configuration's factory hands over to a kept one.
    _SETTINGS = ("handler", "idleTimeout", "headTimeout", "maxConnections", "maxConnectionsPerClient")

    def adopt(self, other: SocksFactory) -> None:
        """
        Take C{other}'s settings; open connections ask the factory at each
        step, so handshakes in progress go on with the new ones.
        """
        for name in self._SETTINGS:
            setattr(self, name, getattr(other, name))

    def buildConnection(self) -> SocksConnection:
        return SocksConnection(self)
