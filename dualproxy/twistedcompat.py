"""
The one place that knows Twisted's (and pyOpenSSL's) private internals.

dualproxy needs a few things Twisted has no public API for: whether a TCP
transport still holds unsent bytes (a drain, an idle close and splice
depend on it), a cheaper epoll dispatch, and TLS reads sized to what is
waiting.  Each lives here, against the Twisted releases CI runs (the oldest
supported and the newest), so a Twisted upgrade that moves them fails
tests/unit/test_twistedcompat.py instead of misbehaving in production.
"""

from __future__ import annotations

import errno
import socket
from typing import Dict, Optional

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.logger import Logger

try:
    from select import EPOLLOUT

    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # not Linux
    EPollReactor = None

_log = Logger()

#: What a TCP transport must have for L{flushed}, L{pendingOutput} and
#: L{writeThrough}.
_BUFFER_FIELDS = ("dataBuffer", "offset", "_tempDataLen", "_writeDisconnected")


def bottomTransport(transport):
    """
    The transport under any TLS layers: where bytes meant to precede TLS
    are written.
    """
    while getattr(transport, "transport", None) is not None:
        transport = transport.transport
    return transport


def socketTransport(transport) -> Optional[FileDescriptor]:
    """
    The transport that owns the socket, under any TLS layers; None if there
    is none (a test's in-memory transport).
    """
    bottom = bottomTransport(transport)
    return bottom if isinstance(bottom, FileDescriptor) else None


def buffered(transport) -> bool:
    """
    Whether C{transport} is a socket transport whose buffer this module can
    read.
    """
    return all(hasattr(transport, name) for name in _BUFFER_FIELDS)


def flushed(transport) -> bool:
    """
    Whether a socket transport has handed every byte written to it to the
    kernel, so bytes sent past it (a splice, a direct send) cannot
    overtake them.
    """
    return transport._tempDataLen == 0 and transport.offset == len(transport.dataBuffer)


def tcpSocket(transport) -> Optional[socket.socket]:
    """
    The TCP socket under C{transport} and any TLS layers; None for a UNIX
    socket or an in-memory transport.
    """
    owner = socketTransport(transport)
    getHandle = getattr(owner, "getHandle", None)
    handle = getHandle() if getHandle is not None else None
    if getattr(handle, "family", None) in (socket.AF_INET, socket.AF_INET6):
        return handle
    return None


def noDelay(handle: Optional[socket.socket]) -> None:
    """
    Turn Nagle's algorithm off on a L{tcpSocket} (as nginx's
    C{tcp_nodelay}): a response's head and body written apart must not wait
    for the peer's delayed ACK of the head.  Set on the socket itself:
    Twisted's C{setTcpNoDelay} logs a traceback for a UNIX socket.
    """
    if handle is not None:
        try:
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # closed already


def canWriteThrough(transport) -> bool:
    """
    Whether L{writeThrough} may send on C{transport} directly: a plain
    socket transport (TCP, UNIX) whose buffers this module can read.
    """
    return isinstance(transport, FileDescriptor) and hasattr(transport, "socket") and buffered(transport)


def writeThrough(transport, data: bytes) -> None:
    """
    Write C{data} to a transport L{canWriteThrough} allows: straight to its
    socket while nothing is queued before it and it is open for writing,
    so a small write costs the reactor no round of write readiness; what
    the socket does not take is queued as by C{transport.write}.
    """
    if transport.connected and not transport.disconnecting and not transport._writeDisconnected and flushed(
            transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Would block, or the connection broke: the transport finds out
            # which when it writes.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def fastDispatch(reactor) -> bool:
    """
    Make an epoll reactor cheaper per event (see L{_EpollDispatch}); whether
    C{reactor} is one this applies to.
    """
    if EPollReactor is None or type(reactor) is not EPollReactor:
        return False
    _EpollDispatch(reactor).install()
    return True


class _EpollDispatch:
    """
    An epoll reactor's dispatch, mended for many small exchanges.

    Each ready socket goes to its transport directly, without the legacy
    log context (C{log.callWithLogger}) around every read and write: a
    tenth of a small request's CPU.  Only legacy C{twisted.python.log} lines
    lose their connection prefix; a failing transport is logged and
    disconnected as before.

    A connected TCP or UNIX transport that starts writing is not registered
    with epoll at once: before the next poll it is simply asked to write.
    Whatever it was given during the turn (a response's head and body)
    goes out in one send, and only what the socket does not take waits for
    write readiness: no C{epoll_ctl} pair and no extra event per response.
    A writer handed more while it writes (a pull producer) waits for write
    readiness too, so one connection cannot hold the turn for a whole file.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.selectables = reactor._selectables
        self.writes = reactor._writes
        self.readOrWrite = reactor._doReadOrWrite
        self.register = reactor.addWriter
        self.unregister = reactor.removeWriter
        self.registered = reactor.getWriters
        self.removeRegistered = reactor.removeAll
        #: Writers to ask before the next poll, in the order they started.
        self.eager: Dict[FileDescriptor, None] = {}

    def install(self) -> None:
        self.reactor.doIteration = self.doPoll
        self.reactor.addWriter = self.addWriter
        self.reactor.removeWriter = self.removeWriter
        self.reactor.getWriters = self.getWriters
        self.reactor.removeAll = self.removeAll

    def addWriter(self, writer) -> None:
        if writer in self.eager:
            return
        if isinstance(writer, tcp.Connection) and writer.connected and writer.fileno() not in self.writes:
            self.eager[writer] = None
        else:
            self.register(writer)

    def removeWriter(self, writer) -> None:
        if writer in self.eager:
            del self.eager[writer]
        else:
            self.unregister(writer)

    def getWriters(self) -> list:
        return self.registered() + list(self.eager)

    def removeAll(self) -> list:
        removed = self.removeRegistered()
        removed += [writer for writer in self.eager if writer not in removed]
        self.eager.clear()
        return removed

    def doPoll(self, timeout: Optional[float]) -> None:
        self._writeEagerly()
        try:
            events = self.reactor._poller.poll(-1 if timeout is None else timeout, len(self.selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = self.selectables.get(fd)
            if selectable is not None:
                self._dispatch(selectable, fd, event)

    def _writeEagerly(self) -> None:
        eager = self.eager
        while eager:
            writer = next(iter(eager))
            self._dispatch(writer, writer.fileno(), EPOLLOUT)
            if writer in eager:
                # The socket did not take it all (or the writer was handed
                # more as it wrote): wait for write readiness.
                del eager[writer]
                self.register(writer)

    def _dispatch(self, selectable, fd: int, event: int) -> None:
        try:
            self.readOrWrite(selectable, fd, event)
        except Exception:
            # A transport's connectionLost failed: the reactor goes on.
            _log.failure("handling an event for {selectable!r}", selectable=selectable)


#: The most plaintext one TLS record carries (RFC 8446 section 5.1).
_RECORD = 16384


class SizedConnection(SSL.Connection):
    """
    A memory-BIO TLS connection whose reads ask for what is there.

    Twisted's TLS layer reads plaintext and ciphertext 32 KiB at a time,
    and pyOpenSSL allocates a buffer of the size asked for on every call:
    on PyPy, which clears it, that was most of a small request's TLS cost
    (a 1 KiB exchange took 175 µs of CPU, 61 µs with reads sized).
    """

    def recv(self, bufsiz: int, flags: Optional[int] = None) -> bytes:
        # No more plaintext than the ciphertext waiting and what is
        # decrypted already; asking for one byte when nothing waits is
        # how to be told so (WantReadError).
        waiting = _lib.BIO_get_mem_data(self._into_ssl, _ffi.NULL) + _lib.SSL_pending(self._ssl)
        return SSL.Connection.recv(self, min(bufsiz, _RECORD, waiting or 1), flags)

    def bio_read(self, bufsiz: int) -> bytes:
        waiting = _lib.BIO_get_mem_data(self._from_ssl, _ffi.NULL)
        return SSL.Connection.bio_read(self, min(bufsiz, waiting or 1))


#: L{SizedConnection} where the installed pyOpenSSL has what it reads.
_TLSConnection = SizedConnection if hasattr(_lib, "BIO_get_mem_data") else SSL.Connection


def tlsConnection(context: SSL.Context) -> SSL.Connection:
    """
    A memory-BIO connection for Twisted's TLS layer.
    """
    return _TLSConnection(context, None)


def pendingOutput(transport) -> Optional[tuple]:
    """
    None when nothing waits in C{transport}'s buffers (under any TLS
    layers), else a mark that changes whenever the socket takes some of it.
    """
    transport = socketTransport(transport)
    if transport is None or flushed(transport):
        return None
    return id(transport.dataBuffer), transport.offset


def handOver(transport, protocol, peer=None, host=None) -> None:
    """
    Give a socket transport to another protocol for the rest of its life,
    and, when a PROXY header named them, new addresses for C{getPeer} and
    C{getHost}: a reader of the header steps aside without staying a layer
    every read goes through.  Twisted's socket transports deliver each read
    and the loss to whatever their C{protocol} attribute holds then.
    """
    if peer is not None:
        transport.getPeer = lambda: peer
        transport.getHost = lambda: host
    transport.protocol = protocol
    protocol.makeConnection(transport)
