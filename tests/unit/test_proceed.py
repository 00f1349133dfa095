"""
L{proceed}: how an exchange goes on after waiting for a shared store.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.core.exchange import proceed
from dualproxy.http.message import Refusal, RequestHead


class _Exchange:
    finished = False

    def __init__(self):
        self.request = RequestHead(b"GET", b"/", b"HTTP/1.1")
        self.refused = []

    def refuse(self, status, reason, headers=(), errorType=None):
        self.refused.append((status, reason))


class ProceedTests(SynchronousTestCase):
    def setUp(self):
        self.exchange = _Exchange()
        self.steps = []

    def step(self, value, extra):
        self.steps.append((value, extra))

    def test_plainValueAtOnce(self):
        proceed(self.exchange, 1, self.step, "x")
        self.assertEqual(self.steps, [(1, "x")])

    def test_deferredWhenItFires(self):
        d = defer.Deferred()
        proceed(self.exchange, d, self.step, "x")
        self.assertEqual(self.steps, [])
        d.callback(2)
        self.assertEqual(self.steps, [(2, "x")])

    def test_notTakenOnceTheExchangeIsOver(self):
        d = defer.Deferred()
        proceed(self.exchange, d, self.step, "x")
        self.exchange.finished = True
        d.callback(2)
        self.assertEqual((self.steps, self.exchange.refused), ([], []))

    def test_refusalAnswered(self):
        def refusing(value):
            raise Refusal(429, "slow down")

        d = defer.Deferred()
        proceed(self.exchange, d, refusing)
        d.callback(None)
        proceed(self.exchange, defer.fail(Refusal(503, "store down")), self.step, "x")
        self.assertEqual(self.exchange.refused, [(429, "slow down"), (503, "store down")])

    def test_bugAnswers500AndIsLogged(self):
        def broken(value):
            raise ZeroDivisionError()

        d = defer.Deferred()
        proceed(self.exchange, d, broken)
        d.callback(None)
        self.assertEqual(self.exchange.refused, [(500, "the proxy failed to handle this request")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
