"""
Relaying large Content-Length bodies with splice(2) on Linux: the bytes go
from the upstream socket through a pipe to the client socket inside the
kernel, never copied into Python.

Large bodies between plain TCP sockets spend most of their time being
copied in and out of the process; splice moves them instead.  Backpressure
is the pipe's: when the client stops reading, the pipe fills and the
upstream socket is no longer read.  Anything this cannot handle (TLS,
HTTP/2, chunked re-framing, another OS) keeps the ordinary path.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys
from typing import Callable, Optional

from twisted.internet import tcp
from twisted.internet.interfaces import IPullProducer, IReadDescriptor, IWriteDescriptor
from zope.interface import implementer

from ..http.proxystatus import HTTP_RESPONSE_INCOMPLETE, PROXY_INTERNAL_ERROR
from ..twistedcompat import buffered, flushed

SPLICE_F_MOVE = 1
SPLICE_F_NONBLOCK = 2
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20

# Below this, the set-up (a pipe, two descriptors) costs more than it saves.
THRESHOLD = 256 * 1024


def _spliceFunction() -> Optional[Callable[[int, int, int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
    if hasattr(os, "splice"):
        return lambda source, sink, count: os.splice(source, sink, count, flags=flags)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.splice
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                         ctypes.c_uint]
    function.restype = ctypes.c_ssize_t

    def splice(source: int, sink: int, count: int) -> int:
        moved = function(source, None, sink, None, count, flags)
        if moved < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        return moved

    return splice


_splice = _spliceFunction()


def possible(source, sink, length: int) -> bool:
    """
    Whether C{length} body bytes can go from C{source} to C{sink} (transports)
    by splice.
    """
    return (
        _splice is not None
        and length >= THRESHOLD
        and isinstance(source, tcp.Connection)
        and isinstance(sink, tcp.Connection)
        and buffered(sink)
    )


@implementer(IReadDescriptor, IWriteDescriptor)
class _Descriptor:
    """
    A duplicate of a transport's socket, so the reactor watches it for the
    splicer while the transport's own registration stays untouched.
    """

    def __init__(self, fd: int, ready: Callable[[], None]):
        self.fd = fd
        self.ready = ready

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        self.ready()

    doWrite = doRead

    def connectionLost(self, reason) -> None:
        pass

    def logPrefix(self) -> str:
        return "splice"


@implementer(IPullProducer)
class Splicer:
    """
    Moves C{length} bytes from C{source}'s socket to C{sink}'s, then calls
    C{done(None, None)}, or C{done(reason, errorType)} if either side
    failed (no RFC 9209 type when the client did); C{progress()} is called
    whenever bytes moved (for idle timeouts).
    """

    def __init__(self, reactor, source, sink, length: int,
                 done: Callable[[Optional[str], Optional[str]], None], progress: Callable[[], None]):
        self.reactor = reactor
        self.source = source
        self.sink = sink
        self.remaining = length
        self.done = done
        self.progress = progress
        self.inPipe = 0
        self.pipeRead = self.pipeWrite = -1
        self.reader: Optional[_Descriptor] = None
        self.writer: Optional[_Descriptor] = None
        self.reading = self.writing = False
        self.finished = False

    def start(self) -> None:
        """
        Take over once what the sink already buffered is sent: register as
        a pull producer, which the sink resumes when its buffer empties.
        """
        self.source.stopReading()
        self.sink.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.finished or self.reader is not None or not flushed(self.sink):
            return
        self.sink.unregisterProducer()
        try:
            self.pipeRead, self.pipeWrite = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                fcntl.fcntl(self.pipeWrite, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
            self.reader = _Descriptor(os.dup(self.source.fileno()), self._readable)
            self.writer = _Descriptor(os.dup(self.sink.fileno()), self._writable)
        except OSError as e:
            self._finish(f"cannot relay the body: {e.strerror}", PROXY_INTERNAL_ERROR)
            return
        self._read(True)

    def stopProducing(self) -> None:
        self.stop()

    def _read(self, on: bool) -> None:
        if on != self.reading:
            self.reading = on
            (self.reactor.addReader if on else self.reactor.removeReader)(self.reader)

    def _write(self, on: bool) -> None:
        if on != self.writing:
            self.writing = on
            (self.reactor.addWriter if on else self.reactor.removeWriter)(self.writer)

    def _readable(self) -> None:
        try:
            moved = _splice(self.reader.fd, self.pipeWrite, min(self.remaining, PIPE_SIZE - self.inPipe))
        except OSError as e:
            if e.errno != errno.EAGAIN:
                self._finish("upstream failed mid-body", HTTP_RESPONSE_INCOMPLETE)
            return
        if moved == 0:
            self._finish("upstream closed the connection early", HTTP_RESPONSE_INCOMPLETE)
            return
        self.remaining -= moved
        self.inPipe += moved
        self.progress()
        self._drain()

    def _writable(self) -> None:
        self._drain()

    def _drain(self) -> None:
        while self.inPipe:
            try:
                moved = _splice(self.pipeRead, self.writer.fd, self.inPipe)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    # The client is full: wait for it, and stop reading once
                    # the pipe is full too.
                    self._write(True)
                    self._read(self.remaining > 0 and self.inPipe < PIPE_SIZE)
                    return
                self._finish("client went away")
                return
            self.inPipe -= moved
            self.progress()
        self._write(False)
        if self.remaining:
            self._read(True)
        else:
            self._finish(None)

    def stop(self) -> None:
        """
        Give up (a side disconnected): release the descriptors.
        """
        if self.finished:
            return
        self.finished = True
        if self.reader is not None:
            self._read(False)
            self._write(False)
            for fd in (self.reader.fd, self.writer.fd, self.pipeRead, self.pipeWrite):
                os.close(fd)
        elif self.sink.producer is self:
            self.sink.unregisterProducer()

    def _finish(self, error: Optional[str], errorType: Optional[str] = None) -> None:
        if self.finished:
            return
        self.stop()
        if error is None:
            self.source.startReading()
        self.done(error, errorType)
