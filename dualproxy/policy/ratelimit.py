"""
Rate limiting: token buckets per client, the built-in C{memory} limiter and
how the proxy applies a limiter to a request.

Pure: the caller passes the time, so refills are tested with explicit
clocks, and a limiter backed by a shared store can take the memory one's
place behind L{IRateLimiter}.  The memory limiter's buckets live in one
process: with several worker processes each has its own.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..http.message import Headers, Refusal
from ..http.proxystatus import PROXY_INTERNAL_ERROR
from ..interfaces import IRateLimiter, IRateLimiterFactory
from ..plugins import checkOptions, positiveOption

# Keys longer than this (a client-chosen header value) are stored as their
# hash, so that max_keys bounds memory and not just the number of buckets.
_MAX_KEY_LENGTH = 64


class LimiterUnavailable(Exception):
    """
    A limiter could not tell whether a request may go (its store gave no
    answer) and is set to refuse it then.
    """


class TokenBucket:
    """
    The arithmetic of buckets holding up to C{burst} tokens, refilled at
    C{rate} tokens per second.  A bucket's state is the tokens it held at
    some time, C{(tokens, since)}; a new bucket is full.
    """

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst

    def level(self, tokens: float, since: float, now: float) -> float:
        """
        The tokens at C{now}; a clock that went back refills nothing.
        """
        return min(self.burst, tokens + max(0.0, now - since) * self.rate)

    def take(self, tokens: float, since: float, now: float) -> Tuple[float, float]:
        """
        Take one token at C{now}.

        @return: the tokens left and C{0.0}, or, for an empty bucket, the
            tokens it holds and the seconds until it holds one.
        """
        tokens = self.level(tokens, since, now)
        if tokens >= 1:
            return tokens - 1, 0.0
        return tokens, (1 - tokens) / self.rate


@implementer(IRateLimiter)
class MemoryRateLimiter:
    """
    Buckets in a dict ordered by last use.  A full bucket is the same as no
    bucket, so full ones are dropped from the cold end as new clients come;
    when C{maxKeys} buckets are still tracked, the least recently used goes
    (and its client starts again with a full bucket).
    """

    def __init__(self, rate: float, burst: float, maxKeys: int):
        self.bucket = TokenBucket(rate, burst)
        self.maxKeys = maxKeys
        self.allowed = 0
        self.rejected = 0
        self._buckets: "OrderedDict[str, Tuple[float, float]]" = OrderedDict()

    def take(self, key: str, now: float) -> float:
        buckets = self._buckets
        state = buckets.get(key)
        if state is None:
            self._makeRoom(now)
            state = (self.bucket.burst, now)
        tokens, wait = self.bucket.take(state[0], state[1], now)
        if wait:
            # A refused request costs nothing: the state stays as it was,
            # so refills add up exactly to what Retry-After promised.
            self.rejected += 1
        else:
            state = (tokens, now)
            self.allowed += 1
        buckets[key] = state
        buckets.move_to_end(key)
        return wait

    def _makeRoom(self, now: float) -> None:
        buckets = self._buckets
        bucket = self.bucket
        while buckets:
            key, (tokens, since) = next(iter(buckets.items()))
            if bucket.level(tokens, since, now) < bucket.burst:
                break
            del buckets[key]
        if len(buckets) >= self.maxKeys:
            buckets.popitem(last=False)

    def stats(self, now: float) -> Dict[str, int]:
        # Looks at every bucket: for metrics scrapes, not for each request.
        bucket = self.bucket
        return {
            "allowed": self.allowed,
            "rejected": self.rejected,
            "keys": len(self._buckets),
            "saturated": sum(bucket.level(tokens, since, now) < 1 for tokens, since in self._buckets.values()),
        }


@implementer(IPlugin, IRateLimiterFactory)
class MemoryRateLimiterFactory:
    name = "memory"

    def __call__(self, options: Mapping, resources=None) -> MemoryRateLimiter:
        checkOptions(options, ("rate", "burst", "max_keys"), "the memory limiter")
        rate, burst = bucketOptions(options)
        return MemoryRateLimiter(rate, burst, positiveOption(options, "max_keys", 100000))


def bucketOptions(options: Mapping) -> Tuple[float, float]:
    """
    A limiter's C{rate} and C{burst} options, checked; the burst defaults
    to the rate, and is at least one request.

    @raise ValueError: naming the option that is wrong.
    """
    rate = options.get("rate")
    if not (_isNumber(rate) and rate > 0):
        raise ValueError(f"rate: expected a positive number of requests per second, got {rate!r}")
    burst = options.get("burst", max(1.0, rate))
    if not (_isNumber(burst) and burst >= 1):
        raise ValueError(f"burst: expected a number of requests of 1 or more, got {burst!r}")
    return float(rate), float(burst)


memory = MemoryRateLimiterFactory()


class RateLimit:
    """
    A limiter as the proxy applies it: which bucket a request draws from
    (per C{key}: C{"address"}, C{"header:NAME"} or C{"user"}), and the 429
    answer when it is empty.

    A request without the header, or without an authenticated user, draws
    from its address's bucket; the prefixes keep a header value from
    naming another client's address bucket.
    """

    def __init__(self, limiter: IRateLimiter, key: str, what: str):
        kind, _, name = key.partition(":")
        self.limiter = limiter
        self.header = name.lower().encode("ascii") if kind == "header" else None
        self.byUser = kind == "user"
        self.what = what

    def keyFor(self, address: Optional[str], headers: Headers, user: Optional[str]) -> str:
        if self.header is not None:
            value = headers.get(self.header)
            if value is not None:
                return "header:" + _compact(value.decode("latin-1"))
        elif self.byUser and user is not None:
            return "user:" + _compact(user)
        return "address:" + _compact(address or "unknown")

    def check(self, address: Optional[str], headers: Headers, user: Optional[str], now: float) -> Optional[Deferred]:
        """
        Count a request against its client's bucket.

        @raise Refusal: 429 with C{Retry-After} when the bucket is empty.
        @return: None, the request may go; or, from a limiter that asks a
            server, a Deferred firing None or failing with that 429, or a
            503 when the limiter could not tell and refuses then (see
            L{dualproxy.core.exchange.proceed}).
        """
        wait = self.limiter.take(self.keyFor(address, headers, user), now)
        if not wait:
            return None
        if isinstance(wait, Deferred):
            return wait.addCallbacks(self._answered, self._unavailable)
        raise self._exceeded(wait)

    def _exceeded(self, wait: float) -> Refusal:
        return Refusal(429, f"rate limit exceeded for {self.what}",
                       [(b"Retry-After", b"%d" % math.ceil(wait))], errorType="http_request_denied")

    def _answered(self, wait: float) -> None:
        if wait > 0:
            raise self._exceeded(wait)

    def _unavailable(self, failure: Failure) -> None:
        failure.trap(LimiterUnavailable)
        raise Refusal(503, f"the rate-limit store for {self.what} is unavailable", [(b"Retry-After", b"1")],
                      errorType=PROXY_INTERNAL_ERROR)


def _isNumber(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _compact(value: str) -> str:
    if len(value) <= _MAX_KEY_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
