"""
The service tree's handover on reload and its drain on stop, on a memory
reactor.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.admin.status import document
from dualproxy.config import fromDict
from dualproxy.core.exchange import ExchangeContext
from dualproxy.proxymode import ProxyMode
from dualproxy.service.listeners import ListenerGroup, clientFactory
from dualproxy.service.root import Lasting
from dualproxy.tls import ServerTLS, loadPair, validity

from ..certs import CertificateAuthority


class _Handler:
    """
    Takes every request and answers none: each stays in flight.
    """

    def __init__(self):
        self.exchanges = []

    def connectionMade(self, channel):
        pass

    def connectionLost(self, channel):
        pass

    newContext = ExchangeContext

    def exchangeDone(self, exchange):
        pass

    def handle(self, exchange):
        self.exchanges.append(exchange)


class _Mode(ProxyMode):
    name = "forward"
    description = "serves a recording handler"
    defaultListen = ()

    def makeHandler(self, root, config, filters):
        return _Handler()


def _config(listen=("tcp:8080",), **settings):
    return fromDict(dict({"mode": "forward", "access_log": "off", "listen": list(listen)}, **settings))


class ServiceTestCase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.mode = _Mode()

    def start(self, config):
        service = self.mode.makeService(config, [], self.reactor)
        service.startService()
        return service

    def reloadTo(self, service, config):
        service.configure = lambda: (self.mode, config, [])
        self.assertIsNone(service.reload())

    def connect(self, service, request=b""):
        """
        A client connection to the first listener, having sent C{request}.
        """
        factory = service.listenerGroup.factories()[0]
        channel = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)))
        if request:
            channel.dataReceived(request)
        return channel


class ReloadTests(ServiceTestCase):
    def test_keepsListenerPorts(self):
        """
        A listener both configurations have keeps its port and its open
        connections, which serve the new handler; one only the old has
        stops; one only the new has listens.
        """
        service = self.start(_config(["tcp:8080", "tcp:8081"]))
        kept, removed = service.listenerGroup.listeners()
        port = kept.port
        channel = self.connect(service)
        self.reloadTo(service, _config(["tcp:8080", "tcp:8082"]))
        listeners = service.listenerGroup.listeners()
        self.assertEqual([listener.description for listener in listeners], ["tcp:8080", "tcp:8082"])
        self.assertIs(listeners[0], kept)
        self.assertIs(kept.port, port)
        self.assertIsNone(removed.port)
        self.assertIsNotNone(listeners[1].port)
        self.assertEqual([p for p, *_ in self.reactor.tcpServers], [8080, 8081, 8082])
        self.assertIs(channel.handler, clientFactory(kept).handler)
        self.assertEqual(service.openConnections(), 1)

    def test_reloadSwitchesProxyProtocolOnTheKeptSocket(self):
        """
        A reload that adds C{proxy_protocol} keeps the listener and its
        socket, and its new connections from those networks must send a
        PROXY header.
        """
        from dualproxy.server.proxied import ProxyHeaderReader

        service = self.start(_config())
        [listener] = service.listenerGroup.listeners()
        port = listener.port
        balancer = IPv4Address("TCP", "127.0.0.1", 40000)
        self.assertNotIsInstance(listener.factory.buildProtocol(balancer), ProxyHeaderReader)
        self.reloadTo(service, _config(proxy_protocol=["127.0.0.0/8"], timeouts={"proxy_header": 2}))
        self.assertEqual(service.listenerGroup.listeners(), [listener])
        self.assertIs(listener.port, port)
        self.assertIsInstance(listener.factory.buildProtocol(balancer), ProxyHeaderReader)
        self.assertEqual(listener.factory.timeout, 2.0)

    def test_busyPortRejectsWholeReload(self):
        """
        When one new listener cannot bind, those bound before it close and
        the running configuration stays.
        """
        service = self.start(_config())
        handler = service.listenerGroup.handler
        self.reactor.listenTCP = self.refuse(self.reactor.listenTCP, 8083)
        service.configure = lambda: (self.mode, _config(["tcp:8080", "tcp:8082", "tcp:8083"]), [])
        self.assertIn("cannot listen on tcp:8083", service.reload())
        self.assertEqual([listener.description for listener in service.listenerGroup.listeners()], ["tcp:8080"])
        self.assertIs(service.listenerGroup.handler, handler)
        self.assertEqual(service.metrics.reloads["failure"], 1)

    def refuse(self, listenTCP, busy):
        from twisted.internet.error import CannotListenError

        def listen(port, factory, backlog=50, interface=""):
            if port == busy:
                raise CannotListenError(interface, port, OSError("in use"))
            return listenTCP(port, factory, backlog, interface)

        return listen

    def test_cacheHandedOver(self):
        """
        The shared cache survives a reload that keeps the C{[cache]} table,
        and is a new one after a reload that changes it.
        """
        service = self.start(_config())
        cache = service.httpCache()
        self.reloadTo(service, _config())
        self.assertIs(service.cacheIfBuilt(), cache)
        self.reloadTo(service, _config(cache={"max_bytes": 4096}))
        self.assertIsNone(service.cacheIfBuilt())
        self.assertIsNot(service.httpCache(), cache)

    def test_lastingHandedOn(self):
        """
        A successor's lasting parts are the same pool, metrics and start
        time.
        """
        lasting = Lasting.start(_config(), self.reactor)
        self.reactor.advance(5)
        following = lasting.successor(_config())
        self.assertEqual(
            (following.connections, following.metrics, following.startedAt, following.cache),
            (lasting.connections, lasting.metrics, 0, lasting.cache))

    def test_upstreamServicesReplaced(self):
        """
        The services the old configuration ran for its upstreams stop; the
        new configuration's run under the same tree.
        """
        service = self.start(_config())
        old = service.upstreams
        self.reloadTo(service, _config())
        self.assertFalse(old.running)
        self.assertIsNot(service.upstreams, old)
        self.assertIs(service.upstreams.parent, service)
        self.assertTrue(service.upstreams.running)


class CertificateTests(ServiceTestCase):
    """
    The expiry of the certificates presented, in the metrics and the
    status, as the files now loaded say.
    """

    def setUp(self):
        super().setUp()
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.ca = CertificateAuthority(self.directory)
        self.cert, self.key = self.ca.issue("a", ["a.test", "*.a.test"])

    def config(self, **settings):
        return _config(tls={"listen": ["tcp:8443"], "certificates": [{"cert": self.cert, "key": self.key}]},
                       **settings)

    def expiry(self, service):
        sample, = [sample for name, _, _, sample in service.metrics.gauges
                   if name == "dualproxy_certificate_expiry_seconds"]
        return list(sample())

    def notAfter(self) -> float:
        return validity(loadPair(self.cert, self.key).chain[0])[1]

    def assertPresented(self, service, notAfter: float):
        self.assertEqual(self.expiry(service), [({"name": "a.test"}, notAfter), ({"name": "*.a.test"}, notAfter)])
        source = "file:" + self.cert
        self.assertEqual(document(service)["certificates"],
                         [{"name": "a.test", "not_after": notAfter, "source": source},
                          {"name": "*.a.test", "not_after": notAfter, "source": source}])

    def test_staticCertificate(self):
        """
        A configured certificate has one sample per name it covers.
        """
        self.assertPresented(self.start(self.config()), self.notAfter())

    def test_reloadedFilesShowTheirExpiry(self):
        """
        A reload that reads replaced files shows the new certificate's
        expiry, with and without a configuration to re-read.
        """
        service = self.start(self.config())
        first = self.notAfter()
        self.ca.issue("a", ["a.test", "*.a.test"], days=60)
        self.assertIsNone(service.reload())
        second = self.notAfter()
        self.assertGreater(second, first)
        self.assertPresented(service, second)
        self.ca.issue("a", ["a.test", "*.a.test"], days=90)
        self.reloadTo(service, self.config())
        self.assertGreater(self.notAfter(), second)
        self.assertPresented(service, self.notAfter())

    def test_tlsListenersAddedOnReload(self):
        """
        TLS listeners a reload adds present their certificates in the
        metrics; a reload that takes them away takes those too.
        """
        service = self.start(_config())
        self.assertEqual(self.expiry(service), [])
        self.reloadTo(service, self.config())
        self.assertPresented(service, self.notAfter())
        self.reloadTo(service, _config())
        self.assertEqual((self.expiry(service), document(service)["certificates"]), ([], []))

    def test_configuredBeforeAcme(self):
        """
        A name both a configured certificate and ACME cover shows the
        configured one, which the listeners present; ACME names without a
        certificate yet are left out.
        """
        pair = loadPair(self.cert, self.key)
        acme = SimpleNamespace(certificates={
            "a.test": SimpleNamespace(notAfter=1.0), "b.test": SimpleNamespace(notAfter=2.0),
            "c.test": SimpleNamespace(notAfter=None)})
        group = ListenerGroup(self.config(), self.reactor, acme)
        group.serverTLS = ServerTLS([pair], pair)
        notAfter = self.notAfter()
        self.assertEqual(group.certificates(), [
            {"name": "a.test", "not_after": notAfter, "source": "file:" + self.cert},
            {"name": "*.a.test", "not_after": notAfter, "source": "file:" + self.cert},
            {"name": "b.test", "not_after": 2.0, "source": "acme"},
        ])


class DrainTests(ServiceTestCase):
    def test_waitsForInFlight(self):
        """
        Stopping stops listening at once, closes idle connections, and
        finishes when the last request in flight is gone.
        """
        service = self.start(_config(timeouts={"drain": 30}))
        idle = self.connect(service)
        busy = self.connect(service, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(service.inFlight(), 1)
        stopped = service.stopService()
        self.assertIsNone(service.listenerGroup.listeners()[0].port)
        self.assertTrue(idle.transport.disconnecting)
        self.assertTrue(busy.closing)
        self.reactor.advance(1)
        self.assertNoResult(stopped)
        busy.connectionLost()
        self.reactor.advance(0.05)
        self.successResultOf(stopped)
        self.assertFalse(service.connections.running)

    def test_cutsAfterTimeout(self):
        """
        What is still in flight C{timeouts.drain} seconds after the stop
        began is cut.
        """
        service = self.start(_config(timeouts={"drain": 2}))
        busy = self.connect(service, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        stopped = service.stopService()
        self.reactor.advance(1.9)
        self.assertNoResult(stopped)
        self.reactor.advance(0.1)
        self.successResultOf(stopped)
        self.assertTrue(busy.transport.disconnecting)
