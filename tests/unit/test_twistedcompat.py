"""
The adapter over Twisted's internals, against the Twisted this suite runs
on (CI runs it on the oldest supported release and the newest): if a
release moves what the adapter reads, these fail, not production.
"""

from __future__ import annotations

import ast
import errno
import os
import socket

from OpenSSL import SSL

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from zope.interface import implementer

from dualproxy import twistedcompat

from ..certs import CertificateAuthority
from .sources import ADAPTER, modules

#: Twisted names only the adapter may use.
PRIVATE_NAMES = frozenset(
    ["dataBuffer", "_tempDataLen", "_tempDataBuffer", "_outboundStreamQueues", "_sendingDeferred",
     "_consumerBlocked", "_writeDisconnected", "_selectables", "_poller", "_doReadOrWrite", "_into_ssl",
     "_from_ssl"]
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


class _Recorder(Protocol):
    def __init__(self, failIn: str = "") -> None:
        self.received = []
        self.lost = []
        self.failIn = failIn

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if self.failIn == "dataReceived":
            raise ValueError("a bug in a protocol")

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)
        if self.failIn == "connectionLost":
            raise KeyError("a bug in connectionLost")


class HandOverTests(_SocketPair, SynchronousTestCase):
    """
    A PROXY header's reader gives its socket transport to the protocol
    after it.
    """

    def test_readsAndLossReachTheNewProtocol(self) -> None:
        successor = _Recorder()
        peer = IPv4Address("TCP", "192.0.2.1", 5)
        host = IPv4Address("TCP", "198.51.100.7", 443)
        twistedcompat.handOver(self.connection, successor, peer, host)
        self.assertIs(successor.transport, self.connection)
        self.assertEqual((self.connection.getPeer(), self.connection.getHost()), (peer, host))
        self.peer.send(b"GET")
        self.connection.doRead()
        self.assertEqual(successor.received, [b"GET"])
        self.connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(successor.lost), 1)

    def test_addressesKeptWithoutHeaderAddresses(self) -> None:
        before = self.connection.getPeer
        twistedcompat.handOver(self.connection, _Recorder())
        self.assertEqual(self.connection.getPeer, before)


class FastDispatchTests(SynchronousTestCase):
    """
    A private epoll reactor (not the one running the suite) with the fast
    dispatch installed, driven one iteration at a time.
    """

    def setUp(self) -> None:
        if twistedcompat.EPollReactor is None:
            raise SkipTest("no epoll here")
        self.reactor = twistedcompat.EPollReactor()
        self.sockets = []
        self.addCleanup(self.closeReactor)
        self.assertTrue(twistedcompat.fastDispatch(self.reactor))
        # The legacy per-event log context is what the dispatch leaves out.
        self.patch(log, "callWithLogger", self.fail)

    def closeReactor(self) -> None:
        self.reactor.removeAll()
        self.reactor.waker.connectionLost(None)
        self.reactor._poller.close()
        for socket_ in self.sockets:
            socket_.close()

    def connect(self, protocol: Protocol):
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        self.sockets += [ours, peer]
        connection = tcp.Connection(ours, protocol, self.reactor)
        connection.connected = 1
        protocol.makeConnection(connection)
        self.reactor.addReader(connection)
        return connection, peer

    def test_readsReachTheProtocol(self) -> None:
        protocol = _Recorder()
        self.connect(protocol)[1].send(b"hello")
        self.reactor.doIteration(1)
        self.assertEqual(protocol.received, [b"hello"])
        self.assertEqual(protocol.lost, [])

    def test_writesReachThePeer(self) -> None:
        connection, peer = self.connect(_Recorder())
        connection.write(b"queued")
        self.reactor.doIteration(1)
        self.assertEqual(peer.recv(100), b"queued")

    def test_closedPeerLosesTheConnection(self) -> None:
        protocol = _Recorder()
        self.connect(protocol)[1].close()
        self.reactor.doIteration(1)
        self.assertEqual(len(protocol.lost), 1)
        self.assertEqual(self.reactor.getReaders(), [self.reactor.waker])

    def test_failingProtocolIsLoggedAndDisconnected(self) -> None:
        protocol = _Recorder(failIn="dataReceived")
        self.connect(protocol)[1].send(b"x")
        self.reactor.doIteration(1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(protocol.lost), 1)

    def test_failingConnectionLostIsLoggedAndTheLoopGoesOn(self) -> None:
        failing, healthy = _Recorder(failIn="connectionLost"), _Recorder()
        self.connect(failing)[1].close()
        self.connect(healthy)[1].send(b"still served")
        self.reactor.doIteration(1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(healthy.received, [b"still served"])

    def test_interruptedPollIsAnEmptyIteration(self) -> None:
        class Interrupted:
            def __init__(self, number: int) -> None:
                self.number = number

            def poll(self, timeout, most):
                raise OSError(self.number, "poll")

        real = self.reactor._poller
        self.addCleanup(setattr, self.reactor, "_poller", real)
        self.reactor._poller = Interrupted(errno.EINTR)
        self.assertIsNone(self.reactor.doIteration(0))
        self.reactor._poller = Interrupted(errno.EBADF)
        self.assertRaises(OSError, self.reactor.doIteration, 0)

    def test_writeGoesOutBeforeThePollUnregistered(self) -> None:
        """
        What a connection is given in one turn leaves in one send before
        the next poll, epoll never asked about write readiness.
        """
        connection, peer = self.connect(_Recorder())
        connection.write(b"head ")
        connection.write(b"body")
        self.assertIn(connection, self.reactor.getWriters())
        self.assertNotIn(connection.fileno(), self.reactor._writes)
        self.reactor.doIteration(0)
        self.assertEqual(peer.recv(100), b"head body")
        self.assertEqual(self.reactor.getWriters(), [])
        self.assertNotIn(connection.fileno(), self.reactor._writes)

    def test_whatTheSocketRefusesWaitsForReadiness(self) -> None:
        connection, peer = self.connect(_Recorder())
        connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        size = 4 << 20
        connection.write(b"x" * size)
        self.reactor.doIteration(0)
        self.assertIn(connection.fileno(), self.reactor._writes, "registered with epoll")
        received = 0
        peer.setblocking(False)
        while received < size:
            try:
                received += len(peer.recv(1 << 20))
            except BlockingIOError:
                self.reactor.doIteration(1)
        self.assertEqual(received, size)
        self.reactor.doIteration(0)
        self.assertEqual(self.reactor.getWriters(), [])

    def test_pullProducerWaitsForReadiness(self) -> None:
        """
        A pull producer asked for more once its chunk went out is written
        again only when epoll says so: one connection cannot hold the turn
        for a whole file while its peer keeps reading.
        """
        connection, peer = self.connect(_Recorder())
        chunks = []

        @implementer(IPullProducer)
        class Chunks:
            def resumeProducing(self) -> None:
                chunks.append(1)
                connection.write(b"c" * 100)

            def stopProducing(self) -> None:
                pass

        connection.registerProducer(Chunks(), False)  # asked at once
        self.reactor.doIteration(0)
        # Once after the eager send, once after the poll's write event;
        # looping until the socket is full would be thousands of times.
        self.assertEqual(len(chunks), 3)
        self.assertEqual(peer.recv(1000), b"c" * 200)
        self.assertIn(connection, self.reactor.getWriters(), "the third chunk waits for the next turn")

    def test_closeAfterWriteFlushesFirst(self) -> None:
        protocol = _Recorder()
        connection, peer = self.connect(protocol)
        connection.write(b"last words")
        connection.loseConnection()
        self.reactor.doIteration(0)
        self.assertEqual(peer.recv(100), b"last words")
        self.assertEqual(peer.recv(100), b"", "closed")
        self.assertEqual(len(protocol.lost), 1)

    def test_removedWriterIsNotWritten(self) -> None:
        connection, peer = self.connect(_Recorder())
        connection.write(b"never")
        self.assertIn(connection, self.reactor.removeAll())
        self.assertEqual(self.reactor.getWriters(), [])
        self.reactor.doIteration(0)
        peer.setblocking(False)
        self.assertRaises(BlockingIOError, peer.recv, 100)

    def test_unconnectedWriterIsRegisteredAtOnce(self) -> None:
        connection, _ = self.connect(_Recorder())
        connection.connected = 0
        connection.startWriting()
        self.assertIn(connection.fileno(), self.reactor._writes)
        connection.stopWriting()
        self.assertNotIn(connection.fileno(), self.reactor._writes)

    def test_otherReactorsUntouched(self) -> None:
        reactor = MemoryReactorClock()
        self.assertFalse(twistedcompat.fastDispatch(reactor))
        self.assertNotIn("doIteration", vars(reactor))


class SizedConnectionTests(SynchronousTestCase):
    """
    A server and a client L{twistedcompat.tlsConnection} over memory BIOs,
    the bytes moved between them by hand as Twisted's TLS layer moves them.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        ca = CertificateAuthority(directory)
        cert, key = ca.issue("server", names=["localhost"])
        serverContext = SSL.Context(SSL.TLS_METHOD)
        serverContext.use_certificate_file(cert)
        serverContext.use_privatekey_file(key)
        self.server = twistedcompat.tlsConnection(serverContext)
        self.server.set_accept_state()
        self.client = twistedcompat.tlsConnection(SSL.Context(SSL.TLS_METHOD))
        self.client.set_connect_state()
        self.asked = []
        for _ in range(4):
            for side in (self.client, self.server):
                try:
                    side.do_handshake()
                except SSL.WantReadError:
                    pass
                self.move()

    def move(self) -> None:
        for source, sink in ((self.client, self.server), (self.server, self.client)):
            while True:
                try:
                    data = source.bio_read(2 ** 15)
                except SSL.WantReadError:
                    break
                sink.bio_write(data)

    def readAll(self, side) -> list:
        chunks = []
        while True:
            try:
                chunks.append(side.recv(2 ** 15))
            except SSL.WantReadError:
                return chunks

    def test_sizedWhereTheBindingsAllow(self) -> None:
        self.assertIsInstance(self.server, twistedcompat.SizedConnection)
        self.assertIsNotNone(self.server._into_ssl)
        self.assertIsNotNone(self.server._from_ssl)

    def test_smallMessageReadWhole(self) -> None:
        self.client.send(b"GET / HTTP/1.1\r\n\r\n")
        self.move()
        self.assertEqual(self.readAll(self.server), [b"GET / HTTP/1.1\r\n\r\n"])

    def test_readsAskForWhatWaits(self) -> None:
        """
        pyOpenSSL allocates what a read asks for: a small message must not
        cost 32 KiB buffers.
        """
        asked = []
        for name in ("recv", "bio_read"):
            real = getattr(SSL.Connection, name)
            self.patch(SSL.Connection, name, self.recording(real, name, asked))
        self.client.send(b"GET / HTTP/1.1\r\n\r\n")
        self.move()
        self.assertEqual(self.readAll(self.server), [b"GET / HTTP/1.1\r\n\r\n"])
        self.assertTrue(asked)
        self.assertLess(max(size for _, size in asked), 256, asked)

    @staticmethod
    def recording(real, name: str, asked: list):
        def read(connection, bufsiz, *args):
            asked.append((name, bufsiz))
            return real(connection, bufsiz, *args)

        return read

    def test_largeMessageReadARecordAtATime(self) -> None:
        body = bytes(range(256)) * 400
        sent = 0
        while sent < len(body):
            sent += self.server.send(body[sent:])
        self.move()
        chunks = self.readAll(self.client)
        self.assertEqual(b"".join(chunks), body)
        self.assertLessEqual(max(map(len, chunks)), 16384)

    def test_ciphertextReadExactly(self) -> None:
        self.client.send(b"x" * 100)
        ciphertext = self.client.bio_read(2 ** 15)
        self.assertGreater(len(ciphertext), 100)
        self.assertRaises(SSL.WantReadError, self.client.bio_read, 2 ** 15)

    def test_nothingWaitingIsWantRead(self) -> None:
        self.assertRaises(SSL.WantReadError, self.server.recv, 2 ** 15)
        self.assertRaises(SSL.WantReadError, self.server.bio_read, 2 ** 15)

    def test_closeNotifyStillSeen(self) -> None:
        self.client.shutdown()
        self.move()
        self.assertRaises(SSL.ZeroReturnError, self.server.recv, 2 ** 15)


class OnlyTheAdapterTests(SynchronousTestCase):
    def test_noTwistedPrivatesElsewhere(self) -> None:
        """
        No other module imports a private Twisted or pyOpenSSL module or
        reads the internals the adapter wraps.
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
                              if module.startswith(("twisted.", "OpenSSL.")) and any(
                                  part.startswith("_") for part in module.split("."))]
                elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_NAMES:
                    found.append(f"{name}:{node.lineno} .{node.attr}")
        self.assertEqual(found, [])
