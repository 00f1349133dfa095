"""
The parts of dualproxy.acme that need no CA: the renewal schedule, the
HTTP-01 answers in the routing tree, certificate storage, the renewal
service against a scripted client on a clock, and the [tls.acme] table.
"""

from __future__ import annotations

import os
import stat
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.acme.challenges import WELL_KNOWN, ChallengeTokens
from dualproxy.acme.renewal import renewalTime, retryDelay
from dualproxy.acme.service import AcmeService, acmeDomains, placeholderPair
from dualproxy.config import ConfigError, fromDict
from dualproxy.http.message import Refusal, RequestHead
from dualproxy.routing.targets import NotFound, RoutingRequest
from dualproxy.routing.tree import VirtualHosts, route
from dualproxy.settings.model import AcmeSettings
from dualproxy.tls import validity

from ..certs import CertificateAuthority
from .test_cache import FakeExchange

try:
    from dualproxy.acme.client import (
        CertificatePaths,
        certificateLink,
        loadOrCreateKey,
        storePair,
        storedPaths,
        writePrivate,
    )
except ImportError:
    writePrivate = None

DAY = 86400.0


class RenewalTests(SynchronousTestCase):
    def test_twoThirdsOfLifetime(self):
        self.assertEqual(renewalTime(0.0, 90 * DAY), 60 * DAY)
        self.assertEqual(renewalTime(10.0, 10.0 + 90 * DAY, fraction=0.5), 10.0 + 45 * DAY)

    def test_backoffDoublesToADay(self):
        self.assertEqual([retryDelay(n, 0) for n in range(1, 6)], [60, 120, 240, 480, 960])
        self.assertEqual(retryDelay(11, 0), 61440)
        self.assertEqual(retryDelay(12, 0), 86400)
        self.assertEqual(retryDelay(10 ** 6, 0), 86400)

    def test_jitterShortensByAtMostAQuarter(self):
        self.assertEqual(retryDelay(1, 0.5), 52.5)
        self.assertGreater(retryDelay(20, 0.999999), 86400 * 0.75)
        self.assertLessEqual(retryDelay(20, 0.999999), 86400)

    def test_backoffRejectsNonsense(self):
        self.assertRaises(ValueError, retryDelay, 0, 0)
        self.assertRaises(ValueError, retryDelay, 1, 1)
        self.assertRaises(ValueError, retryDelay, 1, -0.1)


class ChallengeTreeTests(SynchronousTestCase):
    """
    HTTP-01 in the routing tree: every host answers a token in progress
    before its own routes, and leaves everything else to them.
    """

    def setUp(self):
        self.tokens = ChallengeTokens()
        self.tokens.publish("example.com", "tok-EN_1", "tok-EN_1.thumbprint")
        self.tree = VirtualHosts()
        self.tree.wellKnown[WELL_KNOWN] = self.tokens.target
        self.site = NotFound()
        self.tree.tree("example.com").add("/", self.site)

    def answer(self, path: bytes, method: bytes = b"GET", host: str = "example.com"):
        exchange = FakeExchange(RequestHead(method, path, b"HTTP/1.1"))
        request = RoutingRequest(exchange, host, path, b"")
        target = route(self.tree, request)
        if target is self.site:
            return None
        target.serve(request)
        return exchange

    def test_answersToken(self):
        for host in ("example.com", "other.example"):
            exchange = self.answer(b"/.well-known/acme-challenge/tok-EN_1", host=host)
            self.assertEqual((exchange.head.status, b"".join(exchange.body), exchange.finished),
                             (200, b"tok-EN_1.thumbprint", True))
            self.assertEqual(exchange.head.headers.get(b"cache-control"), b"no-store")
            self.assertEqual(exchange.context.route, "acme-challenge")

    def test_otherPathsGoToTheRoutes(self):
        for path in [b"/", b"/.well-known/acme-challenge/", b"/.well-known/acme-challenge/other",
                     b"/.well-known/acme-challenge/tok-EN_1/x", b"/.well-known/acme-challenge/..",
                     b"/x/.well-known/acme-challenge/tok-EN_1", b"/.well-known/other/tok-EN_1"]:
            self.assertIsNone(self.answer(path), path)

    def test_withdrawn(self):
        self.tokens.withdraw("example.com", "tok-EN_1")
        self.tokens.withdraw("example.com", "never-published")
        self.assertEqual(len(self.tokens), 0)
        self.assertIsNone(self.answer(b"/.well-known/acme-challenge/tok-EN_1"))

    def test_onlyGetAndHead(self):
        self.assertEqual(self.answer(b"/.well-known/acme-challenge/tok-EN_1", method=b"HEAD").head.status, 200)
        refusal = self.assertRaises(Refusal, self.answer, b"/.well-known/acme-challenge/tok-EN_1", method=b"POST")
        self.assertEqual(refusal.status, 405)


class StorageTests(SynchronousTestCase):
    def setUp(self):
        if writePrivate is None:
            self.skipTest("the acme extra is not installed")
        self.directory = os.path.abspath(self.mktemp())

    def test_writePrivateIs0600AndLeavesNoTemporary(self):
        path = os.path.join(self.directory, "a", "key.pem")
        writePrivate(path, b"one")
        writePrivate(path, b"two")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["key.pem"])

    def test_loadOrCreateKeyKeepsTheKey(self):
        path = os.path.join(self.directory, "account", "key.pem")
        first = loadOrCreateKey(path)
        self.assertIn(b"PRIVATE KEY", first)
        self.assertEqual(loadOrCreateKey(path), first)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_certificateLink(self):
        self.assertEqual(certificateLink("/s", "example.com"), "/s/certs/example.com")
        for bad in ["", "../x", "a/b", ".hidden"]:
            self.assertRaises(ValueError, certificateLink, "/s", bad)

    def test_pairReplacedTogether(self):
        """
        A certificate and its key live in one directory the link names:
        a new pair is a new directory, and the old one goes.
        """
        self.assertIsNone(storedPaths(self.directory, "example.com"))
        first = storePair(self.directory, "example.com", b"key 1", b"cert 1")
        self.assertEqual(storedPaths(self.directory, "example.com"), first)
        second = storePair(self.directory, "example.com", b"key 2", b"cert 2")
        self.assertEqual(storedPaths(self.directory, "example.com"), second)
        self.assertNotEqual(os.path.dirname(first.key), os.path.dirname(second.key))
        self.assertFalse(os.path.exists(os.path.dirname(first.key)))
        with open(os.path.join(self.directory, "certs", "example.com", "key.pem"), "rb") as f:
            self.assertEqual(f.read(), b"key 2")
        self.assertEqual(stat.S_IMODE(os.stat(second.key).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(second.certificate).st_mode), 0o644)
        self.assertEqual(sorted(os.listdir(os.path.join(self.directory, "certs"))),
                         sorted(["example.com", os.path.basename(os.path.dirname(second.key))]))


class ScriptedClient:
    """
    An ACME client whose orders the test settles.
    """

    def __init__(self):
        self.orders = []

    def obtain(self, names):
        d = defer.Deferred()
        self.orders.append((list(names), d))
        return d


class ServiceFixture:
    """
    A storage, a test CA that issues into it, a clock at the present and a
    scripted client, for tests of L{AcmeService}.
    """

    def setUp(self):
        if writePrivate is None:
            self.skipTest("the acme extra is not installed")
        self.storage = os.path.abspath(self.mktemp())
        authorities = os.path.abspath(self.mktemp())
        os.makedirs(authorities)
        self.authority = CertificateAuthority(authorities)
        self.clock = Clock()
        self.clock.advance(time.time())
        self.client = ScriptedClient()

    def issued(self, name: str) -> CertificatePaths:
        cert, key = self.authority.issue(name, [name])
        with open(cert, "rb") as c, open(key, "rb") as k:
            return storePair(self.storage, name, k.read(), c.read())


class ServiceTests(ServiceFixture, SynchronousTestCase):
    def service(self, names=("example.com",)):
        settings = AcmeSettings("https://ca.test/dir", self.storage)
        service = AcmeService(settings, names, self.clock, self.client, jitter=lambda: 0.0)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_ordersAtOnceThenAtTwoThirds(self):
        service = self.service()
        self.assertEqual(self.client.orders, [])
        self.assertIs(service.book.get("example.com"), None)
        self.assertEqual(service.book.placeholder.names, ("example.com",))
        self.clock.advance(0)
        (names, d), = self.client.orders
        self.assertEqual(names, ["example.com"])
        generation = service.book.generation
        paths = self.issued("example.com")
        d.callback(paths)
        pair = service.book.get("example.com")
        self.assertEqual(pair.certPath, paths.certificate)
        self.assertEqual(service.book.generation, generation + 1)
        notBefore, notAfter = validity(pair.chain[0])
        state, = service.describe()
        self.assertEqual(state, {"name": "example.com", "not_after": notAfter,
                                 "renew_at": notBefore + (notAfter - notBefore) * 2 / 3,
                                 "failures": 0, "error": None})
        self.clock.advance(state["renew_at"] - self.clock.seconds() - 1)
        self.assertEqual(len(self.client.orders), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.client.orders), 2)

    def test_failureBacksOff(self):
        service = self.service()
        self.clock.advance(0)
        self.client.orders[0][1].errback(RuntimeError("urn:ietf:params:acme:error:connection\n  refused"))
        state, = service.describe()
        self.assertEqual((state["failures"], state["error"]),
                         (1, "urn:ietf:params:acme:error:connection refused"))
        self.assertEqual(state["renew_at"], self.clock.seconds() + 60)
        self.clock.advance(59)
        self.assertEqual(len(self.client.orders), 1)
        self.clock.advance(1)
        self.client.orders[1][1].errback(RuntimeError("again"))
        self.assertEqual(service.describe()[0]["renew_at"], self.clock.seconds() + 120)
        self.clock.advance(120)
        self.client.orders[2][1].callback(self.issued("example.com"))
        self.assertEqual(service.describe()[0]["failures"], 0)
        self.assertIsNone(service.describe()[0]["error"])

    def test_storedCertificateServedUntilDue(self):
        paths = self.issued("example.com")
        service = self.service()
        self.assertEqual(service.book.get("example.com").certPath, paths.certificate)
        self.clock.advance(0)
        self.assertEqual(self.client.orders, [])
        self.clock.advance(service.describe()[0]["renew_at"] - self.clock.seconds())
        self.assertEqual(len(self.client.orders), 1)

    def test_storedForAnotherNameIgnored(self):
        """
        A stored certificate that does not cover its name (a copied
        directory) is not presented, and one is ordered.
        """
        wrong = self.issued("other.example")
        os.symlink(os.path.dirname(wrong.key), os.path.join(self.storage, "certs", "example.com"))
        service = self.service()
        self.assertIsNone(service.book.get("example.com"))
        self.clock.advance(0)
        self.assertEqual(len(self.client.orders), 1)

    def test_renewWhileOrderingOrdersOnce(self):
        service = self.service()
        self.clock.advance(0)
        service.renew("example.com")
        self.assertEqual(len(self.client.orders), 1)

    def test_settledAfterStopIgnored(self):
        service = self.service()
        self.clock.advance(0)
        service.stopService()
        self.client.orders[0][1].callback(self.issued("example.com"))
        self.assertIsNone(service.book.get("example.com"))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PlaceholderTests(SynchronousTestCase):
    def test_selfSignedForTheNames(self):
        pair = placeholderPair(["a.example", "b.example"])
        self.assertEqual(pair.names, ("a.example", "b.example"))
        self.assertEqual(pair.chain[0].issuer, pair.chain[0].subject)


class SettingsTests(SynchronousTestCase):
    def parse(self, acme: dict, mode: str = "reverse", **more):
        return fromDict(dict(mode=mode, tls={"listen": ["tcp:8443"], "acme": acme}, **more), base="/etc/dp")

    def error(self, *args, **kw):
        return self.assertRaises(ConfigError, self.parse, *args, **kw)

    def test_defaults(self):
        acme = self.parse({"directory": "https://ca.test/dir"}).tls.acme
        self.assertEqual(acme, AcmeSettings("https://ca.test/dir", "/etc/dp/acme"))

    def test_everything(self):
        acme = self.parse({"directory": "https://ca.test/dir", "storage": "/var/lib/dp",
                           "contact": ["mailto:ops@example.com"], "domains": ["Example.COM."], "ca": "ca.pem",
                           "challenge": "tls-alpn-01"}).tls.acme
        self.assertEqual(acme, AcmeSettings("https://ca.test/dir", "/var/lib/dp", ("mailto:ops@example.com",),
                                            ("example.com",), "/etc/dp/ca.pem", "tls-alpn-01"))

    def test_errors(self):
        directory = {"directory": "https://ca.test/dir"}
        for acme, key, message in [
            ({}, "tls.acme.directory", "missing"),
            ({"directory": "http://ca.test/dir"}, "tls.acme.directory", "not an https:// URL"),
            (dict(directory, contact=["ops@example.com"]), "tls.acme.contact[0]", "not a contact URI"),
            (dict(directory, domains=["*.example.com"]), "tls.acme.domains[0]", "DNS-01"),
            (dict(directory, domains=["10.0.0.1"]), "tls.acme.domains[0]", "not a DNS name"),
            (dict(directory, challenge="dns-01"), "tls.acme.challenge", "dns-01"),
            (dict(directory, renew=1), "tls.acme.renew", "unknown"),
        ]:
            error = self.assertRaises(ConfigError, self.parse, acme)
            self.assertEqual(error.key, key, acme)
            self.assertIn(message, str(error), acme)

    def test_needsTLSListeners(self):
        error = self.assertRaises(ConfigError, fromDict, {"tls": {"acme": {"directory": "https://ca.test/dir"}}})
        self.assertEqual(error.key, "tls.acme")

    def test_domainsFromRoutes(self):
        routes = [{"host": host, "prefix": prefix, "pool": "app"} for host, prefix in [
            ("www.example.com", "/"), ("*.example.com", "/"), ("api.example.com", "/"), ("www.example.com", "/x"),
            ("*", "/")]]
        config = self.parse({"directory": "https://ca.test/dir"},
                            reverse={"pools": {"app": {"backends": ["http://127.0.0.1:8000"]}}, "routes": routes})
        self.assertEqual(acmeDomains(config), ("www.example.com", "api.example.com"))

    def test_noDomains(self):
        config = self.parse({"directory": "https://ca.test/dir"}, mode="forward")
        error = self.assertRaises(ConfigError, acmeDomains, config)
        self.assertEqual(error.key, "tls.acme.domains")


class PrestartTests(SynchronousTestCase):
    def check(self, **acme):
        from dualproxy import prestart
        from dualproxy.plugins import findModes

        config = fromDict({"tls": {"listen": ["tcp:8443"], "acme": dict({"directory": "https://ca.test/d",
                                                                          "domains": ["a.example"]}, **acme)}})
        prestart.check(config, findModes())

    def test_storageMadeLater(self):
        self.check(storage=os.path.join(os.path.abspath(self.mktemp()), "deeper", "acme"))

    def test_storageUnderAFile(self):
        file = os.path.abspath(self.mktemp())
        open(file, "w").close()
        error = self.assertRaises(ConfigError, self.check, storage=os.path.join(file, "acme"))
        self.assertEqual((error.key, str(error).endswith("is not a directory")), ("tls.acme.storage", True))

    def test_missingCA(self):
        error = self.assertRaises(ConfigError, self.check, ca="/nonexistent/ca.pem", storage=self.mktemp())
        self.assertEqual(error.key, "tls.acme.ca")
