"""
HTTP/2 to clients, on the h2 library (C{pip install dualproxy[http2]}).

The h2 library does the framing, HPACK and the flow-control arithmetic;
this module is the thin protocol around it: each stream's request becomes
the same L{Exchange} an HTTP/1.x connection makes, so modes, filters, the
relay engine and the access log work unchanged.

Backpressure holds both ways.  A stream whose flow-control window is shut
keeps what it could not send and pauses whatever produces its response; a
client that stops reading (the transport pauses this connection) pauses
every stream's producer and stops reading from the client, so a flood of
PINGs cannot pile up answers; a request body is read no faster than its
exchange takes it, by withholding WINDOW_UPDATEs.

Frames are written once per batch: whatever a received chunk of frames
causes goes out in one write at its end.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, Optional, Tuple

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from ..core.exchange import Exchange, ReadingControl, exceedsLimit, handle, tooLarge
from ..http.message import CHUNKED, LENGTH, NO_BODY, Headers, Refusal, RequestHead, ResponseHead
from ..interfaces import IClientChannel, IClientConnection
from .http1 import HTTPServerFactory

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
except ImportError:  # the http2 extra is not installed
    h2 = None

_log = Logger()

# Fields that describe an HTTP/1.x connection; RFC 9113 section 8.2.2
# forbids them in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)

#: Stream resets a client may send in a burst, and how many a second it
#: gets back: a defence against Rapid Reset (CVE-2023-44487).
RESET_BURST = 1000
RESET_RATE = 33.0

# What a stream's inbound queue holds for the end of the request.
_END = object()


def available() -> bool:
    return h2 is not None


def requestHead(fields) -> RequestHead:
    """
    The HTTP/1.1-style head of an HTTP/2 request: the pseudo-fields become
    method and target, C{:authority} becomes Host, and the cookie crumbs
    HTTP/2 allows are joined again (RFC 9113 section 8.2.3).  Framing is
    set by the caller.

    @raise Refusal: 501 for CONNECT.
    """
    method = target = authority = None
    headers = []
    cookies = []
    host = None
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
            elif name == b":authority":
                authority = value
        elif name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            host = value
        else:
            headers.append((name, value))
    if authority is not None:
        # h2 has refused a Host that differs.
        host = authority
    if host is not None:
        headers.insert(0, (b"host", host))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if method == b"CONNECT":
        raise Refusal(501, "CONNECT is not available over HTTP/2; use HTTP/1.1")
    return RequestHead(method, target or b"/", b"HTTP/2", Headers(headers))


def responseFields(head: ResponseHead, hsts: Optional[bytes]) -> list:
    """
    The HTTP/2 header list for C{head}: lower-case names, no connection
    fields.
    """
    fields = [(b":status", b"%d" % head.status)]
    for name, value in head.headers:
        name = name.lower()
        if name not in _CONNECTION_SPECIFIC:
            fields.append((name, value))
    if hsts is not None:
        fields.append((b"strict-transport-security", hsts))
    return fields


@implementer(IClientChannel)
class HTTP2Stream(ReadingControl):
    """
    One stream: the channel its exchange answers through and the transport
    it writes the body to.

    As a transport, L{pauseProducing}/L{resumeProducing} control reading the
    request body; L{registerProducer} takes whatever produces the response.
    """

    exchange: Optional[Exchange] = None

    def __init__(self, connection: HTTP2Connection, streamID: int):
        self.connection = connection
        self.streamID = streamID
        factory = connection.factory
        self.handler = factory.handler
        self.clock = factory.clock
        self.hsts = factory.hsts
        self.transport = self
        self.clientHost = connection.clientHost
        self.secure = True
        self.producer = None
        self._streaming = True
        self._producing = True
        self._pullCall = None
        self._pauses: set = set()
        self._readPaused = False
        self._inbound: Deque[Tuple[object, int]] = deque()
        # Response bytes the flow-control window did not take yet.
        self._held: Deque[bytes] = deque()
        self._endHeld = False
        self._endSent = False
        self.ended = False

    # Reading the request

    def start(self, fields, ended: bool) -> None:
        """
        The request's fields are in: make its exchange and hand it over.
        """
        maxBody = self.connection.factory.maxBody
        try:
            head = requestHead(fields)
            length = head.headers.get(b"content-length")
            # h2 rejects what int() cannot read, but before 4.4 it let
            # "+5" through, which an HTTP/1.1 origin may read otherwise.
            if length is not None and not length.isdigit():
                raise Refusal(400, "the Content-Length field is not a number")
        except Refusal as refusal:
            # Logged with what the client asked for.
            pseudo = dict(fields)
            head = RequestHead(pseudo.get(b":method", b"GET"), pseudo.get(b":path") or pseudo.get(b":authority", b"/"),
                               b"HTTP/2")
            self.handler.connectionMade(self)
            exchange = self.exchange = Exchange(self, head)
            exchange.requestEnded = ended
            exchange.refuse(refusal.status, refusal.reason, refusal.headers, refusal.errorType)
            return
        if ended:
            head.framing = NO_BODY
        elif length is not None:
            head.framing = LENGTH
            head.length = int(length)
        else:
            head.framing = CHUNKED
        self.handler.connectionMade(self)
        exchange = self.exchange = Exchange(self, head)
        exchange.requestEnded = ended
        if exceedsLimit(maxBody, head.length):
            exchange.cut(413, tooLarge(maxBody))
        else:
            handle(self.handler, exchange)

    def dataReceived(self, data: bytes, flowLength: int) -> None:
        if self._readPaused or self._inbound:
            self._inbound.append((data, flowLength))
            return
        self._deliver(data)
        self.connection.acknowledge(flowLength, self.streamID)

    def requestEnded(self) -> None:
        if self._readPaused or self._inbound:
            self._inbound.append((_END, 0))
        elif not self.exchange.requestEnded:
            self.exchange.bodyEnded()

    def _deliver(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange.finished:
            return
        maxBody = self.connection.factory.maxBody
        if exceedsLimit(maxBody, exchange.bytesReceived + len(data)):
            exchange.cut(413, tooLarge(maxBody))
        else:
            exchange.bodyReceived(data)

    def pauseProducing(self) -> None:
        self._readPaused = True

    def resumeProducing(self) -> None:
        self._readPaused = False
        inbound = self._inbound
        acknowledged = 0
        while inbound and not self._readPaused:
            data, flowLength = inbound.popleft()
            if data is _END:
                if not self.exchange.requestEnded:
                    self.exchange.bodyEnded()
            else:
                acknowledged += flowLength
                self._deliver(data)
        if acknowledged:
            self.connection.acknowledge(acknowledged, self.streamID)
            self.connection.flush()

    def stopProducing(self) -> None:
        self.abortConnection()

    # IClientChannel

    def writeInterim(self, exchange: Exchange, head: ResponseHead) -> None:
        if head.status != 101 and not self.ended:
            self.connection.sendHeaders(self.streamID, responseFields(head, None))

    def writeHead(self, exchange: Exchange, head: ResponseHead) -> None:
        if not self.ended:
            self.connection.sendHeaders(self.streamID, responseFields(head, self.hsts))

    def respond(self, exchange: Exchange, head: ResponseHead, body: bytes) -> None:
        """
        A whole response: HEADERS and DATA, the last with END_STREAM, in one
        write when the window takes it all.
        """
        if self.ended:
            return
        if not exchange.sendsBody:
            body = b""
        self._endSent = self.connection.respond(self.streamID, responseFields(head, self.hsts), body)
        if not self._endSent:
            self.write(body)

    def exchangeDone(self, exchange: Exchange) -> None:
        self.handler.exchangeDone(exchange)
        if not exchange.aborted:
            self.loseConnection()

    def clientSubject(self) -> Optional[str]:
        from ..tls import peerSubject

        return peerSubject(self.connection.transport)

    def splice(self, upstream) -> None:
        raise Refusal(501, "protocol upgrades are not available over HTTP/2")

    # The response body

    def write(self, data: bytes) -> None:
        if self.ended or not data:
            return
        if self._held:
            self._held.append(data)
            return
        rest = self.connection.sendData(self.streamID, data)
        if rest:
            self._held.append(rest)
            self.connection.waiting[self.streamID] = self
            self.updateProducer()

    def writeSequence(self, chunks) -> None:
        for data in chunks:
            self.write(data)

    def sendHeld(self) -> None:
        """
        The window opened: send what it takes of what was held back.
        """
        held = self._held
        connection = self.connection
        while held:
            rest = connection.sendData(self.streamID, held[0])
            if rest:
                held[0] = rest
                return
            held.popleft()
        connection.waiting.pop(self.streamID, None)
        if self._endHeld:
            self._end()
        else:
            self.updateProducer()

    def loseConnection(self) -> None:
        """
        End the stream once what was held back is sent.
        """
        if self.ended:
            return
        if self._held:
            self._endHeld = True
        else:
            self._end()

    def _end(self) -> None:
        self.ended = True
        if self._endSent:
            self.connection.flush()
        else:
            self.connection.endStream(self.streamID)
        self._forget()

    def abortConnection(self) -> None:
        """
        Reset the stream: the response cannot be completed.
        """
        if self.ended:
            return
        self.ended = True
        self.connection.resetStream(self.streamID)
        self._forget()

    def clientGone(self) -> None:
        """
        The client reset the stream, or the connection is gone.
        """
        if self.ended:
            return
        self.ended = True
        self._forget()
        if self.exchange is not None:
            self.exchange.clientGone()

    def _forget(self) -> None:
        self._held.clear()
        self._inbound.clear()
        self.connection.streamDone(self)
        self.handler.connectionLost(self)
        self._stopPulling()
        if self.producer is not None and not self._streaming:
            # A pull producer (a static file) is told it will not be asked
            # again, so it closes its file; a push producer is the relay's,
            # stopped by the exchange.
            self.producer.stopProducing()
            self.producer = None

    def getPeer(self):
        return self.connection.transport.getPeer()

    def getHost(self):
        return self.connection.transport.getHost()

    def isSecure(self) -> bool:
        return True

    # Producers of the response

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer
        self._streaming = streaming
        self._producing = True
        if streaming:
            self.updateProducer()
        else:
            self._schedulePull()

    def unregisterProducer(self) -> None:
        self.producer = None
        self._stopPulling()

    def updateProducer(self) -> None:
        """
        Pause the producer while the window is shut or the client is not
        reading, resume it when neither holds.
        """
        producer = self.producer
        if producer is None:
            return
        wanted = not (self._held or self.connection.paused)
        if wanted == self._producing:
            return
        self._producing = wanted
        if self._streaming:
            if wanted:
                producer.resumeProducing()
            else:
                producer.pauseProducing()
        elif wanted:
            self._schedulePull()

    def _schedulePull(self) -> None:
        # A pull producer gives one chunk a turn of the reactor, so one
        # stream cannot hold the connection.
        if self._pullCall is None:
            self._pullCall = self.clock.callLater(0, self._pull)

    def _pull(self) -> None:
        self._pullCall = None
        if self.producer is None or self._streaming or not self._producing or self.ended:
            return
        self.producer.resumeProducing()
        if self.producer is not None and not (self._held or self.connection.paused):
            self._schedulePull()
        else:
            self._producing = False

    def _stopPulling(self) -> None:
        if self._pullCall is not None:
            self._pullCall.cancel()
            self._pullCall = None


@implementer(IPushProducer)
class HTTP2Connection(Protocol):
    """
    A client's HTTP/2 connection.

    @ivar streams: the streams whose response is not complete, by ID.
    @ivar waiting: the streams holding response bytes back for their
        flow-control window, in the order they began to.
    @ivar paused: whether the client stopped reading.
    """

    clientHost: Optional[str] = None

    def __init__(self, factory):
        self.factory = factory
        self.clock = factory.clock
        self.conn = h2.connection.H2Connection(_CONFIG)
        self.streams: Dict[int, HTTP2Stream] = {}
        self.waiting: Dict[int, HTTP2Stream] = {}
        self.paused = False
        self._receiving = False
        self._closing = False
        self._draining = False
        self._lastActive = 0.0
        self._idleCall = None
        self._abortCall = None
        self._resetTokens = float(RESET_BURST)
        self._resetStamp = 0.0

    def connectionMade(self) -> None:
        self.clientHost = getattr(self.transport.getPeer(), "host", None)
        self._lastActive = self._resetStamp = self.clock.seconds()
        self.conn.initiate_connection()
        self.transport.registerProducer(self, True)
        self.flush()
        if self.factory.idleTimeout:
            self._idleCall = self.clock.callLater(self.factory.idleTimeout, self._idleCheck)

    def dataReceived(self, data: bytes) -> None:
        self._lastActive = self.clock.seconds()
        self._receiving = True
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._receiving = False
            _log.info("HTTP/2 protocol error from {client}: {error}", client=self.clientHost or "-", error=error)
            # h2 has queued the GOAWAY that names the error.
            self._close()
            return
        try:
            for event in events:
                if self._closing:
                    # After our GOAWAY h2 sends nothing: the rest is moot.
                    break
                dispatch = _DISPATCH.get(type(event))
                if dispatch is not None:
                    dispatch(self, event)
        finally:
            self._receiving = False
        self.flush()

    def _requestReceived(self, event) -> None:
        if self._draining:
            # Safe for the client to retry elsewhere (RFC 9113 section 8.7).
            self.conn.reset_stream(event.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        stream = self.streams[event.stream_id] = HTTP2Stream(self, event.stream_id)
        stream.start(event.headers, event.stream_ended is not None)

    def _dataReceived(self, event) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.exchange is None:
            # The answer went before the body ended: the body is dropped,
            # its window given back.
            self.acknowledge(event.flow_controlled_length, event.stream_id)
        else:
            stream.dataReceived(event.data, event.flow_controlled_length)

    def _streamEnded(self, event) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.requestEnded()

    def _streamReset(self, event) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.clientGone()
        now = self.clock.seconds()
        self._resetTokens = min(RESET_BURST, self._resetTokens + max(0.0, now - self._resetStamp) * RESET_RATE)
        self._resetStamp = now
        if self._resetTokens < 1:
            _log.warn("HTTP/2 client {client} reset too many streams; closing", client=self.clientHost or "-")
            self.conn.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._close()
        else:
            self._resetTokens -= 1

    def _windowOpened(self, event) -> None:
        for stream in list(self.waiting.values()):
            stream.sendHeld()

    def _terminated(self, event) -> None:
        # h2 sends nothing after a GOAWAY, so the open streams end here too.
        self._close()

    # What streams ask of the connection

    def flush(self) -> None:
        """
        Write the frames h2 has ready, unless a batch is being read (its end
        writes them all at once).
        """
        if self._receiving:
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def sendHeaders(self, streamID: int, fields: list) -> None:
        self.conn.send_headers(streamID, fields)
        self.flush()

    def respond(self, streamID: int, fields: list, body: bytes) -> bool:
        """
        Queue a response's HEADERS, and its body with END_STREAM if the
        windows take all of it (say whether they did); the caller's end of
        the stream writes them.
        """
        conn = self.conn
        conn.send_headers(streamID, fields, end_stream=not body)
        if body and self._fits(streamID, len(body)):
            conn.send_data(streamID, body, end_stream=True)
            return True
        return not body

    def _fits(self, streamID: int, size: int) -> bool:
        # One DATA frame, within the stream's and the connection's windows.
        conn = self.conn
        return size <= conn.local_flow_control_window(streamID) and size <= conn.max_outbound_frame_size

    def sendData(self, streamID: int, data: bytes) -> bytes:
        """
        Send what the flow-control windows allow of C{data}; return the rest.
        """
        conn = self.conn
        size = len(data)
        if self._fits(streamID, size):
            conn.send_data(streamID, data)
            self.flush()
            return b""
        window = conn.local_flow_control_window(streamID)
        frame = conn.max_outbound_frame_size
        offset = 0
        while offset < size and window > 0:
            step = min(size - offset, window, frame)
            conn.send_data(streamID, data[offset:offset + step])
            offset += step
            window -= step
        self.flush()
        return data[offset:]

    def endStream(self, streamID: int) -> None:
        self.conn.end_stream(streamID)
        self.flush()

    def resetStream(self, streamID: int) -> None:
        try:
            self.conn.reset_stream(streamID, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.StreamClosedError:
            return
        self.flush()

    def acknowledge(self, size: int, streamID: int) -> None:
        if size:
            self.conn.acknowledge_received_data(size, streamID)

    def streamDone(self, stream: HTTP2Stream) -> None:
        self.streams.pop(stream.streamID, None)
        self.waiting.pop(stream.streamID, None)
        if self._draining and not self.streams and not self._closing:
            self.conn.close_connection()
            self._close()

    def drain(self) -> None:
        """
        The proxy is stopping: refuse new streams, and close with a GOAWAY
        once the open ones are answered (h2 sends nothing after one).
        """
        self._draining = True
        if not self.streams and not self._closing:
            self.conn.close_connection()
            self._close()

    # The client's reading: IPushProducer for the transport

    def pauseProducing(self) -> None:
        self.paused = True
        self.transport.pauseProducing()
        for stream in list(self.streams.values()):
            stream.updateProducer()

    def resumeProducing(self) -> None:
        self.paused = False
        self._lastActive = self.clock.seconds()
        self.transport.resumeProducing()
        for stream in list(self.streams.values()):
            stream.updateProducer()

    def stopProducing(self) -> None:
        self.paused = True

    # Closing

    def _idleCheck(self) -> None:
        """
        Close a connection that has no stream open, or whose client reads
        nothing, once it has been quiet for client_idle.  A stream waiting
        for its upstream is the upstream timeouts' business.
        """
        timeout = self.factory.idleTimeout
        now = self.clock.seconds()
        if self.streams and not self.paused:
            self._lastActive = now
        remaining = self._lastActive + timeout - now
        if remaining > 0:
            self._idleCall = self.clock.callLater(remaining, self._idleCheck)
            return
        self._idleCall = None
        _log.info("HTTP/2 client {client} idle for {timeout} s; closing", client=self.clientHost or "-",
                  timeout=timeout)
        code = h2.errors.ErrorCodes.PROTOCOL_ERROR if self.streams else h2.errors.ErrorCodes.NO_ERROR
        self.conn.close_connection(error_code=code)
        self._close()

    def _close(self) -> None:
        """
        Write what is queued (the GOAWAY) and close, forcibly if the client
        does not take it within client_write.  h2 sends nothing more, so
        the open streams' exchanges end now.
        """
        self._closing = True
        for stream in list(self.streams.values()):
            stream.clientGone()
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)
        self.transport.loseConnection()
        if self._abortCall is None:
            self._abortCall = self.clock.callLater(self.factory.writeTimeout, self.transport.abortConnection)

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        for call in (self._idleCall, self._abortCall):
            if call is not None and call.active():
                call.cancel()
        self._idleCall = self._abortCall = None
        for stream in list(self.streams.values()):
            stream.clientGone()


if h2 is not None:
    _CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None)
    _DISPATCH = {
        h2.events.RequestReceived: HTTP2Connection._requestReceived,
        h2.events.DataReceived: HTTP2Connection._dataReceived,
        h2.events.StreamEnded: HTTP2Connection._streamEnded,
        h2.events.StreamReset: HTTP2Connection._streamReset,
        h2.events.WindowUpdated: HTTP2Connection._windowOpened,
        h2.events.RemoteSettingsChanged: HTTP2Connection._windowOpened,
        h2.events.ConnectionTerminated: HTTP2Connection._terminated,
    }


@implementer(IClientConnection)
class NegotiatedProtocol(Protocol):
    """
    A TLS connection's protocol, chosen by ALPN once the handshake is done:
    HTTP/2 for clients that asked for C{h2}, HTTP/1.1 for the rest (which
    counts itself).  Counted as a client connection only as HTTP/2.
    """

    def __init__(self, factory):
        self.factory = factory
        self.impl: Optional[Protocol] = None

    def dataReceived(self, data: bytes) -> None:
        if self.impl is None:
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2" and available():
                self.factory.connections.add(self)
                self.impl = HTTP2Connection(self.factory)
            else:
                self.impl = self.factory.buildHTTP1()
            self.impl.makeConnection(self.transport)
        self.impl.dataReceived(data)

    def busy(self) -> int:
        return len(self.impl.streams)

    def drain(self) -> None:
        self.impl.drain()

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
