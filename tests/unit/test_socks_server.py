"""
The SOCKS protocol and factory in memory: ACL refusals, logins, refused
destinations, how connect failures are replied to, timeouts, the tunnel and
its drain, and the session's log line.
"""

from __future__ import annotations

import errno

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import TimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dualproxy.accesslog import AccessLog
from dualproxy.interfaces import IClientConnection, IClientFactory
from dualproxy.metrics import Metrics
from dualproxy.plugins import loadRateLimiter
from dualproxy.policy.auth import PasswordFile, hashPassword
from dualproxy.policy.ratelimit import RateLimit
from dualproxy.settings import tables
from dualproxy.settings.model import Timeouts
from dualproxy.socks import protocol
from dualproxy.socks.handler import SocksHandler, replyFor
from dualproxy.socks.server import SocksFactory
from dualproxy.socks.settings import parseSocks

from ..integration.support import FakeResolver
from .test_socks_protocol import domain, login, request

CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)
PASSWORDS = PasswordFile.parse(f"alice:{hashPassword('secret', 'pbkdf2_sha256')}\n".encode())


class SocksTestCase(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.sessions = []
        self.lines = []

    def factory(self, passwords=None, rateLimit=None, **table) -> SocksFactory:
        table.setdefault("allow_destinations", ["192.0.2.0/24"])
        settings = parseSocks(table, ".")
        # Set before the handler reads it: Twisted 24.7's MemoryReactorClock has none.
        self.reactor.nameResolver = FakeResolver({"example.test": ["192.0.2.7"], "inside.test": ["10.0.0.1"]})
        handler = SocksHandler(self.reactor, settings, Timeouts(connect=5), passwords, rateLimit, self.ended)
        return SocksFactory(handler, self.reactor, idleTimeout=60, headTimeout=20)

    def ended(self, session):
        self.sessions.append(session)
        log = AccessLog("combined", self.reactor)
        log.file = self
        log.session(session)

    def write(self, line):
        self.lines.append(line)

    def connect(self, factory, client=CLIENT):
        connection = factory.buildProtocol(client)
        transport = StringTransport(peerAddress=client)
        connection.makeConnection(transport)
        return connection, transport

    def ready(self, factory=None, client=CLIENT):
        """
        A client past its greeting (no login).
        """
        connection, transport = self.connect(factory or self.factory(), client)
        connection.dataReceived(b"\x05\x01\x00")
        self.assertEqual(transport.value(), b"\x05\x00")
        transport.clear()
        return connection, transport

    def upstream(self):
        """
        Complete the last connection attempt: the upstream's protocol and
        transport.
        """
        host, port, factory, timeout, bind = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(hostAddress=IPv4Address("TCP", "192.0.2.200", 5555),
                                    peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return protocol, transport

    def failConnect(self, reason):
        host, port, factory, timeout, bind = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(self.reactor.connectors[-1], Failure(reason))


class ClientTests(SocksTestCase):
    def test_contracts(self):
        factory = self.factory()
        self.assertTrue(verifyObject(IClientFactory, factory))
        self.assertTrue(verifyObject(IClientConnection, self.connect(factory)[0]))

    def test_clientNotAllowed(self):
        """
        A client outside allow_clients is offered no method and closed;
        nothing is connected.
        """
        connection, transport = self.connect(self.factory(), IPv4Address("TCP", "192.0.2.9", 1))
        connection.dataReceived(b"\x05\x02\x00\x02" + domain(b"example.test"))
        self.assertEqual(transport.value(), b"\x05\xff")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_connectionLimits(self):
        factory = self.factory()
        factory.maxConnectionsPerClient = 1
        self.connect(factory)
        self.assertIsNone(factory.buildProtocol(CLIENT))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.2", 1)))


class LoginTests(SocksTestCase):
    def test_success(self):
        connection, transport = self.connect(self.factory(PASSWORDS))
        connection.dataReceived(b"\x05\x02\x00\x02" + login(b"alice", b"secret"))
        self.assertEqual(transport.value(), b"\x05\x02\x01\x00")
        self.assertEqual(connection.session.user, "alice")

    def test_failure(self):
        connection, transport = self.connect(self.factory(PASSWORDS))
        connection.dataReceived(b"\x05\x01\x02" + login(b"alice", b"wrong"))
        self.assertEqual(transport.value(), b"\x05\x02\x01\x01")
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(None)
        self.assertEqual(self.sessions[0].result, "auth_failed")
        self.assertIsNone(self.sessions[0].user)
        self.assertNotIn("wrong", self.lines[0])

    def test_successRemembered(self):
        handler = self.factory(PASSWORDS).handler
        self.assertTrue(handler.authenticate("alice", "secret"))
        handler.passwords = None
        self.assertTrue(handler.authenticate("alice", "secret"))
        self.assertFalse(handler.authenticate("alice", "secreT"))

    def test_noLoginWithoutFile(self):
        """
        Without a password file, a client offering only a login is refused
        rather than let in on any password.
        """
        connection, transport = self.connect(self.factory())
        connection.dataReceived(b"\x05\x01\x02")
        self.assertEqual(transport.value(), b"\x05\xff")


class DestinationTests(SocksTestCase):
    def refused(self, data, factory=None):
        attempts = len(self.reactor.tcpClients)
        connection, transport = self.ready(factory)
        connection.dataReceived(data)
        self.assertEqual(transport.value()[:2], b"\x05\x02")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), attempts)
        return connection

    def test_privateAddress(self):
        self.refused(request(protocol.IPV4, bytes((127, 0, 0, 1))))
        self.refused(request(protocol.IPV6, bytes(10) + b"\xff\xff\x7f\x00\x00\x01"))
        self.refused(domain(b"0x7f.1"))

    def test_nameResolvingToPrivate(self):
        """
        The address connected to is checked, not only the name.
        """
        connection, transport = self.ready()
        connection.dataReceived(domain(b"inside.test"))
        self.assertEqual(transport.value()[:2], b"\x05\x02")
        self.assertEqual(self.reactor.tcpClients, [])

    def test_deniedName(self):
        self.refused(domain(b"www.example.test"), self.factory(deny_destinations=[".example.test"]))

    def test_port(self):
        self.refused(domain(b"example.test", 25))
        self.refused(domain(b"example.test", 8080), self.factory(ports=[80, "8000-8079"]))

    def test_rateLimit(self):
        settings = tables.rateLimit("socks.rate_limit", {"rate": 1, "burst": 1}, "socks")
        limit = RateLimit(loadRateLimiter(settings, "socks.rate_limit", None), settings.key, "the proxy")
        factory = self.factory(rateLimit=limit)
        connection, transport = self.ready(factory)
        connection.dataReceived(domain(b"example.test"))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.refused(domain(b"example.test"), factory)


class ConnectFailureTests(SocksTestCase):
    def failing(self, reason) -> bytes:
        connection, transport = self.ready()
        connection.dataReceived(domain(b"example.test"))
        self.failConnect(reason)
        self.assertTrue(transport.disconnecting)
        return transport.value()[:2]

    def test_mapping(self):
        for reason, code in [
            (error.ConnectionRefusedError(), protocol.CONNECTION_REFUSED),
            (error.TCPTimedOutError(), protocol.TTL_EXPIRED),
            (error.NoRouteError(errno.EHOSTUNREACH), protocol.HOST_UNREACHABLE),
            (error.NoRouteError(errno.ENETUNREACH), protocol.NETWORK_UNREACHABLE),
            (error.ConnectError(errno.EHOSTUNREACH), protocol.HOST_UNREACHABLE),
            (error.ConnectError("no"), protocol.GENERAL_FAILURE),
        ]:
            self.assertEqual(self.failing(reason), bytes((5, code)), reason)

    def test_dns(self):
        self.assertEqual(replyFor(Failure(error.DNSLookupError("x")), "x:1")[0], protocol.HOST_UNREACHABLE)
        self.assertEqual(replyFor(Failure(TimeoutError()), "x:1")[0], protocol.TTL_EXPIRED)
        connection, transport = self.ready()
        connection.dataReceived(domain(b"unknown.test"))
        self.assertEqual(transport.value()[:2], b"\x05\x04")

    def test_connectTimeout(self):
        connection, transport = self.ready()
        connection.dataReceived(domain(b"silent.test"))
        self.reactor.advance(5)
        self.assertEqual(transport.value()[:2], b"\x05\x06")
        connection.connectionLost(None)
        self.assertEqual(self.sessions[0].result, "timeout")


class TunnelTests(SocksTestCase):
    def tunnel(self, early=b""):
        connection, transport = self.ready()
        connection.dataReceived(domain(b"example.test", 443) + early)
        self.assertEqual(transport.producerState, "paused")
        upstreamTransport = self.upstream()[1]
        self.assertEqual(transport.value(), b"\x05\x00\x00\x01\xc0\x00\x02\xc8\x15\xb3")
        transport.clear()
        return connection, transport, connection.upstream, upstreamTransport

    def test_bytesBothWays(self):
        connection, transport, upstream, upstreamTransport = self.tunnel(b"early")
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(upstreamTransport.value(), b"early")
        connection.dataReceived(b"ping")
        upstream.dataReceived(b"pong!")
        self.assertEqual(upstreamTransport.value(), b"earlyping")
        self.assertEqual(transport.value(), b"pong!")
        upstream.connectionLost(None)
        self.assertTrue(transport.disconnecting)
        connection.connectionLost(None)
        [session] = self.sessions
        self.assertEqual((session.result, session.bytesReceived, session.bytesSent), ("succeeded", 9, 5))
        self.assertIn('"SOCKS5 CONNECT example.test:443" succeeded 5 9 ', self.lines[0])

    def test_backpressure(self):
        """
        Each side's full buffer pauses the other's reading.
        """
        connection, transport, upstream, upstreamTransport = self.tunnel()
        self.assertIs(transport.producer, upstream)
        self.assertIs(upstreamTransport.producer, connection)
        upstreamTransport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.pauseProducing()
        self.assertEqual(upstreamTransport.producerState, "paused")

    def test_idleOnlyWhenNeitherMoves(self):
        connection, transport, upstream, upstreamTransport = self.tunnel()
        for _ in range(3):
            self.reactor.advance(40)
            upstream.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(40)
        connection.dataReceived(b"y")
        self.reactor.advance(59)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_clientGoneClosesUpstream(self):
        connection, transport, upstream, upstreamTransport = self.tunnel()
        connection.connectionLost(None)
        self.assertTrue(upstreamTransport.disconnecting)


class TimeoutAndDrainTests(SocksTestCase):
    def test_handshakeTimeout(self):
        connection, transport = self.connect(self.factory())
        connection.dataReceived(b"\x05\x01")
        self.reactor.advance(20)
        self.assertTrue(transport.disconnected)
        connection.connectionLost(None)
        self.assertEqual(self.sessions[0].result, "handshake_timeout")

    def test_clientGoneWhileConnecting(self):
        """
        The connection attempt is cancelled.
        """
        connection, transport = self.ready()
        connection.dataReceived(domain(b"example.test"))
        connector = self.reactor.connectors[-1]
        connection.connectionLost(None)
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(self.sessions[0].result, "client_closed")

    def test_drain(self):
        """
        A handshake in progress is closed; a tunnel is busy until it ends.
        """
        factory = self.factory()
        handshaking, handshakeTransport = self.connect(factory)
        tunnel, tunnelTransport = self.ready(factory, IPv4Address("TCP", "127.0.0.2", 1))
        tunnel.dataReceived(domain(b"example.test"))
        self.upstream()
        self.assertEqual((handshaking.busy(), tunnel.busy()), (False, True))
        handshaking.drain()
        tunnel.drain()
        self.assertTrue(handshakeTransport.disconnecting)
        self.assertFalse(tunnelTransport.disconnecting)

    def test_adopt(self):
        """
        A reload's settings reach handshakes in progress.
        """
        factory = self.factory()
        connection, transport = self.ready(factory)
        factory.adopt(self.factory(ports=[443]))
        connection.dataReceived(domain(b"example.test", 80))
        self.assertEqual(transport.value()[:2], b"\x05\x02")


class MetricsTests(SocksTestCase):
    def test_counted(self):
        metrics = Metrics("socks", self.reactor)
        connection, transport = self.connect(self.factory())
        connection.dataReceived(b"\x05\x01\x00" + request(protocol.IPV4, bytes((127, 0, 0, 1))))
        connection.connectionLost(None)
        metrics.sessionDone(self.sessions[0])
        families = {family.name: family for family in metrics.collect()}
        [sample] = families["dualproxy_socks_sessions"].samples
        self.assertEqual((sample.labels, sample.value), ({"result": "not_allowed"}, 1))
