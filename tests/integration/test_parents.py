"""
Parent proxies end to end: real parents (dualproxy forward instances in
this reactor, one behind TLS with a test CA), real origins and curl, all
on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import tempfile
import shutil

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from ..certs import CertificateAuthority
from .support import Origin, Proxy, curl, pattern, selfSignedCertificate, serveTLS

NAMES = {"localhost": ["127.0.0.1"], "a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"],
         "direct.test": ["127.0.0.1"]}


def basic(credentials: bytes) -> bytes:
    return b"Basic " + base64.b64encode(credentials)


class ParentsTestCase(TestCase):
    def setUp(self):
        self.origin = Origin()
        self.addCleanup(self.origin.stop)
        self.seen = {}

    def startProxy(self, via: str, tls: bool = False, **forward) -> Proxy:
        """
        A forward proxy calling itself C{via} in Via; C{tls}: listening
        over TLS too, with a certificate for localhost from the test CA.
        What reaches it (its Proxy-Authorization values, in order) is
        recorded in C{self.seen[via]}.
        """
        data = {"forward": {"allow_destinations": ["127.0.0.0/8"], "via": via, **forward}}
        if tls:
            cert, key = self.ca().issue(via, ["localhost"])
            data["tls"] = {"listen": ["tcp:0:interface=127.0.0.1"], "certificates": [{"cert": cert, "key": key}]}
        proxy = Proxy(data, names=NAMES)
        self.addCleanup(proxy.stop)
        seen = self.seen.setdefault(via, [])
        handle = proxy.handler.handle

        def recording(exchange):
            seen.append(exchange.request.headers.getAll(b"proxy-authorization"))
            return handle(exchange)

        self.patch(proxy.handler, "handle", recording)
        return proxy

    def ca(self) -> CertificateAuthority:
        if not hasattr(self, "_ca"):
            directory = tempfile.mkdtemp()
            self.addCleanup(shutil.rmtree, directory)
            self._ca = CertificateAuthority(directory)
        return self._ca

    def closedPort(self) -> int:
        """
        A port nothing listens on (it did a moment ago).
        """
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        port.stopListening()
        return number

    def startTLSOrigin(self) -> int:
        return serveTLS(self, Origin(), *selfSignedCertificate("localhost"))

    def vias(self, out: bytes) -> list:
        return [value for name, value in json.loads(out)["headers"] if name == "Via"]

    def fields(self, out: bytes, field: str) -> list:
        return [value for name, value in json.loads(out)["headers"] if name.lower() == field]

    def capture(self) -> list:
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events


class PlainSpeaker(Factory, Protocol):
    """
    A server that answers plain HTTP at once, whatever it is sent, and
    keeps what it got.
    """

    noisy = False

    def __init__(self):
        self.received = b""

    def buildProtocol(self, addr):
        return self

    def connectionMade(self):
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    def dataReceived(self, data):
        self.received += data


class HTTPSParentTests(ParentsTestCase):
    @inlineCallbacks
    def test_plainRequest(self):
        """
        A plain request goes in absolute form over TLS to an https parent,
        verified against parent_ca, with the parent's credentials only;
        the client's own Proxy-Authorization reaches no one.
        """
        parent = self.startProxy("parent", tls=True)
        child = self.startProxy("child", parents=[f"https://u:p@localhost:{parent.tlsPort}"],
                                parent_ca=self.ca().certPath)
        out, err, code = yield curl("-x", child.url, "--proxy-user", "client:secret", self.origin.url("/headers"))
        self.assertEqual(code, 0, err)
        self.assertEqual(self.vias(out), ["1.1 child", "1.1 parent"])
        self.assertEqual(self.fields(out, "proxy-authorization"), [])
        self.assertEqual(self.seen["parent"], [[basic(b"u:p")]])

    @inlineCallbacks
    def test_connectLargeTransfer(self):
        """
        A CONNECT tunnel chained through an https parent is a tunnel inside
        TLS (no kernel splice): 8 MiB arrive whole, the client reading
        slower than the origin sends.
        """
        port = self.startTLSOrigin()
        parent = self.startProxy("parent", tls=True, connect_ports=[port])
        child = self.startProxy("child", parents=[f"https://u:p@localhost:{parent.tlsPort}"],
                                parent_ca=self.ca().certPath, connect_ports=[port])
        size = 8 << 20
        out, err, code = yield curl("-x", child.url, "-k", "--limit-rate", "16M",
                                    f"https://localhost:{port}/bytes/{size}")
        self.assertEqual((code, len(out)), (0, size), err)
        self.assertEqual(out, pattern(size))
        self.assertEqual(self.seen["parent"], [[basic(b"u:p")]])

    @inlineCallbacks
    def test_untrustedParent(self):
        """
        An https parent whose certificate the CA bundle does not vouch for
        is a connect failure: 502 naming the parent and the TLS error, the
        parent marked down, and nothing sent to it.
        """
        parent = self.startProxy("parent", tls=True)
        child = self.startProxy("child", parents=[f"https://localhost:{parent.tlsPort}"])
        out, err, code = yield curl("-x", child.url, "-D", "-", self.origin.url("/headers"))
        self.assertIn(b"HTTP/1.1 502 ", out)
        self.assertIn(b"error=tls_certificate_error", out)
        self.assertIn(f"parent proxy localhost:{parent.tlsPort}: TLS certificate verify failed".encode(), out)
        self.assertEqual(self.seen["parent"], [])
        self.assertFalse(child.handler.egress.health[f"localhost:{parent.tlsPort}"].up)


class FailoverTests(ParentsTestCase):
    @inlineCallbacks
    def test_closedParentFailsOver(self):
        """
        The first parent's port is closed: the request goes to the second,
        the first is marked down (logged once, in the metrics), and the
        next request goes straight to the second.
        """
        events = self.capture()
        closed = self.closedPort()
        second = self.startProxy("second")
        child = self.startProxy("child", parents=[f"http://127.0.0.1:{closed}", second.url])
        for _ in range(2):
            out, err, code = yield curl("-x", child.url, self.origin.url("/headers"))
            self.assertEqual(code, 0, err)
            self.assertEqual(self.vias(out), ["1.1 child", "1.1 second"])
        health = child.handler.egress.health[f"127.0.0.1:{closed}"]
        self.assertEqual((health.up, health.failures), (False, 1))
        downs = [e for e in events if "is down" in e.get("log_format", "")]
        self.assertEqual(len(downs), 1)
        samples = {(name, tuple(sorted(labels.items()))): value
                   for name, help, kind, sample in child.service.metrics.gauges
                   if name.startswith("dualproxy_parent_") for labels, value in sample()}
        self.assertEqual(samples, {
            ("dualproxy_parent_up", (("parent", f"127.0.0.1:{closed}"),)): 0.0,
            ("dualproxy_parent_up", (("parent", second.address),)): 1.0,
            ("dualproxy_parent_failures", (("parent", f"127.0.0.1:{closed}"),)): 1,
            ("dualproxy_parent_failures", (("parent", second.address),)): 0,
        })

    @inlineCallbacks
    def test_tlsFailureFailsOver(self):
        """
        An https parent whose port speaks plain HTTP fails the handshake: a
        connect failure, so the request goes to the next parent, and the
        first never had a byte of it in the clear.
        """
        plain = PlainSpeaker()
        port = reactor.listenTCP(0, plain, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        name = f"localhost:{port.getHost().port}"
        second = self.startProxy("second")
        child = self.startProxy("child", parents=[f"https://u:p@{name}", second.url])
        out, err, code = yield curl("-x", child.url, self.origin.url("/headers"))
        self.assertEqual(code, 0, err)
        self.assertEqual(self.vias(out), ["1.1 child", "1.1 second"])
        self.assertNotIn(b"GET", plain.received)
        self.assertNotIn(b"dTpw", plain.received)
        self.assertFalse(child.handler.egress.health[name].up)

    @inlineCallbacks
    def test_connectFailsOver(self):
        """
        A CONNECT fails over too, with the second parent's credentials.
        """
        port = self.startTLSOrigin()
        closed = self.closedPort()
        second = self.startProxy("second", connect_ports=[port])
        child = self.startProxy("child", connect_ports=[port],
                                parents=[f"http://first:pw@127.0.0.1:{closed}", f"http://second:pw@{second.address}"])
        out, err, code = yield curl("-x", child.url, "-k", f"https://localhost:{port}/bytes/1000")
        self.assertEqual((code, out), (0, pattern(1000)), err)
        self.assertEqual(self.seen["second"], [[basic(b"second:pw")]])

    @inlineCallbacks
    def test_refusalIsNotFailover(self):
        """
        A parent that answers a CONNECT with a refusal is up: its answer is
        passed on and the next parent is not asked.
        """
        port = self.startTLSOrigin()
        first = self.startProxy("first", connect_ports=[1])
        second = self.startProxy("second", connect_ports=[port])
        child = self.startProxy("child", connect_ports=[port], parents=[first.url, second.url])
        out, err, code = yield curl("-x", child.url, "-k", "-v", f"https://localhost:{port}/")
        self.assertNotEqual(code, 0)
        self.assertIn(b"502", err)
        self.assertEqual((len(self.seen["first"]), self.seen["second"]), (1, []))
        self.assertTrue(child.handler.egress.health[first.address].up)

    @inlineCallbacks
    def test_allDown(self):
        """
        With every parent unreachable the client gets the last one's error.
        """
        closed = [self.closedPort(), self.closedPort()]
        child = self.startProxy("child", parents=[f"http://127.0.0.1:{port}" for port in closed])
        out, err, code = yield curl("-x", child.url, "-D", "-", self.origin.url("/headers"))
        self.assertIn(b"HTTP/1.1 502 ", out)
        self.assertIn(f"parent proxy 127.0.0.1:{closed[1]} refused the connection".encode(), out)


class RuleTests(ParentsTestCase):
    @inlineCallbacks
    def test_perDestination(self):
        """
        One destination via parent A (with A's credentials), another via
        B, another direct: each parent sees only its own requests and
        credentials, and the direct origin none.
        """
        a = self.startProxy("A")
        b = self.startProxy("B")
        child = self.startProxy("child", parent_rules=[
            {"destinations": ["a.test"], "parents": [f"http://ua:pa@{a.address}"]},
            {"destinations": ["*.b.test", "b.test"], "parents": [f"http://ub:pb@{b.address}"]},
            {"destinations": ["direct.test"], "direct": True},
        ], parents=[f"http://ua:pa@{a.address}"])
        port = self.origin.port.getHost().port
        results = {}
        for host in ("a.test", "b.test", "direct.test"):
            out, err, code = yield curl("-x", child.url, "--proxy-user", "client:secret",
                                        f"http://{host}:{port}/headers")
            self.assertEqual(code, 0, err)
            self.assertEqual(self.fields(out, "proxy-authorization"), [])
            results[host] = self.vias(out)
        self.assertEqual(results, {"a.test": ["1.1 child", "1.1 A"], "b.test": ["1.1 child", "1.1 B"],
                                   "direct.test": ["1.1 child"]})
        self.assertEqual(self.seen["A"], [[basic(b"ua:pa")]])
        self.assertEqual(self.seen["B"], [[basic(b"ub:pb")]])

    @inlineCallbacks
    def test_defaultPoolForTheRest(self):
        a = self.startProxy("A")
        child = self.startProxy("child", parents=[a.url],
                                parent_rules=[{"destinations": ["127.0.0.0/8"], "direct": True}])
        port = self.origin.port.getHost().port
        out, err, code = yield curl("-x", child.url, f"http://a.test:{port}/headers")
        self.assertEqual(self.vias(out), ["1.1 child", "1.1 A"], err)
        out, err, code = yield curl("-x", child.url, self.origin.url("/headers"))
        self.assertEqual(self.vias(out), ["1.1 child"], err)
