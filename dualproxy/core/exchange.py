"""
The exchange core: one request and its response, between a client
connection (HTTP/1.x or an HTTP/2 stream) and a mode's handler.

Everything a capability does to a request goes through an L{Exchange}: the
handler reads its head, takes its body through a sink, and answers through
it.  Reading from the client pauses for several separate reasons and
resumes only when none is left (L{ReadingControl}), so one reason never
undoes another.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..http.message import LENGTH, NO_BODY, Headers, Refusal, ResponseHead
from ..http.proxystatus import HTTP_REQUEST_ERROR, NAME, PROXY_INTERNAL_ERROR, defaultErrorType, proxyStatus
from ..http.rules import wantsKeepAlive
from ..interfaces import IResponseSink

_log = Logger()

# Pause reasons for the client's transport.
PIPELINE = "pipeline"
UPSTREAM = "upstream"
WAITING = "waiting"

def errorResponse(status: int, reason: str, headers=()) -> tuple:
    """
    A short plain-text answer naming the cause: the head and its body.
    """
    body = (reason + "\n").encode("utf-8", "replace")
    head = ResponseHead(
        status,
        REASONS.get(status, b"Error"),
        Headers(
            [(b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", b"%d" % len(body))]
            + list(headers)
        ),
        framing=LENGTH,
        length=len(body),
    )
    return head, body


REASONS = {
    200: b"OK",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    508: b"Loop Detected",
}


@implementer(IPushProducer)
class _RequestBodyThrottle:
    """
    Registered with an upstream transport: when the upstream cannot take
    more of the request body, stop reading it from the client.
    """

    def __init__(self, channel: HTTPServerChannel):
        self.channel = channel

    def pauseProducing(self) -> None:
        self.channel.pauseReading(UPSTREAM)

    def resumeProducing(self) -> None:
        self.channel.resumeReading(UPSTREAM)

    def stopProducing(self) -> None:
        self.channel.resumeReading(UPSTREAM)


class ExchangeContext:
    """
    What the capabilities that served an exchange noted about it, for
    metrics and the access log.  A mode keeps its own state in a subclass
    (the reverse proxy's chosen backend) rather than on the exchange.
    """

    #: The routing label of the target that served it.
    route = ""
    #: The upstream group and server it went to, if any.
    pool = ""
    backendName = ""
    #: The cache's decision ("hit", "miss", ...), if a cache looked.
    cacheResult: Optional[str] = None
    #: Seconds from asking upstream to its response head.
    upstreamLatency: Optional[float] = None


@implementer(IResponseSink)
class Exchange:
    """
    One request and its response on a client connection.

    The handler reads the request head, attaches a body sink
    (L{setBodySink}) to receive the request body, and answers with
    L{writeHead}/L{write}/L{finish}, or L{refuse}.

    @ivar splicer: what moves the response body to the client by splice,
        if anything does.
    """

    splicer = None

    def __init__(self, channel: HTTPServerChannel, request):
        self.channel = channel
        self.request = request
        self.started = channel.clock.seconds()
        self.status = 0
        self.bytesSent = 0
        self.user: Optional[str] = None
        self.reason: Optional[str] = None
        self.errorType: Optional[str] = None
        self.context = channel.handler.newContext()
        self.bytesReceived = 0
        self.responseStarted = False
        self.finished = False
        self.aborted = False
        self.requestEnded = False
        self.onAbort: Optional[Callable[[], None]] = None
        self._sink = None
        self._pending: list = []
        self._chunked = False
        self._noBody = False
        self.closeAfter = not wantsKeepAlive(request.version, request.headers)

    @property
    def client(self):
        return self.channel.transport.getPeer()

    @property
    def clientHost(self) -> Optional[str]:
        return self.channel.clientHost

    # Request body

    def setBodySink(self, sink) -> None:
        """
        Deliver the request body to C{sink.bodyReceived(data)} and
        C{sink.bodyEnded()}; what arrived before is delivered at once.
        """
        self._sink = sink
        pending, self._pending = self._pending, []
        for data in pending:
            sink.bodyReceived(data)
        if self.requestEnded:
            sink.bodyEnded()
        self.channel.resumeReading(WAITING)

    def throttle(self) -> IPushProducer:
        """
        A producer to register with whatever consumes the request body.
        """
        return _RequestBodyThrottle(self.channel)

    def bodyReceived(self, data: bytes) -> None:
        """
        The channel read more of the request body.
        """
        self.bytesReceived += len(data)
        if self._sink is not None:
            self._sink.bodyReceived(data)
        elif not self.finished:
            self._pending.append(data)
            self.channel.pauseReading(WAITING)

    def bodyEnded(self) -> None:
        """
        The channel read the whole request body.
        """
        self.requestEnded = True
        if self._sink is not None:
            self._sink.bodyEnded()

    def dropRequestBody(self) -> None:
        """
        Nobody wants the rest of the request body: the channel reads and
        discards it so the connection stays usable.
        """
        self._sink = None
        self._pending = []

    # Response

    def writeInterim(self, head: ResponseHead) -> None:
        """
        Pass on a 1xx response (e.g. 100 Continue) to a client that
        understands them.
        """
        if not self.responseStarted:
            self.channel.writeInterim(self, head)

    def writeHead(self, head: ResponseHead) -> None:
        """
        Send the status and fields; the connection decides how the body is
        framed for its client.
        """
        self.responseStarted = True
        self.status = head.status
        if head.framing == NO_BODY or self.request.method == b"HEAD":
            self._noBody = True
        self.channel.writeHead(self, head)

    def respond(self, head: ResponseHead, body: bytes) -> None:
        """
        Answer with a whole response at once (a small body, all at hand).
        """
        self.responseStarted = True
        self.status = head.status
        if head.framing == NO_BODY or self.request.method == b"HEAD":
            self._noBody = True
        respond = getattr(self.channel, "respond", None)
        if respond is None:
            self.channel.writeHead(self, head)
            self.write(body)
        else:
            if not self._noBody:
                self.bytesSent += len(body)
            respond(self, head, body)
        self.finish()

    @property
    def sendsBody(self) -> bool:
        """
        Whether the response carries a body (not a HEAD answer, not 204/304).
        """
        return not self._noBody

    def chunkBody(self) -> None:
        """
        The channel frames the response body in chunks (HTTP/1.1 without a
        known length): every write becomes a chunk.
        """
        self._chunked = True

    def passesBodyThrough(self) -> bool:
        """
        Whether body bytes reach the client's transport unchanged (no
        chunking, not suppressed), so they may bypass this exchange.
        """
        return not (self._chunked or self._noBody)

    def write(self, data: bytes) -> None:
        if self._noBody or not data:
            return
        self.bytesSent += len(data)
        if self._chunked:
            self.channel.transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.channel.transport.write(data)

    def registerProducer(self, producer: IPushProducer) -> None:
        """
        Let a slow client slow down whoever produces the response.
        """
        self.channel.transport.registerProducer(producer, True)

    def unregisterProducer(self) -> None:
        self.channel.transport.unregisterProducer()

    def finish(self) -> None:
        if self.finished:
            return
        if self._chunked:
            self.channel.transport.write(b"0\r\n\r\n")
        self.finished = True
        self.channel.exchangeDone(self)

    def refuse(self, status: int, reason: str, headers=(), errorType: Optional[str] = None) -> None:
        """
        Answer with an error of our own, its RFC 9209 type in Proxy-Status
        and the access log; if a response is already under way the only
        honest signal left is to cut the connection.

        A type noted on the exchange beforehand stands when none is given:
        a cache between relay and exchange passes only status and reason.
        """
        if self.finished:
            return
        if status == 400:
            # A client that sent something malformed is not read further.
            self.closeAfter = True
        self.reason = reason
        self.errorType = errorType or self.errorType or defaultErrorType(status)
        (_log.warn if status >= 500 else _log.info)(
            "{status} for {client} {method} {target}: {reason}",
            status=status, client=self.clientHost or "-", method=self.request.method.decode("latin-1"),
            target=self.request.target.decode("latin-1"), reason=reason,
        )
        if self.responseStarted:
            self.abort()
            return
        if self.errorType is not None:
            headers = [*headers, (b"Proxy-Status", proxyStatus(NAME, self.errorType, reason))]
        head, body = errorResponse(status, reason, headers)
        self.respond(head, body)

    def cut(self, status: int, reason: str) -> None:
        """
        Give up on a request whose body cannot be taken (too large, too
        slow): answer if still possible and stop its upstream request.
        """
        self.closeAfter = True
        self.refuse(status, reason, errorType=HTTP_REQUEST_ERROR)
        if self.onAbort is not None:
            self.onAbort()

    def abort(self) -> None:
        """
        Drop the client connection: the response cannot be completed.

        A chunked response is closed without its last chunk, so the client
        keeps what it got and can tell it is short; any other is reset, as
        a clean close could pass for the end of the body.
        """
        self.aborted = True
        if not self.finished:
            self.finished = True
            self.closeAfter = True
            self.channel.exchangeDone(self)
        if self._chunked:
            self.channel.transport.loseConnection()
        else:
            self.channel.transport.abortConnection()

    def clientGone(self) -> None:
        """
        The client's connection (or HTTP/2 stream) is gone mid-exchange:
        stop whatever still works for it.
        """
        if self.finished:
            return
        self.finished = True
        self.aborted = True
        self.closeAfter = True
        if self.onAbort is not None:
            self.onAbort()
        self.channel.handler.exchangeDone(self)

    def tunnel(self, upstream) -> None:
        """
        Turn the connection into a byte tunnel to C{upstream} (an
        L{UpstreamProtocol}) once the response head has been written: after
        CONNECT, or an accepted Upgrade.
        """
        self.finished = True
        self.channel.handler.exchangeDone(self)
        self.channel.splice(upstream)


def exceedsLimit(maxBody: int, size: int) -> bool:
    """
    Whether a request body of C{size} bytes (known or so far) is over
    C{maxBody}, where 0 means no limit.
    """
    return 0 < maxBody < size


def tooLarge(maxBody: int) -> str:
    return f"the request body is larger than the limit of {maxBody} bytes"


def handle(handler, exchange: Exchange) -> None:
    """
    Give C{exchange} to the mode's C{handler}: a L{Refusal} answers the
    client; a bug answers 500 and is logged, never shown to the client.
    """
    _guarded(exchange, handler.handle, exchange)


def proceed(exchange: Exchange, result, step: Callable[..., None], *args) -> None:
    """
    Go on with C{step(value, *args)} once C{result} is had: at once for a
    plain value, when it fires for a Deferred (a shared store's answer).
    A step that comes too late, the exchange over, is not taken; a
    L{Refusal} or a bug in it is answered as in L{handle}.
    """
    if not isinstance(result, Deferred):
        step(result, *args)
        return

    def ready(value) -> None:
        if not exchange.finished:
            _guarded(exchange, step, value, *args)

    result.addCallback(ready).addErrback(_failed, exchange)


def _guarded(exchange: Exchange, call: Callable[..., None], *args) -> None:
    try:
        call(*args)
    except Refusal as refusal:
        exchange.refuse(refusal.status, refusal.reason, refusal.headers, refusal.errorType)
    except Exception:
        _failed(Failure(), exchange)


def _failed(failure: Failure, exchange: Exchange) -> None:
    if failure.check(Refusal):
        refusal = failure.value
        exchange.refuse(refusal.status, refusal.reason, refusal.headers, refusal.errorType)
        return
    _log.failure("handling {method} {target} failed", failure, method=exchange.request.method,
                 target=exchange.request.target)
    exchange.refuse(500, "the proxy failed to handle this request", errorType=PROXY_INTERNAL_ERROR)


class ReadingControl:
    """
    Pauses reading from the client while any reason to holds, and resumes
    it only when none is left, so one reason never undoes another.
    """

    _pauses: set

    def pauseReading(self, reason: str) -> None:
        if not self._pauses:
            self.transport.pauseProducing()
        self._pauses.add(reason)

    def resumeReading(self, reason: str) -> None:
        if reason in self._pauses:
            self._pauses.discard(reason)
            if not self._pauses:
                self.transport.resumeProducing()
