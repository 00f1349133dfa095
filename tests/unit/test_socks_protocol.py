"""
The SOCKS5 handshake's state machine, without I/O: every reply it can
give, every way a client can get it wrong, and bytes arriving one at a time.
"""

from __future__ import annotations

from typing import List

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.socks import protocol
from dualproxy.socks.protocol import Authenticate, Close, Connect, Send, SocksServer, reply

NO_AUTH = frozenset({protocol.NO_AUTHENTICATION})
LOGIN = frozenset({protocol.USERNAME_PASSWORD})


def request(kind: int, address: bytes, port: int = 80, command: int = protocol.CONNECT) -> bytes:
    return bytes((5, command, 0, kind)) + address + port.to_bytes(2, "big")


def domain(name: bytes, port: int = 80) -> bytes:
    return request(protocol.DOMAIN, bytes((len(name),)) + name, port)


def login(user: bytes, password: bytes) -> bytes:
    return bytes((1, len(user))) + user + bytes((len(password),)) + password


def sent(events) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, Send))


def closed(events) -> Close:
    [close] = [event for event in events if isinstance(event, Close)]
    return close


class GreetingTests(SynchronousTestCase):
    def test_noAuthentication(self):
        events = SocksServer(NO_AUTH).feed(b"\x05\x01\x00")
        self.assertEqual(events, [Send(b"\x05\x00")])

    def test_loginChosenWhenRequired(self):
        """
        With a password file, a client offering both gets the login: no
        way around it.
        """
        events = SocksServer(LOGIN).feed(b"\x05\x02\x00\x02")
        self.assertEqual(events, [Send(b"\x05\x02")])

    def test_noAcceptableMethod(self):
        for methods, greeting in [(LOGIN, b"\x05\x01\x00"), (NO_AUTH, b"\x05\x01\x02"), (NO_AUTH, b"\x05\x00"),
                                  (frozenset(), b"\x05\x02\x00\x02")]:
            events = SocksServer(methods).feed(greeting)
            self.assertEqual(sent(events), b"\x05\xff", greeting)
            self.assertEqual(closed(events).result, "no_acceptable_method")

    def test_socks4Rejected(self):
        """
        A SOCKS4 request is rejected in SOCKS4 (reply 91), so the client
        says why.
        """
        events = SocksServer(NO_AUTH).feed(b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00")
        self.assertEqual(sent(events), b"\x00\x5b" + bytes(6))
        self.assertIn("SOCKS4", closed(events).reason)

    def test_notSocks(self):
        """
        An HTTP request gets no reply at all: SOCKS has none to give.
        """
        events = SocksServer(NO_AUTH).feed(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(sent(events), b"")
        self.assertEqual(closed(events).result, "protocol_error")

    def test_truncatedWaits(self):
        machine = SocksServer(NO_AUTH)
        self.assertEqual(machine.feed(b"\x05\x03\x01"), [])
        self.assertEqual(machine.feed(b"\x02"), [])
        self.assertEqual(machine.feed(b"\x00"), [Send(b"\x05\x00")])


class LoginTests(SynchronousTestCase):
    def loggingIn(self) -> SocksServer:
        machine = SocksServer(LOGIN)
        machine.feed(b"\x05\x01\x02")
        return machine

    def test_credentials(self):
        machine = self.loggingIn()
        self.assertEqual(machine.feed(login(b"alice", b"s\xc3\xa9cret")), [Authenticate("alice", "s\u00e9cret")])
        self.assertEqual(machine.authenticated(True), [Send(b"\x01\x00")])
        self.assertEqual(machine.feed(domain(b"example.com")), [Connect("example.com", 80)])

    def test_wrongPassword(self):
        machine = self.loggingIn()
        machine.feed(login(b"alice", b"nope"))
        events = machine.authenticated(False)
        self.assertEqual(sent(events), b"\x01\x01")
        self.assertEqual(closed(events).result, "auth_failed")
        self.assertNotIn("nope", closed(events).reason)

    def test_requestSentWithTheLogin(self):
        """
        A request pipelined behind the credentials waits for their check.
        """
        machine = self.loggingIn()
        self.assertEqual(machine.feed(login(b"a", b"b") + domain(b"example.com")), [Authenticate("a", "b")])
        self.assertEqual(machine.authenticated(True), [Send(b"\x01\x00"), Connect("example.com", 80)])

    def test_malformed(self):
        for data, result in [
            (b"\x05\x01a\x01b", "protocol_error"),  # the SOCKS version, not the sub-negotiation's
            (login(b"", b"b"), "auth_failed"),
            (login(b"a", b""), "auth_failed"),
            (login(b"\xff", b"b"), "auth_failed"),
        ]:
            events = self.loggingIn().feed(data)
            self.assertEqual(sent(events), b"\x01\x01", data)
            self.assertEqual(closed(events).result, result, data)

    def test_answerOnlyWhenAsked(self):
        self.assertRaises(RuntimeError, self.loggingIn().authenticated, True)


class RequestTests(SynchronousTestCase):
    def requesting(self) -> SocksServer:
        machine = SocksServer(NO_AUTH)
        machine.feed(b"\x05\x01\x00")
        return machine

    def test_addressTypes(self):
        for data, expected in [
            (request(protocol.IPV4, bytes((192, 0, 2, 1)), 443), Connect("192.0.2.1", 443)),
            (request(protocol.IPV6, bytes(15) + b"\x01", 8080), Connect("::1", 8080)),
            (domain(b"Example.COM", 80), Connect("example.com", 80)),
        ]:
            self.assertEqual(self.requesting().feed(data), [expected])

    def test_repliesToConnect(self):
        machine = self.requesting()
        machine.feed(domain(b"example.com") + b"early bytes")
        self.assertEqual(machine.connected("10.0.0.1", 4321), [Send(b"\x05\x00\x00\x01\x0a\x00\x00\x01\x10\xe1")])
        self.assertEqual(machine.leftover, b"early bytes")

    def test_boundIPv6(self):
        self.assertEqual(reply(0, "::1", 1), b"\x05\x00\x00\x04" + bytes(15) + b"\x01\x00\x01")

    def test_failureReplies(self):
        for code, result in [(protocol.NOT_ALLOWED, "not_allowed"),
                             (protocol.NETWORK_UNREACHABLE, "network_unreachable"),
                             (protocol.HOST_UNREACHABLE, "host_unreachable"),
                             (protocol.CONNECTION_REFUSED, "connection_refused"),
                             (protocol.TTL_EXPIRED, "timeout"),
                             (protocol.GENERAL_FAILURE, "general_failure")]:
            machine = self.requesting()
            machine.feed(domain(b"example.com"))
            events = machine.failed(code, "why")
            self.assertEqual(sent(events), bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0)))
            self.assertEqual(closed(events), Close(result, "why"))

    def test_unsupportedCommands(self):
        for command in (protocol.BIND, protocol.UDP_ASSOCIATE, 0x09):
            events = self.requesting().feed(request(protocol.IPV4, bytes(4), command=command))
            self.assertEqual(sent(events)[:2], b"\x05\x07")
            self.assertEqual(closed(events).result, "command_not_supported")

    def test_unsupportedAddressType(self):
        events = self.requesting().feed(b"\x05\x01\x00\x05")
        self.assertEqual(sent(events)[:2], b"\x05\x08")
        self.assertEqual(closed(events).result, "address_type_not_supported")

    def test_malformed(self):
        for data in [b"\x04\x01\x00\x01", b"\x05\x01\x01\x01" + bytes(6), domain(b""), domain(b"a b"),
                     domain(b"a\x00b"), domain(b"-bad"), domain(b"\xc3\xa9.test")]:
            events = self.requesting().feed(data)
            self.assertEqual(sent(events)[:2], b"\x05\x01", data)
            self.assertEqual(closed(events).result, "protocol_error", data)

    def test_answerOnlyWhenAsked(self):
        self.assertRaises(RuntimeError, self.requesting().connected, "127.0.0.1", 1)
        self.assertRaises(RuntimeError, self.requesting().failed, 1, "why")


class SplitFeedTests(SynchronousTestCase):
    """
    Whatever the segmentation, the same events: fed byte by byte, the
    whole login handshake ends in one request.
    """

    def feedBytes(self, machine: SocksServer, data: bytes) -> List:
        events = []
        for index in range(len(data)):
            events.extend(machine.feed(data[index:index + 1]))
        return events

    def test_noAuthentication(self):
        events = self.feedBytes(SocksServer(NO_AUTH), b"\x05\x01\x00" + domain(b"example.com", 443))
        self.assertEqual(events, [Send(b"\x05\x00"), Connect("example.com", 443)])

    def test_login(self):
        machine = SocksServer(LOGIN)
        events = self.feedBytes(machine, b"\x05\x01\x02" + login(b"alice", b"pw"))
        self.assertEqual(events, [Send(b"\x05\x02"), Authenticate("alice", "pw")])
        machine.authenticated(True)
        events = self.feedBytes(machine, request(protocol.IPV6, bytes(16), 1))
        self.assertEqual(events, [Connect("::", 1)])

    def test_longestMessages(self):
        """
        Lengths are one byte: 255 is the most any field can claim, and is
        taken.
        """
        machine = SocksServer(LOGIN)
        greeting = b"\x05\xff" + bytes(range(255))
        self.assertEqual(self.feedBytes(machine, greeting), [Send(b"\x05\x02")])
        events = self.feedBytes(machine, login(b"u" * 255, b"p" * 255))
        self.assertEqual(events, [Authenticate("u" * 255, "p" * 255)])
        machine.authenticated(True)
        name = b".".join([b"a" * 63] * 4)[:255]
        self.assertEqual(self.feedBytes(machine, domain(name)), [Connect(name.decode(), 80)])
