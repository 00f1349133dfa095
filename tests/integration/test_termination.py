"""
TLS end to end in both modes: termination with SNI, HTTP/2, mutual TLS,
HSTS and redirects on the client side; verified TLS to backends.
"""

from __future__ import annotations

import json
import os
import socket
import ssl as stdssl

from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from dualproxy.server import http2
from dualproxy.config import ConfigError

from ..certs import CertificateAuthority
from .support import Origin, Proxy, StreamingOrigin, curl, pattern, pythonClient, serveTLS

# Connects with TLS to 127.0.0.1:PORT asking for NAME (or no SNI when NAME
# is "-"), trusting CA; prints the subject CN of the certificate it got.
SNI_CLIENT = """
import socket, ssl, sys
port, name, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
with socket.create_connection(("127.0.0.1", port)) as raw:
    with context.wrap_socket(raw, server_hostname=None if name == "-" else name) as tls:
        subject = dict(item[0] for item in tls.getpeercert()["subject"])
        print(subject["commonName"])
"""


class TerminationTestCase(TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.ca = CertificateAuthority(self.directory)
        self.www = self.ca.issue("www", names=["www.test"], commonName="www.test")
        self.api = self.ca.issue("api", names=["api.test", "*.api.test"], commonName="api.test")
        self.origin = Origin("backend")
        self.addCleanup(self.origin.stop)

    def proxy(self, tls=None, mode="reverse", **extra):
        settings = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "tls": dict(
                listen=["tcp:0:interface=127.0.0.1"],
                certificates=[{"cert": self.www[0], "key": self.www[1]}, {"cert": self.api[0], "key": self.api[1]}],
                **(tls or {}),
            ),
        }
        if mode == "reverse":
            settings["mode"] = "reverse"
            settings["reverse"] = {
                "pools": {"app": {"backends": [f"http://{self.origin.address}"]}},
                "routes": [{"prefix": "/", "pool": "app"}],
            }
        settings.update(extra)
        proxy = Proxy(settings)
        self.addCleanup(proxy.stop)
        return proxy, proxy.tlsPort

    def resolve(self, name, port):
        return ["--resolve", f"{name}:{port}:127.0.0.1", "--cacert", self.ca.certPath]


class SNITests(TerminationTestCase):
    @inlineCallbacks
    def test_certificateChosenByName(self):
        proxy, port = self.proxy()
        for name, expected in (("www.test", b"CN=www.test"), ("api.test", b"CN=api.test"),
                               ("v2.api.test", b"CN=api.test")):
            out, err, code = yield curl("-v", *self.resolve(name, port), f"https://{name}:{port}/name")
            self.assertEqual((code, out), (0, b"backend"), err)
            self.assertIn(b"subject: " + expected, err)
        for name, expected in (("api.test", b"api.test"), ("-", b"www.test")):
            out, err, code = yield pythonClient(SNI_CLIENT, str(port), name, self.ca.certPath)
            self.assertEqual((code, out.strip()), (0, expected), err)

    @inlineCallbacks
    def test_forwardedProtoIsHttps(self):
        proxy, port = self.proxy()
        out, err, code = yield curl(*self.resolve("www.test", port), f"https://www.test:{port}/headers")
        self.assertIn(["X-Forwarded-Proto", "https"], json.loads(out)["headers"])

    @inlineCallbacks
    def test_oldProtocolsRefused(self):
        proxy, port = self.proxy()
        out, err, code = yield curl("--tlsv1.1", "--tls-max", "1.1", *self.resolve("www.test", port),
                                    f"https://www.test:{port}/name")
        self.assertNotEqual(code, 0)
        self.assertEqual(out, b"")

    def test_uncoveredRouteHostIsAStartUpError(self):
        with self.assertRaises(ConfigError) as caught:
            Proxy({
                "mode": "reverse",
                "tls": {"listen": ["tcp:0:interface=127.0.0.1"],
                        "certificates": [{"cert": self.www[0], "key": self.www[1]}]},
                "reverse": {"pools": {"app": {"backends": [f"http://{self.origin.address}"]}},
                            "routes": [{"host": "other.test", "pool": "app"}]},
            })
        self.assertEqual(str(caught.exception),
                         "reverse.routes[0].host: no certificate in tls.certificates covers 'other.test'")

    def test_mismatchedKeyIsAStartUpError(self):
        with self.assertRaises(ConfigError) as caught:
            Proxy({"tls": {"listen": ["tcp:0:interface=127.0.0.1"],
                           "certificates": [{"cert": self.www[0], "key": self.api[1]}]}})
        self.assertTrue(str(caught.exception).startswith("tls.certificates[0]: "))
        self.assertIn("does not match", str(caught.exception))


class HTTP2Tests(TerminationTestCase):
    def setUp(self):
        if not http2.available():
            raise SkipTest("the http2 extra (h2) is not installed")
        super().setUp()

    @inlineCallbacks
    def test_h2NegotiatedAndStreams(self):
        proxy, port = self.proxy()
        out, err, code = yield curl("-v", "--http2", *self.resolve("www.test", port),
                                    f"https://www.test:{port}/bytes/4000000")
        self.assertEqual(code, 0, err)
        self.assertIn(b"ALPN: server accepted h2", err)
        self.assertEqual(out, pattern(4000000))

    @inlineCallbacks
    def test_h2RequestBody(self):
        proxy, port = self.proxy()
        out, err, code = yield curl("--http2", "--data-binary", "x" * 50000, *self.resolve("www.test", port),
                                    f"https://www.test:{port}/headers")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["body"], "x" * 50000)

    @inlineCallbacks
    def test_h2BodyLimit(self):
        """
        limits.max_body holds for HTTP/2 streams: by the declared length
        before anything goes upstream, and by counting a body sent without
        one; the connection goes on serving other streams.
        """
        proxy, port = self.proxy(limits={"max_body": 1000})
        body = os.path.join(self.directory, "body")
        with open(body, "wb") as f:
            f.write(b"x" * 50000)
        url = f"https://www.test:{port}/headers"
        out, err, code = yield curl("-D", "-", "--http2", "--data-binary", f"@{body}", *self.resolve("www.test", port),
                                    url)
        self.assertIn(b"HTTP/2 413", out)
        self.assertIn(b"larger than the limit of 1000 bytes", out)
        self.assertEqual(self.origin.connections, 0)
        out, err, code = yield curl("-D", "-", "--http2", "--data-binary", f"@{body}", "-H", "Content-Length:",
                                    *self.resolve("www.test", port), url, "--next", "--http2",
                                    *self.resolve("www.test", port), f"https://www.test:{port}/name")
        self.assertIn(b"HTTP/2 413", out)
        self.assertTrue(out.endswith(b"backend"), out)

    @inlineCallbacks
    def test_h2ClientThatStopsReadingStopsTheOrigin(self):
        """
        An HTTP/2 client that grants a 2 GiB window and then reads nothing:
        backpressure still reaches the origin, which is paused after a few
        MiB instead of the proxy queueing the response in memory.
        """
        origin = StreamingOrigin(1 << 30)
        self.addCleanup(origin.stop)
        proxy, port = self.proxy(reverse={"pools": {"app": {"backends": [f"http://{origin.address}"]}},
                                          "routes": [{"prefix": "/", "pool": "app"}]})
        client = yield deferToThread(self.stalledH2Client, port)
        self.addCleanup(client.close)
        yield origin.paused.addTimeout(20, reactor)
        # Watch a while: the origin must stay stopped, not be drained into
        # the proxy's memory.
        yield deferLater(reactor, 1.0)
        self.assertEqual(origin._producing, "paused")
        self.assertLess(origin.sent, 64 << 20)

    @inlineCallbacks
    def test_h2StalledConnectionClosed(self):
        """
        An HTTP/2 client that reads nothing and sends nothing is closed
        after timeouts.client_idle, forcibly once client_write has passed
        too, and the upstream with it.
        """
        origin = StreamingOrigin(1 << 30)
        self.addCleanup(origin.stop)
        proxy, port = self.proxy(reverse={"pools": {"app": {"backends": [f"http://{origin.address}"]}},
                                          "routes": [{"prefix": "/", "pool": "app"}]},
                                 timeouts={"client_idle": 2.0, "client_write": 0.5})
        client = yield deferToThread(self.stalledH2Client, port, 16384)
        self.addCleanup(client.close)
        yield origin.lost.addTimeout(10, reactor)

    def stalledH2Client(self, port: int, enough: int = 100000) -> socket.socket:
        """
        An HTTP/2 client that grants a 2 GiB window, asks for /, reads
        C{enough} bytes of the answer and then nothing more.
        """
        import h2.config
        import h2.connection
        import h2.settings

        context = stdssl.create_default_context(cafile=self.ca.certPath)
        context.set_alpn_protocols(["h2"])
        client = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="www.test")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
        connection.increment_flow_control_window(2 ** 31 - 1 - 65535)
        connection.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                                    (":authority", "www.test")], end_stream=True)
        client.sendall(connection.data_to_send())
        received = 0
        while received < enough:
            data = client.recv(65536)
            if not data:
                raise ConnectionError(f"closed by the proxy after {received} bytes")
            received += len(data)
            connection.receive_data(data)
            client.sendall(connection.data_to_send())
        return client

    @inlineCallbacks
    def test_h2ErrorNamesItsType(self):
        """
        An error over HTTP/2 carries the same Proxy-Status as over HTTP/1.1.
        """
        yield self.origin.stop()
        proxy, port = self.proxy()
        out, err, code = yield curl("-D", "-", "--http2", *self.resolve("www.test", port), f"https://www.test:{port}/")
        self.assertIn(b"HTTP/2 502", out)
        self.assertIn(b"proxy-status: dualproxy; error=connection_refused;", out)

    @inlineCallbacks
    def test_http11ClientsUnaffected(self):
        proxy, port = self.proxy()
        out, err, code = yield curl("-v", "--http1.1", *self.resolve("www.test", port), f"https://www.test:{port}/name")
        self.assertEqual((code, out), (0, b"backend"), err)
        self.assertIn(b"< HTTP/1.1 200 OK", err)


class ClientCertificateTests(TerminationTestCase):
    @inlineCallbacks
    def test_mutualTLS(self):
        alice = self.ca.issue("alice", commonName="alice", organization="Example", client=True)
        proxy, port = self.proxy({"client_ca": self.ca.certPath})
        out, err, code = yield curl(*self.resolve("www.test", port), f"https://www.test:{port}/name")
        self.assertNotEqual(code, 0)
        out, err, code = yield curl("--cert", alice[0], "--key", alice[1], "-H", "X-Client-Subject: CN=mallory",
                                    *self.resolve("www.test", port), f"https://www.test:{port}/headers")
        self.assertEqual(code, 0, err)
        subjects = [value for name, value in json.loads(out)["headers"] if name == "X-Client-Subject"]
        self.assertEqual(subjects, ["CN=alice,O=Example"])


    @inlineCallbacks
    def test_routeLimitedToSubjects(self):
        """
        The verified subject reaches routing: a route can admit only some
        client certificates.
        """
        alice = self.ca.issue("alice", commonName="alice", client=True)
        bob = self.ca.issue("bob", commonName="bob", client=True)
        proxy, port = self.proxy(
            {"client_ca": self.ca.certPath},
            reverse={"pools": {"app": {"backends": [f"http://{self.origin.address}"]}},
                     "routes": [{"prefix": "/", "pool": "app", "client_subjects": ["CN=alice"]}]},
        )
        for who, expected in ((alice, b"200"), (bob, b"403")):
            out, err, code = yield curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--cert", who[0], "--key",
                                        who[1], *self.resolve("www.test", port), f"https://www.test:{port}/name")
            self.assertEqual(out, expected, err)


class PolicyTests(TerminationTestCase):
    @inlineCallbacks
    def test_hstsAndRedirect(self):
        proxy, port = self.proxy({"hsts": "max-age=31536000", "redirect_http": True})
        out, err, code = yield curl("-D", "-", *self.resolve("www.test", port), f"https://www.test:{port}/name")
        self.assertIn(b"strict-transport-security: max-age=31536000", out.lower())
        plain = proxy.address.split(":")[1]
        out, err, code = yield curl("-D", "-", "-H", "Host: www.test", f"http://127.0.0.1:{plain}/a?b=1")
        self.assertIn(b"HTTP/1.1 308 Permanent Redirect", out)
        self.assertIn(f"Location: https://www.test:{port}/a?b=1".encode(), out)

    @inlineCallbacks
    def test_forwardProxyOverTLS(self):
        """
        A forward proxy reachable over TLS, as clients with https:// proxy
        URLs expect.
        """
        proxy, port = self.proxy(mode="forward", forward={"allow_destinations": ["127.0.0.0/8"]})
        out, err, code = yield curl("-x", f"https://www.test:{port}", "--proxy-cacert", self.ca.certPath,
                                    *self.resolve("www.test", port), self.origin.url("/name"))
        self.assertEqual((code, out), (0, b"backend"), err)


class UpstreamTLSTests(TestCase):
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.ca = CertificateAuthority(directory)
        cert, key = self.ca.issue("backend", names=["backend.test"])
        with open(cert, "rb") as c, open(key, "rb") as k:
            self.port = serveTLS(self, Origin("tls-backend"), c.read(), k.read())

    def proxy(self, **pool):
        proxy = Proxy({
            "mode": "reverse",
            "reverse": {"pools": {"app": dict(backends=[f"https://127.0.0.1:{self.port}"], retries=0, **pool)},
                        "routes": [{"prefix": "/", "pool": "app"}]},
        })
        self.addCleanup(proxy.stop)
        return proxy

    @inlineCallbacks
    def test_customCAAccepted(self):
        proxy = self.proxy(tls_ca=self.ca.certPath, tls_name="backend.test")
        out, err, code = yield curl(proxy.url + "/name")
        self.assertEqual((code, out), (0, b"tls-backend"), err)

    @inlineCallbacks
    def test_wrongNameIs502AndABackendFailure(self):
        proxy = self.proxy(tls_ca=self.ca.certPath, tls_name="elsewhere.test",
                           health={"passive_failures": 1, "cool_off": 30})
        out, err, code = yield curl("-D", "-", proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"certificate verify failed: hostname mismatch", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=tls_certificate_error;", out)
        out, err, code = yield curl("-D", "-", proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 503 Service Unavailable", out)

    @inlineCallbacks
    def test_untrustedIs502(self):
        proxy = self.proxy(tls_name="backend.test")
        out, err, code = yield curl("-D", "-", proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"certificate verify failed", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=tls_certificate_error;", out)

    @inlineCallbacks
    def test_clientCertificateToBackend(self):
        """
        Mutual TLS to a backend that requires a client certificate: refused
        without one, served with the pool's.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from dualproxy.tls import ServerTLS, loadPair

        cert, key = self.ca.issue("strict", names=["strict.test"])
        strict = Origin("strict")
        strict.port.stopListening()
        creator = ServerTLS([loadPair(cert, key)], loadPair(cert, key), clientCA=self.ca.certPath)
        strict.port = reactor.listenTCP(0, TLSMemoryBIOFactory(creator, False, strict.site), interface="127.0.0.1")
        self.addCleanup(strict.port.stopListening)
        self.port = strict.port.getHost().port
        proxy = self.proxy(tls_ca=self.ca.certPath, tls_name="strict.test")
        out, err, code = yield curl("-D", "-", proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        clientCert, clientKey = self.ca.issue("proxy", commonName="proxy", client=True)
        proxy = self.proxy(tls_ca=self.ca.certPath, tls_name="strict.test",
                           tls_client_cert={"cert": clientCert, "key": clientKey})
        out, err, code = yield curl(proxy.url + "/name")
        self.assertEqual((code, out), (0, b"strict"), err)

    @inlineCallbacks
    def test_verificationOffExplicitly(self):
        proxy = self.proxy(tls_verify=False)
        out, err, code = yield curl(proxy.url + "/name")
        self.assertEqual((code, out), (0, b"tls-backend"), err)
