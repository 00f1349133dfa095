"""
Certificates on demand in memory: the handshake gate holding a hello
while its name's certificate is ordered (and never a validation
server's), the service deciding which names may be ordered, and the
on_demand settings.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.acme.ondemand import HandshakeGateFactory
from dualproxy.acme.service import AcmeService, acmeDomains, mayOrder, onDemandPatterns
from dualproxy.config import ConfigError, fromDict
from dualproxy.settings.model import AcmeSettings

from .test_acme import ServiceFixture
from .test_clienthello import clientHello


class Received(Protocol):
    def __init__(self):
        self.data = b""

    def dataReceived(self, data):
        self.data += data


class GateTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.built = []
        self.presented = {"known.example"}
        self.asked = []
        self.waiting = {}

        def build(addr):
            protocol = Received()
            self.built.append(protocol)
            return protocol

        def onDemand(name):
            self.asked.append(name)
            return self.waiting.get(name)

        wrapped = Factory()
        wrapped.buildProtocol = build
        self.factory = HandshakeGateFactory(wrapped, self.clock, self.presented.__contains__, onDemand, 10.0, 30.0)

    def connect(self):
        transport = StringTransport()
        gate = self.factory.buildProtocol(None)
        gate.makeConnection(transport)
        return gate, transport

    def test_presentedNameGoesOnAtOnce(self):
        gate, transport = self.connect()
        hello = clientHello(b"known.example")
        gate.dataReceived(hello[:10])
        self.assertEqual(self.built, [])
        gate.dataReceived(hello[10:] + b"more")
        protocol, = self.built
        self.assertEqual(protocol.data, hello + b"more")
        self.assertIs(transport.protocol, protocol)
        self.assertEqual(self.asked, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitsForTheOrder(self):
        self.waiting["new.example"] = d = defer.Deferred()
        gate, transport = self.connect()
        hello = clientHello(b"new.example")
        gate.dataReceived(hello)
        self.assertEqual((self.asked, self.built, transport.producerState), (["new.example"], [], "paused"))
        d.callback(None)
        protocol, = self.built
        self.assertEqual((protocol.data, transport.producerState), (hello, "producing"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitsNoLongerThanTheLimit(self):
        self.waiting["new.example"] = d = defer.Deferred()
        gate, transport = self.connect()
        gate.dataReceived(clientHello(b"new.example"))
        self.clock.advance(29.9)
        self.assertEqual(self.built, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.built), 1)
        self.assertEqual(transport.producerState, "producing")
        d.callback(None)
        self.assertEqual(len(self.built), 1)

    def test_nothingToWaitFor(self):
        gate, transport = self.connect()
        gate.dataReceived(clientHello(b"other.example"))
        self.assertEqual((self.asked, len(self.built)), (["other.example"], 1))

    def test_validationServerNeverWaits(self):
        self.waiting["new.example"] = defer.Deferred()
        gate, transport = self.connect()
        gate.dataReceived(clientHello(b"new.example", [b"acme-tls/1"]))
        self.assertEqual((self.asked, len(self.built)), ([], 1))

    def test_noNameAndNotAHelloGoOn(self):
        for data in [clientHello(None), b"GET / HTTP/1.1\r\n"]:
            gate, transport = self.connect()
            gate.dataReceived(data)
            self.assertEqual(self.built[-1].data, data)
        self.assertEqual(self.asked, [])

    def test_noHelloInTime(self):
        gate, transport = self.connect()
        gate.dataReceived(b"\x16\x03\x01")
        self.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.built, [])

    def test_goneWhileWaiting(self):
        self.waiting["new.example"] = d = defer.Deferred()
        gate, transport = self.connect()
        gate.dataReceived(clientHello(b"new.example"))
        gate.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d.callback(None)
        self.assertEqual(self.built, [])

    def test_overTheConnectionLimit(self):
        self.factory.wrappedFactory.buildProtocol = lambda addr: None
        gate, transport = self.connect()
        gate.dataReceived(clientHello(b"known.example"))
        self.assertTrue(transport.disconnecting)


class ServiceTests(ServiceFixture, SynchronousTestCase):
    def service(self, limit=100):
        settings = AcmeSettings("https://ca.test/dir", self.storage, on_demand=True, on_demand_limit=limit)
        service = AcmeService(settings, (), self.clock, self.client, jitter=lambda: 0.0,
                              onDemand=("*.example.com", "exact.example"))
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_ordersAMatchingNameOnce(self):
        service = self.service()
        self.assertEqual(service.book.placeholder.names, ("*.example.com", "exact.example"))
        first = service.onDemand("a.b.example.com")
        second = service.onDemand("a.b.example.com")
        (names, d), = self.client.orders
        self.assertEqual(names, ["a.b.example.com"])
        self.assertFalse(first.called or second.called)
        d.callback(self.issued("a.b.example.com"))
        self.assertTrue(first.called and second.called)
        self.assertIsNotNone(service.book.get("a.b.example.com"))
        self.assertEqual([state["name"] for state in service.describe()], ["a.b.example.com"])
        self.assertIsNone(service.onDemand("a.b.example.com"))

    def test_otherNamesNotOrdered(self):
        service = self.service()
        for name in ["example.com", "evil.com", "exact.example.evil", "10.0.0.1", "a..example.com"]:
            self.assertIsNone(service.onDemand(name), name)
        self.assertEqual(self.client.orders, [])

    def test_failureSettlesAndBacksOff(self):
        service = self.service()
        waiting = service.onDemand("exact.example")
        self.client.orders[0][1].errback(RuntimeError("refused"))
        self.assertTrue(waiting.called)
        self.assertIsNone(service.onDemand("exact.example"))
        self.clock.advance(60)
        self.assertEqual(len(self.client.orders), 2)

    def test_limit(self):
        service = self.service(limit=1)
        self.assertIsNotNone(service.onDemand("a.example.com"))
        self.assertIsNone(service.onDemand("b.example.com"))
        self.assertEqual(len(self.client.orders), 1)

    def test_storedPresentedWithoutOrdering(self):
        paths = self.issued("a.example.com")
        service = self.service()
        self.assertIsNone(service.onDemand("a.example.com"))
        self.assertEqual(service.book.get("a.example.com").certPath, paths.certificate)
        self.clock.advance(0)
        self.assertEqual(self.client.orders, [])

    def test_stopSettles(self):
        service = self.service()
        waiting = service.onDemand("exact.example")
        service.stopService()
        self.assertTrue(waiting.called)
        self.assertIsNone(service.onDemand("c.example.com"))


class PatternTests(SynchronousTestCase):
    def test_mayOrder(self):
        patterns = ("*.example.com", "www.example.org")
        for name, expected in [("a.example.com", True), ("a.b.example.com", True), ("example.com", False),
                               ("www.example.org", True), ("example.org", False), ("aexample.com", False),
                               ("-.example.com", False), ("a" * 250 + ".example.com", False)]:
            self.assertEqual(mayOrder(patterns, name), expected, name)

    def parse(self, acme, mode="reverse", routes=("app.example.com", "*.example.net")):
        table = {"mode": mode, "tls": {"listen": ["tcp:8443"], "acme": dict({"directory": "https://ca.test/dir"},
                                                                             **acme)}}
        if mode == "reverse":
            table["reverse"] = {"pools": {"app": {"backends": ["http://127.0.0.1:8000"]}},
                                "routes": [{"host": host, "prefix": "/", "pool": "app"} for host in routes]}
        return fromDict(table, base="/etc/dp")

    def test_patternsFromTheRoutes(self):
        config = self.parse({"on_demand": True})
        self.assertEqual(config.tls.acme.on_demand_limit, 100)
        self.assertEqual(acmeDomains(config), ("app.example.com",))
        self.assertEqual(onDemandPatterns(config), ("app.example.com", "*.example.net"))

    def test_patternsFromTheDomains(self):
        config = self.parse({"on_demand": True, "on_demand_limit": 5, "domains": ["*.Example.ORG"]}, mode="forward")
        self.assertEqual((acmeDomains(config), onDemandPatterns(config)), ((), ("*.example.org",)))
        self.assertEqual(config.tls.acme.on_demand_limit, 5)

    def test_notOnDemand(self):
        config = self.parse({})
        self.assertEqual(onDemandPatterns(config), ())
        error = self.assertRaises(ConfigError, self.parse, {"domains": ["a.example", "*.example.org"]})
        self.assertEqual(error.key, "tls.acme.domains[1]")
        self.assertIn("on_demand", str(error))

    def test_wildcardRouteCoveredOnDemandOnly(self):
        from dualproxy.reverse.settings import _checkCoverage

        config = self.parse({"on_demand": True})
        _checkCoverage(config.reverse, config)
        config = self.parse({})
        error = self.assertRaises(ConfigError, _checkCoverage, config.reverse, config)
        self.assertEqual(error.key, "reverse.routes[1].host")
