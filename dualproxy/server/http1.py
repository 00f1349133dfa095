"""
HTTP/1.x to clients: a server connection that frames messages, hands each
request to a mode's handler as an L{Exchange} and streams the answer back.

The protocol only frames messages, moves bytes and watches its client's
deadlines; what to do with a request is the handler's business.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from ..core.exchange import (
    PIPELINE,
    UPSTREAM,
    WAITING,
    Exchange,
    ReadingControl,
    errorResponse,
    exceedsLimit,
    handle,
    tooLarge,
)
from ..http.message import LENGTH, NO_BODY, Refusal, RequestHead, ResponseHead
from ..http.parser import DEFAULT_LIMITS, Limits, MessageReader
from ..http.proxystatus import HTTP_REQUEST_ERROR, NAME, proxyStatus
from ..interfaces import IClientChannel, IClientConnection, IClientFactory
from ..twistedcompat import canWriteThrough, noDelay, pendingOutput, tcpSocket, writeThrough
from .clients import LimitedFactory

_log = Logger()

# How much of an unwanted request body is read and dropped so the response
# reaches the client before the connection is closed.
DRAIN_LIMIT = 1 << 20


@implementer(IClientChannel, IClientConnection)
class HTTPServerChannel(ReadingControl, Protocol):
    """
    One client connection, and the one timer that watches every deadline
    its client can miss.

    @ivar maxBody: the largest request body accepted (413 beyond), 0 for
        any.
    @ivar headTimeout: seconds a request head may take to arrive once it
        has begun (a slowloris client trickling bytes gets 408).
    @ivar bodyTimeout: seconds of silence allowed while a request body is
        being read (408, or a cut connection once a response has begun).
    @ivar writeTimeout: seconds the client may leave a response unread:
        past them the connection is cut, so a client that stops reading
        pins neither memory nor an upstream connection.
    """

    maxBody = 0
    headTimeout = 20.0
    bodyTimeout = 60.0
    writeTimeout = 60.0

    def __init__(self, handler, clock, idleTimeout: float, limits: Limits = DEFAULT_LIMITS, hsts=None):
        self.handler = handler
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.hsts = hsts
        self.reader = MessageReader(self, True, limits)
        self.current: Optional[Exchange] = None
        self.closing = False
        self.clientHost: Optional[str] = None
        self.secure = False
        self._pauses: set = set()
        self._tunnel = None
        self._drained = 0
        self._lastActivity = 0.0
        self._headStarted: Optional[float] = None
        self._idleCall = None
        self._writeThrough = False
        self._outputSeen: Optional[tuple] = None
        self._stalledSince = 0.0
        self.factory: Optional[HTTPServerFactory] = None

    def connectionMade(self) -> None:
        self.clientHost = getattr(self.transport.getPeer(), "host", None)
        if self.factory is not None:
            self.factory.opened(self, self.clientHost)
        self.secure = ISSLTransport.providedBy(self.transport)
        self._writeThrough = canWriteThrough(self.transport)
        noDelay(tcpSocket(self.transport))
        self._lastActivity = self.clock.seconds()
        self._idleCall = self.clock.callLater(self.idleTimeout, self._checkIdle)
        self.handler.connectionMade(self)

    def _checkIdle(self) -> None:
        self._idleCall = None
        now = self.clock.seconds()
        wakes = []
        mark = self._outputMark()
        if mark is not None:
            if mark != self._outputSeen:
                self._outputSeen, self._stalledSince = mark, now
            elif now - self._stalledSince >= self.writeTimeout:
                _log.info("closing the connection of {client}: it read nothing for {seconds} s",
                          client=self.clientHost or "-", seconds=self.writeTimeout)
                self.transport.abortConnection()
                return
            wakes.append(min(self._stalledSince + self.writeTimeout, now + self.writeTimeout / 4))
        else:
            self._outputSeen = None
        current = self.current
        if self._tunnel is not None:
            # A tunnel is idle only when neither direction moves.
            deadline, expired = max(self._lastActivity, self._tunnel.lastActivity) + self.idleTimeout, self._close
        elif self._headStarted is not None:
            deadline, expired = self._headStarted + self.headTimeout, self._headTooSlow
        elif current is not None and not current.requestEnded and not self._pauses:
            deadline, expired = self._lastActivity + self.bodyTimeout, self._bodyTooSlow
        elif current is not None and not current.finished:
            # Waiting for the upstream, whose own timeouts bound the wait;
            # looking in now and then for a response the client leaves unread.
            deadline, expired = now + min(self.idleTimeout, self.writeTimeout / 4), None
        else:
            deadline, expired = self._lastActivity + self.idleTimeout, self._close
        if expired is not None and now >= deadline:
            expired()
            return
        wakes.append(deadline)
        self._idleCall = self.clock.callLater(max(0, min(wakes) - now), self._checkIdle)

    def busy(self) -> bool:
        """
        Whether the connection is answering a request, tunnelling, or still
        has an answer to deliver: what a drain waits for.
        """
        current = self.current
        return (current is not None and not current.finished) or self._tunnel is not None or (
            self._outputMark() is not None)

    def drain(self) -> None:
        current = self.current
        if (current is None or current.finished) and self._tunnel is None:
            self.transport.loseConnection()
        else:
            self.closing = True

    def _outputMark(self) -> Optional[tuple]:
        """
        What waits to be sent to the client, in the transport or in the
        pipe of a body being spliced to it, as a mark that changes whenever
        the client takes some.
        """
        current = self.current
        splicer = current.splicer if current is not None else None
        if splicer is not None and splicer.inPipe:
            return splicer.remaining, splicer.inPipe
        return pendingOutput(self.transport)

    def _close(self) -> None:
        """
        Close an idle connection; what its client left unread is dropped.
        """
        if self._outputMark() is None:
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()

    def _headTooSlow(self) -> None:
        _log.info("408 for {client}: the request head took over {seconds} s", client=self.clientHost or "-",
                  seconds=self.headTimeout)
        head, body = errorResponse(408, "the request head took too long to arrive",
                                   [(b"Connection", b"close"),
                                    (b"Proxy-Status", proxyStatus(NAME, HTTP_REQUEST_ERROR))])
        self.transport.write(b"HTTP/1.1 408 %s\r\n%s\r\n" % (head.reason, head.headers.serialize()) + body)
        self.transport.loseConnection()

    def _bodyTooSlow(self) -> None:
        if self.current.finished:
            # Only an unwanted rest of a body was being read.
            self._close()
            return
        self._cutRequest(408, f"the request body stopped arriving for {self.bodyTimeout:g} s")

    def _cutRequest(self, status: int, reason: str) -> None:
        self.current.cut(status, reason)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self._lastActivity = self.clock.seconds()
        if self._headStarted is None and (self.current is None or self.current.finished) and self._tunnel is None:
            self._headStarted = self._lastActivity
            if self._idleCall is not None and self._idleCall.active():
                self._idleCall.reset(min(self.headTimeout, self.idleTimeout, self.bodyTimeout,
                                         self.writeTimeout / 4))
        if self._tunnel is not None:
            self._tunnel.transport.write(data)
            return
        if self.closing and (self.current is None or self.current.finished):
            # Answered with the connection closing: whatever follows is not
            # read (RFC 9112 section 9.6), though TLS may still deliver it.
            return
        try:
            self.reader.feed(data)
        except Refusal as refusal:
            self._protocolError(refusal)
            return
        if self.reader.paused and self.reader.buffered:
            self.pauseReading(PIPELINE)

    def _protocolError(self, refusal: Refusal) -> None:
        self.closing = True
        exchange = self.current
        if exchange is None or exchange.finished:
            exchange = self.current = Exchange(self, RequestHead(b"-", b"-", b"HTTP/1.1"))
            exchange.requestEnded = True
        exchange.refuse(refusal.status, refusal.reason, refusal.headers, refusal.errorType)
        if exchange.onAbort is not None:
            # A body gone bad mid-relay: its upstream request cannot end.
            exchange.onAbort()

    def clientSubject(self) -> Optional[str]:
        """
        The subject of the certificate the client presented, verified by
        TLS (mutual TLS), or None.
        """
        from ..tls import peerSubject

        return peerSubject(self.transport) if self.secure else None

    # Writing responses: HTTP/1.x framing.

    def writeInterim(self, exchange: Exchange, head: ResponseHead) -> None:
        if exchange.request.version == b"HTTP/1.1":
            self.transport.write(b"HTTP/1.1 %d %s\r\n%s\r\n" % (head.status, head.reason, head.headers.serialize()))

    def writeHead(self, exchange: Exchange, head: ResponseHead) -> None:
        # Queued: the body's first bytes, most often written next in the
        # same turn of the reactor, go out with it in one send.
        self.transport.write(self.frameHead(exchange, head))

    def respond(self, exchange: Exchange, head: ResponseHead, body: bytes) -> None:
        """
        A whole response in one write, sent at once if nothing is queued
        before it (see L{writeThrough}).
        """
        data = self.frameHead(exchange, head)
        if exchange.sendsBody:
            data += body
        if self._writeThrough:
            writeThrough(self.transport, data)
        else:
            self.transport.write(data)

    def frameHead(self, exchange: Exchange, head: ResponseHead) -> bytes:
        """
        Choose the framing the client can read: the upstream's length, else
        chunked for HTTP/1.1, else the end of the connection.
        """
        headers = head.headers
        request = exchange.request
        if request.framing != NO_BODY and not exchange.requestEnded and (
            b"100-continue" in request.headers.tokens(b"expect")
        ):
            # The client may never send the body it offered; the connection
            # cannot be reused without reading it.
            exchange.closeAfter = True
        if exchange.sendsBody and head.framing != LENGTH:
            if request.version == b"HTTP/1.1":
                headers.add(b"Transfer-Encoding", b"chunked")
                exchange.chunkBody()
            else:
                exchange.closeAfter = True
        if exchange.closeAfter or self.closing:
            exchange.closeAfter = True
            headers.add(b"Connection", b"close")
        elif request.version == b"HTTP/1.0":
            headers.add(b"Connection", b"keep-alive")
        if self.hsts is not None:
            headers.set(b"Strict-Transport-Security", self.hsts)
        return b"HTTP/1.1 %d %s\r\n%s\r\n" % (head.status, head.reason, headers.serialize())

    # Sink of the request reader.

    def headReceived(self, head) -> None:
        self._headStarted = None
        exchange = self.current = Exchange(self, head)
        self._drained = 0
        if exceedsLimit(self.maxBody, head.length if head.framing == LENGTH else 0):
            exchange.cut(413, tooLarge(self.maxBody))
            return
        handle(self.handler, exchange)

    def bodyReceived(self, data: bytes) -> None:
        exchange = self.current
        if exceedsLimit(self.maxBody, exchange.bytesReceived + len(data)) and not exchange.finished:
            # A chunked body grew past the limit.
            self._cutRequest(413, tooLarge(self.maxBody))
            return
        if exchange.finished:
            self._drained += len(data)
            if self._drained > DRAIN_LIMIT:
                self.transport.abortConnection()
            return
        exchange.bodyReceived(data)

    def messageEnded(self) -> None:
        exchange = self.current
        exchange.bodyEnded()
        if exchange.finished and not self.closing:
            self._next()
        else:
            self.reader.paused = True

    def exchangeDone(self, exchange: Exchange) -> None:
        self.handler.exchangeDone(exchange)
        if exchange.closeAfter or self.closing:
            self.closing = True
            self.transport.loseConnection()
            return
        if exchange.requestEnded:
            self._next()
        else:
            # Read and drop the rest of a body nobody wanted, so the
            # connection stays usable and the client sees the response.
            exchange.dropRequestBody()
            self.resumeReading(WAITING)
            self.resumeReading(UPSTREAM)

    def resumeReading(self, reason: str) -> None:
        if self._pauses:
            ReadingControl.resumeReading(self, reason)
            if not self._pauses:
                # The client's silence counts from when it was listened to.
                self._lastActivity = now = self.clock.seconds()
                call = self._idleCall
                if call is not None and call.getTime() > now + self.bodyTimeout:
                    call.reset(self.bodyTimeout)

    def _next(self) -> None:
        self.current = None
        self._lastActivity = self.clock.seconds()
        self.resumeReading(PIPELINE)
        self.resumeReading(UPSTREAM)
        self.resumeReading(WAITING)
        try:
            self.reader.resume()
        except Refusal as refusal:
            self._protocolError(refusal)

    def splice(self, upstream) -> None:
        self.closing = True
        self._tunnel = upstream
        leftover = self.reader.buffered
        self.reader.paused = True
        upstream.becomeTunnel(self.transport)
        self.transport.registerProducer(upstream, True)
        if leftover:
            upstream.transport.write(leftover)
        self._pauses.clear()
        self.transport.resumeProducing()

    def connectionLost(self, reason=None) -> None:
        if self.factory is not None:
            self.factory.closed(self, self.clientHost)
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        if self._tunnel is not None:
            self._tunnel.transport.loseConnection()
        if self.current is not None:
            self.current.clientGone()
        self.handler.connectionLost(self)


@implementer(IClientFactory)
class HTTPServerFactory(LimitedFactory):
    """
    Builds client connections for a handler (the mode's request logic).

    @ivar hsts: a Strict-Transport-Security value for every response, for
        TLS listeners that want one.
    """

    hsts = None

    maxBody = 0
    headTimeout = HTTPServerChannel.headTimeout
    bodyTimeout = HTTPServerChannel.bodyTimeout
    writeTimeout = HTTPServerChannel.writeTimeout

    def __init__(self, handler, clock, idleTimeout: float, limits: Limits = DEFAULT_LIMITS):
        super().__init__()
        self.handler = handler
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.limits = limits

    # What a reloaded configuration's factory hands over to a kept one.
    _SETTINGS = ("hsts", "idleTimeout", "limits", "maxConnections", "maxConnectionsPerClient", "maxBody",
                 "headTimeout", "bodyTimeout", "writeTimeout")

    def adopt(self, other: HTTPServerFactory) -> None:
        """
        Take C{other}'s settings for new connections and its handler for
        every later request, on open connections too: a reload keeps the
        connections and changes the logic.
        """
        for name in self._SETTINGS:
            setattr(self, name, getattr(other, name))
        self.handler = other.handler
        for connection in self.connections:
            if isinstance(connection, HTTPServerChannel):
                connection.handler = other.handler

    def buildConnection(self) -> Protocol:
        """
        The protocol for an admitted connection: HTTP/1.x here.
        """
        return self.buildHTTP1()

    def buildHTTP1(self) -> HTTPServerChannel:
        channel = HTTPServerChannel(self.handler, self.clock, self.idleTimeout, self.limits, self.hsts)
        channel.factory = self
        channel.maxBody = self.maxBody
        channel.headTimeout = self.headTimeout
        channel.bodyTimeout = self.bodyTimeout
        channel.writeTimeout = self.writeTimeout
        return channel
