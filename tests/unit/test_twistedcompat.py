"""
The adapter over Twisted's internals, against the Twisted this suite runs
on (CI runs it on the oldest supported release and the newest): if a
release moves what the adapter reads, these fail, not production.
"""

from __future__ import annotations

import ast
import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dualproxy import twistedcompat

from .sources import ADAPTER, modules

#: Twisted names only the adapter may use.
PRIVATE_NAMES = frozenset(
    ["dataBuffer", "_tempDataLen", "_tempDataBuffer", "_outboundStreamQueues", "_sendingDeferred",
     "_consumerBlocked", "_writeDisconnected"]
)


class _Wrapper:
    """
    A protocol-over-transport layer, as TLS puts between a channel and its
    socket.
    """

    def __init__(self, transport):
        self.transport = transport


class _SocketPair:
    """
    A real TCP transport over a socket pair, its writes driven by hand.
    """

    def setUp(self) -> None:
        ours, self.peer = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setblocking(False)
        self.addCleanup(self.peer.close)
        self.connection = tcp.Connection(ours, Protocol(), MemoryReactor())
        self.connection.connected = 1
        self.addCleanup(ours.close)

    def drain(self) -> int:
        """
        Read what reached the peer; how many bytes.
        """
        self.peer.setblocking(False)
        total = 0
        try:
            while True:
                chunk = self.peer.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
        except BlockingIOError:
            pass
        return total


class SocketBufferTests(_SocketPair, SynchronousTestCase):
    def test_idleTransportIsFlushed(self) -> None:
        self.assertTrue(twistedcompat.buffered(self.connection))
        self.assertTrue(twistedcompat.flushed(self.connection))
        self.assertIsNone(twistedcompat.pendingOutput(self.connection))

    def test_writtenBytesArePending(self) -> None:
        self.connection.write(b"x" * 10)
        self.assertFalse(twistedcompat.flushed(self.connection))
        self.assertIsNotNone(twistedcompat.pendingOutput(self.connection))
        self.connection.doWrite()
        self.assertTrue(twistedcompat.flushed(self.connection))
        self.assertIsNone(twistedcompat.pendingOutput(self.connection))
        self.assertEqual(self.drain(), 10)

    def test_markMovesAsTheSocketTakesBytes(self) -> None:
        size = 4 << 20
        self.connection.write(b"x" * size)
        self.connection.doWrite()
        first = twistedcompat.pendingOutput(self.connection)
        self.assertIsNotNone(first, "a 4 MiB write cannot fit a 4 KiB send buffer")
        received = self.drain()
        self.connection.doWrite()
        self.assertNotEqual(twistedcompat.pendingOutput(self.connection), first)
        while not twistedcompat.flushed(self.connection):
            received += self.drain()
            self.connection.doWrite()
        received += self.drain()
        self.assertEqual(received, size)
        self.assertIsNone(twistedcompat.pendingOutput(self.connection))

    def test_pendingOutputLooksUnderLayers(self) -> None:
        layered = _Wrapper(_Wrapper(self.connection))
        self.assertIs(twistedcompat.socketTransport(layered), self.connection)
        self.connection.write(b"x")
        self.assertEqual(twistedcompat.pendingOutput(layered), twistedcompat.pendingOutput(self.connection))


class WriteThroughTests(_SocketPair, SynchronousTestCase):
    """
    Writes straight to the socket while nothing is queued, queued behind
    what is.
    """

    def test_sentAtOnce(self) -> None:
        self.assertTrue(twistedcompat.canWriteThrough(self.connection))
        twistedcompat.writeThrough(self.connection, b"x" * 10)
        self.assertTrue(twistedcompat.flushed(self.connection), "nothing left for the reactor")
        self.assertEqual(self.drain(), 10)

    def test_queuedBehindPendingBytes(self) -> None:
        self.connection.write(b"a")
        twistedcompat.writeThrough(self.connection, b"b")
        self.assertEqual(self.drain(), 0, "b may not overtake a")
        self.connection.doWrite()
        self.assertEqual(self.peer.recv(10), b"ab")

    def test_restQueuedWhenTheSocketIsFull(self) -> None:
        size = 4 << 20
        twistedcompat.writeThrough(self.connection, b"x" * size)
        self.assertFalse(twistedcompat.flushed(self.connection))
        received = self.drain()
        while not twistedcompat.flushed(self.connection):
            self.connection.doWrite()
            received += self.drain()
        self.assertEqual(received, size)

    def test_notAfterLoseConnection(self) -> None:
        self.connection.loseConnection()
        twistedcompat.writeThrough(self.connection, b"late")
        self.assertEqual(self.drain(), 0)

    def test_noTCPSocket(self) -> None:
        """
        A socket pair is not TCP: no socket to set options on.
        """
        self.assertIsNone(twistedcompat.tcpSocket(_Wrapper(self.connection)))
        self.assertIsNone(twistedcompat.tcpSocket(StringTransport()))
        twistedcompat.noDelay(None)


class NoDelayTests(SynchronousTestCase):
    def test_tcpSocket(self) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ours = socket.create_connection(listener.getsockname())
        self.addCleanup(ours.close)
        connection = tcp.Connection(ours, Protocol(), MemoryReactor())
        handle = twistedcompat.tcpSocket(_Wrapper(connection))
        self.assertIs(handle, ours)
        twistedcompat.noDelay(handle)
        self.assertTrue(ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class MemoryTransportTests(SynchronousTestCase):
    def test_noSocketNothingPending(self) -> None:
        transport = StringTransport()
        transport.write(b"unsent")
        self.assertFalse(twistedcompat.buffered(transport))
        self.assertIsNone(twistedcompat.socketTransport(_Wrapper(transport)))
        self.assertIsNone(twistedcompat.pendingOutput(transport))


class MendedH2ConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not twistedcompat.http2Available():
            raise SkipTest("the http2 extra is not installed")

    def test_overridesExistInTwisted(self) -> None:
        """
        Each method the mended connection replaces is still Twisted's to
        replace; a rename would leave ours silently unused.
        """
        base = twistedcompat.H2Connection
        for name in ("_requestDataReceived", "_requestEnded", "_requestAborted", "_sendPrioritisedData",
                     "_handleWindowUpdate", "pauseProducing", "resumeProducing"):
            self.assertTrue(callable(getattr(base, name, None)), name)
            self.assertIn(name, vars(twistedcompat.MendedH2Connection))

    def test_stateItReadsExists(self) -> None:
        connection = twistedcompat.MendedH2Connection(MemoryReactorClock())
        connection.makeConnection(StringTransport())
        self.assertEqual(connection._outboundStreamQueues, {})
        self.assertIsNone(connection._sendingDeferred)
        self.assertIsNone(connection._consumerBlocked)
        self.assertEqual(twistedcompat.activeStreams(connection), 0)
        self.assertTrue(callable(connection.priority.block))


class OnlyTheAdapterTests(SynchronousTestCase):
    def test_noTwistedPrivatesElsewhere(self) -> None:
        """
        No other module imports a private Twisted module or reads the
        internals the adapter wraps.
        """
        found = []
        for name, path in sorted(modules().items()):
            if name == ADAPTER:
                continue
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                        alias.name for alias in node.names]
                    found += [f"{name}:{node.lineno} imports {module}" for module in names
                              if module.startswith("twisted.") and any(
                                  part.startswith("_") for part in module.split("."))]
                elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                    found.append(f"{name}:{node.lineno} .{node.attr}")
        self.assertEqual(found, [])
