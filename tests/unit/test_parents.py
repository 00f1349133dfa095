"""
L{dualproxy.forward.parents}: rule matching, pool order and parent health,
driven directly with the time passed in.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.config import fromDict
from dualproxy.forward.parents import Egress, ParentHealth, ParentPool
from dualproxy.policy.acl import Destinations


def egress(**forward) -> Egress:
    return Egress(fromDict({"forward": forward}).forward)


def names(parents) -> list:
    return [parent.health.name for parent in parents]


class DestinationsTests(SynchronousTestCase):
    def test_exactName(self):
        destinations = Destinations(["example.com"])
        self.assertTrue(destinations.matches("example.com"))
        self.assertTrue(destinations.matches("Example.COM."))
        self.assertFalse(destinations.matches("www.example.com"))
        self.assertFalse(destinations.matches("badexample.com"))

    def test_dotDomainIsTheDomainAndBelow(self):
        """
        C{.example.com} is the domain and every name below it, as in
        C{deny_destinations} (Squid's dstdomain).
        """
        destinations = Destinations([".example.com"])
        for host in ("example.com", "www.example.com", "a.b.example.com"):
            self.assertTrue(destinations.matches(host), host)
        self.assertFalse(destinations.matches("badexample.com"))

    def test_starDomainIsOnlyBelow(self):
        destinations = Destinations(["*.example.com"])
        self.assertTrue(destinations.matches("www.example.com"))
        self.assertTrue(destinations.matches("a.b.example.com"))
        self.assertFalse(destinations.matches("example.com"))

    def test_networksMatchLiterals(self):
        destinations = Destinations(["10.0.0.0/8", "2001:db8::/32"])
        self.assertTrue(destinations.matches("10.1.2.3"))
        self.assertTrue(destinations.matches("[2001:db8::1]"))
        self.assertTrue(destinations.matches("0x0a.1"))  # a legacy form a resolver takes
        self.assertFalse(destinations.matches("11.0.0.1"))
        self.assertFalse(destinations.matches("10.example.com"))

    def test_namesDoNotMatchLiterals(self):
        self.assertFalse(Destinations(["127.0.0.1.example"]).matches("127.0.0.1"))


class HealthTests(SynchronousTestCase):
    def test_downThenOneRetryThenUp(self):
        """
        A failure takes a parent down for C{retry} seconds; then one
        request may try it, the others wait another C{retry}; a success
        brings it back.  Each change is reported once.
        """
        health = ParentHealth("p:1", retry=30)
        self.assertTrue(health.available(0))
        self.assertTrue(health.failed(10))
        self.assertFalse(health.failed(11))
        self.assertEqual(health.failures, 2)
        self.assertFalse(health.available(40))
        self.assertTrue(health.available(41))
        health.trying(41)
        self.assertFalse(health.available(41))
        self.assertTrue(health.available(71))
        self.assertTrue(health.succeeded())
        self.assertFalse(health.succeeded())
        self.assertTrue(health.available(72))

    def test_tryingAnUpParentChangesNothing(self):
        health = ParentHealth("p:1", retry=30)
        health.trying(5)
        self.assertTrue(health.available(5))


class PoolTests(SynchronousTestCase):
    def pool(self, selection="first") -> ParentPool:
        return egress(parents=["http://a:1", "http://b:2", "http://c:3"], parent_selection=selection).default

    def test_firstInOrder(self):
        pool = self.pool()
        self.assertEqual(names(pool.candidates(0)), ["a:1", "b:2", "c:3"])
        self.assertEqual(names(pool.candidates(0)), ["a:1", "b:2", "c:3"])

    def test_downParentsSkipped(self):
        pool = self.pool()
        pool.parents[0].health.failed(0)
        self.assertEqual(names(pool.candidates(1)), ["b:2", "c:3"])
        self.assertEqual(names(pool.candidates(30)), ["a:1", "b:2", "c:3"])

    def test_roundRobin(self):
        pool = self.pool("round-robin")
        firsts = [names(pool.candidates(0))[0] for _ in range(4)]
        self.assertEqual(firsts, ["a:1", "b:2", "c:3", "a:1"])
        self.assertEqual(names(pool.candidates(0)), ["b:2", "c:3", "a:1"])

    def test_allDownTriesTheOneThatFailedLongestAgo(self):
        """
        With every parent down, a request still tries one: the one that
        failed longest ago, and the next request the next oldest.
        """
        pool = self.pool()
        for parent, when in zip(pool.parents, (5, 1, 3)):
            parent.health.failed(when)
        chosen = pool.candidates(10)
        self.assertEqual(names(chosen), ["b:2"])
        chosen[0].health.trying(10)
        self.assertEqual(names(pool.candidates(10)), ["c:3"])


class EgressTests(SynchronousTestCase):
    def test_noParents(self):
        self.assertIsNone(egress().poolFor("example.com"))

    def test_parentShorthand(self):
        pool = egress(parent="https://p:3128").poolFor("example.com")
        self.assertEqual(names(pool.parents), ["p:3128"])
        self.assertTrue(pool.parents[0].settings.tls)

    def test_firstMatchingRuleWins(self):
        chosen = egress(
            parents=["http://default:1"],
            parent_rules=[
                {"destinations": ["intranet.example", "10.0.0.0/8"], "direct": True},
                {"destinations": [".de"], "parents": ["http://de:1"]},
                {"destinations": ["*.example.de", ".fr"], "parents": ["http://fr:1"]},
            ],
        )
        self.assertIsNone(chosen.poolFor("intranet.example"))
        self.assertIsNone(chosen.poolFor("10.9.9.9"))
        self.assertEqual(names(chosen.poolFor("www.example.de").parents), ["de:1"])
        self.assertEqual(names(chosen.poolFor("paris.fr").parents), ["fr:1"])
        self.assertEqual(names(chosen.poolFor("example.com").parents), ["default:1"])

    def test_rulesWithoutDefaultGoDirect(self):
        chosen = egress(parent_rules=[{"destinations": [".de"], "parents": ["http://de:1"]}])
        self.assertIsNone(chosen.poolFor("example.com"))

    def test_healthSharedPerHostAndPort(self):
        """
        Entries for the same parent share its health (one metric, one
        down mark), but keep their own credentials and pooled connections.
        """
        chosen = egress(parents=["http://a:1"],
                        parent_rules=[{"destinations": [".de"], "parents": ["http://u:p@a:1", "http://b:2"]}])
        plain = chosen.poolFor("example.com").parents[0]
        withLogin = chosen.poolFor("x.de").parents[0]
        self.assertIs(plain.health, withLogin.health)
        self.assertNotEqual(plain.key, withLogin.key)
        self.assertEqual(sorted(chosen.health), ["a:1", "b:2"])

    def test_keysPerScheme(self):
        chosen = egress(parents=["http://a:1"], parent_rules=[{"destinations": [".de"], "parents": ["https://a:1"]}])
        self.assertNotEqual(chosen.poolFor("example.com").parents[0].key, chosen.poolFor("x.de").parents[0].key)

    def test_retryFromSettings(self):
        chosen = egress(parents=["http://a:1"], parent_retry=5)
        self.assertEqual(chosen.health["a:1"].retry, 5.0)
