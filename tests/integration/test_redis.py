"""
The Redis client and the redis cache store against a real redis-server:
two stores on two clients stand for two proxy instances.
"""

from __future__ import annotations

import json
import signal

from twisted.internet import defer
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from dualproxy.admin.status import document
from dualproxy.cache.redisstore import RedisStore, pack
from dualproxy.config import ConfigError, fromDict
from dualproxy.plugins import findModes
from dualproxy.redis.client import RedisUnavailable
from dualproxy.redis.protocol import RedisError
from dualproxy.service.root import Lasting

from ..redisserver import startRedis
from .support import Proxy


class ClientTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        self.server = yield startRedis(self)
        self.client = self.server.client(self, timeout=0.3)
        yield self.client.whenConnected()

    @inlineCallbacks
    def test_repliesInOrder(self):
        client = self.client
        self.assertEqual((yield client.execute("SET", "k", b"v\r\n")), b"OK")
        self.assertEqual((yield client.execute("GET", "k")), b"v\r\n")
        self.assertIsNone((yield client.execute("GET", "missing")))
        counts = yield defer.gatherResults([client.execute("INCR", "n") for _ in range(200)])
        self.assertEqual(counts, list(range(1, 201)))
        yield self.assertFailure(client.execute("INCR", "k"), RedisError)

    @inlineCallbacks
    def test_scriptsSurviveAFlushedCache(self):
        script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
        self.assertEqual((yield self.client.evaluate(script, ["s"], [2])), 2)
        self.assertEqual((yield self.client.evaluate(script, ["s"], [3])), 5)
        yield self.client.execute("SCRIPT", "FLUSH")
        self.assertEqual((yield self.client.evaluate(script, ["s"], [1])), 6)

    @inlineCallbacks
    def test_downFailsAtOnce(self):
        yield self.server.stop()
        yield self.assertFailure(self.client.execute("PING"), RedisUnavailable)
        self.assertFalse(self.client.up)
        self.assertGreaterEqual(self.client.failures, 1)

    @inlineCallbacks
    def test_lateAnswerFailsWithinTheTimeout(self):
        """
        A server that stops answering fails the command after the
        client's timeout, never later, and the connection is dropped so
        replies cannot fall out of step.
        """
        self.server.transport.signalProcess(signal.SIGSTOP)
        self.addCleanup(self.server.transport.signalProcess, signal.SIGCONT)
        started = self.client.reactor.seconds()
        yield self.assertFailure(self.client.execute("PING"), RedisUnavailable)
        self.assertLess(self.client.reactor.seconds() - started, 2.0)
        self.assertFalse(self.client.up)

    @inlineCallbacks
    def test_reconnectsAfterARestart(self):
        yield self.server.stop()
        self.server = yield startRedis(self, directory=self.server.directory)
        yield self.client.whenConnected()
        self.assertEqual((yield self.client.execute("PING")), b"PONG")


class LoginTests(TestCase):
    @inlineCallbacks
    def test_passwordAndDatabase(self):
        server = yield startRedis(self, "--requirepass", "s3cret")
        chosen = server.client(self, password="s3cret", database=3)
        other = server.client(self, password="s3cret")
        yield chosen.whenConnected()
        yield other.whenConnected()
        yield chosen.execute("SET", "k", "three")
        self.assertIsNone((yield other.execute("GET", "k")))
        self.assertEqual((yield chosen.execute("GET", "k")), b"three")

    @inlineCallbacks
    def test_wrongPasswordIsNeverUp(self):
        server = yield startRedis(self, "--requirepass", "s3cret")
        client = server.client(self, password="wrong")
        with_password = server.client(self, password="s3cret")
        yield with_password.whenConnected()
        # The wrong one's AUTH was answered (and refused) by now: its
        # connection came first, and the server answers in order.
        yield with_password.execute("PING")
        self.assertFalse(client.up)
        yield self.assertFailure(client.execute("PING"), RedisUnavailable)


class StoreTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        self.server = yield startRedis(self)
        self.one, self.two = self.instance(), self.instance()
        yield self.one.redis.whenConnected()
        yield self.two.redis.whenConnected()

    def instance(self, ttl: int = 600) -> RedisStore:
        return RedisStore(self.server.client(self, timeout=0.5), ttl, 1 << 20, 1 << 20)

    def settled(self, store: RedisStore) -> defer.Deferred:
        """
        Fires once Redis has done what C{store} sent it.
        """
        return store.redis.execute("PING")

    @inlineCallbacks
    def put(self, store: RedisStore, key: bytes, chunks, head: bytes = b"head"):
        writer = store.open(key)
        for chunk in chunks:
            writer.write(chunk)
        writer.commit(head)
        yield self.settled(store)

    @inlineCallbacks
    def test_oneInstancesMissIsTheOthersHit(self):
        yield self.put(self.one, b"http://a/", [b"hello ", b"world"])
        self.assertIsNone(self.two.peek(b"http://a/"))
        entry = yield self.two.get(b"http://a/")
        self.assertEqual((entry.head, entry.size, b"".join(entry.chunks())), (b"head", 11, b"hello world"))
        self.assertIs(self.two.peek(b"http://a/"), entry)
        self.assertEqual(b"".join(entry.chunks(6, 9)), b"wor")

    @inlineCallbacks
    def test_concurrentLookupsShareOneFetch(self):
        yield self.put(self.one, b"k", [b"x" * 1000])
        sent = []
        execute = self.two.redis.execute
        self.patch(self.two.redis, "execute", lambda *args: sent.append(args[0]) or execute(*args))
        entries = yield defer.gatherResults([self.two.get(b"k") for _ in range(5)])
        self.assertEqual(sent, ["GET"])
        self.assertEqual({id(entry) for entry in entries}, {id(entries[0])})

    @inlineCallbacks
    def test_purgeReachesEveryInstance(self):
        yield self.put(self.one, b"k", [b"body"])
        yield self.two.get(b"k")
        self.assertIsNotNone(self.two.peek(b"k"))
        heard = defer.Deferred()
        channel = self.two.redis.prefix + b"cache:removed"
        removed = self.two.redis.subscriptions[channel]

        def listening(message):
            removed(message)
            if not heard.called:
                heard.callback(message)

        self.two.redis.subscriptions[channel] = listening
        self.one.remove(b"k")
        self.assertEqual((yield heard), b"k")
        self.assertIsNone(self.two.peek(b"k"))
        self.assertIsNone((yield self.two.get(b"k")))

    @inlineCallbacks
    def test_unfinishedWritesAreNeverSeen(self):
        """
        An aborted write, and one that lost part of its body on the way
        (its connection dropped), leave nothing another instance could
        read.
        """
        aborted = self.one.open(b"aborted")
        aborted.write(b"part")
        aborted.abort()
        short = self.one.open(b"short")
        short.write(b"first part, ")
        yield self.settled(self.one)
        yield self.one.redis.execute("DEL", short.pending)
        short.write(b"second part")
        short.commit(b"head")
        yield self.settled(self.one)
        self.assertIsNone((yield self.two.get(b"aborted")))
        self.assertIsNone((yield self.two.get(b"short")))
        keys = yield self.one.redis.execute("KEYS", "*")
        self.assertEqual(keys, [])

    @inlineCallbacks
    def test_damagedEntryIsAMissAndDropped(self):
        key = self.one.entryKey(b"k")
        whole = pack(b"k", b"head", b"body")
        for damaged in (b"garbage", whole[1:], pack(b"other", b"head", b"body")):
            yield self.one.redis.execute("SET", key, damaged)
            self.assertIsNone((yield self.two.get(b"k")))
            yield self.settled(self.two)
            self.assertEqual((yield self.one.redis.execute("EXISTS", key)), 0)

    @inlineCallbacks
    def test_entriesExpire(self):
        store = self.instance(ttl=30)
        yield store.redis.whenConnected()
        yield self.put(store, b"k", [b"body"])
        remaining = yield store.redis.execute("PTTL", store.entryKey(b"k"))
        self.assertTrue(0 < remaining <= 30000, remaining)

    @inlineCallbacks
    def test_redisDownServesMisses(self):
        yield self.server.stop()
        self.assertIsNone((yield self.two.get(b"k")))
        writer = self.two.open(b"k")
        self.assertTrue(writer.write(b"body"))
        writer.commit(b"head")
        yield self.assertFailure(self.two.remove(b"other"), RedisUnavailable)
        self.assertGreaterEqual(self.two.errors, 3)
        # What was stored locally still serves this instance.
        self.assertEqual(b"".join(self.two.peek(b"k").chunks()), b"body")

    def test_needsARedisTable(self):
        config = fromDict({"mode": "reverse", "cache": {"store": "redis"}}, findModes())
        error = self.assertRaises(ConfigError, Lasting.start(config, Clock()).cache.get)
        self.assertEqual(str(error), "cache.store: the redis store needs a [redis] table")


class ProxyServiceTests(TestCase):
    @inlineCallbacks
    def test_statusShowsRedisAndHidesItsPassword(self):
        server = yield startRedis(self, "--requirepass", "s3cret")
        proxy = Proxy({"mode": "reverse", "redis": {"endpoint": server.endpoint, "password": "s3cret"},
                       "reverse": {"pools": {"app": {"backends": ["http://127.0.0.1:1"]}},
                                   "routes": [{"pool": "app"}]}})
        self.addCleanup(proxy.stop)
        yield proxy.service.lasting.redis.whenConnected()
        status = document(proxy.service)
        self.assertEqual(status["redis"], {"endpoint": server.endpoint, "up": True, "failures": 0})
        self.assertEqual(status["config"]["redis"]["password"], "<redacted>")
        self.assertNotIn("s3cret", json.dumps(status))
