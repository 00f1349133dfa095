"""
Forward-mode safety over real sockets (issue #7): the address checked is
the address connected to, whatever a name resolves to from one lookup to
the next; no spelling of a loopback address gets through; a proxy that is
its own parent stops the loop at once.
"""

from __future__ import annotations

import re
from typing import Dict, List

from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHostnameResolver
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from dualproxy.config import fromDict
from dualproxy.forward.parents import Egress

from .support import Origin, Proxy
from .test_canonical import rawExchange
from ..tables import fromTable


@implementer(IHostnameResolver)
class ScriptedResolver:
    """
    A name server whose answer changes from one lookup to the next, as a
    rebinding attacker's does: each lookup of a name gets the next answer
    of its script, the last one over and over.
    """

    def __init__(self, script: Dict[str, List[List[str]]]):
        self.script = script
        self.lookups: Dict[str, int] = {}

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        answers = self.script.get(hostName, [[]])
        count = self.lookups[hostName] = self.lookups.get(hostName, 0) + 1
        receiver.resolutionBegan(None)
        for address in answers[min(count, len(answers)) - 1]:
            receiver.addressResolved(IPv4Address("TCP", address, portNumber))
        receiver.resolutionComplete()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def errorType(answer: bytes) -> bytes:
    found = re.search(rb"\r\nProxy-Status: dualproxy; error=([a-z_]+)", answer)
    return found.group(1) if found else b""


class RebindingTests(TestCase):
    """
    127.0.0.2 is re-allowed, 127.0.0.1 is not; a good origin listens on
    127.0.0.2 and a trap on 127.0.0.1, on the same port, and the name
    rebind.test moves between them.
    """

    def setUp(self):
        for _ in range(10):
            good = Origin("good", interface="127.0.0.2")
            self.port = good.port.getHost().port
            try:
                trap = Origin("trap", port=self.port, interface="127.0.0.1")
            except CannotListenError:
                # That port is taken on 127.0.0.1: try another.
                good.stop()
                continue
            break
        else:
            self.fail("no port is free on both 127.0.0.1 and 127.0.0.2")
        self.good, self.trap = good, trap
        self.addCleanup(good.stop)
        self.addCleanup(trap.stop)
        self.proxy = Proxy({"forward": {"allow_destinations": ["127.0.0.2/32"], "connect_ports": [self.port]},
                            # Every request opens its own connection, hence looks the name up.
                            "upstream": {"max_idle_per_host": 0}})
        self.addCleanup(self.proxy.stop)

    def resolve(self, *answers: List[str]) -> ScriptedResolver:
        resolver = self.proxy.handler.resolver = ScriptedResolver({"rebind.test": list(answers)})
        return resolver

    def get(self):
        return rawExchange(self.proxy.address, b"GET http://rebind.test:%d/name HTTP/1.1\r\nHost: rebind.test\r\n"
                           b"Connection: close\r\n\r\n" % self.port)

    def assertProhibited(self, answer: bytes) -> None:
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer)
        self.assertEqual(errorType(answer), b"destination_ip_prohibited")
        self.assertIn(b"destination 127.0.0.1 is a private address", answer)

    @inlineCallbacks
    def test_rebindingToLoopback(self):
        """
        The name resolves to the allowed address, then to loopback: the
        first request reaches the good origin, the second is refused; each
        request looked the name up once, so what was checked is what was
        connected to.
        """
        resolver = self.resolve(["127.0.0.2"], ["127.0.0.1"])
        answer = yield self.get()
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\ngood"), answer)
        answer = yield self.get()
        self.assertProhibited(answer)
        self.assertEqual((self.good.connections, self.trap.connections), (1, 0))
        self.assertEqual(resolver.lookups, {"rebind.test": 2})

    @inlineCallbacks
    def test_rebindingFromLoopback(self):
        resolver = self.resolve(["127.0.0.1"], ["127.0.0.2"])
        answer = yield self.get()
        self.assertProhibited(answer)
        answer = yield self.get()
        self.assertTrue(answer.endswith(b"\r\n\r\ngood"), answer)
        self.assertEqual((self.good.connections, self.trap.connections), (1, 0))
        self.assertEqual(resolver.lookups, {"rebind.test": 2})

    @inlineCallbacks
    def test_answerWithBothAddresses(self):
        """
        An answer holding loopback and an allowed address, in either order:
        the connection goes to the allowed one.
        """
        self.resolve(["127.0.0.1", "127.0.0.2"], ["127.0.0.2", "127.0.0.1"])
        for _ in range(2):
            answer = yield self.get()
            self.assertTrue(answer.endswith(b"\r\n\r\ngood"), answer)
        self.assertEqual((self.good.connections, self.trap.connections), (2, 0))

    @inlineCallbacks
    def test_connectTunnel(self):
        """
        CONNECT follows the same rule: refused while the name points at
        loopback, and once it points at the allowed address the tunnel
        leads there.
        """
        self.resolve(["127.0.0.1"], ["127.0.0.2"])
        connect = (b"CONNECT rebind.test:%d HTTP/1.1\r\nHost: rebind.test:%d\r\nConnection: close\r\n\r\n"
                   b"GET /name HTTP/1.1\r\nHost: rebind.test\r\nConnection: close\r\n\r\n" % (self.port, self.port))
        answer = yield rawExchange(self.proxy.address, connect)
        self.assertProhibited(answer)
        answer = yield rawExchange(self.proxy.address, connect)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 Connection Established\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\ngood"), answer)
        self.assertEqual((self.good.connections, self.trap.connections), (1, 0))


# (rule, request line, status, Proxy-Status error type): a trap origin
# listens on 127.0.0.1:{port}, and nothing may reach it.
LOOPBACK_SPELLINGS = [
    ("RFC 4291 \u00a72.5.5.2: an IPv4-mapped address, dotted",
     "GET http://[::ffff:127.0.0.1]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 4291 \u00a72.5.5.2: an IPv4-mapped address, in hex",
     "GET http://[::ffff:7f00:1]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 4291 \u00a72.5.5.2: an IPv4-mapped address, written in full",
     "GET http://[0:0:0:0:0:FFFF:127.0.0.1]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 4291 \u00a72.5.5.1: an IPv4-compatible address",
     "GET http://[::127.0.0.1]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 6052 \u00a72.1: a NAT64 address",
     "GET http://[64:ff9b::7f00:1]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 3056 \u00a72: a 6to4 address",
     "GET http://[2002:7f00:1::]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 4291 \u00a72.5.3: the IPv6 loopback address",
     "GET http://[::1]:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("inet_aton: a single decimal number",
     "GET http://2130706433:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("inet_aton: a hex part and a short form",
     "GET http://0x7f.1:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("inet_aton: a single hex number in capitals",
     "GET http://0X7F000001:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("inet_aton: octal parts",
     "GET http://0177.0.0.01:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("inet_aton: two parts",
     "GET http://127.1:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("inet_aton: 0 is 0.0.0.0, which reaches the local host",
     "GET http://0:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 1034 \u00a73.1: an address with a trailing dot",
     "GET http://127.0.0.1.:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("a name that resolves to loopback is refused by the address it resolves to",
     "GET http://localhost:{port}/ HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 3986 \u00a73.2.2: a percent-encoded dot is part of a name, not an address",
     "GET http://127.0.0.1%2e:{port}/ HTTP/1.1", 502, b"dns_error"),
    ("RFC 9110 \u00a74.2.4: userinfo in front of a loopback address",
     "GET http://good.test@127.0.0.1:{port}/ HTTP/1.1", 400, b"http_request_error"),
    ("RFC 9110 \u00a74.2.4: a backslash before @ does not hide userinfo",
     "GET http://good.test\\@127.0.0.1:{port}/ HTTP/1.1", 400, b"http_request_error"),
    ("RFC 3986 \u00a74.3: a fragment in front of a loopback authority",
     "GET http://good.test#@127.0.0.1:{port}/ HTTP/1.1", 400, b"http_request_error"),
    ("RFC 9110 \u00a79.3.6: CONNECT to an IPv4-mapped loopback address on 443",
     "CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 9110 \u00a79.3.6: CONNECT to an IPv4-mapped loopback address in hex",
     "CONNECT [::ffff:7f00:1]:{port} HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 9110 \u00a79.3.6: CONNECT to a legacy spelling of loopback",
     "CONNECT 0x7f.1:{port} HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 9110 \u00a79.3.6: CONNECT to a decimal spelling of loopback",
     "CONNECT 2130706433:{port} HTTP/1.1", 403, b"destination_ip_prohibited"),
    ("RFC 9110 \u00a79.3.6: CONNECT to a name resolving to loopback",
     "CONNECT localhost:{port} HTTP/1.1", 403, b"destination_ip_prohibited"),
]


@fromTable(LOOPBACK_SPELLINGS, "check")
class LoopbackSpellingTests(TestCase):
    """
    Whatever a parser somewhere might take for loopback never gets the
    proxy to connect there: each spelling is refused with one precise
    status and error type.
    """

    def setUp(self):
        self.trap = Origin("trap")
        self.addCleanup(self.trap.stop)
        self.port = self.trap.port.getHost().port
        self.proxy = Proxy({"forward": {"connect_ports": [443, self.port]}}, names={"localhost": ["127.0.0.1"]})
        self.addCleanup(self.proxy.stop)

    @inlineCallbacks
    def check(self, line, code, error):
        line = line.format(port=self.port).encode("latin-1")
        answer = yield rawExchange(self.proxy.address, line + b"\r\nHost: good.test\r\nConnection: close\r\n\r\n")
        self.assertEqual((status(answer), errorType(answer)), (code, error), answer)
        self.assertEqual(self.trap.connections, 0)


class RealLoopTests(TestCase):
    """
    A proxy chain that leads back to itself, over real sockets: the second
    pass through a proxy sees its own Via pseudonym and answers 508, so the
    loop ends at once.
    """

    def setUp(self):
        self.origin = Origin()
        self.addCleanup(self.origin.stop)
        self.passes: Dict[str, int] = {}

    def startProxy(self, via: str, parent: str = None) -> Proxy:
        forward = {"allow_destinations": ["127.0.0.0/8"], "via": via,
                   "connect_ports": [self.origin.port.getHost().port]}
        if parent is not None:
            forward["parent"] = parent
        proxy = Proxy({"forward": forward})
        self.addCleanup(proxy.stop)
        handle = proxy.handler.handle

        def counting(exchange):
            self.passes[via] = self.passes.get(via, 0) + 1
            return handle(exchange)

        self.patch(proxy.handler, "handle", counting)
        return proxy

    def parentOf(self, proxy: Proxy, parent: Proxy) -> None:
        """
        Make C{parent} the parent of C{proxy}: a proxy's port is known
        only once it listens, so the last link of a loop is made after.
        """
        proxy.handler.egress = Egress(fromDict({"forward": {"parent": parent.url}}).forward)

    def assertLoop(self, answer: bytes) -> None:
        self.assertTrue(answer.startswith(b"HTTP/1.1 508 Loop Detected\r\n"), answer)
        self.assertEqual(errorType(answer), b"proxy_loop_detected")
        self.assertEqual(self.origin.connections, 0)

    @inlineCallbacks
    def test_ownParent(self):
        proxy = self.startProxy("loop")
        self.parentOf(proxy, proxy)
        answer = yield rawExchange(proxy.address, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                   % self.origin.url("/name").encode())
        self.assertLoop(answer)
        self.assertIn(b"\r\nVia: 1.1 loop\r\n", answer)
        self.assertEqual(self.passes, {"loop": 2})

    @inlineCallbacks
    def test_twoProxiesParentOfEachOther(self):
        second = self.startProxy("second")
        first = self.startProxy("first", parent=second.url)
        self.parentOf(second, first)
        answer = yield rawExchange(first.address, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                   % self.origin.url("/name").encode())
        self.assertLoop(answer)
        self.assertEqual(self.passes, {"first": 2, "second": 1})

    @inlineCallbacks
    def test_connectThroughItself(self):
        """
        A tunnel through a proxy that is its own parent: the inner CONNECT
        is the one answered 508, and the client learns it is a loop.
        """
        proxy = self.startProxy("loop")
        self.parentOf(proxy, proxy)
        port = self.origin.port.getHost().port
        answer = yield rawExchange(proxy.address, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                   b"Connection: close\r\n\r\n" % (port, port))
        self.assertLoop(answer)
        self.assertEqual(self.passes, {"loop": 2})
