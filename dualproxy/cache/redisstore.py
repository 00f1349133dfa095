"""
A cache store in Redis, shared by every instance that uses the same
server: one instance's miss is the next one's hit.

Each entry is one Redis string, so that it is written, replaced and
evicted whole: the body, then the head, the cache's key and a trailer of
their lengths.  A writer appends the body to a key of its own as it
streams and commits with a script that checks the length and renames:
a reader sees the old entry or the new one, never a part.  Reading checks
the trailer and the key again, so an entry damaged anyhow is a miss.

Entries read or written here are also kept in a small local memory tier,
which serves the fast path without a round trip.  A purge or invalidation
removes the entry in Redis and is published to every instance, which
drops its local copy; an instance that may have missed messages (its
subscription was down) empties its local tier.

Redis memory is bounded by the server's C{maxmemory} with an
C{allkeys-lru} policy, and each entry expires after C{ttl} seconds
anyway.  When Redis is down or slow the store answers misses and stores
nothing (fail-open: the origin is asked), counted in L{errors}.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Dict, List, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import ICacheStore, ICacheStoreFactory, ICacheWriter
from ..plugins import checkOptions, positiveOption
from ..redis.client import RedisClient
from .memory import MemoryEntry, MemoryStore

_log = Logger()

_TRAILER = struct.Struct(">4sIIQ")
_MAGIC = b"DPC1"

# KEYS: the writer's key, the entry's.  ARGV: the body's length, the rest
# of the value, the entry's lifetime in milliseconds.
_COMMIT = """
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[1])
    return 0
end
redis.call('APPEND', KEYS[1], ARGV[2])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


def pack(key: bytes, head: bytes, body: bytes) -> bytes:
    """
    An entry as its Redis value.
    """
    return body + _tail(key, head, len(body))


def _tail(key: bytes, head: bytes, size: int) -> bytes:
    return head + key + _TRAILER.pack(_MAGIC, len(head), len(key), size)


def unpack(key: bytes, value: bytes) -> Optional[MemoryEntry]:
    """
    The entry in C{value} if it is whole and is C{key}'s, else None.
    """
    if len(value) < _TRAILER.size:
        return None
    magic, headLength, keyLength, size = _TRAILER.unpack_from(value, len(value) - _TRAILER.size)
    if magic != _MAGIC or size + headLength + keyLength + _TRAILER.size != len(value):
        return None
    if value[size + headLength:size + headLength + keyLength] != key:
        return None
    return MemoryEntry(value[size:size + headLength], [value[:size]] if size else [], size)


@implementer(ICacheWriter)
class _Writer:
    def __init__(self, store: RedisStore, key: bytes):
        self.store = store
        self.key = key
        self.pending: Optional[bytes] = store.redisKey(b"w:" + os.urandom(12).hex().encode("ascii"))
        self.size = 0
        self.local = store.local.open(key)

    def write(self, data: bytes) -> bool:
        if self.pending is None:
            return False
        self.size += len(data)
        if self.size > self.store.maxObjectSize:
            self.abort()
            return False
        self.local.write(data)
        if data:
            store = self.store
            store.send("APPEND", self.pending, data)
            if self.size == len(data):
                # A writer that never commits leaves nothing for long.
                store.send("PEXPIRE", self.pending, store.ttlMilliseconds)
        return True

    def commit(self, head: bytes) -> None:
        pending, self.pending = self.pending, None
        if pending is None:
            return
        self.local.commit(head)
        store = self.store
        store.evaluate(_COMMIT, (pending, store.entryKey(self.key)),
                       (self.size, _tail(self.key, head, self.size), store.ttlMilliseconds))

    def abort(self) -> None:
        pending, self.pending = self.pending, None
        self.local.abort()
        if pending is not None and self.size:
            self.store.send("DEL", pending)


@implementer(ICacheStore)
class RedisStore:
    """
    @ivar errors: operations Redis did not answer, since start.
    """

    def __init__(self, redis: RedisClient, ttl: int, maxObjectSize: int, localBytes: int):
        self.redis = redis
        self.ttlMilliseconds = ttl * 1000
        self.maxObjectSize = maxObjectSize
        self.local = MemoryStore(localBytes, maxObjectSize)
        self.errors = 0
        self._failing = False
        self._fetching: Dict[bytes, List[defer.Deferred]] = {}
        self._channel = redis.prefix + b"cache:removed"
        redis.subscribe(self._channel, self._removedElsewhere)

    @property
    def bytesStored(self) -> int:
        return self.local.bytesStored

    @property
    def evictions(self) -> int:
        return self.local.evictions

    def redisKey(self, name: bytes) -> bytes:
        return self.redis.prefix + b"cache:" + name

    def entryKey(self, key: bytes) -> bytes:
        return self.redisKey(b"e:" + hashlib.sha256(key).hexdigest().encode("ascii"))

    def open(self, key: bytes) -> _Writer:
        return _Writer(self, key)

    def peek(self, key: bytes) -> Optional[MemoryEntry]:
        return self.local.get(key)

    def get(self, key: bytes):
        entry = self.local.get(key)
        if entry is not None:
            return entry
        waiting = self._fetching.get(key)
        answer: defer.Deferred = defer.Deferred()
        if waiting is not None:
            waiting.append(answer)
            return answer
        self._fetching[key] = [answer]
        self.redis.execute("GET", self.entryKey(key)).addCallbacks(
            self._fetched, self._failed, (key,), errbackArgs=(None,)).addCallback(self._answer, key)
        return answer

    def _fetched(self, value: Optional[bytes], key: bytes) -> Optional[MemoryEntry]:
        self._recovered()
        if value is None:
            return None
        entry = unpack(key, value)
        if entry is None:
            _log.warn("a damaged cache entry in Redis was dropped")
            self.send("DEL", self.entryKey(key))
            return None
        self.local.put(key, entry)
        return entry

    def _answer(self, entry: Optional[MemoryEntry], key: bytes) -> None:
        for answer in self._fetching.pop(key, ()):
            answer.callback(entry)

    def remove(self, key: bytes) -> defer.Deferred:
        """
        Forget C{key} here, in Redis and in every instance's local tier;
        fires once Redis has done both, fails if it cannot tell.
        """
        self.local.remove(key)
        redis = self.redis
        done = defer.gatherResults([redis.execute("DEL", self.entryKey(key)),
                                    redis.execute("PUBLISH", self._channel, key)], consumeErrors=True)
        return done.addCallbacks(self._sent, lambda failure: self._failed(failure.value.subFailure, failure.value.subFailure))

    def _removedElsewhere(self, key: Optional[bytes]) -> None:
        if key is not None:
            self.local.remove(key)
        else:
            self.local.clear()

    def send(self, *command) -> None:
        """
        A command whose answer nobody waits for: a failure is counted.
        """
        self.redis.execute(*command).addCallbacks(self._sent, self._failed, errbackArgs=(None,))

    def evaluate(self, script: str, keys, args) -> None:
        self.redis.evaluate(script, keys, args).addCallbacks(self._sent, self._failed, errbackArgs=(None,))

    def _sent(self, _) -> None:
        self._recovered()

    def _failed(self, failure, answer):
        self.errors += 1
        if not self._failing:
            self._failing = True
            _log.warn("the Redis cache store failed, serving misses until it answers again: {error}",
                      error=failure.value)
        return answer

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            _log.info("the Redis cache store answers again")


@implementer(IPlugin, ICacheStoreFactory)
class RedisStoreFactory:
    name = "redis"

    def __call__(self, options: Mapping, resources) -> RedisStore:
        checkOptions(options, ("ttl", "max_object_size", "local_bytes"), "the redis store")
        if resources is None or resources.redis is None:
            raise ValueError("store: the redis store needs a [redis] table")
        return RedisStore(resources.redis,
                          positiveOption(options, "ttl", 86400, "a positive number of seconds"),
                          positiveOption(options, "max_object_size", 8 << 20, "a positive number of bytes"),
                          positiveOption(options, "local_bytes", 64 << 20, "a positive number of bytes"))


redis = RedisStoreFactory()
