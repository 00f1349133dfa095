"""
File-descriptor exhaustion over real sockets: a proxy started by twistd with
a low open-file limit, filled up with idle clients.  Accepting pauses (a
client beyond the limit waits in the listen backlog, neither reset nor
closed), the clients it has keep being served, and accepting resumes once
descriptors are free again.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from dualproxy import listeners
from dualproxy.listeners import ListenerService
from .support import Origin
from .test_twistd import TwistdTestCase

# Open files the proxy may have.  Started, it holds 13 (CPython and PyPy), so
# LIMIT idle clients fill it up and leave about 15 of them in the listen
# backlog (Twisted's default: 50), where one more still fits.
LIMIT = 64

# twistd with the open-file soft limit lowered first.
LIMITED_TWISTD = f"""
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, hard))
from twisted.scripts.twistd import run
run()
"""

# Generous: how long something that should happen may take on a busy machine.
PATIENCE = 20.0

# Modest: how long to watch for something that should not happen.
GLANCE = 1.0

REQUEST = b"GET /name HTTP/1.1\r\nHost: app.test\r\n\r\n"


class _Client(Protocol):
    """
    A raw HTTP/1.1 client that tells when C{count} whole answers from the
    test origin (its name as the body) have arrived, and when it is closed.
    """

    def __init__(self):
        self.data = b""
        self.lost: defer.Deferred = defer.Deferred()
        self._waiting: list = []

    def answers(self, count: int) -> defer.Deferred:
        return self.until(lambda data: data.endswith(b"origin") and data.count(b"HTTP/1.1 ") >= count)

    def until(self, received) -> defer.Deferred:
        """
        Fires with what was received once C{received} of it is true.
        """
        done: defer.Deferred = defer.Deferred()
        self._waiting.append((received, done))
        self.dataReceived(b"")
        return done.addTimeout(PATIENCE, reactor)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for waiting in list(self._waiting):
            if waiting[0](self.data):
                self._waiting.remove(waiting)
                waiting[1].callback(self.data)

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


def connect(port: int) -> defer.Deferred:
    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Client())


class ExhaustionTests(TwistdTestCase):
    @inlineCallbacks
    def test_acceptingPausesAndResumes(self):
        """
        With every descriptor taken by idle clients: the proxy stays up and
        logs EMFILE once; the clients it has are still served, over their
        pooled upstream connection (a request needing a new one gets 503 and
        Retry-After, and the backend is not blamed); a new client is left waiting, its connection open, and is
        answered once the idle clients go.
        """
        origin = Origin()
        self.addCleanup(origin.stop)
        pid, port, child = yield self.startTwistd(
            "--mode", "reverse", "--listen", "tcp:0:interface=127.0.0.1", "--backend", f"http://{origin.address}",
            script=LIMITED_TWISTD)

        # Two keep-alive clients, served one after the other: one pooled
        # upstream connection.
        regular, other = yield defer.gatherResults([connect(port), connect(port)])
        for client in (regular, other):
            self.addCleanup(client.transport.abortConnection)
            client.transport.write(REQUEST)
            yield client.answers(1)

        exhausted = child.waitFor(b"cannot accept (EMFILE")
        idle = yield defer.gatherResults([connect(port) for _ in range(LIMIT)])
        for client in idle:
            self.addCleanup(client.transport.abortConnection)
        yield exhausted.addTimeout(PATIENCE, reactor)

        regular.transport.write(REQUEST)
        answered = yield regular.answers(2)
        self.assertEqual(answered.count(b"HTTP/1.1 200 OK"), 2, answered)

        # With the pooled connection busy, other requests need a new one:
        # each is told to come back shortly, and none counts against the
        # backend's health (more than its three passive failures here).
        other.transport.write(b"GET /held HTTP/1.1\r\nHost: app.test\r\n\r\n")
        yield origin.whenHeld().addTimeout(PATIENCE, reactor)
        for sent in range(3, 7):
            regular.transport.write(REQUEST)
            answered = yield regular.until(lambda data: data.count(b"HTTP/1.1 ") == sent and data.endswith(b"\n"))
            last = answered[answered.rindex(b"HTTP/1.1 "):]
            self.assertTrue(last.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), last)
            self.assertIn(b"Retry-After: 1\r\n", last)
            self.assertIn(b"this process has no file descriptor left", last)
        origin.release()
        yield other.until(lambda data: data.endswith(b"0\r\n\r\n"))

        waiting = yield connect(port)
        self.addCleanup(waiting.transport.abortConnection)
        waiting.transport.write(REQUEST)
        yield deferLater(reactor, GLANCE)
        self.assertEqual((waiting.data, waiting.lost.called), (b"", False))
        self.assertFalse(child.ended.called)
        self.assertEqual(child.output.count(b"EMFILE"), 1, child.output.decode(errors="replace"))

        for client in idle:
            client.transport.abortConnection()
        answered = yield waiting.answers(1)
        self.assertTrue(answered.startswith(b"HTTP/1.1 200 OK"), answered)
        self.assertIn(b"accepting again after", child.output)
        self.assertNotIn(b"Traceback", child.output)


class ListeningTests(TestCase):
    @inlineCallbacks
    def test_realPortServesThroughPausingSocket(self):
        """
        A TCP listener's socket is the pausing one, and the port works
        through it as before: its address, its clients, its closing.
        """
        listener = ListenerService("tcp:0:interface=127.0.0.1", Factory.forProtocol(_Echo), reactor)
        listener.startService()
        self.assertIsNotNone(listener.backoff)
        self.assertEqual(listener.port.getHost().host, "127.0.0.1")
        client = yield connect(listener.portNumber())
        client.transport.write(b"ping")
        yield client.until(lambda data: data == b"ping")
        port = listener.portNumber()
        yield listener.stopService()
        yield self.assertFailure(connect(port), ConnectionRefusedError)
        client.transport.loseConnection()
        yield client.lost

    @inlineCallbacks
    def test_adoptedSocketPausesToo(self):
        """
        A worker's listener, on a socket its supervisor handed down, gets
        the pausing socket as well.
        """
        handed = socket.socket()
        self.addCleanup(handed.close)
        handed.bind(("127.0.0.1", 0))
        handed.listen(5)
        description = f"tcp:{handed.getsockname()[1]}:interface=127.0.0.1"
        self.patch(listeners, "ADOPTED", {description: handed.fileno()})
        listener = ListenerService(description, Factory.forProtocol(_Echo), reactor)
        listener.startService()
        self.addCleanup(listener.stopService)
        self.assertIsNotNone(listener.backoff)
        client = yield connect(listener.portNumber())
        client.transport.write(b"pong")
        yield client.until(lambda data: data == b"pong")
        client.transport.loseConnection()
        yield client.lost


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
