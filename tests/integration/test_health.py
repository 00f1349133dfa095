"""
Active health checks over real sockets on 127.0.0.1: a closed port goes
down, a live backend stays up, and a backend that starts listening again
comes back.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from dualproxy.reverse.health import Health, HealthCheck


class _Tracked(WrappingFactory):
    """
    A server factory that can say when all its connections have closed, so
    a test ends with a clean reactor without sleeping.
    """

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self._waiting = []

    def unregisterProtocol(self, protocol):
        super().unregisterProtocol(protocol)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for done in waiting:
                done.callback(None)

    def whenIdle(self) -> Deferred:
        if not self.protocols:
            return succeed(None)
        done: Deferred = Deferred()
        self._waiting.append(done)
        return done


class _Ok(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"ok"


class _Backend:
    def __init__(self, name, port):
        self.name = name
        self.host = "127.0.0.1"
        self.port = port
        self.addresses = ()
        self.health = Health(rise=2, fall=3)


class HealthCheckTests(TestCase):
    timeout = 30

    def setUp(self):
        self.rounds = 0
        self._waiters = []

    def listen(self, port=0):
        root = resource.Resource()
        root.putChild(b"health", _Ok())
        site = server.Site(root, timeout=None)
        site.noisy = False
        factory = _Tracked(site)
        listening = reactor.listenTCP(port, factory, interface="127.0.0.1")

        @inlineCallbacks
        def close():
            yield factory.whenIdle()
            yield listening.stopListening()

        self.addCleanup(close)
        return listening

    def roundDone(self):
        self.rounds += 1
        for condition, done in list(self._waiters):
            if condition():
                self._waiters.remove((condition, done))
                done.callback(self.rounds)

    def afterRound(self, condition) -> Deferred:
        """
        Fires with the round count after the first round that leaves
        C{condition()} true.
        """
        done: Deferred = Deferred()
        self._waiters.append((condition, done))
        return done

    @inlineCallbacks
    def test_downAndBackUp(self):
        live = _Backend("live", self.listen().getHost().port)
        gone = self.listen()
        dead = _Backend("dead", gone.getHost().port)
        yield gone.stopListening()

        check = HealthCheck(reactor, [live, dead], path=b"/health", interval=0.1, timeout=5.0, onRound=self.roundDone)
        check.startService()
        self.addCleanup(check.stopService)

        rounds = yield self.afterRound(lambda: dead.health.state == "down")
        self.assertEqual(rounds, dead.health.fall)
        self.assertEqual(live.health.state, "up")

        # Listening between rounds: the very next probe finds it.
        self.listen(dead.port)
        rounds = yield self.afterRound(lambda: dead.health.state == "up")
        self.assertEqual(rounds, dead.health.fall + dead.health.rise)
        self.assertEqual(live.health.state, "up")
