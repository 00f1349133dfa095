"""
Backend health: the state machine with time passed in, and the active
checker driven by a fake clock over in-memory connections.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.relay.client import UpstreamProtocol
from dualproxy.reverse.health import Health, HealthCheck

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ERROR = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


class HealthTests(SynchronousTestCase):
    def test_activeTransitions(self):
        """
        C{fall} failures in a row take a backend down and C{rise} successes
        bring it back; a contrary result restarts the count.
        """
        T, F = True, False
        table = [
            # (rise, fall, results, what checkResult returns, final state)
            (2, 3, [T, T], [None, None], "up"),
            (2, 3, [F, F], [None, None], "up"),
            (2, 3, [F, F, F], [None, None, False], "down"),
            (2, 3, [F, F, T, F, F], [None] * 5, "up"),
            (2, 3, [F, F, F, T], [None, None, False, None], "down"),
            (2, 3, [F, F, F, T, T], [None, None, False, None, True], "up"),
            (2, 3, [F, F, F, T, F, T], [None, None, False, None, None, None], "down"),
            (2, 3, [F, F, F, F, F, T, T, F], [None, None, False, None, None, None, True, None], "up"),
            (1, 1, [F, T, F], [False, True, False], "down"),
        ]
        for rise, fall, results, changes, state in table:
            health = Health(rise=rise, fall=fall)
            self.assertEqual([health.checkResult(ok) for ok in results], changes, (rise, fall, results))
            self.assertEqual(health.state, state, (rise, fall, results))
            self.assertEqual(health.isUp(0.0), state == "up")

    def test_passiveCoolOff(self):
        """
        C{passiveFailures} consecutive request failures take a backend out
        until the cool-off has passed; a success in between resets the count.
        """
        table = [
            # (events as ("fail", now) or ("ok",), [(now, isUp)])
            ([("fail", 0.0), ("fail", 1.0)], [(1.0, True)]),
            ([("fail", 0.0), ("fail", 1.0), ("fail", 2.0)], [(2.0, False), (11.9, False), (12.0, True)]),
            ([("fail", 0.0), ("fail", 1.0), ("ok",), ("fail", 2.0), ("fail", 3.0)], [(3.0, True)]),
            ([("fail", 0.0)] * 3 + [("fail", 20.0)], [(20.0, True)]),
            ([("fail", 0.0)] * 3 + [("fail", 20.0)] * 3, [(29.0, False), (30.0, True)]),
        ]
        for events, expectations in table:
            health = Health(coolOff=10.0, passiveFailures=3)
            for event in events:
                if event[0] == "fail":
                    health.requestFailed(event[1])
                else:
                    health.requestSucceeded()
            for now, up in expectations:
                self.assertEqual(health.isUp(now), up, (events, now))
            self.assertEqual(health.state, "up")

    def test_activeDownWinsOverCoolOff(self):
        health = Health(fall=1, coolOff=5.0, passiveFailures=1)
        health.requestFailed(0.0)
        health.checkResult(False)
        self.assertFalse(health.isUp(100.0))


class RecordingHealth(Health):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.results = []

    def checkResult(self, ok):
        self.results.append(ok)
        return super().checkResult(ok)


class FakeBackend:
    def __init__(self, name="app", host="app.internal", port=8080, **healthArgs):
        self.name = name
        self.host = host
        self.port = port
        self.addresses = ()
        self.health = RecordingHealth(**healthArgs)


class Connections:
    """
    Stands in for C{connectTCP}: in-memory upstream connections, or what
    C{self.next} says to return instead.
    """

    def __init__(self, clock):
        self.clock = clock
        self.calls = []
        self.upstreams = []
        self.next = None

    def __call__(self, reactor, address, port, timeout, readTimeout, tls=None):
        self.calls.append((address, port, timeout, readTimeout, tls))
        if self.next is not None:
            return self.next()
        upstream = UpstreamProtocol(self.clock, readTimeout)
        upstream.makeConnection(StringTransport())
        self.upstreams.append(upstream)
        return succeed(upstream)


class HealthCheckTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.connections = Connections(self.clock)
        self.rounds = 0

    def checker(self, backends, **kwargs):
        check = HealthCheck(self.clock, backends, connect=self.connections, onRound=self.roundDone, **kwargs)
        check.startService()
        self.addCleanup(lambda: check.running and check.stopService())
        return check

    def roundDone(self):
        self.rounds += 1

    def test_probeRequest(self):
        """
        A probe is a plain GET on a new connection to the backend's resolved
        address, asking the server to close it.
        """
        backend = FakeBackend()
        backend.addresses = ("10.0.0.7",)
        self.checker([backend], path=b"/health", timeout=1.5)
        self.assertEqual(self.connections.calls, [("10.0.0.7", 8080, 1.5, 1.5, None)])
        self.assertEqual(
            self.connections.upstreams[0].transport.value(),
            b"GET /health HTTP/1.1\r\nHost: app.internal:8080\r\nConnection: close\r\n"
            b"User-Agent: dualproxy-health\r\n\r\n",
        )

    def test_probeHttpsOverTLS(self):
        """
        An https backend is probed over the same TLS as its requests.
        """
        backend = FakeBackend()
        backend.tls = object()
        backend.addresses = ("10.0.0.7",)
        self.checker([backend])
        self.assertIs(self.connections.calls[0][4], backend.tls)

    def test_probeHostOverride(self):
        self.checker([FakeBackend(host="::1", port=81), FakeBackend()], host=b"www.example.com")
        first, second = self.connections.upstreams
        self.assertEqual(self.connections.calls[0][0], "::1")
        self.assertIn(b"\r\nHost: www.example.com\r\n", first.transport.value())
        self.assertIn(b"\r\nHost: www.example.com\r\n", second.transport.value())

    def test_hostFieldBracketsIPv6(self):
        self.checker([FakeBackend(host="::1", port=81)])
        self.assertIn(b"\r\nHost: [::1]:81\r\n", self.connections.upstreams[0].transport.value())

    def test_outcomes(self):
        """
        Only an expected status within the timeout counts as a success, and
        the probe's connection is dropped as soon as it is decided.
        """
        table = [
            # (expectStatus, answer, result)
            ((200,), OK, True),
            ((200,), ERROR, False),
            ((200, 500), ERROR, True),
            ((200,), b"HTTP/1.1 204 No Content\r\n\r\n", False),
            ((200,), b"HTTP/1.1 100 Continue\r\n\r\n" + OK, True),
            ((200,), b"garbage\r\n\r\n", False),
        ]
        for expectStatus, answer, result in table:
            self.connections = Connections(self.clock)
            backend = FakeBackend()
            check = self.checker([backend], expectStatus=expectStatus)
            upstream = self.connections.upstreams[0]
            upstream.dataReceived(answer)
            self.assertEqual(backend.health.results, [result], answer)
            self.assertTrue(upstream.transport.disconnecting, answer)
            self.assertEqual(self.rounds, 1)
            check.stopService()
            self.rounds = 0

    def test_timeoutWaitingForHead(self):
        backend = FakeBackend()
        self.checker([backend], timeout=2.0)
        upstream = self.connections.upstreams[0]
        upstream.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.clock.advance(1.9)
        self.assertEqual(backend.health.results, [])
        self.clock.advance(0.1)
        self.assertEqual(backend.health.results, [False])
        self.assertTrue(upstream.transport.disconnecting)
        # A head arriving after the deadline changes nothing.
        upstream.dataReceived(b"Content-Length: 0\r\n\r\n")
        self.assertEqual(backend.health.results, [False])

    def test_timeoutConnecting(self):
        connecting = []
        self.connections.next = lambda: connecting.append(Deferred()) or connecting[-1]
        backend = FakeBackend()
        self.checker([backend], timeout=2.0)
        self.clock.advance(2.0)
        self.assertEqual(backend.health.results, [False])
        self.assertTrue(connecting[0].called)

    def test_connectFailed(self):
        self.connections.next = lambda: fail(ConnectionRefusedError())
        backend = FakeBackend()
        self.checker([backend])
        self.assertEqual(backend.health.results, [False])
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()], [5.0])

    def test_downAfterFallUpAfterRise(self):
        """
        Each round probes every backend once; state changes are logged once.
        """
        backend = FakeBackend(rise=2, fall=3)
        other = FakeBackend(name="other")
        answers = [ERROR, ERROR, ERROR, ERROR, OK, OK, OK]
        with capturedLogs() as events:
            self.checker([backend, other], interval=5.0)
            for index, answer in enumerate(answers):
                if index:
                    self.clock.advance(5.0)
                mine, theirs = self.connections.upstreams[-2:]
                mine.dataReceived(answer)
                theirs.dataReceived(OK)
                self.assertEqual(backend.health.state, "down" if 2 <= index <= 4 else "up", index)
        self.assertEqual(self.rounds, len(answers))
        self.assertEqual(len(self.connections.calls), 2 * len(answers))
        self.assertEqual(other.health.results, [True] * len(answers))
        changes = [(e["log_level"], e["backend"], e["state"]) for e in events if "state" in e]
        self.assertEqual(changes, [(LogLevel.warn, "app", "down"), (LogLevel.info, "app", "up")])

    def test_roundsDoNotOverlap(self):
        """
        A round waits for its slowest probe before the next begins.
        """
        self.checker([FakeBackend()], interval=1.0, timeout=3.0)
        self.clock.advance(2.0)
        self.assertEqual(len(self.connections.calls), 1)
        self.clock.advance(1.0)
        self.assertEqual(self.rounds, 1)
        self.assertEqual(len(self.connections.calls), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.connections.calls), 2)

    def test_stopService(self):
        """
        Stopping ends probing and drops probes in flight without counting
        them.
        """
        backend = FakeBackend()
        check = self.checker([backend], interval=5.0)
        self.connections.upstreams[0].dataReceived(OK)
        self.clock.advance(5.0)
        inFlight = self.connections.upstreams[1]
        check.stopService()
        self.assertTrue(inFlight.transport.disconnecting)
        self.clock.advance(60.0)
        self.assertEqual(len(self.connections.calls), 2)
        self.assertEqual(backend.health.results, [True])
        self.assertEqual(self.rounds, 1)

    def test_restart(self):
        check = self.checker([FakeBackend()], interval=5.0)
        self.connections.upstreams[0].dataReceived(OK)
        check.stopService()
        check.startService()
        self.assertEqual(len(self.connections.calls), 2)
