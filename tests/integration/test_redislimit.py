"""
The redis limiter against a real redis-server: instances sharing buckets,
limits kept apart, bounded keys, and what a request gets when Redis is
killed or stops answering; then through real proxies.

Slow rates (a token per 100 s) wherever a refill would change the answer:
refills are checked as one take's wait, never waited for.
"""

from __future__ import annotations

import json
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from dualproxy.policy.ratelimit import LimiterUnavailable
from dualproxy.policy.redislimit import redis as redisLimiter

from ..redisserver import startRedis
from .support import REPEAT_CLIENT, Origin, Proxy, curl, pythonClient
from .test_socks import CURL_SOCKS_REFUSED


class Resources:
    reactor = reactor

    def __init__(self, redis, label: str = "route:*/"):
        self.redis = redis
        self.label = label


def connected(client):
    """
    Fires once C{client}'s command connection is ready.
    """
    return next(iter(client)).whenConnected()


class LimiterTests(TestCase):
    @inlineCallbacks
    def clients(self, count: int = 1, timeout: float = 0.5):
        self.server = yield startRedis(self)
        clients = [self.server.client(self, timeout=timeout) for _ in range(count)]
        for client in clients:
            yield connected(client)
        return clients

    @inlineCallbacks
    def takes(self, limiter, count: int, key: str = "address:10.0.0.1"):
        waits = []
        for _ in range(count):
            waits.append((yield limiter.take(key, reactor.seconds())))
        return waits

    @inlineCallbacks
    def test_instancesShareOneBucket(self):
        """
        Two instances' limiters for one limit take from one bucket: with a
        burst of 3, the fourth request across both waits for the token.
        """
        first, second = yield self.clients(2)
        one = redisLimiter({"rate": 0.01, "burst": 3}, Resources(first))
        other = redisLimiter({"rate": 0.01, "burst": 3}, Resources(second))
        waits = []
        for limiter in (one, other, one, other):
            waits += yield self.takes(limiter, 1)
        self.assertEqual(waits[:3], [0.0, 0.0, 0.0])
        self.assertTrue(99 < waits[3] <= 100, waits)
        self.assertEqual((one.stats(0), other.stats(0)),
                         ({"allowed": 2, "rejected": 0, "errors": 0, "keys": 0, "saturated": 0},
                          {"allowed": 1, "rejected": 1, "errors": 0, "keys": 0, "saturated": 0}))

    @inlineCallbacks
    def test_waitIsTheRefillTime(self):
        """
        An empty bucket's wait is the time to one token at the rate.
        """
        client, = yield self.clients()
        limiter = redisLimiter({"rate": 0.5, "burst": 1}, Resources(client))
        waits = yield self.takes(limiter, 2)
        self.assertEqual(waits[0], 0.0)
        self.assertTrue(1.9 < waits[1] <= 2.0, waits)

    @inlineCallbacks
    def test_limitsAndClientsKeptApart(self):
        client, = yield self.clients()
        route = redisLimiter({"rate": 0.01, "burst": 1}, Resources(client, "route:*/"))
        pool = redisLimiter({"rate": 0.01, "burst": 1}, Resources(client, "pool:app"))
        waits = (yield self.takes(route, 1)) + (yield self.takes(pool, 1))
        waits += yield self.takes(route, 1, "address:10.0.0.2")
        self.assertEqual(waits, [0.0, 0.0, 0.0])
        waits = (yield self.takes(route, 1)) + (yield self.takes(pool, 1))
        self.assertTrue(all(wait > 99 for wait in waits), waits)

    @inlineCallbacks
    def test_bucketExpiresWhenFull(self):
        """
        A bucket lives in a hash under the prefix until it would be full
        again, so idle clients leave nothing behind.
        """
        client, = yield self.clients()
        limiter = redisLimiter({"rate": 0.01, "burst": 3}, Resources(client))
        yield self.takes(limiter, 1)
        key = b"dualproxy:rl:8:route:*/:address:10.0.0.1"
        self.assertEqual((yield client.execute("KEYS", "*")), [key])
        state = yield client.execute("HGETALL", key)
        self.assertEqual(float(dict(zip(state[::2], state[1::2]))[b"t"]), 2.0)
        ttl = yield client.execute("PTTL", key)
        self.assertTrue(99000 < ttl <= 100000, ttl)

    @inlineCallbacks
    def killed(self, onError: str):
        """
        A limiter whose Redis was killed, once the client knows.
        """
        client, = yield self.clients()
        limiter = redisLimiter({"rate": 0.01, "burst": 1, "on_error": onError}, Resources(client))
        yield self.server.stop()
        yield limiter.take("address:10.0.0.1", 0).addErrback(lambda failure: failure.trap(LimiterUnavailable))
        self.assertFalse(client.up)
        return limiter

    @inlineCallbacks
    def test_killedFailOpen(self):
        limiter = yield self.killed("allow")
        self.assertEqual(self.successResultOf(limiter.take("address:10.0.0.1", 0)), 0.0)
        self.assertEqual(limiter.stats(0)["errors"], 2)

    @inlineCallbacks
    def test_killedFailClosed(self):
        limiter = yield self.killed("deny")
        self.failureResultOf(limiter.take("address:10.0.0.1", 0), LimiterUnavailable)
        self.assertEqual(limiter.stats(0)["errors"], 2)

    @inlineCallbacks
    def test_stoppedAnsweringTimesOut(self):
        """
        A Redis that stops answering costs a request the client's timeout,
        not a hang.
        """
        client, = yield self.clients(timeout=0.2)
        limiter = redisLimiter({"rate": 0.01, "burst": 1, "on_error": "deny"}, Resources(client))
        yield self.takes(limiter, 1)
        self.server.transport.signalProcess(signal.SIGSTOP)
        self.addCleanup(self.server.transport.signalProcess, signal.SIGCONT)
        started = reactor.seconds()
        yield self.assertFailure(limiter.take("address:10.0.0.1", 0), LimiterUnavailable)
        elapsed = reactor.seconds() - started
        self.assertTrue(0.15 < elapsed < 2, elapsed)


class ProxyTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        self.server = yield startRedis(self)
        self.origin = Origin("a")
        self.addCleanup(self.origin.stop)

    @inlineCallbacks
    def proxy(self, config: dict):
        proxy = Proxy(dict(config, redis={"endpoint": self.server.endpoint, "timeout": 0.5}))
        self.addCleanup(proxy.stop)
        yield connected(proxy.service.lasting.redis)
        return proxy

    def reverse(self, **limit):
        return self.proxy({"mode": "reverse", "reverse": {
            "pools": {"app": {"backends": [{"url": f"http://{self.origin.address}"}]}},
            "routes": [{"prefix": "/", "pool": "app", "rate_limit": dict(limit, limiter="redis")}]}})

    @inlineCallbacks
    def answers(self, proxy, count: int, target: str):
        out, err, code = yield pythonClient(REPEAT_CLIENT, proxy.address, target, str(count))
        self.assertEqual(code, 0, err)
        return json.loads(out)

    def gauge(self, proxy, name: str):
        sample, = [sample for gauge, _, _, sample in proxy.service.metrics.gauges if gauge == name]
        return list(sample())

    @inlineCallbacks
    def test_forwardProxiesShareLimits(self):
        """
        Two forward proxies with one limit and one Redis: a client's
        requests through either take from its one bucket.
        """
        config = {"forward": {"allow_destinations": ["127.0.0.0/8"],
                              "rate_limit": {"rate": 0.01, "burst": 2, "limiter": "redis"}}}
        one = yield self.proxy(config)
        other = yield self.proxy(config)
        answers = yield self.answers(one, 2, self.origin.url("/name"))
        answers += yield self.answers(other, 1, self.origin.url("/name"))
        self.assertEqual([status for status, _, _ in answers], [200, 200, 429])
        status, retryAfter, body = answers[-1]
        self.assertEqual((retryAfter, body), ("100", "rate limit exceeded for the proxy\n"))
        self.assertEqual(self.gauge(other, "dualproxy_redis_up"), [({}, 1.0)])

    @inlineCallbacks
    def test_redisDownFailClosed(self):
        proxy = yield self.reverse(rate=0.01, burst=5, on_error="deny")
        yield self.server.stop()
        answers = yield self.answers(proxy, 2, "/name")
        self.assertEqual(answers, [[503, "1", "the rate-limit store for route */ is unavailable\n"]] * 2)
        self.assertEqual(self.origin.requests, 0)
        self.assertEqual(self.gauge(proxy, "dualproxy_ratelimit_errors"), [({"limiter": "route:*/"}, 2)])
        self.assertEqual(self.gauge(proxy, "dualproxy_redis_up"), [({}, 0.0)])
        self.assertEqual(self.gauge(proxy, "dualproxy_redis_failures"), [({}, 2)])

    @inlineCallbacks
    def test_redisDownFailOpen(self):
        proxy = yield self.reverse(rate=0.01, burst=1)
        answers = yield self.answers(proxy, 2, "/name")
        self.assertEqual([status for status, _, _ in answers], [200, 429])
        yield self.server.stop()
        answers = yield self.answers(proxy, 2, "/name")
        self.assertEqual(answers, [[200, None, "a"]] * 2)

    @inlineCallbacks
    def test_socksTunnels(self):
        """
        SOCKS tunnels wait for the shared bucket too: the second within the
        burst of 1 is refused, and so is every one while Redis is down and
        the limit fails closed.
        """
        proxy = yield self.proxy({"mode": "socks", "socks": {
            "allow_destinations": ["127.0.0.0/8"], "ports": ["1-65535"],
            "rate_limit": {"rate": 0.01, "burst": 1, "limiter": "redis", "on_error": "deny"}}})
        out, err, code = yield curl("--socks5", proxy.address, self.origin.url("/name"))
        self.assertEqual((code, out), (0, b"a"), err)
        codes = []
        for stop in (False, True):
            if stop:
                yield self.server.stop()
            _, _, code = yield curl("--socks5", proxy.address, self.origin.url("/name"))
            codes.append(code)
        self.assertEqual(codes, [CURL_SOCKS_REFUSED] * 2)
        self.assertEqual(self.origin.connections, 1)
        self.assertEqual(self.gauge(proxy, "dualproxy_ratelimit_errors"), [({"limiter": "socks"}, 1)])
