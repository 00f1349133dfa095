"""
Automatic HTTPS against a real ACME server (pebble): a reverse proxy
obtains a certificate for its route's host, answering HTTP-01 from its own
routing tree or TLS-ALPN-01 on its own TLS listener, presents it to real
clients, takes a renewed one without dropping open connections, and finds
it stored after a restart; with on_demand, a name under a route's
wildcard is ordered at its first handshake, which waits for it.
"""

from __future__ import annotations

import http.client
import os
import ssl
import stat

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from dualproxy.admin.status import document

from ..pebbleserver import freePort, startLoopbackDNS, startPebble
from .support import Origin, Proxy, curl

try:
    import requests
except ImportError:
    requests = None


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class AcmeTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        if requests is None:
            raise SkipTest("the acme extra is not installed")
        self.origin = Origin("site")
        self.addCleanup(self.origin.stop)
        self.plainPort, self.tlsPort = freePort(), freePort()
        self.pebble = yield startPebble(self, httpPort=self.plainPort, tlsPort=self.tlsPort,
                                        dnsServer=startLoopbackDNS(self))
        self.storage = os.path.abspath(self.mktemp())
        response = yield threads.deferToThread(
            requests.get, self.pebble.managementURL + "/roots/0", verify=self.pebble.caBundle, timeout=10)
        self.root = os.path.abspath(self.mktemp())
        with open(self.root, "wb") as f:
            f.write(response.content)

    def start(self, challenge: str = "http-01", plainPort: int = 0, tlsPort: int = 0, host: str = "localhost",
              acme=(), **tls) -> Proxy:
        proxy = Proxy({
            "mode": "reverse",
            "listen": [f"tcp:{plainPort or self.plainPort}:interface=127.0.0.1"],
            "tls": dict(tls, listen=[f"tcp:{tlsPort or self.tlsPort}:interface=127.0.0.1"], acme=dict(
                acme, directory=self.pebble.directoryURL, ca=self.pebble.caBundle, storage=self.storage,
                contact=["mailto:ops@example.com"], challenge=challenge)),
            "reverse": {"pools": {"app": {"backends": [{"url": f"http://{self.origin.address}"}]}},
                        "routes": [{"host": host, "prefix": "/", "pool": "app"}]},
        })
        self.addCleanup(proxy.stop)
        return proxy

    @inlineCallbacks
    def proxy(self, *args, **kw):
        proxy = self.start(*args, **kw)
        # Bounded: a failed order is retried only a minute later.
        yield proxy.service.lasting.acme.ready("localhost").addTimeout(30, reactor)
        return proxy

    def fetch(self, port: int, *args: str, name: str = "localhost"):
        return curl("--cacert", self.root, "--resolve", f"{name}:{port}:127.0.0.1", *args,
                    f"https://{name}:{port}/name")

    def gauge(self, proxy, name: str):
        sample, = [sample for gauge, _, _, sample in proxy.service.metrics.gauges if gauge == name]
        return list(sample())

    @inlineCallbacks
    def test_http01FromTheRoutingTree(self):
        """
        The CA's HTTP-01 request reaches the plain listener, which
        redirects everything else to HTTPS; the certificate obtained is
        presented, verified by curl against pebble's root, and shown in
        the status and metrics.
        """
        proxy = yield self.proxy(redirect_http=True)
        out, err, code = yield self.fetch(self.tlsPort)
        self.assertEqual((code, out), (0, b"site"), err)
        out, err, code = yield curl("--include", f"http://localhost:{self.plainPort}/name")
        self.assertIn(b"308", out.split(b"\r\n")[0])
        state, = document(proxy.service)["acme"]["certificates"]
        self.assertEqual((state["name"], state["failures"], state["error"]), ("localhost", 0, None))
        self.assertEqual(self.gauge(proxy, "dualproxy_certificate_expiry_seconds"),
                         [({"name": "localhost"}, state["not_after"])])
        self.assertGreater(state["renew_at"], proxy.service.reactor.seconds())
        self.assertEqual(_mode(os.path.join(self.storage, "account", "key.pem")), 0o600)
        self.assertEqual(_mode(os.path.join(self.storage, "certs", "localhost", "key.pem")), 0o600)

    @inlineCallbacks
    def test_tlsAlpn01OnTheTLSListener(self):
        """
        TLS-ALPN-01 is answered by the TLS listener itself, which
        presented a placeholder until then.
        """
        proxy = yield self.proxy("tls-alpn-01")
        out, err, code = yield self.fetch(self.tlsPort)
        self.assertEqual((code, out), (0, b"site"), err)
        book = proxy.service.lasting.acme.book
        self.assertEqual(book.placeholder.names, ("localhost",))
        leaf = book.get("localhost").chain[0]
        self.assertNotEqual(leaf.issuer, leaf.subject)

    @inlineCallbacks
    def test_renewedWithoutDroppingConnections(self):
        """
        A renewed certificate is presented to new connections; one opened
        before keeps its certificate and goes on serving requests.
        """
        proxy = yield self.proxy()
        context = ssl.create_default_context(cafile=self.root)
        context.check_hostname = False

        def connect():
            connection = http.client.HTTPSConnection("127.0.0.1", self.tlsPort, context=context, timeout=10)
            self.addCleanup(connection.close)
            return connection

        def get(connection):
            connection.request("GET", "/name", headers={"Host": "localhost"})
            return connection.getresponse().read(), connection.sock.getpeercert(binary_form=True)

        kept = connect()
        before = yield threads.deferToThread(get, kept)
        self.assertEqual(before[0], b"site")
        yield proxy.service.lasting.acme.renew("localhost")
        after = yield threads.deferToThread(get, kept)
        self.assertEqual(after, before)
        fresh = yield threads.deferToThread(get, connect())
        self.assertEqual(fresh[0], b"site")
        self.assertNotEqual(fresh[1], before[1])
        # The old pair's directory went with it: one pair stored.
        self.assertEqual(len([name for name in os.listdir(os.path.join(self.storage, "certs"))
                              if name.startswith(".")]), 1)

    @inlineCallbacks
    def test_restartPresentsStored(self):
        first = yield self.proxy()
        presented = first.service.lasting.acme.book.get("localhost").certPath
        yield first.stop()
        again = yield self.proxy(plainPort=freePort(), tlsPort=freePort())
        acme = again.service.lasting.acme
        self.assertEqual(acme.book.get("localhost").certPath, presented)
        self.assertFalse(acme.certificates["localhost"].ordering)
        out, err, code = yield self.fetch(again.tlsPort)
        self.assertEqual((code, out), (0, b"site"), err)

    @inlineCallbacks
    def onDemand(self, challenge: str):
        proxy = self.start(challenge, host="*.example.com", acme={"on_demand": True})
        acme = proxy.service.lasting.acme
        self.assertEqual(acme.certificates, {})
        for name in ["a.example.com", "b.c.example.com"]:
            out, err, code = yield self.fetch(self.tlsPort, name=name)
            self.assertEqual((code, out), (0, b"site"), err)
            self.assertEqual(acme.book.get(name).names, (name,))
        self.assertEqual(sorted(acme.certificates), ["a.example.com", "b.c.example.com"])
        # A name the routes do not cover is not ordered: the placeholder answers it.
        out, err, code = yield self.fetch(self.tlsPort, name="example.org")
        self.assertEqual(code, 60, err)
        self.assertNotIn("example.org", acme.certificates)

    def test_onDemandHTTP01(self):
        """
        With on_demand and a route for C{*.example.com}, nothing is ordered
        at start; each name's first handshake waits while its certificate
        is ordered (validated over HTTP-01), and curl verifies it against
        pebble's root.
        """
        return self.onDemand("http-01")

    def test_onDemandTLSALPN01(self):
        """
        The same over TLS-ALPN-01: the CA's validation handshake, for the
        very name being waited for, is answered at once.
        """
        return self.onDemand("tls-alpn-01")
