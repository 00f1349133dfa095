"""
HTTP/2 to clients, through Twisted's own HTTP/2 support (the h2 and
priority packages: C{pip install dualproxy[http2]}).

Twisted's H2Connection (mended in L{dualproxy.twistedcompat}) does the
framing, flow control and priorities; each stream's request is turned into
the same L{Exchange} an HTTP/1.x connection makes, so modes, filters, the relay engine and the access log
work unchanged.  Backpressure holds both ways: a stream whose flow-control
window is shut pauses the upstream, and a slow upstream stops the stream's
window from reopening.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.protocol import Protocol
from twisted.web.http_headers import Headers as TwistedHeaders
from zope.interface import implementer

from ..core.exchange import Exchange, ReadingControl, exceedsLimit, handle, tooLarge
from ..http.message import CHUNKED, LENGTH, NO_BODY, Headers, Refusal, RequestHead, ResponseHead
from ..interfaces import IClientChannel
from ..twistedcompat import MendedH2Connection
from ..twistedcompat import http2Available as available
from .http1 import HTTPServerFactory


# Fields that describe an HTTP/1.x connection; RFC 9113 section 8.2.2
# forbids them in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)


class _FieldList:
    """
    The one method of twisted.web's Headers that H2Stream.writeHeaders uses.
    """

    def __init__(self, items):
        self.items = items

    def getAllRawHeaders(self):
        return ((name, [value]) for name, value in self.items)


@implementer(IClientChannel)
class _StreamChannel(ReadingControl):
    """
    What an exchange needs of its connection, for one HTTP/2 stream.
    """

    closing = False

    def __init__(self, handler, clock, stream, hsts=None):
        self.handler = handler
        self.clock = clock
        self.hsts = hsts
        self.transport = stream
        self.clientHost = getattr(stream.getPeer(), "host", None)
        self.secure = stream.isSecure()
        self._pauses: set = set()

    def writeInterim(self, exchange: Exchange, head: ResponseHead) -> None:
        # Twisted's H2Connection answers Expect: 100-continue itself.
        pass

    def writeHead(self, exchange: Exchange, head: ResponseHead) -> None:
        fields = [
            (name.lower(), value) for name, value in head.headers if name.lower() not in _CONNECTION_SPECIFIC
        ]
        if self.hsts is not None:
            fields.append((b"strict-transport-security", self.hsts))
        self.transport.writeHeaders(b"HTTP/2", b"%d" % head.status, head.reason, _FieldList(fields))

    def exchangeDone(self, exchange: Exchange) -> None:
        self.handler.exchangeDone(exchange)
        if not exchange.aborted:
            self.transport.requestDone(None)

    def clientSubject(self) -> Optional[str]:
        from ..tls import peerSubject

        # The stream's site is the connection's NegotiatedProtocol, which
        # holds the TLS transport.
        return peerSubject(self.transport.site.transport)

    def splice(self, upstream) -> None:
        raise Refusal(501, "protocol upgrades are not available over HTTP/2")


class _StreamRequest:
    """
    The request object Twisted's H2Stream feeds (as it would a twisted.web
    Request), turned into an exchange as soon as its fields are in.
    """

    def __init__(self, stream, queued: bool = False):
        self.stream = stream
        self.requestHeaders = TwistedHeaders()
        self.length: Optional[int] = None
        self.exchange: Optional[Exchange] = None

    def gotLength(self, length: Optional[int]) -> None:
        self.length = length

    def parseCookies(self) -> None:
        """
        H2Stream calls this after the last request field, but from its
        constructor: the stream is not registered with its connection yet,
        so nothing may be written until the first body data or the end of
        the request arrives, which is when the exchange starts.
        """

    def _start(self) -> Exchange:
        stream = self.stream
        factory = stream.factory
        headers = Headers(
            (name, value) for name, values in self.requestHeaders.getAllRawHeaders() for value in values
        )
        length = self.length
        if length is None:
            framing = CHUNKED
        else:
            framing = LENGTH if length else NO_BODY
        head = RequestHead(stream.command, stream.path, b"HTTP/2", headers, framing, length or 0)
        channel = _StreamChannel(factory.handler, factory.clock, stream, factory.hsts)
        factory.handler.connectionMade(channel)
        exchange = self.exchange = Exchange(channel, head)
        if framing == NO_BODY:
            exchange.requestEnded = True
        if exceedsLimit(factory.maxBody, length or 0):
            exchange.cut(413, tooLarge(factory.maxBody))
        else:
            handle(factory.handler, exchange)
        return exchange

    def handleContentChunk(self, data: bytes) -> None:
        exchange = self.exchange or self._start()
        if exchange.finished:
            return
        maxBody = self.stream.factory.maxBody
        if exceedsLimit(maxBody, exchange.bytesReceived + len(data)):
            exchange.cut(413, tooLarge(maxBody))
        else:
            exchange.bodyReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        exchange = self.exchange or self._start()
        if not exchange.requestEnded:
            exchange.bodyEnded()

    def connectionLost(self, reason) -> None:
        if self.exchange is not None:
            self.exchange.clientGone()


class NegotiatedProtocol(Protocol):
    """
    A TLS connection's protocol, chosen by ALPN once the handshake is done:
    HTTP/2 for clients that asked for C{h2}, HTTP/1.1 for the rest.
    """

    def __init__(self, factory):
        self.factory = factory
        self.impl: Optional[Protocol] = None

    def dataReceived(self, data: bytes) -> None:
        if self.impl is None:
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2" and available():
                self.factory.connections.add(self)
                impl = self.impl = MendedH2Connection(self.factory.clock)
                impl.requestFactory = _StreamRequest
                impl.site = self
                impl.factory = self.factory
                impl.timeOut = self.factory.idleTimeout
                # After an idle close (GOAWAY), what the client leaves unread
                # holds the connection no longer than client_write.
                impl.abortTimeout = self.factory.writeTimeout
                impl.makeConnection(self.transport)
                # As twisted.web's own HTTP/2 channel: a client that stops
                # reading stops the sending loop (and, through it, the
                # upstreams).
                self.transport.registerProducer(impl, True)
            else:
                self.impl = self.factory.buildHTTP1()
                self.impl.makeConnection(self.transport)
        self.impl.dataReceived(data)

    def connectionLost(self, reason=None) -> None:
        self.factory.connections.discard(self)
        if self.impl is not None:
            self.impl.connectionLost(reason)


class NegotiatingFactory(HTTPServerFactory):
    """
    For TLS listeners that offer HTTP/2: the protocol is chosen by ALPN.
    """

    def buildConnection(self) -> Protocol:
        return NegotiatedProtocol(self)
