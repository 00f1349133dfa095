"""
Tests for L{dualproxy.reverse.balancers}: the built-in strategies' choices,
their options, and their discovery as plugins alongside third-party ones.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from random import Random
from typing import List, Sequence

import twisted.plugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dualproxy.http.message import Headers
from dualproxy.interfaces import IBalancer, IBalancerFactory
from dualproxy.plugins import findBalancers
from dualproxy.reverse.balancers import (
    ConsistentHash,
    LeastBusy,
    RandomTwo,
    RoundRobin,
    consistentHash,
    leastBusy,
    randomTwo,
    roundRobin,
)

NO_HEADERS = Headers()
PICKS = 10_000


class FakeBackend:
    def __init__(self, name: str, weight: int = 1, inFlight: int = 0):
        self.name = name
        self.weight = weight
        self.inFlight = inFlight

    def __repr__(self) -> str:
        return f"<FakeBackend {self.name} w={self.weight} f={self.inFlight}>"


def pool(*weights: int) -> List[FakeBackend]:
    return [FakeBackend("abcdefgh"[index], weight) for index, weight in enumerate(weights)]


def names(picked: Sequence[FakeBackend]) -> str:
    return "".join(backend.name for backend in picked)


class DistributionTests(SynchronousTestCase):
    """
    Over many picks of an idle pool, each backend's share is its weight's.
    """

    def assertShares(self, balancer, backends, client=lambda i: None):
        counts = Counter(
            balancer.pick(backends, client(i), NO_HEADERS).name for i in range(PICKS)
        )
        total = sum(backend.weight for backend in backends)
        for backend in backends:
            share = counts[backend.name] / PICKS
            self.assertLessEqual(
                abs(share - backend.weight / total), 0.02, f"{backend!r} got {share:.3f}"
            )

    def test_shares(self):
        for weights in [(1, 1), (5, 1, 1), (3, 2, 1, 4), (10, 1)]:
            for balancer in [RoundRobin(), RandomTwo(Random(7)), LeastBusy()]:
                self.assertShares(balancer, pool(*weights))
            self.assertShares(ConsistentHash(), pool(*weights), lambda i: f"10.{i >> 8}.{i & 255}.1")

    def test_smoothInterleaving(self):
        """
        Weights 5, 1, 1 interleave exactly as nginx does.
        """
        backends = pool(5, 1, 1)
        balancer = RoundRobin()
        picked = [balancer.pick(backends, None, NO_HEADERS) for _ in range(14)]
        self.assertEqual(names(picked), "aabacaa" * 2)

    def test_roundRobinSurvivesChangingCandidates(self):
        """
        A backend left out of some picks (down, or already tried) does not
        disturb the others' rotation, and rejoins with the score it left
        with: no burst to catch up.
        """
        a, b, c = pool(1, 1, 1)
        balancer = RoundRobin()
        picked = [balancer.pick(candidates, None, NO_HEADERS) for candidates in
                  [[a, b, c], [b, c], [b, c], [b, c], [a, b, c], [a, b, c], [a, b, c], [a, b, c]]]
        self.assertEqual(names(picked), "abcbcbca")


class SubsetTests(SynchronousTestCase):
    """
    Whatever the candidates (a retry excludes those already tried), the pick
    is one of them.
    """

    def test_memberOfCandidates(self):
        backends = pool(3, 1, 2, 5, 1)
        random = Random(3)
        headers = Headers([(b"Cookie", b"sid=42")])
        balancers = [RoundRobin(), LeastBusy(), RandomTwo(Random(1)), ConsistentHash(),
                     ConsistentHash("cookie:sid")]
        for _ in range(500):
            for backend in backends:
                backend.inFlight = random.randrange(4)
            candidates = random.sample(backends, random.randint(1, len(backends)))
            for balancer in balancers:
                client = random.choice([None, "192.0.2.1", "192.0.2.2"])
                self.assertIn(balancer.pick(candidates, client, headers), candidates)


class LoadTests(SynchronousTestCase):
    def test_leastBusySteersAway(self):
        backends = pool(1, 1, 1)
        backends[0].inFlight = 5
        balancer = LeastBusy()
        picked = [balancer.pick(backends, None, NO_HEADERS) for _ in range(100)]
        self.assertNotIn(backends[0], picked)
        self.assertEqual(Counter(names(picked)), {"b": 50, "c": 50})

    def test_leastBusyRelativeToWeight(self):
        cases = [
            # (weights, inFlight, expected)
            ((1, 3), (1, 2), "b"),
            ((1, 3), (1, 3), "ab"),
            ((2, 1), (3, 1), "b"),
            ((4, 1, 1), (2, 0, 1), "b"),
        ]
        for weights, inFlight, expected in cases:
            backends = pool(*weights)
            for backend, count in zip(backends, inFlight):
                backend.inFlight = count
            balancer = LeastBusy()
            picked = {balancer.pick(backends, None, NO_HEADERS).name for _ in range(10)}
            self.assertEqual("".join(sorted(picked)), expected, (weights, inFlight))

    def test_randomTwoAvoidsTheBusier(self):
        for seed in range(20):
            backends = pool(3, 1)
            backends[0].inFlight = 4
            self.assertIs(RandomTwo(Random(seed)).pick(backends, None, NO_HEADERS), backends[1])

    def test_randomTwoNeverPicksTheBusiest(self):
        """
        Two distinct draws mean the busiest of several is never chosen.
        """
        backends = pool(1, 1, 1, 1)
        backends[2].inFlight = 9
        balancer = RandomTwo(Random(5))
        picked = Counter(names([balancer.pick(backends, None, NO_HEADERS) for _ in range(1000)]))
        self.assertEqual(picked["c"], 0)
        self.assertEqual(set(picked), {"a", "b", "d"})

    def test_single(self):
        only = pool(1)
        for balancer in [RoundRobin(), LeastBusy(), RandomTwo(Random(0)), ConsistentHash()]:
            self.assertIs(balancer.pick(only, None, NO_HEADERS), only[0])


KEYS = [f"198.51.{i >> 8}.{i & 255}" for i in range(4000)]


class HashTests(SynchronousTestCase):
    def assignments(self, backends, keys=KEYS):
        balancer = ConsistentHash()
        return {key: balancer.pick(backends, key, NO_HEADERS).name for key in keys}

    def test_sticky(self):
        backends = pool(1, 2, 1)
        first = self.assignments(backends)
        self.assertEqual(self.assignments(backends), first)
        self.assertEqual(self.assignments(list(reversed(backends))), first)

    def test_removalRemapsOnlyItsKeys(self):
        backends = pool(1, 2, 1, 3)
        before = self.assignments(backends)
        after = self.assignments([backend for backend in backends if backend.name != "b"])
        moved = {key for key in KEYS if before[key] != after[key]}
        self.assertEqual(moved, {key for key in KEYS if before[key] == "b"})

    def test_additionTakesItsShare(self):
        backends = pool(1, 1, 1, 1)
        before = self.assignments(backends)
        after = self.assignments(backends + [FakeBackend("e")])
        moved = [key for key in KEYS if before[key] != after[key]]
        self.assertTrue(0.10 <= len(moved) / len(KEYS) <= 0.30, len(moved))
        self.assertEqual({after[key] for key in moved}, {"e"})

    def test_sources(self):
        """
        Header and cookie keys pick independently of the client address, and
        fall back to it when absent.
        """
        backends = pool(1, 1, 1, 1, 1)
        cases = [
            # (source, headers)
            ("header:X-Session", lambda value: Headers([(b"X-Session", value)])),
            ("cookie:sid", lambda value: Headers([(b"Cookie", b"theme=dark; sid=" + value)])),
            ("cookie:sid", lambda value: Headers([(b"Cookie", b"a=1"), (b"Cookie", b"sid=" + value + b"; b=2")])),
        ]
        for source, headers in cases:
            balancer = ConsistentHash(source)
            for value in [b"alpha", b"beta", b"gamma", b"delta"]:
                picked = {balancer.pick(backends, client, headers(value)).name
                          for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3", None]}
                self.assertEqual(len(picked), 1, (source, value))
            spread = {balancer.pick(backends, "192.0.2.1", headers(b"%d" % i)).name for i in range(50)}
            self.assertGreater(len(spread), 1, source)
            byClient = self.assignments(backends, ["192.0.2.1", "192.0.2.2", "192.0.2.9"])
            for client, name in byClient.items():
                self.assertEqual(balancer.pick(backends, client, Headers([(b"Cookie", b"other=1")])).name, name)

    def test_cookieNameIsExact(self):
        balancer = ConsistentHash("cookie:sid")
        backends = pool(1, 1, 1, 1, 1, 1)
        expected = balancer.pick(backends, None, Headers([(b"Cookie", b"sid=x")]))
        for cookie in [b"xsid=y; sid=x", b"sid2=y;sid=x", b" sid = x "]:
            self.assertIs(balancer.pick(backends, None, Headers([(b"Cookie", cookie)])), expected, cookie)

    def test_noKeyRoundRobin(self):
        backends = pool(1, 1, 1)
        balancer = ConsistentHash("header:x-session")
        picked = [balancer.pick(backends, None, NO_HEADERS) for _ in range(6)]
        self.assertEqual(names(picked), "abcabc")


class FactoryTests(SynchronousTestCase):
    def test_interfaces(self):
        for factory, balancerClass in [(roundRobin, RoundRobin), (leastBusy, LeastBusy),
                                       (randomTwo, RandomTwo), (consistentHash, ConsistentHash)]:
            self.assertTrue(verifyObject(IBalancerFactory, factory))
            balancer = factory({})
            self.assertIsInstance(balancer, balancerClass)
            self.assertTrue(verifyObject(IBalancer, balancer))

    def test_hashOptions(self):
        for value in ["client", "header:X-Session", "cookie:sid"]:
            self.assertIsInstance(consistentHash({"hash": value}), ConsistentHash)

    def test_invalidOptions(self):
        cases = [
            # (factory, options, message)
            (consistentHash, {"hash": "ip"}, "hash: expected client, header:NAME or cookie:NAME"),
            (consistentHash, {"hash": "header:"}, "hash: expected client, header:NAME or cookie:NAME"),
            (consistentHash, {"hash": "cookie: "}, "hash: expected client, header:NAME or cookie:NAME"),
            (consistentHash, {"hash": 3}, "hash: expected client, header:NAME or cookie:NAME"),
            (consistentHash, {"seed": 1}, "seed: unknown option for hash (known: hash)"),
            (roundRobin, {"hash": "client"}, "hash: unknown option for round-robin (known: none)"),
            (leastBusy, {"weight": 2}, "weight: unknown option for least-busy (known: none)"),
            (randomTwo, {"seed": 2}, "seed: unknown option for random-two (known: none)"),
        ]
        for factory, options, message in cases:
            error = self.assertRaises(ValueError, factory, options)
            self.assertEqual(str(error), message)


THIRD_PARTY = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from dualproxy.interfaces import IBalancer, IBalancerFactory


@implementer(IBalancer)
class AlwaysFirst:
    def pick(self, backends, client, headers):
        return backends[0]


@implementer(IPlugin, IBalancerFactory)
class AlwaysFirstFactory:
    name = "always-first"

    def __call__(self, options):
        return AlwaysFirst()


alwaysFirst = AlwaysFirstFactory()
"""


class DiscoveryTests(SynchronousTestCase):
    def test_builtins(self):
        found = findBalancers()
        for factory in [roundRobin, leastBusy, randomTwo, consistentHash]:
            self.assertIs(found[factory.name], factory)

    def test_thirdParty(self):
        """
        A dropin elsewhere on C{twisted.plugins.__path__} is found like the
        built-in ones.
        """
        dropins = os.path.join(self.mktemp(), "twisted", "plugins")
        os.makedirs(dropins)
        with open(os.path.join(dropins, "mybal.py"), "w") as module:
            module.write(textwrap.dedent(THIRD_PARTY))
        self.patch(twisted.plugins, "__path__", list(twisted.plugins.__path__) + [dropins])
        found = findBalancers()
        self.assertIn("round-robin", found)
        backends = pool(1, 5, 5)
        self.assertIs(found["always-first"]({}).pick(backends, None, NO_HEADERS), backends[0])
