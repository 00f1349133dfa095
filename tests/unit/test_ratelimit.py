"""
Rate limiting: token-bucket arithmetic with explicit clocks, the memory
limiter's bounded buckets and counters, and how a request is keyed and
refused.
"""

from __future__ import annotations

import hashlib

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dualproxy.config import ConfigError, fromDict
from dualproxy.settings.model import RateLimitSettings
from dualproxy.http.message import Headers, Refusal
from dualproxy.interfaces import IRateLimiter, IRateLimiterFactory
from dualproxy.plugins import findModes, findRateLimiters, loadRateLimiter
from dualproxy.policy.ratelimit import memory, MemoryRateLimiter, RateLimit

from tests.tables import fromTable

# (rule, options, [(now, wait expected), ...]) for one client's requests.
BUCKETS = [
    ("a new client gets its burst at once, then waits for a token", {"rate": 1, "burst": 3},
     [(0, 0), (0, 0), (0, 0), (0, 1.0)]),
    ("tokens come back at rate per second", {"rate": 2, "burst": 2},
     [(0, 0), (0, 0), (0, 0.5), (0.5, 0), (0.5, 0.5), (0.75, 0.25), (1.0, 0)]),
    ("a bucket refills to its burst and no further", {"rate": 1, "burst": 2},
     [(0, 0), (0, 0), (100, 0), (100, 0), (100, 1.0)]),
    ("a refused request takes nothing", {"rate": 1, "burst": 1},
     [(0, 0), (0.5, 0.5), (0.75, 0.25), (1.0, 0)]),
    ("refusals leave the wait exactly as promised", {"rate": 0.1, "burst": 1},
     [(0, 0), (0, 10.0), (3, 7.0), (7, 3.0), (10, 0)]),
    ("the default burst is the rate", {"rate": 5},
     [(0, 0)] * 5 + [(0, 0.2)]),
    ("the default burst is at least one request", {"rate": 0.5},
     [(0, 0), (0, 2.0), (2, 0)]),
    ("a clock that went back refills nothing", {"rate": 1, "burst": 1},
     [(10, 0), (5, 1.0), (10.5, 0.5), (11, 0)]),
]


@fromTable(BUCKETS, "check")
class TokenBucketTests(SynchronousTestCase):
    def check(self, options, requests):
        limiter = memory(options)
        waits = [limiter.take("client", now) for now, _ in requests]
        for (now, expected), wait in zip(requests, waits):
            self.assertAlmostEqual(wait, expected, msg=f"at {now}: {waits}")


# (rule, wait, the Retry-After it becomes)
RETRY_AFTER = [
    ("a fraction of a second is one second", 0.25, b"1"),
    ("a whole number of seconds stays", 10.0, b"10"),
    ("anything beyond a whole second rounds up", 2.000001, b"3"),
]


class _Limiter:
    def __init__(self, wait):
        self.wait = wait
        self.keys = []

    def take(self, key, now):
        self.keys.append(key)
        return self.wait


@fromTable(RETRY_AFTER, "check")
class RetryAfterTests(SynchronousTestCase):
    def check(self, wait, retryAfter):
        refusal = self.assertRaises(Refusal, RateLimit(_Limiter(wait), "address", "route */api").check,
                                    "10.0.0.1", Headers(), None, 0.0)
        self.assertEqual((refusal.status, refusal.reason, refusal.headers, refusal.errorType),
                         (429, "rate limit exceeded for route */api", ((b"Retry-After", retryAfter),),
                          "http_request_denied"))


# (rule, key setting, address, headers, user, bucket key)
KEYS = [
    ("by address", "address", "10.0.0.1", [], None, "address:10.0.0.1"),
    ("a client without an address (a UNIX socket)", "address", None, [], None, "address:unknown"),
    ("by header, case-insensitive name", "header:X-Api-Key", "10.0.0.1", [(b"x-api-key", b"k1")], None,
     "header:k1"),
    ("a request without the header counts against its address", "header:X-Api-Key", "10.0.0.1", [], None,
     "address:10.0.0.1"),
    ("a header value that looks like an address is still a header value", "header:X-Api-Key", "10.0.0.1",
     [(b"X-Api-Key", b"address:10.0.0.2")], None, "header:address:10.0.0.2"),
    ("a long header value is stored as its hash", "header:X-Api-Key", "10.0.0.1", [(b"X-Api-Key", b"k" * 65)],
     None, "header:sha256:" + hashlib.sha256(b"k" * 65).hexdigest()),
    ("by authenticated user", "user", "10.0.0.1", [], "alice", "user:alice"),
    ("by user without one (the proxy's own pages)", "user", "10.0.0.1", [], None, "address:10.0.0.1"),
]


@fromTable(KEYS, "check")
class KeyTests(SynchronousTestCase):
    def check(self, setting, address, headers, user, expected):
        limiter = _Limiter(0.0)
        RateLimit(limiter, setting, "the proxy").check(address, Headers(headers), user, 0.0)
        self.assertEqual(limiter.keys, [expected])


class MemoryLimiterTests(SynchronousTestCase):
    def test_interfaces(self):
        self.assertTrue(verifyObject(IRateLimiterFactory, memory))
        self.assertTrue(verifyObject(IRateLimiter, memory({"rate": 1})))
        self.assertIs(findRateLimiters()["memory"], memory)

    def test_factoryOptions(self):
        built = memory({"rate": 2.5, "burst": 4, "max_keys": 10})
        self.assertEqual((built.bucket.rate, built.bucket.burst, built.maxKeys), (2.5, 4.0, 10))
        self.assertEqual(memory({"rate": 2.5}).bucket.burst, 2.5)
        for options, message in (({"rate": 1, "size": 1}, "size: unknown option for the memory limiter"),
                                 ({}, "rate: expected a positive number"),
                                 ({"rate": -1}, "rate: expected a positive number"),
                                 ({"rate": float("nan")}, "rate: expected a positive number"),
                                 ({"rate": 1, "burst": 0.5}, "burst: expected a number of requests of 1 or more"),
                                 ({"rate": 1, "max_keys": 0}, "max_keys: expected a positive integer"),
                                 ({"rate": 1, "max_keys": True}, "max_keys: expected a positive integer")):
            error = self.assertRaises(ValueError, memory, options)
            self.assertTrue(str(error).startswith(message), str(error))

    def test_stats(self):
        limiter = MemoryRateLimiter(1.0, 2.0, 100)
        for key in ("a", "a", "a", "b"):
            limiter.take(key, 0.0)
        self.assertEqual(limiter.stats(0.0), {"allowed": 3, "rejected": 1, "keys": 2, "saturated": 1})
        self.assertEqual(limiter.stats(1.0)["saturated"], 0, "a has a token again")

    def test_keysBounded(self):
        """
        However many clients come at once, at most max_keys buckets are
        kept: the least recently used goes, and its client starts afresh.
        """
        limiter = MemoryRateLimiter(1.0, 1.0, 10)
        for client in range(1000):
            limiter.take(f"client-{client}", 0.0)
        self.assertEqual(limiter.stats(0.0)["keys"], 10)
        self.assertEqual(limiter.take("client-0", 0.0), 0.0, "evicted: a full bucket again")
        self.assertEqual(limiter.take("client-999", 0.0), 1.0, "kept: still empty")

    def test_recentlyRefusedKept(self):
        """
        A refused request counts as use: the client keeps its empty bucket
        while a quieter one is evicted.
        """
        limiter = MemoryRateLimiter(1.0, 1.0, 2)
        limiter.take("busy", 0.0)
        limiter.take("quiet", 0.0)
        limiter.take("busy", 0.5)
        limiter.take("new", 0.5)
        self.assertEqual(limiter.take("busy", 0.5), 0.5)
        self.assertEqual(limiter.take("quiet", 0.5), 0.0)

    def test_fullBucketsDroppedFirst(self):
        """
        A full bucket is the same as none: those go before any bucket that
        still holds back a client, and the count drops with them.
        """
        limiter = MemoryRateLimiter(1.0, 1.0, 3)
        limiter.take("a", 0.0)
        limiter.take("b", 0.5)
        limiter.take("c", 1.0)
        limiter.take("d", 1.6)
        self.assertEqual(limiter.stats(1.6)["keys"], 2)
        self.assertAlmostEqual(limiter.take("c", 1.6), 0.4)


class LoadTests(SynchronousTestCase):
    def test_settingsToLimiter(self):
        """
        The table's rate and burst and other keys reach the plugin.
        """
        config = fromDict({"forward": {"rate_limit": {"rate": 2, "burst": 5, "max_keys": 7,
                                                      "key": "header:X-Api-Key"}}})
        settings = config.forward.rate_limit
        self.assertEqual((settings.rate, settings.burst, settings.key, settings.limiter, dict(settings.options)),
                         (2.0, 5, "header:X-Api-Key", "memory", {"max_keys": 7}))
        limiter = loadRateLimiter(settings, "forward.rate_limit", None)
        self.assertEqual((limiter.bucket.rate, limiter.bucket.burst, limiter.maxKeys), (2.0, 5.0, 7))

    def test_errors(self):
        for settings, message in (
            (RateLimitSettings(1.0, limiter="nope"), "forward.rate_limit.limiter: unknown limiter 'nope' (known: "),
            (RateLimitSettings(1.0, options={"max_keys": 0}), "forward.rate_limit.max_keys: expected a positive"),
            (RateLimitSettings(1.0, options={"maxkeys": 1}), "forward.rate_limit.maxkeys: unknown option"),
        ):
            error = self.assertRaises(ConfigError, loadRateLimiter, settings, "forward.rate_limit", None)
            self.assertTrue(str(error).startswith(message), str(error))

    def test_modesCheckOptionsWhenBuilding(self):
        """
        A limiter option is checked when the mode builds its service, and
        the error names the table it is in.
        """
        pool = {"backends": ["http://127.0.0.1:1"]}
        for data, key in (
            ({"mode": "reverse", "reverse": {"pools": {"app": dict(pool, rate_limit={"rate": 1, "max_keys": 0})},
                                             "routes": [{"pool": "app"}]}},
             "reverse.pools.app.rate_limit.max_keys"),
            ({"mode": "reverse", "reverse": {"pools": {"app": pool}, "routes": [
                {"pool": "app"}, {"prefix": "/api", "pool": "app", "rate_limit": {"rate": 1, "max_keys": 0}}]}},
             "reverse.routes[1].rate_limit.max_keys"),
            ({"forward": {"rate_limit": {"rate": 1, "limiter": "nope"}}}, "forward.rate_limit.limiter"),
        ):
            config = fromDict(data)
            error = self.assertRaises(ConfigError, findModes()[config.mode].makeService, config, [])
            self.assertEqual(error.key, key)

    def test_labelledForMetrics(self):
        config = fromDict({"mode": "reverse", "reverse": {
            "pools": {"app": {"backends": ["http://127.0.0.1:1"], "rate_limit": {"rate": 1}},
                      "other": {"backends": ["http://127.0.0.1:2"]}},
            "routes": [{"pool": "app"}, {"host": "www.example.com", "prefix": "/api", "pool": "other",
                                         "rate_limit": {"rate": 5}}]}})
        service = findModes()["reverse"].makeService(config, [])
        self.assertEqual([label for label, _ in service.rateLimiters], ["pool:app", "route:www.example.com/api"])
        self.assertEqual([limiter.bucket.rate for _, limiter in service.rateLimiters], [1.0, 5.0])
