"""
The HTTP cache end to end, in both modes: a scripted origin on 127.0.0.1
that counts what reaches it, the proxy built from a config, curl and Python
clients.
"""

from __future__ import annotations

import hashlib
import json

from twisted.internet import defer, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from .support import Proxy, curl, pattern, pythonClient

# Sends N requests for TARGET (a path, or an absolute URL for a forward
# proxy) at once, one thread and connection each, to ADDRESS; prints
# [status, body sha256] per request as JSON.
CONCURRENT_CLIENT = """
import hashlib, http.client, json, sys, threading
address, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = address.split(":")
out = [None] * count
def fetch(i):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", target)
    response = conn.getresponse()
    out[i] = [response.status, hashlib.sha256(response.read()).hexdigest()]
threads = [threading.Thread(target=fetch, args=(i,)) for i in range(count)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out))
"""


class ScriptedOrigin(resource.Resource):
    """
    Answers each path as the test scripted it, honours If-None-Match
    against its ETag, and records every request it sees.  With C{hold}
    set, requests wait until L{release}.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.scripts = {}
        self.seen = []
        self.hold = False
        self.held = []
        self.arrivals = []
        self.site = server.Site(self)
        self.site.log = lambda request: None
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"

    def script(self, path: str, body: bytes = b"hello", status: int = 200, **headers: str) -> None:
        self.scripts[path.encode()] = (status, body, [(name.replace("_", "-"), value)
                                                      for name, value in headers.items()])

    def count(self, path: str) -> int:
        return sum(1 for _, seenPath, _ in self.seen if seenPath == path.encode())

    def nextRequest(self) -> defer.Deferred:
        self.arrivals.append(defer.Deferred())
        return self.arrivals[-1]

    def render(self, request):
        headers = {name.decode().lower(): value.decode() for name, value in request.requestHeaders.getAllRawHeaders()
                   for value in value}
        self.seen.append((request.method, request.path, headers))
        status, body, fields = self.scripts.get(request.path, (404, b"no script", []))
        request.setResponseCode(status)
        for name, value in fields:
            request.setHeader(name, value)
        etag = dict((name.lower(), value) for name, value in fields).get("etag")
        if etag is not None and headers.get("if-none-match") == etag:
            request.setResponseCode(304)
            body = b""
        arrivals, self.arrivals = self.arrivals, []
        for arrival in arrivals:
            arrival.callback(headers)
        if self.hold:
            self.held.append((request, body))
            return server.NOT_DONE_YET
        return body

    def release(self) -> None:
        held, self.held = self.held, []
        for request, body in held:
            request.write(body)
            request.finish()

    def stop(self):
        return self.port.stopListening()


def header(output: str, name: str):
    """
    A field's value from curl's --include output (the last head's).
    """
    value = None
    for line in output.split("\r\n\r\n")[-2].split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            value = line.split(":", 1)[1].strip()
    return value


class CacheTestCase(TestCase):
    mode = "reverse"

    def setUp(self):
        self.origin = ScriptedOrigin()
        self.addCleanup(self.origin.stop)

    def startProxy(self, store=None, filters=(), **switch):
        if self.mode == "reverse":
            config = {"mode": "reverse", "reverse": {
                "pools": {"app": {"backends": [{"url": f"http://{self.origin.address}"}], "cache": True}},
                "routes": [dict({"prefix": "/", "pool": "app"}, **switch)],
            }}
        else:
            config = {"mode": "forward", "forward": dict({"allow_destinations": ["127.0.0.0/8"], "cache": True},
                                                        **switch)}
        if store is not None:
            config["cache"] = store
        config.update(self.moreConfig())
        proxy = Proxy(config, filters)
        self.addCleanup(proxy.stop)
        self.proxy = proxy
        return proxy

    def moreConfig(self) -> dict:
        """
        Top-level tables a subclass adds to every proxy's config.
        """
        return {}

    def target(self, path: str) -> str:
        if self.mode == "reverse":
            return self.proxy.url + path
        return f"http://{self.origin.address}{path}"

    @inlineCallbacks
    def fetch(self, path: str, *args: str):
        """
        curl through the proxy; (status, headers text, body).
        """
        extra = [] if self.mode == "reverse" else ["--proxy", self.proxy.url]
        out, err, code = yield curl("--include", *extra, *args, self.target(path))
        self.assertEqual(code, 0, err)
        head, _, body = out.rpartition(b"\r\n\r\n")
        text = head.decode("latin-1") + "\r\n\r\n"
        status = int(text.split("\r\n\r\n")[-2].split(" ", 2)[1])
        return status, text, body

    def cached(self, proxy=None):
        return (proxy or self.proxy).handler.cache if self.mode == "forward" else [
            target for target in _targets(self.proxy)][0].cache


def _targets(proxy):
    from dualproxy.reverse.proxy import PoolTarget

    tree = proxy.handler.routes.default
    found = []

    def walk(node):
        if isinstance(getattr(node, "target", None), PoolTarget):
            found.append(node.target)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(tree)
    return found


class ReverseCacheTests(CacheTestCase):
    @inlineCallbacks
    def test_missThenHit(self):
        self.origin.script("/a", b"A" * 1000, Cache_Control="max-age=60")
        self.startProxy()
        status, head, body = yield self.fetch("/a")
        self.assertEqual((status, body), (200, b"A" * 1000))
        self.assertIn("fwd=uri-miss; stored", header(head, "Cache-Status"))
        status, head, body = yield self.fetch("/a")
        self.assertEqual((status, body), (200, b"A" * 1000))
        self.assertTrue(header(head, "Cache-Status").startswith("dualproxy; hit; ttl="))
        self.assertEqual(header(head, "Content-Length"), "1000")
        self.assertIn(header(head, "Age"), ("0", "1"))
        self.assertEqual(self.origin.count("/a"), 1)

    @inlineCallbacks
    def test_concurrentMissesCollapse(self):
        """
        50 clients ask for the same missing URL at once: the origin sees
        one request and every client gets the body.
        """
        body = pattern(20000)
        self.origin.script("/slow", body, Cache_Control="max-age=60")
        self.origin.hold = True
        self.startProxy()
        cache = self.cached()
        allWaiting = defer.Deferred()
        wait = cache._wait

        def counting(lockKey, waiter):
            wait(lockKey, waiter)
            if len(cache._filling[lockKey]) == 49:
                allWaiting.callback(None)

        cache._wait = counting
        arrived = self.origin.nextRequest()
        target = "/slow" if self.mode == "reverse" else self.target("/slow")
        clients = pythonClient(CONCURRENT_CLIENT, self.proxy.address, target, "50")
        yield arrived
        yield allWaiting
        self.origin.release()
        out, err, code = yield clients
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), [[200, hashlib.sha256(body).hexdigest()]] * 50)
        self.assertEqual(self.origin.count("/slow"), 1)
        self.assertEqual(cache.stats.collapsed, 49)

    @inlineCallbacks
    def test_staleRevalidatedWith304(self):
        self.origin.script("/r", b"stored body", Cache_Control="max-age=0", ETag='"v1"')
        self.startProxy()
        yield self.fetch("/r")
        status, head, body = yield self.fetch("/r")
        self.assertEqual((status, body), (200, b"stored body"))
        self.assertEqual(self.origin.seen[-1][2].get("if-none-match"), '"v1"')
        self.assertIn("fwd=stale", header(head, "Cache-Status"))
        self.assertIn('detail=revalidated', header(head, "Cache-Status"))
        self.assertEqual(self.origin.count("/r"), 2)
        self.assertEqual(self.cached().stats.revalidated, 1)

    @inlineCallbacks
    def test_changedResponseReplacesEntry(self):
        self.origin.script("/c", b"one", Cache_Control="max-age=0", ETag='"1"')
        self.startProxy()
        yield self.fetch("/c")
        self.origin.script("/c", b"two", Cache_Control="max-age=60", ETag='"2"')
        status, _, body = yield self.fetch("/c")
        self.assertEqual(body, b"two")
        status, head, body = yield self.fetch("/c")
        self.assertEqual(body, b"two")
        self.assertIn("hit", header(head, "Cache-Status"))
        self.assertEqual(self.origin.count("/c"), 2)

    @inlineCallbacks
    def test_clientConditionalAnsweredFromCache(self):
        self.origin.script("/e", b"tagged", Cache_Control="max-age=60", ETag='"abc"')
        self.startProxy()
        yield self.fetch("/e")
        status, head, body = yield self.fetch("/e", "-H", 'If-None-Match: "abc"')
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(header(head, "ETag"), '"abc"')
        status, _, body = yield self.fetch("/e", "-H", 'If-None-Match: "other"')
        self.assertEqual((status, body), (200, b"tagged"))
        self.assertEqual(self.origin.count("/e"), 1)

    @inlineCallbacks
    def test_rangeAndHeadFromStoredGet(self):
        self.origin.script("/big", pattern(5000), Cache_Control="max-age=60")
        self.startProxy()
        yield self.fetch("/big")
        status, head, body = yield self.fetch("/big", "-r", "100-199")
        self.assertEqual((status, body), (206, pattern(5000)[100:200]))
        self.assertEqual(header(head, "Content-Range"), "bytes 100-199/5000")
        status, head, body = yield self.fetch("/big", "--head")
        self.assertEqual((status, header(head, "Content-Length")), (200, "5000"))
        self.assertEqual(self.origin.count("/big"), 1)

    @inlineCallbacks
    def test_varyKeepsVariants(self):
        self.origin.script("/v", b"varied", Cache_Control="max-age=60", Vary="Accept-Language")
        self.startProxy()
        for language in ("en", "fr", "en", "fr", "de"):
            yield self.fetch("/v", "-H", f"Accept-Language: {language}")
        self.assertEqual(self.origin.count("/v"), 3)

    @inlineCallbacks
    def test_unsafeMethodInvalidates(self):
        self.origin.script("/doc", b"doc", Cache_Control="max-age=60")
        self.startProxy()
        yield self.fetch("/doc")
        status, _, _ = yield self.fetch("/doc", "-X", "POST", "--data", "x")
        self.assertEqual(status, 200)
        _, head, _ = yield self.fetch("/doc")
        self.assertIn("fwd=uri-miss", header(head, "Cache-Status"))
        self.assertEqual(self.origin.count("/doc"), 3)

    @inlineCallbacks
    def test_notStored(self):
        """
        private, no-store and Set-Cookie responses go to the origin every time.
        """
        self.origin.script("/p", b"p", Cache_Control="private, max-age=60")
        self.origin.script("/n", b"n", Cache_Control="no-store")
        self.origin.script("/s", b"s", Cache_Control="max-age=60", Set_Cookie="session=1")
        self.startProxy()
        for path, detail in (("/p", "private"), ("/n", "no-store"), ("/s", "set-cookie")):
            yield self.fetch(path)
            _, head, _ = yield self.fetch(path)
            self.assertIn(f"detail={detail}", header(head, "Cache-Status"))
            self.assertEqual(self.origin.count(path), 2)

    @inlineCallbacks
    def test_largerThanObjectLimitRelayedNotStored(self):
        body = pattern(300000)
        self.origin.script("/huge", body, Cache_Control="max-age=60")
        self.startProxy({"max_object_size": 100000})
        for _ in range(2):
            status, _, received = yield self.fetch("/huge")
            self.assertEqual(received, body)
        self.assertEqual(self.origin.count("/huge"), 2)

    @inlineCallbacks
    def test_staleIfError(self):
        self.origin.script("/f", b"good", Cache_Control="max-age=0, stale-if-error=600", ETag='"g"')
        self.startProxy()
        yield self.fetch("/f")
        self.origin.script("/f", b"broken", status=503)
        status, head, body = yield self.fetch("/f")
        self.assertEqual((status, body), (200, b"good"))
        self.assertIn("detail=stale-if-error", header(head, "Cache-Status"))

    @inlineCallbacks
    def test_staleWhileRevalidate(self):
        self.origin.script("/w", b"old", Cache_Control="max-age=0, stale-while-revalidate=600")
        self.startProxy()
        yield self.fetch("/w")
        self.origin.script("/w", b"new", Cache_Control="max-age=60")
        cache = self.cached()
        refilled = defer.Deferred()
        release = cache.release

        def watching(lockKey):
            release(lockKey)
            if lockKey is not None:
                refilled.callback(None)

        cache.release = watching
        status, head, body = yield self.fetch("/w")
        self.assertEqual(body, b"old")
        self.assertIn("stale-while-revalidate", header(head, "Cache-Status"))
        yield refilled
        _, head, body = yield self.fetch("/w")
        self.assertEqual(body, b"new")
        self.assertIn("hit", header(head, "Cache-Status"))

    @inlineCallbacks
    def test_purge(self):
        self.origin.script("/x", b"x", Cache_Control="max-age=60")
        self.startProxy({"purge_from": ["127.0.0.1/32"]})
        yield self.fetch("/x")
        status, _, body = yield self.fetch("/x", "-X", "PURGE")
        self.assertEqual((status, body), (200, f"purged http://{self.authority()}/x\n".encode()))
        status, _, _ = yield self.fetch("/x", "-X", "PURGE")
        self.assertEqual(status, 404)
        _, head, _ = yield self.fetch("/x")
        self.assertIn("fwd=uri-miss", header(head, "Cache-Status"))

    @inlineCallbacks
    def test_purgeRefusedToOthers(self):
        self.origin.script("/x", b"x", Cache_Control="max-age=60")
        self.startProxy({"purge_from": ["10.0.0.0/8"]})
        yield self.fetch("/x")
        status, _, _ = yield self.fetch("/x", "-X", "PURGE")
        self.assertEqual(status, 403)
        _, head, _ = yield self.fetch("/x")
        self.assertIn("hit", header(head, "Cache-Status"))

    @inlineCallbacks
    def test_requestFiltersSeeHits(self):
        """
        A filter that refuses a request refuses it even when the answer is
        stored.
        """
        from dualproxy.http.message import Refusal

        class Block:
            name = "block"

            def request(self, head, client):
                if head.headers.get(b"x-block"):
                    return Refusal(403, "blocked by filter")

            def response(self, request, head):
                pass

        self.origin.script("/b", b"b", Cache_Control="max-age=60")
        self.startProxy(filters=[Block()])
        yield self.fetch("/b")
        _, head, _ = yield self.fetch("/b")
        self.assertIn("hit", header(head, "Cache-Status"))
        status, _, _ = yield self.fetch("/b", "-H", "X-Block: 1")
        self.assertEqual(status, 403)

    def authority(self) -> str:
        return self.proxy.address if self.mode == "reverse" else self.origin.address

    @inlineCallbacks
    def test_diskStoreSurvivesRestart(self):
        self.origin.script("/d", pattern(70000), Cache_Control="max-age=600")
        store = {"store": "disk", "path": self.mktemp()}
        first = self.startProxy(store)
        yield self.fetch("/d", "-H", "Host: www.example.test")
        yield first.stop()
        self.startProxy(store)
        status, head, body = yield self.fetch("/d", "-H", "Host: www.example.test")
        self.assertEqual(body, pattern(70000))
        self.assertIn("hit", header(head, "Cache-Status"))
        self.assertEqual(self.origin.count("/d"), 1)

    @inlineCallbacks
    def test_uncachedRouteBypasses(self):
        """
        With the cache switched off for the route (reverse) or the proxy
        (forward), every request goes upstream and no Cache-Status is added.
        """
        self.origin.script("/a", b"a", Cache_Control="max-age=60")
        self.startProxy(**{"cache": False})
        for _ in range(2):
            _, head, _ = yield self.fetch("/a")
            self.assertIsNone(header(head, "Cache-Status"))
        self.assertEqual(self.origin.count("/a"), 2)


class ForwardCacheTests(ReverseCacheTests):
    mode = "forward"

