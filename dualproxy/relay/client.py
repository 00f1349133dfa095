"""
The upstream side of the relay: one persistent HTTP/1.1 connection to an
origin, backend or parent proxy, carrying one request at a time.
"""

from __future__ import annotations

import socket
import sys
from typing import Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ..settings.model import LimitSettings
from ..http.message import CHUNKED, CLOSE, Refusal, RequestHead
from ..http.parser import Limits, MessageReader
from ..http.proxystatus import CONNECTION_READ_TIMEOUT, CONNECTION_TERMINATED
from ..tls import upstreamTLSError
from ..twistedcompat import bottomTransport, canWriteThrough, noDelay, tcpSocket, writeThrough
from . import splice
from ..http.rules import wantsKeepAlive

# A backend that writes a response's head and body in two sends with Nagle
# on holds the body until the head is acknowledged, and a Linux receiver in
# request/response rhythm delays that acknowledgement by 40 ms; asking for a
# quick ACK as each part is read sends the pending ACK at once.  Linux only;
# its value is fixed by the kernel ABI where Python lacks it.
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12 if sys.platform.startswith("linux") else None)


def responseLimits(maxHead: int) -> Limits:
    """
    What an upstream's response head may hold: C{maxHead} bytes in all
    (C{[limits] max_response_header_bytes}), in lines of any length within
    that (one long Set-Cookie or Content-Security-Policy line is normal),
    and as many fields as fit at 64 bytes each, at least 100.
    """
    return Limits(maxHead, maxHead, max(100, maxHead // 64))


DEFAULT_RESPONSE_LIMITS = responseLimits(LimitSettings.max_response_header_bytes)


@implementer(IPushProducer, IHandshakeListener)
class UpstreamProtocol(Protocol):
    """
    An HTTP/1.1 client connection that streams a request out and hands the
    response to a listener (C{responseInterim}, C{responseHead},
    C{responseBody}, C{responseEnded}, C{responseFailed(refusal)} with the
    L{Refusal} the client should get).

    It is also the producer the client's transport throttles: when the
    client reads slowly, this connection stops reading from the upstream.

    @ivar closedUnanswered: the upstream closed the connection before a
        byte of the response due.
    @ivar preamble: written on the socket before anything else, under any
        TLS (a PROXY protocol header).
    """

    # Connections of this process open now, for metrics.
    openCount = 0

    def __init__(self, clock, readTimeout: float, preamble: bytes = b""):
        self.clock = clock
        self.readTimeout = readTimeout
        self.preamble = preamble
        self.reader = MessageReader(self, False, DEFAULT_RESPONSE_LIMITS)
        self.listener = None
        self.pool = None
        self.key = None
        self.generation = 0
        self.reused = False
        self.lastActivity = 0.0
        self.responseBegun = False
        self.closedUnanswered = False
        self._bodyChunked = False
        self._requestSent = False
        self._sentAt = 0.0
        self._interimSince: Optional[float] = None
        self._responseDone = False
        self._reusable = False
        self._paused = False
        self._timer = None
        self._tunnelPeer = None
        self._spliceSink = None
        self._splicer = None
        self._quickAck: Optional[socket.socket] = None
        self._writeThrough = False
        self._handshaken = False
        self._handshakeWaiter: Optional[Deferred] = None
        self._gone = False

    def connectionMade(self) -> None:
        UpstreamProtocol.openCount += 1
        self.lastActivity = self.clock.seconds()
        if self.preamble:
            # Twisted's TLS layer connects this protocol before it starts
            # its handshake, so the preamble precedes the ClientHello.
            bottomTransport(self.transport).write(self.preamble)
        handle = tcpSocket(self.transport)
        noDelay(handle)
        self._quickAck = handle if TCP_QUICKACK is not None else None
        self._writeThrough = canWriteThrough(self.transport)

    # TLS

    def whenHandshaken(self) -> Deferred:
        """
        Fires with this connection once its TLS handshake is done and the
        peer verified, or fails with why the connection was lost: a caller
        that must know a TLS upstream is usable before sending anything
        waits for this.  Cancelling it aborts the connection.
        """
        if self._handshaken:
            return succeed(self)
        self._handshakeWaiter = Deferred(lambda waiter: self._abandonHandshake())
        return self._handshakeWaiter

    def _abandonHandshake(self) -> None:
        self._handshakeWaiter = None
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        if self.transport.disconnecting:
            # A name mismatch aborts the connection as the handshake ends:
            # the loss, with its reason, follows.
            return
        self._handshaken = True
        waiter, self._handshakeWaiter = self._handshakeWaiter, None
        if waiter is not None:
            waiter.callback(self)

    # Sending

    def send(self, head: RequestHead, listener) -> None:
        """
        Write a request head; a body follows through L{writeBody} and
        L{endBody} unless C{head.framing} says there is none.
        """
        self.listener = listener
        self.reader.paused = False
        self.responseBegun = False
        self._responseDone = False
        self._reusable = False
        self._requestSent = head.framing == 0
        self._bodyChunked = head.framing == CHUNKED
        self._interimSince = None
        self.reader.expectResponse(head.method)
        self.lastActivity = self._sentAt = now = self.clock.seconds()
        if self._writeThrough:
            writeThrough(self.transport, head.serialize())
        else:
            self.transport.write(head.serialize())
        if self._timer is None:
            self._timer = self.clock.callLater(self.readTimeout, self._checkTimeout)
        elif self._timer.getTime() > now + self.readTimeout:
            # Armed for a longer timeout than this connection has now (a
            # reload shortened it while the connection was pooled).
            self._timer.reset(self.readTimeout)

    def writeBody(self, data: bytes) -> None:
        if self._bodyChunked:
            self.transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.transport.write(data)

    def endBody(self) -> None:
        if self._bodyChunked:
            self.transport.write(b"0\r\n\r\n")
        self._requestSent = True
        self._sentAt = self.clock.seconds()
        self._maybeDone()

    # Receiving (sink of the response reader)

    def dataReceived(self, data: bytes) -> None:
        self.lastActivity = self.clock.seconds()
        if self._tunnelPeer is not None:
            self._tunnelPeer.write(data)
            return
        if self.listener is None:
            # Bytes nobody asked for: the connection is out of step.
            self.transport.abortConnection()
            return
        try:
            self.reader.feed(data)
        except Refusal as refusal:
            self._fail(refusal)
        if self._quickAck is not None and self.listener is not None and self._tunnelPeer is None:
            # More of this response is due (a response read whole costs
            # no system call).
            self._acknowledgeAtOnce()
        if self._tunnelPeer is not None:
            # A 101 turned the connection into a tunnel mid-read.
            leftover = self.reader.drain()
            if leftover:
                self._tunnelPeer.write(leftover)
            return
        if self.listener is None and self.reader.buffered:
            # Bytes after the final response answer nothing: the connection
            # is out of step, pooled or not.
            self.transport.abortConnection()
            return
        if self._spliceSink is not None:
            self._maybeSplice()

    def _acknowledgeAtOnce(self) -> None:
        # Re-armed on every read: the kernel leaves quick-ACK mode by
        # itself, and asking sends an ACK that is pending.
        try:
            self._quickAck.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        except OSError:
            self._quickAck = None

    # Large bodies, socket to socket

    def spliceTo(self, sink) -> None:
        """
        Let the rest of the current Content-Length body go straight to
        C{sink} (the client's transport) by splice, when both sides allow.
        """
        self._spliceSink = sink

    def _maybeSplice(self) -> None:
        sink, self._spliceSink = self._spliceSink, None
        remaining = self.reader.bodyRemaining
        if self.listener is None or self.reader.buffered or not splice.possible(self.transport, sink, remaining):
            return
        self._splicer = splice.Splicer(self.clock, self.transport, sink, remaining, self._spliced, self._touch)
        self.listener.bodySpliced(self._splicer)
        self._splicer.start()

    def _touch(self) -> None:
        self.lastActivity = self.clock.seconds()

    def _spliced(self, error: Optional[str], errorType: Optional[str]) -> None:
        self._splicer = None
        if error is None:
            self.reader.bodyConsumed()
        else:
            self._fail(Refusal(502, error, errorType=errorType))

    def headReceived(self, head) -> None:
        self.responseBegun = True
        if 100 <= head.status < 200 and head.status != 101:
            if self._interimSince is None:
                self._interimSince = self.clock.seconds()
            self.listener.responseInterim(head)
            return
        self._interimSince = None
        self._reusable = (
            head.framing != CLOSE and head.status != 101 and wantsKeepAlive(head.version, head.headers)
        )
        self.listener.responseHead(head)
        if self.listener is None:
            # Dropped while looking at the head: nothing more is read.
            self.reader.paused = True

    def bodyReceived(self, data: bytes) -> None:
        self.listener.responseBody(data)

    def messageEnded(self) -> None:
        # Nothing after the final response is read as part of it.
        self.reader.paused = True
        self._responseDone = True
        if not self._requestSent:
            # Answered before the request body was all sent (e.g. 413):
            # the rest of the body is dropped with the connection.
            self._requestSent = True
            self._reusable = False
        listener = self.listener
        self._maybeDone()
        listener.responseEnded()

    def _maybeDone(self) -> None:
        if self._responseDone and self._requestSent and self.listener is not None:
            self.listener = None
            self.resumeProducing()
            self.lastActivity = self.clock.seconds()
            if self.pool is not None and self._reusable and not self.reader.buffered:
                self.pool.release(self)
            else:
                self.transport.loseConnection()

    def _fail(self, refusal: Refusal) -> None:
        listener, self.listener = self.listener, None
        self.transport.abortConnection()
        if listener is not None:
            listener.responseFailed(refusal)

    def _checkTimeout(self) -> None:
        self._timer = None
        if self.listener is None:
            return
        now = self.clock.seconds()
        elapsed = now - self.lastActivity
        if self._paused or (self._splicer is not None and self._splicer.writing):
            # The client is slow, not the upstream.
            elapsed = 0.0
        if self._interimSince is not None and self._requestSent:
            # Interim responses are not progress: the final head is due
            # within the read timeout of the first one (or of the request's
            # end, for a 100 Continue before a long upload).
            waited = now - max(self._interimSince, self._sentAt)
            if waited >= self.readTimeout:
                self._fail(Refusal(502, "no final response after interim responses",
                                   errorType=CONNECTION_READ_TIMEOUT))
                return
            elapsed = max(elapsed, waited)
        if elapsed >= self.readTimeout:
            self._fail(Refusal(504, "upstream timed out", errorType=CONNECTION_READ_TIMEOUT))
        else:
            self._timer = self.clock.callLater(self.readTimeout - elapsed, self._checkTimeout)

    def connectionLost(self, reason=None) -> None:
        UpstreamProtocol.openCount -= 1
        self._gone = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._splicer is not None:
            self._splicer.stop()
            self._splicer = None
        waiter, self._handshakeWaiter = self._handshakeWaiter, None
        if waiter is not None:
            waiter.errback(reason if reason is not None else Failure(ConnectionLost()))
        if self._tunnelPeer is not None:
            self._tunnelPeer.loseConnection()
            return
        if self.pool is not None:
            self.pool.forget(self)
        listener = self.listener
        if listener is None:
            return
        try:
            self.reader.connectionLost()
        except Refusal as refusal:
            self.listener = None
            listener.responseFailed(Refusal(refusal.status, "upstream closed the connection early",
                                            errorType=refusal.errorType))
            return
        if self._responseDone:
            self._maybeDone()
        elif self.listener is not None:
            self.listener = None
            tls = upstreamTLSError(reason) if reason is not None else None
            if tls is not None:
                errorType, why = tls
                listener.responseFailed(Refusal(502, f"upstream TLS {why}", errorType=errorType))
            else:
                self.closedUnanswered = True
                listener.responseFailed(Refusal(502, "upstream closed the connection before responding",
                                                errorType=CONNECTION_TERMINATED))

    # Tunnel

    def becomeTunnel(self, peer) -> None:
        """
        From now on relay raw bytes to and from C{peer}, a transport.
        """
        self.listener = None
        self._tunnelPeer = peer
        self.transport.registerProducer(peer, True)

    # IPushProducer, driven by the client's transport.  It may outlive this
    # connection: the client's side drains before it lets go, and a TLS
    # transport cannot be touched once it is lost.

    def pauseProducing(self) -> None:
        if not self._paused and not self._gone:
            self._paused = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused and not self._gone:
            self._paused = False
            self.lastActivity = self.clock.seconds()
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.listener = None
        if not self._gone:
            self.transport.abortConnection()


def isIdempotent(method: bytes) -> bool:
    """
    Whether a request may be sent again after a failure (RFC 9110 section
    9.2.2).
    """
    return method in (b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE")


def reusedConnectionDied(upstream: Optional[UpstreamProtocol]) -> bool:
    """
    A pooled connection the upstream closed just as it was reused, before
    a byte of an answer: a safe request can be retried on a fresh
    connection.  Not one that timed out or answered malformed: that
    upstream had the request, and would only be asked twice.
    """
    return upstream is not None and upstream.reused and upstream.closedUnanswered and not upstream.responseBegun
