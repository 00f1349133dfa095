"""
Forward mode end to end: real sockets on 127.0.0.1, origins started here,
curl and a Python HTTP client as the users.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from dualproxy.policy.auth import hashPassword
from dualproxy.relay import splice

from .support import (
    REPEAT_CLIENT,
    Origin,
    Proxy,
    RawOrigin,
    Survivors,
    curl,
    pattern,
    pythonClient,
    selfSignedCertificate,
    serveTLS,
)

LOOPBACK = {"forward": {"allow_destinations": ["127.0.0.0/8"]}}

# A keep-alive Python client: GETs URL through the proxy N times on one
# connection and prints a JSON list of [status, body length] pairs.
KEEPALIVE_CLIENT = """
import http.client, json, sys
proxy, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = proxy.split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=20)
out = []
for _ in range(count):
    conn.request("GET", url)
    response = conn.getresponse()
    out.append([response.status, len(response.read())])
print(json.dumps(out))
"""


# Reads the first 300 KB of a response through the proxy, then hangs up.
PARTIAL_CLIENT = """
import socket, sys
host, port = sys.argv[1].split(":")
client = socket.create_connection((host, int(port)), timeout=10)
url = sys.argv[2]
client.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (url, url.split("/")[2])).encode())
received = 0
while received < 300000:
    received += len(client.recv(65536))
client.close()
"""

# Sends one absolute-form GET over a unix socket; prints the status and body.
UNIX_CLIENT = """
import socket, sys
path, url = sys.argv[1], sys.argv[2]
client = socket.socket(socket.AF_UNIX)
client.connect(path)
host = url.split("/")[2]
client.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n" % (url, host)).encode())
data = b""
while True:
    chunk = client.recv(65536)
    if not chunk:
        break
    data += chunk
head, body = data.split(b"\\r\\n\\r\\n", 1)
print(head.split()[1].decode())
sys.stdout.write(body.decode())
"""


def _pipes() -> int:
    """
    Pipes this process has open (splicing uses one per large body).
    """
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return count


def settings(**forward):
    merged = dict(LOOPBACK["forward"])
    merged.update(forward)
    return {"forward": merged}


class ForwardTestCase(TestCase):
    def startOrigin(self):
        origin = Origin()
        self.addCleanup(origin.stop)
        return origin

    def startRaw(self, response, close=True):
        origin = RawOrigin(response, close)
        self.addCleanup(origin.stop)
        return origin

    def startProxy(self, config=None, **kw):
        proxy = Proxy(config if config is not None else settings(), **kw)
        self.addCleanup(proxy.stop)
        return proxy


class RelayTests(ForwardTestCase):
    @inlineCallbacks
    def test_getRelayedInOriginForm(self):
        """
        RFC 9112 section 3.2.2: the absolute-form target becomes origin form
        upstream, with Host generated from the target, hop-by-hop fields
        removed and Via added both ways.
        """
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield curl(
            "-x", proxy.url, "-D", "-",
            "-H", "Connection: X-Secret", "-H", "X-Secret: 1", "-H", "Keep-Alive: timeout=5",
            "-H", "TE: trailers", "-H", "Proxy-Authorization: Basic Zm9vOmJhcg==",
            origin.url("/headers?q=1"),
        )
        self.assertEqual(code, 0, err)
        head, body = out.split(b"\r\n\r\n", 1)
        self.assertIn(b"Via: 1.1 dualproxy", head)
        seen = json.loads(body)
        self.assertEqual(seen["uri"], "/headers?q=1")
        names = [name.lower() for name, _ in seen["headers"]]
        for hop in ("connection", "x-secret", "keep-alive", "te", "proxy-authorization"):
            self.assertNotIn(hop, names)
        self.assertIn(["Host", origin.address], seen["headers"])
        self.assertIn(["Via", "1.1 dualproxy"], seen["headers"])
        self.assertNotIn("x-forwarded-for", names)

    @inlineCallbacks
    def test_pythonClientKeepAliveAndPooledOrigin(self):
        """
        Ten requests on one client connection reach the origin over one
        pooled connection.
        """
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield pythonClient(KEEPALIVE_CLIENT, proxy.address, origin.url("/bytes/1000"), "10")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), [[200, 1000]] * 10)
        self.assertEqual(origin.connections, 1)

    @inlineCallbacks
    def test_separateClientsReuseIdleOriginConnection(self):
        origin = self.startOrigin()
        proxy = self.startProxy()
        for _ in range(3):
            out, err, code = yield curl("-x", proxy.url, origin.url("/bytes/10"))
            self.assertEqual((code, len(out)), (0, 10), err)
        self.assertEqual(origin.connections, 1)

    @inlineCallbacks
    def test_finishedExchangesFreedAtOnce(self):
        """
        Nothing a relayed request made waits for the garbage collector;
        only the connection's last exchange stays, as its connection does.
        """
        origin = self.startOrigin()
        proxy = self.startProxy()
        survivors = Survivors(self)
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, origin.url("/bytes/10"), "20")
        self.assertEqual(code, 0, err)
        self.assertEqual(survivors.made, 40, "20 exchanges, 20 relays")
        self.assertLessEqual(len(survivors.alive()), 1, survivors.alive())

    @inlineCallbacks
    def test_idlePoolBounded(self):
        """
        At most max_idle_per_host idle connections are kept per origin.
        """
        origin = self.startOrigin()
        proxy = self.startProxy({"forward": LOOPBACK["forward"], "upstream": {"max_idle_per_host": 1}})
        urls = [origin.url("/bytes/10")] * 3
        out, err, code = yield curl("-x", proxy.url, "--parallel", "--parallel-immediate", *urls)
        self.assertEqual(code, 0, err)
        self.assertLessEqual(proxy.handler.pool.idleCount(("127.0.0.1", origin.port.getHost().port)), 1)

    @inlineCallbacks
    def test_http10Client(self):
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield curl("-0", "-x", proxy.url, origin.url("/bytes/300"))
        self.assertEqual((code, out), (0, pattern(300)), err)

    @inlineCallbacks
    def test_largeResponseStreamsIntact(self):
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, origin.url("/bytes/5000000"))
        self.assertEqual(code, 0, err)
        self.assertEqual(out, pattern(5000000))

    @inlineCallbacks
    def test_largeBodiesSplicedOnReusedConnections(self):
        """
        Large Content-Length bodies between plain sockets go by splice: the
        bytes arrive intact, the client connection and the pooled origin
        connection carry on with the next request, and no descriptor leaks.
        """
        if splice._splice is None:
            raise SkipTest("splice(2) is Linux only")
        origin = self.startOrigin()
        proxy = self.startProxy()
        # The first child process makes the reactor open its own pipes.
        yield curl("-x", proxy.url, origin.url("/bytes/1"))
        before = _pipes()
        started = []
        start = splice.Splicer.start
        self.patch(splice.Splicer, "start", lambda splicer: started.append(splicer) or start(splicer))
        out, err, code = yield pythonClient(KEEPALIVE_CLIENT, proxy.address, origin.url("/bytes/3000000"), "3")
        self.assertEqual((code, json.loads(out)), (0, [[200, 3000000]] * 3), err)
        self.assertEqual(origin.connections, 1)
        out, err, code = yield curl("-x", proxy.url, origin.url("/bytes/2000000"))
        self.assertEqual(out, pattern(2000000))
        self.assertEqual(len(started), 4)
        self.assertEqual(_pipes(), before)

    @inlineCallbacks
    def test_originDyingMidSpliceCutsTheClient(self):
        raw = self.startRaw(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 600000)
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, raw.url("/"))
        self.assertIn(code, (18, 56), err)
        self.assertLess(len(out), 2000000)

    @inlineCallbacks
    def test_clientLeavingMidSplice(self):
        """
        A client that goes away mid-body: the origin connection is dropped
        and the proxy keeps serving.
        """
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield pythonClient(PARTIAL_CLIENT, proxy.address, origin.url("/bytes/50000000"))
        self.assertEqual(code, 0, err)
        out, err, code = yield curl("-x", proxy.url, origin.url("/bytes/1000000"))
        self.assertEqual(out, pattern(1000000))

    @inlineCallbacks
    def test_postWithContentLength(self):
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "--data-binary", "a=1&b=2", origin.url("/headers"))
        self.assertEqual(code, 0, err)
        seen = json.loads(out)
        self.assertEqual((seen["method"], seen["body"]), ("POST", "a=1&b=2"))
        self.assertIn(["Content-Length", "7"], seen["headers"])

    @inlineCallbacks
    def test_chunkedUploadRelayedChunked(self):
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield curl(
            "-x", proxy.url, "-H", "Transfer-Encoding: chunked", "--data-binary", "x" * 100000,
            origin.url("/headers"),
        )
        self.assertEqual(code, 0, err)
        seen = json.loads(out)
        self.assertEqual(seen["body"], "x" * 100000)

    @inlineCallbacks
    def test_closeDelimitedResponseRechunked(self):
        """
        RFC 9112 section 6.3 rule 8: a body delimited by the origin closing
        is relayed to an HTTP/1.1 client chunked, keeping its connection.
        """
        raw = self.startRaw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "-D", "-", raw.url("/"))
        self.assertEqual(code, 0, err)
        head, body = out.split(b"\r\n\r\n", 1)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(body, b"until the end")

    @inlineCallbacks
    def test_chunkedResponse(self):
        raw = self.startRaw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            close=False,
        )
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, raw.url("/"))
        self.assertEqual((code, out), (0, b"hello"), err)

    @inlineCallbacks
    def test_headAndNoContent(self):
        origin = self.startOrigin()
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "-I", origin.url("/bytes/123"))
        self.assertEqual(code, 0, err)
        self.assertIn(b"Content-Length: 123", out)
        out, err, code = yield curl("-x", proxy.url, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                    origin.url("/status/204"))
        self.assertEqual((code, out), (0, b"204"), err)


class UnixListenerTests(ForwardTestCase):
    @inlineCallbacks
    def test_unixSocketListener(self):
        """
        A unix: endpoint serves local users; there is no client address to
        check or to reveal.
        """
        origin = self.startOrigin()
        # AF_UNIX paths are short: not under the test's deep scratch directory.
        directory = tempfile.mkdtemp(prefix="dualproxy")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "proxy.sock")
        self.startProxy({"listen": [f"unix:{path}"], **settings(x_forwarded_for=["0.0.0.0/0"])})
        out, err, code = yield pythonClient(UNIX_CLIENT, path, origin.url("/headers"))
        self.assertEqual(code, 0, err)
        status, body = out.split(b"\n", 1)
        self.assertEqual(status, b"200")
        names = [name.lower() for name, _ in json.loads(body)["headers"]]
        self.assertNotIn("x-forwarded-for", names)


class ErrorTests(ForwardTestCase):
    @inlineCallbacks
    def test_originRefused(self):
        raw = self.startRaw(b"")
        address = raw.address
        yield raw.stop()
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "-D", "-", f"http://{address}/")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"refused the connection", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_refused; details=", out)
        self.assertNotIn(b"Traceback", out)

    @inlineCallbacks
    def test_dnsFailure(self):
        proxy = self.startProxy(names={})
        out, err, code = yield curl("-x", proxy.url, "-D", "-", "http://missing.test/")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"DNS lookup failed for origin missing.test:80", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=dns_error;", out)

    @inlineCallbacks
    def test_dnsLookupThatNeverAnswersTimesOut(self):
        proxy = self.startProxy({"timeouts": {"connect": 0.2}}, names={})
        out, err, code = yield curl("-x", proxy.url, "-D", "-", "http://silent.test/")
        self.assertIn(b"HTTP/1.1 504 Gateway Timeout", out)
        self.assertIn(b"DNS lookup for origin silent.test:80 timed out", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=dns_timeout;", out)

    @inlineCallbacks
    def test_originTimeout(self):
        raw = self.startRaw(None)
        proxy = self.startProxy({"forward": LOOPBACK["forward"], "timeouts": {"upstream_read": 0.3}})
        out, err, code = yield curl("-x", proxy.url, "-D", "-", raw.url("/"))
        self.assertIn(b"HTTP/1.1 504 Gateway Timeout", out)
        self.assertIn(b"upstream timed out", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_read_timeout;", out)

    @inlineCallbacks
    def test_malformedResponseIs502(self):
        raw = self.startRaw(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "-D", "-", raw.url("/"))
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=http_protocol_error;", out)

    @inlineCallbacks
    def test_upstreamClosingMidHeadIs502(self):
        raw = self.startRaw(b"HTTP/1.1 200 OK\r\nContent-Le")
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "-D", "-", raw.url("/"))
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(
            b'Proxy-Status: dualproxy; error=http_response_incomplete; details="upstream closed the connection early"',
            out,
        )

    @inlineCallbacks
    def test_malformedRequestIs400(self):
        proxy = self.startProxy()
        out, err, code = yield curl("-x", proxy.url, "-D", "-", "-H", "Bad Name: x", "http://127.0.0.1:1/")
        self.assertIn(b"HTTP/1.1 400 Bad Request", out)

    @inlineCallbacks
    def test_proxyPagesThroughSharedRouting(self):
        """
        The forward proxy serves its own pages (a PAC file) through the same
        routing layer as reverse mode; other origin-form requests stay 400.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "proxy.pac"), "w") as f:
            f.write("function FindProxyForURL(url, host) { return 'DIRECT'; }")
        proxy = self.startProxy(settings(routes=[{"prefix": "/pac", "static": directory}]))
        out, err, code = yield curl(proxy.url + "/pac/proxy.pac")
        self.assertEqual(out, b"function FindProxyForURL(url, host) { return 'DIRECT'; }")
        out, err, code = yield curl("-D", "-", proxy.url + "/other")
        self.assertIn(b"HTTP/1.1 400 Bad Request", out)

    @inlineCallbacks
    def test_originFormRequestRefused(self):
        proxy = self.startProxy()
        out, err, code = yield curl("-D", "-", proxy.url + "/")
        self.assertIn(b"HTTP/1.1 400 Bad Request", out)
        self.assertIn(b"not a proxy request", out)


class AccessControlTests(ForwardTestCase):
    @inlineCallbacks
    def test_clientNotAllowed(self):
        origin = self.startOrigin()
        proxy = self.startProxy(settings(allow_clients=["10.0.0.0/8"]))
        out, err, code = yield curl("-x", proxy.url, "-D", "-", origin.url("/bytes/1"))
        self.assertIn(b"HTTP/1.1 403 Forbidden", out)
        self.assertIn(b"may not use the proxy", out)
        self.assertEqual(origin.connections, 0)

    @inlineCallbacks
    def test_privateDestinationsRefusedByDefault(self):
        """
        No SSRF: loopback is refused unless re-enabled, by address and by a
        name resolving to it.
        """
        origin = self.startOrigin()
        proxy = self.startProxy({}, names={"sneaky.test": ["127.0.0.1"], "meta.test": ["169.254.169.254"]})
        for url in (origin.url("/bytes/1"), f"http://sneaky.test:{origin.port.getHost().port}/",
                    "http://meta.test/latest/meta-data/"):
            out, err, code = yield curl("-x", proxy.url, "-D", "-", url)
            self.assertIn(b"HTTP/1.1 403 Forbidden", out, url)
            self.assertIn(b"private address", out)
            self.assertIn(b"Proxy-Status: dualproxy; error=destination_ip_prohibited;", out)
        self.assertEqual(origin.connections, 0)

    @inlineCallbacks
    def test_nameResolvedAndConnectedToCheckedAddress(self):
        origin = self.startOrigin()
        proxy = self.startProxy(names={"origin.test": ["127.0.0.1"]})
        out, err, code = yield curl("-x", proxy.url, f"http://origin.test:{origin.port.getHost().port}/headers")
        self.assertEqual(code, 0, err)
        self.assertIn(["Host", f"origin.test:{origin.port.getHost().port}"], json.loads(out)["headers"])

    @inlineCallbacks
    def test_denyList(self):
        origin = self.startOrigin()
        proxy = self.startProxy(
            settings(deny_destinations=[".blocked.test", "127.0.0.2/32"]),
            names={"www.blocked.test": ["127.0.0.1"]},
        )
        for url, errorType in (("http://www.blocked.test/", b"http_request_denied"),
                               ("http://127.0.0.2/", b"destination_ip_prohibited")):
            out, err, code = yield curl("-x", proxy.url, "-D", "-", url)
            self.assertIn(b"HTTP/1.1 403 Forbidden", out)
            self.assertIn(b"Proxy-Status: dualproxy; error=" + errorType + b";", out)
        self.assertEqual(origin.connections, 0)

    @inlineCallbacks
    def test_proxyAuthentication(self):
        """
        RFC 9110 section 11.7: 407 with a challenge without credentials or
        with wrong ones; the credentials never reach the origin.
        """
        origin = self.startOrigin()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"alice:{hashPassword('wonderland')}\n")
        proxy = self.startProxy(settings(auth_file=path, auth_realm="tests"))
        out, err, code = yield curl("-x", proxy.url, "-D", "-", origin.url("/headers"))
        self.assertIn(b"HTTP/1.1 407 Proxy Authentication Required", out)
        self.assertIn(b'Proxy-Authenticate: Basic realm="tests"', out)
        out, err, code = yield curl("-x", proxy.url, "-U", "alice:wrong", "-D", "-", origin.url("/headers"))
        self.assertIn(b"HTTP/1.1 407", out)
        out, err, code = yield curl("-x", proxy.url, "-U", "alice:wonderland", origin.url("/headers"))
        self.assertEqual(code, 0, err)
        names = [name.lower() for name, _ in json.loads(out)["headers"]]
        self.assertNotIn("proxy-authorization", names)


class PrivacyTests(ForwardTestCase):
    @inlineCallbacks
    def test_forwardedForOnlyForTrustedNetworks(self):
        origin = self.startOrigin()
        proxy = self.startProxy(settings(x_forwarded_for=["127.0.0.0/8"]))
        out, err, code = yield curl("-x", proxy.url, origin.url("/headers"))
        self.assertIn(["X-Forwarded-For", "127.0.0.1"], json.loads(out)["headers"])

    @inlineCallbacks
    def test_anonymousStripsIdentifyingHeaders(self):
        origin = self.startOrigin()
        proxy = self.startProxy(settings(anonymous=True))
        out, err, code = yield curl(
            "-x", proxy.url, "-A", "secret-agent", "-e", "http://me.example/", "-H", "From: me@example.com",
            "-H", "X-Kept: yes", origin.url("/headers"),
        )
        names = {name.lower() for name, _ in json.loads(out)["headers"]}
        self.assertFalse(names & {"user-agent", "referer", "from"})
        self.assertIn("x-kept", names)


class TunnelTests(ForwardTestCase):
    def startTLSOrigin(self):
        origin = Origin()
        return origin, serveTLS(self, origin, *selfSignedCertificate("localhost"))

    @inlineCallbacks
    def test_connectToTLSOrigin(self):
        origin, port = self.startTLSOrigin()
        proxy = self.startProxy(settings(connect_ports=[port]), names={"localhost": ["127.0.0.1"]})
        out, err, code = yield curl("-x", proxy.url, "-k", f"https://localhost:{port}/bytes/200000")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, pattern(200000))

    @inlineCallbacks
    def test_httpsURLFetchedOverVerifiedTLS(self):
        """
        A GET for an https:// URL (absolute form, no CONNECT): the proxy
        speaks TLS to the origin and verifies it; a certificate that does
        not name the origin is a 502 saying so.
        """
        cert, key = selfSignedCertificate("localhost")
        bundle = os.path.abspath(self.mktemp())
        with open(bundle, "wb") as f:
            f.write(cert)
        origin = Origin()
        port = serveTLS(self, origin, cert, key)
        proxy = self.startProxy(settings(tls_ca=bundle),
                                names={"localhost": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        out, err, code = yield pythonClient(KEEPALIVE_CLIENT, proxy.address, f"https://localhost:{port}/bytes/1000", "2")
        self.assertEqual((code, json.loads(out)), (0, [[200, 1000]] * 2), err)
        self.assertEqual(origin.connections, 1)
        out, err, code = yield curl("-D", "-", "--request-target", f"https://other.test:{port}/bytes/1",
                                    "-x", proxy.url, f"http://other.test:{port}/")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"certificate verify failed: hostname mismatch", out)

    @inlineCallbacks
    def test_connectPortNotAllowed(self):
        origin, port = self.startTLSOrigin()
        proxy = self.startProxy(names={"localhost": ["127.0.0.1"]})
        out, err, code = yield curl("-x", proxy.url, "-k", "-v", f"https://localhost:{port}/")
        self.assertNotEqual(code, 0)
        self.assertIn(b"403", err)


class ParentProxyTests(ForwardTestCase):
    @inlineCallbacks
    def test_chainedThroughParent(self):
        origin = self.startOrigin()
        parent = self.startProxy(settings(via="parent"))
        child = self.startProxy(settings(parent=f"http://user:pw@{parent.address}", via="child"))
        out, err, code = yield curl("-x", child.url, origin.url("/headers"))
        self.assertEqual(code, 0, err)
        vias = [value for name, value in json.loads(out)["headers"] if name == "Via"]
        self.assertEqual(vias, ["1.1 child", "1.1 parent"])

    @inlineCallbacks
    def test_connectThroughParent(self):
        port = serveTLS(self, Origin(), *selfSignedCertificate("localhost"))
        parent = self.startProxy(settings(via="parent", connect_ports=[port]), names={"localhost": ["127.0.0.1"]})
        child = self.startProxy(settings(parent=f"http://{parent.address}", via="child", connect_ports=[port]))
        out, err, code = yield curl("-x", child.url, "-k", f"https://localhost:{port}/bytes/1000")
        self.assertEqual((code, out), (0, pattern(1000)), err)

    @inlineCallbacks
    def test_loopDetected(self):
        proxy = self.startProxy(settings(via="me"))
        out, err, code = yield curl("-x", proxy.url, "-D", "-", "-H", "Via: 1.1 me", "http://127.0.0.1:1/")
        self.assertIn(b"HTTP/1.1 508 Loop Detected", out)


class AccessLogTests(ForwardTestCase):
    def capture(self):
        events = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    @inlineCallbacks
    def test_combinedLogFormat(self):
        origin = self.startOrigin()
        proxy = self.startProxy({"access_log": "combined", **settings()})
        events = self.capture()
        yield curl("-x", proxy.url, "-A", "ua/1", origin.url("/bytes/42"))
        lines = [e["line"] for e in events if e.get("log_namespace") == "dualproxy.access"]
        self.assertEqual(len(lines), 1)
        self.assertRegex(
            lines[0],
            r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
            r'"GET http://127\.0\.0\.1:\d+/bytes/42 HTTP/1\.1" 200 42 "-" "ua/1"$',
        )

    @inlineCallbacks
    def test_ownFile(self):
        """
        With access_log_file the lines go to that file, not through the
        log observers, once the service stops at the latest.
        """
        origin = self.startOrigin()
        path = self.mktemp()
        proxy = self.startProxy({"access_log": "combined", "access_log_file": path, **settings()})
        events = self.capture()
        yield curl("-x", proxy.url, "-A", "ua/1", origin.url("/bytes/42"))
        yield proxy.stop()
        self.assertEqual([e for e in events if e.get("log_namespace") == "dualproxy.access"], [])
        with open(path) as written:
            lines = written.read().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r'"GET http://127\.0\.0\.1:\d+/bytes/42 HTTP/1\.1" 200 42 "-" "ua/1"$')

    @inlineCallbacks
    def test_jsonLines(self):
        origin = self.startOrigin()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"bob:{hashPassword('pw')}\n")
        proxy = self.startProxy({"access_log": "json", **settings(auth_file=path)})
        events = self.capture()
        yield curl("-x", proxy.url, "-U", "bob:pw", origin.url("/bytes/7"))
        lines = [json.loads(e["line"]) for e in events if e.get("log_namespace") == "dualproxy.access"]
        self.assertEqual(len(lines), 1)
        self.assertEqual((lines[0]["status"], lines[0]["bytes"], lines[0]["user"]), (200, 7, "bob"))
        self.assertIsNone(lines[0]["error_type"])
        self.assertTrue(lines[0]["completed"])

    @inlineCallbacks
    def test_jsonLineNamesErrorType(self):
        """
        The access log names the same RFC 9209 error type the client got
        in Proxy-Status.
        """
        raw = self.startRaw(b"")
        address = raw.address
        yield raw.stop()
        proxy = self.startProxy({"access_log": "json", **settings()})
        events = self.capture()
        yield curl("-x", proxy.url, f"http://{address}/")
        lines = [json.loads(e["line"]) for e in events if e.get("log_namespace") == "dualproxy.access"]
        self.assertEqual(len(lines), 1)
        self.assertEqual((lines[0]["status"], lines[0]["error_type"]), (502, "connection_refused"))
        self.assertIn("refused the connection", lines[0]["error"])


class FilterTests(ForwardTestCase):
    @inlineCallbacks
    def test_filterRewritesAndRefuses(self):
        from dualproxy.http.message import Refusal

        class Stamp:
            name = "stamp"

            def request(self, head, client):
                if head.target.endswith(b"/forbidden"):
                    return Refusal(403, "filtered")
                head.headers.add(b"X-Stamped", b"yes")

            def response(self, request, head):
                head.headers.add(b"X-Seen", b"yes")

        origin = self.startOrigin()
        proxy = self.startProxy(filters=[Stamp()])
        out, err, code = yield curl("-x", proxy.url, "-D", "-", origin.url("/headers"))
        head, body = out.split(b"\r\n\r\n", 1)
        self.assertIn(b"X-Seen: yes", head)
        self.assertIn(["X-Stamped", "yes"], json.loads(body)["headers"])
        out, err, code = yield curl("-x", proxy.url, "-D", "-", origin.url("/forbidden"))
        self.assertIn(b"403 Forbidden", out)


# Sends one CONNECT for AUTHORITY to the proxy at ADDRESS, with any
# "Name: value" arguments as headers; prints the status and Retry-After.
CONNECT_CLIENT = """
import http.client, sys
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=20)
conn.request("CONNECT", sys.argv[2], headers=dict(h.split(": ", 1) for h in sys.argv[3:]))
response = conn.getresponse()
print(response.status, response.getheader("Retry-After"))
"""


class RateLimitTests(ForwardTestCase):
    """
    A token per 100 s, so none comes back while a test runs.
    """

    def login(self, user):
        return "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:secret".encode()).decode()

    @inlineCallbacks
    def test_limitPerUser(self):
        """
        Each authenticated user has a bucket: requests and CONNECTs both
        take from it, and one user's 429 leaves the others alone.
        """
        origin = self.startOrigin()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"alice:{hashPassword('secret')}\nbob:{hashPassword('secret')}\n")
        proxy = self.startProxy(settings(auth_file=path, rate_limit={"rate": 0.01, "burst": 2, "key": "user"}))
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, origin.url("/name"), "3", self.login("alice"))
        self.assertEqual(code, 0, err)
        answers = json.loads(out)
        self.assertEqual([status for status, _, _ in answers], [200, 200, 429])
        status, retryAfter, body = answers[-1]
        self.assertTrue(1 <= int(retryAfter) <= 100, retryAfter)
        self.assertEqual(body, "rate limit exceeded for the proxy\n")
        out, err, code = yield pythonClient(CONNECT_CLIENT, proxy.address, "127.0.0.1:443", self.login("alice"))
        self.assertEqual(out.split()[0], b"429", err)
        out, err, code = yield pythonClient(CONNECT_CLIENT, proxy.address, "127.0.0.1:25", self.login("bob"))
        self.assertEqual(out.split()[0], b"403", "bob's CONNECT took a token, then was refused")
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, origin.url("/name"), "2", self.login("bob"))
        self.assertEqual([status for status, _, _ in json.loads(out)], [200, 429])
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, origin.url("/name"), "1")
        self.assertEqual(json.loads(out)[0][0], 407, "no login: authentication comes first")
        self.assertEqual(origin.requests, 3)
        (label, limiter), = proxy.service.rateLimiters
        self.assertEqual((label, limiter.stats(reactor.seconds())["keys"]), ("forward", 2))


class FailingFilterTests(ForwardTestCase):
    @inlineCallbacks
    def test_failingResponseFilterAnswers500(self):
        """
        A response filter that raises gets the client a 500 naming it, not
        a dropped connection or an unfiltered response.
        """

        class Broken:
            name = "broken"

            def request(self, head, client):
                pass

            def response(self, request, head):
                raise ValueError("bug")

        origin = self.startOrigin()
        proxy = self.startProxy(filters=[Broken()])
        out, err, code = yield curl("-x", proxy.url, "-D", "-", origin.url("/name"))
        self.assertIn(b"HTTP/1.1 500 Internal Server Error", out)
        self.assertIn(b"the response filter broken failed", out)
        self.assertIn(b"error=proxy_internal_error", out)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
