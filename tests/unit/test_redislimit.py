"""
A limiter that asks a server: how L{RateLimit} answers its Deferred (go,
429, 503), and the redis limiter's options, keys, counters and outage
logging against a fake client (the Lua script itself runs in the
integration tests, against a real Redis).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dualproxy.config import ConfigError
from dualproxy.http.message import Headers, Refusal
from dualproxy.interfaces import IRateLimiter, IRateLimiterFactory
from dualproxy.plugins import findRateLimiters, loadRateLimiter
from dualproxy.policy import redislimit
from dualproxy.policy.ratelimit import LimiterUnavailable, RateLimit
from dualproxy.policy.redislimit import TAKE, RedisRateLimiter
from dualproxy.redis.client import RedisUnavailable
from dualproxy.redis.protocol import RedisError
from dualproxy.settings.model import RateLimitSettings


class _AsyncLimiter:
    def __init__(self, answer):
        self.answer = answer

    def take(self, key, now):
        return self.answer()


class DeferredCheckTests(SynchronousTestCase):
    def check(self, answer):
        return RateLimit(_AsyncLimiter(answer), "address", "route */api").check("10.0.0.1", Headers(), None, 0.0)

    def test_allowed(self):
        self.assertIsNone(self.successResultOf(self.check(lambda: defer.succeed(0.0))))

    def test_exceeded(self):
        refusal = self.failureResultOf(self.check(lambda: defer.succeed(2.5)), Refusal).value
        self.assertEqual((refusal.status, refusal.reason, refusal.headers, refusal.errorType),
                         (429, "rate limit exceeded for route */api", ((b"Retry-After", b"3"),),
                          "http_request_denied"))

    def test_unavailable(self):
        refusal = self.failureResultOf(self.check(lambda: defer.fail(LimiterUnavailable("down"))), Refusal).value
        self.assertEqual((refusal.status, refusal.reason, refusal.headers, refusal.errorType),
                         (503, "the rate-limit store for route */api is unavailable", ((b"Retry-After", b"1"),),
                          "proxy_internal_error"))

    def test_bugsPassThrough(self):
        """
        Anything else is a bug, for the exchange to answer as one (a 500).
        """
        self.failureResultOf(self.check(lambda: defer.fail(ZeroDivisionError())), ZeroDivisionError)

    def test_syncLimiterStaysSync(self):
        self.assertIsNone(RateLimit(_AsyncLimiter(lambda: 0.0), "address", "x").check(None, Headers(), None, 0.0))
        self.assertRaises(Refusal, RateLimit(_AsyncLimiter(lambda: 1.0), "address", "x").check,
                          None, Headers(), None, 0.0)


class FakeRedis:
    """
    What the limiter uses of a client: its prefix and evaluate, answering
    from C{replies} (bytes, or an exception to fail with).
    """

    prefix = b"test:"

    def __init__(self, *replies):
        self.replies = list(replies)
        self.calls = []

    def evaluate(self, script, keys, args):
        self.calls.append((script, tuple(keys), tuple(args)))
        reply = self.replies.pop(0)
        return defer.fail(reply) if isinstance(reply, Exception) else defer.succeed(reply)


class Resources:
    reactor = None

    def __init__(self, redis, label="route:*/"):
        self.redis = redis
        self.label = label


class RedisLimiterTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.patch(redislimit, "_log", Logger(observer=self.events.append))

    def messages(self):
        return [event["log_format"].format(**event) for event in self.events]

    def test_interfaces(self):
        self.assertTrue(verifyObject(IRateLimiterFactory, redislimit.redis))
        self.assertTrue(verifyObject(IRateLimiter, redislimit.redis({"rate": 1}, Resources(FakeRedis()))))
        self.assertIs(findRateLimiters()["redis"], redislimit.redis)

    def test_options(self):
        built = redislimit.redis({"rate": 2.5, "burst": 4, "on_error": "deny"}, Resources(FakeRedis()))
        self.assertEqual((built.rate, built.burst, built.failOpen, built.name), (2.5, 4.0, False, "route:*/"))
        built = redislimit.redis({"rate": 2.5, "name": "api"}, Resources(FakeRedis()))
        self.assertEqual((built.burst, built.failOpen, built.name), (2.5, True, "api"))
        for options, resources, message in (
            ({"rate": 1, "max_keys": 1}, Resources(FakeRedis()), "max_keys: unknown option for the redis limiter"),
            ({}, Resources(FakeRedis()), "rate: expected a positive number"),
            ({"rate": 1, "burst": 0}, Resources(FakeRedis()), "burst: expected a number of requests of 1 or more"),
            ({"rate": 1, "on_error": "open"}, Resources(FakeRedis()), "on_error: expected one of 'allow', 'deny'"),
            ({"rate": 1}, Resources(None), "limiter: the redis limiter needs a [redis] table"),
            ({"rate": 1}, None, "limiter: the redis limiter needs a [redis] table"),
            ({"rate": 1, "name": ""}, Resources(FakeRedis()), "name: expected a non-empty string"),
        ):
            error = self.assertRaises(ValueError, redislimit.redis, options, resources)
            self.assertTrue(str(error).startswith(message), str(error))

    def test_withoutRedisTableNamesLimiter(self):
        settings = RateLimitSettings(1.0, limiter="redis")
        error = self.assertRaises(ConfigError, loadRateLimiter, settings, "forward.rate_limit", Resources(None))
        self.assertEqual(error.key, "forward.rate_limit.limiter")

    def test_takeAsksTheScript(self):
        """
        One script call per take, on the limit's own bucket for the
        client, with the rate and burst; the reply is the wait.
        """
        fake = FakeRedis(b"0", b"0.25")
        limiter = RedisRateLimiter(fake, "route:*/", 4.0, 2.0)
        self.assertEqual(self.successResultOf(limiter.take("address:10.0.0.1", 0.0)), 0.0)
        self.assertEqual(self.successResultOf(limiter.take("address:10.0.0.1", 0.0)), 0.25)
        self.assertEqual(fake.calls[0], (TAKE, (b"test:rl:8:route:*/:address:10.0.0.1",), ("4.0", "2.0")))
        self.assertEqual(limiter.stats(0.0), {"allowed": 1, "rejected": 1, "errors": 0, "keys": 0, "saturated": 0})

    def test_namesKeptApart(self):
        """
        The name's length comes first: no name and key split differently
        reach another limit's bucket.
        """
        one = RedisRateLimiter(FakeRedis(), "a:b", 1.0, 1.0).keyFor("c")
        other = RedisRateLimiter(FakeRedis(), "a", 1.0, 1.0).keyFor("b:c")
        self.assertNotEqual(one, other)

    def test_failOpen(self):
        limiter = RedisRateLimiter(FakeRedis(RedisUnavailable("gone"), RedisError("ERR busy"), b"0"), "x", 1.0, 1.0)
        self.assertEqual(self.successResultOf(limiter.take("k", 0.0)), 0.0)
        self.assertEqual(self.successResultOf(limiter.take("k", 0.0)), 0.0)
        self.assertEqual(limiter.stats(0.0)["errors"], 2)
        self.assertEqual(self.successResultOf(limiter.take("k", 0.0)), 0.0)
        self.assertEqual(limiter.stats(0.0)["allowed"], 1)
        self.assertEqual(self.messages(), [
            "rate limit x: no answer from Redis (gone); letting requests through (fail-open) until it answers",
            "rate limit x: Redis answers again",
        ])

    def test_failClosed(self):
        limiter = RedisRateLimiter(FakeRedis(RedisUnavailable("gone"), RedisUnavailable("gone")), "x", 1.0, 1.0,
                                   failOpen=False)
        self.failureResultOf(limiter.take("k", 0.0), LimiterUnavailable)
        self.failureResultOf(limiter.take("k", 0.0), LimiterUnavailable)
        self.assertEqual(limiter.stats(0.0)["errors"], 2)
        self.assertEqual(self.messages(), [
            "rate limit x: no answer from Redis (gone); refusing requests (fail-closed) until it answers"])

    def test_bugsPassThrough(self):
        limiter = RedisRateLimiter(FakeRedis(ValueError("bug")), "x", 1.0, 1.0)
        self.failureResultOf(limiter.take("k", 0.0), ValueError)
