"""
The C{redis} rate limiter: token buckets in the C{[redis]} server, shared
by every instance of the proxy that uses it.

Each take is one Lua script, atomic in Redis, that reads Redis's own clock
(C{TIME}): instances whose clocks disagree still share one timeline.  A
bucket is a hash that expires when it would be full again, so idle
clients cost nothing.  When Redis gives no answer within the client's
timeout, the limiter lets the request through (C{on_error = "allow"}) or
refuses it (C{"deny"}), and says so in the log once per outage.
"""

from __future__ import annotations

from typing import Dict, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import IRateLimiter, IRateLimiterFactory
from ..plugins import checkOptions
from ..redis.protocol import RedisError
from .ratelimit import LimiterUnavailable, bucketOptions

_log = Logger()

# KEYS[1]: the bucket; ARGV: rate (tokens a second), burst.  Fields: t, the
# tokens held at s, Redis's time in seconds.  Returns the wait as a string
# (Lua numbers in replies are truncated to integers).  A refused take
# writes nothing, as in the memory limiter.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1])
local since = tonumber(state[2])
if tokens == nil or since == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - since) * rate)
end
if tokens < 1 then
  return tostring((1 - tokens) / rate)
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 's', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return '0'
"""

ON_ERROR = ("allow", "deny")


@implementer(IRateLimiter)
class RedisRateLimiter:
    """
    Buckets named C{PREFIX rl:LENGTH:NAME:KEY} (the name's length keeps two
    names from sharing a bucket whatever the keys), so that each limit has
    its own and every instance with the same limit shares them.

    The C{now} a take is given is not used: Redis's clock is.  C{keys} and
    C{saturated} are 0: the buckets are shared, and no instance counts
    them; C{allowed} and C{rejected} are this instance's answers from
    Redis, C{errors} the takes it got none for.
    """

    def __init__(self, redis, name: str, rate: float, burst: float, failOpen: bool = True):
        self.redis = redis
        self.name = name
        self.rate = rate
        self.burst = burst
        self.failOpen = failOpen
        self.allowed = 0
        self.rejected = 0
        self.errors = 0
        self.failing = False
        encoded = name.encode("utf-8")
        self._base = redis.prefix + b"rl:%d:" % len(encoded) + encoded + b":"
        self._args = (repr(rate), repr(burst))

    def keyFor(self, key: str) -> bytes:
        return self._base + key.encode("utf-8", "surrogateescape")

    def take(self, key: str, now: float) -> Deferred:
        d = self.redis.evaluate(TAKE, (self.keyFor(key),), self._args)
        return d.addCallbacks(self._answered, self._failed)

    def _answered(self, reply: bytes) -> float:
        if self.failing:
            self.failing = False
            _log.info("rate limit {name}: Redis answers again", name=self.name)
        wait = float(reply)
        if wait > 0:
            self.rejected += 1
        else:
            self.allowed += 1
        return wait

    def _failed(self, failure: Failure) -> float:
        failure.trap(RedisError)
        self.errors += 1
        if not self.failing:
            self.failing = True
            _log.warn("rate limit {name}: no answer from Redis ({error}); {choice} until it answers",
                      name=self.name, error=failure.value,
                      choice="letting requests through (fail-open)" if self.failOpen
                      else "refusing requests (fail-closed)")
        if self.failOpen:
            return 0.0
        raise LimiterUnavailable(str(failure.value))

    def stats(self, now: float) -> Dict[str, int]:
        return {"allowed": self.allowed, "rejected": self.rejected, "errors": self.errors, "keys": 0,
                "saturated": 0}


@implementer(IPlugin, IRateLimiterFactory)
class RedisRateLimiterFactory:
    name = "redis"

    def __call__(self, options: Mapping, resources) -> RedisRateLimiter:
        checkOptions(options, ("rate", "burst", "on_error", "name"), "the redis limiter")
        rate, burst = bucketOptions(options)
        onError = options.get("on_error", "allow")
        if onError not in ON_ERROR:
            raise ValueError(f"on_error: expected one of {', '.join(map(repr, ON_ERROR))}, got {onError!r}")
        redis = getattr(resources, "redis", None)
        if redis is None:
            raise ValueError("limiter: the redis limiter needs a [redis] table")
        name = options.get("name", getattr(resources, "label", None))
        if not (isinstance(name, str) and name):
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        return RedisRateLimiter(redis, name, rate, burst, onError == "allow")


redis = RedisRateLimiterFactory()
