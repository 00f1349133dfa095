"""
Reverse mode end to end: several real backends on 127.0.0.1, the proxy built
from a config as twistd builds it, curl and Python clients.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import Counter

import twisted.plugins
from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from dualproxy.reverse.health import HealthCheck

from .support import REPEAT_CLIENT, Origin, Proxy, RawOrigin, Survivors, curl, pattern, pythonClient

# N requests on one connection, each as a different X-User; prints the
# backend names, one per line.
USERS_CLIENT = """
import http.client, sys
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=20)
for user in range(int(sys.argv[2])):
    conn.request("GET", "/name", headers={"X-User": "user-%d" % user})
    print(conn.getresponse().read().decode())
"""


class ReverseTestCase(TestCase):
    def backends(self, *names):
        origins = [Origin(name) for name in names]
        for origin in origins:
            self.addCleanup(origin.stop)
        return origins

    def proxy(self, pools, routes=None, **reverse):
        config = {
            "mode": "reverse",
            "reverse": dict(
                pools=pools,
                routes=routes if routes is not None else [{"prefix": "/", "pool": next(iter(pools))}],
                **reverse,
            ),
        }
        proxy = Proxy(config)
        self.addCleanup(proxy.stop)
        return proxy

    @inlineCallbacks
    def names(self, proxy, count, path="/name", *headers):
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, path, str(count), *headers)
        self.assertEqual(code, 0, err)
        return [[status, body] for status, _, body in json.loads(out)]


def pool(*origins, **settings):
    backends = []
    for origin in origins:
        weight = getattr(origin, "weight", 1)
        backends.append({"url": f"http://{origin.address}", "weight": weight})
    return dict(backends=backends, **settings)


class BalancingTests(ReverseTestCase):
    @inlineCallbacks
    def test_weightedRoundRobin(self):
        a, b = self.backends("a", "b")
        a.weight = 3
        proxy = self.proxy({"app": pool(a, b)})
        answers = yield self.names(proxy, 40)
        self.assertEqual({status for status, _ in answers}, {200})
        self.assertEqual(Counter(name for _, name in answers), {"a": 30, "b": 10})

    @inlineCallbacks
    def test_weightsHonouredByEveryStrategy(self):
        """
        Weights 3:1 hold, within tolerance, under each built-in strategy
        (requests one at a time, so least-busy sees equal load).
        """
        for balance, options in (("round-robin", {}), ("least-busy", {}), ("random-two", {}),
                                 ("hash", {"hash": "header:X-User"})):
            a, b = self.backends("a", "b")
            a.weight = 3
            proxy = self.proxy({"app": pool(a, b, balance=balance, balance_options=options)})
            out, err, code = yield pythonClient(USERS_CLIENT, proxy.address, "400")
            self.assertEqual(code, 0, err)
            share = Counter(out.split())[b"a"] / 400
            self.assertTrue(0.66 <= share <= 0.84, f"{balance}: backend a got {share:.0%}, expected 75%")

    @inlineCallbacks
    def test_pooledBackendConnections(self):
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)})
        yield self.names(proxy, 20)
        self.assertEqual(a.connections, 1)

    @inlineCallbacks
    def test_finishedExchangesFreedAtOnce(self):
        """
        Nothing a relayed request made waits for the garbage collector;
        only the connection's last exchange stays, as its connection does.
        """
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)})
        survivors = Survivors(self)
        yield self.names(proxy, 20)
        self.assertEqual(survivors.made, 40, "20 exchanges, 20 relays")
        self.assertLessEqual(len(survivors.alive()), 1, survivors.alive())

    @inlineCallbacks
    def test_leastBusyAvoidsSlowBackend(self):
        """
        A backend holding requests is passed over while an idle one exists.
        """
        slow, fast = self.backends("slow", "fast")
        proxy = self.proxy({"app": pool(slow, fast, balance="least-busy")})
        arrived = defer.DeferredList([slow.whenHeld(), fast.whenHeld()], fireOnOneCallback=True)
        held = curl(proxy.url + "/held")
        yield arrived
        busy, idle = (slow, fast) if slow.held else (fast, slow)
        answers = yield self.names(proxy, 10)
        self.assertEqual(Counter(name for _, name in answers), {idle.name: 10})
        busy.release()
        out, err, code = yield held
        self.assertEqual(out, busy.name.encode())

    @inlineCallbacks
    def test_stickyCookieSurvivesBackendRemoval(self):
        """
        Consistent hashing on a cookie: each session stays on its backend;
        when one backend goes, only its sessions move.
        """
        origins = self.backends("a", "b", "c")
        proxy = self.proxy({"app": pool(*origins, balance="hash", balance_options={"hash": "cookie:session"})})
        before = {}
        for session in range(12):
            answers = yield self.names(proxy, 3, "/name", f"Cookie: theme=dark; session=s{session}")
            self.assertEqual(len({name for _, name in answers}), 1)
            before[session] = answers[0][1]
        gone = before[0]
        yield [o for o in origins if o.name == gone][0].kill()
        for session in range(12):
            answers = yield self.names(proxy, 1, "/name", f"Cookie: session=s{session}")
            if before[session] != gone:
                self.assertEqual(answers[0], [200, before[session]])
            else:
                self.assertEqual(answers[0][0], 200)
                self.assertNotEqual(answers[0][1], gone)


class HealthTests(ReverseTestCase):
    @inlineCallbacks
    def test_retryOnAnotherBackend(self):
        """
        A backend that refuses connections is skipped within the request:
        clients see no error.
        """
        live, dead = self.backends("live", "dead")
        yield dead.stop()
        proxy = self.proxy({"app": pool(dead, live)})
        answers = yield self.names(proxy, 6)
        self.assertEqual(answers, [[200, "live"]] * 6)

    @inlineCallbacks
    def test_allDownIs503WithRetryAfter(self):
        a, = self.backends("a")
        yield a.stop()
        proxy = self.proxy({"app": pool(a, retries=0, health={"passive_failures": 1, "cool_off": 30})})
        out, err, code = yield curl("-D", "-", proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 502 Bad Gateway", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_refused;", out)
        out, err, code = yield curl("-D", "-", proxy.url + "/name")
        self.assertIn(b"HTTP/1.1 503 Service Unavailable", out)
        self.assertIn(b"Retry-After: 30", out)
        self.assertIn(b"no healthy backend in pool app", out)
        self.assertIn(
            b'Proxy-Status: dualproxy; error=destination_unavailable; details="no healthy backend in pool app"', out
        )

    @inlineCallbacks
    def test_activeChecksTakeBackendOutAndBack(self):
        """
        Stop a backend: after the fall count no request goes to it; start
        it again: traffic returns after the rise count.
        """
        a, b = self.backends("a", "b")
        port = b.port.getHost().port
        health = {"path": "/name", "interval": 0.05, "timeout": 1.0, "rise": 2, "fall": 2}
        proxy = self.proxy({"app": pool(a, b, health=health, retries=0)})
        checker = [s for s in proxy.service.upstreams if isinstance(s, HealthCheck)][0]
        backendB = checker.backends[1]
        yield b.kill()
        yield _roundsUntil(checker, lambda: not backendB.health.isUp(reactor.seconds()))
        answers = yield self.names(proxy, 6)
        self.assertEqual(answers, [[200, "a"]] * 6)
        revived = Origin("b", port)
        self.addCleanup(revived.stop)
        yield _roundsUntil(checker, lambda: backendB.health.isUp(reactor.seconds()))
        answers = yield self.names(proxy, 6)
        self.assertEqual(Counter(name for _, name in answers), {"a": 3, "b": 3})

    @inlineCallbacks
    def test_resetBeforeAnsweringRetriedOnlyWhenSafe(self):
        """
        A backend that closes without answering: a GET moves on to the next
        backend unnoticed; a POST (not idempotent) is not repeated: 502.
        """
        resetter = RawOrigin(b"")
        self.addCleanup(resetter.stop)
        good, = self.backends("good")
        proxy = self.proxy({"app": pool(resetter, good, health={"passive_failures": 100})})
        answers = yield self.names(proxy, 4)
        self.assertEqual(answers, [[200, "good"]] * 4)
        codes = []
        for _ in range(2):
            out, err, code = yield curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-d", "x=1",
                                        proxy.url + "/name")
            codes.append(out)
        self.assertEqual(sorted(codes), [b"200", b"502"])

    @inlineCallbacks
    def test_backendTimeoutIs504(self):
        silent = RawOrigin(None)
        self.addCleanup(silent.stop)
        proxy = Proxy({"mode": "reverse", "timeouts": {"upstream_read": 0.3},
                       "reverse": {"pools": {"app": pool(silent)}, "routes": [{"prefix": "/", "pool": "app"}]}})
        self.addCleanup(proxy.stop)
        out, err, code = yield curl("-D", "-", proxy.url + "/")
        self.assertIn(b"HTTP/1.1 504 Gateway Timeout", out)
        self.assertIn(b"upstream timed out", out)
        self.assertIn(b"Proxy-Status: dualproxy; error=connection_read_timeout;", out)


class PluginBalancerTests(ReverseTestCase):
    @inlineCallbacks
    def test_thirdPartyStrategyUsedByPool(self):
        """
        A balancing strategy shipped as a plugin by another package is
        chosen by name in a pool's config and decides where requests go.
        """
        plugins = FilePath(self.mktemp()).child("twisted").child("plugins")
        plugins.makedirs()
        plugins.child("last_balancer.py").setContent(LAST_BALANCER.encode())
        self.patch(twisted.plugins, "__path__", list(twisted.plugins.__path__) + [plugins.path])
        a, b, c = self.backends("a", "b", "c")
        proxy = self.proxy({"app": pool(a, b, c, balance="always-last")})
        answers = yield self.names(proxy, 5)
        self.assertEqual(answers, [[200, "c"]] * 5)


LAST_BALANCER = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from dualproxy.interfaces import IBalancer, IBalancerFactory


@implementer(IBalancer)
class AlwaysLast:
    def pick(self, backends, client, headers):
        return backends[-1]


@implementer(IPlugin, IBalancerFactory)
class AlwaysLastFactory:
    name = "always-last"

    def __call__(self, options):
        return AlwaysLast()


alwaysLast = AlwaysLastFactory()
"""


class RoutingTests(ReverseTestCase):
    @inlineCallbacks
    def test_hostsAndLongestPrefix(self):
        api, www, other = self.backends("api", "www", "other")
        proxy = self.proxy(
            {"api": pool(api), "www": pool(www), "other": pool(other)},
            [
                {"host": "example.com", "prefix": "/", "pool": "www"},
                {"host": "example.com", "prefix": "/api", "pool": "api", "strip_prefix": True},
                {"host": "*.example.com", "prefix": "/", "pool": "other"},
                {"prefix": "/only-default", "pool": "other", "strip_prefix": True},
            ],
        )
        cases = [
            ("example.com", "/name", 200, b"www"),
            ("example.com", "/api/name", 200, b"api"),
            ("example.com", "/apiname", 404, None),
            ("a.b.example.com", "/name", 200, b"other"),
            ("unknown.test", "/only-default/name", 200, b"other"),
            ("unknown.test", "/name", 404, None),
        ]
        for host, path, status, body in cases:
            out, err, code = yield curl("-H", f"Host: {host}", "-w", "\n%{http_code}", proxy.url + path)
            answer, _, got = out.rpartition(b"\n")
            self.assertEqual(int(got), status, (host, path, out))
            if body is not None:
                self.assertEqual(answer, body, (host, path))

    @inlineCallbacks
    def test_redirect(self):
        proxy = self.proxy({}, [{"prefix": "/", "redirect": "https://example.com", "redirect_status": 301}])
        out, err, code = yield curl("-D", "-", proxy.url + "/a?b=1")
        self.assertIn(b"HTTP/1.1 301 Moved Permanently", out)
        self.assertIn(b"Location: https://example.com/a?b=1", out)


class HeaderTests(ReverseTestCase):
    @inlineCallbacks
    def seen(self, proxy, *args):
        out, err, code = yield curl(*args, proxy.url + "/headers")
        self.assertEqual(code, 0, err)
        return json.loads(out)["headers"]

    @inlineCallbacks
    def test_forwardingHeadersFromUntrustedClient(self):
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)}, forwarded=True)
        headers = yield self.seen(proxy, "-H", "X-Forwarded-For: 6.6.6.6", "-H", "Host: site.test")
        self.assertIn(["X-Forwarded-For", "127.0.0.1"], headers)
        self.assertIn(["X-Forwarded-Proto", "http"], headers)
        self.assertIn(["X-Forwarded-Host", "site.test"], headers)
        self.assertIn(["Forwarded", 'for=127.0.0.1;proto=http;host="site.test"'], headers)
        self.assertIn(["Host", "site.test"], headers)

    @inlineCallbacks
    def test_forwardedForAppendedForTrustedProxy(self):
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)}, trusted_proxies=["127.0.0.0/8"])
        headers = yield self.seen(proxy, "-H", "X-Forwarded-For: 203.0.113.9")
        self.assertIn(["X-Forwarded-For", "203.0.113.9, 127.0.0.1"], headers)

    @inlineCallbacks
    def test_hostRewriteAndRouteHeaders(self):
        a, = self.backends("a")
        proxy = self.proxy(
            {"app": pool(a, host="internal.test")},
            [{"prefix": "/", "pool": "app", "add_headers": {"X-Route": "main"}, "remove_headers": ["X-Debug"]}],
        )
        headers = yield self.seen(proxy, "-H", "X-Debug: 1")
        self.assertIn(["Host", "internal.test"], headers)
        self.assertIn(["X-Route", "main"], headers)
        self.assertNotIn("x-debug", [name.lower() for name, _ in headers])


class ErrorTests(ReverseTestCase):
    @inlineCallbacks
    def test_backendDiesMidResponse(self):
        """
        A response cut short reaches the client as a cut connection, never
        as a complete-looking response.
        """
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)})
        arrived = a.whenHeld()
        fetched = curl(proxy.url + "/held")
        request = yield arrived
        a.held.remove(request)
        request.setHeader(b"content-length", b"100")
        request.write(b"only part")
        request.transport.loseConnection()
        out, err, code = yield fetched
        # curl: 18 partial file, 56 connection reset; both say "incomplete".
        self.assertIn(code, (18, 56), err)

    @inlineCallbacks
    def test_largeResponseStreams(self):
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)})
        out, err, code = yield curl(proxy.url + "/bytes/3000000")
        self.assertEqual(out, pattern(3000000))


class StaticTests(ReverseTestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "www", "sub"))
        with open(os.path.join(self.root, "www", "page.html"), "wb") as f:
            f.write(b"<p>0123456789</p>")
        with open(os.path.join(self.root, "secret.txt"), "wb") as f:
            f.write(b"secret")
        os.symlink(os.path.join(self.root, "secret.txt"), os.path.join(self.root, "www", "escape.txt"))
        self.proxy_ = self.proxy({}, [{"prefix": "/static", "static": os.path.join(self.root, "www")}])

    @inlineCallbacks
    def test_fileWithTypeRangeAndConditional(self):
        url = self.proxy_.url + "/static/page.html"
        out, err, code = yield curl("-D", "-", url)
        self.assertIn(b"Content-Type: text/html", out)
        self.assertTrue(out.endswith(b"<p>0123456789</p>"))
        out, err, code = yield curl("-D", "-", "-r", "3-6", url)
        self.assertIn(b"HTTP/1.1 206 Partial Content", out)
        self.assertTrue(out.endswith(b"0123"))
        modified = [line for line in out.split(b"\r\n") if line.lower().startswith(b"last-modified:")][0]
        out, err, code = yield curl("-D", "-", "-H", "If-Modified-Since:" + modified.split(b":", 1)[1].decode(), url)
        self.assertIn(b"HTTP/1.1 304 Not Modified", out)

    @inlineCallbacks
    def test_noEscapeAndNoListing(self):
        for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/sub%2F..%2F..%2Fsecret.txt",
                     "/static/escape.txt"):
            out, err, code = yield curl("--path-as-is", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                        self.proxy_.url + path)
            self.assertIn(out, (b"403", b"404"), path)
        out, err, code = yield curl("-s", "-o", "/dev/null", "-w", "%{http_code}", self.proxy_.url + "/static/sub/")
        self.assertEqual(out, b"403")

    @inlineCallbacks
    def test_listingWhenAskedFor(self):
        proxy = self.proxy({}, [{"prefix": "/", "static": os.path.join(self.root, "www"), "listing": True}])
        out, err, code = yield curl(proxy.url + "/")
        self.assertIn(b"page.html", out)


class RateLimitTests(ReverseTestCase):
    """
    Slow rates (a token per 100 s) so that no token comes back while a
    test runs: refills are the unit tests' business.
    """

    @inlineCallbacks
    def answers(self, proxy, count, path, *headers):
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, path, str(count), *headers)
        self.assertEqual(code, 0, err)
        return json.loads(out)

    @inlineCallbacks
    def test_limitPerClient(self):
        """
        The request past the burst gets 429 with Retry-After; another
        client (told apart by a header here, all tests being 127.0.0.1)
        still gets through, and the backend never sees the refused one.
        """
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a)}, [
            {"prefix": "/", "pool": "app", "rate_limit": {"rate": 0.01, "burst": 3, "key": "header:X-Client"}}])
        answers = yield self.answers(proxy, 4, "/name", "X-Client: one")
        self.assertEqual([status for status, _, _ in answers], [200, 200, 200, 429])
        status, retryAfter, body = answers[-1]
        self.assertTrue(1 <= int(retryAfter) <= 100, retryAfter)
        self.assertEqual(body, "rate limit exceeded for route */\n")
        answers = yield self.answers(proxy, 1, "/name", "X-Client: two")
        self.assertEqual(answers, [[200, None, "a"]])
        self.assertEqual(a.requests, 4)
        (label, limiter), = proxy.service.rateLimiters
        stats = limiter.stats(reactor.seconds())
        self.assertEqual((label, stats["allowed"], stats["rejected"], stats["keys"], stats["saturated"]),
                         ("route:*/", 4, 1, 2, 1))

    @inlineCallbacks
    def test_routeLimitOverridesPoolLimit(self):
        """
        Routes without a limit of their own share their pool's; a route's
        own limit replaces it, with a bucket of its own.
        """
        a, = self.backends("a")
        proxy = self.proxy({"app": pool(a, rate_limit={"rate": 0.01, "burst": 1})}, [
            {"prefix": "/", "pool": "app"},
            {"prefix": "/other", "pool": "app"},
            {"prefix": "/api", "pool": "app", "strip_prefix": True, "rate_limit": {"rate": 0.01, "burst": 2}},
        ])
        answers = yield self.answers(proxy, 1, "/name")
        self.assertEqual(answers[0][0], 200)
        answers = yield self.answers(proxy, 1, "/other/name")
        self.assertEqual(answers[0][::2], [429, "rate limit exceeded for pool app\n"])
        answers = yield self.answers(proxy, 3, "/api/name")
        self.assertEqual([status for status, _, _ in answers], [200, 200, 429])
        self.assertEqual(answers[-1][2], "rate limit exceeded for route */api\n")

    @inlineCallbacks
    def test_clientsBehindATrustedProxy(self):
        """
        By address, the client behind a trusted proxy is the address it
        added last to X-Forwarded-For; from anyone else the field is a
        claim, and the peer's address counts.
        """
        a, = self.backends("a")
        routes = [{"prefix": "/", "pool": "app", "rate_limit": {"rate": 0.01, "burst": 1}}]
        proxy = self.proxy({"app": pool(a)}, routes, trusted_proxies=["127.0.0.0/8"])
        answers = yield self.answers(proxy, 2, "/name", "X-Forwarded-For: 10.0.0.1")
        self.assertEqual([status for status, _, _ in answers], [200, 429])
        answers = yield self.answers(proxy, 1, "/name", "X-Forwarded-For: 10.0.0.1, 10.0.0.2")
        self.assertEqual(answers[0][0], 200)
        proxy = self.proxy({"app": pool(a)}, routes)
        answers = yield self.answers(proxy, 1, "/name", "X-Forwarded-For: 10.0.0.1")
        answers += yield self.answers(proxy, 1, "/name", "X-Forwarded-For: 10.0.0.2")
        self.assertEqual([status for status, _, _ in answers], [200, 429])

    @inlineCallbacks
    def test_limitedClientGetsNoCacheHits(self):
        origin = RawOrigin(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2\r\n\r\nhi", False)
        self.addCleanup(origin.stop)
        proxy = self.proxy({"app": pool(origin, cache=True)}, [
            {"prefix": "/", "pool": "app", "rate_limit": {"rate": 0.01, "burst": 2, "key": "header:X-Client"}}])
        answers = yield self.answers(proxy, 3, "/cached", "X-Client: one")
        self.assertEqual([status for status, _, _ in answers], [200, 200, 429])
        answers = yield self.answers(proxy, 1, "/cached", "X-Client: two")
        self.assertEqual(answers, [[200, None, "hi"]])
        self.assertEqual(len(origin.requests), 1, "the rest were cache hits")


class WebSocketTests(ReverseTestCase):
    @inlineCallbacks
    def test_echoThroughProxy(self):
        """
        A WebSocket handshake gets 101 from the backend, then frames flow
        both ways through the proxy.
        """
        echo = reactor.listenTCP(0, _WebSocketEcho(), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        backend = Origin("unused")
        backend.address = f"127.0.0.1:{echo.getHost().port}"
        proxy = self.proxy({"ws": pool(backend)})
        out, err, code = yield pythonClient(WEBSOCKET_CLIENT, proxy.address)
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), b"hello through the proxy")
        backend.stop()

    @inlineCallbacks
    def test_frameInTheSamePacketAsThe101(self):
        """
        A frame the backend sends in the very packet of its 101 reaches the
        client, after the head and nothing else.
        """
        greeting = _WebSocketEcho()
        greeting.greeting = b"hi"
        echo = reactor.listenTCP(0, greeting, interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        backend = Origin("unused")
        backend.address = f"127.0.0.1:{echo.getHost().port}"
        proxy = self.proxy({"ws": pool(backend)})
        out, err, code = yield pythonClient(WEBSOCKET_CLIENT, proxy.address, "hi")
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip(), b"hello through the proxy")
        backend.stop()


WEBSOCKET_CLIENT = r"""
import base64, hashlib, os, socket, struct, sys
host, port = sys.argv[1].split(":")
sock = socket.create_connection((host, int(port)), timeout=10)
key = base64.b64encode(os.urandom(16))
sock.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += sock.recv(1)
assert head.startswith(b"HTTP/1.1 101"), head
accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
assert b"Sec-WebSocket-Accept: " + accept in head, head
if len(sys.argv) > 2:
    greeting = b""
    while len(greeting) < 2 + len(sys.argv[2]):
        greeting += sock.recv(1)
    assert greeting == bytes([0x81, len(sys.argv[2])]) + sys.argv[2].encode(), greeting
payload = b"hello through the proxy"
mask = os.urandom(4)
sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
frame = b""
while len(frame) < 2 + len(payload):
    frame += sock.recv(4096)
assert frame[0] == 0x81 and frame[1] == len(payload), frame
print(frame[2:].decode())
"""


class _WebSocketEchoProtocol(protocol.Protocol):
    """
    A minimal RFC 6455 server: handshake, then echo unmasked text frames.
    """

    def connectionMade(self):
        self.buffer = b""
        self.open = False

    def dataReceived(self, data):
        self.buffer += data
        if not self.open:
            if b"\r\n\r\n" not in self.buffer:
                return
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            greeting = self.factory.greeting
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                                 + (bytes([0x81, len(greeting)]) + greeting if greeting else b""))
            self.open = True
        if len(self.buffer) >= 6:
            length = self.buffer[1] & 0x7F
            if len(self.buffer) >= 6 + length:
                mask, payload = self.buffer[2:6], self.buffer[6:6 + length]
                text = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.transport.write(bytes([0x81, len(text)]) + text)
                self.buffer = self.buffer[6 + length:]


class _WebSocketEcho(protocol.Factory):
    protocol = _WebSocketEchoProtocol
    noisy = False
    # A text frame sent in the same write as the 101, if any.
    greeting = b""


def _roundsUntil(checker, condition) -> defer.Deferred:
    """
    Fires after the first round of health checks at whose end
    C{condition()} holds.
    """
    done: defer.Deferred = defer.Deferred()

    def check():
        if condition() and not done.called:
            checker.onRound = None
            done.callback(None)

    checker.onRound = check
    return done
