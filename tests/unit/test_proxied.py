"""
The PROXY protocol layer of client listeners, over in-memory transports:
who must send a header, what the connection looks like after it, what
closes it; its settings; and the header written to backends.
"""

from __future__ import annotations

from ipaddress import ip_network

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from dualproxy import proxyprotocol
from dualproxy.config import fromDict
from dualproxy.core.exchange import ExchangeContext
from dualproxy.relay.client import UpstreamProtocol
from dualproxy.reverse.proxy import proxyHeader
from dualproxy.server.http1 import HTTPServerChannel, HTTPServerFactory
from dualproxy.server.proxied import ProxyHeaderReader, ProxyProtocolFactory
from dualproxy.settings.values import ConfigError
from dualproxy.tls import clientCreator

BALANCER = IPv4Address("TCP", "10.0.0.5", 40000)
HEADER = b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"


class _Handler:
    def __init__(self):
        self.exchanges = []

    newContext = ExchangeContext

    def connectionMade(self, channel):
        pass

    def connectionLost(self, channel):
        pass

    def exchangeDone(self, exchange):
        pass

    def handle(self, exchange):
        self.exchanges.append(exchange)


class ListenerLayerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.handler = _Handler()
        self.http = HTTPServerFactory(self.handler, self.clock, 60.0)
        self.factory = ProxyProtocolFactory(self.http, self.clock, [ip_network("10.0.0.0/8")], 5.0)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def connect(self, peer=BALANCER):
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "10.0.0.9", 8080))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport

    def messages(self):
        return [event["log_format"].format(**event) for event in self.logged if event.get("log_level") == LogLevel.info]

    def test_untrustedPeerIsServedDirectly(self):
        """
        A peer outside the trusted networks reaches HTTP at once, as itself,
        so a PROXY header from it is a malformed request.
        """
        transport = self.connect(IPv4Address("TCP", "192.0.2.77", 1234))
        channel = transport.protocol
        self.assertIsInstance(channel, HTTPServerChannel)
        self.assertEqual(channel.clientHost, "192.0.2.77")
        channel.dataReceived(HEADER + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))

    def test_offWithoutNetworks(self):
        self.factory.configure((), 5.0)
        self.assertIsInstance(self.factory.buildProtocol(BALANCER), HTTPServerChannel)

    def test_headerNamesTheClient(self):
        """
        After the header, the client it names is the connection's peer
        (and the address it reached, its host) for the channel and for
        the connection counts; the bytes after it are the first request.
        """
        transport = self.connect()
        self.assertIsInstance(transport.protocol, ProxyHeaderReader)
        for byte in HEADER + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n":
            transport.protocol.dataReceived(bytes([byte]))
        channel = transport.protocol
        self.assertIsInstance(channel, HTTPServerChannel)
        self.assertIs(channel.transport, transport)
        self.assertEqual(channel.clientHost, "192.0.2.1")
        self.assertEqual(transport.getPeer(), IPv4Address("TCP", "192.0.2.1", 51234))
        self.assertEqual(transport.getHost(), IPv4Address("TCP", "198.51.100.7", 443))
        self.assertEqual(self.http.perClient, {"192.0.2.1": 1})
        self.assertEqual(self.http.connections, {channel})
        [exchange] = self.handler.exchanges
        self.assertEqual(exchange.clientHost, "192.0.2.1")
        self.assertEqual([call for call in self.clock.getDelayedCalls() if call.func.__name__ == "_tooSlow"], [])

    def test_ipv6Client(self):
        transport = self.connect()
        transport.protocol.dataReceived(proxyprotocol.header(2, ("2001:db8::1", 5), ("2001:db8::2", 443)))
        self.assertEqual(transport.getPeer(), IPv6Address("TCP", "2001:db8::1", 5))
        self.assertEqual(transport.protocol.clientHost, "2001:db8::1")

    def test_localKeepsTheBalancer(self):
        transport = self.connect()
        transport.protocol.dataReceived(proxyprotocol.local(2))
        self.assertEqual(transport.protocol.clientHost, "10.0.0.5")
        self.assertEqual(transport.getPeer(), BALANCER)

    def test_perClientLimitCountsTheNamedClient(self):
        """
        C{max_connections_per_client} counts the clients the headers name,
        not the balancer all of them come through.
        """
        self.http.maxConnectionsPerClient = 1
        first, second, other = self.connect(), self.connect(), self.connect()
        first.protocol.dataReceived(HEADER)
        second.protocol.dataReceived(HEADER)
        other.protocol.dataReceived(HEADER.replace(b"192.0.2.1", b"192.0.2.2"))
        self.assertFalse(first.disconnecting)
        self.assertTrue(second.disconnecting)
        self.assertFalse(other.disconnecting)
        self.assertEqual(self.http.perClient, {"192.0.2.1": 1, "192.0.2.2": 1})

    def test_noHeaderCloses(self):
        transport = self.connect()
        transport.protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.http.connections, set())
        [message] = self.messages()
        self.assertIn("10.0.0.5", message)
        self.assertIn("does not begin with a PROXY header", message)

    def test_badHeaderCloses(self):
        transport = self.connect()
        transport.protocol.dataReceived(b"PROXY TCP4 192.0.2.1 198.51.100.7 51234\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsInstance(transport.protocol, ProxyHeaderReader)

    def test_slowHeaderCloses(self):
        transport = self.connect()
        transport.protocol.dataReceived(HEADER[:10])
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn("no PROXY header within 5 s", self.messages()[0])

    def test_lostBeforeTheHeaderStopsTheTimer(self):
        transport = self.connect()
        transport.protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_adopt(self):
        """
        A reload that keeps the listener brings its new networks and
        timeout.
        """
        self.factory.adopt(ProxyProtocolFactory(self.http, self.clock, [ip_network("192.0.2.0/24")], 2.0))
        self.assertIsInstance(self.factory.buildProtocol(BALANCER), HTTPServerChannel)
        self.assertIsInstance(self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.3", 1)), ProxyHeaderReader)
        self.assertEqual(self.factory.timeout, 2.0)

    def test_startAndStopReachTheWrappedFactory(self):
        wrapped = Factory()
        factory = ProxyProtocolFactory(wrapped, self.clock)
        factory.doStart()
        self.assertEqual(wrapped.numPorts, 1)
        factory.doStop()
        self.assertEqual(wrapped.numPorts, 0)


class SettingsTests(SynchronousTestCase):
    def test_defaults(self):
        config = fromDict({}, {})
        self.assertEqual(config.proxy_protocol, ())
        self.assertEqual(config.timeouts.proxy_header, 5.0)

    def test_networks(self):
        config = fromDict({"proxy_protocol": ["10.0.0.0/8", "2001:db8::1"], "timeouts": {"proxy_header": 1}}, {})
        self.assertEqual(config.proxy_protocol, (ip_network("10.0.0.0/8"), ip_network("2001:db8::1/128")))
        self.assertEqual(config.timeouts.proxy_header, 1.0)

    def test_errors(self):
        for data, key, problem in (
            ({"proxy_protocol": "10.0.0.0/8"}, "proxy_protocol", "expected an array"),
            ({"proxy_protocol": ["haproxy"]}, "proxy_protocol[0]", "is not an IP network"),
            ({"timeouts": {"proxy_header": 0}}, "timeouts.proxy_header", "must be a positive number"),
        ):
            with self.assertRaises(ConfigError) as caught:
                fromDict(data, {})
            self.assertEqual(caught.exception.key, key)
            self.assertIn(problem, caught.exception.problem)

    def pool(self, **settings):
        data = {"mode": "reverse", "reverse": {"pools": {"app": dict(backends=["http://127.0.0.1:9"], **settings)}}}
        return fromDict(data).reverse.pools[0]

    def test_poolVersions(self):
        self.assertIsNone(self.pool().proxy_protocol)
        self.assertEqual(self.pool(proxy_protocol="v1").proxy_protocol, 1)
        self.assertEqual(self.pool(proxy_protocol="v2").proxy_protocol, 2)

    def test_poolVersionError(self):
        for value in ("v3", 2, True):
            with self.assertRaises(ConfigError) as caught:
                self.pool(proxy_protocol=value)
            self.assertEqual(caught.exception.key, "reverse.pools.app.proxy_protocol")


class SendingTests(SynchronousTestCase):
    def test_headerForTheClient(self):
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 5),
                                    hostAddress=IPv4Address("TCP", "198.51.100.7", 443))
        self.assertEqual(proxyHeader(1, transport), b"PROXY TCP4 192.0.2.1 198.51.100.7 5 443\r\n")

    def test_noClientIsLocal(self):
        """
        A request of the proxy's own (a background revalidation) has no
        client connection.
        """
        self.assertEqual(proxyHeader(2, None), proxyprotocol.local(2))

    def test_clientWithoutAddress(self):
        from twisted.internet.address import UNIXAddress

        transport = StringTransport(peerAddress=UNIXAddress(None), hostAddress=UNIXAddress(b"/run/proxy.sock"))
        self.assertEqual(proxyHeader(1, transport), b"PROXY UNKNOWN\r\n")

    def test_plainPreambleFirst(self):
        upstream = UpstreamProtocol(MemoryReactorClock(), 10.0, b"PREAMBLE")
        transport = StringTransport()
        upstream.makeConnection(transport)
        self.assertEqual(transport.value(), b"PREAMBLE")

    def test_preambleBeforeTLS(self):
        """
        To a TLS backend the header goes before the ClientHello, in the
        clear.
        """
        header = proxyprotocol.header(2, ("192.0.2.1", 5), ("198.51.100.7", 443))
        upstream = UpstreamProtocol(MemoryReactorClock(), 10.0, header)
        factory = TLSMemoryBIOFactory(clientCreator("backend.test", None, True), True,
                                      Factory.forProtocol(lambda: upstream))
        tls = factory.buildProtocol(None)
        transport = StringTransport()
        tls.makeConnection(transport)
        sent = transport.value()
        self.assertEqual(sent[:len(header)], header)
        self.assertEqual(sent[len(header):len(header) + 1], b"\x16")  # a TLS handshake record
