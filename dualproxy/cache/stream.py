"""
The cache's moving parts between a relay and a client: sending a stored
entry with backpressure, and the response sinks a relay writes into when
the cache stands in the way (storing, revalidating, invalidating).
"""

from __future__ import annotations

from typing import Iterator, Optional

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ..http.message import ResponseHead
from ..interfaces import IResponseSink

_log = Logger()


@implementer(IPushProducer)
class EntrySender:
    """
    Streams stored body chunks to an exchange, pausing while the client's
    transport is full: a slow client costs no memory beyond the store's.
    """

    def __init__(self, exchange, chunks: Iterator[bytes]):
        self.exchange = exchange
        self.chunks = chunks
        self._paused = False
        self._sending = False

    def start(self, direct: bool = False) -> None:
        """
        Send the body; C{direct}ly, for a small one, without registering
        as the transport's producer.
        """
        if direct:
            self._paused = None
        else:
            self.exchange.registerProducer(self)
        self._send()

    def _send(self) -> None:
        if self._sending:
            return
        self._sending = True
        exchange = self.exchange
        registered = self._paused is not None
        try:
            while not self._paused and not exchange.finished:
                try:
                    chunk = next(self.chunks, None)
                except OSError as e:
                    # The entry went away under us (disk store cleaned).
                    _log.warn("cache entry unreadable mid-response: {error}", error=e)
                    if registered:
                        exchange.unregisterProducer()
                    exchange.abort()
                    return
                if chunk is None:
                    if registered:
                        exchange.unregisterProducer()
                    exchange.finish()
                    return
                exchange.write(chunk)
        finally:
            self._sending = False

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._send()

    def stopProducing(self) -> None:
        self._paused = True


@implementer(IResponseSink)
class Passthrough:
    """
    A response sink that hands everything to the client's exchange; the
    cache's sinks override what they need to see.
    """

    def __init__(self, exchange):
        self.exchange = exchange

    def writeInterim(self, head: ResponseHead) -> None:
        self.exchange.writeInterim(head)

    def writeHead(self, head: ResponseHead) -> None:
        self.exchange.writeHead(head)

    def passesBodyThrough(self) -> bool:
        return self.exchange.passesBodyThrough()

    def write(self, data: bytes) -> None:
        self.exchange.write(data)

    def registerProducer(self, producer) -> None:
        self.exchange.registerProducer(producer)

    def unregisterProducer(self) -> None:
        self.exchange.unregisterProducer()

    def finish(self) -> None:
        self.exchange.finish()

    def refuse(self, status: int, reason: str, headers=()) -> None:
        self.exchange.refuse(status, reason, headers)

    def clientGone(self) -> None:
        pass


@implementer(IResponseSink)
class Background:
    """
    The client side of a revalidation nobody waits for (RFC 5861
    stale-while-revalidate): it has no connection, and when done it tells
    the mode's handler like any finished exchange so accounting (backend
    in-flight counts, the access log) stays whole.
    """

    clientHost = None
    client = None
    user = None
    channel = None
    onAbort = None
    responseStarted = False
    aborted = False
    bytesReceived = 0
    errorType = None

    def __init__(self, request, handler, clock):
        self.request = request
        self.context = handler.newContext()
        self.handler = handler
        self.started = clock.seconds()
        self.status = 0
        self.bytesSent = 0
        self.reason: Optional[str] = "background revalidation"
        self.finished = False

    def writeInterim(self, head: ResponseHead) -> None:
        pass

    def writeHead(self, head: ResponseHead) -> None:
        self.status = head.status

    def passesBodyThrough(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.bytesSent += len(data)

    def registerProducer(self, producer) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.handler.exchangeDone(self)

    def refuse(self, status: int, reason: str, headers=()) -> None:
        self.status = status
        self.reason = "background revalidation: " + reason
        self.finish()

    abort = finish
