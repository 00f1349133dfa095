"""
The whole HTTP cache suite again with the cache in a real Redis, its
local tier too small to hold anything: every lookup waits for Redis.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks

from ..redisserver import startRedis
from .test_cache import ForwardCacheTests, ReverseCacheTests


class RedisStoreCase:
    @inlineCallbacks
    def setUp(self):
        super().setUp()
        self.redis = yield startRedis(self)

    def startProxy(self, store=None, filters=(), **switch):
        shared = store is None
        if shared:
            store = {"store": "redis", "local_bytes": 1}
        proxy = super().startProxy(store, filters, **switch)
        if shared:
            self.connected = proxy.service.lasting.redis.whenConnected()
        return proxy

    def moreConfig(self) -> dict:
        return {"redis": {"endpoint": self.redis.endpoint}}

    @inlineCallbacks
    def fetch(self, path: str, *args: str):
        connected = getattr(self, "connected", None)
        if connected is not None:
            yield connected
        result = yield super().fetch(path, *args)
        return result


class RedisReverseCacheTests(RedisStoreCase, ReverseCacheTests):
    pass


class RedisForwardCacheTests(RedisStoreCase, ForwardCacheTests):
    pass
