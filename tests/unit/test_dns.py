"""
Re-resolving backends by name: when to look again, and what a lookup's
success, change or failure does, on a fake clock with a fake DNS client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.names import dns, error
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.settings.model import Backend
from dualproxy.reverse.dns import BackendResolver, makeResolver, nextDelay, serverAddress, systemServers
from dualproxy.reverse.health import Health
from dualproxy.reverse.pool import BackendState


class NextDelayTests(SynchronousTestCase):
    def test_table(self):
        for ttls, expected in [
            ([60], 60),
            ([1], 5),
            ([0], 5),
            ([86400], 300),
            ([120, 30, 600], 30),
            ([], 5),
        ]:
            self.assertEqual(nextDelay(ttls, 5.0, 300.0), expected, ttls)


class ServersTests(SynchronousTestCase):
    def test_serverAddress(self):
        self.assertEqual(serverAddress("10.0.0.2:5353"), ("10.0.0.2", 5353))
        self.assertEqual(serverAddress("[::1]:53"), ("::1", 53))

    def test_systemServers(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver ::1\nnameserver\n")
        self.assertEqual(systemServers(path), [("10.0.0.53", 53), ("::1", 53)])

    def test_systemServersNone(self):
        """
        Without a resolv.conf, the local server is asked, as the C library does.
        """
        self.assertEqual(systemServers(self.mktemp()), [("127.0.0.1", 53)])

    def test_makeResolverConfigured(self):
        resolver = makeResolver(Clock(), ["127.0.0.1:5353", "[::1]:53"])
        self.assertEqual(resolver.servers, [("127.0.0.1", 5353), ("::1", 53)])

    def test_makeResolverSystem(self):
        """
        The system's resolver is read once: no timer re-reads resolv.conf.
        """
        clock = Clock()
        resolver = makeResolver(clock, [])
        self.assertEqual([type(r).__module__ for r in resolver.resolvers],
                         ["twisted.names.hosts", "twisted.names.client"])
        self.assertEqual(clock.getDelayedCalls(), [])


def answer(name, *records):
    """
    A lookup's result: (answers, authority, additional) for (address, ttl)
    pairs.
    """
    answers = []
    for address, ttl in records:
        if ":" in address:
            answers.append(dns.RRHeader(name, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(address, ttl)))
        else:
            answers.append(dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(address, ttl)))
    return answers, [], []


class FakeDNS:
    """
    Answers lookups from C{self.names} ({name: [(address, ttl)]}), or with
    C{self.error} if set, or never while C{self.hold} is set.
    """

    def __init__(self, names):
        self.names = names
        self.error = None
        self.hold = False
        self.held = []
        self.lookups = []

    def _lookup(self, name, ipv6):
        self.lookups.append((name, ipv6))
        if self.hold:
            self.held.append(Deferred())
            return self.held[-1]
        if self.error is not None:
            return fail(self.error)
        if name not in self.names:
            return fail(error.DNSNameError(name))
        records = [(a, ttl) for a, ttl in self.names[name] if (":" in a) == ipv6]
        return succeed(answer(name, *records))

    def lookupAddress(self, name, timeout=None):
        return self._lookup(name, False)

    def lookupIPV6Address(self, name, timeout=None):
        return self._lookup(name, True)


def backend(url):
    parts = urlsplit(url)
    health = Health(rise=1, fall=1, coolOff=1.0, passiveFailures=1)
    return BackendState(Backend(url, parts.scheme, parts.hostname, parts.port), health)


class BackendResolverTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.dns = FakeDNS({"app.test": [("10.0.0.1", 60)]})
        self.changed = []
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, *backends, minTtl=5.0, maxTtl=300.0):
        service = BackendResolver(self.clock, backends, self.dns, minTtl, maxTtl, self.changed.append)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def logged(self, level=None):
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "dualproxy.reverse.dns" and (level is None or e["log_level"] == level)]

    def test_addressLiteralsAtOnce(self):
        """
        A backend named by IP address is never looked up.
        """
        v4, v6 = backend("http://10.1.2.3:80"), backend("http://[::1]:8080")
        self.start(v4, v6)
        self.assertEqual((v4.addresses, v6.addresses), (("10.1.2.3",), ("::1",)))
        self.assertEqual(self.dns.lookups, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_resolvedAndRefreshedAfterTtl(self):
        app = backend("http://app.test:8080")
        self.dns.names["app.test"] = [("10.0.0.1", 60), ("fd00::1", 30)]
        self.start(app)
        self.assertEqual(app.addresses, ("10.0.0.1", "fd00::1"))
        self.assertEqual(self.dns.lookups, [("app.test", False), ("app.test", True)])
        self.clock.advance(29.9)
        self.assertEqual(len(self.dns.lookups), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.dns.lookups), 4)
        self.assertEqual(self.logged(), ["backend http://app.test:8080 now resolves to 10.0.0.1, fd00::1"])

    def test_changePickedUp(self):
        app, again = backend("http://app.test:8080"), backend("https://app.test:8443")
        self.start(app, again)
        self.assertEqual(len(self.dns.lookups), 2, "one lookup per name")
        self.dns.names["app.test"] = [("10.0.0.2", 10)]
        self.clock.advance(60)
        self.assertEqual((app.addresses, again.addresses), (("10.0.0.2",), ("10.0.0.2",)))
        self.assertEqual(self.changed, [app, again, app, again])
        self.assertEqual(self.logged()[-1],
                         "backend http://app.test:8080, https://app.test:8443 now resolves to 10.0.0.2")

    def test_reorderedIsNoChange(self):
        app = backend("http://app.test:8080")
        self.dns.names["app.test"] = [("10.0.0.1", 60), ("10.0.0.2", 60)]
        self.start(app)
        self.dns.names["app.test"] = [("10.0.0.2", 60), ("10.0.0.1", 60)]
        self.clock.advance(60)
        self.assertEqual(app.addresses, ("10.0.0.1", "10.0.0.2"))
        self.assertEqual(len(self.changed), 1)
        self.assertEqual(len(self.logged()), 1)

    def test_failureKeepsLastGood(self):
        """
        A failed lookup keeps the addresses, is logged once per spell of
        failures, and is retried after the minimum TTL.
        """
        app = backend("http://app.test:8080")
        self.start(app, minTtl=5.0)
        for failure, reason in [
            (error.DNSNameError("app.test"), "no such name"),
            (error.DNSQueryTimeoutError("app.test"), "no answer from the DNS servers"),
            (error.DNSServerError("SERVFAIL"), "the DNS server answered SERVFAIL"),
            (RuntimeError("bug"), "RuntimeError: bug"),
        ]:
            self.dns.error = failure
            self.clock.advance(60)
            self.assertEqual(app.addresses, ("10.0.0.1",))
            self.assertEqual(self.logged(LogLevel.warn)[-1],
                             f"cannot re-resolve backend http://app.test:8080, keeping 10.0.0.1: {reason}")
            lookups = len(self.dns.lookups)
            self.clock.advance(5)
            self.assertEqual(len(self.dns.lookups), lookups + 2)
        self.assertEqual(len(self.logged(LogLevel.warn)), 4)
        self.dns.error = None
        self.clock.advance(5)
        self.assertEqual(app.addresses, ("10.0.0.1",))
        self.assertEqual(self.changed, [app])
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), self.clock.seconds() + 60)

    def test_noRecords(self):
        app = backend("http://app.test:8080")
        self.dns.names["app.test"] = []
        self.start(app)
        self.assertEqual(app.addresses, ())
        self.assertEqual(self.logged(LogLevel.warn),
                         ["cannot re-resolve backend http://app.test:8080, keeping no addresses: no address records"])

    def test_oneFamilyFailing(self):
        """
        Addresses of one family are enough when the other lookup fails.
        """
        app = backend("http://app.test:8080")
        self.start(app)
        self.dns.lookupIPV6Address = lambda name, timeout=None: fail(error.DNSServerError(name))
        self.dns.names["app.test"] = [("10.0.0.3", 60)]
        self.clock.advance(60)
        self.assertEqual(app.addresses, ("10.0.0.3",))
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_stopCancelsTimer(self):
        service = self.start(backend("http://app.test:8080"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertIsNone(service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWaitsForLookups(self):
        """
        Stopping waits for lookups already sent, then does not act on them.
        """
        app = backend("http://app.test:8080")
        self.dns.hold = True
        service = self.start(app)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        for held in self.dns.held:
            held.callback(answer("app.test", ("10.0.0.9", 60)))
        self.successResultOf(stopped)
        self.assertEqual(app.addresses, ())
        self.assertEqual(self.clock.getDelayedCalls(), [])
