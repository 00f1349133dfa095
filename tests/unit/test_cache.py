"""
Tests for L{dualproxy.cache.cache}: the cache between a handler and the
relay, driven in memory with a fake exchange, a fake relay and a clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.cache import records
from dualproxy.cache.cache import HTTPCache, primaryKey
from dualproxy.cache.memory import MemoryStore
from dualproxy.cache.policy import StoredResponse
from dualproxy.cache.records import VaryIndex
from dualproxy.cache.stream import EntrySender
from dualproxy.core.exchange import ExchangeContext
from dualproxy.http.message import LENGTH, NO_BODY, Headers, RequestHead, ResponseHead
from tests.tables import fromTable


class FakeHandler:
    newContext = ExchangeContext

    def __init__(self):
        self.done = []

    def exchangeDone(self, exchange):
        self.done.append(exchange)


class FakeChannel:
    def __init__(self):
        self.handler = FakeHandler()


class FakeExchange:
    """
    What the cache uses of an exchange, recording what the client got.
    """

    def __init__(self, head: RequestHead, clientHost: str = "127.0.0.1"):
        self.request = head
        self.clientHost = clientHost
        self.channel = FakeChannel()
        self.context = ExchangeContext()
        self.head = None
        self.body = []
        self.finished = False
        self.responseStarted = False
        self.refused = None
        self.onAbort = None
        self.producer = None

    def writeInterim(self, head):
        pass

    def writeHead(self, head):
        self.head = head
        self.responseStarted = True

    def passesBodyThrough(self):
        return True

    def respond(self, head, body):
        self.writeHead(head)
        if self.request.method != b"HEAD":
            self.write(body)
        self.finish()

    def write(self, data):
        self.body.append(data)

    def registerProducer(self, producer):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def finish(self):
        self.finished = True

    def refuse(self, status, reason, headers=()):
        self.refused = status
        self.finished = True

    def abort(self):
        self.finished = True

    def leave(self):
        self.finished = True
        if self.onAbort is not None:
            self.onAbort()


class FakeRelay:
    """
    Records each forwarded request; the test plays the upstream.
    """

    def __init__(self):
        self.calls = []

    def __call__(self, exchange, head, response):
        self.calls.append((exchange, head, response))

    def answer(self, index, status=200, body=b"", **fields):
        _, _, response = self.calls[index]
        headers = Headers([(name.replace("_", "-").encode(), value.encode()) for name, value in fields.items()])
        framing = NO_BODY if status == 304 else LENGTH
        response.writeHead(ResponseHead(status, b"X", headers, framing=framing, length=len(body)))
        if body:
            response.write(body)
        response.finish()


def get(target=b"/a", method=b"GET", **fields) -> RequestHead:
    headers = Headers([(name.replace("_", "-").encode(), value.encode()) for name, value in fields.items()])
    return RequestHead(method, target, b"HTTP/1.1", headers)


URI = b"http://example.test/a"


class CacheTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore(1 << 20, 1 << 16)
        self.cache = HTTPCache(self.store, self.clock, lockTimeout=5.0)
        self.relay = FakeRelay()

    def request(self, head=None, uri=URI) -> FakeExchange:
        head = head or get()
        exchange = FakeExchange(head)
        self.cache.handle(exchange, head, uri, self.relay)
        return exchange

    def test_concurrentMissWaitsThenHits(self):
        first, second = self.request(), self.request()
        self.assertEqual(len(self.relay.calls), 1)
        self.relay.answer(0, body=b"shared", Cache_Control="max-age=60")
        self.assertEqual(b"".join(first.body), b"shared")
        self.assertEqual(b"".join(second.body), b"shared")
        self.assertIn(b"hit", second.head.headers.get(b"cache-status"))
        self.assertEqual(self.cache.stats.collapsed, 1)
        self.assertEqual((self.cache.stats.misses, self.cache.stats.hits, self.cache.hitRatio), (1, 1, 0.5))

    def test_dateAddedWhenMissing(self):
        """
        RFC 9110 section 6.6.1: a cache adds the Date it received a response
        at, and the stored response keeps it.
        """
        first = self.request()
        self.relay.answer(0, body=b"x", Cache_Control="max-age=60")
        self.assertEqual(first.head.headers.get(b"date"), b"Tue, 14 Nov 2023 22:13:20 GMT")
        self.clock.advance(30)
        later = self.request()
        self.assertEqual(later.head.headers.get(b"date"), b"Tue, 14 Nov 2023 22:13:20 GMT")
        self.assertEqual(later.head.headers.get(b"age"), b"30")

    def test_waiterGoesItselfAfterLockTimeout(self):
        self.request()
        waiting = self.request()
        self.clock.advance(4.9)
        self.assertEqual(len(self.relay.calls), 1)
        self.clock.advance(0.2)
        self.assertEqual(len(self.relay.calls), 2)
        self.assertIs(self.relay.calls[1][0], waiting)

    def test_uncacheableResponseReleasesWaitersAtOnce(self):
        self.request()
        self.request()
        _, _, response = self.relay.calls[0]
        response.writeHead(ResponseHead(200, b"OK", Headers([(b"Cache-Control", b"no-store")]),
                                        framing=LENGTH, length=5))
        self.assertEqual(len(self.relay.calls), 2)

    def test_waitingClientThatLeavesIsForgotten(self):
        self.request()
        waiting = self.request()
        waiting.leave()
        self.relay.answer(0, body=b"x", Cache_Control="max-age=60")
        self.assertEqual(waiting.body, [])
        self.assertEqual(self.cache.stats.collapsed, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientLeavingMidFillStoresNothing(self):
        first = self.request()
        waiting = self.request()
        _, _, response = self.relay.calls[0]
        response.writeHead(ResponseHead(200, b"OK", Headers([(b"Cache-Control", b"max-age=60")]),
                                        framing=LENGTH, length=10))
        response.write(b"12345")
        first.finished = True
        response.clientGone()
        self.assertIsNone(self.store.get(primaryKey(URI)))
        self.assertEqual(len(self.relay.calls), 2)
        self.assertIs(self.relay.calls[1][0], waiting)

    def test_truncatedResponseNotStored(self):
        first = self.request()
        _, _, response = self.relay.calls[0]
        response.writeHead(ResponseHead(200, b"OK", Headers([(b"Cache-Control", b"max-age=60")]),
                                        framing=LENGTH, length=10))
        response.write(b"12345")
        response.refuse(502, "upstream closed mid-body")
        self.assertEqual(first.refused, 502)
        self.assertIsNone(self.store.get(primaryKey(URI)))

    def test_revalidationRefreshesStoredHeaders(self):
        self.request()
        self.relay.answer(0, body=b"body", Cache_Control="max-age=0", ETag='"1"', X_Version="old")
        again = self.request()
        forwarded = self.relay.calls[1][1]
        self.assertEqual(forwarded.headers.get(b"if-none-match"), b'"1"')
        self.relay.answer(1, status=304, Cache_Control="max-age=60", ETag='"1"', X_Version="new")
        self.assertEqual((again.head.status, b"".join(again.body)), (200, b"body"))
        self.assertEqual(again.head.headers.get(b"x-version"), b"new")
        third = self.request()
        self.assertEqual(len(self.relay.calls), 2)
        self.assertIn(b"hit", third.head.headers.get(b"cache-status"))

    def test_clientConditionsNotForwardedWhenRevalidating(self):
        """
        RFC 9111 section 4.3.2: the cache revalidates its own response and
        answers the client's condition from the result.
        """
        self.request()
        self.relay.answer(0, body=b"body", Cache_Control="max-age=0", ETag='"1"')
        conditional = self.request(get(If_None_Match='"1"', Range="bytes=0-1"))
        forwarded = self.relay.calls[1][1]
        self.assertIsNone(forwarded.headers.get(b"range"))
        self.relay.answer(1, status=304, ETag='"1"', Cache_Control="max-age=60")
        self.assertEqual(conditional.head.status, 304)

    def test_missWithClientConditionFillsTheCache(self):
        """
        The cache fetches the whole response for itself and answers the
        client's If-None-Match from it.
        """
        client = self.request(get(If_None_Match='"7"'))
        self.assertIsNone(self.relay.calls[0][1].headers.get(b"if-none-match"))
        self.relay.answer(0, body=b"full", Cache_Control="max-age=60", ETag='"7"')
        self.assertEqual((client.head.status, client.body), (304, []))
        self.assertEqual(b"".join(self.request().body), b"full")
        self.assertEqual(len(self.relay.calls), 1)

    def test_failedIfMatchOnMiss(self):
        client = self.request(get(If_Match='"other"'))
        self.relay.answer(0, body=b"full", Cache_Control="max-age=60", ETag='"7"')
        self.assertEqual((client.head.status, client.body), (412, []))

    def test_cacheStatusOfStoredAndVaryMiss(self):
        first = self.request(get(Accept="a"))
        self.relay.answer(0, body=b"a", Cache_Control="max-age=60", Age="10", Vary="Accept", Content_Length="1")
        self.assertEqual(first.head.headers.get(b"cache-status"), b"dualproxy; fwd=uri-miss; stored; ttl=50")
        second = self.request(get(Accept="b"))
        self.relay.answer(1, body=b"b", Cache_Control="max-age=60")
        self.assertIn(b"fwd=vary-miss", second.head.headers.get(b"cache-status"))

    def test_staleWhileRevalidateRevalidatesInBackground(self):
        self.request()
        self.relay.answer(0, body=b"old", Cache_Control="max-age=0, stale-while-revalidate=60")
        served = self.request()
        self.assertEqual(b"".join(served.body), b"old")
        background = self.relay.calls[1][0]
        self.assertIsNot(background, served)
        self.request()
        self.assertEqual(len(self.relay.calls), 2, "one background revalidation at a time")
        self.relay.answer(1, body=b"new", Cache_Control="max-age=60")
        self.assertEqual(served.channel.handler.done, [background])
        self.assertEqual(b"".join(self.request().body), b"new")

    def test_staleIfErrorOnUnreachableUpstream(self):
        self.request()
        self.relay.answer(0, body=b"kept", Cache_Control="max-age=0, stale-if-error=60", ETag='"k"')
        client = self.request()
        self.relay.calls[1][2].refuse(502, "connection refused")
        self.assertEqual((client.refused, b"".join(client.body)), (None, b"kept"))
        self.assertIn(b"stale-if-error", client.head.headers.get(b"cache-status"))

    def test_onlyIfCachedMiss(self):
        client = self.request(get(Cache_Control="only-if-cached"))
        self.assertEqual(client.refused, 504)
        self.assertEqual(self.relay.calls, [])

    def test_unsafeMethodInvalidatesLocations(self):
        for path in (b"/a", b"/b"):
            self.request(get(path), b"http://example.test" + path)
            self.relay.answer(-1, body=b"x", Cache_Control="max-age=60")
        self.request(get(method=b"DELETE"))
        self.relay.answer(-1, Location="/b", Content_Length="0")
        self.assertIsNone(self.store.get(b"http://example.test/a"))
        self.assertIsNone(self.store.get(b"http://example.test/b"))
        self.assertEqual(self.cache.stats.invalidated, 2)

    def test_freshPostStoredUnderContentLocation(self):
        self.request(get(method=b"POST"))
        self.relay.answer(-1, body=b"result", Cache_Control="max-age=60", Content_Location="/result")
        later = self.request(get(b"/result"), b"http://example.test/result")
        self.assertEqual(b"".join(later.body), b"result")
        self.assertEqual(len(self.relay.calls), 1)

    def test_variantsUnderOneIndex(self):
        for language in ("en", "fr"):
            self.request(get(Accept_Language=language))
            self.relay.answer(-1, body=language.encode(), Cache_Control="max-age=60", Vary="Accept-Language")
        for language in ("fr", "en"):
            self.assertEqual(b"".join(self.request(get(Accept_Language=language)).body), language.encode())
        self.assertEqual(len(self.relay.calls), 2)
        self.assertTrue(self.cache.purge(URI))
        self.request(get(Accept_Language="en"))
        self.assertEqual(len(self.relay.calls), 3, "purging the URI drops every variant")

    def test_purgeRequestNeedsAllowedClient(self):
        from dualproxy.policy.acl import ClientACL
        from ipaddress import ip_network

        self.cache.purgeFrom = ClientACL([ip_network("10.0.0.0/8")])
        client = self.request(get(method=b"PURGE"))
        self.assertEqual(client.refused, 403)


KEYS = [
    ("RFC 9110 §4.2.3: scheme and host are case-insensitive",
     b"HTTP://Example.TEST/Path", b"http://example.test/Path"),
    ("RFC 9110 §4.2.3: the default port is the same as none",
     b"http://example.test:80/a?b", b"http://example.test/a?b"),
    ("RFC 9110 §4.2.3: https's default port is 443",
     b"https://example.test:443/", b"https://example.test/"),
    ("another port is another origin", b"http://example.test:8080/a", b"http://example.test:8080/a"),
    ("the path stays case-sensitive", b"http://a/B", b"http://a/B"),
]


@fromTable(KEYS, "check")
class PrimaryKeyTests(SynchronousTestCase):
    def check(self, uri, expected):
        self.assertEqual(primaryKey(uri), expected)


class RecordTests(SynchronousTestCase):
    def test_responseRoundTrip(self):
        head = ResponseHead(200, b"OK", Headers([(b"ETag", b'"\xe9"'), (b"Vary", b"A")]))
        stored = StoredResponse(head, 10.0, 11.5, ((b"a", None),))
        loaded = records.load(records.dumpResponse(stored), 42)
        self.assertEqual((loaded.requestTime, loaded.responseTime, loaded.varyKey), (10.0, 11.5, ((b"a", None),)))
        self.assertEqual(list(loaded.response.headers), list(head.headers))
        self.assertEqual((loaded.response.framing, loaded.response.length), (LENGTH, 42))

    def test_indexRoundTrip(self):
        index = VaryIndex.new((b"accept",))
        self.assertEqual(records.load(records.dumpIndex(index), 0), index)

    def test_unreadableIsMiss(self):
        for data in (b"", b"{", b"[]", b'{"status": "x"}'):
            self.assertIsNone(records.load(data, 0))

    def test_variantKeysDistinguishAbsence(self):
        index = VaryIndex((b"a",), "g")
        self.assertNotEqual(index.variantKey(b"k", ((b"a", None),)), index.variantKey(b"k", ((b"a", b""),)))


class EntrySenderTests(SynchronousTestCase):
    def test_pausesAndResumes(self):
        exchange = FakeExchange(get())
        sender = EntrySender(exchange, iter([b"a", b"b", b"c"]))
        exchange.write = lambda data: (exchange.body.append(data), sender.pauseProducing())
        sender.start()
        self.assertEqual(exchange.body, [b"a"])
        sender.resumeProducing()
        self.assertEqual(exchange.body, [b"a", b"b"])
        sender.resumeProducing()
        sender.resumeProducing()
        self.assertTrue(exchange.finished)
        self.assertIsNone(exchange.producer)


class SettingsTests(SynchronousTestCase):
    """
    The C{[cache]} table, from config to a running cache.
    """

    def build(self, table, base="."):
        from dualproxy.config import fromDict
        from dualproxy.service.cache import SharedCache

        return SharedCache(fromDict({"cache": table}, base=base).cache, Clock(), None).get()

    def test_storeOptionsPassedThrough(self):
        cache = self.build({"max_bytes": 4096, "max_object_size": 1024, "name": "edge", "lock_timeout": 2})
        self.assertEqual((cache.store.maxBytes, cache.store.maxObjectSize), (4096, 1024))
        self.assertEqual((cache.name, cache.lockTimeout, cache.purgeFrom), ("edge", 2, None))

    def test_diskPathRelativeToConfigFile(self):
        import os

        base = self.mktemp()
        cache = self.build({"store": "disk", "path": "cache"}, base)
        self.assertTrue(os.path.isdir(os.path.join(base, "cache")))
        self.assertEqual(cache.store.maxObjectSize, 64 << 20)

    def test_storeErrorsNameTheKey(self):
        from dualproxy.config import ConfigError

        for table, message in (
            ({"store": "tape"}, "cache.store: unknown store 'tape' (known: disk, memory, redis)"),
            ({"store": "disk"}, "cache.path: expected the cache directory, got None"),
            ({"max_bytes": -1}, "cache.max_bytes: expected a positive number of bytes, got -1"),
            ({"colour": "red"}, "cache.colour: unknown option for the memory store (known: max_bytes, max_object_size)"),
        ):
            self.assertEqual(str(self.assertRaises(ConfigError, self.build, table)), message)
